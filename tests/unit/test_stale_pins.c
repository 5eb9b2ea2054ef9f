/* Start-up cleanup of pin directories left by dead relays of this host: only <host>-<pid>/ with
 * a pid that no longer exists goes; everything else under the pin root stays. Runs on a plain
 * temporary directory (the code only lists, unlinks and removes directories). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "relay.h"

static char root[64];

static int dead_pid(int from)
{
	for (int pid = from; pid < from + 1000; pid++)
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return pid;
	fail_msg("no dead pid found from %d", from);
	return -1;
}

static void mk(const char *name, const char *const *files)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", root, name);
	if (mkdir(p, 0700) < 0)
		fail_msg("mkdir %s: %s", p, strerror(errno));
	for (; files && *files; files++) {
		char f[320];
		snprintf(f, sizeof(f), "%s/%s", p, *files);
		int fd = open(f, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		close(fd);
	}
}

static bool exists(const char *name)
{
	char p[256];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s", root, name);
	return stat(p, &st) == 0;
}

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/dvv-stale-pins-XXXXXX");
	assert_non_null(mkdtemp(root));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd) == 0 ? 0 : -1;
}

static void only_dead_relays_of_this_host_are_removed(void **state)
{
	static const char *const pins[] = {"dvv_pairs", "dvv_stats", "xdp_guard_prog", NULL};
	int d1 = dead_pid(4194000), d2 = dead_pid(d1 + 1);
	char n[40][64];
	int k = 0;
	/* removed: this host's default ids of pids that are gone, with or without pins */
	snprintf(n[k++], 64, "vm-7-%d", d1);
	snprintf(n[k++], 64, "vm-7-%d", d2);
	mk(n[0], pins);
	mk(n[1], NULL);
	/* kept */
	int keep0 = k;
	snprintf(n[k++], 64, "vm-7-%d", (int)getpid());  /* ourselves */
	snprintf(n[k++], 64, "vm-7-%d", 1);		  /* alive */
	snprintf(n[k++], 64, "vm-7-%d", (int)getppid()); /* alive */
	snprintf(n[k++], 64, "vm-8-%d", d1);		  /* another host */
	snprintf(n[k++], 64, "vm-%d", d1);		  /* another host ("vm") */
	snprintf(n[k++], 64, "xvm-7-%d", d1);
	snprintf(n[k++], 64, "vm-7-%dx", d1);
	snprintf(n[k++], 64, "vm-7-0%d", d1);
	snprintf(n[k++], 64, "vm-7--%d", d1);
	snprintf(n[k++], 64, "vm-7-");
	snprintf(n[k++], 64, "vm-7");
	snprintf(n[k++], 64, "vm-7-99999999999999999999");
	snprintf(n[k++], 64, "dev-cluster-%d", d1);
	snprintf(n[k++], 64, "e2e-relay");
	for (int i = keep0; i < k; i++)
		mk(n[i], pins);
	/* a file (not a directory) with a matching name stays too */
	char f[128];
	snprintf(f, sizeof(f), "%s/vm-7-%d", root, dead_pid(d2 + 1));
	int fd = open(f, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);

	assert_int_equal(relay_remove_stale_pins(root, "vm-7"), 2);
	assert_false(exists(n[0]));
	assert_false(exists(n[1]));
	for (int i = keep0; i < k; i++) {
		if (!exists(n[i]))
			fail_msg("%s was removed", n[i]);
		char p[128];
		snprintf(p, sizeof(p), "%s/dvv_pairs", n[i]);
		if (!exists(p))
			fail_msg("a pin in %s was removed", n[i]);
	}
	struct stat st;
	assert_int_equal(stat(f, &st), 0);
	/* nothing left to do the second time */
	assert_int_equal(relay_remove_stale_pins(root, "vm-7"), 0);
}

static void a_missing_root_is_not_an_error(void **state)
{
	char p[128];
	snprintf(p, sizeof(p), "%s/nope", root);
	assert_int_equal(relay_remove_stale_pins(p, "vm"), 0);
}

int main(void)
{
	log_init("test_stale_pins", LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(only_dead_relays_of_this_host_are_removed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(a_missing_root_is_not_an_error, setup, teardown),
	};
	return cmocka_run_group_tests_name("stale_pins", tests, NULL, NULL);
}
