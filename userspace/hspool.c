/* Handshake pool: TLS handshakes and the first control frame of new control channels on worker
 * threads, each with its own epoll loop, handed back to the owner's loop (contract in hspool.h).
 *
 * Jobs travel in two directions, each a list under a mutex plus a wake-up: owner -> worker
 * (the worker's inbox, loop_wake of its loop) and worker -> owner (one outbox, an eventfd the
 * owner's loop watches). A job is in exactly one place at a time: an inbox, a worker's active
 * list (only that worker touches it), the outbox, or given to done. */
#include "hspool.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct hsp_worker {
	struct hspool *p;
	struct loop loop;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock; /* protects inbox and stop */
	struct dlist inbox;
	bool stop;
	struct dlist active; /* worker thread only */
};

struct hspool {
	struct hsp_cfg cfg;
	struct loop *owner;
	struct loop_io done_io; /* eventfd, on the owner's loop */
	pthread_mutex_t lock;	/* protects outbox */
	struct dlist outbox;
	int jobs;		/* out: owner's thread only */
	unsigned rr;
	int nworkers;
	struct hsp_worker w[];
};

static void job_reset_io(struct hsp_job *j)
{
	if (j->io.fd >= 0 && j->io.events)
		loop_io_del(&j->w->loop, &j->io);
	loop_timer_cancel(&j->w->loop, &j->timer);
}

/* Worker: the job is finished (status set): off this worker, into the outbox, owner woken. */
static void job_finish(struct hsp_job *j, int status)
{
	struct hspool *p = j->w->p;
	job_reset_io(j);
	dlist_del(&j->node);
	j->status = status;
	pthread_mutex_lock(&p->lock);
	dlist_add_tail(&p->outbox, &j->node);
	pthread_mutex_unlock(&p->lock);
	uint64_t one = 1;
	/* the counter only grows: a failed write means it is already non-zero (the owner will
	 * look at the outbox anyway) */
	if (write(p->done_io.fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_rl(LOG_WARN, "handshake pool: waking the control loop: %s", strerror(errno));
}

/* The first frame: kept, and the reading stops (max_frames 1 leaves the rest in ctl.in). */
static int job_on_msg(struct ctl_conn *c, const struct ctl_msg *m)
{
	struct hsp_job *j = c->data;
	if (j->first)
		return 0;
	j->first = malloc(sizeof(*m));
	if (!j->first)
		return 1; /* -ECANCELED: finished below as a failure */
	memcpy(j->first, m, sizeof(*m));
	return 0;
}

static void job_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct hsp_job *j = container_of(io, struct hsp_job, io);
	int rc = ctl_conn_io(&j->ctl);
	if (j->first) {
		struct hspool *p = j->w->p;
		if (p->cfg.work)
			p->cfg.work(j, p->cfg.arg);
		job_finish(j, 0);
		return;
	}
	if (rc < 0) {
		job_finish(j, rc == -ECANCELED ? -ENOMEM : rc);
		return;
	}
	int e = loop_io_set(l, io, (uint32_t)rc);
	if (e)
		job_finish(j, e < 0 ? e : -EIO);
}

static void job_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct hsp_job *j = container_of(t, struct hsp_job, timer);
	snprintf(j->ctl.err, sizeof(j->ctl.err), "no control frame within %d ms",
		 j->w->p->cfg.timeout_ms);
	job_finish(j, -ETIMEDOUT);
}

/* Worker: take the inbox; start each job (the client's hello usually came with the connection,
 * so the handshake is driven at once). */
static void worker_wake(struct loop *l)
{
	struct hsp_worker *w = l->data;
	struct dlist in;
	dlist_init(&in);
	pthread_mutex_lock(&w->lock);
	dlist_splice_tail(&w->inbox, &in);
	bool stop = w->stop;
	pthread_mutex_unlock(&w->lock);
	while (!dlist_empty(&in)) {
		struct hsp_job *j = container_of(in.next, struct hsp_job, node);
		dlist_del(&j->node);
		dlist_add_tail(&w->active, &j->node);
		j->io = (struct loop_io){.fd = j->ctl.fd, .cb = job_io_cb};
		j->timer.cb = job_timer_cb;
		loop_timer_arm(l, &j->timer, (uint64_t)w->p->cfg.timeout_ms);
		job_io_cb(l, &j->io, EPOLLIN);
	}
	if (stop)
		loop_stop(l);
}

static void *worker_main(void *arg)
{
	struct hsp_worker *w = arg;
	loop_run(&w->loop);
	/* stopped: what is still in progress goes back unfinished */
	while (!dlist_empty(&w->active))
		job_finish(container_of(w->active.next, struct hsp_job, node), -ESHUTDOWN);
	return NULL;
}

/* Owner: give every finished job to done. */
static void pool_drain(struct hspool *p)
{
	struct dlist out;
	dlist_init(&out);
	pthread_mutex_lock(&p->lock);
	dlist_splice_tail(&p->outbox, &out);
	pthread_mutex_unlock(&p->lock);
	while (!dlist_empty(&out)) {
		struct hsp_job *j = container_of(out.next, struct hsp_job, node);
		dlist_del(&j->node);
		p->jobs--;
		p->cfg.done(j, p->cfg.arg);
	}
}

static void done_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct hspool *p = container_of(io, struct hspool, done_io);
	uint64_t n;
	if (read(io->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		pr_rl(LOG_WARN, "handshake pool: eventfd: %s", strerror(errno));
	pool_drain(p);
}

static void worker_free(struct hsp_worker *w)
{
	loop_free(&w->loop);
	pthread_mutex_destroy(&w->lock);
}

struct hspool *hsp_start(struct loop *owner, const struct hsp_cfg *cfg, char *err, size_t errlen)
{
	struct hspool *p = NULL;
	int i = 0, rc;
	if (!cfg->ctx || !cfg->done || cfg->threads < 1 || cfg->threads > HSP_THREADS_MAX ||
	    cfg->max_jobs < 1 || cfg->timeout_ms < 1) {
		snprintf(err, errlen, "handshake pool: invalid configuration");
		return NULL;
	}
	p = calloc(1, sizeof(*p) + (size_t)cfg->threads * sizeof(p->w[0]));
	if (!p) {
		snprintf(err, errlen, "handshake pool: out of memory");
		return NULL;
	}
	p->cfg = *cfg;
	p->owner = owner;
	pthread_mutex_init(&p->lock, NULL);
	dlist_init(&p->outbox);
	p->done_io = (struct loop_io){.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC),
				      .cb = done_io_cb};
	if (p->done_io.fd < 0 || loop_io_set(owner, &p->done_io, EPOLLIN)) {
		snprintf(err, errlen, "handshake pool: eventfd: %s", strerror(errno));
		goto fail;
	}
	for (i = 0; i < cfg->threads; i++) {
		struct hsp_worker *w = &p->w[i];
		w->p = p;
		pthread_mutex_init(&w->lock, NULL);
		dlist_init(&w->inbox);
		dlist_init(&w->active);
		if (loop_init(&w->loop)) {
			snprintf(err, errlen, "handshake pool: worker loop: %s", strerror(errno));
			pthread_mutex_destroy(&w->lock);
			goto fail;
		}
		w->loop.data = w;
		w->loop.on_wake = worker_wake;
		p->nworkers = i + 1;
		if ((rc = pthread_create(&w->thread, NULL, worker_main, w))) {
			snprintf(err, errlen, "handshake pool: thread: %s", strerror(rc));
			goto fail;
		}
		w->started = true;
	}
	return p;
fail:
	hsp_stop(p);
	return NULL;
}

int hsp_submit(struct hspool *p, int fd, void *priv)
{
	if (p->jobs >= p->cfg.max_jobs)
		return -EAGAIN;
	struct hsp_job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	/* SSL_new here: the context is shared, the new SSL belongs to the job from now on */
	if (ctl_conn_init(&j->ctl, p->cfg.ctx, fd, true, NULL)) {
		free(j);
		return -ENOMEM;
	}
	j->ctl.on_msg = job_on_msg;
	j->ctl.data = j;
	j->ctl.max_frames = 1;
	j->priv = priv;
	j->io.fd = -1;
	struct hsp_worker *w = &p->w[p->rr++ % (unsigned)p->nworkers];
	j->w = w;
	pthread_mutex_lock(&w->lock);
	dlist_add_tail(&w->inbox, &j->node);
	pthread_mutex_unlock(&w->lock);
	p->jobs++;
	loop_wake(&w->loop);
	return 0;
}

int hsp_jobs(const struct hspool *p) { return p ? p->jobs : 0; }

void hsp_stop(struct hspool *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->nworkers; i++) {
		struct hsp_worker *w = &p->w[i];
		pthread_mutex_lock(&w->lock);
		w->stop = true;
		pthread_mutex_unlock(&w->lock);
		loop_wake(&w->loop);
	}
	for (int i = 0; i < p->nworkers; i++) {
		struct hsp_worker *w = &p->w[i];
		if (w->started)
			pthread_join(w->thread, NULL);
		/* jobs the worker never took: unfinished too */
		while (!dlist_empty(&w->inbox)) {
			struct hsp_job *j = container_of(w->inbox.next, struct hsp_job, node);
			dlist_del(&j->node);
			j->status = -ESHUTDOWN;
			pthread_mutex_lock(&p->lock);
			dlist_add_tail(&p->outbox, &j->node);
			pthread_mutex_unlock(&p->lock);
		}
	}
	pool_drain(p); /* every job out, finished or not, goes to done now */
	for (int i = 0; i < p->nworkers; i++)
		worker_free(&p->w[i]);
	if (p->done_io.fd >= 0) {
		loop_io_del(p->owner, &p->done_io);
		close(p->done_io.fd);
	}
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void hsp_job_take(struct hsp_job *j, struct ctl_conn *out)
{
	*out = j->ctl;
	out->on_msg = NULL;
	out->data = NULL;
	out->max_frames = 0;
	memset(&j->ctl, 0, sizeof(j->ctl));
	j->ctl.fd = -1;
}

void hsp_job_free(struct hsp_job *j)
{
	if (!j)
		return;
	ctl_conn_free(&j->ctl);
	if (j->ctl.fd >= 0)
		close(j->ctl.fd);
	free(j->first);
	free(j);
}
