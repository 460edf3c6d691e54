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
 * Workers report through a shared scoreboard slot: busy_since_ms is set
 * while a request is served (0 when idle), requests counts them; a request
 * known to be long (a publish build) raises its own allowance with
 * worker_allow_more().
 *
 *   listen_socket      "unix:/path", "/path" or "127.0.0.1:port"
 *   prefork_run        the master loop; returns when shut down
 *   worker_should_stop for worker loops
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
};

extern volatile sig_atomic_t worker_stop;

/* Returns a listening fd or -1 (message in err). */
int listen_socket(const char *spec, struct strbuf *err);
int prefork_run(struct pool_spec *pools, int npools, int64_t shutdown_grace_ms);
/* Lets the current request of this worker run ms longer than the timeout. */
void worker_allow_more(struct worker_slot *slot, int64_t ms);

#endif
