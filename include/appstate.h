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
 *   app_workspace_open         the workspace with the configured limits
 *   app_snapshot               workspace -> archive -> revision + checkpoint
 *   app_workspace_restore      the workspace becomes a checkpoint's files,
 *                              atomically (extract beside it, then swap)
 *   ckpt_row_load / ckpt_row_json
 *   revision_manifest          a revision's manifest (from its row)
 */
#ifndef KILN_APPSTATE_H
#define KILN_APPSTATE_H

#include <stdint.h>

#include <json.h>

#include "manifest.h"
#include "workspace.h"

struct config;
struct db;
struct db_result;
struct ckpt_store;
struct strbuf;

/* Returns a lock fd, or -1 (EWOULDBLOCK when !wait and someone holds it). */
int app_lock(const struct config *cfg, int64_t app_id, int wait);
void app_unlock(int fd);
int app_workspace_open(const struct config *cfg, int64_t app_id, struct workspace *ws,
		       struct strbuf *err);
void ws_limits_from_config(const struct config *cfg, struct ws_limits *lim);

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
};

/* Caller holds the app lock. 0 or -1 (err says why; db->errnum for DB). */
int app_snapshot(struct db *db, struct ckpt_store *st, const struct config *cfg,
		 const struct snapshot_req *req, struct snapshot_result *out,
		 struct strbuf *err);
void snapshot_result_release(struct snapshot_result *r);

struct ckpt_row;
/* Caller holds the app lock. Removes staging folders that interrupted
 * restores left, extracts ck beside the workspace and swaps it in: a crash
 * leaves the old or the new tree, never a mix. Open struct workspace
 * handles of the app point at the old tree afterwards: reopen them. */
int app_workspace_restore(const struct config *cfg, struct ckpt_store *st, int64_t app_id,
			  const struct ckpt_row *ck, struct strbuf *err);

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
json_object *paths_json(const char *const *paths, size_t n);

#endif
