/* log.c - single-line log records on stderr (see log.h). */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "strbuf.h"

static const char *log_prog = "kiln";
static pid_t log_pid; /* getpid() of the process that last set its name */

static void log_forget_pid(void)
{
	log_pid = 0; /* a forked child is another process: ask again */
}

void log_set_prog(const char *prog)
{
	static int registered;

	if (!registered) {
		pthread_atfork(NULL, NULL, log_forget_pid);
		registered = 1;
	}
	log_prog = prog;
	log_pid = getpid();
}

static __attribute__((format(printf, 2, 0))) void log_emit(const char *level, const char *fmt,
							 va_list ap)
{
	struct strbuf sb = STRBUF_INIT;
	char ts[32];
	struct timespec now;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	strbuf_addf(&sb, "%s.%03ldZ %s[%d] %s: ", ts, now.tv_nsec / 1000000,
		    log_prog, (int)(log_pid ? log_pid : getpid()), level);
	strbuf_vaddf(&sb, fmt, ap);
	strbuf_addch(&sb, '\n');
	/* one write(2) per record so lines from many processes do not interleave */
	if (write(STDERR_FILENO, sb.buf, sb.len) < 0) {
		/* nowhere left to report it */
	}
	strbuf_release(&sb);
}

#define LOG_FN(name, level)                     \
	void name(const char *fmt, ...)          \
	{                                        \
		va_list ap;                      \
		va_start(ap, fmt);               \
		log_emit(level, fmt, ap);        \
		va_end(ap);                      \
	}

LOG_FN(log_info, "info")
LOG_FN(log_warn, "warn")
LOG_FN(log_error, "error")
