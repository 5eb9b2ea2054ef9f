/* The intrusive doubly linked list every module uses: a struct dlist sits inside the object, a
 * struct dlist head in its owner, and container_of() gets back from node to object. Contract:
 * a head is dlist_init()ed before use; a node is in at most one list through one dlist member;
 * dlist_del() leaves the node unlinked (both pointers NULL), so deleting it again, or deleting
 * a zeroed node that was never added, does nothing. Not thread-safe: the owner's lock or thread
 * protects it. */
#ifndef DVV_LIST_H
#define DVV_LIST_H

#include <stdbool.h>
#include <stddef.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

struct dlist {
	struct dlist *prev, *next;
};

static inline void dlist_init(struct dlist *h) { h->prev = h->next = h; }
static inline bool dlist_empty(const struct dlist *h) { return h->next == h; }

/* Insert n before h: at the end of the list headed by h. */
static inline void dlist_add_tail(struct dlist *h, struct dlist *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}

/* Insert n after h: at the front of the list headed by h. */
static inline void dlist_add_head(struct dlist *h, struct dlist *n) { dlist_add_tail(h->next, n); }

static inline void dlist_del(struct dlist *n)
{
	if (!n->next)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
}

/* Move every node of from to the end of to; from is left empty. */
static inline void dlist_splice_tail(struct dlist *from, struct dlist *to)
{
	if (dlist_empty(from))
		return;
	from->next->prev = to->prev;
	to->prev->next = from->next;
	from->prev->next = to;
	to->prev = from->prev;
	dlist_init(from);
}

/* The object holding the first node of h, or NULL when h is empty. */
#define dlist_first(h, type, member)                                                           \
	(dlist_empty(h) ? NULL : container_of((h)->next, type, member))

/* Walk the nodes of h with `struct dlist *it`, declared here; the body must not delete it. */
#define dlist_for_each(it, h) for (struct dlist *it = (h)->next; it != (h); it = it->next)

/* The same, but the body may delete it: nx (declared here too) already holds the next node. */
#define dlist_for_each_safe(it, nx, h)                                                         \
	for (struct dlist *it = (h)->next, *nx = it->next; it != (h); it = nx, nx = it->next)

#endif
