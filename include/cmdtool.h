/*
 * cmdtool.h - the run_command tool the model calls.
 *
 *   cmdtool_run         validate the arguments, check the policy, run the
 *                       command in the sandbox, measure the workspace
 *                       against its limits, build the result
 *   cmdtool_call        the same without the workspace's limits
 *   cmdtool_add_schema  the OpenAI tools[] entry for run_command
 *
 * Arguments: {"argv": ["npm", "run", "build"], "timeout_ms"?: int}. A string
 * instead of an array is refused: run_command takes an argv array, never a
 * shell string. Other keys are refused too.
 *
 * Result: {"exit_code": int, "signal"?: int, "timed_out": bool,
 * "duration_ms": int, "output": string, "truncated": bool}. "output" is
 * stdout and stderr interleaved, capped by the policy, made valid UTF-8
 * (bad bytes become U+FFFD). A command that ran and exited non-zero is still
 * a successful call: the model reads exit_code (127: program not found in
 * the sandbox; 128+n: killed by signal n).
 *
 * The argv that runs is the policy's verdict (cmdpolicy_decide): npm gets
 * --ignore-scripts=true after its subcommand, for one.
 *
 * Limits (cmdtool_run): every file a command writes is capped at the
 * workspace's max_total_size (RLIMIT_FSIZE, if below the sandbox's own cap);
 * the per-file limit is not applied in the sandbox because node_modules and
 * dist, which do not count, may hold bigger files. Nothing can cap the sum
 * of what a command writes into the workspace bind (no quota, and a tmpfs
 * cannot be the workspace), so after the command the workspace is measured
 * (ws_measure) and a workspace over max_files, max_total_size or
 * max_file_size fails the call with "limit_exceeded" and the output, and
 * the result carries "workspace": {"files", "bytes"}.
 *
 * Error codes: "invalid_arguments", "command_denied", "sandbox_unavailable",
 * "timeout", "cancelled" and "limit_exceeded" (the last three still set
 * *result, with the output so far; a timeout's message also says when the
 * workspace is over its limits).
 */
#ifndef KILN_CMDTOOL_H
#define KILN_CMDTOOL_H

#include <json-c/json_types.h>
#include <signal.h>

#include "cmdpolicy.h"
#include "sandbox.h"
#include "strbuf.h"
#include "tool_error.h"

struct workspace;

/*
 * Returns 0 with *result (caller puts it) and a one-line summary appended
 * to summary ("npm run build → exit 0 in 1.2 s"), or -1 with err set; on
 * "timeout" and "cancelled" *result and summary are set as well, otherwise
 * *result is NULL.
 */
int cmdtool_run(const struct cmdpolicy *p, const struct sandbox_config *sc,
		const struct workspace *ws, json_object *args,
		volatile sig_atomic_t *cancel, json_object **result,
		struct strbuf *summary, struct tool_error *err);

/* cmdtool_run on a bare path: no RLIMIT_FSIZE from the workspace and no
 * measurement after, so a command can leave the workspace past its limits
 * unreported. For callers without an open workspace only. */
int cmdtool_call(const struct cmdpolicy *p, const struct sandbox_config *sc,
		 const char *workspace_path, json_object *args,
		 volatile sig_atomic_t *cancel, json_object **result,
		 struct strbuf *summary, struct tool_error *err);

/* Appends the run_command entry to tools (a JSON array). */
void cmdtool_add_schema(json_object *tools);

#endif
