/* sandbox.c - bubblewrap invocation, workspace hand-over and result mapping
 * (see sandbox.h for what the sandbox contains and why). */
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "fileutil.h"
#include "log.h"
#include "subprocess.h"
#include "util.h"

#define SANDBOX_ENV_PATH "/usr/local/bin:/usr/bin:/bin"
/* The command's uid/gid as seen inside. Distinct from 65534, which is how
 * the sandbox shows host files of unmapped owners (root's /usr), so that
 * those never look as if they belonged to the command. */
#define SANDBOX_INNER_ID "1000"
#define PROBE_TIMEOUT_MS 15000
/* Deeper workspace entries are left as they are (and so stay read-only to
 * the sandbox user) rather than recursing without bound. */
#define WALK_MAX_DEPTH 256
#define STATUS_CAP 65536

/* Host directories that are symlinks into /usr on merged-/usr systems and
 * real directories elsewhere; mirrored either way. */
static const char *const system_dirs[] = {
	"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
};

/* Read-only binds of the few /etc entries programs need; all optional. */
static const char *const etc_binds[] = {
	"/etc/alternatives", "/etc/ld.so.cache",
};

static const char *const sandbox_env[][2] = {
	{ "PATH", SANDBOX_ENV_PATH },
	{ "HOME", "/tmp" },
	{ "LANG", "C.UTF-8" },
	{ "npm_config_cache", "/tmp/.npm" },
	{ "CI", "1" },
};

void sandbox_config_default(struct sandbox_config *c)
{
	memset(c, 0, sizeof(*c));
	c->bwrap_path = "/usr/bin/bwrap";
	c->run_uid = 65534;
	c->run_gid = 65534;
	c->mem_bytes = 4ULL << 30;
	c->cpu_seconds = 300;
	c->max_procs = 512;
	c->max_file_bytes = 256ULL << 20;
	c->max_open_files = 4096;
	c->tmp_bytes = 256ULL << 20;
}

void sandbox_config_from_config(const struct config *cfg, struct sandbox_config *c)
{
	sandbox_config_default(c);
	c->run_uid = (uid_t)cfg->sandbox_uid;
	c->run_gid = (gid_t)cfg->sandbox_gid;
	c->mem_bytes = (uint64_t)cfg->sandbox_mem_mb << 20;
	c->cpu_seconds = (uint64_t)cfg->sandbox_cpu_s;
	c->max_procs = (uint64_t)cfg->sandbox_max_procs;
}

void sandbox_result_release(struct sandbox_result *res)
{
	strbuf_release(&res->output);
}

/* ---- a growable argv ---- */

struct argvec {
	char **v;
	size_t n, alloc;
};

static void argv_push(struct argvec *a, const char *s)
{
	if (a->n + 2 > a->alloc) {
		size_t alloc = a->alloc ? a->alloc * 2 : 64;
		char **nv = realloc(a->v, alloc * sizeof(*nv));

		if (!nv)
			abort();
		a->v = nv;
		a->alloc = alloc;
	}
	a->v[a->n++] = xstrdup(s);
	a->v[a->n] = NULL;
}

static void __attribute__((format(printf, 2, 3))) argv_pushf(struct argvec *a,
							      const char *fmt, ...)
{
	struct strbuf sb = STRBUF_INIT;
	va_list ap;

	va_start(ap, fmt);
	strbuf_vaddf(&sb, fmt, ap);
	va_end(ap);
	argv_push(a, strbuf_str(&sb));
	strbuf_release(&sb);
}

static void argv_push2(struct argvec *a, const char *opt, const char *arg)
{
	argv_push(a, opt);
	argv_push(a, arg);
}

static void argv_clear(struct argvec *a)
{
	size_t i;

	for (i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

/* Zero limits would make every command fail in confusing ways (RLIMIT_AS
 * of 0 cannot even exec): refuse them up front. */
static int config_check(const struct sandbox_config *c, struct strbuf *err)
{
	if (!c->bwrap_path || c->bwrap_path[0] != '/') {
		strbuf_addstr(err, "bwrap_path must be an absolute path");
		return -1;
	}
	if (!c->mem_bytes || !c->cpu_seconds || !c->max_procs || !c->max_file_bytes ||
	    !c->max_open_files || !c->tmp_bytes) {
		strbuf_addstr(err, "sandbox limits must all be non-zero "
			      "(start from sandbox_config_default)");
		return -1;
	}
	return 0;
}

/* ---- who bwrap runs as ---- */

struct identity {
	int drop;   /* Kiln is root: start bwrap as uid:gid */
	uid_t uid;
	gid_t gid;
};

static int sandbox_identity(const struct sandbox_config *c, struct identity *id,
			    struct strbuf *err)
{
	if (geteuid() != 0) {
		id->drop = 0;
		id->uid = geteuid();
		id->gid = getegid();
		return 0;
	}
	if (c->run_uid == 0 || c->run_gid == 0) {
		strbuf_addstr(err, "the sandbox user must not be root (run_uid/run_gid is 0)");
		return -1;
	}
	id->drop = 1;
	id->uid = c->run_uid;
	id->gid = c->run_gid;
	return 0;
}

/* ---- files the sandbox gets: generated /etc entries, bwrap's status ---- */

struct sandbox_fds {
	int passwd, group, hosts, nsswitch;
	int status_r, status_w;  /* bwrap --json-status-fd */
	int workspace;           /* -1 for the probe */
};

#define SANDBOX_FDS_INIT { -1, -1, -1, -1, -1, -1, -1 }

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void sandbox_fds_close(struct sandbox_fds *f)
{
	close_fd(&f->passwd);
	close_fd(&f->group);
	close_fd(&f->hosts);
	close_fd(&f->nsswitch);
	close_fd(&f->status_r);
	close_fd(&f->status_w);
	close_fd(&f->workspace);
}

/* subprocess_run keeps inherited fds at their numbers, which must be > 2. */
static int fd_above_stdio(int fd)
{
	int nfd;

	if (fd < 0 || fd > 2)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return nfd;
}

static int data_fd(const char *name, const char *content)
{
	size_t len = strlen(content), off = 0;
	int fd = fd_above_stdio(memfd_create(name, MFD_CLOEXEC));

	if (fd < 0)
		return -1;
	while (off < len) {
		ssize_t n = write(fd, content + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int make_sandbox_fds(struct sandbox_fds *f, struct strbuf *err)
{
	int pfd[2];

	f->passwd = data_fd("kiln-passwd",
			    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
			    "sandbox:x:" SANDBOX_INNER_ID ":" SANDBOX_INNER_ID
			    ":Kiln sandbox:/tmp:/usr/sbin/nologin\n"
			    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
	f->group = data_fd("kiln-group", "root:x:0:\nsandbox:x:" SANDBOX_INNER_ID ":\n"
			   "nogroup:x:65534:\n");
	f->hosts = data_fd("kiln-hosts", "127.0.0.1\tlocalhost\n"
			   "::1\tlocalhost ip6-localhost ip6-loopback\n");
	f->nsswitch = data_fd("kiln-nsswitch", "passwd: files\ngroup: files\n"
			      "shadow: files\nhosts: files\n");
	if (f->passwd < 0 || f->group < 0 || f->hosts < 0 || f->nsswitch < 0) {
		strbuf_addf(err, "cannot create sandbox /etc files: %s", strerror(errno));
		return -1;
	}
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		strbuf_addf(err, "pipe: %s", strerror(errno));
		return -1;
	}
	f->status_r = fd_above_stdio(pfd[0]);
	f->status_w = fd_above_stdio(pfd[1]);
	if (f->status_r < 0 || f->status_w < 0 ||
	    fcntl(f->status_r, F_SETFL, O_NONBLOCK) < 0) {
		strbuf_addf(err, "pipe: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- the bwrap command line ---- */

static void mirror_system_dirs(struct argvec *a)
{
	char target[PATH_MAX];
	struct stat st;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(system_dirs); i++) {
		const char *dir = system_dirs[i];

		if (lstat(dir, &st) < 0)
			continue;
		if (S_ISLNK(st.st_mode)) {
			ssize_t n = readlink(dir, target, sizeof(target) - 1);

			if (n <= 0)
				continue;
			target[n] = '\0';
			argv_push(a, "--symlink");
			argv_push2(a, target, dir);
		} else if (S_ISDIR(st.st_mode)) {
			argv_push(a, "--ro-bind");
			argv_push2(a, dir, dir);
		}
	}
}

/* A generated /etc file, world-readable like the host's. */
static void etc_data(struct argvec *a, int fd, const char *dest)
{
	argv_push2(a, "--perms", "0444");
	argv_push(a, "--ro-bind-data");
	argv_pushf(a, "%d", fd);
	argv_push(a, dest);
}

static void build_bwrap_argv(const struct sandbox_config *c, const struct sandbox_fds *f,
			     const char *const *cmd, struct argvec *a)
{
	size_t i;

	argv_push(a, c->bwrap_path);
	argv_push(a, "--unshare-all");
	/* explicit, so that --disable-userns is accepted */
	argv_push(a, "--unshare-user");
	argv_push(a, "--disable-userns");
	argv_push2(a, "--uid", SANDBOX_INNER_ID);
	argv_push2(a, "--gid", SANDBOX_INNER_ID);
	argv_push(a, "--die-with-parent");
	argv_push(a, "--new-session");
	argv_push2(a, "--cap-drop", "ALL");
	argv_push2(a, "--hostname", "kiln-sandbox");

	argv_push(a, "--ro-bind");
	argv_push2(a, "/usr", "/usr");
	mirror_system_dirs(a);

	argv_push2(a, "--dir", "/etc");
	for (i = 0; i < ARRAY_SIZE(etc_binds); i++) {
		argv_push(a, "--ro-bind-try");
		argv_push2(a, etc_binds[i], etc_binds[i]);
	}
	etc_data(a, f->passwd, "/etc/passwd");
	etc_data(a, f->group, "/etc/group");
	etc_data(a, f->hosts, "/etc/hosts");
	etc_data(a, f->nsswitch, "/etc/nsswitch.conf");

	argv_push2(a, "--proc", "/proc");
	argv_push2(a, "--dev", "/dev");
	argv_push(a, "--size");
	argv_pushf(a, "%llu", (unsigned long long)c->tmp_bytes);
	argv_push2(a, "--tmpfs", "/dev/shm");
	argv_push2(a, "--remount-ro", "/dev");
	argv_push(a, "--size");
	argv_pushf(a, "%llu", (unsigned long long)c->tmp_bytes);
	argv_push2(a, "--tmpfs", "/tmp");

	if (f->workspace >= 0) {
		/* the very directory that was opened and handed over, not
		 * whatever the path names by the time bwrap looks */
		argv_push(a, "--bind-fd");
		argv_pushf(a, "%d", f->workspace);
		argv_push(a, "/workspace");
		argv_push2(a, "--chdir", "/workspace");
	} else {
		argv_push2(a, "--chdir", "/");
	}
	argv_push2(a, "--remount-ro", "/");

	argv_push(a, "--clearenv");
	for (i = 0; i < ARRAY_SIZE(sandbox_env); i++) {
		argv_push(a, "--setenv");
		argv_push2(a, sandbox_env[i][0], sandbox_env[i][1]);
	}
	argv_push(a, "--json-status-fd");
	argv_pushf(a, "%d", f->status_w);

	/* the model's argv can never be read as bwrap options */
	argv_push(a, "--");
	for (i = 0; cmd[i]; i++)
		argv_push(a, cmd[i]);
}

/* ---- handing the workspace to the sandbox user ---- */

struct walk {
	uid_t uid;
	gid_t gid;
	dev_t dev;
	struct strbuf path; /* relative, for messages */
	int depth_warned;
};

/* Changes the owner of name (in dfd) through an O_PATH fd of the entry
 * itself, so a swap between the checks and the chown cannot redirect it. */
static int give_entry(struct walk *w, int dfd, const char *name, struct stat *st,
		      struct strbuf *err)
{
	struct stat fst;
	int fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	int ret = 0;

	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		strbuf_addf(err, "cannot open workspace entry '%s': %s", w->path.buf,
			    strerror(errno));
		return -1;
	}
	if (fstat(fd, &fst) < 0) {
		strbuf_addf(err, "cannot stat workspace entry '%s': %s", w->path.buf,
			    strerror(errno));
		ret = -1;
		goto out;
	}
	/* what was checked is what gets changed */
	if (fst.st_ino != st->st_ino || fst.st_dev != st->st_dev)
		goto out;
	if (!S_ISDIR(fst.st_mode) && fst.st_nlink > 1)
		goto out;
	if (fchownat(fd, "", w->uid, w->gid, AT_EMPTY_PATH) < 0) {
		strbuf_addf(err, "cannot hand workspace entry '%s' to the sandbox user: %s",
			    w->path.buf, strerror(errno));
		ret = -1;
	}
out:
	close(fd);
	return ret;
}

static int give_dir(struct walk *w, int dirfd_owned, int depth, struct strbuf *err);

static int give_child(struct walk *w, int dfd, const char *name, int depth,
		      struct strbuf *err)
{
	struct stat st;
	size_t mark = w->path.len;
	int ret = 0;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		strbuf_addf(err, "cannot stat workspace entry '%s/%s': %s",
			    w->path.len ? w->path.buf : ".", name, strerror(errno));
		return -1;
	}
	/* another filesystem mounted inside, or a device node: not ours */
	if (st.st_dev != w->dev || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
		return 0;
	strbuf_addf(&w->path, "%s%s", mark ? "/" : "", name);
	if ((st.st_uid != w->uid || st.st_gid != w->gid) &&
	    give_entry(w, dfd, name, &st, err) < 0) {
		ret = -1;
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		int fd;

		if (depth >= WALK_MAX_DEPTH) {
			if (!w->depth_warned)
				log_warn("sandbox: workspace deeper than %d levels at '%s'; "
					 "left as is", WALK_MAX_DEPTH, w->path.buf);
			w->depth_warned = 1;
			goto out;
		}
		fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			/* replaced while we looked: nothing of ours to hand over */
			if (errno != ENOENT && errno != ELOOP && errno != ENOTDIR) {
				strbuf_addf(err, "cannot open workspace directory '%s': %s",
					    w->path.buf, strerror(errno));
				ret = -1;
			}
			goto out;
		}
		ret = give_dir(w, fd, depth + 1, err);
	}
out:
	strbuf_setlen(&w->path, mark);
	return ret;
}

/* Walks the directory open at dirfd_owned (and closes it). */
static int give_dir(struct walk *w, int dirfd_owned, int depth, struct strbuf *err)
{
	struct dirent *de;
	DIR *d = fdopendir(dirfd_owned);
	int ret = 0;

	if (!d) {
		strbuf_addf(err, "cannot read workspace directory '%s': %s",
			    w->path.len ? w->path.buf : ".", strerror(errno));
		close(dirfd_owned);
		return -1;
	}
	while (!ret) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno) {
				strbuf_addf(err, "cannot read workspace directory '%s': %s",
					    w->path.len ? w->path.buf : ".", strerror(errno));
				ret = -1;
			}
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		ret = give_child(w, dirfd(d), de->d_name, depth, err);
	}
	closedir(d);
	return ret;
}

static int give_workspace(int ws_fd, const struct identity *id, struct strbuf *err)
{
	struct walk w;
	struct stat st;
	int fd, ret;

	if (fstat(ws_fd, &st) < 0) {
		strbuf_addf(err, "cannot stat the workspace: %s", strerror(errno));
		return -1;
	}
	if ((st.st_uid != id->uid || st.st_gid != id->gid) &&
	    fchown(ws_fd, id->uid, id->gid) < 0) {
		strbuf_addf(err, "cannot hand the workspace to the sandbox user: %s",
			    strerror(errno));
		return -1;
	}
	fd = openat(ws_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		strbuf_addf(err, "cannot open the workspace: %s", strerror(errno));
		return -1;
	}
	memset(&w, 0, sizeof(w));
	w.uid = id->uid;
	w.gid = id->gid;
	w.dev = st.st_dev;
	strbuf_init(&w.path);
	ret = give_dir(&w, fd, 0, err);
	strbuf_release(&w.path);
	return ret;
}

static int may_search(const struct stat *st, uid_t uid, gid_t gid)
{
	if (st->st_uid == uid)
		return !!(st->st_mode & S_IXUSR);
	if (st->st_gid == gid)
		return !!(st->st_mode & S_IXGRP);
	return !!(st->st_mode & S_IXOTH);
}

/* bwrap resolves the workspace path as the sandbox user, so every directory
 * above it must be searchable by that user. */
static int check_reachable(const char *workspace, const struct identity *id,
			   struct strbuf *err)
{
	char *real = realpath(workspace, NULL);
	struct stat st;
	char *slash;
	int ret = -1;

	if (!real) {
		strbuf_addf(err, "cannot resolve the workspace path: %s", strerror(errno));
		return -1;
	}
	for (slash = real; slash; slash = strchr(slash + 1, '/')) {
		char saved = slash[1];

		slash[1] = '\0';
		if (stat(real, &st) < 0) {
			strbuf_addf(err, "cannot stat '%s': %s", real, strerror(errno));
			goto out;
		}
		if (!may_search(&st, id->uid, id->gid)) {
			strbuf_addf(err, "'%s' (mode %04o, owner %u:%u) is not searchable by the "
				    "sandbox user %u:%u, so bwrap cannot reach the workspace; "
				    "make the directories above workspaces searchable (o+x)",
				    real, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
				    (unsigned)st.st_gid, (unsigned)id->uid, (unsigned)id->gid);
			goto out;
		}
		slash[1] = saved;
		if (!saved)
			break;
	}
	ret = 0;
out:
	free(real);
	return ret;
}

/* ---- running bwrap ---- */

static size_t sandbox_rlimits(const struct sandbox_config *c, struct rlimit_spec *rl)
{
	size_t n = 0;

	rl[n++] = (struct rlimit_spec){ RLIMIT_CPU, (rlim_t)c->cpu_seconds };
	rl[n++] = (struct rlimit_spec){ RLIMIT_AS, (rlim_t)c->mem_bytes };
	rl[n++] = (struct rlimit_spec){ RLIMIT_NPROC, (rlim_t)c->max_procs };
	rl[n++] = (struct rlimit_spec){ RLIMIT_FSIZE, (rlim_t)c->max_file_bytes };
	rl[n++] = (struct rlimit_spec){ RLIMIT_NOFILE, (rlim_t)c->max_open_files };
	rl[n++] = (struct rlimit_spec){ RLIMIT_CORE, 0 };
	return n;
}

/* bwrap reports {"exit-code": N} only if the command itself ran. */
static int read_status_exit_code(int fd, int *exit_code)
{
	struct strbuf sb = STRBUF_INIT;
	char buf[4096];
	const char *p;
	int found = 0;

	strbuf_init_capped(&sb, STATUS_CAP);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || strbuf_add(&sb, buf, (size_t)n) < 0)
			break;
	}
	p = strstr(strbuf_str(&sb), "\"exit-code\"");
	if (p) {
		int64_t v;
		char *end;

		p = strchr(p, ':');
		if (p) {
			v = strtoll(p + 1, &end, 10);
			if (end != p + 1 && v >= 0 && v <= 255) {
				*exit_code = (int)v;
				found = 1;
			}
		}
	}
	strbuf_release(&sb);
	return found;
}

static void first_line(struct strbuf *dst, const struct strbuf *src)
{
	const char *s = strbuf_str(src);
	size_t len = strcspn(s, "\n");

	if (len > 300)
		len = 300;
	strbuf_add(dst, s, len);
}

/* Runs bwrap around cmd; f->workspace is -1 for the probe. */
static int run_bwrap(const struct sandbox_config *c, const struct identity *id,
		     struct sandbox_fds *f, const char *const *cmd, int64_t timeout_ms,
		     size_t output_cap, volatile sig_atomic_t *cancel,
		     struct sandbox_result *res, struct strbuf *errmsg)
{
	struct argvec a = { NULL, 0, 0 };
	struct rlimit_spec rl[8];
	struct subprocess sp;
	int inherit[6], ninherit = 0, exit_code = 0, ret = -1;

	build_bwrap_argv(c, f, cmd, &a);
	inherit[ninherit++] = f->passwd;
	inherit[ninherit++] = f->group;
	inherit[ninherit++] = f->hosts;
	inherit[ninherit++] = f->nsswitch;
	inherit[ninherit++] = f->status_w;
	if (f->workspace >= 0)
		inherit[ninherit++] = f->workspace;

	memset(&sp, 0, sizeof(sp));
	sp.argv = (const char *const *)a.v;
	sp.env = NULL;  /* bwrap gets nothing of Kiln's environment */
	sp.cwd = "/";
	sp.timeout_ms = timeout_ms;
	sp.output_cap = output_cap;
	sp.cancel = cancel;
	sp.new_session = 1;
	sp.stderr_to_stdout = 1;
	sp.rlimits = rl;
	sp.nrlimits = sandbox_rlimits(c, rl);
	sp.drop_privileges = id->drop;
	sp.uid = id->uid;
	sp.gid = id->gid;
	sp.inherit_fds = inherit;
	sp.ninherit_fds = (size_t)ninherit;

	if (subprocess_run(&sp, errmsg) < 0)
		goto out;
	close_fd(&f->status_w);

	res->duration_ms = sp.duration_ms;
	res->timed_out = sp.timed_out;
	res->cancelled = sp.cancelled;
	res->truncated = sp.out_truncated;
	strbuf_release(&res->output);
	res->output = sp.out;
	strbuf_init(&sp.out);

	if (sp.timed_out || sp.cancelled) {
		res->exit_code = -1;
		res->term_signal = sp.term_signal;
		ret = 0;
	} else if (read_status_exit_code(f->status_r, &exit_code)) {
		res->exit_code = exit_code;
		ret = 0;
	} else if (sp.term_signal) {
		strbuf_addf(errmsg, "bwrap was killed by signal %d", sp.term_signal);
	} else if (strstr(strbuf_str(&res->output), "bwrap: execvp ")) {
		/* set up fine, but the program is not in the sandbox's PATH */
		res->exit_code = 127;
		ret = 0;
	} else {
		strbuf_addstr(errmsg, "bwrap could not set up the sandbox: ");
		first_line(errmsg, &res->output);
	}
out:
	subprocess_release(&sp);
	argv_clear(&a);
	return ret;
}

static void result_init(struct sandbox_result *res)
{
	memset(res, 0, sizeof(*res));
	res->exit_code = -1;
	strbuf_init(&res->output);
}

static int read_proc_int(const char *path, long *out)
{
	struct strbuf sb = STRBUF_INIT;
	char *end;
	int ret = -1;

	if (file_read_capped(path, 64, &sb) == 0) {
		errno = 0;
		*out = strtol(sb.buf, &end, 10);
		if (!errno && end != sb.buf)
			ret = 0;
	}
	strbuf_release(&sb);
	return ret;
}

int sandbox_probe(const struct sandbox_config *c, struct strbuf *reason)
{
	static const char *const true_argv[] = { "true", NULL };
	struct sandbox_fds f = SANDBOX_FDS_INIT;
	struct sandbox_result res;
	struct identity id;
	long v;
	int ret = -1;

	result_init(&res);
	if (config_check(c, reason) < 0)
		goto out;
	if (access(c->bwrap_path, X_OK) < 0) {
		strbuf_addf(reason, "bubblewrap not found at %s (install the bubblewrap "
			    "package)", c->bwrap_path);
		goto out;
	}
	if (sandbox_identity(c, &id, reason) < 0)
		goto out;
	if (read_proc_int("/proc/sys/user/max_user_namespaces", &v) == 0 && v == 0) {
		strbuf_addstr(reason, "user namespaces are disabled "
			      "(/proc/sys/user/max_user_namespaces is 0)");
		goto out;
	}
	if (read_proc_int("/proc/sys/kernel/unprivileged_userns_clone", &v) == 0 && v == 0) {
		strbuf_addstr(reason, "unprivileged user namespaces are disabled "
			      "(/proc/sys/kernel/unprivileged_userns_clone is 0)");
		goto out;
	}
	if (make_sandbox_fds(&f, reason) < 0)
		goto out;
	if (run_bwrap(c, &id, &f, true_argv, PROBE_TIMEOUT_MS, 4096, NULL, &res,
		      reason) < 0)
		goto hint;
	if (res.timed_out) {
		strbuf_addf(reason, "bwrap did not finish `true` within %d ms",
			    PROBE_TIMEOUT_MS);
		goto out;
	}
	if (res.exit_code != 0) {
		strbuf_addf(reason, "`true` in the sandbox exited %d: ", res.exit_code);
		first_line(reason, &res.output);
		goto hint;
	}
	ret = 0;
	goto out;
hint:
	if (read_proc_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", &v) == 0 &&
	    v == 1)
		strbuf_addstr(reason, " (AppArmor restricts unprivileged user namespaces: "
			      "kernel.apparmor_restrict_unprivileged_userns=1)");
out:
	sandbox_fds_close(&f);
	sandbox_result_release(&res);
	return ret;
}

int sandbox_run(const struct sandbox_config *c, const char *workspace_path,
		const char *const *argv, int64_t timeout_ms, size_t output_cap,
		volatile sig_atomic_t *cancel, struct sandbox_result *res,
		struct strbuf *errmsg)
{
	struct sandbox_fds f = SANDBOX_FDS_INIT;
	struct identity id;
	int ret = -1;

	result_init(res);
	if (!argv || !argv[0] || !*argv[0]) {
		strbuf_addstr(errmsg, "empty argv");
		goto out;
	}
	if (!workspace_path || workspace_path[0] != '/') {
		strbuf_addstr(errmsg, "the workspace path must be absolute");
		goto out;
	}
	if (config_check(c, errmsg) < 0 || sandbox_identity(c, &id, errmsg) < 0)
		goto out;
	f.workspace = fd_above_stdio(open(workspace_path,
					  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
	if (f.workspace < 0) {
		strbuf_addf(errmsg, "cannot open the workspace %s: %s", workspace_path,
			    strerror(errno));
		goto out;
	}
	if (id.drop && (check_reachable(workspace_path, &id, errmsg) < 0 ||
			give_workspace(f.workspace, &id, errmsg) < 0))
		goto out;
	if (make_sandbox_fds(&f, errmsg) < 0)
		goto out;
	ret = run_bwrap(c, &id, &f, argv, timeout_ms, output_cap, cancel, res, errmsg);
out:
	sandbox_fds_close(&f);
	return ret;
}
