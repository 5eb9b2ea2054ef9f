/* The short-lived cache of which relay holds which name, so that a burst of players for a name
 * held elsewhere costs one Redis lookup, not one each (--route-cache-ms, 0 turns it off).
 *
 * forward.c caches live routes only (an answer for a name nobody holds needs its cached status,
 * which comes with the lookup). Contract: an entry answers for route_cache_ms (a quarter of that for "nobody holds it": its
 * agent may be connecting); the cache holds at most ROUTE_CACHE_MAX names, oldest dropped first.
 * Entries returned by route_cache_get are valid until the next put or drop. */
#ifndef DVV_ROUTE_CACHE_H
#define DVV_ROUTE_CACHE_H

#include "relay.h"

#define ROUTE_CACHE_MAX 65536

struct route_entry {
	struct hnode hn;	    /* r->routes, keyed by hostname */
	struct dlist fifo;	    /* r->route_fifo: oldest first, for the size cap */
	uint64_t expires_ms;
	bool found;		    /* false: nobody holds the name */
	uint64_t epoch;		    /* fencing epoch of the owner's lease */
	char instance[66];	    /* owning relay's instance id */
	char addr[130];		    /* its internal address */
	char host[256];
};

int route_cache_init(struct relay *r);
void route_cache_free(struct relay *r);
const struct route_entry *route_cache_get(struct relay *r, const char *host);
void route_cache_put(struct relay *r, const char *host, bool found, const char *instance,
		     uint64_t epoch, const char *addr);
void route_cache_drop(struct relay *r, const char *host);

#endif
