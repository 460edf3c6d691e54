/*
 * test_prefork - the master's supervision, with a stand-in worker that
 * speaks a one-byte protocol on the pool's socket:
 *   'p' answer with my pid        'h' hang (a stuck request)
 *   'c' crash (abort)              'q' answer, then exit (a recycled worker)
 * The master runs in a child process of the test; the test talks to its
 * workers over the unix socket and signals the master.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "prefork.h"
#include "strbuf.h"
#include "util.h"

static char sockpath[108];
static pid_t master;

static void worker(void *arg, int fd, struct worker_slot *slot)
{
	(void)arg;
	while (!worker_stop) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char cmd;
		int c;

		if (poll(&p, 1, 200) <= 0)
			continue;
		c = accept(fd, NULL, NULL);
		if (c < 0)
			continue;
		slot->busy_since_ms = mono_ms();
		if (read(c, &cmd, 1) == 1) {
			int pid = (int)getpid();

			if (cmd == 'h')
				for (;;)
					pause();
			if (cmd == 'c')
				abort();
			if (write(c, &pid, sizeof(pid)) < 0)
				cmd = 'q';
		}
		close(c);
		slot->busy_since_ms = 0;
		if (cmd == 'q')
			return;
	}
}

/* Sends cmd; the answering worker's pid, or -1 (no answer in 3 s). */
static int ask(char cmd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { 3, 0 };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), pid = -1;

	memcpy(sa.sun_path, sockpath, strlen(sockpath) + 1);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && write(fd, &cmd, 1) == 1 &&
	    read(fd, &pid, sizeof(pid)) != (ssize_t)sizeof(pid))
		pid = -1;
	close(fd);
	return pid;
}

static int alive(int pid)
{
	return pid > 0 && kill(pid, 0) == 0;
}

static void start_master(void)
{
	struct strbuf err = STRBUF_INIT;
	int fd = listen_socket(sockpath, &err);

	CHECK(fd >= 0);
	master = fork();
	if (master == 0) {
		struct pool_spec pool = { "test", fd, 2, 500, worker, NULL };

		_exit(prefork_run(&pool, 1, 2000) < 0 ? 1 : 0);
	}
	close(fd);
	strbuf_release(&err);
	sleep_ms(300);
}

static void test_answers_and_respawns_a_crashed_worker(void)
{
	int a = ask('p'), b;

	CHECK(a > 0);
	ask('c'); /* one worker aborts */
	sleep_ms(600);
	b = ask('p');
	CHECK(b > 0);
	/* the pool is whole again: two different live workers answer */
	{
		int seen[8], n = 0, i, distinct = 0;

		for (i = 0; i < 8; i++)
			seen[n++] = ask('p');
		for (i = 0; i < n; i++)
			distinct += seen[i] != seen[0];
		CHECK(seen[0] > 0);
		CHECK(distinct > 0 || n == 8); /* usually both answer; never none */
	}
}

static void test_stuck_worker_is_killed_and_replaced(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), stuck_pid = -1, i;
	char h = 'h';

	memcpy(sa.sun_path, sockpath, strlen(sockpath) + 1);
	CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(write(fd, &h, 1) == 1);
	/* the hung request's connection is closed when its worker is killed */
	{
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t t0 = mono_ms();

		CHECK(poll(&p, 1, 4000) == 1);
		CHECK(mono_ms() - t0 < 3000); /* timeout 500 ms, checked every 100 ms */
	}
	close(fd);
	for (i = 0; i < 10 && stuck_pid < 0; i++)
		stuck_pid = ask('p');
	CHECK(stuck_pid > 0); /* still answering */
}

static void test_recycled_worker_is_replaced_at_once(void)
{
	int a = ask('q'), b;

	CHECK(a > 0);
	sleep_ms(300);
	CHECK(!alive(a));
	b = ask('p');
	CHECK(b > 0 && b != a);
}

static void test_crash_loop_backs_off(void)
{
	int i, answered = 0;
	int64_t t0 = mono_ms();

	/* crash every worker as soon as it answers, a few times over */
	for (i = 0; i < 6; i++)
		ask('c');
	/* the master keeps respawning, with growing delays, never a storm:
	 * within 8 s the pool answers again */
	while (mono_ms() - t0 < 8000 && !answered)
		answered = ask('p') > 0;
	CHECK(answered);
}

static void test_sighup_replaces_every_worker(void)
{
	int before[6], after[6], i, j, overlap = 0;

	for (i = 0; i < 6; i++)
		before[i] = ask('p');
	kill(master, SIGHUP);
	sleep_ms(1500);
	for (i = 0; i < 6; i++)
		after[i] = ask('p');
	for (i = 0; i < 6; i++) {
		CHECK(after[i] > 0);
		for (j = 0; j < 6; j++)
			overlap += after[i] == before[j];
	}
	CHECK(overlap == 0);
}

static void test_sigterm_stops_everything(void)
{
	int status = -1, w = ask('p');
	int64_t t0 = mono_ms();

	kill(master, SIGTERM);
	CHECK(waitpid(master, &status, 0) == master);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(mono_ms() - t0 < 4000);
	sleep_ms(100);
	CHECK(!alive(w));
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");

	signal(SIGPIPE, SIG_IGN);
	snprintf(sockpath, sizeof(sockpath), "%s/kiln-prefork-%d.sock", tmp && *tmp ? tmp : "/tmp",
		 (int)getpid());
	start_master();
	RUN(test_answers_and_respawns_a_crashed_worker);
	RUN(test_stuck_worker_is_killed_and_replaced);
	RUN(test_recycled_worker_is_replaced_at_once);
	RUN(test_crash_loop_backs_off);
	RUN(test_sighup_replaces_every_worker);
	RUN(test_sigterm_stops_everything);
	if (master > 0 && kill(master, 0) == 0) {
		kill(master, SIGKILL);
		waitpid(master, NULL, 0);
	}
	unlink(sockpath);
	return harness_done("prefork");
}
