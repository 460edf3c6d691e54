/* api_publish.c - publish a revision (deterministic build from its
 * checkpoint, never from the live workspace), list publishes, and the
 * signed draft-preview URLs that nginx checks through auth_request. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "appstate.h"
#include "apps.h"
#include "ckpt_crash.h"
#include "ckpt_restore.h"
#include "cmdpolicy.h"
#include "fileutil.h"
#include "handlers.h"
#include "log.h"
#include "prefork.h"
#include "sandbox.h"
#include "services.h"
#include "sha256.h"
#include "strbuf.h"
#include "tool_error.h"
#include "util.h"

#define BUILD_LOG_CAP 16384
/* how long a publish waits for another publish of the same app */
#define PUBLISH_LOCK_WAIT_MS 60000

#define PACKAGE_JSON_CAP (1 << 20)
#define DEPS_NAMED_MAX 20

/* What publish needs to know of a revision's package.json. */
struct package_info {
	int has_build;          /* scripts.build is a string */
	json_object *deps;      /* names in dependencies and devDependencies (array) */
};

static void add_dep_names(json_object *pkg, const char *key, json_object *names)
{
	json_object *deps;

	if (!json_object_object_get_ex(pkg, key, &deps) || !json_object_is_type(deps, json_type_object))
		return;
	json_object_object_foreach(deps, name, version) {
		(void)version;
		json_object_array_add(names, json_object_new_string(name));
	}
}

/* A package.json that is missing or not JSON has no build script. */
static void read_package(const char *dir, struct package_info *pi)
{
	struct strbuf path = STRBUF_INIT, text = STRBUF_INIT;
	json_object *pkg = NULL, *scripts, *build;

	pi->has_build = 0;
	pi->deps = json_object_new_array();
	strbuf_addf(&path, "%s/package.json", dir);
	if (file_read_capped(path.buf, PACKAGE_JSON_CAP, &text) == 0 && (pkg = json_tokener_parse(text.buf)) &&
	    json_object_is_type(pkg, json_type_object)) {
		pi->has_build = json_object_object_get_ex(pkg, "scripts", &scripts) &&
				json_object_object_get_ex(scripts, "build", &build) &&
				json_object_is_type(build, json_type_string);
		add_dep_names(pkg, "dependencies", pi->deps);
		add_dep_names(pkg, "devDependencies", pi->deps);
	}
	json_object_put(pkg);
	strbuf_release(&path);
	strbuf_release(&text);
}

/*
 * A build runs offline (the sandbox has no network) in a folder made from
 * the revision's checkpoint, and checkpoints never hold node_modules: a
 * build that declares packages cannot find them. Rather than fail in the
 * sandbox with a module-not-found trace, say so (422 dependencies_missing).
 * Using the live workspace's node_modules would make the published site
 * depend on something no revision records. -1 after answering.
 */
static int check_dependencies(struct rctx *c, const char *dir, const struct package_info *pi)
{
	struct strbuf nm = STRBUF_INIT, names = STRBUF_INIT;
	size_t n = json_object_array_length(pi->deps);
	json_object *extra, *listed;
	struct stat st;
	int present;

	strbuf_addf(&nm, "%s/node_modules", dir);
	present = lstat(nm.buf, &st) == 0 && S_ISDIR(st.st_mode);
	strbuf_release(&nm);
	if (!n || present)
		return 0;
	listed = json_object_new_array();
	for (size_t i = 0; i < n && i < DEPS_NAMED_MAX; i++) {
		const char *name = json_object_get_string(json_object_array_get_idx(pi->deps, i));

		json_object_array_add(listed, json_object_new_string(name));
		strbuf_addf(&names, "%s%.100s", i ? ", " : "", name);
	}
	extra = json_object_new_object();
	json_object_object_add(extra, "packages", listed);
	respond_error_extra(c, 422, "dependencies_missing", extra,
			    "package.json declares %zu package%s (%s%s) but publish builds run offline from "
			    "the revision's checkpoint, which never holds node_modules: make the build "
			    "script need no packages, or commit the built files and remove the build script",
			    n, n == 1 ? "" : "s", names.buf, n > DEPS_NAMED_MAX ? ", ..." : "");
	strbuf_release(&names);
	return -1;
}

/* Runs `npm run build` in the sandbox under the command policy, as the
 * policy rewrites it (npm gets --ignore-scripts: no pre/post script runs
 * that the policy did not name). */
static int run_build(struct rctx *c, const char *dir, struct strbuf *log_out)
{
	static const char *const argv[] = { "npm", "run", "build", NULL };
	struct cmdpolicy pol;
	struct cmdpolicy_verdict verdict;
	struct sandbox_config sc;
	struct sandbox_result res;
	struct tool_error terr;
	struct strbuf err = STRBUF_INIT;
	volatile sig_atomic_t never = 0;
	int ret = -1;

	memset(&res, 0, sizeof(res));
	memset(&verdict, 0, sizeof(verdict));
	if (cmdpolicy_load(&pol, c->svc->cfg->command_policy, &err) < 0) {
		strbuf_addf(log_out, "command policy unreadable: %s", err.buf);
		goto out;
	}
	if (cmdpolicy_decide(&pol, argv, 3, 0, &verdict, &terr) < 0) {
		strbuf_addf(log_out, "build refused by the command policy: %s", terr.message);
		goto out;
	}
	/* the build may take longer than an ordinary request (and may have
	 * waited for another publish first) */
	worker_allow_more(c->svc->slot, PUBLISH_LOCK_WAIT_MS + verdict.timeout_ms + 30000);
	sandbox_config_from_config(c->svc->cfg, &sc);
	if (sandbox_run(&sc, dir, verdict.argv, verdict.timeout_ms, verdict.output_cap, &never, &res,
			&err) < 0) {
		strbuf_addf(log_out, "the sandbox could not run the build: %s", err.buf);
		goto out;
	}
	strbuf_add(log_out, res.output.buf, res.output.len < BUILD_LOG_CAP ? res.output.len : BUILD_LOG_CAP);
	if (res.timed_out)
		strbuf_addstr(log_out, "\n[build timed out]");
	else if (res.exit_code != 0)
		strbuf_addf(log_out, "\n[build exited with status %d]", res.exit_code);
	else
		ret = 0;
out:
	sandbox_result_release(&res);
	cmdpolicy_verdict_release(&verdict);
	cmdpolicy_release(&pol);
	strbuf_release(&err);
	return ret;
}

/* sha256 over the published tree's manifest: the artifact's identity. */
static int tree_hash(const struct config *cfg, const char *dir, char out[SHA256_HEX_LEN + 1],
		     unsigned *files)
{
	struct strbuf err = STRBUF_INIT;
	struct ws_limits lim;
	struct workspace ws;
	struct manifest m;
	struct tool_error terr;
	json_object *j;
	const char *none[] = { NULL };
	int rc;

	ws_limits_from_config(cfg, &lim);
	manifest_init(&m);
	if (workspace_open(&ws, dir, &lim, none, &err) < 0) {
		strbuf_release(&err);
		return -1;
	}
	rc = manifest_build(&ws, &m, &terr);
	workspace_close(&ws);
	if (rc == 0) {
		j = manifest_to_json(&m);
		sha256_hex(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN),
			   strlen(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN)), out);
		*files = (unsigned)m.n;
		json_object_put(j);
	}
	manifest_release(&m);
	strbuf_release(&err);
	return rc;
}

/*
 * Copies the regular files of a build's output folder into dst, a new
 * folder of our own. The output belongs to the sandbox user and may hold
 * anything a build script made (symlinks, FIFOs, files it keeps writing):
 * only plain files within the workspace limits are published, owned by us.
 */
static int copy_output(const struct config *cfg, const char *src, const char *dst,
		       struct strbuf *log_out)
{
	struct strbuf err = STRBUF_INIT, data = STRBUF_INIT;
	struct workspace from, to;
	struct ws_limits lim;
	struct manifest m;
	struct tool_error terr;
	const char *none[] = { NULL };
	int from_ok = 0, to_ok = 0, ret = -1;
	size_t i;

	ws_limits_from_config(cfg, &lim);
	manifest_init(&m);
	if (workspace_open(&from, src, &lim, none, &err) < 0) {
		strbuf_addf(log_out, "\n[the build output is not a plain folder: %s]", err.buf);
		goto out;
	}
	from_ok = 1;
	if (manifest_build(&from, &m, &terr) < 0) {
		strbuf_addf(log_out, "\n[the build output cannot be read: %s]", terr.message);
		goto out;
	}
	if (mkdir(dst, 0755) < 0 || workspace_open(&to, dst, &lim, none, &err) < 0) {
		strbuf_addf(log_out, "\n[cannot create the publish folder: %s]",
			    err.len ? err.buf : strerror(errno));
		goto out;
	}
	to_ok = 1;
	for (i = 0; i < m.n; i++) {
		strbuf_reset(&data);
		if (ws_read_file(&from, m.v[i].path, (size_t)lim.max_file_size, &data, &terr) < 0 ||
		    ws_write_file(&to, m.v[i].path, data.buf, data.len, m.v[i].mode, &terr) < 0) {
			strbuf_addf(log_out, "\n[cannot publish %.200s: %s]", m.v[i].path, terr.message);
			goto out;
		}
	}
	ret = 0;
out:
	if (to_ok)
		workspace_close(&to);
	if (from_ok)
		workspace_close(&from);
	manifest_release(&m);
	strbuf_release(&err);
	strbuf_release(&data);
	return ret;
}

#define PUBLISHED_KEEP 3          /* published trees kept per app, current included */
#define STALE_BUILD_SECONDS 3600  /* a build folder this old was left by a crash */

struct aged_entry {
	char name[256];
	time_t mtime;
};

static int newest_first(const void *a, const void *b)
{
	const struct aged_entry *x = a, *y = b;

	return x->mtime < y->mtime ? 1 : x->mtime > y->mtime ? -1 : strcmp(x->name, y->name);
}

/*
 * Removes entries of dir: with prefix, those older than max_age seconds
 * (max_age >= 0); else all but the keep newest, never `spare`. Rollback to
 * an older revision rebuilds it from its checkpoint, so old trees are only
 * a cache.
 */
static void prune_dir(const char *dir, const char *prefix, time_t max_age, size_t keep,
		      const char *spare)
{
	struct strbuf path = STRBUF_INIT;
	struct aged_entry *v = NULL;
	size_t n = 0, i;
	struct dirent *de;
	struct stat st;
	time_t now = time(NULL);
	DIR *d = opendir(dir);

	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.' || !strcmp(de->d_name, "current") ||
		    (prefix && strncmp(de->d_name, prefix, strlen(prefix))) ||
		    (spare && !strcmp(de->d_name, spare)) || strlen(de->d_name) >= sizeof(v->name))
			continue;
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/%s", dir, de->d_name);
		if (lstat(path.buf, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		v = xrealloc(v, n + 1, sizeof(*v));
		memcpy(v[n].name, de->d_name, strlen(de->d_name) + 1);
		v[n].mtime = st.st_mtime;
		n++;
	}
	if (d)
		closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), newest_first);
	for (i = 0; i < n; i++) {
		/* young trees may belong to a publish still under way */
		if (max_age >= 0 ? now - v[i].mtime <= max_age
				 : i + (spare ? 1 : 0) < keep || now - v[i].mtime < 300)
			continue;
		strbuf_reset(&path);
		strbuf_addf(&path, "%s/%s", dir, v[i].name);
		rm_rf(path.buf);
	}
	free(v);
	strbuf_release(&path);
}

/* Points <site>/current at target atomically (symlink + rename). */
static int swap_current(const char *site, const char *target)
{
	struct strbuf tmp = STRBUF_INIT, cur = STRBUF_INIT;
	int ret = 0;

	strbuf_addf(&tmp, "%s/.current.tmp-%d", site, (int)getpid());
	strbuf_addf(&cur, "%s/current", site);
	unlink(tmp.buf);
	if (symlink(target, tmp.buf) < 0 || rename(tmp.buf, cur.buf) < 0)
		ret = -errno;
	else
		fsync_dir(site);
	unlink(tmp.buf);
	strbuf_release(&tmp);
	strbuf_release(&cur);
	return ret;
}

static void publish_json_add(json_object *o, const struct db_result *r, size_t i, const char *url)
{
	json_object_object_add(o, "id", json_id(db_val(r, i, 0)));
	json_object_object_add(o, "revision_id", json_id(db_val(r, i, 1)));
	json_object_object_add(o, "artifact_sha256", json_object_new_string(db_val(r, i, 2)));
	json_object_object_add(o, "built", json_object_new_boolean(db_int(r, i, 3) != 0));
	json_object_object_add(o, "created_at", json_time(db_val(r, i, 4)));
	json_object_object_add(o, "url", json_object_new_string(url));
}

/*
 * One publish of an app at a time: they share the site's `current` link
 * and the app's published_revision_id. A per-app flock (released if the
 * worker dies), waited for up to PUBLISH_LOCK_WAIT_MS, then 409
 * publish_in_progress. Returns the lock fd, or -1 after answering.
 */
static int publish_lock(struct rctx *c, int64_t app_id)
{
	struct strbuf path = STRBUF_INIT;
	int64_t deadline = mono_ms() + PUBLISH_LOCK_WAIT_MS;
	int fd;

	state_path(c->svc->cfg, &path, "locks");
	mkdir_p(path.buf, 0755);
	strbuf_addf(&path, "/publish-%lld.lock", (long long)app_id);
	fd = open(path.buf, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	strbuf_release(&path);
	if (fd < 0) {
		log_error("publish lock of app %lld: %s", (long long)app_id, strerror(errno));
		respond_error(c, 500, "publish_failed", "the publish lock cannot be opened");
		return -1;
	}
	worker_allow_more(c->svc->slot, PUBLISH_LOCK_WAIT_MS + 30000);
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			log_error("publish lock of app %lld: %s", (long long)app_id, strerror(errno));
			respond_error(c, 500, "publish_failed", "the publish lock cannot be taken");
			close(fd);
			return -1;
		}
		if (mono_ms() >= deadline) {
			respond_error(c, 409, "publish_in_progress",
				      "another publish of this app has run for over %d s; try again when it ends",
				      PUBLISH_LOCK_WAIT_MS / 1000);
			close(fd);
			return -1;
		}
		sleep_ms(50);
	}
	return fd;
}

/* "<revision>-<first 12 digits of the artifact hash>": a published tree. */
static void tree_name(struct strbuf *out, int64_t rev_id, const char *hash)
{
	strbuf_addf(out, "%lld-%.12s", (long long)rev_id, hash);
}

/*
 * The publish row is committed before `current` is switched, so a crash in
 * between leaves the database one publish ahead of the link. Every publish
 * first points `current` at the tree of the newest row (when that tree is
 * there), so the two agree again even if this publish then fails. 0, or
 * -1 after answering a database error.
 */
static int heal_current(struct rctx *c, int64_t app_id, const char *site)
{
	struct strbuf want = STRBUF_INIT, link = STRBUF_INIT, dir = STRBUF_INIT;
	struct db_result r;
	char target[256];
	ssize_t n;

	if (db_query(&c->svc->db, &r, "SELECT revision_id, artifact_sha256 FROM publishes WHERE id = "
				      "(SELECT MAX(id) FROM publishes WHERE app_id = ?)", "i", app_id) < 0) {
		respond_db_error(c);
		return -1;
	}
	if (r.nrows == 1) {
		tree_name(&want, db_int(&r, 0, 0), db_val(&r, 0, 1));
		strbuf_addf(&link, "%s/current", site);
		strbuf_addf(&dir, "%s/%s", site, want.buf);
		n = readlink(link.buf, target, sizeof(target) - 1);
		if (n >= 0)
			target[n] = '\0';
		if ((n < 0 || strcmp(target, want.buf)) && access(dir.buf, F_OK) == 0) {
			log_warn("publish: %s pointed at %s, not at %s, the last recorded publish: switching",
				 link.buf, n < 0 ? "nothing" : target, want.buf);
			if (swap_current(site, want.buf) < 0)
				log_error("publish: cannot switch %s: %s", link.buf, strerror(errno));
		}
	}
	db_result_free(&r);
	strbuf_release(&want);
	strbuf_release(&link);
	strbuf_release(&dir);
	return 0;
}

/* The publish row and the app's published revision, together. */
static int record_publish(struct rctx *c, int64_t app_id, int64_t rev_id, const char *hash, int built)
{
	struct db *db = &c->svc->db;

	if (db_begin(db) < 0)
		return -1;
	if (db_exec(db, "INSERT INTO publishes (app_id, revision_id, artifact_sha256, built, token_id) "
			"VALUES (?, ?, ?, ?, ?)", "iisii", app_id, rev_id, hash, (int64_t)built, c->token_id) < 0 ||
	    db_exec(db, "UPDATE apps SET published_revision_id = ? WHERE id = ?", "ii", rev_id, app_id) < 0) {
		db_rollback(db);
		return -1;
	}
	return db_commit(db);
}

static void respond_build_failed(struct rctx *c, const char *code, const struct strbuf *blog,
				 const char *message)
{
	json_object *extra = json_object_new_object();

	json_object_object_add(extra, "log", json_object_new_string_len(strbuf_str(blog), (int)blog->len));
	respond_error_extra(c, 422, code, extra, "%s", message);
}

/*
 * Makes the tree to publish from the extracted checkpoint at build: the
 * files as they are, or a build's output copied out of the sandbox's reach.
 * *out names it; *built says whether a build ran. -1 after answering.
 */
static int make_tree(struct rctx *c, const char *build, struct strbuf *out, struct strbuf *copy,
		     int *built)
{
	struct strbuf blog = STRBUF_INIT;
	struct package_info pi;
	int ret = -1;

	read_package(build, &pi);
	strbuf_addstr(out, build);
	*built = pi.has_build;
	if (!pi.has_build) {
		ret = 0;
		goto out;
	}
	if (check_dependencies(c, build, &pi) < 0)
		goto out;
	if (run_build(c, build, &blog) < 0) {
		respond_build_failed(c, "build_failed", &blog,
				     "the build failed; the last published version keeps serving");
		goto out;
	}
	strbuf_reset(out);
	strbuf_addf(out, "%s/dist", build);
	if (access(out->buf, F_OK) != 0) {
		strbuf_reset(out);
		strbuf_addf(out, "%s/build", build);
	}
	if (access(out->buf, F_OK) != 0) {
		strbuf_addstr(&blog, "\n[the build produced neither dist/ nor build/]");
		respond_build_failed(c, "build_failed", &blog, "the build produced no output folder");
		goto out;
	}
	strbuf_addf(copy, "%s-out", build);
	if (copy_output(c->svc->cfg, out->buf, copy->buf, &blog) < 0) {
		respond_build_failed(c, "build_failed", &blog, "the build output cannot be published");
		goto out;
	}
	strbuf_reset(out);
	strbuf_addstr(out, copy->buf);
	ret = 0;
out:
	json_object_put(pi.deps);
	strbuf_release(&blog);
	return ret;
}

/* A clean folder made from the checkpoint; -1 after answering. */
static int extract_clean(struct rctx *c, int64_t app_id, const struct ckpt_row *ck, struct strbuf *build)
{
	struct strbuf err = STRBUF_INIT, dir = STRBUF_INIT, prefix = STRBUF_INIT;
	unsigned char rnd[6];
	char hex[13];
	int ret = 0;

	if (random_bytes(rnd, sizeof(rnd)) < 0) {
		respond_error(c, 500, "publish_failed", "no randomness for the build folder");
		return -1;
	}
	hex_encode(rnd, sizeof(rnd), hex);
	state_path(c->svc->cfg, &dir, "builds");
	mkdir_p(dir.buf, 0755);
	/* under the publish lock, this app's old build folders are leftovers */
	strbuf_addf(&prefix, "%lld-", (long long)app_id);
	prune_dir(dir.buf, prefix.buf, STALE_BUILD_SECONDS, 0, NULL);
	state_path(c->svc->cfg, build, "builds/%lld-%s", (long long)app_id, hex);
	if (ckpt_extract(&c->svc->ckpts, ck->archive, ck->sha256, build->buf, &err) < 0) {
		log_error("publish: checkpoint %lld: %s", (long long)ck->id, err.buf);
		respond_error(c, 500, "checkpoint_unreadable", "the revision's checkpoint cannot be read");
		strbuf_reset(build); /* nothing to remove */
		ret = -1;
	}
	strbuf_release(&err);
	strbuf_release(&dir);
	strbuf_release(&prefix);
	return ret;
}

static void respond_publish(struct rctx *c, const struct app_row *app, unsigned files)
{
	struct strbuf url = STRBUF_INIT;
	struct db_result r;
	json_object *o;

	strbuf_addf(&url, "%s/%s/%s/", c->svc->cfg->publish_base_url, c->org_slug, app->slug);
	if (db_query(&c->svc->db, &r, "SELECT id, revision_id, artifact_sha256, built, created_at FROM publishes "
				      "WHERE id = (SELECT MAX(id) FROM publishes WHERE app_id = ?)", "i", app->id) < 0) {
		respond_db_error(c);
		strbuf_release(&url);
		return;
	}
	o = json_object_new_object();
	if (r.nrows == 1) {
		json_object *p = json_object_new_object();

		publish_json_add(p, &r, 0, url.buf);
		json_object_object_add(p, "file_count", json_object_new_int64(files));
		json_object_object_add(o, "publish", p);
	}
	db_result_free(&r);
	respond_json(c, 200, o);
	strbuf_release(&url);
}

void h_publish(struct rctx *c)
{
	struct strbuf build = STRBUF_INIT, out = STRBUF_INIT, site = STRBUF_INIT;
	struct strbuf final = STRBUF_INIT, rel = STRBUF_INIT, copy = STRBUF_INIT;
	char hash[SHA256_HEX_LEN + 1];
	struct app_row app;
	struct ckpt_row ck;
	struct manifest m;
	json_object *body = NULL;
	int64_t rev_id, ckpt_id = 0;
	unsigned files = 0;
	int built = 0, found, lock = -1;

	manifest_init(&m);
	if (app_load(c, c->id[0], &app) < 0 || request_json_body(c, 1, &body) < 0)
		goto out;
	rev_id = app.draft_revision_id;
	if (body_int(c, body, "revision_id", 0, 1, INT64_MAX, &rev_id) < 0)
		goto out;
	if (rev_id <= 0) {
		respond_error(c, 409, "conflict", "the app has no revision to publish yet");
		goto out;
	}
	found = revision_manifest(&c->svc->db, app.id, rev_id, &m, &ckpt_id);
	if (found < 0) {
		respond_db_error(c);
		goto out;
	}
	if (!found || ckpt_id <= 0 || ckpt_row_load(&c->svc->db, app.id, ckpt_id, &ck) != 1) {
		respond_field_error(c, "revision_id", "revision %lld does not exist for this app",
				    (long long)rev_id);
		goto out;
	}
	lock = publish_lock(c, app.id);
	if (lock < 0)
		goto out;
	ckpt_crash_point("publish", 1);
	state_path(c->svc->cfg, &site, "published/%s/%s", c->org_slug, app.slug);
	mkdir_p(site.buf, 0755);
	if (heal_current(c, app.id, site.buf) < 0 || extract_clean(c, app.id, &ck, &build) < 0 ||
	    make_tree(c, build.buf, &out, &copy, &built) < 0)
		goto out;
	if (tree_hash(c->svc->cfg, out.buf, hash, &files) < 0) {
		respond_error(c, 500, "publish_failed", "the build output cannot be read");
		goto out;
	}
	tree_name(&rel, rev_id, hash);
	strbuf_addf(&final, "%s/%s", site.buf, rel.buf);
	/* the same tree published before is the same files: keep that one */
	if (access(final.buf, F_OK) != 0 && rename(out.buf, final.buf) < 0) {
		log_error("publish: rename %s: %s", final.buf, strerror(errno));
		respond_error(c, 500, "publish_failed", "the published tree could not be stored");
		goto out;
	}
	fsync_dir(site.buf);
	ckpt_crash_point("publish", 2); /* stored, not recorded */
	if (record_publish(c, app.id, rev_id, hash, built) < 0) {
		respond_db_error(c);
		goto out;
	}
	ckpt_crash_point("publish", 3); /* recorded, the link not switched */
	if (swap_current(site.buf, rel.buf) < 0) {
		/* recorded: the next publish switches it (heal_current) */
		log_error("publish: cannot switch %s/current to %s: %s", site.buf, rel.buf, strerror(errno));
		respond_error(c, 500, "publish_failed", "the site could not be switched to the new version");
		goto out;
	}
	ckpt_crash_point("publish", 4); /* switched, old trees not pruned */
	prune_dir(site.buf, NULL, -1, PUBLISHED_KEEP, rel.buf);
	respond_publish(c, &app, files);
out:
	if (build.len)
		rm_rf(build.buf);
	if (copy.len)
		rm_rf(copy.buf);
	if (lock >= 0)
		close(lock); /* releases the flock */
	manifest_release(&m);
	json_object_put(body);
	strbuf_release(&build);
	strbuf_release(&out);
	strbuf_release(&site);
	strbuf_release(&final);
	strbuf_release(&rel);
	strbuf_release(&copy);
}

void h_publishes_list(struct rctx *c)
{
	struct strbuf url = STRBUF_INIT;
	struct app_row app;
	struct db_result r;
	json_object *items;
	int64_t limit, cursor;
	size_t i;

	if (app_load(c, c->id[0], &app) < 0 || page_params(c, &limit, &cursor) < 0)
		return;
	if (db_query(&c->svc->db, &r, "SELECT id, revision_id, artifact_sha256, built, created_at FROM publishes "
				      "WHERE app_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
		     "iii", app.id, cursor, limit) < 0) {
		respond_db_error(c);
		return;
	}
	strbuf_addf(&url, "%s/%s/%s/", c->svc->cfg->publish_base_url, c->org_slug, app.slug);
	items = json_object_new_array();
	for (i = 0; i < r.nrows; i++) {
		json_object *p = json_object_new_object();

		publish_json_add(p, &r, i, url.buf);
		json_object_array_add(items, p);
	}
	respond_json(c, 200, page_json(items, limit, r.nrows ? db_int(&r, r.nrows - 1, 0) : 0));
	db_result_free(&r);
	strbuf_release(&url);
}

static void preview_sign(const struct services *svc, int64_t app_id, int64_t expiry,
			 char out[SHA256_HEX_LEN + 1])
{
	char msg[64];
	int n = snprintf(msg, sizeof(msg), "preview:%lld:%lld", (long long)app_id, (long long)expiry);

	hmac_sha256_hex(svc->secret, sizeof(svc->secret), msg, (size_t)n, out);
}

void h_preview_url(struct rctx *c)
{
	struct strbuf url = STRBUF_INIT;
	char sig[SHA256_HEX_LEN + 1];
	struct app_row app;
	json_object *o;
	int64_t expiry;

	if (app_load(c, c->id[0], &app) < 0)
		return;
	expiry = now_ms() / 1000 + c->svc->cfg->preview_ttl_s;
	preview_sign(c->svc, app.id, expiry, sig);
	strbuf_addf(&url, "/preview/%lld/%lld/%s/", (long long)app.id, (long long)expiry, sig);
	o = json_object_new_object();
	json_object_object_add(o, "url", json_object_new_string(url.buf));
	json_object_object_add(o, "expires_in", json_object_new_int64(c->svc->cfg->preview_ttl_s));
	respond_json(c, 200, o);
	strbuf_release(&url);
}

/* Reads the decimal number at *p (no sign, no leading zero) up to '/'. */
static int preview_number(const char **p, long long *out)
{
	const char *s = *p;
	long long v = 0;

	if (*s < '1' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (INT64_MAX - (*s - '0')) / 10)
			return -1;
		v = v * 10 + (*s - '0');
	}
	if (*s != '/')
		return -1;
	*out = v;
	*p = s + 1;
	return 0;
}

/*
 * Splits "/preview/<app>/<expiry>/<sig>/<rest>" of the URI as the client
 * sent it. nginx picks the workspace from the URI after decoding and
 * resolving dot segments, so a "." or ".." segment in the rest (plain or
 * percent-encoded) could make it serve another app than the one signed:
 * such URIs are refused outright.
 */
static int preview_parse(const char *uri, long long *app_id, long long *expiry,
			 char sig[SHA256_HEX_LEN + 1])
{
	struct strbuf path = STRBUF_INIT;
	const char *q = strchr(uri, '?'), *p, *seg;
	size_t i;
	int ret = -1;

	if (http_percent_decode(uri, q ? (size_t)(q - uri) : strlen(uri), &path) < 0)
		goto out;
	p = path.buf;
	if (strncmp(p, "/preview/", 9))
		goto out;
	p += 9;
	if (preview_number(&p, app_id) < 0 || preview_number(&p, expiry) < 0)
		goto out;
	for (i = 0; i < SHA256_HEX_LEN; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			goto out;
	if (p[i] != '/')
		goto out;
	memcpy(sig, p, SHA256_HEX_LEN);
	sig[SHA256_HEX_LEN] = '\0';
	for (seg = p + i + 1; *seg;) {
		size_t len = strcspn(seg, "/");

		if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
			goto out;
		seg += len;
		if (*seg == '/')
			seg++;
	}
	ret = 0;
out:
	strbuf_release(&path);
	return ret;
}

/* nginx auth_request: 204 lets the preview file through, 403 stops it. */
void h_preview_auth(struct rctx *c)
{
	const char *uri = http_param(c->req, "HTTP_X_ORIGINAL_URI");
	char sig[SHA256_HEX_LEN + 1], want[SHA256_HEX_LEN + 1];
	long long app_id, expiry;

	if (!uri || preview_parse(uri, &app_id, &expiry, sig) < 0) {
		respond_error(c, 403, "forbidden", "not a valid preview URL");
		return;
	}
	preview_sign(c->svc, app_id, expiry, want);
	if (!ct_equal(sig, want, SHA256_HEX_LEN) || expiry < now_ms() / 1000) {
		respond_error(c, 403, "forbidden", "the preview link is invalid or expired");
		return;
	}
	respond_empty(c, 204);
}
