/* Registration storm client for bench/reg-storm.sh: N agents open their TLS control channels to
 * one relay at once, each with its own real ES256 token, and wait for WELCOME; they retry as
 * the real agent does (the relay's retry_after_ms plus up to 25% jitter after an ERROR, the
 * agent's exponential full-jitter backoff after a connection closed without one). Rounds:
 * round 1 registers every tunnel for the first time; then all control channels close at once
 * and round 2 is the reconnect storm (every tunnel already owns its name).
 *
 *   reg_storm --relay PORT --ca FILE --jwt-key FILE --n N [--sources K] [--rounds R]
 *             [--deadline-s S] [--tag STR]
 *
 * Source addresses 127.91.<i / 250>.<i % 250 + 1> spread over K addresses so no address runs
 * out of ports (the relay's per-source limits must be lifted). Prints one "round=" line per
 * round: time until all registered, registrations/s, attempts, refusals by code, p50/p99 of
 * the time from an agent's first connect to its WELCOME, and this client's own CPU time (it
 * shares the machine with the relay). Before each round it prints
 * "waiting round=R" and reads one line from stdin (the script snapshots counters meanwhile). Exit 1 when a round missed its
 * deadline (every run stops by itself). No data connections are opened: ATTACH is ignored.
 */
#include "agent.h"
#include "ctlconn.h"
#include "proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jwt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_BASE_MS 500u
#define BACKOFF_CAP_MS 30000u

enum st { ST_WAIT, ST_CONN, ST_UP };

struct agent {
	int fd;
	enum st st;
	bool hello_sent;
	unsigned attempt;
	uint64_t next_ms;  /* ST_WAIT: when to connect */
	uint64_t first_ms; /* first connect of this round */
	uint64_t up_ms;
	struct ctl_conn c;
	char *token;
	struct sockaddr_in src;
};

static struct {
	struct agent *a;
	int n, epfd, port, up;
	SSL_CTX *ctx;
	unsigned attempts, closed_plain;
	unsigned err_busy, err_unavailable, err_timeout, err_other;
} S;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t rnd64(void)
{
	uint64_t v = 0;
	RAND_bytes((unsigned char *)&v, sizeof(v));
	return v;
}

static const char *arg(int argc, char **argv, const char *name, const char *def)
{
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return def;
}

/* Sign one token per agent in-process: forking dvv-token 10,000 times would take longer than
 * the storm itself. Same claims as dvv-token writes. */
static char *mint(const unsigned char *key, size_t keylen, const char *tag, int i)
{
	jwt_t *j = NULL;
	char sub[64], tid[64], jti[64];
	char *tok = NULL;
	long now = (long)time(NULL);
	snprintf(sub, sizeof(sub), "%s-u%d", tag, i);
	snprintf(tid, sizeof(tid), "%s-t%d", tag, i);
	snprintf(jti, sizeof(jti), "%s-j%d", tag, i);
	if (jwt_new(&j))
		return NULL;
	if (!jwt_add_grant(j, "iss", "dvv") && !jwt_add_grant(j, "aud", "dvv-relay") &&
	    !jwt_add_grant(j, "sub", sub) && !jwt_add_grant(j, "tid", tid) &&
	    !jwt_add_grant(j, "jti", jti) && !jwt_add_grant_int(j, "iat", now) &&
	    !jwt_add_grant_int(j, "exp", now + 3600) &&
	    !jwt_set_alg(j, JWT_ALG_ES256, key, (int)keylen))
		tok = jwt_encode_str(j);
	jwt_free(j);
	return tok;
}

static void agent_close(struct agent *a)
{
	if (a->fd < 0)
		return;
	ctl_conn_free(&a->c);
	epoll_ctl(S.epfd, EPOLL_CTL_DEL, a->fd, NULL);
	close(a->fd);
	a->fd = -1;
}

static void agent_retry(struct agent *a, uint32_t after_ms)
{
	agent_close(a);
	a->st = ST_WAIT;
	uint64_t d = after_ms ? after_ms + rnd64() % (after_ms / 4 + 1)
			      : agent_backoff_ms(a->attempt, BACKOFF_BASE_MS, BACKOFF_CAP_MS, rnd64());
	a->attempt++;
	a->next_ms = now_ms() + d;
}

static int on_msg(struct ctl_conn *c, const struct ctl_msg *m)
{
	struct agent *a = c->data;
	if (m->type == CTL_WELCOME && a->st == ST_CONN) {
		a->st = ST_UP;
		a->up_ms = now_ms();
		a->attempt = 0;
		S.up++;
	} else if (m->type == CTL_PING) {
		struct ctl_msg p = {.type = CTL_PONG, .u.ping.t = m->u.ping.t};
		ctl_conn_send(c, &p);
	} else if (m->type == CTL_ERROR) {
		const char *code = m->u.error.code;
		if (!strcmp(code, "busy"))
			S.err_busy++;
		else if (!strcmp(code, "unavailable"))
			S.err_unavailable++;
		else if (!strcmp(code, "timeout"))
			S.err_timeout++;
		else {
			S.err_other++;
			fprintf(stderr, "reg_storm: ERROR %s: %s\n", code, m->u.error.message);
		}
		agent_retry(a, m->u.error.retry_after_ms ? m->u.error.retry_after_ms : 1000);
		return 1;
	}
	return 0;
}

static void agent_connect(struct agent *a)
{
	S.attempts++;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		agent_retry(a, 0);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)S.port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(fd, (struct sockaddr *)&a->src, sizeof(a->src)) ||
	    (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) && errno != EINPROGRESS)) {
		close(fd);
		agent_retry(a, 0);
		return;
	}
	a->fd = fd;
	a->st = ST_CONN;
	a->hello_sent = false;
	if (ctl_conn_init(&a->c, S.ctx, fd, false, NULL)) {
		close(fd);
		a->fd = -1;
		agent_retry(a, 0);
		return;
	}
	a->c.on_msg = on_msg;
	a->c.data = a;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = a};
	epoll_ctl(S.epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void agent_io(struct agent *a)
{
	if (!a->hello_sent) {
		struct ctl_msg *h = calloc(1, sizeof(*h));
		if (!h) {
			agent_retry(a, 0);
			return;
		}
		h->type = CTL_HELLO;
		h->u.hello.proto = 1;
		snprintf(h->u.hello.token, sizeof(h->u.hello.token), "%s", a->token);
		snprintf(h->u.hello.agent, sizeof(h->u.hello.agent), "reg_storm");
		h->u.hello.placed = true; /* one relay: no placement */
		ctl_conn_send(&a->c, h);
		free(h);
		a->hello_sent = true;
	}
	int rc = ctl_conn_io(&a->c);
	if (a->fd < 0 || a->st == ST_WAIT)
		return; /* on_msg retried */
	if (rc < 0) {
		S.closed_plain++;
		if (a->st == ST_UP) {
			/* the relay cut an established session: count it as not registered */
			S.up--;
			a->st = ST_CONN;
		}
		agent_retry(a, 0);
		return;
	}
	struct epoll_event ev = {.events = (uint32_t)rc | EPOLLRDHUP, .data.ptr = a};
	epoll_ctl(S.epfd, EPOLL_CTL_MOD, a->fd, &ev);
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return a < b ? -1 : a > b;
}

static uint64_t cpu_ms(void) /* this process, user + system */
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int run_round(int round, uint64_t deadline_ms)
{
	uint64_t t0 = now_ms(), c0 = cpu_ms();
	S.up = 0;
	S.attempts = S.closed_plain = 0;
	S.err_busy = S.err_unavailable = S.err_timeout = S.err_other = 0;
	for (int i = 0; i < S.n; i++) {
		S.a[i] = (struct agent){.fd = -1, .st = ST_WAIT, .next_ms = t0, .first_ms = t0,
					.token = S.a[i].token, .src = S.a[i].src};
	}
	struct epoll_event evs[512];
	int next_scan = 0;
	while (S.up < S.n) {
		uint64_t now = now_ms();
		if (now - t0 > deadline_ms)
			break;
		/* start due connections, a bounded number per turn so replies keep flowing */
		int started = 0;
		for (int k = 0; k < S.n && started < 256; k++) {
			struct agent *a = &S.a[(next_scan + k) % S.n];
			if (a->st == ST_WAIT && a->next_ms <= now) {
				agent_connect(a);
				started++;
			}
		}
		next_scan = (next_scan + 1) % S.n;
		int ne = epoll_wait(S.epfd, evs, 512, started ? 0 : 5);
		for (int i = 0; i < ne; i++)
			agent_io(evs[i].data.ptr);
	}
	uint64_t t1 = now_ms();
	uint64_t *lat = calloc((unsigned)S.n, sizeof(*lat));
	int nl = 0;
	for (int i = 0; i < S.n && lat; i++)
		if (S.a[i].st == ST_UP)
			lat[nl++] = S.a[i].up_ms - S.a[i].first_ms;
	if (lat && nl)
		qsort(lat, (size_t)nl, sizeof(*lat), cmp_u64);
	double secs = (double)(t1 - t0) / 1000.0;
	printf("round=%d n=%d registered=%d seconds=%.2f regs_per_s=%.0f attempts=%u "
	       "closed_without_error=%u busy=%u unavailable=%u timeout=%u other=%u "
	       "p50_ms=%llu p99_ms=%llu cpu_ms=%llu\n",
	       round, S.n, S.up, secs, secs > 0 ? S.up / secs : 0, S.attempts, S.closed_plain,
	       S.err_busy, S.err_unavailable, S.err_timeout, S.err_other,
	       (unsigned long long)(nl ? lat[nl / 2] : 0),
	       (unsigned long long)(nl ? lat[(nl * 99) / 100] : 0),
	       (unsigned long long)(cpu_ms() - c0));
	fflush(stdout);
	free(lat);
	return S.up == S.n ? 0 : -1;
}

int main(int argc, char **argv)
{
	const char *ca = arg(argc, argv, "--ca", NULL), *keyf = arg(argc, argv, "--jwt-key", NULL);
	const char *tag = arg(argc, argv, "--tag", "storm");
	S.port = atoi(arg(argc, argv, "--relay", "0"));
	S.n = atoi(arg(argc, argv, "--n", "1000"));
	int sources = atoi(arg(argc, argv, "--sources", "64"));
	int rounds = atoi(arg(argc, argv, "--rounds", "2"));
	int deadline_s = atoi(arg(argc, argv, "--deadline-s", "120"));
	int status = 1;
	unsigned char key[8192];
	size_t keylen = 0;
	char err[256];
	if (!ca || !keyf || S.port <= 0 || S.n <= 0 || sources <= 0 || sources > 250 * 250 ||
	    rounds < 1 || deadline_s < 1 || deadline_s > 600) {
		fprintf(stderr, "usage: reg_storm --relay PORT --ca FILE --jwt-key FILE --n N "
				"[--sources K] [--rounds R] [--deadline-s S<=600] [--tag STR]\n");
		return 2;
	}
	/* a relay refusing at accept closes before our ClientHello is written: EPIPE, not death */
	signal(SIGPIPE, SIG_IGN);
	FILE *f = fopen(keyf, "r");
	if (!f || !(keylen = fread(key, 1, sizeof(key) - 1, f))) {
		perror("reg_storm: jwt key");
		if (f)
			fclose(f);
		return 1;
	}
	fclose(f);
	S.ctx = tls_client_ctx(ca, NULL, err, sizeof(err));
	S.a = calloc((unsigned)S.n, sizeof(*S.a));
	S.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!S.ctx || !S.a || S.epfd < 0) {
		fprintf(stderr, "reg_storm: setup: %s\n", S.ctx ? strerror(errno) : err);
		goto out;
	}
	for (int i = 0; i < S.n; i++)
		S.a[i].fd = -1;
	for (int i = 0; i < S.n; i++) {
		int s = i % sources;
		S.a[i].src = (struct sockaddr_in){
			.sin_family = AF_INET,
			.sin_addr.s_addr = htonl((127u << 24) | (91u << 16) |
						 ((unsigned)(s / 250) << 8) | (unsigned)(s % 250 + 1))};
		if (!(S.a[i].token = mint(key, keylen, tag, i))) {
			fprintf(stderr, "reg_storm: signing token %d failed\n", i);
			goto out;
		}
	}
	status = 0;
	for (int r = 1; r <= rounds; r++) {
		/* round 2 on: all control channels close at once; the reconnect storm follows */
		for (int i = 0; i < S.n; i++)
			agent_close(&S.a[i]);
		/* the script snapshots Redis and the relay before each round, then says go */
		printf("waiting round=%d n=%d sources=%d\n", r, S.n, sources);
		fflush(stdout);
		char line[16];
		if (!fgets(line, sizeof(line), stdin))
			break;
		if (run_round(r, (uint64_t)deadline_s * 1000))
			status = 1;
	}
out:
	for (int i = 0; S.a && i < S.n; i++) {
		agent_close(&S.a[i]);
		free(S.a[i].token);
	}
	free(S.a);
	if (S.epfd >= 0)
		close(S.epfd);
	SSL_CTX_free(S.ctx);
	OPENSSL_cleanse(key, sizeof(key));
	return status;
}
