/* stream_server.c - many SSE streams per process (see stream_server.h). */
#include "stream_server.h"

#include <errno.h>
#include <fcgiapp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "auth.h"
#include "events.h"
#include "log.h"
#include "prefork.h"
#include "services.h"
#include "strbuf.h"
#include "util.h"

#define STREAM_STACK_BYTES (128 * 1024)
#define IDLE_ACCEPTORS 2
#define FETCH_BATCH 500

struct frame {
	int64_t seq;
	char *text; /* "id: ..\nevent: ..\ndata: ..\n\n" */
	size_t len;
};

/*
 * The events of one run after base, shared by the streams of it in this
 * process that start at or after base. A channel holds at most
 * stream_channel_max_events frames; one that reaches the cap, or whose run
 * row is gone, fails: it leaves the lookup list, its streams send what it
 * holds and end, and their clients come back with Last-Event-ID to a new
 * channel that starts where they are.
 */
struct channel {
	int64_t run_id, app_id;
	int refs;
	int64_t base;          /* frames[i].seq == base + i + 1 */
	struct frame *frames;
	size_t n, alloc;
	int64_t terminal_seq;  /* 0 until the terminal event is loaded */
	int failed;
	int listed;            /* still in hub.channels */
	pthread_cond_t cond;
	struct channel *next;
};

struct acceptor {
	pthread_t tid;
	int in_accept;
	struct acceptor *next;
};

struct hub {
	struct config *cfg;
	int listen_fd;
	struct worker_slot *slot;
	pthread_mutex_t mu;
	pthread_cond_t poller_cond;
	struct channel *channels;
	struct acceptor *acceptors;
	int threads, idle;
	pthread_mutex_t auth_mu; /* guards svc.db for request validation */
	struct services svc;
};

static struct hub hub; /* one per stream process; threads share it */

static void on_wake(int sig)
{
	(void)sig; /* only interrupts accept() */
}

/* A channel a stream starting after seq `after` can use: frames from
 * after + 1 on, or able to get them. */
static struct channel *channel_get(int64_t run_id, int64_t app_id, int64_t after)
{
	struct channel *ch;

	for (ch = hub.channels; ch; ch = ch->next)
		if (ch->run_id == run_id && ch->base <= after) {
			ch->refs++;
			return ch;
		}
	ch = xcalloc(1, sizeof(*ch));
	ch->run_id = run_id;
	ch->app_id = app_id;
	ch->base = after;
	ch->refs = 1;
	ch->listed = 1;
	pthread_cond_init(&ch->cond, NULL);
	ch->next = hub.channels;
	hub.channels = ch;
	pthread_cond_signal(&hub.poller_cond);
	return ch;
}

static void channel_unlist(struct channel *ch)
{
	struct channel **pp;

	if (!ch->listed)
		return;
	for (pp = &hub.channels; *pp; pp = &(*pp)->next)
		if (*pp == ch) {
			*pp = ch->next;
			break;
		}
	ch->listed = 0;
}

/* Caller holds hub.mu. New streams no longer find it; its own end. */
static void channel_fail(struct channel *ch, const char *why)
{
	int64_t held_to = ch->base + (int64_t)ch->n;

	if (ch->failed)
		return;
	log_warn("stream of run %lld ends at seq %lld: %s; clients resume with Last-Event-ID",
		 (long long)ch->run_id, (long long)held_to, why);
	ch->failed = 1;
	channel_unlist(ch);
	pthread_cond_broadcast(&ch->cond);
}

static void channel_put(struct channel *ch)
{
	size_t i;

	if (--ch->refs > 0)
		return;
	channel_unlist(ch);
	for (i = 0; i < ch->n; i++)
		free(ch->frames[i].text);
	free(ch->frames);
	pthread_cond_destroy(&ch->cond);
	free(ch);
}

/* Caller holds hub.mu. Takes f and its texts. */
static void channel_append(struct channel *ch, struct frame *f, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int terminal = f[i].seq < 0;
		int64_t seq = terminal ? -f[i].seq : f[i].seq;

		if (seq != ch->base + (int64_t)ch->n + 1 || ch->failed) {
			free(f[i].text);
			continue;
		}
		if (ch->n >= (size_t)hub.cfg->stream_channel_max_events) {
			free(f[i].text);
			channel_fail(ch, "its buffer is full");
			continue;
		}
		if (ch->n == ch->alloc) {
			ch->alloc = ch->alloc ? ch->alloc * 2 : 16;
			ch->frames = xrealloc(ch->frames, ch->alloc, sizeof(*ch->frames));
		}
		f[i].seq = seq;
		ch->frames[ch->n++] = f[i];
		if (terminal)
			ch->terminal_seq = seq;
	}
	free(f);
}

/* One watched run in the poller's snapshot of a tick. */
struct watch {
	struct channel *ch;
	int64_t run_id, app_id, have;
	int found;
};

/* Frames of rows [from, to) of r, one run's events in seq order (columns
 * run_id, seq, type, payload, created_at), for a channel that has every
 * event up to after. Stops at a gap: the rest comes next tick. */
static void frames_of_rows(const struct db_result *r, size_t from, size_t to, int64_t run_id,
			   int64_t app_id, int64_t after, struct frame **out, size_t *nout)
{
	struct strbuf env = STRBUF_INIT, fr = STRBUF_INIT;
	size_t i;

	*out = xcalloc(to > from ? to - from : 1, sizeof(**out));
	*nout = 0;
	for (i = from; i < to; i++) {
		int64_t seq = db_int(r, i, 1);
		struct frame *f = &(*out)[*nout];

		if (seq != after + (int64_t)*nout + 1)
			break;
		strbuf_reset(&env);
		strbuf_reset(&fr);
		event_envelope(&env, db_val(r, i, 2), run_id, app_id, seq, db_val(r, i, 4), db_val(r, i, 3));
		strbuf_addf(&fr, "id: %lld\nevent: %s\ndata: %s\n\n", (long long)seq, db_val(r, i, 2),
			    env.buf);
		f->seq = event_is_terminal(db_val(r, i, 2)) ? -seq : seq; /* < 0 marks the terminal frame */
		f->len = fr.len;
		f->text = strbuf_detach(&fr, NULL);
		(*nout)++;
	}
	strbuf_release(&env);
	strbuf_release(&fr);
}

/* Most events one channel takes in a tick, and most rows one tick's load
 * reads: a channel catching up on a long backlog takes its share and the
 * rest next tick, so it cannot hold back the live streams of other runs,
 * and the poller never falls into a slower mode as it falls behind. */
#define TICK_EVENTS_PER_CHANNEL 500
#define TICK_EVENTS_LIMIT "16384"

/* The new events of every watched run that moved (moved[] indexes w), in
 * one query, appended to their channels. */
static void load_moved(struct db *db, struct watch *w, const size_t *moved, size_t nmoved)
{
	int64_t vals[3 * DB_MAX_IDS];
	struct db_result r;
	size_t i, from, m;

	for (m = 0; m < nmoved; m++) {
		vals[3 * m] = w[moved[m]].run_id;
		vals[3 * m + 1] = w[moved[m]].have;
		vals[3 * m + 2] = w[moved[m]].have + TICK_EVENTS_PER_CHANNEL;
	}
	if (db_query_tuples(db, &r, "SELECT run_id, seq, type, payload, created_at FROM agent_run_events "
				    "WHERE %s ORDER BY run_id, seq LIMIT " TICK_EVENTS_LIMIT,
			    "(run_id = ? AND seq > ? AND seq <= ?)", " OR ", vals, nmoved, 3) < 0) {
		log_warn("stream event load failed: %s", db->errmsg);
		return;
	}
	for (from = 0; from < r.nrows; from = i) {
		int64_t run_id = db_int(&r, from, 0);

		for (i = from; i < r.nrows && db_int(&r, i, 0) == run_id; i++)
			;
		/* a run may have several channels (streams that began at
		 * different events): each takes the rows past its own end */
		for (m = 0; m < nmoved; m++) {
			struct watch *wk = &w[moved[m]];
			struct frame *f;
			size_t first = from, nf;

			if (wk->run_id != run_id)
				continue;
			while (first < i && db_int(&r, first, 1) <= wk->have)
				first++;
			frames_of_rows(&r, first, i, run_id, wk->app_id, wk->have, &f, &nf);
			pthread_mutex_lock(&hub.mu);
			channel_append(wk->ch, f, nf);
			pthread_cond_broadcast(&wk->ch->cond);
			pthread_mutex_unlock(&hub.mu);
		}
	}
	db_result_free(&r);
}

static void *poller_main(void *arg)
{
	struct db db;
	struct watch *w = NULL;
	int64_t *ids = NULL;
	size_t nw, alloc = 0, i, j, k;
	int connected;

	(void)arg;
	connected = db_connect(&db, hub.cfg) == 0;
	pthread_mutex_lock(&hub.mu);
	while (!worker_stop) {
		struct channel *ch;
		struct db_result r;
		struct timespec ts;

		/* Snapshot what is watched; hold references so channels live on
		 * while the lock is dropped for the query. */
		nw = 0;
		for (ch = hub.channels; ch; ch = ch->next) {
			if (ch->terminal_seq || ch->failed)
				continue;
			if (nw == alloc) {
				alloc = alloc ? alloc * 2 : 64;
				w = xrealloc(w, alloc, sizeof(*w));
				ids = xrealloc(ids, alloc, sizeof(*ids));
			}
			ch->refs++;
			w[nw].ch = ch;
			w[nw].run_id = ch->run_id;
			w[nw].app_id = ch->app_id;
			w[nw].have = ch->base + (int64_t)ch->n;
			ids[nw] = ch->run_id;
			nw++;
		}
		if (!nw) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&hub.poller_cond, &hub.mu, &ts);
			continue;
		}
		pthread_mutex_unlock(&hub.mu);
		if (!connected)
			connected = db_connect(&db, hub.cfg) == 0;
		/* The one poll of this tick: which watched runs moved on, and
		 * which are gone (no row: their streams could wait forever). */
		for (i = 0; i < nw && connected; i += DB_MAX_IDS) {
			size_t n = nw - i < DB_MAX_IDS ? nw - i : DB_MAX_IDS, moved[DB_MAX_IDS], nmoved = 0;

			if (db_query_ids(&db, &r, "SELECT r.id, (SELECT COALESCE(MAX(e.seq), 0) FROM agent_run_events e "
						 "WHERE e.run_id = r.id), r.status IN ('completed', 'failed', 'cancelled') "
						 "FROM agent_runs r WHERE r.id IN (%s)",
					 ids + i, n) < 0) {
				log_warn("stream poll failed: %s", db.errmsg);
				break;
			}
			for (k = i; k < i + n; k++)
				w[k].found = 0;
			for (j = 0; j < r.nrows; j++) {
				int64_t id = db_int(&r, j, 0), last = db_int(&r, j, 1);

				for (k = i; k < i + n; k++) {
					if (w[k].run_id != id)
						continue;
					w[k].found = 1;
					if (last <= w[k].have) {
						/* A channel that starts at or past the end of
						 * an ended run (the status commits with the
						 * terminal event) has nothing to wait for. */
						if (db_int(&r, j, 2) == 1 && last > 0) {
							pthread_mutex_lock(&hub.mu);
							if (!w[k].ch->terminal_seq)
								w[k].ch->terminal_seq = last;
							pthread_cond_broadcast(&w[k].ch->cond);
							pthread_mutex_unlock(&hub.mu);
						}
						continue;
					}
					moved[nmoved++] = k;
				}
			}
			db_result_free(&r);
			/* and the events of all that moved, in one more query */
			if (nmoved)
				load_moved(&db, w, moved, nmoved);
			pthread_mutex_lock(&hub.mu);
			for (k = i; k < i + n; k++)
				if (!w[k].found)
					channel_fail(w[k].ch, "its run no longer exists");
			pthread_mutex_unlock(&hub.mu);
		}
		pthread_mutex_lock(&hub.mu);
		for (i = 0; i < nw; i++)
			channel_put(w[i].ch);
		if (worker_stop)
			break;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += hub.cfg->stream_poll_ms * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&hub.poller_cond, &hub.mu, &ts);
	}
	pthread_mutex_unlock(&hub.mu);
	free(w);
	free(ids);
	db_close(&db);
	return NULL;
}

/* Parses .../apps/{app}/coding-agent/runs/{run}/stream. */
static int parse_stream_path(const char *path, int64_t *app_id, int64_t *run_id)
{
	long long a, r;
	int end = 0;

	if (sscanf(path, "/admin/apps/%lld/coding-agent/runs/%lld/stream%n", &a, &r, &end) != 2 ||
	    path[end] != '\0' || a <= 0 || r <= 0)
		return -1;
	/* sscanf accepts signs and leading zeros; the API's ids are canonical */
	if (strstr(path, "/+") || strstr(path, "/-") || strstr(path, "/0"))
		return -1;
	*app_id = a;
	*run_id = r;
	return 0;
}

static int send_error(FCGX_Request *fr, struct rctx *c)
{
	return http_send(fr->out, c->res);
}

/* Validates the request; 0 with ids and the start position, or -1 after
 * writing an error response (its status in *status). */
static int stream_begin(FCGX_Request *fr, struct http_request *req, int64_t *app_id,
			int64_t *run_id, int64_t *after, int *status)
{
	struct http_response res;
	struct strbuf v = STRBUF_INIT;
	struct rctx c;
	struct db_result r;
	const char *lei;
	int ret = -1;

	http_response_init(&res);
	memset(&c, 0, sizeof(c));
	c.svc = &hub.svc;
	c.req = req;
	c.res = &res;
	c.name = "run_stream";
	*after = 0;
	if (req->path_invalid || parse_stream_path(req->path.buf, app_id, run_id) < 0) {
		respond_error(&c, 404, "not_found", "no such route");
		goto out;
	}
	if (strcmp(req->method, "GET")) {
		http_response_header(&res, "Allow", "GET");
		respond_error(&c, 405, "method_not_allowed", "use GET");
		goto out;
	}
	lei = http_param(req, "HTTP_LAST_EVENT_ID");
	if (http_query_param(req, "after", &v) &&
	    parse_int64(v.buf, 0, INT32_MAX, after) < 0) {
		respond_field_error(&c, "after", "after must be a non-negative integer");
		goto out;
	}
	if (lei && *lei && parse_int64(lei, 0, INT32_MAX, after) < 0) {
		respond_field_error(&c, "Last-Event-ID", "Last-Event-ID must be a non-negative integer");
		goto out;
	}
	pthread_mutex_lock(&hub.auth_mu);
	if (!hub.svc.db.conn)
		db_ping(&hub.svc.db);
	if (auth_check(&c) == 0) {
		if (db_query(&hub.svc.db, &r,
			     "SELECT r.id FROM agent_runs r JOIN apps a ON a.id = r.app_id "
			     "WHERE r.id = ? AND r.app_id = ? AND a.org_id = ?",
			     "iii", *run_id, *app_id, c.org_id) < 0) {
			respond_db_error(&c);
		} else {
			if (r.nrows == 1)
				ret = 0;
			else
				respond_not_found(&c);
			db_result_free(&r);
		}
	}
	pthread_mutex_unlock(&hub.auth_mu);
out:
	if (ret < 0) {
		send_error(fr, &c);
		*status = res.status;
	}
	http_response_release(&res);
	strbuf_release(&v);
	return ret;
}

static int put(FCGX_Request *fr, const char *s, size_t len)
{
	if (FCGX_PutStr(s, (int)len, fr->out) < 0 || FCGX_FFlush(fr->out) < 0)
		return -1;
	return 0;
}

/* One line per stream request, like the API's: method, path (control
 * bytes masked, no query), status, duration; how far it got. */
static void log_stream(const struct http_request *req, int status, int64_t from, int64_t to,
		       const char *end)
{
	struct strbuf path = STRBUF_INIT;
	const char *u = req->uri ? req->uri : "";
	size_t len = strcspn(u, "?");

	if (len > 255)
		len = 255;
	strbuf_add(&path, u, len);
	for (len = 0; len < path.len; len++)
		if ((unsigned char)path.buf[len] < 0x20 || path.buf[len] == 0x7f)
			path.buf[len] = '?';
	if (status == 200)
		log_info("%s %s %d %lldms (events %lld..%lld, %s)", req->method ? req->method : "-", path.buf,
			 status, (long long)(mono_ms() - req->started_ms), (long long)from, (long long)to, end);
	else
		log_info("%s %s %d %lldms", req->method ? req->method : "-", path.buf, status,
			 (long long)(mono_ms() - req->started_ms));
	strbuf_release(&path);
}

static void serve_stream(FCGX_Request *fr)
{
	static const char head[] = "Status: 200 OK\r\nContent-Type: text/event-stream\r\n"
				   "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n\r\n"
				   "retry: 1000\n\n";
	struct http_request req;
	struct strbuf out = STRBUF_INIT;
	struct channel *ch;
	int64_t app_id, run_id, cursor, start, keepalive_ms = hub.cfg->stream_keepalive_s * 1000;
	int64_t next_keepalive;
	const char *end = "client gone";
	int status = 500;

	http_request_read(&req, fr->envp, fr->in, 0);
	if (stream_begin(fr, &req, &app_id, &run_id, &cursor, &status) < 0) {
		log_stream(&req, status, 0, 0, NULL);
		goto out;
	}
	start = cursor;
	if (put(fr, head, sizeof(head) - 1) < 0) {
		log_stream(&req, 200, start, cursor, end);
		goto out;
	}
	pthread_mutex_lock(&hub.mu);
	ch = channel_get(run_id, app_id, cursor);
	next_keepalive = mono_ms() + keepalive_ms;
	for (;;) {
		int done;

		while (ch->base + (int64_t)ch->n <= cursor && !ch->failed && !worker_stop &&
		       !(ch->terminal_seq && cursor >= ch->terminal_seq) &&
		       mono_ms() < next_keepalive) {
			struct timespec ts;
			int64_t wait = next_keepalive - mono_ms();

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += wait / 1000;
			ts.tv_nsec += (wait % 1000) * 1000000L;
			ts.tv_sec += ts.tv_nsec / 1000000000L;
			ts.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&ch->cond, &hub.mu, &ts);
		}
		strbuf_reset(&out);
		while (ch->base + (int64_t)ch->n > cursor) {
			struct frame *f = &ch->frames[cursor - ch->base];

			strbuf_add(&out, f->text, f->len);
			cursor++;
			if (out.len > 65536)
				break;
		}
		done = worker_stop || ch->failed || (ch->terminal_seq && cursor >= ch->terminal_seq);
		if (done)
			end = ch->terminal_seq && cursor >= ch->terminal_seq ? "terminal event"
			      : ch->failed ? "channel failed" : "stream process stopping";
		pthread_mutex_unlock(&hub.mu);
		if (!out.len && !done && mono_ms() >= next_keepalive) {
			strbuf_addstr(&out, ": keep-alive\n\n");
		}
		if (out.len) {
			if (put(fr, out.buf, out.len) < 0) {
				end = "client gone";
				pthread_mutex_lock(&hub.mu);
				break;
			}
			next_keepalive = mono_ms() + keepalive_ms;
		}
		pthread_mutex_lock(&hub.mu);
		if (done && ch->base + (int64_t)ch->n <= cursor)
			break;
	}
	channel_put(ch); /* the lock is held on every way out of the loop */
	pthread_mutex_unlock(&hub.mu);
	log_stream(&req, 200, start, cursor, end);
out:
	strbuf_release(&out);
	http_request_release(&req);
}

static void *stream_thread(void *arg);

static void spawn_thread_locked(void)
{
	pthread_attr_t attr;
	struct acceptor *a = xcalloc(1, sizeof(*a));

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, STREAM_STACK_BYTES);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	a->next = hub.acceptors;
	hub.acceptors = a;
	hub.threads++;
	hub.idle++;
	if (pthread_create(&a->tid, &attr, stream_thread, a) != 0) {
		hub.acceptors = a->next;
		hub.threads--;
		hub.idle--;
		free(a);
		log_error("cannot start a stream thread");
	}
	pthread_attr_destroy(&attr);
}

static void *stream_thread(void *arg)
{
	struct acceptor *self = arg, **pp;
	FCGX_Request fr;
	sigset_t wake;

	sigemptyset(&wake);
	sigaddset(&wake, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
	FCGX_InitRequest(&fr, hub.listen_fd, FCGI_FAIL_ACCEPT_ON_INTR);
	pthread_mutex_lock(&hub.mu);
	while (!worker_stop) {
		int rc;

		self->in_accept = 1;
		pthread_mutex_unlock(&hub.mu);
		rc = FCGX_Accept_r(&fr);
		pthread_mutex_lock(&hub.mu);
		self->in_accept = 0;
		if (rc < 0) {
			if (worker_stop)
				break;
			if (rc != -EINTR) {
				/* Out of fds or memory is passing (streams end): say
				 * so, at most once a second, and keep accepting; an
				 * acceptor that quit would leave new streams waiting
				 * in the backlog with nobody to take them. */
				static int64_t last_warn;
				int64_t now = mono_ms();

				if (now - last_warn > 1000) {
					log_warn("stream accept failed: %s", strerror(-rc));
					last_warn = now;
				}
				pthread_mutex_unlock(&hub.mu);
				sleep_ms(100);
				pthread_mutex_lock(&hub.mu);
			}
			continue;
		}
		hub.idle--;
		/* Keep acceptors waiting so a new stream never queues behind
		 * a long one. */
		if (hub.idle < IDLE_ACCEPTORS && hub.threads < hub.cfg->stream_max_per_process)
			spawn_thread_locked();
		hub.slot->busy_since_ms = 0; /* streams are exempt from the stuck timer */
		hub.slot->requests++;
		pthread_mutex_unlock(&hub.mu);
		serve_stream(&fr);
		FCGX_Finish_r(&fr);
		pthread_mutex_lock(&hub.mu);
		hub.idle++;
		if (hub.idle > IDLE_ACCEPTORS * 2)
			break; /* plenty waiting: let this thread go */
	}
	hub.idle--;
	hub.threads--;
	for (pp = &hub.acceptors; *pp; pp = &(*pp)->next)
		if (*pp == self) {
			*pp = self->next;
			break;
		}
	pthread_mutex_unlock(&hub.mu);
	FCGX_Free(&fr, 1);
	free(self);
	return NULL;
}

void stream_worker_main(void *arg, int listen_fd, struct worker_slot *slot)
{
	struct stream_server_args *a = arg;
	struct strbuf err = STRBUF_INIT;
	struct sigaction sa;
	pthread_t poller;
	sigset_t block, stopset;
	struct channel *ch;
	int64_t deadline;
	int i;

	log_set_prog("kiln-stream");
	memset(&hub, 0, sizeof(hub));
	hub.cfg = a->cfg;
	hub.listen_fd = listen_fd;
	hub.slot = slot;
	pthread_mutex_init(&hub.mu, NULL);
	pthread_mutex_init(&hub.auth_mu, NULL);
	pthread_cond_init(&hub.poller_cond, NULL);
	if (services_init(&hub.svc, a->cfg, &err) < 0) {
		log_error("stream worker start: %s", err.buf);
		_exit(1);
	}
	FCGX_Init();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_wake; /* no SA_RESTART: interrupts accept() */
	sigaction(SIGUSR1, &sa, NULL);
	/* Signals reach this thread only: it turns SIGTERM into an orderly stop. */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &block, NULL);
	pthread_create(&poller, NULL, poller_main, NULL);
	pthread_mutex_lock(&hub.mu);
	for (i = 0; i < IDLE_ACCEPTORS; i++)
		spawn_thread_locked();
	pthread_mutex_unlock(&hub.mu);

	sigemptyset(&stopset);
	sigaddset(&stopset, SIGTERM);
	sigaddset(&stopset, SIGINT);
	while (!worker_stop) {
		struct timespec ts = { 0, 500 * 1000000L };

		if (sigtimedwait(&stopset, NULL, &ts) > 0)
			worker_stop = 1;
	}
	/* Orderly stop: wake every stream (they end; clients resume with
	 * Last-Event-ID elsewhere) and every acceptor. */
	pthread_mutex_lock(&hub.mu);
	for (ch = hub.channels; ch; ch = ch->next)
		pthread_cond_broadcast(&ch->cond);
	pthread_cond_broadcast(&hub.poller_cond);
	pthread_mutex_unlock(&hub.mu);
	deadline = mono_ms() + 5000;
	for (;;) {
		struct acceptor *acc;
		int left;

		pthread_mutex_lock(&hub.mu);
		for (acc = hub.acceptors; acc; acc = acc->next)
			if (acc->in_accept)
				pthread_kill(acc->tid, SIGUSR1);
		left = hub.threads;
		pthread_mutex_unlock(&hub.mu);
		if (!left || mono_ms() > deadline)
			break;
		sleep_ms(20);
	}
	pthread_join(poller, NULL);
	services_release(&hub.svc);
	strbuf_release(&err);
	_exit(0);
}
