/* Minecraft Java edition handshake parsing and the packets the relay answers itself (mc.h).
 *
 * The parsers read bytes peeked from an untrusted socket, so each one works on (buf, len) with a
 * cursor that is compared against len before every read, and answers one of three things: parsed,
 * "valid so far, wait for more" (MC_NEED_MORE), or malformed. A field is rejected as soon as the
 * bytes that make it up have arrived, so a garbage first packet is refused without waiting for the
 * rest of a frame that will never make sense.
 */
#include "mc.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int code,
							   const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* ---- VarInt ---------------------------------------------------------------------------------- */

int mc_varint_read(const uint8_t *buf, size_t len, int32_t *out)
{
	uint32_t v = 0;

	for (size_t i = 0; i < 5; i++) {
		if (i >= len)
			return 0;
		/* The fifth byte carries bits 28..31 only: a continuation bit or higher bits there
		 * mean more than 32 bits (Java would silently drop them; no real client sends it). */
		if (i == 4 && (buf[i] & 0xF0))
			return MC_EVARINT;
		v |= (uint32_t)(buf[i] & 0x7F) << (7 * i);
		if (!(buf[i] & 0x80)) {
			*out = (int32_t)v;
			return (int)i + 1;
		}
	}
	return MC_EVARINT; /* not reached */
}

int mc_varint_write(uint8_t *out, int32_t v)
{
	uint32_t u = (uint32_t)v;
	int n = 0;

	do {
		uint8_t b = u & 0x7F;

		u >>= 7;
		out[n++] = u ? (b | 0x80) : b;
	} while (u);
	return n;
}

static size_t varint_size(uint32_t u)
{
	size_t n = 1;

	while (u >>= 7)
		n++;
	return n;
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* Decode one code point from s (n > 0 bytes). Returns its length 1..4, or 0 when the bytes at s
 * are not well-formed UTF-8 (overlong forms, surrogates, > U+10FFFF, truncated sequences). */
static int utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
	uint8_t b = s[0];
	uint8_t lo = 0x80, hi = 0xBF; /* range allowed for the second byte */
	int k;

	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	if (b >= 0xC2 && b <= 0xDF) {
		k = 2;
		*cp = b & 0x1F;
	} else if (b >= 0xE0 && b <= 0xEF) {
		k = 3;
		*cp = b & 0x0F;
		if (b == 0xE0)
			lo = 0xA0; /* overlong */
		else if (b == 0xED)
			hi = 0x9F; /* UTF-16 surrogates */
	} else if (b >= 0xF0 && b <= 0xF4) {
		k = 4;
		*cp = b & 0x07;
		if (b == 0xF0)
			lo = 0x90; /* overlong */
		else if (b == 0xF4)
			hi = 0x8F; /* > U+10FFFF */
	} else {
		return 0;
	}
	if (n < (size_t)k)
		return 0;
	for (int i = 1; i < k; i++) {
		uint8_t c = s[i];

		if (c < (i == 1 ? lo : 0x80) || c > (i == 1 ? hi : 0xBF))
			return 0;
		*cp = (*cp << 6) | (c & 0x3F);
	}
	return k;
}

static bool utf8_valid(const uint8_t *s, size_t n)
{
	uint32_t cp;

	for (size_t i = 0; i < n;) {
		int k = utf8_next(s + i, n - i, &cp);

		if (!k)
			return false;
		i += (size_t)k;
	}
	return true;
}

/* ---- Host normalisation ---------------------------------------------------------------------- */

static char ascii_lower(uint8_t c)
{
	return (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
}

static bool host_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

int mc_normalise_host(const uint8_t *raw, size_t len, char out[MC_HOST_MAX + 1], size_t *out_len,
		      char *err, size_t errlen)
{
	static const char srv[] = "_minecraft._tcp.";
	const size_t srv_len = sizeof(srv) - 1;
	size_t start = 0, end = 0, n;

	out[0] = '\0';
	*out_len = 0;
	if (!utf8_valid(raw, len))
		return fail(err, errlen, MC_EHOST, "handshake host is not valid UTF-8");

	/* Forge appends "\0FML\0" / "\0FML2\0" / "\0FML3\0"; TCPShield appends
	 * "///<real ip>:<port>///<timestamp>...". Either way the name is what comes before. */
	while (end < len && raw[end] != '\0' &&
	       !(end + 2 < len && raw[end] == '/' && raw[end + 1] == '/' && raw[end + 2] == '/'))
		end++;
	while (end > 0 && raw[end - 1] == '.') /* "play.example.com." (fully qualified) */
		end--;
	if (end >= srv_len) { /* a client that resolved the SRV record sends its name */
		size_t i = 0;

		while (i < srv_len && ascii_lower(raw[i]) == srv[i])
			i++;
		if (i == srv_len)
			start = srv_len;
	}

	n = end - start;
	if (n == 0)
		return fail(err, errlen, MC_EHOST, "handshake host is empty after normalising");
	if (n > MC_HOST_MAX)
		return fail(err, errlen, MC_EHOST,
			    "handshake host is %zu bytes after normalising, more than %d", n,
			    MC_HOST_MAX);
	for (size_t i = 0; i < n; i++) {
		char c = ascii_lower(raw[start + i]);

		if (!host_char_ok(c)) {
			out[0] = '\0';
			return fail(err, errlen, MC_EHOST,
				    "handshake host has byte 0x%02x at offset %zu, only a-z 0-9 . - _ "
				    "are allowed",
				    (unsigned)raw[start + i], i);
		}
		out[i] = c;
	}
	out[n] = '\0';
	*out_len = n;
	return 0;
}

/* ---- Handshake ------------------------------------------------------------------------------- */

/* A read position inside the first frame. `end` is min(frame end, bytes received); `complete`
 * says whether end is the frame's own end (a short field is then malformed, not pending). */
struct cursor {
	const uint8_t *buf;
	size_t pos, end;
	bool complete;
};

static int short_read(const struct cursor *c, char *err, size_t errlen, const char *field)
{
	if (!c->complete)
		return MC_NEED_MORE;
	return fail(err, errlen, MC_ETRUNC, "handshake frame ends inside the %s", field);
}

static int cur_varint(struct cursor *c, int32_t *v, char *err, size_t errlen, const char *field)
{
	int r = mc_varint_read(c->buf + c->pos, c->end - c->pos, v);

	if (r == 0)
		return short_read(c, err, errlen, field);
	if (r < 0)
		return fail(err, errlen, MC_EVARINT, "handshake %s VarInt is longer than 5 bytes",
			    field);
	c->pos += (size_t)r;
	return 0;
}

static int parse_modern(const uint8_t *buf, size_t len, struct mc_handshake *hs, char *err,
			size_t errlen)
{
	int32_t frame, id, slen, next;
	struct cursor c;
	const uint8_t *host;
	size_t frame_end;
	int r;

	r = mc_varint_read(buf, len, &frame);
	if (r == 0)
		return MC_NEED_MORE;
	if (r < 0)
		return fail(err, errlen, MC_EVARINT, "frame length VarInt is longer than 5 bytes");
	if (frame < 0)
		return fail(err, errlen, MC_EVARINT, "frame length %" PRId32 " is negative", frame);
	if (frame == 0)
		return fail(err, errlen, MC_EEMPTY, "frame length is 0");
	if ((size_t)frame > MC_HANDSHAKE_MAX - (size_t)r)
		return fail(err, errlen, MC_ETOOBIG, "frame length %" PRId32 " exceeds %zu", frame,
			    MC_HANDSHAKE_MAX - (size_t)r);
	frame_end = (size_t)r + (size_t)frame;
	c = (struct cursor){ .buf = buf,
			     .pos = (size_t)r,
			     .end = len < frame_end ? len : frame_end,
			     .complete = len >= frame_end };

	if ((r = cur_varint(&c, &id, err, errlen, "packet id")))
		return r;
	if (id != 0x00)
		return fail(err, errlen, MC_EPACKET,
			    "first packet id is 0x%02" PRIx32 ", expected the handshake (0x00)",
			    (uint32_t)id);
	if ((r = cur_varint(&c, &hs->protocol, err, errlen, "protocol version")))
		return r;
	if ((r = cur_varint(&c, &slen, err, errlen, "host length")))
		return r;
	if (slen < 0)
		return fail(err, errlen, MC_EVARINT, "handshake host length %" PRId32 " is negative",
			    slen);
	/* Two bytes of port and one of next state must still follow the host. */
	if ((size_t)slen + 3 > frame_end - c.pos)
		return fail(err, errlen, MC_ETRUNC,
			    "handshake host length %" PRId32 " does not fit the %zu bytes left "
			    "in the frame",
			    slen, frame_end - c.pos);
	if (c.end - c.pos < (size_t)slen)
		return MC_NEED_MORE; /* the frame is known to hold it: it is still arriving */
	host = buf + c.pos;
	c.pos += (size_t)slen;
	if ((r = mc_normalise_host(host, (size_t)slen, hs->host, &hs->host_len, err, errlen)))
		return r;
	if (c.end - c.pos < 2)
		return short_read(&c, err, errlen, "port");
	hs->port = (uint16_t)(buf[c.pos] << 8 | buf[c.pos + 1]);
	c.pos += 2;
	if ((r = cur_varint(&c, &next, err, errlen, "next state")))
		return r;
	if (next < MC_NEXT_STATUS || next > MC_NEXT_TRANSFER)
		return fail(err, errlen, MC_ESTATE,
			    "handshake next state is %" PRId32 ", expected 1, 2 or 3", next);
	/* Bytes left inside the frame after the next state are not ours to judge (the backend
	 * server reads the same frame and decides), but the whole frame must be here before the
	 * caller acts on frame_len. */
	if (!c.complete)
		return MC_NEED_MORE;
	hs->kind = MC_KIND_MODERN;
	hs->next_state = next;
	hs->frame_len = frame_end;
	return 0;
}

/* ---- Legacy (0xFE) pings --------------------------------------------------------------------- */

/* "MC|PingHost" in UTF-16BE, the plugin channel a 1.6 client names after FE 01 FA. */
static const uint8_t ping_host_channel[22] = { 0, 'M', 0, 'C', 0, '|', 0, 'P', 0, 'i', 0,
					       'n', 0, 'g', 0, 'H', 0, 'o', 0, 's', 0, 't' };

/* FE 01 FA, short 11, channel (22), short data length, byte protocol, short host length: */
#define LEGACY_HOST_OFF 32
/* ... host (2 bytes per char), int port. */
#define LEGACY_FIXED 36

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

int mc_is_legacy_prefix(const uint8_t *buf, size_t len)
{
	return (len == 1 && buf[0] == 0xFE) || (len == 2 && buf[0] == 0xFE && buf[1] == 0x01);
}

/* A modern frame whose length is 254..255, 382..383 or 510..511 also starts with 0xFE, as
 * FE 01|02|03 followed by packet id 0x00. No legacy ping has 0x00 in third place (1.4/1.5 send
 * FE 01 and stop, 1.6 sends FE 01 FA), so those bytes are parsed as the modern handshake they
 * are, as the vanilla server does when its legacy decoder gives up. */
static bool modern_frame_at_fe(const uint8_t *buf, size_t len)
{
	return len >= 3 && buf[1] >= 0x01 && buf[1] <= 0x03 && buf[2] == 0x00;
}

static int parse_legacy(const uint8_t *buf, size_t len, struct mc_handshake *hs, char *err,
			size_t errlen)
{
	char ascii[(MC_HANDSHAKE_MAX - LEGACY_FIXED) / 2];
	uint16_t data_len, nchars;
	uint32_t port;
	size_t total;

	if (len < 2)
		return MC_NEED_MORE; /* FE alone: beta 1.8 - 1.3 ping, or FE 01 still coming */
	if (buf[1] >= 0x02 && buf[1] <= 0x03 && len == 2)
		return MC_NEED_MORE; /* could still be a long modern frame */
	if (buf[1] != 0x01)
		return fail(err, errlen, MC_ELEGACY,
			    "legacy ping 0xFE is followed by 0x%02x, expected 0x01", buf[1]);
	if (len < 3)
		return MC_NEED_MORE; /* FE 01: 1.4 - 1.5 ping, or the 1.6 MC|PingHost follows */

	hs->kind = MC_KIND_LEGACY_PING;
	hs->next_state = MC_NEXT_STATUS;
	if (buf[2] != 0xFA) {
		hs->frame_len = 2;
		return 0;
	}

	/* 1.6: FE 01 FA, then a plugin message on channel "MC|PingHost". */
	if (len < 5)
		return MC_NEED_MORE;
	if (be16(buf + 3) != 11)
		return fail(err, errlen, MC_ELEGACY,
			    "legacy ping channel name is %u characters, expected 11 (MC|PingHost)",
			    be16(buf + 3));
	for (size_t i = 0; i < sizeof(ping_host_channel); i++) {
		if (5 + i >= len)
			return MC_NEED_MORE;
		if (buf[5 + i] != ping_host_channel[i])
			return fail(err, errlen, MC_ELEGACY,
				    "legacy ping channel is not MC|PingHost (byte %zu is 0x%02x)",
				    i, buf[5 + i]);
	}
	if (len < LEGACY_HOST_OFF)
		return MC_NEED_MORE;
	data_len = be16(buf + 27);
	nchars = be16(buf + 30);
	total = LEGACY_FIXED + 2 * (size_t)nchars;
	if (total > MC_HANDSHAKE_MAX)
		return fail(err, errlen, MC_ETOOBIG,
			    "legacy ping host of %u characters makes a %zu-byte ping, more than %d",
			    nchars, total, MC_HANDSHAKE_MAX);
	if (data_len != 7 + 2 * (size_t)nchars)
		return fail(err, errlen, MC_ELEGACY,
			    "legacy ping data length is %u, expected %zu for a %u-character host",
			    data_len, 7 + 2 * (size_t)nchars, nchars);
	if (len < total)
		return MC_NEED_MORE;

	for (size_t i = 0; i < nchars; i++) {
		uint16_t u = be16(buf + LEGACY_HOST_OFF + 2 * i);

		if (u > 0x7F)
			return fail(err, errlen, MC_EHOST,
				    "legacy ping host has non-ASCII character U+%04X at %zu",
				    (unsigned)u, i);
		ascii[i] = (char)u;
	}
	port = (uint32_t)be16(buf + total - 4) << 16 | be16(buf + total - 2);
	if (port > 0xFFFF)
		return fail(err, errlen, MC_ELEGACY, "legacy ping port %" PRId32 " is out of range",
			    (int32_t)port);
	if (mc_normalise_host((const uint8_t *)ascii, nchars, hs->host, &hs->host_len, err,
			      errlen))
		return MC_EHOST;
	hs->kind = MC_KIND_LEGACY_PING_HOST;
	hs->protocol = buf[29];
	hs->port = (uint16_t)port;
	hs->frame_len = total;
	return 0;
}

int mc_parse_handshake(const uint8_t *buf, size_t len, struct mc_handshake *hs, char *err,
		       size_t errlen)
{
	memset(hs, 0, sizeof(*hs));
	hs->protocol = -1;
	if (err && errlen)
		err[0] = '\0';
	if (len == 0)
		return MC_NEED_MORE;
	if (buf[0] == 0xFE && !modern_frame_at_fe(buf, len))
		return parse_legacy(buf, len, hs, err, errlen);
	return parse_modern(buf, len, hs, err, errlen);
}

/* ---- Any packet ------------------------------------------------------------------------------ */

int mc_parse_packet(const uint8_t *buf, size_t len, size_t max, int32_t *id,
		    const uint8_t **payload, size_t *plen, size_t *consumed)
{
	int32_t frame;
	size_t end;
	int r = mc_varint_read(buf, len, &frame), k;

	if (r == 0)
		return MC_NEED_MORE;
	if (r < 0 || frame < 0)
		return MC_EVARINT;
	if (frame == 0)
		return MC_EEMPTY;
	if ((size_t)frame > max)
		return MC_ETOOBIG;
	end = (size_t)r + (size_t)frame;
	if (len < end)
		return MC_NEED_MORE;
	k = mc_varint_read(buf + r, (size_t)frame, id);
	if (k == 0)
		return MC_ETRUNC;
	if (k < 0)
		return MC_EVARINT;
	*payload = buf + r + k;
	*plen = (size_t)frame - (size_t)k;
	*consumed = end;
	return 0;
}

/* ---- Builders -------------------------------------------------------------------------------- */

/* Output that counts what would be written and writes what fits, so a builder can measure a
 * packet body (buf NULL, cap 0) before it writes the length prefix in front of it. */
struct wr {
	uint8_t *buf;
	size_t cap, len;
};

static void put(struct wr *w, uint8_t b)
{
	if (w->len < w->cap)
		w->buf[w->len] = b;
	w->len++;
}

static void put_raw(struct wr *w, const char *s)
{
	while (*s)
		put(w, (uint8_t)*s++);
}

/* s as a JSON string. Malformed UTF-8 becomes U+FFFD, so the client's JSON parser never sees it. */
static void put_json_str(struct wr *w, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *u = (const uint8_t *)(s ? s : "");
	size_t n = strlen((const char *)u);

	put(w, '"');
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		int k = utf8_next(u + i, n - i, &cp);

		if (k == 0) {
			put_raw(w, "\xEF\xBF\xBD");
			i++;
			continue;
		}
		if (cp == '"' || cp == '\\') {
			put(w, '\\');
			put(w, (uint8_t)cp);
		} else if (cp < 0x20) {
			put_raw(w, "\\u00");
			put(w, (uint8_t)hex[cp >> 4]);
			put(w, (uint8_t)hex[cp & 0xF]);
		} else {
			for (int j = 0; j < k; j++)
				put(w, u[i + (size_t)j]);
		}
		i += (size_t)k;
	}
	put(w, '"');
}

struct status_args {
	int32_t protocol;
	const char *version_name, *motd;
};

static void put_status_json(struct wr *w, const void *arg)
{
	const struct status_args *a = arg;
	char num[16];

	snprintf(num, sizeof(num), "%" PRId32, a->protocol);
	put_raw(w, "{\"version\":{\"name\":");
	put_json_str(w, a->version_name);
	put_raw(w, ",\"protocol\":");
	put_raw(w, num);
	put_raw(w, "},\"players\":{\"max\":0,\"online\":0},\"description\":{\"text\":");
	put_json_str(w, a->motd);
	put_raw(w, "}}");
}

static void put_text_json(struct wr *w, const void *arg)
{
	put_raw(w, "{\"text\":");
	put_json_str(w, arg);
	put_raw(w, "}");
}

/* A packet whose only field is one String holding the JSON that emit() writes. */
static size_t build_json_packet(uint8_t *out, size_t cap, int32_t id,
				void (*emit)(struct wr *, const void *), const void *arg)
{
	struct wr w = { 0 };
	size_t jlen, body, total, n;

	emit(&w, arg);
	jlen = w.len;
	if (jlen > INT32_MAX / 2)
		return 0;
	body = varint_size((uint32_t)id) + varint_size((uint32_t)jlen) + jlen;
	total = varint_size((uint32_t)body) + body;
	if (total > cap)
		return 0;
	n = (size_t)mc_varint_write(out, (int32_t)body);
	n += (size_t)mc_varint_write(out + n, id);
	n += (size_t)mc_varint_write(out + n, (int32_t)jlen);
	w = (struct wr){ .buf = out + n, .cap = cap - n };
	emit(&w, arg);
	return n + w.len;
}

size_t mc_build_status_response(uint8_t *out, size_t cap, int32_t protocol,
				const char *version_name, const char *motd)
{
	struct status_args a = { protocol, version_name, motd };

	return build_json_packet(out, cap, 0x00, put_status_json, &a);
}

size_t mc_build_pong(uint8_t *out, size_t cap, const uint8_t payload8[8])
{
	if (cap < 10)
		return 0;
	out[0] = 9;
	out[1] = 0x01;
	memcpy(out + 2, payload8, 8);
	return 10;
}

size_t mc_build_handshake(uint8_t *out, size_t cap, int32_t protocol, const char *host,
			  uint16_t port, int32_t next_state)
{
	size_t hlen = host ? strlen(host) : 0, body, total, n;

	if (hlen > MC_HOST_MAX)
		return 0;
	body = varint_size(0x00) + varint_size((uint32_t)protocol) + varint_size((uint32_t)hlen) +
	       hlen + 2 + varint_size((uint32_t)next_state);
	total = varint_size((uint32_t)body) + body;
	if (total > cap)
		return 0;
	n = (size_t)mc_varint_write(out, (int32_t)body);
	n += (size_t)mc_varint_write(out + n, 0x00);
	n += (size_t)mc_varint_write(out + n, protocol);
	n += (size_t)mc_varint_write(out + n, (int32_t)hlen);
	if (hlen)
		memcpy(out + n, host, hlen);
	n += hlen;
	out[n++] = (uint8_t)(port >> 8);
	out[n++] = (uint8_t)port;
	n += (size_t)mc_varint_write(out + n, next_state);
	return n;
}

size_t mc_build_status_request(uint8_t *out, size_t cap)
{
	if (cap < 2)
		return 0;
	out[0] = 1;
	out[1] = 0x00;
	return 2;
}

size_t mc_build_login_disconnect(uint8_t *out, size_t cap, const char *reason)
{
	return build_json_packet(out, cap, 0x00, put_text_json, reason ? reason : "");
}

/* The 1.4 - 1.6 clients read the kick string with a 256-character limit and drop the server
 * from the list if it is longer, so the builder fits the text into that many UTF-16 units. */
#define LEGACY_KICK_UNITS 256

static void put_u16(struct wr *w, uint32_t unit)
{
	put(w, (uint8_t)(unit >> 8));
	put(w, (uint8_t)unit);
}

/* s as UTF-16BE, stopping before the code point that would take it past max_units. */
static void put_utf16(struct wr *w, const char *s, size_t *units, size_t max_units)
{
	const uint8_t *u = (const uint8_t *)(s ? s : "");
	size_t n = strlen((const char *)u);

	for (size_t i = 0; i < n;) {
		uint32_t cp;
		int k = utf8_next(u + i, n - i, &cp);
		size_t need;

		if (k == 0) {
			cp = 0xFFFD;
			k = 1;
		}
		need = cp >= 0x10000 ? 2 : 1;
		if (*units + need > max_units)
			return;
		if (need == 2) {
			cp -= 0x10000;
			put_u16(w, 0xD800 | (cp >> 10));
			put_u16(w, 0xDC00 | (cp & 0x3FF));
		} else {
			put_u16(w, cp);
		}
		*units += need;
		i += (size_t)k;
	}
}

size_t mc_build_legacy_kick(uint8_t *out, size_t cap, int32_t protocol, const char *version_name,
			    const char *motd)
{
	char proto[16];
	struct wr w;
	size_t units = 0;

	if (cap < 3)
		return 0;
	snprintf(proto, sizeof(proto), "%" PRId32, protocol);
	/* "\xa71" NUL proto NUL version NUL motd NUL "0" NUL "0": the version may use what the
	 * NUL after it and the 4-unit tail leave, the motd the rest. */
	w = (struct wr){ .buf = out + 3, .cap = cap - 3 };
	put_utf16(&w, "\xC2\xA7" "1", &units, LEGACY_KICK_UNITS);
	put_u16(&w, 0);
	units++;
	put_utf16(&w, proto, &units, LEGACY_KICK_UNITS);
	put_u16(&w, 0);
	units++;
	put_utf16(&w, version_name, &units, LEGACY_KICK_UNITS - 5);
	put_u16(&w, 0);
	units++;
	put_utf16(&w, motd, &units, LEGACY_KICK_UNITS - 4);
	put_u16(&w, 0);
	put_u16(&w, '0');
	put_u16(&w, 0);
	put_u16(&w, '0');
	units += 4;
	if (w.len > w.cap)
		return 0;
	out[0] = 0xFF;
	out[1] = (uint8_t)(units >> 8);
	out[2] = (uint8_t)units;
	return 3 + w.len;
}
