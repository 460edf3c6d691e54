/*
 * sse-load - holds many SSE streams of Kiln runs open from one process
 * (epoll, non-blocking sockets) and checks what arrives.
 *
 *   sse-load --port N --token T --targets FILE --streams N
 *            [--host 127.0.0.1] [--timeout S] [--hold S] [--inflight N]
 *
 * FILE has one "app_id run_id" line per run; stream i follows run i % nruns.
 * Every stream sends GET /admin/apps/A/coding-agent/runs/R/stream over
 * HTTP/1.1 (nginx answers chunked) and parses the events: each event's id
 * must be the previous one + 1 (else it counts as a gap or a duplicate), the
 * stream must end after a terminal event (run.completed / run.failed), and
 * the "ts" of every event created after the stream opened gives one latency
 * sample (receive time - ts, same host clock; ts has millisecond resolution).
 *
 * Prints "open N FAILED" once every stream has its response head, then at
 * the end one JSON object: totals, latency percentiles and, per run, how
 * many events its streams got. Ends when every stream is closed, after
 * --hold seconds once all are open (then it closes them), or at --timeout.
 * Exit status 0 when every stream opened with 200; the checks are for the
 * caller to judge.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_CAP 16384
#define LINE_CAP (1024 * 1024)
#define MAX_STREAMS 200000
#define MAX_SAMPLES (4 * 1024 * 1024)

enum conn_state { C_IDLE, C_CONNECTING, C_HEAD, C_BODY, C_DONE };
enum chunk_state { K_SIZE, K_DATA, K_DATA_END, K_TRAILER };

struct target {
	long long app_id, run_id;
	unsigned streams;
	long long min_events, max_events, min_last, max_last;
};

struct conn {
	int fd;
	enum conn_state state;
	struct target *t;
	char *req;              /* the request text */
	size_t req_len, req_off;
	char head[HEAD_CAP];
	size_t head_len;
	int status;
	int chunked;
	enum chunk_state ks;
	unsigned long long chunk_left;
	char size_line[32];
	size_t size_len;
	char *line;             /* the SSE line being assembled */
	size_t line_len, line_alloc;
	long long ev_id;        /* of the event being assembled, -1 if none */
	int ev_terminal;
	long long ev_ts_ms;     /* -1 if none */
	long long last_id;
	long long events;
	int64_t open_ms;        /* wall clock when the head arrived */
	int terminal_seen;
	unsigned gaps, dups;
};

struct totals {
	size_t pending, open;   /* streams now waiting for their head / open */
	unsigned opened, failed_open, http_errors, closed_early, unfinished, terminal;
	unsigned long long events, gaps, dups;
	int64_t all_open_ms;
};

static struct conn *conns;
static struct target *targets;
static size_t nconns, ntargets;
static int64_t *samples;
static size_t nsamples;
static int epfd;
static struct totals tot;

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die(const char *what)
{
	fprintf(stderr, "sse-load: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);

	if (!p)
		die("out of memory");
	return p;
}

static int parse_num(const char *s, long long lo, long long hi, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" -> ms since the epoch, or -1. */
static long long parse_ts(const char *s)
{
	struct tm tm;
	int ms;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end || end[0] != '.' || end[1] < '0' || end[1] > '9' || end[2] < '0' ||
	    end[2] > '9' || end[3] < '0' || end[3] > '9' || end[4] != 'Z')
		return -1;
	ms = (end[1] - '0') * 100 + (end[2] - '0') * 10 + (end[3] - '0');
	return (long long)timegm(&tm) * 1000 + ms;
}

static void add_sample(int64_t v)
{
	if (nsamples < MAX_SAMPLES)
		samples[nsamples++] = v;
}

static void dispatch_event(struct conn *c)
{
	if (c->ev_id < 0)
		return; /* a comment-only block (keep-alive) or a retry: line */
	c->events++;
	tot.events++;
	if (c->ev_id == c->last_id + 1) {
		c->last_id = c->ev_id;
	} else if (c->ev_id <= c->last_id) {
		c->dups++;
		tot.dups++;
	} else {
		c->gaps++;
		tot.gaps++;
		c->last_id = c->ev_id;
	}
	/* Only events created after the stream opened measure delivery; the
	 * replay of older ones measures nothing but the wait. */
	if (c->ev_ts_ms >= 0 && c->ev_ts_ms >= c->open_ms)
		add_sample(wall_ms() - c->ev_ts_ms);
	if (c->ev_terminal && !c->terminal_seen) {
		c->terminal_seen = 1;
		tot.terminal++;
	}
}

static void sse_line(struct conn *c, const char *line, size_t len)
{
	const char *p;

	if (len == 0) {
		dispatch_event(c);
		c->ev_id = -1;
		c->ev_terminal = 0;
		c->ev_ts_ms = -1;
		return;
	}
	if (len > 4 && !strncmp(line, "id: ", 4)) {
		long long id;

		if (parse_num(line + 4, 0, INT64_MAX, &id) == 0)
			c->ev_id = id;
	} else if (len > 7 && !strncmp(line, "event: ", 7)) {
		c->ev_terminal = !strcmp(line + 7, "run.completed") || !strcmp(line + 7, "run.failed");
	} else if (len > 6 && !strncmp(line, "data: ", 6)) {
		p = strstr(line, "\"ts\":\"");
		if (p)
			c->ev_ts_ms = parse_ts(p + 6);
	}
}

/* SSE bytes (after the chunked framing is taken off). */
static int sse_feed(struct conn *c, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] == '\n') {
			size_t len = c->line_len;

			if (len && c->line[len - 1] == '\r')
				len--;
			if (c->line)
				c->line[len] = '\0';
			sse_line(c, c->line ? c->line : "", len);
			c->line_len = 0;
			continue;
		}
		if (c->line_len + 2 > c->line_alloc) {
			if (c->line_alloc >= LINE_CAP)
				return -1;
			c->line_alloc = c->line_alloc ? c->line_alloc * 2 : 512;
			c->line = realloc(c->line, c->line_alloc);
			if (!c->line)
				die("out of memory");
		}
		c->line[c->line_len++] = s[i];
	}
	return 0;
}

/* Body bytes; takes off the chunked framing when there is one. Returns 1
 * when the last chunk has been seen, -1 on a framing error. */
static int body_feed(struct conn *c, const char *s, size_t n)
{
	size_t i = 0;

	if (!c->chunked)
		return sse_feed(c, s, n);
	while (i < n) {
		switch (c->ks) {
		case K_SIZE:
			if (s[i] == '\n') {
				char *end;

				c->size_line[c->size_len] = '\0';
				errno = 0;
				c->chunk_left = strtoull(c->size_line, &end, 16);
				if (errno || end == c->size_line)
					return -1;
				c->size_len = 0;
				c->ks = c->chunk_left ? K_DATA : K_TRAILER;
				if (c->ks == K_TRAILER)
					return 1;
			} else if (c->size_len + 1 < sizeof(c->size_line)) {
				c->size_line[c->size_len++] = s[i];
			} else {
				return -1;
			}
			i++;
			break;
		case K_DATA: {
			size_t take = n - i < c->chunk_left ? n - i : (size_t)c->chunk_left;

			if (sse_feed(c, s + i, take) < 0)
				return -1;
			i += take;
			c->chunk_left -= take;
			if (!c->chunk_left)
				c->ks = K_DATA_END;
			break;
		}
		case K_DATA_END:
			if (s[i] == '\n')
				c->ks = K_SIZE;
			i++;
			break;
		case K_TRAILER:
			return 1;
		}
	}
	return 0;
}

/* Every state change goes through here so the live counts stay exact. */
static void set_state(struct conn *c, enum conn_state s)
{
	if (c->state == C_CONNECTING || c->state == C_HEAD)
		tot.pending--;
	else if (c->state == C_BODY)
		tot.open--;
	if (s == C_CONNECTING || s == C_HEAD)
		tot.pending++;
	else if (s == C_BODY)
		tot.open++;
	c->state = s;
}

static void conn_close(struct conn *c)
{
	if (c->fd >= 0) {
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	if (c->state == C_BODY && !c->terminal_seen)
		tot.closed_early++;
	if (c->state == C_CONNECTING || c->state == C_HEAD)
		tot.failed_open++;
	set_state(c, C_DONE);
	free(c->line);
	c->line = NULL;
	c->line_alloc = c->line_len = 0;
}

static int conn_start(struct conn *c, const struct sockaddr_in *sa)
{
	struct epoll_event ev;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -1;
	if (connect(c->fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 && errno != EINPROGRESS) {
		close(c->fd);
		c->fd = -1;
		return -1;
	}
	set_state(c, C_CONNECTING);
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
	ev.data.ptr = c;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die("epoll_ctl");
	return 0;
}

static void on_head(struct conn *c)
{
	char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
	char *line, *save = NULL;
	size_t body_off;

	*end = '\0';
	body_off = (size_t)(end - c->head) + 4;
	line = strtok_r(c->head, "\r\n", &save);
	if (!line || sscanf(line, "HTTP/1.%*d %d", &c->status) != 1)
		c->status = 0;
	while ((line = strtok_r(NULL, "\r\n", &save)))
		if (!strncasecmp(line, "Transfer-Encoding:", 18) && strcasestr(line + 18, "chunked"))
			c->chunked = 1;
	if (c->status != 200) {
		tot.http_errors++;
		conn_close(c);
		return;
	}
	set_state(c, C_BODY);
	c->open_ms = wall_ms();
	tot.opened++;
	if (body_off < c->head_len && body_feed(c, c->head + body_off, c->head_len - body_off) != 0)
		conn_close(c);
}

static void on_event(struct conn *c, uint32_t events, char *buf, size_t bufsz)
{
	ssize_t n;

	if (c->state == C_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		struct epoll_event ev;

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
			conn_close(c);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		while (c->req_off < c->req_len) {
			n = write(c->fd, c->req + c->req_off, c->req_len - c->req_off);
			if (n < 0) {
				if (errno == EAGAIN)
					return;
				conn_close(c);
				return;
			}
			c->req_off += (size_t)n;
		}
		set_state(c, C_HEAD);
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN | EPOLLRDHUP;
		ev.data.ptr = c;
		epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
		return;
	}
	for (;;) {
		if (c->state == C_HEAD) {
			n = read(c->fd, c->head + c->head_len, sizeof(c->head) - 1 - c->head_len);
			if (n > 0) {
				c->head_len += (size_t)n;
				c->head[c->head_len] = '\0';
				if (memmem(c->head, c->head_len, "\r\n\r\n", 4))
					on_head(c);
				else if (c->head_len + 1 >= sizeof(c->head))
					conn_close(c);
				if (c->state != C_BODY)
					return;
				continue;
			}
		} else if (c->state == C_BODY) {
			n = read(c->fd, buf, bufsz);
			if (n > 0) {
				if (body_feed(c, buf, (size_t)n) != 0) {
					conn_close(c);
					return;
				}
				continue;
			}
		} else {
			return;
		}
		if (n < 0 && errno == EAGAIN)
			return;
		conn_close(c); /* EOF or error */
		return;
	}
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct(double p)
{
	size_t i;

	if (!nsamples)
		return -1;
	i = (size_t)(p / 100.0 * (double)(nsamples - 1) + 0.5);
	return (double)samples[i];
}

static void raise_nofile(size_t want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit");
	if (rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("setrlimit");
	if (rl.rlim_cur < want)
		fprintf(stderr, "sse-load: RLIMIT_NOFILE hard limit %llu is below %zu\n",
			(unsigned long long)rl.rlim_max, want);
}

static void read_targets(const char *path)
{
	FILE *f = fopen(path, "r");
	long long a, r;
	size_t alloc = 16;

	if (!f)
		die(path);
	targets = xmalloc(alloc * sizeof(*targets));
	while (fscanf(f, "%lld %lld", &a, &r) == 2) {
		if (ntargets == alloc) {
			alloc *= 2;
			targets = realloc(targets, alloc * sizeof(*targets));
			if (!targets)
				die("out of memory");
		}
		memset(&targets[ntargets], 0, sizeof(targets[ntargets]));
		targets[ntargets].app_id = a;
		targets[ntargets].run_id = r;
		ntargets++;
	}
	fclose(f);
	if (!ntargets) {
		fprintf(stderr, "sse-load: no targets in %s\n", path);
		exit(2);
	}
}

static void usage(void)
{
	fputs("usage: sse-load --port N --token T --targets FILE --streams N [--host ADDR]\n"
	      "                [--timeout S] [--hold S] [--inflight N]\n", stderr);
	exit(2);
}

static void report(int64_t started_mono)
{
	size_t i;

	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		struct target *t = c->t;

		if (c->state != C_DONE)
			tot.unfinished++;
		if (!t->streams || c->events < t->min_events)
			t->min_events = c->events;
		if (!t->streams || c->events > t->max_events)
			t->max_events = c->events;
		if (!t->streams || c->last_id < t->min_last)
			t->min_last = c->last_id;
		if (!t->streams || c->last_id > t->max_last)
			t->max_last = c->last_id;
		t->streams++;
	}
	qsort(samples, nsamples, sizeof(*samples), cmp_i64);
	printf("{\"streams\":%zu,\"opened\":%u,\"failed_open\":%u,\"http_errors\":%u,"
	       "\"open_all_ms\":%lld,\"elapsed_ms\":%lld,\"events\":%llu,\"gaps\":%llu,"
	       "\"dups\":%llu,\"terminal\":%u,\"closed_early\":%u,\"unfinished\":%u,"
	       "\"latency\":{\"samples\":%zu,\"p50_ms\":%.0f,\"p90_ms\":%.0f,\"p99_ms\":%.0f,"
	       "\"max_ms\":%.0f},\"runs\":[",
	       nconns, tot.opened, tot.failed_open, tot.http_errors, (long long)tot.all_open_ms,
	       (long long)(mono_now_ms() - started_mono), tot.events, tot.gaps, tot.dups,
	       tot.terminal, tot.closed_early, tot.unfinished, nsamples, pct(50), pct(90),
	       pct(99), nsamples ? (double)samples[nsamples - 1] : -1.0);
	for (i = 0; i < ntargets; i++)
		printf("%s{\"app_id\":%lld,\"run_id\":%lld,\"streams\":%u,\"min_events\":%lld,"
		       "\"max_events\":%lld,\"min_last\":%lld,\"max_last\":%lld}",
		       i ? "," : "", targets[i].app_id, targets[i].run_id, targets[i].streams,
		       targets[i].min_events, targets[i].max_events, targets[i].min_last,
		       targets[i].max_last);
	printf("]}\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "token", required_argument, NULL, 'T' },
		{ "targets", required_argument, NULL, 'f' },
		{ "streams", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		{ "hold", required_argument, NULL, 'h' },
		{ "inflight", required_argument, NULL, 'i' },
		{ NULL, 0, NULL, 0 },
	};
	const char *host = "127.0.0.1", *token = NULL, *tfile = NULL;
	long long port = 0, nstreams = 0, timeout_s = 120, hold_s = -1, inflight = 64;
	struct sockaddr_in sa;
	struct epoll_event *evs;
	static char buf[65536];
	size_t next = 0, i;
	int64_t started, all_open_at = -1;
	int opt, announced = 0;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		const char *a = optarg;

		switch (opt) {
		case 'H': host = a; break;
		case 'T': token = a; break;
		case 'f': tfile = a; break;
		case 'p': if (parse_num(a, 1, 65535, &port) < 0) usage(); break;
		case 'n': if (parse_num(a, 1, MAX_STREAMS, &nstreams) < 0) usage(); break;
		case 't': if (parse_num(a, 1, 86400, &timeout_s) < 0) usage(); break;
		case 'h': if (parse_num(a, 0, 86400, &hold_s) < 0) usage(); break;
		case 'i': if (parse_num(a, 1, 100000, &inflight) < 0) usage(); break;
		default: usage();
		}
	}
	if (!port || !token || !tfile || !nstreams)
		usage();
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		usage();
	read_targets(tfile);
	nconns = (size_t)nstreams;
	raise_nofile(nconns + 64);
	conns = xmalloc(nconns * sizeof(*conns));
	samples = xmalloc(MAX_SAMPLES * sizeof(*samples));
	evs = xmalloc(1024 * sizeof(*evs));
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		char req[1024];
		int len;

		c->fd = -1;
		c->t = &targets[i % ntargets];
		c->ev_id = -1;
		c->ev_ts_ms = -1;
		len = snprintf(req, sizeof(req),
			       "GET /admin/apps/%lld/coding-agent/runs/%lld/stream HTTP/1.1\r\n"
			       "Host: %s:%lld\r\nAuthorization: Bearer %s\r\n"
			       "Accept: text/event-stream\r\nConnection: close\r\n\r\n",
			       c->t->app_id, c->t->run_id, host, port, token);
		if (len < 0 || (size_t)len >= sizeof(req))
			usage();
		c->req = xmalloc((size_t)len + 1);
		memcpy(c->req, req, (size_t)len + 1);
		c->req_len = (size_t)len;
	}
	started = mono_now_ms();
	for (;;) {
		int n, k;
		int64_t now = mono_now_ms();

		/* Keep at most `inflight` streams between connect and response
		 * head, so the listen backlogs never overflow. */
		while (next < nconns && tot.pending < (size_t)inflight) {
			if (conn_start(&conns[next], &sa) < 0) {
				conns[next].state = C_DONE;
				tot.failed_open++;
			}
			next++;
		}
		if (!announced && next == nconns && !tot.pending) {
			announced = 1;
			all_open_at = now;
			tot.all_open_ms = now - started;
			printf("open %u %u\n", tot.opened, tot.failed_open);
			fflush(stdout);
		}
		if (!tot.pending && !tot.open && next == nconns)
			break;
		if (now - started > timeout_s * 1000)
			break;
		if (announced && hold_s >= 0 && now - all_open_at >= hold_s * 1000)
			break;
		n = epoll_wait(epfd, evs, 1024, 50);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (k = 0; k < n; k++)
			on_event(evs[k].data.ptr, evs[k].events, buf, sizeof(buf));
	}
	report(started);
	for (i = 0; i < nconns; i++) {
		if (conns[i].fd >= 0)
			close(conns[i].fd);
		free(conns[i].line);
		free(conns[i].req);
	}
	close(epfd);
	free(evs);
	free(conns);
	free(samples);
	free(targets);
	return tot.failed_open ? 1 : 0;
}
