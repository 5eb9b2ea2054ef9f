/* In-kernel splice (bpf/splice.bpf.c) and its driver (userspace/dp_bpf*.c): the types both
 * sides read and write; the driver's own API is userspace/dp_bpf.h. Every map value is a dvv_
 * struct so that `bpftool map dump pinned <pin-root>/<instance>/<map>` prints readable fields. */
#ifndef DVV_BPF_SPLICE_H
#define DVV_BPF_SPLICE_H

#ifndef __bpf__ /* userspace only: BPF programs get the __u types from vmlinux.h */
#include <linux/types.h>
#endif

/* Compile-time limits (override with -D). Hash maps are created without preallocation: an entry
 * costs memory only while its connection is live. */
#ifndef DVV_SPLICE_MAX_SOCKS
#define DVV_SPLICE_MAX_SOCKS (1u << 19) /* sockets = 2 per spliced pair: 262144 pairs */
#endif
#ifndef DVV_SPLICE_MAX_TUNNELS
#define DVV_SPLICE_MAX_TUNNELS (1u << 17)
#endif
#ifndef DVV_SPLICE_THROTTLE_RECHECK
#define DVV_SPLICE_THROTTLE_RECHECK (256u * 1024) /* bytes between throttle requests */
#endif
#ifndef DVV_SPLICE_EVENT_RING
#define DVV_SPLICE_EVENT_RING (256u * 1024) /* bytes; one event is 32 bytes */
#endif

/* Names of the maps as pinned under <bpf_pin_root>/<instance_id>/. */
#define DVV_SPLICE_MAPS(X)                                                                     \
	X(dvv_socks) X(dvv_targets) X(dvv_conns) X(dvv_tunnels) X(dvv_verdicts) X(dvv_events)

/* Verdict counters (dvv_verdicts index). Each skb is counted under exactly one of REDIRECT,
 * PASS, DROP, ZERO_LEN, LAG_DROP (NO_PEER also counts its PASS); THROTTLE and EVENT_LOST count
 * events. */
enum dvv_verdict {
	DVV_V_REDIRECT = 0, /* sent to the peer socket in the kernel */
	DVV_V_PASS,	    /* left in the socket itself (only when it has no dvv_conns entry) */
	DVV_V_DROP,	    /* redirect failed (peer no longer in dvv_targets): data lost, pair cut */
	DVV_V_ZERO_LEN,	    /* bare FIN reaching the program: dropped, never redirected */
	DVV_V_NO_PEER,	    /* socket has no dvv_conns entry */
	DVV_V_LAG_DROP,	    /* peer over the hard lag limit: dropped, pair cut */
	DVV_V_THROTTLE,	    /* peer fell behind: userspace asked to clamp the sender's window */
	DVV_V_EVENT_LOST,   /* an event could not be written to dvv_events (ring full) */
	DVV_V_MAX,
};

/* dvv_conn.dir: which way the bytes received on this socket travel. */
enum dvv_dir {
	DVV_DIR_TO_AGENT = 0,  /* received from the player */
	DVV_DIR_TO_PLAYER = 1, /* received from the agent */
};

/* dvv_conn.flags */
enum dvv_conn_flag {
	DVV_CONN_LAG = 1u << 0,	       /* peer fell more than the hard lag limit behind: cut */
	DVV_CONN_REDIR_FAIL = 1u << 1, /* a redirect failed: data dropped, cut */
	DVV_CONN_THROTTLED = 1u << 2,  /* peer over the throttle limit since throttle_ns */
};
#define DVV_CONN_CUT (DVV_CONN_LAG | DVV_CONN_REDIR_FAIL)

/* dvv_splice_event.reason */
enum dvv_event_reason {
	DVV_EV_CUT_LAG = 1,    /* cut the pair: reader over the hard lag limit */
	DVV_EV_REDIR_FAIL = 2, /* cut the pair: data was dropped */
	DVV_EV_THROTTLE = 3,   /* clamp this socket's receive window: its peer fell behind (repeated
				  while it stays behind; userspace opens it again itself) */
};

/* One per socket in the splice, keyed by that socket's cookie. Written once by userspace at join
 * and never rewritten (an update replaces the element under the program's feet); counters,
 * flags and lag_check_at are written by this socket's verdict program, which the socket lock
 * serialises. */
struct dvv_conn {
	__u64 peer_cookie;   /* where this socket's bytes go */
	__u64 tunnel_key;    /* dvv_tunnels key */
	__u64 redir_bytes;   /* bytes received here and redirected to the peer in the kernel */
	__u64 dropped_bytes; /* bytes received here and dropped (pair being cut) */
	__u64 peer_base;     /* peer's bytes_acked + unacked at join: what the relay itself wrote */
	__u64 lag_check_at;  /* redir_bytes value at which the peer's lag must be measured again */
	__u64 throttle_ns;   /* when the peer went over the throttle limit (bpf_ktime_get_ns) */
	__u32 dir;	     /* enum dvv_dir */
	__u32 flags;	     /* enum dvv_conn_flag */
};

/* Per tunnel, keyed by tunnel_key: bytes relayed each way (kernel and userspace path). Created
 * and deleted by userspace (first join / last pair gone), counted by the verdict program. */
struct dvv_tunnel_bytes {
	__u64 to_agent;
	__u64 to_player;
};

/* dvv_verdicts value (per CPU). */
struct dvv_verdict_count {
	__u64 skbs;
	__u64 bytes;
};

/* dvv_events record: the verdict program asks userspace to cut a pair. */
struct dvv_splice_event {
	__u64 cookie;	   /* socket whose data was dropped */
	__u64 peer_cookie;
	__u64 value;	   /* lag in bytes (CUT_LAG, THROTTLE), skb length (REDIR_FAIL) */
	__u32 reason;	   /* enum dvv_event_reason */
	__u32 pad;
};

#endif
