/* config.c - kiln.conf parsing with environment overrides (see config.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileutil.h"
#include "strbuf.h"
#include "util.h"

enum key_type { KEY_STR, KEY_INT };

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

/* The documentation of each key lives in docs/CONFIG.md, in this order. */
static const struct config_key keys[] = {
	S(state_dir, "var"),
	S(listen, ""),
	S(stream_listen, ""),
	I(workers, 4, 1, 256),
	I(max_requests_per_worker, 10000, 1, 1000000000),
	I(request_timeout_s, 30, 1, 3600),
	I(shutdown_grace_s, 10, 1, 600),
	I(stream_processes, 1, 1, 64),
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
	if (parse_int64(value, k->min, k->max, (int64_t *)(base + k->offset)) < 0) {
		strbuf_addf(err, "%s: %s must be an integer from %lld to %lld",
			    origin, k->name, (long long)k->min, (long long)k->max);
		return -1;
	}
	return 0;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int parse_file(struct config *cfg, const char *path, struct strbuf *err)
{
	struct strbuf text = STRBUF_INIT, origin = STRBUF_INIT;
	char *line, *save = NULL;
	int lineno = 0, ret = 0, rc;

	rc = file_read_capped(path, 1 << 20, &text);
	if (rc < 0) {
		strbuf_addf(err, "cannot read %s: %s", path, strerror(-rc));
		ret = -1;
		goto out;
	}
	for (line = strtok_r(text.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *eq, *key, *val, *hash;
		const struct config_key *k;

		lineno++;
		hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		line = trim(line);
		if (!*line)
			continue;
		strbuf_reset(&origin);
		strbuf_addf(&origin, "%s:%d", path, lineno);
		eq = strchr(line, '=');
		if (!eq) {
			strbuf_addf(err, "%s: expected key = value", origin.buf);
			ret = -1;
			goto out;
		}
		*eq = '\0';
		key = trim(line);
		val = trim(eq + 1);
		k = find_key(key, strlen(key));
		if (!k) {
			strbuf_addf(err, "%s: unknown key '%s'", origin.buf, key);
			ret = -1;
			goto out;
		}
		if (set_value(cfg, k, val, origin.buf, err) < 0) {
			ret = -1;
			goto out;
		}
	}
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
	if (apply_env(cfg, err) < 0)
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
