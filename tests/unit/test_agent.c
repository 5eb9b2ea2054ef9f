/* Unit tests for the agent's pure parts: reconnect backoff, option parsing, token files, and
 * reading the relay's player header without ever reading the player's bytes behind it. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "agent.h"
#include "log.h"
#include "net.h"
#include "proto.h"

/* ---- backoff ---- */

static uint32_t window(unsigned n, uint32_t base, uint32_t cap)
{
	uint64_t w = n >= 32 ? cap : (uint64_t)base << n;
	return w > cap ? cap : (uint32_t)w;
}

static void backoff_stays_within_full_jitter_window(void **state)
{
	for (unsigned n = 0; n < 70; n++) {
		uint32_t w = window(n, 500, 30000);
		for (int i = 0; i < 2000; i++) {
			uint32_t d = agent_backoff_ms(n, 500, 30000, rand_u64());
			if (d > w)
				fail_msg("attempt %u: %u ms is above the window %u ms", n, d, w);
		}
		/* both ends of the window are reachable */
		assert_int_equal(agent_backoff_ms(n, 500, 30000, 0), 0);
		assert_int_equal(agent_backoff_ms(n, 500, 30000, w), w);
		assert_int_equal(agent_backoff_ms(n, 500, 30000, UINT64_MAX) <= w, 1);
	}
}

static void backoff_window_doubles_then_caps(void **state)
{
	assert_int_equal(window(0, 500, 30000), 500);
	uint32_t prev_max = 0;
	for (unsigned n = 0; n < 10; n++) {
		/* the largest value the function can return for this attempt */
		uint32_t mx = agent_backoff_ms(n, 500, 30000, window(n, 500, 30000));
		assert_true(mx >= prev_max);
		prev_max = mx;
	}
	assert_int_equal(agent_backoff_ms(6, 500, 30000, 30000), 30000);  /* 500*64 > cap */
	assert_int_equal(agent_backoff_ms(200, 500, 30000, 30000), 30000); /* no shift overflow */
	assert_int_equal(agent_backoff_ms(3, 500, 30000, 4000), 4000);	   /* 500*8 */
	assert_int_equal(agent_backoff_ms(3, 500, 30000, 4001), 0);	   /* wraps in window */
}

static void backoff_is_spread_not_constant(void **state)
{
	/* full jitter: 1000 draws at attempt 5 (window 16 s) must not cluster */
	uint32_t lo = UINT32_MAX, hi = 0;
	for (int i = 0; i < 1000; i++) {
		uint32_t d = agent_backoff_ms(5, 500, 30000, rand_u64());
		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	if (lo > 2000 || hi < 14000)
		fail_msg("1000 draws spread over [%u, %u] ms, want most of [0, 16000]", lo, hi);
}

/* ---- options ---- */

#define MAXARGS 16
struct argv_buf {
	char store[MAXARGS][256];
	char *argv[MAXARGS + 1];
	int argc;
};

/* writable copies: the parser wipes --token values in place */
static void mkargv(struct argv_buf *b, ...)
{
	va_list ap;
	va_start(ap, b);
	b->argc = 0;
	const char *s;
	while ((s = va_arg(ap, const char *)) && b->argc < MAXARGS) {
		snprintf(b->store[b->argc], sizeof(b->store[0]), "%s", s);
		b->argv[b->argc] = b->store[b->argc];
		b->argc++;
	}
	b->argv[b->argc] = NULL;
	va_end(ap);
}

static struct agent_config cfg;
static char err[512];

static int parse(struct argv_buf *b)
{
	err[0] = 0;
	return agent_opts_parse(b->argc, b->argv, &cfg, err, sizeof(err));
}

static int opts_setup(void **state)
{
	unsetenv("DVV_TOKEN");
	unsetenv("DVV_RELAY");
	unsetenv("DVV_REGIONS");
	unsetenv("DVV_REGION");
	return 0;
}

static void options_defaults_and_token_wiped_from_argv(void **state)
{
	struct argv_buf b;
	mkargv(&b, "dvv", "--token", "aaa.bbb.ccc", NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.relay, AGENT_DEFAULT_RELAY);
	assert_string_equal(cfg.local, AGENT_DEFAULT_LOCAL);
	assert_string_equal(cfg.token, "aaa.bbb.ccc");
	assert_false(cfg.proxy_protocol);
	assert_false(cfg.json);
	assert_int_equal(cfg.log_level, LOG_INFO);
	if (strstr(b.store[2], "aaa"))
		fail_msg("token still visible in argv: '%s'", b.store[2]);
}

static void options_all_flags(void **state)
{
	struct argv_buf b;
	mkargv(&b, "dvv", "--relay", "[::1]:7000", "--token=t.o.k", "--local", "10.0.0.2:25566",
	       "--proxy-protocol", "--json", "--log-level", "debug", "--retry-auth", NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.relay, "[::1]:7000");
	assert_string_equal(cfg.local, "10.0.0.2:25566");
	assert_string_equal(cfg.token, "t.o.k");
	assert_true(cfg.proxy_protocol);
	assert_true(cfg.json);
	assert_true(cfg.retry_auth);
	assert_int_equal(cfg.log_level, LOG_DEBUG);
}

static void options_environment(void **state)
{
	struct argv_buf b;
	setenv("DVV_TOKEN", "env.tok.en", 1);
	setenv("DVV_RELAY", "relay.example:7001", 1);
	mkargv(&b, "dvv", NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.token, "env.tok.en");
	assert_string_equal(cfg.relay, "relay.example:7001");
	/* flags win over the environment */
	mkargv(&b, "dvv", "--relay", "other:7002", "--token", "flag.tok", NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.relay, "other:7002");
	assert_string_equal(cfg.token, "flag.tok");
	opts_setup(state);
}

static void expect_usage_error(const char *want, ...)
{
	struct argv_buf b;
	va_list ap;
	va_start(ap, want);
	b.argc = 0;
	snprintf(b.store[b.argc], sizeof(b.store[0]), "dvv");
	b.argv[b.argc] = b.store[b.argc];
	b.argc++;
	const char *s;
	while ((s = va_arg(ap, const char *)) && b.argc < MAXARGS) {
		snprintf(b.store[b.argc], sizeof(b.store[0]), "%s", s);
		b.argv[b.argc] = b.store[b.argc];
		b.argc++;
	}
	b.argv[b.argc] = NULL;
	va_end(ap);
	int rc = parse(&b);
	if (rc != -EINVAL)
		fail_msg("expected a usage error mentioning '%s', got rc=%d err='%s'", want, rc, err);
	if (!strstr(err, want))
		fail_msg("usage error '%s' does not mention '%s'", err, want);
	if (cfg.token[0])
		fail_msg("token kept after a usage error");
}

static void options_usage_errors(void **state)
{
	expect_usage_error("no token", NULL);
	expect_usage_error("unknown option '--bogus'", "--token", "x", "--bogus", NULL);
	expect_usage_error("--relay", "--token", "x", "--relay", "nohostport", NULL);
	expect_usage_error("--relay", "--token", "x", "--relay", "host:99999", NULL);
	expect_usage_error("--local", "--token", "x", "--local", "h:0", NULL);
	expect_usage_error("once", "--token", "x", "--token-file", "/dev/null", NULL);
	expect_usage_error("--pin", "--token", "x", "--pin", "abcd", NULL);
	expect_usage_error("--log-level", "--token", "x", "--log-level", "loud", NULL);
	expect_usage_error("needs a value", "--token", "x", "--relay", NULL);
	expect_usage_error("unexpected argument", "--token", "x", "stray", NULL);
	expect_usage_error("--ca", "--token", "x", "--ca", "/nonexistent/ca.pem", NULL);
	expect_usage_error("space", "--token", "a b", NULL);
}

static void options_help_and_version(void **state)
{
	struct argv_buf b;
	mkargv(&b, "dvv", "--help", NULL);
	assert_int_equal(parse(&b), AGENT_OPTS_HELP);
	mkargv(&b, "dvv", "--version", NULL);
	assert_int_equal(parse(&b), AGENT_OPTS_VERSION);
}

static void token_file_trimmed_and_checked(void **state)
{
	char path[] = "/tmp/dvv-test-token-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char content[] = "  eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl \n\n";
	assert_int_equal(write(fd, content, sizeof(content) - 1), (ssize_t)sizeof(content) - 1);
	close(fd);
	char tok[CTL_TOKEN_MAX + 1];
	assert_int_equal(agent_token_read_file(path, tok, sizeof(tok), err, sizeof(err)), 0);
	assert_string_equal(tok, "eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl");

	struct argv_buf b;
	mkargv(&b, "dvv", "--token-file", path, NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.token, "eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl");

	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "two\nlines\n", 10), 10);
	close(fd);
	assert_int_equal(agent_token_read_file(path, tok, sizeof(tok), err, sizeof(err)), -EINVAL);
	fd = open(path, O_WRONLY | O_TRUNC);
	close(fd);
	assert_int_equal(agent_token_read_file(path, tok, sizeof(tok), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "empty"));
	unlink(path);
	assert_true(agent_token_read_file(path, tok, sizeof(tok), err, sizeof(err)) < 0);
}

/* ---- player header ---- */

static void make_pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(net_set_nonblock(sv[0]), 0);
}

static size_t sample_header(uint8_t out[DATA_HDR_LEN], struct data_hdr *h)
{
	memset(h, 0, sizeof(*h));
	struct sockaddr_in *s = (struct sockaddr_in *)&h->src, *d = (struct sockaddr_in *)&h->dst;
	s->sin_family = AF_INET;
	inet_pton(AF_INET, "203.0.113.7", &s->sin_addr);
	s->sin_port = htons(51234);
	d->sin_family = AF_INET;
	inet_pton(AF_INET, "198.51.100.1", &d->sin_addr);
	d->sin_port = htons(25565);
	return data_hdr_encode(h, out);
}

static void header_split_across_many_reads_is_not_over_read(void **state)
{
	int sv[2];
	make_pair(sv);
	uint8_t wire[DATA_HDR_LEN + 16];
	struct data_hdr want, got;
	size_t n = sample_header(wire, &want);
	assert_int_equal(n, DATA_HDR_LEN);
	/* the player's first bytes travel right behind the header */
	memcpy(wire + n, "\x10\x00\xfe" "PLAYERBYTES", 14);

	struct agent_hdr_reader r;
	agent_hdr_reset(&r);
	/* one byte per read for the header; the last write carries the player's bytes too */
	for (size_t i = 0; i < n - 1; i++) {
		assert_int_equal(write(sv[1], wire + i, 1), 1);
		int rc = agent_hdr_read(&r, sv[0], &got);
		if (rc != 0)
			fail_msg("after %zu of %zu header bytes: rc %d, want 0 (need more)", i + 1,
				 n, rc);
	}
	assert_int_equal(write(sv[1], wire + n - 1, 15), 15);
	assert_int_equal(agent_hdr_read(&r, sv[0], &got), 1);

	char a[64], b[64];
	net_addr_fmt((struct sockaddr *)&got.src, a, sizeof(a));
	assert_string_equal(a, "203.0.113.7:51234");
	net_addr_fmt((struct sockaddr *)&got.dst, b, sizeof(b));
	assert_string_equal(b, "198.51.100.1:25565");

	/* every player byte is still in the socket, untouched */
	uint8_t rest[64];
	ssize_t k = recv(sv[0], rest, sizeof(rest), 0);
	if (k != 14 || memcmp(rest, "\x10\x00\xfe" "PLAYERBYTES", 14))
		fail_msg("after the header the socket held %zd bytes, want the 14 player bytes", k);
	close(sv[0]);
	close(sv[1]);
}

static void header_with_longer_body_is_consumed_exactly(void **state)
{
	/* a newer relay may send a longer body (extensions): read it all, no more */
	int sv[2];
	make_pair(sv);
	uint8_t wire[8 + 60 + 4];
	struct data_hdr want, got;
	sample_header(wire, &want);
	wire[6] = 0;
	wire[7] = 60;
	memset(wire + DATA_HDR_LEN, 0xAA, 60 - DATA_HDR_BODY);
	memcpy(wire + 68, "MINE", 4);
	assert_int_equal(write(sv[1], wire, sizeof(wire)), (ssize_t)sizeof(wire));
	struct agent_hdr_reader r;
	agent_hdr_reset(&r);
	assert_int_equal(agent_hdr_read(&r, sv[0], &got), 1);
	char rest[8];
	assert_int_equal(recv(sv[0], rest, sizeof(rest), 0), 4);
	assert_memory_equal(rest, "MINE", 4);
	close(sv[0]);
	close(sv[1]);
}

static void header_errors(void **state)
{
	int sv[2];
	struct agent_hdr_reader r;
	struct data_hdr got;

	/* bad magic */
	make_pair(sv);
	agent_hdr_reset(&r);
	assert_int_equal(write(sv[1], "HTTP/1.1 200 OK\r\n\r\n", 19), 19);
	assert_int_equal(agent_hdr_read(&r, sv[0], &got), -EPROTO);
	close(sv[0]);
	close(sv[1]);

	/* relay closes mid-header */
	make_pair(sv);
	agent_hdr_reset(&r);
	assert_int_equal(write(sv[1], "DVVP\x01", 5), 5);
	assert_int_equal(agent_hdr_read(&r, sv[0], &got), 0);
	close(sv[1]);
	assert_int_equal(agent_hdr_read(&r, sv[0], &got), -ECONNRESET);
	close(sv[0]);

	/* body length too short for the addresses */
	make_pair(sv);
	agent_hdr_reset(&r);
	assert_int_equal(write(sv[1], "DVVP\x01\x00\x00\x05", 8), 8);
	assert_int_equal(agent_hdr_read(&r, sv[0], &got), -EPROTO);
	close(sv[0]);
	close(sv[1]);

	/* nothing yet: need more, no error */
	make_pair(sv);
	agent_hdr_reset(&r);
	assert_int_equal(agent_hdr_read(&r, sv[0], &got), 0);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	log_init("test_agent", LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(backoff_stays_within_full_jitter_window),
		cmocka_unit_test(backoff_window_doubles_then_caps),
		cmocka_unit_test(backoff_is_spread_not_constant),
		cmocka_unit_test_setup(options_defaults_and_token_wiped_from_argv, opts_setup),
		cmocka_unit_test_setup(options_all_flags, opts_setup),
		cmocka_unit_test_setup(options_environment, opts_setup),
		cmocka_unit_test_setup(options_usage_errors, opts_setup),
		cmocka_unit_test_setup(options_help_and_version, opts_setup),
		cmocka_unit_test_setup(token_file_trimmed_and_checked, opts_setup),
		cmocka_unit_test(header_split_across_many_reads_is_not_over_read),
		cmocka_unit_test(header_with_longer_body_is_consumed_exactly),
		cmocka_unit_test(header_errors),
	};
	return cmocka_run_group_tests_name("agent", tests, NULL, NULL);
}
