/* libFuzzer target for the player-facing parsers and builders (common/mc.c).
 *
 * Beyond "no crash under ASan/UBSan" it checks what the relay relies on: a parsed handshake has a
 * short, clean, NUL-terminated host inside the bytes it was given; MC_NEED_MORE only while the
 * frame bound is not reached; the same frame cut shorter is a valid prefix; a second
 * normalisation changes nothing; builders stay inside cap and produce what mc_parse_packet reads.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__,       \
				__LINE__);                                                       \
			abort();                                                                 \
		}                                                                                \
	} while (0)

static int host_clean(const char *h, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = h[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		      c == '_'))
			return 0;
	}
	return 1;
}

static int valid_rc(int rc)
{
	return rc == 0 || rc == MC_NEED_MORE || (rc <= MC_EVARINT && rc >= MC_ELEGACY);
}

/* The handshake parser on bytes of exactly this length (a heap copy, so ASan sees over-reads). */
static int parse_copy(const uint8_t *data, size_t len, struct mc_handshake *hs, char *err,
		      size_t errlen)
{
	uint8_t *copy = malloc(len ? len : 1);
	int rc;

	CHECK(copy);
	memcpy(copy, data, len);
	rc = mc_parse_handshake(copy, len, hs, err, errlen);
	free(copy);
	return rc;
}

static void check_handshake(const uint8_t *data, size_t size)
{
	struct mc_handshake hs, again;
	char err[128], norm[MC_HOST_MAX + 1];
	size_t norm_len;
	int rc = mc_parse_handshake(data, size, &hs, err, sizeof(err));

	CHECK(valid_rc(rc));
	if (rc < 0)
		CHECK(err[0] != '\0'); /* every rejection says why */
	if (rc == MC_NEED_MORE)
		CHECK(size < MC_HANDSHAKE_MAX);
	if (mc_is_legacy_prefix(data, size))
		CHECK(rc == MC_NEED_MORE);
	/* the answer never depends on whether the caller wants a message */
	CHECK(mc_parse_handshake(data, size, &again, NULL, 0) == rc);
	if (rc != 0)
		return;

	CHECK(hs.frame_len > 0 && hs.frame_len <= size && hs.frame_len <= MC_HANDSHAKE_MAX);
	CHECK(hs.host_len <= MC_HOST_MAX);
	CHECK(hs.host[hs.host_len] == '\0' && strlen(hs.host) == hs.host_len);
	CHECK(host_clean(hs.host, hs.host_len));
	switch (hs.kind) {
	case MC_KIND_MODERN:
		CHECK(hs.host_len > 0);
		CHECK(hs.next_state >= MC_NEXT_STATUS && hs.next_state <= MC_NEXT_TRANSFER);
		break;
	case MC_KIND_LEGACY_PING_HOST:
		CHECK(hs.host_len > 0 && hs.next_state == MC_NEXT_STATUS);
		CHECK(hs.protocol >= 0 && hs.protocol <= 255);
		break;
	case MC_KIND_LEGACY_PING:
		CHECK(hs.host_len == 0 && hs.frame_len == 2 && hs.protocol == -1);
		return; /* decided by the byte after FE 01, which lies past frame_len */
	default:
		CHECK(0 && "unknown kind");
	}

	/* normalising the normalised host is a no-op */
	CHECK(mc_normalise_host((const uint8_t *)hs.host, hs.host_len, norm, &norm_len, NULL, 0) ==
	      0);
	CHECK(norm_len == hs.host_len && memcmp(norm, hs.host, norm_len) == 0);

	/* the frame alone parses to the same handshake; cut shorter it is a valid prefix */
	CHECK(parse_copy(data, hs.frame_len, &again, NULL, 0) == 0);
	CHECK(again.kind == hs.kind && again.protocol == hs.protocol && again.port == hs.port &&
	      again.next_state == hs.next_state && again.frame_len == hs.frame_len &&
	      again.host_len == hs.host_len && strcmp(again.host, hs.host) == 0);
	CHECK(parse_copy(data, hs.frame_len - 1, &again, NULL, 0) == MC_NEED_MORE);
	CHECK(parse_copy(data, hs.frame_len / 2, &again, NULL, 0) == MC_NEED_MORE);
}

static void check_packet(const uint8_t *data, size_t size, size_t max)
{
	const uint8_t *payload = NULL;
	size_t plen = 0, used = 0;
	int32_t id;
	int rc = mc_parse_packet(data, size, max, &id, &payload, &plen, &used);

	CHECK(valid_rc(rc));
	if (rc != 0)
		return;
	CHECK(used <= size && used > plen);
	CHECK(payload >= data && payload + plen == data + used);
}

static void check_varint(const uint8_t *data, size_t size)
{
	uint8_t enc[5];
	int32_t v, back;
	int n;

	if (size < 4)
		return;
	memcpy(&v, data, 4);
	n = mc_varint_write(enc, v);
	CHECK(n >= 1 && n <= 5);
	CHECK(mc_varint_read(enc, (size_t)n, &back) == n && back == v);
}

/* A JSON-carrying packet from a builder: reads back as one packet of one String. */
static void check_string_packet(const uint8_t *pkt, size_t n)
{
	const uint8_t *p;
	size_t plen, used;
	int32_t id, slen;
	int k;

	CHECK(mc_parse_packet(pkt, n, SIZE_MAX, &id, &p, &plen, &used) == 0);
	CHECK(used == n && id == 0x00);
	k = mc_varint_read(p, plen, &slen);
	CHECK(k > 0 && slen >= 0 && (size_t)k + (size_t)slen == plen);
	for (int32_t i = 0; i < slen; i++)
		CHECK(p[k + i] >= 0x20); /* control characters are escaped */
}

static void check_builders(const uint8_t *data, size_t size)
{
	static uint8_t big[16384];
	char text[1024];
	uint8_t small[128];
	size_t n = size < sizeof(text) - 1 ? size : sizeof(text) - 1, cap, out;

	memcpy(text, data, n);
	text[n] = '\0'; /* a bounded C string: stops at the first NUL in the input */

	/* a small buffer, at a size chosen by the input: fits or 0, never past cap */
	cap = size ? data[0] % sizeof(small) : 0;
	out = mc_build_status_response(small, cap, 767, "1.21.1", text);
	CHECK(out <= cap);
	if (out)
		check_string_packet(small, out);
	out = mc_build_login_disconnect(small, cap, text);
	CHECK(out <= cap);
	out = mc_build_legacy_kick(small, cap, 78, text, text);
	CHECK(out <= cap);

	out = mc_build_status_response(big, sizeof(big), -1, text, text);
	CHECK(out > 0);
	check_string_packet(big, out);
	out = mc_build_login_disconnect(big, sizeof(big), text);
	CHECK(out > 0);
	check_string_packet(big, out);
	out = mc_build_legacy_kick(big, sizeof(big), 127, text, text);
	CHECK(out >= 3 && big[0] == 0xFF && out == 3 + 2 * (size_t)(big[1] << 8 | big[2]));
	CHECK((size_t)(big[1] << 8 | big[2]) <= 256);

	if (size >= 8) {
		const uint8_t *p;
		size_t plen, used;
		int32_t id;

		CHECK(mc_build_pong(small, sizeof(small), data) == 10);
		CHECK(mc_parse_packet(small, 10, 64, &id, &p, &plen, &used) == 0);
		CHECK(id == 0x01 && plen == 8 && used == 10 && memcmp(p, data, 8) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_handshake(data, size);
	check_packet(data, size, MC_HANDSHAKE_MAX);
	check_packet(data, size, SIZE_MAX);
	check_varint(data, size);
	check_builders(data, size);
	return 0;
}
