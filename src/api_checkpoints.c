/* api_checkpoints.c - checkpoints: list, read, files, restore (undo),
 * single-file revert and diff. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "appstate.h"
#include "fileutil.h"
#include "apps.h"
#include "ckpt_restore.h"
#include "handlers.h"
#include "log.h"
#include "services.h"
#include "strbuf.h"
#include "textdiff.h"
#include "tool_error.h"
#include "util.h"

#define DIFF_CAP (256 * 1024)
/* Reading a side is a scan of its archive: past this many changed files
 * the rest are listed without a diff, which bounds the work per request. */
#define DIFF_MAX_FILES 200

static json_object *checkpoint_item(const struct db_result *r, size_t i)
{
	struct ckpt_row row;

	ckpt_row_from_result(r, i, &row);
	return ckpt_row_json(&row);
}

void h_checkpoints_list(struct rctx *c)
{
	respond_app_list(c, "SELECT " CKPT_ROW_COLUMNS " FROM checkpoints WHERE app_id = ? AND id < ? "
			    "ORDER BY id DESC LIMIT ?", checkpoint_item);
}

/* Loads app and checkpoint c->id[1]; -1 after answering. */
static int load_both(struct rctx *c, struct app_row *app, struct ckpt_row *ck)
{
	int found;

	if (app_load(c, c->id[0], app) < 0)
		return -1;
	found = ckpt_row_load(&c->svc->db, app->id, c->id[1], ck);
	if (found < 0)
		respond_db_error(c);
	else if (!found)
		respond_not_found(c);
	return found == 1 ? 0 : -1;
}

/* The checkpoint's manifest; -1 after answering (its archive is missing,
 * damaged or hostile). Reading such a checkpoint is the server's failure;
 * restoring from one is refused as a request that cannot be carried out. */
static int load_manifest(struct rctx *c, const struct ckpt_row *ck, struct manifest *m, int to_restore)
{
	struct strbuf err = STRBUF_INIT;
	int rc = ckpt_read_manifest(&c->svc->ckpts, ck->archive, ck->sha256, m, &err);

	if (rc < 0) {
		log_error("checkpoint %lld: %s", (long long)ck->id, err.buf);
		if (to_restore)
			respond_error(c, 422, "restore_refused",
				      "checkpoint %lld cannot be restored: its archive is missing or damaged "
				      "(kilnctl checkpoint verify)", (long long)ck->id);
		else
			respond_error(c, 500, "checkpoint_unreadable",
				      "checkpoint %lld's archive is missing or damaged (kilnctl checkpoint verify)",
				      (long long)ck->id);
	}
	strbuf_release(&err);
	return rc < 0 ? -1 : 0;
}

void h_checkpoint_get(struct rctx *c)
{
	struct app_row app;
	struct ckpt_row ck;
	struct manifest m;
	json_object *o;

	if (load_both(c, &app, &ck) < 0)
		return;
	manifest_init(&m);
	if (load_manifest(c, &ck, &m, 0) < 0)
		return;
	o = ckpt_row_json(&ck);
	json_object_object_add(o, "files", manifest_to_json(&m));
	manifest_release(&m);
	respond_json(c, 200, o);
}

void h_checkpoint_file(struct rctx *c)
{
	struct app_row app;
	struct ckpt_row ck;

	if (load_both(c, &app, &ck) == 0)
		respond_file_from_checkpoint(c, &ck, c->rest);
}

/* Current files of the workspace, for comparisons. */
static int workspace_manifest(struct rctx *c, int64_t app_id, struct manifest *m)
{
	struct strbuf err = STRBUF_INIT;
	struct tool_error terr;
	struct workspace ws;
	int rc = -1;

	manifest_init(m);
	if (app_workspace_open(c->svc->cfg, app_id, &ws, &err) == 0) {
		rc = manifest_build(&ws, m, &terr);
		workspace_close(&ws);
		if (rc < 0)
			strbuf_addf(&err, "%s", terr.message);
	}
	if (rc < 0) {
		log_error("workspace of app %lld: %s", (long long)app_id, err.buf);
		respond_error(c, 500, "workspace_unavailable", "the app's workspace cannot be read");
	}
	strbuf_release(&err);
	return rc;
}

static json_object *delta_json(const struct manifest *from, const struct manifest *to)
{
	struct manifest_delta d;
	json_object *o = json_object_new_object();

	if (manifest_diff(from, to, &d) == 0) {
		json_object_object_add(o, "added", paths_json(d.added, d.nadded));
		json_object_object_add(o, "changed", paths_json(d.changed, d.nchanged));
		json_object_object_add(o, "deleted", paths_json(d.deleted, d.ndeleted));
		manifest_delta_release(&d);
	}
	return o;
}

/* The draft moved on since the caller looked: 409. */
static int check_expected_revision(struct rctx *c, json_object *body, const struct app_row *app)
{
	int64_t expected = 0;

	if (body_int(c, body, "expected_revision_id", 0, 1, INT64_MAX, &expected) < 0)
		return -1;
	if (expected && expected != app->draft_revision_id) {
		json_object *extra = json_object_new_object();

		json_object_object_add(extra, "draft_revision_id",
				       app->draft_revision_id ? json_object_new_int64(app->draft_revision_id) : NULL);
		respond_error_extra(c, 409, "revision_moved", extra,
				    "the draft is now revision %lld, not %lld",
				    (long long)app->draft_revision_id, (long long)expected);
		return -1;
	}
	return 0;
}

/* Takes the app lock, then judges expected_revision_id against the draft
 * as it is now: the row read before the lock may be stale. Returns the lock
 * fd, or -1 after answering. */
static int lock_and_recheck(struct rctx *c, json_object *body, struct app_row *app)
{
	int lock = app_lock_for_write(c, app);

	if (lock < 0)
		return -1;
	if (app_load(c, c->id[0], app) < 0 || check_expected_revision(c, body, app) < 0) {
		app_unlock(lock);
		return -1;
	}
	return lock;
}

/* Records the workspace as a new revision + checkpoint and answers. */
static void record_and_respond(struct rctx *c, const struct app_row *app, const char *label,
			       const char *summary, json_object *extra_members)
{
	struct snapshot_req req = { 0 };
	struct snapshot_result res;
	struct strbuf err = STRBUF_INIT;
	struct ckpt_row row;
	json_object *o = extra_members ? extra_members : json_object_new_object(), *rev;

	req.app_id = app->id;
	req.origin = "restore";
	req.ckpt_type = "restore";
	req.label = label;
	req.summary = summary;
	if (app_snapshot(&c->svc->db, &c->svc->ckpts, c->svc->cfg, &req, &res, &err) < 0) {
		log_error("snapshot after restore of app %lld: %s", (long long)app->id, err.buf);
		json_object_put(o);
		if (db_is_unavailable(&c->svc->db))
			respond_db_error(c);
		else
			respond_error(c, 500, "snapshot_failed", "the restored files could not be recorded");
		goto out;
	}
	rev = json_object_new_object();
	json_object_object_add(rev, "id", json_object_new_int64(res.revision_id));
	json_object_object_add(rev, "parent_id", res.parent_id ? json_object_new_int64(res.parent_id) : NULL);
	json_object_object_add(rev, "origin", json_object_new_string("restore"));
	json_object_object_add(rev, "file_count", json_object_new_int64(res.file_count));
	json_object_object_add(o, "revision", rev);
	if (ckpt_row_load(&c->svc->db, app->id, res.checkpoint_id, &row) == 1)
		json_object_object_add(o, "checkpoint", ckpt_row_json(&row));
	if (!json_object_object_get_ex(o, "added", NULL)) {
		json_object_object_add(o, "added", json_object_get(res.added));
		json_object_object_add(o, "changed", json_object_get(res.changed_paths));
		json_object_object_add(o, "deleted", json_object_get(res.deleted));
	}
	snapshot_result_release(&res);
	respond_json(c, 200, o);
out:
	strbuf_release(&err);
}


void h_checkpoint_restore(struct rctx *c)
{
	struct strbuf err = STRBUF_INIT, label = STRBUF_INIT;
	struct manifest target, current;
	struct app_row app;
	struct ckpt_row ck;
	json_object *body = NULL, *o;
	int dry_run = 0, lock = -1;

	manifest_init(&target);
	manifest_init(&current);
	if (load_both(c, &app, &ck) < 0 || request_json_body(c, 1, &body) < 0)
		goto out;
	if (body_bool(c, body, "dry_run", &dry_run) < 0 || check_expected_revision(c, body, &app) < 0)
		goto out;
	lock = lock_and_recheck(c, body, &app);
	if (lock < 0)
		goto out;
	if (load_manifest(c, &ck, &target, 1) < 0 || workspace_manifest(c, app.id, &current) < 0)
		goto out;
	if (dry_run) {
		o = delta_json(&current, &target);
		json_object_object_add(o, "dry_run", json_object_new_boolean(1));
		respond_json(c, 200, o);
		goto out;
	}
	o = delta_json(&current, &target);
	if (app_workspace_restore(c->svc->cfg, &c->svc->ckpts, app.id, &ck, &err) < 0) {
		log_error("restore of checkpoint %lld refused: %s", (long long)ck.id, err.buf);
		json_object_put(o);
		respond_error(c, 422, "restore_refused", "checkpoint %lld cannot be restored: %s",
			      (long long)ck.id, err.buf);
		goto out;
	}
	strbuf_addf(&label, "Restored checkpoint %lld", (long long)ck.id);
	record_and_respond(c, &app, label.buf, ck.label, o);
out:
	app_unlock(lock);
	manifest_release(&target);
	manifest_release(&current);
	json_object_put(body);
	strbuf_release(&err);
	strbuf_release(&label);
}

void h_checkpoint_revert_file(struct rctx *c)
{
	struct strbuf data = STRBUF_INIT, err = STRBUF_INIT, label = STRBUF_INIT;
	const struct manifest_entry *entry;
	struct tool_error terr;
	struct workspace ws;
	struct manifest m;
	struct app_row app;
	struct ckpt_row ck;
	json_object *body = NULL, *o;
	const char *path;
	int lock = -1, ws_ok = 0;

	manifest_init(&m);
	if (load_both(c, &app, &ck) < 0 || request_json_body(c, 0, &body) < 0)
		goto out;
	if (body_string(c, body, "path", FIELD_REQUIRED, 1, 1024, &path) < 0 ||
	    check_expected_revision(c, body, &app) < 0)
		goto out;
	if (ws_path_check(NULL, path, strlen(path), &terr) < 0) {
		respond_field_error(c, "path", "%s", terr.message);
		goto out;
	}
	lock = lock_and_recheck(c, body, &app);
	if (lock < 0)
		goto out;
	/* The manifest decides whether the file exists there: an unreadable
	 * archive must never read as "not in the checkpoint" and delete it. */
	if (load_manifest(c, &ck, &m, 1) < 0)
		goto out;
	if (app_workspace_open(c->svc->cfg, app.id, &ws, &err) < 0) {
		respond_error(c, 500, "workspace_unavailable", "the app's workspace cannot be opened");
		goto out;
	}
	ws_ok = 1;
	o = json_object_new_object();
	json_object_object_add(o, "path", json_object_new_string(path));
	entry = manifest_find(&m, path);
	if (!entry) {
		/* Not in the checkpoint: reverting means it goes away. */
		if (ws_delete_file(&ws, path, &terr) < 0) {
			json_object_put(o);
			if (!strcmp(terr.code, "not_found"))
				respond_error(c, 404, "not_found", "neither checkpoint %lld nor the draft has %.200s",
					      (long long)ck.id, path);
			else
				respond_error(c, 422, terr.code, "%s", terr.message);
			goto out;
		}
		json_object_object_add(o, "action", json_object_new_string("deleted"));
	} else if (ckpt_read_file(&c->svc->ckpts, ck.archive, ck.sha256, path,
				  (size_t)c->svc->cfg->ws_max_file_bytes, &data, &err) < 0) {
		json_object_put(o);
		log_error("checkpoint %lld: %s", (long long)ck.id, err.buf);
		respond_error(c, 422, "restore_refused", "%.200s cannot be restored from checkpoint %lld",
			      path, (long long)ck.id);
		goto out;
	} else {
		if (ws_write_file(&ws, path, data.buf, data.len, entry->mode, &terr) < 0) {
			json_object_put(o);
			respond_error(c, 422, terr.code, "%s", terr.message);
			goto out;
		}
		json_object_object_add(o, "action", json_object_new_string("restored"));
	}
	strbuf_addf(&label, "Reverted %.150s to checkpoint %lld", path, (long long)ck.id);
	record_and_respond(c, &app, label.buf, label.buf, o);
out:
	if (ws_ok)
		workspace_close(&ws);
	app_unlock(lock);
	manifest_release(&m);
	json_object_put(body);
	strbuf_release(&data);
	strbuf_release(&err);
	strbuf_release(&label);
}

/* Reads one file of either side: a checkpoint, or the live workspace. */
static int side_file(struct rctx *c, const struct ckpt_row *ck, const struct workspace *ws,
		     const char *path, struct strbuf *out)
{
	struct strbuf err = STRBUF_INIT;
	struct tool_error terr;
	int rc;

	if (ck)
		rc = ckpt_read_file(&c->svc->ckpts, ck->archive, ck->sha256, path, 4 << 20, out, &err);
	else
		rc = ws_read_file(ws, path, 4 << 20, out, &terr);
	strbuf_release(&err);
	return rc;
}

void h_checkpoint_diff(struct rctx *c)
{
	struct manifest a, b;
	struct manifest_delta d;
	struct app_row app;
	struct ckpt_row ca, cb;
	struct workspace ws;
	struct strbuf err = STRBUF_INIT, fa = STRBUF_INIT, fb = STRBUF_INIT, diff = STRBUF_INIT;
	json_object *o = NULL, *changed;
	int to_draft = c->id[2] == 0, ws_ok = 0, found;
	size_t i, budget = DIFF_CAP;

	manifest_init(&a);
	manifest_init(&b);
	if (load_both(c, &app, &ca) < 0 || load_manifest(c, &ca, &a, 0) < 0)
		goto out;
	if (to_draft) {
		if (workspace_manifest(c, app.id, &b) < 0)
			goto out;
		if (app_workspace_open(c->svc->cfg, app.id, &ws, &err) < 0) {
			respond_error(c, 500, "workspace_unavailable", "the app's workspace cannot be opened");
			goto out;
		}
		ws_ok = 1;
	} else {
		found = ckpt_row_load(&c->svc->db, app.id, c->id[2], &cb);
		if (found <= 0) {
			found < 0 ? respond_db_error(c) : respond_not_found(c);
			goto out;
		}
		if (load_manifest(c, &cb, &b, 0) < 0)
			goto out;
	}
	if (manifest_diff(&a, &b, &d) < 0) {
		respond_error(c, 500, "internal", "out of memory");
		goto out;
	}
	o = json_object_new_object();
	json_object_object_add(o, "from", json_object_new_int64(ca.id));
	json_object_object_add(o, "to", to_draft ? json_object_new_string("draft") : json_object_new_int64(cb.id));
	json_object_object_add(o, "added", paths_json(d.added, d.nadded));
	json_object_object_add(o, "removed", paths_json(d.deleted, d.ndeleted));
	changed = json_object_new_array();
	for (i = 0; i < d.nchanged; i++) {
		json_object *e = json_object_new_object();
		int truncated = 0, binary;

		strbuf_reset(&fa);
		strbuf_reset(&fb);
		strbuf_reset(&diff);
		json_object_object_add(e, "path", json_object_new_string(d.changed[i]));
		if (i >= DIFF_MAX_FILES) {
			json_object_object_add(e, "binary", json_object_new_boolean(0));
			json_object_object_add(e, "diff", NULL);
			json_object_object_add(e, "truncated", json_object_new_boolean(1));
		} else if (side_file(c, &ca, NULL, d.changed[i], &fa) < 0 ||
		    side_file(c, to_draft ? NULL : &cb, ws_ok ? &ws : NULL, d.changed[i], &fb) < 0) {
			json_object_object_add(e, "error", json_object_new_string("file unreadable"));
		} else {
			binary = textdiff_unified(fa.buf, fa.len, fb.buf, fb.len, d.changed[i], d.changed[i],
						  budget, &diff, &truncated);
			json_object_object_add(e, "binary", json_object_new_boolean(binary == 1));
			json_object_object_add(e, "diff", binary == 1 ? NULL :
						   json_object_new_string_len(diff.buf, (int)diff.len));
			/* over TEXTDIFF_MAX_LINES: a note instead of a diff */
			if (binary == TEXTDIFF_TOO_LARGE)
				truncated = 1;
			json_object_object_add(e, "truncated", json_object_new_boolean(truncated));
			budget = diff.len < budget ? budget - diff.len : 0;
		}
		json_object_array_add(changed, e);
	}
	json_object_object_add(o, "changed", changed);
	manifest_delta_release(&d);
	respond_json(c, 200, o);
out:
	if (ws_ok)
		workspace_close(&ws);
	manifest_release(&a);
	manifest_release(&b);
	strbuf_release(&err);
	strbuf_release(&fa);
	strbuf_release(&fb);
	strbuf_release(&diff);
}
