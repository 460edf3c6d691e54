/*
 * ckpt_store.h - the checkpoint store: one tar archive per checkpoint, in a
 * folder of content-named archives (format and guarantees: docs/CHECKPOINTS.md).
 *
 *   ckpt_limits_default            the caps applied to every archive read
 *   ckpt_store_open / _close       create the folders, drop stale temp files
 *   ckpt_write                     archive a manifest's files (durable before
 *                                  it returns, so the caller may then commit
 *                                  the row that names it)
 *   ckpt_verify                    prove a checkpoint restorable
 *   ckpt_read_manifest             its file list
 *   ckpt_read_file                 one file's bytes, capped
 *   ckpt_reader_*                  one verification, several files
 *   ckpt_list / ckpt_list_release  every archive name in the store
 *   ckpt_gc                        remove what no live checkpoint needs
 *
 * Restoring (extraction and the workspace swap) lives in ckpt_restore.h.
 *
 * Functions return 0 or a negative errno and describe failures in err:
 *   -EINVAL   a malformed name, sha256 or manifest
 *   -ENOENT   the archive (or the path in it) does not exist
 *   -EBADMSG  the archive is corrupt or hostile (wrong sha256, bad entry, ...)
 *   -EFBIG    a cap was reached
 *   -EAGAIN   ckpt_write: a file changed while it was read; rebuild the
 *             manifest and try again (a bounded number of times)
 *   other     I/O errors
 */
#ifndef KILN_CKPT_STORE_H
#define KILN_CKPT_STORE_H

#include <stddef.h>
#include <stdint.h>

struct manifest;
struct strbuf;

/* "ab/<64 hex>.tar.zst" plus its NUL */
#define CKPT_NAME_MAX 80

struct ckpt_limits {
	uint64_t max_entries;    /* files per checkpoint, entries per archive */
	uint64_t max_entry_size; /* bytes of one file */
	uint64_t max_total_size; /* bytes of all files of one checkpoint */
};

/* 10000 entries, 64 MiB per entry, 512 MiB in all. */
void ckpt_limits_default(struct ckpt_limits *lim);

struct ckpt_store {
	char *root;
	int root_fd; /* O_DIRECTORY fd of root, shared by all operations */
	struct ckpt_limits lim;
};

/* lim NULL = defaults. Creates root, root/tmp and root/.lock; when no
 * writer is active, removes temp files left by crashed writers. */
int ckpt_store_open(struct ckpt_store *st, const char *root,
		    const struct ckpt_limits *lim, struct strbuf *err);
void ckpt_store_close(struct ckpt_store *st);

struct ckpt_info {
	char name[CKPT_NAME_MAX]; /* relative to the store root */
	char sha256[65];          /* of the archive file */
	uint64_t size;            /* of the archive file */
	unsigned file_count;
	uint64_t content_size;    /* sum of the files' sizes */
	unsigned stored_count;    /* contents stored in this archive ... */
	uint64_t stored_size;     /* ... and their bytes (the rest is shared) */
};

/* Opens path (relative to the workspace) read-only; returns an fd or < 0. */
typedef int (*ckpt_open_fn)(void *ctx, const char *path);

/*
 * Archives the files of m (paths unique; any order). Contents
 * already stored by base (the app's latest checkpoint, or NULL: then every
 * content is stored) are referenced, not copied; every other content is read
 * through open_file and must hash to its manifest entry, else -EAGAIN.
 * A base that cannot be read only costs the sharing (logged), never the
 * checkpoint. The archive is fsynced, renamed into place and its folder
 * fsynced before this returns.
 */
int ckpt_write(struct ckpt_store *st, const struct manifest *m,
	       const char *base_name, const char *base_sha256,
	       ckpt_open_fn open_file, void *ctx, struct ckpt_info *out,
	       struct strbuf *err);

/* The archive exists, hashes to expected_sha256, its manifest is valid, and
 * every content it needs, here or in an earlier archive, is present and
 * hashes right. */
int ckpt_verify(struct ckpt_store *st, const char *name,
		const char *expected_sha256, struct strbuf *err);

/* out is initialised here and sorted; manifest_release() it. */
int ckpt_read_manifest(struct ckpt_store *st, const char *name,
		       const char *expected_sha256, struct manifest *out,
		       struct strbuf *err);

/* Appends the content of path to out; -ENOENT if the checkpoint has no such
 * file, -EFBIG if it is larger than cap (out unchanged then). */
int ckpt_read_file(struct ckpt_store *st, const char *name,
		   const char *expected_sha256, const char *path, size_t cap,
		   struct strbuf *out, struct strbuf *err);

/*
 * One archive opened for reading several files: its whole-file sha256 is
 * checked and its manifest read once, at open; ckpt_reader_fetch then
 * streams the wanted contents in one pass over it and each source archive
 * (each read once), checking every content's sha256 and, at the end, that
 * no archive changed on disk meanwhile. A reader fetches once.
 */
struct ckpt_reader;
int ckpt_reader_open(struct ckpt_store *st, const char *name,
		     const char *expected_sha256, struct ckpt_reader **out,
		     struct strbuf *err);
/* Sorted by path; valid until ckpt_reader_close. */
const struct manifest *ckpt_reader_manifest(const struct ckpt_reader *rd);
/* One content, whole (at most the store's per-file limit); < 0 stops. */
typedef int (*ckpt_content_fn)(void *ctx, const char *sha256, const char *data,
			       size_t len);
/* Calls fn once per content of shas (n sha256s, sorted, unique) that the
 * checkpoint has; shas the checkpoint lacks are skipped. */
int ckpt_reader_fetch(struct ckpt_reader *rd, const char *const *shas, size_t n,
		      ckpt_content_fn fn, void *ctx, struct strbuf *err);
void ckpt_reader_close(struct ckpt_reader *rd); /* NULL is fine */

struct ckpt_list {
	char (*names)[CKPT_NAME_MAX]; /* sorted */
	size_t n;
};

/* Every well-formed archive name in the store (temp files never count). */
int ckpt_list(struct ckpt_store *st, struct ckpt_list *out, struct strbuf *err);
void ckpt_list_release(struct ckpt_list *l);

struct ckpt_gc_stats {
	unsigned archives_kept;
	unsigned archives_removed;
	uint64_t bytes_freed;
	unsigned temps_removed;
	unsigned live_missing; /* live names with no archive (kilnctl reports) */
};

/*
 * Removes every archive that is neither live, nor needed by a live archive,
 * nor younger than grace_seconds (a checkpoint's archive exists before its
 * row; archives that young count as live, and so do the ones they need).
 * Waits for writers in progress. If a live or young archive cannot be read,
 * nothing is removed (it might need anything) and an error is returned.
 */
int ckpt_gc(struct ckpt_store *st, const char *const *live_names, size_t nlive,
	    int64_t grace_seconds, struct ckpt_gc_stats *stats,
	    struct strbuf *err);

#endif
