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
	char num[8];
	const char *n, *colon;
	unsigned want;

	if (!spec || strncmp(spec, op, oplen) || spec[oplen] != ':')
		return;
	n = spec + oplen + 1;
	colon = strchr(n, ':');
	if ((colon ? (size_t)(colon - n) : strlen(n)) >= sizeof(num))
		return;
	memcpy(num, n, colon ? (size_t)(colon - n) : strlen(n) + 1);
	num[colon ? (size_t)(colon - n) : strlen(n)] = '\0';
	if (parse_uint(num, 1000, &want) < 0 || want != point)
		return;
	if (colon && !strcmp(colon + 1, "parent"))
		kill(getppid(), SIGKILL);
	/* SIGKILL, like the OOM killer or a power cut to the process: no
	 * atexit handlers, no stdio flush, nothing gets to tidy up */
	raise(SIGKILL);
	_exit(99);
}
