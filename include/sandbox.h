/*
 * sandbox.h - running a model-chosen command inside bubblewrap.
 *
 *   struct sandbox_config / sandbox_config_default   bwrap path, sandbox
 *                                   user, resource limits
 *   sandbox_config_from_config      the same from kiln.conf (sandbox_*)
 *   sandbox_probe                   can a sandbox start here at all?
 *   sandbox_run                     run argv with the workspace at /workspace
 *   sandbox_result_release
 *
 * What a command sees (bwrap 0.8; everything below is on for every run):
 *   - new user, mount, pid, net, ipc, uts and cgroup namespaces; nested user
 *     namespaces disabled; no capabilities; no_new_privs; own session; killed
 *     when Kiln dies (--die-with-parent, and PDEATHSIG on bwrap itself);
 *   - network: only a loopback of its own (fresh netns, nothing listening);
 *   - filesystem: a read-only root holding read-only binds of /usr and the
 *     host's /bin, /sbin, /lib* (symlinks or binds, mirroring the host),
 *     /etc with only alternatives/, ld.so.cache and generated passwd, group,
 *     hosts and nsswitch.conf; fresh /proc and minimal /dev (read-only, with
 *     a size-capped /dev/shm); a private size-capped tmpfs /tmp; and the
 *     workspace, read-write, at /workspace (the cwd). Nothing else of the
 *     host exists in there: not /root, /home, /var, /run or Kiln's state.
 *   - environment: only PATH=/usr/local/bin:/usr/bin:/bin, HOME=/tmp,
 *     LANG=C.UTF-8, npm_config_cache=/tmp/.npm, CI=1 (and PWD=/workspace,
 *     which bwrap sets when it changes directory). bwrap itself is
 *     started with an empty environment, so Kiln's secrets never reach it.
 *   - rlimits set before bwrap and inherited by everything inside: CPU, AS,
 *     NPROC, FSIZE, NOFILE, and CORE=0.
 *
 * When Kiln runs as root, bwrap is started as run_uid:run_gid (setgroups(0),
 * setresgid, setresuid) and builds an unprivileged user namespace, so the
 * command runs as that unprivileged host user (which is also what makes
 * RLIMIT_NPROC bite: it does not apply to root). Inside, that user is
 * "sandbox", uid/gid 1000; host files of other owners show as 65534. For that user to write the
 * workspace, sandbox_run first hands the workspace tree to run_uid:run_gid:
 * a walk over directory fds opened with O_NOFOLLOW that fchownat()s each
 * entry with AT_SYMLINK_NOFOLLOW (a symlink's own owner changes, never its
 * target's), stays on the workspace's filesystem, skips entries already
 * owned, and skips non-directories with more than one hard link (a link to a
 * file elsewhere must not change that file's owner). Kiln (root) keeps full
 * access to the files either way. The directories above the workspace must
 * be searchable (x) by run_uid for bwrap to reach it; sandbox_run checks and
 * says which one is not.
 *
 * Not contained here: total memory across processes and disk use in the
 * workspace (RLIMIT_FSIZE caps single files only); that needs cgroups or
 * quotas set up outside Kiln. run_command (cmdtool.h) lowers RLIMIT_FSIZE
 * to the workspace's size limit and measures the workspace after each
 * command, which reports the overrun but cannot prevent it.
 */
#ifndef KILN_SANDBOX_H
#define KILN_SANDBOX_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "strbuf.h"

/* Start from sandbox_config_default(); every limit must be non-zero. */
struct sandbox_config {
	const char *bwrap_path;   /* default /usr/bin/bwrap */
	uid_t run_uid;            /* the unprivileged user commands run as when */
	gid_t run_gid;            /* Kiln runs as root; default 65534/65534 */
	uint64_t mem_bytes;       /* RLIMIT_AS per process */
	uint64_t cpu_seconds;     /* RLIMIT_CPU per process */
	uint64_t max_procs;       /* RLIMIT_NPROC: processes+threads of run_uid */
	uint64_t max_file_bytes;  /* RLIMIT_FSIZE */
	uint64_t max_open_files;  /* RLIMIT_NOFILE */
	uint64_t tmp_bytes;       /* size of the private /tmp and of /dev/shm */
};

struct sandbox_result {
	int exit_code;     /* the command's status; 128+n if signal n killed it
			    * inside; 127 if it was not found; -1 if killed by
			    * Kiln (timeout, cancel) */
	int term_signal;   /* the signal Kiln killed the sandbox with, else 0 */
	int timed_out;
	int cancelled;
	int64_t duration_ms;
	struct strbuf output; /* stdout and stderr interleaved, capped */
	int truncated;
};

void sandbox_config_default(struct sandbox_config *c);
/* The defaults with kiln.conf's sandbox_uid, sandbox_gid, sandbox_mem_mb,
 * sandbox_cpu_s and sandbox_max_procs, so that a probe starts bwrap exactly
 * as run_command does (the health endpoint's does). */
struct config;
void sandbox_config_from_config(const struct config *cfg, struct sandbox_config *c);

/*
 * Checks that bwrap can start a sandbox here, configured exactly as
 * sandbox_run does, by running `true` in one. Returns 0 if usable, else -1
 * with the reason; callers refuse run_command rather than run unconfined,
 * and `kilnctl doctor` / health report the reason. Takes about 50 ms; cache
 * the answer.
 */
int sandbox_probe(const struct sandbox_config *c, struct strbuf *reason);

/*
 * Runs argv (NULL-terminated; argv[0] looked up in the sandbox's PATH) with
 * workspace_path (absolute, a directory, not a symlink) as /workspace.
 * timeout_ms <= 0 means no deadline. Returns 0 if the command ran (any exit
 * status, timeout or cancel: see res), -1 if the sandbox could not be set up
 * (errmsg says why). res is initialised in both cases; release it.
 */
int sandbox_run(const struct sandbox_config *c, const char *workspace_path,
		const char *const *argv, int64_t timeout_ms, size_t output_cap,
		volatile sig_atomic_t *cancel, struct sandbox_result *res,
		struct strbuf *errmsg);

void sandbox_result_release(struct sandbox_result *res);

#endif
