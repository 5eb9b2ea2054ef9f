/* rc: one logical Redis, standalone or Redis Cluster, on hiredis 0.14's async API and our event
 * loop. hiredis 0.14 knows nothing of clusters, so the cluster client lives here: CRC16 key
 * slots, the slot map from CLUSTER SLOTS, MOVED/ASK redirects, bounded retries of commands the
 * cluster refused, reconnection with capped jittered backoff, and map refreshes that follow a
 * replica's promotion. Against a standalone server (CLUSTER SLOTS answers "cluster support
 * disabled") everything goes to that one connection.
 *
 * Delivery contract (why a NULL reply is "unknown", not "not done"):
 * - Every command rc accepted (return 0) gets exactly one callback, on the loop, never from
 *   inside rc_command(). The reply belongs to rc and is freed after the callback returns.
 * - rc sends a command again only when Redis said it did not run it: MOVED, ASK, TRYAGAIN,
 *   CLUSTERDOWN, LOADING, MASTERDOWN (and READONLY in cluster mode: a demoted master).
 * - A command whose connection breaks, or whose deadline passes, while it is in flight is NOT
 *   re-sent: the caller gets NULL and must treat the outcome as unknown (it may have run). This
 *   is at-most-once; our writes are Lua scripts that are idempotent or fenced by an epoch, so
 *   the caller's own retry is safe where a blind retry here would not be.
 * - A command that never left rc (no map yet, node down, waiting for a promotion) waits until
 *   its deadline (RC_CMD_TIMEOUT_MS by default) and is then answered NULL; it did not run.
 * - Redis error replies other than the ones above (script errors, WRONGTYPE, CROSSSLOT...) are
 *   passed through as REDIS_REPLY_ERROR.
 * Ordering: commands for one node are written in submission order; a redirected or retried
 * command can overtake or be overtaken.
 *
 * Multi-key commands: the caller guarantees all keys share a {hash tag}; rc routes by route_key.
 * Host names: hiredis resolves names with a blocking getaddrinfo(), so rc accepts numeric IPv4 or
 * IPv6 addresses only (seeds, MOVED/ASK targets, CLUSTER SLOTS entries - Redis reports IPs
 * anyway). A deployment that names its Redis resolves it once at start-up, before rc_new().
 *
 * Not supported: AUTH and TLS (hiredis 0.14 has no TLS), pub/sub. A blocking command (BLPOP,
 * WAIT) must time out before the command deadline; a reply more than 2 s past the deadline makes
 * rc treat the node as hung and reconnect.
 *
 * Single-threaded: an rc belongs to the loop it was created on. */
#ifndef DVV_RCLUSTER_H
#define DVV_RCLUSTER_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

#define RC_SLOTS 16384
#ifndef RC_CMD_TIMEOUT_MS
#define RC_CMD_TIMEOUT_MS 3000	/* submission to answer, retries and waiting included */
#endif
#ifndef RC_MAX_RETRIES
#define RC_MAX_RETRIES 5	/* redirects + retries per command before it fails */
#endif
#ifndef RC_MAX_PENDING
#define RC_MAX_PENDING 65536	/* commands waiting or in flight; beyond: -ENOBUFS */
#endif
#define RC_HOST_MAX 46		/* INET6_ADDRSTRLEN */
#define RC_MAX_REPLICAS 4	/* replicas remembered per slot range (refresh sources) */

struct rc;

/* reply NULL = failed or outcome unknown (see above); called exactly once per command. A NULL
 * rc_reply_cb is allowed: fire and forget. */
typedef void (*rc_reply_cb)(struct rc *rc, redisReply *reply, void *priv);
/* up = the topology is known (standalone, or a slot map) and every node that serves slots has a
 * working connection (once up, a first connection to a new master does not count as down unless
 * it fails). Called on transitions only, from a timer, never from inside a command. */
typedef void (*rc_state_cb)(struct rc *rc, bool up, void *data);

/* seeds: "ip:port[,ip:port...]" ("[v6]:port" for IPv6). Connects in the background. NULL with
 * errno set (EINVAL: bad seed list, logged; ENOMEM). */
struct rc *rc_new(struct loop *l, const char *seeds, rc_state_cb cb, void *data);
/* Queue a command routed by the slot of route_key (NULL: any master). 0, or -errno and the
 * callback will not be called: -EINVAL, -ENOMEM, -ENOBUFS (RC_MAX_PENDING), -ESHUTDOWN
 * (freeing). SUBSCRIBE/MONITOR are refused (-EINVAL): one reply per command is the contract. */
int rc_command_argv(struct rc *rc, const char *route_key, size_t route_keylen, rc_reply_cb cb,
		    void *priv, int argc, const char **argv, const size_t *argvlen);
/* printf-style (hiredis format: %s %b %d...), route_key NUL-terminated or NULL. */
int rc_command(struct rc *rc, const char *route_key, rc_reply_cb cb, void *priv, const char *fmt,
	       ...);
bool rc_is_up(const struct rc *rc);
bool rc_is_cluster(const struct rc *rc);
/* Answers every pending command with NULL (before it returns), closes every connection. No
 * callback of any kind after it returns. Safe from inside an rc callback. */
void rc_free(struct rc *rc);

/* Deadline of commands submitted from now on (default RC_CMD_TIMEOUT_MS). */
void rc_set_timeout(struct rc *rc, uint32_t ms);

struct rc_stats {
	uint64_t commands;	/* accepted */
	uint64_t failed;	/* answered NULL */
	uint64_t moved, ask;	/* redirects followed */
	uint64_t retries;	/* TRYAGAIN/CLUSTERDOWN/LOADING/... retried after a backoff */
	uint64_t timeouts;	/* answered NULL at the deadline */
	uint64_t conn_lost;	/* working connections that broke */
	uint64_t refreshes;	/* slot maps loaded */
};
void rc_get_stats(const struct rc *rc, struct rc_stats *out);
/* Called once per answered command, just before its callback, with the time from submission
 * to answer (redirects, retries and waiting included) and the reply (NULL: failed or unknown).
 * For metrics: it runs on the loop and must be cheap. NULL turns it off. */
typedef void (*rc_observe_cb)(void *data, uint64_t us, const redisReply *reply);
void rc_set_observer(struct rc *rc, rc_observe_cb cb, void *data);

/* CRC16-XMODEM of the key (or of its first non-empty {hash tag}) mod 16384, as Redis does. */
unsigned rc_key_slot(const char *key, size_t len);

/* ---- parsers (pure; exposed for tests) ---- */

struct rc_addr {
	char host[RC_HOST_MAX]; /* numeric IPv4/IPv6, no brackets */
	uint16_t port;
};

/* "1.2.3.4:6379", "[::1]:6379" or "::1:6379" (last colon splits, as Redis prints it). Numeric
 * hosts only. 0 or -EINVAL. */
int rc_parse_addr(const char *s, size_t len, struct rc_addr *out);

enum rc_redirect_kind { RC_REDIR_MOVED = 1, RC_REDIR_ASK = 2 };
struct rc_redirect {
	enum rc_redirect_kind kind;
	unsigned slot;
	struct rc_addr addr;
};
/* An error reply's text "MOVED 3999 127.0.0.1:6381" / "ASK ...". An empty endpoint (":6381",
 * Redis 7 for "unknown") means the host of the node that answered: from_host. 0 or -EINVAL. */
int rc_parse_redirect(const char *msg, size_t len, const char *from_host, struct rc_redirect *out);

struct rc_range {
	uint16_t start, end;	/* inclusive */
	struct rc_addr master;
	unsigned nreplicas;
	struct rc_addr replicas[RC_MAX_REPLICAS];
};
struct rc_slots {
	struct rc_range *r;
	size_t n;
};
/* A CLUSTER SLOTS reply. A NULL or empty endpoint means from_host; a name is replaced by the
 * "ip" metadata Redis 7 adds, else the node is unusable (a replica is skipped, a master rejects
 * the reply). Anything malformed: -EINVAL with a reason in err, nothing allocated. */
int rc_parse_slots(const redisReply *rep, const char *from_host, struct rc_slots *out, char *err,
		   size_t errlen);
void rc_slots_free(struct rc_slots *s);

#endif
