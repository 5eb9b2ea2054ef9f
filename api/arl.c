/* Token-bucket rate limiter in a fixed-size table keyed by strings (arl.h). */
#include "arl.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define ARL_KEY_MAX 96
#define ARL_PROBE   8

struct arl_slot {
	char key[ARL_KEY_MAX];
	double tokens;
	uint64_t last_ms;
};

struct arl {
	pthread_mutex_t mu;
	struct arl_slot *slot;
	int n;
};

int arl_new(int slots, struct arl **out)
{
	struct arl *rl = calloc(1, sizeof(*rl));

	if (!rl || slots < ARL_PROBE)
		goto fail;
	rl->slot = calloc((size_t)slots, sizeof(*rl->slot));
	if (!rl->slot)
		goto fail;
	rl->n = slots;
	pthread_mutex_init(&rl->mu, NULL);
	*out = rl;
	return 0;
fail:
	free(rl);
	return -ENOMEM;
}

void arl_free(struct arl *rl)
{
	if (!rl)
		return;
	pthread_mutex_destroy(&rl->mu);
	free(rl->slot);
	free(rl);
}

static uint64_t arl_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

int arl_take(struct arl *rl, const char *key, int per_min, uint64_t now_ms)
{
	struct arl_slot *s = NULL, *lru = NULL;
	uint64_t h;
	double rate;
	int wait = 0;

	if (per_min <= 0)
		return 0;
	rate = per_min / 60000.0; /* tokens per ms */
	h = arl_hash(key);
	pthread_mutex_lock(&rl->mu);
	for (int i = 0; i < ARL_PROBE; i++) {
		struct arl_slot *c = &rl->slot[(h + (uint64_t)i) % (uint64_t)rl->n];

		if (!strncmp(c->key, key, ARL_KEY_MAX - 1) && c->key[0]) {
			s = c;
			break;
		}
		if (!lru || c->last_ms < lru->last_ms)
			lru = c;
	}
	if (!s) {
		s = lru;
		snprintf(s->key, sizeof(s->key), "%s", key);
		s->tokens = per_min;
		s->last_ms = now_ms;
	}
	if (now_ms > s->last_ms)
		s->tokens += (double)(now_ms - s->last_ms) * rate;
	if (s->tokens > per_min)
		s->tokens = per_min;
	s->last_ms = now_ms;
	if (s->tokens >= 1.0)
		s->tokens -= 1.0;
	else
		wait = (int)(((1.0 - s->tokens) / rate + 999.0) / 1000.0); /* ceil, >= 1 */
	pthread_mutex_unlock(&rl->mu);
	return wait;
}
