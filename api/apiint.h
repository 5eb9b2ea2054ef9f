/* The dvv-api service object (struct api) and its configuration: internal to api/, shared by
 * main.c, http.c and the handlers. Everything here is set up before the HTTP daemon starts and
 * read-only afterwards, except the pools, the Redis store and the rate limiter, which lock
 * internally. */
#ifndef DVV_API_APIINT_H
#define DVV_API_APIINT_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "plans.h"

#define API_REGIONS_MAX 16

struct db_pool;
struct rstore;
struct arl;
struct tokens_keys;

struct api_region {
	char name[17];
	char addr[128]; /* host:port agents dial */
};

struct api_opts {
	char listen[128];
	char pg[1024];
	int pg_pool;
	char redis[128];
	char redis_prefix[64];
	char plans_path[512];
	char web_root[512];
	char public_url[256];
	char base_domain[128];
	char relays[1024]; /* "eu=host:port,us=host:port" */
	char ca_pem_path[512];
	char agent_cmd[256];	/* the agent program in the command shown with a new token */
	char agent_local[128];	/* its --local */
	char jwt_key_dir[512];
	char jwt_kid[64];
	char jwt_issuer[64];
	char reserved_path[512];
	int threads;
	int conn_timeout_s;
	int max_conns;
	bool trust_proxy;
	int rate_ip_per_min;	  /* signup/login attempts per client IP */
	int rate_account_per_min; /* login attempts per email */
	int argon2_t, argon2_m_kib, argon2_p, argon2_slots;
	char stripe_api[256];
	char stripe_secret_key[256];
	char stripe_webhook_secret[256];
	int stripe_tolerance_s;
	char log_level[16];
	char log_format[16];
};

struct api {
	struct api_opts o;
	struct api_cfg cfg;
	struct plans plans;
	struct db_pool *db;
	struct rstore *rs;
	struct arl *rl;
	struct tokens_keys *keys;
	struct api_region regions[API_REGIONS_MAX];
	int n_regions;
	char *ca_pem;	   /* NULL: the relays use a public CA */
	char **reserved;   /* NULL-terminated extra reserved labels */
};

/* ISO 8601 UTC text of a timestamptz column, for JSON answers. */
#define API_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/* Set out to status with body j (owned; NULL: no body). */
void api_reply(struct api_resp *out, int status, json_t *j);
/* Signup/login throttling: per client IP, and per account when account != NULL. true = limited
 * (out set to 429 with Retry-After). */
bool api_rate_limited(struct api *a, const struct api_req *r, struct api_resp *out,
		      const char *account);
/* The session secret the request presents (Bearer, else the dvv_session cookie) into buf, or
 * NULL. */
const char *api_session_token(const struct api_req *r, char *buf, size_t cap);
/* Set-Cookie for a new session (NULL: clear the cookie). */
void api_set_session_cookie(struct api *a, struct api_resp *out, const char *session);
/* The current UTC calendar month [start, end) containing now. */
void api_month(int64_t now, int64_t *start, int64_t *end);

#endif /* DVV_API_APIINT_H */
