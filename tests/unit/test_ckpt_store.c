/* test_ckpt_store.c - checkpoint store: round trips, sharing between
 * checkpoints and its storage cost, verification, gc, hostile archives
 * planted on disk, and crashes at every numbered point of write, extract
 * and swap. */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt_crash.h"
#include "ckpt_pack.h"
#include "ckpt_restore.h"
#include "ckpt_store.h"
#include "fileutil.h"
#include "harness.h"
#include "manifest.h"
#include "sha256.h"
#include "strbuf.h"
#include "util.h"

static char tmp_root[1024];

static const char *at(const char *rel)
{
	static char buf[4][2048];
	static int next;
	char *b = buf[next++ % 4];

	snprintf(b, sizeof(buf[0]), "%s/%s", tmp_root, rel);
	return b;
}

static int exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* ------------------------------------------------------------------ */
/* Trees on disk                                                      */

/* Test trees need no durability: a plain write keeps the suite fast. */
static int put_file(const char *dir, const char *rel, const void *data, size_t len,
		    mode_t mode)
{
	struct strbuf p = STRBUF_INIT;
	int ret, fd = -1;

	strbuf_addf(&p, "%s/%s", dir, rel);
	*strrchr(p.buf, '/') = '\0';
	ret = mkdir_p(p.buf, 0755);
	strbuf_reset(&p);
	strbuf_addf(&p, "%s/%s", dir, rel);
	if (!ret)
		fd = open(p.buf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0 || (len && write(fd, data, len) != (ssize_t)len) || fchmod(fd, mode) < 0)
		ret = -1;
	if (fd >= 0)
		close(fd);
	strbuf_release(&p);
	return ret;
}

static int put_str(const char *dir, const char *rel, const char *s)
{
	return put_file(dir, rel, s, strlen(s), 0644);
}

/* Regular files and folders only; anything else fails the walk. */
static int walk(const char *root, const char *rel, struct manifest *m)
{
	struct strbuf p = STRBUF_INIT, sub = STRBUF_INIT, data = STRBUF_INIT;
	struct dirent *de;
	DIR *d;
	int ret = 0;

	strbuf_addf(&p, "%s%s%s", root, *rel ? "/" : "", rel);
	d = opendir(p.buf);
	if (!d) {
		strbuf_release(&p);
		return -1;
	}
	while (!ret && (de = readdir(d))) {
		struct stat st;
		char hex[65];

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		strbuf_reset(&sub);
		strbuf_addf(&sub, "%s%s%s", rel, *rel ? "/" : "", de->d_name);
		strbuf_reset(&p);
		strbuf_addf(&p, "%s/%s", root, sub.buf);
		if (lstat(p.buf, &st) < 0) {
			ret = -1;
		} else if (S_ISDIR(st.st_mode)) {
			ret = walk(root, sub.buf, m);
		} else if (S_ISREG(st.st_mode)) {
			strbuf_reset(&data);
			ret = file_read_capped(p.buf, 1u << 30, &data);
			sha256_hex(strbuf_str(&data), data.len, hex);
			if (!ret)
				ret = manifest_add(m, sub.buf, data.len, hex, st.st_mode & 07777);
			/* only 0644/0755 exist in a restored tree */
			if ((st.st_mode & 07777) != 0644 && (st.st_mode & 07777) != 0755)
				ret = -1;
		} else {
			ret = -1;
		}
	}
	closedir(d);
	strbuf_release(&p);
	strbuf_release(&sub);
	strbuf_release(&data);
	return ret;
}

static int build_manifest(const char *dir, struct manifest *m)
{
	manifest_init(m);
	if (walk(dir, "", m) < 0) {
		manifest_release(m);
		return -1;
	}
	manifest_sort(m);
	return 0;
}

static int manifests_equal(const struct manifest *a, const struct manifest *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->v[i].path, b->v[i].path) || a->v[i].size != b->v[i].size ||
		    strcmp(a->v[i].sha256, b->v[i].sha256) || a->v[i].mode != b->v[i].mode)
			return 0;
	return 1;
}

/* The tree at dir is exactly the one m describes. */
static int tree_is(const char *dir, const struct manifest *m)
{
	struct manifest got;
	int eq;

	if (build_manifest(dir, &got) < 0)
		return 0;
	eq = manifests_equal(&got, m);
	manifest_release(&got);
	return eq;
}

static int open_in(void *ctx, const char *path)
{
	return openat(*(int *)ctx, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

static int checkpoint_dir(struct ckpt_store *st, const char *dir,
			  const struct ckpt_info *base, struct ckpt_info *out)
{
	struct strbuf err = STRBUF_INIT;
	struct manifest m;
	int fd, ret;

	if (build_manifest(dir, &m) < 0)
		return -1;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ret = ckpt_write(st, &m, base ? base->name : NULL, base ? base->sha256 : NULL,
			 open_in, &fd, out, &err);
	if (ret)
		fprintf(stderr, "ckpt_write: %s\n", err.buf);
	close(fd);
	manifest_release(&m);
	strbuf_release(&err);
	return ret;
}

/* Deterministic html/css/js-like text, so sizes and ratios are stable. */
static uint64_t rng = 88172645463325252ull;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 11);
}

static const char *const words[] = {
	"app", "user", "page", "button", "click", "render", "state", "data",
	"item", "list", "view", "header", "footer", "nav", "menu", "card",
	"price", "total", "cart", "product", "image", "title", "form", "input",
	"submit", "error", "value", "event", "layout", "grid", "theme", "modal",
};

static const char *word(void)
{
	return words[rnd() % ARRAY_SIZE(words)];
}

static void gen_text(struct strbuf *sb, unsigned kind, size_t target)
{
	while (sb->len < target) {
		switch (kind % 3) {
		case 0:
			strbuf_addf(sb, "  <div class=\"%s-%s %s\" id=\"%s%u\">%s %s %s %s.</div>\n",
				    word(), word(), word(), word(), rnd() % 100, word(),
				    word(), word(), word());
			break;
		case 1:
			strbuf_addf(sb, ".%s .%s-%s {\n  margin: %upx;\n  color: #%06x;\n}\n",
				    word(), word(), word(), rnd() % 64, rnd() & 0xffffff);
			break;
		default:
			strbuf_addf(sb, "function %s_%s(opts) {\n  if (opts.%s > %u) render('%s %s');\n}\n",
				    word(), word(), word(), rnd() % 1000, word(), word());
		}
	}
}

static const char *app_path(struct strbuf *sb, unsigned i)
{
	static const char *const ext[] = { "html", "css", "js" };
	static const char *const dir[] = { "pages", "css", "js" };

	strbuf_reset(sb);
	strbuf_addf(sb, "%s/sub%u/file-%u.%s", dir[i % 3], i % 6, i, ext[i % 3]);
	return sb->buf;
}

/* nfiles files of about 7 KB, 1.2 MB for 180. */
static size_t make_app(const char *dir, unsigned nfiles)
{
	struct strbuf p = STRBUF_INIT, body = STRBUF_INIT;
	size_t total = 0;

	for (unsigned i = 0; i < nfiles; i++) {
		strbuf_reset(&body);
		gen_text(&body, i, 2500 + rnd() % 9000);
		put_file(dir, app_path(&p, i), body.buf, body.len, 0644);
		total += body.len;
	}
	strbuf_release(&p);
	strbuf_release(&body);
	return total;
}

static void change_app_file(const char *dir, unsigned i, unsigned version)
{
	struct strbuf p = STRBUF_INIT, body = STRBUF_INIT;

	strbuf_addf(&body, "/* version %u */\n", version);
	gen_text(&body, i, 2500 + rnd() % 9000);
	put_file(dir, app_path(&p, i), body.buf, body.len, 0644);
	strbuf_release(&p);
	strbuf_release(&body);
}

static uint64_t store_bytes(struct ckpt_store *st, uint64_t *blocks)
{
	struct strbuf err = STRBUF_INIT;
	struct ckpt_list l;
	uint64_t total = 0;

	*blocks = 0;
	if (ckpt_list(st, &l, &err) == 0)
		for (size_t i = 0; i < l.n; i++) {
			struct stat s;

			if (fstatat(st->root_fd, l.names[i], &s, 0) == 0) {
				total += (uint64_t)s.st_size;
				*blocks += (uint64_t)s.st_blocks * 512;
			}
		}
	ckpt_list_release(&l);
	strbuf_release(&err);
	return total;
}

static int open_store(struct ckpt_store *st, const char *rel, const struct ckpt_limits *lim)
{
	struct strbuf err = STRBUF_INIT;
	int ret = ckpt_store_open(st, at(rel), lim, &err);

	if (ret)
		fprintf(stderr, "ckpt_store_open: %s\n", err.buf);
	strbuf_release(&err);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Round trip                                                         */

static void make_small_tree(const char *dir)
{
	static const unsigned char bin[] = { 0x89, 'P', 'N', 'G', 0, 1, 2, 0xff, 0 };

	rm_rf(dir);
	put_str(dir, "index.html", "<!doctype html>\n<h1>hi</h1>\n");
	put_str(dir, "css/site.css", "body { margin: 0 }\n");
	put_str(dir, "css/copy.css", "body { margin: 0 }\n"); /* same content */
	put_str(dir, "empty.txt", "");
	put_file(dir, "img/logo.png", bin, sizeof(bin), 0644);
	put_file(dir, "bin/build.sh", "#!/bin/sh\necho ok\n", 18, 0755);
	put_str(dir, "deep/a/b/c/d/e.js", "export const e = 1;\n");
}

static void test_round_trip(void)
{
	struct ckpt_store st;
	struct ckpt_info c1, c2;
	struct manifest m1, m2, got;
	struct strbuf err = STRBUF_INIT, out = STRBUF_INIT;

	make_small_tree(at("rt"));
	CHECK(open_store(&st, "rt-store", NULL) == 0);
	CHECK(build_manifest(at("rt"), &m1) == 0);
	CHECK(checkpoint_dir(&st, at("rt"), NULL, &c1) == 0);
	CHECK(c1.file_count == 7);
	CHECK(c1.stored_count == 6); /* two files share one content */
	CHECK(ckpt_name_parse(c1.name, NULL) == 0);
	CHECK(!strncmp(c1.name + 3, c1.sha256, 64));
	CHECK(ckpt_verify(&st, c1.name, c1.sha256, &err) == 0);

	CHECK(ckpt_read_manifest(&st, c1.name, c1.sha256, &got, &err) == 0);
	CHECK(manifests_equal(&got, &m1));
	manifest_release(&got);

	CHECK(ckpt_read_file(&st, c1.name, c1.sha256, "bin/build.sh", 4096, &out, &err) == 0);
	CHECK_STR(out.buf, "#!/bin/sh\necho ok\n");
	strbuf_reset(&out);
	CHECK(ckpt_read_file(&st, c1.name, c1.sha256, "img/logo.png", 4096, &out, &err) == 0);
	CHECK(out.len == 9 && !memcmp(out.buf, "\x89PNG\0\1\2\xff\0", 9));
	strbuf_reset(&out);
	CHECK(ckpt_read_file(&st, c1.name, c1.sha256, "empty.txt", 4096, &out, &err) == 0);
	CHECK(out.len == 0);
	CHECK(ckpt_read_file(&st, c1.name, c1.sha256, "nope.txt", 4096, &out, &err) == -ENOENT);
	CHECK(ckpt_read_file(&st, c1.name, c1.sha256, "index.html", 5, &out, &err) == -EFBIG);
	CHECK(out.len == 0);

	CHECK(ckpt_extract(&st, c1.name, c1.sha256, at("rt-stage"), &err) == 0);
	CHECK(tree_is(at("rt-stage"), &m1));
	{
		struct stat s;

		CHECK(stat(at("rt-stage"), &s) == 0 && (s.st_mode & 07777) == 0755);
	}
	/* the staging folder must not exist beforehand */
	CHECK(ckpt_extract(&st, c1.name, c1.sha256, at("rt-stage"), &err) == -EEXIST);
	CHECK(tree_is(at("rt-stage"), &m1));
	rm_rf(at("rt-stage"));

	/* second checkpoint: one change, one deletion, one addition */
	put_str(at("rt"), "index.html", "<!doctype html>\n<h1>hello</h1>\n");
	unlink(at("rt/css/copy.css"));
	put_str(at("rt"), "new.js", "console.log(1);\n");
	CHECK(build_manifest(at("rt"), &m2) == 0);
	CHECK(checkpoint_dir(&st, at("rt"), &c1, &c2) == 0);
	CHECK(c2.stored_count == 2);
	CHECK(ckpt_verify(&st, c2.name, c2.sha256, &err) == 0);
	strbuf_reset(&out);
	CHECK(ckpt_read_file(&st, c2.name, c2.sha256, "deep/a/b/c/d/e.js", 4096, &out, &err) == 0);
	CHECK_STR(out.buf, "export const e = 1;\n");
	CHECK(ckpt_extract(&st, c2.name, c2.sha256, at("rt-stage"), &err) == 0);
	CHECK(tree_is(at("rt-stage"), &m2));

	/* swap into the workspace; a missing workspace is simply created */
	CHECK(ckpt_swap_into(at("rt-ws"), at("rt-stage"), &err) == 0);
	CHECK(tree_is(at("rt-ws"), &m2));
	CHECK(!exists(at("rt-stage")));
	CHECK(ckpt_extract(&st, c1.name, c1.sha256, at("rt-stage"), &err) == 0);
	CHECK(ckpt_swap_into(at("rt-ws"), at("rt-stage"), &err) == 0);
	CHECK(tree_is(at("rt-ws"), &m1));
	CHECK(!exists(at("rt-stage")));
	mkdir(at("rt-other"), 0755);
	mkdir(at("rt-other/stage"), 0755);
	CHECK(ckpt_swap_into(at("rt-ws"), at("rt-other/stage"), &err) == -EXDEV);
	CHECK(tree_is(at("rt-ws"), &m1));

	/* the same tree twice gives the same archive */
	{
		struct ckpt_info again;

		CHECK(checkpoint_dir(&st, at("rt"), &c1, &again) == 0);
		CHECK_STR(again.name, c2.name);
	}
	manifest_release(&m1);
	manifest_release(&m2);
	ckpt_store_close(&st);
	strbuf_release(&err);
	strbuf_release(&out);
}

static void test_write_refusals(void)
{
	struct ckpt_store st;
	struct ckpt_info info;
	struct strbuf err = STRBUF_INIT;
	struct manifest m;
	struct ckpt_list l;
	char hex[65];
	int fd;

	rm_rf(at("wr"));
	put_str(at("wr"), "a.txt", "one\n");
	CHECK(open_store(&st, "wr-store", NULL) == 0);
	/* the file changes between the manifest and the write: retry */
	CHECK(build_manifest(at("wr"), &m) == 0);
	put_str(at("wr"), "a.txt", "two\n");
	fd = open(at("wr"), O_RDONLY | O_DIRECTORY);
	CHECK(ckpt_write(&st, &m, NULL, NULL, open_in, &fd, &info, &err) == -EAGAIN);
	CHECK(strstr(err.buf, "a.txt") != NULL);
	put_str(at("wr"), "a.txt", "one more\n");
	strbuf_reset(&err);
	CHECK(ckpt_write(&st, &m, NULL, NULL, open_in, &fd, &info, &err) == -EAGAIN);
	unlink(at("wr/a.txt"));
	CHECK(ckpt_write(&st, &m, NULL, NULL, open_in, &fd, &info, &err) == -EAGAIN);
	manifest_release(&m);
	/* hostile paths are refused before anything is written */
	manifest_init(&m);
	sha256_hex("x", 1, hex);
	manifest_add(&m, "../escape", 1, hex, 0644);
	CHECK(ckpt_write(&st, &m, NULL, NULL, open_in, &fd, &info, &err) == -EINVAL);
	manifest_release(&m);
	manifest_init(&m);
	manifest_add(&m, "a", 1, hex, 0644);
	manifest_add(&m, "a/b", 1, hex, 0644);
	CHECK(ckpt_write(&st, &m, NULL, NULL, open_in, &fd, &info, &err) == -EINVAL);
	manifest_release(&m);
	close(fd);
	/* nothing was published, no temp file stayed */
	CHECK(ckpt_list(&st, &l, &err) == 0 && l.n == 0);
	ckpt_list_release(&l);
	{
		DIR *d = opendir(at("wr-store/tmp"));
		int n = 0;

		while (d && readdir(d))
			n++;
		CHECK(n == 2);
		if (d)
			closedir(d);
	}
	ckpt_store_close(&st);
	strbuf_release(&err);
}

/* ------------------------------------------------------------------ */
/* Sharing and its storage cost                                       */

static void test_dedup_storage(void)
{
	struct ckpt_store st, full;
	struct ckpt_info prev, cur, f;
	struct strbuf err = STRBUF_INIT;
	uint64_t shared_bytes, shared_blocks, full_bytes, full_blocks;
	uint64_t first_size = 0, incr_size = 0;
	struct manifest final;
	size_t app;
	int ok = 1;
	int64_t t0, t_shared, t_full;

	rm_rf(at("app"));
	app = make_app(at("app"), 180);
	CHECK(open_store(&st, "dedup-store", NULL) == 0);
	CHECK(open_store(&full, "full-store", NULL) == 0);
	t0 = mono_ms();
	CHECK(checkpoint_dir(&st, at("app"), NULL, &prev) == 0);
	first_size = prev.size;
	for (unsigned k = 1; k < 100 && ok; k++) {
		change_app_file(at("app"), rnd() % 180, k);
		ok = checkpoint_dir(&st, at("app"), &prev, &cur) == 0 && cur.stored_count == 1;
		incr_size += cur.size;
		prev = cur;
	}
	t_shared = mono_ms() - t0;
	CHECK(ok);
	/* the same 100 states, each archived in full */
	rm_rf(at("app"));
	rng = 88172645463325252ull;
	make_app(at("app"), 180);
	t0 = mono_ms();
	CHECK(checkpoint_dir(&full, at("app"), NULL, &f) == 0);
	for (unsigned k = 1; k < 100 && ok; k++) {
		change_app_file(at("app"), rnd() % 180, k);
		ok = checkpoint_dir(&full, at("app"), NULL, &f) == 0;
	}
	t_full = mono_ms() - t0;
	CHECK(ok);
	shared_bytes = store_bytes(&st, &shared_blocks);
	full_bytes = store_bytes(&full, &full_blocks);
	printf("dedup: app of 180 files, %zu bytes; 100 checkpoints changing one file each\n", app);
	printf("dedup:   first archive %llu bytes, then %llu bytes per checkpoint on average\n",
	       (unsigned long long)first_size, (unsigned long long)(incr_size / 99));
	printf("dedup:   shared store %llu bytes (%llu allocated), %lld ms\n",
	       (unsigned long long)shared_bytes, (unsigned long long)shared_blocks,
	       (long long)t_shared);
	printf("dedup:   100 full archives %llu bytes (%llu allocated), %lld ms\n",
	       (unsigned long long)full_bytes, (unsigned long long)full_blocks,
	       (long long)t_full);
	printf("dedup:   ratio %.1fx smaller\n", (double)full_bytes / (double)shared_bytes);
	CHECK(shared_bytes * 5 < full_bytes);
	/* the last shared checkpoint restores the same tree as the last full one */
	CHECK(build_manifest(at("app"), &final) == 0);
	CHECK(ckpt_verify(&st, prev.name, prev.sha256, &err) == 0);
	CHECK(ckpt_extract(&st, prev.name, prev.sha256, at("dedup-stage"), &err) == 0);
	CHECK(tree_is(at("dedup-stage"), &final));
	manifest_release(&final);
	ckpt_store_close(&st);
	ckpt_store_close(&full);
	rm_rf(at("dedup-store"));
	rm_rf(at("full-store"));
	rm_rf(at("dedup-stage"));
	strbuf_release(&err);
}

/* A base archive whose contents are mostly replaced stops being shared. */
static void test_repack_mostly_dead_base(void)
{
	struct ckpt_store st;
	struct ckpt_info c1, c2, c3;
	struct strbuf err = STRBUF_INIT, body = STRBUF_INIT, p = STRBUF_INIT;

	rm_rf(at("rp"));
	for (unsigned i = 0; i < 10; i++) {
		strbuf_reset(&body);
		gen_text(&body, i, 100000);
		strbuf_reset(&p);
		strbuf_addf(&p, "f%u.txt", i);
		put_file(at("rp"), p.buf, body.buf, body.len, 0644);
	}
	CHECK(open_store(&st, "rp-store", NULL) == 0);
	CHECK(checkpoint_dir(&st, at("rp"), NULL, &c1) == 0);
	put_str(at("rp"), "f0.txt", "small\n");
	CHECK(checkpoint_dir(&st, at("rp"), &c1, &c2) == 0);
	CHECK(c2.stored_count == 1); /* 90% of c1 still used: shared */
	for (unsigned i = 0; i < 9; i++) {
		strbuf_reset(&p);
		strbuf_addf(&p, "f%u.txt", i);
		put_str(at("rp"), p.buf, p.buf);
	}
	CHECK(checkpoint_dir(&st, at("rp"), &c2, &c3) == 0);
	/* only f9 of c1's 1 MB is still used: stored again, c1 not needed */
	CHECK(c3.stored_count == 10);
	CHECK(ckpt_verify(&st, c3.name, c3.sha256, &err) == 0);
	{
		struct ckpt_gc_stats gs;
		const char *live[] = { c3.name };

		CHECK(ckpt_gc(&st, live, 1, 0, &gs, &err) == 0);
		CHECK(gs.archives_removed == 2 && gs.archives_kept == 1);
		CHECK(ckpt_verify(&st, c3.name, c3.sha256, &err) == 0);
	}
	ckpt_store_close(&st);
	strbuf_release(&err);
	strbuf_release(&body);
	strbuf_release(&p);
}

/* ------------------------------------------------------------------ */
/* Verification and gc                                                */

static void corrupt_byte(struct ckpt_store *st, const char *name, off_t off)
{
	int fd = openat(st->root_fd, name, O_RDWR);
	unsigned char c;

	if (fd < 0)
		return;
	if (pread(fd, &c, 1, off) == 1) {
		c ^= 0x40;
		if (pwrite(fd, &c, 1, off) != 1)
			c = 0;
	}
	close(fd);
}

static void copy_archive(struct ckpt_store *st, const char *from, const char *to)
{
	struct strbuf data = STRBUF_INIT;

	if (file_read_capped_at(st->root_fd, from, 1u << 26, &data) == 0)
		file_write_atomic_at(st->root_fd, to, data.buf, data.len, 0644);
	strbuf_release(&data);
}

static void test_verify_detects_damage(void)
{
	struct ckpt_store st;
	struct ckpt_info c1, c2;
	struct strbuf err = STRBUF_INIT;
	char bad[65];

	make_small_tree(at("vd"));
	CHECK(open_store(&st, "vd-store", NULL) == 0);
	CHECK(checkpoint_dir(&st, at("vd"), NULL, &c1) == 0);
	put_str(at("vd"), "index.html", "changed\n");
	CHECK(checkpoint_dir(&st, at("vd"), &c1, &c2) == 0);
	CHECK(ckpt_verify(&st, c2.name, c2.sha256, &err) == 0);

	/* wrong expected sha256 */
	memcpy(bad, c1.sha256, sizeof(bad));
	bad[10] = bad[10] == 'a' ? 'b' : 'a';
	CHECK(ckpt_verify(&st, c1.name, bad, &err) == -EINVAL);
	CHECK(ckpt_verify(&st, "../../etc/passwd", bad, &err) == -EINVAL);

	/* a missing archive; and the later checkpoint that needs it */
	copy_archive(&st, c1.name, "saved.tar.zst");
	CHECK(unlinkat(st.root_fd, c1.name, 0) == 0);
	strbuf_reset(&err);
	CHECK(ckpt_verify(&st, c1.name, c1.sha256, &err) == -ENOENT);
	strbuf_reset(&err);
	CHECK(ckpt_verify(&st, c2.name, c2.sha256, &err) == -EBADMSG);
	CHECK(strstr(err.buf, "does not exist (needed by checkpoint") != NULL);
	{
		struct strbuf out = STRBUF_INIT;

		/* a file whose content lived there: damage, not "no such file" */
		CHECK(ckpt_read_file(&st, c2.name, c2.sha256, "css/site.css", 4096, &out,
				     &err) == -EBADMSG);
		strbuf_release(&out);
	}
	CHECK(ckpt_extract(&st, c2.name, c2.sha256, at("vd-stage"), &err) < 0);
	CHECK(!exists(at("vd-stage")));

	/* a corrupted archive (a flipped byte) */
	copy_archive(&st, "saved.tar.zst", c1.name);
	CHECK(ckpt_verify(&st, c1.name, c1.sha256, &err) == 0);
	corrupt_byte(&st, c1.name, 100);
	strbuf_reset(&err);
	CHECK(ckpt_verify(&st, c1.name, c1.sha256, &err) == -EBADMSG);
	CHECK(strstr(err.buf, "sha256 mismatch") != NULL);
	CHECK(ckpt_verify(&st, c2.name, c2.sha256, &err) == -EBADMSG);
	CHECK(ckpt_extract(&st, c2.name, c2.sha256, at("vd-stage"), &err) < 0);
	CHECK(!exists(at("vd-stage")));

	/* a symlink planted under an archive's name */
	CHECK(unlinkat(st.root_fd, c1.name, 0) == 0);
	CHECK(symlinkat("../saved.tar.zst", st.root_fd, c1.name) == 0);
	CHECK(ckpt_verify(&st, c1.name, c1.sha256, &err) == -EBADMSG);
	CHECK(unlinkat(st.root_fd, c1.name, 0) == 0);
	copy_archive(&st, "saved.tar.zst", c1.name);
	unlinkat(st.root_fd, "saved.tar.zst", 0);
	CHECK(ckpt_verify(&st, c2.name, c2.sha256, &err) == 0);
	ckpt_store_close(&st);
	strbuf_release(&err);
}

static int count_archives(struct ckpt_store *st)
{
	struct strbuf err = STRBUF_INIT;
	struct ckpt_list l;
	int n = -1;

	if (ckpt_list(st, &l, &err) == 0)
		n = (int)l.n;
	ckpt_list_release(&l);
	strbuf_release(&err);
	return n;
}

static void test_gc(void)
{
	struct ckpt_store st;
	struct ckpt_info c[6];
	struct ckpt_gc_stats gs;
	struct strbuf err = STRBUF_INIT;

	make_small_tree(at("gc"));
	CHECK(open_store(&st, "gc-store", NULL) == 0);
	CHECK(checkpoint_dir(&st, at("gc"), NULL, &c[0]) == 0);
	/* c1..c3 change the same file; c4 another one */
	for (int k = 1; k <= 3; k++) {
		char body[32];

		snprintf(body, sizeof(body), "version %d\n", k);
		put_str(at("gc"), "index.html", body);
		CHECK(checkpoint_dir(&st, at("gc"), &c[k - 1], &c[k]) == 0);
	}
	put_str(at("gc"), "new.txt", "new\n");
	CHECK(checkpoint_dir(&st, at("gc"), &c[3], &c[4]) == 0);
	CHECK(count_archives(&st) == 5);
	{
		/* junk never counts as an archive */
		int fd = openat(st.root_fd, "tmp/junk.tmp", O_CREAT | O_WRONLY, 0644);

		close(fd);
		mkdirat(st.root_fd, "ab", 0755);
		fd = openat(st.root_fd, "ab/not-an-archive.tar.zst", O_CREAT | O_WRONLY, 0644);
		if (fd >= 0)
			close(fd);
		CHECK(count_archives(&st) == 5);
	}
	{
		const char *live[] = { c[4].name };
		const char *bad[] = { "../etc/passwd" };

		CHECK(ckpt_gc(&st, bad, 1, 0, &gs, &err) == -EINVAL);
		/* everything is young: nothing goes */
		CHECK(ckpt_gc(&st, live, 1, 3600, &gs, &err) == 0);
		CHECK(gs.archives_removed == 0 && gs.archives_kept == 5);
		/* c4 needs c0 (most files) and c3 (index.html): c1, c2 go */
		CHECK(ckpt_gc(&st, live, 1, 0, &gs, &err) == 0);
		CHECK(gs.archives_removed == 2 && gs.archives_kept == 3);
		CHECK(gs.bytes_freed > 0);
		CHECK(gs.temps_removed == 1);
		CHECK(ckpt_verify(&st, c[4].name, c[4].sha256, &err) == 0);
		CHECK(ckpt_verify(&st, c[0].name, c[0].sha256, &err) == 0);
		CHECK(ckpt_verify(&st, c[3].name, c[3].sha256, &err) == 0);
		CHECK(ckpt_verify(&st, c[1].name, c[1].sha256, &err) == -ENOENT);
	}
	{
		/* a damaged live archive stops gc: it might need anything */
		const char *live[] = { c[4].name, c[1].name };

		corrupt_byte(&st, c[4].name, 50);
		CHECK(ckpt_gc(&st, live, 2, 0, &gs, &err) < 0);
		CHECK(gs.archives_removed == 0);
		CHECK(count_archives(&st) == 3);
	}
	{
		/* nothing live: everything goes; a missing live name is counted */
		const char *live[] = { c[1].name };

		CHECK(ckpt_gc(&st, live, 1, 0, &gs, &err) == 0);
		CHECK(gs.archives_removed == 3 && gs.live_missing == 1);
		CHECK(count_archives(&st) == 0);
	}
	ckpt_store_close(&st);
	strbuf_release(&err);
}

static void test_open_cleans_temps(void)
{
	struct ckpt_store st;
	int fd;

	CHECK(open_store(&st, "tc-store", NULL) == 0);
	fd = openat(st.root_fd, "tmp/0123.tmp", O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0);
	close(fd);
	ckpt_store_close(&st);
	CHECK(open_store(&st, "tc-store", NULL) == 0);
	CHECK(!exists(at("tc-store/tmp/0123.tmp")));
	ckpt_store_close(&st);
}

/* ------------------------------------------------------------------ */
/* Hostile archives                                                   */

struct evil {
	const char *path;
	unsigned type;     /* AE_IFREG ... */
	unsigned perm;
	const char *data;  /* NULL: none */
	const char *link;  /* symlink target, or hard link target if hard */
	int hard;
};

static void add_archive_file(struct ckpt_store *st, const void *buf, size_t len,
			     char name[CKPT_NAME_MAX], char sha[65])
{
	char dir[3];

	sha256_hex(buf, len, sha);
	ckpt_name_from_sha(sha, name);
	memcpy(dir, name, 2);
	dir[2] = '\0';
	mkdirat(st->root_fd, dir, 0755);
	file_write_atomic_at(st->root_fd, name, buf, len, 0644);
}

/* Builds an archive with libarchive's writer and plants it in the store
 * under its real sha256 name, so only the content checks can refuse it. */
static void plant(struct ckpt_store *st, const struct evil *e, size_t n,
		  char name[CKPT_NAME_MAX], char sha[65])
{
	size_t cap = 1 << 20, used = 0;
	char *buf = malloc(cap);
	struct archive *a = archive_write_new();

	archive_write_set_format_pax_restricted(a);
	archive_write_add_filter_zstd(a);
	archive_write_set_bytes_in_last_block(a, 1);
	archive_write_open_memory(a, buf, cap, &used);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *en = archive_entry_new();
		size_t len = e[i].data ? strlen(e[i].data) : 0;

		archive_entry_set_pathname(en, e[i].path);
		archive_entry_set_filetype(en, e[i].type ? e[i].type : AE_IFREG);
		archive_entry_set_perm(en, e[i].perm ? e[i].perm : 0644);
		if (e[i].link && e[i].hard)
			archive_entry_set_hardlink(en, e[i].link);
		else if (e[i].link)
			archive_entry_set_symlink(en, e[i].link);
		if (e[i].type == AE_IFCHR)
			archive_entry_set_rdev(en, makedev(1, 3));
		archive_entry_set_size(en, (la_int64_t)len);
		archive_write_header(a, en);
		if (len)
			archive_write_data(a, e[i].data, len);
		archive_entry_free(en);
	}
	archive_write_close(a);
	archive_write_free(a);
	add_archive_file(st, buf, used, name, sha);
	free(buf);
}

static void manifest_json(struct strbuf *sb, const char *path, const char *content)
{
	char hex[65];

	sha256_hex(content, strlen(content), hex);
	strbuf_reset(sb);
	strbuf_addf(sb, "{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"%s\",\"size\":%zu,"
		    "\"sha256\":\"%s\"}],\"sources\":[]}", path, strlen(content), hex);
}

static const char *object_of(struct strbuf *sb, const char *content)
{
	char hex[65];

	sha256_hex(content, strlen(content), hex);
	strbuf_reset(sb);
	strbuf_addf(sb, CKPT_OBJECT_PREFIX "%s", hex);
	return sb->buf;
}

static int outside_untouched(void)
{
	DIR *d = opendir(at("outside"));
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n += strcmp(de->d_name, "sentinel") ? 100 : 1;
	if (d)
		closedir(d);
	return n == 1 && !exists(at("x")) && !exists(at("evil")) && !exists("/tmp/x-kiln-ckpt-test");
}

static int refused(struct ckpt_store *st, const char *name, const char *sha,
		   const char *why)
{
	struct strbuf err = STRBUF_INIT;
	int ret = ckpt_extract(st, name, sha, at("evil-stage"), &err), ok;

	ok = ret < 0 && !exists(at("evil-stage")) && outside_untouched() &&
	     ckpt_verify(st, name, sha, &err) < 0;
	if (!ok)
		fprintf(stderr, "hostile archive not refused cleanly: %s (ret %d: %s)\n",
			why, ret, err.buf);
	strbuf_release(&err);
	return ok;
}

static int plant_and_refuse(struct ckpt_store *st, const struct evil *e, size_t n,
			    const char *why)
{
	char name[CKPT_NAME_MAX], sha[65];

	plant(st, e, n, name, sha);
	return refused(st, name, sha, why);
}

static void test_hostile_entries(void)
{
	struct ckpt_store st;
	struct strbuf mj = STRBUF_INIT, obj = STRBUF_INIT, abs_path = STRBUF_INIT;
	const char *content = "owned\n";
	char name[CKPT_NAME_MAX], sha[65];

	mkdir(at("outside"), 0755);
	put_str(at("outside"), "sentinel", "untouched\n");
	CHECK(open_store(&st, "evil-store", NULL) == 0);
	manifest_json(&mj, "a.txt", content);
	object_of(&obj, content);
	strbuf_addf(&abs_path, "%s/outside/abs", tmp_root);

	/* the well-formed version is accepted, so each refusal below is the
	 * hostile part's doing */
	{
		const struct evil ok[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					   { obj.buf, 0, 0, content, NULL, 0 } };
		struct strbuf err = STRBUF_INIT;

		plant(&st, ok, 2, name, sha);
		CHECK(ckpt_extract(&st, name, sha, at("evil-stage"), &err) == 0);
		CHECK(rm_rf(at("evil-stage")) == 0);
		strbuf_release(&err);
	}
	{
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { "../x", 0, 0, content, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 2, "../x entry"));
	}
	{
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { abs_path.buf, 0, 0, content, NULL, 0 },
					  { "/tmp/x-kiln-ckpt-test", 0, 0, content, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 3, "absolute entry"));
	}
	{
		/* a symlink to /etc, then a file written through it */
		struct strbuf m2 = STRBUF_INIT;

		manifest_json(&m2, "link/passwd", content);
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, m2.buf, NULL, 0 },
					  { "link", AE_IFLNK, 0777, NULL, "/etc", 0 },
					  { "link/passwd", 0, 0, content, NULL, 0 },
					  { obj.buf, 0, 0, content, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 4, "symlink then write through it"));
		const struct evil e2[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					   { obj.buf, AE_IFLNK, 0777, NULL, "/etc/passwd", 0 } };
		CHECK(plant_and_refuse(&st, e2, 2, "object as symlink"));
		strbuf_release(&m2);
	}
	{
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { obj.buf, 0, 0, NULL, "/etc/passwd", 1 } };
		CHECK(plant_and_refuse(&st, e, 2, "hard link"));
	}
	{
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { obj.buf, AE_IFCHR, 0644, NULL, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 2, "device node"));
	}
	{
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { obj.buf, AE_IFIFO, 0644, NULL, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 2, "FIFO"));
	}
	{
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { obj.buf, 0, 04755, content, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 2, "setuid"));
		const struct evil e2[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					   { obj.buf, 0, 02644, content, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e2, 2, "setgid"));
	}
	{
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { obj.buf, 0, 0, content, NULL, 0 },
					  { obj.buf, 0, 0, content, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 3, "duplicate entry"));
	}
	{
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { "objects/", AE_IFDIR, 0755, NULL, NULL, 0 },
					  { obj.buf, 0, 0, content, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 3, "directory entry"));
	}
	{
		const struct evil e[] = { { obj.buf, 0, 0, content, NULL, 0 },
					  { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 2, "manifest not first"));
	}
	{
		/* right name and size, wrong bytes */
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { obj.buf, 0, 0, "pwned\n", NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 2, "content does not match its name"));
	}
	{
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 } };
		CHECK(plant_and_refuse(&st, e, 1, "missing object"));
	}
	ckpt_store_close(&st);
	strbuf_release(&mj);
	strbuf_release(&obj);
	strbuf_release(&abs_path);
}

static void test_hostile_manifests(void)
{
	static const char *const bad[] = {
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"../x\",\"size\":6,\"sha256\":\"%s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"/tmp/x-kiln-ckpt-test\",\"size\":6,\"sha256\":\"%s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a/../../x\",\"size\":6,\"sha256\":\"%s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a\\u0000b\",\"size\":6,\"sha256\":\"%s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a\\nb\",\"size\":6,\"sha256\":\"%s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a//b\",\"size\":6,\"sha256\":\"%s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"./a\",\"size\":6,\"sha256\":\"%s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a\",\"size\":-6,\"sha256\":\"%s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a\",\"size\":6,\"sha256\":\"%s\",\"mode\":\"4755\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a\",\"size\":6,\"sha256\":\"%s\",\"in\":\"../../x\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"b\",\"size\":6,\"sha256\":\"%1$s\"},{\"path\":\"a\",\"size\":6,\"sha256\":\"%1$s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a\",\"size\":6,\"sha256\":\"%1$s\"},{\"path\":\"a\",\"size\":6,\"sha256\":\"%1$s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a\",\"size\":6,\"sha256\":\"%1$s\"},{\"path\":\"a/b\",\"size\":6,\"sha256\":\"%1$s\"}],\"sources\":[]}",
		"{\"format\":\"" CKPT_FORMAT "\",\"files\":[{\"path\":\"a\",\"size\":6,\"sha256\":\"%s\"}],\"sources\":[]} trailing",
		"{\"format\":\"kiln-checkpoint/99\",\"files\":[{\"path\":\"a\",\"size\":6,\"sha256\":\"%s\"}],\"sources\":[]}",
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"%s\"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
	};
	struct ckpt_store st;
	struct strbuf mj = STRBUF_INIT, obj = STRBUF_INIT;
	const char *content = "owned\n";
	char hex[65];

	sha256_hex(content, strlen(content), hex);
	object_of(&obj, content);
	CHECK(open_store(&st, "evil-store", NULL) == 0);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char why[32];

		strbuf_reset(&mj);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		strbuf_addf(&mj, bad[i], hex);
#pragma GCC diagnostic pop
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					  { obj.buf, 0, 0, content, NULL, 0 } };
		snprintf(why, sizeof(why), "bad manifest %zu", i);
		CHECK(plant_and_refuse(&st, e, 2, why));
	}
	ckpt_store_close(&st);
	strbuf_release(&mj);
	strbuf_release(&obj);
}

/* A ustar header by hand: libarchive's writer would pad a huge declared
 * size with that many zero bytes. */
static void raw_header(unsigned char h[512], const char *path, const char *octal_size)
{
	unsigned sum = 0;

	memset(h, 0, 512);
	snprintf((char *)h, 100, "%s", path);
	memcpy(h + 100, "0000644", 8);
	memcpy(h + 108, "0000000", 8);
	memcpy(h + 116, "0000000", 8);
	snprintf((char *)h + 124, 12, "%s", octal_size);
	memcpy(h + 136, "00000000000", 12);
	h[156] = '0';
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
}

static void test_hostile_sizes_and_counts(void)
{
	struct ckpt_store st, small;
	struct ckpt_limits lim = { 2, 1024, 4096 };
	struct strbuf mj = STRBUF_INIT, obj = STRBUF_INIT, raw = STRBUF_INIT;
	const char *content = "owned\n";
	char name[CKPT_NAME_MAX], sha[65], octal[16];
	unsigned char h[512], pad[512] = { 0 };

	CHECK(open_store(&st, "evil-store", NULL) == 0);
	manifest_json(&mj, "a.txt", content);
	object_of(&obj, content);
	/* an object header claiming 8 GiB, uncompressed */
	snprintf(octal, sizeof(octal), "%011o", (unsigned)mj.len);
	raw_header(h, CKPT_MANIFEST_ENTRY, octal);
	strbuf_add(&raw, h, 512);
	strbuf_add(&raw, mj.buf, mj.len);
	strbuf_add(&raw, pad, 512 - mj.len % 512);
	raw_header(h, obj.buf, "77777777777");
	strbuf_add(&raw, h, 512);
	strbuf_add(&raw, content, strlen(content));
	strbuf_add(&raw, pad, 512 - strlen(content));
	strbuf_add(&raw, pad, 512);
	strbuf_add(&raw, pad, 512);
	add_archive_file(&st, raw.buf, raw.len, name, sha);
	CHECK(refused(&st, name, sha, "8 GiB entry header"));
	/* a manifest header claiming 8 GiB */
	strbuf_reset(&raw);
	raw_header(h, CKPT_MANIFEST_ENTRY, "77777777777");
	strbuf_add(&raw, h, 512);
	strbuf_add(&raw, mj.buf, mj.len);
	add_archive_file(&st, raw.buf, raw.len, name, sha);
	CHECK(refused(&st, name, sha, "8 GiB manifest header"));
	/* not an archive at all, and a truncated one */
	add_archive_file(&st, "garbage garbage garbage", 23, name, sha);
	CHECK(refused(&st, name, sha, "garbage"));
	{
		struct ckpt_info c;
		struct strbuf data = STRBUF_INIT;

		make_small_tree(at("tr"));
		CHECK(checkpoint_dir(&st, at("tr"), NULL, &c) == 0);
		CHECK(file_read_capped_at(st.root_fd, c.name, 1 << 20, &data) == 0);
		add_archive_file(&st, data.buf, data.len / 2, name, sha);
		CHECK(refused(&st, name, sha, "truncated archive"));
		/* a good archive under another archive's name */
		add_archive_file(&st, "other", 5, name, sha);
		CHECK(file_write_atomic_at(st.root_fd, name, data.buf, data.len, 0644) == 0);
		CHECK(refused(&st, name, sha, "archive under a wrong name"));
		/* a good archive with a wrong expected sha256 */
		CHECK(refused(&st, c.name, sha, "wrong expected sha256"));
		strbuf_release(&data);
	}
	/* limits: 2 entries, 1 KiB per file, 4 KiB in all */
	CHECK(open_store(&small, "evil-store", &lim) == 0);
	{
		struct strbuf m3 = STRBUF_INIT, big = STRBUF_INIT, bigobj = STRBUF_INIT;
		char hex[65];

		sha256_hex(content, strlen(content), hex);
		strbuf_addf(&m3, "{\"format\":\"" CKPT_FORMAT "\",\"files\":["
			    "{\"path\":\"a\",\"size\":6,\"sha256\":\"%1$s\"},"
			    "{\"path\":\"b\",\"size\":6,\"sha256\":\"%1$s\"},"
			    "{\"path\":\"c\",\"size\":6,\"sha256\":\"%1$s\"}],\"sources\":[]}", hex);
		const struct evil e[] = { { CKPT_MANIFEST_ENTRY, 0, 0, m3.buf, NULL, 0 },
					  { obj.buf, 0, 0, content, NULL, 0 } };
		plant(&small, e, 2, name, sha);
		CHECK(refused(&small, name, sha, "too many files"));
		for (int i = 0; i < 2000; i++)
			strbuf_addch(&big, 'x');
		manifest_json(&m3, "a", big.buf);
		object_of(&bigobj, big.buf);
		const struct evil e2[] = { { CKPT_MANIFEST_ENTRY, 0, 0, m3.buf, NULL, 0 },
					   { bigobj.buf, 0, 0, big.buf, NULL, 0 } };
		plant(&small, e2, 2, name, sha);
		CHECK(refused(&small, name, sha, "file larger than the limit"));
		/* entries beyond the ones the manifest announces */
		const struct evil e3[] = { { CKPT_MANIFEST_ENTRY, 0, 0, mj.buf, NULL, 0 },
					   { obj.buf, 0, 0, content, NULL, 0 },
					   { "objects/1", 0, 0, content, NULL, 0 },
					   { "objects/2", 0, 0, content, NULL, 0 },
					   { "objects/3", 0, 0, content, NULL, 0 },
					   { "objects/4", 0, 0, content, NULL, 0 } };
		plant(&small, e3, 6, name, sha);
		CHECK(refused(&small, name, sha, "extra entries"));
		strbuf_release(&m3);
		strbuf_release(&big);
		strbuf_release(&bigobj);
	}
	ckpt_store_close(&small);
	ckpt_store_close(&st);
	strbuf_release(&mj);
	strbuf_release(&obj);
	strbuf_release(&raw);
}

/* ------------------------------------------------------------------ */
/* Crashes                                                            */

/* Runs fn in a child with KILN_CRASH_POINT=op:point; 1 if it died by
 * SIGKILL at that point. */
static int crash_at(const char *op, unsigned point, void (*fn)(void *), void *ctx)
{
	char spec[64];
	pid_t pid;
	int status;

	snprintf(spec, sizeof(spec), "%s:%u", op, point);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		setenv(CKPT_CRASH_ENV, spec, 1);
		fn(ctx);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return 0;
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
		fprintf(stderr, "crash point %s was not reached\n", spec);
		return 0;
	}
	return 1;
}

struct crash_ctx {
	struct ckpt_store *st;
	const struct ckpt_info *base, *target;
	char dir[1100];
};

static void do_write(void *vctx)
{
	struct crash_ctx *c = vctx;
	struct ckpt_info out;

	checkpoint_dir(c->st, c->dir, c->base, &out);
}

static void do_restore(void *vctx)
{
	struct crash_ctx *c = vctx;
	struct strbuf err = STRBUF_INIT;

	if (ckpt_extract(c->st, c->target->name, c->target->sha256, at("cr-stage"), &err) == 0)
		ckpt_swap_into(at("cr-ws"), at("cr-stage"), &err);
	strbuf_release(&err);
}

static void do_gc(void *vctx)
{
	struct crash_ctx *c = vctx;
	struct ckpt_gc_stats gs;
	struct strbuf err = STRBUF_INIT;
	const char *live[] = { c->target->name };

	ckpt_gc(c->st, live, 1, 0, &gs, &err);
	strbuf_release(&err);
}

/* Every listed archive verifies: no partial archive ever has a name. */
static int store_sound(struct ckpt_store *st, int *count)
{
	struct strbuf err = STRBUF_INIT;
	struct ckpt_list l;
	int ok = ckpt_list(st, &l, &err) == 0;

	for (size_t i = 0; ok && i < l.n; i++) {
		char sha[65];

		ok = ckpt_name_parse(l.names[i], sha) == 0 &&
		     ckpt_verify(st, l.names[i], sha, &err) == 0;
		if (!ok)
			fprintf(stderr, "after crash: %s\n", err.buf);
	}
	*count = ok ? (int)l.n : -1;
	ckpt_list_release(&l);
	strbuf_release(&err);
	return ok;
}

static int tmp_empty(void)
{
	DIR *d = opendir(at("cr-store/tmp"));
	int n = 0;

	while (d && readdir(d))
		n++;
	if (d)
		closedir(d);
	return n == 2;
}

/* What a restore keeps in the workspace beside the checkpoint's files. */
static const char *const kept_files[] = {
	"node_modules/pkg/index.js", "node_modules/.package-lock.json",
	"web/node_modules/lib/lib.js", ".git/HEAD",
};

static void put_kept(const char *dir)
{
	for (size_t i = 0; i < ARRAY_SIZE(kept_files); i++)
		put_str(dir, kept_files[i], kept_files[i]);
}

static int is_kept_path(const char *path)
{
	return !strncmp(path, "node_modules/", 13) || !strncmp(path, "web/node_modules/", 17) ||
	       !strncmp(path, ".git/", 5);
}

/* The tree at dir, leaving kept folders out, is exactly m. */
static int tracked_tree_is(const char *dir, const struct manifest *m)
{
	struct manifest got, tracked;
	int eq;

	if (build_manifest(dir, &got) < 0)
		return 0;
	manifest_init(&tracked);
	for (size_t i = 0; i < got.n; i++)
		if (!is_kept_path(got.v[i].path))
			manifest_add(&tracked, got.v[i].path, got.v[i].size, got.v[i].sha256, got.v[i].mode);
	eq = manifests_equal(&tracked, m);
	manifest_release(&got);
	manifest_release(&tracked);
	return eq;
}

/* The manifest of checkpoint c's tree with the kept files added. */
static int kept_manifest(struct ckpt_store *st, const struct ckpt_info *c, const char *scratch,
			 struct manifest *out)
{
	struct strbuf err = STRBUF_INIT;
	int ret;

	rm_rf(at(scratch));
	ret = ckpt_extract(st, c->name, c->sha256, at(scratch), &err);
	if (!ret) {
		put_kept(at(scratch));
		ret = build_manifest(at(scratch), out);
	}
	rm_rf(at(scratch));
	strbuf_release(&err);
	return ret;
}

/* Holding folders of the swap into at(ws) that are still there. */
static int held_folders(const char *ws)
{
	DIR *d = opendir(tmp_root);
	struct dirent *de;
	char prefix[256];
	int n = 0;

	snprintf(prefix, sizeof(prefix), ".kept-%s-", ws);
	while (d && (de = readdir(d)))
		n += !strncmp(de->d_name, prefix, strlen(prefix));
	if (d)
		closedir(d);
	return n;
}

static void test_swap_keeps_ignored_folders(void)
{
	struct ckpt_store st;
	struct ckpt_info ca, cb;
	struct manifest mb, want;
	struct ckpt_keep plan;
	struct strbuf err = STRBUF_INIT;
	const char *dropped[] = { "cache", NULL };

	rm_rf(at("kf-a"));
	rm_rf(at("kf-b"));
	rm_rf(at("kf-ws"));
	put_str(at("kf-a"), "index.html", "<h1>a</h1>");
	put_str(at("kf-a"), "web/app.js", "a()");
	put_str(at("kf-b"), "index.html", "<h1>b</h1>");
	put_str(at("kf-b"), "web", "a file where the folder was");
	CHECK(open_store(&st, "kf-store", NULL) == 0);
	CHECK(checkpoint_dir(&st, at("kf-a"), NULL, &ca) == 0);
	CHECK(checkpoint_dir(&st, at("kf-b"), &ca, &cb) == 0);
	CHECK(build_manifest(at("kf-b"), &mb) == 0);
	CHECK(ckpt_extract(&st, ca.name, ca.sha256, at("kf-ws"), &err) == 0);
	put_kept(at("kf-ws"));
	put_str(at("kf-ws"), "cache/tmp.bin", "configured as ignored, not kept");
	CHECK(symlink("/etc/passwd", at("kf-ws/link")) == 0);
	CHECK(mkfifo(at("kf-ws/pipe"), 0644) == 0);
	put_str(at("kf-ws"), "bad\nname.txt", "no checkpoint can hold this name");

	/* the plan a dry run reports */
	CHECK(ckpt_keep_scan(at("kf-ws"), NULL, dropped, &plan, &err) == 0);
	CHECK(plan.nkept == 3 && !plan.truncated);
	CHECK(plan.nkept == 3 && !strcmp(plan.kept[0], ".git") && !strcmp(plan.kept[1], "node_modules") &&
	      !strcmp(plan.kept[2], "web/node_modules"));
	ckpt_keep_against(&plan, &mb);
	CHECK(plan.nkept == 2 && !strcmp(plan.kept[0], ".git") && !strcmp(plan.kept[1], "node_modules"));
	CHECK(plan.nuntracked == 5 && plan.untracked_count == 5);
	if (plan.nuntracked == 5) {
		CHECK_STR(plan.untracked[0], "bad\nname.txt");
		CHECK_STR(plan.untracked[1], "cache/");
		CHECK_STR(plan.untracked[2], "link");
		CHECK_STR(plan.untracked[3], "pipe");
		CHECK_STR(plan.untracked[4], "web/node_modules/");
	}
	ckpt_keep_release(&plan);

	/* the restore does exactly that */
	rm_rf(at("kf-stage"));
	CHECK(ckpt_extract(&st, cb.name, cb.sha256, at("kf-stage"), &err) == 0);
	CHECK(ckpt_swap_into(at("kf-ws"), at("kf-stage"), &err) == 0);
	manifest_init(&want);
	for (size_t i = 0; i < mb.n; i++)
		manifest_add(&want, mb.v[i].path, mb.v[i].size, mb.v[i].sha256, mb.v[i].mode);
	for (size_t i = 0; i < ARRAY_SIZE(kept_files); i++) {
		char hex[65];

		if (!strncmp(kept_files[i], "web/", 4))
			continue;
		sha256_hex(kept_files[i], strlen(kept_files[i]), hex);
		manifest_add(&want, kept_files[i], strlen(kept_files[i]), hex, 0644);
	}
	manifest_sort(&want);
	CHECK(tree_is(at("kf-ws"), &want));
	CHECK(!exists(at("kf-stage")) && held_folders("kf-ws") == 0);

	/* no workspace yet: nothing to keep, the staged tree just moves in */
	rm_rf(at("kf-new"));
	CHECK(ckpt_extract(&st, cb.name, cb.sha256, at("kf-stage"), &err) == 0);
	CHECK(ckpt_swap_into(at("kf-new"), at("kf-stage"), &err) == 0);
	CHECK(tree_is(at("kf-new"), &mb));
	manifest_release(&mb);
	manifest_release(&want);
	ckpt_store_close(&st);
	strbuf_release(&err);
}

/* The numbered points of each operation (docs/CHECKPOINTS.md). */
#define WRITE_POINTS 16
#define EXTRACT_POINTS 9
#define SWAP_POINTS 10
#define SWAP_EXCHANGED_AT 6 /* points from here on are after the exchange */
#define GC_POINTS 3

static void test_crash_safety(void)
{
	struct ckpt_store st;
	struct ckpt_info c1, c2;
	struct manifest m1, m2, m1k, m2k;
	struct strbuf err = STRBUF_INIT;
	struct crash_ctx cc;
	int points = 0;

	rm_rf(at("cr-app"));
	make_app(at("cr-app"), 30);
	CHECK(open_store(&st, "cr-store", NULL) == 0);
	CHECK(build_manifest(at("cr-app"), &m1) == 0);
	CHECK(checkpoint_dir(&st, at("cr-app"), NULL, &c1) == 0);
	change_app_file(at("cr-app"), 3, 1);
	put_str(at("cr-app"), "extra/new.txt", "new\n");
	CHECK(build_manifest(at("cr-app"), &m2) == 0);
	CHECK(checkpoint_dir(&st, at("cr-app"), &c1, &c2) == 0);
	change_app_file(at("cr-app"), 4, 2);
	change_app_file(at("cr-app"), 5, 2);

	/* writing a third checkpoint (two new contents), killed at each point */
	cc.st = &st;
	cc.base = &c2;
	cc.target = NULL;
	snprintf(cc.dir, sizeof(cc.dir), "%s", at("cr-app"));
	for (unsigned p = 1; p <= WRITE_POINTS; p++) {
		int n, ok = crash_at("ckpt_write", p, do_write, &cc);

		points += ok;
		CHECK(ok);
		CHECK(store_sound(&st, &n));
		/* the name appears at the rename, complete */
		CHECK(n == 2 || (n == 3 && p >= 14));
		CHECK(ckpt_verify(&st, c1.name, c1.sha256, &err) == 0);
		CHECK(ckpt_verify(&st, c2.name, c2.sha256, &err) == 0);
		/* what a crash leaves in tmp/ goes at the next open */
		ckpt_store_close(&st);
		CHECK(open_store(&st, "cr-store", NULL) == 0);
		CHECK(tmp_empty());
	}
	{
		struct ckpt_info c3;

		CHECK(checkpoint_dir(&st, at("cr-app"), &c2, &c3) == 0);
		CHECK(ckpt_verify(&st, c3.name, c3.sha256, &err) == 0);
	}

	/* restoring into a workspace with ignored folders, killed at each
	 * point of extract then swap: the tracked files are exactly the old
	 * tree before the exchange and the new one after it; the kept folders
	 * are in the workspace or held beside it, and the recovery every
	 * later swap starts with puts them back */
	CHECK(kept_manifest(&st, &c1, "cr-t", &m1k) == 0);
	CHECK(kept_manifest(&st, &c2, "cr-t", &m2k) == 0);
	rm_rf(at("cr-ws"));
	CHECK(ckpt_extract(&st, c1.name, c1.sha256, at("cr-stage"), &err) == 0);
	CHECK(ckpt_swap_into(at("cr-ws"), at("cr-stage"), &err) == 0);
	put_kept(at("cr-ws"));
	CHECK(tree_is(at("cr-ws"), &m1k));
	{
		const struct ckpt_info *cur = &c1;
		const struct manifest *cur_m = &m1, *cur_mk = &m1k;

		for (unsigned i = 0; i < EXTRACT_POINTS + SWAP_POINTS; i++) {
			const char *op = i < EXTRACT_POINTS ? "ckpt_extract" : "ckpt_swap_into";
			unsigned p = i < EXTRACT_POINTS ? i + 1 : i - EXTRACT_POINTS + 1;
			int swapped = i >= EXTRACT_POINTS && p >= SWAP_EXCHANGED_AT;
			const struct ckpt_info *next = cur == &c1 ? &c2 : &c1;
			const struct manifest *next_m = cur == &c1 ? &m2 : &m1;
			const struct manifest *next_mk = cur == &c1 ? &m2k : &m1k;
			int ok;

			cc.target = next;
			ok = crash_at(op, p, do_restore, &cc);
			points += ok;
			CHECK(ok);
			if (!ok)
				fprintf(stderr, "%s:%u not reached\n", op, p);
			CHECK(tracked_tree_is(at("cr-ws"), swapped ? next_m : cur_m));
			CHECK(ckpt_swap_recover(at("cr-ws"), &err) == 0);
			CHECK(tree_is(at("cr-ws"), swapped ? next_mk : cur_mk));
			CHECK(held_folders("cr-ws") == 0);
			if (swapped) {
				cur = next;
				cur_m = next_m;
				cur_mk = next_mk;
			}
			/* a staging folder left by a crash is garbage */
			CHECK(rm_rf(at("cr-stage")) == 0);
		}
	}
	/* gc killed at each point: what is live stays whole */
	cc.target = &c2;
	for (unsigned p = 1; p <= GC_POINTS; p++) {
		int n;

		points += crash_at("ckpt_gc", p, do_gc, &cc);
		CHECK(store_sound(&st, &n));
		CHECK(ckpt_verify(&st, c2.name, c2.sha256, &err) == 0);
	}
	printf("crash safety: %d crash points exercised\n", points);
	CHECK(points == WRITE_POINTS + EXTRACT_POINTS + SWAP_POINTS + GC_POINTS);
	manifest_release(&m1);
	manifest_release(&m2);
	manifest_release(&m1k);
	manifest_release(&m2k);
	ckpt_store_close(&st);
	strbuf_release(&err);
}

int main(void)
{
	const char *tmpdir = getenv("TMPDIR");

	snprintf(tmp_root, sizeof(tmp_root), "%s/kiln-ckpt-XXXXXX",
		 tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (!mkdtemp(tmp_root)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_round_trip);
	RUN(test_write_refusals);
	RUN(test_dedup_storage);
	RUN(test_repack_mostly_dead_base);
	RUN(test_verify_detects_damage);
	RUN(test_gc);
	RUN(test_open_cleans_temps);
	RUN(test_hostile_entries);
	RUN(test_hostile_manifests);
	RUN(test_hostile_sizes_and_counts);
	RUN(test_swap_keeps_ignored_folders);
	RUN(test_crash_safety);
	rm_rf(tmp_root);
	return harness_done("ckpt_store");
}
