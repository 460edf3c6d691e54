/*
 * events.h - the typed, gapless event log of a run (agent_run_events).
 *
 * Sequence numbers are assigned under a lock on the run's row (SELECT ...
 * FOR UPDATE on agent_runs) as one more than the run's newest event, never
 * by AUTO_INCREMENT, so that events commit in seq order and a reader
 * resuming after N can never skip one that commits later.
 *
 *   event_append_locked  inside the caller's transaction, run row locked here
 *   event_append         its own transaction; optionally only while the
 *                        caller still holds the run's lease
 *   event_append_with    the same, with the caller's own writes in the
 *                        transaction (a terminal status and its event, a
 *                        tool result and its tool.completed)
 *   event_envelope       {type, run_id, app_id, seq, ts, payload} JSON text
 *   event_is_terminal
 */
#ifndef KILN_EVENTS_H
#define KILN_EVENTS_H

#include <stdint.h>

#include <json.h>

struct db;
struct strbuf;

#define EVENT_LEASE_LOST (-2)
/* The connection broke during COMMIT: the write may or may not be in.
 * The caller must not redo it; it ends its attempt and the run resumes from
 * what the database holds. */
#define EVENT_UNCERTAIN (-3)

/* Returns the new seq, or -1 on a database error. */
int64_t event_append_locked(struct db *db, int64_t run_id, const char *type,
			    json_object *payload);
/* With lease_owner set, appends only while that runner holds the run's
 * lease and the run is running: else EVENT_LEASE_LOST, nothing written. */
int64_t event_append(struct db *db, int64_t run_id, const char *lease_owner,
		     const char *type, json_object *payload);
/* The same, running extra(db, ctx) inside the transaction first (after the
 * lease check), so a state change and its event commit together. A failure
 * before COMMIT is redone: deadlocks a few times, a lost connection for up
 * to 15 s while the database comes back (the server undid the transaction).
 * A lost connection during COMMIT is EVENT_UNCERTAIN, never redone.
 * type NULL writes extra's rows alone (under the lease check) and gives 0. */
int64_t event_append_with(struct db *db, int64_t run_id, const char *lease_owner,
			  int (*extra)(struct db *db, void *ctx), void *ctx,
			  const char *type, json_object *payload);
void event_envelope(struct strbuf *out, const char *type, int64_t run_id,
		    int64_t app_id, int64_t seq, const char *db_created_at,
		    const char *payload_json);
int event_is_terminal(const char *type);

#endif
