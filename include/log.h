/*
 * log.h - one line per event on stderr: "<iso time> <prog>[pid] <level>: msg".
 *
 * Nothing secret is ever passed in: callers log ids and codes, never tokens,
 * keys or database passwords.
 */
#ifndef KILN_LOG_H
#define KILN_LOG_H

#include <stddef.h>

void log_set_prog(const char *prog);
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An info record whose text the caller built (no format): hot paths. */
void log_info_text(const char *text, size_t len);

#endif
