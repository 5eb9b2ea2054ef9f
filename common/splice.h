/* Moves bytes both ways between two connected sockets with splice(2) through a pair of pipes,
 * so payload never crosses into userspace. Half-close is carried across (EOF on one side becomes
 * shutdown(SHUT_WR) on the other once everything read has been written), errors end both.
 * Shared by the relay's userspace data plane and the agent. */
#ifndef DVV_SPLICE_H
#define DVV_SPLICE_H

#include "loop.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct splice_pair;
/* Called once when both directions are finished or one failed; the pair's fds are still open:
 * the callback calls splice_pair_close() (possibly later). err is 0 or a positive errno. */
typedef void (*splice_done_cb)(struct splice_pair *p, int err);

struct splice_dir {
	int from, to;
	int pipe[2];
	uint32_t inpipe; /* bytes sitting in the pipe */
	bool eof;	 /* read side reached EOF */
	bool shut;	 /* write side shut down after EOF */
	uint64_t bytes;	 /* bytes delivered to `to` */
	_Atomic uint64_t *count; /* NULL, or also added to here as they are delivered (the relay's
				  * per-tunnel accounting; set after splice_pair_start) */
	/* Queue bound (set after splice_pair_start; 0 = none). While `to` cannot take more, the
	 * bytes waiting here (unread in `from`, in the pipe, unsent in `to`) are lag; above
	 * `target` (queue_max, or twice the bytes `to` drains in one round trip of `from` if
	 * that is more, so a far sender is not starved; at most 4 x queue_max) `from`'s receive window is clamped to
	 * about half that round trip's worth: its sender slows below the drain rate and the
	 * queue moves back to it, as on a routed path. Released below half the target. */
	uint32_t queue_max;
	uint32_t target;
	int saved_clamp; /* from's TCP_WINDOW_CLAMP before clamping */
	int clamp;	 /* the clamp set, while clamped */
	bool clamped;
	bool blocked; /* the last write to `to` would have blocked */
};

struct splice_pair {
	struct loop_io io[2]; /* io[0].fd = a, io[1].fd = b */
	struct splice_dir dir[2]; /* dir[0]: a -> b, dir[1]: b -> a */
	struct loop *loop;
	splice_done_cb on_done;
	bool finished;
	void *data;
};

/* Start moving bytes between a and b (both non-blocking, connected). Returns 0 or -errno (pipe
 * creation failed: the caller still owns a and b). */
int splice_pair_start(struct loop *l, struct splice_pair *p, int a, int b, splice_done_cb cb);
/* Clamps done and released by queue bounds, process-wide (metrics). */
extern _Atomic uint64_t splice_n_clamps, splice_n_unclamps;
/* Deregister and close both sockets and the pipes. Safe to call once. */
void splice_pair_close(struct splice_pair *p);

#endif
