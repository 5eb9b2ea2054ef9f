/* dvv-relay's option parsing: the instance id names a directory under --bpf-pin-root, so it must
 * be a plain file name. */
#include <setjmp.h>
#include <stdarg.h>
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

/* relay_cfg_parse with the required flags plus the given ones; what it printed on stderr ends up
 * in errbuf. */
static int parse(const char *a1, const char *a2)
{
	char *argv[12] = {"dvv-relay", "--tls-cert", "c.pem", "--tls-key", "k.pem",
			  "--jwt-pubkey", "j.pub"};
	int argc = 7;
	if (a1)
		argv[argc++] = (char *)a1;
	if (a2)
		argv[argc++] = (char *)a2;
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

static int setup(void **state)
{
	unsetenv("DVV_INSTANCE_ID");
	return 0;
}

static void dot_names_are_refused(void **state)
{
	assert_int_equal(parse("--instance-id", "."), -1);
	assert_non_null(strstr(errbuf, "--instance-id"));
	assert_int_equal(parse("--instance-id", ".."), -1);
	assert_non_null(strstr(errbuf, "--instance-id"));
	setenv("DVV_INSTANCE_ID", "..", 1);
	assert_int_equal(parse(NULL, NULL), -1);
	unsetenv("DVV_INSTANCE_ID");
	/* hidden names and names that read as options: refused too */
	assert_int_equal(parse("--instance-id", ".hidden"), -1);
	assert_int_equal(parse("--instance-id", "-x"), -1);
	assert_int_equal(parse("--instance-id", "relay-1.eu_a"), 0);
}

static void an_empty_id_is_refused_not_replaced(void **state)
{
	assert_int_equal(parse("--instance-id", ""), -1);
	assert_non_null(strstr(errbuf, "--instance-id"));
	setenv("DVV_INSTANCE_ID", "", 1);
	assert_int_equal(parse(NULL, NULL), -1);
	assert_non_null(strstr(errbuf, "DVV_INSTANCE_ID"));
	unsetenv("DVV_INSTANCE_ID");
}

static void ids_must_fit_the_buffer(void **state)
{
	char id[sizeof(cfg.instance_id) + 1];
	memset(id, 'a', sizeof(cfg.instance_id));
	id[sizeof(cfg.instance_id)] = 0; /* one byte too long */
	assert_int_equal(parse("--instance-id", id), -1);
	id[sizeof(cfg.instance_id) - 1] = 0; /* exactly fits */
	assert_int_equal(parse("--instance-id", id), 0);
	assert_string_equal(cfg.instance_id, id);
}

static void paths_and_odd_characters_are_refused(void **state)
{
	static const char *const bad[] = {"../etc", "a/b", "/abs", "a b", "a\\b", "a\nb", "é"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse("--instance-id", bad[i]) != -1)
			fail_msg("--instance-id '%s' was accepted", bad[i]);
}

static void ordinary_ids_are_kept(void **state)
{
	static const char *const good[] = {"relay1-eu", "r1.eu.dvv.one", "a", "A_b-9", "a..b"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (parse("--instance-id", good[i]) != 0)
			fail_msg("--instance-id '%s' was refused: %s", good[i], errbuf);
		assert_string_equal(cfg.instance_id, good[i]);
	}
}

static void the_default_is_host_dash_pid(void **state)
{
	assert_int_equal(parse(NULL, NULL), 0);
	char host[48], want[80];
	relay_cfg_default_host(host, sizeof(host));
	snprintf(want, sizeof(want), "%s-%d", host, (int)getpid());
	assert_string_equal(cfg.instance_id, want);
	for (const char *p = host; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-'))
			fail_msg("default host part '%s' holds '%c'", host, *p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(dot_names_are_refused, setup),
		cmocka_unit_test_setup(an_empty_id_is_refused_not_replaced, setup),
		cmocka_unit_test_setup(ids_must_fit_the_buffer, setup),
		cmocka_unit_test_setup(paths_and_odd_characters_are_refused, setup),
		cmocka_unit_test_setup(ordinary_ids_are_kept, setup),
		cmocka_unit_test_setup(the_default_is_host_dash_pid, setup),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
