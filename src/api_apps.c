/* api_apps.c - create, list, read, rename and delete apps. */
#include <string.h>

#include "api.h"
#include "apps.h"
#include "fileutil.h"
#include "handlers.h"
#include "log.h"
#include "services.h"
#include "strbuf.h"
#include "util.h"

#define APP_COLUMNS                                                                      \
	"a.id, a.org_id, a.slug, a.name, a.draft_revision_id, a.published_revision_id, " \
	"a.created_at, a.updated_at, "                                                   \
	"(SELECT r.id FROM agent_runs r WHERE r.active_app_id = a.id) "

int slug_valid(const char *s)
{
	size_t i, n = strlen(s);

	if (n < 1 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	return 1;
}

static void app_from_row(const struct db_result *r, size_t i, struct app_row *a)
{
	memset(a, 0, sizeof(*a));
	a->id = db_int(r, i, 0);
	a->org_id = db_int(r, i, 1);
	snprintf(a->slug, sizeof(a->slug), "%s", db_val(r, i, 2));
	snprintf(a->name, sizeof(a->name), "%s", db_val(r, i, 3));
	a->draft_revision_id = db_int(r, i, 4);
	a->published_revision_id = db_int(r, i, 5);
	snprintf(a->created_at, sizeof(a->created_at), "%s", db_val(r, i, 6));
	snprintf(a->updated_at, sizeof(a->updated_at), "%s", db_val(r, i, 7));
	a->active_run_id = db_int(r, i, 8);
}

int app_load(struct rctx *c, int64_t app_id, struct app_row *app)
{
	struct db_result r;

	if (db_query(&c->svc->db, &r, "SELECT " APP_COLUMNS "FROM apps a WHERE a.id = ? AND a.org_id = ?",
		     "ii", app_id, c->org_id) < 0) {
		respond_db_error(c);
		return -1;
	}
	if (r.nrows != 1) {
		db_result_free(&r);
		respond_not_found(c);
		return -1;
	}
	app_from_row(&r, 0, app);
	db_result_free(&r);
	return 0;
}

static json_object *id_or_null(int64_t id)
{
	return id > 0 ? json_object_new_int64(id) : NULL;
}

json_object *app_json(const struct rctx *c, const struct app_row *a)
{
	json_object *o = json_object_new_object();
	struct strbuf url = STRBUF_INIT;

	json_object_object_add(o, "id", json_object_new_int64(a->id));
	json_object_object_add(o, "slug", json_object_new_string(a->slug));
	json_object_object_add(o, "name", json_object_new_string(a->name));
	json_object_object_add(o, "created_at", json_time(a->created_at));
	json_object_object_add(o, "updated_at", json_time(a->updated_at));
	json_object_object_add(o, "draft_revision_id", id_or_null(a->draft_revision_id));
	json_object_object_add(o, "published_revision_id", id_or_null(a->published_revision_id));
	strbuf_addf(&url, "%s/%s/%s/", c->svc->cfg->publish_base_url, c->org_slug, a->slug);
	json_object_object_add(o, "publish_url", json_object_new_string(url.buf));
	json_object_object_add(o, "active_run_id", id_or_null(a->active_run_id));
	strbuf_release(&url);
	return o;
}

void h_apps_list(struct rctx *c)
{
	json_object *items;
	struct db_result r;
	int64_t limit, cursor, last = 0;
	size_t i;

	if (page_params(c, &limit, &cursor) < 0)
		return;
	if (db_query(&c->svc->db, &r,
		     "SELECT " APP_COLUMNS "FROM apps a WHERE a.org_id = ? AND a.id < ? ORDER BY a.id DESC LIMIT ?",
		     "iii", c->org_id, cursor, limit) < 0) {
		respond_db_error(c);
		return;
	}
	items = json_object_new_array();
	for (i = 0; i < r.nrows; i++) {
		struct app_row a;

		app_from_row(&r, i, &a);
		json_object_array_add(items, app_json(c, &a));
		last = a.id;
	}
	db_result_free(&r);
	respond_json(c, 200, page_json(items, limit, last));
}

void h_apps_create(struct rctx *c)
{
	json_object *body = NULL;
	const char *name, *slug;
	struct app_row app;
	struct strbuf ws = STRBUF_INIT;
	int64_t id;

	if (request_json_body(c, 0, &body) < 0)
		return;
	if (body_string(c, body, "name", FIELD_REQUIRED, 1, 200, &name) < 0 ||
	    body_string(c, body, "slug", FIELD_REQUIRED, 1, 63, &slug) < 0)
		goto out;
	if (!slug_valid(slug)) {
		respond_field_error(c, "slug", "slug must be 1-63 characters of a-z, 0-9 and '-', "
					       "not starting or ending with '-'");
		goto out;
	}
	if (db_exec(&c->svc->db, "INSERT INTO apps (org_id, slug, name) VALUES (?, ?, ?)", "iss",
		    c->org_id, slug, name) < 0) {
		if (db_is_duplicate(&c->svc->db))
			respond_error(c, 409, "conflict", "an app with slug '%s' already exists", slug);
		else
			respond_db_error(c);
		goto out;
	}
	id = (int64_t)c->svc->db.last_insert_id;
	app_workspace_path(c->svc->cfg, id, &ws);
	if (mkdir_p(ws.buf, 0755) < 0)
		log_warn("cannot create workspace %s", ws.buf);
	if (app_load(c, id, &app) == 0)
		respond_json(c, 201, app_json(c, &app));
out:
	strbuf_release(&ws);
	json_object_put(body);
}

void h_app_get(struct rctx *c)
{
	struct app_row app;

	if (app_load(c, c->id[0], &app) == 0)
		respond_json(c, 200, app_json(c, &app));
}

void h_app_update(struct rctx *c)
{
	json_object *body = NULL;
	const char *name;
	struct app_row app;

	if (app_load(c, c->id[0], &app) < 0)
		return;
	if (request_json_body(c, 0, &body) < 0)
		return;
	if (body_string(c, body, "name", FIELD_REQUIRED, 1, 200, &name) < 0)
		goto out;
	if (db_exec(&c->svc->db, "UPDATE apps SET name = ? WHERE id = ? AND org_id = ?", "sii",
		    name, app.id, c->org_id) < 0) {
		respond_db_error(c);
		goto out;
	}
	if (app_load(c, app.id, &app) == 0)
		respond_json(c, 200, app_json(c, &app));
out:
	json_object_put(body);
}

void h_app_delete(struct rctx *c)
{
	struct strbuf path = STRBUF_INIT;
	struct app_row app;

	if (app_load(c, c->id[0], &app) < 0)
		return;
	if (app.active_run_id) {
		json_object *extra = json_object_new_object();

		json_object_object_add(extra, "run_id", json_object_new_int64(app.active_run_id));
		respond_error_extra(c, 409, "run_active", extra,
				    "run %lld is active; cancel it first", (long long)app.active_run_id);
		return;
	}
	if (db_exec(&c->svc->db, "DELETE FROM apps WHERE id = ? AND org_id = ?", "ii", app.id,
		    c->org_id) < 0) {
		respond_db_error(c);
		return;
	}
	/* Rows are gone (cascade); files follow. Checkpoint archives stay for
	 * `kilnctl checkpoint gc`, which removes what no row references. */
	app_workspace_path(c->svc->cfg, app.id, &path);
	rm_rf(path.buf);
	state_path(c->svc->cfg, &path, "published/%s/%s", c->org_slug, app.slug);
	rm_rf(path.buf);
	respond_empty(c, 204);
	strbuf_release(&path);
}
