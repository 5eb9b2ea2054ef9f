/* Rate limiting for dvv-api: token buckets keyed by a string ("ip:1.2.3.4", "acct:x@y"), in a
 * fixed-size table (a flood of distinct keys evicts the least recently used bucket in its probe
 * window: memory stays bounded, and an evicted attacker only gets a fresh bucket). Thread-safe. */
#ifndef DVV_API_ARL_H
#define DVV_API_ARL_H

#include <stdint.h>

struct arl;

int arl_new(int slots, struct arl **out);
void arl_free(struct arl *rl);
/* Take one token from key's bucket (per_min tokens a minute, burst = per_min). 0 = allowed, else
 * the seconds until one is available (>= 1). per_min <= 0: no limit. */
int arl_take(struct arl *rl, const char *key, int per_min, uint64_t now_ms);

#endif /* DVV_API_ARL_H */
