/* Accounts: users, passwords (argon2id), sessions, plans.
 *
 * Passwords are hashed with argon2id (libargon2); at most `argon2_slots` hashes run at once so a
 * login flood queues (and then gets 503) instead of taking every HTTP thread and all memory.
 * Sessions are 32 random bytes (base64url), stored as their SHA-256, valid 30 days. */
#ifndef DVV_API_ACCOUNT_H
#define DVV_API_ACCOUNT_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "api.h"
#include "plans.h"

#define SESSION_TTL_S (30 * 86400)
#define ID_LEN	      22 /* "u_" + 20 */

struct argon2_cfg {
	uint32_t t_cost, m_cost_kib, parallelism;
	int slots; /* concurrent hashes */
};
int account_init(const struct argon2_cfg *cfg); /* 0 or -errno */
void account_fini(void);

/* "<prefix>_" + 20 chars of [a-z0-9] from the CSPRNG into out[ID_LEN + 1]. 0 or -EIO. */
int account_new_id(const char *prefix, char *out);

/* The user a session belongs to, into user_id[ID_LEN + 1]. 0, -ENOENT (unknown or expired), or
 * -EIO. */
int account_session_user(PGconn *c, const char *session, char *user_id);

/* change a user's plan inside the caller's transaction: updates users, writes plan_changes
 * (source "signup"/"stripe"/"admin", stripe_event may be NULL), suspends tunnels over
 * max_tunnels (keeps the oldest) and un-suspends within the limit, drops custom labels from Redis
 * if the new plan lacks custom_names (keeps them in PostgreSQL), and writes the outbox row. A
 * no-op (same tier, status and period) writes nothing. 0 or -errno. */
int account_set_plan(PGconn *c, const struct plans *p, const char *user_id, const char *tier,
		     const char *status, int64_t period_start, int64_t period_end,
		     const char *source, const char *stripe_event);

/* Re-apply max_tunnels to the user's tunnels (oldest first stay active) after a tunnel was
 * deleted or the plan changed; adds `tunnel` suspended events for newly suspended ones to
 * events (a JSON array). 0 or -errno. */
int account_apply_limits(PGconn *c, const struct plan *pl, const char *user_id, json_t *events);

/* Append an outbox row for user_id naming `events` (JSON array, may be empty). 0 or -EIO. */
int account_outbox(PGconn *c, const char *user_id, json_t *events);
/* The end of a handler's transaction that the relays must hear about: queue events (NULL: they
 * could not be built) in the outbox, commit, and wake the outbox push. 0 or -errno (the caller
 * rolls back). */
int account_commit_events(struct api *a, PGconn *c, const char *user_id, json_t *events);

/* The user's plan (falls back to the default plan for an unknown tier). */
const struct plan *account_user_plan(PGconn *c, const struct plans *p, const char *user_id);

/* HTTP handlers */
void account_signup(struct api *a, const struct api_req *r, struct api_resp *out);
void account_login(struct api *a, const struct api_req *r, struct api_resp *out);
void account_logout(struct api *a, const struct api_req *r, struct api_resp *out);
void account_me(struct api *a, const struct api_req *r, struct api_resp *out);
void account_plans(struct api *a, const struct api_req *r, struct api_resp *out);

/* Admin: set the plan of the user with this email (dvv-api plan set). 0, -ENOENT, -EINVAL. */
int account_admin_set_plan(struct api *a, const char *email, const char *tier);

#endif /* DVV_API_ACCOUNT_H */
