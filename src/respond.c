/* respond.c - JSON answers, errors and request-body checks shared by all
 * route handlers (see api.h). */
#include "api.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "apps.h"
#include "log.h"
#include "util.h"

const char *json_text(json_object *obj)
{
	return json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
						   JSON_C_TO_STRING_NOSLASHESCAPE);
}

void respond_json(struct rctx *c, int status, json_object *obj)
{
	c->res->status = status;
	c->res->content_type = "application/json";
	strbuf_reset(&c->res->body);
	strbuf_addstr(&c->res->body, json_text(obj));
	strbuf_addch(&c->res->body, '\n');
	json_object_put(obj);
}

void respond_json_start(struct rctx *c, int status, struct jsonw *w)
{
	c->res->status = status;
	c->res->content_type = "application/json";
	strbuf_reset(&c->res->body);
	jsonw_init(w, &c->res->body);
}

void respond_empty(struct rctx *c, int status)
{
	c->res->status = status;
	strbuf_reset(&c->res->body);
}

static __attribute__((format(printf, 5, 0))) void
respond_error_v(struct rctx *c, int status, const char *code, json_object *extra,
		const char *fmt, va_list ap)
{
	struct strbuf msg = STRBUF_INIT;
	json_object *err = json_object_new_object(), *root = json_object_new_object();

	strbuf_vaddf(&msg, fmt, ap);
	json_object_object_add(err, "code", json_object_new_string(code));
	json_object_object_add(err, "message", json_object_new_string_len(msg.buf, (int)msg.len));
	if (extra) {
		json_object_object_foreach(extra, k, v)
			json_object_object_add(err, k, json_object_get(v));
		json_object_put(extra);
	}
	json_object_object_add(root, "error", err);
	respond_json(c, status, root);
	strbuf_release(&msg);
}

void respond_error(struct rctx *c, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	respond_error_v(c, status, code, NULL, fmt, ap);
	va_end(ap);
}

void respond_error_extra(struct rctx *c, int status, const char *code,
			 json_object *extra, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	respond_error_v(c, status, code, extra, fmt, ap);
	va_end(ap);
}

void respond_field_error(struct rctx *c, const char *field, const char *fmt, ...)
{
	json_object *extra = json_object_new_object();
	va_list ap;

	json_object_object_add(extra, "field", json_object_new_string(field));
	va_start(ap, fmt);
	respond_error_v(c, 422, "invalid_field", extra, fmt, ap);
	va_end(ap);
}

void respond_db_error(struct rctx *c)
{
	if (db_is_unavailable(&c->svc->db)) {
		respond_error(c, 503, "database_unavailable", "the database is unreachable; try again shortly");
		return;
	}
	/* The database message may quote data; it goes to the log only. */
	log_error("database error in %s: %u %s", c->name ? c->name : "?",
		  c->svc->db.errnum, c->svc->db.errmsg);
	respond_error(c, 500, "internal", "internal database error");
}

void respond_not_found(struct rctx *c)
{
	respond_error(c, 404, "not_found", "no such resource");
}

/* JSON's own whitespace; strchr() would also match the terminating NUL. */
static int json_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* 1-based line and column of byte offset off in s. */
static void line_col(const char *s, size_t off, size_t *line, size_t *col)
{
	size_t i;

	*line = 1;
	*col = 1;
	for (i = 0; i < off && s[i]; i++) {
		if (s[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

int request_json_body(struct rctx *c, int allow_empty, json_object **out)
{
	struct http_request *req = c->req;
	const char *ct = http_param(req, "CONTENT_TYPE");
	struct json_tokener *tok;
	json_object *obj;
	enum json_tokener_error jerr;
	size_t i, end;

	*out = NULL;
	if (req->body_too_large) {
		respond_error(c, 413, "body_too_large", "request body exceeds %lld bytes",
			      (long long)c->svc->cfg->max_body_bytes);
		return -1;
	}
	for (i = 0; i < req->body.len && json_space(req->body.buf[i]); i++)
		;
	if (i == req->body.len) {
		if (allow_empty) {
			*out = json_object_new_object();
			return 0;
		}
		respond_error(c, 400, "malformed_json", "a JSON object body is required");
		return -1;
	}
	if (ct && *ct && strncasecmp(ct, "application/json", 16) != 0) {
		respond_error(c, 415, "unsupported_media_type",
			      "the body must be application/json");
		return -1;
	}
	if (!utf8_valid(req->body.buf, req->body.len)) {
		respond_error(c, 400, "invalid_utf8", "the body is not valid UTF-8");
		return -1;
	}
	/* Depth 64 bounds the parser's recursion on hostile nesting. */
	tok = json_tokener_new_ex(64);
	if (!tok) {
		respond_error(c, 503, "unavailable", "out of memory");
		return -1;
	}
	/* RFC 8259 only: no trailing commas, no raw control characters */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, req->body.buf, (int)req->body.len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (jerr == json_tokener_continue) {
		/* A number that ends the body ("5") is complete only once the
		 * parser sees the text end: hand it the terminating NUL. */
		obj = json_tokener_parse_ex(tok, "", 1);
		if (json_tokener_get_error(tok) == json_tokener_success) {
			jerr = json_tokener_success;
			end = req->body.len;
		}
	}
	if (jerr == json_tokener_continue) {
		size_t line, col;

		line_col(req->body.buf, req->body.len, &line, &col);
		respond_error(c, 400, "malformed_json",
			      "unexpected end of JSON at line %zu, column %zu", line, col);
		goto fail;
	}
	if (jerr != json_tokener_success) {
		size_t off = json_tokener_get_parse_end(tok), line, col;

		line_col(req->body.buf, off, &line, &col);
		respond_error(c, 400, "malformed_json", "%s at line %zu, column %zu",
			      json_tokener_error_desc(jerr), line, col);
		goto fail;
	}
	for (i = end; i < req->body.len; i++) {
		if (!json_space(req->body.buf[i])) {
			size_t line, col;

			line_col(req->body.buf, i, &line, &col);
			respond_error(c, 400, "malformed_json",
				      "trailing data after the JSON value at line %zu, column %zu",
				      line, col);
			json_object_put(obj);
			goto fail;
		}
	}
	json_tokener_free(tok);
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		respond_error(c, 422, "invalid_body", "the body must be a JSON object");
		return -1;
	}
	*out = obj;
	return 0;
fail:
	json_tokener_free(tok);
	return -1;
}

static int missing(struct rctx *c, const char *field)
{
	json_object *extra = json_object_new_object();

	json_object_object_add(extra, "field", json_object_new_string(field));
	respond_error_extra(c, 422, "missing_field", extra, "field '%s' is required", field);
	return -1;
}

int body_string(struct rctx *c, json_object *obj, const char *field, int flags,
		size_t minlen, size_t maxlen, const char **out)
{
	json_object *v;
	size_t len;

	if (!json_object_object_get_ex(obj, field, &v) || json_object_is_type(v, json_type_null)) {
		if (flags & FIELD_REQUIRED)
			return missing(c, field);
		*out = NULL;
		return 0;
	}
	if (!json_object_is_type(v, json_type_string)) {
		respond_field_error(c, field, "field '%s' must be a string", field);
		return -1;
	}
	len = (size_t)json_object_get_string_len(v);
	if (len < minlen || len > maxlen) {
		respond_field_error(c, field, "field '%s' must be %zu to %zu bytes long",
				    field, minlen, maxlen);
		return -1;
	}
	if (memchr(json_object_get_string(v), '\0', len)) {
		respond_field_error(c, field, "field '%s' must not contain NUL", field);
		return -1;
	}
	*out = json_object_get_string(v);
	return 0;
}

int body_int(struct rctx *c, json_object *obj, const char *field, int flags,
	     int64_t min, int64_t max, int64_t *out)
{
	json_object *v;
	int64_t n;

	if (!json_object_object_get_ex(obj, field, &v) || json_object_is_type(v, json_type_null)) {
		if (flags & FIELD_REQUIRED)
			return missing(c, field);
		return 0; /* *out keeps the caller's default */
	}
	if (!json_object_is_type(v, json_type_int)) {
		respond_field_error(c, field, "field '%s' must be an integer", field);
		return -1;
	}
	/* json-c saturates what int64 cannot hold: an extreme is an overflow */
	errno = 0;
	n = json_object_get_int64(v);
	if (errno || n == INT64_MAX || n == INT64_MIN || n < min || n > max) {
		respond_field_error(c, field, "field '%s' must be from %lld to %lld", field,
				    (long long)(min == INT64_MIN ? min + 1 : min),
				    (long long)(max == INT64_MAX ? max - 1 : max));
		return -1;
	}
	*out = n;
	return 0;
}

int body_bool(struct rctx *c, json_object *obj, const char *field, int *out)
{
	json_object *v;

	if (!json_object_object_get_ex(obj, field, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_boolean)) {
		respond_field_error(c, field, "field '%s' must be true or false", field);
		return -1;
	}
	*out = json_object_get_boolean(v);
	return 0;
}

int page_params(struct rctx *c, int64_t *limit, int64_t *cursor)
{
	struct strbuf v = STRBUF_INIT;
	int ret = 0;

	*limit = 20;
	*cursor = INT64_MAX;
	if (http_query_param(c->req, "limit", &v) &&
	    parse_int64(v.buf, 1, 100, limit) < 0) {
		respond_field_error(c, "limit", "limit must be an integer from 1 to 100");
		ret = -1;
	} else if (http_query_param(c->req, "cursor", &v) && v.len &&
		   parse_int64(v.buf, 1, INT64_MAX, cursor) < 0) {
		respond_field_error(c, "cursor", "cursor is not one this API gave out");
		ret = -1;
	}
	strbuf_release(&v);
	return ret;
}

/* The page object of a list: items, then next_cursor when the page is full. */
static void page_write(struct jsonw *w, const struct db_result *r, int64_t limit,
		       void (*item)(struct jsonw *w, const struct db_result *r, size_t i, void *arg),
		       void *arg)
{
	size_t i;

	jsonw_object(w);
	jsonw_key(w, "items");
	jsonw_array(w);
	for (i = 0; i < r->nrows; i++)
		item(w, r, i, arg);
	jsonw_array_end(w);
	jsonw_key(w, "next_cursor");
	if ((int64_t)r->nrows == limit && db_int(r, r->nrows - 1, 0) > 0)
		jsonw_string(w, db_val(r, r->nrows - 1, 0));
	else
		jsonw_null(w);
	jsonw_object_end(w);
}

json_object *page_json(json_object *items, int64_t limit, int64_t last_id)
{
	json_object *page = json_object_new_object();
	size_t n = json_object_array_length(items);

	json_object_object_add(page, "items", items);
	if ((int64_t)n == limit && last_id > 0) {
		char buf[24];

		buf[fmt_int64(buf, last_id)] = '\0';
		json_object_object_add(page, "next_cursor", json_object_new_string(buf));
	} else {
		json_object_object_add(page, "next_cursor", NULL);
	}
	return page;
}

static void item_from_json(struct jsonw *w, const struct db_result *r, size_t i, void *arg)
{
	row_json_fn row_json = *(row_json_fn *)arg;
	json_object *obj = row_json(r, i);
	const char *text = json_text(obj);

	jsonw_raw(w, text, strlen(text));
	json_object_put(obj);
}

static void item_written(struct jsonw *w, const struct db_result *r, size_t i, void *arg)
{
	(*(row_write_fn *)arg)(w, r, i);
}

static void app_list(struct rctx *c, const char *sql,
		     void (*item)(struct jsonw *w, const struct db_result *r, size_t i, void *arg),
		     void *arg)
{
	struct app_row app;
	struct db_result r;
	struct jsonw w;
	int64_t limit, cursor;

	if (app_load(c, c->id[0], &app) < 0 || page_params(c, &limit, &cursor) < 0)
		return;
	if (db_query(&c->svc->db, &r, sql, "iii", app.id, cursor, limit) < 0) {
		respond_db_error(c);
		return;
	}
	respond_json_start(c, 200, &w);
	page_write(&w, &r, limit, item, arg);
	strbuf_addch(&c->res->body, '\n');
	db_result_free(&r);
}

void respond_app_list(struct rctx *c, const char *sql, row_json_fn row_json)
{
	app_list(c, sql, item_from_json, &row_json);
}

void respond_app_list_w(struct rctx *c, const char *sql, row_write_fn row_write)
{
	app_list(c, sql, item_written, &row_write);
}

/* "YYYY-MM-DD HH:MM:SS.mmm" (UTC session) -> RFC 3339 in buf; 0 if not a time. */
static size_t rfc3339(const char *v, char buf[40])
{
	size_t len = v ? strlen(v) : 0;

	if (len < 19 || len > 30)
		return 0;
	memcpy(buf, v, 10);
	buf[10] = 'T';
	memcpy(buf + 11, v + 11, len - 11);
	buf[len] = 'Z';
	buf[len + 1] = '\0';
	return len + 1;
}

json_object *json_time(const char *v)
{
	char buf[40];

	return rfc3339(v, buf) ? json_object_new_string(buf) : NULL;
}

void jsonw_kv_time(struct jsonw *w, const char *key, const char *v)
{
	char buf[40];
	size_t n = rfc3339(v, buf);

	jsonw_key(w, key);
	if (n)
		jsonw_string_len(w, buf, n);
	else
		jsonw_null(w);
}

void jsonw_kv_id(struct jsonw *w, const char *key, const char *v)
{
	int64_t n;

	jsonw_key(w, key);
	if (!v || parse_int64(v, 0, INT64_MAX, &n) < 0)
		jsonw_null(w);
	else
		jsonw_int(w, n);
}

json_object *json_id(const char *v)
{
	int64_t n;

	if (!v || parse_int64(v, 0, INT64_MAX, &n) < 0)
		return NULL;
	return json_object_new_int64(n);
}
