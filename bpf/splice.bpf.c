// SPDX-License-Identifier: GPL-2.0
/* In-kernel splice of player <-> agent TCP connections.
 *
 * Every socket of a live pair is in dvv_targets (SOCKHASH keyed by socket cookie, no program)
 * and in dvv_socks, which carries this program as its stream verdict: each skb received is
 * redirected to the egress of the peer named in dvv_conns, looked up in dvv_targets. Userspace
 * (userspace/dp_bpf.c) inserts and removes pairs, watches FIN/RST and carries half-closes across
 * once the peer has sent every byte redirected to it; this program never needs to know about
 * connection state. A socket's bytes stay on this path from insertion to close: taking a
 * receiving socket off it (SK_PASS to itself, or out of dvv_socks) was measured to duplicate or
 * drop data on 6.18.
 *
 * A redirect has no backpressure: bytes wait in a kernel queue in front of the peer's TCP send
 * queue, and a sender faster than the peer's reader (or than the kernel worker draining that
 * queue: ~4 Gbit/s for one stream on a small VM) grows it without bound. So the program watches
 * the peer's lag (bytes redirected to it minus bytes its remote end acknowledged):
 *  - over dvv_pause_lag_bytes it asks userspace (dvv_events) to clamp this socket's TCP receive
 *    window: the sender then has almost no window, which is real backpressure, while the data
 *    path is untouched. The request is repeated every DVV_SPLICE_THROTTLE_RECHECK bytes while
 *    the peer stays behind; userspace opens the window again when it sees the peer caught up
 *    (a clamped sender is mostly silent, so this program would learn it too late);
 *  - over dvv_max_lag_bytes the pair is cut: data dropped, userspace told through dvv_events.
 *    A throttle takes userspace a moment to apply, so for dvv_throttle_grace_ns after asking,
 *    up to twice the limit is tolerated: a fast but honest sender is slowed, not cut. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "splice.h"

#define SK_DROP 0
#define SK_PASS 1

/* Load-time tunables (skel->rodata before load). */
const volatile __u64 dvv_max_lag_bytes = 64ull << 20;	 /* cut the pair above this */
const volatile __u64 dvv_pause_lag_bytes = 4ull << 20;	 /* throttle the sender above this */
const volatile __u64 dvv_throttle_grace_ns = 100000000; /* see above */

/* Sockets whose received bytes are spliced here, keyed by socket cookie; this program is the
 * map's stream verdict. Written by userspace at join; close() removes a socket from every map. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, DVV_SPLICE_MAX_SOCKS);
	__type(key, __u64);
	__type(value, __u64);
} dvv_socks SEC(".maps");

/* Every socket of a live pair, keyed by socket cookie: redirect targets and lag lookups. No
 * program. Written by userspace at join; close() removes. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, DVV_SPLICE_MAX_SOCKS);
	__type(key, __u64);
	__type(value, __u64);
} dvv_targets SEC(".maps");

/* Per socket: its peer, tunnel, byte counters and flags (struct dvv_conn), keyed by socket
 * cookie. Created and deleted by userspace around the pair's life; counters written here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVV_SPLICE_MAX_SOCKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct dvv_conn);
} dvv_conns SEC(".maps");

/* Per tunnel: bytes relayed each way (struct dvv_tunnel_bytes), keyed by tunnel_key.
 * Created/deleted by userspace with the tunnel's first/last pair; counted here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVV_SPLICE_MAX_TUNNELS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct dvv_tunnel_bytes);
} dvv_tunnels SEC(".maps");

/* Per CPU, per verdict (enum dvv_verdict): skbs and bytes. Written here, read by /metrics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DVV_V_MAX);
	__type(key, __u32);
	__type(value, struct dvv_verdict_count);
} dvv_verdicts SEC(".maps");

/* Requests to userspace (struct dvv_splice_event: cut a pair, clamp or open a window), written
 * here, consumed by the plane's loop. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, DVV_SPLICE_EVENT_RING);
} dvv_events SEC(".maps");

static __always_inline void count(__u32 verdict, __u32 len)
{
	struct dvv_verdict_count *c = bpf_map_lookup_elem(&dvv_verdicts, &verdict);
	if (c) {
		c->skbs++;
		c->bytes += len;
	}
}

/* Tunnel accounting for bandwidth limits: bytes relayed either way. */
static __always_inline void tunnel_add(struct dvv_conn *c, __u64 len)
{
	struct dvv_tunnel_bytes *t = bpf_map_lookup_elem(&dvv_tunnels, &c->tunnel_key);

	if (!t)
		return;
	if (c->dir == DVV_DIR_TO_AGENT)
		__sync_fetch_and_add(&t->to_agent, len);
	else
		__sync_fetch_and_add(&t->to_player, len);
}

/* Returns 0 when userspace was told. A full ring is counted; userspace then sweeps the flags. */
static __always_inline int notify(struct dvv_conn *c, __u64 cookie, __u32 reason, __u64 value)
{
	struct dvv_splice_event ev = {
		.cookie = cookie, .peer_cookie = c->peer_cookie, .value = value, .reason = reason};

	if (bpf_ringbuf_output(&dvv_events, &ev, sizeof(ev), 0)) {
		count(DVV_V_EVENT_LOST, 0);
		return -1;
	}
	return 0;
}

/* Cut the pair: everything from this socket is dropped from now on. */
static __always_inline int cut(struct dvv_conn *c, __u64 cookie, __u32 flag, __u32 verdict,
			       __u32 len, __u64 value)
{
	if (!(c->flags & flag) &&
	    !notify(c, cookie, flag == DVV_CONN_LAG ? DVV_EV_CUT_LAG : DVV_EV_REDIR_FAIL, value))
		c->flags |= flag;
	count(verdict, len);
	__sync_fetch_and_add(&c->dropped_bytes, len);
	return SK_DROP;
}

/* Bytes the peer's remote end acknowledged since the join, or -1 if the peer left the map. */
static __always_inline __s64 peer_acked(struct dvv_conn *c)
{
	struct bpf_sock *sk = bpf_map_lookup_elem(&dvv_targets, &c->peer_cookie);
	struct tcp_sock *tp;
	__u64 a = 0;
	int ok = 0;

	if (!sk)
		return -1;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp) {
		a = tp->bytes_acked;
		ok = 1;
	}
	bpf_sk_release(sk);
	if (!ok)
		return -1;
	return a > c->peer_base ? (__s64)(a - c->peer_base) : 0;
}

SEC("sk_skb/stream_verdict")
int dvv_splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie, sent, lag, now;
	__u64 max = dvv_max_lag_bytes, pause = dvv_pause_lag_bytes;
	__u32 len = skb->len;
	struct dvv_conn *c;
	__s64 acked;

	/* A bare FIN: redirecting it would break the peer's send path (EPIPE, data lost). The
	 * EOF itself is still seen by userspace (RDHUP + recv() == 0). */
	if (len == 0) {
		count(DVV_V_ZERO_LEN, 0);
		return SK_DROP;
	}
	cookie = bpf_get_socket_cookie(skb);
	c = bpf_map_lookup_elem(&dvv_conns, &cookie);
	if (!c) {
		count(DVV_V_NO_PEER, len);
		count(DVV_V_PASS, len);
		return SK_PASS;
	}
	if (c->flags & DVV_CONN_CUT) /* userspace was told; the stream is already broken */
		return cut(c, cookie, c->flags & DVV_CONN_CUT, DVV_V_DROP, len, len);
	if (pause > max)
		pause = max;
	sent = c->redir_bytes + len;

	/* The lag grows at most by what is redirected: measure only when it could cross the
	 * throttle limit (the first skb always measures), and regularly while over it. */
	if (sent > c->lag_check_at) {
		acked = peer_acked(c);
		if (acked < 0)
			goto redirect; /* peer gone: the redirect below fails and says so */
		lag = sent > (__u64)acked ? sent - (__u64)acked : 0;
		if (lag > pause) {
			now = bpf_ktime_get_ns();
			if (!(c->flags & DVV_CONN_THROTTLED)) {
				c->flags |= DVV_CONN_THROTTLED;
				c->throttle_ns = now;
				count(DVV_V_THROTTLE, 0);
			}
			if (lag > max && (lag > 2 * max || now - c->throttle_ns > dvv_throttle_grace_ns))
				return cut(c, cookie, DVV_CONN_LAG, DVV_V_LAG_DROP, len, lag);
			notify(c, cookie, DVV_EV_THROTTLE, lag);
			c->lag_check_at = sent + DVV_SPLICE_THROTTLE_RECHECK;
		} else {
			c->flags &= ~DVV_CONN_THROTTLED;
			c->lag_check_at = sent + (pause - lag);
		}
	}
redirect:
	if (bpf_sk_redirect_hash(skb, &dvv_targets, &c->peer_cookie, 0) != SK_PASS)
		return cut(c, cookie, DVV_CONN_REDIR_FAIL, DVV_V_DROP, len, len);
	count(DVV_V_REDIRECT, len);
	__sync_fetch_and_add(&c->redir_bytes, len);
	tunnel_add(c, len);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
