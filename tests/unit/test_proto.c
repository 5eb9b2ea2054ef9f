/* Control protocol framing, message validation, the data connection header, the byte codec and
 * PROXY v2. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static size_t frame(uint8_t *out, uint8_t type, const char *json)
{
	size_t n = strlen(json);
	out[0] = CTL_VERSION;
	out[1] = type;
	out[2] = (uint8_t)(n >> 8);
	out[3] = (uint8_t)n;
	memcpy(out + 4, json, n);
	return n + 4;
}

static struct ctl_msg m;

static void hello_round_trip(void **state)
{
	struct ctl_msg in = {.type = CTL_HELLO};
	in.u.hello.proto = 1;
	strcpy(in.u.hello.token, "aaa.bbb.ccc");
	strcpy(in.u.hello.agent, "dvv/0.1.0");
	uint8_t buf[CTL_HDR_LEN + CTL_PAYLOAD_MAX];
	int n = ctl_encode(&in, buf, sizeof(buf));
	assert_true(n > CTL_HDR_LEN);
	size_t used = 0;
	char err[160] = "";
	/* every strict prefix needs more bytes */
	for (int i = 0; i < n; i++)
		assert_int_equal(ctl_decode(buf, (size_t)i, &m, &used, err, sizeof(err)), CTL_NEED_MORE);
	assert_int_equal(ctl_decode(buf, (size_t)n, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(used, n);
	assert_int_equal(m.type, CTL_HELLO);
	assert_int_equal(m.u.hello.proto, 1);
	assert_string_equal(m.u.hello.token, "aaa.bbb.ccc");
	assert_string_equal(m.u.hello.agent, "dvv/0.1.0");
}

static void attach_tokens_round_trip(void **state)
{
	struct ctl_msg in = {.type = CTL_ATTACH};
	in.u.attach.n = CTL_ATTACH_MAX;
	for (int i = 0; i < CTL_ATTACH_MAX; i++)
		memset(in.u.attach.tokens[i], i * 7 + 1, ATTACH_TOKEN_LEN);
	uint8_t buf[CTL_HDR_LEN + CTL_PAYLOAD_MAX];
	int n = ctl_encode(&in, buf, sizeof(buf));
	assert_true(n > 0);
	size_t used;
	char err[160];
	assert_int_equal(ctl_decode(buf, (size_t)n, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.u.attach.n, CTL_ATTACH_MAX);
	assert_memory_equal(m.u.attach.tokens, in.u.attach.tokens, sizeof(in.u.attach.tokens));
}

static void two_frames_in_one_buffer(void **state)
{
	uint8_t buf[256];
	size_t a = frame(buf, CTL_PING, "{\"t\":5}");
	size_t b = frame(buf + a, CTL_PONG, "{\"t\":6}");
	size_t used;
	char err[160];
	assert_int_equal(ctl_decode(buf, a + b, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.type, CTL_PING);
	assert_int_equal(used, a);
	assert_int_equal(ctl_decode(buf + used, b, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.type, CTL_PONG);
	assert_int_equal(m.u.ping.t, 6);
}

static void expect_reject(const uint8_t *buf, size_t len, const char *want_in_err)
{
	size_t used;
	char err[160] = "";
	int rc = ctl_decode(buf, len, &m, &used, err, sizeof(err));
	if (rc >= 0)
		fail_msg("expected rejection containing '%s', got rc=%d", want_in_err, rc);
	if (!strstr(err, want_in_err))
		fail_msg("expected error containing '%s', got '%s'", want_in_err, err);
}

static void malformed_frames_are_rejected(void **state)
{
	uint8_t buf[CTL_HDR_LEN + CTL_PAYLOAD_MAX + 8];
	size_t n;
	/* wrong version */
	n = frame(buf, CTL_PING, "{}");
	buf[0] = 9;
	expect_reject(buf, n, "version 9");
	/* oversized frame length */
	buf[0] = CTL_VERSION;
	buf[2] = 0xff;
	buf[3] = 0xff;
	expect_reject(buf, sizeof(buf), "exceeds");
	/* not JSON, not an object, bad UTF-8, duplicate keys */
	n = frame(buf, CTL_HELLO, "nope");
	expect_reject(buf, n, "not a JSON object");
	n = frame(buf, CTL_HELLO, "[1,2]");
	expect_reject(buf, n, "not a JSON object");
	n = frame(buf, CTL_HELLO, "{\"proto\":1,\"token\":\"\xff\xfe\"}");
	expect_reject(buf, n, "not a JSON object");
	n = frame(buf, CTL_HELLO, "{\"proto\":1,\"proto\":2,\"token\":\"x\"}");
	expect_reject(buf, n, "not a JSON object");
	/* missing / mistyped / out of range fields */
	n = frame(buf, CTL_HELLO, "{\"proto\":1}");
	expect_reject(buf, n, "missing \"token\"");
	n = frame(buf, CTL_HELLO, "{\"proto\":\"1\",\"token\":\"x\"}");
	expect_reject(buf, n, "\"proto\" is not an integer");
	n = frame(buf, CTL_HELLO, "{\"proto\":-1,\"token\":\"x\"}");
	expect_reject(buf, n, "\"proto\" is not an integer");
	n = frame(buf, CTL_ATTACH, "{\"tokens\":[]}");
	expect_reject(buf, n, "array of 1..");
	n = frame(buf, CTL_ATTACH, "{\"tokens\":[\"abc\"]}");
	expect_reject(buf, n, "hex chars");
	n = frame(buf, CTL_ERROR, "{\"code\":\"auth\",\"retry\":1}");
	expect_reject(buf, n, "not a boolean");
	/* a NUL inside a string could truncate what we log or compare */
	n = frame(buf, CTL_HELLO, "{\"proto\":1,\"token\":\"a\\u0000b\"}");
	expect_reject(buf, n, "NUL");
	/* a token longer than the limit */
	char big[CTL_TOKEN_MAX + 64];
	memset(big, 'a', sizeof(big));
	int k = snprintf((char *)buf + 4, sizeof(buf) - 4, "{\"proto\":1,\"token\":\"%.*s\"}",
			 CTL_TOKEN_MAX + 1, big);
	buf[0] = CTL_VERSION;
	buf[1] = CTL_HELLO;
	buf[2] = (uint8_t)(k >> 8);
	buf[3] = (uint8_t)k;
	expect_reject(buf, (size_t)k + 4, "longer than");
}

static void unknown_types_are_skipped(void **state)
{
	uint8_t buf[64];
	size_t n = frame(buf, 200, "whatever, not even JSON");
	size_t used;
	char err[160];
	assert_int_equal(ctl_decode(buf, n, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.type, 200);
	assert_int_equal(used, n);
}

static void data_header_round_trip(void **state)
{
	struct data_hdr h = {0}, back;
	struct sockaddr_in *s = (void *)&h.src;
	struct sockaddr_in6 *d = (void *)&h.dst;
	s->sin_family = AF_INET;
	s->sin_port = htons(54321);
	inet_pton(AF_INET, "203.0.113.7", &s->sin_addr);
	d->sin6_family = AF_INET6;
	d->sin6_port = htons(25565);
	inet_pton(AF_INET6, "2001:db8::1", &d->sin6_addr);
	uint8_t buf[DATA_HDR_LEN];
	assert_int_equal(data_hdr_encode(&h, buf), DATA_HDR_LEN);
	assert_int_equal(data_hdr_fixed(buf), DATA_HDR_BODY);
	assert_int_equal(data_hdr_body(buf + DATA_HDR_FIXED, DATA_HDR_BODY, &back), 0);
	assert_int_equal(back.src.ss_family, AF_INET);
	assert_memory_equal(&((struct sockaddr_in *)&back.src)->sin_addr, &s->sin_addr, 4);
	assert_int_equal(((struct sockaddr_in *)&back.src)->sin_port, htons(54321));
	assert_int_equal(back.dst.ss_family, AF_INET6);
	assert_memory_equal(&((struct sockaddr_in6 *)&back.dst)->sin6_addr, &d->sin6_addr, 16);
	buf[0] = 'X';
	assert_true(data_hdr_fixed(buf) < 0);
}

static void byte_codec_round_trips_and_refuses_unknown_families(void **state)
{
	uint8_t b[PROTO_ADDRS_LEN];
	proto_put64(b, 0x0102030405060708ULL);
	assert_int_equal(b[0], 1);
	assert_int_equal(b[7], 8);
	assert_int_equal(proto_get64(b), 0x0102030405060708ULL);
	proto_put16(b, 0xBEEF);
	assert_int_equal(b[0], 0xBE);
	assert_int_equal(proto_get16(b), 0xBEEF);

	struct sockaddr_storage src = {0}, dst = {0}, s2, d2;
	struct sockaddr_in6 *s = (void *)&src;
	struct sockaddr_in *d = (void *)&dst;
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(1234);
	inet_pton(AF_INET6, "2001:db8::7", &s->sin6_addr);
	d->sin_family = AF_INET;
	d->sin_port = htons(25565);
	inet_pton(AF_INET, "192.0.2.9", &d->sin_addr);
	proto_addrs_put(b, &src, &dst);
	assert_int_equal(b[0], 6);
	assert_int_equal(proto_addrs_get(b, &s2, &d2), 0);
	assert_int_equal(s2.ss_family, AF_INET6);
	assert_memory_equal(&((struct sockaddr_in6 *)&s2)->sin6_addr, &s->sin6_addr, 16);
	assert_int_equal(((struct sockaddr_in6 *)&s2)->sin6_port, htons(1234));
	assert_int_equal(d2.ss_family, AF_INET);
	assert_memory_equal(&((struct sockaddr_in *)&d2)->sin_addr, &d->sin_addr, 4);
	assert_int_equal(((struct sockaddr_in *)&d2)->sin_port, htons(25565));
	b[0] = 5;
	assert_int_equal(proto_addrs_get(b, &s2, &d2), -EPROTO);
}

static void proxy_v2_ipv4_header(void **state)
{
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_port = htons(40000)};
	struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(25565)};
	inet_pton(AF_INET, "198.51.100.2", &s.sin_addr);
	inet_pton(AF_INET, "192.0.2.1", &d.sin_addr);
	uint8_t out[64];
	size_t n = proxy_v2_build(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d);
	static const uint8_t want[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
				       0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 198,	 51,   100,  2,
				       192,  0,	   2,	 1,    0x9C, 0x40, 0x63, 0xDD};
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
}

static void proxy_v2_mixed_families_use_ipv6(void **state)
{
	struct sockaddr_in6 s = {.sin6_family = AF_INET6, .sin6_port = htons(1)};
	struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(2)};
	inet_pton(AF_INET6, "2001:db8::2", &s.sin6_addr);
	inet_pton(AF_INET, "192.0.2.1", &d.sin_addr);
	uint8_t out[64];
	size_t n = proxy_v2_build(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d);
	assert_int_equal(n, 52);
	assert_int_equal(out[13], 0x21);
	assert_int_equal(out[15], 36);
	assert_memory_equal(out + 16, &s.sin6_addr, 16);
	assert_int_equal(out[32 + 10], 0xff); /* ::ffff:192.0.2.1 */
	assert_int_equal(out[32 + 12], 192);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(hello_round_trip),
		cmocka_unit_test(attach_tokens_round_trip),
		cmocka_unit_test(two_frames_in_one_buffer),
		cmocka_unit_test(malformed_frames_are_rejected),
		cmocka_unit_test(unknown_types_are_skipped),
		cmocka_unit_test(data_header_round_trip),
		cmocka_unit_test(byte_codec_round_trips_and_refuses_unknown_families),
		cmocka_unit_test(proxy_v2_ipv4_header),
		cmocka_unit_test(proxy_v2_mixed_families_use_ipv6),
	};
	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
