/* The route cache: hostname -> owning relay (instance, epoch, internal address), as the last
 * Redis lookup said, for a short time. route_cache.h is the contract. */
#include "route_cache.h"
#include "metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool route_eq(const struct hnode *n, const void *key, size_t len)
{
	const struct route_entry *e = container_of(n, struct route_entry, hn);
	return strlen(e->host) == len && !memcmp(e->host, key, len);
}

static void route_del(struct relay *r, struct route_entry *e)
{
	htab_del(&r->routes, &e->hn);
	dlist_del(&e->fifo);
	r->nroutes--;
	free(e);
}

static struct route_entry *route_find(struct relay *r, const char *host)
{
	size_t len = strlen(host);
	struct hnode *n = htab_find(&r->routes, htab_hash(&r->routes, host, len), host, len, route_eq);
	return n ? container_of(n, struct route_entry, hn) : NULL;
}

int route_cache_init(struct relay *r)
{
	dlist_init(&r->route_fifo);
	return htab_init(&r->routes, 1024) ? -ENOMEM : 0;
}

void route_cache_free(struct relay *r)
{
	if (!r->route_fifo.next)
		return; /* route_cache_init never ran */
	while (!dlist_empty(&r->route_fifo))
		route_del(r, container_of(r->route_fifo.next, struct route_entry, fifo));
	htab_free(&r->routes);
}

const struct route_entry *route_cache_get(struct relay *r, const char *host)
{
	struct route_entry *e = route_find(r, host);
	if (!e)
		return NULL;
	if (e->expires_ms <= r->loop.now) {
		route_del(r, e);
		return NULL;
	}
	M_INC(route_cache_hits_total);
	return e;
}

void route_cache_put(struct relay *r, const char *host, bool found, const char *instance,
		     uint64_t epoch, const char *addr)
{
	if (r->cfg.route_cache_ms <= 0 || strlen(host) >= sizeof(((struct route_entry *)0)->host))
		return;
	struct route_entry *e = route_find(r, host);
	if (!e) {
		if (r->nroutes >= ROUTE_CACHE_MAX)
			route_del(r, container_of(r->route_fifo.next, struct route_entry, fifo));
		if (!(e = calloc(1, sizeof(*e))))
			return;
		snprintf(e->host, sizeof(e->host), "%s", host);
		htab_add(&r->routes, &e->hn, htab_hash(&r->routes, host, strlen(host)));
		r->nroutes++;
	} else {
		dlist_del(&e->fifo);
	}
	dlist_add_tail(&r->route_fifo, &e->fifo);
	/* a name nobody holds is cached for a shorter time: its agent may be connecting */
	e->expires_ms = r->loop.now + (uint64_t)(found ? r->cfg.route_cache_ms : r->cfg.route_cache_ms / 4);
	e->found = found;
	e->epoch = epoch;
	snprintf(e->instance, sizeof(e->instance), "%s", found ? instance : "");
	snprintf(e->addr, sizeof(e->addr), "%s", found ? addr : "");
}

void route_cache_drop(struct relay *r, const char *host)
{
	struct route_entry *e = route_find(r, host);
	if (e)
		route_del(r, e);
}
