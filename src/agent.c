/* agent.c - the coding-agent loop of one run (see agent.h). */
#include "agent.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "agent_thread.h"
#include "appstate.h"
#include "ckpt_crash.h"
#include "ckpt_restore.h"
#include "ckpt_store.h"
#include "ckpt_summary.h"
#include "cmdpolicy.h"
#include "cmdtool.h"
#include "config.h"
#include "db.h"
#include "events.h"
#include "fileutil.h"
#include "filetools.h"
#include "log.h"
#include "model_client.h"
#include "runs.h"
#include "sandbox.h"
#include "services.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

/* tool.started payloads: strings are cut to ARG_CUT bytes and containers to
 * ARG_ITEMS members at any depth; arguments still over ARGS_EVENT_MAX are cut
 * again, tighter, and past that sent as their cut JSON text. */
#define ARG_CUT 2000
#define ARG_ITEMS 64
#define ARG_CUT_TIGHT 200
#define ARG_ITEMS_TIGHT 16
#define ARGS_EVENT_MAX (16 * 1024)
/* A run waits this long for its app's workspace lock. The other holders
 * (restore, revert, upload requests) are bounded by request_timeout_s. */
#define LOCK_WAIT_MS (120 * 1000)

/* Everything one run needs, in one place (nothing global). */
struct run_ctx {
	struct config *cfg;
	struct db db;
	struct ckpt_store ckpts;
	struct workspace ws;
	int ws_open;
	int lock;              /* the app lock's fd, -1 until taken */
	struct cmdpolicy policy;
	struct sandbox_config sandbox;
	struct agent_profile profile;
	struct model_config model;
	const char *runner_id;
	volatile sig_atomic_t *cancel;
	int64_t run_id, app_id, attempt, handbacks, base_revision_id, base_checkpoint_id;
	int lease_lost;        /* another runner owns the run now: stop, write nothing */
	/* A write of the run's durable state failed, or may not have committed
	 * (connection lost during COMMIT). The attempt ends without another
	 * write; the runner resumes the run from what the database holds. */
	int db_failed;
	/* delta coalescing */
	struct strbuf pending;
	int64_t last_flush_ms;
	int message_index;
	int restart_next;
	/* what the run did, for the checkpoint summary */
	unsigned files_written, files_deleted, commands, tool_failures;
};

/* ---- profile ---------------------------------------------------------- */

static void profile_apply(struct agent_profile *p, json_object *o)
{
	json_object *v;

	if (json_object_object_get_ex(o, "system_prompt", &v) && json_object_is_type(v, json_type_string)) {
		free(p->system_prompt);
		p->system_prompt = xstrdup(json_object_get_string(v));
	}
	if (json_object_object_get_ex(o, "model", &v) && json_object_is_type(v, json_type_string)) {
		free(p->model);
		p->model = xstrdup(json_object_get_string(v));
	}
	if (json_object_object_get_ex(o, "temperature", &v) &&
	    (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
		p->temperature = json_object_get_double(v);
	if (json_object_object_get_ex(o, "max_steps", &v) && json_object_is_type(v, json_type_int))
		p->max_steps = json_object_get_int(v);
	if (json_object_object_get_ex(o, "max_output_tokens", &v) && json_object_is_type(v, json_type_int))
		p->max_output_tokens = json_object_get_int(v);
	if (json_object_object_get_ex(o, "tools", &v) && json_object_is_type(v, json_type_array)) {
		size_t i, n = json_object_array_length(v);

		for (i = 0; p->tools && p->tools[i]; i++)
			free(p->tools[i]);
		free(p->tools);
		p->tools = xcalloc(n + 1, sizeof(*p->tools));
		for (i = 0; i < n; i++)
			p->tools[i] = xstrdup(json_object_get_string(json_object_array_get_idx(v, i)));
	}
}

static int profile_file(struct agent_profile *p, const char *path, int must_exist, struct strbuf *err)
{
	struct strbuf text = STRBUF_INIT;
	json_object *o;
	int rc = file_read_capped(path, 1 << 20, &text), ret = 0;

	if (rc == -ENOENT && !must_exist)
		goto out;
	if (rc < 0 || !(o = json_tokener_parse(text.buf)) || !json_object_is_type(o, json_type_object)) {
		strbuf_addf(err, "agent profile %s is unreadable or not a JSON object", path);
		ret = -1;
		goto out;
	}
	profile_apply(p, o);
	json_object_put(o);
out:
	strbuf_release(&text);
	return ret;
}

int agent_profile_load(const struct config *cfg, int64_t app_id, struct agent_profile *p,
		       struct strbuf *err)
{
	struct strbuf path = STRBUF_INIT;
	int ret;

	memset(p, 0, sizeof(*p));
	p->system_prompt = xstrdup("You are a coding agent that edits a static web app.");
	p->temperature = 0.2;
	p->max_steps = 12;
	p->max_output_tokens = 4096;
	ret = profile_file(p, cfg->agent_profile, 1, err);
	/* An app may override any key with <state>/profiles/app-<id>.json. */
	state_path(cfg, &path, "profiles/app-%lld.json", (long long)app_id);
	if (!ret)
		ret = profile_file(p, path.buf, 0, err);
	if (p->max_steps < 1 || p->max_steps > 200)
		p->max_steps = 12;
	strbuf_release(&path);
	return ret;
}

void agent_profile_release(struct agent_profile *p)
{
	size_t i;

	for (i = 0; p->tools && p->tools[i]; i++)
		free(p->tools[i]);
	free(p->tools);
	free(p->system_prompt);
	free(p->model);
	memset(p, 0, sizeof(*p));
}

static int tool_enabled(const struct agent_profile *p, const char *name)
{
	size_t i;

	if (!p->tools)
		return 1;
	for (i = 0; p->tools[i]; i++)
		if (!strcmp(p->tools[i], name))
			return 1;
	return 0;
}

/* ---- events ----------------------------------------------------------- */

/* The run goes on only while its writes land: after a lost lease or a
 * failed write nothing more is written and the attempt winds down. */
static int stopping(const struct run_ctx *rc)
{
	return rc->lease_lost || rc->db_failed || *rc->cancel;
}

/* Takes in the outcome of an append or leased write (a seq, 0, or one of
 * the EVENT_* codes); 0 when it landed. */
static int judge_write(struct run_ctx *rc, int64_t seq, const char *what)
{
	if (seq >= 0)
		return 0;
	if (seq == EVENT_LEASE_LOST) {
		log_warn("run %lld: lease lost; another runner owns it now", (long long)rc->run_id);
		rc->lease_lost = 1;
	} else {
		log_error("run %lld: cannot write %s (%s); ending this attempt, the run resumes from "
			  "what is stored", (long long)rc->run_id, what,
			  seq == EVENT_UNCERTAIN ? "the connection broke during commit" : rc->db.errmsg);
		rc->db_failed = 1;
	}
	return -1;
}

/* An event, with extra's writes (may be NULL) in its transaction; type
 * NULL writes extra's rows alone. Only while this runner holds the lease. */
static int emit_with(struct run_ctx *rc, int (*extra)(struct db *db, void *ctx), void *ctx,
		     const char *type, json_object *payload)
{
	if (rc->lease_lost || rc->db_failed)
		return -1;
	return judge_write(rc, event_append_with(&rc->db, rc->run_id, rc->runner_id, extra, ctx, type,
						 payload),
			   type ? type : "the conversation");
}

static int emit(struct run_ctx *rc, const char *type, json_object *payload)
{
	return emit_with(rc, NULL, NULL, type, payload);
}

/* The pending text as one assistant.delta. A failure ends the attempt
 * (stopping() turns true), so the text is not kept for another try: the
 * resumed attempt restarts the response. */
static int flush_delta(struct run_ctx *rc)
{
	json_object *p;
	int ret;

	if (!rc->pending.len)
		return 0;
	p = json_object_new_object();
	json_object_object_add(p, "text", json_object_new_string_len(rc->pending.buf, (int)rc->pending.len));
	json_object_object_add(p, "message_index", json_object_new_int(rc->message_index));
	if (rc->restart_next)
		json_object_object_add(p, "restart", json_object_new_boolean(1));
	ret = emit(rc, "assistant.delta", p);
	json_object_put(p);
	rc->restart_next = 0;
	strbuf_reset(&rc->pending);
	rc->last_flush_ms = mono_ms();
	return ret;
}

static int coalesce_due(const struct run_ctx *rc)
{
	return rc->pending.len >= (size_t)rc->cfg->delta_coalesce_bytes ||
	       (rc->pending.len && mono_ms() - rc->last_flush_ms >= rc->cfg->delta_coalesce_ms);
}

static int on_delta(void *ctx, const char *text, size_t len)
{
	struct run_ctx *rc = ctx;

	strbuf_add(&rc->pending, text, len);
	if (coalesce_due(rc))
		flush_delta(rc);
	return stopping(rc);
}

static int should_abort(void *ctx)
{
	struct run_ctx *rc = ctx;

	/* also the timer that flushes a delta tail while the stream pauses */
	if (coalesce_due(rc))
		flush_delta(rc);
	return stopping(rc);
}

static void on_retry(void *ctx, int attempt, const struct model_error *why, long delay_ms)
{
	struct run_ctx *rc = ctx;

	log_warn("run %lld: model attempt %d failed (%s); retrying in %ld ms", (long long)rc->run_id,
		 attempt, why->code, delay_ms);
	strbuf_reset(&rc->pending);
	rc->restart_next = 1; /* the next text replaces this message's text */
}

/* ---- tools -------------------------------------------------------------- */

/* A string for an event, cut to max bytes. The cut never splits a
 * character: the database refuses invalid UTF-8, and the event with it. */
static json_object *cut_string(const char *s, size_t len, size_t max)
{
	struct strbuf sb = STRBUF_INIT;
	json_object *o;

	if (len <= max)
		return json_object_new_string_len(s, (int)len);
	strbuf_add(&sb, s, ws_utf8_prefix(s, len, max));
	strbuf_addf(&sb, "… (%zu bytes)", len);
	o = json_object_new_string(sb.buf);
	strbuf_release(&sb);
	return o;
}

struct cut_limits {
	size_t string_max, items_max;
};

/* A copy of v with every string (keys too) and container cut, at any depth
 * (the parser bounds the depth). */
static json_object *cut_value(json_object *v, const struct cut_limits *lim)
{
	json_object *o;
	size_t i, n;

	switch (json_object_get_type(v)) {
	case json_type_string:
		return cut_string(json_object_get_string(v), (size_t)json_object_get_string_len(v),
				  lim->string_max);
	case json_type_array:
		n = json_object_array_length(v);
		o = json_object_new_array();
		for (i = 0; i < n && i < lim->items_max; i++)
			json_object_array_add(o, cut_value(json_object_array_get_idx(v, i), lim));
		if (n > lim->items_max) {
			struct strbuf more = STRBUF_INIT;

			strbuf_addf(&more, "… (%zu more items)", n - lim->items_max);
			json_object_array_add(o, json_object_new_string(more.buf));
			strbuf_release(&more);
		}
		return o;
	case json_type_object:
		o = json_object_new_object();
		n = 0;
		json_object_object_foreach(v, key, member) {
			json_object *k;

			if (n++ == lim->items_max) {
				json_object_object_add(o, "…", json_object_new_string("(more keys left out)"));
				break;
			}
			k = cut_string(key, strlen(key), lim->string_max);
			json_object_object_add(o, json_object_get_string(k), cut_value(member, lim));
			json_object_put(k);
		}
		return o;
	default:
		return json_object_get(v);
	}
}

/* The arguments as tool.started shows them, never over ARGS_EVENT_MAX. */
static json_object *cut_arguments(json_object *args)
{
	static const struct cut_limits passes[] = { { ARG_CUT, ARG_ITEMS },
						    { ARG_CUT_TIGHT, ARG_ITEMS_TIGHT } };
	json_object *o = NULL;
	const char *text = "";
	size_t i;

	for (i = 0; i < ARRAY_SIZE(passes); i++) {
		json_object_put(o);
		o = cut_value(args, &passes[i]);
		text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
		if (strlen(text) <= ARGS_EVENT_MAX)
			return o;
	}
	/* wide and deep at once: its text, cut, tells what it was */
	args = cut_string(text, strlen(text), ARG_CUT);
	json_object_put(o);
	return args;
}

/* Error messages are built in fixed buffers, cut wherever the limit fell,
 * and quote model-chosen names cut by byte counts: keep the valid front. */
static void utf8_trim(char *s)
{
	size_t len = strlen(s);

	while (len && !utf8_valid(s, len))
		len--;
	s[len] = '\0';
}

static json_object *error_json(const char *code, const char *message)
{
	json_object *e = json_object_new_object();

	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", json_object_new_string(message));
	return e;
}

static json_object *tool_payload(const char *call_id, const char *name)
{
	json_object *p = json_object_new_object();

	json_object_object_add(p, "call_id", json_object_new_string(call_id));
	json_object_object_add(p, "tool", json_object_new_string(name));
	return p;
}

struct tool_result_row {
	const struct run_ctx *rc;
	int step;
	const char *call_id, *content;
};

static int store_tool_result(struct db *db, void *ctx)
{
	const struct tool_result_row *t = ctx;

	return thread_add_tool(db, t->rc->app_id, t->rc->run_id, t->step, t->call_id, t->content);
}

/* tool.completed / tool.failed and the result the model gets commit
 * together, so a resumed run finds every call either with both or with
 * neither: it never runs a call twice, nor loses a result. */
static int record_outcome(struct run_ctx *rc, int step, const char *call_id, const char *type,
			  json_object *payload, json_object *result)
{
	struct tool_result_row row = { rc, step, call_id,
				       json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN) };

	return emit_with(rc, store_tool_result, &row, type, payload);
}

/* A failure as the event shows it and as the model gets it (the model
 * always gets a result, so it can correct itself). Takes partial. */
static int record_failure(struct run_ctx *rc, int step, json_object *payload, const char *call_id,
			  const char *code, const char *message, json_object *partial)
{
	json_object *result = json_object_new_object();
	int ret;

	rc->tool_failures++;
	json_object_object_add(payload, "error", error_json(code, message));
	json_object_object_add(result, "error", error_json(code, message));
	if (partial)
		json_object_object_add(result, "partial_result", partial);
	ret = record_outcome(rc, step, call_id, "tool.failed", payload, result);
	json_object_put(result);
	return ret;
}

static int run_one_tool(struct run_ctx *rc, int step, const char *call_id, const char *name,
			const char *raw_args)
{
	struct strbuf summary = STRBUF_INIT;
	struct tool_error terr;
	struct json_tokener *tok;
	json_object *args = NULL, *result = NULL, *p;
	int64_t t0 = mono_ms();
	int rc_tool = -1, ret = -1;

	memset(&terr, 0, sizeof(terr));
	tok = json_tokener_new_ex(32);
	if (tok) {
		args = json_tokener_parse_ex(tok, raw_args && *raw_args ? raw_args : "{}",
					     raw_args && *raw_args ? (int)strlen(raw_args) : 2);
		if (json_tokener_get_error(tok) != json_tokener_success) {
			json_object_put(args);
			args = NULL;
		}
		json_tokener_free(tok);
	}
	p = tool_payload(call_id, name);
	json_object_object_add(p, "arguments", args ? cut_arguments(args)
						   : cut_string(raw_args ? raw_args : "",
								raw_args ? strlen(raw_args) : 0, ARG_CUT));
	ret = emit(rc, "tool.started", p);
	json_object_put(p);
	if (ret < 0)
		goto out; /* not announced: not run */

	if (!args || !json_object_is_type(args, json_type_object)) {
		tool_error_set(&terr, "invalid_arguments", "the arguments are not a JSON object");
	} else if (!tool_enabled(&rc->profile, name)) {
		tool_error_set(&terr, "unknown_tool", "tool '%.100s' is not available", name);
	} else if (!strcmp(name, "run_command")) {
		rc->commands++;
		rc_tool = cmdtool_run(&rc->policy, &rc->sandbox, &rc->ws, args, rc->cancel, &result,
				      &summary, &terr);
	} else if (filetool_exists(name)) {
		rc_tool = filetool_call(&rc->ws, name, args, &result, &summary, &terr);
		if (rc_tool == 0 && (!strcmp(name, "write_file") || !strcmp(name, "rename_file")))
			rc->files_written++;
		if (rc_tool == 0 && !strcmp(name, "delete_file"))
			rc->files_deleted++;
	} else {
		tool_error_set(&terr, "unknown_tool", "there is no tool named '%.100s'", name);
	}
	utf8_trim(terr.message);
	p = tool_payload(call_id, name);
	json_object_object_add(p, "duration_ms", json_object_new_int64(mono_ms() - t0));
	if (rc_tool == 0) {
		json_object_object_add(p, "summary", json_object_new_string(summary.buf));
		ret = record_outcome(rc, step, call_id, "tool.completed", p, result);
		json_object_put(result);
	} else {
		ret = record_failure(rc, step, p, call_id, terr.code, terr.message, result);
	}
	json_object_put(p);
out:
	json_object_put(args);
	strbuf_release(&summary);
	return ret;
}

/* 1 when an earlier attempt announced this call (tool.started) and died
 * before its outcome, 0 when it never started, -1 on a database error.
 * Providers that send no ids get "call_<n>" per response, so one id can
 * recur in a run: it counts starts against outcomes. */
static int started_without_outcome(struct run_ctx *rc, const char *call_id)
{
	struct db_result r;
	int64_t open;

	if (db_query(&rc->db, &r, "SELECT COALESCE(SUM(type = 'tool.started'), 0) - "
				  "COALESCE(SUM(type <> 'tool.started'), 0) FROM agent_run_events "
				  "WHERE run_id = ? AND type IN ('tool.started', 'tool.completed', 'tool.failed') "
				  "AND JSON_VALUE(payload, '$.call_id') = ?", "is", rc->run_id, call_id) < 0)
		return -1;
	open = db_int(&r, 0, 0);
	db_result_free(&r);
	return open > 0;
}

/* A call that was under way when an earlier attempt died: it may have run
 * partly, so running it again could do twice what the model asked once.
 * The model learns it was interrupted and decides. */
static int record_interrupted(struct run_ctx *rc, int step, const char *call_id, const char *name)
{
	json_object *p = tool_payload(call_id, name);
	int ret;

	ret = record_failure(rc, step, p, call_id, "interrupted",
			     "the runner stopped while this call ran; it was not run again and may have "
			     "done part of its work", NULL);
	json_object_put(p);
	return ret;
}

/* Runs the calls of one response in order; 0, or -1 once the run must stop
 * (cancel, lost lease, failed write: see stopping()). resumed: the calls
 * an earlier attempt left without a result. */
static int run_tool_calls(struct run_ctx *rc, json_object *calls, int step, int resumed)
{
	size_t i;

	for (i = 0; i < json_object_array_length(calls); i++) {
		json_object *call = json_object_array_get_idx(calls, i), *fn, *v;
		const char *id = "", *name = "", *args = "";
		int started = 0;

		if (stopping(rc))
			return -1;
		if (json_object_object_get_ex(call, "id", &v))
			id = json_object_get_string(v);
		if (json_object_object_get_ex(call, "function", &fn)) {
			if (json_object_object_get_ex(fn, "name", &v))
				name = json_object_get_string(v);
			if (json_object_object_get_ex(fn, "arguments", &v))
				args = json_object_get_string(v);
		}
		if (resumed && (started = started_without_outcome(rc, id)) < 0) {
			rc->db_failed = 1;
			return -1;
		}
		if ((started ? record_interrupted(rc, step, id, name) : run_one_tool(rc, step, id, name, args)) < 0)
			return -1;
	}
	return 0;
}

/* ---- the model step ---------------------------------------------------- */

/* NULL when the history cannot be read: a request without it would have
 * the model answer a conversation it cannot see. */
static json_object *build_request(struct run_ctx *rc)
{
	json_object *req, *msgs = json_object_new_array(), *sys, *tools;
	const char *const *enabled = (const char *const *)rc->profile.tools;

	sys = json_object_new_object();
	json_object_object_add(sys, "role", json_object_new_string("system"));
	json_object_object_add(sys, "content", json_object_new_string(rc->profile.system_prompt));
	json_object_array_add(msgs, sys);
	if (thread_load_history(&rc->db, rc->app_id, rc->cfg->history_budget_bytes, msgs) < 0) {
		log_error("run %lld: cannot read the conversation: %s", (long long)rc->run_id, rc->db.errmsg);
		json_object_put(msgs);
		return NULL;
	}
	req = json_object_new_object();
	json_object_object_add(req, "messages", msgs);
	tools = json_object_new_array();
	filetool_add_schemas(tools, enabled);
	if (tool_enabled(&rc->profile, "run_command"))
		cmdtool_add_schema(tools);
	json_object_object_add(req, "tools", tools);
	json_object_object_add(req, "temperature", json_object_new_double(rc->profile.temperature));
	json_object_object_add(req, "max_tokens", json_object_new_int(rc->profile.max_output_tokens));
	return req;
}

static json_object *calls_json(const struct model_response *resp)
{
	json_object *arr = json_object_new_array();
	size_t i;

	for (i = 0; i < resp->ncalls; i++) {
		json_object *c = json_object_new_object(), *fn = json_object_new_object();

		json_object_object_add(c, "id", json_object_new_string(resp->calls[i].id));
		json_object_object_add(c, "type", json_object_new_string("function"));
		json_object_object_add(fn, "name", json_object_new_string(resp->calls[i].name ? resp->calls[i].name : ""));
		json_object_object_add(fn, "arguments", json_object_new_string(resp->calls[i].arguments.buf));
		json_object_object_add(c, "function", fn);
		json_object_array_add(arr, c);
	}
	return arr;
}

struct assistant_row {
	const struct run_ctx *rc;
	int step;
	const struct model_response *resp;
	json_object *calls; /* NULL: none kept */
};

/* The response and its usage: one step done, in one transaction. */
static int store_assistant(struct db *db, void *ctx)
{
	const struct assistant_row *a = ctx;
	const struct model_response *resp = a->resp;

	if (thread_add_assistant(db, a->rc->app_id, a->rc->run_id, a->step, resp->content.buf, a->calls) < 0)
		return -1;
	return db_exec(db, "UPDATE agent_runs SET prompt_tokens = prompt_tokens + ?, "
			   "completion_tokens = completion_tokens + ?, steps = steps + 1 WHERE id = ?",
		       "iii", (int64_t)(resp->has_usage ? resp->prompt_tokens : 0),
		       (int64_t)(resp->has_usage ? resp->completion_tokens : 0), a->rc->run_id) < 0 ? -1 : 0;
}

/*
 * finish_reason decides what a response is worth: "stop" and "tool_calls"
 * (and providers' other names for a natural end) let the run go on with
 * its calls or end it; "length" is a response cut at max_output_tokens,
 * whose text is unfinished and whose last call's arguments may be cut
 * anywhere, so none of its calls runs; "content_filter" is the provider's
 * refusal. Returns the error code that ends the run, or NULL.
 */
static const char *response_cut(const struct run_ctx *rc, const struct model_response *resp,
				struct strbuf *why)
{
	if (!strcmp(resp->finish_reason, "length")) {
		strbuf_addf(why, "the model's %s was cut off at its output limit (max_output_tokens %d)%s",
			    resp->ncalls ? "tool call" : "answer", rc->profile.max_output_tokens,
			    resp->ncalls ? "; the call was not run" : "");
		return "model_output_truncated";
	}
	if (!strcmp(resp->finish_reason, "content_filter")) {
		strbuf_addstr(why, "the provider's content filter stopped the model's response");
		return "content_filtered";
	}
	return NULL;
}

/* ---- endings ------------------------------------------------------------- */

/* After a rollback's restore: if the draft moved on since the run began (an
 * earlier attempt recorded the run's revision before its runner died), the
 * files are the base's but the draft is the run's. Record the rollback as
 * a restore then, so the draft (what publish builds) matches the files
 * again; with the draft still at the base nothing differs and nothing is
 * recorded. */
static int record_rollback(struct run_ctx *rc, struct strbuf *err)
{
	struct snapshot_req req;
	struct snapshot_result res;
	struct strbuf label = STRBUF_INIT;
	int ret;

	memset(&req, 0, sizeof(req));
	memset(&res, 0, sizeof(res));
	strbuf_addf(&label, "Rollback of run %lld", (long long)rc->run_id);
	req.app_id = rc->app_id;
	req.origin = "restore";
	req.ckpt_type = "restore";
	req.label = label.buf;
	req.summary = "the cancelled run's changes undone";
	req.only_if_changed = 1;
	ret = app_snapshot(&rc->db, &rc->ckpts, rc->cfg, &req, &res, err);
	if (ret == 0 && res.changed)
		log_info("run %lld: rollback recorded as revision %lld", (long long)rc->run_id,
			 (long long)res.revision_id);
	snapshot_result_release(&res);
	strbuf_release(&label);
	return ret;
}

/* Puts the workspace back to what it was before the run: its base
 * checkpoint, or no files at all for an app that had none. */
static int rollback_workspace(struct run_ctx *rc, struct strbuf *err)
{
	struct strbuf e2 = STRBUF_INIT;
	struct ckpt_row ck;
	int ret;

	if (rc->base_checkpoint_id > 0) {
		if (ckpt_row_load(&rc->db, rc->app_id, rc->base_checkpoint_id, &ck) != 1) {
			strbuf_addstr(err, "the checkpoint from before the run cannot be read");
			return -1;
		}
		ret = app_workspace_restore(rc->cfg, &rc->ckpts, rc->app_id, &ck, err);
	} else if (rc->base_revision_id <= 0) {
		ret = app_workspace_restore(rc->cfg, &rc->ckpts, rc->app_id, NULL, err);
	} else {
		strbuf_addstr(err, "no checkpoint from before the run");
		return -1;
	}
	if (ret < 0)
		return -1;
	/* the swap replaced the folder our dirfd points into */
	if (rc->ws_open) {
		workspace_close(&rc->ws);
		rc->ws_open = app_workspace_open(rc->cfg, rc->app_id, &rc->ws, &e2) == 0;
	}
	strbuf_release(&e2);
	return record_rollback(rc, err);
}

/* What differs from the run's base revision now; an empty list (logged)
 * when the workspace cannot be read. */
static json_object *run_changed_files(struct run_ctx *rc)
{
	struct strbuf err = STRBUF_INIT;
	json_object *arr;

	if (app_changed_files(&rc->db, rc->cfg, rc->app_id, rc->base_revision_id,
			      rc->ws_open ? &rc->ws : NULL, &arr, &err) < 0) {
		log_error("run %lld: cannot list the changed files: %s", (long long)rc->run_id, err.buf);
		arr = json_object_new_array();
	}
	strbuf_release(&err);
	return arr;
}

/* 1 when the cancel asked for a rollback, 0 not, -1 database error. */
static int cancel_mode_is_rollback(struct run_ctx *rc)
{
	struct db_result r;
	int yes;

	if (db_query(&rc->db, &r, "SELECT cancel_mode = 'rollback' FROM agent_runs WHERE id = ?", "i",
		     rc->run_id) < 0)
		return -1;
	yes = db_int(&r, 0, 0) == 1;
	db_result_free(&r);
	return yes;
}

static int finish_failed(struct run_ctx *rc, const char *status, const char *code, const char *message)
{
	json_object *p;
	int rolled_back = 0, rollback;

	flush_delta(rc);
	if (rc->lease_lost || rc->db_failed)
		return rc->db_failed ? -1 : 0;
	/* Undoing needs the workspace to itself: only under the app lock. */
	if (!strcmp(status, "cancelled") && rc->lock >= 0) {
		struct strbuf err = STRBUF_INIT;

		if ((rollback = cancel_mode_is_rollback(rc)) < 0) {
			rc->db_failed = 1;
			return -1;
		}
		if (rollback && rollback_workspace(rc, &err) == 0)
			rolled_back = 1;
		else if (rollback)
			log_error("run %lld: rollback failed: %s", (long long)rc->run_id, err.buf);
		strbuf_release(&err);
	}
	p = json_object_new_object();
	json_object_object_add(p, "status", json_object_new_string(status));
	json_object_object_add(p, "error", error_json(code, message));
	json_object_object_add(p, "changed_files", run_changed_files(rc));
	json_object_object_add(p, "rolled_back", json_object_new_boolean(rolled_back));
	json_object_object_add(p, "base_checkpoint_id",
			       rc->base_checkpoint_id > 0 ? json_object_new_int64(rc->base_checkpoint_id) : NULL);
	judge_write(rc, run_finish(&rc->db, rc->run_id, rc->runner_id, status, code, message, "run.failed", p),
		    "run.failed");
	json_object_put(p);
	return rc->db_failed ? -1 : 0;
}

/* 1 the run has an event of this type, 0 not, -1 database error. */
static int event_exists(struct run_ctx *rc, const char *type)
{
	struct db_result r;
	int yes;

	if (db_query(&rc->db, &r, "SELECT 1 FROM agent_run_events WHERE run_id = ? AND type = ? LIMIT 1",
		     "is", rc->run_id, type) < 0)
		return -1;
	yes = r.nrows > 0;
	db_result_free(&r);
	return yes;
}

static void run_summary(const struct run_ctx *rc, struct strbuf *out)
{
	strbuf_addf(out, "%u file change%s", rc->files_written + rc->files_deleted,
		    rc->files_written + rc->files_deleted == 1 ? "" : "s");
	if (rc->commands)
		strbuf_addf(out, ", %u command%s", rc->commands, rc->commands == 1 ? "" : "s");
	if (rc->tool_failures)
		strbuf_addf(out, ", %u failed tool call%s", rc->tool_failures, rc->tool_failures == 1 ? "" : "s");
}

struct run_result_ids {
	int64_t run_id, revision_id, checkpoint_id;
};

static int store_run_result(struct db *db, void *ctx)
{
	const struct run_result_ids *ids = ctx;

	return db_exec(db, "UPDATE agent_runs SET revision_id = ?, checkpoint_id = ? WHERE id = ?", "iii",
		       ids->revision_id, ids->checkpoint_id, ids->run_id) < 0 ? -1 : 0;
}

/* revision.created (with the run's result ids) and checkpoint.created,
 * each unless an earlier attempt sent it. res holds the revision's paths
 * when this attempt made it; a revision an earlier attempt made has them
 * read back from its manifest and its parent's. */
static int announce_revision(struct run_ctx *rc, struct snapshot_result *res, const char *label,
			     const char *summary)
{
	struct run_result_ids ids = { rc->run_id, res->revision_id, res->checkpoint_id };
	json_object *p;
	int have;

	if ((have = event_exists(rc, "revision.created")) < 0)
		goto dberr;
	if (!have) {
		if (!res->added && revision_delta(&rc->db, rc->app_id, res->revision_id, res->parent_id, res) < 0)
			goto dberr;
		p = json_object_new_object();
		json_object_object_add(p, "revision_id", json_object_new_int64(res->revision_id));
		json_object_object_add(p, "parent_id", res->parent_id ? json_object_new_int64(res->parent_id) : NULL);
		json_object_object_add(p, "added", json_object_get(res->added));
		json_object_object_add(p, "changed", json_object_get(res->changed_paths));
		json_object_object_add(p, "deleted", json_object_get(res->deleted));
		have = emit_with(rc, store_run_result, &ids, "revision.created", p);
		json_object_put(p);
		if (have < 0)
			return -1;
	}
	if ((have = event_exists(rc, "checkpoint.created")) < 0)
		goto dberr;
	if (!have) {
		p = json_object_new_object();
		json_object_object_add(p, "checkpoint_id", json_object_new_int64(res->checkpoint_id));
		json_object_object_add(p, "revision_id", json_object_new_int64(res->revision_id));
		json_object_object_add(p, "label", json_object_new_string(label));
		json_object_object_add(p, "summary", json_object_new_string(summary));
		have = emit(rc, "checkpoint.created", p);
		json_object_put(p);
		if (have < 0)
			return -1;
	}
	return 0;
dberr:
	log_error("run %lld: cannot read the run's revision: %s", (long long)rc->run_id, rc->db.errmsg);
	rc->db_failed = 1;
	return -1;
}

static int finish_completed(struct run_ctx *rc, int steps, const char *outcome, const char *input)
{
	struct snapshot_req req = { 0 };
	struct snapshot_result res;
	struct strbuf err = STRBUF_INIT, label = STRBUF_INIT, summary = STRBUF_INIT;
	struct db_result r;
	json_object *p, *usage;
	size_t line;

	memset(&res, 0, sizeof(res));
	if (flush_delta(rc) < 0 || rc->lease_lost || rc->db_failed)
		goto out;
	line = strcspn(input, "\n");
	strbuf_add(&label, input, ws_utf8_prefix(input, line, 80));
	if (label.len < line)
		strbuf_addstr(&label, "…");
	/* what the run did, in one line, from its durable events (so a resumed
	 * attempt still names what earlier ones did); counts if that fails */
	if (ckpt_summary_of_run(&rc->db, rc->run_id, &summary) < 0 || !summary.len) {
		strbuf_reset(&summary);
		run_summary(rc, &summary);
	}
	/* An earlier attempt may already have recorded the revision. */
	if (db_query(&rc->db, &r, "SELECT id, checkpoint_id, parent_id FROM app_revisions WHERE run_id = ? "
				  "ORDER BY id DESC LIMIT 1", "i", rc->run_id) < 0) {
		rc->db_failed = 1;
		goto out;
	}
	if (r.nrows == 1) {
		res.changed = 1;
		res.revision_id = db_int(&r, 0, 0);
		res.checkpoint_id = db_int(&r, 0, 1);
		res.parent_id = db_int(&r, 0, 2);
	}
	db_result_free(&r);
	if (!res.revision_id) {
		req.app_id = rc->app_id;
		req.run_id = rc->run_id;
		req.origin = "run";
		req.ckpt_type = "auto";
		req.label = label.buf;
		req.summary = summary.buf;
		req.only_if_changed = 1;
		if (app_snapshot(&rc->db, &rc->ckpts, rc->cfg, &req, &res, &err) < 0) {
			log_error("run %lld: snapshot failed: %s", (long long)rc->run_id, err.buf);
			finish_failed(rc, "failed", "checkpoint_failed",
				      "the run's changes could not be recorded; they are still in the workspace");
			goto out;
		}
		/* the revision is the draft now, no event says so yet */
		ckpt_crash_point("run_recorded", 1);
	}
	if (res.changed && announce_revision(rc, &res, label.buf, summary.buf) < 0)
		goto out;
	p = json_object_new_object();
	json_object_object_add(p, "status", json_object_new_string("completed"));
	json_object_object_add(p, "changed", json_object_new_boolean(res.changed));
	json_object_object_add(p, "revision_id", res.changed ? json_object_new_int64(res.revision_id) : NULL);
	json_object_object_add(p, "checkpoint_id", res.changed ? json_object_new_int64(res.checkpoint_id) : NULL);
	json_object_object_add(p, "steps", json_object_new_int(steps));
	json_object_object_add(p, "outcome", json_object_new_string(outcome));
	if (!res.changed)
		json_object_object_add(p, "message", json_object_new_string("the run changed no files"));
	usage = json_object_new_object();
	if (db_query(&rc->db, &r, "SELECT prompt_tokens, completion_tokens FROM agent_runs WHERE id = ?", "i",
		     rc->run_id) < 0) {
		json_object_put(usage);
		json_object_put(p);
		rc->db_failed = 1;
		goto out;
	}
	json_object_object_add(usage, "prompt_tokens", json_object_new_int64(db_int(&r, 0, 0)));
	json_object_object_add(usage, "completion_tokens", json_object_new_int64(db_int(&r, 0, 1)));
	json_object_object_add(usage, "total_tokens", json_object_new_int64(db_int(&r, 0, 0) + db_int(&r, 0, 1)));
	db_result_free(&r);
	json_object_object_add(p, "usage", usage);
	judge_write(rc, run_finish(&rc->db, rc->run_id, rc->runner_id, "completed", NULL, NULL, "run.completed", p),
		    "run.completed");
	json_object_put(p);
out:
	snapshot_result_release(&res);
	strbuf_release(&err);
	strbuf_release(&label);
	strbuf_release(&summary);
	return rc->db_failed ? -1 : 0;
}

/* ---- setup ----------------------------------------------------------------- */

static int run_setup(struct run_ctx *rc, struct strbuf *err)
{
	struct db_result r;

	if (db_connect(&rc->db, rc->cfg) < 0) {
		strbuf_addf(err, "database: %s", rc->db.errmsg);
		return -1;
	}
	if (db_query(&rc->db, &r, "SELECT app_id, attempt, handbacks, base_revision_id, base_checkpoint_id "
				  "FROM agent_runs WHERE id = ?", "i", rc->run_id) < 0 || r.nrows != 1) {
		strbuf_addf(err, "run %lld not found", (long long)rc->run_id);
		db_result_free(&r);
		return -1;
	}
	rc->app_id = db_int(&r, 0, 0);
	rc->attempt = db_int(&r, 0, 1);
	rc->handbacks = db_int(&r, 0, 2);
	rc->base_revision_id = db_int(&r, 0, 3);
	rc->base_checkpoint_id = db_int(&r, 0, 4);
	db_result_free(&r);
	/* a fault for the tests (docs/PROOF.md), in a run's first attempt only,
	 * so that the attempt that resumes it goes through */
	if (rc->attempt == 1)
		db_arm_commit_fault(&rc->db, "KILN_FAULT_RUN_COMMIT");
	if (app_ckpt_store_open(rc->cfg, &rc->ckpts, err) < 0 ||
	    cmdpolicy_load(&rc->policy, rc->cfg->command_policy, err) < 0 ||
	    agent_profile_load(rc->cfg, rc->app_id, &rc->profile, err) < 0)
		return -1;
	sandbox_config_default(&rc->sandbox);
	rc->sandbox.run_uid = (uid_t)rc->cfg->sandbox_uid;
	rc->sandbox.run_gid = (gid_t)rc->cfg->sandbox_gid;
	rc->sandbox.mem_bytes = (uint64_t)rc->cfg->sandbox_mem_mb << 20;
	rc->sandbox.cpu_seconds = (uint64_t)rc->cfg->sandbox_cpu_s;
	rc->sandbox.max_procs = (uint64_t)rc->cfg->sandbox_max_procs;
	model_config_defaults(&rc->model);
	rc->model.base_url = rc->cfg->model_base_url;
	rc->model.api_key = rc->cfg->model_api_key;
	rc->model.model = rc->profile.model ? rc->profile.model : rc->cfg->model;
	rc->model.connect_timeout_ms = (long)rc->cfg->model_connect_timeout_ms;
	rc->model.idle_timeout_ms = (long)rc->cfg->model_idle_timeout_ms;
	rc->model.total_timeout_ms = (long)rc->cfg->model_total_timeout_ms;
	rc->model.max_retries = (int)rc->cfg->model_max_retries;
	rc->model.retry_base_ms = (long)rc->cfg->model_retry_base_ms;
	rc->model.retry_max_total_ms = (long)rc->cfg->model_retry_budget_ms;
	return 0;
}

/*
 * The app lock first, then the workspace: a restore swaps the workspace
 * folder under its lock, so a workspace opened before the lock could be a
 * deleted tree. A cancel stops the wait, except that a rollback must wait
 * on: undoing needs the lock. 0, or -1 with errno (ECANCELED, ETIMEDOUT,
 * other) and err.
 */
static int lock_workspace(struct run_ctx *rc, struct strbuf *err)
{
	int saved;

	rc->lock = app_lock_wait(rc->cfg, rc->app_id, rc->cancel, LOCK_WAIT_MS);
	saved = errno;
	if (rc->lock < 0 && saved == ECANCELED && cancel_mode_is_rollback(rc) == 1) {
		rc->lock = app_lock_wait(rc->cfg, rc->app_id, NULL, LOCK_WAIT_MS);
		saved = errno;
	}
	if (rc->lock < 0) {
		strbuf_addf(err, "the app's workspace lock: %s", strerror(saved));
		errno = saved;
		return -1;
	}
	/* a restore killed mid-swap may still hold ignored folders aside, an
	 * upload killed mid-rename a half-moved set: the run must not start
	 * from a mix */
	if (app_workspace_recover(rc->cfg, rc->app_id, err) < 0) {
		errno = EIO;
		return -1;
	}
	if (app_workspace_open(rc->cfg, rc->app_id, &rc->ws, err) < 0) {
		errno = EIO;
		return -1;
	}
	rc->ws_open = 1;
	return 0;
}

struct user_row {
	const struct run_ctx *rc;
	const char *text;
};

static int store_user(struct db *db, void *ctx)
{
	const struct user_row *u = ctx;

	return thread_add_user(db, u->rc->app_id, u->rc->run_id, u->text);
}

/* Before the first step: a checkpoint of changes made outside any run
 * (uploads), and the run's restore point: the draft revision, whose files
 * the workspace now holds, and its checkpoint. */
static int pre_run_checkpoint(struct run_ctx *rc, struct strbuf *err)
{
	struct snapshot_req req = { 0 };
	struct snapshot_result res;
	struct db_result r;

	req.app_id = rc->app_id;
	req.origin = "manual";
	req.ckpt_type = "manual";
	req.label = "Changes made outside a run";
	req.summary = "the workspace differed from the draft when a run started";
	req.only_if_changed = 1;
	if (app_snapshot(&rc->db, &rc->ckpts, rc->cfg, &req, &res, err) < 0)
		return -1;
	snapshot_result_release(&res);
	if (db_query(&rc->db, &r, "SELECT a.draft_revision_id, v.checkpoint_id FROM apps a "
				  "LEFT JOIN app_revisions v ON v.id = a.draft_revision_id WHERE a.id = ?",
		     "i", rc->app_id) < 0 || r.nrows != 1) {
		strbuf_addf(err, "database: %s", rc->db.errmsg);
		db_result_free(&r);
		return -1;
	}
	rc->base_revision_id = db_int(&r, 0, 0);
	rc->base_checkpoint_id = db_int(&r, 0, 1);
	db_result_free(&r);
	if (db_exec(&rc->db, "UPDATE agent_runs SET base_checkpoint_id = NULLIF(?, 0), "
			     "base_revision_id = NULLIF(?, 0) WHERE id = ?",
		    "iii", rc->base_checkpoint_id, rc->base_revision_id, rc->run_id) < 0) {
		strbuf_addf(err, "database: %s", rc->db.errmsg);
		return -1;
	}
	return 0;
}

static void run_teardown(struct run_ctx *rc)
{
	if (rc->ws_open)
		workspace_close(&rc->ws);
	app_unlock(rc->lock);
	cmdpolicy_release(&rc->policy);
	agent_profile_release(&rc->profile);
	ckpt_store_close(&rc->ckpts);
	db_close(&rc->db);
	strbuf_release(&rc->pending);
}

/* The end of an attempt that stopped early: 0 when the run is no longer
 * ours, -1 when a write failed (the runner resumes it), else the cancel. */
static int end_stopped(struct run_ctx *rc)
{
	if (rc->db_failed)
		return -1;
	if (rc->lease_lost)
		return 0;
	return finish_failed(rc, "cancelled", "cancelled", "the run was cancelled");
}

/* The model loop from step on; the run's terminal event on the way out. */
static int run_steps(struct run_ctx *rc, int step, const char *input)
{
	const char *outcome = "stop";

	for (;;) {
		struct model_callbacks cb = { on_delta, should_abort, on_retry, rc };
		struct model_response resp;
		struct model_error merr;
		struct assistant_row row;
		struct strbuf why = STRBUF_INIT;
		const char *cut;
		json_object *req, *calls;
		int rc_model;

		if (step >= rc->profile.max_steps) {
			outcome = "max_steps";
			break;
		}
		if (stopping(rc))
			return end_stopped(rc);
		rc->message_index = step;
		req = build_request(rc);
		if (!req) {
			rc->db_failed = 1;
			return -1;
		}
		memset(&merr, 0, sizeof(merr));
		rc_model = model_chat_stream(&rc->model, req, &cb, &resp, &merr);
		json_object_put(req);
		if (rc_model < 0) {
			model_response_release(&resp);
			if (stopping(rc) || !strcmp(merr.code, "cancelled"))
				return end_stopped(rc);
			return finish_failed(rc, "failed", merr.code[0] ? merr.code : "model_error",
					     merr.message[0] ? merr.message : "the model request failed");
		}
		if (flush_delta(rc) < 0) {
			model_response_release(&resp);
			return end_stopped(rc);
		}
		step++;
		cut = response_cut(rc, &resp, &why);
		/* a cut response is kept as text only: its calls never ran */
		calls = cut ? NULL : calls_json(&resp);
		row = (struct assistant_row){ rc, step, &resp, calls };
		rc_model = emit_with(rc, store_assistant, &row, NULL, NULL);
		model_response_release(&resp);
		if (rc_model < 0) {
			json_object_put(calls);
			strbuf_release(&why);
			return end_stopped(rc);
		}
		if (cut) {
			rc_model = finish_failed(rc, "failed", cut, why.buf);
			strbuf_release(&why);
			return rc_model;
		}
		strbuf_release(&why);
		if (!json_object_array_length(calls)) {
			json_object_put(calls);
			break;
		}
		rc_model = run_tool_calls(rc, calls, step, 0);
		json_object_put(calls);
		if (rc_model < 0)
			return end_stopped(rc);
	}
	return finish_completed(rc, step, outcome, input);
}

/* A lock that could not be taken ends the run without touching the
 * workspace. */
static int end_unlocked(struct run_ctx *rc, int lock_errno)
{
	struct strbuf msg = STRBUF_INIT;
	int ret;

	if (lock_errno == ECANCELED)
		return finish_failed(rc, "cancelled", "cancelled", "the run was cancelled");
	if (lock_errno == ETIMEDOUT)
		strbuf_addf(&msg, "another writer held the app's workspace for over %d s", LOCK_WAIT_MS / 1000);
	else
		strbuf_addstr(&msg, "the app's workspace could not be opened (or recovered after a crash) "
			    "on the runner");
	ret = finish_failed(rc, "failed", lock_errno == ETIMEDOUT ? "workspace_busy" : "setup_failed", msg.buf);
	strbuf_release(&msg);
	return ret;
}

int agent_execute_run(struct config *cfg, int64_t run_id, const char *runner_id,
		      volatile sig_atomic_t *cancel)
{
	struct run_ctx rc;
	struct run_state st;
	struct strbuf err = STRBUF_INIT, input = STRBUF_INIT;
	struct db_result r;
	int ret = -1, step, cancelled_at_start;

	memset(&rc, 0, sizeof(rc));
	memset(&st, 0, sizeof(st));
	rc.cfg = cfg;
	rc.run_id = run_id;
	rc.runner_id = runner_id;
	rc.cancel = cancel;
	rc.lock = -1;
	strbuf_init(&rc.pending);
	rc.last_flush_ms = mono_ms();
	if (run_setup(&rc, &err) < 0) {
		log_error("run %lld: setup failed: %s", (long long)run_id, err.buf);
		if (rc.db.conn && rc.app_id)
			ret = finish_failed(&rc, "failed", "setup_failed", "the run could not be set up on the runner");
		goto out;
	}
	/* One writer of the workspace at a time: restores and uploads wait. */
	if (lock_workspace(&rc, &err) < 0) {
		int lock_errno = errno;

		log_error("run %lld: %s", (long long)run_id, err.buf);
		ret = end_unlocked(&rc, lock_errno);
		goto out;
	}
	if (db_query(&rc.db, &r, "SELECT input, cancel_requested FROM agent_runs WHERE id = ?", "i", run_id) < 0)
		goto out;
	strbuf_addstr(&input, r.nrows ? db_val(&r, 0, 0) : "");
	cancelled_at_start = r.nrows && db_int(&r, 0, 1);
	db_result_free(&r);
	if (cancelled_at_start || *cancel) {
		ret = finish_failed(&rc, "cancelled", "cancelled", "the run was cancelled");
		goto out;
	}
	if (rc.attempt - rc.handbacks > cfg->runner_max_attempts) {
		struct strbuf msg = STRBUF_INIT;

		/* Claimed only to be ended: runner_max_attempts runners died
		 * driving it. The ending lists its changes like any other. */
		strbuf_addf(&msg, "the run's runner stopped %lld times; giving up",
			    (long long)(rc.attempt - rc.handbacks - 1));
		ret = finish_failed(&rc, "failed", "runner_lost", msg.buf);
		strbuf_release(&msg);
		goto out;
	}
	if (thread_run_state(&rc.db, run_id, &st) < 0)
		goto out;
	/* The user message is stored right after the pre-run checkpoint: once
	 * it is, no later attempt takes that checkpoint again (the run's own
	 * changes are no "changes made outside a run"). */
	if (!st.has_user) {
		struct user_row u = { &rc, input.buf };

		if (pre_run_checkpoint(&rc, &err) < 0) {
			log_error("run %lld: pre-run checkpoint: %s", (long long)run_id, err.buf);
			ret = finish_failed(&rc, "failed", "checkpoint_failed",
					    "the checkpoint before the run could not be taken");
			goto out;
		}
		if (emit_with(&rc, store_user, &u, NULL, NULL) < 0) {
			ret = end_stopped(&rc);
			goto out;
		}
	}
	if (rc.attempt > 1) {
		json_object *p = json_object_new_object();

		/* the text of a response cut short by the dead runner restarts */
		rc.restart_next = 1;
		json_object_object_add(p, "input", json_object_new_string(input.buf));
		json_object_object_add(p, "attempt", json_object_new_int((int)rc.attempt));
		json_object_object_add(p, "resumed", json_object_new_boolean(1));
		json_object_object_add(p, "steps_done", json_object_new_int(st.steps));
		ret = emit(&rc, "run.accepted", p);
		json_object_put(p);
		if (ret < 0) {
			ret = end_stopped(&rc);
			goto out;
		}
	}
	step = st.steps;
	rc.message_index = step;
	/* Finish the tool calls an earlier attempt left half done. */
	if (st.pending && run_tool_calls(&rc, st.pending, step, 1) < 0) {
		ret = end_stopped(&rc);
		goto out;
	}
	if (st.finished && st.steps > 0) {
		ret = finish_completed(&rc, step, "stop", input.buf);
		goto out;
	}
	ret = run_steps(&rc, step, input.buf);
out:
	run_state_release(&st);
	run_teardown(&rc);
	strbuf_release(&err);
	strbuf_release(&input);
	return ret;
}
