/* The admin HTTP port (admin.h): /healthz, /readyz and the Prometheus text of /metrics, built
 * from atomics on libmicrohttpd's thread. */
#include "admin.h"
#include "splice.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "rredis.h"
#include "xdp_guard.h"
#include "dp_bpf.h"

#include <linux/types.h>
#include "../bpf/xdp_guard.h"

#include <dirent.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct relay_metrics g_metrics;

struct admin {
	struct MHD_Daemon *d;
};

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return;
		b->p = p;
		b->cap = cap;
	}
}

static bool loop_alive(struct relay *r)
{
	uint64_t a = atomic_load(&r->loop_alive_ms);
	return mono_ms() - a < 5000;
}

/* One Prometheus family: HELP and TYPE lines. */
static void family(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP dvv_relay_%s %s\n# TYPE dvv_relay_%s %s\n", name, help, name, type);
}

static void sample(struct sbuf *b, const char *name, const char *type, const char *help,
		   unsigned long long v)
{
	family(b, name, type, help);
	sb_printf(b, "dvv_relay_%s %llu\n", name, v);
}

/* The in-kernel planes' own counters: read from their maps at scrape time (a few syscalls). */
static void render_bpf_metrics(struct relay *r, struct sbuf *b)
{
	struct dvv_splice_stats st;
	if (r->dp.ops == &dp_bpf_ops && dp_bpf_stats(&r->dp, &st, false) == 0) {
		family(b, "bpf_verdicts_total", "counter",
		       "sk_skb verdicts of the in-kernel splice, by verdict (skbs)");
		for (int i = 0; i < DVV_V_MAX; i++)
			if (dvv_verdict_names[i])
				sb_printf(b, "dvv_relay_bpf_verdicts_total{verdict=\"%s\"} %llu\n",
					  dvv_verdict_names[i], (unsigned long long)st.verdicts[i].skbs);
		family(b, "bpf_verdict_bytes_total", "counter",
		       "bytes seen by the sk_skb verdict program, by verdict");
		for (int i = 0; i < DVV_V_MAX; i++)
			if (dvv_verdict_names[i])
				sb_printf(b, "dvv_relay_bpf_verdict_bytes_total{verdict=\"%s\"} %llu\n",
					  dvv_verdict_names[i], (unsigned long long)st.verdicts[i].bytes);
		sample(b, "bpf_pairs_active", "gauge", "pairs spliced in the kernel now", st.pairs_active);
		sample(b, "bpf_pairs_total", "counter", "pairs joined on the bpf plane", st.pairs_total);
		sample(b, "bpf_pairs_demoted_total", "counter",
		       "pairs that could not be inserted and were relayed with splice(2)", st.pairs_demoted);
		sample(b, "bpf_throttles_total", "counter",
		       "senders clamped because their reader lagged", st.throttles);
		sample(b, "bpf_throttled_now", "gauge", "sockets clamped now", st.throttled_now);
		sample(b, "bpf_user_bytes_total", "counter",
		       "bytes the bpf plane relayed in userspace (directions it could not hook)",
		       st.user_bytes);
		sample(b, "bpf_cut_lag_total", "counter", "pairs cut because a reader lagged past the cap",
		       st.cut_lag);
		sample(b, "bpf_cut_error_total", "counter", "pairs torn down by RST or a socket error",
		       st.cut_error);
		sample(b, "bpf_drain_timeouts_total", "counter",
		       "half-closes abandoned because redirected bytes never left", st.drain_timeouts);
	}
	/* the userspace plane's queue bound (common/splice.h), process-wide */
	sample(b, "splice_clamps_total", "counter",
	       "userspace plane: senders whose window was clamped because a reader fell behind",
	       atomic_load_explicit(&splice_n_clamps, memory_order_relaxed));
	sample(b, "splice_unclamps_total", "counter",
	       "userspace plane: clamped senders given their window back",
	       atomic_load_explicit(&splice_n_unclamps, memory_order_relaxed));
	struct dvv_xdp_counters xc;
	if (r->xdp && xdp_guard_counters(r->xdp, &xc) == 0) {
		static const char *const names[] = {
			"pass_other", "pass_short", "drop_deny",   "pass_allow",
			"drop_rate",  "drop_budget", "pass_syn",   "pass_reserve",
			"tx_cookie",  "pass_cookie", "pass_kernel_cookie", "drop_ack"};
		const __u64 vals[] = {xc.pass_other,  xc.pass_short,  xc.drop_deny,   xc.pass_allow,
				      xc.drop_rate,   xc.drop_budget, xc.pass_syn,    xc.pass_reserve,
				      xc.tx_cookie,   xc.pass_cookie, xc.pass_kernel_cookie,
				      xc.drop_ack};
		family(b, "xdp_packets_total", "counter", "packets seen by the XDP SYN guard, by verdict");
		for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
			sb_printf(b, "dvv_relay_xdp_packets_total{verdict=\"%s\"} %llu\n", names[i],
				  (unsigned long long)vals[i]);
		sample(b, "xdp_syncookies", "gauge",
		       "SYN cookie mode in force: 0 off (or fallen back), 1 over the budget, 2 always",
		       xdp_guard_cookie_mode(r->xdp));
		struct dvv_cookie_tc_counters tc;
		if (xdp_guard_cookie_counters(r->xdp, &tc) == 0) {
			family(b, "xdp_cookie_acks_total", "counter",
			       "cookie ACKs at TC ingress: assigned (became connections), "
			       "assign_failed, bad_cookie (left to the kernel)");
			sb_printf(b, "dvv_relay_xdp_cookie_acks_total{result=\"assigned\"} %llu\n",
				  (unsigned long long)tc.assigned);
			sb_printf(b, "dvv_relay_xdp_cookie_acks_total{result=\"assign_failed\"} %llu\n",
				  (unsigned long long)tc.assign_failed);
			sb_printf(b, "dvv_relay_xdp_cookie_acks_total{result=\"bad_cookie\"} %llu\n",
				  (unsigned long long)tc.bad_cookie);
		}
	}
}

/* A counter family with one sample per reason: dvv_relay_NAME{reason="..."} */
static void by_reason(struct sbuf *b, const char *name, const char *help,
		      const char *const *reasons, _Atomic int64_t *vals, size_t n)
{
	family(b, name, "counter", help);
	for (size_t i = 0; i < n; i++)
		sb_printf(b, "dvv_relay_%s{reason=\"%s\"} %lld\n", name, reasons[i],
			  (long long)atomic_load_explicit(&vals[i], memory_order_relaxed));
}

/* Where player connections ended up, one family for ratios and dashboards (the same counts
 * as the single counters it is made of, read at scrape time). Exclusive outcomes: joined (to an
 * agent here, forwarded-in players included), forwarded (to another relay), answered (the relay
 * answered the player itself: offline, reconnecting, busy, rate limited, plan refusals, join
 * timeouts), bad_handshake, handshake_timeout, shed (refused at accept: too many handshakes). */
static void render_outcomes(struct sbuf *b)
{
	const struct {
		const char *name;
		long long v;
	} o[] = {
		{"joined", (long long)M_GET(players_joined_total)},
		{"forwarded", (long long)M_GET(players_forwarded_total)},
		{"answered", (long long)M_GET(players_offline_total)},
		{"bad_handshake", (long long)M_GET(handshakes_bad_total)},
		{"handshake_timeout", (long long)M_GET(handshakes_timeout_total)},
		{"shed", (long long)M_GET(handshakes_shed_total)},
	};
	family(b, "player_outcomes_total", "counter",
	       "Player connections by outcome: joined, forwarded, answered (by the relay itself), "
	       "bad_handshake, handshake_timeout, shed");
	for (size_t i = 0; i < sizeof(o) / sizeof(o[0]); i++)
		sb_printf(b, "dvv_relay_player_outcomes_total{outcome=\"%s\"} %lld\n", o[i].name,
			  o[i].v);
}

/* Redis commands by result and their latency histogram (rredis.c observes every answer). */
static void render_redis(struct sbuf *b)
{
	static const char *const res[] = {
#define NAME(n) #n,
		REDIS_RESULTS(NAME)
#undef NAME
	};
	static const uint64_t bounds[REDIS_LAT_N] = {REDIS_LAT_BUCKETS_US};
	family(b, "redis_commands_total", "counter",
	       "Redis commands answered, by result: ok, error (Redis replied an error), failed "
	       "(timeout, connection lost)");
	for (int i = 0; i < REDIS_RES_MAX; i++)
		sb_printf(b, "dvv_relay_redis_commands_total{result=\"%s\"} %lld\n", res[i],
			  (long long)atomic_load_explicit(&g_metrics.redis_results[i],
							  memory_order_relaxed));
	family(b, "redis_command_duration_seconds", "histogram",
	       "Redis command latency from submission to answer (redirects and retries included)");
	long long cum = 0;
	for (int i = 0; i <= REDIS_LAT_N; i++) {
		cum += (long long)atomic_load_explicit(&g_metrics.redis_lat[i], memory_order_relaxed);
		if (i < REDIS_LAT_N)
			sb_printf(b, "dvv_relay_redis_command_duration_seconds_bucket{le=\"%g\"} %lld\n",
				  (double)bounds[i] / 1e6, cum);
		else
			sb_printf(b,
				  "dvv_relay_redis_command_duration_seconds_bucket{le=\"+Inf\"} %lld\n",
				  cum);
	}
	sb_printf(b, "dvv_relay_redis_command_duration_seconds_sum %.6f\n",
		  (double)atomic_load_explicit(&g_metrics.redis_lat_sum_us, memory_order_relaxed) /
			  1e6);
	sb_printf(b, "dvv_relay_redis_command_duration_seconds_count %lld\n", cum);
}

/* Descriptors in use and the limit: docs/capacity.md's second scaling threshold. Counting
 * /proc/self/fd costs one getdents per ~500 entries: fine at one scrape every few seconds. */
static void render_fds(struct sbuf *b)
{
	long long n = -1;
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		n = 0;
		while (readdir(d))
			n++;
		closedir(d);
		n -= 3; /* ".", ".." and the directory's own descriptor */
	}
	struct rlimit rl;
	if (n >= 0)
		sample(b, "open_fds", "gauge", "File descriptors open in the relay process",
		       (unsigned long long)n);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		sample(b, "max_fds", "gauge", "The relay's descriptor limit (RLIMIT_NOFILE, soft)",
		       rl.rlim_cur == RLIM_INFINITY ? 0ULL : (unsigned long long)rl.rlim_cur);
}

static void render_metrics(struct relay *r, struct sbuf *b)
{
#define X(name, type, help)                                                                    \
	sb_printf(b, "# HELP dvv_relay_%s %s\n# TYPE dvv_relay_%s %s\ndvv_relay_%s %lld\n", #name, \
		  help, #name, #type, #name, (long long)M_GET(name));
	METRICS(X)
#undef X
#define NAME(name) #name,
	static const char *const accept_names[] = {ACCEPT_ERRORS(NAME)};
	static const char *const agent_names[] = {AGENT_REFUSALS(NAME)};
	static const char *const fwd_names[] = {FWD_REFUSED(NAME)};
	static const char *const close_names[] = {PLAN_CLOSES(NAME)};
	static const char *const join_names[] = {JOIN_REFUSALS(NAME)};
#undef NAME
	by_reason(b, "plan_closed_total", "Tunnels closed by plan enforcement, by reason",
		  close_names, g_metrics.plan_closed, PLAN_CLOSE_MAX);
	by_reason(b, "joins_refused_total", "Player logins refused by the tunnel's plan, by reason",
		  join_names, g_metrics.join_refused, JOIN_REF_MAX);
	by_reason(b, "accept_errors_total",
		  "accept() failures that paused a listener for a moment, by reason", accept_names,
		  g_metrics.accept_errors, ACCEPT_ERR_MAX);
	by_reason(b, "agent_refused_total",
		  "Agent-port connections and HELLOs refused by admission control, by reason",
		  agent_names, g_metrics.agent_refused, AGENT_REF_MAX);
	render_outcomes(b);
	render_redis(b);
	render_fds(b);
	family(b, "bytes_total", "counter",
	       "Bytes players moved, by the path that moved them (bpf: in the kernel; userspace: "
	       "splice(2)), counted when a pair ends");
#define PB(name)                                                                               \
	sb_printf(b, "dvv_relay_bytes_total{plane=\"" #name "\"} %lld\n",                          \
		  (long long)atomic_load_explicit(&g_metrics.plane_bytes[PLANE_BYTES_##name],        \
						  memory_order_relaxed));
	PLANE_BYTES(PB)
#undef PB
	by_reason(b, "forward_refused_total",
		  "internal-port connections refused, by reason (forged, replayed, not for us, cache full)",
		  fwd_names, g_metrics.forward_refused, FWD_REFUSED_MAX);
	family(b, "dataconns_forwarded_total", "counter",
	       "Agent data connections handed between relays (sent: to the relay that issued "
	       "their token; received: on the internal port, for a token we issued)");
	sb_printf(b, "dvv_relay_dataconns_forwarded_total{side=\"sent\"} %lld\n"
		     "dvv_relay_dataconns_forwarded_total{side=\"received\"} %lld\n",
		  (long long)M_GET(dataconns_forwarded_sent),
		  (long long)M_GET(dataconns_forwarded_received));
	sb_printf(b,
		  "# HELP dvv_relay_info Static facts about this relay\n# TYPE dvv_relay_info gauge\n"
		  "dvv_relay_info{instance=\"%s\",region=\"%s\",dataplane=\"%s\",version=\"0.1.0\"} 1\n",
		  r->cfg.instance_id, r->cfg.region, r->dp.ops->name);
	render_bpf_metrics(r, b);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
			       const char *method, const char *version, const char *upload,
			       size_t *upload_len, void **con_cls)
{
	struct relay *r = cls;
	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return MHD_NO;
	struct sbuf b = {0};
	unsigned status = 200;
	const char *ctype = "application/json";
	if (!strcmp(url, "/metrics")) {
		render_metrics(r, &b);
		ctype = "text/plain; version=0.0.4";
	} else if (!strcmp(url, "/healthz")) {
		bool ok = loop_alive(r);
		status = ok ? 200 : 503;
		sb_printf(&b,
			  "{\"status\":\"%s\",\"instance\":\"%s\",\"region\":\"%s\",\"dataplane\":\"%s\","
			  "\"redis\":%s,\"draining\":%s,\"tunnels\":%lld,\"splices\":%lld}\n",
			  ok ? "ok" : "stalled", r->cfg.instance_id, r->cfg.region, r->dp.ops->name,
			  M_GET(redis_up) ? "true" : "false", M_GET(draining) ? "true" : "false",
			  (long long)M_GET(tunnels_active), (long long)M_GET(splices_active));
	} else if (!strcmp(url, "/readyz")) {
		/* ready = can take new tunnels: loop alive, Redis reachable, not draining */
		bool ok = loop_alive(r) && M_GET(redis_up) && !M_GET(draining);
		status = ok ? 200 : 503;
		sb_printf(&b, "{\"ready\":%s,\"redis\":%s,\"draining\":%s}\n", ok ? "true" : "false",
			  M_GET(redis_up) ? "true" : "false", M_GET(draining) ? "true" : "false");
	} else {
		status = 404;
		sb_printf(&b, "{\"error\":\"not found\"}\n");
	}
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(b.len, b.p ? b.p : (char *)"", MHD_RESPMEM_MUST_COPY);
	free(b.p);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", ctype);
	enum MHD_Result ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

int admin_start(struct relay *r)
{
	struct net_addr a;
	char err[128];
	if (net_parse_addr(r->cfg.admin_listen, &a, false, err, sizeof(err))) {
		pr_err("--admin-listen: %s", err);
		return -1;
	}
	struct admin *ad = calloc(1, sizeof(*ad));
	if (!ad)
		return -1;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_INTERNAL_THREAD;
	if (a.ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	ad->d = MHD_start_daemon(flags, net_addr_port((struct sockaddr *)&a.ss), NULL, NULL, handler,
				 r, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a.ss,
				 MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT,
				 10u, MHD_OPTION_END);
	if (!ad->d) {
		pr_err("admin: cannot listen on %s", r->cfg.admin_listen);
		free(ad);
		return -1;
	}
	r->admin = ad;
	pr_info("admin: http://%s/metrics /healthz /readyz", r->cfg.admin_listen);
	return 0;
}

void admin_stop(struct relay *r)
{
	if (!r->admin)
		return;
	MHD_stop_daemon(r->admin->d);
	free(r->admin);
	r->admin = NULL;
}
