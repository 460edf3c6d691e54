/*
 * test_agent_thread.c - the history sent to the model: within its byte
 * budget whatever the conversation, and always a thread a provider accepts
 * (every call answered right after it, no result without its call, a user
 * or assistant message first). Crafted cases, then random conversations.
 */
#include <stdlib.h>
#include <string.h>

#include <json.h>

#include "agent_thread.h"
#include "harness.h"
#include "strbuf.h"

/* ---- building conversations ---- */

struct conv {
	struct thread_row rows[4096];
	char *owned[4096 * 3];
	size_t n, nowned;
	int next_call;
};

static const char *keep(struct conv *c, char *s)
{
	c->owned[c->nowned++] = s;
	return s;
}

static char *filled(size_t len, char ch)
{
	char *s = malloc(len + 1);

	memset(s, ch, len);
	s[len] = '\0';
	return s;
}

static void row_text(struct conv *c, const char *role, char *text)
{
	struct thread_row *r = &c->rows[c->n++];

	memset(r, 0, sizeof(*r));
	r->role = role;
	r->content = keep(c, text);
	r->content_len = strlen(text);
	r->content_whole = 1;
}

static void user(struct conv *c, size_t len)
{
	row_text(c, "user", filled(len, 'u'));
}

/* An assistant message with ncalls calls whose arguments are args_len long;
 * ids are call_<k>. */
static void assistant(struct conv *c, size_t text_len, int ncalls, size_t args_len)
{
	struct strbuf calls = STRBUF_INIT;
	char *args = filled(args_len, 'a');
	int i;

	row_text(c, "assistant", filled(text_len, 't'));
	if (!ncalls) {
		free(args);
		return;
	}
	strbuf_addch(&calls, '[');
	for (i = 0; i < ncalls; i++)
		strbuf_addf(&calls, "%s{\"id\":\"call_%d\",\"type\":\"function\",\"function\":"
				    "{\"name\":\"write_file\",\"arguments\":\"%s\"}}",
			    i ? "," : "", c->next_call + i, args);
	strbuf_addch(&calls, ']');
	c->rows[c->n - 1].calls_len = calls.len;
	c->rows[c->n - 1].tool_calls = keep(c, strbuf_detach(&calls, NULL));
	free(args);
}

static void tool(struct conv *c, int call, size_t len)
{
	struct strbuf id = STRBUF_INIT;

	row_text(c, "tool", filled(len, 'r'));
	strbuf_addf(&id, "call_%d", call);
	c->rows[c->n - 1].tool_call_id = keep(c, strbuf_detach(&id, NULL));
}

/* A step: an answer, its calls and all their results. */
static void step(struct conv *c, size_t text_len, int ncalls, size_t args_len, size_t result_len)
{
	int i;

	assistant(c, text_len, ncalls, args_len);
	for (i = 0; i < ncalls; i++)
		tool(c, c->next_call + i, result_len);
	c->next_call += ncalls;
}

static void conv_release(struct conv *c)
{
	size_t i;

	for (i = 0; i < c->nowned; i++)
		free(c->owned[i]);
	c->n = c->nowned = 0;
}

/* ---- checking what goes out ---- */

static size_t history_size(json_object *msgs)
{
	size_t i, total = 0;

	for (i = 0; i < json_object_array_length(msgs); i++)
		total += strlen(json_object_to_json_string_ext(json_object_array_get_idx(msgs, i),
							       JSON_C_TO_STRING_PLAIN)) + 1;
	return total;
}

static const char *role_of(json_object *m)
{
	json_object *v;

	return json_object_object_get_ex(m, "role", &v) ? json_object_get_string(v) : "";
}

/* What the scripted model (like OpenAI) refuses: 1 when well-formed. */
static int well_formed(json_object *msgs)
{
	json_object *open = NULL;
	size_t i, k, n = json_object_array_length(msgs);

	if (n && strcmp(role_of(json_object_array_get_idx(msgs, 0)), "user") &&
	    strcmp(role_of(json_object_array_get_idx(msgs, 0)), "assistant"))
		return 0;
	for (i = 0; i <= n; i++) {
		json_object *m = i < n ? json_object_array_get_idx(msgs, i) : NULL, *v, *calls;

		if (m && !strcmp(role_of(m), "tool")) {
			int found = 0;

			if (!open || !json_object_object_get_ex(m, "tool_call_id", &v))
				return 0;
			for (k = 0; k < json_object_array_length(open); k++)
				if (!strcmp(json_object_get_string(json_object_array_get_idx(open, k)),
					    json_object_get_string(v))) {
					json_object_array_del_idx(open, k, 1);
					found = 1;
					break;
				}
			if (!found)
				return 0;
			continue;
		}
		if (open && json_object_array_length(open)) {
			json_object_put(open);
			return 0;
		}
		json_object_put(open);
		open = NULL;
		if (m && !strcmp(role_of(m), "assistant") && json_object_object_get_ex(m, "tool_calls", &calls)) {
			open = json_object_new_array();
			for (k = 0; k < json_object_array_length(calls); k++)
				if (json_object_object_get_ex(json_object_array_get_idx(calls, k), "id", &v))
					json_object_array_add(open, json_object_get(v));
		}
	}
	json_object_put(open);
	return 1;
}

static json_object *history(struct conv *c, int64_t budget)
{
	json_object *msgs = json_object_new_array();

	CHECK(thread_history_from_rows(c->rows, c->n, budget, msgs) == 0);
	return msgs;
}

static const char *content_of(json_object *m)
{
	json_object *v;

	return json_object_object_get_ex(m, "content", &v) && v ? json_object_get_string(v) : NULL;
}

static int is_stub(const char *s)
{
	return s && strstr(s, "to fit the history budget") != NULL;
}

/* ---- cases ---- */

static void test_under_budget_everything_in_order(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	json_object *msgs;

	user(c, 20);
	step(c, 30, 2, 40, 50);
	step(c, 10, 0, 0, 0);
	user(c, 20);
	step(c, 30, 1, 40, 50);
	msgs = history(c, 100000);
	CHECK(json_object_array_length(msgs) == c->n);
	CHECK(well_formed(msgs));
	CHECK_STR(role_of(json_object_array_get_idx(msgs, 0)), "user");
	CHECK_STR(content_of(json_object_array_get_idx(msgs, 3)), c->rows[3].content);
	json_object_put(msgs);
	conv_release(c);
	free(c);
}

static void test_old_turns_dropped_whole(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	json_object *msgs, *first;
	size_t i;
	int turn;

	/* ten turns of about 3 KB each, a budget of about 10 KB */
	for (turn = 0; turn < 10; turn++) {
		user(c, 100);
		step(c, 200, 2, 300, 1000);
		step(c, 200, 0, 0, 0);
	}
	msgs = history(c, 10000);
	CHECK(history_size(msgs) <= 10000);
	CHECK(well_formed(msgs));
	first = json_object_array_get_idx(msgs, 0);
	CHECK_STR(role_of(first), "user");
	/* whole turns: a multiple of the 5 messages of one, nothing stubbed */
	CHECK(json_object_array_length(msgs) % 5 == 0 && json_object_array_length(msgs) >= 10);
	for (i = 0; i < json_object_array_length(msgs); i++)
		CHECK(!is_stub(content_of(json_object_array_get_idx(msgs, i))));
	/* the newest turn is the end of it */
	CHECK_STR(content_of(json_object_array_get_idx(msgs, json_object_array_length(msgs) - 1)),
		  c->rows[c->n - 1].content);
	json_object_put(msgs);
	conv_release(c);
	free(c);
}

static void test_newest_turn_over_budget_stubs_oldest_first(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	json_object *msgs, *last;
	size_t n;
	int i;

	user(c, 100);
	step(c, 50, 1, 100, 5000);   /* an old turn: dropped */
	user(c, 100);
	for (i = 0; i < 20; i++)     /* 20 reads of 5 KB in the current run */
		step(c, 50, 1, 100, 5000);
	msgs = history(c, 30000);
	n = json_object_array_length(msgs);
	CHECK(history_size(msgs) <= 30000);
	CHECK(well_formed(msgs));
	/* the current turn's user message first, every step kept */
	CHECK_STR(content_of(json_object_array_get_idx(msgs, 0)), c->rows[3].content);
	CHECK(n == 1 + 20 * 2);
	/* the oldest results stubbed, the newest ones whole */
	CHECK(is_stub(content_of(json_object_array_get_idx(msgs, 2))));
	last = json_object_array_get_idx(msgs, n - 1);
	CHECK_STR(role_of(last), "tool");
	CHECK_STR(content_of(last), c->rows[c->n - 1].content);
	json_object_put(msgs);
	conv_release(c);
	free(c);
}

static void test_long_arguments_and_text_stubbed(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	json_object *msgs, *a, *calls, *fn, *args = NULL;
	json_object *parsed;

	user(c, 10);
	step(c, 20000, 1, 30000, 10);   /* a long answer writing a big file */
	step(c, 10, 1, 10, 10);
	msgs = history(c, 4000);
	CHECK(history_size(msgs) <= 4000);
	CHECK(well_formed(msgs));
	a = json_object_array_get_idx(msgs, 1);
	CHECK(is_stub(content_of(a)));
	CHECK(json_object_object_get_ex(a, "tool_calls", &calls));
	fn = NULL;
	json_object_object_get_ex(json_object_array_get_idx(calls, 0), "function", &fn);
	CHECK(fn && json_object_object_get_ex(fn, "arguments", &args));
	/* a stubbed argument string is still a JSON object, as providers expect */
	parsed = json_tokener_parse(json_object_get_string(args));
	CHECK(json_object_is_type(parsed, json_type_object));
	json_object_put(parsed);
	json_object_put(msgs);
	conv_release(c);
	free(c);
}

static void test_oldest_steps_dropped_newest_kept(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	json_object *msgs;
	size_t n;
	int i;

	user(c, 50);
	for (i = 0; i < 300; i++)
		step(c, 100, 1, 100, 100);
	msgs = history(c, 8000);
	n = json_object_array_length(msgs);
	CHECK(history_size(msgs) <= 8000);
	CHECK(well_formed(msgs));
	CHECK_STR(role_of(json_object_array_get_idx(msgs, 0)), "user");
	CHECK(n > 3 && n < 1 + 300 * 2);
	/* the newest step is there */
	CHECK_STR(content_of(json_object_array_get_idx(msgs, n - 1)), c->rows[c->n - 1].content);
	json_object_put(msgs);
	conv_release(c);
	free(c);
}

static void test_huge_user_message_is_cut(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	json_object *msgs;

	user(c, 100000);
	msgs = history(c, 1000);
	CHECK(json_object_array_length(msgs) == 1);
	CHECK(history_size(msgs) <= 1000);
	CHECK(is_stub(content_of(json_object_array_get_idx(msgs, 0))));
	CHECK(!strncmp(content_of(json_object_array_get_idx(msgs, 0)), "uuuu", 4));
	json_object_put(msgs);
	conv_release(c);
	free(c);
}

static void test_window_starting_mid_turn(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	json_object *msgs;

	/* the window's oldest rows: results whose call is not in it */
	tool(c, 900, 10);
	tool(c, 901, 10);
	step(c, 10, 2, 10, 10);
	step(c, 10, 0, 0, 0);
	msgs = history(c, 100000);
	CHECK(well_formed(msgs));
	CHECK_STR(role_of(json_object_array_get_idx(msgs, 0)), "assistant");
	CHECK(json_object_array_length(msgs) == 4);
	json_object_put(msgs);
	conv_release(c);

	/* with a user message in the window, it starts there */
	tool(c, 900, 10);
	step(c, 10, 1, 10, 10);
	user(c, 10);
	step(c, 10, 0, 0, 0);
	msgs = history(c, 100000);
	CHECK(well_formed(msgs));
	CHECK(json_object_array_length(msgs) == 2);
	CHECK_STR(role_of(json_object_array_get_idx(msgs, 0)), "user");
	json_object_put(msgs);
	conv_release(c);
	free(c);
}

static void test_orphans_left_out_open_calls_answered(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	json_object *msgs;

	user(c, 10);
	assistant(c, 10, 3, 10); /* call_0..2; only call_1 answered, plus an orphan */
	tool(c, 1, 10);
	tool(c, 77, 10);
	c->next_call = 3;
	user(c, 10);
	msgs = history(c, 100000);
	CHECK(well_formed(msgs));
	/* user, assistant, call_1's result, two "not run" results, user */
	CHECK(json_object_array_length(msgs) == 6);
	CHECK(strstr(content_of(json_object_array_get_idx(msgs, 3)), "not_run") != NULL);
	json_object_put(msgs);
	conv_release(c);
	free(c);
}

static void test_rows_not_loaded_whole(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	json_object *msgs, *a, *calls;

	user(c, 10);
	assistant(c, 10, 2, 10);
	/* the loader's view of rows too big to read: heads and call ids only */
	c->rows[1].content_whole = 0;
	c->rows[1].content_len = 900000;
	c->rows[1].tool_calls = NULL;
	c->rows[1].call_ids = "[\"call_0\", \"call_1\"]";
	c->rows[1].call_names = "[\"write_file\", \"read_file\"]";
	c->rows[1].calls_len = 800000;
	tool(c, 0, 10);
	tool(c, 1, 10);
	c->rows[3].content_whole = 0;
	c->rows[3].content_len = 700000;
	msgs = history(c, 100000);
	CHECK(well_formed(msgs));
	CHECK(json_object_array_length(msgs) == 4);
	a = json_object_array_get_idx(msgs, 1);
	CHECK(is_stub(content_of(a)));
	CHECK(json_object_object_get_ex(a, "tool_calls", &calls) && json_object_array_length(calls) == 2);
	CHECK(strstr(json_object_to_json_string(calls), "read_file") != NULL);
	CHECK(!is_stub(content_of(json_object_array_get_idx(msgs, 2))));
	CHECK(strstr(content_of(json_object_array_get_idx(msgs, 3)), "700000 bytes of tool result") != NULL);
	json_object_put(msgs);
	conv_release(c);
	free(c);
}

/* Random conversations and budgets: always bounded and well-formed. */
static void test_random_conversations(void)
{
	struct conv *c = calloc(1, sizeof(*c));
	unsigned seed = 12345;
	int round, bad_size = 0, bad_form = 0, bad_start = 0, stubbed = 0, shortened = 0;

	for (round = 0; round < 300; round++) {
		json_object *msgs;
		int64_t budget;
		size_t first_role_ok, n;
		int turns = 1 + (int)(rand_r(&seed) % 6), t, s;

		for (t = 0; t < turns; t++) {
			user(c, 1 + rand_r(&seed) % 3000);
			for (s = rand_r(&seed) % 8; s > 0; s--)
				step(c, rand_r(&seed) % 3000, (int)(rand_r(&seed) % 4),
				     rand_r(&seed) % 4000, rand_r(&seed) % 6000);
			if (rand_r(&seed) % 3 == 0) /* a cancelled step: calls left unanswered */
				assistant(c, 10, 2, 10), c->next_call += 2;
		}
		budget = 2000 + rand_r(&seed) % 60000;
		msgs = history(c, budget);
		n = json_object_array_length(msgs);
		if (!well_formed(msgs))
			bad_form++;
		if (n < c->n)
			shortened++;
		if (strstr(json_object_to_json_string(msgs), "to fit the history budget"))
			stubbed++;
		first_role_ok = n && (!strcmp(role_of(json_object_array_get_idx(msgs, 0)), "user"));
		if (!first_role_ok)
			bad_start++;
		/* over the budget only at the floor: the user message and one step */
		if (history_size(msgs) > (size_t)budget) {
			size_t k, assistants = 0;

			for (k = 0; k < n; k++)
				assistants += !strcmp(role_of(json_object_array_get_idx(msgs, k)), "assistant");
			if (assistants > 1)
				bad_size++;
		}
		json_object_put(msgs);
		conv_release(c);
	}
	CHECK(bad_form == 0);
	CHECK(bad_start == 0);
	CHECK(bad_size == 0);
	/* the cases were varied enough to cut both ways */
	CHECK(stubbed > 30 && shortened > 30 && stubbed < 290);
	free(c);
}

int main(void)
{
	RUN(test_under_budget_everything_in_order);
	RUN(test_old_turns_dropped_whole);
	RUN(test_newest_turn_over_budget_stubs_oldest_first);
	RUN(test_long_arguments_and_text_stubbed);
	RUN(test_oldest_steps_dropped_newest_kept);
	RUN(test_huge_user_message_is_cut);
	RUN(test_window_starting_mid_turn);
	RUN(test_orphans_left_out_open_calls_answered);
	RUN(test_rows_not_loaded_whole);
	RUN(test_random_conversations);
	return harness_done("agent_thread");
}
