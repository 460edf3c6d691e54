/*
 * ws_txn.h - file writes and deletions applied to a workspace all together,
 * or not at all.
 *
 * Every new content is first written whole (and fsynced) into a staging
 * folder beside the workspace, on the same filesystem: a full disk or an
 * I/O error shows there, while the workspace is still untouched. Applying
 * then only renames, each confined to the workspace like every other
 * access (workspace.h): an existing file and its new content trade places
 * in one renameat2(RENAME_EXCHANGE), a new file moves in, a deleted file
 * moves out into the staging folder, a missing parent folder is created.
 * Every step is journaled, and every old file stays in the staging folder
 * until ws_txn_end(), so a failed apply undoes the steps it made and
 * ws_txn_undo() undoes a whole successful one (when what came after it,
 * such as recording a revision, failed).
 *
 * A crash leaves the old set or the new one, never a mix: before the first
 * rename, the plan (each change with the inode that moves) is written and
 * fsynced as a journal in the staging folder, and an undo first marks the
 * folder. ws_txn_recover(), called under the app's lock before the next
 * change of the workspace, finds the staging folders a crash left: without
 * a journal nothing had moved; otherwise it completes the change, or undoes
 * it under the mark, each step skipped when the inode shows it done. So a
 * crash after the renames but before the revision was recorded leaves the
 * whole new set in the workspace, unrecorded, like any change made outside
 * a run. The caller holds the app's lock and has checked the paths
 * (ws_path_check, not ignored, not a folder, a plain single-link file when
 * it exists).
 *
 * Errors are negative errno values (-ENOSPC for a full disk), with a
 * message in err naming the path.
 *
 *   ws_txn_begin / ws_txn_end      create / remove the staging folder
 *   ws_txn_write / ws_txn_delete   stage a change
 *   ws_txn_apply / ws_txn_undo
 *   ws_txn_recover                 finish or undo what a crash interrupted
 */
#ifndef KILN_WS_TXN_H
#define KILN_WS_TXN_H

#include <stddef.h>
#include <sys/types.h>

struct strbuf;
struct workspace;

struct ws_txn_change;
struct ws_txn_step;

struct ws_txn {
	const struct workspace *ws;
	char *staging;                 /* path of the staging folder */
	int stagefd;
	struct ws_txn_change *changes; /* in the order staged */
	size_t nchanges;
	struct ws_txn_step *steps;     /* what apply did, in order */
	size_t nsteps;
};

/* staging_dir must not exist; it is created (0700). */
int ws_txn_begin(struct ws_txn *t, const struct workspace *ws, const char *staging_dir,
		 struct strbuf *err);
/* Writes data into the staging folder as the future content of rel. */
int ws_txn_write(struct ws_txn *t, const char *rel, const void *data, size_t len, mode_t mode,
		 struct strbuf *err);
/* rel (a regular file of the workspace) goes away on apply. */
void ws_txn_delete(struct ws_txn *t, const char *rel);
/* Deletions first, then writes. On failure the steps made are undone and
 * the workspace is as before (unless undoing failed too: then err says so). */
int ws_txn_apply(struct ws_txn *t, struct strbuf *err);
/* After a successful apply: every step undone, last first. */
int ws_txn_undo(struct ws_txn *t, struct strbuf *err);
/* Removes the staging folder (and with it the old files) and frees t. */
void ws_txn_end(struct ws_txn *t);
/* Every folder in parent_dir whose name starts with prefix is a staging
 * folder a crash left: its change is completed (or undone, when an undo had
 * begun) in ws, and the folder removed. 0, or -1 with err when one could not
 * be brought to either side (its folder stays, for the next try). */
int ws_txn_recover(const struct workspace *ws, const char *parent_dir, const char *prefix,
		   struct strbuf *err);

#endif
