/* A user's plan as the relay applies it: the limits dvv-api writes to Redis
 * (`dvv:user:{<sub>}:plan`, docs/redis.md), read at registration by the admit script and again on
 * every `plan` event, kept on each of the user's tunnels. A user without a plan hash (a
 * self-hosted relay with tokens from dvv-token) gets the token's tier and no limits
 * (from_redis false, every limit 0 = none). */
#ifndef DVV_PLAN_H
#define DVV_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct plan_limits {
	char tier[17];		  /* [a-z0-9_-]{1,16} */
	bool from_redis;	  /* false: no plan hash, the token's claim decided the tier */
	bool custom_names;	  /* the tier may use a custom label */
	uint32_t max_tunnels;	  /* 0 = no limit (enforced by the API; shown to the agent) */
	uint32_t max_players;	  /* concurrent players per tunnel, 0 = no limit */
	uint32_t idle_timeout_s;  /* close a tunnel without players this long, 0 = never */
	uint32_t priority;	  /* 0 best effort, 1 placed first and shed last */
	uint64_t bandwidth_bytes; /* per billing period, both directions, 0 = unlimited */
	int64_t period_start;	  /* Unix seconds; 0 = the current UTC calendar month */
	int64_t period_end;
	uint64_t version;	  /* the hash's version field: which write this is */
	char status[12];	  /* "active" | "past_due" | "canceled" ("" without a plan hash) */
};

/* The limits of a user without a plan hash: tier = the token's claim, every limit 0 (none),
 * custom names for the tier "paid" only (today's self-hosted behaviour). */
void plan_from_claim(struct plan_limits *p, const char *tier);

/* Fill p from the field/value pairs of `HGETALL dvv:user:{<sub>}:plan` (n strings, alternating
 * field and value; lengths in len). Unknown fields are ignored (newer APIs may add some). A
 * missing or invalid tier, or a number that does not parse or is out of range, refuses the
 * whole hash: -EINVAL with the field named in err, p untouched. n == 0: -ENOENT (no plan). */
int plan_from_hash(struct plan_limits *p, const char *const *kv, const size_t *len, size_t n,
		   char *err, size_t errlen);

/* The billing period containing `now`: the plan's own when it is set and `now` falls inside it,
 * else the UTC calendar month of `now` (free plans, or a paid period the API has not renewed
 * yet). */
void plan_period(const struct plan_limits *p, int64_t now, int64_t *start, int64_t *end);

#endif /* DVV_PLAN_H */
