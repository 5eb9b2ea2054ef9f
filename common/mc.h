/* Minecraft Java edition handshake parsing and the few packets the relay answers itself.
 *
 * Everything here works on bytes the relay *peeked* (MSG_PEEK) from an untrusted player socket:
 * every length is bounded, nothing allocates, and a malformed input yields a negative code and a
 * human-readable message in the caller's buffer. See docs/protocol.md, "Player side".
 */
#ifndef DVV_MC_H
#define DVV_MC_H

#include <stddef.h>
#include <stdint.h>

/* Largest first frame we accept (the whole handshake packet, length prefix included). Real
 * clients send < 300 bytes: protocol 47..current handshake, a 255-char host plus Forge marker. */
#define MC_HANDSHAKE_MAX 512
#define MC_HOST_MAX 255 /* after normalisation, bytes */

enum mc_kind {
	MC_KIND_MODERN = 1,	    /* 0x00 handshake packet (protocol 47 .. current) */
	MC_KIND_LEGACY_PING = 2,    /* 0xFE / 0xFE 0x01 without a hostname (1.4 .. 1.5 clients) */
	MC_KIND_LEGACY_PING_HOST = 3 /* 0xFE 0x01 0xFA "MC|PingHost" (1.6): carries a hostname */
};

enum mc_next_state { MC_NEXT_STATUS = 1, MC_NEXT_LOGIN = 2, MC_NEXT_TRANSFER = 3 };

/* Return codes: 0 = parsed, MC_NEED_MORE = a valid prefix, wait for more bytes (only ever
 * returned while len < MC_HANDSHAKE_MAX), negative = malformed (reject the connection). */
#define MC_NEED_MORE 1
enum mc_err {
	MC_EVARINT = -1,     /* VarInt longer than 5 bytes / out of range */
	MC_ETOOBIG = -2,     /* frame length beyond MC_HANDSHAKE_MAX */
	MC_EEMPTY = -3,	     /* zero-length frame */
	MC_EPACKET = -4,     /* first packet id is not 0x00 */
	MC_EHOST = -5,	     /* hostname missing, too long, not UTF-8, empty after normalising,
				or containing bytes not allowed in a DNS name */
	MC_ESTATE = -6,	     /* next state not 1, 2 or 3 */
	MC_ETRUNC = -7,	     /* frame shorter than its fields */
	MC_ELEGACY = -8      /* malformed legacy ping */
};

struct mc_handshake {
	enum mc_kind kind;
	int32_t protocol;    /* -1 when unknown (legacy pings without version) */
	char host[MC_HOST_MAX + 1]; /* normalised: cut at first NUL and at "///", trailing dots
				       stripped, ASCII-lowercased, "_minecraft._tcp." prefix removed;
				       NUL-terminated */
	size_t host_len;
	uint16_t port;
	int32_t next_state;  /* enum mc_next_state; 1 for legacy pings */
	size_t frame_len;    /* bytes the handshake occupies from buf[0] (length prefix included);
				for legacy pings: the bytes parsed */
};

/* Parse the first bytes a player sent. */
int mc_parse_handshake(const uint8_t *buf, size_t len, struct mc_handshake *hs, char *err,
		       size_t errlen);

/* 1 when buf is exactly FE or FE 01: a legacy ping that may be complete (beta 1.8 - 1.5 clients
 * send nothing more) or may be followed by the 1.6 MC|PingHost part. mc_parse_handshake answers
 * MC_NEED_MORE for these; a caller that still sees them after a short wait answers the legacy
 * ping (MC_KIND_LEGACY_PING, protocol -1, no host). */
int mc_is_legacy_prefix(const uint8_t *buf, size_t len);

/* The hostname normalisation mc_parse_handshake applies, for names from elsewhere (configured
 * routes, the agent's registration) that must compare equal to what players send. raw is the
 * UTF-8 string as sent; returns 0 and out (NUL-terminated, *out_len bytes) or MC_EHOST. */
int mc_normalise_host(const uint8_t *raw, size_t len, char out[MC_HOST_MAX + 1], size_t *out_len,
		      char *err, size_t errlen);

/* VarInt helpers. mc_varint_read returns bytes consumed (1..5), 0 if more bytes are needed,
 * MC_EVARINT if malformed. mc_varint_write returns bytes written (1..5). */
int mc_varint_read(const uint8_t *buf, size_t len, int32_t *out);
int mc_varint_write(uint8_t *out, int32_t v);

/* One length-prefixed packet at buf: returns 0 and sets id/payload/consumed, MC_NEED_MORE, or
 * negative on malformed/longer than max. Used for the status request (0x00) and ping (0x01). */
int mc_parse_packet(const uint8_t *buf, size_t len, size_t max, int32_t *id,
		    const uint8_t **payload, size_t *plen, size_t *consumed);

/* Builders for what the relay answers itself when no tunnel is live. Each returns the number of
 * bytes written, or 0 if cap is too small. Text is plain UTF-8; JSON escaping is done here. */
size_t mc_build_status_response(uint8_t *out, size_t cap, int32_t protocol,
				const char *version_name, const char *motd);
size_t mc_build_pong(uint8_t *out, size_t cap, const uint8_t payload8[8]);
size_t mc_build_login_disconnect(uint8_t *out, size_t cap, const char *reason);
/* What a client sends to ask a server for its status (the agent polls its local server this
 * way): the handshake (0x00: protocol, host as a String of at most MC_HOST_MAX bytes, port,
 * next state) and the empty Status Request (0x00). Bytes written, or 0 if cap is too small or
 * the host too long. */
size_t mc_build_handshake(uint8_t *out, size_t cap, int32_t protocol, const char *host,
			  uint16_t port, int32_t next_state);
size_t mc_build_status_request(uint8_t *out, size_t cap);
/* 0xFF kick answering a legacy ping, in the 1.4+ "\xa71\0proto\0version\0motd\0players\0max"
 * form, UTF-16BE. */
size_t mc_build_legacy_kick(uint8_t *out, size_t cap, int32_t protocol, const char *version_name,
			    const char *motd);

#endif
