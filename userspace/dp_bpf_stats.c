/* The bpf data plane's numbers: the verdict program's per-CPU counters summed, map entry
 * counts, the plane's own counters, and per-tunnel bytes (the API in dp_bpf.h), for /metrics,
 * tests and the self-test. */
#include "dataplane.h"
#include "dp_bpf.h"
#include "dp_bpf_int.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *const dvv_verdict_names[DVV_V_MAX] = {
	[DVV_V_REDIRECT] = "redirect",	 [DVV_V_PASS] = "pass",	    [DVV_V_DROP] = "drop",
	[DVV_V_ZERO_LEN] = "zero_len",	 [DVV_V_NO_PEER] = "no_peer", [DVV_V_LAG_DROP] = "lag_drop",
	[DVV_V_THROTTLE] = "throttle",	 [DVV_V_EVENT_LOST] = "event_lost",
};

/* Summed over CPUs. */
int bp_verdicts_read(struct bp_plane *b, struct dvv_verdict_count out[DVV_V_MAX])
{
	struct dvv_verdict_count *v = calloc((size_t)b->ncpu, sizeof(*v));
	if (!v)
		return -ENOMEM;
	memset(out, 0, sizeof(*out) * DVV_V_MAX);
	for (uint32_t k = 0; k < DVV_V_MAX; k++) {
		if (bpf_map_lookup_elem(b->verdicts_fd, &k, v) < 0) {
			int e = -errno;
			free(v);
			return e;
		}
		for (int c = 0; c < b->ncpu; c++) {
			out[k].skbs += v[c].skbs;
			out[k].bytes += v[c].bytes;
		}
	}
	free(v);
	return 0;
}

/* Entries in a hash map: one syscall each. */
int bp_map_count(int fd, uint64_t *n)
{
	uint64_t key, next;
	void *prev = NULL;
	*n = 0;
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		(*n)++;
		key = next;
		prev = &key;
		if (*n > 4ull * DVV_SPLICE_MAX_SOCKS)
			return -ELOOP;
	}
	return errno == ENOENT ? 0 : -errno;
}

int dp_bpf_stats(const struct dataplane *dp, struct dvv_splice_stats *st, bool walk_maps)
{
	if (!dp || dp->ops != &dp_bpf_ops || !dp->priv)
		return -ENODEV;
	struct bp_plane *b = dp->priv;
	int rc;
	memset(st, 0, sizeof(*st));
	if ((rc = bp_verdicts_read(b, st->verdicts)))
		return rc;
	st->pairs_active = atomic_load(&b->n_active);
	st->pairs_total = atomic_load(&b->n_total);
	st->pairs_demoted = atomic_load(&b->n_demoted);
	st->cut_lag = atomic_load(&b->n_cut_lag);
	st->cut_error = atomic_load(&b->n_cut_error);
	st->drain_timeouts = atomic_load(&b->n_drain_timeouts);
	st->throttles = atomic_load(&b->n_throttles);
	st->unthrottles = atomic_load(&b->n_unthrottles);
	st->throttled_now = atomic_load(&b->n_throttled);
	st->user_bytes = atomic_load(&b->n_user_bytes);
	if (walk_maps && ((rc = bp_map_count(b->targets_fd, &st->sockets_in_map)) ||
	    (rc = bp_map_count(b->socks_fd, &st->active_in_map)) ||
	    (rc = bp_map_count(b->conns_fd, &st->conns_in_map)) ||
	    (rc = bp_map_count(b->tunnels_fd, &st->tunnels_in_map))))
		return rc;
	return 0;
}

int dp_bpf_tunnel_bytes(const struct dataplane *dp, uint64_t tunnel_key, uint64_t *to_agent,
			uint64_t *to_player)
{
	*to_agent = *to_player = 0;
	if (!dp || dp->ops != &dp_bpf_ops || !dp->priv)
		return -ENODEV;
	return dp->ops->tunnel_bytes((struct dataplane *)dp, tunnel_key, to_agent, to_player);
}
