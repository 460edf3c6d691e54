/*
 * fuzz_sse.c - libFuzzer target: arbitrary bytes, fed in three chunkings
 * (whole, byte by byte, pseudo-random pieces), into the SSE parser and the
 * chat-completion chunk assembler.
 *
 * Beyond "no crash": every chunking must give the same events and the same
 * assembled response, and no buffer may grow past its cap.
 *
 * Build (the inputs are plain event streams, see tests/fuzz/corpus/sse/):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -Iinclude \
 *     -include include/compat.h -D_GNU_SOURCE $(pkg-config --cflags json-c) \
 *     tests/fuzz/fuzz_sse.c src/sse.c src/model_client.c src/strbuf.c \
 *     src/util.c src/log.c $(pkg-config --libs json-c libcurl) -o fuzz_sse
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model_client.h"
#include "sse.h"
#include "strbuf.h"

#define SSE_CAP 256
#define STREAM_CAP (16 * 1024)

/* Chunk sizes come from the input's own hash, so every input brings its
 * own split points and the corpus stays plain text. */
struct chunker {
	uint64_t state;
};

static void chunker_init(struct chunker *c, const uint8_t *data, size_t size)
{
	uint64_t h = 1469598103934665603ull;
	size_t i;

	for (i = 0; i < size; i++)
		h = (h ^ data[i]) * 1099511628211ull;
	c->state = h | 1;
}

static size_t chunker_next(struct chunker *c)
{
	c->state ^= c->state << 13;
	c->state ^= c->state >> 7;
	c->state ^= c->state << 17;
	/* mostly tiny pieces, now and then a large one */
	return (c->state & 7) ? 1 + (size_t)(c->state >> 32) % 9 : 1 + (size_t)(c->state >> 32) % 700;
}

enum mode { WHOLE, BYTEWISE, RANDOM };

static size_t piece(enum mode m, struct chunker *c, size_t left)
{
	size_t n = m == WHOLE ? left : m == BYTEWISE ? 1 : chunker_next(c);

	return n < left ? n : left;
}

/* ---- the SSE parser alone ---- */

static int record(void *ctx, const char *type, const char *data, size_t len, const char *id)
{
	struct strbuf *log = ctx;

	if (len > SSE_CAP || strlen(type) > SSE_CAP || strlen(id) > SSE_CAP || data[len])
		abort();
	strbuf_addf(log, "%zu:%s|%zu:%s|%zu:", strlen(type), type, strlen(id), id, len);
	strbuf_add(log, data, len);
	strbuf_addch(log, '\n');
	return 0;
}

static int run_sse(const uint8_t *data, size_t size, enum mode m, struct strbuf *log)
{
	struct sse_parser p;
	struct chunker c;
	size_t i, n;
	int rc = 0;

	chunker_init(&c, data, size);
	sse_parser_init(&p, SSE_CAP);
	for (i = 0; i < size && !rc; i += n) {
		n = piece(m, &c, size - i);
		rc = sse_parser_feed(&p, (const char *)data + i, n, record, log);
		if (p.line.alloc > SSE_CAP + 1 || p.data.alloc > SSE_CAP + 1 ||
		    p.event.alloc > SSE_CAP + 1 || p.id.alloc > SSE_CAP + 1)
			abort();
	}
	sse_parser_release(&p);
	return rc;
}

/* ---- the assembler ---- */

static int count_delta(void *ctx, const char *text, size_t len)
{
	size_t *total = ctx;

	if (!len || !text)
		abort();
	*total += len;
	return 0;
}

/* The outcome of one run, flattened so runs can be compared. */
static void run_stream(const uint8_t *data, size_t size, enum mode m, struct strbuf *out)
{
	struct model_callbacks cb = { count_delta, NULL, NULL, NULL };
	struct model_response r;
	struct model_stream s;
	struct chunker c;
	size_t i, n, delivered = 0;
	int rc = 0;

	cb.ctx = &delivered;
	chunker_init(&c, data, size);
	model_response_init(&r);
	model_stream_init(&s, &r, &cb, STREAM_CAP);
	for (i = 0; i < size && !rc; i += n) {
		n = piece(m, &c, size - i);
		rc = model_stream_feed(&s, (const char *)data + i, n);
	}
	if (!rc)
		rc = model_stream_finish(&s);

	if (r.content.len > STREAM_CAP || delivered != r.content.len ||
	    r.ncalls > MODEL_MAX_TOOL_CALLS || s.fed_bytes > STREAM_CAP)
		abort();
	strbuf_addf(out, "rc=%d code=%s finish=%s usage=%d/%ld/%ld/%ld\n", rc, s.err.code,
		    r.finish_reason, r.has_usage, r.prompt_tokens, r.completion_tokens,
		    r.total_tokens);
	strbuf_add(out, r.content.buf, r.content.len);
	for (i = 0; i < r.ncalls; i++) {
		const struct model_tool_call *t = &r.calls[i];

		if (t->arguments.len > STREAM_CAP ||
		    (t->id && strlen(t->id) > MODEL_MAX_TOOL_CALL_ID) ||
		    (t->name && strlen(t->name) > MODEL_MAX_TOOL_NAME))
			abort();
		strbuf_addf(out, "\ncall %ld %s %s ", t->index, t->id ? t->id : "-",
			    t->name ? t->name : "-");
		strbuf_add(out, t->arguments.buf, t->arguments.len);
	}
	model_stream_release(&s);
	model_response_release(&r);
}

static void same(const struct strbuf *a, const struct strbuf *b)
{
	if (a->len != b->len || memcmp(strbuf_str(a), strbuf_str(b), a->len))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct strbuf whole = STRBUF_INIT, other = STRBUF_INIT;
	int rc_whole, rc;

	rc_whole = run_sse(data, size, WHOLE, &whole);
	rc = run_sse(data, size, BYTEWISE, &other);
	if (rc != rc_whole)
		abort();
	same(&whole, &other);
	strbuf_reset(&other);
	rc = run_sse(data, size, RANDOM, &other);
	if (rc != rc_whole)
		abort();
	same(&whole, &other);

	strbuf_reset(&whole);
	strbuf_reset(&other);
	run_stream(data, size, WHOLE, &whole);
	run_stream(data, size, BYTEWISE, &other);
	same(&whole, &other);
	strbuf_reset(&other);
	run_stream(data, size, RANDOM, &other);
	same(&whole, &other);

	strbuf_release(&whole);
	strbuf_release(&other);
	return 0;
}
