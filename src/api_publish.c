/* api_publish.c - publish a revision (deterministic build from its
 * checkpoint, never from the live workspace), list publishes, and the
 * signed draft-preview URLs that nginx checks through auth_request. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "appstate.h"
#include "apps.h"
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

/* "build" script of package.json in dir, or 0 when there is none. */
static int has_build_script(const char *dir)
{
	struct strbuf path = STRBUF_INIT, text = STRBUF_INIT;
	json_object *pkg = NULL, *scripts, *build;
	int yes = 0;

	strbuf_addf(&path, "%s/package.json", dir);
	if (file_read_capped(path.buf, 1 << 20, &text) == 0 && (pkg = json_tokener_parse(text.buf)) &&
	    json_object_object_get_ex(pkg, "scripts", &scripts) &&
	    json_object_object_get_ex(scripts, "build", &build) && json_object_is_type(build, json_type_string))
		yes = 1;
	json_object_put(pkg);
	strbuf_release(&path);
	strbuf_release(&text);
	return yes;
}

/* Runs `npm run build` in the sandbox under the command policy. */
static int run_build(struct rctx *c, const char *dir, struct strbuf *log_out)
{
	static const char *const argv[] = { "npm", "run", "build", NULL };
	struct cmdpolicy pol;
	struct sandbox_config sc;
	struct sandbox_result res;
	struct tool_error terr;
	struct strbuf err = STRBUF_INIT;
	volatile sig_atomic_t never = 0;
	int64_t timeout;
	size_t cap;
	int ret = -1;

	memset(&res, 0, sizeof(res));
	if (cmdpolicy_load(&pol, c->svc->cfg->command_policy, &err) < 0) {
		strbuf_addf(log_out, "command policy unreadable: %s", err.buf);
		strbuf_release(&err);
		return -1;
	}
	if (cmdpolicy_check(&pol, argv, 3, 0, &timeout, &cap, &terr) < 0) {
		strbuf_addf(log_out, "build refused by the command policy: %s", terr.message);
		goto out;
	}
	/* the build may take longer than an ordinary request */
	worker_allow_more(c->svc->slot, timeout + 30000);
	sandbox_config_default(&sc);
	sc.run_uid = (uid_t)c->svc->cfg->sandbox_uid;
	sc.run_gid = (gid_t)c->svc->cfg->sandbox_gid;
	sc.mem_bytes = (uint64_t)c->svc->cfg->sandbox_mem_mb << 20;
	sc.cpu_seconds = (uint64_t)c->svc->cfg->sandbox_cpu_s;
	sc.max_procs = (uint64_t)c->svc->cfg->sandbox_max_procs;
	if (sandbox_run(&sc, dir, argv, timeout, cap, &never, &res, &err) < 0) {
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

void h_publish(struct rctx *c)
{
	struct strbuf build = STRBUF_INIT, out = STRBUF_INIT, site = STRBUF_INIT, err = STRBUF_INIT;
	struct strbuf blog = STRBUF_INIT, final = STRBUF_INIT, url = STRBUF_INIT, rel = STRBUF_INIT;
	struct strbuf copy = STRBUF_INIT;
	char hash[SHA256_HEX_LEN + 1];
	struct app_row app;
	struct ckpt_row ck;
	struct manifest m;
	struct db_result r;
	json_object *body = NULL, *o;
	int64_t rev_id, ckpt_id = 0, pub_id;
	unsigned char rnd[6];
	char hex[13];
	unsigned files = 0;
	int built = 0, found;

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
	/* A clean folder made from the revision's checkpoint. */
	random_bytes(rnd, sizeof(rnd));
	hex_encode(rnd, sizeof(rnd), hex);
	state_path(c->svc->cfg, &build, "builds/%lld-%s", (long long)app.id, hex);
	state_path(c->svc->cfg, &site, "builds");
	mkdir_p(site.buf, 0755);
	{
		struct strbuf prefix = STRBUF_INIT;

		strbuf_addf(&prefix, "%lld-", (long long)app.id);
		prune_dir(site.buf, prefix.buf, STALE_BUILD_SECONDS, 0, NULL);
		strbuf_release(&prefix);
	}
	if (ckpt_extract(&c->svc->ckpts, ck.archive, ck.sha256, build.buf, &err) < 0) {
		log_error("publish: checkpoint %lld: %s", (long long)ck.id, err.buf);
		respond_error(c, 500, "checkpoint_unreadable", "the revision's checkpoint cannot be read");
		goto out;
	}
	strbuf_addstr(&out, build.buf);
	if (has_build_script(build.buf)) {
		built = 1;
		if (run_build(c, build.buf, &blog) < 0) {
			json_object *extra = json_object_new_object();

			json_object_object_add(extra, "log", json_object_new_string_len(blog.buf, (int)blog.len));
			respond_error_extra(c, 422, "build_failed", extra,
					    "the build failed; the last published version keeps serving");
			goto out;
		}
		strbuf_reset(&out);
		strbuf_addf(&out, "%s/dist", build.buf);
		if (access(out.buf, F_OK) != 0) {
			strbuf_reset(&out);
			strbuf_addf(&out, "%s/build", build.buf);
		}
		if (access(out.buf, F_OK) != 0) {
			json_object *extra = json_object_new_object();

			strbuf_addstr(&blog, "\n[the build produced neither dist/ nor build/]");
			json_object_object_add(extra, "log", json_object_new_string_len(blog.buf, (int)blog.len));
			respond_error_extra(c, 422, "build_failed", extra, "the build produced no output folder");
			goto out;
		}
		strbuf_addf(&copy, "%s-out", build.buf);
		if (copy_output(c->svc->cfg, out.buf, copy.buf, &blog) < 0) {
			json_object *extra = json_object_new_object();

			json_object_object_add(extra, "log", json_object_new_string_len(blog.buf, (int)blog.len));
			respond_error_extra(c, 422, "build_failed", extra, "the build output cannot be published");
			goto out;
		}
		strbuf_reset(&out);
		strbuf_addstr(&out, copy.buf);
	}
	if (tree_hash(c->svc->cfg, out.buf, hash, &files) < 0) {
		respond_error(c, 500, "publish_failed", "the build output cannot be read");
		goto out;
	}
	state_path(c->svc->cfg, &site, "published/%s/%s", c->org_slug, app.slug);
	mkdir_p(site.buf, 0755);
	strbuf_addf(&rel, "%lld-%.12s", (long long)rev_id, hash);
	strbuf_addf(&final, "%s/%s", site.buf, rel.buf);
	/* the same revision and tree published at the same time: one rename
	 * wins, and the tree it stored is this one too */
	if (access(final.buf, F_OK) != 0 && rename(out.buf, final.buf) < 0 && errno != EEXIST &&
	    errno != ENOTEMPTY) {
		log_error("publish: rename %s: %s", final.buf, strerror(errno));
		respond_error(c, 500, "publish_failed", "the published tree could not be stored");
		goto out;
	}
	fsync_dir(site.buf);
	if (swap_current(site.buf, rel.buf) < 0) {
		respond_error(c, 500, "publish_failed", "the site could not be switched to the new version");
		goto out;
	}
	prune_dir(site.buf, NULL, -1, PUBLISHED_KEEP, rel.buf);
	if (db_exec(&c->svc->db, "INSERT INTO publishes (app_id, revision_id, artifact_sha256, built, token_id) "
				 "VALUES (?, ?, ?, ?, ?)", "iisii", app.id, rev_id, hash, (int64_t)built,
		    c->token_id) < 0 ||
	    db_exec(&c->svc->db, "UPDATE apps SET published_revision_id = ? WHERE id = ?", "ii", rev_id,
		    app.id) < 0) {
		respond_db_error(c);
		goto out;
	}
	pub_id = (int64_t)c->svc->db.last_insert_id;
	strbuf_addf(&url, "%s/%s/%s/", c->svc->cfg->publish_base_url, c->org_slug, app.slug);
	if (db_query(&c->svc->db, &r, "SELECT id, revision_id, artifact_sha256, built, created_at FROM publishes "
				      "WHERE id = (SELECT MAX(id) FROM publishes WHERE app_id = ?)", "i", app.id) < 0) {
		respond_db_error(c);
		goto out;
	}
	o = json_object_new_object();
	if (r.nrows == 1) {
		json_object *p = json_object_new_object();

		publish_json_add(p, &r, 0, url.buf);
		json_object_object_add(p, "file_count", json_object_new_int64(files));
		json_object_object_add(o, "publish", p);
	}
	db_result_free(&r);
	(void)pub_id;
	respond_json(c, 200, o);
out:
	if (build.len)
		rm_rf(build.buf);
	if (copy.len)
		rm_rf(copy.buf);
	manifest_release(&m);
	json_object_put(body);
	strbuf_release(&build);
	strbuf_release(&out);
	strbuf_release(&site);
	strbuf_release(&err);
	strbuf_release(&blog);
	strbuf_release(&final);
	strbuf_release(&url);
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
