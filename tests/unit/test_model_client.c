/*
 * test_model_client.c - the chunk assembler on crafted streams, then the
 * whole client against tools/scripted-model started on a free port.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "fileutil.h"
#include "model_client.h"
#include "strbuf.h"
#include "util.h"

#define TEST_KEY "sk-kiln-test-7f3a9c2e1b5d"

static char tmpdir[256];
static pid_t server_pid = -1;
static char base_url[64];
static int nonce;

/* ---- what the callbacks saw ---- */

struct seen {
	struct strbuf text;
	int deltas;
	int stop_after_deltas; /* on_delta returns non-zero at this count */
	int retries;
	int last_retry_attempt;
	long last_delay;
	int retry_leaked_key;
	int delivered_before_retry;
	int64_t abort_at;      /* should_abort turns true at this mono_ms */
};

static int on_delta(void *ctx, const char *text, size_t len)
{
	struct seen *s = ctx;

	strbuf_add(&s->text, text, len);
	s->deltas++;
	return s->stop_after_deltas && s->deltas >= s->stop_after_deltas;
}

static int should_abort(void *ctx)
{
	struct seen *s = ctx;

	return s->abort_at && mono_ms() >= s->abort_at;
}

static void on_retry(void *ctx, int attempt, const struct model_error *why, long delay_ms)
{
	struct seen *s = ctx;

	s->retries++;
	s->last_retry_attempt = attempt;
	s->last_delay = delay_ms;
	if (strstr(why->message, TEST_KEY))
		s->retry_leaked_key = 1;
	if (s->deltas)
		s->delivered_before_retry = 1;
	/* the caller drops the text shown so far: the response starts over */
	strbuf_reset(&s->text);
}

static void seen_init(struct seen *s, struct model_callbacks *cb)
{
	memset(s, 0, sizeof(*s));
	strbuf_init(&s->text);
	cb->on_delta = on_delta;
	cb->should_abort = should_abort;
	cb->on_retry = on_retry;
	cb->ctx = s;
}

/* ---- script files ---- */

static json_object *script_step(const char *name, int turn, int step)
{
	char path[128];
	json_object *doc, *turns, *steps = NULL, *res = NULL;

	snprintf(path, sizeof(path), "tools/scripts/%s.json", name);
	doc = json_object_from_file(path);
	if (!doc)
		return NULL;
	if (json_object_object_get_ex(doc, "turns", &turns))
		steps = json_object_array_get_idx(turns, (size_t)turn);
	else
		json_object_object_get_ex(doc, "steps", &steps);
	if (steps)
		res = json_object_get(json_object_array_get_idx(steps, (size_t)step));
	json_object_put(doc);
	return res;
}

static const char *step_text(json_object *step)
{
	json_object *t;

	return json_object_object_get_ex(step, "text", &t) ? json_object_get_string(t) : "";
}

/* ---- requests ---- */

static json_object *message(const char *role, const char *content)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "role", json_object_new_string(role));
	json_object_object_add(m, "content", json_object_new_string(content));
	return m;
}

/* A conversation whose first user message picks script, at step `steps`. */
static json_object *make_request(const char *script, int steps)
{
	json_object *req = json_object_new_object(), *msgs = json_object_new_array();
	struct strbuf first = STRBUF_INIT;
	int i;

	/* a nonce keeps the server's per-request fault counters apart */
	strbuf_addf(&first, "[script:%s] test %d-%d", script, (int)getpid(), ++nonce);
	json_object_array_add(msgs, message("system", "You are a test."));
	json_object_array_add(msgs, message("user", first.buf));
	/* each earlier step: an assistant tool call and its answer, in the
	 * order a provider insists on */
	for (i = 0; i < steps; i++) {
		json_object *a = message("assistant", "working"), *calls = json_object_new_array();
		json_object *call = json_object_new_object(), *fn = json_object_new_object();
		json_object *t = message("tool", "{\"ok\":true}");
		char id[32];

		snprintf(id, sizeof(id), "call_%d", i);
		json_object_object_add(fn, "name", json_object_new_string("list_files"));
		json_object_object_add(fn, "arguments", json_object_new_string("{}"));
		json_object_object_add(call, "id", json_object_new_string(id));
		json_object_object_add(call, "type", json_object_new_string("function"));
		json_object_object_add(call, "function", fn);
		json_object_array_add(calls, call);
		json_object_object_add(a, "tool_calls", calls);
		json_object_array_add(msgs, a);
		json_object_object_add(t, "tool_call_id", json_object_new_string(id));
		json_object_array_add(msgs, t);
	}
	json_object_object_add(req, "messages", msgs);
	json_object_object_add(req, "temperature", json_object_new_double(0.2));
	strbuf_release(&first);
	return req;
}

static void test_config(struct model_config *cfg)
{
	model_config_defaults(cfg);
	cfg->base_url = base_url;
	cfg->api_key = TEST_KEY;
	cfg->model = "scripted-test";
	cfg->connect_timeout_ms = 2000;
	cfg->idle_timeout_ms = 5000;
	cfg->total_timeout_ms = 30000;
	cfg->retry_base_ms = 10;
	cfg->retry_max_total_ms = 5000;
}

static void check_no_key(const struct model_error *err)
{
	CHECK(!strstr(err->message, TEST_KEY));
	CHECK(!strstr(err->message, "Bearer"));
}

/* ---- the scripted server ---- */

static int start_server(void)
{
	char port_file[300], log_file[300];
	struct strbuf port = STRBUF_INIT;
	int64_t until;
	const char *tmp = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s/kiln-model-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(port_file, sizeof(port_file), "%s/port", tmpdir);
	snprintf(log_file, sizeof(log_file), "%s/requests.log", tmpdir);

	server_pid = fork();
	if (server_pid < 0)
		return -1;
	if (server_pid == 0) {
		char *argv[] = { "python3", "tools/scripted-model", "--port", "0",
				 "--port-file", port_file, "--log", log_file,
				 "--scripts", "tools/scripts", "--require-key", TEST_KEY, NULL };

		/* never outlive the test, even if it crashes */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execvp(argv[0], argv);
		_exit(127);
	}
	until = mono_ms() + 15000;
	while (mono_ms() < until) {
		int status;
		unsigned p;

		if (waitpid(server_pid, &status, WNOHANG) == server_pid) {
			server_pid = -1;
			break;
		}
		strbuf_reset(&port);
		if (file_read_capped(port_file, 16, &port) == 0 && port.len) {
			strbuf_setlen(&port, strcspn(port.buf, "\n"));
			if (parse_uint(port.buf, 65535, &p) == 0) {
				snprintf(base_url, sizeof(base_url), "http://127.0.0.1:%u/v1/", p);
				strbuf_release(&port);
				return 0;
			}
		}
		sleep_ms(20);
	}
	strbuf_release(&port);
	return -1;
}

static void stop_server(void)
{
	if (server_pid > 0) {
		kill(server_pid, SIGTERM);
		waitpid(server_pid, NULL, 0);
		server_pid = -1;
	}
	if (tmpdir[0])
		rm_rf(tmpdir);
}

/* ---- the assembler, offline ---- */

struct fed {
	struct model_response r;
	struct model_stream s;
	struct seen seen;
	struct model_callbacks cb;
	int feed_rc, finish_rc;
};

/* Feeds input in pieces of step bytes (0: all at once). */
static void feed(struct fed *f, const char *input, size_t step, size_t cap)
{
	size_t len = strlen(input), i, n;

	seen_init(&f->seen, &f->cb);
	model_response_init(&f->r);
	model_stream_init(&f->s, &f->r, &f->cb, cap);
	f->s.secret = TEST_KEY;
	f->feed_rc = 0;
	for (i = 0; i < len && !f->feed_rc; i += n) {
		n = step && step < len - i ? step : len - i;
		f->feed_rc = model_stream_feed(&f->s, input + i, n);
	}
	f->finish_rc = f->feed_rc ? -1 : model_stream_finish(&f->s);
}

static void fed_release(struct fed *f)
{
	model_stream_release(&f->s);
	model_response_release(&f->r);
	strbuf_release(&f->seen.text);
}

static const char tool_stream[] =
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n"
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Caf\\u00e9 \"}}]}\n\n"
	": keep-alive\n\n"
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"time.\"}}]}\r\n\r\n"
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"write_file\",\"arguments\":\"\"}}]}}]}\n\n"
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"list_files\",\"arguments\":\"{}\"}}]}}]}\n\n"
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"path\\\": \\\"a.\"}}]}}]}\n\n"
	"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"txt\\\"}\"}}]}}]}\n\n"
	"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n"
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n"
	"data: [DONE]\n\n"
	"data: this is after the end and ignored\n\n";

static void test_assemble_chunkings(void)
{
	size_t steps[] = { 0, 1, 2, 3, 7, 64 };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(steps); i++) {
		struct fed f;

		feed(&f, tool_stream, steps[i], 1 << 20);
		CHECK(f.feed_rc == 0);
		CHECK(f.finish_rc == 0);
		CHECK_STR(f.r.content.buf, "Caf\xc3\xa9 time.");
		CHECK_STR(f.seen.text.buf, "Caf\xc3\xa9 time.");
		CHECK(f.seen.deltas == 2);
		CHECK(f.r.ncalls == 2);
		if (f.r.ncalls == 2) {
			CHECK_STR(f.r.calls[0].id, "call_a");
			CHECK_STR(f.r.calls[0].name, "write_file");
			CHECK_STR(f.r.calls[0].arguments.buf, "{\"path\": \"a.txt\"}");
			CHECK_STR(f.r.calls[1].id, "call_b");
			CHECK_STR(f.r.calls[1].name, "list_files");
			CHECK_STR(f.r.calls[1].arguments.buf, "{}");
		}
		CHECK_STR(f.r.finish_reason, "tool_calls");
		CHECK(f.r.has_usage && f.r.prompt_tokens == 10 && f.r.completion_tokens == 5 &&
		      f.r.total_tokens == 15);
		fed_release(&f);
	}
}

static void test_assemble_without_index(void)
{
	struct fed f;

	/* some providers send whole calls, each with an id and no index */
	feed(&f,
	     "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"x1\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"path\\\":\"}}]}}]}\n\n"
	     "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"\\\"a\\\"}\"}}]}}]}\n\n"
	     "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"x2\",\"function\":{\"name\":\"snapshot\"}}]}}]}\n\n"
	     "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
	     5, 4096);
	CHECK(f.finish_rc == 0);
	CHECK(f.r.ncalls == 2);
	if (f.r.ncalls == 2) {
		CHECK_STR(f.r.calls[0].arguments.buf, "{\"path\":\"a\"}");
		CHECK_STR(f.r.calls[1].name, "snapshot");
		CHECK_STR(f.r.calls[1].arguments.buf, "");
	}
	CHECK(!f.r.has_usage);
	fed_release(&f);

	/* no id at all: the client names it so the caller can answer it */
	feed(&f,
	     "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"list_files\",\"arguments\":\"{}\"}}]}}]}\n\n"
	     "data: [DONE]\n\n",
	     0, 4096);
	CHECK(f.finish_rc == 0);
	CHECK(f.r.ncalls == 1 && !strcmp(f.r.calls[0].id, "call_0"));
	fed_release(&f);
}

static void check_fails(const char *input, const char *code)
{
	struct fed f;

	feed(&f, input, 0, 4096);
	CHECK(f.finish_rc == -1);
	if (strcmp(f.s.err.code, code))
		fprintf(stderr, "input %s\n gave %s: %s\n", input, f.s.err.code, f.s.err.message);
	CHECK_STR(f.s.err.code, code);
	CHECK(!strstr(f.s.err.message, TEST_KEY));
	fed_release(&f);
}

static void test_assemble_malformed(void)
{
	check_fails("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]\n\n", "model_stream_malformed");
	check_fails("data: {\"choices\":[]} trailing\n\n", "model_stream_malformed");
	check_fails("data: [1,2]\n\n", "model_stream_malformed");
	check_fails("data: {\"choices\":{}}\n\n", "model_stream_malformed");
	check_fails("data: {\"choices\":[7]}\n\n", "model_stream_malformed");
	check_fails("data: {\"choices\":[{\"delta\":{\"content\":5}}]}\n\n", "model_stream_malformed");
	check_fails("data: {\"choices\":[{\"delta\":[]}]}\n\n", "model_stream_malformed");
	check_fails("data: {\"choices\":[{\"delta\":{\"tool_calls\":{}}}]}\n\n", "model_stream_malformed");
	check_fails("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":\"0\"}]}}]}\n\n",
		    "model_stream_malformed");
	check_fails("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":-1}]}}]}\n\n",
		    "model_stream_malformed");
	check_fails("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":{}}}]}}]}\n\n",
		    "model_stream_malformed");
	check_fails("data: {\"choices\":[{\"finish_reason\":3}]}\n\n", "model_stream_malformed");
	check_fails("data: {\"usage\":\"lots\"}\n\n", "model_stream_malformed");
	check_fails("data: {\"usage\":{\"total_tokens\":1.5}}\n\n", "model_stream_malformed");
	/* invalid UTF-8 inside a string */
	check_fails("data: {\"choices\":[{\"delta\":{\"content\":\"\xff\xfe\"}}]}\n\n",
		    "model_stream_malformed");
	/* a tool call never named */
	check_fails("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
		    "model_stream_malformed");
	/* renamed mid-stream */
	check_fails("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"a\"}}]}}]}\n\n"
		    "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"b\"}}]}}]}\n\n",
		    "model_stream_malformed");
}

static void test_assemble_truncated(void)
{
	struct fed f;

	check_fails("", "model_stream_truncated");
	check_fails("data: {\"choices\":[{\"delta\":{\"content\":\"half\"}}]}\n\n",
		    "model_stream_truncated");
	/* an event never finished by its blank line is dropped, as the standard says */
	check_fails("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n",
		    "model_stream_truncated");

	/* a finish_reason without [DONE] is complete */
	feed(&f, "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\n", 0,
	     4096);
	CHECK(f.finish_rc == 0);
	CHECK_STR(f.r.finish_reason, "stop");
	fed_release(&f);
}

static void test_assemble_provider_error(void)
{
	struct fed f;

	check_fails("data: {\"error\":{\"message\":\"overloaded, key " TEST_KEY " rejected\",\"type\":\"server_error\"}}\n\n",
		    "model_unavailable");
	check_fails("data: {\"error\":{\"message\":\"too long\",\"type\":\"invalid_request_error\"}}\n\n",
		    "model_bad_request");
	check_fails("data: {\"error\":{\"message\":\"slow down\",\"code\":429}}\n\n", "model_rate_limited");
	check_fails("event: error\ndata: boom " TEST_KEY "\n\n", "model_unavailable");

	feed(&f, "data: {\"error\":{\"message\":\"bad key " TEST_KEY "\",\"code\":401}}\n\n", 0, 4096);
	CHECK_STR(f.s.err.code, "model_auth_failed");
	CHECK(strstr(f.s.err.message, "bad key [redacted]") != NULL);
	fed_release(&f);
}

static void test_assemble_ignores(void)
{
	struct fed f;

	feed(&f,
	     "event: ping\ndata: {not json}\n\n"
	     "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"other choice\"}}]}\n\n"
	     "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":null,\"refusal\":null}}]}\n\n"
	     "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"mine\"},\"finish_reason\":null}]}\n\n"
	     "data: {\"error\":null,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
	     "data: [DONE]\n\n",
	     3, 4096);
	CHECK(f.finish_rc == 0);
	CHECK_STR(f.r.content.buf, "mine");
	fed_release(&f);
}

static void test_assemble_caps(void)
{
	struct strbuf big = STRBUF_INIT;
	struct fed f;
	int i;

	/* raw bytes past the cap */
	for (i = 0; i < 20; i++)
		strbuf_addstr(&big, "data: {\"choices\":[{\"delta\":{\"content\":\"0123456789\"}}]}\n\n");
	feed(&f, big.buf, 100, 512);
	CHECK(f.feed_rc == -1);
	CHECK_STR(f.s.err.code, "model_response_too_large");
	CHECK(f.r.content.len <= 512);
	fed_release(&f);

	/* more tool calls than allowed */
	strbuf_reset(&big);
	for (i = 0; i <= MODEL_MAX_TOOL_CALLS; i++)
		strbuf_addf(&big, "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":%d,\"id\":\"c%d\",\"function\":{\"name\":\"n\"}}]}}]}\n\n",
			    i, i);
	feed(&f, big.buf, 0, 1 << 20);
	CHECK_STR(f.s.err.code, "model_response_too_large");
	CHECK(f.r.ncalls == MODEL_MAX_TOOL_CALLS);
	fed_release(&f);

	/* a name too long */
	strbuf_reset(&big);
	strbuf_addstr(&big, "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"");
	for (i = 0; i < MODEL_MAX_TOOL_NAME + 1; i++)
		strbuf_addch(&big, 'n');
	strbuf_addstr(&big, "\"}}]}}]}\n\n");
	feed(&f, big.buf, 0, 1 << 20);
	CHECK_STR(f.s.err.code, "model_stream_malformed");
	fed_release(&f);
	strbuf_release(&big);
}

static void test_assemble_delta_stop(void)
{
	struct fed f;

	seen_init(&f.seen, &f.cb);
	f.seen.stop_after_deltas = 1;
	model_response_init(&f.r);
	model_stream_init(&f.s, &f.r, &f.cb, 4096);
	CHECK(model_stream_feed(&f.s, tool_stream, strlen(tool_stream)) == -1);
	CHECK_STR(f.s.err.code, "cancelled");
	CHECK(f.seen.deltas == 1);
	/* dead from now on */
	CHECK(model_stream_feed(&f.s, "data: [DONE]\n\n", 14) == -1);
	CHECK(model_stream_finish(&f.s) == -1);
	fed_release(&f);
}

/* ---- against the scripted server ---- */

static int server_up;

static int stream(struct model_config *cfg, json_object *req, struct seen *s,
		  struct model_response *r, struct model_error *err)
{
	struct model_callbacks cb;
	int rc;

	seen_init(s, &cb);
	rc = model_chat_stream(cfg, req, &cb, r, err);
	check_no_key(err);
	CHECK(!s->retry_leaked_key);
	return rc;
}

static void test_text_stream(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req, *step = script_step("no-change", 0, 0);
	const char *before;
	char *before_copy;

	if (!server_up)
		return;
	CHECK(step != NULL);
	test_config(&cfg);
	req = make_request("no-change", 0);
	/* the client overrides these without touching the caller's object */
	json_object_object_add(req, "stream", json_object_new_boolean(0));
	json_object_object_add(req, "model", json_object_new_string("caller-model"));
	before = json_object_to_json_string(req);
	before_copy = xstrdup(before);

	CHECK(stream(&cfg, req, &s, &r, &err) == 0);
	CHECK_STR(r.content.buf, step_text(step));
	CHECK_STR(s.text.buf, step_text(step));
	CHECK(s.deltas == (int)((strlen(step_text(step)) + 6) / 7));
	CHECK(r.ncalls == 0);
	CHECK_STR(r.finish_reason, "stop");
	CHECK(r.has_usage && r.prompt_tokens == 42 && r.completion_tokens == 31 &&
	      r.total_tokens == 73);
	CHECK(r.attempts == 1);
	CHECK(s.retries == 0);
	CHECK_STR(json_object_to_json_string(req), before_copy);

	free(before_copy);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
	json_object_put(step);
}

static void check_call(const struct model_tool_call *c, json_object *want)
{
	json_object *name, *args, *got;

	CHECK(json_object_object_get_ex(want, "name", &name));
	CHECK(json_object_object_get_ex(want, "arguments", &args));
	CHECK_STR(c->name, json_object_get_string(name));
	CHECK(c->id && !strncmp(c->id, "call_", 5) && strlen(c->id) > 5);
	got = json_tokener_parse(c->arguments.buf);
	CHECK(got != NULL);
	CHECK(json_object_equal(got, args));
	json_object_put(got);
}

static void test_tool_call_stream(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req, *step = script_step("echo-tools", 0, 1), *calls;

	if (!server_up)
		return;
	test_config(&cfg);
	req = make_request("echo-tools", 1);
	CHECK(stream(&cfg, req, &s, &r, &err) == 0);
	CHECK(json_object_object_get_ex(step, "tool_calls", &calls));
	CHECK(r.ncalls == 1);
	if (r.ncalls == 1)
		check_call(&r.calls[0], json_object_array_get_idx(calls, 0));
	CHECK_STR(r.content.buf, step_text(step));
	CHECK_STR(r.finish_reason, "tool_calls");
	CHECK(r.has_usage && r.total_tokens == r.prompt_tokens + r.completion_tokens);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
	json_object_put(step);
}

static void test_parallel_tool_calls(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req, *step = script_step("default", 0, 0), *calls;
	size_t i;

	if (!server_up)
		return;
	test_config(&cfg);
	req = make_request("default", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == 0);
	CHECK(json_object_object_get_ex(step, "tool_calls", &calls));
	CHECK(r.ncalls == 3 && json_object_array_length(calls) == 3);
	for (i = 0; i < r.ncalls && i < 3; i++)
		check_call(&r.calls[i], json_object_array_get_idx(calls, i));
	CHECK(r.ncalls < 2 || strcmp(r.calls[0].id, r.calls[1].id));
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
	json_object_put(step);
}

static void test_429_retried(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req, *step = script_step("fault-429", 0, 0);
	int64_t t0;

	if (!server_up)
		return;
	test_config(&cfg);
	req = make_request("fault-429", 0);
	t0 = mono_ms();
	CHECK(stream(&cfg, req, &s, &r, &err) == 0);
	CHECK(mono_ms() - t0 >= 950);
	CHECK(r.attempts == 2);
	CHECK(s.retries == 1 && s.last_retry_attempt == 2);
	CHECK(s.last_delay == 1000); /* Retry-After: 1, honoured exactly */
	CHECK_STR(r.content.buf, step_text(step));
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);

	/* a Retry-After longer than the retry budget is not waited for */
	test_config(&cfg);
	cfg.retry_max_total_ms = 500;
	req = make_request("fault-429", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	CHECK_STR(err.code, "model_rate_limited");
	CHECK(err.http_status == 429);
	CHECK(r.attempts == 1 && s.retries == 0);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
	json_object_put(step);
}

static void test_500_retried(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req;

	if (!server_up)
		return;
	test_config(&cfg);
	req = make_request("fault-500", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == 0);
	CHECK(r.attempts == 3);
	CHECK(s.retries == 2);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
}

static void test_retries_bounded(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req;

	if (!server_up)
		return;
	test_config(&cfg);
	cfg.max_retries = 2;
	req = make_request("fault-500-always", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	CHECK_STR(err.code, "model_unavailable");
	CHECK(err.http_status == 500);
	CHECK(strstr(err.message, "The server had an error (scripted).") != NULL);
	CHECK(strstr(err.message, "gave up after 3 attempts") != NULL);
	CHECK(r.attempts == 3);
	CHECK(s.retries == 2);
	CHECK(r.content.len == 0 && r.ncalls == 0);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
}

static void test_400_not_retried(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req;

	if (!server_up)
		return;
	test_config(&cfg);
	req = make_request("fault-400", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	CHECK_STR(err.code, "model_bad_request");
	CHECK(err.http_status == 400);
	CHECK(strstr(err.message, "Invalid request (scripted).") != NULL);
	CHECK(r.attempts == 1 && s.retries == 0);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);

	/* an unknown script is the server's 400 too */
	test_config(&cfg);
	req = make_request("no-such-script", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	CHECK_STR(err.code, "model_bad_request");
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
}

static void test_401_not_retried(void)
{
	static const char wrong[] = "sk-wrong-key-0123456789";
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req;

	if (!server_up)
		return;
	test_config(&cfg);
	cfg.api_key = wrong;
	req = make_request("no-change", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	CHECK_STR(err.code, "model_auth_failed");
	CHECK(err.http_status == 401);
	CHECK(r.attempts == 1 && s.retries == 0);
	/* the server echoes the rejected key; the error must not */
	CHECK(!strstr(err.message, wrong));
	CHECK(!strstr(err.message, "0123456789"));
	CHECK(strstr(err.message, "[redacted]") != NULL);
	model_response_release(&r);
	strbuf_release(&s.text);

	cfg.api_key = "";
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	CHECK_STR(err.code, "model_auth_failed");
	CHECK(r.attempts == 1);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
}

/* A provider that finishes but never says [DONE] nor closes: with the
 * usage in, the response is whole at once; without it, after a short wait,
 * never the stall timeout. */
static void test_finish_without_done(void)
{
	static const struct {
		const char *script;
		int with_usage;
		int64_t min_ms, max_ms;
	} cases[] = { { "linger", 1, 0, 1000 }, { "linger-no-usage", 0, 1900, 3500 } };
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	size_t i;

	if (!server_up)
		return;
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		json_object *req = make_request(cases[i].script, 0), *step = script_step(cases[i].script, 0, 0);
		int64_t t0 = mono_ms(), took;

		test_config(&cfg);
		cfg.idle_timeout_ms = 15000;
		CHECK(stream(&cfg, req, &s, &r, &err) == 0);
		took = mono_ms() - t0;
		CHECK(took >= cases[i].min_ms && took < cases[i].max_ms);
		CHECK_STR(r.content.buf, step_text(step));
		CHECK_STR(r.finish_reason, "stop");
		CHECK(r.has_usage == cases[i].with_usage);
		CHECK(r.attempts == 1 && s.retries == 0);
		model_response_release(&r);
		strbuf_release(&s.text);
		json_object_put(req);
		json_object_put(step);
	}
}

/* finish_reason comes through as sent, for the agent to judge. */
static void test_finish_reasons_reported(void)
{
	static const char *const scripts[][2] = { { "truncated-tool-call", "length" },
						   { "content-filter", "content_filter" } };
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	size_t i;

	if (!server_up)
		return;
	for (i = 0; i < ARRAY_SIZE(scripts); i++) {
		json_object *req = make_request(scripts[i][0], 0);

		test_config(&cfg);
		CHECK(stream(&cfg, req, &s, &r, &err) == 0);
		CHECK_STR(r.finish_reason, scripts[i][1]);
		CHECK(r.ncalls == 1);
		model_response_release(&r);
		strbuf_release(&s.text);
		json_object_put(req);
	}
}

static void test_stall_times_out(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req;
	int64_t t0, took;

	if (!server_up)
		return;
	test_config(&cfg);
	cfg.idle_timeout_ms = 1000;
	cfg.max_retries = 0;
	req = make_request("fault-stall", 0);
	t0 = mono_ms();
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	took = mono_ms() - t0;
	CHECK_STR(err.code, "model_timeout");
	CHECK(took >= 1000 && took < 1000 + 700);
	CHECK(s.deltas == 2);
	CHECK(r.attempts == 1);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
}

static void test_cutoff_truncated(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req, *step = script_step("fault-cutoff", 0, 0);

	if (!server_up)
		return;
	test_config(&cfg);
	cfg.max_retries = 0;
	req = make_request("fault-cutoff", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	CHECK_STR(err.code, "model_stream_truncated");
	CHECK(r.attempts == 1);
	CHECK(s.deltas == 2);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);

	/* retried after text was shown: on_retry first, then a clean restart */
	test_config(&cfg);
	req = make_request("fault-cutoff", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == 0);
	CHECK(r.attempts == 2);
	CHECK(s.retries == 1 && s.delivered_before_retry);
	CHECK_STR(r.content.buf, step_text(step));
	CHECK_STR(s.text.buf, step_text(step));
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
	json_object_put(step);
}

static void test_malformed(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req;

	if (!server_up)
		return;
	test_config(&cfg);
	req = make_request("fault-malformed", 0);
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	CHECK_STR(err.code, "model_stream_malformed");
	CHECK(err.http_status == 200);
	CHECK(r.attempts == 1 && s.retries == 0);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
}

static void test_should_abort(void)
{
	struct model_config cfg;
	struct model_callbacks cb;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req;
	int64_t took;

	if (!server_up)
		return;
	test_config(&cfg);
	req = make_request("slow", 0);
	seen_init(&s, &cb);
	s.abort_at = mono_ms() + 400;
	CHECK(model_chat_stream(&cfg, req, &cb, &r, &err) == -1);
	took = mono_ms() - s.abort_at;
	CHECK_STR(err.code, "cancelled");
	CHECK(took >= 0 && took < 200);
	CHECK(s.deltas > 0);
	CHECK(r.attempts == 1 && r.content.len == 0);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
}

static void test_on_delta_stops(void)
{
	struct model_config cfg;
	struct model_callbacks cb;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req;

	if (!server_up)
		return;
	test_config(&cfg);
	req = make_request("no-change", 0);
	seen_init(&s, &cb);
	s.stop_after_deltas = 2;
	CHECK(model_chat_stream(&cfg, req, &cb, &r, &err) == -1);
	CHECK_STR(err.code, "cancelled");
	CHECK(s.deltas == 2 && r.attempts == 1);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
}

/* A port nothing listens on: bound, then closed. */
static unsigned closed_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned port = 0;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &len))
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void test_unreachable(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	struct seen s;
	json_object *req = make_request("no-change", 0);
	char url[64];

	test_config(&cfg);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1", closed_port());
	cfg.base_url = url;
	cfg.max_retries = 1;
	CHECK(stream(&cfg, req, &s, &r, &err) == -1);
	CHECK_STR(err.code, "model_unavailable");
	CHECK(r.attempts == 2 && s.retries == 1);
	model_response_release(&r);
	strbuf_release(&s.text);
	json_object_put(req);
}

static void test_bad_config(void)
{
	struct model_config cfg;
	struct model_response r;
	struct model_error err;
	json_object *req = make_request("no-change", 0), *arr = json_object_new_array();

	test_config(&cfg);
	cfg.base_url = "file:///etc/passwd";
	CHECK(model_chat_stream(&cfg, req, NULL, &r, &err) == -1);
	CHECK_STR(err.code, "model_config_invalid");
	model_response_release(&r);

	test_config(&cfg);
	cfg.api_key = "abc\r\nX-Injected: 1";
	CHECK(model_chat_stream(&cfg, req, NULL, &r, &err) == -1);
	CHECK_STR(err.code, "model_config_invalid");
	CHECK(!strstr(err.message, "abc"));
	model_response_release(&r);

	test_config(&cfg);
	CHECK(model_chat_stream(&cfg, arr, NULL, &r, &err) == -1);
	CHECK_STR(err.code, "model_config_invalid");
	model_response_release(&r);
	json_object_put(arr);
	json_object_put(req);
}

static void test_server_log_has_no_key(void)
{
	struct strbuf log = STRBUF_INIT;
	char path[300];

	if (!server_up)
		return;
	snprintf(path, sizeof(path), "%s/requests.log", tmpdir);
	CHECK(file_read_capped(path, 1 << 20, &log) == 0);
	CHECK(log.len > 0);
	CHECK(!strstr(strbuf_str(&log), TEST_KEY));
	CHECK(strstr(strbuf_str(&log), "\"auth\": true") != NULL);
	strbuf_release(&log);
}

int main(void)
{
	RUN(test_assemble_chunkings);
	RUN(test_assemble_without_index);
	RUN(test_assemble_malformed);
	RUN(test_assemble_truncated);
	RUN(test_assemble_provider_error);
	RUN(test_assemble_ignores);
	RUN(test_assemble_caps);
	RUN(test_assemble_delta_stop);
	RUN(test_bad_config);
	RUN(test_unreachable);

	server_up = start_server() == 0;
	CHECK(server_up);
	RUN(test_text_stream);
	RUN(test_tool_call_stream);
	RUN(test_parallel_tool_calls);
	RUN(test_429_retried);
	RUN(test_500_retried);
	RUN(test_retries_bounded);
	RUN(test_400_not_retried);
	RUN(test_401_not_retried);
	RUN(test_stall_times_out);
	RUN(test_finish_without_done);
	RUN(test_finish_reasons_reported);
	RUN(test_cutoff_truncated);
	RUN(test_malformed);
	RUN(test_should_abort);
	RUN(test_on_delta_stops);
	RUN(test_server_log_has_no_key);
	stop_server();
	return harness_done("model_client");
}
