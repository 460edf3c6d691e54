/* textdiff.c - unified diff (see textdiff.h). */
#include "textdiff.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"
#include "util.h"

struct line {
	const char *p;
	size_t len; /* with its '\n', if it has one */
};

struct side {
	struct line *lines;
	int *ids;          /* equal lines, equal ids */
	unsigned char *changed;
	size_t n;
};

/* Splits buf into lines; -1 past max lines. */
static int split_lines(const char *buf, size_t len, size_t max, struct side *s)
{
	size_t n = 0, i, start = 0;

	for (i = 0; i < len; i++)
		if (buf[i] == '\n')
			n++;
	if (len && buf[len - 1] != '\n')
		n++;
	if (n > max)
		return -1;
	s->n = n;
	s->lines = xcalloc(n + 1, sizeof(*s->lines));
	s->ids = xcalloc(n + 1, sizeof(*s->ids));
	s->changed = xcalloc(n + 1, 1);
	n = 0;
	for (i = 0; i < len; i++)
		if (buf[i] == '\n') {
			s->lines[n].p = buf + start;
			s->lines[n++].len = i + 1 - start;
			start = i + 1;
		}
	if (start < len) {
		s->lines[n].p = buf + start;
		s->lines[n].len = len - start;
	}
	return 0;
}

static void side_release(struct side *s)
{
	free(s->lines);
	free(s->ids);
	free(s->changed);
}

static uint64_t hash_line(const struct line *l)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (size_t i = 0; i < l->len; i++) {
		h ^= (unsigned char)l->p[i];
		h *= 1099511628211ull;
	}
	return h;
}

/* Gives equal lines of both sides the same small integer, so the diff
 * compares ints (an open-addressing table of the distinct lines). */
static void number_lines(struct side *a, struct side *b)
{
	size_t total = a->n + b->n, cap = 16;
	struct slot {
		uint64_t hash;
		const struct line *line;
		int id;
	} *table;
	struct side *sides[2] = { a, b };
	int next_id = 0;

	while (cap < total * 2)
		cap *= 2;
	table = xcalloc(cap, sizeof(*table));
	for (int s = 0; s < 2; s++)
		for (size_t i = 0; i < sides[s]->n; i++) {
			const struct line *l = &sides[s]->lines[i];
			uint64_t h = hash_line(l);
			size_t k = (size_t)h & (cap - 1);

			while (table[k].line &&
			       (table[k].hash != h || table[k].line->len != l->len ||
				memcmp(table[k].line->p, l->p, l->len)))
				k = (k + 1) & (cap - 1);
			if (!table[k].line) {
				table[k].hash = h;
				table[k].line = l;
				table[k].id = next_id++;
			}
			sides[s]->ids[i] = table[k].id;
		}
	free(table);
}

/* ------------------------------------------------------------------ */
/* Myers, linear space                                                */

struct myers {
	const int *x, *y;   /* line ids of a and b */
	unsigned char *xchg, *ychg;
	ptrdiff_t *fd, *bd; /* furthest x per diagonal k = x - y */
	ptrdiff_t max_cost; /* edit distance searched before a heuristic cut */
};

/*
 * Finds a point (xmid, ymid) on an optimal path through the box
 * [xoff,xlim) x [yoff,ylim) by running the forward and backward searches
 * until they meet. Past max_cost rounds it settles for the furthest
 * point either search reached: still a valid split, no longer minimal.
 */
static void split_box(struct myers *m, ptrdiff_t xoff, ptrdiff_t xlim,
		      ptrdiff_t yoff, ptrdiff_t ylim, ptrdiff_t *xmid, ptrdiff_t *ymid)
{
	ptrdiff_t *fd = m->fd, *bd = m->bd;
	const ptrdiff_t dmin = xoff - ylim, dmax = xlim - yoff;
	const ptrdiff_t fmid = xoff - yoff, bmid = xlim - ylim;
	ptrdiff_t fmin = fmid, fmax = fmid, bmin = bmid, bmax = bmid;
	const int odd = (fmid - bmid) & 1;

	fd[fmid] = xoff;
	bd[bmid] = xlim;
	for (ptrdiff_t cost = 1;; cost++) {
		ptrdiff_t d;

		/* widen the forward diagonals by one, guarding both ends */
		if (fmin > dmin)
			fd[--fmin - 1] = -1;
		else
			fmin++;
		if (fmax < dmax)
			fd[++fmax + 1] = -1;
		else
			fmax--;
		for (d = fmax; d >= fmin; d -= 2) {
			ptrdiff_t lo = fd[d - 1], hi = fd[d + 1];
			ptrdiff_t x = lo >= hi ? lo + 1 : hi, y = x - d;

			while (x < xlim && y < ylim && m->x[x] == m->y[y]) {
				x++;
				y++;
			}
			fd[d] = x;
			if (odd && bmin <= d && d <= bmax && bd[d] <= x) {
				*xmid = x;
				*ymid = y;
				return;
			}
		}
		if (bmin > dmin)
			bd[--bmin - 1] = PTRDIFF_MAX;
		else
			bmin++;
		if (bmax < dmax)
			bd[++bmax + 1] = PTRDIFF_MAX;
		else
			bmax--;
		for (d = bmax; d >= bmin; d -= 2) {
			ptrdiff_t lo = bd[d - 1], hi = bd[d + 1];
			ptrdiff_t x = lo < hi ? lo : hi - 1, y = x - d;

			while (x > xoff && y > yoff && m->x[x - 1] == m->y[y - 1]) {
				x--;
				y--;
			}
			bd[d] = x;
			if (!odd && fmin <= d && d <= fmax && x <= fd[d]) {
				*xmid = x;
				*ymid = y;
				return;
			}
		}
		if (cost >= m->max_cost) {
			ptrdiff_t fbest = -1, fx = xoff, bbest = PTRDIFF_MAX, bx = xlim;

			for (d = fmax; d >= fmin; d -= 2) {
				ptrdiff_t x = fd[d] < xlim ? fd[d] : xlim, y = x - d;

				if (y > ylim) {
					x = ylim + d;
					y = ylim;
				}
				if (x + y > fbest) {
					fbest = x + y;
					fx = x;
				}
			}
			for (d = bmax; d >= bmin; d -= 2) {
				ptrdiff_t x = bd[d] > xoff ? bd[d] : xoff, y = x - d;

				if (y < yoff) {
					x = yoff + d;
					y = yoff;
				}
				if (x + y < bbest) {
					bbest = x + y;
					bx = x;
				}
			}
			if ((xlim + ylim) - bbest < fbest - (xoff + yoff)) {
				*xmid = fx;
				*ymid = fbest - fx;
			} else {
				*xmid = bx;
				*ymid = bbest - bx;
			}
			return;
		}
	}
}

struct box {
	ptrdiff_t xoff, xlim, yoff, ylim;
};

/* Marks changed lines; an explicit stack instead of recursion, since a
 * heuristic split can be lopsided. */
static void diff_boxes(struct myers *m, size_t na, size_t nb)
{
	size_t alloc = 64, n = 0;
	struct box *stack = xcalloc(alloc, sizeof(*stack));

	stack[n++] = (struct box){ 0, (ptrdiff_t)na, 0, (ptrdiff_t)nb };
	while (n) {
		struct box b = stack[--n];
		ptrdiff_t xmid, ymid;

		while (b.xoff < b.xlim && b.yoff < b.ylim && m->x[b.xoff] == m->y[b.yoff]) {
			b.xoff++;
			b.yoff++;
		}
		while (b.xoff < b.xlim && b.yoff < b.ylim &&
		       m->x[b.xlim - 1] == m->y[b.ylim - 1]) {
			b.xlim--;
			b.ylim--;
		}
		if (b.xoff == b.xlim || b.yoff == b.ylim) {
			for (ptrdiff_t i = b.xoff; i < b.xlim; i++)
				m->xchg[i] = 1;
			for (ptrdiff_t j = b.yoff; j < b.ylim; j++)
				m->ychg[j] = 1;
			continue;
		}
		split_box(m, b.xoff, b.xlim, b.yoff, b.ylim, &xmid, &ymid);
		if ((xmid == b.xoff && ymid == b.yoff) || (xmid == b.xlim && ymid == b.ylim)) {
			/* no progress possible: call the whole box changed */
			for (ptrdiff_t i = b.xoff; i < b.xlim; i++)
				m->xchg[i] = 1;
			for (ptrdiff_t j = b.yoff; j < b.ylim; j++)
				m->ychg[j] = 1;
			continue;
		}
		if (n + 2 > alloc) {
			struct box *ns = realloc(stack, 2 * alloc * sizeof(*stack));

			if (!ns)
				abort();
			stack = ns;
			alloc *= 2;
		}
		stack[n++] = (struct box){ xmid, b.xlim, ymid, b.ylim };
		stack[n++] = (struct box){ b.xoff, xmid, b.yoff, ymid };
	}
	free(stack);
}

static void run_myers(struct side *a, struct side *b)
{
	size_t diags = a->n + b->n + 3;
	ptrdiff_t *fbuf = xcalloc(diags, sizeof(*fbuf));
	ptrdiff_t *bbuf = xcalloc(diags, sizeof(*bbuf));
	struct myers m = {
		.x = a->ids, .y = b->ids, .xchg = a->changed, .ychg = b->changed,
		/* diagonals run from -(nb+1) to na+1 */
		.fd = fbuf + b->n + 1, .bd = bbuf + b->n + 1,
	};

	/* about sqrt(diagonals), at least 1024 rounds (as in GNU diff) */
	m.max_cost = 1;
	for (size_t d = diags; d; d >>= 2)
		m.max_cost <<= 1;
	if (m.max_cost < 1024)
		m.max_cost = 1024;
	diff_boxes(&m, a->n, b->n);
	free(fbuf);
	free(bbuf);
}

/* ------------------------------------------------------------------ */
/* Output                                                             */

struct change {
	size_t a0, a1, b0, b1; /* a[a0,a1) replaced by b[b0,b1) */
};

struct emitter {
	struct strbuf *out;
	size_t start, cap;
	int truncated;
};

#define TRUNC_MARKER_MAX 64
#define NO_NEWLINE "\n\\ No newline at end of file\n"

/* 0 when len more bytes fit and still leave room for the truncation
 * marker; otherwise writes the marker (if it fits at all), sets the flag
 * and returns -1, so output always ends at a line boundary. */
static int reserve(struct emitter *e, size_t len)
{
	size_t used = e->out->len - e->start;

	if (e->truncated)
		return -1;
	if (len <= e->cap && used + len + TRUNC_MARKER_MAX <= e->cap)
		return 0;
	{
		char marker[TRUNC_MARKER_MAX];
		int n = snprintf(marker, sizeof(marker),
				 "... diff truncated at %zu bytes\n", e->cap);

		e->truncated = 1;
		if (n > 0 && used + (size_t)n <= e->cap)
			strbuf_add(e->out, marker, (size_t)n);
	}
	return -1;
}

static int emit(struct emitter *e, const char *s, size_t len)
{
	if (reserve(e, len) < 0)
		return -1;
	return strbuf_add(e->out, s, len);
}

static int emit_line(struct emitter *e, char prefix, const struct line *l)
{
	int no_newline = l->p[l->len - 1] != '\n';
	size_t len = 1 + l->len + (no_newline ? sizeof(NO_NEWLINE) - 1 : 0);

	if (reserve(e, len) < 0)
		return -1;
	if (strbuf_addch(e->out, prefix) < 0 || strbuf_add(e->out, l->p, l->len) < 0 ||
	    (no_newline && strbuf_addstr(e->out, NO_NEWLINE) < 0))
		return -1;
	return 0;
}

/* "l,n"; an empty range names the line before it, like diff -u. */
static void range(struct strbuf *sb, size_t start, size_t count)
{
	if (count == 1)
		strbuf_addf(sb, "%zu", start + 1);
	else
		strbuf_addf(sb, "%zu,%zu", count ? start + 1 : start, count);
}

static int emit_hunk(struct emitter *e, const struct side *a, const struct side *b,
		     const struct change *c, size_t first, size_t last)
{
	size_t astart = c[first].a0 > TEXTDIFF_CONTEXT ? c[first].a0 - TEXTDIFF_CONTEXT : 0;
	size_t aend = c[last].a1 + TEXTDIFF_CONTEXT < a->n ? c[last].a1 + TEXTDIFF_CONTEXT : a->n;
	size_t bstart = c[first].b0 - (c[first].a0 - astart);
	size_t bend = c[last].b1 + (aend - c[last].a1);
	struct strbuf hdr = STRBUF_INIT;
	size_t i = astart;
	int ret;

	strbuf_addstr(&hdr, "@@ -");
	range(&hdr, astart, aend - astart);
	strbuf_addstr(&hdr, " +");
	range(&hdr, bstart, bend - bstart);
	strbuf_addstr(&hdr, " @@\n");
	ret = emit(e, hdr.buf, hdr.len);
	strbuf_release(&hdr);
	for (size_t k = first; !ret && k <= last; k++) {
		for (; !ret && i < c[k].a0; i++)
			ret = emit_line(e, ' ', &a->lines[i]);
		for (i = c[k].a0; !ret && i < c[k].a1; i++)
			ret = emit_line(e, '-', &a->lines[i]);
		for (size_t j = c[k].b0; !ret && j < c[k].b1; j++)
			ret = emit_line(e, '+', &b->lines[j]);
		i = c[k].a1;
	}
	for (; !ret && i < aend; i++)
		ret = emit_line(e, ' ', &a->lines[i]);
	return ret;
}

/* Unchanged lines of both sides pair up in order; the runs between them
 * are the changes. */
static struct change *collect_changes(const struct side *a, const struct side *b,
				      size_t *n)
{
	struct change *c = xcalloc(a->n + b->n + 1, sizeof(*c));
	size_t i = 0, j = 0;

	*n = 0;
	while (i < a->n || j < b->n) {
		if (i < a->n && j < b->n && !a->changed[i] && !b->changed[j]) {
			i++;
			j++;
			continue;
		}
		c[*n].a0 = i;
		c[*n].b0 = j;
		while (i < a->n && a->changed[i])
			i++;
		while (j < b->n && b->changed[j])
			j++;
		c[*n].a1 = i;
		c[*n].b1 = j;
		(*n)++;
	}
	return c;
}

static int emit_diff(struct emitter *e, const struct side *a, const struct side *b,
		     const char *path_a, const char *path_b)
{
	struct strbuf hdr = STRBUF_INIT;
	size_t n, first = 0;
	struct change *c = collect_changes(a, b, &n);
	int ret = 0;

	if (!n)
		goto out;
	if (path_a)
		strbuf_addf(&hdr, "--- a/%s\n", path_a);
	else
		strbuf_addstr(&hdr, "--- /dev/null\n");
	if (path_b)
		strbuf_addf(&hdr, "+++ b/%s\n", path_b);
	else
		strbuf_addstr(&hdr, "+++ /dev/null\n");
	ret = emit(e, hdr.buf, hdr.len);
	/* changes closer than twice the context share a hunk */
	for (size_t k = 1; !ret && k <= n; k++)
		if (k == n || c[k].a0 - c[k - 1].a1 > 2 * TEXTDIFF_CONTEXT) {
			ret = emit_hunk(e, a, b, c, first, k - 1);
			first = k;
		}
out:
	strbuf_release(&hdr);
	free(c);
	return e->truncated ? 0 : ret;
}

int textdiff_unified(const char *a, size_t alen, const char *b, size_t blen,
		     const char *path_a, const char *path_b, size_t cap,
		     struct strbuf *out, int *truncated)
{
	struct side sa = { 0 }, sb = { 0 };
	struct emitter e = { out, out->len, cap, 0 };
	int ret = TEXTDIFF_OK;

	if (truncated)
		*truncated = 0;
	if ((alen && memchr(a, '\0', alen)) || (blen && memchr(b, '\0', blen))) {
		if (alen != blen || memcmp(a, b, alen)) {
			struct strbuf msg = STRBUF_INIT;

			strbuf_addf(&msg, "Binary files %s%s and %s%s differ\n",
				    path_a ? "a/" : "", path_a ? path_a : "/dev/null",
				    path_b ? "b/" : "", path_b ? path_b : "/dev/null");
			emit(&e, msg.buf, msg.len);
			strbuf_release(&msg);
		}
		ret = TEXTDIFF_BINARY;
		goto out;
	}
	if (split_lines(a, alen, TEXTDIFF_MAX_LINES, &sa) < 0 ||
	    split_lines(b, blen, TEXTDIFF_MAX_LINES, &sb) < 0) {
		struct strbuf msg = STRBUF_INIT;

		strbuf_addf(&msg, "too large to diff: more than %d lines\n", TEXTDIFF_MAX_LINES);
		emit(&e, msg.buf, msg.len);
		strbuf_release(&msg);
		ret = TEXTDIFF_TOO_LARGE;
		goto out;
	}
	number_lines(&sa, &sb);
	run_myers(&sa, &sb);
	if (emit_diff(&e, &sa, &sb, path_a, path_b) < 0)
		ret = -1;
out:
	if (truncated)
		*truncated = e.truncated;
	side_release(&sa);
	side_release(&sb);
	return ret;
}
