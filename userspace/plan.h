/* A user's plan as the relay applies it: the limits dvv-api writes to Redis
 * (`dvv:user:{<sub>}:plan`, docs/redis.md), read at registration by the admit script and again on
 * every `plan` event, kept on each of the user's tunnels. A user without a plan hash (a
 * self-hosted relay with tokens from dvv-token) gets the token's tier and no limits
 * (from_redis false, every limit 0 = none). */
#ifndef DVV_PLAN_H
#define DVV_PLAN_H

#include <stdbool.h>
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
};

/* The billing period containing `now`: the plan's own when it is set and `now` falls inside it,
 * else the UTC calendar month of `now` (free plans, or a paid period the API has not renewed
 * yet). */
void plan_period(const struct plan_limits *p, int64_t now, int64_t *start, int64_t *end);

#endif /* DVV_PLAN_H */
