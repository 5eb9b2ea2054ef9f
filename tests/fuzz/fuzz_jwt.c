/* libFuzzer target for auth_verify (userspace/auth.c).
 *
 * Every input is first the whole token, which must never be accepted (nothing here can forge
 * ES256). Then its first byte picks one more use of the rest, so the fuzzer also reaches past
 * the signature check (the modes that sign use a real ES256 signature by the verifier's key):
 *   0. the bytes as the payload, signed;
 *   1. the bytes as edits (delete, or set to a string, integer, time near now, real, literal,
 *      array, object) to a valid claim set, signed: reaches every claim check without the
 *      fuzzer having to guess JSON syntax and claim names;
 *   2. the same edits to a valid header ({"alg":"ES256","typ":"JWT"}), signed;
 *   3. the bytes as the header, signed;
 *   4. the bytes as (position, byte) overwrites of a valid token, signature included.
 * Whatever is accepted must obey the claim rules; a header must have said exactly ES256; a
 * tampered token may only be accepted if it is byte for byte the original.
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

#define NOW    1800000000LL
#define LEEWAY 30

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct auth_cfg cfg = { .issuer = "dvv", .audience = "dvv-relay", .leeway_s = LEEWAY };
static EVP_PKEY *key;
static char *good_header, *good_payload; /* base64url */
static char *good_token;

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
		 "{\"iss\":\"dvv\",\"aud\":\"dvv-relay\",\"sub\":\"u\",\"tid\":\"t\",\"exp\":%lld,"
		 "\"plan\":\"paid\",\"name\":\"my-server\"}",
		 NOW + 60);
	good_header = b64url(header, strlen(header));
	good_payload = b64url(payload, strlen(payload));
	good_token = sign(good_header, good_payload);
	if (auth_verify(&cfg, good_token, NOW, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_jwt: the reference token is rejected: %s\n", err);
		abort();
	}
	return 0;
}

/* `base` edited as the input says: each edit is 2 bytes (which name, what kind of value) and
 * then the bytes that value needs. */
static json_t *edited(json_t *base, const char *const *names, size_t nnames, const uint8_t *d,
		      size_t n)
{
	static const char *const pool[] = {
		"dvv",
		"dvv-relay",
		"free",
		"paid",
		"my-server",
		"-ab",
		"ab-",
		"u",
		"",
		"A_z-9",
		"ES256",
		"JWT",
		"HS256",
		"none",
		"es256",
		"jwt",
		"0123456789012345678901234567890123456789012345678901234567890123",
		"01234567890123456789012345678901234567890123456789012345678901234",
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmn",
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmno",
	};
	const size_t npool = sizeof(pool) / sizeof(pool[0]);
	size_t i = 0, len, k;
	uint64_t x;

	while (i + 2 <= n) {
		const char *name = names[d[i] % nnames];
		unsigned kind = d[i + 1] % 9;
		json_t *v = NULL;

		i += 2;
		switch (kind) {
		case 0: /* delete */ json_object_del(base, name); continue;
		case 1: /* raw bytes as a string (if valid UTF-8) */
			len = i < n ? d[i++] % 80 : 0;
			if (len > n - i)
				len = n - i;
			v = json_stringn((const char *)d + i, len);
			i += len;
			break;
		case 2: /* a string from the pool */
			v = json_string(pool[i < n ? d[i++] % npool : 0]);
			break;
		case 3: /* any 64-bit integer */
			for (x = 0, k = 0; k < 8 && i < n; k++)
				x = x << 8 | d[i++];
			v = json_integer((json_int_t)x);
			break;
		case 4: /* a time near now: now + [-32768, 32767] */
			x = i + 1 < n ? (uint64_t)(d[i] << 8 | d[i + 1]) : 0;
			i += 2;
			v = json_integer(NOW + (int16_t)x);
			break;
		case 5: v = json_real(i < n ? (double)NOW + d[i++] - 128 : 0.5); break;
		case 6:
			v = i < n && d[i] % 3 ? (d[i] % 3 == 1 ? json_true() : json_false())
					      : json_null();
			i++;
			break;
		case 7: /* an array of pool strings (an integer where the byte is 0xff) */
			v = json_array();
			len = i < n ? d[i++] % 4 : 0;
			for (k = 0; k < len && i < n; k++, i++)
				json_array_append_new(v, d[i] == 0xff
								 ? json_integer(1)
								 : json_string(pool[d[i] % npool]));
			break;
		default: v = json_object(); break;
		}
		if (v)
			json_object_set_new(base, name, v);
	}
	return base;
}

/* What any accepted token must satisfy, whatever the input was. */
static void check_claims(const struct auth_claims *c)
{
	if (!auth_valid_id(c->sub, strlen(c->sub)) || !auth_valid_id(c->tid, strlen(c->tid)))
		abort();
	if (c->jti[0] && !auth_valid_id(c->jti, strlen(c->jti)))
		abort();
	if (!auth_valid_tier(c->plan, strlen(c->plan)))
		abort();
	if (c->name[0] && !auth_valid_label(c->name, strlen(c->name)))
		abort();
	if (c->exp <= NOW - LEEWAY || c->nbf > NOW + LEEWAY || c->iat > NOW + LEEWAY)
		abort();
}

/* An accepted header said exactly "alg":"ES256", typ absent or "JWT", and no crit. */
static void check_header(const char *json, size_t len)
{
	json_t *h = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
	json_t *alg = json_object_get(h, "alg"), *typ = json_object_get(h, "typ");

	if (!json_is_string(alg) || json_string_length(alg) != 5 ||
	    strcmp(json_string_value(alg), "ES256") != 0)
		abort();
	if (typ && (!json_is_string(typ) || json_string_length(typ) != 3 ||
		    strcmp(json_string_value(typ), "JWT") != 0))
		abort();
	if (json_object_get(h, "crit"))
		abort();
	json_decref(h);
}

/* Verify a token the harness built; anything but accept/-EACCES is a bug. */
static int verify(const char *token, struct auth_claims *out)
{
	char err[256];
	int r = auth_verify(&cfg, token, NOW, out, err, sizeof(err));

	if (r != 0 && r != -EACCES)
		abort();
	if (r == 0)
		check_claims(out);
	return r;
}

static void sign_and_verify(const char *header_json, size_t hlen, const char *payload_json,
			    size_t plen)
{
	char *h = header_json ? b64url(header_json, hlen) : good_header;
	char *p = payload_json ? b64url(payload_json, plen) : good_payload;
	char *token = sign(h, p);
	struct auth_claims out;

	if (verify(token, &out) == 0 && header_json)
		check_header(header_json, hlen);
	free(token);
	if (p != good_payload)
		free(p);
	if (h != good_header)
		free(h);
}

static void edit_and_verify(int header, const uint8_t *d, size_t n)
{
	static const char *const claim_names[] = { "iss", "aud",  "sub",  "tid", "exp",	 "nbf",
						   "iat", "plan", "name", "jti", "other" };
	static const char *const header_names[] = { "alg", "typ", "crit", "kid", "jku" };
	json_t *base =
		header ? json_pack("{s:s, s:s}", "alg", "ES256", "typ", "JWT")
		       : json_pack("{s:s, s:s, s:s, s:s, s:I}", "iss", "dvv", "aud", "dvv-relay",
				   "sub", "u", "tid", "t", "exp", (json_int_t)(NOW + 60));
	char *json;

	if (!base)
		abort();
	if (header)
		edited(base, header_names, sizeof(header_names) / sizeof(header_names[0]), d, n);
	else
		edited(base, claim_names, sizeof(claim_names) / sizeof(claim_names[0]), d, n);
	json = json_dumps(base, JSON_COMPACT);
	if (!json)
		abort();
	if (header)
		sign_and_verify(json, strlen(json), NULL, 0);
	else
		sign_and_verify(NULL, 0, json, strlen(json));
	free(json);
	json_decref(base);
}

static void tamper_and_verify(const uint8_t *d, size_t n)
{
	size_t len = strlen(good_token), i;
	char *t = strdup(good_token);
	struct auth_claims out;

	if (!t)
		abort();
	for (i = 0; i + 3 <= n; i += 3)
		t[((size_t)d[i] << 8 | d[i + 1]) % len] = (char)d[i + 2];
	if (verify(t, &out) == 0 && strcmp(t, good_token) != 0)
		abort(); /* a second spelling of a signed token was accepted */
	free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256], *token;
	int r;

	/* Every input: the bytes as a token. Only a forgery could be accepted. */
	token = malloc(size + 1);
	if (!token)
		abort();
	memcpy(token, data, size);
	token[size] = '\0';
	memset(err, 'x', sizeof(err));
	r = auth_verify(&cfg, token, NOW, NULL, err, sizeof(err));
	if (r != -EACCES || !memchr(err, '\0', sizeof(err)))
		abort(); /* a forgery, a wrong code, or an unterminated message */
	free(token);

	if (size < 1 || size > AUTH_TOKEN_MAX)
		return 0;
	switch (data[0] % 5) {
	case 0: sign_and_verify(NULL, 0, (const char *)data + 1, size - 1); break;
	case 1: edit_and_verify(0, data + 1, size - 1); break;
	case 2: edit_and_verify(1, data + 1, size - 1); break;
	case 3: sign_and_verify((const char *)data + 1, size - 1, NULL, 0); break;
	default: tamper_and_verify(data + 1, size - 1); break;
	}
	return 0;
}
