/*
 * model_client.h - streaming client for OpenAI-compatible chat completions.
 *
 *   model_chat_stream       one streamed completion over libcurl, with
 *                           retries, idle/total timeouts and cancellation
 *   model_response_release  free what a response holds
 *   model_stream_*          the chunk assembler on its own: provider SSE
 *                           bytes in, text deltas and a model_response out
 *                           (what model_chat_stream feeds; also fuzzed)
 *
 * The provider is hostile input: every chunk is type-checked, every size is
 * capped, and nothing the provider sends is trusted to end a stream cleanly.
 * The API key goes into the Authorization header and nowhere else: not in
 * errors, not in logs (provider messages that echo it are redacted).
 */
#ifndef KILN_MODEL_CLIENT_H
#define KILN_MODEL_CLIENT_H

#include <stddef.h>

#include <json.h>

#include "sse.h"
#include "strbuf.h"

struct model_config {
	const char *base_url;  /* e.g. http://127.0.0.1:9400/v1; the client
				  POSTs base_url + "/chat/completions" */
	const char *api_key;   /* may be NULL or empty: no Authorization */
	const char *model;     /* replaces any "model" in the request */
	long connect_timeout_ms;  /* 5000 */
	long idle_timeout_ms;     /* 60000: no byte for this long = stall (after
				     finish_reason, at most 2000: the rest is only
				     the usage) */
	long total_timeout_ms;    /* 600000: the whole call, retries included */
	int max_retries;          /* 4: attempts <= max_retries + 1 */
	long retry_base_ms;       /* 500 */
	long retry_max_total_ms;  /* 60000: the sum of all waits between tries */
	size_t max_response_bytes; /* 8 MiB of raw stream per attempt */
};

/* The defaults above; base_url, api_key and model are left NULL. */
void model_config_defaults(struct model_config *cfg);

#define MODEL_MAX_TOOL_CALLS 64
#define MODEL_MAX_TOOL_CALL_ID 128 /* the width of agent_messages.tool_call_id */
#define MODEL_MAX_TOOL_NAME 128

struct model_tool_call {
	char *id;   /* the provider's, or "call_<n>" when it sent none */
	char *name;
	struct strbuf arguments; /* raw, assembled from fragments by index;
				    may not be valid JSON: the caller judges */
	long index; /* the provider's "index" for this call */
};

struct model_response {
	struct strbuf content;
	struct model_tool_call *calls;
	size_t ncalls;
	char finish_reason[32]; /* "" when the provider sent none */
	int has_usage;
	long prompt_tokens, completion_tokens, total_tokens;
	int attempts;
};

struct model_error {
	/* model_http_error, model_rate_limited, model_unavailable,
	 * model_auth_failed, model_bad_request, model_stream_malformed,
	 * model_stream_truncated, model_response_too_large, model_timeout,
	 * model_config_invalid, cancelled */
	char code[48];
	char message[512];
	long http_status; /* 0 when no HTTP status was received */
};

struct model_callbacks {
	/* each text delta as it arrives; non-zero aborts ("cancelled") */
	int (*on_delta)(void *ctx, const char *text, size_t len);
	/* polled at least every 50 ms, also while waiting to retry; non-zero
	 * aborts the request with code "cancelled" */
	int (*should_abort)(void *ctx);
	/* called before every retry: attempt is the number of the attempt
	 * about to start (2 for the first retry), why the failure that caused
	 * it. Text already passed to on_delta is void: the retry starts the
	 * response over, so the caller should tell the user it restarts. */
	void (*on_retry)(void *ctx, int attempt, const struct model_error *why,
			 long delay_ms);
	void *ctx;
};

/*
 * Streams one chat completion. request is a JSON object with messages,
 * tools, temperature, max_tokens, ...; the client sends a copy with "model",
 * "stream": true and "stream_options": {"include_usage": true} set, and never
 * changes the caller's object. cb may be NULL. out need not be initialised.
 * Returns 0 with out filled, or -1 with err filled and out empty; either way
 * out->attempts is set and out must be released with model_response_release.
 */
int model_chat_stream(const struct model_config *cfg, json_object *request,
		      const struct model_callbacks *cb, struct model_response *out,
		      struct model_error *err);

void model_response_init(struct model_response *r);
void model_response_release(struct model_response *r);

/* The assembler. model_stream_init resets out (it must have been
 * initialised or released before); both must outlive the stream. */
struct model_stream {
	struct sse_parser sse;
	struct json_tokener *tok;
	struct model_response *out;
	const struct model_callbacks *cb;
	struct model_error err; /* the first failure; code is "" until then */
	const char *secret;     /* text errors must never repeat (the API key);
				   set after init, may be NULL */
	size_t max_bytes, fed_bytes;
	size_t calls_alloc;
	int done;      /* "[DONE]" seen: later bytes are ignored */
	int usage_after_finish; /* the usage came with or after finish_reason */
	int delivered; /* some text reached on_delta */
};

void model_stream_init(struct model_stream *s, struct model_response *out,
		       const struct model_callbacks *cb, size_t max_bytes);
/* 0, or -1 with s->err set: the stream is then dead and later feeds fail. */
int model_stream_feed(struct model_stream *s, const char *data, size_t len);
/* True once nothing more is expected: "[DONE]", or a usage chunk with or
 * after finish_reason (providers that send no [DONE] and keep the
 * connection open are not waited for). */
int model_stream_complete(const struct model_stream *s);
/* At the end of the bytes: 0 when the response is complete ("[DONE]" or a
 * finish_reason seen, every tool call named), else -1 with s->err set. */
int model_stream_finish(struct model_stream *s);
void model_stream_release(struct model_stream *s);

#endif
