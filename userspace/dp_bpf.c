/* BPF data plane: player and agent sockets are spliced inside the kernel by bpf/splice.bpf.c
 * (SOCKHASH + sk_skb stream verdict). Userspace joins pairs, carries FIN/RST across, throttles
 * senders whose reader fell behind, and cleans up; one event loop thread does all of it.
 *
 * What the kernel does not do for us (/work/shared/NOTES.md section 2, each reproduced here):
 *  - bytes queued before a socket gets its verdict are only forwarded when something runs the
 *    socket's data_ready again: one non-blocking recv() after insertion does;
 *  - a redirect lands in a queue in front of the peer's TCP send queue that userspace cannot
 *    see: a FIN is only carried across (shutdown(SHUT_WR) of the peer) once the peer's own
 *    counters (tcp_info bytes_acked + SIOCOUTQ) show that every byte redirected to it went in;
 *  - epoll on a spliced socket may report EPOLLIN with nothing to read: only RDHUP is watched
 *    (edge-triggered); ERR and HUP always come;
 *  - there is no backpressure: when a reader falls behind, the program asks us to clamp the
 *    sender's TCP receive window (TCP_WINDOW_CLAMP): the sender then has almost no window, and
 *    the bytes keep flowing on the kernel path, untouched. When the reader caught up, the window
 *    is restored. A reader over --max-lag-mb, or a throttled one that acknowledges nothing for
 *    STALL_MS, is cut.
 * A socket's bytes never leave the kernel path once on it: both ways of taking a receiving
 * socket off (SK_PASS to itself, removal from the verdict map) were measured to duplicate or
 * drop data on this kernel (tests/splice/README.md).
 * A pair that cannot be inserted (a socket already half-closed is refused by the maps, or they
 * are full) is relayed with splice(2) on the same loop; a direction whose socket could not get
 * its verdict at all is relayed by plain recv()/send() from the start. */
#include "bpf_log.h"
#include "config.h"
#include "dataplane.h"
#include "handoff.h"
#include "htab.h"
#include "list.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "pins.h"
#include "splice.h"

#include "../bpf/splice.h"
#include "splice.skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#define POLL_MAX_MS 50		/* waiting for a redirect queue to drain: 1, 2, 4 .. 50 ms */
#define STALL_MS 15000		/* bytes owed to a reader that acknowledges nothing: cut */
#define WATCH_MS 1000		/* how often an owing direction is checked for a stall */
#define THROTTLE_LAG_MAX (4u << 20) /* throttle a sender above this lag (or half --max-lag-mb
				       if smaller), release it below half of that */
#define THROTTLE_WINDOW 4096	/* tightest clamped receive window of a throttled sender */
#define COPY_BUF (64u * 1024)	/* relay buffer of a direction that could not be hooked */
#define COPY_ROUNDS 32		/* buffers per direction per loop turn, for fairness */
#define SWEEP_MS 1000		/* look for lost ring-buffer events */
#define SELFTEST_MS 3000	/* whole self-test budget */
#define SELFTEST_KEY UINT64_MAX /* tunnel key of the self-test pair */

const char *const dvv_verdict_names[DVV_V_MAX] = {
	[DVV_V_REDIRECT] = "redirect",	 [DVV_V_PASS] = "pass",	    [DVV_V_DROP] = "drop",
	[DVV_V_ZERO_LEN] = "zero_len",	 [DVV_V_NO_PEER] = "no_peer", [DVV_V_LAG_DROP] = "lag_drop",
	[DVV_V_THROTTLE] = "throttle",	 [DVV_V_EVENT_LOST] = "event_lost",
};

struct bp_plane;

/* One socket of a pair, and the direction of the bytes it receives (towards the other). */
struct bp_side {
	struct loop_io io;
	struct bp_pair *pair;
	struct hnode hn;   /* in bp_plane.by_cookie when in_htab */
	bool in_htab;
	bool in_targets;   /* in dvv_targets */
	bool hooked;	   /* in dvv_socks: the kernel splices what arrives here */
	bool eof;	   /* recv() == 0: nothing more comes from here */
	bool shut;	   /* all of it went out through the peer, and the peer was shut for writing */
	bool throttled;	   /* receive window clamped: the peer fell behind */
	bool tight;	   /* ... to THROTTLE_WINDOW (one MSS was not enough) */
	bool want_out;	   /* (not hooked) buf waits for room in the peer */
	bool owing;	   /* bytes are owed to the peer: watched for a stall */
	int saved_clamp;   /* TCP_WINDOW_CLAMP before the throttle */
	int clamp;	   /* the clamp we set */
	uint64_t cookie;
	uint64_t base;	   /* bytes the relay itself wrote to this socket before the join */
	uint8_t *buf;	   /* (not hooked) relay buffer */
	uint32_t len, off;
	uint64_t copied;   /* (not hooked) bytes userspace wrote to the peer */
	uint64_t stall_acked, stall_since;
};

struct bp_pair {
	struct bp_side s[2]; /* [0] player, [1] agent; bytes received on s[i] leave through s[!i] */
	struct dlist node; /* bp_plane.pairs */
	struct bp_plane *b;
	struct bp_tunnel *tun;
	struct loop_timer timer; /* polls while a queue drains, watches owing directions */
	uint32_t poll_ms;
	bool conns_written;
	bool internal; /* self-test pair: kept out of the relay's metrics */
	bool dead;
};

/* A pair the map refused, relayed with splice(2) by the same loop. */
struct bp_demoted {
	struct splice_pair sp;
	struct dlist node; /* bp_plane.demoted */
	bool internal;
};

struct bp_tunnel {
	struct hnode hn;
	uint64_t key;
	uint32_t refs;
};

struct bp_plane {
	enum log_level fail_level; /* of start-up failures: a warning when auto falls back */
	struct splice_bpf *skel;
	int socks_fd, targets_fd, conns_fd, tunnels_fd, verdicts_fd;
	uint64_t throttle_lag, tighten_lag;
	bool attached;
	struct ring_buffer *rb;
	struct loop_io rb_io;
	struct loop loop;
	bool loop_ready;
	struct loop_timer sweep;
	uint64_t events_lost_seen;
	pthread_t thread;
	bool running;
	struct handoff jobs;
	struct htab by_cookie, tunnels;
	struct dlist pairs, demoted;
	int ncpu;
	int max_lag_mb;
	struct pin_dir pins;
	_Atomic uint64_t n_pairs;     /* live pairs, self-test included */
	_Atomic uint64_t n_active, n_total, n_demoted, n_cut_lag, n_cut_error, n_drain_timeouts;
	_Atomic uint64_t n_throttles, n_unthrottles, n_throttled, n_user_bytes;
};

static void pair_service(struct bp_plane *b, struct bp_pair *p);

/* ---- small socket helpers ---- */

/* This socket's TCP stream: bytes its remote end acknowledged, and bytes ever written into it
 * (acknowledged + still queued). TCP_INFO is read first: anything acknowledged in between makes
 * the sum lower, never higher (callers wait until it is high enough). */
static int sock_counters(int fd, uint64_t *acked, uint64_t *written)
{
	struct tcp_info ti;
	socklen_t sl = sizeof(ti);
	int outq = 0;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) < 0)
		return -errno;
	if (sl < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
		return -EOPNOTSUPP; /* kernel < 4.1 */
	if (ioctl(fd, SIOCOUTQ, &outq) < 0)
		return -errno;
	*acked = ti.tcpi_bytes_acked;
	*written = ti.tcpi_bytes_acked + (uint64_t)(outq > 0 ? outq : 0);
	return 0;
}

static int sock_error(int fd)
{
	int e = 0;
	socklen_t sl = sizeof(e);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0)
		return errno;
	return e;
}

static void close_abort(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* ---- tunnels: dvv_tunnels entries live while a tunnel has at least one pair ---- */

static bool tunnel_eq(const struct hnode *n, const void *key, size_t len)
{
	return container_of(n, struct bp_tunnel, hn)->key == *(const uint64_t *)key;
}

static struct bp_tunnel *tunnel_get(struct bp_plane *b, uint64_t key, int *err)
{
	uint64_t h = htab_hash(&b->tunnels, &key, sizeof(key));
	struct hnode *n = htab_find(&b->tunnels, h, &key, sizeof(key), tunnel_eq);
	struct bp_tunnel *t;
	if (n) {
		t = container_of(n, struct bp_tunnel, hn);
		t->refs++;
		return t;
	}
	struct dvv_tunnel_bytes zero = {0};
	if (bpf_map_update_elem(b->tunnels_fd, &key, &zero, BPF_ANY) < 0) {
		*err = -errno;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		bpf_map_delete_elem(b->tunnels_fd, &key);
		*err = -ENOMEM;
		return NULL;
	}
	t->key = key;
	t->refs = 1;
	htab_add(&b->tunnels, &t->hn, h);
	return t;
}

static void tunnel_put(struct bp_plane *b, struct bp_tunnel *t)
{
	if (!t || --t->refs)
		return;
	bpf_map_delete_elem(b->tunnels_fd, &t->key);
	htab_del(&b->tunnels, &t->hn);
	free(t);
}

/* ---- pairs ---- */

static bool side_eq(const struct hnode *n, const void *key, size_t len)
{
	return container_of(n, struct bp_side, hn)->cookie == *(const uint64_t *)key;
}

static struct bp_side *side_by_cookie(struct bp_plane *b, uint64_t cookie)
{
	uint64_t h = htab_hash(&b->by_cookie, &cookie, sizeof(cookie));
	struct hnode *n = htab_find(&b->by_cookie, h, &cookie, sizeof(cookie), side_eq);
	return n ? container_of(n, struct bp_side, hn) : NULL;
}

static void pair_free(void *arg) { free(arg); }

/* End a pair. err == 0: both directions finished, normal close (queued bytes still leave).
 * err != 0: abort both sockets with RST. close() removes each socket from dvv_socks; then the
 * per-socket and per-tunnel entries go, so the maps are empty once every pair is gone. */
static void pair_finish(struct bp_plane *b, struct bp_pair *p, int err)
{
	if (p->dead)
		return;
	p->dead = true;
	loop_timer_cancel(&b->loop, &p->timer);
	uint64_t bytes = 0;
	for (int i = 0; i < 2; i++) {
		struct dvv_conn c;
		if (p->conns_written && !bpf_map_lookup_elem(b->conns_fd, &p->s[i].cookie, &c))
			bytes += c.redir_bytes;
		bytes += p->s[i].copied;
	}
	for (int i = 0; i < 2; i++) {
		struct bp_side *s = &p->s[i];
		loop_io_del(&b->loop, &s->io);
		if (s->throttled)
			atomic_fetch_sub(&b->n_throttled, 1);
		s->throttled = false;
		if (s->in_htab)
			htab_del(&b->by_cookie, &s->hn);
		s->in_htab = false;
		if (s->io.fd >= 0) {
			if (err)
				close_abort(s->io.fd);
			else
				close(s->io.fd);
			s->io.fd = -1;
		}
		free(s->buf);
		s->buf = NULL;
	}
	if (p->conns_written)
		for (int i = 0; i < 2; i++)
			bpf_map_delete_elem(b->conns_fd, &p->s[i].cookie);
	tunnel_put(b, p->tun);
	p->tun = NULL;
	dlist_del(&p->node);
	atomic_fetch_sub(&b->n_pairs, 1);
	if (!p->internal) {
		atomic_fetch_sub(&b->n_active, 1);
		M_DEC(splices_active);
		M_ADD(splice_bytes_total, (int64_t)bytes);
		if (err) {
			M_INC(splice_errors_total);
			if (err != ECONNRESET && err != EPIPE)
				pr_rl(LOG_DEBUG, "bpf splice ended: %s", strerror(err));
		}
	}
	loop_defer(&b->loop, pair_free, p);
}

static void pair_abort(struct bp_plane *b, struct bp_pair *p, int err)
{
	if (!p->dead)
		atomic_fetch_add(&b->n_cut_error, 1);
	pair_finish(b, p, err);
}

static int conn_get(struct bp_plane *b, const struct bp_side *s, struct dvv_conn *c)
{
	return bpf_map_lookup_elem(b->conns_fd, &s->cookie, c) < 0 ? -errno : 0;
}

/* The peer's stream since the join. */
static int peer_counters(const struct bp_side *o, uint64_t *acked, uint64_t *written)
{
	int rc = sock_counters(o->io.fd, acked, written);
	if (rc)
		return rc;
	*acked = *acked > o->base ? *acked - o->base : 0;
	*written = *written > o->base ? *written - o->base : 0;
	return 0;
}

/* Clamp s[i]'s receive window while its peer lags: the sender can then only trickle, which is
 * backpressure the kernel path lacks, and the data path is not touched. First to one MSS: the
 * sender stays ACK-clocked (one segment per round trip, a strong brake over any real network)
 * and gets its window back as soon as it is restored. The window it was already given is
 * still in flight, so the lag overshoots by up to that much; only if it still grows past
 * tighten_lag (a sender with a tiny round trip, e.g. on the same host), to THROTTLE_WINDOW:
 * below one MSS the sender stops outright, at the price of waiting for its window probe
 * (~200 ms) once released, since restoring a clamp sends no window update. The kernel's
 * receive-buffer autotuning may rewrite the clamp (it does at connection start; the throttle
 * only comes after several MiB, but still): every repeated request checks it. */
static int side_throttle(struct bp_plane *b, struct bp_side *s, int level)
{
	int clamp;
	if (s->io.fd < 0 || (level == 0 && !s->throttled))
		return 0;
	if (level && s->throttled && (level == 2) == s->tight) {
		/* already there: only check that the kernel kept the clamp */
		int now = 0;
		socklen_t sl = sizeof(now);
		if (getsockopt(s->io.fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &now, &sl) < 0)
			return -errno;
		if (now == s->clamp)
			return 0;
	}
	if (level) {
		if (!s->throttled) {
			socklen_t sl = sizeof(s->saved_clamp);
			if (getsockopt(s->io.fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &s->saved_clamp,
				       &sl) < 0)
				return -errno;
		}
		clamp = THROTTLE_WINDOW;
		if (level == 1) {
			struct tcp_info ti;
			socklen_t sl = sizeof(ti);
			memset(&ti, 0, sizeof(ti));
			if (!getsockopt(s->io.fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) &&
			    (int)ti.tcpi_rcv_mss > clamp)
				clamp = (int)ti.tcpi_rcv_mss;
		}
	} else {
		clamp = s->saved_clamp;
	}
	if (setsockopt(s->io.fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &clamp, sizeof(clamp)) < 0)
		return -errno;
	s->clamp = clamp;
	if (level && !s->throttled) {
		atomic_fetch_add(&b->n_throttles, 1);
		atomic_fetch_add(&b->n_throttled, 1);
	} else if (!level) {
		atomic_fetch_add(&b->n_unthrottles, 1);
		atomic_fetch_sub(&b->n_throttled, 1);
	}
	s->throttled = level > 0;
	s->tight = level == 2;
	return 0;
}

/* Move what userspace has to move from s[i] to s[!i]. For a hooked socket that is only the EOF:
 * the recv() runs the verdict over anything still queued and comes back with EAGAIN, or 0 at
 * EOF. A socket that could not be hooked (never on the kernel path) is relayed with plain
 * recv()/send(). Returns -errno on a fatal error, 1 to be called again soon, 0. */
static int dir_pump(struct bp_plane *b, struct bp_pair *p, int i, uint64_t *moved)
{
	struct bp_side *s = &p->s[i], *o = &p->s[!i];
	if (s->eof && s->off == s->len)
		return 0;
	if (s->hooked) {
		char small[512];
		ssize_t n = recv(s->io.fd, small, sizeof(small), MSG_DONTWAIT);
		if (n > 0) {
			/* only a socket without a conn entry gets SK_PASS: cannot happen here */
			pr_rl(LOG_WARN, "bpf splice: %zd bytes reached userspace from a spliced socket",
			      n);
			return -EPROTO;
		}
		if (n == 0)
			s->eof = true;
		else if (errno != EAGAIN && errno != EINTR)
			return -errno;
		return 0;
	}
	for (int round = 0; round < COPY_ROUNDS; round++) {
		if (s->off < s->len) {
			ssize_t n = send(o->io.fd, s->buf + s->off, s->len - s->off,
					 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN)
					return -errno;
				s->want_out = true;
				return 0;
			}
			s->want_out = false;
			s->off += (uint32_t)n;
			s->copied += (uint64_t)n;
			*moved += (uint64_t)n;
			atomic_fetch_add(&b->n_user_bytes, (uint64_t)n);
			if (s->off < s->len)
				continue;
			s->off = s->len = 0;
		}
		if (s->eof)
			return 0;
		if (!s->buf && !(s->buf = malloc(COPY_BUF)))
			return -ENOMEM;
		ssize_t n = recv(s->io.fd, s->buf, COPY_BUF, MSG_DONTWAIT);
		if (n > 0) {
			s->len = (uint32_t)n;
			s->off = 0;
			continue;
		}
		if (n == 0) {
			s->eof = true;
			return 0;
		}
		if (errno == EINTR)
			continue;
		return errno == EAGAIN ? 0 : -errno;
	}
	return 1;
}

/* A throttled sender gets its window back once its peer is less than half the throttle limit
 * behind. Decided here, by polling, because a clamped sender hardly sends: the program would
 * only notice with its next skb. Returns 1 while still throttled, 0, -errno. */
static int dir_release(struct bp_plane *b, struct bp_pair *p, int i)
{
	struct bp_side *s = &p->s[i], *o = &p->s[!i];
	struct dvv_conn c;
	uint64_t acked, w;
	int rc;
	if (!s->throttled)
		return 0;
	if ((rc = conn_get(b, s, &c)) || (rc = peer_counters(o, &acked, &w)))
		return rc;
	if (c.redir_bytes > acked + b->throttle_lag / 2)
		return 1;
	return side_throttle(b, s, 0);
}

/* After EOF from s[i]: shut the peer for writing once every byte accepted for it is in its
 * stream. Returns 1 while waiting, 0 or -errno. */
static int dir_drain(struct bp_plane *b, struct bp_pair *p, int i)
{
	struct bp_side *s = &p->s[i], *o = &p->s[!i];
	struct dvv_conn c;
	uint64_t acked, w;
	int rc;
	if (!s->eof || s->shut || s->off < s->len)
		return 0;
	if ((rc = conn_get(b, s, &c)) || (rc = peer_counters(o, &acked, &w)))
		return rc;
	if (w < c.redir_bytes + s->copied)
		return 1;
	if (shutdown(o->io.fd, SHUT_WR) < 0 && errno != ENOTCONN)
		return -errno;
	s->shut = true;
	return 0;
}

/* Bytes are owed to the peer when the relay accepted some its remote end has not acknowledged
 * yet. While its sender is throttled, userspace holds some, or a FIN waits for them, a reader
 * that acknowledges nothing for STALL_MS is cut. (Throttled and fully acknowledged is fine: the
 * window opens again with the sender's next skb.) Returns -ETIMEDOUT, -errno, 0. */
static int dir_watch(struct bp_plane *b, struct bp_pair *p, int i, bool *watching)
{
	struct bp_side *s = &p->s[i], *o = &p->s[!i];
	struct dvv_conn c;
	uint64_t acked, w;
	int rc;
	if (!s->throttled && s->off == s->len && (!s->eof || s->shut)) {
		s->owing = false;
		return 0;
	}
	if ((rc = conn_get(b, s, &c)) || (rc = peer_counters(o, &acked, &w)))
		return rc;
	if (c.redir_bytes + s->copied + (s->len - s->off) <= acked) {
		s->owing = false;
		return 0;
	}
	*watching = true;
	if (!s->owing || acked != s->stall_acked) {
		s->owing = true;
		s->stall_acked = acked;
		s->stall_since = b->loop.now;
		return 0;
	}
	return b->loop.now - s->stall_since > STALL_MS ? -ETIMEDOUT : 0;
}

static void side_interest(struct bp_plane *b, struct bp_pair *p, int i)
{
	uint32_t ev = EPOLLRDHUP | EPOLLET;
	if (!p->s[i].hooked)
		ev |= EPOLLIN;
	if (p->s[!i].want_out)
		ev |= EPOLLOUT;
	int rc = loop_io_set(&b->loop, &p->s[i].io, ev);
	if (rc)
		pair_abort(b, p, -rc);
}

/* Everything userspace does for a pair, after any event or timer. */
static void pair_service(struct bp_plane *b, struct bp_pair *p)
{
	uint64_t moved = 0;
	bool again = false, watching = false;
	int rc = 0;
	for (int i = 0; i < 2 && !rc; i++) {
		rc = dir_pump(b, p, i, &moved);
		again |= rc == 1;
		rc = rc < 0 ? rc : 0;
	}
	for (int i = 0; i < 2 && !rc; i++) {
		rc = dir_drain(b, p, i);
		again |= rc == 1;
		rc = rc < 0 ? rc : 0;
	}
	for (int i = 0; i < 2 && !rc; i++) {
		rc = dir_release(b, p, i);
		again |= rc == 1;
		rc = rc < 0 ? rc : 0;
	}
	if (rc) {
		pair_abort(b, p, -rc);
		return;
	}
	if (p->s[0].shut && p->s[1].shut) {
		pair_finish(b, p, 0);
		return;
	}
	for (int i = 0; i < 2 && !rc; i++)
		rc = dir_watch(b, p, i, &watching);
	if (rc == -ETIMEDOUT) {
		pr_rl(LOG_INFO, "bpf splice: reader acknowledged nothing for %d ms while bytes were "
			"owed to it: cut", STALL_MS);
		if (p->s[0].eof || p->s[1].eof)
			atomic_fetch_add(&b->n_drain_timeouts, 1);
		atomic_fetch_add(&b->n_cut_lag, 1);
		pair_finish(b, p, ECONNABORTED);
		return;
	}
	if (rc) {
		pair_abort(b, p, -rc);
		return;
	}
	for (int i = 0; i < 2 && !p->dead; i++)
		side_interest(b, p, i);
	if (p->dead)
		return;
	uint64_t delay = UINT64_MAX;
	if (again) {
		p->poll_ms = moved ? 0 : p->poll_ms ? p->poll_ms * 2 : 1;
		if (p->poll_ms > POLL_MAX_MS)
			p->poll_ms = POLL_MAX_MS;
		delay = p->poll_ms;
	} else {
		p->poll_ms = 0;
	}
	if (watching && delay > WATCH_MS)
		delay = WATCH_MS;
	if (delay == UINT64_MAX)
		loop_timer_cancel(&b->loop, &p->timer);
	else
		loop_timer_arm(&b->loop, &p->timer, delay);
}

static void pair_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct bp_pair *p = container_of(t, struct bp_pair, timer);
	pair_service(p->b, p);
}

static void side_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct bp_plane *b = l->data;
	struct bp_side *s = container_of(io, struct bp_side, io);
	struct bp_pair *p = s->pair;
	if (events & EPOLLERR) {
		int e = sock_error(io->fd);
		if (e) {
			pair_abort(b, p, e);
			return;
		}
	}
	pair_service(b, p);
}

/* ---- demoted pairs (splice(2)) ---- */

static void demoted_done(struct splice_pair *sp, int err)
{
	struct bp_demoted *d = container_of(sp, struct bp_demoted, sp);
	if (!d->internal) {
		M_ADD(splice_bytes_total, (int64_t)(sp->dir[0].bytes + sp->dir[1].bytes));
		if (err)
			M_INC(splice_errors_total);
		M_DEC(splices_active);
	}
	splice_pair_close(sp);
	dlist_del(&d->node);
	loop_defer(sp->loop, pair_free, d);
}

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t sl = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) < 0)
		return -1;
	return ti.tcpi_state;
}

static void pair_demote(struct bp_plane *b, int pfd, int afd, bool internal, int why,
			const char *which)
{
	struct bp_demoted *d = calloc(1, sizeof(*d));
	int rc = d ? splice_pair_start(&b->loop, &d->sp, pfd, afd, demoted_done) : -ENOMEM;
	if (rc) {
		pr_rl(LOG_WARN, "bpf plane: cannot relay a pair at all: %s", strerror(-rc));
		close_abort(pfd);
		close_abort(afd);
		free(d);
		if (!internal) {
			M_DEC(splices_active);
			M_INC(splice_errors_total);
		}
		return;
	}
	pr_rl(LOG_INFO, "bpf plane: %s socket refused by the sockhash (%s, tcp state %d): "
	      "relaying this pair with splice(2)", which, strerror(why),
	      tcp_state(which[0] == 'p' ? pfd : afd));
	d->internal = internal;
	dlist_add_head(&b->demoted, &d->node);
	if (!internal)
		atomic_fetch_add(&b->n_demoted, 1);
}

/* ---- join, in the plane's thread ---- */

static void pair_attach(void *arg, const struct handoff_job *j)
{
	struct bp_plane *b = arg;
	struct bp_pair *p = calloc(1, sizeof(*p));
	int rc = 0, one = 1;
	if (!p) {
		close_abort(j->player_fd);
		close_abort(j->agent_fd);
		if (!j->internal) {
			M_DEC(splices_active);
			M_INC(splice_errors_total);
		}
		return;
	}
	p->b = b;
	p->internal = j->internal;
	p->s[0].io = (struct loop_io){.fd = j->player_fd, .cb = side_io_cb};
	p->s[1].io = (struct loop_io){.fd = j->agent_fd, .cb = side_io_cb};
	p->s[0].pair = p->s[1].pair = p;
	p->timer.cb = pair_timer_cb;
	dlist_add_head(&b->pairs, &p->node);
	atomic_fetch_add(&b->n_pairs, 1);
	if (!p->internal) {
		atomic_fetch_add(&b->n_active, 1);
		atomic_fetch_add(&b->n_total, 1);
	}

	for (int i = 0; i < 2; i++) {
		struct bp_side *s = &p->s[i];
		socklen_t sl = sizeof(s->cookie);
		/* latency matters more than segment count for game traffic */
		setsockopt(s->io.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* the relay hands non-blocking sockets; make sure, since a demoted pair's splice(2)
		 * would block the whole loop on a blocking one */
		int fl = fcntl(s->io.fd, F_GETFL);
		if (fl >= 0 && !(fl & O_NONBLOCK))
			fcntl(s->io.fd, F_SETFL, fl | O_NONBLOCK);
		if (getsockopt(s->io.fd, SOL_SOCKET, SO_COOKIE, &s->cookie, &sl) < 0) {
			rc = -errno;
			goto fail;
		}
		uint64_t acked;
		if ((rc = sock_counters(s->io.fd, &acked, &s->base)))
			goto fail;
	}
	for (int i = 0; i < 2; i++) {
		struct bp_side *s = &p->s[i];
		htab_add(&b->by_cookie, &s->hn, htab_hash(&b->by_cookie, &s->cookie, 8));
		s->in_htab = true;
	}
	if (!(p->tun = tunnel_get(b, j->tunnel_key, &rc)))
		goto fail;
	for (int i = 0; i < 2; i++) {
		struct dvv_conn c = {
			.peer_cookie = p->s[!i].cookie,
			.tunnel_key = j->tunnel_key,
			.peer_base = p->s[!i].base,
			.dir = i == 0 ? DVV_DIR_TO_AGENT : DVV_DIR_TO_PLAYER,
		};
		if (bpf_map_update_elem(b->conns_fd, &p->s[i].cookie, &c, BPF_NOEXIST) < 0) {
			rc = -errno;
			if (i == 1)
				bpf_map_delete_elem(b->conns_fd, &p->s[0].cookie);
			goto fail;
		}
	}
	p->conns_written = true;
	/* Both into dvv_targets first: from then on either may be redirected to, so no byte can meet
	 * a missing peer (the window NOTES 2.6 orders around is gone). A socket refused here (its
	 * FIN already arrived: only ESTABLISHED sockets enter a sockmap) means the pair is relayed
	 * with splice(2); nothing has been redirected yet. */
	const char *refused = NULL;
	for (int i = 1; i >= 0; i--) {
		struct bp_side *s = &p->s[i];
		uint64_t fd = (uint64_t)s->io.fd;
		if (bpf_map_update_elem(b->targets_fd, &s->cookie, &fd, BPF_NOEXIST) < 0) {
			rc = -errno;
			refused = i ? "agent" : "player";
			goto demote;
		}
		s->in_targets = true;
	}
	/* Then the verdicts, far (agent) first as documented. A socket that cannot get one (its
	 * FIN arrived in between) never enters the kernel path: we relay that direction. */
	for (int i = 1; i >= 0; i--) {
		struct bp_side *s = &p->s[i];
		uint64_t fd = (uint64_t)s->io.fd;
		if (bpf_map_update_elem(b->socks_fd, &s->cookie, &fd, BPF_NOEXIST) == 0)
			s->hooked = true;
	}
	/* flush what was queued before insertion (and see an EOF that came with it) */
	pair_service(b, p);
	return;

demote: {
	/* close() would do, but the sockets live on with splice(2): take them out of the map */
	if (p->s[1].in_targets)
		bpf_map_delete_elem(b->targets_fd, &p->s[1].cookie);
	int pfd = p->s[0].io.fd, afd = p->s[1].io.fd;
	bool internal = p->internal;
	p->s[0].io.fd = p->s[1].io.fd = -1;
	if (!p->internal) /* counted again by the demoted pair */
		M_INC(splices_active);
	pair_finish(b, p, 0);
	pair_demote(b, pfd, afd, internal, -rc, refused);
	return;
}
fail:
	pr_rl(LOG_WARN, "bpf plane: cannot join a pair: %s", strerror(-rc));
	pair_abort(b, p, -rc);
}

static void take_jobs(struct loop *l)
{
	struct bp_plane *b = l->data;
	handoff_drain(&b->jobs, pair_attach, b);
}

/* A job the stopped plane never took. */
static void job_drop(void *arg, const struct handoff_job *j)
{
	close(j->player_fd);
	close(j->agent_fd);
	if (!j->internal)
		M_DEC(splices_active);
}

static int enqueue(struct bp_plane *b, int player_fd, int agent_fd, uint64_t key, bool internal)
{
	struct handoff_job j = {.player_fd = player_fd, .agent_fd = agent_fd, .tunnel_key = key,
				.internal = internal};
	int rc = handoff_push(&b->jobs, &j);
	if (rc) {
		close_abort(player_fd);
		close_abort(agent_fd);
	}
	return rc;
}

/* ---- requests from the verdict program ---- */

static void on_event(struct bp_plane *b, uint64_t cookie, uint32_t reason, uint64_t value)
{
	struct bp_side *s = side_by_cookie(b, cookie);
	struct bp_pair *p = s ? s->pair : NULL;
	if (!p || p->dead)
		return;
	switch (reason) {
	case DVV_EV_CUT_LAG:
		pr_rl(LOG_INFO, "bpf splice: reader %llu bytes behind (limit %d MiB): cut",
		      (unsigned long long)value, b->max_lag_mb);
		atomic_fetch_add(&b->n_cut_lag, 1);
		pair_finish(b, p, ECONNABORTED);
		break;
	case DVV_EV_REDIR_FAIL:
		pr_rl(LOG_WARN, "bpf splice: redirect failed, %llu bytes dropped: cut",
		      (unsigned long long)value);
		pair_abort(b, p, EPIPE);
		break;
	case DVV_EV_THROTTLE: {
		/* repeated while the peer stays behind: tighten if one MSS was not enough, and put
		 * the clamp back if receive-buffer autotuning rewrote it meanwhile */
		int level = !s->throttled ? 1 : value > b->tighten_lag || s->tight ? 2 : 1;
		int rc = side_throttle(b, s, level);
		if (rc)
			pair_abort(b, p, -rc);
		else
			pair_service(b, p); /* polls for the release, arms the stall watch */
		break;
	}
	}
}

static int event_cb(void *ctx, void *data, size_t size)
{
	const struct dvv_splice_event *ev = data;
	if (size >= sizeof(*ev))
		on_event(ctx, ev->cookie, ev->reason, ev->value);
	return 0;
}

static void rb_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct bp_plane *b = l->data;
	ring_buffer__consume(b->rb);
}

static int verdicts_read(struct bp_plane *b, struct dvv_verdict_count out[DVV_V_MAX])
{
	struct dvv_verdict_count *v = calloc((size_t)b->ncpu, sizeof(*v));
	if (!v)
		return -ENOMEM;
	memset(out, 0, sizeof(*out) * DVV_V_MAX);
	for (uint32_t k = 0; k < DVV_V_MAX; k++) {
		if (bpf_map_lookup_elem(b->verdicts_fd, &k, v) < 0) {
			int e = -errno;
			free(v);
			return e;
		}
		for (int c = 0; c < b->ncpu; c++) {
			out[k].skbs += v[c].skbs;
			out[k].bytes += v[c].bytes;
		}
	}
	free(v);
	return 0;
}

/* Events can be lost when the ring is full; the flags in dvv_conns cannot: when the lost
 * counter moves, walk every pair once. */
static void sweep_cb(struct loop *l, struct loop_timer *t)
{
	struct bp_plane *b = l->data;
	struct dvv_verdict_count v[DVV_V_MAX];
	ring_buffer__consume(b->rb);
	if (!verdicts_read(b, v) && v[DVV_V_EVENT_LOST].skbs != b->events_lost_seen) {
		b->events_lost_seen = v[DVV_V_EVENT_LOST].skbs;
		dlist_for_each_safe(it, next, &b->pairs) {
			struct bp_pair *p = container_of(it, struct bp_pair, node);
			for (int i = 0; i < 2 && !p->dead; i++) {
				struct dvv_conn c;
				if (!p->conns_written || conn_get(b, &p->s[i], &c))
					continue;
				if (c.flags & DVV_CONN_LAG)
					on_event(b, p->s[i].cookie, DVV_EV_CUT_LAG, 0);
				else if (c.flags & DVV_CONN_REDIR_FAIL)
					on_event(b, p->s[i].cookie, DVV_EV_REDIR_FAIL, 0);
				else if ((c.flags & DVV_CONN_THROTTLED) && !p->s[i].throttled)
					on_event(b, p->s[i].cookie, DVV_EV_THROTTLE, 0);
			}
		}
	}
	loop_timer_arm(l, t, SWEEP_MS);
}

static void *plane_main(void *arg)
{
	struct bp_plane *b = arg;
	loop_run(&b->loop);
	return NULL;
}

static void stop_cb(struct loop *l)
{
	take_jobs(l);
	loop_stop(l);
}

/* ---- teardown ---- */

static void plane_destroy(struct bp_plane *b)
{
	if (b->running) {
		b->loop.on_wake = stop_cb;
		loop_wake(&b->loop);
		pthread_join(b->thread, NULL);
		b->running = false;
	}
	if (b->loop_ready) {
		struct bp_pair *p;
		while ((p = dlist_first(&b->pairs, struct bp_pair, node)))
			pair_finish(b, p, 0);
		struct bp_demoted *d;
		while ((d = dlist_first(&b->demoted, struct bp_demoted, node))) {
			d->sp.finished = true;
			demoted_done(&d->sp, 0);
		}
		handoff_drain(&b->jobs, job_drop, NULL);
		loop_timer_cancel(&b->loop, &b->sweep);
		loop_free(&b->loop);
		b->loop_ready = false;
	}
	ring_buffer__free(b->rb);
	b->rb = NULL;
	if (b->attached)
		bpf_prog_detach2(bpf_program__fd(b->skel->progs.dvv_splice_verdict), b->socks_fd,
				 BPF_SK_SKB_STREAM_VERDICT);
	pins_remove(&b->pins, b->skel ? b->skel->obj : NULL, NULL);
	splice_bpf__destroy(b->skel);
	if (b->by_cookie.b) {
		htab_free(&b->by_cookie);
		htab_free(&b->tunnels); /* empty: every pair released its tunnel */
	}
	handoff_free(&b->jobs);
	free(b);
}

/* ---- map walks (tests, /metrics, self-test) ---- */

static int map_count(int fd, uint64_t *n)
{
	uint64_t key, next;
	void *prev = NULL;
	*n = 0;
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		(*n)++;
		key = next;
		prev = &key;
		if (*n > 4ull * DVV_SPLICE_MAX_SOCKS)
			return -ELOOP;
	}
	return errno == ENOENT ? 0 : -errno;
}

/* ---- self-test: a real splice on loopback before the plane is trusted ---- */

static int st_wait(int fd, short ev, uint64_t deadline)
{
	uint64_t now = mono_ms();
	if (now >= deadline)
		return -ETIMEDOUT;
	struct pollfd pfd = {.fd = fd, .events = ev};
	int n = poll(&pfd, 1, (int)(deadline - now));
	return n > 0 ? 0 : n == 0 ? -ETIMEDOUT : -errno;
}

static int st_send(int fd, const uint8_t *buf, size_t len, uint64_t deadline)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN) {
			int rc = st_wait(fd, POLLOUT, deadline);
			if (rc)
				return rc;
			continue;
		}
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read exactly len bytes equal to want, then EOF. */
static int st_expect(int fd, const uint8_t *want, size_t len, uint64_t deadline, const char *what)
{
	uint8_t buf[4096];
	size_t got = 0;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN) {
			int rc = st_wait(fd, POLLIN, deadline);
			if (rc) {
				pr_warn("data plane bpf self-test: %s: %zu of %zu bytes, then %s", what,
					got, len, strerror(-rc));
				return rc;
			}
			continue;
		}
		if (n < 0) {
			pr_warn("data plane bpf self-test: %s: %s", what, strerror(errno));
			return -errno;
		}
		if (n == 0)
			break;
		if (got + (size_t)n > len || memcmp(buf, want + got, (size_t)n)) {
			pr_warn("data plane bpf self-test: %s: bytes differ from what was sent "
				"(offset %zu, %zd bytes)", what, got, n);
			return -EBADMSG;
		}
		got += (size_t)n;
	}
	if (got != len) {
		pr_warn("data plane bpf self-test: %s: %zu bytes then EOF, expected %zu", what, got,
			len);
		return -EBADMSG;
	}
	return 0;
}

static int st_pair(int lfd, const struct sockaddr_in *sa, int *client, int *server)
{
	*client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*client < 0)
		return -errno;
	if (connect(*client, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
		return -errno;
	*server = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	return *server < 0 ? -errno : 0;
}

static int selftest(struct bp_plane *b)
{
	uint64_t deadline = mono_ms() + SELFTEST_MS;
	int lfd = -1, pc = -1, pr = -1, ac = -1, ar = -1, rc;
	uint8_t up[6000], down[5000];
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	for (size_t i = 0; i < sizeof(up); i++)
		up[i] = (uint8_t)(i * 7 + 1);
	for (size_t i = 0; i < sizeof(down); i++)
		down[i] = (uint8_t)(i * 13 + 5);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
		rc = -errno;
		pr_warn("data plane bpf self-test: loopback listener: %s", strerror(-rc));
		goto out;
	}
	if ((rc = st_pair(lfd, &sa, &pc, &pr)) || (rc = st_pair(lfd, &sa, &ac, &ar))) {
		pr_warn("data plane bpf self-test: loopback connections: %s", strerror(-rc));
		goto out;
	}
	/* the "handshake" is queued before the join, as the relay's peeked one is */
	if ((rc = st_send(pc, up, 1000, deadline)))
		goto out;
	if (poll(&(struct pollfd){.fd = pr, .events = POLLIN}, 1, 1000) != 1) {
		rc = -ETIMEDOUT;
		goto out;
	}
	rc = enqueue(b, pr, ar, SELFTEST_KEY, true);
	pr = ar = -1;
	if (rc)
		goto out;
	/* a socket that already has its FIN is refused by the map (the pair would be relayed with
	 * splice(2)): half-close only once both are in */
	for (uint64_t n = 0; n < 2;) {
		if ((rc = map_count(b->socks_fd, &n)))
			goto out;
		if (mono_ms() >= deadline) {
			pr_warn("data plane bpf self-test: the pair never entered the sockhash");
			rc = -ETIMEDOUT;
			goto out;
		}
		if (n < 2)
			usleep(200);
	}
	if ((rc = st_send(pc, up + 1000, sizeof(up) - 1000, deadline)) ||
	    (rc = st_send(ac, down, sizeof(down), deadline))) {
		pr_warn("data plane bpf self-test: send: %s", strerror(-rc));
		goto out;
	}
	shutdown(pc, SHUT_WR);
	if ((rc = st_expect(ac, up, sizeof(up), deadline, "player -> agent")))
		goto out;
	shutdown(ac, SHUT_WR);
	if ((rc = st_expect(pc, down, sizeof(down), deadline, "agent -> player")))
		goto out;
	close(pc);
	close(ac);
	pc = ac = -1;
	while (atomic_load(&b->n_pairs) && mono_ms() < deadline)
		usleep(1000);
	if (atomic_load(&b->n_pairs)) {
		pr_warn("data plane bpf self-test: the pair was not released after both FINs");
		rc = -ETIMEDOUT;
		goto out;
	}
	uint64_t ns, ntg, nc, nt;
	if ((rc = map_count(b->socks_fd, &ns)) || (rc = map_count(b->targets_fd, &ntg)) ||
	    (rc = map_count(b->conns_fd, &nc)) || (rc = map_count(b->tunnels_fd, &nt)))
		goto out;
	if (ns || ntg || nc || nt) {
		pr_warn("data plane bpf self-test: maps not empty after teardown (socks %llu, "
			"targets %llu, conns %llu, tunnels %llu)", (unsigned long long)ns,
			(unsigned long long)ntg, (unsigned long long)nc, (unsigned long long)nt);
		rc = -EUCLEAN;
		goto out;
	}
	struct dvv_verdict_count v[DVV_V_MAX];
	if ((rc = verdicts_read(b, v)))
		goto out;
	if (v[DVV_V_REDIRECT].bytes != sizeof(up) + sizeof(down)) {
		pr_warn("data plane bpf self-test: %llu bytes redirected in the kernel, expected %zu",
			(unsigned long long)v[DVV_V_REDIRECT].bytes, sizeof(up) + sizeof(down));
		rc = -EBADMSG;
	}
out:
	for (int *fd = (int[]){lfd, pc, pr, ac, ar}, i = 0; i < 5; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	return rc;
}

/* ---- the plane ---- */

static int bpf_start(struct dataplane *dp, const struct relay_cfg *cfg)
{
	const char *ff = getenv("DVV_BPF_FORCE_FAIL");
	int rc;
	if (ff && !strcmp(ff, "1")) {
		pr_warn("data plane bpf: DVV_BPF_FORCE_FAIL=1: failing as if the program did not load");
		return -ENOEXEC;
	}
	struct bp_plane *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	/* under auto a failure here is followed by the fallback: the relay keeps working */
	b->fail_level = strcmp(cfg->dataplane, "auto") ? LOG_ERROR : LOG_WARN;
	handoff_init(&b->jobs, &b->loop);
	dlist_init(&b->pairs);
	dlist_init(&b->demoted);
	b->ncpu = libbpf_num_possible_cpus();
	if (b->ncpu <= 0) {
		rc = b->ncpu ? b->ncpu : -EINVAL;
		goto fail;
	}
	bpf_log_install();

	char dir[PATH_MAX];
	if (snprintf(dir, sizeof(dir), "%s/%s", cfg->bpf_pin_root, cfg->instance_id) >=
	    (int)sizeof(dir)) {
		rc = -ENAMETOOLONG;
		goto fail;
	}
	if ((rc = pins_prepare(&b->pins, dir, "data plane bpf", b->fail_level)))
		goto fail;
	if (!(b->skel = splice_bpf__open())) {
		rc = -errno;
		log_msg(b->fail_level, "data plane bpf: cannot open the BPF object: %s", strerror(-rc));
		goto fail;
	}
	b->max_lag_mb = cfg->max_lag_mb > 0 ? cfg->max_lag_mb : 64;
	uint64_t max_lag = (uint64_t)b->max_lag_mb << 20;
	b->skel->rodata->dvv_max_lag_bytes = max_lag;
	b->throttle_lag = max_lag / 2 < THROTTLE_LAG_MAX ? max_lag / 2 : THROTTLE_LAG_MAX;
	b->skel->rodata->dvv_pause_lag_bytes = b->throttle_lag;
	b->tighten_lag = max_lag / 2 > 2 * b->throttle_lag ? max_lag / 2 : 2 * b->throttle_lag;
	if ((rc = splice_bpf__load(b->skel))) {
		log_msg(b->fail_level, "data plane bpf: cannot load the splice program (%s): %s", strerror(-rc),
		       bpf_load_hint(rc));
		goto fail;
	}
	b->socks_fd = bpf_map__fd(b->skel->maps.dvv_socks);
	b->targets_fd = bpf_map__fd(b->skel->maps.dvv_targets);
	b->conns_fd = bpf_map__fd(b->skel->maps.dvv_conns);
	b->tunnels_fd = bpf_map__fd(b->skel->maps.dvv_tunnels);
	b->verdicts_fd = bpf_map__fd(b->skel->maps.dvv_verdicts);
	/* sockmap programs attach to the map, the skeleton does not do it */
	if (bpf_prog_attach(bpf_program__fd(b->skel->progs.dvv_splice_verdict), b->socks_fd,
			    BPF_SK_SKB_STREAM_VERDICT, 0) < 0) {
		rc = -errno;
		log_msg(b->fail_level, "data plane bpf: cannot attach the stream verdict to the sockhash: %s",
		       strerror(-rc));
		goto fail;
	}
	b->attached = true;
	if ((rc = pins_create(&b->pins, b->skel->obj, NULL, NULL)))
		goto fail;

	if ((rc = loop_init(&b->loop)))
		goto fail;
	b->loop_ready = true;
	b->loop.data = b;
	b->loop.on_wake = take_jobs;
	if ((rc = htab_init(&b->by_cookie, 1024)) || (rc = htab_init(&b->tunnels, 256)))
		goto fail;
	b->rb = ring_buffer__new(bpf_map__fd(b->skel->maps.dvv_events), event_cb, b, NULL);
	if (!b->rb) {
		rc = -errno;
		log_msg(b->fail_level, "data plane bpf: ring buffer: %s", strerror(-rc));
		goto fail;
	}
	b->rb_io = (struct loop_io){.fd = ring_buffer__epoll_fd(b->rb), .cb = rb_io_cb};
	if ((rc = loop_io_set(&b->loop, &b->rb_io, EPOLLIN)))
		goto fail;
	b->sweep.cb = sweep_cb;
	loop_timer_arm(&b->loop, &b->sweep, SWEEP_MS);
	if ((rc = -pthread_create(&b->thread, NULL, plane_main, b)))
		goto fail;
	b->running = true;

	if ((rc = selftest(b))) {
		log_msg(b->fail_level, "data plane bpf: self-test splice on loopback failed (%s): not using it",
		       strerror(-rc));
		goto fail;
	}
	dp->priv = b;
	pr_info("data plane: bpf sockhash splice, lag limit %d MiB, maps pinned in %s",
		b->max_lag_mb, b->pins.path);
	return 0;
fail:
	plane_destroy(b);
	return rc ? rc : -EINVAL;
}

static int bpf_join(struct dataplane *dp, int player_fd, int agent_fd, uint64_t tunnel_key)
{
	struct bp_plane *b = dp->priv;
	if (!b) {
		close(player_fd);
		close(agent_fd);
		return -ENODEV;
	}
	M_INC(splices_active);
	int rc = enqueue(b, player_fd, agent_fd, tunnel_key, false);
	if (rc) {
		M_DEC(splices_active);
		M_INC(splice_errors_total);
	}
	return rc;
}

static void bpf_stop(struct dataplane *dp)
{
	struct bp_plane *b = dp->priv;
	if (!b)
		return;
	plane_destroy(b);
	dp->priv = NULL;
}

const struct dataplane_ops dp_bpf_ops = {
	.name = "bpf", .start = bpf_start, .join = bpf_join, .stop = bpf_stop};

int dp_bpf_stats(const struct dataplane *dp, struct dvv_splice_stats *st, bool walk_maps)
{
	if (!dp || dp->ops != &dp_bpf_ops || !dp->priv)
		return -ENODEV;
	struct bp_plane *b = dp->priv;
	int rc;
	memset(st, 0, sizeof(*st));
	if ((rc = verdicts_read(b, st->verdicts)))
		return rc;
	st->pairs_active = atomic_load(&b->n_active);
	st->pairs_total = atomic_load(&b->n_total);
	st->pairs_demoted = atomic_load(&b->n_demoted);
	st->cut_lag = atomic_load(&b->n_cut_lag);
	st->cut_error = atomic_load(&b->n_cut_error);
	st->drain_timeouts = atomic_load(&b->n_drain_timeouts);
	st->throttles = atomic_load(&b->n_throttles);
	st->unthrottles = atomic_load(&b->n_unthrottles);
	st->throttled_now = atomic_load(&b->n_throttled);
	st->user_bytes = atomic_load(&b->n_user_bytes);
	if (walk_maps && ((rc = map_count(b->targets_fd, &st->sockets_in_map)) ||
	    (rc = map_count(b->socks_fd, &st->active_in_map)) ||
	    (rc = map_count(b->conns_fd, &st->conns_in_map)) ||
	    (rc = map_count(b->tunnels_fd, &st->tunnels_in_map))))
		return rc;
	return 0;
}

int dp_bpf_tunnel_bytes(const struct dataplane *dp, uint64_t tunnel_key, uint64_t *to_agent,
			uint64_t *to_player)
{
	if (!dp || dp->ops != &dp_bpf_ops || !dp->priv)
		return -ENODEV;
	struct bp_plane *b = dp->priv;
	struct dvv_tunnel_bytes t = {0};
	*to_agent = *to_player = 0;
	if (bpf_map_lookup_elem(b->tunnels_fd, &tunnel_key, &t) < 0)
		return -errno;
	*to_agent = t.to_agent;
	*to_player = t.to_player;
	return 0;
}
