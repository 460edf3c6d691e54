/* api_health.c - GET /admin/health: liveness, database and sandbox. */
#include "api.h"
#include "handlers.h"
#include "sandbox.h"
#include "strbuf.h"

/* bwrap is probed once per process: spawning it on every health check
 * would make the check itself a load. */
static int sandbox_state = -2;
static char sandbox_reason[256];

void h_health(struct rctx *c)
{
	json_object *o = json_object_new_object();
	struct db_result r;
	int db_ok;

	db_ok = (c->svc->db.conn || db_ping(&c->svc->db) == 0) &&
		db_query(&c->svc->db, &r, "SELECT 1", "") == 0;
	if (db_ok)
		db_result_free(&r);
	if (sandbox_state == -2) {
		struct strbuf why = STRBUF_INIT;
		struct sandbox_config sc;

		/* as run_command starts it: the configured user and limits */
		sandbox_config_from_config(c->svc->cfg, &sc);
		sandbox_state = sandbox_probe(&sc, &why);
		snprintf(sandbox_reason, sizeof(sandbox_reason), "%s", why.buf);
		strbuf_release(&why);
	}
	json_object_object_add(o, "status", json_object_new_string(db_ok ? "ok" : "degraded"));
	json_object_object_add(o, "database", json_object_new_string(db_ok ? "ok" : "unreachable"));
	json_object_object_add(o, "sandbox", json_object_new_string(sandbox_state == 0 ? "ok" : sandbox_reason));
	respond_json(c, db_ok ? 200 : 503, o);
}
