/*
 * test_config - kiln.conf parsing: line numbers, comments, quoted values,
 * bounds, socket settings, environment overrides and secret masking.
 *
 * Every case writes its own file in a private temporary folder; KILN_*
 * variables inherited from the caller are removed first so that only what
 * a case sets itself is in force.
 */
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fileutil.h"
#include "harness.h"
#include "strbuf.h"
#include "util.h"

extern char **environ;

static char dir[64];
static char conf[128];

static void write_conf(const char *text)
{
	CHECK(file_write_atomic(conf, text, strlen(text), 0600) == 0);
}

/* Loads text as kiln.conf: 0 or -1, the message in err. */
static int load(struct config *cfg, const char *text, struct strbuf *err)
{
	write_conf(text);
	strbuf_reset(err);
	return config_load(cfg, conf, err);
}

static void clear_kiln_env(void)
{
	struct strbuf name = STRBUF_INIT;
	size_t i = 0;

	while (environ[i]) {
		const char *eq = strchr(environ[i], '=');

		if (!strncmp(environ[i], "KILN_", 5) && eq) {
			strbuf_reset(&name);
			strbuf_add(&name, environ[i], (size_t)(eq - environ[i]));
			unsetenv(name.buf);
			i = 0; /* environ changed under us: start over */
			continue;
		}
		i++;
	}
	strbuf_release(&name);
}

static void test_defaults_and_derived_paths(void)
{
	struct strbuf err = STRBUF_INIT;
	struct config cfg;

	CHECK(load(&cfg, "", &err) == 0);
	CHECK(cfg.workers == 4);
	CHECK(cfg.max_requests_per_worker == 10000);
	CHECK_STR(cfg.db_user, "kiln");
	CHECK_STR(cfg.db_password, "");
	CHECK(cfg.socket_mode == 0660);
	CHECK(cfg.socket_gid == (int64_t)getegid());
	/* a relative state folder is anchored to the working directory */
	CHECK(cfg.state_dir[0] == '/');
	CHECK(strstr(cfg.listen, "/run/kiln-api.sock") != NULL);
	CHECK(!strncmp(cfg.listen, cfg.state_dir, strlen(cfg.state_dir)));
	CHECK_STR(cfg.config_file, conf);
	config_release(&cfg);
	strbuf_release(&err);
}

static void test_values_comments_and_blank_lines(void)
{
	struct strbuf err = STRBUF_INIT;
	struct config cfg;

	CHECK(load(&cfg,
		   "# a comment\n"
		   "\n"
		   "   # an indented comment\n"
		   "workers=7\n"
		   "\t db_user \t=\t  admin  \t\n"
		   "state_dir = /srv/kiln state\r\n"
		   "db_name =\n"
		   "workers = 9", /* no final newline; the later line wins */
		   &err) == 0);
	CHECK(cfg.workers == 9);
	CHECK_STR(cfg.db_user, "admin");
	CHECK_STR(cfg.state_dir, "/srv/kiln state");
	CHECK_STR(cfg.db_name, "");
	config_release(&cfg);
	strbuf_release(&err);
}

static void test_hash_inside_a_value_is_kept(void)
{
	struct strbuf err = STRBUF_INIT;
	struct config cfg;

	CHECK(load(&cfg, "db_password = pa#ss##word#\nmodel_api_key=#sk\n", &err) == 0);
	CHECK_STR(cfg.db_password, "pa#ss##word#");
	CHECK_STR(cfg.model_api_key, "#sk");
	config_release(&cfg);
	/* what reads like a trailing comment is refused, not silently kept */
	CHECK(load(&cfg, "\ndb_password = secret # the db's\n", &err) < 0);
	CHECK(strstr(strbuf_str(&err), ":2:") && strstr(strbuf_str(&err), "db_password") && strstr(strbuf_str(&err), "quote"));
	config_release(&cfg);
	CHECK(load(&cfg, "workers = 4\t# four\n", &err) < 0);
	config_release(&cfg);
	strbuf_release(&err);
}

static void test_quoted_values(void)
{
	struct strbuf err = STRBUF_INIT;
	struct config cfg;

	CHECK(load(&cfg,
		   "db_password = \"  a # b \\\" c \\\\ d  \"  \n"
		   "db_user = \"\"\n"
		   "db_name = \"kiln\"\n"
		   "workers = \"12\"\n",
		   &err) == 0);
	CHECK_STR(cfg.db_password, "  a # b \" c \\ d  ");
	CHECK_STR(cfg.db_user, "");
	CHECK_STR(cfg.db_name, "kiln");
	CHECK(cfg.workers == 12);
	config_release(&cfg);

	CHECK(load(&cfg, "db_password = \"open\n", &err) < 0);
	CHECK(strstr(strbuf_str(&err), ":1:") && strstr(strbuf_str(&err), "closing"));
	config_release(&cfg);
	CHECK(load(&cfg, "\n\ndb_password = \"a\\nb\"\n", &err) < 0);
	CHECK(strstr(strbuf_str(&err), ":3:") && strstr(strbuf_str(&err), "backslash"));
	config_release(&cfg);
	CHECK(load(&cfg, "db_password = \"a\" b\n", &err) < 0);
	CHECK(strstr(strbuf_str(&err), "follow"));
	config_release(&cfg);
	CHECK(load(&cfg, "db_password = \"a\\\"\n", &err) < 0); /* the quote is escaped */
	config_release(&cfg);
	strbuf_release(&err);
}

static void test_errors_name_the_right_line(void)
{
	struct strbuf err = STRBUF_INIT, want = STRBUF_INIT;
	struct config cfg;

	/* blank lines count: the bad line is the fifth one */
	CHECK(load(&cfg, "workers = 2\n\n\n\nbogus = 1\n", &err) < 0);
	strbuf_addf(&want, "%s:5: unknown key 'bogus'", conf);
	CHECK_STR(strbuf_str(&err), want.buf);
	config_release(&cfg);
	CHECK(load(&cfg, "\r\n\r\njust words\n", &err) < 0);
	CHECK(strstr(strbuf_str(&err), ":3: expected key = value"));
	config_release(&cfg);
	CHECK(load(&cfg, "= 5\n", &err) < 0);
	CHECK(strstr(strbuf_str(&err), ":1: expected key = value"));
	config_release(&cfg);
	CHECK(load(&cfg, "Workers = 5\n", &err) < 0); /* keys are lower case */
	config_release(&cfg);
	CHECK(load(&cfg, "work ers = 5\n", &err) < 0);
	config_release(&cfg);
	{
		static const char text[] = "workers = 3\n\nstate_dir = a\0b\n";

		CHECK(file_write_atomic(conf, text, sizeof(text) - 1, 0600) == 0);
		strbuf_reset(&err);
		CHECK(config_load(&cfg, conf, &err) < 0);
		CHECK(strstr(strbuf_str(&err), ":3:") && strstr(strbuf_str(&err), "NUL"));
		config_release(&cfg);
	}
	strbuf_reset(&err);
	CHECK(config_load(&cfg, "/nonexistent/kiln.conf", &err) < 0);
	CHECK(strstr(strbuf_str(&err), "cannot read /nonexistent/kiln.conf"));
	config_release(&cfg);
	strbuf_release(&err);
	strbuf_release(&want);
}

static void test_integer_bounds(void)
{
	struct strbuf err = STRBUF_INIT;
	struct config cfg;

	CHECK(load(&cfg, "workers = 1\ndb_port = 0\n", &err) == 0);
	CHECK(cfg.workers == 1 && cfg.db_port == 0);
	config_release(&cfg);
	CHECK(load(&cfg, "workers = 256\ndb_port = 65535\n", &err) == 0);
	CHECK(cfg.workers == 256 && cfg.db_port == 65535);
	config_release(&cfg);
	CHECK(load(&cfg, "workers = 0\n", &err) < 0);
	CHECK(strstr(strbuf_str(&err), ":1: workers must be an integer from 1 to 256"));
	config_release(&cfg);
	CHECK(load(&cfg, "workers = 257\n", &err) < 0);
	config_release(&cfg);
	CHECK(load(&cfg, "db_port = 65536\n", &err) < 0);
	config_release(&cfg);
	CHECK(load(&cfg, "workers = 4x\n", &err) < 0);
	config_release(&cfg);
	CHECK(load(&cfg, "workers = -1\n", &err) < 0);
	config_release(&cfg);
	CHECK(load(&cfg, "workers = 99999999999999999999999\n", &err) < 0);
	config_release(&cfg);
	strbuf_release(&err);
}

static void test_socket_mode_and_group(void)
{
	struct strbuf err = STRBUF_INIT, dump = STRBUF_INIT;
	struct config cfg;
	struct group *root = getgrgid(0);

	CHECK(load(&cfg, "socket_mode = 640\nsocket_group = 1234\n", &err) == 0);
	CHECK(cfg.socket_mode == 0640);
	CHECK(cfg.socket_gid == 1234);
	config_dump(&cfg, &dump);
	CHECK(strstr(dump.buf, "socket_mode = 0640\n"));
	config_release(&cfg);
	CHECK(load(&cfg, "socket_mode = 0600\n", &err) == 0 && cfg.socket_mode == 0600);
	config_release(&cfg);
	if (root) {
		struct strbuf text = STRBUF_INIT;

		strbuf_addf(&text, "socket_group = %s\n", root->gr_name);
		CHECK(load(&cfg, text.buf, &err) == 0);
		CHECK(cfg.socket_gid == 0);
		config_release(&cfg);
		strbuf_release(&text);
	}
	CHECK(load(&cfg, "socket_group = no-such-group-kiln\n", &err) < 0);
	CHECK(strstr(strbuf_str(&err), "no group 'no-such-group-kiln'"));
	config_release(&cfg);
	CHECK(load(&cfg, "socket_mode = 0800\n", &err) < 0);
	CHECK(strstr(strbuf_str(&err), "octal"));
	config_release(&cfg);
	CHECK(load(&cfg, "socket_mode = 4660\n", &err) < 0); /* no setuid/setgid/sticky */
	config_release(&cfg);
	CHECK(load(&cfg, "socket_mode = rw\n", &err) < 0);
	config_release(&cfg);
	CHECK(load(&cfg, "socket_mode =\n", &err) < 0);
	config_release(&cfg);
	strbuf_release(&err);
	strbuf_release(&dump);
}

static void test_environment_overrides(void)
{
	struct strbuf err = STRBUF_INIT;
	struct config cfg;

	setenv("KILN_WORKERS", "8", 1);
	setenv("KILN_DB_PASSWORD", "from # env ", 1); /* verbatim: no comment or quote rules */
	setenv("KILN_MODEL_API_KEY", "sk-env", 1);
	setenv("KILN_SOCKET_MODE", "0600", 1);
	CHECK(load(&cfg, "workers = 2\ndb_password = file\nmodel_api_key = sk-file\ndb_user = fileuser\n",
		   &err) == 0);
	CHECK(cfg.workers == 8);
	CHECK_STR(cfg.db_password, "from # env ");
	CHECK_STR(cfg.model_api_key, "sk-env");
	CHECK_STR(cfg.db_user, "fileuser"); /* not overridden */
	CHECK(cfg.socket_mode == 0600);
	config_release(&cfg);

	setenv("KILN_WORKERS", "many", 1);
	CHECK(load(&cfg, "", &err) < 0);
	CHECK(strstr(strbuf_str(&err), "KILN_WORKERS: workers must be an integer"));
	config_release(&cfg);
	unsetenv("KILN_WORKERS");
	unsetenv("KILN_DB_PASSWORD");
	unsetenv("KILN_MODEL_API_KEY");
	unsetenv("KILN_SOCKET_MODE");

	/* without --config, $KILN_CONFIG names the file */
	write_conf("workers = 5\n");
	setenv("KILN_CONFIG", conf, 1);
	strbuf_reset(&err);
	CHECK(config_load(&cfg, NULL, &err) == 0);
	CHECK(cfg.workers == 5);
	CHECK_STR(cfg.config_file, conf);
	config_release(&cfg);
	unsetenv("KILN_CONFIG");
	strbuf_release(&err);
}

static void test_dump_hides_secrets(void)
{
	struct strbuf err = STRBUF_INIT, dump = STRBUF_INIT;
	struct config cfg;

	CHECK(load(&cfg, "db_password = hunter2#x\nmodel_api_key = sk-live-123\n", &err) == 0);
	config_dump(&cfg, &dump);
	CHECK(!strstr(dump.buf, "hunter2"));
	CHECK(!strstr(dump.buf, "sk-live-123"));
	CHECK(strstr(dump.buf, "db_password = (set, hidden)\n"));
	CHECK(strstr(dump.buf, "workers = 4\n"));
	config_release(&cfg);
	strbuf_release(&err);
	strbuf_release(&dump);
}

static void test_reload(void)
{
	struct strbuf err = STRBUF_INIT, kept = STRBUF_INIT;
	struct config cfg;
	char *listen_before;

	CHECK(load(&cfg, "workers = 2\nrequest_timeout_s = 5\ndb_password = one\n", &err) == 0);
	listen_before = xstrdup(cfg.listen);

	/* a bad file: an error, and the running configuration untouched */
	write_conf("workers = 2\nrequest_timeout_s = forever\n");
	strbuf_reset(&err);
	CHECK(config_reload(&cfg, &kept, &err) < 0);
	CHECK(strstr(strbuf_str(&err), ":2: request_timeout_s"));
	CHECK(cfg.workers == 2 && cfg.request_timeout_s == 5);
	CHECK_STR(cfg.db_password, "one");
	CHECK(kept.len == 0);

	/* a good one: applied, except what needs a restart */
	write_conf("workers = 6\nrequest_timeout_s = 9\ndb_password = two\n"
		   "listen = 127.0.0.1:9999\nsocket_mode = 0600\n");
	strbuf_reset(&err);
	CHECK(config_reload(&cfg, &kept, &err) == 0);
	CHECK(cfg.workers == 6 && cfg.request_timeout_s == 9);
	CHECK_STR(cfg.db_password, "two");
	CHECK_STR(cfg.listen, listen_before);
	CHECK(cfg.socket_mode == 0660);
	CHECK_STR(strbuf_str(&kept), "listen, socket_mode");
	CHECK_STR(cfg.config_file, conf);

	/* unchanged restart keys are not reported */
	strbuf_reset(&kept);
	write_conf("workers = 3\n");
	CHECK(config_reload(&cfg, &kept, &err) == 0);
	CHECK(cfg.workers == 3 && kept.len == 0);
	CHECK_STR(cfg.db_password, ""); /* a key gone from the file is back to its default */
	free(listen_before);
	config_release(&cfg);
	strbuf_release(&err);
	strbuf_release(&kept);
}

int main(void)
{
	clear_kiln_env();
	if (harness_mkdtemp(dir, sizeof(dir), "kiln-config") < 0)
		return 1;
	snprintf(conf, sizeof(conf), "%s/kiln.conf", dir);
	RUN(test_defaults_and_derived_paths);
	RUN(test_values_comments_and_blank_lines);
	RUN(test_hash_inside_a_value_is_kept);
	RUN(test_quoted_values);
	RUN(test_errors_name_the_right_line);
	RUN(test_integer_bounds);
	RUN(test_socket_mode_and_group);
	RUN(test_environment_overrides);
	RUN(test_dump_hides_secrets);
	RUN(test_reload);
	rm_rf(dir);
	return harness_done("config");
}
