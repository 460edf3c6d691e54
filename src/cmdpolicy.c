/* cmdpolicy.c - loading the command policy and checking argv against it
 * (see cmdpolicy.h for the file format). */
#include "cmdpolicy.h"

#include <errno.h>
#include <json-c/json.h>
#include <string.h>

#include "fileutil.h"
#include "util.h"

#define POLICY_FILE_CAP (1024 * 1024)
#define POLICY_PROGRAMS_LIMIT 256
#define POLICY_LIST_LIMIT 1024
#define POLICY_STRING_LIMIT 256
/* How much of a hostile argument is echoed back in a denial message. */
#define QUOTE_BYTES 64
#define COMMENT_KEY "$comment"

#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_MAX_TIMEOUT_MS 300000
#define DEFAULT_OUTPUT_CAP 65536
#define DEFAULT_MAX_ARGS 64
#define DEFAULT_MAX_ARG_BYTES 4096

/* Programs whose job is to run a shell string or another program: listing
 * one would turn the allowlist into "anything". */
static const char *const refused_programs[] = {
	"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "pdksh", "rbash",
	"csh", "tcsh", "fish", "busybox", "env", "xargs", "nohup", "nice",
	"ionice", "timeout", "setsid", "stdbuf", "sudo", "su", "doas",
	"runuser", "setpriv", "chroot", "unshare", "nsenter", "bwrap", "flock",
	"script", "watch", "strace", "ltrace", "gdb", "taskset", "chrt",
	"time", "parallel", "ssh",
};

/* ---- loading ---- */

static void list_release(struct cmdpolicy_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->n = 0;
}

static int list_has(const struct cmdpolicy_list *l, const char *s)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (!strcmp(l->items[i], s))
			return 1;
	return 0;
}

/* A policy string: non-empty, bounded, no embedded NUL. */
static int policy_string(json_object *o, const char **out)
{
	const char *s;
	int len;

	if (!json_object_is_type(o, json_type_string))
		return -1;
	s = json_object_get_string(o);
	len = json_object_get_string_len(o);
	if (len <= 0 || len > POLICY_STRING_LIMIT || strlen(s) != (size_t)len)
		return -1;
	*out = s;
	return 0;
}

static int load_list(json_object *o, const char *what, struct cmdpolicy_list *l,
		     struct strbuf *err)
{
	size_t n, i;

	if (!json_object_is_type(o, json_type_array)) {
		strbuf_addf(err, "%s must be an array of strings", what);
		return -1;
	}
	n = json_object_array_length(o);
	if (n > POLICY_LIST_LIMIT) {
		strbuf_addf(err, "%s has more than %d entries", what, POLICY_LIST_LIMIT);
		return -1;
	}
	l->items = xcalloc(n ? n : 1, sizeof(*l->items));
	for (i = 0; i < n; i++) {
		const char *s;

		if (policy_string(json_object_array_get_idx(o, i), &s) < 0) {
			strbuf_addf(err, "%s[%zu] must be a non-empty string of at most %d bytes",
				    what, i, POLICY_STRING_LIMIT);
			return -1;
		}
		l->items[l->n++] = xstrdup(s);
	}
	return 0;
}

static int load_int(json_object *o, const char *what, int64_t min, int64_t max,
		    int64_t *out, struct strbuf *err)
{
	int64_t v;

	if (!json_object_is_type(o, json_type_int)) {
		strbuf_addf(err, "%s must be an integer", what);
		return -1;
	}
	errno = 0;
	v = json_object_get_int64(o);
	if (errno || v < min || v > max) {
		strbuf_addf(err, "%s must be between %lld and %lld", what,
			    (long long)min, (long long)max);
		return -1;
	}
	*out = v;
	return 0;
}

/* "$comment": a string or an array of strings, for the policy file to
 * explain itself (JSON has no comments); otherwise ignored. */
static int check_comment(json_object *o, const char *what, struct strbuf *err)
{
	size_t i, n;

	if (json_object_is_type(o, json_type_string))
		return 0;
	if (json_object_is_type(o, json_type_array)) {
		n = json_object_array_length(o);
		for (i = 0; i < n; i++)
			if (!json_object_is_type(json_object_array_get_idx(o, i),
						 json_type_string))
				break;
		if (i == n)
			return 0;
	}
	strbuf_addf(err, "%s must be a string or an array of strings", what);
	return -1;
}

static const char *base_name(const char *name)
{
	const char *slash = strrchr(name, '/');

	return slash ? slash + 1 : name;
}

/* deny_options entries are option names without dashes: "eval", "e",
 * "inspect*". */
static int check_option_names(const struct cmdpolicy_list *l, const char *what,
			      struct strbuf *err)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		const char *s = l->items[i];

		if (s[0] == '-' || strchr(s, '=') || !strcmp(s, "*")) {
			strbuf_addf(err, "%s[%zu] must be an option name without leading dashes "
				    "or '=' (\"eval\", \"e\", \"inspect*\")", what, i);
			return -1;
		}
		if (!strncasecmp(s, "no-", 3)) {
			strbuf_addf(err, "%s[%zu] must name the option itself: its no- forms are "
				    "denied with it", what, i);
			return -1;
		}
	}
	return 0;
}

/* "force_args": {"install": ["--ignore-scripts=true"], ...} */
static int load_forced(struct cmdpolicy_program *prog, json_object *o, const char *what,
		       struct strbuf *err)
{
	struct strbuf sub = STRBUF_INIT;
	size_t n;
	int ret = -1;

	if (!json_object_is_type(o, json_type_object)) {
		strbuf_addf(err, "%s must be an object of subcommand: [arguments]", what);
		return -1;
	}
	n = (size_t)json_object_object_length(o);
	if (n > POLICY_LIST_LIMIT) {
		strbuf_addf(err, "%s has more than %d entries", what, POLICY_LIST_LIMIT);
		return -1;
	}
	prog->forced = xcalloc(n ? n : 1, sizeof(*prog->forced));
	json_object_object_foreach(o, key, val) {
		struct cmdpolicy_forced *f = &prog->forced[prog->nforced++];

		f->subcommand = xstrdup(key);
		strbuf_reset(&sub);
		strbuf_addf(&sub, "%s.%s", what, key);
		if (load_list(val, sub.buf, &f->args, err) < 0)
			goto out;
	}
	ret = 0;
out:
	strbuf_release(&sub);
	return ret;
}

static int load_program(struct cmdpolicy_program *prog, const char *name,
			json_object *o, const struct cmdpolicy *p, struct strbuf *err)
{
	struct strbuf what = STRBUF_INIT;
	int ret = -1;
	size_t i;

	prog->name = xstrdup(name);
	if (!*name || strlen(name) > POLICY_STRING_LIMIT) {
		strbuf_addf(err, "program names must be 1 to %d bytes", POLICY_STRING_LIMIT);
		goto out;
	}
	for (i = 0; i < ARRAY_SIZE(refused_programs); i++) {
		if (!strcmp(base_name(name), refused_programs[i])) {
			strbuf_addf(err, "program '%s' runs other programs or shell strings "
				    "and cannot be allowed", name);
			goto out;
		}
	}
	if (!json_object_is_type(o, json_type_object)) {
		strbuf_addf(err, "programs.%s must be an object", name);
		goto out;
	}
	json_object_object_foreach(o, key, val) {
		int64_t v;

		strbuf_reset(&what);
		strbuf_addf(&what, "programs.%s.%s", name, key);
		if (!strcmp(key, COMMENT_KEY)) {
			if (check_comment(val, what.buf, err) < 0)
				goto out;
		} else if (!strcmp(key, "subcommands")) {
			prog->has_subcommands = 1;
			if (load_list(val, what.buf, &prog->subcommands, err) < 0)
				goto out;
		} else if (!strcmp(key, "script_subcommands")) {
			if (load_list(val, what.buf, &prog->script_subcommands, err) < 0)
				goto out;
		} else if (!strcmp(key, "scripts")) {
			if (load_list(val, what.buf, &prog->scripts, err) < 0)
				goto out;
		} else if (!strcmp(key, "deny_args")) {
			if (load_list(val, what.buf, &prog->deny_args, err) < 0)
				goto out;
		} else if (!strcmp(key, "deny_options")) {
			if (load_list(val, what.buf, &prog->deny_options, err) < 0 ||
			    check_option_names(&prog->deny_options, what.buf, err) < 0)
				goto out;
		} else if (!strcmp(key, "force_args")) {
			if (load_forced(prog, val, what.buf, err) < 0)
				goto out;
		} else if (!strcmp(key, "timeout_ms")) {
			if (load_int(val, what.buf, 1, p->max_timeout_ms, &v, err) < 0)
				goto out;
			prog->timeout_ms = v;
		} else if (!strcmp(key, "output_cap")) {
			if (load_int(val, what.buf, 1, CMDPOLICY_OUTPUT_CAP_LIMIT, &v, err) < 0)
				goto out;
			prog->output_cap = (size_t)v;
		} else {
			strbuf_addf(err, "unknown key %s", what.buf);
			goto out;
		}
	}
	if (prog->script_subcommands.n && !json_object_object_get_ex(o, "scripts", NULL)) {
		strbuf_addf(err, "programs.%s has script_subcommands but no scripts", name);
		goto out;
	}
	for (i = 0; i < prog->nforced; i++) {
		if (!list_has(&prog->subcommands, prog->forced[i].subcommand)) {
			strbuf_addf(err, "programs.%s.force_args names '%s', which is not one of "
				    "its subcommands", name, prog->forced[i].subcommand);
			goto out;
		}
	}
	ret = 0;
out:
	strbuf_release(&what);
	return ret;
}

/* Top-level numbers first: program entries are validated against them. */
static int load_limits(struct cmdpolicy *p, json_object *root, struct strbuf *err)
{
	int64_t v;

	json_object_object_foreach(root, key, val) {
		if (!strcmp(key, "default_timeout_ms")) {
			if (load_int(val, key, 1, CMDPOLICY_TIMEOUT_LIMIT_MS, &v, err) < 0)
				return -1;
			p->default_timeout_ms = v;
		} else if (!strcmp(key, "max_timeout_ms")) {
			if (load_int(val, key, 1, CMDPOLICY_TIMEOUT_LIMIT_MS, &v, err) < 0)
				return -1;
			p->max_timeout_ms = v;
		} else if (!strcmp(key, "output_cap")) {
			if (load_int(val, key, 1, CMDPOLICY_OUTPUT_CAP_LIMIT, &v, err) < 0)
				return -1;
			p->output_cap = (size_t)v;
		} else if (!strcmp(key, "max_args")) {
			if (load_int(val, key, 1, CMDPOLICY_ARGS_LIMIT, &v, err) < 0)
				return -1;
			p->max_args = (size_t)v;
		} else if (!strcmp(key, "max_arg_bytes")) {
			if (load_int(val, key, 1, CMDPOLICY_ARG_BYTES_LIMIT, &v, err) < 0)
				return -1;
			p->max_arg_bytes = (size_t)v;
		} else if (!strcmp(key, COMMENT_KEY)) {
			if (check_comment(val, key, err) < 0)
				return -1;
		} else if (strcmp(key, "programs")) {
			strbuf_addf(err, "unknown key %s", key);
			return -1;
		}
	}
	if (p->default_timeout_ms > p->max_timeout_ms) {
		strbuf_addstr(err, "default_timeout_ms is larger than max_timeout_ms");
		return -1;
	}
	return 0;
}

int cmdpolicy_load_json(struct cmdpolicy *p, json_object *root, struct strbuf *err)
{
	json_object *programs;
	size_t n;

	memset(p, 0, sizeof(*p));
	p->default_timeout_ms = DEFAULT_TIMEOUT_MS;
	p->max_timeout_ms = DEFAULT_MAX_TIMEOUT_MS;
	p->output_cap = DEFAULT_OUTPUT_CAP;
	p->max_args = DEFAULT_MAX_ARGS;
	p->max_arg_bytes = DEFAULT_MAX_ARG_BYTES;

	if (!json_object_is_type(root, json_type_object)) {
		strbuf_addstr(err, "the policy must be a JSON object");
		return -1;
	}
	if (load_limits(p, root, err) < 0)
		return -1;
	if (!json_object_object_get_ex(root, "programs", &programs) ||
	    !json_object_is_type(programs, json_type_object)) {
		strbuf_addstr(err, "the policy needs a \"programs\" object");
		return -1;
	}
	n = (size_t)json_object_object_length(programs);
	if (n > POLICY_PROGRAMS_LIMIT) {
		strbuf_addf(err, "more than %d programs", POLICY_PROGRAMS_LIMIT);
		return -1;
	}
	p->programs = xcalloc(n ? n : 1, sizeof(*p->programs));
	json_object_object_foreach(programs, name, val) {
		if (load_program(&p->programs[p->nprograms++], name, val, p, err) < 0)
			return -1;
	}
	return 0;
}

int cmdpolicy_load(struct cmdpolicy *p, const char *path, struct strbuf *err)
{
	struct strbuf text = STRBUF_INIT;
	json_tokener *tok = NULL;
	json_object *root = NULL;
	size_t mark, end;
	int ret = -1, rc;

	memset(p, 0, sizeof(*p));
	rc = file_read_capped(path, POLICY_FILE_CAP, &text);
	if (rc < 0) {
		strbuf_addf(err, "cannot read %s: %s", path,
			    rc == -EFBIG ? "file too large" : strerror(-rc));
		goto out;
	}
	tok = json_tokener_new();
	if (!tok) {
		strbuf_addstr(err, "out of memory");
		goto out;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	root = json_tokener_parse_ex(tok, text.buf, (int)text.len);
	end = root ? json_tokener_get_parse_end(tok) : 0;
	while (end < text.len && strchr(" \t\r\n", text.buf[end]) && text.buf[end])
		end++;
	if (!root || json_tokener_get_error(tok) != json_tokener_success || end != text.len) {
		strbuf_addf(err, "%s is not valid JSON", path);
		goto out;
	}
	mark = err->len;
	strbuf_addf(err, "%s: ", path);
	if (cmdpolicy_load_json(p, root, err) < 0)
		goto out;
	strbuf_setlen(err, mark);
	ret = 0;
out:
	json_object_put(root);
	if (tok)
		json_tokener_free(tok);
	strbuf_release(&text);
	return ret;
}

void cmdpolicy_release(struct cmdpolicy *p)
{
	size_t i;

	for (i = 0; i < p->nprograms; i++) {
		struct cmdpolicy_program *prog = &p->programs[i];

		free(prog->name);
		list_release(&prog->subcommands);
		list_release(&prog->script_subcommands);
		list_release(&prog->scripts);
		list_release(&prog->deny_args);
		list_release(&prog->deny_options);
		for (size_t k = 0; k < prog->nforced; k++) {
			free(prog->forced[k].subcommand);
			list_release(&prog->forced[k].args);
		}
		free(prog->forced);
	}
	free(p->programs);
	memset(p, 0, sizeof(*p));
}

/* ---- checking ---- */

/* A hostile argument made safe to echo: control bytes become '?', long ones
 * are cut (on a UTF-8 boundary) and marked. */
static void quote_arg(struct strbuf *sb, const char *s)
{
	size_t len = strlen(s), take = len, i;

	if (take > QUOTE_BYTES) {
		take = QUOTE_BYTES;
		while (take && ((unsigned char)s[take] & 0xC0) == 0x80)
			take--;
	}
	strbuf_addch(sb, '\'');
	for (i = 0; i < take; i++) {
		unsigned char c = (unsigned char)s[i];

		strbuf_addch(sb, c < 0x20 || c == 0x7f ? '?' : (char)c);
	}
	strbuf_addstr(sb, take < len ? "...'" : "'");
}

static void join_list(struct strbuf *sb, const struct cmdpolicy_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		strbuf_addf(sb, "%s%s", i ? ", " : "", l->items[i]);
}

static int deny_pattern_matches(const char *pattern, const char *arg)
{
	size_t plen = strlen(pattern);

	if (plen && pattern[plen - 1] == '*')
		return !strncmp(arg, pattern, plen - 1);
	return !strcmp(arg, pattern);
}

/*
 * The option an argument names, read the way the programs we allow read
 * them (npm's nopt and node's parser together): any number of leading
 * dashes, the value after '=' cut off, and "no-" negations (in any case)
 * stripped. Returns the name's length (*name points into arg), 0 when arg
 * is not an option.
 */
static size_t option_name(const char *arg, const char **name)
{
	if (arg[0] != '-')
		return 0;
	while (*arg == '-')
		arg++;
	while (!strncasecmp(arg, "no-", 3))
		arg += 3;
	*name = arg;
	return strcspn(arg, "=");
}

/* node reads '_' in option names as '-' (--experimental_loader). */
static int option_char_eq(char a, char b)
{
	return (a == '_' ? '-' : a) == (b == '_' ? '-' : b);
}

/* Whether an option name (not NUL-terminated) is the entry's option: the
 * name itself, "stem*" for every name that starts with stem, or an
 * abbreviation of two characters or more, which npm accepts when it is
 * unambiguous (--ignore-scr). */
static int option_matches(const char *entry, const char *name, size_t len)
{
	size_t elen = strlen(entry), stem, n, i;
	int wildcard = elen && entry[elen - 1] == '*';

	stem = wildcard ? elen - 1 : elen;
	n = len < stem ? len : stem;
	for (i = 0; i < n; i++)
		if (!option_char_eq(entry[i], name[i]))
			return 0;
	if (len >= stem)
		return len == stem || wildcard;
	return len >= 2;
}

/* A group of single-letter flags (-lg is -l -g to npm, -pe is -p -e to
 * node): denied when one of its letters is a one-letter entry. */
static const char *grouped_flag_denied(const struct cmdpolicy_program *prog,
				       const char *arg)
{
	const char *c;
	size_t j;

	if (arg[0] != '-' || arg[1] == '-' || !arg[1])
		return NULL;
	for (c = arg + 1; *c && *c != '='; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9')))
			return NULL;
	for (c = arg + 1; *c && *c != '='; c++)
		for (j = 0; j < prog->deny_options.n; j++)
			if (prog->deny_options.items[j][0] == *c &&
			    !prog->deny_options.items[j][1])
				return prog->deny_options.items[j];
	return NULL;
}

/* The deny_options entry arg falls under, or NULL. */
static const char *denied_option(const struct cmdpolicy_program *prog, const char *arg)
{
	const char *name;
	size_t len = option_name(arg, &name), j;

	if (!len)
		return NULL;
	for (j = 0; j < prog->deny_options.n; j++)
		if (option_matches(prog->deny_options.items[j], name, len))
			return prog->deny_options.items[j];
	return grouped_flag_denied(prog, arg);
}

static const struct cmdpolicy_program *find_program(const struct cmdpolicy *p,
						    const char *name)
{
	size_t i;

	for (i = 0; i < p->nprograms; i++)
		if (!strcmp(p->programs[i].name, name))
			return &p->programs[i];
	return NULL;
}

static int deny(struct tool_error *err, struct strbuf *msg)
{
	tool_error_set(err, "command_denied", "%s", msg->buf);
	strbuf_release(msg);
	return -1;
}

static int check_program(const struct cmdpolicy_program *prog, const char *const *argv,
			 size_t argc, struct strbuf *msg)
{
	const char *rule;
	size_t i, j;

	for (i = 1; i < argc; i++) {
		for (j = 0; j < prog->deny_args.n; j++) {
			if (!deny_pattern_matches(prog->deny_args.items[j], argv[i]))
				continue;
			strbuf_addstr(msg, "argument ");
			quote_arg(msg, argv[i]);
			strbuf_addf(msg, " is denied for %s (rule '%s')", prog->name,
				    prog->deny_args.items[j]);
			return -1;
		}
		rule = denied_option(prog, argv[i]);
		if (rule) {
			strbuf_addstr(msg, "argument ");
			quote_arg(msg, argv[i]);
			strbuf_addf(msg, " is denied for %s (option '%s', in any spelling)",
				    prog->name, rule);
			return -1;
		}
	}
	if (prog->has_subcommands) {
		if (argc < 2 || !list_has(&prog->subcommands, argv[1])) {
			if (argc < 2) {
				strbuf_addf(msg, "%s needs a subcommand", prog->name);
			} else {
				strbuf_addstr(msg, "subcommand ");
				quote_arg(msg, argv[1]);
				strbuf_addf(msg, " is not allowed for %s", prog->name);
			}
			strbuf_addstr(msg, " (allowed: ");
			join_list(msg, &prog->subcommands);
			strbuf_addch(msg, ')');
			return -1;
		}
	}
	if (argc >= 3 && list_has(&prog->script_subcommands, argv[1]) &&
	    !list_has(&prog->scripts, argv[2])) {
		strbuf_addstr(msg, "script ");
		quote_arg(msg, argv[2]);
		strbuf_addf(msg, " is not allowed for '%s %s' (allowed: ", prog->name, argv[1]);
		join_list(msg, &prog->scripts);
		strbuf_addch(msg, ')');
		return -1;
	}
	return 0;
}

static const struct cmdpolicy_list *forced_args(const struct cmdpolicy_program *prog,
						 const char *subcommand)
{
	size_t i;

	for (i = 0; i < prog->nforced; i++)
		if (!strcmp(prog->forced[i].subcommand, subcommand))
			return &prog->forced[i].args;
	return NULL;
}

/* argv with the policy's forced arguments right after the subcommand:
 * there no argument of the model's can take one as its value (npm's
 * --depth would take the next argument) and they come before any "--";
 * only a later spelling of the same option could undo them, and
 * deny_options refuses those. */
static void verdict_argv(const struct cmdpolicy_program *prog, const char *const *argv,
			 size_t argc, struct cmdpolicy_verdict *v)
{
	const struct cmdpolicy_list *f = prog->has_subcommands && argc >= 2
					 ? forced_args(prog, argv[1]) : NULL;
	size_t nf = f ? f->n : 0, i, n = 0;

	v->argv = xcalloc(argc + nf + 1, sizeof(*v->argv));
	for (i = 0; i < argc; i++) {
		v->argv[n++] = argv[i];
		if (i == 1)
			for (size_t k = 0; k < nf; k++)
				v->argv[n++] = f->items[k];
	}
	v->argv[n] = NULL;
	v->argc = n;
}

void cmdpolicy_verdict_release(struct cmdpolicy_verdict *v)
{
	free(v->argv);
	memset(v, 0, sizeof(*v));
}

int cmdpolicy_check(const struct cmdpolicy *p, const char *const *argv, size_t argc,
		    int64_t requested_timeout_ms, int64_t *timeout_ms,
		    size_t *output_cap, struct tool_error *err)
{
	struct cmdpolicy_verdict v;

	if (cmdpolicy_decide(p, argv, argc, requested_timeout_ms, &v, err) < 0)
		return -1;
	*timeout_ms = v.timeout_ms;
	*output_cap = v.output_cap;
	cmdpolicy_verdict_release(&v);
	return 0;
}

int cmdpolicy_decide(const struct cmdpolicy *p, const char *const *argv, size_t argc,
		     int64_t requested_timeout_ms, struct cmdpolicy_verdict *v,
		     struct tool_error *err)
{
	struct strbuf msg = STRBUF_INIT;
	const struct cmdpolicy_program *prog;
	int64_t t;
	size_t i;

	memset(v, 0, sizeof(*v));
	if (!argv || argc == 0 || !argv[0] || !*argv[0]) {
		strbuf_addstr(&msg, "argv must name a program");
		return deny(err, &msg);
	}
	if (argc > p->max_args) {
		strbuf_addf(&msg, "argv has %zu elements; the policy allows at most %zu",
			    argc, p->max_args);
		return deny(err, &msg);
	}
	for (i = 0; i < argc; i++) {
		if (!argv[i]) {
			strbuf_addf(&msg, "argv[%zu] is missing", i);
			return deny(err, &msg);
		}
		if (strnlen(argv[i], p->max_arg_bytes + 1) > p->max_arg_bytes) {
			strbuf_addf(&msg, "argv[%zu] is longer than the policy's %zu bytes",
				    i, p->max_arg_bytes);
			return deny(err, &msg);
		}
	}

	prog = find_program(p, argv[0]);
	if (!prog) {
		strbuf_addstr(&msg, "program ");
		quote_arg(&msg, argv[0]);
		if (strchr(argv[0], '/')) {
			strbuf_addstr(&msg, " is a path; only programs from the allowed "
				      "list may run, by bare name");
		} else {
			strbuf_addstr(&msg, " is not in the allowed programs (");
			for (i = 0; i < p->nprograms; i++)
				strbuf_addf(&msg, "%s%s", i ? ", " : "", p->programs[i].name);
			strbuf_addch(&msg, ')');
		}
		return deny(err, &msg);
	}
	if (check_program(prog, argv, argc, &msg) < 0)
		return deny(err, &msg);

	/* the model may ask for less time than the program gets, never more */
	t = prog->timeout_ms ? prog->timeout_ms : p->default_timeout_ms;
	if (requested_timeout_ms > 0 && requested_timeout_ms < t)
		t = requested_timeout_ms;
	if (t > p->max_timeout_ms)
		t = p->max_timeout_ms;
	v->timeout_ms = t;
	v->output_cap = prog->output_cap ? prog->output_cap : p->output_cap;
	verdict_argv(prog, argv, argc, v);
	strbuf_release(&msg);
	return 0;
}

int cmdpolicy_argv_from_json(json_object *arr, const char ***argv, size_t *argc,
			     struct tool_error *err)
{
	const char **v;
	size_t n, i;

	*argv = NULL;
	*argc = 0;
	if (json_object_is_type(arr, json_type_string)) {
		tool_error_set(err, "invalid_arguments",
			       "argv must be an array of strings, never a shell string");
		return -1;
	}
	if (!arr || !json_object_is_type(arr, json_type_array)) {
		tool_error_set(err, "invalid_arguments", "argv must be an array of strings");
		return -1;
	}
	n = json_object_array_length(arr);
	if (n == 0) {
		tool_error_set(err, "invalid_arguments", "argv must not be empty");
		return -1;
	}
	if (n > CMDPOLICY_ARGS_LIMIT) {
		tool_error_set(err, "invalid_arguments", "argv has %zu elements; at most %d",
			       n, CMDPOLICY_ARGS_LIMIT);
		return -1;
	}
	v = xcalloc(n + 1, sizeof(*v));
	for (i = 0; i < n; i++) {
		json_object *el = json_object_array_get_idx(arr, i);
		const char *s;
		size_t len;

		if (!json_object_is_type(el, json_type_string)) {
			tool_error_set(err, "invalid_arguments", "argv[%zu] is not a string", i);
			goto fail;
		}
		s = json_object_get_string(el);
		len = (size_t)json_object_get_string_len(el);
		if (strlen(s) != len) {
			tool_error_set(err, "invalid_arguments", "argv[%zu] contains a NUL byte", i);
			goto fail;
		}
		if (!utf8_valid(s, len)) {
			tool_error_set(err, "invalid_arguments", "argv[%zu] is not valid UTF-8", i);
			goto fail;
		}
		v[i] = s;
	}
	*argv = v;
	*argc = n;
	return 0;
fail:
	free(v);
	return -1;
}
