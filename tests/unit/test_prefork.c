/*
 * test_prefork - the master's supervision, with a stand-in worker that
 * speaks a one-byte protocol on the pool's socket:
 *   'p' answer with my pid        'h' hang (a stuck request)
 *   'c' crash (abort)              'q' answer, then exit (a recycled worker)
 *   'v' answer with the configuration version the worker was started with
 * The master runs in a child process of the test; the test talks to its
 * workers over the unix socket and signals the master. A second master has
 * a SIGHUP reload hook that reads its settings from a file, the way
 * kiln-api re-reads kiln.conf.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fileutil.h"
#include "harness.h"
#include "prefork.h"
#include "strbuf.h"
#include "util.h"

static char sockpath[108];
static pid_t master;

/* What a worker was started with: the test's stand-in for a config. */
struct settings {
	int version;
};

static void worker(void *arg, int fd, struct worker_slot *slot)
{
	const struct settings *set = arg;

	/* Several workers wait on one socket: the losers of a race for a
	 * connection must not block in accept() past a stop request. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
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
			if (cmd == 'v')
				pid = set ? set->version : 0;
			if (write(c, &pid, sizeof(pid)) < 0)
				cmd = 'q';
		}
		close(c);
		slot->busy_since_ms = 0;
		if (cmd == 'q')
			return;
	}
}

/* Sends cmd to the workers behind path; the answer (a pid), or -1 (no
 * answer in 3 s). */
static int ask_at(const char *path, char cmd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { 3, 0 };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), pid = -1;

	memcpy(sa.sun_path, path, strlen(path) + 1);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && write(fd, &cmd, 1) == 1 &&
	    read(fd, &pid, sizeof(pid)) != (ssize_t)sizeof(pid))
		pid = -1;
	close(fd);
	return pid;
}

static int ask(char cmd)
{
	return ask_at(sockpath, cmd);
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


static void test_socket_permissions(void)
{
	struct strbuf err = STRBUF_INIT, path = STRBUF_INIT;
	struct stat st;
	int fd;

	strbuf_addf(&path, "%s.perm", sockpath);
	fd = listen_socket(path.buf, &err);
	CHECK(fd >= 0);
	CHECK(stat(path.buf, &st) == 0 && S_ISSOCK(st.st_mode));
	CHECK((st.st_mode & 07777) == 0660); /* never world-connectable */
	CHECK(st.st_gid == getegid());
	close(fd);

	/* a restart replaces the old socket, with the mode asked for now */
	fd = listen_socket_mode(path.buf, 0600, getegid(), &err);
	CHECK(fd >= 0);
	CHECK(stat(path.buf, &st) == 0 && (st.st_mode & 07777) == 0600);
	close(fd);
	if (geteuid() == 0) {
		fd = listen_socket_mode(path.buf, 0660, 4242, &err);
		CHECK(fd >= 0);
		CHECK(stat(path.buf, &st) == 0 && st.st_gid == 4242 && (st.st_mode & 07777) == 0660);
		close(fd);
	}
	unlink(path.buf);

	/* a path holding something else than a socket is not deleted */
	CHECK(file_write_atomic(path.buf, "keep", 4, 0644) == 0);
	strbuf_reset(&err);
	CHECK(listen_socket(path.buf, &err) < 0);
	CHECK(strstr(strbuf_str(&err), "in use") != NULL);
	CHECK(stat(path.buf, &st) == 0 && S_ISREG(st.st_mode));
	unlink(path.buf);
	strbuf_release(&err);
	strbuf_release(&path);
}

static void test_recycle_limits_are_spread(void)
{
	int64_t lo = INT64_MAX, hi = 0, v;
	int i, distinct = 0, in_range = 1;
	static int64_t seen[2000];

	for (i = 0; i < 2000; i++) {
		int j, dup = 0;

		v = worker_recycle_limit(10000);
		in_range &= v >= 9000 && v <= 11000;
		lo = v < lo ? v : lo;
		hi = v > hi ? v : hi;
		for (j = 0; j < i && !dup; j++)
			dup = seen[j] == v;
		distinct += !dup;
		seen[i] = v;
	}
	CHECK(in_range);
	/* uniform over 2001 values: 2000 draws reach both tenths of the ends */
	CHECK(lo < 9200 && hi > 10800);
	CHECK(distinct > 1000);
	CHECK(worker_recycle_limit(9) == 9); /* too small to spread */
	CHECK(worker_recycle_limit(1) == 1);
	v = worker_recycle_limit(10);
	CHECK(v >= 9 && v <= 11);
}

/* Children of pid that are alive (not zombies). */
static int count_children(pid_t pid)
{
	struct strbuf path = STRBUF_INIT, stat_text = STRBUF_INIT;
	struct dirent *de;
	DIR *d = opendir("/proc");
	int n = 0;

	while (d && (de = readdir(d))) {
		const char *rp;
		int ppid = 0;
		char state = 0;

		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		strbuf_reset(&path);
		strbuf_addf(&path, "/proc/%s/stat", de->d_name);
		strbuf_reset(&stat_text);
		if (file_read_capped(path.buf, 4096, &stat_text) < 0)
			continue;
		rp = strrchr(stat_text.buf, ')'); /* the command name may hold anything */
		if (rp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && ppid == pid && state != 'Z')
			n++;
	}
	if (d)
		closedir(d);
	strbuf_release(&path);
	strbuf_release(&stat_text);
	return n;
}

/* The reload hook of the second master: the file "<socket>.settings"
 * holds the number of workers; anything else is a bad configuration. */
struct reload_ctx {
	const char *settings_file;
	struct settings current;
};

static int reload_from_file(void *ctx, struct pool_spec *pools, int npools, int64_t *grace_ms,
			    struct strbuf *err)
{
	struct reload_ctx *rc = ctx;
	struct strbuf text = STRBUF_INIT;
	int64_t n;
	int ret = -1;

	(void)npools;
	(void)grace_ms;
	if (file_read_capped(rc->settings_file, 64, &text) < 0 ||
	    parse_int64(text.buf, 1, 64, &n) < 0) {
		strbuf_addf(err, "%s: not a worker count", rc->settings_file);
		goto out;
	}
	pools[0].nprocs = (int)n;
	rc->current.version++;
	pools[0].arg = &rc->current;
	ret = 0;
out:
	strbuf_release(&text);
	return ret;
}

static void test_sighup_reloads_settings_and_keeps_workers_on_a_bad_one(void)
{
	struct strbuf err = STRBUF_INIT, path = STRBUF_INIT, settings = STRBUF_INIT;
	struct reload_ctx rc;
	pid_t m;
	int fd, i, v, seen_new = 0;
	int before[4];

	strbuf_addf(&path, "%s.reload", sockpath);
	strbuf_addf(&settings, "%s.settings", sockpath);
	fd = listen_socket(path.buf, &err);
	CHECK(fd >= 0);
	rc.settings_file = settings.buf;
	rc.current.version = 1;
	m = fork();
	if (m == 0) {
		struct pool_spec pool = { "reload", fd, 2, 500, worker, &rc.current, 4 };

		_exit(prefork_run_reloadable(&pool, 1, 2000, reload_from_file, &rc) < 0 ? 1 : 0);
	}
	close(fd);
	sleep_ms(400);
	CHECK(count_children(m) == 2);
	CHECK(ask_at(path.buf, 'v') == 1);

	/* a bad configuration: logged, nothing replaced */
	CHECK(file_write_atomic(settings.buf, "lots", 4, 0644) == 0);
	for (i = 0; i < 4; i++)
		before[i] = ask_at(path.buf, 'p');
	kill(m, SIGHUP);
	sleep_ms(800);
	for (i = 0; i < 4; i++) {
		int pid = ask_at(path.buf, 'p');

		CHECK(pid > 0 && alive(before[i]));
		CHECK(ask_at(path.buf, 'v') == 1);
	}
	CHECK(count_children(m) == 2);

	/* a good one: a new generation with the new settings, one more worker */
	CHECK(file_write_atomic(settings.buf, "3", 1, 0644) == 0);
	kill(m, SIGHUP);
	sleep_ms(1200);
	for (i = 0; i < 4; i++)
		CHECK(!alive(before[i]));
	for (i = 0; i < 6; i++) {
		v = ask_at(path.buf, 'v');
		CHECK(v == 2);
		seen_new += v == 2;
	}
	CHECK(seen_new == 6);
	CHECK(count_children(m) == 3);

	/* more than max_nprocs is held to max_nprocs */
	CHECK(file_write_atomic(settings.buf, "9", 1, 0644) == 0);
	kill(m, SIGHUP);
	sleep_ms(1200);
	CHECK(ask_at(path.buf, 'v') == 3);
	CHECK(count_children(m) == 4);

	kill(m, SIGTERM);
	CHECK(waitpid(m, NULL, 0) == m);
	unlink(path.buf);
	unlink(settings.buf);
	strbuf_release(&err);
	strbuf_release(&path);
	strbuf_release(&settings);
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
	RUN(test_socket_permissions);
	RUN(test_recycle_limits_are_spread);
	RUN(test_sighup_reloads_settings_and_keeps_workers_on_a_bad_one);
	if (master > 0 && kill(master, 0) == 0) {
		kill(master, SIGKILL);
		waitpid(master, NULL, 0);
	}
	unlink(sockpath);
	return harness_done("prefork");
}
