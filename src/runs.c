/* runs.c - run rows and their JSON (see runs.h). */
#include "runs.h"

#include <string.h>

#include "api.h"
#include "db.h"
#include "events.h"
#include "strbuf.h"

json_object *run_json(const struct db_result *r, size_t i)
{
	json_object *o = json_object_new_object(), *usage, *err = NULL;
	struct strbuf url = STRBUF_INIT;
	int64_t id = db_int(r, i, 0), app = db_int(r, i, 1);
	int64_t pt = db_int(r, i, 11), ct = db_int(r, i, 12);

	json_object_object_add(o, "id", json_object_new_int64(id));
	json_object_object_add(o, "app_id", json_object_new_int64(app));
	json_object_object_add(o, "status", json_object_new_string(db_val(r, i, 2)));
	json_object_object_add(o, "input", json_object_new_string(db_val(r, i, 3)));
	json_object_object_add(o, "client_request_id",
			       db_val(r, i, 4) ? json_object_new_string(db_val(r, i, 4)) : NULL);
	json_object_object_add(o, "attempt", json_id(db_val(r, i, 5)));
	json_object_object_add(o, "created_at", json_time(db_val(r, i, 6)));
	json_object_object_add(o, "started_at", json_time(db_val(r, i, 7)));
	json_object_object_add(o, "finished_at", json_time(db_val(r, i, 8)));
	if (db_val(r, i, 9)) {
		err = json_object_new_object();
		json_object_object_add(err, "code", json_object_new_string(db_val(r, i, 9)));
		json_object_object_add(err, "message",
				       json_object_new_string(db_val(r, i, 10) ? db_val(r, i, 10) : ""));
	}
	json_object_object_add(o, "error", err);
	usage = json_object_new_object();
	json_object_object_add(usage, "prompt_tokens", json_object_new_int64(pt));
	json_object_object_add(usage, "completion_tokens", json_object_new_int64(ct));
	json_object_object_add(usage, "total_tokens", json_object_new_int64(pt + ct));
	json_object_object_add(o, "usage", usage);
	json_object_object_add(o, "base_revision_id", json_id(db_val(r, i, 13)));
	json_object_object_add(o, "revision_id", json_id(db_val(r, i, 14)));
	json_object_object_add(o, "checkpoint_id", json_id(db_val(r, i, 15)));
	json_object_object_add(o, "cancel_requested", json_object_new_boolean(db_int(r, i, 17) != 0));
	strbuf_addf(&url, "/admin/apps/%lld/coding-agent/runs/%lld/stream", (long long)app, (long long)id);
	json_object_object_add(o, "stream_url", json_object_new_string(url.buf));
	strbuf_reset(&url);
	strbuf_addf(&url, "/admin/apps/%lld/coding-agent/runs/%lld/events", (long long)app, (long long)id);
	json_object_object_add(o, "events_url", json_object_new_string(url.buf));
	strbuf_release(&url);
	return o;
}

struct finish_state {
	int64_t run_id;
	const char *status, *code, *message;
};

static int set_terminal_status(struct db *db, void *ctx)
{
	const struct finish_state *f = ctx;

	return db_exec(db, "UPDATE agent_runs SET status = ?, error_code = ?, error_message = ?, "
			   "finished_at = NOW(3), lease_owner = NULL, lease_expires_at = NULL WHERE id = ?",
		       "sssi", f->status, f->code, f->message, f->run_id) < 0 ? -1 : 0;
}

int64_t run_finish(struct db *db, int64_t run_id, const char *lease_owner, const char *status,
		   const char *error_code, const char *error_message, const char *event_type,
		   json_object *payload)
{
	struct finish_state f = { run_id, status, error_code, error_message };

	return event_append_with(db, run_id, lease_owner, set_terminal_status, &f, event_type, payload);
}
