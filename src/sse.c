/* sse.c - incremental Server-Sent Events parser (see sse.h). */
#include "sse.h"

#include <string.h>

static const unsigned char utf8_bom[3] = { 0xef, 0xbb, 0xbf };

void sse_parser_init(struct sse_parser *p, size_t max_event_bytes)
{
	memset(p, 0, sizeof(*p));
	if (!max_event_bytes)
		max_event_bytes = 1;
	p->max_event_bytes = max_event_bytes;
	strbuf_init_capped(&p->line, max_event_bytes);
	strbuf_init_capped(&p->data, max_event_bytes);
	strbuf_init_capped(&p->event, max_event_bytes);
	strbuf_init_capped(&p->id, max_event_bytes);
}

void sse_parser_release(struct sse_parser *p)
{
	strbuf_release(&p->line);
	strbuf_release(&p->data);
	strbuf_release(&p->event);
	strbuf_release(&p->id);
}

const char *sse_strerror(int code)
{
	switch (code) {
	case 0:
		return "no error";
	case SSE_ERR_TOO_LARGE:
		return "event stream line or event too large";
	case SSE_ERR_NOMEM:
		return "out of memory";
	default:
		return "stopped by the event handler";
	}
}

/* Appends to a capped buffer, telling a passed cap from a failed allocation. */
static int add_capped(struct strbuf *sb, const void *bytes, size_t len)
{
	if (len > sb->cap - sb->len)
		return SSE_ERR_TOO_LARGE;
	if (strbuf_add(sb, bytes, len) < 0)
		return SSE_ERR_NOMEM;
	return 0;
}

static int set_capped(struct strbuf *sb, const char *bytes, size_t len)
{
	strbuf_reset(sb);
	return add_capped(sb, bytes, len);
}

static int field_is(const char *field, size_t len, const char *name)
{
	return len == strlen(name) && !memcmp(field, name, len);
}

static int dispatch(struct sse_parser *p, sse_event_fn on_event, void *ctx)
{
	int rc = 0;

	if (p->data.len) {
		/* the data buffer always ends in the "\n" its last line added */
		strbuf_setlen(&p->data, p->data.len - 1);
		if (on_event)
			rc = on_event(ctx, p->event.len ? p->event.buf : "message",
				      strbuf_str(&p->data), p->data.len,
				      strbuf_str(&p->id));
	}
	strbuf_reset(&p->data);
	strbuf_reset(&p->event);
	return rc;
}

static int process_line(struct sse_parser *p, const char *line, size_t len,
			sse_event_fn on_event, void *ctx)
{
	const char *colon, *value;
	size_t field_len, value_len;
	int rc;

	if (!len)
		return dispatch(p, on_event, ctx);
	if (line[0] == ':')
		return 0;
	colon = memchr(line, ':', len);
	field_len = colon ? (size_t)(colon - line) : len;
	value = colon ? colon + 1 : line + len;
	value_len = len - (size_t)(value - line);
	if (value_len && value[0] == ' ') {
		value++;
		value_len--;
	}

	if (field_is(line, field_len, "data")) {
		rc = add_capped(&p->data, value, value_len);
		return rc ? rc : add_capped(&p->data, "\n", 1);
	}
	if (field_is(line, field_len, "event"))
		return set_capped(&p->event, value, value_len);
	if (field_is(line, field_len, "id") && !memchr(value, '\0', value_len))
		return set_capped(&p->id, value, value_len);
	return 0;
}

/*
 * Matches a leading BOM, which may arrive split across feeds. Returns how
 * many bytes of data it consumed; bytes that turn out not to be a BOM after
 * all are put back as the start of the first line.
 */
static size_t skip_bom(struct sse_parser *p, const char *data, size_t len, int *rc)
{
	size_t i = 0;

	*rc = 0;
	while (!p->bom_done && i < len) {
		if ((unsigned char)data[i] == utf8_bom[p->bom_seen]) {
			i++;
			if (++p->bom_seen == sizeof(utf8_bom))
				p->bom_done = 1;
			continue;
		}
		p->bom_done = 1;
		/* BOM bytes are never line ends, so they simply start the line */
		*rc = add_capped(&p->line, utf8_bom, p->bom_seen);
	}
	return i;
}

int sse_parser_feed(struct sse_parser *p, const char *data, size_t len,
		    sse_event_fn on_event, void *ctx)
{
	size_t i, j, line_len;
	const char *line;
	int rc = 0;

	if (p->status)
		return p->status;
	i = skip_bom(p, data, len, &rc);
	while (!rc && i < len) {
		if (p->after_cr) {
			p->after_cr = 0;
			if (data[i] == '\n') {
				i++;
				continue;
			}
		}
		for (j = i; j < len && data[j] != '\n' && data[j] != '\r'; j++)
			;
		if (j == len) {
			rc = add_capped(&p->line, data + i, len - i);
			break;
		}
		if (p->line.len) {
			rc = add_capped(&p->line, data + i, j - i);
			if (rc)
				break;
			line = p->line.buf;
			line_len = p->line.len;
		} else {
			/* the common case: the whole line is in this feed, no copy */
			if (j - i > p->max_event_bytes) {
				rc = SSE_ERR_TOO_LARGE;
				break;
			}
			line = data + i;
			line_len = j - i;
		}
		p->after_cr = data[j] == '\r';
		i = j + 1;
		rc = process_line(p, line, line_len, on_event, ctx);
		strbuf_reset(&p->line);
	}
	p->status = rc;
	return rc;
}
