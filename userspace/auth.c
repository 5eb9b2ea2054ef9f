/* Agent token verification (ES256 JWT). See auth.h for the contract.
 *
 * Order of checks, cheapest and least trusting first:
 *   1. shape: <= AUTH_TOKEN_MAX bytes, only base64url characters and exactly two dots;
 *   2. header, decoded here (strict base64url, jansson rejecting duplicate keys): "alg" must be
 *      exactly "ES256", "typ" absent or "JWT", no "crit"; "kid" picks the key (unknown: refused);
 *   3. signature segment: exactly 64 bytes (R||S), canonically encoded;
 *   4. payload decoded here the same strict way, must be a JSON object;
 *   5. OpenSSL verifies the ECDSA P-256 / SHA-256 signature with the pinned key, parsed once at
 *      load (libjwt re-parsed the key's PEM for every token: most of a registration's CPU);
 *   6. every claim, from the payload bytes decoded in 4 (the same bytes the signature covers).
 * Header and payload are decoded once, here, strictly (no padding, no foreign characters, no
 * duplicate keys, no case games on "alg"); the signature covers exactly the bytes decoded.
 */
#include "auth.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
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

int auth_valid_tier(const char *s, size_t len)
{
	size_t i;

	if (!s || len == 0 || len > 16)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int auth_valid_kid(const char *s, size_t len)
{
	size_t i;

	if (!s || len == 0 || len > AUTH_KID_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return 0;
	}
	return 1;
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

/* ---- keys ------------------------------------------------------------------------------- */

/* Check that pem is an EC P-256 public key and re-encode it (the canonical PEM kept with the
 * key is exactly the key checked here, nothing else that might have been in the file). *pkey_out
 * gets the parsed key, kept for verification: parsing a PEM costs more than the ECDSA verify
 * itself with OpenSSL 3 (its decoder setup), so it is done once per key, never per token. */
static int canon_key(const void *pem, size_t len, unsigned char **out, size_t *outlen,
		     EVP_PKEY **pkey_out, char *err, size_t errlen)
{
	char group[64] = "";
	EVP_PKEY *pkey = NULL;
	BIO *in = NULL, *mem = NULL;
	BUF_MEM *bm = NULL;
	unsigned char *copy;
	int ret;

	if (!pem || len == 0 || len > INT_MAX)
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
	*out = copy;
	*outlen = bm->length;
	*pkey_out = pkey;
	pkey = NULL;
	ret = 0;
out:
	BIO_free(mem);
	BIO_free(in);
	EVP_PKEY_free(pkey);
	return ret;
}

static void keys_free(struct auth_key *keys, int n)
{
	for (int i = 0; i < n; i++) {
		free(keys[i].pem);
		keys[i].pem = NULL;
		EVP_PKEY_free(keys[i].pkey);
		keys[i].pkey = NULL;
		keys[i].pem_len = 0;
	}
}

/* Replace cfg's keys with the n keys in `keys` (ownership moves to cfg). */
static void keys_install(struct auth_cfg *cfg, struct auth_key *keys, int n)
{
	keys_free(cfg->keys, cfg->nkeys);
	memset(cfg->keys, 0, sizeof(cfg->keys));
	memcpy(cfg->keys, keys, (size_t)n * sizeof(*keys));
	cfg->nkeys = n;
}

int auth_set_pubkey(struct auth_cfg *cfg, const void *pem, size_t len, char *err, size_t errlen)
{
	struct auth_key k = {.no_kid = true};
	int ret;

	if (!cfg)
		return auth_fail(err, errlen, -EINVAL, "no public key given");
	ret = canon_key(pem, len, &k.pem, &k.pem_len, &k.pkey, err, errlen);
	if (ret == 0)
		keys_install(cfg, &k, 1);
	return ret;
}

/* Read a whole key file (at most AUTH_PUBKEY_FILE_MAX) into buf; returns its length or -errno. */
static long read_key_file(int dirfd, const char *path, char *buf, size_t cap, char *err,
			  size_t errlen)
{
	size_t len = 0;
	struct stat st;
	long ret;
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0) {
		ret = -errno;
		return auth_fail(err, errlen, (int)ret, "cannot open %s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ret = auth_fail(err, errlen, -EINVAL, "%s is not a regular file", path);
		goto out;
	}
	while (len < cap) {
		ssize_t n = read(fd, buf + len, cap - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			auth_fail(err, errlen, (int)ret, "cannot read %s: %s", path, strerror(errno));
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
	ret = (long)len;
out:
	close(fd);
	return ret;
}

/* One key file into k (kid already set): read, check, canonicalise. */
static int load_one(int dirfd, const char *shown, const char *name, struct auth_key *k, char *err,
		    size_t errlen)
{
	char buf[AUTH_PUBKEY_FILE_MAX + 1];
	char why[200];
	long n = read_key_file(dirfd, name, buf, sizeof(buf), why, sizeof(why));
	int ret;

	if (n < 0)
		return auth_fail(err, errlen, (int)n, "%s: %s", shown, why);
	ret = canon_key(buf, (size_t)n, &k->pem, &k->pem_len, &k->pkey, why, sizeof(why));
	OPENSSL_cleanse(buf, sizeof(buf));
	if (ret < 0)
		return auth_fail(err, errlen, ret, "%s: %s", shown, why);
	return 0;
}

/* name without `suffix` into kid; 0 if it had the suffix and the rest is a valid kid. */
static int kid_of(const char *name, const char *suffix, char *kid)
{
	size_t n = strlen(name), sl = strlen(suffix);

	if (n <= sl || strcmp(name + n - sl, suffix) != 0)
		return -1;
	if (!auth_valid_kid(name, n - sl))
		return -2;
	memcpy(kid, name, n - sl);
	kid[n - sl] = '\0';
	return 0;
}

static int load_dir(const char *path, struct auth_key *keys, int *nkeys, char *err, size_t errlen)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int n = 0, ret = 0;

	if (!d)
		return auth_fail(err, errlen, -errno, "cannot open directory %s: %s", path,
				 strerror(errno));
	while ((de = readdir(d))) {
		char kid[AUTH_KID_MAX + 1], shown[600];
		int k;

		if (de->d_name[0] == '.')
			continue; /* hidden files, editors' and rotation scripts' temporaries */
		k = kid_of(de->d_name, ".pub", kid);
		if (k == -1)
			continue;
		snprintf(shown, sizeof(shown), "%s/%s", path, de->d_name);
		if (k == -2) {
			ret = auth_fail(err, errlen, -EINVAL,
					"%s: a kid (the name without .pub) may only hold "
					"[A-Za-z0-9._-], at most %d characters",
					shown, AUTH_KID_MAX);
			goto out;
		}
		if (n == AUTH_KEYS_MAX) {
			ret = auth_fail(err, errlen, -E2BIG, "%s: more than %d keys", path,
					AUTH_KEYS_MAX);
			goto out;
		}
		snprintf(keys[n].kid, sizeof(keys[n].kid), "%s", kid);
		ret = load_one(dirfd(d), shown, de->d_name, &keys[n], err, errlen);
		if (ret < 0)
			goto out;
		n++;
	}
	if (n == 0)
		ret = auth_fail(err, errlen, -ENOKEY, "%s holds no *.pub key", path);
out:
	closedir(d);
	if (ret < 0)
		keys_free(keys, n);
	else
		*nkeys = n;
	return ret;
}

static int64_t mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

int auth_load_keys(struct auth_cfg *cfg, const char *path, char *err, size_t errlen)
{
	struct auth_key keys[AUTH_KEYS_MAX];
	struct stat st;
	int n = 0, ret;

	if (!cfg || !path)
		return auth_fail(err, errlen, -EINVAL, "no public key path given");
	if (strlen(path) >= sizeof(cfg->src))
		return auth_fail(err, errlen, -ENAMETOOLONG, "key path too long");
	memset(keys, 0, sizeof(keys));
	if (stat(path, &st) < 0)
		return auth_fail(err, errlen, -errno, "cannot open %s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		ret = load_dir(path, keys, &n, err, errlen);
	} else {
		const char *base = strrchr(path, '/');

		base = base ? base + 1 : path;
		/* the kid of a lone file is its name; a name that cannot be a kid leaves the key
		 * for tokens without one */
		if (kid_of(base, ".pub", keys[0].kid) && kid_of(base, ".pem", keys[0].kid))
			keys[0].kid[0] = '\0';
		keys[0].no_kid = true;
		ret = load_one(AT_FDCWD, path, path, &keys[0], err, errlen);
		n = 1;
	}
	if (ret < 0)
		return ret;
	keys_install(cfg, keys, n);
	memcpy(cfg->src, path, strlen(path) + 1);
	cfg->src_mtime_ns = mtime_ns(&st);
	return 0;
}

int auth_load_pubkey(struct auth_cfg *cfg, const char *path, char *err, size_t errlen)
{
	return auth_load_keys(cfg, path, err, errlen);
}

int auth_reload_if_changed(struct auth_cfg *cfg, char *err, size_t errlen)
{
	struct stat st;
	char path[sizeof(cfg->src)];
	int ret;

	if (!cfg || !cfg->src[0])
		return 0;
	if (stat(cfg->src, &st) < 0)
		return auth_fail(err, errlen, -errno, "cannot stat %s: %s", cfg->src,
				 strerror(errno));
	if (mtime_ns(&st) == cfg->src_mtime_ns)
		return 0;
	memcpy(path, cfg->src, sizeof(path));
	ret = auth_load_keys(cfg, path, err, errlen);
	if (ret < 0) {
		cfg->src_mtime_ns = mtime_ns(&st); /* the same broken state is not retried */
		return ret;
	}
	return 1;
}

void auth_cfg_free(struct auth_cfg *cfg)
{
	if (!cfg)
		return;
	keys_free(cfg->keys, cfg->nkeys);
	cfg->nkeys = 0;
}

/* The key that verifies a token with this header: by kid, or the no-kid key. */
static const struct auth_key *pick_key(const struct auth_cfg *cfg, json_t *hdr, char *err,
				       size_t errlen, int *ret)
{
	json_t *kid = json_object_get(hdr, "kid");

	*ret = -EACCES;
	if (!kid) {
		for (int i = 0; i < cfg->nkeys; i++)
			if (cfg->keys[i].no_kid)
				return &cfg->keys[i];
		auth_fail(err, errlen, -EACCES, "token has no kid (this relay has several keys)");
		return NULL;
	}
	if (!json_is_string(kid) || !auth_valid_kid(json_string_value(kid), json_string_length(kid))) {
		auth_fail(err, errlen, -EACCES, "kid is not 1-%d of [A-Za-z0-9._-]", AUTH_KID_MAX);
		return NULL;
	}
	for (int i = 0; i < cfg->nkeys; i++)
		if (json_str_equals(kid, cfg->keys[i].kid))
			return &cfg->keys[i];
	auth_fail(err, errlen, -EACCES, "unknown kid");
	return NULL;
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
	/* Exact: "es256" is not the algorithm pinned (JWT libraries often compare without case). */
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
	if (r < 0 || (r == 0 && !auth_valid_tier(s, len)))
		return auth_fail(err, errlen, -EACCES, "plan must be a tier name: 1-16 of [a-z0-9_-]");
	if (r == 0) {
		memcpy(out->plan, s, len);
		out->plan[len] = '\0';
	} else {
		memcpy(out->plan, "free", 5);
	}

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

/* ES256: rs is R||S (32 bytes each, big-endian), re-encoded as the DER ECDSA-Sig-Value OpenSSL
 * verifies. 0 valid, -EACCES invalid (R or S out of range included), -ENOMEM. Thread-safe: the
 * key is only read. */
static int es256_verify(EVP_PKEY *pkey, const char *input, size_t inlen,
			const unsigned char rs[AUTH_ES256_SIG_LEN])
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(rs, AUTH_ES256_SIG_LEN / 2, NULL);
	BIGNUM *s = BN_bin2bn(rs + AUTH_ES256_SIG_LEN / 2, AUTH_ES256_SIG_LEN / 2, NULL);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char der[80], *p = der; /* DER of two 32-byte integers: at most 72 bytes */
	int ret = -ENOMEM, dlen;

	if (!pkey) {
		ret = -EACCES;
		goto out;
	}
	if (!sig || !r || !s || !md || !ECDSA_SIG_set0(sig, r, s))
		goto out;
	r = s = NULL; /* owned by sig now */
	if (i2d_ECDSA_SIG(sig, NULL) > (int)sizeof(der) || (dlen = i2d_ECDSA_SIG(sig, &p)) <= 0)
		goto out;
	if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) != 1)
		goto out;
	ret = EVP_DigestVerify(md, der, (size_t)dlen, (const unsigned char *)input, inlen) == 1
		      ? 0
		      : -EACCES;
out:
	EVP_MD_CTX_free(md);
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(sig);
	return ret;
}

int auth_verify(const struct auth_cfg *cfg, const char *token, int64_t now, struct auth_claims *out,
		char *err, size_t errlen)
{
	struct auth_claims scratch;
	const char *dot1 = NULL, *dot2 = NULL, *sig;
	json_t *hdr = NULL, *claims = NULL;
	const struct auth_key *key;
	unsigned char rs[AUTH_ES256_SIG_LEN];
	size_t len, i, sig_len;
	int dots = 0, ret;

	if (!out)
		out = &scratch;
	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = '\0';

	if (!cfg || cfg->nkeys <= 0 || cfg->nkeys > AUTH_KEYS_MAX)
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
	key = pick_key(cfg, hdr, err, errlen, &ret);
	if (!key)
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

	/* 5. signature: ECDSA P-256 over SHA-256 of "header.payload", with the key parsed at load */
	ret = es256_verify(key->pkey, token, (size_t)(dot2 - token), rs);
	if (ret == -ENOMEM) {
		ret = auth_fail(err, errlen, -ENOMEM, "out of memory verifying signature");
		goto out;
	}
	if (ret != 0) {
		ret = auth_fail(err, errlen, -EACCES, "bad signature");
		goto out;
	}

	/* 6. claims */
	ret = check_claims(cfg, claims, now, out, err, errlen);
out:
	json_decref(claims);
	json_decref(hdr);
	if (ret < 0)
		memset(out, 0, sizeof(*out));
	return ret;
}
