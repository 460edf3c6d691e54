/*
 * db.h - MariaDB access: one connection per process, prepared statements
 * for everything, reconnect on loss.
 *
 * Parameters are bound from a type string, one letter per '?':
 *   'i' int64_t    'u' uint64_t    's' const char * (NULL binds SQL NULL)
 *   'b' const char *, size_t (bytes)    'n' SQL NULL (no argument)
 * Results come back as text columns (NULL for SQL NULL). Prepared statements
 * are cached per connection by SQL text, so hot queries are prepared once.
 *
 *   db_connect / db_close / db_ping
 *   db_exec          statement without rows; affected rows or -1
 *   db_query         statement with rows into a db_result
 *   db_query_ids     statement with an IN (...) list of ids
 *   db_query_tuples  the same with a repeated piece of several ids each
 *   db_begin / db_commit / db_rollback
 *   db_arm_commit_fault  test-only: one COMMIT answered "connection lost"
 *   db_result_*      reading a result
 *   db_is_*          classifying the last error
 */
#ifndef KILN_DB_H
#define KILN_DB_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct db_stmt_cache;

struct db {
	void *conn; /* MYSQL * */
	const struct config *cfg;
	struct db_stmt_cache *cache;
	unsigned errnum;
	char errmsg[512];
	uint64_t last_insert_id;
	int in_txn;
	int64_t connect_failed_ms; /* monotonic time of the last failed reconnect */
	unsigned commits;          /* db_commit calls on this handle */
	unsigned fault_commit;     /* db_arm_commit_fault: this one fails; 0 = none */
	int fault_committed;       /* ... after the server committed it */
};

#include "strbuf.h"

/* Offset of an SQL NULL in db_result.offs. */
#define DB_NULL_CELL ((size_t)-1)

struct db_result {
	size_t nrows, ncols;
	struct strbuf text;     /* every cell's text, each NUL-terminated */
	size_t *offs;           /* nrows * ncols offsets into text, or DB_NULL_CELL */
	unsigned long *lens;
};

int db_connect(struct db *db, const struct config *cfg);
void db_close(struct db *db);
/* Reconnects if the connection was lost; 0 when usable. */
int db_ping(struct db *db);

int64_t db_exec(struct db *db, const char *sql, const char *types, ...);
int db_query(struct db *db, struct db_result *res, const char *sql,
	     const char *types, ...);
/* sql contains one "%s" where a list of n '?' placeholders goes (padded to
 * a power of two by repeating the last id, so few statement shapes exist);
 * ids are bound to them. Only placeholders are ever put into the SQL. */
int db_query_ids(struct db *db, struct db_result *res, const char *sql,
		 const int64_t *ids, size_t n);
/* Most ids (or tuples) one db_query_ids / db_query_tuples call takes. */
#define DB_MAX_IDS 256
/* sql contains one "%s" where piece (with arity '?' placeholders) goes n
 * times, joined by sep, padded like db_query_ids; vals holds n * arity ids,
 * tuple by tuple. Only the caller's constant text is put into the SQL. */
int db_query_tuples(struct db *db, struct db_result *res, const char *sql, const char *piece,
		    const char *sep, const int64_t *vals, size_t n, size_t arity);
int db_begin(struct db *db);
int db_commit(struct db *db);
void db_rollback(struct db *db);
/* Tests only (docs/PROOF.md): when the environment variable env holds
 * "<n>:before" or "<n>:after", the n-th db_commit() from now on this handle
 * fails as a connection lost during COMMIT (CR_SERVER_LOST, the connection
 * closed), the transaction rolled back by the server (before) or committed
 * (after): the two outcomes a client cannot tell apart. Unset: nothing. */
void db_arm_commit_fault(struct db *db, const char *env);

const char *db_val(const struct db_result *r, size_t row, size_t col);
unsigned long db_len(const struct db_result *r, size_t row, size_t col);
int64_t db_int(const struct db_result *r, size_t row, size_t col);
void db_result_free(struct db_result *r);

int db_is_duplicate(const struct db *db);   /* ER_DUP_ENTRY */
int db_is_unavailable(const struct db *db); /* server gone / cannot connect */
int db_is_retryable(const struct db *db);   /* deadlock / lock wait timeout */

#endif
