/* One-port mode (--one-port ADDR): players and agents share one listening socket, as on a
 * platform whose TCP proxy gives a service a single public port (Railway).
 *
 * Each accepted connection is held, unread, until its first bytes tell what it is (read with
 * MSG_PEEK, at most ONEPORT_PEEK_MAX bytes, so nothing is consumed):
 *   0x16 0x03            TLS ClientHello: an agent's control channel      -> agent path
 *   "DVVA"               an agent data connection's attach preamble       -> agent path
 *   0xFE                 a legacy server-list ping                        -> player path
 *   VarInt 1..512, 0x00  a Minecraft handshake frame (length, packet id)  -> player path
 * and is then handed to the accept callback of the port it would have come to on its own
 * (listener_hand()), whose admission checks, caps and timeouts apply from there on. Anything
 * else is closed and counted (dvv_relay_oneport_refused_total).
 *
 * While undecided a connection costs one descriptor and one small struct. Caps: at most
 * --max-pending-per-source undecided connections per source address, --max-handshakes in
 * total (over either: closed at once), and --handshake-timeout-ms to send the bytes that
 * decide (then closed). */
#ifndef DVV_ONEPORT_H
#define DVV_ONEPORT_H

#include <stddef.h>
#include <stdint.h>

struct relay;

#define ONEPORT_PEEK_MAX 8

enum oneport_kind {
	ONEPORT_MORE,	/* not decided yet: wait for more bytes */
	ONEPORT_PLAYER,
	ONEPORT_AGENT,
	ONEPORT_BAD,	/* none of the above: close */
};

/* What the first n bytes of a connection are. Pure; n may be 0. Decides within 4 bytes. */
enum oneport_kind oneport_classify(const uint8_t *b, size_t n);

/* Listen on r->cfg.one_port and route connections as above. 0 or -errno. */
int oneport_start(struct relay *r);
/* Close the listener and every undecided connection. Safe when never started. */
void oneport_stop(struct relay *r);

#endif
