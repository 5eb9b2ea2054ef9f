/* The agent <-> relay wire protocol (docs/protocol.md is the reference).
 *
 * Port 7000 carries two kinds of connection, told apart by their first byte:
 *  - 0x16: a TLS control channel. Inside TLS: frames of [ver u8][type u8][len u16 BE][payload],
 *    payload a UTF-8 JSON object of at most CTL_PAYLOAD_MAX bytes.
 *  - 'D':  a plain data connection: "DVVA" + 32-byte attach token. It then waits, silent, for
 *    the relay's player header "DVVP" (below), after which it carries one player's bytes.
 */
#ifndef DVV_PROTO_H
#define DVV_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CTL_VERSION 1
#define CTL_HDR_LEN 4
#define CTL_PAYLOAD_MAX 32768 /* u16 length on the wire; receivers buffer only what arrived */
#define CTL_NEED_MORE 1
#define CTL_ATTACH_MAX 32	  /* tokens in one ATTACH */
#define CTL_TOKEN_MAX 4096	  /* JWT bytes */
#define CTL_PEERS_MAX 8		  /* WELCOME peers kept */
#define CTL_PEER_ADDR_MAX 127	  /* bytes of one peer "host:port" */

enum ctl_type {
	CTL_HELLO = 1,	 /* agent -> relay: authenticate */
	CTL_WELCOME = 2, /* relay -> agent: tunnel is up */
	CTL_ERROR = 3,	 /* relay -> agent: refused / failed, connection closes after it */
	CTL_ATTACH = 4,	 /* relay -> agent: open one data connection per token */
	CTL_PING = 5,	 /* either way */
	CTL_PONG = 6,	 /* answer to PING, echoes t */
	CTL_MOVE = 7,	 /* relay -> agent: reconnect to addr (draining / placement) */
	CTL_GOODBYE = 8, /* either way: orderly close */
	CTL_STATUS = 9,	 /* agent -> relay: the local server's status response JSON */
	CTL_PLAN = 10	 /* relay -> agent: the tunnel's plan limits, usage and state */
};
#define CTL_TYPE_LAST CTL_PLAN /* highest type this build decodes */

#define ATTACH_TOKEN_LEN 32 /* 8-byte id + 24-byte secret */
#define ATTACH_ID_LEN 8

struct ctl_msg {
	uint8_t type;
	union {
		struct {
			uint32_t proto;
			char token[CTL_TOKEN_MAX + 1];
			char agent[64];
			bool placed; /* dialling the relay a MOVE named: do not move again */
		} hello;
		struct {
			char hostname[256];
			char tunnel[65];
			char instance[65];
			char region[17];
			uint32_t ping_ms;
			/* the region's other active relays ("host:port"): where the agent re-homes
			 * when its relay dies without a MOVE; invalid entries are dropped */
			uint32_t npeers;
			char peers[CTL_PEERS_MAX][CTL_PEER_ADDR_MAX + 1];
		} welcome;
		struct {
			char code[32];
			char message[256];
			bool retry;
			uint32_t retry_after_ms;
		} error;
		struct {
			uint32_t n;
			uint8_t tokens[CTL_ATTACH_MAX][ATTACH_TOKEN_LEN];
		} attach;
		struct {
			uint64_t t;
		} ping; /* also pong */
		struct {
			char addr[128];
			char reason[64];
		} move;
		struct {
			char code[32]; /* "replaced", "draining", "taken_over", "shutdown", "moved" */
			char reason[128];
		} goodbye;
		struct {
			/* decode: points into the frame (valid only during the on_msg callback);
			 * encode: an already-serialized JSON object, copied as is */
			const char *json;
			size_t len;
		} status;
		struct {
			char tier[17];	       /* plan name, [a-z0-9_-] */
			uint32_t max_tunnels;  /* 0 = no limit */
			uint32_t max_players;  /* per tunnel, 0 = no limit */
			uint32_t idle_timeout_s; /* 0 = none */
			uint64_t bandwidth_bytes; /* per billing period, 0 = unlimited */
			uint64_t used_bytes;	  /* this period, all of the user's tunnels */
			int64_t period_end;	  /* Unix seconds, 0 = unknown */
			char state[16];		  /* "ok" | "capped" */
			char message[256];	  /* human text, may be "" */
		} plan;
	} u;
};

/* Decode one frame from buf. Returns 0 (m filled, *consumed set), CTL_NEED_MORE, or a negative
 * errno with a message in err. Unknown frame types decode to m->type = that type with *consumed
 * set and nothing else filled (receivers ignore them: forward compatibility). */
int ctl_decode(const uint8_t *buf, size_t len, struct ctl_msg *m, size_t *consumed, char *err,
	       size_t errlen);
/* Encode m into out; returns bytes written or a negative errno (-ENOSPC, -EINVAL). */
int ctl_encode(const struct ctl_msg *m, uint8_t *out, size_t cap);
const char *ctl_type_name(uint8_t type);

/* Byte codec shared by the data header, PROXY v2 and the relay-to-relay forward header
 * (userspace/forward.c): big-endian integers, and the 38-byte address block both headers carry:
 * [family u8: 4|6][reserved u8][src port u16][dst port u16][src addr 16][dst addr 16], an IPv4
 * address stored v4-mapped (::ffff:a.b.c.d). */
#define PROTO_ADDRS_LEN 38

void proto_put16(uint8_t *p, uint16_t v);
uint16_t proto_get16(const uint8_t *p);
void proto_put64(uint8_t *p, uint64_t v);
uint64_t proto_get64(const uint8_t *p);
/* The family byte says whether src is IPv4 (a v6 src, or any other family, writes 6). */
void proto_addrs_put(uint8_t out[PROTO_ADDRS_LEN], const struct sockaddr_storage *src,
		     const struct sockaddr_storage *dst);
/* Returns 0, or -EPROTO when the family byte is neither 4 nor 6. */
int proto_addrs_get(const uint8_t in[PROTO_ADDRS_LEN], struct sockaddr_storage *src,
		    struct sockaddr_storage *dst);

/* Data connection: attach preamble sent by the agent. */
#define DATA_ATTACH_MAGIC "DVVA"
#define DATA_ATTACH_LEN (4 + ATTACH_TOKEN_LEN)

/* Player header sent by the relay on a data connection when a player is joined to it. */
#define DATA_HDR_MAGIC "DVVP"
#define DATA_HDR_FIXED 8     /* magic, version, flags, u16 body length */
#define DATA_HDR_BODY PROTO_ADDRS_LEN /* the address block, nothing else (version 1) */
#define DATA_HDR_BODY_MAX 256
#define DATA_HDR_LEN (DATA_HDR_FIXED + DATA_HDR_BODY) /* without a trace id: as ever */
/* flags bit 0: the body goes on with the player's trace id (u64 BE) after the addresses. A
 * receiver that does not know the flag reads the longer body and ignores the rest (it always
 * had to), so old agents keep working with new relays; a new agent reading a header without
 * the flag has no trace id (trace 0). */
#define DATA_HDR_F_TRACE 0x01
#define DATA_HDR_BODY_TRACE (DATA_HDR_BODY + 8)
#define DATA_HDR_LEN_MAX (DATA_HDR_FIXED + DATA_HDR_BODY_TRACE)

struct data_hdr {
	struct sockaddr_storage src; /* the player as the first relay saw it */
	struct sockaddr_storage dst; /* the relay address the player dialled */
	uint64_t trace;		     /* the player connection's trace id, 0 = none */
};

/* Writes DATA_HDR_LEN bytes (trace 0: the version-1 header, byte for byte) or
 * DATA_HDR_LEN_MAX (trace id set, flag DATA_HDR_F_TRACE); returns the length. */
size_t data_hdr_encode(const struct data_hdr *h, uint8_t out[DATA_HDR_LEN_MAX]);
/* Parse the fixed part: returns body length to read next, or negative on bad magic/version. */
int data_hdr_fixed(const uint8_t fixed[DATA_HDR_FIXED]);
/* The body alone (addresses; h->trace left 0). */
int data_hdr_body(const uint8_t *body, size_t len, struct data_hdr *h);
/* The whole header (fixed part + the body length it names): addresses and, when the fixed
 * part's flags say so, the trace id. 0 or -EPROTO. */
int data_hdr_parse(const uint8_t *whole, size_t len, struct data_hdr *h);

/* PROXY protocol v2 (TCP over IPv4/IPv6) header for src -> dst. Mixed families are mapped to
 * IPv6. Returns bytes written (16 + 12 or 16 + 36) or 0 if cap too small / family unknown. */
size_t proxy_v2_build(uint8_t *out, size_t cap, const struct sockaddr *src,
		      const struct sockaddr *dst);

#endif
