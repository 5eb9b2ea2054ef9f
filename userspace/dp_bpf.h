/* The bpf data plane's API beyond dataplane_ops (dp_bpf_ops, dataplane.h), for /metrics, tests
 * and benchmarks: its counters and the bytes of one tunnel. Both calls are thread-safe (map
 * reads are syscalls) and valid only while the plane runs, between start and stop. */
#ifndef DVV_DP_BPF_H
#define DVV_DP_BPF_H

#include "../bpf/splice.h"

#include <stdbool.h>
#include <stdint.h>

struct dataplane;

struct dvv_splice_stats {
	struct dvv_verdict_count verdicts[DVV_V_MAX]; /* summed over CPUs */
	uint64_t pairs_active;	  /* pairs spliced in the kernel right now */
	uint64_t pairs_total;	  /* pairs joined since start (self-test excluded) */
	uint64_t pairs_demoted;	  /* pairs that could not be inserted and were relayed with splice(2) */
	uint64_t throttles;	  /* senders whose window was clamped because their reader lagged */
	uint64_t unthrottles;	  /* ... and opened again */
	uint64_t throttled_now;	  /* sockets clamped right now */
	uint64_t user_bytes;	  /* bytes relayed by userspace (a direction that could not be hooked) */
	uint64_t cut_lag;	  /* pairs cut: reader over max_lag_mb, or acknowledging nothing */
	uint64_t cut_error;	  /* pairs torn down by RST, socket error or a failed redirect */
	uint64_t drain_timeouts;  /* half-closes abandoned: redirected bytes never left */
	uint64_t sockets_in_map;  /* entries in dvv_targets (walk of the map): sockets of live pairs */
	uint64_t active_in_map;	  /* entries in dvv_socks: sockets whose bytes the kernel splices */
	uint64_t conns_in_map;	  /* entries in dvv_conns */
	uint64_t tunnels_in_map;  /* entries in dvv_tunnels */
};

/* enum dvv_verdict -> the name /metrics uses for it */
extern const char *const dvv_verdict_names[DVV_V_MAX];

/* Fills *st. walk_maps: also count the map entries (*_in_map), one syscall per entry: for tests
 * and diagnostics, not for every /metrics scrape. Returns 0 or -errno (-ENODEV when dp is not a
 * started bpf plane). */
int dp_bpf_stats(const struct dataplane *dp, struct dvv_splice_stats *st, bool walk_maps);

/* Bytes relayed so far for one tunnel, kernel and fallback paths (dp_bpf_ops.tunnel_bytes).
 * Returns 0, -ENOENT when the tunnel has no accounting entry (no live pair, no holder), or
 * -errno. */
int dp_bpf_tunnel_bytes(const struct dataplane *dp, uint64_t tunnel_key, uint64_t *to_agent,
			uint64_t *to_player);

#endif
