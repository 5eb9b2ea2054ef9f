/* Unit tests of the agent's credentials file (client/creds.c): where it lives, a save/load
 * round trip with the modes it must have, refusal of files others can read or that others own,
 * malformed, oversize and invalid content, and that a save leaves no temp file behind. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "creds.h"
#include "renew.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/dvv-creds-XXXXXX");
	assert_non_null(mkdtemp(root));
	char x[300];
	snprintf(x, sizeof(x), "%s/cfg", root);
	setenv("XDG_CONFIG_HOME", x, 1);
	return 0;
}

static int teardown(void **state)
{
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static void sample(struct agent_creds *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->api, sizeof(c->api), "http://127.0.0.1:8080");
	snprintf(c->token, sizeof(c->token), "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln");
	snprintf(c->session, sizeof(c->session), "AbC-_123");
	c->nrelays = 2;
	snprintf(c->relays[0].name, sizeof(c->relays[0].name), "eu");
	snprintf(c->relays[0].endpoint, sizeof(c->relays[0].endpoint), "127.0.0.1:7000");
	snprintf(c->relays[1].name, sizeof(c->relays[1].name), "us");
	snprintf(c->relays[1].endpoint, sizeof(c->relays[1].endpoint), "relay.us.dvv.one:7000");
	c->ca_pem = strdup("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
	snprintf(c->tunnel, sizeof(c->tunnel), "t_abcdefghij0123456789");
}

static void paths_follow_xdg_then_home(void **state)
{
	char p[512], d[512], err[200];
	assert_int_equal(creds_path(p, sizeof(p), d, sizeof(d), err, sizeof(err)), 0);
	char want[400];
	snprintf(want, sizeof(want), "%s/cfg/dvv/agent.json", root);
	assert_string_equal(p, want);
	snprintf(want, sizeof(want), "%s/cfg/dvv", root);
	assert_string_equal(d, want);
	/* a relative XDG_CONFIG_HOME is ignored (XDG base directory spec) */
	setenv("XDG_CONFIG_HOME", "relative", 1);
	char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
	setenv("HOME", "/home/someone", 1);
	assert_int_equal(creds_path(p, sizeof(p), NULL, 0, err, sizeof(err)), 0);
	assert_string_equal(p, "/home/someone/.config/dvv/agent.json");
	unsetenv("XDG_CONFIG_HOME");
	unsetenv("HOME");
	assert_int_equal(creds_path(p, sizeof(p), NULL, 0, err, sizeof(err)), -ENOENT);
	if (home)
		setenv("HOME", home, 1);
	free(home);
	char x[300];
	snprintf(x, sizeof(x), "%s/cfg", root);
	setenv("XDG_CONFIG_HOME", x, 1);
}

static void save_load_round_trip_with_safe_modes(void **state)
{
	char p[512], d[512], err[300];
	assert_int_equal(creds_path(p, sizeof(p), d, sizeof(d), err, sizeof(err)), 0);
	struct agent_creds c, back;
	sample(&c);
	/* no file yet */
	assert_int_equal(creds_load(p, &back, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "dvv login"));
	assert_int_equal(creds_save(d, p, &c, err, sizeof(err)), 0);
	struct stat st;
	assert_int_equal(stat(d, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(creds_load(p, &back, err, sizeof(err)), 0);
	assert_string_equal(back.api, c.api);
	assert_string_equal(back.token, c.token);
	assert_string_equal(back.session, c.session);
	assert_int_equal(back.nrelays, 2);
	assert_string_equal(back.relays[1].name, "us");
	assert_string_equal(back.relays[1].endpoint, "relay.us.dvv.one:7000");
	assert_string_equal(back.ca_pem, c.ca_pem);
	assert_string_equal(back.tunnel, c.tunnel);
	creds_clear(&back);
	/* nulls round trip as empty */
	c.token[0] = c.session[0] = c.tunnel[0] = 0;
	free(c.ca_pem);
	c.ca_pem = NULL;
	c.nrelays = 0;
	/* a looser existing directory is tightened */
	assert_int_equal(chmod(d, 0755), 0);
	assert_int_equal(creds_save(d, p, &c, err, sizeof(err)), 0);
	assert_int_equal(stat(d, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(creds_load(p, &back, err, sizeof(err)), 0);
	assert_string_equal(back.token, "");
	assert_null(back.ca_pem);
	assert_int_equal(back.nrelays, 0);
	creds_clear(&back);
	/* nothing but agent.json is left in the directory */
	DIR *dir = opendir(d);
	assert_non_null(dir);
	int n = 0;
	for (struct dirent *e; (e = readdir(dir));)
		if (e->d_name[0] != '.') {
			assert_string_equal(e->d_name, "agent.json");
			n++;
		}
	closedir(dir);
	assert_int_equal(n, 1);
	creds_clear(&c);
}

static void unsafe_modes_refused_with_the_fix(void **state)
{
	char p[512], d[512], err[400];
	assert_int_equal(creds_path(p, sizeof(p), d, sizeof(d), err, sizeof(err)), 0);
	struct agent_creds c, back;
	sample(&c);
	assert_int_equal(creds_save(d, p, &c, err, sizeof(err)), 0);
	const mode_t bad[] = {0640, 0604, 0660, 0602, 0610};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(chmod(p, bad[i]), 0);
		assert_int_equal(creds_load(p, &back, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "chmod 600"));
		assert_null(strstr(err, c.token)); /* never the secret */
	}
	assert_int_equal(chmod(p, 0400), 0);
	assert_int_equal(creds_load(p, &back, err, sizeof(err)), 0);
	creds_clear(&back);
	/* owned by someone else (only root can arrange that) */
	if (geteuid() == 0) {
		assert_int_equal(chmod(p, 0600), 0);
		assert_int_equal(chown(p, 12345, 12345), 0);
		assert_int_equal(creds_load(p, &back, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "another user"));
		assert_int_equal(chown(p, 0, 0), 0);
	}
	creds_clear(&c);
}

static void write_raw(const char *p, const char *text, size_t n)
{
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	close(fd);
}

static void malformed_and_invalid_refused(void **state)
{
	char p[512], d[512], err[400];
	assert_int_equal(creds_path(p, sizeof(p), d, sizeof(d), err, sizeof(err)), 0);
	struct agent_creds c;
	mkdir(root, 0700);
	char cfg[400];
	snprintf(cfg, sizeof(cfg), "%s/cfg", root);
	mkdir(cfg, 0700);
	mkdir(d, 0700);
	const char *bad[] = {
		"",
		"[]",
		"{\"api\": 5}",
		"{\"token\": \"x\"}",
		"{\"api\": \"ftp://x\"}",
		"{\"api\": \"http://h\", \"token\": \"a b\"}",
		"{\"api\": \"http://h\", \"session\": \"a/b\"}",
		"{\"api\": \"http://h\", \"tunnel\": \"t x\"}",
		"{\"api\": \"http://h\", \"relays\": [\"eu\"]}",
		"{\"api\": \"http://h\", \"relays\": {\"eu\": \"nohostport\"}}",
		"{\"api\": \"http://h\", \"relays\": {\"bad name!\": \"h:1\"}}",
		"{\"api\": \"http://h\", \"ca_pem\": \"not a pem\"}",
		"{\"api\": \"http://h\", \"api\": \"http://g\"}",
		"{\"api\": \"http://h\", \"token\": \"a\\u0000b\"}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_raw(p, bad[i], strlen(bad[i]));
		err[0] = 0;
		int rc = creds_load(p, &c, err, sizeof(err));
		if (rc != -EINVAL)
			fail_msg("case %zu: %d (%s)", i, rc, err);
		assert_non_null(strstr(err, "dvv login"));
	}
	/* too large */
	size_t n = CREDS_FILE_MAX + 10;
	char *big = malloc(n);
	memset(big, ' ', n);
	write_raw(p, big, n);
	free(big);
	assert_int_equal(creds_load(p, &c, err, sizeof(err)), -EFBIG);
	/* a minimal valid one */
	const char *ok = "{\"api\": \"https://api.dvv.one\"}";
	write_raw(p, ok, strlen(ok));
	assert_int_equal(creds_load(p, &c, err, sizeof(err)), 0);
	assert_string_equal(c.api, "https://api.dvv.one");
	creds_clear(&c);
	/* save refuses invalid fields */
	sample(&c);
	snprintf(c.relays[0].endpoint, sizeof(c.relays[0].endpoint), "no-port");
	assert_int_equal(creds_save(d, p, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "relays"));
	creds_clear(&c);
}

/* renew_due: iat + half the lifetime from the token's payload; -1 for anything unusable. */
static void renew_due_from_the_payload(void **state)
{
	(void)state;
	/* {"iat":1000,"exp":3000} and {"iat":1000,"exp":2001} (odd lifetime: rounds up) */
	assert_int_equal(renew_due("h.eyJpYXQiOjEwMDAsImV4cCI6MzAwMH0.s"), 2000);
	assert_int_equal(renew_due("h.eyJpYXQiOjEwMDAsImV4cCI6MjAwMX0.s"), 1501);
	/* exp before iat, no iat, not JSON, not base64url, no dots, empty */
	assert_int_equal(renew_due("h.eyJpYXQiOjMwMDAsImV4cCI6MTAwMH0.s"), -1);
	assert_int_equal(renew_due("h.eyJleHAiOjMwMDB9.s"), -1);
	assert_int_equal(renew_due("h.bm90IGpzb24.s"), -1);
	assert_int_equal(renew_due("h.!!!.s"), -1);
	assert_int_equal(renew_due("nodots"), -1);
	assert_int_equal(renew_due(""), -1);
	/* a payload over the bound is refused, not overrun */
	char big[4000];
	memset(big, 'A', sizeof(big));
	big[0] = 'h';
	big[1] = '.';
	big[sizeof(big) - 3] = '.';
	big[sizeof(big) - 2] = 's';
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(renew_due(big), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(paths_follow_xdg_then_home, setup, teardown),
		cmocka_unit_test_setup_teardown(save_load_round_trip_with_safe_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(unsafe_modes_refused_with_the_fix, setup, teardown),
		cmocka_unit_test_setup_teardown(malformed_and_invalid_refused, setup, teardown),
		cmocka_unit_test(renew_due_from_the_payload),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
