/* ckpt_store.c - the checkpoint store: writing, reading, listing and
 * collecting archives (see ckpt_store.h and docs/CHECKPOINTS.md). */
#include "ckpt_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_crash.h"
#include "ckpt_pack.h"
#include "fileutil.h"
#include "log.h"
#include "manifest.h"
#include "strbuf.h"
#include "util.h"

#define TMP_DIR "tmp"
#define LOCK_FILE ".lock"
/* An earlier archive stays shared unless that pins more than this many
 * bytes of contents no longer used and most of what it stores is dead. */
#define REPACK_MIN_DEAD (256 * 1024)

void ckpt_limits_default(struct ckpt_limits *lim)
{
	lim->max_entries = 10000;
	lim->max_entry_size = 64ull << 20;
	lim->max_total_size = 512ull << 20;
}

/* ------------------------------------------------------------------ */
/* Store                                                              */

/* Writers hold the lock shared, gc exclusive: gc never sees a writer
 * between choosing to share an archive and publishing the one that needs
 * it. A fresh open file description per call, so threads sharing a store
 * never share (and silently convert) each other's lock. */
static int store_lock(const struct ckpt_store *st, int how, struct strbuf *err)
{
	int fd = openat(st->root_fd, LOCK_FILE, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);

	if (fd < 0) {
		int e = errno;

		strbuf_addf(err, "cannot open %s/%s: %s", st->root, LOCK_FILE, strerror(e));
		return -e;
	}
	while (flock(fd, how) < 0) {
		int e = errno;

		if (e == EINTR)
			continue;
		close(fd);
		if (e != EWOULDBLOCK)
			strbuf_addf(err, "cannot lock %s/%s: %s", st->root, LOCK_FILE, strerror(e));
		return -e;
	}
	return fd;
}

static void store_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* Calls fn for every entry of folder dir below root_fd except . and .. */
static int each_entry(int root_fd, const char *dir,
		      int (*fn)(void *ctx, int dir_fd, const char *name),
		      void *ctx)
{
	int fd = openat(root_fd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *d;
	int ret = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while (!ret && (errno = 0, de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			ret = fn(ctx, dirfd(d), de->d_name);
	if (!ret && errno)
		ret = -errno;
	closedir(d);
	return ret;
}

static int remove_temp(void *ctx, int dir_fd, const char *name)
{
	unsigned *count = ctx;

	if (unlinkat(dir_fd, name, 0) == 0)
		(*count)++;
	return 0;
}

int ckpt_store_open(struct ckpt_store *st, const char *root,
		    const struct ckpt_limits *lim, struct strbuf *err)
{
	unsigned removed = 0;
	int lock, ret;

	memset(st, 0, sizeof(*st));
	st->root_fd = -1;
	if (lim)
		st->lim = *lim;
	else
		ckpt_limits_default(&st->lim);
	ret = mkdir_p(root, 0755);
	if (ret) {
		strbuf_addf(err, "cannot create %s: %s", root, strerror(-ret));
		return ret;
	}
	st->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->root_fd < 0 ||
	    (mkdirat(st->root_fd, TMP_DIR, 0755) < 0 && errno != EEXIST)) {
		ret = -errno;
		strbuf_addf(err, "cannot open %s: %s", root, strerror(-ret));
		ckpt_store_close(st);
		return ret;
	}
	st->root = xstrdup(root);
	/* temp files are stale exactly when no writer holds the lock */
	lock = store_lock(st, LOCK_EX | LOCK_NB, err);
	if (lock == -EWOULDBLOCK)
		return 0;
	if (lock < 0) {
		ret = lock;
		ckpt_store_close(st);
		return ret;
	}
	each_entry(st->root_fd, TMP_DIR, remove_temp, &removed);
	store_unlock(lock);
	if (removed)
		log_info("checkpoint store %s: removed %u stale temp files", root, removed);
	return 0;
}

void ckpt_store_close(struct ckpt_store *st)
{
	if (st->root_fd >= 0)
		close(st->root_fd);
	free(st->root);
	st->root = NULL;
	st->root_fd = -1;
}

/* ------------------------------------------------------------------ */
/* Listing                                                            */

struct listed {
	char name[CKPT_NAME_MAX];
	time_t mtime;
	uint64_t size;
};

struct list_ctx {
	struct listed *v;
	size_t n, alloc;
	char prefix[3];
};

static int list_archive(void *vctx, int dir_fd, const char *name)
{
	struct list_ctx *c = vctx;
	struct listed *slot;
	struct stat st;

	if (c->n == c->alloc) {
		size_t alloc = c->alloc ? c->alloc * 2 : 64;
		struct listed *nv = realloc(c->v, alloc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		c->v = nv;
		c->alloc = alloc;
	}
	slot = &c->v[c->n];
	if (snprintf(slot->name, CKPT_NAME_MAX, "%s/%s", c->prefix, name) >= CKPT_NAME_MAX ||
	    ckpt_name_parse(slot->name, NULL) < 0)
		return 0;
	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return 0;
	slot->mtime = st.st_mtime;
	slot->size = (uint64_t)st.st_size;
	c->n++;
	return 0;
}

static int list_fanout(void *vctx, int dir_fd, const char *name)
{
	struct list_ctx *c = vctx;
	int ret;

	if (strlen(name) != 2 || !strchr("0123456789abcdef", name[0]) ||
	    !strchr("0123456789abcdef", name[1]))
		return 0;
	memcpy(c->prefix, name, 3);
	ret = each_entry(dir_fd, name, list_archive, c);
	return ret == -ENOTDIR || ret == -ELOOP ? 0 : ret;
}

static int cmp_listed(const void *a, const void *b)
{
	return strcmp(((const struct listed *)a)->name, ((const struct listed *)b)->name);
}

/* Every archive with its mtime and size, sorted by name. */
static int list_all(const struct ckpt_store *st, struct list_ctx *c,
		    struct strbuf *err)
{
	int ret = each_entry(st->root_fd, ".", list_fanout, c);

	if (ret) {
		strbuf_addf(err, "cannot list %s: %s", st->root, strerror(-ret));
		return ret;
	}
	if (c->n > 1)
		qsort(c->v, c->n, sizeof(*c->v), cmp_listed);
	return 0;
}

int ckpt_list(struct ckpt_store *st, struct ckpt_list *out, struct strbuf *err)
{
	struct list_ctx c = { 0 };
	int ret = list_all(st, &c, err);

	out->names = NULL;
	out->n = 0;
	if (!ret) {
		out->names = xcalloc(c.n + 1, sizeof(*out->names));
		for (size_t i = 0; i < c.n; i++)
			memcpy(out->names[i], c.v[i].name, CKPT_NAME_MAX);
		out->n = c.n;
	}
	free(c.v);
	return ret;
}

void ckpt_list_release(struct ckpt_list *l)
{
	free(l->names);
	l->names = NULL;
	l->n = 0;
}

/* ------------------------------------------------------------------ */
/* Writing                                                            */

/* Where the base checkpoint keeps one content. */
struct shared {
	const char *sha;
	uint64_t size;
	size_t loc; /* index into the location table */
};

struct location {
	const char *name;
	uint64_t stored_size; /* what the archive holds */
	uint64_t used;        /* bytes the new checkpoint would use of it */
	size_t refs;          /* contents it would use (empty ones too) */
	int keep;
};

static int cmp_shared(const void *a, const void *b)
{
	return strcmp(((const struct shared *)a)->sha, ((const struct shared *)b)->sha);
}

static int cmp_source(const void *a, const void *b)
{
	return strcmp(((const struct ckpt_pm_source *)a)->name,
		      ((const struct ckpt_pm_source *)b)->name);
}

static int cmp_source_name(const void *key, const void *elem)
{
	return strcmp(key, ((const struct ckpt_pm_source *)elem)->name);
}

/* Distinct contents of base, by sha256, each with its location: base's
 * sources (sorted) keep their index, base itself comes last. */
static struct shared *base_contents(const struct ckpt_pm *base, size_t *n)
{
	const struct manifest *bm = &base->m;
	struct shared *sh = xcalloc(bm->n + 1, sizeof(*sh));
	size_t k = 0;

	for (size_t j = 0; j < bm->n; j++) {
		const struct ckpt_pm_source *src = NULL;

		if (base->in[j])
			src = bsearch(base->in[j], base->sources, base->nsources,
				      sizeof(*base->sources), cmp_source_name);
		sh[j].sha = bm->v[j].sha256;
		sh[j].size = bm->v[j].size;
		/* a checked manifest lists every "in" among its sources */
		sh[j].loc = src ? (size_t)(src - base->sources) : base->nsources;
	}
	if (bm->n > 1)
		qsort(sh, bm->n, sizeof(*sh), cmp_shared);
	for (size_t j = 0; j < bm->n; j++)
		if (!k || strcmp(sh[k - 1].sha, sh[j].sha))
			sh[k++] = sh[j];
	*n = k;
	return sh;
}

/*
 * Points pm's entries at the archives where base already keeps their
 * contents. Only a content base has is shared, so references never chain:
 * an "in" names the archive that stores the bytes. An archive whose
 * contents are now mostly unused is not shared any more (its few live
 * contents are stored again), so it can be collected once older
 * checkpoints go.
 */
static void share_with_base(const struct ckpt_store *st, struct ckpt_pm *pm,
			    const struct ckpt_pm *base, const char *base_name)
{
	size_t nlocs = base->nsources + 1, nsh, j = 0;
	struct location *locs = xcalloc(nlocs, sizeof(*locs));
	struct shared *sh = base_contents(base, &nsh);
	size_t *idx = ckpt_pm_order_by_sha(&pm->m);

	for (size_t l = 0; l < base->nsources; l++) {
		locs[l].name = base->sources[l].name;
		locs[l].stored_size = base->sources[l].stored_size;
	}
	locs[base->nsources].name = base_name;
	locs[base->nsources].stored_size = base->stored_size;
	/* bytes of each location the new checkpoint would use: a merge of
	 * two sha-ordered lists */
	for (size_t k = 0; k < pm->m.n; k++) {
		const struct manifest_entry *e = &pm->m.v[idx[k]];

		if (k && !strcmp(pm->m.v[idx[k - 1]].sha256, e->sha256))
			continue;
		while (j < nsh && strcmp(sh[j].sha, e->sha256) < 0)
			j++;
		if (j < nsh && !strcmp(sh[j].sha, e->sha256) && sh[j].size == e->size) {
			locs[sh[j].loc].used += e->size;
			locs[sh[j].loc].refs++;
		}
	}
	for (size_t l = 0; l < nlocs; l++) {
		struct location *L = &locs[l];
		uint64_t dead = L->stored_size > L->used ? L->stored_size - L->used : 0;
		struct stat s;

		L->keep = L->refs > 0 &&
			  fstatat(st->root_fd, L->name, &s, AT_SYMLINK_NOFOLLOW) == 0 &&
			  S_ISREG(s.st_mode) &&
			  !(dead > REPACK_MIN_DEAD && L->used < dead / 3);
		if (L->keep) {
			snprintf(pm->sources[pm->nsources].name, CKPT_NAME_MAX, "%s", L->name);
			pm->sources[pm->nsources++].stored_size = L->stored_size;
		}
	}
	for (size_t i = 0; i < pm->m.n; i++) {
		struct shared key = { .sha = pm->m.v[i].sha256 };
		const struct shared *hit = bsearch(&key, sh, nsh, sizeof(*sh), cmp_shared);

		if (hit && hit->size == pm->m.v[i].size && locs[hit->loc].keep)
			pm->in[i] = xstrdup(locs[hit->loc].name);
	}
	if (pm->nsources > 1)
		qsort(pm->sources, pm->nsources, sizeof(*pm->sources), cmp_source);
	free(idx);
	free(sh);
	free(locs);
}

/* Reads base's manifest; any failure just means nothing is shared. */
static void plan_sharing(const struct ckpt_store *st, struct ckpt_pm *pm,
			 const char *base_name, const char *base_sha)
{
	struct ckpt_pack_reader r;
	struct strbuf why = STRBUF_INIT;
	int ret;

	pm->sources = xcalloc(pm->m.n + 2, sizeof(*pm->sources));
	if (!base_name)
		return;
	ret = ckpt_pack_open(&r, st->root_fd, base_name, base_sha, &st->lim, &why);
	if (!ret)
		ret = ckpt_pack_finish(&r, &why);
	if (!ret) {
		ckpt_crash_point("ckpt_write", 3);
		share_with_base(st, pm, &r.pm, base_name);
	} else {
		log_warn("checkpoint store %s: base unusable, storing every file: %s",
			 st->root, why.buf);
	}
	ckpt_pack_close(&r);
	strbuf_release(&why);
}

static int temp_name(struct strbuf *out)
{
	unsigned char rnd[12];
	char hex[25];

	if (random_bytes(rnd, sizeof(rnd)) < 0)
		return -EIO;
	hex_encode(rnd, sizeof(rnd), hex);
	strbuf_addf(out, TMP_DIR "/%s.tmp", hex);
	return 0;
}

static int sys_fail(struct strbuf *err, const char *what, const char *name)
{
	int e = errno;

	strbuf_addf(err, "%s %s: %s", what, name, strerror(e));
	return -e;
}

/* Writes the archive's bytes to the open temp file fd. */
static int write_contents(struct ckpt_pm *pm, int fd, ckpt_open_fn open_file,
			  void *ctx, char sha[SHA256_HEX_LEN + 1],
			  uint64_t *size, struct strbuf *err)
{
	struct ckpt_pack_writer w;
	struct strbuf json = STRBUF_INIT;
	size_t *idx = ckpt_pm_order_by_sha(&pm->m);
	size_t left = pm->stored_count;
	int ret;

	ret = ckpt_pm_to_json(pm, &json);
	if (!ret)
		ret = ckpt_pack_writer_open(&w, fd, err);
	else
		memset(&w, 0, sizeof(w));
	if (!ret)
		ckpt_crash_point("ckpt_write", 6);
	if (!ret)
		ret = ckpt_pack_write_manifest(&w, json.buf, json.len, err);
	if (!ret)
		ckpt_crash_point("ckpt_write", 7);
	for (size_t k = 0; !ret && k < pm->m.n; k++) {
		const struct manifest_entry *e = &pm->m.v[idx[k]];
		int src;

		/* stored contents only, each once (the first path holding it) */
		if (pm->in[idx[k]] || (k && !strcmp(pm->m.v[idx[k - 1]].sha256, e->sha256)))
			continue;
		src = open_file(ctx, e->path);
		if (src < 0) {
			strbuf_addstr(err, "cannot open ");
			ckpt_quote(err, e->path);
			ret = -EAGAIN;
			break;
		}
		ret = ckpt_pack_write_object(&w, e->sha256, e->size, src, e->path, err);
		close(src);
		left--;
		if (!ret && left + 1 == pm->stored_count)
			ckpt_crash_point("ckpt_write", 8);
		if (!ret && !left)
			ckpt_crash_point("ckpt_write", 9);
	}
	if (!ret)
		ret = ckpt_pack_writer_close(&w, sha, size, err);
	ckpt_pack_writer_free(&w);
	free(idx);
	strbuf_release(&json);
	return ret;
}

/* Makes the fan-out folder of name exist durably. */
static int ensure_fanout(const struct ckpt_store *st, const char *name,
			 struct strbuf *err)
{
	char dir[3] = { name[0], name[1], '\0' };

	if (mkdirat(st->root_fd, dir, 0755) == 0) {
		if (fsync(st->root_fd) < 0)
			return sys_fail(err, "cannot fsync", st->root);
	} else if (errno != EEXIST) {
		return sys_fail(err, "cannot create folder", dir);
	}
	return 0;
}

static int fsync_fanout(const struct ckpt_store *st, const char *name,
			struct strbuf *err)
{
	char dir[3] = { name[0], name[1], '\0' };
	int fd = openat(st->root_fd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int ret = 0;

	if (fd < 0 || fsync(fd) < 0)
		ret = sys_fail(err, "cannot fsync folder", dir);
	if (fd >= 0)
		close(fd);
	return ret;
}

/* temp file, fsync, rename, folder fsync: the name appears complete or
 * not at all. */
static int publish_archive(const struct ckpt_store *st, struct ckpt_pm *pm,
			   ckpt_open_fn open_file, void *ctx,
			   struct ckpt_info *out, struct strbuf *err)
{
	struct strbuf tmp = STRBUF_INIT;
	int fd = -1, ret;

	ret = temp_name(&tmp);
	if (ret)
		goto out;
	fd = openat(st->root_fd, tmp.buf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = sys_fail(err, "cannot create", tmp.buf);
		goto out;
	}
	ckpt_crash_point("ckpt_write", 5);
	ret = write_contents(pm, fd, open_file, ctx, out->sha256, &out->size, err);
	if (ret)
		goto out;
	ckpt_crash_point("ckpt_write", 10);
	if (fsync(fd) < 0) {
		ret = sys_fail(err, "cannot fsync", tmp.buf);
		goto out;
	}
	ckpt_crash_point("ckpt_write", 11);
	close(fd);
	fd = -1;
	ckpt_crash_point("ckpt_write", 12);
	ckpt_name_from_sha(out->sha256, out->name);
	ret = ensure_fanout(st, out->name, err);
	if (ret)
		goto out;
	ckpt_crash_point("ckpt_write", 13);
	if (renameat(st->root_fd, tmp.buf, st->root_fd, out->name) < 0) {
		ret = sys_fail(err, "cannot rename to", out->name);
		goto out;
	}
	ckpt_crash_point("ckpt_write", 14);
	ret = fsync_fanout(st, out->name, err);
	if (!ret)
		ckpt_crash_point("ckpt_write", 15);
out:
	if (fd >= 0)
		close(fd);
	if (ret && tmp.len)
		unlinkat(st->root_fd, tmp.buf, 0);
	strbuf_release(&tmp);
	return ret;
}

int ckpt_write(struct ckpt_store *st, const struct manifest *m,
	       const char *base_name, const char *base_sha256,
	       ckpt_open_fn open_file, void *ctx, struct ckpt_info *out,
	       struct strbuf *err)
{
	struct ckpt_pm pm;
	int lock = -1, ret = 0;

	memset(out, 0, sizeof(*out));
	ckpt_pm_init(&pm);
	pm.in = xcalloc(m->n + 1, sizeof(*pm.in));
	for (size_t i = 0; !ret && i < m->n; i++)
		if (manifest_add(&pm.m, m->v[i].path, m->v[i].size, m->v[i].sha256,
				 m->v[i].mode) < 0) {
			strbuf_addstr(err, "file ");
			ckpt_quote(err, m->v[i].path);
			strbuf_addstr(err, ": bad manifest entry");
			ret = -EINVAL;
		}
	/* in[] is all NULL yet, so sorting the copy keeps it in step */
	manifest_sort(&pm.m);
	if (!ret)
		ret = ckpt_pm_check(&pm, &st->lim, err);
	if (ret)
		goto out;
	ckpt_crash_point("ckpt_write", 1);
	lock = store_lock(st, LOCK_SH, err);
	if (lock < 0) {
		ret = lock;
		goto out;
	}
	ckpt_crash_point("ckpt_write", 2);
	plan_sharing(st, &pm, base_name, base_sha256);
	ret = ckpt_pm_check(&pm, &st->lim, err);
	if (!ret) {
		ckpt_crash_point("ckpt_write", 4);
		ret = publish_archive(st, &pm, open_file, ctx, out, err);
	}
	if (!ret) {
		out->file_count = (unsigned)pm.m.n;
		out->content_size = pm.m.total_size;
		out->stored_count = (unsigned)pm.stored_count;
		out->stored_size = pm.stored_size;
	}
out:
	store_unlock(lock);
	ckpt_pm_release(&pm);
	if (ret)
		memset(out, 0, sizeof(*out));
	else
		ckpt_crash_point("ckpt_write", 16); /* durable, no row names it yet */
	return ret;
}

/* ------------------------------------------------------------------ */
/* Reading                                                            */

static int got_verify(void *ctx, struct ckpt_pack_reader *r, struct strbuf *err)
{
	(void)ctx;
	return ckpt_pack_copy(r, NULL, NULL, err);
}

int ckpt_verify(struct ckpt_store *st, const char *name,
		const char *expected_sha256, struct strbuf *err)
{
	struct ckpt_pack_reader r;
	int ret = ckpt_pack_open(&r, st->root_fd, name, expected_sha256, &st->lim, err);

	if (!ret)
		ret = ckpt_pack_fetch(&r, st->root_fd, NULL, got_verify, NULL, err);
	ckpt_pack_close(&r);
	return ret;
}

int ckpt_read_manifest(struct ckpt_store *st, const char *name,
		       const char *expected_sha256, struct manifest *out,
		       struct strbuf *err)
{
	struct ckpt_pack_reader r;
	int ret = ckpt_pack_open(&r, st->root_fd, name, expected_sha256, &st->lim, err);

	manifest_init(out);
	if (!ret)
		ret = ckpt_pack_finish(&r, err);
	if (!ret)
		ckpt_pm_take_manifest(&r.pm, out);
	ckpt_pack_close(&r);
	return ret;
}

struct ckpt_reader {
	struct ckpt_store *st;
	struct ckpt_pack_reader r;
	int fetched;
};

int ckpt_reader_open(struct ckpt_store *st, const char *name,
		     const char *expected_sha256, struct ckpt_reader **out,
		     struct strbuf *err)
{
	struct ckpt_reader *rd = xcalloc(1, sizeof(*rd));
	int ret = ckpt_pack_open(&rd->r, st->root_fd, name, expected_sha256, &st->lim, err);

	rd->st = st;
	if (ret) {
		ckpt_reader_close(rd);
		rd = NULL;
	}
	*out = rd;
	return ret;
}

const struct manifest *ckpt_reader_manifest(const struct ckpt_reader *rd)
{
	return &rd->r.pm.m;
}

struct content_sink {
	ckpt_content_fn fn;
	void *ctx;
	struct strbuf data;
};

static int sink_strbuf(void *ctx, const void *data, size_t len)
{
	return strbuf_add(ctx, data, len) < 0 ? -EFBIG : 0;
}

static int got_content_whole(void *ctx, struct ckpt_pack_reader *r, struct strbuf *err)
{
	struct content_sink *cs = ctx;
	int ret;

	strbuf_reset(&cs->data);
	/* the object's length was checked against the manifest, which the
	 * store's limits cap */
	ret = ckpt_pack_copy(r, sink_strbuf, &cs->data, err);
	return ret ? ret : cs->fn(cs->ctx, r->obj_sha, strbuf_str(&cs->data), cs->data.len);
}

int ckpt_reader_fetch(struct ckpt_reader *rd, const char *const *shas, size_t n,
		      ckpt_content_fn fn, void *ctx, struct strbuf *err)
{
	struct content_sink cs = { fn, ctx, STRBUF_INIT };
	struct ckpt_want want = { shas, n };
	int ret;

	for (size_t i = 1; i < n; i++)
		if (strcmp(shas[i - 1], shas[i]) >= 0) {
			strbuf_addstr(err, "contents to fetch are not sorted or not unique");
			return -EINVAL;
		}
	if (rd->fetched) {
		strbuf_addf(err, "checkpoint %s was already read", rd->r.name);
		return -EINVAL;
	}
	rd->fetched = 1;
	ret = ckpt_pack_fetch(&rd->r, rd->st->root_fd, &want, got_content_whole, &cs, err);
	strbuf_release(&cs.data);
	return ret;
}

void ckpt_reader_close(struct ckpt_reader *rd)
{
	if (!rd)
		return;
	ckpt_pack_close(&rd->r);
	free(rd);
}

struct one_file {
	struct strbuf *out;
	int found;
};

static int take_one(void *ctx, const char *sha, const char *data, size_t len)
{
	struct one_file *f = ctx;

	(void)sha;
	f->found = 1;
	return strbuf_add(f->out, data, len) < 0 ? -EFBIG : 0;
}

int ckpt_read_file(struct ckpt_store *st, const char *name,
		   const char *expected_sha256, const char *path, size_t cap,
		   struct strbuf *out, struct strbuf *err)
{
	struct ckpt_reader *rd = NULL;
	const struct manifest_entry *e = NULL;
	struct strbuf data = STRBUF_INIT;
	struct one_file f = { &data, 0 };
	int ret = ckpt_reader_open(st, name, expected_sha256, &rd, err);

	if (!ret)
		e = manifest_find(ckpt_reader_manifest(rd), path);
	if (!ret && !e) {
		/* the whole archive is checked before "no such file" is trusted */
		ret = ckpt_reader_fetch(rd, NULL, 0, take_one, &f, err);
		if (!ret) {
			strbuf_addf(err, "checkpoint %s has no file ", name);
			ckpt_quote(err, path);
			ret = -ENOENT;
		}
	} else if (!ret && e->size > cap) {
		strbuf_addstr(err, "file ");
		ckpt_quote(err, path);
		strbuf_addf(err, " is %llu bytes, more than %zu",
			    (unsigned long long)e->size, cap);
		ret = -EFBIG;
	} else if (!ret) {
		const char *sha = e->sha256;

		ret = ckpt_reader_fetch(rd, &sha, 1, take_one, &f, err);
		if (!ret && !f.found) {
			strbuf_addf(err, "checkpoint %s: content of ", name);
			ckpt_quote(err, path);
			strbuf_addstr(err, " is missing");
			ret = -EBADMSG;
		}
		if (!ret && strbuf_add(out, data.buf, data.len) < 0)
			ret = -EFBIG;
	}
	ckpt_reader_close(rd);
	strbuf_release(&data);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Garbage collection                                                 */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_listed_name(const void *key, const void *elem)
{
	return strcmp(key, ((const struct listed *)elem)->name);
}

/* Reads archive i (its whole-file hash included) and marks the archives it
 * needs. */
static int mark_from(const struct ckpt_store *st, const struct list_ctx *all,
		     unsigned char *marked, size_t i, struct strbuf *err)
{
	struct ckpt_pack_reader r;
	char sha[SHA256_HEX_LEN + 1];
	int ret;

	ckpt_name_parse(all->v[i].name, sha);
	ret = ckpt_pack_open(&r, st->root_fd, all->v[i].name, sha, &st->lim, err);
	if (!ret)
		ret = ckpt_pack_finish(&r, err);
	for (size_t s = 0; !ret && s < r.pm.nsources; s++) {
		const struct listed *hit = bsearch(r.pm.sources[s].name, all->v, all->n,
						   sizeof(*all->v), cmp_listed_name);

		if (hit)
			marked[hit - all->v] = 1;
		else
			log_warn("checkpoint %s needs %s, which is missing", all->v[i].name,
				 r.pm.sources[s].name);
	}
	ckpt_pack_close(&r);
	return ret;
}

static int sweep(const struct ckpt_store *st, const struct list_ctx *all,
		 const unsigned char *marked, time_t cutoff,
		 struct ckpt_gc_stats *stats, struct strbuf *err)
{
	char last_dir[3] = "";
	int ret = 0;

	for (size_t i = 0; i < all->n; i++) {
		const struct listed *a = &all->v[i];

		if (marked[i] || a->mtime > cutoff) {
			stats->archives_kept++;
			continue;
		}
		if (unlinkat(st->root_fd, a->name, 0) < 0) {
			if (errno == ENOENT)
				continue;
			ret = sys_fail(err, "cannot remove", a->name);
			break;
		}
		stats->archives_removed++;
		stats->bytes_freed += a->size;
		if (stats->archives_removed == 1)
			ckpt_crash_point("ckpt_gc", 2);
		/* names are sorted: one fsync per fan-out folder touched */
		if (last_dir[0] && memcmp(last_dir, a->name, 2))
			fsync_fanout(st, last_dir, err);
		memcpy(last_dir, a->name, 2);
	}
	if (last_dir[0] && fsync_fanout(st, last_dir, err) < 0 && !ret)
		ret = -EIO;
	return ret;
}

struct temp_gc {
	time_t cutoff;
	unsigned removed;
};

static int remove_old_temp(void *vctx, int dir_fd, const char *name)
{
	struct temp_gc *t = vctx;
	struct stat st;

	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_mtime <= t->cutoff && unlinkat(dir_fd, name, 0) == 0)
		t->removed++;
	return 0;
}

int ckpt_gc(struct ckpt_store *st, const char *const *live_names, size_t nlive,
	    int64_t grace_seconds, struct ckpt_gc_stats *stats,
	    struct strbuf *err)
{
	struct list_ctx all = { 0 };
	const char **live = xcalloc(nlive + 1, sizeof(*live));
	unsigned char *marked = NULL;
	struct temp_gc temps;
	time_t cutoff = time(NULL) - (time_t)(grace_seconds > 0 ? grace_seconds : 0);
	int lock, ret;

	memset(stats, 0, sizeof(*stats));
	for (size_t i = 0; i < nlive; i++) {
		if (ckpt_name_parse(live_names[i], NULL) < 0) {
			strbuf_addstr(err, "malformed live checkpoint name ");
			ckpt_quote(err, live_names[i] ? live_names[i] : "");
			free(live);
			return -EINVAL;
		}
		live[i] = live_names[i];
	}
	if (nlive > 1)
		qsort(live, nlive, sizeof(*live), cmp_str);
	lock = store_lock(st, LOCK_EX, err);
	if (lock < 0) {
		free(live);
		return lock;
	}
	ret = list_all(st, &all, err);
	if (ret)
		goto out;
	marked = xcalloc(all.n + 1, 1);
	for (size_t i = 0; i < nlive; i++)
		if ((i == 0 || strcmp(live[i - 1], live[i])) &&
		    (all.n == 0 || !bsearch(live[i], all.v, all.n, sizeof(*all.v), cmp_listed_name)))
			stats->live_missing++;
	/* roots: live or young; each root keeps what it needs */
	for (size_t i = 0; !ret && i < all.n; i++) {
		const char *name = all.v[i].name;

		if (all.v[i].mtime <= cutoff &&
		    !bsearch(&name, live, nlive, sizeof(*live), cmp_str))
			continue;
		marked[i] = 1;
		ret = mark_from(st, &all, marked, i, err);
	}
	if (ret) {
		strbuf_addstr(err, " (nothing removed)");
		goto out;
	}
	ckpt_crash_point("ckpt_gc", 1);
	ret = sweep(st, &all, marked, cutoff, stats, err);
	ckpt_crash_point("ckpt_gc", 3);
	temps.cutoff = cutoff;
	temps.removed = 0;
	each_entry(st->root_fd, TMP_DIR, remove_old_temp, &temps);
	stats->temps_removed = temps.removed;
out:
	store_unlock(lock);
	free(marked);
	free(all.v);
	free(live);
	return ret;
}
