/* Per-tunnel byte and player accounting table of the data planes (contract in dp_acct.h). */
#include "dp_acct.h"
#include "list.h"

#include <errno.h>
#include <stdlib.h>

static bool acct_eq(const struct hnode *n, const void *key, size_t len)
{
	return container_of(n, struct dp_acct, hn)->key == *(const uint64_t *)key;
}

int dp_acct_init(struct dp_acct_tab *t, size_t max)
{
	int rc = htab_init(&t->h, 256);
	if (rc)
		return rc;
	t->max = max;
	pthread_mutex_init(&t->lock, NULL);
	return 0;
}

void dp_acct_free(struct dp_acct_tab *t)
{
	if (!t->h.b)
		return;
	for (size_t i = 0; i < t->h.nb; i++)
		while (t->h.b[i]) {
			struct hnode *n = t->h.b[i];
			htab_del(&t->h, n);
			free(container_of(n, struct dp_acct, hn));
		}
	htab_free(&t->h);
	pthread_mutex_destroy(&t->lock);
}

static struct dp_acct *find(struct dp_acct_tab *t, uint64_t key, uint64_t *h)
{
	*h = htab_hash(&t->h, &key, sizeof(key));
	struct hnode *n = htab_find(&t->h, *h, &key, sizeof(key), acct_eq);
	return n ? container_of(n, struct dp_acct, hn) : NULL;
}

struct dp_acct *dp_acct_get(struct dp_acct_tab *t, uint64_t key, int *err)
{
	struct dp_acct *a = NULL;
	uint64_t h;
	int rc = 0;
	if (!key || !t->h.b) {
		rc = -EINVAL;
		goto out_nolock;
	}
	pthread_mutex_lock(&t->lock);
	if ((a = find(t, key, &h))) {
		a->refs++;
		goto out;
	}
	if (t->h.n >= t->max) {
		rc = -ENOSPC;
		goto out;
	}
	if (!(a = calloc(1, sizeof(*a)))) {
		rc = -ENOMEM;
		goto out;
	}
	if (t->on_create && (rc = t->on_create(t->owner, key))) {
		free(a);
		a = NULL;
		goto out;
	}
	a->key = key;
	a->refs = 1;
	htab_add(&t->h, &a->hn, h);
out:
	pthread_mutex_unlock(&t->lock);
out_nolock:
	if (rc && err)
		*err = rc;
	return a;
}

void dp_acct_put(struct dp_acct_tab *t, struct dp_acct *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&t->lock);
	if (--a->refs == 0) {
		htab_del(&t->h, &a->hn);
		if (t->on_free)
			t->on_free(t->owner, a->key);
	} else {
		a = NULL;
	}
	pthread_mutex_unlock(&t->lock);
	free(a);
}

struct dp_acct *dp_acct_hold(struct dp_acct_tab *t, uint64_t key)
{
	int err = 0;
	struct dp_acct *a = dp_acct_get(t, key, &err);
	if (!a)
		errno = -err;
	return a;
}

struct dp_acct *dp_acct_pair_get(struct dp_acct_tab *t, uint64_t key, int *err)
{
	struct dp_acct *a = dp_acct_get(t, key, err);
	if (a)
		atomic_fetch_add(&a->pairs, 1);
	return a;
}

void dp_acct_pair_put(struct dp_acct_tab *t, struct dp_acct *a)
{
	if (!a)
		return;
	/* release: a holder that sees pairs drop sees every byte this pair counted */
	atomic_fetch_sub_explicit(&a->pairs, 1, memory_order_release);
	dp_acct_put(t, a);
}

int dp_acct_read(struct dp_acct_tab *t, uint64_t key, uint64_t *to_agent, uint64_t *to_player)
{
	uint64_t h;
	int rc = -ENOENT;
	*to_agent = *to_player = 0;
	if (!t->h.b)
		return -ENOENT;
	pthread_mutex_lock(&t->lock);
	struct dp_acct *a = find(t, key, &h);
	if (a) {
		*to_agent = atomic_load(&a->bytes[DP_TO_AGENT]);
		*to_player = atomic_load(&a->bytes[DP_TO_PLAYER]);
		rc = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

size_t dp_acct_count(struct dp_acct_tab *t)
{
	pthread_mutex_lock(&t->lock);
	size_t n = t->h.n;
	pthread_mutex_unlock(&t->lock);
	return n;
}
