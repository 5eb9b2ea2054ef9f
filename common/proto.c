/* The agent <-> relay wire codec (control frames, data header, PROXY v2) and the byte codec the
 * relay-to-relay forward header shares; proto.h is the contract. */
#include "proto.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const char *const type_names[] = {"?",	 "HELLO", "WELCOME", "ERROR",  "ATTACH",
					 "PING", "PONG",  "MOVE",    "GOODBYE", "STATUS", "PLAN"};

const char *ctl_type_name(uint8_t type)
{
	return type < sizeof(type_names) / sizeof(type_names[0]) ? type_names[type] : "UNKNOWN";
}

/* Copy a string member. Missing -> "" unless required. Too long or not a string -> error. */
static int get_str(json_t *o, const char *key, char *out, size_t cap, bool required, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(o, key);
	out[0] = 0;
	if (!v) {
		if (!required)
			return 0;
		snprintf(err, errlen, "missing \"%s\"", key);
		return -EPROTO;
	}
	if (!json_is_string(v)) {
		snprintf(err, errlen, "\"%s\" is not a string", key);
		return -EPROTO;
	}
	size_t n = json_string_length(v);
	if (n >= cap || memchr(json_string_value(v), 0, n)) {
		snprintf(err, errlen, "\"%s\" longer than %zu bytes or has NUL", key, cap - 1);
		return -EPROTO;
	}
	memcpy(out, json_string_value(v), n + 1);
	return 0;
}

static int get_uint(json_t *o, const char *key, uint64_t *out, uint64_t max, bool required,
		    char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);
	*out = 0;
	if (!v) {
		if (!required)
			return 0;
		snprintf(err, errlen, "missing \"%s\"", key);
		return -EPROTO;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max) {
		snprintf(err, errlen, "\"%s\" is not an integer in 0..%llu", key,
			 (unsigned long long)max);
		return -EPROTO;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* A WELCOME peer: "name:port" (letters, digits, '.', '-') or "[v6]:port" / "v4:port", port
 * 1..65535, at most CTL_PEER_ADDR_MAX bytes. Anything else is dropped, never an error: a relay's
 * hint must not cost the agent its session. */
static bool peer_ok(json_t *v)
{
	char host[CTL_PEER_ADDR_MAX + 1];
	uint16_t port;
	if (!json_is_string(v))
		return false;
	size_t n = json_string_length(v);
	const char *s = json_string_value(v);
	if (n == 0 || n > CTL_PEER_ADDR_MAX || memchr(s, 0, n) ||
	    net_split_hostport(s, host, sizeof(host), &port) || port == 0)
		return false;
	struct in6_addr a6;
	if (s[0] == '[')
		return inet_pton(AF_INET6, host, &a6) == 1;
	return strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") ==
	       strlen(host);
}

static void get_peers(json_t *o, struct ctl_msg *m)
{
	json_t *a = json_object_get(o, "peers");
	m->u.welcome.npeers = 0;
	if (!json_is_array(a))
		return;
	for (size_t i = 0; i < json_array_size(a) && m->u.welcome.npeers < CTL_PEERS_MAX; i++) {
		json_t *v = json_array_get(a, i);
		if (!peer_ok(v))
			continue;
		memcpy(m->u.welcome.peers[m->u.welcome.npeers++], json_string_value(v),
		       json_string_length(v) + 1);
	}
}

static int decode_payload(json_t *o, struct ctl_msg *m, char *err, size_t errlen)
{
	uint64_t u;
	int rc = 0;
	switch (m->type) {
	case CTL_HELLO:
		if ((rc = get_uint(o, "proto", &u, UINT32_MAX, true, err, errlen)))
			return rc;
		m->u.hello.proto = (uint32_t)u;
		if ((rc = get_str(o, "token", m->u.hello.token, sizeof(m->u.hello.token), true, err,
				  errlen)))
			return rc;
		if ((rc = get_str(o, "agent", m->u.hello.agent, sizeof(m->u.hello.agent), false, err,
				  errlen)))
			return rc;
		json_t *pl = json_object_get(o, "placed");
		if (pl && !json_is_boolean(pl)) {
			snprintf(err, errlen, "\"placed\" is not a boolean");
			return -EPROTO;
		}
		m->u.hello.placed = pl && json_is_true(pl);
		return 0;
	case CTL_WELCOME:
		if ((rc = get_str(o, "hostname", m->u.welcome.hostname,
				  sizeof(m->u.welcome.hostname), true, err, errlen)) ||
		    (rc = get_str(o, "tunnel", m->u.welcome.tunnel, sizeof(m->u.welcome.tunnel),
				  false, err, errlen)) ||
		    (rc = get_str(o, "instance", m->u.welcome.instance,
				  sizeof(m->u.welcome.instance), false, err, errlen)) ||
		    (rc = get_str(o, "region", m->u.welcome.region, sizeof(m->u.welcome.region),
				  false, err, errlen)) ||
		    (rc = get_uint(o, "ping_ms", &u, 3600000, false, err, errlen)))
			return rc;
		m->u.welcome.ping_ms = (uint32_t)u;
		get_peers(o, m);
		return 0;
	case CTL_ERROR:
		if ((rc = get_str(o, "code", m->u.error.code, sizeof(m->u.error.code), true, err,
				  errlen)) ||
		    (rc = get_str(o, "message", m->u.error.message, sizeof(m->u.error.message),
				  false, err, errlen)) ||
		    (rc = get_uint(o, "retry_after_ms", &u, 86400000, false, err, errlen)))
			return rc;
		m->u.error.retry_after_ms = (uint32_t)u;
		json_t *r = json_object_get(o, "retry");
		if (r && !json_is_boolean(r)) {
			snprintf(err, errlen, "\"retry\" is not a boolean");
			return -EPROTO;
		}
		m->u.error.retry = r ? json_is_true(r) : false;
		return 0;
	case CTL_ATTACH: {
		json_t *a = json_object_get(o, "tokens");
		if (!json_is_array(a) || json_array_size(a) == 0 ||
		    json_array_size(a) > CTL_ATTACH_MAX) {
			snprintf(err, errlen, "\"tokens\" must be an array of 1..%d", CTL_ATTACH_MAX);
			return -EPROTO;
		}
		m->u.attach.n = (uint32_t)json_array_size(a);
		for (size_t i = 0; i < json_array_size(a); i++) {
			json_t *t = json_array_get(a, i);
			if (!json_is_string(t) || json_string_length(t) != 2 * ATTACH_TOKEN_LEN ||
			    hex_decode(json_string_value(t), 2 * ATTACH_TOKEN_LEN,
				       m->u.attach.tokens[i], ATTACH_TOKEN_LEN) != ATTACH_TOKEN_LEN) {
				snprintf(err, errlen, "attach token %zu is not %d hex chars", i,
					 2 * ATTACH_TOKEN_LEN);
				return -EPROTO;
			}
		}
		return 0;
	}
	case CTL_PING:
	case CTL_PONG:
		rc = get_uint(o, "t", &u, UINT64_MAX >> 1, false, err, errlen);
		m->u.ping.t = u;
		return rc;
	case CTL_MOVE:
		if ((rc = get_str(o, "addr", m->u.move.addr, sizeof(m->u.move.addr), true, err,
				  errlen)))
			return rc;
		return get_str(o, "reason", m->u.move.reason, sizeof(m->u.move.reason), false, err,
			       errlen);
	case CTL_GOODBYE:
		if ((rc = get_str(o, "code", m->u.goodbye.code, sizeof(m->u.goodbye.code), false, err,
				  errlen)))
			return rc;
		return get_str(o, "reason", m->u.goodbye.reason, sizeof(m->u.goodbye.reason), false,
			       err, errlen);
	case CTL_STATUS:
		return 0; /* any object: the relay sanitizes what it keeps; ctl_decode points at it */
	case CTL_PLAN:
		if ((rc = get_str(o, "tier", m->u.plan.tier, sizeof(m->u.plan.tier), true, err,
				  errlen)) ||
		    (rc = get_str(o, "state", m->u.plan.state, sizeof(m->u.plan.state), false, err,
				  errlen)) ||
		    (rc = get_str(o, "message", m->u.plan.message, sizeof(m->u.plan.message), false,
				  err, errlen)))
			return rc;
		if ((rc = get_uint(o, "max_tunnels", &u, 1000000, false, err, errlen)))
			return rc;
		m->u.plan.max_tunnels = (uint32_t)u;
		if ((rc = get_uint(o, "max_players", &u, 1000000, false, err, errlen)))
			return rc;
		m->u.plan.max_players = (uint32_t)u;
		if ((rc = get_uint(o, "idle_timeout_s", &u, 365u * 86400, false, err, errlen)))
			return rc;
		m->u.plan.idle_timeout_s = (uint32_t)u;
		if ((rc = get_uint(o, "bandwidth_bytes", &m->u.plan.bandwidth_bytes, UINT64_MAX >> 1,
				   false, err, errlen)) ||
		    (rc = get_uint(o, "used_bytes", &m->u.plan.used_bytes, UINT64_MAX >> 1, false,
				   err, errlen)) ||
		    (rc = get_uint(o, "period_end", &u, 253402300799ULL, false, err, errlen)))
			return rc;
		m->u.plan.period_end = (int64_t)u;
		if (!m->u.plan.state[0])
			strcpy(m->u.plan.state, "ok");
		return 0;
	}
	return 0; /* unknown type: ignored by the caller */
}

int ctl_decode(const uint8_t *buf, size_t len, struct ctl_msg *m, size_t *consumed, char *err,
	       size_t errlen)
{
	if (len < CTL_HDR_LEN)
		return CTL_NEED_MORE;
	if (buf[0] != CTL_VERSION) {
		snprintf(err, errlen, "unsupported control protocol version %u (want %u)", buf[0],
			 CTL_VERSION);
		return -EPROTONOSUPPORT;
	}
	size_t plen = (size_t)buf[2] << 8 | buf[3];
	if (plen > CTL_PAYLOAD_MAX) {
		snprintf(err, errlen, "control frame of %zu bytes exceeds %d", plen,
			 CTL_PAYLOAD_MAX);
		return -EMSGSIZE;
	}
	if (len < CTL_HDR_LEN + plen)
		return CTL_NEED_MORE;
	memset(m, 0, offsetof(struct ctl_msg, u));
	m->type = buf[1];
	*consumed = CTL_HDR_LEN + plen;
	if (m->type < CTL_HELLO || m->type > CTL_TYPE_LAST)
		return 0;
	json_error_t jerr;
	json_t *o = json_loadb((const char *)buf + CTL_HDR_LEN, plen,
			       JSON_REJECT_DUPLICATES, &jerr);
	if (!o || !json_is_object(o)) {
		snprintf(err, errlen, "%s payload is not a JSON object: %s",
			 ctl_type_name(m->type), o ? "wrong type" : jerr.text);
		json_decref(o);
		return -EPROTO;
	}
	char e2[160] = "";
	int rc = decode_payload(o, m, e2, sizeof(e2));
	json_decref(o);
	if (rc)
		snprintf(err, errlen, "%s: %s", ctl_type_name(m->type), e2);
	if (!rc && m->type == CTL_STATUS) {
		m->u.status.json = (const char *)buf + CTL_HDR_LEN;
		m->u.status.len = plen;
	}
	return rc;
}

/* STATUS carries an already-serialized object: checked (a frame the relay would reject as
 * "not a JSON object" would cost the agent its session) and copied as it is. */
static int encode_status(const struct ctl_msg *m, uint8_t *out, size_t cap)
{
	size_t n = m->u.status.len;
	if (!m->u.status.json || n == 0)
		return -EINVAL;
	if (n > CTL_PAYLOAD_MAX)
		return -EMSGSIZE;
	if (cap < CTL_HDR_LEN || n > cap - CTL_HDR_LEN)
		return -ENOSPC;
	json_error_t jerr;
	json_t *o = json_loadb(m->u.status.json, n, JSON_REJECT_DUPLICATES, &jerr);
	bool obj = json_is_object(o);
	json_decref(o);
	if (!obj)
		return -EINVAL;
	out[0] = CTL_VERSION;
	out[1] = CTL_STATUS;
	out[2] = (uint8_t)(n >> 8);
	out[3] = (uint8_t)n;
	memcpy(out + CTL_HDR_LEN, m->u.status.json, n);
	return (int)(CTL_HDR_LEN + n);
}

int ctl_encode(const struct ctl_msg *m, uint8_t *out, size_t cap)
{
	if (m->type == CTL_STATUS)
		return encode_status(m, out, cap);
	json_t *o = json_object();
	if (!o)
		return -ENOMEM;
	char hex[CTL_ATTACH_MAX][2 * ATTACH_TOKEN_LEN + 1];
	switch (m->type) {
	case CTL_HELLO:
		json_object_set_new(o, "proto", json_integer(m->u.hello.proto));
		json_object_set_new(o, "token", json_string(m->u.hello.token));
		json_object_set_new(o, "agent", json_string(m->u.hello.agent));
		if (m->u.hello.placed)
			json_object_set_new(o, "placed", json_true());
		break;
	case CTL_WELCOME:
		json_object_set_new(o, "hostname", json_string(m->u.welcome.hostname));
		json_object_set_new(o, "tunnel", json_string(m->u.welcome.tunnel));
		json_object_set_new(o, "instance", json_string(m->u.welcome.instance));
		json_object_set_new(o, "region", json_string(m->u.welcome.region));
		json_object_set_new(o, "ping_ms", json_integer(m->u.welcome.ping_ms));
		if (m->u.welcome.npeers) {
			json_t *a = json_array();
			for (uint32_t i = 0; i < m->u.welcome.npeers && i < CTL_PEERS_MAX; i++)
				json_array_append_new(a, json_string(m->u.welcome.peers[i]));
			json_object_set_new(o, "peers", a);
		}
		break;
	case CTL_ERROR:
		json_object_set_new(o, "code", json_string(m->u.error.code));
		json_object_set_new(o, "message", json_string(m->u.error.message));
		json_object_set_new(o, "retry", json_boolean(m->u.error.retry));
		json_object_set_new(o, "retry_after_ms", json_integer(m->u.error.retry_after_ms));
		break;
	case CTL_ATTACH: {
		if (m->u.attach.n == 0 || m->u.attach.n > CTL_ATTACH_MAX) {
			json_decref(o);
			return -EINVAL;
		}
		json_t *a = json_array();
		for (uint32_t i = 0; i < m->u.attach.n; i++) {
			hex_encode(m->u.attach.tokens[i], ATTACH_TOKEN_LEN, hex[i]);
			json_array_append_new(a, json_string(hex[i]));
		}
		json_object_set_new(o, "tokens", a);
		break;
	}
	case CTL_PING:
	case CTL_PONG:
		json_object_set_new(o, "t", json_integer((json_int_t)m->u.ping.t));
		break;
	case CTL_MOVE:
		json_object_set_new(o, "addr", json_string(m->u.move.addr));
		json_object_set_new(o, "reason", json_string(m->u.move.reason));
		break;
	case CTL_GOODBYE:
		if (m->u.goodbye.code[0])
			json_object_set_new(o, "code", json_string(m->u.goodbye.code));
		json_object_set_new(o, "reason", json_string(m->u.goodbye.reason));
		break;
	case CTL_PLAN:
		json_object_set_new(o, "tier", json_string(m->u.plan.tier));
		json_object_set_new(o, "max_tunnels", json_integer(m->u.plan.max_tunnels));
		json_object_set_new(o, "max_players", json_integer(m->u.plan.max_players));
		json_object_set_new(o, "idle_timeout_s", json_integer(m->u.plan.idle_timeout_s));
		json_object_set_new(o, "bandwidth_bytes",
				    json_integer((json_int_t)m->u.plan.bandwidth_bytes));
		json_object_set_new(o, "used_bytes", json_integer((json_int_t)m->u.plan.used_bytes));
		json_object_set_new(o, "period_end", json_integer(m->u.plan.period_end));
		json_object_set_new(o, "state", json_string(m->u.plan.state[0] ? m->u.plan.state : "ok"));
		if (m->u.plan.message[0])
			json_object_set_new(o, "message", json_string(m->u.plan.message));
		break;
	default:
		json_decref(o);
		return -EINVAL;
	}
	int rc = -ENOSPC;
	if (cap < CTL_HDR_LEN)
		goto out;
	size_t room = cap - CTL_HDR_LEN;
	if (room > CTL_PAYLOAD_MAX)
		room = CTL_PAYLOAD_MAX;
	/* json_dumpb returns the size needed even when it does not fit */
	size_t n = json_dumpb(o, (char *)out + CTL_HDR_LEN, room, JSON_COMPACT);
	if (n == 0) {
		rc = -EINVAL; /* a string was not valid UTF-8 */
		goto out;
	}
	if (n > room)
		goto out;
	out[0] = CTL_VERSION;
	out[1] = m->type;
	out[2] = (uint8_t)(n >> 8);
	out[3] = (uint8_t)n;
	rc = (int)(CTL_HDR_LEN + n);
out:
	json_decref(o);
	return rc;
}

/* ---- byte codec ---- */

void proto_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

uint16_t proto_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

void proto_put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

uint64_t proto_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Store an address as 16 bytes (IPv4 mapped into ::ffff:a.b.c.d) + port. */
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

void proto_addrs_put(uint8_t out[PROTO_ADDRS_LEN], const struct sockaddr_storage *src,
		     const struct sockaddr_storage *dst)
{
	uint16_t sp, dp;
	out[0] = src->ss_family == AF_INET ? 4 : 6;
	out[1] = 0;
	addr_put(src, out + 6, &sp);
	addr_put(dst, out + 22, &dp);
	proto_put16(out + 2, sp);
	proto_put16(out + 4, dp);
}

int proto_addrs_get(const uint8_t in[PROTO_ADDRS_LEN], struct sockaddr_storage *src,
		    struct sockaddr_storage *dst)
{
	if (in[0] != 4 && in[0] != 6)
		return -EPROTO;
	addr_get(in + 6, proto_get16(in + 2), src);
	addr_get(in + 22, proto_get16(in + 4), dst);
	return 0;
}

/* ---- data connection header ---- */

size_t data_hdr_encode(const struct data_hdr *h, uint8_t out[DATA_HDR_LEN_MAX])
{
	memcpy(out, DATA_HDR_MAGIC, 4);
	out[4] = 1; /* version: the trace id is an optional extension, not a new version */
	out[5] = h->trace ? DATA_HDR_F_TRACE : 0;
	proto_put16(out + 6, h->trace ? DATA_HDR_BODY_TRACE : DATA_HDR_BODY);
	proto_addrs_put(out + DATA_HDR_FIXED, &h->src, &h->dst);
	if (!h->trace)
		return DATA_HDR_LEN;
	proto_put64(out + DATA_HDR_LEN, h->trace);
	return DATA_HDR_LEN_MAX;
}

int data_hdr_fixed(const uint8_t fixed[DATA_HDR_FIXED])
{
	if (memcmp(fixed, DATA_HDR_MAGIC, 4) || fixed[4] != 1)
		return -EPROTO;
	uint16_t n = proto_get16(fixed + 6);
	if (n < DATA_HDR_BODY || n > DATA_HDR_BODY_MAX)
		return -EPROTO;
	return n;
}

int data_hdr_body(const uint8_t *body, size_t len, struct data_hdr *h)
{
	if (len < DATA_HDR_BODY)
		return -EPROTO;
	h->trace = 0;
	return proto_addrs_get(body, &h->src, &h->dst);
}

int data_hdr_parse(const uint8_t *whole, size_t len, struct data_hdr *h)
{
	int body = len >= DATA_HDR_FIXED ? data_hdr_fixed(whole) : -EPROTO;
	if (body < 0 || len != DATA_HDR_FIXED + (size_t)body)
		return -EPROTO;
	if (data_hdr_body(whole + DATA_HDR_FIXED, (size_t)body, h))
		return -EPROTO;
	if (whole[5] & DATA_HDR_F_TRACE) {
		if ((size_t)body < DATA_HDR_BODY_TRACE)
			return -EPROTO; /* the flag promises 8 more bytes */
		h->trace = proto_get64(whole + DATA_HDR_LEN);
	}
	return 0;
}

/* ---- PROXY protocol v2 ---- */

static const uint8_t pp2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
				    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

size_t proxy_v2_build(uint8_t *out, size_t cap, const struct sockaddr *src,
		      const struct sockaddr *dst)
{
	if (cap < 16 + 36)
		return 0;
	if (src->sa_family != AF_INET && src->sa_family != AF_INET6)
		return 0;
	memcpy(out, pp2_sig, 12);
	out[12] = 0x21; /* version 2, PROXY command */
	if (src->sa_family == AF_INET && dst->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
		out[13] = 0x11; /* TCP over IPv4 */
		proto_put16(out + 14, 12);
		memcpy(out + 16, &s->sin_addr, 4);
		memcpy(out + 20, &d->sin_addr, 4);
		memcpy(out + 24, &s->sin_port, 2);
		memcpy(out + 26, &d->sin_port, 2);
		return 28;
	}
	struct sockaddr_storage s6, d6;
	uint8_t a[16];
	uint16_t sp, dp;
	memcpy(&s6, src, src->sa_family == AF_INET ? sizeof(struct sockaddr_in)
						   : sizeof(struct sockaddr_in6));
	memset(&d6, 0, sizeof(d6));
	if (dst->sa_family == AF_INET || dst->sa_family == AF_INET6)
		memcpy(&d6, dst, dst->sa_family == AF_INET ? sizeof(struct sockaddr_in)
							   : sizeof(struct sockaddr_in6));
	out[13] = 0x21; /* TCP over IPv6 */
	proto_put16(out + 14, 36);
	addr_put(&s6, a, &sp);
	memcpy(out + 16, a, 16);
	addr_put(&d6, a, &dp);
	memcpy(out + 32, a, 16);
	proto_put16(out + 48, sp);
	proto_put16(out + 50, dp);
	return 52;
}
