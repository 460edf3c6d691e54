/*
 * tool_error.h - the error a tool call gives back to the model (and to the
 * tool.failed event): a stable machine code and a human message.
 */
#ifndef KILN_TOOL_ERROR_H
#define KILN_TOOL_ERROR_H

struct tool_error {
	char code[48];    /* e.g. "path_outside_workspace", "not_found" */
	char message[512];
};

void tool_error_set(struct tool_error *err, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
