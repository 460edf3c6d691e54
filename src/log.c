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

/* "YYYY-MM-DDTHH:MM:SS" of sec, formatted once a second per thread: a busy
 * worker logs a line per request. */
static const char *second_text(time_t sec)
{
	static __thread time_t cached_sec = -1;
	static __thread char text[32];
	struct tm tm;

	if (sec != cached_sec) {
		gmtime_r(&sec, &tm);
		strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
		cached_sec = sec;
	}
	return text;
}

/* "<time> <prog>[pid] <level>: " */
static void record_start(struct strbuf *sb, const char *level)
{
	struct timespec now;
	char ms[4];

	clock_gettime(CLOCK_REALTIME, &now);
	ms[0] = (char)('0' + now.tv_nsec / 100000000);
	ms[1] = (char)('0' + now.tv_nsec / 10000000 % 10);
	ms[2] = (char)('0' + now.tv_nsec / 1000000 % 10);
	ms[3] = '\0';
	strbuf_grow(sb, 160);
	strbuf_addstr(sb, second_text(now.tv_sec));
	strbuf_addch(sb, '.');
	strbuf_addstr(sb, ms);
	strbuf_addstr(sb, "Z ");
	strbuf_addstr(sb, log_prog);
	strbuf_addch(sb, '[');
	strbuf_add_int64(sb, log_pid ? log_pid : getpid());
	strbuf_addstr(sb, "] ");
	strbuf_addstr(sb, level);
	strbuf_addstr(sb, ": ");
}

/* one write(2) per record so lines from many processes do not interleave */
static void record_write(struct strbuf *sb)
{
	strbuf_addch(sb, '\n');
	if (write(STDERR_FILENO, sb->buf, sb->len) < 0) {
		/* nowhere left to report it */
	}
	strbuf_release(sb);
}

static __attribute__((format(printf, 2, 0))) void log_emit(const char *level, const char *fmt,
							 va_list ap)
{
	struct strbuf sb = STRBUF_INIT;

	record_start(&sb, level);
	strbuf_vaddf(&sb, fmt, ap);
	record_write(&sb);
}

void log_info_text(const char *text, size_t len)
{
	struct strbuf sb = STRBUF_INIT;

	record_start(&sb, "info");
	strbuf_add(&sb, text, len);
	record_write(&sb);
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
