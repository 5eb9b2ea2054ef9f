/* Unit tests of the agent's HTTP client (client/http.c): URL parsing, the response parser fed
 * whole and byte by byte (status line, headers, Content-Length, chunked, read-to-EOF, 1xx,
 * truncation, oversize, garbage), and real requests to a local server thread (answers, a
 * server that never answers, a redirect that is not followed, the bearer on the wire). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "http.h"
#include "log.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Feed s whole (then EOF if eof), or one byte at a time; return the last result. */
static int feed(struct http_parser *p, const char *s, size_t n, bool bytewise, bool eof)
{
	char err[200];
	int rc = 0;
	if (bytewise) {
		for (size_t i = 0; i < n && rc == 0; i++)
			rc = http_parser_input(p, (const uint8_t *)s + i, 1, false, err, sizeof(err));
	} else if (n) {
		rc = http_parser_input(p, (const uint8_t *)s, n, false, err, sizeof(err));
	}
	if (rc == 0 && eof)
		rc = http_parser_input(p, NULL, 0, true, err, sizeof(err));
	return rc;
}

static int parse_str(const char *s, bool bytewise, bool eof, struct http_parser *p)
{
	http_parser_init(p, false);
	return feed(p, s, strlen(s), bytewise, eof);
}

static void url_parse_accepts_and_rejects(void **state)
{
	struct http_url u;
	char err[200];
	assert_int_equal(http_url_parse("http://127.0.0.1:8080", &u, err, sizeof(err)), 0);
	assert_false(u.tls);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 8080);
	assert_string_equal(u.path, "/");
	assert_string_equal(u.hostport, "127.0.0.1:8080");
	assert_int_equal(http_url_parse("HTTPS://api.dvv.one/v1/me?x=1", &u, err, sizeof(err)), 0);
	assert_true(u.tls);
	assert_int_equal(u.port, 443);
	assert_string_equal(u.hostport, "api.dvv.one");
	assert_string_equal(u.path, "/v1/me?x=1");
	assert_int_equal(http_url_parse("http://[::1]:9/a", &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "::1");
	assert_string_equal(u.hostport, "[::1]:9");
	const char *bad[] = {"ftp://x", "http://", "http://u:p@host/", "http://h:0/", "http://h:70000",
			     "http://h:8x", "http://[zz]:1/", "http://h/a b", "http://h/#frag",
			     "api.dvv.one", "http://h o/"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(http_url_parse(bad[i], &u, err, sizeof(err)), -EINVAL);
		assert_true(err[0] != 0);
	}
}

static void content_length_whole_and_bytewise(void **state)
{
	const char *r = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
			"Content-Length: 11\r\nRetry-After: 7\r\nLocation: /x\r\n\r\n{\"a\":true}\nEXTRA";
	for (int bw = 0; bw < 2; bw++) {
		struct http_parser p;
		assert_int_equal(parse_str(r, bw, false, &p), 1);
		assert_int_equal(p.status, 201);
		assert_int_equal(p.mode, HTTP_BODY_LENGTH);
		assert_int_equal(p.body_len, 11);
		assert_string_equal(p.body, "{\"a\":true}\n");
		assert_string_equal(p.content_type, "application/json");
		assert_string_equal(p.retry_after, "7");
		assert_string_equal(p.location, "/x");
		http_parser_free(&p);
	}
}

static void chunked_with_extensions_and_trailers(void **state)
{
	const char *r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			"4;name=v\r\n{\"a\"\r\nA \r\n:[1,2,3,4]\r\n1\r\n}\r\n0\r\nX-T: 1\r\n\r\n";
	for (int bw = 0; bw < 2; bw++) {
		struct http_parser p;
		assert_int_equal(parse_str(r, bw, false, &p), 1);
		assert_int_equal(p.mode, HTTP_BODY_CHUNKED);
		assert_string_equal(p.body, "{\"a\":[1,2,3,4]}");
		http_parser_free(&p);
	}
	/* bare LF line ends are accepted too */
	struct http_parser p;
	assert_int_equal(parse_str("HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\n2\nok\n0\n\n",
				   false, false, &p),
			 1);
	assert_string_equal(p.body, "ok");
	http_parser_free(&p);
}

static void body_to_eof_no_body_and_interim(void **state)
{
	struct http_parser p;
	assert_int_equal(parse_str("HTTP/1.0 200 OK\r\n\r\nall of it", true, false, &p), 0);
	assert_int_equal(feed(&p, "", 0, false, true), 1);
	assert_string_equal(p.body, "all of it");
	http_parser_free(&p);
	/* 204: complete at the end of the head, whatever follows */
	assert_int_equal(parse_str("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", false,
				   false, &p),
			 1);
	assert_int_equal(p.body_len, 0);
	assert_string_equal(p.body, "");
	http_parser_free(&p);
	/* a HEAD never has a body */
	http_parser_init(&p, true);
	const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
	assert_int_equal(feed(&p, h, strlen(h), false, false), 1);
	http_parser_free(&p);
	/* 100 Continue then the answer */
	assert_int_equal(parse_str("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n"
				   "Content-Length: 2\r\n\r\n{}",
				   true, false, &p),
			 1);
	assert_int_equal(p.status, 404);
	assert_string_equal(p.body, "{}");
	http_parser_free(&p);
}

static void truncation_is_an_error(void **state)
{
	const char *cut[] = {
		"",
		"HTTP/1.1 200 OK\r\nContent-Le",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
	};
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++) {
		struct http_parser p;
		assert_int_equal(parse_str(cut[i], false, false, &p), 0);
		assert_int_equal(feed(&p, "", 0, false, true), -EPROTO);
		/* a failed parser stays failed */
		char err[100];
		assert_int_equal(http_parser_input(&p, (const uint8_t *)"x", 1, false, err,
						   sizeof(err)),
				 -EPROTO);
		http_parser_free(&p);
	}
}

static void garbage_is_refused(void **state)
{
	const char *bad[] = {
		"SSH-2.0-OpenSSH\r\n\r\n",
		"HTTP/2 200\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 20x OK\r\n\r\n",
		"HTTP/1.1 099 Low\r\n\r\n",
		"HTTP/1.1 200OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
		"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
		"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nA: b\x01" "c\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"HTTP/1.1 101 Switching\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1x\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1111111111111111\r\n",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct http_parser p;
		int rc = parse_str(bad[i], false, true, &p);
		if (rc != -EPROTO)
			fail_msg("case %zu: %d", i, rc);
		http_parser_free(&p);
	}
}

static void oversize_is_refused(void **state)
{
	struct http_parser p;
	char err[200];
	/* a declared length over 1 MiB is refused at the head */
	assert_int_equal(parse_str("HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n", false,
				   false, &p),
			 -EMSGSIZE);
	http_parser_free(&p);
	/* exactly 1 MiB is fine */
	size_t n = HTTP_BODY_MAX;
	char *big = malloc(n + 200);
	assert_non_null(big);
	int h = snprintf(big, 200, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
	memset(big + h, 'a', n);
	http_parser_init(&p, false);
	assert_int_equal(http_parser_input(&p, (uint8_t *)big, (size_t)h + n, false, err, sizeof(err)),
			 1);
	assert_int_equal(p.body_len, n);
	http_parser_free(&p);
	/* an endless head */
	http_parser_init(&p, false);
	memset(big, 'h', HTTP_HEAD_MAX + 10);
	memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
	assert_int_equal(http_parser_input(&p, (uint8_t *)big, HTTP_HEAD_MAX + 10, false, err,
					   sizeof(err)),
			 -EMSGSIZE);
	http_parser_free(&p);
	/* a body read to EOF over 1 MiB */
	http_parser_init(&p, false);
	assert_int_equal(feed(&p, "HTTP/1.1 200 OK\r\n\r\n", 19, false, false), 0);
	memset(big, 'b', n + 1);
	assert_int_equal(http_parser_input(&p, (uint8_t *)big, n + 1, false, err, sizeof(err)),
			 -EMSGSIZE);
	http_parser_free(&p);
	/* chunks adding up to over 1 MiB */
	http_parser_init(&p, false);
	const char *c = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n80000\r\n";
	assert_int_equal(feed(&p, c, strlen(c), false, false), 0);
	memset(big, 'c', 0x80000);
	assert_int_equal(http_parser_input(&p, (uint8_t *)big, 0x80000, false, err, sizeof(err)), 0);
	assert_int_equal(feed(&p, "\r\n80001\r\n", 9, false, false), -EMSGSIZE);
	http_parser_free(&p);
	/* an endless chunk-size line */
	http_parser_init(&p, false);
	c = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;";
	assert_int_equal(feed(&p, c, strlen(c), false, false), 0);
	memset(big, 'e', HTTP_LINE_MAX + 10);
	assert_int_equal(http_parser_input(&p, (uint8_t *)big, HTTP_LINE_MAX + 10, false, err,
					   sizeof(err)),
			 -EPROTO);
	http_parser_free(&p);
	/* a chunk-size line of exactly HTTP_LINE_MAX bytes is good whether its CR and LF
	 * arrive together or apart (the CR alone at the end is not content) */
	for (int apart = 0; apart < 2; apart++) {
		http_parser_init(&p, false);
		c = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
		assert_int_equal(feed(&p, c, strlen(c), false, false), 0);
		memset(big, 'f', HTTP_LINE_MAX);
		big[0] = '1';
		big[1] = ';';
		big[HTTP_LINE_MAX] = '\r';
		assert_int_equal(http_parser_input(&p, (uint8_t *)big, HTTP_LINE_MAX + !apart,
						   false, err, sizeof(err)),
				 0);
		if (apart)
			assert_int_equal(feed(&p, "\r", 1, false, false), 0);
		c = "\nx\r\n0\r\n\r\n";
		assert_int_equal(feed(&p, c, strlen(c), false, false), 1);
		assert_int_equal(p.body_len, 1);
		http_parser_free(&p);
	}
	free(big);
}

/* ---- a real server on loopback ---- */

struct srv {
	int lfd;
	uint16_t port;
	const char *answer; /* NULL: accept, read, never answer */
	char got[4096];	    /* the request as received */
	size_t got_len;
	pthread_t th;
};

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	int fd = accept(s->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	/* read until the end of the head and the body it announces */
	for (;;) {
		ssize_t r = recv(fd, s->got + s->got_len, sizeof(s->got) - 1 - s->got_len, 0);
		if (r <= 0)
			break;
		s->got_len += (size_t)r;
		s->got[s->got_len] = 0;
		char *e = strstr(s->got, "\r\n\r\n");
		if (!e)
			continue;
		char *cl = strstr(s->got, "Content-Length: ");
		size_t want = (size_t)(e + 4 - s->got) + (cl ? (size_t)atoi(cl + 16) : 0);
		if (s->got_len >= want)
			break;
	}
	if (s->answer) {
		size_t off = 0;
		net_send_rest(fd, s->answer, strlen(s->answer), &off);
	} else {
		char b[16];
		while (recv(fd, b, sizeof(b), 0) > 0)
			;
	}
	close(fd);
	return NULL;
}

static void srv_start(struct srv *s, const char *answer)
{
	memset(s, 0, sizeof(*s));
	s->answer = answer;
	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 4), 0);
	socklen_t l = sizeof(a);
	getsockname(s->lfd, (struct sockaddr *)&a, &l);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_stop(struct srv *s)
{
	shutdown(s->lfd, SHUT_RDWR);
	pthread_join(s->th, NULL);
	close(s->lfd);
}

static void request_round_trip(void **state)
{
	struct srv s;
	srv_start(&s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		      "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"ok\"\r\n6\r\n:true}\r\n0\r\n\r\n");
	char url[64], err[300];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/tokens", s.port);
	struct http_resp r;
	assert_int_equal(http_request(NULL, "POST", url, "sekrit-session", "{\"tunnel_id\":\"t\"}",
				      &r, err, sizeof(err)),
			 0);
	srv_stop(&s);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"ok\":true}");
	assert_string_equal(r.content_type, "application/json");
	assert_non_null(strstr(s.got, "POST /v1/tokens HTTP/1.1\r\n"));
	char host[64];
	snprintf(host, sizeof(host), "Host: 127.0.0.1:%u\r\n", s.port);
	assert_non_null(strstr(s.got, host));
	assert_non_null(strstr(s.got, "Authorization: Bearer sekrit-session\r\n"));
	assert_non_null(strstr(s.got, "Content-Type: application/json\r\nContent-Length: 17\r\n"));
	assert_non_null(strstr(s.got, "\r\n\r\n{\"tunnel_id\":\"t\"}"));
	http_resp_free(&r);
}

static void redirect_returned_not_followed(void **state)
{
	struct srv s;
	srv_start(&s, "HTTP/1.1 302 Found\r\nLocation: http://evil.example/\r\nContent-Length: 0"
		      "\r\n\r\n");
	char url[64], err[300];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", s.port);
	struct http_resp r;
	assert_int_equal(http_request(NULL, "GET", url, NULL, NULL, &r, err, sizeof(err)), 0);
	srv_stop(&s);
	assert_int_equal(r.status, 302);
	assert_string_equal(r.location, "http://evil.example/");
	assert_null(strstr(s.got, "Authorization"));
	assert_null(strstr(s.got, "Content-Length"));
	http_resp_free(&r);
}

static void silent_server_times_out_and_garbage_fails(void **state)
{
	struct srv s;
	srv_start(&s, NULL);
	char url[64], err[300];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", s.port);
	struct http_resp r;
	struct http_opts o = {.timeout_ms = 300};
	uint64_t t0 = mono_ms();
	assert_int_equal(http_request(&o, "GET", url, NULL, NULL, &r, err, sizeof(err)), -ETIMEDOUT);
	assert_true(mono_ms() - t0 < 3000);
	assert_non_null(strstr(err, "time limit"));
	srv_stop(&s);

	srv_start(&s, "220 smtp.example ESMTP\r\n");
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", s.port);
	assert_int_equal(http_request(NULL, "GET", url, NULL, NULL, &r, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "connection closed"));
	srv_stop(&s);

	/* https to a server that speaks plain HTTP: a clear TLS error, not a hang */
	srv_start(&s, "HTTP/1.1 400 Bad Request\r\n\r\n");
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/", s.port);
	assert_true(http_request(NULL, "GET", url, NULL, NULL, &r, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "TLS"));
	srv_stop(&s);

	/* nobody listening */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	socklen_t l = sizeof(a);
	getsockname(fd, (struct sockaddr *)&a, &l);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/", ntohs(a.sin_port));
	assert_int_equal(http_request(NULL, "GET", url, NULL, NULL, &r, err, sizeof(err)),
			 -ECONNREFUSED);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(url_parse_accepts_and_rejects),
		cmocka_unit_test(content_length_whole_and_bytewise),
		cmocka_unit_test(chunked_with_extensions_and_trailers),
		cmocka_unit_test(body_to_eof_no_body_and_interim),
		cmocka_unit_test(truncation_is_an_error),
		cmocka_unit_test(garbage_is_refused),
		cmocka_unit_test(oversize_is_refused),
		cmocka_unit_test(request_round_trip),
		cmocka_unit_test(redirect_returned_not_followed),
		cmocka_unit_test(silent_server_times_out_and_garbage_fails),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
