/* dvv-api's Stripe pieces (api/stripe.c): webhook signature verification (what Stripe's
 * libraries accept and refuse, plus our bounds), event parsing across the object kinds and API
 * versions billing reads, form encoding, and the outbound client against a real local HTTP
 * server on a thread (headers, form, retry with the same Idempotency-Key, size cap, errors). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "stripe.h"

#define SECRET "whsec_test_0123456789abcdef"
#define NOW    1800000000LL
#define BODY   "{\"id\":\"evt_1\",\"object\":\"event\"}"

static char err[256];

static int verify(const char *payload, const char *header, int64_t now)
{
	return stripe_verify_signature(SECRET, payload, strlen(payload), header, now, 300, err,
				       sizeof(err));
}

static void sign(const char *payload, int64_t t, char *hdr, size_t len)
{
	assert_int_equal(stripe_sign(SECRET, payload, strlen(payload), t, hdr, len), 0);
}

/* Stripe's documented example: secret, t, payload and its v1 computed independently (openssl
 * dgst -sha256 -hmac), so stripe_sign is checked against something other than itself. */
static void signature_matches_an_independent_hmac(void **state)
{
	(void)state;
	char hdr[256];
	sign(BODY, NOW, hdr, sizeof(hdr));
	FILE *p = popen("printf '%s' '1800000000." BODY "' | openssl dgst -sha256 -hmac '" SECRET
			"' -r",
			"r");
	assert_non_null(p);
	char line[256] = "";
	assert_non_null(fgets(line, sizeof(line), p));
	pclose(p);
	char want[300];
	snprintf(want, sizeof(want), "t=1800000000,v1=%.64s", line);
	assert_string_equal(hdr, want);
	assert_int_equal(verify(BODY, hdr, NOW), 0);
}

static void signature_refuses_tampering_and_wrong_secret(void **state)
{
	(void)state;
	char hdr[256];
	sign(BODY, NOW, hdr, sizeof(hdr));
	/* one byte of the payload changed */
	assert_int_equal(verify("{\"id\":\"evt_2\",\"object\":\"event\"}", hdr, NOW), -EKEYREJECTED);
	assert_non_null(strstr(err, "no v1 signature matches"));
	assert_null(strstr(err, SECRET));
	/* another secret */
	assert_int_equal(stripe_verify_signature("whsec_other", BODY, strlen(BODY), hdr, NOW, 300,
						 err, sizeof(err)),
			 -EKEYREJECTED);
	/* the timestamp changed (it is signed too) */
	char moved[256];
	snprintf(moved, sizeof(moved), "t=%lld%s", NOW + 1, strchr(hdr, ','));
	assert_int_equal(verify(BODY, moved, NOW), -EKEYREJECTED);
	/* one hex digit of the signature flipped */
	char flip[256];
	snprintf(flip, sizeof(flip), "%s", hdr);
	char *last = flip + strlen(flip) - 1;
	*last = *last == '0' ? '1' : '0';
	assert_int_equal(verify(BODY, flip, NOW), -EKEYREJECTED);
	/* an empty payload signed is not the payload */
	assert_int_equal(verify("", hdr, NOW), -EKEYREJECTED);
}

static void signature_accepts_any_matching_v1_among_several(void **state)
{
	(void)state;
	char hdr[256], multi[1024];
	sign(BODY, NOW, hdr, sizeof(hdr));
	const char *good = strstr(hdr, "v1=") + 3;
	const char *bad = "0000000000000000000000000000000000000000000000000000000000000000";
	/* secret rotation: Stripe sends one v1 per active secret; v0 is the test-mode scheme */
	snprintf(multi, sizeof(multi), "t=%lld,v1=%s,v1=%s,v0=%s", NOW, bad, good, bad);
	assert_int_equal(verify(BODY, multi, NOW), 0);
	/* spaces after commas are tolerated */
	snprintf(multi, sizeof(multi), "t=%lld, v1=%s, v1=%s", NOW, bad, good);
	assert_int_equal(verify(BODY, multi, NOW), 0);
	/* only a v0 (no v1): refused */
	snprintf(multi, sizeof(multi), "t=%lld,v0=%s", NOW, good);
	assert_int_equal(verify(BODY, multi, NOW), -EINVAL);
	assert_non_null(strstr(err, "no v1"));
	/* 8 v1 are allowed, 9 are not, even if the last one matches */
	int n = snprintf(multi, sizeof(multi), "t=%lld", NOW);
	for (int i = 0; i < 7; i++)
		n += snprintf(multi + n, sizeof(multi) - n, ",v1=%s", bad);
	snprintf(multi + n, sizeof(multi) - n, ",v1=%s", good);
	assert_int_equal(verify(BODY, multi, NOW), 0);
	n = snprintf(multi, sizeof(multi), "t=%lld", NOW);
	for (int i = 0; i < 8; i++)
		n += snprintf(multi + n, sizeof(multi) - n, ",v1=%s", bad);
	snprintf(multi + n, sizeof(multi) - n, ",v1=%s", good);
	assert_int_equal(verify(BODY, multi, NOW), -EINVAL);
	assert_non_null(strstr(err, "more than 8"));
}

static void signature_enforces_the_tolerance_both_ways(void **state)
{
	(void)state;
	char hdr[256];
	sign(BODY, NOW, hdr, sizeof(hdr));
	assert_int_equal(verify(BODY, hdr, NOW + 300), 0);
	assert_int_equal(verify(BODY, hdr, NOW - 300), 0);
	assert_int_equal(verify(BODY, hdr, NOW + 301), -ETIME); /* replayed later */
	assert_non_null(strstr(err, "301 s old"));
	assert_int_equal(verify(BODY, hdr, NOW - 301), -ETIME); /* from the future */
	assert_non_null(strstr(err, "in the future"));
	/* a forged signature with a fresh timestamp says "no match", not a time error */
	char forged[256];
	snprintf(forged, sizeof(forged), "t=%lld,v1=%064d", NOW + 10000, 0);
	assert_int_equal(verify(BODY, forged, NOW + 10000), -EKEYREJECTED);
}

static void signature_header_bounds_and_syntax(void **state)
{
	(void)state;
	char hdr[256];
	sign(BODY, NOW, hdr, sizeof(hdr));
	const char *v1 = strstr(hdr, "v1=");
	char h[2048];

	assert_int_equal(verify(BODY, NULL, NOW), -EINVAL);
	assert_non_null(strstr(err, "missing"));
	assert_int_equal(verify(BODY, "", NOW), -EINVAL);
	assert_int_equal(verify(BODY, v1, NOW), -EINVAL); /* no t= */
	assert_non_null(strstr(err, "no timestamp"));
	snprintf(h, sizeof(h), "t=%lld,t=%lld,%s", NOW, NOW, v1);
	assert_int_equal(verify(BODY, h, NOW), -EINVAL);
	snprintf(h, sizeof(h), "t=-5,%s", v1);
	assert_int_equal(verify(BODY, h, NOW), -EINVAL);
	snprintf(h, sizeof(h), "t=1e9,%s", v1);
	assert_int_equal(verify(BODY, h, NOW), -EINVAL);
	snprintf(h, sizeof(h), "t=1234567890123,%s", v1); /* 13 digits */
	assert_int_equal(verify(BODY, h, NOW), -EINVAL);
	snprintf(h, sizeof(h), "t=%lld,v1=abc", NOW); /* short */
	assert_int_equal(verify(BODY, h, NOW), -EINVAL);
	assert_non_null(strstr(err, "64 hex"));
	snprintf(h, sizeof(h), "t=%lld,v1=%064d", NOW, 0);
	h[strlen(h) - 1] = 'g';
	assert_int_equal(verify(BODY, h, NOW), -EINVAL);
	snprintf(h, sizeof(h), "t=%lld,garbage,%s", NOW, v1);
	assert_int_equal(verify(BODY, h, NOW), -EINVAL);
	/* over 1 KiB: refused before any parsing, even with a valid signature inside */
	int n = snprintf(h, sizeof(h), "%s,x=", hdr);
	memset(h + n, 'a', 1030 - n);
	h[1030] = '\0';
	assert_int_equal(verify(BODY, h, NOW), -EINVAL);
	assert_non_null(strstr(err, "longer than 1024"));
	/* no secret configured: never "verified" */
	assert_int_equal(stripe_verify_signature("", BODY, strlen(BODY), hdr, NOW, 300, err,
						 sizeof(err)),
			 -EINVAL);
}

static int parse(const char *json, struct stripe_event *ev)
{
	return stripe_event_parse(json, strlen(json), ev, err, sizeof(err));
}

static void parses_a_checkout_session_completed(void **state)
{
	(void)state;
	struct stripe_event ev;
	assert_int_equal(
		parse("{\"id\":\"evt_c1\",\"object\":\"event\",\"type\":\"checkout.session.completed\","
		      "\"created\":1800000001,\"livemode\":false,\"data\":{\"object\":{"
		      "\"id\":\"cs_test_1\",\"object\":\"checkout.session\",\"customer\":\"cus_1\","
		      "\"subscription\":\"sub_1\",\"client_reference_id\":\"u_abc\",\"mode\":"
		      "\"subscription\",\"payment_status\":\"paid\",\"status\":\"complete\","
		      "\"metadata\":{\"user_id\":\"u_abc\",\"plan\":\"paid\"},\"amount_total\":500}}}",
		      &ev),
		0);
	assert_string_equal(ev.id, "evt_c1");
	assert_string_equal(ev.type, "checkout.session.completed");
	assert_int_equal(ev.created, 1800000001);
	assert_int_equal(ev.kind, STRIPE_OBJ_CHECKOUT_SESSION);
	assert_string_equal(ev.object_id, "cs_test_1");
	assert_string_equal(ev.customer, "cus_1");
	assert_string_equal(ev.subscription, "sub_1");
	assert_string_equal(ev.client_reference_id, "u_abc");
	assert_string_equal(ev.user_id, "u_abc");
	assert_string_equal(ev.plan, "paid");
	assert_string_equal(ev.mode, "subscription");
	assert_string_equal(ev.payment_status, "paid");
	assert_string_equal(ev.status, "complete");
	/* an expanded subscription/customer object stands for its id; nulls are absent */
	assert_int_equal(
		parse("{\"id\":\"evt_c2\",\"object\":\"event\",\"type\":\"checkout.session.completed\","
		      "\"created\":5,\"data\":{\"object\":{\"id\":\"cs_2\",\"object\":"
		      "\"checkout.session\",\"customer\":{\"id\":\"cus_9\",\"object\":\"customer\"},"
		      "\"subscription\":{\"id\":\"sub_9\"},\"client_reference_id\":null,"
		      "\"metadata\":{}}}}",
		      &ev),
		0);
	assert_string_equal(ev.customer, "cus_9");
	assert_string_equal(ev.subscription, "sub_9");
	assert_string_equal(ev.client_reference_id, "");
	assert_string_equal(ev.user_id, "");
}

static void parses_subscriptions_of_both_api_shapes(void **state)
{
	(void)state;
	struct stripe_event ev;
	/* up to 2025-02: the period at the top level */
	assert_int_equal(
		parse("{\"id\":\"evt_s1\",\"object\":\"event\",\"type\":"
		      "\"customer.subscription.updated\",\"created\":1800000100,\"data\":{\"object\":{"
		      "\"id\":\"sub_1\",\"object\":\"subscription\",\"customer\":\"cus_1\","
		      "\"status\":\"active\",\"current_period_start\":1800000000,"
		      "\"current_period_end\":1802592000,\"cancel_at_period_end\":true,"
		      "\"metadata\":{\"user_id\":\"u_x\"},\"items\":{\"object\":\"list\",\"data\":[{"
		      "\"id\":\"si_1\",\"price\":{\"id\":\"price_dvv_paid_monthly\",\"object\":"
		      "\"price\"}}]}},\"previous_attributes\":{\"status\":\"trialing\"}}}",
		      &ev),
		0);
	assert_int_equal(ev.kind, STRIPE_OBJ_SUBSCRIPTION);
	assert_string_equal(ev.object_id, "sub_1");
	assert_string_equal(ev.status, "active");
	assert_string_equal(ev.price, "price_dvv_paid_monthly");
	assert_string_equal(ev.user_id, "u_x");
	assert_int_equal(ev.period_start, 1800000000);
	assert_int_equal(ev.period_end, 1802592000);
	assert_true(ev.cancel_at_period_end);
	/* 2025-03-31 and later: the period on the item */
	assert_int_equal(
		parse("{\"id\":\"evt_s2\",\"object\":\"event\",\"type\":"
		      "\"customer.subscription.created\",\"created\":7,\"data\":{\"object\":{"
		      "\"id\":\"sub_2\",\"object\":\"subscription\",\"customer\":\"cus_1\","
		      "\"status\":\"trialing\",\"items\":{\"data\":[{\"current_period_start\":100,"
		      "\"current_period_end\":200,\"price\":{\"id\":\"price_2\"}}]}}}}",
		      &ev),
		0);
	assert_int_equal(ev.period_start, 100);
	assert_int_equal(ev.period_end, 200);
	assert_string_equal(ev.price, "price_2");
	assert_false(ev.cancel_at_period_end);
}

static void parses_invoices_of_both_api_shapes(void **state)
{
	(void)state;
	struct stripe_event ev;
	assert_int_equal(
		parse("{\"id\":\"evt_i1\",\"object\":\"event\",\"type\":\"invoice.payment_failed\","
		      "\"created\":9,\"data\":{\"object\":{\"id\":\"in_1\",\"object\":\"invoice\","
		      "\"customer\":\"cus_1\",\"subscription\":\"sub_1\",\"attempt_count\":2}}}",
		      &ev),
		0);
	assert_int_equal(ev.kind, STRIPE_OBJ_INVOICE);
	assert_string_equal(ev.subscription, "sub_1");
	assert_int_equal(ev.attempt_count, 2);
	assert_int_equal(
		parse("{\"id\":\"evt_i2\",\"object\":\"event\",\"type\":\"invoice.paid\","
		      "\"created\":9,\"data\":{\"object\":{\"id\":\"in_2\",\"object\":\"invoice\","
		      "\"customer\":\"cus_1\",\"parent\":{\"type\":\"subscription_details\","
		      "\"subscription_details\":{\"subscription\":\"sub_7\",\"metadata\":"
		      "{\"user_id\":\"u_7\"}}},\"attempt_count\":1}}}",
		      &ev),
		0);
	assert_string_equal(ev.subscription, "sub_7");
	assert_string_equal(ev.user_id, "u_7");
	/* an object kind billing does not read: parsed, kind OTHER */
	assert_int_equal(parse("{\"id\":\"evt_o\",\"object\":\"event\",\"type\":\"charge."
			       "succeeded\",\"created\":3,\"data\":{\"object\":{\"id\":\"ch_1\","
			       "\"object\":\"charge\",\"amount\":500}}}",
			       &ev),
			 0);
	assert_int_equal(ev.kind, STRIPE_OBJ_OTHER);
	assert_string_equal(ev.type, "charge.succeeded");
}

static void refuses_malformed_events_with_a_reason(void **state)
{
	(void)state;
	struct stripe_event ev;
	static const struct {
		const char *json, *why;
	} bad[] = {
		{"", "not JSON"},
		{"[1,2]", "not a JSON object"},
		{"{\"id\":\"evt\",\"type\":\"x\",\"created\":1,\"data\":{\"object\":{}}}",
		 "object is not"},
		{"{\"object\":\"event\",\"type\":\"x\",\"created\":1,\"data\":{\"object\":{}}}",
		 "lacks id"},
		{"{\"id\":\"e\",\"object\":\"event\",\"type\":\"x\",\"created\":\"1\",\"data\":"
		 "{\"object\":{}}}",
		 "created is not"},
		{"{\"id\":\"e\",\"object\":\"event\",\"type\":\"x\",\"created\":-1,\"data\":"
		 "{\"object\":{}}}",
		 "created is not"},
		{"{\"id\":\"e\",\"object\":\"event\",\"type\":\"x\",\"created\":1}", "lacks data"},
		{"{\"id\":7,\"object\":\"event\",\"type\":\"x\",\"created\":1,\"data\":"
		 "{\"object\":{}}}",
		 "id is not a string"},
		{"{\"id\":\"e\",\"id\":\"f\",\"object\":\"event\",\"type\":\"x\",\"created\":1,"
		 "\"data\":{\"object\":{}}}",
		 "not JSON"},
		{"{\"id\":\"e\",\"object\":\"event\",\"type\":\"x\",\"created\":1,\"data\":"
		 "{\"object\":{\"object\":\"subscription\",\"status\":[]}}}",
		 "status is not"},
		{"{\"id\":\"e\",\"object\":\"event\",\"type\":\"x\",\"created\":1,\"data\":"
		 "{\"object\":{\"object\":\"subscription\",\"cancel_at_period_end\":1}}}",
		 "cancel_at_period_end"},
		{"{\"id\":\"e\\n\",\"object\":\"event\",\"type\":\"x\",\"created\":1,\"data\":"
		 "{\"object\":{}}}",
		 "control character"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i].json, &ev), -EINVAL);
		if (!strstr(err, bad[i].why))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].why);
	}
	/* too long an id */
	char big[600];
	int n = snprintf(big, sizeof(big), "{\"id\":\"");
	memset(big + n, 'e', 300);
	snprintf(big + n + 300, sizeof(big) - n - 300,
		 "\",\"object\":\"event\",\"type\":\"x\",\"created\":1,\"data\":{\"object\":{}}}");
	assert_int_equal(parse(big, &ev), -EINVAL);
	assert_non_null(strstr(err, "longer than 255"));
	/* over the size cap: refused before parsing */
	assert_int_equal(stripe_event_parse(big, STRIPE_EVENT_MAX + 1, &ev, err, sizeof(err)),
			 -E2BIG);
}

static void form_encoding_escapes_keys_and_values(void **state)
{
	(void)state;
	char *f = NULL;
	assert_int_equal(stripe_form_add(&f, "mode", "subscription"), 0);
	assert_int_equal(stripe_form_add(&f, "metadata[user_id]", "u_1"), 0);
	assert_int_equal(stripe_form_add(&f, "success_url", "https://x.test/?a=1&b=2 c"), 0);
	assert_string_equal(f, "mode=subscription&metadata%5Buser_id%5D=u_1&success_url=https%3A%2F"
			       "%2Fx.test%2F%3Fa%3D1%26b%3D2%20c");
	free(f);
}

/* ---- the outbound client against a real HTTP server on a thread -------------------------- */

struct srv {
	int fd, port;
	int n_answers;
	const char *answers[4]; /* full HTTP responses, one per connection */
	char req[4][8192];	/* what each connection sent */
	int served;
};

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	for (int i = 0; i < s->n_answers; i++) {
		int c = accept(s->fd, NULL, NULL);
		if (c < 0)
			break;
		size_t got = 0;
		/* read until the headers and the Content-Length body are in */
		for (;;) {
			ssize_t n = read(c, s->req[i] + got, sizeof(s->req[i]) - 1 - got);
			if (n <= 0)
				break;
			got += (size_t)n;
			s->req[i][got] = '\0';
			char *e = strstr(s->req[i], "\r\n\r\n");
			char *cl = strcasestr(s->req[i], "Content-Length:");
			if (e && cl && got >= (size_t)(e + 4 - s->req[i]) + strtoul(cl + 15, 0, 10))
				break;
		}
		const char *a = s->answers[i];
		size_t len = strlen(a);
		while (len) {
			ssize_t n = write(c, a, len);
			if (n <= 0)
				break;
			a += n;
			len -= (size_t)n;
		}
		close(c);
		s->served++;
	}
	return NULL;
}

static void srv_start(struct srv *s, pthread_t *th)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	s->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->fd >= 0);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s->fd, 8), 0);
	assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &sl), 0);
	s->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(th, NULL, srv_main, s), 0);
}

static void client_sends_key_form_and_idempotency_and_retries(void **state)
{
	(void)state;
	static const char session[] =
		"{\"id\":\"cs_test_9\",\"object\":\"checkout.session\",\"url\":"
		"\"http://127.0.0.1/checkout/cs_test_9\"}";
	char ok[512];
	snprintf(ok, sizeof(ok),
		 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
		 "Content-Length: %zu\r\n\r\n%s",
		 strlen(session), session);
	struct srv s = {.n_answers = 2,
			.answers = {"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
				    "Connection: close\r\n\r\n",
				    ok}};
	pthread_t th;
	srv_start(&s, &th);
	char base[64], id[64], url[256];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d/", s.port);
	struct stripe_client c = {.api_base = base, .secret_key = "sk_test_secret123"};
	struct stripe_checkout_req r = {.customer = "cus_1",
					.price = "price_dvv_paid_monthly",
					.user_id = "u_abc",
					.plan = "paid",
					.success_url = "http://x.test/?checkout=success",
					.cancel_url = "http://x.test/?checkout=cancel",
					.idem_key = "co-u_abc-1"};
	assert_int_equal(stripe_create_checkout(&c, &r, id, sizeof(id), url, sizeof(url), err,
						sizeof(err)),
			 0);
	pthread_join(th, NULL);
	close(s.fd);
	assert_string_equal(id, "cs_test_9");
	assert_string_equal(url, "http://127.0.0.1/checkout/cs_test_9");
	assert_int_equal(s.served, 2);
	for (int i = 0; i < 2; i++) {
		/* same request twice: the retry carries the same Idempotency-Key */
		assert_non_null(strstr(s.req[i], "POST /v1/checkout/sessions HTTP/1.1\r\n"));
		assert_non_null(strstr(s.req[i], "Authorization: Bearer sk_test_secret123\r\n"));
		assert_non_null(strstr(s.req[i], "Idempotency-Key: co-u_abc-1\r\n"));
		assert_non_null(strstr(s.req[i], "Stripe-Version: "));
		assert_non_null(strstr(s.req[i], "mode=subscription"));
		assert_non_null(strstr(s.req[i], "line_items%5B0%5D%5Bprice%5D=price_dvv_paid_monthly"));
		assert_non_null(strstr(s.req[i], "client_reference_id=u_abc"));
		assert_non_null(strstr(s.req[i], "subscription_data%5Bmetadata%5D%5Buser_id%5D=u_abc"));
	}
}

static void client_reports_stripe_errors_without_the_key(void **state)
{
	(void)state;
	static const char body[] = "{\"error\":{\"type\":\"invalid_request_error\",\"message\":"
				   "\"Invalid API Key provided: sk_test_secret123\"}}";
	char a[512];
	snprintf(a, sizeof(a),
		 "HTTP/1.1 401 Unauthorized\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
		 strlen(body), body);
	struct srv s = {.n_answers = 1, .answers = {a}};
	pthread_t th;
	srv_start(&s, &th);
	char base[64], id[64];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", s.port);
	struct stripe_client c = {.api_base = base, .secret_key = "sk_test_secret123"};
	assert_int_equal(stripe_create_customer(&c, "a@b.test", "u_1", "cus-u_1", id, sizeof(id),
						err, sizeof(err)),
			 -EACCES);
	pthread_join(th, NULL);
	close(s.fd);
	assert_non_null(strstr(err, "HTTP 401 invalid_request_error"));
	assert_non_null(strstr(err, "Invalid API Key provided"));
	assert_null(strstr(err, "secret123"));
	assert_non_null(strstr(s.req[0], "POST /v1/customers "));
	assert_non_null(strstr(s.req[0], "email=a%40b.test&metadata%5Buser_id%5D=u_1"));
}

static void client_caps_the_answer_and_times_out(void **state)
{
	(void)state;
	/* an answer over 256 KiB is an error, not a buffer that grows */
	size_t big = STRIPE_RESP_MAX + 4096;
	char *a = malloc(big + 256);
	assert_non_null(a);
	int n = snprintf(a, 256, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 big);
	memset(a + n, ' ', big);
	a[n + big] = '\0';
	struct srv s = {.n_answers = 1, .answers = {a}};
	pthread_t th;
	srv_start(&s, &th);
	char base[64], id[64];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", s.port);
	struct stripe_client c = {.api_base = base, .secret_key = "sk_test_x"};
	assert_int_equal(stripe_create_customer(&c, "a@b.test", "u_1", NULL, id, sizeof(id), err,
						sizeof(err)),
			 -E2BIG);
	pthread_join(th, NULL);
	close(s.fd);
	free(a);

	/* a server that accepts and never answers: the timeout fires (1 s here), then the retry */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	getsockname(fd, (struct sockaddr *)&sa, &sl);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", ntohs(sa.sin_port));
	c = (struct stripe_client){.api_base = base, .secret_key = "sk_test_x", .timeout_s = 1};
	assert_int_equal(stripe_create_customer(&c, "a@b.test", "u_1", NULL, id, sizeof(id), err,
						sizeof(err)),
			 -ETIMEDOUT);
	assert_non_null(strstr(err, "Stripe unreachable"));
	close(fd);
	/* not configured */
	c = (struct stripe_client){.api_base = "", .secret_key = ""};
	assert_int_equal(stripe_create_customer(&c, "a@b.test", "u_1", NULL, id, sizeof(id), err,
						sizeof(err)),
			 -ENOTCONN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(signature_matches_an_independent_hmac),
		cmocka_unit_test(signature_refuses_tampering_and_wrong_secret),
		cmocka_unit_test(signature_accepts_any_matching_v1_among_several),
		cmocka_unit_test(signature_enforces_the_tolerance_both_ways),
		cmocka_unit_test(signature_header_bounds_and_syntax),
		cmocka_unit_test(parses_a_checkout_session_completed),
		cmocka_unit_test(parses_subscriptions_of_both_api_shapes),
		cmocka_unit_test(parses_invoices_of_both_api_shapes),
		cmocka_unit_test(refuses_malformed_events_with_a_reason),
		cmocka_unit_test(form_encoding_escapes_keys_and_values),
		cmocka_unit_test(client_sends_key_form_and_idempotency_and_retries),
		cmocka_unit_test(client_reports_stripe_errors_without_the_key),
		cmocka_unit_test(client_caps_the_answer_and_times_out),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
