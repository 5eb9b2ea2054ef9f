/* Unit tests for the agent's pure parts: reconnect backoff, option parsing (with the credentials
 * dvv login stores), token files, reading the relay's player header without ever reading the
 * player's bytes behind it, and what PLAN / GOODBYE / ERROR frames turn into for the user. */
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
#include <netinet/tcp.h>

#include <cmocka.h>

#include "agent.h"
#include "cmd.h"
#include "creds.h"
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
	/* no stored credentials unless a test writes them */
	setenv("XDG_CONFIG_HOME", "/nonexistent/dvv-unit-test", 1);
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
	assert_int_equal(cfg.workers, -1); /* one per CPU */
	if (strstr(b.store[2], "aaa"))
		fail_msg("token still visible in argv: '%s'", b.store[2]);
}

static void options_all_flags(void **state)
{
	struct argv_buf b;
	mkargv(&b, "dvv", "--relay", "[::1]:7000", "--token=t.o.k", "--local", "10.0.0.2:25566",
	       "--proxy-protocol", "--json", "--log-level", "debug", "--retry-auth", "--workers", "3",
	       NULL);
	assert_int_equal(parse(&b), 0);
	assert_int_equal(cfg.workers, 3);
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
	expect_usage_error("--workers '65': want 0 to 64", "--token", "x", "--workers", "65", NULL);
	expect_usage_error("--workers '2x'", "--token", "x", "--workers", "2x", NULL);
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

static size_t sample_header(uint8_t out[DATA_HDR_LEN_MAX], struct data_hdr *h)
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

static void header_with_a_trace_id_gives_it_to_the_agent(void **state)
{
	/* a relay with traces: flag bit 0, the trace id after the addresses, then the player */
	int sv[2];
	make_pair(sv);
	uint8_t wire[DATA_HDR_LEN_MAX + 4];
	struct data_hdr want, got;
	memset(&want, 0, sizeof(want));
	((struct sockaddr_in *)&want.src)->sin_family = AF_INET;
	((struct sockaddr_in *)&want.dst)->sin_family = AF_INET;
	want.trace = 0x00c0ffee00c0ffeeULL;
	size_t n = data_hdr_encode(&want, wire);
	assert_int_equal(n, DATA_HDR_LEN_MAX);
	memcpy(wire + n, "MINE", 4);
	assert_int_equal(write(sv[1], wire, n + 4), (ssize_t)(n + 4));
	struct agent_hdr_reader r;
	agent_hdr_reset(&r);
	assert_int_equal(agent_hdr_read(&r, sv[0], &got), 1);
	assert_true(got.trace == 0x00c0ffee00c0ffeeULL);
	char rest[8];
	assert_int_equal(recv(sv[0], rest, sizeof(rest), 0), 4);
	assert_memory_equal(rest, "MINE", 4);
	close(sv[0]);
	close(sv[1]);
	(void)state;
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

/* ---- stored credentials (dvv login) ---- */

static void options_use_stored_credentials(void **state)
{
	char root[] = "/tmp/dvv-agent-opts-XXXXXX";
	assert_non_null(mkdtemp(root));
	setenv("XDG_CONFIG_HOME", root, 1);
	char path[512], dir[512], e[600];
	assert_int_equal(creds_path(path, sizeof(path), dir, sizeof(dir), e, sizeof(e)), 0);
	struct agent_creds c;
	memset(&c, 0, sizeof(c));
	snprintf(c.api, sizeof(c.api), "http://127.0.0.1:8080");
	snprintf(c.token, sizeof(c.token), "stored.token.value");
	c.nrelays = 2;
	snprintf(c.relays[0].name, sizeof(c.relays[0].name), "eu");
	snprintf(c.relays[0].endpoint, sizeof(c.relays[0].endpoint), "127.0.0.1:7100");
	snprintf(c.relays[1].name, sizeof(c.relays[1].name), "us");
	snprintf(c.relays[1].endpoint, sizeof(c.relays[1].endpoint), "127.0.0.1:7200");
	c.ca_pem = strdup("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
	assert_int_equal(creds_save(dir, path, &c, e, sizeof(e)), 0);

	struct argv_buf b;
	/* nothing given: token, relays and their CA from the file */
	mkargv(&b, "dvv", NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.token, "stored.token.value");
	assert_true(cfg.from_creds);
	assert_int_equal(cfg.nregions, 2);
	assert_string_equal(cfg.regions[1].endpoint, "127.0.0.1:7200");
	assert_true(cfg.measure);
	assert_non_null(cfg.ca_pem);
	agent_opts_free(&cfg);
	/* --region picks among the stored relays */
	mkargv(&b, "dvv", "--region", "us", NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.relay, "127.0.0.1:7200");
	assert_false(cfg.measure);
	agent_opts_free(&cfg);
	/* named relays win, and the stored CA is not theirs */
	mkargv(&b, "dvv", "--relay", "relay.example:7000", NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.token, "stored.token.value");
	assert_string_equal(cfg.relay, "relay.example:7000");
	assert_null(cfg.ca_pem);
	agent_opts_free(&cfg);
	setenv("DVV_RELAY", "env.example:7000", 1);
	mkargv(&b, "dvv", NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.relay, "env.example:7000");
	assert_null(cfg.ca_pem);
	agent_opts_free(&cfg);
	unsetenv("DVV_RELAY");
	/* a given token: the file is not even read */
	setenv("DVV_TOKEN", "env.token", 1);
	mkargv(&b, "dvv", NULL);
	assert_int_equal(parse(&b), 0);
	assert_string_equal(cfg.token, "env.token");
	assert_false(cfg.from_creds);
	assert_string_equal(cfg.relay, AGENT_DEFAULT_RELAY);
	agent_opts_free(&cfg);
	unsetenv("DVV_TOKEN");
	/* a file others can read is refused, with the fix */
	assert_int_equal(chmod(path, 0644), 0);
	mkargv(&b, "dvv", NULL);
	assert_int_equal(parse(&b), -EINVAL);
	assert_non_null(strstr(err, "chmod 600"));
	assert_null(strstr(err, "stored.token.value"));
	assert_int_equal(chmod(path, 0600), 0);
	/* logged in without a token yet */
	c.token[0] = 0;
	assert_int_equal(creds_save(dir, path, &c, e, sizeof(e)), 0);
	mkargv(&b, "dvv", NULL);
	assert_int_equal(parse(&b), -EINVAL);
	assert_non_null(strstr(err, "dvv tunnels use"));
	creds_clear(&c);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
	opts_setup(state);
}

/* ---- PLAN, GOODBYE and ERROR for the user ---- */

static void bytes_for_humans(void **state)
{
	char b[32];
	struct { uint64_t v; const char *want; } cases[] = {
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {1536, "1.5 KiB"},
		{10737418240ull, "10 GiB"}, {1288490189ull, "1.2 GiB"},
		{536870912000ull, "500 GiB"}, {10695475200ull, "9.9 GiB"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		agent_fmt_bytes(cases[i].v, b, sizeof(b));
		assert_string_equal(b, cases[i].want);
	}
}

static void plan_frame_described(void **state)
{
	struct ctl_msg m = {.type = CTL_PLAN};
	snprintf(m.u.plan.tier, sizeof(m.u.plan.tier), "free");
	m.u.plan.max_tunnels = 1;
	m.u.plan.max_players = 20;
	m.u.plan.idle_timeout_s = 1800;
	m.u.plan.bandwidth_bytes = 10737418240ull;
	m.u.plan.used_bytes = 1288490189ull;
	m.u.plan.period_end = 1798761600; /* 2027-01-01T00:00:00Z */
	snprintf(m.u.plan.state, sizeof(m.u.plan.state), "ok");
	char line[400];
	agent_plan_describe(&m, line, sizeof(line));
	assert_string_equal(line, "plan free: 1 tunnel, 20 players, idle close after 30 min, "
				  "1.2 GiB of 10 GiB used, resets 2027-01-01");
	snprintf(m.u.plan.state, sizeof(m.u.plan.state), "capped");
	agent_plan_describe(&m, line, sizeof(line));
	assert_non_null(strstr(line, "BANDWIDTH LIMIT REACHED"));
	/* a paid-like plan: no idle close, no limits shown as such, no period */
	snprintf(m.u.plan.tier, sizeof(m.u.plan.tier), "paid");
	snprintf(m.u.plan.state, sizeof(m.u.plan.state), "ok");
	m.u.plan.max_tunnels = 5;
	m.u.plan.max_players = 0;
	m.u.plan.idle_timeout_s = 0;
	m.u.plan.bandwidth_bytes = 0;
	m.u.plan.used_bytes = 2048;
	m.u.plan.period_end = 0;
	agent_plan_describe(&m, line, sizeof(line));
	assert_string_equal(line, "plan paid: 5 tunnels, no player limit, 2 KiB used, no "
				  "bandwidth limit");
	/* the frame the relay sends decodes into what is described */
	uint8_t frame[CTL_HDR_LEN + CTL_PAYLOAD_MAX];
	m.u.plan.idle_timeout_s = 7200;
	int n = ctl_encode(&m, frame, sizeof(frame));
	assert_true(n > 0);
	struct ctl_msg back;
	size_t used;
	assert_int_equal(ctl_decode(frame, (size_t)n, &back, &used, err, sizeof(err)), 0);
	assert_int_equal(back.type, CTL_PLAN);
	agent_plan_describe(&back, line, sizeof(line));
	assert_non_null(strstr(line, "idle close after 2 h"));
}

static void final_refusals_and_their_exit_status(void **state)
{
	char t[400];
	assert_int_equal(agent_final_refusal("revoked", "token k_1 revoked", true, t, sizeof(t)),
			 AGENT_EXIT_AUTH);
	assert_non_null(strstr(t, "token k_1 revoked"));
	assert_non_null(strstr(t, "dvv tunnels use"));
	assert_int_equal(agent_final_refusal("revoked", "", false, t, sizeof(t)), AGENT_EXIT_AUTH);
	assert_null(strstr(t, "dvv tunnels use"));
	assert_int_equal(agent_final_refusal("blocked", "tunnel t_1 was deleted", false, t,
					     sizeof(t)),
			 AGENT_EXIT_AUTH);
	assert_non_null(strstr(t, "tunnel t_1 was deleted"));
	const char *idle = "no players for 30 min: the free plan closes idle tunnels; run dvv "
			   "again to reopen";
	assert_int_equal(agent_final_refusal("idle", idle, false, t, sizeof(t)),
			 AGENT_EXIT_REFUSED);
	assert_non_null(strstr(t, idle));
	/* everything else is not final */
	const char *other[] = {"plan", "bandwidth", "replaced", "draining", "moved", "auth",
			       "busy", ""};
	for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		assert_int_equal(agent_final_refusal(other[i], "x", false, t, sizeof(t)), 0);
}

static void jwt_claims_read_for_display(void **state)
{
	/* {"alg":"ES256"} . {"sub":"u_1","tid":"t_abc","n":5} . sig */
	const char *jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1XzEiLCJ0aWQiOiJ0X2FiYyIsIm4iOjV9.c2ln";
	char v[65];
	assert_int_equal(agent_jwt_claim(jwt, "tid", v, sizeof(v)), 0);
	assert_string_equal(v, "t_abc");
	assert_int_equal(agent_jwt_claim(jwt, "n", v, sizeof(v)), -EINVAL); /* not a string */
	assert_int_equal(agent_jwt_claim(jwt, "jti", v, sizeof(v)), -EINVAL);
	assert_int_equal(agent_jwt_claim("nodots", "tid", v, sizeof(v)), -EINVAL);
	assert_int_equal(agent_jwt_claim("a.b!d.c", "tid", v, sizeof(v)), -EINVAL);
	assert_int_equal(agent_jwt_claim(jwt, "tid", v, 3), -EINVAL); /* does not fit */
}

/* The queue bounds: defaults, flags, bad values, and what net_bound_queue sets on a socket. */
static void options_queue_bounds(void **state)
{
	struct argv_buf b;
	mkargv(&b, "dvv", "--token", "a.b.c", NULL);
	assert_int_equal(parse(&b), 0);
	assert_int_equal(cfg.data_queue.notsent_lowat, NET_NOTSENT_LOWAT_KB_DEFAULT << 10);
	assert_int_equal(cfg.data_queue.rcvbuf, 0); /* the relay link keeps autotuning */
	assert_int_equal(cfg.local_queue.rcvbuf, NET_LOCAL_RCVBUF_KB_DEFAULT << 10);
	assert_int_equal(cfg.local_queue.mss, NET_LOCAL_MSS_DEFAULT);
	assert_int_equal(cfg.data_queue.mss, 0); /* the relay link keeps its path's MSS */
	mkargv(&b, "dvv", "--token", "a.b.c", "--notsent-lowat-kb", "0", "--local-rcvbuf-kb", "32",
	       "--local-mss", "0", NULL);
	assert_int_equal(parse(&b), 0);
	assert_int_equal(cfg.data_queue.notsent_lowat, 0);
	assert_int_equal(cfg.local_queue.notsent_lowat, 0);
	assert_int_equal(cfg.local_queue.rcvbuf, 32 << 10);
	assert_int_equal(cfg.local_queue.mss, 0);
	mkargv(&b, "dvv", "--token", "a.b.c", "--local-mss", "535", NULL);
	assert_int_equal(parse(&b), -EINVAL);
	assert_non_null(strstr(err, "--local-mss"));
	mkargv(&b, "dvv", "--token", "a.b.c", "--local-mss", "65496", NULL);
	assert_int_equal(parse(&b), -EINVAL);
	mkargv(&b, "dvv", "--token", "a.b.c", "--local-mss", "3456", NULL);
	assert_int_equal(parse(&b), 0);
	assert_int_equal(cfg.local_queue.mss, 3456);
	mkargv(&b, "dvv", "--token", "a.b.c", "--local-rcvbuf-kb", "-1", NULL);
	assert_int_equal(parse(&b), -EINVAL);
	assert_non_null(strstr(err, "--local-rcvbuf-kb"));
	mkargv(&b, "dvv", "--token", "a.b.c", "--notsent-lowat-kb", "12x", NULL);
	assert_int_equal(parse(&b), -EINVAL);

	int fd = socket(AF_INET, SOCK_STREAM, 0), v = 0;
	socklen_t l = sizeof(v);
	assert_true(fd >= 0);
	assert_int_equal(net_bound_queue(fd, &(struct net_queue_opts){.notsent_lowat = 65536,
								      .rcvbuf = 32768}),
			 0);
	assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, &l), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &l), 0);
	assert_int_equal(v, 2 * 32768); /* the kernel doubles it for its overhead */
	close(fd);

	/* net_connect_bounded: the segment size reaches the peer, whose kernel sizes its own
	 * buffers from it (loopback's would be 65483) */
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int lsn = socket(AF_INET, SOCK_STREAM, 0), c = -1, s;
	assert_true(lsn >= 0);
	assert_int_equal(bind(lsn, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lsn, 1), 0);
	assert_int_equal(getsockname(lsn, (struct sockaddr *)&sa, &sl), 0);
	struct net_addr na = {.len = sizeof(sa)};
	memcpy(&na.ss, &sa, sizeof(sa));
	assert_int_equal(net_connect_bounded(&na, &(struct net_queue_opts){.mss = 7168, .rcvbuf = 65536},
					     &c),
			 0);
	s = accept(lsn, NULL, NULL);
	assert_true(s >= 0);
	l = sizeof(v);
	assert_int_equal(getsockopt(s, IPPROTO_TCP, TCP_MAXSEG, &v, &l), 0);
	assert_true(v > 0 && v <= 7168);
	l = sizeof(v);
	assert_int_equal(getsockopt(c, SOL_SOCKET, SO_RCVBUF, &v, &l), 0);
	assert_int_equal(v, 2 * 65536);
	close(s);
	close(c);
	close(lsn);
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
		cmocka_unit_test_setup(options_queue_bounds, opts_setup),
		cmocka_unit_test_setup(options_help_and_version, opts_setup),
		cmocka_unit_test_setup(token_file_trimmed_and_checked, opts_setup),
		cmocka_unit_test(header_split_across_many_reads_is_not_over_read),
		cmocka_unit_test(header_with_a_trace_id_gives_it_to_the_agent),
		cmocka_unit_test(header_with_longer_body_is_consumed_exactly),
		cmocka_unit_test(header_errors),
		cmocka_unit_test_setup(options_use_stored_credentials, opts_setup),
		cmocka_unit_test(bytes_for_humans),
		cmocka_unit_test(plan_frame_described),
		cmocka_unit_test(final_refusals_and_their_exit_status),
		cmocka_unit_test(jwt_claims_read_for_display),
	};
	return cmocka_run_group_tests_name("agent", tests, NULL, NULL);
}
