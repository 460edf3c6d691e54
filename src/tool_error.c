/* tool_error.c - filling a tool_error (see tool_error.h). */
#include "tool_error.h"

#include <stdarg.h>
#include <stdio.h>

void tool_error_set(struct tool_error *err, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	snprintf(err->code, sizeof(err->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}
