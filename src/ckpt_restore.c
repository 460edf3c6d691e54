/* ckpt_restore.c - safe extraction and the atomic workspace swap (see
 * ckpt_restore.h and docs/CHECKPOINTS.md). */
#include "ckpt_restore.h"

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
#include "strbuf.h"
#include "util.h"

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

/* Opens (creating as needed) the folder that holds path; *base is the
 * last component. Returns an fd that the caller closes unless it is dfd. */
static int open_parent(struct extract *x, const char *path, const char **base,
		       struct strbuf *err)
{
	struct strbuf comp = STRBUF_INIT;
	const char *p = path, *slash;
	int cur = x->dfd;

	while ((slash = strchr(p, '/'))) {
		int next, made;

		strbuf_reset(&comp);
		strbuf_add(&comp, p, (size_t)(slash - p));
		made = mkdirat(cur, comp.buf, 0755) == 0;
		if (!made && errno != EEXIST)
			goto fail;
		next = openat(cur, comp.buf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
			goto fail;
		if (made) {
			/* exactly 0755, whatever the umask */
			if (fchmod(next, 0755) < 0) {
				close(next);
				goto fail;
			}
			strbuf_add(&x->made_dirs, path, (size_t)(slash - path));
			strbuf_addch(&x->made_dirs, '\0');
		}
		if (cur != x->dfd)
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

		if (cur != x->dfd)
			close(cur);
		strbuf_release(&comp);
		return entry_error(err, path, "cannot create its folder", e);
	}
}

static int create_file(struct extract *x, const char *path, struct strbuf *err)
{
	const char *base = NULL;
	int pfd = open_parent(x, path, &base, err), fd, e;

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
	ckpt_crash_point("ckpt_extract", 6);
	ret = fsync_dirs(&x, staging_dir, err);
	if (!ret)
		ckpt_crash_point("ckpt_extract", 7);
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

int ckpt_swap_into(const char *workspace_dir, const char *staging_dir,
		   struct strbuf *err)
{
	struct strbuf parent = STRBUF_INIT;
	int exists = 0, ret;

	ret = check_swap(workspace_dir, staging_dir, &parent, &exists, err);
	if (ret)
		goto out;
	ckpt_crash_point("ckpt_swap_into", 1);
	if (renameat2(AT_FDCWD, staging_dir, AT_FDCWD, workspace_dir,
		      exists ? RENAME_EXCHANGE : RENAME_NOREPLACE) < 0) {
		ret = -errno;
		strbuf_addf(err, "cannot swap %s into %s: %s", staging_dir,
			    workspace_dir, strerror(errno));
		goto out;
	}
	ckpt_crash_point("ckpt_swap_into", 2);
	ret = fsync_dir(parent.buf);
	if (ret) {
		/* the swap is done and visible; only its durability is unknown */
		log_warn("restore: cannot fsync %s: %s", parent.buf, strerror(-ret));
		ret = 0;
	}
	ckpt_crash_point("ckpt_swap_into", 3);
	if (exists) {
		int e = rm_rf(staging_dir);

		if (e)
			log_warn("restore: old tree left at %s: %s", staging_dir, strerror(-e));
	}
	ckpt_crash_point("ckpt_swap_into", 4);
out:
	strbuf_release(&parent);
	return ret;
}
