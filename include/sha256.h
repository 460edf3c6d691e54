/*
 * sha256.h - SHA-256 (FIPS 180-4), streaming and one-shot.
 *
 *   sha256_init / sha256_update / sha256_final
 *   sha256_hex        one-shot digest as 64 lower-case hex characters
 *   hmac_sha256_hex   keyed digest (signed preview URLs)
 */
#ifndef KILN_SHA256_H
#define KILN_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32
#define SHA256_HEX_LEN 64

struct sha256 {
	uint32_t h[8];
	uint64_t bytes;
	unsigned char block[64];
	size_t used;
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t len);
void sha256_final(struct sha256 *c, unsigned char out[SHA256_LEN]);
void sha256_final_hex(struct sha256 *c, char out[SHA256_HEX_LEN + 1]);
void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1]);
/* HMAC-SHA256 (RFC 2104) of msg under key, as hex. */
void hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t len,
		     char out[SHA256_HEX_LEN + 1]);

#endif
