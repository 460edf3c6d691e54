/* agent.c - the coding-agent loop of one run (see agent.h). */
#include "agent.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "agent_thread.h"
#include "appstate.h"
#include "ckpt_restore.h"
#include "ckpt_store.h"
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

#define ARG_CUT 2000 /* long strings in tool.started payloads are cut */

/* Everything one run needs, in one place (nothing global). */
struct run_ctx {
	struct config *cfg;
	struct db db;
	struct ckpt_store ckpts;
	struct workspace ws;
	struct cmdpolicy policy;
	struct sandbox_config sandbox;
	struct agent_profile profile;
	struct model_config model;
	const char *runner_id;
	volatile sig_atomic_t *cancel;
	int64_t run_id, app_id, attempt, base_revision_id, base_checkpoint_id;
	int lease_lost;
	/* delta coalescing */
	struct strbuf pending;
	int64_t last_flush_ms;
	int message_index;
	int restart_next;
	int delta_failed;
	/* what the run did, for the checkpoint summary */
	unsigned files_written, files_deleted, commands, tool_failures;
	int64_t prompt_tokens, completion_tokens;
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

static int emit(struct run_ctx *rc, const char *type, json_object *payload)
{
	int64_t seq;

	if (rc->lease_lost)
		return -1;
	seq = event_append(&rc->db, rc->run_id, rc->runner_id, type, payload);
	if (seq == EVENT_LEASE_LOST) {
		log_warn("run %lld: lease lost; another runner owns it now", (long long)rc->run_id);
		rc->lease_lost = 1;
	} else if (seq < 0) {
		log_error("run %lld: cannot append %s: %s", (long long)rc->run_id, type, rc->db.errmsg);
	}
	return seq < 0 ? -1 : 0;
}

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
	if (coalesce_due(rc) && flush_delta(rc) < 0)
		rc->delta_failed = 1;
	return rc->lease_lost || *rc->cancel;
}

static int should_abort(void *ctx)
{
	struct run_ctx *rc = ctx;

	/* also the timer that flushes a delta tail while the stream pauses */
	if (coalesce_due(rc) && flush_delta(rc) < 0)
		rc->delta_failed = 1;
	return rc->lease_lost || *rc->cancel;
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

/* A string for an event, cut to ARG_CUT bytes. The cut never splits a
 * character: the database refuses invalid UTF-8, and the event with it. */
static json_object *cut_string(const char *s, size_t len)
{
	struct strbuf sb = STRBUF_INIT;
	json_object *o;

	if (len <= ARG_CUT)
		return json_object_new_string_len(s, (int)len);
	strbuf_add(&sb, s, ws_utf8_prefix(s, len, ARG_CUT));
	strbuf_addf(&sb, "… (%zu bytes)", len);
	o = json_object_new_string(sb.buf);
	strbuf_release(&sb);
	return o;
}

/* A copy of args for the tool.started payload with long strings cut. */
static json_object *cut_arguments(json_object *args)
{
	json_object *o;

	if (!args || !json_object_is_type(args, json_type_object))
		return args ? json_object_get(args) : json_object_new_object();
	o = json_object_new_object();
	json_object_object_foreach(args, k, v) {
		if (json_object_is_type(v, json_type_string))
			json_object_object_add(o, k, cut_string(json_object_get_string(v),
								(size_t)json_object_get_string_len(v)));
		else
			json_object_object_add(o, k, json_object_get(v));
	}
	return o;
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

static int run_one_tool(struct run_ctx *rc, const char *call_id, const char *name,
			const char *raw_args, json_object **result_for_model)
{
	struct strbuf summary = STRBUF_INIT;
	struct tool_error terr;
	struct json_tokener *tok;
	json_object *args = NULL, *result = NULL, *p;
	int64_t t0 = mono_ms();
	int rc_tool = -1;

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
	p = json_object_new_object();
	json_object_object_add(p, "call_id", json_object_new_string(call_id));
	json_object_object_add(p, "tool", json_object_new_string(name));
	json_object_object_add(p, "arguments", args ? cut_arguments(args)
						   : cut_string(raw_args ? raw_args : "", raw_args ? strlen(raw_args) : 0));
	emit(rc, "tool.started", p);
	json_object_put(p);

	if (!args || !json_object_is_type(args, json_type_object)) {
		tool_error_set(&terr, "invalid_arguments", "the arguments are not a JSON object");
	} else if (!tool_enabled(&rc->profile, name)) {
		tool_error_set(&terr, "unknown_tool", "tool '%.100s' is not available", name);
	} else if (!strcmp(name, "run_command")) {
		rc->commands++;
		rc_tool = cmdtool_call(&rc->policy, &rc->sandbox, rc->ws.root, args, rc->cancel, &result,
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
	p = json_object_new_object();
	json_object_object_add(p, "call_id", json_object_new_string(call_id));
	json_object_object_add(p, "tool", json_object_new_string(name));
	json_object_object_add(p, "duration_ms", json_object_new_int64(mono_ms() - t0));
	if (rc_tool == 0) {
		json_object_object_add(p, "summary", json_object_new_string(summary.buf));
		emit(rc, "tool.completed", p);
		*result_for_model = result;
	} else {
		json_object *e = json_object_new_object(), *wrap = json_object_new_object();

		rc->tool_failures++;
		json_object_object_add(e, "code", json_object_new_string(terr.code));
		json_object_object_add(e, "message", json_object_new_string(terr.message));
		json_object_object_add(p, "error", json_object_get(e));
		emit(rc, "tool.failed", p);
		/* The model always gets a result, so it can correct itself. */
		json_object_object_add(wrap, "error", e);
		if (result)
			json_object_object_add(wrap, "partial_result", result);
		*result_for_model = wrap;
	}
	json_object_put(p);
	json_object_put(args);
	strbuf_release(&summary);
	return 0;
}

static int run_tool_calls(struct run_ctx *rc, json_object *calls, int step)
{
	size_t i;

	for (i = 0; i < json_object_array_length(calls); i++) {
		json_object *call = json_object_array_get_idx(calls, i), *fn, *v;
		const char *id = "", *name = "", *args = "";
		json_object *result = NULL;

		if (*rc->cancel || rc->lease_lost)
			return -1;
		if (json_object_object_get_ex(call, "id", &v))
			id = json_object_get_string(v);
		if (json_object_object_get_ex(call, "function", &fn)) {
			if (json_object_object_get_ex(fn, "name", &v))
				name = json_object_get_string(v);
			if (json_object_object_get_ex(fn, "arguments", &v))
				args = json_object_get_string(v);
		}
		run_one_tool(rc, id, name, args, &result);
		if (rc->lease_lost)
			return -1;
		if (thread_add_tool(&rc->db, rc->app_id, rc->run_id, step, id,
				    json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN)) < 0) {
			json_object_put(result);
			return -2; /* database trouble, not a cancel */
		}
		json_object_put(result);
	}
	return 0;
}

/* ---- the model step ---------------------------------------------------- */

static json_object *build_request(struct run_ctx *rc)
{
	json_object *req = json_object_new_object(), *msgs = json_object_new_array(), *sys, *tools;
	const char *const *enabled = (const char *const *)rc->profile.tools;

	sys = json_object_new_object();
	json_object_object_add(sys, "role", json_object_new_string("system"));
	json_object_object_add(sys, "content", json_object_new_string(rc->profile.system_prompt));
	json_object_array_add(msgs, sys);
	thread_load_history(&rc->db, rc->app_id, rc->cfg->history_budget_bytes, msgs);
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

static int record_usage(struct run_ctx *rc, const struct model_response *resp)
{
	if (resp->has_usage) {
		rc->prompt_tokens += resp->prompt_tokens;
		rc->completion_tokens += resp->completion_tokens;
	}
	return db_exec(&rc->db, "UPDATE agent_runs SET prompt_tokens = prompt_tokens + ?, "
				"completion_tokens = completion_tokens + ?, steps = steps + 1 WHERE id = ?",
		       "iii", (int64_t)(resp->has_usage ? resp->prompt_tokens : 0),
		       (int64_t)(resp->has_usage ? resp->completion_tokens : 0), rc->run_id) < 0 ? -1 : 0;
}

/* ---- endings ------------------------------------------------------------- */

static json_object *error_json(const char *code, const char *message)
{
	json_object *e = json_object_new_object();

	json_object_object_add(e, "code", json_object_new_string(code));
	json_object_object_add(e, "message", json_object_new_string(message));
	return e;
}

/* Paths that differ between the draft revision and the workspace now. */
static json_object *changed_files(struct run_ctx *rc)
{
	struct manifest draft, now;
	struct manifest_delta d;
	struct tool_error terr;
	struct db_result r;
	json_object *arr = json_object_new_array();
	int64_t draft_id = 0;
	size_t i;

	if (db_query(&rc->db, &r, "SELECT draft_revision_id FROM apps WHERE id = ?", "i", rc->app_id) == 0) {
		draft_id = db_int(&r, 0, 0);
		db_result_free(&r);
	}
	manifest_init(&now);
	if (revision_manifest(&rc->db, rc->app_id, draft_id, &draft, NULL) >= 0 &&
	    manifest_build(&rc->ws, &now, &terr) == 0 && manifest_diff(&draft, &now, &d) == 0) {
		for (i = 0; i < d.nadded; i++)
			json_object_array_add(arr, json_object_new_string(d.added[i]));
		for (i = 0; i < d.nchanged; i++)
			json_object_array_add(arr, json_object_new_string(d.changed[i]));
		for (i = 0; i < d.ndeleted; i++)
			json_object_array_add(arr, json_object_new_string(d.deleted[i]));
		manifest_delta_release(&d);
	}
	manifest_release(&draft);
	manifest_release(&now);
	return arr;
}

/* Puts the workspace back to the checkpoint taken before the run. */
static int rollback_workspace(struct run_ctx *rc, struct strbuf *err)
{
	struct strbuf e2 = STRBUF_INIT;
	struct ckpt_row ck;
	int ret;

	if (rc->base_checkpoint_id <= 0 || ckpt_row_load(&rc->db, rc->app_id, rc->base_checkpoint_id, &ck) != 1) {
		strbuf_addstr(err, "no checkpoint from before the run");
		return -1;
	}
	if (app_workspace_restore(rc->cfg, &rc->ckpts, rc->app_id, &ck, err) < 0)
		return -1;
	/* the swap replaced the folder our dirfd points into */
	workspace_close(&rc->ws);
	ret = app_workspace_open(rc->cfg, rc->app_id, &rc->ws, &e2);
	strbuf_release(&e2);
	return ret;
}

static int finish_failed(struct run_ctx *rc, const char *status, const char *code, const char *message)
{
	json_object *p = json_object_new_object();
	struct db_result r;
	int rolled_back = 0;
	int64_t seq;

	flush_delta(rc);
	if (!strcmp(status, "cancelled") &&
	    db_query(&rc->db, &r, "SELECT cancel_mode FROM agent_runs WHERE id = ?", "i", rc->run_id) == 0) {
		int rollback = r.nrows == 1 && !strcmp(db_val(&r, 0, 0), "rollback");
		struct strbuf err = STRBUF_INIT;

		db_result_free(&r);
		if (rollback) {
			if (rollback_workspace(rc, &err) == 0)
				rolled_back = 1;
			else
				log_error("run %lld: rollback failed: %s", (long long)rc->run_id, err.buf);
		}
		strbuf_release(&err);
	}
	json_object_object_add(p, "status", json_object_new_string(status));
	json_object_object_add(p, "error", error_json(code, message));
	json_object_object_add(p, "changed_files", changed_files(rc));
	json_object_object_add(p, "rolled_back", json_object_new_boolean(rolled_back));
	json_object_object_add(p, "base_checkpoint_id",
			       rc->base_checkpoint_id > 0 ? json_object_new_int64(rc->base_checkpoint_id) : NULL);
	seq = run_finish(&rc->db, rc->run_id, rc->runner_id, status, code, message, "run.failed", p);
	json_object_put(p);
	if (seq == EVENT_LEASE_LOST)
		rc->lease_lost = 1;
	return seq < 0 && seq != EVENT_LEASE_LOST ? -1 : 0;
}

static int event_exists(struct run_ctx *rc, const char *type)
{
	struct db_result r;
	int yes;

	if (db_query(&rc->db, &r, "SELECT 1 FROM agent_run_events WHERE run_id = ? AND type = ? LIMIT 1",
		     "is", rc->run_id, type) < 0)
		return 0;
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

static int finish_completed(struct run_ctx *rc, int steps, const char *outcome, const char *input)
{
	struct snapshot_req req = { 0 };
	struct snapshot_result res;
	struct strbuf err = STRBUF_INIT, label = STRBUF_INIT, summary = STRBUF_INIT;
	struct db_result r;
	json_object *p, *usage;
	int64_t rev_id = 0, ckpt_id = 0, parent_id = 0, seq;
	int changed = 0, ret = -1;
	size_t line;

	memset(&res, 0, sizeof(res));
	flush_delta(rc);
	line = strcspn(input, "\n");
	strbuf_add(&label, input, ws_utf8_prefix(input, line, 80));
	if (label.len < line)
		strbuf_addstr(&label, "…");
	run_summary(rc, &summary);
	/* An earlier attempt may already have recorded the revision. */
	if (db_query(&rc->db, &r, "SELECT id, checkpoint_id, parent_id FROM app_revisions WHERE run_id = ? "
				  "ORDER BY id DESC LIMIT 1", "i", rc->run_id) < 0)
		goto out;
	if (r.nrows == 1) {
		rev_id = db_int(&r, 0, 0);
		ckpt_id = db_int(&r, 0, 1);
		parent_id = db_int(&r, 0, 2);
		changed = 1;
	}
	db_result_free(&r);
	if (!rev_id) {
		req.app_id = rc->app_id;
		req.run_id = rc->run_id;
		req.origin = "run";
		req.ckpt_type = "auto";
		req.label = label.buf;
		req.summary = summary.buf;
		req.only_if_changed = 1;
		if (app_snapshot(&rc->db, &rc->ckpts, rc->cfg, &req, &res, &err) < 0) {
			log_error("run %lld: snapshot failed: %s", (long long)rc->run_id, err.buf);
			ret = finish_failed(rc, "failed", "checkpoint_failed",
					    "the run's changes could not be recorded; they are still in the workspace");
			goto out;
		}
		changed = res.changed;
		rev_id = res.revision_id;
		ckpt_id = res.checkpoint_id;
		parent_id = res.parent_id;
	}
	if (changed) {
		db_exec(&rc->db, "UPDATE agent_runs SET revision_id = ?, checkpoint_id = ? WHERE id = ?", "iii",
			rev_id, ckpt_id, rc->run_id);
		if (!event_exists(rc, "revision.created")) {
			p = json_object_new_object();
			json_object_object_add(p, "revision_id", json_object_new_int64(rev_id));
			json_object_object_add(p, "parent_id", parent_id ? json_object_new_int64(parent_id) : NULL);
			json_object_object_add(p, "added", res.added ? json_object_get(res.added) : json_object_new_array());
			json_object_object_add(p, "changed", res.changed_paths ? json_object_get(res.changed_paths) : json_object_new_array());
			json_object_object_add(p, "deleted", res.deleted ? json_object_get(res.deleted) : json_object_new_array());
			emit(rc, "revision.created", p);
			json_object_put(p);
		}
		if (!event_exists(rc, "checkpoint.created")) {
			p = json_object_new_object();
			json_object_object_add(p, "checkpoint_id", json_object_new_int64(ckpt_id));
			json_object_object_add(p, "revision_id", json_object_new_int64(rev_id));
			json_object_object_add(p, "label", json_object_new_string(label.buf));
			json_object_object_add(p, "summary", json_object_new_string(summary.buf));
			emit(rc, "checkpoint.created", p);
			json_object_put(p);
		}
	}
	if (rc->lease_lost)
		goto out;
	p = json_object_new_object();
	json_object_object_add(p, "status", json_object_new_string("completed"));
	json_object_object_add(p, "changed", json_object_new_boolean(changed));
	json_object_object_add(p, "revision_id", changed ? json_object_new_int64(rev_id) : NULL);
	json_object_object_add(p, "checkpoint_id", changed ? json_object_new_int64(ckpt_id) : NULL);
	json_object_object_add(p, "steps", json_object_new_int(steps));
	json_object_object_add(p, "outcome", json_object_new_string(outcome));
	if (!changed)
		json_object_object_add(p, "message", json_object_new_string("the run changed no files"));
	usage = json_object_new_object();
	if (db_query(&rc->db, &r, "SELECT prompt_tokens, completion_tokens FROM agent_runs WHERE id = ?", "i",
		     rc->run_id) == 0) {
		json_object_object_add(usage, "prompt_tokens", json_object_new_int64(db_int(&r, 0, 0)));
		json_object_object_add(usage, "completion_tokens", json_object_new_int64(db_int(&r, 0, 1)));
		json_object_object_add(usage, "total_tokens", json_object_new_int64(db_int(&r, 0, 0) + db_int(&r, 0, 1)));
		db_result_free(&r);
	}
	json_object_object_add(p, "usage", usage);
	seq = run_finish(&rc->db, rc->run_id, rc->runner_id, "completed", NULL, NULL, "run.completed", p);
	json_object_put(p);
	if (seq == EVENT_LEASE_LOST)
		rc->lease_lost = 1;
	ret = seq < 0 && seq != EVENT_LEASE_LOST ? -1 : 0;
out:
	snapshot_result_release(&res);
	strbuf_release(&err);
	strbuf_release(&label);
	strbuf_release(&summary);
	return ret;
}

/* ---- setup ----------------------------------------------------------------- */

static int run_setup(struct run_ctx *rc, struct strbuf *err)
{
	struct strbuf path = STRBUF_INIT;
	struct db_result r;
	int ret = -1;

	if (db_connect(&rc->db, rc->cfg) < 0) {
		strbuf_addf(err, "database: %s", rc->db.errmsg);
		goto out;
	}
	if (db_query(&rc->db, &r, "SELECT app_id, attempt, base_revision_id, base_checkpoint_id "
				  "FROM agent_runs WHERE id = ?", "i", rc->run_id) < 0 || r.nrows != 1) {
		strbuf_addf(err, "run %lld not found", (long long)rc->run_id);
		db_result_free(&r);
		goto out;
	}
	rc->app_id = db_int(&r, 0, 0);
	rc->attempt = db_int(&r, 0, 1);
	rc->base_revision_id = db_int(&r, 0, 2);
	rc->base_checkpoint_id = db_int(&r, 0, 3);
	db_result_free(&r);
	state_path(rc->cfg, &path, "checkpoints");
	if (ckpt_store_open(&rc->ckpts, path.buf, NULL, err) < 0)
		goto out;
	if (app_workspace_open(rc->cfg, rc->app_id, &rc->ws, err) < 0)
		goto out;
	if (cmdpolicy_load(&rc->policy, rc->cfg->command_policy, err) < 0)
		goto out;
	if (agent_profile_load(rc->cfg, rc->app_id, &rc->profile, err) < 0)
		goto out;
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
	rc->model.max_retries = (int)rc->cfg->model_max_retries;
	rc->model.retry_base_ms = (long)rc->cfg->model_retry_base_ms;
	ret = 0;
out:
	strbuf_release(&path);
	return ret;
}

/* Before the first step: a checkpoint of changes made outside any run
 * (uploads), and the restore point of this run. */
static int pre_run_checkpoint(struct run_ctx *rc, struct strbuf *err)
{
	struct snapshot_req req = { 0 };
	struct snapshot_result res;
	struct ckpt_row latest;
	int found;

	if (rc->base_checkpoint_id > 0)
		return 0; /* an earlier attempt did it */
	req.app_id = rc->app_id;
	req.origin = "manual";
	req.ckpt_type = "manual";
	req.label = "Changes made outside a run";
	req.summary = "the workspace differed from the draft when a run started";
	req.only_if_changed = 1;
	if (app_snapshot(&rc->db, &rc->ckpts, rc->cfg, &req, &res, err) < 0)
		return -1;
	snapshot_result_release(&res);
	found = ckpt_row_latest(&rc->db, rc->app_id, &latest);
	if (found < 0)
		return -1;
	rc->base_checkpoint_id = found ? latest.id : 0;
	return db_exec(&rc->db, "UPDATE agent_runs SET base_checkpoint_id = NULLIF(?, 0), "
				"base_revision_id = (SELECT draft_revision_id FROM apps WHERE id = ?) WHERE id = ?",
		       "iii", rc->base_checkpoint_id, rc->app_id, rc->run_id) < 0 ? -1 : 0;
}

static void run_teardown(struct run_ctx *rc)
{
	workspace_close(&rc->ws);
	cmdpolicy_release(&rc->policy);
	agent_profile_release(&rc->profile);
	ckpt_store_close(&rc->ckpts);
	db_close(&rc->db);
	strbuf_release(&rc->pending);
}

int agent_execute_run(struct config *cfg, int64_t run_id, const char *runner_id,
		      volatile sig_atomic_t *cancel)
{
	struct run_ctx rc;
	struct run_state st;
	struct strbuf err = STRBUF_INIT, input = STRBUF_INIT;
	struct db_result r;
	int lock = -1, ret = -1, step, cancelled_at_start = 0;
	const char *outcome = "stop";

	memset(&rc, 0, sizeof(rc));
	memset(&st, 0, sizeof(st));
	rc.cfg = cfg;
	rc.run_id = run_id;
	rc.runner_id = runner_id;
	rc.cancel = cancel;
	strbuf_init(&rc.pending);
	rc.last_flush_ms = mono_ms();
	if (run_setup(&rc, &err) < 0) {
		log_error("run %lld: setup failed: %s", (long long)run_id, err.buf);
		if (rc.db.conn && rc.app_id)
			finish_failed(&rc, "failed", "setup_failed", "the run could not be set up on the runner");
		goto out;
	}
	/* One writer of the workspace at a time: restores and uploads wait. */
	lock = app_lock(cfg, rc.app_id, 1);
	if (db_query(&rc.db, &r, "SELECT input, cancel_requested FROM agent_runs WHERE id = ?", "i", run_id) < 0)
		goto out;
	strbuf_addstr(&input, r.nrows ? db_val(&r, 0, 0) : "");
	cancelled_at_start = r.nrows && db_int(&r, 0, 1);
	db_result_free(&r);
	if (cancelled_at_start || *cancel) {
		ret = finish_failed(&rc, "cancelled", "cancelled", "the run was cancelled");
		goto out;
	}
	if (pre_run_checkpoint(&rc, &err) < 0) {
		log_error("run %lld: pre-run checkpoint: %s", (long long)run_id, err.buf);
		ret = finish_failed(&rc, "failed", "checkpoint_failed", "the checkpoint before the run could not be taken");
		goto out;
	}
	if (thread_run_state(&rc.db, run_id, &st) < 0)
		goto out;
	if (!st.has_user && thread_add_user(&rc.db, rc.app_id, run_id, input.buf) < 0)
		goto out;
	if (rc.attempt > 1) {
		json_object *p = json_object_new_object();

		/* the text of a response cut short by the dead runner restarts */
		rc.restart_next = 1;
		json_object_object_add(p, "input", json_object_new_string(input.buf));
		json_object_object_add(p, "attempt", json_object_new_int((int)rc.attempt));
		json_object_object_add(p, "resumed", json_object_new_boolean(1));
		json_object_object_add(p, "steps_done", json_object_new_int(st.steps));
		emit(&rc, "run.accepted", p);
		json_object_put(p);
	}
	step = st.steps;
	rc.message_index = step;
	/* Finish the tool calls an earlier attempt left half done. */
	if (st.pending) {
		int trc = run_tool_calls(&rc, st.pending, step);

		if (trc == -2)
			goto out;
		if (trc < 0)
			goto interrupted;
	}
	if (!st.finished || st.steps == 0) {
		for (;;) {
			struct model_callbacks cb = { on_delta, should_abort, on_retry, &rc };
			struct model_response resp;
			struct model_error merr;
			json_object *req, *calls;
			int rc_model;

			if (step >= rc.profile.max_steps) {
				outcome = "max_steps";
				break;
			}
			if (*cancel || rc.lease_lost)
				goto interrupted;
			rc.message_index = step;
			req = build_request(&rc);
			model_response_init(&resp);
			memset(&merr, 0, sizeof(merr));
			rc_model = model_chat_stream(&rc.model, req, &cb, &resp, &merr);
			json_object_put(req);
			if (rc_model < 0) {
				model_response_release(&resp);
				if (*cancel || !strcmp(merr.code, "cancelled"))
					goto interrupted;
				if (rc.lease_lost)
					goto out;
				ret = finish_failed(&rc, "failed", merr.code[0] ? merr.code : "model_error",
						    merr.message[0] ? merr.message : "the model request failed");
				goto out;
			}
			flush_delta(&rc);
			step++;
			calls = calls_json(&resp);
			if (thread_add_assistant(&rc.db, rc.app_id, run_id, step, resp.content.buf, calls) < 0 ||
			    record_usage(&rc, &resp) < 0) {
				json_object_put(calls);
				model_response_release(&resp);
				goto out;
			}
			model_response_release(&resp);
			if (!json_object_array_length(calls)) {
				json_object_put(calls);
				break;
			}
			rc_model = run_tool_calls(&rc, calls, step);
			json_object_put(calls);
			if (rc_model == -2)
				goto out;
			if (rc_model < 0)
				goto interrupted;
			continue;
		}
	}
	ret = finish_completed(&rc, step, outcome, input.buf);
	goto out;
interrupted:
	if (rc.lease_lost) {
		ret = 0;
		goto out;
	}
	ret = finish_failed(&rc, "cancelled", "cancelled", "the run was cancelled");
out:
	run_state_release(&st);
	app_unlock(lock);
	run_teardown(&rc);
	strbuf_release(&err);
	strbuf_release(&input);
	return ret;
}
