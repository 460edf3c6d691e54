/*
 * api.h - what every route handler of kiln-api shares.
 *
 * struct services is per process (created after fork: its database handle is
 * never shared across processes); struct rctx is per request and carries all
 * request state. Handlers answer through the respond_* helpers and return;
 * they never exit.
 *
 *   respond_json / respond_empty / respond_error / respond_field_error
 *   respond_db_error        503 when MariaDB is unreachable, else 500
 *   request_json_body       parse + validate the JSON body (400/413/415)
 *   body_string / body_int / body_bool   typed fields, 422 naming the field
 *   page_params             limit + cursor of list routes
 *   respond_app_list        a whole paginated list route of one app
 *   respond_json_start      answer written with a jsonw (hot routes)
 *   respond_app_list_w      the same list route, rows written with a jsonw
 *   json_time               DATETIME(3) text -> RFC 3339 json string
 *   jsonw_kv_time / _id     the same two, as a member written with a jsonw
 *   api_dispatch            route one request (router.c)
 *   api_routes / api_route_find   the route table and its matcher
 */
#ifndef KILN_API_H
#define KILN_API_H

#include <stdint.h>

#include <json.h>

#include "ckpt_store.h"
#include "config.h"
#include "db.h"
#include "http.h"
#include "jsonw.h"

/* Tokens this process verified recently (auth.c): a hit within
 * auth_cache_ms skips the database, so a revocation or expiry takes effect
 * within that time. */
#define TOKEN_CACHE_SLOTS 64
struct token_cache_entry {
	char sha256[65];
	int64_t org_id, token_id;
	char org_slug[64];
	int64_t checked_ms; /* monotonic; 0 = empty */
};

struct services {
	struct config *cfg;
	struct db db;
	struct ckpt_store ckpts;
	unsigned char secret[32]; /* signs preview URLs */
	int db_ok;
	struct worker_slot *slot; /* this worker's scoreboard slot, or NULL */
	struct token_cache_entry tokens[TOKEN_CACHE_SLOTS];
};

struct rctx {
	struct services *svc;
	struct http_request *req;
	struct http_response *res;
	int64_t org_id;          /* from the token */
	int64_t token_id;
	char org_slug[64];
	int64_t id[4];           /* numeric route parameters, in order */
	const char *rest;        /* wildcard tail of the route (a file path) */
	const char *name;        /* the route's name, for logs */
};

#define FIELD_REQUIRED 1

void respond_json(struct rctx *c, int status, json_object *obj /* consumed */);
/* Sets the status and hands out a writer on the empty body: the caller
 * writes exactly one JSON value with it. */
void respond_json_start(struct rctx *c, int status, struct jsonw *w);
void respond_empty(struct rctx *c, int status);
void respond_error(struct rctx *c, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Like respond_error, adding extra members (consumed) to the error object. */
void respond_error_extra(struct rctx *c, int status, const char *code,
			 json_object *extra, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
void respond_field_error(struct rctx *c, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void respond_db_error(struct rctx *c);
void respond_not_found(struct rctx *c);

/* 0 and *out (caller puts it) on success; -1 after answering an error. An
 * empty body is {} when allow_empty. */
int request_json_body(struct rctx *c, int allow_empty, json_object **out);
int body_string(struct rctx *c, json_object *obj, const char *field, int flags,
		size_t minlen, size_t maxlen, const char **out);
int body_int(struct rctx *c, json_object *obj, const char *field, int flags,
	     int64_t min, int64_t max, int64_t *out);
int body_bool(struct rctx *c, json_object *obj, const char *field, int *out);
int page_params(struct rctx *c, int64_t *limit, int64_t *cursor);
json_object *page_json(json_object *items, int64_t limit, int64_t last_id);
/* A list route of one app: sql takes (app_id, cursor, limit) and selects
 * the id first; row_json turns one row into an item. Answers the page. */
typedef json_object *(*row_json_fn)(const struct db_result *r, size_t i);
void respond_app_list(struct rctx *c, const char *sql, row_json_fn row_json);
typedef void (*row_write_fn)(struct jsonw *w, const struct db_result *r, size_t i);
void respond_app_list_w(struct rctx *c, const char *sql, row_write_fn row_write);
json_object *json_time(const char *db_datetime);
json_object *json_id(const char *db_val);
void jsonw_kv_time(struct jsonw *w, const char *key, const char *db_datetime);
void jsonw_kv_id(struct jsonw *w, const char *key, const char *db_val);
const char *json_text(json_object *obj); /* compact serialisation */

void api_dispatch(struct rctx *c);

/*
 * The route table (router.c). Patterns are '/'-separated; "{id}" matches a
 * positive decimal id, "{ref}" an id or "draft" (0), a final "{*}" the
 * non-empty rest of the path.
 */
struct api_route {
	const char *method;
	const char *pattern;
	void (*handler)(struct rctx *c);
	int public; /* no token needed */
	const char *name;
};
extern const struct api_route api_routes[];
extern const size_t api_nroutes;
/* The route for method + path (ids and rest filled), or NULL; the methods
 * of routes whose path matched are appended to allow ("GET, POST"). */
const struct api_route *api_route_find(const char *method, const char *path, int64_t ids[4],
				       const char **rest, struct strbuf *allow);

/* api_revisions.c, shared with the checkpoint routes */
struct ckpt_row;
struct app_row;
void respond_file_from_checkpoint(struct rctx *c, const struct ckpt_row *ck, const char *path);
/* Lock fd, or -1 after answering 409 (a run is active / another writer)
 * or 500 (what a crash left could not be recovered: app_workspace_recover). */
int app_lock_for_write(struct rctx *c, const struct app_row *app);

#endif
