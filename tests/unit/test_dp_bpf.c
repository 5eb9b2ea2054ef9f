/* The bpf data plane's own machinery, fast: it starts (load, attach, pin, self-test splice on
 * loopback), pins readable maps, reports stats, falls back to userspace when told to fail, and
 * leaves nothing pinned. The splice behaviours themselves (1 GiB, FIN/RST, slow readers...) are
 * in tests/splice/ (tests/splice/run.sh). Needs root; skipped otherwise. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "bpf_log.h"
#include "config.h"
#include "dataplane.h"
#include "dp_bpf.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define PIN_ROOT "/sys/fs/bpf/dvv"

static struct relay_cfg cfg;

static int setup(void **state)
{
	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.bpf_pin_root, sizeof(cfg.bpf_pin_root), PIN_ROOT);
	snprintf(cfg.instance_id, sizeof(cfg.instance_id), "unit-dp-bpf-%d", (int)getpid());
	snprintf(cfg.dataplane, sizeof(cfg.dataplane), "bpf");
	cfg.max_lag_mb = 64;
	if (geteuid() != 0)
		skip(); /* loading BPF needs root (CAP_BPF + CAP_NET_ADMIN) */
	return 0;
}

static bool pinned(const char *map)
{
	char path[300];
	struct stat st;
	snprintf(path, sizeof(path), PIN_ROOT "/%s/%s", cfg.instance_id, map);
	return stat(path, &st) == 0;
}

static void pair(int lfd, const struct sockaddr_in *sa, int *app, int *relay)
{
	*app = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*app >= 0);
	assert_int_equal(connect(*app, (const struct sockaddr *)sa, sizeof(*sa)), 0);
	*relay = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	assert_true(*relay >= 0);
	struct timeval tv = {.tv_sec = 5};
	setsockopt(*app, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static void plane_starts_pins_readable_maps_and_cleans_up(void **state)
{
	struct dataplane dp = {.ops = &dp_bpf_ops};
	struct dvv_splice_stats st;
	char cmd[400], line[256];
	assert_int_equal(dp.ops->start(&dp, &cfg), 0); /* includes the loopback self-test */
#define X(name) assert_true(pinned(#name));
	DVV_SPLICE_MAPS(X)
#undef X
	/* BTF goes with the pins: bpftool prints field names */
	snprintf(cmd, sizeof(cmd), "bpftool map dump pinned " PIN_ROOT "/%s/dvv_verdicts 2>&1",
		 cfg.instance_id);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	bool named = false;
	while (fgets(line, sizeof(line), f))
		named |= strstr(line, "\"skbs\"") != NULL;
	pclose(f);
	assert_true(named);
	/* the self-test spliced in the kernel, and left nothing behind */
	assert_int_equal(dp_bpf_stats(&dp, &st, true), 0);
	assert_true(st.verdicts[DVV_V_REDIRECT].bytes > 0);
	assert_int_equal(st.sockets_in_map + st.active_in_map + st.conns_in_map + st.tunnels_in_map,
			 0);
	assert_int_equal(st.pairs_total, 0); /* the self-test is not a relay pair */
	dp.ops->stop(&dp);
	char dir[300];
	struct stat sb;
	snprintf(dir, sizeof(dir), PIN_ROOT "/%s", cfg.instance_id);
	assert_int_not_equal(stat(dir, &sb), 0);
}

static void a_joined_pair_is_counted_per_tunnel(void **state)
{
	struct dataplane dp = {.ops = &dp_bpf_ops};
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), p, pr, a, ar;
	char buf[8];
	uint64_t to_agent = 0, to_player = 0;
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	assert_int_equal(dp.ops->start(&dp, &cfg), 0);
	pair(lfd, &sa, &p, &pr);
	pair(lfd, &sa, &a, &ar);
	assert_int_equal(send(p, "hello", 5, 0), 5);
	assert_int_equal(dp.ops->join(&dp, pr, ar, 42), 0);
	assert_int_equal(recv(a, buf, 5, MSG_WAITALL), 5);
	assert_int_equal(send(a, "hi!", 3, 0), 3);
	assert_int_equal(recv(p, buf, 3, MSG_WAITALL), 3);
	assert_int_equal(dp_bpf_tunnel_bytes(&dp, 42, &to_agent, &to_player), 0);
	assert_int_equal(to_agent, 5);
	assert_int_equal(to_player, 3);
	assert_int_equal(M_GET(splices_active), 1);
	close(p);
	close(a);
	for (int i = 0; i < 500 && M_GET(splices_active); i++)
		usleep(2000);
	assert_int_equal(M_GET(splices_active), 0);
	assert_int_equal(dp_bpf_tunnel_bytes(&dp, 42, &to_agent, &to_player), -ENOENT);
	dp.ops->stop(&dp);
	close(lfd);
}

static void forced_failure_falls_back_to_userspace_under_auto(void **state)
{
	struct dataplane dp = {0};
	snprintf(cfg.dataplane, sizeof(cfg.dataplane), "auto");
	setenv("DVV_BPF_FORCE_FAIL", "1", 1);
	int rc = dataplane_select(&dp, &cfg);
	unsetenv("DVV_BPF_FORCE_FAIL");
	assert_int_equal(rc, 0);
	assert_ptr_equal(dp.ops, &dp_userspace_ops);
	assert_int_equal(dp_bpf_stats(&dp, &(struct dvv_splice_stats){0}, false), -ENODEV);
	dp.ops->stop(&dp);
}

/* Calls libbpf's print callback as libbpf does and returns what reached stderr (malloc'd). */
static char *libbpf_says(const char *fmt, ...)
{
	int pfd[2], saved = dup(STDERR_FILENO);
	assert_int_equal(pipe(pfd), 0);
	assert_true(dup2(pfd[1], STDERR_FILENO) >= 0);
	close(pfd[1]);
	libbpf_print_fn_t fn = libbpf_set_print(NULL); /* returns ours */
	libbpf_set_print(fn);
	assert_non_null(fn);
	va_list ap;
	va_start(ap, fmt);
	fn(LIBBPF_WARN, fmt, ap);
	va_end(ap);
	dup2(saved, STDERR_FILENO);
	close(saved);
	size_t cap = 1 << 20, len = 0;
	char *out = malloc(cap);
	assert_non_null(out);
	ssize_t n;
	while ((n = read(pfd[0], out + len, cap - 1 - len)) > 0)
		len += (size_t)n;
	close(pfd[0]);
	out[len] = 0;
	return out;
}

/* A rejected program's verifier log is one libbpf message of many KiB whose last lines say why:
 * they must reach the log (once cut at a fixed buffer, the reason was lost). */
static void a_long_verifier_log_keeps_its_reason(void **state)
{
	(void)state;
	enum log_level was = log_get_level();
	log_set_level(LOG_INFO);
	bpf_log_install();
	size_t cap = 64 << 10, len = 0;
	char *msg = malloc(cap);
	assert_non_null(msg);
	len += (size_t)snprintf(msg + len, cap - len, "libbpf: -- BEGIN PROG LOAD LOG --\n");
	for (int i = 0; i < 1000; i++)
		len += (size_t)snprintf(msg + len, cap - len, "%d: (b7) r%d = %d ; insn line\n", i,
					i % 10, i);
	snprintf(msg + len, cap - len, "R1 invalid mem access 'scalar'\n-- END PROG LOAD LOG --\n");
	char *out = libbpf_says("%s", msg);
	assert_non_null(strstr(out, "BEGIN PROG LOAD LOG"));
	assert_non_null(strstr(out, "R1 invalid mem access 'scalar'"));
	assert_non_null(strstr(out, "END PROG LOAD LOG"));
	assert_non_null(strstr(out, "lines of the verifier log left out"));
	int lines = 0;
	for (const char *p = out; *p; p++)
		lines += *p == '\n';
	assert_true(lines <= BPF_LOG_MAX_LINES + 2);
	free(out);
	/* a short message is passed on whole, one line each */
	out = libbpf_says("libbpf: %s\nlibbpf: %s\n", "first", "second");
	assert_non_null(strstr(out, "libbpf: first"));
	assert_non_null(strstr(out, "libbpf: second"));
	assert_null(strstr(out, "left out"));
	free(out);
	free(msg);
	log_set_level(was);
}

int main(void)
{
	log_init("test_dp_bpf", LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(plane_starts_pins_readable_maps_and_cleans_up, setup),
		cmocka_unit_test_setup(a_joined_pair_is_counted_per_tunnel, setup),
		cmocka_unit_test_setup(forced_failure_falls_back_to_userspace_under_auto, setup),
		cmocka_unit_test(a_long_verifier_log_keeps_its_reason),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
