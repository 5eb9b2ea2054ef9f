/* Relay-to-relay forwarding, both ends: the forward header (encode, verify), the sending end
 * that looks up a player's owning relay and hands the player to it, and the receiving end (the
 * internal port, the replay cache of nonces) that verifies the header and adopts the player.
 * forward.h is the contract; the route cache it consults is route_cache.c.
 *
 * A forwarded player, in the order it happens (each section reads bottom-up):
 *   sending end:   forward_player -> lookup -> on_lookup -> route_found -> forward_to ->
 *                  fwd_conn_cb (header out, answer byte in) -> forward_splice; or, when nobody
 *                  can take the player, player_answer (reconnecting with the cached status,
 *                  offline for an unknown name)
 *   receiving end: internal_accept_cb -> fwdin_io_cb (header, nonce, epoch) -> answer byte ->
 *                  player_adopt_forwarded (player.c) */
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "player.h"
#include "route_cache.h"
#include "rredis.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOOKUP_TIMEOUT_MS 3000	   /* Redis route lookup */
#define FWD_HEADER_TIMEOUT_MS 3000 /* a header must arrive whole on the internal port */
#define NONCE_CACHE_MAX 262144

/* ---- the header ---- */

static void mac(const uint8_t *key, size_t keylen, const uint8_t *data, size_t len,
		uint8_t out[FWD_MAC_LEN])
{
	unsigned int n = FWD_MAC_LEN;
	HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &n);
}

size_t fwd_encode(const struct fwd_hdr *h, const uint8_t *key, size_t keylen, uint8_t *out,
		  size_t cap)
{
	size_t hl = strlen(h->host), fl = strlen(h->from), tl = strlen(h->target);
	if (hl > 255 || fl > 64 || tl > 64)
		return 0;
	size_t body = 8 + 16 + 8 + PROTO_ADDRS_LEN + 1 + hl + 1 + fl + 1 + tl + FWD_MAC_LEN;
	if (body > FWD_BODY_MAX || cap < FWD_FIXED + body)
		return 0;
	uint8_t *p = out;
	memcpy(p, FWD_MAGIC, 4);
	p[4] = FWD_VERSION;
	p[5] = (uint8_t)((h->trace ? FWD_F_TRACE : 0) | (h->flags & FWD_F_DATA));
	proto_put16(p + 6, (uint16_t)body);
	p += FWD_FIXED;
	proto_put64(p, h->ts_ms);
	memcpy(p + 8, h->nonce, 16);
	if (h->trace)
		proto_put64(p + 8, h->trace);
	proto_put64(p + 24, h->epoch);
	p += 32;
	proto_addrs_put(p, &h->src, &h->dst);
	p += PROTO_ADDRS_LEN;
	*p++ = (uint8_t)hl;
	memcpy(p, h->host, hl);
	p += hl;
	*p++ = (uint8_t)fl;
	memcpy(p, h->from, fl);
	p += fl;
	*p++ = (uint8_t)tl;
	memcpy(p, h->target, tl);
	p += tl;
	mac(key, keylen, out, (size_t)(p - out), p);
	return FWD_FIXED + body;
}

int fwd_fixed(const uint8_t fixed[FWD_FIXED])
{
	if (memcmp(fixed, FWD_MAGIC, 4) || fixed[4] != FWD_VERSION)
		return -EPROTO;
	uint16_t n = proto_get16(fixed + 6);
	if (n < FWD_BODY_MIN || n > FWD_BODY_MAX)
		return -EPROTO;
	return n;
}

int fwd_verify(const uint8_t *whole, size_t len, const uint8_t *key, size_t keylen,
	       uint64_t now_ms, struct fwd_hdr *out, char *err, size_t errlen)
{
	int body = len >= FWD_FIXED ? fwd_fixed(whole) : -EPROTO;
	if (body < 0 || len != FWD_FIXED + (size_t)body) {
		snprintf(err, errlen, "malformed forward header");
		return -EPROTO;
	}
	uint8_t want[FWD_MAC_LEN];
	mac(key, keylen, whole, len - FWD_MAC_LEN, want);
	if (CRYPTO_memcmp(want, whole + len - FWD_MAC_LEN, FWD_MAC_LEN)) {
		snprintf(err, errlen, "forward header MAC mismatch (wrong cluster secret or forged)");
		return -EACCES;
	}
	/* authenticated from here on: parse with bounds anyway */
	const uint8_t *p = whole + FWD_FIXED, *end = whole + len - FWD_MAC_LEN;
	memset(out, 0, sizeof(*out));
	out->flags = whole[5] & FWD_F_DATA;
	out->ts_ms = proto_get64(p);
	memcpy(out->nonce, p + 8, 16);
	if (whole[5] & FWD_F_TRACE)
		out->trace = proto_get64(p + 8);
	out->epoch = proto_get64(p + 24);
	p += 32;
	if (proto_addrs_get(p, &out->src, &out->dst))
		goto bad;
	p += PROTO_ADDRS_LEN;
	size_t hl = *p++;
	/* a player's header names its host; a data connection's is empty (which relays that
	 * predate FWD_F_DATA refuse) */
	if ((hl == 0) != !!(out->flags & FWD_F_DATA) || (size_t)(end - p) < hl + 1)
		goto bad;
	memcpy(out->host, p, hl);
	p += hl;
	size_t fl = *p++;
	if (fl > 64 || (size_t)(end - p) < fl + 1)
		goto bad;
	memcpy(out->from, p, fl);
	p += fl;
	size_t tl = *p++;
	if (tl > 64 || (size_t)(end - p) != tl)
		goto bad;
	memcpy(out->target, p, tl);
	if (memchr(out->host, 0, hl) || memchr(out->from, 0, fl) || memchr(out->target, 0, tl))
		goto bad;
	uint64_t skew = now_ms > out->ts_ms ? now_ms - out->ts_ms : out->ts_ms - now_ms;
	if (skew > FWD_SKEW_MS) {
		snprintf(err, errlen, "forward header from %s is %llu ms off our clock", out->from,
			 (unsigned long long)skew);
		return -ETIME;
	}
	return 0;
bad:
	snprintf(err, errlen, "malformed forward header body");
	return -EPROTO;
}

uint32_t fwd_token_tag(const char *instance_id)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *c = (const unsigned char *)instance_id; *c; c++)
		h = (h ^ *c) * 16777619u;
	return h ? h : 1;
}

/* ---- sending end (relay A) ---- */

void forward_cancel(struct player *p)
{
	if (p->fwd.io.fd < 0)
		return;
	loop_io_del(&p->r->loop, &p->fwd.io);
	close(p->fwd.io.fd);
	p->fwd.io.fd = -1;
}

static void lookup(struct player *p);

/* Arm p's timer for one step (a lookup, a forward), never past the deadline of its whole
 * routing: a player asked a question is answered within the join wait, however many steps
 * (cache, forward, NOT_HERE, lookup again, forward again) it takes. */
static void arm_step(struct player *p, uint64_t ms)
{
	struct relay *r = p->r;
	uint64_t left = p->fwd.deadline_ms > r->loop.now ? p->fwd.deadline_ms - r->loop.now : 1;
	loop_timer_arm(&r->loop, &p->timer, ms < left ? ms : left);
}

static bool time_left(const struct player *p) { return p->fwd.deadline_ms > p->r->loop.now; }

/* The owner could not take p. A route from the cache may be stale: ask Redis once more (that
 * also brings the cached status). Otherwise the tunnel exists but cannot be reached right now:
 * the player hears at once that the server is reconnecting (a ping gets the cached status). */
static void forward_fail(struct player *p, const char *why)
{
	M_INC(forward_failures_total);
	route_cache_drop(p->r, p->hs.host);
	forward_cancel(p);
	pr_rl_trace(LOG_INFO, p->trace, "forward of %s failed: %s", p->hs.host, why);
	if (p->fwd.cached && !p->fwd.relooked && time_left(p)) {
		p->fwd.relooked = true;
		lookup(p);
		return;
	}
	player_answer(p, ANS_RECONNECTING, why);
}

/* Redis could not answer. A player routed here by another relay, or one whose route we had
 * (a second lookup), is for a tunnel that exists: it is reconnecting. */
static enum answer_kind registry_down(const struct player *p)
{
	if (p->forwarded || p->fwd.relooked)
		return ANS_RECONNECTING;
	return p->r->fwd_enabled ? ANS_UNAVAILABLE : ANS_OFFLINE;
}

void forward_timeout(struct player *p)
{
	if (p->state == PS_LOOKUP)
		player_answer(p, registry_down(p), "the tunnel registry did not answer in time");
	else
		forward_fail(p, "the owning relay did not answer in time");
}

/* The owner accepted: both sockets go to the data plane, which forwards the player's peeked
 * handshake like any other byte. */
static void forward_splice(struct player *p)
{
	struct relay *r = p->r;
	int ffd = p->fwd.io.fd;
	loop_io_del(&r->loop, &p->fwd.io);
	p->fwd.io.fd = -1;
	int pfd = player_release(p);
	M_INC(players_forwarded_total);
	char peer[64];
	net_addr_fmt((struct sockaddr *)&p->peer, peer, sizeof(peer));
	pr_trace(LOG_INFO, p->trace, "player %s for %s: forwarded to relay %s", peer, p->hs.host,
		 p->fwd.target);
	r->dp.ops->join(&r->dp, pfd, ffd, 0);
}

static void fwd_conn_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct player *p = container_of(io, struct player, fwd.io);
	struct relay *r = p->r;
	if (p->fwd.sent) {
		/* waiting for the owner's answer byte; the owner sends nothing else before the
		 * player's bytes reach it, so this recv empties the receive queue */
		uint8_t b;
		ssize_t n = recv(io->fd, &b, 1, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n == 1 && b == FWD_NOT_HERE && !p->fwd.relooked && time_left(p)) {
			/* our route was stale: forget it and ask Redis once more (at most two
			 * forwards per player, never a loop) */
			p->fwd.relooked = true;
			forward_cancel(p);
			route_cache_drop(r, p->hs.host);
			M_INC(route_stale_total);
			lookup(p);
			return;
		}
		if (n == 1 && b == FWD_NOT_HERE) {
			forward_fail(p, "the tunnel is between relays");
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
	struct fwd_hdr h = {.ts_ms = wall_ms(), .epoch = p->fwd.epoch, .trace = p->trace};
	rand_bytes(h.nonce, sizeof(h.nonce));
	memcpy(&h.src, &p->peer, sizeof(h.src));
	memcpy(&h.dst, &p->local, sizeof(h.dst));
	snprintf(h.host, sizeof(h.host), "%s", p->hs.host);
	snprintf(h.from, sizeof(h.from), "%s", r->cfg.instance_id);
	snprintf(h.target, sizeof(h.target), "%s", p->fwd.target);
	uint8_t buf[FWD_FIXED + FWD_BODY_MAX];
	size_t n = fwd_encode(&h, r->fwd_key, r->fwd_keylen, buf, sizeof(buf));
	if (!n || send(io->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n) {
		forward_fail(p, "cannot write the forward header");
		return;
	}
	p->fwd.sent = true;
	if (loop_io_set(l, io, EPOLLIN | EPOLLRDHUP))
		forward_fail(p, "out of resources");
}

static void forward_to(struct player *p, const char *instance, const char *addr, uint64_t epoch)
{
	struct relay *r = p->r;
	struct net_addr a;
	char err[160];
	int fd = -1;
	if (net_parse_addr(addr, &a, false, err, sizeof(err)) || net_connect(&a, &fd)) {
		forward_fail(p, "the owning relay's address is unusable");
		return;
	}
	net_keepalive(fd, 0); /* relay-to-relay links cross NATs too (best effort) */
	p->fwd.epoch = epoch;
	snprintf(p->fwd.target, sizeof(p->fwd.target), "%.64s", instance);
	p->fwd.sent = false;
	p->fwd.io = (struct loop_io){.fd = fd, .cb = fwd_conn_cb};
	if (loop_io_set(&r->loop, &p->fwd.io, EPOLLOUT | EPOLLRDHUP)) {
		close(fd);
		p->fwd.io.fd = -1;
		forward_fail(p, "out of resources");
		return;
	}
	player_enter(p, PS_FORWARD);
	loop_io_set(&r->loop, &p->io, EPOLLRDHUP | EPOLLET);
	arm_step(p, (uint64_t)r->cfg.forward_connect_ms);
}

/* Act on what we know of the name: forward to the relay holding its live tunnel, else answer.
 * A name Redis knows (an owner or a cached status) belongs to a tunnel that is offline,
 * migrating or reconnecting, and so does the name of a player another relay routed here; a
 * bare route lease without an owner is not enough (a stale or foreign key): offline. */
static void route_found(struct player *p, bool found, const char *instance, uint64_t epoch,
			const char *addr)
{
	struct relay *r = p->r;
	if (found && r->fwd_enabled && !p->forwarded && strcmp(instance, r->cfg.instance_id) &&
	    strcmp(addr, "-")) {
		forward_to(p, instance, addr, epoch);
		return;
	}
	/* nobody holds it; or we do per Redis but have no live session (it is registering);
	 * or we cannot forward (a forwarded player, forwarding off) */
	if (p->known || p->forwarded)
		player_answer(p, ANS_RECONNECTING, "the server is reconnecting");
	else
		player_answer(p, ANS_OFFLINE, "no tunnel is connected for this name");
}

static void on_lookup(struct relay *r, void *priv, const struct rredis_lookup_result *res)
{
	struct player *p = priv;
	/* closed, or answered at the lookup deadline: nothing left to do with the reply */
	bool waiting = p->io.fd >= 0 && p->state == PS_LOOKUP;
	player_put(p); /* the lookup's reference; p stays while it is open */
	if (!waiting)
		return;
	if (res->err) {
		player_answer(p, registry_down(p), "the tunnel registry is unreachable");
		return;
	}
	if (res->down_idle && !res->found) {
		M_JOIN_REFUSED(idle);
		player_answer(p, ANS_IDLE, "closed after being idle");
		return;
	}
	p->known = res->known;
	free(p->status);
	p->status = NULL;
	p->status_len = 0;
	if (res->status && (p->status = malloc(res->status_len + 1))) {
		memcpy(p->status, res->status, res->status_len);
		p->status[res->status_len] = 0;
		p->status_len = res->status_len;
	}
	p->fwd.cached = false;
	/* only live routes are cached: an answer for an offline name needs its status anyway */
	if (res->found && r->fwd_enabled)
		route_cache_put(r, p->hs.host, true, res->instance, res->epoch, res->addr);
	route_found(p, res->found, res->instance, res->epoch, res->addr);
}

/* One Redis round trip for the route, the cached status and the owner of p's name. */
static void lookup(struct player *p)
{
	struct relay *r = p->r;
	player_enter(p, PS_LOOKUP);
	M_INC(route_lookups_total);
	p->refs++;
	if (rredis_lookup(r, p->hs.host, on_lookup, p)) {
		p->refs--;
		/* without Redis: the answers of a relay that knows nothing beyond itself */
		player_answer(p, registry_down(p), "the tunnel registry is unreachable");
		return;
	}
	loop_io_set(&r->loop, &p->io, EPOLLRDHUP | EPOLLET);
	arm_step(p, LOOKUP_TIMEOUT_MS);
}

void forward_player(struct player *p)
{
	struct relay *r = p->r;
	p->fwd.deadline_ms = r->loop.now + (uint64_t)r->cfg.join_wait_ms;
	const struct route_entry *e =
		r->fwd_enabled && !p->forwarded ? route_cache_get(r, p->hs.host) : NULL;
	if (e && e->found) {
		/* copies: a failed forward drops the entry */
		char inst[66], addr[130];
		snprintf(inst, sizeof(inst), "%s", e->instance);
		snprintf(addr, sizeof(addr), "%s", e->addr);
		player_enter(p, PS_LOOKUP);
		p->fwd.cached = true;
		route_found(p, true, inst, e->epoch, addr);
		return;
	}
	lookup(p);
}

/* ---- agent data connections: the sending end ---- */

void forward_set_relays(struct relay *r, const char *const *kv, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i + 1 < n && k < sizeof(r->fwd_relays) / sizeof(r->fwd_relays[0]);
	     i += 2) {
		const char *id = kv[i], *addr = kv[i + 1];
		if (!strcmp(id, r->cfg.instance_id) || !strcmp(addr, "-") || strlen(id) > 64 ||
		    strlen(addr) >= sizeof(r->fwd_relays[0].addr))
			continue; /* ourselves, or a relay that does not forward */
		struct fwd_relay *f = &r->fwd_relays[k++];
		f->tag = fwd_token_tag(id);
		snprintf(f->instance, sizeof(f->instance), "%s", id);
		snprintf(f->addr, sizeof(f->addr), "%s", addr);
	}
	r->nfwd_relays = k;
}

/* Connected to the owning relay: send the header and the agent's preamble in one write, then
 * both sockets go to the data plane. No answer byte is awaited: the owner sends nothing before
 * it joins a player to the connection, and refuses by closing (the agent then retries). */
static void dfwd_conn_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct dataconn *d = container_of(io, struct dataconn, fio);
	struct relay *r = d->r;
	int e = net_so_error(io->fd);
	if (e || (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP))) {
		M_INC(forward_failures_total);
		pr_rl(LOG_INFO, "data connection for relay %s: %s", d->fwd_target,
		      e ? strerror(e) : "the owning relay closed the connection");
		dataconn_close(d);
		return;
	}
	if (!(events & EPOLLOUT))
		return;
	struct fwd_hdr h = {.flags = FWD_F_DATA, .ts_ms = wall_ms()};
	rand_bytes(h.nonce, sizeof(h.nonce));
	memcpy(&h.src, &d->src, sizeof(h.src));
	socklen_t sl = sizeof(h.dst);
	if (getsockname(d->io.fd, (struct sockaddr *)&h.dst, &sl))
		memcpy(&h.dst, &d->src, sizeof(h.dst));
	snprintf(h.from, sizeof(h.from), "%s", r->cfg.instance_id);
	snprintf(h.target, sizeof(h.target), "%s", d->fwd_target);
	uint8_t buf[FWD_FIXED + FWD_BODY_MAX + DATA_ATTACH_LEN];
	size_t n = fwd_encode(&h, r->fwd_key, r->fwd_keylen, buf, sizeof(buf) - DATA_ATTACH_LEN);
	if (n) {
		memcpy(buf + n, d->pre, DATA_ATTACH_LEN);
		n += DATA_ATTACH_LEN;
	}
	bool sent = n && send(io->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n;
	OPENSSL_cleanse(buf, sizeof(buf)); /* the attach token */
	if (!sent) {
		M_INC(forward_failures_total);
		dataconn_close(d);
		return;
	}
	int ffd = io->fd;
	loop_io_del(l, io);
	d->fio.fd = -1;
	char target[65];
	snprintf(target, sizeof(target), "%s", d->fwd_target);
	int afd = dataconn_release(d);
	M_INC(dataconns_forwarded_sent);
	pr_debug("data connection forwarded to relay %s", target);
	r->dp.ops->join(&r->dp, afd, ffd, 0);
}

int forward_dataconn(struct dataconn *d)
{
	struct relay *r = d->r;
	if (!r->fwd_enabled || d->forwarded)
		return -ENOENT; /* never twice: the relay it was sent to is the one that issued it */
	const uint8_t *id = d->pre + 4;
	uint32_t tag = (uint32_t)id[0] << 24 | (uint32_t)id[1] << 16 | (uint32_t)id[2] << 8 | id[3];
	if (tag == r->token_tag)
		return -ENOENT;
	const struct fwd_relay *o = NULL;
	for (size_t i = 0; i < r->nfwd_relays && !o; i++)
		if (r->fwd_relays[i].tag == tag)
			o = &r->fwd_relays[i];
	if (!o)
		return -ENOENT;
	struct net_addr a;
	char err[160];
	int fd = -1;
	if (net_parse_addr(o->addr, &a, false, err, sizeof(err)) || net_connect(&a, &fd))
		return -ENOENT;
	net_keepalive(fd, 0);
	snprintf(d->fwd_target, sizeof(d->fwd_target), "%s", o->instance);
	d->fio = (struct loop_io){.fd = fd, .cb = dfwd_conn_cb};
	if (loop_io_set(&r->loop, &d->fio, EPOLLOUT | EPOLLRDHUP)) {
		close(fd);
		d->fio.fd = -1;
		return -ENOMEM;
	}
	/* still unauthenticated and under its accept deadline (d->timer) while we connect */
	d->state = DS_FORWARD;
	return 0;
}

/* ---- receiving end (relay B): the replay cache ---- */

struct nonce_entry {
	struct hnode hn;	    /* r->nonces */
	struct dlist fifo;	    /* r->nonce_fifo: oldest first */
	uint64_t expires_ms;
	uint8_t nonce[16];
};

static bool nonce_eq(const struct hnode *n, const void *key, size_t len)
{
	return !memcmp(container_of(n, struct nonce_entry, hn)->nonce, key, 16);
}

static void nonce_del(struct relay *r, struct nonce_entry *e)
{
	htab_del(&r->nonces, &e->hn);
	dlist_del(&e->fifo);
	r->nnonces--;
	free(e);
}

static void nonce_expire(struct relay *r)
{
	while (!dlist_empty(&r->nonce_fifo)) {
		struct nonce_entry *e = container_of(r->nonce_fifo.next, struct nonce_entry, fifo);
		if (e->expires_ms > r->loop.now)
			break;
		nonce_del(r, e);
	}
}

enum nonce_verdict { NONCE_NEW, NONCE_REPLAYED, NONCE_FULL };

/* Record a header's nonce. A nonce seen within the validity window is a replay. An unexpired
 * nonce is never evicted to make room (that would let its header be replayed): when the cache
 * holds r->nonce_max of them, the header is refused instead, and so it is without memory. */
static enum nonce_verdict nonce_check(struct relay *r, const uint8_t nonce[16])
{
	uint64_t h = htab_hash(&r->nonces, nonce, 16);
	if (htab_find(&r->nonces, h, nonce, 16, nonce_eq))
		return NONCE_REPLAYED;
	nonce_expire(r);
	if (r->nnonces >= r->nonce_max)
		return NONCE_FULL;
	struct nonce_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NONCE_FULL;
	memcpy(e->nonce, nonce, 16);
	e->expires_ms = r->loop.now + 2 * FWD_SKEW_MS;
	htab_add(&r->nonces, &e->hn, h);
	dlist_add_tail(&r->nonce_fifo, &e->fifo);
	r->nnonces++;
	return NONCE_NEW;
}

/* ---- receiving end: the internal port ---- */

/* A connection on the internal port, until its forward header is verified. */
struct fwdin {
	struct loop_io io;
	struct loop_timer timer;
	struct relay *r;
	struct dlist all;	    /* r->fwdins */
	uint16_t len, need;
	uint8_t buf[FWD_FIXED + FWD_BODY_MAX];
};

static void fwdin_free(void *arg) { free(arg); }

static void fwdin_close(struct fwdin *f, bool close_fd)
{
	struct relay *r = f->r;
	if (f->io.fd < 0)
		return;
	loop_timer_cancel(&r->loop, &f->timer);
	loop_io_del(&r->loop, &f->io);
	if (close_fd)
		close(f->io.fd);
	f->io.fd = -1;
	dlist_del(&f->all);
	loop_defer(&r->loop, fwdin_free, f);
}

static void fwdin_refuse(struct fwdin *f, enum fwd_refused reason, const char *why)
{
	char peer[64] = "?";
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getpeername(f->io.fd, (struct sockaddr *)&ss, &sl) == 0)
		net_addr_fmt((struct sockaddr *)&ss, peer, sizeof(peer));
	atomic_fetch_add_explicit(&g_metrics.forward_refused[reason], 1, memory_order_relaxed);
	pr_rl(LOG_WARN, "internal port: refused %s: %s", peer, why);
	fwdin_close(f, true);
}

static void fwdin_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct fwdin *f = container_of(io, struct fwdin, io);
	struct relay *r = f->r;
	/* read exactly the header: what follows is the player's stream */
	while (f->len < f->need) {
		ssize_t n = recv(io->fd, f->buf + f->len, f->need - f->len, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			fwdin_close(f, true);
			return;
		}
		f->len = (uint16_t)(f->len + n);
		if (f->len == FWD_FIXED && f->need == FWD_FIXED) {
			int body = fwd_fixed(f->buf);
			if (body < 0) {
				fwdin_refuse(f, FWD_REFUSED_malformed, "not a forward header");
				return;
			}
			f->need = (uint16_t)(FWD_FIXED + body);
		}
	}
	struct fwd_hdr h;
	char err[200];
	int rc = fwd_verify(f->buf, f->len, r->fwd_key, r->fwd_keylen, wall_ms(), &h, err,
			    sizeof(err));
	if (rc) {
		fwdin_refuse(f, rc == -EACCES ? FWD_REFUSED_mac : rc == -ETIME ? FWD_REFUSED_clock
										: FWD_REFUSED_malformed,
			     err);
		return;
	}
	/* bound to the relay the sender's route named: a header is good on one internal port */
	if (strcmp(h.target, r->cfg.instance_id)) {
		snprintf(err, sizeof(err), "forward header from %s is meant for relay '%s'", h.from,
			 h.target);
		fwdin_refuse(f, FWD_REFUSED_target, err);
		return;
	}
	switch (nonce_check(r, h.nonce)) {
	case NONCE_NEW:
		break;
	case NONCE_REPLAYED:
		fwdin_refuse(f, FWD_REFUSED_replay, "replayed forward header");
		return;
	case NONCE_FULL:
		fwdin_refuse(f, FWD_REFUSED_nonce_full,
			     "replay cache full of unexpired nonces (forward flood?)");
		return;
	}
	if (h.flags & FWD_F_DATA) {
		/* the preamble follows: read by tunnel.c, under the agent port's caps */
		int fd = io->fd;
		fwdin_close(f, false);
		tunnel_adopt_dataconn(r, fd, &h.src);
		return;
	}
	/* A's route is stale: the agent moved or is between relays, or the name is live here
	 * under another lease than the one A read (a route names one session, by its fencing
	 * epoch). Say so, so that A drops its cached route and asks Redis once more instead of
	 * failing the player. */
	struct tunnel *t = tunnel_lookup_host(r, h.host, strlen(h.host));
	if (!t || t->state != TS_UP || t->epoch != h.epoch) {
		static const uint8_t not_here = FWD_NOT_HERE;
		M_INC(forward_not_here_total);
		pr_rl_trace(LOG_INFO, h.trace, "player for %s from relay %s: not here (stale route)",
			    h.host, h.from);
		(void)!send(io->fd, &not_here, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		fwdin_close(f, true);
		return;
	}
	/* A sends the player's bytes only after this byte, so nothing is queued behind the
	 * header we just read (see forward.h). A fresh socket's send buffer takes one byte. */
	static const uint8_t accept_byte = FWD_ACCEPT;
	if (send(io->fd, &accept_byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) {
		fwdin_close(f, true);
		return;
	}
	int fd = io->fd;
	fwdin_close(f, false);
	M_INC(players_adopted_total);
	pr_trace(LOG_DEBUG, h.trace, "player for %s: accepted from relay %s", h.host, h.from);
	player_adopt_forwarded(r, fd, &h.src, &h.dst, h.trace);
}

static void fwdin_timer_cb(struct loop *l, struct loop_timer *t)
{
	fwdin_refuse(container_of(t, struct fwdin, timer), FWD_REFUSED_timeout,
		     "no forward header in time");
}

static void internal_accept_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct relay *r = l->data;
	for (;;) {
		int fd = listener_accept(l, io, NULL, NULL);
		if (fd < 0)
			return;
		struct fwdin *f = calloc(1, sizeof(*f));
		if (!f) {
			close(fd);
			continue;
		}
		net_tune_stream(fd);
		f->r = r;
		f->need = FWD_FIXED;
		f->io = (struct loop_io){.fd = fd, .cb = fwdin_io_cb};
		f->timer.cb = fwdin_timer_cb;
		if (loop_io_set(l, &f->io, EPOLLIN | EPOLLRDHUP | EPOLLET)) {
			close(fd);
			free(f);
			continue;
		}
		loop_timer_arm(l, &f->timer, FWD_HEADER_TIMEOUT_MS);
		dlist_add_tail(&r->fwdins, &f->all);
	}
}

/* ---- set-up ---- */

static int load_secret(struct relay *r)
{
	const char *env = getenv("DVV_CLUSTER_SECRET");
	size_t n = 0;
	if (r->cfg.cluster_secret_file[0]) {
		int fd = open(r->cfg.cluster_secret_file, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			pr_err("--cluster-secret-file %s: %s", r->cfg.cluster_secret_file, strerror(errno));
			return -errno;
		}
		ssize_t got = read(fd, r->fwd_key, sizeof(r->fwd_key));
		close(fd);
		if (got < 0)
			return -EIO;
		n = (size_t)got;
		while (n && (r->fwd_key[n - 1] == '\n' || r->fwd_key[n - 1] == '\r'))
			n--;
	} else if (env) {
		n = strlen(env);
		if (n > sizeof(r->fwd_key))
			n = sizeof(r->fwd_key);
		memcpy(r->fwd_key, env, n);
	}
	if (n == 0)
		return 0;
	if (n < FWD_SECRET_MIN) {
		pr_err("cluster secret is %zu bytes: use at least %d random bytes", n, FWD_SECRET_MIN);
		return -EINVAL;
	}
	r->fwd_keylen = n;
	return 1;
}

/* The address other relays dial: explicit, else the listen address, else the first
 * non-loopback address of this host (a container's private address, e.g. on Railway). */
static int derive_internal_addr(struct relay *r, const struct net_addr *la)
{
	if (r->cfg.internal_addr[0]) {
		snprintf(r->internal_addr, sizeof(r->internal_addr), "%s", r->cfg.internal_addr);
		return 0;
	}
	uint16_t port = net_addr_port((const struct sockaddr *)&la->ss);
	bool wildcard = false;
	if (la->ss.ss_family == AF_INET)
		wildcard = ((const struct sockaddr_in *)(const void *)&la->ss)->sin_addr.s_addr == 0;
	else
		wildcard = !memcmp(&((const struct sockaddr_in6 *)(const void *)&la->ss)->sin6_addr,
				   &in6addr_any, 16);
	if (!wildcard) {
		net_addr_fmt((const struct sockaddr *)&la->ss, r->internal_addr, sizeof(r->internal_addr));
		return 0;
	}
	struct ifaddrs *ifs = NULL, *best = NULL;
	if (getifaddrs(&ifs) == 0) {
		for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
			if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
				continue;
			if (i->ifa_addr->sa_family == AF_INET) {
				best = i;
				break;
			}
			if (i->ifa_addr->sa_family == AF_INET6 && !best &&
			    !IN6_IS_ADDR_LINKLOCAL(&((struct sockaddr_in6 *)(void *)i->ifa_addr)->sin6_addr))
				best = i;
		}
	}
	if (!best) {
		freeifaddrs(ifs);
		pr_err("cannot derive --internal-addr (no non-loopback address): set it");
		return -EADDRNOTAVAIL;
	}
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, best->ifa_addr, best->ifa_addr->sa_family == AF_INET
					    ? sizeof(struct sockaddr_in)
					    : sizeof(struct sockaddr_in6));
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
	net_addr_fmt((struct sockaddr *)&ss, r->internal_addr, sizeof(r->internal_addr));
	freeifaddrs(ifs);
	return 0;
}

int forward_init(struct relay *r)
{
	int rc;
	r->internal_l.io.fd = -1;
	r->token_tag = fwd_token_tag(r->cfg.instance_id);
	dlist_init(&r->nonce_fifo);
	dlist_init(&r->fwdins);
	if (!r->nonce_max)
		r->nonce_max = NONCE_CACHE_MAX;
	if ((rc = route_cache_init(r)) || htab_init(&r->nonces, 1024))
		return rc ? rc : -ENOMEM;
	if (!r->cfg.internal_listen[0]) {
		pr_info("forwarding between relays: off (no --internal-listen)");
		return 0;
	}
	rc = load_secret(r);
	if (rc < 0)
		return rc;
	if (rc == 0) {
		pr_err("--internal-listen needs a cluster secret (--cluster-secret-file or "
		       "DVV_CLUSTER_SECRET) shared by all relays");
		return -EINVAL;
	}
	struct net_addr la;
	char err[160];
	if (net_parse_addr(r->cfg.internal_listen, &la, false, err, sizeof(err))) {
		pr_err("--internal-listen: %s", err);
		return -EINVAL;
	}
	int fd = net_listen(&la, 4096, err, sizeof(err));
	if (fd < 0) {
		pr_err("%s", err);
		return fd;
	}
	if ((rc = listener_open(&r->loop, &r->internal_l, fd, "internal", internal_accept_cb)))
		return rc;
	if ((rc = derive_internal_addr(r, &la)))
		return rc;
	r->fwd_enabled = true;
	pr_info("forwarding between relays: on, internal port %s, advertised as %s",
		r->cfg.internal_listen, r->internal_addr);
	return 0;
}

void forward_tick(struct relay *r) { nonce_expire(r); }

void forward_free(struct relay *r)
{
	if (!r->nonce_fifo.next)
		return; /* forward_init never ran */
	while (!dlist_empty(&r->fwdins))
		fwdin_close(container_of(r->fwdins.next, struct fwdin, all), true);
	listener_close(&r->loop, &r->internal_l);
	route_cache_free(r);
	while (!dlist_empty(&r->nonce_fifo))
		nonce_del(r, container_of(r->nonce_fifo.next, struct nonce_entry, fifo));
	htab_free(&r->nonces);
	OPENSSL_cleanse(r->fwd_key, sizeof(r->fwd_key));
}
