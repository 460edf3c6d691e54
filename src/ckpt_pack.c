/* ckpt_pack.c - one checkpoint archive: name, manifest, writer, reader
 * (see ckpt_pack.h and docs/CHECKPOINTS.md). */
#include "ckpt_pack.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileutil.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

#define IO_BUF_SIZE 65536
/* zstd level 3: see docs/CHECKPOINTS.md for the gzip/zstd measurements */
#define ZSTD_LEVEL "3"
/* bytes a manifest may spend per file: a 1024-byte path escaped, a sha256,
 * a size, "executable", an "in" name, a source record, and JSON syntax */
#define PM_JSON_PER_FILE 2816
#define PM_JSON_FIXED 4096

/* ------------------------------------------------------------------ */
/* Names                                                              */

static int is_hex_lower(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int ckpt_sha_valid(const char *s)
{
	size_t i;

	if (!s)
		return 0;
	for (i = 0; i < SHA256_HEX_LEN; i++)
		if (!is_hex_lower(s[i]))
			return 0;
	return s[i] == '\0';
}

int ckpt_name_parse(const char *name, char sha_out[SHA256_HEX_LEN + 1])
{
	static const char suffix[] = ".tar.zst";
	const char *sha;

	if (!name || strlen(name) != 3 + SHA256_HEX_LEN + sizeof(suffix) - 1)
		return -1;
	sha = name + 3;
	if (!is_hex_lower(name[0]) || !is_hex_lower(name[1]) || name[2] != '/' ||
	    name[0] != sha[0] || name[1] != sha[1])
		return -1;
	for (size_t i = 0; i < SHA256_HEX_LEN; i++)
		if (!is_hex_lower(sha[i]))
			return -1;
	if (memcmp(sha + SHA256_HEX_LEN, suffix, sizeof(suffix) - 1))
		return -1;
	if (sha_out) {
		memcpy(sha_out, sha, SHA256_HEX_LEN);
		sha_out[SHA256_HEX_LEN] = '\0';
	}
	return 0;
}

void ckpt_name_from_sha(const char *sha, char name[CKPT_NAME_MAX])
{
	snprintf(name, CKPT_NAME_MAX, "%.2s/%.64s.tar.zst", sha, sha);
}

void ckpt_quote(struct strbuf *sb, const char *name)
{
	size_t len = strnlen(name, 201);

	strbuf_addch(sb, '"');
	for (size_t i = 0; i < len && i < 200; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			strbuf_addf(sb, "\\x%02x", c);
		else
			strbuf_addch(sb, (char)c);
	}
	strbuf_addstr(sb, len > 200 ? "\"..." : "\"");
}

/* ------------------------------------------------------------------ */
/* Manifest                                                           */

void ckpt_pm_init(struct ckpt_pm *pm)
{
	memset(pm, 0, sizeof(*pm));
	manifest_init(&pm->m);
}

void ckpt_pm_release(struct ckpt_pm *pm)
{
	if (pm->in)
		for (size_t i = 0; i < pm->m.n; i++)
			free(pm->in[i]);
	free(pm->in);
	free(pm->sources);
	manifest_release(&pm->m);
	ckpt_pm_init(pm);
}

void ckpt_pm_take_manifest(struct ckpt_pm *pm, struct manifest *out)
{
	if (pm->in)
		for (size_t i = 0; i < pm->m.n; i++)
			free(pm->in[i]);
	free(pm->in);
	pm->in = NULL;
	*out = pm->m;
	manifest_init(&pm->m);
}

size_t ckpt_pm_max_json(const struct ckpt_limits *lim)
{
	uint64_t cap = PM_JSON_FIXED + lim->max_entries * PM_JSON_PER_FILE;

	return cap > SIZE_MAX / 2 ? SIZE_MAX / 2 : (size_t)cap;
}

static const struct ckpt_pm_source *find_source(const struct ckpt_pm *pm,
						const char *name)
{
	size_t lo = 0, hi = pm->nsources;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(pm->sources[mid].name, name);

		if (!c)
			return &pm->sources[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int cmp_by_sha(const void *a, const void *b, void *ctx)
{
	const struct manifest_entry *v = ctx;
	const size_t *x = a, *y = b;
	int c = strcmp(v[*x].sha256, v[*y].sha256);

	if (c)
		return c;
	return *x < *y ? -1 : *x > *y;
}

size_t *ckpt_pm_order_by_sha(const struct manifest *m)
{
	size_t *idx = xcalloc(m->n + 1, sizeof(*idx));

	for (size_t i = 0; i < m->n; i++)
		idx[i] = i;
	if (m->n > 1)
		qsort_r(idx, m->n, sizeof(*idx), cmp_by_sha, m->v);
	return idx;
}

static int check_entries(struct ckpt_pm *pm, const struct ckpt_limits *lim,
			 struct strbuf *err)
{
	const struct manifest *m = &pm->m;
	uint64_t total = 0;
	struct tool_error te;

	if (m->n > lim->max_entries) {
		strbuf_addf(err, "%zu files, more than the limit of %llu", m->n,
			    (unsigned long long)lim->max_entries);
		return -EFBIG;
	}
	for (size_t i = 0; i < m->n; i++) {
		const struct manifest_entry *e = &m->v[i];

		if (ws_path_check(NULL, e->path, strlen(e->path), &te) < 0) {
			strbuf_addstr(err, "file ");
			ckpt_quote(err, e->path);
			strbuf_addf(err, ": %s", te.message);
			return -EINVAL;
		}
		if (i && strcmp(m->v[i - 1].path, e->path) >= 0) {
			strbuf_addstr(err, "file ");
			ckpt_quote(err, e->path);
			strbuf_addstr(err, ": files are not sorted or not unique");
			return -EINVAL;
		}
		if (!ckpt_sha_valid(e->sha256) ||
		    (e->mode != 0644 && e->mode != 0755)) {
			strbuf_addstr(err, "file ");
			ckpt_quote(err, e->path);
			strbuf_addstr(err, ": bad sha256 or mode");
			return -EINVAL;
		}
		if (e->size > lim->max_entry_size ||
		    e->size > lim->max_total_size - total) {
			strbuf_addstr(err, "file ");
			ckpt_quote(err, e->path);
			strbuf_addf(err, ": size %llu passes the limits",
				    (unsigned long long)e->size);
			return -EFBIG;
		}
		total += e->size;
	}
	/* a path that is also a folder of another path cannot be restored */
	for (size_t i = 0; i < m->n; i++) {
		struct strbuf prefix = STRBUF_INIT;
		const char *p = m->v[i].path, *slash;
		int clash = 0;

		for (slash = strchr(p, '/'); slash && !clash; slash = strchr(slash + 1, '/')) {
			strbuf_reset(&prefix);
			strbuf_add(&prefix, p, (size_t)(slash - p));
			clash = manifest_find(m, prefix.buf) != NULL;
		}
		strbuf_release(&prefix);
		if (clash) {
			strbuf_addstr(err, "file ");
			ckpt_quote(err, p);
			strbuf_addstr(err, ": a folder of it is also a file");
			return -EINVAL;
		}
	}
	return 0;
}

static int check_locations(struct ckpt_pm *pm, struct strbuf *err)
{
	const struct manifest *m = &pm->m;
	size_t *idx = ckpt_pm_order_by_sha(m);
	unsigned char *used = xcalloc(pm->nsources + 1, 1);
	int ret = -EINVAL;

	pm->stored_size = 0;
	pm->stored_count = 0;
	for (size_t s = 1; s < pm->nsources; s++)
		if (strcmp(pm->sources[s - 1].name, pm->sources[s].name) >= 0) {
			strbuf_addstr(err, "sources are not sorted or not unique");
			goto out;
		}
	for (size_t k = 0; k < m->n; k++) {
		size_t i = idx[k];
		const struct manifest_entry *e = &m->v[i];
		const char *in = pm->in[i];

		if (in) {
			const struct ckpt_pm_source *src = find_source(pm, in);

			if (ckpt_name_parse(in, NULL) < 0 || !src) {
				strbuf_addstr(err, "file ");
				ckpt_quote(err, e->path);
				strbuf_addstr(err, ": bad or unlisted source archive");
				goto out;
			}
			used[src - pm->sources] = 1;
		}
		if (k && !strcmp(m->v[idx[k - 1]].sha256, e->sha256)) {
			const struct manifest_entry *prev = &m->v[idx[k - 1]];
			const char *prev_in = pm->in[idx[k - 1]];

			/* one content, one size, one place */
			if (prev->size != e->size || !prev_in != !in ||
			    (in && strcmp(prev_in, in))) {
				strbuf_addstr(err, "file ");
				ckpt_quote(err, e->path);
				strbuf_addstr(err, ": same sha256 as another file but a different size or source");
				goto out;
			}
			continue;
		}
		if (!in) {
			pm->stored_size += e->size;
			pm->stored_count++;
		}
	}
	for (size_t s = 0; s < pm->nsources; s++)
		if (!used[s]) {
			strbuf_addstr(err, "source ");
			ckpt_quote(err, pm->sources[s].name);
			strbuf_addstr(err, " is not used by any file");
			goto out;
		}
	ret = 0;
out:
	free(used);
	free(idx);
	return ret;
}

int ckpt_pm_check(struct ckpt_pm *pm, const struct ckpt_limits *lim,
		  struct strbuf *err)
{
	int ret = check_entries(pm, lim, err);

	if (ret)
		return ret;
	if (!pm->in)
		pm->in = xcalloc(pm->m.n + 1, sizeof(*pm->in));
	return check_locations(pm, err);
}

int ckpt_pm_to_json(const struct ckpt_pm *pm, struct strbuf *out)
{
	json_object *root = json_object_new_object();
	json_object *files = json_object_new_array_ext((int)pm->m.n);
	json_object *sources = json_object_new_array_ext((int)pm->nsources);
	const char *s;
	size_t len;
	int ret;

	for (size_t i = 0; i < pm->m.n; i++) {
		const struct manifest_entry *e = &pm->m.v[i];
		json_object *o = json_object_new_object();

		json_object_object_add(o, "path", json_object_new_string(e->path));
		json_object_object_add(o, "size", json_object_new_uint64(e->size));
		json_object_object_add(o, "sha256", json_object_new_string(e->sha256));
		if (e->mode == 0755)
			json_object_object_add(o, "executable", json_object_new_boolean(1));
		if (pm->in && pm->in[i])
			json_object_object_add(o, "in", json_object_new_string(pm->in[i]));
		json_object_array_add(files, o);
	}
	for (size_t i = 0; i < pm->nsources; i++) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "name", json_object_new_string(pm->sources[i].name));
		json_object_object_add(o, "stored_size",
				       json_object_new_uint64(pm->sources[i].stored_size));
		json_object_array_add(sources, o);
	}
	json_object_object_add(root, "format", json_object_new_string(CKPT_FORMAT));
	json_object_object_add(root, "files", files);
	json_object_object_add(root, "sources", sources);
	s = json_object_to_json_string_length(root, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	ret = s && !strbuf_add(out, s, len) ? 0 : -ENOMEM;
	json_object_put(root);
	return ret;
}

/* Accepts exactly the keys listed (NULL-terminated), nothing else. */
static int only_keys(json_object *o, const char *const *allowed)
{
	json_object_object_foreach(o, key, val) {
		size_t i;

		(void)val;
		for (i = 0; allowed[i] && strcmp(allowed[i], key); i++)
			;
		if (!allowed[i])
			return 0;
	}
	return 1;
}

static int get_typed(json_object *o, const char *key, json_type type,
		     json_object **val)
{
	return json_object_object_get_ex(o, key, val) &&
	       json_object_is_type(*val, type);
}

/* A non-negative JSON integer that fits int64 (json-c reads larger ones
 * back clamped, which must not pass for a real size). */
static int get_size(json_object *o, const char *key, uint64_t *out)
{
	json_object *v;
	int64_t n;

	if (!get_typed(o, key, json_type_int, &v))
		return -1;
	errno = 0;
	n = json_object_get_int64(v);
	if (n < 0 || errno || (n == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX))
		return -1;
	*out = (uint64_t)n;
	return 0;
}

static int parse_file(json_object *o, struct ckpt_pm *pm, size_t i,
		      struct strbuf *err)
{
	static const char *const keys[] = { "path", "size", "sha256", "executable", "in", NULL };
	json_object *jpath, *jsha, *jexec, *jin = NULL;
	uint64_t size;
	unsigned mode = 0644;

	if (!json_object_is_type(o, json_type_object) || !only_keys(o, keys) ||
	    !get_typed(o, "path", json_type_string, &jpath) ||
	    !get_typed(o, "sha256", json_type_string, &jsha) ||
	    get_size(o, "size", &size) < 0)
		goto bad;
	/* a JSON string may hold \u0000: the path check sees the real length */
	if (strlen(json_object_get_string(jpath)) != (size_t)json_object_get_string_len(jpath) ||
	    !ckpt_sha_valid(json_object_get_string(jsha)))
		goto bad;
	if (json_object_object_get_ex(o, "executable", &jexec)) {
		if (!json_object_is_type(jexec, json_type_boolean))
			goto bad;
		if (json_object_get_boolean(jexec))
			mode = 0755;
	}
	if (json_object_object_get_ex(o, "in", &jin) &&
	    (!json_object_is_type(jin, json_type_string) ||
	     ckpt_name_parse(json_object_get_string(jin), NULL) < 0))
		goto bad;
	if (manifest_add(&pm->m, json_object_get_string(jpath), size,
			 json_object_get_string(jsha), mode) < 0)
		goto bad;
	/* in[i] exists only once entry i does, so release frees it */
	if (jin)
		pm->in[i] = xstrdup(json_object_get_string(jin));
	return 0;
bad:
	strbuf_addf(err, "manifest file %zu is malformed", i);
	return -EINVAL;
}

static int parse_sources(json_object *arr, struct ckpt_pm *pm, size_t max,
			 struct strbuf *err)
{
	static const char *const keys[] = { "name", "stored_size", NULL };
	size_t n = json_object_array_length(arr);

	if (n > max) {
		strbuf_addstr(err, "manifest lists too many sources");
		return -EFBIG;
	}
	pm->sources = xcalloc(n + 1, sizeof(*pm->sources));
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(arr, i), *jname;

		if (!json_object_is_type(o, json_type_object) || !only_keys(o, keys) ||
		    !get_typed(o, "name", json_type_string, &jname) ||
		    ckpt_name_parse(json_object_get_string(jname), NULL) < 0 ||
		    get_size(o, "stored_size", &pm->sources[i].stored_size) < 0) {
			strbuf_addf(err, "manifest source %zu is malformed", i);
			return -EINVAL;
		}
		snprintf(pm->sources[i].name, CKPT_NAME_MAX, "%s",
			 json_object_get_string(jname));
		pm->nsources++;
	}
	return 0;
}

int ckpt_pm_parse(const char *json, size_t len, const struct ckpt_limits *lim,
		  struct ckpt_pm *out, struct strbuf *err)
{
	static const char *const keys[] = { "format", "files", "sources", NULL };
	json_tokener *tok = NULL;
	json_object *root = NULL, *jfmt, *jfiles, *jsources;
	size_t n;
	int ret = -EINVAL;

	ckpt_pm_init(out);
	if (len > ckpt_pm_max_json(lim) || len > INT32_MAX) {
		strbuf_addstr(err, "manifest is too large");
		return -EFBIG;
	}
	if (memchr(json, '\0', len))
		goto bad;
	tok = json_tokener_new_ex(4);
	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, json, (int)len);
	if (!root || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != len)
		goto bad;
	if (!json_object_is_type(root, json_type_object) || !only_keys(root, keys) ||
	    !get_typed(root, "format", json_type_string, &jfmt) ||
	    strcmp(json_object_get_string(jfmt), CKPT_FORMAT) ||
	    !get_typed(root, "files", json_type_array, &jfiles) ||
	    !get_typed(root, "sources", json_type_array, &jsources))
		goto bad;
	n = json_object_array_length(jfiles);
	if (n > lim->max_entries) {
		strbuf_addf(err, "manifest lists %zu files, more than the limit of %llu",
			    n, (unsigned long long)lim->max_entries);
		ret = -EFBIG;
		goto out;
	}
	out->in = xcalloc(n + 1, sizeof(*out->in));
	for (size_t i = 0; i < n; i++) {
		ret = parse_file(json_object_array_get_idx(jfiles, i), out, i, err);
		if (ret)
			goto out;
	}
	ret = parse_sources(jsources, out, n, err);
	if (!ret)
		ret = ckpt_pm_check(out, lim, err);
	goto out;
bad:
	strbuf_addstr(err, "manifest is not valid " CKPT_FORMAT " JSON");
	ret = -EINVAL;
out:
	if (ret)
		ckpt_pm_release(out);
	json_object_put(root);
	if (tok)
		json_tokener_free(tok);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Writer                                                             */


static la_ssize_t writer_cb(struct archive *a, void *ctx, const void *buf,
			    size_t len)
{
	struct ckpt_pack_writer *w = ctx;
	int ret = fd_write_all(w->fd, buf, len);

	if (ret) {
		w->write_errno = -ret;
		archive_set_error(a, -ret, "write failed: %s", strerror(-ret));
		return -1;
	}
	sha256_update(&w->hash, buf, len);
	w->size += len;
	return (la_ssize_t)len;
}

static int archive_failed(struct archive *a, int err_no, struct strbuf *err,
			  const char *what)
{
	const char *msg = archive_error_string(a);

	strbuf_addf(err, "%s: %s", what, msg ? msg : "libarchive error");
	return err_no ? -err_no : -EIO;
}

int ckpt_pack_writer_open(struct ckpt_pack_writer *w, int fd, struct strbuf *err)
{
	memset(w, 0, sizeof(*w));
	w->fd = fd;
	sha256_init(&w->hash);
	w->a = archive_write_new();
	if (!w->a)
		return -ENOMEM;
	/* ARCHIVE_WARN would mean an external zstd program: never run one */
	if (archive_write_set_format_ustar(w->a) != ARCHIVE_OK ||
	    archive_write_add_filter_zstd(w->a) != ARCHIVE_OK ||
	    archive_write_set_filter_option(w->a, "zstd", "compression-level",
					    ZSTD_LEVEL) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(w->a, 1) != ARCHIVE_OK ||
	    archive_write_open2(w->a, w, NULL, writer_cb, NULL, NULL) != ARCHIVE_OK)
		return archive_failed(w->a, w->write_errno, err, "cannot start the archive");
	return 0;
}

/* Fixed metadata, so the same checkpoint always gives the same bytes. */
static struct archive_entry *new_entry(const char *path, uint64_t size)
{
	struct archive_entry *e = archive_entry_new();

	if (!e)
		return NULL;
	archive_entry_set_pathname(e, path);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)size);
	archive_entry_set_mtime(e, 0, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	return e;
}

static int write_header(struct ckpt_pack_writer *w, const char *path,
			uint64_t size, struct strbuf *err)
{
	struct archive_entry *e = new_entry(path, size);
	int ret = 0;

	if (!e)
		return -ENOMEM;
	if (archive_write_header(w->a, e) != ARCHIVE_OK)
		ret = archive_failed(w->a, w->write_errno, err, "cannot write an archive entry");
	archive_entry_free(e);
	return ret;
}

static int write_data(struct ckpt_pack_writer *w, const void *data, size_t len,
		      struct strbuf *err)
{
	la_ssize_t n = archive_write_data(w->a, data, len);

	if (n < 0 || (size_t)n != len)
		return archive_failed(w->a, w->write_errno, err, "cannot write archive data");
	return 0;
}

int ckpt_pack_write_manifest(struct ckpt_pack_writer *w, const char *json,
			     size_t len, struct strbuf *err)
{
	int ret = write_header(w, CKPT_MANIFEST_ENTRY, len, err);

	return ret ? ret : write_data(w, json, len, err);
}

static int file_changed(struct strbuf *err, const char *path, const char *why)
{
	strbuf_addstr(err, "file ");
	ckpt_quote(err, path);
	strbuf_addf(err, " changed while it was archived (%s)", why);
	return -EAGAIN;
}

int ckpt_pack_write_object(struct ckpt_pack_writer *w, const char *sha,
			   uint64_t size, int src_fd, const char *path,
			   struct strbuf *err)
{
	char entry[sizeof(CKPT_OBJECT_PREFIX) + SHA256_HEX_LEN];
	char got[SHA256_HEX_LEN + 1];
	unsigned char *buf = NULL;
	struct sha256 h;
	struct stat st;
	uint64_t left = size;
	int ret;

	if (fstat(src_fd, &st) < 0 || !S_ISREG(st.st_mode))
		return file_changed(err, path, "no longer a regular file");
	snprintf(entry, sizeof(entry), CKPT_OBJECT_PREFIX "%s", sha);
	ret = write_header(w, entry, size, err);
	if (ret)
		return ret;
	buf = malloc(IO_BUF_SIZE);
	if (!buf)
		return -ENOMEM;
	sha256_init(&h);
	/* one byte past the expected end proves the file did not grow */
	for (;;) {
		size_t want = left ? (left < IO_BUF_SIZE ? (size_t)left : IO_BUF_SIZE) : 1;
		ssize_t n = read(src_fd, buf, want);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			strbuf_addstr(err, "cannot read ");
			ckpt_quote(err, path);
			strbuf_addf(err, ": %s", strerror(errno));
			goto out;
		}
		if (!left) {
			if (n > 0)
				ret = file_changed(err, path, "it grew");
			break;
		}
		if (n == 0) {
			ret = file_changed(err, path, "it shrank");
			goto out;
		}
		sha256_update(&h, buf, (size_t)n);
		left -= (uint64_t)n;
		ret = write_data(w, buf, (size_t)n, err);
		if (ret)
			goto out;
	}
	if (!ret) {
		sha256_final_hex(&h, got);
		if (strcmp(got, sha))
			ret = file_changed(err, path, "its sha256 differs from the manifest");
	}
out:
	free(buf);
	return ret;
}

int ckpt_pack_writer_close(struct ckpt_pack_writer *w,
			   char sha_out[SHA256_HEX_LEN + 1], uint64_t *size,
			   struct strbuf *err)
{
	if (archive_write_close(w->a) != ARCHIVE_OK)
		return archive_failed(w->a, w->write_errno, err, "cannot finish the archive");
	sha256_final_hex(&w->hash, sha_out);
	*size = w->size;
	return 0;
}

void ckpt_pack_writer_free(struct ckpt_pack_writer *w)
{
	if (w->a)
		archive_write_free(w->a);
	w->a = NULL;
}

/* ------------------------------------------------------------------ */
/* Reader                                                             */

static int cmp_stored(const void *a, const void *b)
{
	const struct ckpt_stored_obj *x = a, *y = b;

	return strcmp(x->sha, y->sha);
}

static la_ssize_t reader_cb(struct archive *a, void *ctx, const void **out)
{
	struct ckpt_pack_reader *r = ctx;

	for (;;) {
		ssize_t n = read(r->fd, r->buf, IO_BUF_SIZE);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			archive_set_error(a, errno, "read failed");
			return -1;
		}
		sha256_update(&r->hash, r->buf, (size_t)n);
		*out = r->buf;
		return n;
	}
}

static int bad_entry(struct ckpt_pack_reader *r, struct strbuf *err,
		     const char *path, const char *why)
{
	strbuf_addf(err, "checkpoint %s: entry ", r->name);
	ckpt_quote(err, path ? path : "(unnamed)");
	strbuf_addf(err, ": %s", why);
	return -EBADMSG;
}

static int bad_archive(struct ckpt_pack_reader *r, struct strbuf *err,
		       const char *why)
{
	const char *msg = archive_error_string(r->a);

	strbuf_addf(err, "checkpoint %s: %s", r->name, why);
	if (msg)
		strbuf_addf(err, " (%s)", msg);
	return -EBADMSG;
}

/* The rules every entry obeys: a plain 0644 file with a known size, no
 * link target, no sparse map, no encryption. Anything else (folders,
 * symlinks, hard links, devices, FIFOs, setuid/setgid/sticky bits) is
 * refused, so nothing in an archive can ever describe more than bytes. */
static int check_entry(struct ckpt_pack_reader *r, struct archive_entry *e,
		       const char *path, uint64_t max_size, struct strbuf *err)
{
	la_int64_t size;

	if (!path)
		return bad_entry(r, err, NULL, "name is not readable");
	if (archive_entry_hardlink(e))
		return bad_entry(r, err, path, "hard links are refused");
	if (archive_entry_symlink(e) || archive_entry_filetype(e) == AE_IFLNK)
		return bad_entry(r, err, path, "symbolic links are refused");
	if (archive_entry_filetype(e) != AE_IFREG)
		return bad_entry(r, err, path, "only regular files are allowed");
	if ((archive_entry_mode(e) & 07777) != 0644)
		return bad_entry(r, err, path, "mode is not 0644 (setuid, setgid, sticky and other modes are refused)");
	if (archive_entry_is_encrypted(e) || archive_entry_sparse_count(e) > 0)
		return bad_entry(r, err, path, "encrypted or sparse entries are refused");
	size = archive_entry_size(e);
	if (!archive_entry_size_is_set(e) || size < 0)
		return bad_entry(r, err, path, "has no size");
	if ((uint64_t)size > max_size)
		return bad_entry(r, err, path, "is larger than the limit");
	return 0;
}

static int read_manifest_entry(struct ckpt_pack_reader *r, struct strbuf *err)
{
	struct strbuf json = STRBUF_INIT;
	struct archive_entry *e;
	const char *path;
	size_t max = ckpt_pm_max_json(r->lim);
	int ret;

	if (archive_read_next_header(r->a, &e) != ARCHIVE_OK)
		return bad_archive(r, err, "not a readable tar.zst archive");
	path = archive_entry_pathname(e);
	ret = check_entry(r, e, path, max, err);
	if (ret)
		return ret;
	if (strcmp(path, CKPT_MANIFEST_ENTRY))
		return bad_entry(r, err, path, "the first entry must be " CKPT_MANIFEST_ENTRY);
	strbuf_init_capped(&json, max);
	for (;;) {
		la_ssize_t n = archive_read_data(r->a, r->buf + IO_BUF_SIZE, IO_BUF_SIZE);

		if (n == 0)
			break;
		if (n < 0) {
			ret = bad_archive(r, err, "cannot read the manifest");
			goto out;
		}
		if (strbuf_add(&json, r->buf + IO_BUF_SIZE, (size_t)n) < 0) {
			ret = bad_entry(r, err, path, "is larger than the limit");
			goto out;
		}
	}
	if (json.len != (size_t)archive_entry_size(e)) {
		ret = bad_entry(r, err, path, "is truncated");
		goto out;
	}
	{
		struct strbuf why = STRBUF_INIT;

		ret = ckpt_pm_parse(json.buf, json.len, r->lim, &r->pm, &why);
		if (ret)
			strbuf_addf(err, "checkpoint %s: %s", r->name, why.buf);
		strbuf_release(&why);
	}
out:
	strbuf_release(&json);
	return ret;
}

static void collect_stored(struct ckpt_pack_reader *r)
{
	struct ckpt_stored_obj *v = xcalloc(r->pm.m.n + 1, sizeof(*v));
	size_t n = 0, k = 0;

	for (size_t i = 0; i < r->pm.m.n; i++)
		if (!r->pm.in[i]) {
			v[n].sha = r->pm.m.v[i].sha256;
			v[n++].size = r->pm.m.v[i].size;
		}
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_stored);
	for (size_t i = 0; i < n; i++)
		if (!k || strcmp(v[k - 1].sha, v[i].sha))
			v[k++] = v[i];
	r->stored = v;
	r->nstored = k;
}

static uint64_t max_archive_bytes(const struct ckpt_limits *lim)
{
	/* contents, manifest, a header and padding per entry, closing blocks */
	return lim->max_total_size + ckpt_pm_max_json(lim) +
	       (lim->max_entries + 2) * 1536 + 65536;
}

static int hash_whole_file(struct ckpt_pack_reader *r, struct strbuf *err)
{
	char got[SHA256_HEX_LEN + 1];
	struct sha256 h;

	sha256_init(&h);
	for (;;) {
		ssize_t n = read(r->fd, r->buf, IO_BUF_SIZE);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			strbuf_addf(err, "checkpoint %s: %s", r->name, strerror(e));
			return -e;
		}
		if (n == 0)
			break;
		sha256_update(&h, r->buf, (size_t)n);
	}
	sha256_final_hex(&h, got);
	if (strcmp(got, r->expected)) {
		strbuf_addf(err, "checkpoint %s: sha256 mismatch (the archive is corrupt or was replaced)",
			    r->name);
		return -EBADMSG;
	}
	if (lseek(r->fd, 0, SEEK_SET) < 0) {
		strbuf_addf(err, "checkpoint %s: %s", r->name, strerror(errno));
		return -errno;
	}
	return 0;
}

static int open_file(struct ckpt_pack_reader *r, int root_fd, struct strbuf *err)
{
	struct stat st;
	int e;

	/* O_NONBLOCK: a FIFO planted under an archive's name must not hang us */
	r->fd = openat(root_fd, r->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (r->fd < 0) {
		e = errno;
		if (e == ENOENT) {
			strbuf_addf(err, "checkpoint %s: archive does not exist", r->name);
			return -ENOENT;
		}
		strbuf_addf(err, "checkpoint %s: %s", r->name,
			    e == ELOOP ? "archive is a symbolic link" : strerror(e));
		return e == ELOOP ? -EBADMSG : -e;
	}
	if (fstat(r->fd, &st) < 0) {
		e = errno;
		strbuf_addf(err, "checkpoint %s: %s", r->name, strerror(e));
		return -e;
	}
	if (!S_ISREG(st.st_mode)) {
		strbuf_addf(err, "checkpoint %s: archive is not a regular file", r->name);
		return -EBADMSG;
	}
	if ((uint64_t)st.st_size > max_archive_bytes(r->lim)) {
		strbuf_addf(err, "checkpoint %s: archive is larger than the limits allow", r->name);
		return -EFBIG;
	}
	return 0;
}

int ckpt_pack_open(struct ckpt_pack_reader *r, int root_fd, const char *name,
		   const char *expected_sha256, const struct ckpt_limits *lim,
		   struct strbuf *err)
{
	char sha[SHA256_HEX_LEN + 1];
	int ret;

	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->lim = lim;
	ckpt_pm_init(&r->pm);
	if (!name || ckpt_name_parse(name, sha) < 0) {
		strbuf_addstr(err, "malformed checkpoint name ");
		ckpt_quote(err, name ? name : "");
		return -EINVAL;
	}
	snprintf(r->name, sizeof(r->name), "%s", name);
	if (!ckpt_sha_valid(expected_sha256) || strcmp(sha, expected_sha256)) {
		strbuf_addf(err, "checkpoint %s: expected sha256 is malformed or not the archive's name", name);
		return -EINVAL;
	}
	memcpy(r->expected, sha, sizeof(r->expected));
	r->buf = malloc(2 * IO_BUF_SIZE);
	if (!r->buf)
		return -ENOMEM;
	ret = open_file(r, root_fd, err);
	if (!ret)
		ret = hash_whole_file(r, err);
	if (ret)
		return ret;
	sha256_init(&r->hash);
	r->a = archive_read_new();
	if (!r->a)
		return -ENOMEM;
	/* zstd or no compression; ARCHIVE_WARN would mean an external program */
	if (archive_read_support_format_tar(r->a) != ARCHIVE_OK ||
	    archive_read_support_filter_zstd(r->a) != ARCHIVE_OK) {
		strbuf_addstr(err, "libarchive lacks built-in tar or zstd support");
		return -EIO;
	}
	if (archive_read_open2(r->a, r, NULL, reader_cb, NULL, NULL) != ARCHIVE_OK)
		return bad_archive(r, err, "not a readable tar.zst archive");
	ret = read_manifest_entry(r, err);
	if (ret)
		return ret;
	r->entries = 1;
	collect_stored(r);
	return 0;
}

int ckpt_pack_next(struct ckpt_pack_reader *r, struct strbuf *err)
{
	const struct ckpt_stored_obj *stored = r->stored;
	struct archive_entry *e;
	const char *path, *sha;
	int rc, ret;

	rc = archive_read_next_header(r->a, &e);
	if (rc == ARCHIVE_EOF) {
		if (r->next_stored < r->nstored) {
			strbuf_addf(err, "checkpoint %s: content %s is missing",
				    r->name, stored[r->next_stored].sha);
			return -EBADMSG;
		}
		return 0;
	}
	if (rc != ARCHIVE_OK)
		return bad_archive(r, err, "damaged archive");
	path = archive_entry_pathname(e);
	if (++r->entries > r->lim->max_entries + 1) {
		strbuf_addf(err, "checkpoint %s: more than %llu entries", r->name,
			    (unsigned long long)r->lim->max_entries + 1);
		return -EFBIG;
	}
	ret = check_entry(r, e, path, r->lim->max_entry_size, err);
	if (ret)
		return ret;
	sha = path + sizeof(CKPT_OBJECT_PREFIX) - 1;
	if (strncmp(path, CKPT_OBJECT_PREFIX, sizeof(CKPT_OBJECT_PREFIX) - 1) ||
	    !ckpt_sha_valid(sha))
		return bad_entry(r, err, path, "not a content object");
	/* each expected object exactly once, in order: anything else is a
	 * duplicate, an object the manifest does not hold, or a reordering */
	if (r->next_stored >= r->nstored || strcmp(sha, stored[r->next_stored].sha))
		return bad_entry(r, err, path, "unexpected, duplicate or out-of-order object");
	if ((uint64_t)archive_entry_size(e) != stored[r->next_stored].size)
		return bad_entry(r, err, path, "size differs from the manifest");
	memcpy(r->obj_sha, sha, sizeof(r->obj_sha));
	r->obj_size = stored[r->next_stored].size;
	r->obj_read = 0;
	r->next_stored++;
	return 1;
}

int ckpt_pack_copy(struct ckpt_pack_reader *r, ckpt_sink_fn sink, void *ctx,
		   struct strbuf *err)
{
	char got[SHA256_HEX_LEN + 1];
	unsigned char *data = r->buf + IO_BUF_SIZE;
	uint64_t total = 0;
	struct sha256 h;
	char entry[sizeof(CKPT_OBJECT_PREFIX) + SHA256_HEX_LEN];

	snprintf(entry, sizeof(entry), CKPT_OBJECT_PREFIX "%s", r->obj_sha);
	if (r->obj_read)
		return bad_entry(r, err, entry, "read twice");
	r->obj_read = 1;
	sha256_init(&h);
	for (;;) {
		la_ssize_t n = archive_read_data(r->a, data, IO_BUF_SIZE);

		if (n == 0)
			break;
		if (n < 0)
			return bad_archive(r, err, "damaged archive");
		total += (uint64_t)n;
		if (total > r->obj_size)
			return bad_entry(r, err, entry, "holds more bytes than its size");
		sha256_update(&h, data, (size_t)n);
		if (sink) {
			int ret = sink(ctx, data, (size_t)n);

			if (ret < 0)
				return ret;
		}
	}
	if (total != r->obj_size)
		return bad_entry(r, err, entry, "is truncated");
	sha256_final_hex(&h, got);
	if (strcmp(got, r->obj_sha))
		return bad_entry(r, err, entry, "content does not match its sha256");
	return 0;
}

int ckpt_pack_finish(struct ckpt_pack_reader *r, struct strbuf *err)
{
	char got[SHA256_HEX_LEN + 1];

	for (;;) {
		ssize_t n = read(r->fd, r->buf, IO_BUF_SIZE);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			strbuf_addf(err, "checkpoint %s: %s", r->name, strerror(e));
			return -e;
		}
		if (n == 0)
			break;
		sha256_update(&r->hash, r->buf, (size_t)n);
	}
	sha256_final_hex(&r->hash, got);
	if (strcmp(got, r->expected)) {
		strbuf_addf(err, "checkpoint %s: archive changed while it was read", r->name);
		return -EBADMSG;
	}
	return 0;
}

void ckpt_pack_close(struct ckpt_pack_reader *r)
{
	if (r->a)
		archive_read_free(r->a);
	if (r->fd >= 0)
		close(r->fd);
	free(r->buf);
	free(r->stored);
	ckpt_pm_release(&r->pm);
	r->a = NULL;
	r->fd = -1;
	r->buf = NULL;
	r->stored = NULL;
}

/* ------------------------------------------------------------------ */
/* Contents across archives                                           */

static int cmp_by_source(const void *a, const void *b, void *ctx)
{
	const struct ckpt_pm *pm = ctx;
	const size_t *x = a, *y = b;
	int c = strcmp(pm->in[*x], pm->in[*y]);

	return c ? c : strcmp(pm->m.v[*x].sha256, pm->m.v[*y].sha256);
}

/* Reads the wanted contents (entry indices, ascending sha, distinct) from
 * the archive src, which holds them in the same order. */
static int fetch_from(const struct ckpt_pack_reader *self, int root_fd,
		      const char *src, const size_t *want, size_t nwant,
		      ckpt_got_fn got, void *ctx, struct strbuf *err)
{
	const struct manifest *m = &self->pm.m;
	struct ckpt_pack_reader r;
	char sha[SHA256_HEX_LEN + 1];
	size_t k = 0;
	int ret;

	if (ckpt_name_parse(src, sha) < 0)
		return -EINVAL;
	ret = ckpt_pack_open(&r, root_fd, src, sha, self->lim, err);
	/* the checkpoint exists but is damaged: not the caller's -ENOENT */
	if (ret == -ENOENT) {
		strbuf_addf(err, " (needed by checkpoint %s)", self->name);
		ret = -EBADMSG;
	}
	while (!ret && k < nwant) {
		int c;

		ret = ckpt_pack_next(&r, err);
		if (ret <= 0)
			break;
		ret = 0;
		c = strcmp(r.obj_sha, m->v[want[k]].sha256);
		if (c < 0)
			continue;
		if (c > 0)
			break;
		ret = got(ctx, &r, err);
		k++;
	}
	if (!ret && k < nwant) {
		strbuf_addf(err, "checkpoint %s: content %s of file ", self->name,
			    m->v[want[k]].sha256);
		ckpt_quote(err, m->v[want[k]].path);
		strbuf_addf(err, " is missing from %s", src);
		ret = -EBADMSG;
	}
	if (!ret)
		ret = ckpt_pack_finish(&r, err);
	ckpt_pack_close(&r);
	return ret;
}

static int cmp_sha_key(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

static int wanted(const struct ckpt_want *want, const char *sha)
{
	if (!want)
		return 1;
	return want->n && bsearch(sha, want->shas, want->n, sizeof(*want->shas), cmp_sha_key);
}

int ckpt_pack_fetch(struct ckpt_pack_reader *self, int root_fd,
		    const struct ckpt_want *want, ckpt_got_fn got, void *ctx,
		    struct strbuf *err)
{
	const struct ckpt_pm *pm = &self->pm;
	size_t *idx = xcalloc(pm->m.n + 1, sizeof(*idx));
	size_t n = 0, start, self_wanted = 0, self_got = 0;
	int ret = 0;

	for (size_t k = 0; k < self->nstored; k++)
		self_wanted += wanted(want, self->stored[k].sha) != 0;
	for (size_t i = 0; i < pm->m.n; i++)
		if (pm->in[i] && wanted(want, pm->m.v[i].sha256))
			idx[n++] = i;
	/* this archive's contents, in its order: all of them, through to the
	 * end of the archive (so nothing stray follows), or up to the last one
	 * wanted */
	while (!want || self_got < self_wanted) {
		ret = ckpt_pack_next(self, err);
		if (ret <= 0)
			break;
		ret = 0;
		if (!wanted(want, self->obj_sha))
			continue;
		ret = got(ctx, self, err);
		if (ret)
			break;
		self_got++;
	}
	if (!ret)
		ret = ckpt_pack_finish(self, err);
	/* the other archives, each read once, its wanted contents in order */
	if (n > 1)
		qsort_r(idx, n, sizeof(*idx), cmp_by_source, (void *)pm);
	for (start = 0; !ret && start < n;) {
		size_t end = start, k = start;

		while (end < n && !strcmp(pm->in[idx[end]], pm->in[idx[start]]))
			end++;
		for (size_t j = start + 1; j < end; j++)
			if (strcmp(pm->m.v[idx[j]].sha256, pm->m.v[idx[k]].sha256))
				idx[++k] = idx[j];
		ret = fetch_from(self, root_fd, pm->in[idx[start]], idx + start,
				 k - start + 1, got, ctx, err);
		start = end;
	}
	free(idx);
	return ret;
}
