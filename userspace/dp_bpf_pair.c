/* The bpf data plane's pairs, from join to end: inserting both sockets into the maps (or
 * handing the pair to the fallback), the service every event and timer runs (EOF, carrying a
 * FIN across once the redirect queue drained, watching a reader that acknowledges nothing), and
 * the end of a pair (close, or RST both ways), which lets go of its tunnel's accounting entry. */
#include "dp_bpf_int.h"
#include "metrics.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define POLL_MAX_MS 50	/* waiting for a redirect queue to drain: 1, 2, 4 .. 50 ms */
#define STALL_MS 15000	/* bytes owed to a reader that acknowledges nothing: cut */
#define WATCH_MS 1000	/* how often an owing direction is checked for a stall */

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

void bp_close_abort(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* ---- pairs ---- */

static bool side_eq(const struct hnode *n, const void *key, size_t len)
{
	return container_of(n, struct bp_side, hn)->cookie == *(const uint64_t *)key;
}

struct bp_side *bp_side_by_cookie(struct bp_plane *b, uint64_t cookie)
{
	uint64_t h = htab_hash(&b->by_cookie, &cookie, sizeof(cookie));
	struct hnode *n = htab_find(&b->by_cookie, h, &cookie, sizeof(cookie), side_eq);
	return n ? container_of(n, struct bp_side, hn) : NULL;
}

/* End a pair. err == 0: both directions finished, normal close (queued bytes still leave).
 * err != 0: abort both sockets with RST. close() removes each socket from dvv_socks; then the
 * per-socket and per-tunnel entries go, so the maps are empty once every pair is gone. */
void bp_pair_finish(struct bp_plane *b, struct bp_pair *p, int err)
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
				bp_close_abort(s->io.fd);
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
	/* the sockets are closed: no verdict adds to the tunnel's kernel count any more */
	dp_acct_pair_put(&b->acct, p->acct);
	p->acct = NULL;
	dlist_del(&p->node);
	atomic_fetch_sub(&b->n_pairs, 1);
	if (!p->internal) {
		atomic_fetch_sub(&b->n_active, 1);
		M_DEC(splices_active);
		M_ADD(splice_bytes_total, (int64_t)bytes);
		M_PLANE_BYTES(bpf, (int64_t)bytes);
		if (err) {
			M_INC(splice_errors_total);
			if (err != ECONNRESET && err != EPIPE)
				pr_rl(LOG_DEBUG, "bpf splice ended: %s", strerror(err));
		}
	}
	loop_defer(&b->loop, free, p);
}

void bp_pair_abort(struct bp_plane *b, struct bp_pair *p, int err)
{
	if (!p->dead)
		atomic_fetch_add(&b->n_cut_error, 1);
	bp_pair_finish(b, p, err);
}

int bp_conn_get(struct bp_plane *b, const struct bp_side *s, struct dvv_conn *c)
{
	return bpf_map_lookup_elem(b->conns_fd, &s->cookie, c) < 0 ? -errno : 0;
}

/* The peer's stream since the join. */
int bp_peer_counters(const struct bp_side *o, uint64_t *acked, uint64_t *written)
{
	int rc = sock_counters(o->io.fd, acked, written);
	if (rc)
		return rc;
	*acked = *acked > o->base ? *acked - o->base : 0;
	*written = *written > o->base ? *written - o->base : 0;
	return 0;
}

/* Move what userspace has to move from s[i] to s[!i]. For a hooked socket that is only the EOF:
 * the recv() runs the verdict over anything still queued and comes back with EAGAIN, or 0 at
 * EOF. A socket that could not be hooked (never on the kernel path) is relayed by
 * bp_dir_copy(). Returns -errno on a fatal error, 1 to be called again soon, 0. */
static int dir_pump(struct bp_plane *b, struct bp_pair *p, int i, uint64_t *moved)
{
	struct bp_side *s = &p->s[i];
	if (s->eof && s->off == s->len)
		return 0;
	if (!s->hooked)
		return bp_dir_copy(b, p, i, moved);
	char small[512];
	ssize_t n = recv(s->io.fd, small, sizeof(small), MSG_DONTWAIT);
	if (n > 0) {
		/* only a socket without a conn entry gets SK_PASS: cannot happen here */
		pr_rl(LOG_WARN, "bpf splice: %zd bytes reached userspace from a spliced socket", n);
		return -EPROTO;
	}
	if (n == 0)
		s->eof = true;
	else if (errno != EAGAIN && errno != EINTR)
		return -errno;
	return 0;
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
	if ((rc = bp_conn_get(b, s, &c)) || (rc = bp_peer_counters(o, &acked, &w)))
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
	if ((rc = bp_conn_get(b, s, &c)) || (rc = bp_peer_counters(o, &acked, &w)))
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
		bp_pair_abort(b, p, -rc);
}

/* Everything userspace does for a pair, after any event or timer. */
void bp_pair_service(struct bp_plane *b, struct bp_pair *p)
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
		rc = bp_dir_release(b, p, i);
		again |= rc == 1;
		rc = rc < 0 ? rc : 0;
	}
	if (rc) {
		bp_pair_abort(b, p, -rc);
		return;
	}
	if (p->s[0].shut && p->s[1].shut) {
		bp_pair_finish(b, p, 0);
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
		bp_pair_finish(b, p, ECONNABORTED);
		return;
	}
	if (rc) {
		bp_pair_abort(b, p, -rc);
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
	bp_pair_service(p->b, p);
}

static void side_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct bp_plane *b = l->data;
	struct bp_side *s = container_of(io, struct bp_side, io);
	struct bp_pair *p = s->pair;
	if (events & EPOLLERR) {
		int e = sock_error(io->fd);
		if (e) {
			bp_pair_abort(b, p, e);
			return;
		}
	}
	bp_pair_service(b, p);
}

/* ---- join, in the plane's thread ---- */

static void pair_attach(void *arg, const struct handoff_job *j)
{
	struct bp_plane *b = arg;
	if (j->player_fd < 0 && j->agent_fd < 0) {
		bp_pairs_kill(b, j->tunnel_key);
		return;
	}
	struct bp_pair *p = calloc(1, sizeof(*p));
	int rc = 0, one = 1;
	if (!p) {
		bp_close_abort(j->player_fd);
		bp_close_abort(j->agent_fd);
		dp_acct_pair_put(&b->acct, j->acct);
		if (!j->internal) {
			M_DEC(splices_active);
			M_INC(splice_errors_total);
		}
		return;
	}
	p->b = b;
	p->acct = j->acct;
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
	for (int i = 0; i < 2; i++) {
		struct dvv_conn c = {
			.peer_cookie = p->s[!i].cookie,
			.tunnel_key = p->acct ? j->tunnel_key : 0, /* 0: no dvv_tunnels element */
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
	/* Both into dvv_targets first: from then on either may be redirected to, so no byte can
	 * meet a missing peer (the window docs/sockmap.md section 6 orders around is gone). A
	 * socket refused here (its FIN already arrived: only ESTABLISHED sockets enter a sockmap)
	 * means the pair is relayed with splice(2); nothing has been redirected yet. */
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
	bp_pair_service(b, p);
	return;

demote: {
	/* close() would do, but the sockets live on with splice(2): take them out of the map */
	if (p->s[1].in_targets)
		bpf_map_delete_elem(b->targets_fd, &p->s[1].cookie);
	int pfd = p->s[0].io.fd, afd = p->s[1].io.fd;
	bool internal = p->internal;
	struct dp_acct *acct = p->acct;
	p->acct = NULL; /* the demoted pair counts on */
	p->s[0].io.fd = p->s[1].io.fd = -1;
	if (!p->internal) /* counted again by the demoted pair */
		M_INC(splices_active);
	bp_pair_finish(b, p, 0);
	bp_pair_demote(b, pfd, afd, internal, -rc, refused, acct);
	return;
}
fail:
	pr_rl(LOG_WARN, "bpf plane: cannot join a pair: %s", strerror(-rc));
	bp_pair_abort(b, p, -rc);
}

void bp_take_jobs(struct loop *l)
{
	struct bp_plane *b = l->data;
	handoff_drain(&b->jobs, pair_attach, b);
}

/* A job the stopped plane never took. */
void bp_job_drop(void *arg, const struct handoff_job *j)
{
	struct bp_plane *b = arg;
	if (j->player_fd < 0 && j->agent_fd < 0)
		return; /* a kill job */
	dp_acct_pair_put(&b->acct, j->acct);
	close(j->player_fd);
	close(j->agent_fd);
	if (!j->internal)
		M_DEC(splices_active);
}

/* A kill job (both fds -1): end every pair of the tunnel, in the kernel path or demoted. */
void bp_pairs_kill(struct bp_plane *b, uint64_t key)
{
	struct dlist *n = b->pairs.next;
	while (n != &b->pairs) {
		struct bp_pair *p = container_of(n, struct bp_pair, node);
		n = n->next;
		if (p->acct && p->acct->key == key && !p->internal)
			bp_pair_finish(b, p, ECONNABORTED);
	}
	bp_demoted_kill(b, key);
}

int bp_enqueue(struct bp_plane *b, int player_fd, int agent_fd, uint64_t key, bool internal)
{
	struct handoff_job j = {.player_fd = player_fd, .agent_fd = agent_fd, .tunnel_key = key,
				.internal = internal};
	int err = 0;
	/* taken here, on the joining thread: the tunnel's player count includes queued pairs, and
	 * a holder that saw it at 0 knows no pair is on its way */
	if (key && !(j.acct = dp_acct_pair_get(&b->acct, key, &err)))
		pr_rl(LOG_WARN, "bpf plane: pair of tunnel %016llx relayed uncounted: %s",
		      (unsigned long long)key, strerror(-err));
	int rc = handoff_push(&b->jobs, &j);
	if (rc) {
		dp_acct_pair_put(&b->acct, j.acct);
		bp_close_abort(player_fd);
		bp_close_abort(agent_fd);
	}
	return rc;
}
