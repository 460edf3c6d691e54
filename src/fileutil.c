/* fileutil.c - atomic file replacement and careful tree handling. */
#include "fileutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strbuf.h"
#include "util.h"

/*
 * Test-only fault injection, inert unless FILEUTIL_FAULT_ENOSPC_ENV is set:
 * lets the disk-full tests (docs/PROOF.md) fail writes where the machine
 * cannot mount a small filesystem. Costs one getenv() per write when unset.
 */
static int fault_enospc(int fd)
{
	const char *prefix = getenv(FILEUTIL_FAULT_ENOSPC_ENV);
	char link[32], path[PATH_MAX];
	size_t plen;
	ssize_t n;

	if (!prefix || !*prefix)
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return 0;
	path[n] = '\0';
	plen = strlen(prefix);
	/* the prefix names a folder: /a/b covers /a/b/c, not /a/bc */
	return !strncmp(path, prefix, plen) &&
	       (path[plen] == '/' || path[plen] == '\0' || prefix[plen - 1] == '/');
}

int fd_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	if (len && fault_enospc(fd))
		return -ENOSPC;
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Splits name into its directory part (may be empty) and base. */
static void split_dir(const char *name, struct strbuf *dir, const char **base)
{
	const char *slash = strrchr(name, '/');

	strbuf_reset(dir);
	if (slash) {
		strbuf_add(dir, name, (size_t)(slash - name) + (slash == name));
		*base = slash + 1;
	} else {
		strbuf_addstr(dir, ".");
		*base = name;
	}
}

int file_write_atomic_at(int dir_fd, const char *name, const void *data,
			 size_t len, mode_t mode)
{
	struct strbuf tmp = STRBUF_INIT, dir = STRBUF_INIT;
	unsigned char rnd[6];
	char hex[13];
	const char *base;
	int fd = -1, dfd = -1, ret;

	split_dir(name, &dir, &base);
	if (random_bytes(rnd, sizeof(rnd)) < 0) {
		ret = -EIO;
		goto out;
	}
	hex_encode(rnd, sizeof(rnd), hex);
	strbuf_addf(&tmp, "%s/.%s.tmp-%s", dir.buf, base, hex);
	fd = openat(dir_fd, tmp.buf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = fd_write_all(fd, data, len);
	if (!ret && fchmod(fd, mode) < 0)
		ret = -errno;
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	fd = -1;
	if (!ret && renameat(dir_fd, tmp.buf, dir_fd, name) < 0)
		ret = -errno;
	if (ret) {
		unlinkat(dir_fd, tmp.buf, 0);
		goto out;
	}
	dfd = openat(dir_fd, dir.buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
out:
	if (fd >= 0)
		close(fd);
	strbuf_release(&tmp);
	strbuf_release(&dir);
	return ret;
}

int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	return file_write_atomic_at(AT_FDCWD, path, data, len, mode);
}

int fd_read_capped(int fd, size_t cap, struct strbuf *out)
{
	char buf[16384];
	size_t before = out->len, got = 0;
	int ret;

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if (n == 0)
			return 0;
		got += (size_t)n;
		if (got > cap || strbuf_add(out, buf, (size_t)n) < 0) {
			ret = -EFBIG;
			break;
		}
	}
	strbuf_setlen(out, before);
	return ret;
}

int file_read_capped_at(int dir_fd, const char *name, size_t cap, struct strbuf *out)
{
	int fd, ret;

	fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = fd_read_capped(fd, cap, out);
	close(fd);
	return ret;
}

int file_read_capped(const char *path, size_t cap, struct strbuf *out)
{
	return file_read_capped_at(AT_FDCWD, path, cap, out);
}

int mkdir_p(const char *path, mode_t mode)
{
	struct strbuf sb = STRBUF_INIT;
	size_t i;
	int ret = 0;

	strbuf_addstr(&sb, path);
	for (i = 1; i <= sb.len; i++) {
		if (sb.buf[i] != '/' && sb.buf[i] != '\0')
			continue;
		sb.buf[i] = '\0';
		if (mkdir(sb.buf, mode) < 0 && errno != EEXIST) {
			ret = -errno;
			break;
		}
		if (i < sb.len)
			sb.buf[i] = '/';
	}
	strbuf_release(&sb);
	return ret;
}

static int rm_rf_at(int dir_fd, const char *name)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	int fd, ret = 0;

	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
	fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		ret = rm_rf_at(dirfd(d), de->d_name);
		if (ret)
			break;
	}
	closedir(d);
	if (!ret && unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		ret = -errno;
	return ret;
}

int rm_rf(const char *path)
{
	return rm_rf_at(AT_FDCWD, path);
}

int fsync_dir(const char *dirpath)
{
	int fd = open(dirpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

int fsync_parent_dir(const char *path)
{
	struct strbuf dir = STRBUF_INIT;
	const char *base;
	int ret;

	split_dir(path, &dir, &base);
	ret = fsync_dir(dir.buf);
	strbuf_release(&dir);
	return ret;
}
