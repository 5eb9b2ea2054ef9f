/* The control loop -> data-plane thread job queue (contract in handoff.h). */
#include "handoff.h"
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define HANDOFF_BATCH 64 /* jobs copied out per lock hold; also the first capacity */

void handoff_init(struct handoff *h, struct loop *consumer)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->lock, NULL);
	h->consumer = consumer;
}

void handoff_free(struct handoff *h)
{
	free(h->q);
	h->q = NULL;
	h->nq = h->capq = 0;
	pthread_mutex_destroy(&h->lock);
}

int handoff_push(struct handoff *h, const struct handoff_job *j)
{
	int rc = 0;
	pthread_mutex_lock(&h->lock);
	if (h->nq == h->capq) {
		size_t cap = h->capq ? h->capq * 2 : HANDOFF_BATCH;
		struct handoff_job *q = realloc(h->q, cap * sizeof(*q));
		if (!q) {
			rc = -ENOMEM;
			goto out;
		}
		h->q = q;
		h->capq = cap;
	}
	h->q[h->nq++] = *j;
out:
	pthread_mutex_unlock(&h->lock);
	if (!rc)
		loop_wake(h->consumer);
	return rc;
}

void handoff_drain(struct handoff *h, handoff_fn fn, void *arg)
{
	struct handoff_job batch[HANDOFF_BATCH];
	for (;;) {
		pthread_mutex_lock(&h->lock);
		size_t n = h->nq < HANDOFF_BATCH ? h->nq : HANDOFF_BATCH;
		if (n) {
			memcpy(batch, h->q, n * sizeof(*batch));
			memmove(h->q, h->q + n, (h->nq - n) * sizeof(*batch));
			h->nq -= n;
		}
		pthread_mutex_unlock(&h->lock);
		if (!n)
			return;
		for (size_t i = 0; i < n; i++)
			fn(arg, &batch[i]);
	}
}
