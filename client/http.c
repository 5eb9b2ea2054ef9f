/* The agent's HTTP/1.1 client for the DVV API: URL parsing, an incremental response parser
 * (bounded, strict framing) and one blocking request over TCP or verified TLS within a total
 * deadline. Hand-written on OpenSSL rather than libcurl: the static release binary would grow
 * by libcurl and everything it links (client/README.md says more). */
#include "http.h"
#include "agent.h"
#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- URL ---- */

int http_url_parse(const char *url, struct http_url *u, char *err, size_t errlen)
{
	memset(u, 0, sizeof(*u));
	const char *p;
	if (!strncasecmp(url, "https://", 8)) {
		u->tls = true;
		p = url + 8;
	} else if (!strncasecmp(url, "http://", 7)) {
		p = url + 7;
	} else {
		snprintf(err, errlen, "'%s' is not an http:// or https:// URL", url);
		return -EINVAL;
	}
	size_t alen = strcspn(p, "/?#");
	const char *rest = p + alen;
	if (*rest == '#' || strchr(rest, '#')) {
		snprintf(err, errlen, "URL '%s': a fragment (#) has no place here", url);
		return -EINVAL;
	}
	char auth[300];
	if (alen == 0 || alen >= sizeof(auth) || memchr(p, '@', alen)) {
		snprintf(err, errlen, "URL '%s': want http[s]://HOST[:PORT][/PATH]", url);
		return -EINVAL;
	}
	memcpy(auth, p, alen);
	auth[alen] = 0;
	const char *host = auth, *port = NULL;
	char *end;
	if (auth[0] == '[') {
		end = strchr(auth, ']');
		if (!end || (end[1] && end[1] != ':')) {
			snprintf(err, errlen, "URL '%s': bad [IPv6] address", url);
			return -EINVAL;
		}
		*end = 0;
		host = auth + 1;
		if (end[1] == ':')
			port = end + 2;
		struct in6_addr a6;
		if (inet_pton(AF_INET6, host, &a6) != 1) {
			snprintf(err, errlen, "URL '%s': bad [IPv6] address", url);
			return -EINVAL;
		}
	} else {
		end = strchr(auth, ':');
		if (end) {
			*end = 0;
			port = end + 1;
		}
	}
	if (!*host || strlen(host) >= sizeof(u->host)) {
		snprintf(err, errlen, "URL '%s': no host", url);
		return -EINVAL;
	}
	for (const char *c = host; *c; c++)
		if (!isalnum((unsigned char)*c) && !strchr(".-_:", *c)) {
			snprintf(err, errlen, "URL '%s': bad character in the host", url);
			return -EINVAL;
		}
	memcpy(u->host, host, strlen(host) + 1); /* length checked above */
	u->port = u->tls ? 443 : 80;
	if (port) {
		char *e;
		errno = 0;
		unsigned long v = strtoul(port, &e, 10);
		if (!*port || *e || errno || v == 0 || v > 65535 || !isdigit((unsigned char)*port)) {
			snprintf(err, errlen, "URL '%s': bad port", url);
			return -EINVAL;
		}
		u->port = (uint16_t)v;
	}
	bool v6 = strchr(u->host, ':') != NULL;
	bool dflt = u->port == (u->tls ? 443 : 80);
	if (dflt)
		snprintf(u->hostport, sizeof(u->hostport), "%s%s%s", v6 ? "[" : "", u->host,
			 v6 ? "]" : "");
	else
		snprintf(u->hostport, sizeof(u->hostport), "%s%s%s:%u", v6 ? "[" : "", u->host,
			 v6 ? "]" : "", (unsigned)u->port);
	if (strlen(rest) + 1 >= sizeof(u->path)) {
		snprintf(err, errlen, "URL '%s': path too long", url);
		return -EINVAL;
	}
	for (const char *c = rest; *c; c++)
		if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
			snprintf(err, errlen, "URL '%s': spaces or control bytes in the path", url);
			return -EINVAL;
		}
	u->path[0] = '/';
	memcpy(u->path + (*rest == '/' ? 0 : 1), rest, strlen(rest) + 1);
	return 0;
}

/* ---- response parser ---- */

enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER };

void http_parser_init(struct http_parser *p, bool head_request)
{
	memset(p, 0, sizeof(*p));
	p->head_request = head_request;
}

void http_parser_free(struct http_parser *p)
{
	free(p->raw);
	free(p->body);
	p->raw = NULL;
	p->body = NULL;
	p->raw_len = p->raw_cap = p->body_len = 0;
}

static int fail(struct http_parser *p, int rc, char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int fail(struct http_parser *p, int rc, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	p->failed = rc;
	return rc;
}

/* The next line in raw[from, raw_len): its length without the line end, *next after it.
 * -1 when no LF yet. A line ends in LF, optionally preceded by CR (RFC 9112 2.2 lets a
 * recipient accept a bare LF). */
static ssize_t line_at(const struct http_parser *p, size_t from, size_t *next)
{
	const uint8_t *lf = memchr(p->raw + from, '\n', p->raw_len - from);
	if (!lf)
		return -1;
	size_t end = (size_t)(lf - p->raw);
	*next = end + 1;
	if (end > from && p->raw[end - 1] == '\r')
		end--;
	return (ssize_t)(end - from);
}

static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = 0;
}

/* One header line (no line end). 0 or the error. */
static int header_line(struct http_parser *p, const char *l, size_t n, bool *have_cl, char *err,
		       size_t errlen)
{
	if (l[0] == ' ' || l[0] == '\t')
		return fail(p, -EPROTO, err, errlen, "folded header line in the response");
	const char *colon = memchr(l, ':', n);
	if (!colon || colon == l)
		return fail(p, -EPROTO, err, errlen, "malformed header line in the response");
	size_t nlen = (size_t)(colon - l);
	for (size_t i = 0; i < nlen; i++)
		if (!isalnum((unsigned char)l[i]) && !strchr("!#$%&'*+-.^_`|~", l[i]))
			return fail(p, -EPROTO, err, errlen, "bad header name in the response");
	const char *v = colon + 1, *e = l + n;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	size_t vlen = (size_t)(e - v);
	for (size_t i = 0; i < vlen; i++)
		if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
			return fail(p, -EPROTO, err, errlen, "control byte in a response header");
#define IS(name) (nlen == sizeof(name) - 1 && !strncasecmp(l, name, nlen))
	if (IS("Content-Length")) {
		if (vlen == 0 || vlen > 19)
			return fail(p, -EPROTO, err, errlen, "bad Content-Length");
		uint64_t cl = 0;
		for (size_t i = 0; i < vlen; i++) {
			if (!isdigit((unsigned char)v[i]))
				return fail(p, -EPROTO, err, errlen, "bad Content-Length");
			cl = cl * 10 + (uint64_t)(v[i] - '0');
		}
		if (*have_cl && cl != p->content_length)
			return fail(p, -EPROTO, err, errlen, "conflicting Content-Length headers");
		*have_cl = true;
		p->content_length = cl;
	} else if (IS("Transfer-Encoding")) {
		if (vlen != 7 || strncasecmp(v, "chunked", 7))
			return fail(p, -EPROTO, err, errlen,
				    "unsupported Transfer-Encoding '%.*s' in the response",
				    (int)(vlen > 40 ? 40 : vlen), v);
		p->mode = HTTP_BODY_CHUNKED;
	} else if (IS("Content-Type")) {
		copy_value(p->content_type, sizeof(p->content_type), v, vlen);
	} else if (IS("Location")) {
		copy_value(p->location, sizeof(p->location), v, vlen);
	} else if (IS("Retry-After")) {
		copy_value(p->retry_after, sizeof(p->retry_after), v, vlen);
	}
#undef IS
	return 0;
}

/* raw[pos, head_end) is a complete head (line ends included, the empty line too). */
static int parse_head(struct http_parser *p, size_t head_end, char *err, size_t errlen)
{
	size_t at = p->pos, next;
	ssize_t n = line_at(p, at, &next);
	const char *l = (const char *)p->raw + at;
	if (n < 12 || (strncmp(l, "HTTP/1.1 ", 9) && strncmp(l, "HTTP/1.0 ", 9)) ||
	    !isdigit((unsigned char)l[9]) || !isdigit((unsigned char)l[10]) ||
	    !isdigit((unsigned char)l[11]) || (n > 12 && l[12] != ' '))
		return fail(p, -EPROTO, err, errlen, "not an HTTP/1.x response");
	p->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
	if (p->status < 100 || p->status > 599)
		return fail(p, -EPROTO, err, errlen, "HTTP status %d out of range", p->status);
	for (size_t i = 12; i < (size_t)n; i++)
		if (((unsigned char)l[i] < 0x20 && l[i] != '\t') || l[i] == 0x7f)
			return fail(p, -EPROTO, err, errlen, "control byte in the status line");
	p->mode = HTTP_BODY_EOF;
	p->content_length = 0;
	p->content_type[0] = p->location[0] = p->retry_after[0] = 0;
	bool have_cl = false;
	at = next;
	while (at < head_end) {
		n = line_at(p, at, &next);
		if (n <= 0)
			break; /* the empty line: end of the head */
		int rc = header_line(p, (const char *)p->raw + at, (size_t)n, &have_cl, err, errlen);
		if (rc)
			return rc;
		at = next;
	}
	if (p->mode != HTTP_BODY_CHUNKED && have_cl)
		p->mode = HTTP_BODY_LENGTH;
	if (p->head_request || p->status == 204 || p->status == 304 || p->status < 200)
		p->mode = HTTP_BODY_NONE;
	if (p->mode == HTTP_BODY_LENGTH && p->content_length > HTTP_BODY_MAX)
		return fail(p, -EMSGSIZE, err, errlen,
			    "response body of %llu bytes is over the %d-byte limit",
			    (unsigned long long)p->content_length, HTTP_BODY_MAX);
	p->pos = head_end;
	return 0;
}

/* Find the end of the head (an empty line) from p->scan. Returns its end offset or 0. */
static size_t head_end(struct http_parser *p)
{
	size_t i = p->scan > p->pos ? p->scan : p->pos;
	for (; i < p->raw_len; i++) {
		if (p->raw[i] != '\n')
			continue;
		/* "\n\n" or "\n\r\n" ends the head */
		if (i + 1 < p->raw_len && p->raw[i + 1] == '\n')
			return i + 2;
		if (i + 2 < p->raw_len && p->raw[i + 1] == '\r' && p->raw[i + 2] == '\n')
			return i + 3;
		if (i + 2 >= p->raw_len) {
			p->scan = i; /* look at this LF again once more bytes arrived */
			return 0;
		}
	}
	p->scan = i;
	return 0;
}

static int body_append(struct http_parser *p, const uint8_t *d, size_t n, char *err, size_t errlen)
{
	if (p->body_len + n > HTTP_BODY_MAX)
		return fail(p, -EMSGSIZE, err, errlen, "response body over the %d-byte limit",
			    HTTP_BODY_MAX);
	char *b = realloc(p->body, p->body_len + n + 1);
	if (!b)
		return fail(p, -ENOMEM, err, errlen, "out of memory for the response");
	p->body = b;
	memcpy(b + p->body_len, d, n);
	p->body_len += n;
	b[p->body_len] = 0;
	return 0;
}

static int finish(struct http_parser *p, char *err, size_t errlen)
{
	if (!p->body) {
		int rc = body_append(p, (const uint8_t *)"", 0, err, errlen);
		if (rc)
			return rc;
	}
	p->done = true;
	return 1;
}

/* Chunked body from p->pos. 1 done, 0 more, or the error. */
static int chunked(struct http_parser *p, bool eof, char *err, size_t errlen)
{
	for (;;) {
		size_t avail = p->raw_len - p->pos, next;
		ssize_t n;
		switch (p->cstate) {
		case CH_SIZE:
		case CH_TRAILER:
			n = line_at(p, p->pos, &next);
			if (n < 0) {
				/* no LF yet: a CR at the end may be the line end, not content,
				 * so a line of exactly HTTP_LINE_MAX bytes is judged the same
				 * whether its CR and LF arrive together or apart */
				size_t have = avail;
				if (have && p->raw[p->raw_len - 1] == '\r')
					have--;
				if (have > HTTP_LINE_MAX)
					return fail(p, -EPROTO, err, errlen,
						    "chunk line longer than %d bytes", HTTP_LINE_MAX);
				goto more;
			}
			if ((size_t)n > HTTP_LINE_MAX)
				return fail(p, -EPROTO, err, errlen, "chunk line longer than %d bytes",
					    HTTP_LINE_MAX);
			if (p->cstate == CH_TRAILER) {
				p->pos = next;
				if (n == 0)
					return finish(p, err, errlen);
				continue; /* a trailer field: ignored */
			}
			{
				const char *l = (const char *)p->raw + p->pos;
				uint64_t sz = 0;
				ssize_t i = 0;
				for (; i < n && isxdigit((unsigned char)l[i]); i++) {
					if (i >= 15)
						return fail(p, -EPROTO, err, errlen,
							    "chunk size too large");
					int c = tolower((unsigned char)l[i]);
					sz = sz * 16 + (uint64_t)(isdigit(c) ? c - '0' : c - 'a' + 10);
				}
				if (i == 0)
					return fail(p, -EPROTO, err, errlen, "bad chunk size line");
				while (i < n && (l[i] == ' ' || l[i] == '\t'))
					i++;
				if (i < n && l[i] != ';')
					return fail(p, -EPROTO, err, errlen, "bad chunk size line");
				p->pos = next;
				if (sz == 0) {
					p->cstate = CH_TRAILER;
					continue;
				}
				if (p->body_len + sz > HTTP_BODY_MAX)
					return fail(p, -EMSGSIZE, err, errlen,
						    "response body over the %d-byte limit",
						    HTTP_BODY_MAX);
				p->chunk_left = sz;
				p->cstate = CH_DATA;
			}
			continue;
		case CH_DATA: {
			if (!avail)
				goto more;
			size_t take = avail < p->chunk_left ? avail : (size_t)p->chunk_left;
			int rc = body_append(p, p->raw + p->pos, take, err, errlen);
			if (rc)
				return rc;
			p->pos += take;
			p->chunk_left -= take;
			if (!p->chunk_left)
				p->cstate = CH_DATA_END;
			continue;
		}
		case CH_DATA_END:
			if (!avail)
				goto more;
			if (p->raw[p->pos] == '\n') {
				p->pos++;
			} else if (p->raw[p->pos] == '\r') {
				if (avail < 2)
					goto more;
				if (p->raw[p->pos + 1] != '\n')
					return fail(p, -EPROTO, err, errlen,
						    "chunk data not followed by CRLF");
				p->pos += 2;
			} else {
				return fail(p, -EPROTO, err, errlen, "chunk data not followed by CRLF");
			}
			p->cstate = CH_SIZE;
			continue;
		}
	}
more:
	if (eof)
		return fail(p, -EPROTO, err, errlen, "connection closed inside a chunked body");
	return 0;
}

static int advance(struct http_parser *p, bool eof, char *err, size_t errlen)
{
	while (!p->status || p->mode == HTTP_BODY_NONE) {
		size_t end = head_end(p);
		if (!end) {
			if (p->raw_len - p->pos > HTTP_HEAD_MAX)
				return fail(p, -EMSGSIZE, err, errlen,
					    "response head over %d bytes", HTTP_HEAD_MAX);
			if (eof)
				return fail(p, -EPROTO, err, errlen,
					    p->raw_len ? "connection closed inside the response head"
						       : "connection closed without a response");
			return 0;
		}
		if (end - p->pos > HTTP_HEAD_MAX)
			return fail(p, -EMSGSIZE, err, errlen, "response head over %d bytes",
				    HTTP_HEAD_MAX);
		int rc = parse_head(p, end, err, errlen);
		if (rc)
			return rc;
		if (p->status >= 200)
			break;
		if (p->status == 101)
			return fail(p, -EPROTO, err, errlen, "unexpected protocol switch (101)");
		/* 1xx interim response: the real one follows */
		p->status = 0;
		p->mode = HTTP_BODY_NONE;
	}
	size_t avail = p->raw_len - p->pos;
	switch (p->mode) {
	case HTTP_BODY_NONE:
		return finish(p, err, errlen);
	case HTTP_BODY_LENGTH:
		if (avail >= p->content_length) {
			int rc = body_append(p, p->raw + p->pos, (size_t)p->content_length, err,
					     errlen);
			if (rc)
				return rc;
			p->pos += (size_t)p->content_length;
			return finish(p, err, errlen);
		}
		if (eof)
			return fail(p, -EPROTO, err, errlen,
				    "connection closed after %zu of %llu body bytes", avail,
				    (unsigned long long)p->content_length);
		return 0;
	case HTTP_BODY_EOF:
		if (avail > HTTP_BODY_MAX)
			return fail(p, -EMSGSIZE, err, errlen, "response body over the %d-byte limit",
				    HTTP_BODY_MAX);
		if (!eof)
			return 0;
		{
			int rc = body_append(p, p->raw + p->pos, avail, err, errlen);
			if (rc)
				return rc;
		}
		p->pos += avail;
		return finish(p, err, errlen);
	case HTTP_BODY_CHUNKED:
		return chunked(p, eof, err, errlen);
	}
	return fail(p, -EPROTO, err, errlen, "bad parser state");
}

int http_parser_input(struct http_parser *p, const uint8_t *data, size_t n, bool eof, char *err,
		      size_t errlen)
{
	if (p->failed) {
		snprintf(err, errlen, "response already failed");
		return p->failed;
	}
	if (p->done)
		return 1; /* bytes after a complete response are not ours (Connection: close) */
	if (n) {
		if (p->raw_len + n > HTTP_RAW_MAX)
			return fail(p, -EMSGSIZE, err, errlen, "response over %d bytes",
				    HTTP_RAW_MAX);
		if (p->raw_len + n > p->raw_cap) {
			size_t cap = p->raw_cap ? p->raw_cap : 4096;
			while (cap < p->raw_len + n)
				cap *= 2;
			if (cap > HTTP_RAW_MAX)
				cap = HTTP_RAW_MAX;
			uint8_t *r = realloc(p->raw, cap);
			if (!r)
				return fail(p, -ENOMEM, err, errlen, "out of memory for the response");
			p->raw = r;
			p->raw_cap = cap;
		}
		memcpy(p->raw + p->raw_len, data, n);
		p->raw_len += n;
	}
	return advance(p, eof, err, errlen);
}

/* ---- TLS ---- */

const char *http_system_ca_bundle(void)
{
	/* The static binary carries the OPENSSLDIR of the machine it was built on: on a
	 * distribution that keeps its CA bundle elsewhere the "system store" would be empty. */
	static const char *const paths[] = {
		"/etc/ssl/certs/ca-certificates.crt",		     /* Debian, Ubuntu, Alpine, Arch */
		"/etc/pki/tls/certs/ca-bundle.crt",		     /* Fedora, RHEL */
		"/etc/ssl/ca-bundle.pem",			     /* openSUSE */
		"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", /* RHEL 7+ */
		"/etc/ssl/cert.pem",				     /* Alpine, macOS-like */
	};
	if (getenv("SSL_CERT_FILE") || getenv("SSL_CERT_DIR"))
		return NULL; /* the user chose: OpenSSL honours these */
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], R_OK) == 0)
			return paths[i];
	return NULL;
}

static void ssl_err(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[200] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s: %s", what, buf[0] ? buf : "failed");
	ERR_clear_error();
}

SSL_CTX *http_tls_ctx(const char *ca_file, const char *ca_pem, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	BIO *bio = NULL;
	if (!ctx) {
		ssl_err(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (ca_pem) {
		/* every certificate of the PEM text, and nothing else, is trusted */
		X509_STORE *st = SSL_CTX_get_cert_store(ctx);
		bio = BIO_new_mem_buf(ca_pem, -1);
		int added = 0;
		X509 *x;
		while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
			if (X509_STORE_add_cert(st, x) == 1)
				added++;
			X509_free(x);
		}
		ERR_clear_error(); /* the end of the PEM text reads as an error */
		if (!added) {
			snprintf(err, errlen, "the stored relay CA (ca_pem) holds no certificate");
			goto fail;
		}
	} else if (ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			ssl_err(err, errlen, ca_file);
			goto fail;
		}
	} else {
		const char *b = http_system_ca_bundle();
		if ((b ? SSL_CTX_load_verify_locations(ctx, b, NULL)
		       : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
			ssl_err(err, errlen, "system CA store");
			goto fail;
		}
	}
	BIO_free(bio);
	return ctx;
fail:
	BIO_free(bio);
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- the request ---- */

struct http_conn {
	int fd;
	SSL *ssl;
	uint64_t deadline;
};

/* Wait for fd to become ready for ev before the deadline. 0, -ETIMEDOUT or -errno. */
static int wait_fd(const struct http_conn *c, short ev)
{
	for (;;) {
		uint64_t now = mono_ms();
		if (now >= c->deadline)
			return -ETIMEDOUT;
		struct pollfd pfd = {.fd = c->fd, .events = ev};
		int n = poll(&pfd, 1, (int)(c->deadline - now));
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int dial(struct http_conn *c, const struct http_url *u, char *err, size_t errlen)
{
	char port[8];
	snprintf(port, sizeof(port), "%u", (unsigned)u->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
	int g = getaddrinfo(u->host, port, &hints, &res);
	if (g) {
		snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(g));
		return -EHOSTUNREACH;
	}
	int rc = -ECONNREFUSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				ai->ai_protocol);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		c->fd = fd;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			rc = -errno;
		} else if (!(rc = wait_fd(c, POLLOUT))) {
			int e = 0;
			socklen_t l = sizeof(e);
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
			rc = -e;
		}
		if (!rc)
			break;
		close(fd);
		c->fd = -1;
		if (rc == -ETIMEDOUT)
			break; /* the whole request's time is spent */
	}
	freeaddrinfo(res);
	if (rc)
		snprintf(err, errlen, "connect to %s: %s", u->hostport,
			 rc == -ETIMEDOUT ? "timed out" : strerror(-rc));
	return rc;
}

/* Drive one SSL call that may want to read or write. ret is its return value. 1 retry,
 * 0 clean EOF (reads), or -errno. */
static int ssl_wait(struct http_conn *c, int ret)
{
	int e = SSL_get_error(c->ssl, ret);
	if (e == SSL_ERROR_WANT_READ)
		return wait_fd(c, POLLIN) ?: 1;
	if (e == SSL_ERROR_WANT_WRITE)
		return wait_fd(c, POLLOUT) ?: 1;
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	return -EPROTO;
}

static int tls_start(struct http_conn *c, SSL_CTX *ctx, const struct http_url *u, char *err,
		     size_t errlen)
{
	c->ssl = SSL_new(ctx);
	if (!c->ssl) {
		ssl_err(err, errlen, "SSL_new");
		return -ENOMEM;
	}
	SSL_set_fd(c->ssl, c->fd);
	X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	/* the certificate must name what the URL says: an IP as an IP SAN, a name as a DNS
	 * name; SNI only for names (RFC 6066) */
	if (!X509_VERIFY_PARAM_set1_ip_asc(vp, u->host)) {
		SSL_set_tlsext_host_name(c->ssl, u->host);
		SSL_set1_host(c->ssl, u->host);
	}
	for (;;) {
		int r = SSL_connect(c->ssl);
		if (r == 1)
			return 0;
		long v = SSL_get_verify_result(c->ssl);
		int w = ssl_wait(c, r);
		if (w == 1)
			continue;
		if (w == -ETIMEDOUT) {
			snprintf(err, errlen, "TLS handshake with %s: timed out", u->hostport);
		} else if (v != X509_V_OK) {
			snprintf(err, errlen, "TLS: the certificate of %s is not trusted: %s%s",
				 u->hostport, X509_verify_cert_error_string(v),
				 v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH
					 ? ""
					 : " (use --ca FILE for a private CA)");
			ERR_clear_error();
			return -EPERM;
		} else {
			ssl_err(err, errlen, "TLS handshake");
		}
		return w ? w : -EPROTO;
	}
}

static int send_all(struct http_conn *c, const char *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		if (c->ssl) {
			int r = SSL_write(c->ssl, buf + off, (int)(len - off));
			if (r > 0) {
				off += (size_t)r;
				continue;
			}
			int w = ssl_wait(c, r);
			if (w != 1)
				return w ? w : -EPIPE;
			continue;
		}
		ssize_t r = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
		if (r > 0) {
			off += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int w = wait_fd(c, POLLOUT);
			if (w)
				return w;
			continue;
		}
		return r < 0 ? -errno : -EPIPE;
	}
	return 0;
}

/* Read what is there: bytes, 0 at EOF, or -errno. */
static ssize_t recv_some(struct http_conn *c, uint8_t *buf, size_t cap)
{
	for (;;) {
		if (c->ssl) {
			int r = SSL_read(c->ssl, buf, (int)cap);
			if (r > 0)
				return r;
			int e = SSL_get_error(c->ssl, r);
			/* a peer that closes without close_notify: the framing (length, chunks)
			 * still tells a cut response from a whole one */
			if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL) {
				unsigned long le = ERR_peek_last_error();
				ERR_clear_error();
				if (e == SSL_ERROR_SYSCALL && errno == 0)
					return 0;
				if (ERR_GET_REASON(le) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
					return 0;
				return -EPROTO;
			}
			int w = ssl_wait(c, r);
			if (w != 1)
				return w;
			continue;
		}
		ssize_t r = recv(c->fd, buf, cap, 0);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int w = wait_fd(c, POLLIN);
		if (w)
			return w;
	}
}

void http_resp_free(struct http_resp *r)
{
	if (!r)
		return;
	free(r->body);
	memset(r, 0, sizeof(*r));
}

int http_request(const struct http_opts *o, const char *method, const char *url,
		 const char *bearer, const char *body, struct http_resp *out, char *err,
		 size_t errlen)
{
	struct http_url u;
	struct http_conn c = {.fd = -1};
	struct http_parser p;
	SSL_CTX *ctx = NULL;
	char *req = NULL;
	size_t cap = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	http_parser_init(&p, !strcmp(method, "HEAD"));
	if ((rc = http_url_parse(url, &u, err, errlen)))
		goto out;
	c.deadline = mono_ms() + (o && o->timeout_ms ? o->timeout_ms : HTTP_TIMEOUT_MS);
	if (u.tls && !(ctx = http_tls_ctx(o ? o->ca_file : NULL, NULL, err, errlen))) {
		rc = -EINVAL;
		goto out;
	}
	if ((rc = dial(&c, &u, err, errlen)))
		goto out;
	if (u.tls && (rc = tls_start(&c, ctx, &u, err, errlen)))
		goto out;

	size_t blen = body ? strlen(body) : 0;
	cap = 1024 + strlen(u.path) + (bearer ? strlen(bearer) : 0) + blen;
	req = malloc(cap);
	if (!req) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	int n = snprintf(req, cap,
			 "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: dvv/%s\r\n"
			 "Accept: application/json\r\nConnection: close\r\n",
			 method, u.path, u.hostport, AGENT_VERSION);
	if (bearer)
		n += snprintf(req + n, cap - (size_t)n, "Authorization: Bearer %s\r\n", bearer);
	if (body)
		n += snprintf(req + n, cap - (size_t)n,
			      "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
	n += snprintf(req + n, cap - (size_t)n, "\r\n");
	if (body) {
		memcpy(req + n, body, blen);
		n += (int)blen;
	}
	if ((rc = send_all(&c, req, (size_t)n))) {
		snprintf(err, errlen, "sending the request to %s: %s", u.hostport,
			 rc == -ETIMEDOUT ? "timed out" : strerror(-rc));
		goto out;
	}
	uint8_t buf[16384];
	for (;;) {
		ssize_t r = recv_some(&c, buf, sizeof(buf));
		if (r < 0) {
			rc = (int)r;
			snprintf(err, errlen, "reading the answer of %s: %s", u.hostport,
				 rc == -ETIMEDOUT ? "no complete answer within the time limit"
						  : strerror(-rc));
			goto out;
		}
		char e2[200];
		int pr = http_parser_input(&p, buf, (size_t)r, r == 0, e2, sizeof(e2));
		if (pr < 0) {
			rc = pr;
			snprintf(err, errlen, "answer of %s: %s", u.hostport, e2);
			goto out;
		}
		if (pr == 1)
			break;
	}
	out->status = p.status;
	out->body = p.body;
	out->body_len = p.body_len;
	p.body = NULL;
	memcpy(out->content_type, p.content_type, sizeof(out->content_type));
	memcpy(out->location, p.location, sizeof(out->location));
	memcpy(out->retry_after, p.retry_after, sizeof(out->retry_after));
	rc = 0;
out:
	if (req) {
		explicit_bzero(req, cap); /* it held the bearer credential */
		free(req);
	}
	http_parser_free(&p);
	if (c.ssl) {
		SSL_free(c.ssl);
	}
	if (c.fd >= 0)
		close(c.fd);
	if (ctx)
		SSL_CTX_free(ctx);
	ERR_clear_error();
	return rc;
}
