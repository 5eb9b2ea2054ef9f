/* Socket helpers shared by relay and agent: address parsing, non-blocking listen/connect. */
#ifndef DVV_NET_H
#define DVV_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct net_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* "1.2.3.4:5", "[::1]:5", "host:5" (host resolved with getaddrinfo: blocking, so only at
 * start-up or in the agent's connect path, never in the relay's loop). */
int net_parse_addr(const char *s, struct net_addr *out, bool resolve, char *err, size_t errlen);
/* Split "host:port" / "[v6]:port" into parts. */
int net_split_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);
void net_addr_fmt(const struct sockaddr *sa, char *out, size_t outlen); /* "1.2.3.4:5" / "[::1]:5" */
uint16_t net_addr_port(const struct sockaddr *sa);

int net_listen(const struct net_addr *a, int backlog, char *err, size_t errlen);
int net_connect(const struct net_addr *a, int *fd_out); /* non-blocking; 0 or -EINPROGRESS ok */
int net_set_nonblock(int fd);
int net_so_error(int fd);
void net_tune_stream(int fd); /* TCP_NODELAY + keepalive: game traffic is latency bound */

/* Queue bounds for a socket that relays one game connection (docs/operators.md "Queue bounds").
 * A game sends everything on one connection, so every byte queued in front of the player is
 * lag: with the kernel's defaults a relayed connection held several MiB in send buffers and
 * autotuned receive buffers when the player's downlink was the bottleneck, against well under
 * 1 MiB on a routed path. Both bounds only limit what waits; a fast path is not slowed.
 *   notsent_lowat  TCP_NOTSENT_LOWAT: the socket stops being writable (and splice, sendmsg and
 *                  the kernel's sockmap worker stop adding to it) once this many bytes wait
 *                  unsent; bytes in flight are not counted, so throughput is unaffected. 0 =
 *                  the kernel's default (only the send buffer bounds it).
 *   rcvbuf         SO_RCVBUF for a hop whose reader can stop reading because its own output is
 *                  full (the agent's connection to the local server): what the peer can push
 *                  in ahead of that. Turns autotuning off, so use it only where the round trip
 *                  is short. 0 = autotuning.
 *   mss            TCP_MAXSEG, the segment size this end advertises (set before connect: see
 *                  net_connect_bounded). The PEER's kernel sizes its send buffer as 2 x its
 *                  congestion window in segments x each segment's memory, the segment plus
 *                  ~640 bytes of headers rounded up to a power of two: over loopback (64 KiB
 *                  segments, 128 KiB each, ten at connection start) ~2.6 MiB before any data
 *                  moves. The local server's options are not ours to set, but a segment just
 *                  under a power of two less that overhead (7168: 8 KiB each) halves its memory
 *                  per byte against 8192 (16 KiB each). 0 = the route's MSS.
 * Returns 0 or the first -errno (the socket stays usable either way). */
struct net_queue_opts {
	int notsent_lowat;
	int rcvbuf;
	int mss;
};
#define NET_NOTSENT_LOWAT_KB_DEFAULT 64 /* --notsent-lowat-kb, relay and agent */
#define NET_LOCAL_RCVBUF_KB_DEFAULT 0 /* the agent's --local-rcvbuf-kb: off, see NET_LOCAL_MSS_DEFAULT */
#define NET_LOCAL_MSS_DEFAULT 0 /* --local-mss: off by default (with --local-rcvbuf-kb) until
				  * tests/e2e/bytes.test.mjs passes with them: its 1 GiB each way
				  * through the bpf plane was reset with 7168 / 64 */
int net_bound_queue(int fd, const struct net_queue_opts *o);
/* net_connect with the bounds applied before connect(), so the SYN already carries the MSS
 * and the window scale that rcvbuf implies. Same returns as net_connect. */
int net_connect_bounded(const struct net_addr *a, const struct net_queue_opts *o, int *fd_out);

/* Keepalive for long-lived connections that may sit idle behind NAT or a stateful firewall
 * (control channel, pooled data connections, relay-to-relay): probes after idle_s of silence,
 * every NET_KEEPALIVE_INTVL_S, dead after NET_KEEPALIVE_CNT unanswered, and unacknowledged
 * data fails the connection after NET_USER_TIMEOUT_MS. 0 or -errno. */
#define NET_KEEPALIVE_IDLE_S 15
#define NET_KEEPALIVE_INTVL_S 5
#define NET_KEEPALIVE_CNT 3
#define NET_USER_TIMEOUT_MS 30000
int net_keepalive(int fd, int idle_s);
/* Send buf[*off..len) on a non-blocking socket, advancing *off: 0 once all of it is sent,
 * -EAGAIN to wait for EPOLLOUT, or -errno (-EPIPE if the peer took nothing). */
int net_send_rest(int fd, const void *buf, size_t len, size_t *off);

/* Every address "host:port" resolves to (DNS round robin, IPv4 and IPv6), duplicates dropped,
 * in getaddrinfo's order, at most max. A numeric host gives one. Blocking like net_parse_addr.
 * Returns the count (>= 1) or -errno with the reason in err. */
int net_resolve_all(const char *s, struct net_addr *out, size_t max, char *err, size_t errlen);

/* Random bytes from getrandom(2); aborts only if the kernel cannot give them. */
void rand_bytes(void *buf, size_t n);
uint64_t rand_u64(void);
void hex_encode(const uint8_t *in, size_t n, char *out); /* out holds 2n+1 */
int hex_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap); /* bytes or -1 */
/* One base64url character's value (0..63), or -1. */
int b64url_value(unsigned char c);
/* Strict base64url without padding (JWT segments): bytes written to out, or -1 for a length
 * that cannot occur, a character outside the alphabet, non-zero unused bits or over cap. */
long b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/* Keyed hash for tables indexed by attacker-chosen strings (SipHash-1-3). */
uint64_t hash_bytes(const uint64_t key[2], const void *data, size_t len);

#endif
