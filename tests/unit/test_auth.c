/* Agent token verification (userspace/auth.c).
 *
 * Each run makes a fresh P-256 key pair (and a second, unrelated one) in a temporary directory,
 * signs tokens inside the test (with libjwt, like the API will, and with OpenSSL directly when a
 * test needs a header libjwt would never write), and checks the verdict and the message.
 * Every rejection is also checked for leaking the token into the error message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "auth.h"

#define NOW    1800000000LL /* fixed clock: 2027-01-15 */
#define LEEWAY 30

struct fixture {
	char dir[64];
	char pub_path[128], other_pub_path[128], p384_path[128], rsa_path[128], priv_path[128];
	EVP_PKEY *key, *other; /* signing key, and an unrelated P-256 key */
	char *priv_pem, *pub_pem;
	struct auth_cfg cfg;
};

/* ---- helpers ------------------------------------------------------------------------------ */

__attribute__((format(printf, 1, 2))) static char *str_printf(const char *fmt, ...);

static char *str_printf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	return s;
}

static char *pem_of(EVP_PKEY *key, int private)
{
	BIO *b = BIO_new(BIO_s_mem());
	BUF_MEM *bm;
	char *s;

	assert_non_null(b);
	assert_true(private ? PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)
			    : PEM_write_bio_PUBKEY(b, key));
	BIO_get_mem_ptr(b, &bm);
	s = strndup(bm->data, bm->length);
	BIO_free(b);
	assert_non_null(s);
	return s;
}

static void write_file(const char *path, const char *data)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(data, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void write_pub(const char *path, EVP_PKEY *key)
{
	char *pem = pem_of(key, 0);

	write_file(path, pem);
	free(pem);
}

static char *b64url(const void *data, size_t len)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *p = data;
	char *out = malloc(len * 4 / 3 + 4), *o = out;
	size_t i;

	assert_non_null(out);
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

/* A token with exactly this header and payload text, ES256-signed with OpenSSL directly (for
 * headers libjwt would never produce). */
static char *sign_raw(EVP_PKEY *key, const char *header, const char *payload)
{
	char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
	char *input = str_printf("%s.%s", h, p), *s, *token;
	unsigned char der[128], rs[64];
	const unsigned char *q = der;
	size_t der_len = sizeof(der);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ECDSA_SIG *sig;

	assert_non_null(md);
	assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestSign(md, der, &der_len, (unsigned char *)input, strlen(input)),
			 1);
	sig = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
	assert_non_null(sig);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(sig), rs, 32), 32);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(sig), rs + 32, 32), 32);
	s = b64url(rs, sizeof(rs));
	token = str_printf("%s.%s", input, s);
	ECDSA_SIG_free(sig);
	EVP_MD_CTX_free(md);
	free(s);
	free(input);
	free(p);
	free(h);
	return token;
}

/* Claims that pass: tests start from these and change one thing. */
static json_t *good_claims(void)
{
	json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s}", "iss", "dvv",
			      "aud", "dvv-relay", "sub", "user_42", "tid", "tun-7", "exp",
			      (json_int_t)(NOW + 3600), "nbf", (json_int_t)(NOW - 5), "iat",
			      (json_int_t)(NOW - 5), "plan", "paid", "name", "my-server", "jti",
			      "0f1e2d3c");

	assert_non_null(c);
	return c;
}

/* Sign `claims` (consumed) with libjwt, the way the API will. */
static char *mint_alg(json_t *claims, jwt_alg_t alg, const void *key, size_t key_len)
{
	char *json = json_dumps(claims, JSON_COMPACT), *token;
	jwt_t *jwt = NULL;

	assert_non_null(json);
	assert_int_equal(jwt_new(&jwt), 0);
	assert_int_equal(jwt_add_grants_json(jwt, json), 0);
	assert_int_equal(jwt_set_alg(jwt, alg, key, (int)key_len), 0);
	token = jwt_encode_str(jwt);
	assert_non_null(token);
	jwt_free(jwt);
	free(json);
	json_decref(claims);
	return token;
}

static char *mint(struct fixture *f, json_t *claims)
{
	return mint_alg(claims, JWT_ALG_ES256, f->priv_pem, strlen(f->priv_pem));
}

static json_t *with(json_t *c, const char *key, json_t *value)
{
	if (value)
		assert_int_equal(json_object_set_new(c, key, value), 0);
	else
		assert_int_equal(json_object_del(c, key), 0);
	return c;
}

static int all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;

	while (n--)
		if (*b++)
			return 0;
	return 1;
}

/* Does err quote any part of the token (each of its three segments, 8+ chars)? */
static int err_leaks_token(const char *err, const char *token)
{
	const char *seg = token;

	for (;;) {
		const char *dot = strchr(seg, '.');
		size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
		size_t i;

		for (i = 0; len >= 8 && i + 8 <= len; i++)
			if (memmem(err, strlen(err), seg + i, 8))
				return 1;
		if (!dot)
			return 0;
		seg = dot + 1;
	}
}

/* Expect rejection with -EACCES and a message containing `want`; NULL if so, else why not. */
static const char *check_rejected(struct fixture *f, const char *token, const char *want, char *why,
				  size_t cap)
{
	struct auth_claims out;
	char err[256] = "";
	int r;

	memset(&out, 0x5a, sizeof(out));
	r = auth_verify(&f->cfg, token, NOW, &out, err, sizeof(err));
	if (r != -EACCES)
		snprintf(why, cap, "expected -EACCES with \"%s\", got %d (%s)", want, r, err);
	else if (!strstr(err, want))
		snprintf(why, cap, "expected a message containing \"%s\", got \"%s\"", want, err);
	else if (err_leaks_token(err, token))
		snprintf(why, cap, "expected the message not to quote the token, got \"%s\"", err);
	else if (!all_zero(&out, sizeof(out)))
		snprintf(why, cap, "expected the claims to be zeroed on rejection (\"%s\")", err);
	else
		return NULL;
	return why;
}

#define assert_rejected(f, token, want)                                                            \
	do {                                                                                       \
		char why_[768];                                                                    \
		if (check_rejected((f), (token), (want), why_, sizeof(why_)))                      \
			fail_msg("%s", why_);                                                      \
	} while (0)

#define assert_accepted(f, token, out)                                                             \
	do {                                                                                       \
		char err_[256] = "";                                                               \
		int r_ = auth_verify(&(f)->cfg, (token), NOW, (out), err_, sizeof(err_));          \
		if (r_ != 0)                                                                       \
			fail_msg("expected the token to be accepted, got %d: %s", r_, err_);       \
	} while (0)

#define assert_str(got, want, what)                                                                \
	do {                                                                                       \
		if (strcmp((got), (want)) != 0)                                                    \
			fail_msg("expected %s \"%s\", got \"%s\"", (what), (want), (got));         \
	} while (0)

#define assert_i64(got, want, what)                                                                \
	do {                                                                                       \
		if ((int64_t)(got) != (int64_t)(want))                                             \
			fail_msg("expected %s %lld, got %lld", (what), (long long)(want),          \
				 (long long)(got));                                                \
	} while (0)

/* ---- setup -------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	EVP_PKEY *p384, *rsa;
	char err[256];

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/dvv-test-auth.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->key = EVP_EC_gen("P-256");
	f->other = EVP_EC_gen("P-256");
	p384 = EVP_EC_gen("P-384");
	rsa = EVP_RSA_gen(2048);
	if (!f->key || !f->other || !p384 || !rsa)
		return -1;
	f->priv_pem = pem_of(f->key, 1);
	f->pub_pem = pem_of(f->key, 0);
	snprintf(f->pub_path, sizeof(f->pub_path), "%s/jwt.pub", f->dir);
	snprintf(f->priv_path, sizeof(f->priv_path), "%s/jwt.key", f->dir);
	snprintf(f->other_pub_path, sizeof(f->other_pub_path), "%s/other.pub", f->dir);
	snprintf(f->p384_path, sizeof(f->p384_path), "%s/p384.pub", f->dir);
	snprintf(f->rsa_path, sizeof(f->rsa_path), "%s/rsa.pub", f->dir);
	write_file(f->pub_path, f->pub_pem);
	write_file(f->priv_path, f->priv_pem);
	write_pub(f->other_pub_path, f->other);
	write_pub(f->p384_path, p384);
	write_pub(f->rsa_path, rsa);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(rsa);

	f->cfg.issuer = "dvv";
	f->cfg.audience = "dvv-relay";
	f->cfg.leeway_s = LEEWAY;
	if (auth_load_pubkey(&f->cfg, f->pub_path, err, sizeof(err)) != 0) {
		fprintf(stderr, "setup: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

static int group_teardown(void **state)
{
	struct fixture *f = *state;

	auth_cfg_free(&f->cfg);
	unlink(f->pub_path);
	unlink(f->priv_path);
	unlink(f->other_pub_path);
	unlink(f->p384_path);
	unlink(f->rsa_path);
	rmdir(f->dir);
	EVP_PKEY_free(f->key);
	EVP_PKEY_free(f->other);
	free(f->priv_pem);
	free(f->pub_pem);
	free(f);
	return 0;
}

/* ---- accepted tokens ---------------------------------------------------------------------- */

static void valid_token_is_accepted_with_every_claim(void **state)
{
	struct fixture *f = *state;
	struct auth_claims c;
	char *t = mint(f, good_claims());

	assert_accepted(f, t, &c);
	assert_str(c.sub, "user_42", "sub");
	assert_str(c.tid, "tun-7", "tid");
	assert_str(c.plan, "paid", "plan");
	assert_str(c.name, "my-server", "name");
	assert_str(c.jti, "0f1e2d3c", "jti");
	assert_i64(c.exp, NOW + 3600, "exp");
	assert_i64(c.nbf, NOW - 5, "nbf");
	assert_i64(c.iat, NOW - 5, "iat");
	free(t);
}

static void minimal_token_gets_free_plan_and_empty_optionals(void **state)
{
	struct fixture *f = *state;
	struct auth_claims c;
	json_t *claims = good_claims();
	char *t;

	json_object_del(claims, "plan");
	json_object_del(claims, "name");
	json_object_del(claims, "jti");
	json_object_del(claims, "nbf");
	json_object_del(claims, "iat");
	t = mint(f, claims);
	assert_accepted(f, t, &c);
	assert_str(c.plan, "free", "default plan");
	assert_str(c.name, "", "absent name");
	assert_str(c.jti, "", "absent jti");
	assert_i64(c.nbf, 0, "absent nbf");
	assert_i64(c.iat, 0, "absent iat");
	free(t);
}

static void hand_signed_token_without_typ_is_accepted(void **state)
{
	struct fixture *f = *state;
	char *payload =
		str_printf("{\"iss\":\"dvv\",\"aud\":\"dvv-relay\",\"sub\":\"u\",\"tid\":\"t\","
			   "\"exp\":%lld}",
			   NOW + 60);
	char *t = sign_raw(f->key, "{\"alg\":\"ES256\"}", payload);

	assert_accepted(f, t, NULL);
	free(t);
	free(payload);
}

/* ES256 signatures are R||S, 32 bytes each; r or s with leading zero bytes (1 token in ~128)
 * must still be padded by the signer and accepted here. */
static void every_one_of_300_fresh_tokens_is_accepted(void **state)
{
	struct fixture *f = *state;
	int i;

	for (i = 0; i < 300; i++) {
		char *t = mint(f, with(good_claims(), "jti", json_sprintf("n%d", i)));
		char err[256];
		int r = auth_verify(&f->cfg, t, NOW, NULL, err, sizeof(err));

		if (r != 0)
			fail_msg("expected fresh token #%d to be accepted, got %d: %s", i, r, err);
		free(t);
	}
}

/* ---- time --------------------------------------------------------------------------------- */

static void expired_token_is_rejected_with_its_age(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, with(good_claims(), "exp", json_integer(NOW - 100)));

	assert_rejected(f, t, "token expired 100 s ago");
	free(t);
	/* the edge: exp == now - leeway is already too old */
	t = mint(f, with(good_claims(), "exp", json_integer(NOW - LEEWAY)));
	assert_rejected(f, t, "token expired 30 s ago");
	free(t);
}

static void expiry_within_leeway_is_accepted(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, with(good_claims(), "exp", json_integer(NOW - LEEWAY + 1)));

	assert_accepted(f, t, NULL);
	free(t);
}

static void not_yet_valid_token_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, with(good_claims(), "nbf", json_integer(NOW + 120)));

	assert_rejected(f, t, "token not valid for another 120 s");
	free(t);
	t = mint(f, with(good_claims(), "nbf", json_integer(NOW + LEEWAY + 1)));
	assert_rejected(f, t, "not valid for another 31 s");
	free(t);
}

static void nbf_and_iat_within_leeway_are_accepted(void **state)
{
	struct fixture *f = *state;
	json_t *c = good_claims();
	char *t;

	with(c, "nbf", json_integer(NOW + LEEWAY));
	with(c, "iat", json_integer(NOW + LEEWAY));
	t = mint(f, c);
	assert_accepted(f, t, NULL);
	free(t);
}

static void token_issued_in_the_future_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, with(good_claims(), "iat", json_integer(NOW + 600)));

	assert_rejected(f, t, "token issued 600 s in the future");
	free(t);
}

static void times_that_are_not_plain_integers_are_rejected(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *claim;
		const char *json; /* value as JSON text */
		const char *want;
	} cases[] = {
		{ "exp", "\"1800003600\"", "exp is not an integer" },
		{ "exp", "1800003600.0", "exp is not an integer" },
		{ "exp", "1.8e9", "exp is not an integer" },
		{ "exp", "null", "exp is not an integer" },
		{ "exp", "-1", "exp out of range" },
		{ "exp", "9223372036854775807", "exp out of range" },
		{ "nbf", "true", "nbf is not an integer" },
		{ "nbf", "-5", "nbf out of range" },
		{ "iat", "[1]", "iat is not an integer" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);
		char *t;

		assert_non_null(v);
		t = mint(f, with(good_claims(), cases[i].claim, v));
		assert_rejected(f, t, cases[i].want);
		free(t);
	}
}

/* ---- issuer and audience ------------------------------------------------------------------ */

static void wrong_issuer_is_rejected(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = { "evil", "dvvx", "dv", "DVV", "" };
	size_t i;
	char *t;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = mint(f, with(good_claims(), "iss", json_string(bad[i])));
		assert_rejected(f, t, "iss mismatch");
		free(t);
	}
	t = mint(f, with(good_claims(), "iss", json_integer(1)));
	assert_rejected(f, t, "iss mismatch");
	free(t);
}

static void wrong_audience_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, with(good_claims(), "aud", json_string("dvv-api")));

	assert_rejected(f, t, "aud mismatch");
	free(t);
	t = mint(f, with(good_claims(), "aud", json_string("dvv-relay ")));
	assert_rejected(f, t, "aud mismatch");
	free(t);
}

static void audience_array_containing_ours_is_accepted(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, with(good_claims(), "aud", json_pack("[s,s]", "dvv-api", "dvv-relay")));

	assert_accepted(f, t, NULL);
	free(t);
}

static void audience_array_without_ours_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, with(good_claims(), "aud", json_pack("[s,s]", "dvv-api", "other")));

	assert_rejected(f, t, "aud mismatch");
	free(t);
	t = mint(f, with(good_claims(), "aud", json_array()));
	assert_rejected(f, t, "aud mismatch");
	free(t);
	t = mint(f, with(good_claims(), "aud", json_pack("[s,i]", "dvv-relay", 3)));
	assert_rejected(f, t, "aud is not a string or an array of strings");
	free(t);
	t = mint(f, with(good_claims(), "aud", json_pack("{s:s}", "aud", "dvv-relay")));
	assert_rejected(f, t, "aud is not a string or an array of strings");
	free(t);
}

/* ---- required claims and their syntax ----------------------------------------------------- */

static void missing_required_claims_are_rejected(void **state)
{
	struct fixture *f = *state;
	static const char *const required[] = { "sub", "tid", "exp", "iss", "aud" };
	size_t i;

	for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		char *want = str_printf("%s missing", required[i]);
		char *t = mint(f, with(good_claims(), required[i], NULL));

		assert_rejected(f, t, want);
		free(t);
		free(want);
	}
}

static void subject_and_tunnel_with_bad_characters_are_rejected(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *claim, *value, *want;
	} cases[] = {
		{ "sub", "a b", "sub has characters outside [A-Za-z0-9_-]" },
		{ "sub", "a/b", "sub has characters outside" },
		{ "sub", "a.b", "sub has characters outside" },
		{ "sub", "caf\xc3\xa9", "sub has characters outside" },
		{ "sub", "a\nb", "sub has characters outside" },
		{ "sub", "", "sub is empty" },
		{ "sub", "0123456789012345678901234567890123456789012345678901234567890123x",
		  "sub is longer than 64 characters" },
		{ "tid", "t;DROP", "tid has characters outside" },
		{ "tid", "", "tid is empty" },
		{ "jti", "a+b/c=", "jti has characters outside" },
	};
	size_t i;
	char *t;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		t = mint(f, with(good_claims(), cases[i].claim, json_string(cases[i].value)));
		assert_rejected(f, t, cases[i].want);
		free(t);
	}
	t = mint(f, with(good_claims(), "sub", json_integer(42)));
	assert_rejected(f, t, "sub is not a string");
	free(t);
	t = mint(f, with(good_claims(), "tid", json_null()));
	assert_rejected(f, t, "tid is not a string");
	free(t);
}

static void longest_allowed_ids_are_accepted(void **state)
{
	struct fixture *f = *state;
	const char *id64 = "0123456789012345678901234567890123456789012345678901234567890123";
	struct auth_claims c;
	json_t *claims = good_claims();
	char *t;

	with(claims, "sub", json_string(id64));
	with(claims, "tid", json_string(id64));
	t = mint(f, claims);
	assert_accepted(f, t, &c);
	assert_str(c.sub, id64, "64-character sub");
	assert_str(c.tid, id64, "64-character tid");
	free(t);
}

static void bad_plan_is_rejected(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = { "", "FREE", "paid ", "free.x", "abcdefghijklmnopq" /* 17 */ };
	struct auth_claims out;
	size_t i;
	char *t;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = mint(f, with(good_claims(), "plan", json_string(bad[i])));
		assert_rejected(f, t, "plan must be a tier name");
		free(t);
	}
	/* any tier name the API may configure passes: the relay reads its limits from Redis */
	t = mint(f, with(good_claims(), "plan", json_string("pro_2-x")));
	assert_accepted(f, t, &out);
	assert_str(out.plan, "pro_2-x", "plan");
	free(t);
	t = mint(f, with(good_claims(), "plan", json_integer(1)));
	assert_rejected(f, t, "plan must be");
	free(t);
}

static void bad_name_is_rejected(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = {
		"ab", "-abc", "abc-", "My-Server", "a_b", "a.b", "a b", "", "caf\xc3\xa9",
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmno" /* 41 chars */,
	};
	size_t i;
	char *t;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = mint(f, with(good_claims(), "name", json_string(bad[i])));
		assert_rejected(f, t, "name must be a DNS label");
		free(t);
	}
	t = mint(f, with(good_claims(), "name", json_false()));
	assert_rejected(f, t, "name must be a DNS label");
	free(t);
}

static void good_names_are_accepted(void **state)
{
	struct fixture *f = *state;
	const char *good[] = { "abc", "a-b", "123", "xn--bcher-kva",
			       "abcdefghijklmnopqrstuvwxyzabcdefghijklmn" /* 40 */ };
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct auth_claims c;
		char *t = mint(f, with(good_claims(), "name", json_string(good[i])));

		assert_accepted(f, t, &c);
		assert_str(c.name, good[i], "name");
		free(t);
	}
}

/* ---- algorithm and signature -------------------------------------------------------------- */

static void alg_none_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *t = mint_alg(good_claims(), JWT_ALG_NONE, NULL, 0);
	char *forged;

	assert_rejected(f, t, "alg none not allowed, expected ES256");
	/* the same with a signature-shaped tail */
	forged = str_printf("%s%s", t,
			    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
			    "AAAAAAAAAAAAAAAA");
	assert_rejected(f, forged, "alg none not allowed");
	free(forged);
	free(t);
}

/* The classic confusion: the verifier's public key used as an HMAC secret. libjwt 1.10 itself
 * accepts such a token when handed the PEM; the header check must stop it first. */
static void hs256_signed_with_the_public_key_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *t = mint_alg(good_claims(), JWT_ALG_HS256, f->pub_pem, strlen(f->pub_pem));

	assert_rejected(f, t, "alg HS256 not allowed, expected ES256");
	free(t);
	/* ...and with the exact bytes the verifier hands libjwt */
	t = mint_alg(good_claims(), JWT_ALG_HS256, f->cfg.keys[0].pem, f->cfg.keys[0].pem_len);
	assert_rejected(f, t, "alg HS256 not allowed, expected ES256");
	free(t);
}

static void other_algorithms_in_the_header_are_rejected(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *header, *want;
	} cases[] = {
		{ "{\"alg\":\"HS384\",\"typ\":\"JWT\"}", "alg HS384 not allowed, expected ES256" },
		{ "{\"alg\":\"RS256\"}", "alg RS256 not allowed" },
		{ "{\"alg\":\"ES384\"}", "alg ES384 not allowed" },
		{ "{\"alg\":\"ES512\"}", "alg ES512 not allowed" },
		{ "{\"alg\":\"PS256\"}", "alg PS256 not allowed" },
		{ "{\"alg\":\"es256\"}", "alg es256 not allowed" }, /* libjwt: strcasecmp */
		{ "{\"alg\":\"ES256 \"}", "alg (unrecognised) not allowed" },
		{ "{\"alg\":\"ES256\\u0000\"}", "header is not a JSON object" },
		{ "{\"typ\":\"JWT\"}", "header has no alg" },
		{ "{\"alg\":256}", "alg is not a string" },
		{ "{\"alg\":null}", "alg is not a string" },
		{ "{\"alg\":[\"ES256\"]}", "alg is not a string" },
	};
	char *payload =
		str_printf("{\"iss\":\"dvv\",\"aud\":\"dvv-relay\",\"sub\":\"u\",\"tid\":\"t\","
			   "\"exp\":%lld}",
			   NOW + 60);
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* a genuine ES256 signature, so only the header can be the reason */
		char *t = sign_raw(f->key, cases[i].header, payload);

		assert_rejected(f, t, cases[i].want);
		free(t);
	}
	free(payload);
}

static void header_oddities_are_rejected(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *header, *want;
	} cases[] = {
		{ "{\"alg\":\"ES256\",\"typ\":\"JWS\"}", "typ not allowed" },
		{ "{\"alg\":\"ES256\",\"typ\":\"jwt\"}", "typ not allowed" },
		{ "{\"alg\":\"ES256\",\"typ\":1}", "typ not allowed" },
		{ "{\"alg\":\"ES256\",\"crit\":[\"exp\"]}", "crit header not supported" },
		{ "{\"alg\":\"ES256\",\"alg\":\"HS256\"}", "header is not a JSON object" },
		{ "{\"alg\":\"HS256\",\"alg\":\"ES256\"}", "header is not a JSON object" },
		{ "[\"ES256\"]", "header is not a JSON object" },
		{ "\"ES256\"", "header is not a JSON object" },
		{ "{\"alg\":\"ES256\"", "header is not a JSON object" },
	};
	char *payload =
		str_printf("{\"iss\":\"dvv\",\"aud\":\"dvv-relay\",\"sub\":\"u\",\"tid\":\"t\","
			   "\"exp\":%lld}",
			   NOW + 60);
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *t = sign_raw(f->key, cases[i].header, payload);

		assert_rejected(f, t, cases[i].want);
		free(t);
	}
	free(payload);
}

static void payload_oddities_are_rejected(void **state)
{
	struct fixture *f = *state;
	char *ok = str_printf("\"aud\":\"dvv-relay\",\"tid\":\"t\",\"exp\":%lld", NOW + 60);
	char *payloads[] = {
		str_printf("{\"iss\":\"dvv\",\"sub\":\"admin\",\"sub\":\"u\",%s}", ok),
		str_printf("{\"iss\":\"dvv\\u0000evil\",\"sub\":\"u\",%s}", ok),
		str_printf("[{\"iss\":\"dvv\",\"sub\":\"u\",%s}]", ok),
		str_printf("not json"),
	};
	size_t i;

	for (i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
		char *t = sign_raw(f->key, "{\"alg\":\"ES256\",\"typ\":\"JWT\"}", payloads[i]);

		assert_rejected(f, t, "payload is not a JSON object");
		free(t);
		free(payloads[i]);
	}
	free(ok);
}

static void signature_by_another_key_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *other_pem = pem_of(f->other, 1);
	char *t = mint_alg(good_claims(), JWT_ALG_ES256, other_pem, strlen(other_pem));

	assert_rejected(f, t, "bad signature");
	free(t);
	free(other_pem);
}

static void tampered_payload_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, good_claims());
	char *dot1 = strchr(t, '.'), *dot2 = strchr(dot1 + 1, '.');
	json_t *evil = with(good_claims(), "sub", json_string("admin"));
	char *json = json_dumps(evil, JSON_COMPACT), *p = b64url(json, strlen(json));
	char *swapped;

	/* the whole payload replaced, signature kept */
	*dot1 = '\0';
	swapped = str_printf("%s.%s%s", t, p, dot2);
	*dot1 = '.';
	assert_rejected(f, swapped, "bad signature");
	/* one character of the payload changed */
	dot1[5] = dot1[5] == 'A' ? 'B' : 'A';
	assert_rejected(f, t, "");
	free(swapped);
	free(p);
	free(json);
	json_decref(evil);
	free(t);
}

static void tampered_or_reencoded_signature_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, good_claims());
	size_t len = strlen(t);
	char last = t[len - 1];
	char *longer;

	/* 86 chars carry 516 bits for 512; the last char's low 4 bits are unused. Setting one of
	 * them decodes to the same signature: it must not be a second spelling of the token. */
	t[len - 1] = (char)(last + 1); /* A->B, Q->R, g->h, w->x: same top bits */
	assert_rejected(f, t, "signature is not a canonical 64-byte ES256 signature");
	t[len - 1] = last;
	assert_accepted(f, t, NULL);

	t[len - 10] = (char)(t[len - 10] == 'A' ? 'B' : 'A');
	assert_rejected(f, t, "bad signature");

	longer = str_printf("%sAA", t);
	assert_rejected(f, longer, "signature is not a canonical");
	t[len - 1] = '\0';
	assert_rejected(f, t, "signature is not a canonical");
	free(longer);
	free(t);
}

/* ---- shape ---------------------------------------------------------------------------------- */

static void oversized_token_is_rejected(void **state)
{
	struct fixture *f = *state;
	char pad[4000];
	char *t, *huge;

	/* a genuine token, just big: 4096 bytes is the limit, not the signature */
	memset(pad, 'x', sizeof(pad));
	pad[2600] = '\0';
	t = mint(f, with(good_claims(), "pad", json_string(pad)));
	if (strlen(t) > AUTH_TOKEN_MAX)
		fail_msg("expected the 2600-byte claim to fit in %d, token is %zu", AUTH_TOKEN_MAX,
			 strlen(t));
	assert_accepted(f, t, NULL);
	free(t);

	pad[2600] = 'x';
	pad[3200] = '\0';
	t = mint(f, with(good_claims(), "pad", json_string(pad)));
	assert_rejected(f, t, "token longer than 4096 bytes");
	free(t);

	huge = malloc(1 << 20);
	assert_non_null(huge);
	memset(huge, 'A', (1 << 20) - 1);
	huge[(1 << 20) - 1] = '\0';
	assert_rejected(f, huge, "token longer than 4096 bytes");
	free(huge);
}

static void garbage_is_rejected(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *token, *want;
	} cases[] = {
		{ "", "empty token" },
		{ "garbage", "token has 1 parts, expected 3" },
		{ "a.b", "token has 2 parts" },
		{ "a.b.c.d", "token has 4 parts" },
		{ "..", "empty header or payload" },
		{ "eyJhbGciOiJFUzI1NiJ9..sig", "empty header or payload" },
		{ ".e30.sig", "empty header or payload" },
		{ "eyJhbGciOiJFUzI1NiJ9=.e30.x", "character outside base64url" },
		{ "eyJhbGciOiJFUzI1NiJ9.e30+.x", "character outside base64url" },
		{ "\xff\xfe.a.b", "character outside base64url" },
		{ "Bearer eyJ.e30.x", "character outside base64url" },
		{ "a.e30.xyz", "header is not base64url" },   /* 1 char: impossible length */
		{ "e31.e30.xyz", "header is not base64url" }, /* "{}" with stray low bits */
		{ "AAAA.e30.xyz", "header is not a JSON object" },
		{ "e30.e30.xyz", "header has no alg" },
		{ "eyJhbGciOiJFUzI1NiJ9.e30.", "signature is not a canonical" },
		{ "eyJhbGciOiJFUzI1NiJ9.e30.xyz", "signature is not a canonical" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_rejected(f, cases[i].token, cases[i].want);
}

static void token_with_spaces_is_rejected(void **state)
{
	struct fixture *f = *state;
	char *t = mint(f, good_claims());
	char *variants[] = {
		str_printf(" %s", t),
		str_printf("%s ", t),
		str_printf("%s\n", t),
		str_printf("%s\r\n", t),
		str_printf("%.20s %s", t, t + 20),
		str_printf("%.20s\t%s", t, t + 20),
	};
	size_t i;

	for (i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		assert_rejected(f, variants[i], "character outside base64url");
		free(variants[i]);
	}
	free(t);
}

/* ---- API contract ------------------------------------------------------------------------- */

static void bad_arguments_return_einval(void **state)
{
	struct fixture *f = *state;
	struct auth_cfg cfg = f->cfg;
	char *t = mint(f, good_claims());
	char err[256];

	assert_int_equal(auth_verify(NULL, t, NOW, NULL, err, sizeof(err)), -EINVAL);
	assert_int_equal(auth_verify(&f->cfg, NULL, NOW, NULL, err, sizeof(err)), -EINVAL);
	assert_int_equal(auth_verify(&f->cfg, t, -1, NULL, err, sizeof(err)), -EINVAL);
	assert_int_equal(auth_verify(&f->cfg, t, AUTH_TIME_MAX + 1, NULL, err, sizeof(err)),
			 -EINVAL);
	cfg.leeway_s = -1;
	assert_int_equal(auth_verify(&cfg, t, NOW, NULL, err, sizeof(err)), -EINVAL);
	cfg.leeway_s = AUTH_LEEWAY_MAX + 1;
	assert_int_equal(auth_verify(&cfg, t, NOW, NULL, err, sizeof(err)), -EINVAL);
	cfg = f->cfg;
	cfg.issuer = NULL;
	assert_int_equal(auth_verify(&cfg, t, NOW, NULL, err, sizeof(err)), -EINVAL);
	cfg = f->cfg;
	cfg.audience = "";
	assert_int_equal(auth_verify(&cfg, t, NOW, NULL, err, sizeof(err)), -EINVAL);
	cfg = f->cfg;
	cfg.nkeys = 0;
	assert_int_equal(auth_verify(&cfg, t, NOW, NULL, err, sizeof(err)), -EINVAL);
	/* no error buffer at all is fine */
	assert_int_equal(auth_verify(&f->cfg, "x", NOW, NULL, NULL, 0), -EACCES);
	assert_int_equal(auth_verify(&f->cfg, t, NOW, NULL, NULL, 0), 0);
	free(t);
}

static void only_p256_public_keys_load(void **state)
{
	struct fixture *f = *state;
	static const char corrupt[] =
		"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
	struct auth_cfg cfg = { 0 };
	char err[256], path[160];

	if (auth_load_pubkey(&cfg, f->p384_path, err, sizeof(err)) != -EINVAL ||
	    !strstr(err, "P-256"))
		fail_msg("expected a P-384 key refused (-EINVAL, \"P-256\"), got \"%s\"", err);
	if (auth_load_pubkey(&cfg, f->rsa_path, err, sizeof(err)) != -EINVAL ||
	    !strstr(err, "P-256"))
		fail_msg("expected an RSA key refused (-EINVAL, \"P-256\"), got \"%s\"", err);
	if (auth_load_pubkey(&cfg, f->priv_path, err, sizeof(err)) != -EINVAL)
		fail_msg("expected a private key file to be refused as a public key, got \"%s\"",
			 err);
	snprintf(path, sizeof(path), "%s/missing.pub", f->dir);
	if (auth_load_pubkey(&cfg, path, err, sizeof(err)) != -ENOENT ||
	    !strstr(err, "missing.pub"))
		fail_msg("expected -ENOENT naming the file for a missing key, got \"%s\"", err);
	if (auth_set_pubkey(&cfg, corrupt, strlen(corrupt), err, sizeof(err)) != -EINVAL)
		fail_msg("expected a corrupt PEM to be refused, got \"%s\"", err);
	assert_int_equal(cfg.nkeys, 0);

	/* loading the other key replaces the first: our tokens stop verifying */
	assert_int_equal(auth_load_pubkey(&cfg, f->pub_path, err, sizeof(err)), 0);
	assert_int_equal(auth_load_pubkey(&cfg, f->other_pub_path, err, sizeof(err)), 0);
	cfg.issuer = "dvv";
	cfg.audience = "dvv-relay";
	{
		char *t = mint(f, good_claims());

		if (auth_verify(&cfg, t, NOW, NULL, err, sizeof(err)) != -EACCES)
			fail_msg("expected a token from the old key to fail after a key change");
		free(t);
	}
	auth_cfg_free(&cfg);
	auth_cfg_free(&cfg);
	assert_int_equal(cfg.nkeys, 0);
}

/* ---- keys by kid ---------------------------------------------------------------------------- */

/* Sign claims (consumed) with key, the header naming kid (NULL: no kid), the way the API does. */
static char *mint_kid(EVP_PKEY *key, json_t *claims, const char *kid)
{
	char *pem = pem_of(key, 1), *json = json_dumps(claims, JSON_COMPACT), *token;
	jwt_t *jwt = NULL;

	assert_non_null(json);
	assert_int_equal(jwt_new(&jwt), 0);
	assert_int_equal(jwt_add_grants_json(jwt, json), 0);
	if (kid)
		assert_int_equal(jwt_add_header(jwt, "kid", kid), 0);
	assert_int_equal(jwt_set_alg(jwt, JWT_ALG_ES256, (unsigned char *)pem, (int)strlen(pem)),
			 0);
	token = jwt_encode_str(jwt);
	assert_non_null(token);
	jwt_free(jwt);
	free(json);
	free(pem);
	json_decref(claims);
	return token;
}

/* A fresh key directory under the fixture's: <dir>/<name>/ */
static void key_dir(struct fixture *f, const char *name, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", f->dir, name);
	assert_int_equal(mkdir(out, 0700), 0);
}

static void put_pub(const char *dir, const char *file, EVP_PKEY *key)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	write_pub(path, key);
}

static void rm_dir(const char *dir)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf -- '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static int verify_with(struct fixture *f, struct auth_cfg *cfg, const char *t, char *err,
		       size_t cap)
{
	cfg->issuer = "dvv";
	cfg->audience = "dvv-relay";
	cfg->leeway_s = LEEWAY;
	(void)f;
	return auth_verify(cfg, t, NOW, NULL, err, cap);
}

static void file_key_accepts_its_kid_and_no_kid_only(void **state)
{
	struct fixture *f = *state;
	char *t;

	/* the fixture loaded <dir>/jwt.pub: kid "jwt" */
	assert_str(f->cfg.keys[0].kid, "jwt", "kid of a lone file");
	t = mint_kid(f->key, good_claims(), "jwt");
	assert_accepted(f, t, NULL);
	free(t);
	t = mint_kid(f->key, good_claims(), NULL);
	assert_accepted(f, t, NULL);
	free(t);
	t = mint_kid(f->key, good_claims(), "k2026");
	assert_rejected(f, t, "unknown kid");
	free(t);
	t = mint_kid(f->key, good_claims(), "bad/kid");
	assert_rejected(f, t, "kid is not");
	free(t);
}

static void directory_keys_are_picked_by_kid(void **state)
{
	struct fixture *f = *state;
	struct auth_cfg cfg = { 0 };
	char dir[128], err[256];
	char *t;

	key_dir(f, "keys-pick", dir, sizeof(dir));
	put_pub(dir, "k1.pub", f->key);
	put_pub(dir, "k2.pub", f->other);
	put_pub(dir, "notes.txt", f->other); /* not *.pub: ignored */
	assert_int_equal(auth_load_keys(&cfg, dir, err, sizeof(err)), 0);
	assert_int_equal(cfg.nkeys, 2);

	/* rotation: tokens of the old key (k1) and of the new one (k2) both verify */
	t = mint_kid(f->key, good_claims(), "k1");
	assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), 0);
	free(t);
	t = mint_kid(f->other, good_claims(), "k2");
	assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), 0);
	free(t);
	/* the kid picks one key: k1's signature under kid k2 fails */
	t = mint_kid(f->key, good_claims(), "k2");
	assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "bad signature"));
	free(t);
	t = mint_kid(f->key, good_claims(), "k3");
	assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "unknown kid"));
	free(t);
	/* a directory has no default key: a token without kid is refused */
	t = mint_kid(f->key, good_claims(), NULL);
	assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "no kid"));
	free(t);
	/* the other vectors hold with a directory too */
	t = mint_kid(f->key, with(good_claims(), "exp", json_integer(NOW - 3600)), "k1");
	assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "expired"));
	free(t);
	t = mint_kid(f->key, with(good_claims(), "nbf", json_integer(NOW + 3600)), "k1");
	assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "not valid for another"));
	free(t);
	t = mint_kid(f->key, with(good_claims(), "aud", json_string("x")), "k1");
	assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "aud mismatch"));
	free(t);
	t = mint_kid(f->key, with(good_claims(), "iss", json_string("x")), "k1");
	assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "iss mismatch"));
	free(t);
	{
		/* HS256 with k1's public key as the secret, naming k1 */
		jwt_t *jwt = NULL;
		json_t *claims = good_claims();
		char *json = json_dumps(claims, JSON_COMPACT);

		json_decref(claims);
		assert_int_equal(jwt_new(&jwt), 0);
		assert_int_equal(jwt_add_grants_json(jwt, json), 0);
		assert_int_equal(jwt_add_header(jwt, "kid", "k1"), 0);
		assert_int_equal(jwt_set_alg(jwt, JWT_ALG_HS256, cfg.keys[0].pem,
					     (int)cfg.keys[0].pem_len), 0);
		t = jwt_encode_str(jwt);
		jwt_free(jwt);
		free(json);
		assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), -EACCES);
		assert_non_null(strstr(err, "alg HS256 not allowed"));
		free(t);
		t = sign_raw(f->key, "{\"alg\":\"none\",\"kid\":\"k1\"}", "{}");
		assert_int_equal(verify_with(f, &cfg, t, err, sizeof(err)), -EACCES);
		assert_non_null(strstr(err, "alg"));
		free(t);
	}
	auth_cfg_free(&cfg);
	rm_dir(dir);
}

static void rotation_reload_and_failed_reload_keep_working_keys(void **state)
{
	struct fixture *f = *state;
	struct auth_cfg cfg = { 0 };
	char dir[128], err[256], path[256];
	char *t_old, *t_new;

	key_dir(f, "keys-rot", dir, sizeof(dir));
	put_pub(dir, "old.pub", f->key);
	assert_int_equal(auth_load_keys(&cfg, dir, err, sizeof(err)), 0);
	t_old = mint_kid(f->key, good_claims(), "old");
	t_new = mint_kid(f->other, good_claims(), "new");
	assert_int_equal(verify_with(f, &cfg, t_new, err, sizeof(err)), -EACCES);
	assert_int_equal(auth_reload_if_changed(&cfg, err, sizeof(err)), 0); /* unchanged */

	/* the new key arrives: both verify (the directory's mtime moved) */
	cfg.src_mtime_ns = 0; /* same-second writes: do not depend on the clock's resolution */
	put_pub(dir, "new.pub", f->other);
	assert_int_equal(auth_reload_if_changed(&cfg, err, sizeof(err)), 1);
	assert_int_equal(cfg.nkeys, 2);
	assert_int_equal(verify_with(f, &cfg, t_old, err, sizeof(err)), 0);
	assert_int_equal(verify_with(f, &cfg, t_new, err, sizeof(err)), 0);

	/* a broken key file: the reload fails, names the file, and the two keys stay */
	snprintf(path, sizeof(path), "%s/broken.pub", dir);
	write_file(path, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
	cfg.src_mtime_ns = 0;
	assert_int_equal(auth_reload_if_changed(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "broken.pub"));
	assert_int_equal(cfg.nkeys, 2);
	assert_int_equal(verify_with(f, &cfg, t_old, err, sizeof(err)), 0);
	/* ... and is not retried until something changes again */
	assert_int_equal(auth_reload_if_changed(&cfg, err, sizeof(err)), 0);
	unlink(path);

	/* the old key retires: its tokens stop verifying */
	snprintf(path, sizeof(path), "%s/old.pub", dir);
	unlink(path);
	cfg.src_mtime_ns = 0;
	assert_int_equal(auth_reload_if_changed(&cfg, err, sizeof(err)), 1);
	assert_int_equal(cfg.nkeys, 1);
	assert_int_equal(verify_with(f, &cfg, t_old, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "unknown kid"));
	assert_int_equal(verify_with(f, &cfg, t_new, err, sizeof(err)), 0);
	free(t_old);
	free(t_new);
	auth_cfg_free(&cfg);
	rm_dir(dir);
}

static void key_directory_limits(void **state)
{
	struct fixture *f = *state;
	struct auth_cfg cfg = { 0 };
	char dir[128], err[256], name[32];

	key_dir(f, "keys-empty", dir, sizeof(dir));
	assert_int_equal(auth_load_keys(&cfg, dir, err, sizeof(err)), -ENOKEY);
	assert_non_null(strstr(err, "no *.pub"));
	put_pub(dir, "bad kid.pub", f->key);
	assert_int_equal(auth_load_keys(&cfg, dir, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "bad kid.pub"));
	rm_dir(dir);

	key_dir(f, "keys-many", dir, sizeof(dir));
	for (int i = 0; i <= AUTH_KEYS_MAX; i++) {
		snprintf(name, sizeof(name), "k%02d.pub", i);
		put_pub(dir, name, f->key);
	}
	assert_int_equal(auth_load_keys(&cfg, dir, err, sizeof(err)), -E2BIG);
	assert_non_null(strstr(err, "more than 16 keys"));
	assert_int_equal(cfg.nkeys, 0);
	{
		char path[200];

		snprintf(path, sizeof(path), "%s/k00.pub", dir);
		unlink(path);
	}
	assert_int_equal(auth_load_keys(&cfg, dir, err, sizeof(err)), 0);
	assert_int_equal(cfg.nkeys, AUTH_KEYS_MAX);
	auth_cfg_free(&cfg);
	rm_dir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid_token_is_accepted_with_every_claim),
		cmocka_unit_test(minimal_token_gets_free_plan_and_empty_optionals),
		cmocka_unit_test(hand_signed_token_without_typ_is_accepted),
		cmocka_unit_test(every_one_of_300_fresh_tokens_is_accepted),
		cmocka_unit_test(expired_token_is_rejected_with_its_age),
		cmocka_unit_test(expiry_within_leeway_is_accepted),
		cmocka_unit_test(not_yet_valid_token_is_rejected),
		cmocka_unit_test(nbf_and_iat_within_leeway_are_accepted),
		cmocka_unit_test(token_issued_in_the_future_is_rejected),
		cmocka_unit_test(times_that_are_not_plain_integers_are_rejected),
		cmocka_unit_test(wrong_issuer_is_rejected),
		cmocka_unit_test(wrong_audience_is_rejected),
		cmocka_unit_test(audience_array_containing_ours_is_accepted),
		cmocka_unit_test(audience_array_without_ours_is_rejected),
		cmocka_unit_test(missing_required_claims_are_rejected),
		cmocka_unit_test(subject_and_tunnel_with_bad_characters_are_rejected),
		cmocka_unit_test(longest_allowed_ids_are_accepted),
		cmocka_unit_test(bad_plan_is_rejected),
		cmocka_unit_test(bad_name_is_rejected),
		cmocka_unit_test(good_names_are_accepted),
		cmocka_unit_test(alg_none_is_rejected),
		cmocka_unit_test(hs256_signed_with_the_public_key_is_rejected),
		cmocka_unit_test(other_algorithms_in_the_header_are_rejected),
		cmocka_unit_test(header_oddities_are_rejected),
		cmocka_unit_test(payload_oddities_are_rejected),
		cmocka_unit_test(signature_by_another_key_is_rejected),
		cmocka_unit_test(tampered_payload_is_rejected),
		cmocka_unit_test(tampered_or_reencoded_signature_is_rejected),
		cmocka_unit_test(oversized_token_is_rejected),
		cmocka_unit_test(garbage_is_rejected),
		cmocka_unit_test(token_with_spaces_is_rejected),
		cmocka_unit_test(bad_arguments_return_einval),
		cmocka_unit_test(only_p256_public_keys_load),
		cmocka_unit_test(file_key_accepts_its_kid_and_no_kid_only),
		cmocka_unit_test(directory_keys_are_picked_by_kid),
		cmocka_unit_test(rotation_reload_and_failed_reload_keep_working_keys),
		cmocka_unit_test(key_directory_limits),
	};

	return cmocka_run_group_tests_name("auth", tests, group_setup, group_teardown);
}
