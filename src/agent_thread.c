/* agent_thread.c - the durable per-app conversation (see agent_thread.h). */
#include "agent_thread.h"

#include <string.h>

#include "db.h"
#include "strbuf.h"

int thread_add_user(struct db *db, int64_t app_id, int64_t run_id, const char *text)
{
	return db_exec(db, "INSERT INTO agent_messages (app_id, run_id, step, role, content) "
			   "VALUES (?, ?, 0, 'user', ?)", "iis", app_id, run_id, text) < 0 ? -1 : 0;
}

int thread_add_assistant(struct db *db, int64_t app_id, int64_t run_id, int step,
			 const char *content, json_object *tool_calls)
{
	const char *tc = tool_calls && json_object_array_length(tool_calls)
				 ? json_object_to_json_string_ext(tool_calls, JSON_C_TO_STRING_PLAIN)
				 : NULL;

	return db_exec(db, "INSERT INTO agent_messages (app_id, run_id, step, role, content, tool_calls) "
			   "VALUES (?, ?, ?, 'assistant', ?, ?)",
		       "iiiss", app_id, run_id, (int64_t)step, content, tc) < 0 ? -1 : 0;
}

int thread_add_tool(struct db *db, int64_t app_id, int64_t run_id, int step,
		    const char *tool_call_id, const char *content)
{
	return db_exec(db, "INSERT INTO agent_messages (app_id, run_id, step, role, content, tool_call_id) "
			   "VALUES (?, ?, ?, 'tool', ?, ?)",
		       "iiiss", app_id, run_id, (int64_t)step, content, tool_call_id) < 0 ? -1 : 0;
}

static json_object *message_json(const struct db_result *r, size_t i)
{
	json_object *m = json_object_new_object();
	const char *role = db_val(r, i, 0), *content = db_val(r, i, 1);
	const char *calls = db_val(r, i, 2), *call_id = db_val(r, i, 3);

	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", content ? json_object_new_string(content) : NULL);
	if (calls) {
		json_object *arr = json_tokener_parse(calls);

		if (arr)
			json_object_object_add(m, "tool_calls", arr);
	}
	if (call_id)
		json_object_object_add(m, "tool_call_id", json_object_new_string(call_id));
	return m;
}

/* Answers the calls still open with a "not run" result. A run cancelled
 * (or failed, or given up) between the tool calls of one step leaves the
 * rest unanswered, and providers refuse every later request of a thread
 * with an unanswered call: the app's conversation would be stuck for good. */
static void close_open_calls(json_object *msgs, json_object **open)
{
	size_t k;

	for (k = 0; *open && k < json_object_array_length(*open); k++) {
		json_object *m = json_object_new_object();

		json_object_object_add(m, "role", json_object_new_string("tool"));
		json_object_object_add(m, "content",
				       json_object_new_string("{\"error\":{\"code\":\"not_run\","
							      "\"message\":\"the run ended before this call ran\"}}"));
		json_object_object_add(m, "tool_call_id", json_object_get(json_object_array_get_idx(*open, k)));
		json_object_array_add(msgs, m);
	}
	json_object_put(*open);
	*open = NULL;
}

/* Takes the answered call id out of the open ones. */
static void answer_call(json_object *open, const char *call_id)
{
	size_t k;

	for (k = 0; open && call_id && k < json_object_array_length(open); k++)
		if (!strcmp(json_object_get_string(json_object_array_get_idx(open, k)), call_id)) {
			json_object_array_del_idx(open, k, 1);
			return;
		}
}

int thread_load_history(struct db *db, int64_t app_id, int64_t budget, json_object *msgs)
{
	struct db_result r;
	json_object *open = NULL;
	size_t i, start;
	int64_t used = 0;

	/* Newest first, so the budget keeps the recent end of the thread. */
	if (db_query(db, &r, "SELECT role, content, tool_calls, tool_call_id FROM agent_messages "
			     "WHERE app_id = ? ORDER BY id DESC LIMIT 2000", "i", app_id) < 0)
		return -1;
	start = r.nrows;
	for (i = 0; i < r.nrows; i++) {
		used += (int64_t)db_len(&r, i, 1) + (int64_t)db_len(&r, i, 2) + 64;
		/* Cut only in front of a user message: a tool result never
		 * loses the assistant message that asked for it. */
		if (!strcmp(db_val(&r, i, 0), "user")) {
			start = i + 1;
			if (used > budget)
				break;
		}
	}
	for (i = start; i-- > 0;) {
		json_object *m = message_json(&r, i), *calls;
		size_t k;

		if (!strcmp(db_val(&r, i, 0), "tool")) {
			answer_call(open, db_val(&r, i, 3));
			json_object_array_add(msgs, m);
			continue;
		}
		close_open_calls(msgs, &open);
		json_object_array_add(msgs, m);
		if (json_object_object_get_ex(m, "tool_calls", &calls) &&
		    json_object_is_type(calls, json_type_array)) {
			open = json_object_new_array();
			for (k = 0; k < json_object_array_length(calls); k++) {
				json_object *id;

				if (json_object_object_get_ex(json_object_array_get_idx(calls, k), "id", &id))
					json_object_array_add(open, json_object_get(id));
			}
		}
	}
	close_open_calls(msgs, &open);
	db_result_free(&r);
	return 0;
}

int thread_run_state(struct db *db, int64_t run_id, struct run_state *st)
{
	struct db_result r;
	json_object *last_calls = NULL;
	size_t i;

	memset(st, 0, sizeof(*st));
	if (db_query(db, &r, "SELECT role, tool_calls, tool_call_id FROM agent_messages "
			     "WHERE run_id = ? ORDER BY id", "i", run_id) < 0)
		return -1;
	for (i = 0; i < r.nrows; i++) {
		const char *role = db_val(&r, i, 0);

		if (!strcmp(role, "user")) {
			st->has_user = 1;
		} else if (!strcmp(role, "assistant")) {
			st->steps++;
			json_object_put(last_calls);
			last_calls = db_val(&r, i, 1) ? json_tokener_parse(db_val(&r, i, 1)) : NULL;
			st->finished = !last_calls || !json_object_array_length(last_calls);
			json_object_put(st->pending);
			st->pending = last_calls ? json_object_get(last_calls) : NULL;
		} else if (st->pending) {
			/* a stored result: that call is no longer pending */
			json_object *keep = json_object_new_array();
			size_t k;

			for (k = 0; k < json_object_array_length(st->pending); k++) {
				json_object *c = json_object_array_get_idx(st->pending, k), *id;

				if (json_object_object_get_ex(c, "id", &id) && db_val(&r, i, 2) &&
				    !strcmp(json_object_get_string(id), db_val(&r, i, 2)))
					continue;
				json_object_array_add(keep, json_object_get(c));
			}
			json_object_put(st->pending);
			st->pending = keep;
		}
	}
	json_object_put(last_calls);
	if (st->pending && !json_object_array_length(st->pending)) {
		json_object_put(st->pending);
		st->pending = NULL;
	}
	db_result_free(&r);
	return 0;
}

void run_state_release(struct run_state *st)
{
	json_object_put(st->pending);
	st->pending = NULL;
}
