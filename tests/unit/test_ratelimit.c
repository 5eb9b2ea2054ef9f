/* Agent-port admission primitives: the relay-wide token buckets (TLS handshakes, registrations
 * per second) and the per-source count of unauthenticated connections, keyed by IPv4 address
 * and IPv6 /64 on the agent port. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "ratelimit.h"

static struct sockaddr_storage v4(const char *a)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;
	s->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, a, &s->sin_addr), 1);
	return ss;
}

static struct sockaddr_storage v6(const char *a)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
	s->sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, a, &s->sin6_addr), 1);
	return ss;
}

static void bucket_allows_its_burst_then_its_rate(void **state)
{
	(void)state;
	struct rl_tb tb;
	rl_tb_init(&tb, 10, 5);
	uint64_t now = 1000;
	for (int i = 0; i < 5; i++)
		assert_true(rl_tb_take(&tb, now));
	assert_false(rl_tb_take(&tb, now));
	assert_false(rl_tb_take(&tb, now + 50)); /* half a token */
	assert_true(rl_tb_take(&tb, now + 100)); /* 10/s: one token per 100 ms */
	assert_false(rl_tb_take(&tb, now + 100));
	/* a long pause refills up to the burst, not beyond */
	int n = 0;
	while (rl_tb_take(&tb, now + 100000))
		n++;
	assert_int_equal(n, 5);
}

static void bucket_survives_a_clock_that_does_not_move(void **state)
{
	(void)state;
	struct rl_tb tb;
	rl_tb_init(&tb, 200, 200);
	int n = 0;
	for (int i = 0; i < 1000; i++)
		n += rl_tb_take(&tb, 5000);
	assert_int_equal(n, 200);
	/* time going backwards (never on a monotonic clock, but cheap to survive) adds nothing */
	assert_false(rl_tb_take(&tb, 4000));
}

static void rate_zero_is_unlimited(void **state)
{
	(void)state;
	struct rl_tb tb;
	rl_tb_init(&tb, 0, 0);
	for (int i = 0; i < 10000; i++)
		assert_true(rl_tb_take(&tb, 0));
}

static void unauth_cap_is_per_ipv4_address(void **state)
{
	(void)state;
	struct ratelimit rl;
	assert_int_equal(rl_init(&rl, 1024, 1, 1, 1, 3), 0);
	struct sockaddr_storage a = v4("192.0.2.1"), b = v4("192.0.2.2");
	long s[3];
	for (int i = 0; i < 3; i++)
		assert_true((s[i] = rl_pending_add(&rl, &a)) >= 0);
	assert_int_equal(rl_pending_add(&rl, &a), -1);
	assert_true(rl_pending_add(&rl, &b) >= 0); /* a neighbour is another source */
	rl_pending_done(&rl, s[0], &a);
	assert_true(rl_pending_add(&rl, &a) >= 0);
	assert_int_equal(rl_pending_add(&rl, &a), -1);
	rl_free(&rl);
}

static void unauth_cap_is_per_ipv6_64_when_asked(void **state)
{
	(void)state;
	struct ratelimit rl;
	assert_int_equal(rl_init(&rl, 1024, 1, 1, 1, 2), 0);
	rl.v6_pending_bytes = 8;
	struct sockaddr_storage a = v6("2001:db8:1:2::1"), b = v6("2001:db8:1:2::ffff:9"),
				c = v6("2001:db8:1:3::1");
	long sa = rl_pending_add(&rl, &a);
	assert_true(sa >= 0);
	assert_true(rl_pending_add(&rl, &b) >= 0);
	assert_int_equal(rl_pending_add(&rl, &a), -1); /* same /64, other host: same source */
	assert_true(rl_pending_add(&rl, &c) >= 0);     /* the next /64 is another source */
	rl_pending_done(&rl, sa, &a);
	assert_true(rl_pending_add(&rl, &b) >= 0);
	rl_free(&rl);

	/* default: whole address (the player side) */
	assert_int_equal(rl_init(&rl, 1024, 1, 1, 1, 1), 0);
	assert_true(rl_pending_add(&rl, &a) >= 0);
	assert_true(rl_pending_add(&rl, &b) >= 0);
	rl_free(&rl);
}

/* The registration rate keeps a quarter for priority plans: the last `reserve` tokens are
 * handed out as RL_TB_RESERVE, and a refund puts one back. */
static void token_bucket_keeps_a_reserve(void **state)
{
	(void)state;
	struct rl_tb tb;
	uint64_t now = 1000;
	rl_tb_init(&tb, 8, 8);
	for (int i = 0; i < 6; i++)
		assert_int_equal(rl_tb_take_reserve(&tb, now, 2), RL_TB_OPEN);
	assert_int_equal(rl_tb_take_reserve(&tb, now, 2), RL_TB_RESERVE);
	rl_tb_refund(&tb); /* a priority-0 claim on the reserve failed */
	assert_int_equal(rl_tb_take_reserve(&tb, now, 2), RL_TB_RESERVE);
	assert_int_equal(rl_tb_take_reserve(&tb, now, 2), RL_TB_RESERVE);
	assert_int_equal(rl_tb_take_reserve(&tb, now, 2), RL_TB_NONE);
	/* 8/s: 125 ms is one token, and it comes from the reserve */
	assert_int_equal(rl_tb_take_reserve(&tb, now + 125, 2), RL_TB_RESERVE);
	/* a refund never fills above the burst */
	for (int i = 0; i < 20; i++)
		rl_tb_refund(&tb);
	for (int i = 0; i < 6; i++)
		assert_int_equal(rl_tb_take_reserve(&tb, now + 125, 2), RL_TB_OPEN);
	assert_int_equal(rl_tb_take_reserve(&tb, now + 125, 2), RL_TB_RESERVE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bucket_allows_its_burst_then_its_rate),
		cmocka_unit_test(bucket_survives_a_clock_that_does_not_move),
		cmocka_unit_test(rate_zero_is_unlimited),
		cmocka_unit_test(token_bucket_keeps_a_reserve),
		cmocka_unit_test(unauth_cap_is_per_ipv4_address),
		cmocka_unit_test(unauth_cap_is_per_ipv6_64_when_asked),
	};
	return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
