/*
 * fuzz_tar_extract.c - libFuzzer target: arbitrary bytes planted in a
 * checkpoint store as an archive (under their own sha256 name, so every
 * check past the hash sees them) and extracted with ckpt_extract.
 *
 * Must hold for every input: no crash or sanitizer report; on failure no
 * staging folder and an error message; on success a staging tree of plain
 * 0644/0755 files and 0755 folders only; ckpt_verify agrees with
 * ckpt_extract; an archive that extracts also gives every content of its
 * manifest, each once and hashing to its name, through ckpt_reader_fetch
 * (the diff route's one-pass reader); nothing appears outside the staging
 * folder.
 *
 * The store also holds one genuine checkpoint (a few small files), written
 * at start-up, so inputs can reference contents in another archive; its
 * name is printed once. Work happens under $TMPDIR, else /dev/shm (no
 * fsync cost), else /tmp.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_pack.h"
#include "ckpt_restore.h"
#include "ckpt_store.h"
#include "fileutil.h"
#include "manifest.h"
#include "sha256.h"
#include "strbuf.h"

static char work[512];
static char staging[600];
static struct ckpt_store store;
static char base_name[CKPT_NAME_MAX];

static const struct {
	const char *path, *data;
} base_files[] = {
	{ "index.html", "<!doctype html>\n<h1>hello</h1>\n" },
	{ "css/site.css", "body { margin: 0 }\n" },
	{ "js/app.js", "console.log('hi');\n" },
};

static int open_base_file(void *ctx, const char *path)
{
	char full[800];

	snprintf(full, sizeof(full), "%s/%s", (const char *)ctx, path);
	return open(full, O_RDONLY | O_CLOEXEC);
}

static void write_base_checkpoint(void)
{
	struct strbuf err = STRBUF_INIT;
	struct manifest m;
	struct ckpt_info info;
	char dir[600], hex[65];

	snprintf(dir, sizeof(dir), "%s/base-tree", work);
	manifest_init(&m);
	for (size_t i = 0; i < sizeof(base_files) / sizeof(base_files[0]); i++) {
		char full[800];
		const char *d = base_files[i].data;

		snprintf(full, sizeof(full), "%s/%s", dir, base_files[i].path);
		*strrchr(full, '/') = '\0';
		mkdir_p(full, 0755);
		snprintf(full, sizeof(full), "%s/%s", dir, base_files[i].path);
		file_write_atomic(full, d, strlen(d), 0644);
		sha256_hex(d, strlen(d), hex);
		manifest_add(&m, base_files[i].path, strlen(d), hex, 0644);
	}
	manifest_sort(&m);
	if (ckpt_write(&store, &m, NULL, NULL, open_base_file, dir, &info, &err) == 0) {
		memcpy(base_name, info.name, sizeof(base_name));
		fprintf(stderr, "fuzz_tar_extract: base checkpoint %s\n", info.name);
	} else
		fprintf(stderr, "fuzz_tar_extract: base checkpoint failed: %s\n", err.buf);
	rm_rf(dir);
	manifest_release(&m);
	strbuf_release(&err);
}

static void cleanup(void)
{
	ckpt_store_close(&store);
	rm_rf(work);
}

static void setup(void)
{
	const char *tmp = getenv("TMPDIR");
	struct ckpt_limits lim = { 256, 1 << 20, 8 << 20 };
	struct strbuf err = STRBUF_INIT;
	char path[700];
	struct stat st;

	if (!tmp || !*tmp)
		tmp = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
	snprintf(work, sizeof(work), "%s/kiln-fuzz-tar-XXXXXX", tmp);
	if (!mkdtemp(work))
		abort();
	atexit(cleanup);
	snprintf(path, sizeof(path), "%s/store", work);
	if (ckpt_store_open(&store, path, &lim, &err) < 0)
		abort();
	snprintf(path, sizeof(path), "%s/outside", work);
	mkdir(path, 0755);
	snprintf(staging, sizeof(staging), "%s/stage", work);
	write_base_checkpoint();
	strbuf_release(&err);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

struct fetched {
	size_t got;
	int bad;
};

static int check_content(void *ctx, const char *sha, const char *data, size_t len)
{
	struct fetched *f = ctx;
	char hex[65];

	sha256_hex(len ? data : "", len, hex);
	f->bad |= strcmp(hex, sha) != 0;
	f->got++;
	return 0;
}

/* Every distinct content of the manifest, once, through one reader. */
static int reader_gives_all(const char *name, const char *sha)
{
	struct strbuf err = STRBUF_INIT;
	struct ckpt_reader *rd = NULL;
	struct fetched f = { 0, 0 };
	const struct manifest *m;
	const char **shas = NULL;
	size_t n = 0;
	int ok = 0;

	if (ckpt_reader_open(&store, name, sha, &rd, &err) < 0)
		goto out;
	m = ckpt_reader_manifest(rd);
	shas = calloc(m->n + 1, sizeof(*shas));
	if (!shas)
		abort();
	for (size_t i = 0; i < m->n; i++)
		shas[i] = m->v[i].sha256;
	if (m->n > 1)
		qsort(shas, m->n, sizeof(*shas), cmp_str);
	for (size_t i = 0; i < m->n; i++)
		if (!n || strcmp(shas[n - 1], shas[i]))
			shas[n++] = shas[i];
	ok = ckpt_reader_fetch(rd, shas, n, check_content, &f, &err) == 0 && f.got == n && !f.bad;
out:
	free(shas);
	ckpt_reader_close(rd);
	strbuf_release(&err);
	return ok;
}

/* Only plain files and folders, with the only modes a restore makes. */
static int tree_is_plain(int dfd, int depth)
{
	DIR *d;
	struct dirent *de;
	int ok = 1, fd = dup(dfd);

	if (fd < 0 || depth > 600)
		return 0;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return 0;
	}
	while (ok && (de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			ok = 0;
		else if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);

			ok = (st.st_mode & 07777) == 0755 && sub >= 0 && tree_is_plain(sub, depth + 1);
			if (sub >= 0)
				close(sub);
		} else {
			ok = S_ISREG(st.st_mode) && st.st_nlink == 1 &&
			     ((st.st_mode & 07777) == 0644 || (st.st_mode & 07777) == 0755);
		}
	}
	closedir(d);
	return ok;
}

/* The work folder holds store/, outside/ (empty) and nothing else. */
static int outside_untouched(void)
{
	DIR *d = opendir(work);
	struct dirent *de;
	int ok = d != NULL;
	char path[700];

	while (ok && (de = readdir(d)))
		ok = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		     !strcmp(de->d_name, "store") || !strcmp(de->d_name, "outside");
	if (d)
		closedir(d);
	snprintf(path, sizeof(path), "%s/outside", work);
	return ok && rmdir(path) == 0 && mkdir(path, 0755) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strbuf err = STRBUF_INIT, verr = STRBUF_INIT;
	char sha[65], name[CKPT_NAME_MAX], dir[3];
	struct stat st;
	int fd, ret, vret;

	if (!store.root)
		setup();
	sha256_hex(size ? (const void *)data : "", size, sha);
	ckpt_name_from_sha(sha, name);
	memcpy(dir, name, 2);
	dir[2] = '\0';
	mkdirat(store.root_fd, dir, 0755);
	fd = openat(store.root_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	close(fd);

	ret = ckpt_extract(&store, name, sha, staging, &err);
	vret = ckpt_verify(&store, name, sha, &verr);
	if (ret == 0) {
		int sfd = open(staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);

		if (sfd < 0 || !tree_is_plain(sfd, 0))
			abort();
		close(sfd);
		if (!reader_gives_all(name, sha))
			abort();
		if (rm_rf(staging) < 0)
			abort();
	} else if (lstat(staging, &st) == 0 || err.len == 0) {
		abort();
	}
	if ((ret == 0) != (vret == 0))
		abort();
	if (!outside_untouched())
		abort();
	/* an input that is the base checkpoint itself rewrote the same bytes */
	if (strcmp(name, base_name) && unlinkat(store.root_fd, name, 0) < 0)
		abort();
	strbuf_release(&err);
	strbuf_release(&verr);
	return 0;
}
