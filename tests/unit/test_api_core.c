/* Unit tests for dvv-api's pure parts: request body validators, the plans loader, the rate
 * limiter's token buckets and the id generator. (Database and HTTP paths: tests/api/.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "account.h"
#include "arl.h"
#include "body.h"
#include "plans.h"

#define S(x) x, strlen(x)

static void test_creds(void **state)
{
	struct body_creds c;
	struct body_err e;

	assert_int_equal(body_creds(S("{\"email\":\"a@b.example\",\"password\":\"correct horse 9\"}"),
				    true, &c, &e), 0);
	assert_string_equal(c.email, "a@b.example");
	assert_string_equal(c.password, "correct horse 9");
	assert_int_not_equal(body_creds(S("{\"email\":\"a@b.example\",\"password\":\"short\"}"),
					true, &c, &e), 0);
	assert_int_equal(e.status, 422);
	assert_string_equal(e.code, "weak_password");
	/* login has no strength rules, only bounds */
	assert_int_equal(body_creds(S("{\"email\":\"a@b.example\",\"password\":\"short\"}"), false,
				    &c, &e), 0);
	assert_int_not_equal(body_creds(S("{\"email\":\"a@b.example\"}"), false, &c, &e), 0);
	assert_int_equal(e.status, 400);
	assert_string_equal(e.code, "invalid_field");
	assert_int_not_equal(body_creds(S("[]"), false, &c, &e), 0);
	assert_string_equal(e.code, "invalid_json");
	/* jansson refuses \u0000 in strings: a NUL can never cut an email short */
	assert_int_not_equal(body_creds(S("{\"email\":\"a\\u0000@b.example\",\"password\":\"x\"}"),
					false, &c, &e), 0);
	assert_string_equal(e.code, "invalid_json");
	assert_int_not_equal(
		body_creds(S("{\"email\":\"a@b.example\",\"password\":\"x\",\"is_admin\":1}"), false,
			   &c, &e),
		0);
	assert_string_equal(e.code, "invalid_field");
}

static void test_email(void **state)
{
	assert_true(body_valid_email("o'brien+tag@mail.example.com"));
	assert_false(body_valid_email("no-at.example"));
	assert_false(body_valid_email("two@@example.com"));
	assert_false(body_valid_email("@example.com"));
	assert_false(body_valid_email("a@example"));
	assert_false(body_valid_email("a b@example.com"));
	assert_false(body_valid_email("a@example.com."));
}

static void test_label(void **state)
{
	static const char *const extra[] = { "mine", NULL };
	struct body_label l;
	struct body_err e;

	assert_true(body_valid_label("sleepy-creeper"));
	assert_true(body_valid_label("abc"));
	assert_false(body_valid_label("ab"));
	assert_false(body_valid_label("-abc"));
	assert_false(body_valid_label("abc-"));
	assert_false(body_valid_label("xn--abc"));
	assert_false(body_valid_label("Abc"));
	assert_true(body_reserved("www", NULL));
	assert_true(body_reserved("mine", extra));
	assert_false(body_reserved("yours", extra));
	assert_int_equal(body_label(S("{\"label\":\"sleepy-creeper\"}"), extra, &l, &e), 0);
	assert_string_equal(l.label, "sleepy-creeper");
	assert_int_not_equal(body_label(S("{\"label\":\"admin\"}"), extra, &l, &e), 0);
	assert_int_equal(e.status, 422);
	assert_string_equal(e.code, "reserved_name");
	assert_int_not_equal(body_label(S("{\"label\":\"a_b\"}"), extra, &l, &e), 0);
	assert_string_equal(e.code, "invalid_label");
	assert_int_not_equal(body_label(S("{\"label\":7}"), extra, &l, &e), 0);
	assert_string_equal(e.code, "invalid_field");
}

static void test_token(void **state)
{
	struct body_token t;
	struct body_err e;

	assert_int_equal(body_token(S("{\"tunnel_id\":\"t_x\"}"), &t, &e), 0);
	assert_int_equal(t.ttl_days, 90);
	assert_int_equal(body_token(S("{\"tunnel_id\":\"t_x\",\"ttl_days\":365}"), &t, &e), 0);
	assert_int_equal(t.ttl_days, 365);
	assert_int_not_equal(body_token(S("{\"tunnel_id\":\"t_x\",\"ttl_days\":366}"), &t, &e), 0);
	assert_int_not_equal(body_token(S("{\"tunnel_id\":\"t_x\",\"ttl_days\":0}"), &t, &e), 0);
	assert_int_not_equal(body_token(S("{\"tunnel_id\":\"t_x\",\"ttl_days\":\"9\"}"), &t, &e), 0);
	assert_int_not_equal(body_token(S("{}"), &t, &e), 0);
	assert_int_equal(body_empty_object("", 0, &e), 0);
	assert_int_equal(body_empty_object(S("{}"), &e), 0);
	assert_int_not_equal(body_empty_object(S("{\"x\":1}"), &e), 0);
}

static void test_plans(void **state)
{
	static const char good[] =
		"{\"default\":\"free\",\"plans\":{"
		"\"free\":{\"title\":\"Free\",\"max_tunnels\":1,\"max_players\":20,"
		"\"idle_timeout_s\":1800,\"bandwidth_bytes\":10737418240},"
		"\"paid\":{\"title\":\"Paid\",\"max_tunnels\":5,\"custom_names\":true,"
		"\"max_players\":200,\"idle_timeout_s\":0,\"bandwidth_bytes\":536870912000,"
		"\"priority\":1,\"price_cents\":500,\"stripe_price\":\"price_x\"}}}";
	struct plans p;
	char err[256];

	assert_int_equal(plans_parse(good, strlen(good), &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, 2);
	assert_string_equal(plans_default(&p)->tier, "free");
	assert_int_equal(plans_find(&p, "paid")->max_tunnels, 5);
	assert_true(plans_find(&p, "paid")->custom_names);
	assert_int_equal(plans_find(&p, "paid")->bandwidth_bytes, 536870912000ULL);
	assert_ptr_equal(plans_by_stripe_price(&p, "price_x"), plans_find(&p, "paid"));
	assert_null(plans_by_stripe_price(&p, ""));
	assert_null(plans_find(&p, "gold"));
	assert_int_not_equal(plans_parse(S("{\"default\":\"gold\",\"plans\":{\"free\":{\"title\":"
					   "\"F\",\"max_tunnels\":1,\"max_players\":1,"
					   "\"idle_timeout_s\":0,\"bandwidth_bytes\":0}}}"),
					 &p, err, sizeof(err)),
			 0);
	assert_non_null(strstr(err, "default"));
	assert_int_not_equal(plans_parse(S("{\"default\":\"Free\",\"plans\":{\"Free\":{}}}"), &p,
					 err, sizeof(err)),
			     0);
	assert_non_null(strstr(err, "tier name"));
	assert_int_not_equal(plans_parse(S("{\"default\":\"f\",\"plans\":{\"f\":{\"title\":\"F\","
					   "\"max_tunnels\":0,\"max_players\":1,"
					   "\"idle_timeout_s\":0,\"bandwidth_bytes\":0}}}"),
					 &p, err, sizeof(err)),
			 0);
	assert_non_null(strstr(err, "max_tunnels"));
}

static void test_arl(void **state)
{
	struct arl *rl;
	uint64_t t = 1000000;

	assert_int_equal(arl_new(64, &rl), 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(arl_take(rl, "ip:1.2.3.4", 6, t), 0);
	/* empty: one token a 10 s at 6/min */
	assert_in_range(arl_take(rl, "ip:1.2.3.4", 6, t), 1, 10);
	assert_int_equal(arl_take(rl, "ip:5.6.7.8", 6, t), 0);
	assert_int_equal(arl_take(rl, "ip:1.2.3.4", 6, t + 10001), 0);
	assert_int_equal(arl_take(rl, "anything", 0, t), 0);
	/* far more keys than slots: memory stays bounded, answers stay sane */
	for (int i = 0; i < 10000; i++) {
		char k[32];

		snprintf(k, sizeof(k), "ip:10.0.%d.%d", i / 256, i % 256);
		assert_int_equal(arl_take(rl, k, 6, t), 0);
	}
	arl_free(rl);
}

static void test_ids(void **state)
{
	char a[ID_LEN + 1], b[ID_LEN + 1];

	assert_int_equal(account_new_id("u_", a), 0);
	assert_int_equal(account_new_id("u_", b), 0);
	assert_int_equal(strlen(a), 22);
	assert_memory_equal(a, "u_", 2);
	assert_int_equal(strspn(a + 2, "abcdefghijklmnopqrstuvwxyz0123456789"), 20);
	assert_string_not_equal(a, b);
	assert_int_not_equal(account_new_id("abc", a), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_creds), cmocka_unit_test(test_email),
		cmocka_unit_test(test_label), cmocka_unit_test(test_token),
		cmocka_unit_test(test_plans), cmocka_unit_test(test_arl),
		cmocka_unit_test(test_ids),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
