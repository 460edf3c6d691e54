/*
 * migrate.h - `kilnctl migrate`: the numbered files of schema_dir
 * ("0001_init.sql", ...) applied in name order, each once, recorded in
 * schema_migrations.
 *
 * One migrate at a time: the run holds MariaDB's named lock kiln_migrate
 * (GET_LOCK), so a second migrate started meanwhile waits for the first and
 * then finds its files recorded. A file is split with sql_split() before
 * any of it runs and is recorded only after its last statement succeeded,
 * and only while the lock is still this connection's.
 *
 * MariaDB commits DDL implicitly, so a file cannot be applied atomically:
 * when statement 3 fails, statements 1 and 2 stay applied and the file is
 * not recorded. The next migrate runs the (fixed) file again from its first
 * statement, so every statement of a migration must be safe to repeat:
 * CREATE TABLE IF NOT EXISTS, ADD COLUMN IF NOT EXISTS, DROP COLUMN IF
 * EXISTS, CREATE INDEX IF NOT EXISTS, MODIFY COLUMN with the whole
 * definition.
 *
 *   migrate_run
 */
#ifndef KILN_MIGRATE_H
#define KILN_MIGRATE_H

#include <stdio.h>

struct db;
struct strbuf;

#define MIGRATE_LOCK "kiln_migrate"

/* Applies what is missing, waiting at most lock_wait_s for another migrate
 * to finish. Prints "applied NAME" per file to progress. The number of
 * files applied, or -1 with the reason in err. */
int migrate_run(struct db *db, const char *schema_dir, int lock_wait_s, FILE *progress,
		struct strbuf *err);

#endif
