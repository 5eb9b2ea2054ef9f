-- dvv-api core schema: accounts, sessions, tunnels, agent tokens, the plan audit trail and the
-- Redis outbox. Applied once, inside the migration transaction (see api/db.c).

CREATE TABLE users (
	id            text PRIMARY KEY,
	email         text NOT NULL,
	password_hash text NOT NULL,
	tier          text NOT NULL,
	plan_status   text NOT NULL DEFAULT 'active'
	              CHECK (plan_status IN ('active', 'past_due', 'canceled')),
	period_start  bigint,          -- unix seconds; NULL = the current UTC calendar month
	period_end    bigint,
	created_at    timestamptz NOT NULL DEFAULT now()
);
-- one account per address, whatever its case
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE sessions (
	hash       bytea PRIMARY KEY,  -- SHA-256 of the session secret, never the secret
	user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	created_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE tunnels (
	id         text PRIMARY KEY,
	user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	label      text,               -- reserved custom subdomain label
	state      text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'suspended')),
	created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	deleted_at timestamptz         -- deleted tunnels stay blocked at the relays
);
CREATE INDEX tunnels_user ON tunnels (user_id, created_at);
-- a label belongs to at most one live tunnel
CREATE UNIQUE INDEX tunnels_label_key ON tunnels (label) WHERE label IS NOT NULL AND deleted_at IS NULL;

CREATE TABLE agent_tokens (
	id         text PRIMARY KEY,   -- the JWT's jti
	user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	tunnel_id  text NOT NULL REFERENCES tunnels (id) ON DELETE CASCADE,
	created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	expires_at timestamptz NOT NULL,
	revoked_at timestamptz
);
CREATE INDEX agent_tokens_user ON agent_tokens (user_id, created_at);
CREATE INDEX agent_tokens_tunnel ON agent_tokens (tunnel_id);

CREATE TABLE plan_changes (
	id           bigserial PRIMARY KEY,
	user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	from_tier    text,
	to_tier      text NOT NULL,
	from_status  text,
	to_status    text NOT NULL,
	source       text NOT NULL CHECK (source IN ('signup', 'stripe', 'admin')),
	stripe_event text,
	at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plan_changes_user ON plan_changes (user_id, at);

-- Changes that the relays must learn: written in the same transaction as the change, pushed to
-- Redis by the sync thread, then deleted.
CREATE TABLE redis_outbox (
	id         bigserial PRIMARY KEY,
	user_id    text NOT NULL,
	events     jsonb NOT NULL DEFAULT '[]',
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX redis_outbox_user ON redis_outbox (user_id, id);
