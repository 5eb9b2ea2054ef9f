/* rredis: the relay's view of Redis (standalone or Cluster, through rcluster.c). It owns the key
 * schema (docs/redis.md: every key, its hash slot, who writes it) and the Lua scripts that keep
 * tunnel ownership consistent: name claims and route leases fenced by an epoch, the instance
 * registry and load, route lookups for forwarding, placement. It knows nothing of tunnel
 * sessions: the tunnel side hands it plain values (a registration request, the leases this relay
 * holds) and gets plain values back through callbacks.
 *
 * Contract:
 * - A call that takes a callback either returns 0 and calls it exactly once, later, on the loop
 *   (never from inside the call), or returns -errno and never calls it: -ENOTCONN while Redis is
 *   down, -EINVAL for an argument out of bounds, -ENOMEM, or rcluster's refusals (-ENOBUFS...).
 *   Strings handed to a callback are valid during the callback only.
 * - Errors come back as answers, never as Redis replies: a registration ends with a code for the
 *   agent ("unavailable" ...), a route lookup with err, placement with "stay here". A command
 *   whose outcome is unknown (rcluster.h: connection lost, deadline) counts as failed; every
 *   write is idempotent or fenced by an epoch, so the caller's own retry is safe.
 * - Fire-and-forget writes (release, heartbeat, renewals) report failures only through
 *   dvv_relay_redis_errors_total and a rate-limited log line: leases expire by themselves.
 * - Lease renewal is rredis's job: every lease/3, and at once whenever Redis comes back, it asks
 *   the tunnel side (rredis_start's each_lease) for the leases held and renews them; a lease
 *   another relay took over meanwhile is reported through lease_lost.
 * Single-threaded, on the relay's loop. */
#ifndef DVV_RREDIS_H
#define DVV_RREDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay;
struct plan_limits;

/* A route lease this relay holds: hostname (with the relay's suffix) for tunnel tid at epoch. */
struct rredis_lease {
	const char *hostname;
	const char *tid;
	uint64_t epoch;
};
typedef void (*rredis_lease_fn)(void *ctx, const struct rredis_lease *l);
/* Calls fn once per lease held (every tunnel that is up). fn sends commands and returns. */
typedef void (*rredis_each_lease_fn)(struct relay *r, rredis_lease_fn fn, void *ctx);
/* A renewal found the lease of hostname at epoch held by another relay, or fencing refused it. */
typedef void (*rredis_lost_fn)(struct relay *r, const char *hostname, uint64_t epoch);

/* Connects in the background. -EINVAL (bad --redis, logged) or -ENOMEM. */
int rredis_start(struct relay *r, rredis_each_lease_fn each_lease, rredis_lost_fn lease_lost);
/* Best-effort clean exit: release our leases and instance keys (bounded by ~1 s). */
void rredis_stop(struct relay *r);
bool rredis_up(const struct relay *r);
/* The Redis client while it is up (NULL otherwise): for the events poller's own commands. */
struct rc *rredis_rc(struct relay *r);
/* Forget the name bound to tunnel tid (tunnel:{tid}): its next registration draws a random
 * name (a custom label the plan no longer allows). Fire and forget. */
void rredis_forget_name(struct relay *r, const char *tid);

/* A registration; the call copies it. */
struct rredis_reg {
	const char *tid;   /* the tunnel: a name belongs to it and survives its reconnects */
	const char *sub;   /* the user, whose keys the admit script reads (every registration) */
	const char *jti;   /* the token's id, "" none: refused if in the user's revoked set */
	const char *plan;  /* the token's plan claim: stands when the user has no plan hash */
	const char *label; /* the token's name claim, "" none */
};
/* Admission (the admit script, pipelined with the tunnel's name read: one round trip): a
 * revoked jti -> "revoked", a blocked tid -> "blocked". The custom label is the user's names
 * hash entry for tid if the plan has custom_names, else the token's name claim if the plan has
 * custom_names (without a plan hash: tier "paid"), else none: a random name. */
struct rredis_reg_result {
	const char *code;     /* NULL: registered; else "busy", "unavailable", "name_taken",
			       * "revoked" or "blocked" */
	const char *msg;      /* for the agent, with code */
	const char *hostname; /* registered: the name (with the relay's suffix), ours... */
	uint64_t epoch;	      /* ...at this fencing epoch */
	bool custom;	      /* ...and it is a custom label */
	const struct plan_limits *plan; /* what applies: the plan hash, else the token's claim */
	uint64_t used_bytes;  /* the user's usage this period (usage hash) */
};
typedef void (*rredis_reg_cb)(struct relay *r, void *priv, const struct rredis_reg_result *res);
/* Claim a name (the tunnel's own, its custom label, or a random new one) and take the route
 * lease with a new fencing epoch. The caller owns the lease from the callback on: it renews
 * through each_lease and gives it back with rredis_release_tunnel(). */
int rredis_register_tunnel(struct relay *r, const struct rredis_reg *req, rredis_reg_cb cb,
			   void *priv);
/* Re-read a user's plan, usage and reserved names (the admit script without a jti or tid), on
 * a `plan` event. err: Redis could not answer. */
#define RREDIS_NAMES_MAX 64
struct rredis_user {
	bool err;
	const char *sub;
	const struct plan_limits *plan;
	uint64_t used_bytes;
	size_t nnames;	  /* the names hash: tid -> label */
	const char *name_tid[RREDIS_NAMES_MAX], *name_label[RREDIS_NAMES_MAX];
};
typedef void (*rredis_user_cb)(struct relay *r, void *priv, const struct rredis_user *u);
int rredis_read_user(struct relay *r, const char *sub, rredis_user_cb cb, void *priv);

/* Drop our route lease for hostname if we still hold it at epoch (the name stays reserved).
 * Nothing is sent while Redis is down: the lease expires by itself. */
void rredis_release_tunnel(struct relay *r, const char *hostname, uint64_t epoch);
/* Periodic: instance heartbeat and load, reaping of dead instances, lease renewal. */
void rredis_heartbeat(struct relay *r);

/* Placement: should a new registration go to another instance? The agent address of that
 * instance, or NULL to stay here (Redis down, no better instance, the last heartbeat failed:
 * placement is an optimisation). Answered from the last heartbeat's reply (the load scores it
 * compares change only at heartbeats), so a registration costs no Redis call for it. The
 * pointer is valid until the next heartbeat reply. */
const char *rredis_placement(struct relay *r);

/* The agent addresses of the region's other active relays (draining ones have left the load
 * set), least loaded first: drain and Redis-outage MOVE targets, WELCOME peers. err = Redis
 * could not answer (n is 0 then; keep what you knew). */
typedef void (*rredis_targets_cb)(struct relay *r, void *priv, bool err, const char **addrs,
				  size_t n);
int rredis_move_targets(struct relay *r, rredis_targets_cb cb, void *priv);

/* Everything the relay needs to answer a player whose name has no live tunnel here, in one
 * round trip (the keys share the {hostname} slot): the route lease, the cached status, the
 * owner. Strings are valid during the callback only. */
struct rredis_lookup_result {
	bool err;	      /* Redis could not answer: nothing else is set */
	bool found;	      /* a relay holds the route lease: instance, epoch, addr */
	const char *instance;
	uint64_t epoch;
	const char *addr;     /* its internal address, "-" when it does not forward */
	bool known;	      /* the name has an owner or a cached status: its tunnel exists */
	const char *status;   /* the sanitized status JSON stored by status_sanitize, or NULL */
	size_t status_len;
	bool down_idle;	      /* the tunnel was closed for being idle (its `down` key) */
};
typedef void (*rredis_lookup_cb)(struct relay *r, void *priv, const struct rredis_lookup_result *res);
int rredis_lookup(struct relay *r, const char *hostname, rredis_lookup_cb cb, void *priv);
/* Store the sanitized status of hostname's server (TTL --name-grace-s). Fire and forget:
 * -ENOTCONN while Redis is down, -EINVAL for an empty status or a name too long. */
int rredis_store_status(struct relay *r, const char *hostname, const char *json, size_t len);
/* Mark hostname down for `why` ("idle") for the name grace: any relay answers its players with
 * that (read in rredis_lookup's MGET); the name's next registration clears it. Fire and forget. */
int rredis_set_down(struct relay *r, const char *hostname, const char *why);

/* A Lua script (a static string) on one slot, for the relay's other Redis users (usage.c), with
 * the same EVALSHA/NOSCRIPT handling and callback contract as the calls above. rep is NULL when
 * the command failed or its outcome is unknown; valid during the callback only. */
struct redisReply;
typedef void (*rredis_reply_fn)(struct relay *r, void *priv, struct redisReply *rep);
int rredis_eval(struct relay *r, const char *route_key, rredis_reply_fn cb, void *priv,
		const char *script, int nkeys, const char **keys, int nargs, const char **args);

#endif
