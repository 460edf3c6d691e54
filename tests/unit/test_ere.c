/* test_ere.c - search_files' regular expressions: the syntax, the errors,
 * agreement with glibc's regexec on random patterns of the syntax both
 * share, and bounded work on the patterns that make glibc blow up. */
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ere.h"
#include "harness.h"
#include "util.h"

#define BIG_BUDGET UINT64_MAX

/* 1, 0 or -1 (does not compile). */
static int matches(const char *pat, const char *text)
{
	struct ere *re;
	char err[256];
	uint64_t budget = BIG_BUDGET;
	int r;

	if (ere_compile(pat, strlen(pat), &re, err, sizeof(err)) < 0)
		return -1;
	r = ere_match(re, text, strlen(text), &budget);
	ere_free(re);
	return r;
}

/* Refused, with a message containing want. */
static int refused(const char *pat, size_t len, const char *want)
{
	struct ere *re = NULL;
	char err[256];
	int64_t t0 = mono_ms();
	int ok;

	ok = ere_compile(pat, len, &re, err, sizeof(err)) == -1 && !re && strstr(err, want);
	/* refusals are immediate, whatever the pattern would expand to */
	ok = ok && mono_ms() - t0 < 200;
	if (!ok)
		fprintf(stderr, "  pattern '%.60s': %s (wanted '%s')\n", pat, err, want);
	ere_free(re);
	return ok;
}

static void test_syntax(void)
{
	CHECK(matches("hello", "say hello world") == 1);
	CHECK(matches("hello", "say hell o") == 0);
	CHECK(matches("h.llo", "hallo") == 1);
	CHECK(matches("^abc", "abcdef") == 1);
	CHECK(matches("^abc", "xabc") == 0);
	CHECK(matches("def$", "abcdef") == 1);
	CHECK(matches("def$", "defx") == 0);
	CHECK(matches("^$", "") == 1);
	CHECK(matches("^$", "x") == 0);
	CHECK(matches("a^b", "a^b") == 0);  /* ^ is an anchor anywhere */
	CHECK(matches("colou?r", "color") == 1);
	CHECK(matches("colou?r", "colour") == 1);
	CHECK(matches("colou?r", "colouur") == 0);
	CHECK(matches("ab+c", "ac") == 0);
	CHECK(matches("ab+c", "abbbc") == 1);
	CHECK(matches("ab*c", "ac") == 1);
	CHECK(matches("(get|set)Item", "localStorage.setItem(") == 1);
	CHECK(matches("(get|set)Item", "putItem") == 0);
	CHECK(matches("a|b|c", "xxc") == 1);
	CHECK(matches("^(a|)$", "") == 1);
	CHECK(matches("^()$", "") == 1);
	CHECK(matches("^x{3}$", "xxx") == 1);
	CHECK(matches("^x{3}$", "xx") == 0);
	CHECK(matches("^x{2,}$", "xxxxx") == 1);
	CHECK(matches("^x{2,}$", "x") == 0);
	CHECK(matches("^x{1,3}$", "xxx") == 1);
	CHECK(matches("^x{1,3}$", "xxxx") == 0);
	CHECK(matches("^x{0,0}y$", "y") == 1);
	CHECK(matches("^(ab){2}$", "abab") == 1);
	CHECK(matches("#[0-9a-fA-F]{3,6}\\b", "color: #FFaa00;") == 1);
	CHECK(matches("[^a-z]", "abc") == 0);
	CHECK(matches("[^a-z]", "abC") == 1);
	CHECK(matches("[]a]", "]") == 1);
	CHECK(matches("[^]a]", "]a") == 0);
	CHECK(matches("[a-]", "-") == 1);
	CHECK(matches("[[:digit:]]+px", "width: 10px") == 1);
	CHECK(matches("[[:upper:]][[:lower:]]+", "Hello") == 1);
	CHECK(matches("[[:space:]]", "nospace") == 0);
	CHECK(matches("[[=a=]]", "a") == 1);
	CHECK(matches("[[.-.]]", "-") == 1);
	CHECK(matches("[\\d]", "d") == 1);       /* POSIX: '\' is plain in brackets */
	CHECK(matches("[\\d]", "5") == 0);
	CHECK(matches("\\d+", "abc 42") == 1);
	CHECK(matches("\\d", "abc") == 0);
	CHECK(matches("\\D", "123") == 0);
	CHECK(matches("function\\s+\\w+", "function  render()") == 1);
	CHECK(matches("\\S", "   ") == 0);
	CHECK(matches("\\W", "abc_9") == 0);
	CHECK(matches("\\bcat\\b", "the cat sat") == 1);
	CHECK(matches("\\bcat\\b", "concatenate") == 0);
	CHECK(matches("\\Bcat\\B", "concatenate") == 1);
	CHECK(matches("\\<cat", "cats") == 1);
	CHECK(matches("cat\\>", "cats") == 0);
	CHECK(matches("a\\tb", "a\tb") == 1);
	CHECK(matches("\\.js$", "app.js") == 1);
	CHECK(matches("\\.js$", "appxjs") == 0);
	CHECK(matches("\\(\\)", "f()") == 1);
	CHECK(matches("\\{", "{") == 1);
	CHECK(matches("a\\|b", "a|b") == 1);
	CHECK(matches("\xc3\xa9t\xc3\xa9", "\xc3\xa9t\xc3\xa9") == 1); /* bytes */
	CHECK(matches("(a*)*b", "aaaab") == 1);   /* empty loops end */
	CHECK(matches("(a*)*b", "aaaa") == 0);
	CHECK(matches("(^|x)y", "y") == 1);
	CHECK(matches("x($|y)", "x") == 1);
}

static void test_errors(void)
{
	char deep[80];

	CHECK(refused("a{1", 3, "invalid repeat"));
	CHECK(refused("a{,3}", 5, "invalid repeat"));
	CHECK(refused("a{x}", 4, "invalid repeat"));
	CHECK(refused("a{3,2}", 6, "maximum below its minimum"));
	CHECK(refused("a{256}", 6, "limited to 255"));
	CHECK(refused("a{99999999999999999999}", 23, "limited to 255"));
	CHECK(refused("(a", 2, "unmatched ("));
	CHECK(refused("a)", 2, "unmatched )"));
	CHECK(refused("*.js", 4, "nothing before it to repeat"));
	CHECK(refused("a|+b", 4, "nothing before it to repeat"));
	CHECK(refused("(?:a)", 5, "nothing before it to repeat"));
	CHECK(refused("[abc", 4, "unmatched ["));
	CHECK(refused("[z-a]", 5, "invalid range"));
	CHECK(refused("[[:nope:]]", 10, "unknown character class"));
	CHECK(refused("[[:alpha:", 9, "unterminated"));
	CHECK(refused("[[.ab.]]", 8, "single-byte collating"));
	CHECK(refused("abc\\", 4, "lone backslash"));
	CHECK(refused("(a)\\1", 5, "back-references"));
	CHECK(refused("a\0b", 3, "without NUL"));
	memset(deep, '(', 33);
	deep[33] = 'a';
	memset(deep + 34, ')', 33);
	deep[67] = '\0';
	CHECK(refused(deep, 67, "nest deeper than 32"));
	/* 32 levels are fine */
	memset(deep, '(', 32);
	deep[32] = 'a';
	memset(deep + 33, ')', 32);
	deep[65] = '\0';
	CHECK(matches(deep, "a") == 1);
}

/* The patterns that took glibc gigabytes: refused at once, by size. */
static void test_repeat_bombs_refused(void)
{
	static const char *const bombs[] = {
		"((a{1,100}){1,100}){1,100}",
		"(((a{1,100}){1,100}){1,100}){1,100}",
		"((((((((((a{1,255}){1,255}){1,255}){1,255}){1,255}){1,255}){1,255}){1,255}){1,255}){1,255})",
		"(a{255}){255}",
		"((a|b|c|d){1,200}){1,200}",
		"(x{0,255}){0,255}",
		"((a+)+){1,255}{1,255}",
		"[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}[a-z]{255}",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bombs); i++)
		CHECK(refused(bombs[i], strlen(bombs[i]), "expands to more than 4096 steps"));
	/* large but within the program cap: accepted */
	CHECK(matches("(a{1,20}){1,20}", "aaa") == 1);
	CHECK(matches("[0-9]{1,255}", "x12") == 1);
}

/* Random patterns over the syntax glibc and this engine share, on random
 * texts: both must agree on every line. Anchors stand only at the ends:
 * glibc's regexec gets some in the middle wrong (it matches
 * '(((a|^b)+)c*$).*' on "baacaab", which grep -E, like this engine, does
 * not). */
static unsigned rng_state = 12345;

static unsigned rnd(unsigned n)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return (rng_state >> 16) % n;
}

static void gen_pattern(char *out, size_t *pos, size_t cap, int depth)
{
	static const char *const atoms[] = { "a", "b", "c", ".", "[ab]", "[^a]", "x" };
	int pieces = 1 + (int)rnd(3);

	for (int i = 0; i < pieces && *pos + 16 < cap; i++) {
		if (depth < 3 && rnd(4) == 0) {
			out[(*pos)++] = '(';
			gen_pattern(out, pos, cap, depth + 1);
			if (rnd(3) == 0 && *pos + 16 < cap) {
				out[(*pos)++] = '|';
				gen_pattern(out, pos, cap, depth + 1);
			}
			out[(*pos)++] = ')';
		} else {
			const char *a = atoms[rnd(ARRAY_SIZE(atoms))];

			memcpy(out + *pos, a, strlen(a));
			*pos += strlen(a);
		}
		switch (rnd(8)) {
		case 0:
			out[(*pos)++] = '*';
			break;
		case 1:
			out[(*pos)++] = '+';
			break;
		case 2:
			out[(*pos)++] = '?';
			break;
		case 3:
			*pos += (size_t)snprintf(out + *pos, cap - *pos, "{%u,%u}", rnd(2), 2 + rnd(2));
			break;
		default:
			break;
		}
	}
}

static void test_agrees_with_glibc(void)
{
	char pat[256], text[16];
	unsigned disagreements = 0, compared = 0;

	for (int n = 0; n < 3000; n++) {
		struct ere *re;
		regex_t gre;
		char err[256];
		size_t pos = 0;

		if (rnd(4) == 0)
			pat[pos++] = '^';
		gen_pattern(pat, &pos, sizeof(pat) - 8, 0);
		if (rnd(4) == 0)
			pat[pos++] = '$';
		pat[pos] = '\0';
		if (regcomp(&gre, pat, REG_EXTENDED | REG_NOSUB))
			continue;
		if (ere_compile(pat, pos, &re, err, sizeof(err)) < 0) {
			fprintf(stderr, "  glibc compiles '%s', ere does not: %s\n", pat, err);
			CHECK(0);
			regfree(&gre);
			continue;
		}
		for (int t = 0; t < 20; t++) {
			size_t len = rnd(10), i;
			uint64_t budget = BIG_BUDGET;
			int ours, theirs;

			for (i = 0; i < len; i++)
				text[i] = "abcx"[rnd(4)];
			text[len] = '\0';
			ours = ere_match(re, text, len, &budget);
			theirs = regexec(&gre, text, 0, NULL, 0) == 0;
			compared++;
			if (ours != theirs && disagreements++ < 10)
				fprintf(stderr, "  '%s' on '%s': ere %d, glibc %d\n", pat, text, ours,
					theirs);
		}
		ere_free(re);
		regfree(&gre);
	}
	CHECK(disagreements == 0);
	CHECK(compared > 20000);
}

/* (a|b)*a(a|b){18}c made glibc build a DFA state per byte (minutes, and
 * memory growing with the text); here the work per byte is bounded by the
 * program and the memory is fixed at compile time. */
static void test_state_explosion_is_linear(void)
{
	const char *pat = "(a|b)*a(a|b){18}c";
	size_t len = 4 << 20, line = 4096;
	char *text = xcalloc(1, len), err[256];
	struct ere *re;
	struct rusage before, after;
	uint64_t budget = BIG_BUDGET, used;
	int64_t t0;
	int hits = 0;

	srand(1);
	for (size_t i = 0; i < len; i++)
		text[i] = (rand() & 1) ? 'a' : 'b';
	CHECK(ere_compile(pat, strlen(pat), &re, err, sizeof(err)) == 0);
	getrusage(RUSAGE_SELF, &before);
	t0 = mono_ms();
	for (size_t off = 0; off < len; off += line)
		hits += ere_match(re, text + off, line, &budget) == 1;
	getrusage(RUSAGE_SELF, &after);
	used = BIG_BUDGET - budget;
	fprintf(stderr, "state explosion: 4 MiB in %lld ms, %llu steps (%.1f per byte), "
		"rss +%ld KiB\n", (long long)(mono_ms() - t0), (unsigned long long)used,
		(double)used / (double)len, after.ru_maxrss - before.ru_maxrss);
	CHECK(hits == 0); /* no 'c' in the text */
	/* at most one step per instruction per byte, plus the byte itself */
	CHECK(used <= (uint64_t)len * 64);
	CHECK(after.ru_maxrss - before.ru_maxrss < 8192);
	ere_free(re);
	free(text);
}

static void test_budget(void)
{
	const char *pat = "(a|b)*a(a|b){18}c";
	char *text = xcalloc(1, 1 << 20), err[256];
	struct ere *re;
	uint64_t budget = 100000;

	memset(text, 'a', 1 << 20);
	CHECK(ere_compile(pat, strlen(pat), &re, err, sizeof(err)) == 0);
	CHECK(ere_match(re, text, 1 << 20, &budget) == -1);
	CHECK(budget == 0);
	/* a match found within the budget is still a match */
	budget = 100000;
	CHECK(ere_match(re, "abbbbbbbbbbbbbbbbbbc", 20, &budget) == 1);
	CHECK(budget > 0 && budget < 100000);
	/* bytes that cannot start a match are skipped cheaply */
	ere_free(re);
	CHECK(ere_compile("needle", 6, &re, err, sizeof(err)) == 0);
	memset(text, 'x', 1 << 20);
	budget = BIG_BUDGET;
	CHECK(ere_match(re, text, 1 << 20, &budget) == 0);
	CHECK(BIG_BUDGET - budget <= (1 << 20) + 16);
	ere_free(re);
	free(text);
}

int main(void)
{
	RUN(test_syntax);
	RUN(test_errors);
	RUN(test_repeat_bombs_refused);
	RUN(test_agrees_with_glibc);
	RUN(test_state_explosion_is_linear);
	RUN(test_budget);
	return harness_done("ere");
}
