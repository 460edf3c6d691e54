/*
 * apps.h - apps of an organization, as rows and as JSON.
 *
 *   app_load         one app visible to an organization (404 otherwise)
 *   app_json         the API's app object
 *   slug_valid
 */
#ifndef KILN_APPS_H
#define KILN_APPS_H

#include <stdint.h>

#include <json.h>

struct rctx;

struct app_row {
	int64_t id, org_id, draft_revision_id, published_revision_id, active_run_id;
	char slug[64];
	char name[201 * 4];
	char created_at[32], updated_at[32];
};

/* 0 when found; -1 after answering 404 or a database error. */
int app_load(struct rctx *c, int64_t app_id, struct app_row *app);
json_object *app_json(const struct rctx *c, const struct app_row *app);
int slug_valid(const char *s);

#endif
