/* The relay's Redis side: key schema, Lua scripts, registration, lease renewal, instance
 * heartbeat, route lookups and placement. rredis.h states the contract; docs/redis.md the keys. */
#include "rredis.h"
#include "auth.h"
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "names.h"
#include "plan.h"
#include "rcluster.h"
#include "relay.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RENEW_BATCH 128	    /* names per renew call against a standalone Redis */
#define NCAND 6		    /* random names tried per registration */

/* Keys. Everything about one name shares the hash tag {hostname}; everything about the
 * instances of a region shares {region}; a tunnel's name record is tagged by its tunnel id.
 * Each script below touches one slot, so it runs unchanged on a Redis Cluster. */
#define K_ROUTE "%s{%s}:route"	 /* "<instance> <epoch> <internal addr>", lease TTL */
#define K_EPOCH "%s{%s}:epoch"	 /* fencing epoch counter */
#define K_OWNER "%s{%s}:owner"	 /* tunnel id holding the name */
#define K_TUNNEL "%stunnel:{%s}" /* name held by a tunnel id */
#define K_LOAD "%s{%s}:load"	 /* zset instance -> load score */
#define K_AGENTS "%s{%s}:agents" /* hash instance -> agent address (for MOVE) */
#define K_ALIVE "%s{%s}:alive:%s"
#define K_INFO "%s{%s}:info:%s"
/* A user's keys, written by the API (usage and live by the relays), all in the user's slot
 * {<sub>}: the admit script reads them in one call. */
#define K_PLAN "%suser:{%s}:plan"	/* hash: tier and limits (plan.h) */
#define K_REVOKED "%suser:{%s}:revoked" /* zset jti -> exp */
#define K_BLOCKED "%suser:{%s}:blocked" /* set of tids that must not run */
#define K_NAMES "%suser:{%s}:names"	/* hash tid -> reserved custom label */
#define K_USAGE "%suser:{%s}:usage"	/* hash period, bytes, t:<tid> */
#define K_STATUS "%s{%s}:status" /* sanitized status JSON of the name's server, name grace TTL */
#define K_DOWN "%s{%s}:down"	 /* why the name's tunnel was closed ("idle"), name grace TTL */


struct rredis {
	struct relay *r;
	rredis_each_lease_fn each_lease; /* the tunnel side, from rredis_start */
	rredis_lost_fn lease_lost;
	struct rc *rc;
	bool up;
	bool resync;	    /* (re)connected: the next renewal pass re-creates missing name records */
	int pending;	    /* commands in flight during shutdown */
	uint64_t last_renew_ms;
	char pick[128];	    /* the heartbeat's placement answer: "" = stay here */
};

/* Name claim, for the tunnel's own name (or the custom label it insists on) and for a random
 * candidate alike: refused if another tunnel holds the name. A claim clears the name's `down`
 * mark (the tunnel is back).
 * KEYS route epoch owner down; ARGV tid instance addr lease grace */
static const char claim_lua[] =
	"local owner = redis.call('GET', KEYS[3])\n"
	"if owner and owner ~= ARGV[1] then return redis.error_reply('NAMETAKEN') end\n"
	"redis.call('DEL', KEYS[4])\n"
	"redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[5])\n"
	"local epoch = redis.call('INCR', KEYS[2])\n"
	"redis.call('EXPIRE', KEYS[2], ARGV[5])\n"
	"redis.call('SET', KEYS[1], ARGV[2]..' '..epoch..' '..ARGV[3], 'EX', ARGV[4])\n"
	"return epoch\n";

/* Give back a name claimed by a registration that lost a race. KEYS owner route; ARGV tid */
static const char unclaim_lua[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end\n"
	"return 1\n";

/* Lease renewal for many names (one per call on a cluster). A lease still ours is extended; a
 * lease that vanished (Redis restarted or was flushed) is re-created from what this relay
 * holds unless a newer epoch or another owner exists; otherwise it is reported lost.
 * KEYS: (route epoch owner) per name; ARGV: instance addr lease grace, then (epoch tid) per name.
 * Returns the 1-based indexes of lost names. */
static const char renew_lua[] =
	"local me, addr, lease, grace = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
	"local lost = {}\n"
	"for i = 1, #KEYS / 3 do\n"
	"  local rk, ek, ok = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]\n"
	"  local epoch, tid = ARGV[3 + 2*i], ARGV[4 + 2*i]\n"
	"  local mine = me..' '..epoch..' '..addr\n"
	"  local v = redis.call('GET', rk)\n"
	"  local keep = false\n"
	"  if v == mine then\n"
	"    redis.call('EXPIRE', rk, lease) keep = true\n"
	"  elseif not v then\n"
	"    local cur = tonumber(redis.call('GET', ek) or '0')\n"
	"    local o = redis.call('GET', ok)\n"
	"    if cur <= tonumber(epoch) and (not o or o == tid) then\n"
	"      redis.call('SET', ek, epoch, 'EX', grace)\n"
	"      redis.call('SET', rk, mine, 'EX', lease) keep = true\n"
	"    end\n"
	"  end\n"
	"  if keep then\n"
	"    redis.call('SET', ok, tid, 'EX', grace) redis.call('EXPIRE', ek, grace)\n"
	"  else lost[#lost+1] = i end\n"
	"end\n"
	"return lost\n";

/* Admission of a registration, and the re-read after a `plan` event: everything about the user
 * in one call on the user's slot. KEYS plan revoked blocked names usage; ARGV jti tid (either
 * may be "": not checked). Returns {plan fields (HGETALL), revoked 0/1, blocked 0/1, the tid's
 * reserved label or nil, usage period or nil, usage bytes or nil, all names (HGETALL) when no
 * tid was given}. A plan key of the wrong type reads as no plan (the token's claim stands, as
 * before); the revocation and block keys fail the call (registration: "unavailable"). */
static const char admit_lua[] =
	"local ok, plan = pcall(redis.call, 'HGETALL', KEYS[1])\n"
	"if not ok then plan = {} end\n"
	"local revoked, blocked, label, names = 0, 0, false, {}\n"
	"if ARGV[1] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[1]) then revoked = 1 end\n"
	"if ARGV[2] ~= '' then\n"
	"  blocked = redis.call('SISMEMBER', KEYS[3], ARGV[2])\n"
	"  label = redis.call('HGET', KEYS[4], ARGV[2])\n"
	"else\n"
	"  names = redis.call('HGETALL', KEYS[4])\n"
	"end\n"
	"local u = redis.call('HMGET', KEYS[5], 'period', 'bytes')\n"
	"return {plan, revoked, blocked, label, u[1], u[2], names}\n";

/* KEYS route; ARGV "<instance> <epoch> <addr>" */
static const char release_lua[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end\n"
	"return 0\n";

/* Heartbeat of one instance, reaping of dead ones and the placement answer, all in the region's
 * slot. KEYS load agents alive info; ARGV id ttl state score agent_addr grace alive_prefix
 * info_prefix margin, then info field/value pairs. Dead = in the load set without an alive key.
 * Returns {reaped, pick, relays}: pick is the agent address of the least-loaded instance when it
 * beats us by more than margin, else false; relays is the live instances' id and internal
 * address, in pairs (where data connections for their attach tokens are forwarded). Scores change only at heartbeats, so this answer is as
 * fresh as one read per registration was, without a Redis call per registration. */
static const char heartbeat_lua[] =
	"local id = ARGV[1]\n"
	"redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2])\n"
	"local info = {}\n"
	"for i = 10, #ARGV do info[#info+1] = ARGV[i] end\n"
	"redis.call('HSET', KEYS[4], unpack(info))\n"
	"redis.call('EXPIRE', KEYS[4], ARGV[6])\n"
	"if ARGV[3] == 'alive' then\n"
	"  redis.call('ZADD', KEYS[1], ARGV[4], id)\n"
	"  redis.call('HSET', KEYS[2], id, ARGV[5])\n"
	"else\n"
	"  redis.call('ZREM', KEYS[1], id) redis.call('HDEL', KEYS[2], id)\n"
	"end\n"
	"local reaped = 0\n"
	"local relays = {}\n"
	"for _, other in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
	"  if redis.call('EXISTS', ARGV[7]..other) == 0 then\n"
	"    redis.call('ZREM', KEYS[1], other) redis.call('HDEL', KEYS[2], other)\n"
	"    redis.call('DEL', ARGV[8]..other) reaped = reaped + 1\n"
	"  elseif other ~= id and #relays < 128 then\n"
	"    local a = redis.call('HGET', ARGV[8]..other, 'internal_addr')\n"
	"    if a and a ~= '-' then relays[#relays+1] = other relays[#relays+1] = a end\n"
	"  end\n"
	"end\n"
	"local pick = false\n"
	"local best = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
	"if #best > 0 and best[1] ~= id then\n"
	"  local mine = redis.call('ZSCORE', KEYS[1], id)\n"
	"  if not mine or tonumber(mine) > tonumber(best[2]) + tonumber(ARGV[9]) then\n"
	"    pick = redis.call('HGET', KEYS[2], best[1])\n"
	"  end\n"
	"end\n"
	"return {reaped, pick, relays}\n";

/* Active instances of the region other than us, least loaded first, as agent addresses.
 * KEYS load agents; ARGV id max */
static const char targets_lua[] =
	"local out = {}\n"
	"for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
	"  if id ~= ARGV[1] then\n"
	"    local a = redis.call('HGET', KEYS[2], id)\n"
	"    if a then out[#out+1] = a end\n"
	"    if #out >= tonumber(ARGV[2]) then break end\n"
	"  end\n"
	"end\n"
	"return out\n";

/* ---- plumbing ---- */

/* Scripts go by their SHA1 (EVALSHA): the text crosses the network only when a server does not
 * have it yet (NOSCRIPT: after a restart, a failover to a fresh replica, SCRIPT FLUSH), and then
 * the same call is sent again as EVAL, which also loads it. A script that answered NOSCRIPT did
 * not run, so the retry cannot run it twice. */
#define SCRIPTS_MAX 16

static const char *script_sha(const char *script)
{
	static struct {
		const char *script;
		char sha[41];
	} known[SCRIPTS_MAX];
	for (int i = 0; i < SCRIPTS_MAX; i++) {
		if (known[i].script == script)
			return known[i].sha;
		if (known[i].script)
			continue;
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned int len = 0;
		if (!EVP_Digest(script, strlen(script), md, &len, EVP_sha1(), NULL) || len != 20)
			return NULL;
		for (unsigned j = 0; j < len; j++)
			snprintf(known[i].sha + 2 * j, 3, "%02x", md[j]);
		known[i].script = script; /* the scripts are static strings */
		return known[i].sha;
	}
	return NULL; /* more scripts than slots: plain EVAL */
}

/* One script call in flight: a copy of its arguments, for the EVAL retry after NOSCRIPT. */
struct eval_call {
	rc_reply_cb cb;
	void *priv;
	const char *script;
	int argc;
	const char **argv;
	size_t *argl;
	size_t route_len;
	char *route_key;
};

static void eval_reply(struct rc *rc, redisReply *rep, void *priv)
{
	struct eval_call *e = priv;
	if (rep && rep->type == REDIS_REPLY_ERROR && rep->str && !strncmp(rep->str, "NOSCRIPT", 8)) {
		e->argv[0] = "EVAL";
		e->argv[1] = e->script;
		e->argl[0] = 4;
		e->argl[1] = strlen(e->script);
		M_INC(redis_script_loads_total);
		if (rc_command_argv(rc, e->route_key, e->route_len, e->cb, e->priv, e->argc, e->argv,
				    e->argl) == 0) {
			free(e);
			return;
		}
		rep = NULL; /* could not even queue it: the outcome is a failure */
	}
	if (e->cb)
		e->cb(rc, rep, e->priv);
	free(e);
}

/* EVALSHA (EVAL if the script has no SHA slot) of script with its keys and args. */
static int eval(struct rredis *rd, const char *route_key, rc_reply_cb cb, void *priv,
		const char *script, int nkeys, const char **keys, int nargs, const char **args)
{
	int argc = 3 + nkeys + nargs;
	char nk[12];
	const char *sha = script_sha(script);
	snprintf(nk, sizeof(nk), "%d", nkeys);
	/* one allocation: the call, the pointer and length arrays, then every string */
	size_t route_len = strlen(route_key), strings = route_len + 1 + strlen(nk) + 1;
	for (int i = 0; i < nkeys; i++)
		strings += strlen(keys[i]) + 1;
	for (int i = 0; i < nargs; i++)
		strings += strlen(args[i]) + 1;
	struct eval_call *e = malloc(sizeof(*e) + (size_t)argc * (sizeof(char *) + sizeof(size_t)) +
				     strings);
	if (!e)
		return -ENOMEM;
	*e = (struct eval_call){
		.cb = cb, .priv = priv, .script = script, .argc = argc, .route_len = route_len};
	e->argv = (const char **)(e + 1);
	e->argl = (size_t *)(e->argv + argc);
	char *p = (char *)(e->argl + argc);
	e->route_key = memcpy(p, route_key, route_len + 1);
	p += route_len + 1;
	e->argv[0] = sha ? "EVALSHA" : "EVAL";
	e->argv[1] = sha ? sha : script;
	e->argl[0] = strlen(e->argv[0]);
	e->argl[1] = strlen(e->argv[1]);
	for (int i = 2; i < argc; i++) {
		const char *src = i == 2 ? nk : i < 3 + nkeys ? keys[i - 3] : args[i - 3 - nkeys];
		size_t n = strlen(src);
		e->argv[i] = memcpy(p, src, n + 1);
		e->argl[i] = n;
		p += n + 1;
	}
	int rc = rc_command_argv(rd->rc, e->route_key, route_len, eval_reply, e, argc, e->argv,
				 e->argl);
	if (rc)
		free(e);
	return rc;
}

struct eval_ext {
	struct relay *r;
	rredis_reply_fn cb;
	void *priv;
};

static void eval_ext_reply(struct rc *rc, redisReply *rep, void *priv)
{
	struct eval_ext *x = priv;
	x->cb(x->r, x->priv, rep);
	free(x);
}

int rredis_eval(struct relay *r, const char *route_key, rredis_reply_fn cb, void *priv,
		const char *script, int nkeys, const char **keys, int nargs, const char **args)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return -ENOTCONN;
	struct eval_ext *x = malloc(sizeof(*x));
	if (!x)
		return -ENOMEM;
	*x = (struct eval_ext){.r = r, .cb = cb, .priv = priv};
	int rc = eval(rd, route_key, eval_ext_reply, x, script, nkeys, keys, nargs, args);
	if (rc)
		free(x);
	return rc;
}

static void count_err(struct rc *rc, redisReply *rep, void *priv)
{
	struct rredis *rd = priv;
	if (rd)
		rd->pending--;
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		M_INC(redis_errors_total);
		if (rep)
			pr_rl(LOG_WARN, "redis: %s", rep->str);
	}
}

static void on_state(struct rc *rc, bool up, void *data)
{
	struct relay *r = data;
	struct rredis *rd = r->redis;
	rd->up = up;
	M_SET(redis_up, up ? 1 : 0);
	if (up) {
		/* register now and re-assert every lease we hold (reconciliation after an outage) */
		rd->last_renew_ms = 0;
		rd->resync = true;
		rredis_heartbeat(r);
	}
}

/* Every answered command: its result and latency, for /metrics. */
static void observe(void *data, uint64_t us, const redisReply *rep)
{
	static const uint64_t bounds[REDIS_LAT_N] = {REDIS_LAT_BUCKETS_US};
	(void)data;
	enum redis_result res = !rep ? REDIS_RES_failed
			       : rep->type == REDIS_REPLY_ERROR ? REDIS_RES_error
								: REDIS_RES_ok;
	atomic_fetch_add_explicit(&g_metrics.redis_results[res], 1, memory_order_relaxed);
	size_t b = 0;
	while (b < REDIS_LAT_N && us > bounds[b])
		b++;
	atomic_fetch_add_explicit(&g_metrics.redis_lat[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&g_metrics.redis_lat_sum_us, (int64_t)us, memory_order_relaxed);
}

int rredis_start(struct relay *r, rredis_each_lease_fn each_lease, rredis_lost_fn lease_lost)
{
	struct rredis *rd = calloc(1, sizeof(*rd));
	if (!rd)
		return -ENOMEM;
	rd->r = r;
	rd->each_lease = each_lease;
	rd->lease_lost = lease_lost;
	r->redis = rd;
	rd->rc = rc_new(&r->loop, r->cfg.redis, on_state, r);
	if (!rd->rc) {
		pr_err("--redis '%s': want host:port[,host:port...]", r->cfg.redis);
		free(rd);
		r->redis = NULL;
		return -EINVAL;
	}
	rc_set_observer(rd->rc, observe, NULL);
	return 0;
}

bool rredis_up(const struct relay *r) { return r->redis && r->redis->up; }

struct rc *rredis_rc(struct relay *r) { return rredis_up(r) ? r->redis->rc : NULL; }

void rredis_forget_name(struct relay *r, const char *tid)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return;
	char kt[160];
	snprintf(kt, sizeof(kt), K_TUNNEL, r->cfg.redis_prefix, tid);
	if (rc_command(rd->rc, kt, count_err, rd, "DEL %s", kt) == 0)
		rd->pending++;
}

static void route_value(const struct relay *r, uint64_t epoch, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s %llu %s", r->cfg.instance_id, (unsigned long long)epoch,
		 r->internal_addr[0] ? r->internal_addr : "-");
}

/* ---- admission: the user's keys ---- */

/* The admit script's reply, parsed. Strings point into the reply. */
struct admit_reply {
	struct plan_limits plan; /* from_redis false: no (valid) plan hash */
	bool revoked, blocked;
	const char *label;	 /* reserved label of the tid asked about, or NULL */
	uint64_t used_bytes;	 /* this period's usage (0 when the hash counts another period) */
	const redisReply *names; /* HGETALL names (when no tid was given) */
};

static const char *reply_str(const redisReply *e, size_t max)
{
	return e && e->type == REDIS_REPLY_STRING && e->len <= max ? e->str : NULL;
}

/* 0, or -EPROTO for a reply of the wrong shape (counts as a Redis failure). */
static int admit_parse(const redisReply *rep, const char *sub, const char *claim_tier,
		       struct admit_reply *out)
{
	memset(out, 0, sizeof(*out));
	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 7 ||
	    rep->element[0]->type != REDIS_REPLY_ARRAY || rep->element[6]->type != REDIS_REPLY_ARRAY)
		return -EPROTO;
	const redisReply *ph = rep->element[0];
	const char *kv[64];
	size_t kl[64], n = 0;
	for (size_t i = 0; i < ph->elements && n < 64; i++) {
		if (ph->element[i]->type != REDIS_REPLY_STRING)
			return -EPROTO;
		kv[n] = ph->element[i]->str;
		kl[n++] = ph->element[i]->len;
	}
	char err[96];
	int rc = plan_from_hash(&out->plan, kv, kl, n, err, sizeof(err));
	if (rc == -EINVAL)
		pr_rl(LOG_WARN, "redis: user %s: %s: ignored, the token's plan claim applies", sub,
		      err);
	if (rc)
		plan_from_claim(&out->plan, claim_tier);
	out->revoked = rep->element[1]->type == REDIS_REPLY_INTEGER && rep->element[1]->integer;
	out->blocked = rep->element[2]->type == REDIS_REPLY_INTEGER && rep->element[2]->integer;
	const char *label = reply_str(rep->element[3], AUTH_LABEL_MAX);
	if (label && auth_valid_label(label, strlen(label)))
		out->label = label;
	else if (label)
		pr_rl(LOG_WARN, "redis: user %s: reserved label is not a DNS label: ignored", sub);
	/* the usage hash counts one period: another period's bytes are not this one's */
	const char *period = reply_str(rep->element[4], 20), *bytes = reply_str(rep->element[5], 20);
	int64_t ps, pe;
	plan_period(&out->plan, (int64_t)wall_s(), &ps, &pe);
	if (period && bytes && strtoll(period, NULL, 10) == ps)
		out->used_bytes = strtoull(bytes, NULL, 10);
	out->names = rep->element[6];
	return 0;
}

static int admit_send(struct rredis *rd, const char *sub, const char *jti, const char *tid,
		      rc_reply_cb cb, void *priv)
{
	const char *p = rd->r->cfg.redis_prefix;
	char kp[160], kr[160], kb[160], kn[160], ku[160];
	snprintf(kp, sizeof(kp), K_PLAN, p, sub);
	snprintf(kr, sizeof(kr), K_REVOKED, p, sub);
	snprintf(kb, sizeof(kb), K_BLOCKED, p, sub);
	snprintf(kn, sizeof(kn), K_NAMES, p, sub);
	snprintf(ku, sizeof(ku), K_USAGE, p, sub);
	const char *keys[] = {kp, kr, kb, kn, ku};
	const char *args[] = {jti, tid};
	return eval(rd, kp, cb, priv, admit_lua, 5, keys, 2, args);
}

struct user_ctx {
	struct relay *r;
	rredis_user_cb cb;
	void *priv;
	char sub[AUTH_ID_MAX + 1];
	uint64_t sent_ms;
};

static void on_user(struct rc *rc, redisReply *rep, void *priv)
{
	struct user_ctx *c = priv;
	struct admit_reply a;
	struct rredis_user res = {.sub = c->sub};
	M_SET(admit_last_us, (int64_t)(mono_ms() - c->sent_ms) * 1000);
	if (!rep || admit_parse(rep, c->sub, "free", &a)) {
		M_INC(redis_errors_total);
		if (rep && rep->type == REDIS_REPLY_ERROR)
			pr_rl(LOG_WARN, "redis: plan of user %s: %s", c->sub, rep->str);
		res.err = true;
	} else {
		res.plan = &a.plan;
		res.used_bytes = a.used_bytes;
		const redisReply *nm = a.names;
		for (size_t i = 0; i + 1 < nm->elements && res.nnames < RREDIS_NAMES_MAX; i += 2) {
			const char *tid = reply_str(nm->element[i], AUTH_ID_MAX);
			const char *label = reply_str(nm->element[i + 1], AUTH_LABEL_MAX);
			if (tid && label) {
				res.name_tid[res.nnames] = tid;
				res.name_label[res.nnames++] = label;
			}
		}
	}
	c->cb(c->r, c->priv, &res);
	free(c);
}

int rredis_read_user(struct relay *r, const char *sub, rredis_user_cb cb, void *priv)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return -ENOTCONN;
	struct user_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (strlen(sub) >= sizeof(c->sub)) {
		free(c);
		return -EINVAL;
	}
	*c = (struct user_ctx){.r = r, .cb = cb, .priv = priv, .sent_ms = mono_ms()};
	snprintf(c->sub, sizeof(c->sub), "%s", sub);
	int rc = admit_send(rd, sub, "", "", on_user, c);
	if (rc)
		free(c);
	return rc;
}

/* ---- registration ---- */

enum reg_stage { REG_GET_TUNNEL, REG_CLAIM_KEEP, REG_CLAIM_NEW, REG_BIND, REG_GET_BOUND };

struct reg_ctx {
	struct relay *r;
	rredis_reg_cb cb;
	void *priv;
	enum reg_stage stage;
	int cand;
	uint64_t epoch;
	char tid[AUTH_ID_MAX + 1];
	char sub[AUTH_ID_MAX + 1];
	char jti[AUTH_ID_MAX + 1];
	char claim[17];	 /* the token's plan claim: stands when the user has no plan hash */
	char label[AUTH_LABEL_MAX + 1]; /* the custom label to use, "" none (after admission) */
	char asked[AUTH_LABEL_MAX + 1]; /* the token's name claim */
	struct plan_limits plan;
	uint64_t used_bytes;
	char cands[NCAND][96];
	char name[256];	 /* the hostname being claimed */
	char old[256];	 /* previous name of a tunnel switching to a custom label */
	/* admission and tunnel-name reads sent together (pipelined): replies still due, and
	 * what came back */
	int inflight;
	bool failed;
	const char *refuse_code, *refuse_msg;
	bool have_set;
	bool bound;	 /* the tunnel record already names c->name, TTL fresh: no SET after claim */
	char have[256];
	uint64_t sent_ms;
};

static void reg_step(struct reg_ctx *c, redisReply *rep);

static void reg_cb(struct rc *rc, redisReply *rep, void *priv) { reg_step(priv, rep); }

static void reg_finish(struct reg_ctx *c, const char *code, const char *msg)
{
	struct rredis_reg_result res = {.code = code, .msg = msg, .plan = &c->plan,
					.used_bytes = c->used_bytes};
	if (!code) {
		res.hostname = c->name;
		res.epoch = c->epoch;
		res.custom = c->label[0] != 0;
	}
	c->cb(c->r, c->priv, &res);
	free(c);
}

/* A custom label was granted at admission (rredis.h: names hash, else the token's claim, only
 * on a plan with custom names). */
static bool reg_custom(const struct reg_ctx *c) { return c->label[0] != 0; }

static int reg_claim(struct reg_ctx *c)
{
	struct relay *r = c->r;
	const char *p = r->cfg.redis_prefix;
	char kr[320], ke[320], ko[320], kd[320], lease[16], grace[16];
	snprintf(kr, sizeof(kr), K_ROUTE, p, c->name);
	snprintf(ke, sizeof(ke), K_EPOCH, p, c->name);
	snprintf(ko, sizeof(ko), K_OWNER, p, c->name);
	snprintf(kd, sizeof(kd), K_DOWN, p, c->name);
	snprintf(lease, sizeof(lease), "%d", r->cfg.lease_ttl_s);
	snprintf(grace, sizeof(grace), "%d", r->cfg.name_grace_s);
	const char *keys[] = {kr, ke, ko, kd};
	const char *args[] = {c->tid, r->cfg.instance_id,
			      r->internal_addr[0] ? r->internal_addr : "-", lease, grace};
	return eval(r->redis, kr, reg_cb, c, claim_lua, 4, keys, 5, args);
}

static int reg_next_candidate(struct reg_ctx *c)
{
	if (c->cand >= NCAND)
		return -ENOENT;
	snprintf(c->name, sizeof(c->name), "%s%s", c->cands[c->cand++], c->r->suffix);
	c->stage = REG_CLAIM_NEW;
	return reg_claim(c);
}

static void reg_release_old(struct relay *r, const char *name, const char *tid)
{
	char ko[320], kr[320];
	snprintf(ko, sizeof(ko), K_OWNER, r->cfg.redis_prefix, name);
	snprintf(kr, sizeof(kr), K_ROUTE, r->cfg.redis_prefix, name);
	const char *keys[] = {ko, kr};
	const char *args[] = {tid};
	eval(r->redis, ko, count_err, NULL, unclaim_lua, 2, keys, 1, args);
}

/* The tunnel's current name (have, NULL: none) is known, and its plan: claim a name. */
static int reg_have_name(struct reg_ctx *c, const char *have)
{
	struct relay *r = c->r;
	if (reg_custom(c)) {
		snprintf(c->name, sizeof(c->name), "%s%s", c->label, r->suffix);
		if (have && strcmp(have, c->name))
			snprintf(c->old, sizeof(c->old), "%s", have);
		else if (have)
			c->bound = true; /* already this label's record, renewed by GETEX */
	} else if (have && strlen(have) < sizeof(c->name)) {
		snprintf(c->name, sizeof(c->name), "%s", have);
		c->bound = true; /* read with GETEX: its TTL was renewed by that read */
	} else {
		return reg_next_candidate(c);
	}
	c->stage = REG_CLAIM_KEEP;
	return reg_claim(c);
}

/* Both pipelined reads answered: refuse (revoked, blocked) or go on as after REG_GET_TUNNEL. */
static void reg_joined(struct reg_ctx *c)
{
	if (c->failed) {
		reg_finish(c, "unavailable", "tunnel registry unavailable, retrying");
		return;
	}
	if (c->refuse_code) {
		reg_finish(c, c->refuse_code, c->refuse_msg);
		return;
	}
	if (reg_have_name(c, c->have_set ? c->have : NULL))
		reg_finish(c, "unavailable", "tunnel registry unavailable, retrying");
}

static void reg_admit_cb(struct rc *rc, redisReply *rep, void *priv)
{
	struct reg_ctx *c = priv;
	struct admit_reply a;
	M_SET(admit_last_us, (int64_t)(mono_ms() - c->sent_ms) * 1000);
	if (!rep || admit_parse(rep, c->sub, c->claim, &a)) {
		M_INC(redis_errors_total);
		if (rep && rep->type == REDIS_REPLY_ERROR)
			pr_rl(LOG_WARN, "redis: admission of tunnel %s: %s", c->tid, rep->str);
		c->failed = true;
	} else {
		c->plan = a.plan;
		c->used_bytes = a.used_bytes;
		if (a.revoked) {
			c->refuse_code = "revoked";
			c->refuse_msg = "this token was revoked: create a new one (dvv tunnels use, "
					"or the dashboard) and run dvv login again";
		} else if (a.blocked) {
			c->refuse_code = "blocked";
			c->refuse_msg = "this tunnel was deleted or is suspended: it is not part of "
					"your plan (over its tunnel limit); pick another tunnel or "
					"upgrade";
		}
		/* the custom label: the one reserved for the tunnel, else the token's */
		c->label[0] = 0;
		if (c->plan.custom_names) {
			const char *l = a.label && c->plan.from_redis ? a.label : c->asked;
			snprintf(c->label, sizeof(c->label), "%s", l);
		}
	}
	if (--c->inflight == 0)
		reg_joined(c);
}

static void reg_tunnel_cb(struct rc *rc, redisReply *rep, void *priv)
{
	struct reg_ctx *c = priv;
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		M_INC(redis_errors_total);
		if (rep)
			pr_rl(LOG_WARN, "redis: register %s: %s", c->tid, rep->str);
		c->failed = true;
	} else if (rep->type == REDIS_REPLY_STRING && rep->len < sizeof(c->have)) {
		memcpy(c->have, rep->str, rep->len + 1);
		c->have_set = true;
	}
	if (--c->inflight == 0)
		reg_joined(c);
}

static void reg_step(struct reg_ctx *c, redisReply *rep)
{
	struct relay *r = c->r;
	const char *p = r->cfg.redis_prefix;
	char kt[160];
	int rc = 0;
	snprintf(kt, sizeof(kt), K_TUNNEL, p, c->tid);
	if (!rep || (rep->type == REDIS_REPLY_ERROR && !strstr(rep->str, "NAMETAKEN"))) {
		M_INC(redis_errors_total);
		if (rep)
			pr_rl(LOG_WARN, "redis: register %s: %s", c->tid, rep->str);
		reg_finish(c, "unavailable", "tunnel registry unavailable, retrying");
		return;
	}
	bool taken = rep->type == REDIS_REPLY_ERROR;
	switch (c->stage) {
	case REG_GET_TUNNEL:
		rc = reg_have_name(c, rep->type == REDIS_REPLY_STRING ? rep->str : NULL);
		break;
	case REG_CLAIM_KEEP:
		if (taken) {
			if (reg_custom(c)) {
				reg_finish(c, "name_taken", "that name belongs to another tunnel");
				return;
			}
			rc = reg_next_candidate(c); /* our old name went to someone else */
			break;
		}
		c->epoch = (uint64_t)rep->integer;
		if (!c->bound) {
			char grace[16];
			snprintf(grace, sizeof(grace), "%d", r->cfg.name_grace_s);
			/* (re)bind tunnel -> name; a custom label replaces the old random name */
			rc = rc_command(r->redis->rc, kt, count_err, NULL, "SET %s %s EX %s", kt,
					c->name, grace);
			if (c->old[0])
				reg_release_old(r, c->old, c->tid);
		}
		if (rc)
			break;
		reg_finish(c, NULL, NULL);
		return;
	case REG_CLAIM_NEW:
		if (taken) {
			rc = reg_next_candidate(c);
			if (rc == -ENOENT) {
				reg_finish(c, "busy", "no free name found, retrying");
				return;
			}
			break;
		}
		c->epoch = (uint64_t)rep->integer;
		c->stage = REG_BIND;
		{
			char grace[16];
			snprintf(grace, sizeof(grace), "%d", r->cfg.name_grace_s);
			rc = rc_command(r->redis->rc, kt, reg_cb, c, "SET %s %s NX EX %s", kt, c->name,
					grace);
		}
		break;
	case REG_BIND:
		if (rep->type == REDIS_REPLY_STATUS) { /* OK: the name is the tunnel's */
			reg_finish(c, NULL, NULL);
			return;
		}
		/* another session of this tunnel bound a name meanwhile: use that one */
		reg_release_old(r, c->name, c->tid);
		c->stage = REG_GET_BOUND;
		rc = rc_command(r->redis->rc, kt, reg_cb, c, "GET %s", kt);
		break;
	case REG_GET_BOUND:
		if (rep->type != REDIS_REPLY_STRING || strlen(rep->str) >= sizeof(c->name)) {
			reg_finish(c, "unavailable", "tunnel registry changed underneath, retrying");
			return;
		}
		snprintf(c->name, sizeof(c->name), "%s", rep->str);
		c->bound = true; /* just bound by the other session, with a fresh TTL */
		c->stage = REG_CLAIM_KEEP;
		rc = reg_claim(c);
		break;
	}
	if (rc)
		reg_finish(c, "unavailable", "tunnel registry unavailable, retrying");
}

int rredis_register_tunnel(struct relay *r, const struct rredis_reg *req, rredis_reg_cb cb,
			   void *priv)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return -ENOTCONN;
	struct reg_ctx *c;
	if (strlen(req->tid) >= sizeof(c->tid) || strlen(req->sub) >= sizeof(c->sub) ||
	    strlen(req->plan) >= sizeof(c->claim) || strlen(req->label) >= sizeof(c->asked) ||
	    strlen(req->jti) >= sizeof(c->jti))
		return -EINVAL;
	if (!(c = calloc(1, sizeof(*c))))
		return -ENOMEM;
	c->r = r;
	c->cb = cb;
	c->priv = priv;
	snprintf(c->tid, sizeof(c->tid), "%s", req->tid);
	snprintf(c->sub, sizeof(c->sub), "%s", req->sub);
	snprintf(c->jti, sizeof(c->jti), "%s", req->jti);
	snprintf(c->claim, sizeof(c->claim), "%s", req->plan);
	snprintf(c->asked, sizeof(c->asked), "%s", req->label);
	plan_from_claim(&c->plan, c->claim);
	for (unsigned i = 0; i < NCAND; i++)
		names_random(c->cands[i], sizeof(c->cands[i]), i);
	/* admission (the user's slot) and the tunnel's current name (the tunnel's slot) are
	 * independent reads: pipelined, one round trip. GETEX renews the name record's TTL as it
	 * reads it, so a tunnel that keeps its name needs no SET after the claim (3 commands in
	 * all for a reconnect). */
	char kt[160], grace[16];
	snprintf(grace, sizeof(grace), "%d", r->cfg.name_grace_s);
	snprintf(kt, sizeof(kt), K_TUNNEL, r->cfg.redis_prefix, c->tid);
	c->stage = REG_GET_TUNNEL;
	c->inflight = 1;
	c->sent_ms = mono_ms();
	int rc = admit_send(rd, c->sub, c->jti, c->tid, reg_admit_cb, c);
	if (rc) {
		free(c);
		return rc;
	}
	if (rc_command(rd->rc, kt, reg_tunnel_cb, c, "GETEX %s EX %s", kt, grace) == 0)
		c->inflight++;
	else
		c->failed = true; /* the admission reply finishes it: unavailable */
	return 0;
}

void rredis_release_tunnel(struct relay *r, const char *hostname, uint64_t epoch)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return; /* the lease expires by itself */
	char kr[320], v[256];
	snprintf(kr, sizeof(kr), K_ROUTE, r->cfg.redis_prefix, hostname);
	route_value(r, epoch, v, sizeof(v));
	const char *keys[] = {kr};
	const char *args[] = {v};
	if (eval(rd, kr, count_err, rd, release_lua, 1, keys, 1, args) == 0)
		rd->pending++;
}

/* ---- placement ---- */

const char *rredis_placement(struct relay *r)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up || !rd->pick[0])
		return NULL;
	return rd->pick;
}

struct targets_ctx {
	rredis_targets_cb cb;
	void *priv;
	struct relay *r;
};

static void on_targets(struct rc *rc, redisReply *rep, void *priv)
{
	struct targets_ctx *c = priv;
	const char *addrs[64];
	size_t n = 0;
	bool err = !rep || rep->type != REDIS_REPLY_ARRAY;
	if (err)
		M_INC(redis_errors_total);
	else
		for (size_t i = 0; i < rep->elements && n < 64; i++)
			if (rep->element[i]->type == REDIS_REPLY_STRING && rep->element[i]->len < 128)
				addrs[n++] = rep->element[i]->str;
	c->cb(c->r, c->priv, err, addrs, n);
	free(c);
}

int rredis_move_targets(struct relay *r, rredis_targets_cb cb, void *priv)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return -ENOTCONN;
	struct targets_ctx *c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	*c = (struct targets_ctx){cb, priv, r};
	char kl[96], ka[96];
	snprintf(kl, sizeof(kl), K_LOAD, r->cfg.redis_prefix, r->cfg.region);
	snprintf(ka, sizeof(ka), K_AGENTS, r->cfg.redis_prefix, r->cfg.region);
	const char *keys[] = {kl, ka};
	const char *args[] = {r->cfg.instance_id, "64"};
	int rc = eval(rd, kl, on_targets, c, targets_lua, 2, keys, 2, args);
	if (rc)
		free(c);
	return rc;
}

/* ---- heartbeat and lease renewal ---- */

struct renew_batch {
	struct rredis *rd;
	int n;
	char names[RENEW_BATCH][256];
	char tids[RENEW_BATCH][AUTH_ID_MAX + 1];
	uint64_t epochs[RENEW_BATCH];
};

static void on_renew(struct rc *rc, redisReply *rep, void *priv)
{
	struct renew_batch *b = priv;
	if (!rep || rep->type != REDIS_REPLY_ARRAY) {
		M_INC(redis_errors_total);
		if (rep && rep->type == REDIS_REPLY_ERROR)
			pr_rl(LOG_WARN, "redis: lease renewal: %s", rep->str);
		free(b);
		return;
	}
	for (size_t i = 0; i < rep->elements; i++) {
		long long k = rep->element[i]->integer;
		if (rep->element[i]->type == REDIS_REPLY_INTEGER && k >= 1 && k <= b->n)
			b->rd->lease_lost(b->rd->r, b->names[k - 1], b->epochs[k - 1]);
	}
	free(b);
}

static void send_renew(struct rredis *rd, struct renew_batch *b)
{
	struct relay *r = rd->r;
	const char *p = r->cfg.redis_prefix;
	char(*keys)[320] = malloc((size_t)b->n * 3 * sizeof(*keys));
	char(*eps)[24] = malloc((size_t)b->n * sizeof(*eps));
	const char **kv = malloc((size_t)b->n * 3 * sizeof(*kv));
	const char **av = malloc((size_t)(4 + 2 * b->n) * sizeof(*av));
	char lease[16], grace[16];
	if (!keys || !eps || !kv || !av)
		goto out;
	snprintf(lease, sizeof(lease), "%d", r->cfg.lease_ttl_s);
	snprintf(grace, sizeof(grace), "%d", r->cfg.name_grace_s);
	int na = 0;
	av[na++] = r->cfg.instance_id;
	av[na++] = r->internal_addr[0] ? r->internal_addr : "-";
	av[na++] = lease;
	av[na++] = grace;
	for (int i = 0; i < b->n; i++) {
		snprintf(keys[3 * i], 320, K_ROUTE, p, b->names[i]);
		snprintf(keys[3 * i + 1], 320, K_EPOCH, p, b->names[i]);
		snprintf(keys[3 * i + 2], 320, K_OWNER, p, b->names[i]);
		kv[3 * i] = keys[3 * i];
		kv[3 * i + 1] = keys[3 * i + 1];
		kv[3 * i + 2] = keys[3 * i + 2];
		snprintf(eps[i], sizeof(eps[i]), "%llu", (unsigned long long)b->epochs[i]);
		av[na++] = eps[i];
		av[na++] = b->tids[i];
	}
	if (eval(rd, keys[0], on_renew, b, renew_lua, 3 * b->n, kv, na, av) == 0)
		b = NULL;
out:
	free(keys);
	free(eps);
	free(kv);
	free(av);
	free(b);
}

/* One renewal pass over the leases the tunnel side reports. */
struct renew_pass {
	struct rredis *rd;
	int per_call;
	bool stop;		    /* out of memory: the rest waits for the next pass */
	struct renew_batch *b;	    /* being filled */
	char grace[16];
};

static void renew_one(void *ctx, const struct rredis_lease *l)
{
	struct renew_pass *ps = ctx;
	struct rredis *rd = ps->rd;
	if (ps->stop)
		return;
	char kt[160];
	snprintf(kt, sizeof(kt), K_TUNNEL, rd->r->cfg.redis_prefix, l->tid);
	/* After a reconnect the server may have come back empty (no persistence, a failover that
	 * lost writes): without its name record, the tunnel's next registration elsewhere (a move,
	 * a re-home) would draw a new random name. NX: a record written since (the same tunnel
	 * registering elsewhere) wins. */
	if (rd->resync)
		rc_command(rd->rc, kt, count_err, NULL, "SET %s %s NX EX %s", kt, l->hostname,
			   ps->grace);
	rc_command(rd->rc, kt, count_err, NULL, "EXPIRE %s %s", kt, ps->grace);
	struct renew_batch *b = ps->b;
	if (!b && !(b = ps->b = calloc(1, sizeof(*b)))) {
		ps->stop = true;
		return;
	}
	b->rd = rd;
	snprintf(b->names[b->n], sizeof(b->names[0]), "%s", l->hostname);
	snprintf(b->tids[b->n], sizeof(b->tids[0]), "%s", l->tid);
	b->epochs[b->n++] = l->epoch;
	if (b->n == ps->per_call) {
		send_renew(rd, b);
		ps->b = NULL;
	}
}

static void renew_leases(struct rredis *rd)
{
	/* standalone: batch; cluster: one name per call (each call must stay in one slot) */
	struct renew_pass ps = {.rd = rd, .per_call = rc_is_cluster(rd->rc) ? 1 : RENEW_BATCH};
	snprintf(ps.grace, sizeof(ps.grace), "%d", rd->r->cfg.name_grace_s);
	rd->each_lease(rd->r, renew_one, &ps);
	if (ps.b)
		send_renew(rd, ps.b);
	if (!ps.stop)
		rd->resync = false;
}

/* The heartbeat's reply carries the placement answer registrations use until the next one. An
 * error or a reply of another shape keeps registrations here (placement is an optimisation). */
static void on_heartbeat(struct rc *rc, redisReply *rep, void *priv)
{
	struct rredis *rd = priv;
	rd->pick[0] = 0;
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		M_INC(redis_errors_total);
		if (rep)
			pr_rl(LOG_WARN, "redis: heartbeat: %s", rep->str);
		return;
	}
	const char *addr = rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2
				   ? reply_str(rep->element[1], sizeof(rd->pick) - 1)
				   : NULL;
	if (addr)
		snprintf(rd->pick, sizeof(rd->pick), "%s", addr);
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
	    rep->element[2]->type != REDIS_REPLY_ARRAY)
		return;
	const redisReply *l = rep->element[2];
	const char *kv[128];
	size_t n = 0;
	for (size_t i = 0; i + 1 < l->elements && n + 2 <= 128; i += 2) {
		const char *id = reply_str(l->element[i], 64);
		const char *ia = reply_str(l->element[i + 1], 129);
		if (!id || !ia)
			continue;
		kv[n++] = id;
		kv[n++] = ia;
	}
	forward_set_relays(rd->r, kv, n);
}

void rredis_heartbeat(struct relay *r)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return;
	const struct relay_cfg *c = &r->cfg;
	const char *p = c->redis_prefix;
	int ttl = 3 * c->heartbeat_ms / 1000;
	if (ttl < 3)
		ttl = 3;
	char kl[96], ka[96], kalive[192], kinfo[192], apre[128], ipre[128];
	char sttl[16], score[40], grace[16], tunnels[16], players[24], cap[16];
	snprintf(kl, sizeof(kl), K_LOAD, p, c->region);
	snprintf(ka, sizeof(ka), K_AGENTS, p, c->region);
	snprintf(kalive, sizeof(kalive), K_ALIVE, p, c->region, c->instance_id);
	snprintf(kinfo, sizeof(kinfo), K_INFO, p, c->region, c->instance_id);
	snprintf(apre, sizeof(apre), K_ALIVE, p, c->region, "");
	snprintf(ipre, sizeof(ipre), K_INFO, p, c->region, "");
	snprintf(sttl, sizeof(sttl), "%d", ttl);
	/* load score: a tunnel weighs more than a player (control channel + pool) */
	long long players_n = (long long)M_GET(splices_active);
	long long load = (long long)r->ntunnels * 4 + players_n;
	snprintf(score, sizeof(score), "%.3f",
		 (double)load * RELAY_CAPACITY_DEFAULT / (double)(c->capacity > 0 ? c->capacity : 1));
	snprintf(cap, sizeof(cap), "%d", c->capacity);
	snprintf(grace, sizeof(grace), "%d", c->name_grace_s);
	snprintf(tunnels, sizeof(tunnels), "%d", r->ntunnels);
	snprintf(players, sizeof(players), "%lld", players_n);
	char margin[16];
	snprintf(margin, sizeof(margin), "%d", c->placement_margin);
	const char *keys[] = {kl, ka, kalive, kinfo};
	const char *args[] = {c->instance_id,
			      sttl,
			      r->draining ? "draining" : "alive",
			      score,
			      c->public_agent_addr,
			      grace,
			      apre,
			      ipre,
			      margin,
			      "region", c->region,
			      "agent_addr", c->public_agent_addr,
			      "player_addr", c->player_listen,
			      "internal_addr", r->internal_addr[0] ? r->internal_addr : "-",
			      "state", r->draining ? "draining" : "active",
			      "tunnels", tunnels,
			      "players", players,
			      "capacity", cap,
			      "dataplane", r->dp.ops ? r->dp.ops->name : "-"};
	eval(rd, kl, on_heartbeat, rd, heartbeat_lua, 4, keys,
	     (int)(sizeof(args) / sizeof(args[0])), args);
	uint64_t every = (uint64_t)c->lease_ttl_s * 1000 / 3;
	if (r->loop.now - rd->last_renew_ms >= every) {
		rd->last_renew_ms = r->loop.now;
		renew_leases(rd);
	}
}

/* ---- shutdown ---- */

static bool nothing_pending(void *arg) { return ((struct rredis *)arg)->pending <= 0; }

static void release_one(void *ctx, const struct rredis_lease *l)
{
	rredis_release_tunnel(ctx, l->hostname, l->epoch);
}

void rredis_stop(struct relay *r)
{
	struct rredis *rd = r->redis;
	if (!rd)
		return;
	if (rd->up) {
		/* release what we hold so other relays can take over at once, and leave the
		 * registry; wait (bounded) for the replies */
		rd->each_lease(r, release_one, r);
		const struct relay_cfg *c = &r->cfg;
		char kl[96], ka[96], kalive[192], kinfo[192];
		snprintf(kl, sizeof(kl), K_LOAD, c->redis_prefix, c->region);
		snprintf(ka, sizeof(ka), K_AGENTS, c->redis_prefix, c->region);
		snprintf(kalive, sizeof(kalive), K_ALIVE, c->redis_prefix, c->region, c->instance_id);
		snprintf(kinfo, sizeof(kinfo), K_INFO, c->redis_prefix, c->region, c->instance_id);
		if (!rc_command(rd->rc, kl, count_err, rd, "ZREM %s %s", kl, c->instance_id))
			rd->pending++;
		if (!rc_command(rd->rc, kl, count_err, rd, "HDEL %s %s", ka, c->instance_id))
			rd->pending++;
		if (!rc_command(rd->rc, kl, count_err, rd, "DEL %s %s", kalive, kinfo))
			rd->pending++;
		loop_run_until(&r->loop, nothing_pending, rd, mono_ms() + 1000);
	}
	rc_free(rd->rc);
	free(rd);
	r->redis = NULL;
	M_SET(redis_up, 0);
}

/* ---- name lookup and the cached status ---- */

struct lookup_ctx {
	rredis_lookup_cb cb;
	void *priv;
	struct relay *r;
};

static void on_lookup(struct rc *rc, redisReply *rep, void *priv)
{
	struct lookup_ctx *c = priv;
	struct rredis_lookup_result res = {0};
	char inst[66], addr[130];
	unsigned long long epoch;
	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 4) {
		M_INC(redis_errors_total);
		res.err = true;
		goto out;
	}
	res.down_idle = rep->element[3]->type == REDIS_REPLY_STRING && !strcmp(rep->element[3]->str, "idle");
	const redisReply *route = rep->element[0], *status = rep->element[1],
			 *owner = rep->element[2];
	if (route->type == REDIS_REPLY_STRING &&
	    sscanf(route->str, "%65s %llu %129s", inst, &epoch, addr) == 3) {
		res.found = true;
		res.instance = inst;
		res.epoch = epoch;
		res.addr = addr;
	}
	if (status->type == REDIS_REPLY_STRING && status->len > 0) {
		res.status = status->str;
		res.status_len = status->len;
	}
	res.known = res.status || owner->type == REDIS_REPLY_STRING;
out:
	c->cb(c->r, c->priv, &res);
	free(c);
}

int rredis_lookup(struct relay *r, const char *hostname, rredis_lookup_cb cb, void *priv)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return -ENOTCONN;
	if (strlen(hostname) > 255)
		return -EINVAL;
	struct lookup_ctx *c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	*c = (struct lookup_ctx){cb, priv, r};
	char kr[320], ks[320], ko[320], kd[320];
	const char *p = r->cfg.redis_prefix;
	snprintf(kr, sizeof(kr), K_ROUTE, p, hostname);
	snprintf(ks, sizeof(ks), K_STATUS, p, hostname);
	snprintf(ko, sizeof(ko), K_OWNER, p, hostname);
	snprintf(kd, sizeof(kd), K_DOWN, p, hostname);
	/* one slot ({hostname}), one round trip */
	int rc = rc_command(rd->rc, kr, on_lookup, c, "MGET %s %s %s %s", kr, ks, ko, kd);
	if (rc)
		free(c);
	return rc;
}

int rredis_store_status(struct relay *r, const char *hostname, const char *json, size_t len)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return -ENOTCONN;
	if (strlen(hostname) > 255 || len == 0)
		return -EINVAL;
	char ks[320];
	snprintf(ks, sizeof(ks), K_STATUS, r->cfg.redis_prefix, hostname);
	int rc = rc_command(rd->rc, ks, count_err, rd, "SET %s %b EX %d", ks, json, len,
			    r->cfg.name_grace_s);
	if (rc == 0)
		rd->pending++;
	return rc;
}

int rredis_set_down(struct relay *r, const char *hostname, const char *why)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->up)
		return -ENOTCONN;
	if (strlen(hostname) > 255)
		return -EINVAL;
	char kd[320];
	snprintf(kd, sizeof(kd), K_DOWN, r->cfg.redis_prefix, hostname);
	int rc = rc_command(rd->rc, kd, count_err, rd, "SET %s %s EX %d", kd, why,
			    r->cfg.name_grace_s);
	if (rc == 0)
		rd->pending++;
	return rc;
}
