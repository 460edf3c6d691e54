/* test_ckpt_summary.c - the one-line summary of what a run did, from
 * payloads shaped like the runner's tool events. */
#include <stdio.h>
#include <string.h>

#include "ckpt_summary.h"
#include "harness.h"
#include "strbuf.h"
#include "util.h"

static void event(struct ckpt_summary *s, const char *type, const char *json)
{
	json_object *o = json_tokener_parse(json);

	CHECK(o != NULL);
	ckpt_summary_add_event(s, type, o);
	json_object_put(o);
}

/* A tool call that started and completed. */
static void call(struct ckpt_summary *s, const char *id, const char *tool, const char *args)
{
	char buf[4096];

	snprintf(buf, sizeof(buf), "{\"call_id\":\"%s\",\"tool\":\"%s\",\"arguments\":%s}", id, tool, args);
	event(s, "tool.started", buf);
	snprintf(buf, sizeof(buf), "{\"call_id\":\"%s\",\"tool\":\"%s\",\"duration_ms\":3,\"summary\":\"ok\"}",
		 id, tool);
	event(s, "tool.completed", buf);
}

static void line_is(const struct ckpt_summary *s, const char *want)
{
	struct strbuf out = STRBUF_INIT;

	ckpt_summary_line(s, &out);
	CHECK_STR(out.buf, want);
	strbuf_release(&out);
}

static void test_what_the_run_did(void)
{
	struct ckpt_summary s;

	ckpt_summary_init(&s);
	line_is(&s, "made no changes with tools");
	call(&s, "c1", "read_file", "{\"path\":\"index.html\"}");
	call(&s, "c2", "write_file", "{\"path\":\"index.html\",\"content\":\"<h1>x</h1>\"}");
	call(&s, "c3", "write_file", "{\"path\":\"style.css\",\"content\":\"a{}\"}");
	call(&s, "c4", "write_file", "{\"path\":\"index.html\",\"content\":\"again\"}");
	/* a call that failed did nothing */
	event(&s, "tool.started", "{\"call_id\":\"c5\",\"tool\":\"delete_file\",\"arguments\":{\"path\":\"keep.txt\"}}");
	event(&s, "tool.failed", "{\"call_id\":\"c5\",\"tool\":\"delete_file\",\"error\":{\"code\":\"not_found\"}}");
	call(&s, "c6", "delete_file", "{\"path\":\"old.txt\"}");
	call(&s, "c7", "rename_file", "{\"from\":\"a.js\",\"to\":\"lib/b.js\"}");
	call(&s, "c8", "run_command", "{\"argv\":[\"npm\",\"run\",\"build\"]}");
	call(&s, "c9", "list_files", "{}");
	call(&s, "c10", "search_files", "{\"pattern\":\"x\"}");
	line_is(&s, "wrote index.html, style.css; deleted old.txt; renamed a.js → lib/b.js; ran npm run build");
	ckpt_summary_release(&s);
}

static void test_resumed_runs_and_malformed_events(void)
{
	struct ckpt_summary s;

	ckpt_summary_init(&s);
	/* an attempt that died after tool.started, then the resumed one */
	event(&s, "tool.started", "{\"call_id\":\"c1\",\"tool\":\"write_file\",\"arguments\":{\"path\":\"a.txt\"}}");
	call(&s, "c1", "write_file", "{\"path\":\"a.txt\"}");
	/* completed without a start, no call id, arguments not an object,
	 * a command without argv, an unknown tool */
	event(&s, "tool.completed", "{\"call_id\":\"x9\",\"tool\":\"write_file\"}");
	event(&s, "tool.started", "{\"tool\":\"write_file\",\"arguments\":{\"path\":\"b.txt\"}}");
	call(&s, "c2", "write_file", "\"not an object\"");
	call(&s, "c3", "run_command", "{\"argv\":[]}");
	call(&s, "c4", "launch_rockets", "{\"path\":\"moon\"}");
	event(&s, "run.completed", "{\"call_id\":\"c5\"}");
	line_is(&s, "wrote a.txt");
	ckpt_summary_release(&s);
}

static void test_the_line_is_capped(void)
{
	struct ckpt_summary s;
	struct strbuf out = STRBUF_INIT, args = STRBUF_INIT;
	char id[32], path[64];

	ckpt_summary_init(&s);
	for (int i = 0; i < 200; i++) {
		snprintf(id, sizeof(id), "w%d", i);
		snprintf(path, sizeof(path), "pages/section-%03d/index.html", i);
		strbuf_reset(&args);
		strbuf_addf(&args, "{\"path\":\"%s\"}", path);
		call(&s, id, "write_file", args.buf);
	}
	/* a long name of multi-byte characters: cut on a character boundary */
	strbuf_reset(&args);
	strbuf_addstr(&args, "{\"argv\":[\"node\",\"");
	for (int i = 0; i < 100; i++)
		strbuf_addstr(&args, "é");
	strbuf_addstr(&args, "\"]}");
	call(&s, "r1", "run_command", args.buf);
	ckpt_summary_line(&s, &out);
	CHECK(out.len <= CKPT_SUMMARY_MAX);
	CHECK(utf8_valid(out.buf, out.len));
	CHECK(!strncmp(out.buf, "wrote pages/section-000/index.html, pages/section-001/index.html", 64));
	CHECK(strstr(out.buf, " more; ran node éé") != NULL);
	CHECK(strstr(out.buf, "é…") != NULL);
	printf("capped: %s\n", out.buf);
	strbuf_release(&out);
	strbuf_release(&args);
	ckpt_summary_release(&s);
}

int main(void)
{
	RUN(test_what_the_run_did);
	RUN(test_resumed_runs_and_malformed_events);
	RUN(test_the_line_is_capped);
	return harness_done("ckpt_summary");
}
