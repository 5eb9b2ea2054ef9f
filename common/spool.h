/* A pool of data-plane threads for splice pairs (splice.h): each worker runs its own event loop
 * (loop.h) on its own thread and is fed through its own hand-off queue (handoff.h), so no lock is
 * shared by all connections. The relay's userspace plane and the agent both run their pairs on
 * one; what a job means (start a pair, end a tunnel's pairs) is the owner's `run` callback.
 *
 * Contract: spool_start() once; spool_push()/spool_push_all() from any thread while it runs;
 * `run` is called on the worker's thread only, in push order per worker, and may use w->loop
 * and w->pairs freely (nothing else touches them while the thread runs). spool_stop() from the
 * thread that started it: each worker first runs the jobs queued so far, then stops; after all
 * threads are joined, on the caller's thread, left(w) ends what the owner still has on each
 * worker and drop() is called for every job pushed too late to run. */
#ifndef DVV_SPOOL_H
#define DVV_SPOOL_H

#include "handoff.h"
#include "list.h"
#include "loop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct spool;

struct spool_worker {
	struct spool *pool;
	struct loop loop;
	pthread_t thread;
	struct handoff jobs;
	struct dlist pairs; /* the owner's live pairs on this worker (its thread only) */
	bool started;
};

typedef void (*spool_run_fn)(struct spool_worker *w, const struct handoff_job *j);

struct spool {
	struct spool_worker *w; /* NULL when not started or stopped */
	int nw;
	atomic_uint rr;
	spool_run_fn run;
	void *data; /* the owner's context */
};

/* Start n workers (n <= 0: one per online CPU). 0, or -errno: the workers started so far run on
 * and spool_stop() must still be called. */
int spool_start(struct spool *p, int n, spool_run_fn run, void *data);
/* Queue j on the next worker (round robin). 0, or -ENOMEM: not queued, j's fds are still the
 * caller's. */
int spool_push(struct spool *p, const struct handoff_job *j);
/* Queue j on every worker (a job about all pairs, such as ending a tunnel's). 0, or -ENOMEM
 * when some worker did not get it. */
int spool_push_all(struct spool *p, const struct handoff_job *j);
/* Stop and free the workers (see the contract above); left and drop may be NULL. A pool never
 * started, or already stopped, is left alone. */
void spool_stop(struct spool *p, void (*left)(struct spool_worker *w), handoff_fn drop,
		void *drop_arg);

#endif
