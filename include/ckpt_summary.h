/*
 * ckpt_summary.h - a checkpoint's summary: what a run did, in one readable
 * line, built from the run's tool events.
 *
 *   ckpt_summary_init / _release
 *   ckpt_summary_add_event   one tool.started / tool.completed event
 *   ckpt_summary_line        "wrote index.html, style.css; deleted old.txt;
 *                            renamed a.js → b.js; ran npm run build"
 *   ckpt_summary_of_run      the line of a run, from its durable events
 *
 * Only tool calls that completed count (a tool.completed event for the
 * call id of a tool.started one), each call once however many attempts of
 * the run logged it; file paths and commands are listed once each in the
 * order first done. Reading tools (list_files, read_file, search_files)
 * change nothing and are left out. The line is capped (CKPT_SUMMARY_MAX
 * bytes, cut at a UTF-8 boundary, "and N more" where lists are cut).
 */
#ifndef KILN_CKPT_SUMMARY_H
#define KILN_CKPT_SUMMARY_H

#include <stddef.h>
#include <stdint.h>

#include <json.h>

struct db;
struct strbuf;

#define CKPT_SUMMARY_MAX 400

struct ckpt_summary_call {
	char *call_id;
	json_object *started; /* the tool.started payload */
	int completed;
};

struct ckpt_summary {
	struct ckpt_summary_call *calls; /* in the order they started */
	size_t n;
};

void ckpt_summary_init(struct ckpt_summary *s);
void ckpt_summary_release(struct ckpt_summary *s);
/* type is the event type; other types than tool.started / tool.completed
 * and malformed payloads are ignored. payload is not consumed. */
void ckpt_summary_add_event(struct ckpt_summary *s, const char *type, json_object *payload);
/* Appends the line; "made no changes with tools" when nothing counted. */
void ckpt_summary_line(const struct ckpt_summary *s, struct strbuf *out);
/* The line of run run_id from its events; 0, or -1 on a database error
 * (out unchanged then). */
int ckpt_summary_of_run(struct db *db, int64_t run_id, struct strbuf *out);

#endif
