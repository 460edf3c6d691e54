/*
 * jsonw.h - JSON written straight into a strbuf, for hot answers.
 *
 * json-c builds a tree of heap objects and then prints it; an answer that
 * is only ever printed (a run, a list page) skips the tree: the writer
 * appends tokens as they come and places the commas itself. Strings are
 * escaped as RFC 8259 requires; bytes are passed through otherwise (Kiln's
 * strings come from utf8mb4 columns or validated input).
 *
 *   jsonw_init                       write into a strbuf
 *   jsonw_object / jsonw_object_end  { ... }
 *   jsonw_array / jsonw_array_end    [ ... ]
 *   jsonw_key                        "name": (inside an object)
 *   jsonw_string / jsonw_int / jsonw_bool / jsonw_null / jsonw_raw
 *   jsonw_kv_*                       a key and its value in one call
 */
#ifndef KILN_JSONW_H
#define KILN_JSONW_H

#include <stddef.h>
#include <stdint.h>

struct strbuf;

#define JSONW_MAX_DEPTH 32

struct jsonw {
	struct strbuf *out;
	unsigned depth;
	int after_key;                    /* a value goes straight after "key": */
	unsigned char has_items[JSONW_MAX_DEPTH]; /* a comma before the next item */
};

void jsonw_init(struct jsonw *w, struct strbuf *out);
void jsonw_object(struct jsonw *w);
void jsonw_object_end(struct jsonw *w);
void jsonw_array(struct jsonw *w);
void jsonw_array_end(struct jsonw *w);
void jsonw_key(struct jsonw *w, const char *key);
/* NULL writes null. */
void jsonw_string(struct jsonw *w, const char *s);
void jsonw_string_len(struct jsonw *w, const char *s, size_t len);
void jsonw_int(struct jsonw *w, int64_t v);
void jsonw_bool(struct jsonw *w, int v);
void jsonw_null(struct jsonw *w);
/* A value that already is JSON text. */
void jsonw_raw(struct jsonw *w, const char *json, size_t len);

void jsonw_kv_string(struct jsonw *w, const char *key, const char *s);
void jsonw_kv_int(struct jsonw *w, const char *key, int64_t v);
void jsonw_kv_bool(struct jsonw *w, const char *key, int v);
void jsonw_kv_null(struct jsonw *w, const char *key);

#endif
