/*
 * textdiff.h - unified diff of two text buffers, no external tools.
 *
 *   textdiff_unified   "--- a/x" / "+++ b/x" headers and @@ hunks with 3
 *                      lines of context, capped output
 *
 * Lines are compared exactly (a last line without '\n' differs from the
 * same text with one, and is followed by "\ No newline at end of file").
 * The algorithm is Myers' O(ND) difference in linear space with a cost
 * cap, so pathological inputs give a correct, if less minimal, diff
 * quickly.
 */
#ifndef KILN_TEXTDIFF_H
#define KILN_TEXTDIFF_H

#include <stddef.h>

struct strbuf;

#define TEXTDIFF_CONTEXT 3
#define TEXTDIFF_MAX_LINES 20000

enum textdiff_result {
	TEXTDIFF_OK = 0,        /* out holds the diff; empty when identical */
	TEXTDIFF_BINARY = 1,    /* a NUL byte on either side: out holds
				   "Binary files a/x and b/x differ" (nothing
				   if they are equal), no diff */
	TEXTDIFF_TOO_LARGE = 2, /* more than TEXTDIFF_MAX_LINES lines on a
				   side: out holds "too large to diff: ..." */
};

/*
 * Appends the unified diff of a (alen bytes) and b to out and returns an
 * enum textdiff_result, or -1 when out of memory. path_a/path_b name the
 * sides in the headers ("a/" and "b/" are prefixed); NULL stands for
 * /dev/null (an added or deleted file). At most cap bytes are appended:
 * past that the diff stops at a line boundary with a marker line
 * "... diff truncated at N bytes" and *truncated is set (it is cleared
 * otherwise; truncated may be NULL).
 */
int textdiff_unified(const char *a, size_t alen, const char *b, size_t blen,
		     const char *path_a, const char *path_b, size_t cap,
		     struct strbuf *out, int *truncated);

#endif
