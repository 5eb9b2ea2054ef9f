/* An emulated network link for benchmarks and netns tests on kernels without sch_netem: each
 * link is a pair of TUN devices joined by this process, which gives every direction a
 * bottleneck rate, a drop-tail buffer in front of it and a propagation delay, as a real access
 * link has. bench/queue.sh and tests/netns/queue.sh build their namespaces on it.
 *
 *   wire READY_FILE LINK...
 *   LINK = TUN_A:TUN_B:DELAY_MS:KBIT_A_TO_B:KBIT_B_TO_A:BUFFER_BYTES
 *
 * Creates both TUN devices of every link in the caller's namespace (the caller moves them and
 * sets addresses), writes READY_FILE, then forwards until SIGTERM/SIGINT. A packet A->B leaves
 * the bottleneck at max(now, previous departure) + size/rate and arrives DELAY_MS later; it is
 * dropped when the bytes waiting for the bottleneck exceed BUFFER_BYTES. KBIT 0 = no rate
 * limit. Single-threaded, ppoll with microsecond timeouts. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define WIRE_MAX_LINKS 8
#define WIRE_SLOTS 16384 /* packets in one direction's delay line; more are dropped */
#define WIRE_MTU 2048

struct wire_pkt {
	uint64_t due_ns; /* when it leaves the delay line */
	uint16_t len;
	uint8_t data[WIRE_MTU];
};

struct wire_dir {
	int in, out;		/* read from in, write to out */
	uint64_t delay_ns, kbit, buffer;
	uint64_t tx_free_ns; /* when the bottleneck finishes what it already accepted */
	struct wire_pkt *ring;
	unsigned head, count;
	uint64_t drops;
};

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int tun_open(const char *name)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Accept one packet read at time t into d's delay line, or drop it (buffer full). */
static void dir_accept(struct wire_dir *d, const uint8_t *pkt, size_t len, uint64_t t)
{
	uint64_t start = d->tx_free_ns > t ? d->tx_free_ns : t, tx = 0;
	if (d->kbit) {
		/* bytes still waiting for the bottleneck, from its backlog in time */
		uint64_t backlog = (start - t) * d->kbit / 8000000ull;
		if (backlog + len > d->buffer) {
			d->drops++;
			return;
		}
		tx = (uint64_t)len * 8000000ull / d->kbit;
	}
	if (d->count == WIRE_SLOTS) {
		d->drops++;
		return;
	}
	struct wire_pkt *p = &d->ring[(d->head + d->count) % WIRE_SLOTS];
	d->tx_free_ns = start + tx;
	p->due_ns = d->tx_free_ns + d->delay_ns;
	p->len = (uint16_t)len;
	memcpy(p->data, pkt, len);
	d->count++;
}

/* Deliver every packet due by t. */
static void dir_deliver(struct wire_dir *d, uint64_t t)
{
	while (d->count && d->ring[d->head].due_ns <= t) {
		struct wire_pkt *p = &d->ring[d->head];
		if (write(d->out, p->data, p->len) < 0 && errno != EAGAIN && errno != EIO)
			d->drops++;
		d->head = (d->head + 1) % WIRE_SLOTS;
		d->count--;
	}
}

int main(int argc, char **argv)
{
	struct wire_dir dirs[2 * WIRE_MAX_LINKS];
	struct pollfd pfd[2 * WIRE_MAX_LINKS];
	int n = 0, rc = 1;
	uint8_t buf[WIRE_MTU];

	if (argc < 3 || argc - 2 > WIRE_MAX_LINKS) {
		fprintf(stderr, "usage: wire READY_FILE TUN_A:TUN_B:DELAY_MS:KBIT_AB:KBIT_BA:BUFFER "
				"(up to %d links)\n",
			WIRE_MAX_LINKS);
		return 2;
	}
	memset(dirs, 0, sizeof(dirs));
	for (int i = 2; i < argc; i++) {
		char a[IFNAMSIZ], b[IFNAMSIZ];
		unsigned long long ms, kab, kba, buffer;
		if (sscanf(argv[i], "%15[^:]:%15[^:]:%llu:%llu:%llu:%llu", a, b, &ms, &kab, &kba,
			   &buffer) != 6) {
			fprintf(stderr, "wire: bad link %s\n", argv[i]);
			goto out;
		}
		int fa = tun_open(a), fb = tun_open(b);
		if (fa < 0 || fb < 0) {
			fprintf(stderr, "wire: tun %s/%s: %s\n", a, b, strerror(errno));
			goto out;
		}
		dirs[n] = (struct wire_dir){.in = fa, .out = fb, .delay_ns = ms * 1000000ull,
					    .kbit = kab, .buffer = buffer};
		dirs[n + 1] = (struct wire_dir){.in = fb, .out = fa, .delay_ns = ms * 1000000ull,
						.kbit = kba, .buffer = buffer};
		n += 2;
	}
	for (int i = 0; i < n; i++) {
		dirs[i].ring = calloc(WIRE_SLOTS, sizeof(struct wire_pkt));
		if (!dirs[i].ring)
			goto out;
		pfd[i] = (struct pollfd){.fd = dirs[i].in, .events = POLLIN};
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	FILE *f = fopen(argv[1], "w");
	if (!f)
		goto out;
	fclose(f);
	while (!g_stop) {
		uint64_t t = now_ns(), next = UINT64_MAX;
		for (int i = 0; i < n; i++) {
			dir_deliver(&dirs[i], t);
			if (dirs[i].count && dirs[i].ring[dirs[i].head].due_ns < next)
				next = dirs[i].ring[dirs[i].head].due_ns;
		}
		struct timespec ts = {.tv_sec = 1}, *tsp = &ts;
		if (next != UINT64_MAX) {
			uint64_t w = next > t ? next - t : 0;
			ts = (struct timespec){.tv_sec = (time_t)(w / 1000000000ull),
					       .tv_nsec = (long)(w % 1000000000ull)};
		}
		if (ppoll(pfd, (nfds_t)n, tsp, NULL) < 0 && errno != EINTR)
			break;
		t = now_ns();
		for (int i = 0; i < n; i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			for (int k = 0; k < 64; k++) { /* bounded: keep delivering on time */
				ssize_t r = read(dirs[i].in, buf, sizeof(buf));
				if (r <= 0)
					break;
				dir_accept(&dirs[i], buf, (size_t)r, t);
			}
		}
	}
	rc = 0;
	for (int i = 0; i < n; i += 2)
		fprintf(stderr, "wire: link %d drops %llu / %llu\n", i / 2,
			(unsigned long long)dirs[i].drops, (unsigned long long)dirs[i + 1].drops);
out:
	for (int i = 0; i < n; i++) {
		free(dirs[i].ring);
		close(dirs[i].in);
	}
	return rc;
}
