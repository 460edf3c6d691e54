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

/* One prepared statement and the result binding reused by every execution
 * of it: the column types are read once, when it is prepared, so a hot
 * query costs no metadata round trip and no per-row allocation. */
struct db_slot {
	char *sql;              /* owned copy: callers may pass built SQL */
	MYSQL_STMT *stmt;
	size_t ncols;
	MYSQL_BIND *bind;       /* ncols result bindings */
	struct db_cell *cells;  /* ncols fetch buffers */
};

/* How a result column is fetched: integers and times in their native
 * binary form (formatted here, without printf), the rest as text. */
enum cell_kind { CELL_TEXT, CELL_INT, CELL_UINT, CELL_DATETIME, CELL_DATE };

/* Fractional digits not fixed by the column (an expression): as many as
 * the value has, like MariaDB's own text form. */
#define DB_AUTO_DECIMALS 99u

struct db_cell {
	enum cell_kind kind;
	unsigned decimals;      /* DATETIME: digits of fractional seconds */
	unsigned long len;
	my_bool is_null, error;
	union {
		long long i;
		MYSQL_TIME t;
		char text[256];
	} v;
};

struct db_stmt_cache {
	struct db_slot slot[DB_CACHE_SLOTS];
	size_t n;
};

static void db_set_error(struct db *db, unsigned errnum, const char *msg)
{
	db->errnum = errnum;
	snprintf(db->errmsg, sizeof(db->errmsg), "%s", msg);
}

static void slot_release(struct db_slot *sl)
{
	mysql_stmt_close(sl->stmt);
	free(sl->sql);
	free(sl->bind);
	free(sl->cells);
	memset(sl, 0, sizeof(*sl));
}

static void cache_clear(struct db *db)
{
	size_t i;

	if (!db->cache)
		return;
	for (i = 0; i < db->cache->n; i++)
		slot_release(&db->cache->slot[i]);
	db->cache->n = 0;
}

static int db_open(struct db *db)
{
	const struct config *cfg = db->cfg;
	MYSQL *m = mysql_init(NULL);
	unsigned int timeout = 5, io_timeout = (unsigned)cfg->db_io_timeout_s;
	my_bool off = 0;

	if (!m) {
		db_set_error(db, CR_OUT_OF_MEMORY, "out of memory");
		return -1;
	}
	mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
	/* a connection that hangs (a network gone silent) fails the statement
	 * instead of holding a worker or a run for ever */
	mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
	mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
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

/* The connection and its prepared statements, gone (the cache stays). */
static void conn_drop(struct db *db)
{
	cache_clear(db);
	if (db->conn)
		mysql_close(db->conn);
	db->conn = NULL;
}

void db_close(struct db *db)
{
	conn_drop(db);
	free(db->cache);
	db->cache = NULL;
}

static int is_conn_lost(unsigned e)
{
	return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST ||
	       e == CR_CONNECTION_ERROR || e == CR_CONN_HOST_ERROR ||
	       e == ER_CONNECTION_KILLED ||
	       e == ER_SERVER_SHUTDOWN || e == CR_COMMANDS_OUT_OF_SYNC;
}

/* A connect that failed slowly (a host that does not answer: the connect
 * timeout ran out) is not tried again for this long: requests answer at
 * once instead of each waiting out its own timeout. A quick refusal (the
 * server is down, its socket gone) costs little and is tried every time,
 * so service resumes the moment the server is back. */
#define DB_RECONNECT_QUIET_MS 1000
#define DB_SLOW_CONNECT_MS 500

static int db_reconnect(struct db *db)
{
	int64_t now = mono_ms();

	conn_drop(db);
	if (db->connect_failed_ms && now - db->connect_failed_ms < DB_RECONNECT_QUIET_MS)
		return -1; /* the error of that attempt stands */
	if (db_open(db) < 0) {
		if (mono_ms() - now >= DB_SLOW_CONNECT_MS)
			db->connect_failed_ms = now;
		return -1;
	}
	db->connect_failed_ms = 0;
	return 0;
}

int db_ping(struct db *db)
{
	if (db->conn && mysql_ping(db->conn) == 0)
		return 0;
	return db_reconnect(db);
}

static enum cell_kind cell_kind_of(const MYSQL_FIELD *f)
{
	switch (f->type) {
	case MYSQL_TYPE_TINY:
	case MYSQL_TYPE_SHORT:
	case MYSQL_TYPE_INT24:
	case MYSQL_TYPE_LONG:
	case MYSQL_TYPE_LONGLONG:
	case MYSQL_TYPE_YEAR:
		return (f->flags & UNSIGNED_FLAG) ? CELL_UINT : CELL_INT;
	case MYSQL_TYPE_DATETIME:
	case MYSQL_TYPE_TIMESTAMP:
		return CELL_DATETIME;
	case MYSQL_TYPE_DATE:
		return CELL_DATE;
	default:
		return CELL_TEXT;
	}
}

/* Sets up the result binding of a freshly prepared statement. */
static int slot_bind_setup(struct db *db, struct db_slot *sl)
{
	MYSQL_RES *meta;
	MYSQL_FIELD *fields;
	size_t c;

	sl->ncols = mysql_stmt_field_count(sl->stmt);
	if (!sl->ncols)
		return 0;
	meta = mysql_stmt_result_metadata(sl->stmt);
	if (!meta) {
		db_set_error(db, mysql_stmt_errno(sl->stmt), mysql_stmt_error(sl->stmt));
		return -1;
	}
	fields = mysql_fetch_fields(meta);
	sl->bind = xcalloc(sl->ncols, sizeof(*sl->bind));
	sl->cells = xcalloc(sl->ncols, sizeof(*sl->cells));
	for (c = 0; c < sl->ncols; c++) {
		struct db_cell *cell = &sl->cells[c];
		MYSQL_BIND *b = &sl->bind[c];

		cell->kind = cell_kind_of(&fields[c]);
		cell->decimals = fields[c].decimals > 6 ? DB_AUTO_DECIMALS : fields[c].decimals;
		switch (cell->kind) {
		case CELL_INT:
		case CELL_UINT:
			b->buffer_type = MYSQL_TYPE_LONGLONG;
			b->buffer = &cell->v.i;
			b->is_unsigned = cell->kind == CELL_UINT;
			break;
		case CELL_DATETIME:
		case CELL_DATE:
			b->buffer_type = cell->kind == CELL_DATE ? MYSQL_TYPE_DATE : MYSQL_TYPE_DATETIME;
			b->buffer = &cell->v.t;
			b->buffer_length = sizeof(cell->v.t);
			break;
		case CELL_TEXT:
			b->buffer_type = MYSQL_TYPE_STRING;
			b->buffer = cell->v.text;
			b->buffer_length = sizeof(cell->v.text);
			break;
		}
		b->length = &cell->len;
		b->is_null = &cell->is_null;
		b->error = &cell->error;
	}
	mysql_free_result(meta);
	return 0;
}

static struct db_slot *stmt_get(struct db *db, const char *sql)
{
	struct db_stmt_cache *c = db->cache;
	struct db_slot *sl;
	size_t i;

	for (i = 0; i < c->n; i++)
		if (!strcmp(c->slot[i].sql, sql))
			return &c->slot[i];
	if (c->n == DB_CACHE_SLOTS) {
		/* Full: evict the oldest; SQL texts are a small fixed set. */
		slot_release(&c->slot[0]);
		memmove(c->slot, c->slot + 1, sizeof(c->slot[0]) * (DB_CACHE_SLOTS - 1));
		c->n--;
	}
	sl = &c->slot[c->n];
	memset(sl, 0, sizeof(*sl));
	sl->stmt = mysql_stmt_init(db->conn);
	if (!sl->stmt) {
		db_set_error(db, CR_OUT_OF_MEMORY, "out of memory");
		return NULL;
	}
	if (mysql_stmt_prepare(sl->stmt, sql, strlen(sql))) {
		db_set_error(db, mysql_stmt_errno(sl->stmt), mysql_stmt_error(sl->stmt));
		slot_release(sl);
		return NULL;
	}
	if (slot_bind_setup(db, sl) < 0) {
		slot_release(sl);
		return NULL;
	}
	sl->sql = xstrdup(sql);
	c->n++;
	return sl;
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

/* Appends n digits of v, zero-padded. */
static void put_digits(char *out, unsigned long v, int n)
{
	while (n-- > 0) {
		out[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

/* The text MariaDB itself gives for a DATETIME(d) / DATE value. */
static size_t format_time(const MYSQL_TIME *t, int with_time, unsigned decimals, char *out)
{
	size_t n = 10;

	put_digits(out, t->year, 4);
	out[4] = '-';
	put_digits(out + 5, t->month, 2);
	out[7] = '-';
	put_digits(out + 8, t->day, 2);
	if (!with_time)
		return n;
	out[10] = ' ';
	put_digits(out + 11, t->hour, 2);
	out[13] = ':';
	put_digits(out + 14, t->minute, 2);
	out[16] = ':';
	put_digits(out + 17, t->second, 2);
	n = 19;
	if (decimals == DB_AUTO_DECIMALS)
		decimals = t->second_part ? 6 : 0;
	if (decimals) {
		unsigned long frac = t->second_part;
		unsigned d;

		for (d = decimals; d < 6; d++)
			frac /= 10;
		out[19] = '.';
		put_digits(out + 20, frac, (int)decimals);
		n = 20 + decimals;
	}
	return n;
}

/* Appends one fetched cell's text to the result's text block. */
static int cell_append(struct db *db, MYSQL_STMT *st, const struct db_cell *cell, unsigned col,
		       struct db_result *res)
{
	struct strbuf *t = &res->text;
	char num[32];
	size_t n;

	switch (cell->kind) {
	case CELL_INT:
	case CELL_UINT:
		n = cell->kind == CELL_INT ? fmt_int64(num, cell->v.i)
					   : fmt_uint64(num, (uint64_t)cell->v.i);
		goto add;
	case CELL_DATETIME:
	case CELL_DATE:
		n = format_time(&cell->v.t, cell->kind == CELL_DATETIME, cell->decimals, num);
		goto add;
	case CELL_TEXT:
		break;
	}
	if (cell->len > DB_MAX_CELL) {
		db_set_error(db, CR_UNKNOWN_ERROR, "result cell too large");
		return -1;
	}
	if (cell->len <= sizeof(cell->v.text)) {
		if (strbuf_add(t, cell->v.text, cell->len) < 0)
			goto oom;
		return 0;
	}
	{
		/* Longer than the fetch buffer: fetch it straight into place. */
		MYSQL_BIND one;
		size_t at = t->len;

		if (strbuf_grow(t, cell->len) < 0)
			goto oom;
		memset(&one, 0, sizeof(one));
		one.buffer_type = MYSQL_TYPE_STRING;
		one.buffer = t->buf + at;
		one.buffer_length = cell->len;
		if (mysql_stmt_fetch_column(st, &one, col, 0)) {
			db_set_error(db, mysql_stmt_errno(st), mysql_stmt_error(st));
			return -1;
		}
		strbuf_extend(t, cell->len);
		return 0;
	}
add:
	if (strbuf_add(t, num, n) == 0)
		return 0;
oom:
	db_set_error(db, CR_OUT_OF_MEMORY, "result too large");
	return -1;
}

static void result_init(struct db_result *res)
{
	memset(res, 0, sizeof(*res));
	strbuf_init(&res->text);
}

/* Every row of an executed statement into res: one text block with every
 * cell NUL-terminated, and per cell its offset (DB_NULL_CELL for SQL NULL)
 * and length. */
static int fetch_rows(struct db *db, struct db_slot *sl, struct db_result *res)
{
	MYSQL_STMT *st = sl->stmt;
	size_t ncols = sl->ncols, alloc = 0, c;
	int ret = -1, rc;

	res->ncols = ncols;
	if (!ncols)
		return 0;
	if (mysql_stmt_bind_result(st, sl->bind))
		goto stmt_err;
	while ((rc = mysql_stmt_fetch(st)) == 0 || rc == MYSQL_DATA_TRUNCATED) {
		size_t row = res->nrows;

		if (row + 1 > alloc) {
			alloc = alloc ? alloc * 2 : 4;
			res->offs = xrealloc(res->offs, alloc * ncols, sizeof(*res->offs));
			res->lens = xrealloc(res->lens, alloc * ncols, sizeof(*res->lens));
		}
		for (c = 0; c < ncols; c++) {
			const struct db_cell *cell = &sl->cells[c];
			size_t at = res->text.len, i = row * ncols + c;

			res->offs[i] = DB_NULL_CELL;
			res->lens[i] = 0;
			if (cell->is_null)
				continue;
			/* cells are NUL-terminated inside the block */
			if (cell_append(db, st, cell, (unsigned)c, res) < 0 ||
			    strbuf_add(&res->text, "", 1) < 0) {
				if (res->text.len == at)
					db_set_error(db, CR_OUT_OF_MEMORY, "result too large");
				res->nrows = row;
				goto out;
			}
			res->offs[i] = at;
			res->lens[i] = res->text.len - at - 1;
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
	return ret;
}

static int run_stmt(struct db *db, struct db_result *res, int64_t *affected,
		    const char *sql, const char *types, va_list ap)
{
	struct params p;
	struct db_slot *sl;
	int tries;

	if (bind_params(db, &p, types, ap) < 0)
		return -1;
	for (tries = 0; tries < 2; tries++) {
		if (!db->conn && db_reconnect(db) < 0)
			return -1;
		sl = stmt_get(db, sql);
		if (sl && (p.n ? !mysql_stmt_bind_param(sl->stmt, p.bind) : 1) &&
		    !mysql_stmt_execute(sl->stmt)) {
			db->last_insert_id = mysql_stmt_insert_id(sl->stmt);
			if (affected)
				*affected = (int64_t)mysql_stmt_affected_rows(sl->stmt);
			if (res) {
				result_init(res);
				if (fetch_rows(db, sl, res) < 0) {
					db_result_free(res);
					return -1;
				}
			} else if (sl->ncols) {
				mysql_stmt_free_result(sl->stmt);
			}
			return 0;
		}
		if (sl)
			db_set_error(db, mysql_stmt_errno(sl->stmt), mysql_stmt_error(sl->stmt));
		/* A lost connection outside a transaction is safe to retry once
		 * on a fresh one; inside, the caller must redo the transaction. */
		if (!is_conn_lost(db->errnum) || db->in_txn)
			break;
		if (db_reconnect(db) < 0)
			return -1;
	}
	if (is_conn_lost(db->errnum)) {
		conn_drop(db);
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
		result_init(res);
	return rc;
}

int db_query_tuples(struct db *db, struct db_result *res, const char *sql, const char *piece,
		    const char *sep, const int64_t *vals, size_t n, size_t arity)
{
	struct strbuf text = STRBUF_INIT;
	MYSQL_BIND *bind = NULL;
	long long *bound = NULL;
	struct db_slot *sl;
	const char *hole = strstr(sql, "%s");
	size_t padded = 1, i, nvals;
	int ret = -1, tries;

	result_init(res);
	if (n == 0 || n > DB_MAX_IDS || arity == 0 || arity > 4 || !hole) {
		db_set_error(db, CR_UNKNOWN_ERROR, "bad tuple list query");
		return -1;
	}
	while (padded < n)
		padded *= 2;
	strbuf_add(&text, sql, (size_t)(hole - sql));
	for (i = 0; i < padded; i++) {
		if (i)
			strbuf_addstr(&text, sep);
		strbuf_addstr(&text, piece);
	}
	strbuf_addstr(&text, hole + 2);
	nvals = padded * arity;
	bind = xcalloc(nvals, sizeof(*bind));
	bound = xcalloc(nvals, sizeof(*bound));
	for (i = 0; i < nvals; i++) {
		/* padding repeats the last tuple: same rows, few statement shapes */
		size_t t = i / arity < n ? i / arity : n - 1;

		bound[i] = vals[t * arity + i % arity];
		bind[i].buffer_type = MYSQL_TYPE_LONGLONG;
		bind[i].buffer = &bound[i];
	}
	for (tries = 0; tries < 2; tries++) {
		if (!db->conn && db_reconnect(db) < 0)
			goto out;
		sl = stmt_get(db, text.buf);
		if (sl && !mysql_stmt_bind_param(sl->stmt, bind) && !mysql_stmt_execute(sl->stmt)) {
			ret = fetch_rows(db, sl, res);
			if (ret < 0)
				db_result_free(res);
			goto out;
		}
		if (sl)
			db_set_error(db, mysql_stmt_errno(sl->stmt), mysql_stmt_error(sl->stmt));
		if (!is_conn_lost(db->errnum) || db->in_txn || db_reconnect(db) < 0)
			goto out;
	}
out:
	free(bind);
	free(bound);
	strbuf_release(&text);
	return ret;
}

int db_query_ids(struct db *db, struct db_result *res, const char *sql,
		 const int64_t *ids, size_t n)
{
	return db_query_tuples(db, res, sql, "?", ",", ids, n, 1);
}

int db_begin(struct db *db)
{
	if (db_exec(db, "START TRANSACTION", "") < 0)
		return -1;
	db->in_txn = 1;
	return 0;
}

void db_arm_commit_fault(struct db *db, const char *env)
{
	const char *spec = getenv(env), *colon = spec ? strchr(spec, ':') : NULL;
	char num[8];
	unsigned n;

	if (!colon || (size_t)(colon - spec) >= sizeof(num))
		return;
	memcpy(num, spec, (size_t)(colon - spec));
	num[colon - spec] = '\0';
	if (parse_uint(num, 100000, &n) < 0 || n == 0 || (strcmp(colon + 1, "before") && strcmp(colon + 1, "after")))
		return;
	db->fault_commit = db->commits + n;
	db->fault_committed = !strcmp(colon + 1, "after");
}

/* The armed fault: the connection goes away around the COMMIT. Closing it
 * without one makes the server roll the transaction back. */
static int commit_lost(struct db *db)
{
	if (db->fault_committed && db->conn)
		mysql_query(db->conn, "COMMIT");
	conn_drop(db);
	db->in_txn = 0;
	log_warn("injected fault: connection lost during COMMIT (%s)",
		 db->fault_committed ? "committed" : "rolled back");
	db_set_error(db, CR_SERVER_LOST, "Lost connection to server during query (injected fault)");
	return -1;
}

int db_commit(struct db *db)
{
	int rc;

	if (++db->commits == db->fault_commit)
		return commit_lost(db);
	rc = db_exec(db, "COMMIT", "") < 0 ? -1 : 0;
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
	size_t off;

	if (row >= r->nrows || col >= r->ncols)
		return NULL;
	off = r->offs[row * r->ncols + col];
	return off == DB_NULL_CELL ? NULL : r->text.buf + off;
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
	strbuf_release(&r->text);
	free(r->offs);
	free(r->lens);
	result_init(r);
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
