/*
 * ckpt_pack.h - one checkpoint archive ("pack") on disk: its name, its
 * manifest, a writer, and a reader that treats the file as hostile.
 *
 *   ckpt_name_parse / ckpt_name_from_sha   "ab/<sha256>.tar.zst"
 *   ckpt_pm_*                              the manifest inside an archive:
 *                                          files, where each content lives
 *   ckpt_pack_writer_*                     ustar + zstd, deterministic bytes
 *   ckpt_pack_open / _next / _copy /       verified, capped, strictly
 *   _finish / _close                       checked reading
 *   ckpt_pack_fetch                        every content a checkpoint
 *                                          needs, from it and its sources
 *   ckpt_quote                             entry names safe for messages
 *
 * An archive holds, in this order: ".kiln/manifest.json", then one entry
 * "objects/<sha256>" per content stored in it, in ascending sha256 order.
 * Entry names are keys, never paths: nothing in a tar header is ever used to
 * name or create a file. See docs/CHECKPOINTS.md.
 */
#ifndef KILN_CKPT_PACK_H
#define KILN_CKPT_PACK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ckpt_store.h"
#include "manifest.h"
#include "sha256.h"

struct archive;
struct strbuf;

#define CKPT_FORMAT "kiln-checkpoint/1"
#define CKPT_MANIFEST_ENTRY ".kiln/manifest.json"
#define CKPT_OBJECT_PREFIX "objects/"

/* 1 when s is 64 lower-case hex digits. */
int ckpt_sha_valid(const char *s);
/* Checks name is "xx/<sha>.tar.zst" with xx the sha's first two digits and
 * copies the sha into sha_out (may be NULL). 0 or -1. */
int ckpt_name_parse(const char *name, char sha_out[SHA256_HEX_LEN + 1]);
void ckpt_name_from_sha(const char *sha, char name[CKPT_NAME_MAX]);

/* The manifest of one archive. */
struct ckpt_pm {
	struct manifest m; /* sorted by path, no duplicates */
	char **in;         /* per entry: the archive holding the content, or
			      NULL when this archive holds it */
	/* stored_size of each archive named in in[], to judge later whether
	 * sharing it is still worth pinning it (sorted by name) */
	struct ckpt_pm_source {
		char name[CKPT_NAME_MAX];
		uint64_t stored_size;
	} *sources;
	size_t nsources;
	uint64_t stored_size; /* bytes of the distinct contents held here */
	size_t stored_count;
};

void ckpt_pm_init(struct ckpt_pm *pm);
void ckpt_pm_release(struct ckpt_pm *pm);
/* Full validation (also used on what ckpt_write is given): paths pass
 * ws_path_check, sorted and unique, no file is also a folder of another,
 * modes 0644/0755, caps, equal sha256 means equal size, names in in[] and
 * sources agree. Fills stored_size/stored_count. */
int ckpt_pm_check(struct ckpt_pm *pm, const struct ckpt_limits *lim,
		  struct strbuf *err);
int ckpt_pm_to_json(const struct ckpt_pm *pm, struct strbuf *out);
/* Parses and checks; out is initialised here. */
int ckpt_pm_parse(const char *json, size_t len, const struct ckpt_limits *lim,
		  struct ckpt_pm *out, struct strbuf *err);
/* Moves the file list out (pm keeps no files). */
void ckpt_pm_take_manifest(struct ckpt_pm *pm, struct manifest *out);
/* Entry indices ordered by sha256, then position (m->n of them); free(). */
size_t *ckpt_pm_order_by_sha(const struct manifest *m);
/* Largest manifest entry accepted under lim. */
size_t ckpt_pm_max_json(const struct ckpt_limits *lim);
/* The archive holding entry i's content: in[i], or self. */
static inline const char *ckpt_pm_source(const struct ckpt_pm *pm, size_t i,
					 const char *self)
{
	return pm->in[i] ? pm->in[i] : self;
}

struct ckpt_pack_writer {
	struct archive *a;
	int fd;
	struct sha256 hash; /* of the compressed bytes written to fd */
	uint64_t size;
	int write_errno;
};

/* Starts an archive on fd (empty, positioned at 0). */
int ckpt_pack_writer_open(struct ckpt_pack_writer *w, int fd,
			  struct strbuf *err);
int ckpt_pack_write_manifest(struct ckpt_pack_writer *w, const char *json,
			     size_t len, struct strbuf *err);
/* Copies size bytes from src_fd as object sha; -EAGAIN when the file holds
 * other bytes (a different length or hash). path only names it in err. */
int ckpt_pack_write_object(struct ckpt_pack_writer *w, const char *sha,
			   uint64_t size, int src_fd, const char *path,
			   struct strbuf *err);
/* Finishes the archive (not fsynced); sha_out is the file's sha256. */
int ckpt_pack_writer_close(struct ckpt_pack_writer *w,
			   char sha_out[SHA256_HEX_LEN + 1], uint64_t *size,
			   struct strbuf *err);
/* Releases a writer on any path (after close too). */
void ckpt_pack_writer_free(struct ckpt_pack_writer *w);

struct ckpt_pack_reader {
	char name[CKPT_NAME_MAX];
	char expected[SHA256_HEX_LEN + 1];
	const struct ckpt_limits *lim;
	int fd;
	struct archive *a;
	struct sha256 hash; /* second pass: every byte handed to libarchive */
	unsigned char *buf;
	struct ckpt_pm pm;
	/* the distinct contents this archive must hold, ascending */
	struct ckpt_stored_obj {
		const char *sha; /* points into pm */
		uint64_t size;
	} *stored;
	size_t nstored, next_stored;
	uint64_t entries;
	/* the current object, after ckpt_pack_next() returned 1 */
	char obj_sha[SHA256_HEX_LEN + 1];
	uint64_t obj_size;
	int obj_read;
};

/*
 * Opens name below root_fd: refuses anything but a regular file within
 * caps, hashes the whole file and compares with expected_sha256 (which must
 * also be the sha in the name) before libarchive sees a byte, then reads and
 * checks the manifest entry. -ENOENT when the file is missing.
 */
int ckpt_pack_open(struct ckpt_pack_reader *r, int root_fd, const char *name,
		   const char *expected_sha256, const struct ckpt_limits *lim,
		   struct strbuf *err);
/* Moves to the next stored object: 1 (obj_sha/obj_size set), 0 at the end
 * of the archive once every expected object was seen, or < 0 on any
 * unexpected, duplicate, out-of-order or oversized entry. */
int ckpt_pack_next(struct ckpt_pack_reader *r, struct strbuf *err);
typedef int (*ckpt_sink_fn)(void *ctx, const void *data, size_t len);
/* Streams the current object to sink (may be NULL) and checks its length
 * and sha256; a sink returning < 0 stops with that value. */
int ckpt_pack_copy(struct ckpt_pack_reader *r, ckpt_sink_fn sink, void *ctx,
		   struct strbuf *err);
/* Reads the rest of the file and checks the second-pass hash, so nothing
 * read was changed on disk after the first pass. Call before trusting
 * anything read. */
int ckpt_pack_finish(struct ckpt_pack_reader *r, struct strbuf *err);
void ckpt_pack_close(struct ckpt_pack_reader *r);

/* Called with r positioned on a needed content; must ckpt_pack_copy() it. */
typedef int (*ckpt_got_fn)(void *ctx, struct ckpt_pack_reader *r,
			   struct strbuf *err);
/* A set of contents: n sha256s, sorted ascending, no duplicates. */
struct ckpt_want {
	const char *const *shas;
	size_t n;
};
/*
 * Streams the contents a checkpoint needs, each distinct one once: from
 * self (opened, manifest read) and from every archive self names, opened
 * with the sha256 in its name; each archive is read once. want NULL = all
 * of them, else those of the set (a sha the checkpoint lacks is skipped).
 * Fails if one is missing; finishes (whole-file hash) every archive read,
 * self included. self is used up either way.
 */
int ckpt_pack_fetch(struct ckpt_pack_reader *self, int root_fd,
		    const struct ckpt_want *want, ckpt_got_fn got, void *ctx,
		    struct strbuf *err);

/* Appends name in quotes, control bytes escaped, at most 200 bytes of it. */
void ckpt_quote(struct strbuf *sb, const char *name);

#endif
