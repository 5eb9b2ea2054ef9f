/* Per-tunnel byte accounting shared by both data planes: one entry per tunnel key with the bytes
 * relayed each way and the number of live pairs (players), so bandwidth can be billed and
 * max_players enforced no matter which plane or fallback path moved the bytes.
 *
 * Contract:
 * - An entry lives while it has references: one per pair (taken at join, on the control loop,
 *   before the pair is queued to a plane thread; dropped by the plane thread when the pair ends)
 *   and one per holder (the relay's usage accounting holds every tunnel it tracks). The last
 *   reference frees it; a plane's on_free hook removes its own state for the key (the bpf
 *   plane's dvv_tunnels element). So a holder that reads the counters after `pairs` reached 0
 *   and before it lets go has read the tunnel's final counts, and nothing outlives its tunnel.
 * - Counters are atomics, added to by the data-plane threads without any lock; the table itself
 *   (find, create, free) is under a mutex that no byte path takes.
 * - Bounded: at most `max` entries (-ENOSPC beyond; the pair is then relayed uncounted and the
 *   caller logs it). Key 0 means "not accounted" (a forwarded player on the relay that does not
 *   hold its tunnel: the owner counts it). */
#ifndef DVV_DP_ACCT_H
#define DVV_DP_ACCT_H

#include "htab.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Entries per plane: the size of the bpf plane's dvv_tunnels map (DVV_SPLICE_MAX_TUNNELS, checked
 * at compile time there), far above any relay's tunnel count. */
#define DP_ACCT_MAX (1u << 17)

/* Index of dp_acct.bytes: same values as enum dvv_dir (bpf/splice.h). */
enum { DP_TO_AGENT = 0, DP_TO_PLAYER = 1 };

struct dp_acct {
	struct hnode hn;
	uint64_t key;
	_Atomic uint64_t bytes[2]; /* relayed by userspace paths (the bpf plane adds its map) */
	_Atomic int32_t pairs;	   /* joined and not yet ended: the tunnel's players here */
	uint32_t refs;		   /* under the table's lock */
};

struct dp_acct_tab {
	pthread_mutex_t lock;
	struct htab h;
	size_t max;
	void *owner;
	int (*on_create)(void *owner, uint64_t key); /* 0 or -errno: the entry is not created */
	void (*on_free)(void *owner, uint64_t key);
};

int dp_acct_init(struct dp_acct_tab *t, size_t max);
/* At plane stop: every pair has ended; entries a holder forgot are freed (on_free not called). */
void dp_acct_free(struct dp_acct_tab *t);
/* A reference to key's entry, created (on_create) if needed; NULL with *err for key 0 (-EINVAL),
 * a full table (-ENOSPC), -ENOMEM or on_create's error. */
struct dp_acct *dp_acct_get(struct dp_acct_tab *t, uint64_t key, int *err);
void dp_acct_put(struct dp_acct_tab *t, struct dp_acct *a);
/* dp_acct_get for a plane's acct_hold (dataplane.h): NULL with errno set. */
struct dp_acct *dp_acct_hold(struct dp_acct_tab *t, uint64_t key);
/* A pair joins / ends: its reference plus the player count. */
struct dp_acct *dp_acct_pair_get(struct dp_acct_tab *t, uint64_t key, int *err);
void dp_acct_pair_put(struct dp_acct_tab *t, struct dp_acct *a);
/* The userspace part of key's counters: 0, or -ENOENT when there is no entry. */
int dp_acct_read(struct dp_acct_tab *t, uint64_t key, uint64_t *to_agent, uint64_t *to_player);
size_t dp_acct_count(struct dp_acct_tab *t);

static inline void dp_acct_add(struct dp_acct *a, int dir, uint64_t n)
{
	if (a && n)
		atomic_fetch_add_explicit(&a->bytes[dir], n, memory_order_relaxed);
}

#endif
