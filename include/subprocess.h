/*
 * subprocess.h - the one way Kiln starts another program.
 *
 * Shaped after git's run-command.h, but synchronous and bounded: an argv is
 * exec'd directly (never through a shell) with stdin on /dev/null, stdout
 * and stderr are captured into capped buffers, and a wall-clock deadline or
 * a cancel flag kills the program's whole process group.
 *
 *   struct rlimit_spec   one setrlimit() applied in the child before exec
 *   struct subprocess    what to run (inputs) and what happened (results)
 *   subprocess_run       run to completion; 0 if the program ran at all
 *   subprocess_release   free the captured output
 *
 * Between fork and exec the child makes only async-signal-safe calls, so a
 * multi-threaded Kiln may call subprocess_run from any thread. Everything the
 * child needs (resolved program path, environment, fd numbers) is prepared
 * before fork.
 *
 * Lifetime rules the child gets:
 *   - its own process group (or session with new_session), which is what a
 *     timeout or cancel kills with SIGKILL;
 *   - PR_SET_PDEATHSIG SIGKILL, so a dying Kiln leaves no orphan behind;
 *   - when the program itself exits, anything it left running in its process
 *     group is killed too: a finished command leaves nothing behind.
 *   - every fd except 0, 1, 2 and inherit_fds is closed at exec; signal
 *     dispositions and the signal mask start from the defaults.
 *
 * The caller must not ignore SIGCHLD or reap children it did not start
 * (waitpid(-1)): the child is watched and killed by pid until reaped here.
 */
#ifndef KILN_SUBPROCESS_H
#define KILN_SUBPROCESS_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "strbuf.h"

/* Applied with soft = hard = limit. */
struct rlimit_spec {
	int resource; /* RLIMIT_* */
	rlim_t limit;
};

/* Used when output_cap is 0: every captured buffer has a hard cap. */
#define SUBPROCESS_DEFAULT_OUTPUT_CAP (1024 * 1024)

struct subprocess {
	/* --- inputs --- */
	const char *const *argv;  /* argv[0] is looked up in Kiln's PATH
				   * unless it contains a '/' */
	const char *const *env;   /* NULL = empty environment */
	const char *cwd;          /* NULL = Kiln's cwd */
	int64_t timeout_ms;       /* <= 0: no deadline */
	size_t output_cap;        /* per stream; 0 = SUBPROCESS_DEFAULT_OUTPUT_CAP.
				   * Past the cap output is read and discarded. */
	volatile sig_atomic_t *cancel; /* polled at least every 50 ms */
	int new_session;          /* setsid() instead of setpgid() */
	int stderr_to_stdout;     /* 2>&1: both streams, in order, into out */
	const struct rlimit_spec *rlimits;
	size_t nrlimits;
	uid_t uid;                /* with drop_privileges: setgroups(0), */
	gid_t gid;                /* setresgid(gid), setresuid(uid) */
	int drop_privileges;
	const int *inherit_fds;   /* kept open (same numbers, all > 2) */
	size_t ninherit_fds;
	/* Runs in the child after fds and rlimits are set up and before
	 * privileges are dropped; async-signal-safe calls only. Returns 0, or
	 * -1 with errno set to abort the exec. */
	int (*pre_exec)(void *ctx);
	void *pre_exec_ctx;

	/* --- results (set by subprocess_run) --- */
	int exit_code;    /* exit status, or -1 when killed by a signal */
	int term_signal;  /* the signal that killed it, else 0 */
	int timed_out;
	int cancelled;
	int64_t duration_ms;
	struct strbuf out, err;
	int out_truncated, err_truncated;
};

/*
 * Runs sp->argv to completion. Returns 0 if the program was started (whatever
 * its exit status, timeout or cancel), -1 if it could not be (errmsg says
 * why: not found in PATH, exec failure, a failed setup step in the child).
 * Initialises sp->out and sp->err; call subprocess_release() afterwards in
 * either case.
 */
int subprocess_run(struct subprocess *sp, struct strbuf *errmsg);
void subprocess_release(struct subprocess *sp);

#endif
