/*
 * test_sqlsplit - migration files cut into statements: quotes with
 * backslash escapes, the three comment styles, an unterminated tail, and
 * the files refused as a whole.
 */
#include <string.h>

#include "harness.h"
#include "sqlsplit.h"
#include "strbuf.h"

/* Splits text; the number of statements, or -1 (message in err). */
static int split(const char *text, struct sql_script *s, struct strbuf *err)
{
	strbuf_reset(err);
	return sql_split(text, strlen(text), s, err) < 0 ? -1 : (int)s->n;
}

static void test_plain_statements_and_lines(void)
{
	struct strbuf err = STRBUF_INIT;
	struct sql_script s;

	CHECK(split("CREATE TABLE a (x INT);\n\n  CREATE TABLE b (y INT) ;\n;;\n", &s, &err) == 2);
	CHECK_STR(s.v[0].text, "CREATE TABLE a (x INT)");
	CHECK(s.v[0].line == 1);
	CHECK_STR(s.v[1].text, "CREATE TABLE b (y INT)");
	CHECK(s.v[1].line == 3);
	sql_script_release(&s);
	CHECK(split("", &s, &err) == 0);
	sql_script_release(&s);
	CHECK(split("  \n -- only a comment\n", &s, &err) == 0);
	sql_script_release(&s);
	strbuf_release(&err);
}

static void test_unterminated_tail_is_a_statement(void)
{
	struct strbuf err = STRBUF_INIT;
	struct sql_script s;

	CHECK(split("DO 1;\nDO 2", &s, &err) == 2);
	CHECK_STR(s.v[1].text, "DO 2");
	CHECK(s.v[1].line == 2);
	sql_script_release(&s);
	CHECK(split("DO 1;\nDO 2 -- no semicolon\n", &s, &err) == 2);
	CHECK_STR(s.v[1].text, "DO 2");
	sql_script_release(&s);
	strbuf_release(&err);
}

static void test_quotes_hold_semicolons_and_escapes(void)
{
	struct strbuf err = STRBUF_INIT;
	struct sql_script s;

	CHECK(split("INSERT INTO t VALUES ('a;b', 'it''s', 'back\\'slash;', \"d\\\"q;\", `we;ird``id`);"
		    "DO 'x\\\\';DO 3",
		    &s, &err) == 3);
	CHECK_STR(s.v[0].text, "INSERT INTO t VALUES ('a;b', 'it''s', 'back\\'slash;', \"d\\\"q;\", "
			       "`we;ird``id`)");
	CHECK_STR(s.v[1].text, "DO 'x\\\\'"); /* an escaped backslash does not escape the quote */
	CHECK_STR(s.v[2].text, "DO 3");
	sql_script_release(&s);
	/* comment markers inside strings are text */
	CHECK(split("DO '-- not a comment # nor this /* nor */';", &s, &err) == 1);
	CHECK_STR(s.v[0].text, "DO '-- not a comment # nor this /* nor */'");
	sql_script_release(&s);
	/* a backtick identifier knows no backslash escape */
	CHECK(split("CREATE TABLE `a\\` (x INT); DO 1", &s, &err) == 2);
	CHECK_STR(s.v[0].text, "CREATE TABLE `a\\` (x INT)");
	sql_script_release(&s);
	strbuf_release(&err);
}

static void test_comments(void)
{
	struct strbuf err = STRBUF_INIT;
	struct sql_script s;

	CHECK(split("-- header; with a semicolon\n"
		    "# hash comment; too\n"
		    "CREATE TABLE a ( -- why; x\n"
		    "  x INT /* a; block\n comment */ NOT NULL # trailing;\n"
		    ");\n"
		    "/* before; */ DO 1;\n"
		    "DO 5--1;\n" /* "--" without a blank is two minus signs */
		    "DO 2 --\n;\n",
		    &s, &err) == 4);
	CHECK(strstr(s.v[0].text, "CREATE TABLE a (") == s.v[0].text);
	CHECK(strstr(s.v[0].text, "x INT") && strstr(s.v[0].text, "NOT NULL"));
	CHECK(!strstr(s.v[0].text, "why") && !strstr(s.v[0].text, "block") &&
	      !strstr(s.v[0].text, "trailing"));
	CHECK(s.v[0].line == 3);
	CHECK_STR(s.v[1].text, "DO 1");
	CHECK(s.v[1].line == 7);
	CHECK_STR(s.v[2].text, "DO 5--1");
	CHECK_STR(s.v[3].text, "DO 2");
	sql_script_release(&s);
	/* a comment separates tokens as a blank does */
	CHECK(split("DO 1/**/+2;", &s, &err) == 1);
	CHECK_STR(s.v[0].text, "DO 1 +2");
	sql_script_release(&s);
	/* executable comments are the server's: kept */
	CHECK(split("/*!40101 SET x = 1 */; /*M!100100 DO 1; */", &s, &err) == 2);
	CHECK_STR(s.v[0].text, "/*!40101 SET x = 1 */");
	CHECK_STR(s.v[1].text, "/*M!100100 DO 1; */");
	sql_script_release(&s);
	strbuf_release(&err);
}

static void test_refused_files(void)
{
	struct strbuf err = STRBUF_INIT;
	struct sql_script s;

	CHECK(split("DO 1;\nDO 'open;\nDO 2;\n", &s, &err) < 0);
	CHECK_STR(strbuf_str(&err), "line 2: a string opened here is not closed");
	CHECK(s.n == 0 && s.v == NULL); /* nothing to run at all */
	CHECK(split("DO 1;\n\n/* never closed;\nDO 2;", &s, &err) < 0);
	CHECK_STR(strbuf_str(&err), "line 3: a comment opened here is not closed");
	CHECK(split("CREATE TABLE `t (x INT);", &s, &err) < 0);
	CHECK(strstr(strbuf_str(&err), "identifier"));
	CHECK(split("DO 'a\\';", &s, &err) < 0); /* the quote is escaped */
	CHECK(split("DO 1;\ndelimiter //\nCREATE PROCEDURE p() BEGIN DO 1; END//\n", &s, &err) < 0);
	CHECK(strstr(strbuf_str(&err), "line 2: DELIMITER"));
	{
		static const char nul[] = "DO 1;\nDO\0 2;";

		strbuf_reset(&err);
		CHECK(sql_split(nul, sizeof(nul) - 1, &s, &err) < 0);
		CHECK(strstr(strbuf_str(&err), "line 2: a NUL byte"));
	}
	/* "delimiter" inside a statement is an ordinary word */
	CHECK(split("CREATE TABLE t (delimiter INT);", &s, &err) == 1);
	sql_script_release(&s);
	strbuf_release(&err);
}

int main(void)
{
	RUN(test_plain_statements_and_lines);
	RUN(test_unterminated_tail_is_a_statement);
	RUN(test_quotes_hold_semicolons_and_escapes);
	RUN(test_comments);
	RUN(test_refused_files);
	return harness_done("sqlsplit");
}
