#include "forward.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}
static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void addr_put(const struct sockaddr_storage *ss, uint8_t a16[16], uint16_t *port)
{
	memset(a16, 0, 16);
	*port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)ss;
		a16[10] = a16[11] = 0xff;
		memcpy(a16 + 12, &s->sin_addr, 4);
		*port = ntohs(s->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)ss;
		memcpy(a16, &s->sin6_addr, 16);
		*port = ntohs(s->sin6_port);
	}
}

static void addr_get(const uint8_t a16[16], uint16_t port, struct sockaddr_storage *ss)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	memset(ss, 0, sizeof(*ss));
	if (!memcmp(a16, mapped, 12)) {
		struct sockaddr_in *s = (void *)ss;
		s->sin_family = AF_INET;
		memcpy(&s->sin_addr, a16 + 12, 4);
		s->sin_port = htons(port);
	} else {
		struct sockaddr_in6 *s = (void *)ss;
		s->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a16, 16);
		s->sin6_port = htons(port);
	}
}

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
	size_t body = 8 + 16 + 8 + 38 + 1 + hl + 1 + fl + FWD_MAC_LEN;
	if (body > FWD_BODY_MAX || cap < FWD_FIXED + body)
		return 0;
	uint8_t *p = out;
	memcpy(p, FWD_MAGIC, 4);
	p[4] = 1;
	p[5] = 0;
	put16(p + 6, (uint16_t)body);
	p += FWD_FIXED;
	put64(p, h->ts_ms);
	memcpy(p + 8, h->nonce, 16);
	put64(p + 24, h->epoch);
	p += 32;
	uint16_t sp, dp;
	p[0] = h->src.ss_family == AF_INET ? 4 : 6;
	p[1] = 0;
	addr_put(&h->src, p + 6, &sp);
	addr_put(&h->dst, p + 22, &dp);
	put16(p + 2, sp);
	put16(p + 4, dp);
	p += 38;
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
	uint16_t n = get16(fixed + 6);
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
	out->ts_ms = get64(p);
	memcpy(out->nonce, p + 8, 16);
	out->epoch = get64(p + 24);
	p += 32;
	if (p[0] != 4 && p[0] != 6)
		goto bad;
	addr_get(p + 6, get16(p + 2), &out->src);
	addr_get(p + 22, get16(p + 4), &out->dst);
	p += 38;
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
