/* Two sockets joined with splice(2) on an event loop (contract in splice.h). */
#include "splice.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#define PIPE_CAP 65536u

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
	return ti.tcpi_state == TCP_CLOSE;
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
		}
		if (d->eof && !d->inpipe && !d->shut) {
			shutdown(d->to, SHUT_WR);
			d->shut = true;
		}
		if (!moved)
			return 0;
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
