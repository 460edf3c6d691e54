/*
 * sqlsplit.h - a migration file cut into the statements MariaDB runs one at
 * a time.
 *
 * A ';' ends a statement unless it is inside a '...' or "..." string (a
 * backslash escapes the next character, a doubled quote is a quote), a
 * `...` identifier (a doubled backtick is a backtick), or a comment:
 * "-- " (two dashes then a blank or the end of the line, as MariaDB reads
 * it: "1--1" is arithmetic), "#" to the end of the line, or a block
 * comment. Plain comments are left out of the statement text (each counts
 * as one blank, as for the server); executable comments ("/" "*!" and
 * "/" "*M!") are kept, the server runs what they hold.
 *
 * A last statement without its ';' is a statement like any other (as the
 * mariadb client has it). A file that ends inside a string, identifier or
 * block comment is refused as a whole, before anything is run, as is a
 * DELIMITER line (a client command; migrations hold no stored programs)
 * and a NUL byte.
 *
 *   sql_split           text -> statements, each with its first line
 *   sql_script_release
 */
#ifndef KILN_SQLSPLIT_H
#define KILN_SQLSPLIT_H

#include <stddef.h>

struct strbuf;

struct sql_stmt {
	char *text; /* without the ';', outer blanks trimmed */
	int line;   /* 1-based line of its first character */
};

struct sql_script {
	struct sql_stmt *v;
	size_t n;
};

/* 0, or -1 with "line N: why" in err (out then holds nothing). */
int sql_split(const char *sql, size_t len, struct sql_script *out, struct strbuf *err);
void sql_script_release(struct sql_script *s);

#endif
