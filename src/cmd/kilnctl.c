/*
 * kilnctl - Kiln's operations command line. It reads the same configuration
 * as the servers (--config, $KILN_CONFIG, ./kiln.conf, KILN_* variables).
 *
 *   kilnctl migrate
 *   kilnctl org create SLUG [NAME] | org list
 *   kilnctl token create ORG_SLUG [--name N] [--expires-days D] | token revoke ID|PREFIX
 *   kilnctl app list [ORG_SLUG]
 *   kilnctl checkpoint verify | checkpoint gc [--dry-run]
 *   kilnctl doctor
 *   kilnctl config
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "apps.h"
#include "auth.h"
#include "config.h"
#include "db.h"
#include "fileutil.h"
#include "kilnctl.h"
#include "log.h"
#include "sandbox.h"
#include "strbuf.h"
#include "util.h"

static int die_db(struct db *db, const char *what)
{
	fprintf(stderr, "kilnctl: %s: %s\n", what, db->errmsg);
	return 1;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Splits a migration into statements at ';' outside quotes and comments. */
static int run_sql_script(struct db *db, const char *sql, struct strbuf *err)
{
	struct strbuf stmt = STRBUF_INIT;
	const char *p = sql;
	char quote = 0;
	int ret = 0;

	while (*p) {
		if (!quote && p[0] == '-' && p[1] == '-') {
			while (*p && *p != '\n')
				p++;
			continue;
		}
		if (quote) {
			if (*p == quote && p[1] == quote) {
				strbuf_add(&stmt, p, 2);
				p += 2;
				continue;
			}
			if (*p == quote)
				quote = 0;
		} else if (*p == '\'' || *p == '"' || *p == '`') {
			quote = *p;
		} else if (*p == ';') {
			size_t i;

			for (i = 0; i < stmt.len && strchr(" \t\r\n", stmt.buf[i]); i++)
				;
			if (i < stmt.len && db_exec(db, stmt.buf + i, "") < 0) {
				strbuf_addf(err, "%s", db->errmsg);
				ret = -1;
				break;
			}
			strbuf_reset(&stmt);
			p++;
			continue;
		}
		strbuf_addch(&stmt, *p++);
	}
	strbuf_release(&stmt);
	return ret;
}

static int cmd_migrate(struct config *cfg, struct db *db)
{
	struct strbuf path = STRBUF_INIT, sql = STRBUF_INIT, err = STRBUF_INIT;
	char **names = NULL;
	size_t n = 0, i;
	struct dirent *de;
	DIR *d;
	int ret = 1, applied = 0;

	if (db_exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
			"version VARCHAR(128) NOT NULL PRIMARY KEY COMMENT 'migration file name', "
			"applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)) "
			"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='Applied schema migrations'", "") < 0)
		return die_db(db, "migrate");
	d = opendir(cfg->schema_dir);
	if (!d) {
		fprintf(stderr, "kilnctl: cannot open %s: %s\n", cfg->schema_dir, strerror(errno));
		return 1;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (len > 4 && !strcmp(de->d_name + len - 4, ".sql") &&
		    de->d_name[0] >= '0' && de->d_name[0] <= '9') {
			names = xrealloc(names, n + 1, sizeof(*names));
			names[n++] = xstrdup(de->d_name);
		}
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_str);
	for (i = 0; i < n; i++) {
		struct db_result r;
		int done;

		if (db_query(db, &r, "SELECT 1 FROM schema_migrations WHERE version = ?", "s", names[i]) < 0) {
			ret = die_db(db, "migrate");
			goto out;
		}
		done = r.nrows > 0;
		db_result_free(&r);
		if (done)
			continue;
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/%s", cfg->schema_dir, names[i]);
		strbuf_reset(&sql);
		if (file_read_capped(path.buf, 4 << 20, &sql) < 0) {
			fprintf(stderr, "kilnctl: cannot read %s\n", path.buf);
			goto out;
		}
		if (run_sql_script(db, sql.buf, &err) < 0) {
			fprintf(stderr, "kilnctl: %s failed: %s\n", names[i], err.buf);
			goto out;
		}
		if (db_exec(db, "INSERT INTO schema_migrations (version) VALUES (?)", "s", names[i]) < 0) {
			ret = die_db(db, "migrate");
			goto out;
		}
		printf("applied %s\n", names[i]);
		applied++;
	}
	printf("schema up to date (%d applied now)\n", applied);
	ret = 0;
out:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	strbuf_release(&path);
	strbuf_release(&sql);
	strbuf_release(&err);
	return ret;
}

static int org_id_by_slug(struct db *db, const char *slug, int64_t *id)
{
	struct db_result r;

	if (db_query(db, &r, "SELECT id FROM organizations WHERE slug = ?", "s", slug) < 0)
		return die_db(db, "org lookup");
	if (r.nrows != 1) {
		db_result_free(&r);
		fprintf(stderr, "kilnctl: no organization '%s'\n", slug);
		return 1;
	}
	*id = db_int(&r, 0, 0);
	db_result_free(&r);
	return 0;
}

static int cmd_org(struct db *db, int argc, char **argv)
{
	struct db_result r;
	size_t i;

	if (argc >= 2 && !strcmp(argv[0], "create")) {
		if (!slug_valid(argv[1])) {
			fprintf(stderr, "kilnctl: slug must be 1-63 of a-z 0-9 -\n");
			return 2;
		}
		if (db_exec(db, "INSERT INTO organizations (slug, name) VALUES (?, ?)", "ss", argv[1],
			    argc >= 3 ? argv[2] : argv[1]) < 0) {
			if (db_is_duplicate(db)) {
				fprintf(stderr, "kilnctl: organization '%s' exists\n", argv[1]);
				return 1;
			}
			return die_db(db, "org create");
		}
		printf("%llu\n", (unsigned long long)db->last_insert_id);
		return 0;
	}
	if (argc >= 1 && !strcmp(argv[0], "list")) {
		if (db_query(db, &r, "SELECT id, slug, name, created_at FROM organizations ORDER BY id", "") < 0)
			return die_db(db, "org list");
		for (i = 0; i < r.nrows; i++)
			printf("%s\t%s\t%s\t%s\n", db_val(&r, i, 0), db_val(&r, i, 1), db_val(&r, i, 2),
			       db_val(&r, i, 3));
		db_result_free(&r);
		return 0;
	}
	fprintf(stderr, "usage: kilnctl org create SLUG [NAME] | org list\n");
	return 2;
}

static int cmd_token(struct db *db, int argc, char **argv)
{
	struct strbuf tok = STRBUF_INIT;
	const char *name = "";
	int64_t org, days = 0, tid;
	int i;

	if (argc >= 2 && !strcmp(argv[0], "create")) {
		for (i = 2; i < argc; i++) {
			if (!strcmp(argv[i], "--name") && i + 1 < argc) {
				name = argv[++i];
			} else if (!strcmp(argv[i], "--expires-days") && i + 1 < argc) {
				if (parse_int64(argv[++i], 1, 36500, &days) < 0) {
					fprintf(stderr, "kilnctl: --expires-days takes 1..36500\n");
					return 2;
				}
			} else {
				fprintf(stderr, "kilnctl: unknown option %s\n", argv[i]);
				return 2;
			}
		}
		if (org_id_by_slug(db, argv[1], &org))
			return 1;
		if (auth_token_create(db, org, name, days, &tok, &tid) < 0)
			return die_db(db, "token create");
		/* The only time the token is ever shown. */
		printf("%s\n", tok.buf);
		fprintf(stderr, "token %lld created for %s; it is not stored and cannot be shown again\n",
			(long long)tid, argv[1]);
		strbuf_release(&tok);
		return 0;
	}
	if (argc >= 2 && !strcmp(argv[0], "revoke")) {
		int64_t n = auth_token_revoke(db, argv[1]);

		if (n < 0)
			return die_db(db, "token revoke");
		printf("%lld token(s) revoked\n", (long long)n);
		return n > 0 ? 0 : 1;
	}
	if (argc >= 1 && !strcmp(argv[0], "list")) {
		struct db_result r;
		size_t k;

		if (db_query(db, &r, "SELECT t.id, o.slug, t.prefix, t.name, t.created_at, t.expires_at, "
				     "t.revoked_at, t.last_used_at FROM api_tokens t JOIN organizations o "
				     "ON o.id = t.org_id ORDER BY t.id", "") < 0)
			return die_db(db, "token list");
		for (k = 0; k < r.nrows; k++) {
			int c;

			for (c = 0; c < 8; c++)
				printf("%s%s", c ? "\t" : "", db_val(&r, k, (size_t)c) ? db_val(&r, k, (size_t)c) : "-");
			printf("\n");
		}
		db_result_free(&r);
		return 0;
	}
	fprintf(stderr, "usage: kilnctl token create ORG_SLUG [--name N] [--expires-days D] | "
			"token revoke ID|PREFIX | token list\n");
	return 2;
}

static int cmd_app(struct db *db, int argc, char **argv)
{
	struct db_result r;
	size_t i;
	int rc;

	if (argc < 1 || strcmp(argv[0], "list")) {
		fprintf(stderr, "usage: kilnctl app list [ORG_SLUG]\n");
		return 2;
	}
	if (argc >= 2)
		rc = db_query(db, &r, "SELECT a.id, o.slug, a.slug, a.name, a.draft_revision_id, a.created_at "
				      "FROM apps a JOIN organizations o ON o.id = a.org_id WHERE o.slug = ? ORDER BY a.id",
			      "s", argv[1]);
	else
		rc = db_query(db, &r, "SELECT a.id, o.slug, a.slug, a.name, a.draft_revision_id, a.created_at "
				      "FROM apps a JOIN organizations o ON o.id = a.org_id ORDER BY a.id", "");
	if (rc < 0)
		return die_db(db, "app list");
	for (i = 0; i < r.nrows; i++)
		printf("%s\t%s/%s\t%s\tdraft=%s\t%s\n", db_val(&r, i, 0), db_val(&r, i, 1),
		       db_val(&r, i, 2), db_val(&r, i, 3),
		       db_val(&r, i, 4) ? db_val(&r, i, 4) : "-", db_val(&r, i, 5));
	db_result_free(&r);
	return 0;
}

static int cmd_doctor(struct config *cfg, struct db *db, int db_ok)
{
	struct strbuf why = STRBUF_INIT;
	struct sandbox_config sc;
	int bad = 0;

	printf("config: %s\n", cfg->config_file ? cfg->config_file : "(defaults and environment)");
	printf("state_dir: %s\n", cfg->state_dir);
	if (db_ok) {
		printf("database: ok\n");
	} else {
		printf("database: UNREACHABLE (%s)\n", db->errmsg);
		bad = 1;
	}
	sandbox_config_default(&sc);
	sc.run_uid = (uid_t)cfg->sandbox_uid;
	sc.run_gid = (gid_t)cfg->sandbox_gid;
	if (sandbox_probe(&sc, &why) == 0) {
		printf("sandbox: ok (bubblewrap works here)\n");
	} else {
		printf("sandbox: UNAVAILABLE: %s\n  run_command will refuse to run commands\n", why.buf);
		bad = 1;
	}
	strbuf_release(&why);
	return bad;
}

static void usage(void)
{
	fputs("usage: kilnctl [--config FILE] COMMAND\n"
	      "  migrate                         apply missing schema migrations\n"
	      "  org create SLUG [NAME] | org list\n"
	      "  token create ORG_SLUG [--name N] [--expires-days D] | token revoke ID|PREFIX | token list\n"
	      "  app list [ORG_SLUG]\n"
	      "  checkpoint verify | checkpoint gc [--dry-run]\n"
	      "  doctor                          check database and sandbox\n"
	      "  config                          print the effective configuration\n",
	      stderr);
}

int main(int argc, char **argv)
{
	struct strbuf err = STRBUF_INIT, out = STRBUF_INIT;
	struct config cfg;
	struct db db;
	const char *cfgpath = NULL, *cmd;
	int ret = 2, db_ok;

	log_set_prog("kilnctl");
	if (argc >= 3 && !strcmp(argv[1], "--config")) {
		cfgpath = argv[2];
		argc -= 2;
		argv += 2;
	}
	if (argc < 2) {
		usage();
		return 2;
	}
	cmd = argv[1];
	if (config_load(&cfg, cfgpath, &err) < 0) {
		fprintf(stderr, "kilnctl: config: %s\n", err.buf);
		return 1;
	}
	if (!strcmp(cmd, "config")) {
		config_dump(&cfg, &out);
		fputs(out.buf, stdout);
		ret = 0;
		goto out_nodb;
	}
	if (strcmp(cmd, "migrate") && strcmp(cmd, "org") && strcmp(cmd, "token") &&
	    strcmp(cmd, "app") && strcmp(cmd, "checkpoint") && strcmp(cmd, "doctor")) {
		usage();
		goto out_nodb;
	}
	db_ok = db_connect(&db, &cfg) == 0;
	if (!strcmp(cmd, "doctor")) {
		ret = cmd_doctor(&cfg, &db, db_ok);
	} else if (!db_ok) {
		ret = die_db(&db, "cannot connect to the database");
	} else if (!strcmp(cmd, "migrate")) {
		ret = cmd_migrate(&cfg, &db);
	} else if (!strcmp(cmd, "org")) {
		ret = cmd_org(&db, argc - 2, argv + 2);
	} else if (!strcmp(cmd, "token")) {
		ret = cmd_token(&db, argc - 2, argv + 2);
	} else if (!strcmp(cmd, "app")) {
		ret = cmd_app(&db, argc - 2, argv + 2);
	} else {
		ret = kilnctl_checkpoint(&cfg, &db, argc - 2, argv + 2);
	}
	db_close(&db);
out_nodb:
	config_release(&cfg);
	strbuf_release(&err);
	strbuf_release(&out);
	return ret;
}
