/* Relay counters and gauges. Written by the event loops with relaxed atomics (no lock on any
 * connection path), read by the admin thread that renders /metrics. */
#ifndef DVV_METRICS_H
#define DVV_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#define METRICS(X)                                                                                     \
	X(players_accepted_total, counter, "Player TCP connections accepted")                         \
	X(players_joined_total, counter, "Players joined to an agent data connection")                \
	X(players_offline_total, counter, "Players answered by the relay: no live tunnel for the name") \
	X(players_forwarded_total, counter, "Players sent on to the relay that holds their tunnel")   \
	X(players_adopted_total, counter, "Forwarded players accepted from other relays")             \
	X(forward_failures_total, counter, "Forwarding attempts that failed (owner unreachable)")     \
	X(forward_not_here_total, counter, "Forwarded players for a name we do not hold (sender told)") \
	X(route_stale_total, counter, "Cached routes found stale by the owner; Redis asked again")    \
	X(route_lookups_total, counter, "Route lookups sent to Redis")                               \
	X(route_cache_hits_total, counter, "Route lookups answered from the local cache")            \
	X(players_busy_total, counter, "Players told busy: too many already waiting for their tunnel") \
	X(players_rerouted_total, counter, "Waiting players routed again after their session moved")   \
	X(status_stored_total, counter, "Agent STATUS messages sanitized and stored in Redis")        \
	X(status_ignored_total, counter, "Agent STATUS messages ignored (too frequent or invalid)")   \
	X(players_join_timeout_total, counter, "Players that waited too long for an agent connection") \
	X(handshakes_bad_total, counter, "Player first packets rejected as malformed")                \
	X(handshakes_timeout_total, counter, "Players closed at the handshake deadline")              \
	X(handshakes_shed_total, counter, "Players refused because too many handshakes were pending") \
	X(players_rate_limited_total, counter, "Players refused by the per-network join rate")         \
	X(handshakes_pending, gauge, "Player connections still sending their handshake")             \
	X(oneport_players_total, counter, "One-port mode: connections handed to the player path")     \
	X(oneport_agents_total, counter, "One-port mode: connections handed to the agent path")       \
	X(oneport_refused_total, counter, "One-port mode: connections closed, first bytes not ours or over a cap") \
	X(oneport_timeout_total, counter, "One-port mode: connections closed, no deciding bytes in time") \
	X(oneport_pending, gauge, "One-port mode: connections whose first bytes are still awaited")   \
	X(agents_accepted_total, counter, "Agent TCP connections accepted (control and data)")        \
	X(tunnels_registered_total, counter, "Tunnels registered (HELLO accepted)")                    \
	X(tunnels_moved_total, counter, "Registrations sent to a less loaded relay (MOVE)")         \
	X(tunnels_rejected_total, counter, "Tunnel registrations refused (auth, limits, Redis)")      \
	X(tunnels_active, gauge, "Tunnels with a live control channel on this relay")               \
	X(data_conns_idle, gauge, "Pre-opened agent data connections waiting for a player")          \
	X(data_attach_bad_total, counter, "Data connections refused (bad, expired or reused token)") \
	X(splices_active, gauge, "Player<->agent connection pairs being spliced")                    \
	X(splice_bytes_total, counter, "Bytes moved by the data plane (both directions)")            \
	X(splice_errors_total, counter, "Spliced pairs that ended with an error (RST, EPIPE)")        \
	X(usage_counted_bytes_total, counter, "Bytes counted per tunnel for bandwidth (both ways, every path)") \
	X(usage_flushes_total, counter, "Per-user usage flushes Redis confirmed")                   \
	X(usage_flush_failures_total, counter, "Per-user usage flushes failed or unanswered (sent again)") \
	X(usage_backlog_bytes, gauge, "Counted bytes waiting to be flushed to Redis")              \
	X(usage_dropped_bytes_total, counter, "Counted bytes dropped: backlog bounds hit, or exit without Redis") \
	X(redis_up, gauge, "1 when the Redis connection is up")                                      \
	X(redis_errors_total, counter, "Redis commands that failed")                                 \
	X(redis_script_loads_total, counter, "EVALSHA answered NOSCRIPT: sent again as EVAL")        \
	X(draining, gauge, "1 while the relay drains before exit")                                   \
	X(agent_unauth_connections, gauge, "Agent-port connections not yet authenticated (not tunnels)") \
	X(data_conns_retired_total, counter, "Idle pooled data connections replaced for their age")  \
	X(tunnels_sent_away_total, counter, "Agents told to move elsewhere (drain, Redis outage)")   \
	X(ctl_send_overflow_total, counter, "Control channels cut: their send queue was full")       \
	X(admit_last_us, gauge, "Latency of the last admit script (registration or plan re-read), microseconds") \
	X(plan_events_total, counter, "Control events read from the events stream and acted on")     \
	X(plan_events_errors_total, counter, "Events stream reads that failed (Redis down, bad reply)") \
	X(tunnels_capped, gauge, "Tunnels whose user is over the bandwidth of the period, here")       \
	X(plan_frames_total, counter, "PLAN frames sent to agents")                                 \
	X(revoke_to_goodbye_last_ms, gauge, "Last revoke/block event: ms from its stream id to the GOODBYE") \
	X(tunnels_shed_total, counter, "Priority-0 tunnels moved away because the relay was over capacity")

/* accept4() failures that paused a listener, by reason: dvv_relay_accept_errors_total{reason} */
#define ACCEPT_ERRORS(X) X(emfile) X(enfile) X(enobufs) X(enomem) X(other)
enum accept_error {
#define X(name) ACCEPT_ERR_##name,
	ACCEPT_ERRORS(X)
#undef X
	ACCEPT_ERR_MAX
};

/* Agent-port connections and HELLOs refused, by reason: dvv_relay_agent_refused_total{reason}.
 * unauth_source: per-source unauthenticated cap; unauth_total: total unauthenticated cap;
 * tls_rate: TLS handshake rate; reg_rate: registration rate (ERROR busy); full: max-tunnels;
 * draining: the relay drains (MOVE or ERROR busy); shed: a priority-0 registration over
 * --shed-threshold (MOVE or ERROR busy). */
#define AGENT_REFUSALS(X) X(unauth_source) X(unauth_total) X(tls_rate) X(reg_rate) X(full) X(draining) X(shed)
enum agent_refusal {
#define X(name) AGENT_REF_##name,
	AGENT_REFUSALS(X)
#undef X
	AGENT_REF_MAX
};
#define M_REFUSED(why)                                                                         \
	atomic_fetch_add_explicit(&g_metrics.agent_refused[AGENT_REF_##why], 1, memory_order_relaxed)
/* Internal connections refused, by reason: dvv_relay_forward_refused_total{reason} */
#define FWD_REFUSED(X) X(malformed) X(mac) X(clock) X(replay) X(target) X(nonce_full) X(timeout)
enum fwd_refused {
#define X(name) FWD_REFUSED_##name,
	FWD_REFUSED(X)
#undef X
	FWD_REFUSED_MAX
};

/* Tunnels closed by plan enforcement, by reason: dvv_relay_plan_closed_total{reason} (idle: no
 * player for idle_timeout_s; revoked: token revoked; blocked: tunnel deleted or suspended;
 * plan: custom label no longer in the plan; shed: moved away, priority 0 over capacity). */
#define PLAN_CLOSES(X) X(idle) X(revoked) X(blocked) X(plan) X(shed)
enum plan_close {
#define X(name) PLAN_CLOSE_##name,
	PLAN_CLOSES(X)
#undef X
	PLAN_CLOSE_MAX
};
#define M_PLAN_CLOSED(why)                                                                     \
	atomic_fetch_add_explicit(&g_metrics.plan_closed[PLAN_CLOSE_##why], 1, memory_order_relaxed)
/* Player logins refused by the plan, by reason: dvv_relay_joins_refused_total{reason} (full:
 * max_players; capped: bandwidth used up; idle: the tunnel was closed for being idle;
 * registration refusals of priority 0 under load count as agent_refused{shed}). */
#define JOIN_REFUSALS(X) X(full) X(capped) X(idle)
enum join_refusal {
#define X(name) JOIN_REF_##name,
	JOIN_REFUSALS(X)
#undef X
	JOIN_REF_MAX
};
#define M_JOIN_REFUSED(why)                                                                    \
	atomic_fetch_add_explicit(&g_metrics.join_refused[JOIN_REF_##why], 1, memory_order_relaxed)

/* Redis commands by result (dvv_relay_redis_commands_total{result}): ok, error (Redis answered
 * an error: script error, WRONGTYPE...), failed (no answer: timeout, connection lost, never
 * sent), and their latency from submission to answer, redirects and retries included
 * (dvv_relay_redis_command_duration_seconds, a histogram with these upper bounds, in us). */
#define REDIS_RESULTS(X) X(ok) X(error) X(failed)
enum redis_result {
#define X(name) REDIS_RES_##name,
	REDIS_RESULTS(X)
#undef X
	REDIS_RES_MAX
};
#define REDIS_LAT_BUCKETS_US 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, \
			     1000000, 2500000
#define REDIS_LAT_N 12

/* Bytes players moved, by the path that moved them (dvv_relay_bytes_total{plane}), counted when
 * a pair ends: bpf = redirected in the kernel by the sk_skb program (bpf plane); userspace =
 * moved with splice(2) by the relay (the userspace plane, and pairs the bpf plane demoted). */
#define PLANE_BYTES(X) X(bpf) X(userspace)
enum plane_bytes {
#define X(name) PLANE_BYTES_##name,
	PLANE_BYTES(X)
#undef X
	PLANE_BYTES_MAX
};
#define M_PLANE_BYTES(plane, v)                                                                \
	atomic_fetch_add_explicit(&g_metrics.plane_bytes[PLANE_BYTES_##plane], (v),             \
				  memory_order_relaxed)

struct relay_metrics {
#define X(name, type, help) _Atomic int64_t name;
	METRICS(X)
#undef X
	_Atomic int64_t redis_results[REDIS_RES_MAX];
	_Atomic int64_t redis_lat[REDIS_LAT_N + 1]; /* per bucket (not cumulative); last: +Inf */
	_Atomic int64_t redis_lat_sum_us;
	_Atomic int64_t plane_bytes[PLANE_BYTES_MAX];
	_Atomic int64_t accept_errors[ACCEPT_ERR_MAX];
	_Atomic int64_t agent_refused[AGENT_REF_MAX];
	_Atomic int64_t forward_refused[FWD_REFUSED_MAX];
	/* agent data connections handed between relays (dvv_relay_dataconns_forwarded_total{side}):
	 * sent = another relay's token arrived here and the connection went to that relay;
	 * received = one arrived on our internal port for a token we issued */
	_Atomic int64_t dataconns_forwarded_sent, dataconns_forwarded_received;
	_Atomic int64_t plan_closed[PLAN_CLOSE_MAX];
	_Atomic int64_t join_refused[JOIN_REF_MAX];
};

extern struct relay_metrics g_metrics;

#define M_INC(name) atomic_fetch_add_explicit(&g_metrics.name, 1, memory_order_relaxed)
#define M_DEC(name) atomic_fetch_sub_explicit(&g_metrics.name, 1, memory_order_relaxed)
#define M_ADD(name, v) atomic_fetch_add_explicit(&g_metrics.name, (v), memory_order_relaxed)
#define M_SET(name, v) atomic_store_explicit(&g_metrics.name, (v), memory_order_relaxed)
#define M_GET(name) atomic_load_explicit(&g_metrics.name, memory_order_relaxed)

#endif
