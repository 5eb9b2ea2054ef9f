/* Backpressure for the bpf data plane, which the kernel path lacks (docs/sockmap.md section 3):
 * a sender whose reader fell behind gets its TCP receive window clamped when the verdict
 * program asks, and gets it back once the reader caught up, decided here by polling. */
#include "dp_bpf_int.h"

#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define THROTTLE_LAG_MAX (4u << 20) /* throttle a sender above this lag (or half --max-lag-mb
				       if smaller), release it below half of that */
#define THROTTLE_WINDOW 4096	    /* tightest clamped receive window of a throttled sender */

void bp_throttle_limits(struct bp_plane *b, uint64_t max_lag)
{
	b->throttle_lag = max_lag / 2 < THROTTLE_LAG_MAX ? max_lag / 2 : THROTTLE_LAG_MAX;
	b->tighten_lag = max_lag / 2 > 2 * b->throttle_lag ? max_lag / 2 : 2 * b->throttle_lag;
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

/* Repeated while the peer stays behind: tighten if one MSS was not enough, and put the clamp
 * back if receive-buffer autotuning rewrote it meanwhile. */
int bp_throttle_request(struct bp_plane *b, struct bp_side *s, uint64_t lag)
{
	int level = !s->throttled ? 1 : lag > b->tighten_lag || s->tight ? 2 : 1;
	return side_throttle(b, s, level);
}

/* A throttled sender gets its window back once its peer is less than half the throttle limit
 * behind. Decided here, by polling, because a clamped sender hardly sends: the program would
 * only notice with its next skb. Returns 1 while still throttled, 0, -errno. */
int bp_dir_release(struct bp_plane *b, struct bp_pair *p, int i)
{
	struct bp_side *s = &p->s[i], *o = &p->s[!i];
	struct dvv_conn c;
	uint64_t acked, w;
	int rc;
	if (!s->throttled)
		return 0;
	if ((rc = bp_conn_get(b, s, &c)) || (rc = bp_peer_counters(o, &acked, &w)))
		return rc;
	if (c.redir_bytes > acked + b->throttle_lag / 2)
		return 1;
	return side_throttle(b, s, 0);
}
