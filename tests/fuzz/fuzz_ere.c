/*
 * fuzz_ere.c - libFuzzer target for search_files' regular expressions.
 *
 * The input is a pattern, a NUL byte, and a text of lines. A pattern that
 * compiles is matched against every line within a work budget; besides
 * crashes, leaks and undefined behaviour, it aborts if the work a line
 * takes breaks the linear bound ere.h promises (a step per byte and per
 * instruction visited, at most two visits of an instruction per byte), or
 * if a refusal comes without a message.
 */
#include <stdint.h>
#include <string.h>

#include "ere.h"

#define BUDGET 50000000ULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data, *nul = memchr(in, '\0', size);
	size_t patlen = nul ? (size_t)(nul - in) : size;
	const char *text = nul ? nul + 1 : in + size, *end = in + size;
	struct ere *re;
	char err[256];

	if (ere_compile(in, patlen, &re, err, sizeof(err)) < 0) {
		if (!err[0] || re)
			__builtin_trap();
		return 0;
	}
	while (text <= end) {
		const char *nl = memchr(text, '\n', (size_t)(end - text));
		size_t len = (size_t)((nl ? nl : end) - text);
		uint64_t budget = BUDGET, used;
		int r = ere_match(re, text, len, &budget);

		used = BUDGET - budget;
		if (r < -1 || r > 1 || (r == -1 && budget != 0))
			__builtin_trap();
		if (r != -1 && used > (uint64_t)(len + 1) * (2 * (ERE_MAX_PROGRAM + 1) + 3))
			__builtin_trap();
		if (!nl)
			break;
		text = nl + 1;
	}
	ere_free(re);
	return 0;
}
