/* What the agent's bounds on its connection to the local server (--local-rcvbuf-kb,
 * --local-mss) cost on bulk same-host traffic: one loopback TCP stream, a sender thread writing
 * as fast as it can, the receiver (set up the way the agent sets up its local connection, with
 * net_connect_bounded) reading as fast as it can. Prints throughput and CPU seconds per GiB
 * (both threads, user + system) for each setting given, measured in the same run.
 *
 *   cc -std=gnu11 -O2 -Icommon -o build/localbuf bench/localbuf.c common/net.c -lpthread
 *   build/localbuf [MiB] [rcvbuf_kb:mss ...]     default: 2048 MiB, 0:0 64:7168 128:8192 16:4096
 */
#include "net.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

struct sender {
	int fd;
	uint64_t bytes;
};

static void *send_main(void *arg)
{
	struct sender *s = arg;
	static char buf[1 << 16];
	uint64_t left = s->bytes;
	while (left) {
		ssize_t n = send(s->fd, buf, left < sizeof(buf) ? left : sizeof(buf), 0);
		if (n <= 0)
			break;
		left -= (uint64_t)n;
	}
	shutdown(s->fd, SHUT_WR);
	return NULL;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* One stream of mib MiB with the receiver bounded by o. 0 or -errno. */
static int run(uint64_t mib, const struct net_queue_opts *o)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	struct net_addr a;
	int lsn = socket(AF_INET, SOCK_STREAM, 0), c = -1, s = -1, rc = 0;
	pthread_t th;
	struct sender snd;
	if (lsn < 0 || bind(lsn, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lsn, 1) < 0 ||
	    getsockname(lsn, (struct sockaddr *)&sa, &sl) < 0) {
		rc = -errno;
		goto out;
	}
	memcpy(&a.ss, &sa, sizeof(sa));
	a.len = sizeof(sa);
	if ((rc = net_connect_bounded(&a, o, &c)))
		goto out;
	if ((s = accept(lsn, NULL, NULL)) < 0) {
		rc = -errno;
		goto out;
	}
	poll(&(struct pollfd){.fd = c, .events = POLLOUT}, 1, 1000); /* non-blocking connect */
	snd = (struct sender){.fd = s, .bytes = mib << 20};
	double t0 = now_s(), c0 = cpu_s();
	if (pthread_create(&th, NULL, send_main, &snd)) {
		rc = -EAGAIN;
		goto out;
	}
	static char buf[1 << 18];
	uint64_t got = 0;
	for (;;) {
		ssize_t n = recv(c, buf, sizeof(buf), 0);
		if (n > 0) {
			got += (uint64_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			poll(&(struct pollfd){.fd = c, .events = POLLIN}, 1, 1000);
		} else {
			break;
		}
	}
	pthread_join(th, NULL);
	double t = now_s() - t0, cpu = cpu_s() - c0, gib = (double)got / (1 << 30);
	printf("rcvbuf %4d KiB mss %5d: %6.2f Gbit/s, %.2f CPU s per GiB\n", o->rcvbuf >> 10, o->mss,
	       8 * (double)got / t / 1e9, gib > 0 ? cpu / gib : 0);
	if (got != mib << 20)
		rc = -EIO;
out:
	if (c >= 0)
		close(c);
	if (s >= 0)
		close(s);
	if (lsn >= 0)
		close(lsn);
	return rc;
}

int main(int argc, char **argv)
{
	static const char *defaults[] = {"0:0", "64:7168", "128:8192", "16:4096"};
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 2048;
	const char **set = argc > 2 ? (const char **)argv + 2 : defaults;
	int n = argc > 2 ? argc - 2 : 4;
	for (int i = 0; i < n; i++) {
		struct net_queue_opts o = {0};
		if (sscanf(set[i], "%d:%d", &o.rcvbuf, &o.mss) != 2) {
			fprintf(stderr, "localbuf: want rcvbuf_kb:mss, got '%s'\n", set[i]);
			return 2;
		}
		o.rcvbuf <<= 10;
		int rc = run(mib ? mib : 1, &o);
		if (rc) {
			fprintf(stderr, "localbuf: %s\n", strerror(-rc));
			return 1;
		}
	}
	return 0;
}
