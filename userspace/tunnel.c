/* Agent side of the relay: the agent port (TLS control channels and plain data connections),
 * tunnel sessions, attach tokens and the pool of idle data connections. */
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "rredis.h"
#include "status.h"
#include "enforce.h"
#include "hspool.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PING_INTERVAL_MS 15000
#define POOL_WINDOW_MS 10000
/* Attach tokens outstanding per tunnel: the pool's maximum plus a margin for waiting players
 * and tokens still in flight; refills never go beyond it, so an agent that never uses its
 * tokens cannot make us hold more. */
#define TOKEN_MARGIN 8
/* Control frames handled per wake-up of one tunnel (ctlconn max_frames): the rest waits for
 * the next loop turn, so one agent flooding PINGs cannot hold the loop. */
#define CTL_FRAMES_PER_WAKEUP 16
/* Pooled connections retired for their age per tick: per tunnel, and in all */
#define RETIRE_PER_TUNNEL 2
#define RETIRE_PER_TICK 64
#define STATUS_MIN_INTERVAL_MS 10000 /* CTL_STATUS stored at most this often per tunnel */

/* A data connection's ticket into its tunnel's pool: sent to the agent in ATTACH, presented
 * once in the connection's preamble. */
struct attach_token {
	struct hnode hn;	    /* r->tokens, keyed by the 8-byte id */
	struct dlist node;	    /* in tunnel->tokens */
	struct tunnel *tunnel;
	uint64_t expires_ms;
	uint8_t tok[ATTACH_TOKEN_LEN];
};

static void tunnel_io_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void tunnel_more_cb(struct loop *l, struct loop_timer *tm);
static void tunnel_timer_cb(struct loop *l, struct loop_timer *tm);
static void data_io_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void data_timer_cb(struct loop *l, struct loop_timer *tm);

/* ---- lookups ---- */

static bool host_eq(const struct hnode *n, const void *key, size_t len)
{
	const struct tunnel *t = container_of(n, struct tunnel, host_hn);
	return strlen(t->hostname) == len && !memcmp(t->hostname, key, len);
}

static bool tid_eq(const struct hnode *n, const void *key, size_t len)
{
	const struct tunnel *t = container_of(n, struct tunnel, tid_hn);
	return strlen(t->claims.tid) == len && !memcmp(t->claims.tid, key, len);
}

/* The whole token: two outstanding tokens may share an id (only 4 of its bytes are random, the
 * other 4 are our tag), never a secret. The secret is compared in constant time; whether an id
 * matched is no secret. */
static bool token_eq(const struct hnode *n, const void *key, size_t len)
{
	const struct attach_token *a = container_of(n, struct attach_token, hn);
	return !memcmp(a->tok, key, ATTACH_ID_LEN) &&
	       !CRYPTO_memcmp(a->tok + ATTACH_ID_LEN, (const uint8_t *)key + ATTACH_ID_LEN,
			      ATTACH_TOKEN_LEN - ATTACH_ID_LEN);
}

struct tunnel *tunnel_lookup_host(struct relay *r, const char *host, size_t len)
{
	struct hnode *n = htab_find(&r->by_host, htab_hash(&r->by_host, host, len), host, len,
				    host_eq);
	return n ? container_of(n, struct tunnel, host_hn) : NULL;
}

static struct tunnel *lookup_tid(struct relay *r, const char *tid)
{
	size_t len = strlen(tid);
	struct hnode *n = htab_find(&r->by_tid, htab_hash(&r->by_tid, tid, len), tid, len, tid_eq);
	return n ? container_of(n, struct tunnel, tid_hn) : NULL;
}

/* ---- admission: unauthenticated connections on the agent port ---- */

/* Counted apart from tunnels: a flood of connections that never authenticate must neither fill
 * the relay (max-tunnels) nor skew the load it publishes for placement. */
static void unauth_add(struct relay *r)
{
	r->nunauth++;
	M_SET(agent_unauth_connections, r->nunauth);
}

static void unauth_done(struct relay *r, bool *flag, const struct sockaddr_storage *src,
			long slot)
{
	if (!*flag)
		return;
	*flag = false;
	rl_pending_done(&r->agent_rl, slot, src);
	r->nunauth--;
	M_SET(agent_unauth_connections, r->nunauth);
}

/* ---- data connections ---- */

static void dataconn_free(void *arg) { free(arg); }

void dataconn_close(struct dataconn *d)
{
	if (d->io.fd < 0)
		return;
	if (d->state == DS_IDLE && d->tunnel) {
		dlist_del(&d->node);
		d->tunnel->nidle--;
		M_DEC(data_conns_idle);
	}
	int fd = dataconn_release(d);
	if (fd >= 0)
		close(fd);
}

int dataconn_release(struct dataconn *d)
{
	int fd = d->io.fd;
	if (fd < 0)
		return -1;
	unauth_done(d->r, &d->unauth, &d->src, d->src_slot);
	loop_timer_cancel(&d->r->loop, &d->timer);
	loop_io_del(&d->r->loop, &d->io);
	if (d->fio.fd >= 0) { /* forward.c takes it first when it hands d on */
		loop_io_del(&d->r->loop, &d->fio);
		close(d->fio.fd);
		d->fio.fd = -1;
	}
	d->io.fd = -1;
	dlist_del(&d->all);
	loop_defer(&d->r->loop, dataconn_free, d);
	return fd;
}

void dataconn_close_all(struct relay *r)
{
	while (!dlist_empty(&r->dataconns))
		dataconn_close(container_of(r->dataconns.next, struct dataconn, all));
}

struct dataconn *tunnel_take_idle(struct tunnel *t)
{
	if (dlist_empty(&t->idle))
		return NULL;
	struct dataconn *d = container_of(t->idle.next, struct dataconn, node);
	dlist_del(&d->node);
	t->nidle--;
	M_DEC(data_conns_idle);
	d->tunnel = NULL;
	return d;
}

static void token_drop(struct relay *r, struct attach_token *a)
{
	htab_del(&r->tokens, &a->hn);
	dlist_del(&a->node);
	a->tunnel->ntokens--;
	OPENSSL_cleanse(a->tok, sizeof(a->tok));
	free(a);
}

/* A data connection presented a complete preamble: check the token (single use, expiring,
 * secret part compared in constant time) and put the connection in its tunnel's pool. */
static void data_attach(struct dataconn *d)
{
	struct relay *r = d->r;
	if (memcmp(d->pre, DATA_ATTACH_MAGIC, 4)) {
		M_INC(data_attach_bad_total);
		dataconn_close(d);
		return;
	}
	const uint8_t *tok = d->pre + 4;
	struct hnode *n = htab_find(&r->tokens, htab_hash(&r->tokens, tok, ATTACH_ID_LEN), tok,
				    ATTACH_TOKEN_LEN, token_eq);
	struct attach_token *a = n ? container_of(n, struct attach_token, hn) : NULL;
	/* not ours: another relay of the region may have issued it (a proxy in front of several
	 * relays sends each connection to any of them) */
	if (!a && forward_dataconn(d) == 0)
		return;
	if (!a || a->expires_ms < r->loop.now || a->tunnel->state != TS_UP) {
		M_INC(data_attach_bad_total);
		pr_rl(LOG_INFO, "data connection refused: unknown, used or expired attach token");
		dataconn_close(d);
		return;
	}
	struct tunnel *t = a->tunnel;
	token_drop(r, a);
	loop_timer_cancel(&r->loop, &d->timer);
	unauth_done(r, &d->unauth, &d->src, d->src_slot);
	d->state = DS_IDLE;
	d->tunnel = t;
	d->idle_since_ms = r->loop.now;
	dlist_add_tail(&t->idle, &d->node);
	t->nidle++;
	M_INC(data_conns_idle);
	/* an idle connection must stay silent: any byte, FIN or error retires it */
	loop_io_set(&r->loop, &d->io, EPOLLIN | EPOLLRDHUP | EPOLLET);
	if (!dlist_empty(&t->waiting))
		player_join_waiting(t);
}

static void tunnel_from_sniff(struct dataconn *d);

static void data_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct dataconn *d = container_of(io, struct dataconn, io);
	if (d->state == DS_IDLE) {
		struct tunnel *t = d->tunnel;
		dataconn_close(d);
		tunnel_refill(t);
		return;
	}
	if (d->state == DS_FORWARD) {
		/* the agent sends nothing more before a player's bytes reach it: only its going
		 * away matters while we connect to the owning relay */
		if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
			dataconn_close(d);
		return;
	}
	if (d->state == DS_SNIFF) {
		uint8_t b;
		ssize_t n = recv(io->fd, &b, 1, MSG_PEEK);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			dataconn_close(d);
			return;
		}
		if (b == 0x16) { /* TLS ClientHello: a control channel */
			tunnel_from_sniff(d);
			return;
		}
		if (b != DATA_ATTACH_MAGIC[0]) {
			M_INC(data_attach_bad_total);
			dataconn_close(d);
			return;
		}
		d->state = DS_ATTACH;
	}
	/* DS_ATTACH: read exactly the preamble, nothing more */
	for (;;) {
		ssize_t n = recv(io->fd, d->pre + d->prelen, DATA_ATTACH_LEN - d->prelen, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			dataconn_close(d);
			return;
		}
		d->prelen += (uint8_t)n;
		if (d->prelen == DATA_ATTACH_LEN) {
			data_attach(d);
			return;
		}
	}
}

static void data_timer_cb(struct loop *l, struct loop_timer *tm)
{
	struct dataconn *d = container_of(tm, struct dataconn, timer);
	pr_rl(LOG_INFO, "agent port: connection closed, nothing useful within %d ms",
	      d->r->cfg.ctl_auth_timeout_ms);
	dataconn_close(d);
}

/* An admitted connection (slot: its place in the per-source count) starts being read: a
 * control channel or a data connection; one forwarded by another relay can only be the
 * latter. Takes fd. */
static void dataconn_start(struct relay *r, int fd, const struct sockaddr_storage *src,
			   long slot, bool forwarded)
{
	struct loop *l = &r->loop;
	struct dataconn *d = calloc(1, sizeof(*d));
	if (!d) {
		rl_pending_done(&r->agent_rl, slot, src);
		close(fd);
		return;
	}
	net_tune_stream(fd);
	/* the player -> server direction queues here when the agent's host is the bottleneck */
	net_bound_queue(fd, &(struct net_queue_opts){.notsent_lowat = r->cfg.notsent_lowat_kb
									<< 10});
	d->src = *src;
	d->src_slot = slot;
	d->unauth = true;
	unauth_add(r);
	d->r = r;
	d->forwarded = forwarded;
	d->state = forwarded ? DS_ATTACH : DS_SNIFF;
	d->io = (struct loop_io){.fd = fd, .cb = data_io_cb};
	d->fio.fd = -1;
	d->timer.cb = data_timer_cb;
	if (loop_io_set(l, &d->io, EPOLLIN | EPOLLRDHUP | EPOLLET)) {
		unauth_done(r, &d->unauth, &d->src, d->src_slot);
		close(fd);
		free(d);
		return;
	}
	loop_timer_arm(l, &d->timer, (uint64_t)r->cfg.ctl_auth_timeout_ms);
	dlist_add_tail(&r->dataconns, &d->all);
	/* the agent's first bytes usually came with the connection: handle them now, so a
	 * pool refill (many connections at once from one address) leaves the unauthenticated
	 * count before the next accept */
	data_io_cb(l, &d->io, EPOLLIN);
}

void agent_accept_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct relay *r = l->data;
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = listener_accept(l, io, (struct sockaddr *)&ss, &sl);
		if (fd < 0)
			return;
		M_INC(agents_accepted_total);
		/* admission: closed at once, before any byte is read; the agent backs off */
		if (r->nunauth >= r->cfg.agent_unauth_max) {
			M_REFUSED(unauth_total);
			pr_rl(LOG_WARN, "agent port: %d unauthenticated connections: refusing more",
			      r->nunauth);
			close(fd);
			continue;
		}
		long slot = rl_pending_add(&r->agent_rl, &ss);
		if (slot < 0) {
			M_REFUSED(unauth_source);
			pr_rl(LOG_INFO, "agent port: too many unauthenticated connections from one source");
			close(fd);
			continue;
		}
		dataconn_start(r, fd, &ss, slot, false);
	}
}

void tunnel_adopt_dataconn(struct relay *r, int fd, const struct sockaddr_storage *src)
{
	if (r->nunauth >= r->cfg.agent_unauth_max) {
		M_REFUSED(unauth_total);
		pr_rl(LOG_WARN, "internal port: %d unauthenticated connections: refusing a "
				"forwarded data connection", r->nunauth);
		close(fd);
		return;
	}
	long slot = rl_pending_add(&r->agent_rl, src);
	if (slot < 0) {
		M_REFUSED(unauth_source);
		pr_rl(LOG_INFO, "internal port: too many unauthenticated connections from one source");
		close(fd);
		return;
	}
	M_INC(dataconns_forwarded_received);
	dataconn_start(r, fd, src, slot, true);
}

/* ---- tunnels ---- */

static void tunnel_free(void *arg)
{
	struct tunnel *t = arg;
	if (t->capped)
		M_DEC(tunnels_capped); /* the gauge counts tunnels that exist */
	ctl_conn_free(&t->ctl);
	OPENSSL_cleanse(&t->claims, sizeof(t->claims));
	free(t);
}

static void tunnel_put(struct tunnel *t)
{
	if (--t->refs == 0)
		loop_defer(&t->r->loop, tunnel_free, t);
}

static void tunnel_close(struct tunnel *t, const char *code, const char *why);

/* Queue and flush m. A message that cannot be queued (the agent does not read: its queue is
 * over CTL_OUT_MAX) cuts the session, as ctlconn.h promises: the agent reconnects. */
static void send_msg(struct tunnel *t, const struct ctl_msg *m)
{
	if (t->state == TS_CLOSED)
		return;
	int rc = ctl_conn_send(&t->ctl, m);
	if (rc) {
		pr_rl(LOG_WARN, "tunnel %s: %s: closing the session",
		      t->hostname[0] ? t->hostname : t->peer,
		      t->ctl.err[0] ? t->ctl.err : strerror(-rc));
		if (rc == -ENOBUFS)
			M_INC(ctl_send_overflow_total);
		tunnel_close(t, NULL, "control message could not be queued");
		return;
	}
	rc = ctl_conn_flush(&t->ctl);
	if (rc > 0)
		loop_io_set(&t->r->loop, &t->io, (uint32_t)rc);
}

static void send_error(struct tunnel *t, const char *code, const char *msg, bool retry,
		       uint32_t retry_ms)
{
	struct ctl_msg m = {.type = CTL_ERROR};
	snprintf(m.u.error.code, sizeof(m.u.error.code), "%s", code);
	snprintf(m.u.error.message, sizeof(m.u.error.message), "%s", msg);
	m.u.error.retry = retry;
	m.u.error.retry_after_ms = retry_ms;
	send_msg(t, &m);
}

static void tunnel_close(struct tunnel *t, const char *code, const char *why)
{
	struct relay *r = t->r;
	if (t->state == TS_CLOSED)
		return;
	if (code)
		send_error(t, code, why, false, 0);
	if (t->state == TS_UP) {
		pr_info("tunnel down: %s (%s)", t->hostname, why);
		htab_del(&r->by_host, &t->host_hn);
		M_DEC(tunnels_active);
		usage_tunnel_down(r, t);
		rredis_release_tunnel(r, t->hostname, t->epoch);
	} else {
		pr_rl(LOG_INFO, "agent %s: %s", t->peer, why);
	}
	if (t->in_tid) {
		htab_del(&r->by_tid, &t->tid_hn);
		t->in_tid = false;
	}
	if (t->state == TS_REGISTERING || t->state == TS_UP)
		r->ntunnels--;
	unauth_done(r, &t->unauth, &t->src, t->src_slot);
	t->state = TS_CLOSED;
	while (!dlist_empty(&t->idle))
		dataconn_close(container_of(t->idle.next, struct dataconn, node));
	while (!dlist_empty(&t->tokens))
		token_drop(r, container_of(t->tokens.next, struct attach_token, node));
	player_fail_waiting(t, t->wait_fate, why);
	loop_timer_cancel(&r->loop, &t->timer);
	loop_timer_cancel(&r->loop, &t->more);
	loop_io_del(&r->loop, &t->io);
	close(t->io.fd);
	t->io.fd = -1;
	dlist_del(&t->node);
	tunnel_put(t);
}

void tunnel_send(struct tunnel *t, const struct ctl_msg *m) { send_msg(t, m); }

void tunnel_goodbye(struct tunnel *t, const char *code, const char *reason)
{
	struct ctl_msg g = {.type = CTL_GOODBYE};
	snprintf(g.u.goodbye.code, sizeof(g.u.goodbye.code), "%s", code);
	snprintf(g.u.goodbye.reason, sizeof(g.u.goodbye.reason), "%s", reason);
	send_msg(t, &g);
	t->wait_fate = WAIT_OFFLINE;
	tunnel_close(t, NULL, reason);
}

void tunnel_close_all(struct relay *r, const char *why)
{
	while (!dlist_empty(&r->tunnels))
		tunnel_close(container_of(r->tunnels.next, struct tunnel, node), NULL, why);
}

void tunnel_send_all_away(struct relay *r, bool goodbye)
{
	for (struct dlist *n = r->tunnels.next; n != &r->tunnels;) {
		struct tunnel *t = container_of(n, struct tunnel, node);
		n = n->next; /* send_msg may close t */
		if (t->state != TS_UP || t->sent_away || (!r->npeers && !goodbye))
			continue;
		struct ctl_msg m;
		if (r->npeers) {
			m = (struct ctl_msg){.type = CTL_MOVE};
			snprintf(m.u.move.addr, sizeof(m.u.move.addr), "%s",
				 r->peers[r->peer_rr++ % r->npeers]);
			snprintf(m.u.move.reason, sizeof(m.u.move.reason), "%s",
				 r->draining ? "relay draining" : "relay lost its registry");
		} else {
			m = (struct ctl_msg){.type = CTL_GOODBYE};
			snprintf(m.u.goodbye.code, sizeof(m.u.goodbye.code), "draining");
			snprintf(m.u.goodbye.reason, sizeof(m.u.goodbye.reason), "relay draining");
		}
		/* the session keeps serving until the agent's new one is up (it then says
		 * GOODBYE "moved", or its new relay takes the lease over) */
		t->sent_away = true;
		M_INC(tunnels_sent_away_total);
		pr_info("tunnel %s: %s", t->hostname,
			m.type == CTL_MOVE ? "asked to move" : "told the relay is draining");
		send_msg(t, &m);
	}
}

int tunnel_waiting_room(const struct tunnel *t)
{
	int n = 0;
	dlist_for_each(it, &t->waiting)
		n++;
	return t->r->cfg.max_waiting_per_tunnel - n;
}

void tunnel_note_join(struct tunnel *t)
{
	uint64_t now = t->r->loop.now;
	if (now - t->window_start_ms > POOL_WINDOW_MS) {
		t->window_start_ms = now;
		t->joins_window = 0;
	}
	t->joins_window++;
}

/* Pool target: the minimum plus half the joins of the last window, capped. A server that sees
 * a burst of joins gets a deeper pool so the next players do not wait a round trip. */
static int pool_target(const struct tunnel *t)
{
	const struct relay_cfg *c = &t->r->cfg;
	int want = c->pool_min + (int)(t->joins_window / 2);
	return want > c->pool_max ? c->pool_max : want;
}

void tunnel_refill(struct tunnel *t)
{
	struct relay *r = t->r;
	if (t->state != TS_UP)
		return;
	int nwait = 0;
	for (struct dlist *n = t->waiting.next; n != &t->waiting; n = n->next)
		nwait++;
	int need = pool_target(t) - (t->nidle + t->ntokens);
	if (nwait - t->ntokens > need)
		need = nwait - t->ntokens;
	if (need <= 0)
		return;
	if (need > r->cfg.pool_max + TOKEN_MARGIN - t->ntokens)
		need = r->cfg.pool_max + TOKEN_MARGIN - t->ntokens;
	if (need > CTL_ATTACH_MAX)
		need = CTL_ATTACH_MAX;
	if (need <= 0)
		return;
	struct ctl_msg m = {.type = CTL_ATTACH};
	for (int i = 0; i < need; i++) {
		struct attach_token *a = calloc(1, sizeof(*a));
		if (!a)
			break;
		rand_bytes(a->tok, sizeof(a->tok));
		/* which relay issued it (forward.h) */
		a->tok[0] = (uint8_t)(r->token_tag >> 24);
		a->tok[1] = (uint8_t)(r->token_tag >> 16);
		a->tok[2] = (uint8_t)(r->token_tag >> 8);
		a->tok[3] = (uint8_t)r->token_tag;
		a->tunnel = t;
		a->expires_ms = r->loop.now + (uint64_t)r->cfg.token_ttl_ms;
		htab_add(&r->tokens, &a->hn, htab_hash(&r->tokens, a->tok, ATTACH_ID_LEN));
		dlist_add_tail(&t->tokens, &a->node);
		t->ntokens++;
		memcpy(m.u.attach.tokens[m.u.attach.n++], a->tok, ATTACH_TOKEN_LEN);
	}
	if (m.u.attach.n)
		send_msg(t, &m);
	OPENSSL_cleanse(&m, sizeof(m));
}

/* old, a session of the same tunnel, is replaced by t: the agent hears why, its waiting
 * players wait for t instead (joined once its pool fills). */
static void tunnel_replace(struct tunnel *old, struct tunnel *t)
{
	struct ctl_msg g = {.type = CTL_GOODBYE};
	snprintf(g.u.goodbye.code, sizeof(g.u.goodbye.code), "replaced");
	snprintf(g.u.goodbye.reason, sizeof(g.u.goodbye.reason),
		 "replaced by a newer session of this tunnel");
	send_msg(old, &g);
	player_move_waiting(old, t);
	if (old->state != TS_CLOSED)
		tunnel_close(old, NULL, "replaced by a newer session");
}

/* t is registered: it becomes the tunnel's session here, replacing one still up. */
static void tunnel_take_tid(struct relay *r, struct tunnel *t)
{
	if (t->in_tid)
		return;
	struct tunnel *old = lookup_tid(r, t->claims.tid);
	if (old && old != t)
		tunnel_replace(old, t);
	htab_add(&r->by_tid, &t->tid_hn, t->key);
	t->in_tid = true;
}

/* Registration finished (rredis_register_tunnel's callback): the tunnel goes up under its name,
 * or the agent hears why not. */
static void tunnel_registered(struct relay *r, void *priv, const struct rredis_reg_result *res)
{
	struct tunnel *t = priv;
	const char *hostname = res->hostname;
	uint64_t epoch = res->epoch;
	if (t->state != TS_REGISTERING) {
		if (!res->code)
			rredis_release_tunnel(r, hostname, epoch); /* agent left meanwhile */
		goto out;
	}
	/* the user's plan in Redis, if any, has replaced the token's claim */
	snprintf(t->claims.plan, sizeof(t->claims.plan), "%s", res->plan->tier);
	if (res->code) {
		/* a taken name, a revoked token, a blocked tunnel: retrying cannot help */
		bool retry = strcmp(res->code, "name_taken") && strcmp(res->code, "revoked") &&
			     strcmp(res->code, "blocked");
		M_INC(tunnels_rejected_total);
		send_error(t, res->code, res->msg, retry,
			   retry ? 1000 + (uint32_t)(rand_u64() % 2000) : 0);
		tunnel_close(t, NULL, res->msg);
		goto out;
	}
	/* the plan decides placement under load (priority 0 goes elsewhere) */
	if (!enforce_tunnel_up(t, res->plan, res->used_bytes)) {
		rredis_release_tunnel(r, hostname, epoch);
		t->wait_fate = WAIT_REROUTE;
		tunnel_close(t, NULL, "priority-0 registration placed elsewhere (relay busy)");
		goto out;
	}
	t->custom = res->custom;
	tunnel_take_tid(r, t);
	size_t len = strlen(hostname);
	struct tunnel *other = tunnel_lookup_host(r, hostname, len);
	if (other) {
		player_move_waiting(other, t); /* the name's players: this session serves them now */
		tunnel_close(other, NULL, "name taken over by a newer session");
	}
	snprintf(t->hostname, sizeof(t->hostname), "%s", hostname);
	t->epoch = epoch;
	t->state = TS_UP;
	htab_add(&r->by_host, &t->host_hn, htab_hash(&r->by_host, hostname, len));
	usage_tunnel_up(r, t);
	M_INC(tunnels_registered_total);
	M_INC(tunnels_active);
	pr_info("tunnel up: %s (tunnel %s, user %s, plan %s%s, agent %s, epoch %llu)", hostname,
		t->claims.tid, t->claims.sub, t->claims.plan, t->capped ? ", capped" : "", t->peer,
		(unsigned long long)epoch);
	struct ctl_msg m = {.type = CTL_WELCOME};
	snprintf(m.u.welcome.hostname, sizeof(m.u.welcome.hostname), "%s", hostname);
	snprintf(m.u.welcome.tunnel, sizeof(m.u.welcome.tunnel), "%s", t->claims.tid);
	snprintf(m.u.welcome.instance, sizeof(m.u.welcome.instance), "%s", r->cfg.instance_id);
	snprintf(m.u.welcome.region, sizeof(m.u.welcome.region), "%s", r->cfg.region);
	m.u.welcome.ping_ms = PING_INTERVAL_MS;
	/* where to re-home if this relay dies (decision 3) */
	for (size_t i = 0; i < r->npeers && i < CTL_PEERS_MAX; i++)
		snprintf(m.u.welcome.peers[m.u.welcome.npeers++], sizeof(m.u.welcome.peers[0]), "%s",
			 r->peers[i]);
	send_msg(t, &m);
	if (t->state != TS_UP)
		goto out;
	enforce_send_plan(t, NULL); /* right after WELCOME */
	if (t->state != TS_UP)
		goto out;
	t->last_rx_ms = r->loop.now;
	loop_timer_arm(&r->loop, &t->timer, PING_INTERVAL_MS);
	tunnel_refill(t);
out:
	tunnel_put(t);
}

/* The route leases we hold, for rredis's renewals and clean exit. */
void tunnel_each_lease(struct relay *r, rredis_lease_fn fn, void *ctx)
{
	for (struct dlist *n = r->tunnels.next; n != &r->tunnels; n = n->next) {
		struct tunnel *t = container_of(n, struct tunnel, node);
		if (t->state == TS_UP)
			fn(ctx, &(struct rredis_lease){t->hostname, t->claims.tid, t->epoch});
	}
}

void tunnel_lease_lost(struct relay *r, const char *hostname, uint64_t epoch)
{
	struct tunnel *t = tunnel_lookup_host(r, hostname, strlen(hostname));
	if (!t || t->epoch != epoch)
		return;
	pr_warn("tunnel %s: route lease now held by another relay: closing our session", hostname);
	struct ctl_msg m = {.type = CTL_GOODBYE};
	snprintf(m.u.goodbye.code, sizeof(m.u.goodbye.code), "taken_over");
	snprintf(m.u.goodbye.reason, sizeof(m.u.goodbye.reason), "tunnel taken over elsewhere");
	send_msg(t, &m);
	t->epoch = 0; /* the lease is not ours: do not release it */
	htab_del(&r->by_host, &t->host_hn);
	M_DEC(tunnels_active);
	usage_tunnel_down(r, t); /* its live entry is the new owner's (newer since) */
	t->state = TS_REGISTERING; /* not routable any more; tunnel_close skips the release */
	t->wait_fate = WAIT_REROUTE; /* the new owner serves them: route them there */
	tunnel_close(t, NULL, "lease lost");
}

static int tunnel_register(struct tunnel *t);

/* pre: the token was verified on a handshake thread (t->pre_auth_rc, t->pre_auth_err, and
 * t->claims already hold the result); else it is verified here. */
static int handle_hello(struct tunnel *t, const struct ctl_msg *m, bool pre)
{
	struct relay *r = t->r;
	char err[160];
	if (m->type != CTL_HELLO) {
		tunnel_close(t, "protocol", "expected HELLO first");
		return -1;
	}
	if (m->u.hello.proto != 1) {
		char msg[96];
		snprintf(msg, sizeof(msg), "control protocol %u not supported (this relay speaks 1)",
			 m->u.hello.proto);
		tunnel_close(t, "version", msg);
		return -1;
	}
	int rc;
	if (pre) {
		rc = t->pre_auth_rc;
		snprintf(err, sizeof(err), "%s", t->pre_auth_err);
	} else {
		rc = auth_verify(&r->auth, m->u.hello.token, wall_s(), &t->claims, err, sizeof(err));
	}
	if (rc) {
		M_INC(tunnels_rejected_total);
		pr_rl(LOG_INFO, "agent %s: token rejected: %s", t->peer, err);
		char msg[200];
		snprintf(msg, sizeof(msg), "token rejected: %s", err);
		tunnel_close(t, "auth", msg);
		return -1;
	}
	if (r->draining && r->npeers) {
		/* the agent retries there at once (placed=true): no ERROR, no back-off */
		struct ctl_msg mv = {.type = CTL_MOVE};
		snprintf(mv.u.move.addr, sizeof(mv.u.move.addr), "%s",
			 r->peers[r->peer_rr++ % r->npeers]);
		snprintf(mv.u.move.reason, sizeof(mv.u.move.reason), "relay draining");
		M_REFUSED(draining);
		M_INC(tunnels_moved_total);
		send_msg(t, &mv);
		tunnel_close(t, NULL, "moved: relay draining");
		return -1;
	}
	const char *busy = NULL;
	if (r->draining) {
		M_REFUSED(draining);
		busy = "relay is draining";
	} else if (r->ntunnels >= r->cfg.max_tunnels) {
		M_REFUSED(full);
		busy = "relay is full";
	} else {
		/* a quarter of the rate is kept for priority plans: whether this registration may
		 * use it is known once its plan is read (enforce_tunnel_up) */
		int got = rl_tb_take_reserve(&r->reg_tb, r->loop.now,
					     (uint32_t)r->cfg.agent_reg_rate / 4);
		t->reg_reserve = got == RL_TB_RESERVE;
		if (got == RL_TB_NONE) {
			/* a reconnect storm: spread the retries over the next seconds */
			M_REFUSED(reg_rate);
			busy = "too many registrations right now";
		}
	}
	if (busy) {
		M_INC(tunnels_rejected_total);
		send_error(t, "busy", busy, true, 1000 + (uint32_t)(rand_u64() % 2000));
		tunnel_close(t, NULL, busy);
		return -1;
	}
	/* A session of this tunnel that is still registering gives way at once. One that is up
	 * keeps serving until this one is registered (tunnel_take_tid): if the registration fails
	 * (Redis unreachable, a make-before-break move to a relay cut from Redis) the agent keeps
	 * its working session instead of losing both. */
	struct tunnel *old = lookup_tid(r, t->claims.tid);
	if (old && old->state != TS_UP)
		tunnel_replace(old, t);
	t->key = htab_hash(&r->by_tid, t->claims.tid, strlen(t->claims.tid));
	if (!lookup_tid(r, t->claims.tid)) {
		htab_add(&r->by_tid, &t->tid_hn, t->key);
		t->in_tid = true;
	}
	t->state = TS_REGISTERING;
	t->placed = m->u.hello.placed;
	unauth_done(r, &t->unauth, &t->src, t->src_slot);
	r->ntunnels++; /* a session now: counted for max-tunnels and the published load */
	loop_timer_cancel(&r->loop, &t->timer);
	/* Placement: unless a MOVE already chose this relay for the agent, a less loaded active
	 * relay of the region takes the tunnel (one hop, never a loop). The answer comes from the
	 * last heartbeat: no Redis round trip per registration. */
	const char *addr = m->u.hello.placed ? NULL : rredis_placement(r);
	if (addr && strcmp(addr, r->cfg.public_agent_addr)) {
		struct ctl_msg mv = {.type = CTL_MOVE};
		snprintf(mv.u.move.addr, sizeof(mv.u.move.addr), "%s", addr);
		snprintf(mv.u.move.reason, sizeof(mv.u.move.reason), "less loaded relay");
		send_msg(t, &mv);
		M_INC(tunnels_moved_total);
		/* players handed over from a replaced session follow the agent there */
		t->wait_fate = WAIT_REROUTE;
		tunnel_close(t, NULL, "moved to a less loaded relay");
		return -1;
	}
	return tunnel_register(t);
}

/* Registration proper: Redis claims the name and the route lease. */
static int tunnel_register(struct tunnel *t)
{
	struct relay *r = t->r;
	const struct rredis_reg req = {
		.tid = t->claims.tid, .sub = t->claims.sub, .jti = t->claims.jti,
		.plan = t->claims.plan, .label = t->claims.name};
	t->refs++;
	int rc = rredis_register_tunnel(r, &req, tunnel_registered, t);
	if (rc) {
		t->refs--;
		M_INC(tunnels_rejected_total);
		send_error(t, "unavailable", "tunnel registry unavailable, retry shortly", true,
			   2000 + (uint32_t)(rand_u64() % 3000));
		tunnel_close(t, NULL, "Redis unavailable");
		return -1;
	}
	/* registration must finish in bounded time too */
	loop_timer_arm(&r->loop, &t->timer, (uint64_t)r->cfg.ctl_auth_timeout_ms);
	return 0;
}

/* The agent's server status (CTL_STATUS): sanitized and stored in Redis, at most once per
 * STATUS_MIN_INTERVAL_MS per tunnel, for the answers given while the tunnel is offline. */
static void tunnel_status(struct tunnel *t, const char *json, size_t len)
{
	struct relay *r = t->r;
	char *clean = NULL, err[160];
	size_t clen;
	if (t->last_status_ms && r->loop.now - t->last_status_ms < STATUS_MIN_INTERVAL_MS) {
		M_INC(status_ignored_total);
		return;
	}
	if (status_sanitize(json, len, &clean, &clen, err, sizeof(err))) {
		M_INC(status_ignored_total);
		pr_rl(LOG_INFO, "tunnel %s: status ignored: %s", t->hostname, err);
		return;
	}
	t->last_status_ms = r->loop.now;
	if (rredis_store_status(r, t->hostname, clean, clen) == 0)
		M_INC(status_stored_total);
	free(clean);
}

static int tunnel_on_msg(struct ctl_conn *c, const struct ctl_msg *m)
{
	struct tunnel *t = c->data;
	t->last_rx_ms = t->r->loop.now;
	switch (t->state) {
	case TS_AUTH:
		return handle_hello(t, m, false) ? 1 : 0;
	case TS_REGISTERING:
		return 0; /* nothing is expected until WELCOME; ignore */
	case TS_UP:
		if (m->type == CTL_PING) {
			struct ctl_msg p = {.type = CTL_PONG, .u.ping.t = m->u.ping.t};
			send_msg(t, &p);
			return t->state == TS_CLOSED;
		} else if (m->type == CTL_GOODBYE) {
			/* "moved": make-before-break migration finished, the agent's new session is
			 * up elsewhere; its waiting players follow it instead of hearing "offline" */
			bool moved = !strcmp(m->u.goodbye.code, "moved");
			if (moved)
				t->wait_fate = WAIT_REROUTE;
			tunnel_close(t, NULL, moved ? "agent moved to another session" : "agent said goodbye");
			return 1;
		} else if (m->type == CTL_STATUS) {
			tunnel_status(t, m->u.status.json, m->u.status.len);
		}
		return 0;
	case TS_CLOSED:
		return 1;
	}
	return t->state == TS_CLOSED; /* a reply that could not be queued closed it */
}

static void tunnel_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct tunnel *t = container_of(io, struct tunnel, io);
	int rc = ctl_conn_io(&t->ctl);
	if (t->state == TS_CLOSED)
		return;
	if (rc < 0) {
		tunnel_close(t, NULL, t->ctl.err[0] ? t->ctl.err : strerror(-rc));
		return;
	}
	loop_io_set(l, io, (uint32_t)rc);
	if (t->ctl.more && !loop_timer_armed(&t->more))
		loop_timer_arm(l, &t->more, 0); /* the frames left: next loop turn */
}

static void tunnel_more_cb(struct loop *l, struct loop_timer *tm)
{
	struct tunnel *t = container_of(tm, struct tunnel, more);
	if (t->state != TS_CLOSED)
		tunnel_io_cb(l, &t->io, EPOLLIN);
}

static void tunnel_timer_cb(struct loop *l, struct loop_timer *tm)
{
	struct tunnel *t = container_of(tm, struct tunnel, timer);
	if (t->state == TS_AUTH || t->state == TS_REGISTERING) {
		send_error(t, "timeout", "authentication did not complete in time", true,
			   1000 + (uint32_t)(rand_u64() % 2000));
		tunnel_close(t, NULL, "authentication did not complete in time");
		return;
	}
	if (l->now - t->last_rx_ms > 3 * PING_INTERVAL_MS) {
		tunnel_close(t, NULL, "agent stopped answering");
		return;
	}
	struct ctl_msg p = {.type = CTL_PING, .u.ping.t = l->now};
	send_msg(t, &p);
	loop_timer_arm(l, tm, PING_INTERVAL_MS);
}

/* A new tunnel object for a control channel on fd, still unauthenticated (the count moves
 * from the sniffing dataconn d, which is freed; fd is the tunnel's now). */
static struct tunnel *tunnel_new(struct dataconn *d)
{
	struct relay *r = d->r;
	struct tunnel *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->src = d->src;
	t->src_slot = d->src_slot;
	t->unauth = d->unauth;
	d->unauth = false;
	int fd = d->io.fd;
	loop_timer_cancel(&r->loop, &d->timer);
	loop_io_del(&r->loop, &d->io);
	d->io.fd = -1;
	dlist_del(&d->all);
	loop_defer(&r->loop, dataconn_free, d);

	t->r = r;
	t->refs = 1;
	t->state = TS_AUTH;
	dlist_init(&t->idle);
	dlist_init(&t->waiting);
	dlist_init(&t->tokens);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
		net_addr_fmt((struct sockaddr *)&ss, t->peer, sizeof(t->peer));
	t->io = (struct loop_io){.fd = fd, .cb = tunnel_io_cb};
	t->timer.cb = tunnel_timer_cb;
	t->more.cb = tunnel_more_cb;
	return t;
}

/* t's control channel (t->ctl) is set up: the tunnel joins the loop. */
static void tunnel_attach_ctl(struct tunnel *t)
{
	struct relay *r = t->r;
	t->ctl.on_msg = tunnel_on_msg;
	t->ctl.data = t;
	t->ctl.max_frames = CTL_FRAMES_PER_WAKEUP;
	dlist_add_tail(&r->tunnels, &t->node);
	loop_timer_arm(&r->loop, &t->timer, (uint64_t)r->cfg.ctl_auth_timeout_ms);
}

static void tunnel_from_sniff(struct dataconn *d)
{
	struct relay *r = d->r;
	/* TLS handshakes cost CPU: over the rate the connection is closed before the handshake
	 * (the agent backs off and retries); a queue of waiting handshakes would only hold
	 * descriptors while the agent's own timeout runs */
	if (!rl_tb_take(&r->tls_tb, r->loop.now)) {
		M_REFUSED(tls_rate);
		pr_rl(LOG_WARN, "agent port: over %d TLS handshakes per second: closing",
		      r->cfg.agent_tls_rate);
		dataconn_close(d);
		return;
	}
	struct tunnel *t = tunnel_new(d);
	if (!t) {
		dataconn_close(d);
		return;
	}
	int fd = t->io.fd;
	if (r->hsp) {
		/* the handshake and the token check run on a handshake thread; the tunnel joins
		 * the loop when they are done (tunnel_hs_done) */
		int rc = hsp_submit(r->hsp, fd, t);
		if (rc == 0)
			return;
		if (rc == -EAGAIN) {
			/* jobs are unauthenticated connections, bounded by the same number */
			M_REFUSED(unauth_total);
			pr_rl(LOG_WARN, "agent port: %d control-channel handshakes in progress: closing",
			      hsp_jobs(r->hsp));
		}
		unauth_done(r, &t->unauth, &t->src, t->src_slot);
		close(fd);
		free(t);
		return;
	}
	if (ctl_conn_init(&t->ctl, r->tls, fd, true, NULL)) {
		unauth_done(r, &t->unauth, &t->src, t->src_slot);
		close(fd);
		free(t);
		return;
	}
	tunnel_attach_ctl(t);
	tunnel_io_cb(&r->loop, &t->io, EPOLLIN);
}

/* ---- handshake threads ---- */

/* On a handshake thread: the first frame is there; verify its token. Reads r->auth (under the
 * read lock: the loop may reload the keys) and writes only into the tunnel object, which no one
 * else sees until the job comes back. */
static void tunnel_hs_work(struct hsp_job *j, void *arg)
{
	struct relay *r = arg;
	struct tunnel *t = j->priv;
	const struct ctl_msg *m = j->first;
	if (m->type != CTL_HELLO || m->u.hello.proto != 1)
		return; /* handle_hello answers on the loop */
	pthread_rwlock_rdlock(&r->auth_lock);
	t->pre_auth_rc = auth_verify(&r->auth, m->u.hello.token, wall_s(), &t->claims,
				     t->pre_auth_err, sizeof(t->pre_auth_err));
	pthread_rwlock_unlock(&r->auth_lock);
}

/* Back on the loop: the tunnel takes the connection and its HELLO is handled, or it is closed. */
static void tunnel_hs_done(struct hsp_job *j, void *arg)
{
	struct relay *r = arg;
	struct tunnel *t = j->priv;
	if (j->status || r->hsp_stopping) {
		if (j->status == -ETIMEDOUT)
			pr_rl(LOG_INFO, "agent port: connection closed, nothing useful within %d ms",
			      r->cfg.ctl_auth_timeout_ms);
		else if (j->status && j->status != -ESHUTDOWN)
			pr_rl(LOG_INFO, "agent %s: %s", t->peer,
			      j->ctl.err[0] ? j->ctl.err : strerror(-j->status));
		unauth_done(r, &t->unauth, &t->src, t->src_slot);
		hsp_job_free(j); /* closes the socket */
		OPENSSL_cleanse(&t->claims, sizeof(t->claims));
		free(t);
		return;
	}
	hsp_job_take(j, &t->ctl);
	struct ctl_msg *m = j->first;
	j->first = NULL;
	hsp_job_free(j);
	tunnel_attach_ctl(t);
	t->last_rx_ms = r->loop.now;
	int rc = handle_hello(t, m, true);
	OPENSSL_cleanse(m, sizeof(*m));
	free(m);
	if (rc || t->state == TS_CLOSED)
		return;
	/* whatever followed HELLO (nothing, normally) and the replies: the loop's usual path */
	tunnel_io_cb(&r->loop, &t->io, EPOLLIN);
}

int tunnel_hs_start(struct relay *r)
{
	char err[160];
	if (r->cfg.agent_tls_threads <= 0)
		return 0;
	const struct hsp_cfg c = {.ctx = r->tls,
				  .threads = r->cfg.agent_tls_threads,
				  /* every job is an unauthenticated connection: the same bound */
				  .max_jobs = r->cfg.agent_unauth_max,
				  .timeout_ms = r->cfg.ctl_auth_timeout_ms,
				  .work = tunnel_hs_work,
				  .done = tunnel_hs_done,
				  .arg = r};
	r->hsp = hsp_start(&r->loop, &c, err, sizeof(err));
	if (!r->hsp) {
		pr_err("%s", err);
		return -ENOMEM;
	}
	pr_info("agent port: %d handshake thread(s)", r->cfg.agent_tls_threads);
	return 0;
}

void tunnel_hs_stop(struct relay *r)
{
	r->hsp_stopping = true;
	hsp_stop(r->hsp);
	r->hsp = NULL;
}

/* Once a second: expire unused attach tokens, retire aged pooled connections, top pools up. */
void relay_tick_tunnels(struct relay *r)
{
	int retire_budget = RETIRE_PER_TICK, *budget = &retire_budget;
	for (struct dlist *n = r->tunnels.next; n != &r->tunnels;) {
		struct tunnel *t = container_of(n, struct tunnel, node);
		n = n->next; /* tunnel_refill may close t (control queue full) */
		if (t->state != TS_UP)
			continue;
		bool expired = false;
		while (!dlist_empty(&t->tokens)) {
			struct attach_token *a = container_of(t->tokens.next, struct attach_token, node);
			if (a->expires_ms >= r->loop.now)
				break; /* issued in order, so later ones expire later */
			token_drop(r, a);
			expired = true;
		}
		/* retire idle pooled connections past their age, oldest first (the pool is in
		 * arrival order), a few at a time: a NAT or firewall on the way may have forgotten
		 * them, and a big pool must not be renewed all at once */
		uint64_t max_age = (uint64_t)r->cfg.pool_max_age_s * 1000;
		int retired = 0;
		while (!dlist_empty(&t->idle) && retired < RETIRE_PER_TUNNEL &&
		       *budget > 0) {
			struct dataconn *d = container_of(t->idle.next, struct dataconn, node);
			if (r->loop.now - d->idle_since_ms < max_age)
				break;
			dataconn_close(d);
			M_INC(data_conns_retired_total);
			retired++;
			(*budget)--;
		}
		if (expired || retired)
			tunnel_refill(t);
	}
}
