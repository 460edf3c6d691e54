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
#include "ckpt_crash.h"
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
				      "(kilnctl checkpoint verify): %s", (long long)ck->id, err.buf);
		else
			respond_error(c, 500, "checkpoint_unreadable",
				      "checkpoint %lld's archive is missing or damaged (kilnctl checkpoint verify)",
				      (long long)ck->id);
	}
	strbuf_release(&err);
	return rc < 0 ? -1 : 0;
}

/* Opens ck's archive (verified, manifest read); -1 after answering. */
static int open_reader(struct rctx *c, const struct ckpt_row *ck, struct ckpt_reader **rd)
{
	struct strbuf err = STRBUF_INIT;
	int rc = ckpt_reader_open(&c->svc->ckpts, ck->archive, ck->sha256, rd, &err);

	if (rc < 0) {
		log_error("checkpoint %lld: %s", (long long)ck->id, err.buf);
		respond_error(c, 500, "checkpoint_unreadable",
			      "checkpoint %lld's archive is missing or damaged (kilnctl checkpoint verify)",
			      (long long)ck->id);
	}
	strbuf_release(&err);
	return rc < 0 ? -1 : 0;
}

static int cmp_strp_api(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
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

/* Current files of the workspace, for comparisons. 1 when built, 0 when
 * the workspace cannot be listed within its limits (why says so), -1
 * after answering. */
static int workspace_manifest(struct rctx *c, int64_t app_id, struct manifest *m,
			      struct tool_error *why)
{
	struct strbuf err = STRBUF_INIT;
	struct workspace ws;
	int rc;

	manifest_init(m);
	rc = app_workspace_open(c->svc->cfg, app_id, &ws, &err);
	if (rc < 0) {
		log_error("workspace of app %lld: %s", (long long)app_id, err.buf);
		respond_error(c, 500, "workspace_unavailable", "the app's workspace cannot be read");
		strbuf_release(&err);
		return -1;
	}
	/* Restore and diff must work on a workspace that a command filled
	 * past its limits: that is when a user most needs them. */
	rc = manifest_build_ex(&ws, MANIFEST_OVER_LIMITS, m, why);
	workspace_close(&ws);
	strbuf_release(&err);
	return rc == 0 ? 1 : 0;
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

/* The ignored_dirs names of the configuration (at most max), in buf. */
/*
 * Exactly what restoring target does to the workspace: the tracked files
 * added, changed and deleted, the ignored folders kept, and the untracked
 * entries removed. Tracked files are compared with the workspace as it is;
 * a workspace that cannot be listed (over its limits, say) is compared
 * with the draft revision instead, and the answer says so: restore itself
 * never needs the workspace's manifest. NULL after answering.
 */
static json_object *restore_plan(struct rctx *c, const struct app_row *app,
				 const struct manifest *target)
{
	struct strbuf wsdir = STRBUF_INIT, err = STRBUF_INIT, names = STRBUF_INIT;
	struct manifest current;
	struct tool_error why;
	struct ckpt_keep keep;
	const char *kept_extra[APP_MAX_IGNORED_DIRS + 1];
	json_object *o = NULL;
	int rc;

	memset(&why, 0, sizeof(why));
	rc = workspace_manifest(c, app->id, &current, &why);
	if (rc < 0)
		goto out;
	if (rc == 0 && revision_manifest(&c->svc->db, app->id, app->draft_revision_id, &current, NULL) < 0) {
		respond_db_error(c);
		goto out;
	}
	/* the restore keeps the configured ignored folders as it keeps the
	 * built-in ones */
	app_ignored_dirs(c->svc->cfg, &names, kept_extra, APP_MAX_IGNORED_DIRS);
	app_workspace_path(c->svc->cfg, app->id, &wsdir);
	if (ckpt_keep_scan(wsdir.buf, kept_extra, NULL, &keep, &err) < 0) {
		log_error("restore plan of app %lld: %s", (long long)app->id, err.buf);
		respond_error(c, 500, "workspace_unavailable", "the app's workspace cannot be read");
		goto out;
	}
	ckpt_keep_against(&keep, target);
	o = delta_json(&current, target);
	json_object_object_add(o, "kept", paths_json((const char *const *)keep.kept, keep.nkept));
	json_object_object_add(o, "untracked_removed",
			       paths_json((const char *const *)keep.untracked, keep.nuntracked));
	json_object_object_add(o, "untracked_removed_count", json_object_new_int64((int64_t)keep.untracked_count));
	if (keep.truncated)
		json_object_object_add(o, "kept_truncated", json_object_new_boolean(1));
	json_object_object_add(o, "compared_with", json_object_new_string(rc ? "workspace" : "draft_revision"));
	if (!rc) {
		struct strbuf note = STRBUF_INIT;

		strbuf_addf(&note, "the workspace cannot be listed (%s: %s); tracked files are compared "
			    "with the draft revision", why.code, why.message);
		json_object_object_add(o, "note", json_object_new_string(note.buf));
		strbuf_release(&note);
	}
	ckpt_keep_release(&keep);
out:
	manifest_release(&current);
	strbuf_release(&wsdir);
	strbuf_release(&err);
	strbuf_release(&names);
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
	ckpt_crash_point("ckpt_record", 1); /* committed, not answered */
	respond_json(c, 200, o);
out:
	strbuf_release(&err);
}


void h_checkpoint_restore(struct rctx *c)
{
	struct strbuf err = STRBUF_INIT, label = STRBUF_INIT;
	struct manifest target;
	struct app_row app;
	struct ckpt_row ck;
	json_object *body = NULL, *plan = NULL;
	int dry_run = 0, lock = -1;

	manifest_init(&target);
	if (load_both(c, &app, &ck) < 0 || request_json_body(c, 1, &body) < 0)
		goto out;
	if (body_bool(c, body, "dry_run", &dry_run) < 0 || check_expected_revision(c, body, &app) < 0)
		goto out;
	lock = lock_and_recheck(c, body, &app);
	if (lock < 0)
		goto out;
	/* app_lock_for_write() has put back what an interrupted restore or
	 * upload left, so the plan sees the workspace the restore starts from */
	ckpt_crash_point("restore", 1);
	if (load_manifest(c, &ck, &target, 1) < 0)
		goto out;
	plan = restore_plan(c, &app, &target);
	if (!plan)
		goto out;
	if (dry_run) {
		json_object_object_add(plan, "dry_run", json_object_new_boolean(1));
		respond_json(c, 200, plan);
		plan = NULL;
		goto out;
	}
	ckpt_crash_point("restore", 2);
	if (app_workspace_restore(c->svc->cfg, &c->svc->ckpts, app.id, &ck, &err) < 0) {
		log_error("restore of checkpoint %lld refused: %s", (long long)ck.id, err.buf);
		respond_error(c, 422, "restore_refused", "checkpoint %lld cannot be restored: %s",
			      (long long)ck.id, err.buf);
		goto out;
	}
	ckpt_crash_point("restore", 3);
	strbuf_addf(&label, "Restored checkpoint %lld", (long long)ck.id);
	record_and_respond(c, &app, label.buf, ck.label, plan);
	plan = NULL;
out:
	app_unlock(lock);
	manifest_release(&target);
	json_object_put(body);
	json_object_put(plan);
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

/* ---- diff ----------------------------------------------------------------- */

/*
 * Work per answer is bounded: each archive (and each source archive it
 * shares contents with) is verified and read once, whatever the number of
 * changed files; at most DIFF_READ_BUDGET bytes of file contents are read
 * (both sides, files in path order: once the next one does not fit,
 * reading stops) and at most DIFF_CAP bytes of diff text are written.
 * Files left out say why and the answer says "truncated".
 */
#define DIFF_CAP (256 * 1024)
#define DIFF_READ_BUDGET (2 * 1024 * 1024)
#define DIFF_FILE_MAX (1024 * 1024) /* one side of one file */

struct diff_item {
	const char *path;
	const struct manifest_entry *ea, *eb;
	const char *omitted;          /* why it is not diffed, or NULL */
	struct strbuf a, b;           /* contents, when read */
	int read_a, read_b;
};

struct diff_fetch {
	struct diff_item *items;
	size_t n;
	int side; /* 0: ea / a, 1: eb / b */
};

/* A content of one side arrived: every selected file with that sha gets it. */
static int diff_got(void *ctx, const char *sha, const char *data, size_t len)
{
	struct diff_fetch *f = ctx;

	for (size_t i = 0; i < f->n; i++) {
		struct diff_item *it = &f->items[i];
		const struct manifest_entry *e = f->side ? it->eb : it->ea;

		if (it->omitted || strcmp(e->sha256, sha))
			continue;
		if (strbuf_add(f->side ? &it->b : &it->a, data, len) == 0)
			*(f->side ? &it->read_b : &it->read_a) = 1;
	}
	return 0;
}

/* The distinct contents one side needs for the selected files, sorted. */
static const char **diff_wanted(const struct diff_item *items, size_t n, int side, size_t *count)
{
	const char **v = xcalloc(n + 1, sizeof(*v));
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (!items[i].omitted)
			v[k++] = (side ? items[i].eb : items[i].ea)->sha256;
	if (k > 1)
		qsort(v, k, sizeof(*v), cmp_strp_api);
	*count = 0;
	for (size_t i = 0; i < k; i++)
		if (!*count || strcmp(v[*count - 1], v[i]))
			v[(*count)++] = v[i];
	return v;
}

static int diff_fetch_side(struct rctx *c, struct ckpt_reader *rd, const struct ckpt_row *ck,
			   struct diff_item *items, size_t n, int side)
{
	struct strbuf err = STRBUF_INIT;
	struct diff_fetch f = { items, n, side };
	size_t count;
	const char **want = diff_wanted(items, n, side, &count);
	int rc = ckpt_reader_fetch(rd, want, count, diff_got, &f, &err);

	if (rc < 0) {
		log_error("checkpoint %lld: %s", (long long)ck->id, err.buf);
		respond_error(c, 500, "checkpoint_unreadable",
			      "checkpoint %lld's archive is missing or damaged (kilnctl checkpoint verify)",
			      (long long)ck->id);
	}
	free(want);
	strbuf_release(&err);
	return rc;
}

/* Picks what will be read, in path order, within the read budget. */
static int diff_select(struct diff_item *items, size_t n)
{
	uint64_t budget = DIFF_READ_BUDGET;
	int spent = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t need = items[i].ea->size + items[i].eb->size;

		if (spent)
			items[i].omitted = "budget";
		else if (items[i].ea->size > DIFF_FILE_MAX || items[i].eb->size > DIFF_FILE_MAX)
			items[i].omitted = "too_large";
		else if (need > budget)
			items[i].omitted = "budget", spent = 1;
		else
			budget -= need;
	}
	return spent;
}

static json_object *diff_entry(struct diff_item *it, size_t *budget, int *truncated_any)
{
	json_object *e = json_object_new_object();
	struct strbuf diff = STRBUF_INIT;
	int truncated = 0, rc;

	json_object_object_add(e, "path", json_object_new_string(it->path));
	if (!it->omitted && !*budget)
		it->omitted = "budget";
	if (!it->omitted && (!it->read_a || !it->read_b))
		it->omitted = "unreadable";
	if (it->omitted) {
		json_object_object_add(e, "binary", NULL);
		json_object_object_add(e, "diff", NULL);
		json_object_object_add(e, "truncated", json_object_new_boolean(1));
		json_object_object_add(e, "omitted", json_object_new_string(it->omitted));
		*truncated_any = 1;
		return e;
	}
	rc = textdiff_unified(strbuf_str(&it->a), it->a.len, strbuf_str(&it->b), it->b.len,
			      it->path, it->path, *budget, &diff, &truncated);
	json_object_object_add(e, "binary", json_object_new_boolean(rc == TEXTDIFF_BINARY));
	json_object_object_add(e, "diff", rc == TEXTDIFF_BINARY ? NULL :
				   json_object_new_string_len(strbuf_str(&diff), (int)diff.len));
	/* cut at the budget: nothing is left for the files after it */
	*budget = truncated || diff.len >= *budget ? 0 : *budget - diff.len;
	/* over TEXTDIFF_MAX_LINES: a note instead of a diff */
	if (rc == TEXTDIFF_TOO_LARGE)
		truncated = 1;
	json_object_object_add(e, "truncated", json_object_new_boolean(truncated));
	*truncated_any |= truncated;
	strbuf_release(&diff);
	return e;
}

void h_checkpoint_diff(struct rctx *c)
{
	struct ckpt_reader *ra = NULL, *rb = NULL;
	struct manifest wsm;
	const struct manifest *a, *b;
	struct manifest_delta d;
	struct diff_item *items = NULL;
	struct app_row app;
	struct ckpt_row ca, cb;
	struct workspace ws;
	struct strbuf err = STRBUF_INIT;
	json_object *o = NULL, *changed;
	int to_draft = c->id[2] == 0, ws_ok = 0, have_delta = 0, truncated = 0, found, rc;
	size_t budget = DIFF_CAP;

	manifest_init(&wsm);
	if (load_both(c, &app, &ca) < 0 || open_reader(c, &ca, &ra) < 0)
		goto out;
	a = ckpt_reader_manifest(ra);
	if (to_draft) {
		struct tool_error why;

		rc = workspace_manifest(c, app.id, &wsm, &why);
		if (rc < 0)
			goto out;
		if (rc == 0) {
			respond_error(c, 409, !strcmp(why.code, "limit_exceeded") ? "workspace_over_limits"
										 : "workspace_unlistable",
				      "the draft workspace cannot be listed (%s): diff against a checkpoint instead",
				      why.message);
			goto out;
		}
		if (app_workspace_open(c->svc->cfg, app.id, &ws, &err) < 0) {
			respond_error(c, 500, "workspace_unavailable", "the app's workspace cannot be opened");
			goto out;
		}
		ws_ok = 1;
		b = &wsm;
	} else {
		found = ckpt_row_load(&c->svc->db, app.id, c->id[2], &cb);
		if (found <= 0) {
			found < 0 ? respond_db_error(c) : respond_not_found(c);
			goto out;
		}
		if (open_reader(c, &cb, &rb) < 0)
			goto out;
		b = ckpt_reader_manifest(rb);
	}
	if (manifest_diff(a, b, &d) < 0) {
		respond_error(c, 500, "internal", "out of memory");
		goto out;
	}
	have_delta = 1;
	items = xcalloc(d.nchanged + 1, sizeof(*items));
	for (size_t i = 0; i < d.nchanged; i++) {
		items[i].path = d.changed[i];
		items[i].ea = manifest_find(a, d.changed[i]);
		items[i].eb = manifest_find(b, d.changed[i]);
		strbuf_init_capped(&items[i].a, DIFF_FILE_MAX);
		strbuf_init_capped(&items[i].b, DIFF_FILE_MAX);
	}
	truncated = diff_select(items, d.nchanged);
	if (diff_fetch_side(c, ra, &ca, items, d.nchanged, 0) < 0 ||
	    (rb && diff_fetch_side(c, rb, &cb, items, d.nchanged, 1) < 0))
		goto out;
	for (size_t i = 0; ws_ok && i < d.nchanged; i++) {
		struct tool_error terr;

		if (!items[i].omitted)
			items[i].read_b = ws_read_file(&ws, items[i].path, DIFF_FILE_MAX, &items[i].b, &terr) == 0;
	}
	o = json_object_new_object();
	json_object_object_add(o, "from", json_object_new_int64(ca.id));
	json_object_object_add(o, "to", to_draft ? json_object_new_string("draft") : json_object_new_int64(cb.id));
	json_object_object_add(o, "added", paths_json(d.added, d.nadded));
	json_object_object_add(o, "removed", paths_json(d.deleted, d.ndeleted));
	changed = json_object_new_array();
	for (size_t i = 0; i < d.nchanged; i++)
		json_object_array_add(changed, diff_entry(&items[i], &budget, &truncated));
	json_object_object_add(o, "changed", changed);
	json_object_object_add(o, "truncated", json_object_new_boolean(truncated));
	respond_json(c, 200, o);
out:
	for (size_t i = 0; items && i < d.nchanged; i++) {
		strbuf_release(&items[i].a);
		strbuf_release(&items[i].b);
	}
	free(items);
	if (have_delta)
		manifest_delta_release(&d);
	if (ws_ok)
		workspace_close(&ws);
	ckpt_reader_close(ra);
	ckpt_reader_close(rb);
	manifest_release(&wsm);
	strbuf_release(&err);
}
