/* Two sockets joined with splice(2) on an event loop (contract in splice.h). */
#include "splice.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#define PIPE_CAP 65536u

_Atomic uint64_t splice_n_clamps, splice_n_unclamps;

static void pair_io_cb_a(struct loop *l, struct loop_io *io, uint32_t events);
static void pair_io_cb_b(struct loop *l, struct loop_io *io, uint32_t events);

static int make_pipe(int p[2])
{
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
		return -errno;
	fcntl(p[1], F_SETPIPE_SZ, PIPE_CAP);
	return 0;
}

int splice_pair_start(struct loop *l, struct splice_pair *p, int a, int b, splice_done_cb cb)
{
	memset(p, 0, sizeof(*p));
	p->loop = l;
	p->on_done = cb;
	p->dir[0] = (struct splice_dir){.from = a, .to = b, .pipe = {-1, -1}};
	p->dir[1] = (struct splice_dir){.from = b, .to = a, .pipe = {-1, -1}};
	int rc = make_pipe(p->dir[0].pipe);
	if (!rc)
		rc = make_pipe(p->dir[1].pipe);
	if (rc) {
		for (int d = 0; d < 2; d++)
			for (int i = 0; i < 2; i++)
				if (p->dir[d].pipe[i] >= 0)
					close(p->dir[d].pipe[i]);
		return rc;
	}
	p->io[0] = (struct loop_io){.fd = a, .cb = pair_io_cb_a};
	p->io[1] = (struct loop_io){.fd = b, .cb = pair_io_cb_b};
	uint32_t ev = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
	if ((rc = loop_io_set(l, &p->io[0], ev)) || (rc = loop_io_set(l, &p->io[1], ev))) {
		loop_io_del(l, &p->io[0]);
		for (int d = 0; d < 2; d++)
			for (int i = 0; i < 2; i++)
				close(p->dir[d].pipe[i]);
		return rc;
	}
	/* Bytes already waiting (the player's handshake was only peeked) are reported by epoll
	 * right away: EPOLL_CTL_ADD of a ready fd raises an edge. on_done never runs from here. */
	return 0;
}

/* End of stream on a TCP socket: a FIN, or a reset whose error an earlier call consumed (a
 * read after the reset returns 0 like a FIN does). Only asked while we have not sent our own FIN
 * on that socket: then a FIN leaves it in CLOSE_WAIT and only a reset leaves it CLOSED (after
 * our FIN, a FIN also ends in CLOSED: the kernel hands the connection to a time-wait socket). */
static bool eof_was_reset(int fd)
{
	struct tcp_info ti;
	socklen_t sl = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) < 0)
		return false;
	return ti.tcpi_state == 7; /* TCP_CLOSE (netinet/tcp.h; linux/tcp.h gives tcp_info) */
}

static int ioctl_int(int fd, unsigned long req)
{
	int v = 0;
	return ioctl(fd, req, &v) < 0 ? 0 : v;
}

/* The queue bound of splice.h, checked only while `to` pushes back or `from` is clamped, so a
 * flowing pair pays nothing. Errors leave the window as it is (the pair works either way). */
static void queue_bound(struct splice_dir *d)
{
	uint64_t q = (uint64_t)ioctl_int(d->from, SIOCINQ) + d->inpipe +
		     (uint64_t)ioctl_int(d->to, SIOCOUTQNSD);
	if (!d->target)
		d->target = d->queue_max;
	if (!d->clamped && q > d->queue_max) {
		/* recompute the target from this pair's own drain rate and round trip */
		struct tcp_info in, out;
		socklen_t li = sizeof(in), lo = sizeof(out);
		memset(&in, 0, sizeof(in));
		memset(&out, 0, sizeof(out));
		if (getsockopt(d->from, IPPROTO_TCP, TCP_INFO, &in, &li) < 0 ||
		    getsockopt(d->to, IPPROTO_TCP, TCP_INFO, &out, &lo) < 0)
			return;
		/* the larger estimate: the sender-side one may date from the handshake, without the
		 * queueing a busy path adds (taking it starved a 50 Mbit/s stream to 0.75-0.86x) */
		uint64_t rtt_us = in.tcpi_rtt > in.tcpi_rcv_rtt ? in.tcpi_rtt : in.tcpi_rcv_rtt;
		uint64_t rtt_bytes = out.tcpi_delivery_rate * rtt_us / 1000000u;
		/* at most 4 x queue_max: the receive-side RTT estimate inflates at times, and a
		 * delivery rate times it reached tens of MiB (no bound left) */
		if (rtt_bytes > 2 * (uint64_t)d->queue_max)
			rtt_bytes = 2 * (uint64_t)d->queue_max;
		uint64_t t = 2 * rtt_bytes > d->queue_max ? 2 * rtt_bytes : d->queue_max;
		d->target = t > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)t;
		if (q <= d->target)
			return;
		socklen_t sl = sizeof(d->saved_clamp);
		if (getsockopt(d->from, IPPROTO_TCP, TCP_WINDOW_CLAMP, &d->saved_clamp, &sl) < 0)
			return;
		/* half a round trip's worth: the sender keeps half the drain rate (never stalls,
		 * stays ACK-clocked) and at least two segments, so it gets the window back with
		 * the next ACK once released */
		uint64_t c = rtt_bytes / 2, min = 2 * (uint64_t)(in.tcpi_rcv_mss ? in.tcpi_rcv_mss
										  : 1460);
		d->clamp = (int)(c < min ? min : c > (uint64_t)INT32_MAX ? INT32_MAX : c);
		if (setsockopt(d->from, IPPROTO_TCP, TCP_WINDOW_CLAMP, &d->clamp,
			       sizeof(d->clamp)) < 0)
			return;
		d->clamped = true;
		atomic_fetch_add_explicit(&splice_n_clamps, 1, memory_order_relaxed);
	} else if (d->clamped && q < d->target / 2) {
		setsockopt(d->from, IPPROTO_TCP, TCP_WINDOW_CLAMP, &d->saved_clamp,
			   sizeof(d->saved_clamp));
		d->clamped = false;
		atomic_fetch_add_explicit(&splice_n_unclamps, 1, memory_order_relaxed);
	} else if (d->clamped) {
		/* receive-buffer autotuning rewrites the clamp when it grows the buffer */
		int now = 0;
		socklen_t sl = sizeof(now);
		if (!getsockopt(d->from, IPPROTO_TCP, TCP_WINDOW_CLAMP, &now, &sl) && now > d->clamp)
			setsockopt(d->from, IPPROTO_TCP, TCP_WINDOW_CLAMP, &d->clamp,
				   sizeof(d->clamp));
	}
}

/* Move what can be moved in one direction, until it blocks. Returns 0 or -errno. */
static int pump(struct splice_dir *d, bool from_shut)
{
	for (;;) {
		bool moved = false;
		if (!d->eof && d->inpipe < PIPE_CAP) {
			ssize_t n = splice(d->from, NULL, d->pipe[1], NULL, PIPE_CAP - d->inpipe,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->inpipe += (uint32_t)n;
				moved = true;
			} else if (n == 0) {
				if (!from_shut && eof_was_reset(d->from))
					return -ECONNRESET;
				d->eof = true;
				moved = true;
			} else if (errno != EAGAIN && errno != EINTR) {
				return -errno;
			}
		}
		if (d->inpipe) {
			ssize_t n = splice(d->pipe[0], NULL, d->to, NULL, d->inpipe,
					   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->inpipe -= (uint32_t)n;
				d->bytes += (uint64_t)n;
				if (d->count)
					atomic_fetch_add_explicit(d->count, (uint64_t)n,
								  memory_order_relaxed);
				moved = true;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				return -errno;
			}
			d->blocked = n < 0 && errno == EAGAIN;
		}
		if (d->eof && !d->inpipe && !d->shut) {
			shutdown(d->to, SHUT_WR);
			d->shut = true;
		}
		if (!moved) {
			if (d->queue_max && ((d->inpipe && d->blocked) || d->clamped))
				queue_bound(d);
			return 0;
		}
	}
}

static void finish(struct splice_pair *p, int err)
{
	if (p->finished)
		return;
	p->finished = true;
	loop_io_del(p->loop, &p->io[0]);
	loop_io_del(p->loop, &p->io[1]);
	if (err) {
		/* a reset or error on one side tears the other down with a reset too, so the far
		 * end learns at once instead of holding a half-open connection */
		struct linger lg = {.l_onoff = 1, .l_linger = 0};
		for (int i = 0; i < 2; i++)
			if (p->io[i].fd >= 0)
				setsockopt(p->io[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	p->on_done(p, err);
}

/* An event on side `side` (0: a, 1: b). dir[side] reads that socket, dir[!side] writes to it.
 * Only the directions the event can have unblocked are pumped: a readable socket moves its
 * own direction; a writable one moves the other direction only if bytes wait in its pipe (with
 * an empty pipe that direction last stopped on EAGAIN or EOF from its own source, and its next
 * EPOLLIN edge brings it here). Pumping both on every event cost two splice calls that
 * could only fail with EAGAIN per event on a two-way stream. Errors and hang-ups pump both:
 * that is where they are found. */
static void pair_run(struct splice_pair *p, int side, uint32_t events)
{
	if (p->finished)
		return;
	bool all = events & (EPOLLERR | EPOLLHUP);
	bool run[2];
	run[side] = all || (events & (EPOLLIN | EPOLLRDHUP));
	run[!side] = all || ((events & EPOLLOUT) && p->dir[!side].inpipe);
	/* dir[1] writes to dir[0]'s source and the other way round */
	int r0 = run[0] ? pump(&p->dir[0], p->dir[1].shut) : 0;
	int r1 = r0 < 0 || !run[1] ? 0 : pump(&p->dir[1], p->dir[0].shut);
	if (r0 < 0 || r1 < 0) {
		finish(p, -(r0 < 0 ? r0 : r1));
		return;
	}
	if ((events & EPOLLERR) && !(events & EPOLLIN)) {
		int fd = p->io[0].fd, e = 0;
		socklen_t sl = sizeof(e);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl);
		if (!e) {
			fd = p->io[1].fd;
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl);
		}
		if (e) {
			finish(p, e);
			return;
		}
	}
	if (p->dir[0].shut && p->dir[1].shut)
		finish(p, 0);
}

static void pair_io_cb_a(struct loop *l, struct loop_io *io, uint32_t events)
{
	pair_run(container_of(io, struct splice_pair, io[0]), 0, events);
}

static void pair_io_cb_b(struct loop *l, struct loop_io *io, uint32_t events)
{
	pair_run(container_of(io, struct splice_pair, io[1]), 1, events);
}

void splice_pair_close(struct splice_pair *p)
{
	loop_io_del(p->loop, &p->io[0]);
	loop_io_del(p->loop, &p->io[1]);
	for (int d = 0; d < 2; d++)
		for (int i = 0; i < 2; i++)
			if (p->dir[d].pipe[i] >= 0) {
				close(p->dir[d].pipe[i]);
				p->dir[d].pipe[i] = -1;
			}
	for (int i = 0; i < 2; i++)
		if (p->io[i].fd >= 0) {
			close(p->io[i].fd);
			p->io[i].fd = -1;
		}
}
