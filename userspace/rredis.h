/* The relay's view of Redis (standalone or Cluster, through rcluster.c): the Lua scripts that
 * keep tunnel ownership consistent, instance registry and load, route lookups for forwarding,
 * placement. docs/redis.md describes every key and its hash slot. */
#ifndef DVV_RREDIS_H
#define DVV_RREDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct relay;
struct tunnel;

int rredis_start(struct relay *r);
/* Best-effort clean exit: release our leases and instance keys (bounded by ~1 s). */
void rredis_stop(struct relay *r);
bool rredis_up(const struct relay *r);

/* Claim a name for t (its token's tunnel keeps its name; otherwise a random one) and take the
 * route lease with a new fencing epoch. Completion: tunnel_registered(). 0 if started. */
int rredis_register_tunnel(struct tunnel *t);
/* Drop our route lease for hostname if we still hold it at epoch (the name stays reserved). */
void rredis_release_tunnel(struct relay *r, const char *hostname, uint64_t epoch);
/* Periodic: instance heartbeat and load, reaping of dead instances, lease renewal. */
void rredis_heartbeat(struct relay *r);

/* Where is this name served? cb gets found=false when no relay holds it; err=true when Redis
 * could not answer. instance/addr are valid during the callback only. */
typedef void (*rredis_route_cb)(struct relay *r, void *priv, bool err, bool found,
				const char *instance, uint64_t epoch, const char *addr);
int rredis_lookup_route(struct relay *r, const char *hostname, rredis_route_cb cb, void *priv);

/* Placement: should a new registration go to another instance? cb gets addr = that instance's
 * agent address, or NULL to stay here (also on any error: placement is an optimisation). */
typedef void (*rredis_pick_cb)(struct relay *r, void *priv, const char *addr);
int rredis_pick_instance(struct relay *r, rredis_pick_cb cb, void *priv);

/* Draining: the agent addresses of the region's other active relays, least loaded first. */
typedef void (*rredis_targets_cb)(struct relay *r, void *priv, const char **addrs, size_t n);
int rredis_move_targets(struct relay *r, rredis_targets_cb cb, void *priv);

/* tunnel.c: registration finished. code NULL on success; else "busy", "unavailable" or
 * "name_taken" with a message. */
void tunnel_registered(struct tunnel *t, const char *hostname, uint64_t epoch, const char *code,
		       const char *msg);
/* tunnel.c: our lease for this tunnel was taken by another instance (or fencing failed). */
void tunnel_lease_lost(struct relay *r, const char *hostname, uint64_t epoch);

#endif
