/* test_cmdpolicy.c - the command policy: the shipped policy file, allowed
 * and denied commands with the rule named, argv shapes, timeouts, loader
 * validation, and run_command's argument checks that precede the sandbox. */
#include <json-c/json.h>
#include <string.h>

#include "cmdpolicy.h"
#include "cmdtool.h"
#include "harness.h"
#include "sandbox.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"

#define POLICY_FILE "tools/command-policy.json"

static struct cmdpolicy policy;

static int check(const char *const *argv, int64_t req, int64_t *t, size_t *cap,
		 struct tool_error *err)
{
	size_t argc = 0;

	while (argv[argc])
		argc++;
	memset(err, 0, sizeof(*err));
	return cmdpolicy_check(&policy, argv, argc, req, t, cap, err);
}

static int allowed(const char *const *argv)
{
	struct tool_error err;
	int64_t t;
	size_t cap;

	return check(argv, 0, &t, &cap, &err) == 0;
}

/* Denied with command_denied and a message containing want. */
static int denied_with(const char *const *argv, const char *want)
{
	struct tool_error err;
	int64_t t;
	size_t cap;

	if (check(argv, 0, &t, &cap, &err) == 0)
		return 0;
	if (strcmp(err.code, "command_denied") || !strstr(err.message, want)) {
		fprintf(stderr, "  denial was %s: %s (wanted '%s')\n", err.code, err.message, want);
		return 0;
	}
	return 1;
}

#define ARGV(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void test_shipped_policy_loads(void)
{
	CHECK(policy.nprograms > 5);
	CHECK(policy.default_timeout_ms == 60000);
	CHECK(policy.max_timeout_ms == 300000);
	CHECK(policy.output_cap == 65536);
	CHECK(policy.max_args == 64);
	CHECK(policy.max_arg_bytes == 4096);
}

static void test_allowed(void)
{
	CHECK(allowed(ARGV("npm", "run", "build")));
	CHECK(allowed(ARGV("npm", "run", "test")));
	CHECK(allowed(ARGV("npm", "test")));
	CHECK(allowed(ARGV("npm", "ci")));
	CHECK(allowed(ARGV("npm", "install")));
	CHECK(allowed(ARGV("npm", "install", "--save-dev", "vite")));
	CHECK(allowed(ARGV("npm", "run")));
	CHECK(allowed(ARGV("npm", "run", "build", "--", "--mode", "production")));
	CHECK(allowed(ARGV("node", "scripts/check.js")));
	CHECK(allowed(ARGV("ls", "-la", "src")));
	CHECK(allowed(ARGV("cat", "package.json")));
	CHECK(allowed(ARGV("grep", "-rn", "useState", "src")));
	CHECK(allowed(ARGV("find", ".", "-name", "*.js")));
	CHECK(allowed(ARGV("echo", "hello; rm -rf /")));
}

static void test_denied_program(void)
{
	CHECK(denied_with(ARGV("curl", "https://example.com"),
			  "program 'curl' is not in the allowed programs"));
	CHECK(denied_with(ARGV("sh", "-c", "ls"), "program 'sh' is not in the allowed"));
	CHECK(denied_with(ARGV("bash"), "not in the allowed programs"));
	CHECK(denied_with(ARGV("npx", "vite"), "not in the allowed programs"));
	CHECK(denied_with(ARGV("python3", "-c", "1"), "not in the allowed programs"));
	CHECK(denied_with(ARGV(""), "argv must name a program"));
}

static void test_path_program_denied(void)
{
	CHECK(denied_with(ARGV("/bin/ls"), "program '/bin/ls' is a path"));
	CHECK(denied_with(ARGV("./node_modules/.bin/vite"), "is a path"));
	CHECK(denied_with(ARGV("../ls"), "is a path"));
	CHECK(denied_with(ARGV("usr/bin/ls"), "is a path"));
}

static void test_denied_args(void)
{
	CHECK(denied_with(ARGV("npm", "install", "-g", "left-pad"),
			  "argument '-g' is denied for npm"));
	CHECK(denied_with(ARGV("npm", "install", "--global", "x"),
			  "argument '--global' is denied for npm"));
	CHECK(denied_with(ARGV("npm", "install", "--prefix=/usr", "x"),
			  "argument '--prefix=/usr' is denied for npm (option 'prefix', in any spelling)"));
	CHECK(denied_with(ARGV("npm", "install", "-C", "/usr"), "option 'C'"));
	CHECK(denied_with(ARGV("npm", "install", "-gD", "x"), "argument '-gD' is denied"));
	CHECK(denied_with(ARGV("npm", "ci", "--script-shell", "/bin/bash"), "--script-shell"));
	CHECK(denied_with(ARGV("node", "--inspect=0.0.0.0:9229", "a.js"),
			  "is denied for node"));
	CHECK(denied_with(ARGV("find", ".", "-exec", "rm", "{}", ";"),
			  "argument '-exec' is denied for find"));
	CHECK(denied_with(ARGV("find", ".", "-delete"), "'-delete' is denied"));
}

static void test_subcommands_and_scripts(void)
{
	CHECK(denied_with(ARGV("npm", "run", "dev"),
			  "script 'dev' is not allowed for 'npm run' (allowed: build"));
	CHECK(denied_with(ARGV("npm", "run", "start"), "script 'start' is not allowed"));
	CHECK(denied_with(ARGV("npm", "run-script", "deploy"), "script 'deploy' is not allowed"));
	CHECK(denied_with(ARGV("npm", "run", "--silent", "build"), "script '--silent'"));
	CHECK(denied_with(ARGV("npm", "exec", "vite"),
			  "subcommand 'exec' is not allowed for npm (allowed: run"));
	CHECK(denied_with(ARGV("npm", "publish"), "subcommand 'publish' is not allowed"));
	CHECK(denied_with(ARGV("npm"), "npm needs a subcommand"));
	CHECK(denied_with(ARGV("npm", "-g", "install"), "'-g' is denied"));
}

static void test_limits_and_hostile_text(void)
{
	const char *many[70];
	char *longarg = xcalloc(1, 5000);
	struct tool_error err;
	int64_t t;
	size_t cap, i;

	many[0] = "echo";
	for (i = 1; i < 65; i++)
		many[i] = "x";
	many[65] = NULL;
	CHECK(denied_with(many, "argv has 65 elements; the policy allows at most 64"));
	many[64] = NULL;
	CHECK(allowed(many));

	memset(longarg, 'a', 4097);
	CHECK(denied_with(ARGV("echo", longarg), "argv[1] is longer than the policy's 4096 bytes"));
	longarg[4096] = '\0';
	CHECK(allowed(ARGV("echo", longarg)));

	/* a denied argument is echoed with control bytes neutralised and cut */
	memset(longarg, 'b', 200);
	memcpy(longarg, "--global=", 9);
	longarg[12] = '\n';
	longarg[200] = '\0';
	CHECK(check(ARGV("npm", "install", longarg), 0, &t, &cap, &err) == -1);
	CHECK(strstr(err.message, "'--global=bbb?bbb") != NULL);
	CHECK(strstr(err.message, "...'") != NULL);
	CHECK(strchr(err.message, '\n') == NULL);
	free(longarg);
}

static void test_timeouts(void)
{
	struct tool_error err;
	int64_t t = 0;
	size_t cap = 0;

	CHECK(check(ARGV("ls"), 0, &t, &cap, &err) == 0);
	CHECK(t == 60000 && cap == 65536);
	CHECK(check(ARGV("npm", "run", "build"), 0, &t, &cap, &err) == 0);
	CHECK(t == 180000);
	CHECK(check(ARGV("npm", "run", "build"), 5000, &t, &cap, &err) == 0);
	CHECK(t == 5000);
	/* a call may ask for less time than the program gets, never more */
	CHECK(check(ARGV("npm", "run", "build"), 250000, &t, &cap, &err) == 0);
	CHECK(t == 180000);
	CHECK(check(ARGV("node", "a.js"), 300000, &t, &cap, &err) == 0);
	CHECK(t == 120000);
	CHECK(check(ARGV("ls"), 999999999, &t, &cap, &err) == 0);
	CHECK(t == 60000);
	CHECK(check(ARGV("ls"), 60001, &t, &cap, &err) == 0);
	CHECK(t == 60000);
	CHECK(check(ARGV("ls"), -5, &t, &cap, &err) == 0);
	CHECK(t == 60000);
}

/* Every argv denied with a message containing want. */
static int all_denied(const char *const *const *argvs, size_t n, const char *want)
{
	int ok = 1;

	for (size_t i = 0; i < n; i++) {
		if (denied_with(argvs[i], want))
			continue;
		fprintf(stderr, "  %s %s %s was not denied\n", argvs[i][0], argvs[i][1],
			argvs[i][2] ? argvs[i][2] : "");
		ok = 0;
	}
	return ok;
}

/* node runs scripts of the workspace; code on its command line does not
 * run, in any spelling node accepts. */
static void test_node_inline_code_denied(void)
{
	const char *const *const denied[] = {
		ARGV("node", "-e", "require('child_process')"),
		ARGV("node", "--eval", "1"),
		ARGV("node", "--eval=1"),
		ARGV("node", "-p", "1+1"),
		ARGV("node", "--print", "1"),
		ARGV("node", "--print=1"),
		ARGV("node", "-pe", "1"),
		ARGV("node", "-r", "./evil.js", "a.js"),
		ARGV("node", "--require=./evil.js", "a.js"),
		ARGV("node", "--require", "./evil.js", "a.js"),
		ARGV("node", "--import=./evil.mjs", "a.js"),
		ARGV("node", "--import", "data:text/javascript,1"),
		ARGV("node", "--loader", "./l.mjs", "a.js"),
		ARGV("node", "--experimental-loader=./l.mjs", "a.js"),
		ARGV("node", "--experimental_loader", "./l.mjs", "a.js"),
		ARGV("node", "--env-file=.env", "a.js"),
		ARGV("node", "--env-file-if-exists=.env", "a.js"),
		ARGV("node", "--run", "build"),
		ARGV("node", "-i"),
		ARGV("node", "--interactive"),
		ARGV("node", "--inspect-brk", "a.js"),
		ARGV("node", "--inspect=0.0.0.0:9229", "a.js"),
		ARGV("node", "--debug-port=1", "a.js"),
		ARGV("node", "--snapshot-blob", "s.blob"),
		ARGV("node", "--build-snapshot", "a.js"),
		ARGV("node", "--openssl-config=./o.cnf", "a.js"),
	};

	CHECK(all_denied(denied, ARRAY_SIZE(denied), "is denied for node (option '"));
	CHECK(allowed(ARGV("node", "scripts/build.js")));
	CHECK(allowed(ARGV("node", "--check", "a.js")));
	CHECK(allowed(ARGV("node", "--test")));
	CHECK(allowed(ARGV("node", "--enable-source-maps", "a.js")));
	CHECK(allowed(ARGV("node", "--no-warnings", "a.js")));
	CHECK(allowed(ARGV("node", "--experimental-vm-modules", "a.js")));
	CHECK(allowed(ARGV("node", "-C", "development", "a.js")));
	CHECK(allowed(ARGV("node", "--version")));
}

static int verdict_argv_is(const char *const *argv, const char *const *want)
{
	struct cmdpolicy_verdict v;
	struct tool_error err;
	size_t argc = 0, i;
	int ok;

	while (argv[argc])
		argc++;
	if (cmdpolicy_decide(&policy, argv, argc, 0, &v, &err) < 0) {
		fprintf(stderr, "  denied: %s\n", err.message);
		return 0;
	}
	for (i = 0; want[i] && v.argv[i] && !strcmp(want[i], v.argv[i]); i++)
		;
	ok = !want[i] && !v.argv[i] && v.argc == i;
	if (!ok)
		for (i = 0; i < v.argc; i++)
			fprintf(stderr, "  verdict argv[%zu] = %s\n", i, v.argv[i]);
	cmdpolicy_verdict_release(&v);
	return ok;
}

/* npm runs the script asked for, never lifecycle scripts around it or
 * install scripts: --ignore-scripts=true goes right after the subcommand,
 * and no spelling of the model's can turn it off. */
static void test_npm_lifecycle_scripts(void)
{
	const char *const *const denied[] = {
		ARGV("npm", "install", "--no-ignore-scripts"),
		ARGV("npm", "install", "--ignore-scripts=false"),
		ARGV("npm", "install", "--ignore-scripts", "false"),
		ARGV("npm", "ci", "--ignore-scr=false"),
		ARGV("npm", "ci", "--ig=false"),
		ARGV("npm", "run", "build", "-ignore-scripts=false"),
		ARGV("npm", "test", "---ignore-scripts=false"),
		ARGV("npm", "test", "--NO-ignore-scripts"),
		ARGV("npm", "test", "--no-no-no-ignore-scripts"),
		ARGV("npm", "install", "-lg", "left-pad"),
		ARGV("npm", "install", "-gD", "x"),
		ARGV("npm", "install", "--glob", "x"),
		ARGV("npm", "install", "-Cfoo"),
		ARGV("npm", "install", "--location=global", "x"),
		ARGV("npm", "run", "build", "--script-shell=./sh"),
		ARGV("npm", "test", "--node-options=--require=./evil.js"),
	};

	CHECK(all_denied(denied, ARRAY_SIZE(denied), "is denied for npm (option '"));
	CHECK(verdict_argv_is(ARGV("npm", "install"),
			      ARGV("npm", "install", "--ignore-scripts=true")));
	CHECK(verdict_argv_is(ARGV("npm", "install", "--save-dev", "vite"),
			      ARGV("npm", "install", "--ignore-scripts=true", "--save-dev", "vite")));
	CHECK(verdict_argv_is(ARGV("npm", "ci"), ARGV("npm", "ci", "--ignore-scripts=true")));
	CHECK(verdict_argv_is(ARGV("npm", "test"), ARGV("npm", "test", "--ignore-scripts=true")));
	CHECK(verdict_argv_is(ARGV("npm", "run", "build", "--", "--mode", "production"),
			      ARGV("npm", "run", "--ignore-scripts=true", "build", "--", "--mode",
				   "production")));
	CHECK(verdict_argv_is(ARGV("npm", "run-script", "lint"),
			      ARGV("npm", "run-script", "--ignore-scripts=true", "lint")));
	CHECK(verdict_argv_is(ARGV("npm", "ls", "--all"), ARGV("npm", "ls", "--all")));
	CHECK(verdict_argv_is(ARGV("ls", "-la"), ARGV("ls", "-la")));
	CHECK(allowed(ARGV("npm", "install", "-D", "-E", "vite")));
	CHECK(allowed(ARGV("npm", "install", "--legacy-peer-deps", "--no-audit", "--prefer-offline")));
	CHECK(allowed(ARGV("npm", "ls", "--depth=0")));
}

static json_object *parse(const char *text)
{
	json_object *o = json_tokener_parse(text);

	/* JSON null is json-c's NULL */
	CHECK(o != NULL || !strcmp(text, "null"));
	return o;
}

static int argv_shape(const char *json, const char *want_msg)
{
	json_object *o = parse(json);
	struct tool_error err;
	const char **argv = NULL;
	size_t argc = 0;
	int rc, ok;

	memset(&err, 0, sizeof(err));
	rc = cmdpolicy_argv_from_json(o, &argv, &argc, &err);
	if (!want_msg) {
		ok = rc == 0 && argv && argv[argc] == NULL;
	} else {
		ok = rc == -1 && !argv && !strcmp(err.code, "invalid_arguments") &&
		     strstr(err.message, want_msg);
		if (!ok)
			fprintf(stderr, "  %s -> %s: %s\n", json, err.code, err.message);
	}
	free(argv);
	json_object_put(o);
	return ok;
}

static void test_argv_shapes(void)
{
	struct strbuf big = STRBUF_INIT;
	size_t i;

	CHECK(argv_shape("[\"npm\", \"run\", \"build\"]", NULL));
	CHECK(argv_shape("\"npm run build\"", "never a shell string"));
	CHECK(argv_shape("[]", "must not be empty"));
	CHECK(argv_shape("{\"0\": \"ls\"}", "must be an array of strings"));
	CHECK(argv_shape("null", "must be an array of strings"));
	CHECK(argv_shape("[\"ls\", 1]", "argv[1] is not a string"));
	CHECK(argv_shape("[\"ls\", null]", "argv[1] is not a string"));
	CHECK(argv_shape("[[\"ls\"]]", "argv[0] is not a string"));
	CHECK(argv_shape("[\"ls\", \"a\\u0000b\"]", "argv[1] contains a NUL byte"));
	CHECK(argv_shape("[\"ls\", \"\xff\xfe\"]", "argv[1] is not valid UTF-8"));

	strbuf_addch(&big, '[');
	for (i = 0; i < 1025; i++)
		strbuf_addf(&big, "%s\"x\"", i ? "," : "");
	strbuf_addch(&big, ']');
	CHECK(argv_shape(big.buf, "at most 1024"));
	strbuf_release(&big);
}

static int load_text(const char *text, const char *want_err)
{
	json_object *o = parse(text);
	struct strbuf err = STRBUF_INIT;
	struct cmdpolicy p;
	int rc, ok;

	rc = cmdpolicy_load_json(&p, o, &err);
	if (!want_err)
		ok = rc == 0;
	else
		ok = rc == -1 && strstr(err.buf, want_err);
	if (!ok)
		fprintf(stderr, "  load %s -> %d: %s\n", text, rc, err.buf);
	cmdpolicy_release(&p);
	strbuf_release(&err);
	json_object_put(o);
	return ok;
}

static void test_loader_validation(void)
{
	CHECK(load_text("{\"programs\": {}}", NULL));
	CHECK(load_text("{\"programs\": {\"ls\": {}}, \"output_cap\": 100}", NULL));
	CHECK(load_text("[]", "must be a JSON object"));
	CHECK(load_text("{}", "needs a \"programs\" object"));
	CHECK(load_text("{\"programs\": {}, \"defualt_timeout_ms\": 5}", "unknown key defualt_timeout_ms"));
	CHECK(load_text("{\"programs\": {\"ls\": {\"deny\": []}}}", "unknown key programs.ls.deny"));
	CHECK(load_text("{\"programs\": {\"sh\": {}}}", "program 'sh' runs other programs"));
	CHECK(load_text("{\"programs\": {\"/usr/bin/bash\": {}}}", "runs other programs"));
	CHECK(load_text("{\"programs\": {\"env\": {}}}", "runs other programs"));
	CHECK(load_text("{\"programs\": {\"xargs\": {}}}", "runs other programs"));
	CHECK(load_text("{\"programs\": {}, \"max_timeout_ms\": \"5\"}", "must be an integer"));
	CHECK(load_text("{\"programs\": {}, \"max_timeout_ms\": 1.5}", "must be an integer"));
	CHECK(load_text("{\"programs\": {}, \"max_timeout_ms\": 0}", "must be between"));
	CHECK(load_text("{\"programs\": {}, \"max_args\": 5000}", "must be between"));
	CHECK(load_text("{\"programs\": {}, \"default_timeout_ms\": 9, \"max_timeout_ms\": 5}",
			"larger than max_timeout_ms"));
	CHECK(load_text("{\"programs\": {\"ls\": {\"timeout_ms\": 999999999}}}", "must be between"));
	CHECK(load_text("{\"programs\": {\"ls\": {\"deny_args\": [\"\"]}}}", "non-empty string"));
	CHECK(load_text("{\"programs\": {\"ls\": {\"deny_args\": \"-l\"}}}", "must be an array"));
	CHECK(load_text("{\"programs\": {\"ls\": {\"deny_args\": [\"a\\u0000b\"]}}}", "non-empty string"));
	CHECK(load_text("{\"programs\": {\"npm\": {\"script_subcommands\": [\"run\"]}}}",
			"has script_subcommands but no scripts"));
	CHECK(load_text("{\"programs\": {\"ls\": 5}}", "programs.ls must be an object"));
	CHECK(load_text("{\"programs\": {\"\": {}}}", "program names"));
	CHECK(load_text("{\"$comment\": \"why\", \"programs\": {\"ls\": {\"$comment\": [\"a\", \"b\"]}}}",
			NULL));
	CHECK(load_text("{\"$comment\": 5, \"programs\": {}}", "$comment must be a string"));
	CHECK(load_text("{\"programs\": {\"ls\": {\"$comment\": [1]}}}", "must be a string"));
	CHECK(load_text("{\"programs\": {\"node\": {\"deny_options\": [\"--eval\"]}}}",
			"without leading dashes"));
	CHECK(load_text("{\"programs\": {\"node\": {\"deny_options\": [\"eval=x\"]}}}",
			"without leading dashes"));
	CHECK(load_text("{\"programs\": {\"node\": {\"deny_options\": [\"No-warnings\"]}}}",
			"its no- forms are denied with it"));
	CHECK(load_text("{\"programs\": {\"npm\": {\"force_args\": {\"install\": [\"-x\"]}}}}",
			"not one of its subcommands"));
	CHECK(load_text("{\"programs\": {\"npm\": {\"subcommands\": [\"ci\"], "
			"\"force_args\": {\"install\": [\"-x\"]}}}}", "not one of its subcommands"));
	CHECK(load_text("{\"programs\": {\"npm\": {\"subcommands\": [\"ci\"], "
			"\"force_args\": {\"ci\": \"-x\"}}}}", "must be an array"));
	CHECK(load_text("{\"programs\": {\"npm\": {\"subcommands\": [\"ci\"], "
			"\"force_args\": [\"ci\"]}}}", "must be an object"));
	CHECK(load_text("{\"programs\": {\"npm\": {\"force_args\": {\"ci\": [\"-x\"]}, "
			"\"subcommands\": [\"ci\"]}}}", NULL));
}

static void test_load_file_errors(void)
{
	struct strbuf err = STRBUF_INIT;
	struct cmdpolicy p;

	CHECK(cmdpolicy_load(&p, "/nonexistent/policy.json", &err) == -1);
	CHECK(strstr(err.buf, "cannot read") != NULL);
	cmdpolicy_release(&p);
	strbuf_reset(&err);
	CHECK(cmdpolicy_load(&p, "Makefile", &err) == -1);
	CHECK(strstr(err.buf, "not valid JSON") != NULL);
	cmdpolicy_release(&p);
	strbuf_release(&err);
}

/* run_command refusals that happen before any sandbox is involved. */
static int tool_refuses(const char *args_json, const char *code, const char *msg)
{
	struct sandbox_config sc;
	struct strbuf summary = STRBUF_INIT;
	struct tool_error err;
	json_object *args = parse(args_json), *result = NULL;
	int rc, ok;

	sandbox_config_default(&sc);
	sc.bwrap_path = "/nonexistent/bwrap";
	memset(&err, 0, sizeof(err));
	rc = cmdtool_call(&policy, &sc, "/nonexistent-workspace", args, NULL, &result,
			  &summary, &err);
	ok = rc == -1 && !result && !strcmp(err.code, code) && strstr(err.message, msg);
	if (!ok)
		fprintf(stderr, "  %s -> %s: %s\n", args_json, err.code, err.message);
	json_object_put(result);
	json_object_put(args);
	strbuf_release(&summary);
	return ok;
}

static void test_tool_arguments(void)
{
	CHECK(tool_refuses("{\"argv\": \"npm run build\"}", "invalid_arguments",
			   "takes an argv array, never a shell string"));
	CHECK(tool_refuses("{}", "invalid_arguments", "argv is required"));
	CHECK(tool_refuses("[\"ls\"]", "invalid_arguments", "takes an object"));
	CHECK(tool_refuses("{\"argv\": [\"ls\"], \"cwd\": \"/\"}", "invalid_arguments",
			   "unknown argument 'cwd'"));
	CHECK(tool_refuses("{\"argv\": [\"ls\"], \"timeout_ms\": \"5\"}", "invalid_arguments",
			   "timeout_ms"));
	CHECK(tool_refuses("{\"argv\": [\"ls\"], \"timeout_ms\": 0}", "invalid_arguments",
			   "timeout_ms"));
	CHECK(tool_refuses("{\"argv\": [\"ls\", 3]}", "invalid_arguments", "argv[1]"));
	CHECK(tool_refuses("{\"argv\": [\"curl\", \"x\"]}", "command_denied",
			   "program 'curl' is not in the allowed programs"));
	CHECK(tool_refuses("{\"argv\": [\"npm\", \"i\", \"x\"]}", "command_denied",
			   "subcommand 'i' is not allowed"));
	/* allowed, but the sandbox cannot start */
	CHECK(tool_refuses("{\"argv\": [\"ls\"]}", "sandbox_unavailable", "workspace"));
}

static void test_schema(void)
{
	json_object *tools = json_object_new_array(), *entry, *fn, *v;

	cmdtool_add_schema(tools);
	CHECK(json_object_array_length(tools) == 1);
	entry = json_object_array_get_idx(tools, 0);
	CHECK(json_object_object_get_ex(entry, "function", &fn));
	CHECK(json_object_object_get_ex(fn, "name", &v));
	CHECK_STR(json_object_get_string(v), "run_command");
	CHECK(json_object_object_get_ex(fn, "parameters", &v));
	CHECK(json_object_object_get_ex(v, "required", &v));
	CHECK_STR(json_object_to_json_string(v), "[ \"argv\" ]");
	json_object_put(tools);
}

int main(void)
{
	struct strbuf err = STRBUF_INIT;

	if (cmdpolicy_load(&policy, POLICY_FILE, &err) < 0) {
		fprintf(stderr, "cannot load %s: %s\n", POLICY_FILE, err.buf);
		strbuf_release(&err);
		return 1;
	}
	RUN(test_shipped_policy_loads);
	RUN(test_allowed);
	RUN(test_denied_program);
	RUN(test_path_program_denied);
	RUN(test_denied_args);
	RUN(test_subcommands_and_scripts);
	RUN(test_limits_and_hostile_text);
	RUN(test_timeouts);
	RUN(test_node_inline_code_denied);
	RUN(test_npm_lifecycle_scripts);
	RUN(test_argv_shapes);
	RUN(test_loader_validation);
	RUN(test_load_file_errors);
	RUN(test_tool_arguments);
	RUN(test_schema);
	cmdpolicy_release(&policy);
	strbuf_release(&err);
	return harness_done("cmdpolicy");
}
