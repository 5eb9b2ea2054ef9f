/* Bandwidth accounting, the parts that need no Redis: the delta arithmetic of a flush (new bytes
 * from cumulative counters, a recreated counter, the backlog bound), billing-period rollover
 * (plan_period), the per-tunnel accounting table's lifetime (holders keep the counts past the
 * last pair; the last reference deletes the plane's state), and exact per-tunnel counts on both
 * data planes, including a held tunnel whose pair ended (bpf needs root: skipped otherwise).
 * The Redis script itself is exercised end to end in tests/e2e/usage.test.mjs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "config.h"
#include "dataplane.h"
#include "dp_acct.h"
#include "log.h"
#include "metrics.h"
#include "plan.h"
#include "usage.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void take_returns_new_bytes_of_both_ways(void **state)
{
	struct usage_ctr c = {0};
	uint64_t dropped = 0;
	assert_int_equal(usage_take(&c, 100, 50, UINT64_MAX, &dropped), 150);
	assert_int_equal(c.backlog, 150);
	/* nothing moved: no delta, backlog unchanged */
	assert_int_equal(usage_take(&c, 100, 50, UINT64_MAX, &dropped), 0);
	assert_int_equal(usage_take(&c, 1100, 60, UINT64_MAX, &dropped), 1010);
	assert_int_equal(c.backlog, 1160);
	/* a flush confirmed part of it: the rest stays */
	c.backlog -= 1000;
	assert_int_equal(usage_take(&c, 1101, 60, UINT64_MAX, &dropped), 1);
	assert_int_equal(c.backlog, 161);
	assert_int_equal(dropped, 0);
}

static void take_treats_a_lower_counter_as_a_new_entry(void **state)
{
	struct usage_ctr c = {0};
	uint64_t dropped = 0;
	usage_take(&c, 5000, 7000, UINT64_MAX, &dropped);
	c.backlog = 0;
	/* the plane's entry was freed and created again: everything it shows is new */
	assert_int_equal(usage_take(&c, 30, 7001, UINT64_MAX, &dropped), 31);
	assert_int_equal(c.seen[0], 30);
	assert_int_equal(c.seen[1], 7001);
}

static void backlog_is_bounded_and_the_excess_counted(void **state)
{
	struct usage_ctr c = {0};
	uint64_t dropped = 0;
	assert_int_equal(usage_take(&c, 600, 0, 1000, &dropped), 600);
	assert_int_equal(usage_take(&c, 1000, 300, 1000, &dropped), 700);
	assert_int_equal(c.backlog, 1000);
	assert_int_equal(dropped, 300);
	/* full: every new byte is dropped, none wraps */
	assert_int_equal(usage_take(&c, 1000, 400, 1000, &dropped), 100);
	assert_int_equal(c.backlog, 1000);
	assert_int_equal(dropped, 400);
	/* Redis came back: room again */
	c.backlog = 0;
	usage_take(&c, 1010, 400, 1000, &dropped);
	assert_int_equal(c.backlog, 10);
	assert_int_equal(dropped, 400);
	/* bytes near 2^64 never overflow the sum */
	struct usage_ctr big = {.seen = {0, 0}, .backlog = UINT64_MAX - 5};
	dropped = 0;
	usage_take(&big, 10, 0, UINT64_MAX, &dropped);
	assert_int_equal(big.backlog, UINT64_MAX);
	assert_int_equal(dropped, 5);
}

static int64_t utc(int y, int mon, int d, int h, int mi, int s)
{
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d, .tm_hour = h,
			.tm_min = mi, .tm_sec = s};
	return (int64_t)timegm(&tm);
}

static void period_rolls_over_with_the_month_or_the_plan(void **state)
{
	struct plan_limits none = {0};
	int64_t s, e;
	plan_period(&none, utc(2026, 12, 31, 23, 59, 59), &s, &e);
	assert_int_equal(s, utc(2026, 12, 1, 0, 0, 0));
	assert_int_equal(e, utc(2027, 1, 1, 0, 0, 0));
	/* one second later the period is new: the script resets the hash on it */
	plan_period(&none, utc(2027, 1, 1, 0, 0, 0), &s, &e);
	assert_int_equal(s, utc(2027, 1, 1, 0, 0, 0));
	/* a paid plan's own period wins while now is inside it... */
	struct plan_limits paid = {.period_start = utc(2026, 12, 15, 10, 0, 0),
				   .period_end = utc(2027, 1, 15, 10, 0, 0)};
	plan_period(&paid, utc(2027, 1, 2, 0, 0, 0), &s, &e);
	assert_int_equal(s, paid.period_start);
	assert_int_equal(e, paid.period_end);
	/* ...and once it ended without a renewal the calendar month counts */
	plan_period(&paid, utc(2027, 1, 20, 0, 0, 0), &s, &e);
	assert_int_equal(s, utc(2027, 1, 1, 0, 0, 0));
}

/* ---- the accounting table ---- */

static int created, freed;
static uint64_t last_freed;
static int on_create(void *o, uint64_t key)
{
	created++;
	return key == 666 ? -EPERM : 0;
}
static void on_free(void *o, uint64_t key)
{
	freed++;
	last_freed = key;
}

static void holder_keeps_counts_past_the_last_pair(void **state)
{
	struct dp_acct_tab t = {0};
	uint64_t a, p;
	int err = 0;
	created = freed = 0;
	assert_int_equal(dp_acct_init(&t, 2), 0);
	t.on_create = on_create;
	t.on_free = on_free;
	struct dp_acct *hold = dp_acct_get(&t, 7, &err);
	assert_non_null(hold);
	struct dp_acct *pair = dp_acct_pair_get(&t, 7, &err);
	assert_ptr_equal(pair, hold);
	assert_int_equal(created, 1);
	assert_int_equal(atomic_load(&hold->pairs), 1);
	dp_acct_add(pair, DP_TO_AGENT, 123);
	dp_acct_add(pair, DP_TO_PLAYER, 45);
	dp_acct_pair_put(&t, pair);
	assert_int_equal(atomic_load(&hold->pairs), 0);
	assert_int_equal(freed, 0);
	assert_int_equal(dp_acct_read(&t, 7, &a, &p), 0);
	assert_int_equal(a, 123);
	assert_int_equal(p, 45);
	dp_acct_put(&t, hold);
	assert_int_equal(freed, 1);
	assert_int_equal(last_freed, 7);
	assert_int_equal(dp_acct_read(&t, 7, &a, &p), -ENOENT);
	/* without a holder the last pair takes the entry with it */
	pair = dp_acct_pair_get(&t, 8, &err);
	dp_acct_pair_put(&t, pair);
	assert_int_equal(freed, 2);
	assert_int_equal(dp_acct_count(&t), 0);
	/* key 0 is never counted; the bound and the plane's refusal are errors */
	assert_null(dp_acct_get(&t, 0, &err));
	assert_int_equal(err, -EINVAL);
	assert_null(dp_acct_get(&t, 666, &err));
	assert_int_equal(err, -EPERM);
	struct dp_acct *x = dp_acct_get(&t, 1, &err), *y = dp_acct_get(&t, 2, &err);
	assert_null(dp_acct_get(&t, 3, &err));
	assert_int_equal(err, -ENOSPC);
	dp_acct_put(&t, x);
	dp_acct_put(&t, y);
	dp_acct_free(&t);
}

/* ---- both planes: exact per-tunnel counts, held past the pair ---- */

static void tcp_pair(int lfd, const struct sockaddr_in *sa, int *app, int *relay)
{
	*app = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*app >= 0);
	assert_int_equal(connect(*app, (const struct sockaddr *)sa, sizeof(*sa)), 0);
	*relay = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	assert_true(*relay >= 0);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(*app, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static void recv_all(int fd, size_t n)
{
	char buf[65536];
	while (n) {
		ssize_t k = recv(fd, buf, n < sizeof(buf) ? n : sizeof(buf), 0);
		assert_true(k > 0);
		n -= (size_t)k;
	}
}

static void plane_counts(const char *plane)
{
	struct relay_cfg cfg;
	struct dataplane dp = {0};
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.bpf_pin_root, sizeof(cfg.bpf_pin_root), "/sys/fs/bpf/dvv");
	snprintf(cfg.instance_id, sizeof(cfg.instance_id), "unit-usage-%d", (int)getpid());
	snprintf(cfg.dataplane, sizeof(cfg.dataplane), "%s", plane);
	cfg.max_lag_mb = 64;
	cfg.workers = 2;
	assert_int_equal(dataplane_select(&dp, &cfg), 0);
	assert_string_equal(dp.ops->name, plane);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), p, pr, a, ar;
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);

	struct dp_acct *hold = dp.ops->acct_hold(&dp, 0xabc);
	assert_non_null(hold);
	static char big[300000];
	memset(big, 'x', sizeof(big));
	uint64_t ta, tp, want_a = 0, want_p = 0;
	for (int round = 0; round < 2; round++) {
		tcp_pair(lfd, &sa, &p, &pr);
		tcp_pair(lfd, &sa, &a, &ar);
		/* bytes queued before the join (the peeked handshake) count too */
		assert_int_equal(send(p, "hello", 5, 0), 5);
		assert_int_equal(dp.ops->join(&dp, pr, ar, 0xabc), 0);
		assert_int_equal(atomic_load(&hold->pairs), 1);
		size_t up = 1000 + 777 * (size_t)round, down = sizeof(big) - 1000 * (size_t)round;
		assert_int_equal(send(p, big, up, 0), (ssize_t)up);
		recv_all(a, 5 + up);
		/* in chunks the loopback buffers always take: the test is both ends */
		for (size_t off = 0; off < down;) {
			size_t k = down - off < 16384 ? down - off : 16384;
			assert_int_equal(send(a, big + off, k, 0), (ssize_t)k);
			recv_all(p, k);
			off += k;
		}
		want_a += 5 + up;
		want_p += down;
		/* a plane thread adds what it moved just after the move: the reader may be first */
		for (int i = 0; i < 1000; i++) {
			assert_int_equal(dp_tunnel_bytes(&dp, 0xabc, &ta, &tp), 0);
			if (ta == want_a && tp == want_p)
				break;
			usleep(1000);
		}
		assert_int_equal(ta, want_a);
		assert_int_equal(tp, want_p);
		close(p);
		close(a);
		for (int i = 0; i < 1000 && atomic_load(&hold->pairs); i++)
			usleep(2000);
		assert_int_equal(atomic_load(&hold->pairs), 0);
	}
	/* the pairs are gone; the holder still reads the final, exact counts */
	assert_int_equal(dp_tunnel_bytes(&dp, 0xabc, &ta, &tp), 0);
	assert_int_equal(ta, want_a);
	assert_int_equal(tp, want_p);
	/* a pair with key 0 (forwarded: the owner counts it) creates nothing */
	tcp_pair(lfd, &sa, &p, &pr);
	tcp_pair(lfd, &sa, &a, &ar);
	assert_int_equal(dp.ops->join(&dp, pr, ar, 0), 0);
	assert_int_equal(send(p, "abc", 3, 0), 3);
	recv_all(a, 3);
	assert_int_equal(dp_tunnel_bytes(&dp, 0, &ta, &tp), -ENOENT);
	close(p);
	close(a);
	dp.ops->acct_release(&dp, hold);
	assert_int_equal(dp_tunnel_bytes(&dp, 0xabc, &ta, &tp), -ENOENT);
	usleep(20000);
	dp.ops->stop(&dp);
	close(lfd);
}

static void userspace_plane_counts_exactly(void **state) { plane_counts("userspace"); }

static void bpf_plane_counts_exactly(void **state)
{
	if (geteuid() != 0)
		skip();
	plane_counts("bpf");
}

int main(void)
{
	log_init("test_usage", LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(take_returns_new_bytes_of_both_ways),
		cmocka_unit_test(take_treats_a_lower_counter_as_a_new_entry),
		cmocka_unit_test(backlog_is_bounded_and_the_excess_counted),
		cmocka_unit_test(period_rolls_over_with_the_month_or_the_plan),
		cmocka_unit_test(holder_keeps_counts_past_the_last_pair),
		cmocka_unit_test(userspace_plane_counts_exactly),
		cmocka_unit_test(bpf_plane_counts_exactly),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
