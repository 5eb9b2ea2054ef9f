/* Test driver for the XDP SYN guard: runs xdp_guard_start() exactly as the relay does, without
 * the rest of the relay (no Redis, no keys), until SIGINT/SIGTERM.
 *
 *   xdp_attach PLAYER_PORT AGENT_PORT PIN_DIR [dvv-relay --xdp-* flags]
 *
 * Prints "ready" once attached; SIGUSR1 prints the summed counters as one line; the counters
 * are printed once more before it detaches and exits. Built by tests/netns/xdp_flood.sh. */
#include "../../bpf/xdp_guard.h"
#include "config.h"
#include "log.h"
#include "xdp_guard.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_counters(struct xdp_guard *g)
{
	struct dvv_xdp_counters c;
	int rc = xdp_guard_counters(g, &c);

	if (rc) {
		printf("counters error %d\n", rc);
	} else {
		struct dvv_cookie_tc_counters t;
		if (xdp_guard_cookie_counters(g, &t))
			memset(&t, 0, sizeof(t));
		printf("counters pass_other=%" PRIu64 " pass_short=%" PRIu64 " drop_deny=%" PRIu64
		       " pass_allow=%" PRIu64 " drop_rate=%" PRIu64 " drop_budget=%" PRIu64
		       " pass_syn=%" PRIu64 " pass_reserve=%" PRIu64 " tx_cookie=%" PRIu64
		       " pass_cookie=%" PRIu64 " pass_kernel_cookie=%" PRIu64 " drop_ack=%" PRIu64
		       " tc_assigned=%" PRIu64 " tc_assign_failed=%" PRIu64 " tc_bad_cookie=%" PRIu64
		       " syncookies=%d\n",
		       (uint64_t)c.pass_other, (uint64_t)c.pass_short, (uint64_t)c.drop_deny,
		       (uint64_t)c.pass_allow, (uint64_t)c.drop_rate, (uint64_t)c.drop_budget,
		       (uint64_t)c.pass_syn, (uint64_t)c.pass_reserve, (uint64_t)c.tx_cookie,
		       (uint64_t)c.pass_cookie, (uint64_t)c.pass_kernel_cookie, (uint64_t)c.drop_ack,
		       (uint64_t)t.assigned, (uint64_t)t.assign_failed, (uint64_t)t.bad_cookie,
		       xdp_guard_cookie_mode(g));
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s PLAYER_PORT AGENT_PORT PIN_DIR [--xdp-* flags]\n", argv[0]);
		return 2;
	}
	/* The relay's own parser, so flags and defaults are the relay's; it insists on the TLS and
	 * JWT paths, which the guard never reads. */
	char *args[64] = {argv[0], "--tls-cert=/dev/null", "--tls-key=/dev/null",
			  "--jwt-pubkey=/dev/null"};
	int n = 4;
	for (int i = 4; i < argc && n < 63; i++)
		args[n++] = argv[i];
	struct relay_cfg cfg;
	if (relay_cfg_parse(&cfg, n, args))
		return 2;
	log_init("xdp_attach", (enum log_level)cfg.log_level);

	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGUSR1);
	sigprocmask(SIG_BLOCK, &ss, NULL);

	struct xdp_guard *g;
	int rc = xdp_guard_start(&g, &cfg, (uint16_t)atoi(argv[1]), (uint16_t)atoi(argv[2]),
				 argv[3]);
	if (rc) {
		fprintf(stderr, "xdp_attach: xdp_guard_start: %s\n", strerror(-rc));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (int sig = 0; sig != SIGINT && sig != SIGTERM;) {
		if (sigwait(&ss, &sig))
			break;
		print_counters(g);
	}
	xdp_guard_stop(g);
	return 0;
}
