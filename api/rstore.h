/* Redis for dvv-api: a small synchronous client (hiredis) for standalone Redis or a Redis
 * Cluster (follows MOVED and ASK, learns the slot owners as it goes), and the outbox sync thread.
 *
 * The outbox (contract: PostgreSQL is the truth, Redis a derived copy): every change that matters
 * to the relays writes a redis_outbox row in its own transaction. The sync thread, woken right
 * after such a commit (rstore_kick) and every 250 ms anyway, takes one user at a time under a
 * per-user advisory lock (so several APIs never interleave their writes for one user), rewrites
 * that user's whole derived state in one Lua script on the user's slot (plan hash, revoked zset,
 * blocked set, names hash), XADDs the events its rows name, and deletes the rows. A crash at any
 * point repeats the idempotent rewrite; events are at least once.
 *
 * Every call is bounded by a 2 s timeout. Thread-safe: connections come from a small pool. */
#ifndef DVV_API_RSTORE_H
#define DVV_API_RSTORE_H

#include <stdbool.h>

#include <hiredis/hiredis.h>

struct api;
struct rstore;

int rstore_new(const char *addr, const char *prefix, struct rstore **out); /* 0 or -errno */
void rstore_free(struct rstore *rs);
const char *rstore_prefix(const struct rstore *rs);

/* Run a command routed by route_key (a key of the command; NULL: any node). The reply or NULL
 * (connection failure, timeout). The caller frees it with freeReplyObject. */
redisReply *rstore_cmd(struct rstore *rs, const char *route_key, int argc, const char **argv,
		       const size_t *argvlen);

/* Start the sync thread (drains what is left at once). 0 or -errno. */
int rstore_sync_start(struct api *a);
void rstore_sync_stop(struct api *a);
/* Wake the sync thread now (after a commit that wrote outbox rows). */
void rstore_kick(struct rstore *rs);
/* Process every pending outbox row now, on this thread (start-up, tests). 0 or -errno. */
int rstore_sync_all(struct api *a);
/* Rows pushed since start (metrics) and the last push error time. */
unsigned long rstore_pushed(const struct rstore *rs);

#endif /* DVV_API_RSTORE_H */
