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

#include "xdp_guard.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IPPROTO_HOPOPTS 0
#define IPPROTO_TCP 6
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_AH 51
#define IPPROTO_DSTOPTS 60
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

#ifndef DVV_XDP_MAX_VLANS
#define DVV_XDP_MAX_VLANS 2 /* 802.1Q, and 802.1ad outer + 802.1Q inner */
#endif
#ifndef DVV_XDP_MAX_V6_EXT
#define DVV_XDP_MAX_V6_EXT 6 /* IPv6 extension headers walked before giving up (pass) */
#endif
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

enum dvv_parse_result {
	PARSED_SYN,  /* a TCP SYN: src and dport are filled */
	PARSED_OTHER, /* something else: pass */
	PARSED_SHORT, /* headers cut short or malformed: pass */
};

struct dvv_hdr_cursor {
	void *pos;
	void *end;
};

struct dvv_vlan_tag {
	__be16 tci;
	__be16 proto;
};

static __always_inline int parse_tcp(struct dvv_hdr_cursor *c, __u16 *dport)
{
	struct tcphdr *th = c->pos;

	if ((void *)(th + 1) > c->end)
		return PARSED_SHORT;
	__u8 flags = ((__u8 *)th)[13];
	if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return PARSED_OTHER;
	*dport = bpf_ntohs(th->dest);
	return PARSED_SYN;
}

static __always_inline int parse_ipv4(struct dvv_hdr_cursor *c, struct dvv_lpm_key *src,
				      __u16 *dport)
{
	struct iphdr *ip = c->pos;

	if ((void *)(ip + 1) > c->end)
		return PARSED_SHORT;
	__u32 hlen = ip->ihl * 4;
	if (hlen < sizeof(*ip))
		return PARSED_SHORT;
	if (c->pos + hlen > c->end)
		return PARSED_SHORT;
	if (ip->protocol != IPPROTO_TCP)
		return PARSED_OTHER;
	if (ip->frag_off & bpf_htons(0x1FFF)) /* a later fragment: no TCP header here */
		return PARSED_OTHER;
	__builtin_memset(src->addr, 0, 10);
	src->addr[10] = 0xff;
	src->addr[11] = 0xff;
	__builtin_memcpy(&src->addr[12], &ip->saddr, 4);
	c->pos += hlen;
	return parse_tcp(c, dport);
}

static __always_inline int parse_ipv6(struct dvv_hdr_cursor *c, struct dvv_lpm_key *src,
				      __u16 *dport)
{
	struct ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > c->end)
		return PARSED_SHORT;
	__builtin_memcpy(src->addr, &ip6->saddr, 16);
	__u8 next = ip6->nexthdr;
	c->pos = ip6 + 1;

#pragma unroll
	for (int i = 0; i < DVV_XDP_MAX_V6_EXT; i++) {
		struct ipv6_opt_hdr *opt = c->pos;
		struct frag_hdr *frag = c->pos;

		switch (next) {
		case IPPROTO_TCP:
			return parse_tcp(c, dport);
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if ((void *)(opt + 1) > c->end)
				return PARSED_SHORT;
			next = opt->nexthdr;
			c->pos += (opt->hdrlen + 1) * 8;
			break;
		case IPPROTO_AH:
			if ((void *)(opt + 1) > c->end)
				return PARSED_SHORT;
			next = opt->nexthdr;
			c->pos += (opt->hdrlen + 2) * 4;
			break;
		case IPPROTO_FRAGMENT:
			if ((void *)(frag + 1) > c->end)
				return PARSED_SHORT;
			if (frag->frag_off & bpf_htons(0xFFF8)) /* not the first fragment */
				return PARSED_OTHER;
			next = frag->nexthdr;
			c->pos = frag + 1;
			break;
		default:
			return PARSED_OTHER;
		}
	}
	return next == IPPROTO_TCP ? parse_tcp(c, dport) : PARSED_OTHER;
}

static __always_inline int parse(struct xdp_md *ctx, struct dvv_lpm_key *src, __u16 *dport,
				 bool *v6)
{
	struct dvv_hdr_cursor c = {.pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end};
	struct ethhdr *eth = c.pos;

	if ((void *)(eth + 1) > c.end)
		return PARSED_SHORT;
	__be16 proto = eth->h_proto;
	c.pos = eth + 1;

#pragma unroll
	for (int i = 0; i < DVV_XDP_MAX_VLANS; i++) {
		struct dvv_vlan_tag *vh = c.pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > c.end)
			return PARSED_SHORT;
		proto = vh->proto;
		c.pos = vh + 1;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(&c, src, dport);
	if (proto == bpf_htons(ETH_P_IPV6)) {
		*v6 = true;
		return parse_ipv6(&c, src, dport);
	}
	return PARSED_OTHER;
}

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

SEC("xdp")
int xdp_syn_guard(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct dvv_xdp_counters *cnt = bpf_map_lookup_elem(&xdp_counters, &zero);
	struct dvv_lpm_key key = {.prefixlen = 128};
	__u16 dport = 0;
	bool v6 = false;
	__u64 *hits;

	if (!cnt) /* cannot happen: a one-entry array */
		return XDP_PASS;

	int r = parse(ctx, &key, &dport, &v6);
	if (r == PARSED_SHORT)
		return VERDICT(cnt, pass_short, XDP_PASS);
	if (r != PARSED_SYN)
		return VERDICT(cnt, pass_other, XDP_PASS);
	__u32 slot = port_slot(dport);
	if (slot >= DVV_XDP_PORT_SLOTS)
		return VERDICT(cnt, pass_other, XDP_PASS);

	if ((hits = bpf_map_lookup_elem(&xdp_deny, &key))) {
		cnt->drop_deny++;
		__sync_fetch_and_add(hits, 1);
		return XDP_DROP;
	}
	if ((hits = bpf_map_lookup_elem(&xdp_allow, &key))) {
		cnt->pass_allow++;
		__sync_fetch_and_add(hits, 1);
		return XDP_PASS;
	}

	struct dvv_port_budget *budget = bpf_map_lookup_elem(&xdp_port_budget, &slot);
	if (!budget) /* cannot happen: slot < DVV_XDP_PORT_SLOTS */
		return VERDICT(cnt, pass_other, XDP_PASS);

	struct dvv_src_key skey;
	__builtin_memcpy(skey.addr, key.addr, 16);
	if (v6)
		__builtin_memset(&skey.addr[DVV_XDP_V6_SOURCE_PREFIX / 8], 0,
				 16 - DVV_XDP_V6_SOURCE_PREFIX / 8);

	__u64 now = bpf_ktime_get_ns();
	struct dvv_src_bucket *b = bpf_map_lookup_elem(&xdp_sources, &skey);

	if (!b) {
		/* New source: only the budget stands between it and a full bucket. */
		if (!gcra_take(&budget->tat_ns, now, port_interval_ns, port_tolerance_ns))
			return VERDICT(cnt, drop_budget, XDP_DROP);
		struct dvv_src_bucket nb = {.tat_ns = now + src_interval_ns};
		bpf_map_update_elem(&xdp_sources, &skey, &nb, BPF_NOEXIST);
		return VERDICT(cnt, pass_syn, XDP_PASS);
	}

	if (!gcra_fits(*(volatile __u64 *)&b->tat_ns, now, src_interval_ns, src_tolerance_ns)) {
		__sync_fetch_and_add(&b->drops, 1);
		return VERDICT(cnt, drop_rate, XDP_DROP);
	}
	bool reserve = false;
	if (!gcra_take(&budget->tat_ns, now, port_interval_ns, port_tolerance_ns)) {
		if (!gcra_take(&budget->reserve_tat_ns, now, port_interval_ns, port_tolerance_ns))
			return VERDICT(cnt, drop_budget, XDP_DROP);
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
