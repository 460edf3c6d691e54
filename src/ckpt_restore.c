/* ckpt_restore.c - safe extraction and the atomic workspace swap (see
 * ckpt_restore.h and docs/CHECKPOINTS.md). */
#include "ckpt_restore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_crash.h"
#include "ckpt_pack.h"
#include "ckpt_store.h"
#include "fileutil.h"
#include "log.h"
#include "manifest.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

/*
 * No libarchive disk writer is involved: tar headers only name contents
 * ("objects/<sha256>"), and every file is created from the manifest, which
 * ckpt_pm_check validated (relative, no "." or ".." or empty components, no
 * control characters, 0644/0755, capped). Files are created below the
 * staging folder's fd, one component at a time, every folder opened with
 * O_NOFOLLOW and every file with O_CREAT|O_EXCL|O_NOFOLLOW, so not even a
 * bug in those checks could follow a link or overwrite a file. The archive
 * cannot ask for links, devices, FIFOs, owners or special mode bits: there
 * is no way to express them.
 */
struct extract {
	int dfd; /* the staging folder */
	const struct ckpt_pm *pm;
	size_t *by_sha; /* entry indices ordered by sha256 */
	size_t written;
	int half_reported;
	struct strbuf made_dirs; /* NUL-separated relative paths to fsync */
	unsigned char *copy_buf;
};


static int entry_error(struct strbuf *err, const char *path, const char *what, int e)
{
	strbuf_addstr(err, "file ");
	ckpt_quote(err, path);
	strbuf_addf(err, ": %s: %s", what, strerror(e));
	return -e;
}

/* Opens (creating as needed, exactly 0755) the folder below root_fd that
 * holds path; *base is the last component. The folders made are appended to
 * made (NUL-separated, relative to root_fd) so the caller can fsync them.
 * Returns an fd that the caller closes unless it is root_fd. */
static int open_parent_at(int root_fd, const char *path, const char **base,
			  struct strbuf *made, struct strbuf *err)
{
	struct strbuf comp = STRBUF_INIT;
	const char *p = path, *slash;
	int cur = root_fd;

	while ((slash = strchr(p, '/'))) {
		int next, created;

		strbuf_reset(&comp);
		strbuf_add(&comp, p, (size_t)(slash - p));
		created = mkdirat(cur, comp.buf, 0755) == 0;
		if (!created && errno != EEXIST)
			goto fail;
		next = openat(cur, comp.buf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
			goto fail;
		if (created) {
			/* exactly 0755, whatever the umask */
			if (fchmod(next, 0755) < 0) {
				close(next);
				goto fail;
			}
			strbuf_add(made, path, (size_t)(slash - path));
			strbuf_addch(made, '\0');
		}
		if (cur != root_fd)
			close(cur);
		cur = next;
		p = slash + 1;
	}
	strbuf_release(&comp);
	*base = p;
	return cur;
fail:
	{
		int e = errno;

		if (cur != root_fd)
			close(cur);
		strbuf_release(&comp);
		return entry_error(err, path, "cannot create its folder", e);
	}
}

static int create_file(struct extract *x, const char *path, struct strbuf *err)
{
	const char *base = NULL;
	int pfd = open_parent_at(x->dfd, path, &base, &x->made_dirs, err), fd, e;

	if (pfd < 0)
		return pfd;
	if (!base) { /* open_parent always names it; never create "" */
		if (pfd != x->dfd)
			close(pfd);
		return entry_error(err, path, "cannot create", EINVAL);
	}
	fd = openat(pfd, base, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	e = errno;
	if (pfd != x->dfd)
		close(pfd);
	if (fd < 0)
		return entry_error(err, path, "cannot create", e);
	return fd;
}

static int finish_file(int fd, const struct manifest_entry *e, struct strbuf *err)
{
	if (fchmod(fd, e->mode) < 0 || fsync(fd) < 0)
		return entry_error(err, e->path, "cannot write", errno);
	return 0;
}

struct fd_sink {
	int fd;
	int err; /* errno of a failed write */
};

static int sink_fd(void *ctx, const void *data, size_t len)
{
	struct fd_sink *s = ctx;
	int ret = fd_write_all(s->fd, data, len);

	if (ret)
		s->err = -ret;
	return ret;
}

/* Another path with the same content: copied from the first one. */
static int copy_file(struct extract *x, int from, const struct manifest_entry *e,
		     struct strbuf *err)
{
	off_t off = 0;
	int fd = create_file(x, e->path, err), ret = 0;

	if (fd < 0)
		return fd;
	for (;;) {
		ssize_t n = pread(from, x->copy_buf, 65536, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = entry_error(err, e->path, "cannot copy", errno);
			break;
		}
		if (n == 0)
			break;
		ret = fd_write_all(fd, x->copy_buf, (size_t)n);
		if (ret) {
			ret = entry_error(err, e->path, "cannot write", -ret);
			break;
		}
		off += n;
	}
	if (!ret)
		ret = finish_file(fd, e, err);
	close(fd);
	return ret;
}

static int got_content(void *ctx, struct ckpt_pack_reader *r, struct strbuf *err)
{
	struct extract *x = ctx;
	const struct manifest *m = &x->pm->m;
	size_t lo = 0, hi = m->n, end;
	const struct manifest_entry *first;
	struct fd_sink sink = { -1, 0 };
	int fd, ret, is_first = x->written == 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(m->v[x->by_sha[mid]].sha256, r->obj_sha) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == m->n || strcmp(m->v[x->by_sha[lo]].sha256, r->obj_sha)) {
		strbuf_addf(err, "checkpoint %s: content %s belongs to no file", r->name, r->obj_sha);
		return -EBADMSG;
	}
	first = &m->v[x->by_sha[lo]];
	fd = create_file(x, first->path, err);
	if (fd < 0)
		return fd;
	if (is_first)
		ckpt_crash_point("ckpt_extract", 3);
	sink.fd = fd;
	ret = ckpt_pack_copy(r, sink_fd, &sink, err);
	if (ret && sink.err)
		ret = entry_error(err, first->path, "cannot write", sink.err);
	if (!ret && is_first)
		ckpt_crash_point("ckpt_extract", 4);
	if (!ret)
		ret = finish_file(fd, first, err);
	if (!ret && is_first)
		ckpt_crash_point("ckpt_extract", 5);
	x->written += !ret;
	for (end = lo + 1; !ret && end < m->n &&
	     !strcmp(m->v[x->by_sha[end]].sha256, r->obj_sha); end++) {
		ret = copy_file(x, fd, &m->v[x->by_sha[end]], err);
		x->written += !ret;
	}
	close(fd);
	if (!ret && !x->half_reported && m->n > 1 && 2 * x->written >= m->n) {
		x->half_reported = 1;
		ckpt_crash_point("ckpt_extract", 6);
	}
	return ret;
}

/* Every folder made, then staging itself and its parent: the tree is
 * durable before the swap can make it the workspace. */
static int fsync_dirs(struct extract *x, const char *staging_dir, struct strbuf *err)
{
	size_t off = 0;

	while (off < x->made_dirs.len) {
		const char *rel = x->made_dirs.buf + off;
		int fd = openat(x->dfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (fd < 0 || fsync(fd) < 0) {
			int e = errno;

			if (fd >= 0)
				close(fd);
			return entry_error(err, rel, "cannot fsync folder", e);
		}
		close(fd);
		off += strlen(rel) + 1;
	}
	ckpt_crash_point("ckpt_extract", 8);
	if (fsync(x->dfd) < 0 || fsync_parent_dir(staging_dir) < 0) {
		strbuf_addf(err, "cannot fsync %s: %s", staging_dir, strerror(errno));
		return -EIO;
	}
	return 0;
}

static int make_staging(const char *staging_dir, struct strbuf *err)
{
	int fd;

	if (mkdir(staging_dir, 0755) < 0) {
		int e = errno;

		strbuf_addf(err, "cannot create staging folder %s: %s", staging_dir,
			    e == EEXIST ? "it already exists" : strerror(e));
		return -e;
	}
	fd = open(staging_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fchmod(fd, 0755) < 0) {
		int e = errno;

		strbuf_addf(err, "cannot open staging folder %s: %s", staging_dir, strerror(e));
		if (fd >= 0)
			close(fd);
		rmdir(staging_dir);
		return -e;
	}
	return fd;
}

int ckpt_extract(struct ckpt_store *st, const char *name,
		 const char *expected_sha256, const char *staging_dir,
		 struct strbuf *err)
{
	struct ckpt_pack_reader r;
	struct extract x;
	int ret;

	memset(&x, 0, sizeof(x));
	x.dfd = -1;
	strbuf_init(&x.made_dirs);
	ret = ckpt_pack_open(&r, st->root_fd, name, expected_sha256, &st->lim, err);
	if (ret)
		goto out;
	ckpt_crash_point("ckpt_extract", 1);
	x.dfd = make_staging(staging_dir, err);
	if (x.dfd < 0) {
		ret = x.dfd;
		goto out;
	}
	ckpt_crash_point("ckpt_extract", 2);
	x.pm = &r.pm;
	x.by_sha = ckpt_pm_order_by_sha(&r.pm.m);
	x.copy_buf = malloc(65536);
	if (!x.copy_buf) {
		ret = -ENOMEM;
		goto out;
	}
	ret = ckpt_pack_fetch(&r, st->root_fd, NULL, got_content, &x, err);
	if (!ret && x.written != r.pm.m.n) {
		strbuf_addf(err, "checkpoint %s: %zu of %zu files restored", name,
			    x.written, r.pm.m.n);
		ret = -EBADMSG;
	}
	if (ret)
		goto out;
	ckpt_crash_point("ckpt_extract", 7);
	ret = fsync_dirs(&x, staging_dir, err);
	if (!ret)
		ckpt_crash_point("ckpt_extract", 9);
out:
	if (x.dfd >= 0) {
		close(x.dfd);
		if (ret)
			rm_rf(staging_dir);
	}
	ckpt_pack_close(&r);
	free(x.by_sha);
	free(x.copy_buf);
	strbuf_release(&x.made_dirs);
	return ret;
}

/* The folder holding path ("." for a bare name); path must not end in '/'. */
static int parent_of(const char *path, struct strbuf *out)
{
	const char *slash = strrchr(path, '/');
	size_t len = strlen(path);

	if (!len || path[len - 1] == '/')
		return -EINVAL;
	if (!slash)
		strbuf_addstr(out, ".");
	else
		strbuf_add(out, path, slash == path ? 1 : (size_t)(slash - path));
	return 0;
}

static int check_swap(const char *workspace_dir, const char *staging_dir,
		      struct strbuf *parent, int *exists, struct strbuf *err)
{
	struct strbuf sparent = STRBUF_INIT;
	struct stat a, b, s;
	int ret = -EINVAL;

	if (parent_of(workspace_dir, parent) < 0 || parent_of(staging_dir, &sparent) < 0) {
		strbuf_addstr(err, "workspace and staging must be folder paths without a trailing '/'");
		goto out;
	}
	if (stat(parent->buf, &a) < 0 || stat(sparent.buf, &b) < 0 ||
	    a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		strbuf_addf(err, "%s and %s are not in the same folder", workspace_dir, staging_dir);
		ret = -EXDEV;
		goto out;
	}
	if (lstat(staging_dir, &s) < 0 || !S_ISDIR(s.st_mode)) {
		strbuf_addf(err, "staging %s is not a folder", staging_dir);
		goto out;
	}
	*exists = lstat(workspace_dir, &s) == 0;
	if (!*exists && errno != ENOENT) {
		ret = -errno;
		strbuf_addf(err, "cannot stat %s: %s", workspace_dir, strerror(errno));
		goto out;
	}
	if (*exists && !S_ISDIR(s.st_mode)) {
		strbuf_addf(err, "workspace %s is not a folder", workspace_dir);
		goto out;
	}
	ret = 0;
out:
	strbuf_release(&sparent);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Folders a restore keeps                                            */

/* Bounds of the search for kept folders in a workspace, which need not be
 * within any limit (a command may have filled it with anything). */
#define KEEP_SCAN_MAX_ENTRIES 200000
#define KEEP_SCAN_MAX_DEPTH 64
#define KEEP_MAX 1000          /* kept folders per restore */
#define UNTRACKED_LIST_MAX 1000 /* untracked entries named in a report */
#define HOLD_PREFIX ".kept-"

static int name_in(const char *const *names, const char *name)
{
	for (; names && *names; names++)
		if (!strcmp(*names, name))
			return 1;
	return 0;
}

static void list_add(char ***v, size_t *n, const char *path, size_t len)
{
	*v = xrealloc(*v, *n + 2, sizeof(**v));
	(*v)[*n] = xcalloc(1, len + 1);
	memcpy((*v)[*n], path, len);
	(*n)++;
	(*v)[*n] = NULL;
}

static void add_untracked(struct ckpt_keep *k, const char *path, int is_dir)
{
	k->untracked_count++;
	if (k->nuntracked >= UNTRACKED_LIST_MAX)
		return;
	list_add(&k->untracked, &k->nuntracked, path, strlen(path));
	if (is_dir) { /* "web/cache/": a whole folder goes */
		size_t len = strlen(k->untracked[k->nuntracked - 1]);

		k->untracked[k->nuntracked - 1] = xrealloc(k->untracked[k->nuntracked - 1], len + 2, 1);
		memcpy(k->untracked[k->nuntracked - 1] + len, "/", 2);
	}
}

void ckpt_keep_init(struct ckpt_keep *k)
{
	memset(k, 0, sizeof(*k));
}

void ckpt_keep_release(struct ckpt_keep *k)
{
	for (size_t i = 0; i < k->nkept; i++)
		free(k->kept[i]);
	for (size_t i = 0; i < k->nuntracked; i++)
		free(k->untracked[i]);
	free(k->kept);
	free(k->untracked);
	ckpt_keep_init(k);
}

struct scan {
	const char *const *kept_extra, *const *dropped;
	struct ckpt_keep *out;
	struct strbuf rel;
	size_t visited;
};

/* Files that can be tracked are regular files with names a manifest can
 * hold, in folders that are not kept; everything else a restore removes
 * (symlinks, special files, unnameable entries) is untracked. */
static int scan_dir(struct scan *s, int dfd, unsigned depth, struct strbuf *err)
{
	DIR *d = fdopendir(dfd);
	struct dirent *de;
	int ret = 0;

	if (!d) {
		ret = -errno;
		close(dfd);
		strbuf_addf(err, "cannot read folder \"%s\": %s", strbuf_str(&s->rel), strerror(-ret));
		return ret;
	}
	while (!ret && (errno = 0, de = readdir(d))) {
		size_t base_len = s->rel.len;
		struct tool_error te;
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (++s->visited > KEEP_SCAN_MAX_ENTRIES) {
			s->out->truncated = 1;
			break;
		}
		if (base_len)
			strbuf_addch(&s->rel, '/');
		strbuf_addstr(&s->rel, de->d_name);
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			/* removed meanwhile: nothing left to keep or remove */
		} else if (ws_path_check(NULL, s->rel.buf, s->rel.len, &te) < 0) {
			add_untracked(s->out, s->rel.buf, S_ISDIR(st.st_mode));
		} else if (S_ISDIR(st.st_mode) &&
			   (ws_is_ignored(NULL, de->d_name) || name_in(s->kept_extra, de->d_name))) {
			if (s->out->nkept < KEEP_MAX)
				list_add(&s->out->kept, &s->out->nkept, s->rel.buf, s->rel.len);
			else
				s->out->truncated = 1;
		} else if (S_ISDIR(st.st_mode) && name_in(s->dropped, de->d_name)) {
			add_untracked(s->out, s->rel.buf, 1);
		} else if (S_ISDIR(st.st_mode)) {
			int sub = depth < KEEP_SCAN_MAX_DEPTH
					  ? openat(dirfd(d), de->d_name,
						   O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
					  : -1;

			if (sub >= 0)
				ret = scan_dir(s, sub, depth + 1, err);
			else if (depth >= KEEP_SCAN_MAX_DEPTH)
				s->out->truncated = 1;
		} else if (!S_ISREG(st.st_mode)) {
			add_untracked(s->out, s->rel.buf, 0);
		}
		strbuf_setlen(&s->rel, base_len);
	}
	if (!ret && errno) {
		ret = -errno;
		strbuf_addf(err, "cannot read folder \"%s\": %s", strbuf_str(&s->rel), strerror(-ret));
	}
	closedir(d);
	return ret;
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int ckpt_keep_scan(const char *workspace_dir, const char *const *kept_extra,
		   const char *const *dropped, struct ckpt_keep *out, struct strbuf *err)
{
	struct scan s;
	int fd, ret;

	ckpt_keep_init(out);
	s.kept_extra = kept_extra;
	s.dropped = dropped;
	s.out = out;
	s.visited = 0;
	fd = open(workspace_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		if (ret == -ENOENT)
			return 0; /* no workspace yet: nothing to keep */
		strbuf_addf(err, "cannot open %s: %s", workspace_dir, strerror(-ret));
		return ret;
	}
	strbuf_init(&s.rel);
	ret = scan_dir(&s, fd, 1, err);
	strbuf_release(&s.rel);
	if (ret) {
		ckpt_keep_release(out);
		return ret;
	}
	if (out->nkept > 1)
		qsort(out->kept, out->nkept, sizeof(*out->kept), cmp_strp);
	if (out->nuntracked > 1)
		qsort(out->untracked, out->nuntracked, sizeof(*out->untracked), cmp_strp);
	return 0;
}

/* First entry of m whose path is >= key (m is sorted). */
static size_t lower_bound(const struct manifest *m, const char *key)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(m->v[mid].path, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* 1 when a tree made of m's files leaves room for folder rel: no file at
 * rel or inside it, and no file where one of its parent folders goes. */
static int room_in_manifest(const struct manifest *m, const char *rel)
{
	struct strbuf key = STRBUF_INIT;
	size_t i;
	int room = !manifest_find(m, rel);

	for (const char *slash = strchr(rel, '/'); room && slash; slash = strchr(slash + 1, '/')) {
		strbuf_reset(&key);
		strbuf_add(&key, rel, (size_t)(slash - rel));
		room = !manifest_find(m, key.buf);
	}
	strbuf_reset(&key);
	strbuf_addf(&key, "%s/", rel);
	i = lower_bound(m, key.buf);
	if (room && i < m->n && !strncmp(m->v[i].path, key.buf, key.len))
		room = 0;
	strbuf_release(&key);
	return room;
}

void ckpt_keep_against(struct ckpt_keep *k, const struct manifest *target)
{
	size_t n = 0;

	for (size_t i = 0; i < k->nkept; i++) {
		if (room_in_manifest(target, k->kept[i])) {
			k->kept[n++] = k->kept[i];
			continue;
		}
		add_untracked(k, k->kept[i], 1);
		free(k->kept[i]);
	}
	k->nkept = n;
	if (k->kept)
		k->kept[n] = NULL;
	if (k->nuntracked > 1)
		qsort(k->untracked, k->nuntracked, sizeof(*k->untracked), cmp_strp);
}

/* 1 when the tree at root_fd leaves room for folder rel (the same rule as
 * room_in_manifest, asked of the staged tree itself). */
static int room_in_tree(int root_fd, const char *rel)
{
	struct strbuf key = STRBUF_INIT;
	struct stat st;
	int room = 1;

	for (const char *slash = strchr(rel, '/'); slash; slash = strchr(slash + 1, '/')) {
		strbuf_reset(&key);
		strbuf_add(&key, rel, (size_t)(slash - rel));
		if (fstatat(root_fd, key.buf, &st, AT_SYMLINK_NOFOLLOW) < 0)
			goto out; /* absent: it and the rest get created */
		if (!S_ISDIR(st.st_mode)) {
			room = 0;
			goto out;
		}
	}
	room = fstatat(root_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT;
out:
	strbuf_release(&key);
	return room;
}

static int fsync_at(int root_fd, const char *rel)
{
	int fd = openat(root_fd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), ret = 0;

	if (fd < 0 || fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	return ret;
}

/* fsyncs every folder listed in made (NUL-separated), then the folder that
 * holds rel: what a rename into rel changed. */
static int fsync_made(int root_fd, const struct strbuf *made, const char *rel)
{
	struct strbuf dir = STRBUF_INIT;
	const char *slash = strrchr(rel, '/');
	int ret = 0;

	for (size_t off = 0; !ret && off < made->len; off += strlen(made->buf + off) + 1)
		ret = fsync_at(root_fd, made->buf + off);
	if (slash)
		strbuf_add(&dir, rel, (size_t)(slash - rel));
	else
		strbuf_addstr(&dir, ".");
	if (!ret)
		ret = fsync_at(root_fd, dir.buf);
	strbuf_release(&dir);
	return ret;
}

/* Moves from_fd/from_rel to to_fd/to_rel, creating to_rel's folders, and
 * makes both sides durable. -EEXIST when to_rel is taken. */
static int move_durably(int from_fd, const char *from_rel, int to_fd, const char *to_rel,
			struct strbuf *err)
{
	struct strbuf made = STRBUF_INIT;
	const char *base = NULL;
	int pfd, ret = 0;

	pfd = open_parent_at(to_fd, to_rel, &base, &made, err);
	if (pfd < 0) {
		strbuf_release(&made);
		return pfd;
	}
	if (renameat2(from_fd, from_rel, pfd, base, RENAME_NOREPLACE) < 0)
		ret = entry_error(err, to_rel, "cannot move it", errno);
	if (pfd != to_fd)
		close(pfd);
	if (!ret && fsync_made(to_fd, &made, to_rel) < 0)
		ret = entry_error(err, to_rel, "cannot fsync its folder", errno);
	strbuf_reset(&made);
	if (!ret && fsync_made(from_fd, &made, from_rel) < 0)
		ret = entry_error(err, from_rel, "cannot fsync its folder", errno);
	strbuf_release(&made);
	return ret;
}

/*
 * A holding folder (<parent>/.kept-<workspace name>-<random>) keeps the
 * folders that cross a swap while they are out of both trees: kept folder
 * i is "<i>" in it, and "<i>.path" (written first, durably) says where it
 * belongs. The name is not the staging folder's, so a caller's cleanup of
 * crashed staging folders never removes kept folders with it.
 */
struct holding {
	struct strbuf path;
	int fd;
};

static int hold_open(const char *parent, const char *ws_base, struct holding *h,
		     struct strbuf *err)
{
	unsigned char rnd[6];
	char hex[13];

	if (random_bytes(rnd, sizeof(rnd)) < 0) {
		strbuf_addstr(err, "getrandom failed");
		return -EIO;
	}
	hex_encode(rnd, sizeof(rnd), hex);
	strbuf_addf(&h->path, "%s/" HOLD_PREFIX "%s-%s", parent, ws_base, hex);
	h->fd = make_staging(h->path.buf, err);
	if (h->fd < 0)
		return h->fd;
	if (fsync_parent_dir(h->path.buf) < 0) {
		strbuf_addf(err, "cannot fsync %s: %s", parent, strerror(errno));
		return -EIO;
	}
	return 0;
}

static void hold_close(struct holding *h)
{
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
	strbuf_release(&h->path);
}

/* Moves workspace/rel into the holding folder as number i. */
static int hold_one(struct holding *h, int ws_fd, const char *rel, size_t i,
		    struct strbuf *err)
{
	char num[32], where[48];
	int ret;

	snprintf(num, sizeof(num), "%zu", i);
	snprintf(where, sizeof(where), "%zu.path", i);
	ret = file_write_atomic_at(h->fd, where, rel, strlen(rel), 0644);
	if (ret)
		return entry_error(err, rel, "cannot record where it belongs", -ret);
	return move_durably(ws_fd, rel, h->fd, num, err);
}

/* The "<i>.path" notes of a holding folder, collected before anything in
 * it moves. */
static int hold_notes(int hold_fd, const char *hold_dir, struct strbuf *names,
		      struct strbuf *err)
{
	DIR *d;
	struct dirent *de;
	int fd = dup(hold_fd), ret = 0;

	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		ret = -errno;
		if (fd >= 0)
			close(fd);
		strbuf_addf(err, "cannot read %s: %s", hold_dir, strerror(-ret));
		return ret;
	}
	while ((errno = 0, de = readdir(d))) {
		size_t dot = strcspn(de->d_name, ".");

		if (dot && !strcmp(de->d_name + dot, ".path")) {
			strbuf_addstr(names, de->d_name);
			strbuf_addch(names, '\0');
		}
	}
	if (errno) {
		ret = -errno;
		strbuf_addf(err, "cannot read %s: %s", hold_dir, strerror(-ret));
	}
	closedir(d);
	return ret;
}

/* Moves everything held in hold_dir into the workspace at ws_fd, where
 * each belongs, then removes the holding folder. Entries whose place is
 * taken stay held (logged, never deleted): -EEXIST then. */
static int hold_return(const char *hold_dir, int hold_fd, int ws_fd, int *moved,
		       struct strbuf *err)
{
	struct strbuf notes = STRBUF_INIT, rel = STRBUF_INIT;
	int left = 0, ret = hold_notes(hold_fd, hold_dir, &notes, err);

	for (size_t off = 0; !ret && off < notes.len; off += strlen(notes.buf + off) + 1) {
		const char *note = notes.buf + off;
		struct tool_error te;
		char num[32];
		size_t dot = strcspn(note, ".");

		if (dot >= sizeof(num))
			continue;
		memcpy(num, note, dot);
		num[dot] = '\0';
		strbuf_reset(&rel);
		if (file_read_capped_at(hold_fd, note, 4096, &rel) < 0 ||
		    ws_path_check(NULL, rel.buf, rel.len, &te) < 0) {
			log_warn("restore: %s/%s is unreadable; left in place", hold_dir, note);
			left++;
			continue;
		}
		if (faccessat(hold_fd, num, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
			if (!room_in_tree(ws_fd, rel.buf)) {
				log_warn("restore: %s is taken in the workspace; the kept folder stays in %s/%s",
					 rel.buf, hold_dir, num);
				left++;
				continue;
			}
			ret = move_durably(hold_fd, num, ws_fd, rel.buf, err);
			if (ret)
				break;
			if ((*moved)++ == 0)
				ckpt_crash_point("ckpt_swap_into", 8);
		}
		/* its folder is back (or was never moved): the note goes */
		unlinkat(hold_fd, note, 0);
	}
	strbuf_release(&notes);
	strbuf_release(&rel);
	if (ret)
		return ret;
	if (left) {
		strbuf_addf(err, "%d kept folders could not go back; they are in %s", left, hold_dir);
		return -EEXIST;
	}
	ret = rm_rf(hold_dir);
	if (!ret && fsync_parent_dir(hold_dir) < 0)
		ret = -errno;
	if (ret)
		strbuf_addf(err, "cannot remove %s: %s", hold_dir, strerror(-ret));
	return ret;
}

static int open_dir(const char *path, struct strbuf *err)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		strbuf_addf(err, "cannot open %s: %s", path, strerror(errno));
	return fd < 0 ? -errno : fd;
}

/* Splits a workspace path into its parent folder and its name. */
static int split_workspace(const char *workspace_dir, struct strbuf *parent,
			   const char **base)
{
	const char *slash;

	if (parent_of(workspace_dir, parent) < 0)
		return -EINVAL;
	slash = strrchr(workspace_dir, '/');
	*base = slash ? slash + 1 : workspace_dir;
	return 0;
}

int ckpt_swap_recover(const char *workspace_dir, struct strbuf *err)
{
	struct strbuf parent = STRBUF_INIT, prefix = STRBUF_INIT, hold = STRBUF_INIT;
	const char *base;
	struct dirent *de;
	DIR *d = NULL;
	int ws_fd = -1, ret = 0, moved = 0;

	if (split_workspace(workspace_dir, &parent, &base) < 0) {
		strbuf_addstr(err, "the workspace must be a folder path without a trailing '/'");
		return -EINVAL;
	}
	strbuf_addf(&prefix, HOLD_PREFIX "%s-", base);
	d = opendir(parent.buf);
	while (d && !ret && (de = readdir(d))) {
		int hold_fd;

		if (strncmp(de->d_name, prefix.buf, prefix.len))
			continue;
		strbuf_reset(&hold);
		strbuf_addf(&hold, "%s/%s", parent.buf, de->d_name);
		if (ws_fd < 0) {
			ws_fd = open_dir(workspace_dir, err);
			if (ws_fd < 0) {
				ret = ws_fd;
				break;
			}
		}
		hold_fd = open_dir(hold.buf, err);
		if (hold_fd < 0) {
			ret = hold_fd;
			break;
		}
		log_warn("restore: putting back the kept folders of an interrupted restore from %s", hold.buf);
		ret = hold_return(hold.buf, hold_fd, ws_fd, &moved, err);
		close(hold_fd);
	}
	if (d)
		closedir(d);
	if (ws_fd >= 0)
		close(ws_fd);
	strbuf_release(&parent);
	strbuf_release(&prefix);
	strbuf_release(&hold);
	return ret;
}

/* Moves the kept folders that fit the staged tree out of the workspace.
 * *held counts those moved; on failure they are put back. */
static int hold_kept(const char *workspace_dir, const char *staging_dir,
		     const char *const *extra, struct holding *h, size_t *held,
		     struct strbuf *err)
{
	struct strbuf parent = STRBUF_INIT;
	struct ckpt_keep k;
	const char *base;
	int ws_fd = -1, st_fd = -1, ret, moved = 0;

	*held = 0;
	ret = ckpt_keep_scan(workspace_dir, extra, NULL, &k, err);
	if (ret)
		return ret;
	if (!k.nkept)
		goto out;
	ret = split_workspace(workspace_dir, &parent, &base);
	if (ret)
		goto out;
	ws_fd = open_dir(workspace_dir, err);
	st_fd = ws_fd < 0 ? -1 : open_dir(staging_dir, err);
	if (ws_fd < 0 || st_fd < 0) {
		ret = ws_fd < 0 ? ws_fd : st_fd;
		goto out;
	}
	for (size_t i = 0; !ret && i < k.nkept; i++) {
		if (!room_in_tree(st_fd, k.kept[i])) {
			log_info("restore: %s gives way to the checkpoint's files", k.kept[i]);
			continue;
		}
		if (h->fd < 0) {
			ret = hold_open(parent.buf, base, h, err);
			if (ret)
				break;
			ckpt_crash_point("ckpt_swap_into", 3);
		}
		ret = hold_one(h, ws_fd, k.kept[i], *held, err);
		if (!ret && (*held)++ == 0)
			ckpt_crash_point("ckpt_swap_into", 4);
	}
	if (ret && *held) {
		/* not swapped: everything goes back where it was */
		struct strbuf why = STRBUF_INIT;

		if (hold_return(h->path.buf, h->fd, ws_fd, &moved, &why) < 0)
			log_error("restore: %s", why.buf);
		strbuf_release(&why);
		*held = 0;
	}
out:
	if (ws_fd >= 0)
		close(ws_fd);
	if (st_fd >= 0)
		close(st_fd);
	ckpt_keep_release(&k);
	strbuf_release(&parent);
	return ret;
}

/* Puts what h holds into the tree now at workspace_dir; what cannot go
 * back stays held for ckpt_swap_recover (logged). */
static void unhold(struct holding *h, const char *workspace_dir, int *moved)
{
	struct strbuf why = STRBUF_INIT;
	int ws_fd = open_dir(workspace_dir, &why);

	if (ws_fd < 0 || hold_return(h->path.buf, h->fd, ws_fd, moved, &why) < 0)
		log_error("restore: %s", why.buf);
	if (ws_fd >= 0)
		close(ws_fd);
	strbuf_release(&why);
}

int ckpt_swap_into_keeping(const char *workspace_dir, const char *staging_dir,
			   const char *const *extra_ignored, struct strbuf *err)
{
	struct strbuf parent = STRBUF_INIT;
	struct holding h = { STRBUF_INIT, -1 };
	size_t held = 0;
	int exists = 0, ret, moved = 0;

	ret = check_swap(workspace_dir, staging_dir, &parent, &exists, err);
	if (ret)
		goto out;
	ckpt_crash_point("ckpt_swap_into", 1);
	/* folders held by a swap that crashed go back first */
	ret = ckpt_swap_recover(workspace_dir, err);
	if (ret)
		goto out;
	ckpt_crash_point("ckpt_swap_into", 2);
	if (exists) {
		ret = hold_kept(workspace_dir, staging_dir, extra_ignored, &h, &held, err);
		if (ret)
			goto out;
		if (held)
			ckpt_crash_point("ckpt_swap_into", 5);
	}
	if (renameat2(AT_FDCWD, staging_dir, AT_FDCWD, workspace_dir,
		      exists ? RENAME_EXCHANGE : RENAME_NOREPLACE) < 0) {
		ret = -errno;
		strbuf_addf(err, "cannot swap %s into %s: %s", staging_dir,
			    workspace_dir, strerror(errno));
		/* the old tree is still the workspace: its folders go back */
		if (held)
			unhold(&h, workspace_dir, &moved);
		goto out;
	}
	ckpt_crash_point("ckpt_swap_into", 6);
	if (fsync_dir(parent.buf) < 0)
		/* the swap is done and visible; only its durability is unknown */
		log_warn("restore: cannot fsync %s: %s", parent.buf, strerror(errno));
	ckpt_crash_point("ckpt_swap_into", 7);
	/* the swap has happened: a folder that cannot go back stays held (the
	 * next restore retries), it never fails the restore */
	if (held) {
		unhold(&h, workspace_dir, &moved);
		ckpt_crash_point("ckpt_swap_into", 9);
	}
	if (exists) {
		int e = rm_rf(staging_dir);

		if (e)
			log_warn("restore: old tree left at %s: %s", staging_dir, strerror(-e));
	}
	ckpt_crash_point("ckpt_swap_into", 10);
out:
	hold_close(&h);
	strbuf_release(&parent);
	return ret;
}

int ckpt_swap_into(const char *workspace_dir, const char *staging_dir,
		   struct strbuf *err)
{
	return ckpt_swap_into_keeping(workspace_dir, staging_dir, NULL, err);
}
