/* appstate.c - workspace, revisions and checkpoints kept consistent
 * (see appstate.h). */
#include "appstate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "ckpt_restore.h"
#include "ckpt_store.h"
#include "config.h"
#include "db.h"
#include "fileutil.h"
#include "log.h"
#include "services.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "ws_txn.h"

/* How often a waiting app_lock_wait looks at the lock and the cancel flag. */
#define LOCK_POLL_MS 50

static int lock_file_open(const struct config *cfg, int64_t app_id)
{
	struct strbuf path = STRBUF_INIT;
	int fd;

	state_path(cfg, &path, "locks");
	mkdir_p(path.buf, 0755);
	strbuf_addf(&path, "/app-%lld.lock", (long long)app_id);
	fd = open(path.buf, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	strbuf_release(&path);
	return fd;
}

int app_lock(const struct config *cfg, int64_t app_id, int wait)
{
	int fd, rc, saved;

	if (wait)
		return app_lock_wait(cfg, app_id, NULL, -1);
	fd = lock_file_open(cfg, app_id);
	if (fd < 0)
		return -1;
	do
		rc = flock(fd, LOCK_EX | LOCK_NB);
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* A blocking flock() would sleep through a cancel (and a signal that
 * arrives just before it blocks is lost), so the wait is a poll: try, look
 * at the flag, sleep a slice, until the deadline. */
int app_lock_wait(const struct config *cfg, int64_t app_id, const volatile sig_atomic_t *cancel,
		  int64_t timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? INT64_MAX : mono_ms() + timeout_ms;
	int fd = lock_file_open(cfg, app_id), err;

	if (fd < 0)
		return -1;
	for (;;) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return fd;
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK) {
			err = errno;
			break;
		}
		if (cancel && *cancel) {
			err = ECANCELED;
			break;
		}
		if (mono_ms() >= deadline) {
			err = ETIMEDOUT;
			break;
		}
		sleep_ms(LOCK_POLL_MS);
	}
	close(fd);
	errno = err;
	return -1;
}

void app_unlock(int fd)
{
	if (fd >= 0)
		close(fd); /* releases the flock */
}

void ws_limits_from_config(const struct config *cfg, struct ws_limits *lim)
{
	ws_limits_default(lim);
	lim->max_file_size = (uint64_t)cfg->ws_max_file_bytes;
	lim->max_total_size = (uint64_t)cfg->ws_max_total_bytes;
	lim->max_files = (unsigned)cfg->ws_max_files;
}

static uint64_t at_least(uint64_t v, int64_t floor)
{
	return floor > 0 && (uint64_t)floor > v ? (uint64_t)floor : v;
}

/* Every workspace the ws_* limits allow must checkpoint, so the checkpoint
 * caps are the defaults raised to those limits, never lowered: archives
 * written under larger limits stay readable after they shrink. */
void ckpt_limits_from_config(const struct config *cfg, struct ckpt_limits *lim)
{
	ckpt_limits_default(lim);
	lim->max_entries = at_least(lim->max_entries, cfg->ws_max_files);
	lim->max_entry_size = at_least(lim->max_entry_size, cfg->ws_max_file_bytes);
	lim->max_total_size = at_least(lim->max_total_size, cfg->ws_max_total_bytes);
}

int app_ckpt_store_open(const struct config *cfg, struct ckpt_store *st, struct strbuf *err)
{
	struct strbuf path = STRBUF_INIT;
	struct ckpt_limits lim;
	int rc;

	ckpt_limits_from_config(cfg, &lim);
	state_path(cfg, &path, "checkpoints");
	rc = ckpt_store_open(st, path.buf, &lim, err);
	strbuf_release(&path);
	return rc;
}

size_t app_ignored_dirs(const struct config *cfg, struct strbuf *buf, const char **names, size_t max)
{
	size_t n = 0;
	char *p, *save = NULL;

	strbuf_reset(buf);
	strbuf_addstr(buf, cfg->ignored_dirs);
	for (p = strtok_r(buf->buf, ",", &save); p && n < max; p = strtok_r(NULL, ",", &save))
		if (*p)
			names[n++] = p;
	names[n] = NULL;
	return n;
}

void app_upload_staging(const struct config *cfg, int64_t app_id, struct strbuf *parent,
			struct strbuf *prefix)
{
	state_path(cfg, parent, "workspaces");
	strbuf_addf(prefix, ".upload-%lld-", (long long)app_id);
}

int app_workspace_recover(const struct config *cfg, int64_t app_id, struct strbuf *err)
{
	struct strbuf wsdir = STRBUF_INIT, parent = STRBUF_INIT, prefix = STRBUF_INIT;
	struct workspace ws;
	int ret;

	app_workspace_path(cfg, app_id, &wsdir);
	ret = ckpt_swap_recover(wsdir.buf, err);
	/* then an upload a crash cut short: completed, or undone */
	if (app_workspace_open(cfg, app_id, &ws, err) < 0) {
		ret = -1;
		goto out;
	}
	app_upload_staging(cfg, app_id, &parent, &prefix);
	if (ws_txn_recover(&ws, parent.buf, prefix.buf, err) < 0)
		ret = -1;
	workspace_close(&ws);
out:
	strbuf_release(&wsdir);
	strbuf_release(&parent);
	strbuf_release(&prefix);
	return ret;
}

int app_workspace_open(const struct config *cfg, int64_t app_id, struct workspace *ws,
		       struct strbuf *err)
{
	struct strbuf path = STRBUF_INIT, names = STRBUF_INIT;
	struct ws_limits lim;
	const char *ignored[APP_MAX_IGNORED_DIRS + 1];
	int ret;

	app_workspace_path(cfg, app_id, &path);
	mkdir_p(path.buf, 0755);
	ws_limits_from_config(cfg, &lim);
	app_ignored_dirs(cfg, &names, ignored, APP_MAX_IGNORED_DIRS);
	ret = workspace_open(ws, path.buf, &lim, ignored, err);
	strbuf_release(&path);
	strbuf_release(&names);
	return ret;
}

json_object *paths_json(const char *const *paths, size_t n)
{
	json_object *a = json_object_new_array();
	size_t i;

	for (i = 0; i < n; i++)
		json_object_array_add(a, json_object_new_string(paths[i]));
	return a;
}

void ckpt_row_from_result(const struct db_result *r, size_t i, struct ckpt_row *row)
{
	memset(row, 0, sizeof(*row));
	row->id = db_int(r, i, 0);
	row->app_id = db_int(r, i, 1);
	row->run_id = db_int(r, i, 2);
	row->revision_id = db_int(r, i, 3);
	snprintf(row->type, sizeof(row->type), "%s", db_val(r, i, 4));
	snprintf(row->label, sizeof(row->label), "%s", db_val(r, i, 5));
	snprintf(row->summary, sizeof(row->summary), "%s", db_val(r, i, 6));
	snprintf(row->archive, sizeof(row->archive), "%s", db_val(r, i, 7));
	snprintf(row->sha256, sizeof(row->sha256), "%s", db_val(r, i, 8));
	row->size = db_int(r, i, 9);
	row->file_count = db_int(r, i, 10);
	snprintf(row->created_at, sizeof(row->created_at), "%s", db_val(r, i, 11));
}

int ckpt_row_load(struct db *db, int64_t app_id, int64_t ckpt_id, struct ckpt_row *row)
{
	struct db_result r;
	int found;

	if (db_query(db, &r, "SELECT " CKPT_ROW_COLUMNS " FROM checkpoints WHERE id = ? AND app_id = ?",
		     "ii", ckpt_id, app_id) < 0)
		return -1;
	found = r.nrows == 1;
	if (found)
		ckpt_row_from_result(&r, 0, row);
	db_result_free(&r);
	return found;
}

int ckpt_row_latest(struct db *db, int64_t app_id, struct ckpt_row *row)
{
	struct db_result r;
	int found;

	if (db_query(db, &r, "SELECT " CKPT_ROW_COLUMNS " FROM checkpoints WHERE app_id = ? "
			     "ORDER BY id DESC LIMIT 1", "i", app_id) < 0)
		return -1;
	found = r.nrows == 1;
	if (found)
		ckpt_row_from_result(&r, 0, row);
	db_result_free(&r);
	return found;
}

static json_object *id_or_null(int64_t id)
{
	return id > 0 ? json_object_new_int64(id) : NULL;
}

json_object *ckpt_row_json(const struct ckpt_row *row)
{
	json_object *o = json_object_new_object();
	char ts[40];

	json_object_object_add(o, "id", json_object_new_int64(row->id));
	json_object_object_add(o, "app_id", json_object_new_int64(row->app_id));
	json_object_object_add(o, "run_id", id_or_null(row->run_id));
	json_object_object_add(o, "revision_id", id_or_null(row->revision_id));
	json_object_object_add(o, "type", json_object_new_string(row->type));
	json_object_object_add(o, "label", json_object_new_string(row->label));
	json_object_object_add(o, "summary", json_object_new_string(row->summary));
	json_object_object_add(o, "sha256", json_object_new_string(row->sha256));
	json_object_object_add(o, "size", json_object_new_int64(row->size));
	json_object_object_add(o, "file_count", json_object_new_int64(row->file_count));
	snprintf(ts, sizeof(ts), "%.10sT%sZ", row->created_at,
		 strlen(row->created_at) > 11 ? row->created_at + 11 : "");
	json_object_object_add(o, "created_at", json_object_new_string(ts));
	return o;
}

int revision_manifest(struct db *db, int64_t app_id, int64_t rev_id, struct manifest *m,
		      int64_t *checkpoint_id)
{
	struct db_result r;
	json_object *arr;
	int ret;

	manifest_init(m);
	if (checkpoint_id)
		*checkpoint_id = 0;
	if (rev_id <= 0)
		return 0;
	if (db_query(db, &r, "SELECT manifest, checkpoint_id FROM app_revisions WHERE id = ? AND app_id = ?",
		     "ii", rev_id, app_id) < 0)
		return -1;
	if (r.nrows != 1) {
		db_result_free(&r);
		return 0;
	}
	if (checkpoint_id)
		*checkpoint_id = db_int(&r, 0, 1);
	arr = json_tokener_parse(db_val(&r, 0, 0));
	ret = arr && manifest_from_json(arr, m) == 0 ? 1 : -1;
	json_object_put(arr);
	db_result_free(&r);
	return ret;
}

/* added, then changed, then deleted, in one array */
static json_object *delta_paths_json(const struct manifest_delta *d)
{
	json_object *arr = json_object_new_array();
	size_t i;

	for (i = 0; i < d->nadded; i++)
		json_object_array_add(arr, json_object_new_string(d->added[i]));
	for (i = 0; i < d->nchanged; i++)
		json_object_array_add(arr, json_object_new_string(d->changed[i]));
	for (i = 0; i < d->ndeleted; i++)
		json_object_array_add(arr, json_object_new_string(d->deleted[i]));
	return arr;
}

int app_changed_files(struct db *db, const struct config *cfg, int64_t app_id, int64_t base_rev_id,
		      const struct workspace *ws, json_object **out, struct strbuf *err)
{
	struct workspace own;
	struct manifest base, now;
	struct manifest_delta d;
	struct tool_error terr;
	int ret = -1, opened = 0;

	*out = NULL;
	manifest_init(&now);
	if (revision_manifest(db, app_id, base_rev_id, &base, NULL) < 0) {
		strbuf_addf(err, "the base revision's manifest cannot be read: %s", db->errmsg);
		goto out;
	}
	if (!ws) {
		if (app_workspace_open(cfg, app_id, &own, err) < 0)
			goto out;
		ws = &own;
		opened = 1;
	}
	/* a failed run's changes are listed most of all when a command
	 * filled the workspace past its limits */
	if (manifest_build_ex(ws, MANIFEST_OVER_LIMITS, &now, &terr) < 0) {
		strbuf_addf(err, "%s: %s", terr.code, terr.message);
		goto out;
	}
	if (manifest_diff(&base, &now, &d) < 0) {
		strbuf_addstr(err, "out of memory");
		goto out;
	}
	*out = delta_paths_json(&d);
	manifest_delta_release(&d);
	ret = 0;
out:
	if (opened)
		workspace_close(&own);
	manifest_release(&base);
	manifest_release(&now);
	return ret;
}

static void set_delta_paths(struct snapshot_result *out, const struct manifest_delta *d)
{
	json_object_put(out->added);
	json_object_put(out->changed_paths);
	json_object_put(out->deleted);
	out->added = paths_json(d->added, d->nadded);
	out->changed_paths = paths_json(d->changed, d->nchanged);
	out->deleted = paths_json(d->deleted, d->ndeleted);
}

int revision_delta(struct db *db, int64_t app_id, int64_t rev_id, int64_t parent_id,
		   struct snapshot_result *out)
{
	struct manifest rev, parent;
	struct manifest_delta d;
	int ret = -1;

	manifest_init(&rev);
	if (revision_manifest(db, app_id, parent_id, &parent, NULL) < 0 ||
	    revision_manifest(db, app_id, rev_id, &rev, NULL) != 1 || manifest_diff(&parent, &rev, &d) < 0)
		goto out;
	set_delta_paths(out, &d);
	manifest_delta_release(&d);
	ret = 0;
out:
	manifest_release(&rev);
	manifest_release(&parent);
	return ret;
}

struct ws_opener {
	const struct workspace *ws;
};

static int open_in_workspace(void *ctx, const char *path)
{
	struct ws_opener *o = ctx;
	struct tool_error terr;

	return ws_open(o->ws, path, O_RDONLY, 0, &terr);
}

void snapshot_result_release(struct snapshot_result *r)
{
	json_object_put(r->added);
	json_object_put(r->changed_paths);
	json_object_put(r->deleted);
	memset(r, 0, sizeof(*r));
}

int app_snapshot(struct db *db, struct ckpt_store *st, const struct config *cfg,
		 const struct snapshot_req *req, struct snapshot_result *out,
		 struct strbuf *err)
{
	struct workspace ws;
	struct manifest cur, parent;
	struct manifest_delta delta;
	struct ckpt_row base;
	struct ckpt_info info;
	struct db_result r;
	json_object *mjson = NULL;
	int64_t parent_id = 0, rev_id, ckpt_id;
	int have_base, ret = -1, ws_open_ok = 0, have_delta = 0, tries;

	memset(out, 0, sizeof(*out));
	manifest_init(&cur);
	manifest_init(&parent);
	memset(&delta, 0, sizeof(delta));
	if (app_workspace_open(cfg, req->app_id, &ws, err) < 0)
		goto out;
	ws_open_ok = 1;
	if (db_query(db, &r, "SELECT draft_revision_id FROM apps WHERE id = ?", "i", req->app_id) < 0) {
		strbuf_addf(err, "database: %s", db->errmsg);
		goto out;
	}
	parent_id = r.nrows ? db_int(&r, 0, 0) : 0;
	db_result_free(&r);
	if (revision_manifest(db, req->app_id, parent_id, &parent, NULL) < 0) {
		strbuf_addstr(err, "cannot read the draft revision's manifest");
		goto out;
	}
	have_base = ckpt_row_latest(db, req->app_id, &base);
	if (have_base < 0) {
		strbuf_addf(err, "database: %s", db->errmsg);
		goto out;
	}
	for (tries = 0;; tries++) {
		struct ws_opener opener = { &ws };
		struct tool_error terr;
		int rc;

		manifest_release(&cur);
		manifest_init(&cur);
		if (have_delta)
			manifest_delta_release(&delta);
		have_delta = 0;
		if (manifest_build(&ws, &cur, &terr) < 0) {
			strbuf_addf(err, "%s: %s", terr.code, terr.message);
			goto out;
		}
		if (manifest_diff(&parent, &cur, &delta) < 0) {
			strbuf_addstr(err, "out of memory");
			goto out;
		}
		have_delta = 1;
		/* A fresh app (no revision yet) with no files has nothing to
		 * record either: an empty manifest is its state. */
		out->changed = delta.nadded || delta.nchanged || delta.ndeleted;
		if (!out->changed && req->only_if_changed) {
			ret = 0; /* nothing to record: no archive, no rows */
			goto out;
		}
		strbuf_reset(err);
		/* A file that changes while it is read makes ckpt_write answer
		 * -EAGAIN: take the manifest again, a bounded number of times. */
		rc = ckpt_write(st, &cur, have_base ? base.archive : NULL,
				have_base ? base.sha256 : NULL, open_in_workspace, &opener, &info, err);
		if (rc == 0)
			break;
		if (rc != -EAGAIN || tries >= 3) {
			out->store_errno = -rc;
			goto out;
		}
	}
	out->parent_id = parent_id;
	set_delta_paths(out, &delta);
	out->file_count = (unsigned)cur.n;
	out->total_size = cur.total_size;
	mjson = manifest_to_json(&cur);
	if (db_begin(db) < 0)
		goto dberr;
	if (db_exec(db, "INSERT INTO app_revisions (app_id, parent_id, origin, run_id, manifest, file_count, total_size) "
			"VALUES (?, ?, ?, ?, ?, ?, ?)",
		    "iisisii", req->app_id, parent_id > 0 ? parent_id : (int64_t)0, req->origin,
		    req->run_id, json_object_to_json_string_ext(mjson, JSON_C_TO_STRING_PLAIN),
		    (int64_t)cur.n, (int64_t)cur.total_size) < 0)
		goto rollback;
	rev_id = (int64_t)db->last_insert_id;
	if (db_exec(db, "INSERT INTO checkpoints (app_id, run_id, revision_id, type, label, summary, archive, "
			"sha256, size, file_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		    "iiisssssii", req->app_id, req->run_id, rev_id, req->ckpt_type,
		    req->label ? req->label : "", req->summary ? req->summary : "", info.name,
		    info.sha256, (int64_t)info.size, (int64_t)info.file_count) < 0)
		goto rollback;
	ckpt_id = (int64_t)db->last_insert_id;
	if (db_exec(db, "UPDATE app_revisions SET checkpoint_id = ?, parent_id = NULLIF(parent_id, 0), "
			"run_id = NULLIF(run_id, 0) WHERE id = ?", "ii", ckpt_id, rev_id) < 0 ||
	    db_exec(db, "UPDATE checkpoints SET run_id = NULLIF(run_id, 0) WHERE id = ?", "i", ckpt_id) < 0 ||
	    db_exec(db, "UPDATE apps SET draft_revision_id = ? WHERE id = ?", "ii", rev_id, req->app_id) < 0)
		goto rollback;
	if (db_commit(db) < 0)
		goto dberr;
	out->revision_id = rev_id;
	out->checkpoint_id = ckpt_id;
	ret = 0;
	goto out;
rollback:
	db_rollback(db);
dberr:
	strbuf_addf(err, "database: %s", db->errmsg);
out:
	if (ret < 0) {
		int why = out->store_errno;

		snapshot_result_release(out);
		out->store_errno = why;
	}
	if (have_delta)
		manifest_delta_release(&delta);
	json_object_put(mjson);
	manifest_release(&cur);
	manifest_release(&parent);
	if (ws_open_ok)
		workspace_close(&ws);
	return ret;
}

/* A restore killed before its swap finished leaves its staging folder
 * behind. The caller holds the app lock, so no other restore of this app is
 * running and every ".restore-<app>-*" folder is such a leftover. */
static void remove_stale_staging(const struct config *cfg, int64_t app_id)
{
	struct strbuf dir = STRBUF_INIT, prefix = STRBUF_INIT, path = STRBUF_INIT;
	struct dirent *de;
	DIR *d;

	state_path(cfg, &dir, "workspaces");
	strbuf_addf(&prefix, ".restore-%lld-", (long long)app_id);
	d = opendir(dir.buf);
	while (d && (de = readdir(d))) {
		if (strncmp(de->d_name, prefix.buf, prefix.len))
			continue;
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/%s", dir.buf, de->d_name);
		log_warn("removing %s, left by an interrupted restore", path.buf);
		rm_rf(path.buf);
	}
	if (d)
		closedir(d);
	strbuf_release(&dir);
	strbuf_release(&prefix);
	strbuf_release(&path);
}

int app_workspace_restore(const struct config *cfg, struct ckpt_store *st, int64_t app_id,
			  const struct ckpt_row *ck, struct strbuf *err)
{
	struct strbuf staging = STRBUF_INIT, wsdir = STRBUF_INIT, names = STRBUF_INIT;
	const char *ignored[APP_MAX_IGNORED_DIRS + 1];
	unsigned char rnd[6];
	char hex[13];
	int ret = -1;

	remove_stale_staging(cfg, app_id);
	app_workspace_path(cfg, app_id, &wsdir);
	if (random_bytes(rnd, sizeof(rnd)) < 0) {
		strbuf_addstr(err, "getrandom failed");
		goto out;
	}
	hex_encode(rnd, sizeof(rnd), hex);
	state_path(cfg, &staging, "workspaces/.restore-%lld-%s", (long long)app_id, hex);
	if (ck) {
		if (ckpt_extract(st, ck->archive, ck->sha256, staging.buf, err) < 0)
			goto fail;
	} else if (mkdir(staging.buf, 0755) < 0 || fsync_parent_dir(staging.buf) < 0) {
		strbuf_addf(err, "cannot create %s: %s", staging.buf, strerror(errno));
		goto fail;
	}
	/* every ignored folder, configured ones too, survives the swap */
	app_ignored_dirs(cfg, &names, ignored, APP_MAX_IGNORED_DIRS);
	if (ckpt_swap_into_keeping(wsdir.buf, staging.buf, ignored, err) < 0)
		goto fail;
	ret = 0;
	goto out;
fail:
	rm_rf(staging.buf);
out:
	strbuf_release(&staging);
	strbuf_release(&wsdir);
	strbuf_release(&names);
	return ret;
}
