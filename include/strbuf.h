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
 *   strbuf_grow / strbuf_extend   room first, then bytes written in place
 *   strbuf_add_int64               decimal text without printf
 */
#ifndef KILN_STRBUF_H
#define KILN_STRBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

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
int strbuf_grow_slow(struct strbuf *sb, size_t extra);
/* Ensures room for extra more bytes; -1 if that would pass the cap. The
 * common case, room already there, is decided inline. */
static inline int strbuf_grow(struct strbuf *sb, size_t extra)
{
	if (sb->alloc && extra < sb->alloc - sb->len && (!sb->cap || extra <= sb->cap - sb->len))
		return 0;
	return strbuf_grow_slow(sb, extra);
}
/* Takes n bytes the caller wrote at buf + len after strbuf_grow(sb, n). */
void strbuf_extend(struct strbuf *sb, size_t n);
int strbuf_add_int64(struct strbuf *sb, long long v);
int strbuf_addstr(struct strbuf *sb, const char *s);

/* Inline: JSON and header writing append many short pieces. */
static inline int strbuf_add(struct strbuf *sb, const void *data, size_t len)
{
	if (strbuf_grow(sb, len) < 0)
		return -1;
	if (len)
		memcpy(sb->buf + sb->len, data, len);
	sb->len += len;
	sb->buf[sb->len] = '\0';
	return 0;
}

static inline int strbuf_addch(struct strbuf *sb, char c)
{
	if (strbuf_grow(sb, 1) < 0)
		return -1;
	sb->buf[sb->len++] = c;
	sb->buf[sb->len] = '\0';
	return 0;
}
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
