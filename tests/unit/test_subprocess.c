/* test_subprocess.c - subprocess_run: exit codes, signals, capture and cap,
 * deadlines and cancel killing whole process groups, exec failures, env,
 * fds, credentials and the parent-death signal. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fileutil.h"
#include "harness.h"
#include "strbuf.h"
#include "subprocess.h"
#include "util.h"

static char tmpdir[256];

static int run(struct subprocess *sp, const char *const *argv, struct strbuf *errmsg)
{
	sp->argv = argv;
	return subprocess_run(sp, errmsg);
}

/* 1 while pid exists and is not a zombie. */
static int process_alive(pid_t pid)
{
	struct strbuf path = STRBUF_INIT, stat_text = STRBUF_INIT;
	const char *paren;
	int alive = 0;

	strbuf_addf(&path, "/proc/%d/stat", (int)pid);
	if (file_read_capped(path.buf, 4096, &stat_text) == 0) {
		paren = strrchr(stat_text.buf, ')');
		alive = paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
	}
	strbuf_release(&path);
	strbuf_release(&stat_text);
	return alive;
}

static int wait_gone(pid_t pid, int64_t ms)
{
	int64_t end = mono_ms() + ms;

	while (mono_ms() < end) {
		if (!process_alive(pid))
			return 1;
		sleep_ms(20);
	}
	return !process_alive(pid);
}

static pid_t read_pid_file(const char *path, int64_t wait_ms)
{
	struct strbuf sb = STRBUF_INIT;
	int64_t end = mono_ms() + wait_ms, v = 0;

	while (mono_ms() < end) {
		strbuf_reset(&sb);
		if (file_read_capped(path, 64, &sb) == 0 && sb.len && sb.buf[sb.len - 1] == '\n') {
			sb.buf[sb.len - 1] = '\0';
			if (parse_int64(sb.buf, 1, 1 << 22, &v) == 0)
				break;
		}
		sleep_ms(10);
	}
	strbuf_release(&sb);
	return (pid_t)v;
}

static void test_exit_codes(void)
{
	static const char *const t[] = { "true", NULL };
	static const char *const f[] = { "false", NULL };
	static const char *const seven[] = { "sh", "-c", "exit 7", NULL };
	struct strbuf e = STRBUF_INIT;
	struct subprocess sp = { 0 };

	CHECK(run(&sp, t, &e) == 0);
	CHECK(sp.exit_code == 0 && sp.term_signal == 0 && !sp.timed_out);
	subprocess_release(&sp);
	CHECK(run(&sp, f, &e) == 0);
	CHECK(sp.exit_code == 1);
	subprocess_release(&sp);
	CHECK(run(&sp, seven, &e) == 0);
	CHECK(sp.exit_code == 7);
	subprocess_release(&sp);
	CHECK(e.len == 0);
	strbuf_release(&e);
}

static void test_signal(void)
{
	static const char *const argv[] = { "sh", "-c", "kill -SEGV $$", NULL };
	struct strbuf e = STRBUF_INIT;
	struct subprocess sp = { 0 };

	CHECK(run(&sp, argv, &e) == 0);
	CHECK(sp.exit_code == -1);
	CHECK(sp.term_signal == SIGSEGV);
	subprocess_release(&sp);
	strbuf_release(&e);
}

static void test_capture(void)
{
	static const char *const argv[] = { "sh", "-c", "echo out; echo err >&2; printf 'a\\0b'", NULL };
	static const char *const merged[] = { "sh", "-c", "echo one; echo two >&2; echo three", NULL };
	struct strbuf e = STRBUF_INIT;
	struct subprocess sp = { 0 };

	CHECK(run(&sp, argv, &e) == 0);
	CHECK(sp.out.len == 7 && !memcmp(sp.out.buf, "out\na\0b", 7));
	CHECK_STR(sp.err.buf, "err\n");
	CHECK(!sp.out_truncated && !sp.err_truncated);
	subprocess_release(&sp);

	memset(&sp, 0, sizeof(sp));
	sp.stderr_to_stdout = 1;
	CHECK(run(&sp, merged, &e) == 0);
	CHECK_STR(sp.out.buf, "one\ntwo\nthree\n");
	CHECK(sp.err.len == 0);
	subprocess_release(&sp);
	strbuf_release(&e);
}

/* 10 MB on each stream into 4 KiB caps: the program must not block on a
 * full pipe, and both buffers stop at the cap. */
static void test_output_cap_flood(void)
{
	static const char *const argv[] = {
		"sh", "-c", "head -c 10485760 /dev/zero; head -c 10485760 /dev/zero >&2", NULL
	};
	struct strbuf e = STRBUF_INIT;
	struct subprocess sp = { 0 };

	sp.output_cap = 4096;
	sp.timeout_ms = 20000;
	CHECK(run(&sp, argv, &e) == 0);
	CHECK(sp.exit_code == 0 && !sp.timed_out);
	CHECK(sp.out.len == 4096 && sp.out_truncated);
	CHECK(sp.err.len == 4096 && sp.err_truncated);
	CHECK(sp.out.alloc <= 4097);
	subprocess_release(&sp);
	strbuf_release(&e);
}

/* The child and a grandchild both ignore SIGTERM and keep the output pipe
 * open; the deadline must still end everything promptly. */
static void test_timeout_kills_group(void)
{
	struct strbuf e = STRBUF_INIT, script = STRBUF_INIT, pidfile = STRBUF_INIT;
	struct subprocess sp = { 0 };
	const char *argv[] = { "sh", "-c", NULL, NULL };
	int64_t start;
	pid_t grandchild;

	strbuf_addf(&pidfile, "%s/grandchild.pid", tmpdir);
	strbuf_addf(&script, "trap '' TERM; (trap '' TERM; echo $(exec sh -c 'echo $PPID') > %s; "
		    "exec sleep 60) & sleep 60", pidfile.buf);
	argv[2] = script.buf;
	sp.timeout_ms = 300;
	start = mono_ms();
	CHECK(run(&sp, argv, &e) == 0);
	CHECK(mono_ms() - start < 3000);
	CHECK(sp.timed_out);
	CHECK(sp.term_signal == SIGKILL);
	grandchild = read_pid_file(pidfile.buf, 1000);
	CHECK(grandchild > 0);
	if (grandchild > 0)
		CHECK(wait_gone(grandchild, 2000));
	subprocess_release(&sp);
	strbuf_release(&e);
	strbuf_release(&script);
	strbuf_release(&pidfile);
}

/* A finished program's background children are not left running. */
static void test_exit_reaps_stragglers(void)
{
	struct strbuf e = STRBUF_INIT, script = STRBUF_INIT, pidfile = STRBUF_INIT;
	struct subprocess sp = { 0 };
	const char *argv[] = { "sh", "-c", NULL, NULL };
	int64_t start;
	pid_t bg;

	strbuf_addf(&pidfile, "%s/bg.pid", tmpdir);
	strbuf_addf(&script, "sleep 60 & echo $! > %s; exit 3", pidfile.buf);
	argv[2] = script.buf;
	sp.timeout_ms = 10000;
	start = mono_ms();
	CHECK(run(&sp, argv, &e) == 0);
	CHECK(sp.exit_code == 3 && !sp.timed_out);
	CHECK(mono_ms() - start < 3000);
	bg = read_pid_file(pidfile.buf, 1000);
	CHECK(bg > 0);
	if (bg > 0)
		CHECK(wait_gone(bg, 2000));
	subprocess_release(&sp);
	strbuf_release(&e);
	strbuf_release(&script);
	strbuf_release(&pidfile);
}

static void *set_cancel_later(void *arg)
{
	sleep_ms(200);
	*(volatile sig_atomic_t *)arg = 1;
	return NULL;
}

static void test_cancel(void)
{
	static const char *const argv[] = { "sleep", "60", NULL };
	static volatile sig_atomic_t cancel;
	struct strbuf e = STRBUF_INIT;
	struct subprocess sp = { 0 };
	pthread_t th;
	int64_t start;

	cancel = 0;
	sp.cancel = &cancel;
	sp.timeout_ms = 30000;
	CHECK(pthread_create(&th, NULL, set_cancel_later, (void *)&cancel) == 0);
	start = mono_ms();
	CHECK(run(&sp, argv, &e) == 0);
	CHECK(mono_ms() - start < 2000);
	CHECK(sp.cancelled && !sp.timed_out);
	pthread_join(th, NULL);
	subprocess_release(&sp);
	strbuf_release(&e);
}

static void test_exec_failures(void)
{
	static const char *const missing[] = { "kiln-no-such-program-xyz", NULL };
	static const char *const missing_path[] = { "/nonexistent/kiln-prog", NULL };
	static const char *const empty[] = { "", NULL };
	struct strbuf e = STRBUF_INIT, path = STRBUF_INIT;
	struct subprocess sp = { 0 };
	const char *noexec[] = { NULL, NULL };

	CHECK(run(&sp, missing, &e) == -1);
	CHECK(strstr(e.buf, "not found") != NULL);
	subprocess_release(&sp);

	strbuf_reset(&e);
	CHECK(run(&sp, missing_path, &e) == -1);
	CHECK(strstr(e.buf, "exec failed") && strstr(e.buf, "No such file"));
	subprocess_release(&sp);

	strbuf_addf(&path, "%s/not-executable", tmpdir);
	CHECK(file_write_atomic(path.buf, "#!/bin/sh\n", 10, 0644) == 0);
	noexec[0] = path.buf;
	strbuf_reset(&e);
	CHECK(run(&sp, noexec, &e) == -1);
	CHECK(strstr(e.buf, "Permission denied") != NULL);
	subprocess_release(&sp);

	strbuf_reset(&e);
	CHECK(run(&sp, empty, &e) == -1);
	subprocess_release(&sp);

	/* a cwd that does not exist is a start failure, not an exit code */
	memset(&sp, 0, sizeof(sp));
	sp.cwd = "/nonexistent-kiln-dir";
	strbuf_reset(&e);
	CHECK(run(&sp, (const char *const[]){ "true", NULL }, &e) == -1);
	CHECK(strstr(e.buf, "chdir") != NULL);
	subprocess_release(&sp);
	strbuf_release(&e);
	strbuf_release(&path);
}

static void test_env_and_cwd(void)
{
	static const char *const env_argv[] = { "env", NULL };
	static const char *const pwd_argv[] = { "pwd", NULL };
	static const char *const some_env[] = { "A=1", "B=two", NULL };
	struct strbuf e = STRBUF_INIT, want = STRBUF_INIT;
	struct subprocess sp = { 0 };

	setenv("KILN_MODEL_API_KEY", "secret-in-parent", 1);
	CHECK(run(&sp, env_argv, &e) == 0);
	CHECK(sp.exit_code == 0);
	CHECK(sp.out.len == 0);
	subprocess_release(&sp);

	sp.env = some_env;
	CHECK(run(&sp, env_argv, &e) == 0);
	CHECK_STR(sp.out.buf, "A=1\nB=two\n");
	subprocess_release(&sp);

	memset(&sp, 0, sizeof(sp));
	sp.cwd = tmpdir;
	CHECK(run(&sp, pwd_argv, &e) == 0);
	strbuf_addf(&want, "%s\n", tmpdir);
	CHECK_STR(sp.out.buf, want.buf);
	subprocess_release(&sp);
	unsetenv("KILN_MODEL_API_KEY");
	strbuf_release(&e);
	strbuf_release(&want);
}

static void test_stdin_and_fds(void)
{
	static const char *const cat_argv[] = { "cat", NULL };
	static const char *const fds_argv[] = { "ls", "/proc/self/fd", NULL };
	struct strbuf e = STRBUF_INIT;
	struct subprocess sp = { 0 };
	int scratch = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* deliberately not CLOEXEC; numbered high so ls's own fd cannot match */
	int leaked = fcntl(scratch, F_DUPFD, 50);
	int kept = fcntl(scratch, F_DUPFD_CLOEXEC, 60);
	struct strbuf want = STRBUF_INIT;

	CHECK(run(&sp, cat_argv, &e) == 0);
	CHECK(sp.exit_code == 0 && sp.out.len == 0);
	subprocess_release(&sp);

	/* 0, 1, 2, the inherited one, and ls's own directory fd */
	sp.inherit_fds = &kept;
	sp.ninherit_fds = 1;
	CHECK(run(&sp, fds_argv, &e) == 0);
	strbuf_addf(&want, "\n%d\n", kept);
	CHECK(strncmp(sp.out.buf, "0\n1\n2\n", 6) == 0);
	CHECK(strstr(sp.out.buf, want.buf) != NULL);
	strbuf_reset(&want);
	strbuf_addf(&want, "\n%d\n", leaked);
	CHECK(strstr(sp.out.buf, want.buf) == NULL);
	subprocess_release(&sp);
	close(leaked);
	close(kept);
	close(scratch);
	strbuf_release(&e);
	strbuf_release(&want);
}

static void test_rlimits_and_credentials(void)
{
	static const char *const ulimit_argv[] = { "sh", "-c", "ulimit -n; ulimit -c", NULL };
	static const char *const id_argv[] = { "sh", "-c", "id -u; id -g; id -G", NULL };
	struct rlimit_spec rl[] = { { RLIMIT_NOFILE, 77 }, { RLIMIT_CORE, 0 } };
	struct strbuf e = STRBUF_INIT;
	struct subprocess sp = { 0 };

	/* valgrind keeps its own fds above any low RLIMIT_NOFILE of the child
	 * it still controls until exec: the limit cannot be applied under it */
	if (getenv("KILN_UNDER_VALGRIND")) {
		printf("SKIP test_rlimits_and_credentials: RLIMIT_NOFILE cannot apply under valgrind\n");
		return;
	}

	sp.rlimits = rl;
	sp.nrlimits = ARRAY_SIZE(rl);
	CHECK(run(&sp, ulimit_argv, &e) == 0);
	CHECK_STR(sp.out.buf, "77\n0\n");
	subprocess_release(&sp);

	if (geteuid() != 0) {
		printf("SKIP test_rlimits_and_credentials (drop_privileges): not running as root\n");
		strbuf_release(&e);
		return;
	}
	memset(&sp, 0, sizeof(sp));
	sp.drop_privileges = 1;
	sp.uid = 65534;
	sp.gid = 65534;
	CHECK(run(&sp, id_argv, &e) == 0);
	CHECK_STR(sp.out.buf, "65534\n65534\n65534\n");
	subprocess_release(&sp);
	strbuf_release(&e);
}

static int failing_hook(void *ctx)
{
	(void)ctx;
	errno = EPERM;
	return -1;
}

static void test_pre_exec_failure(void)
{
	static const char *const argv[] = { "true", NULL };
	struct strbuf e = STRBUF_INIT;
	struct subprocess sp = { 0 };

	sp.pre_exec = failing_hook;
	CHECK(run(&sp, argv, &e) == -1);
	CHECK(strstr(e.buf, "pre-exec hook") && strstr(e.buf, "not permitted"));
	subprocess_release(&sp);
	strbuf_release(&e);
}

/* Kill the process that called subprocess_run: its program must die too. */
static void test_parent_death_kills_child(void)
{
	struct strbuf pidfile = STRBUF_INIT, script = STRBUF_INIT;
	pid_t helper, victim;
	int status;

	strbuf_addf(&pidfile, "%s/orphan.pid", tmpdir);
	strbuf_addf(&script, "echo $$ > %s; exec sleep 60", pidfile.buf);
	helper = fork();
	if (helper == 0) {
		const char *argv[] = { "sh", "-c", script.buf, NULL };
		struct strbuf e = STRBUF_INIT;
		struct subprocess sp = { 0 };

		sp.argv = argv;
		sp.new_session = 1;
		subprocess_run(&sp, &e);
		_exit(0);
	}
	CHECK(helper > 0);
	victim = read_pid_file(pidfile.buf, 3000);
	CHECK(victim > 0);
	kill(helper, SIGKILL);
	waitpid(helper, &status, 0);
	if (victim > 0)
		CHECK(wait_gone(victim, 2000));
	strbuf_release(&pidfile);
	strbuf_release(&script);
}

int main(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/kiln-subprocess-XXXXXX",
		 base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_exit_codes);
	RUN(test_signal);
	RUN(test_capture);
	RUN(test_output_cap_flood);
	RUN(test_timeout_kills_group);
	RUN(test_exit_reaps_stragglers);
	RUN(test_cancel);
	RUN(test_exec_failures);
	RUN(test_env_and_cwd);
	RUN(test_stdin_and_fds);
	RUN(test_rlimits_and_credentials);
	RUN(test_pre_exec_failure);
	RUN(test_parent_death_kills_child);
	rm_rf(tmpdir);
	return harness_done("subprocess");
}
