/* Per-source admission control for players, above the XDP guard: a token bucket of handshakes
 * per IPv4 /24 or IPv6 /64, and a cap on unfinished handshakes per source address, so one
 * address or network cannot starve the others.
 *
 * Both tables are direct-mapped arrays indexed by a keyed hash: memory is fixed whatever the
 * number of sources, and lookups are O(1). When two prefixes collide the newer one takes the
 * slot with a fresh bucket; an attacker spraying prefixes can therefore reset buckets, but never
 * make a legitimate source wait longer than its own bucket would. */
#ifndef DVV_RATELIMIT_H
#define DVV_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct rl_bucket {
	uint8_t key[9];	     /* family tag + 8 prefix bytes; all zero = empty */
	uint64_t last_ms;
	uint32_t milli;	     /* tokens x 1000 */
};

struct rl_pending {
	uint8_t key[17];     /* family tag + 16 address bytes */
	uint32_t count;
};

struct ratelimit {
	struct rl_bucket *buckets;
	struct rl_pending *pending;
	size_t nbuckets, npending; /* powers of two */
	uint64_t hkey[2];
	uint32_t rate_v4, rate_v6, burst; /* per second, per second, tokens */
	uint32_t max_pending;
	uint8_t v6_pending_bytes;  /* IPv6 bytes that key a pending count: 16 (address) or 8 (/64) */
};

/* A single token bucket (one per relay, not per source): events per second with a burst. */
struct rl_tb {
	uint64_t last_ms;
	uint64_t milli;		   /* tokens x 1000 */
	uint32_t rate, burst;
	bool started;
};

int rl_init(struct ratelimit *rl, size_t slots, uint32_t rate_v4, uint32_t rate_v6,
	    uint32_t burst, uint32_t max_pending);
void rl_free(struct ratelimit *rl);
/* Take one handshake token for the source's prefix. false = over the rate. */
bool rl_join_allow(struct ratelimit *rl, const struct sockaddr_storage *src, uint64_t now_ms);
/* Count an unfinished handshake from src. Returns the slot to pass to rl_pending_done, or -1
 * when the source already has max_pending unfinished handshakes. */
long rl_pending_add(struct ratelimit *rl, const struct sockaddr_storage *src);
void rl_pending_done(struct ratelimit *rl, long slot, const struct sockaddr_storage *src);

/* A bucket that starts full. rate 0 = unlimited. */
void rl_tb_init(struct rl_tb *tb, uint32_t rate, uint32_t burst);
/* Take one token at now_ms. false = over the rate (nothing taken). */
bool rl_tb_take(struct rl_tb *tb, uint64_t now_ms);
/* Take one token, keeping `reserve` of them for callers that can prove a claim on them later:
 * RL_TB_OPEN = taken above the reserve, RL_TB_RESERVE = taken from the reserve (the caller
 * refunds it with rl_tb_refund when the claim fails), RL_TB_NONE = nothing left. */
enum { RL_TB_NONE = 0, RL_TB_OPEN = 1, RL_TB_RESERVE = 2 };
int rl_tb_take_reserve(struct rl_tb *tb, uint64_t now_ms, uint32_t reserve);
/* Give one token back (never above the burst). */
void rl_tb_refund(struct rl_tb *tb);

#endif
