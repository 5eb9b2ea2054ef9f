/* dvv-token's --help names the defaults of its claims, and a token minted with only the required
 * options carries exactly those: the built binary (next to this test in the build directory) is
 * run, and its token decoded. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

static char bin[4096];
static char keyfile[] = "/tmp/dvv-token-help-XXXXXX";
static char help[8192];

/* stdout of cmd (a shell command line of fixed, quoted words) into out */
static int run(const char *cmd, char *out, size_t cap)
{
	FILE *p = popen(cmd, "r");
	if (!p)
		return -errno;
	size_t n = fread(out, 1, cap - 1, p);
	out[n] = 0;
	int st = pclose(p);
	return st == 0 ? 0 : -EIO;
}

static const char *default_of(const char *opt, char *out, size_t cap)
{
	char key[64];
	snprintf(key, sizeof(key), "\n  --%s ", opt);
	const char *p = strstr(help, key);
	if (!p)
		fail_msg("--help has no line for --%s", opt);
	const char *e = strchr(p + 1, '\n');
	const char *d = strstr(p, "(default: ");
	if (!d || (e && d > e))
		return NULL;
	d += strlen("(default: ");
	size_t n = strcspn(d, ",)");
	if (n >= cap)
		n = cap - 1;
	memcpy(out, d, n);
	out[n] = 0;
	return out;
}

/* the JSON of a JWT segment (base64url, no padding) */
static json_t *segment(const char *tok, int which)
{
	const char *s = tok;
	for (int i = 0; i < which; i++)
		s = strchr(s, '.') + 1;
	size_t n = strcspn(s, ".\n");
	char b64[4096];
	assert_true(n + 4 < sizeof(b64));
	for (size_t i = 0; i < n; i++)
		b64[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
	while (n % 4)
		b64[n++] = '=';
	unsigned char raw[3072];
	int len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
	assert_true(len > 0);
	while (len > 0 && raw[len - 1] == 0)
		len--; /* EVP_DecodeBlock counts the padding as zero bytes */
	json_error_t jerr;
	json_t *j = json_loadb((const char *)raw, (size_t)len, 0, &jerr);
	if (!j)
		fail_msg("token segment %d is not JSON: %s", which, jerr.text);
	return j;
}

static int setup(void **state)
{
	ssize_t n = readlink("/proc/self/exe", bin, sizeof(bin) - 32);
	if (n <= 0)
		return -1;
	bin[n] = 0;
	char *slash = strrchr(bin, '/'); /* <build>/tests/test_token_help -> <build>/dvv-token */
	*slash = 0;
	slash = strrchr(bin, '/');
	strcpy(slash, "/dvv-token");
	if (access(bin, X_OK))
		fprintf(stderr, "%s: not built (make all)\n", bin);
	int fd = mkstemp(keyfile);
	if (fd < 0)
		return -1;
	EVP_PKEY *k = EVP_EC_gen("P-256");
	FILE *f = fdopen(fd, "w");
	int ok = k && f && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	EVP_PKEY_free(k);
	if (f)
		fclose(f);
	return ok ? 0 : -1;
}

static int teardown(void **state)
{
	unlink(keyfile);
	return 0;
}

static void minted_claims_match_the_help(void **state)
{
	char cmd[8400], ttl[32], iss[64], aud[64], jti[64], plan[64], kid[64], tok1[4096], tok2[4096];
	snprintf(cmd, sizeof(cmd), "'%s' --help", bin);
	assert_int_equal(run(cmd, help, sizeof(help)), 0);
	assert_non_null(default_of("ttl", ttl, sizeof(ttl)));
	assert_non_null(default_of("iss", iss, sizeof(iss)));
	assert_non_null(default_of("aud", aud, sizeof(aud)));
	assert_non_null(default_of("jti", jti, sizeof(jti)));
	assert_non_null(default_of("plan", plan, sizeof(plan)));
	assert_non_null(default_of("kid", kid, sizeof(kid)));
	/* every option's line is there; required ones say so */
	static const char *const req[] = {"key", "sub", "tid"};
	for (size_t i = 0; i < 3; i++) {
		char k[32];
		snprintf(k, sizeof(k), "\n  --%s ", req[i]);
		const char *p = strstr(help, k);
		assert_non_null(p);
		const char *e = strchr(p + 1, '\n');
		const char *r = strstr(p, "(required)");
		assert_true(r && r < e);
	}
	static const char *const more[] = {"name", "nbf-offset", "exp-offset", "alg-hs256-with-key", "help"};
	for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
		char k[32];
		snprintf(k, sizeof(k), "\n  --%s ", more[i]);
		if (!strstr(help, k))
			fail_msg("--help has no line for --%s", more[i]);
	}

	snprintf(cmd, sizeof(cmd), "'%s' --key '%s' --sub u1 --tid t1", bin, keyfile);
	assert_int_equal(run(cmd, tok1, sizeof(tok1)), 0);
	assert_int_equal(run(cmd, tok2, sizeof(tok2)), 0);
	json_t *c = segment(tok1, 1), *h = segment(tok1, 0), *c2 = segment(tok2, 1);
	assert_string_equal(json_string_value(json_object_get(c, "iss")), iss);
	assert_string_equal(json_string_value(json_object_get(c, "aud")), aud);
	long long life = json_integer_value(json_object_get(c, "exp")) -
			 json_integer_value(json_object_get(c, "iat"));
	assert_int_equal(life, atoll(ttl));
	assert_string_equal(plan, "none");
	assert_null(json_object_get(c, "plan"));
	assert_null(json_object_get(c, "name"));
	assert_null(json_object_get(c, "nbf"));
	assert_string_equal(kid, "none");
	assert_null(json_object_get(h, "kid"));
	assert_string_equal(jti, "random");
	const char *j1 = json_string_value(json_object_get(c, "jti"));
	const char *j2 = json_string_value(json_object_get(c2, "jti"));
	assert_non_null(j1);
	assert_non_null(j2);
	assert_string_not_equal(j1, j2);
	json_decref(c);
	json_decref(c2);
	json_decref(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(minted_claims_match_the_help),
	};
	return cmocka_run_group_tests_name("token_help", tests, setup, teardown);
}
