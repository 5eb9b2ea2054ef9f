/* Userspace data plane: N worker threads, each with its own epoll loop, moving bytes with
 * splice(2) (common/splice.c). The control loop hands a pair to a worker through that worker's
 * own small queue: there is no lock shared by all connections. */
#include "config.h"
#include "dataplane.h"
#include "list.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "splice.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct us_pair {
	struct splice_pair sp;
	struct dlist node; /* us_worker.pairs */
	struct us_worker *w;
};

struct us_job {
	int player_fd, agent_fd;
};

struct us_worker {
	struct loop loop;
	pthread_t thread;
	pthread_mutex_t lock; /* protects the queue only */
	struct us_job *q;
	size_t nq, capq;
	struct dlist pairs; /* live pairs, for shutdown */
	bool started;
};

struct us_plane {
	struct us_worker *w;
	int nw;
	atomic_uint rr;
};

static void pair_free(void *arg) { free(arg); }

static void pair_done(struct splice_pair *sp, int err)
{
	struct us_pair *p = container_of(sp, struct us_pair, sp);
	M_ADD(splice_bytes_total, (int64_t)(sp->dir[0].bytes + sp->dir[1].bytes));
	if (err && err != ECONNRESET && err != EPIPE)
		pr_rl(LOG_DEBUG, "splice ended: %s", strerror(err));
	if (err)
		M_INC(splice_errors_total);
	M_DEC(splices_active);
	splice_pair_close(sp);
	dlist_del(&p->node);
	loop_defer(sp->loop, pair_free, p);
}

static void worker_take_jobs(struct loop *l)
{
	struct us_worker *w = l->data;
	struct us_job jobs[256];
	for (;;) {
		pthread_mutex_lock(&w->lock);
		size_t n = w->nq < 256 ? w->nq : 256;
		if (n) {
			memcpy(jobs, w->q, n * sizeof(*jobs));
			memmove(w->q, w->q + n, (w->nq - n) * sizeof(*jobs));
			w->nq -= n;
		}
		pthread_mutex_unlock(&w->lock);
		if (!n)
			return;
		for (size_t i = 0; i < n; i++) {
			struct us_pair *p = calloc(1, sizeof(*p));
			int rc = p ? splice_pair_start(l, &p->sp, jobs[i].player_fd, jobs[i].agent_fd,
						       pair_done)
				   : -ENOMEM;
			if (rc) {
				pr_rl(LOG_WARN, "cannot start splice: %s", strerror(-rc));
				close(jobs[i].player_fd);
				close(jobs[i].agent_fd);
				free(p);
				M_DEC(splices_active);
				continue;
			}
			p->w = w;
			dlist_add_head(&w->pairs, &p->node);
		}
	}
}

static void *worker_main(void *arg)
{
	struct us_worker *w = arg;
	loop_run(&w->loop);
	return NULL;
}

static int us_start(struct dataplane *dp, const struct relay_cfg *cfg)
{
	struct us_plane *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	u->nw = cfg->workers ? cfg->workers : (ncpu > 0 ? (int)ncpu : 1);
	u->w = calloc((size_t)u->nw, sizeof(*u->w));
	if (!u->w) {
		free(u);
		return -ENOMEM;
	}
	dp->priv = u;
	for (int i = 0; i < u->nw; i++) {
		struct us_worker *w = &u->w[i];
		int rc = loop_init(&w->loop);
		if (rc)
			return rc;
		w->loop.data = w;
		w->loop.on_wake = worker_take_jobs;
		dlist_init(&w->pairs);
		pthread_mutex_init(&w->lock, NULL);
		if ((rc = pthread_create(&w->thread, NULL, worker_main, w)))
			return -rc;
		w->started = true;
	}
	pr_info("data plane: userspace splice(2), %d worker thread(s)", u->nw);
	return 0;
}

static int us_join(struct dataplane *dp, int player_fd, int agent_fd, uint64_t tunnel_key)
{
	struct us_plane *u = dp->priv;
	struct us_worker *w = &u->w[atomic_fetch_add(&u->rr, 1) % (unsigned)u->nw];
	int rc = 0;
	pthread_mutex_lock(&w->lock);
	if (w->nq == w->capq) {
		size_t cap = w->capq ? w->capq * 2 : 64;
		struct us_job *q = realloc(w->q, cap * sizeof(*q));
		if (!q) {
			rc = -ENOMEM;
			goto unlock;
		}
		w->q = q;
		w->capq = cap;
	}
	w->q[w->nq++] = (struct us_job){player_fd, agent_fd};
	M_INC(splices_active);
unlock:
	pthread_mutex_unlock(&w->lock);
	if (rc) {
		close(player_fd);
		close(agent_fd);
		return rc;
	}
	loop_wake(&w->loop);
	return 0;
}

static void stop_cb(struct loop *l)
{
	worker_take_jobs(l);
	loop_stop(l);
}

static void us_stop(struct dataplane *dp)
{
	struct us_plane *u = dp->priv;
	if (!u)
		return;
	for (int i = 0; i < u->nw; i++) {
		struct us_worker *w = &u->w[i];
		if (!w->started)
			continue;
		w->loop.on_wake = stop_cb;
		loop_wake(&w->loop);
		pthread_join(w->thread, NULL);
		struct us_pair *p;
		while ((p = dlist_first(&w->pairs, struct us_pair, node))) {
			dlist_del(&p->node);
			M_DEC(splices_active);
			splice_pair_close(&p->sp);
			free(p);
		}
		for (size_t j = 0; j < w->nq; j++) {
			close(w->q[j].player_fd);
			close(w->q[j].agent_fd);
		}
		free(w->q);
		loop_free(&w->loop);
		pthread_mutex_destroy(&w->lock);
	}
	free(u->w);
	free(u);
	dp->priv = NULL;
}

const struct dataplane_ops dp_userspace_ops = {
	.name = "userspace",
	.start = us_start,
	.join = us_join,
	.stop = us_stop,
};
