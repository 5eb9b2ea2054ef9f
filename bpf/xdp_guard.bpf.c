// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* XDP SYN guard. Only TCP SYNs (SYN set, ACK clear) to the two protected ports are judged;
 * everything else, including anything whose headers are cut short, passes untouched.
 *
 * Verdicts, in order:
 *   1. source in xdp_deny                        -> drop
 *   2. source in xdp_allow                       -> pass
 *   3. a known source over its own rate          -> drop   (before the budget, so one
 *      flooding source cannot spend the budget everybody shares)
 *   4. the port budget (all sources, per second) -> drop when empty; a source that already
 *      holds a bucket may draw on a reserve of the same size instead, so a spoofed flood of
 *      new sources cannot lock out clients the guard has already seen
 *   5. pass; a new source gets a full bucket, minus this SYN.
 * A new source only gets a bucket once the budget admitted it: a random-source flood churns
 * xdp_sources at most at the budget rate, not at the flood rate.
 *
 * Rates are GCRA token buckets (see struct dvv_src_bucket), time is bpf_ktime_get_ns(). */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "pkt.h"
#include "syncookie.h"
#include "xdp_guard.h"

#define CAS_TRIES 4

_Static_assert(DVV_XDP_V6_SOURCE_PREFIX % 8 == 0 && DVV_XDP_V6_SOURCE_PREFIX <= 128,
	       "IPv6 sources are cut on a byte boundary");

/* Tunables, set by userspace through skel->rodata before load. Ports in host order; 0 = off. */
const volatile __u16 player_port = 0;
const volatile __u16 agent_port = 0;
const volatile __u64 src_interval_ns = 20000000;    /* 1e9 / xdp_syn_rate */
const volatile __u64 src_tolerance_ns = 5000000000; /* xdp_syn_burst * src_interval_ns */
const volatile __u64 port_interval_ns = 50000;	    /* 1e9 / xdp_port_syn_budget */
const volatile __u64 port_tolerance_ns = 1000000000; /* budget * port_interval_ns: 1 s deep */
const volatile __u32 syncookie_mode = DVV_SYNCOOKIES_OFF; /* enum dvv_syncookie_mode */
const volatile __u64 cookie_key0 = 0, cookie_key1 = 0;	  /* SipHash key, from getrandom() */
const volatile __u8 cookie_wscale = 7;			  /* our window scale in a cookie SYN-ACK */
const volatile __u16 cookie_max_mss4 = 1460, cookie_max_mss6 = 1440; /* interface MTU - headers */

/* Verdict counters, one struct per CPU: written here, read by xdp_guard_counters()/bpftool. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dvv_xdp_counters);
} xdp_counters SEC(".maps");

/* Per-source SYN buckets by source (v4 address, v6 /64): created and updated here only. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DVV_XDP_MAX_SOURCES);
	__type(key, struct dvv_src_key);
	__type(value, struct dvv_src_bucket);
} xdp_sources SEC(".maps");

/* Budget + reserve buckets per protected port (enum dvv_xdp_port_slot): written here only. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DVV_XDP_PORT_SLOTS);
	__type(key, __u32);
	__type(value, struct dvv_port_budget);
} xdp_port_budget SEC(".maps");

/* Allowed prefixes -> hits: filled by userspace (--xdp-allow, or bpftool), hits bumped here. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DVV_XDP_MAX_CIDRS);
	__type(key, struct dvv_lpm_key);
	__type(value, __u64);
} xdp_allow SEC(".maps");

/* Denied prefixes -> hits: filled by userspace (--xdp-deny, or bpftool), hits bumped here. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DVV_XDP_MAX_CIDRS);
	__type(key, struct dvv_lpm_key);
	__type(value, __u64);
} xdp_deny SEC(".maps");

/* Would one more SYN fit in the bucket at `now`? */
static __always_inline bool gcra_fits(__u64 tat, __u64 now, __u64 interval, __u64 tolerance)
{
	__u64 next = (tat > now ? tat : now) + interval;

	return next - now <= tolerance;
}

/* Take one token: advance *tat by one interval if the SYN fits. Exact across CPUs (CAS); a
 * bucket contended CAS_TRIES times in a row is treated as empty. */
static __always_inline bool gcra_take(__u64 *tat_p, __u64 now, __u64 interval, __u64 tolerance)
{
#pragma unroll
	for (int i = 0; i < CAS_TRIES; i++) {
		__u64 tat = *(volatile __u64 *)tat_p;
		__u64 next = (tat > now ? tat : now) + interval;

		if (next - now > tolerance)
			return false;
		if (__sync_val_compare_and_swap(tat_p, tat, next) == tat)
			return true;
	}
	return false;
}

static __always_inline int port_slot(__u16 dport)
{
	if (!dport)
		return -1;
	if (dport == player_port)
		return DVV_XDP_PORT_PLAYER;
	if (dport == agent_port)
		return DVV_XDP_PORT_AGENT;
	return -1;
}

#define VERDICT(cnt, field, action)                                                             \
	({                                                                                     \
		(cnt)->field++;                                                                \
		(action);                                                                      \
	})

static __always_inline __u32 csum_add16(__u32 sum, const void *buf, int words)
{
	const __u16 *w = buf;

#pragma unroll
	for (int i = 0; i < words; i++)
		sum += w[i];
	return sum;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The TCP header of a cookie SYN-ACK: always 40 bytes (options padded), so every offset and
 * the checksum length are constants. */
struct dvv_synack {
	struct tcphdr th;
	__u8 opt[20];
};

/* Answer the SYN at p with a cookie SYN-ACK, rewriting the frame in place (XDP_TX). 0, or -1
 * when this SYN cannot be answered here (IP options, IPv6 extension headers, no tailroom). */
static __always_inline int cookie_answer(struct xdp_md *ctx, const struct dvv_pkt *p, __u64 now)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct dvv_cookie_flow f;
	struct dvv_tcpopt o;
	__u32 seq, ack;
	__u8 obuf[64];

	if (!p->simple || p->l3off > 22)
		return -1;
	if (dvv_flow_of(data, end, p, &f, &seq, &ack))
		return -1;
	__u64 l3 = p->l3off;
	DVV_OPAQUE(l3);
	if (l3 > 22)
		return -1;
	__u64 l4 = l3 + (p->v6 ? 40 : 20);
	struct tcphdr *th = data + l4;
	if ((void *)(th + 1) > end)
		return -1;
	__u32 optlen = th->doff * 4;
	optlen = optlen > 20 ? optlen - 20 : 0;
	if (optlen > DVV_OPT_BYTES)
		optlen = DVV_OPT_BYTES;
	if (optlen && bpf_xdp_load_bytes(ctx, l4 + 20, obuf, optlen))
		optlen = 0;
	dvv_tcpopt_parse(obuf, optlen, &o);
	f.isn = seq;

	__u16 mss;
	__u32 cookie = dvv_cookie_make(&f, &o, now, cookie_key0, cookie_key1, &mss);
	__u16 max_mss = p->v6 ? cookie_max_mss6 : cookie_max_mss4;

	struct dvv_synack sa = {};
	sa.th.source = f.dport;
	sa.th.dest = f.sport;
	sa.th.seq = bpf_htonl(cookie);
	sa.th.ack_seq = bpf_htonl(seq + 1);
	sa.th.doff = sizeof(sa) / 4;
	sa.th.syn = 1;
	sa.th.ack = 1;
	sa.th.window = bpf_htons(64240); /* at most the first window the kernel will compute */
	mss = mss < max_mss ? mss : max_mss;
	sa.opt[0] = TCPOPT_MSS;
	sa.opt[1] = 4;
	sa.opt[2] = mss >> 8;
	sa.opt[3] = mss & 0xff;
	sa.opt[4] = TCPOPT_NOP;
	sa.opt[5] = TCPOPT_NOP;
	sa.opt[6] = TCPOPT_NOP;
	sa.opt[7] = TCPOPT_NOP;
	if (o.wscale != DVV_COOKIE_WSCALE_NONE) { /* offered only when the client offered it */
		sa.opt[5] = TCPOPT_WINDOW;
		sa.opt[6] = 3;
		sa.opt[7] = cookie_wscale;
	}
	sa.opt[8] = TCPOPT_NOP;
	sa.opt[9] = TCPOPT_NOP;
	if (o.sack) {
		sa.opt[8] = TCPOPT_SACK_PERM;
		sa.opt[9] = 2;
	}
	if (o.ts) {
		__u32 tsval = (__u32)(now >> 20); /* any value: the kernel offsets its clock to it */
		sa.opt[10] = TCPOPT_TIMESTAMP;
		sa.opt[11] = 10;
		__be32 v = bpf_htonl(tsval), e = bpf_htonl(o.tsval);
		__builtin_memcpy(&sa.opt[12], &v, 4);
		__builtin_memcpy(&sa.opt[16], &e, 4);
	} else {
		sa.opt[10] = TCPOPT_NOP;
		sa.opt[11] = TCPOPT_NOP;
	}

	/* Checksum over the pseudo-header (addresses swapped: we are the source now). */
	__u32 sum = bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(sa));
	if (p->v6)
		sum = csum_add16(csum_add16(sum, f.daddr, 8), f.saddr, 8);
	else
		sum = csum_add16(csum_add16(sum, f.daddr, 2), f.saddr, 2);
	sa.th.check = csum_fold(csum_add16(sum, &sa, sizeof(sa) / 2));

	/* The Ethernet header and VLAN tags, kept aside: when the frame has no tailroom, it grows
	 * at the front instead and every header is written anew at its new place. */
	__u8 l2[22];
	if (data + 14 > end)
		return -1;
	__builtin_memcpy(l2, data, 14);
	if (l3 >= 18) {
		if (data + 18 > end)
			return -1;
		__builtin_memcpy(&l2[14], data + 14, 4);
	}
	if (l3 >= 22) {
		if (data + 22 > end)
			return -1;
		__builtin_memcpy(&l2[18], data + 18, 4);
	}
	int delta = (int)(l4 + sizeof(sa)) - (int)(end - data);
	if (delta > 0) {
		if (bpf_xdp_adjust_tail(ctx, delta) && bpf_xdp_adjust_head(ctx, -delta))
			return -1;
	} else if (delta < 0 && bpf_xdp_adjust_tail(ctx, delta)) {
		return -1;
	}
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	DVV_OPAQUE(l3);
	if (l3 > 22)
		return -1;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	__builtin_memcpy(eth->h_dest, &l2[6], 6);
	__builtin_memcpy(eth->h_source, &l2[0], 6);
	__builtin_memcpy(&eth->h_proto, &l2[12], 2);
	if (l3 >= 18) {
		if (data + 18 > end)
			return -1;
		__builtin_memcpy(data + 14, &l2[14], 4);
	}
	if (l3 >= 22) {
		if (data + 22 > end)
			return -1;
		__builtin_memcpy(data + 18, &l2[18], 4);
	}
	if (p->v6) {
		struct ipv6hdr *ip6 = data + l3;
		if ((void *)(ip6 + 1) + sizeof(sa) > end)
			return -1;
		*(__be32 *)ip6 = bpf_htonl(0x60000000);
		ip6->payload_len = bpf_htons(sizeof(sa));
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = 64;
		__builtin_memcpy(&ip6->saddr, f.daddr, 16);
		__builtin_memcpy(&ip6->daddr, f.saddr, 16);
		__builtin_memcpy((void *)(ip6 + 1), &sa, sizeof(sa));
	} else {
		struct iphdr *ip = data + l3;
		if ((void *)(ip + 1) + sizeof(sa) > end)
			return -1;
		struct iphdr nip = {
			.ihl = 5,
			.version = 4,
			.tot_len = bpf_htons(sizeof(nip) + sizeof(sa)),
			.frag_off = bpf_htons(0x4000), /* DF */
			.ttl = 64,
			.protocol = IPPROTO_TCP,
			.saddr = f.daddr[0],
			.daddr = f.saddr[0],
		};
		nip.check = csum_fold(csum_add16(0, &nip, sizeof(nip) / 2));
		__builtin_memcpy(ip, &nip, sizeof(nip));
		__builtin_memcpy((void *)(ip + 1), &sa, sizeof(sa));
	}
	return 0;
}

static __always_inline void know_source(const struct dvv_pkt *p, __u64 now)
{
	struct dvv_src_key skey;
	__builtin_memcpy(skey.addr, p->key.addr, 16);
	if (p->v6)
		__builtin_memset(&skey.addr[DVV_XDP_V6_SOURCE_PREFIX / 8], 0,
				 16 - DVV_XDP_V6_SOURCE_PREFIX / 8);
	struct dvv_src_bucket nb = {.tat_ns = now};
	bpf_map_update_elem(&xdp_sources, &skey, &nb, BPF_NOEXIST);
}

/* An ACK or RST (no SYN) to a protected port, with SYN cookies on. Segments of existing
 * connections (established, half-open, closing) pass; to a listener only a valid cookie ACK
 * passes, so a flood of ACKs or RSTs with made-up numbers ends here. */
static __always_inline int ack_filter(struct xdp_md *ctx, const struct dvv_pkt *p,
				      struct dvv_xdp_counters *cnt)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct dvv_cookie_flow f;
	struct bpf_sock_tuple t = {};
	__u32 seq, ack, tlen;

	if (dvv_flow_of(data, end, p, &f, &seq, &ack))
		return VERDICT(cnt, pass_short, XDP_PASS);
	tlen = dvv_tuple_of(&f, &t);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &t, tlen, BPF_F_CURRENT_NETNS, 0);
	if (!sk) /* nothing listens: the kernel answers an ACK with RST; a RST needs no answer */
		return p->flags & TCP_FLAG_RST ? VERDICT(cnt, drop_ack, XDP_DROP)
					       : VERDICT(cnt, pass_other, XDP_PASS);
	__u32 state = sk->state;
	bpf_sk_release(sk);
	if (state != BPF_TCP_LISTEN)
		return VERDICT(cnt, pass_other, XDP_PASS);
	if (p->flags & TCP_FLAG_RST)
		return VERDICT(cnt, drop_ack, XDP_DROP);

	__u64 now = bpf_ktime_get_ns();
	__u16 mss;
	__u8 ws, sack;
	f.isn = seq - 1;
	if (!dvv_cookie_check(&f, ack - 1, now, cookie_key0, cookie_key1, &mss, &ws, &sack)) {
		know_source(p, now); /* it answered: a real address, limited from now on */
		return VERDICT(cnt, pass_cookie, XDP_PASS);
	}
	/* The kernel may have sent cookies of its own (its listen queue overflowed). */
	__u64 l3 = p->l3off, l4 = p->l4off;
	DVV_OPAQUE(l3);
	DVV_OPAQUE(l4);
	if (l3 > 64 || l4 > DVV_PKT_MAX_L4OFF)
		return VERDICT(cnt, drop_ack, XDP_DROP);
	struct tcphdr *th = data + l4;
	if ((void *)(th + 1) > end)
		return VERDICT(cnt, drop_ack, XDP_DROP);
	if (f.v6) {
		struct ipv6hdr *ip6 = data + l3;
		if ((void *)(ip6 + 1) <= end && !bpf_tcp_raw_check_syncookie_ipv6(ip6, th))
			return VERDICT(cnt, pass_kernel_cookie, XDP_PASS);
	} else {
		struct iphdr *ip = data + l3;
		if ((void *)(ip + 1) <= end && !bpf_tcp_raw_check_syncookie_ipv4(ip, th))
			return VERDICT(cnt, pass_kernel_cookie, XDP_PASS);
	}
	return VERDICT(cnt, drop_ack, XDP_DROP);
}

/* The SYN could not be let through: answer it with a cookie, or drop it when cookies are off
 * or this SYN cannot be answered here. */
static __always_inline int over_budget(struct xdp_md *ctx, const struct dvv_pkt *p,
				       struct dvv_xdp_counters *cnt, __u64 now)
{
	if (syncookie_mode != DVV_SYNCOOKIES_OFF && !cookie_answer(ctx, p, now))
		return VERDICT(cnt, tx_cookie, XDP_TX);
	return VERDICT(cnt, drop_budget, XDP_DROP);
}

SEC("xdp")
int xdp_syn_guard(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct dvv_xdp_counters *cnt = bpf_map_lookup_elem(&xdp_counters, &zero);
	struct dvv_pkt p = {};
	__u64 *hits;

	if (!cnt) /* cannot happen: a one-entry array */
		return XDP_PASS;

	int r = dvv_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &p);
	if (r == PARSED_SHORT)
		return VERDICT(cnt, pass_short, XDP_PASS);
	if (r != PARSED_TCP)
		return VERDICT(cnt, pass_other, XDP_PASS);
	__u32 slot = port_slot(p.dport);
	if (slot >= DVV_XDP_PORT_SLOTS)
		return VERDICT(cnt, pass_other, XDP_PASS);
	if ((p.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) != TCP_FLAG_SYN) {
		if (syncookie_mode != DVV_SYNCOOKIES_OFF && !(p.flags & TCP_FLAG_SYN) &&
		    (p.flags & (TCP_FLAG_ACK | TCP_FLAG_RST)))
			return ack_filter(ctx, &p, cnt);
		return VERDICT(cnt, pass_other, XDP_PASS);
	}

	if ((hits = bpf_map_lookup_elem(&xdp_deny, &p.key))) {
		cnt->drop_deny++;
		__sync_fetch_and_add(hits, 1);
		return XDP_DROP;
	}
	if ((hits = bpf_map_lookup_elem(&xdp_allow, &p.key))) {
		cnt->pass_allow++;
		__sync_fetch_and_add(hits, 1);
		return XDP_PASS;
	}

	struct dvv_port_budget *budget = bpf_map_lookup_elem(&xdp_port_budget, &slot);
	if (!budget) /* cannot happen: slot < DVV_XDP_PORT_SLOTS */
		return VERDICT(cnt, pass_other, XDP_PASS);

	struct dvv_src_key skey;
	__builtin_memcpy(skey.addr, p.key.addr, 16);
	if (p.v6)
		__builtin_memset(&skey.addr[DVV_XDP_V6_SOURCE_PREFIX / 8], 0,
				 16 - DVV_XDP_V6_SOURCE_PREFIX / 8);

	__u64 now = bpf_ktime_get_ns();
	struct dvv_src_bucket *b = bpf_map_lookup_elem(&xdp_sources, &skey);
	bool always = syncookie_mode == DVV_SYNCOOKIES_ALWAYS;

	if (!b) {
		/* New source. With cookies it costs no state until its ACK proves the address;
		 * without, only the budget stands between it and a full bucket. */
		if (always || !gcra_take(&budget->tat_ns, now, port_interval_ns, port_tolerance_ns))
			return over_budget(ctx, &p, cnt, now);
		struct dvv_src_bucket nb = {.tat_ns = now + src_interval_ns};
		bpf_map_update_elem(&xdp_sources, &skey, &nb, BPF_NOEXIST);
		return VERDICT(cnt, pass_syn, XDP_PASS);
	}

	if (!gcra_fits(*(volatile __u64 *)&b->tat_ns, now, src_interval_ns, src_tolerance_ns)) {
		__sync_fetch_and_add(&b->drops, 1);
		return VERDICT(cnt, drop_rate, XDP_DROP);
	}
	if (always) {
		if (!gcra_take(&b->tat_ns, now, src_interval_ns, src_tolerance_ns)) {
			__sync_fetch_and_add(&b->drops, 1);
			return VERDICT(cnt, drop_rate, XDP_DROP);
		}
		return over_budget(ctx, &p, cnt, now);
	}
	bool reserve = false;
	if (!gcra_take(&budget->tat_ns, now, port_interval_ns, port_tolerance_ns)) {
		if (!gcra_take(&budget->reserve_tat_ns, now, port_interval_ns, port_tolerance_ns))
			return over_budget(ctx, &p, cnt, now);
		reserve = true;
	}
	if (!gcra_take(&b->tat_ns, now, src_interval_ns, src_tolerance_ns)) {
		/* another CPU took this source's last token in between */
		__sync_fetch_and_add(&b->drops, 1);
		return VERDICT(cnt, drop_rate, XDP_DROP);
	}
	if (reserve)
		cnt->pass_reserve++;
	return VERDICT(cnt, pass_syn, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
