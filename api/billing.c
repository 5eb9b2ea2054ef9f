/* Stripe billing for dvv-api: POST /v1/billing/checkout (a Checkout Session for a paid plan),
 * POST /v1/billing/portal (Stripe's customer portal) and POST /v1/stripe/webhook (Stripe's
 * events turned into plan changes).
 *
 * A webhook is applied in ONE PostgreSQL transaction: the event id is inserted into
 * stripe_events first (a redelivery finds it and changes nothing), then the effect, which goes
 * through account_set_plan so the audit row and the Redis outbox row commit with it. Stripe
 * retries anything that did not get a 2xx, so a crash or a database error at any point loses
 * nothing and applies nothing twice. Stripe does not deliver in order: each subscription keeps
 * the `created` of the newest event applied to it and older ones are recorded but not applied.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "account.h"
#include "api.h"
#include "apiint.h"
#include "billing.h"
#include "db.h"
#include "log.h"
#include "plans.h"
#include "rstore.h"
#include "stripe.h"

/* What an event does to the user's plan, decided from the event and the subscription row. */
struct bill_user {
	char id[ID_LEN + 1];
	char tier[17];
	char status[16];
	int64_t period_start, period_end;
};

static bool stripe_configured(const struct api_cfg *cfg)
{
	return cfg->stripe_api && *cfg->stripe_api && cfg->stripe_secret_key &&
	       *cfg->stripe_secret_key;
}

/* The checks before any call to Stripe for a user: logged in, billing configured. false has
 * answered out. */
static bool bill_ready(const struct api_cfg *cfg, const struct api_req *r, struct api_resp *out)
{
	if (!r->user_id) {
		api_error(out, 401, "unauthorized", "log in first");
		return false;
	}
	if (!stripe_configured(cfg)) {
		api_error(out, 503, "unavailable", "billing is not configured on this server");
		return false;
	}
	return true;
}

static int64_t to_i64(const char *s)
{
	return s && *s ? strtoll(s, NULL, 10) : 0;
}

/* ---- checkout ----------------------------------------------------------------------------- */

/* The user's email and Stripe customer (customer "" if none yet); -ENOENT, -EIO. Also -EEXIST
 * when the user already has a live subscription (a second one would bill twice). */
static int bill_user_for_checkout(PGconn *c, const char *user_id, char *email, size_t elen,
				  char *customer, size_t clen)
{
	const char *q[1] = {user_id};
	PGresult *r = db_exec(c,
			      "SELECT email, coalesce(stripe_customer, ''), EXISTS (SELECT 1 FROM "
			      "subscriptions s WHERE s.user_id = u.id AND s.status IN ('active', "
			      "'trialing', 'past_due')) FROM users u WHERE id = $1",
			      1, q);
	int ret = -EIO;

	if (!r)
		return ret;
	ret = -ENOENT;
	if (PQntuples(r) != 1)
		goto out;
	snprintf(email, elen, "%s", PQgetvalue(r, 0, 0));
	snprintf(customer, clen, "%s", PQgetvalue(r, 0, 1));
	ret = !strcmp(PQgetvalue(r, 0, 2), "t") ? -EEXIST : 0;
out:
	PQclear(r);
	return ret;
}

/* Stores a customer created for user_id unless a concurrent request stored one first; answers
 * the one that is stored. 0 or -EIO. */
static int bill_store_customer(PGconn *c, const char *user_id, char *customer, size_t clen)
{
	const char *q[2] = {user_id, customer};
	PGresult *r = db_exec(c,
			      "UPDATE users SET stripe_customer = coalesce(stripe_customer, $2) "
			      "WHERE id = $1 RETURNING stripe_customer",
			      2, q);
	int ret = -EIO;

	if (r && PQntuples(r) == 1) {
		snprintf(customer, clen, "%s", PQgetvalue(r, 0, 0));
		ret = 0;
	}
	PQclear(r);
	return ret;
}

static void bill_random_hex(char *out, size_t bytes)
{
	unsigned char b[32];
	if (bytes > sizeof(b))
		bytes = sizeof(b);
	if (RAND_bytes(b, (int)bytes) != 1)
		memset(b, 0, sizeof(b)); /* only an idempotency key: uniqueness, not secrecy */
	for (size_t i = 0; i < bytes; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
}

void billing_checkout(struct api *a, const struct api_req *r, struct api_resp *out)
{
	const struct api_cfg *cfg = api_cfg(a);
	struct stripe_client sc = {cfg->stripe_api, cfg->stripe_secret_key, 0};
	char email[320], customer[256], idem[96], id[256], url[1024], err[256];
	char success[512], cancel[512], rnd[33];
	const struct plan *pl;
	json_t *body = NULL;
	PGconn *c = NULL;
	int ret;

	if (!bill_ready(cfg, r, out))
		return;
	body = api_parse_body(r, out);
	if (!body)
		return;
	const char *tier = json_string_value(json_object_get(body, "plan"));
	if (!tier) {
		api_error(out, 400, "invalid_field", "\"plan\" must be the name of a plan");
		goto out;
	}
	pl = plans_valid_tier(tier) ? plans_find(cfg->plans, tier) : NULL;
	if (!pl || !pl->stripe_price[0]) {
		api_error(out, 400, "invalid_field", "\"plan\" must name a plan that is for sale");
		goto out;
	}

	c = db_get_or_503(a, out);
	if (!c)
		goto out;
	ret = bill_user_for_checkout(c, r->user_id, email, sizeof(email), customer,
				     sizeof(customer));
	db_put(a, c, ret == -EIO);
	c = NULL; /* no connection held across the calls to Stripe */
	if (ret == -EEXIST) {
		api_error(out, 409, "already_subscribed",
			  "this account already has a subscription: change it from the billing "
			  "portal");
		goto out;
	}
	if (ret) {
		api_error(out, ret == -ENOENT ? 401 : 500, ret == -ENOENT ? "unauthorized" : "internal",
			  "could not read the account");
		goto out;
	}

	if (!customer[0]) {
		/* the key makes concurrent first checkouts of one user create one customer */
		snprintf(idem, sizeof(idem), "dvv-customer-%s", r->user_id);
		ret = stripe_create_customer(&sc, email, r->user_id, idem, customer,
					     sizeof(customer), err, sizeof(err));
		if (ret) {
			pr_warn("billing: creating the Stripe customer of %s: %s", r->user_id, err);
			api_error(out, 503, "unavailable", "the payment provider is unavailable, try "
							   "again");
			goto out;
		}
		c = db_get(a);
		ret = c ? bill_store_customer(c, r->user_id, customer, sizeof(customer)) : -EAGAIN;
		if (c)
			db_put(a, c, ret == -EIO);
		c = NULL;
		if (ret) {
			api_error(out, 503, "unavailable", "database unavailable");
			goto out;
		}
	}

	bill_random_hex(rnd, 16);
	snprintf(idem, sizeof(idem), "dvv-checkout-%s-%s", r->user_id, rnd);
	snprintf(success, sizeof(success), "%s/?checkout=success", cfg->public_url);
	snprintf(cancel, sizeof(cancel), "%s/?checkout=cancel", cfg->public_url);
	struct stripe_checkout_req req = {
		.customer = customer,
		.price = pl->stripe_price,
		.user_id = r->user_id,
		.plan = pl->tier,
		.success_url = success,
		.cancel_url = cancel,
		.idem_key = idem,
	};
	ret = stripe_create_checkout(&sc, &req, id, sizeof(id), url, sizeof(url), err, sizeof(err));
	if (ret) {
		pr_warn("billing: creating a checkout session for %s: %s", r->user_id, err);
		api_error(out, 503, "unavailable", "the payment provider is unavailable, try again");
		goto out;
	}
	pr_info("billing: checkout %s for %s (plan %s)", id, r->user_id, pl->tier);
	out->status = 200;
	out->json = json_pack("{s:s,s:s}", "id", id, "url", url);
	if (!out->json)
		api_error(out, 500, "internal", "out of memory");
out:
	json_decref(body);
}

void billing_portal(struct api *a, const struct api_req *r, struct api_resp *out)
{
	const struct api_cfg *cfg = api_cfg(a);
	struct stripe_client sc = {cfg->stripe_api, cfg->stripe_secret_key, 0};
	char email[320], customer[256], url[1024], ret_url[512], err[256];
	PGconn *c;
	int ret;

	if (!bill_ready(cfg, r, out))
		return;
	c = db_get_or_503(a, out);
	if (!c)
		return;
	ret = bill_user_for_checkout(c, r->user_id, email, sizeof(email), customer,
				     sizeof(customer));
	db_put(a, c, ret == -EIO);
	if (ret && ret != -EEXIST) {
		api_error(out, 500, "internal", "could not read the account");
		return;
	}
	if (!customer[0]) {
		api_error(out, 404, "not_found", "this account has no billing history yet");
		return;
	}
	snprintf(ret_url, sizeof(ret_url), "%s/", cfg->public_url);
	ret = stripe_create_portal(&sc, customer, ret_url, url, sizeof(url), err, sizeof(err));
	if (ret) {
		pr_warn("billing: creating a portal session for %s: %s", r->user_id, err);
		api_error(out, 503, "unavailable", "the payment provider is unavailable, try again");
		return;
	}
	out->status = 200;
	out->json = json_pack("{s:s}", "url", url);
	if (!out->json)
		api_error(out, 500, "internal", "out of memory");
}

/* ---- webhook ------------------------------------------------------------------------------ */

/* Reads and locks the user (FOR UPDATE: one plan decision per user at a time). 0, -ENOENT,
 * -EIO. */
static int bill_lock_user(PGconn *c, const char *user_id, struct bill_user *u)
{
	const char *q[1] = {user_id};
	PGresult *r = db_exec(c,
			      "SELECT id, tier, plan_status, coalesce(period_start, 0), "
			      "coalesce(period_end, 0) FROM users WHERE id = $1 FOR UPDATE",
			      1, q);
	int ret = -EIO;

	if (!r)
		return ret;
	ret = -ENOENT;
	if (PQntuples(r) == 1) {
		snprintf(u->id, sizeof(u->id), "%s", PQgetvalue(r, 0, 0));
		snprintf(u->tier, sizeof(u->tier), "%s", PQgetvalue(r, 0, 1));
		snprintf(u->status, sizeof(u->status), "%s", PQgetvalue(r, 0, 2));
		u->period_start = to_i64(PQgetvalue(r, 0, 3));
		u->period_end = to_i64(PQgetvalue(r, 0, 4));
		ret = 0;
	}
	PQclear(r);
	return ret;
}

/* One text column of a one-row query into out ("" when no row). 0 or -EIO. */
static int bill_query1(PGconn *c, const char *sql, const char *arg, char *out, size_t len)
{
	const char *q[1] = {arg};
	PGresult *r = db_exec(c, sql, 1, q);

	out[0] = '\0';
	if (!r)
		return -EIO;
	if (PQntuples(r) >= 1)
		snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return 0;
}

/* The user an event is about, in trust order: the id we put in the checkout session
 * (client_reference_id, metadata.user_id, both signed by Stripe), the subscription we already
 * linked, the customer we created. "" when none is ours. 0 or -EIO. */
static int bill_resolve_user(PGconn *c, const struct stripe_event *ev, const char *sub,
			     struct bill_user *u)
{
	char id[ID_LEN + 2] = "";
	int ret;

	const char *given = ev->client_reference_id[0] ? ev->client_reference_id : ev->user_id;
	size_t n = strlen(given);
	if (n && n <= ID_LEN)
		memcpy(id, given, n + 1);
	if (!id[0] && sub[0] &&
	    (ret = bill_query1(c, "SELECT user_id FROM subscriptions WHERE id = $1", sub, id,
			       sizeof(id))))
		return ret;
	if (!id[0] && ev->customer[0] &&
	    (ret = bill_query1(c, "SELECT id FROM users WHERE stripe_customer = $1", ev->customer,
			       id, sizeof(id))))
		return ret;
	u->id[0] = '\0';
	if (!id[0])
		return 0;
	ret = bill_lock_user(c, id, u);
	return ret == -ENOENT ? 0 : ret;
}

/* Links the customer to the user unless it already belongs to another user. 0 or -EIO. */
static int bill_link_customer(PGconn *c, const char *user_id, const char *customer)
{
	if (!customer[0])
		return 0;
	const char *q[2] = {user_id, customer};
	return db_run(c,
		      "UPDATE users SET stripe_customer = $2 WHERE id = $1 AND "
		      "stripe_customer IS DISTINCT FROM $2 AND NOT EXISTS (SELECT 1 FROM "
		      "users o WHERE o.stripe_customer = $2 AND o.id <> $1)",
		      2, q);
}

struct bill_sub {
	bool found;
	int64_t last_created;
	bool seen_sub_event; /* a customer.subscription.* event was applied (price known) */
	int64_t period_start, period_end;
	char status[32];
};

/* Creates the subscription row if missing (owned by user_id), then locks and reads it. */
static int bill_lock_sub(PGconn *c, const char *sub, const char *user_id, const char *customer,
			 struct bill_sub *s)
{
	const char *q[3] = {sub, user_id, customer};
	PGresult *r;

	if (db_run(c,
		   "INSERT INTO subscriptions (id, user_id, customer, status) VALUES "
		   "($1, $2, $3, 'incomplete') ON CONFLICT (id) DO NOTHING",
		   3, q))
		return -EIO;
	r = db_exec(c,
		    "SELECT last_event_created, price IS NOT NULL, coalesce(period_start, 0), "
		    "coalesce(period_end, 0), status FROM subscriptions WHERE id = $1 FOR UPDATE",
		    1, q);
	if (!r)
		return -EIO;
	memset(s, 0, sizeof(*s));
	if (PQntuples(r) == 1) {
		s->found = true;
		s->last_created = to_i64(PQgetvalue(r, 0, 0));
		s->seen_sub_event = !strcmp(PQgetvalue(r, 0, 1), "t");
		s->period_start = to_i64(PQgetvalue(r, 0, 2));
		s->period_end = to_i64(PQgetvalue(r, 0, 3));
		snprintf(s->status, sizeof(s->status), "%s", PQgetvalue(r, 0, 4));
	}
	PQclear(r);
	return 0;
}

/* Records what a subscription event says (and that it is the newest applied). */
static int bill_update_sub(PGconn *c, const char *sub, const struct stripe_event *ev,
			   const char *status, bool from_sub_event)
{
	char created[24], ps[24], pe[24];
	snprintf(created, sizeof(created), "%" PRId64, ev->created);
	snprintf(ps, sizeof(ps), "%" PRId64, ev->period_start);
	snprintf(pe, sizeof(pe), "%" PRId64, ev->period_end);
	const char *q[6] = {sub, status, from_sub_event && ev->price[0] ? ev->price : NULL,
			    from_sub_event && ev->period_end ? ps : NULL,
			    from_sub_event && ev->period_end ? pe : NULL, created};
	return db_run(c,
		      "UPDATE subscriptions SET status = $2, price = coalesce($3, price), "
		      "period_start = coalesce($4::bigint, period_start), period_end = "
		      "coalesce($5::bigint, period_end), last_event_created = "
		      "greatest(last_event_created, $6::bigint), updated_at = now() WHERE id = $1",
		      6, q);
}

/* Whether the user has another subscription that still pays for a plan. */
static int bill_other_live_sub(PGconn *c, const char *user_id, const char *sub, bool *live)
{
	const char *q[2] = {user_id, sub};
	PGresult *r = db_exec(c,
			      "SELECT 1 FROM subscriptions WHERE user_id = $1 AND id <> $2 AND "
			      "status IN ('active', 'trialing', 'past_due')",
			      2, q);
	if (!r)
		return -EIO;
	*live = PQntuples(r) > 0;
	PQclear(r);
	return 0;
}

static int bill_set(PGconn *c, const struct plans *p, const struct bill_user *u,
		    const char *tier, const char *status, int64_t ps, int64_t pe,
		    const struct stripe_event *ev)
{
	int ret = account_set_plan(c, p, u->id, tier, status, ps, pe, "stripe", ev->id);
	if (!ret && (strcmp(tier, u->tier) || strcmp(status, u->status)))
		pr_info("billing: %s %s/%s -> %s/%s (%s %s)", u->id, u->tier, u->status, tier,
			status, ev->type, ev->id);
	return ret;
}

static int bill_checkout_completed(PGconn *c, const struct plans *p,
				   const struct stripe_event *ev, const struct bill_user *u)
{
	struct bill_sub s;
	int ret = bill_link_customer(c, u->id, ev->customer);

	if (ret || strcmp(ev->mode, "subscription") || !ev->subscription[0])
		return ret;
	ret = bill_lock_sub(c, ev->subscription, u->id, ev->customer, &s);
	/* once a customer.subscription.* event has been applied, the subscription's own events
	 * own the state: the checkout (often delivered after them) only linked the customer */
	if (ret || s.seen_sub_event)
		return ret;
	bool paid = !strcmp(ev->payment_status, "paid") ||
		    !strcmp(ev->payment_status, "no_payment_required");
	if (!paid)
		return 0;
	/* the session carries no price: the paid plan the checkout was created for */
	const struct plan *pl = plans_valid_tier(ev->plan) ? plans_find(p, ev->plan) : NULL;
	if (!pl || !pl->stripe_price[0]) {
		pr_warn("billing: %s: checkout for an unknown plan \"%.16s\", not applied", ev->id,
			ev->plan);
		return 0;
	}
	/* not the newest event of the subscription: its created is not recorded, so the
	 * subscription's own events (created before the session completed) still apply */
	const char *q[1] = {ev->subscription};
	PGresult *r = db_exec(c,
			      "UPDATE subscriptions SET status = 'active', updated_at = now() "
			      "WHERE id = $1",
			      1, q);
	if (!r)
		return -EIO;
	PQclear(r);
	return bill_set(c, p, u, pl->tier, "active", 0, 0, ev);
}

static int bill_subscription(PGconn *c, const struct plans *p, const struct stripe_event *ev,
			     const struct bill_user *u)
{
	struct bill_sub s;
	bool deleted = !strcmp(ev->type, "customer.subscription.deleted");
	const char *st = deleted ? "canceled" : ev->status;
	int ret = bill_link_customer(c, u->id, ev->customer);

	ret = ret ?: bill_lock_sub(c, ev->object_id, u->id, ev->customer, &s);
	if (ret)
		return ret;
	if (ev->created < s.last_created) {
		pr_info("billing: %s (%s, created %" PRId64 ") older than the last applied "
			"event of %s (%" PRId64 "): recorded, not applied",
			ev->id, ev->type, ev->created, ev->object_id, s.last_created);
		return 0;
	}
	ret = bill_update_sub(c, ev->object_id, ev, st, true);
	if (ret)
		return ret;

	if (!deleted && (!strcmp(st, "active") || !strcmp(st, "trialing"))) {
		const struct plan *pl = plans_by_stripe_price(p, ev->price);
		if (!pl) {
			pr_warn("billing: %s: price \"%.64s\" is in no plan, not applied", ev->id,
				ev->price);
			return 0;
		}
		return bill_set(c, p, u, pl->tier, "active", ev->period_start, ev->period_end, ev);
	}
	if (!deleted && !strcmp(st, "past_due")) {
		const struct plan *pl = plans_by_stripe_price(p, ev->price);
		const char *tier = pl ? pl->tier : u->tier;
		return bill_set(c, p, u, tier, "past_due", ev->period_start, ev->period_end, ev);
	}
	if (deleted || !strcmp(st, "canceled") || !strcmp(st, "unpaid") ||
	    !strcmp(st, "incomplete_expired") || !strcmp(st, "paused")) {
		bool live;
		ret = bill_other_live_sub(c, u->id, ev->object_id, &live);
		if (ret || live)
			return ret; /* another subscription still pays for the plan */
		return bill_set(c, p, u, plans_default(p)->tier, "canceled", 0, 0, ev);
	}
	return 0; /* incomplete: the first payment is still pending; nothing changes yet */
}

static int bill_invoice(PGconn *c, const struct plans *p, const struct stripe_event *ev,
			const struct bill_user *u)
{
	struct bill_sub s;
	bool failed = !strcmp(ev->type, "invoice.payment_failed");
	int ret;

	if (!ev->subscription[0])
		return 0; /* a one-off invoice: no plan attached */
	ret = bill_lock_sub(c, ev->subscription, u->id, ev->customer, &s);
	if (ret)
		return ret;
	if (ev->created < s.last_created) {
		pr_info("billing: %s (%s) older than the last applied event of %s: recorded, not "
			"applied",
			ev->id, ev->type, ev->subscription);
		return 0;
	}
	const struct plan *cur = plans_find(p, u->tier);
	if (!cur || !cur->stripe_price[0])
		return 0; /* the user is not on a paid plan (canceled meanwhile) */
	if (failed) {
		ret = bill_update_sub(c, ev->subscription, ev, "past_due", false);
		return ret ?: bill_set(c, p, u, u->tier, "past_due", u->period_start,
				       u->period_end, ev);
	}
	if (strcmp(u->status, "past_due"))
		return 0; /* paid while already active: the renewal's subscription event sets
			   * the new period */
	ret = bill_update_sub(c, ev->subscription, ev, "active", false);
	return ret ?: bill_set(c, p, u, u->tier, "active", u->period_start, u->period_end, ev);
}

/* Applies one verified, parsed event inside the caller's transaction. 0 or -errno (the
 * transaction is then rolled back and Stripe retries). */
static int bill_apply(PGconn *c, const struct plans *p, const struct stripe_event *ev)
{
	struct bill_user u;
	const char *sub = ev->kind == STRIPE_OBJ_SUBSCRIPTION ? ev->object_id : ev->subscription;
	bool handled = !strcmp(ev->type, "checkout.session.completed") ||
		       !strcmp(ev->type, "customer.subscription.created") ||
		       !strcmp(ev->type, "customer.subscription.updated") ||
		       !strcmp(ev->type, "customer.subscription.deleted") ||
		       !strcmp(ev->type, "invoice.payment_failed") ||
		       !strcmp(ev->type, "invoice.paid");
	int ret;

	if (!handled)
		return 0; /* recorded as seen; Stripe may send types we did not subscribe to */
	if ((!strncmp(ev->type, "checkout.", 9) && ev->kind != STRIPE_OBJ_CHECKOUT_SESSION) ||
	    (!strncmp(ev->type, "customer.subscription.", 22) &&
	     ev->kind != STRIPE_OBJ_SUBSCRIPTION) ||
	    (!strncmp(ev->type, "invoice.", 8) && ev->kind != STRIPE_OBJ_INVOICE)) {
		pr_warn("billing: %s: %s carries the wrong object, ignored", ev->id, ev->type);
		return 0;
	}
	ret = bill_resolve_user(c, ev, sub, &u);
	if (ret)
		return ret;
	if (!u.id[0]) {
		/* a customer of another product on the same Stripe account, or a deleted user */
		pr_info("billing: %s (%s) is about no user of ours: recorded, not applied", ev->id,
			ev->type);
		return 0;
	}
	switch (ev->kind) {
	case STRIPE_OBJ_CHECKOUT_SESSION:
		return bill_checkout_completed(c, p, ev, &u);
	case STRIPE_OBJ_SUBSCRIPTION:
		return bill_subscription(c, p, ev, &u);
	case STRIPE_OBJ_INVOICE:
		return bill_invoice(c, p, ev, &u);
	default:
		return 0;
	}
}

void billing_webhook(struct api *a, const struct api_req *r, struct api_resp *out)
{
	const struct api_cfg *cfg = api_cfg(a);
	struct stripe_event ev;
	char err[256], created[24];
	PGconn *c = NULL;
	PGresult *res = NULL;
	bool broken = false;
	int ret;

	if (!cfg->stripe_webhook_secret || !*cfg->stripe_webhook_secret) {
		api_error(out, 503, "unavailable", "billing is not configured on this server");
		return;
	}
	ret = stripe_verify_signature(cfg->stripe_webhook_secret, r->body, r->body_len,
				      api_header(r, "Stripe-Signature"), wall_s(),
				      cfg->stripe_tolerance_s > 0 ? cfg->stripe_tolerance_s : 300,
				      err, sizeof(err));
	if (ret) {
		pr_rl(LOG_WARN, "billing: webhook from %s refused: %s", r->client_ip, err);
		api_error(out, 400, "bad_signature", "%s", err);
		return;
	}
	ret = stripe_event_parse(r->body, r->body_len, &ev, err, sizeof(err));
	if (ret) {
		pr_rl(LOG_WARN, "billing: signed webhook not understood: %s", err);
		api_error(out, 400, "invalid_json", "%s", err);
		return;
	}

	c = db_get_or_503(a, out);
	if (!c)
		return;
	if (db_begin(c)) {
		broken = true;
		goto fail;
	}
	snprintf(created, sizeof(created), "%" PRId64, ev.created);
	const char *q[3] = {ev.id, ev.type, created};
	res = db_exec(c,
		      "INSERT INTO stripe_events (id, type, created) VALUES ($1, $2, $3::bigint) "
		      "ON CONFLICT (id) DO NOTHING",
		      3, q);
	if (!res) {
		broken = true;
		goto fail;
	}
	if (!strcmp(PQcmdTuples(res), "0")) {
		/* delivered before (a retry after a lost answer, or a concurrent duplicate that
		 * waited on our row lock and found it committed) */
		db_rollback(c);
		out->status = 200;
		out->json = json_pack("{s:b,s:b}", "received", 1, "duplicate", 1);
		goto out;
	}
	ret = bill_apply(c, cfg->plans, &ev);
	if (ret) {
		pr_warn("billing: %s (%s) not applied (%s): Stripe will retry", ev.id, ev.type,
			strerror(-ret));
		goto fail;
	}
	if (db_commit(c)) {
		broken = true;
		goto fail;
	}
	rstore_kick(a->rs); /* the relays learn the plan within a second */
	out->status = 200;
	out->json = json_pack("{s:b}", "received", 1);
	goto out;
fail:
	db_rollback(c);
	api_error(out, 500, "internal", "the event could not be applied; retry");
out:
	PQclear(res);
	db_put(a, c, broken);
}
