/* Data-plane benchmark harness (driven by bench/run.sh).
 *
 * Servers (run until SIGINT/SIGTERM):
 *   dp_bench relay --plane bpf|userspace --listen PORT --target PORT [--pool N]
 *       the relay hop alone: accept on 127.0.0.1:PORT, take a connection to 127.0.0.1:TARGET
 *       (from a pool of N pre-opened ones, as the relay does with agent data connections, or
 *       dialled on demand with --pool 0) and join the two through the data plane. Runs until
 *       SIGINT/SIGTERM, then stops the plane (and removes its pins). The bpf plane's counters
 *       (throttles, demoted pairs, ...) go to stderr on SIGUSR1 and at exit.
 *   dp_bench echo --listen PORT [--stats PORT]
 *       echo server (epoll, one thread); the stats port answers as the sink's does, "bytes"
 *       being what it received (and so echoed).
 *   dp_bench sink --listen PORT --stats PORT
 *       discard server (epoll, one thread). Every connection to the stats port is answered with
 *       one line "bytes=B conns=C ns=T cpu=K" (bytes received so far, connections open now,
 *       CLOCK_MONOTONIC, machine-wide sys + irq + softirq ticks, all read at once) and closed.
 *   dp_bench fakeagent --relay PORT --ca FILE --token-file FILE --mode sink|echo [--stats PORT]
 *       a minimal agent speaking the real protocol to a real dvv-relay on 127.0.0.1:PORT:
 *       TLS control channel (common/ctlconn.c) with HELLO + JWT, WELCOME, answers PING; for
 *       every ATTACH token a data connection "DVVA"+token; reads exactly the player header
 *       "DVVP" (common/proto.c) and then sinks or echoes the player's bytes itself (no local
 *       server, no second hop), so the relay's own cost is isolated. Prints
 *       "ready hostname=NAME" once the tunnel is up.
 *
 * Clients (print one line of results):
 *   dp_bench stream --connect PORT --stats PORT [--streams N] [--time S] [--warmup S]
 *                   [--host NAME] [--pids PID,PID..] [--echo 1] [--idle N]
 *       N parallel streams of bulk data for S seconds (after a warm-up), one thread. Throughput
 *       is what the sink counted (its stats port) over the window, not what was sent (a
 *       redirect queue can hold a lot); system CPU = machine-wide sys + irq + softirq
 *       (/proc/stat) over the same window. Prints "stream gbit=.. cpu_s_per_gb=.. ...", and
 *       with --pids each process's own user + system CPU per GB over the window.
 *       --echo 1: both ways, as a game is: the server is an echo server (its stats port), every
 *       stream also reads all that comes back. gbit is what came back to the client in the
 *       window (one direction; the other carried as much), cpu_s_per_gb the machine's system
 *       CPU over both directions' bytes (echoed by the server + received back by the client).
 *       --idle N: the server holds N connections that are not the client's (a relay hop's
 *       pool): the server counts as drained, before and after the run, at N instead of 0.
 *   dp_bench rtt --connect PORT [--count N] [--size B] [--host NAME]
 *       one connection, N ping-pongs of B bytes: prints "rtt_us min=.. p50=.. p99=..".
 *   dp_bench setup --connect PORT [--count N] [--host NAME]
 *       N sequential connections, each: connect, (handshake +) 1 byte out, all of it echoed
 *       back, close; prints "setup_us min=.. p50=.. p99=..".
 *   --host NAME: every connection first sends a Minecraft handshake (packet 0x00, next state 2
 *       login, host NAME), as a player reaching dvv-relay must; echo servers send it back, and
 *       the clients read it back before they start (rtt) or as part of the round (setup).
 */
#include "config.h"
#include "ctlconn.h"
#include "dataplane.h"
#include "dp_bpf.h"
#include "log.h"
#include "mc.h"
#include "proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop, g_report;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		g_report = 1;
	else
		g_stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct sockaddr_in loopback(int port)
{
	return (struct sockaddr_in){.sin_family = AF_INET,
				    .sin_port = htons((uint16_t)port),
				    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
}

static int listen_on(int port)
{
	struct sockaddr_in sa = loopback(port);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1024) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int dial_opt(int port, bool nodelay)
{
	struct sockaddr_in sa = loopback(port);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (nodelay)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int dial(int port) { return dial_opt(port, true); }

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* The planes take non-blocking sockets, as the relay hands them (splice(2) follows the socket's
 * O_NONBLOCK, not SPLICE_F_NONBLOCK). */
static int dial_nonblocking(int port)
{
	int fd = dial(port);
	if (fd >= 0)
		set_nonblocking(fd);
	return fd;
}

static const char *arg(int argc, char **argv, const char *name, const char *def)
{
	for (int i = 2; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return def;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void print_dist(const char *what, uint64_t *ns, int n)
{
	qsort(ns, (size_t)n, sizeof(*ns), cmp_u64);
	printf("%s min=%.1f p50=%.1f p99=%.1f n=%d\n", what, (double)ns[0] / 1e3,
	       (double)ns[n / 2] / 1e3, (double)ns[(n * 99) / 100] / 1e3, n);
}

static int full_io(int fd, char *buf, size_t len, bool out)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = out ? send(fd, buf + off, len - off, MSG_NOSIGNAL)
				: recv(fd, buf + off, len - off, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

/* Minecraft handshake (docs/protocol.md, "Player side"): VarInt frame length, VarInt packet id
 * 0x00, VarInt protocol, String host, u16 port, VarInt next state (2: login). Returns its
 * length, 0 without a host. */
static size_t mc_handshake(const char *host, uint8_t *out, size_t cap)
{
	uint8_t body[MC_HANDSHAKE_MAX];
	size_t hl = host ? strlen(host) : 0, n = 0;
	if (!hl || hl > MC_HOST_MAX || cap < MC_HANDSHAKE_MAX)
		return 0;
	n += (size_t)mc_varint_write(body + n, 0x00);
	n += (size_t)mc_varint_write(body + n, 767); /* 1.21 */
	n += (size_t)mc_varint_write(body + n, (int32_t)hl);
	memcpy(body + n, host, hl);
	n += hl;
	body[n++] = 25565 >> 8;
	body[n++] = 25565 & 0xff;
	n += (size_t)mc_varint_write(body + n, MC_NEXT_LOGIN);
	size_t m = (size_t)mc_varint_write(out, (int32_t)n);
	memcpy(out + m, body, n);
	return m + n;
}

/* ---- relay: the hop alone ---- */

/* The bpf plane's counters, as dvv-relay's /metrics shows them (on SIGUSR1 and at exit). */
static void relay_report(const struct dataplane *dp)
{
	struct dvv_splice_stats st;
	if (dp->ops != &dp_bpf_ops || dp_bpf_stats(dp, &st, false))
		return;
	fprintf(stderr,
		"bpf: pairs=%llu demoted=%llu throttles=%llu unthrottles=%llu cut_lag=%llu "
		"cut_error=%llu user_bytes=%llu redirect_skbs=%llu redirect_bytes=%llu\n",
		(unsigned long long)st.pairs_total, (unsigned long long)st.pairs_demoted,
		(unsigned long long)st.throttles, (unsigned long long)st.unthrottles,
		(unsigned long long)st.cut_lag, (unsigned long long)st.cut_error,
		(unsigned long long)st.user_bytes,
		(unsigned long long)st.verdicts[DVV_V_REDIRECT].skbs,
		(unsigned long long)st.verdicts[DVV_V_REDIRECT].bytes);
}

static int run_relay(int argc, char **argv)
{
	const char *plane = arg(argc, argv, "--plane", "bpf");
	int port = atoi(arg(argc, argv, "--listen", "0"));
	int target = atoi(arg(argc, argv, "--target", "0"));
	int pool_want = atoi(arg(argc, argv, "--pool", "0"));
	struct relay_cfg cfg;
	struct dataplane dp = {0};
	int pool[256], npool = 0;
	if (pool_want > 256)
		pool_want = 256;
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.bpf_pin_root, sizeof(cfg.bpf_pin_root), "/sys/fs/bpf/dvv");
	snprintf(cfg.instance_id, sizeof(cfg.instance_id), "%s",
		 arg(argc, argv, "--instance", "dp-bench"));
	snprintf(cfg.dataplane, sizeof(cfg.dataplane), "%s", plane);
	cfg.max_lag_mb = atoi(arg(argc, argv, "--max-lag-mb", "64"));
	cfg.workers = atoi(arg(argc, argv, "--workers", "0"));
	dp.ops = !strcmp(plane, "bpf") ? &dp_bpf_ops : &dp_userspace_ops;
	int rc = dp.ops->start(&dp, &cfg);
	if (rc) {
		fprintf(stderr, "dp_bench: plane %s: %s\n", plane, strerror(-rc));
		return 1;
	}
	int lfd = listen_on(port);
	if (lfd < 0) {
		perror("dp_bench: listen");
		dp.ops->stop(&dp);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (!g_stop) {
		while (npool < pool_want) {
			int fd = dial_nonblocking(target);
			if (fd < 0)
				break;
			pool[npool++] = fd;
		}
		int pfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (g_report) {
			g_report = 0;
			relay_report(&dp);
		}
		if (pfd < 0)
			continue; /* EINTR on stop or report */
		int one = 1;
		setsockopt(pfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		int afd = npool ? pool[--npool] : dial_nonblocking(target);
		if (afd < 0) {
			close(pfd);
			continue;
		}
		dp.ops->join(&dp, pfd, afd, 1);
	}
	while (npool)
		close(pool[--npool]);
	close(lfd);
	relay_report(&dp);
	dp.ops->stop(&dp);
	return 0;
}

/* ---- servers: sink / echo, and the fake agent ---- */

enum item_kind { K_LISTEN, K_STATS, K_SERVE, K_CTL, K_DATA_IDLE };
enum serve_mode { M_SINK, M_ECHO };

struct item {
	enum item_kind kind;
	int fd;
	size_t have, need; /* K_DATA_IDLE: player header read so far / wanted */
	uint8_t hdr[DATA_HDR_FIXED + DATA_HDR_BODY_MAX];
	char *pend;	   /* echo: bytes read but not yet sent back (ECHO_CHUNK, malloc'd) */
	size_t plen, poff;
	bool out;	   /* echo: waiting for EPOLLOUT instead of EPOLLIN */
};

#define ECHO_CHUNK 65536

static struct {
	int ep;
	enum serve_mode mode;
	uint64_t bytes; /* received on served connections */
	unsigned conns; /* served connections open */
	char buf[256 * 1024];
} S;

static struct item *item_add(int fd, enum item_kind kind)
{
	struct item *it = calloc(1, sizeof(*it));
	if (!it) {
		close(fd);
		return NULL;
	}
	it->fd = fd;
	it->kind = kind;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = it};
	if (epoll_ctl(S.ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		free(it);
		return NULL;
	}
	return it;
}

static void item_close(struct item *it)
{
	epoll_ctl(S.ep, EPOLL_CTL_DEL, it->fd, NULL);
	close(it->fd);
	if (it->kind == K_SERVE)
		S.conns--;
	free(it->pend);
	free(it);
}

/* Echo without ever blocking: what the peer cannot take yet waits in it->pend and the
 * connection is not read again until it went out (EPOLLOUT), so one slow path back never stalls
 * the other connections (or the stats port) of this one-thread server. Returns 0, 1 while
 * bytes wait, -1 on error. */
static int echo_flush(struct item *it)
{
	while (it->poff < it->plen) {
		ssize_t w = send(it->fd, it->pend + it->poff, it->plen - it->poff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			it->poff += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			if (!it->out) {
				struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = it};
				epoll_ctl(S.ep, EPOLL_CTL_MOD, it->fd, &ev);
				it->out = true;
			}
			return 1;
		}
		return -1;
	}
	it->plen = it->poff = 0;
	if (it->out) { /* all went out: read again */
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = it};
		epoll_ctl(S.ep, EPOLL_CTL_MOD, it->fd, &ev);
		it->out = false;
	}
	return 0;
}

/* A served connection is readable (or, echoing, writable again): sink or echo what came. */
static void serve_io(struct item *it)
{
	if (S.mode == M_ECHO) {
		if (!it->pend && !(it->pend = malloc(ECHO_CHUNK))) {
			item_close(it);
			return;
		}
		for (int round = 0; round < 8; round++) {
			int f = echo_flush(it);
			if (f) {
				if (f < 0)
					item_close(it);
				return;
			}
			ssize_t r = recv(it->fd, it->pend, ECHO_CHUNK, MSG_DONTWAIT);
			if (r > 0) {
				S.bytes += (uint64_t)r;
				it->plen = (size_t)r;
				it->poff = 0;
				continue;
			}
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			item_close(it); /* EOF or error */
			return;
		}
		if (echo_flush(it) < 0)
			item_close(it);
		return;
	}
	/* a sink takes one buffer per event (level-triggered): every stream and the stats port
	 * get their turn within a few milliseconds */
	for (int round = 0; round < 1; round++) {
		ssize_t r = recv(it->fd, S.buf, sizeof(S.buf), MSG_DONTWAIT);
		if (r > 0) {
			S.bytes += (uint64_t)r;
			continue;
		}
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		item_close(it); /* EOF or error */
		return;
	}
}

static uint64_t cpu_sys_ticks(void) /* system + irq + softirq, machine-wide */
{
	unsigned long long u, ni, sy, id, io, irq, sirq;
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return 0;
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &u, &ni, &sy, &id, &io, &irq,
		       &sirq);
	fclose(f);
	return n == 7 ? sy + irq + sirq : 0;
}

static void stats_answer(int lfd)
{
	int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return;
	char line[128];
	int n = snprintf(line, sizeof(line), "bytes=%llu conns=%u ns=%llu cpu=%llu\n",
			 (unsigned long long)S.bytes, S.conns, (unsigned long long)now_ns(),
			 (unsigned long long)cpu_sys_ticks());
	full_io(c, line, (size_t)n, true);
	close(c);
}

static void served(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct item *it = item_add(fd, K_SERVE);
	if (it)
		S.conns++;
}

static int run_server(int argc, char **argv, enum serve_mode mode)
{
	int lfd = listen_on(atoi(arg(argc, argv, "--listen", "0")));
	int sport = atoi(arg(argc, argv, "--stats", "0"));
	int sfd = sport ? listen_on(sport) : -1;
	S.mode = mode;
	S.ep = epoll_create1(EPOLL_CLOEXEC);
	if (lfd < 0 || S.ep < 0 || (sport && sfd < 0) || !item_add(lfd, K_LISTEN) ||
	    (sfd >= 0 && !item_add(sfd, K_STATS))) {
		perror("dp_bench server");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	struct epoll_event evs[64];
	while (!g_stop) {
		int n = epoll_wait(S.ep, evs, 64, 500);
		for (int i = 0; i < n; i++) {
			struct item *it = evs[i].data.ptr;
			if (it->kind == K_LISTEN) {
				int c = accept4(it->fd, NULL, NULL, SOCK_CLOEXEC);
				if (c >= 0)
					served(c);
			} else if (it->kind == K_STATS) {
				stats_answer(it->fd);
			} else {
				serve_io(it);
			}
		}
	}
	return 0;
}

/* The fake agent. */
static struct {
	int relay_port;
	struct ctl_conn ctl;
	struct item *ctl_item;
	uint32_t ping_ms;
	uint64_t next_ping;
	bool up;
	unsigned data_opened, data_failed, players;
} FA;

static void fa_data_open(const uint8_t token[ATTACH_TOKEN_LEN])
{
	uint8_t pre[DATA_ATTACH_LEN];
	int fd = dial(FA.relay_port); /* TCP_NODELAY, as the agent's net_tune_stream */
	memcpy(pre, DATA_ATTACH_MAGIC, 4);
	memcpy(pre + 4, token, ATTACH_TOKEN_LEN);
	if (fd < 0 || full_io(fd, (char *)pre, sizeof(pre), true)) {
		if (fd >= 0)
			close(fd);
		FA.data_failed++;
		return;
	}
	struct item *it = item_add(fd, K_DATA_IDLE);
	if (!it)
		return;
	it->need = DATA_HDR_FIXED;
	FA.data_opened++;
}

/* Idle data connection readable: the player header, exactly (the player's bytes follow). */
static void fa_data_hdr(struct item *it)
{
	while (it->have < it->need) {
		ssize_t r = recv(it->fd, it->hdr + it->have, it->need - it->have, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			item_close(it); /* the relay retired it */
			return;
		}
		it->have += (size_t)r;
		if (it->have == DATA_HDR_FIXED && it->need == DATA_HDR_FIXED) {
			int body = data_hdr_fixed(it->hdr);
			if (body < 0) {
				fprintf(stderr, "fakeagent: bad player header\n");
				item_close(it);
				return;
			}
			it->need = DATA_HDR_FIXED + (size_t)body;
		}
	}
	struct data_hdr h;
	if (data_hdr_body(it->hdr + DATA_HDR_FIXED, it->need - DATA_HDR_FIXED, &h)) {
		fprintf(stderr, "fakeagent: bad player header body\n");
		item_close(it);
		return;
	}
	it->kind = K_SERVE;
	S.conns++;
	FA.players++;
}

static int fa_on_msg(struct ctl_conn *c, const struct ctl_msg *m)
{
	switch (m->type) {
	case CTL_WELCOME:
		FA.up = true;
		FA.ping_ms = m->u.welcome.ping_ms ? m->u.welcome.ping_ms : 15000;
		FA.next_ping = now_ns() / 1000000 + FA.ping_ms;
		printf("ready hostname=%s tunnel=%s\n", m->u.welcome.hostname, m->u.welcome.tunnel);
		fflush(stdout);
		return 0;
	case CTL_ERROR:
		fprintf(stderr, "fakeagent: relay error %s: %s\n", m->u.error.code,
			m->u.error.message);
		return 1;
	case CTL_ATTACH:
		for (uint32_t i = 0; i < m->u.attach.n; i++)
			fa_data_open(m->u.attach.tokens[i]);
		return 0;
	case CTL_PING: {
		struct ctl_msg pong = {.type = CTL_PONG};
		pong.u.ping.t = m->u.ping.t;
		return ctl_conn_send(c, &pong) ? 1 : 0;
	}
	case CTL_MOVE:
	case CTL_GOODBYE:
		fprintf(stderr, "fakeagent: relay sent %s\n", ctl_type_name(m->type));
		return 1;
	default:
		return 0;
	}
}

static int fa_ctl_events(int rc)
{
	if (rc < 0) {
		fprintf(stderr, "fakeagent: control channel: %s\n",
			FA.ctl.err[0] ? FA.ctl.err : strerror(-rc));
		return -1;
	}
	struct epoll_event ev = {.events = (uint32_t)rc, .data.ptr = FA.ctl_item};
	epoll_ctl(S.ep, EPOLL_CTL_MOD, FA.ctl.fd, &ev);
	return 0;
}

static int run_fakeagent(int argc, char **argv)
{
	const char *ca = arg(argc, argv, "--ca", NULL), *tf = arg(argc, argv, "--token-file", NULL);
	const char *mode = arg(argc, argv, "--mode", "sink");
	int sport = atoi(arg(argc, argv, "--stats", "0"));
	char err[256], token[CTL_TOKEN_MAX + 2];
	FA.relay_port = atoi(arg(argc, argv, "--relay", "0"));
	S.mode = !strcmp(mode, "echo") ? M_ECHO : M_SINK;
	FILE *f = tf ? fopen(tf, "r") : NULL;
	if (!ca || !f || !fgets(token, sizeof(token), f)) {
		fprintf(stderr, "fakeagent: needs --ca FILE --token-file FILE --relay PORT\n");
		return 2;
	}
	fclose(f);
	token[strcspn(token, "\r\n")] = 0;
	if (strlen(token) > CTL_TOKEN_MAX) {
		fprintf(stderr, "fakeagent: token longer than %d bytes\n", CTL_TOKEN_MAX);
		return 2;
	}
	SSL_CTX *ctx = tls_client_ctx(ca, NULL, err, sizeof(err));
	S.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!ctx || S.ep < 0) {
		fprintf(stderr, "fakeagent: %s\n", ctx ? strerror(errno) : err);
		return 1;
	}
	int sfd = sport ? listen_on(sport) : -1;
	if (sport && (sfd < 0 || !item_add(sfd, K_STATS))) {
		perror("fakeagent: stats port");
		return 1;
	}
	int fd = -1;
	for (int i = 0; i < 100 && fd < 0 && !g_stop; i++) /* the relay may still be starting */
		if ((fd = dial(FA.relay_port)) < 0)
			usleep(100 * 1000);
	if (fd < 0) {
		fprintf(stderr, "fakeagent: cannot reach the relay on port %d\n", FA.relay_port);
		return 1;
	}
	set_nonblocking(fd);
	if (ctl_conn_init(&FA.ctl, ctx, fd, false, "127.0.0.1")) {
		fprintf(stderr, "fakeagent: TLS init failed\n");
		return 1;
	}
	FA.ctl.on_msg = fa_on_msg;
	struct ctl_msg *hello = calloc(1, sizeof(*hello));
	if (!hello)
		return 1;
	hello->type = CTL_HELLO;
	hello->u.hello.proto = CTL_VERSION;
	memcpy(hello->u.hello.token, token, strlen(token) + 1);
	snprintf(hello->u.hello.agent, sizeof(hello->u.hello.agent), "dp_bench-fakeagent");
	int rc = ctl_conn_send(&FA.ctl, hello);
	free(hello);
	if (rc || !(FA.ctl_item = item_add(fd, K_CTL)))
		return 1;
	if (fa_ctl_events(ctl_conn_io(&FA.ctl)))
		return 1;
	uint64_t deadline = now_ns() + 15000000000ull; /* WELCOME within 15 s */
	struct epoll_event evs[64];
	while (!g_stop) {
		if (!FA.up && now_ns() > deadline) {
			fprintf(stderr, "fakeagent: no WELCOME within 15 s\n");
			return 1;
		}
		int n = epoll_wait(S.ep, evs, 64, 500);
		for (int i = 0; i < n; i++) {
			struct item *it = evs[i].data.ptr;
			switch (it->kind) {
			case K_CTL:
				if (fa_ctl_events(ctl_conn_io(&FA.ctl)))
					return 1;
				break;
			case K_STATS:
				stats_answer(it->fd);
				break;
			case K_DATA_IDLE:
				fa_data_hdr(it);
				break;
			default:
				serve_io(it);
			}
		}
		if (FA.up && now_ns() / 1000000 >= FA.next_ping) {
			struct ctl_msg ping = {.type = CTL_PING};
			ping.u.ping.t = now_ns() / 1000000;
			FA.next_ping = ping.u.ping.t + FA.ping_ms;
			if (ctl_conn_send(&FA.ctl, &ping) || fa_ctl_events(ctl_conn_flush(&FA.ctl)))
				return 1;
		}
	}
	fprintf(stderr, "fakeagent: data connections opened %u (failed %u), players %u\n",
		FA.data_opened, FA.data_failed, FA.players);
	ctl_conn_free(&FA.ctl);
	close(fd);
	SSL_CTX_free(ctx);
	return 0;
}

/* ---- clients ---- */

/* One line from a sink's stats port: 0 and the counters (*ns: the sink's CLOCK_MONOTONIC when
 * it read them, the same clock as ours), or -1. */
static int sink_stats_at(int port, uint64_t *bytes, unsigned *conns, uint64_t *ns, uint64_t *cpu)
{
	int fd = dial(port);
	char line[128];
	size_t len = 0;
	if (fd < 0)
		return -1;
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (;;) {
		ssize_t n = recv(fd, line + len, sizeof(line) - 1 - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	line[len] = 0;
	unsigned long long b, t, c;
	if (sscanf(line, "bytes=%llu conns=%u ns=%llu cpu=%llu", &b, conns, &t, &c) != 4)
		return -1;
	*bytes = b;
	if (ns)
		*ns = t;
	if (cpu)
		*cpu = c;
	return 0;
}

static int sink_stats(int port, uint64_t *bytes, unsigned *conns)
{
	return sink_stats_at(port, bytes, conns, NULL, NULL);
}

static int wait_conns(int port, unsigned want, bool at_least, double max_s)
{
	uint64_t b, until = now_ns() + (uint64_t)(max_s * 1e9);
	unsigned c = 0;
	do {
		if (!sink_stats(port, &b, &c) && (at_least ? c >= want : c <= want))
			return 0;
		usleep(20 * 1000);
	} while (now_ns() < until);
	fprintf(stderr, "dp_bench stream: sink has %u connections after %.0f s, waited for %s%u\n",
		c, max_s, at_least ? ">= " : "<= ", want);
	return -1;
}


/* utime + stime of a process (all its threads), in ticks; 0 if it is gone */
static uint64_t proc_ticks(int pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')'); /* comm may hold spaces */
	unsigned long long ut = 0, st = 0;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			 &st) != 2)
		return 0;
	return ut + st;
}

#define MAX_PIDS 8

static int run_stream(int argc, char **argv)
{
	int port = atoi(arg(argc, argv, "--connect", "0"));
	int sport = atoi(arg(argc, argv, "--stats", "0"));
	int n = atoi(arg(argc, argv, "--streams", "1"));
	double secs = atof(arg(argc, argv, "--time", "10"));
	double warm = atof(arg(argc, argv, "--warmup", "1"));
	uint8_t hs[MC_HANDSHAKE_MAX];
	size_t hslen = mc_handshake(arg(argc, argv, "--host", NULL), hs, sizeof(hs));
	static char buf[128 * 1024], rbuf[256 * 1024];
	bool echo = atoi(arg(argc, argv, "--echo", "0")) != 0;
	/* connections the server holds that are not ours (a relay hop's pool of idle upstream
	 * connections): "drained" means down to that many */
	unsigned idle = (unsigned)atoi(arg(argc, argv, "--idle", "0"));
	uint64_t rx = 0, rx0 = 0, rx1 = 0; /* --echo: bytes that came back */
	int pids[MAX_PIDS], npids = 0;
	uint64_t p0[MAX_PIDS], p1[MAX_PIDS];
	for (const char *p = arg(argc, argv, "--pids", ""); *p && npids < MAX_PIDS;) {
		pids[npids++] = atoi(p);
		p += strcspn(p, ",");
		p += *p == ',';
	}
	if (n < 1 || n > 4096 || secs <= 0 || !sport) {
		fprintf(stderr, "dp_bench stream: bad arguments\n");
		return 2;
	}
	memset(buf, 'x', sizeof(buf));
	if (wait_conns(sport, idle, false, 20))
		return 1;
	int *fds = calloc((size_t)n, sizeof(*fds));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (!fds || ep < 0)
		return 1;
	for (int i = 0; i < n; i++) {
		/* bulk senders: no TCP_NODELAY, as iperf3 */
		if ((fds[i] = dial_opt(port, false)) < 0 ||
		    (hslen && full_io(fds[i], (char *)hs, hslen, true))) {
			fprintf(stderr, "dp_bench stream: connection %d failed: %s\n", i,
				strerror(errno));
			return 1;
		}
		set_nonblocking(fds[i]);
		/* level-triggered, a few buffers per turn: a stream whose reader keeps up would
		 * never return EAGAIN, and the clock must be looked at */
		struct epoll_event ev = {.events = EPOLLOUT | (echo ? EPOLLIN : 0),
					 .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
	}
	/* every stream reached the sink (through the relay: joined to a data connection) */
	if (wait_conns(sport, (unsigned)n, true, 20))
		return 1;
	uint64_t t_start = now_ns(), t0 = 0, t1 = 0, b0 = 0, b1 = 0, c0 = 0, c1 = 0;
	uint64_t t_warm = t_start + (uint64_t)(warm * 1e9), t_end = UINT64_MAX;
	unsigned conns, dead = 0;
	struct epoll_event evs[256];
	while (!g_stop) {
		uint64_t now = now_ns();
		/* the window is the sink's: bytes, time and machine CPU as it read them at once
		 * (its answer may come late under load; the counters are right regardless) */
		if (!t0 && now >= t_warm) {
			for (int i = 0; i < npids; i++)
				p0[i] = proc_ticks(pids[i]);
			if (sink_stats_at(sport, &b0, &conns, &t0, &c0))
				return 1;
			rx0 = rx;
			t_end = t0 + (uint64_t)(secs * 1e9);
		}
		if (t0 && now >= t_end) {
			for (int i = 0; i < npids; i++)
				p1[i] = proc_ticks(pids[i]);
			if (sink_stats_at(sport, &b1, &conns, &t1, &c1))
				return 1;
			rx1 = rx;
			break;
		}
		int k = epoll_wait(ep, evs, 256, 10);
		for (int e = 0; e < k; e++) {
			int i = (int)evs[e].data.u32;
			if (fds[i] < 0)
				continue;
			/* both ways: take what came back first, so the echo server never waits on
			 * us (a few buffers per turn, as for sending) */
			for (int round = 0; echo && (evs[e].events & EPOLLIN) && round < 4;
			     round++) {
				ssize_t r = recv(fds[i], rbuf, sizeof(rbuf), MSG_DONTWAIT);
				if (r > 0) {
					rx += (uint64_t)r;
					continue;
				}
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					break;
				fprintf(stderr, "dp_bench stream: stream %d: %s\n", i,
					r ? strerror(errno) : "closed by the far end");
				epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
				close(fds[i]);
				fds[i] = -1;
				dead++;
				break;
			}
			if (fds[i] < 0 || !(evs[e].events & EPOLLOUT))
				continue;
			for (int round = 0; round < 4; round++) {
				ssize_t w = send(fds[i], buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT);
				if (w > 0 || (w < 0 && errno == EINTR))
					continue;
				if (w < 0 && errno == EAGAIN)
					break;
				fprintf(stderr, "dp_bench stream: stream %d: %s\n", i,
					strerror(errno));
				epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
				close(fds[i]);
				fds[i] = -1;
				dead++;
				break;
			}
		}
	}
	if (!t1)
		return 1;
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	close(ep);
	/* one way: what the sink took; both ways: what came back, and the CPU is spread over
	 * the bytes of both directions */
	double dt = (double)(t1 - t0) / 1e9, gb = (double)(b1 - b0) / 1e9;
	double gb_back = (double)(rx1 - rx0) / 1e9, gb_cpu = echo ? gb + gb_back : gb;
	if (echo)
		gb = gb_back;
	double cpu = (double)(c1 - c0) / (double)sysconf(_SC_CLK_TCK);
	/* let the path drain and close before the next measurement */
	uint64_t td = now_ns();
	wait_conns(sport, idle, false, 30);
	/* per process: user + system CPU seconds per GB, e.g. pcpu_1234=0.250 */
	char pc[MAX_PIDS * 32] = "";
	for (int i = 0, off = 0; i < npids; i++)
		off += snprintf(pc + off, sizeof(pc) - (size_t)off, " pcpu_%d=%.3f", pids[i],
				gb_cpu > 0 ? (double)(p1[i] - p0[i]) / (double)sysconf(_SC_CLK_TCK) /
						     gb_cpu
					   : 0);
	printf("stream gbit=%.2f cpu_s_per_gb=%.3f bytes=%llu secs=%.2f cpu_s=%.2f streams=%d "
	       "dead=%u drain_s=%.2f%s%s\n",
	       gb * 8 / dt, gb_cpu > 0 ? cpu / gb_cpu : 0, (unsigned long long)(b1 - b0), dt, cpu,
	       n, dead, (double)(now_ns() - td) / 1e9, echo ? " both_ways=1" : "", pc);
	free(fds);
	return dead ? 1 : 0;
}

static int run_rtt(int argc, char **argv)
{
	int port = atoi(arg(argc, argv, "--connect", "0"));
	int count = atoi(arg(argc, argv, "--count", "20000"));
	size_t size = (size_t)atoi(arg(argc, argv, "--size", "64"));
	uint8_t hs[MC_HANDSHAKE_MAX];
	size_t hslen = mc_handshake(arg(argc, argv, "--host", NULL), hs, sizeof(hs));
	char buf[4096];
	uint64_t *ns = calloc((size_t)count, sizeof(*ns));
	int fd = dial(port);
	if (fd < 0 || !ns || size > sizeof(buf) || count < 1) {
		perror("dp_bench rtt");
		return 1;
	}
	struct timeval tv = {.tv_sec = 10}; /* bounded: a lost byte fails the run */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (hslen && (full_io(fd, (char *)hs, hslen, true) || full_io(fd, buf, hslen, false))) {
		fprintf(stderr, "dp_bench rtt: handshake not echoed\n");
		return 1;
	}
	memset(buf, 'p', sizeof(buf));
	for (int i = 0; i < count + 100; i++) { /* 100 warm-up rounds */
		uint64_t t0 = now_ns();
		if (full_io(fd, buf, size, true) || full_io(fd, buf, size, false)) {
			fprintf(stderr, "dp_bench rtt: connection lost at round %d\n", i);
			return 1;
		}
		if (i >= 100)
			ns[i - 100] = now_ns() - t0;
	}
	close(fd);
	print_dist("rtt_us", ns, count);
	free(ns);
	return 0;
}

static int run_setup(int argc, char **argv)
{
	int port = atoi(arg(argc, argv, "--connect", "0"));
	int count = atoi(arg(argc, argv, "--count", "2000"));
	uint64_t *ns = calloc((size_t)count, sizeof(*ns));
	uint8_t hs[MC_HANDSHAKE_MAX + 1];
	size_t len = mc_handshake(arg(argc, argv, "--host", NULL), hs, sizeof(hs) - 1);
	char back[sizeof(hs)];
	if (!ns || count < 1)
		return 1;
	hs[len++] = 's'; /* the first byte after the handshake */
	for (int i = 0; i < count; i++) {
		uint64_t t0 = now_ns();
		int fd = dial(port);
		if (fd >= 0) {
			struct timeval tv = {.tv_sec = 10};
			setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		}
		if (fd < 0 || full_io(fd, (char *)hs, len, true) || full_io(fd, back, len, false)) {
			fprintf(stderr, "dp_bench setup: connection %d failed\n", i);
			return 1;
		}
		ns[i] = now_ns() - t0;
		close(fd);
	}
	print_dist("setup_us", ns, count);
	free(ns);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: accept() returns */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	log_init("dp_bench", LOG_WARN);
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "relay"))
		return run_relay(argc, argv);
	if (!strcmp(mode, "echo"))
		return run_server(argc, argv, M_ECHO);
	if (!strcmp(mode, "sink"))
		return run_server(argc, argv, M_SINK);
	if (!strcmp(mode, "fakeagent"))
		return run_fakeagent(argc, argv);
	if (!strcmp(mode, "stream"))
		return run_stream(argc, argv);
	if (!strcmp(mode, "rtt"))
		return run_rtt(argc, argv);
	if (!strcmp(mode, "setup"))
		return run_setup(argc, argv);
	fprintf(stderr, "usage: dp_bench relay|echo|sink|fakeagent|stream|rtt|setup ... "
			"(see bench/dp_bench.c)\n");
	return 2;
}
