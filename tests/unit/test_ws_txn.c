/*
 * test_ws_txn - all-or-nothing workspace changes: a successful apply, its
 * undo, an apply that fails half-way (undone by itself), a full disk while
 * staging (on a small tmpfs; root only, skipped elsewhere), confinement,
 * and a crash (SIGKILL at each crash point of apply and undo, in a child)
 * recovered to the whole new or the whole old set.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt_crash.h"
#include "fileutil.h"
#include "harness.h"
#include "strbuf.h"
#include "util.h"
#include "workspace.h"
#include "ws_txn.h"

static char root[64];
static char wsdir[128], staging[128];

static void put(const char *rel, const char *text)
{
	struct strbuf p = STRBUF_INIT, dir = STRBUF_INIT;
	const char *slash;

	strbuf_addf(&p, "%s/%s", wsdir, rel);
	slash = strrchr(p.buf, '/');
	strbuf_add(&dir, p.buf, (size_t)(slash - p.buf));
	mkdir_p(dir.buf, 0755);
	CHECK(file_write_atomic(p.buf, text, strlen(text), 0644) == 0);
	strbuf_release(&p);
	strbuf_release(&dir);
}

/* The content of rel, or "(missing)" / "(folder)". Caller frees. */
static char *get(const char *rel)
{
	struct strbuf p = STRBUF_INIT, data = STRBUF_INIT;
	struct stat st;

	strbuf_addf(&p, "%s/%s", wsdir, rel);
	if (lstat(p.buf, &st) < 0)
		strbuf_addstr(&data, "(missing)");
	else if (S_ISDIR(st.st_mode))
		strbuf_addstr(&data, "(folder)");
	else if (file_read_capped(p.buf, 1 << 20, &data) < 0)
		strbuf_addstr(&data, "(unreadable)");
	strbuf_release(&p);
	return strbuf_detach(&data, NULL);
}

static void check_file(const char *rel, const char *want, int line)
{
	char *have = get(rel);

	if (strcmp(have, want)) {
		fprintf(stderr, "test_ws_txn.c:%d: %s is \"%s\", want \"%s\"\n", line, rel, have, want);
		harness_failed_checks++;
	}
	free(have);
}
#define FILE_IS(rel, want) check_file(rel, want, __LINE__)

static void fresh_workspace(struct workspace *ws)
{
	struct strbuf err = STRBUF_INIT;

	rm_rf(wsdir);
	rm_rf(staging);
	mkdir_p(wsdir, 0755);
	put("index.html", "old index");
	put("sub/b.txt", "old b");
	put("gone.txt", "old gone");
	put("a", "a is a file");
	CHECK(workspace_open(ws, wsdir, NULL, NULL, &err) == 0);
	strbuf_release(&err);
}

static void stage_the_usual(struct ws_txn *t, const struct workspace *ws, struct strbuf *err)
{
	CHECK(ws_txn_begin(t, ws, staging, err) == 0);
	CHECK(ws_txn_write(t, "index.html", "new index", 9, 0644, err) == 0);
	CHECK(ws_txn_write(t, "new/deep/c.txt", "new c", 5, 0644, err) == 0);
	CHECK(ws_txn_write(t, "a/inside.txt", "a is a folder now", 17, 0644, err) == 0);
	ws_txn_delete(t, "gone.txt");
	ws_txn_delete(t, "a");
}

static void check_untouched(void)
{
	FILE_IS("index.html", "old index");
	FILE_IS("sub/b.txt", "old b");
	FILE_IS("gone.txt", "old gone");
	FILE_IS("a", "a is a file");
	FILE_IS("new", "(missing)");
}

static void check_applied(void)
{
	FILE_IS("index.html", "new index");
	FILE_IS("new/deep/c.txt", "new c");
	FILE_IS("a/inside.txt", "a is a folder now");
	FILE_IS("gone.txt", "(missing)");
	FILE_IS("sub/b.txt", "old b");
}

/* Applied, then undone (the revision could not be recorded) or kept. */
static void test_apply_then_undo_or_keep(void)
{
	struct strbuf err = STRBUF_INIT;
	struct workspace ws;
	struct ws_txn t;
	struct stat st;
	int keep;

	for (keep = 0; keep < 2; keep++) {
		fresh_workspace(&ws);
		stage_the_usual(&t, &ws, &err);
		check_untouched(); /* staging alone changes nothing */
		CHECK(ws_txn_apply(&t, &err) == 0);
		check_applied();
		if (!keep) {
			CHECK(ws_txn_undo(&t, &err) == 0);
			check_untouched();
		}
		ws_txn_end(&t);
		/* the staging folder, and with it the old files, is gone */
		CHECK(stat(staging, &st) < 0 && errno == ENOENT);
		if (keep)
			FILE_IS("index.html", "new index");
		workspace_close(&ws);
	}
	strbuf_release(&err);
}

static void test_failure_half_way_undoes_itself(void)
{
	struct strbuf err = STRBUF_INIT;
	struct workspace ws;
	struct ws_txn t;

	fresh_workspace(&ws);
	stage_the_usual(&t, &ws, &err);
	/* staged last: its folder "sub/b.txt" is a file, so this write fails
	 * after every other change was made */
	CHECK(ws_txn_write(&t, "sub/b.txt/x", "x", 1, 0644, &err) == 0);
	strbuf_reset(&err);
	CHECK(ws_txn_apply(&t, &err) == -ENOTDIR);
	CHECK(strstr(strbuf_str(&err), "sub/b.txt") != NULL);
	CHECK(!strstr(strbuf_str(&err), "undoing it failed"));
	check_untouched();
	ws_txn_end(&t);
	workspace_close(&ws);
	strbuf_release(&err);
}

static void test_confined_to_the_workspace(void)
{
	struct strbuf err = STRBUF_INIT, outside = STRBUF_INIT, link = STRBUF_INIT;
	struct workspace ws;
	struct ws_txn t;
	char *have;

	fresh_workspace(&ws);
	strbuf_addf(&outside, "%s/outside", root);
	mkdir_p(outside.buf, 0755);
	strbuf_addf(&link, "%s/out", wsdir);
	CHECK(symlink(outside.buf, link.buf) == 0);
	CHECK(ws_txn_begin(&t, &ws, staging, &err) == 0);
	CHECK(ws_txn_write(&t, "index.html", "new index", 9, 0644, &err) == 0);
	CHECK(ws_txn_write(&t, "out/escape.txt", "escaped", 7, 0644, &err) == 0);
	strbuf_reset(&err);
	CHECK(ws_txn_apply(&t, &err) < 0);
	FILE_IS("index.html", "old index");
	strbuf_addstr(&outside, "/escape.txt");
	CHECK(access(outside.buf, F_OK) < 0);
	ws_txn_end(&t);
	have = get("out");
	CHECK(strcmp(have, "(missing)") != 0);
	free(have);
	workspace_close(&ws);
	strbuf_release(&err);
	strbuf_release(&outside);
	strbuf_release(&link);
}

static void test_full_disk_while_staging_changes_nothing(void)
{
	struct strbuf err = STRBUF_INIT, mnt = STRBUF_INIT;
	struct workspace ws;
	struct ws_txn t;
	char *big;
	int rc;

	/* workspace and staging on one 256 KiB filesystem */
	strbuf_addf(&mnt, "%s/small", root);
	mkdir_p(mnt.buf, 0755);
	if (mount("kiln-test", mnt.buf, "tmpfs", 0, "size=256k") < 0) {
		printf("skip: full disk (cannot mount a tmpfs here: %s)\n", strerror(errno));
		strbuf_release(&mnt);
		return;
	}
	snprintf(wsdir, sizeof(wsdir), "%s/ws", mnt.buf);
	snprintf(staging, sizeof(staging), "%s/.upload-1-test", mnt.buf);
	fresh_workspace(&ws);
	big = xcalloc(1, 512 << 10);
	memset(big, 'x', 512 << 10);
	CHECK(ws_txn_begin(&t, &ws, staging, &err) == 0);
	CHECK(ws_txn_write(&t, "index.html", "new index", 9, 0644, &err) == 0);
	rc = ws_txn_write(&t, "big.bin", big, 512 << 10, 0644, &err);
	CHECK(rc == -ENOSPC);
	ws_txn_end(&t);
	check_untouched();
	FILE_IS("big.bin", "(missing)");
	workspace_close(&ws);
	free(big);
	umount2(mnt.buf, MNT_DETACH);
	snprintf(wsdir, sizeof(wsdir), "%s/ws", root);
	snprintf(staging, sizeof(staging), "%s/.upload-1-test", root);
	strbuf_release(&err);
	strbuf_release(&mnt);
}

/*
 * A child stages the usual change and applies it (then undoes it, for the
 * undo points) with KILN_CRASH_POINT armed, and dies there by SIGKILL. The
 * recovery then finds its staging folder. "stage" dies after staging only.
 */
static void crash_child_at(const char *point)
{
	struct strbuf err = STRBUF_INIT;
	struct workspace ws;
	struct ws_txn t;
	int status = 0;
	pid_t pid;

	fresh_workspace(&ws);
	workspace_close(&ws);
	pid = fork();
	if (pid == 0) {
		if (workspace_open(&ws, wsdir, NULL, NULL, &err) < 0)
			_exit(2);
		stage_the_usual(&t, &ws, &err);
		if (!strcmp(point, "stage"))
			raise(SIGKILL);
		setenv(CKPT_CRASH_ENV, point, 1);
		if (ws_txn_apply(&t, &err) == 0)
			ws_txn_undo(&t, &err);
		_exit(3); /* the point was not reached */
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
		fprintf(stderr, "crash point %s: the child was not killed there (status %d)\n", point, status);
		harness_failed_checks++;
	}
	strbuf_release(&err);
}

static void test_crash_is_recovered_whole(void)
{
	static const struct {
		const char *point;
		int applied; /* what recovery must leave: the new set or the old */
	} cases[] = {
		{ "stage", 0 },          /* no journal yet: nothing had moved */
		{ "ws_txn_apply:1", 1 }, /* journal down, no rename made */
		{ "ws_txn_apply:2", 1 }, /* one change of five made */
		{ "ws_txn_apply:3", 1 }, /* three of five */
		{ "ws_txn_apply:4", 1 }, /* all made, the revision not recorded */
		{ "ws_txn_undo:1", 0 },  /* undo marked, nothing undone yet */
		{ "ws_txn_undo:2", 0 },  /* one step undone */
	};
	struct strbuf err = STRBUF_INIT;
	struct workspace ws;
	struct stat st;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		crash_child_at(cases[i].point);
		CHECK(stat(staging, &st) == 0); /* the crash left its folder */
		CHECK(workspace_open(&ws, wsdir, NULL, NULL, &err) == 0);
		strbuf_reset(&err);
		if (ws_txn_recover(&ws, root, ".upload-1-", &err) != 0) {
			fprintf(stderr, "crash point %s: recovery failed: %s\n", cases[i].point, err.buf);
			harness_failed_checks++;
		}
		if (cases[i].applied)
			check_applied();
		else
			check_untouched();
		CHECK(stat(staging, &st) < 0 && errno == ENOENT);
		/* nothing left to recover: a second pass changes nothing */
		CHECK(ws_txn_recover(&ws, root, ".upload-1-", &err) == 0);
		if (cases[i].applied)
			check_applied();
		else
			check_untouched();
		workspace_close(&ws);
	}
	strbuf_release(&err);
}

int main(void)
{
	if (harness_mkdtemp(root, sizeof(root), "kiln-wstxn") < 0)
		return 1;
	snprintf(wsdir, sizeof(wsdir), "%s/ws", root);
	snprintf(staging, sizeof(staging), "%s/.upload-1-test", root);
	RUN(test_apply_then_undo_or_keep);
	RUN(test_failure_half_way_undoes_itself);
	RUN(test_confined_to_the_workspace);
	RUN(test_full_disk_while_staging_changes_nothing);
	RUN(test_crash_is_recovered_whole);
	rm_rf(root);
	return harness_done("ws_txn");
}
