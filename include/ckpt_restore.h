/*
 * ckpt_restore.h - bringing a checkpoint back: safe extraction into a
 * staging folder, then an atomic swap with the workspace.
 *
 *   ckpt_extract     verify, then write the checkpoint's files into a new
 *                    staging folder (fsynced); on any refusal nothing stays
 *   ckpt_swap_into   exchange staging and workspace in one rename
 *
 * Restore = ckpt_extract(..., "<parent>/.restore-<id>") then
 * ckpt_swap_into("<parent>/<workspace>", "<parent>/.restore-<id>"). After
 * the swap, fds opened on the old workspace (a struct workspace's root fd)
 * point at the removed tree: reopen the workspace. A staging folder left by
 * a crash is garbage: rm_rf() it before reusing its name.
 * Errors are negative errno values, as in ckpt_store.h.
 */
#ifndef KILN_CKPT_RESTORE_H
#define KILN_CKPT_RESTORE_H

struct ckpt_store;
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
 * Once the exchange is durable the swap has happened: a failure to remove
 * the old tree is only logged.
 */
int ckpt_swap_into(const char *workspace_dir, const char *staging_dir,
		   struct strbuf *err);

#endif
