/* ckpt_summary.c - what a run did, in one line (see ckpt_summary.h). */
#include "ckpt_summary.h"

#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "strbuf.h"
#include "util.h"
#include "workspace.h"

#define ITEM_MAX 60     /* bytes of one path or command in the line */
#define ITEMS_START 10  /* items named per group before trying fewer */

void ckpt_summary_init(struct ckpt_summary *s)
{
	memset(s, 0, sizeof(*s));
}

void ckpt_summary_release(struct ckpt_summary *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->calls[i].call_id);
		json_object_put(s->calls[i].started);
	}
	free(s->calls);
	ckpt_summary_init(s);
}

static struct ckpt_summary_call *find_call(const struct ckpt_summary *s, const char *id)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->calls[i].call_id, id))
			return &s->calls[i];
	return NULL;
}

static const char *get_str(json_object *o, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
		       ? json_object_get_string(v) : NULL;
}

void ckpt_summary_add_event(struct ckpt_summary *s, const char *type, json_object *payload)
{
	const char *id = get_str(payload, "call_id");
	struct ckpt_summary_call *call;

	if (!id)
		return;
	call = find_call(s, id);
	if (!strcmp(type, "tool.started") && !call && get_str(payload, "tool")) {
		s->calls = xrealloc(s->calls, s->n + 1, sizeof(*s->calls));
		call = &s->calls[s->n++];
		call->call_id = xstrdup(id);
		call->started = json_object_get(payload);
		call->completed = 0;
	} else if (!strcmp(type, "tool.completed") && call) {
		call->completed = 1;
	}
}

/* One group of the line: a verb and its items, each listed once. */
struct group {
	const char *verb;
	char **items;
	size_t n;
};

static void group_add(struct group *g, const char *item)
{
	for (size_t i = 0; i < g->n; i++)
		if (!strcmp(g->items[i], item))
			return;
	g->items = xrealloc(g->items, g->n + 1, sizeof(*g->items));
	g->items[g->n++] = xstrdup(item);
}

/* item, at most ITEM_MAX bytes of it (cut at a UTF-8 boundary, "…"). */
static void add_item(struct strbuf *sb, const char *item)
{
	size_t len = strlen(item), keep = ws_utf8_prefix(item, len, ITEM_MAX);

	strbuf_add(sb, item, keep);
	if (keep < len)
		strbuf_addstr(sb, "…");
}

/* The words of what a completed call did, for its group; 0 if it did
 * nothing worth a line (a reading tool, or arguments not understood). */
static int call_words(const struct ckpt_summary_call *c, struct strbuf *sb, size_t *group)
{
	const char *tool = get_str(c->started, "tool"), *path;
	json_object *args, *argv;

	if (!tool || !json_object_object_get_ex(c->started, "arguments", &args) ||
	    !json_object_is_type(args, json_type_object))
		return 0;
	if (!strcmp(tool, "write_file") && (path = get_str(args, "path"))) {
		*group = 0;
		add_item(sb, path);
	} else if (!strcmp(tool, "delete_file") && (path = get_str(args, "path"))) {
		*group = 1;
		add_item(sb, path);
	} else if (!strcmp(tool, "rename_file") && get_str(args, "from") && get_str(args, "to")) {
		*group = 2;
		add_item(sb, get_str(args, "from"));
		strbuf_addstr(sb, " → ");
		add_item(sb, get_str(args, "to"));
	} else if (!strcmp(tool, "run_command") && json_object_object_get_ex(args, "argv", &argv) &&
		   json_object_is_type(argv, json_type_array) && json_object_array_length(argv) > 0) {
		struct strbuf cmd = STRBUF_INIT;

		for (size_t i = 0; i < json_object_array_length(argv); i++) {
			json_object *a = json_object_array_get_idx(argv, i);

			strbuf_addf(&cmd, "%s%s", i ? " " : "",
				    json_object_is_type(a, json_type_string) ? json_object_get_string(a) : "?");
		}
		*group = 3;
		add_item(sb, strbuf_str(&cmd));
		strbuf_release(&cmd);
	} else {
		return 0;
	}
	return 1;
}

/* The line with at most max_items items per group. */
static void render(const struct group *groups, size_t ngroups, size_t max_items, struct strbuf *out)
{
	int first = 1;

	for (size_t g = 0; g < ngroups; g++) {
		if (!groups[g].n)
			continue;
		strbuf_addf(out, "%s%s ", first ? "" : "; ", groups[g].verb);
		first = 0;
		for (size_t i = 0; i < groups[g].n && i < max_items; i++)
			strbuf_addf(out, "%s%s", i ? ", " : "", groups[g].items[i]);
		if (groups[g].n > max_items)
			strbuf_addf(out, " and %zu more", groups[g].n - max_items);
	}
}

void ckpt_summary_line(const struct ckpt_summary *s, struct strbuf *out)
{
	struct group groups[] = { { "wrote", NULL, 0 }, { "deleted", NULL, 0 },
				  { "renamed", NULL, 0 }, { "ran", NULL, 0 } };
	struct strbuf line = STRBUF_INIT, words = STRBUF_INIT;
	size_t max_items = ITEMS_START, keep;

	for (size_t i = 0; i < s->n; i++) {
		size_t g;

		strbuf_reset(&words);
		if (s->calls[i].completed && call_words(&s->calls[i], &words, &g))
			group_add(&groups[g], words.buf);
	}
	for (;;) {
		strbuf_reset(&line);
		render(groups, ARRAY_SIZE(groups), max_items, &line);
		if (line.len <= CKPT_SUMMARY_MAX || max_items == 1)
			break;
		max_items--;
	}
	if (!line.len)
		strbuf_addstr(&line, "made no changes with tools");
	keep = ws_utf8_prefix(line.buf, line.len, CKPT_SUMMARY_MAX - 3);
	strbuf_add(out, line.buf, line.len <= CKPT_SUMMARY_MAX ? line.len : keep);
	if (line.len > CKPT_SUMMARY_MAX)
		strbuf_addstr(out, "…");
	for (size_t g = 0; g < ARRAY_SIZE(groups); g++) {
		for (size_t i = 0; i < groups[g].n; i++)
			free(groups[g].items[i]);
		free(groups[g].items);
	}
	strbuf_release(&line);
	strbuf_release(&words);
}

int ckpt_summary_of_run(struct db *db, int64_t run_id, struct strbuf *out)
{
	struct ckpt_summary s;
	struct db_result r;

	if (db_query(db, &r, "SELECT type, payload FROM agent_run_events WHERE run_id = ? AND "
			     "type IN ('tool.started', 'tool.completed') ORDER BY seq", "i", run_id) < 0)
		return -1;
	ckpt_summary_init(&s);
	for (size_t i = 0; i < r.nrows; i++) {
		json_object *payload = json_tokener_parse(db_val(&r, i, 1));

		if (payload)
			ckpt_summary_add_event(&s, db_val(&r, i, 0), payload);
		json_object_put(payload);
	}
	db_result_free(&r);
	ckpt_summary_line(&s, out);
	ckpt_summary_release(&s);
	return 0;
}
