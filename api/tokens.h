/* Agent tokens: ES256 JWTs minted with libjwt under a key id (kid), from the signing keys in
 * --jwt-key-dir (<kid>.key PEM EC P-256 private, <kid>.pub public; the relays read the same
 * .pub files). Tokens are shown once and never stored: PostgreSQL keeps their jti, tunnel and
 * expiry so they can be listed and revoked. */
#ifndef DVV_API_TOKENS_H
#define DVV_API_TOKENS_H

#include "api.h"

struct tokens_keys;

/* Load the signing key: kid = wanted, or the newest *.key file in dir. 0 or -errno (err). */
int tokens_keys_load(const char *dir, const char *wanted, struct tokens_keys **out, char *err,
		     size_t errlen);
void tokens_keys_free(struct tokens_keys *k);
const char *tokens_kid(const struct tokens_keys *k);

struct token_claims {
	const char *iss, *sub, *tid, *jti, *plan, *name; /* name may be NULL */
	long long iat, exp;
};
/* Sign the claims (aud "dvv-relay", nbf = iat). The caller frees the result. NULL on error. */
char *tokens_sign(const struct tokens_keys *k, const struct token_claims *cl);

void tokens_list(struct api *a, const struct api_req *r, struct api_resp *out);
void tokens_create(struct api *a, const struct api_req *r, struct api_resp *out);
void tokens_delete(struct api *a, const struct api_req *r, struct api_resp *out, const char *id);
/* POST /v1/tokens/renew: the agent's own token (Bearer) for a fresh one (see tokens.c). */
void tokens_renew(struct api *a, const struct api_req *r, struct api_resp *out);
void tokens_agent_config(struct api *a, const struct api_req *r, struct api_resp *out);

#endif /* DVV_API_TOKENS_H */
