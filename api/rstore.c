/* dvv-api's Redis: a synchronous cluster-aware client and the outbox sync thread (rstore.h). */
#include "rstore.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "apiint.h"
#include "db.h"
#include "log.h"
#include "plans.h"

#define RS_CONNS	8   /* connections used by concurrent callers */
#define RS_NODES	32  /* cluster nodes remembered */
#define RS_TRIES	6   /* redirects and retries per command */
#define RS_TIMEOUT_MS	2000
#define RS_POLL_MS	250 /* the outbox is looked at this often even without a kick */
#define RS_BATCH_USERS	100
#define RS_EVENTS_MAXLEN "100000"
#define RS_TRIM_MS	(10 * 60 * 1000)
#define RS_ADVISORY_NS	2   /* pg_advisory_xact_lock(2, hashtext(user)): one pusher per user */

struct rs_conn {
	pthread_mutex_t mu;
	redisContext *ctx[RS_NODES];
};

struct rstore {
	pthread_mutex_t mu; /* nodes, slots */
	char prefix[64];
	char node[RS_NODES][64];
	int n_nodes;
	int16_t slot[16384]; /* owner node index, -1 = unknown (ask node 0) */
	struct rs_conn conn[RS_CONNS];
	unsigned next;
	/* sync thread */
	pthread_t thr;
	bool running, stop, kicked;
	pthread_mutex_t kmu;
	pthread_cond_t kcv;
	unsigned long pushed;
};

/* ---- client ------------------------------------------------------------------------------ */

static uint16_t rs_crc16(const char *buf, size_t len)
{
	uint16_t crc = 0;

	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)((unsigned char)buf[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

/* Redis Cluster's key slot: the CRC16 of the {hash tag} if there is a non-empty one. */
static int rs_slot(const char *key)
{
	size_t len = strlen(key);
	const char *o = memchr(key, '{', len), *c;

	if (o) {
		c = memchr(o + 1, '}', len - (size_t)(o + 1 - key));
		if (c && c > o + 1)
			return rs_crc16(o + 1, (size_t)(c - o - 1)) & 16383;
	}
	return rs_crc16(key, len) & 16383;
}

static int rs_node_index(struct rstore *rs, const char *hostport)
{
	int i;

	for (i = 0; i < rs->n_nodes; i++)
		if (!strcmp(rs->node[i], hostport))
			return i;
	if (rs->n_nodes == RS_NODES)
		return 0;
	snprintf(rs->node[rs->n_nodes], sizeof(rs->node[0]), "%s", hostport);
	return rs->n_nodes++;
}

int rstore_new(const char *addr, const char *prefix, struct rstore **out)
{
	struct rstore *rs = calloc(1, sizeof(*rs));

	if (!rs)
		return -ENOMEM;
	if (!strchr(addr, ':') || strlen(addr) >= sizeof(rs->node[0]) ||
	    strlen(prefix) >= sizeof(rs->prefix)) {
		free(rs);
		return -EINVAL;
	}
	pthread_mutex_init(&rs->mu, NULL);
	pthread_mutex_init(&rs->kmu, NULL);
	pthread_cond_init(&rs->kcv, NULL);
	for (int i = 0; i < RS_CONNS; i++)
		pthread_mutex_init(&rs->conn[i].mu, NULL);
	snprintf(rs->prefix, sizeof(rs->prefix), "%s", prefix);
	memset(rs->slot, 0xff, sizeof(rs->slot));
	rs_node_index(rs, addr);
	*out = rs;
	return 0;
}

void rstore_free(struct rstore *rs)
{
	if (!rs)
		return;
	for (int i = 0; i < RS_CONNS; i++) {
		for (int n = 0; n < RS_NODES; n++)
			if (rs->conn[i].ctx[n])
				redisFree(rs->conn[i].ctx[n]);
		pthread_mutex_destroy(&rs->conn[i].mu);
	}
	pthread_cond_destroy(&rs->kcv);
	pthread_mutex_destroy(&rs->kmu);
	pthread_mutex_destroy(&rs->mu);
	free(rs);
}

const char *rstore_prefix(const struct rstore *rs) { return rs->prefix; }
unsigned long rstore_pushed(const struct rstore *rs) { return rs->pushed; }

static redisContext *rs_ctx(struct rstore *rs, struct rs_conn *cn, int node)
{
	struct timeval tv = { RS_TIMEOUT_MS / 1000, (RS_TIMEOUT_MS % 1000) * 1000 };
	char host[64], *colon;
	redisContext *ctx;

	if (cn->ctx[node])
		return cn->ctx[node];
	pthread_mutex_lock(&rs->mu);
	snprintf(host, sizeof(host), "%s", rs->node[node]);
	pthread_mutex_unlock(&rs->mu);
	colon = strrchr(host, ':');
	if (!colon)
		return NULL;
	*colon = '\0';
	ctx = redisConnectWithTimeout(host, atoi(colon + 1), tv);
	if (!ctx || ctx->err) {
		pr_rl(LOG_WARN, "redis %s:%s: %s", host, colon + 1,
		      ctx ? ctx->errstr : "out of memory");
		if (ctx)
			redisFree(ctx);
		return NULL;
	}
	redisSetTimeout(ctx, tv);
	cn->ctx[node] = ctx;
	return ctx;
}

redisReply *rstore_cmd(struct rstore *rs, const char *route_key, int argc, const char **argv,
		       const size_t *argvlen)
{
	struct rs_conn *cn = NULL;
	redisReply *rep = NULL;
	bool asking = false;
	int node = 0, slot = route_key ? rs_slot(route_key) : -1;
	unsigned start;

	pthread_mutex_lock(&rs->mu);
	start = rs->next++;
	if (slot >= 0 && rs->slot[slot] >= 0)
		node = rs->slot[slot];
	pthread_mutex_unlock(&rs->mu);
	for (unsigned i = 0; i < RS_CONNS && !cn; i++)
		if (!pthread_mutex_trylock(&rs->conn[(start + i) % RS_CONNS].mu))
			cn = &rs->conn[(start + i) % RS_CONNS];
	if (!cn) {
		cn = &rs->conn[start % RS_CONNS];
		pthread_mutex_lock(&cn->mu);
	}
	for (int tries = 0; tries < RS_TRIES; tries++) {
		redisContext *ctx = rs_ctx(rs, cn, node);
		char target[64];
		int s;

		if (!ctx)
			break;
		if (asking) {
			redisReply *a = redisCommand(ctx, "ASKING");

			if (a)
				freeReplyObject(a);
			asking = false;
		}
		rep = redisCommandArgv(ctx, argc, argv, argvlen);
		if (!rep) { /* broken or timed out: outcome unknown, reconnect next time */
			pr_rl(LOG_WARN, "redis %s: %s", rs->node[node], ctx->errstr);
			redisFree(ctx);
			cn->ctx[node] = NULL;
			break;
		}
		if (rep->type != REDIS_REPLY_ERROR)
			break;
		if (sscanf(rep->str, "MOVED %d %63s", &s, target) == 2) {
			pthread_mutex_lock(&rs->mu);
			node = rs_node_index(rs, target);
			if (s >= 0 && s < 16384)
				rs->slot[s] = (int16_t)node;
			pthread_mutex_unlock(&rs->mu);
		} else if (sscanf(rep->str, "ASK %d %63s", &s, target) == 2) {
			pthread_mutex_lock(&rs->mu);
			node = rs_node_index(rs, target);
			pthread_mutex_unlock(&rs->mu);
			asking = true;
		} else if (!strncmp(rep->str, "TRYAGAIN", 8) || !strncmp(rep->str, "CLUSTERDOWN", 11) ||
			   !strncmp(rep->str, "LOADING", 7)) {
			usleep(100 * 1000);
		} else {
			break; /* a real error: the caller sees it */
		}
		freeReplyObject(rep);
		rep = NULL;
	}
	pthread_mutex_unlock(&cn->mu);
	return rep;
}

/* ---- outbox sync ------------------------------------------------------------------------- */

/* Rewrites one user's derived keys atomically (the relays never see half a state). KEYS: plan,
 * revoked, blocked, names. ARGV[1]: {"plan":[k,v,...],"revoked":[jti,exp,...],"blocked":[tid],
 * "names":[tid,label,...]}, every value a string (Lua numbers would lose 64-bit precision). */
static const char rs_rewrite_lua[] =
	"local s = cjson.decode(ARGV[1])\n"
	"redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])\n"
	"if #s.plan > 0 then redis.call('HSET', KEYS[1], unpack(s.plan)) end\n"
	"for i = 1, #s.revoked, 2 do redis.call('ZADD', KEYS[2], s.revoked[i+1], s.revoked[i]) end\n"
	"for i = 1, #s.blocked do redis.call('SADD', KEYS[3], s.blocked[i]) end\n"
	"for i = 1, #s.names, 2 do redis.call('HSET', KEYS[4], s.names[i], s.names[i+1]) end\n"
	"return 1\n";

static void rs_kv(json_t *arr, const char *k, const char *v)
{
	json_array_append_new(arr, json_string(k));
	json_array_append_new(arr, json_string(v));
}

static void rs_kv_int(json_t *arr, const char *k, long long v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%lld", v);
	rs_kv(arr, k, buf);
}

/* The user's derived state as the script's argument; NULL on a database error. */
static json_t *rs_state(struct api *a, PGconn *c, const char *user, const char *version)
{
	const char *p[1] = { user };
	const struct plan *pl;
	PGresult *r = NULL;
	json_t *st, *plan, *rev, *blk, *names;

	st = json_pack("{s:[],s:[],s:[],s:[]}", "plan", "revoked", "blocked", "names");
	if (!st)
		return NULL;
	plan = json_object_get(st, "plan");
	rev = json_object_get(st, "revoked");
	blk = json_object_get(st, "blocked");
	names = json_object_get(st, "names");
	r = db_exec(c, "SELECT tier, plan_status, period_start, period_end FROM users WHERE id = $1",
		    1, p);
	if (!r)
		goto fail;
	if (PQntuples(r) == 1) {
		pl = plans_find(&a->plans, PQgetvalue(r, 0, 0));
		if (!pl)
			pl = plans_default(&a->plans);
		rs_kv(plan, "tier", pl->tier);
		rs_kv_int(plan, "max_tunnels", pl->max_tunnels);
		rs_kv_int(plan, "custom_names", pl->custom_names);
		rs_kv_int(plan, "idle_timeout_s", pl->idle_timeout_s);
		rs_kv_int(plan, "bandwidth_bytes", (long long)pl->bandwidth_bytes);
		rs_kv_int(plan, "max_players", pl->max_players);
		rs_kv_int(plan, "priority", pl->priority);
		if (!PQgetisnull(r, 0, 2) && !PQgetisnull(r, 0, 3)) {
			rs_kv(plan, "period_start", PQgetvalue(r, 0, 2));
			rs_kv(plan, "period_end", PQgetvalue(r, 0, 3));
		}
		rs_kv(plan, "status", PQgetvalue(r, 0, 1));
		rs_kv(plan, "version", version);
		PQclear(r);
		r = db_exec(c,
			    "SELECT t.id, t.label FROM tunnels t JOIN users u ON u.id = t.user_id "
			    "WHERE t.user_id = $1 AND t.label IS NOT NULL AND t.deleted_at IS NULL "
			    "AND t.state = 'active'",
			    1, p);
		if (!r)
			goto fail;
		for (int i = 0; pl->custom_names && i < PQntuples(r); i++)
			rs_kv(names, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
	}
	PQclear(r);
	r = db_exec(c,
		    "SELECT id, extract(epoch FROM expires_at)::bigint FROM agent_tokens "
		    "WHERE user_id = $1 AND revoked_at IS NOT NULL AND expires_at > now()",
		    1, p);
	if (!r)
		goto fail;
	for (int i = 0; i < PQntuples(r); i++)
		rs_kv(rev, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
	PQclear(r);
	/* deleted tunnels stay blocked while a token for them could still be valid (365 days) */
	r = db_exec(c,
		    "SELECT id FROM tunnels WHERE user_id = $1 AND (state = 'suspended' OR "
		    "(deleted_at IS NOT NULL AND deleted_at > now() - interval '366 days'))",
		    1, p);
	if (!r)
		goto fail;
	for (int i = 0; i < PQntuples(r); i++)
		json_array_append_new(blk, json_string(PQgetvalue(r, i, 0)));
	PQclear(r);
	return st;
fail:
	PQclear(r);
	json_decref(st);
	return NULL;
}

static int rs_push_state(struct rstore *rs, const char *user, json_t *st)
{
	char keys[4][160], *arg;
	const char *argv[8];
	redisReply *rep;
	int ret = -EIO;

	snprintf(keys[0], sizeof(keys[0]), "%suser:{%s}:plan", rs->prefix, user);
	snprintf(keys[1], sizeof(keys[1]), "%suser:{%s}:revoked", rs->prefix, user);
	snprintf(keys[2], sizeof(keys[2]), "%suser:{%s}:blocked", rs->prefix, user);
	snprintf(keys[3], sizeof(keys[3]), "%suser:{%s}:names", rs->prefix, user);
	arg = json_dumps(st, JSON_COMPACT);
	if (!arg)
		return -ENOMEM;
	argv[0] = "EVAL";
	argv[1] = rs_rewrite_lua;
	argv[2] = "4";
	for (int i = 0; i < 4; i++)
		argv[3 + i] = keys[i];
	argv[7] = arg;
	rep = rstore_cmd(rs, keys[0], 8, argv, NULL);
	if (rep && rep->type == REDIS_REPLY_INTEGER)
		ret = 0;
	else
		pr_rl(LOG_WARN, "redis: rewriting user %s: %s", user,
		      rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "no answer");
	if (rep)
		freeReplyObject(rep);
	free(arg);
	return ret;
}

/* XADD every event of one outbox row: type, sub, then the row's other fields. */
static int rs_push_events(struct rstore *rs, const char *user, const char *events_json)
{
	char stream[96];
	json_t *events = json_loads(events_json, 0, NULL), *ev, *v;
	const char *argv[32], *k;
	size_t i;
	int ret = 0;

	if (!json_is_array(events)) {
		json_decref(events);
		return 0; /* nothing we can send; the state rewrite already happened */
	}
	snprintf(stream, sizeof(stream), "%s{ctl}:events", rs->prefix);
	json_array_foreach(events, i, ev) {
		int n = 0;
		redisReply *rep;

		argv[n++] = "XADD";
		argv[n++] = stream;
		argv[n++] = "MAXLEN";
		argv[n++] = "~";
		argv[n++] = RS_EVENTS_MAXLEN;
		argv[n++] = "*";
		argv[n++] = "type";
		argv[n++] = json_string_value(json_object_get(ev, "type"));
		argv[n++] = "sub";
		argv[n++] = user;
		if (!argv[7])
			continue;
		json_object_foreach(ev, k, v) {
			if (!strcmp(k, "type") || !json_is_string(v) || n + 2 > 32)
				continue;
			argv[n++] = k;
			argv[n++] = json_string_value(v);
		}
		rep = rstore_cmd(rs, stream, n, argv, NULL);
		if (!rep || rep->type == REDIS_REPLY_ERROR) {
			pr_rl(LOG_WARN, "redis: XADD %s: %s", stream,
			      rep ? rep->str : "no answer");
			ret = -EIO;
		}
		if (rep)
			freeReplyObject(rep);
		if (ret)
			break;
	}
	json_decref(events);
	return ret;
}

/* Push one user's pending rows. 0 (done or nothing to do) or -errno (rows stay). */
static int rs_sync_user(struct api *a, PGconn *c, const char *user)
{
	const char *p[2] = { user, NULL };
	char ns[8], version[24];
	PGresult *rows = NULL;
	json_t *st = NULL;
	int ret;

	ret = db_begin(c);
	if (ret)
		return ret;
	snprintf(ns, sizeof(ns), "%d", RS_ADVISORY_NS);
	p[1] = user;
	p[0] = ns;
	ret = db_run(c, "SELECT pg_advisory_xact_lock($1::int, hashtext($2))", 2, p);
	if (ret)
		goto out;
	ret = -EIO; /* until the rows are pushed and deleted */
	p[0] = user;
	rows = db_exec(c,
		       "SELECT id, events::text FROM redis_outbox WHERE user_id = $1 ORDER BY id "
		       "FOR UPDATE",
		       1, p);
	if (!rows)
		goto out;
	if (PQntuples(rows) == 0) { /* another API pushed them while we waited */
		ret = db_commit(c);
		goto out;
	}
	snprintf(version, sizeof(version), "%s", PQgetvalue(rows, PQntuples(rows) - 1, 0));
	st = rs_state(a, c, user, version);
	if (!st)
		goto out;
	ret = rs_push_state(a->rs, user, st);
	for (int i = 0; !ret && i < PQntuples(rows); i++)
		ret = rs_push_events(a->rs, user, PQgetvalue(rows, i, 1));
	if (ret)
		goto out;
	p[1] = version;
	ret = db_run(c, "DELETE FROM redis_outbox WHERE user_id = $1 AND id <= $2::bigint", 2, p) ?:
	      db_commit(c);
	if (!ret)
		__atomic_add_fetch(&a->rs->pushed, (unsigned long)PQntuples(rows), __ATOMIC_RELAXED);
out:
	if (ret)
		db_rollback(c);
	PQclear(rows);
	json_decref(st);
	return ret;
}

int rstore_sync_all(struct api *a)
{
	PGconn *c = db_get(a);
	PGresult *r = NULL;
	int ret = 0;

	if (!c)
		return -EAGAIN;
	for (;;) {
		r = db_exec(c,
			    "SELECT user_id FROM redis_outbox GROUP BY user_id ORDER BY min(id) "
			    "LIMIT " "100",
			    0, NULL);
		if (!r) {
			ret = -EIO;
			break;
		}
		if (PQntuples(r) == 0)
			break;
		for (int i = 0; !ret && i < PQntuples(r); i++)
			ret = rs_sync_user(a, c, PQgetvalue(r, i, 0));
		if (ret || PQntuples(r) < RS_BATCH_USERS)
			break;
		PQclear(r);
		r = NULL;
	}
	PQclear(r);
	db_put(a, c, ret == -EIO && PQstatus(c) != CONNECTION_OK);
	return ret;
}

void rstore_kick(struct rstore *rs)
{
	pthread_mutex_lock(&rs->kmu);
	rs->kicked = true;
	pthread_cond_signal(&rs->kcv);
	pthread_mutex_unlock(&rs->kmu);
}

/* Queue a rewrite for users whose revoked tokens expired lately, so the rewrite drops them from
 * the revoked set (the relays ignore expired entries anyway; this keeps the set small). */
static void rs_trim_expired(struct api *a, const char *window)
{
	const char *q[1] = { window };
	PGconn *c = db_get(a);
	PGresult *r;

	if (!c)
		return;
	r = db_exec(c,
		    "INSERT INTO redis_outbox (user_id) SELECT DISTINCT user_id FROM agent_tokens "
		    "WHERE revoked_at IS NOT NULL AND expires_at <= now() AND "
		    "expires_at > now() - $1::interval",
		    1, q);
	PQclear(r);
	db_put(a, c, !r);
}

static void *rs_thread(void *arg)
{
	struct api *a = arg;
	struct rstore *rs = a->rs;
	uint64_t next_trim = 0;

	for (;;) {
		struct timespec dl;

		pthread_mutex_lock(&rs->kmu);
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_nsec += RS_POLL_MS * 1000000L;
		if (dl.tv_nsec >= 1000000000L) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000L;
		}
		while (!rs->kicked && !rs->stop)
			if (pthread_cond_timedwait(&rs->kcv, &rs->kmu, &dl) == ETIMEDOUT)
				break;
		rs->kicked = false;
		if (rs->stop) {
			pthread_mutex_unlock(&rs->kmu);
			break;
		}
		pthread_mutex_unlock(&rs->kmu);
		if (mono_ms() >= next_trim) {
			/* every 10 min over the last 20 (2 days at start: what a stopped API missed) */
			rs_trim_expired(a, next_trim ? "20 minutes" : "2 days");
			next_trim = mono_ms() + RS_TRIM_MS;
		}
		rstore_sync_all(a);
	}
	return NULL;
}

int rstore_sync_start(struct api *a)
{
	int ret;

	rstore_sync_all(a); /* what a previous run left behind (Redis may still be down: later) */
	ret = -pthread_create(&a->rs->thr, NULL, rs_thread, a);
	if (!ret)
		a->rs->running = true;
	return ret;
}

void rstore_sync_stop(struct api *a)
{
	if (!a->rs || !a->rs->running)
		return;
	pthread_mutex_lock(&a->rs->kmu);
	a->rs->stop = true;
	pthread_cond_signal(&a->rs->kcv);
	pthread_mutex_unlock(&a->rs->kmu);
	pthread_join(a->rs->thr, NULL);
	a->rs->running = false;
}
