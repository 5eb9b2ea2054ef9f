/* Agent token verification (ES256 JWT). See auth.h for the contract.
 *
 * Order of checks, cheapest and least trusting first:
 *   1. shape: <= AUTH_TOKEN_MAX bytes, only base64url characters and exactly two dots;
 *   2. header, decoded here (strict base64url, jansson rejecting duplicate keys): "alg" must be
 *      exactly "ES256", "typ" absent or "JWT", no "crit";
 *   3. signature segment: exactly 64 bytes (R||S), canonically encoded;
 *   4. payload decoded here the same strict way, must be a JSON object;
 *   5. libjwt verifies the signature with the pinned key; its idea of the algorithm is checked;
 *   6. every claim, from the payload bytes decoded in 4 (the same bytes the signature covers).
 * libjwt decodes header and payload itself too; steps 1-4 leave it nothing ambiguous to read
 * differently (no padding, no foreign characters, no duplicate keys, no case games on "alg").
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#define AUTH_PUBKEY_FILE_MAX   (16 * 1024)
#define AUTH_ES256_SIG_LEN     64 /* raw R||S, 32 bytes each */
#define AUTH_ES256_SIG_B64_LEN 86 /* ceil(64 * 4 / 3), no padding */

/* Write a message into the caller's buffer (which may be NULL/0) and return `code`. */
__attribute__((format(printf, 4, 5))) static int auth_fail(char *err, size_t errlen, int code,
							   const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ---- syntax rules ------------------------------------------------------------------------ */

int auth_valid_id(const char *s, size_t len)
{
	size_t i;

	if (!s || len == 0 || len > AUTH_ID_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int auth_valid_label(const char *s, size_t len)
{
	size_t i;

	if (!s || len < AUTH_LABEL_MIN || len > AUTH_LABEL_MAX)
		return 0;
	if (s[0] == '-' || s[len - 1] == '-')
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return 0;
	}
	return 1;
}

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Strict base64url, no padding: a length that cannot occur (len % 4 == 1) or non-zero unused
 * trailing bits are refused, so every byte string has exactly one accepted encoding (no
 * malleable signatures, nothing two decoders could read differently). Returns the decoded
 * length, or -1. */
static long b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t i, n = 0;

	if (len % 4 == 1)
		return -1;
	for (i = 0; i < len; i++) {
		int v = b64url_value((unsigned char)in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n >= cap)
				return -1;
			out[n++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits && (acc & ((1u << bits) - 1)))
		return -1;
	return (long)n;
}

/* Decode one segment into a JSON object. 0, or -1 not base64url, -2 not a JSON object. */
static int segment_object(const char *seg, size_t len, json_t **out)
{
	unsigned char buf[AUTH_TOKEN_MAX];
	json_error_t jerr;
	json_t *js;
	long n;

	*out = NULL;
	n = b64url_decode(seg, len, buf, sizeof(buf));
	if (n < 0)
		return -1;
	js = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
	if (!js || !json_is_object(js)) {
		json_decref(js);
		return -2;
	}
	*out = js;
	return 0;
}

/* A value from the token, safe to put in a message: short alphanumerics only. */
static const char *printable(const char *s, size_t len, char *buf, size_t cap)
{
	size_t i;

	if (len == 0 || len >= cap || len > 12)
		return "(unrecognised)";
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			return "(unrecognised)";
		buf[i] = (char)c;
	}
	buf[len] = '\0';
	return buf;
}

/* Exact, length-aware string equality (a JSON string may hold bytes a C string cannot). */
static int json_str_equals(const json_t *v, const char *want)
{
	size_t len = strlen(want);

	return json_is_string(v) && json_string_length(v) == len &&
	       memcmp(json_string_value(v), want, len) == 0;
}

/* ---- key ---------------------------------------------------------------------------------- */

int auth_set_pubkey(struct auth_cfg *cfg, const void *pem, size_t len, char *err, size_t errlen)
{
	char group[64] = "";
	EVP_PKEY *pkey = NULL;
	BIO *in = NULL, *mem = NULL;
	BUF_MEM *bm = NULL;
	unsigned char *copy;
	int ret;

	if (!cfg || !pem || len == 0 || len > INT_MAX)
		return auth_fail(err, errlen, -EINVAL, "no public key given");

	in = BIO_new_mem_buf(pem, (int)len);
	if (!in) {
		ret = auth_fail(err, errlen, -ENOMEM, "out of memory reading public key");
		goto out;
	}
	pkey = PEM_read_bio_PUBKEY(in, NULL, NULL, NULL);
	if (!pkey) {
		ret = auth_fail(err, errlen, -EINVAL,
				"not a PEM public key (\"BEGIN PUBLIC KEY\")");
		goto out;
	}
	if (!EVP_PKEY_is_a(pkey, "EC") ||
	    !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
					    NULL) ||
	    strcmp(group, "prime256v1") != 0) {
		ret = auth_fail(err, errlen, -EINVAL,
				"public key is not EC P-256 (ES256 needs P-256)");
		goto out;
	}
	/* libjwt gets our own re-encoding: exactly the key checked above, nothing else that
	 * might have been in the file. */
	mem = BIO_new(BIO_s_mem());
	if (!mem || !PEM_write_bio_PUBKEY(mem, pkey)) {
		ret = auth_fail(err, errlen, -ENOMEM, "out of memory encoding public key");
		goto out;
	}
	BIO_get_mem_ptr(mem, &bm);
	copy = malloc(bm->length + 1);
	if (!copy) {
		ret = auth_fail(err, errlen, -ENOMEM, "out of memory copying public key");
		goto out;
	}
	memcpy(copy, bm->data, bm->length);
	copy[bm->length] = '\0';
	free(cfg->pubkey);
	cfg->pubkey = copy;
	cfg->pubkey_len = bm->length;
	ret = 0;
out:
	BIO_free(mem);
	BIO_free(in);
	EVP_PKEY_free(pkey);
	return ret;
}

int auth_load_pubkey(struct auth_cfg *cfg, const char *path, char *err, size_t errlen)
{
	char buf[AUTH_PUBKEY_FILE_MAX + 1];
	size_t len = 0;
	struct stat st;
	int fd, ret;

	if (!cfg || !path)
		return auth_fail(err, errlen, -EINVAL, "no public key path given");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		return auth_fail(err, errlen, ret, "cannot open %s: %s", path, strerror(-ret));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ret = auth_fail(err, errlen, -EINVAL, "%s is not a regular file", path);
		goto out;
	}
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			auth_fail(err, errlen, ret, "cannot read %s: %s", path, strerror(-ret));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > AUTH_PUBKEY_FILE_MAX) {
		ret = auth_fail(err, errlen, -EFBIG, "%s is larger than %d bytes", path,
				AUTH_PUBKEY_FILE_MAX);
		goto out;
	}
	ret = auth_set_pubkey(cfg, buf, len, err, errlen);
	if (ret < 0 && err && errlen) {
		char why[160];

		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "%s: %s", path, why);
	}
out:
	close(fd);
	return ret;
}

void auth_cfg_free(struct auth_cfg *cfg)
{
	if (!cfg)
		return;
	free(cfg->pubkey);
	cfg->pubkey = NULL;
	cfg->pubkey_len = 0;
}

/* ---- verification --------------------------------------------------------------------------- */

/* 0 = present and a string, 1 = absent, -1 = present but not a string. */
static int claim_string(json_t *claims, const char *key, const char **s, size_t *len)
{
	json_t *v = json_object_get(claims, key);

	if (!v)
		return 1;
	if (!json_is_string(v))
		return -1;
	*s = json_string_value(v);
	*len = json_string_length(v);
	return 0;
}

/* A time claim: absent (1 unless required), an integer within 0..AUTH_TIME_MAX, or rejected. */
static int claim_time(json_t *claims, const char *key, int required, int64_t *t, char *err,
		      size_t errlen)
{
	json_t *v = json_object_get(claims, key);
	json_int_t x;

	if (!v) {
		if (required)
			return auth_fail(err, errlen, -EACCES, "%s missing", key);
		return 1;
	}
	if (!json_is_integer(v))
		return auth_fail(err, errlen, -EACCES, "%s is not an integer", key);
	x = json_integer_value(v);
	if (x < 0 || x > AUTH_TIME_MAX)
		return auth_fail(err, errlen, -EACCES, "%s out of range", key);
	*t = (int64_t)x;
	return 0;
}

/* sub/tid/jti: copy into dst (AUTH_ID_MAX + 1 bytes) if syntactically valid. */
static int claim_id(json_t *claims, const char *key, int required, char *dst, char *err,
		    size_t errlen)
{
	const char *s = NULL;
	size_t len = 0;
	int r = claim_string(claims, key, &s, &len);

	if (r == 1)
		return required ? auth_fail(err, errlen, -EACCES, "%s missing", key) : 0;
	if (r < 0)
		return auth_fail(err, errlen, -EACCES, "%s is not a string", key);
	if (len == 0)
		return auth_fail(err, errlen, -EACCES, "%s is empty", key);
	if (len > AUTH_ID_MAX)
		return auth_fail(err, errlen, -EACCES, "%s is longer than %d characters", key,
				 AUTH_ID_MAX);
	if (!auth_valid_id(s, len))
		return auth_fail(err, errlen, -EACCES, "%s has characters outside [A-Za-z0-9_-]",
				 key);
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

static int check_audience(json_t *claims, const char *audience, char *err, size_t errlen)
{
	json_t *aud = json_object_get(claims, "aud"), *v;
	int found = 0;
	size_t i;

	if (!aud)
		return auth_fail(err, errlen, -EACCES, "aud missing");
	if (json_is_string(aud))
		return json_str_equals(aud, audience)
			       ? 0
			       : auth_fail(err, errlen, -EACCES, "aud mismatch");
	if (!json_is_array(aud))
		return auth_fail(err, errlen, -EACCES,
				 "aud is not a string or an array of strings");
	json_array_foreach (aud, i, v) {
		if (!json_is_string(v))
			return auth_fail(err, errlen, -EACCES,
					 "aud is not a string or an array of strings");
		found |= json_str_equals(v, audience);
	}
	return found ? 0 : auth_fail(err, errlen, -EACCES, "aud mismatch");
}

static int check_header(json_t *hdr, char *err, size_t errlen)
{
	json_t *alg = json_object_get(hdr, "alg"), *typ = json_object_get(hdr, "typ");
	char shown[16];

	if (!alg)
		return auth_fail(err, errlen, -EACCES, "header has no alg, expected ES256");
	if (!json_is_string(alg))
		return auth_fail(err, errlen, -EACCES, "alg is not a string, expected ES256");
	/* Exact: libjwt compares with strcasecmp and would take "es256" too. */
	if (!json_str_equals(alg, "ES256"))
		return auth_fail(err, errlen, -EACCES, "alg %s not allowed, expected ES256",
				 printable(json_string_value(alg), json_string_length(alg), shown,
					   sizeof(shown)));
	if (typ && !json_str_equals(typ, "JWT"))
		return auth_fail(err, errlen, -EACCES, "typ not allowed, expected JWT or none");
	/* RFC 7515 4.1.11: extensions marked critical must be understood; we understand none. */
	if (json_object_get(hdr, "crit"))
		return auth_fail(err, errlen, -EACCES, "crit header not supported");
	return 0;
}

static int check_claims(const struct auth_cfg *cfg, json_t *claims, int64_t now,
			struct auth_claims *out, char *err, size_t errlen)
{
	int64_t leeway = cfg->leeway_s;
	const char *s = NULL;
	size_t len = 0;
	int r;

	if (!json_object_get(claims, "iss"))
		return auth_fail(err, errlen, -EACCES, "iss missing");
	if (!json_str_equals(json_object_get(claims, "iss"), cfg->issuer))
		return auth_fail(err, errlen, -EACCES, "iss mismatch");
	r = check_audience(claims, cfg->audience, err, errlen);
	if (r < 0)
		return r;

	/* All times are bounded to 0..AUTH_TIME_MAX, now included: no overflow below. */
	r = claim_time(claims, "exp", 1, &out->exp, err, errlen);
	if (r < 0)
		return r;
	if (out->exp <= now - leeway)
		return auth_fail(err, errlen, -EACCES, "token expired %lld s ago",
				 (long long)(now - out->exp));
	r = claim_time(claims, "nbf", 0, &out->nbf, err, errlen);
	if (r < 0)
		return r;
	if (r == 0 && out->nbf > now + leeway)
		return auth_fail(err, errlen, -EACCES, "token not valid for another %lld s",
				 (long long)(out->nbf - now));
	r = claim_time(claims, "iat", 0, &out->iat, err, errlen);
	if (r < 0)
		return r;
	if (r == 0 && out->iat > now + leeway)
		return auth_fail(err, errlen, -EACCES, "token issued %lld s in the future",
				 (long long)(out->iat - now));

	r = claim_id(claims, "sub", 1, out->sub, err, errlen);
	if (r < 0)
		return r;
	r = claim_id(claims, "tid", 1, out->tid, err, errlen);
	if (r < 0)
		return r;
	r = claim_id(claims, "jti", 0, out->jti, err, errlen);
	if (r < 0)
		return r;

	r = claim_string(claims, "plan", &s, &len);
	if (r < 0 || (r == 0 && !(len == 4 && (!memcmp(s, "free", 4) || !memcmp(s, "paid", 4)))))
		return auth_fail(err, errlen, -EACCES, "plan must be \"free\" or \"paid\"");
	memcpy(out->plan, r == 0 ? s : "free", 5);

	r = claim_string(claims, "name", &s, &len);
	if (r < 0 || (r == 0 && !auth_valid_label(s, len)))
		return auth_fail(
			err, errlen, -EACCES,
			"name must be a DNS label: %d-%d of [a-z0-9-], no '-' at either end",
			AUTH_LABEL_MIN, AUTH_LABEL_MAX);
	if (r == 0) {
		memcpy(out->name, s, len);
		out->name[len] = '\0';
	}
	return 0;
}

int auth_verify(const struct auth_cfg *cfg, const char *token, int64_t now, struct auth_claims *out,
		char *err, size_t errlen)
{
	struct auth_claims scratch;
	const char *dot1 = NULL, *dot2 = NULL, *sig;
	json_t *hdr = NULL, *claims = NULL;
	unsigned char rs[AUTH_ES256_SIG_LEN];
	jwt_t *jwt = NULL;
	size_t len, i, sig_len;
	int dots = 0, ret;

	if (!out)
		out = &scratch;
	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = '\0';

	if (!cfg || !cfg->pubkey || cfg->pubkey_len == 0 || cfg->pubkey_len > INT_MAX)
		return auth_fail(err, errlen, -EINVAL, "no public key configured");
	if (!cfg->issuer || !cfg->issuer[0] || !cfg->audience || !cfg->audience[0])
		return auth_fail(err, errlen, -EINVAL, "issuer and audience must be configured");
	if (cfg->leeway_s < 0 || cfg->leeway_s > AUTH_LEEWAY_MAX)
		return auth_fail(err, errlen, -EINVAL, "leeway %d s out of range 0..%d",
				 cfg->leeway_s, AUTH_LEEWAY_MAX);
	if (now < 0 || now > AUTH_TIME_MAX)
		return auth_fail(err, errlen, -EINVAL, "current time %lld out of range",
				 (long long)now);
	if (!token)
		return auth_fail(err, errlen, -EINVAL, "no token given");

	/* 1. shape, before anything parses it */
	len = strnlen(token, AUTH_TOKEN_MAX + 1);
	if (len == 0)
		return auth_fail(err, errlen, -EACCES, "empty token");
	if (len > AUTH_TOKEN_MAX)
		return auth_fail(err, errlen, -EACCES, "token longer than %d bytes",
				 AUTH_TOKEN_MAX);
	for (i = 0; i < len; i++) {
		if (token[i] == '.') {
			if (++dots == 1)
				dot1 = token + i;
			else if (dots == 2)
				dot2 = token + i;
		} else if (b64url_value((unsigned char)token[i]) < 0) {
			return auth_fail(err, errlen, -EACCES,
					 "token has a character outside base64url at byte %zu", i);
		}
	}
	if (dots != 2)
		return auth_fail(err, errlen, -EACCES,
				 "token has %d parts, expected 3 (header.payload.signature)",
				 dots + 1);
	if (dot1 == token || dot2 == dot1 + 1)
		return auth_fail(err, errlen, -EACCES, "token has an empty header or payload");

	/* 2. header */
	ret = segment_object(token, (size_t)(dot1 - token), &hdr);
	if (ret < 0) {
		ret = auth_fail(err, errlen, -EACCES, "header is not %s",
				ret == -1 ? "base64url" : "a JSON object without duplicate keys");
		goto out;
	}
	ret = check_header(hdr, err, errlen);
	if (ret < 0)
		goto out;

	/* 3. signature encoding */
	sig = dot2 + 1;
	sig_len = len - (size_t)(sig - token);
	if (sig_len != AUTH_ES256_SIG_B64_LEN ||
	    b64url_decode(sig, sig_len, rs, sizeof(rs)) != AUTH_ES256_SIG_LEN) {
		ret = auth_fail(err, errlen, -EACCES,
				"signature is not a canonical %d-byte ES256 signature",
				AUTH_ES256_SIG_LEN);
		goto out;
	}

	/* 4. payload */
	ret = segment_object(dot1 + 1, (size_t)(dot2 - dot1 - 1), &claims);
	if (ret < 0) {
		ret = auth_fail(err, errlen, -EACCES, "payload is not %s",
				ret == -1 ? "base64url" : "a JSON object without duplicate keys");
		goto out;
	}

	/* 5. signature */
	ret = jwt_decode(&jwt, token, cfg->pubkey, (int)cfg->pubkey_len);
	if (ret == ENOMEM) {
		ret = auth_fail(err, errlen, -ENOMEM, "out of memory verifying signature");
		goto out;
	}
	if (ret != 0 || !jwt) {
		ret = auth_fail(err, errlen, -EACCES, "bad signature");
		goto out;
	}
	if (jwt_get_alg(jwt) != JWT_ALG_ES256) {
		ret = auth_fail(err, errlen, -EACCES, "libjwt verified with %s, expected ES256",
				jwt_alg_str(jwt_get_alg(jwt)) ? jwt_alg_str(jwt_get_alg(jwt))
							      : "?");
		goto out;
	}

	/* 6. claims */
	ret = check_claims(cfg, claims, now, out, err, errlen);
out:
	if (jwt)
		jwt_free(jwt);
	json_decref(claims);
	json_decref(hdr);
	if (ret < 0)
		memset(out, 0, sizeof(*out));
	return ret;
}
