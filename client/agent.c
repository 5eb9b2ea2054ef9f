/* The agent session.
 *
 * Control channel states:  WAIT --timer--> CONNECT --tcp up--> HELLO --WELCOME--> UP
 * and any failure goes back to WAIT with a backoff (or ends the run for a refused token).
 * Without --relay / --region the run starts in PROBE (regions.c measures every region and the
 * fastest becomes "home"), and after AGENT_REMEASURE_AFTER attempts in a row without a session
 * WAIT goes through PROBE again before dialling (unless a MOVE chose the next relay).
 *
 * Data connections (struct agent_dc), one per ATTACH token:
 *   CONNECTING  TCP connect to the relay, then the 36-byte "DVVA"+token preamble
 *   IDLE        in the pool, silent, waiting for the relay's player header (read exactly)
 *   LOCAL       a player was assigned: connecting to the local server (+ PROXY v2 header)
 *   SPLICE      splice_pair moves the bytes both ways until both sides are done
 * CONNECTING and IDLE belong to the control session that asked for them and close with it;
 * LOCAL and SPLICE are players and outlive it. */
#include "agent.h"
#include "ctlconn.h"
#include "list.h"
#include "log.h"
#include "splice.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
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

struct agent_dc {
	struct agent *a;
	struct dlist node; /* a->pool while CONNECTING or IDLE, then a->players */
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
	uint64_t start_ms;
	char player_str[64];
};

struct agent {
	struct loop loop;
	const struct agent_config *cfg;
	SSL_CTX *tls;
	struct net_addr local_addr;

	/* control channel */
	enum agent_state state;
	char home[256];		    /* the relay of the region in use (cfg->relay at start) */
	int region;		    /* index of home in cfg->regions, -1 with --relay */
	char target[256];	    /* relay to dial next: home or a MOVE address */
	char sni[256];		    /* name the relay certificate must carry */
	char relay_str[96];	    /* the resolved address of this session, for humans */
	struct net_addr relay_addr; /* data connections dial exactly this */
	struct loop_io ctl_io;
	struct ctl_conn *ctl;
	struct loop_timer ctl_timer;
	uint32_t ping_ms;
	uint64_t last_rx_ms, next_ping_ms, up_since_ms;
	unsigned attempt;	    /* consecutive failed attempts, drives the backoff */
	unsigned moves;		    /* MOVEs without a long session in between */
	unsigned fails;		    /* attempts without a session since the last measurement */
	struct agent_probe *probe;  /* the measurement in progress (AG_PROBE) */
	bool moved;		    /* target holds a MOVE address for the next attempt */
	bool placed;		    /* this attempt dials a relay a MOVE chose: no further MOVE */
	enum agent_next next;
	uint32_t retry_after_ms;
	char down_reason[320];

	/* data connections */
	struct dlist pool;	    /* CONNECTING + IDLE */
	struct dlist players;	    /* LOCAL + SPLICE */
	unsigned npool;		    /* entries in pool, against AGENT_MAX_POOL */
	unsigned connecting;
	uint8_t (*queue)[ATTACH_TOKEN_LEN]; /* tokens waiting for a connect slot (ring) */
	size_t qhead, qlen;
	unsigned active;	    /* players in SPLICE */
	uint64_t joins;

	struct loop_io stop_io;
	int exit_code;
};

static void ctl_timer_cb(struct loop *l, struct loop_timer *t);
static void ctl_io_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void dc_io_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void dc_local_cb(struct loop *l, struct loop_io *io, uint32_t events);
static void dc_timer_cb(struct loop *l, struct loop_timer *t);
static void ctl_down(struct agent *a, const char *reason);

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
			if (data_hdr_body(r->buf + DATA_HDR_FIXED, r->need - DATA_HDR_FIXED, out))
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

/* ---- events for the user ---- */

static void report_error(const char *code, const char *message)
{
	struct agent_event ev = {.type = AGENT_EV_ERROR, .code = code, .message = message};
	agent_report(&ev);
}

/* ---- data connections ---- */

static void dc_free(void *arg) { free(arg); }

static void pool_refill(struct agent *a);

/* Close a data connection in any state; a player's end is reported. */
static void dc_close(struct agent_dc *d)
{
	struct agent *a = d->a;
	loop_timer_cancel(&a->loop, &d->timer);
	if (d->state == DC_SPLICE) {
		struct agent_event ev = {
			.type = AGENT_EV_PLAYER_CLOSE,
			.player = d->player_str,
			.bytes_in = d->pair.dir[0].bytes,
			.bytes_out = d->pair.dir[1].bytes,
			.duration_ms = a->loop.now - d->start_ms,
		};
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
		a->connecting--;
	dlist_del(&d->node);
	if (d->state <= DC_IDLE)
		a->npool--;
	loop_defer(&a->loop, dc_free, d);
	if (d->state == DC_CONNECTING)
		pool_refill(a);
}

static void dc_open(struct agent *a, const uint8_t token[ATTACH_TOKEN_LEN])
{
	struct agent_dc *d = calloc(1, sizeof(*d));
	if (!d) {
		pr_rl(LOG_WARN, "out of memory for a data connection");
		return;
	}
	d->a = a;
	d->io = (struct loop_io){.fd = -1, .cb = dc_io_cb};
	d->local_io = (struct loop_io){.fd = -1, .cb = dc_local_cb};
	d->timer.cb = dc_timer_cb;
	memcpy(d->pre, DATA_ATTACH_MAGIC, 4);
	memcpy(d->pre + 4, token, ATTACH_TOKEN_LEN);
	agent_hdr_reset(&d->hdr);
	int fd, rc = net_connect(&a->relay_addr, &fd);
	if (!rc) {
		d->io.fd = fd;
		rc = loop_io_set(&a->loop, &d->io, EPOLLOUT);
	}
	if (rc) {
		pr_rl(LOG_WARN, "data connection to relay %s: %s", a->relay_str, strerror(-rc));
		if (d->io.fd >= 0)
			close(d->io.fd);
		explicit_bzero(d->pre, sizeof(d->pre));
		free(d);
		return;
	}
	d->state = DC_CONNECTING;
	a->connecting++;
	dlist_add_head(&a->pool, &d->node);
	a->npool++;
	loop_timer_arm(&a->loop, &d->timer, AGENT_DATA_CONNECT_TIMEOUT_MS);
}

static void pool_refill(struct agent *a)
{
	while (a->qlen && a->connecting < AGENT_MAX_CONNECTING && a->state == AG_UP) {
		uint8_t tok[ATTACH_TOKEN_LEN];
		memcpy(tok, a->queue[a->qhead], ATTACH_TOKEN_LEN);
		a->qhead = (a->qhead + 1) % AGENT_MAX_POOL;
		a->qlen--;
		dc_open(a, tok);
	}
}

static void pool_add(struct agent *a, const uint8_t token[ATTACH_TOKEN_LEN])
{
	if (a->npool + a->qlen >= AGENT_MAX_POOL) {
		pr_rl(LOG_WARN, "relay asked for more than %d pooled data connections: ignored",
		      AGENT_MAX_POOL);
		return;
	}
	if (a->connecting < AGENT_MAX_CONNECTING && !a->qlen) {
		dc_open(a, token);
		return;
	}
	memcpy(a->queue[(a->qhead + a->qlen) % AGENT_MAX_POOL], token, ATTACH_TOKEN_LEN);
	a->qlen++;
}

/* Idle (unassigned) data connections belong to a control session: they go with it. */
static void pool_close(struct agent *a)
{
	a->qlen = 0;
	a->qhead = 0;
	while (!dlist_empty(&a->pool))
		dc_close(dlist_first(&a->pool, struct agent_dc, node));
}

static void dc_splice_done(struct splice_pair *p, int err)
{
	struct agent_dc *d = p->data;
	if (err)
		pr_debug("player %s: %s", d->player_str, strerror(err));
	dc_close(d);
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
	int dfd = d->io.fd, lfd = d->local_io.fd;
	loop_timer_cancel(&a->loop, &d->timer);
	loop_io_del(&a->loop, &d->io);
	loop_io_del(&a->loop, &d->local_io);
	int rc = splice_pair_start(&a->loop, &d->pair, dfd, lfd, dc_splice_done);
	if (rc) {
		pr_rl(LOG_WARN, "player %s: cannot start forwarding: %s", d->player_str,
		      strerror(-rc));
		dc_close(d);
		return;
	}
	/* the pair owns both fds now */
	d->io.fd = d->local_io.fd = -1;
	d->pair.data = d;
	d->state = DC_SPLICE;
	d->start_ms = a->loop.now;
	a->active++;
	a->joins++;
	struct agent_event ev = {.type = AGENT_EV_PLAYER_OPEN,
				 .player = d->player_str,
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
			pr_rl(LOG_WARN, "player %s: cannot build a PROXY header", d->player_str);
			dc_close(d);
			return;
		}
	}
	while (d->pp_off < d->pp_len) {
		ssize_t n = send(io->fd, d->pp + d->pp_off, d->pp_len - d->pp_off, MSG_NOSIGNAL);
		if (n > 0) {
			d->pp_off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return; /* EPOLLOUT again */
		local_unreachable(a, strerror(n < 0 ? errno : EPIPE));
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
	dlist_del(&d->node);
	a->npool--;
	d->state = DC_LOCAL;
	dlist_add_head(&a->players, &d->node);
	pr_debug("player %s assigned, connecting to %s", d->player_str, a->cfg->local);

	int fd, rc = net_connect(&a->local_addr, &fd);
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
	loop_timer_arm(&a->loop, &d->timer, AGENT_LOCAL_CONNECT_TIMEOUT_MS);
}

static void dc_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent_dc *d = container_of(io, struct agent_dc, io);
	struct agent *a = d->a;
	if (d->state == DC_CONNECTING) {
		int e = net_so_error(io->fd);
		if (e) {
			pr_rl(LOG_WARN, "data connection to relay %s: %s", a->relay_str,
			      strerror(e));
			dc_close(d);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		while (d->pre_off < sizeof(d->pre)) {
			ssize_t n = send(io->fd, d->pre + d->pre_off, sizeof(d->pre) - d->pre_off,
					 MSG_NOSIGNAL);
			if (n > 0) {
				d->pre_off += (size_t)n;
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			pr_rl(LOG_WARN, "data connection to relay %s: %s", a->relay_str,
			      strerror(n < 0 ? errno : EPIPE));
			dc_close(d);
			return;
		}
		explicit_bzero(d->pre, sizeof(d->pre));
		loop_timer_cancel(l, &d->timer);
		d->state = DC_IDLE;
		a->connecting--;
		if (loop_io_set(l, io, EPOLLIN | EPOLLRDHUP)) {
			dc_close(d);
		}
		pool_refill(a);
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
			pr_rl(LOG_WARN, "data connection from relay %s: %s", a->relay_str,
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
		pr_rl(LOG_WARN, "data connection to relay %s: timed out", d->a->relay_str);
		break;
	case DC_IDLE:
		pr_rl(LOG_WARN, "relay %s: player header incomplete after %u ms", d->a->relay_str,
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

static void ctl_set_events(struct agent *a, int rc)
{
	if (rc == -ECONNRESET && a->ctl->handshake_done) {
		char why[300];
		const char *what = a->state == AG_HELLO ? "relay closed the connection before answering HELLO"
							 : "relay closed the control channel";
		if (!a->ctl->err[0] || strstr(a->ctl->err, "peer closed"))
			snprintf(why, sizeof(why), "%s", what);
		else
			snprintf(why, sizeof(why), "%s (%s)", what, a->ctl->err);
		ctl_down(a, why);
		return;
	}
	if (rc < 0) {
		ctl_down(a, a->ctl->err[0] ? a->ctl->err : strerror(-rc));
		return;
	}
	int e = loop_io_set(&a->loop, &a->ctl_io, (uint32_t)rc);
	if (e)
		ctl_down(a, strerror(-e));
}

/* Queue a message and push it out. Returns 0, or -1 if the channel went down. */
static int ctl_send_now(struct agent *a, const struct ctl_msg *m)
{
	int rc = ctl_conn_send(a->ctl, m);
	if (rc) {
		ctl_down(a, a->ctl->err[0] ? a->ctl->err : strerror(-rc));
		return -1;
	}
	rc = ctl_conn_flush(a->ctl);
	ctl_set_events(a, rc);
	return rc < 0 ? -1 : 0;
}

/* Close the control connection and the pool; players stay. */
static void ctl_close(struct agent *a)
{
	loop_timer_cancel(&a->loop, &a->ctl_timer);
	loop_io_del(&a->loop, &a->ctl_io);
	if (a->ctl) {
		ctl_conn_free(a->ctl);
		free(a->ctl);
		a->ctl = NULL;
	}
	if (a->ctl_io.fd >= 0)
		close(a->ctl_io.fd);
	a->ctl_io.fd = -1;
	pool_close(a);
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
	loop_timer_arm(&a->loop, &a->ctl_timer, delay);
	struct agent_event ev = {.type = AGENT_EV_RECONNECTING,
				 .in_ms = delay,
				 .attempt = a->attempt,
				 .reason = reason,
				 .active = a->active,
				 .joins = a->joins};
	agent_report(&ev);
}

/* The control channel is finished (failure, ERROR, GOODBYE, MOVE, silence). */
static void ctl_down(struct agent *a, const char *reason)
{
	char why[256];
	snprintf(why, sizeof(why), "%s", reason); /* reason may live in a->ctl */
	bool was_up = a->state == AG_UP;
	ctl_close(a);
	if (!was_up) {
		a->fails++; /* counts towards measuring the regions again */
	} else {
		if (mono_ms() - a->up_since_ms >= AGENT_BACKOFF_RESET_MS)
			a->attempt = a->moves = 0;
		struct agent_event ev = {.type = AGENT_EV_TUNNEL_DOWN,
					 .reason = why,
					 .active = a->active,
					 .joins = a->joins};
		agent_report(&ev);
	}
	if (a->next == NEXT_STOP) {
		a->state = AG_WAIT;
		loop_stop(&a->loop);
		return;
	}
	/* a MOVE address is for the next attempt only; after that, the region's relay (a name
	 * that can lead to any healthy instance) */
	if (!a->moved)
		snprintf(a->target, sizeof(a->target), "%s", a->home);
	a->placed = a->moved; /* the next HELLO tells the relay it was chosen for us */
	a->moved = false;
	schedule(a, was_up ? NULL : why);
}

static void ctl_error(struct agent *a, const struct ctl_msg *m)
{
	const char *code = m->u.error.code, *msg = m->u.error.message;
	char text[400];
	if (!strcmp(code, "auth")) {
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
	snprintf(a->down_reason, sizeof(a->down_reason), "relay error %s: %s", code,
		 msg[0] ? msg : code);
}

static void ping_arm(struct agent *a)
{
	uint64_t now = mono_ms();
	uint64_t dead_at = a->last_rx_ms + (uint64_t)AGENT_DEAD_PINGS * a->ping_ms;
	uint64_t at = a->next_ping_ms < dead_at ? a->next_ping_ms : dead_at;
	loop_timer_arm(&a->loop, &a->ctl_timer, at > now ? at - now : 0);
}

static void ctl_welcome(struct agent *a, const struct ctl_msg *m)
{
	a->state = AG_UP;
	a->fails = 0;
	a->ping_ms = m->u.welcome.ping_ms ? m->u.welcome.ping_ms : AGENT_PING_DEFAULT_MS;
	if (a->ping_ms < 1000)
		a->ping_ms = 1000;
	a->up_since_ms = mono_ms();
	a->next_ping_ms = a->up_since_ms + a->ping_ms;
	ping_arm(a);
	struct agent_event ev = {.type = AGENT_EV_TUNNEL_UP,
				 .relay = a->relay_str,
				 .hostname = m->u.welcome.hostname,
				 .tunnel = m->u.welcome.tunnel,
				 .region = m->u.welcome.region,
				 .active = a->active,
				 .joins = a->joins};
	agent_report(&ev);
}

/* Called from inside ctl_conn_io: only queue messages here; anything that ends the channel
 * sets a->down_reason and returns 1, and ctl_io_cb tears down after ctl_conn_io returned. */
static int ctl_on_msg(struct ctl_conn *c, const struct ctl_msg *m)
{
	struct agent *a = c->data;
	a->last_rx_ms = mono_ms();
	switch (m->type) {
	case CTL_WELCOME:
		if (a->state != AG_HELLO)
			return 0;
		ctl_welcome(a, m);
		return 0;
	case CTL_ERROR:
		ctl_error(a, m);
		return 1;
	case CTL_ATTACH:
		if (a->state != AG_UP)
			return 0;
		for (uint32_t i = 0; i < m->u.attach.n; i++)
			pool_add(a, m->u.attach.tokens[i]);
		return 0;
	case CTL_PING: {
		struct ctl_msg pong = {.type = CTL_PONG};
		pong.u.ping.t = m->u.ping.t;
		if (ctl_conn_send(c, &pong)) {
			snprintf(a->down_reason, sizeof(a->down_reason), "%s", c->err);
			return 1;
		}
		return 0;
	}
	case CTL_PONG:
		pr_debug("relay round trip %llu ms",
			 (unsigned long long)(a->last_rx_ms - m->u.ping.t));
		return 0;
	case CTL_MOVE: {
		char host[256];
		uint16_t port;
		if (net_split_hostport(m->u.move.addr, host, sizeof(host), &port) || !port) {
			pr_warn("relay sent MOVE to a bad address '%s': ignored", m->u.move.addr);
			return 0;
		}
		snprintf(a->target, sizeof(a->target), "%s", m->u.move.addr);
		a->moved = true;
		/* right away, unless relays keep bouncing us around */
		a->next = ++a->moves <= 3 ? NEXT_NOW : NEXT_BACKOFF;
		snprintf(a->down_reason, sizeof(a->down_reason), "relay moved us to %s (%s)",
			 m->u.move.addr, m->u.move.reason[0] ? m->u.move.reason : "no reason");
		return 1;
	}
	case CTL_GOODBYE:
		snprintf(a->down_reason, sizeof(a->down_reason), "relay said goodbye (%s)",
			 m->u.goodbye.reason[0] ? m->u.goodbye.reason : "no reason");
		if (!strcmp(m->u.goodbye.code, "replaced") ||
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
	default:
		return 0; /* HELLO from a relay, or a newer type: ignore */
	}
}

static void ctl_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent *a = container_of(io, struct agent, ctl_io);
	if (a->state == AG_CONNECT) {
		int e = net_so_error(io->fd);
		if (e) {
			char why[320];
			snprintf(why, sizeof(why), "connect to relay %s: %s", a->relay_str,
				 strerror(e));
			ctl_down(a, why);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		a->ctl = calloc(1, sizeof(*a->ctl));
		if (!a->ctl || ctl_conn_init(a->ctl, a->tls, io->fd, false, a->sni)) {
			ctl_down(a, "out of memory for the control channel");
			return;
		}
		a->ctl->on_msg = ctl_on_msg;
		a->ctl->data = a;
		struct ctl_msg *hello = calloc(1, sizeof(*hello));
		if (!hello) {
			ctl_down(a, "out of memory for the control channel");
			return;
		}
		hello->type = CTL_HELLO;
		hello->u.hello.proto = CTL_VERSION;
		snprintf(hello->u.hello.token, sizeof(hello->u.hello.token), "%s", a->cfg->token);
		snprintf(hello->u.hello.agent, sizeof(hello->u.hello.agent), "dvv/%s",
			 AGENT_VERSION);
		hello->u.hello.placed = a->placed;
		int rc = ctl_conn_send(a->ctl, hello);
		explicit_bzero(hello, sizeof(*hello));
		free(hello);
		if (rc) {
			ctl_down(a, a->ctl->err[0] ? a->ctl->err : strerror(-rc));
			return;
		}
		a->state = AG_HELLO;
	}
	a->down_reason[0] = 0;
	int rc = ctl_conn_io(a->ctl);
	if (rc == -ECANCELED) {
		ctl_down(a, a->down_reason[0] ? a->down_reason : "closed");
		return;
	}
	ctl_set_events(a, rc);
}

static void ctl_start(struct agent *a)
{
	char err[320], host[256];
	uint16_t port;
	struct agent_event ev = {.type = AGENT_EV_CONNECTING, .relay = a->target};
	agent_report(&ev);

	/* The certificate must name what the user asked for. A MOVE to a bare IP address
	 * (another instance behind the same name) is checked against the configured name. */
	net_split_hostport(a->target, host, sizeof(host), &port);
	struct in6_addr tmp;
	if (strcmp(a->target, a->home) &&
	    (inet_pton(AF_INET, host, &tmp) == 1 || inet_pton(AF_INET6, host, &tmp) == 1))
		net_split_hostport(a->home, host, sizeof(host), &port);
	snprintf(a->sni, sizeof(a->sni), "%s", host);

	int rc = net_parse_addr(a->target, &a->relay_addr, true, err, sizeof(err));
	if (rc) {
		ctl_down(a, err);
		return;
	}
	net_addr_fmt((const struct sockaddr *)&a->relay_addr.ss, a->relay_str,
		     sizeof(a->relay_str));
	int fd;
	rc = net_connect(&a->relay_addr, &fd);
	if (!rc) {
		a->ctl_io.fd = fd;
		rc = loop_io_set(&a->loop, &a->ctl_io, EPOLLOUT);
	}
	if (rc) {
		snprintf(err, sizeof(err), "connect to relay %s: %s", a->relay_str, strerror(-rc));
		ctl_down(a, err);
		return;
	}
	a->state = AG_CONNECT;
	loop_timer_arm(&a->loop, &a->ctl_timer, AGENT_HANDSHAKE_TIMEOUT_MS);
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
	struct agent *a = container_of(t, struct agent, ctl_timer);
	char why[160];
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
		snprintf(why, sizeof(why), "relay %s did not answer within %u s", a->relay_str,
			 AGENT_HANDSHAKE_TIMEOUT_MS / 1000);
		ctl_down(a, why);
		return;
	case AG_UP:
		break;
	}
	uint64_t now = mono_ms();
	if (now - a->last_rx_ms >= (uint64_t)AGENT_DEAD_PINGS * a->ping_ms) {
		snprintf(why, sizeof(why), "relay silent for %llu s",
			 (unsigned long long)(now - a->last_rx_ms) / 1000);
		ctl_down(a, why);
		return;
	}
	if (now >= a->next_ping_ms) {
		struct ctl_msg ping = {.type = CTL_PING};
		ping.u.ping.t = now;
		a->next_ping_ms = now + a->ping_ms;
		if (ctl_send_now(a, &ping))
			return;
	}
	ping_arm(a);
}

/* ---- stop ---- */

static void stop_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent *a = container_of(io, struct agent, stop_io);
	char buf[128]; /* a signalfd_siginfo, or an eventfd counter */
	ssize_t n = read(io->fd, buf, sizeof(buf));
	(void)n;
	pr_debug("stopping");
	if (a->ctl && a->ctl->handshake_done) {
		struct ctl_msg bye = {.type = CTL_GOODBYE};
		snprintf(bye.u.goodbye.reason, sizeof(bye.u.goodbye.reason), "agent stopping");
		if (!ctl_conn_send(a->ctl, &bye) && ctl_conn_flush(a->ctl) >= 0) {
			ERR_clear_error();
			SSL_shutdown(a->ctl->ssl); /* best effort close_notify */
		}
	}
	a->next = NEXT_STOP;
	a->exit_code = AGENT_EXIT_OK;
	loop_stop(l);
}

/* ---- life cycle ---- */

/* The static binary carries the OPENSSLDIR of the machine it was built on: on a distribution
 * that keeps its CA bundle elsewhere the "system store" would be empty. Find the bundle. */
static const char *system_ca_bundle(void)
{
	static const char *const paths[] = {
		"/etc/ssl/certs/ca-certificates.crt",		     /* Debian, Ubuntu, Alpine, Arch */
		"/etc/pki/tls/certs/ca-bundle.crt",		     /* Fedora, RHEL */
		"/etc/ssl/ca-bundle.pem",			     /* openSUSE */
		"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", /* RHEL 7+ */
		"/etc/ssl/cert.pem",				     /* Alpine, macOS-like */
	};
	if (getenv("SSL_CERT_FILE") || getenv("SSL_CERT_DIR"))
		return NULL; /* the user chose: OpenSSL honours these */
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], R_OK) == 0)
			return paths[i];
	return NULL;
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
	dlist_init(&a->pool);
	dlist_init(&a->players);
	a->ctl_io = (struct loop_io){.fd = -1, .cb = ctl_io_cb};
	a->stop_io = (struct loop_io){.fd = -1};
	a->ctl_timer.cb = ctl_timer_cb;
	a->loop.epfd = a->loop.wakefd = -1;
	snprintf(a->home, sizeof(a->home), "%s", cfg->relay);
	snprintf(a->target, sizeof(a->target), "%s", cfg->relay);
	a->region = cfg->measure ? -1 : cfg->region;
	a->queue = calloc(AGENT_MAX_POOL, ATTACH_TOKEN_LEN);
	if (!a->queue) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	if ((rc = net_parse_addr(cfg->local, &a->local_addr, true, err, errlen))) {
		char e2[256];
		snprintf(e2, sizeof(e2), "--local: %s", err);
		snprintf(err, errlen, "%s", e2);
		goto out;
	}
	const char *ca = cfg->ca_file;
	if (!ca && !cfg->pin)
		ca = system_ca_bundle();
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
	/* everything closes here: the measurement, the control channel, the pool, then the
	 * players */
	agent_probe_free(a->probe);
	a->probe = NULL;
	bool was_up = a->state == AG_UP;
	ctl_close(a);
	if (was_up) {
		struct agent_event ev = {.type = AGENT_EV_TUNNEL_DOWN,
					 .reason = "agent stopping",
					 .active = a->active,
					 .joins = a->joins};
		agent_report(&ev);
	}
	a->state = AG_WAIT;
	while (!dlist_empty(&a->players))
		dc_close(dlist_first(&a->players, struct agent_dc, node));
	loop_io_del(&a->loop, &a->stop_io);
	a->stop_io.fd = -1;
	return a->exit_code;
}

void agent_free(struct agent *a)
{
	if (!a)
		return;
	if (a->loop.epfd >= 0) {
		agent_probe_free(a->probe);
		a->probe = NULL;
		ctl_close(a);
		while (!dlist_empty(&a->players))
			dc_close(dlist_first(&a->players, struct agent_dc, node));
		loop_free(&a->loop); /* runs the deferred frees */
	}
	if (a->tls)
		SSL_CTX_free(a->tls);
	free(a->queue);
	explicit_bzero(a, sizeof(*a));
	free(a);
}
