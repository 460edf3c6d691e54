/* subprocess.c - fork/exec with captured, capped output and a deadline
 * (see subprocess.h). */
#include "subprocess.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

/* How often the cancel flag and the child's exit are looked at. */
#define POLL_TICK_MS 50
/* After the program exits (or is killed), how long output still held open by
 * something outside its process group is waited for. */
#define DRAIN_GRACE_MS 1000
#define READ_CHUNK 65536
/* Upper bound for the fd sweep when close_range() is unavailable. */
#define FD_SWEEP_MAX 65536

/* What went wrong in the child before exec, sent through the CLOEXEC pipe. */
enum child_stage {
	STAGE_SESSION = 1,
	STAGE_STDIO,
	STAGE_FDS,
	STAGE_RLIMIT,
	STAGE_PRE_EXEC,
	STAGE_SETGROUPS,
	STAGE_SETGID,
	STAGE_SETUID,
	STAGE_PDEATHSIG,
	STAGE_CHDIR,
	STAGE_EXEC,
};

struct child_report {
	int stage;
	int err;
};

/* Everything the child uses, computed before fork. */
struct child_plan {
	const struct subprocess *sp;
	const char *path;            /* resolved program */
	const char *const *envp;
	int devnull, out_w, err_w, report_w;
	pid_t parent;
	int fd_sweep_max;
};

static const char *stage_name(int stage)
{
	switch (stage) {
	case STAGE_SESSION: return "process group setup";
	case STAGE_STDIO: return "stdio setup";
	case STAGE_FDS: return "closing inherited fds";
	case STAGE_RLIMIT: return "setrlimit";
	case STAGE_PRE_EXEC: return "pre-exec hook";
	case STAGE_SETGROUPS: return "setgroups";
	case STAGE_SETGID: return "setgid";
	case STAGE_SETUID: return "setuid";
	case STAGE_PDEATHSIG: return "parent-death signal";
	case STAGE_CHDIR: return "chdir";
	case STAGE_EXEC: return "exec";
	default: return "child setup";
	}
}

/* ---- child side: async-signal-safe calls only ---- */

static void __attribute__((noreturn)) child_fail(const struct child_plan *plan,
						 int stage, int err)
{
	struct child_report rep = { stage, err };

	if (write(plan->report_w, &rep, sizeof(rep)) < 0) {
		/* nobody left to tell */
	}
	_exit(127);
}

static void child_reset_signals(void)
{
	struct sigaction dfl;
	sigset_t none;
	int sig;

	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		/* fails harmlessly for the C library's reserved signals */
		sigaction(sig, &dfl, NULL);
	}
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

static int child_close_fds(const struct child_plan *plan)
{
	const struct subprocess *sp = plan->sp;
	size_t i;

	/* Mark rather than close so the report pipe survives until exec. */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		int fd;

		for (fd = 3; fd < plan->fd_sweep_max; fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	for (i = 0; i < sp->ninherit_fds; i++)
		if (fcntl(sp->inherit_fds[i], F_SETFD, 0) < 0)
			return -1;
	return 0;
}

static void __attribute__((noreturn)) child_exec(const struct child_plan *plan)
{
	const struct subprocess *sp = plan->sp;
	size_t i;

	if (sp->new_session ? setsid() < 0 : setpgid(0, 0) < 0)
		child_fail(plan, STAGE_SESSION, errno);
	child_reset_signals();

	if (dup2(plan->devnull, 0) < 0 || dup2(plan->out_w, 1) < 0 ||
	    dup2(sp->stderr_to_stdout ? plan->out_w : plan->err_w, 2) < 0)
		child_fail(plan, STAGE_STDIO, errno);
	if (child_close_fds(plan) < 0)
		child_fail(plan, STAGE_FDS, errno);

	for (i = 0; i < sp->nrlimits; i++) {
		struct rlimit rl = { sp->rlimits[i].limit, sp->rlimits[i].limit };

		if (setrlimit(sp->rlimits[i].resource, &rl) < 0)
			child_fail(plan, STAGE_RLIMIT, errno);
	}

	if (sp->pre_exec && sp->pre_exec(sp->pre_exec_ctx) < 0)
		child_fail(plan, STAGE_PRE_EXEC, errno);

	/*
	 * Raw syscalls: the libc wrappers synchronise credentials across all
	 * threads, machinery that is not safe to touch in a forked child.
	 * There is only this one thread here, which is all that needs changing.
	 */
	if (sp->drop_privileges) {
		if (syscall(SYS_setgroups, 0, NULL) < 0)
			child_fail(plan, STAGE_SETGROUPS, errno);
		if (syscall(SYS_setresgid, sp->gid, sp->gid, sp->gid) < 0)
			child_fail(plan, STAGE_SETGID, errno);
		if (syscall(SYS_setresuid, sp->uid, sp->uid, sp->uid) < 0)
			child_fail(plan, STAGE_SETUID, errno);
	}

	/* After the credential change, which would clear it. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		child_fail(plan, STAGE_PDEATHSIG, errno);
	/* The parent may have died before the line above took effect. */
	if (getppid() != plan->parent)
		_exit(127);

	if (sp->cwd && chdir(sp->cwd) < 0)
		child_fail(plan, STAGE_CHDIR, errno);

	execve(plan->path, (char *const *)sp->argv, (char *const *)plan->envp);
	child_fail(plan, STAGE_EXEC, errno);
}

/* ---- parent side ---- */

/* Looks name up in Kiln's own PATH; empty components (the cwd) are skipped
 * on purpose. */
static int locate_in_path(const char *name, struct strbuf *out)
{
	const char *path = getenv("PATH");
	const char *p, *end;
	struct stat st;

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p; p = *end ? end + 1 : end) {
		end = strchrnul(p, ':');
		if (end == p || *p != '/')
			continue;
		strbuf_reset(out);
		if (strbuf_add(out, p, (size_t)(end - p)) < 0 ||
		    strbuf_addch(out, '/') < 0 || strbuf_addstr(out, name) < 0)
			return -1;
		if (out->len >= PATH_MAX)
			continue;
		if (stat(out->buf, &st) == 0 && S_ISREG(st.st_mode) &&
		    access(out->buf, X_OK) == 0)
			return 0;
	}
	return -1;
}

/* Moves a freshly created fd above stdio so the child's dup2() onto 0-2
 * can never clobber it (Kiln may run with stdio closed). */
static int fd_above_stdio(int fd)
{
	int nfd;

	if (fd > 2)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return nfd;
}

static int make_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	fds[0] = fd_above_stdio(fds[0]);
	fds[1] = fd_above_stdio(fds[1]);
	if (fds[0] < 0 || fds[1] < 0) {
		if (fds[0] >= 0)
			close(fds[0]);
		if (fds[1] >= 0)
			close(fds[1]);
		return -1;
	}
	return 0;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static int fd_sweep_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > FD_SWEEP_MAX)
		return FD_SWEEP_MAX;
	return (int)rl.rlim_cur;
}

/* Called only while the child is unreaped, so its pid (and the process
 * group named after it) cannot have been reused. */
static void kill_group(pid_t pid)
{
	kill(-pid, SIGKILL);
	/* before the child's setpgid()/setsid() the group does not exist yet */
	kill(pid, SIGKILL);
}

struct capture {
	int fd;
	struct strbuf *sb;
	size_t cap;
	int *truncated;
};

/* One read; closes the stream at EOF or error. */
static void capture_read(struct capture *c, char *buf)
{
	ssize_t n = read(c->fd, buf, READ_CHUNK);

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		close_fd(&c->fd);
		return;
	}
	if (c->sb->len < c->cap) {
		size_t room = c->cap - c->sb->len;
		size_t take = (size_t)n < room ? (size_t)n : room;

		if (strbuf_add(c->sb, buf, take) < 0)
			*c->truncated = 1;
		if (take < (size_t)n)
			*c->truncated = 1;
	} else {
		*c->truncated = 1;
	}
}

/* Reads both streams until the child has exited and they are drained, the
 * deadline passes or cancel is set; kills the group in the last two cases. */
static void collect(struct subprocess *sp, pid_t pid, struct capture *caps,
		    size_t ncaps, int64_t start)
{
	int64_t deadline = sp->timeout_ms > 0 && sp->timeout_ms < INT64_MAX - start
			   ? start + sp->timeout_ms : INT64_MAX;
	int64_t drain_until = INT64_MAX;
	int exited = 0, killed = 0;
	char *buf = xcalloc(1, READ_CHUNK);

	for (;;) {
		struct pollfd pfd[2];
		nfds_t nfds = 0;
		int64_t now = mono_ms(), wait;
		size_t i;

		if (!exited) {
			siginfo_t si;
			int w;

			memset(&si, 0, sizeof(si));
			/* WNOWAIT: the zombie keeps its pid and group reserved */
			w = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
			if (w == 0 && si.si_pid == pid) {
				exited = 1;
				/* stragglers of a finished command */
				if (!killed)
					kill_group(pid);
				drain_until = now + DRAIN_GRACE_MS;
			} else if (w < 0 && errno == ECHILD) {
				/* reaped behind our back (SIGCHLD ignored): the pid
				 * may be reused already, so it is never signalled */
				exited = killed = 1;
				drain_until = now + DRAIN_GRACE_MS;
			}
		}
		if (!exited && !killed && sp->cancel && *sp->cancel) {
			sp->cancelled = 1;
			killed = 1;
			kill_group(pid);
		} else if (!exited && !killed && now >= deadline) {
			sp->timed_out = 1;
			killed = 1;
			kill_group(pid);
		}

		for (i = 0; i < ncaps; i++) {
			if (caps[i].fd < 0)
				continue;
			pfd[nfds].fd = caps[i].fd;
			pfd[nfds].events = POLLIN;
			pfd[nfds].revents = 0;
			nfds++;
		}
		if (exited && (nfds == 0 || now >= drain_until))
			break;

		wait = POLL_TICK_MS;
		if (!exited && !killed && deadline - now < wait)
			wait = deadline - now > 0 ? deadline - now : 0;
		if (poll(nfds ? pfd : NULL, nfds, (int)wait) <= 0)
			continue;
		for (i = 0; i < ncaps; i++) {
			nfds_t j;

			if (caps[i].fd < 0)
				continue;
			for (j = 0; j < nfds; j++)
				if (pfd[j].fd == caps[i].fd && pfd[j].revents)
					capture_read(&caps[i], buf);
		}
	}
	free(buf);
}

static pid_t wait_child(pid_t pid, int *status)
{
	pid_t r;

	do {
		r = waitpid(pid, status, 0);
	} while (r < 0 && errno == EINTR);
	return r;
}

/* Reads the child's pre-exec report: 1 if setup failed, 0 if exec ran. */
static int read_report(int fd, struct child_report *rep)
{
	ssize_t n;

	do {
		n = read(fd, rep, sizeof(*rep));
	} while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*rep);
}

int subprocess_run(struct subprocess *sp, struct strbuf *errmsg)
{
	static const char *const empty_env[] = { NULL };
	struct strbuf path = STRBUF_INIT;
	struct child_plan plan;
	struct child_report rep;
	struct capture caps[2];
	sigset_t all, old;
	size_t cap = sp->output_cap ? sp->output_cap : SUBPROCESS_DEFAULT_OUTPUT_CAP;
	size_t ncaps = 0, i;
	int out[2] = { -1, -1 }, err[2] = { -1, -1 }, report[2] = { -1, -1 };
	int devnull = -1, status = 0, ret = -1;
	int64_t start;
	pid_t pid;

	sp->exit_code = -1;
	sp->term_signal = 0;
	sp->timed_out = sp->cancelled = 0;
	sp->duration_ms = 0;
	sp->out_truncated = sp->err_truncated = 0;
	strbuf_init_capped(&sp->out, cap);
	strbuf_init_capped(&sp->err, cap);

	if (!sp->argv || !sp->argv[0] || !*sp->argv[0]) {
		strbuf_addstr(errmsg, "empty argv");
		goto out;
	}
	for (i = 0; i < sp->ninherit_fds; i++) {
		if (sp->inherit_fds[i] <= 2 || fcntl(sp->inherit_fds[i], F_GETFD) < 0) {
			strbuf_addf(errmsg, "fd %d cannot be inherited",
				    sp->inherit_fds[i]);
			goto out;
		}
	}
	if (strchr(sp->argv[0], '/')) {
		strbuf_addstr(&path, sp->argv[0]);
	} else if (locate_in_path(sp->argv[0], &path) < 0) {
		strbuf_addf(errmsg, "'%s' not found in PATH", sp->argv[0]);
		goto out;
	}

	devnull = fd_above_stdio(open("/dev/null", O_RDWR | O_CLOEXEC));
	if (devnull < 0 || make_pipe(out) < 0 ||
	    (!sp->stderr_to_stdout && make_pipe(err) < 0) || make_pipe(report) < 0) {
		strbuf_addf(errmsg, "cannot set up pipes: %s", strerror(errno));
		goto out;
	}

	plan.sp = sp;
	plan.path = path.buf;
	plan.envp = sp->env ? sp->env : empty_env;
	plan.devnull = devnull;
	plan.out_w = out[1];
	plan.err_w = err[1];
	plan.report_w = report[1];
	plan.parent = getpid();
	plan.fd_sweep_max = fd_sweep_limit();

	/* No Kiln signal handler may run in the child before it resets them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	start = mono_ms();
	pid = fork();
	if (pid == 0)
		child_exec(&plan);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pid < 0) {
		strbuf_addf(errmsg, "fork: %s", strerror(errno));
		goto out;
	}
	/* Closes the race with the child's own setpgid(); with new_session
	 * the child must stay a non-leader until its setsid(). */
	if (!sp->new_session)
		setpgid(pid, pid);

	close_fd(&out[1]);
	close_fd(&err[1]);
	close_fd(&report[1]);
	close_fd(&devnull);

	if (read_report(report[0], &rep)) {
		wait_child(pid, &status);
		strbuf_addf(errmsg, "cannot run '%s': %s failed: %s", sp->argv[0],
			    stage_name(rep.stage), strerror(rep.err));
		goto out;
	}

	caps[ncaps++] = (struct capture){ out[0], &sp->out, cap, &sp->out_truncated };
	if (err[0] >= 0)
		caps[ncaps++] = (struct capture){ err[0], &sp->err, cap, &sp->err_truncated };
	collect(sp, pid, caps, ncaps, start);
	out[0] = caps[0].fd;
	if (ncaps > 1)
		err[0] = caps[1].fd;

	if (wait_child(pid, &status) < 0) {
		strbuf_addf(errmsg, "waitpid: %s", strerror(errno));
		goto out;
	}
	sp->duration_ms = mono_ms() - start;
	if (WIFEXITED(status))
		sp->exit_code = WEXITSTATUS(status);
	else if (WIFSIGNALED(status))
		sp->term_signal = WTERMSIG(status);
	ret = 0;
out:
	close_fd(&out[0]);
	close_fd(&out[1]);
	close_fd(&err[0]);
	close_fd(&err[1]);
	close_fd(&report[0]);
	close_fd(&report[1]);
	close_fd(&devnull);
	strbuf_release(&path);
	return ret;
}

void subprocess_release(struct subprocess *sp)
{
	strbuf_release(&sp->out);
	strbuf_release(&sp->err);
}
