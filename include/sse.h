/*
 * sse.h - incremental Server-Sent Events parser (WHATWG "event stream"
 * interpretation), fed arbitrary chunks of a byte stream.
 *
 *   sse_parser_init     set up an empty parser with a size cap
 *   sse_parser_feed     consume bytes; dispatch each complete event
 *   sse_parser_release  free the buffers
 *   sse_strerror        text for the parser's own error codes
 *
 * Lines end in "\n", "\r\n" or "\r" (a "\r\n" split across two feeds is one
 * line end). A leading UTF-8 BOM is skipped. Lines starting with ':' are
 * comments. "data" lines are joined with "\n"; "event" sets the type of the
 * event being built ("message" when absent); "id" sets the last event id,
 * which persists across events; "retry" and unknown fields are ignored (this
 * parser never reconnects). A blank line dispatches the event unless its data
 * is empty. Bytes after the last line end are an incomplete line: they wait
 * for the next feed and are dropped at release, as the standard says.
 *
 * Every buffer is bounded: a line, the data of one event, the event type and
 * the id may each hold at most max_event_bytes, so memory use never exceeds
 * about four times the cap whatever the input. Passing the cap is an error.
 */
#ifndef KILN_SSE_H
#define KILN_SSE_H

#include <stddef.h>

#include "strbuf.h"

/* The parser's own errors; callbacks should stop with a positive value (or
 * any value other than these) so the caller can tell the two apart. */
#define SSE_ERR_TOO_LARGE (-7301) /* a line or an event passed the cap */
#define SSE_ERR_NOMEM (-7302)

typedef int (*sse_event_fn)(void *ctx, const char *event_type, const char *data,
			    size_t data_len, const char *id);

struct sse_parser {
	struct strbuf line;  /* the incomplete line carried between feeds */
	struct strbuf data;  /* data of the event being built, each line + "\n" */
	struct strbuf event; /* event type of the event being built */
	struct strbuf id;    /* last event id */
	size_t max_event_bytes;
	unsigned bom_seen;   /* bytes of a leading BOM matched so far */
	int bom_done;        /* past the point where a BOM may appear */
	int after_cr;        /* the previous byte ended a line with "\r" */
	int status;          /* sticky: non-zero once stopped or failed */
};

void sse_parser_init(struct sse_parser *p, size_t max_event_bytes);

/*
 * Consumes len bytes, calling on_event (which may be NULL) for each complete
 * event; data is NUL-terminated as well as counted and may hold NUL bytes.
 * Returns 0, the callback's non-zero return (which stops the parse), or an
 * SSE_ERR_* code. Once it has returned non-zero the parser is stopped: every
 * later feed returns the same value without looking at its bytes.
 */
int sse_parser_feed(struct sse_parser *p, const char *data, size_t len,
		    sse_event_fn on_event, void *ctx);

void sse_parser_release(struct sse_parser *p);

const char *sse_strerror(int code);

#endif
