/* router.c - the route table of kiln-api and its matcher. */
#include <string.h>

#include "api.h"
#include "auth.h"
#include "handlers.h"
#include "util.h"

/*
 * Patterns are '/'-separated. "{id}" matches a positive decimal id (stored
 * in c->id[] in order), "{ref}" an id or the word "draft" (stored as 0), and
 * a final "{*}" the non-empty rest of the path (c->rest).
 */
#define AGENT "/admin/apps/{id}/coding-agent"
const struct api_route api_routes[] = {
	{ "GET", "/admin/health", h_health, 1, "health" },
	{ "GET", "/admin/internal/preview-auth", h_preview_auth, 1, "preview_auth" },
	{ "GET", "/admin/apps", h_apps_list, 0, "apps_list" },
	{ "POST", "/admin/apps", h_apps_create, 0, "apps_create" },
	{ "GET", "/admin/apps/{id}", h_app_get, 0, "app_get" },
	{ "PATCH", "/admin/apps/{id}", h_app_update, 0, "app_update" },
	{ "DELETE", "/admin/apps/{id}", h_app_delete, 0, "app_delete" },
	{ "GET", "/admin/apps/{id}/revisions", h_revisions_list, 0, "revisions_list" },
	{ "POST", "/admin/apps/{id}/revisions", h_revisions_create, 0, "revisions_create" },
	{ "GET", "/admin/apps/{id}/revisions/{id}", h_revision_get, 0, "revision_get" },
	{ "GET", "/admin/apps/{id}/revisions/{id}/files/{*}", h_revision_file, 0, "revision_file" },
	{ "POST", "/admin/apps/{id}/publish", h_publish, 0, "publish" },
	{ "GET", "/admin/apps/{id}/publishes", h_publishes_list, 0, "publishes_list" },
	{ "GET", "/admin/apps/{id}/preview", h_preview_url, 0, "preview_url" },
	{ "GET", AGENT "/runs", h_runs_list, 0, "runs_list" },
	{ "POST", AGENT "/runs", h_runs_create, 0, "runs_create" },
	{ "GET", AGENT "/runs/{id}", h_run_get, 0, "run_get" },
	{ "POST", AGENT "/runs/{id}/cancel", h_run_cancel, 0, "run_cancel" },
	{ "GET", AGENT "/runs/{id}/events", h_run_events, 0, "run_events" },
	{ "GET", AGENT "/checkpoints", h_checkpoints_list, 0, "checkpoints_list" },
	{ "GET", AGENT "/checkpoints/{id}", h_checkpoint_get, 0, "checkpoint_get" },
	{ "GET", AGENT "/checkpoints/{id}/files/{*}", h_checkpoint_file, 0, "checkpoint_file" },
	{ "POST", AGENT "/checkpoints/{id}/restore", h_checkpoint_restore, 0, "checkpoint_restore" },
	{ "POST", AGENT "/checkpoints/{id}/revert-file", h_checkpoint_revert_file, 0, "checkpoint_revert_file" },
	{ "GET", AGENT "/checkpoints/{id}/diff/{ref}", h_checkpoint_diff, 0, "checkpoint_diff" },
};
const size_t api_nroutes = ARRAY_SIZE(api_routes);

static int parse_id(const char *s, size_t len, int64_t *out)
{
	int64_t v = 0;
	size_t i;

	if (len == 0 || len > 18 || s[0] == '0')
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

/* Length of the segment at s: up to the next '/' or the end. */
static size_t seg_len(const char *s)
{
	size_t n = 0;

	while (s[n] && s[n] != '/')
		n++;
	return n;
}

/* 1 when path matches pattern; fills ids and rest. Walks both strings once,
 * byte by byte: every request tries every route until one matches. */
static int route_match(const char *pattern, const char *path, int64_t *ids, const char **rest)
{
	const char *p = pattern, *s = path;
	size_t nid = 0;

	while (*p && *s) {
		size_t plen, slen;

		if (*p != '/' || *s != '/')
			return 0;
		p++;
		s++;
		if (p[0] == '{' && p[1] == '*' && p[2] == '}' && !p[3]) {
			if (!*s)
				return 0;
			*rest = s;
			return 1;
		}
		plen = seg_len(p);
		slen = seg_len(s);
		if (plen == 4 && !memcmp(p, "{id}", 4)) {
			if (nid >= 4 || parse_id(s, slen, &ids[nid]) < 0)
				return 0;
			nid++;
		} else if (plen == 5 && !memcmp(p, "{ref}", 5)) {
			if (nid >= 4)
				return 0;
			if (slen == 5 && !memcmp(s, "draft", 5))
				ids[nid] = 0;
			else if (parse_id(s, slen, &ids[nid]) < 0)
				return 0;
			nid++;
		} else if (plen != slen || memcmp(p, s, plen)) {
			return 0;
		}
		p += plen;
		s += slen;
	}
	return !*p && !*s;
}

const struct api_route *api_route_find(const char *method, const char *path, int64_t ids[4],
				       const char **rest, struct strbuf *allow)
{
	size_t i;

	for (i = 0; i < api_nroutes; i++) {
		int64_t found[4] = { 0 };
		const char *tail = NULL;

		if (!route_match(api_routes[i].pattern, path, found, &tail))
			continue;
		if (strcmp(api_routes[i].method, method) != 0) {
			strbuf_addf(allow, "%s%s", allow->len ? ", " : "", api_routes[i].method);
			continue;
		}
		memcpy(ids, found, sizeof(found));
		*rest = tail;
		return &api_routes[i];
	}
	return NULL;
}

void api_dispatch(struct rctx *c)
{
	struct strbuf allow = STRBUF_INIT;
	const struct api_route *hit;

	if (c->req->path_invalid) {
		respond_error(c, 400, "invalid_path", "the request path is not valid");
		goto out;
	}
	hit = api_route_find(c->req->method, c->req->path.buf, c->id, &c->rest, &allow);
	if (!hit) {
		if (allow.len) {
			http_response_header(c->res, "Allow", allow.buf);
			respond_error(c, 405, "method_not_allowed", "%s is not allowed here; use %s",
				      c->req->method, allow.buf);
		} else {
			respond_error(c, 404, "not_found", "no such route");
		}
		goto out;
	}
	c->name = hit->name;
	if (!hit->public && auth_check(c) < 0)
		goto out;
	hit->handler(c);
out:
	strbuf_release(&allow);
}
