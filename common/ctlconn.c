/* The TLS control channel (ctlconn.h): non-blocking OpenSSL I/O, frame reassembly, the bounded
 * outgoing queue, and dispatch of decoded messages. */
#include "ctlconn.h"
#include "log.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

static void ssl_errstr(char *out, size_t outlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[160] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	else if (errno)
		snprintf(buf, sizeof(buf), "%s", strerror(errno));
	snprintf(out, outlen, "%s: %s", what, buf[0] ? buf : "connection closed");
	ERR_clear_error();
}

int ctl_conn_init(struct ctl_conn *c, SSL_CTX *ctx, int fd, bool server, const char *sni)
{
	c->fd = fd;
	c->inlen = c->incap = c->outlen = c->outcap = 0;
	c->in = c->out = NULL;
	c->handshake_done = false;
	c->shut = false;
	c->err[0] = 0;
	c->max_frames = 0;
	c->more = false;
	c->ssl = SSL_new(ctx);
	if (!c->ssl)
		return -ENOMEM;
	SSL_set_fd(c->ssl, fd);
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				     SSL_MODE_RELEASE_BUFFERS);
	if (server) {
		SSL_set_accept_state(c->ssl);
	} else {
		SSL_set_connect_state(c->ssl);
		if (sni && *sni) {
			/* hostname (or IP) check against the certificate, on top of chain checks;
			 * SNI only for names (RFC 6066 forbids IP literals there) */
			X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
			X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			if (!X509_VERIFY_PARAM_set1_ip_asc(vp, sni)) {
				SSL_set_tlsext_host_name(c->ssl, sni);
				SSL_set1_host(c->ssl, sni);
			}
		}
	}
	return 0;
}

void ctl_conn_free(struct ctl_conn *c)
{
	if (c->ssl)
		SSL_free(c->ssl);
	c->ssl = NULL;
	free(c->in);
	free(c->out);
	c->in = c->out = NULL;
	c->inlen = c->incap = c->outlen = c->outcap = 0;
}

bool ctl_conn_wants_write(const struct ctl_conn *c) { return c->outlen > 0; }

int ctl_conn_send(struct ctl_conn *c, const struct ctl_msg *m)
{
	if (c->shut)
		return -EPIPE;
	/* One frame can be 32 KiB: encode it outside the stack (ctl_conn_send runs inside on_msg,
	 * on top of ctl_conn_io's read buffer). Not reentrant, so one per thread is enough. */
	static _Thread_local uint8_t frame[CTL_HDR_LEN + CTL_PAYLOAD_MAX];
	int n = ctl_encode(m, frame, sizeof(frame));
	if (n < 0)
		return n;
	if (c->outlen + (size_t)n > CTL_OUT_MAX) {
		snprintf(c->err, sizeof(c->err), "peer not reading its control channel (%zu bytes queued)",
			 c->outlen);
		return -ENOBUFS;
	}
	if (c->outlen + (size_t)n > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 1024;
		while (cap < c->outlen + (size_t)n)
			cap *= 2;
		if (cap > CTL_OUT_MAX)
			cap = CTL_OUT_MAX;
		uint8_t *o = realloc(c->out, cap);
		if (!o)
			return -ENOMEM;
		c->out = o;
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, frame, (size_t)n);
	c->outlen += (size_t)n;
	return 0;
}

/* Returns 0 progress/done, 1 blocked wanting read, 2 blocked wanting write, <0 error. */
static int do_handshake(struct ctl_conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->handshake_done = true;
		return 0;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		return 1;
	if (e == SSL_ERROR_WANT_WRITE)
		return 2;
	long vr = SSL_get_verify_result(c->ssl);
	if (vr != X509_V_OK)
		snprintf(c->err, sizeof(c->err), "TLS handshake: certificate verify failed: %s",
			 X509_verify_cert_error_string(vr));
	else
		ssl_errstr(c->err, sizeof(c->err), "TLS handshake");
	return -ECONNABORTED;
}

static int flush_out(struct ctl_conn *c, bool *want_read)
{
	while (c->outlen) {
		ERR_clear_error();
		int w = SSL_write(c->ssl, c->out, (int)c->outlen);
		if (w > 0) {
			memmove(c->out, c->out + w, c->outlen - (size_t)w);
			c->outlen -= (size_t)w;
			continue;
		}
		int e = SSL_get_error(c->ssl, w);
		if (e == SSL_ERROR_WANT_WRITE)
			return 0;
		if (e == SSL_ERROR_WANT_READ) {
			*want_read = true;
			return 0;
		}
		ssl_errstr(c->err, sizeof(c->err), "TLS write");
		return -EPIPE;
	}
	free(c->out);
	c->out = NULL;
	c->outcap = 0;
	return 0;
}

static uint32_t want_events(const struct ctl_conn *c)
{
	return EPOLLIN | EPOLLRDHUP | (c->outlen ? EPOLLOUT : 0);
}

int ctl_conn_flush(struct ctl_conn *c)
{
	if (!c->handshake_done) {
		int h = do_handshake(c);
		if (h < 0)
			return h;
		if (h == 1)
			return EPOLLIN | EPOLLRDHUP;
		if (h == 2)
			return EPOLLIN | EPOLLOUT | EPOLLRDHUP;
	}
	bool wr = false;
	int rc = flush_out(c, &wr);
	return rc < 0 ? rc : (int)want_events(c);
}

int ctl_conn_io(struct ctl_conn *c)
{
	if (!c->handshake_done) {
		int h = do_handshake(c);
		if (h < 0)
			return h;
		if (h == 1)
			return EPOLLIN | EPOLLRDHUP;
		if (h == 2)
			return EPOLLIN | EPOLLOUT | EPOLLRDHUP;
	}
	bool wr = false;
	int rc = flush_out(c, &wr);
	if (rc < 0)
		return rc;
	/* Work in a stack buffer (main thread, about 48 KiB): the carried partial frame first, then
	 * what TLS gives us, at least one TLS record of room behind the largest partial frame. */
	uint8_t buf[CTL_HDR_LEN + CTL_PAYLOAD_MAX + 16384];
	size_t len = c->inlen;
	unsigned frames = 0;
	bool eof = false;
	c->more = false;
	if (len)
		memcpy(buf, c->in, len);
	/* frames carried over from a bounded call are dispatched before anything is read, so
	 * the buffer always has room for at least one TLS record when SSL_read runs */
	for (;;) {
		/* dispatch every complete frame, up to max_frames per call */
		size_t off = 0;
		for (;;) {
			if (c->max_frames && frames >= c->max_frames) {
				c->more = true;
				break;
			}
			struct ctl_msg m;
			size_t used = 0;
			char e2[160];
			int d = ctl_decode(buf + off, len - off, &m, &used, e2, sizeof(e2));
			if (d == CTL_NEED_MORE)
				break;
			if (d < 0) {
				snprintf(c->err, sizeof(c->err), "protocol error: %s", e2);
				return d;
			}
			off += used;
			frames++;
			if (c->on_msg(c, &m))
				return -ECANCELED; /* the owner is closing the connection */
		}
		memmove(buf, buf + off, len - off);
		len -= off;
		if (c->more)
			break; /* the rest (maybe an EOF too) is seen on the next call */
		if (eof)
			return -ECONNRESET;
		ERR_clear_error();
		int r = SSL_read(c->ssl, buf + len, (int)(sizeof(buf) - len));
		if (r <= 0) {
			int e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				break;
			if (e == SSL_ERROR_ZERO_RETURN)
				snprintf(c->err, sizeof(c->err), "peer closed the control channel");
			else
				ssl_errstr(c->err, sizeof(c->err), "TLS read");
			eof = true;
		} else {
			len += (size_t)r;
		}
	}
	/* carry a partial frame (< one frame), or after a bounded call the frames not dispatched
	 * yet. Only the bytes that arrived are kept: a peer that announces a 32 KiB frame and
	 * stalls costs what it sent, not a whole frame. */
	if (len) {
		size_t cap = (len + 511) & ~(size_t)511;
		if (cap != c->incap) {
			uint8_t *p = realloc(c->in, cap);
			if (!p)
				return -ENOMEM;
			c->in = p;
			c->incap = cap;
		}
		memcpy(c->in, buf, len);
	} else {
		free(c->in);
		c->in = NULL;
		c->incap = 0;
	}
	c->inlen = len;
	rc = flush_out(c, &wr);
	if (rc < 0)
		return rc;
	return (int)want_events(c);
}

/* ---- TLS contexts ---- */

SSL_CTX *tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	/* No session resumption: agents never offer a session, and the reconnect storm that would
	 * gain from it follows a relay restart, whose new process could not decrypt the old one's
	 * tickets anyway. So no TLS 1.3 tickets are made and sent (two per handshake by default),
	 * and no session is kept in a server-side cache. */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		ssl_errstr(err, errlen, cert);
		goto free;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ssl_errstr(err, errlen, key);
		goto free;
	}
	return ctx;
fail:
	ssl_errstr(err, errlen, "SSL_CTX_new");
free:
	SSL_CTX_free(ctx);
	return NULL;
}

int tls_spki_sha256(X509 *cert, char out[65])
{
	unsigned char *der = NULL, md[32];
	int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
	if (n <= 0)
		return -EINVAL;
	unsigned int mdlen = 0;
	EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
	OPENSSL_free(der);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* Pin check: the leaf's SPKI hash must equal the configured pin; chain trust is not needed. */
static int pin_verify_cb(X509_STORE_CTX *xs, void *arg)
{
	const char *pin = arg;
	X509 *leaf = X509_STORE_CTX_get0_cert(xs);
	char got[65];
	if (!leaf || tls_spki_sha256(leaf, got))
		return 0;
	if (CRYPTO_memcmp(got, pin, 64) != 0) {
		X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_REJECTED);
		return 0;
	}
	return 1;
}

SSL_CTX *tls_client_ctx(const char *ca_file, const char *pin_hex, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		ssl_errstr(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (pin_hex) {
		static char pin[65];
		size_t n = strlen(pin_hex);
		if (n != 64 || strspn(pin_hex, "0123456789abcdefABCDEF") != 64) {
			snprintf(err, errlen, "--pin wants 64 hex chars (SHA-256 of the SPKI)");
			SSL_CTX_free(ctx);
			return NULL;
		}
		for (size_t i = 0; i < 64; i++)
			pin[i] = (char)((pin_hex[i] >= 'A' && pin_hex[i] <= 'F') ? pin_hex[i] + 32
										  : pin_hex[i]);
		pin[64] = 0;
		SSL_CTX_set_cert_verify_callback(ctx, pin_verify_cb, pin);
	} else if (ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			ssl_errstr(err, errlen, ca_file);
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		ssl_errstr(err, errlen, "system CA store");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}
