/* Internals of the bpf data plane, shared by its files and by nothing else: the plane, pair and
 * socket state, and what each file offers the others. Everything runs on the plane's own loop
 * thread, except the job queue (any thread pushes) and the n_* counters (atomics, read by
 * dp_bpf_stats() from any thread). The files:
 *   dp_bpf.c           the plane: start (load, attach, pin, self-test), join, stop, and the
 *                      verdict program's requests
 *   dp_bpf_pair.c      a pair's life: join, service (EOF, FIN carry, stall watch), end
 *   dp_bpf_throttle.c  backpressure: clamping the window of a sender whose reader lags
 *   dp_bpf_fallback.c  what the kernel path cannot carry: splice(2) pairs, recv/send directions
 *   dp_bpf_selftest.c  the splice on loopback that start runs before the plane is trusted
 *   dp_bpf_stats.c     counters and map walks (the dp_bpf.h API) */
#ifndef DVV_DP_BPF_INT_H
#define DVV_DP_BPF_INT_H

#include "dp_acct.h"
#include "handoff.h"
#include "htab.h"
#include "list.h"
#include "log.h"
#include "loop.h"
#include "pins.h"
#include "splice.h" /* common/splice.h: struct splice_pair */

#include "../bpf/splice.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct bp_plane;

/* One socket of a pair, and the direction of the bytes it receives (towards the other). */
struct bp_side {
	struct loop_io io;
	struct bp_pair *pair;
	struct hnode hn;   /* in bp_plane.by_cookie when in_htab */
	bool in_htab;
	bool in_targets;   /* in dvv_targets */
	bool hooked;	   /* in dvv_socks: the kernel splices what arrives here */
	bool eof;	   /* recv() == 0: nothing more comes from here */
	bool shut;	   /* all of it went out through the peer, and the peer was shut for writing */
	bool throttled;	   /* receive window clamped: the peer fell behind */
	bool tight;	   /* ... to the tightest window (one MSS was not enough) */
	bool want_out;	   /* (not hooked) buf waits for room in the peer */
	bool owing;	   /* bytes are owed to the peer: watched for a stall */
	int saved_clamp;   /* TCP_WINDOW_CLAMP before the throttle */
	int clamp;	   /* the clamp we set */
	uint64_t cookie;
	uint64_t base;	   /* bytes the relay itself wrote to this socket before the join */
	uint8_t *buf;	   /* (not hooked) relay buffer */
	uint32_t len, off;
	uint64_t copied;   /* (not hooked) bytes userspace wrote to the peer */
	uint64_t stall_acked, stall_since;
};

struct bp_pair {
	struct bp_side s[2]; /* [0] player, [1] agent; bytes received on s[i] leave through s[!i] */
	struct dlist node; /* bp_plane.pairs */
	struct bp_plane *b;
	struct dp_acct *acct; /* the tunnel's counters: fallback bytes, players (NULL: uncounted) */
	struct loop_timer timer; /* polls while a queue drains, watches owing directions */
	uint32_t poll_ms;
	bool conns_written;
	bool internal; /* self-test pair: kept out of the relay's metrics */
	bool dead;
};

/* A pair the map refused, relayed with splice(2) by the same loop. */
struct bp_demoted {
	struct splice_pair sp;
	struct dlist node; /* bp_plane.demoted */
	struct dp_acct *acct;
	bool internal;
};

struct bp_plane {
	enum log_level fail_level; /* of start-up failures: a warning when auto falls back */
	struct splice_bpf *skel;
	int socks_fd, targets_fd, conns_fd, tunnels_fd, verdicts_fd;
	uint64_t throttle_lag, tighten_lag;
	bool attached;
	struct ring_buffer *rb;
	struct loop_io rb_io;
	struct loop loop;
	bool loop_ready;
	struct loop_timer sweep;
	uint64_t events_lost_seen;
	pthread_t thread;
	bool running;
	struct handoff jobs;
	struct htab by_cookie;
	/* per-tunnel accounting: an entry per tunnel with pairs or a holder; its dvv_tunnels
	 * element (kernel path bytes) is created and deleted with it (dp_acct.h) */
	struct dp_acct_tab acct;
	struct dlist pairs, demoted;
	int ncpu;
	int max_lag_mb;
	struct pin_dir pins;
	_Atomic uint64_t n_pairs;     /* live pairs, self-test included */
	_Atomic uint64_t n_active, n_total, n_demoted, n_cut_lag, n_cut_error, n_drain_timeouts;
	_Atomic uint64_t n_throttles, n_unthrottles, n_throttled, n_user_bytes;
};

/* dp_bpf_pair.c */
/* Queue a pair for the plane's thread, with its accounting reference for key (taken here, on the
 * caller's thread; key 0: uncounted); on failure both fds are closed (RST). 0 or -errno. */
int bp_enqueue(struct bp_plane *b, int player_fd, int agent_fd, uint64_t key, bool internal);
void bp_take_jobs(struct loop *l);	/* the plane loop's on_wake: joins queued pairs */
void bp_pairs_kill(struct bp_plane *b, uint64_t key); /* end every pair of a tunnel */
void bp_demoted_kill(struct bp_plane *b, uint64_t key);
void bp_job_drop(void *arg, const struct handoff_job *j); /* a job never taken, at stop */
struct bp_side *bp_side_by_cookie(struct bp_plane *b, uint64_t cookie);
void bp_pair_service(struct bp_plane *b, struct bp_pair *p);
/* err 0: normal close; else RST both (bp_pair_abort also counts it as cut by an error). */
void bp_pair_finish(struct bp_plane *b, struct bp_pair *p, int err);
void bp_pair_abort(struct bp_plane *b, struct bp_pair *p, int err);
int bp_conn_get(struct bp_plane *b, const struct bp_side *s, struct dvv_conn *c);
int bp_peer_counters(const struct bp_side *o, uint64_t *acked, uint64_t *written);
void bp_close_abort(int fd);

/* dp_bpf_throttle.c */
/* The throttle thresholds for a hard lag limit of max_lag bytes (b->throttle_lag is also the
 * program's dvv_pause_lag_bytes). */
void bp_throttle_limits(struct bp_plane *b, uint64_t max_lag);
/* The program asked to throttle s's sender, its peer being lag bytes behind. 0 or -errno. */
int bp_throttle_request(struct bp_plane *b, struct bp_side *s, uint64_t lag);
/* Give s[i]'s sender its window back once the peer caught up: 1 while still throttled, 0,
 * -errno. */
int bp_dir_release(struct bp_plane *b, struct bp_pair *p, int i);

/* dp_bpf_fallback.c */
/* Relay s[i] -> s[!i] with recv()/send() (s[i] has no verdict): -errno, 1 again soon, 0. */
int bp_dir_copy(struct bp_plane *b, struct bp_pair *p, int i, uint64_t *moved);
/* Takes over the pair's accounting reference acct. */
void bp_pair_demote(struct bp_plane *b, int pfd, int afd, bool internal, int why,
		    const char *which, struct dp_acct *acct);
void bp_demoted_close_all(struct bp_plane *b); /* at stop */

/* dp_bpf_selftest.c */
/* Splice a pair on loopback through the running plane: 0, or -errno with the reason logged. */
int bp_selftest(struct bp_plane *b);

/* dp_bpf_stats.c */
int bp_verdicts_read(struct bp_plane *b, struct dvv_verdict_count out[DVV_V_MAX]);
int bp_map_count(int fd, uint64_t *n);

#endif
