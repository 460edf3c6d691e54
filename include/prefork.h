/*
 * prefork.h - the master/worker split of kiln-api (after nginx's).
 *
 * The master opens nothing but the listening sockets and then only
 * supervises: it forks each pool's workers, respawns a worker that dies
 * (with back-off when one keeps crashing right after start), lets a worker
 * exit after max_requests so it is replaced fresh, kills a worker whose
 * current request has run past request_timeout_ms, replaces all workers on
 * SIGHUP without closing the sockets, and on SIGTERM/SIGINT stops them
 * gracefully within shutdown_grace_ms.
 *
 * SIGHUP, nginx-style: with a reload hook (prefork_run_reloadable) the
 * master first asks it for new settings (the caller re-reads its
 * configuration and updates nprocs, request_timeout_ms, what arg points at,
 * the grace period); only when it succeeds is every worker replaced by one
 * of the new generation. When it fails, the error is logged and the running
 * workers are kept as they are. Without a hook SIGHUP just replaces them.
 * The listening sockets never change.
 *
 * Workers report through a shared scoreboard slot: busy_since_ms is set
 * while a request is served (0 when idle), requests counts them; a request
 * known to be long (a publish build) raises its own allowance with
 * worker_allow_more().
 *
 *   listen_socket(_mode)   "unix:/path", "/path" or "127.0.0.1:port"
 *   prefork_run(_reloadable)  the master loop; returns when shut down
 *   worker_recycle_limit   a worker's own max_requests, with jitter
 *   worker_allow_more      a long request raises its own timeout
 */
#ifndef KILN_PREFORK_H
#define KILN_PREFORK_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

struct strbuf;

struct worker_slot {
	pid_t pid;
	int pool;
	int state;                       /* enum slot_state in prefork.c */
	volatile int64_t busy_since_ms;  /* monotonic; 0 = idle */
	volatile int stop_asked;         /* set by the master just before its SIGTERM */
	volatile int64_t extra_ms;       /* this request's allowance beyond the timeout */
	volatile uint64_t requests;
	int64_t started_ms;
	unsigned crashes;                /* consecutive quick deaths */
	int64_t respawn_at_ms;
	unsigned generation;
};

struct pool_spec {
	const char *name;
	int listen_fd;
	int nprocs;
	int64_t request_timeout_ms;  /* 0 = never (stream pools) */
	/* Runs in the child; returns when the worker should exit. */
	void (*worker_main)(void *arg, int listen_fd, struct worker_slot *slot);
	void *arg;
	int max_nprocs;              /* most nprocs a reload may set (0 = nprocs) */
};

extern volatile sig_atomic_t worker_stop;

/* Returns a listening fd or -1 (message in err). A unix socket gets
 * exactly the permission bits mode and, unless gid is (gid_t)-1, the group
 * gid (socket_mode / socket_group in kiln.conf); a TCP socket ignores both.
 * listen_socket is listen_socket_mode with 0660 and the process's group. */
int listen_socket(const char *spec, struct strbuf *err);
int listen_socket_mode(const char *spec, unsigned mode, gid_t gid, struct strbuf *err);

/* The SIGHUP hook: may change each pool's nprocs (1..max_nprocs),
 * request_timeout_ms and arg, and *grace_ms; never listen_fd or
 * worker_main. 0 to go on with the new generation, -1 (why in err) to keep
 * the running workers. Runs in the master. */
typedef int (*prefork_reload_fn)(void *ctx, struct pool_spec *pools, int npools,
				 int64_t *grace_ms, struct strbuf *err);
int prefork_run(struct pool_spec *pools, int npools, int64_t shutdown_grace_ms);
int prefork_run_reloadable(struct pool_spec *pools, int npools, int64_t shutdown_grace_ms,
			   prefork_reload_fn reload, void *ctx);
/* max_requests_per_worker for one worker, drawn uniformly in
 * [0.9 * max, 1.1 * max] so that workers started together do not all
 * recycle together. Call it in the worker (after fork). */
int64_t worker_recycle_limit(int64_t max_requests);
/* Lets the current request of this worker run ms longer than the timeout. */
void worker_allow_more(struct worker_slot *slot, int64_t ms);

#endif
