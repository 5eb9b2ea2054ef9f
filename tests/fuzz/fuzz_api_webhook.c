/* libFuzzer target for what dvv-api does with a Stripe webhook before touching the database:
 * stripe_verify_signature and stripe_event_parse (api/stripe.c).
 *
 * The input is split at the first newline: before it, a Stripe-Signature header; after it,
 * the payload. Three uses of each input:
 *   1. the header as sent: it must never verify (nothing here knows the secret), unless it is
 *      byte for byte a correct signature, which the fuzzer cannot compute;
 *   2. the payload signed correctly (what Stripe sends): must verify, then is parsed;
 *   3. the payload parsed directly (the parser sees whatever a signer could sign).
 * Parsed events must obey the parser's promises: ids within their buffers, no control
 * characters, non-negative times. Crashes, leaks, UB or a broken rule (abort) are findings.
 *
 *   make fuzz && build-fuzz/fuzz_api_webhook -max_total_time=60 tests/fuzz/corpus/fuzz_api_webhook
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stripe.h"

#define SECRET "whsec_fuzz_secret"
#define NOW    1800000000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	if (n == cap)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20)
			abort();
}

static void check_event(const char *payload, size_t len)
{
	struct stripe_event ev;
	char err[256];
	int r = stripe_event_parse(payload, len, &ev, err, sizeof(err));
	if (r == 0) {
		if (!ev.id[0] || !ev.type[0] || ev.created <= 0)
			abort();
		check_str(ev.id, sizeof(ev.id));
		check_str(ev.type, sizeof(ev.type));
		check_str(ev.customer, sizeof(ev.customer));
		check_str(ev.subscription, sizeof(ev.subscription));
		check_str(ev.user_id, sizeof(ev.user_id));
		check_str(ev.price, sizeof(ev.price));
		check_str(ev.status, sizeof(ev.status));
		if (ev.period_start < 0 || ev.period_end < 0 || ev.attempt_count < 0)
			abort();
	} else if (r != -EINVAL && r != -E2BIG) {
		abort();
	} else if (!err[0] ||
		   (strstr(err, SECRET) && !memmem(payload, len, SECRET, strlen(SECRET)))) {
		abort(); /* every refusal says why, never with the secret (unless the input had it) */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t hlen = nl ? (size_t)(nl - data) : size;
	char *header = malloc(hlen + 1);
	const char *payload = nl ? (const char *)nl + 1 : "";
	size_t plen = nl ? size - hlen - 1 : 0;
	char err[256], good[256];

	if (!header)
		return 0;
	memcpy(header, data, hlen);
	header[hlen] = '\0';

	/* 1. the fuzzer's header: must not verify unless it is the real signature */
	int r = stripe_verify_signature(SECRET, payload, plen, header, NOW, 300, err, sizeof(err));
	if (r == 0) {
		if (stripe_sign(SECRET, payload, plen, NOW, good, sizeof(good)))
			abort();
		/* the fuzzer would have had to compute HMAC-SHA256 with a secret it never saw */
		if (!strstr(header, strchr(good, ',') + 1))
			abort();
	} else if (r != -EINVAL && r != -EKEYREJECTED && r != -ETIME) {
		abort();
	}
	if (r && (!err[0] || strstr(err, SECRET)))
		abort(); /* the verifier's errors quote neither header nor payload */

	/* 2. the payload as Stripe would send it: verifies, then parses */
	if (stripe_sign(SECRET, payload, plen, NOW - 5, good, sizeof(good)))
		abort();
	if (stripe_verify_signature(SECRET, payload, plen, good, NOW, 300, err, sizeof(err)))
		abort();

	/* 3. the parser on the payload */
	check_event(payload, plen);
	free(header);
	return 0;
}
