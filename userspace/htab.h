/* Intrusive chained hash table with a keyed hash (names and tokens are attacker-chosen).
 * Single-threaded: each table belongs to one event loop. */
#ifndef DVV_HTAB_H
#define DVV_HTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hnode {
	struct hnode *next;
	uint64_t hash;
};

struct htab {
	struct hnode **b;
	size_t nb, n;
	uint64_t key[2];
};

/* Returns true when node matches the key being looked up. */
typedef bool (*htab_eq_fn)(const struct hnode *node, const void *key, size_t keylen);

int htab_init(struct htab *t, size_t nb);
void htab_free(struct htab *t);
uint64_t htab_hash(const struct htab *t, const void *key, size_t keylen);
struct hnode *htab_find(const struct htab *t, uint64_t hash, const void *key, size_t keylen,
			htab_eq_fn eq);
void htab_add(struct htab *t, struct hnode *node, uint64_t hash); /* grows as needed */
void htab_del(struct htab *t, struct hnode *node);

#endif
