/* test_workspace.c - path syntax, confined open, atomic writes with limits,
 * delete/rename, the walker, special files, hard links and a symlink race. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "fileutil.h"
#include "harness.h"
#include "strbuf.h"
#include "tool_error.h"
#include "workspace.h"

#define SECRET "KILN-SENTINEL-outside-7d2e"

static char *top;      /* temp dir holding ws/ and outside/ */
static char ws_root[4096], outside[4096];

static char *path_in(const char *dir, const char *rel)
{
	struct strbuf sb = STRBUF_INIT;

	strbuf_addf(&sb, "%s/%s", dir, rel);
	return strbuf_detach(&sb, NULL);
}

static void put(const char *dir, const char *rel, const char *content)
{
	char *p = path_in(dir, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(write(fd, content, strlen(content)) == (ssize_t)strlen(content));
		close(fd);
	}
	free(p);
}

static char *slurp(const char *dir, const char *rel)
{
	struct strbuf sb = STRBUF_INIT;
	char *p = path_in(dir, rel);
	int r = file_read_capped(p, 1 << 20, &sb);

	free(p);
	if (r < 0) {
		strbuf_release(&sb);
		return NULL;
	}
	return strbuf_detach(&sb, NULL);
}

static int exists_in(const char *dir, const char *rel)
{
	struct stat st;
	char *p = path_in(dir, rel);
	int r = lstat(p, &st) == 0;

	free(p);
	return r;
}

static void sym(const char *target, const char *dir, const char *rel)
{
	char *p = path_in(dir, rel);

	CHECK(symlink(target, p) == 0);
	free(p);
}

static void mkd(const char *dir, const char *rel)
{
	char *p = path_in(dir, rel);

	CHECK(mkdir(p, 0755) == 0);
	free(p);
}

/* Fresh ws/ and outside/ under top. */
static void fixture_reset(void)
{
	rm_rf(ws_root);
	rm_rf(outside);
	CHECK(mkdir(ws_root, 0755) == 0);
	CHECK(mkdir(outside, 0755) == 0);
	put(outside, "secret.txt", SECRET "\n");
}

static void outside_intact(void)
{
	char *s = slurp(outside, "secret.txt");
	DIR *d = opendir(outside);
	struct dirent *de;
	int n = 0;

	CHECK(s && !strcmp(s, SECRET "\n"));
	free(s);
	CHECK(d != NULL);
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	if (d)
		closedir(d);
	CHECK(n == 1);
}

static int open_ws(struct workspace *ws, const struct ws_limits *lim)
{
	struct strbuf err = STRBUF_INIT;
	int r = workspace_open(ws, ws_root, lim, NULL, &err);

	if (r < 0)
		fprintf(stderr, "workspace_open: %s\n", strbuf_str(&err));
	strbuf_release(&err);
	return r;
}

/* ------------------------------------------------------------------ */

static void test_limits_default(void)
{
	struct ws_limits l;

	ws_limits_default(&l);
	CHECK(l.max_file_size == 1024 * 1024);
	CHECK(l.max_total_size == 50ull * 1024 * 1024);
	CHECK(l.max_files == 2000);
	CHECK(l.max_list_results == 500);
	CHECK(l.max_search_matches == 200);
	CHECK(l.max_read_bytes == 256 * 1024);
	CHECK(l.max_path_len == 1024);
	CHECK(l.max_name_len == 255);
}

struct pcase {
	const char *s;
	size_t len; /* 0: strlen */
	const char *code; /* NULL: accepted */
};

static void test_path_check(void)
{
	static const struct pcase cases[] = {
		{ "a", 0, NULL },
		{ "src/app.js", 0, NULL },
		{ ".hidden", 0, NULL },
		{ "...", 0, NULL },
		{ "a\\b", 0, NULL },
		{ "~", 0, NULL },
		{ "a b/c d", 0, NULL },
		{ "\xc3\xa9t\xc3\xa9.txt", 0, NULL },
		{ "\xef\xbc\x8e\xef\xbc\x8e/x", 0, NULL },
		{ "%2e%2e/x", 0, NULL },
		{ "", 0, "invalid_path" },
		{ "/etc/passwd", 0, "path_outside_workspace" },
		{ "//etc", 0, "path_outside_workspace" },
		{ "../x", 0, "path_outside_workspace" },
		{ "a/../../x", 0, "path_outside_workspace" },
		{ "a/..", 0, "path_outside_workspace" },
		{ "..", 0, "path_outside_workspace" },
		{ ".", 0, "invalid_path" },
		{ "./a", 0, "invalid_path" },
		{ "a/./b", 0, "invalid_path" },
		{ "a//b", 0, "invalid_path" },
		{ "a/", 0, "invalid_path" },
		{ "a\0b", 3, "invalid_path" },
		{ "\0", 1, "invalid_path" },
		{ "\xc0\xaf", 0, "invalid_path" },
		{ "\xe0\x80\xaf", 0, "invalid_path" },
		{ "\xff", 0, "invalid_path" },
		{ "\xed\xa0\x80", 0, "invalid_path" },
		{ "a\nb", 0, "invalid_path" },
		{ "a\tb", 0, "invalid_path" },
		{ "\x1b[1m", 0, "invalid_path" },
		{ "\x7f", 0, "invalid_path" },
		{ "\xc2\x85", 0, "invalid_path" },
		{ "a\xe2\x80\xae" "b", 0, "invalid_path" },
		{ "\xe2\x80\x8f", 0, "invalid_path" },
		{ "\xe2\x81\xa6x", 0, "invalid_path" },
		{ "\xef\xbb\xbfx", 0, "invalid_path" },
	};
	struct tool_error err = { { 0 }, { 0 } };
	char longname[300], longpath[1100];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct pcase *c = &cases[i];
		size_t len = c->len ? c->len : strlen(c->s);
		int r;

		memset(&err, 0, sizeof(err));
		r = ws_path_check(NULL, c->s, len, &err);
		if (c->code) {
			CHECK(r == -1);
			CHECK_STR(err.code, c->code);
		} else {
			if (r != 0)
				fprintf(stderr, "case %zu refused: %s\n", i, err.message);
			CHECK(r == 0);
		}
	}
	memset(longname, 'n', 255);
	CHECK(ws_path_check(NULL, longname, 255, &err) == 0);
	CHECK(ws_path_check(NULL, longname, 256, &err) == -1);
	CHECK_STR(err.code, "invalid_path");
	for (size_t i = 0; i < sizeof(longpath); i += 2) {
		longpath[i] = 'a';
		if (i + 1 < sizeof(longpath))
			longpath[i + 1] = '/';
	}
	CHECK(ws_path_check(NULL, longpath, 1023, &err) == 0);
	CHECK(ws_path_check(NULL, longpath, 1025, &err) == -1);
	CHECK_STR(err.code, "invalid_path");
	CHECK(ws_path_check(NULL, NULL, 0, &err) == -1);
}

static void test_workspace_open(void)
{
	struct workspace ws;
	struct strbuf err = STRBUF_INIT;
	static const char *const bad_ignored[] = { "a/b", NULL };
	static const char *const dot_ignored[] = { "..", NULL };
	static const char *const good_ignored[] = { "build", ".cache", NULL };
	char *missing = path_in(top, "nope");
	char *link = path_in(top, "wslink");

	fixture_reset();
	CHECK(workspace_open(&ws, missing, NULL, NULL, &err) == -1);
	CHECK(err.len > 0);
	CHECK(symlink(ws_root, link) == 0);
	CHECK(workspace_open(&ws, link, NULL, NULL, &err) == -1);
	unlink(link);
	CHECK(workspace_open(&ws, ws_root, NULL, bad_ignored, &err) == -1);
	CHECK(workspace_open(&ws, ws_root, NULL, dot_ignored, &err) == -1);
	CHECK(workspace_open(&ws, ws_root, NULL, good_ignored, &err) == 0);
	CHECK(ws.dirfd >= 0);
	CHECK(ws.nignored == 2);
	CHECK(ws_is_ignored(&ws, "build"));
	CHECK(ws_is_ignored(&ws, "node_modules"));
	CHECK(ws_is_ignored(&ws, "dist"));
	CHECK(ws_is_ignored(&ws, ".git"));
	CHECK(!ws_is_ignored(&ws, "src"));
	CHECK(ws_path_is_ignored(&ws, "build/x.js"));
	CHECK(ws_path_is_ignored(&ws, "a/node_modules/x"));
	CHECK(!ws_path_is_ignored(&ws, "build"));
	CHECK(!ws_path_is_ignored(&ws, "src/dist.js"));
	workspace_close(&ws);
	CHECK(ws.dirfd == -1);
	strbuf_release(&err);
	free(missing);
	free(link);
}

static void test_open_confinement(void)
{
	static const struct {
		const char *path;
		const char *code;
	} cases[] = {
		{ "link_out/secret.txt", "path_outside_workspace" },
		{ "link_up/outside/secret.txt", "path_outside_workspace" },
		{ "link_up/ws/plain.txt", "path_outside_workspace" },
		{ "link_abs/secret.txt", "path_outside_workspace" },
		{ "link_etc/hostname", "path_outside_workspace" },
		{ "link_proc/self/root/etc/hostname", "path_outside_workspace" },
		{ "chain1/secret.txt", "path_outside_workspace" },
		{ "link_file_out", "path_outside_workspace" },
		{ "link_file_in", "not_a_file" },
		{ "dangling", "path_outside_workspace" },
		{ "dangling_in", "not_found" },
		{ "loop_a", "invalid_path" },
		{ "missing.txt", "not_found" },
		{ "plain.txt/x", "not_a_directory" },
	};
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };
	struct strbuf sb = STRBUF_INIT;
	char *abs_out = path_in(top, "outside");
	int fd;

	fixture_reset();
	put(ws_root, "plain.txt", "plain\n");
	mkd(ws_root, "dir");
	put(ws_root, "dir/in.txt", "inside\n");
	sym("../outside", ws_root, "link_out");
	sym("..", ws_root, "link_up");
	sym(abs_out, ws_root, "link_abs");
	sym("/etc", ws_root, "link_etc");
	sym("/proc", ws_root, "link_proc");
	sym("chain2", ws_root, "chain1");
	sym("../outside", ws_root, "chain2");
	sym("../outside/secret.txt", ws_root, "link_file_out");
	sym("plain.txt", ws_root, "link_file_in");
	sym("dir", ws_root, "link_dir_in");
	sym("../outside/none", ws_root, "dangling");
	sym("nothing_here", ws_root, "dangling_in");
	sym("loop_b", ws_root, "loop_a");
	sym("loop_a", ws_root, "loop_b");
	CHECK(open_ws(&ws, NULL) == 0);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&err, 0, sizeof(err));
		fd = ws_open(&ws, cases[i].path, O_RDONLY, 0, &err);
		CHECK(fd == -1);
		if (fd >= 0)
			close(fd);
		if (strcmp(err.code, cases[i].code))
			fprintf(stderr, "%s: got %s (%s)\n", cases[i].path, err.code,
				err.message);
		CHECK_STR(err.code, cases[i].code);
	}
	/* a symlinked folder that stays inside is followed */
	CHECK(ws_read_file(&ws, "link_dir_in/in.txt", 100, &sb, &err) == 0);
	CHECK_STR(sb.buf, "inside\n");
	/* O_TRUNC through a link to outside never truncates */
	fd = ws_open(&ws, "link_file_out", O_WRONLY | O_TRUNC, 0, &err);
	CHECK(fd == -1);
	fd = ws_open(&ws, "link_out/new.txt", O_WRONLY | O_CREAT, 0644, &err);
	CHECK(fd == -1);
	CHECK_STR(err.code, "path_outside_workspace");
	/* a folder opens, a regular file opens */
	fd = ws_open(&ws, "dir", O_RDONLY | O_DIRECTORY, 0, &err);
	CHECK(fd >= 0);
	close(fd);
	fd = ws_open(&ws, "plain.txt", O_RDONLY, 0, &err);
	CHECK(fd >= 0);
	close(fd);
	fd = ws_open(&ws, "../outside/secret.txt", O_RDONLY, 0, &err);
	CHECK(fd == -1);
	CHECK_STR(err.code, "path_outside_workspace");
	workspace_close(&ws);
	outside_intact();
	strbuf_release(&sb);
	free(abs_out);
}

static void test_read_write(void)
{
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };
	struct strbuf sb = STRBUF_INIT;
	struct stat st;
	int created = -1;
	char *s, *p;

	fixture_reset();
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(ws_write_file_ex(&ws, "src/js/app.js", "hello", 5, 0644, &created, &err) == 0);
	CHECK(created == 1);
	s = slurp(ws_root, "src/js/app.js");
	CHECK(s && !strcmp(s, "hello"));
	free(s);
	CHECK(ws_write_file_ex(&ws, "src/js/app.js", "bye", 3, 0644, &created, &err) == 0);
	CHECK(created == 0);
	CHECK(ws_read_file(&ws, "src/js/app.js", 100, &sb, &err) == 0);
	CHECK_STR(sb.buf, "bye");
	strbuf_reset(&sb);
	CHECK(ws_read_file(&ws, "src/js/app.js", 2, &sb, &err) == -1);
	CHECK_STR(err.code, "too_large");
	CHECK(sb.len == 0);
	CHECK(ws_read_file(&ws, "src", 100, &sb, &err) == -1);
	CHECK_STR(err.code, "not_a_file");
	CHECK(ws_write_file(&ws, "run.sh", "#!/bin/sh\n", 10, 0755, &err) == 0);
	p = path_in(ws_root, "run.sh");
	CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0755);
	free(p);
	CHECK(ws_write_file(&ws, "src/js/app.js", "", 0, 0644, &err) == 0);
	s = slurp(ws_root, "src/js/app.js");
	CHECK(s && !strcmp(s, ""));
	free(s);
	/* a 255-byte name is writable (temp names do not grow with it) */
	{
		char name[256];

		memset(name, 'x', 255);
		name[255] = '\0';
		CHECK(ws_write_file(&ws, name, "x", 1, 0644, &err) == 0);
		CHECK(exists_in(ws_root, name));
	}
	/* refusals */
	CHECK(ws_write_file(&ws, "node_modules/x.js", "x", 1, 0644, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(!exists_in(ws_root, "node_modules"));
	CHECK(ws_write_file(&ws, "a/.git/config", "x", 1, 0644, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(ws_write_file(&ws, "src", "x", 1, 0644, &err) == -1);
	CHECK_STR(err.code, "not_a_file");
	CHECK(ws_write_file(&ws, "src/js/app.js/x", "x", 1, 0644, &err) == -1);
	CHECK_STR(err.code, "not_a_directory");
	sym("../outside/secret.txt", ws_root, "out_link");
	CHECK(ws_write_file(&ws, "out_link", "pwned", 5, 0644, &err) == -1);
	CHECK_STR(err.code, "path_outside_workspace");
	sym("../outside/fresh.txt", ws_root, "dangling");
	CHECK(ws_write_file(&ws, "dangling", "pwned", 5, 0644, &err) == -1);
	CHECK(!exists_in(outside, "fresh.txt"));
	sym("../outside", ws_root, "out_dir");
	CHECK(ws_write_file(&ws, "out_dir/fresh.txt", "pwned", 5, 0644, &err) == -1);
	CHECK_STR(err.code, "path_outside_workspace");
	CHECK(ws_write_file(&ws, "out_dir/sub/fresh.txt", "pwned", 5, 0644, &err) == -1);
	CHECK(!exists_in(outside, "sub"));
	workspace_close(&ws);
	outside_intact();
	strbuf_release(&sb);
}

static int no_temp_files_cb(void *ctx, const char *rel, const struct stat *st)
{
	int *found = ctx;

	(void)st;
	if (strstr(rel, ".kiln-tmp-"))
		(*found)++;
	return 0;
}

static int count_cb(void *ctx, const char *rel, const struct stat *st)
{
	unsigned *n = ctx;

	(void)rel;
	(void)st;
	(*n)++;
	return 0;
}

static void test_write_limits(void)
{
	struct workspace ws;
	struct ws_limits lim;
	struct tool_error err = { { 0 }, { 0 } };
	char big[2048];
	int temps = 0;
	unsigned n = 0;

	fixture_reset();
	ws_limits_default(&lim);
	lim.max_file_size = 1000;
	lim.max_files = 3;
	lim.max_total_size = 1500;
	CHECK(open_ws(&ws, &lim) == 0);
	memset(big, 'b', sizeof(big));
	CHECK(ws_write_file(&ws, "new/dir/big.txt", big, 1001, 0644, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	CHECK(!exists_in(ws_root, "new"));
	CHECK(ws_write_file(&ws, "a.txt", big, 1000, 0644, &err) == 0);
	CHECK(ws_write_file(&ws, "b.txt", big, 400, 0644, &err) == 0);
	/* total: 1400 + 200 > 1500 */
	CHECK(ws_write_file(&ws, "sub/c.txt", big, 200, 0644, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	CHECK(!exists_in(ws_root, "sub"));
	/* replacing counts the old size out */
	CHECK(ws_write_file(&ws, "b.txt", big, 450, 0644, &err) == 0);
	CHECK(ws_write_file(&ws, "c.txt", big, 0, 0644, &err) == 0);
	/* files: 3 already */
	CHECK(ws_write_file(&ws, "d.txt", big, 0, 0644, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	CHECK(!exists_in(ws_root, "d.txt"));
	/* replacing an existing file is fine at the file cap */
	CHECK(ws_write_file(&ws, "c.txt", "c", 1, 0644, &err) == 0);
	/* ignored folders do not count */
	mkd(ws_root, "node_modules");
	put(ws_root, "node_modules/huge.js", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	CHECK(ws_write_file(&ws, "c.txt", "cc", 2, 0644, &err) == 0);
	CHECK(ws_walk(&ws, "", 0, no_temp_files_cb, &temps, &err) == 0);
	CHECK(temps == 0);
	CHECK(ws_walk(&ws, "", 0, count_cb, &n, &err) == 0);
	CHECK(n == 3);
	workspace_close(&ws);
	outside_intact();
}

static void test_delete(void)
{
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };

	fixture_reset();
	put(ws_root, "a.txt", "a");
	mkd(ws_root, "dir");
	put(ws_root, "dir/b.txt", "b");
	sym("../outside/secret.txt", ws_root, "out_link");
	sym("../outside", ws_root, "out_dir");
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(ws_delete_file(&ws, "a.txt", &err) == 0);
	CHECK(!exists_in(ws_root, "a.txt"));
	CHECK(ws_delete_file(&ws, "a.txt", &err) == -1);
	CHECK_STR(err.code, "not_found");
	CHECK(ws_delete_file(&ws, "dir", &err) == -1);
	CHECK_STR(err.code, "not_a_file");
	CHECK(ws_delete_file(&ws, "dir/b.txt", &err) == 0);
	/* deleting a link removes the link, never its target */
	CHECK(ws_delete_file(&ws, "out_link", &err) == 0);
	CHECK(!exists_in(ws_root, "out_link"));
	CHECK(ws_delete_file(&ws, "out_dir/secret.txt", &err) == -1);
	CHECK_STR(err.code, "path_outside_workspace");
	CHECK(ws_delete_file(&ws, "../outside/secret.txt", &err) == -1);
	CHECK(ws_delete_file(&ws, "node_modules/x", &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	workspace_close(&ws);
	outside_intact();
}

static void test_rename(void)
{
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };
	char *s;

	fixture_reset();
	put(ws_root, "a.txt", "A");
	put(ws_root, "b.txt", "B");
	mkd(ws_root, "dir");
	sym("../outside", ws_root, "out_dir");
	sym("../outside/secret.txt", ws_root, "out_link");
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(ws_rename_file(&ws, "a.txt", "b.txt", 0, &err) == -1);
	CHECK_STR(err.code, "exists");
	s = slurp(ws_root, "b.txt");
	CHECK(s && !strcmp(s, "B"));
	free(s);
	CHECK(ws_rename_file(&ws, "a.txt", "b.txt", 1, &err) == 0);
	s = slurp(ws_root, "b.txt");
	CHECK(s && !strcmp(s, "A"));
	free(s);
	CHECK(!exists_in(ws_root, "a.txt"));
	CHECK(ws_rename_file(&ws, "b.txt", "new/deep/c.txt", 0, &err) == 0);
	CHECK(exists_in(ws_root, "new/deep/c.txt"));
	CHECK(ws_rename_file(&ws, "missing", "x", 0, &err) == -1);
	CHECK_STR(err.code, "not_found");
	CHECK(ws_rename_file(&ws, "dir", "dir2", 0, &err) == -1);
	CHECK_STR(err.code, "not_a_file");
	CHECK(ws_rename_file(&ws, "new/deep/c.txt", "dir", 1, &err) == -1);
	CHECK_STR(err.code, "not_a_file");
	CHECK(ws_rename_file(&ws, "new/deep/c.txt", "new/deep/c.txt", 0, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(ws_rename_file(&ws, "new/deep/c.txt", "out_dir/c.txt", 0, &err) == -1);
	CHECK_STR(err.code, "path_outside_workspace");
	CHECK(ws_rename_file(&ws, "out_dir/secret.txt", "stolen.txt", 0, &err) == -1);
	CHECK_STR(err.code, "path_outside_workspace");
	CHECK(ws_rename_file(&ws, "new/deep/c.txt", "dist/c.txt", 0, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	/* a link is moved as a link */
	CHECK(ws_rename_file(&ws, "out_link", "moved_link", 0, &err) == 0);
	CHECK(exists_in(ws_root, "moved_link"));
	workspace_close(&ws);
	outside_intact();
}

struct collect {
	struct strbuf sb;
	int stop_after;
	int seen;
};

static int collect_cb(void *ctx, const char *rel, const struct stat *st)
{
	struct collect *c = ctx;

	strbuf_addf(&c->sb, "%s%s;", rel, S_ISDIR(st->st_mode) ? "/" : "");
	if (++c->seen == c->stop_after)
		return 7;
	return 0;
}

static void test_walk(void)
{
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };
	struct collect c = { STRBUF_INIT, 0, 0 };
	static const char *const extra[] = { "cache", NULL };
	struct strbuf e = STRBUF_INIT;
	char *p;

	fixture_reset();
	mkd(ws_root, "b");
	put(ws_root, "b/z.txt", "z");
	mkd(ws_root, "b/c");
	put(ws_root, "b/c/deep.txt", "d");
	put(ws_root, "a.txt", "a");
	put(ws_root, "a", "a");
	mkd(ws_root, "node_modules");
	put(ws_root, "node_modules/x.js", "x");
	mkd(ws_root, "dist");
	mkd(ws_root, ".git");
	mkd(ws_root, "cache");
	put(ws_root, "cache/x", "x");
	put(ws_root, "dist.js", "not ignored: a file");
	sym("b", ws_root, "link_b");
	sym("../outside", ws_root, "link_out");
	p = path_in(ws_root, "fifo");
	CHECK(mkfifo(p, 0644) == 0);
	free(p);
	put(ws_root, "bad\x01name", "x");
	CHECK(workspace_open(&ws, ws_root, NULL, extra, &e) == 0);
	CHECK(ws_walk(&ws, "", 0, collect_cb, &c, &err) == 0);
	CHECK_STR(c.sb.buf, "a;a.txt;b/;b/c/;b/c/deep.txt;b/z.txt;dist.js;");
	strbuf_reset(&c.sb);
	CHECK(ws_walk(&ws, "", 1, collect_cb, &c, &err) == 0);
	CHECK_STR(c.sb.buf, "a;a.txt;b/;dist.js;");
	strbuf_reset(&c.sb);
	CHECK(ws_walk(&ws, "b", 0, collect_cb, &c, &err) == 0);
	CHECK_STR(c.sb.buf, "b/c/;b/c/deep.txt;b/z.txt;");
	strbuf_reset(&c.sb);
	c.seen = 0;
	c.stop_after = 2;
	CHECK(ws_walk(&ws, "", 0, collect_cb, &c, &err) == 7);
	CHECK_STR(c.sb.buf, "a;a.txt;");
	CHECK(ws_walk(&ws, "node_modules", 0, collect_cb, &c, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(ws_walk(&ws, "cache", 0, collect_cb, &c, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(ws_walk(&ws, "link_out", 0, collect_cb, &c, &err) == -1);
	CHECK_STR(err.code, "path_outside_workspace");
	CHECK(ws_walk(&ws, "a.txt", 0, collect_cb, &c, &err) == -1);
	CHECK_STR(err.code, "not_a_directory");
	CHECK(ws_walk(&ws, "nope", 0, collect_cb, &c, &err) == -1);
	CHECK_STR(err.code, "not_found");
	CHECK(ws_walk(&ws, "../outside", 0, collect_cb, &c, &err) == -1);
	workspace_close(&ws);
	strbuf_release(&c.sb);
	strbuf_release(&e);
}

/* A symlink to an ignored folder leads into it: walking, writing,
 * deleting and renaming through it are refused like the folder itself,
 * and a refused write leaves no folder behind in there. */
static void test_links_into_ignored_folders(void)
{
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };
	struct collect c = { STRBUF_INIT, 0, 0 };
	char *p;
	int fd;

	fixture_reset();
	mkd(ws_root, "node_modules");
	mkd(ws_root, "node_modules/pkg");
	put(ws_root, "node_modules/pkg/index.js", "dep");
	mkd(ws_root, "src");
	put(ws_root, "src/app.js", "app");
	sym("node_modules", ws_root, "nm");
	sym("node_modules/pkg", ws_root, "pkg_link");
	sym("../node_modules", ws_root, "src/up_nm");
	sym("src", ws_root, "src_link");
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(ws_walk(&ws, "nm", 0, collect_cb, &c, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(ws_walk(&ws, "pkg_link", 0, collect_cb, &c, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(ws_walk(&ws, "src/up_nm", 0, collect_cb, &c, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(c.sb.len == 0);
	/* a link to an ordinary folder is followed as before */
	CHECK(ws_walk(&ws, "src_link", 0, collect_cb, &c, &err) == 0);
	CHECK_STR(c.sb.buf, "src_link/app.js;");
	CHECK(ws_write_file(&ws, "nm/evil.js", "x", 1, 0644, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(ws_write_file(&ws, "pkg_link/index.js", "x", 1, 0644, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(ws_write_file(&ws, "nm/new/deeper/x.js", "x", 1, 0644, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(!exists_in(ws_root, "node_modules/new"));
	CHECK(ws_delete_file(&ws, "pkg_link/index.js", &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(ws_rename_file(&ws, "src/app.js", "nm/app.js", 0, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(ws_rename_file(&ws, "src/up_nm/pkg/index.js", "stolen.js", 0, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(exists_in(ws_root, "node_modules/pkg/index.js") && exists_in(ws_root, "src/app.js"));
	CHECK(!exists_in(ws_root, "node_modules/evil.js"));
	/* reading stays allowed */
	fd = ws_open(&ws, "nm/pkg/index.js", O_RDONLY, 0, &err);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(ws_fd_is_ignored(&ws, fd, "nm/pkg/index.js", &err) == 1);
		close(fd);
	}
	fd = ws_open(&ws, "src_link/app.js", O_RDONLY, 0, &err);
	CHECK(fd >= 0 && ws_fd_is_ignored(&ws, fd, "src_link/app.js", &err) == 0);
	if (fd >= 0)
		close(fd);
	/* a file named like an ignored folder is just a file */
	put(ws_root, "src/dist", "a file");
	fd = ws_open(&ws, "src/dist", O_RDONLY, 0, &err);
	CHECK(fd >= 0 && ws_fd_is_ignored(&ws, fd, "src/dist", &err) == 0);
	if (fd >= 0)
		close(fd);
	p = path_in(ws_root, "node_modules");
	CHECK(access(p, F_OK) == 0);
	free(p);
	workspace_close(&ws);
	strbuf_release(&c.sb);
}

/* ws_measure sees a workspace past its limits, a folder too big to walk
 * included; ws_walk refuses that folder, ws_walk_ex cuts it. */
static void test_measure_and_big_folders(void)
{
	struct workspace ws;
	struct ws_limits lim;
	struct tool_error err = { { 0 }, { 0 } };
	struct collect c = { STRBUF_INIT, 0, 0 };
	struct strbuf why = STRBUF_INIT, name = STRBUF_INIT;
	struct ws_usage u;
	int cut = -1, dfd;
	char *p;

	fixture_reset();
	put(ws_root, "a.txt", "12345");
	mkd(ws_root, "sub");
	put(ws_root, "sub/big.bin", "1234567890");
	mkd(ws_root, "node_modules");
	put(ws_root, "node_modules/huge.js", "not counted, however big");
	ws_limits_default(&lim);
	lim.max_files = 2;
	lim.max_total_size = 15;
	lim.max_file_size = 10;
	CHECK(open_ws(&ws, &lim) == 0);
	CHECK(ws_measure(&ws, &u, &err) == 0);
	CHECK(u.files == 2 && u.bytes == 15 && u.largest_size == 10 && !u.cut);
	CHECK_STR(u.largest, "sub/big.bin");
	CHECK(!ws_usage_over_limits(&ws, &u));
	put(ws_root, "b.txt", "12345678901");
	CHECK(ws_measure(&ws, &u, &err) == 0);
	CHECK(ws_usage_over_limits(&ws, &u));
	ws_usage_describe(&ws, &u, &why);
	CHECK_STR(why.buf, "3 files (limit 2), 26 bytes in all (limit 15), b.txt of 11 bytes "
		  "(files are limited to 10)");
	workspace_close(&ws);

	/* one folder over WS_WALK_MAX_DIR_ENTRIES */
	mkd(ws_root, "many");
	p = path_in(ws_root, "many");
	dfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(p);
	CHECK(dfd >= 0);
	for (int i = 0; dfd >= 0 && i <= WS_WALK_MAX_DIR_ENTRIES; i++) {
		int fd;

		strbuf_reset(&name);
		strbuf_addf(&name, "%06d", i);
		fd = openat(dfd, name.buf, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		CHECK(fd >= 0);
		if (fd >= 0)
			close(fd);
	}
	if (dfd >= 0)
		close(dfd);
	ws_limits_default(&lim);
	CHECK(open_ws(&ws, &lim) == 0);
	CHECK(ws_walk(&ws, "", 0, collect_cb, &c, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	c.seen = 0;
	CHECK(ws_walk_ex(&ws, "", 0, WS_WALK_CUT_BIG_DIRS, collect_cb, &c, &cut, &err) == 0);
	CHECK(cut == 1);
	CHECK(c.seen == 4 + 1 + WS_WALK_MAX_DIR_ENTRIES); /* a, b, sub/, big, many/ + cut */
	CHECK(ws_measure(&ws, &u, &err) == 0);
	CHECK(u.cut && ws_usage_over_limits(&ws, &u));
	strbuf_reset(&why);
	ws_usage_describe(&ws, &u, &why);
	CHECK(strstr(why.buf, "a folder of more than 65536 entries") != NULL);
	workspace_close(&ws);
	p = path_in(ws_root, "many");
	rm_rf(p);
	free(p);
	strbuf_release(&c.sb);
	strbuf_release(&why);
	strbuf_release(&name);
}

/* WS_MODE_KEEP: the replaced file's execute bit survives, a new file is
 * 0644; an explicit mode still sets it. */
static void test_write_mode_keep(void)
{
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };
	struct stat st;
	char *p = path_in(ws_root, "run.sh");

	fixture_reset();
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(ws_write_file(&ws, "run.sh", "a", 1, 0755, &err) == 0);
	CHECK(ws_write_file(&ws, "run.sh", "b", 1, WS_MODE_KEEP, &err) == 0);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0755);
	CHECK(ws_write_file(&ws, "run.sh", "c", 1, 0644, &err) == 0);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0644);
	CHECK(ws_write_file(&ws, "run.sh", "d", 1, WS_MODE_KEEP, &err) == 0);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0644);
	free(p);
	CHECK(ws_write_file(&ws, "fresh.sh", "e", 1, WS_MODE_KEEP, &err) == 0);
	p = path_in(ws_root, "fresh.sh");
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0644);
	free(p);
	workspace_close(&ws);
}

static void test_special_files(void)
{
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };
	struct strbuf sb = STRBUF_INIT;
	struct sockaddr_un sa;
	char *p;
	int fd, s;

	fixture_reset();
	p = path_in(ws_root, "fifo");
	CHECK(mkfifo(p, 0644) == 0);
	free(p);
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	p = path_in(ws_root, "sock");
	CHECK(strlen(p) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, p, strlen(p) + 1);
	CHECK(bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	close(s);
	free(p);
	p = path_in(ws_root, "chardev");
	if (mknod(p, S_IFCHR | 0644, makedev(1, 5)) < 0)
		CHECK(symlink("/dev/zero", p) == 0);
	free(p);
	sym("/dev/null", ws_root, "devnull");
	CHECK(open_ws(&ws, NULL) == 0);
	/* none of these may hang or be opened for I/O */
	CHECK(ws_read_file(&ws, "fifo", 100, &sb, &err) == -1);
	CHECK_STR(err.code, "special_file");
	fd = ws_open(&ws, "fifo", O_WRONLY, 0, &err);
	CHECK(fd == -1);
	CHECK_STR(err.code, "special_file");
	CHECK(ws_read_file(&ws, "sock", 100, &sb, &err) == -1);
	CHECK_STR(err.code, "special_file");
	CHECK(ws_read_file(&ws, "chardev", 100, &sb, &err) == -1);
	CHECK(!strcmp(err.code, "special_file") || !strcmp(err.code, "path_outside_workspace"));
	CHECK(ws_read_file(&ws, "devnull", 100, &sb, &err) == -1);
	CHECK_STR(err.code, "path_outside_workspace");
	CHECK(ws_write_file(&ws, "fifo", "x", 1, 0644, &err) == -1);
	CHECK_STR(err.code, "special_file");
	CHECK(ws_write_file(&ws, "chardev", "x", 1, 0644, &err) == -1);
	CHECK(ws_delete_file(&ws, "fifo", &err) == -1);
	CHECK_STR(err.code, "special_file");
	CHECK(ws_rename_file(&ws, "sock", "sock2", 0, &err) == -1);
	CHECK_STR(err.code, "special_file");
	CHECK(sb.len == 0);
	workspace_close(&ws);
	strbuf_release(&sb);
}

static void test_hardlink(void)
{
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };
	struct strbuf sb = STRBUF_INIT;
	char *src = path_in(outside, "secret.txt"), *dst = path_in(ws_root, "hl");
	char *s;
	int fd;

	fixture_reset();
	CHECK(link(src, dst) == 0);
	put(ws_root, "own.txt", "own");
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(ws_read_file(&ws, "hl", 1000, &sb, &err) == -1);
	CHECK_STR(err.code, "hardlink_refused");
	CHECK(sb.len == 0);
	fd = ws_open(&ws, "hl", O_WRONLY | O_TRUNC, 0, &err);
	CHECK(fd == -1);
	CHECK_STR(err.code, "hardlink_refused");
	CHECK(ws_write_file(&ws, "hl", "pwned", 5, 0644, &err) == -1);
	CHECK_STR(err.code, "hardlink_refused");
	outside_intact();
	/* removing the link inside is harmless and allowed */
	CHECK(ws_delete_file(&ws, "hl", &err) == 0);
	s = slurp(outside, "secret.txt");
	CHECK(s && !strcmp(s, SECRET "\n"));
	free(s);
	workspace_close(&ws);
	outside_intact();
	strbuf_release(&sb);
	free(src);
	free(dst);
}

/* A thread swaps a real folder and a symlink to outside/ while writes and
 * reads go through the swapped name: the kernel's resolution must never
 * land outside. */
static atomic_int race_stop;

static void *flipper(void *arg)
{
	int dfd = *(int *)arg;

	while (!atomic_load(&race_stop))
		renameat2(dfd, "flip", dfd, "flip_alt", RENAME_EXCHANGE);
	return NULL;
}

static void test_symlink_race(void)
{
	struct workspace ws;
	struct tool_error err = { { 0 }, { 0 } };
	struct strbuf sb = STRBUF_INIT;
	pthread_t th;
	int dfd, ok_reads = 0, leaks = 0;

	fixture_reset();
	mkd(ws_root, "flip");
	put(ws_root, "flip/secret.txt", "inside\n");
	sym("../outside", ws_root, "flip_alt");
	CHECK(open_ws(&ws, NULL) == 0);
	dfd = ws.dirfd;
	atomic_store(&race_stop, 0);
	CHECK(pthread_create(&th, NULL, flipper, &dfd) == 0);
	for (int i = 0; i < 2000; i++) {
		strbuf_reset(&sb);
		if (ws_read_file(&ws, "flip/secret.txt", 1000, &sb, &err) == 0) {
			ok_reads++;
			if (strstr(sb.buf, SECRET))
				leaks++;
		}
		if (i % 10 == 0)
			ws_write_file(&ws, "flip/new.txt", "race", 4, 0644, &err);
	}
	atomic_store(&race_stop, 1);
	pthread_join(th, NULL);
	CHECK(leaks == 0);
	CHECK(!exists_in(outside, "new.txt"));
	fprintf(stderr, "symlink race: %d of 2000 reads succeeded, none leaked\n", ok_reads);
	workspace_close(&ws);
	outside_intact();
	strbuf_release(&sb);
}

static void test_error_message_bounds(void)
{
	struct tool_error err = { { 0 }, { 0 } };
	char path[1000];

	/* a long UTF-8 path is quoted cut on a character boundary */
	for (size_t i = 0; i + 2 <= sizeof(path) - 1; i += 2) {
		path[i] = (char)0xc3;
		path[i + 1] = (char)0xa9;
	}
	path[sizeof(path) - 2] = 'x';
	path[sizeof(path) - 1] = '\0';
	ws_set_error(&err, "not_found", path, "no such file");
	CHECK_STR(err.code, "not_found");
	CHECK(strlen(err.message) < 300);
	CHECK(strstr(err.message, "...: no such file") != NULL);
	CHECK(ws_utf8_prefix("\xc3\xa9\xc3\xa9", 4, 3) == 2);
	CHECK(ws_utf8_prefix("abc", 3, 10) == 3);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	struct strbuf sb = STRBUF_INIT;

	alarm(300); /* a hang (a FIFO opened for reading) must fail the suite */
	strbuf_addf(&sb, "%s/kiln-ws-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	top = strbuf_detach(&sb, NULL);
	if (!mkdtemp(top)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(ws_root, sizeof(ws_root), "%s/ws", top);
	snprintf(outside, sizeof(outside), "%s/outside", top);
	RUN(test_limits_default);
	RUN(test_path_check);
	RUN(test_workspace_open);
	RUN(test_open_confinement);
	RUN(test_read_write);
	RUN(test_write_limits);
	RUN(test_delete);
	RUN(test_rename);
	RUN(test_walk);
	RUN(test_links_into_ignored_folders);
	RUN(test_measure_and_big_folders);
	RUN(test_write_mode_keep);
	RUN(test_special_files);
	RUN(test_hardlink);
	RUN(test_symlink_race);
	RUN(test_error_message_bounds);
	rm_rf(top);
	free(top);
	return harness_done("workspace");
}
