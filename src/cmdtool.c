/* cmdtool.c - the run_command tool: arguments, policy, sandbox, result
 * (see cmdtool.h). */
#include "cmdtool.h"

#include <json-c/json.h>
#include <string.h>

#include "util.h"
#include "workspace.h"

/* Bytes of the command line shown in the summary. */
#define SUMMARY_CMD_BYTES 100

static const char utf8_replacement[] = "\xEF\xBF\xBD";

/* Copies s to out, replacing each byte that does not start a valid UTF-8
 * sequence with U+FFFD, so the output can travel in JSON. */
static void utf8_sanitize(const char *s, size_t len, struct strbuf *out)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = (unsigned char)s[i];
		size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2
			   : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;

		if (k && i + k <= len && utf8_valid(s + i, k)) {
			strbuf_add(out, s + i, k);
			i += k;
		} else {
			strbuf_addstr(out, utf8_replacement);
			i++;
		}
	}
}

/* "npm run build", control bytes as '?', cut on a UTF-8 boundary. */
static void summary_command(struct strbuf *sb, const char *const *argv)
{
	size_t start = sb->len, i, j;

	for (i = 0; argv[i]; i++) {
		if (i)
			strbuf_addch(sb, ' ');
		for (j = 0; argv[i][j]; j++) {
			unsigned char c = (unsigned char)argv[i][j];

			strbuf_addch(sb, c < 0x20 || c == 0x7f ? '?' : (char)c);
		}
		if (sb->len - start > SUMMARY_CMD_BYTES)
			break;
	}
	if (sb->len - start > SUMMARY_CMD_BYTES) {
		size_t cut = start + SUMMARY_CMD_BYTES;

		while (cut > start && ((unsigned char)sb->buf[cut] & 0xC0) == 0x80)
			cut--;
		strbuf_setlen(sb, cut);
		strbuf_addstr(sb, "…");
	}
}

static void add_summary(struct strbuf *summary, const char *const *argv,
			const struct sandbox_result *res)
{
	double secs = (double)res->duration_ms / 1000.0;

	summary_command(summary, argv);
	if (res->timed_out)
		strbuf_addf(summary, " → timed out after %.1f s", secs);
	else if (res->cancelled)
		strbuf_addf(summary, " → cancelled after %.1f s", secs);
	else
		strbuf_addf(summary, " → exit %d in %.1f s", res->exit_code, secs);
	if (res->truncated)
		strbuf_addstr(summary, " (output truncated)");
}

static json_object *build_result(const struct sandbox_result *res)
{
	struct strbuf out = STRBUF_INIT;
	json_object *r = json_object_new_object();

	utf8_sanitize(strbuf_str(&res->output), res->output.len, &out);
	json_object_object_add(r, "exit_code", json_object_new_int(res->exit_code));
	if (res->term_signal)
		json_object_object_add(r, "signal", json_object_new_int(res->term_signal));
	json_object_object_add(r, "timed_out", json_object_new_boolean(res->timed_out));
	json_object_object_add(r, "duration_ms", json_object_new_int64(res->duration_ms));
	json_object_object_add(r, "output",
			       json_object_new_string_len(strbuf_str(&out), (int)out.len));
	json_object_object_add(r, "truncated", json_object_new_boolean(res->truncated));
	strbuf_release(&out);
	return r;
}

/* Accepts only {"argv": [...], "timeout_ms"?: int}. */
static int parse_args(json_object *args, json_object **argv_json,
		      int64_t *timeout_ms, struct tool_error *err)
{
	json_object *t;

	if (!json_object_is_type(args, json_type_object)) {
		tool_error_set(err, "invalid_arguments",
			       "run_command takes an object: {\"argv\": [\"npm\", \"run\", \"build\"]}");
		return -1;
	}
	json_object_object_foreach(args, key, val) {
		(void)val;
		if (strcmp(key, "argv") && strcmp(key, "timeout_ms")) {
			tool_error_set(err, "invalid_arguments",
				       "unknown argument '%.64s': run_command takes argv and "
				       "timeout_ms", key);
			return -1;
		}
	}
	if (!json_object_object_get_ex(args, "argv", argv_json)) {
		tool_error_set(err, "invalid_arguments",
			       "argv is required, an array such as [\"npm\", \"run\", \"build\"]");
		return -1;
	}
	if (json_object_is_type(*argv_json, json_type_string)) {
		tool_error_set(err, "invalid_arguments",
			       "run_command takes an argv array, never a shell string: "
			       "write [\"npm\", \"run\", \"build\"], not \"npm run build\"");
		return -1;
	}
	*timeout_ms = 0;
	if (json_object_object_get_ex(args, "timeout_ms", &t)) {
		int64_t v = json_object_get_int64(t);

		if (!json_object_is_type(t, json_type_int) || v < 1 ||
		    v > CMDPOLICY_TIMEOUT_LIMIT_MS) {
			tool_error_set(err, "invalid_arguments",
				       "timeout_ms must be a positive integer of milliseconds");
			return -1;
		}
		*timeout_ms = v;
	}
	return 0;
}

/* After the command: the workspace measured against its limits. Over
 * them, the call fails with limit_exceeded (the output still goes back)
 * so the model deletes what it made before the run's end has to snapshot
 * it; err is set and -1 returned. */
static int check_workspace(const struct workspace *ws, json_object *result,
			   struct strbuf *summary, struct tool_error *err)
{
	struct strbuf what = STRBUF_INIT;
	struct ws_usage u;
	json_object *o;
	int ret = -1;

	if (ws_measure(ws, &u, err) < 0)
		goto out;
	o = json_object_new_object();
	json_object_object_add(o, "files", json_object_new_uint64(u.files));
	json_object_object_add(o, "bytes", json_object_new_uint64(u.bytes));
	json_object_object_add(result, "workspace", o);
	if (!ws_usage_over_limits(ws, &u)) {
		ret = 0;
		goto out;
	}
	ws_usage_describe(ws, &u, &what);
	tool_error_set(err, "limit_exceeded",
		       "after the command the workspace is over its limits: %s. "
		       "Delete or shrink files until it fits (node_modules, dist and .git "
		       "do not count); until then the run's changes cannot be saved",
		       what.buf);
	strbuf_addstr(summary, " (workspace over its limits)");
out:
	strbuf_release(&what);
	return ret;
}

static int run_command(const struct cmdpolicy *p, const struct sandbox_config *sc_in,
		       const struct workspace *ws, const char *workspace_path,
		       json_object *args, volatile sig_atomic_t *cancel,
		       json_object **result, struct strbuf *summary,
		       struct tool_error *err)
{
	struct strbuf errmsg = STRBUF_INIT;
	struct sandbox_config sc = *sc_in;
	struct cmdpolicy_verdict v;
	struct sandbox_result res;
	struct tool_error limits;
	json_object *argv_json;
	const char **argv = NULL;
	size_t argc;
	int64_t requested;
	int ret = -1, over;

	*result = NULL;
	memset(&v, 0, sizeof(v));
	memset(&res, 0, sizeof(res));
	strbuf_init(&res.output);
	if (parse_args(args, &argv_json, &requested, err) < 0 ||
	    cmdpolicy_argv_from_json(argv_json, &argv, &argc, err) < 0 ||
	    cmdpolicy_decide(p, argv, argc, requested, &v, err) < 0)
		goto out;
	/* No file the workspace can hold is bigger than the whole workspace
	 * may be. The tighter per-file limit is not applied here: node_modules
	 * and dist do not count against it and legitimately hold bigger files. */
	if (ws && ws->lim.max_total_size < sc.max_file_bytes)
		sc.max_file_bytes = ws->lim.max_total_size;

	if (sandbox_run(&sc, workspace_path, v.argv, v.timeout_ms, v.output_cap, cancel,
			&res, &errmsg) < 0) {
		tool_error_set(err, "sandbox_unavailable", "the command sandbox is unavailable: %s",
			       errmsg.buf);
		goto out;
	}
	*result = build_result(&res);
	/* the summary shows what the model asked for, not the forced flags */
	add_summary(summary, argv, &res);
	over = ws && check_workspace(ws, *result, summary, &limits) < 0;
	if (res.timed_out) {
		tool_error_set(err, "timeout", "the command did not finish within %.1f s and "
			       "was killed%s%s", (double)v.timeout_ms / 1000.0,
			       over ? "; also, " : "", over ? limits.message : "");
		goto out;
	}
	if (res.cancelled) {
		tool_error_set(err, "cancelled", "the command was cancelled");
		goto out;
	}
	if (over) {
		if (err)
			*err = limits;
		goto out;
	}
	ret = 0;
out:
	sandbox_result_release(&res);
	strbuf_release(&errmsg);
	cmdpolicy_verdict_release(&v);
	free(argv);
	return ret;
}

int cmdtool_run(const struct cmdpolicy *p, const struct sandbox_config *sc,
		const struct workspace *ws, json_object *args,
		volatile sig_atomic_t *cancel, json_object **result,
		struct strbuf *summary, struct tool_error *err)
{
	return run_command(p, sc, ws, ws->root, args, cancel, result, summary, err);
}

int cmdtool_call(const struct cmdpolicy *p, const struct sandbox_config *sc,
		 const char *workspace_path, json_object *args,
		 volatile sig_atomic_t *cancel, json_object **result,
		 struct strbuf *summary, struct tool_error *err)
{
	return run_command(p, sc, NULL, workspace_path, args, cancel, result, summary, err);
}

void cmdtool_add_schema(json_object *tools)
{
	static const char schema[] =
		"{\"type\": \"function\", \"function\": {"
		"\"name\": \"run_command\","
		"\"description\": \"Run one program in the app's workspace, inside a sandbox "
		"with no network. Give the program and its arguments as an argv array; there "
		"is no shell, so pipes, redirections, globs, && and environment assignments do "
		"not work. Only programs allowed by the command policy run (for example npm run "
		"build/test/lint, npm install, node <script file>, ls, cat, grep, head, tail, wc, "
		"find); a denied command returns command_denied naming the rule. node -e/-p "
		"and other inline-code options are denied: write a script file and run it. npm "
		"runs with --ignore-scripts: the named script runs, its pre/post scripts and "
		"install scripts do not. Returns exit_code, "
		"timed_out, duration_ms and the combined stdout/stderr (capped; truncated says "
		"whether it was cut). A non-zero exit_code is a normal result: read output. If "
		"the workspace ends up over its size or file-count limits, the call fails with "
		"limit_exceeded.\","
		"\"parameters\": {\"type\": \"object\", \"properties\": {"
		"\"argv\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, "
		"\"minItems\": 1, \"maxItems\": 64, "
		"\"description\": \"Program and arguments, e.g. [\\\"npm\\\", \\\"run\\\", "
		"\\\"build\\\"]\"},"
		"\"timeout_ms\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 300000, "
		"\"description\": \"Wall-clock limit in milliseconds, to stop sooner than the "
		"program's own limit (the default; a longer value is lowered to it)\"}"
		"}, \"required\": [\"argv\"], \"additionalProperties\": false}}}";
	json_object *entry;

	if (!json_object_is_type(tools, json_type_array))
		return;
	entry = json_tokener_parse(schema);
	if (entry)
		json_object_array_add(tools, entry);
}
