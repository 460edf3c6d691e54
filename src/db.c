/* db.c - MariaDB Connector/C wrapper (see db.h). */
#include "db.h"

#include <errno.h>
#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "strbuf.h"
#include "util.h"

#define DB_MAX_PARAMS 32
#define DB_CACHE_SLOTS 64
/* A single text cell larger than this is an error, not an allocation. */
#define DB_MAX_CELL (64u << 20)

struct db_stmt_cache {
	char *sql[DB_CACHE_SLOTS]; /* owned copies: callers may pass built SQL */
	MYSQL_STMT *stmt[DB_CACHE_SLOTS];
	size_t n;
};

static void db_set_error(struct db *db, unsigned errnum, const char *msg)
{
	db->errnum = errnum;
	snprintf(db->errmsg, sizeof(db->errmsg), "%s", msg);
}

static void cache_clear(struct db *db)
{
	size_t i;

	if (!db->cache)
		return;
	for (i = 0; i < db->cache->n; i++) {
		mysql_stmt_close(db->cache->stmt[i]);
		free(db->cache->sql[i]);
	}
	db->cache->n = 0;
}

static int db_open(struct db *db)
{
	const struct config *cfg = db->cfg;
	MYSQL *m = mysql_init(NULL);
	unsigned int timeout = 5;
	my_bool off = 0;

	if (!m) {
		db_set_error(db, CR_OUT_OF_MEMORY, "out of memory");
		return -1;
	}
	mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
	mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	/* Reconnecting behind our back would silently drop prepared statements
	 * and transactions; we reconnect ourselves, visibly. */
	mysql_options(m, MYSQL_OPT_RECONNECT, &off);
	if (!mysql_real_connect(m, *cfg->db_socket ? NULL : cfg->db_host, cfg->db_user,
				cfg->db_password, cfg->db_name, (unsigned)cfg->db_port,
				*cfg->db_socket ? cfg->db_socket : NULL, 0)) {
		db_set_error(db, mysql_errno(m), mysql_error(m));
		mysql_close(m);
		return -1;
	}
	/* UTC everywhere; strict mode so bad data is an error, not a truncation. */
	if (mysql_query(m, "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO'") ||
	    mysql_query(m, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")) {
		db_set_error(db, mysql_errno(m), mysql_error(m));
		mysql_close(m);
		return -1;
	}
	db->conn = m;
	db->in_txn = 0;
	return 0;
}

int db_connect(struct db *db, const struct config *cfg)
{
	int64_t attempt;

	memset(db, 0, sizeof(*db));
	db->cfg = cfg;
	db->cache = xcalloc(1, sizeof(*db->cache));
	for (attempt = 0; attempt <= cfg->db_connect_retries; attempt++) {
		if (db_open(db) == 0)
			return 0;
		if (attempt < cfg->db_connect_retries)
			sleep_ms(200 << (attempt < 4 ? attempt : 4));
	}
	return -1;
}

void db_close(struct db *db)
{
	cache_clear(db);
	free(db->cache);
	db->cache = NULL;
	if (db->conn)
		mysql_close(db->conn);
	db->conn = NULL;
}

static int is_conn_lost(unsigned e)
{
	return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST ||
	       e == CR_CONNECTION_ERROR || e == CR_CONN_HOST_ERROR ||
	       e == ER_CONNECTION_KILLED ||
	       e == ER_SERVER_SHUTDOWN || e == CR_COMMANDS_OUT_OF_SYNC;
}

static int db_reconnect(struct db *db)
{
	cache_clear(db);
	if (db->conn)
		mysql_close(db->conn);
	db->conn = NULL;
	return db_open(db);
}

int db_ping(struct db *db)
{
	if (db->conn && mysql_ping(db->conn) == 0)
		return 0;
	return db_reconnect(db);
}

static MYSQL_STMT *stmt_get(struct db *db, const char *sql)
{
	struct db_stmt_cache *c = db->cache;
	MYSQL_STMT *st;
	size_t i;

	for (i = 0; i < c->n; i++)
		if (!strcmp(c->sql[i], sql))
			return c->stmt[i];
	st = mysql_stmt_init(db->conn);
	if (!st) {
		db_set_error(db, CR_OUT_OF_MEMORY, "out of memory");
		return NULL;
	}
	if (mysql_stmt_prepare(st, sql, strlen(sql))) {
		db_set_error(db, mysql_stmt_errno(st), mysql_stmt_error(st));
		mysql_stmt_close(st);
		return NULL;
	}
	if (c->n == DB_CACHE_SLOTS) {
		/* Full: evict the oldest; SQL texts are a small fixed set. */
		mysql_stmt_close(c->stmt[0]);
		free(c->sql[0]);
		memmove(c->sql, c->sql + 1, sizeof(char *) * (DB_CACHE_SLOTS - 1));
		memmove(c->stmt, c->stmt + 1, sizeof(MYSQL_STMT *) * (DB_CACHE_SLOTS - 1));
		c->n--;
	}
	c->sql[c->n] = xstrdup(sql);
	c->stmt[c->n] = st;
	c->n++;
	return st;
}

struct params {
	MYSQL_BIND bind[DB_MAX_PARAMS];
	long long ival[DB_MAX_PARAMS];
	unsigned long len[DB_MAX_PARAMS];
	my_bool is_null[DB_MAX_PARAMS];
	size_t n;
};

static int bind_params(struct db *db, struct params *p, const char *types, va_list ap)
{
	size_t i;

	memset(p, 0, sizeof(*p));
	p->n = strlen(types);
	if (p->n > DB_MAX_PARAMS) {
		db_set_error(db, CR_UNKNOWN_ERROR, "too many parameters");
		return -1;
	}
	for (i = 0; i < p->n; i++) {
		MYSQL_BIND *b = &p->bind[i];
		const char *s;

		switch (types[i]) {
		case 'i':
			p->ival[i] = va_arg(ap, int64_t);
			b->buffer_type = MYSQL_TYPE_LONGLONG;
			b->buffer = &p->ival[i];
			break;
		case 'u':
			p->ival[i] = (long long)va_arg(ap, uint64_t);
			b->buffer_type = MYSQL_TYPE_LONGLONG;
			b->buffer = &p->ival[i];
			b->is_unsigned = 1;
			break;
		case 's':
			s = va_arg(ap, const char *);
			b->buffer_type = MYSQL_TYPE_STRING;
			if (!s) {
				p->is_null[i] = 1;
				b->is_null = &p->is_null[i];
				break;
			}
			b->buffer = (void *)s;
			p->len[i] = strlen(s);
			b->buffer_length = p->len[i];
			b->length = &p->len[i];
			break;
		case 'b':
			s = va_arg(ap, const char *);
			p->len[i] = va_arg(ap, size_t);
			b->buffer_type = MYSQL_TYPE_BLOB;
			b->buffer = (void *)s;
			b->buffer_length = p->len[i];
			b->length = &p->len[i];
			break;
		case 'n':
			b->buffer_type = MYSQL_TYPE_NULL;
			break;
		default:
			db_set_error(db, CR_UNKNOWN_ERROR, "bad parameter type");
			return -1;
		}
	}
	return 0;
}

static int fetch_rows(struct db *db, MYSQL_STMT *st, struct db_result *res)
{
	MYSQL_RES *meta = mysql_stmt_result_metadata(st);
	MYSQL_BIND *bind = NULL;
	unsigned long *lens = NULL;
	my_bool *nulls = NULL, *errs = NULL;
	char **bufs = NULL;
	size_t ncols, alloc = 0, c;
	int ret = -1, rc;

	if (!meta) {
		res->ncols = 0;
		return 0;
	}
	ncols = mysql_num_fields(meta);
	mysql_free_result(meta);
	res->ncols = ncols;
	bind = xcalloc(ncols, sizeof(*bind));
	lens = xcalloc(ncols, sizeof(*lens));
	nulls = xcalloc(ncols, sizeof(*nulls));
	errs = xcalloc(ncols, sizeof(*errs));
	bufs = xcalloc(ncols, sizeof(*bufs));
	for (c = 0; c < ncols; c++) {
		bufs[c] = xcalloc(1, 256);
		bind[c].buffer_type = MYSQL_TYPE_STRING;
		bind[c].buffer = bufs[c];
		bind[c].buffer_length = 256;
		bind[c].length = &lens[c];
		bind[c].is_null = &nulls[c];
		bind[c].error = &errs[c];
	}
	if (mysql_stmt_bind_result(st, bind))
		goto stmt_err;
	while ((rc = mysql_stmt_fetch(st)) == 0 || rc == MYSQL_DATA_TRUNCATED) {
		size_t row = res->nrows;

		if (row + 1 > alloc) {
			alloc = alloc ? alloc * 2 : 8;
			res->cells = xrealloc(res->cells, alloc * ncols, sizeof(*res->cells));
			res->lens = xrealloc(res->lens, alloc * ncols, sizeof(*res->lens));
		}
		for (c = 0; c < ncols; c++) {
			char *cell;

			res->lens[row * ncols + c] = 0;
			if (nulls[c]) {
				res->cells[row * ncols + c] = NULL;
				continue;
			}
			if (lens[c] > DB_MAX_CELL) {
				db_set_error(db, CR_UNKNOWN_ERROR, "result cell too large");
				res->nrows = row;
				goto out;
			}
			cell = malloc(lens[c] + 1);
			if (!cell)
				abort();
			if (lens[c] <= 256) {
				memcpy(cell, bufs[c], lens[c]);
			} else {
				MYSQL_BIND one;

				memset(&one, 0, sizeof(one));
				one.buffer_type = MYSQL_TYPE_STRING;
				one.buffer = cell;
				one.buffer_length = lens[c];
				if (mysql_stmt_fetch_column(st, &one, (unsigned)c, 0)) {
					free(cell);
					res->nrows = row;
					goto stmt_err;
				}
			}
			cell[lens[c]] = '\0';
			res->cells[row * ncols + c] = cell;
			res->lens[row * ncols + c] = lens[c];
		}
		res->nrows++;
	}
	if (rc != MYSQL_NO_DATA)
		goto stmt_err;
	ret = 0;
	goto out;
stmt_err:
	db_set_error(db, mysql_stmt_errno(st), mysql_stmt_error(st));
out:
	mysql_stmt_free_result(st);
	for (c = 0; c < ncols; c++)
		free(bufs[c]);
	free(bufs);
	free(bind);
	free(lens);
	free(nulls);
	free(errs);
	return ret;
}

static int run_stmt(struct db *db, struct db_result *res, int64_t *affected,
		    const char *sql, const char *types, va_list ap)
{
	struct params p;
	MYSQL_STMT *st;
	int tries;

	if (bind_params(db, &p, types, ap) < 0)
		return -1;
	for (tries = 0; tries < 2; tries++) {
		if (!db->conn && db_reconnect(db) < 0)
			return -1;
		st = stmt_get(db, sql);
		if (st && (p.n ? !mysql_stmt_bind_param(st, p.bind) : 1) &&
		    !mysql_stmt_execute(st)) {
			db->last_insert_id = mysql_stmt_insert_id(st);
			if (affected)
				*affected = (int64_t)mysql_stmt_affected_rows(st);
			if (res) {
				memset(res, 0, sizeof(*res));
				if (fetch_rows(db, st, res) < 0) {
					db_result_free(res);
					return -1;
				}
			}
			return 0;
		}
		if (st)
			db_set_error(db, mysql_stmt_errno(st), mysql_stmt_error(st));
		/* A lost connection outside a transaction is safe to retry once
		 * on a fresh one; inside, the caller must redo the transaction. */
		if (!is_conn_lost(db->errnum) || db->in_txn)
			break;
		if (db_reconnect(db) < 0)
			return -1;
	}
	if (is_conn_lost(db->errnum)) {
		cache_clear(db);
		if (db->conn)
			mysql_close(db->conn);
		db->conn = NULL;
		db->in_txn = 0;
	}
	return -1;
}

int64_t db_exec(struct db *db, const char *sql, const char *types, ...)
{
	va_list ap;
	int64_t affected = 0;
	int rc;

	va_start(ap, types);
	rc = run_stmt(db, NULL, &affected, sql, types, ap);
	va_end(ap);
	return rc < 0 ? -1 : affected;
}

int db_query(struct db *db, struct db_result *res, const char *sql, const char *types, ...)
{
	va_list ap;
	int rc;

	va_start(ap, types);
	rc = run_stmt(db, res, NULL, sql, types, ap);
	va_end(ap);
	if (rc < 0)
		memset(res, 0, sizeof(*res));
	return rc;
}

#define DB_MAX_IDS 256

int db_query_ids(struct db *db, struct db_result *res, const char *sql,
		 const int64_t *ids, size_t n)
{
	struct strbuf marks = STRBUF_INIT, text = STRBUF_INIT;
	MYSQL_BIND *bind = NULL;
	long long *vals = NULL;
	MYSQL_STMT *st;
	size_t padded = 1, i;
	int ret = -1, tries;

	memset(res, 0, sizeof(*res));
	if (n == 0 || n > DB_MAX_IDS) {
		db_set_error(db, CR_UNKNOWN_ERROR, "bad id list length");
		return -1;
	}
	while (padded < n)
		padded *= 2;
	for (i = 0; i < padded; i++)
		strbuf_addstr(&marks, i ? ",?" : "?");
	{
		const char *hole = strstr(sql, "%s");

		if (!hole) {
			db_set_error(db, CR_UNKNOWN_ERROR, "id list query without %s");
			goto out;
		}
		strbuf_add(&text, sql, (size_t)(hole - sql));
		strbuf_addstr(&text, marks.buf);
		strbuf_addstr(&text, hole + 2);
	}
	bind = xcalloc(padded, sizeof(*bind));
	vals = xcalloc(padded, sizeof(*vals));
	for (i = 0; i < padded; i++) {
		vals[i] = ids[i < n ? i : n - 1];
		bind[i].buffer_type = MYSQL_TYPE_LONGLONG;
		bind[i].buffer = &vals[i];
	}
	for (tries = 0; tries < 2; tries++) {
		if (!db->conn && db_reconnect(db) < 0)
			goto out;
		st = stmt_get(db, text.buf);
		if (st && !mysql_stmt_bind_param(st, bind) && !mysql_stmt_execute(st)) {
			ret = fetch_rows(db, st, res);
			if (ret < 0)
				db_result_free(res);
			goto out;
		}
		if (st)
			db_set_error(db, mysql_stmt_errno(st), mysql_stmt_error(st));
		if (!is_conn_lost(db->errnum) || db->in_txn || db_reconnect(db) < 0)
			goto out;
	}
out:
	free(bind);
	free(vals);
	strbuf_release(&marks);
	strbuf_release(&text);
	return ret;
}

int db_begin(struct db *db)
{
	if (db_exec(db, "START TRANSACTION", "") < 0)
		return -1;
	db->in_txn = 1;
	return 0;
}

int db_commit(struct db *db)
{
	int rc = db_exec(db, "COMMIT", "") < 0 ? -1 : 0;

	db->in_txn = 0;
	return rc;
}

void db_rollback(struct db *db)
{
	unsigned e = db->errnum;
	char msg[sizeof(db->errmsg)];

	/* keep the error that made us roll back */
	memcpy(msg, db->errmsg, sizeof(msg));
	if (db->conn)
		db_exec(db, "ROLLBACK", "");
	db->in_txn = 0;
	db->errnum = e;
	memcpy(db->errmsg, msg, sizeof(msg));
}

const char *db_val(const struct db_result *r, size_t row, size_t col)
{
	if (row >= r->nrows || col >= r->ncols)
		return NULL;
	return r->cells[row * r->ncols + col];
}

unsigned long db_len(const struct db_result *r, size_t row, size_t col)
{
	if (row >= r->nrows || col >= r->ncols)
		return 0;
	return r->lens[row * r->ncols + col];
}

int64_t db_int(const struct db_result *r, size_t row, size_t col)
{
	const char *v = db_val(r, row, col);

	return v ? strtoll(v, NULL, 10) : 0;
}

void db_result_free(struct db_result *r)
{
	size_t i;

	for (i = 0; i < r->nrows * r->ncols; i++)
		free(r->cells[i]);
	free(r->cells);
	free(r->lens);
	memset(r, 0, sizeof(*r));
}

int db_is_duplicate(const struct db *db)
{
	return db->errnum == ER_DUP_ENTRY;
}

int db_is_unavailable(const struct db *db)
{
	return is_conn_lost(db->errnum) || db->errnum == 2002 /* CR_CONNECTION_ERROR */ ||
	       db->errnum == 2003 || db->errnum == 1040 /* too many connections */ ||
	       db->errnum == 1045 || db->errnum == 1049 || db->errnum == 2013;
}

int db_is_retryable(const struct db *db)
{
	return db->errnum == ER_LOCK_DEADLOCK || db->errnum == ER_LOCK_WAIT_TIMEOUT;
}
