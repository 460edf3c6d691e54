/* events.c - the gapless per-run event log (see events.h). */
#include "events.h"

#include <string.h>

#include "db.h"
#include "strbuf.h"
#include "util.h"

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

/* A database that went away (a restart, a dropped connection) comes back
 * within seconds; an append waits this long for it, with a back-off from
 * RECONNECT_FIRST_MS doubling up to RECONNECT_MAX_MS between tries. */
#define RECONNECT_BUDGET_MS 15000
#define RECONNECT_FIRST_MS 100
#define RECONNECT_MAX_MS 1000
#define LOCK_RETRIES 3

int64_t event_append_with(struct db *db, int64_t run_id, const char *lease_owner,
			  int (*extra)(struct db *db, void *ctx), void *ctx,
			  const char *type, json_object *payload)
{
	struct db_result r;
	int64_t seq = 0, give_up_at = mono_ms() + RECONNECT_BUDGET_MS, delay = RECONNECT_FIRST_MS;
	int lock_tries = 0;

	for (;;) {
		db->errnum = 0; /* so that "retry" judges this try's error only */
		if (db_begin(db) < 0)
			goto retry;
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
		if (type) {
			seq = event_append_locked(db, run_id, type, payload);
			if (seq < 0)
				goto fail;
		}
		if (db_commit(db) == 0)
			return seq;
		/* A connection lost during COMMIT leaves no way to know whether
		 * it committed: doing it again could write it twice. */
		if (db_is_unavailable(db))
			return EVENT_UNCERTAIN;
fail:
		db_rollback(db);
retry:
		/* Everything before COMMIT is undone by the server when the
		 * connection drops, so those failures are safe to redo. */
		if (db_is_retryable(db) && ++lock_tries < LOCK_RETRIES)
			continue;
		if (!db_is_unavailable(db) || mono_ms() + delay > give_up_at)
			return -1;
		sleep_ms(delay);
		delay = delay * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : delay * 2;
	}
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
