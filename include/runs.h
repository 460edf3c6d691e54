/*
 * runs.h - coding-agent runs as rows (agent_runs) and as the API's JSON.
 *
 *   RUN_COLUMNS / run_write_json   one run for the API
 *   run_finish               terminal status + terminal event in one
 *                            transaction (used by the API's cancel of a
 *                            queued run and by the runner)
 */
#ifndef KILN_RUNS_H
#define KILN_RUNS_H

#include <stdint.h>

#include <json.h>

struct db;
struct db_result;

#define RUN_COLUMNS                                                                          \
	"id, app_id, status, input, client_request_id, attempt, created_at, started_at, "    \
	"finished_at, error_code, error_message, prompt_tokens, completion_tokens, "          \
	"base_revision_id, revision_id, checkpoint_id, request_sha256, cancel_requested"
#define RUN_NCOLUMNS 18

struct jsonw;
/* One row of RUN_COLUMNS as the API's run object. */
void run_write_json(struct jsonw *w, const struct db_result *r, size_t i);

/* Sets the terminal status (completed/failed/cancelled), error and
 * finished_at, and appends the terminal event with payload, all in one
 * transaction; only while lease_owner holds the lease when given. Returns
 * the event's seq, -1 on a database error, EVENT_LEASE_LOST. */
int64_t run_finish(struct db *db, int64_t run_id, const char *lease_owner,
		   const char *status, const char *error_code, const char *error_message,
		   const char *event_type, json_object *payload);

#endif
