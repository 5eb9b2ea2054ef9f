/* dvv-loadgen: many agents and many players at once against one real dvv-relay, to measure what
 * a load level costs (driven by bench/levels.sh; also run small by tests/e2e/loadgen.test.mjs).
 *
 * Agent side (N tunnels): each tunnel is a real agent session: TCP to the relay's agent port, TLS
 * (common/ctlconn.c, the CA the relay's certificate chains to), HELLO with a real ES256 token
 * minted here from the key file (the claims tools/dvv-token.c writes), WELCOME, PONG for every
 * PING and a PING of its own every ping_ms. Every ATTACH token becomes a "DVVA" data connection;
 * when the relay joins a player to one it sends the "DVVP" header, and the connection plays the
 * Minecraft server for that player.
 *
 * Player side (M players, player j belongs to tunnel j % N): TCP to the relay's player port, a
 * Minecraft handshake (login) for the tunnel's hostname and a Login Start named "lg<j>". The
 * server side checks that these bytes arrived intact and at the right tunnel, then sends its
 * first message; the player's join latency is connect() -> that message. After that both sides
 * send one --msg-bytes message every --interval-ms, each stamped with the player, the direction
 * and a sequence number and filled with a pattern derived from them: the receiver checks every
 * byte, so a loss, a reorder or a corruption anywhere on the path is an error.
 *
 * Phases: register (tunnels at --reg-rate per second), settle (--settle seconds with every
 * tunnel up and no player yet: a clean point to measure what tunnels alone cost), join (players
 * at --join-rate), steady (--hold seconds once every player joined or failed; --churn-rate
 * players per second leave and join again, which measures join latency under steady load),
 * drain (no more sends for 2 s; every message sent must have arrived). The whole run is
 * bounded by --duration seconds and stops by itself. Progress lines go to stderr once a second; one JSON summary goes to stdout.
 * Exit status: 0 when the run completed with no error and every player up, 1 otherwise, 2 on a
 * usage error.
 *
 * Moves, as the real agent (client/agent.c) follows them (docs/protocol.md, "Moving a session"):
 * a MOVE before WELCOME (placement) closes the attempt and the tunnel dials the named relay at
 * once with HELLO placed=true; a MOVE (or GOODBYE "draining") on a session that is up is
 * make-before-break: that session ("old") keeps serving (PONGs, ATTACHes: data connections go to
 * the relay that asked for them) while a new one registers at the MOVE's address (or, for
 * "draining", at --agent-port); its WELCOME sends GOODBYE "moved" on the old one and closes it.
 * Players carried by the old relay's data connections are never touched, so a migration must
 * lose no player: every cut is still an error. The one cut the protocol promises is a joining
 * player that was already forwarded once and whose tunnel moves again: it gets the Login
 * Disconnect "reconnecting"; such a player is counted apart (join_reconnecting) and joins again
 * (at most LG_JOIN_RETRIES times, then it is an error). Any other Login Disconnect is an error
 * (kicked), its text logged. Counted: moves (placement), migrations
 * begun and completed, GOODBYE "plan" reconnects.
 *
 * Sockets bind 127.x.y.z source addresses (IP_BIND_ADDRESS_NO_PORT: the port is chosen per
 * 4-tuple at connect) so ports never run out; tunnels use 127.10.0.0/16 upwards, players
 * 127.20.0.0/16 upwards (--tunnel-offset / --player-offset shift them: one load split over several
 * loadgen processes, as bench/levels.sh does past one process's descriptor limit). One epoll loop per thread (--threads), each owning the tunnels
 * i % threads == t and their players; nothing blocks, no thread per connection. RLIMIT_NOFILE is
 * raised to the hard limit (the caller raises the hard limit and fs.nr_open).
 */
#include "ctlconn.h"
#include "list.h"
#include "mc.h"
#include "proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jwt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LG_MSG_MIN 16
#define LG_MSG_MAX 1024
#define LG_TICK_MS 10
#define LG_DRAIN_MS 2000
#define LG_KEY_MAX (64 * 1024)
#define LG_DBUF 640 /* player header (<= 264) or handshake + login start (<= ~560) */
#define LG_PROTOCOL 767
#define LG_MOVES_IN_ROW 3  /* placement MOVEs followed at once in a row; then 1 s between */
#define LG_JOIN_RETRIES 3  /* "reconnecting" answers a joining player takes before it is an error */
#define LG_RETRY_NOW 1	   /* ms: "retry at once" (0 means "the channel failed by itself") */

/* ---- configuration ---- */

static struct {
	int agent_port, player_port;
	const char *ca, *key;
	uint32_t tunnels, players;
	double reg_rate, join_rate, churn_rate;
	unsigned threads, max_pending_reg, max_joining;
	unsigned msg_bytes, interval_ms;
	unsigned duration_s, hold_s, settle_s, join_timeout_ms, reg_timeout_ms;
	const char *sub_prefix, *tid_prefix;
	uint32_t tunnel_offset, player_offset; /* source addresses of a shard (several loadgens) */
} C = {
	.tunnels = 20,
	.players = 100,
	.reg_rate = 1000,
	.join_rate = 2000,
	.churn_rate = -1,
	.threads = 2,
	.max_pending_reg = 256,
	.max_joining = 2000,
	.msg_bytes = 64,
	.interval_ms = 1000,
	.duration_s = 60,
	.hold_s = 20,
	.join_timeout_ms = 10000,
	.reg_timeout_ms = 30000,
	.sub_prefix = "lgu",
	.tid_prefix = "lgt",
};

static char *g_key; /* ES256 private key PEM */
static size_t g_key_len;
static SSL_CTX *g_tls;

/* ---- errors and counters (per thread, read by the main thread for progress) ---- */

enum lg_err {
	E_CONNECT,	 /* connect() failed or refused */
	E_CTL_LOST,	 /* a registered control channel failed or closed */
	E_REFUSED,	 /* the relay answered HELLO with a non-retryable ERROR */
	E_REG_TIMEOUT,	 /* no WELCOME within --reg-timeout-ms */
	E_PLAYER_CLOSED, /* the relay closed a joining or playing player */
	E_SERVER_CLOSED, /* the relay closed a data connection carrying a player */
	E_BAD_HEADER,	 /* bad DVVP header, or handshake / login bytes changed on the way */
	E_MISROUTED,	 /* a player arrived at another tunnel than its hostname's */
	E_CORRUPT,	 /* a message with wrong bytes, player or sequence number */
	E_JOIN_TIMEOUT,	 /* no first server message within --join-timeout-ms */
	E_SEND,		 /* a send failed or would have blocked (light traffic never should) */
	E_LOST,		 /* messages sent but not received by the end of the drain */
	E_TUNNEL_DOWN,	 /* a player's tunnel was not up when it was to join */
	E_STALE_JOIN,	 /* a server side got a player that is not waiting (gave up, or twice) */
	E_BAD_MOVE,	 /* a MOVE to an address this tool cannot dial (not IPv4 loopback) */
	E_KICKED,	 /* the relay answered a joining player with another Login Disconnect */
	E_COUNT
};
static const char *const err_name[E_COUNT] = {
	"connect", "ctl_lost", "refused", "reg_timeout", "player_closed", "server_closed",
	"bad_header", "misrouted", "corrupt", "join_timeout", "send", "lost", "tunnel_down", "stale_join",
	"bad_move", "kicked"};

struct samples {
	uint32_t *v; /* microseconds */
	size_t n, cap;
};

struct counters {
	atomic_uint_fast64_t err[E_COUNT];
	atomic_uint_fast64_t tunnels_up, players_up, ramp_done, joins, reg_busy, pool_retired, msgs_tx,
		msgs_rx, data_opened, moves, migrations, migrated, replans, join_reconnecting,
		old_lost_quiet;
};

/* ---- connections ---- */

/* K_DEAD: closed and waiting in the worker's graveyard until the current epoll batch is done */
enum kind { K_CTL = 1, K_DATA, K_PLAYER, K_OLD, K_DEAD };
enum tstate { T_IDLE, T_CONNECTING, T_TLS, T_UP, T_RETRY };
enum dstate { D_CONNECTING, D_IDLE, D_LOGIN, D_PLAY };
enum pstate { P_IDLE, P_CONNECTING, P_JOINING, P_PLAYING, P_DONE };

struct old_sess;

/* A relay's agent address: this tool dials IPv4 loopback only. */
struct lg_addr {
	uint32_t ip; /* network order */
	uint16_t port;
};

struct tunnel {
	uint8_t kind, state;
	bool counted_up;  /* in tunnels_up: a session (or a migration's old one) serves it */
	bool placed;	  /* the next HELLO says placed=true (a MOVE chose the relay) */
	bool mig_pending; /* a MOVE / GOODBYE "draining" on the up session, acted on after io */
	bool mig_placed;
	uint8_t moves_in_row;
	int fd;
	uint32_t idx;
	uint32_t ping_ms;
	uint32_t gen;	  /* session number: a data connection belongs to the one that asked */
	uint64_t t_start_us, t_first_us, next_ping_ms, retry_at_ms;
	struct lg_addr to, mig_to; /* where the next attempt goes; where a migration goes */
	struct old_sess *old;	   /* the session a migration replaces, until the new WELCOME */
	char *host; /* from WELCOME */
	struct ctl_conn ctl;
};

/* The session a make-before-break migration replaces: serves until the new one is welcomed. */
struct old_sess {
	uint8_t kind; /* K_OLD */
	bool quiet;   /* it ended the expected way (GOODBYE taken_over / replaced) */
	int fd;
	uint32_t gen;
	struct lg_addr at;
	struct tunnel *t;
	struct dlist node; /* in the graveyard once closed */
	struct ctl_conn ctl;
};

struct dconn {
	uint8_t kind, state;
	int fd;
	uint32_t tunnel;
	uint32_t gen;	       /* the tunnel's session that asked for it */
	struct player *player; /* D_PLAY */
	uint32_t seq_tx, seq_rx;
	uint16_t have;
	uint8_t token[ATTACH_TOKEN_LEN];
	struct dlist node; /* in the thread's list of data connections */
	uint8_t buf[LG_DBUF];
};

struct player {
	uint8_t kind, state;
	bool steady; /* joined during steady state (churn): its latency counts there */
	uint8_t retries; /* "reconnecting" answers taken during this join */
	int fd;
	uint32_t idx;
	struct dconn *srv;
	uint64_t t0_us;
	uint32_t seq_tx, seq_rx;
	uint16_t have;
	uint8_t buf[LG_MSG_MAX];
};

struct worker {
	unsigned id;
	pthread_t th;
	int ep;
	struct counters cnt;
	uint32_t *tun;	 /* tunnel indexes owned (idx % threads == id) */
	uint32_t ntun, reg_next, pending_reg;
	uint32_t *pl;	 /* player indexes owned, in join order */
	uint32_t npl, join_next, joining, churn_next;
	double reg_credit, join_credit, churn_credit;
	struct dlist dconns;
	/* Closed data connections and old sessions: an epoll batch may still hold an event for
	 * one that an earlier event of the same batch closed, so they are freed after the batch */
	struct dlist dead_dconns, dead_olds;
	struct samples join_ramp, join_steady, reg;
	uint64_t tick;
};

static struct tunnel *g_tun;
static struct player *g_pl;
static struct worker *g_w;

/* phases, set by the main thread */
enum phase { PH_REGISTER, PH_SETTLE, PH_JOIN, PH_STEADY, PH_DRAIN, PH_STOP };
static atomic_int g_phase;
static volatile sig_atomic_t g_sig;

static void on_signal(int s) { g_sig = s; }

static uint64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void count(struct worker *w, enum lg_err e)
{
	atomic_fetch_add_explicit(&w->cnt.err[e], 1, memory_order_relaxed);
}
#define INC(w, f) atomic_fetch_add_explicit(&(w)->cnt.f, 1, memory_order_relaxed)
#define DEC(w, f) atomic_fetch_sub_explicit(&(w)->cnt.f, 1, memory_order_relaxed)

static int sample_add(struct samples *s, uint64_t us)
{
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 1024;
		uint32_t *v = realloc(s->v, nc * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = nc;
	}
	s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	return 0;
}

/* 127.<base + i/62500>.<(i/250)%250 + 1>.<i%250 + 1>: never .0 or .255 in the last two bytes */
static struct sockaddr_in src_addr(unsigned base, uint32_t i)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl((127u << 24) | ((base + i / 62500u) & 0xff) << 16 |
				  ((i / 250u) % 250u + 1u) << 8 | (i % 250u + 1u));
	return a;
}

static struct lg_addr home(void)
{
	return (struct lg_addr){.ip = htonl(INADDR_LOOPBACK), .port = (uint16_t)C.agent_port};
}

/* "host:port" of a MOVE (or a peer): IPv4 loopback only, this tool dials nothing else. */
static int addr_parse(const char *s, struct lg_addr *a)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	struct in_addr in;
	char *end;
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (!strcmp(host, "localhost"))
		snprintf(host, sizeof(host), "127.0.0.1");
	if (*end || !port || port > 65535 || inet_pton(AF_INET, host, &in) != 1 ||
	    (ntohl(in.s_addr) >> 24) != 127)
		return -EINVAL;
	a->ip = in.s_addr;
	a->port = (uint16_t)port;
	return 0;
}

/* Non-blocking TCP connect from src to ip:port (network order ip). Returns the fd (connecting
 * or connected) or -errno. */
static int dial_to(const struct sockaddr_in *src, uint32_t ip, int port)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	dst.sin_addr.s_addr = ip;
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)src, sizeof(*src)) < 0 ||
	    (connect(fd, (const struct sockaddr *)&dst, sizeof(dst)) < 0 && errno != EINPROGRESS)) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

static int dial(const struct sockaddr_in *src, int port)
{
	return dial_to(src, htonl(INADDR_LOOPBACK), port);
}

static int ep_set(struct worker *w, int op, int fd, uint32_t events, void *ptr)
{
	struct epoll_event ev = {.events = events, .data.ptr = ptr};
	return epoll_ctl(w->ep, op, fd, &ev) < 0 ? -errno : 0;
}

static int sock_error(int fd)
{
	int e = 0;
	socklen_t l = sizeof(e);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
		return errno;
	return e;
}

/* ---- tokens: the claims tools/dvv-token.c writes, signed with the same key type ---- */

static char *mint(uint32_t idx)
{
	char sub[32], tid[32], jti[32];
	long now = (long)time(NULL);
	jwt_t *jwt = NULL;
	char *tok = NULL;
	snprintf(sub, sizeof(sub), "%s%u", C.sub_prefix, idx);
	snprintf(tid, sizeof(tid), "%s%u", C.tid_prefix, idx);
	snprintf(jti, sizeof(jti), "lg%u-%ld", idx, now);
	if (jwt_new(&jwt))
		return NULL;
	int ret = jwt_add_grant(jwt, "iss", "dvv");
	ret = ret ? ret : jwt_add_grant(jwt, "aud", "dvv-relay");
	ret = ret ? ret : jwt_add_grant(jwt, "sub", sub);
	ret = ret ? ret : jwt_add_grant(jwt, "tid", tid);
	ret = ret ? ret : jwt_add_grant(jwt, "jti", jti);
	ret = ret ? ret : jwt_add_grant_int(jwt, "iat", now);
	ret = ret ? ret : jwt_add_grant_int(jwt, "exp", now + 3 * 3600);
	ret = ret ? ret
		  : jwt_set_alg(jwt, JWT_ALG_ES256, (const unsigned char *)g_key, (int)g_key_len);
	if (!ret)
		tok = jwt_encode_str(jwt);
	jwt_free(jwt);
	return tok;
}

/* ---- the Minecraft bytes a player sends, and the messages both sides exchange ---- */

/* Handshake (login) for host + Login Start "lg<idx>" with a UUID made of idx. */
static size_t join_bytes(const char *host, uint32_t idx, uint8_t *out, size_t cap)
{
	size_t n = mc_build_handshake(out, cap, LG_PROTOCOL, host, 25565, MC_NEXT_LOGIN);
	uint8_t body[64];
	char name[17];
	int nl = snprintf(name, sizeof(name), "lg%u", idx);
	size_t b = 0;
	if (!n || nl <= 0)
		return 0;
	body[b++] = 0x00; /* Login Start */
	b += (size_t)mc_varint_write(body + b, nl);
	memcpy(body + b, name, (size_t)nl);
	b += (size_t)nl;
	memset(body + b, 0, 16);
	memcpy(body + b + 12, &idx, 4);
	b += 16;
	if (n + 5 + b > cap)
		return 0;
	n += (size_t)mc_varint_write(out + n, (int32_t)b);
	memcpy(out + n, body, b);
	return n + b;
}

static void msg_build(uint8_t *m, uint8_t dir, uint32_t idx, uint32_t seq)
{
	m[0] = 'L';
	m[1] = dir;
	memcpy(m + 2, &idx, 4);
	memcpy(m + 6, &seq, 4);
	for (unsigned i = 10; i < C.msg_bytes; i++)
		m[i] = (uint8_t)(idx * 131u + seq * 17u + i * 7u + dir);
}

static bool msg_ok(const uint8_t *m, uint8_t dir, uint32_t idx, uint32_t seq)
{
	uint8_t want[LG_MSG_MAX];
	msg_build(want, dir, idx, seq);
	return !memcmp(m, want, C.msg_bytes);
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
	ssize_t r;
	do
		r = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	return r == (ssize_t)n ? 0 : -1;
}

static void dconn_free(struct worker *w, struct dconn *d)
{
	dlist_del(&d->node);
	close(d->fd);
	d->fd = -1;
	d->kind = K_DEAD;
	dlist_add_tail(&w->dead_dconns, &d->node);
}

/* After an epoll batch (and at the end): free what the batch closed. */
static void graveyard_free(struct worker *w)
{
	while (!dlist_empty(&w->dead_dconns)) {
		struct dconn *d = dlist_first(&w->dead_dconns, struct dconn, node);
		dlist_del(&d->node);
		free(d);
	}
	while (!dlist_empty(&w->dead_olds)) {
		struct old_sess *o = dlist_first(&w->dead_olds, struct old_sess, node);
		dlist_del(&o->node);
		free(o);
	}
}

/* ---- players ---- */

static void player_close(struct worker *w, struct player *p, uint8_t state)
{
	if ((p->state == P_JOINING || p->state == P_CONNECTING) && !p->steady)
		INC(w, ramp_done); /* failed (counted as an error by the caller) */
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	if (p->state == P_PLAYING)
		DEC(w, players_up);
	if (p->state == P_JOINING || p->state == P_CONNECTING)
		w->joining--;
	if (p->srv) {
		p->srv->player = NULL; /* the server side goes with it (as a real server's would) */
		dconn_free(w, p->srv);
		p->srv = NULL;
	}
	p->state = state;
	p->have = 0;
}

static void player_start(struct worker *w, struct player *p, bool steady)
{
	struct tunnel *t = &g_tun[p->idx % C.tunnels];
	if (!t->counted_up) { /* (a migrating tunnel is served by its old session) */
		count(w, E_TUNNEL_DOWN);
		if (!steady)
			INC(w, ramp_done);
		p->state = P_DONE;
		return;
	}
	struct sockaddr_in src = src_addr(20, C.player_offset + p->idx);
	p->t0_us = mono_us();
	p->steady = steady;
	p->seq_tx = p->seq_rx = 0;
	p->have = 0;
	int fd = dial(&src, C.player_port);
	if (fd < 0 || ep_set(w, EPOLL_CTL_ADD, fd, EPOLLOUT, p)) {
		if (fd >= 0)
			close(fd);
		count(w, E_CONNECT);
		if (!steady)
			INC(w, ramp_done);
		p->state = P_DONE;
		return;
	}
	p->fd = fd;
	p->state = P_CONNECTING;
	w->joining++;
}

/* The relay's Login Disconnect (length, packet 0x00, a JSON chat string) instead of the
 * server's first message? Our messages start "LS", never a packet id 0 after the length.
 * Returns the offset of the JSON text in b, 0 when it is not one. */
static size_t login_disconnect(const uint8_t *b, size_t n)
{
	int32_t len, slen;
	int v = mc_varint_read(b, n, &len);
	if (v <= 0 || (size_t)v + 1 >= n || b[v] != 0x00 || len < 2)
		return 0;
	int v2 = mc_varint_read(b + v + 1, n - (size_t)v - 1, &slen);
	size_t off = (size_t)v + 1 + (size_t)v2;
	return v2 > 0 && off < n && slen > 0 && (b[off] == '{' || b[off] == '"') ? off : 0;
}

/* A joining player got the relay's Login Disconnect. "The server is reconnecting" is the answer
 * docs/protocol.md promises a player forwarded once whose tunnel moved again: counted apart
 * (join_reconnecting), and the player joins again as a real one would, LG_JOIN_RETRIES times at
 * most (its join latency and timeout still count from the first attempt). Any other answer
 * (unreachable owner, busy, offline) is an error of its own (kicked). true: handled. */
static bool player_kicked(struct worker *w, struct player *p, size_t n)
{
	size_t off = login_disconnect(p->buf, n);
	int32_t len;
	if (!off)
		return false;
	/* the rest of the packet (the relay wrote it whole, then closed), so that the text is read
	 * whatever --msg-bytes is */
	size_t total = (size_t)mc_varint_read(p->buf, n, &len) + (size_t)len;
	if (total > sizeof(p->buf))
		total = sizeof(p->buf);
	while (n < total) {
		ssize_t r = recv(p->fd, p->buf + n, total - n, MSG_DONTWAIT);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	bool promised = memmem(p->buf + off, n - off, "reconnecting", 12) != NULL;
	if (promised && p->retries < LG_JOIN_RETRIES) {
		INC(w, join_reconnecting);
		uint64_t t0 = p->t0_us;
		close(p->fd);
		p->fd = -1;
		w->joining--;
		p->state = P_IDLE;
		p->retries++;
		player_start(w, p, p->steady);
		p->t0_us = t0;
		return true;
	}
	count(w, E_KICKED);
	if (atomic_load(&w->cnt.err[E_KICKED]) <= 5) /* what the relay said, for the log */
		fprintf(stderr, "loadgen: player %u (%s) kicked: %.*s\n", p->idx,
			g_tun[p->idx % C.tunnels].host, (int)(n - off), (const char *)p->buf + off);
	player_close(w, p, P_DONE);
	return true;
}

static void player_io(struct worker *w, struct player *p, uint32_t ev)
{
	if (p->state == P_CONNECTING) {
		uint8_t jb[LG_DBUF];
		size_t n = join_bytes(g_tun[p->idx % C.tunnels].host, p->idx, jb, sizeof(jb));
		if (sock_error(p->fd) || !n || send_all(p->fd, jb, n)) {
			count(w, E_CONNECT);
			player_close(w, p, P_DONE);
			return;
		}
		p->state = P_JOINING;
		ep_set(w, EPOLL_CTL_MOD, p->fd, EPOLLIN, p);
		return;
	}
	for (;;) {
		ssize_t r = recv(p->fd, p->buf + p->have, C.msg_bytes - p->have, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			if (p->state == P_JOINING && player_kicked(w, p, p->have))
				return;
			count(w, E_PLAYER_CLOSED);
			player_close(w, p, P_DONE);
			return;
		}
		p->have += (uint16_t)r;
		if (p->have < C.msg_bytes)
			continue;
		p->have = 0;
		if (!msg_ok(p->buf, 'S', p->idx, p->seq_rx)) {
			if (p->state == P_JOINING && player_kicked(w, p, C.msg_bytes))
				return;
			count(w, E_CORRUPT);
			player_close(w, p, P_DONE);
			return;
		}
		p->seq_rx++;
		INC(w, msgs_rx);
		if (p->state == P_JOINING) {
			uint64_t us = mono_us() - p->t0_us;
			sample_add(p->steady ? &w->join_steady : &w->join_ramp, us);
			p->state = P_PLAYING;
			p->retries = 0;
			w->joining--;
			if (!p->steady)
				INC(w, ramp_done);
			INC(w, players_up);
			INC(w, joins);
		}
	}
}

/* ---- data connections (the server side of a player) ---- */


/* One pooled data connection for an ATTACH token, to the relay whose session (gen) asked. */
static void dconn_open(struct worker *w, uint32_t tidx, uint32_t gen, struct lg_addr at,
		       const uint8_t token[ATTACH_TOKEN_LEN])
{
	struct sockaddr_in src = src_addr(10, C.tunnel_offset + tidx);
	struct dconn *d = calloc(1, sizeof(*d));
	if (!d) {
		count(w, E_CONNECT);
		return;
	}
	d->kind = K_DATA;
	d->tunnel = tidx;
	d->gen = gen;
	memcpy(d->token, token, ATTACH_TOKEN_LEN);
	d->fd = dial_to(&src, at.ip, at.port);
	if (d->fd < 0 || ep_set(w, EPOLL_CTL_ADD, d->fd, EPOLLOUT, d)) {
		if (d->fd >= 0)
			close(d->fd);
		free(d);
		count(w, E_CONNECT);
		return;
	}
	dlist_add_tail(&w->dconns, &d->node);
	INC(w, data_opened);
}

/* Handshake + Login Start complete in d->buf? Returns their length, 0 for "need more", -1 when
 * malformed. */
static int login_len(const uint8_t *b, size_t n)
{
	size_t off = 0;
	for (int f = 0; f < 2; f++) {
		int32_t len;
		int v = mc_varint_read(b + off, n - off, &len);
		if (v < 0 || (v > 0 && (len <= 0 || len > LG_DBUF)))
			return -1;
		if (v == 0 || n - off - (size_t)v < (size_t)len)
			return n - off >= 5 && v == 0 ? -1 : 0;
		off += (size_t)v + (size_t)len;
	}
	return (int)off;
}

/* The server side got the player's handshake and Login Start: check them, link to the player,
 * send the first message. */
static void dconn_login(struct worker *w, struct dconn *d, size_t len)
{
	const uint8_t *b = d->buf;
	int32_t flen, nlen, id;
	int v = mc_varint_read(b, len, &flen);
	size_t off = (size_t)v + (size_t)flen;
	int v2 = mc_varint_read(b + off, len - off, &flen);
	size_t lo = off + (size_t)v2; /* Login Start body: id, String name, UUID */
	int v3 = lo + 1 < len ? mc_varint_read(b + lo + 1, len - lo - 1, &nlen) : -1;
	char name[32];
	uint32_t idx;
	if (v3 <= 0 || b[lo] != 0x00 || nlen < 3 || nlen > 16 ||
	    lo + 1 + (size_t)v3 + (size_t)nlen > len) {
		count(w, E_BAD_HEADER);
		goto bad;
	}
	memcpy(name, b + lo + 1 + v3, (size_t)nlen);
	name[nlen] = 0;
	if (sscanf(name, "lg%d", &id) != 1 || id < 0 || (uint32_t)id >= C.players) {
		count(w, E_BAD_HEADER);
		goto bad;
	}
	idx = (uint32_t)id;
	if (idx % C.tunnels != d->tunnel) {
		count(w, E_MISROUTED);
		goto bad;
	}
	uint8_t want[LG_DBUF];
	size_t wl = join_bytes(g_tun[d->tunnel].host, idx, want, sizeof(want));
	struct player *p = &g_pl[idx];
	if (wl != len || memcmp(want, b, len)) {
		count(w, E_BAD_HEADER);
		goto bad;
	}
	if (p->state != P_JOINING || p->srv) {
		count(w, E_STALE_JOIN); /* no such player waiting: a duplicate or a late join */
		goto bad;
	}
	d->player = p;
	p->srv = d;
	d->state = D_PLAY;
	d->have = 0;
	uint8_t m[LG_MSG_MAX];
	msg_build(m, 'S', idx, d->seq_tx);
	if (send_all(d->fd, m, C.msg_bytes)) {
		count(w, E_SEND);
		player_close(w, p, P_DONE);
		return;
	}
	d->seq_tx++;
	INC(w, msgs_tx);
	return;
bad:
	dconn_free(w, d);
}

static void dconn_io(struct worker *w, struct dconn *d, uint32_t ev)
{
	if (d->state == D_CONNECTING) {
		uint8_t pre[DATA_ATTACH_LEN];
		memcpy(pre, DATA_ATTACH_MAGIC, 4);
		memcpy(pre + 4, d->token, ATTACH_TOKEN_LEN);
		if (sock_error(d->fd) || send_all(d->fd, pre, sizeof(pre))) {
			count(w, E_CONNECT);
			dconn_free(w, d);
			return;
		}
		d->state = D_IDLE;
		ep_set(w, EPOLL_CTL_MOD, d->fd, EPOLLIN, d);
		return;
	}
	for (;;) {
		size_t want = d->state == D_PLAY ? C.msg_bytes : sizeof(d->buf);
		if (d->state == D_IDLE) /* the header exactly: the player's bytes follow it */
			want = d->have < DATA_HDR_FIXED
				       ? DATA_HDR_FIXED
				       : DATA_HDR_FIXED + (size_t)data_hdr_fixed(d->buf);
		ssize_t r = recv(d->fd, d->buf + d->have, want - d->have, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			if (d->state == D_IDLE) {
				INC(w, pool_retired); /* the relay retired a pooled connection */
				dconn_free(w, d);
			} else if (d->player) {
				count(w, E_SERVER_CLOSED);
				player_close(w, d->player, P_DONE);
			} else {
				count(w, E_SERVER_CLOSED);
				dconn_free(w, d);
			}
			return;
		}
		d->have += (uint16_t)r;
		if (d->state == D_IDLE) {
			if (d->have < DATA_HDR_FIXED)
				continue;
			int body = data_hdr_fixed(d->buf);
			if (body < 0 || body > DATA_HDR_BODY_MAX) {
				count(w, E_BAD_HEADER);
				dconn_free(w, d);
				return;
			}
			if (d->have < DATA_HDR_FIXED + (size_t)body)
				continue;
			struct data_hdr h;
			if (data_hdr_body(d->buf + DATA_HDR_FIXED, d->have - DATA_HDR_FIXED, &h)) {
				count(w, E_BAD_HEADER);
				dconn_free(w, d);
				return;
			}
			d->state = D_LOGIN;
			d->have = 0;
		} else if (d->state == D_LOGIN) {
			int n = login_len(d->buf, d->have);
			if (n < 0 || (n == 0 && d->have == sizeof(d->buf))) {
				count(w, E_BAD_HEADER);
				dconn_free(w, d);
				return;
			}
			if (n == 0)
				continue;
			if ((size_t)n != d->have) { /* the player sends nothing before it is answered */
				count(w, E_BAD_HEADER);
				dconn_free(w, d);
				return;
			}
			dconn_login(w, d, (size_t)n);
			return; /* d may be gone */
		} else {
			if (d->have < C.msg_bytes)
				continue;
			d->have = 0;
			struct player *p = d->player;
			if (!msg_ok(d->buf, 'P', p->idx, d->seq_rx)) {
				count(w, E_CORRUPT);
				player_close(w, p, P_DONE);
				return;
			}
			d->seq_rx++;
			INC(w, msgs_rx);
		}
	}
}

/* ---- tunnels (agent sessions) ---- */

/* tunnels_up counts tunnels something serves: an up session, or a migration's old one. */
static void set_up(struct worker *w, struct tunnel *t, bool up)
{
	if (up && !t->counted_up)
		INC(w, tunnels_up);
	else if (!up && t->counted_up)
		DEC(w, tunnels_up);
	t->counted_up = up;
}

static void old_free(struct worker *w, struct old_sess *o)
{
	ctl_conn_free(&o->ctl);
	close(o->fd);
	o->fd = -1;
	o->kind = K_DEAD;
	dlist_add_tail(&w->dead_olds, &o->node);
}

/* The session a migration replaces ended before the new one was welcomed. GOODBYE taken_over or
 * replaced is the new session taking the route (its WELCOME follows): expected. Anything else
 * leaves the tunnel without a session until the attempt in flight (now a reconnect) is up. */
static void old_lost(struct worker *w, struct tunnel *t)
{
	struct old_sess *o = t->old;
	t->old = NULL;
	if (o->quiet) {
		INC(w, old_lost_quiet);
	} else {
		count(w, E_CTL_LOST);
		if (t->state != T_UP)
			set_up(w, t, false);
	}
	old_free(w, o);
}

/* Tear the current session down (the old one of a migration, if any, is not touched). */
static void tunnel_down(struct worker *w, struct tunnel *t, uint64_t retry_in_ms)
{
	if (!t->old)
		set_up(w, t, false);
	if (t->state == T_TLS || t->state == T_UP)
		ctl_conn_free(&t->ctl);
	if (t->fd >= 0)
		close(t->fd);
	if (t->state == T_CONNECTING || t->state == T_TLS)
		w->pending_reg--;
	t->fd = -1;
	t->state = T_RETRY;
	t->retry_at_ms = mono_us() / 1000 + retry_in_ms;
}

static void tunnel_start(struct worker *w, struct tunnel *t)
{
	struct sockaddr_in src = src_addr(10, C.tunnel_offset + t->idx);
	t->t_start_us = mono_us();
	if (!t->t_first_us)
		t->t_first_us = t->t_start_us;
	t->gen++;
	t->fd = dial_to(&src, t->to.ip, t->to.port);
	if (t->fd < 0 || ep_set(w, EPOLL_CTL_ADD, t->fd, EPOLLOUT, t)) {
		if (t->fd >= 0)
			close(t->fd);
		t->fd = -1;
		count(w, E_CONNECT);
		t->state = T_RETRY;
		t->retry_at_ms = mono_us() / 1000 + 1000;
		return;
	}
	t->state = T_CONNECTING;
	w->pending_reg++;
}

/* the worker running on this thread: the control channel callback has only the ctl_conn */
static _Thread_local struct worker *tl_w;

/* The new session of a migration is welcomed: GOODBYE "moved" on the old one, which closes. Its
 * idle pooled data connections are left to its relay, which retires them with the session
 * (closing them here could race a player the relay is handing to one); those carrying players
 * stay until their players leave. */
static void migrate_finish(struct worker *w, struct tunnel *t)
{
	struct old_sess *o = t->old;
	struct ctl_msg bye = {.type = CTL_GOODBYE};
	t->old = NULL;
	snprintf(bye.u.goodbye.code, sizeof(bye.u.goodbye.code), "moved");
	snprintf(bye.u.goodbye.reason, sizeof(bye.u.goodbye.reason), "session moved");
	if (!ctl_conn_send(&o->ctl, &bye))
		ctl_conn_flush(&o->ctl); /* best effort: the new relay took the lease anyway */
	INC(w, migrated);
	old_free(w, o);
}

static int old_on_msg(struct ctl_conn *c, const struct ctl_msg *m)
{
	struct old_sess *o = c->data;
	struct worker *w = tl_w;
	switch (m->type) {
	case CTL_ATTACH:
		for (uint32_t i = 0; i < m->u.attach.n; i++)
			dconn_open(w, o->t->idx, o->gen, o->at, m->u.attach.tokens[i]);
		return 0;
	case CTL_PING: {
		struct ctl_msg pong = {.type = CTL_PONG};
		pong.u.ping.t = m->u.ping.t;
		return ctl_conn_send(c, &pong) ? 1 : 0;
	}
	case CTL_GOODBYE:
		o->quiet = !strcmp(m->u.goodbye.code, "taken_over") ||
			   !strcmp(m->u.goodbye.code, "replaced");
		return 1;
	case CTL_ERROR:
		return 1;
	default:
		return 0; /* a MOVE on the old session: already moving */
	}
}

static void old_io(struct worker *w, struct old_sess *o)
{
	int rc = ctl_conn_io(&o->ctl);
	if (rc < 0)
		old_lost(w, o->t);
	else
		ep_set(w, EPOLL_CTL_MOD, o->fd, (uint32_t)rc, o);
}

/* MOVE or GOODBYE "draining" on the up session (after ctl_conn_io returned): make-before-break.
 * The session becomes the old one, serving on, and a new one dials the target. */
static void migrate_begin(struct worker *w, struct tunnel *t, int events)
{
	struct old_sess *o = calloc(1, sizeof(*o));
	t->mig_pending = false;
	if (!o) { /* cannot keep both: stay; the relay's lease handover still moves us later */
		ep_set(w, EPOLL_CTL_MOD, t->fd, (uint32_t)events, t);
		return;
	}
	INC(w, migrations);
	o->kind = K_OLD;
	o->fd = t->fd;
	o->gen = t->gen;
	o->at = t->to;
	o->t = t;
	o->ctl = t->ctl; /* the TLS session knows only the fd: the struct moves as is */
	o->ctl.data = o;
	o->ctl.on_msg = old_on_msg;
	ep_set(w, EPOLL_CTL_MOD, o->fd, (uint32_t)events, o);
	t->old = o;
	t->fd = -1;
	memset(&t->ctl, 0, sizeof(t->ctl));
	t->to = t->mig_to;
	t->placed = t->mig_placed;
	t->state = T_RETRY;
	if (++t->moves_in_row <= LG_MOVES_IN_ROW)
		tunnel_start(w, t);
	else
		t->retry_at_ms = mono_us() / 1000 + 1000;
}

static int tunnel_on_msg(struct ctl_conn *c, const struct ctl_msg *m)
{
	struct tunnel *t = c->data;
	struct worker *w = tl_w;
	struct lg_addr to;
	switch (m->type) {
	case CTL_WELCOME:
		if (t->state == T_UP)
			return 0;
		free(t->host);
		t->host = strdup(m->u.welcome.hostname);
		if (!t->host)
			return 1;
		t->state = T_UP;
		w->pending_reg--;
		t->moves_in_row = 0;
		t->ping_ms = m->u.welcome.ping_ms ? m->u.welcome.ping_ms : 15000;
		t->next_ping_ms = mono_us() / 1000 + t->ping_ms;
		if (!t->counted_up) /* a registration (a migration keeps the tunnel served) */
			sample_add(&w->reg, mono_us() - t->t_first_us);
		t->t_first_us = 0;
		set_up(w, t, true);
		if (t->old)
			migrate_finish(w, t);
		return 0;
	case CTL_ERROR:
		if (m->u.error.retry) {
			INC(w, reg_busy);
			t->retry_at_ms = m->u.error.retry_after_ms ? m->u.error.retry_after_ms : 1000;
		} else {
			fprintf(stderr, "loadgen: tunnel %u refused: %s: %s\n", t->idx,
				m->u.error.code, m->u.error.message);
			count(w, E_REFUSED);
			t->retry_at_ms = UINT64_MAX;
		}
		return 1;
	case CTL_ATTACH:
		for (uint32_t i = 0; i < m->u.attach.n; i++)
			dconn_open(w, t->idx, t->gen, t->to, m->u.attach.tokens[i]);
		return 0;
	case CTL_PING: {
		struct ctl_msg pong = {.type = CTL_PONG};
		pong.u.ping.t = m->u.ping.t;
		return ctl_conn_send(c, &pong) ? 1 : 0;
	}
	case CTL_MOVE:
		if (addr_parse(m->u.move.addr, &to)) {
			fprintf(stderr, "loadgen: tunnel %u: MOVE to '%s' ignored (not IPv4 loopback)\n",
				t->idx, m->u.move.addr);
			count(w, E_BAD_MOVE);
			return 0;
		}
		if (t->state == T_UP) { /* make-before-break, once ctl_conn_io returned */
			t->mig_pending = true;
			t->mig_to = to;
			t->mig_placed = true;
			return 0;
		}
		/* placement before WELCOME: nothing to keep, dial the named relay instead */
		INC(w, moves);
		t->to = to;
		t->placed = true;
		t->retry_at_ms = ++t->moves_in_row <= LG_MOVES_IN_ROW ? LG_RETRY_NOW : 1000;
		return 1;
	case CTL_GOODBYE:
		if (t->state == T_UP && !strcmp(m->u.goodbye.code, "draining")) {
			/* no target given: the configured endpoint picks one; serve meanwhile */
			t->mig_pending = true;
			t->mig_to = home();
			t->mig_placed = false;
			return 0;
		}
		t->mig_pending = false;
		if (!strcmp(m->u.goodbye.code, "plan")) {
			/* the plan changed under the session: the agent comes back at once */
			INC(w, replans);
			t->retry_at_ms = LG_RETRY_NOW;
			return 1;
		}
		/* replaced, taken_over (nobody else holds our tokens), idle, revoked, blocked: a
		 * fault in a load run */
		fprintf(stderr, "loadgen: tunnel %u: relay said GOODBYE %s: %s\n", t->idx,
			m->u.goodbye.code, m->u.goodbye.reason);
		count(w, E_CTL_LOST);
		t->retry_at_ms = UINT64_MAX;
		return 1;
	default:
		return 0;
	}
}

/* Drive the control channel; on failure the tunnel goes down (and is retried if it may be). */
static void tunnel_drive(struct worker *w, struct tunnel *t, int rc)
{
	if (rc >= 0 && t->retry_at_ms == 0) {
		if (t->mig_pending)
			migrate_begin(w, t, rc);
		else
			ep_set(w, EPOLL_CTL_MOD, t->fd, (uint32_t)rc, t);
		return;
	}
	t->mig_pending = false;
	uint64_t retry = t->retry_at_ms;
	bool was_up = t->state == T_UP;
	if (retry == 0) { /* the channel failed by itself */
		if (was_up)
			count(w, E_CTL_LOST);
		else
			count(w, E_CONNECT);
		retry = 1000;
	}
	if (was_up) { /* a session ended without a MOVE: back to the configured endpoint */
		t->to = home();
		t->placed = false;
	}
	tunnel_down(w, t, retry == UINT64_MAX ? 0 : retry);
	if (retry == UINT64_MAX)
		t->state = T_IDLE, t->retry_at_ms = UINT64_MAX; /* never again */
	else
		t->retry_at_ms = mono_us() / 1000 + retry;
}

static void tunnel_io(struct worker *w, struct tunnel *t, uint32_t ev)
{
	if (t->state == T_CONNECTING) {
		if (sock_error(t->fd) || ctl_conn_init(&t->ctl, g_tls, t->fd, false, "127.0.0.1")) {
			count(w, E_CONNECT);
			tunnel_down(w, t, 1000);
			return;
		}
		t->state = T_TLS;
		t->ctl.on_msg = tunnel_on_msg;
		t->ctl.data = t;
		t->retry_at_ms = 0;
		struct ctl_msg *hello = calloc(1, sizeof(*hello));
		char *tok = mint(t->idx);
		int rc = -ENOMEM;
		if (hello && tok && strlen(tok) <= CTL_TOKEN_MAX) {
			hello->type = CTL_HELLO;
			hello->u.hello.proto = CTL_VERSION;
			hello->u.hello.placed = t->placed;
			memcpy(hello->u.hello.token, tok, strlen(tok) + 1);
			snprintf(hello->u.hello.agent, sizeof(hello->u.hello.agent), "dvv-loadgen");
			rc = ctl_conn_send(&t->ctl, hello);
		}
		free(hello);
		free(tok);
		if (rc) {
			count(w, E_CONNECT);
			tunnel_down(w, t, 1000);
			return;
		}
	}
	tunnel_drive(w, t, ctl_conn_io(&t->ctl));
}

static void tunnel_tick(struct worker *w, struct tunnel *t, uint64_t now_ms)
{
	if (t->state == T_RETRY && now_ms >= t->retry_at_ms) {
		tunnel_start(w, t);
	} else if ((t->state == T_CONNECTING || t->state == T_TLS) &&
		   now_ms > t->t_start_us / 1000 + C.reg_timeout_ms) {
		/* (a tunnel started in this very tick has t_start_us > now_ms) */
		count(w, E_REG_TIMEOUT);
		t->retry_at_ms = 0;
		tunnel_down(w, t, 1000);
	} else if (t->state == T_UP && now_ms >= t->next_ping_ms) {
		struct ctl_msg ping = {.type = CTL_PING};
		ping.u.ping.t = now_ms;
		t->next_ping_ms = now_ms + t->ping_ms;
		if (ctl_conn_send(&t->ctl, &ping))
			tunnel_drive(w, t, -EIO);
		else
			tunnel_drive(w, t, ctl_conn_flush(&t->ctl));
	}
}

/* ---- the worker loop ---- */

/* One checked message from one side of player p ('P': the player, 'S': its server side).
 * false: the send failed and p is closed. */
static bool side_send(struct worker *w, struct player *p, int fd, uint8_t dir, uint32_t *seq)
{
	uint8_t m[LG_MSG_MAX];
	msg_build(m, dir, p->idx, *seq);
	if (send_all(fd, m, C.msg_bytes)) {
		count(w, E_SEND);
		player_close(w, p, P_DONE);
		return false;
	}
	(*seq)++;
	INC(w, msgs_tx);
	return true;
}

static void player_send(struct worker *w, struct player *p)
{
	struct dconn *d = p->srv;
	if (side_send(w, p, p->fd, 'P', &p->seq_tx))
		side_send(w, p, d->fd, 'S', &d->seq_tx);
}

static void worker_tick(struct worker *w, uint64_t now_us)
{
	int ph = atomic_load(&g_phase);
	uint64_t now_ms = now_us / 1000;
	double dt = LG_TICK_MS / 1000.0;
	/* registrations, at the rate, bounded in flight */
	w->reg_credit += C.reg_rate / C.threads * dt;
	if (w->reg_credit > C.reg_rate / C.threads)
		w->reg_credit = C.reg_rate / C.threads;
	while (w->reg_next < w->ntun && w->reg_credit >= 1 && w->pending_reg < C.max_pending_reg &&
	       ph < PH_DRAIN) {
		tunnel_start(w, &g_tun[w->tun[w->reg_next++]]);
		w->reg_credit -= 1;
	}
	/* tunnel timers: one tenth of the tunnels per tick is plenty for second-scale timers */
	for (uint32_t i = (uint32_t)(w->tick % 10); i < w->reg_next; i += 10)
		tunnel_tick(w, &g_tun[w->tun[i]], now_ms);
	/* joins */
	if (ph == PH_JOIN || ph == PH_STEADY) {
		w->join_credit += C.join_rate / C.threads * dt;
		if (w->join_credit > C.join_rate / C.threads)
			w->join_credit = C.join_rate / C.threads;
		while (w->join_next < w->npl && w->join_credit >= 1 && w->joining < C.max_joining) {
			player_start(w, &g_pl[w->pl[w->join_next++]], false);
			w->join_credit -= 1;
		}
	}
	/* churn: players leave and join again, only once everyone is up */
	if (ph == PH_STEADY && w->npl) {
		w->churn_credit += C.churn_rate / C.threads * dt;
		while (w->churn_credit >= 1 && w->joining < C.max_joining) {
			struct player *p = &g_pl[w->pl[w->churn_next++ % w->npl]];
			w->churn_credit -= 1;
			if (p->state != P_PLAYING)
				continue;
			player_close(w, p, P_IDLE);
			p->retries = 0;
			player_start(w, p, true);
		}
	}
	/* messages: each player's slot comes round once per interval */
	uint32_t nslots = C.interval_ms / LG_TICK_MS;
	for (uint32_t i = (uint32_t)(w->tick % nslots); i < w->join_next; i += nslots) {
		struct player *p = &g_pl[w->pl[i]];
		if (p->state == P_PLAYING && p->srv && ph < PH_DRAIN)
			player_send(w, p);
		else if ((p->state == P_JOINING || p->state == P_CONNECTING) &&
			 now_us > p->t0_us + (uint64_t)C.join_timeout_ms * 1000) {
			/* (a player started in this very tick has t0 > now_us) */
			count(w, E_JOIN_TIMEOUT);
			if (atomic_load(&w->cnt.err[E_JOIN_TIMEOUT]) <= 5)
				fprintf(stderr, "loadgen: player %u (tunnel %u, %s) not joined in %u ms (%s)\n",
					p->idx, p->idx % C.tunnels, g_tun[p->idx % C.tunnels].host,
					C.join_timeout_ms,
					p->state == P_CONNECTING ? "connecting" : "no answer from its server");
			player_close(w, p, P_DONE);
		}
	}
	w->tick++;
}

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[256];
	uint64_t next_tick = mono_us();
	tl_w = w;
	while (atomic_load(&g_phase) != PH_STOP) {
		uint64_t now = mono_us();
		if (now >= next_tick) {
			worker_tick(w, now);
			next_tick += LG_TICK_MS * 1000;
			if (next_tick < now) /* behind: do not try to catch up in a burst */
				next_tick = now + LG_TICK_MS * 1000;
		}
		int timeout = (int)((next_tick - now) / 1000) + 1;
		int n = epoll_wait(w->ep, evs, 256, timeout);
		for (int i = 0; i < n; i++) {
			uint8_t kind = *(uint8_t *)evs[i].data.ptr;
			if (kind == K_DEAD) /* closed by an earlier event of this batch */
				continue;
			if (kind == K_CTL)
				tunnel_io(w, evs[i].data.ptr, evs[i].events);
			else if (kind == K_DATA)
				dconn_io(w, evs[i].data.ptr, evs[i].events);
			else if (kind == K_OLD)
				old_io(w, evs[i].data.ptr);
			else if (((struct player *)evs[i].data.ptr)->fd >= 0) /* not closed meanwhile */
				player_io(w, evs[i].data.ptr, evs[i].events);
		}
		graveyard_free(w);
	}
	return NULL;
}

/* After the drain: every message sent on a live pair must have arrived. Then close all. */
static void worker_finish(struct worker *w)
{
	for (uint32_t i = 0; i < w->npl; i++) {
		struct player *p = &g_pl[w->pl[i]];
		if (p->state == P_PLAYING && p->srv) {
			uint64_t lost = (uint64_t)(p->seq_tx - p->srv->seq_rx) +
					(uint64_t)(p->srv->seq_tx - p->seq_rx);
			atomic_fetch_add(&w->cnt.err[E_LOST], lost);
		}
		if (p->fd >= 0)
			player_close(w, p, P_DONE);
	}
	while (!dlist_empty(&w->dconns))
		dconn_free(w, dlist_first(&w->dconns, struct dconn, node));
	for (uint32_t i = 0; i < w->ntun; i++) {
		struct tunnel *t = &g_tun[w->tun[i]];
		if (t->old)
			old_free(w, t->old);
		t->old = NULL;
		if (t->state == T_TLS || t->state == T_UP)
			ctl_conn_free(&t->ctl);
		if (t->fd >= 0)
			close(t->fd);
		t->fd = -1;
		free(t->host);
		t->host = NULL;
	}
	graveyard_free(w);
	close(w->ep);
}

/* ---- main: options, phases, progress, summary ---- */

static uint64_t sum(size_t off)
{
	uint64_t s = 0;
	for (unsigned i = 0; i < C.threads; i++)
		s += atomic_load((atomic_uint_fast64_t *)((char *)&g_w[i].cnt + off));
	return s;
}
#define SUM(f) sum(offsetof(struct counters, f))

static uint64_t errors_total(void)
{
	uint64_t s = 0;
	for (int e = 0; e < E_COUNT; e++)
		s += sum(offsetof(struct counters, err) + (size_t)e * sizeof(atomic_uint_fast64_t));
	return s;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* JSON object of percentiles (milliseconds) of the samples all workers hold at off. */
static void print_dist(const char *name, size_t off, bool comma)
{
	size_t n = 0, k = 0;
	for (unsigned i = 0; i < C.threads; i++)
		n += ((struct samples *)((char *)&g_w[i] + off))->n;
	uint32_t *all = n ? malloc(n * sizeof(*all)) : NULL;
	for (unsigned i = 0; all && i < C.threads; i++) {
		struct samples *s = (struct samples *)((char *)&g_w[i] + off);
		memcpy(all + k, s->v, s->n * sizeof(*all));
		k += s->n;
	}
	printf("  \"%s\": {\"n\": %zu", name, all ? n : 0);
	if (all) {
		qsort(all, n, sizeof(*all), cmp_u32);
		const double q[] = {0.5, 0.9, 0.99, 0.999};
		const char *qn[] = {"p50", "p90", "p99", "p999"};
		for (int i = 0; i < 4; i++)
			printf(", \"%s_ms\": %.3f", qn[i], all[(size_t)(q[i] * (double)(n - 1))] / 1000.0);
		printf(", \"max_ms\": %.3f", all[n - 1] / 1000.0);
	}
	printf("}%s\n", comma ? "," : "");
	free(all);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: dvv-loadgen --agent-port P --player-port P --ca FILE --jwt-key FILE\n"
		"  [--tunnels N] [--players M] [--reg-rate R/s] [--join-rate R/s] [--churn-rate R/s]\n"
		"  [--threads T] [--msg-bytes B] [--interval-ms I] [--duration S] [--hold S] [--settle S]\n"
		"  [--join-timeout-ms MS] [--reg-timeout-ms MS] [--max-pending-reg N]\n"
		"  [--max-joining N] [--sub-prefix S] [--tid-prefix S] [--tunnel-offset N]\n"
		"  [--player-offset N]   (offsets: this shard's first source address index)\n");
}

static int parse(int argc, char **argv)
{
	static const struct option o[] = {
		{"agent-port", 1, 0, 'a'},   {"player-port", 1, 0, 'p'}, {"ca", 1, 0, 'c'},
		{"jwt-key", 1, 0, 'k'},	     {"tunnels", 1, 0, 'n'},	 {"players", 1, 0, 'm'},
		{"reg-rate", 1, 0, 'r'},     {"join-rate", 1, 0, 'j'},	 {"churn-rate", 1, 0, 'u'},
		{"threads", 1, 0, 't'},	     {"msg-bytes", 1, 0, 'b'},	 {"interval-ms", 1, 0, 'i'},
		{"duration", 1, 0, 'd'},     {"hold", 1, 0, 'h'},	 {"join-timeout-ms", 1, 0, 'J'},
		{"reg-timeout-ms", 1, 0, 'R'}, {"max-pending-reg", 1, 0, 'P'},
		{"max-joining", 1, 0, 'M'},  {"settle", 1, 0, 'S'},
		{"sub-prefix", 1, 0, 's'},   {"tid-prefix", 1, 0, 'T'},
		{"tunnel-offset", 1, 0, 'O'}, {"player-offset", 1, 0, 'Q'},
		{0, 0, 0, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "", o, NULL)) != -1) {
		switch (c) {
		case 'a': C.agent_port = atoi(optarg); break;
		case 'p': C.player_port = atoi(optarg); break;
		case 'c': C.ca = optarg; break;
		case 'k': C.key = optarg; break;
		case 'n': C.tunnels = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'm': C.players = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'r': C.reg_rate = atof(optarg); break;
		case 'j': C.join_rate = atof(optarg); break;
		case 'u': C.churn_rate = atof(optarg); break;
		case 't': C.threads = (unsigned)atoi(optarg); break;
		case 'b': C.msg_bytes = (unsigned)atoi(optarg); break;
		case 'i': C.interval_ms = (unsigned)atoi(optarg); break;
		case 'd': C.duration_s = (unsigned)atoi(optarg); break;
		case 'h': C.hold_s = (unsigned)atoi(optarg); break;
		case 'J': C.join_timeout_ms = (unsigned)atoi(optarg); break;
		case 'R': C.reg_timeout_ms = (unsigned)atoi(optarg); break;
		case 'P': C.max_pending_reg = (unsigned)atoi(optarg); break;
		case 'S': C.settle_s = (unsigned)atoi(optarg); break;
		case 'M': C.max_joining = (unsigned)atoi(optarg); break;
		case 's': C.sub_prefix = optarg; break;
		case 'T': C.tid_prefix = optarg; break;
		case 'O': C.tunnel_offset = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'Q': C.player_offset = (uint32_t)strtoul(optarg, NULL, 10); break;
		default: usage(); return -EINVAL;
		}
	}
	if (C.churn_rate < 0) /* default: 1% of the players per second, at least 1/s */
		C.churn_rate = C.players / 100.0 < 1 ? 1 : C.players / 100.0;
	if (!C.agent_port || !C.player_port || !C.ca || !C.key || !C.tunnels ||
	    C.tunnels > 4000000 || C.players > 16000000 || !C.threads || C.threads > 64 ||
	    C.msg_bytes < LG_MSG_MIN || C.msg_bytes > LG_MSG_MAX || C.interval_ms < LG_TICK_MS ||
	    C.reg_rate <= 0 || C.join_rate <= 0 || !C.duration_s || !C.max_pending_reg ||
	    !C.max_joining) {
		usage();
		return -EINVAL;
	}
	return 0;
}

static int read_key(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	g_key = calloc(1, LG_KEY_MAX + 1);
	g_key_len = g_key ? fread(g_key, 1, LG_KEY_MAX, f) : 0;
	fclose(f);
	return g_key_len ? 0 : -EINVAL;
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (!getrlimit(RLIMIT_NOFILE, &rl))
		fprintf(stderr, "loadgen: fd limit %llu\n", (unsigned long long)rl.rlim_cur);
}

static const char *phase_name(int ph)
{
	static const char *const n[] = {"register", "settle", "join", "steady", "drain", "stop"};
	return n[ph];
}

int main(int argc, char **argv)
{
	char err[256];
	int ret = 1;
	if (parse(argc, argv))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	raise_nofile();
	if (read_key(C.key)) {
		fprintf(stderr, "loadgen: cannot read %s\n", C.key);
		return 2;
	}
	g_tls = tls_client_ctx(C.ca, NULL, err, sizeof(err));
	g_tun = calloc(C.tunnels, sizeof(*g_tun));
	g_pl = calloc(C.players ? C.players : 1, sizeof(*g_pl));
	g_w = calloc(C.threads, sizeof(*g_w));
	if (!g_tls || !g_tun || !g_pl || !g_w) {
		fprintf(stderr, "loadgen: %s\n", g_tls ? "out of memory" : err);
		goto out;
	}
	for (unsigned i = 0; i < C.threads; i++) {
		struct worker *w = &g_w[i];
		w->id = i;
		dlist_init(&w->dconns);
		dlist_init(&w->dead_dconns);
		dlist_init(&w->dead_olds);
		w->tun = calloc(C.tunnels / C.threads + 1, sizeof(uint32_t));
		w->pl = calloc(C.players / C.threads + C.tunnels + 1, sizeof(uint32_t));
		w->ep = epoll_create1(EPOLL_CLOEXEC);
		if (!w->tun || !w->pl || w->ep < 0)
			goto out;
	}
	for (uint32_t i = 0; i < C.tunnels; i++) {
		g_tun[i] = (struct tunnel){.kind = K_CTL, .fd = -1, .idx = i, .to = home()};
		struct worker *w = &g_w[i % C.threads];
		w->tun[w->ntun++] = i;
	}
	for (uint32_t j = 0; j < C.players; j++) {
		g_pl[j] = (struct player){.kind = K_PLAYER, .fd = -1, .idx = j};
		struct worker *w = &g_w[(j % C.tunnels) % C.threads];
		w->pl[w->npl++] = j;
	}

	uint64_t t0 = mono_us(), w0 = wall_ms(), t_reg = 0, t_up = 0, t_end = 0;
	uint64_t deadline = t0 + (uint64_t)C.duration_s * 1000000;
	uint64_t w_reg = 0, w_join = 0, w_up = 0, w_drain = 0;
	atomic_store(&g_phase, PH_REGISTER);
	for (unsigned i = 0; i < C.threads; i++)
		if (pthread_create(&g_w[i].th, NULL, worker_run, &g_w[i])) {
			atomic_store(&g_phase, PH_STOP);
			for (unsigned k = 0; k < i; k++)
				pthread_join(g_w[k].th, NULL);
			goto out;
		}
	uint64_t last_joins = 0, drain_at = 0;
	for (;;) {
		usleep(100 * 1000);
		uint64_t now = mono_us();
		int ph = atomic_load(&g_phase);
		uint64_t up = SUM(tunnels_up), pup = SUM(players_up);
		if (ph == PH_REGISTER && up == C.tunnels) {
			t_reg = now - t0;
			w_reg = wall_ms();
			atomic_store(&g_phase, ph = PH_SETTLE);
		}
		if (ph == PH_SETTLE && now >= t0 + t_reg + (uint64_t)C.settle_s * 1000000) {
			w_join = wall_ms();
			atomic_store(&g_phase, ph = C.players ? PH_JOIN : PH_STEADY);
			if (!C.players)
				t_up = now, w_up = w_join;
		}
		if (ph == PH_JOIN && SUM(ramp_done) == C.players) { /* joined, or failed for good */
			t_up = now;
			w_up = wall_ms();
			atomic_store(&g_phase, ph = PH_STEADY);
		}
		bool over = now >= deadline || g_sig ||
			    (ph == PH_STEADY && now >= t_up + (uint64_t)C.hold_s * 1000000);
		if (ph < PH_DRAIN && over) {
			atomic_store(&g_phase, ph = PH_DRAIN);
			drain_at = now;
			w_drain = wall_ms();
		}
		if (ph == PH_DRAIN && now >= drain_at + LG_DRAIN_MS * 1000) {
			t_end = now;
			atomic_store(&g_phase, PH_STOP);
			break;
		}
		static uint64_t last_print;
		if (now - last_print >= 1000000) {
			uint64_t joins = SUM(joins);
			fprintf(stderr,
				"loadgen: t=%.0fs phase=%s tunnels_up=%llu/%u players_up=%llu/%u "
				"joins/s=%llu errors=%llu busy=%llu moves=%llu migrations=%llu\n",
				(now - t0) / 1e6, phase_name(ph), (unsigned long long)up, C.tunnels,
				(unsigned long long)pup, C.players,
				(unsigned long long)(joins - last_joins),
				(unsigned long long)errors_total(),
				(unsigned long long)SUM(reg_busy), (unsigned long long)SUM(moves),
				(unsigned long long)SUM(migrations));
			last_joins = joins;
			last_print = now;
		}
	}
	for (unsigned i = 0; i < C.threads; i++)
		pthread_join(g_w[i].th, NULL);
	uint64_t players_up_end = SUM(players_up), tunnels_up_end = SUM(tunnels_up);
	for (unsigned i = 0; i < C.threads; i++)
		worker_finish(&g_w[i]);
	uint64_t errs = errors_total();

	printf("{\n  \"tunnels\": %u, \"players\": %u, \"threads\": %u, \"msg_bytes\": %u, "
	       "\"interval_ms\": %u,\n",
	       C.tunnels, C.players, C.threads, C.msg_bytes, C.interval_ms);
	printf("  \"tunnels_up\": %llu, \"players_up\": %llu, \"players_peak_ok\": %s,\n",
	       (unsigned long long)tunnels_up_end, (unsigned long long)players_up_end,
	       players_up_end == C.players ? "true" : "false");
	printf("  \"register_s\": %.3f, \"all_players_up_s\": %.3f, \"run_s\": %.3f,\n",
	       t_reg ? t_reg / 1e6 : -1.0, t_up ? (t_up - t0) / 1e6 : -1.0, (t_end - t0) / 1e6);
	printf("  \"wall_ms\": {\"start\": %llu, \"registered\": %llu, \"joining\": %llu, "
	       "\"players_up\": %llu, \"drain\": %llu},\n",
	       (unsigned long long)w0, (unsigned long long)w_reg, (unsigned long long)w_join,
	       (unsigned long long)w_up, (unsigned long long)w_drain);
	printf("  \"joins\": %llu, \"reg_busy\": %llu, \"pool_retired\": %llu, \"data_opened\": "
	       "%llu, \"msgs_tx\": %llu, \"msgs_rx\": %llu,\n",
	       (unsigned long long)SUM(joins), (unsigned long long)SUM(reg_busy),
	       (unsigned long long)SUM(pool_retired), (unsigned long long)SUM(data_opened),
	       (unsigned long long)SUM(msgs_tx), (unsigned long long)SUM(msgs_rx));
	printf("  \"moves\": %llu, \"migrations\": %llu, \"migrated\": %llu, \"old_lost_quiet\": "
	       "%llu, \"replans\": %llu, \"join_reconnecting\": %llu,\n",
	       (unsigned long long)SUM(moves), (unsigned long long)SUM(migrations),
	       (unsigned long long)SUM(migrated), (unsigned long long)SUM(old_lost_quiet),
	       (unsigned long long)SUM(replans), (unsigned long long)SUM(join_reconnecting));
	print_dist("register_latency", offsetof(struct worker, reg), true);
	print_dist("join_latency_ramp", offsetof(struct worker, join_ramp), true);
	print_dist("join_latency_steady", offsetof(struct worker, join_steady), true);
	printf("  \"errors\": {");
	for (int e = 0; e < E_COUNT; e++)
		printf("%s\"%s\": %llu", e ? ", " : "", err_name[e],
		       (unsigned long long)sum(offsetof(struct counters, err) +
					       (size_t)e * sizeof(atomic_uint_fast64_t)));
	printf("},\n  \"errors_total\": %llu\n}\n", (unsigned long long)errs);
	fflush(stdout);
	ret = errs || !t_up || players_up_end != C.players || tunnels_up_end != C.tunnels ? 1 : 0;
out:
	for (unsigned i = 0; g_w && i < C.threads; i++) {
		free(g_w[i].tun);
		free(g_w[i].pl);
		free(g_w[i].join_ramp.v);
		free(g_w[i].join_steady.v);
		free(g_w[i].reg.v);
	}
	free(g_w);
	free(g_tun);
	free(g_pl);
	if (g_key)
		OPENSSL_cleanse(g_key, LG_KEY_MAX);
	free(g_key);
	if (g_tls)
		SSL_CTX_free(g_tls);
	return ret;
}
