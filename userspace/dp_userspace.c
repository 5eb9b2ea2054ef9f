/* Userspace data plane: N worker threads, each with its own epoll loop, moving bytes with
 * splice(2) (common/splice.c). The control loop hands a pair to a worker through that worker's
 * own hand-off queue (the worker pool, common/spool.c, which the agent runs its players on
 * too): there is no lock shared by all connections. */
#include "config.h"
#include "dataplane.h"
#include "dp_acct.h"
#include "handoff.h"
#include "list.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "splice.h"
#include "spool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct us_pair {
	struct splice_pair sp;
	struct dlist node; /* us_worker.pairs */
	struct us_plane *u;
	struct dp_acct *acct; /* the tunnel's counters (NULL: not counted) */
};

/* Per-tunnel bytes: each splice direction adds what it delivers to its tunnel's atomic counter
 * (common/splice.c), so no lock is shared by the workers' byte paths. */
struct us_plane {
	struct spool pool; /* its workers' `pairs` hold struct us_pair */
	struct dp_acct_tab acct;
	uint32_t queue_max; /* --queue-kb, in bytes: common/splice.h */
};

static void pair_free(void *arg) { free(arg); }

static void pair_done(struct splice_pair *sp, int err)
{
	struct us_pair *p = container_of(sp, struct us_pair, sp);
	M_ADD(splice_bytes_total, (int64_t)(sp->dir[0].bytes + sp->dir[1].bytes));
	M_PLANE_BYTES(userspace, (int64_t)(sp->dir[0].bytes + sp->dir[1].bytes));
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
static void pairs_kill(struct spool_worker *w, uint64_t key)
{
	struct dlist *n = w->pairs.next;
	while (n != &w->pairs) {
		struct us_pair *p = container_of(n, struct us_pair, node);
		n = n->next;
		if (p->acct && p->acct->key == key)
			pair_done(&p->sp, ECONNABORTED);
	}
}

static void pair_start(struct spool_worker *w, const struct handoff_job *j)
{
	struct us_plane *u = w->pool->data;
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
		dp_acct_pair_put(&u->acct, j->acct);
		M_DEC(splices_active);
		return;
	}
	p->u = u;
	p->acct = j->acct;
	if (p->acct) { /* dir[0]: player -> agent */
		p->sp.dir[0].count = &p->acct->bytes[DP_TO_AGENT];
		p->sp.dir[1].count = &p->acct->bytes[DP_TO_PLAYER];
	}
	/* bytes queued here in front of a slow reader are lag: both directions bounded */
	p->sp.dir[0].queue_max = p->sp.dir[1].queue_max = u->queue_max;
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

/* A pair still running when the plane stops (its worker's thread has ended). */
static void pairs_left(struct spool_worker *w)
{
	struct us_plane *u = w->pool->data;
	struct us_pair *p;
	while ((p = dlist_first(&w->pairs, struct us_pair, node))) {
		dlist_del(&p->node);
		M_DEC(splices_active);
		splice_pair_close(&p->sp);
		dp_acct_pair_put(&u->acct, p->acct);
		free(p);
	}
}

static int us_start(struct dataplane *dp, const struct relay_cfg *cfg)
{
	struct us_plane *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->queue_max = (uint32_t)cfg->queue_kb << 10;
	if (dp_acct_init(&u->acct, DP_ACCT_MAX)) {
		free(u);
		return -ENOMEM;
	}
	dp->priv = u;
	int rc = spool_start(&u->pool, cfg->workers, pair_start, u); /* 0: one per CPU */
	if (rc)
		return rc; /* us_stop ends what started */
	pr_info("data plane: userspace splice(2), %d worker thread(s)", u->pool.nw);
	return 0;
}

static int us_join(struct dataplane *dp, int player_fd, int agent_fd, uint64_t tunnel_key)
{
	struct us_plane *u = dp->priv;
	/* counted before the worker can end it */
	M_INC(splices_active);
	struct handoff_job j = {
		.player_fd = player_fd, .agent_fd = agent_fd, .tunnel_key = tunnel_key};
	int err = 0;
	if (tunnel_key && !(j.acct = dp_acct_pair_get(&u->acct, tunnel_key, &err)))
		pr_rl(LOG_WARN, "data plane: pair of tunnel %016llx relayed uncounted: %s",
		      (unsigned long long)tunnel_key, strerror(-err));
	int rc = spool_push(&u->pool, &j);
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
	return u ? spool_push_all(&u->pool, &j) : -ENODEV;
}

static void us_stop(struct dataplane *dp)
{
	struct us_plane *u = dp->priv;
	if (!u)
		return;
	spool_stop(&u->pool, pairs_left, job_drop, u);
	dp_acct_free(&u->acct);
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
