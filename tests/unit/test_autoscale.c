/* The autoscaler's policy (common/autoscale.h) driven with synthetic time: scale out after the
 * threshold has held, to the middle of the band; no flapping inside the band; the cool-down;
 * scale in one at a time only when the rest stay below the middle; nothing while a relay drains;
 * min and max. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "autoscale.h"

#define S 1000ull
static const struct as_cfg cfg = {.min = 1, .max = 6, .out_frac = 0.7, .in_frac = 0.3,
				  .out_for_ms = 60 * S, .in_for_ms = 600 * S,
				  .cooldown_ms = 300 * S};

/* n active relays of 20000 each at fraction u of capacity */
static struct as_sample at(int n, double u)
{
	return (struct as_sample){.active = n, .load = u * 20000 * n, .capacity = 20000.0 * n};
}

static enum as_action step(struct as_state *st, struct as_sample s, uint64_t t, int *to)
{
	const char *why = NULL;
	enum as_action a = as_decide(&cfg, st, &s, t, to, &why);
	assert_non_null(why);
	return a;
}

static void config_is_checked(void **state)
{
	(void)state;
	const char *why;
	struct as_cfg c = cfg;
	assert_int_equal(as_cfg_check(&c, &why), 0);
	c.in_frac = 0.8;
	assert_int_equal(as_cfg_check(&c, &why), -1);
	c = cfg;
	c.max = 0;
	assert_int_equal(as_cfg_check(&c, &why), -1);
}

static void scales_out_after_the_threshold_held(void **state)
{
	(void)state;
	struct as_state st = {0};
	int to;
	uint64_t t = 1;
	assert_int_equal(step(&st, at(2, 0.5), t, &to), AS_HOLD);
	assert_int_equal(st.desired, 2); /* started from what runs */
	t += 10 * S;
	assert_int_equal(step(&st, at(2, 0.8), t, &to), AS_HOLD); /* just crossed */
	t += 59 * S;
	assert_int_equal(step(&st, at(2, 0.8), t, &to), AS_HOLD);
	t += 1 * S;
	assert_int_equal(step(&st, at(2, 0.8), t, &to), AS_OUT);
	/* 32000 load units at 20000 each brought to 50 %: 4 relays */
	assert_int_equal(to, 4);
	assert_int_equal(st.desired, 4);
}

static void a_dip_restarts_the_clock(void **state)
{
	(void)state;
	struct as_state st = {0};
	int to;
	uint64_t t = 1;
	step(&st, at(2, 0.8), t, &to);
	t += 50 * S;
	assert_int_equal(step(&st, at(2, 0.69), t, &to), AS_HOLD);
	t += 20 * S; /* 70 s since the first crossing, 0 since the second */
	assert_int_equal(step(&st, at(2, 0.8), t, &to), AS_HOLD);
	t += 59 * S;
	assert_int_equal(step(&st, at(2, 0.8), t, &to), AS_HOLD);
	t += 1 * S;
	assert_int_equal(step(&st, at(2, 0.8), t, &to), AS_OUT);
}

static void no_flapping_inside_the_band(void **state)
{
	(void)state;
	struct as_state st = {0};
	int to;
	/* a day of load swinging between 31 % and 69 %, sampled every 5 s */
	for (uint64_t t = 1, i = 0; t < 86400 * S; t += 5 * S, i++)
		assert_int_equal(step(&st, at(3, i % 2 ? 0.31 : 0.69), t, &to), AS_HOLD);
	assert_int_equal(st.desired, 3);
}

static void scale_in_needs_the_rest_below_the_middle(void **state)
{
	(void)state;
	struct as_state st = {0};
	int to;
	/* 2 relays at 28 %: one would sit at 56 % > 50 %: hold however long */
	for (uint64_t t = 1; t < 7200 * S; t += 5 * S)
		assert_int_equal(step(&st, at(2, 0.28), t, &to), AS_HOLD);
	/* 4 relays at 25 %: 3 would sit at 33 %: in after 600 s, by one */
	struct as_state st4 = {0};
	assert_int_equal(step(&st4, at(4, 0.25), 1, &to), AS_HOLD);
	assert_int_equal(step(&st4, at(4, 0.25), 1 + 599 * S, &to), AS_HOLD);
	assert_int_equal(step(&st4, at(4, 0.25), 1 + 600 * S, &to), AS_IN);
	assert_int_equal(to, 3);
}

static void cool_down_is_respected(void **state)
{
	(void)state;
	struct as_state st = {0};
	int to;
	uint64_t t = 1;
	step(&st, at(2, 0.9), t, &to);
	t += 60 * S;
	assert_int_equal(step(&st, at(2, 0.9), t, &to), AS_OUT);
	uint64_t changed = t;
	int first = to;
	/* the new relays have not come up yet: load still high, but we wait */
	for (t += 5 * S; t < changed + 300 * S; t += 5 * S)
		assert_int_equal(step(&st, at(2, 0.9), t, &to), AS_HOLD);
	/* held above through the whole cool-down: out again as soon as it ends */
	assert_int_equal(step(&st, at(first, 0.9), t, &to), AS_OUT);
	assert_true(to > first);
	/* a dip just before the end of the next cool-down restarts the clock */
	changed = 10000 * S;
	struct as_state st2 = {.desired = 2, .last_change_ms = changed};
	assert_int_equal(step(&st2, at(2, 0.9), changed + 100 * S, &to), AS_HOLD);
	assert_int_equal(step(&st2, at(2, 0.5), changed + 299 * S, &to), AS_HOLD);
	assert_int_equal(step(&st2, at(2, 0.9), changed + 300 * S, &to), AS_HOLD);
	assert_int_equal(step(&st2, at(2, 0.9), changed + 359 * S, &to), AS_HOLD);
	assert_int_equal(step(&st2, at(2, 0.9), changed + 360 * S, &to), AS_OUT);
}

static void nothing_while_a_relay_drains(void **state)
{
	(void)state;
	struct as_state st = {0};
	int to;
	struct as_sample s = at(4, 0.1);
	s.draining = 1;
	for (uint64_t t = 1; t < 3600 * S; t += 5 * S)
		assert_int_equal(step(&st, s, t, &to), AS_HOLD);
	/* drained: the scale-in clock starts only now */
	uint64_t t = 3600 * S;
	assert_int_equal(step(&st, at(4, 0.1), t, &to), AS_HOLD);
	assert_int_equal(step(&st, at(4, 0.1), t + 600 * S, &to), AS_IN);
}

static void min_and_max(void **state)
{
	(void)state;
	struct as_state st = {0};
	int to;
	/* nothing runs: up to min at once */
	assert_int_equal(step(&st, at(0, 0), 1, &to), AS_HOLD);
	st.desired = 0;
	struct as_cfg c2 = cfg;
	c2.min = 2;
	const char *why;
	struct as_sample one = at(1, 0.1);
	struct as_state s2 = {.desired = 1};
	assert_int_equal(as_decide(&c2, &s2, &one, 1, &to, &why), AS_OUT);
	assert_int_equal(to, 2);
	/* at max, overloaded: hold, never above */
	struct as_state sm = {.desired = 6};
	assert_int_equal(step(&sm, at(6, 0.95), 1, &to), AS_HOLD);
	assert_int_equal(step(&sm, at(6, 0.95), 1 + 3600 * S, &to), AS_HOLD);
	assert_int_equal(sm.desired, 6);
	/* a huge spike jumps to max, not past it */
	struct as_state sj = {.desired = 1};
	step(&sj, at(1, 1.0), 1, &to);
	assert_int_equal(step(&sj, at(1, 1.0), 1 + 60 * S, &to), AS_OUT);
	assert_int_equal(to, 2);
	/* never below min */
	struct as_state s1 = {.desired = 1};
	for (uint64_t t = 1; t < 7200 * S; t += 5 * S)
		assert_int_equal(step(&s1, at(1, 0.0), t, &to), AS_HOLD);
}

static void a_failed_change_goes_back_and_cools_down(void **state)
{
	(void)state;
	struct as_state st = {.desired = 2};
	int to;
	step(&st, at(2, 0.9), 1, &to);
	assert_int_equal(step(&st, at(2, 0.9), 1 + 60 * S, &to), AS_OUT);
	as_failed(&st, 2, 1 + 60 * S);
	assert_int_equal(st.desired, 2);
	assert_int_equal(step(&st, at(2, 0.9), 1 + 120 * S, &to), AS_HOLD);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(config_is_checked),
		cmocka_unit_test(scales_out_after_the_threshold_held),
		cmocka_unit_test(a_dip_restarts_the_clock),
		cmocka_unit_test(no_flapping_inside_the_band),
		cmocka_unit_test(scale_in_needs_the_rest_below_the_middle),
		cmocka_unit_test(cool_down_is_respected),
		cmocka_unit_test(nothing_while_a_relay_drains),
		cmocka_unit_test(min_and_max),
		cmocka_unit_test(a_failed_change_goes_back_and_cools_down),
	};
	return cmocka_run_group_tests_name("autoscale", tests, NULL, NULL);
}
