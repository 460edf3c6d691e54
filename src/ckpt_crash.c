/* ckpt_crash.c - test-only crash points (see ckpt_crash.h). */
#include "ckpt_crash.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

void ckpt_crash_point(const char *op, unsigned point)
{
	const char *spec = getenv(CKPT_CRASH_ENV);
	size_t oplen = strlen(op);
	unsigned want;

	if (!spec || strncmp(spec, op, oplen) || spec[oplen] != ':')
		return;
	if (parse_uint(spec + oplen + 1, 1000, &want) < 0 || want != point)
		return;
	/* SIGKILL, like the OOM killer or a power cut to the process: no
	 * atexit handlers, no stdio flush, nothing gets to tidy up */
	raise(SIGKILL);
	_exit(99);
}
