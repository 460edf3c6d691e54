/* test_sse.c - the incremental Server-Sent Events parser. */
#include "harness.h"

#include "sse.h"
#include "strbuf.h"

/* Every event as "<type>|<id>|<data>\n", data with NUL shown as "\0". */
static int record(void *ctx, const char *type, const char *data, size_t len, const char *id)
{
	struct strbuf *log = ctx;
	size_t i;

	strbuf_addf(log, "%s|%s|", type, id);
	for (i = 0; i < len; i++) {
		if (data[i])
			strbuf_addch(log, data[i]);
		else
			strbuf_addstr(log, "\\0");
	}
	strbuf_addch(log, '\n');
	return 0;
}

/* Parses input in one feed; returns the feed's result, events in log. */
static int parse_whole(const char *input, size_t len, size_t cap, struct strbuf *log)
{
	struct sse_parser p;
	int rc;

	sse_parser_init(&p, cap);
	rc = sse_parser_feed(&p, input, len, record, log);
	sse_parser_release(&p);
	return rc;
}

static int parse_split(const char *input, size_t len, size_t at, size_t cap, struct strbuf *log)
{
	struct sse_parser p;
	int rc;

	sse_parser_init(&p, cap);
	rc = sse_parser_feed(&p, input, at, record, log);
	if (!rc)
		rc = sse_parser_feed(&p, input + at, len - at, record, log);
	sse_parser_release(&p);
	return rc;
}

static int parse_bytewise(const char *input, size_t len, size_t cap, struct strbuf *log)
{
	struct sse_parser p;
	size_t i;
	int rc = 0;

	sse_parser_init(&p, cap);
	for (i = 0; i < len && !rc; i++)
		rc = sse_parser_feed(&p, input + i, 1, record, log);
	sse_parser_release(&p);
	return rc;
}

/* Whole, every two-way split and byte by byte must all give want. */
static void check_all_chunkings(const char *input, size_t len, const char *want)
{
	struct strbuf log = STRBUF_INIT;
	size_t at;

	CHECK(parse_whole(input, len, 4096, &log) == 0);
	CHECK_STR(log.buf, want);
	for (at = 0; at <= len; at++) {
		strbuf_reset(&log);
		CHECK(parse_split(input, len, at, 4096, &log) == 0);
		if (strcmp(strbuf_str(&log), want))
			fprintf(stderr, "split at %zu differs: %s\n", at, strbuf_str(&log));
		CHECK_STR(strbuf_str(&log), want);
	}
	strbuf_reset(&log);
	CHECK(parse_bytewise(input, len, 4096, &log) == 0);
	CHECK_STR(strbuf_str(&log), want);
	strbuf_release(&log);
}

#define CHECK_CHUNKINGS(lit, want) check_all_chunkings(lit, sizeof(lit) - 1, want)

static void test_simple_event(void)
{
	CHECK_CHUNKINGS("data: hello\n\n", "message||hello\n");
	CHECK_CHUNKINGS("data:hello\n\ndata: world\n\n", "message||hello\nmessage||world\n");
}

static void test_line_endings(void)
{
	const char *want = "message||a\nb\nupdate|7|c\n";

	CHECK_CHUNKINGS("data: a\ndata: b\n\nevent: update\nid: 7\ndata: c\n\n", want);
	CHECK_CHUNKINGS("data: a\r\ndata: b\r\n\r\nevent: update\r\nid: 7\r\ndata: c\r\n\r\n", want);
	CHECK_CHUNKINGS("data: a\rdata: b\r\revent: update\rid: 7\rdata: c\r\r", want);
	CHECK_CHUNKINGS("data: a\r\ndata: b\r\n\revent: update\nid: 7\rdata: c\n\r\n", want);
	/* "\n\r" is two line ends, not one */
	CHECK_CHUNKINGS("data: x\n\rdata: y\n\n", "message||x\nmessage||y\n");
}

static void test_comments_and_fields(void)
{
	CHECK_CHUNKINGS(": keep-alive\n\n: another\ndata: x\n: inside\n\n", "message||x\n");
	/* no colon: the whole line is the field name, the value is empty */
	CHECK_CHUNKINGS("data\ndata\n\n", "message||\n\n");
	CHECK_CHUNKINGS("data\n\n", "message||\n");
	/* only one space after the colon is dropped */
	CHECK_CHUNKINGS("data:  two\n\n", "message|| two\n");
	CHECK_CHUNKINGS("retry: 100\nfoo: bar\ndata: y\n\n", "message||y\n");
	/* a field name must match exactly */
	CHECK_CHUNKINGS("Data: no\ndata : no\ndata: yes\n\n", "message||yes\n");
}

static void test_multiline_data(void)
{
	CHECK_CHUNKINGS("data: {\"a\":\ndata: 1}\ndata:\n\n", "message||{\"a\":\n1}\n\n");
}

static void test_event_type_and_id(void)
{
	/* a blank line without data dispatches nothing but resets the type */
	CHECK_CHUNKINGS("event: ping\n\ndata: x\n\n", "message||x\n");
	/* the id persists across events until changed; "id" alone clears it */
	CHECK_CHUNKINGS("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
			"message|1|a\nmessage|1|b\nmessage||c\n");
	/* an id holding NUL is ignored */
	CHECK_CHUNKINGS("id: 5\n\nid: a\0b\ndata: d\n\n", "message|5|d\n");
	CHECK_CHUNKINGS("event: error\ndata: {}\n\n", "error||{}\n");
}

static void test_nul_in_data(void)
{
	CHECK_CHUNKINGS("data: a\0b\n\n", "message||a\\0b\n");
}

static void test_bom(void)
{
	CHECK_CHUNKINGS("\xef\xbb\xbf" "data: x\n\n", "message||x\n");
	/* a BOM later in the stream is just bytes of a field name */
	CHECK_CHUNKINGS("data: x\n\n\xef\xbb\xbf" "data: y\n\n", "message||x\n");
	/* half a BOM is no BOM: the bytes start the first line */
	CHECK_CHUNKINGS("\xef\xbb" "data: z\n\ndata: w\n\n", "message||w\n");
	CHECK_CHUNKINGS("\xef\xbb\xbf\xef\xbb\xbf" "data: x\n\ndata: v\n\n", "message||v\n");
}

static void test_incomplete_event_not_dispatched(void)
{
	CHECK_CHUNKINGS("data: a\n\ndata: b\n", "message||a\n");
	CHECK_CHUNKINGS("data: a\n\ndata: b", "message||a\n");
}

static void test_line_cap(void)
{
	struct strbuf log = STRBUF_INIT;
	struct sse_parser p;
	char line[64];

	memset(line, 'x', sizeof(line));
	/* a line of exactly the cap is fine */
	CHECK(parse_whole("data:12345678\n\n", 15, 13, &log) == 0);
	CHECK_STR(log.buf, "message||12345678\n");
	strbuf_reset(&log);
	CHECK(parse_whole("data:123456789\n\n", 16, 13, &log) == SSE_ERR_TOO_LARGE);
	CHECK(parse_split("data:123456789\n\n", 16, 5, 13, &log) == SSE_ERR_TOO_LARGE);
	CHECK(parse_bytewise("data:123456789\n\n", 16, 13, &log) == SSE_ERR_TOO_LARGE);
	CHECK(log.len == 0);

	/* an unterminated line is refused as soon as it passes the cap */
	sse_parser_init(&p, 32);
	CHECK(sse_parser_feed(&p, line, 32, record, &log) == 0);
	CHECK(sse_parser_feed(&p, line, 1, record, &log) == SSE_ERR_TOO_LARGE);
	/* and the parser stays stopped */
	CHECK(sse_parser_feed(&p, "\n\ndata: a\n\n", 11, record, &log) == SSE_ERR_TOO_LARGE);
	CHECK(p.line.alloc <= 33);
	sse_parser_release(&p);

	/* comment lines are bounded too */
	sse_parser_init(&p, 16);
	CHECK(sse_parser_feed(&p, ":", 1, record, &log) == 0);
	CHECK(sse_parser_feed(&p, line, 20, record, &log) == SSE_ERR_TOO_LARGE);
	sse_parser_release(&p);
	strbuf_release(&log);
}

static void test_event_cap(void)
{
	struct strbuf log = STRBUF_INIT;
	struct sse_parser p;
	int i, rc = 0;

	/* data "1234\n1234\n" = 10 bytes fits a cap of 10; one more line does not */
	CHECK(parse_whole("data:1234\ndata:1234\n\n", 21, 10, &log) == 0);
	CHECK_STR(log.buf, "message||1234\n1234\n");
	strbuf_reset(&log);
	CHECK(parse_whole("data:1234\ndata:1234\ndata:1\n\n", 28, 10, &log) == SSE_ERR_TOO_LARGE);
	CHECK(log.len == 0);

	/* many short lines never grow the data buffer past the cap */
	sse_parser_init(&p, 100);
	for (i = 0; i < 1000 && !rc; i++)
		rc = sse_parser_feed(&p, "data: abc\n", 10, record, &log);
	CHECK(rc == SSE_ERR_TOO_LARGE);
	CHECK(p.data.len <= 100);
	CHECK(p.data.alloc <= 101);
	sse_parser_release(&p);
	strbuf_release(&log);
}

static int stop_at_second(void *ctx, const char *type, const char *data, size_t len,
			  const char *id)
{
	int *count = ctx;

	(void)type;
	(void)data;
	(void)len;
	(void)id;
	return ++*count == 2 ? 42 : 0;
}

static void test_callback_stops(void)
{
	static const char input[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
	struct sse_parser p;
	int count = 0;

	sse_parser_init(&p, 64);
	CHECK(sse_parser_feed(&p, input, sizeof(input) - 1, stop_at_second, &count) == 42);
	CHECK(count == 2);
	CHECK(sse_parser_feed(&p, input, sizeof(input) - 1, stop_at_second, &count) == 42);
	CHECK(count == 2);
	sse_parser_release(&p);
	CHECK_STR(sse_strerror(SSE_ERR_TOO_LARGE), "event stream line or event too large");
}

static void test_null_callback_and_empty_feeds(void)
{
	struct sse_parser p;

	sse_parser_init(&p, 64);
	CHECK(sse_parser_feed(&p, "", 0, NULL, NULL) == 0);
	CHECK(sse_parser_feed(&p, "data: x\n\n", 9, NULL, NULL) == 0);
	CHECK(p.data.len == 0);
	sse_parser_release(&p);
	/* release twice is harmless */
	sse_parser_release(&p);
}

/* An OpenAI-shaped stream, parsed at every split, keeps every chunk intact. */
static void test_openai_shape(void)
{
	static const char input[] =
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"
		": OPENROUTER PROCESSING\n\n"
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n"
		"data: [DONE]\n\n";

	CHECK_CHUNKINGS(input,
			"message||{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n"
			"message||{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n"
			"message||[DONE]\n");
}

int main(void)
{
	RUN(test_simple_event);
	RUN(test_line_endings);
	RUN(test_comments_and_fields);
	RUN(test_multiline_data);
	RUN(test_event_type_and_id);
	RUN(test_nul_in_data);
	RUN(test_bom);
	RUN(test_incomplete_event_not_dispatched);
	RUN(test_line_cap);
	RUN(test_event_cap);
	RUN(test_callback_stops);
	RUN(test_null_callback_and_empty_feeds);
	RUN(test_openai_shape);
	return harness_done("sse");
}
