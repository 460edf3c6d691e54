/* api_revisions.c - an app's revisions: list, read, read a file, upload. */
#include <errno.h>
#include <string.h>

#include "api.h"
#include "appstate.h"
#include "apps.h"
#include "handlers.h"
#include "log.h"
#include "strbuf.h"
#include "services.h"
#include "tool_error.h"
#include "util.h"
#include "ws_txn.h"

#define REV_COLUMNS "id, app_id, parent_id, origin, run_id, checkpoint_id, created_at, file_count, total_size"

static json_object *revision_json(const struct db_result *r, size_t i)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "id", json_id(db_val(r, i, 0)));
	json_object_object_add(o, "app_id", json_id(db_val(r, i, 1)));
	json_object_object_add(o, "parent_id", json_id(db_val(r, i, 2)));
	json_object_object_add(o, "origin", json_object_new_string(db_val(r, i, 3)));
	json_object_object_add(o, "run_id", json_id(db_val(r, i, 4)));
	json_object_object_add(o, "checkpoint_id", json_id(db_val(r, i, 5)));
	json_object_object_add(o, "created_at", json_time(db_val(r, i, 6)));
	json_object_object_add(o, "file_count", json_id(db_val(r, i, 7)));
	json_object_object_add(o, "total_size", json_id(db_val(r, i, 8)));
	return o;
}

void h_revisions_list(struct rctx *c)
{
	respond_app_list(c, "SELECT " REV_COLUMNS " FROM app_revisions WHERE app_id = ? AND id < ? "
			    "ORDER BY id DESC LIMIT ?", revision_json);
}

/* Answers the revision rev_id of app with its manifest. */
static void respond_revision(struct rctx *c, int64_t app_id, int64_t rev_id, int status)
{
	struct db_result r;
	json_object *o, *files;

	if (db_query(&c->svc->db, &r, "SELECT " REV_COLUMNS ", manifest FROM app_revisions "
				      "WHERE id = ? AND app_id = ?", "ii", rev_id, app_id) < 0) {
		respond_db_error(c);
		return;
	}
	if (r.nrows != 1) {
		db_result_free(&r);
		respond_not_found(c);
		return;
	}
	o = revision_json(&r, 0);
	files = json_tokener_parse(db_val(&r, 0, 9));
	json_object_object_add(o, "files", files ? files : json_object_new_array());
	db_result_free(&r);
	respond_json(c, status, o);
}

void h_revision_get(struct rctx *c)
{
	struct app_row app;

	if (app_load(c, c->id[0], &app) == 0)
		respond_revision(c, app.id, c->id[1], 200);
}

static const char *content_type_for(const char *path)
{
	static const struct { const char *ext, *type; } types[] = {
		{ ".html", "text/html; charset=utf-8" }, { ".htm", "text/html; charset=utf-8" },
		{ ".css", "text/css; charset=utf-8" }, { ".js", "text/javascript; charset=utf-8" },
		{ ".mjs", "text/javascript; charset=utf-8" }, { ".json", "application/json" },
		{ ".svg", "image/svg+xml" }, { ".png", "image/png" }, { ".jpg", "image/jpeg" },
		{ ".jpeg", "image/jpeg" }, { ".gif", "image/gif" }, { ".webp", "image/webp" },
		{ ".ico", "image/x-icon" }, { ".txt", "text/plain; charset=utf-8" },
		{ ".md", "text/markdown; charset=utf-8" }, { ".ts", "text/plain; charset=utf-8" },
		{ ".tsx", "text/plain; charset=utf-8" }, { ".jsx", "text/plain; charset=utf-8" },
	};
	const char *dot = strrchr(path, '.');
	size_t i;

	for (i = 0; dot && i < ARRAY_SIZE(types); i++)
		if (!strcasecmp(dot, types[i].ext))
			return types[i].type;
	return "application/octet-stream";
}

void respond_file_from_checkpoint(struct rctx *c, const struct ckpt_row *ck, const char *path)
{
	struct strbuf data = STRBUF_INIT, err = STRBUF_INIT;
	struct tool_error terr;
	int rc;

	if (ws_path_check(NULL, path, strlen(path), &terr) < 0) {
		respond_error(c, 404, "not_found", "no file %s", "with that path");
		goto out;
	}
	rc = ckpt_read_file(&c->svc->ckpts, ck->archive, ck->sha256, path,
			    (size_t)c->svc->cfg->ws_max_file_bytes, &data, &err);
	if (rc == -ENOENT) {
		respond_error(c, 404, "not_found", "no such file in this revision");
		goto out;
	}
	if (rc < 0) {
		log_error("checkpoint %lld unreadable: %s", (long long)ck->id, err.buf);
		respond_error(c, 500, "checkpoint_unreadable",
			      "the checkpoint archive holding this file cannot be read");
		goto out;
	}
	c->res->status = 200;
	c->res->content_type = content_type_for(path);
	strbuf_reset(&c->res->body);
	strbuf_add(&c->res->body, data.buf, data.len);
out:
	strbuf_release(&data);
	strbuf_release(&err);
}

void h_revision_file(struct rctx *c)
{
	struct app_row app;
	struct manifest m;
	struct ckpt_row ck;
	int64_t ckpt_id;
	int found;

	if (app_load(c, c->id[0], &app) < 0)
		return;
	found = revision_manifest(&c->svc->db, app.id, c->id[1], &m, &ckpt_id);
	manifest_release(&m);
	if (found < 0) {
		respond_db_error(c);
		return;
	}
	if (!found || ckpt_id <= 0) {
		respond_not_found(c);
		return;
	}
	found = ckpt_row_load(&c->svc->db, app.id, ckpt_id, &ck);
	if (found <= 0) {
		found < 0 ? respond_db_error(c) : respond_not_found(c);
		return;
	}
	respond_file_from_checkpoint(c, &ck, c->rest);
}

/* Fails (answering 409) while a run is queued or running on the app, or
 * while another writer holds the app's workspace. */
int app_lock_for_write(struct rctx *c, const struct app_row *app)
{
	struct strbuf err = STRBUF_INIT;
	json_object *extra;
	int fd;

	if (app->active_run_id) {
		extra = json_object_new_object();
		json_object_object_add(extra, "run_id", json_object_new_int64(app->active_run_id));
		respond_error_extra(c, 409, "run_active", extra, "run %lld is active on this app",
				    (long long)app->active_run_id);
		return -1;
	}
	fd = app_lock(c->svc->cfg, app->id, 0);
	if (fd < 0) {
		respond_error(c, 409, "conflict", "the app's files are being changed right now; try again");
		return -1;
	}
	/* A crash may have cut the last change short: made whole first, so
	 * that this one starts from the old files or the new, never a mix. */
	if (app_workspace_recover(c->svc->cfg, app->id, &err) < 0) {
		log_error("app %lld: workspace recovery: %s", (long long)app->id, err.buf);
		respond_error(c, 500, "workspace_unavailable",
			      "the app's files could not be recovered after a crash; see the server log");
		app_unlock(fd);
		fd = -1;
	}
	strbuf_release(&err);
	return fd;
}

/*
 * json-c cuts an object key at an escaped NUL ("a\u0000b" reads as "a"), so
 * an upload could name another file than the one it spells: the raw body
 * (already valid JSON) is scanned for a key holding a NUL.
 */
static int body_key_has_nul(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		int nul = 0;

		if (s[i++] != '"')
			continue;
		for (; i < len && s[i] != '"'; i++) {
			if (s[i] == '\0')
				nul = 1;
			if (s[i] == '\\' && i + 1 < len) {
				if (s[i + 1] == 'u' && i + 5 < len && !memcmp(s + i + 2, "0000", 4))
					nul = 1;
				i++;
			}
		}
		i++;
		while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
			i++;
		if (nul && i < len && s[i] == ':')
			return 1;
	}
	return 0;
}

static const char no_sha[] = "0000000000000000000000000000000000000000000000000000000000000000";

/* The draft as the upload will leave it, for the checks that can be made
 * before the workspace is touched: a refused upload changes nothing. */
static int check_upload(struct rctx *c, const struct workspace *ws, json_object *files, int replace)
{
	struct strbuf prefix = STRBUF_INIT;
	struct manifest after, cur;
	struct tool_error terr;
	struct stat st;
	size_t i;
	int ret = -1;

	manifest_init(&after);
	manifest_init(&cur);
	if (!replace) {
		if (manifest_build(ws, &cur, &terr) < 0) {
			respond_error(c, strcmp(terr.code, "limit_exceeded") ? 500 : 413, terr.code, "%s",
				      terr.message);
			goto out;
		}
		for (i = 0; i < cur.n; i++)
			if (!json_object_object_get_ex(files, cur.v[i].path, NULL) &&
			    manifest_add(&after, cur.v[i].path, cur.v[i].size, no_sha, cur.v[i].mode) < 0)
				goto oom;
	}
	{
		json_object_object_foreach(files, path, content) {
			size_t len = (size_t)json_object_get_string_len(content);

			if (ws_path_is_ignored(ws, path)) {
				respond_field_error(c, "files", "'%.200s' is inside an ignored folder "
						    "(node_modules, dist, .git or one set for this app)", path);
				goto out;
			}
			/* what the write would refuse, refused before anything changes */
			if (ws_stat(ws, path, &st, &terr) == 0) {
				if (!S_ISREG(st.st_mode) || st.st_nlink > 1) {
					respond_field_error(c, "files", "'%.200s' is a folder or not a plain "
							    "file in the workspace", path);
					goto out;
				}
			} else if (strcmp(terr.code, "not_found") && strcmp(terr.code, "not_a_directory")) {
				/* e.g. a folder of the path is a link leading out */
				respond_field_error(c, "files", "%s", terr.message);
				goto out;
			}
			if (len > ws->lim.max_file_size) {
				respond_error(c, 413, "too_large", "%.200s: is %zu bytes (limit %llu)", path, len,
					      (unsigned long long)ws->lim.max_file_size);
				goto out;
			}
			if (manifest_add(&after, path, len, no_sha, 0644) < 0)
				goto oom;
		}
	}
	if (after.n > ws->lim.max_files || after.total_size > ws->lim.max_total_size) {
		respond_error(c, 413, "limit_exceeded", "the draft would hold %zu files, %llu bytes "
			      "(limits: %u files, %llu bytes)", after.n, (unsigned long long)after.total_size,
			      ws->lim.max_files, (unsigned long long)ws->lim.max_total_size);
		goto out;
	}
	manifest_sort(&after);
	for (i = 0; i < after.n; i++) {
		const char *p = after.v[i].path, *slash;

		for (slash = strchr(p, '/'); slash; slash = strchr(slash + 1, '/')) {
			strbuf_reset(&prefix);
			strbuf_add(&prefix, p, (size_t)(slash - p));
			if (manifest_find(&after, prefix.buf)) {
				respond_field_error(c, "files", "'%.200s' would be both a file and a folder",
						    prefix.buf);
				goto out;
			}
		}
	}
	ret = 0;
	goto out;
oom:
	respond_error(c, 500, "internal", "out of memory");
out:
	manifest_release(&after);
	manifest_release(&cur);
	strbuf_release(&prefix);
	return ret;
}

/* A disk that is full or failing is the server's fault, never the
 * client's: 507 when space ran out, 500 for any other I/O error. */
static void respond_storage_error(struct rctx *c, int neg_errno, int64_t app_id, const char *why)
{
	log_error("upload to app %lld failed, nothing changed: %s", (long long)app_id, why);
	if (neg_errno == -ENOSPC || neg_errno == -EDQUOT)
		respond_error(c, 507, "insufficient_storage",
			      "the server has no room for these files; nothing was changed");
	else
		respond_error(c, 500, "io_error",
			      "the server could not write the files (%s); nothing was changed",
			      strerror(-neg_errno));
}

/*
 * Writes every uploaded file into a staging folder beside the workspace
 * and, with replace, lists the files that go: nothing in the workspace has
 * changed yet. 0, or -1 after answering the error.
 */
static int stage_upload(struct rctx *c, int64_t app_id, const struct workspace *ws,
			struct ws_txn *txn, json_object *files, int replace)
{
	struct strbuf staging = STRBUF_INIT, parent = STRBUF_INIT, prefix = STRBUF_INIT;
	struct strbuf err = STRBUF_INIT;
	struct tool_error terr;
	struct manifest cur;
	unsigned char rnd[6];
	char hex[13];
	int ret = -1, rc;

	manifest_init(&cur);
	/* app_lock_for_write() has recovered what a crash left */
	app_upload_staging(c->svc->cfg, app_id, &parent, &prefix);
	if (random_bytes(rnd, sizeof(rnd)) < 0) {
		respond_error(c, 500, "internal", "no randomness for a staging folder name");
		goto out;
	}
	hex_encode(rnd, sizeof(rnd), hex);
	strbuf_addf(&staging, "%s/%s%s", parent.buf, prefix.buf, hex);
	rc = ws_txn_begin(txn, ws, staging.buf, &err);
	if (rc < 0) {
		ws_txn_end(txn);
		respond_storage_error(c, rc, app_id, err.buf);
		goto out;
	}
	{
		json_object_object_foreach(files, path, content) {
			rc = ws_txn_write(txn, path, json_object_get_string(content),
					  (size_t)json_object_get_string_len(content), 0644, &err);
			if (rc < 0) {
				ws_txn_end(txn);
				respond_storage_error(c, rc, app_id, err.buf);
				goto out;
			}
		}
	}
	if (replace) {
		size_t i;

		/* Files not in the upload go away: the upload is the whole draft,
		 * which also brings back a workspace that is past its limits. */
		if (manifest_build_ex(ws, MANIFEST_OVER_LIMITS, &cur, &terr) < 0) {
			ws_txn_end(txn);
			respond_error(c, 500, terr.code, "%s", terr.message);
			goto out;
		}
		for (i = 0; i < cur.n; i++)
			if (!json_object_object_get_ex(files, cur.v[i].path, NULL))
				ws_txn_delete(txn, cur.v[i].path);
	}
	ret = 0;
out:
	manifest_release(&cur);
	strbuf_release(&staging);
	strbuf_release(&parent);
	strbuf_release(&prefix);
	strbuf_release(&err);
	return ret;
}

void h_revisions_create(struct rctx *c)
{
	struct snapshot_req req = { 0 };
	struct snapshot_result res;
	struct strbuf err = STRBUF_INIT;
	struct tool_error terr;
	struct workspace ws;
	struct app_row app;
	struct ws_txn txn;
	json_object *body = NULL, *files;
	int replace = 1, lock = -1, ws_ok = 0, txn_ok = 0, rc;

	if (app_load(c, c->id[0], &app) < 0 || request_json_body(c, 0, &body) < 0)
		return;
	if (body_bool(c, body, "replace", &replace) < 0)
		goto out;
	if (!json_object_object_get_ex(body, "files", &files)) {
		json_object *extra = json_object_new_object();

		json_object_object_add(extra, "field", json_object_new_string("files"));
		respond_error_extra(c, 422, "missing_field", extra, "field 'files' is required");
		goto out;
	}
	if (!json_object_is_type(files, json_type_object) || json_object_object_length(files) == 0) {
		respond_field_error(c, "files", "files must be a non-empty object of path -> content");
		goto out;
	}
	if (body_key_has_nul(c->req->body.buf, c->req->body.len)) {
		respond_field_error(c, "files", "a path must not contain NUL");
		goto out;
	}
	{
		json_object_object_foreach(files, path, content) {
			if (ws_path_check(NULL, path, strlen(path), &terr) < 0) {
				respond_field_error(c, "files", "bad path '%.200s': %s", path, terr.message);
				goto out;
			}
			if (!json_object_is_type(content, json_type_string)) {
				respond_field_error(c, "files", "content of '%.200s' must be a string", path);
				goto out;
			}
		}
	}
	lock = app_lock_for_write(c, &app);
	if (lock < 0)
		goto out;
	if (app_workspace_open(c->svc->cfg, app.id, &ws, &err) < 0) {
		log_error("workspace of app %lld: %s", (long long)app.id, err.buf);
		respond_error(c, 500, "workspace_unavailable", "the app's workspace cannot be opened");
		goto out;
	}
	ws_ok = 1;
	if (check_upload(c, &ws, files, replace) < 0)
		goto out;
	if (stage_upload(c, app.id, &ws, &txn, files, replace) < 0)
		goto out;
	txn_ok = 1;
	strbuf_reset(&err);
	rc = ws_txn_apply(&txn, &err);
	if (rc < 0) {
		respond_storage_error(c, rc, app.id, err.buf);
		goto out;
	}
	req.app_id = app.id;
	req.origin = "manual";
	req.ckpt_type = "manual";
	req.label = "Upload";
	req.summary = "files uploaded through the API";
	if (app_snapshot(&c->svc->db, &c->svc->ckpts, c->svc->cfg, &req, &res, &err) < 0) {
		log_error("snapshot of app %lld: %s", (long long)app.id, err.buf);
		/* No revision records the new files: the draft must stay as it
		 * was, matching draft_revision_id. */
		strbuf_reset(&err);
		if (ws_txn_undo(&txn, &err) < 0)
			log_error("upload to app %lld not undone: %s", (long long)app.id, err.buf);
		if (db_is_unavailable(&c->svc->db))
			respond_db_error(c);
		else if (res.store_errno == ENOSPC || res.store_errno == EDQUOT)
			respond_error(c, 507, "insufficient_storage",
				      "the checkpoint store is full; the upload was not recorded");
		else
			respond_error(c, 500, "snapshot_failed", "the upload could not be recorded");
		goto out;
	}
	respond_revision(c, app.id, res.revision_id, 201);
	snapshot_result_release(&res);
out:
	if (txn_ok)
		ws_txn_end(&txn);
	if (ws_ok)
		workspace_close(&ws);
	app_unlock(lock);
	json_object_put(body);
	strbuf_release(&err);
}
