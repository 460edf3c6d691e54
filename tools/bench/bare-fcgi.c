/*
 * bare-fcgi - the baseline of the API benchmark: the least a pre-forked
 * libfcgi responder can do per request. It reads the request's params,
 * answers a fixed JSON body of the size of a run object and nothing else
 * (no routing, no token check, no database).
 *
 *   bare-fcgi SOCKET_PATH WORKERS
 *
 * The master listens on the unix socket, forks WORKERS processes that each
 * accept one request at a time (as kiln-api's API pool does), and stops them
 * on SIGTERM / SIGINT. Workers die with the master.
 */
#include <errno.h>
#include <fcgiapp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_WORKERS 256

/* The shape and size (about 560 bytes) of GET .../runs/{id}. */
static const char body[] =
	"{\"id\":1,\"app_id\":1,\"status\":\"completed\",\"input\":\"Build a landing page\","
	"\"client_request_id\":null,\"attempt\":1,\"created_at\":\"2026-01-01T00:00:00.000Z\","
	"\"started_at\":\"2026-01-01T00:00:00.100Z\",\"finished_at\":\"2026-01-01T00:00:02.500Z\","
	"\"error\":null,\"usage\":{\"prompt_tokens\":4631,\"completion_tokens\":1760,"
	"\"total_tokens\":6391},\"base_revision_id\":1,\"revision_id\":2,\"checkpoint_id\":2,"
	"\"cancel_requested\":false,\"stream_url\":\"/admin/apps/1/coding-agent/runs/1/stream\","
	"\"events_url\":\"/admin/apps/1/coding-agent/runs/1/events\"}\n";

static volatile sig_atomic_t stop;

static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

static void worker(int listen_fd)
{
	static const char bad[] = "Status: 400 Bad Request\r\n\r\n";
	FCGX_Request req;
	sigset_t none;
	char answer[1024];
	int len;

	/* The whole answer is made once: per request only the I/O remains. */
	len = snprintf(answer, sizeof(answer),
		       "Status: 200 OK\r\nContent-Type: application/json\r\n"
		       "Content-Length: %zu\r\n\r\n%s", sizeof(body) - 1, body);
	if (len < 0 || (size_t)len >= sizeof(answer))
		_exit(1);

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	FCGX_Init();
	FCGX_InitRequest(&req, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR);
	while (!stop && FCGX_Accept_r(&req) >= 0) {
		/* Touch the params as any responder must to route a request. */
		const char *uri = FCGX_GetParam("REQUEST_URI", req.envp);

		if (!uri)
			FCGX_PutStr(bad, (int)sizeof(bad) - 1, req.out);
		else
			FCGX_PutStr(answer, len, req.out);
		FCGX_Finish_r(&req);
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	struct sockaddr_un sa;
	struct sigaction act;
	sigset_t stopset, none;
	pid_t pids[MAX_WORKERS];
	char *end;
	long n;
	int fd, i;

	if (argc != 3) {
		fputs("usage: bare-fcgi SOCKET_PATH WORKERS\n", stderr);
		return 2;
	}
	n = strtol(argv[2], &end, 10);
	if (*end || n < 1 || n > MAX_WORKERS || strlen(argv[1]) >= sizeof(sa.sun_path)) {
		fputs("bare-fcgi: bad arguments\n", stderr);
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, argv[1], strlen(argv[1]) + 1);
	unlink(argv[1]);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0) {
		fprintf(stderr, "bare-fcgi: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	chmod(argv[1], 0666);
	memset(&act, 0, sizeof(act));
	act.sa_handler = on_stop; /* no SA_RESTART: accept() and wait() must wake */
	sigaction(SIGTERM, &act, NULL);
	sigaction(SIGINT, &act, NULL);
	/* Blocked until sigsuspend() so a stop cannot slip in before it. */
	sigemptyset(&stopset);
	sigaddset(&stopset, SIGTERM);
	sigaddset(&stopset, SIGINT);
	sigprocmask(SIG_BLOCK, &stopset, NULL);
	sigemptyset(&none);
	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			fprintf(stderr, "bare-fcgi: fork: %s\n", strerror(errno));
			n = i;
			stop = 1;
			break;
		}
		if (pids[i] == 0)
			worker(fd);
	}
	while (!stop)
		sigsuspend(&none);
	for (i = 0; i < n; i++)
		kill(pids[i], SIGTERM);
	for (i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
	close(fd);
	unlink(argv[1]);
	return 0;
}
