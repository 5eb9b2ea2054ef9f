/* Userspace data plane: N worker threads, each with its own epoll loop, moving bytes with
 * splice(2) (common/splice.c). The control loop hands a pair to a worker through that worker's
 * own hand-off queue (handoff.h): there is no lock shared by all connections. */
#include "config.h"
#include "dataplane.h"
#include "handoff.h"
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
	uint64_t key;	   /* its tunnel (dp_players) */
};

struct us_worker {
	struct loop loop;
	pthread_t thread;
	struct handoff jobs;
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
	dp_players_done(p->key);
	splice_pair_close(sp);
	dlist_del(&p->node);
	loop_defer(sp->loop, pair_free, p);
}

/* A kill job (both fds -1): end every pair of the tunnel on this worker. */
static void pairs_kill(struct us_worker *w, uint64_t key)
{
	struct dlist *n = w->pairs.next;
	while (n != &w->pairs) {
		struct us_pair *p = container_of(n, struct us_pair, node);
		n = n->next;
		if (p->key == key)
			pair_done(&p->sp, ECONNABORTED);
	}
}

static void pair_start(void *arg, const struct handoff_job *j)
{
	struct us_worker *w = arg;
	if (j->player_fd < 0 && j->agent_fd < 0) {
		pairs_kill(w, j->tunnel_key);
		return;
	}
	struct us_pair *p = calloc(1, sizeof(*p));
	int rc = p ? splice_pair_start(&w->loop, &p->sp, j->player_fd, j->agent_fd, pair_done)
		   : -ENOMEM;
	if (rc) {
		pr_rl(LOG_WARN, "cannot start splice: %s", strerror(-rc));
		close(j->player_fd);
		close(j->agent_fd);
		free(p);
		M_DEC(splices_active);
		dp_players_done(j->tunnel_key);
		return;
	}
	p->key = j->tunnel_key;
	dlist_add_head(&w->pairs, &p->node);
}

/* A job the stopped worker never took. */
static void job_drop(void *arg, const struct handoff_job *j)
{
	if (j->player_fd < 0 && j->agent_fd < 0)
		return; /* a kill job */
	close(j->player_fd);
	close(j->agent_fd);
	M_DEC(splices_active);
	dp_players_done(j->tunnel_key);
}

static void worker_take_jobs(struct loop *l)
{
	struct us_worker *w = l->data;
	handoff_drain(&w->jobs, pair_start, w);
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
		handoff_init(&w->jobs, &w->loop);
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
	/* counted before the worker can end it */
	M_INC(splices_active);
	struct handoff_job j = {
		.player_fd = player_fd, .agent_fd = agent_fd, .tunnel_key = tunnel_key};
	int rc = handoff_push(&w->jobs, &j);
	if (rc) {
		M_DEC(splices_active);
		dp_players_done(tunnel_key);
		close(player_fd);
		close(agent_fd);
	}
	return rc;
}

static int us_kill(struct dataplane *dp, uint64_t tunnel_key)
{
	struct us_plane *u = dp->priv;
	struct handoff_job j = {.player_fd = -1, .agent_fd = -1, .tunnel_key = tunnel_key};
	int rc = 0;
	for (int i = 0; i < u->nw; i++)
		if (handoff_push(&u->w[i].jobs, &j))
			rc = -ENOMEM;
	return rc;
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
			dp_players_done(p->key);
			splice_pair_close(&p->sp);
			free(p);
		}
		handoff_drain(&w->jobs, job_drop, NULL);
		handoff_free(&w->jobs);
		loop_free(&w->loop);
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
	.kill = us_kill,
};
