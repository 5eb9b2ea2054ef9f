/* Backpressure for the bpf data plane, which the kernel path lacks (docs/sockmap.md section 3):
 * a sender whose reader fell behind (bytes queued here that the reader's TCP has not sent) gets
 * its TCP receive window clamped when the verdict program asks and this pair's own round trip
 * agrees, and gets it back once the queue drained, decided here by polling. */
#include "dp_bpf_int.h"
#include "log.h"

#include <errno.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define THROTTLE_QUEUE_OFF (4u << 20) /* the queue bound with --queue-kb 0: protection only */
#define THROTTLE_WINDOW 4096	      /* tightest clamped receive window of a throttled sender */

void bp_throttle_limits(struct bp_plane *b, uint64_t max_lag, uint64_t queue)
{
	if (!queue)
		queue = THROTTLE_QUEUE_OFF;
	b->throttle_lag = max_lag / 2 < queue ? max_lag / 2 : queue;
	b->tighten_lag = max_lag / 2 > 2 * b->throttle_lag ? max_lag / 2 : 2 * b->throttle_lag;
}

/* Bytes the relay holds for o that o's TCP has not sent: redirected (s's counter) minus
 * acknowledged minus in flight. 0 or -errno. */
static int side_unsent(struct bp_plane *b, struct bp_side *s, struct bp_side *o, uint64_t *unsent)
{
	struct dvv_conn c;
	uint64_t acked, w;
	int rc, outq = 0, nsd = 0;
	if ((rc = bp_conn_get(b, s, &c)) || (rc = bp_peer_counters(o, &acked, &w)))
		return rc;
	if (ioctl(o->io.fd, SIOCOUTQ, &outq) < 0 || ioctl(o->io.fd, SIOCOUTQNSD, &nsd) < 0)
		return -errno;
	uint64_t held = acked + (uint64_t)(outq > nsd ? outq - nsd : 0);
	*unsent = c.redir_bytes > held ? c.redir_bytes - held : 0;
	return 0;
}

/* The queue this pair may hold before its sender is slowed: the plane's bound, or twice what
 * o drains in one round trip of s's sender if that is more (a far sender refills the queue
 * only a round trip after its window opens: less and the reader would starve meanwhile).
 * *half_rtt: half that round trip's worth, the clamp that leaves the sender half the rate. */
static uint64_t side_target(struct bp_plane *b, struct bp_side *s, struct bp_side *o,
			    uint64_t *half_rtt)
{
	struct tcp_info in, out;
	socklen_t li = sizeof(in), lo = sizeof(out);
	memset(&in, 0, sizeof(in));
	memset(&out, 0, sizeof(out));
	*half_rtt = 0;
	if (getsockopt(s->io.fd, IPPROTO_TCP, TCP_INFO, &in, &li) < 0 ||
	    getsockopt(o->io.fd, IPPROTO_TCP, TCP_INFO, &out, &lo) < 0)
		return b->throttle_lag;
	/* the larger estimate: the sender-side one may date from the handshake, without the
	 * queueing a busy path adds (taking it starved a 50 Mbit/s stream to 0.75-0.86x) */
	uint64_t rtt_us = in.tcpi_rtt > in.tcpi_rcv_rtt ? in.tcpi_rtt : in.tcpi_rcv_rtt;
	uint64_t rtt_bytes = out.tcpi_delivery_rate * rtt_us / 1000000u;
	/* at most 4 x the plane's bound (and below the tighten and cut limits): the receive-side
	 * RTT estimate inflates at times, and a delivery rate times it reached tens to hundreds
	 * of MiB: the throttle never came (13 MiB queued for a 10 Mbit/s player; a loopback
	 * pair cut for lag) */
	uint64_t cap = 4 * b->throttle_lag < b->tighten_lag / 2 ? 4 * b->throttle_lag
								 : b->tighten_lag / 2;
	if (cap < b->throttle_lag)
		cap = b->throttle_lag;
	if (rtt_bytes > cap / 2)
		rtt_bytes = cap / 2;
	*half_rtt = rtt_bytes / 2;
	return 2 * rtt_bytes > b->throttle_lag ? 2 * rtt_bytes : b->throttle_lag;
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
static int side_throttle(struct bp_plane *b, struct bp_side *s, int level, uint64_t half_rtt)
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
			/* half a round trip's worth of what the reader drains, at least two
			 * segments: below the drain rate, so the queue shrinks, yet the sender
			 * never stalls and gets its window back with the next ACK */
			struct tcp_info ti;
			socklen_t sl = sizeof(ti);
			memset(&ti, 0, sizeof(ti));
			if (!getsockopt(s->io.fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) &&
			    2 * (int)ti.tcpi_rcv_mss > clamp)
				clamp = 2 * (int)ti.tcpi_rcv_mss;
			if (half_rtt > (uint64_t)clamp)
				clamp = half_rtt > (1u << 30) ? 1 << 30 : (int)half_rtt;
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

/* Repeated while the peer stays behind: declined while the queue is within this pair's
 * round-trip target, then tighten if the first clamp was not enough, and put the clamp back if
 * receive-buffer autotuning rewrote it meanwhile. */
int bp_throttle_request(struct bp_plane *b, struct bp_side *s, uint64_t lag)
{
	struct bp_side *o = &s->pair->s[s == &s->pair->s[0]];
	uint64_t unsent, half_rtt;
	int rc;
	if (!s->throttled) {
		if ((rc = side_unsent(b, s, o, &unsent)))
			return rc;
		s->target = side_target(b, s, o, &half_rtt);
		s->half_rtt = half_rtt;
		pr_debug("bpf splice: %llu bytes queued for a reader, target %llu, clamp %llu%s",
			 (unsigned long long)unsent, (unsigned long long)s->target,
			 (unsigned long long)half_rtt, unsent <= s->target ? ": declined" : "");
		if (unsent <= s->target)
			return 0; /* this round trip needs that much queue: the program asks again */
	}
	int level = !s->throttled ? 1 : lag > b->tighten_lag || s->tight ? 2 : 1;
	return side_throttle(b, s, level, s->half_rtt);
}

/* A throttled sender gets its window back once the bytes queued here for its peer fell below
 * half the pair's target. Decided here, by polling, because a clamped sender hardly sends: the
 * program would only notice with its next skb. Returns 1 while still throttled, 0, -errno. */
int bp_dir_release(struct bp_plane *b, struct bp_pair *p, int i)
{
	struct bp_side *s = &p->s[i], *o = &p->s[!i];
	uint64_t unsent;
	int rc;
	if (!s->throttled)
		return 0;
	if ((rc = side_unsent(b, s, o, &unsent)))
		return rc;
	if (unsent > (s->target ? s->target : b->throttle_lag) / 2)
		return 1;
	return side_throttle(b, s, 0, 0);
}
