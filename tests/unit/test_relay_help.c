/* dvv-relay's --help shows every option of its table with the default the parser really starts
 * from, and --default-tunnel picks which hostnames reach the default tunnel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static struct relay_cfg cfg;
static char errbuf[1024];
static char help[64 * 1024];

/* relay_cfg_parse with the required flags plus extra (NULL-terminated); stderr into errbuf */
static int parse(const char *const *extra)
{
	char *argv[32] = {"dvv-relay", "--tls-cert", "c.pem", "--tls-key", "k.pem",
			  "--jwt-pubkey", "j.pub"};
	int argc = 7;
	for (; extra && *extra && argc < 31; extra++)
		argv[argc++] = (char *)*extra;
	argv[argc] = NULL;
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	fflush(stderr);
	int saved = dup(2);
	dup2(fileno(tmp), 2);
	int rc = relay_cfg_parse(&cfg, argc, argv);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	size_t n = fread(errbuf, 1, sizeof(errbuf) - 1, tmp);
	errbuf[n] = 0;
	fclose(tmp);
	return rc;
}

/* --help as the binary prints it (relay_cfg_parse prints relay_cfg_usage to stdout) */
static void read_help(void)
{
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	fflush(stdout);
	int saved = dup(1);
	dup2(fileno(tmp), 1);
	char *argv[] = {"dvv-relay", "--help", NULL};
	struct relay_cfg c;
	int rc = relay_cfg_parse(&c, 2, argv);
	fflush(stdout);
	dup2(saved, 1);
	close(saved);
	assert_int_equal(rc, 1);
	rewind(tmp);
	size_t n = fread(help, 1, sizeof(help) - 1, tmp);
	help[n] = 0;
	fclose(tmp);
}

/* the help line of --flag (NUL-terminated copy), or fail */
static void help_line(const char *flag, char *out, size_t cap)
{
	char key[80];
	snprintf(key, sizeof(key), "\n  --%s ", flag);
	const char *p = strstr(help, key);
	if (!p)
		fail_msg("--help has no line for --%s", flag);
	p++;
	const char *e = strchr(p, '\n');
	size_t n = e ? (size_t)(e - p) : strlen(p);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, p, n);
	out[n] = 0;
}

static void every_option_shows_its_real_default(void **state)
{
	unsetenv("DVV_INSTANCE_ID");
	read_help();
	/* the values a relay started with only the required flags runs with */
	assert_int_equal(parse(NULL), 0);
	size_t n = relay_cfg_nopts(), with_default = 0;
	assert_true(n > 50);
	for (size_t i = 0; i < n; i++) {
		char flag[64], line[1024], want[300];
		size_t off;
		bool is_int, derived;
		assert_int_equal(relay_cfg_opt(i, flag, sizeof(flag), &off, &is_int, &derived), 0);
		if (!strcmp(flag, "tls-cert") || !strcmp(flag, "tls-key") || !strcmp(flag, "jwt-pubkey"))
			continue; /* required: given above, no default */
		help_line(flag, line, sizeof(line));
		const char *p = (const char *)&cfg + off;
		if (derived) {
			/* computed at start-up (host name, CPUs, another option): said in words */
			if (!strstr(line, "(default: ") || strstr(line, "(default: )"))
				fail_msg("--%s: its computed default is not described: %s", flag, line);
			with_default++;
			continue;
		}
		if (is_int)
			snprintf(want, sizeof(want), "(default: %d)", *(const int *)(const void *)p);
		else if (*p)
			snprintf(want, sizeof(want), "(default: %s)", p);
		else {
			if (strstr(line, "(default:"))
				fail_msg("--%s has no default but its help line shows one: %s", flag, line);
			continue;
		}
		if (!strstr(line, want))
			fail_msg("--%s: help line lacks %s: %s", flag, want, line);
		with_default++;
	}
	assert_true(with_default > 40);
	char line[256];
	help_line("log-level", line, sizeof(line));
	assert_non_null(strstr(line, "(default: info)"));
	/* a changed default shows: the text is made from the parser's values */
	help_line("join-wait-ms", line, sizeof(line));
	assert_non_null(strstr(line, "(default: 5000)"));
	assert_int_equal(cfg.join_wait_ms, 5000);
}

static void default_tunnel_label_gets_the_relays_suffix(void **state)
{
	const char *a[] = {"--region", "us", "--base-domain", "Play.Example.COM.", "--default-tunnel",
			   "Brave-Otter", NULL};
	assert_int_equal(parse(a), 0);
	assert_string_equal(cfg.default_host, "brave-otter.us.play.example.com");
	const char *b[] = {"--base-domain", "example.com", "--default-tunnel",
			   "brave-otter.asia.example.com", NULL};
	assert_int_equal(parse(b), 0);
	assert_string_equal(cfg.default_host, "brave-otter.asia.example.com");
}

static void default_tunnel_outside_the_base_domain_is_refused(void **state)
{
	static const char *const bad[] = {"mc.other.org", "eu.example.com", "example.com",
					  "a b", ".eu.example.com"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *a[] = {"--base-domain", "example.com", "--default-tunnel", bad[i], NULL};
		if (parse(a) != -1)
			fail_msg("--default-tunnel '%s' was accepted", bad[i]);
		assert_non_null(strstr(errbuf, "--default-tunnel"));
	}
}

static void which_hostnames_reach_the_default(void **state)
{
	const char *a[] = {"--region", "eu", "--base-domain", "example.com", "--default-tunnel",
			   "home", NULL};
	assert_int_equal(parse(a), 0);
	/* no tunnel name: the default */
	static const char *const yes[] = {"localhost", "127.0.0.1", "::1", "203.0.113.7",
					  "example.com", "eu.example.com", "us.example.com",
					  "mc.friends.org", "", "notexample.com", "x.eu.example.co"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		const char *d = relay_cfg_default_for(&cfg, yes[i]);
		if (!d || strcmp(d, "home.eu.example.com"))
			fail_msg("'%s' should reach the default, got %s", yes[i], d ? d : "NULL");
	}
	/* tunnel names, known or not: never the default */
	static const char *const no[] = {"home.eu.example.com", "typo.eu.example.com",
					 "other.us.example.com", "a.b.c.example.com"};
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		if (relay_cfg_default_for(&cfg, no[i]))
			fail_msg("tunnel name '%s' reached the default", no[i]);
	/* without the option nothing changes */
	assert_int_equal(parse(NULL), 0);
	assert_null(relay_cfg_default_for(&cfg, "localhost"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_option_shows_its_real_default),
		cmocka_unit_test(default_tunnel_label_gets_the_relays_suffix),
		cmocka_unit_test(default_tunnel_outside_the_base_domain_is_refused),
		cmocka_unit_test(which_hostnames_reach_the_default),
	};
	return cmocka_run_group_tests_name("relay_help", tests, NULL, NULL);
}
