/* agent_thread.c - the durable per-app conversation (see agent_thread.h). */
#include "agent_thread.h"

#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "strbuf.h"
#include "util.h"
#include "workspace.h"

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

/* ---- the history sent to the model ------------------------------------- */

/*
 * The history is bounded by its budget: the bytes of its messages as JSON.
 * Whole turns (a user message and the steps that answered it) are dropped
 * first, oldest first; the newest turn always stays. When it alone is over
 * the budget, its long parts become stubs, oldest first: tool results,
 * tool-call arguments and answer text over STUB_MIN bytes. Then its oldest
 * steps go, the newest stays; then its user message is cut. One step over
 * the budget even stubbed (dozens of parallel calls against a budget of a
 * few KB) is the least that is sent.
 *
 * Every tool result follows the assistant message that made its call
 * (orphans are left out) and every call is answered (a stored result, or
 * "not run"), so the thread is one a provider accepts whatever was cut.
 */
#define HISTORY_MAX_ROWS 2000
#define HISTORY_PAGE_ROWS 64
/* A cell larger than this is never loaded whole: it is sent stubbed. */
#define HISTORY_CELL_MAX (256 * 1024)
/* Of a text not loaded whole, this much of its head is. */
#define HISTORY_HEAD_BYTES 1024
#define STUB_MIN 256

static const char not_run_result[] =
	"{\"error\":{\"code\":\"not_run\",\"message\":\"the run ended before this call ran\"}}";

enum msg_kind { MSG_USER, MSG_ASSISTANT, MSG_TOOL };

/* One message of the history being bounded. */
struct hmsg {
	enum msg_kind kind;
	json_object *full;  /* as stored; NULL when it was not loaded whole */
	json_object *stub;  /* long parts left out (the same object when none is long) */
	size_t full_size, stub_size; /* as JSON, plus one for the separating comma */
	int stubbed, dropped;
	int turn, step;     /* step 0 is the turn's user message */
};

struct hist {
	struct hmsg *v;
	size_t n, alloc;
	int turn, step;     /* of the messages being added */
};

static size_t json_size(json_object *o)
{
	return strlen(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN)) + 1;
}

static void hist_add(struct hist *h, enum msg_kind kind, json_object *full, json_object *stub)
{
	struct hmsg *m;

	if (h->n == h->alloc) {
		h->alloc = h->alloc ? h->alloc * 2 : 32;
		h->v = xrealloc(h->v, h->alloc, sizeof(*h->v));
	}
	m = &h->v[h->n++];
	memset(m, 0, sizeof(*m));
	m->kind = kind;
	m->full = full;
	m->stub = stub;
	m->stub_size = json_size(stub);
	/* what was not loaded whole is always sent stubbed */
	m->full_size = full ? json_size(full) : m->stub_size;
	m->stubbed = !full;
	m->turn = h->turn;
	m->step = h->step;
}

static void hist_release(struct hist *h)
{
	size_t i;

	for (i = 0; i < h->n; i++) {
		json_object_put(h->v[i].full);
		json_object_put(h->v[i].stub);
	}
	free(h->v);
	memset(h, 0, sizeof(*h));
}

/* The head of a text (at most max bytes, whole characters) and a note of
 * what was left out. */
static json_object *cut_text(const char *head, size_t head_len, size_t len, size_t max)
{
	struct strbuf sb = STRBUF_INIT;
	json_object *o;

	strbuf_add(&sb, head, ws_utf8_prefix(head, head_len, max));
	strbuf_addf(&sb, "… (%zu bytes, cut to fit the history budget)", len);
	o = json_object_new_string(sb.buf);
	strbuf_release(&sb);
	return o;
}

/* A JSON text (tool results and arguments are JSON) saying what is gone. */
static json_object *omitted_json(size_t len, const char *what)
{
	struct strbuf sb = STRBUF_INIT;
	json_object *o;

	strbuf_addf(&sb, "{\"omitted\":\"%zu bytes of %s, left out to fit the history budget\"}", len, what);
	o = json_object_new_string(sb.buf);
	strbuf_release(&sb);
	return o;
}

static json_object *text_json(const struct thread_row *row)
{
	return row->content ? json_object_new_string_len(row->content, (int)strlen(row->content)) : NULL;
}

static json_object *message(const char *role, json_object *content)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", content);
	return m;
}

static json_object *tool_message(const char *call_id, json_object *content)
{
	json_object *m = message("tool", content);

	json_object_object_add(m, "tool_call_id", json_object_new_string(call_id));
	return m;
}

static void add_tool(struct hist *h, const struct thread_row *row)
{
	json_object *full = NULL, *stub;

	if (row->content_whole)
		full = tool_message(row->tool_call_id, text_json(row));
	if (row->content_len > STUB_MIN || !full)
		stub = tool_message(row->tool_call_id, omitted_json(row->content_len, "tool result"));
	else
		stub = json_object_get(full);
	hist_add(h, MSG_TOOL, full, stub);
}

/* One call with its arguments left out. */
static json_object *call_stub(json_object *id, json_object *name, size_t args_len)
{
	json_object *c = json_object_new_object(), *fn = json_object_new_object();

	json_object_object_add(c, "id", json_object_get(id));
	json_object_object_add(c, "type", json_object_new_string("function"));
	json_object_object_add(fn, "name", name ? json_object_get(name) : json_object_new_string(""));
	json_object_object_add(fn, "arguments", omitted_json(args_len, "arguments"));
	json_object_object_add(c, "function", fn);
	return c;
}

/* The calls of an assistant row, NULL when it made none. stub: arguments
 * over STUB_MIN are left out. From its tool_calls JSON, or when that was
 * not loaded, from its calls' ids and names (all arguments left out). */
static json_object *row_calls(const struct thread_row *row, int stub)
{
	json_object *src = json_tokener_parse(row->tool_calls ? row->tool_calls
							       : row->call_ids ? row->call_ids : "null");
	json_object *names = row->tool_calls ? NULL : json_tokener_parse(row->call_names ? row->call_names : "null");
	json_object *out = NULL;
	size_t i, n = json_object_is_type(src, json_type_array) ? json_object_array_length(src) : 0;

	for (i = 0; i < n; i++) {
		json_object *c = json_object_array_get_idx(src, i), *fn, *id, *name, *args;
		size_t args_len;

		if (!out)
			out = json_object_new_array();
		if (!row->tool_calls) {
			json_object_array_add(out, call_stub(c, json_object_array_get_idx(names, i),
							     row->calls_len / n));
			continue;
		}
		fn = id = name = args = NULL;
		json_object_object_get_ex(c, "id", &id);
		json_object_object_get_ex(c, "function", &fn);
		json_object_object_get_ex(fn, "name", &name);
		json_object_object_get_ex(fn, "arguments", &args);
		args_len = args ? (size_t)json_object_get_string_len(args) : 0;
		json_object_array_add(out, stub && args_len > STUB_MIN ? call_stub(id, name, args_len)
								       : json_object_get(c));
	}
	json_object_put(src);
	json_object_put(names);
	return out;
}

static json_object *assistant_message(json_object *content, json_object *calls)
{
	json_object *m = message("assistant", content);

	if (calls)
		json_object_object_add(m, "tool_calls", calls);
	return m;
}

/* Adds an assistant row; *open becomes the ids of its calls. */
static void add_assistant(struct hist *h, const struct thread_row *row, json_object **open)
{
	json_object *full = NULL, *stub, *text, *calls;
	int whole = (row->content_whole || !row->content) && (row->tool_calls || !row->call_ids);
	size_t i;

	if (whole)
		full = assistant_message(text_json(row), row_calls(row, 0));
	if (row->content && (row->content_len > STUB_MIN || !row->content_whole))
		text = cut_text(row->content, strlen(row->content), row->content_len, STUB_MIN);
	else
		text = text_json(row);
	stub = assistant_message(text, row_calls(row, 1));
	hist_add(h, MSG_ASSISTANT, full, stub);
	json_object_put(*open);
	*open = json_object_new_array();
	if (json_object_object_get_ex(stub, "tool_calls", &calls))
		for (i = 0; i < json_object_array_length(calls); i++) {
			json_object *id;

			if (json_object_object_get_ex(json_object_array_get_idx(calls, i), "id", &id))
				json_object_array_add(*open, json_object_get(id));
		}
}

static void add_user(struct hist *h, const struct thread_row *row)
{
	json_object *full = row->content_whole ? message("user", text_json(row)) : NULL;

	/* cut only as the last resort (hist_fit), so the stub starts whole */
	hist_add(h, MSG_USER, full,
		 full ? json_object_get(full)
		      : message("user", cut_text(row->content ? row->content : "",
						 row->content ? strlen(row->content) : 0, row->content_len,
						 HISTORY_HEAD_BYTES)));
}

/* Answers the calls still open with a "not run" result. A run cancelled
 * (or failed, or given up) between the tool calls of one step leaves the
 * rest unanswered, and providers refuse every later request of a thread
 * with an unanswered call: the app's conversation would be stuck for good. */
static void close_open_calls(struct hist *h, json_object **open)
{
	size_t k;

	for (k = 0; *open && k < json_object_array_length(*open); k++) {
		json_object *m = tool_message(json_object_get_string(json_object_array_get_idx(*open, k)),
					      json_object_new_string(not_run_result));

		hist_add(h, MSG_TOOL, m, json_object_get(m));
	}
	json_object_put(*open);
	*open = NULL;
}

/* 1 when call_id was open (it is taken out), else 0. */
static int answer_call(json_object *open, const char *call_id)
{
	size_t k;

	for (k = 0; open && call_id && k < json_object_array_length(open); k++)
		if (!strcmp(json_object_get_string(json_object_array_get_idx(open, k)), call_id)) {
			json_object_array_del_idx(open, k, 1);
			return 1;
		}
	return 0;
}

/* Rows (oldest first) to well-formed messages, numbered by turn and step.
 * A window may begin inside a turn: it starts at its first user message,
 * or when it has none, at its first assistant message. Returns the number
 * of turns. */
static int hist_build(struct hist *h, const struct thread_row *rows, size_t n)
{
	json_object *open = NULL;
	size_t i, start = n;

	for (i = 0; i < n && start == n; i++)
		if (!strcmp(rows[i].role, "user"))
			start = i;
	for (i = 0; i < n && start == n; i++)
		if (!strcmp(rows[i].role, "assistant"))
			start = i;
	h->turn = -1;
	for (i = start; i < n; i++) {
		const struct thread_row *row = &rows[i];

		if (!strcmp(row->role, "tool")) {
			if (answer_call(open, row->tool_call_id))
				add_tool(h, row); /* else an orphan, never sent */
			continue;
		}
		close_open_calls(h, &open);
		if (!strcmp(row->role, "user")) {
			h->turn++;
			h->step = 0;
			add_user(h, row);
		} else {
			if (h->turn < 0)
				h->turn = 0;
			h->step++;
			add_assistant(h, row, &open);
		}
	}
	close_open_calls(h, &open);
	return h->turn + 1;
}

static size_t msg_size(const struct hmsg *m)
{
	return m->stubbed ? m->stub_size : m->full_size;
}

/* The user message of the newest turn, cut so the total fits (its text is
 * escaped as JSON, so the cut is measured, then tightened). */
static void cut_user(struct hmsg *m, size_t *total, size_t budget)
{
	json_object *content;
	const char *text;
	char *orig;
	size_t len, keep, rest = *total - msg_size(m);
	int tries;

	if (!json_object_object_get_ex(m->stub, "content", &content) || !(text = json_object_get_string(content)))
		return;
	orig = xstrdup(text);
	len = strlen(orig);
	keep = len > *total - budget ? len - (*total - budget) : 0;
	for (tries = 0;; tries++) {
		size_t size;

		json_object_put(m->stub); /* may be the full message itself: a new one */
		m->stub = message("user", cut_text(orig, len, len, keep));
		m->stub_size = size = json_size(m->stub);
		if (rest + size <= budget || !keep || tries == 8)
			break;
		keep = keep > rest + size - budget ? keep - (rest + size - budget) : 0;
	}
	m->stubbed = 1;
	*total = rest + m->stub_size;
	free(orig);
}

/* Marks what to leave out and what to stub so the history fits budget. */
static void hist_fit(struct hist *h, int turns, size_t budget)
{
	size_t *turn_size = xcalloc((size_t)turns + 1, sizeof(*turn_size));
	size_t total, i, first = h->n;
	int t, newest = turns - 1, last_step = 0;

	for (i = 0; i < h->n; i++)
		turn_size[h->v[i].turn] += msg_size(&h->v[i]);
	for (i = 0; i < h->n; i++)
		if (h->v[i].turn == newest) {
			if (first == h->n)
				first = i;
			last_step = h->v[i].step;
		}
	total = turn_size[newest];
	/* older turns, newest first, while they fit whole */
	for (t = newest - 1; t >= 0 && total + turn_size[t] <= budget; t--)
		total += turn_size[t];
	for (i = 0; i < first; i++)
		h->v[i].dropped = h->v[i].turn <= t;
	/* the newest turn's long parts, oldest first */
	for (i = first; i < h->n && total > budget; i++) {
		struct hmsg *m = &h->v[i];

		if (m->kind != MSG_USER && !m->stubbed) {
			total -= m->full_size - m->stub_size;
			m->stubbed = 1;
		}
	}
	/* its oldest steps, each whole (a step's messages are contiguous),
	 * the newest kept */
	for (i = first; i < h->n && total > budget;) {
		int step = h->v[i].step;

		if (step == 0) {
			i++;
			continue;
		}
		if (step >= last_step)
			break;
		for (; i < h->n && h->v[i].step == step; i++) {
			h->v[i].dropped = 1;
			total -= msg_size(&h->v[i]);
		}
	}
	if (total > budget && h->v[first].kind == MSG_USER)
		cut_user(&h->v[first], &total, budget);
	free(turn_size);
}

int thread_history_from_rows(const struct thread_row *rows, size_t n, int64_t budget, json_object *msgs)
{
	struct hist h;
	size_t i;
	int turns;

	memset(&h, 0, sizeof(h));
	turns = hist_build(&h, rows, n);
	if (h.n)
		hist_fit(&h, turns, budget > 0 ? (size_t)budget : 0);
	for (i = 0; i < h.n; i++)
		if (!h.v[i].dropped)
			json_object_array_add(msgs, json_object_get(h.v[i].stubbed ? h.v[i].stub : h.v[i].full));
	hist_release(&h);
	return 0;
}

static void row_release(struct thread_row *row)
{
	free((char *)row->content);
	free((char *)row->tool_calls);
	free((char *)row->call_ids);
	free((char *)row->call_names);
	free((char *)row->tool_call_id);
	free((char *)row->role);
}

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

/* Keeps only what a stub needs: the head of the text, the calls' ids. */
static void row_shrink(struct thread_row *row)
{
	char *content = (char *)row->content;

	if (content && strlen(content) > HISTORY_HEAD_BYTES) {
		content[ws_utf8_prefix(content, strlen(content), HISTORY_HEAD_BYTES)] = '\0';
		row->content_whole = 0;
	}
	free((char *)row->tool_calls);
	row->tool_calls = NULL;
}

/*
 * Loads the newest rows a page at a time and stops once older rows cannot
 * be sent: after the newest user message, when what is loaded is already
 * over the budget (raw text is never larger than its JSON). Rows of the
 * newest turn behind more than a budget of newer rows can only go out as
 * stubs, so only their heads and call ids are kept. Cells over
 * HISTORY_CELL_MAX are never read whole. Memory stays near the budget.
 */
int thread_load_history(struct db *db, int64_t app_id, int64_t budget, json_object *msgs)
{
	struct thread_row *rows = NULL;
	int64_t before = INT64_MAX, cap = budget < HISTORY_CELL_MAX ? budget : HISTORY_CELL_MAX;
	size_t n = 0, i, loaded = 0;
	int seen_user = 0, ret = -1, more = 1;

	rows = xcalloc(HISTORY_MAX_ROWS, sizeof(*rows));
	while (more && n < HISTORY_MAX_ROWS) {
		struct db_result r;

		if (db_query(db, &r, "SELECT id, role, IF(LENGTH(content) <= ?, content, LEFT(content, ?)), "
				     "LENGTH(content), IF(LENGTH(tool_calls) <= ?, tool_calls, NULL), "
				     "LENGTH(tool_calls), JSON_EXTRACT(tool_calls, '$[*].id'), "
				     "JSON_EXTRACT(tool_calls, '$[*].function.name'), tool_call_id "
				     "FROM agent_messages WHERE app_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
			     "iiiiii", cap, (int64_t)HISTORY_HEAD_BYTES, cap, app_id, before,
			     (int64_t)HISTORY_PAGE_ROWS) < 0)
			goto out;
		more = r.nrows == HISTORY_PAGE_ROWS;
		for (i = 0; i < r.nrows && n < HISTORY_MAX_ROWS; i++) {
			struct thread_row *row = &rows[n++];

			before = db_int(&r, i, 0);
			row->role = xstrdup(db_val(&r, i, 1));
			row->content = dup_or_null(db_val(&r, i, 2));
			row->content_len = (size_t)db_int(&r, i, 3);
			row->content_whole = row->content && (int64_t)row->content_len <= cap;
			row->tool_calls = dup_or_null(db_val(&r, i, 4));
			row->calls_len = (size_t)db_int(&r, i, 5);
			row->call_ids = dup_or_null(db_val(&r, i, 6));
			row->call_names = dup_or_null(db_val(&r, i, 7));
			row->tool_call_id = dup_or_null(db_val(&r, i, 8));
			if (!strcmp(row->role, "user")) {
				seen_user = 1;
			} else if (!seen_user && loaded > (size_t)budget) {
				row_shrink(row);
			}
			loaded += row->content_len + row->calls_len;
			if (seen_user && loaded > (size_t)budget)
				more = 0;
		}
		db_result_free(&r);
		if (!more)
			break;
	}
	/* oldest first */
	for (i = 0; i < n / 2; i++) {
		struct thread_row t = rows[i];

		rows[i] = rows[n - 1 - i];
		rows[n - 1 - i] = t;
	}
	ret = thread_history_from_rows(rows, n, budget, msgs);
out:
	for (i = 0; i < n; i++)
		row_release(&rows[i]);
	free(rows);
	return ret;
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
