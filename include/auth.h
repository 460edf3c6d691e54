/*
 * auth.h - API tokens: "kiln_" + 48 hex characters of getrandom(2) output.
 * Only the SHA-256 of a token is stored; lookups go by that hash and the
 * stored hash is compared again in constant time.
 *
 *   auth_token_create   new token for an organization (shown once)
 *   auth_token_revoke
 *   auth_check          Bearer header -> rctx org_id/token_id, or 401
 */
#ifndef KILN_AUTH_H
#define KILN_AUTH_H

#include <stdint.h>

struct db;
struct strbuf;
struct rctx;

#define TOKEN_PREFIX "kiln_"
#define TOKEN_LEN (5 + 48)

int auth_token_create(struct db *db, int64_t org_id, const char *name,
		      int64_t expires_days, struct strbuf *token, int64_t *token_id);
/* Revokes by id or by the token's recognisable prefix; affected rows or -1. */
int64_t auth_token_revoke(struct db *db, const char *id_or_prefix);
/* 0 when the request carries a valid token (fills c->org_id, ...); else
 * answers 401 (or 503) and returns -1. */
int auth_check(struct rctx *c);

#endif
