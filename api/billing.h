/* Billing (Stripe) handlers the router dispatches to: POST /v1/billing/checkout (session
 * required; r->user_id set) and POST /v1/stripe/webhook (no session; Stripe-Signature). */
#ifndef DVV_API_BILLING_H
#define DVV_API_BILLING_H

#include "api.h"

void billing_checkout(struct api *a, const struct api_req *r, struct api_resp *out);
void billing_webhook(struct api *a, const struct api_req *r, struct api_resp *out);
/* POST /v1/billing/portal (session required): {"url"} of a Stripe customer portal session. */
void billing_portal(struct api *a, const struct api_req *r, struct api_resp *out);

#endif /* DVV_API_BILLING_H */
