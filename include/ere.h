/*
 * ere.h - the regular expressions of search_files: POSIX extended syntax,
 * matched in time linear in the text and memory fixed at compile time.
 *
 *   ere_compile   parse, check and compile a pattern
 *   ere_match     does a line contain a match? (within a work budget)
 *   ere_free
 *
 * The model writes the patterns, so a pattern is hostile input. glibc's
 * regcomp expands counted repeats into copies without bound
 * (((a{1,100}){1,100}){1,100} took 1.2 GB) and its lazy DFA keeps every
 * state it builds, so (a|b)*a(a|b){18} over a few MB of text takes minutes
 * and memory in proportion. Here a pattern is compiled into a program of at
 * most ERE_MAX_PROGRAM instructions (counted repeats are copies, so nested
 * ones multiply and are refused past that) and run as a Thompson NFA: each
 * byte of text costs at most one step per instruction, and the work of
 * every call is charged to a budget the caller sets.
 *
 * Syntax (bytes, as in the C locale; case-sensitive):
 *   x  any byte but the specials below     .  any byte
 *   [abc] [a-z] [^x] [[:alpha:]] [[:digit:]] ... (POSIX classes, ASCII);
 *         in brackets '\' is an ordinary byte, ']' first is literal
 *   ^ $   start and end of the line
 *   ( )   group        a|b  alternatives
 *   * + ? {m} {m,} {m,n}   repeats, m and n at most ERE_MAX_REPEAT
 *   \w \W \s \S \d \D  word (alnum and _), space, digit and their negations
 *   \b \B \< \>        word boundary, not one, start and end of a word
 *   \t \n \r           tab, newline, carriage return
 *   \x for any other x: x itself (\. \* \( \{ \\ ...)
 * Back-references (\1 to \9) are refused: they cannot be matched in linear
 * time. A quantifier with nothing before it, an unmatched parenthesis or
 * bracket and a malformed {..} are errors.
 */
#ifndef KILN_ERE_H
#define KILN_ERE_H

#include <stddef.h>
#include <stdint.h>

#define ERE_PATTERN_MAX 1024  /* bytes of pattern */
#define ERE_MAX_DEPTH 32      /* nested groups */
#define ERE_MAX_REPEAT 255    /* largest m or n in {m,n} */
#define ERE_MAX_PROGRAM 4096  /* compiled instructions */

struct ere;

/* Compiles pat[0..len) (NUL bytes are refused). Returns 0 with *out set,
 * or -1 with a message naming the problem and its byte offset in err. */
int ere_compile(const char *pat, size_t len, struct ere **out, char *err,
		size_t errlen);

/* 1 if s[0..len) contains a match, 0 if not, -1 if *budget ran out first
 * (the answer is then unknown). Every step taken is subtracted from
 * *budget: one per byte scanned and one per instruction visited. */
int ere_match(struct ere *re, const char *s, size_t len, uint64_t *budget);

void ere_free(struct ere *re);

#endif
