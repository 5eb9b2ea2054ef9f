/* Cross-instance routing: the internal port where other relays hand us forwarded players, the
 * short-lived cache of who holds which name, and the replay cache of forward nonces. */
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"

#include <openssl/crypto.h>

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

#define ROUTE_CACHE_MAX 65536
#define NONCE_CACHE_MAX 262144
#define FWD_HEADER_TIMEOUT_MS 3000

/* ---- route cache ---- */

static bool route_eq(const struct hnode *n, const void *key, size_t len)
{
	const struct route_entry *e = container_of(n, struct route_entry, hn);
	return strlen(e->host) == len && !memcmp(e->host, key, len);
}

static void route_del(struct relay *r, struct route_entry *e)
{
	htab_del(&r->routes, &e->hn);
	dlist_del(&e->fifo);
	r->nroutes--;
	free(e);
}

static struct route_entry *route_find(struct relay *r, const char *host)
{
	size_t len = strlen(host);
	struct hnode *n = htab_find(&r->routes, htab_hash(&r->routes, host, len), host, len, route_eq);
	return n ? container_of(n, struct route_entry, hn) : NULL;
}

const struct route_entry *route_cache_get(struct relay *r, const char *host)
{
	struct route_entry *e = route_find(r, host);
	if (!e)
		return NULL;
	if (e->expires_ms <= r->loop.now) {
		route_del(r, e);
		return NULL;
	}
	M_INC(route_cache_hits_total);
	return e;
}

void route_cache_put(struct relay *r, const char *host, bool found, const char *instance,
		     uint64_t epoch, const char *addr)
{
	if (r->cfg.route_cache_ms <= 0 || strlen(host) >= sizeof(((struct route_entry *)0)->host))
		return;
	struct route_entry *e = route_find(r, host);
	if (!e) {
		if (r->nroutes >= ROUTE_CACHE_MAX)
			route_del(r, container_of(r->route_fifo.next, struct route_entry, fifo));
		if (!(e = calloc(1, sizeof(*e))))
			return;
		snprintf(e->host, sizeof(e->host), "%s", host);
		htab_add(&r->routes, &e->hn, htab_hash(&r->routes, host, strlen(host)));
		r->nroutes++;
	} else {
		dlist_del(&e->fifo);
	}
	dlist_add_tail(&r->route_fifo, &e->fifo);
	/* a name nobody holds is cached for a shorter time: its agent may be connecting */
	e->expires_ms = r->loop.now + (uint64_t)(found ? r->cfg.route_cache_ms : r->cfg.route_cache_ms / 4);
	e->found = found;
	e->epoch = epoch;
	snprintf(e->instance, sizeof(e->instance), "%s", found ? instance : "");
	snprintf(e->addr, sizeof(e->addr), "%s", found ? addr : "");
}

void route_cache_drop(struct relay *r, const char *host)
{
	struct route_entry *e = route_find(r, host);
	if (e)
		route_del(r, e);
}

/* ---- replay cache ---- */

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
		if (e->expires_ms > r->loop.now && r->nnonces < NONCE_CACHE_MAX)
			break;
		nonce_del(r, e);
	}
}

/* true if the nonce was seen within the validity window (a replay); records it otherwise */
static bool nonce_replayed(struct relay *r, const uint8_t nonce[16])
{
	uint64_t h = htab_hash(&r->nonces, nonce, 16);
	if (htab_find(&r->nonces, h, nonce, 16, nonce_eq))
		return true;
	nonce_expire(r);
	struct nonce_entry *e = calloc(1, sizeof(*e));
	if (!e)
		return false;
	memcpy(e->nonce, nonce, 16);
	e->expires_ms = r->loop.now + 2 * FWD_SKEW_MS;
	htab_add(&r->nonces, &e->hn, h);
	dlist_add_tail(&r->nonce_fifo, &e->fifo);
	r->nnonces++;
	return false;
}

/* ---- internal port ---- */

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

static void fwdin_refuse(struct fwdin *f, const char *why)
{
	char peer[64] = "?";
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getpeername(f->io.fd, (struct sockaddr *)&ss, &sl) == 0)
		net_addr_fmt((struct sockaddr *)&ss, peer, sizeof(peer));
	M_INC(forward_refused_total);
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
				fwdin_refuse(f, "not a forward header");
				return;
			}
			f->need = (uint16_t)(FWD_FIXED + body);
		}
	}
	struct fwd_hdr h;
	char err[160];
	if (fwd_verify(f->buf, f->len, r->fwd_key, r->fwd_keylen, wall_ms(), &h, err, sizeof(err))) {
		fwdin_refuse(f, err);
		return;
	}
	if (nonce_replayed(r, h.nonce)) {
		fwdin_refuse(f, "replayed forward header");
		return;
	}
	/* A's route is stale (the agent moved, or is between relays): say so, so that A drops
	 * its cached route and asks Redis once more instead of failing the player. */
	struct tunnel *t = tunnel_lookup_host(r, h.host, strlen(h.host));
	if (!t || t->state != TS_UP) {
		static const uint8_t not_here = FWD_NOT_HERE;
		M_INC(forward_not_here_total);
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
	player_adopt_forwarded(r, fd, &h.src, &h.dst);
}

static void fwdin_timer_cb(struct loop *l, struct loop_timer *t)
{
	fwdin_refuse(container_of(t, struct fwdin, timer), "no forward header in time");
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

int routing_init(struct relay *r)
{
	r->internal_l.io.fd = -1;
	dlist_init(&r->route_fifo);
	dlist_init(&r->nonce_fifo);
	dlist_init(&r->fwdins);
	if (htab_init(&r->routes, 1024) || htab_init(&r->nonces, 1024))
		return -ENOMEM;
	if (!r->cfg.internal_listen[0]) {
		pr_info("forwarding between relays: off (no --internal-listen)");
		return 0;
	}
	int rc = load_secret(r);
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

void routing_tick(struct relay *r) { nonce_expire(r); }

void routing_free(struct relay *r)
{
	if (!r->route_fifo.next)
		return; /* routing_init never ran */
	while (!dlist_empty(&r->fwdins))
		fwdin_close(container_of(r->fwdins.next, struct fwdin, all), true);
	listener_close(&r->loop, &r->internal_l);
	while (!dlist_empty(&r->route_fifo))
		route_del(r, container_of(r->route_fifo.next, struct route_entry, fifo));
	while (!dlist_empty(&r->nonce_fifo))
		nonce_del(r, container_of(r->nonce_fifo.next, struct nonce_entry, fifo));
	htab_free(&r->routes);
	htab_free(&r->nonces);
	OPENSSL_cleanse(r->fwd_key, sizeof(r->fwd_key));
}
