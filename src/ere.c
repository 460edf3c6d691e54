/* ere.c - linear-time POSIX extended regular expressions (see ere.h). */
#include "ere.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---- the parse tree ---- */

enum node_kind { N_EMPTY, N_SET, N_ASSERT, N_CAT, N_ALT, N_REPEAT };

enum assertion { A_BOL, A_EOL, A_WORD_BOUNDARY, A_NOT_WORD_BOUNDARY, A_WORD_START,
		 A_WORD_END };

#define REPEAT_UNBOUNDED (-1)

struct node {
	enum node_kind kind;
	int first, next;  /* children of CAT and ALT, and the child of REPEAT;
			   * siblings; -1 for none */
	int arg;          /* SET: set index; ASSERT: enum assertion */
	int min, max;     /* REPEAT */
};

struct byteset {
	uint8_t bits[32];
};

/* ---- the program ---- */

enum op { OP_BYTE, OP_ASSERT, OP_JMP, OP_SPLIT, OP_MATCH };

struct insn {
	uint8_t op;
	uint8_t assertion;
	uint16_t set;
	uint32_t x, y;    /* JMP: x; SPLIT: x and y */
};

struct ere {
	struct insn *prog;
	size_t nprog;
	struct byteset *sets;
	size_t nsets;
	struct byteset first;  /* bytes a match can start with */
	int can_skip;          /* no empty match: lines may skip to first */
	/* scratch for ere_match, sized by nprog */
	uint32_t *mark, gen;
	uint32_t *clist, *nlist, *stack;
};

/* ---- parsing ---- */

struct parser {
	const char *p;
	size_t len, pos;
	struct node *nodes;
	size_t nnodes, anodes;
	struct byteset *sets;
	size_t nsets, asets;
	char *err;
	size_t errlen;
	int failed;
};

static void __attribute__((format(printf, 2, 3))) fail(struct parser *ps, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ps->failed)
		return;
	ps->failed = 1;
	n = snprintf(ps->err, ps->errlen, "at byte %zu: ", ps->pos);
	if (n < 0 || (size_t)n >= ps->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static int new_node(struct parser *ps, enum node_kind kind)
{
	struct node *n;

	if (ps->nnodes == ps->anodes) {
		ps->anodes = ps->anodes ? ps->anodes * 2 : 64;
		ps->nodes = xrealloc(ps->nodes, ps->anodes, sizeof(*ps->nodes));
	}
	n = &ps->nodes[ps->nnodes];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->first = n->next = -1;
	return (int)ps->nnodes++;
}

static struct byteset *new_set(struct parser *ps, int *node)
{
	if (ps->nsets == ps->asets) {
		ps->asets = ps->asets ? ps->asets * 2 : 16;
		ps->sets = xrealloc(ps->sets, ps->asets, sizeof(*ps->sets));
	}
	*node = new_node(ps, N_SET);
	ps->nodes[*node].arg = (int)ps->nsets;
	memset(&ps->sets[ps->nsets], 0, sizeof(ps->sets[0]));
	return &ps->sets[ps->nsets++];
}

static void set_add(struct byteset *s, unsigned c)
{
	s->bits[c >> 3] |= (uint8_t)(1u << (c & 7));
}

static int set_has(const struct byteset *s, unsigned c)
{
	return s->bits[c >> 3] >> (c & 7) & 1;
}

static void set_invert(struct byteset *s)
{
	for (size_t i = 0; i < sizeof(s->bits); i++)
		s->bits[i] = (uint8_t)~s->bits[i];
}

static int is_word_byte(unsigned c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_';
}

/* The POSIX classes, C locale. */
static int class_has(const char *name, unsigned c)
{
	int upper = c >= 'A' && c <= 'Z', lower = c >= 'a' && c <= 'z';
	int digit = c >= '0' && c <= '9', print = c >= 0x20 && c < 0x7f;

	if (!strcmp(name, "alpha"))
		return upper || lower;
	if (!strcmp(name, "digit"))
		return digit;
	if (!strcmp(name, "alnum"))
		return upper || lower || digit;
	if (!strcmp(name, "upper"))
		return upper;
	if (!strcmp(name, "lower"))
		return lower;
	if (!strcmp(name, "space"))
		return c == ' ' || (c >= '\t' && c <= '\r');
	if (!strcmp(name, "blank"))
		return c == ' ' || c == '\t';
	if (!strcmp(name, "punct"))
		return print && c != ' ' && !upper && !lower && !digit;
	if (!strcmp(name, "print"))
		return print;
	if (!strcmp(name, "graph"))
		return print && c != ' ';
	if (!strcmp(name, "cntrl"))
		return c < 0x20 || c == 0x7f;
	if (!strcmp(name, "xdigit"))
		return digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
	return -1;
}

static int add_class(struct byteset *s, const char *name)
{
	if (class_has(name, 'a') < 0)
		return -1;
	for (unsigned c = 0; c < 256; c++)
		if (class_has(name, c))
			set_add(s, c);
	return 0;
}

static int at_end(const struct parser *ps)
{
	return ps->pos >= ps->len;
}

static unsigned char peek(const struct parser *ps)
{
	return (unsigned char)ps->p[ps->pos];
}

/* Inside brackets: "[:name:]", "[=c=]" or "[.c.]" starting at pos (at the
 * '['). Returns the kind (':', '=', '.') with *name / *c filled, 0 if pos
 * does not start one. */
static int bracket_special(struct parser *ps, char *name, size_t namecap, unsigned *c)
{
	size_t start = ps->pos + 2, end;
	char kind;

	if (ps->pos + 1 >= ps->len || ps->p[ps->pos] != '[')
		return 0;
	kind = ps->p[ps->pos + 1];
	if (kind != ':' && kind != '=' && kind != '.')
		return 0;
	for (end = start; end + 1 < ps->len; end++)
		if (ps->p[end] == kind && ps->p[end + 1] == ']')
			break;
	if (end + 1 >= ps->len) {
		fail(ps, "unterminated [%c in a bracket expression", kind);
		return -1;
	}
	if (kind == ':') {
		if (end - start >= namecap) {
			fail(ps, "unknown character class");
			return -1;
		}
		memcpy(name, ps->p + start, end - start);
		name[end - start] = '\0';
	} else if (end - start != 1) {
		fail(ps, "only single-byte collating elements and equivalence classes are supported");
		return -1;
	} else {
		*c = (unsigned char)ps->p[start];
	}
	ps->pos = end + 2;
	return kind;
}

/* One endpoint of a range: a byte or [.c.] / [=c=]. */
static int bracket_byte(struct parser *ps, unsigned *c)
{
	char name[16];
	int k = bracket_special(ps, name, sizeof(name), c);

	if (k < 0)
		return -1;
	if (k == ':') {
		fail(ps, "a character class cannot be a range endpoint");
		return -1;
	}
	if (!k)
		*c = (unsigned char)ps->p[ps->pos++];
	return 0;
}

/* At the byte after '['. */
static int parse_bracket(struct parser *ps)
{
	size_t open = ps->pos - 1;
	struct byteset *s;
	int node, negate = 0, first = 1;

	s = new_set(ps, &node);
	if (!at_end(ps) && peek(ps) == '^') {
		negate = 1;
		ps->pos++;
	}
	for (;;) {
		char name[16];
		unsigned lo, hi;
		int k;

		if (at_end(ps)) {
			ps->pos = open;
			fail(ps, "unmatched [");
			return -1;
		}
		if (peek(ps) == ']' && !first) {
			ps->pos++;
			break;
		}
		first = 0;
		k = bracket_special(ps, name, sizeof(name), &lo);
		if (k < 0)
			return -1;
		if (k == ':') {
			if (add_class(s, name) < 0) {
				fail(ps, "unknown character class [:%s:]", name);
				return -1;
			}
			continue;
		}
		if (!k)
			lo = (unsigned char)ps->p[ps->pos++];
		hi = lo;
		if (ps->pos + 1 < ps->len && peek(ps) == '-' && ps->p[ps->pos + 1] != ']') {
			ps->pos++;
			if (bracket_byte(ps, &hi) < 0)
				return -1;
			if (hi < lo) {
				fail(ps, "invalid range: the end is below the start");
				return -1;
			}
		}
		for (unsigned c = lo; c <= hi; c++)
			set_add(s, c);
	}
	if (negate)
		set_invert(s);
	return node;
}

static int assertion_node(struct parser *ps, enum assertion a)
{
	int n = new_node(ps, N_ASSERT);

	ps->nodes[n].arg = a;
	return n;
}

static int byte_node(struct parser *ps, unsigned c)
{
	int n;

	set_add(new_set(ps, &n), c);
	return n;
}

/* At the byte after '\'. */
static int parse_escape(struct parser *ps)
{
	struct byteset *s;
	unsigned char c;
	int n;

	if (at_end(ps)) {
		fail(ps, "the pattern ends with a lone backslash");
		return -1;
	}
	c = (unsigned char)ps->p[ps->pos++];
	switch (c) {
	case 'w': case 'W': case 's': case 'S': case 'd': case 'D':
		s = new_set(ps, &n);
		for (unsigned b = 0; b < 256; b++) {
			int in = c == 'w' || c == 'W' ? is_word_byte(b)
				 : c == 's' || c == 'S' ? class_has("space", b)
				 : (b >= '0' && b <= '9');

			if (in)
				set_add(s, b);
		}
		if (c == 'W' || c == 'S' || c == 'D')
			set_invert(s);
		return n;
	case 'b':
		return assertion_node(ps, A_WORD_BOUNDARY);
	case 'B':
		return assertion_node(ps, A_NOT_WORD_BOUNDARY);
	case '<':
		return assertion_node(ps, A_WORD_START);
	case '>':
		return assertion_node(ps, A_WORD_END);
	case 't':
		return byte_node(ps, '\t');
	case 'n':
		return byte_node(ps, '\n');
	case 'r':
		return byte_node(ps, '\r');
	default:
		if (c >= '1' && c <= '9') {
			ps->pos--;
			fail(ps, "back-references (\\1 ... \\9) are not supported");
			return -1;
		}
		return byte_node(ps, c);
	}
}

static int parse_alt(struct parser *ps, int depth);

static int parse_atom(struct parser *ps, int depth)
{
	unsigned char c = (unsigned char)ps->p[ps->pos++];
	struct byteset *s;
	int n;

	switch (c) {
	case '(':
		if (depth >= ERE_MAX_DEPTH) {
			ps->pos--;
			fail(ps, "groups nest deeper than %d", ERE_MAX_DEPTH);
			return -1;
		}
		n = parse_alt(ps, depth + 1);
		if (n < 0)
			return -1;
		if (at_end(ps) || peek(ps) != ')') {
			fail(ps, "unmatched (");
			return -1;
		}
		ps->pos++;
		return n;
	case ')':
		ps->pos--;
		fail(ps, "unmatched )");
		return -1;
	case '.':
		s = new_set(ps, &n);
		set_invert(s);
		return n;
	case '^':
		return assertion_node(ps, A_BOL);
	case '$':
		return assertion_node(ps, A_EOL);
	case '[':
		return parse_bracket(ps);
	case '\\':
		return parse_escape(ps);
	case '*': case '+': case '?': case '{':
		ps->pos--;
		fail(ps, "'%c' has nothing before it to repeat (write \\%c for the character)",
		     c, c);
		return -1;
	default:
		return byte_node(ps, c);
	}
}

/* Digits of a {m,n} bound; -1 when there are none. */
static int parse_count(struct parser *ps)
{
	int v = -1;

	while (!at_end(ps) && peek(ps) >= '0' && peek(ps) <= '9') {
		v = (v < 0 ? 0 : v) * 10 + (peek(ps) - '0');
		if (v > ERE_MAX_REPEAT) {
			fail(ps, "repeat counts are limited to %d", ERE_MAX_REPEAT);
			return -2;
		}
		ps->pos++;
	}
	return v;
}

/* At '{'. */
static int parse_interval(struct parser *ps, int *min, int *max)
{
	size_t open = ps->pos++;

	*min = parse_count(ps);
	if (*min == -2)
		return -1;
	*max = *min;
	if (*min >= 0 && !at_end(ps) && peek(ps) == ',') {
		ps->pos++;
		*max = parse_count(ps);
		if (*max == -2)
			return -1;
		if (*max < 0)
			*max = REPEAT_UNBOUNDED;
	}
	if (*min < 0 || at_end(ps) || peek(ps) != '}') {
		ps->pos = open;
		fail(ps, "invalid repeat: write {m}, {m,} or {m,n} with m, n at most %d, "
		     "or \\{ for a brace", ERE_MAX_REPEAT);
		return -1;
	}
	ps->pos++;
	if (*max != REPEAT_UNBOUNDED && *max < *min) {
		ps->pos = open;
		fail(ps, "invalid repeat: {%d,%d} has its maximum below its minimum", *min, *max);
		return -1;
	}
	return 0;
}

static int parse_piece(struct parser *ps, int depth)
{
	int atom = parse_atom(ps, depth);

	while (atom >= 0 && !at_end(ps)) {
		unsigned char c = peek(ps);
		int min, max, r;

		if (c == '*' || c == '+' || c == '?') {
			ps->pos++;
			min = c == '+';
			max = c == '?' ? 1 : REPEAT_UNBOUNDED;
		} else if (c == '{') {
			if (parse_interval(ps, &min, &max) < 0)
				return -1;
		} else {
			break;
		}
		r = new_node(ps, N_REPEAT);
		ps->nodes[r].first = atom;
		ps->nodes[r].min = min;
		ps->nodes[r].max = max;
		atom = r;
	}
	return atom;
}

/* A node with the children linked from first, or the only child itself. */
static int list_node(struct parser *ps, enum node_kind kind, int first, int count)
{
	int n;

	if (count == 1)
		return first;
	n = new_node(ps, count ? kind : N_EMPTY);
	ps->nodes[n].first = count ? first : -1;
	return n;
}

/* Appends node to the sibling list first..last. */
static void link_sibling(struct parser *ps, int *first, int *last, int node)
{
	if (*last >= 0)
		ps->nodes[*last].next = node;
	else
		*first = node;
	*last = node;
}

static int parse_branch(struct parser *ps, int depth)
{
	int first = -1, last = -1, count = 0;

	while (!at_end(ps) && peek(ps) != '|' && peek(ps) != ')') {
		int piece = parse_piece(ps, depth);

		if (piece < 0)
			return -1;
		link_sibling(ps, &first, &last, piece);
		count++;
	}
	return list_node(ps, N_CAT, first, count);
}

static int parse_alt(struct parser *ps, int depth)
{
	int first = -1, last = -1, count = 0;

	for (;;) {
		int branch = parse_branch(ps, depth);

		if (branch < 0)
			return -1;
		link_sibling(ps, &first, &last, branch);
		count++;
		if (at_end(ps) || peek(ps) != '|')
			break;
		ps->pos++;
	}
	return list_node(ps, N_ALT, first, count);
}

/* ---- compiling ---- */

/* Instructions node compiles to, saturating at ERE_MAX_PROGRAM + 1. Must
 * agree with emit(). */
static size_t node_size(const struct parser *ps, int idx)
{
	const size_t over = ERE_MAX_PROGRAM + 1;
	const struct node *n = &ps->nodes[idx];
	size_t total = 0, e;
	int c;

	switch (n->kind) {
	case N_EMPTY:
		return 0;
	case N_SET:
	case N_ASSERT:
		return 1;
	case N_CAT:
	case N_ALT:
		for (c = n->first; c >= 0; c = ps->nodes[c].next) {
			total += node_size(ps, c) + (n->kind == N_ALT && ps->nodes[c].next >= 0 ? 2 : 0);
			if (total > over)
				return over;
		}
		return total;
	case N_REPEAT:
		e = node_size(ps, n->first);
		if (e >= over)
			return over;
		if (n->max == REPEAT_UNBOUNDED)
			/* min copies and a loop back (a star: one copy, 2) */
			total = n->min ? (size_t)n->min * e + 1 : e + 2;
		else
			/* min copies, then each optional copy behind a split */
			total = (size_t)n->min * e + (size_t)(n->max - n->min) * (e + 1);
		return total > over ? over : total;
	}
	return over;
}

struct emitter {
	const struct parser *ps;
	struct insn *prog;
	size_t n;
};

static size_t push(struct emitter *em, enum op op)
{
	struct insn *i = &em->prog[em->n];

	memset(i, 0, sizeof(*i));
	i->op = (uint8_t)op;
	return em->n++;
}

#define NO_TARGET UINT32_MAX

/* Points every instruction on a chain (linked through *field, ending in
 * NO_TARGET) at target. */
static void patch_chain(struct emitter *em, uint32_t chain, int via_y, uint32_t target)
{
	while (chain != NO_TARGET) {
		uint32_t *field = via_y ? &em->prog[chain].y : &em->prog[chain].x;

		chain = *field;
		*field = target;
	}
}

static void emit(struct emitter *em, int idx)
{
	const struct node *n = &em->ps->nodes[idx];
	uint32_t pending = NO_TARGET;
	size_t split, loop, k;
	int c;

	switch (n->kind) {
	case N_EMPTY:
		return;
	case N_SET:
		em->prog[push(em, OP_BYTE)].set = (uint16_t)n->arg;
		return;
	case N_ASSERT:
		em->prog[push(em, OP_ASSERT)].assertion = (uint8_t)n->arg;
		return;
	case N_CAT:
		for (c = n->first; c >= 0; c = em->ps->nodes[c].next)
			emit(em, c);
		return;
	case N_ALT:
		/* SPLIT a,next; a; JMP end; SPLIT b,next; b; JMP end; c; end: */
		for (c = n->first; c >= 0; c = em->ps->nodes[c].next) {
			if (em->ps->nodes[c].next < 0) {
				emit(em, c);
				break;
			}
			split = push(em, OP_SPLIT);
			em->prog[split].x = (uint32_t)em->n;
			emit(em, c);
			k = push(em, OP_JMP);
			em->prog[k].x = pending;
			pending = (uint32_t)k;
			em->prog[split].y = (uint32_t)em->n;
		}
		patch_chain(em, pending, 0, (uint32_t)em->n);
		return;
	case N_REPEAT:
		if (n->max == REPEAT_UNBOUNDED && n->min == 0) {
			/* L: SPLIT body,end; body; JMP L; end: */
			loop = push(em, OP_SPLIT);
			em->prog[loop].x = (uint32_t)em->n;
			emit(em, n->first);
			em->prog[push(em, OP_JMP)].x = (uint32_t)loop;
			em->prog[loop].y = (uint32_t)em->n;
			return;
		}
		if (n->max == REPEAT_UNBOUNDED) {
			/* body x (min-1); L: body; SPLIT L,end; end: */
			for (c = 1; c < n->min; c++)
				emit(em, n->first);
			loop = em->n;
			emit(em, n->first);
			split = push(em, OP_SPLIT);
			em->prog[split].x = (uint32_t)loop;
			em->prog[split].y = (uint32_t)em->n;
			return;
		}
		/* body x min; then (SPLIT next,end; body) x (max-min); end: */
		for (c = 0; c < n->min; c++)
			emit(em, n->first);
		for (c = n->min; c < n->max; c++) {
			split = push(em, OP_SPLIT);
			em->prog[split].x = (uint32_t)em->n;
			em->prog[split].y = pending;
			pending = (uint32_t)split;
			emit(em, n->first);
		}
		patch_chain(em, pending, 1, (uint32_t)em->n);
		return;
	}
}

static void first_bytes(struct ere *re);

int ere_compile(const char *pat, size_t len, struct ere **out, char *err, size_t errlen)
{
	struct parser ps;
	struct emitter em;
	struct ere *re = NULL;
	size_t size;
	int root, ret = -1;

	*out = NULL;
	memset(&ps, 0, sizeof(ps));
	ps.p = pat;
	ps.len = len;
	ps.err = err;
	ps.errlen = errlen;
	if (errlen)
		err[0] = '\0';
	if (len > ERE_PATTERN_MAX || memchr(pat, '\0', len)) {
		fail(&ps, "patterns are at most %d bytes, without NUL", ERE_PATTERN_MAX);
		goto out;
	}
	root = parse_alt(&ps, 0);
	if (root < 0)
		goto out;
	if (!at_end(&ps)) {
		fail(&ps, "unmatched )");
		goto out;
	}
	size = node_size(&ps, root);
	if (size > ERE_MAX_PROGRAM) {
		ps.pos = 0;
		fail(&ps, "the pattern expands to more than %d steps: each counted repeat "
		     "copies what it repeats, so nested ones multiply; simplify it",
		     ERE_MAX_PROGRAM);
		goto out;
	}
	re = xcalloc(1, sizeof(*re));
	re->nprog = size + 1;
	re->prog = xcalloc(re->nprog, sizeof(*re->prog));
	em.ps = &ps;
	em.prog = re->prog;
	em.n = 0;
	emit(&em, root);
	push(&em, OP_MATCH);
	re->sets = ps.sets;
	re->nsets = ps.nsets;
	ps.sets = NULL;
	re->mark = xcalloc(re->nprog, sizeof(*re->mark));
	re->clist = xcalloc(re->nprog, sizeof(*re->clist));
	re->nlist = xcalloc(re->nprog, sizeof(*re->nlist));
	/* every push marks or follows a not yet marked instruction, and a
	 * split pushes two: 2n + 1 bounds the stack */
	re->stack = xcalloc(2 * re->nprog + 1, sizeof(*re->stack));
	first_bytes(re);
	*out = re;
	ret = 0;
out:
	free(ps.nodes);
	free(ps.sets);
	return ret;
}

void ere_free(struct ere *re)
{
	if (!re)
		return;
	free(re->prog);
	free(re->sets);
	free(re->mark);
	free(re->clist);
	free(re->nlist);
	free(re->stack);
	free(re);
}

/* ---- matching ---- */

/* s NULL: any text, where every assertion may hold. */
static int assertion_holds(unsigned a, const unsigned char *s, size_t len, size_t pos)
{
	int before, after;

	if (!s)
		return 1;
	before = pos > 0 && is_word_byte(s[pos - 1]);
	after = pos < len && is_word_byte(s[pos]);
	switch (a) {
	case A_BOL:
		return pos == 0;
	case A_EOL:
		return pos == len;
	case A_WORD_BOUNDARY:
		return before != after;
	case A_NOT_WORD_BOUNDARY:
		return before == after;
	case A_WORD_START:
		return !before && after;
	case A_WORD_END:
		return before && !after;
	}
	return 0;
}

/* Adds the threads reachable from pc at pos without consuming to list.
 * Returns 1 when one of them is MATCH. */
static int add_thread(struct ere *re, uint32_t *list, size_t *n, uint32_t pc,
		      const unsigned char *s, size_t len, size_t pos, uint64_t *steps)
{
	uint32_t *stack = re->stack, top = 0;

	stack[top++] = pc;
	while (top) {
		const struct insn *i;

		pc = stack[--top];
		if (re->mark[pc] == re->gen)
			continue;
		re->mark[pc] = re->gen;
		(*steps)++;
		i = &re->prog[pc];
		switch (i->op) {
		case OP_MATCH:
			return 1;
		case OP_BYTE:
			list[(*n)++] = pc;
			break;
		case OP_ASSERT:
			if (assertion_holds(i->assertion, s, len, pos))
				stack[top++] = pc + 1;
			break;
		case OP_JMP:
			stack[top++] = i->x;
			break;
		case OP_SPLIT:
			stack[top++] = i->y;
			stack[top++] = i->x;
			break;
		}
	}
	return 0;
}

/* The bytes a match can start with: those of the consuming instructions
 * reachable from the start, whatever the assertions on the way say (an
 * over-approximation, which is what skipping needs). No skipping when the
 * empty string may match. */
static void first_bytes(struct ere *re)
{
	uint64_t steps = 0;
	size_t n = 0;

	memset(&re->first, 0, sizeof(re->first));
	re->gen++;
	re->can_skip = !add_thread(re, re->clist, &n, 0, NULL, 0, 0, &steps);
	for (size_t k = 0; k < n; k++)
		for (size_t b = 0; b < sizeof(re->first.bits); b++)
			re->first.bits[b] |= re->sets[re->prog[re->clist[k]].set].bits[b];
}

int ere_match(struct ere *re, const char *text, size_t len, uint64_t *budget)
{
	const unsigned char *s = (const unsigned char *)text;
	uint64_t steps = 0;
	size_t nc = 0, nn, pos = 0;
	uint32_t *swap;
	int ret = 0;

	for (;;) {
		if (steps >= *budget) {
			ret = -1;
			break;
		}
		if (nc == 0) {
			/* no attempt alive: only a fresh one at pos, which needs
			 * a byte that can start a match */
			size_t from = pos;

			if (re->can_skip)
				while (pos < len && !set_has(&re->first, s[pos]))
					pos++;
			steps += pos - from;
			re->gen++;
		}
		if (add_thread(re, re->clist, &nc, 0, s, len, pos, &steps)) {
			ret = 1;
			break;
		}
		if (pos == len)
			break;
		re->gen++;
		nn = 0;
		steps++;
		for (size_t k = 0; k < nc; k++) {
			const struct insn *i = &re->prog[re->clist[k]];

			steps++;
			if (set_has(&re->sets[i->set], s[pos]) &&
			    add_thread(re, re->nlist, &nn, re->clist[k] + 1, s, len, pos + 1,
				       &steps)) {
				ret = 1;
				goto out;
			}
		}
		swap = re->clist;
		re->clist = re->nlist;
		re->nlist = swap;
		nc = nn;
		pos++;
	}
out:
	*budget = steps >= *budget ? 0 : *budget - steps;
	return ret;
}
