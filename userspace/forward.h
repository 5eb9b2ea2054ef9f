/* Relay-to-relay forwarding, both ends. A player who reaches relay A for a tunnel held by relay B
 * is sent to B's internal port on a new TCP connection that starts with a forward header, then
 * carries the player's bytes untouched (A splices the two sockets like any joined pair).
 *
 * The header is authenticated with HMAC-SHA256 under the cluster secret every relay of the
 * deployment shares, carries a timestamp (+-30 s) and a random nonce (replays refused), the
 * player's real address, the name, the fencing epoch of the route A acted on, and A's instance
 * id, and the instance id of B as the route named it: B refuses a header meant for another relay,
 * so a header captured on one relay's internal port is worth nothing on another's. B takes the
 * player only if it holds a live tunnel for the name at that same epoch; a route
 * to an older or newer session of the name is stale, and B says so (FWD_NOT_HERE) so that A asks
 * Redis again. The replay cache of nonces is bounded: when it is full of unexpired nonces B
 * refuses new headers (counted) rather than forget one, and A answers its player. A forwarded
 * connection is never forwarded again: B serves it from its own tunnels
 * or answers the player itself. Players cannot reach the internal port's parser through the
 * player port, and cannot forge a header without the secret.
 *
 * B answers a header it accepts with one byte, FWD_ACCEPT, and A sends nothing of the player's
 * before reading it. That keeps the header alone in B's receive queue: B reads it with recv()
 * and then hands the socket to the in-kernel splice, which forwards whole skbs, so a header
 * sharing an skb with the player's first bytes would be forwarded again (docs/sockmap.md,
 * section 5).
 *
 * Contract: relay.c calls forward_init/tick/free; player.c hands every player whose name has no
 * live tunnel here to forward_player() (which forwards only when r->fwd_enabled and the player
 * was not itself forwarded, and otherwise answers it from the same lookup), calls forward_timeout() at the
 * deadline of a player in PS_LOOKUP / PS_FORWARD, and forward_cancel() whenever it lets a player
 * go. The receiving end gives accepted players to player_adopt_forwarded(), and accepted agent
 * data connections (FWD_F_DATA) to tunnel_adopt_dataconn(). The codec
 * (fwd_encode/fwd_fixed/fwd_verify) is pure. */
#ifndef DVV_FORWARD_H
#define DVV_FORWARD_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct relay;
struct player;
struct dataconn;

#define FWD_MAGIC "DVVF"
#define FWD_FIXED 8	      /* magic, version, flags, u16 body length */
#define FWD_VERSION 2	      /* 2: the target instance id follows `from` */
/* flags bit 0: the nonce's first 8 bytes are the player's trace id (its last 8 stay random, so
 * nonces stay unique). Relays that predate the flag ignore flags and take the nonce as a
 * nonce, so the header is the same length and shape for old and new receivers alike. */
#define FWD_F_TRACE 0x01
/* flags bit 1: not a player but an agent's data connection whose attach token the target
 * relay issued; the host is empty, and the 36-byte data preamble ("DVVA" + token) follows the
 * header. A relay that predates the flag refuses the header (an empty host is malformed), so
 * it never takes such a connection for a player. */
#define FWD_F_DATA 0x02
#define FWD_BODY_MIN (8 + 16 + 8 + PROTO_ADDRS_LEN + 1 + 1 + 1 + FWD_MAC_LEN)
#define FWD_BODY_MAX 600
#define FWD_MAC_LEN 32
#define FWD_SKEW_MS 30000     /* accepted clock difference between relays */
#define FWD_SECRET_MIN 16
#define FWD_ACCEPT 0x06	      /* B -> A: header accepted, send the player's bytes */
#define FWD_NOT_HERE 0x15     /* B -> A: no live tunnel for that name and epoch here (stale route) */

struct fwd_hdr {
	uint8_t flags;		   /* FWD_F_DATA (FWD_F_TRACE follows `trace`) */
	uint64_t ts_ms;		   /* sender's wall clock, ms */
	uint8_t nonce[16];
	uint64_t epoch;		   /* fencing epoch of the route the sender acted on */
	struct sockaddr_storage src; /* the player */
	struct sockaddr_storage dst; /* the address the player dialled at the first relay */
	char host[256];
	char from[65];		   /* sending relay's instance id */
	char target[65];	   /* instance id of the relay it is meant for (from the route) */
	uint64_t trace;		   /* the player's trace id, 0 = none (encode: written into the
				    * nonce; verify: read from it when the flag is set) */
};

/* ---- the header ---- */

/* Encode + MAC. Returns bytes written or 0 if it does not fit / fields too long. */
size_t fwd_encode(const struct fwd_hdr *h, const uint8_t *key, size_t keylen, uint8_t *out,
		  size_t cap);
/* Fixed part: returns the body length to read next, or -EPROTO. */
int fwd_fixed(const uint8_t fixed[FWD_FIXED]);
/* Verify the MAC (constant time) and the clock window, then parse. `whole` is fixed + body.
 * Returns 0 or -EPROTO/-EACCES/-ETIME with a message. Nonce replay is checked by the caller. */
int fwd_verify(const uint8_t *whole, size_t len, const uint8_t *key, size_t keylen,
	       uint64_t now_ms, struct fwd_hdr *out, char *err, size_t errlen);

/* The tag a relay puts in the first 4 bytes of every attach token id it issues (the other 4
 * stay random): FNV-1a of its instance id, never 0. Lets a relay that receives a data
 * connection for a token it did not issue tell which relay of its region did. */
uint32_t fwd_token_tag(const char *instance_id);

/* ---- the module ---- */

/* Open the internal port when --internal-listen is set (it then needs the cluster secret, and
 * sets r->fwd_enabled and r->internal_addr), and set up the route and nonce caches. */
int forward_init(struct relay *r);
void forward_tick(struct relay *r); /* expire old nonces */
void forward_free(struct relay *r);

/* Sending end. p's name has no live tunnel here: find the relay that holds it (route cache, else
 * one Redis round trip for route, cached status and owner) and hand p to that relay's internal
 * port. When nobody can take it, p is answered (player_answer): reconnecting (with the cached
 * status) for a name Redis knows, offline for an unknown one, within the join wait. */
void forward_player(struct player *p);
/* p's deadline passed while it was looked up (PS_LOOKUP) or forwarded (PS_FORWARD). */
void forward_timeout(struct player *p);
/* p is being let go (closed or handed to the data plane): close its connection to the owning
 * relay, if any. */
void forward_cancel(struct player *p);

/* Agent data connections (tunnel.c). d presented a preamble whose token is not ours: if its
 * tag names another forwarding relay of the region (r->fwd_relays) and d did not itself come
 * from the internal port, start handing it to that relay (DS_FORWARD) and return 0; d then
 * ends in dataconn_close() or dataconn_release() + the data plane. -ENOENT otherwise (the
 * caller closes d, as for any bad token). */
int forward_dataconn(struct dataconn *d);
/* The heartbeat's list of the region's relays: pairs of instance id and internal address. */
void forward_set_relays(struct relay *r, const char *const *kv, size_t n);

#endif
