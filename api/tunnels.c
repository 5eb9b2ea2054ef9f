/* Tunnels and their custom subdomains (tunnels.h). */
#include "tunnels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "apiint.h"
#include "body.h"
#include "db.h"
#include "log.h"
#include "rstore.h"

#define TUN_LIVE_STALE_S 75 /* a live entry older than this is an agent that went away */
#define TUN_LIST_MAX	 1000

/* Columns every tunnel query selects, in this order (tun_json reads them by index). */
#define TUN_COLS "t.id, t.label, t.state, " API_TS("t.created_at")

int tunnels_insert(PGconn *c, const char *user_id, char *id_out)
{
	const char *q[2] = { id_out, user_id };

	if (account_new_id("t_", id_out))
		return -EIO;
	return db_run(c, "INSERT INTO tunnels (id, user_id) VALUES ($1, $2)", 2, q);
}

/* One string reply (or NULL) from a one-key command. The caller frees the result. */
static char *tun_redis_str(struct api *a, int argc, const char **argv)
{
	redisReply *rep = rstore_cmd(a->rs, argv[1], argc, argv, NULL);
	char *s = NULL;

	if (rep && rep->type == REDIS_REPLY_STRING)
		s = strndup(rep->str, rep->len);
	if (rep)
		freeReplyObject(rep);
	return s;
}

/* The API's tunnel object from row i (TUN_COLS), with the live state the relays keep in Redis:
 * hostname from the live entry, else the name the tunnel last held, else null. */
static json_t *tun_json(struct api *a, const char *user_id, PGresult *r, int i, int64_t period)
{
	const char *id = PQgetvalue(r, i, 0), *pfx = rstore_prefix(a->rs);
	char key[200], field[80], *live_s, *host_s = NULL, *per_s, *bytes_s;
	const char *argv[3];
	json_t *live = NULL, *t, *host, *region, *instance;
	json_int_t players;
	bool online = false;
	long long bytes = 0;

	snprintf(key, sizeof(key), "%suser:{%s}:live", pfx, user_id);
	argv[0] = "HGET";
	argv[1] = key;
	argv[2] = id;
	live_s = tun_redis_str(a, 3, argv);
	if (live_s)
		live = json_loads(live_s, 0, NULL);
	if (!json_is_object(live)) {
		json_decref(live);
		live = NULL;
	}
	if (live)
		online = wall_s() - json_integer_value(json_object_get(live, "t")) <=
			 TUN_LIVE_STALE_S;
	if (!live || !json_is_string(json_object_get(live, "hostname"))) {
		snprintf(key, sizeof(key), "%stunnel:{%s}", pfx, id);
		argv[0] = "GET";
		host_s = tun_redis_str(a, 2, argv);
	}
	snprintf(key, sizeof(key), "%suser:{%s}:usage", pfx, user_id);
	argv[0] = "HGET";
	argv[2] = "period";
	per_s = tun_redis_str(a, 3, argv);
	snprintf(field, sizeof(field), "t:%s", id);
	argv[2] = field;
	bytes_s = per_s && atoll(per_s) == period ? tun_redis_str(a, 3, argv) : NULL;
	if (bytes_s)
		bytes = atoll(bytes_s);
	/* the live entry's hostname when it has one, else the last name the tunnel held */
	host = host_s ? json_string(host_s)
	       : json_is_string(json_object_get(live, "hostname"))
		       ? json_incref(json_object_get(live, "hostname"))
		       : json_null();
	region = online && json_is_string(json_object_get(live, "region"))
			 ? json_incref(json_object_get(live, "region"))
			 : json_null();
	instance = online && json_is_string(json_object_get(live, "instance"))
			   ? json_incref(json_object_get(live, "instance"))
			   : json_null();
	players = online ? json_integer_value(json_object_get(live, "players")) : 0;
	t = json_pack("{s:s,s:o,s:o,s:s,s:b,s:I,s:o,s:o,s:I,s:s}", "id", id, "label",
		      PQgetisnull(r, i, 1) ? json_null() : json_string(PQgetvalue(r, i, 1)),
		      "hostname", host, "state", PQgetvalue(r, i, 2), "online", online, "players",
		      (json_int_t)(players > 0 ? players : 0), "region", region, "instance",
		      instance, "bytes", (json_int_t)bytes, "created_at", PQgetvalue(r, i, 3));
	free(live_s);
	free(host_s);
	free(per_s);
	free(bytes_s);
	json_decref(live);
	return t;
}

/* The start of the user's current billing period (what the relays count usage against). */
static int64_t tun_period(PGconn *c, const char *user_id)
{
	const char *q[1] = { user_id };
	PGresult *r = db_exec(c, "SELECT coalesce(period_start, 0), coalesce(period_end, 0) FROM "
				 "users WHERE id = $1",
			      1, q);
	int64_t ps = 0, pe = 0, now = wall_s();

	if (r && PQntuples(r) == 1) {
		ps = atoll(PQgetvalue(r, 0, 0));
		pe = atoll(PQgetvalue(r, 0, 1));
	}
	PQclear(r);
	if (!(ps > 0 && pe > ps && now >= ps && now < pe))
		api_month(now, &ps, &pe);
	return ps;
}

/* One of the user's live tunnels as the answer (status), or 404. */
static void tun_answer_one(struct api *a, PGconn *c, const struct api_req *r,
			   struct api_resp *out, int status, const char *id)
{
	const char *q[2] = { id, r->user_id };
	PGresult *res = db_exec(c,
				"SELECT " TUN_COLS " FROM tunnels t WHERE t.id = $1 AND "
				"t.user_id = $2 AND t.deleted_at IS NULL",
				2, q);

	if (!res)
		api_error(out, 500, "internal", "database error");
	else if (PQntuples(res) != 1)
		api_error(out, 404, "not_found", "no such tunnel");
	else
		api_reply(out, status, tun_json(a, r->user_id, res, 0, tun_period(c, r->user_id)));
	PQclear(res);
}

void tunnels_list(struct api *a, const struct api_req *r, struct api_resp *out)
{
	const char *q[1] = { r->user_id };
	PGconn *c = db_get_or_503(a, out);
	PGresult *res;
	json_t *arr;
	int64_t period;

	if (!c)
		return;
	period = tun_period(c, r->user_id);
	res = db_exec(c,
		      "SELECT " TUN_COLS " FROM tunnels t WHERE t.user_id = $1 AND "
		      "t.deleted_at IS NULL ORDER BY t.created_at, t.id LIMIT 1000",
		      1, q);
	db_put(a, c, false);
	if (!res) {
		api_error(out, 500, "internal", "database error");
		return;
	}
	arr = json_array();
	for (int i = 0; i < PQntuples(res); i++)
		json_array_append_new(arr, tun_json(a, r->user_id, res, i, period));
	PQclear(res);
	api_reply(out, 200, json_pack("{s:o}", "tunnels", arr));
}

void tunnels_create(struct api *a, const struct api_req *r, struct api_resp *out)
{
	const char *q[1] = { r->user_id };
	const struct plan *pl;
	struct body_err err;
	char id[ID_LEN + 1];
	PGconn *c;
	PGresult *res = NULL;

	if (body_empty_object(r->body, r->body_len, &err)) {
		api_error(out, err.status, err.code, "%s", err.message);
		return;
	}
	c = db_get_or_503(a, out);
	if (!c)
		return;
	if (db_begin(c))
		goto fail;
	/* the user row lock serialises concurrent creates: two cannot both pass the count */
	res = db_exec(c,
		      "SELECT u.tier, (SELECT count(*) FROM tunnels t WHERE t.user_id = u.id AND "
		      "t.deleted_at IS NULL) FROM users u WHERE u.id = $1 FOR UPDATE",
		      1, q);
	if (!res || PQntuples(res) != 1)
		goto fail;
	pl = plans_find(&a->plans, PQgetvalue(res, 0, 0));
	if (!pl)
		pl = plans_default(&a->plans);
	if (atoi(PQgetvalue(res, 0, 1)) >= pl->max_tunnels) {
		db_rollback(c);
		api_error(out, 403, "plan_limit", "the %s plan allows %d tunnel%s", pl->title,
			  pl->max_tunnels, pl->max_tunnels == 1 ? "" : "s");
		goto out;
	}
	if (tunnels_insert(c, r->user_id, id) || db_commit(c))
		goto fail;
	tun_answer_one(a, c, r, out, 201, id);
	goto out;
fail:
	db_rollback(c);
	api_error(out, 500, "internal", "database error");
out:
	PQclear(res);
	db_put(a, c, false);
}

void tunnels_delete(struct api *a, const struct api_req *r, struct api_resp *out, const char *id)
{
	const char *q[2] = { id, r->user_id };
	json_t *events = NULL;
	PGconn *c = db_get_or_503(a, out);
	PGresult *res = NULL;

	if (!c)
		return;
	if (db_begin(c))
		goto fail;
	res = db_exec(c,
		      "UPDATE tunnels SET deleted_at = now() WHERE id = $1 AND user_id = $2 AND "
		      "deleted_at IS NULL RETURNING id",
		      2, q);
	if (!res)
		goto fail;
	if (PQntuples(res) != 1) {
		db_rollback(c);
		api_error(out, 404, "not_found", "no such tunnel");
		goto out;
	}
	if (db_run(c,
		   "UPDATE agent_tokens SET revoked_at = now() WHERE tunnel_id = $1 AND "
		   "revoked_at IS NULL",
		   1, q))
		goto fail;
	events = json_pack("[{s:s,s:s,s:s}]", "type", "tunnel", "tid", id, "reason", "deleted");
	/* a slot freed: a tunnel suspended by a downgrade may run again */
	if (!events ||
	    account_apply_limits(c, account_user_plan(c, &a->plans, r->user_id), r->user_id,
				 events) ||
	    account_commit_events(a, c, r->user_id, events))
		goto fail;
	api_reply(out, 204, NULL);
	goto out;
fail:
	db_rollback(c);
	api_error(out, 500, "internal", "database error");
out:
	json_decref(events);
	PQclear(res);
	db_put(a, c, false);
}

/* Is label held in Redis (by the relays) by a tunnel other than tid, in any region? 1 yes, 0 no,
 * -EIO when Redis cannot tell us. */
static int tun_label_taken_redis(struct api *a, const char *label, const char *tid)
{
	char key[256], *owner;
	const char *argv[2] = { "GET", key };
	int taken = 0;

	for (int i = 0; !taken && i < a->n_regions; i++) {
		redisReply *rep;

		snprintf(key, sizeof(key), "%s{%s.%s.%s}:owner", rstore_prefix(a->rs), label,
			 a->regions[i].name, a->o.base_domain);
		rep = rstore_cmd(a->rs, key, 2, argv, NULL);
		if (!rep || rep->type == REDIS_REPLY_ERROR) {
			if (rep)
				freeReplyObject(rep);
			return -EIO;
		}
		owner = rep->type == REDIS_REPLY_STRING ? rep->str : NULL;
		taken = owner && strcmp(owner, tid) != 0;
		freeReplyObject(rep);
	}
	return taken;
}

/* Set (label != NULL) or clear the tunnel's label and tell the relays (a `plan` event makes them
 * re-read the user's names). */
static void tun_label(struct api *a, const struct api_req *r, struct api_resp *out,
		      const char *id, const char *label)
{
	const char *q[3] = { id, r->user_id, label };
	json_t *events = NULL;
	PGconn *c = db_get_or_503(a, out);
	PGresult *res = NULL;

	if (!c)
		return;
	if (db_begin(c))
		goto fail;
	res = db_exec(c,
		      "UPDATE tunnels SET label = $3 WHERE id = $1 AND user_id = $2 AND "
		      "deleted_at IS NULL RETURNING id",
		      3, q);
	if (!res) {
		if (!strcmp(db_last_sqlstate(), "23505")) {
			db_rollback(c);
			api_error(out, 409, "name_taken", "'%s' is taken", label);
			goto out;
		}
		goto fail;
	}
	if (PQntuples(res) != 1) {
		db_rollback(c);
		api_error(out, 404, "not_found", "no such tunnel");
		goto out;
	}
	events = json_pack("[{s:s}]", "type", "plan");
	if (account_commit_events(a, c, r->user_id, events))
		goto fail;
	if (label)
		tun_answer_one(a, c, r, out, 200, id);
	else
		api_reply(out, 204, NULL);
	goto out;
fail:
	db_rollback(c);
	api_error(out, 500, "internal", "database error");
out:
	json_decref(events);
	PQclear(res);
	db_put(a, c, false);
}

void tunnels_set_label(struct api *a, const struct api_req *r, struct api_resp *out,
		       const char *id)
{
	const struct plan *pl;
	struct body_label bl;
	struct body_err err;
	PGconn *c;
	int taken;

	if (body_label(r->body, r->body_len, (const char *const *)a->reserved, &bl, &err)) {
		api_error(out, err.status, err.code, "%s", err.message);
		return;
	}
	c = db_get_or_503(a, out);
	if (!c)
		return;
	pl = account_user_plan(c, &a->plans, r->user_id);
	db_put(a, c, false);
	if (!pl->custom_names) {
		api_error(out, 403, "plan_required", "custom names need a plan with custom_names (%s has none)",
			  pl->title);
		return;
	}
	taken = tun_label_taken_redis(a, bl.label, id);
	if (taken < 0) {
		api_error(out, 503, "unavailable", "cannot check the name right now");
		return;
	}
	if (taken) {
		api_error(out, 409, "name_taken", "'%s' is taken", bl.label);
		return;
	}
	tun_label(a, r, out, id, bl.label);
}

void tunnels_clear_label(struct api *a, const struct api_req *r, struct api_resp *out,
			 const char *id)
{
	tun_label(a, r, out, id, NULL);
}
