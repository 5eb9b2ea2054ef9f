/* Handshake pool: the server side of new TLS control channels, run on worker threads so a
 * reconnect storm's crypto (ECDHE, the certificate signature, the token's ECDSA verify) uses
 * every core while the owner's loop keeps all state.
 *
 * Contract:
 * - hsp_submit (owner's thread only) hands a connected, non-blocking socket to a worker, round
 *   robin. The worker runs the TLS handshake on its own epoll loop, reads exactly the first
 *   control frame, then calls cfg.work (on the worker thread: it may read shared, read-only
 *   data such as verification keys, and write only into its job) and gives the job back.
 * - Every submitted job comes back exactly once, through cfg.done on the owner's loop (an
 *   eventfd registered there), with status 0 (j->first is the first frame) or a negative errno:
 *   -ETIMEDOUT (no first frame within cfg.timeout_ms), -ECONNRESET/-ECONNABORTED/... (ctl.err
 *   says why), -ESHUTDOWN (hsp_stop: done runs from hsp_stop itself). done owns the job: it
 *   either takes the connection (hsp_job_take) or lets hsp_job_free close it.
 * - At most cfg.max_jobs jobs are out at once (submitted, not yet given to done): beyond that
 *   hsp_submit answers -EAGAIN and the socket stays the caller's (it refuses the peer). Each job
 *   holds one socket, one SSL and at most one frame: the memory of the pool is bounded by it.
 * - Workers touch nothing of the owner's but their jobs and what cfg.work reads.
 */
#ifndef DVV_HSPOOL_H
#define DVV_HSPOOL_H

#include "ctlconn.h"
#include "loop.h"

#include <stddef.h>

struct hspool;
struct hsp_worker;

struct hsp_job {
	struct ctl_conn ctl;	  /* the TLS session; ctl.fd is the socket */
	struct ctl_msg *first;	  /* the first frame (heap) when status is 0, else NULL */
	int status;		  /* see the contract */
	void *priv;		  /* the submitter's, never touched by the pool */
	/* pool-private */
	struct hsp_worker *w;
	struct loop_io io;
	struct loop_timer timer;
	struct dlist node;
};

typedef void (*hsp_work_fn)(struct hsp_job *j, void *arg); /* worker thread, status 0 only */
typedef void (*hsp_done_fn)(struct hsp_job *j, void *arg); /* owner's thread */

struct hsp_cfg {
	SSL_CTX *ctx;	 /* server context, shared read-only by the workers */
	int threads;	 /* 1..HSP_THREADS_MAX */
	int max_jobs;	 /* jobs out at once, >= 1 */
	int timeout_ms;	 /* from submit to the first frame */
	hsp_work_fn work; /* may be NULL */
	hsp_done_fn done;
	void *arg;
};

#define HSP_THREADS_MAX 64

/* Start the workers; done runs on owner. NULL with err set on failure (nothing left running). */
struct hspool *hsp_start(struct loop *owner, const struct hsp_cfg *cfg, char *err, size_t errlen);
/* 0, -EAGAIN (max_jobs out), -ENOMEM. On error fd is still the caller's. */
int hsp_submit(struct hspool *p, int fd, void *priv);
/* Jobs out (submitted, not yet given to done). */
int hsp_jobs(const struct hspool *p);
/* Stop and join the workers, give every job still out to done (-ESHUTDOWN unless it finished
 * meanwhile), free the pool. NULL is allowed. */
void hsp_stop(struct hspool *p);

/* Move the connection out of a finished job: *out gets the ctl_conn (its SSL and socket), the
 * job keeps nothing to close. */
void hsp_job_take(struct hsp_job *j, struct ctl_conn *out);
/* Free a job given to done: closes the socket and frees the SSL unless taken. */
void hsp_job_free(struct hsp_job *j);

#endif
