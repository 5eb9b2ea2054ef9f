/* One-port mode's first-bytes classifier (oneport.h): real first bytes of each kind of client
 * (a TLS ClientHello header, the data attach preamble, modern and legacy Minecraft handshakes)
 * go to their path, undecided prefixes wait, and anything else is refused within 4 bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "oneport.h"
#include "mc.h"
#include "proto.h"

#define K(bytes) oneport_classify((const uint8_t *)(bytes), sizeof(bytes) - 1)

static void tls_client_hello_is_an_agent(void **state)
{
	(void)state;
	/* record: handshake (0x16), version 3.1 (what TLS 1.2 and 1.3 ClientHellos carry), length */
	assert_int_equal(K("\x16\x03\x01\x02\x00"), ONEPORT_AGENT);
	assert_int_equal(K("\x16\x03"), ONEPORT_AGENT);
	assert_int_equal(K("\x16"), ONEPORT_MORE);
}

static void attach_preamble_is_an_agent(void **state)
{
	(void)state;
	uint8_t pre[DATA_ATTACH_LEN];
	memcpy(pre, DATA_ATTACH_MAGIC, 4);
	memset(pre + 4, 0xAB, sizeof(pre) - 4);
	assert_int_equal(oneport_classify(pre, ONEPORT_PEEK_MAX), ONEPORT_AGENT);
	for (size_t n = 1; n < 4; n++)
		assert_int_equal(oneport_classify(pre, n), ONEPORT_MORE);
	assert_int_equal(K("DVVB"), ONEPORT_BAD);
}

static void minecraft_handshakes_are_players(void **state)
{
	(void)state;
	/* 1.21 handshake for "a.eu.dvv.test": length 0x14, id 0, protocol 767 (0xff 0x05) */
	assert_int_equal(K("\x14\x00\xff\x05\x0d" "a.eu"), ONEPORT_PLAYER);
	assert_int_equal(K("\x14"), ONEPORT_MORE);
	/* a two-byte length (a long Forge host name): 300 = 0xac 0x02 */
	assert_int_equal(K("\xac\x02\x00"), ONEPORT_PLAYER);
	assert_int_equal(K("\xac\x02"), ONEPORT_MORE);
	/* lengths that look like other magic bytes still end up as frames when id 0 follows */
	assert_int_equal(K("\x16\x00"), ONEPORT_PLAYER); /* a 22-byte frame, not TLS */
	assert_int_equal(K("D\x00"), ONEPORT_PLAYER);	 /* a 68-byte frame, not DVVA */
}

static void legacy_ping_is_a_player(void **state)
{
	(void)state;
	assert_int_equal(K("\xfe"), ONEPORT_PLAYER);
	assert_int_equal(K("\xfe\x01\xfa"), ONEPORT_PLAYER);
}

static void everything_else_is_refused(void **state)
{
	(void)state;
	assert_int_equal(K("GET / HTTP/1.1\r\n"), ONEPORT_BAD);
	assert_int_equal(K("SSH-2.0-"), ONEPORT_BAD);
	assert_int_equal(K("\x00\x00"), ONEPORT_BAD);	     /* length 0 */
	assert_int_equal(K("\x14\x01\x00"), ONEPORT_BAD);     /* not the handshake id */
	assert_int_equal(K("\x16\x02"), ONEPORT_BAD);	     /* neither TLS 3.x nor id 0 */
	assert_int_equal(K("\x81\x04\x00"), ONEPORT_BAD);     /* 513 > MC_HANDSHAKE_MAX */
	assert_int_equal(K("\x80\x80\x80\x01"), ONEPORT_BAD); /* a 4-byte VarInt */
	/* a padded 3-byte length is tolerated */
	assert_int_equal(K("\x94\x80\x00\x00"), ONEPORT_PLAYER);
}

static void every_prefix_decides_within_four_bytes(void **state)
{
	(void)state;
	/* the sniffer peeks ONEPORT_PEEK_MAX bytes and refuses what is still undecided: every
	 * 4-byte input must be decided, or a client could hold a slot forever by trickling */
	uint8_t b[4];
	for (unsigned v = 0; v < 1u << 16; v++) {
		b[0] = (uint8_t)v;
		b[1] = (uint8_t)(v >> 8);
		for (unsigned t = 0; t < 4; t++) {
			b[2] = (uint8_t)(t * 0x55);
			b[3] = (uint8_t)(0xff - t * 0x40);
			if (oneport_classify(b, 4) == ONEPORT_MORE)
				fail_msg("undecided after 4 bytes: %02x %02x %02x %02x", b[0], b[1],
					 b[2], b[3]);
		}
	}
	assert_true(ONEPORT_PEEK_MAX >= 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tls_client_hello_is_an_agent),
		cmocka_unit_test(attach_preamble_is_an_agent),
		cmocka_unit_test(minecraft_handshakes_are_players),
		cmocka_unit_test(legacy_ping_is_a_player),
		cmocka_unit_test(everything_else_is_refused),
		cmocka_unit_test(every_prefix_decides_within_four_bytes),
	};
	return cmocka_run_group_tests_name("oneport", tests, NULL, NULL);
}
