/* The relay's lifetime: start-up (listeners, TLS, JWT key, data plane, Redis, admin), the tick
 * (attach tokens, route cache, Redis heartbeat, end of a drain), draining on the first signal,
 * and the ordered shut-down. relay.h holds the types the control plane's files share. */
#include "relay.h"
#include "admin.h"
#include "advertise.h"
#include "enforce.h"
#include "events.h"
#include "forward.h"
#include "log.h"
#include "metrics.h"
#include "oneport.h"
#include "rredis.h"
#include "xdp_guard.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

static struct loop_io sig_io;
static int sig_count;
static void relay_reload_keys(struct relay *r, bool forced);

static void sig_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct relay *r = l->data;
	struct signalfd_siginfo si;
	while (read(io->fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP) {
			relay_reload_keys(r, true);
			continue;
		}
		if (++sig_count > 1 || r->cfg.drain_timeout_s == 0) {
			pr_info("signal %u: exiting now", si.ssi_signo);
			loop_stop(l);
			return;
		}
		pr_info("signal %u: draining (up to %d s; signal again to exit now)", si.ssi_signo,
			r->cfg.drain_timeout_s);
		relay_begin_drain(r);
	}
}

/* JWT key rotation: the keys are read again on SIGHUP (forced) and whenever --jwt-pubkey's
 * mtime changed (checked every KEYS_CHECK_MS). A failed reload keeps the keys in use. */
#define KEYS_CHECK_MS 10000
static uint64_t keys_checked_ms;

static void relay_reload_keys(struct relay *r, bool forced)
{
	char err[512];
	int rc;
	keys_checked_ms = r->loop.now;
	if (forced)
		r->auth.src_mtime_ns = -1; /* never a real mtime: reload */
	pthread_rwlock_wrlock(&r->auth_lock); /* the handshake threads verify with these keys */
	rc = auth_reload_if_changed(&r->auth, err, sizeof(err));
	pthread_rwlock_unlock(&r->auth_lock);
	if (rc > 0) {
		char kids[AUTH_KEYS_MAX * (AUTH_KID_MAX + 2) + 1] = "";
		for (int i = 0; i < r->auth.nkeys; i++) {
			strcat(kids, i ? "," : "");
			strcat(kids, r->auth.keys[i].kid[0] ? r->auth.keys[i].kid : "(no kid)");
		}
		pr_info("JWT keys reloaded from %s: %d key(s): %s", r->cfg.jwt_pubkey,
			r->auth.nkeys, kids);
	} else if (rc < 0) {
		pr_err("JWT keys: reload failed, keeping the %d key(s) in use: %s", r->auth.nkeys,
		       err);
	}
}

/* The region's other active relays (least loaded first; draining ones have left the load set),
 * kept for WELCOME peers and as MOVE targets when we drain or lose Redis. */
static void peers_cb(struct relay *r, void *priv, bool err, const char **addrs, size_t n)
{
	(void)priv;
	size_t k = 0;
	if (err) {
		if (r->draining)
			tunnel_send_all_away(r, true); /* with the list we had */
		return;
	}
	for (size_t i = 0; i < n && k < CTL_PEERS_MAX; i++) {
		if (!strcmp(addrs[i], r->cfg.public_agent_addr) || strlen(addrs[i]) > CTL_PEER_ADDR_MAX)
			continue;
		snprintf(r->peers[k++], sizeof(r->peers[0]), "%s", addrs[i]);
	}
	r->npeers = k;
	if (r->draining)
		tunnel_send_all_away(r, true);
}

/* Draining: readiness drops at once (admin reads the gauge), the heartbeat takes us out of
 * placement, and every agent is told to go; its tunnel keeps serving until the new session is
 * up (make-before-break). The relay exits when nothing is left or at the drain deadline. */
void relay_begin_drain(struct relay *r)
{
	if (r->draining)
		return;
	r->draining = true;
	M_SET(draining, 1);
	r->drain_deadline_ms = r->loop.now + (uint64_t)r->cfg.drain_timeout_s * 1000;
	rredis_heartbeat(r); /* leave the placement set at once */
	/* fresh targets first; without Redis, the cached list (or GOODBYE "draining") */
	if (rredis_move_targets(r, peers_cb, NULL))
		tunnel_send_all_away(r, true);
}

/* Redis gone for longer than the whole lease TTL: our leases have expired and other relays no
 * longer find our tunnels, so agents go to peers we know (make-before-break: established
 * players stay, and the session serves until the agent's new one is up). Not earlier: a Redis
 * Cluster failover (a few seconds) cuts every relay at once, and moving then only sends agents
 * to peers that cannot register them either. Without known peers they stay: a relay that is
 * only cut from Redis still serves the players that reach it. */
static void check_redis_cut(struct relay *r)
{
	if (rredis_up(r)) {
		r->redis_down_since_ms = 0;
		r->cut_handover = false;
		return;
	}
	if (!r->redis_down_since_ms) {
		r->redis_down_since_ms = r->loop.now;
		return;
	}
	if (r->cut_handover || !r->npeers ||
	    r->loop.now - r->redis_down_since_ms <= (uint64_t)r->cfg.lease_ttl_s * 1000)
		return;
	r->cut_handover = true;
	pr_warn("redis unreachable for %llu ms (over the lease TTL): moving agents to %zu peer "
		"relay(s)",
		(unsigned long long)(r->loop.now - r->redis_down_since_ms), r->npeers);
	tunnel_send_all_away(r, false);
}

static void tick_cb(struct loop *l, struct loop_timer *t)
{
	struct relay *r = l->data;
	atomic_store(&r->loop_alive_ms, l->now);
	relay_tick_tunnels(r);
	enforce_tick(r);
	forward_tick(r);
	if (l->now - keys_checked_ms >= KEYS_CHECK_MS)
		relay_reload_keys(r, false);
	if (l->now - r->last_heartbeat_ms >= (uint64_t)r->cfg.heartbeat_ms) {
		r->last_heartbeat_ms = l->now;
		rredis_heartbeat(r);
		rredis_move_targets(r, peers_cb, NULL); /* fails quietly while Redis is down */
	}
	check_redis_cut(r);
	if (r->draining) {
		int64_t spliced = M_GET(splices_active);
		if ((spliced == 0 && r->ntunnels == 0 && dlist_empty(&r->players)) ||
		    l->now >= r->drain_deadline_ms) {
			pr_info("drain finished: %d tunnel session(s), %lld spliced player(s)%s left",
				r->ntunnels, (long long)spliced,
				dlist_empty(&r->players) ? "" : " and players in the control plane");
			loop_stop(l);
			return;
		}
		/* sessions that came up since (registration in flight at SIGTERM) go too */
		tunnel_send_all_away(r, true);
	}
	uint64_t next = (uint64_t)r->cfg.heartbeat_ms < 1000 ? (uint64_t)r->cfg.heartbeat_ms : 1000;
	loop_timer_arm(l, t, next);
}

static int listen_on(struct relay *r, const char *spec, struct net_addr *a, struct listener *ls,
		     const char *name, loop_io_cb cb)
{
	char err[160];
	if (net_parse_addr(spec, a, false, err, sizeof(err))) {
		pr_err("%s", err);
		return -EINVAL;
	}
	int fd = net_listen(a, 4096, err, sizeof(err));
	if (fd < 0) {
		pr_err("%s", err);
		return fd;
	}
	return listener_open(&r->loop, ls, fd, name, cb);
}

/* Every connection costs a descriptor (a joined player two): run with the soft RLIMIT_NOFILE
 * raised to the hard limit. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		pr_warn("fd limit: getrlimit: %s", strerror(errno));
		return;
	}
	rlim_t want = rl.rlim_max;
	if (want == RLIM_INFINITY) {
		/* the kernel caps descriptors per process at fs.nr_open */
		unsigned long long v;
		FILE *f = fopen("/proc/sys/fs/nr_open", "re");
		want = 1048576;
		if (f) {
			if (fscanf(f, "%llu", &v) == 1)
				want = (rlim_t)v;
			fclose(f);
		}
	}
	if (rl.rlim_cur < want) {
		struct rlimit n = {.rlim_cur = want, .rlim_max = rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &n) < 0)
			pr_warn("fd limit: cannot raise %llu to %llu: %s",
				(unsigned long long)rl.rlim_cur, (unsigned long long)want,
				strerror(errno));
		else
			rl.rlim_cur = want;
	}
	if (rl.rlim_max == RLIM_INFINITY)
		pr_info("fd limit: %llu (hard: unlimited)", (unsigned long long)rl.rlim_cur);
	else
		pr_info("fd limit: %llu (hard %llu)", (unsigned long long)rl.rlim_cur,
			(unsigned long long)rl.rlim_max);
}

/* --advertise-addr: find the address other relays dial for --internal-listen and fix it as
 * --internal-addr before forwarding starts (forward.c then publishes it as given). */
static int relay_advertise(struct relay *r)
{
	struct net_addr la;
	char err[320], addr[sizeof(r->cfg.internal_addr)];
	int rc;
	if (!r->cfg.advertise_addr[0] || r->cfg.internal_addr[0] || !r->cfg.internal_listen[0])
		return 0;
	if (net_parse_addr(r->cfg.internal_listen, &la, false, err, sizeof(err))) {
		pr_err("--internal-listen: %s", err);
		return -EINVAL;
	}
	rc = advertise_resolve(r->cfg.advertise_addr, net_addr_port((struct sockaddr *)&la.ss), addr,
			       sizeof(addr), err, sizeof(err));
	if (rc) {
		pr_err("%s", err);
		return rc;
	}
	snprintf(r->cfg.internal_addr, sizeof(r->cfg.internal_addr), "%s", addr);
	pr_info("--advertise-addr %s: publishing %s for forwarding", r->cfg.advertise_addr, addr);
	return 0;
}

int relay_init(struct relay *r)
{
	char err[256];
	int rc;
	r->player_l.io.fd = r->agent_l.io.fd = r->internal_l.io.fd = -1;
	dlist_init(&r->tunnels);
	dlist_init(&r->players);
	dlist_init(&r->dataconns);
	raise_fd_limit();
	if ((rc = loop_init(&r->loop)))
		return rc;
	r->loop.data = r;
	atomic_store(&r->loop_alive_ms, mono_ms());
	snprintf(r->suffix, sizeof(r->suffix), ".%s.%s", r->cfg.region, r->cfg.base_domain);
	for (char *p = r->suffix; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p + 32);

	r->tls = tls_server_ctx(r->cfg.tls_cert, r->cfg.tls_key, err, sizeof(err));
	if (!r->tls) {
		pr_err("TLS: %s", err);
		return -EINVAL;
	}
	pthread_rwlock_init(&r->auth_lock, NULL);
	r->auth.issuer = r->cfg.jwt_issuer;
	r->auth.audience = r->cfg.jwt_audience;
	r->auth.leeway_s = 30;
	if (auth_load_pubkey(&r->auth, r->cfg.jwt_pubkey, err, sizeof(err))) {
		pr_err("JWT key: %s", err);
		return -EINVAL;
	}
	keys_checked_ms = r->loop.now;
	if (htab_init(&r->by_host, 1024) || htab_init(&r->by_tid, 1024) ||
	    htab_init(&r->tokens, 4096) ||
	    rl_init(&r->rl, 65536, (uint32_t)r->cfg.join_rate_v4, (uint32_t)r->cfg.join_rate_v6,
		    (uint32_t)r->cfg.join_burst, (uint32_t)r->cfg.max_pending_per_source) ||
	    rl_init(&r->agent_rl, 16384, 1, 1, 1, (uint32_t)r->cfg.agent_unauth_per_source))
		return -ENOMEM;
	r->agent_rl.v6_pending_bytes = 8; /* one IPv6 /64 is one source: hosts get whole /64s */
	rl_tb_init(&r->tls_tb, (uint32_t)r->cfg.agent_tls_rate, (uint32_t)r->cfg.agent_tls_rate);
	rl_tb_init(&r->reg_tb, (uint32_t)r->cfg.agent_reg_rate, (uint32_t)r->cfg.agent_reg_rate);

	/* signals arrive through the loop; block them before any thread starts */
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGHUP); /* reload the JWT keys */
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);
	sig_io = (struct loop_io){.fd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC), .cb = sig_cb};
	if (sig_io.fd < 0 || loop_io_set(&r->loop, &sig_io, EPOLLIN))
		return -errno;

	if (strcmp(r->cfg.dataplane, "userspace") || r->cfg.xdp_ifaces[0]) {
		/* before our own pins exist: the bpf parts pin under <root>/<instance-id>/ */
		char host[48];
		relay_cfg_default_host(host, sizeof(host));
		relay_remove_stale_pins(r->cfg.bpf_pin_root, host);
	}
	if ((rc = dataplane_select(&r->dp, &r->cfg)))
		return rc;
	if (r->cfg.one_port[0]) {
		/* one socket; player_l and agent_l only take what oneport.c hands them */
		if ((rc = listener_open(&r->loop, &r->player_l, -1, "player", player_accept_cb)) ||
		    (rc = listener_open(&r->loop, &r->agent_l, -1, "agent", agent_accept_cb)) ||
		    (rc = oneport_start(r)))
			return rc;
	} else if ((rc = listen_on(r, r->cfg.player_listen, &r->player_addr, &r->player_l,
				   "player", player_accept_cb)) ||
		   (rc = listen_on(r, r->cfg.agent_listen, &r->agent_addr, &r->agent_l, "agent",
				   agent_accept_cb))) {
		return rc;
	}
	r->agent_l.keepalive = true;
	if ((rc = relay_advertise(r)))
		return rc;
	if ((rc = forward_init(r)))
		return rc;
	r->internal_l.keepalive = true;
	if (r->cfg.xdp_ifaces[0]) {
		char pin[300];
		snprintf(pin, sizeof(pin), "%s/%s", r->cfg.bpf_pin_root, r->cfg.instance_id);
		rc = xdp_guard_start(&r->xdp, &r->cfg, net_addr_port((struct sockaddr *)&r->player_addr.ss),
				     net_addr_port((struct sockaddr *)&r->agent_addr.ss), pin);
		if (rc)
			return rc;
	}
	if ((rc = tunnel_hs_start(r))) /* threads: after the signal mask above */
		return rc;
	if ((rc = rredis_start(r, tunnel_each_lease, tunnel_lease_lost)) || (rc = usage_init(r)) ||
	    (rc = admin_start(r)))
		return rc ? rc : -EINVAL;
	if ((rc = events_start(r)))
		return rc;
	r->usage_on_total = enforce_usage_total; /* each flush's period totals drive the caps */
	r->tick.cb = tick_cb;
	loop_timer_arm(&r->loop, &r->tick, 0);
	if (r->cfg.one_port[0])
		pr_info("relay %s up: players and agents on one port %s, names *%s",
			r->cfg.instance_id, r->cfg.one_port, r->suffix);
	else
		pr_info("relay %s up: players on %s, agents on %s, names *%s", r->cfg.instance_id,
			r->cfg.player_listen, r->cfg.agent_listen, r->suffix);
	return 0;
}

int relay_run(struct relay *r) { return loop_run(&r->loop); }

void relay_free(struct relay *r)
{
	admin_stop(r);
	oneport_stop(r);
	listener_close(&r->loop, &r->player_l);
	listener_close(&r->loop, &r->agent_l);
	tunnel_hs_stop(r); /* handshakes in progress: closed, never registered */
	events_stop(r);
	usage_stop(r);	/* the last counts and live entries, while Redis is still ours */
	rredis_stop(r); /* releases our leases while we still know them */
	tunnel_close_all(r, "relay exit");
	player_close_all(r);
	dataconn_close_all(r);
	forward_free(r);
	if (r->dp.ops)
		r->dp.ops->stop(&r->dp);
	if (r->xdp)
		xdp_guard_stop(r->xdp);
	if (sig_io.fd >= 0)
		close(sig_io.fd);
	loop_free(&r->loop);
	htab_free(&r->by_host);
	htab_free(&r->by_tid);
	htab_free(&r->tokens);
	rl_free(&r->rl);
	rl_free(&r->agent_rl);
	auth_cfg_free(&r->auth);
	pthread_rwlock_destroy(&r->auth_lock);
	if (r->tls)
		SSL_CTX_free(r->tls);
}
