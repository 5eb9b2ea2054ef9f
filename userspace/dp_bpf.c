/* BPF data plane: player and agent sockets are spliced inside the kernel by bpf/splice.bpf.c
 * (SOCKHASH + sk_skb stream verdict). Userspace joins pairs, carries FIN/RST across, throttles
 * senders whose reader fell behind, and cleans up; one event loop thread does all of it. This
 * file is the plane itself: start (load, attach, pin, self-test), join, stop, and the requests
 * the verdict program sends; dp_bpf_int.h lists the files doing the rest.
 *
 * What the kernel does not do for us (docs/sockmap.md, each reproduced here):
 *  - bytes queued before a socket gets its verdict are only forwarded when something runs the
 *    socket's data_ready again: one non-blocking recv() after insertion does (section 4);
 *  - a redirect lands in a queue in front of the peer's TCP send queue that userspace cannot
 *    see: a FIN is only carried across (shutdown(SHUT_WR) of the peer) once the peer's own
 *    counters (tcp_info bytes_acked + SIOCOUTQ) show that every byte redirected to it went in
 *    (section 2);
 *  - epoll on a spliced socket may report EPOLLIN with nothing to read: only RDHUP is watched
 *    (edge-triggered); ERR and HUP always come (section 7);
 *  - there is no backpressure (section 3): when a reader falls behind, the program asks us to
 *    clamp the sender's TCP receive window (TCP_WINDOW_CLAMP): the sender then has almost no
 *    window, and the bytes keep flowing on the kernel path, untouched. When the reader caught
 *    up, the window is restored. A reader over --max-lag-mb, or a throttled one that
 *    acknowledges nothing for a while, is cut.
 * A socket's bytes never leave the kernel path once on it: both ways of taking a receiving
 * socket off (SK_PASS to itself, removal from the verdict map) were measured to duplicate or
 * drop data on this kernel (tests/splice/README.md).
 * A pair that cannot be inserted (a socket already half-closed is refused by the maps, or they
 * are full) is relayed with splice(2) on the same loop; a direction whose socket could not get
 * its verdict at all is relayed by plain recv()/send() from the start. */
#include "bpf_log.h"
#include "config.h"
#include "dataplane.h"
#include "dp_bpf_int.h"
#include "metrics.h"
#include "splice.skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SWEEP_MS 1000 /* look for lost ring-buffer events */

/* A request of the verdict program (dvv_events), or one the sweep found in dvv_conns. */
static void on_event(struct bp_plane *b, uint64_t cookie, uint32_t reason, uint64_t value)
{
	struct bp_side *s = bp_side_by_cookie(b, cookie);
	struct bp_pair *p = s ? s->pair : NULL;
	if (!p || p->dead)
		return;
	switch (reason) {
	case DVV_EV_CUT_LAG:
		pr_rl(LOG_INFO, "bpf splice: reader %llu bytes behind (limit %d MiB): cut",
		      (unsigned long long)value, b->max_lag_mb);
		atomic_fetch_add(&b->n_cut_lag, 1);
		bp_pair_finish(b, p, ECONNABORTED);
		break;
	case DVV_EV_REDIR_FAIL:
		pr_rl(LOG_WARN, "bpf splice: redirect failed, %llu bytes dropped: cut",
		      (unsigned long long)value);
		bp_pair_abort(b, p, EPIPE);
		break;
	case DVV_EV_THROTTLE: {
		int rc = bp_throttle_request(b, s, value);
		if (rc)
			bp_pair_abort(b, p, -rc);
		else
			bp_pair_service(b, p); /* polls for the release, arms the stall watch */
		break;
	}
	}
}

static int event_cb(void *ctx, void *data, size_t size)
{
	const struct dvv_splice_event *ev = data;
	if (size >= sizeof(*ev))
		on_event(ctx, ev->cookie, ev->reason, ev->value);
	return 0;
}

static void rb_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct bp_plane *b = l->data;
	ring_buffer__consume(b->rb);
}

/* Events can be lost when the ring is full; the flags in dvv_conns cannot: when the lost
 * counter moves, walk every pair once. */
static void sweep_cb(struct loop *l, struct loop_timer *t)
{
	struct bp_plane *b = l->data;
	struct dvv_verdict_count v[DVV_V_MAX];
	ring_buffer__consume(b->rb);
	if (!bp_verdicts_read(b, v) && v[DVV_V_EVENT_LOST].skbs != b->events_lost_seen) {
		b->events_lost_seen = v[DVV_V_EVENT_LOST].skbs;
		dlist_for_each_safe(it, next, &b->pairs) {
			struct bp_pair *p = container_of(it, struct bp_pair, node);
			for (int i = 0; i < 2 && !p->dead; i++) {
				struct dvv_conn c;
				if (!p->conns_written || bp_conn_get(b, &p->s[i], &c))
					continue;
				if (c.flags & DVV_CONN_LAG)
					on_event(b, p->s[i].cookie, DVV_EV_CUT_LAG, 0);
				else if (c.flags & DVV_CONN_REDIR_FAIL)
					on_event(b, p->s[i].cookie, DVV_EV_REDIR_FAIL, 0);
				else if ((c.flags & DVV_CONN_THROTTLED) && !p->s[i].throttled)
					on_event(b, p->s[i].cookie, DVV_EV_THROTTLE, 0);
			}
		}
	}
	loop_timer_arm(l, t, SWEEP_MS);
}

static void *plane_main(void *arg)
{
	struct bp_plane *b = arg;
	loop_run(&b->loop);
	return NULL;
}

static void stop_cb(struct loop *l)
{
	bp_take_jobs(l);
	loop_stop(l);
}

/* Undo whatever start did, in reverse; also the stop of a running plane. */
static void plane_destroy(struct bp_plane *b)
{
	if (b->running) {
		b->loop.on_wake = stop_cb;
		loop_wake(&b->loop);
		pthread_join(b->thread, NULL);
		b->running = false;
	}
	if (b->loop_ready) {
		struct bp_pair *p;
		while ((p = dlist_first(&b->pairs, struct bp_pair, node)))
			bp_pair_finish(b, p, 0);
		bp_demoted_close_all(b);
		handoff_drain(&b->jobs, bp_job_drop, b);
		loop_timer_cancel(&b->loop, &b->sweep);
		loop_free(&b->loop);
		b->loop_ready = false;
	}
	ring_buffer__free(b->rb);
	b->rb = NULL;
	if (b->attached)
		bpf_prog_detach2(bpf_program__fd(b->skel->progs.dvv_splice_verdict), b->socks_fd,
				 BPF_SK_SKB_STREAM_VERDICT);
	pins_remove(&b->pins, b->skel ? b->skel->obj : NULL, NULL);
	splice_bpf__destroy(b->skel);
	if (b->by_cookie.b) {
		htab_free(&b->by_cookie);
		dp_acct_free(&b->acct); /* every pair released its tunnel; holders released theirs */
	}
	handoff_free(&b->jobs);
	free(b);
}

/* ---- per-tunnel accounting: a dvv_tunnels element lives exactly as long as its dp_acct entry
 * (dp_acct.h), so the map holds the tunnels with pairs or a holder and never leaks ---- */

_Static_assert(DP_ACCT_MAX == DVV_SPLICE_MAX_TUNNELS, "one dvv_tunnels element per dp_acct entry");

static int acct_map_create(void *owner, uint64_t key)
{
	struct bp_plane *b = owner;
	struct dvv_tunnel_bytes zero = {0};
	return bpf_map_update_elem(b->tunnels_fd, &key, &zero, BPF_ANY) < 0 ? -errno : 0;
}

static void acct_map_delete(void *owner, uint64_t key)
{
	struct bp_plane *b = owner;
	bpf_map_delete_elem(b->tunnels_fd, &key);
}

/* Kernel-path bytes (dvv_tunnels) plus what userspace relayed (fallbacks). The dp_acct entry is
 * read first: while it exists so does the map element, created before it. */
static int bpf_tunnel_bytes(struct dataplane *dp, uint64_t key, uint64_t *to_agent,
			    uint64_t *to_player)
{
	struct bp_plane *b = dp->priv;
	struct dvv_tunnel_bytes t = {0};
	int rc = dp_acct_read(&b->acct, key, to_agent, to_player);
	if (rc)
		return rc;
	if (bpf_map_lookup_elem(b->tunnels_fd, &key, &t) < 0)
		return -errno;
	*to_agent += t.to_agent;
	*to_player += t.to_player;
	return 0;
}

static struct dp_acct *bpf_acct_hold(struct dataplane *dp, uint64_t key)
{
	struct bp_plane *b = dp->priv;
	return dp_acct_hold(&b->acct, key);
}

static void bpf_acct_release(struct dataplane *dp, struct dp_acct *a)
{
	struct bp_plane *b = dp->priv;
	dp_acct_put(&b->acct, a);
}

/* ---- the plane ---- */

static int bpf_start(struct dataplane *dp, const struct relay_cfg *cfg)
{
	const char *ff = getenv("DVV_BPF_FORCE_FAIL");
	int rc;
	if (ff && !strcmp(ff, "1")) {
		pr_warn("data plane bpf: DVV_BPF_FORCE_FAIL=1: failing as if the program did not load");
		return -ENOEXEC;
	}
	struct bp_plane *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	/* under auto a failure here is followed by the fallback: the relay keeps working */
	b->fail_level = strcmp(cfg->dataplane, "auto") ? LOG_ERROR : LOG_WARN;
	handoff_init(&b->jobs, &b->loop);
	dlist_init(&b->pairs);
	dlist_init(&b->demoted);
	b->ncpu = libbpf_num_possible_cpus();
	if (b->ncpu <= 0) {
		rc = b->ncpu ? b->ncpu : -EINVAL;
		goto fail;
	}
	bpf_log_install();

	char dir[PATH_MAX];
	if (snprintf(dir, sizeof(dir), "%s/%s", cfg->bpf_pin_root, cfg->instance_id) >=
	    (int)sizeof(dir)) {
		rc = -ENAMETOOLONG;
		goto fail;
	}
	if ((rc = pins_prepare(&b->pins, dir, "data plane bpf", b->fail_level)))
		goto fail;
	if (!(b->skel = splice_bpf__open())) {
		rc = -errno;
		log_msg(b->fail_level, "data plane bpf: cannot open the BPF object: %s", strerror(-rc));
		goto fail;
	}
	b->max_lag_mb = cfg->max_lag_mb > 0 ? cfg->max_lag_mb : 64;
	uint64_t max_lag = (uint64_t)b->max_lag_mb << 20;
	bp_throttle_limits(b, max_lag);
	b->skel->rodata->dvv_max_lag_bytes = max_lag;
	b->skel->rodata->dvv_pause_lag_bytes = b->throttle_lag;
	if ((rc = splice_bpf__load(b->skel))) {
		log_msg(b->fail_level, "data plane bpf: cannot load the splice program (%s): %s", strerror(-rc),
		       bpf_load_hint(rc));
		goto fail;
	}
	b->socks_fd = bpf_map__fd(b->skel->maps.dvv_socks);
	b->targets_fd = bpf_map__fd(b->skel->maps.dvv_targets);
	b->conns_fd = bpf_map__fd(b->skel->maps.dvv_conns);
	b->tunnels_fd = bpf_map__fd(b->skel->maps.dvv_tunnels);
	b->verdicts_fd = bpf_map__fd(b->skel->maps.dvv_verdicts);
	/* sockmap programs attach to the map, the skeleton does not do it */
	if (bpf_prog_attach(bpf_program__fd(b->skel->progs.dvv_splice_verdict), b->socks_fd,
			    BPF_SK_SKB_STREAM_VERDICT, 0) < 0) {
		rc = -errno;
		log_msg(b->fail_level, "data plane bpf: cannot attach the stream verdict to the sockhash: %s",
		       strerror(-rc));
		goto fail;
	}
	b->attached = true;
	if ((rc = pins_create(&b->pins, b->skel->obj, NULL, NULL)))
		goto fail;

	if ((rc = loop_init(&b->loop)))
		goto fail;
	b->loop_ready = true;
	b->loop.data = b;
	b->loop.on_wake = bp_take_jobs;
	if ((rc = htab_init(&b->by_cookie, 1024)) || (rc = dp_acct_init(&b->acct, DP_ACCT_MAX)))
		goto fail;
	b->acct.owner = b;
	b->acct.on_create = acct_map_create;
	b->acct.on_free = acct_map_delete;
	b->rb = ring_buffer__new(bpf_map__fd(b->skel->maps.dvv_events), event_cb, b, NULL);
	if (!b->rb) {
		rc = -errno;
		log_msg(b->fail_level, "data plane bpf: ring buffer: %s", strerror(-rc));
		goto fail;
	}
	b->rb_io = (struct loop_io){.fd = ring_buffer__epoll_fd(b->rb), .cb = rb_io_cb};
	if ((rc = loop_io_set(&b->loop, &b->rb_io, EPOLLIN)))
		goto fail;
	b->sweep.cb = sweep_cb;
	loop_timer_arm(&b->loop, &b->sweep, SWEEP_MS);
	if ((rc = -pthread_create(&b->thread, NULL, plane_main, b)))
		goto fail;
	b->running = true;

	if ((rc = bp_selftest(b))) {
		log_msg(b->fail_level, "data plane bpf: self-test splice on loopback failed (%s): not using it",
		       strerror(-rc));
		goto fail;
	}
	dp->priv = b;
	pr_info("data plane: bpf sockhash splice, lag limit %d MiB, maps pinned in %s",
		b->max_lag_mb, b->pins.path);
	return 0;
fail:
	plane_destroy(b);
	return rc ? rc : -EINVAL;
}

static int bpf_join(struct dataplane *dp, int player_fd, int agent_fd, uint64_t tunnel_key)
{
	struct bp_plane *b = dp->priv;
	if (!b) {
		close(player_fd);
		close(agent_fd);
		return -ENODEV;
	}
	M_INC(splices_active);
	int rc = bp_enqueue(b, player_fd, agent_fd, tunnel_key, false);
	if (rc) {
		M_DEC(splices_active);
		M_INC(splice_errors_total);
	}
	return rc;
}

/* A kill job: both fds -1 (pair_attach ends the tunnel's pairs instead of joining). */
static int bpf_kill(struct dataplane *dp, uint64_t tunnel_key)
{
	struct bp_plane *b = dp->priv;
	struct handoff_job j = {.player_fd = -1, .agent_fd = -1, .tunnel_key = tunnel_key};
	return b ? handoff_push(&b->jobs, &j) : -ENODEV;
}

static void bpf_stop(struct dataplane *dp)
{
	struct bp_plane *b = dp->priv;
	if (!b)
		return;
	plane_destroy(b);
	dp->priv = NULL;
}

const struct dataplane_ops dp_bpf_ops = {
	.name = "bpf",
	.start = bpf_start,
	.join = bpf_join,
	.stop = bpf_stop,
	.kill = bpf_kill,
	.tunnel_bytes = bpf_tunnel_bytes,
	.acct_hold = bpf_acct_hold,
	.acct_release = bpf_acct_release,
};
