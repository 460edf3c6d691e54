/* workspace.c - confined access to an app's workspace (see workspace.h). */
#include "workspace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fileutil.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"

#define WS_RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
/* openat2 answers EAGAIN when a rename raced with the resolution; it is
 * safe to retry, but a hostile writer must not keep us spinning forever. */
#define WS_EAGAIN_RETRIES 64
#define WS_MAX_EXTRA_IGNORED 64
/* How much of a path an error message quotes. */
#define WS_ERR_PATH_MAX 200
/* replace_atomically's temp files. A process killed mid-write leaves one
 * behind; the name is reserved, so walks (and so manifests and revisions)
 * never see it and no tool or upload can make one. */
#define WS_TEMP_PREFIX ".kiln-tmp-"

static const char *const builtin_ignored[] = { "node_modules", "dist", ".git" };

void ws_limits_default(struct ws_limits *l)
{
	l->max_file_size = 1024 * 1024;
	l->max_total_size = 50 * 1024 * 1024;
	l->max_files = 2000;
	l->max_list_results = 500;
	l->max_search_matches = 200;
	l->max_read_bytes = 256 * 1024;
	l->max_path_len = 1024;
	l->max_name_len = 255;
}

size_t ws_utf8_prefix(const char *s, size_t len, size_t max)
{
	size_t n;

	if (len <= max)
		return len;
	n = max;
	/* back off to the lead byte of the sequence s[n] belongs to */
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

void ws_set_error(struct tool_error *err, const char *code, const char *rel,
		  const char *fmt, ...)
{
	struct strbuf sb = STRBUF_INIT;
	va_list ap;

	if (!err)
		return;
	if (rel) {
		size_t len = strlen(rel);
		size_t n = ws_utf8_prefix(rel, len, WS_ERR_PATH_MAX);

		strbuf_add(&sb, rel, n);
		if (n < len)
			strbuf_addstr(&sb, "...");
		strbuf_addstr(&sb, ": ");
	}
	va_start(ap, fmt);
	strbuf_vaddf(&sb, fmt, ap);
	va_end(ap);
	tool_error_set(err, code, "%s", strbuf_str(&sb));
	strbuf_release(&sb);
}

static const struct ws_limits *limits_of(const struct workspace *ws,
					 struct ws_limits *fallback)
{
	if (ws)
		return &ws->lim;
	ws_limits_default(fallback);
	return fallback;
}

/* ------------------------------------------------------------------ */
/* Path syntax                                                         */

/* Code points that make a name lie about itself when displayed: C0/C1
 * controls, DEL, bidi overrides and isolates, line separators, BOM. */
static int codepoint_forbidden(unsigned cp)
{
	return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) ||
	       cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
	       (cp >= 0x2066 && cp <= 0x2069) || cp == 0x2028 ||
	       cp == 0x2029 || cp == 0xfeff;
}

/* s must already be valid UTF-8. */
static int has_forbidden_codepoint(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i], cp, n;

		if (c < 0x80) {
			cp = c;
			n = 0;
		} else if ((c & 0xe0) == 0xc0) {
			cp = c & 0x1f;
			n = 1;
		} else if ((c & 0xf0) == 0xe0) {
			cp = c & 0x0f;
			n = 2;
		} else {
			cp = c & 0x07;
			n = 3;
		}
		for (unsigned k = 1; k <= n && i + k < len; k++)
			cp = (cp << 6) | (s[i + k] & 0x3f);
		if (codepoint_forbidden(cp))
			return 1;
		i += n + 1;
	}
	return 0;
}

/* Checks one component; returns the reason it is refused, or NULL. */
static const char *name_problem(const char *name, size_t len, size_t max_name)
{
	if (len == 0)
		return "empty path component ('//' or a trailing '/')";
	if (len > max_name)
		return "a path component is too long";
	if (memchr(name, '\0', len))
		return "path contains a NUL byte";
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return "'.' and '..' components are not allowed";
	if (!utf8_valid(name, len))
		return "path is not valid UTF-8";
	if (has_forbidden_codepoint(name, len))
		return "path contains control or bidirectional-override characters";
	if (len >= sizeof(WS_TEMP_PREFIX) - 1 && !memcmp(name, WS_TEMP_PREFIX, sizeof(WS_TEMP_PREFIX) - 1))
		return "names starting with '" WS_TEMP_PREFIX "' are reserved for Kiln's temporary files";
	return NULL;
}

int ws_path_check(const struct workspace *ws, const char *rel, size_t len,
		  struct tool_error *err)
{
	struct ws_limits deflim;
	const struct ws_limits *lim = limits_of(ws, &deflim);
	size_t start = 0;

	if (!rel || len == 0) {
		tool_error_set(err, "invalid_path", "path is empty");
		return -1;
	}
	if (len > lim->max_path_len) {
		tool_error_set(err, "invalid_path",
			       "path is %zu bytes long (limit %zu)", len,
			       lim->max_path_len);
		return -1;
	}
	if (memchr(rel, '\0', len)) {
		tool_error_set(err, "invalid_path", "path contains a NUL byte");
		return -1;
	}
	if (rel[0] == '/') {
		tool_error_set(err, "path_outside_workspace",
			       "absolute paths are not allowed: paths are relative to the workspace root");
		return -1;
	}
	if (!utf8_valid(rel, len)) {
		tool_error_set(err, "invalid_path", "path is not valid UTF-8");
		return -1;
	}
	while (start <= len) {
		const char *slash = memchr(rel + start, '/', len - start);
		size_t end = slash ? (size_t)(slash - rel) : len;
		size_t n = end - start;
		const char *why;

		if (n == 2 && rel[start] == '.' && rel[start + 1] == '.') {
			tool_error_set(err, "path_outside_workspace",
				       "'..' components are not allowed");
			return -1;
		}
		why = name_problem(rel + start, n, lim->max_name_len);
		if (why) {
			tool_error_set(err, "invalid_path", "%s", why);
			return -1;
		}
		start = end + 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Ignored folders                                                     */

static int is_ignored_n(const struct workspace *ws, const char *name, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(builtin_ignored); i++)
		if (strlen(builtin_ignored[i]) == len &&
		    !memcmp(builtin_ignored[i], name, len))
			return 1;
	for (size_t i = 0; ws && i < ws->nignored; i++)
		if (strlen(ws->ignored[i]) == len && !memcmp(ws->ignored[i], name, len))
			return 1;
	return 0;
}

int ws_is_ignored(const struct workspace *ws, const char *name)
{
	return is_ignored_n(ws, name, strlen(name));
}

int ws_path_is_ignored(const struct workspace *ws, const char *rel)
{
	const char *p = rel, *slash;

	while ((slash = strchr(p, '/'))) {
		if (is_ignored_n(ws, p, (size_t)(slash - p)))
			return 1;
		p = slash + 1;
	}
	return 0;
}

static int check_not_ignored(const struct workspace *ws, const char *rel,
			     struct tool_error *err)
{
	if (!ws_path_is_ignored(ws, rel))
		return 0;
	ws_set_error(err, "is_ignored", rel, "%s", WS_IGNORED_MESSAGE);
	return -1;
}

/* The path the kernel has for fd, through /proc: what the object is now
 * called, whatever symlinks led to it. */
static int fd_path(int fd, char *buf, size_t size)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, size);
	if (n < 0 || (size_t)n >= size)
		return -1;
	buf[n] = '\0';
	return 0;
}

int ws_fd_is_ignored(const struct workspace *ws, int fd, const char *rel,
		     struct tool_error *err)
{
	char root[PATH_MAX], real[PATH_MAX];
	struct stat st;
	const char *p, *slash;
	size_t rlen;

	if (fd_path(ws->dirfd, root, sizeof(root)) < 0 ||
	    fd_path(fd, real, sizeof(real)) < 0 || fstat(fd, &st) < 0) {
		ws_set_error(err, "io_error", rel, "cannot tell which folder it is in: %s",
			     strerror(errno));
		return -1;
	}
	rlen = strlen(root);
	if (rlen == 1)
		rlen = 0; /* the root is "/" */
	if (!strcmp(real, root))
		return 0;
	if (strncmp(real, root, rlen) || real[rlen] != '/') {
		/* beneath the root by construction, so the tree moved meanwhile */
		ws_set_error(err, "io_error", rel,
			     "the workspace changed during the call; try again");
		return -1;
	}
	for (p = real + rlen + 1; (slash = strchr(p, '/')); p = slash + 1)
		if (is_ignored_n(ws, p, (size_t)(slash - p)))
			goto ignored;
	if (S_ISDIR(st.st_mode) && is_ignored_n(ws, p, strlen(p)))
		goto ignored;
	return 0;
ignored:
	ws_set_error(err, "is_ignored", rel, "%s", WS_IGNORED_MESSAGE);
	return 1;
}

/* ------------------------------------------------------------------ */
/* Workspace                                                           */

static long sys_openat2(int dirfd, const char *path, int flags, mode_t mode,
			uint64_t resolve)
{
	struct open_how how;
	long fd;
	int tries = 0;

	memset(&how, 0, sizeof(how));
	how.flags = (uint64_t)(unsigned)flags;
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
		how.mode = mode;
	how.resolve = resolve;
	do {
		fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
	} while (fd < 0 && (errno == EAGAIN || errno == EINTR) &&
		 ++tries < WS_EAGAIN_RETRIES);
	return fd;
}

int workspace_open(struct workspace *ws, const char *root,
		   const struct ws_limits *lim, const char *const *ignored,
		   struct strbuf *err)
{
	size_t n = 0;
	long probe;

	memset(ws, 0, sizeof(*ws));
	ws->dirfd = -1;
	if (lim)
		ws->lim = *lim;
	else
		ws_limits_default(&ws->lim);
	while (ignored && ignored[n])
		n++;
	if (n > WS_MAX_EXTRA_IGNORED) {
		strbuf_addf(err, "too many ignored folder names (%zu, limit %d)",
			    n, WS_MAX_EXTRA_IGNORED);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(ignored[i]);

		if (strchr(ignored[i], '/') ||
		    name_problem(ignored[i], len, ws->lim.max_name_len)) {
			strbuf_addf(err, "invalid ignored folder name");
			return -1;
		}
	}
	ws->dirfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (ws->dirfd < 0) {
		strbuf_addf(err, "cannot open workspace %s: %s", root, strerror(errno));
		return -1;
	}
	/* Without openat2 there is no race-free confinement: refuse to run. */
	probe = sys_openat2(ws->dirfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC, 0,
			    WS_RESOLVE);
	if (probe < 0) {
		strbuf_addf(err, "openat2 with RESOLVE_BENEATH unavailable (%s); Linux 5.6 or later is required",
			    strerror(errno));
		close(ws->dirfd);
		ws->dirfd = -1;
		return -1;
	}
	close((int)probe);
	ws->root = xstrdup(root);
	ws->ignored = xcalloc(n + 1, sizeof(*ws->ignored));
	for (size_t i = 0; i < n; i++)
		ws->ignored[i] = xstrdup(ignored[i]);
	ws->nignored = n;
	return 0;
}

void workspace_close(struct workspace *ws)
{
	if (ws->dirfd >= 0)
		close(ws->dirfd);
	ws->dirfd = -1;
	for (size_t i = 0; i < ws->nignored; i++)
		free(ws->ignored[i]);
	free(ws->ignored);
	ws->ignored = NULL;
	ws->nignored = 0;
	free(ws->root);
	ws->root = NULL;
}

/* ------------------------------------------------------------------ */
/* Confined resolution                                                 */

static int is_special(mode_t m)
{
	return !S_ISREG(m) && !S_ISDIR(m) && !S_ISLNK(m);
}

/* The final component is a symlink (ELOOP under O_NOFOLLOW): tell the model
 * where it points without ever opening the target for I/O. */
static void symlink_error(const struct workspace *ws, const char *rel,
			  struct tool_error *err)
{
	long fd = sys_openat2(ws->dirfd, rel, O_PATH | O_CLOEXEC, 0, WS_RESOLVE);

	if (fd >= 0) {
		close((int)fd);
		ws_set_error(err, "not_a_file", rel,
			     "is a symbolic link; links are not followed, use the path it points to");
	} else if (errno == EXDEV) {
		ws_set_error(err, "path_outside_workspace", rel,
			     "is a symbolic link that points outside the workspace");
	} else if (errno == ENOENT) {
		ws_set_error(err, "not_found", rel, "is a dangling symbolic link");
	} else {
		ws_set_error(err, "invalid_path", rel,
			     "too many levels of symbolic links");
	}
}

static void open_error(const struct workspace *ws, const char *rel, int e,
		       struct tool_error *err)
{
	switch (e) {
	case EXDEV:
		ws_set_error(err, "path_outside_workspace", rel,
			     "resolves outside the workspace");
		break;
	case ELOOP:
		symlink_error(ws, rel, err);
		break;
	case ENOENT:
		ws_set_error(err, "not_found", rel, "no such file or folder");
		break;
	case ENOTDIR:
		ws_set_error(err, "not_a_directory", rel,
			     "it or one of its parents is not a folder");
		break;
	case EISDIR:
		ws_set_error(err, "not_a_file", rel, "is a folder");
		break;
	case EEXIST:
		ws_set_error(err, "exists", rel, "already exists");
		break;
	case ENAMETOOLONG:
		ws_set_error(err, "invalid_path", rel, "name too long");
		break;
	case ENXIO:
	case ENODEV:
		ws_set_error(err, "special_file", rel,
			     "is not a regular file (FIFO, socket or device)");
		break;
	case EFBIG:
	case EOVERFLOW:
		ws_set_error(err, "too_large", rel, "file too large");
		break;
	case EAGAIN:
		ws_set_error(err, "io_error", rel,
			     "the workspace kept changing during the call; try again");
		break;
	default:
		ws_set_error(err, "io_error", rel, "%s", strerror(e));
		break;
	}
}

/*
 * Opens rel beneath the root. follow_final: whether a symlink as the last
 * component is followed (still confined); used for folders only. Regular
 * files and folders are returned (st filled); anything else is refused.
 * Non-directory opens are preceded by an O_PATH probe so that the real open
 * never reaches a device driver or a FIFO in the ordinary case; the fstat
 * after the real open covers an object swapped in between.
 */
static int resolve(const struct workspace *ws, const char *rel, int flags,
		   mode_t mode, int follow_final, struct stat *st,
		   struct tool_error *err)
{
	int truncate = flags & O_TRUNC;
	int fd;
	long r;

	flags &= ~O_TRUNC;
	flags |= O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	if (!follow_final)
		flags |= O_NOFOLLOW;
	if (!(flags & O_DIRECTORY)) {
		struct stat pst;

		r = sys_openat2(ws->dirfd, rel, O_PATH | O_CLOEXEC |
				(follow_final ? 0 : O_NOFOLLOW), 0, WS_RESOLVE);
		if (r < 0) {
			if (errno != ENOENT || !(flags & O_CREAT)) {
				open_error(ws, rel, errno, err);
				return -1;
			}
		} else {
			int e = fstat((int)r, &pst) < 0 ? errno : 0;

			close((int)r);
			if (e) {
				open_error(ws, rel, e, err);
				return -1;
			}
			if (S_ISLNK(pst.st_mode)) {
				symlink_error(ws, rel, err);
				return -1;
			}
			if (is_special(pst.st_mode)) {
				ws_set_error(err, "special_file", rel,
					     "is not a regular file (FIFO, socket or device)");
				return -1;
			}
		}
	}
	r = sys_openat2(ws->dirfd, rel, flags, mode, WS_RESOLVE);
	if (r < 0) {
		open_error(ws, rel, errno, err);
		return -1;
	}
	fd = (int)r;
	if (fstat(fd, st) < 0) {
		open_error(ws, rel, errno, err);
		goto fail;
	}
	if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode)) {
		ws_set_error(err, "special_file", rel,
			     "is not a regular file (FIFO, socket or device)");
		goto fail;
	}
	if (S_ISREG(st->st_mode) && st->st_nlink > 1) {
		ws_set_error(err, "hardlink_refused", rel,
			     "has more than one hard link; such files are not read or written");
		goto fail;
	}
	if (truncate && S_ISREG(st->st_mode) && ftruncate(fd, 0) < 0) {
		open_error(ws, rel, errno, err);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

int ws_open(const struct workspace *ws, const char *rel, int flags,
	    mode_t mode, struct tool_error *err)
{
	struct stat st;

	if (ws_path_check(ws, rel, strlen(rel), err) < 0)
		return -1;
	return resolve(ws, rel, flags, mode, 0, &st, err);
}

int ws_stat(const struct workspace *ws, const char *rel, struct stat *st,
	    struct tool_error *err)
{
	long fd;
	int e;

	if (ws_path_check(ws, rel, strlen(rel), err) < 0)
		return -1;
	fd = sys_openat2(ws->dirfd, rel, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0,
			 WS_RESOLVE);
	if (fd < 0) {
		open_error(ws, rel, errno, err);
		return -1;
	}
	e = fstat((int)fd, st) < 0 ? errno : 0;
	close((int)fd);
	if (e) {
		open_error(ws, rel, e, err);
		return -1;
	}
	return 0;
}

/* Opens the folder holding rel (the root when rel has no '/') and points
 * *base at rel's last component. Returns the fd or -1; with create, missing
 * folders are made one at a time, each mkdirat() relative to a parent fd
 * that was itself resolved beneath the root. A folder that is or lies in an
 * ignored folder is refused, before anything is created in it. */
static int open_parent(const struct workspace *ws, const char *rel,
		       const char **base, int create, struct tool_error *err)
{
	struct strbuf dir = STRBUF_INIT;
	const char *slash = strrchr(rel, '/');
	struct stat st;
	int fd = -1, prev = -1;
	size_t i;

	if (!slash) {
		*base = rel;
		fd = fcntl(ws->dirfd, F_DUPFD_CLOEXEC, 0);
		if (fd < 0)
			open_error(ws, rel, errno, err);
		return fd;
	}
	*base = slash + 1;
	strbuf_add(&dir, rel, (size_t)(slash - rel));
	if (!create) {
		fd = resolve(ws, dir.buf, O_RDONLY | O_DIRECTORY, 0, 1, &st, err);
		goto out;
	}
	for (i = 0; i <= dir.len; i++) {
		const char *comp;
		long r;

		if (i < dir.len && dir.buf[i] != '/')
			continue;
		dir.buf[i] = '\0';
		comp = strrchr(dir.buf, '/');
		comp = comp ? comp + 1 : dir.buf;
		r = sys_openat2(ws->dirfd, dir.buf, O_RDONLY | O_DIRECTORY |
				O_CLOEXEC, 0, WS_RESOLVE);
		if (r < 0 && errno == ENOENT) {
			if (prev >= 0 && ws_fd_is_ignored(ws, prev, rel, err) != 0)
				goto fail;
			if (mkdirat(prev >= 0 ? prev : ws->dirfd, comp, 0755) < 0 &&
			    errno != EEXIST) {
				open_error(ws, dir.buf, errno, err);
				goto fail;
			}
			r = sys_openat2(ws->dirfd, dir.buf, O_RDONLY | O_DIRECTORY |
					O_CLOEXEC, 0, WS_RESOLVE);
		}
		if (r < 0) {
			open_error(ws, dir.buf, errno, err);
			goto fail;
		}
		if (prev >= 0)
			close(prev);
		prev = (int)r;
		if (i < dir.len)
			dir.buf[i] = '/';
	}
	fd = prev;
	goto out;
fail:
	if (prev >= 0)
		close(prev);
	fd = -1;
out:
	if (fd >= 0 && ws_fd_is_ignored(ws, fd, rel, err) != 0) {
		close(fd);
		fd = -1;
	}
	strbuf_release(&dir);
	return fd;
}

static void copy_error(struct tool_error *dst, const struct tool_error *src)
{
	if (dst)
		*dst = *src;
}

/* Classifies an existing entry that a file operation may replace or remove:
 * 0 fine (regular file, or symlink when links_ok), -1 with err. */
static int check_entry(const struct workspace *ws, const char *rel,
		       const struct stat *st, int links_ok,
		       struct tool_error *err)
{
	if (S_ISDIR(st->st_mode)) {
		ws_set_error(err, "not_a_file", rel, "is a folder");
		return -1;
	}
	if (S_ISLNK(st->st_mode)) {
		if (links_ok)
			return 0;
		symlink_error(ws, rel, err);
		return -1;
	}
	if (!S_ISREG(st->st_mode)) {
		ws_set_error(err, "special_file", rel,
			     "is not a regular file (FIFO, socket or device)");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Reading and writing                                                 */


int ws_read_file(const struct workspace *ws, const char *rel, size_t cap,
		 struct strbuf *out, struct tool_error *err)
{
	struct stat st;
	int fd, ret;

	if (ws_path_check(ws, rel, strlen(rel), err) < 0)
		return -1;
	fd = resolve(ws, rel, O_RDONLY, 0, 0, &st, err);
	if (fd < 0)
		return -1;
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		ws_set_error(err, "not_a_file", rel, "is a folder");
		return -1;
	}
	if ((uint64_t)st.st_size > cap) {
		close(fd);
		ws_set_error(err, "too_large", rel, "is %llu bytes (limit %zu)",
			     (unsigned long long)st.st_size, cap);
		return -1;
	}
	ret = fd_read_capped(fd, cap, out);
	close(fd);
	if (ret == -EFBIG) {
		ws_set_error(err, "too_large", rel, "is larger than %zu bytes", cap);
		return -1;
	}
	if (ret < 0) {
		ws_set_error(err, "io_error", rel, "%s", strerror(-ret));
		return -1;
	}
	return 0;
}

static int measure_cb(void *ctx, const char *rel, const struct stat *st)
{
	struct ws_usage *u = ctx;
	uint64_t size = (uint64_t)st->st_size;

	if (!S_ISREG(st->st_mode))
		return 0;
	u->files++;
	u->bytes += size;
	if (size > u->largest_size) {
		u->largest_size = size;
		snprintf(u->largest, sizeof(u->largest), "%.*s",
			 (int)ws_utf8_prefix(rel, strlen(rel), sizeof(u->largest) - 1), rel);
	}
	return 0;
}

int ws_measure(const struct workspace *ws, struct ws_usage *u, struct tool_error *err)
{
	memset(u, 0, sizeof(*u));
	return ws_walk_ex(ws, "", 0, WS_WALK_CUT_BIG_DIRS, measure_cb, u, &u->cut, err) < 0
	       ? -1 : 0;
}

int ws_usage_over_limits(const struct workspace *ws, const struct ws_usage *u)
{
	return u->cut || u->files > ws->lim.max_files || u->bytes > ws->lim.max_total_size ||
	       u->largest_size > ws->lim.max_file_size;
}

void ws_usage_describe(const struct workspace *ws, const struct ws_usage *u,
		       struct strbuf *out)
{
	const char *sep = "";

	if (u->files > ws->lim.max_files) {
		strbuf_addf(out, "%llu files (limit %u)", (unsigned long long)u->files,
			    ws->lim.max_files);
		sep = ", ";
	}
	if (u->bytes > ws->lim.max_total_size) {
		strbuf_addf(out, "%s%llu bytes in all (limit %llu)", sep,
			    (unsigned long long)u->bytes,
			    (unsigned long long)ws->lim.max_total_size);
		sep = ", ";
	}
	if (u->largest_size > ws->lim.max_file_size) {
		strbuf_addf(out, "%s%s of %llu bytes (files are limited to %llu)", sep,
			    u->largest, (unsigned long long)u->largest_size,
			    (unsigned long long)ws->lim.max_file_size);
		sep = ", ";
	}
	if (u->cut)
		strbuf_addf(out, "%sa folder of more than %d entries", sep,
			    WS_WALK_MAX_DIR_ENTRIES);
}


/* Temp file beside the target, fsync, rename over it, fsync the folder. A
 * fixed-length temp name keeps 255-byte target names writable. */
static int replace_atomically(int dirfd, const char *base, const void *data,
			      size_t len, mode_t mode)
{
	unsigned char rnd[8];
	char hex[17], tmp[40];
	int fd, ret;

	if (random_bytes(rnd, sizeof(rnd)) < 0)
		return -EIO;
	hex_encode(rnd, sizeof(rnd), hex);
	snprintf(tmp, sizeof(tmp), WS_TEMP_PREFIX "%s", hex);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    mode);
	if (fd < 0)
		return -errno;
	ret = fd_write_all(fd, data, len);
	if (!ret && fchmod(fd, mode) < 0)
		ret = -errno;
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && renameat(dirfd, tmp, dirfd, base) < 0)
		ret = -errno;
	if (ret) {
		unlinkat(dirfd, tmp, 0);
		return ret;
	}
	fsync(dirfd);
	return 0;
}

int ws_write_file_ex(const struct workspace *ws, const char *rel,
		     const void *data, size_t len, unsigned mode, int *created,
		     struct tool_error *err)
{
	struct ws_usage t;
	struct tool_error probe;
	struct stat st;
	const char *base;
	uint64_t old_size = 0, new_total;
	int pfd = -1, existed = 0, ret = -1, r;
	mode_t fmode = (mode != WS_MODE_KEEP && (mode & 0111)) ? 0755 : 0644;

	if (ws_path_check(ws, rel, strlen(rel), err) < 0 ||
	    check_not_ignored(ws, rel, err) < 0)
		return -1;
	if (len > ws->lim.max_file_size) {
		ws_set_error(err, "limit_exceeded", rel,
			     "%zu bytes is over the %llu-byte file size limit",
			     len, (unsigned long long)ws->lim.max_file_size);
		return -1;
	}
	pfd = open_parent(ws, rel, &base, 0, &probe);
	if (pfd < 0 && strcmp(probe.code, "not_found")) {
		copy_error(err, &probe);
		return -1;
	}
	if (pfd >= 0) {
		if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			if (check_entry(ws, rel, &st, 0, err) < 0)
				goto out;
			if (st.st_nlink > 1) {
				ws_set_error(err, "hardlink_refused", rel,
					     "has more than one hard link; such files are not read or written");
				goto out;
			}
			existed = 1;
			old_size = (uint64_t)st.st_size;
			if (mode == WS_MODE_KEEP && (st.st_mode & 0111))
				fmode = 0755;
		} else if (errno != ENOENT) {
			open_error(ws, rel, errno, err);
			goto out;
		}
	}
	/* Limits are checked before any folder is created, so a refused write
	 * leaves the workspace exactly as it was. */
	memset(&t, 0, sizeof(t));
	if (ws_walk(ws, "", 0, measure_cb, &t, err) < 0)
		goto out;
	if (!existed && t.files + 1 > ws->lim.max_files) {
		ws_set_error(err, "limit_exceeded", rel,
			     "the workspace already holds %llu files (limit %u)",
			     (unsigned long long)t.files, ws->lim.max_files);
		goto out;
	}
	new_total = t.bytes - (old_size < t.bytes ? old_size : t.bytes) + len;
	if (new_total > ws->lim.max_total_size) {
		ws_set_error(err, "limit_exceeded", rel,
			     "the workspace would hold %llu bytes (limit %llu)",
			     (unsigned long long)new_total,
			     (unsigned long long)ws->lim.max_total_size);
		goto out;
	}
	if (pfd < 0) {
		pfd = open_parent(ws, rel, &base, 1, err);
		if (pfd < 0)
			goto out;
	}
	r = replace_atomically(pfd, base, data, len, fmode);
	if (r < 0) {
		open_error(ws, rel, -r, err);
		goto out;
	}
	if (created)
		*created = !existed;
	ret = 0;
out:
	if (pfd >= 0)
		close(pfd);
	return ret;
}

int ws_write_file(const struct workspace *ws, const char *rel, const void *data,
		  size_t len, unsigned mode, struct tool_error *err)
{
	return ws_write_file_ex(ws, rel, data, len, mode, NULL, err);
}

int ws_delete_file(const struct workspace *ws, const char *rel,
		   struct tool_error *err)
{
	struct stat st;
	const char *base;
	int pfd, ret = -1;

	if (ws_path_check(ws, rel, strlen(rel), err) < 0 ||
	    check_not_ignored(ws, rel, err) < 0)
		return -1;
	pfd = open_parent(ws, rel, &base, 0, err);
	if (pfd < 0)
		return -1;
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		open_error(ws, rel, errno, err);
		goto out;
	}
	if (check_entry(ws, rel, &st, 1, err) < 0)
		goto out;
	if (unlinkat(pfd, base, 0) < 0) {
		open_error(ws, rel, errno, err);
		goto out;
	}
	fsync(pfd);
	ret = 0;
out:
	close(pfd);
	return ret;
}

int ws_rename_file(const struct workspace *ws, const char *from, const char *to,
		   int overwrite, struct tool_error *err)
{
	struct tool_error probe;
	struct stat st;
	const char *from_base, *to_base;
	int from_fd = -1, to_fd = -1, ret = -1;

	if (ws_path_check(ws, from, strlen(from), err) < 0 ||
	    ws_path_check(ws, to, strlen(to), err) < 0 ||
	    check_not_ignored(ws, from, err) < 0 ||
	    check_not_ignored(ws, to, err) < 0)
		return -1;
	if (!strcmp(from, to)) {
		ws_set_error(err, "invalid_arguments", from,
			     "source and destination are the same");
		return -1;
	}
	from_fd = open_parent(ws, from, &from_base, 0, err);
	if (from_fd < 0)
		return -1;
	if (fstatat(from_fd, from_base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		open_error(ws, from, errno, err);
		goto out;
	}
	if (check_entry(ws, from, &st, 1, err) < 0)
		goto out;
	to_fd = open_parent(ws, to, &to_base, 0, &probe);
	if (to_fd >= 0) {
		if (fstatat(to_fd, to_base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			if (!overwrite) {
				ws_set_error(err, "exists", to,
					     "already exists (pass overwrite to replace it)");
				goto out;
			}
			if (check_entry(ws, to, &st, 1, err) < 0)
				goto out;
		} else if (errno != ENOENT) {
			open_error(ws, to, errno, err);
			goto out;
		}
	} else {
		if (strcmp(probe.code, "not_found")) {
			copy_error(err, &probe);
			goto out;
		}
		to_fd = open_parent(ws, to, &to_base, 1, err);
		if (to_fd < 0)
			goto out;
	}
	if (renameat2(from_fd, from_base, to_fd, to_base,
		      overwrite ? 0 : RENAME_NOREPLACE) < 0) {
		if (errno == EEXIST)
			ws_set_error(err, "exists", to, "already exists");
		else if (errno == EISDIR || errno == ENOTEMPTY)
			ws_set_error(err, "not_a_file", to, "is a folder");
		else
			open_error(ws, from, errno, err);
		goto out;
	}
	fsync(to_fd);
	fsync(from_fd);
	ret = 0;
out:
	if (from_fd >= 0)
		close(from_fd);
	if (to_fd >= 0)
		close(to_fd);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Walking                                                             */

struct walk_entry {
	size_t name_off;
	const char *name;
	struct stat st;
};

static int entry_cmp(const void *a, const void *b)
{
	const struct walk_entry *x = a, *y = b;

	return strcmp(x->name, y->name);
}

struct walk {
	const struct workspace *ws;
	unsigned max_depth;
	unsigned flags;
	int cut;      /* a folder's entries were left out (WS_WALK_CUT_BIG_DIRS) */
	ws_walk_fn cb;
	void *ctx;
	struct tool_error *err;
	struct strbuf path;
};

/* Reads, filters and sorts the entries of the open folder fd (consumed). */
static int read_dir(struct walk *w, int fd, struct walk_entry **out,
		    size_t *nout, struct strbuf *names)
{
	struct walk_entry *v = NULL;
	size_t n = 0, alloc = 0;
	struct dirent *de;
	DIR *d = fdopendir(fd);
	int ret = -1;

	if (!d) {
		close(fd);
		open_error(w->ws, w->path.len ? w->path.buf : ".", errno, w->err);
		return -1;
	}
	errno = 0;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		/* names the tools could not address are left alone */
		if (name_problem(de->d_name, len, w->ws->lim.max_name_len) ||
		    w->path.len + 1 + len > w->ws->lim.max_path_len)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* gone meanwhile */
		if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
			continue;
		if (S_ISDIR(st.st_mode) && is_ignored_n(w->ws, de->d_name, len))
			continue;
		if (n == WS_WALK_MAX_DIR_ENTRIES) {
			if (w->flags & WS_WALK_CUT_BIG_DIRS) {
				/* the entries read so far stand for the folder */
				w->cut = 1;
				errno = 0;
				break;
			}
			ws_set_error(w->err, "limit_exceeded",
				     w->path.len ? w->path.buf : NULL,
				     "a folder holds more than %d entries",
				     WS_WALK_MAX_DIR_ENTRIES);
			goto out;
		}
		if (n == alloc) {
			struct walk_entry *nv;

			alloc = alloc ? alloc * 2 : 32;
			nv = realloc(v, alloc * sizeof(*v));
			if (!nv)
				abort();
			v = nv;
		}
		v[n].name_off = names->len;
		v[n].st = st;
		strbuf_add(names, de->d_name, len + 1);
		n++;
		errno = 0;
	}
	if (errno) {
		open_error(w->ws, w->path.len ? w->path.buf : ".", errno, w->err);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		v[i].name = names->buf + v[i].name_off;
	if (n > 1)
		qsort(v, n, sizeof(*v), entry_cmp);
	*out = v;
	*nout = n;
	v = NULL;
	ret = 0;
out:
	free(v);
	closedir(d);
	return ret;
}

/* Walks the folder at w->path. The folder fd is closed before recursing
 * (each subfolder is reopened beneath the root), so a deep tree never
 * holds more than one directory fd. */
static int walk_dir(struct walk *w, int fd, unsigned depth)
{
	struct strbuf names = STRBUF_INIT;
	struct walk_entry *v = NULL;
	size_t n = 0, base_len = w->path.len;
	int ret;

	ret = read_dir(w, fd, &v, &n, &names);
	if (ret < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		strbuf_setlen(&w->path, base_len);
		if (base_len)
			strbuf_addch(&w->path, '/');
		strbuf_addstr(&w->path, v[i].name);
		ret = w->cb(w->ctx, w->path.buf, &v[i].st);
		if (ret < 0) {
			ret = -1;
			goto out;
		}
		if (ret > 0)
			goto out;
		if (S_ISDIR(v[i].st.st_mode) &&
		    (w->max_depth == 0 || depth < w->max_depth)) {
			long sub = sys_openat2(w->ws->dirfd, w->path.buf,
					       O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
					       O_CLOEXEC, 0, WS_RESOLVE);

			if (sub < 0)
				continue; /* replaced or removed meanwhile */
			ret = walk_dir(w, (int)sub, depth + 1);
			if (ret != 0)
				goto out;
		}
	}
	ret = 0;
out:
	strbuf_setlen(&w->path, base_len);
	free(v);
	strbuf_release(&names);
	return ret;
}

int ws_walk_ex(const struct workspace *ws, const char *start_rel,
	       unsigned max_depth, unsigned flags, ws_walk_fn cb, void *ctx,
	       int *cut, struct tool_error *err)
{
	struct walk w = { ws, max_depth, flags, 0, cb, ctx, err, STRBUF_INIT };
	struct stat st;
	int fd, ret;

	if (cut)
		*cut = 0;
	if (!start_rel || !*start_rel) {
		/* a fresh open, not a dup: readdir() must not share the file
		 * offset of ws->dirfd with concurrent walks */
		long r = sys_openat2(ws->dirfd, ".", O_RDONLY | O_DIRECTORY |
				     O_CLOEXEC, 0, WS_RESOLVE);

		if (r < 0) {
			open_error(ws, ".", errno, err);
			return -1;
		}
		fd = (int)r;
	} else {
		const char *last = strrchr(start_rel, '/');

		if (ws_path_check(ws, start_rel, strlen(start_rel), err) < 0)
			return -1;
		if (ws_path_is_ignored(ws, start_rel) ||
		    ws_is_ignored(ws, last ? last + 1 : start_rel)) {
			ws_set_error(err, "is_ignored", start_rel,
				     "is an ignored folder or inside one");
			return -1;
		}
		/* a symlinked start folder is followed, beneath the root only,
		 * and never into an ignored folder */
		fd = resolve(ws, start_rel, O_RDONLY | O_DIRECTORY, 0, 1, &st, err);
		if (fd < 0)
			return -1;
		if (ws_fd_is_ignored(ws, fd, start_rel, err) != 0) {
			close(fd);
			return -1;
		}
		strbuf_addstr(&w.path, start_rel);
	}
	ret = walk_dir(&w, fd, 1);
	strbuf_release(&w.path);
	if (cut)
		*cut = w.cut;
	return ret;
}

int ws_walk(const struct workspace *ws, const char *start_rel,
	    unsigned max_depth, ws_walk_fn cb, void *ctx,
	    struct tool_error *err)
{
	return ws_walk_ex(ws, start_rel, max_depth, 0, cb, ctx, NULL, err);
}
