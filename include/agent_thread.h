/*
 * agent_thread.h - the durable conversation of an app (agent_messages):
 * every user message, assistant response and tool result is a row written
 * right after the step that produced it, so a follow-up run continues the
 * conversation and a resumed run picks up after its last completed step.
 *
 *   thread_add_user / thread_add_assistant / thread_add_tool
 *   thread_load_history   the messages sent to the model, within a byte
 *                         budget, always a thread a provider accepts
 *   thread_history_from_rows  the same from rows in hand (what the loader
 *                         does after reading; tested on its own)
 *   thread_run_state      where a run stands: steps done, pending calls
 */
#ifndef KILN_AGENT_THREAD_H
#define KILN_AGENT_THREAD_H

#include <stddef.h>
#include <stdint.h>

#include <json.h>

struct db;

int thread_add_user(struct db *db, int64_t app_id, int64_t run_id, const char *text);
int thread_add_assistant(struct db *db, int64_t app_id, int64_t run_id, int step,
			 const char *content, json_object *tool_calls /* array or NULL */);
int thread_add_tool(struct db *db, int64_t app_id, int64_t run_id, int step,
		    const char *tool_call_id, const char *content);
/* Appends OpenAI-format messages to the array msgs: at most budget_bytes
 * of JSON (see agent_thread.c for what goes first and the least that is
 * sent). 0, or -1 on a database error (msgs unchanged). */
int thread_load_history(struct db *db, int64_t app_id, int64_t budget_bytes, json_object *msgs);

/* One agent_messages row as the history is built from it. */
struct thread_row {
	const char *role;        /* "user", "assistant" or "tool" */
	const char *content;     /* NULL for none; else the text, or only its head */
	size_t content_len;      /* of the whole text */
	int content_whole;       /* content is all of it */
	const char *tool_calls;  /* JSON array; NULL when none or not loaded */
	size_t calls_len;        /* of the whole tool_calls text */
	const char *call_ids;    /* JSON arrays of the calls' ids and names, used */
	const char *call_names;  /* when tool_calls was not loaded */
	const char *tool_call_id;
};

/* rows oldest first; appends to msgs like thread_load_history. */
int thread_history_from_rows(const struct thread_row *rows, size_t n, int64_t budget_bytes,
			     json_object *msgs);

struct run_state {
	int has_user;         /* the run's user message is stored */
	int steps;            /* assistant messages stored for the run */
	int finished;         /* the last one had no tool calls */
	json_object *pending; /* tool calls of the last step without a result (array, owned) */
};

int thread_run_state(struct db *db, int64_t run_id, struct run_state *st);
void run_state_release(struct run_state *st);

#endif
