/* filetools.c - the model's file tools (see filetools.h). */
#include "filetools.h"
#include "fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ere.h"
#include "manifest.h"
#include "sha256.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"
#include "workspace.h"

/* A NUL in this many leading bytes marks a file as binary (as git does). */
#define BINARY_SNIFF_BYTES 8192
#define SEARCH_TEXT_MAX 300
#define PATTERN_MAX ERE_PATTERN_MAX
/* Work one search_files call may do: a step per byte scanned and per
 * regular-expression instruction visited: a few seconds of the worst
 * pattern; a literal search of a full 100 MiB workspace takes a quarter. */
#define SEARCH_WORK_BUDGET 400000000ULL
#define SEARCH_IGNORED_MESSAGE \
	WS_IGNORED_MESSAGE "; search_files does not look there, read_file can read it"
#define GLOB_MAX 1024
#define LIST_DEPTH_DEFAULT 8
#define LIST_DEPTH_MAX 64
/* How much of a path or pattern a timeline summary quotes. */
#define SUMMARY_QUOTE_MAX 120

/* ------------------------------------------------------------------ */
/* Arguments                                                           */

/* The value of key, or NULL when absent or JSON null (models send null
 * for optional fields they do not use). */
static json_object *arg_get(json_object *args, const char *key)
{
	json_object *v;

	if (!args || !json_object_object_get_ex(args, key, &v))
		return NULL;
	return v;
}

static int arg_string(json_object *args, const char *key, int required,
		      const char **s, size_t *len, struct tool_error *err)
{
	json_object *v = arg_get(args, key);

	*s = NULL;
	*len = 0;
	if (!v) {
		if (!required)
			return 0;
		tool_error_set(err, "invalid_arguments",
			       "missing required string argument \"%s\"", key);
		return -1;
	}
	if (!json_object_is_type(v, json_type_string)) {
		tool_error_set(err, "invalid_arguments",
			       "argument \"%s\" must be a string", key);
		return -1;
	}
	*s = json_object_get_string(v);
	*len = (size_t)json_object_get_string_len(v);
	return 0;
}

/* A workspace path argument. With allow_root, absent, "" and "." mean the
 * root and give "". The returned string has no embedded NUL. */
static int arg_path(const struct workspace *ws, json_object *args,
		    const char *key, int allow_root, const char **out,
		    struct tool_error *err)
{
	struct tool_error why;
	const char *s;
	size_t len;

	if (arg_string(args, key, !allow_root, &s, &len, err) < 0)
		return -1;
	if (allow_root && (!s || len == 0 || (len == 1 && s[0] == '.'))) {
		*out = "";
		return 0;
	}
	if (ws_path_check(ws, s, len, &why) < 0) {
		tool_error_set(err, why.code, "argument \"%s\": %s", key, why.message);
		return -1;
	}
	*out = s;
	return 0;
}

/* Integers may come as JSON integers, integral doubles or decimal strings;
 * models produce all three. Values above max are clamped to max. */
static int arg_int(json_object *args, const char *key, int64_t def, int64_t min,
		   int64_t max, int64_t *out, struct tool_error *err)
{
	json_object *v = arg_get(args, key);
	int64_t n;

	if (!v) {
		*out = def;
		return 0;
	}
	switch (json_object_get_type(v)) {
	case json_type_int:
		n = json_object_get_int64(v);
		break;
	case json_type_double: {
		double d = json_object_get_double(v);

		if (!(d >= -9e18 && d <= 9e18) || d != (double)(int64_t)d)
			goto bad;
		n = (int64_t)d;
		break;
	}
	case json_type_string:
		if (parse_int64(json_object_get_string(v), INT64_MIN, INT64_MAX, &n) < 0)
			goto bad;
		break;
	default:
		goto bad;
	}
	if (n < min)
		goto bad;
	*out = n > max ? max : n;
	return 0;
bad:
	tool_error_set(err, "invalid_arguments",
		       "argument \"%s\" must be an integer of at least %lld", key,
		       (long long)min);
	return -1;
}

static int arg_bool(json_object *args, const char *key, int def, int *out,
		    struct tool_error *err)
{
	json_object *v = arg_get(args, key);

	if (!v) {
		*out = def;
		return 0;
	}
	if (json_object_is_type(v, json_type_boolean)) {
		*out = json_object_get_boolean(v);
		return 0;
	}
	if (json_object_is_type(v, json_type_string)) {
		const char *s = json_object_get_string(v);

		if (!strcmp(s, "true") || !strcmp(s, "false")) {
			*out = s[0] == 't';
			return 0;
		}
	}
	tool_error_set(err, "invalid_arguments", "argument \"%s\" must be true or false",
		       key);
	return -1;
}

/* An optional glob argument; NULL when absent or empty. */
static int arg_glob(json_object *args, const char **out, struct tool_error *err)
{
	size_t len;

	if (arg_string(args, "glob", 0, out, &len, err) < 0)
		return -1;
	if (*out && (len > GLOB_MAX || memchr(*out, '\0', len))) {
		tool_error_set(err, "invalid_arguments",
			       "argument \"glob\" must be at most %d bytes without NUL",
			       GLOB_MAX);
		return -1;
	}
	if (*out && !len)
		*out = NULL;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/*
 * fnmatch(3) semantics without FNM_PATHNAME or FNM_PERIOD: '*' matches any
 * bytes including '/', '?' one byte, [abc] [a-z] [!x] [^x] a set, '\' quotes.
 * glibc's fnmatch backtracks exponentially on patterns like "*a*a*a*a*b",
 * which the model controls; because '*' here matches anything, retrying
 * only from the last '*' is enough, which bounds the work to
 * strlen(pattern) * strlen(path).
 */
static int glob_token(const char **pp, unsigned char c)
{
	const char *p = *pp;

	if (*p == '?') {
		*pp = p + 1;
		return 1;
	}
	if (*p == '\\' && p[1]) {
		*pp = p + 2;
		return (unsigned char)p[1] == c;
	}
	if (*p == '[') {
		const char *q = p + 1, *first;
		int negate = 0, hit = 0;

		if (*q == '!' || *q == '^') {
			negate = 1;
			q++;
		}
		first = q;
		while (*q && (*q != ']' || q == first)) {
			unsigned char lo, hi;

			if (*q == '\\' && q[1])
				q++;
			lo = hi = (unsigned char)*q++;
			if (*q == '-' && q[1] && q[1] != ']') {
				q++;
				if (*q == '\\' && q[1])
					q++;
				hi = (unsigned char)*q++;
			}
			if (c >= lo && c <= hi)
				hit = 1;
		}
		if (*q == ']') {
			*pp = q + 1;
			return hit != negate;
		}
		/* no closing ']': the '[' is an ordinary character */
	}
	*pp = p + 1;
	return (unsigned char)*p == c;
}

static int glob_match(const char *pat, const char *str)
{
	const char *p = pat, *s = str, *star_p = NULL, *star_s = NULL;

	while (*s) {
		const char *next = p;

		if (*p == '*') {
			while (*p == '*')
				p++;
			if (!*p)
				return 1;
			star_p = p;
			star_s = s;
			continue;
		}
		if (*p && glob_token(&next, (unsigned char)*s)) {
			p = next;
			s++;
			continue;
		}
		if (!star_p)
			return 0;
		p = star_p;
		s = ++star_s;
	}
	while (*p == '*')
		p++;
	return !*p;
}

static int is_binary(const char *buf, size_t len)
{
	size_t sniff = len < BINARY_SNIFF_BYTES ? len : BINARY_SNIFF_BYTES;

	if (!len)
		return 0;
	return memchr(buf, '\0', sniff) || !utf8_valid(buf, len);
}

static void add_size(struct strbuf *sb, uint64_t n)
{
	if (n < 1024)
		strbuf_addf(sb, "%llu B", (unsigned long long)n);
	else if (n < 1024 * 1024)
		strbuf_addf(sb, "%.1f KiB", (double)n / 1024.0);
	else
		strbuf_addf(sb, "%.1f MiB", (double)n / (1024.0 * 1024.0));
}

/* Quotes model-provided text on the one-line summary: bounded, no control
 * characters, and no invalid UTF-8 reaching the UI. */
static void add_display(struct strbuf *sb, const char *s, size_t len)
{
	size_t n = ws_utf8_prefix(s, len, SUMMARY_QUOTE_MAX);
	int valid = utf8_valid(s, n);

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f || (c >= 0x80 && !valid))
			strbuf_addch(sb, '?');
		else
			strbuf_addch(sb, (char)c);
	}
	if (n < len)
		strbuf_addstr(sb, "...");
}

static void add_path(struct strbuf *sb, const char *rel)
{
	add_display(sb, rel, strlen(rel));
}

/* ------------------------------------------------------------------ */
/* list_files                                                          */

struct list_ctx {
	const char *glob;
	int64_t limit, count;
	int truncated;
	json_object *entries;
};

static int list_cb(void *vctx, const char *rel, const struct stat *st)
{
	struct list_ctx *c = vctx;
	json_object *e;

	if (c->glob && !glob_match(c->glob, rel))
		return 0;
	if (c->count == c->limit) {
		c->truncated = 1;
		return 1;
	}
	e = json_object_new_object();
	json_object_object_add(e, "path", json_object_new_string(rel));
	if (S_ISDIR(st->st_mode)) {
		json_object_object_add(e, "type", json_object_new_string("dir"));
	} else {
		json_object_object_add(e, "type", json_object_new_string("file"));
		json_object_object_add(e, "size",
				       json_object_new_uint64((uint64_t)st->st_size));
	}
	json_object_array_add(c->entries, e);
	c->count++;
	return 0;
}

static int tool_list_files(const struct workspace *ws, json_object *args,
			   json_object **result, struct strbuf *summary,
			   struct tool_error *err)
{
	struct list_ctx c = { NULL, 0, 0, 0, NULL };
	const char *path;
	int64_t depth;

	if (arg_path(ws, args, "path", 1, &path, err) < 0 ||
	    arg_glob(args, &c.glob, err) < 0 ||
	    arg_int(args, "depth", LIST_DEPTH_DEFAULT, 1, LIST_DEPTH_MAX, &depth,
		    err) < 0 ||
	    arg_int(args, "limit", ws->lim.max_list_results, 1,
		    ws->lim.max_list_results, &c.limit, err) < 0)
		return -1;
	c.entries = json_object_new_array();
	if (ws_walk(ws, path, (unsigned)depth, list_cb, &c, err) < 0) {
		json_object_put(c.entries);
		return -1;
	}
	*result = json_object_new_object();
	json_object_object_add(*result, "entries", c.entries);
	json_object_object_add(*result, "truncated",
			       json_object_new_boolean(c.truncated));
	strbuf_addf(summary, "listed %lld %s", (long long)c.count,
		    c.count == 1 ? "entry" : "entries");
	if (*path) {
		strbuf_addstr(summary, " in ");
		add_path(summary, path);
	}
	if (c.truncated)
		strbuf_addstr(summary, " (truncated)");
	return 0;
}

/* ------------------------------------------------------------------ */
/* read_file                                                           */

static json_object *binary_result(const char *path, uint64_t size)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "path", json_object_new_string(path));
	json_object_object_add(o, "binary", json_object_new_boolean(1));
	json_object_object_add(o, "size", json_object_new_uint64(size));
	return o;
}

static size_t count_newlines(const char *s, size_t len)
{
	size_t n = 0;
	const char *end = s + len, *nl;

	while (s < end && (nl = memchr(s, '\n', (size_t)(end - s)))) {
		n++;
		s = nl + 1;
	}
	return n;
}

/* Byte offset where line (1-based) starts; len when past the end. */
static size_t line_offset(const char *s, size_t len, int64_t line)
{
	size_t off = 0;

	while (--line > 0) {
		const char *nl = memchr(s + off, '\n', len - off);

		if (!nl)
			return len;
		off = (size_t)(nl - s) + 1;
	}
	return off;
}

static int tool_read_file(const struct workspace *ws, json_object *args,
			  json_object **result, struct strbuf *summary,
			  struct tool_error *err)
{
	struct strbuf buf = STRBUF_INIT;
	const char *path, *data;
	struct stat st;
	int64_t start, end;
	size_t total = 0, from, to, limit;
	int fd = -1, ranged, truncated = 0, ret = -1, r;

	if (arg_path(ws, args, "path", 0, &path, err) < 0 ||
	    arg_int(args, "start_line", 1, 1, INT64_MAX, &start, err) < 0 ||
	    arg_int(args, "end_line", 0, 1, INT64_MAX, &end, err) < 0)
		return -1;
	if (end && end < start) {
		tool_error_set(err, "invalid_arguments",
			       "end_line (%lld) is before start_line (%lld)",
			       (long long)end, (long long)start);
		return -1;
	}
	ranged = arg_get(args, "start_line") || arg_get(args, "end_line");
	fd = ws_open(ws, path, O_RDONLY, 0, err);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0) {
		ws_set_error(err, "io_error", path, "%s", strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		ws_set_error(err, "not_a_file", path, "is a folder; use list_files");
		goto out;
	}
	/* A line range may be taken from any file the tools could have
	 * written; a whole read is held to the smaller per-read cap. */
	limit = ranged ? (size_t)ws->lim.max_file_size : ws->lim.max_read_bytes;
	if ((uint64_t)st.st_size > limit) {
		char sniff[BINARY_SNIFF_BYTES];
		ssize_t n = pread(fd, sniff, sizeof(sniff), 0);

		if (n > 0 && memchr(sniff, '\0', (size_t)n)) {
			*result = binary_result(path, (uint64_t)st.st_size);
			ret = 0;
			goto summary;
		}
		if (ranged)
			ws_set_error(err, "too_large", path,
				     "is %llu bytes; files over %llu bytes cannot be read",
				     (unsigned long long)st.st_size,
				     (unsigned long long)ws->lim.max_file_size);
		else
			ws_set_error(err, "too_large", path,
				     "is %llu bytes; read_file returns at most %zu bytes at once, pass start_line/end_line to read part of it",
				     (unsigned long long)st.st_size, limit);
		goto out;
	}
	r = fd_read_capped(fd, limit, &buf);
	if (r < 0) {
		ws_set_error(err, r == -EFBIG ? "too_large" : "io_error", path,
			     "%s", r == -EFBIG ? "grew past the read limit while being read"
			     : strerror(-r));
		goto out;
	}
	/* an empty strbuf has no allocation: never hand its NULL on */
	data = strbuf_str(&buf);
	if (is_binary(data, buf.len)) {
		*result = binary_result(path, buf.len);
		ret = 0;
		goto summary;
	}
	total = count_newlines(data, buf.len);
	if (buf.len && data[buf.len - 1] != '\n')
		total++;
	if (start > 1 && (uint64_t)start > total) {
		ws_set_error(err, "invalid_arguments", path,
			     "start_line %lld is past the end of the file (%zu lines)",
			     (long long)start, total);
		goto out;
	}
	if (end && (uint64_t)end >= total)
		end = 0; /* to the end of the file */
	from = line_offset(data, buf.len, start);
	to = end ? from + line_offset(data + from, buf.len - from, end - start + 2)
		 : buf.len;
	if (to - from > ws->lim.max_read_bytes) {
		const char *cut = data + from + ws->lim.max_read_bytes;
		const char *nl = memrchr(data + from, '\n', (size_t)(cut - (data + from)));

		to = nl ? (size_t)(nl - data) + 1
			: from + ws_utf8_prefix(data + from, to - from,
						ws->lim.max_read_bytes);
		truncated = 1;
	}
	/* the last line returned: a partial line counts as returned */
	end = start + (int64_t)count_newlines(data + from, to - from) - 1;
	if (to > from && data[to - 1] != '\n')
		end++;
	*result = json_object_new_object();
	json_object_object_add(*result, "path", json_object_new_string(path));
	json_object_object_add(*result, "content",
			       json_object_new_string_len(data + from, (int)(to - from)));
	json_object_object_add(*result, "lines", json_object_new_uint64(total));
	json_object_object_add(*result, "start_line", json_object_new_int64(start));
	json_object_object_add(*result, "end_line", json_object_new_int64(end));
	json_object_object_add(*result, "truncated", json_object_new_boolean(truncated));
	ret = 0;
summary:
	strbuf_addstr(summary, "read ");
	add_path(summary, path);
	if (json_object_object_get_ex(*result, "binary", NULL)) {
		strbuf_addstr(summary, " (binary, ");
		add_size(summary, (uint64_t)st.st_size);
		strbuf_addch(summary, ')');
	} else if (ranged || truncated) {
		strbuf_addf(summary, " (lines %lld-%lld of %zu)", (long long)start,
			    (long long)end, total);
	} else {
		strbuf_addstr(summary, " (");
		add_size(summary, buf.len);
		strbuf_addch(summary, ')');
	}
out:
	if (fd >= 0)
		close(fd);
	strbuf_release(&buf);
	return ret;
}

/* ------------------------------------------------------------------ */
/* search_files                                                        */

struct search_ctx {
	const struct workspace *ws;
	const char *glob;
	const char *pattern;
	size_t patlen;
	struct ere *re;
	int64_t limit, count;
	int truncated;
	int out_of_budget;  /* stopped: SEARCH_WORK_BUDGET ran out */
	uint64_t budget;
	unsigned files;
	json_object *matches;
	struct strbuf buf;
};

/* 1, 0, or -1 when the work budget ran out. */
static int line_matches(struct search_ctx *c, const char *line, size_t len)
{
	if (c->re)
		return ere_match(c->re, line, len, &c->budget);
	if (len >= c->budget) {
		c->budget = 0;
		return -1;
	}
	c->budget -= len + 1;
	return memmem(line, len, c->pattern, c->patlen) != NULL;
}

/* Searches one file; returns 1 once the match limit is passed. A file that
 * cannot be read as text is skipped unless strict, then it is an error. */
static int search_file(struct search_ctx *c, const char *rel, int strict,
		       struct tool_error *err)
{
	struct tool_error ignored = { { 0 }, { 0 } };
	struct tool_error *e = strict ? err : &ignored;
	char *p, *end;
	int64_t line = 1;
	int fd, r;

	fd = ws_open(c->ws, rel, O_RDONLY, 0, e);
	if (fd < 0)
		return strict ? -1 : 0;
	/* the walk never enters ignored folders; a path given by the model
	 * must not either, however it is spelt */
	if (strict && ws_fd_is_ignored(c->ws, fd, rel, e) != 0) {
		if (!strcmp(e->code, "is_ignored"))
			ws_set_error(e, "is_ignored", rel, "%s", SEARCH_IGNORED_MESSAGE);
		close(fd);
		return -1;
	}
	strbuf_reset(&c->buf);
	r = fd_read_capped(fd, c->ws->lim.max_file_size, &c->buf);
	close(fd);
	if (r < 0) {
		ws_set_error(e, r == -EFBIG ? "too_large" : "io_error", rel, "%s",
			     r == -EFBIG ? "is too large to search" : strerror(-r));
		return strict ? -1 : 0;
	}
	if (is_binary(c->buf.buf, c->buf.len)) {
		ws_set_error(e, "binary_file", rel, "is a binary file");
		return strict ? -1 : 0;
	}
	c->files++;
	if (!c->buf.len)
		return 0;
	p = c->buf.buf;
	end = p + c->buf.len;
	for (; p < end; line++) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);
		/* a CRLF line is matched and shown without its CR, so $ works */
		size_t text = len && p[len - 1] == '\r' ? len - 1 : len;
		int hit = line_matches(c, p, text);

		if (hit < 0) {
			c->truncated = c->out_of_budget = 1;
			return 1;
		}
		if (hit) {
			json_object *m;
			size_t show;

			if (c->count == c->limit) {
				c->truncated = 1;
				return 1;
			}
			show = ws_utf8_prefix(p, text, SEARCH_TEXT_MAX);
			m = json_object_new_object();
			json_object_object_add(m, "path", json_object_new_string(rel));
			json_object_object_add(m, "line", json_object_new_int64(line));
			json_object_object_add(m, "text",
					       json_object_new_string_len(p, (int)show));
			json_object_array_add(c->matches, m);
			c->count++;
		}
		p += len + 1;
	}
	return 0;
}

static int search_cb(void *vctx, const char *rel, const struct stat *st)
{
	struct search_ctx *c = vctx;

	if (!S_ISREG(st->st_mode) || (uint64_t)st->st_size > c->ws->lim.max_file_size)
		return 0;
	if (c->glob && !glob_match(c->glob, rel))
		return 0;
	return search_file(c, rel, 0, NULL);
}

static int tool_search_files(const struct workspace *ws, json_object *args,
			     json_object **result, struct strbuf *summary,
			     struct tool_error *err)
{
	struct search_ctx c;
	struct stat st;
	const char *path;
	int use_regex, ret = -1, r;

	memset(&c, 0, sizeof(c));
	c.ws = ws;
	c.budget = SEARCH_WORK_BUDGET;
	strbuf_init(&c.buf);
	if (arg_string(args, "pattern", 1, &c.pattern, &c.patlen, err) < 0 ||
	    arg_bool(args, "regex", 0, &use_regex, err) < 0 ||
	    arg_glob(args, &c.glob, err) < 0 ||
	    arg_path(ws, args, "path", 1, &path, err) < 0 ||
	    arg_int(args, "limit", ws->lim.max_search_matches, 1,
		    ws->lim.max_search_matches, &c.limit, err) < 0)
		return -1;
	if (!c.patlen || c.patlen > PATTERN_MAX || memchr(c.pattern, '\0', c.patlen)) {
		tool_error_set(err, "invalid_arguments",
			       "\"pattern\" must be 1 to %d bytes without NUL", PATTERN_MAX);
		return -1;
	}
	if (use_regex) {
		char msg[256];

		if (ere_compile(c.pattern, c.patlen, &c.re, msg, sizeof(msg)) < 0) {
			tool_error_set(err, "invalid_regex", "%s", msg);
			return -1;
		}
	}
	c.matches = json_object_new_array();
	if (*path && ws_path_is_ignored(ws, path)) {
		ws_set_error(err, "is_ignored", path, "%s", SEARCH_IGNORED_MESSAGE);
		goto out;
	}
	if (*path && ws_stat(ws, path, &st, err) < 0)
		goto out;
	if (*path && S_ISREG(st.st_mode))
		r = search_file(&c, path, 1, err);
	else
		r = ws_walk(ws, path, 0, search_cb, &c, err);
	if (r < 0)
		goto out;
	*result = json_object_new_object();
	json_object_object_add(*result, "matches", c.matches);
	json_object_object_add(*result, "truncated", json_object_new_boolean(c.truncated));
	if (c.out_of_budget)
		json_object_object_add(*result, "note", json_object_new_string(
			"the search stopped early: it reached its work limit. The matches are "
			"those found so far; narrow it with path or glob, or simplify the pattern"));
	c.matches = NULL;
	strbuf_addstr(summary, "searched for \"");
	add_display(summary, c.pattern, c.patlen);
	strbuf_addf(summary, "\": %lld %s in %u %s%s", (long long)c.count,
		    c.count == 1 ? "match" : "matches", c.files,
		    c.files == 1 ? "file" : "files",
		    c.out_of_budget ? " (stopped at the work limit)"
		    : c.truncated ? " (truncated)" : "");
	ret = 0;
out:
	ere_free(c.re);
	json_object_put(c.matches);
	strbuf_release(&c.buf);
	return ret;
}

/* ------------------------------------------------------------------ */
/* write_file, delete_file, rename_file                                */

static int tool_write_file(const struct workspace *ws, json_object *args,
			   json_object **result, struct strbuf *summary,
			   struct tool_error *err)
{
	struct tool_error unused;
	const char *path, *content;
	struct stat st;
	size_t len;
	char hex[SHA256_HEX_LEN + 1];
	int created = 0;

	if (arg_path(ws, args, "path", 0, &path, err) < 0 ||
	    arg_string(args, "content", 1, &content, &len, err) < 0)
		return -1;
	/* a rewritten script stays executable */
	if (ws_write_file_ex(ws, path, content, len, WS_MODE_KEEP, &created, err) < 0)
		return -1;
	sha256_hex(content, len, hex);
	*result = json_object_new_object();
	json_object_object_add(*result, "path", json_object_new_string(path));
	json_object_object_add(*result, "size", json_object_new_uint64(len));
	json_object_object_add(*result, "sha256", json_object_new_string(hex));
	json_object_object_add(*result, "created", json_object_new_boolean(created));
	/* only informative: the file is written whatever this answers */
	if (ws_stat(ws, path, &st, &unused) == 0 && (st.st_mode & 0111))
		json_object_object_add(*result, "executable", json_object_new_boolean(1));
	strbuf_addstr(summary, created ? "created " : "wrote ");
	add_path(summary, path);
	strbuf_addstr(summary, " (");
	add_size(summary, len);
	strbuf_addch(summary, ')');
	return 0;
}

static int tool_delete_file(const struct workspace *ws, json_object *args,
			    json_object **result, struct strbuf *summary,
			    struct tool_error *err)
{
	const char *path;

	if (arg_path(ws, args, "path", 0, &path, err) < 0 ||
	    ws_delete_file(ws, path, err) < 0)
		return -1;
	*result = json_object_new_object();
	json_object_object_add(*result, "path", json_object_new_string(path));
	json_object_object_add(*result, "deleted", json_object_new_boolean(1));
	strbuf_addstr(summary, "deleted ");
	add_path(summary, path);
	return 0;
}

static int tool_rename_file(const struct workspace *ws, json_object *args,
			    json_object **result, struct strbuf *summary,
			    struct tool_error *err)
{
	const char *from, *to;
	int overwrite;

	if (arg_path(ws, args, "from", 0, &from, err) < 0 ||
	    arg_path(ws, args, "to", 0, &to, err) < 0 ||
	    arg_bool(args, "overwrite", 0, &overwrite, err) < 0 ||
	    ws_rename_file(ws, from, to, overwrite, err) < 0)
		return -1;
	*result = json_object_new_object();
	json_object_object_add(*result, "from", json_object_new_string(from));
	json_object_object_add(*result, "to", json_object_new_string(to));
	strbuf_addstr(summary, "renamed ");
	add_path(summary, from);
	strbuf_addstr(summary, " to ");
	add_path(summary, to);
	return 0;
}

/* ------------------------------------------------------------------ */
/* snapshot                                                            */

static int tool_snapshot(const struct workspace *ws, json_object *args,
			 json_object **result, struct strbuf *summary,
			 struct tool_error *err)
{
	struct manifest m;

	(void)args;
	if (manifest_build(ws, &m, err) < 0)
		return -1;
	*result = json_object_new_object();
	json_object_object_add(*result, "files", manifest_to_json(&m));
	json_object_object_add(*result, "file_count", json_object_new_uint64(m.n));
	json_object_object_add(*result, "total_size",
			       json_object_new_uint64(m.total_size));
	strbuf_addf(summary, "snapshot: %zu %s, ", m.n, m.n == 1 ? "file" : "files");
	add_size(summary, m.total_size);
	manifest_release(&m);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Dispatch and schemas                                                */

typedef int (*filetool_fn)(const struct workspace *ws, json_object *args,
			   json_object **result, struct strbuf *summary,
			   struct tool_error *err);

struct filetool {
	const char *name;
	filetool_fn run;
	const char *schema; /* the "function" object, as JSON text */
};

#define PATH_DESC "relative to the workspace root, '/'-separated, e.g. src/app.js"

static const struct filetool filetools[] = {
	{ "list_files", tool_list_files,
	  "{\"name\":\"list_files\","
	  "\"description\":\"List files and folders of the app, sorted by name, depth-first. "
	  "node_modules, dist and .git are skipped. Files come with their size in bytes.\","
	  "\"parameters\":{\"type\":\"object\",\"properties\":{"
	  "\"path\":{\"type\":\"string\",\"description\":\"Folder to list, " PATH_DESC "; empty for the whole app.\"},"
	  "\"glob\":{\"type\":\"string\",\"description\":\"Only paths matching this pattern: * (also matches /), ?, [abc], [a-z], [!x]. Example: *.js\"},"
	  "\"depth\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"Folder levels to descend (default 8).\"},"
	  "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"Most entries to return (capped by the server).\"}"
	  "}}}" },
	{ "read_file", tool_read_file,
	  "{\"name\":\"read_file\","
	  "\"description\":\"Read a text file of the app (also inside node_modules or dist). Large files must be read in line ranges. "
	  "Binary files answer binary:true and their size instead of content.\","
	  "\"parameters\":{\"type\":\"object\",\"properties\":{"
	  "\"path\":{\"type\":\"string\",\"description\":\"File to read, " PATH_DESC ".\"},"
	  "\"start_line\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"First line to return, 1-based (default 1).\"},"
	  "\"end_line\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"Last line to return, inclusive (default: end of file).\"}"
	  "},\"required\":[\"path\"]}}" },
	{ "search_files", tool_search_files,
	  "{\"name\":\"search_files\","
	  "\"description\":\"Search the app's text files line by line for a literal string or a POSIX extended regular expression "
	  "(also \\\\d \\\\w \\\\s \\\\b; no back-references; counted repeats up to {255}). node_modules, dist and .git are not searched. "
	  "Answers path, line number and line text (cut to 300 bytes) per match.\","
	  "\"parameters\":{\"type\":\"object\",\"properties\":{"
	  "\"pattern\":{\"type\":\"string\",\"description\":\"Text to find (case-sensitive).\"},"
	  "\"regex\":{\"type\":\"boolean\",\"description\":\"Treat pattern as a POSIX extended regular expression (default false: literal).\"},"
	  "\"glob\":{\"type\":\"string\",\"description\":\"Only files whose path matches this pattern, e.g. *.css\"},"
	  "\"path\":{\"type\":\"string\",\"description\":\"Folder or file to search, " PATH_DESC "; empty for the whole app.\"},"
	  "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"description\":\"Most matches to return (capped by the server).\"}"
	  "},\"required\":[\"pattern\"]}}" },
	{ "write_file", tool_write_file,
	  "{\"name\":\"write_file\","
	  "\"description\":\"Create or replace a file of the app with the given content. Missing folders are created. "
	  "The whole file is replaced atomically; a replaced file keeps its execute permission.\","
	  "\"parameters\":{\"type\":\"object\",\"properties\":{"
	  "\"path\":{\"type\":\"string\",\"description\":\"File to write, " PATH_DESC ".\"},"
	  "\"content\":{\"type\":\"string\",\"description\":\"The complete new content of the file.\"}"
	  "},\"required\":[\"path\",\"content\"]}}" },
	{ "delete_file", tool_delete_file,
	  "{\"name\":\"delete_file\","
	  "\"description\":\"Delete a file of the app (folders cannot be deleted).\","
	  "\"parameters\":{\"type\":\"object\",\"properties\":{"
	  "\"path\":{\"type\":\"string\",\"description\":\"File to delete, " PATH_DESC ".\"}"
	  "},\"required\":[\"path\"]}}" },
	{ "rename_file", tool_rename_file,
	  "{\"name\":\"rename_file\","
	  "\"description\":\"Rename or move a file of the app. Missing destination folders are created.\","
	  "\"parameters\":{\"type\":\"object\",\"properties\":{"
	  "\"from\":{\"type\":\"string\",\"description\":\"Current path, " PATH_DESC ".\"},"
	  "\"to\":{\"type\":\"string\",\"description\":\"New path, " PATH_DESC ".\"},"
	  "\"overwrite\":{\"type\":\"boolean\",\"description\":\"Replace an existing file at the destination (default false).\"}"
	  "},\"required\":[\"from\",\"to\"]}}" },
	{ "snapshot", tool_snapshot,
	  "{\"name\":\"snapshot\","
	  "\"description\":\"List every file of the app with its size and sha256, to see the app's current state at a glance.\","
	  "\"parameters\":{\"type\":\"object\",\"properties\":{}}}" },
};

static const struct filetool *find_tool(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(filetools); i++)
		if (!strcmp(filetools[i].name, name))
			return &filetools[i];
	return NULL;
}

int filetool_exists(const char *tool)
{
	return find_tool(tool) != NULL;
}

int filetool_call(const struct workspace *ws, const char *tool,
		  json_object *args, json_object **result,
		  struct strbuf *summary, struct tool_error *err)
{
	const struct filetool *t = find_tool(tool);
	size_t summary_len = summary->len;
	int ret;

	*result = NULL;
	if (!t) {
		tool_error_set(err, "unknown_tool", "no file tool of that name");
		return -1;
	}
	if (args && !json_object_is_type(args, json_type_object)) {
		tool_error_set(err, "invalid_arguments", "arguments must be a JSON object");
		return -1;
	}
	ret = t->run(ws, args, result, summary, err);
	if (ret < 0) {
		json_object_put(*result);
		*result = NULL;
		strbuf_setlen(summary, summary_len);
		return -1;
	}
	return 0;
}

void filetool_add_schemas(json_object *tools, const char *const *enabled)
{
	for (size_t i = 0; i < ARRAY_SIZE(filetools); i++) {
		json_object *entry, *fn;
		int want = !enabled;

		for (size_t k = 0; enabled && enabled[k] && !want; k++)
			want = !strcmp(enabled[k], filetools[i].name);
		if (!want)
			continue;
		/* the schemas are constants; the unit tests parse every one */
		fn = json_tokener_parse(filetools[i].schema);
		if (!fn)
			continue;
		entry = json_object_new_object();
		json_object_object_add(entry, "type", json_object_new_string("function"));
		json_object_object_add(entry, "function", fn);
		json_object_array_add(tools, entry);
	}
}
