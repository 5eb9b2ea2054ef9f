/* The relay-to-relay forward header: authenticity, freshness, bounds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "forward.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t key[] = "a-cluster-secret-of-enough-bytes";
static const uint64_t now = 1800000000000ULL;

static size_t make(uint8_t *buf, size_t cap, const char *host, uint64_t ts)
{
	struct fwd_hdr h = {.ts_ms = ts, .epoch = 42};
	struct sockaddr_in *s = (void *)&h.src, *d = (void *)&h.dst;
	s->sin_family = d->sin_family = AF_INET;
	s->sin_port = htons(50000);
	d->sin_port = htons(25565);
	inet_pton(AF_INET, "203.0.113.9", &s->sin_addr);
	inet_pton(AF_INET, "10.0.0.1", &d->sin_addr);
	memset(h.nonce, 7, sizeof(h.nonce));
	strcpy(h.host, host);
	strcpy(h.from, "relay-a");
	return fwd_encode(&h, key, sizeof(key) - 1, buf, cap);
}

static void a_signed_header_verifies_and_carries_the_player(void **state)
{
	uint8_t buf[1024];
	size_t n = make(buf, sizeof(buf), "brave-otter.eu.dvv.one", now);
	assert_true(n > FWD_FIXED);
	assert_int_equal(fwd_fixed(buf), (int)(n - FWD_FIXED));
	struct fwd_hdr h;
	char err[160] = "";
	int rc = fwd_verify(buf, n, key, sizeof(key) - 1, now + 5000, &h, err, sizeof(err));
	if (rc)
		fail_msg("expected a valid header, got %d: %s", rc, err);
	assert_string_equal(h.host, "brave-otter.eu.dvv.one");
	assert_string_equal(h.from, "relay-a");
	assert_int_equal(h.epoch, 42);
	assert_int_equal(h.src.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&h.src)->sin_port), 50000);
}

static void every_flipped_bit_is_refused(void **state)
{
	uint8_t buf[1024];
	size_t n = make(buf, sizeof(buf), "x.eu.dvv.one", now);
	struct fwd_hdr h;
	char err[160];
	for (size_t i = 0; i < n; i++)
		for (int b = 0; b < 8; b++) {
			buf[i] ^= (uint8_t)(1 << b);
			if (fwd_verify(buf, n, key, sizeof(key) - 1, now, &h, err, sizeof(err)) == 0)
				fail_msg("flipping bit %d of byte %zu was accepted", b, i);
			buf[i] ^= (uint8_t)(1 << b);
		}
}

static void a_wrong_secret_is_refused(void **state)
{
	uint8_t buf[1024];
	size_t n = make(buf, sizeof(buf), "x.eu.dvv.one", now);
	struct fwd_hdr h;
	char err[160] = "";
	static const uint8_t other[] = "another-secret-of-enough-bytes!!";
	assert_int_equal(fwd_verify(buf, n, other, sizeof(other) - 1, now, &h, err, sizeof(err)),
			 -EACCES);
	assert_non_null(strstr(err, "MAC"));
}

static void stale_or_future_headers_are_refused(void **state)
{
	uint8_t buf[1024];
	struct fwd_hdr h;
	char err[160];
	size_t n = make(buf, sizeof(buf), "x.eu.dvv.one", now - FWD_SKEW_MS - 1);
	assert_int_equal(fwd_verify(buf, n, key, sizeof(key) - 1, now, &h, err, sizeof(err)), -ETIME);
	n = make(buf, sizeof(buf), "x.eu.dvv.one", now + FWD_SKEW_MS + 1);
	assert_int_equal(fwd_verify(buf, n, key, sizeof(key) - 1, now, &h, err, sizeof(err)), -ETIME);
}

static void malformed_lengths_are_refused(void **state)
{
	uint8_t buf[1024];
	size_t n = make(buf, sizeof(buf), "x.eu.dvv.one", now);
	struct fwd_hdr h;
	char err[160];
	assert_int_equal(fwd_verify(buf, n - 1, key, sizeof(key) - 1, now, &h, err, sizeof(err)), -EPROTO);
	assert_int_equal(fwd_verify(buf, 3, key, sizeof(key) - 1, now, &h, err, sizeof(err)), -EPROTO);
	buf[6] = 0xff; /* body length beyond the maximum */
	buf[7] = 0xff;
	assert_true(fwd_fixed(buf) < 0);
	memcpy(buf, "DVVP", 4); /* a data header is not a forward header */
	assert_true(fwd_fixed(buf) < 0);
	/* a 255-byte hostname (the maximum) fits; the output buffer bound is enforced */
	char host[256];
	memset(host, 'a', 255);
	host[255] = 0;
	assert_true(make(buf, sizeof(buf), host, now) > 0);
	assert_int_equal(make(buf, 100, host, now), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_signed_header_verifies_and_carries_the_player),
		cmocka_unit_test(every_flipped_bit_is_refused),
		cmocka_unit_test(a_wrong_secret_is_refused),
		cmocka_unit_test(stale_or_future_headers_are_refused),
		cmocka_unit_test(malformed_lengths_are_refused),
	};
	return cmocka_run_group_tests_name("forward", tests, NULL, NULL);
}
