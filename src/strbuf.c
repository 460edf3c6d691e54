/* strbuf.c - growable, optionally capped string buffer (see strbuf.h). */
#include "strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static char strbuf_empty[1];

void strbuf_init(struct strbuf *sb)
{
	sb->buf = strbuf_empty;
	sb->len = 0;
	sb->alloc = 0;
	sb->cap = 0;
}

void strbuf_init_capped(struct strbuf *sb, size_t cap)
{
	strbuf_init(sb);
	sb->cap = cap;
}

void strbuf_release(struct strbuf *sb)
{
	size_t cap = sb->cap;

	if (sb->alloc)
		free(sb->buf);
	strbuf_init(sb);
	sb->cap = cap;
}

char *strbuf_detach(struct strbuf *sb, size_t *len)
{
	char *res;

	if (strbuf_grow(sb, 0) < 0 || !sb->alloc) {
		/* cannot happen unless out of memory: give back an owned empty string */
		res = calloc(1, 1);
	} else {
		res = sb->buf;
	}
	if (len)
		*len = res ? sb->len : 0;
	strbuf_init(sb);
	return res;
}

void strbuf_reset(struct strbuf *sb)
{
	strbuf_setlen(sb, 0);
}

void strbuf_setlen(struct strbuf *sb, size_t len)
{
	if (!sb->alloc) {
		sb->len = 0;
		return;
	}
	if (len > sb->len)
		len = sb->len;
	sb->len = len;
	sb->buf[len] = '\0';
}

int strbuf_grow_slow(struct strbuf *sb, size_t extra)
{
	size_t want, alloc;
	char *nb;

	if (extra > (size_t)-1 / 2 - sb->len)
		return -1;
	if (sb->cap && sb->len + extra > sb->cap)
		return -1;
	want = sb->len + extra + 1;
	if (sb->alloc && want <= sb->alloc)
		return 0;
	alloc = sb->alloc ? sb->alloc : 64;
	while (alloc < want)
		alloc = alloc * 3 / 2 + 16;
	if (sb->cap && alloc > sb->cap + 1)
		alloc = sb->cap + 1;
	nb = sb->alloc ? realloc(sb->buf, alloc) : malloc(alloc);
	if (!nb)
		return -1;
	if (!sb->alloc)
		nb[0] = '\0';
	sb->buf = nb;
	sb->alloc = alloc;
	return 0;
}

void strbuf_extend(struct strbuf *sb, size_t n)
{
	if (!sb->alloc || n >= sb->alloc - sb->len)
		abort(); /* a caller that did not grow first: a bug, not input */
	sb->len += n;
	sb->buf[sb->len] = '\0';
}

int strbuf_add_int64(struct strbuf *sb, long long v)
{
	char num[24];

	return strbuf_add(sb, num, fmt_int64(num, v));
}

int strbuf_addstr(struct strbuf *sb, const char *s)
{
	return strbuf_add(sb, s, strlen(s));
}

int strbuf_vaddf(struct strbuf *sb, const char *fmt, va_list ap)
{
	va_list cp;
	int n;

	if (strbuf_grow(sb, 0) < 0)
		return -1;
	va_copy(cp, ap);
	n = vsnprintf(sb->buf + sb->len, sb->alloc - sb->len, fmt, cp);
	va_end(cp);
	if (n < 0)
		goto fail;
	if ((size_t)n >= sb->alloc - sb->len) {
		if (strbuf_grow(sb, (size_t)n) < 0)
			goto fail;
		va_copy(cp, ap);
		n = vsnprintf(sb->buf + sb->len, sb->alloc - sb->len, fmt, cp);
		va_end(cp);
		if (n < 0)
			goto fail;
	}
	sb->len += (size_t)n;
	return 0;
fail:
	sb->buf[sb->len] = '\0';
	return -1;
}

int strbuf_addf(struct strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = strbuf_vaddf(sb, fmt, ap);
	va_end(ap);
	return ret;
}
