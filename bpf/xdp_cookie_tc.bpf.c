// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC-ingress half of the XDP guard's SYN cookies. The XDP program answered a SYN itself, so
 * the kernel never saw it and would answer the client's ACK with RST. For an ACK to a listening
 * socket on a protected port that carries a valid cookie, this program hands the kernel a
 * request socket built from the cookie's options (kfunc bpf_sk_assign_tcp_reqsk, Linux 6.9+);
 * the kernel then completes the connection as if it had sent the SYN-ACK itself. Everything
 * else passes untouched. Loaded only where the kfunc exists (userspace/xdp_guard.c checks the
 * kernel's BTF first), which is why it is an object of its own. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "pkt.h"
#include "syncookie.h"
#include "xdp_guard.h"

#define TC_ACT_OK 0

extern int bpf_sk_assign_tcp_reqsk(struct __sk_buff *skb, struct sock *sk,
				   struct bpf_tcp_req_attrs *attrs, int attrs__sz) __ksym;

/* Set by userspace before load, the same values as the XDP program's. */
const volatile __u16 player_port = 0;
const volatile __u16 agent_port = 0;
const volatile __u64 cookie_key0 = 0, cookie_key1 = 0;
const volatile __u8 cookie_wscale = 7;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dvv_cookie_tc_counters);
} xdp_cookie_tc_counters SEC(".maps");

SEC("tc")
int xdp_cookie_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct dvv_pkt p = {};
	struct dvv_cookie_flow f;
	struct bpf_sock_tuple t = {};
	__u32 seq, ack, tlen, zero = 0;
	__u8 obuf[64];

	if (dvv_parse(data, end, &p) != PARSED_TCP)
		return TC_ACT_OK;
	if (!p.dport || (p.dport != player_port && p.dport != agent_port))
		return TC_ACT_OK;
	if ((p.flags & (TCP_FLAG_SYN | TCP_FLAG_RST | TCP_FLAG_ACK)) != TCP_FLAG_ACK)
		return TC_ACT_OK;
	if (dvv_flow_of(data, end, &p, &f, &seq, &ack))
		return TC_ACT_OK;
	tlen = dvv_tuple_of(&f, &t);
	struct bpf_sock *skc = bpf_skc_lookup_tcp(skb, &t, tlen, BPF_F_CURRENT_NETNS, 0);
	if (!skc)
		return TC_ACT_OK;
	if (skc->state != BPF_TCP_LISTEN)
		goto release;

	struct dvv_cookie_tc_counters *cnt = bpf_map_lookup_elem(&xdp_cookie_tc_counters, &zero);
	struct bpf_tcp_req_attrs attrs = {};
	__u16 mss;
	__u8 ws, sack;
	f.isn = seq - 1;
	if (dvv_cookie_check(&f, ack - 1, bpf_ktime_get_ns(), cookie_key0, cookie_key1, &mss, &ws,
			     &sack)) {
		/* not ours: the kernel's own cookie, or a stray ACK the kernel answers itself */
		if (cnt)
			cnt->bad_cookie++;
		goto release;
	}

	/* The ACK's options: only the timestamps matter (the SYN's are in the cookie). */
	struct dvv_tcpopt o = {};
	__u64 l4 = p.l4off;
	DVV_OPAQUE(l4);
	if (l4 <= DVV_PKT_MAX_L4OFF) {
		struct tcphdr *th = data + l4;
		if ((void *)(th + 1) <= end) {
			__u32 optlen = th->doff * 4;
			optlen = optlen > 20 ? optlen - 20 : 0;
			if (optlen > DVV_OPT_BYTES)
				optlen = DVV_OPT_BYTES;
			if (optlen && !bpf_skb_load_bytes(skb, l4 + 20, obuf, optlen))
				dvv_tcpopt_parse(obuf, optlen, &o);
		}
	}
	attrs.mss = mss;
	if (ws != DVV_COOKIE_WSCALE_NONE) {
		attrs.wscale_ok = 1;
		attrs.snd_wscale = ws;
		attrs.rcv_wscale = cookie_wscale;
	}
	attrs.sack_ok = sack;
	if (o.ts) {
		attrs.tstamp_ok = 1;
		attrs.rcv_tsval = o.tsval;
		attrs.rcv_tsecr = o.tsecr;
	}

	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		goto release;
	int rc = bpf_sk_assign_tcp_reqsk(skb, (struct sock *)tp, &attrs, sizeof(attrs));
	if (cnt) {
		if (rc)
			cnt->assign_failed++;
		else
			cnt->assigned++;
	}
release:
	bpf_sk_release(skc);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
