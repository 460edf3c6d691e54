/*
 * test_appstate.c - checkpoint limits follow the workspace limits: every
 * workspace the ws_* configuration allows can be checkpointed (a store with
 * the fixed defaults refuses one with more files than 10,000), and the
 * defaults are never lowered.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "appstate.h"
#include "ckpt_store.h"
#include "config.h"
#include "fileutil.h"
#include "harness.h"
#include "manifest.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

#define MANY_FILES 10050 /* past the default checkpoint cap of 10,000 */

static char tmpdir[256];

static void test_limits_follow_the_workspace_limits(void)
{
	struct config cfg;
	struct ckpt_limits lim, def;
	struct strbuf err = STRBUF_INIT;

	CHECK(config_load(&cfg, NULL, &err) == 0);
	ckpt_limits_default(&def);
	ckpt_limits_from_config(&cfg, &lim);
	/* the default workspace limits are within the defaults: unchanged */
	CHECK(lim.max_entries == def.max_entries && lim.max_entry_size == def.max_entry_size &&
	      lim.max_total_size == def.max_total_size);
	cfg.ws_max_files = 50000;
	cfg.ws_max_file_bytes = 200ll << 20;
	cfg.ws_max_total_bytes = 4ll << 30;
	ckpt_limits_from_config(&cfg, &lim);
	CHECK(lim.max_entries == 50000 && lim.max_entry_size == 200ull << 20 &&
	      lim.max_total_size == 4ull << 30);
	/* smaller workspace limits never shrink what archives may hold */
	cfg.ws_max_files = 10;
	cfg.ws_max_file_bytes = 1;
	cfg.ws_max_total_bytes = 1;
	ckpt_limits_from_config(&cfg, &lim);
	CHECK(lim.max_entries == def.max_entries && lim.max_total_size == def.max_total_size);
	config_release(&cfg);
	strbuf_release(&err);
}

static int open_in_ws(void *ctx, const char *path)
{
	const struct workspace *ws = ctx;

	return openat(ws->dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
}

static void test_a_workspace_within_its_limits_checkpoints(void)
{
	struct config cfg;
	struct ckpt_store st, fixed;
	struct workspace ws;
	struct manifest m;
	struct ckpt_info info;
	struct tool_error terr;
	struct strbuf err = STRBUF_INIT, path = STRBUF_INIT;
	int i, rc, fd;

	CHECK(config_load(&cfg, NULL, &err) == 0);
	free(cfg.state_dir);
	cfg.state_dir = xstrdup(tmpdir);
	cfg.ws_max_files = 20000;
	strbuf_addf(&path, "%s/workspaces/1", tmpdir);
	CHECK(mkdir_p(path.buf, 0755) == 0);
	for (i = 0; i < MANY_FILES; i++) {
		char name[64], body[32];

		snprintf(name, sizeof(name), "d%02d/f%05d.txt", i % 50, i);
		snprintf(body, sizeof(body), "file %d\n", i);
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/workspaces/1/d%02d", tmpdir, i % 50);
		mkdir(path.buf, 0755);
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/workspaces/1/%s", tmpdir, name);
		/* no fsync: ten thousand of them would make this test slow */
		fd = open(path.buf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		CHECK(fd >= 0 && fd_write_all(fd, body, strlen(body)) == 0);
		if (fd >= 0)
			close(fd);
	}
	CHECK(app_workspace_open(&cfg, 1, &ws, &err) == 0);
	manifest_init(&m);
	CHECK(manifest_build(&ws, &m, &terr) == 0);
	CHECK(m.n == MANY_FILES);

	/* the fixed defaults refuse it ... */
	strbuf_reset(&path);
	strbuf_addf(&path, "%s/fixed", tmpdir);
	CHECK(ckpt_store_open(&fixed, path.buf, NULL, &err) == 0);
	rc = ckpt_write(&fixed, &m, NULL, NULL, open_in_ws, &ws, &info, &err);
	CHECK(rc == -EFBIG);
	ckpt_store_close(&fixed);

	/* ... the store the services open takes it */
	strbuf_reset(&err);
	CHECK(app_ckpt_store_open(&cfg, &st, &err) == 0);
	rc = ckpt_write(&st, &m, NULL, NULL, open_in_ws, &ws, &info, &err);
	if (rc)
		fprintf(stderr, "ckpt_write: %s\n", err.buf);
	CHECK(rc == 0 && info.file_count == MANY_FILES);
	CHECK(ckpt_verify(&st, info.name, info.sha256, &err) == 0);
	ckpt_store_close(&st);

	manifest_release(&m);
	workspace_close(&ws);
	config_release(&cfg);
	strbuf_release(&err);
	strbuf_release(&path);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/kiln-appstate-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_limits_follow_the_workspace_limits);
	RUN(test_a_workspace_within_its_limits_checkpoints);
	rm_rf(tmpdir);
	return harness_done("appstate");
}
