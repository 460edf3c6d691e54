/*
 * kilnctl - Kiln's operations command line. It reads the same configuration
 * as the servers (--config, $KILN_CONFIG, ./kiln.conf, KILN_* variables).
 *
 *   kilnctl migrate
 *   kilnctl org create SLUG [NAME] | org list
 *   kilnctl token create ORG_SLUG [--name N] [--expires-days D] | token list
 *   kilnctl token revoke ID | token revoke ORG_SLUG PREFIX|TOKEN
 *   kilnctl app list [ORG_SLUG]
 *   kilnctl checkpoint verify [--app ID] | checkpoint gc [--dry-run]
 *   kilnctl doctor
 *   kilnctl config | routes | --help
 */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "apps.h"
#include "auth.h"
#include "config.h"
#include "db.h"
#include "fileutil.h"
#include "kilnctl.h"
#include "log.h"
#include "migrate.h"
#include "sandbox.h"
#include "strbuf.h"
#include "util.h"

static int die_db(struct db *db, const char *what)
{
	fprintf(stderr, "kilnctl: %s: %s\n", what, db->errmsg);
	return 1;
}

/* Waits this long for another migrate to finish before giving up. */
#define MIGRATE_LOCK_WAIT_S 120

static int cmd_migrate(struct config *cfg, struct db *db)
{
	struct strbuf err = STRBUF_INIT;
	int applied = migrate_run(db, cfg->schema_dir, MIGRATE_LOCK_WAIT_S, stdout, &err);

	if (applied < 0)
		fprintf(stderr, "kilnctl: migrate: %s\n", err.buf);
	else
		printf("schema up to date (%d applied now)\n", applied);
	strbuf_release(&err);
	return applied < 0 ? 1 : 0;
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

/* token revoke ID, or token revoke ORG_SLUG PREFIX|TOKEN: a prefix is not
 * unique (8 hex digits), so it is looked up only within one organization
 * and only when one active token there has it. */
static int token_revoke(struct db *db, int argc, char **argv)
{
	struct strbuf matches = STRBUF_INIT;
	int64_t id, org, n;
	int rc, ret = 1;

	if (argc == 1 && parse_int64(argv[0], 1, INT64_MAX, &id) == 0) {
		n = auth_token_revoke_id(db, id);
		if (n < 0)
			return die_db(db, "token revoke");
		if (n == 0) {
			fprintf(stderr, "kilnctl: no active token with id %lld\n", (long long)id);
			return 1;
		}
		printf("revoked token %lld\n", (long long)id);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "kilnctl: token revoke takes a token id (see token list), or an "
				"organization and a prefix: kilnctl token revoke ORG_SLUG PREFIX\n");
		return 2;
	}
	if (org_id_by_slug(db, argv[0], &org))
		return 1;
	rc = auth_token_revoke_match(db, org, argv[1], &matches);
	switch (rc) {
	case 1:
		printf("revoked token %s of %s\n", matches.buf, argv[0]);
		ret = 0;
		break;
	case 0:
		fprintf(stderr, "kilnctl: %s has no active token matching that\n", argv[0]);
		break;
	case AUTH_REVOKE_INVALID:
		fprintf(stderr, "kilnctl: '%s' is neither a token nor a prefix (kiln_ and 8 hex "
				"digits, as token list shows it)\n", argv[1]);
		ret = 2;
		break;
	case AUTH_REVOKE_AMBIGUOUS:
		fprintf(stderr, "kilnctl: active tokens %s of %s share that prefix; nothing revoked: "
				"revoke one by id (kilnctl token revoke ID)\n", matches.buf, argv[0]);
		break;
	default:
		ret = die_db(db, "token revoke");
	}
	strbuf_release(&matches);
	return ret;
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
	if (argc >= 2 && !strcmp(argv[0], "revoke"))
		return token_revoke(db, argc - 1, argv + 1);
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
			"token revoke ID | token revoke ORG_SLUG PREFIX|TOKEN | token list\n");
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
	sandbox_config_from_config(cfg, &sc);
	if (sandbox_probe(&sc, &why) == 0) {
		printf("sandbox: ok (bubblewrap works here)\n");
	} else {
		printf("sandbox: UNAVAILABLE: %s\n  run_command will refuse to run commands\n", why.buf);
		bad = 1;
	}
	strbuf_release(&why);
	return bad;
}

static void usage(FILE *to)
{
	fputs("usage: kilnctl [--config FILE] COMMAND\n"
	      "  migrate                         apply missing schema migrations\n"
	      "  org create SLUG [NAME] | org list\n"
	      "  token create ORG_SLUG [--name N] [--expires-days D]   prints the token, once\n"
	      "  token revoke ID                 a token by its id (see token list)\n"
	      "  token revoke ORG_SLUG PREFIX    the one active token of ORG_SLUG with that prefix\n"
	      "                                  (kiln_ and 8 hex digits) or that whole token\n"
	      "  token list\n"
	      "  app list [ORG_SLUG]\n"
	      "  checkpoint verify [--app ID] | checkpoint gc [--dry-run]\n"
	      "  doctor                          check database and sandbox\n"
	      "  config                          print the effective configuration\n"
	      "  routes                          print the API's route table\n"
	      "  --help                          this text\n",
	      to);
}

/* METHOD, pattern, name and whether a token is needed, one route a line. */
static int cmd_routes(void)
{
	size_t i;

	for (i = 0; i < api_nroutes; i++)
		printf("%s\t%s\t%s\t%s\n", api_routes[i].method, api_routes[i].pattern,
		       api_routes[i].name, api_routes[i].public ? "public" : "token");
	return 0;
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
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "routes"))
		return cmd_routes();
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
		fprintf(stderr, "kilnctl: unknown command '%s'\n", cmd);
		usage(stderr);
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
