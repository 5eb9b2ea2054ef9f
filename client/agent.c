/* The agent session.
 *
 * Control channel states:  WAIT --timer--> CONNECT --tcp up--> HELLO --WELCOME--> UP
 * and any failure goes back to WAIT with a backoff (or ends the run for a refused token).
 * Without --relay / --region the run starts in PROBE (regions.c measures every region and the
 * fastest becomes "home"), and after AGENT_REMEASURE_AFTER attempts in a row without a session
 * WAIT goes through PROBE again before dialling (unless a MOVE chose the next relay).
 *
 * Sessions (struct agent_sess): a control channel plus the idle data connections it asked for.
 * There are two slots. `cur` is the one the states above describe. `old` exists only during a
 * make-before-break migration: a MOVE (or GOODBYE "draining") on an UP session turns it into
 * `old`, which keeps serving (PINGs, ATTACHes, its pool) while `cur` dials the new relay; the
 * new WELCOME sends GOODBYE "moved" on `old` and closes it. So at most one migration is in
 * flight, and a MOVE arriving on `old` is ignored. If `old` dies first, `cur`'s attempt simply
 * is the reconnect.
 *
 * Where an attempt goes: a MOVE address once, else home (the --relay / region endpoint), every
 * address the name resolves to in turn. After a session died without a MOVE, each failed
 * attempt at home moves on to the next of the last WELCOME's peers, then home again (re-homing
 * after a relay crash), with the usual backoff in between.
 *
 * Data connections (struct agent_dc), one per ATTACH token:
 *   CONNECTING  TCP connect to the relay, then the 36-byte "DVVA"+token preamble
 *   IDLE        in the pool, silent, waiting for the relay's player header (read exactly)
 *   LOCAL       a player was assigned: connecting to the local server (+ PROXY v2 header)
 *   SPLICE      splice_pair moves the bytes both ways until both sides are done
 * CONNECTING and IDLE belong to the control session that asked for them and close with it;
 * LOCAL and SPLICE are players and outlive it.
 *
 * Threads: everything above runs on the main loop. With workers (--workers, one per CPU by
 * default; common/spool.c, the relay's userspace plane runs on the same pool code) a SPLICE
 * pair is handed to a worker thread once the local connect and the PROXY header are done: from
 * then on only that worker touches the pair, until it ends; the worker closes the sockets and
 * posts the player to a->done, and the main loop (woken through loop_wake) reports and frees
 * it. So bytes move on every core while accounting and closing stay single-threaded. */
#include "agent.h"
#include "ctlconn.h"
#include "http.h"
#include "log.h"
#include "renew.h"
#include "splice.h"
#include "spool.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum agent_state {
	AG_WAIT,    /* no control connection; ctl_timer fires the next attempt */
	AG_CONNECT, /* TCP connect to the relay in progress */
	AG_HELLO,   /* TLS handshake, HELLO sent, waiting for WELCOME */
	AG_UP,	    /* tunnel up */
	AG_PROBE,   /* measuring the regions; CONNECT follows */
};

/* What to do after the control channel went down. */
enum agent_next {
	NEXT_BACKOFF,	  /* exponential backoff with full jitter */
	NEXT_NOW,	  /* MOVE: dial the new address right away */
	NEXT_AFTER,	  /* ERROR with retry_after_ms */
	NEXT_AUTH,	  /* token refused, --retry-auth: backoff but never fast */
	NEXT_STOP,	  /* fatal: leave the loop with a->exit_code */
};

enum dc_state { DC_CONNECTING, DC_IDLE, DC_LOCAL, DC_SPLICE };

struct agent_sess;

struct agent_dc {
	struct agent *a;
	struct agent_sess *s; /* whose pool holds it (CONNECTING, IDLE); NULL for players */
	struct dlist node;    /* s->pool while CONNECTING or IDLE, then a->players */
	enum dc_state state;
	struct loop_io io;	 /* the data connection to the relay */
	struct loop_io local_io; /* the local server, while connecting to it */
	struct loop_timer timer; /* connect / header / local connect deadline */
	uint8_t pre[DATA_ATTACH_LEN];
	size_t pre_off;
	struct agent_hdr_reader hdr;
	struct data_hdr player;
	uint8_t pp[64]; /* PROXY v2 header for the local server */
	size_t pp_len, pp_off;
	bool local_up; /* the local connect completed */
	struct splice_pair pair;
	struct dlist wnode; /* with workers: its worker's pairs, then a->done */
	bool on_worker;	    /* the pair was handed to a worker: only a->done ends it */
	int err;	    /* on_worker: how the pair ended (0 or a positive errno) */
	uint64_t start_ms;
	char player_str[64];
};

/* A list of data connections and its length (common/list.h). */
struct agent_dclist {
	struct dlist head;
	unsigned n;
};

/* One control session and its pool. Slots never move in memory (their loop_io and timer are
 * registered); migrating swaps the cur / old pointers. */
struct agent_sess {
	struct agent *a;
	struct loop_io io;
	struct ctl_conn *ctl;
	struct loop_timer timer;    /* handshake deadline, then PING / liveness */
	bool up;		    /* WELCOME received */
	bool answered;		    /* the relay sent a frame: its failure is an answer */
	bool quiet;		    /* old: ended by our own new session (taken_over, replaced) */
	char sni[256];		    /* name the relay certificate must carry */
	char relay_str[96];	    /* the address of this session, for humans */
	struct net_addr addrs[AGENT_MAX_ADDRS]; /* what the target resolved to */
	unsigned naddrs, addr_idx;
	struct net_addr relay_addr; /* data connections dial exactly this */
	char hostname[256];	    /* from WELCOME */
	uint32_t ping_ms;
	uint64_t last_rx_ms, next_ping_ms, up_since_ms;
	char down_reason[320];

	/* idle data connections: CONNECTING + IDLE, and tokens waiting for a connect slot */
	struct agent_dclist pool;
	unsigned connecting;
	uint8_t (*queue)[ATTACH_TOKEN_LEN]; /* ring of AGENT_MAX_POOL */
	size_t qhead, qlen;

	/* the last STATUS sent on this session (a keyed hash of it: equal = unchanged) */
	bool status_sent;
	uint64_t status_sent_hash, status_sent_ms;
	uint64_t big_status_ms;	    /* when a STATUS over AGENT_STATUS_LEGACY_MAX went out */
};

struct agent {
	struct loop loop;
	const struct agent_config *cfg;
	struct renew *renew; /* token renewal (renew.h), or NULL */
	SSL_CTX *tls;
	struct net_addr local_addr;

	/* control channel */
	enum agent_state state;	    /* of cur */
	char home[256];		    /* the relay of the region in use (cfg->relay at start) */
	int region;		    /* index of home in cfg->regions, -1 with --relay */
	char target[256];	    /* relay to dial next: home, a MOVE address or a peer */
	struct agent_sess sess[2];
	struct agent_sess *cur;	    /* the session the states describe */
	struct agent_sess *old;	    /* the session a migration replaces, or NULL */
	unsigned attempt;	    /* consecutive failed attempts, drives the backoff */
	unsigned moves;		    /* MOVEs without a long session in between */
	unsigned fails;		    /* attempts without a session since the last measurement */
	struct agent_probe *probe;  /* the measurement in progress (AG_PROBE) */
	bool moved;		    /* target holds a MOVE address for the next attempt */
	bool placed;		    /* this attempt dials a relay a MOVE chose: no further MOVE */
	enum agent_next next;
	uint32_t retry_after_ms;
	bool shown_up;		    /* the user was told tunnel_up, not tunnel_down since */

	/* migration requested from inside ctl_conn_io, carried out after it returned */
	bool mig_pending, mig_finish;
	bool mig_placed;
	char mig_to[256], mig_reason[160];

	/* re-homing: the last WELCOME's peers, tried after home when a session died */
	char peers[CTL_PEERS_MAX][CTL_PEER_ADDR_MAX + 1];
	unsigned npeers;
	bool rehome;		    /* a session died without a MOVE: rotate home, peers... */
	unsigned rot;		    /* 0 home, i peers[i - 1] */

	/* edge status */
	struct agent_status_poll status;
	struct loop_timer status_timer;
	char *status_json;	    /* the last payload polled, sent when cur can take it */
	size_t status_json_len;
	size_t status_max;	    /* CTL_PAYLOAD_MAX, or the legacy 8192 once a relay choked */
	bool status_failing;	    /* logged once per streak of failed polls */
	uint64_t hash_key[2];

	/* data connections */
	struct spool workers;	    /* workers.w NULL: pairs run on the main loop */
	pthread_mutex_t done_lock;  /* protects done */
	struct dlist done;	    /* players whose pair a worker ended, to close here */
	struct agent_dclist players; /* LOCAL + SPLICE */
	unsigned active;	    /* players in SPLICE */
	uint64_t joins;

	/* the last PLAN frame (limits, usage, state), for the user's output */
	struct ctl_msg plan;
	bool have_plan;

	struct loop_io stop_io;
	int exit_code;
};

static void ctl_timer_cb(struct loop *l, struct loop_timer *t);
static void ctl_io_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void dc_io_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void dc_local_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void dc_timer_cb(struct loop *l, struct loop_timer *t);
static void ctl_down(struct agent *a, const char *reason);
static void old_down(struct agent *a, const char *reason);

/* ---- pure helpers (unit tested) ---- */

uint32_t agent_backoff_ms(unsigned attempt, uint32_t base, uint32_t cap, uint64_t rnd)
{
	uint64_t win = cap;
	if (attempt < 32 && ((uint64_t)base << attempt) < cap)
		win = (uint64_t)base << attempt;
	return (uint32_t)(rnd % (win + 1));
}

void agent_hdr_reset(struct agent_hdr_reader *r)
{
	r->have = 0;
	r->need = DATA_HDR_FIXED;
}

int agent_hdr_read(struct agent_hdr_reader *r, int fd, struct data_hdr *out)
{
	for (;;) {
		if (r->have == r->need) {
			if (r->need == DATA_HDR_FIXED) {
				int body = data_hdr_fixed(r->buf);
				if (body < 0)
					return -EPROTO;
				r->need = DATA_HDR_FIXED + (size_t)body;
				continue;
			}
			if (data_hdr_parse(r->buf, r->need, out))
				return -EPROTO;
			return 1;
		}
		/* exactly what is missing, never more: the player's bytes follow */
		ssize_t n = recv(fd, r->buf + r->have, r->need - r->have, 0);
		if (n > 0) {
			r->have += (size_t)n;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return -errno;
	}
}

/* ---- lists ---- */

static void dclist_init(struct agent_dclist *l)
{
	dlist_init(&l->head);
	l->n = 0;
}

static void dclist_add(struct agent_dclist *l, struct agent_dc *d)
{
	dlist_add_tail(&l->head, &d->node);
	l->n++;
}

static void dclist_del(struct agent_dclist *l, struct agent_dc *d)
{
	dlist_del(&d->node);
	l->n--;
}

static struct agent_dc *dclist_first(struct agent_dclist *l)
{
	return dlist_empty(&l->head) ? NULL : container_of(l->head.next, struct agent_dc, node);
}

/* ---- events for the user ---- */

static void report_error(const char *code, const char *message)
{
	struct agent_event ev = {.type = AGENT_EV_ERROR, .code = code, .message = message};
	agent_report(&ev);
}

/* ---- data connections ---- */

static void dc_free(void *arg) { free(arg); }

static void pool_refill(struct agent_sess *s);

/* Close a data connection in any state; a player's end is reported. */
static void dc_close(struct agent_dc *d)
{
	struct agent *a = d->a;
	loop_timer_cancel(&a->loop, &d->timer);
	if (d->state == DC_SPLICE) {
		struct agent_event ev = {
			.type = AGENT_EV_PLAYER_CLOSE,
			.player = d->player_str,
			.trace = d->player.trace,
			.bytes_in = d->pair.dir[0].bytes,
			.bytes_out = d->pair.dir[1].bytes,
			.duration_ms = a->loop.now - d->start_ms,
		};
		if (!d->on_worker) /* a worker closed it already */
			splice_pair_close(&d->pair);
		a->active--;
		ev.active = a->active;
		ev.joins = a->joins;
		agent_report(&ev);
	}
	struct loop_io *ios[2] = {&d->io, &d->local_io};
	for (int i = 0; i < 2; i++) {
		loop_io_del(&a->loop, ios[i]);
		if (ios[i]->fd >= 0)
			close(ios[i]->fd);
		ios[i]->fd = -1; /* a later event of this batch is skipped; freed after it */
	}
	if (d->state == DC_CONNECTING)
		d->s->connecting--;
	dclist_del(d->state <= DC_IDLE ? &d->s->pool : &a->players, d);
	loop_defer(&a->loop, dc_free, d);
	if (d->state == DC_CONNECTING)
		pool_refill(d->s);
}

static void dc_open(struct agent_sess *s, const uint8_t token[ATTACH_TOKEN_LEN])
{
	struct agent *a = s->a;
	struct agent_dc *d = calloc(1, sizeof(*d));
	if (!d) {
		pr_rl(LOG_WARN, "out of memory for a data connection");
		return;
	}
	d->a = a;
	d->s = s;
	d->io = (struct loop_io){.fd = -1, .cb = dc_io_cb};
	d->local_io = (struct loop_io){.fd = -1, .cb = dc_local_cb};
	d->timer.cb = dc_timer_cb;
	memcpy(d->pre, DATA_ATTACH_MAGIC, 4);
	memcpy(d->pre + 4, token, ATTACH_TOKEN_LEN);
	agent_hdr_reset(&d->hdr);
	int fd, rc = net_connect(&s->relay_addr, &fd);
	if (!rc) {
		d->io.fd = fd;
		/* pooled connections sit silent for minutes: keep NATs from forgetting them */
		net_keepalive(fd, NET_KEEPALIVE_IDLE_S);
		net_bound_queue(fd, &a->cfg->data_queue); /* queue in front of a slow player = lag */
		rc = loop_io_set(&a->loop, &d->io, EPOLLOUT);
	}
	if (rc) {
		pr_rl(LOG_WARN, "data connection to relay %s: %s", s->relay_str, strerror(-rc));
		if (d->io.fd >= 0)
			close(d->io.fd);
		explicit_bzero(d->pre, sizeof(d->pre));
		free(d);
		return;
	}
	d->state = DC_CONNECTING;
	s->connecting++;
	dclist_add(&s->pool, d);
	loop_timer_arm(&a->loop, &d->timer, AGENT_DATA_CONNECT_TIMEOUT_MS);
}

static void pool_refill(struct agent_sess *s)
{
	while (s->qlen && s->connecting < AGENT_MAX_CONNECTING && s->up) {
		uint8_t tok[ATTACH_TOKEN_LEN];
		memcpy(tok, s->queue[s->qhead], ATTACH_TOKEN_LEN);
		s->qhead = (s->qhead + 1) % AGENT_MAX_POOL;
		s->qlen--;
		dc_open(s, tok);
	}
}

static void pool_add(struct agent_sess *s, const uint8_t token[ATTACH_TOKEN_LEN])
{
	if (s->pool.n + s->qlen >= AGENT_MAX_POOL) {
		pr_rl(LOG_WARN, "relay asked for more than %d pooled data connections: ignored",
		      AGENT_MAX_POOL);
		return;
	}
	if (s->connecting < AGENT_MAX_CONNECTING && !s->qlen) {
		dc_open(s, token);
		return;
	}
	memcpy(s->queue[(s->qhead + s->qlen) % AGENT_MAX_POOL], token, ATTACH_TOKEN_LEN);
	s->qlen++;
}

/* Idle (unassigned) data connections belong to a control session: they go with it. */
static void pool_close(struct agent_sess *s)
{
	s->qlen = 0;
	s->qhead = 0;
	for (struct agent_dc *d; (d = dclist_first(&s->pool));)
		dc_close(d);
}

static void dc_splice_done(struct splice_pair *p, int err)
{
	struct agent_dc *d = p->data;
	if (err)
		pr_trace(LOG_DEBUG, d->player.trace, "player %s: %s", d->player_str, strerror(err));
	dc_close(d);
}

/* ---- players on worker threads ---- */

/* Any thread: the player's pair is over and its sockets are closed; the main loop reports and
 * frees it (dc_take_done). */
static void dc_post_done(struct agent_dc *d)
{
	struct agent *a = d->a;
	pthread_mutex_lock(&a->done_lock);
	dlist_add_tail(&a->done, &d->wnode);
	pthread_mutex_unlock(&a->done_lock);
	loop_wake(&a->loop);
}

/* Worker thread: a pair ended. */
static void dc_worker_done(struct splice_pair *p, int err)
{
	struct agent_dc *d = p->data;
	dlist_del(&d->wnode);
	splice_pair_close(p);
	d->err = err;
	dc_post_done(d);
}

/* Worker thread: a player handed over by dc_start_splice. */
static void dc_worker_run(struct spool_worker *w, const struct handoff_job *j)
{
	struct agent_dc *d = j->data;
	int rc = splice_pair_start(&w->loop, &d->pair, j->player_fd, j->agent_fd, dc_worker_done);
	if (rc) {
		pr_rl_trace(LOG_WARN, d->player.trace, "player %s: cannot start forwarding: %s",
			    d->player_str,
		      strerror(-rc));
		close(j->player_fd);
		close(j->agent_fd);
		memset(&d->pair, 0, sizeof(d->pair)); /* no bytes moved */
		d->err = -rc;
		dc_post_done(d);
		return;
	}
	d->pair.data = d;
	dlist_add_head(&w->pairs, &d->wnode);
}

/* Main loop (its on_wake): close the players the workers are done with. */
static void dc_take_done(struct loop *l)
{
	struct agent *a = l->data;
	for (;;) {
		pthread_mutex_lock(&a->done_lock);
		struct agent_dc *d = dlist_first(&a->done, struct agent_dc, wnode);
		if (d)
			dlist_del(&d->wnode);
		pthread_mutex_unlock(&a->done_lock);
		if (!d)
			return;
		if (d->err)
			pr_trace(LOG_DEBUG, d->player.trace, "player %s: %s", d->player_str,
				 strerror(d->err));
		dc_close(d);
	}
}

/* Stopping, after the workers' threads ended: pairs still running end here. */
static void dc_workers_left(struct spool_worker *w)
{
	struct agent_dc *d;
	while ((d = dlist_first(&w->pairs, struct agent_dc, wnode))) {
		dlist_del(&d->wnode);
		splice_pair_close(&d->pair);
		d->err = 0;
		dc_post_done(d);
	}
}

/* Stopping: a player handed over too late for its worker to start it. */
static void dc_job_drop(void *arg, const struct handoff_job *j)
{
	struct agent_dc *d = j->data;
	(void)arg;
	close(j->player_fd);
	close(j->agent_fd);
	memset(&d->pair, 0, sizeof(d->pair));
	d->err = 0;
	dc_post_done(d);
}

/* Stop the workers and close every player they had (idempotent). */
static void workers_stop(struct agent *a)
{
	spool_stop(&a->workers, dc_workers_left, dc_job_drop, a);
	dc_take_done(&a->loop);
}

static void local_unreachable(struct agent *a, const char *why)
{
	static struct log_rl rl;
	uint32_t sup;
	if (!log_rl_allow(&rl, 10, &sup))
		return;
	char msg[512];
	snprintf(msg, sizeof(msg), "local server %s %s: is it running?%s", a->cfg->local, why,
		 sup ? " (similar messages were suppressed)" : "");
	report_error("local_unreachable", msg);
}

/* The local server accepted (and took the PROXY header if any): hand both to splice. */
static void dc_start_splice(struct agent_dc *d)
{
	struct agent *a = d->a;
	int dfd = d->io.fd, lfd = d->local_io.fd, rc;
	loop_timer_cancel(&a->loop, &d->timer);
	loop_io_del(&a->loop, &d->io);
	loop_io_del(&a->loop, &d->local_io);
	d->start_ms = a->loop.now;
	if (a->workers.w) {
		/* everything the main loop sets is set before the worker may see the player */
		struct handoff_job j = {.player_fd = dfd, .agent_fd = lfd, .data = d};
		d->state = DC_SPLICE;
		d->on_worker = true;
		if ((rc = spool_push(&a->workers, &j))) {
			d->state = DC_LOCAL;
			d->on_worker = false;
		}
	} else if (!(rc = splice_pair_start(&a->loop, &d->pair, dfd, lfd, dc_splice_done))) {
		d->pair.data = d;
		d->state = DC_SPLICE;
	}
	if (rc) {
		pr_rl_trace(LOG_WARN, d->player.trace, "player %s: cannot start forwarding: %s",
			    d->player_str,
		      strerror(-rc));
		dc_close(d);
		return;
	}
	/* the pair (or the worker's job) owns both fds now */
	d->io.fd = d->local_io.fd = -1;
	a->active++;
	a->joins++;
	struct agent_event ev = {.type = AGENT_EV_PLAYER_OPEN,
				 .player = d->player_str,
				 .trace = d->player.trace,
				 .active = a->active,
				 .joins = a->joins};
	agent_report(&ev);
}

static void dc_local_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent_dc *d = container_of(io, struct agent_dc, local_io);
	struct agent *a = d->a;
	if (d->state != DC_LOCAL)
		return;
	if (!d->local_up) {
		int e = net_so_error(io->fd);
		if (e) {
			local_unreachable(a, e == ECONNREFUSED ? "refused the connection"
							       : strerror(e));
			dc_close(d);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		d->local_up = true;
	}
	if (a->cfg->proxy_protocol && !d->pp_len) {
		d->pp_len = proxy_v2_build(d->pp, sizeof(d->pp),
					   (const struct sockaddr *)&d->player.src,
					   (const struct sockaddr *)&d->player.dst);
		if (!d->pp_len) {
			pr_rl_trace(LOG_WARN, d->player.trace, "player %s: cannot build a PROXY header",
				    d->player_str);
			dc_close(d);
			return;
		}
	}
	int rc = net_send_rest(io->fd, d->pp, d->pp_len, &d->pp_off);
	if (rc == -EAGAIN) {
		/* EPOLLOUT again (registered now if dc_player came here without epoll) */
		if ((rc = loop_io_set(l, io, EPOLLOUT))) {
			local_unreachable(a, strerror(-rc));
			dc_close(d);
		}
		return;
	}
	if (rc) {
		local_unreachable(a, strerror(-rc));
		dc_close(d);
		return;
	}
	dc_start_splice(d);
}

/* The relay assigned a player to this connection. */
static void dc_player(struct agent_dc *d)
{
	struct agent *a = d->a;
	loop_timer_cancel(&a->loop, &d->timer);
	loop_io_del(&a->loop, &d->io); /* the player's bytes wait in the socket for splice */
	net_addr_fmt((const struct sockaddr *)&d->player.src, d->player_str,
		     sizeof(d->player_str));
	dclist_del(&d->s->pool, d);
	d->s = NULL; /* a player outlives the session that pooled its connection */
	d->state = DC_LOCAL;
	dclist_add(&a->players, d);
	pr_trace(LOG_DEBUG, d->player.trace, "player %s assigned, connecting to %s",
		 d->player_str, a->cfg->local);

	/* bounded before connect: the server queues no lag in here (its segment size too) */
	int fd, rc = net_connect_bounded(&a->local_addr, &a->cfg->local_queue, &fd);
	if (!rc) {
		d->local_io.fd = fd;
		rc = loop_io_set(&a->loop, &d->local_io, EPOLLOUT);
	}
	if (rc) {
		local_unreachable(a, rc == -ECONNREFUSED ? "refused the connection"
							 : strerror(-rc));
		dc_close(d);
		return;
	}
	d->local_io.fd = fd;
	loop_timer_arm(&a->loop, &d->timer, AGENT_LOCAL_CONNECT_TIMEOUT_MS);
	/* A local server usually answers at once (on loopback the handshake is done before
	 * connect() returns): then go on now, instead of registering the socket, waiting a loop
	 * turn for EPOLLOUT and deregistering it again (two epoll_ctl calls and a wake-up on
	 * every join). */
	struct pollfd pf = {.fd = fd, .events = POLLOUT};
	if (poll(&pf, 1, 0) == 1) {
		dc_local_cb(&a->loop, &d->local_io, EPOLLOUT | (uint32_t)(pf.revents & POLLERR));
		return;
	}
	if ((rc = loop_io_set(&a->loop, &d->local_io, EPOLLOUT))) {
		local_unreachable(a, strerror(-rc));
		dc_close(d);
	}
}

static void dc_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent_dc *d = container_of(io, struct agent_dc, io);
	if (d->state == DC_CONNECTING) {
		int e = net_so_error(io->fd);
		if (e) {
			pr_rl(LOG_WARN, "data connection to relay %s: %s", d->s->relay_str,
			      strerror(e));
			dc_close(d);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		int rc = net_send_rest(io->fd, d->pre, sizeof(d->pre), &d->pre_off);
		if (rc == -EAGAIN)
			return;
		if (rc) {
			pr_rl(LOG_WARN, "data connection to relay %s: %s", d->s->relay_str,
			      strerror(-rc));
			dc_close(d);
			return;
		}
		explicit_bzero(d->pre, sizeof(d->pre));
		loop_timer_cancel(l, &d->timer);
		d->state = DC_IDLE;
		d->s->connecting--;
		struct agent_sess *s = d->s;
		if (loop_io_set(l, io, EPOLLIN | EPOLLRDHUP)) {
			dc_close(d);
		}
		pool_refill(s);
		return;
	}
	if (d->state != DC_IDLE)
		return;
	int r = agent_hdr_read(&d->hdr, io->fd, &d->player);
	if (r == 0) {
		if (d->hdr.have && !loop_timer_armed(&d->timer))
			loop_timer_arm(l, &d->timer, AGENT_HDR_TIMEOUT_MS);
		return;
	}
	if (r < 0) {
		if (r == -ECONNRESET && d->hdr.have == 0)
			pr_debug("relay closed an idle data connection");
		else
			pr_rl(LOG_WARN, "data connection from relay %s: %s", d->s->relay_str,
			      r == -EPROTO ? "bad player header" : strerror(-r));
		dc_close(d);
		return;
	}
	dc_player(d);
}

static void dc_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct agent_dc *d = container_of(t, struct agent_dc, timer);
	switch (d->state) {
	case DC_CONNECTING:
		pr_rl(LOG_WARN, "data connection to relay %s: timed out", d->s->relay_str);
		break;
	case DC_IDLE:
		pr_rl(LOG_WARN, "relay %s: player header incomplete after %u ms", d->s->relay_str,
		      AGENT_HDR_TIMEOUT_MS);
		break;
	case DC_LOCAL:
		local_unreachable(d->a, "did not accept the connection within 5 s");
		break;
	case DC_SPLICE:
		return;
	}
	dc_close(d);
}

/* ---- control channel ---- */

static struct agent_sess *other_slot(struct agent *a, struct agent_sess *s)
{
	return s == &a->sess[0] ? &a->sess[1] : &a->sess[0];
}

/* Close a session's control connection and its pool; players stay. */
static void sess_close(struct agent *a, struct agent_sess *s)
{
	loop_timer_cancel(&a->loop, &s->timer);
	loop_io_del(&a->loop, &s->io);
	if (s->ctl) {
		ctl_conn_free(s->ctl);
		free(s->ctl);
		s->ctl = NULL;
	}
	if (s->io.fd >= 0)
		close(s->io.fd);
	s->io.fd = -1;
	s->up = false; /* before the pool: a closing connection must not refill it */
	s->quiet = false;
	s->status_sent = false;
	s->big_status_ms = 0;
	pool_close(s);
}

/* Best effort: an orderly GOODBYE and TLS close_notify before the socket closes. */
static void sess_goodbye(struct agent_sess *s, const char *code, const char *reason)
{
	if (!s->ctl || !s->ctl->handshake_done)
		return;
	struct ctl_msg bye = {.type = CTL_GOODBYE};
	snprintf(bye.u.goodbye.code, sizeof(bye.u.goodbye.code), "%s", code ? code : "");
	snprintf(bye.u.goodbye.reason, sizeof(bye.u.goodbye.reason), "%s", reason);
	if (!ctl_conn_send(s->ctl, &bye) && ctl_conn_flush(s->ctl) >= 0) {
		ERR_clear_error();
		SSL_shutdown(s->ctl->ssl);
	}
}

static void sess_down(struct agent *a, struct agent_sess *s, const char *why)
{
	if (s == a->cur)
		ctl_down(a, why);
	else
		old_down(a, why);
}

static void ctl_set_events(struct agent *a, struct agent_sess *s, int rc)
{
	if (rc == -ECONNRESET && s->ctl->handshake_done) {
		char why[300];
		const char *what = !s->up ? "relay closed the connection before answering HELLO"
					  : "relay closed the control channel";
		if (!s->ctl->err[0] || strstr(s->ctl->err, "peer closed"))
			snprintf(why, sizeof(why), "%s", what);
		else
			snprintf(why, sizeof(why), "%s (%s)", what, s->ctl->err);
		sess_down(a, s, why);
		return;
	}
	if (rc < 0) {
		sess_down(a, s, s->ctl->err[0] ? s->ctl->err : strerror(-rc));
		return;
	}
	int e = loop_io_set(&a->loop, &s->io, (uint32_t)rc);
	if (e)
		sess_down(a, s, strerror(-e));
}

/* Queue a message and push it out. Returns 0, or -1 if the session went down. */
static int ctl_send_now(struct agent *a, struct agent_sess *s, const struct ctl_msg *m)
{
	int rc = ctl_conn_send(s->ctl, m);
	if (rc) {
		sess_down(a, s, s->ctl->err[0] ? s->ctl->err : strerror(-rc));
		return -1;
	}
	rc = ctl_conn_flush(s->ctl);
	ctl_set_events(a, s, rc);
	return rc < 0 ? -1 : 0;
}

static void schedule(struct agent *a, const char *reason)
{
	uint32_t bo = agent_backoff_ms(a->attempt, AGENT_BACKOFF_BASE_MS, AGENT_BACKOFF_CAP_MS,
				       rand_u64());
	uint64_t delay = bo;
	switch (a->next) {
	case NEXT_BACKOFF:
	case NEXT_STOP:
		break;
	case NEXT_NOW:
		delay = 0;
		break;
	case NEXT_AFTER:
		/* the relay's hint plus up to 25% jitter, so refused agents do not come back
		 * in lockstep */
		delay = a->retry_after_ms + rand_u64() % (a->retry_after_ms / 4 + 1);
		break;
	case NEXT_AUTH:
		if (delay < AGENT_AUTH_RETRY_MIN_MS)
			delay = AGENT_AUTH_RETRY_MIN_MS + rand_u64() % AGENT_AUTH_RETRY_MIN_MS;
		break;
	}
	if (a->next != NEXT_NOW)
		a->attempt++;
	a->next = NEXT_BACKOFF;
	a->state = AG_WAIT;
	loop_timer_arm(&a->loop, &a->cur->timer, delay);
	struct agent_event ev = {.type = AGENT_EV_RECONNECTING,
				 .in_ms = delay,
				 .attempt = a->attempt,
				 .reason = reason,
				 .migrating = a->old != NULL,
				 .active = a->active,
				 .joins = a->joins};
	agent_report(&ev);
}

static void report_down(struct agent *a, const char *why)
{
	if (!a->shown_up)
		return;
	a->shown_up = false;
	struct agent_event ev = {
		.type = AGENT_EV_TUNNEL_DOWN, .reason = why, .active = a->active, .joins = a->joins};
	agent_report(&ev);
}

/* Where the next attempt goes when no MOVE chose it: home, or while re-homing the peer whose
 * turn it is. */
static void pick_target(struct agent *a)
{
	if (!a->rehome || a->rot == 0 || a->rot > a->npeers)
		snprintf(a->target, sizeof(a->target), "%s", a->home);
	else
		snprintf(a->target, sizeof(a->target), "%s", a->peers[a->rot - 1]);
}

static int sess_dial(struct agent *a, struct agent_sess *s, char *err, size_t errlen);

/* A relay that predates 32 KiB frames closes the session on a bigger STATUS, right after it,
 * without a word: without this the agent would come back and be cut again after every
 * WELCOME. Keeping STATUS small costs at worst the favicon in the relay's cache. */
static void legacy_relay_check(struct agent *a, struct agent_sess *s)
{
	if (!s->big_status_ms || a->status_max <= AGENT_STATUS_LEGACY_MAX)
		return;
	if (s->last_rx_ms > s->big_status_ms ||
	    mono_ms() - s->big_status_ms > AGENT_STATUS_LEGACY_WINDOW_MS)
		return;
	a->status_max = AGENT_STATUS_LEGACY_MAX;
	free(a->status_json); /* the next poll builds it again under the new limit */
	a->status_json = NULL;
	pr_warn("relay %s closed the session right after a STATUS over %u bytes: it may predate "
		"larger control frames; keeping STATUS under %u bytes from now on",
		s->relay_str, AGENT_STATUS_LEGACY_MAX, AGENT_STATUS_LEGACY_MAX);
}

/* The current session is finished (failure, ERROR, GOODBYE, MOVE before WELCOME, silence). */
static void ctl_down(struct agent *a, const char *reason)
{
	struct agent_sess *s = a->cur;
	char why[256];
	snprintf(why, sizeof(why), "%s", reason); /* reason may live in s->ctl */
	bool was_up = a->state == AG_UP;
	/* Nothing came back from this address: the name may have others (DNS round robin). */
	while (!was_up && !s->answered && a->next != NEXT_STOP && s->addr_idx + 1 < s->naddrs) {
		sess_close(a, s);
		s->addr_idx++;
		char next[96];
		net_addr_fmt((const struct sockaddr *)&s->addrs[s->addr_idx].ss, next, sizeof(next));
		pr_info("relay %s: %s; trying %s, its next address", s->relay_str, why, next);
		if (!sess_dial(a, s, why, sizeof(why)))
			return;
	}
	s->naddrs = 0;
	legacy_relay_check(a, s);
	sess_close(a, s);
	if (!was_up) {
		a->fails++; /* counts towards measuring the regions again */
	} else {
		if (mono_ms() - s->up_since_ms >= AGENT_BACKOFF_RESET_MS)
			a->attempt = a->moves = 0;
		/* an UP session that ends without a MOVE (a MOVE migrates): if home does not take
		 * us back, its peers may */
		a->rehome = true;
		a->rot = 0;
	}
	if (!a->old) /* an old session still serving keeps the tunnel up */
		report_down(a, why);
	if (a->next == NEXT_STOP) {
		a->state = AG_WAIT;
		loop_stop(&a->loop);
		return;
	}
	/* a MOVE address is for the next attempt only; after that, the region's relay (a name
	 * that can lead to any healthy instance), or while re-homing the next peer */
	if (!a->moved) {
		if (!was_up && a->rehome && !a->placed && a->npeers)
			a->rot = (a->rot + 1) % (a->npeers + 1);
		pick_target(a);
	}
	a->placed = a->moved; /* the next HELLO tells the relay it was chosen for us */
	a->moved = false;
	schedule(a, was_up ? NULL : why);
}

/* The session a migration replaces is finished: by our GOODBYE "moved", or on its own. */
static void old_down(struct agent *a, const char *reason)
{
	struct agent_sess *o = a->old;
	char why[320];
	snprintf(why, sizeof(why), "%s", reason);
	bool quiet = o->quiet;
	char relay[96];
	snprintf(relay, sizeof(relay), "%s", o->relay_str);
	if (!quiet)
		legacy_relay_check(a, o);
	sess_close(a, o);
	a->old = NULL;
	if (quiet) {
		/* our new session took the tunnel over: expected */
		pr_debug("session on relay %s closed: %s", relay, why);
		return;
	}
	/* the relay died or dropped us before the new session was welcomed: the attempt in
	 * flight is now a plain reconnect, and re-homing applies after it */
	a->rehome = true;
	a->rot = 0;
	if (a->state != AG_UP) {
		char text[600];
		snprintf(text, sizeof(text), "%s (while moving to %s)", why, a->target);
		report_down(a, text);
	}
}

/* Refusals no retry can fix, by GOODBYE or ERROR code (the same words both ways):
 *   revoked  the token was revoked                    -> exit AGENT_EXIT_AUTH
 *   blocked  the tunnel was deleted or is over the plan -> exit AGENT_EXIT_AUTH
 *   idle     the plan closed a tunnel without players -> exit AGENT_EXIT_REFUSED
 * --retry-auth does not apply: the relay would refuse the same token again. Returns the exit
 * status, or 0 when code is none of these. text receives what to tell the user. */
int agent_final_refusal(const char *code, const char *reason, bool from_creds, char *text,
			size_t cap)
{
	const char *r = reason && reason[0] ? reason : NULL;
	if (!strcmp(code, "revoked")) {
		snprintf(text, cap,
			 "the tunnel's token was revoked (%s). Get a new one: %s",
			 r ? r : "revoked in the dashboard",
			 from_creds ? "'dvv tunnels use ID' or 'dvv login --token TOKEN'"
				    : "a new token from the dashboard");
		return AGENT_EXIT_AUTH;
	}
	if (!strcmp(code, "blocked")) {
		snprintf(text, cap,
			 "the relay will not run this tunnel: %s. 'dvv tunnels' shows which tunnels "
			 "the account can run",
			 r ? r : "it was deleted, or the plan has fewer tunnels");
		return AGENT_EXIT_AUTH;
	}
	if (!strcmp(code, "idle")) {
		snprintf(text, cap, "tunnel closed: %s",
			 r ? r : "no players for too long; run dvv again to reopen");
		return AGENT_EXIT_REFUSED;
	}
	return 0;
}

static void ctl_error(struct agent *a, const struct ctl_msg *m)
{
	const char *code = m->u.error.code, *msg = m->u.error.message;
	char text[400];
	int final = agent_final_refusal(code, msg, a->cfg->from_creds, text, sizeof(text));
	if (final) {
		report_error(code, text);
		a->next = NEXT_STOP;
		a->exit_code = final;
	} else if (!strcmp(code, "auth")) {
		snprintf(text, sizeof(text),
			 "the relay refused the token (%s). Check --token-file / DVV_TOKEN or get "
			 "a new token%s",
			 msg[0] ? msg : "invalid or expired",
			 a->cfg->retry_auth ? "; retrying (--retry-auth)" : "");
		report_error(code, text);
		if (a->cfg->retry_auth) {
			a->next = NEXT_AUTH;
		} else {
			a->next = NEXT_STOP;
			a->exit_code = AGENT_EXIT_AUTH;
		}
	} else if (!strcmp(code, "version") || !strcmp(code, "protocol")) {
		snprintf(text, sizeof(text),
			 "the relay does not speak this agent's protocol (dvv %s): %s. Upgrade "
			 "dvv",
			 AGENT_VERSION, msg[0] ? msg : "version mismatch");
		report_error(code, text);
		a->next = NEXT_STOP;
		a->exit_code = AGENT_EXIT_REFUSED;
	} else if (!strcmp(code, "name_taken")) {
		snprintf(text, sizeof(text),
			 "the tunnel's custom name is taken by another tunnel: %s. Choose another "
			 "name for this token",
			 msg[0] ? msg : "name taken");
		report_error(code, text);
		a->next = NEXT_STOP;
		a->exit_code = AGENT_EXIT_REFUSED;
	} else {
		/* busy, unavailable, timeout, and codes newer than this agent: retry */
		snprintf(text, sizeof(text), "relay refused the tunnel: %s", msg[0] ? msg : code);
		report_error(code, text);
		a->next = m->u.error.retry_after_ms ? NEXT_AFTER : NEXT_BACKOFF;
		a->retry_after_ms = m->u.error.retry_after_ms;
	}
	snprintf(a->cur->down_reason, sizeof(a->cur->down_reason), "relay error %s: %s", code,
		 msg[0] ? msg : code);
}

static void ping_arm(struct agent *a, struct agent_sess *s)
{
	uint64_t now = mono_ms();
	uint64_t dead_at = s->last_rx_ms + (uint64_t)AGENT_DEAD_PINGS * s->ping_ms;
	uint64_t at = s->next_ping_ms < dead_at ? s->next_ping_ms : dead_at;
	loop_timer_arm(&a->loop, &s->timer, at > now ? at - now : 0);
}

/* PING and liveness of an UP session (current or old). */
static void sess_tick(struct agent *a, struct agent_sess *s)
{
	char why[160];
	uint64_t now = mono_ms();
	if (now - s->last_rx_ms >= (uint64_t)AGENT_DEAD_PINGS * s->ping_ms) {
		snprintf(why, sizeof(why), "relay silent for %llu s",
			 (unsigned long long)(now - s->last_rx_ms) / 1000);
		sess_down(a, s, why);
		return;
	}
	if (now >= s->next_ping_ms) {
		struct ctl_msg ping = {.type = CTL_PING};
		ping.u.ping.t = now;
		s->next_ping_ms = now + s->ping_ms;
		if (ctl_send_now(a, s, &ping))
			return;
	}
	ping_arm(a, s);
}

static void ctl_welcome(struct agent *a, const struct ctl_msg *m)
{
	struct agent_sess *s = a->cur;
	a->state = AG_UP;
	s->up = true;
	a->fails = 0;
	a->rehome = false;
	a->rot = 0;
	/* the region's other relays as this one sees them now: where to go if it dies */
	a->npeers = 0;
	for (uint32_t i = 0; i < m->u.welcome.npeers && i < CTL_PEERS_MAX; i++)
		snprintf(a->peers[a->npeers++], sizeof(a->peers[0]), "%s", m->u.welcome.peers[i]);
	snprintf(s->hostname, sizeof(s->hostname), "%s", m->u.welcome.hostname);
	s->ping_ms = m->u.welcome.ping_ms ? m->u.welcome.ping_ms : AGENT_PING_DEFAULT_MS;
	if (s->ping_ms < 1000)
		s->ping_ms = 1000;
	s->up_since_ms = mono_ms();
	s->next_ping_ms = s->up_since_ms + s->ping_ms;
	ping_arm(a, s);
	struct agent_event ev = {.type = AGENT_EV_TUNNEL_UP,
				 .relay = s->relay_str,
				 .hostname = m->u.welcome.hostname,
				 .tunnel = m->u.welcome.tunnel,
				 .region = m->u.welcome.region,
				 .from = a->old ? a->old->relay_str : NULL,
				 .active = a->active,
				 .joins = a->joins};
	agent_report(&ev);
	a->shown_up = true;
	if (a->old)
		a->mig_finish = true; /* GOODBYE "moved" on the old one, after this read */
	/* the relay's status cache: poll the local server now, then every 30 s */
	loop_timer_arm(&a->loop, &a->status_timer, 0);
}

/* MOVE or GOODBYE "draining" on the UP session: make-before-break, once ctl_conn_io returned. */
static void migrate_request(struct agent *a, const char *to, bool placed, const char *why)
{
	a->mig_pending = true;
	a->mig_placed = placed;
	snprintf(a->mig_to, sizeof(a->mig_to), "%s", to);
	snprintf(a->mig_reason, sizeof(a->mig_reason), "%s", why);
}

static void ctl_start(struct agent *a);

static void migrate_begin(struct agent *a)
{
	a->mig_pending = false;
	struct agent_sess *s = a->cur;
	if (a->state != AG_UP || a->old)
		return; /* only an UP session without a migration in flight moves */
	if (mono_ms() - s->up_since_ms >= AGENT_BACKOFF_RESET_MS)
		a->attempt = a->moves = 0;
	a->old = s;
	a->cur = other_slot(a, s);
	a->state = AG_WAIT;
	struct agent_event ev = {.type = AGENT_EV_MIGRATING,
				 .relay = s->relay_str,
				 .to = a->mig_to,
				 .reason = a->mig_reason,
				 .active = a->active,
				 .joins = a->joins};
	agent_report(&ev);
	snprintf(a->target, sizeof(a->target), "%s", a->mig_to);
	a->placed = a->mig_placed;
	a->moved = false;
	a->rehome = false;
	a->rot = 0;
	/* right away, unless relays keep bouncing us around */
	if (++a->moves <= 3) {
		ctl_start(a);
		return;
	}
	a->next = NEXT_BACKOFF;
	schedule(a, NULL);
}

static void migrate_finish(struct agent *a)
{
	a->mig_finish = false;
	struct agent_sess *o = a->old;
	if (!o || a->state != AG_UP)
		return;
	char reason[128];
	snprintf(reason, sizeof(reason), "session moved to %s", a->cur->relay_str);
	pr_info("tunnel moved from relay %s to %s; closing the old session", o->relay_str,
		a->cur->relay_str);
	sess_goodbye(o, "moved", reason);
	o->quiet = true;
	old_down(a, reason);
}

/* ATTACH: one pooled data connection per token (both the current and a replaced session). */
static void sess_attach(struct agent_sess *s, const struct ctl_msg *m)
{
	for (uint32_t i = 0; i < m->u.attach.n; i++)
		pool_add(s, m->u.attach.tokens[i]);
}

/* PING: answer PONG; 1 (end the session) when it cannot even be queued. */
static int sess_pong(struct agent_sess *s, const struct ctl_msg *m)
{
	struct ctl_msg pong = {.type = CTL_PONG};
	pong.u.ping.t = m->u.ping.t;
	if (ctl_conn_send(s->ctl, &pong)) {
		snprintf(s->down_reason, sizeof(s->down_reason), "%s", s->ctl->err);
		return 1;
	}
	return 0;
}

/* Messages on the session a migration replaces: it serves until the new one is welcomed. */
static int old_on_msg(struct agent *a, struct agent_sess *s, const struct ctl_msg *m)
{
	switch (m->type) {
	case CTL_ATTACH:
		sess_attach(s, m);
		return 0;
	case CTL_PING:
		return sess_pong(s, m);
	case CTL_MOVE:
		pr_info("relay %s asked to move to %s: already moving to %s", s->relay_str,
			m->u.move.addr, a->target);
		return 0;
	case CTL_GOODBYE:
		/* our new session registering elsewhere (taken_over) or on this very relay
		 * (replaced) ends this one: expected while moving */
		s->quiet = !strcmp(m->u.goodbye.code, "taken_over") ||
			   !strcmp(m->u.goodbye.code, "replaced");
		snprintf(s->down_reason, sizeof(s->down_reason), "relay said goodbye (%s)",
			 m->u.goodbye.reason[0] ? m->u.goodbye.reason : m->u.goodbye.code);
		return 1;
	case CTL_ERROR:
		snprintf(s->down_reason, sizeof(s->down_reason), "relay error %s: %s",
			 m->u.error.code, m->u.error.message[0] ? m->u.error.message : m->u.error.code);
		return 1;
	default:
		return 0;
	}
}

/* PLAN: remember it and tell the user; a line when more than the usage changed. */
static void plan_update(struct agent *a, const struct ctl_msg *m)
{
	const typeof(m->u.plan) *n = &m->u.plan, *o = &a->plan.u.plan;
	bool changed = !a->have_plan || strcmp(n->tier, o->tier) ||
		       n->max_tunnels != o->max_tunnels || n->max_players != o->max_players ||
		       n->idle_timeout_s != o->idle_timeout_s ||
		       n->bandwidth_bytes != o->bandwidth_bytes || n->period_end != o->period_end ||
		       strcmp(n->state, o->state) || strcmp(n->message, o->message);
	a->plan = *m;
	a->have_plan = true;
	struct agent_event ev = {.type = AGENT_EV_PLAN,
				 .plan = &a->plan,
				 .plan_changed = changed,
				 .active = a->active,
				 .joins = a->joins};
	agent_report(&ev);
}

/* Called from inside ctl_conn_io: only queue messages here; anything that ends the channel
 * sets s->down_reason and returns 1, and ctl_io_cb tears down after ctl_conn_io returned
 * (migrations too: a->mig_pending / a->mig_finish). */
static int ctl_on_msg(struct ctl_conn *c, const struct ctl_msg *m)
{
	struct agent_sess *s = c->data;
	struct agent *a = s->a;
	s->last_rx_ms = mono_ms();
	s->answered = true;
	if (s == a->old)
		return old_on_msg(a, s, m);
	switch (m->type) {
	case CTL_WELCOME:
		if (a->state != AG_HELLO)
			return 0;
		ctl_welcome(a, m);
		return 0;
	case CTL_ERROR:
		a->mig_pending = false; /* the relay's last word wins over a MOVE before it */
		ctl_error(a, m);
		return 1;
	case CTL_ATTACH:
		if (a->state == AG_UP)
			sess_attach(s, m);
		return 0;
	case CTL_PING:
		return sess_pong(s, m);
	case CTL_PONG:
		pr_debug("relay round trip %llu ms",
			 (unsigned long long)(s->last_rx_ms - m->u.ping.t));
		return 0;
	case CTL_MOVE: {
		char host[256], why[160];
		uint16_t port;
		if (net_split_hostport(m->u.move.addr, host, sizeof(host), &port) || !port) {
			pr_warn("relay sent MOVE to a bad address '%s': ignored", m->u.move.addr);
			return 0;
		}
		snprintf(why, sizeof(why), "%s", m->u.move.reason[0] ? m->u.move.reason : "no reason");
		if (a->state == AG_UP) {
			/* make-before-break: this session serves until the new one is up */
			migrate_request(a, m->u.move.addr, true, why);
			return 0;
		}
		/* placement before WELCOME: nothing to keep, dial the given relay instead */
		snprintf(a->target, sizeof(a->target), "%s", m->u.move.addr);
		a->moved = true;
		/* right away, unless relays keep bouncing us around */
		a->next = ++a->moves <= 3 ? NEXT_NOW : NEXT_BACKOFF;
		snprintf(s->down_reason, sizeof(s->down_reason), "relay moved us to %s (%s)",
			 m->u.move.addr, why);
		return 1;
	}
	case CTL_GOODBYE:
		if (a->state == AG_UP && !strcmp(m->u.goodbye.code, "draining")) {
			/* no target given: the region's endpoint picks one; keep serving meanwhile */
			migrate_request(a, a->home, false, "relay draining");
			return 0;
		}
		a->mig_pending = false;
		snprintf(s->down_reason, sizeof(s->down_reason), "relay said goodbye (%s)",
			 m->u.goodbye.reason[0] ? m->u.goodbye.reason : "no reason");
		char text[400];
		int final = agent_final_refusal(m->u.goodbye.code, m->u.goodbye.reason,
						a->cfg->from_creds, text, sizeof(text));
		if (final) {
			report_error(m->u.goodbye.code, text);
			a->next = NEXT_STOP;
			a->exit_code = final;
		} else if (!strcmp(m->u.goodbye.code, "plan")) {
			/* the plan changed under a running tunnel (a custom name no longer
			 * allowed): come back at once, the relay gives the tunnel what the plan
			 * allows now */
			pr_info("relay closed the session for a plan change (%s); reconnecting",
				m->u.goodbye.reason[0] ? m->u.goodbye.reason : "no reason");
			a->next = ++a->moves <= 3 ? NEXT_NOW : NEXT_BACKOFF;
		} else if (!strcmp(m->u.goodbye.code, "bandwidth")) {
			snprintf(text, sizeof(text), "the plan's bandwidth for this period is used up: %s",
				 m->u.goodbye.reason[0] ? m->u.goodbye.reason : "no reason given");
			report_error("bandwidth", text);
		} else if (!strcmp(m->u.goodbye.code, "replaced") ||
		    (!m->u.goodbye.code[0] && strstr(m->u.goodbye.reason, "replaced"))) {
			/* Another agent runs with this token: two agents would take the tunnel
			 * from each other forever. Say so, and come back only slowly. */
			report_error("replaced",
				     "another dvv using this token took over the tunnel; stop one of "
				     "them (retrying in about 30 s)");
			a->next = NEXT_AFTER;
			a->retry_after_ms = AGENT_BACKOFF_CAP_MS;
		}
		return 1;
	case CTL_PLAN:
		if (a->state == AG_UP)
			plan_update(a, m);
		return 0;
	default:
		return 0; /* HELLO from a relay, or a newer type: ignore */
	}
}

/* TCP is up: TLS and HELLO. Returns 0 or -1 when the session went down. */
static int ctl_hello(struct agent *a, struct agent_sess *s)
{
	s->ctl = calloc(1, sizeof(*s->ctl));
	if (!s->ctl || ctl_conn_init(s->ctl, a->tls, s->io.fd, false, s->sni)) {
		ctl_down(a, "out of memory for the control channel");
		return -1;
	}
	s->ctl->on_msg = ctl_on_msg;
	s->ctl->data = s;
	struct ctl_msg *hello = calloc(1, sizeof(*hello));
	if (!hello) {
		ctl_down(a, "out of memory for the control channel");
		return -1;
	}
	hello->type = CTL_HELLO;
	hello->u.hello.proto = CTL_VERSION;
	if (a->renew) /* the newest token the renewal thread got, else the one we started with */
		renew_token(a->renew, hello->u.hello.token, sizeof(hello->u.hello.token));
	else
		snprintf(hello->u.hello.token, sizeof(hello->u.hello.token), "%s", a->cfg->token);
	snprintf(hello->u.hello.agent, sizeof(hello->u.hello.agent), "dvv/%s", AGENT_VERSION);
	hello->u.hello.placed = a->placed;
	int rc = ctl_conn_send(s->ctl, hello);
	explicit_bzero(hello, sizeof(*hello));
	free(hello);
	if (rc) {
		ctl_down(a, s->ctl->err[0] ? s->ctl->err : strerror(-rc));
		return -1;
	}
	a->state = AG_HELLO;
	return 0;
}

static void ctl_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent_sess *s = container_of(io, struct agent_sess, io);
	struct agent *a = s->a;
	if (s == a->cur && a->state == AG_CONNECT) {
		int e = net_so_error(io->fd);
		if (e) {
			char why[320];
			snprintf(why, sizeof(why), "connect to relay %s: %s", s->relay_str,
				 strerror(e));
			ctl_down(a, why);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		if (ctl_hello(a, s))
			return;
	}
	if (!s->ctl)
		return; /* a stale event for a slot that closed in this batch */
	s->down_reason[0] = 0;
	int rc = ctl_conn_io(s->ctl);
	/* migration steps the messages asked for; s may become the old session here */
	if (a->mig_finish)
		migrate_finish(a);
	if (a->mig_pending)
		migrate_begin(a);
	if (rc == -ECANCELED) {
		sess_down(a, s, s->down_reason[0] ? s->down_reason : "closed");
		return;
	}
	ctl_set_events(a, s, rc);
}

/* Dial s->addrs[s->addr_idx]. 0, or -1 with the reason in err (the caller ends the attempt). */
static int sess_dial(struct agent *a, struct agent_sess *s, char *err, size_t errlen)
{
	s->relay_addr = s->addrs[s->addr_idx];
	net_addr_fmt((const struct sockaddr *)&s->relay_addr.ss, s->relay_str,
		     sizeof(s->relay_str));
	s->answered = false;
	s->down_reason[0] = 0;
	int fd, rc = net_connect(&s->relay_addr, &fd);
	if (!rc) {
		s->io.fd = fd; /* closed by sess_close whatever happens next */
		/* an idle control channel must survive NATs between PINGs, and a dead path must
		 * fail in seconds, not after minutes of retransmissions */
		net_keepalive(fd, NET_KEEPALIVE_IDLE_S);
		rc = loop_io_set(&a->loop, &s->io, EPOLLOUT);
	}
	if (rc) {
		snprintf(err, errlen, "connect to relay %s: %s", s->relay_str, strerror(-rc));
		return -1;
	}
	a->state = AG_CONNECT;
	loop_timer_arm(&a->loop, &s->timer, AGENT_HANDSHAKE_TIMEOUT_MS);
	return 0;
}

static void ctl_start(struct agent *a)
{
	struct agent_sess *s = a->cur;
	char err[320], host[256];
	uint16_t port;
	struct agent_event ev = {.type = AGENT_EV_CONNECTING, .relay = a->target};
	agent_report(&ev);

	/* The certificate must name what the user asked for. A MOVE or a peer given as a bare
	 * IP address (another instance behind the same name) is checked against the configured
	 * name. */
	net_split_hostport(a->target, host, sizeof(host), &port);
	struct in6_addr tmp;
	if (strcmp(a->target, a->home) &&
	    (inet_pton(AF_INET, host, &tmp) == 1 || inet_pton(AF_INET6, host, &tmp) == 1))
		net_split_hostport(a->home, host, sizeof(host), &port);
	snprintf(s->sni, sizeof(s->sni), "%s", host);

	s->naddrs = s->addr_idx = 0;
	int n = net_resolve_all(a->target, s->addrs, AGENT_MAX_ADDRS, err, sizeof(err));
	if (n < 0) {
		ctl_down(a, err);
		return;
	}
	s->naddrs = (unsigned)n;
	if (sess_dial(a, s, err, sizeof(err)))
		ctl_down(a, err);
}

/* ---- edge status ---- */

/* Send the last polled status on the current session if it changed since the last one sent
 * there, at most one per AGENT_STATUS_MIN_GAP_MS (a skipped one goes with the next poll). */
static void status_send(struct agent *a)
{
	struct agent_sess *s = a->cur;
	if (a->state != AG_UP || !s->ctl || !a->status_json)
		return;
	uint64_t h = hash_bytes(a->hash_key, a->status_json, a->status_json_len);
	if (s->status_sent && s->status_sent_hash == h)
		return;
	uint64_t now = mono_ms();
	if (s->status_sent && now - s->status_sent_ms < AGENT_STATUS_MIN_GAP_MS)
		return;
	/* a relay slow to read must not cost the session: STATUS can wait, PONGs cannot */
	if (s->ctl->outlen + CTL_HDR_LEN + a->status_json_len > CTL_OUT_MAX / 2) {
		pr_debug("control channel busy: the status waits for the next poll");
		return;
	}
	struct ctl_msg m = {.type = CTL_STATUS};
	m.u.status.json = a->status_json;
	m.u.status.len = a->status_json_len;
	if (ctl_send_now(a, s, &m))
		return;
	s->status_sent = true;
	s->status_sent_hash = h;
	s->status_sent_ms = now;
	if (a->status_json_len > AGENT_STATUS_LEGACY_MAX)
		s->big_status_ms = now;
	pr_debug("sent the local server's status (%zu bytes)", a->status_json_len);
}

/* A server that is down or not a Minecraft server just means no STATUS: said once per streak. */
static void status_failed(struct agent *a, const char *why)
{
	if (!a->status_failing)
		pr_info("local server %s: no status for the relay to show while the tunnel is "
			"offline (%s); trying again every %u s",
			a->cfg->local, why, AGENT_STATUS_POLL_MS / 1000);
	else
		pr_debug("local server %s: status poll: %s", a->cfg->local, why);
	a->status_failing = true;
}

static void status_done(struct agent_status_poll *p, int err, const char *json, size_t len)
{
	struct agent *a = p->data;
	char why[96];
	if (err) {
		snprintf(why, sizeof(why), "%s",
			 err == -EMSGSIZE ? "status response larger than 64 KiB"
			 : err == -EPROTO ? "not a Minecraft status response"
			 : err == -ETIMEDOUT ? "no answer within 5 s"
					     : strerror(-err));
		status_failed(a, why);
		return;
	}
	char *out;
	size_t n;
	int rc = agent_status_payload(json, len, a->status_max, &out, &n);
	if (rc) {
		if (rc == -EMSGSIZE)
			snprintf(why, sizeof(why), "status over %zu bytes even without its favicon",
				 a->status_max);
		else
			snprintf(why, sizeof(why), "%s",
				 rc == -EPROTO ? "the status is not a JSON object" : strerror(-rc));
		status_failed(a, why);
		return;
	}
	if (a->status_failing)
		pr_info("local server %s answers status pings again", a->cfg->local);
	a->status_failing = false;
	free(a->status_json);
	a->status_json = out;
	a->status_json_len = n;
	status_send(a);
}

static void status_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct agent *a = container_of(t, struct agent, status_timer);
	if (a->state != AG_UP)
		return; /* the next WELCOME starts polling again */
	loop_timer_arm(l, t, AGENT_STATUS_POLL_MS);
	if (agent_status_poll_busy(&a->status))
		return; /* its answer goes to this session */
	int rc = agent_status_poll_start(&a->status, &a->local_addr, a->cur->hostname);
	if (rc)
		status_failed(a, strerror(-rc));
}

/* ---- region measurement ---- */

static void probe_done(struct agent_probe *p, void *arg)
{
	struct agent *a = arg;
	const struct agent_config *cfg = a->cfg;
	const struct agent_region_result *res = agent_probe_results(p);
	int pick = agent_region_pick(res, cfg->nregions);
	struct agent_event ev = {.type = AGENT_EV_REGIONS,
				 .regions = cfg->regions,
				 .results = res,
				 .nregions = cfg->nregions,
				 .picked = pick,
				 .previous = a->region,
				 .active = a->active,
				 .joins = a->joins};
	agent_report(&ev);
	if (pick < 0 && a->region < 0)
		pick = 0; /* nothing answers at start: try the first region, measure again later */
	if (pick >= 0 && pick != a->region) {
		if (a->region >= 0)
			a->attempt = 0; /* another relay group: its own backoff */
		a->region = pick;
		snprintf(a->home, sizeof(a->home), "%s", cfg->regions[pick].endpoint);
	}
	agent_probe_free(p);
	a->probe = NULL;
	a->fails = 0;
	a->rot = 0;
	snprintf(a->target, sizeof(a->target), "%s", a->home);
	a->state = AG_WAIT;
	ctl_start(a);
}

/* Measure, then dial the pick (from probe_done). Dials at once if it cannot measure. */
static void probe_begin(struct agent *a)
{
	struct agent_event ev = {.type = AGENT_EV_MEASURING,
				 .nregions = a->cfg->nregions,
				 .active = a->active,
				 .joins = a->joins};
	agent_report(&ev);
	a->state = AG_PROBE;
	int rc = agent_probe_start(&a->loop, a->cfg->regions, a->cfg->nregions, probe_done, a,
				   &a->probe);
	if (rc) {
		pr_warn("cannot measure the regions: %s", strerror(-rc));
		a->probe = NULL;
		a->state = AG_WAIT;
		ctl_start(a);
	}
}

static void ctl_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct agent_sess *s = container_of(t, struct agent_sess, timer);
	struct agent *a = s->a;
	char why[160];
	if (s == a->old) {
		sess_tick(a, s);
		return;
	}
	switch (a->state) {
	case AG_WAIT:
		/* a MOVE target (placed) goes first; the measurement waits for the next one */
		if (a->cfg->measure && !a->placed && a->fails >= AGENT_REMEASURE_AFTER) {
			probe_begin(a);
			return;
		}
		ctl_start(a);
		return;
	case AG_PROBE:
		return;
	case AG_CONNECT:
	case AG_HELLO:
		snprintf(why, sizeof(why), "relay %s did not answer within %u s", s->relay_str,
			 AGENT_HANDSHAKE_TIMEOUT_MS / 1000);
		ctl_down(a, why);
		return;
	case AG_UP:
		sess_tick(a, s);
		return;
	}
}

/* ---- stop ---- */

static void stop_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent *a = container_of(io, struct agent, stop_io);
	char buf[128]; /* a signalfd_siginfo, or an eventfd counter */
	ssize_t n = read(io->fd, buf, sizeof(buf));
	(void)n;
	pr_debug("stopping");
	sess_goodbye(a->cur, NULL, "agent stopping");
	if (a->old)
		sess_goodbye(a->old, NULL, "agent stopping");
	a->next = NEXT_STOP;
	a->exit_code = AGENT_EXIT_OK;
	loop_stop(l);
}

/* ---- life cycle ---- */

static void close_all(struct agent *a)
{
	agent_probe_free(a->probe);
	a->probe = NULL;
	agent_status_poll_stop(&a->status);
	loop_timer_cancel(&a->loop, &a->status_timer);
	sess_close(a, a->cur);
	if (a->old)
		sess_close(a, a->old);
	a->old = NULL;
	a->mig_pending = a->mig_finish = false;
	a->state = AG_WAIT;
	workers_stop(a); /* the players they carry are closed and reported on this thread */
	for (struct agent_dc *d; (d = dclist_first(&a->players));)
		dc_close(d);
}

int agent_new(const struct agent_config *cfg, struct agent **out, char *err, size_t errlen)
{
	int rc = 0;
	struct agent *a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	a->cfg = cfg;
	pthread_mutex_init(&a->done_lock, NULL);
	dlist_init(&a->done);
	a->stop_io = (struct loop_io){.fd = -1};
	a->loop.epfd = a->loop.wakefd = -1;
	for (int i = 0; i < 2; i++) {
		struct agent_sess *s = &a->sess[i];
		s->a = a;
		dclist_init(&s->pool);
		s->io = (struct loop_io){.fd = -1, .cb = ctl_io_cb};
		s->timer.cb = ctl_timer_cb;
	}
	dclist_init(&a->players);
	a->cur = &a->sess[0];
	a->status_timer.cb = status_timer_cb;
	rand_bytes(a->hash_key, sizeof(a->hash_key));
	snprintf(a->home, sizeof(a->home), "%s", cfg->relay);
	snprintf(a->target, sizeof(a->target), "%s", cfg->relay);
	a->region = cfg->measure ? -1 : cfg->region;
	for (int i = 0; i < 2; i++) {
		a->sess[i].queue = calloc(AGENT_MAX_POOL, ATTACH_TOKEN_LEN);
		if (!a->sess[i].queue) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
	}
	if ((rc = net_parse_addr(cfg->local, &a->local_addr, true, err, errlen))) {
		char e2[256];
		snprintf(e2, sizeof(e2), "--local: %s", err);
		snprintf(err, errlen, "%s", e2);
		goto out;
	}
	const char *ca = cfg->ca_file;
	if (!ca && !cfg->pin)
		ca = http_system_ca_bundle();
	if (cfg->ca_pem && !cfg->ca_file && !cfg->pin)
		a->tls = http_tls_ctx(NULL, cfg->ca_pem, err, errlen); /* the stored relays' CA */
	else
		a->tls = tls_client_ctx(ca, cfg->pin, err, errlen);
	if (!a->tls) {
		rc = -EINVAL;
		goto out;
	}
	if ((rc = loop_init(&a->loop))) {
		a->loop.epfd = -1;
		snprintf(err, errlen, "event loop: %s", strerror(-rc));
		goto out;
	}
	a->loop.data = a;
	a->loop.on_wake = dc_take_done;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int nw = cfg->workers >= 0 ? cfg->workers : (ncpu > 0 ? (int)ncpu : 1);
	if (nw > 1 && (rc = spool_start(&a->workers, nw, dc_worker_run, a))) {
		snprintf(err, errlen, "worker threads: %s", strerror(-rc));
		goto out;
	}
	agent_status_poll_init(&a->status, &a->loop, status_done, a);
	a->status.proxy_protocol = cfg->proxy_protocol;
	a->status_max = CTL_PAYLOAD_MAX;
	*out = a;
	return 0;
out:
	agent_free(a);
	return rc;
}

int agent_run(struct agent *a, int stop_fd)
{
	int rc;
	if (stop_fd >= 0) {
		a->stop_io = (struct loop_io){.fd = stop_fd, .cb = stop_cb};
		if ((rc = loop_io_set(&a->loop, &a->stop_io, EPOLLIN))) {
			pr_err("cannot watch signals: %s", strerror(-rc));
			return AGENT_EXIT_FAIL;
		}
	}
	a->state = AG_WAIT;
	a->exit_code = AGENT_EXIT_OK;
	if (a->cfg->measure && a->cfg->nregions)
		probe_begin(a);
	else
		ctl_start(a);
	rc = loop_run(&a->loop);
	if (rc) {
		pr_err("event loop: %s", strerror(-rc));
		a->exit_code = AGENT_EXIT_FAIL;
	}
	/* everything closes here: the measurement, the status poll, the control sessions with
	 * their pools, then the players */
	close_all(a);
	report_down(a, "agent stopping");
	loop_io_del(&a->loop, &a->stop_io);
	a->stop_io.fd = -1;
	return a->exit_code;
}

void agent_set_renew(struct agent *a, struct renew *r) { a->renew = r; }

void agent_free(struct agent *a)
{
	if (!a)
		return;
	if (a->loop.epfd >= 0) {
		close_all(a);
		loop_free(&a->loop); /* runs the deferred frees */
	}
	if (a->tls)
		SSL_CTX_free(a->tls);
	for (int i = 0; i < 2; i++)
		free(a->sess[i].queue);
	free(a->status_json);
	pthread_mutex_destroy(&a->done_lock);
	explicit_bzero(a, sizeof(*a));
	free(a);
}
