/* The relay's bandwidth accounting: reads per-tunnel byte counters from the data plane and
 * flushes per-user deltas and live state to Redis with one script per user (contract in
 * usage.h, keys in docs/redis.md). */
#include "usage.h"
#include "dp_acct.h"
#include "htab.h"
#include "list.h"
#include "log.h"
#include "metrics.h"
#include "plan.h"
#include "relay.h"
#include "rredis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K_USAGE "%suser:{%s}:usage"
#define K_LIVE "%suser:{%s}:live"
#define LIVE_TTL_S 86400  /* a live hash nobody refreshes (every relay of it died) goes away */
#define STOP_WAIT_MS 1000 /* the last flush at exit */
#define MAX_BATCH 64	  /* tunnels per script call (a user's tunnels; plans allow a handful) */

/* Deltas and live state of one user's tunnels, applied at most once per (instance, seq).
 * KEYS usage live; ARGV instance seq period now, then per tunnel: tid delta op since, with op
 * "" (bytes only), "-" (HDEL live if the entry is ours) or the live JSON (HSET unless another
 * relay holds a session at least as new that is not stale). Returns the period's total.
 * Every flush of every user runs this, so it reads the usage hash once (HMGET of the period,
 * this relay's last seq and the total) and takes the new total from HINCRBY: 4 commands for a
 * user with one tunnel and bytes to count, where separate HGETs made it 6. */
static const char usage_lua[] =
	"local me, seq, period, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])\n"
	"local qf = 'q:'..me\n"
	"local h = redis.call('HMGET', KEYS[1], 'period', qf, 'bytes')\n"
	"local total = tonumber(h[3] or '0')\n"
	"if not h[1] or tonumber(h[1]) < tonumber(period) then\n"
	"  redis.call('DEL', KEYS[1]) redis.call('HSET', KEYS[1], 'period', period)\n"
	"  h[2] = false total = 0\n"
	"end\n"
	"if seq > tonumber(h[2] or '0') then\n"
	"  redis.call('HSET', KEYS[1], qf, ARGV[2])\n"
	"  local sum = 0\n"
	"  for i = 5, #ARGV, 4 do\n"
	"    local tid, d, op, since = ARGV[i], tonumber(ARGV[i+1]), ARGV[i+2], tonumber(ARGV[i+3])\n"
	"    if d > 0 then redis.call('HINCRBY', KEYS[1], 't:'..tid, d) sum = sum + d end\n"
	"    if op ~= '' then\n"
	"      local o = redis.call('HGET', KEYS[2], tid)\n"
	"      local other = nil\n"
	"      if o then\n"
	"        local ok, v = pcall(cjson.decode, o)\n"
	"        if ok and type(v) == 'table' then other = v end\n"
	"      end\n"
	"      if op == '-' then\n"
	"        if other and other.instance == me then redis.call('HDEL', KEYS[2], tid) end\n"
	"      elseif not other or other.instance == me or tonumber(other.since or 0) < since\n"
	"             or now - tonumber(other.t or 0) > 75 then\n"
	"        redis.call('HSET', KEYS[2], tid, op) redis.call('EXPIRE', KEYS[2], " "86400" ")\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"  if sum > 0 then total = redis.call('HINCRBY', KEYS[1], 'bytes', sum) end\n"
	"end\n"
	"return total\n";

enum live_op { LIVE_NONE, LIVE_SET, LIVE_DEL };

struct usage_user;

/* A tunnel (by data-plane key) tracked on this relay. */
struct usage_tun {
	struct hnode hn;	   /* usage.by_key */
	struct dlist node;	   /* usage_user.tuns */
	struct dlist gone_node;	   /* usage.gone, while no session is up */
	struct usage_user *u;
	uint64_t key;
	char tid[AUTH_ID_MAX + 1];
	struct dp_acct *acct;	   /* held: counts survive the pairs until read */
	struct usage_ctr c;
	struct tunnel *t;	   /* the newest session up here, NULL: none */
	int nsessions;
	bool gone;		   /* in usage.gone */
	bool final;		   /* no session, no pair: the counts read are the last */
	int64_t since;		   /* when the newest session went up (Unix s) */
	char hostname[256];
	struct plan_limits plan;   /* of the newest session */
	/* live entry as Redis has it (from confirmed batches) */
	bool live_on;
	int live_players;
	char live_host[256];
	uint64_t live_at_ms;
	/* in the batch in flight or unconfirmed */
	bool in_batch;
	uint64_t sent;		   /* bytes of c.backlog in it */
	enum live_op op;
	int op_players;
};

struct usage_user {
	struct hnode hn;	   /* usage.by_sub */
	struct usage *us;
	char sub[AUTH_ID_MAX + 1];
	struct dlist tuns;
	int ntuns;
	bool inflight;
	/* the unconfirmed batch: sent again as is until Redis answers it */
	int nargs;
	char **args;
	uint64_t total;
};

struct usage {
	struct relay *r;
	struct htab by_key, by_sub;
	struct dlist gone;	   /* tunnels without a session, oldest first */
	int ngone;
	struct loop_timer timer;
	uint64_t seq;		   /* batch sequence: starts at the wall clock in µs, so a restarted
				    * relay with the same instance id is never behind itself */
	int inflight;
};

/* ---- arithmetic ---- */

uint64_t usage_take(struct usage_ctr *c, uint64_t to_agent, uint64_t to_player, uint64_t cap,
		    uint64_t *dropped)
{
	uint64_t cur[2] = {to_agent, to_player}, d = 0;
	for (int i = 0; i < 2; i++) {
		d += cur[i] >= c->seen[i] ? cur[i] - c->seen[i] : cur[i];
		c->seen[i] = cur[i];
	}
	if (d > cap - (c->backlog < cap ? c->backlog : cap)) {
		uint64_t room = c->backlog < cap ? cap - c->backlog : 0;
		*dropped += d - room;
		c->backlog = cap;
	} else {
		c->backlog += d;
	}
	return d;
}

/* ---- tables ---- */

static bool key_eq(const struct hnode *n, const void *key, size_t len)
{
	return container_of(n, struct usage_tun, hn)->key == *(const uint64_t *)key;
}

static bool sub_eq(const struct hnode *n, const void *key, size_t len)
{
	const struct usage_user *u = container_of(n, struct usage_user, hn);
	return strlen(u->sub) == len && !memcmp(u->sub, key, len);
}

static struct usage_tun *tun_find(struct usage *us, uint64_t key)
{
	struct hnode *n = htab_find(&us->by_key, htab_hash(&us->by_key, &key, sizeof(key)), &key,
				    sizeof(key), key_eq);
	return n ? container_of(n, struct usage_tun, hn) : NULL;
}

static struct usage_user *user_get(struct usage *us, const char *sub)
{
	size_t len = strlen(sub);
	uint64_t h = htab_hash(&us->by_sub, sub, len);
	struct hnode *n = htab_find(&us->by_sub, h, sub, len, sub_eq);
	if (n)
		return container_of(n, struct usage_user, hn);
	struct usage_user *u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->us = us;
	snprintf(u->sub, sizeof(u->sub), "%s", sub);
	dlist_init(&u->tuns);
	htab_add(&us->by_sub, &u->hn, h);
	return u;
}

static void batch_free(struct usage_user *u)
{
	for (int i = 0; i < u->nargs; i++)
		free(u->args[i]);
	free(u->args);
	u->args = NULL;
	u->nargs = 0;
}

static void user_maybe_free(struct usage_user *u)
{
	if (u->ntuns || u->inflight || u->args)
		return;
	htab_del(&u->us->by_sub, &u->hn);
	free(u);
}

static void backlog_gauge(int64_t delta) { M_ADD(usage_backlog_bytes, delta); }

/* Forget a tunnel; what it had not flushed counts as dropped. */
static void tun_free(struct usage *us, struct usage_tun *x)
{
	struct usage_user *u = x->u;
	if (x->c.backlog) {
		M_ADD(usage_dropped_bytes_total, (int64_t)x->c.backlog);
		backlog_gauge(-(int64_t)x->c.backlog);
	}
	if (x->gone) {
		dlist_del(&x->gone_node);
		us->ngone--;
	}
	if (x->acct)
		us->r->dp.ops->acct_release(&us->r->dp, x->acct);
	htab_del(&us->by_key, &x->hn);
	dlist_del(&x->node);
	u->ntuns--;
	free(x);
	user_maybe_free(u);
}

static void set_gone(struct usage *us, struct usage_tun *x, bool gone)
{
	if (gone == x->gone)
		return;
	x->gone = gone;
	if (gone) {
		dlist_add_tail(&us->gone, &x->gone_node);
		us->ngone++;
	} else {
		dlist_del(&x->gone_node);
		us->ngone--;
	}
}

/* ---- sessions ---- */

void usage_tunnel_up(struct relay *r, struct tunnel *t)
{
	struct usage *us = r->usage;
	struct usage_tun *x;
	if (!us || !t->key)
		return;
	if (!(x = tun_find(us, t->key))) {
		struct usage_user *u = user_get(us, t->claims.sub);
		if (!u || !(x = calloc(1, sizeof(*x)))) {
			pr_rl(LOG_WARN, "usage: out of memory: tunnel %s not accounted", t->claims.tid);
			if (u)
				user_maybe_free(u);
			return;
		}
		if (!(x->acct = r->dp.ops->acct_hold(&r->dp, t->key))) {
			pr_rl(LOG_WARN, "usage: tunnel %s not accounted: %s", t->claims.tid,
			      strerror(errno));
			free(x);
			user_maybe_free(u);
			return;
		}
		x->key = t->key;
		x->u = u;
		snprintf(x->tid, sizeof(x->tid), "%s", t->claims.tid);
		htab_add(&us->by_key, &x->hn, htab_hash(&us->by_key, &x->key, sizeof(x->key)));
		dlist_add_tail(&u->tuns, &x->node);
		u->ntuns++;
	}
	set_gone(us, x, false);
	x->final = false;
	x->nsessions++;
	x->t = t;
	x->since = wall_s();
	snprintf(x->hostname, sizeof(x->hostname), "%s", t->hostname);
	x->plan = t->plan;
	t->acct = x->acct;
}

void usage_tunnel_down(struct relay *r, struct tunnel *t)
{
	struct usage *us = r->usage;
	struct usage_tun *x;
	t->acct = NULL;
	if (!us || !t->key || !(x = tun_find(us, t->key)))
		return;
	if (x->t == t) {
		x->plan = t->plan;
		x->t = NULL;
	}
	if (--x->nsessions > 0)
		return;
	x->nsessions = 0;
	x->t = NULL;
	set_gone(us, x, true);
	/* bounded: the oldest ended tunnel whose bytes still wait for Redis gives way */
	while (us->ngone > USAGE_GONE_MAX) {
		struct usage_tun *old = container_of(us->gone.next, struct usage_tun, gone_node);
		if (old->in_batch)
			break;
		pr_rl(LOG_WARN, "usage: %d ended tunnels wait for Redis: dropping the counts of %s",
		      us->ngone, old->tid);
		tun_free(us, old);
	}
}

/* ---- flush ---- */

static char *live_json(struct usage *us, struct usage_tun *x, int players)
{
	const struct relay_cfg *c = &us->r->cfg;
	json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:I, s:I}", "hostname", x->hostname, "region",
			      c->region, "instance", c->instance_id, "players", players, "since",
			      (json_int_t)x->since, "t", (json_int_t)wall_s());
	char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(j);
	return s;
}

static void batch_done(struct relay *r, void *priv, redisReply *rep)
{
	struct usage_user *u = priv;
	struct usage *us = u->us;
	bool ok = rep && rep->type == REDIS_REPLY_INTEGER;
	u->inflight = false;
	us->inflight--;
	if (!ok) {
		/* unknown outcome: the same batch goes again (its seq makes it count once) */
		M_INC(usage_flush_failures_total);
		if (rep && rep->type == REDIS_REPLY_ERROR)
			pr_rl(LOG_WARN, "usage: flush for user %s: %s", u->sub, rep->str);
		user_maybe_free(u);
		return;
	}
	M_INC(usage_flushes_total);
	batch_free(u);
	u->total = (uint64_t)rep->integer;
	dlist_for_each_safe(it, next, &u->tuns) {
		struct usage_tun *x = container_of(it, struct usage_tun, node);
		if (!x->in_batch)
			continue;
		x->in_batch = false;
		x->c.backlog -= x->sent;
		backlog_gauge(-(int64_t)x->sent);
		x->sent = 0;
		if (x->op == LIVE_SET) {
			x->live_on = true;
			x->live_players = x->op_players;
			snprintf(x->live_host, sizeof(x->live_host), "%s", x->hostname);
			x->live_at_ms = r->loop.now;
		} else if (x->op == LIVE_DEL) {
			x->live_on = false;
		}
		x->op = LIVE_NONE;
	}
	/* a tunnel whose last counts are in Redis and whose live entry is gone is done; the
	 * callback may free the user (not ours to know), so it comes last */
	char sub[AUTH_ID_MAX + 1];
	snprintf(sub, sizeof(sub), "%s", u->sub);
	uint64_t total = u->total;
	dlist_for_each_safe(it, next, &u->tuns) {
		struct usage_tun *x = container_of(it, struct usage_tun, node);
		if (x->final && !x->c.backlog && !x->live_on && !x->t) {
			if (u->ntuns == 1) { /* the user goes with its last tunnel */
				tun_free(us, x);
				u = NULL;
				break;
			}
			tun_free(us, x);
		}
	}
	if (u)
		user_maybe_free(u);
	if (r->usage_on_total)
		r->usage_on_total(r, sub, total);
}

static int send_batch(struct usage *us, struct usage_user *u)
{
	const struct relay_cfg *c = &us->r->cfg;
	char ku[128], kl[128];
	snprintf(ku, sizeof(ku), K_USAGE, c->redis_prefix, u->sub);
	snprintf(kl, sizeof(kl), K_LIVE, c->redis_prefix, u->sub);
	const char *keys[2] = {ku, kl};
	int rc = rredis_eval(us->r, ku, batch_done, u, usage_lua, 2, keys, u->nargs,
			     (const char **)u->args);
	if (rc == 0) {
		u->inflight = true;
		us->inflight++;
	}
	return rc;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, f);
	if (vasprintf(&s, f, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* Read every tunnel of u; build (and send) its batch. */
static void flush_user(struct usage *us, struct usage_user *u, bool up)
{
	struct relay *r = us->r;
	uint64_t dropped = 0;
	int64_t now = wall_s();
	if (u->inflight)
		return;
	dlist_for_each(it, &u->tuns) {
		struct usage_tun *x = container_of(it, struct usage_tun, node);
		uint64_t ta = 0, tp = 0;
		/* pairs first (acquire): at 0 with no session, the bytes read next are final */
		bool idle = atomic_load_explicit(&x->acct->pairs, memory_order_acquire) == 0;
		if (r->dp.ops->tunnel_bytes(&r->dp, x->key, &ta, &tp) == 0) {
			uint64_t before = x->c.backlog;
			uint64_t d = usage_take(&x->c, ta, tp, USAGE_BACKLOG_MAX, &dropped);
			M_ADD(usage_counted_bytes_total, (int64_t)d);
			backlog_gauge((int64_t)(x->c.backlog - before));
		}
		x->final = idle && !x->t;
	}
	if (dropped) {
		M_ADD(usage_dropped_bytes_total, (int64_t)dropped);
		pr_rl(LOG_WARN, "usage: user %s: backlog over its bound, %" PRIu64 " bytes dropped",
		      u->sub, dropped);
	}
	if (!up)
		return;
	if (u->args) { /* the unconfirmed batch first, unchanged */
		send_batch(us, u);
		return;
	}
	int64_t pstart = 0, pend = 0;
	bool have_period = false;
	int n = 0;
	char **a = calloc(4 + 4 * MAX_BATCH, sizeof(*a));
	if (!a)
		return;
	dlist_for_each(it, &u->tuns) {
		struct usage_tun *x = container_of(it, struct usage_tun, node);
		if (n >= MAX_BATCH)
			break;
		enum live_op op = LIVE_NONE;
		int players = atomic_load(&x->acct->pairs);
		if (x->t) {
			snprintf(x->hostname, sizeof(x->hostname), "%s", x->t->hostname);
			x->plan = x->t->plan;
			if (!x->live_on || players != x->live_players ||
			    strcmp(x->live_host, x->hostname) ||
			    r->loop.now - x->live_at_ms >= USAGE_LIVE_REFRESH_MS)
				op = LIVE_SET;
		} else if (x->live_on) {
			op = LIVE_DEL;
		}
		if (!have_period) {
			plan_period(&x->plan, now, &pstart, &pend);
			have_period = true;
		}
		if (!x->c.backlog && op == LIVE_NONE)
			continue;
		char *live = op == LIVE_SET ? live_json(us, x, players) : NULL;
		char **g = a + 4 + 4 * n;
		g[0] = strdup(x->tid);
		g[1] = fmt("%" PRIu64, x->c.backlog);
		g[2] = op == LIVE_SET ? live : strdup(op == LIVE_DEL ? "-" : "");
		g[3] = fmt("%" PRId64, x->since);
		if (!g[0] || !g[1] || !g[2] || !g[3]) {
			for (int i = 0; i < 4; i++)
				free(g[i]);
			break;
		}
		x->in_batch = true;
		x->sent = x->c.backlog;
		x->op = op;
		x->op_players = players;
		n++;
	}
	if (!n) {
		free(a);
		/* nothing to say: tunnels whose final counts were all confirmed are done */
		dlist_for_each_safe(it, next, &u->tuns) {
			struct usage_tun *x = container_of(it, struct usage_tun, node);
			if (x->final && !x->c.backlog && !x->live_on && !x->t) {
				bool last = u->ntuns == 1;
				tun_free(us, x);
				if (last)
					return;
			}
		}
		return;
	}
	a[0] = strdup(r->cfg.instance_id);
	a[1] = fmt("%" PRIu64, ++us->seq);
	a[2] = fmt("%" PRId64, pstart);
	a[3] = fmt("%" PRId64, now);
	u->args = a;
	u->nargs = 4 + 4 * n;
	for (int i = 0; i < 4; i++)
		if (!a[i]) {
			dlist_for_each(it, &u->tuns) {
				struct usage_tun *x = container_of(it, struct usage_tun, node);
				x->in_batch = false;
				x->sent = 0;
				x->op = LIVE_NONE;
			}
			batch_free(u);
			return;
		}
	send_batch(us, u);
}

void usage_flush(struct relay *r)
{
	struct usage *us = r->usage;
	if (!us)
		return;
	bool up = rredis_up(r);
	/* users are visited through their tunnels' table: collect first, a flush may free */
	size_t n = us->by_sub.n, i = 0;
	struct usage_user **v = n ? calloc(n, sizeof(*v)) : NULL;
	if (n && !v)
		return;
	for (size_t b = 0; b < us->by_sub.nb; b++)
		for (struct hnode *h = us->by_sub.b[b]; h && i < n; h = h->next)
			v[i++] = container_of(h, struct usage_user, hn);
	for (size_t k = 0; k < i; k++)
		flush_user(us, v[k], up);
	free(v);
}

static void timer_cb(struct loop *l, struct loop_timer *t)
{
	struct usage *us = container_of(t, struct usage, timer);
	usage_flush(us->r);
	loop_timer_arm(l, t, (uint64_t)us->r->cfg.usage_flush_ms);
}

int usage_init(struct relay *r)
{
	struct usage *us = calloc(1, sizeof(*us));
	int rc;
	if (!us)
		return -ENOMEM;
	if ((rc = htab_init(&us->by_key, 256)) || (rc = htab_init(&us->by_sub, 256))) {
		htab_free(&us->by_key);
		free(us);
		return rc;
	}
	us->r = r;
	dlist_init(&us->gone);
	us->seq = wall_ms() * 1000;
	us->timer.cb = timer_cb;
	loop_timer_arm(&r->loop, &us->timer, (uint64_t)r->cfg.usage_flush_ms);
	r->usage = us;
	return 0;
}

static bool nothing_inflight(void *arg)
{
	return ((struct usage *)arg)->inflight == 0;
}

void usage_stop(struct relay *r)
{
	struct usage *us = r->usage;
	if (!us)
		return;
	loop_timer_cancel(&r->loop, &us->timer);
	/* every session ends here: the final flush also takes our live entries out */
	for (size_t b = 0; b < us->by_key.nb; b++)
		for (struct hnode *h = us->by_key.b[b]; h; h = h->next) {
			struct usage_tun *x = container_of(h, struct usage_tun, hn);
			if (x->t)
				x->t->acct = NULL;
			x->t = NULL;
			x->nsessions = 0;
		}
	if (rredis_up(r)) {
		usage_flush(r);
		loop_run_until(&r->loop, nothing_inflight, us, mono_ms() + STOP_WAIT_MS);
		/* an unconfirmed batch was answered: the rest goes in one more round */
		usage_flush(r);
		loop_run_until(&r->loop, nothing_inflight, us, mono_ms() + STOP_WAIT_MS);
	}
	/* replies still due after this are answered by rc_free (rredis_stop) with NULL: users
	 * with a call in flight are left to that callback, which frees nothing of ours now */
	while (us->by_key.n) {
		struct usage_tun *x = NULL;
		for (size_t b = 0; b < us->by_key.nb && !x; b++)
			if (us->by_key.b[b])
				x = container_of(us->by_key.b[b], struct usage_tun, hn);
		x->in_batch = false;
		tun_free(us, x);
	}
	r->usage = NULL;
	if (us->inflight) {
		/* leak the users still awaiting a reply rather than free them under rc */
		pr_rl(LOG_WARN, "usage: %d flush(es) unanswered at exit", us->inflight);
		return;
	}
	for (size_t b = 0; b < us->by_sub.nb; b++)
		while (us->by_sub.b[b]) {
			struct usage_user *u = container_of(us->by_sub.b[b], struct usage_user, hn);
			htab_del(&us->by_sub, &u->hn);
			batch_free(u);
			free(u);
		}
	htab_free(&us->by_key);
	htab_free(&us->by_sub);
	free(us);
}
