/* client/http.h: the agent's small HTTP/1.1 client for the DVV API (dvv login, dvv tunnels).
 *
 * Contract:
 *  - http:// and https:// URLs; https verifies the certificate chain (the system store, or
 *    --ca FILE for a private CA) and the host name (or IP address) in the URL.
 *  - one request per connection ("Connection: close"), GET/POST/PUT/DELETE, an optional JSON
 *    body and an optional bearer credential (never logged, wiped from the request buffer);
 *  - the response: Content-Length, chunked, or read to EOF; head at most HTTP_HEAD_MAX bytes,
 *    body at most HTTP_BODY_MAX (1 MiB) after de-chunking; redirects are not followed (a 3xx
 *    is returned as is, with its Location);
 *  - connect + TLS + request + response within HTTP_TIMEOUT_MS (10 s) in total. Name resolution
 *    is getaddrinfo's, which the deadline cannot interrupt.
 * Errors: -errno with a one-line reason in err (never containing a credential). */
#ifndef DVV_HTTP_H
#define DVV_HTTP_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX 16384
#define HTTP_BODY_MAX (1024 * 1024)
/* raw bytes on the wire: head + body + chunk framing; many tiny chunks hit this, not a loop */
#define HTTP_RAW_MAX (HTTP_HEAD_MAX + HTTP_BODY_MAX + 64 * 1024)
#define HTTP_TIMEOUT_MS 10000u
#define HTTP_LINE_MAX 1024 /* one chunk-size line or trailer line */

struct http_url {
	bool tls;
	char host[256]; /* without brackets for IPv6 */
	uint16_t port;
	char hostport[300]; /* what the Host header says: host[:port], [v6] bracketed */
	char path[1024];    /* "/" at least, with the query string */
};

/* Parse "http[s]://HOST[:PORT][/PATH]". No userinfo, no fragment. 0 or -EINVAL. */
int http_url_parse(const char *url, struct http_url *u, char *err, size_t errlen);

/* ---- the response parser (incremental; what the unit tests and the fuzzer drive) ---- */

enum http_body_mode { HTTP_BODY_NONE, HTTP_BODY_LENGTH, HTTP_BODY_CHUNKED, HTTP_BODY_EOF };

struct http_parser {
	/* input */
	bool head_request; /* a HEAD: no body whatever the headers say */
	/* results */
	int status;
	enum http_body_mode mode;
	uint64_t content_length;
	char content_type[128];
	char location[512];
	char retry_after[16];
	char *body; /* decoded, NUL-terminated, malloc'd (http_parser_free) */
	size_t body_len;
	bool done;
	/* state */
	uint8_t *raw; /* everything received, malloc'd, at most HTTP_RAW_MAX */
	size_t raw_len, raw_cap;
	size_t pos;	     /* raw consumed so far (head, then chunks) */
	uint64_t chunk_left; /* chunked: data bytes left in the current chunk */
	int cstate;	     /* chunked sub-state */
	size_t scan;	     /* where the search for the end of the head resumes */
	int failed;	     /* the error returned once, returned again */
};

void http_parser_init(struct http_parser *p, bool head_request);
/* Append n received bytes (n == 0 with eof: the peer closed). Returns 1 when the response is
 * complete (fields above valid), 0 when more is needed, -EMSGSIZE (head or body over its cap),
 * -EPROTO (not HTTP, bad framing, or the peer closed early), -ENOMEM; err says which. After a
 * nonzero return, further input is refused. */
int http_parser_input(struct http_parser *p, const uint8_t *data, size_t n, bool eof, char *err,
		      size_t errlen);
void http_parser_free(struct http_parser *p);

/* ---- the client ---- */

struct http_resp {
	int status;
	char *body; /* NUL-terminated JSON text (or whatever the server sent), malloc'd */
	size_t body_len;
	char content_type[128];
	char location[512];
	char retry_after[16];
};

struct http_opts {
	const char *ca_file;  /* NULL: the system store */
	uint32_t timeout_ms;  /* 0: HTTP_TIMEOUT_MS */
};

/* One request. body may be NULL (then no Content-Type/Length); bearer NULL for none. 0 with
 * *out filled (any status), or -errno with the reason in err. */
int http_request(const struct http_opts *o, const char *method, const char *url,
		 const char *bearer, const char *body, struct http_resp *out, char *err,
		 size_t errlen);
void http_resp_free(struct http_resp *r);

/* A TLS client context that verifies peers against ca_pem (PEM text in memory, one or more
 * certificates), ca_file, or else the system store (the usual bundle paths, for the static
 * binary). NULL with err set. The agent uses it for a relay CA stored by dvv login. */
SSL_CTX *http_tls_ctx(const char *ca_file, const char *ca_pem, char *err, size_t errlen);
/* The system CA bundle to use when none is given (NULL: OpenSSL's default paths). */
const char *http_system_ca_bundle(void);

#endif
