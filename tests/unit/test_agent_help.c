/* dvv's --help has one line for every option of its getopt table, and each line that names a
 * default names the one agent_opts_parse really starts from. */
#include <getopt.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent.h"

static char help[16 * 1024];

static void read_help(void)
{
	FILE *tmp = tmpfile();
	assert_non_null(tmp);
	agent_opts_usage(tmp);
	rewind(tmp);
	size_t n = fread(help, 1, sizeof(help) - 1, tmp);
	help[n] = 0;
	fclose(tmp);
}

/* the help line of --name: "  --name" then a space (or " ARG"), up to the newline */
static const char *line_of(const char *name, char *out, size_t cap)
{
	char key[64];
	snprintf(key, sizeof(key), "\n  --%s ", name);
	const char *p = strstr(help, key);
	if (!p)
		return NULL;
	p++;
	const char *e = strchr(p, '\n');
	size_t n = e ? (size_t)(e - p) : strlen(p);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, p, n);
	out[n] = 0;
	return out;
}

/* the text inside "(default: ...)" of a line, or NULL */
static const char *default_of(const char *line, char *out, size_t cap)
{
	const char *p = strstr(line, "(default: ");
	if (!p)
		return NULL;
	p += strlen("(default: ");
	const char *e = strrchr(p, ')');
	if (!e)
		return NULL;
	size_t n = (size_t)(e - p) < cap - 1 ? (size_t)(e - p) : cap - 1;
	memcpy(out, p, n);
	out[n] = 0;
	return out;
}

static void every_option_has_one_line(void **state)
{
	read_help();
	size_t n = 0;
	for (const struct option *o = agent_opts_table(); o->name; o++, n++) {
		char line[512];
		if (!line_of(o->name, line, sizeof(line)))
			fail_msg("--help has no line for --%s", o->name);
		/* one line: the next option's text does not run into it */
		if (strstr(line + 2, "  --"))
			fail_msg("--%s's help line holds another option: %s", o->name, line);
	}
	assert_true(n >= 19);
}

static void shown_defaults_are_the_parsers(void **state)
{
	read_help();
	unsetenv("DVV_RELAY");
	unsetenv("DVV_REGIONS");
	unsetenv("DVV_REGION");
	unsetenv("DVV_TOKEN");
	struct agent_config cfg;
	char err[256];
	/* without --relay: the region list is the default one, nothing else given */
	char *argv[] = {"dvv", "--token", (char[]){"a.b.c"}, NULL};
	assert_int_equal(agent_opts_parse(3, argv, &cfg, err, sizeof(err)), 0);

	char line[512], d[512], want[512];
	assert_non_null(line_of("local", line, sizeof(line)));
	assert_non_null(default_of(line, d, sizeof(d)));
	assert_string_equal(d, cfg.local);

	assert_non_null(line_of("notsent-lowat-kb", line, sizeof(line)));
	assert_non_null(default_of(line, d, sizeof(d)));
	snprintf(want, sizeof(want), "%d", cfg.data_queue.notsent_lowat >> 10);
	assert_string_equal(d, want);

	assert_non_null(line_of("local-rcvbuf-kb", line, sizeof(line)));
	assert_non_null(default_of(line, d, sizeof(d)));
	snprintf(want, sizeof(want), "%d", cfg.local_queue.rcvbuf >> 10);
	assert_string_equal(d, want);

	assert_non_null(line_of("local-mss", line, sizeof(line)));
	assert_non_null(default_of(line, d, sizeof(d)));
	snprintf(want, sizeof(want), "%d", cfg.local_queue.mss);
	assert_string_equal(d, want);

	static const char *const levels[] = {"error", "warn", "info", "debug"};
	assert_non_null(line_of("log-level", line, sizeof(line)));
	assert_non_null(default_of(line, d, sizeof(d)));
	assert_true(cfg.log_level >= 0 && cfg.log_level < 4);
	assert_string_equal(d, levels[cfg.log_level]);

	/* -1: one thread per CPU */
	assert_int_equal(cfg.workers, -1);
	assert_non_null(line_of("workers", line, sizeof(line)));
	assert_non_null(default_of(line, d, sizeof(d)));
	assert_string_equal(d, "one per CPU");

	/* the regions measured without --relay, in the NAME=HOST:PORT form the option takes */
	assert_non_null(line_of("regions", line, sizeof(line)));
	assert_non_null(default_of(line, d, sizeof(d)));
	want[0] = 0;
	for (unsigned i = 0; i < cfg.nregions; i++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s=%s", i ? "," : "",
			 cfg.regions[i].name, cfg.regions[i].endpoint);
	assert_true(cfg.nregions >= 1);
	assert_string_equal(d, want);

	/* switches are off unless given */
	static const char *const off[] = {"proxy-protocol", "retry-auth", "json"};
	assert_false(cfg.proxy_protocol || cfg.retry_auth || cfg.json);
	for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++) {
		assert_non_null(line_of(off[i], line, sizeof(line)));
		assert_non_null(default_of(line, d, sizeof(d)));
		assert_string_equal(d, "off");
	}
	agent_opts_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_option_has_one_line),
		cmocka_unit_test(shown_defaults_are_the_parsers),
	};
	return cmocka_run_group_tests_name("agent_help", tests, NULL, NULL);
}
