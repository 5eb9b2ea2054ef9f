/* Agent authentication: verify the ES256 JWT an agent presents when it opens its tunnel.
 *
 * libjwt 1.10 only checks a signature, and does it with whatever algorithm the token's own
 * header names (it accepted an HS256 token signed with the ES256 *public* key as secret). So
 * everything that matters happens here, before and after libjwt: the token's shape and length,
 * the header (alg pinned to ES256), the signature's encoding, and every claim. libjwt is only
 * asked "is this signature valid for this key", and its answer is double-checked.
 */
#ifndef DVV_AUTH_H
#define DVV_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_TOKEN_MAX 4096	     /* bytes; longer tokens are rejected before any parsing */
#define AUTH_ID_MAX 64		     /* sub, tid, jti: [A-Za-z0-9_-]{1,64} */
#define AUTH_LABEL_MIN 3	     /* name: DNS label [a-z0-9-], no '-' at either end */
#define AUTH_LABEL_MAX 40
#define AUTH_LEEWAY_MAX 3600	     /* largest clock skew auth_cfg.leeway_s may allow */
#define AUTH_TIME_MAX 253402300799LL /* 9999-12-31T23:59:59Z: bound on exp/nbf/iat and `now` */

struct auth_cfg {
	unsigned char *pubkey;	/* PEM (SubjectPublicKeyInfo) of the ES256 key, NUL-terminated; */
	size_t pubkey_len;	/* owned: set by auth_load_pubkey/auth_set_pubkey, len without NUL */
	const char *issuer;	/* required "iss" (borrowed) */
	const char *audience;	/* required "aud": the string, or an array containing it (borrowed) */
	int leeway_s;		/* clock skew allowed for exp/nbf/iat, 0..AUTH_LEEWAY_MAX, e.g. 30 */
};

struct auth_claims {
	char sub[AUTH_ID_MAX + 1]; /* user id */
	char tid[AUTH_ID_MAX + 1]; /* tunnel id: a name belongs to the tunnel */
	char plan[17];		   /* "free" | "paid" ("free" if absent) */
	char name[64];		   /* requested custom label (paid plans), "" if absent */
	char jti[AUTH_ID_MAX + 1]; /* token id, "" if absent */
	int64_t exp, nbf, iat;	   /* nbf/iat are 0 when absent */
};

/* Read a PEM public key from `path` (at most 16 KiB) and install it in cfg (see auth_set_pubkey).
 * Returns 0, or -errno with a message in err: -ENOENT/-EACCES/... for the file, -EINVAL when it
 * is not an EC P-256 public key. */
int auth_load_pubkey(struct auth_cfg *cfg, const char *path, char *err, size_t errlen);

/* Same from memory. The key must be an EC P-256 "PUBLIC KEY" PEM; cfg keeps its own canonical
 * re-encoding of it (what libjwt is later given), replacing any previous key. */
int auth_set_pubkey(struct auth_cfg *cfg, const void *pem, size_t len, char *err, size_t errlen);

/* Frees the key; issuer and audience are borrowed and left alone. Safe to call twice. */
void auth_cfg_free(struct auth_cfg *cfg);

/* Verify `token` (NUL-terminated) at time `now` (Unix seconds). On success fills *out (may be
 * NULL) and returns 0. Any token that is not accepted yields -EACCES and a specific message in
 * err ("token expired 42 s ago", "alg HS256 not allowed, expected ES256", "aud mismatch"), never
 * containing the token, its signature or a claim's value. -EINVAL: bad arguments or config
 * (no key, no issuer/audience, leeway or now out of range); -ENOMEM. *out is zeroed on error. */
int auth_verify(const struct auth_cfg *cfg, const char *token, int64_t now, struct auth_claims *out,
		char *err, size_t errlen);

/* The claim syntax rules, shared with the tools that mint tokens. len excludes any NUL. */
int auth_valid_id(const char *s, size_t len);	 /* [A-Za-z0-9_-]{1,AUTH_ID_MAX} */
int auth_valid_label(const char *s, size_t len); /* DNS label [a-z0-9-]{3,40}, no '-' at the ends */

#endif /* DVV_AUTH_H */
