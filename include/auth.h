/*
 * auth.h - API tokens: "kiln_" + 48 hex characters of getrandom(2) output.
 * Only the SHA-256 of a token is stored; lookups go by that hash and the
 * stored hash is compared again in constant time.
 *
 *   auth_token_generate a new token, its shown prefix and its hash
 *   auth_token_well_formed / auth_token_hash
 *   auth_token_create   new token for an organization (shown once)
 *   auth_token_revoke_id / auth_token_revoke_match
 *   auth_check          Bearer header -> rctx org_id/token_id, or 401
 */
#ifndef KILN_AUTH_H
#define KILN_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

struct db;
struct strbuf;
struct rctx;

#define TOKEN_PREFIX "kiln_"
#define TOKEN_PREFIX_LEN 5
#define TOKEN_LEN (TOKEN_PREFIX_LEN + 48)
/* What api_tokens.prefix keeps and `kilnctl token list` shows: "kiln_" and
 * the first 8 hex digits. Not secret, and not unique. */
#define TOKEN_SHOWN_LEN (TOKEN_PREFIX_LEN + 8)

/* 1 when tok[0..len) is "kiln_" followed by 48 lower-case hex digits. */
int auth_token_well_formed(const char *tok, size_t len);
/* The hex SHA-256 stored for a token. */
void auth_token_hash(const char *tok, size_t len, char hash[SHA256_HEX_LEN + 1]);
/* A new token from getrandom(2): 0, or -1 when no randomness is to be had. */
int auth_token_generate(struct strbuf *token, char prefix[TOKEN_SHOWN_LEN + 1],
			char hash[SHA256_HEX_LEN + 1]);
int auth_token_create(struct db *db, int64_t org_id, const char *name,
		      int64_t expires_days, struct strbuf *token, int64_t *token_id);

/* Revokes the token with this id: 1, 0 when there is no such active
 * token, -1 on a database error. */
int64_t auth_token_revoke_id(struct db *db, int64_t token_id);
#define AUTH_REVOKE_INVALID (-2)   /* what is neither a token nor a prefix */
#define AUTH_REVOKE_AMBIGUOUS (-3) /* several active tokens share the prefix */
/* Revokes the one active token of org_id that what names: the whole token,
 * its shown prefix ("kiln_1a2b3c4d") or the prefix's 8 hex digits. Prefixes
 * are not unique, so a prefix that several active tokens of the
 * organization share revokes nothing: AUTH_REVOKE_AMBIGUOUS, their ids in
 * matches ("12, 15"; the id revoked when there is one). 1 revoked, 0 no
 * match, -1 database error. */
int auth_token_revoke_match(struct db *db, int64_t org_id, const char *what, struct strbuf *matches);
/* 0 when the request carries a valid token (fills c->org_id, ...); else
 * answers 401 (or 503) and returns -1. */
int auth_check(struct rctx *c);

#endif
