/* sqlsplit.c - migration files cut into statements (see sqlsplit.h). */
#include "sqlsplit.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "strbuf.h"
#include "util.h"

struct splitter {
	const char *s;
	size_t len, i;
	int line;             /* line of s[i] */
	struct strbuf cur;    /* the statement being read */
	int cur_line;         /* line of its first non-blank character; 0 = none yet */
	struct sql_script *out;
	struct strbuf *err;
};

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Moves past n bytes, counting lines; copies them into the statement when
 * keep is set. */
static void take(struct splitter *sp, size_t n, int keep)
{
	size_t k;

	for (k = 0; k < n; k++) {
		char c = sp->s[sp->i + k];

		if (keep) {
			if (!sp->cur_line && !is_space(c))
				sp->cur_line = sp->line;
			strbuf_addch(&sp->cur, c);
		}
		if (c == '\n')
			sp->line++;
	}
	sp->i += n;
}

static void push_statement(struct splitter *sp)
{
	size_t start = 0, end = sp->cur.len;
	struct sql_stmt *st;

	while (start < end && is_space(sp->cur.buf[start]))
		start++;
	while (end > start && is_space(sp->cur.buf[end - 1]))
		end--;
	if (end > start) {
		sp->out->v = xrealloc(sp->out->v, sp->out->n + 1, sizeof(*sp->out->v));
		st = &sp->out->v[sp->out->n++];
		st->text = xcalloc(1, end - start + 1);
		memcpy(st->text, sp->cur.buf + start, end - start);
		st->line = sp->cur_line;
	}
	strbuf_reset(&sp->cur);
	sp->cur_line = 0;
}

/* A quoted string or identifier starting at s[i]; the length it spans, or
 * 0 when the file ends first. */
static size_t quoted_len(const struct splitter *sp)
{
	char q = sp->s[sp->i];
	size_t j = sp->i + 1;

	while (j < sp->len) {
		if (sp->s[j] == '\\' && q != '`') {
			j += 2;
			continue;
		}
		if (sp->s[j] == q) {
			if (j + 1 < sp->len && sp->s[j + 1] == q) {
				j += 2;
				continue;
			}
			return j + 1 - sp->i;
		}
		j++;
	}
	return 0;
}

/* "-- " comment: two dashes and then a blank, a control character or the
 * end of the text. */
static int dash_comment_at(const struct splitter *sp)
{
	size_t i = sp->i;

	return sp->s[i] == '-' && i + 1 < sp->len && sp->s[i + 1] == '-' &&
	       (i + 2 == sp->len || (unsigned char)sp->s[i + 2] <= ' ');
}

static int delimiter_at(const struct splitter *sp)
{
	static const char word[] = "delimiter";
	size_t n = sizeof(word) - 1;

	return !sp->cur_line && sp->len - sp->i > n && !strncasecmp(sp->s + sp->i, word, n) &&
	       is_space(sp->s[sp->i + n]);
}

static int split_error(struct splitter *sp, int line, const char *why)
{
	strbuf_addf(sp->err, "line %d: %s", line, why);
	return -1;
}

static int step(struct splitter *sp)
{
	char c = sp->s[sp->i];
	size_t n;

	if (c == '\0')
		return split_error(sp, sp->line, "a NUL byte");
	if (c == '\'' || c == '"' || c == '`') {
		n = quoted_len(sp);
		if (!n)
			return split_error(sp, sp->line, c == '`' ? "an identifier opened here is not closed"
								  : "a string opened here is not closed");
		take(sp, n, 1);
		return 0;
	}
	if (c == '#' || dash_comment_at(sp)) {
		const char *nl = memchr(sp->s + sp->i, '\n', sp->len - sp->i);

		take(sp, nl ? (size_t)(nl - (sp->s + sp->i)) : sp->len - sp->i, 0);
		strbuf_addch(&sp->cur, ' ');
		return 0;
	}
	if (c == '/' && sp->i + 1 < sp->len && sp->s[sp->i + 1] == '*') {
		const char *body = sp->s + sp->i + 2, *close = NULL;
		size_t left = sp->len - sp->i - 2, k;
		int executable = (left >= 1 && body[0] == '!') ||
				 (left >= 2 && body[0] == 'M' && body[1] == '!');

		for (k = 0; k + 1 < left && !close; k++)
			if (body[k] == '*' && body[k + 1] == '/')
				close = body + k;
		if (!close)
			return split_error(sp, sp->line, "a comment opened here is not closed");
		n = (size_t)(close + 2 - (sp->s + sp->i));
		take(sp, n, executable);
		if (!executable)
			strbuf_addch(&sp->cur, ' ');
		return 0;
	}
	if (delimiter_at(sp))
		return split_error(sp, sp->line, "DELIMITER is a mariadb client command, not SQL; "
						 "migrations hold no stored programs");
	if (c == ';') {
		sp->i++;
		push_statement(sp);
		return 0;
	}
	take(sp, 1, 1);
	return 0;
}

int sql_split(const char *sql, size_t len, struct sql_script *out, struct strbuf *err)
{
	struct splitter sp;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	sp = (struct splitter){ sql, len, 0, 1, STRBUF_INIT, 0, out, err };
	while (sp.i < sp.len && ret == 0)
		ret = step(&sp);
	if (ret == 0)
		push_statement(&sp); /* the tail after the last ';' */
	else
		sql_script_release(out);
	strbuf_release(&sp.cur);
	return ret;
}

void sql_script_release(struct sql_script *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		free(s->v[i].text);
	free(s->v);
	memset(s, 0, sizeof(*s));
}
