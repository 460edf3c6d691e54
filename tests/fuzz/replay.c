/*
 * replay.c - runs a fuzz target's saved inputs once each, without libFuzzer.
 *
 * Linked with one tests/fuzz/fuzz_<name>.c (built with the ordinary
 * compiler and flags, so `make asan` gives it the sanitizers), it feeds
 * LLVMFuzzerTestOneInput every regular file of the folders (or the files)
 * named on its command line, in name order. This is how `make test` keeps
 * every corpus input and every crash reproducer a regression test (see
 * tests/fuzz/README.md).
 *
 * Each input runs in a child process of its own: a crash, an abort, a
 * sanitizer report or a hang (KILN_REPLAY_TIMEOUT_S, default 60 s) fails
 * that input alone, names it, and shows what the child printed. Ends with
 * "<target> replay: N passed, N failed"; exits 1 if any failed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fileutil.h"
#include "strbuf.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* No saved input is anywhere near this; a bigger file is a mistake. */
#define MAX_INPUT_BYTES (64u << 20)
/* How much of a failed child's output is shown. */
#define MAX_SHOWN_OUTPUT 8192
#define DEFAULT_TIMEOUT_S 60

struct tally {
	const char *target;
	unsigned timeout_s;
	int passed, failed;
};

/* The child: one input through the target, then a normal exit so that
 * LeakSanitizer (under make asan) checks for leaks. */
static void run_child(const char *path, unsigned timeout_s, int out_fd)
{
	static const uint8_t empty[1];
	struct strbuf data = STRBUF_INIT;
	int ret;

	if (dup2(out_fd, STDOUT_FILENO) < 0 || dup2(out_fd, STDERR_FILENO) < 0)
		_exit(125);
	alarm(timeout_s);
	ret = file_read_capped(path, MAX_INPUT_BYTES, &data);
	if (ret < 0) {
		fprintf(stderr, "cannot read %s: %s\n", path, strerror(-ret));
		_exit(125);
	}
	LLVMFuzzerTestOneInput(data.len ? (const uint8_t *)data.buf : empty, data.len);
	strbuf_release(&data);
	fflush(NULL);
	exit(0);
}

/* What the failed child printed (the sanitizer's report), indented. */
static void show_output(FILE *out)
{
	char buf[MAX_SHOWN_OUTPUT];
	size_t n, i;
	int at_line_start = 1;

	rewind(out);
	n = fread(buf, 1, sizeof(buf), out);
	for (i = 0; i < n; i++) {
		if (at_line_start)
			fputs("     | ", stdout);
		putchar(buf[i]);
		at_line_start = buf[i] == '\n';
	}
	if (n == sizeof(buf))
		puts(" [...]");
	else if (!at_line_start)
		putchar('\n');
}

static void replay_one(struct tally *t, const char *path)
{
	FILE *out = tmpfile();
	pid_t pid, waited = -1;
	int status = 0;

	if (!out) {
		printf("FAIL %s %s: no temporary file: %s\n", t->target, path, strerror(errno));
		t->failed++;
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid == 0)
		run_child(path, t->timeout_s, fileno(out));
	while (pid > 0 && (waited = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
		;
	if (pid < 0 || waited < 0) {
		printf("FAIL %s %s: cannot %s: %s\n", t->target, path, pid < 0 ? "fork" : "wait",
		       strerror(errno));
		t->failed++;
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		t->passed++;
	} else {
		if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
			printf("FAIL %s %s: still running after %u s\n", t->target, path, t->timeout_s);
		else if (WIFSIGNALED(status))
			printf("FAIL %s %s: killed by signal %d (%s)\n", t->target, path,
			       WTERMSIG(status), strsignal(WTERMSIG(status)));
		else
			printf("FAIL %s %s: exit status %d\n", t->target, path, WEXITSTATUS(status));
		show_output(out);
		t->failed++;
	}
	fclose(out);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file directly in dir, in name order. */
static void replay_dir(struct tally *t, const char *dir)
{
	struct strbuf path = STRBUF_INIT;
	char **names = NULL;
	size_t n = 0, alloc = 0, i;
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d) {
		printf("FAIL %s %s: cannot open: %s\n", t->target, dir, strerror(errno));
		t->failed++;
		return;
	}
	while ((de = readdir(d))) {
		struct stat st;

		strbuf_reset(&path);
		strbuf_addf(&path, "%s/%s", dir, de->d_name);
		if (lstat(path.buf, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (n == alloc) {
			alloc = alloc ? 2 * alloc : 64;
			names = xrealloc(names, alloc, sizeof(*names));
		}
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), by_name);
	for (i = 0; i < n; i++) {
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/%s", dir, names[i]);
		replay_one(t, path.buf);
		free(names[i]);
	}
	free(names);
	strbuf_release(&path);
}

int main(int argc, char **argv)
{
	const char *slash = strrchr(argv[0], '/');
	const char *limit = getenv("KILN_REPLAY_TIMEOUT_S");
	struct tally t = { slash ? slash + 1 : argv[0], DEFAULT_TIMEOUT_S, 0, 0 };
	int i;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FOLDER-OR-FILE...\n", argv[0]);
		return 2;
	}
	if (limit && *limit && (parse_uint(limit, 86400, &t.timeout_s) < 0 || !t.timeout_s)) {
		fprintf(stderr, "KILN_REPLAY_TIMEOUT_S must be 1 to 86400 seconds\n");
		return 2;
	}
	for (i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			replay_dir(&t, argv[i]);
		else
			replay_one(&t, argv[i]);
	}
	printf("%s replay: %d passed, %d failed\n", t.target, t.passed, t.failed);
	return t.failed ? 1 : 0;
}
