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
	"   \"deny_options\": [\"g\", \"C\", \"global\", \"prefix\", \"ignore-scripts\"],"
	"   \"force_args\": {\"install\": [\"--ignore-scripts=true\"], \"run\": [\"--ignore-scripts=true\"]},"
	"   \"timeout_ms\": 180000},"
	"  \"node\": {\"deny_args\": [\"-i\", \"--inspect*\"],"
	"   \"deny_options\": [\"e\", \"p\", \"eval\", \"print\", \"require\", \"inspect*\"],"
	"   \"timeout_ms\": 120000},"
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

/* A simpler restatement of deny_options for the plain spellings: --name,
 * -name, --name=value. */
static int denied_as_option(const struct cmdpolicy_program *prog, const char *arg)
{
	size_t i;

	if (arg[0] != '-')
		return 0;
	arg += arg[1] == '-' ? 2 : 1;
	for (i = 0; i < prog->deny_options.n; i++) {
		const char *name = prog->deny_options.items[i];
		size_t len = strlen(name);

		if (name[len - 1] != '*' && !strncmp(arg, name, len) &&
		    (arg[len] == '\0' || arg[len] == '='))
			return 1;
	}
	return 0;
}

static const struct cmdpolicy_list *forced_for(const struct cmdpolicy_program *prog,
						const char *const *argv, size_t argc)
{
	size_t i;

	for (i = 0; prog->has_subcommands && argc >= 2 && i < prog->nforced; i++)
		if (!strcmp(prog->forced[i].subcommand, argv[1]))
			return &prog->forced[i].args;
	return NULL;
}

/* What an allowed argv must satisfy, restated independently of the checker. */
static void check_invariants(const struct cmdpolicy *p, const char *const *argv,
			     size_t argc, int64_t requested, const struct cmdpolicy_verdict *v)
{
	const struct cmdpolicy_program *prog = program_named(p, argv[0]);
	const struct cmdpolicy_list *forced;
	int64_t prog_timeout;
	size_t i, nf;

	if (!prog || argc == 0 || argc > p->max_args)
		abort();
	prog_timeout = prog->timeout_ms ? prog->timeout_ms : p->default_timeout_ms;
	if (v->timeout_ms < 1 || v->timeout_ms > p->max_timeout_ms ||
	    v->timeout_ms > prog_timeout || (requested > 0 && v->timeout_ms > requested) ||
	    v->output_cap == 0)
		abort();
	/* the verdict is argv with the forced arguments after argv[1] */
	forced = forced_for(prog, argv, argc);
	nf = forced ? forced->n : 0;
	if (v->argc != argc + nf || v->argv[v->argc] || strcmp(v->argv[0], argv[0]))
		abort();
	for (i = 0; i < nf; i++)
		if (strcmp(v->argv[2 + i], forced->items[i]))
			abort();
	for (i = 1; i < argc; i++)
		if (strcmp(v->argv[i < 2 ? i : i + nf], argv[i]) || denied_as_option(prog, argv[i]))
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
	struct cmdpolicy_verdict v;
	struct tool_error err;
	const char **argv = NULL;
	size_t argc = 0;

	memset(&err, 0, sizeof(err));
	if (cmdpolicy_argv_from_json(argv_json, &argv, &argc, &err) < 0) {
		if (strcmp(err.code, "invalid_arguments") || argv)
			abort();
		return;
	}
	if (cmdpolicy_decide(p, argv, argc, requested, &v, &err) == 0)
		check_invariants(p, argv, argc, requested, &v);
	else if (strcmp(err.code, "command_denied") || !err.message[0] || v.argv)
		abort();
	cmdpolicy_verdict_release(&v);
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
