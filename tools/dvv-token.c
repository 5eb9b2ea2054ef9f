/* dvv-token: mint an agent token (ES256 JWT) for development and tests.
 *
 *   dvv-token --key jwt.key --sub USER --tid TUNNEL [--plan TIER] [--name LABEL] [--kid KID]
 *             [--jti ID]
 *             [--ttl SECONDS] [--iss dvv] [--aud dvv-relay] [--nbf-offset S] [--exp-offset S]
 *             [--alg-hs256-with-key FILE]
 *
 * Prints the token and a newline on stdout. Exit 0 on success, 1 when the key cannot be used,
 * 2 on a usage error. The real issuer is the API; this tool exists so the relay can be run and
 * tested before it. --alg-hs256-with-key signs HS256 with FILE's bytes as the HMAC secret: it
 * only exists to prove the relay rejects algorithm confusion (give it jwt.pub).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "auth.h"

#define KEY_FILE_MAX (64 * 1024)
#define TEN_YEARS_S  (10LL * 365 * 86400)

struct token_opts {
	const char *key_path;
	const char *hs256_path; /* test-only algorithm-confusion token */
	const char *sub, *tid, *plan, *name, *iss, *aud, *kid, *jti;
	long long ttl, nbf_offset, exp_offset;
	int has_nbf, has_exp;
};

/* the claims a token gets when their option is not given (also in usage) */
#define DEFAULT_TTL_S 86400
#define DEFAULT_ISS   "dvv"
#define DEFAULT_AUD   "dvv-relay"

/* one line per option, "(default: X)" where it has one */
static void usage(FILE *f)
{
	fprintf(f, "usage: dvv-token --key jwt.key --sub USER --tid TUNNEL [options]\n"
		   "  --key FILE                ES256 private key (PEM) that signs the token (required)\n"
		   "  --sub USER                user id, sub claim, 1-64 of [A-Za-z0-9_-] (required)\n"
		   "  --tid TUNNEL              tunnel id, tid claim, same characters (required)\n"
		   "  --plan TIER               plan claim, [a-z0-9_-]{1,16} (default: none, the relay assumes free)\n"
		   "  --kid KID                 key id in the header, the relay's <kid>.pub (default: none)\n"
		   "  --jti ID                  token id, what a revocation names (default: random)\n"
		   "  --name LABEL              requested custom label, DNS label of 3-40 [a-z0-9-] (default: none, a random name)\n"
		   "  --ttl SECONDS             lifetime (default: %d)\n"
		   "  --iss ISS                 issuer (default: %s)\n"
		   "  --aud AUD                 audience (default: %s)\n"
		   "  --nbf-offset S            add nbf = now + S (default: no nbf)\n"
		   "  --exp-offset S            exp = now + S, may be negative; overrides --ttl\n"
		   "  --alg-hs256-with-key FILE test only: sign HS256 with FILE as the secret\n"
		   "  --help                    print this help and exit\n"
		   "Prints the token on stdout.\n",
		DEFAULT_TTL_S, DEFAULT_ISS, DEFAULT_AUD);
}

/* Read a whole small file into a NUL-terminated buffer. 0 or -errno. */
static int read_small_file(const char *path, unsigned char **out, size_t *out_len)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	struct stat st;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > KEY_FILE_MAX) {
		ret = S_ISREG(st.st_mode) ? -EFBIG : -EINVAL;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	close(fd);
	return ret;
}

/* Refuse encrypted keys instead of letting OpenSSL prompt on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* The signing key must be an unencrypted EC P-256 private key: say so clearly rather than
 * let libjwt fail later with a bare EINVAL. */
static int check_es256_key(const unsigned char *pem, size_t len, const char *path)
{
	char group[64] = "";
	EVP_PKEY *pkey = NULL;
	BIO *in;
	int ok = 0;

	in = BIO_new_mem_buf(pem, (int)len);
	if (in)
		pkey = PEM_read_bio_PrivateKey(in, NULL, no_passphrase, NULL);
	if (!pkey)
		fprintf(stderr, "dvv-token: %s: not an unencrypted PEM private key\n", path);
	else if (!EVP_PKEY_is_a(pkey, "EC") ||
		 !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
						 sizeof(group), NULL) ||
		 strcmp(group, "prime256v1") != 0)
		fprintf(stderr, "dvv-token: %s: not an EC P-256 key (ES256 needs P-256)\n", path);
	else
		ok = 1;
	EVP_PKEY_free(pkey);
	BIO_free(in);
	return ok ? 0 : -EINVAL;
}

static int parse_seconds(const char *opt, const char *s, long long min, long long max,
			 long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "dvv-token: %s wants an integer number of seconds in %lld..%lld\n",
			opt, min, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* 0 = mint, 1 = --help was answered, -EINVAL = usage error (already reported). */
static int parse_args(int argc, char **argv, struct token_opts *o)
{
	enum { O_KEY = 256, O_SUB, O_TID, O_PLAN, O_NAME, O_TTL, O_ISS, O_AUD, O_NBF, O_EXP, O_HS,
	       O_KID, O_JTI };
	static const struct option longopts[] = {
		{ "key", required_argument, NULL, O_KEY },
		{ "sub", required_argument, NULL, O_SUB },
		{ "tid", required_argument, NULL, O_TID },
		{ "plan", required_argument, NULL, O_PLAN },
		{ "name", required_argument, NULL, O_NAME },
		{ "ttl", required_argument, NULL, O_TTL },
		{ "iss", required_argument, NULL, O_ISS },
		{ "aud", required_argument, NULL, O_AUD },
		{ "nbf-offset", required_argument, NULL, O_NBF },
		{ "exp-offset", required_argument, NULL, O_EXP },
		{ "alg-hs256-with-key", required_argument, NULL, O_HS },
		{ "kid", required_argument, NULL, O_KID },
		{ "jti", required_argument, NULL, O_JTI },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case O_KEY: o->key_path = optarg; break;
		case O_SUB: o->sub = optarg; break;
		case O_TID: o->tid = optarg; break;
		case O_PLAN: o->plan = optarg; break;
		case O_NAME: o->name = optarg; break;
		case O_ISS: o->iss = optarg; break;
		case O_AUD: o->aud = optarg; break;
		case O_HS: o->hs256_path = optarg; break;
		case O_KID: o->kid = optarg; break;
		case O_JTI: o->jti = optarg; break;
		case O_TTL:
			if (parse_seconds("--ttl", optarg, 1, TEN_YEARS_S, &o->ttl) < 0)
				return -EINVAL;
			break;
		case O_NBF:
			if (parse_seconds("--nbf-offset", optarg, -TEN_YEARS_S, TEN_YEARS_S,
					  &o->nbf_offset) < 0)
				return -EINVAL;
			o->has_nbf = 1;
			break;
		case O_EXP:
			if (parse_seconds("--exp-offset", optarg, -TEN_YEARS_S, TEN_YEARS_S,
					  &o->exp_offset) < 0)
				return -EINVAL;
			o->has_exp = 1;
			break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "dvv-token: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (!o->key_path && !o->hs256_path) {
		fprintf(stderr, "dvv-token: --key is required (the ES256 private key, jwt.key)\n");
		return -EINVAL;
	}
	if (!o->sub || !auth_valid_id(o->sub, strlen(o->sub))) {
		fprintf(stderr, "dvv-token: --sub is required: 1-%d of [A-Za-z0-9_-]\n",
			AUTH_ID_MAX);
		return -EINVAL;
	}
	if (!o->tid || !auth_valid_id(o->tid, strlen(o->tid))) {
		fprintf(stderr, "dvv-token: --tid is required: 1-%d of [A-Za-z0-9_-]\n",
			AUTH_ID_MAX);
		return -EINVAL;
	}
	if (o->plan && !auth_valid_tier(o->plan, strlen(o->plan))) {
		fprintf(stderr, "dvv-token: --plan must be a tier name: 1-16 of [a-z0-9_-]\n");
		return -EINVAL;
	}
	if (o->kid && !auth_valid_kid(o->kid, strlen(o->kid))) {
		fprintf(stderr, "dvv-token: --kid must be 1-%d of [A-Za-z0-9._-]\n", AUTH_KID_MAX);
		return -EINVAL;
	}
	if (o->jti && !auth_valid_id(o->jti, strlen(o->jti))) {
		fprintf(stderr, "dvv-token: --jti must be 1-%d of [A-Za-z0-9_-]\n", AUTH_ID_MAX);
		return -EINVAL;
	}
	if (o->name && !auth_valid_label(o->name, strlen(o->name))) {
		fprintf(stderr,
			"dvv-token: --name must be a DNS label: %d-%d of [a-z0-9-], "
			"no '-' at either end\n",
			AUTH_LABEL_MIN, AUTH_LABEL_MAX);
		return -EINVAL;
	}
	if (!o->iss[0] || !o->aud[0]) {
		fprintf(stderr, "dvv-token: --iss and --aud must not be empty\n");
		return -EINVAL;
	}
	return 0;
}

/* Build and sign the token. 0, or a non-zero exit status (message already printed). */
static int mint(const struct token_opts *o, char **token)
{
	const char *key_path = o->hs256_path ? o->hs256_path : o->key_path;
	unsigned char *key = NULL, rnd[16];
	char jti[2 * sizeof(rnd) + 1];
	long long now = (long long)time(NULL);
	size_t key_len = 0, i;
	jwt_t *jwt = NULL;
	int ret, status = 1;

	ret = read_small_file(key_path, &key, &key_len);
	if (ret < 0) {
		fprintf(stderr, "dvv-token: cannot read %s: %s\n", key_path, strerror(-ret));
		goto out;
	}
	if (key_len == 0 || key_len > INT_MAX) {
		fprintf(stderr, "dvv-token: %s is empty\n", key_path);
		goto out;
	}
	if (o->hs256_path)
		fprintf(stderr,
			"dvv-token: TEST ONLY: signing HS256 with %s as the secret; "
			"the relay must reject this token\n",
			key_path);
	else if (check_es256_key(key, key_len, key_path) < 0)
		goto out;

	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		fprintf(stderr, "dvv-token: no randomness for jti\n");
		goto out;
	}
	for (i = 0; i < sizeof(rnd); i++)
		snprintf(jti + 2 * i, 3, "%02x", rnd[i]);

	ret = jwt_new(&jwt);
	if (ret) {
		fprintf(stderr, "dvv-token: jwt_new: %s\n", strerror(ret));
		goto out;
	}
	ret = jwt_add_grant(jwt, "iss", o->iss);
	ret = ret ? ret : jwt_add_grant(jwt, "aud", o->aud);
	ret = ret ? ret : jwt_add_grant(jwt, "sub", o->sub);
	ret = ret ? ret : jwt_add_grant(jwt, "tid", o->tid);
	ret = ret ? ret : jwt_add_grant(jwt, "jti", o->jti ? o->jti : jti);
	if (!ret && o->kid)
		ret = jwt_add_header(jwt, "kid", o->kid);
	ret = ret ? ret : jwt_add_grant_int(jwt, "iat", (long)now);
	ret = ret ? ret
		  : jwt_add_grant_int(jwt, "exp",
				      (long)(now + (o->has_exp ? o->exp_offset : o->ttl)));
	if (!ret && o->has_nbf)
		ret = jwt_add_grant_int(jwt, "nbf", (long)(now + o->nbf_offset));
	if (!ret && o->plan)
		ret = jwt_add_grant(jwt, "plan", o->plan);
	if (!ret && o->name)
		ret = jwt_add_grant(jwt, "name", o->name);
	if (ret) {
		fprintf(stderr, "dvv-token: adding claims: %s\n", strerror(ret));
		goto out;
	}
	ret = jwt_set_alg(jwt, o->hs256_path ? JWT_ALG_HS256 : JWT_ALG_ES256, key, (int)key_len);
	if (ret) {
		fprintf(stderr, "dvv-token: cannot use %s as a signing key: %s\n", key_path,
			strerror(ret));
		goto out;
	}
	*token = jwt_encode_str(jwt);
	if (!*token) {
		fprintf(stderr, "dvv-token: signing with %s failed: %s\n", key_path,
			strerror(errno));
		goto out;
	}
	status = 0;
out:
	if (jwt)
		jwt_free(jwt);
	if (key) {
		OPENSSL_cleanse(key, key_len);
		free(key);
	}
	return status;
}

int main(int argc, char **argv)
{
	struct token_opts o = { .iss = DEFAULT_ISS, .aud = DEFAULT_AUD, .ttl = DEFAULT_TTL_S };
	char *token = NULL;
	int status;

	status = parse_args(argc, argv, &o);
	if (status)
		return status < 0 ? 2 : 0;
	status = mint(&o, &token);
	if (status)
		return status;
	if (printf("%s\n", token) < 0 || fflush(stdout) != 0) {
		fprintf(stderr, "dvv-token: cannot write to stdout: %s\n", strerror(errno));
		status = 1;
	}
	free(token);
	return status;
}
