/*
 * cmdtool.h - the run_command tool the model calls.
 *
 *   cmdtool_call        validate the arguments, check the policy, run the
 *                       command in the sandbox, build the result
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
 * Error codes: "invalid_arguments", "command_denied", "sandbox_unavailable",
 * "timeout" and "cancelled" (those two still set *result, with the output so
 * far).
 */
#ifndef KILN_CMDTOOL_H
#define KILN_CMDTOOL_H

#include <json-c/json_types.h>
#include <signal.h>

#include "cmdpolicy.h"
#include "sandbox.h"
#include "strbuf.h"
#include "tool_error.h"

/*
 * Returns 0 with *result (caller puts it) and a one-line summary appended
 * to summary ("npm run build → exit 0 in 1.2 s"), or -1 with err set; on
 * "timeout" and "cancelled" *result and summary are set as well, otherwise
 * *result is NULL.
 */
int cmdtool_call(const struct cmdpolicy *p, const struct sandbox_config *sc,
		 const char *workspace_path, json_object *args,
		 volatile sig_atomic_t *cancel, json_object **result,
		 struct strbuf *summary, struct tool_error *err);

/* Appends the run_command entry to tools (a JSON array). */
void cmdtool_add_schema(json_object *tools);

#endif
