/* services.c - per-process services and state-folder paths (see services.h). */
#include "services.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "appstate.h"
#include "fileutil.h"
#include "log.h"
#include "strbuf.h"
#include "util.h"

void state_path(const struct config *cfg, struct strbuf *out, const char *fmt, ...)
{
	va_list ap;

	strbuf_reset(out);
	strbuf_addf(out, "%s/", cfg->state_dir);
	va_start(ap, fmt);
	strbuf_vaddf(out, fmt, ap);
	va_end(ap);
}

void app_workspace_path(const struct config *cfg, int64_t app_id, struct strbuf *out)
{
	state_path(cfg, out, "workspaces/%lld", (long long)app_id);
}

static int hex_decode32(const char *hex, unsigned char out[32])
{
	size_t i;

	for (i = 0; i < 32; i++) {
		unsigned v;

		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return 0;
}

int services_secret_ensure(const struct config *cfg, unsigned char secret[32], struct strbuf *err)
{
	struct strbuf text = STRBUF_INIT;
	char hex[65];
	int rc, ret = -1;

	rc = file_read_capped(cfg->secret_file, 256, &text);
	if (rc == -ENOENT) {
		if (random_bytes(secret, 32) < 0) {
			strbuf_addstr(err, "getrandom failed");
			goto out;
		}
		hex_encode(secret, 32, hex);
		rc = file_write_atomic(cfg->secret_file, hex, 64, 0600);
		if (rc < 0) {
			strbuf_addf(err, "cannot write %s: %s", cfg->secret_file, strerror(-rc));
			goto out;
		}
		ret = 0;
		goto out;
	}
	if (rc < 0 || text.len < 64 || hex_decode32(text.buf, secret) < 0) {
		strbuf_addf(err, "%s is unreadable or malformed", cfg->secret_file);
		goto out;
	}
	ret = 0;
out:
	strbuf_release(&text);
	return ret;
}

int services_init(struct services *svc, struct config *cfg, struct strbuf *err)
{
	memset(svc, 0, sizeof(*svc));
	svc->cfg = cfg;
	if (services_secret_ensure(cfg, svc->secret, err) < 0 ||
	    app_ckpt_store_open(cfg, &svc->ckpts, err) < 0)
		return -1;
	/* A database that is down now may be up later: workers start anyway
	 * and answer 503 until it is reachable. */
	if (db_connect(&svc->db, cfg) < 0)
		log_warn("database unreachable at start: %s", svc->db.errmsg);
	return 0;
}

void services_release(struct services *svc)
{
	db_close(&svc->db);
	ckpt_store_close(&svc->ckpts);
}
