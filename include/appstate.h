/*
 * appstate.h - an app's files as a whole: its workspace, its revisions and
 * its checkpoints, kept consistent with each other.
 *
 * Ordering that keeps data safe: the checkpoint archive is durable on disk
 * before the rows naming it commit; a revision and its checkpoint rows
 * commit in one transaction together with the app's new draft pointer.
 *
 *   app_lock / app_unlock      per-app file lock: one writer of a workspace
 *                              at a time (runner, restore, upload, revert)
 *   app_lock_wait              the same, waiting: cancellable and bounded
 *   app_workspace_open         the workspace with the configured limits
 *   app_ignored_dirs           the configured ignored_dirs names
 *   app_workspace_recover      what a crashed restore or upload left, made
 *                              whole (call under the lock, before a change)
 *   app_upload_staging         where uploads stage their files
 *   app_ckpt_store_open        the checkpoint store with limits that fit
 *                              every workspace the ws_* limits allow
 *   app_snapshot               workspace -> archive -> revision + checkpoint
 *   app_workspace_restore      the workspace becomes a checkpoint's files,
 *                              atomically (extract beside it, then swap)
 *   app_changed_files          paths where the workspace differs from a
 *                              revision
 *   ckpt_row_load / ckpt_row_json
 *   revision_manifest          a revision's manifest (from its row)
 *   revision_delta             a revision's paths against its parent's
 */
#ifndef KILN_APPSTATE_H
#define KILN_APPSTATE_H

#include <signal.h>
#include <stdint.h>

#include <json.h>

#include "manifest.h"
#include "workspace.h"

struct config;
struct db;
struct db_result;
struct ckpt_store;
struct strbuf;

struct ckpt_limits;

/* Returns a lock fd, or -1 (EWOULDBLOCK when !wait and someone holds it). */
int app_lock(const struct config *cfg, int64_t app_id, int wait);
/* Waits for the lock up to timeout_ms (-1: no bound), giving up as soon as
 * *cancel is set (cancel may be NULL): the fd, or -1 with errno ECANCELED,
 * ETIMEDOUT or the open/flock error. */
int app_lock_wait(const struct config *cfg, int64_t app_id, const volatile sig_atomic_t *cancel,
		  int64_t timeout_ms);
void app_unlock(int fd);
/* ignored_dirs allows at most this many names (more are not honoured). */
#define APP_MAX_IGNORED_DIRS 32
/* The names of cfg->ignored_dirs, split in buf: names[0..n), NULL after. */
size_t app_ignored_dirs(const struct config *cfg, struct strbuf *buf, const char **names, size_t max);
/* Call with the app lock held, before changing the workspace: puts back
 * the ignored folders an interrupted restore left in its holding folder,
 * and completes (or undoes) an upload a crash interrupted (ws_txn.h).
 * 0, or -1 with err: what could not be recovered stays for the next try. */
int app_workspace_recover(const struct config *cfg, int64_t app_id, struct strbuf *err);
/* Uploads of app_id stage in folders named prefix + a random suffix in
 * parent (<state>/workspaces); both are appended to. */
void app_upload_staging(const struct config *cfg, int64_t app_id, struct strbuf *parent,
			struct strbuf *prefix);
int app_workspace_open(const struct config *cfg, int64_t app_id, struct workspace *ws,
		       struct strbuf *err);
void ws_limits_from_config(const struct config *cfg, struct ws_limits *lim);
/* The checkpoint defaults raised to ws_max_files / ws_max_file_bytes /
 * ws_max_total_bytes where those are larger. */
void ckpt_limits_from_config(const struct config *cfg, struct ckpt_limits *lim);
/* <state>/checkpoints with ckpt_limits_from_config. */
int app_ckpt_store_open(const struct config *cfg, struct ckpt_store *st, struct strbuf *err);

struct snapshot_req {
	int64_t app_id;
	int64_t run_id;          /* 0 = none */
	const char *origin;      /* "manual", "run", "restore" */
	const char *ckpt_type;   /* "auto", "restore", "manual" */
	const char *label;
	const char *summary;
	int only_if_changed;     /* no revision when the files equal the draft's */
};

struct snapshot_result {
	int changed;
	int64_t revision_id, parent_id, checkpoint_id;
	json_object *added, *changed_paths, *deleted; /* owned; arrays of paths */
	unsigned file_count;
	uint64_t total_size;
	int store_errno;         /* on failure: why the archive was not written
				  * (ENOSPC: the checkpoint store is full), else 0 */
};

/* Caller holds the app lock. 0 or -1 (err says why; db->errnum for DB). */
int app_snapshot(struct db *db, struct ckpt_store *st, const struct config *cfg,
		 const struct snapshot_req *req, struct snapshot_result *out,
		 struct strbuf *err);
void snapshot_result_release(struct snapshot_result *r);

struct ckpt_row;
/* Caller holds the app lock. Removes staging folders that interrupted
 * restores left, extracts ck beside the workspace and swaps it in: a crash
 * leaves the old or the new tree, never a mix. ck NULL swaps in an empty
 * tree (the state of an app before its first file). Open struct workspace
 * handles of the app point at the old tree afterwards: reopen them. */
int app_workspace_restore(const struct config *cfg, struct ckpt_store *st, int64_t app_id,
			  const struct ckpt_row *ck, struct strbuf *err);

/* The paths (added, then changed, then deleted, each sorted) where the
 * workspace differs from revision base_rev_id (0: no revision, so every
 * file). ws NULL opens the app's workspace. 0 with *out an owned array, or
 * -1 with err set. The caller should hold the app lock for a listing no
 * writer changes under it. */
int app_changed_files(struct db *db, const struct config *cfg, int64_t app_id, int64_t base_rev_id,
		      const struct workspace *ws, json_object **out, struct strbuf *err);

struct ckpt_row {
	int64_t id, app_id, run_id, revision_id;
	char type[16];
	char label[201 * 4];
	char summary[1025 * 2];
	char archive[96];
	char sha256[65];
	int64_t size, file_count;
	char created_at[32];
};

#define CKPT_ROW_COLUMNS \
	"id, app_id, run_id, revision_id, type, label, summary, archive, sha256, size, file_count, created_at"

/* 1 found, 0 not found, -1 db error. Scoped to the app. */
int ckpt_row_load(struct db *db, int64_t app_id, int64_t ckpt_id, struct ckpt_row *row);
/* The newest checkpoint of the app (0 when it has none). */
int ckpt_row_latest(struct db *db, int64_t app_id, struct ckpt_row *row);
void ckpt_row_from_result(const struct db_result *r, size_t i, struct ckpt_row *row);
json_object *ckpt_row_json(const struct ckpt_row *row);
/* 1 found (manifest filled), 0 not found, -1 db or parse error. */
int revision_manifest(struct db *db, int64_t app_id, int64_t rev_id, struct manifest *m,
		      int64_t *checkpoint_id);
/* out's added / changed_paths / deleted become revision rev_id's paths
 * against revision parent_id (0: none). 0, or -1 (out unchanged). */
int revision_delta(struct db *db, int64_t app_id, int64_t rev_id, int64_t parent_id,
		   struct snapshot_result *out);
json_object *paths_json(const char *const *paths, size_t n);

#endif
