/* migrate.c - schema migrations, applied once each under a lock (see
 * migrate.h). */
#include "migrate.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "fileutil.h"
#include "sqlsplit.h"
#include "strbuf.h"
#include "util.h"

#define MIGRATION_MAX_BYTES (4 << 20)

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The migration files of dir ("NNNN_name.sql"), sorted; -1 when dir cannot
 * be read. */
static int list_migrations(const char *dir, char ***names, size_t *n, struct strbuf *err)
{
	struct dirent *de;
	DIR *d = opendir(dir);

	*names = NULL;
	*n = 0;
	if (!d) {
		strbuf_addf(err, "cannot open %s: %s", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (len > 4 && !strcmp(de->d_name + len - 4, ".sql") &&
		    de->d_name[0] >= '0' && de->d_name[0] <= '9') {
			*names = xrealloc(*names, *n + 1, sizeof(**names));
			(*names)[(*n)++] = xstrdup(de->d_name);
		}
	}
	closedir(d);
	if (*n)
		qsort(*names, *n, sizeof(**names), cmp_str);
	return 0;
}

/* 1 when this connection holds the migration lock. A reconnect behind a
 * statement (db.c retries once on a fresh connection) loses it. */
static int lock_held(struct db *db)
{
	struct db_result r;
	int held;

	if (db_query(db, &r, "SELECT IS_USED_LOCK('" MIGRATE_LOCK "') = CONNECTION_ID()", "") < 0)
		return 0;
	held = r.nrows == 1 && db_int(&r, 0, 0) == 1;
	db_result_free(&r);
	return held;
}

static int take_lock(struct db *db, int wait_s, struct strbuf *err)
{
	struct db_result r;
	const char *v;
	int got;

	if (db_query(db, &r, "SELECT GET_LOCK('" MIGRATE_LOCK "', ?)", "i", (int64_t)wait_s) < 0) {
		strbuf_addf(err, "cannot take the migration lock: %s", db->errmsg);
		return -1;
	}
	v = db_val(&r, 0, 0);
	got = v && !strcmp(v, "1");
	db_result_free(&r);
	if (!got) {
		strbuf_addf(err, "another kilnctl migrate still holds the migration lock after %d s; "
			    "try again when it is done", wait_s);
		return -1;
	}
	return 0;
}

/* Runs one file; the failing statement is named by file and line. */
static int apply_file(struct db *db, const char *name, const char *sql, size_t len,
		      struct strbuf *err)
{
	struct sql_script script;
	struct strbuf why = STRBUF_INIT;
	size_t i;
	int ret = -1;

	if (sql_split(sql, len, &script, &why) < 0) {
		strbuf_addf(err, "%s: %s; nothing of it was run", name, why.buf);
		goto out;
	}
	for (i = 0; i < script.n; i++) {
		struct db_result r;

		if (db_query(db, &r, script.v[i].text, "") < 0) {
			strbuf_addf(err, "%s:%d: %s; the statements before it stay applied and the "
				    "file is not recorded: fix it and run migrate again", name,
				    script.v[i].line, db->errmsg);
			goto out;
		}
		db_result_free(&r);
	}
	ret = 0;
out:
	sql_script_release(&script);
	strbuf_release(&why);
	return ret;
}

int migrate_run(struct db *db, const char *schema_dir, int lock_wait_s, FILE *progress,
		struct strbuf *err)
{
	struct strbuf path = STRBUF_INIT, sql = STRBUF_INIT;
	char **names = NULL;
	size_t n = 0, i;
	int applied = 0, ret = -1, rc;

	if (take_lock(db, lock_wait_s, err) < 0)
		return -1;
	if (db_exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
			"version VARCHAR(128) NOT NULL PRIMARY KEY COMMENT 'migration file name', "
			"applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) "
			"COMMENT 'when kilnctl migrate recorded it') "
			"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='Applied schema migrations'", "") < 0) {
		strbuf_addf(err, "cannot create schema_migrations: %s", db->errmsg);
		goto out;
	}
	if (list_migrations(schema_dir, &names, &n, err) < 0)
		goto out;
	for (i = 0; i < n; i++) {
		struct db_result r;
		int done;

		if (db_query(db, &r, "SELECT 1 FROM schema_migrations WHERE version = ?", "s", names[i]) < 0) {
			strbuf_addf(err, "schema_migrations: %s", db->errmsg);
			goto out;
		}
		done = r.nrows > 0;
		db_result_free(&r);
		if (done)
			continue;
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/%s", schema_dir, names[i]);
		strbuf_reset(&sql);
		rc = file_read_capped(path.buf, MIGRATION_MAX_BYTES, &sql);
		if (rc < 0) {
			strbuf_addf(err, "cannot read %s: %s", path.buf,
				    rc == -EFBIG ? "larger than 4 MiB" : strerror(-rc));
			goto out;
		}
		if (apply_file(db, names[i], strbuf_str(&sql), sql.len, err) < 0)
			goto out;
		if (!lock_held(db)) {
			strbuf_addf(err, "%s: the connection to MariaDB was lost and with it the migration "
				    "lock; the file is not recorded: run migrate again", names[i]);
			goto out;
		}
		if (db_exec(db, "INSERT INTO schema_migrations (version) VALUES (?)", "s", names[i]) < 0) {
			strbuf_addf(err, "%s: cannot record it: %s", names[i], db->errmsg);
			goto out;
		}
		fprintf(progress, "applied %s\n", names[i]);
		fflush(progress);
		applied++;
	}
	ret = applied;
out:
	/* Also released when the connection closes; said here for clarity. */
	if (db->conn) {
		struct db_result r;

		if (db_query(db, &r, "SELECT RELEASE_LOCK('" MIGRATE_LOCK "')", "") == 0)
			db_result_free(&r);
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	strbuf_release(&path);
	strbuf_release(&sql);
	return ret;
}
