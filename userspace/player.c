/* Player side of the relay: accept, read the Minecraft handshake with MSG_PEEK (the bytes stay
 * in the socket and reach the server untouched), route by hostname, and either join the player
 * to an agent data connection or answer for an offline name ourselves. */
#include "log.h"
#include "metrics.h"
#include "forward.h"
#include "relay.h"
#include "rredis.h"
#include "ratelimit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LEGACY_WAIT_MS 300   /* a bare 0xFE / 0xFE01 ping: wait this long for the 1.6 part */
#define ANSWER_TIMEOUT_MS 5000
#define LINGER_MS 2000
#define LOOKUP_TIMEOUT_MS 3000	/* Redis route lookup */
#define FORWARD_CONNECT_MS 3000	/* connect to the owning relay */

static void player_io_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void player_timer_cb(struct loop *l, struct loop_timer *tm);

enum answer_kind {
	ANS_OFFLINE,	 /* no live tunnel for the name */
	ANS_LIMITED,	 /* over the per-network join rate */
	ANS_MOVING,	 /* the tunnel is between relays (ownership changing) */
	ANS_UNAVAILABLE	 /* we cannot tell where the tunnel is (Redis unreachable) */
};

/* The three forms of our own answer: status MOTD, login disconnect, legacy kick. */
enum answer_form { FORM_STATUS, FORM_KICK, FORM_LEGACY };

static void answer_text(enum answer_kind k, enum answer_form f, const char *host, const char *why,
			char *out, size_t outlen)
{
	switch (k) {
	case ANS_LIMITED:
		snprintf(out, outlen, "%s",
			 f == FORM_STATUS ? "Too many connections from your network\ndvv: wait a few seconds and refresh"
			 : f == FORM_KICK ? "Too many connection attempts from your network. Wait a few seconds and try again."
					  : "Too many connections from your network: wait a few seconds");
		return;
	case ANS_MOVING:
		snprintf(out, outlen,
			 f == FORM_STATUS ? "%s is reconnecting\ndvv: the tunnel is moving between relays, refresh in a moment"
			 : f == FORM_KICK ? "The server at %s is reconnecting to dvv. Try again in a few seconds."
					  : "%s is reconnecting: try again in a moment",
			 host);
		return;
	case ANS_UNAVAILABLE:
		snprintf(out, outlen,
			 f == FORM_STATUS ? "%s is temporarily unreachable\ndvv: the relay cannot look up this name right now"
			 : f == FORM_KICK ? "dvv cannot reach %s right now (its relay is unreachable). Try again shortly."
					  : "%s is temporarily unreachable",
			 host);
		return;
	case ANS_OFFLINE:
		break;
	}
	if (f == FORM_STATUS)
		snprintf(out, outlen,
			 "No server is online at %s\ndvv: the tunnel is offline or the name is unknown",
			 host);
	else if (f == FORM_KICK)
		snprintf(out, outlen,
			 "No server is online at %s right now (%s). If it is yours, start your server "
			 "and the dvv agent.", host, why);
	else
		snprintf(out, outlen, "%s is offline (%s)", host, why);
}

struct player_ext {
	struct player p;
	struct mc_handshake hs; /* valid once routed */
	bool legacy_wait;
	enum answer_kind answer; /* what we tell the player when we answer ourselves */
	struct loop_io fwd_io;	/* connection to the owning relay while forwarding */
	bool fwd_sent;		/* header sent, waiting for FWD_ACCEPT */
	bool fwd_relooked;	/* the owner said FWD_NOT_HERE once: Redis asked again */
	uint64_t fwd_epoch;
	int refs;		/* 1 + Redis lookups in flight */
	bool closed;
};

static struct player_ext *ext(struct player *p) { return container_of(p, struct player_ext, p); }

/* The player stops counting as an unfinished handshake (routed, answered or closed). */
static void leave_handshake(struct player *p)
{
	if (p->state != PS_HANDSHAKE)
		return;
	M_DEC(handshakes_pending);
	rl_pending_done(&p->r->rl, p->rl_slot, &p->peer);
}

/* A player is freed when it is closed and no Redis lookup still points at it. */
static void player_put(void *arg)
{
	struct player_ext *x = arg;
	if (--x->refs == 0)
		free(x);
}

static void fwd_io_close(struct player_ext *x)
{
	if (x->fwd_io.fd < 0)
		return;
	loop_io_del(&x->p.r->loop, &x->fwd_io);
	close(x->fwd_io.fd);
	x->fwd_io.fd = -1;
}

static void player_close(struct player *p)
{
	struct relay *r = p->r;
	if (p->io.fd < 0)
		return;
	leave_handshake(p);
	if (p->state == PS_WAIT_AGENT)
		dlist_del(&p->wait_node);
	loop_timer_cancel(&r->loop, &p->timer);
	loop_io_del(&r->loop, &p->io);
	close(p->io.fd);
	p->io.fd = -1;
	fwd_io_close(ext(p));
	ext(p)->closed = true;
	dlist_del(&p->all);
	loop_defer(&r->loop, player_put, ext(p));
}

void player_close_all(struct relay *r)
{
	while (!dlist_empty(&r->players))
		player_close(container_of(r->players.next, struct player, all));
}

/* Send a final answer, then half-close and drain the client's input until it closes: closing
 * with unread input would send a RST that can destroy the answer in flight. */
static void answer_and_linger(struct player *p, const uint8_t *buf, size_t len)
{
	struct relay *r = p->r;
	if (len && send(p->io.fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len) {
		player_close(p);
		return;
	}
	shutdown(p->io.fd, SHUT_WR);
	leave_handshake(p);
	if (p->state == PS_WAIT_AGENT)
		dlist_del(&p->wait_node);
	p->state = PS_LINGER;
	loop_io_set(&r->loop, &p->io, EPOLLIN | EPOLLRDHUP | EPOLLET);
	loop_timer_arm(&r->loop, &p->timer, LINGER_MS);
	player_io_cb(&r->loop, &p->io, EPOLLIN);
}

/* Consume the handshake bytes we only peeked, so we can speak the protocol ourselves. */
static int consume(struct player *p, size_t n)
{
	uint8_t sink[MC_HANDSHAKE_MAX];
	while (n) {
		ssize_t got = recv(p->io.fd, sink, n > sizeof(sink) ? sizeof(sink) : n, 0);
		if (got <= 0)
			return -1;
		n -= (size_t)got;
	}
	return 0;
}

static void status_pump(struct player *p);
static void route_remote(struct player *p);

/* No live tunnel for this name (or it did not answer): tell the player clearly, at once. */
static void answer_offline(struct player *p, const char *why)
{
	struct player_ext *x = ext(p);
	struct mc_handshake *hs = &x->hs;
	uint8_t out[1024];
	char text[512];
	M_INC(players_offline_total);
	const char *host = hs->host_len ? hs->host : "this address";
	if (hs->kind != MC_KIND_MODERN) {
		size_t n;
		answer_text(x->answer, FORM_LEGACY, host, why, text, sizeof(text));
		/* legacy: whatever the client sent is consumed by lingering */
		n = mc_build_legacy_kick(out, sizeof(out), hs->protocol > 0 ? hs->protocol : 127,
					 "dvv", text);
		answer_and_linger(p, out, n);
		return;
	}
	if (consume(p, hs->frame_len)) {
		player_close(p);
		return;
	}
	if (hs->next_state == MC_NEXT_STATUS) {
		leave_handshake(p);
		if (p->state == PS_WAIT_AGENT)
			dlist_del(&p->wait_node);
		p->state = PS_ANSWER_STATUS;
		p->rxlen = 0;
		p->protocol = hs->protocol;
		loop_io_set(&p->r->loop, &p->io, EPOLLIN | EPOLLRDHUP | EPOLLET);
		loop_timer_arm(&p->r->loop, &p->timer, ANSWER_TIMEOUT_MS);
		status_pump(p);
		return;
	}
	answer_text(x->answer, FORM_KICK, host, why, text, sizeof(text));
	size_t n = mc_build_login_disconnect(out, sizeof(out), text);
	answer_and_linger(p, out, n);
}

/* The status exchange with an offline name: answer the request (0x00) with our status and the
 * ping (0x01) with a pong, then linger. */
static void status_pump(struct player *p)
{
	struct player_ext *x = ext(p);
	for (;;) {
		if (p->rxlen < sizeof(p->rx)) {
			ssize_t n = recv(p->io.fd, p->rx + p->rxlen, sizeof(p->rx) - p->rxlen, 0);
			if (n == 0) {
				player_close(p);
				return;
			}
			if (n > 0)
				p->rxlen += (uint16_t)n;
			else if (errno != EAGAIN && errno != EINTR) {
				player_close(p);
				return;
			}
		}
		int32_t id;
		const uint8_t *pl;
		size_t plen, used;
		int rc = mc_parse_packet(p->rx, p->rxlen, sizeof(p->rx), &id, &pl, &plen, &used);
		if (rc == MC_NEED_MORE) {
			if (p->rxlen == sizeof(p->rx)) {
				player_close(p);
				return;
			}
			return; /* wait for more */
		}
		if (rc < 0) {
			player_close(p);
			return;
		}
		uint8_t out[1024];
		if (id == 0x00 && plen == 0 && !p->status_sent) {
			char motd[400];
			answer_text(x->answer, FORM_STATUS, x->hs.host_len ? x->hs.host : "this address",
				    "", motd, sizeof(motd));
			size_t n = mc_build_status_response(out, sizeof(out), p->protocol, "dvv", motd);
			if (!n || send(p->io.fd, out, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n) {
				player_close(p);
				return;
			}
			p->status_sent = true;
		} else if (id == 0x01 && plen == 8) {
			size_t n = mc_build_pong(out, sizeof(out), pl);
			memmove(p->rx, p->rx + used, p->rxlen - used);
			p->rxlen = (uint16_t)(p->rxlen - used);
			answer_and_linger(p, out, n);
			return;
		} else {
			player_close(p);
			return;
		}
		memmove(p->rx, p->rx + used, p->rxlen - used);
		p->rxlen = (uint16_t)(p->rxlen - used);
	}
}

/* Join the player to data connection d: tell the agent who the player is, then hand both
 * sockets to the data plane. Returns 0, or -1 if d turned out dead (caller tries another). */
static int do_join(struct player *p, struct dataconn *d, struct tunnel *t)
{
	struct relay *r = p->r;
	struct data_hdr h;
	uint8_t hdr[DATA_HDR_LEN];
	memcpy(&h.src, &p->peer, sizeof(h.src));
	memcpy(&h.dst, &p->local, sizeof(h.dst));
	size_t n = data_hdr_encode(&h, hdr);
	if (send(d->io.fd, hdr, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n) {
		dataconn_close(d);
		return -1;
	}
	int pfd = p->io.fd, afd = d->io.fd;
	/* detach both from the control loop without closing */
	loop_timer_cancel(&r->loop, &d->timer);
	loop_io_del(&r->loop, &d->io);
	d->io.fd = -1;
	dlist_del(&d->all);
	loop_defer(&r->loop, free, d);
	leave_handshake(p);
	if (p->state == PS_WAIT_AGENT)
		dlist_del(&p->wait_node);
	loop_timer_cancel(&r->loop, &p->timer);
	loop_io_del(&r->loop, &p->io);
	p->io.fd = -1;
	ext(p)->closed = true;
	dlist_del(&p->all);
	loop_defer(&r->loop, player_put, ext(p));
	M_INC(players_joined_total);
	tunnel_note_join(t);
	r->dp.ops->join(&r->dp, pfd, afd, t->key);
	return 0;
}

static void join_or_wait(struct player *p, struct tunnel *t)
{
	struct relay *r = p->r;
	struct dataconn *d;
	while ((d = tunnel_take_idle(t)))
		if (do_join(p, d, t) == 0) {
			tunnel_refill(t);
			return;
		}
	/* no idle connection: wait (bounded) for the agent to open one */
	leave_handshake(p);
	p->state = PS_WAIT_AGENT;
	p->tunnel = t;
	dlist_add_tail(&t->waiting, &p->wait_node);
	loop_io_set(&r->loop, &p->io, EPOLLRDHUP | EPOLLET);
	loop_timer_arm(&r->loop, &p->timer, (uint64_t)r->cfg.join_wait_ms);
	tunnel_refill(t);
}

void player_join_waiting(struct tunnel *t)
{
	while (!dlist_empty(&t->waiting) && t->nidle > 0) {
		struct player *p = container_of(t->waiting.next, struct player, wait_node);
		struct dataconn *d = tunnel_take_idle(t);
		if (do_join(p, d, t) == 0)
			continue;
	}
	tunnel_refill(t);
}

void player_fail_waiting(struct tunnel *t, const char *reason)
{
	while (!dlist_empty(&t->waiting)) {
		struct player *p = container_of(t->waiting.next, struct player, wait_node);
		answer_offline(p, "its tunnel went offline");
		if (p->io.fd >= 0 && p->state == PS_WAIT_AGENT) {
			dlist_del(&p->wait_node); /* answer failed half-way */
			p->state = PS_LINGER;
		}
	}
	(void)reason;
}

/* ---- forwarding to the relay that holds the tunnel ---- */

static void forward_fail(struct player *p, const char *why)
{
	struct player_ext *x = ext(p);
	M_INC(forward_failures_total);
	route_cache_drop(p->r, x->hs.host);
	fwd_io_close(x);
	pr_rl(LOG_INFO, "forward of %s failed: %s", x->hs.host, why);
	x->answer = ANS_MOVING;
	answer_offline(p, why);
}

static void route_remote(struct player *p);

/* Both sockets go to the data plane: the player's peeked handshake is forwarded by it. */
static void forward_splice(struct player *p)
{
	struct player_ext *x = ext(p);
	struct relay *r = p->r;
	struct loop *l = &r->loop;
	int pfd = p->io.fd, ffd = x->fwd_io.fd;
	loop_io_del(l, &x->fwd_io);
	x->fwd_io.fd = -1;
	loop_timer_cancel(l, &p->timer);
	loop_io_del(l, &p->io);
	p->io.fd = -1;
	x->closed = true;
	dlist_del(&p->all);
	loop_defer(l, player_put, x);
	M_INC(players_forwarded_total);
	r->dp.ops->join(&r->dp, pfd, ffd, 0);
}

static void fwd_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct player_ext *x = container_of(io, struct player_ext, fwd_io);
	struct player *p = &x->p;
	struct relay *r = p->r;
	if (x->fwd_sent) {
		/* waiting for the owner's accept byte; the owner sends nothing else before the
		 * player's bytes reach it, so this recv empties the receive queue */
		uint8_t b;
		ssize_t n = recv(io->fd, &b, 1, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n == 1 && b == FWD_NOT_HERE && !x->fwd_relooked) {
			/* our route was stale: forget it and ask Redis once more (at most two
			 * forwards per player, never a loop) */
			x->fwd_relooked = true;
			fwd_io_close(x);
			route_cache_drop(r, x->hs.host);
			M_INC(route_stale_total);
			route_remote(p);
			return;
		}
		if (n != 1 || b != FWD_ACCEPT) {
			forward_fail(p, n == 0 ? "the owning relay refused the forward"
					       : "the owning relay answered the forward wrongly");
			return;
		}
		forward_splice(p);
		return;
	}
	int e = net_so_error(io->fd);
	if (e || (events & (EPOLLERR | EPOLLHUP))) {
		forward_fail(p, e ? strerror(e) : "connection to the owning relay failed");
		return;
	}
	if (!(events & EPOLLOUT))
		return;
	struct fwd_hdr h = {.ts_ms = wall_ms(), .epoch = x->fwd_epoch};
	rand_bytes(h.nonce, sizeof(h.nonce));
	memcpy(&h.src, &p->peer, sizeof(h.src));
	memcpy(&h.dst, &p->local, sizeof(h.dst));
	snprintf(h.host, sizeof(h.host), "%s", x->hs.host);
	snprintf(h.from, sizeof(h.from), "%s", r->cfg.instance_id);
	uint8_t buf[FWD_FIXED + FWD_BODY_MAX];
	size_t n = fwd_encode(&h, r->fwd_key, r->fwd_keylen, buf, sizeof(buf));
	if (!n || send(io->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n) {
		forward_fail(p, "cannot write the forward header");
		return;
	}
	x->fwd_sent = true;
	if (loop_io_set(l, io, EPOLLIN | EPOLLRDHUP))
		forward_fail(p, "out of resources");
}

static void forward_to(struct player *p, const char *addr, uint64_t epoch)
{
	struct player_ext *x = ext(p);
	struct relay *r = p->r;
	struct net_addr a;
	char err[160];
	int fd = -1;
	if (net_parse_addr(addr, &a, false, err, sizeof(err)) || net_connect(&a, &fd)) {
		forward_fail(p, "the owning relay's address is unusable");
		return;
	}
	x->fwd_epoch = epoch;
	x->fwd_sent = false;
	x->fwd_io = (struct loop_io){.fd = fd, .cb = fwd_io_cb};
	if (loop_io_set(&r->loop, &x->fwd_io, EPOLLOUT | EPOLLRDHUP)) {
		close(fd);
		x->fwd_io.fd = -1;
		forward_fail(p, "out of resources");
		return;
	}
	p->state = PS_FORWARD;
	loop_io_set(&r->loop, &p->io, EPOLLRDHUP | EPOLLET);
	loop_timer_arm(&r->loop, &p->timer, FORWARD_CONNECT_MS);
}

static void route_found(struct player *p, bool found, const char *instance, uint64_t epoch,
			const char *addr)
{
	struct relay *r = p->r;
	if (!found || !strcmp(instance, r->cfg.instance_id) || !strcmp(addr, "-")) {
		/* nobody holds it, or Redis says we do but we no longer have the session */
		answer_offline(p, "no tunnel is connected for this name");
		return;
	}
	forward_to(p, addr, epoch);
}

static void on_route(struct relay *r, void *priv, bool err, bool found, const char *instance,
		     uint64_t epoch, const char *addr)
{
	struct player_ext *x = priv;
	struct player *p = &x->p;
	if (x->closed || p->state != PS_LOOKUP) {
		player_put(x);
		return;
	}
	x->refs--;
	if (err) {
		x->answer = ANS_UNAVAILABLE;
		answer_offline(p, "the tunnel registry is unreachable");
		return;
	}
	route_cache_put(r, x->hs.host, found, instance, epoch, addr);
	route_found(p, found, instance, epoch, addr);
}

static void route_remote(struct player *p)
{
	struct player_ext *x = ext(p);
	struct relay *r = p->r;
	const struct route_entry *e = route_cache_get(r, x->hs.host);
	leave_handshake(p);
	if (e) {
		char inst[66], addr[130];
		snprintf(inst, sizeof(inst), "%s", e->instance);
		snprintf(addr, sizeof(addr), "%s", e->addr);
		p->state = PS_LOOKUP;
		route_found(p, e->found, inst, e->epoch, addr);
		return;
	}
	M_INC(route_lookups_total);
	if (rredis_lookup_route(r, x->hs.host, on_route, x)) {
		p->state = PS_LOOKUP;
		x->answer = ANS_UNAVAILABLE;
		answer_offline(p, "the tunnel registry is unreachable");
		return;
	}
	x->refs++;
	p->state = PS_LOOKUP;
	loop_io_set(&r->loop, &p->io, EPOLLRDHUP | EPOLLET);
	loop_timer_arm(&r->loop, &p->timer, LOOKUP_TIMEOUT_MS);
}

static void route(struct player *p)
{
	struct player_ext *x = ext(p);
	struct relay *r = p->r;
	if (!p->forwarded && !rl_join_allow(&r->rl, &p->peer, r->loop.now)) {
		M_INC(players_rate_limited_total);
		x->answer = ANS_LIMITED;
		answer_offline(p, "rate limited");
		return;
	}
	if (x->hs.kind == MC_KIND_LEGACY_PING) {
		answer_offline(p, "this client is too old to reach a server by name");
		return;
	}
	struct tunnel *t = tunnel_lookup_host(r, x->hs.host, x->hs.host_len);
	if (t && t->state == TS_UP) {
		join_or_wait(p, t);
		return;
	}
	if (p->forwarded) {
		/* Another relay believed we hold this name; we do not (any more). Never forward a
		 * forwarded player: tell it the tunnel is moving. */
		x->answer = ANS_MOVING;
		answer_offline(p, "the tunnel is moving between relays");
		return;
	}
	if (!r->fwd_enabled) {
		answer_offline(p, "no tunnel is connected for this name");
		return;
	}
	route_remote(p);
}

static void handshake_step(struct player *p, uint32_t events)
{
	struct player_ext *x = ext(p);
	uint8_t buf[MC_HANDSHAKE_MAX];
	ssize_t n = recv(p->io.fd, buf, sizeof(buf), MSG_PEEK);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		player_close(p);
		return;
	}
	if (n == 0) { /* closed before sending anything */
		player_close(p);
		return;
	}
	char err[128];
	int rc = mc_parse_handshake(buf, (size_t)n, &x->hs, err, sizeof(err));
	if (rc == 0) {
		route(p);
		return;
	}
	if (rc == MC_NEED_MORE) {
		if (mc_is_legacy_prefix(buf, (size_t)n)) {
			memset(&x->hs, 0, sizeof(x->hs));
			x->hs.kind = MC_KIND_LEGACY_PING;
			x->hs.protocol = -1;
			if (events & (EPOLLRDHUP | EPOLLHUP)) {
				route(p);
				return;
			}
			if (!x->legacy_wait) {
				x->legacy_wait = true;
				loop_timer_arm(&p->r->loop, &p->timer, LEGACY_WAIT_MS);
			}
			return;
		}
		if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
			M_INC(handshakes_bad_total);
			player_close(p);
		}
		return;
	}
	M_INC(handshakes_bad_total);
	char peer[64];
	net_addr_fmt((struct sockaddr *)&p->peer, peer, sizeof(peer));
	pr_rl(LOG_INFO, "player %s: bad handshake: %s", peer, err);
	player_close(p);
}

static void player_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct player *p = container_of(io, struct player, io);
	switch (p->state) {
	case PS_HANDSHAKE:
		handshake_step(p, events);
		return;
	case PS_LOOKUP:
	case PS_FORWARD:
		if (events & (EPOLLHUP | EPOLLERR))
			player_close(p);
		return;
	case PS_WAIT_AGENT:
		/* Reset or fully closed: give up. A half-close (FIN after the handshake) is a valid
		 * client: its bytes are still joined when the agent connection arrives, and the data
		 * plane carries the half-close; the join deadline bounds the wait anyway. */
		if (events & (EPOLLHUP | EPOLLERR))
			player_close(p);
		return;
	case PS_ANSWER_STATUS:
		status_pump(p);
		return;
	case PS_LINGER: {
		uint8_t sink[4096];
		for (;;) {
			ssize_t n = recv(io->fd, sink, sizeof(sink), 0);
			if (n > 0)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			player_close(p);
			return;
		}
	}
	}
}

static void player_timer_cb(struct loop *l, struct loop_timer *tm)
{
	struct player *p = container_of(tm, struct player, timer);
	struct player_ext *x = ext(p);
	switch (p->state) {
	case PS_HANDSHAKE:
		if (x->legacy_wait) {
			route(p);
			return;
		}
		M_INC(handshakes_timeout_total);
		player_close(p);
		return;
	case PS_WAIT_AGENT:
		M_INC(players_join_timeout_total);
		answer_offline(p, "the server's agent did not answer in time");
		return;
	case PS_LOOKUP:
		x->answer = ANS_UNAVAILABLE;
		answer_offline(p, "the tunnel registry did not answer in time");
		return;
	case PS_FORWARD:
		forward_fail(p, "the owning relay did not answer in time");
		return;
	case PS_ANSWER_STATUS:
	case PS_LINGER:
		player_close(p);
		return;
	}
}

static int player_start(struct relay *r, struct player_ext *x, int fd,
			const struct sockaddr_storage *peer, const struct sockaddr_storage *local,
			long slot, bool forwarded)
{
	struct player *p = &x->p;
	net_tune_stream(fd);
	x->refs = 1;
	x->fwd_io.fd = -1;
	p->r = r;
	p->state = PS_HANDSHAKE;
	p->rl_slot = slot;
	p->forwarded = forwarded;
	memcpy(&p->peer, peer, sizeof(*peer));
	memcpy(&p->local, local, sizeof(*local));
	p->io = (struct loop_io){.fd = fd, .cb = player_io_cb};
	p->timer.cb = player_timer_cb;
	if (loop_io_set(&r->loop, &p->io, EPOLLIN | EPOLLRDHUP | EPOLLET))
		return -1;
	M_INC(handshakes_pending);
	loop_timer_arm(&r->loop, &p->timer, (uint64_t)r->cfg.handshake_timeout_ms);
	dlist_add_tail(&r->players, &p->all);
	return 0;
}

void player_accept_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct relay *r = l->data;
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = listener_accept(l, io, (struct sockaddr *)&ss, &sl);
		if (fd < 0)
			return;
		M_INC(players_accepted_total);
		if (M_GET(handshakes_pending) >= r->cfg.max_handshakes) {
			M_INC(handshakes_shed_total);
			close(fd);
			continue;
		}
		long slot = rl_pending_add(&r->rl, &ss);
		if (slot < 0) {
			M_INC(handshakes_shed_total);
			close(fd);
			continue;
		}
		struct player_ext *x = calloc(1, sizeof(*x));
		if (!x) {
			rl_pending_done(&r->rl, slot, &ss);
			close(fd);
			continue;
		}
		struct sockaddr_storage local;
		sl = sizeof(local);
		getsockname(fd, (struct sockaddr *)&local, &sl);
		if (player_start(r, x, fd, &ss, &local, slot, false)) {
			rl_pending_done(&r->rl, slot, &ss);
			close(fd);
			free(x);
		}
	}
}

void player_adopt_forwarded(struct relay *r, int fd, const struct sockaddr_storage *src,
			    const struct sockaddr_storage *dst)
{
	struct player_ext *x = calloc(1, sizeof(*x));
	if (!x || player_start(r, x, fd, src, dst, -1, true)) {
		close(fd);
		free(x);
	}
}
