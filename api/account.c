/* Accounts: signup and login (argon2id), sessions, the user's plan and its changes (account.h). */
#include "account.h"
#include "net.h" /* hex_encode */

#include <argon2.h>
#include <errno.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "apiint.h"
#include "body.h"
#include "db.h"
#include "log.h"
#include "rstore.h"
#include "tunnels.h"

#define ARGON2_SALT_LEN	 16
#define ARGON2_HASH_LEN	 32
#define ARGON2_ENC_MAX	 192
#define ARGON2_WAIT_S	 10 /* a request waits this long for a hashing slot, then 503 */
#define SESSION_RAW	 32
#define SESSION_B64_MAX	 64

static struct argon2_cfg acct_cfg;
static sem_t acct_slots;
static bool acct_ready;
/* A hash of a random password: a login for an unknown email verifies against it, so that it
 * costs the same time as a wrong password (no account enumeration by timing). */
static char acct_dummy[ARGON2_ENC_MAX];

static int acct_hash(const char *pw, char *enc, size_t cap)
{
	unsigned char salt[ARGON2_SALT_LEN];

	if (RAND_bytes(salt, sizeof(salt)) != 1)
		return -EIO;
	return argon2id_hash_encoded(acct_cfg.t_cost, acct_cfg.m_cost_kib, acct_cfg.parallelism, pw,
				     strlen(pw), salt, sizeof(salt), ARGON2_HASH_LEN, enc,
				     cap) == ARGON2_OK
		       ? 0
		       : -EINVAL;
}

int account_init(const struct argon2_cfg *cfg)
{
	unsigned char rnd[24];
	char pw[64];

	acct_cfg = *cfg;
	if (sem_init(&acct_slots, 0, (unsigned)(cfg->slots > 0 ? cfg->slots : 1)))
		return -errno;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -EIO;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(pw + 2 * i, 3, "%02x", rnd[i]);
	if (acct_hash(pw, acct_dummy, sizeof(acct_dummy)))
		return -EINVAL;
	acct_ready = true;
	return 0;
}

void account_fini(void)
{
	if (acct_ready)
		sem_destroy(&acct_slots);
	acct_ready = false;
}

/* Wait for one of the hashing slots. 0, or -EBUSY after ARGON2_WAIT_S. */
static int acct_slot_take(void)
{
	struct timespec dl;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += ARGON2_WAIT_S;
	while (sem_timedwait(&acct_slots, &dl))
		if (errno != EINTR)
			return -EBUSY;
	return 0;
}

int account_new_id(const char *prefix, char *out)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char rnd[64];
	size_t n = 0, i = 0, plen = strlen(prefix);

	if (plen > 2)
		return -EINVAL;
	memcpy(out, prefix, plen);
	while (n < 20) {
		if (i == 0 || i == sizeof(rnd)) {
			if (RAND_bytes(rnd, sizeof(rnd)) != 1)
				return -EIO;
			i = 0;
		}
		/* 252 = 7 * 36: rejection sampling keeps every character equally likely */
		if (rnd[i] < 252)
			out[plen + n++] = alphabet[rnd[i] % 36];
		i++;
	}
	out[plen + n] = '\0';
	return 0;
}

static void acct_session_hash(const char *session, char hex[2 * SHA256_DIGEST_LENGTH + 1])
{
	unsigned char d[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)session, strlen(session), d);
	hex_encode(d, sizeof(d), hex);
}

/* New session for user_id inside the caller's transaction; the secret into out. */
static int acct_session_new(PGconn *c, const char *user_id, char out[SESSION_B64_MAX])
{
	unsigned char raw[SESSION_RAW];
	char hex[2 * SHA256_DIGEST_LENGTH + 1], ttl[16];
	const char *p[3] = { hex, user_id, ttl };
	unsigned char b64[SESSION_B64_MAX];
	PGresult *r;
	int n;

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	n = EVP_EncodeBlock(b64, raw, sizeof(raw));
	OPENSSL_cleanse(raw, sizeof(raw));
	/* base64 -> base64url without padding */
	while (n > 0 && b64[n - 1] == '=')
		n--;
	for (int i = 0; i < n; i++)
		b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
	b64[n] = '\0';
	memcpy(out, b64, (size_t)n + 1);
	OPENSSL_cleanse(b64, sizeof(b64));
	acct_session_hash(out, hex);
	snprintf(ttl, sizeof(ttl), "%d", SESSION_TTL_S);
	r = db_exec(c,
		    "INSERT INTO sessions (hash, user_id, expires_at) VALUES (decode($1, 'hex'), $2, "
		    "now() + make_interval(secs => $3::int))",
		    3, p);
	if (!r)
		return -EIO;
	PQclear(r);
	return 0;
}

int account_session_user(PGconn *c, const char *session, char *user_id)
{
	char hex[2 * SHA256_DIGEST_LENGTH + 1];
	const char *p[1] = { hex };
	PGresult *r;
	int ret = -ENOENT;

	if (strlen(session) > SESSION_B64_MAX)
		return -ENOENT;
	/* looked up by its hash: the table never holds a usable secret, and the comparison is an
	 * index lookup on a value the attacker cannot steer byte by byte */
	acct_session_hash(session, hex);
	r = db_exec(c, "SELECT user_id FROM sessions WHERE hash = decode($1, 'hex') AND "
		       "expires_at > now()",
		    1, p);
	if (!r)
		return -EIO;
	if (PQntuples(r) == 1 && PQgetlength(r, 0, 0) <= ID_LEN) {
		memcpy(user_id, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0) + 1);
		ret = 0;
	}
	PQclear(r);
	return ret;
}

int account_outbox(PGconn *c, const char *user_id, json_t *events)
{
	char *ev = json_dumps(events, JSON_COMPACT);
	const char *p[2] = { user_id, ev };
	int ret;

	if (!ev)
		return -ENOMEM;
	ret = db_run(c, "INSERT INTO redis_outbox (user_id, events) VALUES ($1, $2::jsonb)", 2, p);
	free(ev);
	return ret;
}

int account_commit_events(struct api *a, PGconn *c, const char *user_id, json_t *events)
{
	int ret = events ? account_outbox(c, user_id, events) : -ENOMEM;

	ret = ret ?: db_commit(c);
	if (!ret)
		rstore_kick(a->rs);
	return ret;
}

int account_apply_limits(PGconn *c, const struct plan *pl, const char *user_id, json_t *events)
{
	const char *p[2] = { user_id, NULL };
	PGresult *r;
	int ret = 0;

	r = db_exec(c,
		    "SELECT id, state FROM tunnels WHERE user_id = $1 AND deleted_at IS NULL "
		    "ORDER BY created_at, id FOR UPDATE",
		    1, p);
	if (!r)
		return -EIO;
	for (int i = 0; !ret && i < PQntuples(r); i++) {
		const char *want = i < pl->max_tunnels ? "active" : "suspended";

		if (!strcmp(PQgetvalue(r, i, 1), want))
			continue;
		p[0] = PQgetvalue(r, i, 0);
		p[1] = want;
		ret = db_run(c, "UPDATE tunnels SET state = $2 WHERE id = $1", 2, p);
		if (ret)
			break;
		if (!strcmp(want, "suspended"))
			json_array_append_new(events,
					      json_pack("{s:s,s:s,s:s}", "type", "tunnel", "tid",
							PQgetvalue(r, i, 0), "reason", "suspended"));
	}
	PQclear(r);
	return ret;
}

int account_set_plan(PGconn *c, const struct plans *p, const char *user_id, const char *tier,
		     const char *status, int64_t period_start, int64_t period_end,
		     const char *source, const char *stripe_event)
{
	const struct plan *pl = plans_find(p, tier);
	char ps[24] = "", pe[24] = "";
	const char *q[8];
	json_t *events = NULL;
	PGresult *r = NULL;
	int ret;

	if (!pl || !status ||
	    (strcmp(status, "active") && strcmp(status, "past_due") && strcmp(status, "canceled")))
		return -EINVAL;
	if (period_start > 0 && period_end > period_start) {
		snprintf(ps, sizeof(ps), "%lld", (long long)period_start);
		snprintf(pe, sizeof(pe), "%lld", (long long)period_end);
	}
	q[0] = user_id;
	r = db_exec(c,
		    "SELECT tier, plan_status, coalesce(period_start::text, ''), "
		    "coalesce(period_end::text, '') FROM users WHERE id = $1 FOR UPDATE",
		    1, q);
	if (!r)
		return -EIO;
	if (PQntuples(r) != 1) {
		ret = -ENOENT;
		goto out;
	}
	if (!strcmp(PQgetvalue(r, 0, 0), tier) && !strcmp(PQgetvalue(r, 0, 1), status) &&
	    !strcmp(PQgetvalue(r, 0, 2), ps) && !strcmp(PQgetvalue(r, 0, 3), pe)) {
		ret = 0; /* no-op: nothing written, no event */
		goto out;
	}
	q[1] = tier;
	q[2] = status;
	q[3] = ps[0] ? ps : NULL;
	q[4] = pe[0] ? pe : NULL;
	ret = db_run(c,
		     "UPDATE users SET tier = $2, plan_status = $3, period_start = $4::bigint, "
		     "period_end = $5::bigint WHERE id = $1",
		     5, q);
	if (ret)
		goto out;
	q[1] = PQgetvalue(r, 0, 0)[0] ? PQgetvalue(r, 0, 0) : NULL; /* "" = a new account */
	q[2] = tier;
	q[3] = q[1] ? PQgetvalue(r, 0, 1) : NULL;
	q[4] = status;
	q[5] = source;
	q[6] = stripe_event;
	ret = db_run(c,
		     "INSERT INTO plan_changes (user_id, from_tier, to_tier, from_status, to_status, "
		     "source, stripe_event) VALUES ($1, $2, $3, $4, $5, $6, $7)",
		     7, q);
	if (ret)
		goto out;
	events = json_pack("[{s:s}]", "type", "plan");
	ret = events ? account_apply_limits(c, pl, user_id, events) : -ENOMEM;
	/* labels stay in PostgreSQL; the outbox rewrite leaves them out of Redis while the plan has
	 * no custom_names */
	ret = ret ?: account_outbox(c, user_id, events);
out:
	json_decref(events);
	PQclear(r);
	return ret;
}

const struct plan *account_user_plan(PGconn *c, const struct plans *p, const char *user_id)
{
	const char *q[1] = { user_id };
	const struct plan *pl = NULL;
	PGresult *r = db_exec(c, "SELECT tier FROM users WHERE id = $1", 1, q);

	if (r && PQntuples(r) == 1)
		pl = plans_find(p, PQgetvalue(r, 0, 0));
	PQclear(r);
	return pl ? pl : plans_default(p);
}

/* ---- handlers ---------------------------------------------------------------------------- */

static json_t *acct_user_json(const char *id, const char *email, const char *created)
{
	return json_pack("{s:s,s:s,s:s}", "id", id, "email", email, "created_at", created);
}

static void acct_session_answer(struct api *a, struct api_resp *out, int status, json_t *user,
				const char *session)
{
	api_reply(out, status, json_pack("{s:o,s:s}", "user", user, "session", session));
	api_set_session_cookie(a, out, session);
}

void account_signup(struct api *a, const struct api_req *r, struct api_resp *out)
{
	struct body_creds cr;
	struct body_err err;
	char hash[ARGON2_ENC_MAX], id[ID_LEN + 1], tid[ID_LEN + 1], session[SESSION_B64_MAX] = "";
	const char *q[3];
	PGconn *c = NULL;
	PGresult *res = NULL;
	int ret;

	if (body_creds(r->body, r->body_len, true, &cr, &err)) {
		api_error(out, err.status, err.code, "%s", err.message);
		return;
	}
	if (api_rate_limited(a, r, out, NULL))
		goto out;
	if (acct_slot_take()) {
		api_error(out, 503, "unavailable", "too many logins at once, try again");
		goto out;
	}
	ret = acct_hash(cr.password, hash, sizeof(hash));
	sem_post(&acct_slots);
	if (ret || account_new_id("u_", id)) {
		api_error(out, 500, "internal", "cannot hash the password");
		goto out;
	}
	c = db_get_or_503(a, out);
	if (!c)
		goto out;
	if (db_begin(c))
		goto fail;
	q[0] = id;
	q[1] = cr.email;
	q[2] = hash;
	res = db_exec(c,
		      "INSERT INTO users (id, email, password_hash, tier) VALUES ($1, $2, $3, '') "
		      "RETURNING " API_TS("created_at"),
		      3, q);
	if (!res) {
		if (!strcmp(db_last_sqlstate(), "23505")) {
			api_error(out, 409, "email_taken", "an account with this email exists");
			db_rollback(c);
			goto out;
		}
		goto fail;
	}
	if (account_set_plan(c, &a->plans, id, plans_default(&a->plans)->tier, "active", 0, 0,
			     "signup", NULL) ||
	    tunnels_insert(c, id, tid) || acct_session_new(c, id, session) || db_commit(c))
		goto fail;
	rstore_kick(a->rs);
	acct_session_answer(a, out, 201, acct_user_json(id, cr.email, PQgetvalue(res, 0, 0)),
			    session);
	goto out;
fail:
	db_rollback(c);
	api_error(out, 500, "internal", "could not create the account");
out:
	OPENSSL_cleanse(&cr, sizeof(cr));
	OPENSSL_cleanse(session, sizeof(session));
	PQclear(res);
	if (c)
		db_put(a, c, false);
}

void account_login(struct api *a, const struct api_req *r, struct api_resp *out)
{
	char session[SESSION_B64_MAX] = "", acct[EMAIL_MAX + 8];
	struct body_creds cr;
	struct body_err err;
	const char *q[1];
	PGconn *c = NULL;
	PGresult *res = NULL;
	bool found, ok;

	if (body_creds(r->body, r->body_len, false, &cr, &err)) {
		api_error(out, err.status, err.code, "%s", err.message);
		return;
	}
	snprintf(acct, sizeof(acct), "acct:%s", cr.email);
	for (char *s = acct; *s; s++)
		*s = (char)((*s >= 'A' && *s <= 'Z') ? *s + 32 : *s);
	if (api_rate_limited(a, r, out, acct))
		goto out;
	c = db_get_or_503(a, out);
	if (!c)
		goto out;
	q[0] = cr.email;
	res = db_exec(c,
		      "SELECT id, email, password_hash, " API_TS("created_at")
		      " FROM users WHERE lower(email) = lower($1)",
		      1, q);
	if (!res) {
		api_error(out, 500, "internal", "database error");
		goto out;
	}
	found = PQntuples(res) == 1;
	if (acct_slot_take()) {
		api_error(out, 503, "unavailable", "too many logins at once, try again");
		goto out;
	}
	ok = argon2id_verify(found ? PQgetvalue(res, 0, 2) : acct_dummy, cr.password,
			     strlen(cr.password)) == ARGON2_OK;
	sem_post(&acct_slots);
	if (!found || !ok) {
		api_error(out, 401, "unauthorized", "wrong email or password");
		goto out;
	}
	if (db_begin(c) || acct_session_new(c, PQgetvalue(res, 0, 0), session) || db_commit(c)) {
		db_rollback(c);
		api_error(out, 500, "internal", "could not create a session");
		goto out;
	}
	acct_session_answer(a, out, 200,
			    acct_user_json(PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
					   PQgetvalue(res, 0, 3)),
			    session);
out:
	OPENSSL_cleanse(&cr, sizeof(cr));
	OPENSSL_cleanse(session, sizeof(session));
	PQclear(res);
	if (c)
		db_put(a, c, false);
}

void account_logout(struct api *a, const struct api_req *r, struct api_resp *out)
{
	char tok[SESSION_B64_MAX + 8], hex[2 * SHA256_DIGEST_LENGTH + 1];
	const char *q[1] = { hex };
	PGconn *c;
	PGresult *res;

	if (!api_session_token(r, tok, sizeof(tok))) {
		api_error(out, 401, "unauthorized", "no session");
		return;
	}
	acct_session_hash(tok, hex);
	OPENSSL_cleanse(tok, sizeof(tok));
	c = db_get_or_503(a, out);
	if (!c)
		return;
	res = db_exec(c, "DELETE FROM sessions WHERE hash = decode($1, 'hex')", 1, q);
	db_put(a, c, false);
	if (!res) {
		api_error(out, 500, "internal", "database error");
		return;
	}
	PQclear(res);
	api_reply(out, 204, NULL);
	api_set_session_cookie(a, out, NULL);
}

void api_month(int64_t now, int64_t *start, int64_t *end)
{
	time_t t = (time_t)now;
	struct tm tm;

	gmtime_r(&t, &tm);
	tm.tm_mday = 1;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	*start = (int64_t)timegm(&tm);
	tm.tm_mon++;
	*end = (int64_t)timegm(&tm);
}

/* This period's usage from the relays' counters: 0 when the hash counts another period. */
static long long acct_usage(struct api *a, const char *user_id, int64_t period_start)
{
	char key[160];
	const char *argv[4] = { "HMGET", key, "period", "bytes" };
	redisReply *rep;
	long long bytes = 0;

	snprintf(key, sizeof(key), "%suser:{%s}:usage", rstore_prefix(a->rs), user_id);
	rep = rstore_cmd(a->rs, key, 4, argv, NULL);
	if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
	    rep->element[0]->type == REDIS_REPLY_STRING &&
	    rep->element[1]->type == REDIS_REPLY_STRING &&
	    atoll(rep->element[0]->str) == period_start)
		bytes = atoll(rep->element[1]->str);
	if (rep)
		freeReplyObject(rep);
	return bytes;
}

void account_me(struct api *a, const struct api_req *r, struct api_resp *out)
{
	const char *q[1] = { r->user_id };
	const struct plan *pl;
	int64_t ps, pe;
	long long used;
	PGconn *c;
	PGresult *res;

	c = db_get_or_503(a, out);
	if (!c)
		return;
	res = db_exec(c,
		      "SELECT id, email, " API_TS("created_at") ", tier, plan_status, "
		      "coalesce(period_start, 0), coalesce(period_end, 0) FROM users WHERE id = $1",
		      1, q);
	db_put(a, c, false);
	if (!res || PQntuples(res) != 1) {
		api_error(out, res ? 404 : 500, res ? "not_found" : "internal", "no such user");
		PQclear(res);
		return;
	}
	pl = plans_find(&a->plans, PQgetvalue(res, 0, 3));
	if (!pl)
		pl = plans_default(&a->plans);
	ps = atoll(PQgetvalue(res, 0, 5));
	pe = atoll(PQgetvalue(res, 0, 6));
	if (!(ps > 0 && pe > ps && wall_s() >= ps && wall_s() < pe))
		api_month(wall_s(), &ps, &pe);
	used = acct_usage(a, r->user_id, ps);
	api_reply(out, 200,
		  json_pack("{s:o,s:{s:s,s:s,s:s,s:i,s:i,s:b,s:i,s:I,s:i,s:I,s:I},s:{s:I,s:I,s:b}}",
			    "user",
			    acct_user_json(PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
					   PQgetvalue(res, 0, 2)),
			    "plan", "tier", pl->tier, "title", pl->title, "status",
			    PQgetvalue(res, 0, 4), "max_tunnels", pl->max_tunnels, "max_players",
			    pl->max_players, "custom_names", pl->custom_names, "idle_timeout_s",
			    pl->idle_timeout_s, "bandwidth_bytes", (json_int_t)pl->bandwidth_bytes,
			    "priority", pl->priority, "period_start", (json_int_t)ps, "period_end",
			    (json_int_t)pe, "usage", "bytes", (json_int_t)used, "bandwidth_bytes",
			    (json_int_t)pl->bandwidth_bytes, "capped",
			    pl->bandwidth_bytes > 0 && (uint64_t)used >= pl->bandwidth_bytes));
	PQclear(res);
}

void account_plans(struct api *a, const struct api_req *r, struct api_resp *out)
{
	json_t *arr = json_array();

	for (int i = 0; i < a->plans.n; i++) {
		const struct plan *pl = &a->plans.plan[i];

		json_array_append_new(
			arr, json_pack("{s:s,s:s,s:i,s:s,s:i,s:i,s:b,s:i,s:I,s:i,s:b}", "tier",
				       pl->tier, "title", pl->title, "price_cents", pl->price_cents,
				       "currency", pl->currency, "max_tunnels", pl->max_tunnels,
				       "max_players", pl->max_players, "custom_names",
				       pl->custom_names, "idle_timeout_s", pl->idle_timeout_s,
				       "bandwidth_bytes", (json_int_t)pl->bandwidth_bytes,
				       "priority", pl->priority, "default",
				       i == a->plans.def));
	}
	api_reply(out, 200, json_pack("{s:o}", "plans", arr));
}

int account_admin_set_plan(struct api *a, const char *email, const char *tier)
{
	const char *q[1] = { email };
	PGconn *c = db_get(a);
	PGresult *r = NULL;
	int ret = -EIO;

	if (!c)
		return -EAGAIN;
	if (!plans_find(&a->plans, tier)) {
		ret = -EINVAL;
		goto out;
	}
	if (db_begin(c))
		goto out;
	r = db_exec(c, "SELECT id FROM users WHERE lower(email) = lower($1) FOR UPDATE", 1, q);
	if (!r)
		goto out;
	if (PQntuples(r) != 1) {
		ret = -ENOENT;
		goto out;
	}
	ret = account_set_plan(c, &a->plans, PQgetvalue(r, 0, 0), tier, "active", 0, 0, "admin",
			       NULL);
	ret = ret ?: db_commit(c);
out:
	if (ret)
		db_rollback(c);
	PQclear(r);
	db_put(a, c, false);
	return ret;
}
