/* The relay's view of Redis: a non-blocking hiredis connection on the relay's event loop, the
 * Lua scripts that keep tunnel ownership consistent, and reconnection/reconciliation.
 * docs/redis.md describes every key. */
#ifndef DVV_RREDIS_H
#define DVV_RREDIS_H

#include <stdbool.h>
#include <stdint.h>

struct relay;
struct tunnel;

int rredis_start(struct relay *r);
/* Best-effort clean exit: release our leases and instance keys (blocking, bounded by 1 s). */
void rredis_stop(struct relay *r);
bool rredis_up(const struct relay *r);

/* Claim a name for t (its token's tunnel keeps its name; otherwise a random one) and take the
 * route lease. Completion: tunnel_registered(). Returns 0 if the request was sent. */
int rredis_register_tunnel(struct tunnel *t);
/* Drop our route lease for hostname if we still hold it at epoch (the name stays reserved). */
void rredis_release_tunnel(struct relay *r, const char *hostname, uint64_t epoch);
/* Periodic: instance heartbeat, load score, batched lease renewal of every live tunnel. */
void rredis_heartbeat(struct relay *r);

/* tunnel.c: called when a registration finished. code is NULL on success; otherwise "busy",
 * "unavailable" or "name_taken" with a message. */
void tunnel_registered(struct tunnel *t, const char *hostname, uint64_t epoch, const char *code,
		       const char *msg);
/* tunnel.c: our lease for this tunnel was taken by another instance (or fencing failed). */
void tunnel_lease_lost(struct relay *r, const char *hostname, uint64_t epoch);

#endif
