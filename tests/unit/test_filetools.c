/* test_filetools.c - the model's file tools: an escape corpus run against
 * every tool, a symlink-swap race, and each tool's behaviour and limits. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "filetools.h"
#include "fileutil.h"
#include "harness.h"
#include "sha256.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

#define SECRET "KILN-SENTINEL-outside-5be1"
/* in the workspace's ignored folders: readable, never listed or searched */
#define IGNORED_TEXT "IGNORED-SENTINEL-7c2e"

static char *top; /* holds ws/ (the workspace) and outside/ */
static char ws_root[4096], outside[4096];

/* ------------------------------------------------------------------ */
/* Fixture helpers                                                     */

static char *path_in(const char *dir, const char *rel)
{
	struct strbuf sb = STRBUF_INIT;

	strbuf_addf(&sb, "%s/%s", dir, rel);
	return strbuf_detach(&sb, NULL);
}

static void put(const char *dir, const char *rel, const void *content, size_t len)
{
	char *p = path_in(dir, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(write(fd, content, len) == (ssize_t)len);
		close(fd);
	}
	free(p);
}

static void puts_(const char *dir, const char *rel, const char *s)
{
	put(dir, rel, s, strlen(s));
}

static void sym(const char *target, const char *rel)
{
	char *p = path_in(ws_root, rel);

	CHECK(symlink(target, p) == 0);
	free(p);
}

static void mkd(const char *dir, const char *rel)
{
	char *p = path_in(dir, rel);

	CHECK(mkdir(p, 0755) == 0);
	free(p);
}

static int exists_in(const char *dir, const char *rel)
{
	struct stat st;
	char *p = path_in(dir, rel);
	int r = lstat(p, &st) == 0;

	free(p);
	return r;
}

static char *slurp(const char *dir, const char *rel)
{
	struct strbuf sb = STRBUF_INIT;
	char *p = path_in(dir, rel);
	int r = file_read_capped(p, 1 << 22, &sb);

	free(p);
	if (r < 0) {
		strbuf_release(&sb);
		return NULL;
	}
	return strbuf_detach(&sb, NULL);
}

/* Everything under top except the workspace: names, types, sizes, link
 * targets, contents. Any change means a tool reached outside. */
static void signature_dir(const char *dir, const char *rel, struct strbuf *out)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort);

	for (int i = 0; i < n; i++) {
		const char *name = names[i]->d_name;
		char *p = path_in(dir, name);
		struct stat st;

		if (strcmp(name, ".") && strcmp(name, "..") &&
		    !(rel[0] == '\0' && !strcmp(name, "ws")) && lstat(p, &st) == 0) {
			strbuf_addf(out, "%s/%s %o %lld", rel, name, st.st_mode & S_IFMT,
				    (long long)st.st_size);
			if (S_ISREG(st.st_mode)) {
				char *c = slurp(dir, name);

				strbuf_addf(out, " [%s]", c ? c : "?");
				free(c);
			} else if (S_ISLNK(st.st_mode)) {
				char t[4096];
				ssize_t k = readlink(p, t, sizeof(t) - 1);

				t[k > 0 ? k : 0] = '\0';
				strbuf_addf(out, " -> %s", t);
			}
			strbuf_addch(out, '\n');
			if (S_ISDIR(st.st_mode)) {
				char *sub = path_in(rel, name);

				signature_dir(p, sub, out);
				free(sub);
			}
		}
		free(p);
		free(names[i]);
	}
	if (n >= 0)
		free(names);
}

static void signature(struct strbuf *out)
{
	strbuf_reset(out);
	signature_dir(top, "", out);
	strbuf_addf(out, "etc-probe:%d\n", access("/etc/kiln-probe", F_OK) == 0);
}

static int have_chardev;

/* The hostile workspace: links out in every shape, a hard link to a file
 * outside, special files, and some ordinary content. */
static void fixture_build(void)
{
	char *abs_out = path_in(top, "outside");
	char *abs_secret = path_in(top, "outside/secret.txt");
	char *p, *q;
	struct sockaddr_un sa;
	int s;

	rm_rf(ws_root);
	rm_rf(outside);
	CHECK(mkdir(ws_root, 0755) == 0);
	CHECK(mkdir(outside, 0755) == 0);
	puts_(outside, "secret.txt", SECRET "\n");
	puts_(outside, "hard_target.txt", SECRET " (hard)\n");
	puts_(outside, "outside_only.txt", SECRET " (listed?)\n");
	mkd(outside, "sub");
	puts_(outside, "sub/deeper.txt", SECRET " (deeper)\n");

	puts_(ws_root, "plain.txt", "plain text\nline two\n");
	mkd(ws_root, "dir");
	puts_(ws_root, "dir/in.txt", "inside\n");
	mkd(ws_root, "src");
	puts_(ws_root, "src/app.js", "console.log('hi');\n");
	mkd(ws_root, "node_modules");
	puts_(ws_root, "node_modules/dep.js", IGNORED_TEXT "\n");
	mkd(ws_root, "dist");
	puts_(ws_root, "dist/out.js", IGNORED_TEXT " (built)\n");

	sym("node_modules", "link_nm");
	sym("../outside", "link_out");
	sym("..", "link_up");
	sym("/etc", "link_etc");
	sym("/proc", "link_proc");
	sym("/proc/self/fd", "link_proc_fd");
	sym("/proc/self/root", "link_selfroot");
	sym("/", "link_root");
	sym("../outside/secret.txt", "link_file_out");
	sym(abs_secret, "link_abs_file");
	sym(abs_out, "link_abs_dir");
	sym("chain2", "chain1");
	sym("chain3", "chain2");
	sym("../outside", "chain3");
	sym("../../outside", "dir/deep_link");
	sym("../dir/../../outside", "dir/twisty");
	sym("dir", "link_in");
	sym("loop_b", "loop_a");
	sym("loop_a", "loop_b");
	sym("../outside/new_from_dangling.txt", "dangling");
	sym("/dev/null", "link_devnull");
	sym("/dev/zero", "link_devzero");

	p = path_in(outside, "hard_target.txt");
	q = path_in(ws_root, "hl_out");
	CHECK(link(p, q) == 0);
	free(p);
	free(q);
	p = path_in(ws_root, "fifo");
	CHECK(mkfifo(p, 0644) == 0);
	free(p);
	p = path_in(ws_root, "sock");
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(p) < sizeof(sa.sun_path)) {
		memcpy(sa.sun_path, p, strlen(p) + 1);
		CHECK(bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	}
	close(s);
	free(p);
	/* /dev/zero as a device node inside the workspace when we may mknod */
	p = path_in(ws_root, "chardev");
	have_chardev = mknod(p, S_IFCHR | 0644, makedev(1, 5)) == 0;
	if (!have_chardev)
		CHECK(symlink("/dev/zero", p) == 0);
	free(p);
	free(abs_out);
	free(abs_secret);
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

/* Runs a tool with args given as JSON text. */
static int call(const struct workspace *ws, const char *tool, const char *args,
		json_object **result, struct strbuf *summary, struct tool_error *err)
{
	json_object *a = args ? json_tokener_parse(args) : NULL;
	int r;

	if (args)
		CHECK(a != NULL);
	memset(err, 0, sizeof(*err));
	r = filetool_call(ws, tool, a, result, summary, err);
	json_object_put(a);
	return r;
}

static const char *jstr(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return json_object_get_string(v);
}

static int64_t jint(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return -12345;
	return json_object_get_int64(v);
}

static int jbool(json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return -1;
	return json_object_get_boolean(v);
}

/* ------------------------------------------------------------------ */
/* The escape corpus                                                   */

enum expect {
	REFUSE,   /* every tool must fail */
	ENTRY,    /* names a link or special entry inside: reading and creating
		   * must fail; delete/rename may act on the entry itself */
	HARMLESS, /* an odd but legal name: may succeed, must stay inside */
	ROOT,     /* means the root to list_files/search_files, refused elsewhere */
	IGNORED,  /* in an ignored folder (or is one), however spelt: listing,
		   * searching and every change refused; read_file may read it */
	IGNORED_LINK, /* a symlink to an ignored folder: as ENTRY, and listing
		       * or searching through it refused as ignored */
};

struct escape {
	const char *path;
	size_t len;       /* 0: strlen */
	enum expect expect;
	int read_only;    /* names a real system file: only non-mutating tools */
};

static char name256[257], path4097[4098], path1025[1026], dir_long[310];
static char selfroot_out[4096], proc_root_out[4096], abs_proc_root[4096];

static struct escape corpus[] = {
	/* traversal and absolute paths */
	{ "../x", 0, REFUSE, 0 },
	{ "..", 0, REFUSE, 0 },
	{ "../outside/secret.txt", 0, REFUSE, 0 },
	{ "a/../../x", 0, REFUSE, 0 },
	{ "dir/../../outside/secret.txt", 0, REFUSE, 0 },
	{ "dir/..", 0, REFUSE, 0 },
	{ "dir/../plain.txt", 0, REFUSE, 0 },
	{ "/etc/passwd", 0, REFUSE, 0 },
	{ "//etc/passwd", 0, REFUSE, 0 },
	{ "/", 0, REFUSE, 0 },
	{ "/proc/self/root/etc/passwd", 0, REFUSE, 0 },
	{ abs_proc_root, 0, REFUSE, 0 },
	{ "proc/self/..", 0, REFUSE, 0 },
	{ "proc/self/../../outside/secret.txt", 0, REFUSE, 0 },
	/* syntax */
	{ "", 0, ROOT, 0 },
	{ ".", 0, ROOT, 0 },
	{ "./plain.txt", 0, REFUSE, 0 },
	{ "dir/./in.txt", 0, REFUSE, 0 },
	{ "dir//in.txt", 0, REFUSE, 0 },
	{ "plain.txt/", 0, REFUSE, 0 },
	{ "dir/", 0, REFUSE, 0 },
	{ "plain.txt\0/../../outside/secret.txt", 36, REFUSE, 0 },
	{ "\0", 1, REFUSE, 0 },
	{ "link_out\0", 9, REFUSE, 0 },
	{ "\xc0\xaf", 0, REFUSE, 0 },
	{ "..\xc0\xaf..\xc0\xafoutside\xc0\xafsecret.txt", 0, REFUSE, 0 },
	{ "\xc0\xae\xc0\xae/x", 0, REFUSE, 0 },
	{ "\xe0\x80\xaf", 0, REFUSE, 0 },
	{ "\xff\xfe", 0, REFUSE, 0 },
	{ "\xed\xa0\x80", 0, REFUSE, 0 },
	{ "a\xe2\x80\xae" "txt.exe", 0, REFUSE, 0 },
	{ "\xe2\x80\x8f" "x", 0, REFUSE, 0 },
	{ "\xef\xbb\xbf" "plain.txt", 0, REFUSE, 0 },
	{ "a\nb", 0, REFUSE, 0 },
	{ "a\rb", 0, REFUSE, 0 },
	{ "a\tb", 0, REFUSE, 0 },
	{ "\x1b[2J", 0, REFUSE, 0 },
	{ "\x7f", 0, REFUSE, 0 },
	{ "\xc2\x85", 0, REFUSE, 0 },
	{ name256, 0, REFUSE, 0 },
	{ dir_long, 0, REFUSE, 0 },
	{ path1025, 0, REFUSE, 0 },
	{ path4097, 0, REFUSE, 0 },
	/* symlinks out, in every shape */
	{ "link_out/secret.txt", 0, REFUSE, 0 },
	{ "link_out/new.txt", 0, REFUSE, 0 },
	{ "link_out/sub/deeper.txt", 0, REFUSE, 0 },
	{ "link_up/outside/secret.txt", 0, REFUSE, 0 },
	{ "link_up/ws/plain.txt", 0, REFUSE, 0 },
	{ "link_up/new.txt", 0, REFUSE, 0 },
	{ "link_etc/passwd", 0, REFUSE, 1 },
	{ "link_etc/kiln-probe", 0, REFUSE, 0 },
	{ "link_root/etc/passwd", 0, REFUSE, 1 },
	{ "link_proc/self/root/etc/passwd", 0, REFUSE, 1 },
	{ proc_root_out, 0, REFUSE, 0 },
	{ selfroot_out, 0, REFUSE, 0 },
	{ "link_proc_fd/0", 0, REFUSE, 1 },
	{ "link_abs_dir/secret.txt", 0, REFUSE, 0 },
	{ "link_abs_dir/new.txt", 0, REFUSE, 0 },
	{ "chain1/secret.txt", 0, REFUSE, 0 },
	{ "chain1/new.txt", 0, REFUSE, 0 },
	{ "dir/deep_link/secret.txt", 0, REFUSE, 0 },
	{ "dir/twisty/secret.txt", 0, REFUSE, 0 },
	{ "loop_a/x", 0, REFUSE, 0 },
	{ "plain.txt/x", 0, REFUSE, 0 },
	/* entries that are links or special files themselves */
	{ "link_out", 0, ENTRY, 0 },
	{ "link_up", 0, ENTRY, 0 },
	{ "link_etc", 0, ENTRY, 0 },
	{ "link_root", 0, ENTRY, 0 },
	{ "link_file_out", 0, ENTRY, 0 },
	{ "link_abs_file", 0, ENTRY, 0 },
	{ "link_abs_dir", 0, ENTRY, 0 },
	{ "chain1", 0, ENTRY, 0 },
	{ "dir/deep_link", 0, ENTRY, 0 },
	{ "loop_a", 0, ENTRY, 0 },
	{ "dangling", 0, ENTRY, 0 },
	{ "link_devnull", 0, ENTRY, 0 },
	{ "link_devzero", 0, ENTRY, 0 },
	{ "hl_out", 0, ENTRY, 0 },
	{ "fifo", 0, ENTRY, 0 },
	{ "sock", 0, ENTRY, 0 },
	{ "chardev", 0, ENTRY, 0 },
	/* odd names that are simply names inside the workspace */
	{ "a\\b", 0, HARMLESS, 0 },
	{ "..\\..\\outside\\secret.txt", 0, HARMLESS, 0 },
	{ "~", 0, HARMLESS, 0 },
	{ "~/x", 0, HARMLESS, 0 },
	{ "\xef\xbc\x8e\xef\xbc\x8e/x", 0, HARMLESS, 0 },
	{ "\xe2\x80\xa4\xe2\x80\xa4/x", 0, HARMLESS, 0 },
	{ "...", 0, HARMLESS, 0 },
	{ ".../x", 0, HARMLESS, 0 },
	{ "%2e%2e/x", 0, HARMLESS, 0 },
	{ " ..", 0, HARMLESS, 0 },
	{ "..foo", 0, HARMLESS, 0 },
	{ "$HOME", 0, HARMLESS, 0 },
	{ "link_in/in.txt", 0, HARMLESS, 0 },
	{ "link_in/new.txt", 0, HARMLESS, 0 },
	{ "proc/self/root", 0, HARMLESS, 0 },
	/* ignored folders, directly and through a link */
	{ "node_modules", 0, IGNORED, 0 },
	{ "node_modules/dep.js", 0, IGNORED, 0 },
	{ "node_modules/new.js", 0, IGNORED, 0 },
	{ "dist", 0, IGNORED, 0 },
	{ "dist/out.js", 0, IGNORED, 0 },
	{ "dir/../node_modules/dep.js", 0, REFUSE, 0 },
	{ "link_nm/dep.js", 0, IGNORED, 0 },
	{ "link_nm/new.js", 0, IGNORED, 0 },
	{ "link_nm/sub/new.js", 0, IGNORED, 0 },
	{ "link_nm", 0, IGNORED_LINK, 0 },
};

enum variant_kind { V_READ, V_CREATE, V_ON_ENTRY };

static const struct {
	const char *tool;
	enum variant_kind kind;
	int mutates;
} variants[] = {
	{ "list_files", V_READ, 0 },
	{ "read_file", V_READ, 0 },
	{ "read_file", V_READ, 0 },     /* with a line range */
	{ "search_files", V_READ, 0 },
	{ "write_file", V_CREATE, 1 },
	{ "rename_file", V_CREATE, 1 }, /* plain.txt -> path */
	{ "delete_file", V_ON_ENTRY, 1 },
	{ "rename_file", V_ON_ENTRY, 1 }, /* path -> renamed.txt */
	{ "rename_file", V_ON_ENTRY, 1 }, /* plain.txt -> path, overwrite */
};

static json_object *variant_args(size_t v, const char *p, size_t len)
{
	json_object *a = json_object_new_object();
	json_object *s = json_object_new_string_len(p, (int)len);

	switch (v) {
	case 0:
	case 1:
	case 6:
		json_object_object_add(a, "path", s);
		break;
	case 2:
		json_object_object_add(a, "path", s);
		json_object_object_add(a, "start_line", json_object_new_int(1));
		json_object_object_add(a, "end_line", json_object_new_int(3));
		break;
	case 3:
		json_object_object_add(a, "path", s);
		json_object_object_add(a, "pattern", json_object_new_string("KILN"));
		break;
	case 4:
		json_object_object_add(a, "path", s);
		json_object_object_add(a, "content", json_object_new_string("pwned"));
		break;
	case 5:
		json_object_object_add(a, "from", json_object_new_string("plain.txt"));
		json_object_object_add(a, "to", s);
		break;
	case 7:
		json_object_object_add(a, "from", s);
		json_object_object_add(a, "to", json_object_new_string("renamed.txt"));
		break;
	default:
		json_object_object_add(a, "from", json_object_new_string("plain.txt"));
		json_object_object_add(a, "to", s);
		json_object_object_add(a, "overwrite", json_object_new_boolean(1));
		break;
	}
	return a;
}

static const char *const known_codes[] = {
	"invalid_path", "path_outside_workspace", "not_found", "not_a_file",
	"not_a_directory", "is_ignored", "too_large", "limit_exceeded", "exists",
	"hardlink_refused", "special_file", "binary_file", "invalid_arguments",
	"io_error", "invalid_regex",
};

static int known_code(const char *c)
{
	for (size_t i = 0; i < sizeof(known_codes) / sizeof(known_codes[0]); i++)
		if (!strcmp(known_codes[i], c))
			return 1;
	return 0;
}

static void show(const struct escape *e)
{
	size_t len = e->len ? e->len : strlen(e->path);

	fprintf(stderr, "  escape case \"");
	for (size_t i = 0; i < len && i < 60; i++) {
		unsigned char c = (unsigned char)e->path[i];

		if (c >= 0x20 && c < 0x7f)
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02x", c);
	}
	fprintf(stderr, "%s\"\n", len > 60 ? "..." : "");
}

static void test_escape_corpus(void)
{
	struct strbuf expected = STRBUF_INIT, now = STRBUF_INIT, summary = STRBUF_INIT;
	struct workspace ws;
	unsigned calls = 0, refused = 0;

	CHECK(sizeof(corpus) / sizeof(corpus[0]) >= 50);
	fixture_build();
	signature(&expected);
	CHECK(strstr(expected.buf, SECRET) != NULL);
	for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++) {
		const struct escape *e = &corpus[i];
		size_t len = e->len ? e->len : strlen(e->path);

		for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
			json_object *args, *result = (json_object *)1;
			struct tool_error err;
			const char *text = "";
			int r, must_fail, failed_before = harness_failed_checks;

			if (e->read_only && variants[v].mutates)
				continue;
			fixture_build();
			if (open_ws(&ws, NULL) < 0) {
				CHECK(0);
				continue;
			}
			args = variant_args(v, e->path, len);
			memset(&err, 0, sizeof(err));
			strbuf_reset(&summary);
			r = filetool_call(&ws, variants[v].tool, args, &result, &summary, &err);
			calls++;
			must_fail = e->expect == REFUSE ||
				    ((e->expect == ENTRY || e->expect == IGNORED_LINK) &&
				     variants[v].kind != V_ON_ENTRY) ||
				    (e->expect == ROOT && v != 0 && v != 3) ||
				    (e->expect == IGNORED && v != 1 && v != 2);
			if (r < 0) {
				refused++;
				CHECK(result == NULL);
				CHECK(known_code(err.code));
				CHECK(err.message[0] != '\0');
				CHECK(summary.len == 0);
				/* list and search say why: the folder is ignored
				 * (unless what they name is not there at all) */
				if ((e->expect == IGNORED || e->expect == IGNORED_LINK) &&
				    (v == 0 || v == 3) && strcmp(err.code, "not_found") &&
				    strcmp(err.code, "not_a_directory"))
					CHECK_STR(err.code, "is_ignored");
			} else {
				CHECK(!must_fail);
				CHECK(result != NULL);
				text = json_object_to_json_string(result);
				CHECK(strstr(text, "KILN-SENTINEL") == NULL);
				CHECK(strstr(text, "outside_only") == NULL);
				CHECK(strstr(text, "root:x:0") == NULL);
				if (v != 1 && v != 2)
					CHECK(strstr(text, IGNORED_TEXT) == NULL);
				CHECK(summary.len > 0 && !strchr(summary.buf, '\n'));
			}
			/* a path through link_in stays inside and reads the inside */
			if (r == 0 && v == 1 && !strcmp(e->path, "link_in/in.txt"))
				CHECK_STR(jstr(result, "content"), "inside\n");
			signature(&now);
			CHECK(!strcmp(now.buf, expected.buf));
			if (harness_failed_checks != failed_before) {
				show(e);
				fprintf(stderr, "  tool %s (variant %zu): r=%d code=%s msg=%s\n  result=%s\n",
					variants[v].tool, v, r, err.code, err.message, text);
			}
			json_object_put(result == (json_object *)1 ? NULL : result);
			json_object_put(args);
			workspace_close(&ws);
		}
	}
	fprintf(stderr, "escape corpus: %zu cases, %u tool calls, %u refused, outside untouched\n",
		sizeof(corpus) / sizeof(corpus[0]), calls, refused);
	strbuf_release(&expected);
	strbuf_release(&now);
	strbuf_release(&summary);
}

/* The whole-workspace tools over the hostile fixture: nothing from outside
 * may show up in a listing, a search or a snapshot. */
static void test_escape_whole_workspace(void)
{
	struct workspace ws;
	struct strbuf summary = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	json_object *res;
	char hex[SHA256_HEX_LEN + 1];
	char *hl;

	fixture_build();
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(call(&ws, "list_files", "{}", &res, &summary, &err) == 0);
	CHECK(strstr(json_object_to_json_string(res), "outside_only") == NULL);
	CHECK(strstr(json_object_to_json_string(res), "secret.txt") == NULL);
	CHECK(strstr(json_object_to_json_string(res), "link_out") == NULL);
	CHECK(strstr(json_object_to_json_string(res), "fifo") == NULL);
	CHECK(strstr(json_object_to_json_string(res), "\"dir\\/in.txt\"") != NULL);
	CHECK(strstr(json_object_to_json_string(res), "dep.js") == NULL);
	CHECK(strstr(json_object_to_json_string(res), "out.js") == NULL);
	json_object_put(res);
	CHECK(call(&ws, "search_files", "{\"pattern\":\"" IGNORED_TEXT "\"}", &res, &summary, &err) == 0);
	CHECK(res && json_object_array_length(json_object_object_get(res, "matches")) == 0);
	json_object_put(res);
	CHECK(call(&ws, "search_files", "{\"pattern\":\"KILN-SENTINEL\"}", &res, &summary, &err) == 0);
	CHECK(res && json_object_array_length(json_object_object_get(res, "matches")) == 0);
	json_object_put(res);
	CHECK(call(&ws, "search_files", "{\"pattern\":\".\",\"regex\":true,\"limit\":200}", &res, &summary, &err) == 0);
	CHECK(strstr(json_object_to_json_string(res), "KILN") == NULL);
	json_object_put(res);
	/* the hard link makes the snapshot refuse rather than hash outside data */
	CHECK(call(&ws, "snapshot", NULL, &res, &summary, &err) == -1);
	CHECK_STR(err.code, "hardlink_refused");
	hl = path_in(ws_root, "hl_out");
	unlink(hl);
	free(hl);
	CHECK(call(&ws, "snapshot", "{}", &res, &summary, &err) == 0);
	sha256_hex(SECRET "\n", strlen(SECRET) + 1, hex);
	CHECK(strstr(json_object_to_json_string(res), hex) == NULL);
	CHECK(jint(res, "file_count") == 3);
	json_object_put(res);
	workspace_close(&ws);
	strbuf_release(&summary);
}

/* ------------------------------------------------------------------ */
/* Race: a folder swapped with a symlink to outside, during tool calls  */

static atomic_int race_stop;

static void *flipper(void *arg)
{
	int dfd = *(int *)arg;

	while (!atomic_load(&race_stop))
		renameat2(dfd, "flip", dfd, "flip_alt", RENAME_EXCHANGE);
	return NULL;
}

static void test_symlink_swap_race(void)
{
	struct workspace ws;
	struct strbuf summary = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	pthread_t th;
	int dfd, ok = 0, leaks = 0;
	json_object *res;

	fixture_build();
	mkd(ws_root, "flip");
	puts_(ws_root, "flip/secret.txt", "inside flip\n");
	sym("../outside", "flip_alt");
	CHECK(open_ws(&ws, NULL) == 0);
	dfd = ws.dirfd;
	atomic_store(&race_stop, 0);
	CHECK(pthread_create(&th, NULL, flipper, &dfd) == 0);
	for (int i = 0; i < 2000; i++) {
		if (call(&ws, "read_file", "{\"path\":\"flip/secret.txt\"}", &res,
			 &summary, &err) == 0) {
			ok++;
			if (strstr(json_object_to_json_string(res), "KILN"))
				leaks++;
			json_object_put(res);
		}
		if (i % 20 == 0) {
			if (call(&ws, "list_files", "{\"path\":\"flip\"}", &res, &summary, &err) == 0) {
				if (strstr(json_object_to_json_string(res), "outside_only"))
					leaks++;
				json_object_put(res);
			}
			if (call(&ws, "search_files", "{\"pattern\":\"KILN\",\"path\":\"flip\"}",
				 &res, &summary, &err) == 0) {
				if (json_object_array_length(json_object_object_get(res, "matches")))
					leaks++;
				json_object_put(res);
			}
			if (call(&ws, "write_file", "{\"path\":\"flip/w.txt\",\"content\":\"x\"}",
				 &res, &summary, &err) == 0)
				json_object_put(res);
			/* restored through the tool: a plain write here could
			 * follow the swapped-in link */
			if (call(&ws, "delete_file", "{\"path\":\"flip/secret.txt\"}",
				 &res, &summary, &err) == 0) {
				json_object_put(res);
				for (int k = 0; k < 1000; k++) {
					if (call(&ws, "write_file",
						 "{\"path\":\"flip/secret.txt\",\"content\":\"inside flip\\n\"}",
						 &res, &summary, &err) == 0) {
						json_object_put(res);
						break;
					}
				}
			}
		}
	}
	atomic_store(&race_stop, 1);
	pthread_join(th, NULL);
	CHECK(leaks == 0);
	CHECK(!exists_in(outside, "w.txt"));
	{
		char *s = slurp(outside, "secret.txt");

		CHECK(s && !strcmp(s, SECRET "\n"));
		free(s);
	}
	fprintf(stderr, "symlink swap race: %d of 2000 read_file calls succeeded, none leaked\n", ok);
	workspace_close(&ws);
	strbuf_release(&summary);
}

/* ------------------------------------------------------------------ */
/* Functional tests                                                    */

static void plain_fixture(void)
{
	rm_rf(ws_root);
	rm_rf(outside);
	CHECK(mkdir(ws_root, 0755) == 0);
	CHECK(mkdir(outside, 0755) == 0);
}

static void test_list_files(void)
{
	struct workspace ws;
	struct strbuf summary = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	json_object *res, *entries, *e0;

	plain_fixture();
	mkd(ws_root, "src");
	puts_(ws_root, "src/app.js", "12345");
	puts_(ws_root, "src/util.js", "1");
	mkd(ws_root, "src/lib");
	puts_(ws_root, "src/lib/x.css", "x");
	puts_(ws_root, "index.html", "<p>");
	mkd(ws_root, "node_modules");
	puts_(ws_root, "node_modules/dep.js", "d");
	mkd(ws_root, "dist");
	puts_(ws_root, "dist/bundle.js", "b");
	mkd(ws_root, ".git");
	puts_(ws_root, ".git/HEAD", "h");
	CHECK(open_ws(&ws, NULL) == 0);

	CHECK(call(&ws, "list_files", NULL, &res, &summary, &err) == 0);
	entries = json_object_object_get(res, "entries");
	CHECK(json_object_array_length(entries) == 6);
	e0 = json_object_array_get_idx(entries, 0);
	CHECK_STR(jstr(e0, "path"), "index.html");
	CHECK_STR(jstr(e0, "type"), "file");
	CHECK(jint(e0, "size") == 3);
	CHECK_STR(jstr(json_object_array_get_idx(entries, 1), "path"), "src");
	CHECK_STR(jstr(json_object_array_get_idx(entries, 1), "type"), "dir");
	CHECK_STR(jstr(json_object_array_get_idx(entries, 2), "path"), "src/app.js");
	CHECK_STR(jstr(json_object_array_get_idx(entries, 3), "path"), "src/lib");
	CHECK_STR(jstr(json_object_array_get_idx(entries, 4), "path"), "src/lib/x.css");
	CHECK_STR(jstr(json_object_array_get_idx(entries, 5), "path"), "src/util.js");
	CHECK(jbool(res, "truncated") == 0);
	CHECK(strstr(json_object_to_json_string(res), "node_modules") == NULL);
	CHECK(strstr(json_object_to_json_string(res), "bundle") == NULL);
	CHECK(strstr(json_object_to_json_string(res), "HEAD") == NULL);
	CHECK_STR(summary.buf, "listed 6 entries");
	json_object_put(res);
	strbuf_reset(&summary);
	CHECK(call(&ws, "list_files", "{\"glob\":\"*.js\"}", &res, &summary, &err) == 0);
	entries = json_object_object_get(res, "entries");
	CHECK(json_object_array_length(entries) == 2);
	json_object_put(res);
	CHECK(call(&ws, "list_files", "{\"depth\":1}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "entries")) == 2);
	json_object_put(res);
	CHECK(call(&ws, "list_files", "{\"limit\":2}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "entries")) == 2);
	CHECK(jbool(res, "truncated") == 1);
	json_object_put(res);
	CHECK(call(&ws, "list_files", "{\"path\":\"src/lib\"}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "entries")) == 1);
	json_object_put(res);
	CHECK(call(&ws, "list_files", "{\"path\":\".\",\"depth\":\"1\",\"limit\":100000}", &res, &summary, &err) == 0);
	json_object_put(res);
	CHECK(call(&ws, "list_files", "{\"path\":\"index.html\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_a_directory");
	CHECK(call(&ws, "list_files", "{\"path\":\"nope\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_found");
	CHECK(call(&ws, "list_files", "{\"path\":\"node_modules\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(call(&ws, "list_files", "{\"depth\":0}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "list_files", "{\"depth\":\"deep\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "list_files", "{\"path\":7}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "list_files", "[1,2]", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(res == NULL);
	workspace_close(&ws);
	strbuf_release(&summary);
}

static void test_glob_is_linear(void)
{
	struct workspace ws;
	struct strbuf summary = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	json_object *res;
	char name[201], args[256];
	int64_t t0;

	plain_fixture();
	memset(name, 'a', 200);
	name[200] = '\0';
	puts_(ws_root, name, "x");
	puts_(ws_root, "a[b].txt", "x");
	puts_(ws_root, "q?.md", "x");
	CHECK(open_ws(&ws, NULL) == 0);
	/* exponential for a backtracking matcher; must be instant here */
	snprintf(args, sizeof(args), "{\"glob\":\"%s\"}",
		 "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b");
	t0 = mono_ms();
	CHECK(call(&ws, "list_files", args, &res, &summary, &err) == 0);
	CHECK(mono_ms() - t0 < 2000);
	CHECK(json_object_array_length(json_object_object_get(res, "entries")) == 0);
	json_object_put(res);
	CHECK(call(&ws, "list_files", "{\"glob\":\"a\\\\[b\\\\]*\"}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "entries")) == 1);
	json_object_put(res);
	CHECK(call(&ws, "list_files", "{\"glob\":\"[!a]?.md\"}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "entries")) == 1);
	json_object_put(res);
	CHECK(call(&ws, "list_files", "{\"glob\":\"[a-c]*\"}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "entries")) == 2);
	json_object_put(res);
	CHECK(call(&ws, "list_files", "{\"glob\":\"*[\"}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "entries")) == 0);
	json_object_put(res);
	workspace_close(&ws);
	strbuf_release(&summary);
}

static void test_read_file(void)
{
	struct workspace ws;
	struct ws_limits lim;
	struct strbuf summary = STRBUF_INIT, big = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	json_object *res;

	plain_fixture();
	puts_(ws_root, "five.txt", "one\ntwo\nthree\nfour\nfive\n");
	puts_(ws_root, "nonl.txt", "a\nb");
	puts_(ws_root, "empty.txt", "");
	put(ws_root, "nul.bin", "PNG\0\1\2", 6);
	puts_(ws_root, "latin1.txt", "caf\xe9\n");
	for (int i = 0; i < 100; i++)
		strbuf_addf(&big, "line %d of the big file\n", i + 1);
	put(ws_root, "big.txt", big.buf, big.len);
	mkd(ws_root, "folder");
	ws_limits_default(&lim);
	lim.max_read_bytes = 200;
	lim.max_file_size = 4000;
	CHECK(open_ws(&ws, &lim) == 0);

	CHECK(call(&ws, "read_file", "{\"path\":\"five.txt\"}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "content"), "one\ntwo\nthree\nfour\nfive\n");
	CHECK(jint(res, "lines") == 5);
	CHECK(jint(res, "start_line") == 1);
	CHECK(jint(res, "end_line") == 5);
	CHECK(jbool(res, "truncated") == 0);
	CHECK_STR(summary.buf, "read five.txt (24 B)");
	json_object_put(res);
	strbuf_reset(&summary);
	CHECK(call(&ws, "read_file", "{\"path\":\"five.txt\",\"start_line\":2,\"end_line\":3}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "content"), "two\nthree\n");
	CHECK(jint(res, "start_line") == 2 && jint(res, "end_line") == 3);
	CHECK(jint(res, "lines") == 5);
	CHECK_STR(summary.buf, "read five.txt (lines 2-3 of 5)");
	json_object_put(res);
	CHECK(call(&ws, "read_file", "{\"path\":\"five.txt\",\"start_line\":4}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "content"), "four\nfive\n");
	CHECK(jint(res, "end_line") == 5);
	json_object_put(res);
	CHECK(call(&ws, "read_file", "{\"path\":\"five.txt\",\"end_line\":1}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "content"), "one\n");
	json_object_put(res);
	CHECK(call(&ws, "read_file", "{\"path\":\"five.txt\",\"start_line\":5,\"end_line\":99}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "content"), "five\n");
	CHECK(jint(res, "end_line") == 5);
	json_object_put(res);
	CHECK(call(&ws, "read_file", "{\"path\":\"five.txt\",\"start_line\":6}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "read_file", "{\"path\":\"five.txt\",\"start_line\":3,\"end_line\":2}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "read_file", "{\"path\":\"five.txt\",\"start_line\":0}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "read_file", "{\"path\":\"nonl.txt\",\"start_line\":2}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "content"), "b");
	CHECK(jint(res, "lines") == 2 && jint(res, "end_line") == 2);
	json_object_put(res);
	CHECK(call(&ws, "read_file", "{\"path\":\"empty.txt\"}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "content"), "");
	CHECK(jint(res, "lines") == 0);
	json_object_put(res);
	/* binary: NUL or invalid UTF-8 */
	CHECK(call(&ws, "read_file", "{\"path\":\"nul.bin\"}", &res, &summary, &err) == 0);
	CHECK(jbool(res, "binary") == 1);
	CHECK(jint(res, "size") == 6);
	CHECK(jstr(res, "content") == NULL);
	json_object_put(res);
	CHECK(call(&ws, "read_file", "{\"path\":\"latin1.txt\"}", &res, &summary, &err) == 0);
	CHECK(jbool(res, "binary") == 1);
	json_object_put(res);
	/* too large without a range; a range works and is cut to the cap */
	CHECK(call(&ws, "read_file", "{\"path\":\"big.txt\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "too_large");
	{
		char want[64];

		snprintf(want, sizeof(want), "%zu bytes", big.len);
		CHECK(strstr(err.message, want) != NULL);
	}
	CHECK(call(&ws, "read_file", "{\"path\":\"big.txt\",\"start_line\":10,\"end_line\":12}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "content"), "line 10 of the big file\nline 11 of the big file\nline 12 of the big file\n");
	CHECK(jint(res, "lines") == 100);
	json_object_put(res);
	CHECK(call(&ws, "read_file", "{\"path\":\"big.txt\",\"start_line\":1}", &res, &summary, &err) == 0);
	CHECK(jbool(res, "truncated") == 1);
	CHECK(strlen(jstr(res, "content")) <= 200);
	CHECK(jint(res, "end_line") == 8);
	json_object_put(res);
	/* errors */
	CHECK(call(&ws, "read_file", "{\"path\":\"folder\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_a_file");
	CHECK(call(&ws, "read_file", "{\"path\":\"missing\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_found");
	CHECK(call(&ws, "read_file", "{}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	workspace_close(&ws);
	/* over the file size cap: too large even with a range; binary stays binary */
	{
		char blob[5000];

		memset(blob, 'x', sizeof(blob));
		put(ws_root, "huge.txt", blob, sizeof(blob));
		blob[10] = '\0';
		put(ws_root, "huge.bin", blob, sizeof(blob));
	}
	CHECK(open_ws(&ws, &lim) == 0);
	CHECK(call(&ws, "read_file", "{\"path\":\"huge.txt\",\"start_line\":1}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "too_large");
	CHECK(call(&ws, "read_file", "{\"path\":\"huge.bin\"}", &res, &summary, &err) == 0);
	CHECK(jbool(res, "binary") == 1 && jint(res, "size") == 5000);
	json_object_put(res);
	/* a single line longer than the cap is cut on a character boundary */
	{
		struct strbuf l = STRBUF_INIT;

		for (int i = 0; i < 150; i++)
			strbuf_addstr(&l, "\xc3\xa9");
		put(ws_root, "long.txt", l.buf, l.len);
		strbuf_release(&l);
	}
	CHECK(call(&ws, "read_file", "{\"path\":\"long.txt\",\"start_line\":1}", &res, &summary, &err) == 0);
	CHECK(jbool(res, "truncated") == 1);
	CHECK(strlen(jstr(res, "content")) == 200);
	CHECK(utf8_valid(jstr(res, "content"), 200));
	json_object_put(res);
	workspace_close(&ws);
	strbuf_release(&summary);
	strbuf_release(&big);
}

static void test_search_files(void)
{
	struct workspace ws;
	struct ws_limits lim;
	struct strbuf summary = STRBUF_INIT, longline = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	json_object *res, *m;

	plain_fixture();
	mkd(ws_root, "src");
	puts_(ws_root, "src/app.js", "const a = 1;\nfunction hello() {}\nhello();\n");
	puts_(ws_root, "src/style.css", "body { color: red }\n.hello { }\n");
	puts_(ws_root, "readme.md", "say hello\r\n");
	put(ws_root, "img.png", "hello\0world", 11);
	mkd(ws_root, "node_modules");
	puts_(ws_root, "node_modules/x.js", "hello\n");
	for (int i = 0; i < 400; i++)
		strbuf_addch(&longline, 'h');
	strbuf_addstr(&longline, "hello\n");
	put(ws_root, "long.txt", longline.buf, longline.len);
	{
		char blob[3000];

		memset(blob, 'h', sizeof(blob));
		memcpy(blob + 100, "hello", 5);
		put(ws_root, "toobig.txt", blob, sizeof(blob));
	}
	ws_limits_default(&lim);
	lim.max_file_size = 2000;
	lim.max_search_matches = 3;
	CHECK(open_ws(&ws, &lim) == 0);

	CHECK(call(&ws, "search_files", "{\"pattern\":\"hello\",\"limit\":100}", &res, &summary, &err) == 0);
	m = json_object_object_get(res, "matches");
	CHECK(json_object_array_length(m) == 3);
	CHECK(jbool(res, "truncated") == 1);
	CHECK_STR(jstr(json_object_array_get_idx(m, 0), "path"), "long.txt");
	CHECK(strlen(jstr(json_object_array_get_idx(m, 0), "text")) == 300);
	CHECK_STR(jstr(json_object_array_get_idx(m, 1), "path"), "readme.md");
	CHECK_STR(jstr(json_object_array_get_idx(m, 1), "text"), "say hello");
	CHECK(jint(json_object_array_get_idx(m, 1), "line") == 1);
	CHECK_STR(jstr(json_object_array_get_idx(m, 2), "path"), "src/app.js");
	CHECK(jint(json_object_array_get_idx(m, 2), "line") == 2);
	json_object_put(res);
	CHECK(call(&ws, "search_files", "{\"pattern\":\"hello\",\"path\":\"src\"}", &res, &summary, &err) == 0);
	m = json_object_object_get(res, "matches");
	CHECK(json_object_array_length(m) == 3);
	json_object_put(res);
	strbuf_reset(&summary);
	CHECK(call(&ws, "search_files", "{\"pattern\":\"hello\",\"glob\":\"*.css\"}", &res, &summary, &err) == 0);
	m = json_object_object_get(res, "matches");
	CHECK(json_object_array_length(m) == 1);
	CHECK_STR(jstr(json_object_array_get_idx(m, 0), "text"), ".hello { }");
	CHECK(jint(json_object_array_get_idx(m, 0), "line") == 2);
	CHECK_STR(summary.buf, "searched for \"hello\": 1 match in 1 file");
	json_object_put(res);
	/* regex, anchored per line */
	CHECK(call(&ws, "search_files", "{\"pattern\":\"^hel+o\\\\(\\\\);$\",\"regex\":true}", &res, &summary, &err) == 0);
	m = json_object_object_get(res, "matches");
	CHECK(json_object_array_length(m) == 1);
	CHECK(jint(json_object_array_get_idx(m, 0), "line") == 3);
	json_object_put(res);
	/* literal by default: regex characters are plain */
	CHECK(call(&ws, "search_files", "{\"pattern\":\"hello()\"}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "matches")) == 2);
	json_object_put(res);
	CHECK(call(&ws, "search_files", "{\"pattern\":\"a{1\",\"regex\":true}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_regex");
	CHECK(call(&ws, "search_files", "{\"pattern\":\"(a)\\\\1\",\"regex\":true}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_regex");
	/* a single file; binary files are errors there and skipped in walks */
	CHECK(call(&ws, "search_files", "{\"pattern\":\"const\",\"path\":\"src/app.js\"}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "matches")) == 1);
	json_object_put(res);
	CHECK(call(&ws, "search_files", "{\"pattern\":\"world\"}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "matches")) == 0);
	json_object_put(res);
	CHECK(call(&ws, "search_files", "{\"pattern\":\"world\",\"path\":\"img.png\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "binary_file");
	CHECK(call(&ws, "search_files", "{\"pattern\":\"\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "search_files", "{}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "search_files", "{\"pattern\":\"x\",\"regex\":\"maybe\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "search_files", "{\"pattern\":\"x\",\"path\":\"node_modules\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	/* a file inside an ignored folder, named directly: refused like the
	 * folder (list_files refuses it too), read_file still reads it */
	CHECK(call(&ws, "search_files", "{\"pattern\":\"hello\",\"path\":\"node_modules/x.js\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(strstr(err.message, "read_file can read it") != NULL);
	CHECK(call(&ws, "read_file", "{\"path\":\"node_modules/x.js\"}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "content"), "hello\n");
	json_object_put(res);
	/* $ before a CRLF line's CR */
	CHECK(call(&ws, "search_files", "{\"pattern\":\"say hello$\",\"regex\":true}", &res, &summary, &err) == 0);
	CHECK(json_object_array_length(json_object_object_get(res, "matches")) == 1);
	json_object_put(res);
	workspace_close(&ws);
	strbuf_release(&summary);
	strbuf_release(&longline);
}

/* A prompt-injected model's regular expressions: the ones that made glibc
 * take gigabytes are refused at once with a clear error; the ones whose
 * matching explodes in a DFA run in bounded work and memory, and a search
 * that would take too long stops at its work limit with what it found. */
static void test_search_regex_bombs(void)
{
	static const char *const bombs[] = {
		"((a{1,100}){1,100}){1,100}",
		"(((a{1,100}){1,100}){1,100}){1,100}",
		"((((a{1,255}){1,255}){1,255}){1,255}){1,255}",
		"(.{255}){255}",
		"(a|aa){1,255}{1,255}",
	};
	struct workspace ws;
	struct strbuf summary = STRBUF_INIT, text = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	struct rusage before, after;
	json_object *res, *args;
	int64_t t0;

	plain_fixture();
	puts_(ws_root, "a.txt", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
	CHECK(open_ws(&ws, NULL) == 0);
	for (size_t i = 0; i < ARRAY_SIZE(bombs); i++) {
		args = json_object_new_object();
		json_object_object_add(args, "pattern", json_object_new_string(bombs[i]));
		json_object_object_add(args, "regex", json_object_new_boolean(1));
		t0 = mono_ms();
		CHECK(filetool_call(&ws, "search_files", args, &res, &summary, &err) == -1);
		CHECK(mono_ms() - t0 < 100);
		CHECK_STR(err.code, "invalid_regex");
		CHECK(strstr(err.message, "expands to more than") != NULL);
		CHECK(strstr(err.message, "nested ones multiply") != NULL);
		json_object_put(args);
	}
	/* (a|b)*a(a|b){18}c over 8 files of 1 MiB of random a and b: glibc
	 * builds a DFA state per byte here (minutes, memory growing with the
	 * text); this stops at the work limit within seconds, memory flat */
	srand(7);
	for (size_t i = 0; i < (1u << 20); i++)
		strbuf_addch(&text, (i % 4096) == 4095 ? '\n' : (rand() & 1) ? 'a' : 'b');
	for (int f = 0; f < 8; f++) {
		char name[32];

		snprintf(name, sizeof(name), "ab%d.txt", f);
		put(ws_root, name, text.buf, text.len);
	}
	getrusage(RUSAGE_SELF, &before);
	t0 = mono_ms();
	strbuf_reset(&summary);
	CHECK(call(&ws, "search_files", "{\"pattern\":\"(a|b)*a(a|b){18}c\",\"regex\":true}",
		   &res, &summary, &err) == 0);
	getrusage(RUSAGE_SELF, &after);
	fprintf(stderr, "regex state explosion over 8 MiB: %lld ms, rss +%ld KiB, %s\n",
		(long long)(mono_ms() - t0), after.ru_maxrss - before.ru_maxrss, summary.buf);
	CHECK(mono_ms() - t0 < 60000); /* generous: sanitizer builds on a loaded machine */
	CHECK(after.ru_maxrss - before.ru_maxrss < 16384);
	CHECK(jbool(res, "truncated") == 1);
	CHECK(jstr(res, "note") && strstr(jstr(res, "note"), "work limit"));
	CHECK(strstr(summary.buf, "(stopped at the work limit)") != NULL);
	CHECK(json_object_array_length(json_object_object_get(res, "matches")) == 0);
	json_object_put(res);
	/* the same files, an ordinary pattern: the whole search, no note */
	CHECK(call(&ws, "search_files", "{\"pattern\":\"^a+b{3}a\",\"regex\":true,\"limit\":5}",
		   &res, &summary, &err) == 0);
	CHECK(jstr(res, "note") == NULL);
	CHECK(json_object_array_length(json_object_object_get(res, "matches")) == 5);
	json_object_put(res);
	CHECK(call(&ws, "search_files", "{\"pattern\":\"c\"}", &res, &summary, &err) == 0);
	CHECK(jstr(res, "note") == NULL && jbool(res, "truncated") == 0);
	json_object_put(res);
	workspace_close(&ws);
	strbuf_release(&summary);
	strbuf_release(&text);
}

static int count_tmp(void)
{
	DIR *d = opendir(ws_root);
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d)))
		if (strstr(de->d_name, "tmp"))
			n++;
	if (d)
		closedir(d);
	return n;
}

static void test_write_delete_rename(void)
{
	struct workspace ws;
	struct ws_limits lim;
	struct strbuf summary = STRBUF_INIT, big = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	json_object *res, *args;
	char hex[SHA256_HEX_LEN + 1];
	char *s;

	plain_fixture();
	ws_limits_default(&lim);
	lim.max_file_size = 100;
	lim.max_files = 5;
	lim.max_total_size = 250;
	CHECK(open_ws(&ws, &lim) == 0);
	CHECK(call(&ws, "write_file", "{\"path\":\"src/app.js\",\"content\":\"let x = 1;\\n\"}", &res, &summary, &err) == 0);
	sha256_hex("let x = 1;\n", 11, hex);
	CHECK_STR(jstr(res, "sha256"), hex);
	CHECK(jint(res, "size") == 11);
	CHECK(jbool(res, "created") == 1);
	CHECK_STR(jstr(res, "path"), "src/app.js");
	CHECK_STR(summary.buf, "created src/app.js (11 B)");
	json_object_put(res);
	s = slurp(ws_root, "src/app.js");
	CHECK(s && !strcmp(s, "let x = 1;\n"));
	free(s);
	strbuf_reset(&summary);
	CHECK(call(&ws, "write_file", "{\"path\":\"src/app.js\",\"content\":\"\"}", &res, &summary, &err) == 0);
	CHECK(jbool(res, "created") == 0);
	CHECK_STR(summary.buf, "wrote src/app.js (0 B)");
	json_object_put(res);
	/* content with an embedded NUL is written as given */
	args = json_object_new_object();
	json_object_object_add(args, "path", json_object_new_string("nul.bin"));
	json_object_object_add(args, "content", json_object_new_string_len("a\0b", 3));
	CHECK(filetool_call(&ws, "write_file", args, &res, &summary, &err) == 0);
	CHECK(jint(res, "size") == 3);
	json_object_put(res);
	json_object_put(args);
	/* limits: clear errors, nothing partial left */
	for (int i = 0; i < 101; i++)
		strbuf_addch(&big, 'x');
	args = json_object_new_object();
	json_object_object_add(args, "path", json_object_new_string("big/file.txt"));
	json_object_object_add(args, "content", json_object_new_string(big.buf));
	CHECK(filetool_call(&ws, "write_file", args, &res, &summary, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	CHECK(!exists_in(ws_root, "big"));
	json_object_put(args);
	strbuf_setlen(&big, 100);
	args = json_object_new_object();
	json_object_object_add(args, "path", json_object_new_string("f1"));
	json_object_object_add(args, "content", json_object_new_string(big.buf));
	CHECK(filetool_call(&ws, "write_file", args, &res, &summary, &err) == 0);
	json_object_put(res);
	json_object_object_add(args, "path", json_object_new_string("f2"));
	CHECK(filetool_call(&ws, "write_file", args, &res, &summary, &err) == 0);
	json_object_put(res);
	json_object_object_add(args, "path", json_object_new_string("f3"));
	CHECK(filetool_call(&ws, "write_file", args, &res, &summary, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	CHECK(strstr(err.message, "bytes") != NULL);
	CHECK(!exists_in(ws_root, "f3"));
	json_object_object_add(args, "content", json_object_new_string("tiny"));
	CHECK(filetool_call(&ws, "write_file", args, &res, &summary, &err) == 0);
	json_object_put(res);
	json_object_object_add(args, "path", json_object_new_string("f4"));
	CHECK(filetool_call(&ws, "write_file", args, &res, &summary, &err) == -1);
	CHECK_STR(err.code, "limit_exceeded");
	CHECK(strstr(err.message, "files") != NULL);
	CHECK(!exists_in(ws_root, "f4"));
	json_object_put(args);
	CHECK(count_tmp() == 0);
	CHECK(call(&ws, "write_file", "{\"path\":\"dist/x.js\",\"content\":\"x\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "is_ignored");
	CHECK(call(&ws, "write_file", "{\"path\":\"x.js\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "write_file", "{\"path\":\"x.js\",\"content\":{\"a\":1}}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "write_file", "{\"path\":\"src\",\"content\":\"x\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_a_file");

	/* rename */
	CHECK(call(&ws, "rename_file", "{\"from\":\"f1\",\"to\":\"f2\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "exists");
	CHECK(exists_in(ws_root, "f1") && exists_in(ws_root, "f2"));
	strbuf_reset(&summary);
	CHECK(call(&ws, "rename_file", "{\"from\":\"f1\",\"to\":\"f2\",\"overwrite\":true}", &res, &summary, &err) == 0);
	CHECK_STR(jstr(res, "from"), "f1");
	CHECK_STR(jstr(res, "to"), "f2");
	CHECK_STR(summary.buf, "renamed f1 to f2");
	json_object_put(res);
	CHECK(!exists_in(ws_root, "f1"));
	CHECK(call(&ws, "rename_file", "{\"from\":\"f2\",\"to\":\"moved/here/f2\"}", &res, &summary, &err) == 0);
	json_object_put(res);
	CHECK(exists_in(ws_root, "moved/here/f2"));
	CHECK(call(&ws, "rename_file", "{\"from\":\"f2\",\"to\":\"x\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_found");
	CHECK(call(&ws, "rename_file", "{\"from\":\"moved\",\"to\":\"x\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_a_file");
	CHECK(call(&ws, "rename_file", "{\"from\":\"nul.bin\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "rename_file", "{\"from\":\"nul.bin\",\"to\":\"n2\",\"overwrite\":1}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");

	/* delete */
	strbuf_reset(&summary);
	CHECK(call(&ws, "delete_file", "{\"path\":\"moved/here/f2\"}", &res, &summary, &err) == 0);
	CHECK(jbool(res, "deleted") == 1);
	CHECK_STR(summary.buf, "deleted moved/here/f2");
	json_object_put(res);
	CHECK(!exists_in(ws_root, "moved/here/f2"));
	CHECK(call(&ws, "delete_file", "{\"path\":\"moved/here/f2\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_found");
	CHECK(call(&ws, "delete_file", "{\"path\":\"moved\"}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_a_file");
	CHECK(count_tmp() == 0);
	workspace_close(&ws);
	strbuf_release(&summary);
	strbuf_release(&big);
}

/* write_file replaces a file's content, not its permissions: a script
 * made executable stays executable. */
static void test_write_keeps_mode(void)
{
	struct workspace ws;
	struct strbuf summary = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	json_object *res;
	struct stat st;
	char *p;

	plain_fixture();
	puts_(ws_root, "run.sh", "#!/bin/sh\necho one\n");
	puts_(ws_root, "notes.txt", "plain\n");
	p = path_in(ws_root, "run.sh");
	CHECK(chmod(p, 0755) == 0);
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(call(&ws, "write_file", "{\"path\":\"run.sh\",\"content\":\"#!/bin/sh\\necho two\\n\"}",
		   &res, &summary, &err) == 0);
	CHECK(jbool(res, "executable") == 1);
	json_object_put(res);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0755);
	free(p);
	CHECK(call(&ws, "write_file", "{\"path\":\"notes.txt\",\"content\":\"x\"}", &res, &summary,
		   &err) == 0);
	CHECK(jbool(res, "executable") == -1);
	json_object_put(res);
	p = path_in(ws_root, "notes.txt");
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0644);
	free(p);
	CHECK(call(&ws, "write_file", "{\"path\":\"new.sh\",\"content\":\"x\"}", &res, &summary,
		   &err) == 0);
	json_object_put(res);
	p = path_in(ws_root, "new.sh");
	CHECK(stat(p, &st) == 0 && (st.st_mode & 07777) == 0644);
	free(p);
	workspace_close(&ws);
	strbuf_release(&summary);
}

static void test_snapshot(void)
{
	struct workspace ws;
	struct strbuf summary = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	json_object *res, *files;
	char hex[SHA256_HEX_LEN + 1];

	plain_fixture();
	mkd(ws_root, "src");
	puts_(ws_root, "src/a.js", "a");
	puts_(ws_root, "index.html", "<html>");
	mkd(ws_root, "node_modules");
	puts_(ws_root, "node_modules/dep.js", "dep");
	mkd(ws_root, ".git");
	puts_(ws_root, ".git/HEAD", "ref");
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(call(&ws, "snapshot", "{\"ignored\":\"field\"}", &res, &summary, &err) == 0);
	files = json_object_object_get(res, "files");
	CHECK(json_object_array_length(files) == 2);
	CHECK(jint(res, "file_count") == 2);
	CHECK(jint(res, "total_size") == 7);
	CHECK_STR(jstr(json_object_array_get_idx(files, 0), "path"), "index.html");
	CHECK_STR(jstr(json_object_array_get_idx(files, 1), "path"), "src/a.js");
	sha256_hex("a", 1, hex);
	CHECK_STR(jstr(json_object_array_get_idx(files, 1), "sha256"), hex);
	CHECK(jint(json_object_array_get_idx(files, 1), "size") == 1);
	CHECK_STR(summary.buf, "snapshot: 2 files, 7 B");
	json_object_put(res);
	workspace_close(&ws);
	strbuf_release(&summary);
}

static void test_dispatch_and_schemas(void)
{
	static const char *const names[] = { "list_files", "read_file", "search_files",
		"write_file", "delete_file", "rename_file", "snapshot" };
	static const char *const some[] = { "read_file", "snapshot", "nonexistent", NULL };
	struct workspace ws;
	struct strbuf summary = STRBUF_INIT;
	struct tool_error err = { { 0 }, { 0 } };
	json_object *res = (json_object *)1, *tools;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		CHECK(filetool_exists(names[i]));
	CHECK(!filetool_exists("run_shell"));
	CHECK(!filetool_exists(""));
	CHECK(!filetool_exists(NULL));
	plain_fixture();
	CHECK(open_ws(&ws, NULL) == 0);
	CHECK(filetool_call(&ws, "run_shell", NULL, &res, &summary, &err) == -1);
	CHECK_STR(err.code, "unknown_tool");
	CHECK(res == NULL);
	CHECK(call(&ws, "read_file", "\"a string\"", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "read_file", "{\"path\":null}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "read_file", "{\"path\":[\"a\"]}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "read_file", "{\"path\":\"x\",\"start_line\":1.5}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "read_file", "{\"path\":\"x\",\"start_line\":true}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "read_file", "{\"path\":\"x\",\"start_line\":-1}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "invalid_arguments");
	CHECK(call(&ws, "delete_file", "{\"path\":\"x\",\"unknown\":1}", &res, &summary, &err) == -1);
	CHECK_STR(err.code, "not_found");
	workspace_close(&ws);

	tools = json_object_new_array();
	filetool_add_schemas(tools, NULL);
	CHECK(json_object_array_length(tools) == 7);
	for (size_t i = 0; i < json_object_array_length(tools); i++) {
		json_object *t = json_object_array_get_idx(tools, i), *fn, *params;

		CHECK_STR(jstr(t, "type"), "function");
		CHECK(json_object_object_get_ex(t, "function", &fn));
		CHECK_STR(jstr(fn, "name"), names[i]);
		CHECK(jstr(fn, "description") && strlen(jstr(fn, "description")) > 20);
		CHECK(json_object_object_get_ex(fn, "parameters", &params));
		CHECK_STR(jstr(params, "type"), "object");
	}
	json_object_put(tools);
	tools = json_object_new_array();
	filetool_add_schemas(tools, some);
	CHECK(json_object_array_length(tools) == 2);
	json_object_put(tools);
	strbuf_release(&summary);
}

static void build_long_cases(void)
{
	size_t i;

	memset(name256, 'n', 256);
	name256[256] = '\0';
	for (i = 0; i < 4097; i++)
		path4097[i] = (i % 2) ? '/' : 'p';
	path4097[4096] = 'p';
	path4097[4097] = '\0';
	for (i = 0; i < 1025; i++)
		path1025[i] = (i % 2) ? '/' : 'q';
	path1025[1024] = 'q';
	path1025[1025] = '\0';
	memcpy(dir_long, "dir/", 4);
	memset(dir_long + 4, 'L', 300);
	dir_long[304] = '\0';
	snprintf(selfroot_out, sizeof(selfroot_out), "link_selfroot%s/outside/secret.txt", top);
	snprintf(proc_root_out, sizeof(proc_root_out), "link_proc/self/root%s/outside/new.txt", top);
	snprintf(abs_proc_root, sizeof(abs_proc_root), "/proc/self/root%s/outside/secret.txt", top);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	struct strbuf sb = STRBUF_INIT;

	alarm(600); /* a hang (a FIFO opened for reading) must fail the suite */
	strbuf_addf(&sb, "%s/kiln-ft-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	top = strbuf_detach(&sb, NULL);
	if (!mkdtemp(top)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(ws_root, sizeof(ws_root), "%s/ws", top);
	snprintf(outside, sizeof(outside), "%s/outside", top);
	build_long_cases();
	RUN(test_escape_corpus);
	RUN(test_escape_whole_workspace);
	RUN(test_symlink_swap_race);
	RUN(test_list_files);
	RUN(test_glob_is_linear);
	RUN(test_read_file);
	RUN(test_search_files);
	RUN(test_search_regex_bombs);
	RUN(test_write_delete_rename);
	RUN(test_write_keeps_mode);
	RUN(test_snapshot);
	RUN(test_dispatch_and_schemas);
	rm_rf(top);
	free(top);
	return harness_done("filetools");
}
