/* Stripe, the parts dvv-api needs, with no state of its own:
 *
 *  - stripe_verify_signature: checks a webhook's `Stripe-Signature` header (HMAC-SHA256 of
 *    "<t>.<payload>" with the endpoint's signing secret, every v1 compared in constant time,
 *    the timestamp within the tolerance in both directions);
 *  - stripe_event_parse: the fields of an event (checkout session, subscription or invoice)
 *    that billing acts on, with bounded sizes; everything else in the event is ignored;
 *  - an outbound client (libcurl) for the three calls the API makes: create a customer, create
 *    a Checkout Session (subscription mode), create a billing portal session.
 *
 * Error texts (err, errlen) are for logs and API answers: they never contain the webhook
 * secret, the API key, a signature or a header value. All functions return 0 or -errno.
 * Thread-safe (no globals besides libcurl's, initialised once with stripe_global_init()).
 */
#ifndef DVV_API_STRIPE_H
#define DVV_API_STRIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STRIPE_SIG_HEADER_MAX 1024 /* longer Stripe-Signature headers are refused */
#define STRIPE_SIG_MAX_V1     8	   /* more v1 entries than this are refused */
#define STRIPE_EVENT_MAX      (256 * 1024) /* the parser refuses larger payloads */
#define STRIPE_RESP_MAX	      (256 * 1024) /* outbound answers larger than this are an error */
#define STRIPE_TIMEOUT_S      10

/* 0 if one v1 signature of `header` is HMAC-SHA256(secret, "<t>.<payload>") and |now - t| <=
 * tolerance_s. -EINVAL: header malformed or missing (NULL/empty); -EKEYREJECTED: no v1 matches;
 * -ETIME: timestamp outside the tolerance. */
int stripe_verify_signature(const char *secret, const char *payload, size_t len,
			    const char *header, int64_t now, int tolerance_s, char *err,
			    size_t errlen);

/* The `Stripe-Signature` value for payload signed at `t` (what Stripe sends; tests, tools). */
int stripe_sign(const char *secret, const char *payload, size_t len, int64_t t, char *out,
		size_t outlen);

enum stripe_obj {
	STRIPE_OBJ_OTHER = 0,
	STRIPE_OBJ_CHECKOUT_SESSION,
	STRIPE_OBJ_SUBSCRIPTION,
	STRIPE_OBJ_INVOICE,
};

/* Identifiers are Stripe ids (`evt_…`, `cus_…`, `sub_…`, `price_…`, at most 255 bytes, no
 * control characters); absent fields are "" / 0 / false. */
struct stripe_event {
	char id[256];
	char type[128];
	int64_t created;
	enum stripe_obj kind; /* from data.object.object */
	char object_id[256];  /* data.object.id */
	char customer[256];
	char subscription[256]; /* checkout session, invoice: the subscription it belongs to */
	char user_id[128];	/* metadata.user_id (session, subscription) */
	char client_reference_id[128]; /* checkout session */
	char plan[32];		       /* metadata.plan (checkout session) */
	char mode[32];		       /* checkout session: subscription/payment/setup */
	char payment_status[32];       /* checkout session: paid/unpaid/no_payment_required */
	char status[32];	       /* subscription status; checkout session status */
	int64_t period_start, period_end; /* subscription current period (top level or item) */
	char price[256];		  /* subscription items.data[0].price.id */
	bool cancel_at_period_end;
	int attempt_count; /* invoice */
};

/* Parses a webhook payload. -EINVAL (err says why): not JSON, not an event, a needed field of
 * the wrong type or too long; -E2BIG: payload over STRIPE_EVENT_MAX. */
int stripe_event_parse(const char *json, size_t len, struct stripe_event *out, char *err,
		       size_t errlen);

/* Outbound API client. api_base: e.g. "https://api.stripe.com" (no trailing slash needed). */
struct stripe_client {
	const char *api_base;
	const char *secret_key;
	long timeout_s; /* 0: STRIPE_TIMEOUT_S */
};

int stripe_global_init(void); /* curl_global_init, once per process */

/* POST <api_base>/v1/customers: email, metadata[user_id]. id_out receives `cus_…`. */
int stripe_create_customer(const struct stripe_client *c, const char *email,
			   const char *user_id, const char *idem_key, char *id_out,
			   size_t idlen, char *err, size_t errlen);

struct stripe_checkout_req {
	const char *customer, *price, *user_id, *plan;
	const char *success_url, *cancel_url;
	const char *idem_key;
};

/* POST <api_base>/v1/checkout/sessions, mode=subscription. Fills the session id and its url. */
int stripe_create_checkout(const struct stripe_client *c, const struct stripe_checkout_req *r,
			   char *id_out, size_t idlen, char *url_out, size_t urllen, char *err,
			   size_t errlen);

/* POST <api_base>/v1/billing_portal/sessions: customer, return_url. Fills the url. */
int stripe_create_portal(const struct stripe_client *c, const char *customer,
			 const char *return_url, char *url_out, size_t urllen, char *err,
			 size_t errlen);

/* Appends "&key=value" (or "key=value" if *form is empty) URL-encoded to a growing form
 * string (malloc'd, *form NULL at first). Exposed for the unit tests. */
int stripe_form_add(char **form, const char *key, const char *value);

#endif
