/* client/renew.h: keeps the token stored by `dvv login` from expiring under a long-running
 * agent. A thread sleeps until the token is past half its life (what dvv-api's POST
 * /v1/tokens/renew accepts), trades it for a fresh one, writes that to the credentials file
 * (creds_save: atomic, 0600) and hands it to the agent for its next HELLO. The session running
 * on the old token is not touched: the old token stays valid until it expires.
 *
 * Contract:
 *  - only for a token that came from the credentials file with an API address in it; a token
 *    given by --token, --token-file or DVV_TOKEN is the user's to manage;
 *  - the file is rewritten only while it still holds the token the agent started with (a
 *    `dvv login` in between wins);
 *  - 409 not_due: wait Retry-After; 401 (revoked, tunnel deleted): log once and stop; any other
 *    failure: retry after RENEW_RETRY_S, the token keeps working until it expires;
 *  - the token is never logged; renew_stop wakes the thread at once and joins it. */
#ifndef DVV_RENEW_H
#define DVV_RENEW_H

#include <stddef.h>
#include <stdint.h>

#define RENEW_RETRY_S 3600 /* after a failure other than 401 / 409 */

struct renew;

/* The moment (Unix seconds) a token with these claims becomes due: iat + half its life. -1 if
 * the token's payload has no usable iat/exp. Exposed for the unit tests. */
int64_t renew_due(const char *token);

/* Start the thread for the credentials file `path`. 0 with *out set, 0 with *out NULL when
 * there is nothing to renew (no API address, no token), or -errno. */
int renew_start(const char *path, struct renew **out);
/* The token to present now (the newest one renewed, else the one the agent started with). */
void renew_token(struct renew *r, char *out, size_t cap);
/* Stop and free; NULL is fine. */
void renew_stop(struct renew *r);

#endif
