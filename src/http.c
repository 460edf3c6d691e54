/* http.c - FastCGI request reading and response writing (see http.h). */
#include "http.h"

#include <fcgiapp.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_URI 8192

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int http_percent_decode(const char *src, size_t len, struct strbuf *out)
{
	size_t i;

	for (i = 0; i < len; i++) {
		int c = (unsigned char)src[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= len)
				return -1;
			hi = hexval(src[i + 1]);
			lo = hexval(src[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			c = hi * 16 + lo;
			i += 2;
		} else if (c == '\0') {
			return -1;
		}
		if (strbuf_addch(out, (char)c) < 0)
			return -1;
	}
	return 0;
}

const char *http_param(const struct http_request *req, const char *name)
{
	return FCGX_GetParam(name, req->envp);
}

int http_request_read(struct http_request *req, char **envp, FCGX_Stream *in,
		      size_t max_body)
{
	const char *uri, *q, *cl;
	char buf[16384];
	int64_t want = 0;
	int n;

	memset(req, 0, sizeof(*req));
	req->started_ms = mono_ms();
	req->envp = envp;
	strbuf_init_capped(&req->path, MAX_URI);
	strbuf_init_capped(&req->body, max_body);
	req->method = http_param(req, "REQUEST_METHOD");
	if (!req->method)
		req->method = "GET";
	uri = http_param(req, "REQUEST_URI");
	if (!uri)
		uri = "/";
	req->uri = uri;
	q = strchr(uri, '?');
	req->query = q ? q + 1 : "";
	if (strlen(uri) > MAX_URI ||
	    http_percent_decode(uri, q ? (size_t)(q - uri) : strlen(uri), &req->path) < 0)
		req->path_invalid = 1;

	cl = http_param(req, "CONTENT_LENGTH");
	if (cl && *cl && parse_int64(cl, 0, INT64_MAX / 2, &want) < 0)
		want = 0;
	if ((uint64_t)want > max_body)
		req->body_too_large = 1;
	/* Read (or, past the cap, drain) the whole body so the web server
	 * never sees us close while it is still sending. */
	while ((n = FCGX_GetStr(buf, sizeof(buf), in)) > 0) {
		if (!req->body_too_large && strbuf_add(&req->body, buf, (size_t)n) < 0)
			req->body_too_large = 1;
	}
	return 0;
}

void http_request_release(struct http_request *req)
{
	strbuf_release(&req->path);
	strbuf_release(&req->body);
}

int http_query_param(const struct http_request *req, const char *name,
		     struct strbuf *out)
{
	const char *p = req->query;
	size_t nlen = strlen(name);

	while (p && *p) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);

		if (len > nlen && !strncmp(p, name, nlen) && p[nlen] == '=') {
			strbuf_reset(out);
			if (http_percent_decode(p + nlen + 1, len - nlen - 1, out) < 0)
				strbuf_reset(out);
			return 1;
		}
		if (len == nlen && !strncmp(p, name, nlen)) {
			strbuf_reset(out);
			return 1;
		}
		p = amp ? amp + 1 : NULL;
	}
	return 0;
}

void http_response_init(struct http_response *res)
{
	res->status = 200;
	strbuf_init(&res->headers);
	strbuf_init(&res->body);
	res->content_type = "application/json";
}

void http_response_release(struct http_response *res)
{
	strbuf_release(&res->headers);
	strbuf_release(&res->body);
}

void http_response_header(struct http_response *res, const char *name, const char *value)
{
	strbuf_addf(&res->headers, "%s: %s\r\n", name, value);
}

const char *http_status_text(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	case 507: return "Insufficient Storage";
	default: return "Status";
	}
}

int http_send(FCGX_Stream *out, const struct http_response *res)
{
	struct strbuf head = STRBUF_INIT;
	int rc = 0;

	strbuf_grow(&head, 160 + res->headers.len);
	strbuf_addstr(&head, "Status: ");
	strbuf_add_int64(&head, res->status);
	strbuf_addch(&head, ' ');
	strbuf_addstr(&head, http_status_text(res->status));
	strbuf_addstr(&head, "\r\n");
	if (res->status != 204) {
		strbuf_addstr(&head, "Content-Type: ");
		strbuf_addstr(&head, res->content_type);
		strbuf_addstr(&head, "\r\nContent-Length: ");
		strbuf_add_int64(&head, (long long)res->body.len);
		strbuf_addstr(&head, "\r\n");
	}
	strbuf_addstr(&head, "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
	strbuf_add(&head, res->headers.buf, res->headers.len);
	strbuf_addstr(&head, "\r\n");
	if (FCGX_PutStr(head.buf, (int)head.len, out) < 0)
		rc = -1;
	if (!rc && res->status != 204 && res->body.len &&
	    FCGX_PutStr(res->body.buf, (int)res->body.len, out) < 0)
		rc = -1;
	strbuf_release(&head);
	return rc;
}
