/* Minecraft handshake parsing and the packets the relay answers itself (common/mc.c).
 *
 * Inputs are built by a small encoder of this file's own (not mc_varint_write) and handed to the
 * parser in a heap buffer of exactly their length, so ASan reports any read past len.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mc.h"

/* A string literal and its length, embedded NULs included. */
#define S(lit) (lit), (sizeof(lit) - 1)

/* ---- helpers ------------------------------------------------------------------------------- */

static const char *rc_name(int rc)
{
	switch (rc) {
	case 0: return "0 (parsed)";
	case MC_NEED_MORE: return "MC_NEED_MORE";
	case MC_EVARINT: return "MC_EVARINT";
	case MC_ETOOBIG: return "MC_ETOOBIG";
	case MC_EEMPTY: return "MC_EEMPTY";
	case MC_EPACKET: return "MC_EPACKET";
	case MC_EHOST: return "MC_EHOST";
	case MC_ESTATE: return "MC_ESTATE";
	case MC_ETRUNC: return "MC_ETRUNC";
	case MC_ELEGACY: return "MC_ELEGACY";
	default: return "(unknown code)";
	}
}

#define expect_rc(got, want, what, err)                                                          \
	do {                                                                                     \
		int got_ = (got), want_ = (want);                                                \
		if (got_ != want_)                                                               \
			fail_msg("%s: expected %s, got %s (message: \"%s\")", (what),            \
				 rc_name(want_), rc_name(got_), (err));                          \
	} while (0)

#define expect_str(got, want, what)                                                              \
	do {                                                                                     \
		if (strcmp((got), (want)) != 0)                                                  \
			fail_msg("%s: expected \"%s\", got \"%s\"", (what), (want), (got));      \
	} while (0)

#define expect_num(got, want, what)                                                              \
	do {                                                                                     \
		long long got_ = (long long)(got), want_ = (long long)(want);                    \
		if (got_ != want_)                                                               \
			fail_msg("%s: expected %lld, got %lld", (what), want_, got_);            \
	} while (0)

/* Parse a copy of data in a heap block of exactly len bytes: any over-read trips ASan. */
static int parse(const uint8_t *data, size_t len, struct mc_handshake *hs, char *err, size_t errlen)
{
	uint8_t *copy = malloc(len ? len : 1);
	int rc;

	assert_non_null(copy);
	if (len)
		memcpy(copy, data, len);
	rc = mc_parse_handshake(copy, len, hs, err, errlen);
	free(copy);
	return rc;
}

static size_t put_varint(uint8_t *out, int32_t v)
{
	uint32_t u = (uint32_t)v;
	size_t n = 0;

	do {
		out[n] = u & 0x7F;
		u >>= 7;
		if (u)
			out[n] |= 0x80;
		n++;
	} while (u);
	return n;
}

/* A complete handshake frame: length, 0x00, protocol, host (hlen raw bytes), port, next. */
static size_t enc_handshake(uint8_t *out, int32_t proto, const char *host, size_t hlen,
			    uint16_t port, int32_t next)
{
	uint8_t body[2048];
	size_t n = 0, m;

	body[n++] = 0x00;
	n += put_varint(body + n, proto);
	n += put_varint(body + n, (int32_t)hlen);
	memcpy(body + n, host, hlen);
	n += hlen;
	body[n++] = (uint8_t)(port >> 8);
	body[n++] = (uint8_t)port;
	n += put_varint(body + n, next);
	m = put_varint(out, (int32_t)n);
	memcpy(out + m, body, n);
	return m + n;
}

static size_t enc_hs(uint8_t *out, int32_t proto, const char *host, uint16_t port, int32_t next)
{
	return enc_handshake(out, proto, host, strlen(host), port, next);
}

/* A 1.6 legacy ping: FE 01 FA, "MC|PingHost", data length, protocol, host, port. */
static size_t enc_legacy_host(uint8_t *out, const char *channel, uint8_t proto, const char *host,
			      int32_t port)
{
	size_t n = 0, hl = strlen(host), cl = strlen(channel);

	out[n++] = 0xFE;
	out[n++] = 0x01;
	out[n++] = 0xFA;
	out[n++] = (uint8_t)(cl >> 8);
	out[n++] = (uint8_t)cl;
	for (size_t i = 0; i < cl; i++) {
		out[n++] = 0;
		out[n++] = (uint8_t)channel[i];
	}
	out[n++] = (uint8_t)((7 + 2 * hl) >> 8);
	out[n++] = (uint8_t)(7 + 2 * hl);
	out[n++] = proto;
	out[n++] = (uint8_t)(hl >> 8);
	out[n++] = (uint8_t)hl;
	for (size_t i = 0; i < hl; i++) {
		out[n++] = 0;
		out[n++] = (uint8_t)host[i];
	}
	out[n++] = (uint8_t)((uint32_t)port >> 24);
	out[n++] = (uint8_t)((uint32_t)port >> 16);
	out[n++] = (uint8_t)((uint32_t)port >> 8);
	out[n++] = (uint8_t)port;
	return n;
}

/* Every proper prefix of a valid first packet is a valid prefix: NEED_MORE, never a verdict. */
static void expect_need_more_for_every_prefix(const uint8_t *buf, size_t len, const char *what)
{
	struct mc_handshake hs;
	char err[256] = "", label[160];

	for (size_t i = 0; i < len; i++) {
		snprintf(label, sizeof(label), "%s cut to %zu of %zu bytes", what, i, len);
		expect_rc(parse(buf, i, &hs, err, sizeof(err)), MC_NEED_MORE, label, err);
	}
}

/* A modern handshake that must parse, giving `want_host`. */
static void expect_host(const char *raw, size_t rawlen, const char *want_host)
{
	uint8_t buf[2048];
	struct mc_handshake hs;
	char err[256] = "", label[128];
	size_t n = enc_handshake(buf, 767, raw, rawlen, 25565, MC_NEXT_LOGIN);

	snprintf(label, sizeof(label), "handshake for host \"%s\"", want_host);
	expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, label, err);
	expect_str(hs.host, want_host, "normalised host");
	expect_num(hs.host_len, strlen(want_host), "host_len");
	expect_num(hs.frame_len, n, "frame_len");
}

/* A modern handshake with this raw host that must be refused with `want`. */
static void expect_host_rejected(const char *raw, size_t rawlen, int want, const char *what)
{
	uint8_t buf[2048];
	struct mc_handshake hs;
	char err[256] = "";
	size_t n = enc_handshake(buf, 767, raw, rawlen, 25565, MC_NEXT_LOGIN);

	expect_rc(parse(buf, n, &hs, err, sizeof(err)), want, what, err);
	if (err[0] == '\0')
		fail_msg("%s: expected an error message, got an empty one", what);
}

static void expect_bytes_rejected(const uint8_t *buf, size_t n, int want, const char *what,
				  const char *msg_part)
{
	struct mc_handshake hs;
	char err[256] = "";

	expect_rc(parse(buf, n, &hs, err, sizeof(err)), want, what, err);
	if (msg_part && !strstr(err, msg_part))
		fail_msg("%s: expected a message containing \"%s\", got \"%s\"", what, msg_part,
			 err);
	/* and the same answer when the caller wants no message */
	expect_rc(parse(buf, n, &hs, NULL, 0), want, what, "(no buffer)");
}

/* ---- VarInt -------------------------------------------------------------------------------- */

static void test_varint_round_trips_known_encodings(void **state)
{
	static const struct {
		int32_t v;
		uint8_t bytes[5];
		int n;
	} cases[] = {
		{ 0, { 0x00 }, 1 },
		{ 1, { 0x01 }, 1 },
		{ 127, { 0x7F }, 1 },
		{ 128, { 0x80, 0x01 }, 2 },
		{ 255, { 0xFF, 0x01 }, 2 },
		{ 25565, { 0xDD, 0xC7, 0x01 }, 3 },
		{ 2097151, { 0xFF, 0xFF, 0x7F }, 3 },
		{ INT32_MAX, { 0xFF, 0xFF, 0xFF, 0xFF, 0x07 }, 5 },
		{ -1, { 0xFF, 0xFF, 0xFF, 0xFF, 0x0F }, 5 },
		{ INT32_MIN, { 0x80, 0x80, 0x80, 0x80, 0x08 }, 5 },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t out[5];
		int32_t v = 12345;
		char what[64];

		snprintf(what, sizeof(what), "mc_varint_write(%d) size", cases[i].v);
		expect_num(mc_varint_write(out, cases[i].v), cases[i].n, what);
		if (memcmp(out, cases[i].bytes, (size_t)cases[i].n) != 0)
			fail_msg("mc_varint_write(%d) wrote different bytes than the protocol's",
				 cases[i].v);
		snprintf(what, sizeof(what), "mc_varint_read of %d: bytes used", cases[i].v);
		expect_num(mc_varint_read(cases[i].bytes, (size_t)cases[i].n, &v), cases[i].n,
			   what);
		snprintf(what, sizeof(what), "mc_varint_read of %d: value", cases[i].v);
		expect_num(v, cases[i].v, what);
		for (int cut = 0; cut < cases[i].n; cut++) {
			snprintf(what, sizeof(what), "mc_varint_read of %d cut to %d bytes",
				 cases[i].v, cut);
			expect_num(mc_varint_read(cases[i].bytes, (size_t)cut, &v), 0, what);
		}
	}
}

static void test_varint_longer_than_five_bytes_is_malformed(void **state)
{
	static const uint8_t six[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 };
	static const uint8_t fifth_too_big[] = { 0xFF, 0xFF, 0xFF, 0xFF, 0x1F };
	int32_t v;

	(void)state;
	expect_num(mc_varint_read(six, sizeof(six), &v), MC_EVARINT,
		   "VarInt of 6 bytes (continuation bit on the 5th)");
	expect_num(mc_varint_read(six, 5, &v), MC_EVARINT,
		   "5 bytes all with the continuation bit");
	expect_num(mc_varint_read(fifth_too_big, sizeof(fifth_too_big), &v), MC_EVARINT,
		   "VarInt whose 5th byte sets bits beyond 32");
	expect_num(mc_varint_read(six, 4, &v), 0, "4 continuation bytes: needs more");
}

/* ---- Modern handshakes ---------------------------------------------------------------------- */

static void test_handshake_parses_every_protocol_generation(void **state)
{
	static const int32_t protos[] = {
		47,  /* 1.8 */
		340, /* 1.12.2 */
		578, /* 1.15.2 */
		754, /* 1.16.5 */
		763, /* 1.20.1 */
		767, /* 1.21.1 */
		769, /* 1.21.4 */
		0x40000000 | 230, /* snapshot numbering */
		INT32_MAX,
	};
	(void)state;
	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		for (int32_t next = MC_NEXT_STATUS; next <= MC_NEXT_TRANSFER; next++) {
			uint8_t buf[512];
			struct mc_handshake hs;
			char err[256] = "", what[96];
			size_t n = enc_hs(buf, protos[i], "play.example.com", 25565, next);

			snprintf(what, sizeof(what), "protocol %d next state %d", protos[i], next);
			expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, what, err);
			expect_num(hs.kind, MC_KIND_MODERN, "kind");
			expect_num(hs.protocol, protos[i], "protocol");
			expect_str(hs.host, "play.example.com", "host");
			expect_num(hs.host_len, 16, "host_len");
			expect_num(hs.port, 25565, "port");
			expect_num(hs.next_state, next, "next_state");
			expect_num(hs.frame_len, n, "frame_len (whole frame)");
			expect_need_more_for_every_prefix(buf, n, what);
		}
	}
}

static void test_handshake_port_is_big_endian_and_unsigned(void **state)
{
	uint8_t buf[512];
	struct mc_handshake hs;
	char err[256] = "";
	size_t n = enc_hs(buf, 767, "a.example", 0xFFFE, MC_NEXT_STATUS);

	(void)state;
	expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, "port 65534", err);
	expect_num(hs.port, 65534, "port");
	n = enc_hs(buf, 767, "a.example", 0, MC_NEXT_STATUS);
	expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, "port 0", err);
	expect_num(hs.port, 0, "port");
}

static void test_forge_markers_are_cut_off(void **state)
{
	(void)state;
	expect_host(S("mc.example.com\0FML\0"), "mc.example.com");
	expect_host(S("mc.example.com\0FML2\0"), "mc.example.com");
	expect_host(S("mc.example.com\0FML3\0"), "mc.example.com");
	expect_host(S("MC.Example.com.\0FML2\0"), "mc.example.com");
}

static void test_tcpshield_suffix_is_cut_off(void **state)
{
	(void)state;
	expect_host(S("host///1.2.3.4:5555///123"), "host");
	expect_host(S("play.example.com///203.0.113.9:51234///1700000000///c2lnbmF0dXJl"),
		    "play.example.com");
	expect_host(S("Play.Example.com.///1.2.3.4:5555///123"), "play.example.com");
	/* two slashes are not the marker, and are not a valid host either */
	expect_host_rejected(S("host//x"), MC_EHOST, "host with two slashes");
}

static void test_trailing_dots_are_stripped(void **state)
{
	(void)state;
	expect_host(S("play.example.com."), "play.example.com");
	expect_host(S("play.example.com..."), "play.example.com");
}

static void test_host_is_lowercased(void **state)
{
	(void)state;
	expect_host(S("PLAY.Example.COM"), "play.example.com");
	expect_host(S("My_Server-1.Example.com"), "my_server-1.example.com");
}

static void test_srv_prefix_is_stripped(void **state)
{
	(void)state;
	expect_host(S("_minecraft._tcp.play.example.com"), "play.example.com");
	expect_host(S("_Minecraft._TCP.Play.Example.com."), "play.example.com");
	expect_host(S("_minecraft._tcp.play.example.com.\0FML3\0"), "play.example.com");
	/* only as a prefix */
	expect_host(S("play._minecraft._tcp.example.com"), "play._minecraft._tcp.example.com");
}

static void test_ip_literal_host_is_accepted_ipv6_is_not(void **state)
{
	(void)state;
	expect_host(S("127.0.0.1"), "127.0.0.1");
	expect_host_rejected(S("::1"), MC_EHOST, "IPv6 literal ::1");
	expect_host_rejected(S("[2001:db8::1]"), MC_EHOST, "bracketed IPv6 literal");
	expect_host_rejected(S("play.example.com:25565"), MC_EHOST, "host with a port");
	expect_host_rejected(S("play example.com"), MC_EHOST, "host with a space");
	expect_host_rejected(S("pl\xc3\xa5y.example.com"), MC_EHOST,
			     "host with (valid UTF-8) non-ASCII letter");
}

static void test_pipelined_bytes_after_the_handshake_are_left_alone(void **state)
{
	uint8_t buf[512];
	struct mc_handshake hs;
	char err[256] = "";
	size_t n = enc_hs(buf, 769, "play.example.com", 25565, MC_NEXT_LOGIN);
	/* login start: 0x00, String name, UUID */
	static const uint8_t login_start[] = { 0x17, 0x00, 0x05, 'S', 't', 'e', 'v', 'e', 0x01,
					       0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
					       0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10 };
	size_t hs_len = n;

	(void)state;
	memcpy(buf + n, login_start, sizeof(login_start));
	n += sizeof(login_start);
	for (size_t len = hs_len; len <= n; len++) {
		expect_rc(parse(buf, len, &hs, err, sizeof(err)), 0,
			  "handshake followed by (part of) login start", err);
		expect_num(hs.frame_len, hs_len, "frame_len stops at the end of the handshake");
	}

	/* status: handshake, status request 01 00, ping 09 01 + 8 bytes, all in one segment */
	n = enc_hs(buf, 767, "play.example.com", 25565, MC_NEXT_STATUS);
	hs_len = n;
	buf[n++] = 0x01;
	buf[n++] = 0x00;
	buf[n++] = 0x09;
	buf[n++] = 0x01;
	memset(buf + n, 0xAB, 8);
	n += 8;
	expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, "handshake + status request + ping",
		  err);
	expect_num(hs.frame_len, hs_len, "frame_len");
}

static void test_bytes_inside_the_frame_after_next_state_are_ignored(void **state)
{
	uint8_t buf[512];
	struct mc_handshake hs;
	char err[256] = "";
	size_t n = enc_hs(buf, 767, "a.example", 25565, MC_NEXT_LOGIN);

	(void)state;
	buf[0] += 2; /* frame claims two more bytes (length < 128: one-byte VarInt) */
	buf[n++] = 0xAA;
	buf[n++] = 0xBB;
	expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, "frame with 2 spare bytes", err);
	expect_num(hs.frame_len, n, "frame_len covers the whole frame");
	expect_rc(parse(buf, n - 1, &hs, err, sizeof(err)), MC_NEED_MORE,
		  "frame with 2 spare bytes, the last one still to come", err);
}

static void test_largest_frame_is_accepted_one_more_byte_is_too_big(void **state)
{
	uint8_t buf[1024];
	char host[600];
	struct mc_handshake hs;
	char err[256] = "";
	size_t n;

	(void)state;
	/* 255-byte name, then a TCPShield suffix padding the frame to exactly 512 bytes:
	 * 2 (length) + 1 (id) + 2 (proto 767) + 2 (host length) + host + 2 (port) + 1 (next) */
	memset(host, 'a', sizeof(host));
	memcpy(host + 255, "///", 3);
	n = enc_handshake(buf, 767, host, 512 - 10, 25565, MC_NEXT_LOGIN);
	expect_num(n, 512, "test frame size");
	expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, "512-byte handshake", err);
	expect_num(hs.host_len, 255, "host_len");
	expect_need_more_for_every_prefix(buf, n, "512-byte handshake");

	n = enc_handshake(buf, 767, host, 512 - 9, 25565, MC_NEXT_LOGIN);
	expect_num(n, 513, "test frame size");
	expect_bytes_rejected(buf, n, MC_ETOOBIG, "513-byte handshake", "exceeds");
	/* decided from the length prefix alone */
	expect_bytes_rejected(buf, 2, MC_ETOOBIG, "513-byte handshake, first 2 bytes", NULL);
}

static void test_host_length_limits_apply_after_normalising(void **state)
{
	char host[300];

	(void)state;
	memset(host, 'a', sizeof(host));
	host[255] = '\0';
	expect_host(host, 255, host);
	host[255] = '.'; /* 256 raw bytes, 255 after the trailing dot goes */
	host[256] = '\0';
	{
		char want[256];

		memset(want, 'a', 255);
		want[255] = '\0';
		expect_host(host, 256, want);
	}
	memset(host, 'b', 256);
	expect_host_rejected(host, 256, MC_EHOST, "host of 256 bytes after normalising");
	memcpy(host + 256, "\0FML3\0", 6);
	expect_host_rejected(host, 262, MC_EHOST, "256-byte host with a Forge marker");
}

static void test_empty_host_is_rejected(void **state)
{
	(void)state;
	expect_host_rejected(S(""), MC_EHOST, "empty host");
	expect_host_rejected(S("."), MC_EHOST, "host of a single dot");
	expect_host_rejected(S("\0FML2\0"), MC_EHOST, "host that is only a Forge marker");
	expect_host_rejected(S("///1.2.3.4:5555///123"), MC_EHOST,
			     "host that is only a TCPShield suffix");
}

static void test_non_utf8_host_is_rejected(void **state)
{
	static const struct {
		const char *raw;
		size_t len;
		const char *what;
	} cases[] = {
		{ S("pl\xff" "ay.example.com"), "byte 0xFF" },
		{ S("play\xc0\xaf.example.com"), "overlong encoding of '/'" },
		{ S("play\xed\xa0\x80.example.com"), "UTF-16 surrogate" },
		{ S("play.example.com\xe2\x82"), "sequence cut short at the end" },
		{ S("play\xf4\x90\x80\x80.example.com"), "code point above U+10FFFF" },
		{ S("play.example.com\0\xff"), "bad byte after the Forge NUL" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t buf[512];
		char what[96];
		size_t n = enc_handshake(buf, 767, cases[i].raw, cases[i].len, 25565, 2);

		snprintf(what, sizeof(what), "host with %s", cases[i].what);
		expect_bytes_rejected(buf, n, MC_EHOST, what, "not valid UTF-8");
	}
}

static void test_malformed_frame_lengths(void **state)
{
	static const uint8_t overlong[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80 };
	static const uint8_t negative[] = { 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00 };
	static const uint8_t zero[] = { 0x00, 0x00, 0x2F };
	static const uint8_t huge[] = { 0xF0, 0xA2, 0x04 }; /* 70000 */
	static const uint8_t just_over[] = { 0xFF, 0x03, 0x00 }; /* 511 + 2 = 513 */

	(void)state;
	expect_bytes_rejected(overlong, sizeof(overlong), MC_EVARINT,
			      "frame length VarInt of 6 bytes", "longer than 5 bytes");
	expect_bytes_rejected(negative, sizeof(negative), MC_EVARINT, "frame length -1",
			      "negative");
	expect_bytes_rejected(zero, sizeof(zero), MC_EEMPTY, "frame length 0", "0");
	expect_bytes_rejected(huge, sizeof(huge), MC_ETOOBIG, "frame length 70000",
			      "frame length 70000 exceeds");
	expect_bytes_rejected(just_over, sizeof(just_over), MC_ETOOBIG, "frame length 511",
			      "exceeds 510");
}

static void test_malformed_fields_inside_the_frame(void **state)
{
	uint8_t buf[512];
	size_t n;

	(void)state;
	/* wrong packet id, refused as soon as the id is there */
	n = enc_hs(buf, 767, "play.example.com", 25565, 2);
	buf[1] = 0x01;
	expect_bytes_rejected(buf, n, MC_EPACKET, "packet id 0x01", "0x01");
	expect_bytes_rejected(buf, 2, MC_EPACKET, "packet id 0x01, first 2 bytes only", NULL);

	/* bad next state */
	for (int32_t next = -1; next <= 5; next++) {
		char what[64];

		if (next >= 1 && next <= 3)
			continue;
		n = enc_hs(buf, 767, "play.example.com", 25565, next);
		snprintf(what, sizeof(what), "next state %d", next);
		expect_bytes_rejected(buf, n, MC_ESTATE, what, "next state");
	}

	/* host length beyond the frame: a huge value and a slightly too large one */
	{
		static const uint8_t huge_str[] = { 0x0A, 0x00, 0xFF, 0x05, 0xFF, 0xFF,
						    0xFF, 0xFF, 0x07, 'a', 'b' };
		static const uint8_t neg_str[] = { 0x0A, 0x00, 0xFF, 0x05, 0xFF, 0xFF,
						   0xFF, 0xFF, 0x0F, 'a', 'b' };
		static const uint8_t over[] = { 0x08, 0x00, 0x2F, 0x03, 'a', 'b', 'c', 0x63, 0xDD };

		expect_bytes_rejected(huge_str, sizeof(huge_str), MC_ETRUNC,
				      "host length 2147483647", "does not fit");
		expect_bytes_rejected(huge_str, 9, MC_ETRUNC,
				      "host length 2147483647, before the host bytes", NULL);
		expect_bytes_rejected(neg_str, sizeof(neg_str), MC_EVARINT, "host length -1",
				      "negative");
		expect_bytes_rejected(over, sizeof(over), MC_ETRUNC,
				      "host length leaving no room for port and next state",
				      "does not fit");
	}

	/* frame ends inside a field */
	{
		static const uint8_t in_proto[] = { 0x02, 0x00, 0xFF, 0x00 };
		static const uint8_t in_next[] = { 0x07, 0x00, 0x2F, 0x01, 'a', 0x63, 0xDD, 0x82, 0x00 };
		static const uint8_t overlong_proto[] = { 0x08, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00, 0x00 };

		expect_bytes_rejected(in_proto, sizeof(in_proto), MC_ETRUNC,
				      "frame ending inside the protocol VarInt", "protocol");
		expect_bytes_rejected(in_next, sizeof(in_next), MC_ETRUNC,
				      "frame ending inside the next state VarInt", "next state");
		expect_bytes_rejected(overlong_proto, sizeof(overlong_proto), MC_EVARINT,
				      "protocol VarInt of 6 bytes", "protocol");
	}
}

static void test_truncated_handshakes_always_need_more(void **state)
{
	uint8_t buf[1024];
	char host[400];
	size_t n;

	(void)state;
	n = enc_handshake(buf, 47, "mc.example.com\0FML\0", 19, 25565, 2);
	expect_need_more_for_every_prefix(buf, n, "1.8 Forge handshake");
	n = enc_hs(buf, 754, "play.example.com///1.2.3.4:5555///1700000000", 25565, 1);
	expect_need_more_for_every_prefix(buf, n, "TCPShield handshake");
	memset(host, 'x', 300); /* two-byte frame length and host length */
	n = enc_handshake(buf, 769, host, 250, 25565, 3);
	expect_need_more_for_every_prefix(buf, n, "handshake with a 250-byte host");
}

/* A modern frame of 254, 382 or 510 bytes starts FE 01|02|03 like a legacy ping. */
static void test_modern_frame_starting_with_fe_is_not_a_legacy_ping(void **state)
{
	static const size_t bodies[] = { 254, 255, 382, 510 };
	char host[600];

	(void)state;
	memset(host, 'z', sizeof(host));
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		uint8_t buf[1024];
		struct mc_handshake hs;
		char err[256] = "", what[64];
		/* body: id 1 + proto 767 (2) + host length (2) + host + port 2 + next 1 */
		size_t hlen = bodies[i] - 8;
		size_t n;

		memcpy(host + 200, "///", 3); /* keep the name within 255 bytes */
		n = enc_handshake(buf, 767, host, hlen, 25565, MC_NEXT_LOGIN);
		snprintf(what, sizeof(what), "modern frame with a %zu-byte body", bodies[i]);
		expect_num(n, bodies[i] + 2, "test frame size");
		if (buf[0] != 0xFE && bodies[i] != 255)
			fail_msg("%s: test frame expected to start with 0xFE", what);
		expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, what, err);
		expect_num(hs.kind, MC_KIND_MODERN, "kind");
		expect_num(hs.host_len, 200, "host_len");
		expect_need_more_for_every_prefix(buf, n, what);
	}
}

/* ---- Legacy pings -------------------------------------------------------------------------- */

static void test_legacy_ping_without_host(void **state)
{
	static const uint8_t fe[] = { 0xFE };
	static const uint8_t fe01[] = { 0xFE, 0x01 };
	static const uint8_t fe01x[] = { 0xFE, 0x01, 0x05 };
	struct mc_handshake hs;
	char err[256] = "";

	(void)state;
	/* FE and FE 01 may be all there is, or not: the caller waits, then answers legacy */
	expect_rc(parse(fe, 1, &hs, err, sizeof(err)), MC_NEED_MORE, "FE alone", err);
	expect_num(mc_is_legacy_prefix(fe, 1), 1, "mc_is_legacy_prefix(FE)");
	expect_rc(parse(fe01, 2, &hs, err, sizeof(err)), MC_NEED_MORE, "FE 01", err);
	expect_num(mc_is_legacy_prefix(fe01, 2), 1, "mc_is_legacy_prefix(FE 01)");

	expect_rc(parse(fe01x, 3, &hs, err, sizeof(err)), 0, "FE 01 05", err);
	expect_num(hs.kind, MC_KIND_LEGACY_PING, "kind");
	expect_num(hs.frame_len, 2, "frame_len");
	expect_num(hs.protocol, -1, "protocol");
	expect_num(hs.host_len, 0, "host_len");
	expect_num(hs.next_state, MC_NEXT_STATUS, "next_state");
	expect_num(mc_is_legacy_prefix(fe01x, 3), 0, "mc_is_legacy_prefix(FE 01 05)");
}

static void test_is_legacy_prefix_only_for_fe_and_fe01(void **state)
{
	static const uint8_t bytes[] = { 0xFE, 0x01, 0xFA, 0x00 };
	static const uint8_t fe02[] = { 0xFE, 0x02 };
	static const uint8_t modern[] = { 0x10, 0x00 };

	(void)state;
	expect_num(mc_is_legacy_prefix(bytes, 0), 0, "empty buffer");
	expect_num(mc_is_legacy_prefix(bytes, 3), 0, "FE 01 FA (1.6 ping under way)");
	expect_num(mc_is_legacy_prefix(fe02, 2), 0, "FE 02");
	expect_num(mc_is_legacy_prefix(modern, 1), 0, "modern frame");
}

static void test_legacy_ping_host_1_6(void **state)
{
	uint8_t buf[600];
	struct mc_handshake hs;
	char err[256] = "";
	size_t n = enc_legacy_host(buf, "MC|PingHost", 78, "Play.Example.com.", 25565);

	(void)state;
	expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, "1.6 MC|PingHost", err);
	expect_num(hs.kind, MC_KIND_LEGACY_PING_HOST, "kind");
	expect_str(hs.host, "play.example.com", "host, normalised");
	expect_num(hs.host_len, 16, "host_len");
	expect_num(hs.protocol, 78, "protocol");
	expect_num(hs.port, 25565, "port");
	expect_num(hs.next_state, MC_NEXT_STATUS, "next_state");
	expect_num(hs.frame_len, n, "frame_len");
	expect_need_more_for_every_prefix(buf, n, "1.6 MC|PingHost");

	n = enc_legacy_host(buf, "MC|PingHost", 74, "_minecraft._tcp.mc.example.com", 65535);
	expect_rc(parse(buf, n, &hs, err, sizeof(err)), 0, "1.6 MC|PingHost with SRV name", err);
	expect_str(hs.host, "mc.example.com", "host");
	expect_num(hs.port, 65535, "port");
}

static void test_malformed_legacy_pings(void **state)
{
	uint8_t buf[1024];
	size_t n;

	(void)state;
	{
		static const uint8_t fe00[] = { 0xFE, 0x00 };
		static const uint8_t fe05[] = { 0xFE, 0x05 };
		static const uint8_t fe02x[] = { 0xFE, 0x02, 0x07 };

		expect_bytes_rejected(fe00, 2, MC_ELEGACY, "FE 00", "0x00");
		expect_bytes_rejected(fe05, 2, MC_ELEGACY, "FE 05", "0x05");
		expect_bytes_rejected(fe02x, 3, MC_ELEGACY, "FE 02 07", NULL);
	}
	n = enc_legacy_host(buf, "MC|PingHosx", 78, "a.example", 25565);
	expect_bytes_rejected(buf, n, MC_ELEGACY, "channel MC|PingHosx", "MC|PingHost");
	expect_bytes_rejected(buf, 27, MC_ELEGACY, "channel MC|PingHosx, cut after the x",
			      NULL);
	n = enc_legacy_host(buf, "MC|PingHos", 78, "a.example", 25565);
	expect_bytes_rejected(buf, n, MC_ELEGACY, "channel name of 10 characters", "11");
	n = enc_legacy_host(buf, "MC|PingHost", 78, "a.example", 70000);
	expect_bytes_rejected(buf, n, MC_ELEGACY, "port 70000", "port");
	n = enc_legacy_host(buf, "MC|PingHost", 78, "a.example", -1);
	expect_bytes_rejected(buf, n, MC_ELEGACY, "port -1", "port");
	n = enc_legacy_host(buf, "MC|PingHost", 78, "a.example", 25565);
	buf[28] += 1; /* data length */
	expect_bytes_rejected(buf, n, MC_ELEGACY, "data length off by one", "data length");
	n = enc_legacy_host(buf, "MC|PingHost", 78, "a.example", 25565);
	buf[32 + 2 * 3] = 0x01; /* 4th host char: U+0100-ish */
	expect_bytes_rejected(buf, n, MC_EHOST, "non-ASCII host character", "non-ASCII");
	n = enc_legacy_host(buf, "MC|PingHost", 78, "a example", 25565);
	expect_bytes_rejected(buf, n, MC_EHOST, "host with a space", NULL);
	n = enc_legacy_host(buf, "MC|PingHost", 78, "", 25565);
	expect_bytes_rejected(buf, n, MC_EHOST, "empty host", "empty");
	{
		char host[300];

		memset(host, 'a', 239);
		host[239] = '\0';
		n = enc_legacy_host(buf, "MC|PingHost", 78, host, 25565);
		expect_bytes_rejected(buf, n, MC_ETOOBIG, "239-character host", "more than 512");
		expect_bytes_rejected(buf, 32, MC_ETOOBIG,
				      "239-character host, decided from the header", NULL);
		host[238] = '\0';
		n = enc_legacy_host(buf, "MC|PingHost", 78, host, 25565);
		expect_num(n, 512, "test ping size");
		expect_rc(parse(buf, n, &(struct mc_handshake){ 0 }, NULL, 0), 0,
			  "238-character host", "");
	}
}

/* ---- mc_parse_packet ----------------------------------------------------------------------- */

static void test_parse_packet_status_request_and_ping(void **state)
{
	static const uint8_t req[] = { 0x01, 0x00, 0x09, 0x01, 1, 2, 3, 4, 5, 6, 7, 8 };
	const uint8_t *p;
	size_t plen, used;
	int32_t id;

	(void)state;
	expect_rc(mc_parse_packet(req, sizeof(req), 64, &id, &p, &plen, &used), 0,
		  "status request", "");
	expect_num(id, 0, "status request id");
	expect_num(plen, 0, "status request payload");
	expect_num(used, 2, "status request consumed");

	expect_rc(mc_parse_packet(req + 2, sizeof(req) - 2, 64, &id, &p, &plen, &used), 0,
		  "ping", "");
	expect_num(id, 1, "ping id");
	expect_num(plen, 8, "ping payload");
	expect_num(used, 10, "ping consumed");
	expect_num(p[0] == 1 && p[7] == 8, 1, "ping payload bytes");

	for (size_t cut = 0; cut < 10; cut++)
		expect_rc(mc_parse_packet(req + 2, cut, 64, &id, &p, &plen, &used), MC_NEED_MORE,
			  "ping cut short", "");
}

static void test_parse_packet_malformed(void **state)
{
	static const uint8_t zero[] = { 0x00 };
	static const uint8_t neg[] = { 0xFF, 0xFF, 0xFF, 0xFF, 0x0F };
	static const uint8_t six[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
	static const uint8_t big[] = { 0x41, 0x00 };
	static const uint8_t id_cut[] = { 0x01, 0x80 };
	static const uint8_t id_long[] = { 0x06, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
	const uint8_t *p;
	size_t plen, used;
	int32_t id;

	(void)state;
	expect_rc(mc_parse_packet(zero, 1, 64, &id, &p, &plen, &used), MC_EEMPTY, "length 0", "");
	expect_rc(mc_parse_packet(neg, 5, 64, &id, &p, &plen, &used), MC_EVARINT, "length -1",
		  "");
	expect_rc(mc_parse_packet(six, 6, 64, &id, &p, &plen, &used), MC_EVARINT,
		  "length VarInt of 6 bytes", "");
	expect_rc(mc_parse_packet(big, 2, 64, &id, &p, &plen, &used), MC_ETOOBIG,
		  "length 65 with max 64", "");
	expect_rc(mc_parse_packet(id_cut, 2, 64, &id, &p, &plen, &used), MC_ETRUNC,
		  "frame ending inside the id", "");
	expect_rc(mc_parse_packet(id_long, 7, 64, &id, &p, &plen, &used), MC_EVARINT,
		  "id VarInt of 6 bytes", "");
}

/* ---- Builders ------------------------------------------------------------------------------ */

/* Parse a String-carrying packet the builder made: returns the String, NUL-terminated. */
static void unpack_string_packet(const uint8_t *pkt, size_t n, int32_t want_id, char *out,
				 size_t outcap, const char *what)
{
	const uint8_t *p;
	size_t plen, used;
	int32_t id, slen;
	int k;

	expect_rc(mc_parse_packet(pkt, n, 1 << 20, &id, &p, &plen, &used), 0, what, "");
	expect_num(used, n, "packet fills what the builder returned");
	expect_num(id, want_id, "packet id");
	k = mc_varint_read(p, plen, &slen);
	if (k <= 0)
		fail_msg("%s: expected a String VarInt length, got %d", what, k);
	expect_num((size_t)k + (size_t)slen, plen, "String fills the packet");
	assert_true((size_t)slen < outcap);
	memcpy(out, p + k, (size_t)slen);
	out[slen] = '\0';
}

/* Every cap below the packet size gives 0 and writes nothing past cap. */
static void expect_zero_below_size(size_t (*build)(uint8_t *, size_t, const void *),
				   const void *arg, size_t size, const char *what)
{
	for (size_t cap = 0; cap < size; cap++) {
		uint8_t *buf = malloc(cap ? cap : 1);
		char label[128];

		assert_non_null(buf);
		snprintf(label, sizeof(label), "%s into %zu of %zu bytes", what, cap, size);
		expect_num(build(buf, cap, arg), 0, label);
		free(buf);
	}
}

struct status_in {
	int32_t protocol;
	const char *version, *motd;
};

static size_t build_status(uint8_t *out, size_t cap, const void *arg)
{
	const struct status_in *s = arg;

	return mc_build_status_response(out, cap, s->protocol, s->version, s->motd);
}

static size_t build_disconnect(uint8_t *out, size_t cap, const void *arg)
{
	return mc_build_login_disconnect(out, cap, arg);
}

static size_t build_kick(uint8_t *out, size_t cap, const void *arg)
{
	const struct status_in *s = arg;

	return mc_build_legacy_kick(out, cap, s->protocol, s->version, s->motd);
}

static void test_status_response_round_trips_with_json_escaping(void **state)
{
	static const struct status_in in = {
		767, "DVV \"1.21\"",
		"say \"hi\" \\o/\nline\ttab\x01 \xc2\xa7" "aGreen \xe2\x9c\x93 \xf0\x9f\x98\x80 bad\xff."
	};
	static const char want[] =
		"{\"version\":{\"name\":\"DVV \\\"1.21\\\"\",\"protocol\":767},"
		"\"players\":{\"max\":0,\"online\":0},"
		"\"description\":{\"text\":\"say \\\"hi\\\" \\\\o/\\u000aline\\u0009tab\\u0001 "
		"\xc2\xa7" "aGreen \xe2\x9c\x93 \xf0\x9f\x98\x80 bad\xef\xbf\xbd.\"}}";
	uint8_t pkt[1024];
	char json[1024];
	size_t n;

	(void)state;
	n = mc_build_status_response(pkt, sizeof(pkt), in.protocol, in.version, in.motd);
	if (n == 0)
		fail_msg("status response: expected a packet in 1024 bytes, got 0");
	unpack_string_packet(pkt, n, 0x00, json, sizeof(json), "status response");
	expect_str(json, want, "status JSON");
	expect_zero_below_size(build_status, &in, n, "status response");

	/* exact fit, and a negative protocol (what some pingers send) */
	n = mc_build_status_response(pkt, sizeof(pkt), -1, "x", "");
	expect_num(mc_build_status_response(pkt, n, -1, "x", ""), n, "status response, exact cap");
	unpack_string_packet(pkt, n, 0x00, json, sizeof(json), "status response, protocol -1");
	expect_str(json,
		   "{\"version\":{\"name\":\"x\",\"protocol\":-1},\"players\":{\"max\":0,"
		   "\"online\":0},\"description\":{\"text\":\"\"}}",
		   "status JSON with protocol -1");
}

static void test_status_response_with_long_motd_uses_two_byte_lengths(void **state)
{
	char motd[400];
	uint8_t pkt[1024];
	char json[1024];
	size_t n;

	(void)state;
	memset(motd, 'm', 300);
	motd[300] = '\0';
	n = mc_build_status_response(pkt, sizeof(pkt), 769, "1.21.4", motd);
	if (n == 0)
		fail_msg("status response with a 300-byte motd: expected a packet, got 0");
	unpack_string_packet(pkt, n, 0x00, json, sizeof(json), "status response, long motd");
	if (!strstr(json, motd))
		fail_msg("status JSON: expected the 300-byte motd inside, got \"%s\"", json);
}

static void test_pong_echoes_the_payload(void **state)
{
	static const uint8_t payload[8] = { 0, 0, 1, 0x8f, 0x12, 0x34, 0x56, 0x78 };
	uint8_t pkt[16];
	const uint8_t *p;
	size_t plen, used;
	int32_t id;

	(void)state;
	expect_num(mc_build_pong(pkt, sizeof(pkt), payload), 10, "pong size");
	expect_rc(mc_parse_packet(pkt, 10, 64, &id, &p, &plen, &used), 0, "pong parses", "");
	expect_num(id, 0x01, "pong id");
	expect_num(plen, 8, "pong payload length");
	if (memcmp(p, payload, 8) != 0)
		fail_msg("pong: expected the 8 ping bytes echoed, got different bytes");
	expect_num(mc_build_pong(pkt, 9, payload), 0, "pong into 9 bytes");
}

static void test_login_disconnect_is_a_json_text_component(void **state)
{
	static const char reason[] = "Server \"mc\" is offline\\\r\n";
	uint8_t pkt[256];
	char json[256];
	size_t n;

	(void)state;
	n = mc_build_login_disconnect(pkt, sizeof(pkt), reason);
	if (n == 0)
		fail_msg("login disconnect: expected a packet, got 0");
	unpack_string_packet(pkt, n, 0x00, json, sizeof(json), "login disconnect");
	expect_str(json, "{\"text\":\"Server \\\"mc\\\" is offline\\\\\\u000d\\u000a\"}",
		   "disconnect JSON");
	expect_zero_below_size(build_disconnect, reason, n, "login disconnect");
	n = mc_build_login_disconnect(pkt, sizeof(pkt), NULL);
	unpack_string_packet(pkt, n, 0x00, json, sizeof(json), "login disconnect, NULL reason");
	expect_str(json, "{\"text\":\"\"}", "disconnect JSON for a NULL reason");
}

/* Decode the builder's UTF-16BE back into code units for comparison. */
static size_t kick_units(const uint8_t *pkt, size_t n, uint16_t *units, size_t max)
{
	size_t count;

	if (n < 3 || pkt[0] != 0xFF)
		fail_msg("legacy kick: expected 0xFF and a length, got %zu bytes starting 0x%02x",
			 n, n ? pkt[0] : 0);
	count = (size_t)pkt[1] << 8 | pkt[2];
	expect_num(3 + 2 * count, n, "kick length field matches the bytes written");
	assert_true(count <= max);
	for (size_t i = 0; i < count; i++)
		units[i] = (uint16_t)(pkt[3 + 2 * i] << 8 | pkt[4 + 2 * i]);
	return count;
}

static void test_legacy_kick_layout(void **state)
{
	static const struct status_in in = { 78, "1.6.4", "A \xf0\x9f\x98\x80 server" };
	/* §1 \0 78 \0 1.6.4 \0 A 😀 server \0 0 \0 0 */
	static const uint16_t want[] = { 0xA7, '1', 0, '7', '8', 0, '1', '.', '6', '.', '4', 0,
					 'A', ' ', 0xD83D, 0xDE00, ' ', 's', 'e', 'r', 'v', 'e',
					 'r', 0, '0', 0, '0' };
	uint8_t pkt[512];
	uint16_t units[300];
	size_t n, count;

	(void)state;
	n = mc_build_legacy_kick(pkt, sizeof(pkt), in.protocol, in.version, in.motd);
	count = kick_units(pkt, n, units, 300);
	expect_num(count, sizeof(want) / sizeof(want[0]), "kick UTF-16 length");
	for (size_t i = 0; i < count; i++)
		if (units[i] != want[i])
			fail_msg("legacy kick unit %zu: expected U+%04X, got U+%04X", i, want[i],
				 units[i]);
	expect_zero_below_size(build_kick, &in, n, "legacy kick");
}

static void test_legacy_kick_fits_the_clients_256_character_limit(void **state)
{
	char motd[700];
	uint8_t pkt[1024];
	uint16_t units[300];
	size_t n, count, off = 0;

	(void)state;
	/* 'a', then emoji (surrogate pairs) until well past the limit */
	motd[off++] = 'a';
	while (off + 4 < 600) {
		memcpy(motd + off, "\xf0\x9f\x98\x80", 4);
		off += 4;
	}
	motd[off] = '\0';
	n = mc_build_legacy_kick(pkt, sizeof(pkt), 127, "1.6.4", motd);
	count = kick_units(pkt, n, units, 300);
	if (count > 256)
		fail_msg("legacy kick: expected at most 256 UTF-16 units, got %zu", count);
	/* the tail survives, and no surrogate pair is split */
	expect_num(units[count - 1], '0', "last unit");
	expect_num(units[count - 2], 0, "NUL before max players");
	expect_num(units[count - 3], '0', "players online");
	expect_num(units[count - 4], 0, "NUL after the motd");
	expect_num(units[count - 5], 0xDE00, "motd ends on a whole surrogate pair");
}

/* ---- mc_normalise_host --------------------------------------------------------------------- */

struct hs_in {
	int32_t protocol;
	const char *host;
	uint16_t port;
};

static size_t build_hs(uint8_t *out, size_t cap, const void *arg)
{
	const struct hs_in *h = arg;

	return mc_build_handshake(out, cap, h->protocol, h->host, h->port, MC_NEXT_STATUS);
}

static void test_handshake_builder_round_trips_through_the_parser(void **state)
{
	/* the agent pings with protocol -1 (5-byte VarInt); a real one and the longest host too */
	char longest[MC_HOST_MAX + 1];
	struct hs_in cases[] = {
		{ -1, "brave-otter.eu.dvv.test", 25565 },
		{ 767, "a.b", 65535 },
		{ 47, longest, 1 },
	};
	struct mc_handshake hs;
	uint8_t pkt[MC_HANDSHAKE_MAX];
	char err[160];

	(void)state;
	memset(longest, 'h', MC_HOST_MAX);
	longest[MC_HOST_MAX] = '\0';
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = build_hs(pkt, sizeof(pkt), &cases[i]);

		assert_true(n > 0);
		expect_rc(mc_parse_handshake(pkt, n, &hs, err, sizeof(err)), 0, "built handshake",
			  err);
		expect_num(hs.frame_len, n, "the parser takes exactly what was built");
		expect_num(hs.protocol, cases[i].protocol, "protocol");
		expect_str(hs.host, cases[i].host, "host");
		expect_num(hs.port, cases[i].port, "port");
		expect_num(hs.next_state, MC_NEXT_STATUS, "next state");
		expect_zero_below_size(build_hs, &cases[i], n, "handshake");
	}
	/* -1 is the convention for "which version are you?": FF FF FF FF 0F on the wire */
	size_t n = build_hs(pkt, sizeof(pkt), &cases[0]);

	expect_num(pkt[0], n - 1, "frame length");
	assert_memory_equal(pkt + 2, "\xff\xff\xff\xff\x0f", 5);
	/* a host the protocol's String(255) cannot carry is refused, not cut */
	char toolong[MC_HOST_MAX + 2];

	memset(toolong, 'x', MC_HOST_MAX + 1);
	toolong[MC_HOST_MAX + 1] = '\0';
	expect_num(mc_build_handshake(pkt, sizeof(pkt), 767, toolong, 25565, 1), 0,
		   "host of 256 bytes");
}

static void test_status_request_is_the_empty_packet_0(void **state)
{
	uint8_t pkt[4];
	const uint8_t *p;
	size_t plen, used;
	int32_t id;

	(void)state;
	expect_num(mc_build_status_request(pkt, 1), 0, "into 1 byte");
	expect_num(mc_build_status_request(pkt, sizeof(pkt)), 2, "size");
	expect_rc(mc_parse_packet(pkt, 2, 64, &id, &p, &plen, &used), 0, "status request", "");
	expect_num(id, 0, "id");
	expect_num(plen, 0, "payload");
}

static void test_normalise_host_for_configured_names(void **state)
{
	char out[MC_HOST_MAX + 1], err[128] = "";
	size_t n = 99;

	(void)state;
	expect_rc(mc_normalise_host((const uint8_t *)"Survival.Example.ORG.", 21, out, &n, err,
				    sizeof(err)),
		  0, "configured name", err);
	expect_str(out, "survival.example.org", "normalised configured name");
	expect_num(n, 20, "length");
	expect_rc(mc_normalise_host((const uint8_t *)"a/b", 3, out, &n, NULL, 0), MC_EHOST,
		  "name with a slash", "");
	expect_num(n, 0, "length after a rejection");
	expect_str(out, "", "output after a rejection");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_varint_round_trips_known_encodings),
		cmocka_unit_test(test_varint_longer_than_five_bytes_is_malformed),
		cmocka_unit_test(test_handshake_parses_every_protocol_generation),
		cmocka_unit_test(test_handshake_port_is_big_endian_and_unsigned),
		cmocka_unit_test(test_forge_markers_are_cut_off),
		cmocka_unit_test(test_tcpshield_suffix_is_cut_off),
		cmocka_unit_test(test_trailing_dots_are_stripped),
		cmocka_unit_test(test_host_is_lowercased),
		cmocka_unit_test(test_srv_prefix_is_stripped),
		cmocka_unit_test(test_ip_literal_host_is_accepted_ipv6_is_not),
		cmocka_unit_test(test_pipelined_bytes_after_the_handshake_are_left_alone),
		cmocka_unit_test(test_bytes_inside_the_frame_after_next_state_are_ignored),
		cmocka_unit_test(test_largest_frame_is_accepted_one_more_byte_is_too_big),
		cmocka_unit_test(test_host_length_limits_apply_after_normalising),
		cmocka_unit_test(test_empty_host_is_rejected),
		cmocka_unit_test(test_non_utf8_host_is_rejected),
		cmocka_unit_test(test_malformed_frame_lengths),
		cmocka_unit_test(test_malformed_fields_inside_the_frame),
		cmocka_unit_test(test_truncated_handshakes_always_need_more),
		cmocka_unit_test(test_modern_frame_starting_with_fe_is_not_a_legacy_ping),
		cmocka_unit_test(test_legacy_ping_without_host),
		cmocka_unit_test(test_is_legacy_prefix_only_for_fe_and_fe01),
		cmocka_unit_test(test_legacy_ping_host_1_6),
		cmocka_unit_test(test_malformed_legacy_pings),
		cmocka_unit_test(test_parse_packet_status_request_and_ping),
		cmocka_unit_test(test_parse_packet_malformed),
		cmocka_unit_test(test_status_response_round_trips_with_json_escaping),
		cmocka_unit_test(test_status_response_with_long_motd_uses_two_byte_lengths),
		cmocka_unit_test(test_pong_echoes_the_payload),
		cmocka_unit_test(test_login_disconnect_is_a_json_text_component),
		cmocka_unit_test(test_legacy_kick_layout),
		cmocka_unit_test(test_legacy_kick_fits_the_clients_256_character_limit),
		cmocka_unit_test(test_normalise_host_for_configured_names),
		cmocka_unit_test(test_handshake_builder_round_trips_through_the_parser),
		cmocka_unit_test(test_status_request_is_the_empty_packet_0),
	};

	return cmocka_run_group_tests_name("mc", tests, NULL, NULL);
}
