/* manifest.c - the sorted file list of a workspace (see manifest.h). */
#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sha256.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

void manifest_init(struct manifest *m)
{
	m->v = NULL;
	m->n = 0;
	m->alloc = 0;
	m->total_size = 0;
	m->incomplete = 0;
}

void manifest_release(struct manifest *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].path);
	free(m->v);
	manifest_init(m);
}

static int is_sha256_hex(const char *s)
{
	size_t i;

	for (i = 0; i < SHA256_HEX_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[i] == '\0';
}

int manifest_add(struct manifest *m, const char *path, uint64_t size,
		 const char *sha256_hex, unsigned mode)
{
	struct manifest_entry *e;

	if (!path || !sha256_hex || !is_sha256_hex(sha256_hex) ||
	    size > UINT64_MAX - m->total_size)
		return -1;
	if (m->n == m->alloc) {
		size_t alloc = m->alloc ? m->alloc * 2 : 64;
		struct manifest_entry *nv = realloc(m->v, alloc * sizeof(*nv));

		if (!nv)
			return -1;
		m->v = nv;
		m->alloc = alloc;
	}
	e = &m->v[m->n++];
	e->path = xstrdup(path);
	e->size = size;
	memcpy(e->sha256, sha256_hex, sizeof(e->sha256));
	e->mode = (mode & 0111) ? 0755 : 0644;
	m->total_size += size;
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct manifest_entry *x = a, *y = b;

	return strcmp(x->path, y->path);
}

void manifest_sort(struct manifest *m)
{
	if (m->n > 1)
		qsort(m->v, m->n, sizeof(*m->v), entry_cmp);
}

/* m must be sorted (manifest_build and manifest_from_json sort). */
const struct manifest_entry *manifest_find(const struct manifest *m,
					   const char *path)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->v[mid].path, path);

		if (c == 0)
			return &m->v[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

struct build_ctx {
	const struct workspace *ws;
	struct manifest *m;
	struct tool_error *err;
	int tolerant;           /* MANIFEST_OVER_LIMITS */
	uint64_t max_files;     /* what this build lists at most */
	uint64_t max_bytes;     /* ... and hashes at most */
	unsigned char buf[65536];
};

/* limit * MANIFEST_OVER_LIMITS_FACTOR, saturating. */
static uint64_t scaled(uint64_t limit)
{
	return limit > UINT64_MAX / MANIFEST_OVER_LIMITS_FACTOR
	       ? UINT64_MAX : limit * MANIFEST_OVER_LIMITS_FACTOR;
}

/* Past a ceiling: a strict build fails, a tolerant one stops listing and
 * says the manifest is incomplete. */
static int over_ceiling(struct build_ctx *c, const char *what, uint64_t limit)
{
	if (c->tolerant) {
		c->m->incomplete = 1;
		return 1;
	}
	tool_error_set(c->err, "limit_exceeded", "the workspace holds more than %llu %s",
		       (unsigned long long)limit, what);
	return -1;
}

/* An entry a tolerant build cannot hash (a hard link, a file swapped for a
 * FIFO, unreadable) is left out and marks the manifest incomplete; a strict
 * build fails with the error already in c->err. */
static int skip_entry(struct build_ctx *c)
{
	if (!c->tolerant)
		return -1;
	c->m->incomplete = 1;
	return 0;
}

/* Hashes what is actually read, not what fstat promised: a file growing
 * during the walk still counts against the limits with its real size. */
static int build_cb(void *vctx, const char *rel, const struct stat *st)
{
	struct build_ctx *c = vctx;
	struct sha256 h;
	char hex[SHA256_HEX_LEN + 1];
	struct stat fst;
	uint64_t size = 0;
	int fd, ret = -1;

	if (!S_ISREG(st->st_mode))
		return 0;
	if (c->m->n + 1 > c->max_files)
		return over_ceiling(c, "files", c->max_files);
	fd = ws_open(c->ws, rel, O_RDONLY, 0, c->err);
	if (fd < 0)
		return strcmp(c->err->code, "not_found") ? skip_entry(c) : 0;
	if (fstat(fd, &fst) < 0 || !S_ISREG(fst.st_mode)) {
		ws_set_error(c->err, "not_a_file", rel, "is no longer a regular file");
		ret = skip_entry(c);
		goto out;
	}
	sha256_init(&h);
	for (;;) {
		ssize_t n = read(fd, c->buf, sizeof(c->buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			ws_set_error(c->err, "io_error", rel, "%s", strerror(errno));
			ret = skip_entry(c);
			goto out;
		}
		if (n == 0)
			break;
		size += (uint64_t)n;
		/* total_size never passes the ceiling: entries are added only
		 * after this check */
		if (size > c->max_bytes - c->m->total_size) {
			ret = over_ceiling(c, "bytes", c->max_bytes);
			goto out;
		}
		sha256_update(&h, c->buf, (size_t)n);
	}
	sha256_final_hex(&h, hex);
	if (manifest_add(c->m, rel, size, hex, fst.st_mode) < 0) {
		tool_error_set(c->err, "io_error", "out of memory building the manifest");
		goto out;
	}
	ret = 0;
out:
	close(fd);
	return ret;
}

int manifest_build_ex(const struct workspace *ws, enum manifest_mode mode,
		      struct manifest *out, struct tool_error *err)
{
	struct tool_error local = { { 0 }, { 0 } };
	struct build_ctx *c = xcalloc(1, sizeof(*c));
	int ret, cut = 0;

	manifest_init(out);
	c->ws = ws;
	c->m = out;
	c->err = err ? err : &local;
	c->tolerant = mode == MANIFEST_OVER_LIMITS;
	c->max_files = c->tolerant ? scaled(ws->lim.max_files) : ws->lim.max_files;
	c->max_bytes = c->tolerant ? scaled(ws->lim.max_total_size) : ws->lim.max_total_size;
	ret = ws_walk_ex(ws, "", 0, c->tolerant ? WS_WALK_CUT_BIG_DIRS : 0, build_cb, c,
			 &cut, c->err);
	free(c);
	if (ret < 0) {
		manifest_release(out);
		return -1;
	}
	if (cut)
		out->incomplete = 1;
	manifest_sort(out);
	return 0;
}

int manifest_build(const struct workspace *ws, struct manifest *out,
		   struct tool_error *err)
{
	return manifest_build_ex(ws, MANIFEST_WITHIN_LIMITS, out, err);
}

json_object *manifest_to_json(const struct manifest *m)
{
	json_object *arr = json_object_new_array_ext((int)m->n);

	for (size_t i = 0; i < m->n; i++) {
		const struct manifest_entry *e = &m->v[i];
		json_object *o = json_object_new_object();

		json_object_object_add(o, "path", json_object_new_string(e->path));
		json_object_object_add(o, "size", json_object_new_uint64(e->size));
		json_object_object_add(o, "sha256", json_object_new_string(e->sha256));
		/* absent means 0644, so the common entry keeps its short form */
		if (e->mode == 0755)
			json_object_object_add(o, "executable",
					       json_object_new_boolean(1));
		json_object_array_add(arr, o);
	}
	return arr;
}

static int entry_from_json(json_object *o, struct manifest *out)
{
	json_object *jpath, *jsize, *jsha, *jexec;
	const char *path, *sha;
	int64_t size;
	unsigned mode = 0644;

	if (!json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "path", &jpath) ||
	    !json_object_object_get_ex(o, "size", &jsize) ||
	    !json_object_object_get_ex(o, "sha256", &jsha) ||
	    !json_object_is_type(jpath, json_type_string) ||
	    !json_object_is_type(jsize, json_type_int) ||
	    !json_object_is_type(jsha, json_type_string))
		return -1;
	path = json_object_get_string(jpath);
	if (ws_path_check(NULL, path, (size_t)json_object_get_string_len(jpath),
			  NULL) < 0)
		return -1;
	errno = 0;
	size = json_object_get_int64(jsize);
	if (size < 0 || errno)
		return -1;
	/* a uint64 beyond INT64_MAX reads back clamped: refuse it */
	if (size == INT64_MAX && json_object_get_uint64(jsize) != (uint64_t)INT64_MAX)
		return -1;
	sha = json_object_get_string(jsha);
	if ((size_t)json_object_get_string_len(jsha) != SHA256_HEX_LEN)
		return -1;
	if (json_object_object_get_ex(o, "executable", &jexec)) {
		if (!json_object_is_type(jexec, json_type_boolean))
			return -1;
		if (json_object_get_boolean(jexec))
			mode = 0755;
	}
	return manifest_add(out, path, (uint64_t)size, sha, mode);
}

int manifest_from_json(json_object *arr, struct manifest *out)
{
	size_t n;

	manifest_init(out);
	if (!json_object_is_type(arr, json_type_array))
		return -1;
	n = json_object_array_length(arr);
	for (size_t i = 0; i < n; i++)
		if (entry_from_json(json_object_array_get_idx(arr, i), out) < 0)
			goto fail;
	manifest_sort(out);
	for (size_t i = 1; i < out->n; i++)
		if (!strcmp(out->v[i - 1].path, out->v[i].path))
			goto fail;
	return 0;
fail:
	manifest_release(out);
	return -1;
}

static int is_sorted(const struct manifest *m)
{
	for (size_t i = 1; i < m->n; i++)
		if (strcmp(m->v[i - 1].path, m->v[i].path) >= 0)
			return 0;
	return 1;
}

/* Both manifests must be sorted and free of duplicates (as built or parsed);
 * a merge of the two gives the delta in one pass. */
int manifest_diff(const struct manifest *from, const struct manifest *to,
		  struct manifest_delta *d)
{
	size_t i = 0, j = 0;

	memset(d, 0, sizeof(*d));
	if (!is_sorted(from) || !is_sorted(to))
		return -1;
	d->added = xcalloc(to->n + 1, sizeof(*d->added));
	d->changed = xcalloc((from->n < to->n ? from->n : to->n) + 1,
			     sizeof(*d->changed));
	d->deleted = xcalloc(from->n + 1, sizeof(*d->deleted));
	while (i < from->n || j < to->n) {
		int c;

		if (i == from->n)
			c = 1;
		else if (j == to->n)
			c = -1;
		else
			c = strcmp(from->v[i].path, to->v[j].path);
		if (c < 0) {
			d->deleted[d->ndeleted++] = from->v[i++].path;
		} else if (c > 0) {
			d->added[d->nadded++] = to->v[j++].path;
		} else {
			if (strcmp(from->v[i].sha256, to->v[j].sha256) ||
			    from->v[i].size != to->v[j].size ||
			    from->v[i].mode != to->v[j].mode)
				d->changed[d->nchanged++] = to->v[j].path;
			i++;
			j++;
		}
	}
	return 0;
}

void manifest_delta_release(struct manifest_delta *d)
{
	free(d->added);
	free(d->changed);
	free(d->deleted);
	memset(d, 0, sizeof(*d));
}

static json_object *string_array(const char **v, size_t n)
{
	json_object *arr = json_object_new_array_ext((int)n);

	for (size_t i = 0; i < n; i++)
		json_object_array_add(arr, json_object_new_string(v[i]));
	return arr;
}

json_object *manifest_delta_to_json(const struct manifest_delta *d)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "added", string_array(d->added, d->nadded));
	json_object_object_add(o, "changed", string_array(d->changed, d->nchanged));
	json_object_object_add(o, "deleted", string_array(d->deleted, d->ndeleted));
	return o;
}
