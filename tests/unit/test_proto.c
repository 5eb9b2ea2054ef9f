/* Control protocol framing, message validation, the data connection header, the byte codec and
 * PROXY v2. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ctlconn.h"
#include "proto.h"
#include "test_cert.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
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

/* A STATUS frame big enough to need the 32 KiB limit: the server's JSON as the agent read it. */
static char *status_json(size_t total)
{
	static const char head[] = "{\"version\":{\"name\":\"1.21.1\",\"protocol\":767},"
				   "\"players\":{\"max\":20,\"online\":3},\"favicon\":\"";
	char *s = malloc(total + 1);
	assert_non_null(s);
	size_t h = strlen(head);
	assert_true(total > h + 2);
	memcpy(s, head, h);
	memset(s + h, 'A', total - h - 2);
	memcpy(s + total - 2, "\"}", 2);
	s[total] = 0;
	return s;
}

static void status_round_trip_points_into_the_frame(void **state)
{
	static uint8_t buf[CTL_HDR_LEN + CTL_PAYLOAD_MAX];
	/* the largest payload there is */
	char *json = status_json(CTL_PAYLOAD_MAX);
	struct ctl_msg in = {.type = CTL_STATUS};
	in.u.status.json = json;
	in.u.status.len = strlen(json);
	int n = ctl_encode(&in, buf, sizeof(buf));
	assert_int_equal(n, CTL_HDR_LEN + CTL_PAYLOAD_MAX);
	assert_int_equal(buf[1], CTL_STATUS);
	size_t used;
	char err[160] = "";
	assert_int_equal(ctl_decode(buf, (size_t)n - 1, &m, &used, err, sizeof(err)),
			 CTL_NEED_MORE);
	assert_int_equal(ctl_decode(buf, (size_t)n, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(used, n);
	assert_int_equal(m.type, CTL_STATUS);
	/* no copy: the payload is read where it lies */
	assert_ptr_equal(m.u.status.json, (const char *)buf + CTL_HDR_LEN);
	assert_int_equal(m.u.status.len, CTL_PAYLOAD_MAX);
	assert_memory_equal(m.u.status.json, json, CTL_PAYLOAD_MAX);
	assert_string_equal(ctl_type_name(CTL_STATUS), "STATUS");
	/* a small one, and the buffer must hold it */
	in.u.status.json = "{\"description\":\"hi\"}";
	in.u.status.len = strlen(in.u.status.json);
	assert_int_equal(ctl_encode(&in, buf, CTL_HDR_LEN + in.u.status.len - 1), -ENOSPC);
	assert_int_equal(ctl_encode(&in, buf, CTL_HDR_LEN + in.u.status.len),
			 (int)(CTL_HDR_LEN + in.u.status.len));
	free(json);
}

static void status_too_big_or_not_an_object_is_refused(void **state)
{
	static uint8_t buf[CTL_HDR_LEN + CTL_PAYLOAD_MAX + 64];
	char *json = status_json(CTL_PAYLOAD_MAX + 1);
	struct ctl_msg in = {.type = CTL_STATUS};
	in.u.status.json = json;
	in.u.status.len = strlen(json);
	assert_int_equal(ctl_encode(&in, buf, sizeof(buf)), -EMSGSIZE);
	/* on the wire: one byte over the limit is refused as soon as the header is read */
	buf[0] = CTL_VERSION;
	buf[1] = CTL_STATUS;
	buf[2] = (uint8_t)((CTL_PAYLOAD_MAX + 1) >> 8);
	buf[3] = (uint8_t)(CTL_PAYLOAD_MAX + 1);
	expect_reject(buf, CTL_HDR_LEN, "exceeds 32768");
	free(json);
	/* the encoder never emits what the relay would reject as a protocol error */
	const char *bad[] = {"[1,2,3]", "\"text\"", "{\"a\":1", "{\"a\":1,\"a\":2}", "{\"a\":\"\xff\"}", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		in.u.status.json = bad[i];
		in.u.status.len = strlen(bad[i]);
		if (ctl_encode(&in, buf, sizeof(buf)) != -EINVAL)
			fail_msg("STATUS '%s' was encoded", bad[i]);
	}
	in.u.status.json = NULL;
	assert_int_equal(ctl_encode(&in, buf, sizeof(buf)), -EINVAL);
	/* and the decoder refuses them */
	size_t n = frame(buf, CTL_STATUS, "[1,2,3]");
	expect_reject(buf, n, "STATUS payload is not a JSON object");
	n = frame(buf, CTL_STATUS, "{\"players\":");
	expect_reject(buf, n, "STATUS payload is not a JSON object");
	n = frame(buf, CTL_STATUS, "{}");
	size_t used;
	char err[160];
	assert_int_equal(ctl_decode(buf, n, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.u.status.len, 2);
}

static void welcome_peers(void **state)
{
	uint8_t buf[CTL_HDR_LEN + CTL_PAYLOAD_MAX];
	size_t used;
	char err[160] = "";
	/* without peers (today's relays) */
	size_t n = frame(buf, CTL_WELCOME, "{\"hostname\":\"a.eu.dvv.one\",\"ping_ms\":15000}");
	assert_int_equal(ctl_decode(buf, n, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.u.welcome.npeers, 0);
	/* round trip */
	struct ctl_msg in = {.type = CTL_WELCOME};
	strcpy(in.u.welcome.hostname, "a.eu.dvv.one");
	in.u.welcome.npeers = 3;
	strcpy(in.u.welcome.peers[0], "10.0.0.2:7000");
	strcpy(in.u.welcome.peers[1], "[2001:db8::1]:7000");
	strcpy(in.u.welcome.peers[2], "relay-3.eu.dvv.one:7000");
	int k = ctl_encode(&in, buf, sizeof(buf));
	assert_true(k > 0);
	assert_int_equal(ctl_decode(buf, (size_t)k, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.u.welcome.npeers, 3);
	for (int i = 0; i < 3; i++)
		assert_string_equal(m.u.welcome.peers[i], in.u.welcome.peers[i]);
	/* junk is dropped one entry at a time, never the WELCOME; at most 8 are kept */
	char big[200], json[2048];
	memset(big, 'a', sizeof(big));
	snprintf(json, sizeof(json),
		 "{\"hostname\":\"h\",\"peers\":[1,null,\"nocolon\",\"h:0\",\"h:70000\",\"h:p\","
		 "\"bad host:1\",\"tab\\there:1\",\"2001:db8::1:7000\",\"[nonsense]:1\",\"%.*s:7000\","
		 "\"ok-1.example:1\",{},\"1.2.3.4:2\",\"p3:3\",\"p4:4\",\"p5:5\",\"p6:6\",\"p7:7\","
		 "\"p8:8\",\"p9:9\"]}",
		 CTL_PEER_ADDR_MAX - 5, big);
	n = frame(buf, CTL_WELCOME, json);
	assert_int_equal(ctl_decode(buf, n, &m, &used, err, sizeof(err)), 0);
	assert_string_equal(m.u.welcome.hostname, "h");
	assert_int_equal(m.u.welcome.npeers, CTL_PEERS_MAX);
	assert_int_equal(strlen(m.u.welcome.peers[0]), CTL_PEER_ADDR_MAX);
	assert_string_equal(m.u.welcome.peers[1], "ok-1.example:1");
	assert_string_equal(m.u.welcome.peers[2], "1.2.3.4:2");
	assert_string_equal(m.u.welcome.peers[7], "p7:7"); /* p8, p9: beyond the 8 kept */
	/* one byte longer than CTL_PEER_ADDR_MAX is dropped */
	snprintf(json, sizeof(json), "{\"hostname\":\"h\",\"peers\":[\"%.*s:7000\"]}",
		 CTL_PEER_ADDR_MAX - 4, big);
	n = frame(buf, CTL_WELCOME, json);
	assert_int_equal(ctl_decode(buf, n, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.u.welcome.npeers, 0);
	/* not an array: ignored too */
	n = frame(buf, CTL_WELCOME, "{\"hostname\":\"h\",\"peers\":\"1.2.3.4:5\"}");
	assert_int_equal(ctl_decode(buf, n, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.u.welcome.npeers, 0);
}

static void goodbye_moved_round_trip(void **state)
{
	uint8_t buf[512];
	struct ctl_msg in = {.type = CTL_GOODBYE};
	strcpy(in.u.goodbye.code, "moved");
	strcpy(in.u.goodbye.reason, "session moved to 10.0.0.2:7000");
	int n = ctl_encode(&in, buf, sizeof(buf));
	assert_true(n > 0);
	size_t used;
	char err[160];
	assert_int_equal(ctl_decode(buf, (size_t)n, &m, &used, err, sizeof(err)), 0);
	assert_string_equal(m.u.goodbye.code, "moved");
	assert_string_equal(m.u.goodbye.reason, in.u.goodbye.reason);
}

/* ---- the TLS transport with full-size frames ---- */

static struct {
	int n;
	size_t status_len;
	bool status_ok;
	uint64_t last_ping;
} got;
static const char *want_status;

static int collect(struct ctl_conn *c, const struct ctl_msg *msg)
{
	got.n++;
	if (msg->type == CTL_STATUS) {
		got.status_len = msg->u.status.len;
		got.status_ok = msg->u.status.len == strlen(want_status) &&
				!memcmp(msg->u.status.json, want_status, msg->u.status.len);
	} else if (msg->type == CTL_PING) {
		got.last_ping = msg->u.ping.t;
	}
	return 0;
}

static void ctlconn_carries_full_size_frames_buffering_only_what_arrived(void **state)
{
	char cert[64], key[64], err[256];
	make_cert(cert, key);
	SSL_CTX *sctx = tls_server_ctx(cert, key, err, sizeof(err));
	SSL_CTX *cctx = tls_client_ctx(cert, NULL, err, sizeof(err));
	assert_non_null(sctx);
	assert_non_null(cctx);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	int small = 4096; /* the frame crosses in many pieces */
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	for (int i = 0; i < 2; i++)
		fcntl(sv[i], F_SETFL, fcntl(sv[i], F_GETFL) | O_NONBLOCK);
	struct ctl_conn srv, cli;
	assert_int_equal(ctl_conn_init(&srv, sctx, sv[1], true, NULL), 0);
	assert_int_equal(ctl_conn_init(&cli, cctx, sv[0], false, NULL), 0);
	srv.on_msg = collect;
	cli.on_msg = collect;
	char *json = status_json(CTL_PAYLOAD_MAX);
	want_status = json;
	memset(&got, 0, sizeof(got));
	struct ctl_msg st = {.type = CTL_STATUS};
	st.u.status.json = json;
	st.u.status.len = CTL_PAYLOAD_MAX;
	struct ctl_msg ping = {.type = CTL_PING};
	ping.u.ping.t = 77;
	/* queued before the handshake: a full frame and a small one fit the 64 KiB queue */
	assert_int_equal(ctl_conn_send(&cli, &st), 0);
	assert_int_equal(ctl_conn_send(&cli, &ping), 0);
	bool partial_seen = false;
	for (int i = 0; i < 20000 && got.n < 2; i++) {
		assert_true(ctl_conn_io(&cli) >= 0);
		assert_true(ctl_conn_io(&srv) >= 0);
		if (srv.inlen > CTL_HDR_LEN) {
			/* a partial frame is held in a buffer the size of what arrived */
			partial_seen = true;
			if (srv.incap < srv.inlen || srv.incap - srv.inlen >= 512)
				fail_msg("holding %zu bytes of a partial frame in %zu", srv.inlen,
					 srv.incap);
		}
	}
	assert_true(partial_seen);
	assert_int_equal(got.n, 2);
	assert_int_equal(got.status_len, CTL_PAYLOAD_MAX);
	assert_true(got.status_ok);
	assert_int_equal(got.last_ping, 77);
	/* nothing held once the frames are delivered */
	assert_null(srv.in);
	assert_int_equal(srv.incap, 0);
	/* over the 64 KiB queue cap: refused, not buffered (a peer that does not read is cut) */
	srv.on_msg = NULL; /* nothing is read from here on */
	assert_int_equal(ctl_conn_send(&cli, &st), 0);
	assert_int_equal(ctl_conn_send(&cli, &st), -ENOBUFS);
	assert_int_equal(cli.outlen, CTL_HDR_LEN + CTL_PAYLOAD_MAX);
	assert_int_equal(ctl_conn_send(&cli, &ping), 0); /* small ones still fit behind it */
	ctl_conn_free(&cli);
	ctl_conn_free(&srv);
	close(sv[0]);
	close(sv[1]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	unlink(cert);
	unlink(key);
	free(json);
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
	uint8_t buf[DATA_HDR_LEN_MAX];
	assert_int_equal(data_hdr_encode(&h, buf), DATA_HDR_LEN);
	assert_int_equal(data_hdr_fixed(buf), DATA_HDR_BODY);
	assert_int_equal(data_hdr_body(buf + DATA_HDR_FIXED, DATA_HDR_BODY, &back), 0);
	assert_int_equal(back.src.ss_family, AF_INET);
	assert_memory_equal(&((struct sockaddr_in *)&back.src)->sin_addr, &s->sin_addr, 4);
	assert_int_equal(((struct sockaddr_in *)&back.src)->sin_port, htons(54321));
	assert_int_equal(back.dst.ss_family, AF_INET6);
	assert_memory_equal(&((struct sockaddr_in6 *)&back.dst)->sin6_addr, &d->sin6_addr, 16);
	/* with a trace id: flag bit 0 and 8 more body bytes; an old reader (data_hdr_body) still
	 * gets the addresses, a new one (data_hdr_parse) the trace too */
	h.trace = 0xfedcba9876543210ULL;
	uint8_t tb[DATA_HDR_LEN_MAX];
	assert_int_equal(data_hdr_encode(&h, tb), DATA_HDR_LEN_MAX);
	assert_int_equal(tb[5], DATA_HDR_F_TRACE);
	assert_int_equal(data_hdr_fixed(tb), DATA_HDR_BODY_TRACE);
	struct data_hdr t2;
	assert_int_equal(data_hdr_body(tb + DATA_HDR_FIXED, DATA_HDR_BODY_TRACE, &t2), 0);
	assert_memory_equal(&((struct sockaddr_in *)&t2.src)->sin_addr, &s->sin_addr, 4);
	assert_int_equal(data_hdr_parse(tb, sizeof(tb), &t2), 0);
	assert_true(t2.trace == 0xfedcba9876543210ULL);
	/* without the flag (an old relay): no trace */
	assert_int_equal(data_hdr_parse(buf, DATA_HDR_LEN, &t2), 0);
	assert_true(t2.trace == 0);
	/* the flag without the 8 bytes is a protocol error; so is a length that disagrees */
	buf[5] = DATA_HDR_F_TRACE;
	assert_int_equal(data_hdr_parse(buf, DATA_HDR_LEN, &t2), -EPROTO);
	assert_int_equal(data_hdr_parse(tb, sizeof(tb) - 1, &t2), -EPROTO);
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

static void plan_round_trips_and_bounds_its_fields(void **state)
{
	uint8_t buf[1024];
	struct ctl_msg in = {.type = CTL_PLAN};
	strcpy(in.u.plan.tier, "free");
	in.u.plan.max_tunnels = 1;
	in.u.plan.max_players = 20;
	in.u.plan.idle_timeout_s = 1800;
	in.u.plan.bandwidth_bytes = 10737418240ULL;
	in.u.plan.used_bytes = 5000000000ULL;
	in.u.plan.period_end = 1798761600;
	strcpy(in.u.plan.state, "capped");
	strcpy(in.u.plan.message, "bandwidth used up");
	int n = ctl_encode(&in, buf, sizeof(buf));
	assert_true(n > CTL_HDR_LEN);
	size_t used;
	char err[160] = "";
	assert_int_equal(ctl_decode(buf, (size_t)n, &m, &used, err, sizeof(err)), 0);
	assert_int_equal(m.type, CTL_PLAN);
	assert_string_equal(m.u.plan.tier, "free");
	assert_int_equal(m.u.plan.max_players, 20);
	assert_int_equal(m.u.plan.idle_timeout_s, 1800);
	assert_true(m.u.plan.bandwidth_bytes == 10737418240ULL);
	assert_true(m.u.plan.used_bytes == 5000000000ULL);
	assert_int_equal(m.u.plan.period_end, 1798761600);
	assert_string_equal(m.u.plan.state, "capped");
	assert_string_equal(m.u.plan.message, "bandwidth used up");
	assert_string_equal(ctl_type_name(CTL_PLAN), "PLAN");
	/* only the tier is required; state defaults to ok */
	n = (int)frame(buf, CTL_PLAN, "{\"tier\":\"paid\"}");
	assert_int_equal(ctl_decode(buf, (size_t)n, &m, &used, err, sizeof(err)), 0);
	assert_string_equal(m.u.plan.state, "ok");
	n = (int)frame(buf, CTL_PLAN, "{\"max_players\":3}");
	expect_reject(buf, (size_t)n, "missing \"tier\"");
	n = (int)frame(buf, CTL_PLAN, "{\"tier\":\"free\",\"max_players\":-1}");
	expect_reject(buf, (size_t)n, "max_players");
	n = (int)frame(buf, CTL_PLAN, "{\"tier\":\"free\",\"idle_timeout_s\":\"1\"}");
	expect_reject(buf, (size_t)n, "idle_timeout_s");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(hello_round_trip),
		cmocka_unit_test(attach_tokens_round_trip),
		cmocka_unit_test(two_frames_in_one_buffer),
		cmocka_unit_test(malformed_frames_are_rejected),
		cmocka_unit_test(unknown_types_are_skipped),
		cmocka_unit_test(status_round_trip_points_into_the_frame),
		cmocka_unit_test(status_too_big_or_not_an_object_is_refused),
		cmocka_unit_test(welcome_peers),
		cmocka_unit_test(goodbye_moved_round_trip),
		cmocka_unit_test(ctlconn_carries_full_size_frames_buffering_only_what_arrived),
		cmocka_unit_test(data_header_round_trip),
		cmocka_unit_test(byte_codec_round_trips_and_refuses_unknown_families),
		cmocka_unit_test(proxy_v2_ipv4_header),
		cmocka_unit_test(plan_round_trips_and_bounds_its_fields),
		cmocka_unit_test(proxy_v2_mixed_families_use_ipv6),
	};
	return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
