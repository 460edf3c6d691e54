/* config.c - kiln.conf parsing with environment overrides (see config.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileutil.h"
#include "strbuf.h"
#include "util.h"

enum key_type { KEY_STR, KEY_INT, KEY_MODE /* octal permission bits */ };

struct config_key {
	const char *name;
	enum key_type type;
	size_t offset;
	const char *def;  /* default, as text */
	int64_t min, max; /* for KEY_INT */
	int secret;       /* never printed */
	const char *env;  /* extra environment name, beyond KILN_<NAME> */
};

#define S(n, d) { #n, KEY_STR, offsetof(struct config, n), d, 0, 0, 0, NULL }
#define SS(n, d, e) { #n, KEY_STR, offsetof(struct config, n), d, 0, 0, 1, e }
#define SE(n, d, e) { #n, KEY_STR, offsetof(struct config, n), d, 0, 0, 0, e }
#define I(n, d, lo, hi) { #n, KEY_INT, offsetof(struct config, n), #d, lo, hi, 0, NULL }
#define M(n, d) { #n, KEY_MODE, offsetof(struct config, n), d, 0, 0777, 0, NULL }

/* The documentation of each key lives in docs/CONFIG.md, in this order. */
static const struct config_key keys[] = {
	S(state_dir, "var"),
	S(listen, ""),
	S(stream_listen, ""),
	M(socket_mode, "0660"),
	S(socket_group, ""),
	I(workers, 4, 1, CONFIG_MAX_WORKERS),
	I(max_requests_per_worker, 10000, 1, 1000000000),
	I(request_timeout_s, 30, 1, 3600),
	I(shutdown_grace_s, 10, 1, 600),
	I(stream_processes, 1, 1, CONFIG_MAX_STREAM_PROCESSES),
	I(stream_max_per_process, 2048, 1, 65536),
	I(stream_poll_ms, 5, 1, 1000),
	I(stream_keepalive_s, 15, 1, 600),
	I(stream_channel_max_events, 200000, 10, 10000000),
	I(max_body_bytes, 8388608, 1024, 1073741824),
	S(db_host, "127.0.0.1"),
	I(db_port, 3306, 0, 65535),
	S(db_socket, ""),
	S(db_user, "kiln"),
	SS(db_password, "", NULL),
	S(db_name, "kiln"),
	I(db_connect_retries, 3, 0, 100),
	I(db_io_timeout_s, 180, 10, 86400),
	SE(model_base_url, "http://127.0.0.1:9400/v1", "KILN_MODEL_BASE_URL"),
	SS(model_api_key, "", "KILN_MODEL_API_KEY"),
	SE(model, "kiln-scripted", "KILN_MODEL"),
	I(model_connect_timeout_ms, 5000, 100, 600000),
	I(model_idle_timeout_ms, 60000, 100, 3600000),
	I(model_max_retries, 4, 0, 20),
	I(model_retry_base_ms, 500, 1, 60000),
	I(model_retry_budget_ms, 60000, 0, 3600000),
	I(model_total_timeout_ms, 600000, 1000, 86400000),
	S(agent_profile, "tools/agent-profile.json"),
	S(command_policy, "tools/command-policy.json"),
	I(runner_max_concurrent, 4, 1, 256),
	I(runner_lease_s, 15, 2, 3600),
	I(runner_max_attempts, 3, 1, 100),
	I(runner_poll_ms, 200, 10, 10000),
	I(delta_coalesce_ms, 30, 0, 10000),
	I(delta_coalesce_bytes, 1024, 1, 1048576),
	I(history_budget_bytes, 200000, 1000, 100000000),
	S(publish_base_url, "http://127.0.0.1:8080/sites"),
	I(preview_ttl_s, 3600, 10, 604800),
	I(sandbox_uid, 65534, 0, 4294967294LL),
	I(sandbox_gid, 65534, 0, 4294967294LL),
	I(sandbox_mem_mb, 2048, 16, 1048576),
	I(sandbox_cpu_s, 120, 1, 86400),
	I(sandbox_max_procs, 256, 8, 65536),
	I(ws_max_file_bytes, 2097152, 1, 1073741824),
	I(ws_max_total_bytes, 104857600, 1, 68719476736LL),
	I(ws_max_files, 5000, 1, 1000000),
	S(ignored_dirs, ""),
	I(checkpoint_keep_newest, 20, 1, 1000000),
	I(checkpoint_max_age_days, 30, 0, 36500),
	S(secret_file, ""),
	S(schema_dir, "schema"),
	I(auth_cache_ms, 1000, 0, 60000),
};

static const struct config_key *find_key(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(keys); i++)
		if (strlen(keys[i].name) == len && !memcmp(keys[i].name, name, len))
			return &keys[i];
	return NULL;
}

/* 1 to 4 octal digits, at most 0777 (no setuid, setgid or sticky bit). */
static int parse_mode(const char *s, int64_t *out)
{
	int64_t v = 0;
	size_t i, n = strlen(s);

	if (n < 1 || n > 4)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '7')
			return -1;
		v = v * 8 + (s[i] - '0');
	}
	if (v > 0777)
		return -1;
	*out = v;
	return 0;
}

static int set_value(struct config *cfg, const struct config_key *k,
		     const char *value, const char *origin, struct strbuf *err)
{
	char *base = (char *)cfg;

	if (k->type == KEY_STR) {
		char **slot = (char **)(base + k->offset);

		free(*slot);
		*slot = xstrdup(value);
		return 0;
	}
	if (k->type == KEY_MODE) {
		if (parse_mode(value, (int64_t *)(base + k->offset)) < 0) {
			strbuf_addf(err, "%s: %s must be octal permission bits such as 0660", origin,
				    k->name);
			return -1;
		}
		return 0;
	}
	if (parse_int64(value, k->min, k->max, (int64_t *)(base + k->offset)) < 0) {
		strbuf_addf(err, "%s: %s must be an integer from %lld to %lld",
			    origin, k->name, (long long)k->min, (long long)k->max);
		return -1;
	}
	return 0;
}

/* Bytes that may surround a key, the '=' and an unquoted value. */
static int is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

static int key_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
}

/*
 * Reads the value that starts at s (the line's rest, len bytes, leading
 * blanks already skipped) into out. A value in double quotes keeps every
 * byte, '#' and blanks included; \" and \\ are its only escapes and nothing
 * but blanks may follow the closing quote. An unquoted value runs to the end
 * of the line, trailing blanks cut; a '#' after a blank is refused there,
 * because in other formats it would start a comment: what was meant as one
 * must not silently become part of a value (a password, a path).
 */
static int parse_value(const char *s, size_t len, struct strbuf *out, const char **why)
{
	size_t i;

	strbuf_reset(out);
	if (len && s[0] == '"') {
		for (i = 1; i < len && s[i] != '"'; i++) {
			if (s[i] == '\\') {
				if (i + 1 >= len || (s[i + 1] != '"' && s[i + 1] != '\\')) {
					*why = "only \\\" and \\\\ may follow a backslash in a quoted value";
					return -1;
				}
				i++;
			}
			strbuf_addch(out, s[i]);
		}
		if (i >= len) {
			*why = "the quoted value has no closing '\"'";
			return -1;
		}
		for (i++; i < len; i++)
			if (!is_blank(s[i])) {
				*why = "nothing but blanks may follow a quoted value";
				return -1;
			}
		return 0;
	}
	while (len && is_blank(s[len - 1]))
		len--;
	for (i = 1; i < len; i++)
		if (s[i] == '#' && is_blank(s[i - 1])) {
			*why = "'#' only starts a comment at the start of a line; quote the value "
			       "(\"...\") if the '#' belongs to it, or move the comment to its own line";
			return -1;
		}
	strbuf_add(out, s, len);
	return 0;
}

/* One "key = value" line (without its '\n'); blank lines and lines whose
 * first non-blank byte is '#' are skipped. */
static int parse_line(struct config *cfg, const char *line, size_t len, const char *origin,
		      struct strbuf *err)
{
	struct strbuf value = STRBUF_INIT;
	const struct config_key *k;
	const char *why = NULL;
	size_t i = 0, key_start, key_len;
	int ret = -1;

	while (i < len && is_blank(line[i]))
		i++;
	if (i == len || line[i] == '#')
		return 0;
	key_start = i;
	while (i < len && key_char(line[i]))
		i++;
	key_len = i - key_start;
	while (i < len && is_blank(line[i]))
		i++;
	if (key_len == 0 || i == len || line[i] != '=') {
		strbuf_addf(err, "%s: expected key = value", origin);
		goto out;
	}
	for (i++; i < len && is_blank(line[i]); i++)
		;
	k = find_key(line + key_start, key_len);
	if (!k) {
		strbuf_addf(err, "%s: unknown key '%.*s'", origin, (int)key_len, line + key_start);
		goto out;
	}
	if (parse_value(line + i, len - i, &value, &why) < 0) {
		strbuf_addf(err, "%s: %s: %s", origin, k->name, why);
		goto out;
	}
	ret = set_value(cfg, k, strbuf_str(&value), origin, err);
out:
	strbuf_release(&value);
	return ret;
}

static int parse_file(struct config *cfg, const char *path, struct strbuf *err)
{
	struct strbuf text = STRBUF_INIT, origin = STRBUF_INIT;
	const char *p, *end;
	int lineno = 0, ret = -1, rc;

	rc = file_read_capped(path, 1 << 20, &text);
	if (rc < 0) {
		strbuf_addf(err, "cannot read %s: %s", path, strerror(-rc));
		goto out;
	}
	/* Lines are split here, not with strtok: an empty line is a line, so
	 * every message names the line an editor shows. */
	p = strbuf_str(&text);
	for (end = p + text.len; p < end; p++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

		lineno++;
		strbuf_reset(&origin);
		strbuf_addf(&origin, "%s:%d", path, lineno);
		if (memchr(p, '\0', len)) {
			strbuf_addf(err, "%s: the line holds a NUL byte", origin.buf);
			goto out;
		}
		if (parse_line(cfg, p, len, origin.buf, err) < 0)
			goto out;
		p += len;
	}
	ret = 0;
out:
	strbuf_release(&text);
	strbuf_release(&origin);
	return ret;
}

static int apply_env(struct config *cfg, struct strbuf *err)
{
	struct strbuf name = STRBUF_INIT;
	size_t i;
	int ret = 0;

	for (i = 0; i < ARRAY_SIZE(keys) && !ret; i++) {
		const char *v = NULL;
		const char *p;

		strbuf_reset(&name);
		strbuf_addstr(&name, "KILN_");
		for (p = keys[i].name; *p; p++)
			strbuf_addch(&name, (char)toupper((unsigned char)*p));
		if (keys[i].env)
			v = getenv(keys[i].env);
		if (!v)
			v = getenv(name.buf);
		if (v)
			ret = set_value(cfg, &keys[i], v, keys[i].env ? keys[i].env : name.buf, err);
	}
	strbuf_release(&name);
	return ret;
}

/* socket_group is a group name or a numeric gid; empty means the group the
 * process runs as. An unknown name is an error at start-up, not at bind. */
static int resolve_socket_group(struct config *cfg, struct strbuf *err)
{
	struct group grp, *found = NULL;
	char *buf = NULL;
	size_t size = 1024;
	int64_t gid;
	int rc, ret = -1;

	if (!*cfg->socket_group) {
		cfg->socket_gid = (int64_t)getegid();
		return 0;
	}
	if (parse_int64(cfg->socket_group, 0, 4294967294LL, &gid) == 0) {
		cfg->socket_gid = gid;
		return 0;
	}
	/* The group database may hold long member lists: grow the buffer,
	 * within reason. */
	for (;;) {
		buf = xrealloc(buf, size, 1);
		rc = getgrnam_r(cfg->socket_group, &grp, buf, size, &found);
		if (rc != ERANGE || size >= (1u << 20))
			break;
		size *= 2;
	}
	if (rc) {
		strbuf_addf(err, "socket_group: cannot look up group '%s': %s", cfg->socket_group,
			    strerror(rc));
		goto out;
	}
	if (!found) {
		strbuf_addf(err, "socket_group: no group '%s'", cfg->socket_group);
		goto out;
	}
	cfg->socket_gid = (int64_t)found->gr_gid;
	ret = 0;
out:
	free(buf);
	return ret;
}

int config_load(struct config *cfg, const char *path, struct strbuf *err)
{
	struct strbuf sb = STRBUF_INIT;
	size_t i;
	int ret = -1;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < ARRAY_SIZE(keys); i++)
		if (set_value(cfg, &keys[i], keys[i].def, "default", err) < 0)
			goto out;
	if (!path)
		path = getenv("KILN_CONFIG");
	if (!path && access("kiln.conf", R_OK) == 0)
		path = "kiln.conf";
	if (path) {
		if (parse_file(cfg, path, err) < 0)
			goto out;
		cfg->config_file = xstrdup(path);
	}
	if (apply_env(cfg, err) < 0 || resolve_socket_group(cfg, err) < 0)
		goto out;
	/* Processes change directory (sandboxes, daemons) and nginx needs
	 * absolute paths: anchor a relative state folder to where we started. */
	if (cfg->state_dir[0] != '/') {
		char cwd[4096];

		if (!getcwd(cwd, sizeof(cwd))) {
			strbuf_addf(err, "getcwd: %s", strerror(errno));
			goto out;
		}
		strbuf_addf(&sb, "%s/%s", cwd, cfg->state_dir);
		free(cfg->state_dir);
		cfg->state_dir = strbuf_detach(&sb, NULL);
	}
	/* Derived defaults: sockets and secret live in the state folder. */
	if (!*cfg->listen) {
		config_state_path(cfg, "run/kiln-api.sock", &sb);
		free(cfg->listen);
		cfg->listen = strbuf_detach(&sb, NULL);
	}
	if (!*cfg->stream_listen) {
		config_state_path(cfg, "run/kiln-stream.sock", &sb);
		free(cfg->stream_listen);
		cfg->stream_listen = strbuf_detach(&sb, NULL);
	}
	if (!*cfg->secret_file) {
		config_state_path(cfg, "secret", &sb);
		free(cfg->secret_file);
		cfg->secret_file = strbuf_detach(&sb, NULL);
	}
	ret = 0;
out:
	strbuf_release(&sb);
	return ret;
}

/* What a running kiln-api cannot change without a restart: the sockets it
 * holds open and the folder they and the signing secret live in. */
static const char *const restart_keys[] = {
	"state_dir", "listen", "stream_listen", "socket_mode", "socket_group", "secret_file",
};

static int key_differs(const struct config *a, const struct config *b, const struct config_key *k)
{
	const char *pa = (const char *)a + k->offset, *pb = (const char *)b + k->offset;

	if (k->type == KEY_STR)
		return strcmp(*(char *const *)pa, *(char *const *)pb) != 0;
	return *(const int64_t *)pa != *(const int64_t *)pb;
}

/* Moves k's value from src to dst (strings change hands, not copies). */
static void key_take(struct config *dst, struct config *src, const struct config_key *k)
{
	char *pd = (char *)dst + k->offset, *ps = (char *)src + k->offset;

	if (k->type == KEY_STR) {
		char *tmp = *(char **)pd;

		*(char **)pd = *(char **)ps;
		*(char **)ps = tmp;
	} else {
		*(int64_t *)pd = *(int64_t *)ps;
	}
}

int config_reload(struct config *cfg, struct strbuf *kept, struct strbuf *err)
{
	struct config fresh;
	size_t i;

	if (config_load(&fresh, cfg->config_file, err) < 0) {
		config_release(&fresh);
		return -1;
	}
	for (i = 0; i < ARRAY_SIZE(restart_keys); i++) {
		const struct config_key *k = find_key(restart_keys[i], strlen(restart_keys[i]));

		if (!key_differs(cfg, &fresh, k))
			continue;
		key_take(&fresh, cfg, k);
		strbuf_addf(kept, "%s%s", kept->len ? ", " : "", k->name);
	}
	fresh.socket_gid = cfg->socket_gid;
	config_release(cfg);
	*cfg = fresh;
	return 0;
}

void config_release(struct config *cfg)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(keys); i++)
		if (keys[i].type == KEY_STR)
			free(*(char **)((char *)cfg + keys[i].offset));
	free(cfg->config_file);
	memset(cfg, 0, sizeof(*cfg));
}

void config_dump(const struct config *cfg, struct strbuf *out)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(keys); i++) {
		const char *base = (const char *)cfg + keys[i].offset;

		if (keys[i].type == KEY_INT)
			strbuf_addf(out, "%s = %lld\n", keys[i].name,
				    (long long)*(const int64_t *)base);
		else if (keys[i].type == KEY_MODE)
			strbuf_addf(out, "%s = %04llo\n", keys[i].name,
				    (unsigned long long)*(const int64_t *)base);
		else if (keys[i].secret)
			strbuf_addf(out, "%s = %s\n", keys[i].name,
				    **(char *const *)base ? "(set, hidden)" : "");
		else
			strbuf_addf(out, "%s = %s\n", keys[i].name, *(char *const *)base);
	}
}

void config_state_path(const struct config *cfg, const char *rel, struct strbuf *out)
{
	strbuf_reset(out);
	strbuf_addf(out, "%s/%s", cfg->state_dir, rel);
}
