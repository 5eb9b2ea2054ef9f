/* The billing routes before Stripe billing is built in: both answer 503 unavailable, so the
 * router and the rest of the API build and run without it. */
#include "billing.h"

void billing_checkout(struct api *a, const struct api_req *r, struct api_resp *out)
{
	api_error(out, 503, "unavailable", "billing is not available on this server");
}

void billing_webhook(struct api *a, const struct api_req *r, struct api_resp *out)
{
	api_error(out, 503, "unavailable", "billing is not available on this server");
}
