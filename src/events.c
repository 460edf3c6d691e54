/* events.c - the gapless per-run event log (see events.h). */
#include "events.h"

#include <string.h>

#include "db.h"
#include "strbuf.h"

static const char *payload_text(json_object *payload)
{
	return payload ? json_object_to_json_string_ext(payload, JSON_C_TO_STRING_PLAIN |
							JSON_C_TO_STRING_NOSLASHESCAPE)
		       : "{}";
}

int64_t event_append_locked(struct db *db, int64_t run_id, const char *type,
			    json_object *payload)
{
	struct db_result r;
	int64_t seq;

	/* The run row's lock orders appenders; the next seq is read under it
	 * from the events themselves (the primary key makes that one probe),
	 * so an append is one write, not two. */
	if (db_query(db, &r, "SELECT id FROM agent_runs WHERE id = ? FOR UPDATE", "i", run_id) < 0)
		return -1;
	if (r.nrows != 1) {
		db_result_free(&r);
		return -1;
	}
	db_result_free(&r);
	if (db_query(db, &r, "SELECT COALESCE(MAX(seq), 0) FROM agent_run_events WHERE run_id = ?",
		     "i", run_id) < 0)
		return -1;
	seq = db_int(&r, 0, 0) + 1;
	db_result_free(&r);
	if (db_exec(db, "INSERT INTO agent_run_events (run_id, seq, type, payload) VALUES (?, ?, ?, ?)",
		    "iiss", run_id, seq, type, payload_text(payload)) < 0)
		return -1;
	return seq;
}

int64_t event_append_with(struct db *db, int64_t run_id, const char *lease_owner,
			  int (*extra)(struct db *db, void *ctx), void *ctx,
			  const char *type, json_object *payload)
{
	struct db_result r;
	int64_t seq = -1;
	int tries;

	for (tries = 0; tries < 3; tries++) {
		if (db_begin(db) < 0)
			return -1;
		if (lease_owner) {
			int ok;

			if (db_query(db, &r, "SELECT lease_owner = ? AND status = 'running' FROM agent_runs "
					     "WHERE id = ? FOR UPDATE", "si", lease_owner, run_id) < 0)
				goto fail;
			ok = r.nrows == 1 && db_int(&r, 0, 0) == 1;
			db_result_free(&r);
			if (!ok) {
				db_rollback(db);
				return EVENT_LEASE_LOST;
			}
		}
		if (extra && extra(db, ctx) < 0)
			goto fail;
		seq = event_append_locked(db, run_id, type, payload);
		if (seq < 0)
			goto fail;
		if (db_commit(db) < 0)
			goto fail_nolock;
		return seq;
fail:
		db_rollback(db);
fail_nolock:
		/* deadlocks and lock waits are worth another try; the rest not */
		if (!db_is_retryable(db))
			return -1;
	}
	return -1;
}

int64_t event_append(struct db *db, int64_t run_id, const char *lease_owner,
		     const char *type, json_object *payload)
{
	return event_append_with(db, run_id, lease_owner, NULL, NULL, type, payload);
}

void event_envelope(struct strbuf *out, const char *type, int64_t run_id, int64_t app_id,
		    int64_t seq, const char *t, const char *payload_json)
{
	/* type is one of our fixed names and t is a DATETIME(3): both need no
	 * escaping; the payload is JSON text we stored ourselves. */
	strbuf_addf(out, "{\"type\":\"%s\",\"run_id\":%lld,\"app_id\":%lld,\"seq\":%lld,"
			 "\"ts\":\"%.10sT%sZ\",\"payload\":%s}",
		    type, (long long)run_id, (long long)app_id, (long long)seq,
		    t ? t : "1970-01-01 00:00:00.000", t && strlen(t) > 11 ? t + 11 : "00:00:00.000",
		    payload_json && *payload_json ? payload_json : "{}");
}

int event_is_terminal(const char *type)
{
	return !strcmp(type, "run.completed") || !strcmp(type, "run.failed");
}
