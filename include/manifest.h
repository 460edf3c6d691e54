/*
 * manifest.h - the list of files of a workspace, a revision or a checkpoint.
 *
 * A manifest is sorted by path (bytewise strcmp) and holds, per regular file,
 * its path relative to the workspace root ('/'-separated, no leading '/'),
 * its size, its sha256 and its mode (0644 or 0755). Directories are implied.
 *
 *   manifest_init / manifest_release
 *   manifest_add / manifest_sort / manifest_find
 *   manifest_build        walk a workspace (ignored folders skipped)
 *   manifest_build_ex     the same, also for a workspace past its limits
 *   manifest_to_json      [{"path":..,"size":..,"sha256":..}, ...]
 *   manifest_from_json
 *   manifest_diff         added / changed / deleted paths between two
 */
#ifndef KILN_MANIFEST_H
#define KILN_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include <json.h>

struct workspace;
struct tool_error;

struct manifest_entry {
	char *path;
	uint64_t size;
	char sha256[65];
	unsigned mode; /* 0644 or 0755 */
};

struct manifest {
	struct manifest_entry *v;
	size_t n, alloc;
	uint64_t total_size;
	/* set only by manifest_build_ex(MANIFEST_OVER_LIMITS): files were left
	 * out, so a diff against this manifest may call some "deleted" */
	int incomplete;
};

struct manifest_delta {
	/* each a NULL-terminated array of borrowed pointers into the manifests */
	const char **added, **changed, **deleted;
	size_t nadded, nchanged, ndeleted;
};

void manifest_init(struct manifest *m);
void manifest_release(struct manifest *m);
int manifest_add(struct manifest *m, const char *path, uint64_t size,
		 const char *sha256_hex, unsigned mode);
void manifest_sort(struct manifest *m);
const struct manifest_entry *manifest_find(const struct manifest *m,
					   const char *path);
/* Walks ws (not following symlinks, skipping ignored folders and special
 * files), hashing every regular file. Enforces ws limits (max files, max total
 * size): past one, fails with a tool_error rather than returning a partial
 * list. Returns 0 or -1. */
int manifest_build(const struct workspace *ws, struct manifest *out,
		   struct tool_error *err);

enum manifest_mode {
	MANIFEST_WITHIN_LIMITS, /* manifest_build: past a limit is an error */
	MANIFEST_OVER_LIMITS,   /* list what is there, limits or not */
};
/* Hard ceilings of MANIFEST_OVER_LIMITS, as multiples of the workspace's
 * max_files and max_total_size: memory and hashing stay bounded. */
#define MANIFEST_OVER_LIMITS_FACTOR 8
/*
 * MANIFEST_WITHIN_LIMITS is manifest_build. MANIFEST_OVER_LIMITS is for
 * reading a workspace that a command has pushed past its limits, so that
 * what compares against it or replaces it (a restore's current files, a
 * diff against the draft, a failed run's changed files) still works: it
 * lists up to MANIFEST_OVER_LIMITS_FACTOR times max_files and hashes up to
 * that many times max_total_size, walks folders too big for ws_walk in
 * part, and leaves out files it cannot hash (hard links, special files
 * swapped in, unreadable ones); any of these sets out->incomplete instead
 * of failing. It fails only when the workspace cannot be walked at all.
 * Never archive an incomplete manifest: snapshots use manifest_build.
 */
int manifest_build_ex(const struct workspace *ws, enum manifest_mode mode,
		      struct manifest *out, struct tool_error *err);
json_object *manifest_to_json(const struct manifest *m);
/* Validates every element (path safe and relative, size, 64-hex sha256). */
int manifest_from_json(json_object *arr, struct manifest *out);
int manifest_diff(const struct manifest *from, const struct manifest *to,
		  struct manifest_delta *d);
void manifest_delta_release(struct manifest_delta *d);
json_object *manifest_delta_to_json(const struct manifest_delta *d);

#endif
