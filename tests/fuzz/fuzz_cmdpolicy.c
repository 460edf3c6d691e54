/*
 * fuzz_cmdpolicy.c - libFuzzer target for the command policy.
 *
 * The input is JSON text. Usually it is taken as the model's "argv" and
 * checked against a built-in policy shaped like tools/command-policy.json;
 * an object {"policy": {...}, "argv": ..., "timeout_ms"?: int} also fuzzes
 * the policy loader with that policy. Besides crashes and leaks, it aborts
 * if an allowed argv breaks a limit the policy itself states.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -D_GNU_SOURCE \
 *     -include include/compat.h -Iinclude tests/fuzz/fuzz_cmdpolicy.c \
 *     src/cmdpolicy.c src/strbuf.c src/util.c src/fileutil.c src/tool_error.c \
 *     -ljson-c -o fuzz_cmdpolicy
 *   ./fuzz_cmdpolicy tests/fuzz/corpus/cmdpolicy
 */
#include <json-c/json.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cmdpolicy.h"
#include "strbuf.h"
#include "tool_error.h"

static const char builtin_policy[] =
	"{\"default_timeout_ms\": 60000, \"max_timeout_ms\": 300000,"
	" \"output_cap\": 65536, \"max_args\": 64, \"max_arg_bytes\": 4096,"
	" \"programs\": {"
	"  \"npm\": {\"subcommands\": [\"run\", \"run-script\", \"test\", \"install\", \"ci\", \"ls\"],"
	"   \"script_subcommands\": [\"run\", \"run-script\"],"
	"   \"scripts\": [\"build\", \"test\", \"lint\"],"
	"   \"deny_args\": [\"-g*\", \"--global*\", \"--prefix*\", \"-C\"],"
	"   \"timeout_ms\": 180000},"
	"  \"node\": {\"deny_args\": [\"-i\", \"--inspect*\"], \"timeout_ms\": 120000},"
	"  \"./bin/tool\": {\"output_cap\": 1024},"
	"  \"ls\": {}, \"cat\": {}, \"echo\": {}, \"grep\": {},"
	"  \"find\": {\"deny_args\": [\"-exec\", \"-delete\"]}}}";

static struct cmdpolicy builtin;
static int builtin_loaded;

static const struct cmdpolicy_program *program_named(const struct cmdpolicy *p,
						     const char *name)
{
	size_t i;

	for (i = 0; i < p->nprograms; i++)
		if (!strcmp(p->programs[i].name, name))
			return &p->programs[i];
	return NULL;
}

static int denied_by_pattern(const struct cmdpolicy_program *prog, const char *arg)
{
	size_t i;

	for (i = 0; i < prog->deny_args.n; i++) {
		const char *pat = prog->deny_args.items[i];
		size_t len = strlen(pat);

		if (len && pat[len - 1] == '*' ? !strncmp(arg, pat, len - 1) : !strcmp(arg, pat))
			return 1;
	}
	return 0;
}

/* What an allowed argv must satisfy, restated independently of the checker. */
static void check_invariants(const struct cmdpolicy *p, const char *const *argv,
			     size_t argc, int64_t timeout_ms, size_t cap)
{
	const struct cmdpolicy_program *prog = program_named(p, argv[0]);
	size_t i;

	if (!prog || argc == 0 || argc > p->max_args)
		abort();
	if (timeout_ms < 1 || timeout_ms > p->max_timeout_ms || cap == 0)
		abort();
	for (i = 0; i < argc; i++)
		if (!argv[i] || strlen(argv[i]) > p->max_arg_bytes)
			abort();
	for (i = 1; i < argc; i++)
		if (denied_by_pattern(prog, argv[i]))
			abort();
	if (argv[argc])
		abort();
}

static void run_one(const struct cmdpolicy *p, json_object *argv_json, int64_t requested)
{
	struct tool_error err;
	const char **argv = NULL;
	size_t argc = 0, cap = 0;
	int64_t timeout_ms = 0;

	memset(&err, 0, sizeof(err));
	if (cmdpolicy_argv_from_json(argv_json, &argv, &argc, &err) < 0) {
		if (strcmp(err.code, "invalid_arguments") || argv)
			abort();
		return;
	}
	if (cmdpolicy_check(p, argv, argc, requested, &timeout_ms, &cap, &err) == 0)
		check_invariants(p, argv, argc, timeout_ms, cap);
	else if (strcmp(err.code, "command_denied") || !err.message[0])
		abort();
	free(argv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_tokener *tok;
	json_object *root, *policy_json, *argv_json, *t;
	struct strbuf err = STRBUF_INIT;

	if (!builtin_loaded) {
		json_object *o = json_tokener_parse(builtin_policy);

		if (!o || cmdpolicy_load_json(&builtin, o, &err) < 0)
			abort();
		json_object_put(o);
		builtin_loaded = 1;
	}
	if (size > INT_MAX)
		return 0;
	tok = json_tokener_new();
	if (!tok)
		return 0;
	root = json_tokener_parse_ex(tok, (const char *)data, (int)size);
	json_tokener_free(tok);

	if (json_object_is_type(root, json_type_object) &&
	    json_object_object_get_ex(root, "policy", &policy_json) &&
	    json_object_object_get_ex(root, "argv", &argv_json)) {
		struct cmdpolicy p;
		int64_t requested = 0;

		if (json_object_object_get_ex(root, "timeout_ms", &t))
			requested = json_object_get_int64(t);
		if (cmdpolicy_load_json(&p, policy_json, &err) == 0)
			run_one(&p, argv_json, requested);
		else if (!err.len)
			abort();
		cmdpolicy_release(&p);
	} else {
		run_one(&builtin, root, 0);
	}
	json_object_put(root);
	strbuf_release(&err);
	return 0;
}
