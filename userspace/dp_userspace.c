/* Userspace data plane: N worker threads, each with its own epoll loop, moving bytes with
 * splice(2) (common/splice.c). The control loop hands a pair to a worker through that worker's
 * own hand-off queue (handoff.h): there is no lock shared by all connections. */
#include "config.h"
#include "dataplane.h"
#include "dp_acct.h"
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
	struct us_plane *u;
	struct dp_acct *acct; /* the tunnel's counters (NULL: not counted) */
};

struct us_plane;

struct us_worker {
	struct us_plane *u;
	struct loop loop;
	pthread_t thread;
	struct handoff jobs;
	struct dlist pairs; /* live pairs, for shutdown */
	bool started;
};

/* Per-tunnel bytes: each splice direction adds what it delivers to its tunnel's atomic counter
 * (common/splice.c), so no lock is shared by the workers' byte paths. */
struct us_plane {
	struct us_worker *w;
	int nw;
	atomic_uint rr;
	struct dp_acct_tab acct;
	uint32_t queue_max; /* --queue-kb, in bytes: common/splice.h */
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
	dp_acct_pair_put(&p->u->acct, p->acct); /* after the last byte was counted */
	p->acct = NULL;
	dlist_del(&p->node);
	loop_defer(sp->loop, pair_free, p);
}

/* A kill job (both fds -1): end every pair of the tunnel on this worker (plan enforcement:
 * revoked, blocked, bandwidth used up). */
static void pairs_kill(struct us_worker *w, uint64_t key)
{
	struct dlist *n = w->pairs.next;
	while (n != &w->pairs) {
		struct us_pair *p = container_of(n, struct us_pair, node);
		n = n->next;
		if (p->acct && p->acct->key == key)
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
		dp_acct_pair_put(&w->u->acct, j->acct);
		M_DEC(splices_active);
		return;
	}
	p->u = w->u;
	p->acct = j->acct;
	if (p->acct) { /* dir[0]: player -> agent */
		p->sp.dir[0].count = &p->acct->bytes[DP_TO_AGENT];
		p->sp.dir[1].count = &p->acct->bytes[DP_TO_PLAYER];
	}
	/* bytes queued here in front of a slow reader are lag: both directions bounded */
	p->sp.dir[0].queue_max = p->sp.dir[1].queue_max = w->u->queue_max;
	dlist_add_head(&w->pairs, &p->node);
}

/* A job the stopped worker never took. */
static void job_drop(void *arg, const struct handoff_job *j)
{
	struct us_plane *u = arg;
	if (j->player_fd < 0 && j->agent_fd < 0)
		return; /* a kill job */
	close(j->player_fd);
	close(j->agent_fd);
	dp_acct_pair_put(&u->acct, j->acct);
	M_DEC(splices_active);
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
	u->queue_max = (uint32_t)cfg->queue_kb << 10;
	u->w = calloc((size_t)u->nw, sizeof(*u->w));
	if (!u->w || dp_acct_init(&u->acct, DP_ACCT_MAX)) {
		free(u->w);
		free(u);
		return -ENOMEM;
	}
	dp->priv = u;
	for (int i = 0; i < u->nw; i++) {
		struct us_worker *w = &u->w[i];
		w->u = u;
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
	int err = 0;
	if (tunnel_key && !(j.acct = dp_acct_pair_get(&u->acct, tunnel_key, &err)))
		pr_rl(LOG_WARN, "data plane: pair of tunnel %016llx relayed uncounted: %s",
		      (unsigned long long)tunnel_key, strerror(-err));
	int rc = handoff_push(&w->jobs, &j);
	if (rc) {
		dp_acct_pair_put(&u->acct, j.acct);
		M_DEC(splices_active);
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
	for (int i = 0; u && i < u->nw; i++)
		if (handoff_push(&u->w[i].jobs, &j))
			rc = -ENOMEM;
	return u ? rc : -ENODEV;
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
			dp_acct_pair_put(&u->acct, p->acct);
			free(p);
		}
		handoff_drain(&w->jobs, job_drop, u);
		handoff_free(&w->jobs);
		loop_free(&w->loop);
	}
	dp_acct_free(&u->acct);
	free(u->w);
	free(u);
	dp->priv = NULL;
}

static int us_tunnel_bytes(struct dataplane *dp, uint64_t key, uint64_t *to_agent,
			   uint64_t *to_player)
{
	struct us_plane *u = dp->priv;
	return dp_acct_read(&u->acct, key, to_agent, to_player);
}

static struct dp_acct *us_acct_hold(struct dataplane *dp, uint64_t key)
{
	struct us_plane *u = dp->priv;
	return dp_acct_hold(&u->acct, key);
}

static void us_acct_release(struct dataplane *dp, struct dp_acct *a)
{
	struct us_plane *u = dp->priv;
	dp_acct_put(&u->acct, a);
}

const struct dataplane_ops dp_userspace_ops = {
	.name = "userspace",
	.start = us_start,
	.join = us_join,
	.stop = us_stop,
	.tunnel_bytes = us_tunnel_bytes,
	.acct_hold = us_acct_hold,
	.acct_release = us_acct_release,
	.kill = us_kill,
};
