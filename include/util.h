/*
 * util.h - small helpers used everywhere.
 *
 *   parse_int64 / parse_uint   strict decimal parsing (replaces atoi)
 *   fmt_int64 / fmt_uint64     decimal text of an integer, without printf
 *   now_ms / mono_ms           wall-clock and monotonic milliseconds
 *   random_bytes               getrandom(2), never a weaker source
 *   hex_encode                 lower-case hex of a byte string
 *   ct_equal                   constant-time comparison
 *   xstrdup / xmalloc-style helpers abort only on out-of-memory
 */
#ifndef KILN_UTIL_H
#define KILN_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Whole string must be a decimal integer within [min,max]; 0 on success. */
int parse_int64(const char *s, int64_t min, int64_t max, int64_t *out);
int parse_uint(const char *s, unsigned max, unsigned *out);
/* Writes the decimal text of v to out (at least 21 bytes), no NUL; returns
 * its length. */
size_t fmt_int64(char *out, long long v);
size_t fmt_uint64(char *out, uint64_t v);

int64_t now_ms(void);
int64_t mono_ms(void);
void sleep_ms(int64_t ms);

int random_bytes(void *buf, size_t len);
/* out must hold 2*len+1 bytes. */
void hex_encode(const unsigned char *in, size_t len, char *out);
int ct_equal(const void *a, const void *b, size_t len);

char *xstrdup(const char *s);
void *xcalloc(size_t n, size_t size);
/* realloc of n * size bytes that aborts on overflow or out-of-memory. */
void *xrealloc(void *ptr, size_t n, size_t size);

/* True when s is valid UTF-8 of len bytes (no overlongs, no surrogates). */
int utf8_valid(const char *s, size_t len);

#endif
