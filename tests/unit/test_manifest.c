/* test_manifest.c - manifest building, JSON round trip and validation, diff. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileutil.h"
#include "harness.h"
#include "manifest.h"
#include "sha256.h"
#include "strbuf.h"
#include "tool_error.h"
#include "workspace.h"

static char *top;

static const char *H_A = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";
static const char *H_B = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d";

static void put(const char *dir, const char *rel, const char *content, mode_t mode)
{
	struct strbuf p = STRBUF_INIT;
	int fd;

	strbuf_addf(&p, "%s/%s", dir, rel);
	fd = open(p.buf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(write(fd, content, strlen(content)) == (ssize_t)strlen(content));
		CHECK(fchmod(fd, mode) == 0);
		close(fd);
	}
	strbuf_release(&p);
}

static void mkd(const char *dir, const char *rel)
{
	struct strbuf p = STRBUF_INIT;

	strbuf_addf(&p, "%s/%s", dir, rel);
	CHECK(mkdir(p.buf, 0755) == 0);
	strbuf_release(&p);
}

static char *fresh_root(const char *name)
{
	struct strbuf p = STRBUF_INIT;

	strbuf_addf(&p, "%s/%s", top, name);
	rm_rf(p.buf);
	CHECK(mkdir(p.buf, 0755) == 0);
	return strbuf_detach(&p, NULL);
}

/* root/hl: a hard link to top/outside_name, a file outside the workspace. */
static void link_from_outside(const char *root, const char *outside_name)
{
	struct strbuf a = STRBUF_INIT, b = STRBUF_INIT;

	strbuf_addf(&a, "%s/%s", top, outside_name);
	strbuf_addf(&b, "%s/hl", root);
	put(top, outside_name, "secret", 0644);
	CHECK(link(a.buf, b.buf) == 0);
	strbuf_release(&a);
	strbuf_release(&b);
}

static void test_add_sort_find(void)
{
	struct manifest m;

	manifest_init(&m);
	CHECK(manifest_add(&m, "b.txt", 1, H_B, 0644) == 0);
	CHECK(manifest_add(&m, "a/b", 2, H_A, 0755) == 0);
	CHECK(manifest_add(&m, "a.txt", 3, H_A, 0600) == 0);
	CHECK(manifest_add(&m, "bad", 1, "xyz", 0644) == -1);
	CHECK(manifest_add(&m, "bad", 1, "CA978112CA1BBDCAFAC231B39A23DC4DA786EFF8146D11FBA30AC9B53F5D8B53", 0644) == -1);
	CHECK(m.n == 3);
	CHECK(m.total_size == 6);
	manifest_sort(&m);
	/* bytewise order: '.' (0x2e) sorts before '/' (0x2f) */
	CHECK_STR(m.v[0].path, "a.txt");
	CHECK_STR(m.v[1].path, "a/b");
	CHECK_STR(m.v[2].path, "b.txt");
	CHECK(m.v[0].mode == 0644);
	CHECK(m.v[1].mode == 0755);
	CHECK(manifest_find(&m, "a/b") == &m.v[1]);
	CHECK(manifest_find(&m, "b.txt") == &m.v[2]);
	CHECK(manifest_find(&m, "a.txt") == &m.v[0]);
	CHECK(manifest_find(&m, "c") == NULL);
	CHECK(manifest_find(&m, "") == NULL);
	manifest_release(&m);
	CHECK(m.n == 0 && m.v == NULL);
}

static void test_build(void)
{
	char *root = fresh_root("build");
	struct workspace ws;
	struct strbuf e = STRBUF_INIT;
	struct manifest m;
	struct tool_error err = { { 0 }, { 0 } };
	char hex[SHA256_HEX_LEN + 1];
	const struct manifest_entry *ent;

	mkd(root, "src");
	put(root, "src/app.js", "console.log(1);\n", 0644);
	put(root, "index.html", "<html></html>\n", 0644);
	put(root, "run.sh", "#!/bin/sh\n", 0755);
	put(root, "empty", "", 0644);
	mkd(root, "node_modules");
	put(root, "node_modules/dep.js", "x", 0644);
	mkd(root, "dist");
	put(root, "dist/out.js", "x", 0644);
	mkd(root, "empty_dir");
	{
		struct strbuf p = STRBUF_INIT;

		strbuf_addf(&p, "%s/link", root);
		CHECK(symlink("index.html", p.buf) == 0);
		strbuf_reset(&p);
		strbuf_addf(&p, "%s/fifo", root);
		CHECK(mkfifo(p.buf, 0644) == 0);
		strbuf_release(&p);
	}
	CHECK(workspace_open(&ws, root, NULL, NULL, &e) == 0);
	CHECK(manifest_build(&ws, &m, &err) == 0);
	CHECK(m.n == 4);
	CHECK_STR(m.v[0].path, "empty");
	CHECK_STR(m.v[1].path, "index.html");
	CHECK_STR(m.v[2].path, "run.sh");
	CHECK_STR(m.v[3].path, "src/app.js");
	ent = manifest_find(&m, "src/app.js");
	sha256_hex("console.log(1);\n", 16, hex);
	CHECK(ent && !strcmp(ent->sha256, hex) && ent->size == 16);
	ent = manifest_find(&m, "run.sh");
	CHECK(ent && ent->mode == 0755);
	CHECK(m.total_size == 16 + 14 + 10);
	manifest_release(&m);
	workspace_close(&ws);
	strbuf_release(&e);
	free(root);
}

static void test_build_limits(void)
{
	char *root = fresh_root("limits");
	struct workspace ws;
	struct ws_limits lim;
	struct strbuf e = STRBUF_INIT;
	struct manifest m;
	struct tool_error err = { { 0 }, { 0 } };

	put(root, "a", "12345", 0644);
	put(root, "b", "12345", 0644);
	put(root, "c", "12345", 0644);
	ws_limits_default(&lim);
	lim.max_files = 2;
	CHECK(workspace_open(&ws, root, &lim, NULL, &e) == 0);
	CHECK(manifest_build(&ws, &m, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	CHECK(m.n == 0 && m.v == NULL);
	workspace_close(&ws);
	lim.max_files = 10;
	lim.max_total_size = 14;
	CHECK(workspace_open(&ws, root, &lim, NULL, &e) == 0);
	CHECK(manifest_build(&ws, &m, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	CHECK(m.n == 0);
	workspace_close(&ws);
	lim.max_total_size = 15;
	CHECK(workspace_open(&ws, root, &lim, NULL, &e) == 0);
	CHECK(manifest_build(&ws, &m, &err) == 0);
	CHECK(m.n == 3 && m.total_size == 15);
	manifest_release(&m);
	workspace_close(&ws);
	/* a hard link to a file elsewhere is refused, not hashed */
	link_from_outside(root, "outside-file");
	CHECK(workspace_open(&ws, root, NULL, NULL, &e) == 0);
	CHECK(manifest_build(&ws, &m, &err) == -1);
	CHECK_STR(err.code, "hardlink_refused");
	workspace_close(&ws);
	strbuf_release(&e);
	free(root);
}

/* A workspace a command pushed past its limits: manifest_build refuses it,
 * MANIFEST_OVER_LIMITS still lists it (so restore and diff work), up to its
 * own ceilings, and says when it had to leave files out. */
static void test_build_over_limits(void)
{
	char *root = fresh_root("over");
	struct workspace ws;
	struct ws_limits lim;
	struct strbuf e = STRBUF_INIT, name = STRBUF_INIT;
	struct manifest m, draft;
	struct manifest_delta d;
	struct tool_error err = { { 0 }, { 0 } };
	int i;

	for (i = 0; i < 5; i++) {
		strbuf_reset(&name);
		strbuf_addf(&name, "f%d", i);
		put(root, name.buf, "0123456789", 0644);
	}
	ws_limits_default(&lim);
	lim.max_files = 3;
	lim.max_total_size = 40;
	CHECK(workspace_open(&ws, root, &lim, NULL, &e) == 0);
	CHECK(manifest_build(&ws, &m, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	CHECK(manifest_build_ex(&ws, MANIFEST_OVER_LIMITS, &m, &err) == 0);
	CHECK(m.n == 5 && m.total_size == 50 && !m.incomplete);
	/* a diff against it is exact */
	manifest_init(&draft);
	CHECK(manifest_add(&draft, "f0", 10, m.v[0].sha256, 0644) == 0);
	CHECK(manifest_diff(&draft, &m, &d) == 0);
	CHECK(d.nadded == 4 && d.nchanged == 0 && d.ndeleted == 0);
	manifest_delta_release(&d);
	manifest_release(&draft);
	manifest_release(&m);
	/* the file ceiling: MANIFEST_OVER_LIMITS_FACTOR times max_files */
	for (i = 5; i < 30; i++) {
		strbuf_reset(&name);
		strbuf_addf(&name, "g%02d", i);
		put(root, name.buf, "x", 0644);
	}
	lim.max_total_size = 1000;
	workspace_close(&ws);
	CHECK(workspace_open(&ws, root, &lim, NULL, &e) == 0);
	CHECK(manifest_build_ex(&ws, MANIFEST_OVER_LIMITS, &m, &err) == 0);
	CHECK(m.n == 3 * MANIFEST_OVER_LIMITS_FACTOR && m.incomplete);
	manifest_release(&m);
	workspace_close(&ws);
	/* the byte ceiling: 8 times max_total_size hashed at most (75 here) */
	lim.max_files = 100;
	lim.max_total_size = 5;
	CHECK(workspace_open(&ws, root, &lim, NULL, &e) == 0);
	CHECK(manifest_build_ex(&ws, MANIFEST_OVER_LIMITS, &m, &err) == 0);
	CHECK(m.incomplete && m.total_size <= 40 && m.n > 0);
	manifest_release(&m);
	workspace_close(&ws);
	/* entries it cannot hash are left out, not fatal */
	link_from_outside(root, "outside-file-2");
	lim.max_total_size = 1000;
	CHECK(workspace_open(&ws, root, &lim, NULL, &e) == 0);
	CHECK(manifest_build(&ws, &m, &err) == -1);
	CHECK_STR(err.code, "hardlink_refused");
	CHECK(manifest_build_ex(&ws, MANIFEST_OVER_LIMITS, &m, &err) == 0);
	CHECK(m.incomplete && m.n == 30 && !manifest_find(&m, "hl"));
	manifest_release(&m);
	workspace_close(&ws);
	strbuf_release(&e);
	strbuf_release(&name);
	free(root);
}

static void test_json_roundtrip(void)
{
	struct manifest m, back;
	json_object *j;
	const char *text;

	manifest_init(&m);
	CHECK(manifest_add(&m, "z/run.sh", 10, H_A, 0755) == 0);
	CHECK(manifest_add(&m, "a.txt", 3, H_B, 0644) == 0);
	manifest_sort(&m);
	j = manifest_to_json(&m);
	text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	CHECK(strstr(text, "\"path\":\"a.txt\",\"size\":3,\"sha256\":\"3e23e816") != NULL);
	CHECK(strstr(text, "\"executable\":true") != NULL);
	CHECK(manifest_from_json(j, &back) == 0);
	CHECK(back.n == 2);
	CHECK_STR(back.v[0].path, "a.txt");
	CHECK(back.v[0].mode == 0644 && back.v[0].size == 3);
	CHECK_STR(back.v[1].path, "z/run.sh");
	CHECK(back.v[1].mode == 0755);
	CHECK_STR(back.v[1].sha256, H_A);
	CHECK(back.total_size == 13);
	json_object_put(j);
	manifest_release(&back);
	manifest_release(&m);
}

static void test_from_json_invalid(void)
{
	static const char *const bad[] = {
		"{}",
		"\"x\"",
		"[1]",
		"[{\"path\":\"../x\",\"size\":1,\"sha256\":\"%s\"}]",
		"[{\"path\":\"/etc/passwd\",\"size\":1,\"sha256\":\"%s\"}]",
		"[{\"path\":\"a//b\",\"size\":1,\"sha256\":\"%s\"}]",
		"[{\"path\":\"a\\u0000b\",\"size\":1,\"sha256\":\"%s\"}]",
		"[{\"path\":\"\",\"size\":1,\"sha256\":\"%s\"}]",
		"[{\"path\":\"a\",\"size\":-1,\"sha256\":\"%s\"}]",
		"[{\"path\":\"a\",\"size\":\"1\",\"sha256\":\"%s\"}]",
		"[{\"path\":\"a\",\"size\":1.5,\"sha256\":\"%s\"}]",
		"[{\"path\":\"a\",\"size\":18446744073709551615,\"sha256\":\"%s\"}]",
		"[{\"path\":\"a\",\"sha256\":\"%s\"}]",
		"[{\"path\":\"a\",\"size\":1}]",
		"[{\"path\":\"a\",\"size\":1,\"sha256\":\"abc\"}]",
		"[{\"path\":\"a\",\"size\":1,\"sha256\":\"%s0\"}]",
		"[{\"path\":1,\"size\":1,\"sha256\":\"%s\"}]",
		"[{\"path\":\"a\",\"size\":1,\"sha256\":\"%s\",\"executable\":\"yes\"}]",
		"[{\"path\":\"a\",\"size\":1,\"sha256\":\"%s\"},{\"path\":\"a\",\"size\":1,\"sha256\":\"%s\"}]",
	};
	struct manifest m;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct strbuf text = STRBUF_INIT;
		json_object *j;
		const char *p = bad[i], *hole;

		/* fill every %s with a valid hash */
		while ((hole = strstr(p, "%s"))) {
			strbuf_add(&text, p, (size_t)(hole - p));
			strbuf_addstr(&text, H_A);
			p = hole + 2;
		}
		strbuf_addstr(&text, p);
		j = json_tokener_parse(text.buf);
		CHECK(j != NULL);
		if (manifest_from_json(j, &m) != -1)
			fprintf(stderr, "accepted: %s\n", text.buf);
		CHECK(m.n == 0 && m.v == NULL);
		json_object_put(j);
		strbuf_release(&text);
	}
	CHECK(manifest_from_json(NULL, &m) == -1);
	{
		json_object *j = json_tokener_parse("[]");

		CHECK(manifest_from_json(j, &m) == 0);
		CHECK(m.n == 0);
		json_object_put(j);
	}
}

static int contains(const char **v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i], s))
			return 1;
	return 0;
}

static void test_diff(void)
{
	struct manifest a, b;
	struct manifest_delta d;
	json_object *j;
	const char *text;

	manifest_init(&a);
	manifest_init(&b);
	manifest_add(&a, "same", 1, H_A, 0644);
	manifest_add(&a, "changed", 1, H_A, 0644);
	manifest_add(&a, "mode", 1, H_A, 0644);
	manifest_add(&a, "gone", 1, H_A, 0644);
	manifest_add(&b, "same", 1, H_A, 0644);
	manifest_add(&b, "changed", 1, H_B, 0644);
	manifest_add(&b, "mode", 1, H_A, 0755);
	manifest_add(&b, "new1", 1, H_A, 0644);
	manifest_add(&b, "new2", 1, H_A, 0644);
	/* unsorted input is refused rather than diffed wrongly */
	CHECK(manifest_diff(&a, &b, &d) == -1);
	manifest_delta_release(&d);
	manifest_sort(&a);
	manifest_sort(&b);
	CHECK(manifest_diff(&a, &b, &d) == 0);
	CHECK(d.nadded == 2 && d.added[2] == NULL);
	CHECK(contains(d.added, d.nadded, "new1") && contains(d.added, d.nadded, "new2"));
	CHECK(d.nchanged == 2 && d.changed[2] == NULL);
	CHECK(contains(d.changed, d.nchanged, "changed") && contains(d.changed, d.nchanged, "mode"));
	CHECK(d.ndeleted == 1 && d.deleted[1] == NULL);
	CHECK_STR(d.deleted[0], "gone");
	j = manifest_delta_to_json(&d);
	text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
	CHECK_STR(text, "{\"added\":[\"new1\",\"new2\"],\"changed\":[\"changed\",\"mode\"],\"deleted\":[\"gone\"]}");
	json_object_put(j);
	manifest_delta_release(&d);
	CHECK(d.added == NULL);
	/* identical and empty manifests */
	CHECK(manifest_diff(&a, &a, &d) == 0);
	CHECK(d.nadded == 0 && d.nchanged == 0 && d.ndeleted == 0 && d.added[0] == NULL);
	manifest_delta_release(&d);
	manifest_release(&b);
	CHECK(manifest_diff(&a, &b, &d) == 0);
	CHECK(d.ndeleted == a.n && d.deleted[a.n] == NULL);
	manifest_delta_release(&d);
	manifest_release(&a);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	struct strbuf sb = STRBUF_INIT;

	strbuf_addf(&sb, "%s/kiln-manifest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	top = strbuf_detach(&sb, NULL);
	if (!mkdtemp(top)) {
		perror("mkdtemp");
		return 1;
	}
	RUN(test_add_sort_find);
	RUN(test_build);
	RUN(test_build_limits);
	RUN(test_build_over_limits);
	RUN(test_json_roundtrip);
	RUN(test_from_json_invalid);
	RUN(test_diff);
	rm_rf(top);
	free(top);
	return harness_done("manifest");
}
