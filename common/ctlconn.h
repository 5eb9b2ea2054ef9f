/* A control channel over non-blocking TLS (OpenSSL): framing, bounded buffers, and dispatch of
 * decoded messages. Used by the relay (server side) and the agent (client side). */
#ifndef DVV_CTLCONN_H
#define DVV_CTLCONN_H

#include "proto.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#define CTL_OUT_MAX (64 * 1024) /* a peer that does not read its control channel is cut */
/* a full-size frame fits behind up to ~32 KiB of queued small frames (PINGs, ATTACHes) */
_Static_assert(CTL_OUT_MAX - (CTL_HDR_LEN + CTL_PAYLOAD_MAX) >= 32 * 1024 - CTL_HDR_LEN,
	       "the control queue must hold a full-size frame");

struct ctl_conn;
/* Called for each decoded frame. Return 0 to go on, non-zero to stop reading (e.g. closed). */
typedef int (*ctl_msg_cb)(struct ctl_conn *c, const struct ctl_msg *m);

struct ctl_conn {
	SSL *ssl;
	int fd;
	bool handshake_done;
	bool shut;	      /* no more sends accepted */
	ctl_msg_cb on_msg;
	void *data;
	/* Buffers are allocated only while they hold bytes: an idle control channel (the common
	 * case, tens of thousands per relay) costs no buffer memory here, and OpenSSL's own record
	 * buffers are released too (SSL_MODE_RELEASE_BUFFERS). */
	size_t inlen, incap, outlen, outcap;
	uint8_t *in;  /* partial frame carried between reads: only its bytes, < one frame */
	uint8_t *out; /* queued frames, up to CTL_OUT_MAX */
	char err[192];	      /* why the connection failed, for logs; never secrets */
	/* Fairness: with max_frames > 0, one ctl_conn_io dispatches at most that many frames and
	 * sets more when it stopped early. The rest stays in c->in and in OpenSSL's buffer, where
	 * epoll cannot see it: the owner calls ctl_conn_io again on a later loop turn (a 0 ms
	 * timer), so one chatty peer cannot hold the loop. 0 (the default) = no limit. */
	unsigned max_frames;
	bool more;
};

/* Takes ownership of fd's TLS session (not of fd). */
int ctl_conn_init(struct ctl_conn *c, SSL_CTX *ctx, int fd, bool server, const char *sni);
void ctl_conn_free(struct ctl_conn *c);

/* Drive the connection after epoll reported readiness (or right after init): handshake, flush,
 * read and dispatch (bounded by max_frames; see more). Returns the epoll events to wait for next (EPOLLIN and maybe EPOLLOUT), or a
 * negative errno when the connection is finished (-ECONNRESET on EOF, details in c->err). */
int ctl_conn_io(struct ctl_conn *c);
/* Queue a message; it is written by the next ctl_conn_io (call it, or ctl_conn_flush). */
int ctl_conn_send(struct ctl_conn *c, const struct ctl_msg *m);
int ctl_conn_flush(struct ctl_conn *c); /* same return as ctl_conn_io but never reads */
bool ctl_conn_wants_write(const struct ctl_conn *c);

/* TLS contexts. Server: certificate chain + key. Client: verify against a CA file, a SHA-256
 * pin of the server's public key (SPKI), or the system store when both are NULL. */
SSL_CTX *tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen);
SSL_CTX *tls_client_ctx(const char *ca_file, const char *pin_hex, char *err, size_t errlen);
/* SHA-256 of the certificate's SubjectPublicKeyInfo, hex (65 bytes out). */
int tls_spki_sha256(X509 *cert, char out[65]);

#endif
