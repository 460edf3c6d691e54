/*
 * kiln-api - the FastCGI server of Kiln's admin API.
 *
 * A master process opens the two listening sockets and supervises two pools
 * (prefork.c): the API pool, one request at a time per pre-forked process,
 * and the stream pool, whose processes each hold many SSE streams
 * (stream_server.c).
 */
#include <errno.h>
#include <fcgiapp.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "config.h"
#include "fileutil.h"
#include "log.h"
#include "prefork.h"
#include "services.h"
#include "stream_server.h"
#include "util.h"

/* One line per request: method, path (control bytes kept out of the log),
 * status, duration; the worker is the record's pid. Built without printf:
 * every request writes one. */
static void log_request(const struct http_request *req, int status)
{
	struct strbuf line = STRBUF_INIT;
	const char *u = req->uri;
	size_t i;

	strbuf_grow(&line, 320);
	strbuf_addstr(&line, req->method);
	strbuf_addch(&line, ' ');
	for (i = 0; i < 255 && u[i] && u[i] != '?'; i++)
		strbuf_addch(&line, (u[i] < 0x20 || u[i] == 0x7f) ? '?' : u[i]);
	strbuf_addch(&line, ' ');
	strbuf_add_int64(&line, status);
	strbuf_addch(&line, ' ');
	strbuf_add_int64(&line, (long long)(mono_ms() - req->started_ms));
	strbuf_addstr(&line, "ms");
	log_info_text(line.buf, line.len);
	strbuf_release(&line);
}

static void handle_request(struct services *svc, FCGX_Request *fr)
{
	struct http_request req;
	struct http_response res;
	struct rctx c;

	http_request_read(&req, fr->envp, fr->in, (size_t)svc->cfg->max_body_bytes);
	http_response_init(&res);
	memset(&c, 0, sizeof(c));
	c.svc = svc;
	c.req = &req;
	c.res = &res;
	if (!svc->db.conn)
		db_ping(&svc->db);
	api_dispatch(&c);
	http_send(fr->out, &res);
	log_request(&req, res.status);
	http_response_release(&res);
	http_request_release(&req);
}

#define STOP_CHECK_EVERY 32

/* A SIGTERM or SIGINT waiting, blocked, to be taken. */
static int stop_requested(void)
{
	sigset_t pending;

	if (sigpending(&pending) < 0)
		return 0;
	return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
}

static void api_worker(void *arg, int listen_fd, struct worker_slot *slot)
{
	struct config *cfg = arg;
	struct services svc;
	struct strbuf err = STRBUF_INIT;
	FCGX_Request fr;
	sigset_t stopsigs, waitmask;
	struct epoll_event want = { .events = EPOLLIN | EPOLLEXCLUSIVE };
	int ep = -1;
	/* Each worker its own limit: workers started together do not all
	 * recycle at the same moment. */
	int64_t served = 0, recycle_after = worker_recycle_limit(cfg->max_requests_per_worker);

	log_set_prog("kiln-api");
	if (services_init(&svc, cfg, &err) < 0) {
		log_error("worker start: %s", err.buf);
		strbuf_release(&err);
		_exit(1);
	}
	svc.slot = slot;
	/* SIGTERM and SIGINT stay blocked except inside epoll_pwait(): from accept
	 * to the last byte of an answer no signal cuts MariaDB's or libfcgi's
	 * I/O short, and a stop request waits, pending, until the request is
	 * served. The listening socket is non-blocking: accept first, wait
	 * only when there is nothing to take. */
	sigemptyset(&stopsigs);
	sigaddset(&stopsigs, SIGTERM);
	sigaddset(&stopsigs, SIGINT);
	sigprocmask(SIG_BLOCK, &stopsigs, &waitmask);
	sigdelset(&waitmask, SIGTERM);
	sigdelset(&waitmask, SIGINT);
	/* An idle worker waits for a connection in epoll with EPOLLEXCLUSIVE:
	 * one new connection wakes one idle worker, not every one of them to
	 * find the queue already empty. Created after fork: each worker its own. */
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &want) < 0) {
		log_error("worker start: epoll: %s", strerror(errno));
		goto out;
	}
	FCGX_Init();
	FCGX_InitRequest(&fr, listen_fd, 0);
	while (!worker_stop && served < recycle_after) {
		int rc = FCGX_Accept_r(&fr);

		if (rc < 0) {
			struct epoll_event ev;

			if (rc != -EAGAIN && rc != -EWOULDBLOCK && rc != -EINTR) {
				log_error("accept failed: %s", strerror(-rc));
				break;
			}
			epoll_pwait(ep, &ev, 1, 1000, &waitmask);
			continue;
		}
		slot->extra_ms = 0;
		slot->busy_since_ms = mono_ms();
		handle_request(&svc, &fr);
		/* libfcgi closes by shutting down its sending side and waiting
		 * (up to 2 s) for the web server to close first, so that input
		 * still unread cannot turn into a TCP reset that loses the
		 * answer. Once stdin was read to its end (http_request_read
		 * drains every body) no input is left: a detached request is
		 * closed at once, sparing each request three system calls and
		 * a wait for nginx. */
		if (FCGX_HasSeenEOF(fr.in))
			FCGX_Detach(&fr);
		FCGX_Finish_r(&fr);
		slot->busy_since_ms = 0;
		slot->requests++;
		served++;
		/* Under load the next connection is always ready and the loop
		 * never waits in epoll_pwait(), where a blocked stop signal would be
		 * taken: look for one here, between requests. The master's own
		 * stop request is a flag in the slot; a signal from anyone else
		 * (the parent-death signal, kill by hand) is looked for every
		 * STOP_CHECK_EVERY requests. */
		if (slot->stop_asked || (served % STOP_CHECK_EVERY == 0 && stop_requested()))
			break;
	}
	FCGX_Free(&fr, 0);
out:
	if (ep >= 0)
		close(ep);
	services_release(&svc);
	strbuf_release(&err);
}

/* Every open stream holds a socket: let the stream processes have them. */
static void raise_fd_limit(const struct config *cfg)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)cfg->stream_max_per_process + 256;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
		log_warn("open-file limit %llu is below the %llu that stream_max_per_process needs; "
			 "raise the hard limit (ulimit -Hn)", (unsigned long long)rl.rlim_cur,
			 (unsigned long long)want);
}

/* SIGHUP: kiln.conf is read again and replaces cfg in place, so the pools'
 * args (cfg, and sargs.cfg) stay valid; the master then starts a new
 * generation of workers with it. A bad file keeps the running workers. */
static int reload_config(void *ctx, struct pool_spec *pools, int npools, int64_t *grace_ms,
			 struct strbuf *err)
{
	struct config *cfg = ctx;
	struct strbuf kept = STRBUF_INIT;

	(void)npools;
	if (config_reload(cfg, &kept, err) < 0) {
		strbuf_release(&kept);
		return -1;
	}
	if (kept.len)
		log_warn("SIGHUP: %s changed; that takes a restart, the running value stays", kept.buf);
	raise_fd_limit(cfg);
	pools[0].nprocs = (int)cfg->workers;
	pools[0].request_timeout_ms = cfg->request_timeout_s * 1000;
	pools[1].nprocs = (int)cfg->stream_processes;
	*grace_ms = cfg->shutdown_grace_s * 1000;
	log_info("SIGHUP: configuration reloaded from %s",
		 cfg->config_file ? cfg->config_file : "defaults and environment");
	strbuf_release(&kept);
	return 0;
}

static void usage(void)
{
	fputs("usage: kiln-api [--config FILE]\n", stderr);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct strbuf err = STRBUF_INIT, dir = STRBUF_INIT;
	struct pool_spec pools[2];
	struct config cfg;
	struct stream_server_args sargs;
	unsigned char secret[32];
	const char *cfgpath = NULL;
	int opt, api_fd, stream_fd, rc;

	log_set_prog("kiln-api");
	while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		if (opt == 'c') {
			cfgpath = optarg;
		} else {
			usage();
			return opt == 'h' ? 0 : 2;
		}
	}
	if (config_load(&cfg, cfgpath, &err) < 0) {
		log_error("config: %s", err.buf);
		return 1;
	}
	raise_fd_limit(&cfg);
	state_path(&cfg, &dir, "run");
	if (mkdir_p(dir.buf, 0755) < 0) {
		log_error("cannot create %s", dir.buf);
		return 1;
	}
	if (services_secret_ensure(&cfg, secret, &err) < 0) {
		log_error("%s", err.buf);
		return 1;
	}
	api_fd = listen_socket_mode(cfg.listen, (unsigned)cfg.socket_mode, (gid_t)cfg.socket_gid, &err);
	/* API workers poll, then accept without blocking (see api_worker);
	 * accepted connections do not inherit the flag. */
	if (api_fd >= 0)
		fcntl(api_fd, F_SETFL, fcntl(api_fd, F_GETFL) | O_NONBLOCK);
	stream_fd = api_fd < 0 ? -1 : listen_socket_mode(cfg.stream_listen, (unsigned)cfg.socket_mode,
							 (gid_t)cfg.socket_gid, &err);
	if (api_fd < 0 || stream_fd < 0) {
		log_error("%s", err.buf);
		return 1;
	}
	memset(pools, 0, sizeof(pools));
	pools[0].name = "api";
	pools[0].listen_fd = api_fd;
	pools[0].nprocs = (int)cfg.workers;
	pools[0].max_nprocs = CONFIG_MAX_WORKERS;
	pools[0].request_timeout_ms = cfg.request_timeout_s * 1000;
	pools[0].worker_main = api_worker;
	pools[0].arg = &cfg;
	sargs.cfg = &cfg;
	pools[1].name = "stream";
	pools[1].listen_fd = stream_fd;
	pools[1].nprocs = (int)cfg.stream_processes;
	pools[1].max_nprocs = CONFIG_MAX_STREAM_PROCESSES;
	pools[1].request_timeout_ms = 0; /* streams are long by design */
	pools[1].worker_main = stream_worker_main;
	pools[1].arg = &sargs;
	log_info("listening on %s (api, %d workers) and %s (streams, %d processes)",
		 cfg.listen, pools[0].nprocs, cfg.stream_listen, pools[1].nprocs);
	rc = prefork_run_reloadable(pools, 2, cfg.shutdown_grace_s * 1000, reload_config, &cfg);
	close(api_fd);
	close(stream_fd);
	if (cfg.listen[0] == '/' || !strncmp(cfg.listen, "unix:", 5))
		unlink(cfg.listen + (cfg.listen[0] == '/' ? 0 : 5));
	if (cfg.stream_listen[0] == '/' || !strncmp(cfg.stream_listen, "unix:", 5))
		unlink(cfg.stream_listen + (cfg.stream_listen[0] == '/' ? 0 : 5));
	config_release(&cfg);
	strbuf_release(&err);
	strbuf_release(&dir);
	return rc < 0 ? 1 : 0;
}
