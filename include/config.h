/*
 * config.h - Kiln's one configuration file (kiln.conf) with environment
 * overrides.
 *
 * The file is "key = value" lines. A line whose first non-blank character is
 * '#' is a comment; elsewhere '#' is an ordinary character. A value may be
 * double-quoted ("a # b", with \" and \\ as the only escapes) to keep
 * leading or trailing blanks; an unquoted value holding " #" is refused, as
 * it reads like a trailing comment. Every key has a default; the
 * environment variable KILN_<KEY> (upper case, taken verbatim) overrides the file,
 * and KILN_MODEL_BASE_URL / KILN_MODEL_API_KEY / KILN_MODEL are the model's.
 * The file path comes from --config, else $KILN_CONFIG, else ./kiln.conf when
 * present, else defaults only.
 *
 *   config_load       defaults, then file, then environment
 *   config_reload     load again from the same place (SIGHUP)
 *   config_release
 *   config_dump       every key and its effective value (secrets masked)
 *   config_path_in_state   "<state_dir>/<rel>"
 */
#ifndef KILN_CONFIG_H
#define KILN_CONFIG_H

#include <stdint.h>

struct strbuf;

/* Upper bounds of workers and stream_processes (a SIGHUP may raise the
 * pools up to these without a restart). */
#define CONFIG_MAX_WORKERS 256
#define CONFIG_MAX_STREAM_PROCESSES 64

struct config {
	char *config_file; /* the file that was read, or NULL */
	char *state_dir;
	char *listen;
	char *stream_listen;
	int64_t socket_mode;  /* permission bits of the unix sockets */
	char *socket_group;   /* group name or gid; "" = the process's group */
	int64_t socket_gid;   /* socket_group resolved by config_load */
	int64_t workers;
	int64_t max_requests_per_worker;
	int64_t request_timeout_s;
	int64_t shutdown_grace_s;
	int64_t stream_processes;
	int64_t stream_max_per_process;
	int64_t stream_poll_ms;
	int64_t stream_keepalive_s;
	int64_t stream_channel_max_events;
	int64_t max_body_bytes;
	char *db_host;
	int64_t db_port;
	char *db_socket;
	char *db_user;
	char *db_password;
	char *db_name;
	int64_t db_connect_retries;
	int64_t db_io_timeout_s;
	char *model_base_url;
	char *model_api_key;
	char *model;
	int64_t model_connect_timeout_ms;
	int64_t model_idle_timeout_ms;
	int64_t model_max_retries;
	int64_t model_retry_base_ms;
	int64_t model_retry_budget_ms;
	int64_t model_total_timeout_ms;
	char *agent_profile;
	char *command_policy;
	int64_t runner_max_concurrent;
	int64_t runner_lease_s;
	int64_t runner_max_attempts;
	int64_t runner_poll_ms;
	int64_t delta_coalesce_ms;
	int64_t delta_coalesce_bytes;
	int64_t history_budget_bytes;
	char *publish_base_url;
	int64_t preview_ttl_s;
	int64_t sandbox_uid;
	int64_t sandbox_gid;
	int64_t sandbox_mem_mb;
	int64_t sandbox_cpu_s;
	int64_t sandbox_max_procs;
	int64_t ws_max_file_bytes;
	int64_t ws_max_total_bytes;
	int64_t ws_max_files;
	char *ignored_dirs; /* comma-separated, beyond node_modules,dist,.git */
	int64_t checkpoint_keep_newest;
	int64_t checkpoint_max_age_days;
	char *secret_file;
	char *schema_dir;
	int64_t auth_cache_ms;
};

/* Returns 0, or -1 with a message in err (unknown key, bad number, ...). */
int config_load(struct config *cfg, const char *path, struct strbuf *err);
/*
 * Loads the configuration again from where cfg came from (its file, or the
 * same search when none was read) and, on success, replaces *cfg with it,
 * in place: pointers to cfg stay valid. Keys a running server cannot change
 * (state_dir, listen, stream_listen, socket_mode, socket_group,
 * secret_file) keep their old values; those that differed are named in
 * kept ("listen, socket_mode"). On failure *cfg is unchanged and err says
 * why. Returns 0 or -1.
 */
int config_reload(struct config *cfg, struct strbuf *kept, struct strbuf *err);
void config_release(struct config *cfg);
void config_dump(const struct config *cfg, struct strbuf *out);
/* Appends "<state_dir>/<rel>" to out. */
void config_state_path(const struct config *cfg, const char *rel, struct strbuf *out);

#endif
