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
/* Deregister and close both sockets and the pipes. Safe to call once. */
void splice_pair_close(struct splice_pair *p);

#endif
