/* SYN cookies shared by the XDP guard (bpf/xdp_guard.bpf.c: answers SYNs, drops ACKs without a
 * valid cookie) and the TC-ingress program (bpf/xdp_cookie_tc.bpf.c: turns a valid cookie ACK
 * into a request socket the kernel accepts). BPF-only header; docs/xdp.md explains the design.
 *
 * A cookie is the 32-bit initial sequence number of our SYN-ACK:
 *
 *   | 31 ........ 8 | 7 6 |  5   |  4  | 3 2 1 0 |
 *   |    hash 24    | MSS | SACK |  0  | WScale  |     (WScale 15: the SYN had no window scale)
 *
 * hash = SipHash-2-4(secret; addresses, ports, the client's ISN, a time step, the low 8 bits)
 * cut to its low 24 bits. The time step is 2^36 ns (68.7 s) of CLOCK_MONOTONIC; an ACK is valid
 * for the step its cookie was made in and the one after, so a cookie lives 69 to 137 s. The
 * secret is drawn by the loader from getrandom() at every start and lives only in the programs'
 * read-only data. Whether the SYN carried timestamps is not in the cookie: a client that sent
 * them in its SYN gets them echoed and sends them in its ACK, so the ACK itself says so. */
#ifndef DVV_BPF_SYNCOOKIE_H
#define DVV_BPF_SYNCOOKIE_H

#define DVV_COOKIE_WSCALE_NONE 0xf
#define DVV_COOKIE_SACK 0x20
#define DVV_COOKIE_RESERVED 0x10
#define DVV_COOKIE_MSS_SHIFT 6
#define DVV_COOKIE_STEP_SHIFT 36

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOPT_WINDOW 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_TIMESTAMP 8

/* MSS values a cookie can carry (2 bits); a SYN's MSS is rounded down to one of them. A switch,
 * not a table: static const arrays end up in .rodata in a form this clang's BTF gets wrong. */
static __always_inline __u16 dvv_cookie_mss(int v6, __u32 idx)
{
	switch (idx & 3) {
	case 0:
		return v6 ? 1220 : 536;
	case 1:
		return v6 ? 1340 : 1300;
	case 2:
		return v6 ? 1420 : 1440;
	default:
		return v6 ? 1440 : 1460;
	}
}

/* The TCP options of a SYN or of the ACK that completes a cookie handshake. */
struct dvv_tcpopt {
	__u16 mss;   /* 0: none */
	__u8 wscale; /* DVV_COOKIE_WSCALE_NONE: none */
	__u8 sack;
	__u8 ts;
	__u32 tsval;
	__u32 tsecr;
};

#define DVV_OPT_BYTES 40
#define DVV_OPT_ITEMS 12 /* options looked at; later ones are ignored (features lost, not safety) */

/* Parses up to `len` (<= 40) option bytes copied to buf. Unknown options are skipped. */
static __always_inline void dvv_tcpopt_parse(const __u8 *buf, __u32 len, struct dvv_tcpopt *o)
{
	__u32 i = 0;

	o->mss = 0;
	o->wscale = DVV_COOKIE_WSCALE_NONE;
	o->sack = o->ts = 0;
	o->tsval = o->tsecr = 0;
	if (len > DVV_OPT_BYTES)
		len = DVV_OPT_BYTES;
#pragma unroll
	for (int n = 0; n < DVV_OPT_ITEMS; n++) {
		if (i >= len || i >= DVV_OPT_BYTES)
			break;
		__u8 kind = buf[i & 63];
		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP) {
			i++;
			continue;
		}
		if (i + 1 >= len)
			break;
		__u8 olen = buf[(i + 1) & 63];
		if (olen < 2 || i + olen > len)
			break;
		if (kind == TCPOPT_MSS && olen == 4)
			o->mss = (__u16)(buf[(i + 2) & 63] << 8 | buf[(i + 3) & 63]);
		else if (kind == TCPOPT_WINDOW && olen == 3)
			o->wscale = buf[(i + 2) & 63] > 14 ? 14 : buf[(i + 2) & 63];
		else if (kind == TCPOPT_SACK_PERM && olen == 2)
			o->sack = 1;
		else if (kind == TCPOPT_TIMESTAMP && olen == 10) {
			o->ts = 1;
			o->tsval = (__u32)buf[(i + 2) & 63] << 24 | (__u32)buf[(i + 3) & 63] << 16 |
				   (__u32)buf[(i + 4) & 63] << 8 | buf[(i + 5) & 63];
			o->tsecr = (__u32)buf[(i + 6) & 63] << 24 | (__u32)buf[(i + 7) & 63] << 16 |
				   (__u32)buf[(i + 8) & 63] << 8 | buf[(i + 9) & 63];
		}
		i += olen;
	}
}

#define DVV_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define DVV_SIPROUND                                                                             \
	do {                                                                                     \
		v0 += v1;                                                                        \
		v1 = DVV_ROTL(v1, 13);                                                           \
		v1 ^= v0;                                                                        \
		v0 = DVV_ROTL(v0, 32);                                                           \
		v2 += v3;                                                                        \
		v3 = DVV_ROTL(v3, 16);                                                           \
		v3 ^= v2;                                                                        \
		v0 += v3;                                                                        \
		v3 = DVV_ROTL(v3, 21);                                                           \
		v3 ^= v0;                                                                        \
		v2 += v1;                                                                        \
		v1 = DVV_ROTL(v1, 17);                                                           \
		v1 ^= v2;                                                                        \
		v2 = DVV_ROTL(v2, 32);                                                           \
	} while (0)

/* SipHash-2-4 of n 64-bit words (n <= 5, a compile-time constant at every call). */
static __always_inline __u64 dvv_siphash(const __u64 *m, int n, __u64 k0, __u64 k1)
{
	__u64 v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
	__u64 v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;

#pragma unroll
	for (int i = 0; i < 5; i++) {
		if (i >= n)
			break;
		v3 ^= m[i];
		DVV_SIPROUND;
		DVV_SIPROUND;
		v0 ^= m[i];
	}
	__u64 b = (__u64)(n * 8) << 56;
	v3 ^= b;
	DVV_SIPROUND;
	DVV_SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	DVV_SIPROUND;
	DVV_SIPROUND;
	DVV_SIPROUND;
	DVV_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* The connection a cookie belongs to, as seen in the client's packets (network byte order). */
struct dvv_cookie_flow {
	__u32 saddr[4], daddr[4]; /* IPv4: [0] only */
	__u16 sport, dport;
	__u32 isn; /* the client's initial sequence number (host order) */
	__u8 v6;
};

static __always_inline __u32 dvv_cookie_hash(const struct dvv_cookie_flow *f, __u64 step,
					     __u32 low8, __u64 k0, __u64 k1)
{
	__u64 m[5];
	__u64 ports = (__u64)f->isn << 32 | (__u32)f->sport << 16 | f->dport;
	__u64 tail = step << 8 | low8;

	if (!f->v6) {
		m[0] = (__u64)f->saddr[0] << 32 | f->daddr[0];
		m[1] = ports;
		m[2] = tail;
		return (__u32)dvv_siphash(m, 3, k0, k1);
	}
	m[0] = (__u64)f->saddr[0] << 32 | f->saddr[1];
	m[1] = (__u64)f->saddr[2] << 32 | f->saddr[3];
	m[2] = ((__u64)f->daddr[0] << 32 | f->daddr[1]) ^ ((__u64)f->daddr[2] << 32 | f->daddr[3]);
	m[3] = ports;
	m[4] = tail;
	return (__u32)dvv_siphash(m, 5, k0, k1);
}

/* The cookie for a SYN with options o; *mss_out is the MSS the cookie stands for. */
static __always_inline __u32 dvv_cookie_make(const struct dvv_cookie_flow *f,
					     const struct dvv_tcpopt *o, __u64 now_ns, __u64 k0,
					     __u64 k1, __u16 *mss_out)
{
	__u16 mss = o->mss ? o->mss : dvv_cookie_mss(f->v6, 0);
	__u32 idx = 0;

	if (mss >= dvv_cookie_mss(f->v6, 3))
		idx = 3;
	else if (mss >= dvv_cookie_mss(f->v6, 2))
		idx = 2;
	else if (mss >= dvv_cookie_mss(f->v6, 1))
		idx = 1;
	*mss_out = dvv_cookie_mss(f->v6, idx);
	__u32 low8 = idx << DVV_COOKIE_MSS_SHIFT | (o->sack ? DVV_COOKIE_SACK : 0) |
		     (o->wscale & DVV_COOKIE_WSCALE_NONE);
	__u32 h = dvv_cookie_hash(f, now_ns >> DVV_COOKIE_STEP_SHIFT, low8, k0, k1);
	return (h & ~0xffU) | low8;
}

/* 0 and the options the cookie carries (mss, wscale, sack) if `cookie` (the ACK's ack_seq - 1)
 * is valid for f now, -1 otherwise. */
static __always_inline int dvv_cookie_check(const struct dvv_cookie_flow *f, __u32 cookie,
					    __u64 now_ns, __u64 k0, __u64 k1, __u16 *mss,
					    __u8 *wscale, __u8 *sack)
{
	__u32 low8 = cookie & 0xff;
	__u64 step = now_ns >> DVV_COOKIE_STEP_SHIFT;

	if (low8 & DVV_COOKIE_RESERVED)
		return -1;
	if ((dvv_cookie_hash(f, step, low8, k0, k1) & ~0xffU) != (cookie & ~0xffU) &&
	    (dvv_cookie_hash(f, step - 1, low8, k0, k1) & ~0xffU) != (cookie & ~0xffU))
		return -1;
	__u32 idx = (low8 >> DVV_COOKIE_MSS_SHIFT) & 3;
	*mss = dvv_cookie_mss(f->v6, idx);
	*wscale = low8 & DVV_COOKIE_WSCALE_NONE;
	*sack = !!(low8 & DVV_COOKIE_SACK);
	return 0;
}

#endif
