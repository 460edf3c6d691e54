/*
 * test_http - percent-decoding of paths and query parameters.
 */
#include <string.h>

#include "harness.h"
#include "http.h"
#include "strbuf.h"

static int decode(const char *in, struct strbuf *out)
{
	strbuf_reset(out);
	return http_percent_decode(in, strlen(in), out);
}

static void test_percent_decode(void)
{
	struct strbuf out = STRBUF_INIT;

	CHECK(decode("/admin/apps", &out) == 0);
	CHECK_STR(out.buf, "/admin/apps");
	CHECK(decode("a%20b%2Fc%2fd", &out) == 0);
	CHECK_STR(out.buf, "a b/c/d");
	CHECK(decode("%41%42%c3%a9", &out) == 0);
	CHECK_STR(out.buf, "AB\xc3\xa9");
	CHECK(decode("a+b", &out) == 0); /* '+' is a space only in forms */
	CHECK_STR(out.buf, "a+b");
	CHECK(decode("", &out) == 0 && out.len == 0);
	CHECK(decode("%", &out) < 0);
	CHECK(decode("abc%4", &out) < 0);
	CHECK(decode("%zz", &out) < 0);
	CHECK(decode("%4g", &out) < 0);
	CHECK(decode("a%00b", &out) < 0); /* a NUL never enters a path */
	{
		static const char raw[] = "a\0b";

		strbuf_reset(&out);
		CHECK(http_percent_decode(raw, 3, &out) < 0);
	}
	strbuf_release(&out);
}

static void test_percent_decode_respects_the_cap(void)
{
	struct strbuf out;

	strbuf_init_capped(&out, 4);
	CHECK(http_percent_decode("abcd", 4, &out) == 0);
	strbuf_reset(&out);
	CHECK(http_percent_decode("abcde", 5, &out) < 0);
	CHECK(out.len <= 4);
	strbuf_release(&out);
}

static void test_query_param(void)
{
	struct http_request req;
	struct strbuf v = STRBUF_INIT;

	memset(&req, 0, sizeof(req));
	req.query = "limit=20&cursor=a%20b&flag&empty=&bad=%zz&ab=2&a=1&a=3";
	CHECK(http_query_param(&req, "limit", &v) == 1);
	CHECK_STR(v.buf, "20");
	CHECK(http_query_param(&req, "cursor", &v) == 1);
	CHECK_STR(v.buf, "a b");
	CHECK(http_query_param(&req, "flag", &v) == 1 && v.len == 0);
	CHECK(http_query_param(&req, "empty", &v) == 1 && v.len == 0);
	CHECK(http_query_param(&req, "bad", &v) == 1 && v.len == 0); /* present, undecodable */
	CHECK(http_query_param(&req, "a", &v) == 1); /* not "ab"; the first "a" wins */
	CHECK_STR(v.buf, "1");
	CHECK(http_query_param(&req, "missing", &v) == 0);
	CHECK(http_query_param(&req, "lim", &v) == 0);
	req.query = "";
	CHECK(http_query_param(&req, "limit", &v) == 0);
	req.query = "&&limit=5&";
	CHECK(http_query_param(&req, "limit", &v) == 1);
	CHECK_STR(v.buf, "5");
	strbuf_release(&v);
}

int main(void)
{
	RUN(test_percent_decode);
	RUN(test_percent_decode_respects_the_cap);
	RUN(test_query_param);
	return harness_done("http");
}
