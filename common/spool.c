/* Data-plane worker threads, each with its own loop and hand-off queue (contract in spool.h). */
#include "spool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void take_one(void *arg, const struct handoff_job *j)
{
	struct spool_worker *w = arg;
	w->pool->run(w, j);
}

static void take_jobs(struct loop *l)
{
	struct spool_worker *w = l->data;
	handoff_drain(&w->jobs, take_one, w);
}

/* The last wake-up of a stopping worker: what was queued before the stop still runs. */
static void take_jobs_and_stop(struct loop *l)
{
	take_jobs(l);
	loop_stop(l);
}

static void *worker_main(void *arg)
{
	struct spool_worker *w = arg;
	loop_run(&w->loop);
	return NULL;
}

int spool_start(struct spool *p, int n, spool_run_fn run, void *data)
{
	if (n <= 0) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		n = ncpu > 0 ? (int)ncpu : 1;
	}
	memset(p, 0, sizeof(*p));
	p->run = run;
	p->data = data;
	if (!(p->w = calloc((size_t)n, sizeof(*p->w))))
		return -ENOMEM;
	p->nw = n;
	for (int i = 0; i < n; i++) {
		struct spool_worker *w = &p->w[i];
		w->pool = p;
		dlist_init(&w->pairs);
		int rc = loop_init(&w->loop);
		if (rc) {
			w->loop.epfd = -1;
			return rc;
		}
		w->loop.data = w;
		w->loop.on_wake = take_jobs;
		handoff_init(&w->jobs, &w->loop);
		if ((rc = pthread_create(&w->thread, NULL, worker_main, w))) {
			handoff_free(&w->jobs);
			loop_free(&w->loop);
			w->loop.epfd = -1;
			return -rc;
		}
		w->started = true;
	}
	return 0;
}

int spool_push(struct spool *p, const struct handoff_job *j)
{
	if (!p->w)
		return -ENODEV;
	struct spool_worker *w = &p->w[atomic_fetch_add(&p->rr, 1) % (unsigned)p->nw];
	return handoff_push(&w->jobs, j);
}

int spool_push_all(struct spool *p, const struct handoff_job *j)
{
	int rc = p->w ? 0 : -ENODEV;
	for (int i = 0; p->w && i < p->nw; i++)
		if (p->w[i].started && handoff_push(&p->w[i].jobs, j))
			rc = -ENOMEM;
	return rc;
}

void spool_stop(struct spool *p, void (*left)(struct spool_worker *w), handoff_fn drop,
		void *drop_arg)
{
	if (!p->w)
		return;
	for (int i = 0; i < p->nw; i++) {
		struct spool_worker *w = &p->w[i];
		if (!w->started)
			continue;
		w->loop.on_wake = take_jobs_and_stop;
		loop_wake(&w->loop);
	}
	for (int i = 0; i < p->nw; i++) {
		struct spool_worker *w = &p->w[i];
		if (!w->started)
			continue;
		pthread_join(w->thread, NULL);
		if (left)
			left(w);
		if (drop)
			handoff_drain(&w->jobs, drop, drop_arg);
		handoff_free(&w->jobs);
		loop_free(&w->loop);
		w->started = false;
	}
	free(p->w);
	p->w = NULL;
	p->nw = 0;
}
