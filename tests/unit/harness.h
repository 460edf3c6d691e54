/*
 * harness.h - the unit-test harness: CHECK() records a failure with its
 * location and goes on; RUN() runs one test function; harness_done() prints
 * the closing "N passed, N failed" line and gives the exit status.
 */
#ifndef KILN_TEST_HARNESS_H
#define KILN_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_failed_checks;
static int harness_passed, harness_failed;

#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                            \
			harness_failed_checks++;                             \
		}                                                            \
	} while (0)

#define CHECK_STR(a, b)                                                      \
	do {                                                                 \
		const char *ha_ = (a), *hb_ = (b);                           \
		if (!ha_ || !hb_ || strcmp(ha_, hb_)) {                      \
			fprintf(stderr, "%s:%d: CHECK_STR failed: %s = \"%s\", want \"%s\"\n", \
				__FILE__, __LINE__, #a, ha_ ? ha_ : "(null)", \
				hb_ ? hb_ : "(null)");                       \
			harness_failed_checks++;                             \
		}                                                            \
	} while (0)

#define RUN(fn)                                                              \
	do {                                                                 \
		int before_ = harness_failed_checks;                         \
		fn();                                                        \
		if (harness_failed_checks == before_) {                      \
			harness_passed++;                                    \
		} else {                                                     \
			harness_failed++;                                    \
			fprintf(stderr, "FAIL %s\n", #fn);                   \
		}                                                            \
	} while (0)

/* Creates a private folder "$TMPDIR/<stem>-XXXXXX" (or under /tmp) into
 * buf; 0, or -1 after saying why. */
static inline int harness_mkdtemp(char *buf, size_t size, const char *stem)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(buf, size, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", stem);
	if (!mkdtemp(buf)) {
		perror("mkdtemp");
		return -1;
	}
	return 0;
}

static inline int harness_done(const char *suite)
{
	printf("%s: %d passed, %d failed\n", suite, harness_passed, harness_failed);
	return harness_failed ? 1 : 0;
}

#endif
