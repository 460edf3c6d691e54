/* test_jsonw.c - the JSON writer, the integer formatting under it, and
 * that what it writes is JSON json-c reads back to the same values. */
#include <json.h>
#include <limits.h>
#include <stdint.h>

#include "harness.h"
#include "jsonw.h"
#include "strbuf.h"
#include "util.h"

static void test_fmt_int64_edges(void)
{
	char buf[32];

	buf[fmt_int64(buf, 0)] = '\0';
	CHECK_STR(buf, "0");
	buf[fmt_int64(buf, -7)] = '\0';
	CHECK_STR(buf, "-7");
	buf[fmt_int64(buf, INT64_MAX)] = '\0';
	CHECK_STR(buf, "9223372036854775807");
	buf[fmt_int64(buf, INT64_MIN)] = '\0';
	CHECK_STR(buf, "-9223372036854775808");
	buf[fmt_uint64(buf, UINT64_MAX)] = '\0';
	CHECK_STR(buf, "18446744073709551615");
}

static void test_commas_and_nesting(void)
{
	struct strbuf sb = STRBUF_INIT;
	struct jsonw w;

	jsonw_init(&w, &sb);
	jsonw_object(&w);
	jsonw_kv_int(&w, "a", 1);
	jsonw_key(&w, "list");
	jsonw_array(&w);
	jsonw_int(&w, 1);
	jsonw_object(&w);
	jsonw_object_end(&w);
	jsonw_array(&w);
	jsonw_array_end(&w);
	jsonw_null(&w);
	jsonw_array_end(&w);
	jsonw_kv_bool(&w, "t", 1);
	jsonw_kv_bool(&w, "f", 0);
	jsonw_kv_null(&w, "n");
	jsonw_kv_string(&w, "s", NULL);
	jsonw_object_end(&w);
	CHECK_STR(sb.buf, "{\"a\":1,\"list\":[1,{},[],null],\"t\":true,\"f\":false,\"n\":null,\"s\":null}");
	strbuf_release(&sb);
}

static void test_escapes_round_trip(void)
{
	static const char nasty[] = "q\"b\\s/ nl\n cr\r tab\t bs\b ff\f ctl\x01\x1f del\x7f \xc3\xa9 \xf0\x9f\x94\xa5";
	struct strbuf sb = STRBUF_INIT;
	struct jsonw w;
	json_object *back, *v;

	jsonw_init(&w, &sb);
	jsonw_object(&w);
	jsonw_kv_string(&w, "k\"ey", nasty);
	jsonw_key(&w, "embedded");
	jsonw_string_len(&w, "a\0b", 3);
	jsonw_object_end(&w);
	CHECK(strstr(sb.buf, "\\u0001\\u001f") != NULL);
	CHECK(strstr(sb.buf, "\\\"b\\\\s/") != NULL);
	CHECK(strchr(sb.buf, '\n') == NULL);
	back = json_tokener_parse(sb.buf);
	CHECK(back != NULL);
	if (back) {
		CHECK(json_object_object_get_ex(back, "k\"ey", &v));
		CHECK_STR(json_object_get_string(v), nasty);
		CHECK(json_object_object_get_ex(back, "embedded", &v));
		CHECK(json_object_get_string_len(v) == 3);
		CHECK(!memcmp(json_object_get_string(v), "a\0b", 3));
		json_object_put(back);
	}
	strbuf_release(&sb);
}

static void test_ints_round_trip(void)
{
	static const int64_t vals[] = { 0, 1, -1, 42, INT64_MAX, INT64_MIN, 1700000000123LL };
	struct strbuf sb = STRBUF_INIT;
	struct jsonw w;
	json_object *back;
	size_t i;

	jsonw_init(&w, &sb);
	jsonw_array(&w);
	for (i = 0; i < ARRAY_SIZE(vals); i++)
		jsonw_int(&w, vals[i]);
	jsonw_array_end(&w);
	back = json_tokener_parse(sb.buf);
	CHECK(back && json_object_array_length(back) == ARRAY_SIZE(vals));
	for (i = 0; back && i < ARRAY_SIZE(vals); i++)
		CHECK(json_object_get_int64(json_object_array_get_idx(back, i)) == vals[i]);
	json_object_put(back);
	strbuf_release(&sb);
}

static void test_strbuf_add_int64_and_extend(void)
{
	struct strbuf sb = STRBUF_INIT;

	strbuf_add_int64(&sb, -12);
	strbuf_addch(&sb, '/');
	strbuf_add_int64(&sb, 34);
	CHECK_STR(sb.buf, "-12/34");
	CHECK(strbuf_grow(&sb, 3) == 0);
	memcpy(sb.buf + sb.len, "xyz", 3);
	strbuf_extend(&sb, 3);
	CHECK_STR(sb.buf, "-12/34xyz");
	CHECK(sb.len == 9);
	strbuf_release(&sb);
}

static void test_capped_strbuf_stays_capped(void)
{
	struct strbuf sb;

	strbuf_init_capped(&sb, 4);
	CHECK(strbuf_add(&sb, "abcd", 4) == 0);
	CHECK(strbuf_addch(&sb, 'e') < 0);
	CHECK(strbuf_add(&sb, "", 0) == 0);
	CHECK_STR(sb.buf, "abcd");
	strbuf_release(&sb);
}

int main(void)
{
	RUN(test_fmt_int64_edges);
	RUN(test_commas_and_nesting);
	RUN(test_escapes_round_trip);
	RUN(test_ints_round_trip);
	RUN(test_strbuf_add_int64_and_extend);
	RUN(test_capped_strbuf_stays_capped);
	return harness_done("jsonw");
}
