/* Plans: the tiers, their limits and prices, loaded from deploy/plans.json (never in code).
 * Loading validates everything (tier names [a-z0-9_-]{1,16}, numbers in range, a default that
 * exists, at most PLANS_MAX tiers) and says which field is wrong. Immutable once loaded: safe to
 * read from every thread. */
#ifndef DVV_API_PLANS_H
#define DVV_API_PLANS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PLANS_MAX 16

struct plan {
	char tier[17];
	char title[64];
	int max_tunnels, max_players, idle_timeout_s, priority;
	bool custom_names;
	uint64_t bandwidth_bytes;
	int price_cents;
	char currency[8];
	char stripe_price[128];
};

struct plans {
	struct plan plan[PLANS_MAX];
	int n;
	int def; /* index of the default plan */
};

/* Parse a plans document. 0, or -EINVAL with a message in err. */
int plans_parse(const char *text, size_t len, struct plans *out, char *err, size_t errlen);
int plans_load(const char *path, struct plans *out, char *err, size_t errlen);

const struct plan *plans_find(const struct plans *p, const char *tier);
const struct plan *plans_by_stripe_price(const struct plans *p, const char *price);
const struct plan *plans_default(const struct plans *p);
bool plans_valid_tier(const char *s);

#endif /* DVV_API_PLANS_H */
