/* Per-source admission control (ratelimit.h): token buckets per IPv4 /24 or IPv6 /64 and caps
 * on unfinished work per source address, in one fixed-size table. */
#include "ratelimit.h"
#include "net.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static size_t pow2(size_t n)
{
	size_t p = 1024;
	while (p < n)
		p <<= 1;
	return p;
}

int rl_init(struct ratelimit *rl, size_t slots, uint32_t rate_v4, uint32_t rate_v6,
	    uint32_t burst, uint32_t max_pending)
{
	memset(rl, 0, sizeof(*rl));
	rl->nbuckets = rl->npending = pow2(slots);
	rl->buckets = calloc(rl->nbuckets, sizeof(*rl->buckets));
	rl->pending = calloc(rl->npending, sizeof(*rl->pending));
	if (!rl->buckets || !rl->pending) {
		rl_free(rl);
		return -ENOMEM;
	}
	rand_bytes(rl->hkey, sizeof(rl->hkey));
	rl->rate_v4 = rate_v4;
	rl->rate_v6 = rate_v6;
	rl->burst = burst;
	rl->max_pending = max_pending;
	rl->v6_pending_bytes = 16;
	return 0;
}

void rl_free(struct ratelimit *rl)
{
	free(rl->buckets);
	free(rl->pending);
	rl->buckets = NULL;
	rl->pending = NULL;
}

/* IPv4-mapped IPv6 sources count as IPv4 (a dual-stack listener sees them that way). */
static int src_addr(const struct sockaddr_storage *ss, uint8_t out[16])
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (ss->ss_family == AF_INET) {
		memcpy(out, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, 4);
		return 4;
	}
	const uint8_t *a = ((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr.s6_addr;
	if (!memcmp(a, mapped, 12)) {
		memcpy(out, a + 12, 4);
		return 4;
	}
	memcpy(out, a, 16);
	return 6;
}

bool rl_join_allow(struct ratelimit *rl, const struct sockaddr_storage *src, uint64_t now_ms)
{
	uint8_t a[16], key[9] = {0};
	int fam = src_addr(src, a);
	key[0] = (uint8_t)fam;
	memcpy(key + 1, a, fam == 4 ? 3 : 8); /* /24 or /64 */
	uint32_t rate = fam == 4 ? rl->rate_v4 : rl->rate_v6;
	struct rl_bucket *b = &rl->buckets[hash_bytes(rl->hkey, key, sizeof(key)) & (rl->nbuckets - 1)];
	if (memcmp(b->key, key, sizeof(key))) {
		memcpy(b->key, key, sizeof(key));
		b->milli = rl->burst * 1000u;
		b->last_ms = now_ms;
	} else {
		uint64_t add = (now_ms - b->last_ms) * rate; /* ms x per-second = milli-tokens */
		uint64_t cap = (uint64_t)rl->burst * 1000u;
		b->milli = (uint32_t)((b->milli + add) > cap ? cap : b->milli + add);
		b->last_ms = now_ms;
	}
	if (b->milli < 1000)
		return false;
	b->milli -= 1000;
	return true;
}

/* The pending-count key of src: family tag + address, IPv6 cut to v6_pending_bytes. */
static void pending_key(const struct ratelimit *rl, const struct sockaddr_storage *src,
			uint8_t key[17])
{
	memset(key, 0, 17);
	int fam = src_addr(src, key + 1);
	key[0] = (uint8_t)fam;
	if (fam == 6 && rl->v6_pending_bytes < 16)
		memset(key + 1 + rl->v6_pending_bytes, 0, 16 - rl->v6_pending_bytes);
}

long rl_pending_add(struct ratelimit *rl, const struct sockaddr_storage *src)
{
	uint8_t key[17];
	pending_key(rl, src, key);
	size_t i = hash_bytes(rl->hkey, key, sizeof(key)) & (rl->npending - 1);
	struct rl_pending *p = &rl->pending[i];
	if (memcmp(p->key, key, sizeof(key))) {
		if (p->count)
			return (long)rl->npending; /* slot busy with another source: do not count */
		memcpy(p->key, key, sizeof(key));
	}
	if (p->count >= rl->max_pending)
		return -1;
	p->count++;
	return (long)i;
}

void rl_pending_done(struct ratelimit *rl, long slot, const struct sockaddr_storage *src)
{
	if (slot < 0 || (size_t)slot >= rl->npending)
		return;
	struct rl_pending *p = &rl->pending[slot];
	uint8_t key[17];
	pending_key(rl, src, key);
	if (!memcmp(p->key, key, sizeof(key)) && p->count)
		p->count--;
}

void rl_tb_init(struct rl_tb *tb, uint32_t rate, uint32_t burst)
{
	*tb = (struct rl_tb){.rate = rate, .burst = burst ? burst : 1};
}

/* Refill to now_ms. */
static void tb_refill(struct rl_tb *tb, uint64_t now_ms)
{
	uint64_t cap = (uint64_t)tb->burst * 1000u;
	if (!tb->started) {
		tb->started = true;
		tb->milli = cap;
	} else if (now_ms > tb->last_ms) {
		/* ms x per-second = milli-tokens */
		uint64_t add = (now_ms - tb->last_ms) * tb->rate;
		tb->milli = tb->milli + add > cap ? cap : tb->milli + add;
	}
	if (now_ms > tb->last_ms || !tb->last_ms)
		tb->last_ms = now_ms;
}

bool rl_tb_take(struct rl_tb *tb, uint64_t now_ms)
{
	return rl_tb_take_reserve(tb, now_ms, 0) != RL_TB_NONE;
}

int rl_tb_take_reserve(struct rl_tb *tb, uint64_t now_ms, uint32_t reserve)
{
	if (!tb->rate)
		return RL_TB_OPEN;
	tb_refill(tb, now_ms);
	if (tb->milli < 1000)
		return RL_TB_NONE;
	int from = tb->milli >= ((uint64_t)reserve + 1) * 1000u ? RL_TB_OPEN : RL_TB_RESERVE;
	tb->milli -= 1000;
	return from;
}

void rl_tb_refund(struct rl_tb *tb)
{
	uint64_t cap = (uint64_t)tb->burst * 1000u;
	if (tb->rate)
		tb->milli = tb->milli + 1000 > cap ? cap : tb->milli + 1000;
}
