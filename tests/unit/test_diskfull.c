/*
 * test_diskfull - a full disk under the checkpoint store: writing a
 * checkpoint fails cleanly (an error, no partial archive), and every
 * checkpoint stored before still verifies and restores.
 *
 * Twice where the machine allows it: on a small filesystem of its own (a
 * 2 MiB tmpfs mounted for the test, root only), and with the store's disk
 * made to look full by the ENOSPC injection of fileutil.h. Where mounting is
 * not allowed the injected run is the only one, and says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt_restore.h"
#include "ckpt_store.h"
#include "fileutil.h"
#include "harness.h"
#include "manifest.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

static char root[64];
static char mnt[128], unmounted[128], ws_small[128], ws_big[128];
/* Where the store's folder is made, and whether its disk is made to look
 * full (KILN_FAULT_ENOSPC) rather than really filled. */
static const char *store_parent;
static int inject_enospc;

static int open_in(void *ctx, const char *path)
{
	struct tool_error terr;

	return ws_open(ctx, path, O_RDONLY, 0, &terr);
}

/* Fills dir with n files of size bytes of incompressible data. */
static void make_tree(const char *dir, int n, size_t size)
{
	struct strbuf path = STRBUF_INIT;
	char *data = xcalloc(1, size);
	int i;

	mkdir_p(dir, 0755);
	for (i = 0; i < n; i++) {
		random_bytes(data, size);
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/f%03d.bin", dir, i);
		file_write_atomic(path.buf, data, size, 0644);
	}
	free(data);
	strbuf_release(&path);
}

static int snapshot(struct ckpt_store *st, const char *dir, struct ckpt_info *info, struct strbuf *err)
{
	struct workspace ws;
	struct manifest m;
	struct tool_error terr;
	int rc;

	manifest_init(&m);
	if (workspace_open(&ws, dir, NULL, NULL, err) < 0)
		return -1;
	rc = manifest_build(&ws, &m, &terr);
	if (rc == 0)
		rc = ckpt_write(st, &m, NULL, NULL, open_in, &ws, info, err);
	manifest_release(&m);
	workspace_close(&ws);
	return rc;
}

static void full_disk_fails_cleanly(void)
{
	struct strbuf err = STRBUF_INIT, store = STRBUF_INIT, staging = STRBUF_INIT;
	struct ckpt_store st;
	struct ckpt_info small, big;
	struct ckpt_list list;
	int rc;

	strbuf_addf(&store, "%s/checkpoints", store_parent);
	CHECK(ckpt_store_open(&st, store.buf, NULL, &err) == 0);
	make_tree(ws_small, 8, 16 * 1024);
	make_tree(ws_big, 40, 96 * 1024); /* ~3.8 MB of random bytes: cannot fit */
	CHECK(snapshot(&st, ws_small, &small, &err) == 0);
	strbuf_reset(&err);
	if (inject_enospc)
		setenv(FILEUTIL_FAULT_ENOSPC_ENV, store.buf, 1);
	rc = snapshot(&st, ws_big, &big, &err);
	unsetenv(FILEUTIL_FAULT_ENOSPC_ENV);
	CHECK(rc == -ENOSPC);
	if (rc < 0)
		printf("  full disk answered: %s\n", err.buf);
	/* only the first archive is in the store; nothing half-written counts */
	CHECK(ckpt_list(&st, &list, &err) == 0);
	CHECK(list.n == 1);
	if (list.n == 1)
		CHECK_STR(list.names[0], small.name);
	ckpt_list_release(&list);
	strbuf_reset(&err);
	CHECK(ckpt_verify(&st, small.name, small.sha256, &err) == 0);
	/* and it still restores (into a folder outside the full filesystem) */
	strbuf_addf(&staging, "%s/restored", root);
	CHECK(ckpt_extract(&st, small.name, small.sha256, staging.buf, &err) == 0);
	ckpt_store_close(&st);
	/* reopening clears what the failed writer left in tmp/ */
	CHECK(ckpt_store_open(&st, store.buf, NULL, &err) == 0);
	ckpt_store_close(&st);
	/* the other variant starts from nothing */
	rm_rf(store.buf);
	rm_rf(staging.buf);
	rm_rf(ws_small);
	rm_rf(ws_big);
	strbuf_release(&err);
	strbuf_release(&store);
	strbuf_release(&staging);
}

static void test_full_tmpfs_fails_cleanly(void)
{
	store_parent = mnt;
	inject_enospc = 0;
	full_disk_fails_cleanly();
}

static void test_injected_enospc_fails_cleanly(void)
{
	store_parent = unmounted;
	inject_enospc = 1;
	full_disk_fails_cleanly();
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(root, sizeof(root), "%s/kiln-diskfull-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(mnt, sizeof(mnt), "%s/small", root);
	snprintf(ws_small, sizeof(ws_small), "%s/ws-small", root);
	snprintf(ws_big, sizeof(ws_big), "%s/ws-big", root);
	snprintf(unmounted, sizeof(unmounted), "%s/unmounted", root);
	mkdir(mnt, 0755);
	mkdir(unmounted, 0755);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") < 0) {
		printf("no small tmpfs here (%s): the full disk is an injected ENOSPC only\n",
		       strerror(errno));
	} else {
		RUN(test_full_tmpfs_fails_cleanly);
		umount2(mnt, MNT_DETACH);
	}
	RUN(test_injected_enospc_fails_cleanly);
	rm_rf(root);
	return harness_done("diskfull");
}
