/*
 * fuzz_wspath.c - libFuzzer target: arbitrary bytes as a workspace-relative
 * path, through the path check, a confined open, a walk and a write+delete,
 * against a temp workspace full of links out. Aborts if anything outside the
 * workspace is opened or changed.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileutil.h"
#include "strbuf.h"
#include "tool_error.h"
#include "workspace.h"

#define SECRET "fuzz-sentinel-outside"
/* The fuzzer's writes leave folders behind; start afresh now and then so
 * the per-write workspace walk stays small. */
#define RESET_EVERY 2000

static struct workspace ws;
static char top[4096], root[4096], outside[4096];
static struct stat outside_objs[3];
static int ready;
static unsigned runs;

static void join(char *out, size_t n, const char *a, const char *b)
{
	int len = snprintf(out, n, "%s/%s", a, b);

	if (len < 0 || (size_t)len >= n)
		abort(); /* a scratch path too long for its buffer: the setup is broken */
}

static void put(const char *dir, const char *name, const char *s)
{
	char p[4200];
	int fd;

	join(p, sizeof(p), dir, name);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		abort();
	close(fd);
}

static void link_in(const char *target, const char *name)
{
	char p[4200];

	join(p, sizeof(p), root, name);
	if (symlink(target, p) < 0)
		abort();
}

static void build(void)
{
	char a[4200], b[4200];
	struct strbuf err = STRBUF_INIT;

	if (ready)
		workspace_close(&ws);
	rm_rf(root);
	if (mkdir(root, 0755) < 0)
		abort();
	put(root, "file.txt", "inside\n");
	join(a, sizeof(a), root, "dir");
	if (mkdir(a, 0755) < 0)
		abort();
	put(a, "in.txt", "inside\n");
	link_in("../outside", "link_out");
	link_in("..", "link_up");
	link_in(outside, "link_abs");
	link_in("../outside/secret.txt", "link_file_out");
	link_in("/proc/self/root", "link_selfroot");
	link_in("dir", "link_in");
	join(a, sizeof(a), outside, "secret.txt");
	join(b, sizeof(b), root, "hl");
	if (link(a, b) < 0)
		abort();
	join(a, sizeof(a), root, "fifo");
	if (mkfifo(a, 0644) < 0)
		abort();
	if (workspace_open(&ws, root, NULL, NULL, &err) < 0)
		abort();
	strbuf_release(&err);
}

static void cleanup(void)
{
	if (ready)
		workspace_close(&ws);
	rm_rf(top);
}

static void setup(void)
{
	const char *tmp = getenv("TMPDIR");
	char p[4200];

	snprintf(top, sizeof(top), "%s/kiln-fuzz-ws-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(top))
		abort();
	join(root, sizeof(root), top, "ws");
	join(outside, sizeof(outside), top, "outside");
	if (mkdir(outside, 0755) < 0)
		abort();
	put(outside, "secret.txt", SECRET);
	join(p, sizeof(p), outside, "secret.txt");
	if (stat(outside, &outside_objs[0]) < 0 || stat(p, &outside_objs[1]) < 0 ||
	    stat(top, &outside_objs[2]) < 0)
		abort();
	build();
	ready = 1;
	atexit(cleanup);
}

static int is_outside(const struct stat *st)
{
	for (size_t i = 0; i < sizeof(outside_objs) / sizeof(outside_objs[0]); i++)
		if (st->st_dev == outside_objs[i].st_dev && st->st_ino == outside_objs[i].st_ino)
			return 1;
	return 0;
}

/* Nothing outside the workspace may change: same entries, same content. */
static void check_outside(void)
{
	struct strbuf sb = STRBUF_INIT;
	char p[4200];
	DIR *d;
	struct dirent *de;
	int n = 0;

	join(p, sizeof(p), outside, "secret.txt");
	if (file_read_capped(p, 1024, &sb) < 0 || strcmp(strbuf_str(&sb), SECRET))
		abort();
	strbuf_release(&sb);
	d = opendir(outside);
	while (d && (de = readdir(d)))
		n++;
	if (!d || n != 3) /* ".", "..", secret.txt */
		abort();
	closedir(d);
	d = opendir(top);
	n = 0;
	while (d && (de = readdir(d)))
		n++;
	if (!d || n != 4) /* ".", "..", ws, outside */
		abort();
	closedir(d);
}

static int walk_cb(void *ctx, const char *rel, const struct stat *st)
{
	struct tool_error err = { { 0 }, { 0 } };

	(void)ctx;
	if (ws_path_check(&ws, rel, strlen(rel), &err) < 0 || is_outside(st))
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tool_error err = { { 0 }, { 0 } };
	struct strbuf sb = STRBUF_INIT;
	struct stat st;
	char *rel;
	int fd;

	if (!ready)
		setup();
	if (++runs % RESET_EVERY == 0)
		build();
	if (ws_path_check(&ws, (const char *)data, size, &err) < 0)
		return 0;
	if (memchr(data, '\0', size) || size == 0 || data[0] == '/')
		abort(); /* the check let through what it must refuse */
	rel = malloc(size + 1);
	if (!rel)
		abort();
	memcpy(rel, data, size);
	rel[size] = '\0';

	fd = ws_open(&ws, rel, O_RDONLY, 0, &err);
	if (fd >= 0) {
		if (fstat(fd, &st) < 0 || is_outside(&st) ||
		    (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)))
			abort();
		close(fd);
	}
	if (ws_read_file(&ws, rel, 4096, &sb, &err) == 0 && strstr(sb.buf, SECRET))
		abort();
	strbuf_release(&sb);
	ws_walk(&ws, rel, 2, walk_cb, NULL, &err);
	if (ws_write_file(&ws, rel, "fuzz", 4, 0644, &err) == 0) {
		if (ws_delete_file(&ws, rel, &err) < 0)
			abort(); /* a file we just wrote must be deletable */
	}
	check_outside();
	free(rel);
	return 0;
}
