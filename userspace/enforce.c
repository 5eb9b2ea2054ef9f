/* Plan enforcement at the relay (enforce.h): decides, from a user's plan, what happens to its
 * tunnels and players here - PLAN frames, the bandwidth cap, max_players, idle timeouts,
 * revocation and blocks, and priority-0 placement and shedding under load. */
#include "enforce.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "player.h"
#include "relay.h"
#include "rredis.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define PLAN_FRAME_EVERY_MS 60000 /* usage refresh to the agent, at most this often */
#define SHED_PER_SECOND 10	  /* priority-0 tunnels moved away per second over capacity */

void enforce_fmt_bytes(uint64_t n, char *out, size_t len)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	int u = 0;
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%" PRIu64 " B", n);
	else
		snprintf(out, len, "%.1f %s", v, unit[u]);
}

static void fmt_date(int64_t t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, len, "%Y-%m-%d", &tm);
}

void enforce_capped_texts(const struct plan_limits *p, int64_t now, char *kick, size_t klen,
			  char *motd, size_t mlen)
{
	int64_t start, end;
	char bw[32], date[16];
	plan_period(p, now, &start, &end);
	enforce_fmt_bytes(p->bandwidth_bytes, bw, sizeof(bw));
	fmt_date(end, date, sizeof(date));
	snprintf(kick, klen,
		 "This server has used its DVV bandwidth for this period (%s on the %s plan). It "
		 "resets on %s.",
		 bw, p->tier, date);
	snprintf(motd, mlen, "\u00a7cBandwidth limit reached - resets %s", date);
}

static void fmt_duration(uint32_t s, char *out, size_t len)
{
	if (s % 3600 == 0 && s >= 3600)
		snprintf(out, len, "%u h", s / 3600);
	else if (s % 60 == 0 && s >= 60)
		snprintf(out, len, "%u min", s / 60);
	else
		snprintf(out, len, "%u s", s);
}

void enforce_send_plan(struct tunnel *t, const char *message)
{
	struct relay *r = t->r;
	if (t->state != TS_UP)
		return;
	struct ctl_msg m = {.type = CTL_PLAN};
	int64_t start, end;
	plan_period(&t->plan, wall_s(), &start, &end);
	snprintf(m.u.plan.tier, sizeof(m.u.plan.tier), "%s", t->plan.tier);
	m.u.plan.max_tunnels = t->plan.max_tunnels;
	m.u.plan.max_players = t->plan.max_players;
	m.u.plan.idle_timeout_s = t->plan.idle_timeout_s;
	m.u.plan.bandwidth_bytes = t->plan.bandwidth_bytes;
	m.u.plan.used_bytes = t->used_bytes;
	m.u.plan.period_end = t->plan.from_redis ? end : 0;
	snprintf(m.u.plan.state, sizeof(m.u.plan.state), "%s", t->capped ? "capped" : "ok");
	if (message)
		snprintf(m.u.plan.message, sizeof(m.u.plan.message), "%s", message);
	else if (t->capped) {
		char motd[160];
		enforce_capped_texts(&t->plan, wall_s(), m.u.plan.message,
				     sizeof(m.u.plan.message), motd, sizeof(motd));
	}
	t->last_plan_ms = r->loop.now;
	M_INC(plan_frames_total);
	tunnel_send(t, &m);
}

/* Placement of a new registration under load: 0 keep, 1 move to *addr, 2 refuse (busy), 3
 * refuse (busy: over 3/4 of --reg-rate, which keeps the last quarter for priority plans). A
 * registration that a MOVE sent here is never moved on: two relays at their threshold would
 * otherwise hand a free agent back and forth without ever telling it why. */
static int place(struct relay *r, const struct tunnel *t, const struct plan_limits *p,
		 const char **addr)
{
	double load = (double)r->ntunnels * 4 + (double)M_GET(splices_active);
	if (t->reg_reserve && p->priority == 0) {
		/* over 3/4 of --reg-rate: the rest is for priority plans; the token goes back */
		rl_tb_refund(&r->reg_tb);
		M_REFUSED(reg_rate);
		return 3;
	}
	if (p->priority >= 1 || load < r->cfg.shed_fraction * r->cfg.capacity)
		return 0;
	M_REFUSED(shed);
	if (r->npeers && !t->placed) {
		*addr = r->peers[0]; /* least loaded first */
		return 1;
	}
	return 2;
}

bool enforce_tunnel_up(struct tunnel *t, const struct plan_limits *p, uint64_t used_bytes)
{
	struct relay *r = t->r;
	const char *addr = NULL;
	t->plan = *p;
	t->used_bytes = used_bytes;
	t->capped = p->bandwidth_bytes && used_bytes >= p->bandwidth_bytes;
	t->idle_since_ms = r->loop.now;
	t->since_s = (uint64_t)wall_s();
	int how = place(r, t, p, &addr);
	switch (how) {
	case 1: {
		struct ctl_msg m = {.type = CTL_MOVE};
		snprintf(m.u.move.addr, sizeof(m.u.move.addr), "%s", addr);
		snprintf(m.u.move.reason, sizeof(m.u.move.reason), "relay busy: %s plan placed elsewhere",
			 p->tier);
		tunnel_send(t, &m);
		M_INC(tunnels_moved_total);
		return false;
	}
	case 2:
	case 3: {
		struct ctl_msg m = {.type = CTL_ERROR};
		snprintf(m.u.error.code, sizeof(m.u.error.code), "busy");
		snprintf(m.u.error.message, sizeof(m.u.error.message), "%s",
			 how == 3 ? "too many registrations right now (the rest of the rate is "
				    "kept for priority plans); retrying"
				  : "this relay is busy and keeps its room for priority plans; "
				    "retrying");
		m.u.error.retry = true;
		m.u.error.retry_after_ms = 2000 + (uint32_t)(rand_u64() % 3000);
		tunnel_send(t, &m);
		return false;
	}
	}
	return true;
}

int enforce_admit_player(struct player *p, struct tunnel *t)
{
	if (t->capped) {
		char kick[300];
		enforce_capped_texts(&t->plan, wall_s(), kick, sizeof(kick), p->motd, sizeof(p->motd));
		M_JOIN_REFUSED(capped);
		player_answer(p, ANS_CAPPED, kick);
		return 1;
	}
	if (t->plan.max_players && p->hs.next_state == MC_NEXT_LOGIN &&
	    (uint32_t)tunnel_players(t) >= t->plan.max_players) {
		char kick[200];
		snprintf(kick, sizeof(kick), "This server is full on its DVV plan (%u players).",
			 t->plan.max_players);
		M_JOIN_REFUSED(full);
		player_answer(p, ANS_FULL, kick);
		return 1;
	}
	t->idle_since_ms = t->r->loop.now; /* a player: not idle (counted by the data plane next) */
	return 0;
}

static bool of_user(const struct tunnel *t, const char *sub)
{
	return t->state == TS_UP && !strcmp(t->claims.sub, sub);
}

/* Cap t: its players are cut, new logins get the kick, the agent hears it. */
static void cap(struct tunnel *t)
{
	t->capped = true;
	M_INC(tunnels_capped);
	if (t->r->dp.ops->kill)
		t->r->dp.ops->kill(&t->r->dp, t->key);
	pr_info("tunnel %s: user %s used the plan's bandwidth for the period: players cut",
		t->hostname, t->claims.sub);
	enforce_send_plan(t, NULL);
}

void enforce_user_total(struct relay *r, const char *sub, uint64_t total, bool publish)
{
	bool newly = false;
	dlist_for_each(n, &r->tunnels) {
		struct tunnel *t = container_of(n, struct tunnel, node);
		if (!of_user(t, sub))
			continue;
		t->used_bytes = total;
		if (!t->capped && t->plan.bandwidth_bytes && total >= t->plan.bandwidth_bytes) {
			newly = true;
			cap(t);
		} else if (t->capped && (!t->plan.bandwidth_bytes || total < t->plan.bandwidth_bytes)) {
			/* the period's total went back under the cap: a new billing period began */
			t->capped = false;
			M_DEC(tunnels_capped);
			pr_info("tunnel %s: user %s is under the plan's bandwidth again (new period)",
				t->hostname, t->claims.sub);
			enforce_send_plan(t, "bandwidth available again: a new billing period began");
		}
	}
	if (newly) {
		if (publish)
			events_publish(r, "capped", sub, NULL, NULL, NULL);
	}
}

void enforce_usage_total(struct relay *r, const char *sub, uint64_t total)
{
	enforce_user_total(r, sub, total, true);
}

void enforce_user_capped(struct relay *r, const char *sub)
{
	dlist_for_each(n, &r->tunnels) {
		struct tunnel *t = container_of(n, struct tunnel, node);
		if (of_user(t, sub) && !t->capped && t->plan.bandwidth_bytes)
			cap(t);
	}
}

/* Close every tunnel of sub matching jti or tid with GOODBYE code: its players go too. */
static int close_matching(struct relay *r, const char *sub, const char *jti, const char *tid,
			  const char *code, const char *reason)
{
	int n = 0;
	for (struct dlist *it = r->tunnels.next; it != &r->tunnels;) {
		struct tunnel *t = container_of(it, struct tunnel, node);
		it = it->next; /* tunnel_goodbye unlinks t */
		if (t->state == TS_CLOSED || strcmp(t->claims.sub, sub))
			continue;
		if (!((jti && jti[0] && !strcmp(t->claims.jti, jti)) ||
		      (tid && tid[0] && !strcmp(t->claims.tid, tid))))
			continue;
		if (r->dp.ops->kill)
			r->dp.ops->kill(&r->dp, t->key);
		pr_info("tunnel %s (tunnel %s, user %s): %s: %s",
			t->hostname[0] ? t->hostname : t->peer, t->claims.tid, sub, code, reason);
		tunnel_goodbye(t, code, reason);
		n++;
	}
	return n;
}

void enforce_revoke(struct relay *r, const char *sub, const char *jti, const char *tid)
{
	int n = close_matching(r, sub, jti, tid, "revoked",
			       "this token was revoked: create a new one and run dvv login again");
	for (int i = 0; i < n; i++)
		M_PLAN_CLOSED(revoked);
}

void enforce_block(struct relay *r, const char *sub, const char *tid, const char *reason)
{
	const char *why = reason && !strcmp(reason, "suspended")
				  ? "this tunnel is suspended: your plan has fewer tunnels than "
				    "your account (upgrade, or delete another tunnel)"
				  : "this tunnel was deleted from your account";
	int n = close_matching(r, sub, NULL, tid, "blocked", why);
	for (int i = 0; i < n; i++)
		M_PLAN_CLOSED(blocked);
}

/* The label of t's hostname (up to the first dot). */
static void host_label(const struct tunnel *t, char *out, size_t len)
{
	const char *dot = strchr(t->hostname, '.');
	size_t n = dot ? (size_t)(dot - t->hostname) : strlen(t->hostname);
	snprintf(out, len, "%.*s", (int)n, t->hostname);
}

static void on_user_plan(struct relay *r, void *priv, const struct rredis_user *u)
{
	(void)priv;
	if (u->err)
		return; /* the next plan event or registration reads it again */
	for (struct dlist *it = r->tunnels.next; it != &r->tunnels;) {
		struct tunnel *t = container_of(it, struct tunnel, node);
		it = it->next;
		if (!of_user(t, u->sub))
			continue;
		const char *reserved = NULL;
		for (size_t i = 0; i < u->nnames; i++)
			if (!strcmp(u->name_tid[i], t->claims.tid))
				reserved = u->name_label[i];
		t->plan = *u->plan;
		t->used_bytes = u->used_bytes;
		char label[64];
		host_label(t, label, sizeof(label));
		const char *why = NULL;
		if (t->custom && !t->plan.custom_names)
			why = "your plan no longer includes a custom name: reconnecting with a "
			      "random name";
		else if (t->plan.custom_names && reserved && strcmp(reserved, label))
			why = "your custom name changed: reconnecting under it";
		if (why) {
			if (t->custom)
				rredis_forget_name(r, t->claims.tid); /* the next name is random */
			M_PLAN_CLOSED(plan);
			pr_info("tunnel %s: plan changed: %s", t->hostname, why);
			tunnel_goodbye(t, "plan", why);
			continue;
		}
		bool over = t->plan.bandwidth_bytes && t->used_bytes >= t->plan.bandwidth_bytes;
		bool lifted = false;
		if (t->capped && !over) {
			t->capped = false;
			M_DEC(tunnels_capped);
			lifted = true;
		} else if (!t->capped && over) {
			cap(t);
			continue;
		}
		enforce_send_plan(t, lifted ? "your plan changed: bandwidth available again" : NULL);
	}
}

void enforce_plan_changed(struct relay *r, const char *sub)
{
	dlist_for_each(n, &r->tunnels) {
		struct tunnel *t = container_of(n, struct tunnel, node);
		if (of_user(t, sub)) {
			/* one re-read per event, only where the user has a tunnel */
			if (rredis_read_user(r, sub, on_user_plan, NULL))
				pr_rl(LOG_WARN, "plan event for user %s: Redis unavailable", sub);
			return;
		}
	}
}

void enforce_tick(struct relay *r)
{
	uint64_t now = r->loop.now;
	int64_t wall = wall_s();
	int shed = 0;
	double load = (double)r->ntunnels * 4 + (double)M_GET(splices_active);
	bool over = load > (double)r->cfg.capacity && r->npeers &&
		    now - r->last_shed_ms >= 1000;
	if (over)
		r->last_shed_ms = now;
	for (struct dlist *it = r->tunnels.next; it != &r->tunnels;) {
		struct tunnel *t = container_of(it, struct tunnel, node);
		it = it->next;
		if (t->state != TS_UP)
			continue;
		if ((uint32_t)tunnel_players(t) > 0)
			t->idle_since_ms = now;
		else if (t->plan.idle_timeout_s &&
			 now - t->idle_since_ms >= (uint64_t)t->plan.idle_timeout_s * 1000) {
			char d[24], reason[128];
			fmt_duration(t->plan.idle_timeout_s, d, sizeof(d));
			snprintf(reason, sizeof(reason),
				 "no players for %s: the %s plan closes idle tunnels; run dvv again "
				 "to reopen",
				 d, t->plan.tier);
			rredis_set_down(r, t->hostname, "idle");
			M_PLAN_CLOSED(idle);
			pr_info("tunnel %s: %s", t->hostname, reason);
			tunnel_goodbye(t, "idle", reason);
			continue;
		}
		/* a new period lifts the cap (the usage hash restarts from 0) */
		if (t->capped && t->plan.bandwidth_bytes) {
			int64_t s, e;
			plan_period(&t->plan, wall, &s, &e);
			(void)s;
			if (t->plan.period_end && wall >= t->plan.period_end) {
				t->capped = false;
				t->used_bytes = 0;
				enforce_send_plan(t, "a new billing period started");
				continue;
			}
		}
		/* over capacity: move priority-0 tunnels away (make-before-break) */
		if (over && shed < SHED_PER_SECOND && t->plan.priority == 0 && !t->sent_away &&
		    load >= r->cfg.shed_fraction * r->cfg.capacity) {
			struct ctl_msg m = {.type = CTL_MOVE};
			snprintf(m.u.move.addr, sizeof(m.u.move.addr), "%s",
				 r->peers[r->peer_rr++ % r->npeers]);
			snprintf(m.u.move.reason, sizeof(m.u.move.reason), "relay over capacity");
			t->sent_away = true;
			M_INC(tunnels_shed_total);
			M_PLAN_CLOSED(shed);
			pr_info("tunnel %s: priority 0 over capacity: asked to move", t->hostname);
			tunnel_send(t, &m);
			shed++;
			load -= 4;
			continue;
		}
		if (now - t->last_plan_ms >= PLAN_FRAME_EVERY_MS)
			enforce_send_plan(t, NULL);
	}
}
