// SPDX-License-Identifier: GPL-2.0
/* In-kernel splice of player <-> agent TCP connections.
 *
 * Both sockets of a pair sit in dvv_socks (SOCKHASH keyed by socket cookie) with this program
 * attached as the map's stream verdict: every skb received on one socket is redirected to the
 * egress of its peer, found through dvv_conns. Userspace (userspace/dp_bpf.c) inserts and removes
 * pairs, watches FIN/RST and carries half-closes across once the peer has sent every redirected
 * byte (dvv_conn.redir_bytes); this program never needs to know about connection state.
 *
 * There is no backpressure on a redirect: a peer that does not read lets the kernel queue grow.
 * The program measures the peer's lag (bytes redirected minus bytes the peer's remote end
 * acknowledged) every time enough bytes went through for it to possibly exceed the limit; over
 * the limit the pair's data is dropped and userspace is told through dvv_events to cut it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "splice.h"

#define SK_DROP 0
#define SK_PASS 1

/* Load-time tunable (skel->rodata before load): lag limit per direction in bytes. */
const volatile __u64 dvv_max_lag_bytes = 64ull << 20;

/* Spliced sockets, keyed by socket cookie. Written by userspace (insert at join; close() of the
 * socket removes it); read by bpf_sk_redirect_hash and the lag check below. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, DVV_SPLICE_MAX_SOCKS);
	__type(key, __u64);
	__type(value, __u64);
} dvv_socks SEC(".maps");

/* Per socket: its peer, tunnel and byte counters (struct dvv_conn), keyed by socket cookie.
 * Created and deleted by userspace around the pair's life; counters written here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVV_SPLICE_MAX_SOCKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct dvv_conn);
} dvv_conns SEC(".maps");

/* Per tunnel: bytes redirected each way (struct dvv_tunnel_bytes), keyed by tunnel_key.
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

/* Requests to cut a pair (struct dvv_splice_event), written here, consumed by userspace. */
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

/* One event per reason per connection; if the ring is full the flag stays clear and the next
 * skb tries again (userspace also sweeps the flags when DVV_V_EVENT_LOST moves). */
static __always_inline void notify(struct dvv_conn *c, __u64 cookie, __u32 reason, __u64 value)
{
	struct dvv_splice_event ev = {
		.cookie = cookie, .peer_cookie = c->peer_cookie, .value = value, .reason = reason};

	if (c->flags & reason)
		return;
	if (bpf_ringbuf_output(&dvv_events, &ev, sizeof(ev), 0)) {
		count(DVV_V_EVENT_LOST, 0);
		return;
	}
	c->flags |= reason;
}

static __always_inline int drop(struct dvv_conn *c, __u32 verdict, __u32 len)
{
	count(verdict, len);
	__sync_fetch_and_add(&c->dropped_bytes, len);
	return SK_DROP;
}

/* Bytes the peer's remote end acknowledged since the join, or -1 if the peer is gone. */
static __always_inline __s64 peer_progress(struct dvv_conn *c)
{
	struct bpf_sock *sk = bpf_map_lookup_elem(&dvv_socks, &c->peer_cookie);
	struct tcp_sock *tp;
	__u64 acked = 0;

	if (!sk)
		return -1;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		acked = tp->bytes_acked;
	bpf_sk_release(sk);
	return acked > c->peer_base ? (__s64)(acked - c->peer_base) : 0;
}

SEC("sk_skb/stream_verdict")
int dvv_splice_verdict(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	__u64 cookie, max = dvv_max_lag_bytes;
	struct dvv_conn *c;

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
	if (c->flags) /* being cut: userspace was told, the stream is already broken */
		return drop(c, c->flags & DVV_CONN_LAG ? DVV_V_LAG_DROP : DVV_V_DROP, len);

	/* The lag grows at most by what is redirected: measure only when it could be over. */
	if (c->redir_bytes + len > c->lag_check_at) {
		__s64 done = peer_progress(c);
		__u64 lag;

		if (done < 0)
			goto redirect; /* peer gone: the redirect below fails and says so */
		lag = c->redir_bytes + len > (__u64)done ? c->redir_bytes + len - (__u64)done : 0;
		if (lag > max) {
			notify(c, cookie, DVV_CONN_LAG, lag);
			return drop(c, DVV_V_LAG_DROP, len);
		}
		c->lag_check_at = c->redir_bytes + len + (max - lag);
	}
redirect:
	if (bpf_sk_redirect_hash(skb, &dvv_socks, &c->peer_cookie, 0) != SK_PASS) {
		notify(c, cookie, DVV_CONN_REDIR_FAIL, len);
		return drop(c, DVV_V_DROP, len);
	}
	count(DVV_V_REDIRECT, len);
	__sync_fetch_and_add(&c->redir_bytes, len);
	{
		struct dvv_tunnel_bytes *t = bpf_map_lookup_elem(&dvv_tunnels, &c->tunnel_key);
		if (t) {
			if (c->dir == DVV_DIR_TO_AGENT)
				__sync_fetch_and_add(&t->to_agent, len);
			else
				__sync_fetch_and_add(&t->to_player, len);
		}
	}
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
