/* Agent authentication: verify the ES256 JWT an agent presents when it opens its tunnel.
 *
 * Everything happens here: the token's shape and length, the header (alg pinned to ES256: a
 * generic JWT library verifies with whatever algorithm the token's own header names, and libjwt
 * 1.10 accepted an HS256 token signed with the ES256 *public* key as secret), the signature's
 * encoding, the ECDSA P-256 verification itself (OpenSSL, with the key parsed once at load), and
 * every claim. auth_verify only reads cfg: threads may verify at once while no reload runs.
 */
#ifndef DVV_AUTH_H
#define DVV_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_TOKEN_MAX 4096	     /* bytes; longer tokens are rejected before any parsing */
#define AUTH_ID_MAX 64		     /* sub, tid, jti: [A-Za-z0-9_-]{1,64} */
#define AUTH_LABEL_MIN 3	     /* name: DNS label [a-z0-9-], no '-' at either end */
#define AUTH_LABEL_MAX 40
#define AUTH_LEEWAY_MAX 3600	     /* largest clock skew auth_cfg.leeway_s may allow */
#define AUTH_TIME_MAX 253402300799LL /* 9999-12-31T23:59:59Z: bound on exp/nbf/iat and `now` */

#define AUTH_KEYS_MAX 16	     /* verification keys at once (rotation: old and new) */
#define AUTH_KID_MAX 64		     /* kid: [A-Za-z0-9._-]{1,64} (a file name without .pub) */

/* One verification key. A token naming a kid is verified by the key of that kid only; a token
 * without a kid only by a key marked no_kid (the single key of a --jwt-pubkey file). */
struct auth_key {
	char kid[AUTH_KID_MAX + 1]; /* "" for a key installed by auth_set_pubkey */
	bool no_kid;		    /* also verifies tokens whose header has no kid */
	unsigned char *pem;	    /* canonical PEM (SubjectPublicKeyInfo), NUL-terminated, owned */
	size_t pem_len;		    /* without the NUL */
	struct evp_pkey_st *pkey;   /* the same key parsed once (EVP_PKEY), owned, read-only */
};

struct auth_cfg {
	struct auth_key keys[AUTH_KEYS_MAX]; /* set by auth_load_keys / auth_set_pubkey */
	int nkeys;
	const char *issuer;	/* required "iss" (borrowed) */
	const char *audience;	/* required "aud": the string, or an array containing it (borrowed) */
	int leeway_s;		/* clock skew allowed for exp/nbf/iat, 0..AUTH_LEEWAY_MAX, e.g. 30 */
	/* where auth_load_keys read the keys, for auth_reload_if_changed */
	char src[256];
	int64_t src_mtime_ns;
};

struct auth_claims {
	char sub[AUTH_ID_MAX + 1]; /* user id */
	char tid[AUTH_ID_MAX + 1]; /* tunnel id: a name belongs to the tunnel */
	char plan[17];		   /* tier at mint time, [a-z0-9_-]{1,16} ("free" if absent) */
	char name[64];		   /* requested custom label (paid plans), "" if absent */
	char jti[AUTH_ID_MAX + 1]; /* token id, "" if absent */
	int64_t exp, nbf, iat;	   /* nbf/iat are 0 when absent */
};

/* Load the verification keys from `path` (auth_cfg.src remembers it):
 *  - a regular file (at most 16 KiB): one key whose kid is the file name without ".pub" or
 *    ".pem"; it verifies tokens naming that kid and tokens with no kid at all;
 *  - a directory: every "*.pub" regular file in it is a key whose kid is its name without
 *    ".pub"; tokens must name one of them (no kid: refused). Other files are ignored.
 * All or nothing: on any error (unreadable, not EC P-256, a kid outside [A-Za-z0-9._-], more
 * than AUTH_KEYS_MAX keys, none at all) cfg keeps the keys it had and err says which file and
 * why. Returns 0 or -errno (-ENOENT/-EACCES..., -EINVAL for a bad key, -E2BIG, -ENOKEY). */
int auth_load_keys(struct auth_cfg *cfg, const char *path, char *err, size_t errlen);
/* The old name: same as auth_load_keys. */
int auth_load_pubkey(struct auth_cfg *cfg, const char *path, char *err, size_t errlen);

/* Has cfg->src changed since it was loaded (its mtime: a directory's changes when a key file is
 * added, removed or renamed in; a file's when it is rewritten)? If so, load it again.
 * 1 = reloaded, 0 = unchanged (or no source), <0 = the reload failed: the old keys stay, err
 * says why (the mtime is remembered, so a broken directory is not retried every call). */
int auth_reload_if_changed(struct auth_cfg *cfg, char *err, size_t errlen);

/* One key from memory, replacing all keys: it verifies tokens without a kid only. The key must
 * be an EC P-256 "PUBLIC KEY" PEM; cfg keeps its own canonical re-encoding of it and the key
 * parsed from that, which verifies. */
int auth_set_pubkey(struct auth_cfg *cfg, const void *pem, size_t len, char *err, size_t errlen);

/* Frees the keys; issuer and audience are borrowed and left alone. Safe to call twice. */
void auth_cfg_free(struct auth_cfg *cfg);

/* Verify `token` (NUL-terminated) at time `now` (Unix seconds). On success fills *out (may be
 * NULL) and returns 0. The key is chosen by the header's kid (see struct auth_key: "unknown
 * kid", "token has no kid"). Any token that is not accepted yields -EACCES and a specific message in
 * err ("token expired 42 s ago", "alg HS256 not allowed, expected ES256", "aud mismatch"), never
 * containing the token, its signature or a claim's value. -EINVAL: bad arguments or config
 * (no key, no issuer/audience, leeway or now out of range); -ENOMEM. *out is zeroed on error. */
int auth_verify(const struct auth_cfg *cfg, const char *token, int64_t now, struct auth_claims *out,
		char *err, size_t errlen);

/* The claim syntax rules, shared with the tools that mint tokens. len excludes any NUL. */
int auth_valid_id(const char *s, size_t len);	 /* [A-Za-z0-9_-]{1,AUTH_ID_MAX} */
int auth_valid_label(const char *s, size_t len); /* DNS label [a-z0-9-]{3,40}, no '-' at the ends */
int auth_valid_tier(const char *s, size_t len);	 /* [a-z0-9_-]{1,16} */
int auth_valid_kid(const char *s, size_t len);	 /* [A-Za-z0-9._-]{1,AUTH_KID_MAX} */

#endif /* DVV_AUTH_H */
