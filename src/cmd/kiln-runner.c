/*
 * kiln-runner - claims queued coding-agent runs from the job table and
 * executes each in its own child process (agent.c).
 *
 * The parent only claims, renews leases, forwards cancellations and reaps.
 * Claims are atomic across runners sharing one database (SELECT ... FOR
 * UPDATE SKIP LOCKED) and commit only once the child exists, so a failed
 * fork claims nothing. Leases are renewed for live children only. A run
 * whose lease lapsed (its runner died) is claimed again and resumed from
 * its durable thread; after runner_max_attempts lost claims it is claimed
 * once more to be ended with runner_lost. A runner stopping in order
 * (SIGTERM) hands its runs back at once, and those claims cost no attempt.
 * Children die with the parent (PR_SET_PDEATHSIG), so a killed runner
 * never leaves a run half-driven by an orphan: its lease lapses and
 * another runner takes over.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "appstate.h"
#include "config.h"
#include "db.h"
#include "events.h"
#include "log.h"
#include "strbuf.h"
#include "util.h"

struct child {
	pid_t pid;
	int64_t run_id;
	int cancel_sent;
};

struct runner {
	struct config cfg;
	struct db db;
	char id[128];
	struct child *kids;
	int nkids, maxkids;
	unsigned fork_faults; /* KILN_FAULT_FORK (tests): forks still to fail */
};

static volatile sig_atomic_t stopping;
static volatile sig_atomic_t child_cancel;

static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}

static void on_cancel(int sig)
{
	(void)sig;
	child_cancel = 1;
}

/* A run whose runner died runner_max_attempts times is claimed once more,
 * only to be ended: the child lists its changes (and carries out a pending
 * rollback cancel) under the app lock, like any ending. Should that child
 * die too, the run is ended here, with the changed files read without the
 * lock: a listing, not a guarantee. */
static int end_lost_run(struct runner *rn, int64_t run_id, int64_t app_id, int64_t base_rev_id,
			int64_t lost)
{
	struct strbuf msg = STRBUF_INIT, err = STRBUF_INIT;
	json_object *p = json_object_new_object(), *e = json_object_new_object(), *changed;
	int ret;

	strbuf_addf(&msg, "the run's runner stopped %lld times; giving up", (long long)lost);
	if (app_changed_files(&rn->db, &rn->cfg, app_id, base_rev_id, NULL, &changed, &err) < 0) {
		log_warn("run %lld: cannot list its changed files: %s", (long long)run_id, err.buf);
		changed = json_object_new_array();
	}
	json_object_object_add(e, "code", json_object_new_string("runner_lost"));
	json_object_object_add(e, "message", json_object_new_string(msg.buf));
	json_object_object_add(p, "status", json_object_new_string("failed"));
	json_object_object_add(p, "error", e);
	json_object_object_add(p, "changed_files", changed);
	json_object_object_add(p, "rolled_back", json_object_new_boolean(0));
	ret = db_exec(&rn->db, "UPDATE agent_runs SET status = 'failed', error_code = 'runner_lost', "
			       "error_message = ?, finished_at = NOW(3), lease_owner = NULL, "
			       "lease_expires_at = NULL WHERE id = ?", "si", msg.buf, run_id) < 0 ||
			      event_append_locked(&rn->db, run_id, "run.failed", p) < 0
		      ? -1
		      : 0;
	json_object_put(p);
	strbuf_release(&msg);
	strbuf_release(&err);
	return ret;
}

static void child_main(struct runner *rn, int64_t run_id, int go_fd)
{
	struct sigaction sa;
	sigset_t none;
	char prog[48], go;
	ssize_t n;
	int rc;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_cancel;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = SIG_DFL;
	sigaction(SIGTERM, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(1);
	snprintf(prog, sizeof(prog), "kiln-runner[run %lld]", (long long)run_id);
	log_set_prog(prog);
	/* The claim commits after the fork (so a failed fork claims nothing):
	 * start only once the parent says it did. */
	do
		n = read(go_fd, &go, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		_exit(0);
	close(go_fd);
	/* The parent's connection stays the parent's: a fresh one here. */
	rc = agent_execute_run(&rn->cfg, run_id, rn->id, &child_cancel);
	_exit(rc < 0 ? 1 : 0);
}

/* A child for run_id, waiting on *go_fd (write one byte to start it, close
 * to send it away); -1 when fork or pipe fail. */
static pid_t fork_child(struct runner *rn, int64_t run_id, int *go_fd)
{
	int fds[2];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	if (rn->fork_faults) {
		/* injected: as when the process table or memory is full */
		rn->fork_faults--;
		close(fds[0]);
		close(fds[1]);
		errno = EAGAIN;
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		close(fds[1]);
		child_main(rn, run_id, fds[0]);
	}
	close(fds[0]);
	if (pid < 0) {
		close(fds[1]);
		return -1;
	}
	*go_fd = fds[1];
	return pid;
}

/* Claims one run; 1 claimed (child started), 0 nothing to do, -1 error. */
static int claim_next(struct runner *rn)
{
	struct db *db = &rn->db;
	struct db_result r;
	int64_t run_id, app_id, base_rev_id, lost;
	int expired, i, go_fd;
	pid_t pid;

	if (db_begin(db) < 0)
		return -1;
	if (db_query(db, &r, "SELECT id, attempt - handbacks, status = 'running', app_id, base_revision_id "
			     "FROM agent_runs WHERE status = 'queued' OR (status = 'running' AND lease_expires_at < NOW(3)) "
			     "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED", "") < 0)
		goto fail;
	if (r.nrows == 0) {
		db_result_free(&r);
		db_rollback(db);
		return 0;
	}
	run_id = db_int(&r, 0, 0);
	lost = db_int(&r, 0, 1);
	expired = db_int(&r, 0, 2) == 1;
	app_id = db_int(&r, 0, 3);
	base_rev_id = db_int(&r, 0, 4);
	db_result_free(&r);
	for (i = 0; expired && i < rn->nkids; i++) {
		if (rn->kids[i].run_id != run_id)
			continue;
		/* Our own child still drives it: only the renewals failed for a
		 * while. A second child would drive the same run under the same
		 * lease owner, so renew the lease instead. */
		if (db_exec(db, "UPDATE agent_runs SET lease_expires_at = NOW(3) + INTERVAL ? SECOND WHERE id = ?",
			    "ii", rn->cfg.runner_lease_s, run_id) < 0)
			goto fail;
		return db_commit(db) < 0 ? -1 : 0;
	}
	if (expired && lost > rn->cfg.runner_max_attempts) {
		log_warn("run %lld: the runner ending it was lost too; failing it here", (long long)run_id);
		if (end_lost_run(rn, run_id, app_id, base_rev_id, lost - 1) < 0)
			goto fail;
		return db_commit(db) < 0 ? -1 : 0;
	}
	if (db_exec(db, "UPDATE agent_runs SET status = 'running', attempt = attempt + 1, lease_owner = ?, "
			"lease_expires_at = NOW(3) + INTERVAL ? SECOND, started_at = COALESCE(started_at, NOW(3)) "
			"WHERE id = ?", "sii", rn->id, rn->cfg.runner_lease_s, run_id) < 0)
		goto fail;
	pid = fork_child(rn, run_id, &go_fd);
	if (pid < 0) {
		/* Nothing committed: the run stays as it was for the next try. */
		log_error("run %lld: cannot start a child: %s", (long long)run_id, strerror(errno));
		goto fail;
	}
	if (db_commit(db) < 0) {
		close(go_fd); /* the child leaves without a word; reap_children takes it */
		return -1;
	}
	if (write(go_fd, "g", 1) != 1)
		log_error("run %lld: cannot start child %d: %s", (long long)run_id, (int)pid, strerror(errno));
	close(go_fd);
	rn->kids[rn->nkids].pid = pid;
	rn->kids[rn->nkids].run_id = run_id;
	rn->kids[rn->nkids].cancel_sent = 0;
	rn->nkids++;
	log_info("run %lld claimed by %s (child %d)", (long long)run_id, rn->id, (int)pid);
	return 1;
fail:
	db_rollback(db);
	return -1;
}

static void reap_children(struct runner *rn)
{
	int status, i;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (i = 0; i < rn->nkids; i++) {
			if (rn->kids[i].pid != pid)
				continue;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				/* The attempt died: let the lease lapse now so the
				 * run is resumed at once rather than after it. */
				log_warn("run %lld: child %d ended abnormally (status %d)",
					 (long long)rn->kids[i].run_id, (int)pid, status);
				db_exec(&rn->db, "UPDATE agent_runs SET lease_expires_at = NOW(3) - INTERVAL 1 SECOND "
						 "WHERE id = ? AND lease_owner = ? AND status = 'running'",
					"is", rn->kids[i].run_id, rn->id);
			}
			rn->kids[i] = rn->kids[--rn->nkids];
			break;
		}
	}
}

/* Only the runs a live child drives: a run whose child is gone must lapse,
 * so that it is resumed, however it came to be without one. */
static void renew_leases(struct runner *rn)
{
	int i;

	for (i = 0; i < rn->nkids; i++)
		if (db_exec(&rn->db, "UPDATE agent_runs SET lease_expires_at = NOW(3) + INTERVAL ? SECOND "
				     "WHERE id = ? AND lease_owner = ? AND status = 'running'",
			    "iis", rn->cfg.runner_lease_s, rn->kids[i].run_id, rn->id) < 0) {
			log_warn("lease renewal failed: %s", rn->db.errmsg);
			return;
		}
}

static void forward_cancels(struct runner *rn)
{
	struct db_result r;
	size_t k;
	int i;

	if (!rn->nkids)
		return;
	if (db_query(&rn->db, &r, "SELECT id FROM agent_runs WHERE lease_owner = ? AND status = 'running' "
				  "AND cancel_requested = 1", "s", rn->id) < 0)
		return;
	for (k = 0; k < r.nrows; k++)
		for (i = 0; i < rn->nkids; i++)
			if (rn->kids[i].run_id == db_int(&r, k, 0) && !rn->kids[i].cancel_sent) {
				kill(rn->kids[i].pid, SIGUSR1);
				rn->kids[i].cancel_sent = 1;
			}
	db_result_free(&r);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct strbuf err = STRBUF_INIT;
	struct runner rn;
	struct sigaction sa;
	const char *cfgpath = NULL, *fork_faults;
	unsigned char rnd[4];
	char host[64], hex[9];
	int64_t last_renew = 0, *back;
	int opt, i, nback;

	log_set_prog("kiln-runner");
	while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		if (opt == 'c') {
			cfgpath = optarg;
		} else {
			fputs("usage: kiln-runner [--config FILE]\n", stderr);
			return opt == 'h' ? 0 : 2;
		}
	}
	memset(&rn, 0, sizeof(rn));
	if (config_load(&rn.cfg, cfgpath, &err) < 0) {
		log_error("config: %s", err.buf);
		return 1;
	}
	if (gethostname(host, sizeof(host)) < 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	random_bytes(rnd, sizeof(rnd));
	hex_encode(rnd, sizeof(rnd), hex);
	snprintf(rn.id, sizeof(rn.id), "%.60s:%d:%s", host, (int)getpid(), hex);
	rn.maxkids = (int)rn.cfg.runner_max_concurrent;
	rn.kids = xcalloc((size_t)rn.maxkids, sizeof(*rn.kids));
	back = xcalloc((size_t)rn.maxkids, sizeof(*back));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	while (db_connect(&rn.db, &rn.cfg) < 0 && !stopping) {
		log_warn("database unreachable (%s); retrying", rn.db.errmsg);
		db_close(&rn.db);
		sleep_ms(1000);
	}
	/* faults for the tests (docs/PROOF.md); unset, nothing happens */
	db_arm_commit_fault(&rn.db, "KILN_FAULT_RUNNER_COMMIT");
	fork_faults = getenv("KILN_FAULT_FORK");
	if (fork_faults && parse_uint(fork_faults, 1000, &rn.fork_faults) < 0)
		rn.fork_faults = 0;
	log_info("runner %s ready: up to %d concurrent runs, lease %llds", rn.id, rn.maxkids,
		 (long long)rn.cfg.runner_lease_s);
	while (!stopping) {
		int64_t now = mono_ms();

		reap_children(&rn);
		if (now - last_renew >= rn.cfg.runner_lease_s * 1000 / 3) {
			renew_leases(&rn);
			last_renew = now;
		}
		forward_cancels(&rn);
		while (rn.nkids < rn.maxkids && !stopping && claim_next(&rn) > 0)
			;
		sleep_ms(rn.cfg.runner_poll_ms);
	}
	/* Orderly stop: end the children, then hand their runs back at once,
	 * as hand-backs: a deploy is no lost runner, so it costs no attempt. */
	log_info("stopping: %d runs in progress go back to the queue", rn.nkids);
	nback = rn.nkids;
	for (i = 0; i < rn.nkids; i++) {
		back[i] = rn.kids[i].run_id;
		kill(rn.kids[i].pid, SIGTERM);
	}
	while (rn.nkids) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (pid < 0 && errno != EINTR)
			break;
		for (i = 0; i < rn.nkids; i++)
			if (rn.kids[i].pid == pid)
				rn.kids[i] = rn.kids[--rn.nkids];
	}
	for (i = 0; i < nback; i++)
		db_exec(&rn.db, "UPDATE agent_runs SET lease_expires_at = NOW(3) - INTERVAL 1 SECOND, "
				"handbacks = handbacks + 1 WHERE id = ? AND lease_owner = ? AND status = 'running'",
			"is", back[i], rn.id);
	db_close(&rn.db);
	free(rn.kids);
	free(back);
	config_release(&rn.cfg);
	strbuf_release(&err);
	return 0;
}
