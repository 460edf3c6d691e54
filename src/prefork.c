/* prefork.c - master/worker supervision (see prefork.h). */
#include "prefork.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "strbuf.h"
#include "util.h"

enum slot_state { SLOT_FREE, SLOT_RUNNING, SLOT_RETIRING, SLOT_WAITING };

volatile sig_atomic_t worker_stop;

/* A worker that dies this soon after it started counts as crash-looping. */
#define QUICK_DEATH_MS 2000
#define MAX_BACKOFF_MS 30000

/* Binds a unix socket at path with exactly mode and, unless gid is -1,
 * gives it to group gid. The master is single-threaded here, so the
 * process-wide umask can carry the mode into bind(2): the socket never
 * exists with wider access, and nobody can connect before listen(2). */
static int bind_unix(int fd, const char *path, unsigned mode, gid_t gid, struct strbuf *err)
{
	struct sockaddr_un sa;
	struct stat st;
	mode_t old_mask;
	int rc;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	/* A socket left by an earlier run goes; anything else at the path is
	 * a configuration mistake, not ours to delete. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	old_mask = umask(0777 & ~(mode_t)mode);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old_mask);
	if (rc < 0) {
		strbuf_addf(err, "listen on %s: %s", path, strerror(errno));
		return -1;
	}
	if (gid != (gid_t)-1 && lchown(path, (uid_t)-1, gid) < 0) {
		strbuf_addf(err, "cannot give socket %s to group %u: %s (kiln-api must be a member "
			    "of socket_group or run as root)", path, (unsigned)gid, strerror(errno));
		unlink(path);
		return -1;
	}
	return 0;
}

int listen_socket(const char *spec, struct strbuf *err)
{
	return listen_socket_mode(spec, 0660, (gid_t)-1, err);
}

int listen_socket_mode(const char *spec, unsigned mode, gid_t gid, struct strbuf *err)
{
	int fd = -1, one = 1;

	if (!strncmp(spec, "unix:", 5))
		spec += 5;
	if (spec[0] == '/') {
		if (strlen(spec) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			strbuf_addf(err, "socket path too long: %s", spec);
			return -1;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			goto fail;
		if (bind_unix(fd, spec, mode, gid, err) < 0) {
			close(fd);
			return -1;
		}
	} else {
		struct sockaddr_in sa;
		const char *colon = strrchr(spec, ':');
		struct strbuf host = STRBUF_INIT;
		unsigned port;

		if (!colon || parse_uint(colon + 1, 65535, &port) < 0) {
			strbuf_addf(err, "listen must be unix:/path or host:port, not %s", spec);
			return -1;
		}
		strbuf_add(&host, spec, (size_t)(colon - spec));
		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host.buf, &sa.sin_addr) != 1) {
			strbuf_addf(err, "bad listen address %s", host.buf);
			strbuf_release(&host);
			return -1;
		}
		strbuf_release(&host);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			goto fail;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
			goto fail;
	}
	if (listen(fd, 1024) < 0)
		goto fail;
	return fd;
fail:
	strbuf_addf(err, "listen on %s: %s", spec, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* The flag lets a busy worker see the request between two requests without
 * a system call; the signal wakes one that waits for work. */
static void ask_to_stop(struct worker_slot *slot)
{
	slot->stop_asked = 1;
	kill(slot->pid, SIGTERM);
}

static void on_worker_signal(int sig)
{
	(void)sig;
	worker_stop = 1;
}

static pid_t spawn_worker(struct pool_spec *pool, struct worker_slot *slot, int pool_idx,
			  unsigned generation)
{
	pid_t pid;

	/* before the fork: a reused slot must not tell the new worker to stop */
	slot->stop_asked = 0;
	pid = fork();

	if (pid < 0) {
		log_error("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		struct sigaction sa;
		sigset_t none;

		memset(&sa, 0, sizeof(sa));
		/* SA_RESTART: a stop request must never cut a request short
		 * mid-read; worker loops wait in poll(), which it does wake. */
		sa.sa_handler = on_worker_signal;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		sa.sa_handler = SIG_IGN;
		sigaction(SIGPIPE, &sa, NULL);
		sa.sa_handler = SIG_DFL;
		sigaction(SIGHUP, &sa, NULL);
		sigaction(SIGCHLD, &sa, NULL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() == 1)
			_exit(0);
		slot->busy_since_ms = 0;
		pool->worker_main(pool->arg, pool->listen_fd, slot);
		_exit(0);
	}
	slot->pid = pid;
	slot->pool = pool_idx;
	slot->state = SLOT_RUNNING;
	slot->busy_since_ms = 0;
	slot->requests = 0;
	slot->started_ms = mono_ms();
	slot->generation = generation;
	return pid;
}

static struct worker_slot *find_slot(struct worker_slot *slots, int n, pid_t pid)
{
	int i;

	for (i = 0; i < n; i++)
		if (slots[i].pid == pid && slots[i].state != SLOT_FREE)
			return &slots[i];
	return NULL;
}

static struct worker_slot *free_slot(struct worker_slot *slots, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (slots[i].state == SLOT_FREE)
			return &slots[i];
	return NULL;
}

static int count_live(struct worker_slot *slots, int n)
{
	int i, live = 0;

	for (i = 0; i < n; i++)
		if (slots[i].state == SLOT_RUNNING || slots[i].state == SLOT_RETIRING)
			live++;
	return live;
}

static void reap(struct worker_slot *slots, int nslots, struct pool_spec *pools, int stopping)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct worker_slot *s = find_slot(slots, nslots, pid);
		int64_t lived;

		if (!s)
			continue;
		lived = mono_ms() - s->started_ms;
		if (WIFSIGNALED(status) && WTERMSIG(status) != SIGTERM)
			log_warn("%s worker %d killed by signal %d after %lld ms",
				 pools[s->pool].name, (int)pid, WTERMSIG(status), (long long)lived);
		else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
			log_warn("%s worker %d exited with status %d", pools[s->pool].name,
				 (int)pid, WEXITSTATUS(status));
		if (s->state == SLOT_RETIRING || stopping) {
			s->state = SLOT_FREE;
			s->pid = 0;
			continue;
		}
		/* A clean exit (recycling) is replaced at once; a crash right
		 * after start backs off exponentially so a crash loop is no storm. */
		if ((WIFSIGNALED(status) || WEXITSTATUS(status) != 0) && lived < QUICK_DEATH_MS) {
			int64_t delay;

			s->crashes++;
			delay = 100LL << (s->crashes < 9 ? s->crashes : 9);
			if (delay > MAX_BACKOFF_MS)
				delay = MAX_BACKOFF_MS;
			log_warn("%s worker crashed %u times in a row; respawning in %lld ms",
				 pools[s->pool].name, s->crashes, (long long)delay);
			s->respawn_at_ms = mono_ms() + delay;
		} else {
			s->crashes = 0;
			s->respawn_at_ms = 0;
		}
		s->state = SLOT_WAITING;
		s->pid = 0;
	}
}

int64_t worker_recycle_limit(int64_t max_requests)
{
	uint64_t r = 0;
	int64_t spread = max_requests / 10;

	/* Drawn in the worker itself, after fork(): getrandom, not a PRNG
	 * state every child inherits from the master. */
	if (spread <= 0 || random_bytes(&r, sizeof(r)) < 0)
		return max_requests;
	return max_requests - spread + (int64_t)(r % (uint64_t)(2 * spread + 1));
}

void worker_allow_more(struct worker_slot *slot, int64_t ms)
{
	if (slot)
		slot->extra_ms = ms;
}

int prefork_run(struct pool_spec *pools, int npools, int64_t grace_ms)
{
	return prefork_run_reloadable(pools, npools, grace_ms, NULL, NULL);
}

/* Room for each pool: its largest generation while the one before it is
 * still finishing its last requests, and a slot waiting for a respawn. */
static int pool_capacity(const struct pool_spec *pool)
{
	return pool->max_nprocs > pool->nprocs ? pool->max_nprocs : pool->nprocs;
}

/* On SIGHUP: the new settings, when there is a reload hook and it accepts
 * them. 1 to replace the workers, 0 to keep the ones running. */
static int reload_settings(struct pool_spec *pools, int npools, int64_t *grace_ms,
			   prefork_reload_fn reload, void *ctx)
{
	struct strbuf err = STRBUF_INIT;
	int p, ok = 1;

	if (!reload)
		return 1;
	if (reload(ctx, pools, npools, grace_ms, &err) < 0) {
		log_error("SIGHUP: configuration not reloaded, workers kept: %s", strbuf_str(&err));
		ok = 0;
	}
	for (p = 0; ok && p < npools; p++) {
		int cap = pools[p].max_nprocs; /* what the scoreboard was sized for */

		if (pools[p].nprocs > cap || pools[p].nprocs < 1) {
			log_warn("SIGHUP: %s pool: %d processes is outside 1..%d; using %d until a restart",
				 pools[p].name, pools[p].nprocs, cap, pools[p].nprocs < 1 ? 1 : cap);
			pools[p].nprocs = pools[p].nprocs < 1 ? 1 : cap;
		}
	}
	strbuf_release(&err);
	return ok;
}

int prefork_run_reloadable(struct pool_spec *pools, int npools, int64_t grace_ms,
			   prefork_reload_fn reload, void *ctx)
{
	struct worker_slot *slots;
	int nslots = 0, i, p, sfd, stopping = 0, ret = 0;
	unsigned generation = 1;
	size_t map_len;
	sigset_t mask;
	int64_t stop_deadline = 0;

	for (p = 0; p < npools; p++) {
		pools[p].max_nprocs = pool_capacity(&pools[p]);
		nslots += pools[p].max_nprocs * 3;
	}
	map_len = sizeof(*slots) * (size_t)nslots;
	slots = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (slots == MAP_FAILED) {
		log_error("mmap scoreboard: %s", strerror(errno));
		return -1;
	}
	memset(slots, 0, map_len);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		log_error("signalfd: %s", strerror(errno));
		munmap(slots, map_len);
		return -1;
	}
	for (p = 0, i = 0; p < npools; p++) {
		int k;

		for (k = 0; k < pools[p].nprocs; k++, i++)
			spawn_worker(&pools[p], &slots[i], p, generation);
		for (k = 0; k < pools[p].max_nprocs * 3 - pools[p].nprocs; k++, i++)
			slots[i].pool = p;
	}
	log_info("master ready: %d pools", npools);

	for (;;) {
		struct pollfd pfd = { .fd = sfd, .events = POLLIN };
		struct signalfd_siginfo si;
		int64_t now;

		poll(&pfd, 1, 100);
		while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
				if (!stopping) {
					log_info("stopping: letting in-flight requests finish");
					stopping = 1;
					stop_deadline = mono_ms() + grace_ms;
					for (i = 0; i < nslots; i++)
						if (slots[i].pid > 0)
							ask_to_stop(&slots[i]);
				}
			} else if (si.ssi_signo == SIGHUP && !stopping &&
				   reload_settings(pools, npools, &grace_ms, reload, ctx)) {
				/* New generation first, then retire the old one: the
				 * socket never closes and no request is refused. */
				generation++;
				log_info("SIGHUP: replacing workers (generation %u)", generation);
				for (i = 0; i < nslots; i++)
					if (slots[i].state == SLOT_RUNNING || slots[i].state == SLOT_WAITING) {
						if (slots[i].pid > 0) {
							slots[i].state = SLOT_RETIRING;
							ask_to_stop(&slots[i]);
						} else {
							slots[i].state = SLOT_FREE;
						}
					}
				/* the fill-up below starts the new generation */
			}
		}
		reap(slots, nslots, pools, stopping);
		now = mono_ms();
		if (stopping) {
			if (!count_live(slots, nslots))
				break;
			if (now > stop_deadline) {
				log_warn("grace period over: killing remaining workers");
				for (i = 0; i < nslots; i++)
					if (slots[i].pid > 0)
						kill(slots[i].pid, SIGKILL);
				stop_deadline = now + 5000;
			}
			continue;
		}
		/* Every pool keeps nprocs workers that are not retiring; after a
		 * SIGHUP this starts the new generation (as slots free up, when
		 * old workers are still finishing their last request). */
		for (p = 0; p < npools; p++) {
			int k, have = 0;

			for (k = 0; k < nslots; k++)
				if (slots[k].pool == p &&
				    (slots[k].state == SLOT_RUNNING || slots[k].state == SLOT_WAITING))
					have++;
			for (; have < pools[p].nprocs; have++) {
				struct worker_slot *s = free_slot(slots, nslots);

				if (!s)
					break;
				spawn_worker(&pools[p], s, p, generation);
			}
		}
		for (i = 0; i < nslots; i++) {
			struct worker_slot *s = &slots[i];
			struct pool_spec *pool = &pools[s->pool];
			int64_t busy = s->busy_since_ms;

			if (s->state == SLOT_WAITING && now >= s->respawn_at_ms) {
				unsigned crashes = s->crashes;

				spawn_worker(pool, s, s->pool, generation);
				s->crashes = crashes;
			} else if ((s->state == SLOT_RUNNING || s->state == SLOT_RETIRING) &&
				   pool->request_timeout_ms && busy &&
				   now - busy > pool->request_timeout_ms + s->extra_ms) {
				log_warn("%s worker %d stuck in one request for %lld ms: killing it",
					 pool->name, (int)s->pid, (long long)(now - busy));
				s->busy_since_ms = 0;
				kill(s->pid, SIGKILL);
			}
		}
	}
	close(sfd);
	munmap(slots, map_len);
	log_info("master stopped");
	return ret;
}
