/* jsonw.c - JSON written straight into a strbuf (see jsonw.h). */
#include "jsonw.h"

#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

void jsonw_init(struct jsonw *w, struct strbuf *out)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
}

/* Separates the coming value from the one before it at this level. */
static void value_start(struct jsonw *w)
{
	if (w->after_key) {
		w->after_key = 0;
		return;
	}
	if (w->depth && w->has_items[w->depth - 1])
		strbuf_addch(w->out, ',');
	if (w->depth)
		w->has_items[w->depth - 1] = 1;
}

static void open_level(struct jsonw *w, char ch)
{
	value_start(w);
	/* Deeper than any answer Kiln writes: a bug in the caller. */
	if (w->depth == JSONW_MAX_DEPTH)
		abort();
	w->has_items[w->depth++] = 0;
	strbuf_addch(w->out, ch);
}

static void close_level(struct jsonw *w, char ch)
{
	if (!w->depth)
		abort();
	w->depth--;
	strbuf_addch(w->out, ch);
}

void jsonw_object(struct jsonw *w)
{
	open_level(w, '{');
}

void jsonw_object_end(struct jsonw *w)
{
	close_level(w, '}');
}

void jsonw_array(struct jsonw *w)
{
	open_level(w, '[');
}

void jsonw_array_end(struct jsonw *w)
{
	close_level(w, ']');
}

/* The bytes a JSON string cannot hold as they are. */
static int needs_escape(unsigned char ch)
{
	return ch < 0x20 || ch == '"' || ch == '\\';
}

/* "s" with the escapes JSON requires; runs of plain bytes go in one copy. */
static void put_quoted(struct strbuf *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0, run = 0;

	while (i < len && !needs_escape((unsigned char)s[i]))
		i++;
	if (i == len && strbuf_grow(out, len + 2) == 0) {
		/* the common case: nothing to escape */
		out->buf[out->len] = '"';
		memcpy(out->buf + out->len + 1, s, len);
		out->buf[out->len + 1 + len] = '"';
		strbuf_extend(out, len + 2);
		return;
	}
	strbuf_addch(out, '"');
	for (; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		char esc[6];
		size_t n = 2;

		if (!needs_escape(ch))
			continue;
		strbuf_add(out, s + run, i - run);
		run = i + 1;
		esc[0] = '\\';
		switch (ch) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		default:
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hex[ch >> 4];
			esc[5] = hex[ch & 15];
			n = 6;
		}
		strbuf_add(out, esc, n);
	}
	strbuf_add(out, s + run, len - run);
	strbuf_addch(out, '"');
}

void jsonw_key(struct jsonw *w, const char *key)
{
	value_start(w);
	put_quoted(w->out, key, strlen(key));
	strbuf_addch(w->out, ':');
	w->after_key = 1;
}

void jsonw_string_len(struct jsonw *w, const char *s, size_t len)
{
	value_start(w);
	put_quoted(w->out, s, len);
}

void jsonw_string(struct jsonw *w, const char *s)
{
	if (!s)
		jsonw_null(w);
	else
		jsonw_string_len(w, s, strlen(s));
}

void jsonw_int(struct jsonw *w, int64_t v)
{
	value_start(w);
	strbuf_add_int64(w->out, v);
}

void jsonw_bool(struct jsonw *w, int v)
{
	jsonw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

void jsonw_null(struct jsonw *w)
{
	jsonw_raw(w, "null", 4);
}

void jsonw_raw(struct jsonw *w, const char *json, size_t len)
{
	value_start(w);
	strbuf_add(w->out, json, len);
}

void jsonw_kv_string(struct jsonw *w, const char *key, const char *s)
{
	jsonw_key(w, key);
	jsonw_string(w, s);
}

void jsonw_kv_int(struct jsonw *w, const char *key, int64_t v)
{
	jsonw_key(w, key);
	jsonw_int(w, v);
}

void jsonw_kv_bool(struct jsonw *w, const char *key, int v)
{
	jsonw_key(w, key);
	jsonw_bool(w, v);
}

void jsonw_kv_null(struct jsonw *w, const char *key)
{
	jsonw_key(w, key);
	jsonw_null(w);
}
