/* auth.c - API token issue, revocation and checking (see auth.h). */
#include "auth.h"

#include <string.h>

#include "api.h"
#include "db.h"
#include "sha256.h"
#include "strbuf.h"
#include "util.h"

static int is_lower_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int auth_token_well_formed(const char *tok, size_t len)
{
	return len == TOKEN_LEN && !memcmp(tok, TOKEN_PREFIX, TOKEN_PREFIX_LEN) &&
	       is_lower_hex(tok + TOKEN_PREFIX_LEN, TOKEN_LEN - TOKEN_PREFIX_LEN);
}

void auth_token_hash(const char *tok, size_t len, char hash[SHA256_HEX_LEN + 1])
{
	sha256_hex(tok, len, hash);
}

int auth_token_generate(struct strbuf *token, char prefix[TOKEN_SHOWN_LEN + 1],
			char hash[SHA256_HEX_LEN + 1])
{
	unsigned char rnd[(TOKEN_LEN - TOKEN_PREFIX_LEN) / 2];
	char hex[sizeof(rnd) * 2 + 1];

	if (random_bytes(rnd, sizeof(rnd)) < 0)
		return -1;
	hex_encode(rnd, sizeof(rnd), hex);
	strbuf_reset(token);
	strbuf_addf(token, "%s%s", TOKEN_PREFIX, hex);
	auth_token_hash(token->buf, token->len, hash);
	memcpy(prefix, token->buf, TOKEN_SHOWN_LEN);
	prefix[TOKEN_SHOWN_LEN] = '\0';
	return 0;
}

int auth_token_create(struct db *db, int64_t org_id, const char *name,
		      int64_t expires_days, struct strbuf *token, int64_t *token_id)
{
	char hash[SHA256_HEX_LEN + 1], prefix[TOKEN_SHOWN_LEN + 1];
	int64_t rc;

	if (auth_token_generate(token, prefix, hash) < 0)
		return -1;
	if (expires_days > 0)
		rc = db_exec(db, "INSERT INTO api_tokens (org_id, name, prefix, token_sha256, expires_at) "
				 "VALUES (?, ?, ?, ?, NOW(3) + INTERVAL ? DAY)",
			     "issi", org_id, name, prefix, hash, expires_days);
	else
		rc = db_exec(db, "INSERT INTO api_tokens (org_id, name, prefix, token_sha256) VALUES (?, ?, ?, ?)",
			     "iss" "s", org_id, name, prefix, hash);
	if (rc < 0)
		return -1;
	*token_id = (int64_t)db->last_insert_id;
	return 0;
}

int64_t auth_token_revoke_id(struct db *db, int64_t token_id)
{
	return db_exec(db, "UPDATE api_tokens SET revoked_at = NOW(3) WHERE id = ? AND revoked_at IS NULL",
		       "i", token_id);
}

int auth_token_revoke_match(struct db *db, int64_t org_id, const char *what, struct strbuf *matches)
{
	char prefix[TOKEN_SHOWN_LEN + 1], hash[SHA256_HEX_LEN + 1];
	struct db_result r;
	size_t len = strlen(what), i;
	int rc;

	if (auth_token_well_formed(what, len)) {
		/* the whole token: exactly one row can match */
		auth_token_hash(what, len, hash);
		rc = db_query(db, &r, "SELECT id FROM api_tokens WHERE org_id = ? AND token_sha256 = ? "
				      "AND revoked_at IS NULL", "is", org_id, hash);
	} else {
		/* "kiln_" and the first 8 hex digits as `token list` shows them,
		 * or just the 8 hex digits */
		if (len == TOKEN_SHOWN_LEN - TOKEN_PREFIX_LEN && is_lower_hex(what, len))
			snprintf(prefix, sizeof(prefix), "%s%s", TOKEN_PREFIX, what);
		else if (len == TOKEN_SHOWN_LEN && !memcmp(what, TOKEN_PREFIX, TOKEN_PREFIX_LEN) &&
			 is_lower_hex(what + TOKEN_PREFIX_LEN, len - TOKEN_PREFIX_LEN))
			memcpy(prefix, what, TOKEN_SHOWN_LEN + 1);
		else
			return AUTH_REVOKE_INVALID;
		rc = db_query(db, &r, "SELECT id FROM api_tokens WHERE org_id = ? AND prefix = ? "
				      "AND revoked_at IS NULL ORDER BY id", "is", org_id, prefix);
	}
	if (rc < 0)
		return -1;
	for (i = 0; i < r.nrows; i++)
		strbuf_addf(matches, "%s%s", i ? ", " : "", db_val(&r, i, 0));
	if (r.nrows != 1) {
		rc = r.nrows ? AUTH_REVOKE_AMBIGUOUS : 0;
		db_result_free(&r);
		return rc;
	}
	rc = auth_token_revoke_id(db, db_int(&r, 0, 0)) < 0 ? -1 : 1;
	db_result_free(&r);
	return rc;
}

static int unauthorized(struct rctx *c, const char *why)
{
	http_response_header(c->res, "WWW-Authenticate", "Bearer realm=\"kiln\"");
	respond_error(c, 401, "unauthorized", "%s", why);
	return -1;
}

static struct token_cache_entry *cache_find(struct services *svc, const char *hash)
{
	int64_t ttl = svc->cfg->auth_cache_ms, now = mono_ms();
	size_t i;

	if (ttl <= 0)
		return NULL;
	for (i = 0; i < TOKEN_CACHE_SLOTS; i++) {
		struct token_cache_entry *e = &svc->tokens[i];

		if (e->checked_ms && now - e->checked_ms <= ttl &&
		    ct_equal(e->sha256, hash, SHA256_HEX_LEN))
			return e;
	}
	return NULL;
}

static void cache_put(struct services *svc, const char *hash, const struct rctx *c)
{
	struct token_cache_entry *victim = &svc->tokens[0];
	size_t i;

	for (i = 0; i < TOKEN_CACHE_SLOTS; i++) {
		struct token_cache_entry *e = &svc->tokens[i];

		if (!strcmp(e->sha256, hash)) {
			victim = e;
			break;
		}
		if (e->checked_ms < victim->checked_ms)
			victim = e; /* the oldest (or an empty) slot */
	}
	memcpy(victim->sha256, hash, sizeof(victim->sha256));
	victim->org_id = c->org_id;
	victim->token_id = c->token_id;
	memcpy(victim->org_slug, c->org_slug, sizeof(victim->org_slug));
	victim->checked_ms = mono_ms();
}

int auth_check(struct rctx *c)
{
	const struct token_cache_entry *hit;
	const char *h = http_param(c->req, "HTTP_AUTHORIZATION");
	char hash[SHA256_HEX_LEN + 1];
	struct db_result r;
	const char *tok, *stored;
	int ret = -1;

	if (!h || !*h)
		return unauthorized(c, "missing Authorization: Bearer token");
	if (strncasecmp(h, "Bearer ", 7) != 0)
		return unauthorized(c, "Authorization must be a Bearer token");
	tok = h + 7;
	if (!auth_token_well_formed(tok, strlen(tok)))
		return unauthorized(c, "malformed token");
	auth_token_hash(tok, TOKEN_LEN, hash);
	hit = cache_find(c->svc, hash);
	if (hit) {
		c->org_id = hit->org_id;
		c->token_id = hit->token_id;
		memcpy(c->org_slug, hit->org_slug, sizeof(c->org_slug));
		return 0;
	}
	if (db_query(&c->svc->db, &r,
		     "SELECT t.id, t.org_id, o.slug, t.token_sha256, "
		     "(t.expires_at IS NOT NULL AND t.expires_at <= NOW(3)), t.revoked_at IS NOT NULL, "
		     "(t.last_used_at IS NULL OR t.last_used_at < NOW(3) - INTERVAL 1 MINUTE) "
		     "FROM api_tokens t JOIN organizations o ON o.id = t.org_id WHERE t.token_sha256 = ?",
		     "s", hash) < 0) {
		respond_db_error(c);
		return -1;
	}
	stored = db_val(&r, 0, 3);
	if (r.nrows != 1 || !stored || strlen(stored) != SHA256_HEX_LEN ||
	    !ct_equal(stored, hash, SHA256_HEX_LEN)) {
		unauthorized(c, "unknown token");
		goto out;
	}
	if (db_int(&r, 0, 4)) {
		unauthorized(c, "token expired");
		goto out;
	}
	if (db_int(&r, 0, 5)) {
		unauthorized(c, "token revoked");
		goto out;
	}
	c->token_id = db_int(&r, 0, 0);
	c->org_id = db_int(&r, 0, 1);
	snprintf(c->org_slug, sizeof(c->org_slug), "%s", db_val(&r, 0, 2));
	cache_put(c->svc, hash, c);
	/* At most one write a minute per token: tracking use must not turn
	 * every read into a write. */
	if (db_int(&r, 0, 6))
		db_exec(&c->svc->db, "UPDATE api_tokens SET last_used_at = NOW(3) WHERE id = ?", "i",
			c->token_id);
	ret = 0;
out:
	db_result_free(&r);
	return ret;
}
