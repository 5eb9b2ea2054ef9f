/* What this kernel's sockmap does with a live TCP stream, without any DVV code: the facts the bpf
 * data plane is built on (tests/splice/README.md). Each probe moves an offset-tagged stream (every
 * 8-byte word holds its own offset) over loopback and checks every byte.
 *
 *   kernel_probe OBJ [redirect|pass-relay|unhook|clamp|all] [rounds]
 *
 *   redirect    both directions spliced by bpf_sk_redirect_hash, 256 MiB each way.
 *               DVV relies on this: must be byte-exact.
 *   clamp       TCP_WINDOW_CLAMP on a spliced socket whose reader stalls: the sender must be
 *               held to a few MiB (the plane's backpressure). DVV relies on this too.
 *   pass-relay  verdict SK_PASS on both relay sockets, a userspace thread relaying with
 *               recv()/send(). Informational: 6.18 duplicated and truncated data here.
 *   unhook      a receiving socket is removed from the verdict map mid-stream (kept in the
 *               target map), the rest read with recv(). Informational: 6.18 lost data here.
 *
 * Exit status 0 when what DVV relies on holds. Every round is bounded (alarm). */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LEN (256ull << 20)
#define BLK 65536

static int m_active, m_targets, m_peer;

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_alarm(int sig __attribute__((unused)))
{
	static const char msg[] = "kernel_probe: a round took more than 60 s (stalled stream)\n";
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(3);
}

/* ---- offset-tagged streams ---- */

struct check {
	uint64_t src;	    /* stream offset the next byte should have */
	uint64_t n;	    /* bytes seen */
	uint64_t first_bad; /* offset of the first wrong byte, or UINT64_MAX */
	int64_t jump;	    /* where the stream jumped to, relative (negative: duplicate) */
};

static void check_init(struct check *c, uint64_t src)
{
	*c = (struct check){.src = src, .first_bad = UINT64_MAX};
}

static void check_bytes(struct check *c, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++, c->src++, c->n++) {
		uint64_t w = c->src / 8;
		if (b[i] == ((const uint8_t *)&w)[c->src % 8])
			continue;
		if (c->first_bad == UINT64_MAX)
			c->first_bad = c->src;
		for (size_t k = 0; k < 8 && i + k + 16 <= n; k++) { /* resynchronise */
			uint64_t v, v2;
			memcpy(&v, b + i + k, 8);
			memcpy(&v2, b + i + k + 8, 8);
			if (v2 == v + 1) {
				if (!c->jump)
					c->jump = (int64_t)(v * 8 - k) - (int64_t)c->src;
				c->src = v * 8 - k;
				break;
			}
		}
	}
}

static uint64_t first_offset(const uint8_t *b, size_t n)
{
	for (size_t k = 0; k < 8 && k + 16 <= n; k++) {
		uint64_t v, v2;
		memcpy(&v, b + k, 8);
		memcpy(&v2, b + k + 8, 8);
		if (v2 == v + 1)
			return v * 8 - k;
	}
	return UINT64_MAX;
}

struct flow {
	int fd, to; /* to: relay target (pass-relay) */
	struct check chk;
	bool shut;
	pthread_t th;
};

static void *tx_main(void *arg)
{
	struct flow *f = arg;
	uint64_t *b = malloc(BLK);
	for (uint64_t off = 0; b && off < LEN; off += BLK) {
		for (size_t i = 0; i < BLK / 8; i++)
			b[i] = off / 8 + i;
		for (size_t d = 0; d < BLK;) {
			ssize_t n = send(f->fd, (uint8_t *)b + d, BLK - d, MSG_NOSIGNAL);
			if (n <= 0)
				goto out;
			d += (size_t)n;
		}
	}
	if (f->shut)
		shutdown(f->fd, SHUT_WR);
out:
	free(b);
	return NULL;
}

static void *rx_main(void *arg)
{
	struct flow *f = arg;
	uint8_t *b = malloc(1 << 18);
	for (;;) {
		ssize_t n = b ? recv(f->fd, b, 1 << 18, 0) : -1;
		if (n <= 0)
			break;
		check_bytes(&f->chk, b, (size_t)n);
	}
	free(b);
	return NULL;
}

static void *relay_main(void *arg)
{
	struct flow *f = arg;
	uint8_t *b = malloc(1 << 18);
	for (;;) {
		ssize_t n = b ? recv(f->fd, b, 1 << 18, 0) : -1;
		if (n <= 0)
			break;
		for (ssize_t o = 0; o < n;) {
			ssize_t w = send(f->to, b + o, (size_t)(n - o), MSG_NOSIGNAL);
			if (w <= 0)
				goto out;
			o += w;
		}
	}
	shutdown(f->to, SHUT_WR);
out:
	free(b);
	return NULL;
}

/* ---- sockets and maps ---- */

struct rig {
	int lfd, p, pr, a, ar; /* player app, relay side; agent app, relay side */
	uint64_t cp, ca;       /* cookies of pr, ar */
};

static int link_pair(int lfd, const struct sockaddr_in *sa, int *app, int *relay)
{
	*app = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (*app < 0 || connect(*app, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
		return -1;
	*relay = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (*relay < 0)
		return -1;
	/* a stream the kernel truncates must end a round, not hang it */
	struct timeval tv = {.tv_sec = 10};
	for (int i = 0; i < 2; i++) {
		int fd = i ? *relay : *app;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	return 0;
}

static uint64_t cookie(int fd)
{
	uint64_t c = 0;
	socklen_t sl = sizeof(c);
	getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &sl);
	return c;
}

static void map_put(int map, uint64_t key, int fd)
{
	uint64_t v = (uint64_t)fd;
	if (bpf_map_update_elem(map, &key, &v, BPF_ANY))
		fprintf(stderr, "kernel_probe: map update: %s\n", strerror(errno));
}

static int rig_open(struct rig *r, bool peers)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	memset(r, 0xff, sizeof(*r));
	r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(r->lfd, 4) ||
	    getsockname(r->lfd, (struct sockaddr *)&sa, &sl) || link_pair(r->lfd, &sa, &r->p, &r->pr) ||
	    link_pair(r->lfd, &sa, &r->a, &r->ar))
		return -1;
	r->cp = cookie(r->pr);
	r->ca = cookie(r->ar);
	if (peers) {
		bpf_map_update_elem(m_peer, &r->cp, &r->ca, BPF_ANY);
		bpf_map_update_elem(m_peer, &r->ca, &r->cp, BPF_ANY);
	}
	map_put(m_targets, r->ca, r->ar);
	map_put(m_targets, r->cp, r->pr);
	map_put(m_active, r->ca, r->ar);
	map_put(m_active, r->cp, r->pr);
	return 0;
}

static void rig_close(struct rig *r)
{
	int *fds[] = {&r->lfd, &r->p, &r->pr, &r->a, &r->ar};
	for (size_t i = 0; i < 5; i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
	bpf_map_delete_elem(m_peer, &r->cp);
	bpf_map_delete_elem(m_peer, &r->ca);
}

static void describe(char *out, size_t len, const char *who, const struct check *c, uint64_t want)
{
	if (c->first_bad == UINT64_MAX && c->n == want)
		snprintf(out, len, "%s ok", who);
	else if (c->first_bad == UINT64_MAX)
		snprintf(out, len, "%s got %llu of %llu bytes", who, (unsigned long long)c->n,
			 (unsigned long long)want);
	else
		snprintf(out, len, "%s: at offset %llu the stream jumped %+lld bytes (%s), %llu bytes total",
			 who, (unsigned long long)c->first_bad, (long long)c->jump,
			 c->jump < 0 ? "duplicate" : "loss", (unsigned long long)c->n);
}

/* ---- probes: return true when the round was byte-exact ---- */

static bool probe_both_ways(bool relay, char *why, size_t len)
{
	struct rig r;
	if (rig_open(&r, !relay)) {
		snprintf(why, len, "setup: %s", strerror(errno));
		return false;
	}
	struct flow up = {.fd = r.p, .shut = true}, down = {.fd = r.a, .shut = true};
	struct flow up_rx = {.fd = r.a}, down_rx = {.fd = r.p};
	struct flow y1 = {.fd = r.pr, .to = r.ar}, y2 = {.fd = r.ar, .to = r.pr};
	check_init(&up_rx.chk, 0);
	check_init(&down_rx.chk, 0);
	if (relay) {
		pthread_create(&y1.th, NULL, relay_main, &y1);
		pthread_create(&y2.th, NULL, relay_main, &y2);
	}
	pthread_create(&up_rx.th, NULL, rx_main, &up_rx);
	pthread_create(&down_rx.th, NULL, rx_main, &down_rx);
	pthread_create(&up.th, NULL, tx_main, &up);
	pthread_create(&down.th, NULL, tx_main, &down);
	pthread_join(up.th, NULL);
	pthread_join(down.th, NULL);
	if (!relay) { /* nothing carries the FINs across in the kernel: stop the readers */
		uint64_t t0 = now_ms();
		while ((up_rx.chk.n < LEN || down_rx.chk.n < LEN) && now_ms() - t0 < 10000)
			usleep(1000);
		shutdown(r.a, SHUT_RDWR);
		shutdown(r.p, SHUT_RDWR);
	}
	pthread_join(up_rx.th, NULL);
	pthread_join(down_rx.th, NULL);
	if (relay) {
		shutdown(r.pr, SHUT_RDWR);
		shutdown(r.ar, SHUT_RDWR);
		pthread_join(y1.th, NULL);
		pthread_join(y2.th, NULL);
	}
	rig_close(&r);
	char a[160], b[160];
	describe(a, sizeof(a), "player->agent", &up_rx.chk, LEN);
	describe(b, sizeof(b), "agent->player", &down_rx.chk, LEN);
	snprintf(why, len, "%s; %s", a, b);
	return up_rx.chk.first_bad == UINT64_MAX && up_rx.chk.n == LEN &&
	       down_rx.chk.first_bad == UINT64_MAX && down_rx.chk.n == LEN;
}

static bool probe_unhook(unsigned after_ms, char *why, size_t len)
{
	struct rig r;
	if (rig_open(&r, true)) {
		snprintf(why, len, "setup: %s", strerror(errno));
		return false;
	}
	struct flow up = {.fd = r.p, .shut = true}, up_rx = {.fd = r.a};
	check_init(&up_rx.chk, 0);
	pthread_create(&up_rx.th, NULL, rx_main, &up_rx);
	pthread_create(&up.th, NULL, tx_main, &up);
	usleep(after_ms * 1000);
	bpf_map_delete_elem(m_active, &r.cp); /* the verdict stops; pr stays a target */
	struct check user;
	uint8_t *b = malloc(1 << 18);
	bool first = true;
	check_init(&user, 0);
	for (;;) {
		ssize_t n = b ? recv(r.pr, b, 1 << 18, 0) : -1;
		if (n <= 0)
			break;
		if (first) {
			uint64_t off = first_offset(b, (size_t)n);
			check_init(&user, off == UINT64_MAX ? 0 : off);
			first = false;
		}
		check_bytes(&user, b, (size_t)n);
	}
	free(b);
	pthread_join(up.th, NULL);
	usleep(500 * 1000); /* let the last redirected bytes reach A */
	shutdown(r.a, SHUT_RDWR);
	pthread_join(up_rx.th, NULL);
	uint64_t user_from = user.src - user.n;
	rig_close(&r);
	if (first) {
		snprintf(why, len, "the stream ended before the unhook (nothing to check)");
		return true;
	}
	bool ok = up_rx.chk.first_bad == UINT64_MAX && user.first_bad == UINT64_MAX &&
		  up_rx.chk.n == user_from && user.src == LEN;
	snprintf(why, len, "kernel delivered [0, %llu), userspace read [%llu, %llu)%s",
		 (unsigned long long)up_rx.chk.n, (unsigned long long)user_from,
		 (unsigned long long)user.src,
		 ok ? "" : up_rx.chk.n < user_from ? ": bytes lost" : ": bytes duplicated or wrong");
	return ok;
}

/* The plane clamps only after several MiB of lag; at connection start the kernel's buffer
 * autotuning overwrites a clamp (measured), so warm the connection up first, like the plane. */
static bool probe_clamp(char *why, size_t len)
{
	struct rig r;
	if (rig_open(&r, true)) {
		snprintf(why, len, "setup: %s", strerror(errno));
		return false;
	}
	static uint8_t b[BLK];
	uint64_t pushed = 0, t0 = now_ms();
	fcntl(r.p, F_SETFL, O_NONBLOCK);
	while (pushed < (8ull << 20) && now_ms() - t0 < 2000) { /* A never reads */
		ssize_t n = send(r.p, b, sizeof(b), MSG_NOSIGNAL);
		if (n > 0)
			pushed += (uint64_t)n;
		else
			poll(&(struct pollfd){.fd = r.p, .events = POLLOUT}, 1, 10);
	}
	int clamp = 4096, now = 0;
	socklen_t sl = sizeof(now);
	setsockopt(r.pr, IPPROTO_TCP, TCP_WINDOW_CLAMP, &clamp, sizeof(clamp));
	uint64_t before = pushed;
	t0 = now_ms();
	while (now_ms() - t0 < 1000) {
		ssize_t n = send(r.p, b, sizeof(b), MSG_NOSIGNAL);
		if (n > 0)
			pushed += (uint64_t)n;
		else
			poll(&(struct pollfd){.fd = r.p, .events = POLLOUT}, 1, 10);
	}
	getsockopt(r.pr, IPPROTO_TCP, TCP_WINDOW_CLAMP, &now, &sl);
	rig_close(&r);
	snprintf(why, len, "after 8 MiB, a 4 KiB clamp held the sender to %llu KiB in 1 s (clamp "
		 "still %d)", (unsigned long long)((pushed - before) >> 10), now);
	return pushed - before < (32ull << 20) && now == clamp;
}

int main(int argc, char **argv)
{
	const char *which = argc > 2 ? argv[2] : "all";
	int rounds = argc > 3 ? atoi(argv[3]) : 5;
	if (argc < 2) {
		fprintf(stderr, "usage: %s OBJ [redirect|pass-relay|unhook|clamp|all] [rounds]\n",
			argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "kernel_probe: cannot load %s\n", argv[1]);
		return 1;
	}
	m_active = bpf_object__find_map_fd_by_name(obj, "probe_active");
	m_targets = bpf_object__find_map_fd_by_name(obj, "probe_targets");
	m_peer = bpf_object__find_map_fd_by_name(obj, "probe_peer");
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "probe_verdict");
	if (bpf_prog_attach(bpf_program__fd(prog), m_active, BPF_SK_SKB_STREAM_VERDICT, 0)) {
		fprintf(stderr, "kernel_probe: attach: %s\n", strerror(errno));
		return 1;
	}
	static const struct {
		const char *name;
		bool relied_on;
	} probes[] = {{"redirect", true}, {"clamp", true}, {"pass-relay", false}, {"unhook", false}};
	int failed_relied = 0;
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
		const char *name = probes[i].name;
		if (strcmp(which, "all") && strcmp(which, name))
			continue;
		int good = 0, n = !strcmp(name, "clamp") ? 1 : rounds;
		char why[400], first_bad[440] = "";
		for (int k = 0; k < n; k++) {
			bool ok;
			alarm(60);
			if (!strcmp(name, "redirect"))
				ok = probe_both_ways(false, why, sizeof(why));
			else if (!strcmp(name, "pass-relay"))
				ok = probe_both_ways(true, why, sizeof(why));
			else if (!strcmp(name, "unhook"))
				ok = probe_unhook(20 + (unsigned)(k * 37) % 200, why, sizeof(why));
			else
				ok = probe_clamp(why, sizeof(why));
			alarm(0);
			good += ok;
			if (!ok && !first_bad[0])
				snprintf(first_bad, sizeof(first_bad), "round %d: %s", k + 1, why);
		}
		bool all = good == n;
		printf("%s %-10s %d/%d round(s) as DVV needs%s%s%s\n",
		       all ? "[       OK ]" : probes[i].relied_on ? "[  FAILED  ]" : "[  BROKEN  ]", name,
		       good, n, probes[i].relied_on ? "" : " (informational: the plane avoids it)",
		       all ? (n == 1 ? ": " : "") : "\n             ",
		       all ? (n == 1 ? why : "") : first_bad);
		if (!all && probes[i].relied_on)
			failed_relied++;
	}
	bpf_object__close(obj);
	return failed_relied ? 1 : 0;
}
