/* test_textdiff.c - unified diffs: exact output for small cases, the
 * no-newline marker, caps, binary and size refusals, and a round trip
 * through a tiny patch applier on random edits. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "strbuf.h"
#include "textdiff.h"

static int diff(const char *a, const char *b, size_t cap, struct strbuf *out,
		int *truncated)
{
	strbuf_reset(out);
	return textdiff_unified(a, strlen(a), b, strlen(b), "f.txt", "f.txt", cap,
				out, truncated);
}

static void test_identical(void)
{
	struct strbuf out = STRBUF_INIT;
	int trunc = 1;

	CHECK(diff("a\nb\n", "a\nb\n", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK(out.len == 0);
	CHECK(trunc == 0);
	CHECK(diff("", "", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK(out.len == 0);
	strbuf_release(&out);
}

static void test_insert_delete_change(void)
{
	struct strbuf out = STRBUF_INIT;
	int trunc;

	CHECK(diff("a\nb\nc\n", "a\nb\nX\nc\n", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,4 @@\n a\n b\n+X\n c\n");
	CHECK(diff("a\nb\nc\n", "a\nc\n", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,2 @@\n a\n-b\n c\n");
	CHECK(diff("a\nb\nc\n", "a\nB\nc\n", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
	/* far-apart changes make two hunks with 3 lines of context each */
	CHECK(diff("1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n",
		   "X\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\nY\n", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- a/f.txt\n+++ b/f.txt\n"
			   "@@ -1,4 +1,4 @@\n-1\n+X\n 2\n 3\n 4\n"
			   "@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+Y\n");
	/* close changes share one hunk */
	CHECK(diff("1\n2\n3\n4\n5\n6\n7\n8\n", "X\n2\n3\n4\n5\n6\n7\nY\n", 4096, &out,
		   &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- a/f.txt\n+++ b/f.txt\n@@ -1,8 +1,8 @@\n-1\n+X\n 2\n 3\n 4\n 5\n 6\n 7\n-8\n+Y\n");
	strbuf_release(&out);
}

static void test_no_trailing_newline(void)
{
	struct strbuf out = STRBUF_INIT;
	int trunc;

	CHECK(diff("a\nb", "a\nb\n", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n");
	CHECK(diff("a\n", "a\nc", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- a/f.txt\n+++ b/f.txt\n@@ -1 +1,2 @@\n a\n+c\n\\ No newline at end of file\n");
	strbuf_release(&out);
}

static void test_empty_files(void)
{
	struct strbuf out = STRBUF_INIT;
	int trunc;

	CHECK(diff("", "x\ny\n", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- a/f.txt\n+++ b/f.txt\n@@ -0,0 +1,2 @@\n+x\n+y\n");
	CHECK(diff("x\n", "", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- a/f.txt\n+++ b/f.txt\n@@ -1 +0,0 @@\n-x\n");
	/* added file: /dev/null on the old side */
	strbuf_reset(&out);
	CHECK(textdiff_unified("", 0, "new\n", 4, NULL, "n.txt", 4096, &out, &trunc) == TEXTDIFF_OK);
	CHECK_STR(out.buf, "--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1 @@\n+new\n");
	strbuf_release(&out);
}

static void test_truncation(void)
{
	struct strbuf a = STRBUF_INIT, b = STRBUF_INIT, out = STRBUF_INIT;
	int trunc = 0;

	for (int i = 0; i < 2000; i++) {
		strbuf_addf(&a, "line %d\n", i);
		strbuf_addf(&b, "LINE %d\n", i);
	}
	strbuf_addstr(&out, "prefix:");
	CHECK(textdiff_unified(a.buf, a.len, b.buf, b.len, "x", "x", 1000, &out,
			       &trunc) == TEXTDIFF_OK);
	CHECK(trunc == 1);
	CHECK(out.len - 7 <= 1000);
	CHECK(strstr(out.buf, "... diff truncated at 1000 bytes\n") != NULL);
	CHECK(out.buf[out.len - 1] == '\n');
	CHECK(!strncmp(out.buf, "prefix:--- a/x\n", 15));
	/* a cap too small even for the marker: nothing, but flagged */
	strbuf_reset(&out);
	CHECK(textdiff_unified(a.buf, a.len, b.buf, b.len, "x", "x", 10, &out,
			       &trunc) == TEXTDIFF_OK);
	CHECK(trunc == 1 && out.len == 0);
	strbuf_release(&a);
	strbuf_release(&b);
	strbuf_release(&out);
}

static void test_binary_and_too_large(void)
{
	struct strbuf out = STRBUF_INIT, big = STRBUF_INIT;
	int trunc;

	CHECK(textdiff_unified("a\0b", 3, "a\0c", 3, "p.png", "p.png", 4096, &out,
			       &trunc) == TEXTDIFF_BINARY);
	CHECK_STR(out.buf, "Binary files a/p.png and b/p.png differ\n");
	strbuf_reset(&out);
	CHECK(textdiff_unified("a\0b", 3, "a\0b", 3, "p", "p", 4096, &out, &trunc) ==
	      TEXTDIFF_BINARY);
	CHECK(out.len == 0);
	for (int i = 0; i <= TEXTDIFF_MAX_LINES; i++)
		strbuf_addstr(&big, "x\n");
	CHECK(textdiff_unified(big.buf, big.len, "x\n", 2, "b", "b", 4096, &out, &trunc) ==
	      TEXTDIFF_TOO_LARGE);
	CHECK(strstr(out.buf, "too large to diff") != NULL);
	strbuf_release(&out);
	strbuf_release(&big);
}

/* Applies a unified diff produced by textdiff to a, for the round trip. */
static int apply(const char *a, const char *patch, struct strbuf *res)
{
	const char *p = patch, *src = a;
	size_t line_a = 1;

	p = strstr(p, "\n+++ ");
	if (!p)
		return *patch ? -1 : (strbuf_addstr(res, a), 0);
	p = strchr(p + 1, '\n') + 1;
	while (*p == '@') {
		unsigned long start = strtoul(p + 4, NULL, 10);
		const char *nl;

		/* "-0,0": the hunk starts before line 1 (a was empty) */
		if (start == 0)
			start = 1;
		/* copy unchanged lines before the hunk */
		while (line_a < start) {
			nl = strchr(src, '\n');
			strbuf_add(res, src, (size_t)(nl - src + 1));
			src = nl + 1;
			line_a++;
		}
		p = strchr(p, '\n') + 1;
		while (*p == ' ' || *p == '-' || *p == '+' || *p == '\\') {
			nl = strchr(p, '\n');
			int no_nl = !strncmp(nl + 1, "\\ No newline", 12);

			if (*p == ' ' || *p == '-') {
				const char *snl = strchr(src, '\n');
				size_t len = snl ? (size_t)(snl - src + 1) : strlen(src);

				if (*p == ' ')
					strbuf_add(res, src, len);
				src += len;
				line_a++;
			} else if (*p == '+') {
				strbuf_add(res, p + 1, (size_t)(nl - p - 1) + !no_nl);
			}
			p = nl + 1;
			if (no_nl)
				p = strchr(p, '\n') + 1;
		}
	}
	strbuf_addstr(res, src);
	return 0;
}

static void test_round_trip_random(void)
{
	unsigned seed = 12345;
	int failures = 0;

	for (int iter = 0; iter < 300; iter++) {
		struct strbuf a = STRBUF_INIT, b = STRBUF_INIT, out = STRBUF_INIT, res = STRBUF_INIT;
		int n = (int)((seed = seed * 1103515245 + 12345) >> 16) % 60, trunc;

		for (int i = 0; i < n; i++) {
			unsigned r = (seed = seed * 1103515245 + 12345) >> 16;

			strbuf_addf(&a, "l%u\n", r % 7);
			if (r % 5 == 0)
				continue; /* deleted */
			if (r % 7 == 1)
				strbuf_addf(&b, "new%u\n", r % 3);
			strbuf_addf(&b, "l%u\n", r % 5 == 1 ? 9 : r % 7);
		}
		if (iter % 3 == 0 && b.len)
			strbuf_setlen(&b, b.len - 1); /* no trailing newline */
		if (textdiff_unified(strbuf_str(&a), a.len, strbuf_str(&b), b.len, "r", "r",
				     1 << 20, &out, &trunc) != TEXTDIFF_OK ||
		    apply(strbuf_str(&a), strbuf_str(&out), &res) < 0 ||
		    strcmp(strbuf_str(&res), strbuf_str(&b)))
			failures++;
		strbuf_release(&a);
		strbuf_release(&b);
		strbuf_release(&out);
		strbuf_release(&res);
	}
	CHECK(failures == 0);
}

static void test_large_dissimilar_is_fast(void)
{
	struct strbuf a = STRBUF_INIT, b = STRBUF_INIT, out = STRBUF_INIT, res = STRBUF_INIT;
	int trunc;

	/* the cost cap keeps this fast; the diff must still be correct */
	for (int i = 0; i < TEXTDIFF_MAX_LINES; i++) {
		strbuf_addf(&a, "%d\n", (i * 7919) % 10007);
		strbuf_addf(&b, "%d\n", (i * 104729) % 10009);
	}
	CHECK(textdiff_unified(a.buf, a.len, b.buf, b.len, "big", "big", (size_t)1 << 26,
			       &out, &trunc) == TEXTDIFF_OK);
	CHECK(!trunc);
	CHECK(apply(a.buf, out.buf, &res) == 0 && !strcmp(res.buf, b.buf));
	strbuf_release(&a);
	strbuf_release(&b);
	strbuf_release(&out);
	strbuf_release(&res);
}

int main(void)
{
	RUN(test_identical);
	RUN(test_insert_delete_change);
	RUN(test_no_trailing_newline);
	RUN(test_empty_files);
	RUN(test_truncation);
	RUN(test_binary_and_too_large);
	RUN(test_round_trip_random);
	RUN(test_large_dissimilar_is_fast);
	return harness_done("textdiff");
}
