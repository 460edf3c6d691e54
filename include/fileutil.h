/*
 * fileutil.h - files written so that a crash never leaves half a file.
 *
 *   file_write_atomic(at)   temp file beside the target, write, fsync, rename,
 *                           fsync the directory (git's lockfile discipline)
 *   file_read_capped        read a whole file into a strbuf, refusing files
 *                           larger than a cap (fd_read_capped: from an fd)
 *   mkdir_p / rm_rf         create a path's folders / remove a tree
 *                           (never follows symlinks)
 *   fd_write_all       write(2) until done, through EINTR and short writes
 *   fsync_dir
 *
 * Disk-full tests: with KILN_FAULT_ENOSPC=<absolute folder> in the
 * environment, fd_write_all (and so every atomic write and every checkpoint
 * archive) fails with ENOSPC for files under that folder, as if its
 * filesystem were full. Unset (production), nothing changes.
 */
#ifndef KILN_FILEUTIL_H
#define KILN_FILEUTIL_H

#include <stddef.h>
#include <sys/types.h>

struct strbuf;

#define FILEUTIL_FAULT_ENOSPC_ENV "KILN_FAULT_ENOSPC"

/* dirfd may be AT_FDCWD. name is relative to dirfd (may contain '/').
 * Returns 0 or -errno. */
int file_write_atomic_at(int dirfd, const char *name, const void *data,
			 size_t len, mode_t mode);
int file_write_atomic(const char *path, const void *data, size_t len,
		      mode_t mode);
/* Appends what fd has left to read, at most cap bytes: 0, -EFBIG past the
 * cap, or -errno; out is unchanged on failure. */
int fd_read_capped(int fd, size_t cap, struct strbuf *out);
/* The same for a file by name. */
int file_read_capped(const char *path, size_t cap, struct strbuf *out);
int file_read_capped_at(int dirfd, const char *name, size_t cap,
			struct strbuf *out);
/* write(2) until all of data is written; 0 or -errno. */
int fd_write_all(int fd, const void *data, size_t len);
int mkdir_p(const char *path, mode_t mode);
int rm_rf(const char *path);
int fsync_dir(const char *dirpath);
int fsync_parent_dir(const char *path);

#endif
