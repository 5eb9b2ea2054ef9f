#include "forward.h"
#include "proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

static void mac(const uint8_t *key, size_t keylen, const uint8_t *data, size_t len,
		uint8_t out[FWD_MAC_LEN])
{
	unsigned int n = FWD_MAC_LEN;
	HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &n);
}

size_t fwd_encode(const struct fwd_hdr *h, const uint8_t *key, size_t keylen, uint8_t *out,
		  size_t cap)
{
	size_t hl = strlen(h->host), fl = strlen(h->from);
	if (hl > 255 || fl > 64)
		return 0;
	size_t body = 8 + 16 + 8 + PROTO_ADDRS_LEN + 1 + hl + 1 + fl + FWD_MAC_LEN;
	if (body > FWD_BODY_MAX || cap < FWD_FIXED + body)
		return 0;
	uint8_t *p = out;
	memcpy(p, FWD_MAGIC, 4);
	p[4] = 1;
	p[5] = 0;
	proto_put16(p + 6, (uint16_t)body);
	p += FWD_FIXED;
	proto_put64(p, h->ts_ms);
	memcpy(p + 8, h->nonce, 16);
	proto_put64(p + 24, h->epoch);
	p += 32;
	proto_addrs_put(p, &h->src, &h->dst);
	p += PROTO_ADDRS_LEN;
	*p++ = (uint8_t)hl;
	memcpy(p, h->host, hl);
	p += hl;
	*p++ = (uint8_t)fl;
	memcpy(p, h->from, fl);
	p += fl;
	mac(key, keylen, out, (size_t)(p - out), p);
	return FWD_FIXED + body;
}

int fwd_fixed(const uint8_t fixed[FWD_FIXED])
{
	if (memcmp(fixed, FWD_MAGIC, 4) || fixed[4] != 1)
		return -EPROTO;
	uint16_t n = proto_get16(fixed + 6);
	if (n < FWD_BODY_MIN || n > FWD_BODY_MAX)
		return -EPROTO;
	return n;
}

int fwd_verify(const uint8_t *whole, size_t len, const uint8_t *key, size_t keylen,
	       uint64_t now_ms, struct fwd_hdr *out, char *err, size_t errlen)
{
	int body = len >= FWD_FIXED ? fwd_fixed(whole) : -EPROTO;
	if (body < 0 || len != FWD_FIXED + (size_t)body) {
		snprintf(err, errlen, "malformed forward header");
		return -EPROTO;
	}
	uint8_t want[FWD_MAC_LEN];
	mac(key, keylen, whole, len - FWD_MAC_LEN, want);
	if (CRYPTO_memcmp(want, whole + len - FWD_MAC_LEN, FWD_MAC_LEN)) {
		snprintf(err, errlen, "forward header MAC mismatch (wrong cluster secret or forged)");
		return -EACCES;
	}
	/* authenticated from here on: parse with bounds anyway */
	const uint8_t *p = whole + FWD_FIXED, *end = whole + len - FWD_MAC_LEN;
	memset(out, 0, sizeof(*out));
	out->ts_ms = proto_get64(p);
	memcpy(out->nonce, p + 8, 16);
	out->epoch = proto_get64(p + 24);
	p += 32;
	if (proto_addrs_get(p, &out->src, &out->dst))
		goto bad;
	p += PROTO_ADDRS_LEN;
	size_t hl = *p++;
	if (hl == 0 || (size_t)(end - p) < hl + 1)
		goto bad;
	memcpy(out->host, p, hl);
	p += hl;
	size_t fl = *p++;
	if (fl > 64 || (size_t)(end - p) != fl)
		goto bad;
	memcpy(out->from, p, fl);
	if (memchr(out->host, 0, hl) || memchr(out->from, 0, fl))
		goto bad;
	uint64_t skew = now_ms > out->ts_ms ? now_ms - out->ts_ms : out->ts_ms - now_ms;
	if (skew > FWD_SKEW_MS) {
		snprintf(err, errlen, "forward header from %s is %llu ms off our clock", out->from,
			 (unsigned long long)skew);
		return -ETIME;
	}
	return 0;
bad:
	snprintf(err, errlen, "malformed forward header body");
	return -EPROTO;
}
