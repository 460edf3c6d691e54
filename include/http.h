/*
 * http.h - one HTTP request as FastCGI hands it over, and its response.
 *
 * Request state lives in struct http_request / struct http_response, owned by
 * the caller for the duration of one request; nothing here is global.
 *
 *   http_request_read     CGI params and the capped body of a FastCGI request
 *   http_request_release
 *   http_header / http_query_param
 *   http_response_*       status, headers and body, sent in one piece
 *   http_send             write a response to the FastCGI stream
 *   http_status_text
 */
#ifndef KILN_HTTP_H
#define KILN_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

struct FCGX_Stream;

struct http_request {
	char **envp;            /* FastCGI params, borrowed */
	const char *method;
	const char *uri;        /* REQUEST_URI as sent, path + query */
	struct strbuf path;     /* percent-decoded path, no query */
	const char *query;      /* raw query string, "" if none */
	struct strbuf body;     /* capped at max_body_bytes */
	int body_too_large;
	int path_invalid;       /* bad percent-encoding, NUL, over-long */
	int64_t started_ms;     /* monotonic */
};

struct http_response {
	int status;
	struct strbuf headers;  /* extra header lines, each ending in \r\n */
	struct strbuf body;
	const char *content_type;
};

int http_request_read(struct http_request *req, char **envp,
		      struct FCGX_Stream *in, size_t max_body);
void http_request_release(struct http_request *req);
/* CGI param: "HTTP_AUTHORIZATION", "CONTENT_TYPE", ... NULL if absent. */
const char *http_param(const struct http_request *req, const char *name);
/* Decoded value of a query parameter into out (capped); 1 if present. */
int http_query_param(const struct http_request *req, const char *name,
		     struct strbuf *out);

void http_response_init(struct http_response *res);
void http_response_release(struct http_response *res);
void http_response_header(struct http_response *res, const char *name,
			  const char *value);
int http_send(struct FCGX_Stream *out, const struct http_response *res);
const char *http_status_text(int status);
/* Percent-decodes src[0..len) into out; -1 on bad escapes or %00. */
int http_percent_decode(const char *src, size_t len, struct strbuf *out);

#endif
