/* Data-plane benchmark harness (driven by bench/run.sh).
 *
 *   dp_bench relay --plane bpf|userspace --listen PORT --target PORT [--pool N]
 *       the relay hop alone: accept on 127.0.0.1:PORT, take a connection to 127.0.0.1:TARGET
 *       (from a pool of N pre-opened ones, as the relay does with agent data connections, or
 *       dialled on demand with --pool 0) and join the two through the data plane. Runs until
 *       SIGINT/SIGTERM, then stops the plane (and removes its pins).
 *   dp_bench echo --listen PORT
 *       echo server (epoll, one thread).
 *   dp_bench rtt --connect PORT [--count N] [--size B]
 *       one connection, N ping-pongs of B bytes: prints "rtt_us min=.. p50=.. p99=..".
 *   dp_bench setup --connect PORT [--count N]
 *       N sequential connections, each: connect, 1 byte out, 1 byte back, close; prints
 *       "setup_us min=.. p50=.. p99=..".
 */
#include "config.h"
#include "dataplane.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) { g_stop = 1; }

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

static int dial(int port)
{
	struct sockaddr_in sa = loopback(port);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* The planes take non-blocking sockets, as the relay hands them (splice(2) follows the socket's
 * O_NONBLOCK, not SPLICE_F_NONBLOCK). */
static int dial_nonblocking(int port)
{
	int fd = dial(port);
	if (fd >= 0)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
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
		if (pfd < 0)
			continue; /* EINTR on stop */
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
	dp.ops->stop(&dp);
	return 0;
}

static int run_echo(int argc, char **argv)
{
	int lfd = listen_on(atoi(arg(argc, argv, "--listen", "0")));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, evs[64];
	char buf[65536];
	if (lfd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) {
		perror("dp_bench echo");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (!g_stop) {
		int n = epoll_wait(ep, evs, 64, 500);
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
				int one = 1;
				if (c < 0)
					continue;
				setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				ev = (struct epoll_event){.events = EPOLLIN, .data.fd = c};
				epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				continue;
			}
			ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (r > 0) {
				for (ssize_t off = 0; off < r;) {
					ssize_t w = send(fd, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
					if (w <= 0)
						break;
					off += w;
				}
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
				close(fd);
			}
		}
	}
	close(ep);
	close(lfd);
	return 0;
}

static int full_io(int fd, char *buf, size_t len, bool out)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = out ? send(fd, buf + off, len - off, MSG_NOSIGNAL)
				: recv(fd, buf + off, len - off, 0);
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

static int run_rtt(int argc, char **argv)
{
	int port = atoi(arg(argc, argv, "--connect", "0"));
	int count = atoi(arg(argc, argv, "--count", "20000"));
	size_t size = (size_t)atoi(arg(argc, argv, "--size", "64"));
	char buf[4096];
	uint64_t *ns = calloc((size_t)count, sizeof(*ns));
	int fd = dial(port);
	if (fd < 0 || !ns || size > sizeof(buf) || count < 1) {
		perror("dp_bench rtt");
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
	char b = 's';
	if (!ns || count < 1)
		return 1;
	for (int i = 0; i < count; i++) {
		uint64_t t0 = now_ns();
		int fd = dial(port);
		if (fd < 0 || full_io(fd, &b, 1, true) || full_io(fd, &b, 1, false)) {
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
	signal(SIGPIPE, SIG_IGN);
	log_init("dp_bench", LOG_WARN);
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "relay"))
		return run_relay(argc, argv);
	if (!strcmp(mode, "echo"))
		return run_echo(argc, argv);
	if (!strcmp(mode, "rtt"))
		return run_rtt(argc, argv);
	if (!strcmp(mode, "setup"))
		return run_setup(argc, argv);
	fprintf(stderr, "usage: dp_bench relay|echo|rtt|setup ... (see bench/dp_bench.c)\n");
	return 2;
}
