/* XDP SYN guard: types and constants shared by the BPF program (bpf/xdp_guard.bpf.c) and its
 * loader (userspace/xdp_guard.c). Every type is prefixed dvv_ (vmlinux.h already has a
 * `struct bucket`). Map names are the pin names under <bpf_pin_root>/<instance_id>/. */
#ifndef DVV_BPF_XDP_GUARD_H
#define DVV_BPF_XDP_GUARD_H

#ifndef __bpf__ /* userspace only: BPF programs get the __u types from vmlinux.h */
#include <linux/types.h>
#endif

/* Compile-time map sizes, overridable with -D. */
#ifndef DVV_XDP_MAX_SOURCES
#define DVV_XDP_MAX_SOURCES 65536 /* per-source buckets (LRU: the least recent is evicted) */
#endif
#ifndef DVV_XDP_MAX_CIDRS
#define DVV_XDP_MAX_CIDRS 1024 /* prefixes per list (allow, deny) */
#endif
#ifndef DVV_XDP_V6_SOURCE_PREFIX
#define DVV_XDP_V6_SOURCE_PREFIX 64 /* IPv6 sources bucketed per /64 (a multiple of 8) */
#endif

/* Indexes of the protected ports in xdp_port_budget. */
enum dvv_xdp_port_slot {
	DVV_XDP_PORT_PLAYER = 0,
	DVV_XDP_PORT_AGENT = 1,
	DVV_XDP_PORT_SLOTS = 2,
};

/* One per-CPU entry; every packet bumps exactly one verdict field (all but pass_reserve), so
 * their sum is the number of packets the program saw. Sum over CPUs to read
 * (xdp_guard_counters). */
struct dvv_xdp_counters {
	__u64 pass_other;  /* not a SYN to a protected port: other traffic, ACKs, UDP, ports */
	__u64 pass_short;  /* headers cut short or unparseable: left to the kernel to judge */
	__u64 drop_deny;   /* SYN from a denied prefix */
	__u64 pass_allow;  /* SYN from an allowed prefix, never limited */
	__u64 drop_rate;   /* SYN from a source over its own rate */
	__u64 drop_budget; /* SYN over the per-port budget (a new source, or the reserve is gone) */
	__u64 pass_syn;	   /* SYN let through by the limits */
	__u64 pass_reserve; /* of pass_syn: known sources let through on the reserve (not a verdict) */
	__u64 tx_cookie;    /* SYN answered here with a SYN cookie SYN-ACK (XDP_TX) */
	__u64 pass_cookie;  /* ACK to a listener with a valid cookie: passed to become a connection */
	__u64 pass_kernel_cookie; /* ACK to a listener with the kernel's own SYN cookie */
	__u64 drop_ack;	    /* ACK or RST to a listener, or RST to no socket, without a valid cookie */
};

/* The TC-ingress half of SYN cookies (bpf/xdp_cookie_tc.bpf.c), one per-CPU entry. */
struct dvv_cookie_tc_counters {
	__u64 assigned;	     /* cookie ACK turned into a request socket the kernel accepts */
	__u64 assign_failed; /* bpf_sk_assign_tcp_reqsk refused (the kernel then answers RST) */
	__u64 bad_cookie;    /* ACK to a listener whose cookie did not check: left to the kernel */
};

/* --xdp-syncookies */
enum dvv_syncookie_mode {
	DVV_SYNCOOKIES_OFF = 0,	   /* SYNs over the budget are dropped (the guard before cookies) */
	DVV_SYNCOOKIES_FLOOD = 1,  /* SYNs over the budget are answered with a cookie */
	DVV_SYNCOOKIES_ALWAYS = 2, /* every SYN the limits admit is answered with a cookie */
};

/* Allow/deny key: an LPM trie key over IPv6; IPv4 prefixes are stored v4-mapped
 * (::ffff:a.b.c.d, prefix length + 96). */
struct dvv_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Per-source key: the v4-mapped IPv4 address, or an IPv6 address cut to
 * DVV_XDP_V6_SOURCE_PREFIX bits. */
struct dvv_src_key {
	__u8 addr[16];
};

/* Token buckets are kept as GCRA: `tat_ns` is the theoretical arrival time of the next SYN; a
 * SYN is admitted when it would not push tat_ns more than the burst tolerance past now. One
 * 64-bit word updated with compare-and-swap, so the buckets are exact across CPUs. */
struct dvv_src_bucket {
	__u64 tat_ns;
	__u64 drops; /* SYNs of this source dropped for its rate (operators: who is flooding) */
};

struct dvv_port_budget {
	__u64 tat_ns;	      /* the budget every SYN draws on */
	__u64 reserve_tat_ns; /* a second budget of the same size for sources already known */
};

#endif
