/* dvv-api: the request/response types every handler sees and the helpers they share.
 *
 * Contract for handlers: a handler fills `out` exactly once: a status and either a JSON body
 * (owned by `out`, freed by the HTTP layer) or NULL for no body (204). Errors always go through
 * api_error() so every error body has the one shape {"error":{"code","message"}}. Handlers run
 * on the HTTP thread pool and may block (PostgreSQL, argon2, Redis); the pool size bounds that. */
#ifndef DVV_API_H
#define DVV_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define API_BODY_MAX (64 * 1024) /* request bodies above this are answered 413 */

struct api; /* the service: config, pools, plans (apiint.h) */
struct plans;

struct api_req {
	const char *method, *path; /* path without query string */
	const char *body;
	size_t body_len;
	const char *client_ip; /* text */
	const char *user_id;   /* authenticated user, or NULL */
	void *conn;	       /* struct MHD_Connection * */
};

struct api_resp {
	int status;	      /* HTTP status */
	json_t *json;	      /* owned; NULL for no body (204) */
	char retry_after[16]; /* "" or seconds */
	char set_cookie[256]; /* "" or a Set-Cookie value */
};

struct api_cfg {
	const char *public_url, *stripe_api, *stripe_secret_key, *stripe_webhook_secret;
	int stripe_tolerance_s; /* default 300 */
	const struct plans *plans;
};

/* The request header `name` (case-insensitive), NULL if absent. */
const char *api_header(const struct api_req *r, const char *name);
/* Set out to status + {"error":{"code":code,"message":printf(fmt)}}; replaces any body. */
void api_error(struct api_resp *out, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The body parsed as a JSON object (duplicate keys rejected, depth bounded by jansson), or NULL
 * with out set to 400 invalid_json. The caller owns the result. */
json_t *api_parse_body(const struct api_req *r, struct api_resp *out);
const struct api_cfg *api_cfg(const struct api *a);

#endif /* DVV_API_H */
