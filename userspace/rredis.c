#include "rredis.h"
#include "log.h"
#include "metrics.h"
#include "names.h"
#include "relay.h"

#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RENEW_BATCH 256

struct rredis {
	struct relay *r;
	redisAsyncContext *ac;
	struct loop_io io;
	struct loop_timer retry;
	bool connected, stopping;
	uint32_t backoff_ms;
	char host[128];
	uint16_t port;
};

/* Registration: keep the tunnel's name if it has one (a name belongs to the token's tunnel and
 * survives reconnects for name_grace_s), else reserve the first free candidate; then take the
 * route lease with a new fencing epoch. Atomic, one round trip.
 * ARGV: prefix tid instance lease grace suffix requested-label candidate-labels... */
static const char register_lua[] =
	"local p, tid = ARGV[1], ARGV[2]\n"
	"local tkey = p..'tunnel:'..tid\n"
	"local name = redis.call('GET', tkey)\n"
	"if ARGV[7] ~= '' then\n"
	"  local want = ARGV[7]..ARGV[6]\n"
	"  if name ~= want then\n"
	"    local holder = redis.call('GET', p..'name:'..want)\n"
	"    if holder and holder ~= tid then return redis.error_reply('NAMETAKEN') end\n"
	"    if name then redis.call('DEL', p..'name:'..name, p..'route:'..name) end\n"
	"    name = want\n"
	"  end\n"
	"end\n"
	"if not name then\n"
	"  for i = 8, #ARGV do\n"
	"    local cand = ARGV[i]..ARGV[6]\n"
	"    if redis.call('SET', p..'name:'..cand, tid, 'NX', 'EX', ARGV[5]) then name = cand break end\n"
	"  end\n"
	"  if not name then return redis.error_reply('NONAME') end\n"
	"end\n"
	"redis.call('SET', tkey, name, 'EX', ARGV[5])\n"
	"redis.call('SET', p..'name:'..name, tid, 'EX', ARGV[5])\n"
	"local epoch = redis.call('INCR', p..'epoch:'..name)\n"
	"redis.call('EXPIRE', p..'epoch:'..name, ARGV[5])\n"
	"redis.call('SET', p..'route:'..name, ARGV[3]..' '..epoch, 'EX', ARGV[4])\n"
	"return {name, epoch}\n";

/* Renewal of many leases at once. A lease still ours is extended; a lease that vanished (Redis
 * restarted or lost data) is re-created from what this relay holds; a lease now held by someone
 * else is reported lost. ARGV: prefix instance lease grace, then (name epoch tid) triples.
 * Returns the indexes (1-based triple numbers) of lost leases. */
static const char renew_lua[] =
	"local p, me, lease, grace = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
	"local lost = {}\n"
	"for i = 5, #ARGV, 3 do\n"
	"  local name, epoch, tid = ARGV[i], ARGV[i+1], ARGV[i+2]\n"
	"  local rkey = p..'route:'..name\n"
	"  local v = redis.call('GET', rkey)\n"
	"  if v == me..' '..epoch then\n"
	"    redis.call('EXPIRE', rkey, lease)\n"
	"  elseif not v then\n"
	"    local cur = tonumber(redis.call('GET', p..'epoch:'..name) or '0')\n"
	"    if cur > tonumber(epoch) then\n"
	"      lost[#lost+1] = (i - 5) / 3 + 1\n"
	"    else\n"
	"      redis.call('SET', p..'epoch:'..name, epoch, 'EX', grace)\n"
	"      redis.call('SET', rkey, me..' '..epoch, 'EX', lease)\n"
	"    end\n"
	"  else\n"
	"    lost[#lost+1] = (i - 5) / 3 + 1\n"
	"  end\n"
	"  if not lost[#lost] or lost[#lost] ~= (i - 5) / 3 + 1 then\n"
	"    redis.call('SET', p..'name:'..name, tid, 'EX', grace)\n"
	"    redis.call('SET', p..'tunnel:'..tid, name, 'EX', grace)\n"
	"    redis.call('EXPIRE', p..'epoch:'..name, grace)\n"
	"  end\n"
	"end\n"
	"return lost\n";

/* Drop a lease only if it is still ours at that epoch. ARGV: prefix instance name epoch */
static const char release_lua[] =
	"local rkey = ARGV[1]..'route:'..ARGV[3]\n"
	"if redis.call('GET', rkey) == ARGV[2]..' '..ARGV[4] then redis.call('DEL', rkey) return 1 end\n"
	"return 0\n";

/* Remove instances of this region whose heartbeat expired (crashed relays).
 * ARGV: prefix region */
static const char reap_lua[] =
	"local p = ARGV[1]\n"
	"local zkey = p..'load:'..ARGV[2]\n"
	"local n = 0\n"
	"for _, id in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do\n"
	"  if redis.call('EXISTS', p..'instance:'..id) == 0 then\n"
	"    redis.call('ZREM', zkey, id)\n"
	"    redis.call('DEL', p..'instance:'..id..':info')\n"
	"    n = n + 1\n"
	"  end\n"
	"end\n"
	"return n\n";

/* ---- hiredis adapter for our loop ---- */

static void ad_update(struct rredis *rd, uint32_t add, uint32_t del)
{
	if (!rd->ac)
		return;
	uint32_t ev = (rd->io.events & ~del) | add;
	if (ev == EPOLLRDHUP || ev == 0)
		ev = 0;
	else
		ev |= EPOLLRDHUP;
	loop_io_set(&rd->r->loop, &rd->io, ev);
}
static void ad_add_read(void *p) { ad_update(p, EPOLLIN, 0); }
static void ad_del_read(void *p) { ad_update(p, 0, EPOLLIN); }
static void ad_add_write(void *p) { ad_update(p, EPOLLOUT, 0); }
static void ad_del_write(void *p) { ad_update(p, 0, EPOLLOUT); }
static void ad_cleanup(void *p)
{
	struct rredis *rd = p;
	loop_io_del(&rd->r->loop, &rd->io);
	rd->io.fd = -1;
}

static void ad_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct rredis *rd = container_of(io, struct rredis, io);
	redisAsyncContext *ac = rd->ac;
	if (!ac)
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
		redisAsyncHandleRead(ac);
	if (rd->ac == ac && (events & EPOLLOUT))
		redisAsyncHandleWrite(ac);
}

static void schedule_reconnect(struct rredis *rd)
{
	if (rd->stopping)
		return;
	rd->backoff_ms = rd->backoff_ms ? rd->backoff_ms * 2 : 200;
	if (rd->backoff_ms > 5000)
		rd->backoff_ms = 5000;
	loop_timer_arm(&rd->r->loop, &rd->retry, rd->backoff_ms / 2 + rand_u64() % (rd->backoff_ms / 2 + 1));
}

static void on_reap(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply;
	if (rep && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0)
		pr_info("redis: removed %lld stale instance(s) of this region", rep->integer);
}

static void count_err(redisAsyncContext *ac, void *reply, void *priv)
{
	redisReply *rep = reply;
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		M_INC(redis_errors_total);
		if (rep)
			pr_rl(LOG_WARN, "redis: %s", rep->str);
	}
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct rredis *rd = ac->ev.data;
	if (status != REDIS_OK) {
		pr_rl(LOG_WARN, "redis: cannot connect to %s:%u: %s", rd->host, rd->port, ac->errstr);
		rd->ac = NULL; /* hiredis frees it after this callback */
		schedule_reconnect(rd);
		return;
	}
	rd->connected = true;
	rd->backoff_ms = 0;
	M_SET(redis_up, 1);
	pr_info("redis: connected to %s:%u", rd->host, rd->port);
	struct relay *r = rd->r;
	redisAsyncCommand(rd->ac, on_reap, NULL, "EVAL %s 0 %s %s", reap_lua, r->cfg.redis_prefix,
			  r->cfg.region);
	/* register now and re-assert every local lease (reconciliation after an outage) */
	rredis_heartbeat(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rredis *rd = ac->ev.data;
	rd->connected = false;
	rd->ac = NULL;
	M_SET(redis_up, 0);
	if (rd->stopping)
		return;
	pr_warn("redis: connection to %s:%u lost%s%s", rd->host, rd->port, status ? ": " : "",
		status ? ac->errstr : "");
	schedule_reconnect(rd);
}

static void do_connect(struct rredis *rd)
{
	redisAsyncContext *ac = redisAsyncConnect(rd->host, rd->port);
	if (!ac || ac->err) {
		pr_rl(LOG_WARN, "redis: connect %s:%u: %s", rd->host, rd->port,
		      ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		schedule_reconnect(rd);
		return;
	}
	rd->ac = ac;
	rd->io = (struct loop_io){.fd = ac->c.fd, .cb = ad_io_cb};
	ac->ev.data = rd;
	ac->ev.addRead = ad_add_read;
	ac->ev.delRead = ad_del_read;
	ac->ev.addWrite = ad_add_write;
	ac->ev.delWrite = ad_del_write;
	ac->ev.cleanup = ad_cleanup;
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	/* hiredis asks for write interest to learn when the connect completes */
	ad_add_write(rd);
}

static void retry_cb(struct loop *l, struct loop_timer *t)
{
	do_connect(container_of(t, struct rredis, retry));
}

int rredis_start(struct relay *r)
{
	struct rredis *rd = calloc(1, sizeof(*rd));
	if (!rd)
		return -ENOMEM;
	rd->r = r;
	rd->io.fd = -1;
	rd->retry.cb = retry_cb;
	if (net_split_hostport(r->cfg.redis, rd->host, sizeof(rd->host), &rd->port)) {
		pr_err("--redis '%s': want host:port", r->cfg.redis);
		free(rd);
		return -EINVAL;
	}
	r->redis = rd;
	do_connect(rd);
	return 0;
}

bool rredis_up(const struct relay *r) { return r->redis && r->redis->connected; }

/* ---- registration ---- */

static void on_register(redisAsyncContext *ac, void *reply, void *priv)
{
	struct tunnel *t = priv;
	redisReply *rep = reply;
	if (!rep) {
		M_INC(redis_errors_total);
		tunnel_registered(t, NULL, 0, "unavailable", "tunnel registry unavailable, retrying");
	} else if (rep->type == REDIS_REPLY_ERROR) {
		if (strstr(rep->str, "NAMETAKEN"))
			tunnel_registered(t, NULL, 0, "name_taken",
					  "that name belongs to another tunnel");
		else if (strstr(rep->str, "NONAME"))
			tunnel_registered(t, NULL, 0, "busy", "no free name found, retrying");
		else {
			M_INC(redis_errors_total);
			pr_rl(LOG_WARN, "redis: register: %s", rep->str);
			tunnel_registered(t, NULL, 0, "unavailable", "tunnel registry error");
		}
	} else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
		   rep->element[0]->type == REDIS_REPLY_STRING &&
		   rep->element[1]->type == REDIS_REPLY_INTEGER) {
		tunnel_registered(t, rep->element[0]->str, (uint64_t)rep->element[1]->integer, NULL,
				  NULL);
	} else {
		tunnel_registered(t, NULL, 0, "unavailable", "unexpected registry reply");
	}
	tunnel_put(t);
}

int rredis_register_tunnel(struct tunnel *t)
{
	struct relay *r = t->r;
	struct rredis *rd = r->redis;
	if (!rd->connected)
		return -ENOTCONN;
	char lease[16], grace[16], cand[8][64];
	const char *argv[16];
	size_t argl[16];
	int n = 0;
	snprintf(lease, sizeof(lease), "%d", r->cfg.lease_ttl_s);
	snprintf(grace, sizeof(grace), "%d", r->cfg.name_grace_s);
	argv[n++] = "EVAL";
	argv[n++] = register_lua;
	argv[n++] = "0";
	argv[n++] = r->cfg.redis_prefix;
	argv[n++] = t->claims.tid;
	argv[n++] = r->cfg.instance_id;
	argv[n++] = lease;
	argv[n++] = grace;
	argv[n++] = r->suffix;
	argv[n++] = (!strcmp(t->claims.plan, "paid") && t->claims.name[0]) ? t->claims.name : "";
	for (unsigned i = 0; i < 6; i++) {
		names_random(cand[i], sizeof(cand[i]), i);
		argv[n++] = cand[i];
	}
	for (int i = 0; i < n; i++)
		argl[i] = strlen(argv[i]);
	t->refs++;
	if (redisAsyncCommandArgv(rd->ac, on_register, t, n, argv, argl) != REDIS_OK) {
		t->refs--;
		return -EIO;
	}
	return 0;
}

void rredis_release_tunnel(struct relay *r, const char *hostname, uint64_t epoch)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->connected)
		return; /* the lease expires by itself */
	char ep[24];
	snprintf(ep, sizeof(ep), "%llu", (unsigned long long)epoch);
	redisAsyncCommand(rd->ac, count_err, NULL, "EVAL %s 0 %s %s %s %s", release_lua,
			  r->cfg.redis_prefix, r->cfg.instance_id, hostname, ep);
}

/* ---- heartbeat ---- */

struct renew_batch {
	struct relay *r;
	int n;
	char names[RENEW_BATCH][256];
	uint64_t epochs[RENEW_BATCH];
};

static void on_renew(redisAsyncContext *ac, void *reply, void *priv)
{
	struct renew_batch *b = priv;
	redisReply *rep = reply;
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
			tunnel_lease_lost(b->r, b->names[k - 1], b->epochs[k - 1]);
	}
	free(b);
}

static void send_renew(struct relay *r, struct renew_batch *b, struct tunnel **ts)
{
	struct rredis *rd = r->redis;
	const char **argv = malloc((size_t)(7 + 3 * b->n) * sizeof(*argv));
	size_t *argl = malloc((size_t)(7 + 3 * b->n) * sizeof(*argl));
	char(*eps)[24] = malloc((size_t)b->n * sizeof(*eps));
	char lease[16], grace[16];
	if (!argv || !argl || !eps)
		goto out;
	snprintf(lease, sizeof(lease), "%d", r->cfg.lease_ttl_s);
	snprintf(grace, sizeof(grace), "%d", r->cfg.name_grace_s);
	int n = 0;
	argv[n++] = "EVAL";
	argv[n++] = renew_lua;
	argv[n++] = "0";
	argv[n++] = r->cfg.redis_prefix;
	argv[n++] = r->cfg.instance_id;
	argv[n++] = lease;
	argv[n++] = grace;
	for (int i = 0; i < b->n; i++) {
		snprintf(eps[i], sizeof(eps[i]), "%llu", (unsigned long long)b->epochs[i]);
		argv[n++] = b->names[i];
		argv[n++] = eps[i];
		argv[n++] = ts[i]->claims.tid;
	}
	for (int i = 0; i < n; i++)
		argl[i] = strlen(argv[i]);
	if (redisAsyncCommandArgv(rd->ac, on_renew, b, n, argv, argl) == REDIS_OK)
		b = NULL;
out:
	free(argv);
	free(argl);
	free(eps);
	free(b);
}

void rredis_heartbeat(struct relay *r)
{
	struct rredis *rd = r->redis;
	if (!rd || !rd->connected)
		return;
	const struct relay_cfg *c = &r->cfg;
	int ttl = 3 * c->heartbeat_ms / 1000;
	if (ttl < 3)
		ttl = 3;
	char key[160], info[180], zkey[96];
	snprintf(key, sizeof(key), "%sinstance:%s", c->redis_prefix, c->instance_id);
	snprintf(info, sizeof(info), "%s:info", key);
	snprintf(zkey, sizeof(zkey), "%sload:%s", c->redis_prefix, c->region);
	redisAsyncCommand(rd->ac, count_err, NULL, "SET %s %s EX %d", key,
			  r->draining ? "draining" : "alive", ttl);
	redisAsyncCommand(rd->ac, count_err, NULL,
			  "HSET %s region %s agent_addr %s player_addr %s state %s tunnels %d "
			  "players %lld dataplane %s",
			  info, c->region, c->public_agent_addr, c->player_listen,
			  r->draining ? "draining" : "active", r->ntunnels,
			  (long long)M_GET(splices_active), r->dp.ops->name);
	redisAsyncCommand(rd->ac, count_err, NULL, "EXPIRE %s %d", info, c->name_grace_s);
	/* load score: tunnels weigh more than players (each holds a control channel + pool) */
	long long score = (long long)r->ntunnels * 4 + M_GET(splices_active);
	if (r->draining)
		redisAsyncCommand(rd->ac, count_err, NULL, "ZREM %s %s", zkey, c->instance_id);
	else
		redisAsyncCommand(rd->ac, count_err, NULL, "ZADD %s %lld %s", zkey, score,
				  c->instance_id);

	struct renew_batch *b = NULL;
	struct tunnel *ts[RENEW_BATCH];
	for (struct dlist *n = r->tunnels.next; n != &r->tunnels; n = n->next) {
		struct tunnel *t = container_of(n, struct tunnel, node);
		if (t->state != TS_UP)
			continue;
		if (!b && !(b = calloc(1, sizeof(*b))))
			return;
		b->r = r;
		snprintf(b->names[b->n], sizeof(b->names[0]), "%s", t->hostname);
		b->epochs[b->n] = t->epoch;
		ts[b->n++] = t;
		if (b->n == RENEW_BATCH) {
			send_renew(r, b, ts);
			b = NULL;
		}
	}
	if (b)
		send_renew(r, b, ts);
}

/* ---- shutdown ---- */

void rredis_stop(struct relay *r)
{
	struct rredis *rd = r->redis;
	if (!rd)
		return;
	rd->stopping = true;
	loop_timer_cancel(&r->loop, &rd->retry);
	if (rd->ac) {
		redisAsyncContext *ac = rd->ac;
		rd->ac = NULL;
		ac->ev.data = rd;
		redisAsyncFree(ac); /* pending callbacks get NULL replies */
	}
	/* A short blocking session on the way out: release what we hold so other relays can take
	 * over at once instead of waiting for lease expiry. */
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout(rd->host, rd->port, tv);
	if (c && !c->err) {
		redisSetTimeout(c, tv);
		const struct relay_cfg *cfg = &r->cfg;
		int n = 0;
		for (struct dlist *it = r->tunnels.next; it != &r->tunnels; it = it->next) {
			struct tunnel *t = container_of(it, struct tunnel, node);
			if (t->state != TS_UP)
				continue;
			char ep[24];
			snprintf(ep, sizeof(ep), "%llu", (unsigned long long)t->epoch);
			redisAppendCommand(c, "EVAL %s 0 %s %s %s %s", release_lua, cfg->redis_prefix,
					   cfg->instance_id, t->hostname, ep);
			n++;
		}
		redisAppendCommand(c, "DEL %sinstance:%s %sinstance:%s:info", cfg->redis_prefix,
				   cfg->instance_id, cfg->redis_prefix, cfg->instance_id);
		redisAppendCommand(c, "ZREM %sload:%s %s", cfg->redis_prefix, cfg->region,
				   cfg->instance_id);
		n += 2;
		for (int i = 0; i < n; i++) {
			void *rep = NULL;
			if (redisGetReply(c, &rep) != REDIS_OK)
				break;
			freeReplyObject(rep);
		}
	}
	if (c)
		redisFree(c);
	free(rd);
	r->redis = NULL;
	M_SET(redis_up, 0);
}
