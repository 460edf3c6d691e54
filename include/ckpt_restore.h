/*
 * ckpt_restore.h - bringing a checkpoint back: safe extraction into a
 * staging folder, then an atomic swap with the workspace that leaves the
 * workspace's ignored folders (node_modules, .git, ...) where they are.
 *
 *   ckpt_extract            verify, then write the checkpoint's files into a
 *                           new staging folder (fsynced); on any refusal
 *                           nothing stays
 *   ckpt_swap_into          exchange staging and workspace in one rename,
 *                           carrying the kept folders across
 *   ckpt_swap_recover       put back kept folders a crashed swap held
 *   ckpt_keep_scan /        what a restore keeps and what it removes
 *   ckpt_keep_against       beyond the tracked files (for dry runs)
 *
 * Restore = ckpt_extract(..., "<parent>/.restore-<id>") then
 * ckpt_swap_into("<parent>/<workspace>", "<parent>/.restore-<id>"). After
 * the swap, fds opened on the old workspace (a struct workspace's root fd)
 * point at the removed tree: reopen the workspace. A staging folder left by
 * a crash is garbage: rm_rf() it before reusing its name. Kept folders are
 * never inside a staging folder at any step, so that cleanup cannot remove
 * them (see docs/CHECKPOINTS.md).
 * Errors are negative errno values, as in ckpt_store.h.
 */
#ifndef KILN_CKPT_RESTORE_H
#define KILN_CKPT_RESTORE_H

#include <stddef.h>

struct ckpt_store;
struct manifest;
struct strbuf;

/*
 * Checks the archive's sha256 against expected_sha256 before anything else,
 * then creates staging_dir (it must not exist; mode 0755) and writes every
 * file of the checkpoint into it: regular files only, 0644 or 0755, paths
 * from the validated manifest, each content checked against its sha256,
 * entry count and sizes capped by the store's limits. Files and folders are
 * fsynced. On any failure staging_dir is removed and err names the entry.
 */
int ckpt_extract(struct ckpt_store *st, const char *name,
		 const char *expected_sha256, const char *staging_dir,
		 struct strbuf *err);

/*
 * renameat2(RENAME_EXCHANGE) of staging_dir and workspace_dir (same parent
 * folder; a missing workspace_dir is simply created by the rename), fsync
 * of the parent, then removal of the old tree, now at staging_dir. A crash
 * at any point leaves the old or the new tree at workspace_dir, never a mix.
 *
 * Folders that checkpoints never hold (ignored folders: node_modules, dist
 * and .git at any depth, plus extra_ignored names) are carried from the old
 * tree into the new one, unless the new tree has a file at or inside their
 * path, or a file where one of their parent folders goes (the checkpoint's
 * files win; such a folder goes with the old tree). While they cross, they
 * sit in a holding folder beside the workspace; a crash leaves them there
 * and ckpt_swap_recover (called first by every swap) puts them back.
 * Once the exchange is durable the swap has happened: a failure to remove
 * the old tree or to put a kept folder back is only logged.
 */
int ckpt_swap_into_keeping(const char *workspace_dir, const char *staging_dir,
			   const char *const *extra_ignored, struct strbuf *err);
/* The same with the built-in ignored folder names only. */
int ckpt_swap_into(const char *workspace_dir, const char *staging_dir,
		   struct strbuf *err);

/* Moves folders a crashed swap left in holding folders of workspace_dir back
 * into it (where their place is free; others stay held and are logged). */
int ckpt_swap_recover(const char *workspace_dir, struct strbuf *err);

/*
 * What a swap does besides replacing tracked files, found by walking the
 * workspace without following links: the ignored folders it keeps, and the
 * untracked entries it removes (symbolic links, special files, entries
 * whose names no checkpoint can hold; folders end in '/'). The walk stops
 * after 200,000 entries or 64 levels (truncated set; kept folders beyond
 * are not found and go with the old tree); at most 1000 folders are kept
 * and 1000 untracked entries named (untracked_count counts them all).
 */
struct ckpt_keep {
	char **kept;      /* sorted relative paths */
	size_t nkept;
	char **untracked; /* sorted relative paths */
	size_t nuntracked;
	size_t untracked_count;
	int truncated;
};

void ckpt_keep_init(struct ckpt_keep *k);
void ckpt_keep_release(struct ckpt_keep *k);
/* Folders named like the built-in ignored ones or in kept_extra are kept;
 * folders named in dropped (ignored by the workspace, so in no manifest,
 * but not kept by the swap in use) count as untracked entries removed. A
 * missing workspace keeps nothing. out is initialised here. */
int ckpt_keep_scan(const char *workspace_dir, const char *const *kept_extra,
		   const char *const *dropped, struct ckpt_keep *out,
		   struct strbuf *err);
/* Moves the kept folders a restore of target would displace (by the rule of
 * ckpt_swap_into_keeping) to the untracked entries it removes. */
void ckpt_keep_against(struct ckpt_keep *k, const struct manifest *target);

#endif
