/*
 * strbuf.h - the one growable string buffer.
 *
 * Every string Kiln builds goes through a strbuf. A strbuf is always
 * NUL-terminated, may hold binary data, and may carry a hard cap: an append
 * that would grow it past the cap fails (returns -1, buffer unchanged) instead
 * of growing, so buffers filled from outside data stay bounded.
 *
 *   strbuf_init / strbuf_init_capped / strbuf_release / strbuf_detach
 *   strbuf_reset / strbuf_setlen
 *   strbuf_add / strbuf_addstr / strbuf_addch / strbuf_addf / strbuf_vaddf
 *   strbuf_grow
 */
#ifndef KILN_STRBUF_H
#define KILN_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

struct strbuf {
	char *buf;   /* always valid and NUL-terminated after init */
	size_t len;  /* bytes used, excluding the terminating NUL */
	size_t alloc;
	size_t cap;  /* 0 = unlimited; else len never exceeds cap */
};

#define STRBUF_INIT { NULL, 0, 0, 0 }

void strbuf_init(struct strbuf *sb);
void strbuf_init_capped(struct strbuf *sb, size_t cap);
void strbuf_release(struct strbuf *sb);
/* Hands the buffer to the caller (free() it); the strbuf is re-initialised. */
char *strbuf_detach(struct strbuf *sb, size_t *len);
void strbuf_reset(struct strbuf *sb);
void strbuf_setlen(struct strbuf *sb, size_t len);
/* Ensures room for extra more bytes; -1 if that would pass the cap. */
int strbuf_grow(struct strbuf *sb, size_t extra);
int strbuf_add(struct strbuf *sb, const void *data, size_t len);
int strbuf_addstr(struct strbuf *sb, const char *s);
int strbuf_addch(struct strbuf *sb, char c);
int strbuf_addf(struct strbuf *sb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int strbuf_vaddf(struct strbuf *sb, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
/* A static empty string so unused buffers can still be read. */
static inline const char *strbuf_str(const struct strbuf *sb)
{
	return sb->buf ? sb->buf : "";
}

#endif
