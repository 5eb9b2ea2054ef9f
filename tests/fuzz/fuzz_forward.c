/* libFuzzer target: the relay's internal-port parser (forward header). Arbitrary bytes must be
 * refused without crashing; and a header we sign ourselves with fuzzed fields must verify and
 * round-trip (host, sender and target relay), while any single flipped byte must be refused. */
#include "forward.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t key[32] = "fuzz-cluster-secret-0123456789ab";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fwd_hdr h;
	char err[160];
	uint64_t now = 1700000000000ULL;
	/* 1. raw bytes as a header: must never be accepted (no key knowledge) */
	if (size >= FWD_FIXED) {
		int body = fwd_fixed(data);
		if (body >= 0 && size >= FWD_FIXED + (size_t)body &&
		    fwd_verify(data, FWD_FIXED + (size_t)body, key, sizeof(key), now, &h, err,
			       sizeof(err)) == 0)
			abort(); /* forged without the key: impossible unless HMAC is broken */
	}
	/* 2. sign fuzzed fields, verify, then flip one byte */
	struct fwd_hdr in;
	memset(&in, 0, sizeof(in));
	in.ts_ms = now;
	size_t hl = size > 200 ? 200 : size;
	for (size_t i = 0; i < hl; i++)
		in.host[i] = (char)(data[i] ? data[i] : 'x');
	if (!hl)
		in.host[0] = 'a';
	memcpy(in.from, "relay-a", 8);
	/* the target instance id (v2): fuzzed too, up to its 64-byte bound */
	size_t tl = size % 65;
	for (size_t i = 0; i < tl; i++)
		in.target[i] = (char)(data[size - 1 - i] ? data[size - 1 - i] : 't');
	in.src.ss_family = AF_INET;
	in.dst.ss_family = size % 2 ? AF_INET6 : AF_INET;
	in.trace = size >= 8 ? proto_get64(data) : 0; /* 0: no trace, no flag */
	uint8_t buf[FWD_FIXED + FWD_BODY_MAX];
	size_t n = fwd_encode(&in, key, sizeof(key), buf, sizeof(buf));
	if (!n)
		abort();
	if (fwd_verify(buf, n, key, sizeof(key), now, &h, err, sizeof(err)) != 0 ||
	    strcmp(h.host, in.host) || strcmp(h.from, in.from) || strcmp(h.target, in.target) ||
	    h.trace != in.trace)
		abort();
	size_t at = size ? data[0] % n : 0;
	buf[at] ^= 0x01;
	if (fwd_verify(buf, n, key, sizeof(key), now, &h, err, sizeof(err)) == 0)
		abort();
	return 0;
}
