/* Bandwidth accounting of a relay: every --usage-flush-ms (default 5 s) the relay reads each
 * tunnel's byte counters from the data plane (dataplane.h tunnel_bytes: both ways, every path),
 * and sends each user's deltas and live state in ONE script on the user's hash slot
 * (`dvv:user:{<sub>}:usage` and `:live`, docs/redis.md). The reply is the user's total for the
 * period, handed to the plan enforcement through on_total.
 *
 * Contract:
 * - Exactly-once: a batch whose outcome is unknown (Redis gone mid-call, deadline) is sent again
 *   unchanged with the same sequence number, which the script applies at most once; new bytes
 *   wait behind it. Nothing counted is lost while Redis is away: deltas stay in a per-tunnel
 *   backlog (capped at USAGE_BACKLOG_MAX bytes per tunnel; beyond it, and for ended tunnels over
 *   USAGE_GONE_MAX, bytes are counted in dvv_relay_usage_dropped_bytes_total instead).
 * - A tunnel is tracked from its first session up here until its last session is down AND its
 *   last pair has ended AND those final counts are in Redis: players that stay on a relay after
 *   their tunnel moved are still billed, by this relay.
 * - live: written when hostname or players change, and at least every USAGE_LIVE_REFRESH_MS;
 *   HDEL when the tunnel's last session here goes down, unless the entry is another relay's
 *   (the script compares instance and since: a newer session elsewhere wins).
 * - Period: the one plan_period() gives for the tunnel's plan (struct tunnel.plan) at flush
 *   time; a script that sees an older `period` resets the hash, a newer one keeps it (a relay
 *   whose plan lags does not wipe the new period).
 * Single-threaded, on the relay's loop. */
#ifndef DVV_USAGE_H
#define DVV_USAGE_H

#include <stdbool.h>
#include <stdint.h>

struct relay;
struct tunnel;

#define USAGE_BACKLOG_MAX (1ull << 42)	 /* 4 TiB per tunnel: hours of an outage at 10 Gbit/s */
#define USAGE_GONE_MAX 4096		 /* ended tunnels whose bytes wait for Redis */
#define USAGE_LIVE_REFRESH_MS 25000	 /* live `t` stays under the 30 s the contract promises */

/* Called after every successful flush of sub's bytes with the user's total this period (both
 * directions, every relay). */
typedef void (*usage_total_fn)(struct relay *r, const char *sub, uint64_t period_total);

int usage_init(struct relay *r);
/* At exit, before Redis and the data plane stop: every tunnel is down, one last flush (bounded
 * by ~1 s), every hold released. */
void usage_stop(struct relay *r);
/* A session of t is up here (its hostname, plan and key are set) / went down. */
void usage_tunnel_up(struct relay *r, struct tunnel *t);
void usage_tunnel_down(struct relay *r, struct tunnel *t);
/* Flush now (the timer does it every --usage-flush-ms). */
void usage_flush(struct relay *r);

/* ---- pure arithmetic (unit-tested) ---- */

/* One tunnel's counters as the flush sees them. */
struct usage_ctr {
	uint64_t seen[2]; /* the plane's cumulative counts at the last read (to agent, to player) */
	uint64_t backlog; /* counted, not yet confirmed in Redis */
};
/* Fold a new read of the cumulative counters into c: returns the new bytes. A counter lower than
 * the last read means the plane's entry was created anew: all of it is new. The backlog is capped
 * at cap; what does not fit is added to *dropped. */
uint64_t usage_take(struct usage_ctr *c, uint64_t to_agent, uint64_t to_player, uint64_t cap,
		    uint64_t *dropped);

#endif
