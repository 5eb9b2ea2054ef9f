/* Standalone/cluster Redis client on hiredis 0.14 async + our loop. The contract is in
 * rcluster.h; this file is organised as: parsers, hiredis adapter, nodes and connections,
 * commands (routing, redirects, retries), slot map refresh, timers, public API.
 *
 * Lifetimes, because hiredis 0.14 calls back from inside its own teardown:
 * - Each connection attempt gets its own rc_conn (loop_io + hiredis context), freed through
 *   loop_defer after hiredis' cleanup hook, so a stale epoll event of the same batch finds
 *   fd == -1 instead of a reused descriptor.
 * - A command sent to hiredis is owned by hiredis until its reply callback; a command answered
 *   early (deadline, rc_free) stays allocated as an orphan until that callback frees it.
 * - Every entry point (hiredis callback, timer, rc_free) holds rc (depth count); rc_free from
 *   inside a callback only marks it, the outermost entry point frees it on the way out.
 * - Only hiredis reply callbacks, timers and rc_free call user code. onConnect/onDisconnect
 *   never do (0.14 runs them without its in-callback guard, so freeing there would crash). */
#include "rcluster.h"
#include "list.h"
#include "log.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RC_TICK_MS 50			/* deadlines and retry backoffs are checked at this pace */
#define RC_CONNECT_TIMEOUT_MS 2000	/* TCP connect + PING answered */
#define RC_STALL_GRACE_MS 2000	/* oldest reply later than timeout + this: the node is hung */
#define RC_BACKOFF_MIN_MS 100		/* reconnect backoff: doubles per failure, jittered */
#define RC_BACKOFF_MAX_MS 5000
#define RC_RETRY_BASE_MS 100		/* TRYAGAIN & co: 100, 200, 400, 800, 1000 (jittered) */
#define RC_RETRY_MAX_MS 1000
#define RC_REFRESH_PERIOD_MS 30000	/* healthy cluster: re-read the map anyway */
#define RC_REFRESH_MIN_GAP_MS 100	/* MOVED storms coalesce into one refresh per gap */
#define RC_REFRESH_DEGRADED_MIN_MS 250	/* a master is down: poll for its replica's promotion */
#define RC_REFRESH_DEGRADED_MAX_MS 500	/* every command waits for the promotion: notice it soon */
#define RC_REFRESH_FAIL_MIN_MS 200	/* no node answered CLUSTER SLOTS */
#define RC_REFRESH_FAIL_MAX_MS 2000
#define RC_REFRESH_TIMEOUT_MS 2000
#define RC_MAX_NODES 1024

/* ---- types ---- */

enum rc_mode { RC_MODE_UNKNOWN, RC_MODE_STANDALONE, RC_MODE_CLUSTER };

struct rc_node;

struct rc_conn {
	struct loop_io io;	  /* fd -1 once hiredis cleaned up */
	struct loop *l;
	redisAsyncContext *ac;	  /* NULL once hiredis tore it down */
	struct rc_node *node;	  /* NULL once lost: late callbacks then touch nothing else */
	struct dlist inflight;	  /* rc_cmd sent here, oldest first (replies come in order) */
	bool ready;		  /* connected and PING answered: commands may be sent */
	bool dead;
	bool quiet;		  /* closed on purpose (unused node): not an outage */
	bool cleaned;		  /* hiredis' cleanup hook ran (hiredis >= 1.0 may call it twice) */
};

struct rc_node {
	struct dlist link;	  /* rc->nodes */
	struct rc *rc;
	struct rc_addr addr;
	char name[RC_HOST_MAX + 8]; /* "ip:port" / "[v6]:port" for logs */
	struct rc_conn *conn;	  /* connecting or ready, NULL when none */
	struct loop_timer timer;  /* connecting: handshake deadline; else: reconnect backoff */
	uint64_t retry_at;	  /* no new connection before this */
	uint32_t backoff_ms;
	uint32_t nslots;	  /* slots this node serves in our table */
	uint32_t ask_refs;	  /* waiting commands redirected here by ASK */
	bool seed;
	bool replica;		  /* listed as a replica in the last map: a refresh source */
	bool logged_down;	  /* one log line per outage, one when it is back */
};

struct rc_cmd {
	struct dlist all;	  /* rc->all until answered, earliest deadline first */
	struct dlist q;		  /* rc->waitq, or conn->inflight while sent */
	struct rc *rc;
	rc_reply_cb cb;
	void *priv;
	struct rc_node *ask;	  /* next send: ASKING + command to this node */
	struct rc_conn *conn;	  /* in flight on this connection */
	uint64_t deadline, not_before, sent_at;
	uint64_t t0_us;		  /* submitted (CLOCK_MONOTONIC, us): for the observer */
	char *buf;		  /* RESP-formatted, kept for redirects and retries */
	size_t len;
	unsigned slot;
	unsigned attempts;	  /* redirects + retries so far */
	bool keyed;
	bool answered;		  /* orphan: caller answered, hiredis still owes the reply */
};

struct rc {
	struct loop *l;
	rc_state_cb state_cb;
	void *data;
	enum rc_mode mode;
	struct rc_node *standalone;
	struct dlist nodes;
	unsigned nnodes;
	struct dlist all;	  /* unanswered commands */
	struct dlist waitq;	  /* unanswered commands not in flight */
	size_t npending;
	uint32_t timeout_ms;
	unsigned depth;		  /* entry points on the stack */
	unsigned rr;		  /* round robin: keyless commands, refresh sources */
	bool freeing;
	bool map_loaded;
	bool up, reported_up;
	bool degraded;		  /* cluster: a master down or slots uncovered */
	bool gc_due;
	struct loop_timer tick;
	struct loop_timer refresh;
	bool refresh_inflight, refresh_due, refresh_again;
	uint64_t refresh_seq, refresh_started;
	struct rc_node *refresh_node;
	uint32_t refresh_fail_ms, refresh_degraded_ms;
	struct rc_stats st;
	rc_observe_cb observe;
	void *observe_data;
	struct rc_node *slots[RC_SLOTS];
};

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);
static void on_hello(redisAsyncContext *ac, void *reply, void *priv);
static void on_slots(redisAsyncContext *ac, void *reply, void *priv);
static void node_connect(struct rc_node *n);
static void refresh_arm(struct rc *rc, uint32_t delay_ms);
static void refresh_start(struct rc *rc);
static void refresh_done(struct rc *rc, bool ok);
static void state_update(struct rc *rc);
static void tick_arm(struct rc *rc, uint32_t delay_ms);
static void rc_destroy(struct rc *rc);

static uint32_t jitter(uint32_t ms) { return ms / 2 + (uint32_t)(rand_u64() % (ms / 2 + 1)); }

static void rc_hold(struct rc *rc) { rc->depth++; }
static void rc_unhold(struct rc *rc)
{
	if (--rc->depth == 0 && rc->freeing)
		rc_destroy(rc);
}

/* ---- key slots ---- */

static uint16_t crc16_xmodem(const char *buf, size_t len)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < len; i++) {
		crc ^= (uint16_t)((uint8_t)buf[i] << 8);
		for (int k = 0; k < 8; k++)
			crc = (uint16_t)((crc << 1) ^ ((crc & 0x8000) ? 0x1021 : 0));
	}
	return crc;
}

unsigned rc_key_slot(const char *key, size_t len)
{
	if (!key || !len)
		return 0;
	/* Redis: hash only what is between the first '{' and the first '}' after it, if that is
	 * not empty; otherwise the whole key. */
	const char *open = memchr(key, '{', len);
	if (open) {
		size_t s = (size_t)(open - key) + 1;
		const char *close = s < len ? memchr(key + s, '}', len - s) : NULL;
		if (close && close > key + s)
			return crc16_xmodem(key + s, (size_t)(close - (key + s))) & (RC_SLOTS - 1);
	}
	return crc16_xmodem(key, len) & (RC_SLOTS - 1);
}

/* ---- parsers ---- */

static int parse_uint(const char *p, size_t n, unsigned max, unsigned *out)
{
	unsigned v = 0;
	if (n == 0 || n > 5)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	if (v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_port(const char *p, size_t n, uint16_t *out)
{
	unsigned v;
	if (parse_uint(p, n, 65535, &v) || v == 0)
		return -EINVAL;
	*out = (uint16_t)v;
	return 0;
}

/* Numeric IPv4/IPv6 only: anything else would go through a blocking getaddrinfo in hiredis. */
static int host_set(struct rc_addr *a, const char *h, size_t n)
{
	unsigned char bin[16];
	if (!h || n == 0 || n >= RC_HOST_MAX || memchr(h, '\0', n))
		return -EINVAL;
	memcpy(a->host, h, n);
	a->host[n] = '\0';
	if (inet_pton(AF_INET, a->host, bin) != 1 && inet_pton(AF_INET6, a->host, bin) != 1)
		return -EINVAL;
	return 0;
}

int rc_parse_addr(const char *s, size_t len, struct rc_addr *out)
{
	struct rc_addr a;
	const char *host, *port;
	size_t hlen;
	if (!s || len == 0 || !out)
		return -EINVAL;
	if (s[0] == '[') {
		const char *rb = memchr(s, ']', len);
		if (!rb || (size_t)(rb - s) + 2 > len || rb[1] != ':')
			return -EINVAL;
		host = s + 1;
		hlen = (size_t)(rb - host);
		port = rb + 2;
	} else {
		const char *colon = memrchr(s, ':', len);
		if (!colon)
			return -EINVAL;
		host = s;
		hlen = (size_t)(colon - s);
		port = colon + 1;
	}
	if (host_set(&a, host, hlen) || parse_port(port, (size_t)(s + len - port), &a.port))
		return -EINVAL;
	*out = a;
	return 0;
}

int rc_parse_redirect(const char *msg, size_t len, const char *from_host, struct rc_redirect *out)
{
	struct rc_redirect rd;
	size_t kw;
	if (!msg || !out)
		return -EINVAL;
	if (len > 6 && !memcmp(msg, "MOVED ", 6)) {
		rd.kind = RC_REDIR_MOVED;
		kw = 6;
	} else if (len > 4 && !memcmp(msg, "ASK ", 4)) {
		rd.kind = RC_REDIR_ASK;
		kw = 4;
	} else {
		return -EINVAL;
	}
	const char *p = msg + kw, *end = msg + len;
	const char *sp = memchr(p, ' ', (size_t)(end - p));
	if (!sp || parse_uint(p, (size_t)(sp - p), RC_SLOTS - 1, &rd.slot))
		return -EINVAL;
	const char *ep = sp + 1;
	size_t elen = (size_t)(end - ep);
	if (elen == 0 || memchr(ep, ' ', elen))
		return -EINVAL;
	if (ep[0] == ':' && !memchr(ep + 1, ':', elen - 1)) {
		/* ":port": Redis 7's "same endpoint as the node that answered" */
		if (!from_host || host_set(&rd.addr, from_host, strlen(from_host)) ||
		    parse_port(ep + 1, elen - 1, &rd.addr.port))
			return -EINVAL;
	} else if (rc_parse_addr(ep, elen, &rd.addr)) {
		return -EINVAL;
	}
	*out = rd;
	return 0;
}

static bool reply_is_str(const redisReply *r, const char *s)
{
	size_t n = strlen(s);
	return r && r->type == REDIS_REPLY_STRING && r->str && r->len == n && !memcmp(r->str, s, n);
}

/* One node of a CLUSTER SLOTS range: [endpoint, port, id?, metadata?]. */
static int slots_node(const redisReply *e, const char *from_host, struct rc_addr *a)
{
	if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 2 || !e->element)
		return -EINVAL;
	const redisReply *h = e->element[0], *p = e->element[1];
	if (!h || !p || p->type != REDIS_REPLY_INTEGER || p->integer < 1 || p->integer > 65535)
		return -EINVAL;
	a->port = (uint16_t)p->integer;
	if (h->type == REDIS_REPLY_NIL || (h->type == REDIS_REPLY_STRING && h->len == 0))
		return from_host ? host_set(a, from_host, strlen(from_host)) : -EINVAL;
	if (h->type != REDIS_REPLY_STRING || !h->str)
		return -EINVAL;
	if (host_set(a, h->str, h->len) == 0)
		return 0;
	/* a hostname (cluster-preferred-endpoint-type hostname): Redis 7 adds the IP as metadata */
	if (e->elements >= 4 && e->element[3] && e->element[3]->type == REDIS_REPLY_ARRAY &&
	    e->element[3]->element) {
		const redisReply *m = e->element[3];
		for (size_t k = 0; k + 1 < m->elements; k += 2) {
			const redisReply *v = m->element[k + 1];
			if (reply_is_str(m->element[k], "ip") && v && v->type == REDIS_REPLY_STRING)
				return host_set(a, v->str, v->len);
		}
	}
	return -EINVAL;
}

static int slots_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int slots_fail(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int rc_parse_slots(const redisReply *rep, const char *from_host, struct rc_slots *out, char *err,
		   size_t errlen)
{
	out->r = NULL;
	out->n = 0;
	if (!rep || rep->type != REDIS_REPLY_ARRAY)
		return slots_fail(err, errlen, "not an array");
	if (rep->elements == 0)
		return 0; /* a cluster node with no slots assigned yet */
	if (rep->elements > RC_SLOTS || !rep->element)
		return slots_fail(err, errlen, "%zu ranges", rep->elements);
	struct rc_range *r = calloc(rep->elements, sizeof(*r));
	if (!r)
		return slots_fail(err, errlen, "out of memory");
	for (size_t i = 0; i < rep->elements; i++) {
		const redisReply *e = rep->element[i];
		if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 3 || !e->element) {
			free(r);
			return slots_fail(err, errlen, "range %zu: want [start, end, master...]",
					  i);
		}
		const redisReply *s = e->element[0], *t = e->element[1];
		if (!s || !t || s->type != REDIS_REPLY_INTEGER || t->type != REDIS_REPLY_INTEGER ||
		    s->integer < 0 || t->integer >= RC_SLOTS || s->integer > t->integer) {
			free(r);
			return slots_fail(err, errlen, "range %zu: bad slot bounds", i);
		}
		r[i].start = (uint16_t)s->integer;
		r[i].end = (uint16_t)t->integer;
		if (slots_node(e->element[2], from_host, &r[i].master)) {
			free(r);
			return slots_fail(err, errlen, "range %zu: unusable master endpoint", i);
		}
		for (size_t j = 3; j < e->elements && r[i].nreplicas < RC_MAX_REPLICAS; j++)
			if (!slots_node(e->element[j], from_host, &r[i].replicas[r[i].nreplicas]))
				r[i].nreplicas++;
	}
	out->r = r;
	out->n = rep->elements;
	return 0;
}

void rc_slots_free(struct rc_slots *s)
{
	free(s->r);
	s->r = NULL;
	s->n = 0;
}

/* Error replies that mean "not executed, ask again": kinds. */
enum rc_refusal { RF_NONE, RF_MOVED, RF_ASK, RF_RETRY, RF_RETRY_REFRESH };

static bool err_is(const redisReply *r, const char *code)
{
	size_t n = strlen(code);
	return r->len >= n && !memcmp(r->str, code, n) && (r->len == n || r->str[n] == ' ');
}

static enum rc_refusal refusal_kind(const struct rc *rc, const redisReply *r)
{
	if (r->type != REDIS_REPLY_ERROR || !r->str)
		return RF_NONE;
	bool cluster = rc->mode == RC_MODE_CLUSTER;
	if (cluster && err_is(r, "MOVED"))
		return RF_MOVED;
	if (cluster && err_is(r, "ASK"))
		return RF_ASK;
	if (err_is(r, "TRYAGAIN") || err_is(r, "LOADING"))
		return RF_RETRY;
	if (err_is(r, "CLUSTERDOWN") || err_is(r, "MASTERDOWN") ||
	    (cluster && err_is(r, "READONLY")))
		return RF_RETRY_REFRESH;
	return RF_NONE;
}

/* ---- hiredis adapter ---- */

static void ad_update(struct rc_conn *conn, uint32_t add, uint32_t del)
{
	if (conn->io.fd < 0)
		return;
	uint32_t ev = ((conn->io.events & ~(uint32_t)EPOLLRDHUP) & ~del) | add;
	if (ev)
		ev |= EPOLLRDHUP;
	int e = loop_io_set(conn->l, &conn->io, ev);
	if (e) /* the handshake deadline or stall check will drop this connection */
		pr_rl(LOG_WARN, "redis: epoll_ctl: %s", strerror(-e));
}
static void ad_add_read(void *p) { ad_update(p, EPOLLIN, 0); }
static void ad_del_read(void *p) { ad_update(p, 0, EPOLLIN); }
static void ad_add_write(void *p) { ad_update(p, EPOLLOUT, 0); }
static void ad_del_write(void *p) { ad_update(p, 0, EPOLLOUT); }
static void ad_cleanup(void *p)
{
	struct rc_conn *conn = p;
	if (conn->cleaned)
		return;
	conn->cleaned = true;
	loop_io_del(conn->l, &conn->io);
	conn->io.fd = -1;
	conn->ac = NULL;
	/* hiredis still calls onDisconnect with this conn after the hook: free after the batch */
	loop_defer(conn->l, free, conn);
}

static void conn_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct rc_conn *conn = container_of(io, struct rc_conn, io);
	redisAsyncContext *ac = conn->ac;
	if (!ac)
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
		redisAsyncHandleRead(ac);
	if (conn->ac == ac && (events & EPOLLOUT))
		redisAsyncHandleWrite(ac);
}

/* ---- nodes and connections ---- */

static bool node_ready(const struct rc_node *n) { return n && n->conn && n->conn->ready; }

static bool node_needed(const struct rc_node *n)
{
	return n->nslots || n->ask_refs || n == n->rc->standalone;
}

static struct rc_node *node_find(struct rc *rc, const struct rc_addr *a)
{
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		if (n->addr.port == a->port && !strcmp(n->addr.host, a->host))
			return n;
	}
	return NULL;
}

static void node_timer_cb(struct loop *l, struct loop_timer *t);

static struct rc_node *node_get(struct rc *rc, const struct rc_addr *a)
{
	struct rc_node *n = node_find(rc, a);
	if (n)
		return n;
	if (rc->nnodes >= RC_MAX_NODES) {
		pr_rl(LOG_WARN, "redis: more than %d nodes, ignoring %s", RC_MAX_NODES, a->host);
		return NULL;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->rc = rc;
	n->addr = *a;
	snprintf(n->name, sizeof(n->name), strchr(a->host, ':') ? "[%s]:%u" : "%s:%u", a->host,
		 a->port);
	n->timer.cb = node_timer_cb;
	dlist_add_tail(&rc->nodes, &n->link);
	rc->nnodes++;
	return n;
}

static void node_free(struct rc_node *n)
{
	struct rc *rc = n->rc;
	loop_timer_cancel(rc->l, &n->timer);
	dlist_del(&n->link);
	rc->nnodes--;
	free(n);
}

static void node_backoff(struct rc_node *n)
{
	struct rc *rc = n->rc;
	n->backoff_ms = n->backoff_ms ? n->backoff_ms * 2 : RC_BACKOFF_MIN_MS;
	if (n->backoff_ms > RC_BACKOFF_MAX_MS)
		n->backoff_ms = RC_BACKOFF_MAX_MS;
	uint32_t d = jitter(n->backoff_ms);
	n->retry_at = mono_ms() + d;
	if (node_needed(n))
		loop_timer_arm(rc->l, &n->timer, d);
	else
		loop_timer_cancel(rc->l, &n->timer);
}

/* Somebody needs this node: connect now, or when its backoff ends. */
static void node_want(struct rc_node *n)
{
	struct rc *rc = n->rc;
	if (n->conn || rc->freeing)
		return;
	uint64_t now = mono_ms();
	if (now >= n->retry_at)
		node_connect(n);
	else if (!loop_timer_armed(&n->timer))
		loop_timer_arm(rc->l, &n->timer, n->retry_at - now);
}

/* hiredis is tearing the connection down (or is about to, through conn_drop). In-flight
 * commands get NULL from hiredis' callbacks: at-most-once, they are not re-sent. */
static void conn_lost(struct rc_conn *conn, const char *why)
{
	struct rc_node *n = conn->node;
	if (conn->dead)
		return;
	conn->dead = true;
	conn->node = NULL;
	if (!n)
		return;
	struct rc *rc = n->rc;
	bool was_ready = conn->ready;
	conn->ready = false;
	n->conn = NULL;
	loop_timer_cancel(rc->l, &n->timer);
	if (rc->freeing)
		return;
	if (was_ready && !conn->quiet)
		rc->st.conn_lost++;
	if (!n->logged_down && !conn->quiet &&
	    (was_ready || node_needed(n) || rc->mode == RC_MODE_UNKNOWN)) {
		n->logged_down = true;
		pr_warn("redis: %s %s%s%s", was_ready ? "lost connection to" : "cannot connect to",
			n->name, why && *why ? ": " : "", why && *why ? why : "");
	}
	if (rc->refresh_inflight && rc->refresh_node == n)
		refresh_done(rc, false);
	node_backoff(n);
	if (rc->mode == RC_MODE_CLUSTER && n->nslots)
		refresh_arm(rc, 0); /* a master is gone: look for its promoted replica */
	state_update(rc);
}

/* We decide the connection is useless: tear it down. Safe from inside one of its callbacks
 * (hiredis defers the free), never called from onConnect/onDisconnect. */
static void conn_drop(struct rc_conn *conn, const char *why)
{
	redisAsyncContext *ac = conn->ac;
	conn_lost(conn, why);
	if (ac)
		redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
	redisAsyncContext *ac = (redisAsyncContext *)cac;
	struct rc_conn *conn = ac->ev.data;
	struct rc_node *n = conn->node;
	if (!n)
		return;
	if (status != REDIS_OK) {
		conn_lost(conn, ac->errstr); /* hiredis frees the context after we return */
		return;
	}
	/* Commands wait for the PING so that a connection that dies at once (maxclients, a dying
	 * node) never takes commands with it; backoff resets only on a real answer. */
	if (redisAsyncCommand(ac, on_hello, NULL, "PING") != REDIS_OK)
		loop_timer_arm(n->rc->l, &n->timer, 0); /* handshake deadline, now */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rc_conn *conn = ac->ev.data;
	if (conn->node)
		conn_lost(conn, status == REDIS_OK ? "closed" : ac->errstr);
}

static void node_connect(struct rc_node *n)
{
	struct rc *rc = n->rc;
	struct rc_conn *conn = NULL;
	loop_timer_cancel(rc->l, &n->timer);
	/* n->addr.host is numeric, so hiredis' getaddrinfo() does not block */
	redisAsyncContext *ac = redisAsyncConnect(n->addr.host, n->addr.port);
	if (!ac || ac->err) {
		if (!n->logged_down && node_needed(n)) {
			n->logged_down = true;
			pr_warn("redis: cannot connect to %s: %s", n->name,
				ac ? ac->errstr : "out of memory");
		}
		goto fail;
	}
	conn = calloc(1, sizeof(*conn));
	if (!conn)
		goto fail;
	conn->l = rc->l;
	conn->ac = ac;
	conn->node = n;
	dlist_init(&conn->inflight);
	conn->io = (struct loop_io){.fd = ac->c.fd, .cb = conn_io_cb};
	ac->ev.data = conn;
	ac->ev.addRead = ad_add_read;
	ac->ev.delRead = ad_del_read;
	ac->ev.addWrite = ad_add_write;
	ac->ev.delWrite = ad_del_write;
	ac->ev.cleanup = ad_cleanup;
	n->conn = conn;
	redisAsyncSetConnectCallback(ac, on_connect); /* asks for write interest */
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	loop_timer_arm(rc->l, &n->timer, RC_CONNECT_TIMEOUT_MS);
	return;
fail:
	if (ac)
		redisAsyncFree(ac);
	node_backoff(n);
}

static void waitq_flush(struct rc *rc);

static void on_hello(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rc_conn *conn = ac->ev.data;
	struct rc_node *n = conn->node;
	redisReply *r = reply;
	if (!n)
		return;
	struct rc *rc = n->rc;
	if (!r) {
		conn_lost(conn, NULL);
		return;
	}
	rc_hold(rc);
	if (r->type == REDIS_REPLY_ERROR) {
		char why[160];
		snprintf(why, sizeof(why), "PING answered %s", r->str ? r->str : "an error");
		conn_drop(conn, why);
		goto out;
	}
	conn->ready = true;
	loop_timer_cancel(rc->l, &n->timer);
	n->backoff_ms = 0;
	n->retry_at = 0;
	if (n->logged_down) {
		n->logged_down = false;
		pr_info("redis: connected to %s again", n->name);
	}
	waitq_flush(rc);
	if (rc->refresh_due && !rc->refresh_inflight)
		refresh_start(rc);
	state_update(rc);
out:
	rc_unhold(rc);
}

static void node_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct rc_node *n = container_of(t, struct rc_node, timer);
	struct rc *rc = n->rc;
	rc_hold(rc);
	if (n->conn) {
		if (!n->conn->ready)
			conn_drop(n->conn, "no answer to connect + PING in time");
	} else if (node_needed(n)) {
		node_connect(n);
	}
	rc_unhold(rc);
}

/* Nodes nothing refers to any more (left the map, not a seed) are closed and forgotten. */
static void nodes_gc(struct rc *rc)
{
	dlist_for_each_safe(it, next, &rc->nodes) {
		if (rc->freeing)
			break;
		struct rc_node *n = container_of(it, struct rc_node, link);
		bool keep = n->seed || n->nslots || n->replica || n->ask_refs ||
			    n == rc->standalone || n == rc->refresh_node;
		bool keep_conn = keep && (rc->mode != RC_MODE_STANDALONE || n == rc->standalone);
		if (keep_conn || !n->conn) {
			if (!keep && !n->conn)
				node_free(n);
			continue;
		}
		if (!dlist_empty(&n->conn->inflight))
			continue;
		n->conn->quiet = true;
		conn_drop(n->conn, NULL);
		if (!keep)
			node_free(n);
	}
}

/* ---- commands ---- */

static void cmd_free(struct rc_cmd *c)
{
	redisFreeCommand(c->buf);
	free(c);
}

static void cmd_set_ask(struct rc_cmd *c, struct rc_node *n)
{
	if (c->ask)
		c->ask->ask_refs--;
	c->ask = n;
	if (n)
		n->ask_refs++;
}

/* Hand r (NULL: failed) to the caller. The caller of this frees c unless it is in flight. */
static void cmd_answer(struct rc *rc, struct rc_cmd *c, redisReply *r)
{
	c->answered = true;
	cmd_set_ask(c, NULL);
	dlist_del(&c->all);
	rc->npending--;
	if (!r)
		rc->st.failed++;
	if (rc->observe) {
		uint64_t now = mono_us();
		rc->observe(rc->observe_data, now > c->t0_us ? now - c->t0_us : 0, r);
	}
	if (c->cb)
		c->cb(rc, r, c->priv);
}

static struct rc_node *any_master(struct rc *rc)
{
	struct rc_node *fallback = NULL;
	unsigned ready = 0;
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		if (n->nslots && node_ready(n))
			ready++;
		else if (n->nslots && !fallback)
			fallback = n;
	}
	if (!ready)
		return fallback;
	unsigned want = rc->rr++ % ready;
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		if (n->nslots && node_ready(n) && want-- == 0)
			return n;
	}
	return fallback;
}

static struct rc_node *cmd_route(struct rc *rc, struct rc_cmd *c)
{
	if (c->ask)
		return c->ask;
	if (rc->mode == RC_MODE_STANDALONE)
		return rc->standalone;
	if (rc->mode != RC_MODE_CLUSTER)
		return NULL;
	return c->keyed ? rc->slots[c->slot] : any_master(rc);
}

/* Send c if its node is ready and its backoff is over, else park it in the wait queue. Never
 * calls user code. */
static void cmd_send(struct rc *rc, struct rc_cmd *c)
{
	struct rc_node *n = cmd_route(rc, c);
	uint64_t now = mono_ms();
	if (node_ready(n) && c->not_before <= now) {
		redisAsyncContext *ac = n->conn->ac;
		/* ASKING only fails on a dying context, whose ASKING state dies with it */
		if ((!c->ask || redisAsyncCommand(ac, NULL, NULL, "ASKING") == REDIS_OK) &&
		    redisAsyncFormattedCommand(ac, on_reply, c, c->buf, c->len) == REDIS_OK) {
			c->conn = n->conn;
			c->sent_at = now;
			dlist_add_tail(&n->conn->inflight, &c->q);
			cmd_set_ask(c, NULL); /* ASK holds for one send */
			return;
		}
	}
	if (n && !n->conn)
		node_want(n);
	dlist_add_tail(&rc->waitq, &c->q);
}

static void waitq_flush(struct rc *rc)
{
	struct dlist tmp;
	if (rc->mode == RC_MODE_UNKNOWN || rc->freeing || dlist_empty(&rc->waitq))
		return;
	dlist_init(&tmp);
	dlist_splice_tail(&rc->waitq, &tmp);
	while (!dlist_empty(&tmp)) {
		struct rc_cmd *c = container_of(tmp.next, struct rc_cmd, q);
		dlist_del(&c->q);
		cmd_send(rc, c);
	}
}

static bool slot_set(struct rc *rc, unsigned slot, struct rc_node *n)
{
	struct rc_node *old = rc->slots[slot];
	if (old == n)
		return false;
	if (old)
		old->nslots--;
	rc->slots[slot] = n;
	n->nslots++;
	return true;
}

/* Redis refused c without running it (MOVED, ASK, TRYAGAIN...): send it again, bounded. True
 * if c was taken care of (re-queued, or answered NULL and freed). */
static bool cmd_refused(struct rc *rc, struct rc_conn *conn, struct rc_cmd *c, const redisReply *r)
{
	enum rc_refusal k = refusal_kind(rc, r);
	if (k == RF_NONE)
		return false;
	if (++c->attempts > RC_MAX_RETRIES) {
		pr_rl(LOG_WARN, "redis: giving up on a command after %d redirects/retries: %.*s",
		      RC_MAX_RETRIES, (int)(r->len > 120 ? 120 : r->len), r->str);
		goto fail;
	}
	if (k == RF_MOVED || k == RF_ASK) {
		struct rc_redirect rd;
		const char *from = conn->node ? conn->node->addr.host : NULL;
		if (rc_parse_redirect(r->str, r->len, from, &rd)) {
			pr_rl(LOG_WARN, "redis: unusable redirect: %.*s",
			      (int)(r->len > 120 ? 120 : r->len), r->str);
			goto fail;
		}
		struct rc_node *n = node_get(rc, &rd.addr);
		if (!n)
			goto fail;
		if (k == RF_MOVED) {
			rc->st.moved++;
			c->slot = rd.slot; /* the server knows the slot better than route_key */
			c->keyed = true;
			cmd_set_ask(c, NULL);
			refresh_arm(rc, 0);
			if (slot_set(rc, rd.slot, n)) {
				node_want(n);
				state_update(rc);
				waitq_flush(rc); /* older commands for that slot go first */
			}
		} else {
			rc->st.ask++;
			cmd_set_ask(c, n);
		}
		node_want(n);
		cmd_send(rc, c);
		return true;
	}
	rc->st.retries++;
	uint32_t b = RC_RETRY_BASE_MS << (c->attempts - 1);
	if (b > RC_RETRY_MAX_MS)
		b = RC_RETRY_MAX_MS;
	b = jitter(b);
	c->not_before = mono_ms() + b;
	if (k == RF_RETRY_REFRESH && rc->mode == RC_MODE_CLUSTER)
		refresh_arm(rc, 0);
	dlist_add_tail(&rc->waitq, &c->q);
	tick_arm(rc, b);
	return true;
fail:
	cmd_answer(rc, c, NULL);
	cmd_free(c);
	return true;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rc_conn *conn = ac->ev.data;
	struct rc_cmd *c = priv;
	redisReply *r = reply;
	dlist_del(&c->q);
	c->conn = NULL;
	if (!r)
		conn_lost(conn, NULL); /* the first NULL of a dying connection */
	if (c->answered) {
		cmd_free(c);
		return;
	}
	struct rc *rc = c->rc;
	rc_hold(rc);
	if (!r || !cmd_refused(rc, conn, c, r)) {
		cmd_answer(rc, c, r);
		cmd_free(c);
	}
	rc_unhold(rc);
}

/* Subscribe/monitor would switch hiredis into push mode and break one-reply-per-command. */
static bool cmd_forbidden(const char *buf, size_t len)
{
	static const char *const bad[] = {"subscribe", "psubscribe", "ssubscribe", "unsubscribe",
					  "punsubscribe", "sunsubscribe", "monitor"};
	const char *p = memchr(buf, '$', len);
	if (!p)
		return true;
	const char *nl = memchr(p, '\n', len - (size_t)(p - buf));
	if (!nl)
		return true;
	size_t n = (size_t)strtoul(p + 1, NULL, 10);
	const char *name = nl + 1;
	if ((size_t)(buf + len - name) < n)
		return true;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (strlen(bad[i]) == n && !strncasecmp(name, bad[i], n))
			return true;
	return false;
}

static void all_insert(struct rc *rc, struct rc_cmd *c)
{
	struct dlist *pos = rc->all.prev;
	while (pos != &rc->all && container_of(pos, struct rc_cmd, all)->deadline > c->deadline)
		pos = pos->prev;
	dlist_add_head(pos, &c->all);
}

static int cmd_submit(struct rc *rc, const char *key, size_t keylen, rc_reply_cb cb, void *priv,
		      char *buf, size_t len)
{
	if (cmd_forbidden(buf, len)) {
		redisFreeCommand(buf);
		return -EINVAL;
	}
	struct rc_cmd *c = calloc(1, sizeof(*c));
	if (!c) {
		redisFreeCommand(buf);
		return -ENOMEM;
	}
	c->rc = rc;
	c->cb = cb;
	c->priv = priv;
	c->buf = buf;
	c->len = len;
	c->keyed = key != NULL;
	c->slot = key ? rc_key_slot(key, keylen) : 0;
	c->deadline = mono_ms() + rc->timeout_ms;
	c->t0_us = mono_us();
	dlist_init(&c->q);
	all_insert(rc, c);
	rc->npending++;
	rc->st.commands++;
	cmd_send(rc, c);
	tick_arm(rc, RC_TICK_MS);
	return 0;
}

/* ---- state ---- */

static void state_update(struct rc *rc)
{
	bool up = false, degraded = false;
	if (rc->mode == RC_MODE_STANDALONE) {
		up = node_ready(rc->standalone);
	} else if (rc->mode == RC_MODE_CLUSTER && rc->map_loaded) {
		unsigned masters = 0, covered = 0;
		bool all_ready = true;
		dlist_for_each(it, &rc->nodes) {
			struct rc_node *n = container_of(it, struct rc_node, link);
			if (!n->nslots)
				continue;
			masters++;
			covered += n->nslots;
			all_ready = all_ready && node_ready(n);
		}
		up = masters && all_ready;
		degraded = !all_ready || covered < RC_SLOTS;
		if (rc->up && !up && masters) {
			/* Hysteresis: once up, a master we are connecting to for the first time
			 * (MOVED to a new node, a new map) is not "down" unless that fails. */
			up = true;
			dlist_for_each(it, &rc->nodes) {
				struct rc_node *n = container_of(it, struct rc_node, link);
				if (n->nslots && !node_ready(n) &&
				    !(n->conn && !n->backoff_ms && !n->logged_down))
					up = false;
			}
		}
	}
	if (degraded && !rc->degraded)
		refresh_arm(rc, RC_REFRESH_DEGRADED_MIN_MS);
	rc->degraded = degraded;
	if (up != rc->up) {
		rc->up = up;
		tick_arm(rc, 0); /* reported from the tick, outside any hiredis callback */
	}
}

static void log_state(struct rc *rc)
{
	if (rc->up && rc->mode == RC_MODE_STANDALONE) {
		pr_info("redis: up (standalone %s)", rc->standalone->name);
		return;
	}
	unsigned masters = 0, covered = 0;
	const struct rc_node *down = NULL;
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		if (!n->nslots)
			continue;
		masters++;
		covered += n->nslots;
		if (!down && !node_ready(n))
			down = n;
	}
	if (rc->up)
		pr_info("redis: up (cluster: %u masters, %u/%d slots)", masters, covered, RC_SLOTS);
	else if (rc->mode == RC_MODE_STANDALONE)
		pr_warn("redis: down (standalone %s unreachable)", rc->standalone->name);
	else if (down)
		pr_warn("redis: down (cluster: master %s unreachable)", down->name);
	else
		pr_warn("redis: down (no slot map)");
}

/* ---- slot map ---- */

static void refresh_arm(struct rc *rc, uint32_t delay_ms)
{
	if (rc->freeing || rc->mode == RC_MODE_STANDALONE)
		return;
	if (rc->refresh_inflight) {
		if (delay_ms == 0)
			rc->refresh_again = true; /* the map in flight may predate this */
		return;
	}
	uint64_t now = mono_ms(), when = now + delay_ms;
	if (when < rc->refresh_started + RC_REFRESH_MIN_GAP_MS)
		when = rc->refresh_started + RC_REFRESH_MIN_GAP_MS;
	if (loop_timer_armed(&rc->refresh) && rc->refresh.when <= when)
		return;
	loop_timer_arm(rc->l, &rc->refresh, when - now);
}

static void refresh_fail_backoff(struct rc *rc)
{
	rc->refresh_fail_ms = rc->refresh_fail_ms ? rc->refresh_fail_ms * 2
						  : RC_REFRESH_FAIL_MIN_MS;
	if (rc->refresh_fail_ms > RC_REFRESH_FAIL_MAX_MS)
		rc->refresh_fail_ms = RC_REFRESH_FAIL_MAX_MS;
	loop_timer_arm(rc->l, &rc->refresh, jitter(rc->refresh_fail_ms));
}

static void refresh_done(struct rc *rc, bool ok)
{
	rc->refresh_inflight = false;
	rc->refresh_node = NULL;
	rc->refresh_seq++;
	if (rc->mode == RC_MODE_STANDALONE)
		return;
	if (!ok) {
		rc->refresh_due = true;
		refresh_fail_backoff(rc);
		return;
	}
	rc->refresh_fail_ms = 0;
	if (rc->refresh_again) {
		rc->refresh_again = false;
		refresh_arm(rc, 0);
	} else if (rc->degraded) {
		/* waiting for a promotion: poll, a little slower each time */
		uint32_t d = rc->refresh_degraded_ms ? rc->refresh_degraded_ms * 2
						     : RC_REFRESH_DEGRADED_MIN_MS;
		if (d > RC_REFRESH_DEGRADED_MAX_MS)
			d = RC_REFRESH_DEGRADED_MAX_MS;
		rc->refresh_degraded_ms = d;
		refresh_arm(rc, rc->refresh_degraded_ms);
	} else {
		rc->refresh_degraded_ms = 0;
		refresh_arm(rc, RC_REFRESH_PERIOD_MS);
	}
}

/* Ready nodes in turn, so that one node with a stale view cannot keep answering. */
static struct rc_node *refresh_source(struct rc *rc)
{
	unsigned ready = 0;
	dlist_for_each(it, &rc->nodes)
		ready += node_ready(container_of(it, struct rc_node, link));
	if (!ready)
		return NULL;
	unsigned want = rc->rr++ % ready;
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		if (node_ready(n) && want-- == 0)
			return n;
	}
	return NULL;
}

/* No node ready: open one more candidate (the next one out of backoff, in turn). */
static void refresh_connect_candidate(struct rc *rc)
{
	uint64_t now = mono_ms();
	unsigned idle = 0;
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		idle += !n->conn && now >= n->retry_at;
	}
	if (!idle)
		return;
	unsigned want = rc->rr++ % idle;
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		if (!n->conn && now >= n->retry_at && want-- == 0) {
			node_connect(n);
			return;
		}
	}
}

static void refresh_start(struct rc *rc)
{
	if (rc->refresh_inflight || rc->mode == RC_MODE_STANDALONE || rc->freeing)
		return;
	struct rc_node *n = refresh_source(rc);
	if (n) {
		uint64_t seq = ++rc->refresh_seq;
		if (redisAsyncCommand(n->conn->ac, on_slots, (void *)(uintptr_t)seq,
				      "CLUSTER SLOTS") == REDIS_OK) {
			rc->refresh_inflight = true;
			rc->refresh_due = false;
			rc->refresh_again = false;
			rc->refresh_node = n;
			rc->refresh_started = mono_ms();
			loop_timer_cancel(rc->l, &rc->refresh);
			tick_arm(rc, RC_TICK_MS); /* watches the refresh deadline */
			return;
		}
	}
	rc->refresh_due = true; /* sent as soon as a node is ready (on_hello) */
	refresh_connect_candidate(rc);
	refresh_fail_backoff(rc);
}

static void refresh_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct rc *rc = container_of(t, struct rc, refresh);
	rc_hold(rc);
	refresh_start(rc);
	rc_unhold(rc);
}

static void go_standalone(struct rc *rc, struct rc_node *n)
{
	rc->mode = RC_MODE_STANDALONE;
	rc->standalone = n;
	rc->refresh_due = false;
	loop_timer_cancel(rc->l, &rc->refresh);
	pr_info("redis: %s is a standalone server", n->name);
	rc->gc_due = true;
	tick_arm(rc, 0);
	waitq_flush(rc);
	state_update(rc);
}

/* Install a parsed CLUSTER SLOTS reply. False (old map kept) if a node cannot be tracked. */
static bool map_apply(struct rc *rc, const struct rc_slots *s)
{
	struct rc_node **masters = calloc(s->n ? s->n : 1, sizeof(*masters));
	struct rc_node **table = calloc(RC_SLOTS, sizeof(*table));
	bool ok = masters && table;
	for (size_t i = 0; ok && i < s->n; i++)
		ok = (masters[i] = node_get(rc, &s->r[i].master)) != NULL;
	if (!ok) {
		free(masters);
		free(table);
		return false;
	}
	for (size_t i = 0; i < s->n; i++)
		for (unsigned k = s->r[i].start; k <= s->r[i].end; k++)
			if (!table[k]) /* overlapping ranges: the first one wins */
				table[k] = masters[i];
	unsigned moved = 0;
	for (unsigned k = 0; k < RC_SLOTS; k++)
		moved += table[k] != rc->slots[k];
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		n->nslots = 0;
		n->replica = false;
	}
	unsigned covered = 0;
	for (unsigned k = 0; k < RC_SLOTS; k++) {
		rc->slots[k] = table[k];
		if (table[k]) {
			table[k]->nslots++;
			covered++;
		}
	}
	for (size_t i = 0; i < s->n; i++)
		for (unsigned j = 0; j < s->r[i].nreplicas; j++) {
			struct rc_node *rn = node_get(rc, &s->r[i].replicas[j]);
			if (rn && !rn->nslots)
				rn->replica = true;
		}
	unsigned nmasters = 0;
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		if (n->nslots) {
			nmasters++;
			node_want(n);
		}
	}
	if (moved || !rc->map_loaded)
		pr_info("redis: slot map: %u masters, %u/%d slots covered, %u slots changed owner",
			nmasters, covered, RC_SLOTS, moved);
	rc->map_loaded = true;
	rc->st.refreshes++;
	rc->gc_due = true;
	tick_arm(rc, 0);
	free(masters);
	free(table);
	return true;
}

static bool is_standalone_answer(const redisReply *r)
{
	return r->str && (strstr(r->str, "cluster support disabled") ||
			  !strncasecmp(r->str, "ERR unknown command", 19));
}

static void on_slots(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rc_conn *conn = ac->ev.data;
	struct rc_node *n = conn->node;
	redisReply *r = reply;
	if (!n)
		return;
	struct rc *rc = n->rc;
	if (!r) {
		conn_lost(conn, NULL); /* fails the refresh if it was this one */
		return;
	}
	if (!rc->refresh_inflight || (uintptr_t)priv != rc->refresh_seq)
		return; /* timed out and superseded */
	rc_hold(rc);
	if (r->type == REDIS_REPLY_ERROR) {
		if (rc->mode == RC_MODE_UNKNOWN && is_standalone_answer(r)) {
			refresh_done(rc, true);
			go_standalone(rc, n);
		} else {
			pr_rl(LOG_WARN, "redis: CLUSTER SLOTS on %s: %s", n->name,
			      r->str ? r->str : "");
			refresh_done(rc, false);
		}
		goto out;
	}
	struct rc_slots s;
	char err[128];
	if (rc_parse_slots(r, n->addr.host, &s, err, sizeof(err))) {
		pr_rl(LOG_WARN, "redis: unusable CLUSTER SLOTS from %s: %s", n->name, err);
		refresh_done(rc, false);
		goto out;
	}
	if (s.n == 0 && rc->map_loaded) {
		/* a node that left the cluster, or a fresh one: its empty view must not replace a
		 * working map; the next refresh asks another node */
		pr_rl(LOG_WARN, "redis: %s reports no slots, keeping the current map", n->name);
		rc_slots_free(&s);
		refresh_done(rc, false);
		goto out;
	}
	if (rc->mode == RC_MODE_UNKNOWN) {
		rc->mode = RC_MODE_CLUSTER;
		pr_info("redis: %s is a cluster node", n->name);
	}
	bool ok = map_apply(rc, &s);
	rc_slots_free(&s);
	state_update(rc);
	refresh_done(rc, ok);
	waitq_flush(rc);
out:
	rc_unhold(rc);
}

/* ---- the tick: state reports, deadlines, retries, hung nodes, garbage ---- */

static void tick_arm(struct rc *rc, uint32_t delay_ms)
{
	if (rc->freeing)
		return;
	uint64_t when = mono_ms() + delay_ms;
	if (loop_timer_armed(&rc->tick) && rc->tick.when <= when)
		return;
	loop_timer_arm(rc->l, &rc->tick, delay_ms);
}

static bool any_inflight(const struct rc *rc)
{
	dlist_for_each(it, &rc->nodes) {
		const struct rc_node *n = container_of(it, struct rc_node, link);
		if (n->conn && !dlist_empty(&n->conn->inflight))
			return true;
	}
	return false;
}

/* Read what the ready connections with commands in flight already received. A busy loop can
 * hold a reply unread past its deadline: one epoll_wait reports at most 256 events and timers
 * run after them, so on a loaded relay a reply that arrived in time may wait in the socket for a
 * later batch while the tick judges the command late (a false timeout, or "no reply" and a
 * dropped connection with every command on it). Non-blocking: nothing there costs one recv. */
static void read_pending(struct rc *rc)
{
	for (struct dlist *it = rc->nodes.next; it != &rc->nodes && !rc->freeing; it = it->next) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		struct rc_conn *conn = n->conn;
		if (conn && conn->ready && conn->ac && !dlist_empty(&conn->inflight))
			redisAsyncHandleRead(conn->ac); /* replies answered; a dead one is dropped */
	}
}

static void tick_cb(struct loop *l, struct loop_timer *t)
{
	struct rc *rc = container_of(t, struct rc, tick);
	rc_hold(rc);
	read_pending(rc);
	if (rc->freeing)
		goto out;
	uint64_t now = mono_ms();
	if (rc->up != rc->reported_up) {
		rc->reported_up = rc->up;
		log_state(rc);
		if (rc->state_cb)
			rc->state_cb(rc, rc->up, rc->data);
		if (rc->freeing)
			goto out;
	}
	while (!dlist_empty(&rc->all)) {
		struct rc_cmd *c = container_of(rc->all.next, struct rc_cmd, all);
		if (c->deadline > now)
			break;
		rc->st.timeouts++;
		if (c->conn) {
			cmd_answer(rc, c, NULL); /* orphan: its reply callback frees it */
		} else {
			dlist_del(&c->q);
			cmd_answer(rc, c, NULL);
			cmd_free(c);
		}
		if (rc->freeing)
			goto out;
	}
	waitq_flush(rc);
	if (rc->refresh_inflight && now > rc->refresh_started &&
	    now - rc->refresh_started > RC_REFRESH_TIMEOUT_MS) {
		struct rc_node *n = rc->refresh_node;
		refresh_done(rc, false);
		if (n && n->conn)
			conn_drop(n->conn, "CLUSTER SLOTS unanswered");
		if (rc->freeing)
			goto out;
	}
	/* re-read the clock: waitq_flush() above just sent commands */
	now = mono_ms();
	for (struct dlist *it = rc->nodes.next; it != &rc->nodes && !rc->freeing; it = it->next) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		if (!n->conn || !n->conn->ready || dlist_empty(&n->conn->inflight))
			continue;
		struct rc_cmd *oldest = container_of(n->conn->inflight.next, struct rc_cmd, q);
		uint64_t late = (uint64_t)rc->timeout_ms + RC_STALL_GRACE_MS;
		if (now > oldest->sent_at && now - oldest->sent_at > late) {
			char why[64];
			snprintf(why, sizeof(why), "no reply for %llu ms",
				 (unsigned long long)(now - oldest->sent_at));
			conn_drop(n->conn, why); /* in-flight commands get NULL */
		}
	}
	if (rc->freeing)
		goto out;
	if (rc->gc_due) {
		rc->gc_due = false;
		nodes_gc(rc);
	}
	if (!dlist_empty(&rc->all) || rc->refresh_inflight || any_inflight(rc))
		tick_arm(rc, RC_TICK_MS);
out:
	rc_unhold(rc);
}

/* ---- public API ---- */

struct rc *rc_new(struct loop *l, const char *seeds, rc_state_cb cb, void *data)
{
	if (!l || !seeds) {
		errno = EINVAL;
		return NULL;
	}
	struct rc *rc = calloc(1, sizeof(*rc));
	if (!rc) {
		errno = ENOMEM;
		return NULL;
	}
	rc->l = l;
	rc->state_cb = cb;
	rc->data = data;
	rc->timeout_ms = RC_CMD_TIMEOUT_MS;
	dlist_init(&rc->nodes);
	dlist_init(&rc->all);
	dlist_init(&rc->waitq);
	rc->tick.cb = tick_cb;
	rc->refresh.cb = refresh_timer_cb;
	int err = 0;
	for (const char *p = seeds; *p;) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		const char *s = p;
		size_t sn = n;
		while (sn && (*s == ' ' || *s == '\t'))
			s++, sn--;
		while (sn && (s[sn - 1] == ' ' || s[sn - 1] == '\t'))
			sn--;
		struct rc_addr a;
		struct rc_node *node;
		if (rc_parse_addr(s, sn, &a)) {
			pr_err("redis: seed '%.*s': want ip:port with a numeric IP (a name would "
			       "be resolved by a blocking getaddrinfo)",
			       (int)(sn > 80 ? 80 : sn), s);
			err = EINVAL;
			goto fail;
		}
		if (!(node = node_get(rc, &a))) {
			err = ENOMEM;
			goto fail;
		}
		node->seed = true;
		p += n;
		if (*p == ',')
			p++;
	}
	if (!rc->nnodes) {
		pr_err("redis: no seed given");
		err = EINVAL;
		goto fail;
	}
	rc->refresh_due = true;
	loop_timer_arm(l, &rc->refresh, 0); /* probe: CLUSTER SLOTS tells cluster from standalone */
	return rc;
fail:
	while (!dlist_empty(&rc->nodes))
		node_free(container_of(rc->nodes.next, struct rc_node, link));
	free(rc);
	errno = err;
	return NULL;
}

int rc_command_argv(struct rc *rc, const char *route_key, size_t route_keylen, rc_reply_cb cb,
		    void *priv, int argc, const char **argv, const size_t *argvlen)
{
	if (!rc || argc < 1 || !argv)
		return -EINVAL;
	if (rc->freeing)
		return -ESHUTDOWN;
	if (rc->npending >= RC_MAX_PENDING)
		return -ENOBUFS;
	for (int i = 0; i < argc; i++)
		if (!argv[i])
			return -EINVAL;
	char *buf = NULL;
	int len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
	if (len < 0 || !buf)
		return -ENOMEM;
	return cmd_submit(rc, route_key, route_keylen, cb, priv, buf, (size_t)len);
}

int rc_command(struct rc *rc, const char *route_key, rc_reply_cb cb, void *priv, const char *fmt,
	       ...)
{
	if (!rc || !fmt)
		return -EINVAL;
	if (rc->freeing)
		return -ESHUTDOWN;
	if (rc->npending >= RC_MAX_PENDING)
		return -ENOBUFS;
	char *buf = NULL;
	va_list ap;
	va_start(ap, fmt);
	int len = redisvFormatCommand(&buf, fmt, ap);
	va_end(ap);
	if (len < 0 || !buf)
		return len == -1 ? -ENOMEM : -EINVAL;
	return cmd_submit(rc, route_key, route_key ? strlen(route_key) : 0, cb, priv, buf,
			  (size_t)len);
}

bool rc_is_up(const struct rc *rc) { return rc && rc->up; }
bool rc_is_cluster(const struct rc *rc) { return rc && rc->mode == RC_MODE_CLUSTER; }

void rc_set_timeout(struct rc *rc, uint32_t ms)
{
	if (rc && ms)
		rc->timeout_ms = ms;
}

void rc_get_stats(const struct rc *rc, struct rc_stats *out) { *out = rc->st; }

void rc_set_observer(struct rc *rc, rc_observe_cb cb, void *data)
{
	rc->observe = cb;
	rc->observe_data = data;
}

static void rc_destroy(struct rc *rc)
{
	loop_timer_cancel(rc->l, &rc->tick);
	loop_timer_cancel(rc->l, &rc->refresh);
	while (!dlist_empty(&rc->nodes)) {
		struct rc_node *n = container_of(rc->nodes.next, struct rc_node, link);
		if (n->conn) /* not reached: rc_free dropped them; detach anyway */
			conn_drop(n->conn, NULL);
		node_free(n);
	}
	free(rc);
}

void rc_free(struct rc *rc)
{
	if (!rc || rc->freeing)
		return;
	rc_hold(rc);
	rc->freeing = true;
	loop_timer_cancel(rc->l, &rc->tick);
	loop_timer_cancel(rc->l, &rc->refresh);
	while (!dlist_empty(&rc->all)) {
		struct rc_cmd *c = container_of(rc->all.next, struct rc_cmd, all);
		if (c->conn) {
			cmd_answer(rc, c, NULL);
		} else {
			dlist_del(&c->q);
			cmd_answer(rc, c, NULL);
			cmd_free(c);
		}
	}
	/* everything is answered: what hiredis still calls back are orphans and detached conns */
	dlist_for_each(it, &rc->nodes) {
		struct rc_node *n = container_of(it, struct rc_node, link);
		loop_timer_cancel(rc->l, &n->timer);
		if (n->conn)
			conn_drop(n->conn, NULL);
	}
	rc_unhold(rc);
}
