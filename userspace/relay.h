/* dvv-relay's control plane: one event loop that accepts players and agents, routes players by
 * the hostname in their handshake, and hands joined pairs to the data plane. */
#ifndef DVV_RELAY_H
#define DVV_RELAY_H

#include "auth.h"
#include "config.h"
#include "ctlconn.h"
#include "dataplane.h"
#include "dp_acct.h"
#include "htab.h"
#include "list.h"
#include "listener.h"
#include "loop.h"
#include "mc.h"
#include "net.h"
#include "plan.h"
#include "proto.h"
#include "ratelimit.h"
#include "rredis.h"
#include "usage.h"

#include <pthread.h>

#include <stdbool.h>
#include <stdint.h>

struct rredis;
struct admin;
struct tunnel;
struct usage;
struct dp_acct;


/* An agent data connection, from accept until it is joined to a player. */
enum data_state {
	DS_SNIFF,
	DS_ATTACH,
	DS_FORWARD, /* its token is another relay's: being handed to that relay (forward.c) */
	DS_IDLE
};
struct dataconn {
	struct loop_io io;
	struct loop_timer timer;
	struct relay *r;
	enum data_state state;
	struct tunnel *tunnel;	    /* DS_IDLE */
	struct dlist node;	    /* in tunnel->idle */
	struct dlist all;	    /* r->dataconns */
	uint64_t idle_since_ms;	    /* DS_IDLE: when it joined the pool (retired at pool_max_age_s) */
	struct sockaddr_storage src; /* the peer, for the per-source unauthenticated count */
	long src_slot;		    /* unauthenticated: its slot in r->agent_rl's per-source count */
	bool unauth;		    /* DS_SNIFF / DS_ATTACH: counted in r->nunauth */
	uint8_t pre[DATA_ATTACH_LEN];
	uint8_t prelen;
	bool forwarded;		    /* came in on the internal port: never forwarded again */
	struct loop_io fio;	    /* DS_FORWARD: the connection to the owning relay */
	char fwd_target[65];	    /* DS_FORWARD: the owning relay's instance id */
};

/* t is going away: what becomes of the players waiting for its agent. */
enum wait_fate {
	WAIT_OFFLINE,	/* the tunnel is gone: answer them ourselves (offline) */
	WAIT_REROUTE	/* the session moved (GOODBYE "moved", lease lost): route them again */
};

enum tunnel_state {
	TS_AUTH,	/* TLS handshake / waiting for HELLO */
	TS_REGISTERING, /* HELLO accepted; Redis registration in flight */
	TS_UP,		/* routable */
	TS_CLOSED	/* being torn down (memory freed when no Redis reply is pending) */
};

struct tunnel {
	struct loop_io io;
	struct loop_timer timer;    /* auth deadline, then keepalive */
	struct loop_timer more;	    /* 0 ms: frames left unread after a bounded read (ctlconn) */
	struct relay *r;
	enum tunnel_state state;
	int refs;		    /* 1 for the connection + 1 per Redis call in flight */
	struct ctl_conn ctl;
	struct auth_claims claims;
	struct hnode host_hn;	    /* r->by_host, while TS_UP */
	struct hnode tid_hn;	    /* r->by_tid while in_tid */
	bool in_tid;		    /* the tunnel's session here (one per tid): from HELLO, or from
				     * WELCOME when it replaces a session that is up */
	struct dlist node;	    /* r->tunnels */
	char hostname[256];
	char peer[64];
	uint64_t key;		    /* stable id of the tunnel (hash of tid) for data-plane accounting */
	uint64_t epoch;		    /* fencing epoch of our route lease */
	struct dlist idle;	    /* struct dataconn, DS_IDLE */
	struct dlist waiting;	    /* struct player, PS_WAIT_AGENT */
	struct dlist tokens;	    /* attach tokens issued, not yet used (tunnel.c) */
	int nidle, ntokens;
	uint64_t last_rx_ms;
	uint32_t joins_window;	    /* joins in the current 10 s window: sizes the pool */
	uint64_t window_start_ms;
	struct sockaddr_storage src; /* the agent's address, for the per-source unauth count */
	long src_slot;
	bool unauth;		    /* TS_AUTH: counted in r->nunauth, not in r->ntunnels */
	bool sent_away;		    /* told MOVE / GOODBYE "draining": its new session is coming */
	uint64_t last_status_ms;    /* loop time of the last CTL_STATUS stored (one per 10 s) */
	enum wait_fate wait_fate;   /* set before tunnel_close: what its waiting players get */
	/* the user's plan as it applies here (enforce.c): from admission, then plan events */
	struct plan_limits plan;
	bool custom;		    /* the hostname is a custom label (GOODBYE "plan" if it goes) */
	bool placed;		    /* HELLO came after a MOVE: never moved again (one hop) */
	bool reg_reserve;	    /* its registration token came from the priority reserve */
	bool capped;		    /* the user's bandwidth for the period is used up */
	uint64_t used_bytes;	    /* the user's usage this period, as last known */
	uint64_t idle_since_ms;	    /* loop time since which it has had no player (0: players) */
	uint64_t last_plan_ms;	    /* loop time of the last PLAN frame */
	uint64_t since_s;	    /* wall time it came up */
	/* the HELLO's token, checked on a handshake thread (hspool.h) before the tunnel reaches
	 * the control loop: auth_verify's result and message */
	int pre_auth_rc;
	char pre_auth_err[160];
	struct dp_acct *acct;	    /* while TS_UP: the tunnel's data-plane accounting (usage.c
				     * holds it); tunnel_players() reads the live player count */
};

/* Players of t spliced (or being joined) on this relay right now, on either data plane: every
 * pair of the tunnel's key, including those of its earlier sessions here and forwarded players
 * adopted from other relays. 0 while t is not up. */
static inline int tunnel_players(const struct tunnel *t)
{
	return t->acct ? (int)atomic_load(&t->acct->pairs) : 0;
}

struct relay {
	struct relay_cfg cfg;
	struct loop loop;
	struct listener player_l, agent_l; /* with --one-port not listening: fed by oneport.c */
	struct oneport *oneport;    /* --one-port: the shared listener (oneport.h); else NULL */
	SSL_CTX *tls;
	struct auth_cfg auth;
	/* the handshake threads verify tokens with auth while the loop may reload its keys:
	 * readers are the threads, the writer the reload */
	pthread_rwlock_t auth_lock;
	struct hspool *hsp;	    /* control-channel handshakes on threads; NULL: on the loop */
	bool hsp_stopping;	    /* relay exit: jobs coming back are closed, never registered */
	struct htab by_host, by_tid, tokens;
	struct ratelimit rl;
	/* agent port admission (tunnel.c): unauthenticated connections per source and in total,
	 * TLS handshakes and registrations per second */
	struct ratelimit agent_rl;
	struct rl_tb tls_tb, reg_tb;
	int nunauth;
	/* the region's other active relays' agent addresses, least loaded first, refreshed with
	 * the heartbeat: WELCOME peers, drain and Redis-outage hand-over targets */
	char peers[CTL_PEERS_MAX][CTL_PEER_ADDR_MAX + 1];
	size_t npeers, peer_rr;
	uint64_t redis_down_since_ms; /* 0 while Redis is up */
	bool cut_handover;	    /* agents sent to peers because Redis has been gone too long */
	/* forwarding between relays (forward.c) and its route cache (route_cache.c) */
	bool fwd_enabled;
	struct listener internal_l;
	char internal_addr[130];    /* advertised in route leases; "" when forwarding is off */
	uint8_t fwd_key[256];
	size_t fwd_keylen;
	struct htab routes, nonces;
	struct dlist route_fifo, nonce_fifo, fwdins;
	size_t nroutes, nnonces;
	size_t nonce_max;	    /* replay cache bound (forward.c; default NONCE_CACHE_MAX) */
	/* the region's other relays that forward (instance id, its attach-token tag, internal
	 * address), refreshed with each heartbeat: where a data connection carrying another
	 * relay's attach token is sent (forward.c) */
	struct fwd_relay {
		uint32_t tag;
		char instance[65];
		char addr[130];
	} fwd_relays[64];
	size_t nfwd_relays;
	uint32_t token_tag;	    /* fwd_token_tag(our instance id) */
	struct dlist tunnels;
	struct dlist players;	    /* players not yet handed to the data plane */
	struct dlist dataconns;	    /* agent connections not yet handed to the data plane */
	struct dataplane dp;
	struct rredis *redis;
	struct usage *usage;	    /* bandwidth accounting (usage.c) */
	usage_total_fn usage_on_total; /* NULL, or the plan enforcement's: a user's period total
					* after each usage flush */
	struct admin *admin;
	struct xdp_guard *xdp;
	struct loop_timer tick;
	char suffix[160];	    /* ".eu.dvv.one": names end with it */
	struct net_addr player_addr, agent_addr;
	bool draining;
	uint64_t drain_deadline_ms;
	uint64_t last_heartbeat_ms; /* loop time of the last Redis heartbeat */
	int ntunnels;		    /* sessions past HELLO (registering or up); never TS_AUTH */
	_Atomic uint64_t loop_alive_ms; /* for /healthz, read by the admin thread */
	struct events *events;	    /* the control events stream poller (events.c) */
	uint64_t last_shed_ms;	    /* enforce.c: when priority-0 tunnels were last moved away */
};

/* tunnel.c: the handshake threads (cfg.agent_tls_threads; none: handshakes on the loop) */
int tunnel_hs_start(struct relay *r);
void tunnel_hs_stop(struct relay *r);

int relay_init(struct relay *r);
int relay_run(struct relay *r);
void relay_free(struct relay *r);
void relay_begin_drain(struct relay *r);

/* stale_pins.c: remove the pin directories <root>/<host>-<pid>/ (default instance ids of this
 * host) whose relay pid no longer exists (kill(pid, 0) fails with ESRCH). Names of any other form,
 * live pids and our own are never touched. Logs each removal; returns how many went. */
int relay_remove_stale_pins(const char *root, const char *host);

/* player.c */
void player_accept_cb(struct loop *l, struct loop_io *io, uint32_t events);
void player_join_waiting(struct tunnel *t);
void player_fail_waiting(struct tunnel *t, enum wait_fate fate, const char *reason);
/* A newer session of the same tunnel replaces from: its waiting players wait for to instead. */
void player_move_waiting(struct tunnel *from, struct tunnel *to);
void player_close_all(struct relay *r);

/* tunnel.c */
void agent_accept_cb(struct loop *l, struct loop_io *io, uint32_t events);
struct tunnel *tunnel_lookup_host(struct relay *r, const char *host, size_t len);
/* Hand an idle data connection of t to the caller (removed from the pool), or NULL. */
struct dataconn *tunnel_take_idle(struct tunnel *t);
/* Ask the agent for more data connections if the pool is below its target. */
void tunnel_refill(struct tunnel *t);
void tunnel_note_join(struct tunnel *t);
/* Draining or cut from Redis: MOVE every agent that is up and not told yet to one of r->peers
 * (round robin), or GOODBYE "draining" when none is known and goodbye is true. The tunnels keep
 * serving (make-before-break): each closes when its agent says GOODBYE "moved" or when its new
 * session takes the lease over. */
void tunnel_send_all_away(struct relay *r, bool goodbye);
/* How many more players may wait on t for a data connection (cfg.max_waiting_per_tunnel minus
 * those waiting); <= 0: the player gets an answer instead of waiting (player.c). */
int tunnel_waiting_room(const struct tunnel *t);
void tunnel_close_all(struct relay *r, const char *why);
/* For rredis_start: the route leases this relay holds (tunnels up), and the one a renewal found
 * held by another relay (that session is closed). */
void tunnel_each_lease(struct relay *r, rredis_lease_fn fn, void *ctx);
void tunnel_lease_lost(struct relay *r, const char *hostname, uint64_t epoch);
void dataconn_close(struct dataconn *d);
void dataconn_close_all(struct relay *r);
/* Let d go without closing its socket (handed on by forward.c): returns the socket. */
int dataconn_release(struct dataconn *d);
/* A data connection another relay forwarded to our internal port (forward.c, FWD_F_DATA):
 * admitted under the agent port's unauthenticated caps as if it came from src (the agent's
 * address), then read like one that arrived on the agent port (preamble, token, pool). Takes
 * fd (closed when refused). */
void tunnel_adopt_dataconn(struct relay *r, int fd, const struct sockaddr_storage *src);
void relay_tick_tunnels(struct relay *r);
/* Send t's agent a message and close the session (GOODBYE code + reason), for plan
 * enforcement; fate says what its waiting players get. */
void tunnel_goodbye(struct tunnel *t, const char *code, const char *reason);
void tunnel_send(struct tunnel *t, const struct ctl_msg *m);


#endif
