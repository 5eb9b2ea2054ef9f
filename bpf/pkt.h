/* Header walk shared by the XDP guard and the TC cookie program: Ethernet (up to two VLAN tags),
 * IPv4 or IPv6 (extension headers walked), TCP. Works on any [data, end) packet range, so XDP
 * (xdp_md) and TC (__sk_buff) call the same code. BPF-only header. */
#ifndef DVV_BPF_PKT_H
#define DVV_BPF_PKT_H

#include "syncookie.h"
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
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#ifndef DVV_XDP_MAX_VLANS
#define DVV_XDP_MAX_VLANS 2 /* 802.1Q, and 802.1ad outer + 802.1Q inner */
#endif
#ifndef DVV_XDP_MAX_V6_EXT
#define DVV_XDP_MAX_V6_EXT 6 /* IPv6 extension headers walked before giving up (pass) */
#endif
#define DVV_PKT_MAX_L4OFF 512 /* offsets are bounded for the verifier; deeper headers pass */

/* Hide a value from the compiler so a bounds check on it survives: offsets come from pointer
 * differences, which the verifier cannot bound, and clang would otherwise drop a check it can
 * prove from an earlier one. */
#define DVV_OPAQUE(x) asm volatile("" : "+r"(x))

enum dvv_parse_result {
	PARSED_TCP,   /* a TCP segment: every field of struct dvv_pkt is filled */
	PARSED_OTHER, /* something else: pass */
	PARSED_SHORT, /* headers cut short or malformed: pass */
};

struct dvv_pkt {
	struct dvv_lpm_key key; /* source, v4-mapped for IPv4; prefixlen 128 */
	__u32 l3off;		/* bytes from the start of the frame to the IP header */
	__u32 l4off;		/* ... to the TCP header */
	__u16 dport;		/* host order */
	__u8 flags;		/* TCP flags byte (FIN SYN RST PSH ACK URG ECE CWR) */
	__u8 v6;
	__u8 simple; /* IPv4 without options or IPv6 without extension headers */
};

struct dvv_hdr_cursor {
	void *pos;
	void *end;
};

struct dvv_vlan_tag {
	__be16 tci;
	__be16 proto;
};

static __always_inline int dvv_parse_tcp(struct dvv_hdr_cursor *c, void *data, struct dvv_pkt *p)
{
	struct tcphdr *th = c->pos;

	if ((void *)(th + 1) > c->end)
		return PARSED_SHORT;
	p->flags = ((__u8 *)th)[13];
	p->dport = bpf_ntohs(th->dest);
	p->l4off = (__u32)((void *)th - data);
	if (p->l4off > DVV_PKT_MAX_L4OFF)
		return PARSED_OTHER;
	return PARSED_TCP;
}

static __always_inline int dvv_parse_ipv4(struct dvv_hdr_cursor *c, void *data, struct dvv_pkt *p)
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
	__builtin_memset(p->key.addr, 0, 10);
	p->key.addr[10] = 0xff;
	p->key.addr[11] = 0xff;
	__builtin_memcpy(&p->key.addr[12], &ip->saddr, 4);
	p->simple = hlen == sizeof(*ip) && !(ip->frag_off & bpf_htons(0x2000));
	c->pos += hlen;
	return dvv_parse_tcp(c, data, p);
}

static __always_inline int dvv_parse_ipv6(struct dvv_hdr_cursor *c, void *data, struct dvv_pkt *p)
{
	struct ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > c->end)
		return PARSED_SHORT;
	__builtin_memcpy(p->key.addr, &ip6->saddr, 16);
	__u8 next = ip6->nexthdr;
	c->pos = ip6 + 1;
	p->v6 = 1;
	p->simple = next == IPPROTO_TCP;

#pragma unroll
	for (int i = 0; i < DVV_XDP_MAX_V6_EXT; i++) {
		struct ipv6_opt_hdr *opt = c->pos;
		struct frag_hdr *frag = c->pos;

		switch (next) {
		case IPPROTO_TCP:
			return dvv_parse_tcp(c, data, p);
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
	return next == IPPROTO_TCP ? dvv_parse_tcp(c, data, p) : PARSED_OTHER;
}

static __always_inline int dvv_parse(void *data, void *end, struct dvv_pkt *p)
{
	struct dvv_hdr_cursor c = {.pos = data, .end = end};
	struct ethhdr *eth = c.pos;

	p->key.prefixlen = 128;
	p->v6 = 0;
	p->simple = 0;
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
	p->l3off = (__u32)(c.pos - data);
	if (proto == bpf_htons(ETH_P_IP))
		return dvv_parse_ipv4(&c, data, p);
	if (proto == bpf_htons(ETH_P_IPV6))
		return dvv_parse_ipv6(&c, data, p);
	return PARSED_OTHER;
}

/* The flow a client's segment belongs to, from its headers (p: a PARSED_TCP result). 0 or -1. */
static __always_inline int dvv_flow_of(void *data, void *end, const struct dvv_pkt *p,
				       struct dvv_cookie_flow *f, __u32 *seq, __u32 *ack)
{
	__u64 l3 = p->l3off, l4 = p->l4off;

	DVV_OPAQUE(l3);
	DVV_OPAQUE(l4);
	if (l3 > 64 || l4 > DVV_PKT_MAX_L4OFF)
		return -1;
	struct tcphdr *th = data + l4;
	if ((void *)(th + 1) > end)
		return -1;
	__builtin_memset(f, 0, sizeof(*f));
	if (p->v6) {
		struct ipv6hdr *ip6 = data + l3;
		if ((void *)(ip6 + 1) > end)
			return -1;
		__builtin_memcpy(f->saddr, &ip6->saddr, 16);
		__builtin_memcpy(f->daddr, &ip6->daddr, 16);
		f->v6 = 1;
	} else {
		struct iphdr *ip = data + l3;
		if ((void *)(ip + 1) > end)
			return -1;
		f->saddr[0] = ip->saddr;
		f->daddr[0] = ip->daddr;
	}
	f->sport = th->source;
	f->dport = th->dest;
	*seq = bpf_ntohl(th->seq);
	*ack = bpf_ntohl(th->ack_seq);
	return 0;
}

/* The socket-lookup tuple of flow f; returns its size for bpf_skc_lookup_tcp. */
static __always_inline __u32 dvv_tuple_of(const struct dvv_cookie_flow *f, struct bpf_sock_tuple *t)
{
	if (f->v6) {
		__builtin_memcpy(t->ipv6.saddr, f->saddr, 16);
		__builtin_memcpy(t->ipv6.daddr, f->daddr, 16);
		t->ipv6.sport = f->sport;
		t->ipv6.dport = f->dport;
		return sizeof(t->ipv6);
	}
	t->ipv4.saddr = f->saddr[0];
	t->ipv4.daddr = f->daddr[0];
	t->ipv4.sport = f->sport;
	t->ipv4.dport = f->dport;
	return sizeof(t->ipv4);
}

#endif
