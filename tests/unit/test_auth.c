/*
 * test_auth - the token format, its generation and the hash that is stored
 * in its place.
 */
#include <string.h>

#include "auth.h"
#include "harness.h"
#include "sha256.h"
#include "strbuf.h"

static int lower_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strchr("0123456789abcdef", s[i]))
			return 0;
	return 1;
}

static void test_generated_tokens(void)
{
	struct strbuf a = STRBUF_INIT, b = STRBUF_INIT;
	char prefix[TOKEN_SHOWN_LEN + 1], hash[SHA256_HEX_LEN + 1], again[SHA256_HEX_LEN + 1];
	char prefix_b[TOKEN_SHOWN_LEN + 1], hash_b[SHA256_HEX_LEN + 1];

	CHECK(auth_token_generate(&a, prefix, hash) == 0);
	CHECK(a.len == 53 && a.len == TOKEN_LEN);
	CHECK(!strncmp(a.buf, "kiln_", 5));
	CHECK(lower_hex(a.buf + 5, 48));
	CHECK(auth_token_well_formed(a.buf, a.len));
	CHECK(strlen(prefix) == 13 && !strncmp(prefix, a.buf, 13));
	/* the stored hash is the SHA-256 of the whole token, nothing else */
	sha256_hex(a.buf, a.len, again);
	CHECK_STR(hash, again);
	CHECK(strlen(hash) == 64 && lower_hex(hash, 64));
	CHECK(!strstr(hash, a.buf + 5));
	CHECK(auth_token_generate(&b, prefix_b, hash_b) == 0);
	CHECK(strcmp(a.buf, b.buf) != 0 && strcmp(hash, hash_b) != 0);
	strbuf_release(&a);
	strbuf_release(&b);
}

static void test_hash_is_sha256(void)
{
	char hash[SHA256_HEX_LEN + 1];

	auth_token_hash("abc", 3, hash);
	CHECK_STR(hash, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	auth_token_hash("", 0, hash);
	CHECK_STR(hash, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_well_formed(void)
{
	static const char good[] = "kiln_0123456789abcdef0123456789abcdef0123456789abcdef";
	char bad[sizeof(good)];

	CHECK(strlen(good) == TOKEN_LEN);
	CHECK(auth_token_well_formed(good, strlen(good)));
	CHECK(!auth_token_well_formed(good, strlen(good) - 1));
	CHECK(!auth_token_well_formed("kiln_short", 10));
	CHECK(!auth_token_well_formed("", 0));
	memcpy(bad, good, sizeof(good));
	bad[10] = 'A'; /* upper-case hex is not what we issue */
	CHECK(!auth_token_well_formed(bad, strlen(bad)));
	memcpy(bad, good, sizeof(good));
	bad[0] = 'K';
	CHECK(!auth_token_well_formed(bad, strlen(bad)));
	memcpy(bad, good, sizeof(good));
	bad[20] = '\0';
	CHECK(!auth_token_well_formed(bad, TOKEN_LEN));
	memcpy(bad, good, sizeof(good));
	bad[30] = 'g';
	CHECK(!auth_token_well_formed(bad, strlen(bad)));
}

int main(void)
{
	RUN(test_generated_tokens);
	RUN(test_hash_is_sha256);
	RUN(test_well_formed);
	return harness_done("auth");
}
