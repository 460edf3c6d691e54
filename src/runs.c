/* runs.c - run rows and their JSON (see runs.h). */
#include "runs.h"

#include <string.h>

#include "api.h"
#include "db.h"
#include "events.h"
#include "strbuf.h"

void run_write_json(struct jsonw *w, const struct db_result *r, size_t i)
{
	struct strbuf url = STRBUF_INIT;
	const char *app = db_val(r, i, 1), *id = db_val(r, i, 0);
	int64_t pt = db_int(r, i, 11), ct = db_int(r, i, 12);

	jsonw_object(w);
	jsonw_kv_int(w, "id", db_int(r, i, 0));
	jsonw_kv_int(w, "app_id", db_int(r, i, 1));
	jsonw_kv_string(w, "status", db_val(r, i, 2));
	jsonw_kv_string(w, "input", db_val(r, i, 3));
	jsonw_kv_string(w, "client_request_id", db_val(r, i, 4));
	jsonw_kv_id(w, "attempt", db_val(r, i, 5));
	jsonw_kv_time(w, "created_at", db_val(r, i, 6));
	jsonw_kv_time(w, "started_at", db_val(r, i, 7));
	jsonw_kv_time(w, "finished_at", db_val(r, i, 8));
	jsonw_key(w, "error");
	if (db_val(r, i, 9)) {
		jsonw_object(w);
		jsonw_kv_string(w, "code", db_val(r, i, 9));
		jsonw_kv_string(w, "message", db_val(r, i, 10) ? db_val(r, i, 10) : "");
		jsonw_object_end(w);
	} else {
		jsonw_null(w);
	}
	jsonw_key(w, "usage");
	jsonw_object(w);
	jsonw_kv_int(w, "prompt_tokens", pt);
	jsonw_kv_int(w, "completion_tokens", ct);
	jsonw_kv_int(w, "total_tokens", pt + ct);
	jsonw_object_end(w);
	jsonw_kv_id(w, "base_revision_id", db_val(r, i, 13));
	jsonw_kv_id(w, "revision_id", db_val(r, i, 14));
	jsonw_kv_id(w, "checkpoint_id", db_val(r, i, 15));
	jsonw_kv_bool(w, "cancel_requested", db_int(r, i, 17) != 0);
	/* ids are the database's own decimal text */
	strbuf_addstr(&url, "/admin/apps/");
	strbuf_addstr(&url, app ? app : "0");
	strbuf_addstr(&url, "/coding-agent/runs/");
	strbuf_addstr(&url, id ? id : "0");
	strbuf_addstr(&url, "/stream");
	jsonw_kv_string(w, "stream_url", url.buf);
	strbuf_setlen(&url, url.len - strlen("/stream"));
	strbuf_addstr(&url, "/events");
	jsonw_kv_string(w, "events_url", url.buf);
	jsonw_object_end(w);
	strbuf_release(&url);
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
