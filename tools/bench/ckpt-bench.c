/*
 * ckpt-bench - drives Kiln's checkpoint store directly (build/libkiln.a) so
 * the checkpoint benchmark times exactly what a run's snapshot does to the
 * files: a manifest walk that hashes every file, then the archive write
 * (fsynced), and for a restore the verified extraction (fsynced) and the
 * workspace swap. No database, no HTTP.
 *
 *   ckpt-bench create STORE TREE [BASE_NAME BASE_SHA256]
 *   ckpt-bench restore STORE NAME SHA256 WORKSPACE
 *
 * create prints one JSON object: the archive's name, sha256, size, how many
 * contents it stored itself (the rest is shared with BASE), and the time
 * of the manifest walk and of the write. restore extracts into
 * WORKSPACE.restore-staging (removed first if a crash left it), swaps it
 * with WORKSPACE and prints the time of both steps.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "ckpt_restore.h"
#include "ckpt_store.h"
#include "fileutil.h"
#include "manifest.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

static int open_in_tree(void *ctx, const char *path)
{
	struct tool_error terr;

	return ws_open(ctx, path, O_RDONLY, 0, &terr);
}

static int cmd_create(const char *store, const char *tree, const char *base_name,
		      const char *base_sha)
{
	struct ckpt_store st;
	struct workspace ws;
	struct manifest m;
	struct ckpt_info info;
	struct tool_error terr;
	struct strbuf err = STRBUF_INIT;
	int64_t t0, t1, t2;
	int ret = 1, st_open = 0, ws_open_ok = 0, rc;

	manifest_init(&m);
	if (ckpt_store_open(&st, store, NULL, &err) < 0)
		goto out;
	st_open = 1;
	if (workspace_open(&ws, tree, NULL, NULL, &err) < 0)
		goto out;
	ws_open_ok = 1;
	t0 = mono_ms();
	if (manifest_build(&ws, &m, &terr) < 0) {
		strbuf_addf(&err, "%s: %s", terr.code, terr.message);
		goto out;
	}
	t1 = mono_ms();
	rc = ckpt_write(&st, &m, base_name, base_sha, open_in_tree, &ws, &info, &err);
	if (rc < 0)
		goto out;
	t2 = mono_ms();
	printf("{\"name\":\"%s\",\"sha256\":\"%s\",\"size\":%llu,\"file_count\":%u,"
	       "\"content_size\":%llu,\"stored_count\":%u,\"stored_size\":%llu,"
	       "\"manifest_ms\":%lld,\"write_ms\":%lld}\n",
	       info.name, info.sha256, (unsigned long long)info.size, info.file_count,
	       (unsigned long long)info.content_size, info.stored_count,
	       (unsigned long long)info.stored_size, (long long)(t1 - t0), (long long)(t2 - t1));
	ret = 0;
out:
	if (ret)
		fprintf(stderr, "ckpt-bench create: %s\n", err.buf);
	if (ws_open_ok)
		workspace_close(&ws);
	if (st_open)
		ckpt_store_close(&st);
	manifest_release(&m);
	strbuf_release(&err);
	return ret;
}

static int cmd_restore(const char *store, const char *name, const char *sha,
		       const char *workspace)
{
	struct ckpt_store st;
	struct strbuf err = STRBUF_INIT, staging = STRBUF_INIT;
	int64_t t0, t1, t2;
	int ret = 1, st_open = 0;

	if (ckpt_store_open(&st, store, NULL, &err) < 0)
		goto out;
	st_open = 1;
	strbuf_addf(&staging, "%s.restore-staging", workspace);
	if (rm_rf(staging.buf) < 0) {
		strbuf_addf(&err, "cannot remove %s", staging.buf);
		goto out;
	}
	t0 = mono_ms();
	if (ckpt_extract(&st, name, sha, staging.buf, &err) < 0)
		goto out;
	t1 = mono_ms();
	if (ckpt_swap_into(workspace, staging.buf, &err) < 0)
		goto out;
	t2 = mono_ms();
	printf("{\"extract_ms\":%lld,\"swap_ms\":%lld}\n", (long long)(t1 - t0),
	       (long long)(t2 - t1));
	ret = 0;
out:
	if (ret)
		fprintf(stderr, "ckpt-bench restore: %s\n", err.buf);
	if (st_open)
		ckpt_store_close(&st);
	strbuf_release(&staging);
	strbuf_release(&err);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "create"))
		return cmd_create(argv[2], argv[3], NULL, NULL);
	if (argc == 6 && !strcmp(argv[1], "create"))
		return cmd_create(argv[2], argv[3], argv[4], argv[5]);
	if (argc == 6 && !strcmp(argv[1], "restore"))
		return cmd_restore(argv[2], argv[3], argv[4], argv[5]);
	fputs("usage: ckpt-bench create STORE TREE [BASE_NAME BASE_SHA256]\n"
	      "       ckpt-bench restore STORE NAME SHA256 WORKSPACE\n", stderr);
	return 2;
}
