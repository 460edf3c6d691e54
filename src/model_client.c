/* model_client.c - streaming OpenAI-compatible chat completions (see model_client.h). */
#include "model_client.h"

#include <curl/curl.h>
#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"

/* Error bodies are only read for their message; the rest is dropped. */
#define ERROR_BODY_CAP (64 * 1024)
/* How much of a provider's own message an error carries. */
#define PROVIDER_TEXT_MAX 300
/* The longest the client sleeps between checks of should_abort. */
#define POLL_SLICE_MS 50
/* Retry-After values past this are treated as "not worth waiting for". */
#define RETRY_AFTER_MAX_S (24 * 3600)
/* After finish_reason, how long the usage chunk (or [DONE]) is waited for
 * before the response counts as whole without it. */
#define FINISH_GRACE_MS 2000

void model_config_defaults(struct model_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->connect_timeout_ms = 5000;
	cfg->idle_timeout_ms = 60000;
	cfg->total_timeout_ms = 600000;
	cfg->max_retries = 4;
	cfg->retry_base_ms = 500;
	cfg->retry_max_total_ms = 60000;
	cfg->max_response_bytes = 8u << 20;
}

/* ---- errors ---- */

static void set_error(struct model_error *err, const char *code, long status,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void set_error(struct model_error *err, const char *code, long status,
		      const char *fmt, ...)
{
	va_list ap;

	snprintf(err->code, sizeof(err->code), "%s", code);
	err->http_status = status;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

/*
 * Makes provider-supplied text fit to show: every occurrence of the API key
 * becomes "[redacted]" (providers do echo rejected keys), so does a key cut
 * off by the end of the text, and anything but printable ASCII becomes '?'
 * or a space. The key is replaced before truncating so no prefix survives.
 */
static void clean_provider_text(const char *raw, size_t len, const char *key,
				char *out, size_t outsz)
{
	struct strbuf sb = STRBUF_INIT;
	size_t key_len = key ? strlen(key) : 0;
	size_t i = 0, n, left;
	unsigned char c;

	while (i < len) {
		left = len - i;

		if (key_len && left >= key_len && !memcmp(raw + i, key, key_len)) {
			strbuf_addstr(&sb, "[redacted]");
			i += key_len;
			continue;
		}
		if (key_len && left < key_len && left >= 4 && !memcmp(raw + i, key, left)) {
			strbuf_addstr(&sb, "[redacted]");
			break;
		}
		c = (unsigned char)raw[i++];
		if (c == '\n' || c == '\r' || c == '\t')
			c = ' ';
		else if (c < 0x20 || c >= 0x7f)
			c = '?';
		strbuf_addch(&sb, (char)c);
		if (sb.len > outsz + 16)
			break;
	}
	n = sb.len;
	if (n >= outsz) {
		n = outsz > 4 ? outsz - 4 : 0;
		snprintf(out, outsz, "%.*s...", (int)n, strbuf_str(&sb));
	} else {
		snprintf(out, outsz, "%s", strbuf_str(&sb));
	}
	strbuf_release(&sb);
}

/* The message of an OpenAI-style {"error": {"message": ...}} object. */
static int error_object_text(json_object *error, const char *key, char *out, size_t outsz)
{
	json_object *msg;

	if (json_object_is_type(error, json_type_string)) {
		msg = error;
	} else if (!json_object_is_type(error, json_type_object) ||
		   !json_object_object_get_ex(error, "message", &msg) ||
		   !json_object_is_type(msg, json_type_string)) {
		return -1;
	}
	clean_provider_text(json_object_get_string(msg),
			    (size_t)json_object_get_string_len(msg), key, out, outsz);
	return 0;
}

/* ---- responses ---- */

void model_response_init(struct model_response *r)
{
	memset(r, 0, sizeof(*r));
	strbuf_init(&r->content);
}

/* Empties r for another attempt; the attempt count stays. */
static void response_clear(struct model_response *r)
{
	int attempts = r->attempts;
	size_t i;

	for (i = 0; i < r->ncalls; i++) {
		free(r->calls[i].id);
		free(r->calls[i].name);
		strbuf_release(&r->calls[i].arguments);
	}
	free(r->calls);
	strbuf_release(&r->content);
	model_response_init(r);
	r->attempts = attempts;
}

void model_response_release(struct model_response *r)
{
	response_clear(r);
	r->attempts = 0;
}

/* ---- the chunk assembler ---- */

static int stream_fail(struct model_stream *s, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Records the first failure only; returns 1 so event handlers can stop. */
static int stream_fail(struct model_stream *s, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (s->err.code[0])
		return 1;
	snprintf(s->err.code, sizeof(s->err.code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(s->err.message, sizeof(s->err.message), fmt, ap);
	va_end(ap);
	return 1;
}

static int malformed(struct model_stream *s, const char *what)
{
	return stream_fail(s, "model_stream_malformed", "provider stream chunk malformed: %s", what);
}

void model_stream_init(struct model_stream *s, struct model_response *out,
		       const struct model_callbacks *cb, size_t max_bytes)
{
	memset(s, 0, sizeof(*s));
	if (!max_bytes)
		max_bytes = 1;
	s->max_bytes = max_bytes;
	s->out = out;
	s->cb = cb;
	response_clear(out);
	out->content.cap = max_bytes;
	sse_parser_init(&s->sse, max_bytes);
	s->tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
	if (s->tok)
		json_tokener_set_flags(s->tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
}

void model_stream_release(struct model_stream *s)
{
	sse_parser_release(&s->sse);
	if (s->tok)
		json_tokener_free(s->tok);
	s->tok = NULL;
}

/* An optional member: absent and null both give NULL; else it must have
 * type want. Returns -1 for a wrong type. */
static int get_opt(json_object *obj, const char *key, json_type want, json_object **val)
{
	*val = NULL;
	if (!json_object_object_get_ex(obj, key, val) || !*val ||
	    json_object_is_type(*val, json_type_null)) {
		*val = NULL;
		return 0;
	}
	return json_object_is_type(*val, want) ? 0 : -1;
}

static int deliver_text(struct model_stream *s, json_object *content)
{
	const char *text = json_object_get_string(content);
	size_t len = (size_t)json_object_get_string_len(content);
	const struct model_callbacks *cb = s->cb;

	if (!len)
		return 0;
	if (strbuf_add(&s->out->content, text, len) < 0)
		return stream_fail(s, "model_response_too_large",
				   "provider response text larger than %zu bytes", s->max_bytes);
	if (cb && cb->on_delta) {
		s->delivered = 1;
		if (cb->on_delta(cb->ctx, text, len))
			return stream_fail(s, "cancelled", "the response was stopped by its reader");
	}
	return 0;
}

/*
 * The call a fragment belongs to: the latest one with the same index, unless
 * the fragment carries a different id, which some providers use (with a
 * repeated or missing index) to start the next call.
 */
static struct model_tool_call *call_for_fragment(struct model_stream *s, long index,
						 const char *id)
{
	struct model_response *r = s->out;
	struct model_tool_call *c;
	size_t k;

	for (k = r->ncalls; k-- > 0;) {
		c = &r->calls[k];
		if (c->index != index)
			continue;
		if (!id || !c->id || !strcmp(c->id, id))
			return c;
		break;
	}
	if (r->ncalls == MODEL_MAX_TOOL_CALLS) {
		stream_fail(s, "model_response_too_large",
			    "provider sent more than %d tool calls", MODEL_MAX_TOOL_CALLS);
		return NULL;
	}
	if (r->ncalls == s->calls_alloc) {
		size_t n = s->calls_alloc ? s->calls_alloc * 2 : 4;
		struct model_tool_call *v = realloc(r->calls, n * sizeof(*v));

		if (!v) {
			stream_fail(s, "model_response_too_large", "out of memory for tool calls");
			return NULL;
		}
		r->calls = v;
		s->calls_alloc = n;
	}
	c = &r->calls[r->ncalls++];
	memset(c, 0, sizeof(*c));
	c->index = index;
	strbuf_init_capped(&c->arguments, s->max_bytes);
	return c;
}

static int take_tool_call(struct model_stream *s, json_object *frag)
{
	json_object *jindex, *jid, *fn = NULL, *jname = NULL, *jargs = NULL;
	struct model_tool_call *c;
	const char *id = NULL, *name = NULL;
	long index = -1;

	if (!json_object_is_type(frag, json_type_object))
		return malformed(s, "tool_calls entry is not an object");
	if (get_opt(frag, "index", json_type_int, &jindex) < 0 ||
	    get_opt(frag, "id", json_type_string, &jid) < 0 ||
	    get_opt(frag, "function", json_type_object, &fn) < 0 ||
	    (fn && (get_opt(fn, "name", json_type_string, &jname) < 0 ||
		    get_opt(fn, "arguments", json_type_string, &jargs) < 0)))
		return malformed(s, "tool call fragment has a member of the wrong type");
	if (jindex) {
		int64_t v = json_object_get_int64(jindex);

		if (v < 0 || v > 100000)
			return malformed(s, "tool call index out of range");
		index = (long)v;
	}
	if (jid && json_object_get_string_len(jid)) {
		if (json_object_get_string_len(jid) > MODEL_MAX_TOOL_CALL_ID)
			return malformed(s, "tool call id too long");
		id = json_object_get_string(jid);
	}
	if (jname && json_object_get_string_len(jname)) {
		if (json_object_get_string_len(jname) > MODEL_MAX_TOOL_NAME)
			return malformed(s, "tool name too long");
		name = json_object_get_string(jname);
	}

	c = call_for_fragment(s, index, id);
	if (!c)
		return 1;
	if (id && !c->id)
		c->id = xstrdup(id);
	if (name) {
		if (!c->name)
			c->name = xstrdup(name);
		else if (strcmp(c->name, name))
			return malformed(s, "tool call renamed mid-stream");
	}
	if (jargs && strbuf_add(&c->arguments, json_object_get_string(jargs),
				(size_t)json_object_get_string_len(jargs)) < 0)
		return stream_fail(s, "model_response_too_large",
				   "tool call arguments larger than %zu bytes", s->max_bytes);
	return 0;
}

static int take_choice(struct model_stream *s, json_object *choice)
{
	json_object *jindex, *delta, *content, *calls, *finish;
	size_t i, n;

	if (!json_object_is_type(choice, json_type_object))
		return malformed(s, "choice is not an object");
	if (get_opt(choice, "index", json_type_int, &jindex) < 0 ||
	    get_opt(choice, "delta", json_type_object, &delta) < 0 ||
	    get_opt(choice, "finish_reason", json_type_string, &finish) < 0)
		return malformed(s, "choice has a member of the wrong type");
	/* only the first choice is ours; n > 1 is never requested */
	if (jindex && json_object_get_int64(jindex) != 0)
		return 0;
	if (delta) {
		if (get_opt(delta, "content", json_type_string, &content) < 0 ||
		    get_opt(delta, "tool_calls", json_type_array, &calls) < 0)
			return malformed(s, "delta has a member of the wrong type");
		if (content && deliver_text(s, content))
			return 1;
		n = calls ? json_object_array_length(calls) : 0;
		for (i = 0; i < n; i++)
			if (take_tool_call(s, json_object_array_get_idx(calls, i)))
				return 1;
	}
	if (finish) {
		const char *f = json_object_get_string(finish);
		size_t k;

		for (k = 0; f[k] && k + 1 < sizeof(s->out->finish_reason); k++)
			s->out->finish_reason[k] = isalnum((unsigned char)f[k]) ? f[k] : '_';
		s->out->finish_reason[k] = '\0';
		if (!k)
			return malformed(s, "empty finish_reason");
	}
	return 0;
}

static int take_usage(struct model_stream *s, json_object *usage)
{
	static const char *const names[] = { "prompt_tokens", "completion_tokens",
					     "total_tokens" };
	long *fields[] = { &s->out->prompt_tokens, &s->out->completion_tokens,
			   &s->out->total_tokens };
	json_object *v;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(names); i++) {
		if (get_opt(usage, names[i], json_type_int, &v) < 0)
			return malformed(s, "usage count is not an integer");
		if (v) {
			int64_t n = json_object_get_int64(v);

			*fields[i] = n < 0 ? 0 : n > LONG_MAX ? LONG_MAX : (long)n;
		}
	}
	s->out->has_usage = 1;
	return 0;
}

/*
 * An error reported inside a stream. A numeric code is read like an HTTP
 * status; anything else is taken as a transient provider failure.
 */
static int take_stream_error(struct model_stream *s, json_object *error)
{
	char text[PROVIDER_TEXT_MAX + 1] = "no message";
	json_object *jcode = NULL, *jtype = NULL;
	const char *code = "model_unavailable";

	error_object_text(error, s->secret, text, sizeof(text));
	if (json_object_is_type(error, json_type_object)) {
		json_object_object_get_ex(error, "code", &jcode);
		json_object_object_get_ex(error, "type", &jtype);
	}
	if (json_object_is_type(jcode, json_type_int)) {
		int64_t st = json_object_get_int64(jcode);

		if (st == 401 || st == 403)
			code = "model_auth_failed";
		else if (st == 429)
			code = "model_rate_limited";
		else if (st >= 400 && st < 500 && st != 408)
			code = "model_bad_request";
	} else if (json_object_is_type(jtype, json_type_string) &&
		   !strcmp(json_object_get_string(jtype), "invalid_request_error")) {
		code = "model_bad_request";
	}
	return stream_fail(s, code, "provider reported an error mid-stream: %s", text);
}

static int only_space(const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
			return 0;
	return 1;
}

static int take_chunk(struct model_stream *s, const char *data, size_t len)
{
	json_object *chunk, *choices, *usage, *error;
	size_t i, n;
	int rc = 0;

	if (!s->tok)
		return stream_fail(s, "model_response_too_large", "out of memory for the parser");
	if (len > INT_MAX)
		return malformed(s, "chunk too large");
	json_tokener_reset(s->tok);
	chunk = json_tokener_parse_ex(s->tok, data, (int)len);
	if (!chunk || json_tokener_get_error(s->tok) != json_tokener_success ||
	    !only_space(data + json_tokener_get_parse_end(s->tok),
			len - json_tokener_get_parse_end(s->tok))) {
		rc = malformed(s, "not valid JSON");
		goto out;
	}
	if (!json_object_is_type(chunk, json_type_object)) {
		rc = malformed(s, "not a JSON object");
		goto out;
	}
	if (json_object_object_get_ex(chunk, "error", &error) && error &&
	    !json_object_is_type(error, json_type_null)) {
		rc = take_stream_error(s, error);
		goto out;
	}
	if (get_opt(chunk, "choices", json_type_array, &choices) < 0 ||
	    get_opt(chunk, "usage", json_type_object, &usage) < 0) {
		rc = malformed(s, "choices or usage of the wrong type");
		goto out;
	}
	n = choices ? json_object_array_length(choices) : 0;
	for (i = 0; i < n && !rc; i++)
		rc = take_choice(s, json_object_array_get_idx(choices, i));
	if (!rc && usage) {
		rc = take_usage(s, usage);
		/* the usage that comes with or after finish_reason is the last
		 * thing of the response (OpenAI's order); earlier ones may be
		 * running totals */
		if (!rc && s->out->finish_reason[0])
			s->usage_after_finish = 1;
	}
out:
	json_object_put(chunk);
	return rc;
}

static int on_sse_event(void *ctx, const char *type, const char *data, size_t len,
			const char *id)
{
	struct model_stream *s = ctx;

	(void)id;
	if (s->done)
		return 0;
	if (!strcmp(type, "error")) {
		char text[PROVIDER_TEXT_MAX + 1];

		clean_provider_text(data, len, s->secret, text, sizeof(text));
		return stream_fail(s, "model_unavailable", "provider reported an error mid-stream: %s",
				   text);
	}
	/* other event types (keep-alive pings and the like) carry nothing for us */
	if (strcmp(type, "message"))
		return 0;
	if (len == 6 && !memcmp(data, "[DONE]", 6)) {
		s->done = 1;
		return 0;
	}
	return take_chunk(s, data, len);
}

int model_stream_feed(struct model_stream *s, const char *data, size_t len)
{
	size_t room = s->max_bytes - s->fed_bytes, take = len < room ? len : room;
	int rc;

	if (s->err.code[0])
		return -1;
	if (s->done)
		return 0;
	/* the bytes up to the cap still count, so the outcome does not depend
	 * on how the stream was cut into pieces */
	s->fed_bytes += take;
	rc = sse_parser_feed(&s->sse, data, take, on_sse_event, s);
	/* the callback stops only after recording why, so rc is the parser's */
	if (rc && !s->err.code[0])
		stream_fail(s, "model_response_too_large", "provider event stream: %s",
			    sse_strerror(rc));
	if (take < len && !s->done)
		stream_fail(s, "model_response_too_large",
			    "provider response larger than %zu bytes", s->max_bytes);
	return s->err.code[0] ? -1 : 0;
}

int model_stream_complete(const struct model_stream *s)
{
	return s->done || s->usage_after_finish;
}

int model_stream_finish(struct model_stream *s)
{
	struct model_response *r = s->out;
	size_t i;

	if (s->err.code[0])
		return -1;
	if (!s->done && !r->finish_reason[0]) {
		stream_fail(s, "model_stream_truncated",
			    "provider stream ended before the response was complete");
		return -1;
	}
	for (i = 0; i < r->ncalls; i++) {
		if (!r->calls[i].name) {
			stream_fail(s, "model_stream_malformed",
				    "provider sent a tool call without a name");
			return -1;
		}
		if (!r->calls[i].id) {
			struct strbuf id = STRBUF_INIT;

			strbuf_addf(&id, "call_%zu", i);
			r->calls[i].id = strbuf_detach(&id, NULL);
			if (!r->calls[i].id)
				abort();
		}
	}
	return 0;
}

/* ---- one HTTP attempt ---- */

struct attempt {
	const struct model_config *cfg;
	const struct model_callbacks *cb;
	struct model_stream stream;
	CURL *curl;
	int mode_decided, is_sse;
	long status;
	char content_type[96];
	long retry_after_ms; /* -1: none given */
	struct strbuf body;  /* a non-stream body, capped */
	int body_full;
	int got_bytes;
	int64_t last_byte_ms;
};

static int ascii_prefix(const char *s, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && !strncasecmp(s, prefix, n);
}

static void header_value(const char *line, size_t len, size_t name_len, char *out, size_t outsz)
{
	const char *v = line + name_len, *end = line + len;

	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	snprintf(out, outsz, "%.*s", (int)(end - v), v);
}

static long parse_retry_after(const char *v)
{
	int64_t secs;
	time_t when;

	if (!parse_int64(v, 0, RETRY_AFTER_MAX_S, &secs))
		return (long)secs * 1000;
	when = curl_getdate(v, NULL);
	if (when <= 0)
		return -1;
	when -= time(NULL);
	if (when > RETRY_AFTER_MAX_S)
		when = RETRY_AFTER_MAX_S;
	return when > 0 ? (long)when * 1000 : 0;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *userdata)
{
	struct attempt *a = userdata;
	size_t len = size * nmemb;
	char value[128];

	a->last_byte_ms = mono_ms();
	if (ascii_prefix(line, len, "HTTP/")) {
		/* a new response (after a 100 Continue, say): forget the last */
		a->content_type[0] = '\0';
		a->retry_after_ms = -1;
	} else if (ascii_prefix(line, len, "content-type:")) {
		header_value(line, len, strlen("content-type:"), a->content_type,
			     sizeof(a->content_type));
	} else if (ascii_prefix(line, len, "retry-after:")) {
		header_value(line, len, strlen("retry-after:"), value, sizeof(value));
		a->retry_after_ms = parse_retry_after(value);
	}
	return len;
}

static void decide_mode(struct attempt *a)
{
	long status = 0;

	if (a->mode_decided)
		return;
	a->mode_decided = 1;
	curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &status);
	a->status = status;
	a->is_sse = status >= 200 && status < 300 &&
		    ascii_prefix(a->content_type, strlen(a->content_type), "text/event-stream");
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct attempt *a = userdata;
	size_t len = size * nmemb, room;

	a->last_byte_ms = mono_ms();
	a->got_bytes = 1;
	decide_mode(a);
	if (a->is_sse) {
		if (model_stream_feed(&a->stream, data, len) < 0)
			return 0;
		/* past [DONE], or the finish and its usage, nothing counts: do not
		 * wait for the provider to close */
		return model_stream_complete(&a->stream) ? 0 : len;
	}
	room = a->body.cap - a->body.len;
	if (len > room) {
		/* enough of an error body to find its message: stop reading */
		strbuf_add(&a->body, data, room);
		a->body_full = 1;
		return 0;
	}
	strbuf_add(&a->body, data, len);
	return len;
}

enum loop_end { LOOP_DONE, LOOP_CANCELLED, LOOP_IDLE, LOOP_DEADLINE, LOOP_FAILED };

/* A provider that sent finish_reason but neither the usage nor [DONE], and
 * keeps the connection open, has said all it will: a short wait, not the
 * stall timeout (judge_attempt takes the response as whole). */
static long idle_ms(const struct attempt *a)
{
	long idle = a->cfg->idle_timeout_ms;

	return a->stream.out->finish_reason[0] && idle > FINISH_GRACE_MS ? FINISH_GRACE_MS : idle;
}

/*
 * Drives the transfer with the multi interface so the client wakes at least
 * every POLL_SLICE_MS, whether or not bytes arrive, to check cancellation,
 * the idle timeout and the deadline.
 */
static enum loop_end run_transfer(struct attempt *a, int64_t deadline, CURLcode *result)
{
	const struct model_callbacks *cb = a->cb;
	enum loop_end end = LOOP_FAILED;
	CURLM *multi = curl_multi_init();
	int running = 1, queued;
	CURLMsg *msg;

	*result = CURLE_OK;
	if (!multi)
		return LOOP_FAILED;
	if (curl_multi_add_handle(multi, a->curl) != CURLM_OK)
		goto out_cleanup;
	a->last_byte_ms = mono_ms();
	for (;;) {
		int64_t now;

		if (curl_multi_perform(multi, &running) != CURLM_OK)
			goto out;
		if (!running)
			break;
		now = mono_ms();
		if (cb && cb->should_abort && cb->should_abort(cb->ctx)) {
			end = LOOP_CANCELLED;
			goto out;
		}
		if (now - a->last_byte_ms >= idle_ms(a)) {
			end = LOOP_IDLE;
			goto out;
		}
		if (now >= deadline) {
			end = LOOP_DEADLINE;
			goto out;
		}
		if (curl_multi_poll(multi, NULL, 0, POLL_SLICE_MS, NULL) != CURLM_OK)
			goto out;
	}
	end = LOOP_DONE;
	while ((msg = curl_multi_info_read(multi, &queued)))
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == a->curl)
			*result = msg->data.result;
out:
	curl_multi_remove_handle(multi, a->curl);
out_cleanup:
	curl_multi_cleanup(multi);
	return end;
}

static int retryable_code(const char *code)
{
	return !strcmp(code, "model_rate_limited") || !strcmp(code, "model_unavailable") ||
	       !strcmp(code, "model_timeout") || !strcmp(code, "model_stream_truncated");
}

/* A non-stream answer: an HTTP error, or a 2xx that is not an event stream. */
static void judge_body(struct attempt *a, struct model_error *err)
{
	char text[PROVIDER_TEXT_MAX + 1] = "";
	const char *key = a->cfg->api_key;
	const char *code, *sep;
	long st = a->status;
	json_object *body, *error;

	body = json_tokener_parse(strbuf_str(&a->body));
	if (body && json_object_object_get_ex(body, "error", &error))
		error_object_text(error, key, text, sizeof(text));
	else if (a->body.len && !body)
		clean_provider_text(a->body.buf, a->body.len < 200 ? a->body.len : 200, key,
				    text, sizeof(text));
	json_object_put(body);
	sep = text[0] ? ": " : "";

	if (st >= 200 && st < 300) {
		char ctype[sizeof(a->content_type)];

		clean_provider_text(a->content_type, strlen(a->content_type), key, ctype,
				    sizeof(ctype));
		set_error(err, "model_stream_malformed", st,
			  "provider answered \"%s\" instead of an event stream%s%s",
			  ctype[0] ? ctype : "no content type", sep, text);
		return;
	}
	if (st == 401 || st == 403)
		code = "model_auth_failed";
	else if (st == 429)
		code = "model_rate_limited";
	else if (st == 408)
		code = "model_timeout";
	else if (st >= 500 && st < 600)
		code = "model_unavailable";
	else if (st >= 400 && st < 500)
		code = "model_bad_request";
	else
		code = "model_http_error";
	set_error(err, code, st, "provider answered HTTP %ld%s%s", st, sep, text);
}

static void judge_curl_failure(struct attempt *a, CURLcode rc, struct model_error *err)
{
	const char *what = curl_easy_strerror(rc);

	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		set_error(err, "model_timeout", a->status, "provider timed out: %s", what);
		break;
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		if (a->is_sse && a->got_bytes)
			set_error(err, "model_stream_truncated", a->status,
				  "provider connection lost mid-stream: %s", what);
		else
			set_error(err, "model_unavailable", a->status,
				  "provider unreachable: %s", what);
		break;
	default:
		set_error(err, "model_http_error", a->status, "provider request failed: %s", what);
		break;
	}
}

/* 0 when the attempt gave a complete response, else -1 with err set. */
static int judge_attempt(struct attempt *a, enum loop_end end, CURLcode rc,
			 struct model_error *err)
{
	if (end == LOOP_CANCELLED) {
		set_error(err, "cancelled", a->status, "the request was cancelled");
		return -1;
	}
	if (a->stream.err.code[0]) {
		*err = a->stream.err;
		err->http_status = a->status;
		return -1;
	}
	/* a provider that finished but then stalled or broke the connection
	 * still gave a whole response; only the usage may be missing */
	if (a->is_sse && (a->stream.done || a->stream.out->finish_reason[0])) {
		if (!model_stream_finish(&a->stream))
			return 0;
		*err = a->stream.err;
		err->http_status = a->status;
		return -1;
	}
	if (end == LOOP_IDLE) {
		set_error(err, "model_timeout", a->status,
			  a->got_bytes ? "provider stream stalled: no data for %ld ms"
				       : "provider sent nothing for %ld ms",
			  a->cfg->idle_timeout_ms);
		return -1;
	}
	if (end == LOOP_DEADLINE) {
		set_error(err, "model_timeout", a->status,
			  "provider response took longer than %ld ms", a->cfg->total_timeout_ms);
		return -1;
	}
	if (end == LOOP_FAILED) {
		set_error(err, "model_http_error", a->status, "HTTP client failure");
		return -1;
	}
	decide_mode(a);
	if (a->is_sse) {
		if (!model_stream_finish(&a->stream))
			return 0;
		if (rc != CURLE_OK && !strcmp(a->stream.err.code, "model_stream_truncated"))
			judge_curl_failure(a, rc, err);
		else
			*err = a->stream.err;
		err->http_status = a->status;
		return -1;
	}
	if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && a->body_full))
		judge_curl_failure(a, rc, err);
	else
		judge_body(a, err);
	return -1;
}

struct request_ctx {
	const struct model_config *cfg;
	const struct model_callbacks *cb;
	const char *url;
	struct strbuf body;
	struct curl_slist *headers;
};

static int setup_curl(struct attempt *a, const struct request_ctx *rq)
{
	CURL *c = a->curl;
	int bad = 0;

	bad |= curl_easy_setopt(c, CURLOPT_URL, rq->url) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_POST, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body.buf) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
				(curl_off_t)rq->body.len) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, rq->headers) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_USERAGENT, "kiln-model-client/1") != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
				rq->cfg->connect_timeout_ms) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_HEADERDATA, a) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
	bad |= curl_easy_setopt(c, CURLOPT_WRITEDATA, a) != CURLE_OK;
	return bad ? -1 : 0;
}

/* One try. Returns 0 with out filled, or -1 with err and *retry_after_ms. */
static int run_attempt(const struct request_ctx *rq, int64_t deadline,
		       struct model_response *out, struct model_error *err,
		       long *retry_after_ms)
{
	struct attempt a;
	enum loop_end end;
	CURLcode rc = CURLE_OK;
	int ret = -1;

	memset(&a, 0, sizeof(a));
	a.cfg = rq->cfg;
	a.cb = rq->cb;
	a.retry_after_ms = -1;
	strbuf_init_capped(&a.body, ERROR_BODY_CAP);
	model_stream_init(&a.stream, out, rq->cb, rq->cfg->max_response_bytes);
	a.stream.secret = rq->cfg->api_key;
	*retry_after_ms = -1;

	a.curl = curl_easy_init();
	if (!a.curl || setup_curl(&a, rq) < 0) {
		set_error(err, "model_http_error", 0, "could not set up the HTTP client");
		goto out;
	}
	end = run_transfer(&a, deadline, &rc);
	if (!judge_attempt(&a, end, rc, err)) {
		ret = 0;
		goto out;
	}
	/* only a provider that asked for it gets a Retry-After wait */
	if (!strcmp(err->code, "model_rate_limited") || !strcmp(err->code, "model_unavailable"))
		*retry_after_ms = a.retry_after_ms;
out:
	if (a.curl)
		curl_easy_cleanup(a.curl);
	model_stream_release(&a.stream);
	strbuf_release(&a.body);
	return ret;
}

/* ---- the request and the retry loop ---- */

static int build_body(const struct model_config *cfg, json_object *request, struct strbuf *out)
{
	json_object *copy = json_object_new_object(), *opts, *model = NULL;
	const char *text;
	int rc = -1;

	if (!copy)
		return -1;
	/* a shallow copy: shared members are only read, the caller's object
	 * never sees the keys set here */
	json_object_object_foreach(request, key, member) {
		if (!strcmp(key, "model")) {
			model = member;
			continue;
		}
		if (!strcmp(key, "stream") || !strcmp(key, "stream_options"))
			continue;
		json_object_object_add(copy, key, json_object_get(member));
	}
	if (cfg->model && *cfg->model)
		json_object_object_add(copy, "model", json_object_new_string(cfg->model));
	else if (model)
		json_object_object_add(copy, "model", json_object_get(model));
	json_object_object_add(copy, "stream", json_object_new_boolean(1));
	opts = json_object_new_object();
	json_object_object_add(opts, "include_usage", json_object_new_boolean(1));
	json_object_object_add(copy, "stream_options", opts);
	text = json_object_to_json_string_ext(copy, JSON_C_TO_STRING_PLAIN |
						    JSON_C_TO_STRING_NOSLASHESCAPE);
	if (text && strbuf_addstr(out, text) == 0)
		rc = 0;
	json_object_put(copy);
	return rc;
}

static int add_header(struct curl_slist **list, const char *h)
{
	struct curl_slist *n = curl_slist_append(*list, h);

	if (!n)
		return -1;
	*list = n;
	return 0;
}

/* The Authorization header is wiped before its memory goes back. */
static void free_headers(struct curl_slist *list)
{
	struct curl_slist *h;

	for (h = list; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(list);
}

static int build_headers(const struct model_config *cfg, struct curl_slist **list)
{
	struct strbuf auth = STRBUF_INIT;
	int rc = -1;

	*list = NULL;
	if (add_header(list, "Content-Type: application/json") < 0 ||
	    add_header(list, "Accept: text/event-stream") < 0 ||
	    add_header(list, "Expect:") < 0)
		goto out;
	if (cfg->api_key && *cfg->api_key) {
		if (strbuf_addf(&auth, "Authorization: Bearer %s", cfg->api_key) < 0 ||
		    add_header(list, auth.buf) < 0)
			goto out;
	}
	rc = 0;
out:
	if (auth.alloc)
		explicit_bzero(auth.buf, auth.len);
	strbuf_release(&auth);
	return rc;
}

static int config_valid(const struct model_config *cfg, json_object *request,
			struct model_error *err)
{
	const char *k = cfg->api_key ? cfg->api_key : "";
	size_t i;

	if (!cfg->base_url || (strncasecmp(cfg->base_url, "http://", 7) &&
			       strncasecmp(cfg->base_url, "https://", 8))) {
		set_error(err, "model_config_invalid", 0, "model base URL must be http(s)://");
		return 0;
	}
	for (i = 0; k[i]; i++) {
		if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] == 0x7f) {
			set_error(err, "model_config_invalid", 0,
				  "model API key holds a control character or space");
			return 0;
		}
	}
	if (!json_object_is_type(request, json_type_object)) {
		set_error(err, "model_config_invalid", 0, "model request must be a JSON object");
		return 0;
	}
	if (cfg->idle_timeout_ms <= 0 || cfg->total_timeout_ms <= 0 ||
	    cfg->connect_timeout_ms <= 0 || cfg->max_retries < 0 ||
	    cfg->retry_base_ms < 0 || cfg->retry_max_total_ms < 0 || !cfg->max_response_bytes) {
		set_error(err, "model_config_invalid", 0, "model timeouts and caps must be positive");
		return 0;
	}
	return 1;
}

/* Full jitter: uniform in [0, min(base * 2^(n-1), budget)]. */
static long backoff_ms(const struct model_config *cfg, int failed_attempt, long budget)
{
	long ceiling = cfg->retry_base_ms;
	uint32_t r = 0;
	int i;

	for (i = 1; i < failed_attempt && ceiling < budget; i++)
		ceiling = ceiling > LONG_MAX / 2 ? LONG_MAX : ceiling * 2;
	if (ceiling > budget)
		ceiling = budget;
	if (ceiling <= 0)
		return 0;
	if (random_bytes(&r, sizeof(r)) < 0)
		return ceiling;
	return (long)(r % ((uint64_t)ceiling + 1));
}

/* Sleeps, waking every slice to ask should_abort; 1 if it said stop. */
static int wait_cancellable(const struct model_callbacks *cb, long ms)
{
	int64_t until = mono_ms() + ms;

	for (;;) {
		int64_t left = until - mono_ms();

		if (cb && cb->should_abort && cb->should_abort(cb->ctx))
			return 1;
		if (left <= 0)
			return 0;
		sleep_ms(left < POLL_SLICE_MS ? left : POLL_SLICE_MS);
	}
}

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void append_note(struct model_error *err, const char *note)
{
	size_t n = strlen(err->message);

	snprintf(err->message + n, sizeof(err->message) - n, " (%s)", note);
}

int model_chat_stream(const struct model_config *cfg, json_object *request,
		      const struct model_callbacks *cb, struct model_response *out,
		      struct model_error *err)
{
	static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
	struct request_ctx rq = { cfg, cb, NULL, STRBUF_INIT, NULL };
	struct strbuf url = STRBUF_INIT;
	char note[96];
	int64_t deadline;
	long waited = 0, delay, retry_after;
	size_t base_len;
	int attempt, ret = -1;

	model_response_init(out);
	memset(err, 0, sizeof(*err));
	if (!config_valid(cfg, request, err))
		return -1;
	pthread_once(&curl_once, curl_init_once);

	base_len = strlen(cfg->base_url);
	while (base_len && cfg->base_url[base_len - 1] == '/')
		base_len--;
	if (strbuf_addf(&url, "%.*s/chat/completions", (int)base_len, cfg->base_url) < 0 ||
	    build_body(cfg, request, &rq.body) < 0 || build_headers(cfg, &rq.headers) < 0) {
		set_error(err, "model_http_error", 0, "out of memory building the request");
		goto out;
	}
	rq.url = url.buf;
	deadline = mono_ms() + cfg->total_timeout_ms;

	for (attempt = 1;; attempt++) {
		out->attempts = attempt;
		if (!run_attempt(&rq, deadline, out, err, &retry_after)) {
			ret = 0;
			goto out;
		}
		response_clear(out);
		if (!retryable_code(err->code))
			break;
		if (attempt > cfg->max_retries) {
			snprintf(note, sizeof(note), "gave up after %d attempts", attempt);
			append_note(err, note);
			break;
		}
		if (retry_after >= 0) {
			delay = retry_after;
			if (delay > cfg->retry_max_total_ms - waited) {
				snprintf(note, sizeof(note), "provider asked to wait %ld s", delay / 1000);
				append_note(err, note);
				break;
			}
		} else if (waited < cfg->retry_max_total_ms) {
			delay = backoff_ms(cfg, attempt, cfg->retry_max_total_ms - waited);
		} else {
			append_note(err, "retry time budget spent");
			break;
		}
		if (mono_ms() + delay >= deadline) {
			append_note(err, "no time left to retry");
			break;
		}
		log_warn("model: attempt %d failed with %s (HTTP %ld); retrying in %ld ms",
			 attempt, err->code, err->http_status, delay);
		if (cb && cb->on_retry)
			cb->on_retry(cb->ctx, attempt + 1, err, delay);
		if (wait_cancellable(cb, delay)) {
			set_error(err, "cancelled", 0, "the request was cancelled");
			break;
		}
		waited += delay;
	}
out:
	if (ret)
		response_clear(out);
	free_headers(rq.headers);
	strbuf_release(&rq.body);
	strbuf_release(&url);
	return ret;
}
