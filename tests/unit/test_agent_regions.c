/* Unit tests for the agent's region selection: --regions parsing, how --relay / --region /
 * --regions / --probe-regions and their environment variables combine, the median and pick
 * on synthetic samples, and one real measurement on loopback (a listener and a closed port). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "agent.h"
#include "log.h"
#include "net.h"

static struct agent_region regs[AGENT_MAX_REGIONS];
static unsigned nregs;
static char err[512];

static int rparse(const char *spec)
{
	err[0] = 0;
	memset(regs, 0, sizeof(regs));
	return agent_regions_parse(spec, regs, &nregs, err, sizeof(err));
}

/* ---- --regions parsing ---- */

static void regions_parse_ok(void **state)
{
	assert_int_equal(rparse(AGENT_DEFAULT_REGIONS), 0);
	assert_int_equal(nregs, 3);
	assert_string_equal(regs[0].name, "eu");
	assert_string_equal(regs[0].endpoint, AGENT_DEFAULT_RELAY);
	assert_string_equal(regs[1].name, "us");
	assert_string_equal(regs[1].endpoint, "relay.us.dvv.one:7000");
	assert_string_equal(regs[2].name, "asia");
	assert_string_equal(regs[2].endpoint, "relay.asia.dvv.one:7000");

	/* IPv6, blanks around entries, name characters, a single region */
	assert_int_equal(rparse(" eu-west_1=[::1]:7000 ,  US=10.0.0.1:1\t"), 0);
	assert_int_equal(nregs, 2);
	assert_string_equal(regs[0].name, "eu-west_1");
	assert_string_equal(regs[0].endpoint, "[::1]:7000");
	assert_string_equal(regs[1].name, "US");
	assert_string_equal(regs[1].endpoint, "10.0.0.1:1");
	assert_int_equal(rparse("solo=h:65535"), 0);
	assert_int_equal(nregs, 1);

	/* exactly the maximum */
	char spec[1024] = "";
	size_t off = 0;
	for (int i = 0; i < AGENT_MAX_REGIONS; i++)
		off += (size_t)snprintf(spec + off, sizeof(spec) - off, "%sr%d=h%d:70%02d",
					i ? "," : "", i, i, i);
	assert_int_equal(rparse(spec), 0);
	assert_int_equal(nregs, AGENT_MAX_REGIONS);
	assert_string_equal(regs[7].name, "r7");
	assert_string_equal(regs[7].endpoint, "h7:7007");
	assert_int_equal(agent_region_find(regs, nregs, "r5"), 5);
	assert_int_equal(agent_region_find(regs, nregs, "r8"), -1);
	assert_int_equal(agent_region_find(regs, nregs, "R5"), -1); /* names are exact */
}

static void expect_bad(const char *spec, const char *want)
{
	int rc = rparse(spec);
	if (rc != -EINVAL)
		fail_msg("'%s': expected -EINVAL, got %d (err '%s')", spec, rc, err);
	if (!strstr(err, want))
		fail_msg("'%s': error '%s' does not mention '%s'", spec, err, want);
}

static void regions_parse_rejects(void **state)
{
	expect_bad("", "empty");
	expect_bad("   ", "empty");
	expect_bad("eu-relay:7000", "no '='");
	expect_bad("eu=a:1,us", "entry 'us' has no '='");
	expect_bad("=relay:7000", "empty region name");
	expect_bad("eu=a:1, =b:2", "empty region name");
	expect_bad("eu=relay", "bad address 'relay'");
	expect_bad("eu=relay:0", "port from 1 to 65535");
	expect_bad("eu=relay:65536", "bad address 'relay:65536'");
	expect_bad("eu=relay:http", "bad address");
	expect_bad("eu=", "bad address ''");
	expect_bad("eu=:7000", "bad address");
	expect_bad("eu=a:1,us=b:2,eu=c:3", "names region 'eu' twice");
	expect_bad("eu=a:1,,us=b:2", "empty entry");
	expect_bad("eu=a:1,", "empty entry");
	expect_bad(",eu=a:1", "empty entry");
	expect_bad("e u=a:1", "region name");
	expect_bad("eu.west=a:1", "region name");
	expect_bad("averyveryverylongname=a:1", "1-15");
	char spec[1024] = "";
	size_t off = 0;
	for (int i = 0; i < AGENT_MAX_REGIONS + 1; i++)
		off += (size_t)snprintf(spec + off, sizeof(spec) - off, "%sr%d=h:7000",
					i ? "," : "", i);
	expect_bad(spec, "more than 8 regions");
}

/* ---- options ---- */

#define MAXARGS 16
struct argv_buf {
	char store[MAXARGS][512];
	char *argv[MAXARGS + 1];
	int argc;
};

static struct agent_config cfg;

static int parse_args(const char *first, ...)
{
	static struct argv_buf b;
	va_list ap;
	va_start(ap, first);
	b.argc = 0;
	snprintf(b.store[0], sizeof(b.store[0]), "dvv");
	b.argv[b.argc] = b.store[b.argc];
	b.argc++;
	for (const char *s = first; s && b.argc < MAXARGS; s = va_arg(ap, const char *)) {
		snprintf(b.store[b.argc], sizeof(b.store[0]), "%s", s);
		b.argv[b.argc] = b.store[b.argc];
		b.argc++;
	}
	b.argv[b.argc] = NULL;
	va_end(ap);
	err[0] = 0;
	return agent_opts_parse(b.argc, b.argv, &cfg, err, sizeof(err));
}

static int env_setup(void **state)
{
	unsetenv("DVV_TOKEN");
	unsetenv("DVV_RELAY");
	unsetenv("DVV_REGIONS");
	unsetenv("DVV_REGION");
	return 0;
}

static void options_default_measures_default_regions(void **state)
{
	assert_int_equal(parse_args("--token", "t", NULL), 0);
	assert_true(cfg.measure);
	assert_false(cfg.probe_only);
	assert_int_equal(cfg.region, -1);
	assert_int_equal(cfg.nregions, 3);
	assert_string_equal(cfg.regions[1].name, "us");
	/* the relay before any measurement: the first region */
	assert_string_equal(cfg.relay, AGENT_DEFAULT_RELAY);
}

static void options_relay_means_no_measurement(void **state)
{
	assert_int_equal(parse_args("--token", "t", "--relay", "r:7000", NULL), 0);
	assert_false(cfg.measure);
	assert_int_equal(cfg.nregions, 0);
	assert_string_equal(cfg.relay, "r:7000");
	/* DVV_RELAY too, even with DVV_REGIONS set */
	setenv("DVV_RELAY", "envrelay:7001", 1);
	setenv("DVV_REGIONS", "a=x:1,b=y:2", 1);
	assert_int_equal(parse_args("--token", "t", NULL), 0);
	assert_false(cfg.measure);
	assert_string_equal(cfg.relay, "envrelay:7001");
	/* a bad DVV_REGIONS does not matter then */
	setenv("DVV_REGIONS", "garbage", 1);
	assert_int_equal(parse_args("--token", "t", NULL), 0);
	/* but region flags beat the environment's relay */
	assert_int_equal(parse_args("--token", "t", "--regions", "a=x:1,b=y:2", NULL), 0);
	assert_true(cfg.measure);
	assert_int_equal(cfg.nregions, 2);
	assert_string_equal(cfg.relay, "x:1");
	env_setup(state);
}

static void options_regions_and_pin(void **state)
{
	assert_int_equal(parse_args("--token", "t", "--regions", "eu=10.0.0.1:7000,us=10.0.1.1:7000",
				    NULL),
			 0);
	assert_true(cfg.measure);
	assert_int_equal(cfg.nregions, 2);
	assert_string_equal(cfg.regions[1].endpoint, "10.0.1.1:7000");

	assert_int_equal(parse_args("--token", "t", "--regions", "eu=10.0.0.1:7000,us=10.0.1.1:7000",
				    "--region", "us", NULL),
			 0);
	assert_false(cfg.measure);
	assert_int_equal(cfg.region, 1);
	assert_string_equal(cfg.relay, "10.0.1.1:7000");

	/* from the environment; the flag wins */
	setenv("DVV_REGIONS", "a=x:1,b=y:2,c=z:3", 1);
	setenv("DVV_REGION", "c", 1);
	assert_int_equal(parse_args("--token", "t", NULL), 0);
	assert_false(cfg.measure);
	assert_string_equal(cfg.relay, "z:3");
	assert_int_equal(parse_args("--token", "t", "--region", "a", NULL), 0);
	assert_string_equal(cfg.relay, "x:1");
	assert_int_equal(parse_args("--token", "t", "--regions", "q=w:9", "--region", "q", NULL), 0);
	assert_string_equal(cfg.relay, "w:9");
	env_setup(state);

	/* the default list can be pinned too */
	assert_int_equal(parse_args("--token", "t", "--region", "asia", NULL), 0);
	assert_string_equal(cfg.relay, "relay.asia.dvv.one:7000");
}

static void options_probe_regions(void **state)
{
	/* no token needed, every region measured even with a pin */
	setenv("DVV_REGION", "us", 1);
	assert_int_equal(parse_args("--probe-regions", "--json", NULL), 0);
	assert_true(cfg.probe_only);
	assert_true(cfg.measure);
	assert_true(cfg.json);
	assert_int_equal(cfg.nregions, 3);
	/* it measures the list, not DVV_RELAY */
	setenv("DVV_RELAY", "r:1", 1);
	assert_int_equal(parse_args("--probe-regions", NULL), 0);
	assert_int_equal(cfg.nregions, 3);
	env_setup(state);
}

static void expect_opts_error(const char *want, ...)
{
	const char *a[8] = {0};
	va_list ap;
	va_start(ap, want);
	for (int i = 0; i < 7; i++)
		if (!(a[i] = va_arg(ap, const char *)))
			break;
	va_end(ap);
	int rc = parse_args(a[0], a[1], a[2], a[3], a[4], a[5], a[6], NULL);
	if (rc != -EINVAL)
		fail_msg("expected a usage error mentioning '%s', got rc=%d err='%s'", want, rc, err);
	if (!strstr(err, want))
		fail_msg("usage error '%s' does not mention '%s'", err, want);
}

static void options_region_errors(void **state)
{
	expect_opts_error("--regions entry 'eu' has no '='", "--token", "t", "--regions", "eu", NULL);
	expect_opts_error("--regions names region 'a' twice", "--token", "t", "--regions",
			  "a=x:1,a=y:2", NULL);
	expect_opts_error("--region 'mars' is not a known region (eu, us, asia)", "--token", "t",
			  "--region", "mars", NULL);
	expect_opts_error("do not combine it with --region", "--token", "t", "--relay", "r:1",
			  "--region", "eu", NULL);
	expect_opts_error("do not combine it with --regions", "--token", "t", "--relay", "r:1",
			  "--regions", "a=b:1", NULL);
	expect_opts_error("do not combine it with --probe-regions", "--relay", "r:1",
			  "--probe-regions", NULL);
	expect_opts_error("needs a value", "--token", "t", "--regions", NULL);
	setenv("DVV_REGIONS", "a=x:0", 1);
	expect_opts_error("DVV_REGIONS region 'a': bad address", "--token", "t", NULL);
	setenv("DVV_REGIONS", "a=x:1", 1);
	setenv("DVV_REGION", "b", 1);
	expect_opts_error("DVV_REGION 'b' is not a known region (a)", "--token", "t", NULL);
	env_setup(state);
	/* a token is still required to run the tunnel */
	expect_opts_error("no token", "--regions", "a=x:1", NULL);
}

/* ---- median and pick ---- */

static struct agent_region_result stats(int32_t a, int32_t b, int32_t c, int32_t d, int32_t e)
{
	int32_t us[AGENT_PROBE_SAMPLES] = {a, b, c, d, e};
	struct agent_region_result r;
	memset(&r, 0xa5, sizeof(r));
	agent_region_stats(us, AGENT_PROBE_SAMPLES, &r);
	return r;
}

static void stats_median_of_successful_samples(void **state)
{
	struct agent_region_result r = stats(30000, 10000, 50000, 20000, 40000);
	assert_true(r.reachable);
	assert_int_equal(r.ok, 5);
	assert_int_equal(r.median_us, 30000);
	assert_int_equal(r.min_us, 10000);

	/* one outlier does not move the median much */
	r = stats(12000, 12100, 900000, 11900, 12050);
	assert_int_equal(r.median_us, 12050);
	assert_int_equal(r.min_us, 11900);

	/* failures are left out; 4 left: the mean of the middle two */
	r = stats(-1, 40000, 10000, 30000, 20000);
	assert_true(r.reachable);
	assert_int_equal(r.ok, 4);
	assert_int_equal(r.median_us, 25000);
	assert_int_equal(r.min_us, 10000);

	/* 3 successes are enough */
	r = stats(-1, 7000, -1, 5000, 6000);
	assert_true(r.reachable);
	assert_int_equal(r.ok, 3);
	assert_int_equal(r.median_us, 6000);

	/* 2 are not: unreachable, but the minimum is still known */
	r = stats(-1, 7000, -1, -1, 5000);
	assert_false(r.reachable);
	assert_int_equal(r.ok, 2);
	assert_int_equal(r.min_us, 5000);

	r = stats(-1, -1, -1, -1, -1);
	assert_false(r.reachable);
	assert_int_equal(r.ok, 0);

	/* 0 us is a valid (very fast) sample */
	r = stats(0, 0, 0, -1, -1);
	assert_true(r.reachable);
	assert_int_equal(r.median_us, 0);
}

static void pick_lowest_median_first_of_ties(void **state)
{
	struct agent_region_result r[4];
	r[0] = stats(40000, 41000, 39000, 40500, 40200); /* 40.2 ms */
	r[1] = stats(5000, 5100, 4900, 5050, 5020);	 /* 5.02 ms */
	r[2] = stats(80000, 80000, 80000, 80000, 80000);
	assert_int_equal(agent_region_pick(r, 3), 1);
	/* the fastest last */
	r[2] = stats(1000, 1000, 1000, 1000, 1000);
	assert_int_equal(agent_region_pick(r, 3), 2);
	/* ties: the order given */
	r[0] = stats(1000, 1000, 1000, -1, -1);
	assert_int_equal(agent_region_pick(r, 3), 0);
	r[0] = stats(1001, 1001, 1001, -1, -1);
	assert_int_equal(agent_region_pick(r, 3), 2);
	r[1] = stats(900, 1100, 1000, 1000, 1000); /* median 1000 too, before region 2 */
	assert_int_equal(agent_region_pick(r, 3), 1);
	/* a single region */
	assert_int_equal(agent_region_pick(r, 1), 0);
}

static void pick_skips_unreachable(void **state)
{
	struct agent_region_result r[3];
	r[0] = stats(100, 100, -1, -1, -1); /* fastest samples, but only 2 */
	r[1] = stats(-1, -1, -1, -1, -1);
	r[2] = stats(90000, 90000, 90000, -1, -1);
	assert_int_equal(agent_region_pick(r, 3), 2);
	r[2] = stats(90000, 90000, -1, -1, -1);
	assert_int_equal(agent_region_pick(r, 3), -1); /* all unreachable */
	assert_int_equal(agent_region_pick(r, 0), -1);
}

/* ---- a real measurement on loopback ---- */

static int listen_any(struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)sa, sizeof(*sa)), 0);
	socklen_t l = sizeof(*sa);
	assert_int_equal(getsockname(fd, (struct sockaddr *)sa, &l), 0);
	return fd;
}

static void measure_loopback(void **state)
{
	struct sockaddr_in up, down;
	int lfd = listen_any(&up);
	assert_int_equal(listen(lfd, 64), 0);
	int cfd = listen_any(&down); /* bound, not listening: connects are refused */

	struct agent_region r[3];
	memset(r, 0, sizeof(r));
	snprintf(r[0].name, sizeof(r[0].name), "closed");
	snprintf(r[0].endpoint, sizeof(r[0].endpoint), "127.0.0.1:%u", ntohs(down.sin_port));
	snprintf(r[1].name, sizeof(r[1].name), "open");
	snprintf(r[1].endpoint, sizeof(r[1].endpoint), "127.0.0.1:%u", ntohs(up.sin_port));
	snprintf(r[2].name, sizeof(r[2].name), "bad");
	snprintf(r[2].endpoint, sizeof(r[2].endpoint), "no-such-host.invalid:7000");

	struct agent_region_result res[3];
	uint64_t t0 = mono_ms();
	assert_int_equal(agent_regions_measure(r, 3, res), 0);
	uint64_t took = mono_ms() - t0;
	/* 5 rounds 50 ms apart, no timeouts here */
	if (took < 4 * AGENT_PROBE_SPACING_MS - 5 || took > 1500)
		fail_msg("measurement took %llu ms", (unsigned long long)took);

	assert_false(res[0].reachable);
	assert_int_equal(res[0].ok, 0);
	assert_non_null(strstr(res[0].error, "refused"));
	assert_true(res[1].reachable);
	assert_int_equal(res[1].ok, AGENT_PROBE_SAMPLES);
	assert_true(res[1].min_us <= res[1].median_us);
	assert_true(res[1].median_us < 200000);
	assert_string_equal(res[1].error, "");
	assert_false(res[2].reachable);
	assert_non_null(strstr(res[2].error, "cannot resolve"));
	assert_int_equal(agent_region_pick(res, 3), 1);

	/* every probe connection was accepted by the kernel, and closed by the agent at once */
	int n = 0;
	for (;;) {
		struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
		setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		int a = accept(lfd, NULL, NULL);
		if (a < 0)
			break;
		char c;
		assert_int_equal(recv(a, &c, 1, 0), 0); /* EOF, nothing sent */
		close(a);
		n++;
	}
	assert_int_equal(n, AGENT_PROBE_SAMPLES);
	close(lfd);
	close(cfd);
}

static int done_calls;
static void count_done(struct agent_probe *p, void *arg) { done_calls++; }

static void probe_freed_in_flight(void **state)
{
	/* stopped right after it started (the agent stopping mid-measurement): nothing leaks,
	 * done is never called */
	struct sockaddr_in up;
	int lfd = listen_any(&up);
	assert_int_equal(listen(lfd, 64), 0);
	struct agent_region r = {.name = "x"};
	snprintf(r.endpoint, sizeof(r.endpoint), "127.0.0.1:%u", ntohs(up.sin_port));
	struct loop l;
	assert_int_equal(loop_init(&l), 0);
	struct agent_probe *p = NULL;
	done_calls = 0;
	assert_int_equal(agent_probe_start(&l, &r, 1, count_done, NULL, &p), 0);
	assert_non_null(p);
	agent_probe_free(p);
	loop_free(&l);
	assert_int_equal(done_calls, 0);
	close(lfd);
}

int main(void)
{
	log_init("test", LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(regions_parse_ok),
		cmocka_unit_test(regions_parse_rejects),
		cmocka_unit_test_setup(options_default_measures_default_regions, env_setup),
		cmocka_unit_test_setup(options_relay_means_no_measurement, env_setup),
		cmocka_unit_test_setup(options_regions_and_pin, env_setup),
		cmocka_unit_test_setup(options_probe_regions, env_setup),
		cmocka_unit_test_setup(options_region_errors, env_setup),
		cmocka_unit_test(stats_median_of_successful_samples),
		cmocka_unit_test(pick_lowest_median_first_of_ties),
		cmocka_unit_test(pick_skips_unreachable),
		cmocka_unit_test(measure_loopback),
		cmocka_unit_test(probe_freed_in_flight),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
