/*
 * fuzz_request_json.c - libFuzzer target: arbitrary bytes as the body of an
 * API request, through the checks every handler runs on it:
 * request_json_body (size, media type, UTF-8, JSON syntax, object shape),
 * then the typed field readers body_string / body_int / body_bool on the
 * fields the routes use.
 *
 * Input: byte 0 picks the request's shape (bit 0: empty body allowed,
 * bits 1-2: Content-Type, bit 3: body over the size cap); the rest is the
 * body. The answer must always be either an acceptance (a JSON object
 * handed back, no response written) or a 4xx whose body is the API's JSON
 * error shape {"error":{"code":"...","message":"..."}}; anything else aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "api.h"
#include "http.h"
#include "strbuf.h"

#define FLAG_ALLOW_EMPTY 0x01
#define FLAG_TOO_LARGE 0x08

static char *const content_types[] = {
	NULL,
	"CONTENT_TYPE=application/json",
	"CONTENT_TYPE=application/json; charset=utf-8",
	"CONTENT_TYPE=text/plain",
};

/* The error answer must be {"error":{"code":string,"message":string,...}}
 * with a 4xx status (an out-of-memory 503 is the one allowed exception). */
static void check_error_answer(const struct http_response *res)
{
	json_object *root, *err, *code, *msg;

	if (!(res->status >= 400 && res->status < 500) && res->status != 503)
		abort();
	if (!res->content_type || strcmp(res->content_type, "application/json"))
		abort();
	root = json_tokener_parse(res->body.buf);
	if (!root || !json_object_is_type(root, json_type_object))
		abort();
	if (!json_object_object_get_ex(root, "error", &err) ||
	    !json_object_is_type(err, json_type_object) ||
	    !json_object_object_get_ex(err, "code", &code) ||
	    !json_object_is_type(code, json_type_string) ||
	    !json_object_object_get_ex(err, "message", &msg) ||
	    !json_object_is_type(msg, json_type_string))
		abort();
	json_object_put(root);
}

/* Runs the typed readers the routes use on an accepted object. Each either
 * accepts or answers 422; after a 422 the next reader starts afresh. */
static void check_fields(struct rctx *c, json_object *obj)
{
	static const char *const strings[] = { "name", "slug", "input", "client_request_id",
					       "path", "mode" };
	static const char *const ints[] = { "revision_id", "expected_revision_id" };
	const char *s;
	int64_t n;
	int b;
	size_t i;

	for (i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
		s = NULL;
		if (body_string(c, obj, strings[i], i % 2 ? FIELD_REQUIRED : 0, 1, 200, &s) < 0) {
			if (c->res->status != 422)
				abort();
			check_error_answer(c->res);
			http_response_release(c->res);
			http_response_init(c->res);
		} else if (s && (strlen(s) < 1 || strlen(s) > 200)) {
			abort(); /* accepted outside its bounds, or with a NUL inside */
		}
	}
	for (i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		n = -7;
		if (body_int(c, obj, ints[i], 0, 1, INT32_MAX, &n) < 0) {
			if (c->res->status != 422)
				abort();
			check_error_answer(c->res);
			http_response_release(c->res);
			http_response_init(c->res);
		} else if (n != -7 && (n < 1 || n > INT32_MAX)) {
			abort();
		}
	}
	b = -1;
	if (body_bool(c, obj, "dry_run", &b) < 0) {
		if (c->res->status != 422)
			abort();
		check_error_answer(c->res);
	} else if (b != -1 && b != 0 && b != 1) {
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg;
	struct services svc;
	struct http_request req;
	struct http_response res;
	struct rctx c;
	char *envp[2];
	json_object *obj = NULL;
	unsigned flags;
	int rc;

	if (size < 1)
		return 0;
	flags = data[0];
	memset(&cfg, 0, sizeof(cfg));
	cfg.max_body_bytes = 8388608;
	memset(&svc, 0, sizeof(svc));
	svc.cfg = &cfg;
	memset(&req, 0, sizeof(req));
	envp[0] = content_types[(flags >> 1) & 3];
	envp[1] = NULL;
	req.envp = envp[0] ? envp : envp + 1;
	req.method = "POST";
	req.uri = "/admin/apps";
	req.query = "";
	strbuf_init(&req.path);
	strbuf_init(&req.body);
	strbuf_add(&req.body, data + 1, size - 1);
	req.body_too_large = !!(flags & FLAG_TOO_LARGE);
	http_response_init(&res);
	memset(&c, 0, sizeof(c));
	c.svc = &svc;
	c.req = &req;
	c.res = &res;
	c.name = "fuzz";

	rc = request_json_body(&c, flags & FLAG_ALLOW_EMPTY, &obj);
	if (rc == 0) {
		/* Accepted: an object, nothing answered yet, never past the cap. */
		if (!obj || !json_object_is_type(obj, json_type_object) || res.body.len ||
		    res.status != 200 || req.body_too_large)
			abort();
		check_fields(&c, obj);
		json_object_put(obj);
	} else {
		if (rc != -1 || obj)
			abort();
		check_error_answer(&res);
	}
	http_response_release(&res);
	strbuf_release(&req.body);
	strbuf_release(&req.path);
	return 0;
}
