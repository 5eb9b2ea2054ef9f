/* Agent tokens: ES256 signing with a kid, and the token routes (tokens.h). */
#include "tokens.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jwt.h>
#include <openssl/crypto.h>

#include "account.h"
#include "apiint.h"
#include "auth.h"
#include "body.h"
#include "db.h"
#include "log.h"
#include "rstore.h"

#define KEY_FILE_MAX (16 * 1024)

struct tokens_keys {
	char kid[64];
	unsigned char *key;
	size_t key_len;
	/* the public halves (every <kid>.pub in the directory, as the relays read them), to verify
	 * the tokens agents present for renewal; the relays' own verifier (userspace/auth.c), so a
	 * token renews exactly when a relay would accept it. Reloaded when the directory changes,
	 * under mu (auth_cfg is not safe to reload while another thread verifies). */
	pthread_mutex_t mu;
	struct auth_cfg verify; /* no keys (nkeys 0): the directory did not load, renewal is off */
	char dir[256];
};

static bool tok_valid_kid(const char *s, size_t n)
{
	if (n == 0 || n >= 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-' || s[i] == '.'))
			return false;
	return true;
}

int tokens_keys_load(const char *dir, const char *wanted, struct tokens_keys **out, char *err,
		     size_t errlen)
{
	struct tokens_keys *k = NULL;
	char path[1024], best[64] = "";
	struct timespec best_mtime = { 0, 0 };
	struct dirent *de;
	struct stat st;
	DIR *d = NULL;
	ssize_t n;
	int fd = -1, ret = -EINVAL;

	if (wanted && wanted[0]) {
		if (!tok_valid_kid(wanted, strlen(wanted))) {
			snprintf(err, errlen, "--jwt-kid '%s' is not a valid key id", wanted);
			goto out;
		}
		snprintf(best, sizeof(best), "%s", wanted);
	} else {
		/* the newest <kid>.key: a rotation adds a key and restarts the API */
		d = opendir(dir);
		if (!d) {
			ret = -errno;
			snprintf(err, errlen, "%s: %s", dir, strerror(errno));
			goto out;
		}
		while ((de = readdir(d))) {
			size_t len = strlen(de->d_name);

			if (len < 5 || strcmp(de->d_name + len - 4, ".key") ||
			    !tok_valid_kid(de->d_name, len - 4))
				continue;
			/* a signing key counts only with its public half beside it: the relays read
			 * <kid>.pub, and a lone .key (a TLS key, a CA key) is not ours */
			snprintf(path, sizeof(path), "%s/%.*s.pub", dir, (int)(len - 4), de->d_name);
			if (access(path, R_OK))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			if (stat(path, &st) || !S_ISREG(st.st_mode))
				continue;
			if (!best[0] || st.st_mtim.tv_sec > best_mtime.tv_sec ||
			    (st.st_mtim.tv_sec == best_mtime.tv_sec &&
			     st.st_mtim.tv_nsec > best_mtime.tv_nsec)) {
				best_mtime = st.st_mtim;
				snprintf(best, sizeof(best), "%.*s", (int)(len - 4), de->d_name);
			}
		}
		if (!best[0]) {
			snprintf(err, errlen, "%s holds no <kid>.key signing key with its <kid>.pub", dir);
			goto out;
		}
	}
	k = calloc(1, sizeof(*k));
	if (k)
		pthread_mutex_init(&k->mu, NULL);
	if (!k || !(k->key = malloc(KEY_FILE_MAX + 1))) {
		ret = -ENOMEM;
		goto out;
	}
	snprintf(k->kid, sizeof(k->kid), "%s", best);
	snprintf(path, sizeof(path), "%s/%s.key", dir, best);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	n = read(fd, k->key, KEY_FILE_MAX + 1);
	if (n <= 0 || n > KEY_FILE_MAX || !memmem(k->key, (size_t)n, "PRIVATE KEY", 11)) {
		snprintf(err, errlen, "%s: not a PEM private key of at most %d bytes", path,
			 KEY_FILE_MAX);
		goto out;
	}
	k->key_len = (size_t)n;
	k->key[n] = '\0';
	snprintf(k->dir, sizeof(k->dir), "%s", dir);
	k->verify.audience = "dvv-relay";
	k->verify.leeway_s = 30;
	if (auth_load_keys(&k->verify, dir, path, sizeof(path)))
		pr_warn("token renewal is off until the key directory loads: %s", path);
	ret = 0;
	*out = k;
	k = NULL;
out:
	if (fd >= 0)
		close(fd);
	if (d)
		closedir(d);
	tokens_keys_free(k);
	return ret;
}

void tokens_keys_free(struct tokens_keys *k)
{
	if (!k)
		return;
	if (k->key) {
		OPENSSL_cleanse(k->key, k->key_len);
		free(k->key);
	}
	auth_cfg_free(&k->verify);
	pthread_mutex_destroy(&k->mu);
	free(k);
}

const char *tokens_kid(const struct tokens_keys *k) { return k->kid; }

char *tokens_sign(const struct tokens_keys *k, const struct token_claims *cl)
{
	jwt_t *jwt = NULL;
	char *tok = NULL;
	int ret;

	if (jwt_new(&jwt))
		return NULL;
	ret = jwt_add_header(jwt, "kid", k->kid);
	ret = ret ?: jwt_add_grant(jwt, "iss", cl->iss);
	ret = ret ?: jwt_add_grant(jwt, "aud", "dvv-relay");
	ret = ret ?: jwt_add_grant(jwt, "sub", cl->sub);
	ret = ret ?: jwt_add_grant(jwt, "tid", cl->tid);
	ret = ret ?: jwt_add_grant(jwt, "jti", cl->jti);
	ret = ret ?: jwt_add_grant_int(jwt, "iat", (long)cl->iat);
	ret = ret ?: jwt_add_grant_int(jwt, "nbf", (long)cl->iat);
	ret = ret ?: jwt_add_grant_int(jwt, "exp", (long)cl->exp);
	ret = ret ?: jwt_add_grant(jwt, "plan", cl->plan);
	if (!ret && cl->name)
		ret = jwt_add_grant(jwt, "name", cl->name);
	ret = ret ?: jwt_set_alg(jwt, JWT_ALG_ES256, k->key, (int)k->key_len);
	if (!ret)
		tok = jwt_encode_str(jwt);
	jwt_free(jwt);
	return tok;
}

static json_t *tok_row_json(PGresult *r, int i)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:o}", "id", PQgetvalue(r, i, 0), "tunnel_id",
			 PQgetvalue(r, i, 1), "created_at", PQgetvalue(r, i, 2), "expires_at",
			 PQgetvalue(r, i, 3), "revoked_at",
			 PQgetisnull(r, i, 4) ? json_null() : json_string(PQgetvalue(r, i, 4)));
}

void tokens_list(struct api *a, const struct api_req *r, struct api_resp *out)
{
	const char *q[1] = { r->user_id };
	json_t *arr;
	PGconn *c = db_get_or_503(a, out);
	PGresult *res;

	if (!c)
		return;
	res = db_exec(c,
		      "SELECT id, tunnel_id, " API_TS("created_at") ", " API_TS("expires_at") ", "
		      API_TS("revoked_at") " FROM agent_tokens WHERE user_id = $1 "
		      "ORDER BY created_at DESC, id LIMIT 1000",
		      1, q);
	db_put(a, c, false);
	if (!res) {
		api_error(out, 500, "internal", "database error");
		return;
	}
	arr = json_array();
	for (int i = 0; i < PQntuples(res); i++)
		json_array_append_new(arr, tok_row_json(res, i));
	PQclear(res);
	api_reply(out, 200, json_pack("{s:o}", "tokens", arr));
}

/* Mint a token for tunnel tid of user sub, living `life` seconds from now, with the plan of
 * `tier` and the tunnel's label (NULL: none) when that plan allows custom names, and record it
 * (jti, tunnel, expiry) in agent_tokens. Returns the token (the caller wipes and frees it) with
 * its id in jti and its expiry as ISO 8601 text in exp_text; NULL with out set. */
static char *tok_issue(struct api *a, PGconn *c, const char *sub, const char *tid,
		       const char *tier, const char *label, long long life, const char *renewed_from,
		       char *jti, char *exp_text, size_t exp_cap, struct api_resp *out)
{
	long long now = wall_s();
	const struct plan *pl = plans_find(&a->plans, tier);
	char exp_s[24], *tok;
	const char *q[5];
	PGresult *ins;

	if (account_new_id("k_", jti)) {
		api_error(out, 500, "internal", "no randomness");
		return NULL;
	}
	if (!pl)
		pl = plans_default(&a->plans);
	tok = tokens_sign(a->keys, &(struct token_claims){
		.iss = a->o.jwt_issuer, .sub = sub, .tid = tid, .jti = jti, .plan = pl->tier,
		.name = label && pl->custom_names ? label : NULL, .iat = now, .exp = now + life,
	});
	if (!tok) {
		api_error(out, 500, "internal", "cannot sign the token");
		return NULL;
	}
	snprintf(exp_s, sizeof(exp_s), "%lld", now + life);
	q[0] = jti;
	q[1] = sub;
	q[2] = tid;
	q[3] = exp_s;
	q[4] = renewed_from;
	ins = db_exec(c,
		      "INSERT INTO agent_tokens (id, user_id, tunnel_id, expires_at, renewed_from) "
		      "VALUES ($1, $2, $3, to_timestamp($4::bigint), $5) RETURNING "
		      API_TS("expires_at"),
		      5, q);
	if (!ins) {
		OPENSSL_cleanse(tok, strlen(tok));
		free(tok);
		if (renewed_from && !strcmp(db_last_sqlstate(), "23505"))
			api_error(out, 409, "already_renewed",
				  "this token was renewed already: use the token that renewal "
				  "returned, or create a new one");
		else
			api_error(out, 500, "internal", "database error");
		return NULL;
	}
	snprintf(exp_text, exp_cap, "%s", PQgetvalue(ins, 0, 0));
	PQclear(ins);
	return tok;
}

static void tok_free(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

void tokens_create(struct api *a, const struct api_req *r, struct api_resp *out)
{
	char jti[ID_LEN + 1], exp_text[32], *tok = NULL, *cmd = NULL;
	const char *q[2];
	struct body_token bt;
	struct body_err err;
	PGconn *c = NULL;
	PGresult *res = NULL;

	if (body_token(r->body, r->body_len, &bt, &err)) {
		api_error(out, err.status, err.code, "%s", err.message);
		return;
	}
	c = db_get_or_503(a, out);
	if (!c)
		return;
	q[0] = bt.tunnel_id;
	q[1] = r->user_id;
	res = db_exec(c,
		      "SELECT t.label, u.tier FROM tunnels t JOIN users u ON u.id = t.user_id "
		      "WHERE t.id = $1 AND t.user_id = $2 AND t.deleted_at IS NULL",
		      2, q);
	if (!res) {
		api_error(out, 500, "internal", "database error");
		goto out;
	}
	if (PQntuples(res) != 1) {
		api_error(out, 404, "not_found", "no such tunnel");
		goto out;
	}
	tok = tok_issue(a, c, r->user_id, bt.tunnel_id, PQgetvalue(res, 0, 1),
			PQgetisnull(res, 0, 0) ? NULL : PQgetvalue(res, 0, 0),
			(long long)bt.ttl_days * 86400, NULL, jti, exp_text, sizeof(exp_text), out);
	if (!tok)
		goto out;
	if (asprintf(&cmd, "%s login --api %s --token %s && %s --local %s", a->o.agent_cmd,
		     a->o.public_url, tok, a->o.agent_cmd, a->o.agent_local) < 0) {
		cmd = NULL;
		api_error(out, 500, "internal", "out of memory");
		goto out;
	}
	api_reply(out, 201,
		  json_pack("{s:s,s:s,s:s,s:s,s:s}", "id", jti, "tunnel_id", bt.tunnel_id, "token",
			    tok, "expires_at", exp_text, "command", cmd));
out:
	tok_free(tok);
	tok_free(cmd);
	PQclear(res);
	db_put(a, c, false);
}

/* Verify an agent token with the relays' rules (signature by a <kid>.pub, alg ES256, iss, aud,
 * exp, nbf, iat). 0, -EACCES (err says why, never the token), -EAGAIN (no keys loaded). */
static int tok_verify(struct tokens_keys *k, const char *iss, const char *token,
		      struct auth_claims *cl, char *err, size_t errlen)
{
	char rerr[160];
	int ret;

	pthread_mutex_lock(&k->mu);
	if (k->verify.nkeys)
		auth_reload_if_changed(&k->verify, rerr, sizeof(rerr));
	else
		auth_load_keys(&k->verify, k->dir, rerr, sizeof(rerr));
	k->verify.issuer = iss;
	ret = k->verify.nkeys ? auth_verify(&k->verify, token, wall_s(), cl, err, errlen) : -EAGAIN;
	pthread_mutex_unlock(&k->mu);
	return ret && ret != -EAGAIN ? -EACCES : ret;
}

/* POST /v1/tokens/renew, Authorization: Bearer <agent token>. An agent trades a token that is
 * valid, not revoked, of a tunnel that still exists and in the last half of its life for a new
 * one of the same lifetime (the tunnel's plan and name of now). The old token stays valid until
 * it expires: the session running on it is not cut. Only the second half of a lifetime renews,
 * and only once (agent_tokens.renewed_from is unique: 409 already_renewed), so one token never
 * fans out into many; revoking a token revokes its renewals (tokens_delete). */
void tokens_renew(struct api *a, const struct api_req *r, struct api_resp *out)
{
	const char *auth = api_header(r, "Authorization");
	char jti[ID_LEN + 1], exp_text[32], why[160], *tok = NULL;
	const char *q[3];
	struct auth_claims old;
	long long life, left, created, expires;
	PGconn *c = NULL;
	PGresult *res = NULL;
	int rc;

	if (!auth || strncasecmp(auth, "Bearer ", 7) || strlen(auth + 7) > 4096) {
		api_error(out, 401, "unauthorized", "send the agent token as Authorization: Bearer");
		return;
	}
	rc = tok_verify(a->keys, a->o.jwt_issuer, auth + 7, &old, why, sizeof(why));
	if (rc == -EAGAIN) {
		api_error(out, 503, "unavailable", "token renewal is not available (no public keys)");
		return;
	}
	if (rc || !old.jti[0]) {
		api_error(out, 401, "unauthorized", "not a valid agent token: %s",
			  rc ? why : "no jti");
		return;
	}
	c = db_get_or_503(a, out);
	if (!c)
		return;
	q[0] = old.jti;
	q[1] = old.sub;
	q[2] = old.tid;
	res = db_exec(c,
		      "SELECT extract(epoch FROM k.created_at)::bigint, "
		      "extract(epoch FROM k.expires_at)::bigint, t.label, u.tier "
		      "FROM agent_tokens k JOIN tunnels t ON t.id = k.tunnel_id "
		      "JOIN users u ON u.id = k.user_id WHERE k.id = $1 AND k.user_id = $2 AND "
		      "k.tunnel_id = $3 AND k.revoked_at IS NULL AND t.deleted_at IS NULL",
		      3, q);
	if (!res) {
		api_error(out, 500, "internal", "database error");
		goto out;
	}
	if (PQntuples(res) != 1) {
		api_error(out, 401, "unauthorized",
			  "this token was revoked or its tunnel deleted: create a new one");
		goto out;
	}
	created = atoll(PQgetvalue(res, 0, 0));
	expires = atoll(PQgetvalue(res, 0, 1));
	life = expires - created;
	left = expires - wall_s();
	if (life < 86400)
		life = 86400;
	if (life > 365LL * 86400)
		life = 365LL * 86400;
	if (left > life / 2) {
		long long wait = left - life / 2;

		snprintf(out->retry_after, sizeof(out->retry_after), "%d",
			 (int)(wait < 400LL * 86400 ? wait : 400LL * 86400));
		api_error(out, 409, "not_due", "a token renews in the last half of its life, after %lld",
			  expires - life / 2);
		goto out;
	}
	tok = tok_issue(a, c, old.sub, old.tid, PQgetvalue(res, 0, 3),
			PQgetisnull(res, 0, 2) ? NULL : PQgetvalue(res, 0, 2), life, old.jti, jti,
			exp_text, sizeof(exp_text), out);
	if (!tok)
		goto out;
	pr_info("token %s of tunnel %s renewed as %s", old.jti, old.tid, jti);
	api_reply(out, 201,
		  json_pack("{s:s,s:s,s:s,s:s,s:s}", "id", jti, "tunnel_id", old.tid, "token", tok,
			    "expires_at", exp_text, "renewed", old.jti));
out:
	tok_free(tok);
	PQclear(res);
	db_put(a, c, false);
}

void tokens_delete(struct api *a, const struct api_req *r, struct api_resp *out, const char *id)
{
	const char *q[2] = { id, r->user_id };
	json_t *ev = NULL;
	PGconn *c = db_get_or_503(a, out);
	PGresult *res = NULL;

	if (!c)
		return;
	if (db_begin(c))
		goto fail;
	/* the token and every token renewed from it, down the chain: a leaked token's renewals
	 * are revoked with it */
	res = db_exec(c,
		      "WITH RECURSIVE fam(id) AS (SELECT id FROM agent_tokens WHERE id = $1 AND "
		      "user_id = $2 UNION SELECT k.id FROM agent_tokens k JOIN fam ON "
		      "k.renewed_from = fam.id) "
		      "UPDATE agent_tokens t SET revoked_at = coalesce(t.revoked_at, now()) FROM fam "
		      "WHERE t.id = fam.id RETURNING t.id, t.tunnel_id",
		      2, q);
	if (!res)
		goto fail;
	if (PQntuples(res) < 1) {
		db_rollback(c);
		api_error(out, 404, "not_found", "no such token");
		goto out;
	}
	ev = json_array();
	for (int i = 0; ev && i < PQntuples(res); i++)
		json_array_append_new(ev, json_pack("{s:s,s:s,s:s}", "type", "revoke", "jti",
						    PQgetvalue(res, i, 0), "tid",
						    PQgetvalue(res, i, 1)));
	if (account_commit_events(a, c, r->user_id, ev))
		goto fail;
	api_reply(out, 204, NULL);
	goto out;
fail:
	db_rollback(c);
	api_error(out, 500, "internal", "database error");
out:
	json_decref(ev);
	PQclear(res);
	db_put(a, c, false);
}

void tokens_agent_config(struct api *a, const struct api_req *r, struct api_resp *out)
{
	json_t *relays = json_object();

	for (int i = 0; i < a->n_regions; i++)
		json_object_set_new(relays, a->regions[i].name, json_string(a->regions[i].addr));
	api_reply(out, 200,
		  json_pack("{s:s,s:o,s:o,s:s}", "api", a->o.public_url, "relays", relays, "ca_pem",
			    a->ca_pem ? json_string(a->ca_pem) : json_null(), "base_domain",
			    a->o.base_domain));
}
