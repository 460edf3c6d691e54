/*
 * workspace.h - an app's workspace folder and the confinement of every path
 * the model hands us.
 *
 * The model's tool arguments are hostile input. Every access goes through
 * the workspace's root directory fd and openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), so the kernel, not a
 * check-then-open, keeps resolution inside the root even while the tree
 * changes under us. Final components are never followed; special files and
 * hard-linked files are refused after open.
 *
 *   ws_limits_default             the default caps
 *   workspace_open / _close       the root fd, limits and ignored folders
 *   ws_path_check                 syntactic check of a relative path
 *   ws_open / ws_stat             confined open / lstat
 *   ws_read_file                  whole file into a strbuf, capped
 *   ws_write_file(_ex)            atomic confined write with limits
 *   ws_delete_file / ws_rename_file
 *   ws_is_ignored / ws_path_is_ignored / ws_fd_is_ignored
 *   ws_walk / ws_walk_ex          sorted depth-first walk (no symlinks)
 *   ws_measure                    files, bytes and largest file, vs. limits
 *   ws_set_error / ws_utf8_prefix helpers for messages that quote paths
 *
 * Functions return 0 (or an fd) on success and -1 with a tool_error set
 * (codes listed below) on failure.
 *
 * Ignored folders (node_modules, dist, .git and the app's own) are never
 * listed, walked, searched or snapshotted, nor written, deleted or renamed
 * into; ws_open reads them (read_file may look at a dependency's file or a
 * build's output: confinement, not ignoring, is what keeps the model in).
 */
#ifndef KILN_WORKSPACE_H
#define KILN_WORKSPACE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct strbuf;
struct tool_error;

/*
 * Error codes (tool_error.code):
 *   invalid_path path_outside_workspace not_found not_a_file not_a_directory
 *   is_ignored too_large limit_exceeded exists hardlink_refused special_file
 *   binary_file invalid_arguments io_error invalid_regex unknown_tool
 */

struct ws_limits {
	uint64_t max_file_size;
	uint64_t max_total_size;
	unsigned max_files;
	unsigned max_list_results;
	unsigned max_search_matches;
	size_t max_read_bytes;
	size_t max_path_len;
	size_t max_name_len;
};

/* 1 MiB file, 50 MiB total, 2000 files, 500 list results, 200 matches,
 * 256 KiB read, 1024 path, 255 name. */
void ws_limits_default(struct ws_limits *l);

struct workspace {
	int dirfd;      /* O_DIRECTORY|O_CLOEXEC|O_NOFOLLOW fd of the root */
	char *root;
	struct ws_limits lim;
	char **ignored; /* extra ignored folder names (beside the built-in ones) */
	size_t nignored;
};

/* lim NULL = defaults. ignored: NULL-terminated extra folder names, may be
 * NULL; node_modules, dist and .git are always ignored. Fails (and needs no
 * close) when root cannot be opened or the kernel lacks openat2. */
int workspace_open(struct workspace *ws, const char *root,
		   const struct ws_limits *lim, const char *const *ignored,
		   struct strbuf *err);
void workspace_close(struct workspace *ws);

/* Syntactic check, never touches the disk: non-empty, relative, no NUL
 * (len is the real length), no '.', '..' or empty components, within the
 * length caps, valid UTF-8 without control or bidi-override characters.
 * ws may be NULL (default limits). */
int ws_path_check(const struct workspace *ws, const char *rel, size_t len,
		  struct tool_error *err);

/* Confined open of rel (a path that passes ws_path_check). Symlinks in the
 * middle of the path are followed only while they stay inside the root; a
 * symlink as the final component is refused. Regular files with more than
 * one link, FIFOs, sockets and devices are refused. O_TRUNC is applied only
 * after those checks. Returns the fd or -1. */
int ws_open(const struct workspace *ws, const char *rel, int flags,
	    mode_t mode, struct tool_error *err);
/* lstat of rel, resolved like ws_open (final component not followed). */
int ws_stat(const struct workspace *ws, const char *rel, struct stat *st,
	    struct tool_error *err);

/* Appends the whole regular file to out; "too_large" past cap bytes. */
int ws_read_file(const struct workspace *ws, const char *rel, size_t cap,
		 struct strbuf *out, struct tool_error *err);

/* Writes data to rel atomically (temp file in the same folder, fsync,
 * rename), creating missing parent folders. Enforces max_file_size,
 * max_files and max_total_size ("limit_exceeded", nothing written). mode:
 * any execute bit gives 0755, otherwise 0644; WS_MODE_KEEP keeps the
 * execute bit of the file it replaces (0644 for a new file). Refuses
 * ignored folders and targets that exist but are not plain single-link
 * regular files. */
#define WS_MODE_KEEP 0x10000u
int ws_write_file(const struct workspace *ws, const char *rel, const void *data,
		  size_t len, unsigned mode, struct tool_error *err);
/* Same; *created tells whether the file did not exist before. */
int ws_write_file_ex(const struct workspace *ws, const char *rel,
		     const void *data, size_t len, unsigned mode, int *created,
		     struct tool_error *err);

/* Removes a regular file or a symlink (the link, never its target). */
int ws_delete_file(const struct workspace *ws, const char *rel,
		   struct tool_error *err);
/* Renames a regular file or symlink, creating the destination's missing
 * folders; without overwrite an existing destination fails with "exists". */
int ws_rename_file(const struct workspace *ws, const char *from, const char *to,
		   int overwrite, struct tool_error *err);

/* True when name (one path component) is an ignored folder name. */
int ws_is_ignored(const struct workspace *ws, const char *name);
/* True when a folder component of rel (not the final one) is ignored. */
int ws_path_is_ignored(const struct workspace *ws, const char *rel);
/* Whether fd, opened from rel beneath the root, is inside an ignored folder
 * (or is one, for a folder), going by where it really is rather than by
 * the spelling of rel: a symlink to node_modules leads into node_modules.
 * Returns 0, or 1 with err set to "is_ignored", or -1 with err set (rel
 * names the path in messages). */
#define WS_IGNORED_MESSAGE \
	"is in an ignored folder (node_modules, dist, .git or one set for this app)"
int ws_fd_is_ignored(const struct workspace *ws, int fd, const char *rel,
		     struct tool_error *err);

/*
 * Depth-first walk of start_rel ("" = root), entries sorted by name
 * (bytewise), each directory reported before its contents. Reports regular
 * files and directories only: symlinks are never followed or reported,
 * special files, ignored folders and names that would not pass
 * ws_path_check are skipped. max_depth 0 = unlimited, 1 = the entries of
 * start_rel only. cb gets the path relative to the root and the entry's
 * lstat; it returns 0 to go on, > 0 to stop (ws_walk then returns that
 * value) or < 0 to abort (ws_walk returns -1; cb reports its own error).
 */
typedef int (*ws_walk_fn)(void *ctx, const char *rel, const struct stat *st);
int ws_walk(const struct workspace *ws, const char *start_rel,
	    unsigned max_depth, ws_walk_fn cb, void *ctx,
	    struct tool_error *err);

/* Bounds the memory a single (possibly hostile) folder makes a walk hold:
 * ws_walk fails on a folder with more entries ("limit_exceeded"). */
#define WS_WALK_MAX_DIR_ENTRIES 65536
/* ws_walk_ex flag: walk such a folder with the first WS_WALK_MAX_DIR_ENTRIES
 * entries read (in directory order, then sorted) and set *cut, rather than
 * fail; for code that must see a workspace however it got. */
#define WS_WALK_CUT_BIG_DIRS 1u
/* ws_walk with flags; *cut (may be NULL) tells whether entries were left
 * out. */
int ws_walk_ex(const struct workspace *ws, const char *start_rel,
	       unsigned max_depth, unsigned flags, ws_walk_fn cb, void *ctx,
	       int *cut, struct tool_error *err);

/* What the workspace holds now (ignored folders do not count). */
struct ws_usage {
	uint64_t files;
	uint64_t bytes;
	uint64_t largest_size;
	char largest[256];  /* path of the largest file, cut on a UTF-8 boundary */
	int cut;            /* a folder had more than WS_WALK_MAX_DIR_ENTRIES */
};
/* Measures by lstat only (nothing is read), also past the limits. */
int ws_measure(const struct workspace *ws, struct ws_usage *u, struct tool_error *err);
/* Whether u breaks one of the workspace's limits (max_files,
 * max_total_size, max_file_size, or a folder too big to walk). */
int ws_usage_over_limits(const struct workspace *ws, const struct ws_usage *u);
/* Appends which limits u breaks, e.g. "5210 files (limit 5000), src/big.bin
 * of 3145728 bytes (files are limited to 2097152)". */
void ws_usage_describe(const struct workspace *ws, const struct ws_usage *u,
		       struct strbuf *out);

/* Sets err to "<rel>: <message>", quoting at most a bounded UTF-8-safe
 * prefix of rel (rel NULL: just the message). */
void ws_set_error(struct tool_error *err, const char *code, const char *rel,
		  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Length of the longest prefix of s[0..len) of at most max bytes that does
 * not end inside a UTF-8 sequence. */
size_t ws_utf8_prefix(const char *s, size_t len, size_t max);

#endif
