/* Per-packet cost of the XDP guard (bpf/xdp_guard.bpf.c) on each of its paths, measured with
 * BPF_PROG_TEST_RUN: the kernel runs the loaded program on a frame we pass in and reports the
 * time it took. Run by bench/xdp_cost.sh (root); prints one Markdown table row per path.
 *
 * A SYN answered with a cookie rewrites its frame into the SYN-ACK, so a `repeat` loop would
 * time the SYN once and the SYN-ACK after that. Every path is therefore timed as RUNS separate
 * runs of one packet each (the kernel's own timer around one run, averaged), and a UDP packet,
 * the cheapest path, is timed the same way as the floor those figures include; paths that do
 * not change their frame are also timed with repeat=REPEAT, which has no per-run overhead.
 *
 *   xdp_cost [RUNS] [REPEAT]     (defaults 200000, 2000000) */
#include "../bpf/xdp_guard.h"
#include "config.h"
#include "log.h"
#include "xdp_guard.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#define PORT 25565

struct frame {
	uint8_t b[200];
	uint32_t len;
};

/* Linux's SYN options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7. */
static const uint8_t SYN_OPTS[20] = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7};

static void be16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }
static void be32(uint8_t *p, uint32_t v) { be16(p, v >> 16), be16(p + 2, v); }

/* Ethernet + IPv4 or IPv6 + TCP (flags, seq, ack, options) or UDP, from src to our port. */
static struct frame mk(const char *src, int proto, uint8_t flags, uint32_t seq, uint32_t ack,
		       const uint8_t *opt, uint32_t optlen)
{
	struct frame f = {0};
	bool v6 = strchr(src, ':');
	uint32_t l4len = proto == 6 ? 20 + optlen : 8, l3 = 14, l4 = l3 + (v6 ? 40 : 20);

	memcpy(f.b, "\x02\0\0\0\0\x02\x02\0\0\0\0\x01", 12);
	be16(f.b + 12, v6 ? 0x86dd : 0x0800);
	if (v6) {
		f.b[l3] = 0x60;
		be16(f.b + l3 + 4, l4len);
		f.b[l3 + 6] = (uint8_t)proto;
		f.b[l3 + 7] = 64;
		inet_pton(AF_INET6, src, f.b + l3 + 8);
		inet_pton(AF_INET6, "2001:db8::1", f.b + l3 + 24);
	} else {
		f.b[l3] = 0x45;
		be16(f.b + l3 + 2, 20 + l4len);
		f.b[l3 + 8] = 64;
		f.b[l3 + 9] = (uint8_t)proto;
		inet_pton(AF_INET, src, f.b + l3 + 12);
		inet_pton(AF_INET, "10.0.0.1", f.b + l3 + 16);
	}
	be16(f.b + l4, 40000);
	be16(f.b + l4 + 2, PORT);
	if (proto == 6) {
		be32(f.b + l4 + 4, seq);
		be32(f.b + l4 + 8, ack);
		f.b[l4 + 12] = (uint8_t)((20 + optlen) / 4 << 4);
		f.b[l4 + 13] = flags;
		be16(f.b + l4 + 14, 64240);
		memcpy(f.b + l4 + 20, opt, optlen);
	} else {
		be16(f.b + l4 + 4, 8);
	}
	f.len = l4 + l4len;
	return f;
}

static int run(int prog, const struct frame *in, struct frame *out, int repeat, uint32_t *ns)
{
	struct frame tmp;
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = in->b, .data_size_in = in->len,
		    .data_out = (out ? out : &tmp)->b, .data_size_out = sizeof(tmp.b),
		    .repeat = repeat);
	if (bpf_prog_test_run_opts(prog, &o))
		return -errno;
	if (out)
		out->len = o.data_size_out;
	*ns = o.duration;
	return (int)o.retval;
}

/* Mean ns per packet of `repeat` runs in live-frame mode: the kernel hands the program a fresh
 * copy of the frame each time, as a driver would, and really transmits what it answers with
 * XDP_TX (out of ifindex, a veth in this namespace). The way to time a path that rewrites its
 * frame. -1 on error (the verdict is not reported in this mode). */
static double live(int prog, const struct frame *f, int repeat, int ifindex)
{
	struct xdp_md ctx = {.data_end = f->len, .ingress_ifindex = (__u32)ifindex};
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f->b, .data_size_in = f->len,
		    .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = repeat,
		    .flags = BPF_F_TEST_XDP_LIVE_FRAMES);
	if (bpf_prog_test_run_opts(prog, &o))
		return -1;
	return o.duration;
}

/* A two-instruction XDP program that only returns `action`: timed in live-frame mode it is the
 * framework's own cost for that verdict (frame setup, the transmit for XDP_TX), which the
 * guard's live-frame figures include. */
static int trivial_prog(int action)
{
	struct bpf_insn insns[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = action},
		{.code = BPF_JMP | BPF_EXIT},
	};
	return bpf_prog_load(BPF_PROG_TYPE_XDP, "xdp_cost_floor", "GPL", insns, 2, NULL);
}

/* Mean ns of `runs` single runs; -1 if the verdict is ever not `want`. */
static double per_run(int prog, const struct frame *f, int want, int runs)
{
	uint64_t total = 0;
	uint32_t ns;
	for (int i = 0; i < runs; i++) {
		if (run(prog, f, NULL, 1, &ns) != want)
			return -1;
		total += ns;
	}
	return (double)total / runs;
}

static double live_floor_tx, live_floor_drop, live_floor_pass;

static void row(const char *path, const char *verdict, double single, double floor, double rep,
		double lv)
{
	char r[32] = "-", l[48] = "-";
	double lf = !strcmp(verdict, "XDP_TX") ? live_floor_tx
		    : !strcmp(verdict, "drop") ? live_floor_drop : live_floor_pass;
	if (rep >= 0)
		snprintf(r, sizeof(r), "%.1f", rep);
	if (lv >= 0)
		snprintf(l, sizeof(l), "%.1f (program: %.1f)", lv, lv - lf);
	printf("| %s | %s | %.1f | %.1f | %s | %s |\n", path, verdict, single, single - floor, r, l);
}

int main(int argc, char **argv)
{
	int runs = argc > 1 ? atoi(argv[1]) : 200000, repeat = argc > 2 ? atoi(argv[2]) : 2000000;
	char pin[64];
	uint32_t ns;

	log_init("xdp_cost", LOG_WARN);
	if (unshare(CLONE_NEWNET | CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) {
		fprintf(stderr, "xdp_cost: unshare: %s (run as root)\n", strerror(errno));
		return 1;
	}
	snprintf(pin, sizeof(pin), "/sys/fs/bpf/dvv-xdp-cost-%d", (int)getpid());
	char *args[] = {argv[0], "--tls-cert=/dev/null", "--tls-key=/dev/null",
			"--jwt-pubkey=/dev/null", "--xdp-syncookies=always"};
	struct relay_cfg cfg;
	if (relay_cfg_parse(&cfg, 5, args))
		return 1;
	cfg.xdp_syn_rate = 1; /* the over-rate path: a source's second SYN */
	cfg.xdp_syn_burst = 1;
	struct xdp_guard *g;
	if (xdp_guard_start(&g, &cfg, PORT, PORT + 1, pin)) {
		fprintf(stderr, "xdp_cost: xdp_guard_start failed\n");
		return 1;
	}
	if (xdp_guard_cookie_mode(g) != 2) {
		fprintf(stderr, "xdp_cost: SYN cookies unavailable on this kernel\n");
		xdp_guard_stop(g);
		return 1;
	}
	char path[128];
	snprintf(path, sizeof(path), "%s/xdp_guard_prog", pin);
	int prog = bpf_obj_get(path);

	/* a listener, so cookie ACKs find one */
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	if (prog < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 8)) {
		fprintf(stderr, "xdp_cost: setup: %s\n", strerror(errno));
		return 1;
	}

	struct frame udp = mk("203.0.113.1", 17, 0, 0, 0, NULL, 0);
	struct frame syn4 = mk("203.0.113.2", 6, 0x02, 1000, 0, SYN_OPTS, 20);
	struct frame syn6 = mk("2001:db8:1::2", 6, 0x02, 1000, 0, SYN_OPTS, 20);
	struct frame syn0 = mk("203.0.113.3", 6, 0x02, 1000, 0, NULL, 0);
	struct frame out;
	if (run(prog, &syn4, &out, 1, &ns) != XDP_TX) {
		fprintf(stderr, "xdp_cost: the SYN was not answered with a cookie\n");
		return 1;
	}
	uint32_t cookie = (uint32_t)out.b[38] << 24 | (uint32_t)out.b[39] << 16 |
			  (uint32_t)out.b[40] << 8 | out.b[41];
	struct frame ack_ok = mk("203.0.113.2", 6, 0x10, 1001, cookie + 1, NULL, 0);
	struct frame ack_bad = mk("203.0.113.4", 6, 0x10, 77, 12345, NULL, 0);
	struct frame rst = mk("203.0.113.4", 6, 0x04, 77, 0, NULL, 0);

	/* a real connection from 10.0.0.2 to the listener, for the segment of an established one */
	if (system("ip link set lo up && ip addr add 10.0.0.1/32 dev lo && "
		   "ip addr add 203.0.113.9/32 dev lo") != 0) {
		fprintf(stderr, "xdp_cost: ip addr add failed\n");
		return 1;
	}
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(40000)},
			   srv = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	inet_pton(AF_INET, "203.0.113.9", &me.sin_addr);
	inet_pton(AF_INET, "10.0.0.1", &srv.sin_addr);
	if (bind(c, (struct sockaddr *)&me, sizeof(me)) ||
	    connect(c, (struct sockaddr *)&srv, sizeof(srv))) {
		fprintf(stderr, "xdp_cost: connect: %s\n", strerror(errno));
		return 1;
	}
	int acc = accept(l, NULL, NULL);
	struct frame est = mk("203.0.113.9", 6, 0x10, 5, 5, NULL, 0);

	/* a veth pair in this namespace: live frames answered with XDP_TX leave through it */
	if (system("ip link add xc0 type veth peer name xc1 && ip link set xc0 up && "
		   "ip link set xc1 up") != 0) {
		fprintf(stderr, "xdp_cost: ip link add veth failed\n");
		return 1;
	}
	int ifx = (int)if_nametoindex("xc0");

	int ftx = trivial_prog(XDP_TX), fdrop = trivial_prog(XDP_DROP), fpass = trivial_prog(XDP_PASS);
	if (ftx < 0 || fdrop < 0 || fpass < 0) {
		fprintf(stderr, "xdp_cost: loading the trivial programs: %s\n", strerror(errno));
		return 1;
	}
	live_floor_tx = live(ftx, &syn4, repeat, ifx);
	live_floor_drop = live(fdrop, &syn4, repeat, ifx);
	live_floor_pass = live(fpass, &udp, repeat, ifx);
	printf("live-frame floors (a program that only returns the verdict): XDP_TX %.1f ns, "
	       "drop %.1f ns, pass %.1f ns\n\n", live_floor_tx, live_floor_drop, live_floor_pass);
	double floor = per_run(prog, &udp, XDP_PASS, runs);
	printf("| path | verdict | ns per packet (single runs) | minus the floor | ns per packet "
	       "(repeat %d) | ns per packet (live frames, repeat %d) |\n|---|---|---|---|---|---|\n",
	       repeat, repeat);
	uint32_t rep = 0;
	run(prog, &udp, NULL, repeat, &rep);
	row("UDP to the player port (the floor)", "pass", floor, floor, rep,
	    live(prog, &udp, repeat, ifx));
	row("SYN, IPv4, Linux options -> cookie SYN-ACK", "XDP_TX",
	    per_run(prog, &syn4, XDP_TX, runs), floor, -1, live(prog, &syn4, repeat, ifx));
	row("SYN, IPv6, Linux options -> cookie SYN-ACK", "XDP_TX",
	    per_run(prog, &syn6, XDP_TX, runs), floor, -1, live(prog, &syn6, repeat, ifx));
	row("SYN, IPv4, no options -> cookie SYN-ACK", "XDP_TX",
	    per_run(prog, &syn0, XDP_TX, runs), floor, -1, live(prog, &syn0, repeat, ifx));
	run(prog, &ack_ok, NULL, repeat, &rep);
	row("ACK with a valid cookie (listener lookup + check)", "pass",
	    per_run(prog, &ack_ok, XDP_PASS, runs), floor, rep, -1);
	run(prog, &ack_bad, NULL, repeat, &rep);
	row("ACK with random numbers (ACK flood)", "drop", per_run(prog, &ack_bad, XDP_DROP, runs),
	    floor, rep, live(prog, &ack_bad, repeat, ifx));
	run(prog, &est, NULL, repeat, &rep);
	row("ACK of an established connection (data path)", "pass",
	    per_run(prog, &est, XDP_PASS, runs), floor, rep, -1);
	/* 203.0.113.2 is known since its cookie ACK; rate 1/s, burst 1: its next SYN takes the
	 * token (answered), the ones after are over its rate (dropped, frame unchanged) */
	run(prog, &syn4, &out, 1, &ns);
	run(prog, &syn4, NULL, repeat, &rep);
	row("SYN from a known source over its rate", "drop", per_run(prog, &syn4, XDP_DROP, runs),
	    floor, rep, -1);
	run(prog, &rst, NULL, repeat, &rep);
	row("RST to the listener (RST flood)", "drop", per_run(prog, &rst, XDP_DROP, runs), floor,
	    rep, live(prog, &rst, repeat, ifx));

	close(ftx);
	close(fdrop);
	close(fpass);
	close(prog);
	close(acc);
	close(c);
	close(l);
	xdp_guard_stop(g);
	return 0;
}
