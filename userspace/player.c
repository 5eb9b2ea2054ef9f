/* Player side of the relay: accept, read the Minecraft handshake with MSG_PEEK (the bytes stay
 * in the socket and reach the server untouched), route by hostname, and either join the player
 * to an agent data connection, hand it to forward.c (the name's tunnel is on another relay), or
 * answer for an offline name ourselves. Read from player_accept_cb at the bottom upwards:
 * player_start -> handshake_step -> route -> join_or_wait -> do_join. */
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "player.h"
#include "ratelimit.h"
#include "route_cache.h"
#include "status.h"
#include "enforce.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LEGACY_WAIT_MS 300   /* a bare 0xFE / 0xFE01 ping: wait this long for the 1.6 part */
#define ANSWER_TIMEOUT_MS 5000
#define LINGER_MS 2000

static void player_io_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void player_timer_cb(struct loop *l, struct loop_timer *tm);

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
	case ANS_RECONNECTING:
		snprintf(out, outlen,
			 f == FORM_STATUS ? "%s is reconnecting\ndvv: the server will be back in a few seconds, refresh in a moment"
			 : f == FORM_KICK ? "%.0sThe server is reconnecting. Try again in a few seconds."
					  : "%s is reconnecting: try again in a moment",
			 host);
		return;
	case ANS_BUSY:
		snprintf(out, outlen,
			 f == FORM_STATUS ? "%s is busy\ndvv: too many players are joining at once, refresh in a moment"
			 : f == FORM_KICK ? "%.0sThe server is busy: too many players are joining at once. Try again in a few seconds."
					  : "%s is busy: try again in a moment",
			 host);
		return;
	case ANS_UNAVAILABLE:
		snprintf(out, outlen,
			 f == FORM_STATUS ? "%s is temporarily unreachable\ndvv: the relay cannot look up this name right now"
			 : f == FORM_KICK ? "dvv cannot reach %s right now (its relay is unreachable). Try again shortly."
					  : "%s is temporarily unreachable",
			 host);
		return;
	case ANS_IDLE:
		snprintf(out, outlen, "%s",
			 f == FORM_STATUS ? "\u00a77Closed after being idle - the owner can restart it"
			 : f == FORM_KICK ? "This server's tunnel was closed after being idle. Ask its owner to restart it."
					  : "Closed after being idle: ask its owner to restart it");
		return;
	case ANS_FULL:
	case ANS_CAPPED:
		/* the texts come from enforce.c, which knows the plan */
		snprintf(out, outlen, "%s", why);
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

/* The player stops counting as an unfinished handshake (routed, answered or closed). */
static void leave_handshake(struct player *p)
{
	if (p->state != PS_HANDSHAKE)
		return;
	M_DEC(handshakes_pending);
	rl_pending_done(&p->r->rl, p->rl_slot, &p->peer);
}

static void leave_state(struct player *p)
{
	leave_handshake(p);
	if (p->state == PS_WAIT_AGENT)
		dlist_del(&p->wait_node);
}

void player_enter(struct player *p, enum player_state s)
{
	leave_state(p);
	p->state = s;
}

void player_put(struct player *p)
{
	if (--p->refs == 0) {
		free(p->status);
		free(p);
	}
}

static void put_deferred(void *arg) { player_put(arg); }

int player_release(struct player *p)
{
	struct relay *r = p->r;
	int fd = p->io.fd;
	leave_state(p);
	loop_timer_cancel(&r->loop, &p->timer);
	loop_io_del(&r->loop, &p->io);
	p->io.fd = -1;
	forward_cancel(p);
	dlist_del(&p->all);
	/* its loop_io may still be in this batch of events: free it after the batch */
	loop_defer(&r->loop, put_deferred, p);
	return fd;
}

void player_close(struct player *p)
{
	if (p->io.fd >= 0)
		close(player_release(p));
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
	player_enter(p, PS_LINGER);
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

/* No live tunnel for this name (or it did not answer): tell the player clearly, at once. */
void player_answer(struct player *p, enum answer_kind kind, const char *why)
{
	struct mc_handshake *hs = &p->hs;
	uint8_t out[1024];
	char text[512];
	M_INC(players_offline_total);
	p->answer = kind;
	const char *host = hs->host_len ? hs->host : "this address";
	pr_rl_trace(LOG_INFO, p->trace, "player for %s: answered by the relay (%s)", host, why);
	if (hs->kind != MC_KIND_MODERN) {
		size_t n = 0;
		int32_t proto = hs->protocol > 0 ? hs->protocol : 127;
		/* the cached status, marked offline; protocol -1 so the list shows "Offline" */
		if (kind == ANS_RECONNECTING && p->status)
			n = status_render_legacy(p->status, p->status_len, -1, out, sizeof(out));
		if (!n) {
			answer_text(kind, FORM_LEGACY, host, why, text, sizeof(text));
			n = mc_build_legacy_kick(out, sizeof(out), proto, "dvv", text);
		}
		/* legacy: whatever the client sent is consumed by lingering */
		answer_and_linger(p, out, n);
		return;
	}
	if (consume(p, hs->frame_len)) {
		player_close(p);
		return;
	}
	if (hs->next_state == MC_NEXT_STATUS) {
		player_enter(p, PS_ANSWER_STATUS);
		p->rxlen = 0;
		loop_io_set(&p->r->loop, &p->io, EPOLLIN | EPOLLRDHUP | EPOLLET);
		loop_timer_arm(&p->r->loop, &p->timer, ANSWER_TIMEOUT_MS);
		status_pump(p);
		return;
	}
	answer_text(kind, FORM_KICK, host, why, text, sizeof(text));
	size_t n = mc_build_login_disconnect(out, sizeof(out), text);
	answer_and_linger(p, out, n);
}

/* Our answer to the status request: the cached status marked offline when the tunnel is
 * reconnecting and Redis had one, else our own MOTD. 0, or -1 if it could not be sent whole. */
static int send_status(struct player *p)
{
	uint8_t small[1024], *buf = small;
	char *json = NULL;
	size_t jlen, n = 0;
	int rc = -1;
	if (p->answer == ANS_RECONNECTING && p->status &&
	    status_render_offline(p->status, p->status_len, &json, &jlen) == 0 &&
	    (buf = malloc(jlen + 16))) {
		n = status_packet(json, jlen, buf, jlen + 16);
		/* up to ~32 KiB in one non-blocking send: make room for it in the send buffer */
		int sndbuf = 2 * (int)n;
		if (n > 8192)
			setsockopt(p->io.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	}
	if (!buf)
		buf = small;
	if (!n) {
		char motd[400];
		if (buf != small)
			free(buf);
		buf = small;
		answer_text(p->answer, FORM_STATUS, p->hs.host_len ? p->hs.host : "this address", p->motd,
			    motd, sizeof(motd));
		n = mc_build_status_response(small, sizeof(small), p->hs.protocol, "dvv", motd);
	}
	if (n && send(p->io.fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n)
		rc = 0;
	if (buf != small)
		free(buf);
	free(json);
	return rc;
}

/* The status exchange with an offline name: answer the request (0x00) with our status and the
 * ping (0x01) with a pong, then linger. */
static void status_pump(struct player *p)
{
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
			if (send_status(p)) {
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
	struct data_hdr h = {.trace = p->trace};
	uint8_t hdr[DATA_HDR_LEN_MAX];
	memcpy(&h.src, &p->peer, sizeof(h.src));
	memcpy(&h.dst, &p->local, sizeof(h.dst));
	size_t n = data_hdr_encode(&h, hdr);
	if (send(d->io.fd, hdr, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n) {
		dataconn_close(d);
		return -1;
	}
	int afd = d->io.fd;
	/* detach both from the control loop without closing */
	loop_timer_cancel(&r->loop, &d->timer);
	loop_io_del(&r->loop, &d->io);
	d->io.fd = -1;
	dlist_del(&d->all);
	loop_defer(&r->loop, free, d);
	char peer[64];
	net_addr_fmt((struct sockaddr *)&p->peer, peer, sizeof(peer));
	pr_trace(LOG_INFO, p->trace, "player %s for %s: joined to its agent%s", peer, t->hostname,
		 p->forwarded ? " (forwarded by another relay)" : "");
	int pfd = player_release(p);
	M_INC(players_joined_total);
	tunnel_note_join(t);
	r->dp.ops->join(&r->dp, pfd, afd, t->key);
	return 0;
}

static void join_or_wait(struct player *p, struct tunnel *t)
{
	struct relay *r = p->r;
	struct dataconn *d;
	if (enforce_admit_player(p, t))
		return; /* answered: the plan refuses this login */
	while ((d = tunnel_take_idle(t)))
		if (do_join(p, d, t) == 0) {
			tunnel_refill(t);
			return;
		}
	/* bounded per tunnel: one busy server cannot hold every player slot of the relay */
	if (tunnel_waiting_room(t) <= 0) {
		M_INC(players_busy_total);
		player_answer(p, ANS_BUSY, "too many players are waiting for this server");
		return;
	}
	/* no idle connection: wait (bounded) for the agent to open one */
	player_enter(p, PS_WAIT_AGENT);
	dlist_add_tail(&t->waiting, &p->wait_node);
	loop_io_set(&r->loop, &p->io, EPOLLRDHUP | EPOLLET);
	loop_timer_arm(&r->loop, &p->timer, (uint64_t)r->cfg.join_wait_ms);
	tunnel_refill(t);
}

void player_join_waiting(struct tunnel *t)
{
	/* a dead connection is closed by do_join and the player stays first in line */
	while (!dlist_empty(&t->waiting) && t->nidle > 0) {
		struct player *p = container_of(t->waiting.next, struct player, wait_node);
		do_join(p, tunnel_take_idle(t), t);
	}
	tunnel_refill(t);
}

void player_move_waiting(struct tunnel *from, struct tunnel *to)
{
	/* they keep their join deadline; the new session's pool, once up, joins them in order */
	dlist_splice_tail(&from->waiting, &to->waiting);
}

void player_fail_waiting(struct tunnel *t, enum wait_fate fate, const char *reason)
{
	int n = 0;
	/* Each step takes the player off the list: an answer (it lingers, answers a status or
	 * is closed), or a new route (lookup, forward, another local tunnel's list). The list is
	 * moved aside first so that a player re-routed to this very tunnel cannot loop. */
	struct dlist gone;
	dlist_init(&gone);
	dlist_splice_tail(&t->waiting, &gone);
	for (; !dlist_empty(&gone); n++) {
		struct player *p = container_of(gone.next, struct player, wait_node);
		if (fate == WAIT_REROUTE) {
			M_INC(players_rerouted_total);
			player_reroute(p);
		} else {
			player_answer(p, ANS_OFFLINE, "its tunnel went offline");
		}
		if (gone.next == &p->wait_node) /* never spin on a player left in place */
			player_close(p);
	}
	if (n)
		pr_rl(LOG_INFO, "%s: %d waiting player%s %s: %s", t->hostname, n, n == 1 ? "" : "s",
		      fate == WAIT_REROUTE ? "routed again" : "answered offline", reason);
}

/* Everything after the join rate: a local tunnel, else the rest of the cluster. */
static void route_name(struct player *p)
{
	struct relay *r = p->r;
	struct tunnel *t = tunnel_lookup_host(r, p->hs.host, p->hs.host_len);
	if (t && t->state == TS_UP) {
		join_or_wait(p, t);
		return;
	}
	/* no live tunnel here: Redis says where it is (forward) or what to answer (forward.c) */
	forward_player(p);
}

void player_reroute(struct player *p)
{
	if (p->forwarded) {
		/* never forwarded twice: the relay that sent it answers nothing more */
		player_answer(p, ANS_RECONNECTING, "the tunnel is moving between relays");
		return;
	}
	route_cache_drop(p->r, p->hs.host);
	route_name(p);
}

static void route(struct player *p)
{
	struct relay *r = p->r;
	if (!p->forwarded && !rl_join_allow(&r->rl, &p->peer, r->loop.now)) {
		M_INC(players_rate_limited_total);
		player_answer(p, ANS_LIMITED, "rate limited");
		return;
	}
	if (p->hs.kind == MC_KIND_LEGACY_PING) {
		player_answer(p, ANS_OFFLINE, "this client is too old to reach a server by name");
		return;
	}
	/* --default-tunnel: a player who dialed no tunnel name (an IP, localhost, the bare domain)
	 * is routed, answered and forwarded as if it had dialed the default's name; a relay that
	 * adopts it re-reads the handshake and does the same with its own (equal) option */
	const char *dflt = relay_cfg_default_for(&r->cfg, p->hs.host);
	if (dflt)
		p->hs.host_len = (size_t)snprintf(p->hs.host, sizeof(p->hs.host), "%s", dflt);
	route_name(p);
}

static void handshake_step(struct player *p, uint32_t events)
{
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
	int rc = mc_parse_handshake(buf, (size_t)n, &p->hs, err, sizeof(err));
	if (rc == 0) {
		route(p);
		return;
	}
	if (rc == MC_NEED_MORE) {
		if (mc_is_legacy_prefix(buf, (size_t)n)) {
			memset(&p->hs, 0, sizeof(p->hs));
			p->hs.kind = MC_KIND_LEGACY_PING;
			p->hs.protocol = -1;
			if (events & (EPOLLRDHUP | EPOLLHUP)) {
				route(p);
				return;
			}
			if (!p->legacy_wait) {
				p->legacy_wait = true;
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
	pr_rl_trace(LOG_INFO, p->trace, "player %s: bad handshake: %s", peer, err);
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
	switch (p->state) {
	case PS_HANDSHAKE:
		if (p->legacy_wait) {
			route(p);
			return;
		}
		M_INC(handshakes_timeout_total);
		player_close(p);
		return;
	case PS_WAIT_AGENT:
		M_INC(players_join_timeout_total);
		player_answer(p, ANS_OFFLINE, "the server's agent did not answer in time");
		return;
	case PS_LOOKUP:
	case PS_FORWARD:
		forward_timeout(p);
		return;
	case PS_ANSWER_STATUS:
	case PS_LINGER:
		player_close(p);
		return;
	}
}

static int player_start(struct relay *r, struct player *p, int fd,
			const struct sockaddr_storage *peer, const struct sockaddr_storage *local,
			long slot, bool forwarded, uint64_t trace)
{
	net_tune_stream(fd);
	/* bytes for this player wait in front of its downlink: keep that queue short (lag) */
	net_bound_queue(fd,
			&(struct net_queue_opts){.notsent_lowat = r->cfg.notsent_lowat_kb << 10});
	p->refs = 1;
	p->fwd.io.fd = -1; /* no connection to another relay */
	p->r = r;
	p->state = PS_HANDSHAKE;
	p->rl_slot = slot;
	p->forwarded = forwarded;
	p->trace = trace ? trace : log_trace_new(); /* a sender without traces: our own */
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
		struct player *p = calloc(1, sizeof(*p));
		if (!p) {
			rl_pending_done(&r->rl, slot, &ss);
			close(fd);
			continue;
		}
		struct sockaddr_storage local;
		sl = sizeof(local);
		getsockname(fd, (struct sockaddr *)&local, &sl);
		if (player_start(r, p, fd, &ss, &local, slot, false, 0)) {
			rl_pending_done(&r->rl, slot, &ss);
			close(fd);
			free(p);
		}
	}
}

void player_adopt_forwarded(struct relay *r, int fd, const struct sockaddr_storage *src,
			    const struct sockaddr_storage *dst, uint64_t trace)
{
	struct player *p = calloc(1, sizeof(*p));
	if (!p || player_start(r, p, fd, src, dst, -1, true, trace)) {
		close(fd);
		free(p);
	}
}
