/* The intrusive hash table (htab.h): chained buckets, keyed hashing (hash_bytes) of
 * attacker-chosen keys, growth by doubling. */
#include "htab.h"
#include "net.h"

#include <errno.h>
#include <stdlib.h>

int htab_init(struct htab *t, size_t nb)
{
	t->nb = nb < 16 ? 16 : nb;
	t->n = 0;
	t->b = calloc(t->nb, sizeof(*t->b));
	rand_bytes(t->key, sizeof(t->key));
	return t->b ? 0 : -ENOMEM;
}

void htab_free(struct htab *t)
{
	free(t->b);
	t->b = NULL;
	t->nb = t->n = 0;
}

uint64_t htab_hash(const struct htab *t, const void *key, size_t keylen)
{
	return hash_bytes(t->key, key, keylen);
}

struct hnode *htab_find(const struct htab *t, uint64_t hash, const void *key, size_t keylen,
			htab_eq_fn eq)
{
	for (struct hnode *n = t->b[hash & (t->nb - 1)]; n; n = n->next)
		if (n->hash == hash && eq(n, key, keylen))
			return n;
	return NULL;
}

static void grow(struct htab *t)
{
	size_t nb = t->nb * 2;
	struct hnode **b = calloc(nb, sizeof(*b));
	if (!b)
		return; /* keep working with longer chains */
	for (size_t i = 0; i < t->nb; i++) {
		struct hnode *n = t->b[i], *next;
		for (; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(t->b);
	t->b = b;
	t->nb = nb;
}

void htab_add(struct htab *t, struct hnode *node, uint64_t hash)
{
	if (t->n >= t->nb)
		grow(t);
	node->hash = hash;
	struct hnode **head = &t->b[hash & (t->nb - 1)];
	node->next = *head;
	*head = node;
	t->n++;
}

void htab_del(struct htab *t, struct hnode *node)
{
	for (struct hnode **p = &t->b[node->hash & (t->nb - 1)]; *p; p = &(*p)->next)
		if (*p == node) {
			*p = node->next;
			node->next = NULL;
			t->n--;
			return;
		}
}
