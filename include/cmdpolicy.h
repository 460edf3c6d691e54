/*
 * cmdpolicy.h - which argv the model's run_command may run.
 *
 *   cmdpolicy_load / cmdpolicy_load_json   read and validate a policy
 *   cmdpolicy_release
 *   cmdpolicy_argv_from_json               model JSON -> C argv, shape checks
 *   cmdpolicy_decide                        allow or deny one argv; the argv to
 *                                          run, effective timeout and output cap
 *   cmdpolicy_verdict_release
 *   cmdpolicy_check                        cmdpolicy_decide without the argv
 *
 * The policy is defence in depth and a guide for the model: the bubblewrap
 * sandbox (sandbox.h) is what contains a command that is allowed. The policy
 * file (tools/command-policy.json is the default) is a JSON object:
 *
 *   {
 *     "default_timeout_ms": 60000,   timeout when neither the call nor the
 *                                    program sets one
 *     "max_timeout_ms": 300000,      hard ceiling for every timeout
 *     "output_cap": 65536,           bytes of output kept per command
 *     "max_args": 64,                argv elements (argv[0] included), <= 1024
 *     "max_arg_bytes": 4096,         bytes per argv element, <= 65536
 *     "programs": {
 *       "<name>": {                  argv[0], matched exactly. A name with a
 *                                    '/' allows that exact path; any other
 *                                    argv[0] containing '/' is denied.
 *         "subcommands": [...],      if present, argv[1] must be one of these
 *         "script_subcommands": [...], subcommands whose next argument names
 *                                    a script (npm run <script>) ...
 *         "scripts": [...],          ... which must be one of these
 *         "deny_args": [...],        arguments refused anywhere after argv[0]:
 *                                    "x" matches exactly, "x*" any argument
 *                                    starting with x
 *         "deny_options": [...],     options refused anywhere after argv[0], in
 *                                    every spelling the program's parser takes:
 *                                    an entry "eval" (no dashes) denies -eval,
 *                                    --eval, ---eval, --eval=x, --no-eval,
 *                                    --ev (an abbreviation of two characters or
 *                                    more: npm takes unambiguous ones) and, '_'
 *                                    being read as '-', --ev_al; "inspect*"
 *                                    denies every option starting with inspect;
 *                                    a one-letter entry "g" also denies the
 *                                    letter inside a group of single-letter
 *                                    flags (-lg, -pe)
 *         "force_args": {            arguments always inserted right after a
 *           "install": [...]         subcommand (npm install --ignore-scripts=true);
 *         },                         keys must be listed in subcommands
 *         "timeout_ms": 180000,      timeout for this program; a call may ask
 *                                    for less, never for more
 *         "output_cap": 65536        output cap for this program
 *       }
 *     }
 *   }
 *
 * Unknown keys are errors (a typo must not silently loosen the policy).
 * Shells and program launchers (sh, bash, env, xargs, sudo, ...) are refused
 * at load time under any name or path: run_command never runs a shell string.
 */
#ifndef KILN_CMDPOLICY_H
#define KILN_CMDPOLICY_H

#include <json-c/json_types.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"
#include "tool_error.h"

/* Absolute limits no policy file can raise. */
#define CMDPOLICY_ARGS_LIMIT 1024
#define CMDPOLICY_ARG_BYTES_LIMIT 65536
#define CMDPOLICY_TIMEOUT_LIMIT_MS (24LL * 3600 * 1000)
#define CMDPOLICY_OUTPUT_CAP_LIMIT (16 * 1024 * 1024)

struct cmdpolicy_list {
	char **items;
	size_t n;
};

struct cmdpolicy_forced {
	char *subcommand;
	struct cmdpolicy_list args;
};

struct cmdpolicy_program {
	char *name;
	int has_subcommands;              /* else any argv[1] */
	struct cmdpolicy_list subcommands;
	struct cmdpolicy_list script_subcommands;
	struct cmdpolicy_list scripts;
	struct cmdpolicy_list deny_args;
	struct cmdpolicy_list deny_options;
	struct cmdpolicy_forced *forced;  /* force_args */
	size_t nforced;
	int64_t timeout_ms;               /* 0 = policy default */
	size_t output_cap;                /* 0 = policy default */
};

struct cmdpolicy {
	int64_t default_timeout_ms;
	int64_t max_timeout_ms;
	size_t output_cap;
	size_t max_args;
	size_t max_arg_bytes;
	struct cmdpolicy_program *programs;
	size_t nprograms;
};

/* Both return 0, or -1 with a message in err; p is usable only on success
 * and must be released either way. */
int cmdpolicy_load(struct cmdpolicy *p, const char *path, struct strbuf *err);
int cmdpolicy_load_json(struct cmdpolicy *p, json_object *root, struct strbuf *err);
void cmdpolicy_release(struct cmdpolicy *p);

/*
 * Turns the model's "argv" value into a NULL-terminated array whose strings
 * point into arr (keep arr alive; free() only *argv). Refuses, with
 * err->code "invalid_arguments", anything but a non-empty array of strings
 * that are valid UTF-8 without NUL bytes, and more than CMDPOLICY_ARGS_LIMIT
 * elements.
 */
int cmdpolicy_argv_from_json(json_object *arr, const char ***argv, size_t *argc,
			     struct tool_error *err);

/* What to run when the policy allows an argv. */
struct cmdpolicy_verdict {
	/* NULL-terminated: the caller's argv with the program's force_args
	 * inserted after the subcommand; the strings are borrowed from that
	 * argv and from the policy (keep both alive), the array is owned */
	const char **argv;
	size_t argc;
	int64_t timeout_ms;  /* the program's timeout (else the policy default),
			      * lowered to requested_timeout_ms if that is
			      * > 0 and smaller; never above max_timeout_ms */
	size_t output_cap;
};

/*
 * Checks argv against the policy. On refusal returns -1 with err->code
 * "command_denied" and a message naming the rule that denied it (v is then
 * empty, releasing it is harmless). On success fills v; release it.
 */
int cmdpolicy_decide(const struct cmdpolicy *p, const char *const *argv, size_t argc,
		     int64_t requested_timeout_ms, struct cmdpolicy_verdict *v,
		     struct tool_error *err);
void cmdpolicy_verdict_release(struct cmdpolicy_verdict *v);

/* cmdpolicy_decide for callers that only need the timeout and the output
 * cap. Running argv itself then skips the program's force_args: whoever
 * runs a command must run the verdict's argv. */
int cmdpolicy_check(const struct cmdpolicy *p, const char *const *argv, size_t argc,
		    int64_t requested_timeout_ms, int64_t *timeout_ms,
		    size_t *output_cap, struct tool_error *err);

#endif
