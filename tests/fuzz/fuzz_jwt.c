/* libFuzzer target for auth_verify (userspace/auth.c).
 *
 * Each input is used three ways, so the fuzzer reaches past the signature check too:
 *   1. the bytes as the whole token: must never be accepted (nothing here can forge ES256);
 *   2. the bytes as the payload of a genuinely signed ES256 token: exercises every claim check,
 *      and anything accepted must obey the claim rules;
 *   3. the bytes as the header, over a valid payload, genuinely signed: anything accepted must
 *      have said exactly alg ES256.
 * Crashes, leaks (ASan), undefined behaviour (UBSan) or a broken rule (abort) are findings.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iuserspace -Icommon \
 *     userspace/auth.c tests/fuzz/fuzz_jwt.c -ljwt -ljansson -lssl -lcrypto -o /tmp/fuzz_jwt
 *   /tmp/fuzz_jwt -max_total_time=60
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auth.h"

#define NOW 1800000000LL
#define LEEWAY 30

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct auth_cfg cfg = { .issuer = "dvv", .audience = "dvv-relay", .leeway_s = LEEWAY };
static EVP_PKEY *key;
static char *good_header, *good_payload; /* base64url */

static char *b64url(const void *data, size_t len)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *p = data;
	char *out = malloc(len * 4 / 3 + 4), *o = out;
	size_t i;

	if (!out)
		abort();
	for (i = 0; i + 2 < len; i += 3) {
		*o++ = abc[p[i] >> 2];
		*o++ = abc[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
		*o++ = abc[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
		*o++ = abc[p[i + 2] & 63];
	}
	if (len - i == 1) {
		*o++ = abc[p[i] >> 2];
		*o++ = abc[(p[i] & 3) << 4];
	} else if (len - i == 2) {
		*o++ = abc[p[i] >> 2];
		*o++ = abc[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
		*o++ = abc[(p[i + 1] & 15) << 2];
	}
	*o = '\0';
	return out;
}

/* "h.p.sig" with a real ES256 signature (R||S) over "h.p". */
static char *sign(const char *h, const char *p)
{
	size_t in_len = strlen(h) + 1 + strlen(p), der_len;
	char *in = malloc(in_len + 1), *s, *token;
	unsigned char der[128], rs[64];
	const unsigned char *q = der;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ECDSA_SIG *sig;

	if (!in || !md)
		abort();
	snprintf(in, in_len + 1, "%s.%s", h, p);
	der_len = sizeof(der);
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, der, &der_len, (unsigned char *)in, in_len) != 1)
		abort();
	sig = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
	if (!sig || BN_bn2binpad(ECDSA_SIG_get0_r(sig), rs, 32) != 32 ||
	    BN_bn2binpad(ECDSA_SIG_get0_s(sig), rs + 32, 32) != 32)
		abort();
	s = b64url(rs, sizeof(rs));
	token = malloc(in_len + 1 + strlen(s) + 1);
	if (!token)
		abort();
	sprintf(token, "%s.%s", in, s);
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(md);
	free(s);
	free(in);
	return token;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char header[] = "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";
	char payload[256], err[256];
	BIO *b = BIO_new(BIO_s_mem());
	BUF_MEM *bm;

	key = EVP_EC_gen("P-256");
	if (!b || !key || !PEM_write_bio_PUBKEY(b, key))
		abort();
	BIO_get_mem_ptr(b, &bm);
	if (auth_set_pubkey(&cfg, bm->data, bm->length, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_jwt: %s\n", err);
		abort();
	}
	BIO_free(b);
	snprintf(payload, sizeof(payload),
		 "{\"iss\":\"dvv\",\"aud\":\"dvv-relay\",\"sub\":\"u\",\"tid\":\"t\",\"exp\":%lld}",
		 NOW + 60);
	good_header = b64url(header, strlen(header));
	good_payload = b64url(payload, strlen(payload));
	return 0;
}

/* What any accepted token must satisfy, whatever the input was. */
static void check_accepted(const struct auth_claims *c)
{
	if (!auth_valid_id(c->sub, strlen(c->sub)) || !auth_valid_id(c->tid, strlen(c->tid)))
		abort();
	if (c->jti[0] && !auth_valid_id(c->jti, strlen(c->jti)))
		abort();
	if (strcmp(c->plan, "free") != 0 && strcmp(c->plan, "paid") != 0)
		abort();
	if (c->name[0] && !auth_valid_label(c->name, strlen(c->name)))
		abort();
	if (c->exp <= NOW - LEEWAY || c->nbf > NOW + LEEWAY || c->iat > NOW + LEEWAY)
		abort();
}

/* The header of an accepted token said exactly "alg":"ES256". */
static void check_header(const uint8_t *data, size_t size)
{
	json_t *h = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	json_t *alg = json_object_get(h, "alg");

	if (!json_is_string(alg) || strcmp(json_string_value(alg), "ES256") != 0 ||
	    json_string_length(alg) != 5)
		abort();
	json_decref(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_claims out;
	char err[256], *token, *seg;
	int r;

	/* 1. raw token */
	token = malloc(size + 1);
	if (!token)
		abort();
	memcpy(token, data, size);
	token[size] = '\0';
	err[0] = 'x';
	r = auth_verify(&cfg, token, NOW, &out, err, sizeof(err));
	if (r == 0 || r != -EACCES || !memchr(err, '\0', sizeof(err)))
		abort(); /* a forgery, or a wrong code, or an unterminated message */
	free(token);

	if (size > AUTH_TOKEN_MAX)
		return 0;

	/* 2. signed payload */
	seg = b64url(data, size);
	token = sign(good_header, seg);
	r = auth_verify(&cfg, token, NOW, &out, err, sizeof(err));
	if (r == 0)
		check_accepted(&out);
	else if (r != -EACCES)
		abort();
	free(token);

	/* 3. signed header */
	token = sign(seg, good_payload);
	r = auth_verify(&cfg, token, NOW, &out, err, sizeof(err));
	if (r == 0)
		check_header(data, size);
	else if (r != -EACCES)
		abort();
	free(token);
	free(seg);
	return 0;
}
