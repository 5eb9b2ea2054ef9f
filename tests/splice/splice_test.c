/* Splice correctness with real loopback TCP connections, through the data plane interface the
 * relay uses (dataplane.h): each case builds player <-> relay and relay <-> agent connections,
 * hands the two relay-side sockets to join(), and checks what the player and agent ends see.
 * The same cases run against the bpf plane and the userspace plane.
 *
 *   splice_test [bpf|userspace|all] [case-name-substring]
 *
 * Needs root (the bpf plane loads a program and pins maps under /sys/fs/bpf/dvv). Every wait is
 * bounded: socket timeouts, poll deadlines, and a per-case alarm. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "config.h"
#include "dataplane.h"
#include "dp_bpf.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define PIN_ROOT "/sys/fs/bpf/dvv"
#define CASE_ALARM_S 120      /* no case may take longer */
#define IO_TIMEOUT_S 20	      /* any single blocking send/recv on an app socket */
#define IDLE_WAIT_MS 10000    /* plane must release a finished pair within this */
#define BLK (64 * 1024)
#define RAND_SZ (4u << 20)

static const struct dataplane_ops *g_ops;
static struct dataplane g_dp;
static struct relay_cfg g_cfg;
static int g_lfd = -1;
static struct sockaddr_in g_laddr;
static uint8_t *g_rand;
static const char *g_case = "";

static bool is_bpf(void) { return g_ops == &dp_bpf_ops; }

/* ---- watchdog ---- */

static void on_alarm(int sig)
{
	char msg[256];
	int n = snprintf(msg, sizeof(msg), "[  FAILED  ] %s: still running after %d s (watchdog)\n",
			 g_case, CASE_ALARM_S);
	if (write(2, msg, (size_t)n) < 0)
		_exit(3);
	_exit(3);
}

static int case_setup(void **state)
{
	alarm(CASE_ALARM_S);
	return 0;
}

static int case_teardown(void **state)
{
	alarm(0);
	return 0;
}

/* ---- sockets ---- */

struct conn {
	int p, pr; /* player app end, relay end */
	int a, ar; /* agent app end, relay end */
};

static void set_timeouts(int fd, int secs)
{
	struct timeval tv = {.tv_sec = secs};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void tcp_link(int *app, int *relay)
{
	*app = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*app >= 0);
	assert_int_equal(connect(*app, (struct sockaddr *)&g_laddr, sizeof(g_laddr)), 0);
	*relay = accept4(g_lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	assert_true(*relay >= 0);
	set_timeouts(*app, IO_TIMEOUT_S);
}

static void conn_open(struct conn *c)
{
	tcp_link(&c->p, &c->pr);
	tcp_link(&c->a, &c->ar);
}

/* Hand the relay ends to the plane (which owns them from now on). */
static void conn_join(struct conn *c, uint64_t key)
{
	assert_int_equal(g_ops->join(&g_dp, c->pr, c->ar, key), 0);
	c->pr = c->ar = -1;
}

static void conn_close(struct conn *c)
{
	int *fds[] = {&c->p, &c->pr, &c->a, &c->ar};
	for (int i = 0; i < 4; i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
}

static void rst_close(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static int send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read exactly len bytes (or fail). */
static int recv_exact(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = recv(fd, p, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Wait for EOF: returns 0 on EOF, -ECONNRESET etc. on error, -EPROTO if bytes came instead. */
static int expect_eof(int fd)
{
	char b;
	ssize_t n;
	do
		n = recv(fd, &b, 1, 0);
	while (n < 0 && errno == EINTR);
	return n == 0 ? 0 : n < 0 ? -errno : -EPROTO;
}

/* The end of a connection: EOF or reset within the socket timeout. */
static bool ended(int fd)
{
	int rc = expect_eof(fd);
	return rc == 0 || rc == -ECONNRESET || rc == -EPIPE;
}

static bool wait_readable(int fd, int ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	return poll(&pfd, 1, ms) == 1;
}

/* ---- deterministic, non-periodic byte streams checked with CRC-32 ---- */

static void fill_block(uint8_t *blk, uint64_t idx, uint32_t seed)
{
	size_t off = (size_t)((idx * 7919u + seed * 104729u) % (RAND_SZ - BLK));
	memcpy(blk, g_rand + off, BLK);
	memcpy(blk, &idx, sizeof(idx));
	memcpy(blk + 8, &seed, sizeof(seed));
}

struct stream {
	int fd;
	uint64_t len;	    /* tx: bytes to send; rx: filled with bytes received */
	uint32_t seed;
	bool shut;	    /* tx: shutdown(SHUT_WR) after the last byte */
	unsigned delay_ms;  /* rx: wait before the first read (data piles up in the relay) */
	uint32_t crc;
	int err;	    /* 0 or -errno */
	bool eof;	    /* rx: saw EOF */
	pthread_t th;
};

static void *tx_main(void *arg)
{
	struct stream *s = arg;
	uint8_t *blk = malloc(BLK);
	uint64_t sent = 0;
	s->crc = (uint32_t)crc32(0, NULL, 0);
	for (uint64_t idx = 0; blk && sent < s->len; idx++) {
		size_t n = s->len - sent < BLK ? (size_t)(s->len - sent) : BLK;
		fill_block(blk, idx, s->seed);
		if ((s->err = send_all(s->fd, blk, n)))
			break;
		s->crc = (uint32_t)crc32(s->crc, blk, (uInt)n);
		sent += n;
	}
	if (!blk)
		s->err = -ENOMEM;
	if (!s->err && s->shut)
		shutdown(s->fd, SHUT_WR);
	free(blk);
	return NULL;
}

static void *rx_main(void *arg)
{
	struct stream *s = arg;
	size_t cap = 256 * 1024;
	uint8_t *buf = malloc(cap);
	s->crc = (uint32_t)crc32(0, NULL, 0);
	s->len = 0;
	if (s->delay_ms)
		usleep(s->delay_ms * 1000u);
	while (buf) {
		ssize_t n = recv(s->fd, buf, cap, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			s->err = -errno;
			break;
		}
		if (n == 0) {
			s->eof = true;
			break;
		}
		s->crc = (uint32_t)crc32(s->crc, buf, (uInt)n);
		s->len += (uint64_t)n;
	}
	if (!buf)
		s->err = -ENOMEM;
	free(buf);
	return NULL;
}

static void stream_start(struct stream *s, void *(*fn)(void *))
{
	assert_int_equal(pthread_create(&s->th, NULL, fn, s), 0);
}

static void stream_join(struct stream *s) { pthread_join(s->th, NULL); }

/* Expected CRC of the first len bytes of stream `seed`. */
static uint32_t stream_crc(uint64_t len, uint32_t seed)
{
	uint8_t *blk = malloc(BLK);
	uint32_t crc = (uint32_t)crc32(0, NULL, 0);
	assert_non_null(blk);
	for (uint64_t idx = 0, done = 0; done < len; idx++) {
		size_t n = len - done < BLK ? (size_t)(len - done) : BLK;
		fill_block(blk, idx, seed);
		crc = (uint32_t)crc32(crc, blk, (uInt)n);
		done += n;
	}
	free(blk);
	return crc;
}

#define assert_stream_received(rx, want_len, seed)                                             \
	do {                                                                                   \
		if ((rx)->err)                                                                 \
			fail_msg("%s: receiver got %s after %llu bytes, expected %llu + EOF",    \
				 g_case, strerror(-(rx)->err), (unsigned long long)(rx)->len,    \
				 (unsigned long long)(want_len));                                \
		if ((rx)->len != (want_len) || !(rx)->eof)                                     \
			fail_msg("%s: received %llu bytes (eof %d), expected %llu then EOF",     \
				 g_case, (unsigned long long)(rx)->len, (rx)->eof,              \
				 (unsigned long long)(want_len));                                \
		if ((rx)->crc != stream_crc((want_len), (seed)))                               \
			fail_msg("%s: %llu bytes arrived but their CRC differs from what was "   \
				 "sent", g_case, (unsigned long long)(want_len));                \
	} while (0)

/* ---- plane state ---- */

static int pinned_count(const char *inst, const char *map, uint64_t *n)
{
	char path[256];
	snprintf(path, sizeof(path), PIN_ROOT "/%s/%s", inst, map);
	int fd = bpf_obj_get(path);
	if (fd < 0)
		return -errno;
	uint64_t key, next;
	void *prev = NULL;
	*n = 0;
	while (bpf_map_get_next_key(fd, prev, &next) == 0 && *n < 10000000) {
		(*n)++;
		key = next;
		prev = &key;
	}
	close(fd);
	return 0;
}

/* Wait until the plane holds no pair and (bpf) its per-connection maps are empty, as read
 * independently through the pinned maps. */
static void wait_idle(const char *inst)
{
	uint64_t deadline = mono_ms() + IDLE_WAIT_MS, ns = 0, ntg = 0, nc = 0, nt = 0;
	int64_t active = 0;
	for (;;) {
		active = M_GET(splices_active);
		if (is_bpf()) {
			assert_int_equal(pinned_count(inst, "dvv_socks", &ns), 0);
			assert_int_equal(pinned_count(inst, "dvv_targets", &ntg), 0);
			assert_int_equal(pinned_count(inst, "dvv_conns", &nc), 0);
			assert_int_equal(pinned_count(inst, "dvv_tunnels", &nt), 0);
		}
		if (!active && !ns && !ntg && !nc && !nt)
			return;
		if (mono_ms() > deadline)
			break;
		usleep(2000);
	}
	fail_msg("%s: plane not idle after %d ms: %lld pairs active, maps socks %llu targets %llu "
		 "conns %llu tunnels %llu (expected all 0)", g_case, IDLE_WAIT_MS, (long long)active,
		 (unsigned long long)ns, (unsigned long long)ntg, (unsigned long long)nc,
		 (unsigned long long)nt);
}

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void cfg_init(struct relay_cfg *c, const char *inst, int max_lag_mb)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->bpf_pin_root, sizeof(c->bpf_pin_root), "%s", PIN_ROOT);
	snprintf(c->instance_id, sizeof(c->instance_id), "%s", inst);
	snprintf(c->dataplane, sizeof(c->dataplane), "%s", g_ops->name);
	c->max_lag_mb = max_lag_mb;
	c->workers = 2;
}

static bool pin_dir_exists(const char *inst)
{
	char path[256];
	struct stat st;
	snprintf(path, sizeof(path), PIN_ROOT "/%s", inst);
	return stat(path, &st) == 0;
}

static int group_setup(void **state)
{
	char inst[64];
	snprintf(inst, sizeof(inst), "splice-test-%d", (int)getpid());
	cfg_init(&g_cfg, inst, 64);
	memset(&g_dp, 0, sizeof(g_dp));
	g_dp.ops = g_ops;
	int rc = g_ops->start(&g_dp, &g_cfg);
	if (rc) {
		fprintf(stderr, "plane %s did not start: %s\n", g_ops->name, strerror(-rc));
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	g_ops->stop(&g_dp);
	if (is_bpf() && pin_dir_exists(g_cfg.instance_id)) {
		fprintf(stderr, "pins left behind in " PIN_ROOT "/%s after stop\n", g_cfg.instance_id);
		return -1;
	}
	return 0;
}

/* ---- the cases ---- */

static void one_gib_each_way_arrives_byte_exact(void **state)
{
	const uint64_t len = 1ull << 30;
	struct conn c;
	struct dvv_splice_stats st0 = {0}, st1 = {0};
	g_case = __func__;
	if (is_bpf())
		assert_int_equal(dp_bpf_stats(&g_dp, &st0, true), 0);
	conn_open(&c);
	conn_join(&c, 1);
	struct stream up_tx = {.fd = c.p, .len = len, .seed = 1, .shut = true};
	struct stream up_rx = {.fd = c.a};
	struct stream down_tx = {.fd = c.a, .len = len, .seed = 2, .shut = true};
	struct stream down_rx = {.fd = c.p};
	uint64_t t0 = mono_ms();
	stream_start(&up_rx, rx_main);
	stream_start(&down_rx, rx_main);
	stream_start(&up_tx, tx_main);
	stream_start(&down_tx, tx_main);
	stream_join(&up_tx);
	stream_join(&down_tx);
	stream_join(&up_rx);
	stream_join(&down_rx);
	uint64_t ms = mono_ms() - t0;
	print_message("  %s: 2 x 1 GiB in %llu ms (%.1f Gbit/s each way)\n", g_ops->name,
		      (unsigned long long)ms, ms ? 8.0 * (double)len / (double)ms / 1e6 : 0.0);
	assert_int_equal(up_tx.err, 0);
	assert_int_equal(down_tx.err, 0);
	assert_int_equal(up_rx.crc, up_tx.crc);
	assert_int_equal(down_rx.crc, down_tx.crc);
	assert_stream_received(&up_rx, len, 1);
	assert_stream_received(&down_rx, len, 2);
	conn_close(&c);
	wait_idle(g_cfg.instance_id);
	if (is_bpf()) {
		assert_int_equal(dp_bpf_stats(&g_dp, &st1, true), 0);
		uint64_t kern = st1.verdicts[DVV_V_REDIRECT].bytes - st0.verdicts[DVV_V_REDIRECT].bytes;
		uint64_t user = st1.user_bytes - st0.user_bytes;
		print_message("  bpf: %.1f%% of the bytes spliced in the kernel, %.1f%% relayed by "
			      "userspace; senders throttled %llu times\n",
			      100.0 * (double)kern / (double)(2 * len),
			      100.0 * (double)user / (double)(2 * len),
			      (unsigned long long)(st1.throttles - st0.throttles));
		assert_int_equal(kern + user, 2 * len);
		assert_int_equal(st1.verdicts[DVV_V_DROP].skbs, st0.verdicts[DVV_V_DROP].skbs);
	}
}

static void bytes_queued_before_join_arrive_once_and_in_order(void **state)
{
	struct conn c;
	g_case = __func__;
	conn_open(&c);
	/* both ends write before the relay hands the sockets over, and the bytes sit in the relay's
	 * receive queues; then each side writes more after the join */
	const uint64_t pre_up = 300 * 1024 + 17, pre_down = 100 * 1024 + 3;
	struct stream up_tx = {.fd = c.p, .len = pre_up, .seed = 11};
	struct stream down_tx = {.fd = c.a, .len = pre_down, .seed = 12};
	stream_start(&up_tx, tx_main);
	stream_start(&down_tx, tx_main);
	stream_join(&up_tx);
	stream_join(&down_tx);
	assert_int_equal(up_tx.err, 0);
	assert_int_equal(down_tx.err, 0);
	assert_true(wait_readable(c.pr, 2000));
	assert_true(wait_readable(c.ar, 2000));
	usleep(50 * 1000);
	conn_join(&c, 2);

	/* the agent reads what was queued first, as the real agent reads the handshake first */
	uint8_t *buf = malloc(pre_up);
	assert_non_null(buf);
	assert_int_equal(recv_exact(c.a, buf, pre_up), 0);
	assert_int_equal((uint32_t)crc32(crc32(0, NULL, 0), buf, (uInt)pre_up),
			 stream_crc(pre_up, 11));
	free(buf);
	buf = malloc(pre_down);
	assert_non_null(buf);
	assert_int_equal(recv_exact(c.p, buf, pre_down), 0);
	assert_int_equal((uint32_t)crc32(crc32(0, NULL, 0), buf, (uInt)pre_down),
			 stream_crc(pre_down, 12));
	free(buf);

	/* then more each way, then FINs: nothing duplicated, nothing missing */
	struct stream up2 = {.fd = c.p, .len = 3 << 20, .seed = 13, .shut = true};
	struct stream down2 = {.fd = c.a, .len = 2 << 20, .seed = 14, .shut = true};
	struct stream up2_rx = {.fd = c.a}, down2_rx = {.fd = c.p};
	stream_start(&up2_rx, rx_main);
	stream_start(&down2_rx, rx_main);
	stream_start(&up2, tx_main);
	stream_start(&down2, tx_main);
	stream_join(&up2);
	stream_join(&down2);
	stream_join(&up2_rx);
	stream_join(&down2_rx);
	assert_stream_received(&up2_rx, 3 << 20, 13);
	assert_stream_received(&down2_rx, 2 << 20, 14);
	conn_close(&c);
	wait_idle(g_cfg.instance_id);
}

/* A Minecraft client sends its handshake and waits; the relay only peeked at it. */
static void peeked_handshake_is_forwarded_exactly_once(void **state)
{
	static const uint8_t hs[] = {0x15, 0x00, 0xfd, 0x05, 0x0e, 's', 'l', 'e', 'e', 'p', 'y',
				     '.', 'e', 'u', '.', 'd', 'v', 'v', 0x63, 0xdd, 0x01};
	static const uint8_t status_req[] = {0x01, 0x00};
	static const char reply[] = "\x30\x00\x2e{\"description\":\"a server behind a tunnel\"}";
	uint8_t buf[256];
	struct conn c;
	g_case = __func__;
	conn_open(&c);
	assert_int_equal(send_all(c.p, hs, sizeof(hs)), 0);
	assert_int_equal(send_all(c.p, status_req, sizeof(status_req)), 0);
	/* the relay routes on a peek: the bytes stay in the socket */
	size_t seen = 0;
	for (int tries = 0; tries < 200 && seen < sizeof(hs) + sizeof(status_req); tries++) {
		ssize_t n = recv(c.pr, buf, sizeof(buf), MSG_PEEK);
		seen = n > 0 ? (size_t)n : seen;
		if (seen < sizeof(hs) + sizeof(status_req))
			usleep(5000);
	}
	assert_int_equal(seen, sizeof(hs) + sizeof(status_req));
	conn_join(&c, 3);

	assert_int_equal(recv_exact(c.a, buf, sizeof(hs)), 0);
	assert_memory_equal(buf, hs, sizeof(hs));
	assert_int_equal(recv_exact(c.a, buf, sizeof(status_req)), 0);
	assert_memory_equal(buf, status_req, sizeof(status_req));
	/* nothing more: a second copy of the handshake would be right here */
	if (wait_readable(c.a, 300)) {
		ssize_t n = recv(c.a, buf, sizeof(buf), MSG_DONTWAIT);
		fail_msg("%s: %zd unexpected bytes after the handshake (duplicate?)", g_case, n);
	}
	assert_int_equal(send_all(c.a, reply, sizeof(reply) - 1), 0);
	assert_int_equal(recv_exact(c.p, buf, sizeof(reply) - 1), 0);
	assert_memory_equal(buf, reply, sizeof(reply) - 1);
	/* the client pings, gets its pong, closes */
	static const uint8_t ping[] = {0x09, 0x01, 1, 2, 3, 4, 5, 6, 7, 8};
	assert_int_equal(send_all(c.p, ping, sizeof(ping)), 0);
	assert_int_equal(recv_exact(c.a, buf, sizeof(ping)), 0);
	assert_int_equal(send_all(c.a, buf, sizeof(ping)), 0);
	assert_int_equal(recv_exact(c.p, buf, sizeof(ping)), 0);
	assert_memory_equal(buf, ping, sizeof(ping));
	shutdown(c.p, SHUT_WR);
	assert_int_equal(expect_eof(c.a), 0);
	shutdown(c.a, SHUT_WR);
	assert_int_equal(expect_eof(c.p), 0);
	conn_close(&c);
	wait_idle(g_cfg.instance_id);
}

/* FIN from `first` while the other end has not read yet: every byte still arrives, then EOF;
 * the half-closed side can still receive the other direction. */
static void fin_with_data_in_flight(bool player_first)
{
	const uint64_t big = 48ull << 20, small = 3ull << 20;
	struct conn c;
	conn_open(&c);
	conn_join(&c, 4);
	int first = player_first ? c.p : c.a, second = player_first ? c.a : c.p;
	struct stream tx = {.fd = first, .len = big, .seed = 21, .shut = true};
	struct stream rx = {.fd = second, .delay_ms = 700};
	stream_start(&rx, rx_main);
	stream_start(&tx, tx_main);
	stream_join(&tx);
	stream_join(&rx);
	assert_int_equal(tx.err, 0);
	assert_stream_received(&rx, big, 21);
	/* now the other way, towards the side that already sent its FIN */
	struct stream tx2 = {.fd = second, .len = small, .seed = 22, .shut = true};
	struct stream rx2 = {.fd = first, .delay_ms = 200};
	stream_start(&rx2, rx_main);
	stream_start(&tx2, tx_main);
	stream_join(&tx2);
	stream_join(&rx2);
	assert_int_equal(tx2.err, 0);
	assert_stream_received(&rx2, small, 22);
	conn_close(&c);
	wait_idle(g_cfg.instance_id);
}

static void player_fin_with_data_in_flight_loses_no_tail(void **state)
{
	g_case = __func__;
	fin_with_data_in_flight(true);
}

static void agent_fin_with_data_in_flight_loses_no_tail(void **state)
{
	g_case = __func__;
	fin_with_data_in_flight(false);
}

static void both_fins_at_once_with_data_both_ways(void **state)
{
	const uint64_t len = 20ull << 20;
	struct conn c;
	g_case = __func__;
	conn_open(&c);
	conn_join(&c, 5);
	struct stream up = {.fd = c.p, .len = len, .seed = 31, .shut = true};
	struct stream down = {.fd = c.a, .len = len + 5, .seed = 32, .shut = true};
	struct stream up_rx = {.fd = c.a, .delay_ms = 300}, down_rx = {.fd = c.p, .delay_ms = 300};
	stream_start(&up_rx, rx_main);
	stream_start(&down_rx, rx_main);
	stream_start(&up, tx_main);
	stream_start(&down, tx_main);
	stream_join(&up);
	stream_join(&down);
	stream_join(&up_rx);
	stream_join(&down_rx);
	assert_stream_received(&up_rx, len, 31);
	assert_stream_received(&down_rx, len + 5, 32);
	conn_close(&c);
	wait_idle(g_cfg.instance_id);
}

/* RST from one side: the other side's connection ends too (EOF or reset), promptly, and the
 * plane lets go of the pair. */
static void rst_tears_down_both(bool from_player, bool in_flight)
{
	struct conn c;
	uint8_t buf[4096];
	conn_open(&c);
	conn_join(&c, 6);
	int rst = from_player ? c.p : c.a, other = from_player ? c.a : c.p;
	/* prove the pair is spliced first */
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(send_all(rst, buf, sizeof(buf)), 0);
	assert_int_equal(recv_exact(other, buf, sizeof(buf)), 0);
	if (in_flight) {
		/* the victim has unread bytes queued towards it when the reset comes */
		struct stream tx = {.fd = other, .len = 8 << 20, .seed = 41};
		set_timeouts(other, 3);
		stream_start(&tx, tx_main);
		usleep(200 * 1000);
		rst_close(rst);
		stream_join(&tx);
		/* the sender either finished into buffers or was reset: it must not hang */
	} else {
		rst_close(rst);
	}
	if (from_player)
		c.p = -1;
	else
		c.a = -1;
	set_timeouts(other, 5);
	/* drain whatever was in flight, then the end must come */
	uint64_t deadline = mono_ms() + 5000;
	bool done = false;
	while (!done && mono_ms() < deadline) {
		ssize_t n = recv(other, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE)))
			done = true;
		else if (n < 0 && errno != EINTR)
			fail_msg("%s: after the reset, the other end got %s instead of EOF/RST",
				 g_case, strerror(errno));
	}
	if (!done)
		fail_msg("%s: the other end did not see its connection end within 5 s", g_case);
	conn_close(&c);
	wait_idle(g_cfg.instance_id);
}

static void player_rst_tears_down_both(void **state)
{
	g_case = __func__;
	rst_tears_down_both(true, false);
}

static void agent_rst_tears_down_both(void **state)
{
	g_case = __func__;
	rst_tears_down_both(false, false);
}

static void player_rst_with_data_in_flight_tears_down_both(void **state)
{
	g_case = __func__;
	rst_tears_down_both(true, true);
}

static void agent_rst_with_data_in_flight_tears_down_both(void **state)
{
	g_case = __func__;
	rst_tears_down_both(false, true);
}

/* A reader that never reads: the relay must not buffer without bound. The userspace plane
 * pushes back (the sender blocks). The bpf plane clamps the sender's window past min(4 MiB,
 * --max-lag-mb / 2), so TCP pushes back too, and cuts the pair once the reader has acknowledged
 * nothing for its stall limit (or sooner, over --max-lag-mb). Either way, what the sender got rid
 * of stays under the limit + socket buffers. */
static void slow_reader_is_bounded(void **state)
{
	const int lag_mb = 4;
	const uint64_t slack = 48ull << 20; /* 4 socket buffers + pipes, loopback autotuning */
	struct relay_cfg cfg;
	struct dataplane dp = {.ops = g_ops};
	char inst[64];
	struct conn c;
	g_case = __func__;
	snprintf(inst, sizeof(inst), "splice-test-lag-%d", (int)getpid());
	cfg_init(&cfg, inst, lag_mb);
	assert_int_equal(g_ops->start(&dp, &cfg), 0);
	conn_open(&c);
	assert_int_equal(g_ops->join(&dp, c.pr, c.ar, 7), 0);
	c.pr = c.ar = -1;
	fcntl(c.p, F_SETFL, O_NONBLOCK);
	uint8_t *blk = calloc(1, BLK);
	assert_non_null(blk);
	uint64_t pushed = 0, t0 = mono_ms(), blocked_since = 0;
	bool cut = false, pushed_back = false;
	while (mono_ms() - t0 < 40000) {
		ssize_t n = send(c.p, blk, BLK, MSG_NOSIGNAL);
		if (n > 0) {
			pushed += (uint64_t)n;
			blocked_since = 0;
			continue;
		}
		if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
			cut = true;
			break;
		}
		assert_true(n < 0 && errno == EAGAIN);
		if (!blocked_since)
			blocked_since = mono_ms();
		if (!is_bpf() && mono_ms() - blocked_since > 1500) {
			pushed_back = true;
			break;
		}
		poll(&(struct pollfd){.fd = c.p, .events = POLLOUT}, 1, 50);
	}
	free(blk);
	print_message("  %s: sender pushed %llu MiB, then %s after %llu ms\n", g_ops->name,
		      (unsigned long long)(pushed >> 20),
		      cut ? "was cut" : pushed_back ? "was blocked" : "nothing",
		      (unsigned long long)(mono_ms() - t0));
	if (is_bpf()) {
		struct dvv_splice_stats st;
		if (!cut)
			fail_msg("%s: a reader that never reads was not cut (sender pushed %llu MiB "
				 "with a %d MiB lag limit)", g_case,
				 (unsigned long long)(pushed >> 20), lag_mb);
		assert_int_equal(dp_bpf_stats(&dp, &st, true), 0);
		assert_true(st.cut_lag >= 1);
		assert_true(st.throttles + st.verdicts[DVV_V_LAG_DROP].skbs >= 1);
		/* the agent end sees a reset, not a clean EOF: the stream is incomplete */
		set_timeouts(c.a, 5);
		uint8_t b[65536];
		ssize_t n;
		while ((n = recv(c.a, b, sizeof(b), 0)) > 0)
			;
		assert_true(n < 0 && errno == ECONNRESET);
	} else {
		if (!pushed_back)
			fail_msg("%s: sender was neither cut nor blocked", g_case);
	}
	if (pushed > ((uint64_t)lag_mb << 20) + slack)
		fail_msg("%s: the relay took %llu MiB towards a reader that reads nothing (limit "
			 "%d MiB + %llu MiB of socket buffers)", g_case,
			 (unsigned long long)(pushed >> 20), lag_mb,
			 (unsigned long long)(slack >> 20));
	conn_close(&c);
	/* wait until this instance is idle before stopping it */
	uint64_t deadline = mono_ms() + IDLE_WAIT_MS;
	while (M_GET(splices_active) && mono_ms() < deadline)
		usleep(2000);
	assert_int_equal(M_GET(splices_active), 0);
	if (is_bpf()) {
		uint64_t n;
		assert_int_equal(pinned_count(inst, "dvv_conns", &n), 0);
		assert_int_equal(n, 0);
	}
	g_ops->stop(&dp);
	assert_false(pin_dir_exists(inst));
}

static void many_short_connections_leave_nothing_behind(void **state)
{
	const int total = 1000, batch = 100;
	g_case = __func__;
	int fds_before = count_fds();
	struct dvv_splice_stats st0 = {0}, st1 = {0};
	if (is_bpf())
		assert_int_equal(dp_bpf_stats(&g_dp, &st0, true), 0);
	struct conn *cs = calloc(batch, sizeof(*cs));
	assert_non_null(cs);
	for (int done = 0; done < total; done += batch) {
		for (int i = 0; i < batch; i++) {
			char hello[32];
			conn_open(&cs[i]);
			int n = snprintf(hello, sizeof(hello), "hello %08d", done + i);
			assert_int_equal(send_all(cs[i].p, hello, (size_t)n), 0);
			conn_join(&cs[i], 100 + (uint64_t)(i % 7));
		}
		for (int i = 0; i < batch; i++) {
			char want[32], got[32];
			int n = snprintf(want, sizeof(want), "hello %08d", done + i);
			assert_int_equal(recv_exact(cs[i].a, got, (size_t)n), 0);
			assert_memory_equal(got, want, (size_t)n);
			want[0] = 'H';
			assert_int_equal(send_all(cs[i].a, want, (size_t)n), 0);
			assert_int_equal(recv_exact(cs[i].p, got, (size_t)n), 0);
			assert_memory_equal(got, want, (size_t)n);
			/* half of them close politely, the others with a reset */
			if (i % 2) {
				shutdown(cs[i].p, SHUT_WR);
				assert_int_equal(expect_eof(cs[i].a), 0);
				shutdown(cs[i].a, SHUT_WR);
				assert_int_equal(expect_eof(cs[i].p), 0);
			} else {
				rst_close(cs[i].a);
				cs[i].a = -1;
				assert_true(ended(cs[i].p));
			}
			conn_close(&cs[i]);
		}
	}
	free(cs);
	wait_idle(g_cfg.instance_id);
	if (is_bpf()) {
		assert_int_equal(dp_bpf_stats(&g_dp, &st1, true), 0);
		/* every one of them was spliced in the kernel, none fell back to splice(2) */
		assert_int_equal(st1.pairs_total - st0.pairs_total, total);
		assert_int_equal(st1.pairs_demoted - st0.pairs_demoted, 0);
		assert_int_equal(st1.pairs_active, 0);
		assert_int_equal(st1.sockets_in_map + st1.active_in_map + st1.conns_in_map +
					 st1.tunnels_in_map, 0);
	}
	int fds_after = count_fds();
	if (fds_after != fds_before)
		fail_msg("%s: %d file descriptors before, %d after", g_case, fds_before, fds_after);
}

/* A player that sends its handshake and a FIN before the join (a socket the sockhash refuses
 * in CLOSE_WAIT) is still relayed: the bpf plane hands such a pair to splice(2). */
static void fin_before_join_is_still_relayed(void **state)
{
	static const char req[] = "handshake-then-fin";
	static const char rep[] = "reply-after-fin";
	char buf[64];
	struct conn c;
	g_case = __func__;
	conn_open(&c);
	assert_int_equal(send_all(c.p, req, sizeof(req)), 0);
	shutdown(c.p, SHUT_WR);
	usleep(50 * 1000);
	conn_join(&c, 8);
	assert_int_equal(recv_exact(c.a, buf, sizeof(req)), 0);
	assert_memory_equal(buf, req, sizeof(req));
	assert_int_equal(expect_eof(c.a), 0);
	assert_int_equal(send_all(c.a, rep, sizeof(rep)), 0);
	shutdown(c.a, SHUT_WR);
	assert_int_equal(recv_exact(c.p, buf, sizeof(rep)), 0);
	assert_memory_equal(buf, rep, sizeof(rep));
	assert_int_equal(expect_eof(c.p), 0);
	conn_close(&c);
	wait_idle(g_cfg.instance_id);
}

/* stop() with live pairs: every socket is released and (bpf) the pins are gone. */
static void stop_with_live_pairs_releases_everything(void **state)
{
	struct relay_cfg cfg;
	struct dataplane dp = {.ops = g_ops};
	struct conn c[10];
	char inst[64], b;
	g_case = __func__;
	int fds_before = count_fds();
	snprintf(inst, sizeof(inst), "splice-test-stop-%d", (int)getpid());
	cfg_init(&cfg, inst, 64);
	assert_int_equal(g_ops->start(&dp, &cfg), 0);
	for (int i = 0; i < 10; i++) {
		conn_open(&c[i]);
		assert_int_equal(send_all(c[i].p, "x", 1), 0);
		assert_int_equal(g_ops->join(&dp, c[i].pr, c[i].ar, 9), 0);
		c[i].pr = c[i].ar = -1;
		assert_int_equal(recv_exact(c[i].a, &b, 1), 0);
	}
	g_ops->stop(&dp);
	for (int i = 0; i < 10; i++) {
		assert_true(ended(c[i].p));
		assert_true(ended(c[i].a));
		conn_close(&c[i]);
	}
	assert_false(pin_dir_exists(inst));
	assert_int_equal(M_GET(splices_active), 0);
	assert_int_equal(count_fds(), fds_before);
}

/* ---- bpf only ---- */

static void bpf_pinned_maps_dump_as_named_fields(void **state)
{
	struct conn c;
	char cmd[512], line[512];
	g_case = __func__;
	if (!is_bpf())
		skip();
	conn_open(&c);
	assert_int_equal(send_all(c.p, "abc", 3), 0);
	conn_join(&c, 0x1234);
	assert_int_equal(recv_exact(c.a, line, 3), 0);
	snprintf(cmd, sizeof(cmd), "bpftool map dump pinned " PIN_ROOT "/%s/dvv_conns 2>&1",
		 g_cfg.instance_id);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	bool peer = false, key = false;
	while (fgets(line, sizeof(line), f)) {
		peer |= strstr(line, "\"peer_cookie\"") != NULL;
		key |= strstr(line, "\"tunnel_key\": 4660") != NULL;
	}
	pclose(f);
	if (!peer || !key)
		fail_msg("%s: `%s` did not print dvv_conn fields (peer_cookie, tunnel_key 4660)",
			 g_case, cmd);
	uint64_t to_agent = 0, to_player = 0;
	assert_int_equal(dp_bpf_tunnel_bytes(&g_dp, 0x1234, &to_agent, &to_player), 0);
	assert_int_equal(to_agent, 3);
	assert_int_equal(to_player, 0);
	conn_close(&c);
	wait_idle(g_cfg.instance_id);
	assert_int_equal(dp_bpf_tunnel_bytes(&g_dp, 0x1234, &to_agent, &to_player), -ENOENT);
}

static void bpf_force_fail_falls_back_to_userspace(void **state)
{
	struct relay_cfg cfg;
	struct dataplane dp = {0};
	g_case = __func__;
	if (!is_bpf())
		skip();
	cfg_init(&cfg, "splice-test-fallback", 64);
	snprintf(cfg.dataplane, sizeof(cfg.dataplane), "auto");
	setenv("DVV_BPF_FORCE_FAIL", "1", 1);
	int rc = dataplane_select(&dp, &cfg);
	assert_int_equal(rc, 0);
	assert_ptr_equal(dp.ops, &dp_userspace_ops);
	dp.ops->stop(&dp);
	memset(&dp, 0, sizeof(dp));
	snprintf(cfg.dataplane, sizeof(cfg.dataplane), "bpf");
	rc = dataplane_select(&dp, &cfg);
	unsetenv("DVV_BPF_FORCE_FAIL");
	assert_true(rc < 0);
	assert_null(dp.ops);
	assert_false(pin_dir_exists("splice-test-fallback"));
}

static void bpf_zero_length_fin_is_dropped_not_redirected(void **state)
{
	struct dvv_splice_stats st0, st1;
	struct conn c;
	char b;
	g_case = __func__;
	if (!is_bpf())
		skip();
	assert_int_equal(dp_bpf_stats(&g_dp, &st0, true), 0);
	conn_open(&c);
	conn_join(&c, 10);
	assert_int_equal(send_all(c.p, "q", 1), 0);
	assert_int_equal(recv_exact(c.a, &b, 1), 0);
	shutdown(c.p, SHUT_WR); /* a bare FIN */
	assert_int_equal(expect_eof(c.a), 0);
	/* the agent can still talk to the half-closed player: the FIN did not break its path */
	assert_int_equal(send_all(c.a, "r", 1), 0);
	assert_int_equal(recv_exact(c.p, &b, 1), 0);
	assert_int_equal(b, 'r');
	shutdown(c.a, SHUT_WR);
	assert_int_equal(expect_eof(c.p), 0);
	conn_close(&c);
	wait_idle(g_cfg.instance_id);
	assert_int_equal(dp_bpf_stats(&g_dp, &st1, true), 0);
	assert_true(st1.verdicts[DVV_V_ZERO_LEN].skbs - st0.verdicts[DVV_V_ZERO_LEN].skbs >= 1);
	assert_int_equal(st1.verdicts[DVV_V_REDIRECT].bytes - st0.verdicts[DVV_V_REDIRECT].bytes, 2);
	assert_int_equal(st1.verdicts[DVV_V_DROP].skbs, st0.verdicts[DVV_V_DROP].skbs);
}

/* ---- main ---- */

#define CASES(X)                                                                               \
	X(one_gib_each_way_arrives_byte_exact)                                                 \
	X(bytes_queued_before_join_arrive_once_and_in_order)                                   \
	X(peeked_handshake_is_forwarded_exactly_once)                                          \
	X(player_fin_with_data_in_flight_loses_no_tail)                                        \
	X(agent_fin_with_data_in_flight_loses_no_tail)                                         \
	X(both_fins_at_once_with_data_both_ways)                                               \
	X(player_rst_tears_down_both)                                                          \
	X(agent_rst_tears_down_both)                                                           \
	X(player_rst_with_data_in_flight_tears_down_both)                                      \
	X(agent_rst_with_data_in_flight_tears_down_both)                                       \
	X(slow_reader_is_bounded)                                                              \
	X(many_short_connections_leave_nothing_behind)                                         \
	X(fin_before_join_is_still_relayed)                                                    \
	X(stop_with_live_pairs_releases_everything)                                            \
	X(bpf_pinned_maps_dump_as_named_fields)                                                \
	X(bpf_force_fail_falls_back_to_userspace)                                              \
	X(bpf_zero_length_fin_is_dropped_not_redirected)

static int run_plane(const struct dataplane_ops *ops, const char *filter, int *ntests)
{
	struct CMUnitTest all[] = {
#define X(name) cmocka_unit_test_setup_teardown(name, case_setup, case_teardown),
		CASES(X)
#undef X
	};
	struct CMUnitTest sel[sizeof(all) / sizeof(all[0])];
	size_t n = 0;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (ops != &dp_bpf_ops && !strncmp(all[i].name, "bpf_", 4))
			continue; /* checks of the bpf plane's own machinery */
		if (!filter || strstr(all[i].name, filter))
			sel[n++] = all[i];
	}
	g_ops = ops;
	*ntests = (int)n;
	char group[64];
	snprintf(group, sizeof(group), "splice through the %s plane", ops->name);
	return _cmocka_run_group_tests(group, sel, n, group_setup, group_teardown);
}

int main(int argc, char **argv)
{
	const char *which = argc > 1 ? argv[1] : "all";
	const char *filter = argc > 2 ? argv[2] : NULL;
	const char *lvl = getenv("DVV_TEST_LOG");
	log_init("splice_test", lvl && log_level_parse(lvl) >= 0 ? log_level_parse(lvl) : LOG_WARN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	if (strcmp(which, "all") && strcmp(which, "bpf") && strcmp(which, "userspace")) {
		fprintf(stderr, "usage: %s [bpf|userspace|all] [case-name-substring]\n", argv[0]);
		return 2;
	}

	g_rand = malloc(RAND_SZ);
	if (!g_rand)
		return 1;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < RAND_SZ; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(g_rand + i, &x, 8);
	}
	socklen_t sl = sizeof(g_laddr);
	g_laddr = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	g_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (g_lfd < 0 || bind(g_lfd, (struct sockaddr *)&g_laddr, sizeof(g_laddr)) ||
	    listen(g_lfd, 512) || getsockname(g_lfd, (struct sockaddr *)&g_laddr, &sl)) {
		perror("loopback listener");
		return 1;
	}

	int failed = 0, total = 0, n;
	const struct dataplane_ops *planes[] = {&dp_bpf_ops, &dp_userspace_ops};
	for (int i = 0; i < 2; i++) {
		if (strcmp(which, "all") && strcmp(which, planes[i]->name))
			continue;
		int f = run_plane(planes[i], filter, &n);
		total += n;
		/* a group that could not start counts every case as failed */
		failed += f < 0 ? n : f;
	}
	close(g_lfd);
	free(g_rand);
	/* one closing line over both planes, in cmocka's format, for scripts/test.sh */
	printf("[==========] splice: %d test(s) over %s plane(s).\n", total, which);
	printf("[  PASSED  ] %d test(s).\n", total - failed);
	if (failed)
		printf("[  FAILED  ] %d test(s).\n", failed);
	return failed ? 1 : 0;
}
