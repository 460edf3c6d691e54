/*
 * test_router - the route table and its matcher: ids, "draft", the file
 * tail, 405 with Allow, and that every route is reached by its own paths.
 */
#include <string.h>

#include "api.h"
#include "harness.h"
#include "strbuf.h"
#include "util.h"

static const struct api_route *find(const char *method, const char *path, int64_t ids[4],
				    const char **rest, struct strbuf *allow)
{
	strbuf_reset(allow);
	memset(ids, 0, 4 * sizeof(*ids));
	*rest = NULL;
	return api_route_find(method, path, ids, rest, allow);
}

static void test_ids_and_tails(void)
{
	struct strbuf allow = STRBUF_INIT;
	const struct api_route *r;
	const char *rest;
	int64_t ids[4];

	r = find("GET", "/admin/apps/12/revisions/7", ids, &rest, &allow);
	CHECK(r && !strcmp(r->name, "revision_get"));
	CHECK(ids[0] == 12 && ids[1] == 7);
	r = find("GET", "/admin/apps/3/revisions/4/files/src/app.js", ids, &rest, &allow);
	CHECK(r && !strcmp(r->name, "revision_file"));
	CHECK_STR(rest, "src/app.js");
	CHECK(ids[0] == 3 && ids[1] == 4);
	r = find("GET", "/admin/apps/3/coding-agent/checkpoints/9/diff/draft", ids, &rest, &allow);
	CHECK(r && !strcmp(r->name, "checkpoint_diff"));
	CHECK(ids[0] == 3 && ids[1] == 9 && ids[2] == 0);
	r = find("GET", "/admin/apps/3/coding-agent/checkpoints/9/diff/8", ids, &rest, &allow);
	CHECK(r && ids[2] == 8);
	r = find("GET", "/admin/apps/999999999999999999", ids, &rest, &allow);
	CHECK(r && ids[0] == 999999999999999999LL);
	strbuf_release(&allow);
}

static void test_what_does_not_match(void)
{
	static const char *const paths[] = {
		"/admin/apps/0", "/admin/apps/012", "/admin/apps/-1", "/admin/apps/1x",
		"/admin/apps/1000000000000000000", "/admin/apps/", "/admin/apps//", "//admin/apps",
		"/admin/apps/1/revisions/1/files/", "/admin/apps/1/revisions/1/files",
		"/admin/apps/1/coding-agent/checkpoints/1/diff/drafts", "/admin", "/", "",
		"/admin/health/", "/admin/healthz", "/admin/apps/1/revisions/1/extra",
		"/admin/apps/draft",
	};
	struct strbuf allow = STRBUF_INIT;
	const char *rest;
	int64_t ids[4];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(paths); i++) {
		const struct api_route *r = find("GET", paths[i], ids, &rest, &allow);

		if (r || allow.len) {
			fprintf(stderr, "%s matched %s\n", paths[i], r ? r->name : allow.buf);
			harness_failed_checks++;
		}
	}
	strbuf_release(&allow);
}

static void test_wrong_method_lists_the_right_ones(void)
{
	struct strbuf allow = STRBUF_INIT;
	const char *rest;
	int64_t ids[4];

	CHECK(find("PUT", "/admin/apps", ids, &rest, &allow) == NULL);
	CHECK_STR(allow.buf, "GET, POST");
	CHECK(find("POST", "/admin/apps/5", ids, &rest, &allow) == NULL);
	CHECK_STR(allow.buf, "GET, PATCH, DELETE");
	CHECK(find("get", "/admin/apps", ids, &rest, &allow) == NULL); /* methods are exact */
	CHECK(find("GET", "/admin/apps/5/publish", ids, &rest, &allow) == NULL);
	CHECK_STR(allow.buf, "POST");
	strbuf_release(&allow);
}

/* A path for pattern: ids 11, 12, 13 in order, "draft" for {ref}, a file
 * path for {*}. */
static void path_for(const char *pattern, struct strbuf *out)
{
	const char *p = pattern;
	int n = 11;

	strbuf_reset(out);
	while (*p) {
		if (!strncmp(p, "{id}", 4)) {
			strbuf_addf(out, "%d", n++);
			p += 4;
		} else if (!strncmp(p, "{ref}", 5)) {
			strbuf_addstr(out, "draft");
			p += 5;
		} else if (!strncmp(p, "{*}", 3)) {
			strbuf_addstr(out, "css/site.css");
			p += 3;
		} else {
			strbuf_addch(out, *p++);
		}
	}
}

static void test_every_route_is_reached_by_its_own_path(void)
{
	struct strbuf allow = STRBUF_INIT, path = STRBUF_INIT;
	const char *rest;
	int64_t ids[4];
	size_t i, j;

	CHECK(api_nroutes > 20);
	for (i = 0; i < api_nroutes; i++) {
		const struct api_route *r;

		path_for(api_routes[i].pattern, &path);
		r = find(api_routes[i].method, path.buf, ids, &rest, &allow);
		if (r != &api_routes[i]) {
			fprintf(stderr, "%s %s reached %s\n", api_routes[i].method, path.buf,
				r ? r->name : "nothing");
			harness_failed_checks++;
		}
		CHECK(api_routes[i].handler != NULL);
		if (strstr(api_routes[i].pattern, "{id}"))
			CHECK(ids[0] == 11);
		/* names are unique: logs and tests tell routes apart by them */
		for (j = 0; j < i; j++)
			CHECK(strcmp(api_routes[i].name, api_routes[j].name) != 0);
		/* only health and the preview check go without a token */
		if (api_routes[i].public)
			CHECK(!strcmp(api_routes[i].name, "health") ||
			      !strcmp(api_routes[i].name, "preview_auth"));
	}
	strbuf_release(&allow);
	strbuf_release(&path);
}

int main(void)
{
	RUN(test_ids_and_tails);
	RUN(test_what_does_not_match);
	RUN(test_wrong_method_lists_the_right_ones);
	RUN(test_every_route_is_reached_by_its_own_path);
	return harness_done("router");
}
