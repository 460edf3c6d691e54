/* api_runs.c - coding-agent runs: create (idempotent), list, read, cancel,
 * and the JSON page of events. The SSE stream is stream_server.c. */
#include <string.h>

#include "api.h"
#include "appstate.h"
#include "apps.h"
#include "events.h"
#include "handlers.h"
#include "log.h"
#include "runs.h"
#include "sha256.h"
#include "strbuf.h"
#include "util.h"

#define MAX_INPUT (100 * 1000)

static void respond_run_row(struct rctx *c, int status, const struct db_result *r)
{
	struct jsonw w;

	respond_json_start(c, status, &w);
	run_write_json(&w, r, 0);
	strbuf_addch(&c->res->body, '\n');
}

/* Answers run run_id of app with status; 0 if found. */
static int respond_run(struct rctx *c, int64_t app_id, int64_t run_id, int status)
{
	struct db_result r;

	if (db_query(&c->svc->db, &r, "SELECT " RUN_COLUMNS " FROM agent_runs WHERE id = ? AND app_id = ?",
		     "ii", run_id, app_id) < 0) {
		respond_db_error(c);
		return -1;
	}
	if (r.nrows != 1) {
		db_result_free(&r);
		respond_not_found(c);
		return -1;
	}
	respond_run_row(c, status, &r);
	db_result_free(&r);
	return 0;
}

static void respond_run_active(struct rctx *c, int64_t app_id)
{
	struct db_result r;
	json_object *extra = json_object_new_object();
	int64_t active = 0;

	if (db_query(&c->svc->db, &r, "SELECT id FROM agent_runs WHERE active_app_id = ?", "i", app_id) == 0) {
		active = db_int(&r, 0, 0);
		db_result_free(&r);
	}
	json_object_object_add(extra, "run_id", active ? json_object_new_int64(active) : NULL);
	respond_error_extra(c, 409, "run_active", extra,
			    "run %lld is already active on this app; wait for it or cancel it",
			    (long long)active);
}

/* An earlier run with this client_request_id: 1 answered, 0 none, -1 error answered. */
static int replay_idempotent(struct rctx *c, int64_t app_id, const char *crid, const char *hash)
{
	struct db_result r;
	int64_t id;

	if (db_query(&c->svc->db, &r, "SELECT id, request_sha256 FROM agent_runs "
				      "WHERE app_id = ? AND client_request_id = ?", "is", app_id, crid) < 0) {
		respond_db_error(c);
		return -1;
	}
	if (r.nrows == 0) {
		db_result_free(&r);
		return 0;
	}
	id = db_int(&r, 0, 0);
	if (strcmp(db_val(&r, 0, 1), hash) != 0) {
		db_result_free(&r);
		respond_field_error(c, "client_request_id",
				    "client_request_id was already used with a different request");
		return -1;
	}
	db_result_free(&r);
	respond_run(c, app_id, id, 200);
	return 1;
}

void h_runs_create(struct rctx *c)
{
	json_object *body = NULL, *payload;
	const char *input, *crid;
	char hash[SHA256_HEX_LEN + 1];
	struct app_row app;
	int64_t run_id;
	int rc;

	if (app_load(c, c->id[0], &app) < 0 || request_json_body(c, 0, &body) < 0)
		return;
	if (body_string(c, body, "input", FIELD_REQUIRED, 1, MAX_INPUT, &input) < 0 ||
	    body_string(c, body, "client_request_id", 0, 1, 128, &crid) < 0)
		goto out;
	sha256_hex(input, strlen(input), hash);
	if (crid && replay_idempotent(c, app.id, crid, hash))
		goto out;
	/* The run and its run.accepted event commit together. */
	if (db_begin(&c->svc->db) < 0) {
		respond_db_error(c);
		goto out;
	}
	if (db_exec(&c->svc->db, "INSERT INTO agent_runs (app_id, org_id, input, client_request_id, "
				 "request_sha256, base_revision_id) VALUES (?, ?, ?, ?, ?, ?)",
		    "iisssi", app.id, c->org_id, input, crid, hash, app.draft_revision_id) < 0) {
		int dup = db_is_duplicate(&c->svc->db);

		db_rollback(&c->svc->db);
		/* The same key raced us: answer like a replay. The run it made
		 * is also the active one, and InnoDB may report that key
		 * instead, so look the key up whichever collided. */
		if (dup && crid && replay_idempotent(c, app.id, crid, hash))
			goto out;
		if (dup)
			respond_run_active(c, app.id);
		else
			respond_db_error(c);
		goto out;
	}
	run_id = (int64_t)c->svc->db.last_insert_id;
	/* base_revision_id 0 means "none yet" */
	db_exec(&c->svc->db, "UPDATE agent_runs SET base_revision_id = NULLIF(base_revision_id, 0) WHERE id = ?",
		"i", run_id);
	payload = json_object_new_object();
	json_object_object_add(payload, "input", json_object_new_string(input));
	/* the attempt it is queued for; a resumed attempt announces its own */
	json_object_object_add(payload, "attempt", json_object_new_int(1));
	rc = event_append_locked(&c->svc->db, run_id, "run.accepted", payload) < 0 ? -1 : 0;
	json_object_put(payload);
	if (rc < 0 || db_commit(&c->svc->db) < 0) {
		db_rollback(&c->svc->db);
		respond_db_error(c);
		goto out;
	}
	respond_run(c, app.id, run_id, 202);
out:
	json_object_put(body);
}

void h_runs_list(struct rctx *c)
{
	respond_app_list_w(c, "SELECT " RUN_COLUMNS " FROM agent_runs WHERE app_id = ? AND id < ? "
			    "ORDER BY id DESC LIMIT ?", run_write_json);
}

void h_run_get(struct rctx *c)
{
	struct db_result r;

	/* One query, the hottest read: the token check already ran. The
	 * statement is a bare primary-key lookup (MariaDB optimises it fastest);
	 * the app and its organization are compared here, so another
	 * organization's run is a 404 like a missing one. */
	if (db_query(&c->svc->db, &r, "SELECT " RUN_COLUMNS ", org_id FROM agent_runs WHERE id = ?", "i",
		     c->id[1]) < 0) {
		respond_db_error(c);
		return;
	}
	if (r.nrows != 1 || db_int(&r, 0, 1) != c->id[0] || db_int(&r, 0, RUN_NCOLUMNS) != c->org_id)
		respond_not_found(c);
	else
		respond_run_row(c, 200, &r);
	db_result_free(&r);
}

/* The files an orphaned run changed, for its run.failed. The app lock
 * keeps a runner that resumes it meanwhile out of the workspace; when a
 * runner already has the lock, it holds the run too and ends it itself
 * (*busy). An unreadable workspace lists nothing (logged). */
static json_object *orphan_changed_files(struct rctx *c, int64_t app_id, int64_t run_id,
					 int *lock, int *busy)
{
	struct strbuf err = STRBUF_INIT;
	struct db_result r;
	json_object *changed = NULL;

	*busy = 0;
	*lock = app_lock(c->svc->cfg, app_id, 0);
	if (*lock < 0) {
		*busy = 1;
		return NULL;
	}
	if (db_query(&c->svc->db, &r, "SELECT base_revision_id FROM agent_runs WHERE id = ?", "i", run_id) == 0) {
		if (app_changed_files(&c->svc->db, c->svc->cfg, app_id, db_int(&r, 0, 0), NULL, &changed, &err) < 0)
			log_warn("run %lld: cannot list the files it changed: %s", (long long)run_id, err.buf);
		db_result_free(&r);
	}
	strbuf_release(&err);
	return changed ? changed : json_object_new_array();
}

/* Ends a cancelled run that no runner holds, here and now: a queued run,
 * or a running one whose runner is gone (lapsed lease) when nothing needs
 * undoing (a rollback is left to the runner that resumes it). 0 also when
 * a runner holds it (it ends the run itself), -1 on a database error. */
static int end_unheld_run(struct rctx *c, int64_t app_id, int64_t run_id, const char *mode)
{
	struct db *db = &c->svc->db;
	struct db_result r;
	json_object *payload = NULL, *err, *changed = NULL;
	const char *why;
	int rc = -1, queued, orphaned, lock = -1, busy;

	if (db_query(db, &r, "SELECT status = 'running' AND lease_expires_at < NOW(3) FROM agent_runs "
			     "WHERE id = ?", "i", run_id) < 0)
		return -1;
	orphaned = r.nrows == 1 && db_int(&r, 0, 0) == 1 && !strcmp(mode, "keep");
	db_result_free(&r);
	/* Listing reads the workspace: done before the row lock is taken. */
	if (orphaned) {
		changed = orphan_changed_files(c, app_id, run_id, &lock, &busy);
		if (busy)
			return 0;
	}
	if (db_begin(db) < 0)
		goto out_unlock;
	if (db_query(db, &r, "SELECT status = 'queued', status = 'running' AND lease_expires_at < NOW(3) "
			     "FROM agent_runs WHERE id = ? FOR UPDATE", "i", run_id) < 0)
		goto out;
	queued = r.nrows == 1 && db_int(&r, 0, 0) == 1;
	orphaned = changed && r.nrows == 1 && db_int(&r, 0, 1) == 1;
	db_result_free(&r);
	if (!queued && !orphaned) {
		rc = 0;
		goto out;
	}
	why = queued ? "cancelled before it started" : "cancelled while no runner held it";
	payload = json_object_new_object();
	err = json_object_new_object();
	json_object_object_add(err, "code", json_object_new_string("cancelled"));
	json_object_object_add(err, "message", json_object_new_string(why));
	json_object_object_add(payload, "status", json_object_new_string("cancelled"));
	json_object_object_add(payload, "error", err);
	/* a queued run never ran: it changed nothing */
	json_object_object_add(payload, "changed_files",
			       queued ? json_object_new_array() : json_object_get(changed));
	json_object_object_add(payload, "rolled_back", json_object_new_boolean(0));
	if (db_exec(db, "UPDATE agent_runs SET status = 'cancelled', error_code = 'cancelled', "
			"error_message = ?, finished_at = NOW(3), lease_owner = NULL, "
			"lease_expires_at = NULL WHERE id = ?", "si", why, run_id) < 0 ||
	    event_append_locked(db, run_id, "run.failed", payload) < 0)
		goto out;
	rc = 0;
out:
	json_object_put(payload);
	if (rc < 0 || db_commit(db) < 0) {
		db_rollback(db);
		rc = -1;
	}
out_unlock:
	json_object_put(changed);
	app_unlock(lock);
	return rc;
}

void h_run_cancel(struct rctx *c)
{
	json_object *body = NULL;
	struct app_row app;
	struct db_result r;
	const char *mode = NULL;
	int found, rc;

	if (app_load(c, c->id[0], &app) < 0 || request_json_body(c, 1, &body) < 0)
		return;
	if (body_string(c, body, "mode", 0, 1, 16, &mode) < 0)
		goto out;
	if (mode && strcmp(mode, "keep") && strcmp(mode, "rollback")) {
		respond_field_error(c, "mode", "mode must be \"keep\" or \"rollback\"");
		goto out;
	}
	if (db_query(&c->svc->db, &r, "SELECT status FROM agent_runs WHERE id = ? AND app_id = ?", "ii",
		     c->id[1], app.id) < 0) {
		respond_db_error(c);
		goto out;
	}
	found = r.nrows == 1;
	if (found && strcmp(db_val(&r, 0, 0), "queued") && strcmp(db_val(&r, 0, 0), "running")) {
		respond_error(c, 409, "conflict", "run %lld already ended (%s)", (long long)c->id[1],
			      db_val(&r, 0, 0));
		db_result_free(&r);
		goto out;
	}
	db_result_free(&r);
	if (!found) {
		respond_not_found(c);
		goto out;
	}
	/* Ask the runner first; a queued run no runner holds ends right here. */
	if (db_exec(&c->svc->db, "UPDATE agent_runs SET cancel_requested = 1, cancel_mode = ? "
				 "WHERE id = ? AND status IN ('queued','running')",
		    "si", mode ? mode : "keep", c->id[1]) < 0) {
		respond_db_error(c);
		goto out;
	}
	rc = end_unheld_run(c, app.id, c->id[1], mode ? mode : "keep");
	if (rc < 0) {
		respond_db_error(c);
		goto out;
	}
	respond_run(c, app.id, c->id[1], 202);
out:
	json_object_put(body);
}

void h_run_events(struct rctx *c)
{
	struct strbuf v = STRBUF_INIT, env = STRBUF_INIT;
	struct db_result r, rs;
	json_object *o, *items;
	int64_t after = 0, limit = 100, next, last_seq;
	int terminal = 0, ended;
	size_t i;

	if (http_query_param(c->req, "after", &v) && parse_int64(v.buf, 0, INT32_MAX, &after) < 0) {
		respond_field_error(c, "after", "after must be a non-negative integer");
		goto out;
	}
	if (http_query_param(c->req, "limit", &v) && parse_int64(v.buf, 1, 1000, &limit) < 0) {
		respond_field_error(c, "limit", "limit must be from 1 to 1000");
		goto out;
	}
	if (db_query(&c->svc->db, &rs, "SELECT status IN ('completed','failed','cancelled'), "
				       "(SELECT COALESCE(MAX(e.seq), 0) FROM agent_run_events e WHERE e.run_id = agent_runs.id) "
				       "FROM agent_runs WHERE id = ? AND app_id = ? AND org_id = ?",
		     "iii", c->id[1], c->id[0], c->org_id) < 0) {
		respond_db_error(c);
		goto out;
	}
	if (rs.nrows != 1) {
		db_result_free(&rs);
		respond_not_found(c);
		goto out;
	}
	ended = db_int(&rs, 0, 0) == 1;
	last_seq = db_int(&rs, 0, 1);
	db_result_free(&rs);
	if (db_query(&c->svc->db, &r, "SELECT seq, type, payload, created_at FROM agent_run_events "
				      "WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
		     "iii", c->id[1], after, limit) < 0) {
		respond_db_error(c);
		goto out;
	}
	items = json_object_new_array();
	next = after;
	for (i = 0; i < r.nrows; i++) {
		strbuf_reset(&env);
		event_envelope(&env, db_val(&r, i, 1), c->id[1], c->id[0], db_int(&r, i, 0),
			       db_val(&r, i, 3), db_val(&r, i, 2));
		json_object_array_add(items, json_tokener_parse(env.buf));
		next = db_int(&r, i, 0);
		if (event_is_terminal(db_val(&r, i, 1)))
			terminal = 1;
	}
	db_result_free(&r);
	/* terminal: nothing will follow this page */
	if (ended && next >= last_seq)
		terminal = 1;
	o = json_object_new_object();
	json_object_object_add(o, "items", items);
	json_object_object_add(o, "next_after", json_object_new_int64(next));
	json_object_object_add(o, "terminal", json_object_new_boolean(terminal));
	respond_json(c, 200, o);
out:
	strbuf_release(&v);
	strbuf_release(&env);
}
