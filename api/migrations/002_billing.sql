-- dvv-api billing schema (Stripe): the webhook events already seen (idempotency), the
-- subscriptions they describe (ordering), and each user's Stripe customer.

ALTER TABLE users ADD COLUMN stripe_customer text;
CREATE UNIQUE INDEX users_stripe_customer_key ON users (stripe_customer)
	WHERE stripe_customer IS NOT NULL;

-- One row per Stripe event id, inserted in the same transaction as the event's effect: a
-- redelivered event finds its row and changes nothing.
CREATE TABLE stripe_events (
	id          text PRIMARY KEY,
	type        text NOT NULL,
	created     bigint NOT NULL,   -- the event's `created` (unix seconds)
	received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscriptions (
	id                 text PRIMARY KEY,   -- sub_...
	user_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	customer           text NOT NULL,
	status             text NOT NULL,      -- Stripe's status, as last applied
	price              text,
	period_start       bigint,
	period_end         bigint,
	-- `created` of the newest event applied to this subscription: older ones arrive late
	-- (Stripe does not order deliveries) and are recorded but not applied
	last_event_created bigint NOT NULL DEFAULT 0,
	updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_user ON subscriptions (user_id);
