/*
 * kiln-runner - claims queued coding-agent runs from the job table and
 * executes each in its own child process (agent.c).
 *
 * The parent only claims, renews leases, forwards cancellations and reaps.
 * Claims are atomic across runners sharing one database (SELECT ... FOR
 * UPDATE SKIP LOCKED). A run whose lease lapsed (its runner died) is claimed
 * again and resumed from its durable thread, up to runner_max_attempts,
 * then failed with runner_lost. Children die with the parent
 * (PR_SET_PDEATHSIG), so a killed runner never leaves a run half-driven by
 * an orphan: its lease lapses and another runner takes over.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "config.h"
#include "db.h"
#include "events.h"
#include "log.h"
#include "runs.h"
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

static json_object *lost_payload(int64_t attempts)
{
	json_object *p = json_object_new_object(), *e = json_object_new_object();
	struct strbuf msg = STRBUF_INIT;

	strbuf_addf(&msg, "the run's runner stopped %lld times; giving up", (long long)attempts);
	json_object_object_add(e, "code", json_object_new_string("runner_lost"));
	json_object_object_add(e, "message", json_object_new_string(msg.buf));
	json_object_object_add(p, "status", json_object_new_string("failed"));
	json_object_object_add(p, "error", e);
	json_object_object_add(p, "changed_files", json_object_new_array());
	strbuf_release(&msg);
	return p;
}

static void spawn_child(struct runner *rn, int64_t run_id)
{
	pid_t pid = fork();

	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		struct sigaction sa;
		sigset_t none;
		char prog[48];
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
		/* The parent's connection stays the parent's: a fresh one here. */
		rc = agent_execute_run(&rn->cfg, run_id, rn->id, &child_cancel);
		_exit(rc < 0 ? 1 : 0);
	}
	rn->kids[rn->nkids].pid = pid;
	rn->kids[rn->nkids].run_id = run_id;
	rn->kids[rn->nkids].cancel_sent = 0;
	rn->nkids++;
	log_info("run %lld claimed by %s (child %d)", (long long)run_id, rn->id, (int)pid);
}

/* Claims one run; 1 claimed (child spawned), 0 nothing to do, -1 error. */
static int claim_next(struct runner *rn)
{
	struct db *db = &rn->db;
	struct db_result r;
	int64_t run_id, attempt;
	int expired, cancel, i;

	if (db_begin(db) < 0)
		return -1;
	if (db_query(db, &r, "SELECT id, attempt, status = 'running', cancel_requested FROM agent_runs "
			     "WHERE status = 'queued' OR (status = 'running' AND lease_expires_at < NOW(3)) "
			     "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED", "") < 0)
		goto fail;
	if (r.nrows == 0) {
		db_result_free(&r);
		db_rollback(db);
		return 0;
	}
	run_id = db_int(&r, 0, 0);
	attempt = db_int(&r, 0, 1);
	expired = db_int(&r, 0, 2) == 1;
	cancel = db_int(&r, 0, 3) == 1;
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
	if (expired && attempt >= rn->cfg.runner_max_attempts) {
		json_object *p = lost_payload(attempt);

		log_warn("run %lld: runner lost %lld times; failing it", (long long)run_id, (long long)attempt);
		if (db_exec(db, "UPDATE agent_runs SET status = 'failed', error_code = 'runner_lost', "
				"error_message = 'the runner executing it stopped too many times', "
				"finished_at = NOW(3), lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
			    "i", run_id) < 0 ||
		    event_append_locked(db, run_id, "run.failed", p) < 0) {
			json_object_put(p);
			goto fail;
		}
		json_object_put(p);
		return db_commit(db) < 0 ? -1 : 0;
	}
	(void)cancel; /* the child ends a cancelled run cleanly, with rollback if asked */
	if (db_exec(db, "UPDATE agent_runs SET status = 'running', attempt = attempt + 1, lease_owner = ?, "
			"lease_expires_at = NOW(3) + INTERVAL ? SECOND, started_at = COALESCE(started_at, NOW(3)) "
			"WHERE id = ?", "sii", rn->id, rn->cfg.runner_lease_s, run_id) < 0)
		goto fail;
	if (db_commit(db) < 0)
		return -1;
	spawn_child(rn, run_id);
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

static void renew_leases(struct runner *rn)
{
	if (!rn->nkids)
		return;
	if (db_exec(&rn->db, "UPDATE agent_runs SET lease_expires_at = NOW(3) + INTERVAL ? SECOND "
			     "WHERE lease_owner = ? AND status = 'running'",
		    "is", rn->cfg.runner_lease_s, rn->id) < 0)
		log_warn("lease renewal failed: %s", rn->db.errmsg);
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
	const char *cfgpath = NULL;
	unsigned char rnd[4];
	char host[64], hex[9];
	int64_t last_renew = 0;
	int opt, i;

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
	/* Orderly stop: end the children, then hand their runs back at once. */
	log_info("stopping: %d runs in progress go back to the queue", rn.nkids);
	for (i = 0; i < rn.nkids; i++)
		kill(rn.kids[i].pid, SIGTERM);
	while (rn.nkids) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (pid < 0 && errno != EINTR)
			break;
		for (i = 0; i < rn.nkids; i++)
			if (rn.kids[i].pid == pid)
				rn.kids[i] = rn.kids[--rn.nkids];
	}
	db_exec(&rn.db, "UPDATE agent_runs SET lease_expires_at = NOW(3) - INTERVAL 1 SECOND "
			"WHERE lease_owner = ? AND status = 'running'", "s", rn.id);
	db_close(&rn.db);
	free(rn.kids);
	config_release(&rn.cfg);
	strbuf_release(&err);
	return 0;
}
