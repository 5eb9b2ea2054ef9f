/* XDP SYN guard (bpf/xdp_guard.bpf.c + userspace/xdp_guard.c). Runs as root.
 *
 * Every test starts a real guard with xdp_guard_start() (no interface: loaded and pinned only),
 * then feeds the pinned program crafted packets with BPF_PROG_TEST_RUN and checks the verdict
 * and the counters. The attach tests create veth and bridge interfaces. The whole process first
 * moves into its own network and mount namespaces, so interfaces and the bpffs it may mount
 * vanish with it, whatever happens.
 *
 * Rates are chosen so that no token refills during a test (1 SYN/s), except where refilling is
 * the point. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../../bpf/xdp_guard.h"
#include "config.h"
#include "log.h"
#include "xdp_guard.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PLAYER_PORT 25565
#define AGENT_PORT 7000
#define OTHER_PORT 8080

#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define TCP_FIN 0x01

/* ---- packets ------------------------------------------------------------------------------- */

struct pkt {
	uint8_t b[256];
	size_t len;
};

struct pkt_opts {
	const char *src;     /* IPv4 or IPv6 literal; the family follows */
	uint16_t dport;
	uint8_t flags;	     /* TCP flags */
	int proto;	     /* 6 (default) or 17 */
	int vlans;	     /* 0, 1 (802.1Q) or 2 (802.1ad + 802.1Q) */
	int v6_ext;	     /* IPv6: hop-by-hop + destination options headers before TCP */
	uint16_t frag_off;   /* IPv4 fragment offset field (host order) */
	const char *dst;     /* default 10.0.0.1 / 2001:db8::1 */
	uint16_t sport;	     /* default 40000 */
	uint32_t seq, ack;   /* default 0x1234 << 16, 0 */
	const uint8_t *opt;  /* TCP options (a multiple of 4 bytes, at most 40) */
	size_t optlen;
	int ip_opts;	     /* IPv4: 4 bytes of options (NOPs + EOL): ihl 6 */
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Ethernet [+ VLAN tags] + IPv4/IPv6 [+ extension headers] + TCP (20 bytes) or UDP (8). */
static struct pkt build(struct pkt_opts o)
{
	struct pkt p = {0};
	uint8_t *b = p.b;
	bool v6 = strchr(o.src, ':') != NULL;
	int proto = o.proto ? o.proto : 6;
	size_t l4len = proto == 6 ? 20 + o.optlen : 8, off = 12;
	size_t ipopt = !v6 && o.ip_opts ? 4 : 0;

	memcpy(b, "\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01", 12);
	if (o.vlans == 2) {
		put16(b + off, 0x88A8), put16(b + off + 2, 100), off += 4;
		put16(b + off, 0x8100), put16(b + off + 2, 200), off += 4;
	} else if (o.vlans == 1) {
		put16(b + off, 0x8100), put16(b + off + 2, 100), off += 4;
	}
	put16(b + off, v6 ? 0x86DD : 0x0800);
	off += 2;
	if (!v6) {
		uint8_t *ip = b + off;
		ip[0] = (uint8_t)(0x40 | (20 + ipopt) / 4);
		put16(ip + 2, (uint16_t)(20 + ipopt + l4len));
		put16(ip + 6, o.frag_off);
		ip[8] = 64;
		ip[9] = (uint8_t)proto;
		assert_int_equal(inet_pton(AF_INET, o.src, ip + 12), 1);
		assert_int_equal(inet_pton(AF_INET, o.dst ? o.dst : "10.0.0.1", ip + 16), 1);
		if (ipopt)
			ip[20] = ip[21] = ip[22] = 1; /* NOP NOP NOP EOL */
		off += 20 + ipopt;
	} else {
		uint8_t *ip = b + off;
		size_t ext = o.v6_ext ? 16 : 0;
		ip[0] = 0x60;
		put16(ip + 4, (uint16_t)(ext + l4len));
		ip[6] = o.v6_ext ? 0 /* hop-by-hop */ : (uint8_t)proto;
		ip[7] = 64;
		assert_int_equal(inet_pton(AF_INET6, o.src, ip + 8), 1);
		assert_int_equal(inet_pton(AF_INET6, o.dst ? o.dst : "2001:db8::1", ip + 24), 1);
		off += 40;
		if (o.v6_ext) {
			b[off] = 60; /* hop-by-hop -> destination options, 8 bytes, PadN */
			b[off + 2] = 1, b[off + 3] = 4;
			b[off + 8] = (uint8_t)proto; /* destination options -> TCP */
			b[off + 10] = 1, b[off + 11] = 4;
			off += 16;
		}
	}
	uint8_t *l4 = b + off;
	put16(l4, o.sport ? o.sport : 40000);
	put16(l4 + 2, o.dport ? o.dport : PLAYER_PORT);
	if (proto == 6) {
		uint32_t seq = o.seq ? o.seq : 0x12340000u;
		for (int i = 0; i < 4; i++) {
			l4[4 + i] = (uint8_t)(seq >> (24 - 8 * i));
			l4[8 + i] = (uint8_t)(o.ack >> (24 - 8 * i));
		}
		l4[12] = (uint8_t)(((20 + o.optlen) / 4) << 4);
		l4[13] = o.flags ? o.flags : TCP_SYN;
		put16(l4 + 14, 64240);
		if (o.optlen)
			memcpy(l4 + 20, o.opt, o.optlen);
	} else {
		put16(l4 + 4, 8);
	}
	p.len = off + l4len;
	return p;
}

#define SYN_FROM(addr) build((struct pkt_opts){.src = (addr)})

/* ---- a guard under test -------------------------------------------------------------------- */

/* One per test, made by guard_setup; guard_teardown stops whatever a failed test left. */
struct guard_fixture {
	struct xdp_guard *g, *g2;
	char pin[PATH_MAX];
	int prog_fd;
};

static int test_seq;
static char pin_root[64]; /* /sys/fs/bpf/dvv-test-xdp-<pid>: two runs at once never meet */

static void cfg_for_test(struct relay_cfg *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->xdp_mode, "auto");
	strcpy(cfg->xdp_syncookies, "off"); /* the cookie tests turn them on */
	cfg->xdp_max_sources = 65536;
	cfg->xdp_syn_rate = 1;
	cfg->xdp_syn_burst = 5;
	cfg->xdp_port_syn_budget = 1000000;
}

static void pin_dir_for_test(char *buf, size_t len)
{
	snprintf(buf, len, "%s/t%d", pin_root, ++test_seq);
}

static bool path_exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

static void guard_up(struct guard_fixture *f, const struct relay_cfg *cfg)
{
	pin_dir_for_test(f->pin, sizeof(f->pin));
	int rc = xdp_guard_start(&f->g, cfg, PLAYER_PORT, AGENT_PORT, f->pin);
	if (rc)
		fail_msg("xdp_guard_start: expected 0, got %d (%s)", rc, strerror(-rc));
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/xdp_guard_prog", f->pin);
	f->prog_fd = bpf_obj_get(path);
	if (f->prog_fd < 0)
		fail_msg("expected the program pinned at %s, got %s", path, strerror(errno));
}

static void guard_down(struct guard_fixture *f)
{
	if (f->prog_fd >= 0)
		close(f->prog_fd);
	f->prog_fd = -1;
	xdp_guard_stop(f->g);
	f->g = NULL;
	if (path_exists(f->pin))
		fail_msg("expected %s removed by xdp_guard_stop, it is still there", f->pin);
}

static int map_fd(struct guard_fixture *f, const char *name)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", f->pin, name);
	int fd = bpf_obj_get(path);
	if (fd < 0)
		fail_msg("expected map pinned at %s, got %s", path, strerror(errno));
	return fd;
}

static const char *act_name(int a)
{
	switch (a) {
	case XDP_ABORTED: return "XDP_ABORTED";
	case XDP_DROP: return "XDP_DROP";
	case XDP_PASS: return "XDP_PASS";
	case XDP_TX: return "XDP_TX";
	case XDP_REDIRECT: return "XDP_REDIRECT";
	default: return "(unknown action)";
	}
}

static int run_pkt(struct guard_fixture *f, const struct pkt *p)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = p->b, .data_size_in = (__u32)p->len,
		    .repeat = 1);
	int rc = bpf_prog_test_run_opts(f->prog_fd, &o);
	if (rc)
		fail_msg("BPF_PROG_TEST_RUN: expected 0, got %d (%s)", rc, strerror(-rc));
	return (int)o.retval;
}

#define expect_verdict(f, p, want, ...)                                                          \
	do {                                                                                     \
		int got_ = run_pkt((f), (p));                                                    \
		if (got_ != (want)) {                                                            \
			char what_[200];                                                         \
			snprintf(what_, sizeof(what_), __VA_ARGS__);                             \
			fail_msg("%s: expected %s, got %s", what_, act_name(want),               \
				 act_name(got_));                                                \
		}                                                                                \
	} while (0)

/* Sends `n` copies and expects each verdict. */
static void send_n(struct guard_fixture *f, const struct pkt *p, int n, int want, const char *what)
{
	for (int i = 0; i < n; i++)
		expect_verdict(f, p, want, "%s, packet %d of %d", what, i + 1, n);
}

#define C_FIELDS(X)                                                                              \
	X(pass_other) X(pass_short) X(drop_deny) X(pass_allow) X(drop_rate) X(drop_budget)       \
	X(pass_syn) X(pass_reserve) X(tx_cookie) X(pass_cookie) X(pass_kernel_cookie) X(drop_ack)

static void expect_counters(struct guard_fixture *f, struct dvv_xdp_counters want)
{
	struct dvv_xdp_counters got;
	int rc = xdp_guard_counters(f->g, &got);
	if (rc)
		fail_msg("xdp_guard_counters: expected 0, got %d (%s)", rc, strerror(-rc));
	char diff[512] = "";
	size_t n = 0;
#define X(fld)                                                                                   \
	if (got.fld != want.fld)                                                                 \
		n += (size_t)snprintf(diff + n, sizeof(diff) - n, " %s expected %" PRIu64            \
				      " got %" PRIu64 ";", #fld, (uint64_t)want.fld,            \
				      (uint64_t)got.fld);
	C_FIELDS(X)
#undef X
	if (n)
		fail_msg("counters differ:%s", diff);
}

static int map_entries(int fd, size_t key_size)
{
	uint8_t key[64], next[64];
	int n = 0;
	void *prev = NULL;
	assert_true(key_size <= sizeof(key));
	while (n < 1000000 && !bpf_map_get_next_key(fd, prev, next)) {
		memcpy(key, next, key_size);
		prev = key;
		n++;
	}
	return n;
}

static struct dvv_src_bucket source_bucket(struct guard_fixture *f, const char *addr)
{
	struct dvv_src_key k = {0};
	struct dvv_src_bucket b = {0};
	if (strchr(addr, ':')) {
		inet_pton(AF_INET6, addr, k.addr);
		memset(k.addr + DVV_XDP_V6_SOURCE_PREFIX / 8, 0, 16 - DVV_XDP_V6_SOURCE_PREFIX / 8);
	} else {
		k.addr[10] = k.addr[11] = 0xff;
		inet_pton(AF_INET, addr, k.addr + 12);
	}
	int fd = map_fd(f, "xdp_sources");
	if (bpf_map_lookup_elem(fd, &k, &b))
		fail_msg("expected a bucket for %s in xdp_sources, got %s", addr, strerror(errno));
	close(fd);
	return b;
}

/* ---- per-source buckets -------------------------------------------------------------------- */

static void syn_under_rate_passes_then_burst_plus_one_drops(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	struct pkt syn = SYN_FROM("203.0.113.10");
	send_n(f, &syn, 5, XDP_PASS, "SYN within the burst of 5 from one source");
	expect_verdict(f, &syn, XDP_DROP, "6th SYN (burst + 1) from the same source");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 5, .drop_rate = 1});
	struct dvv_src_bucket b = source_bucket(f, "203.0.113.10");
	if (b.drops != 1)
		fail_msg("expected the source's bucket to count 1 drop, got %" PRIu64,
			 (uint64_t)b.drops);
	guard_down(f);
}

static void new_source_gets_a_full_bucket(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	struct pkt a = SYN_FROM("203.0.113.10"), b = SYN_FROM("203.0.113.11");
	send_n(f, &a, 5, XDP_PASS, "source A within its burst");
	expect_verdict(f, &a, XDP_DROP, "source A over its burst");
	send_n(f, &b, 5, XDP_PASS, "source B, new, gets its own full burst");
	expect_verdict(f, &b, XDP_DROP, "source B over its burst");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 10, .drop_rate = 2});
	guard_down(f);
}

static void ipv6_syn_is_limited_per_slash_64(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	struct pkt a = SYN_FROM("2001:db8:aa:1::10"), same64 = SYN_FROM("2001:db8:aa:1:ffff::99"),
		   other64 = SYN_FROM("2001:db8:aa:2::10");
	send_n(f, &a, 5, XDP_PASS, "IPv6 SYN within the burst");
	expect_verdict(f, &a, XDP_DROP, "IPv6 SYN over the burst");
	expect_verdict(f, &same64, XDP_DROP, "another address in the same /64 shares the bucket");
	send_n(f, &other64, 5, XDP_PASS, "another /64 gets its own full bucket");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 10, .drop_rate = 2});
	guard_down(f);
}

static void bucket_refills_at_the_configured_rate(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	cfg.xdp_syn_rate = 20; /* one token per 50 ms */
	cfg.xdp_syn_burst = 2;
	guard_up(f, &cfg);

	struct pkt syn = SYN_FROM("203.0.113.20");
	send_n(f, &syn, 2, XDP_PASS, "SYN within the burst of 2");
	expect_verdict(f, &syn, XDP_DROP, "3rd back-to-back SYN");
	nanosleep(&(struct timespec){.tv_nsec = 120 * 1000000}, NULL);
	send_n(f, &syn, 2, XDP_PASS, "SYN after 120 ms at 20/s (2 tokens back, the burst)");
	expect_verdict(f, &syn, XDP_DROP, "refill capped at the burst");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 4, .drop_rate = 2});
	guard_down(f);
}

static void agent_port_is_guarded_too(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	struct pkt syn = build((struct pkt_opts){.src = "203.0.113.30", .dport = AGENT_PORT});
	send_n(f, &syn, 5, XDP_PASS, "SYN to the agent port within the burst");
	expect_verdict(f, &syn, XDP_DROP, "SYN to the agent port over the burst");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 5, .drop_rate = 1});
	guard_down(f);
}

/* ---- what is not judged -------------------------------------------------------------------- */

static void non_syn_and_syn_ack_pass_even_from_a_limited_source(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	const char *src = "203.0.113.40";
	struct pkt syn = SYN_FROM(src);
	send_n(f, &syn, 5, XDP_PASS, "warm-up: the burst of 5");
	expect_verdict(f, &syn, XDP_DROP, "warm-up: the source is now over its rate");
	static const struct {
		uint8_t flags;
		const char *name;
	} cases[] = {{TCP_ACK, "ACK"},
		     {TCP_SYN | TCP_ACK, "SYN-ACK"},
		     {TCP_RST, "RST"},
		     {TCP_FIN | TCP_ACK, "FIN-ACK"}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pkt p = build((struct pkt_opts){.src = src, .flags = cases[i].flags});
		send_n(f, &p, 3, XDP_PASS, cases[i].name);
	}
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 5, .drop_rate = 1,
						      .pass_other = 12});
	guard_down(f);
}

static void syn_to_another_port_passes(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	struct pkt syn = build((struct pkt_opts){.src = "203.0.113.41", .dport = OTHER_PORT});
	send_n(f, &syn, 20, XDP_PASS, "SYN to an unprotected port, 4x the burst");
	expect_counters(f, (struct dvv_xdp_counters){.pass_other = 20});
	guard_down(f);
}

static void udp_to_a_protected_port_passes(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	struct pkt udp = build((struct pkt_opts){.src = "203.0.113.42", .proto = 17});
	struct pkt udp6 = build((struct pkt_opts){.src = "2001:db8:42::1", .proto = 17});
	send_n(f, &udp, 20, XDP_PASS, "UDP to the player port");
	send_n(f, &udp6, 20, XDP_PASS, "UDP over IPv6 to the player port");
	expect_counters(f, (struct dvv_xdp_counters){.pass_other = 40});
	guard_down(f);
}

/* Every layer cut short, from a source already over its rate: if the parser read any of these
 * as a SYN it would drop it. All must pass, counted as pass_short. (Frames under 14 bytes
 * cannot be fed to BPF_PROG_TEST_RUN: the kernel refuses them.) */
static void truncated_headers_at_every_layer_pass(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	const char *v4 = "203.0.113.50", *v6 = "2001:db8:50::1";
	struct pkt s4 = SYN_FROM(v4), s6 = SYN_FROM(v6);
	send_n(f, &s4, 5, XDP_PASS, "warm-up v4");
	send_n(f, &s6, 5, XDP_PASS, "warm-up v6");
	expect_verdict(f, &s4, XDP_DROP, "warm-up: v4 source over its rate");
	expect_verdict(f, &s6, XDP_DROP, "warm-up: v6 source over its rate");

	struct {
		const char *name;
		struct pkt p;
	} cases[12];
	int n = 0;
#define CASE(nm, pk, cut)                                                                        \
	do {                                                                                     \
		cases[n].name = (nm);                                                            \
		cases[n].p = (pk);                                                               \
		cases[n].p.len = (cut);                                                          \
		n++;                                                                             \
	} while (0)
	CASE("Ethernet header only, EtherType IPv4", s4, 14);
	CASE("Ethernet header only, EtherType IPv6", s6, 14);
	struct pkt vl = build((struct pkt_opts){.src = v4, .vlans = 1});
	CASE("802.1Q tag cut in half", vl, 16);
	struct pkt qq = build((struct pkt_opts){.src = v4, .vlans = 2});
	CASE("802.1ad outer tag then the inner 802.1Q tag cut", qq, 20);
	CASE("IPv4 header cut at 10 bytes", s4, 14 + 10);
	struct pkt ihl60 = s4;
	ihl60.b[14] = 0x4F;
	CASE("IPv4 IHL says 60 bytes, 40 present", ihl60, ihl60.len);
	struct pkt ihl4 = s4;
	ihl4.b[14] = 0x44;
	CASE("IPv4 IHL below 5", ihl4, ihl4.len);
	CASE("TCP header cut at 10 bytes after IPv4", s4, s4.len - 10);
	CASE("VLAN-tagged TCP header cut", vl, vl.len - 1);
	CASE("IPv6 header cut at 20 bytes", s6, 14 + 20);
	struct pkt ext = build((struct pkt_opts){.src = v6, .v6_ext = 1});
	CASE("IPv6 hop-by-hop header cut at 1 byte", ext, 14 + 40 + 1);
	struct pkt extlen = ext;
	extlen.b[14 + 40 + 1] = 200; /* hop-by-hop claims 1608 bytes */
	CASE("IPv6 extension header longer than the packet", extlen, extlen.len);
#undef CASE
	for (int i = 0; i < n; i++)
		expect_verdict(f, &cases[i].p, XDP_PASS, "%s (%zu bytes)", cases[i].name,
			       cases[i].p.len);
	struct pkt t6 = s6;
	t6.len -= 1;
	expect_verdict(f, &t6, XDP_PASS, "TCP header cut by 1 byte after IPv6");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 10, .drop_rate = 2,
						      .pass_short = (uint64_t)n + 1});
	guard_down(f);
}

static void vlan_tagged_syn_is_guarded(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	struct pkt q = build((struct pkt_opts){.src = "203.0.113.60", .vlans = 1});
	struct pkt qinq = build((struct pkt_opts){.src = "2001:db8:60::1", .vlans = 2});
	send_n(f, &q, 5, XDP_PASS, "802.1Q-tagged SYN within the burst");
	expect_verdict(f, &q, XDP_DROP, "802.1Q-tagged SYN over the burst");
	send_n(f, &qinq, 5, XDP_PASS, "QinQ-tagged IPv6 SYN within the burst");
	expect_verdict(f, &qinq, XDP_DROP, "QinQ-tagged IPv6 SYN over the burst");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 10, .drop_rate = 2});
	guard_down(f);
}

static void syn_behind_ipv6_extension_headers_is_guarded(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	struct pkt ext = build((struct pkt_opts){.src = "2001:db8:70::1", .v6_ext = 1});
	send_n(f, &ext, 5, XDP_PASS, "SYN after hop-by-hop + destination options, in burst");
	expect_verdict(f, &ext, XDP_DROP, "SYN after extension headers, over the burst");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 5, .drop_rate = 1});
	guard_down(f);
}

static void ipv4_fragments_first_is_guarded_later_ones_pass(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	guard_up(f, &cfg);

	const char *src = "203.0.113.80";
	struct pkt first = build((struct pkt_opts){.src = src, .frag_off = 0x2000 /* MF */});
	struct pkt later = build((struct pkt_opts){.src = src, .frag_off = 185});
	send_n(f, &first, 5, XDP_PASS, "first fragment carrying a SYN, within the burst");
	expect_verdict(f, &first, XDP_DROP, "first fragment carrying a SYN, over the burst");
	send_n(f, &later, 3, XDP_PASS, "later fragment (no TCP header in it)");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 5, .drop_rate = 1,
						      .pass_other = 3});
	guard_down(f);
}

/* ---- allow and deny ------------------------------------------------------------------------ */

static uint64_t prefix_hits(struct guard_fixture *f, const char *map, const char *addr, int plen)
{
	struct dvv_lpm_key k = {0};
	uint64_t hits = 0;
	if (strchr(addr, ':')) {
		inet_pton(AF_INET6, addr, k.addr);
		k.prefixlen = (uint32_t)plen;
	} else {
		k.addr[10] = k.addr[11] = 0xff;
		inet_pton(AF_INET, addr, k.addr + 12);
		k.prefixlen = (uint32_t)plen + 96;
	}
	int fd = map_fd(f, map);
	if (bpf_map_lookup_elem(fd, &k, &hits))
		fail_msg("expected %s/%d in %s, got %s", addr, plen, map, strerror(errno));
	close(fd);
	return hits;
}

static void allow_list_bypasses_every_limit(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	cfg.xdp_port_syn_budget = 3;
	strcpy(cfg.xdp_allow, "192.0.2.0/24, 2001:db8:1::/48");
	guard_up(f, &cfg);

	struct pkt a4 = SYN_FROM("192.0.2.7"), a6 = SYN_FROM("2001:db8:1:5::1");
	send_n(f, &a4, 20, XDP_PASS, "allowed IPv4 source, 4x its burst and over the budget");
	send_n(f, &a6, 20, XDP_PASS, "allowed IPv6 source, 4x its burst and over the budget");
	expect_counters(f, (struct dvv_xdp_counters){.pass_allow = 40});
	uint64_t h4 = prefix_hits(f, "xdp_allow", "192.0.2.0", 24),
		 h6 = prefix_hits(f, "xdp_allow", "2001:db8:1::", 48);
	if (h4 != 20 || h6 != 20)
		fail_msg("expected 20 hits on each allowed prefix, got %" PRIu64 " and %" PRIu64, h4,
			 h6);
	guard_down(f);
}

static void deny_list_drops_and_wins_over_allow(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	strcpy(cfg.xdp_deny, "198.51.100.0/24,2001:db8:dead::/48");
	strcpy(cfg.xdp_allow, "198.51.0.0/16");
	guard_up(f, &cfg);

	struct pkt d4 = SYN_FROM("198.51.100.9"), d6 = SYN_FROM("2001:db8:dead:1::1"),
		   allowed = SYN_FROM("198.51.7.7"),
		   ack = build((struct pkt_opts){.src = "198.51.100.9", .flags = TCP_ACK});
	expect_verdict(f, &d4, XDP_DROP, "first SYN from a denied IPv4 prefix");
	expect_verdict(f, &d6, XDP_DROP, "first SYN from a denied IPv6 prefix");
	expect_verdict(f, &allowed, XDP_PASS, "SYN from the allowed /16 outside the denied /24");
	expect_verdict(f, &ack, XDP_PASS, "ACK from a denied prefix (only SYNs are judged)");
	expect_counters(f, (struct dvv_xdp_counters){.drop_deny = 2, .pass_allow = 1,
						      .pass_other = 1});
	uint64_t h = prefix_hits(f, "xdp_deny", "198.51.100.0", 24);
	if (h != 1)
		fail_msg("expected 1 hit on 198.51.100.0/24, got %" PRIu64, h);
	guard_down(f);
}

/* ---- the port budget ----------------------------------------------------------------------- */

static void port_budget_drops_a_random_source_flood(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	cfg.xdp_port_syn_budget = 20;
	guard_up(f, &cfg);

	char addr[32];
	for (int i = 0; i < 100; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", 1 + i % 7, i / 7, 1 + i);
		struct pkt p = SYN_FROM(addr);
		/* Each source is new and sends one SYN: its own bucket would let it through. */
		expect_verdict(f, &p, i < 20 ? XDP_PASS : XDP_DROP,
			       "SYN %d of a 100-source flood against a budget of 20", i + 1);
	}
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 20, .drop_budget = 80});
	int fd = map_fd(f, "xdp_sources");
	int n = map_entries(fd, sizeof(struct dvv_src_key));
	close(fd);
	if (n != 20)
		fail_msg("expected buckets only for the 20 admitted sources, got %d", n);

	/* The budget is per port: the agent port still has its own. */
	struct pkt agent = build((struct pkt_opts){.src = "10.200.0.1", .dport = AGENT_PORT});
	expect_verdict(f, &agent, XDP_PASS, "new source to the agent port, its budget untouched");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 21, .drop_budget = 80});
	guard_down(f);
}

static void known_sources_draw_on_the_reserve_when_the_budget_is_gone(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	cfg.xdp_port_syn_budget = 4;
	guard_up(f, &cfg);

	struct pkt known[4];
	char addr[32];
	for (int i = 0; i < 4; i++) {
		snprintf(addr, sizeof(addr), "10.9.0.%d", i + 1);
		known[i] = SYN_FROM(addr);
		expect_verdict(f, &known[i], XDP_PASS, "source %d admitted on the budget", i + 1);
	}
	struct pkt spoofed = SYN_FROM("10.66.0.1");
	expect_verdict(f, &spoofed, XDP_DROP, "new source once the budget is spent");
	for (int i = 0; i < 4; i++)
		expect_verdict(f, &known[i], XDP_PASS,
			       "known source %d, budget spent, served from the reserve", i + 1);
	expect_verdict(f, &known[0], XDP_DROP, "known source once the reserve is spent too");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 8, .pass_reserve = 4,
						      .drop_budget = 2});
	guard_down(f);
}

static void one_flooding_source_cannot_spend_the_shared_budget(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	cfg.xdp_port_syn_budget = 10;
	guard_up(f, &cfg);

	struct pkt flood = SYN_FROM("203.0.113.99");
	send_n(f, &flood, 5, XDP_PASS, "flooding source, its burst");
	send_n(f, &flood, 95, XDP_DROP, "flooding source over its rate");
	char addr[32];
	for (int i = 0; i < 5; i++) {
		snprintf(addr, sizeof(addr), "10.8.0.%d", i + 1);
		struct pkt p = SYN_FROM(addr);
		expect_verdict(f, &p, XDP_PASS,
			       "new source %d after a 100-SYN flood (5 of 10 budget tokens left)",
			       i + 1);
	}
	struct pkt late = SYN_FROM("10.8.1.1");
	expect_verdict(f, &late, XDP_DROP, "11th admitted SYN against a budget of 10");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 10, .drop_rate = 95,
						      .drop_budget = 1});
	guard_down(f);
}

/* ---- configuration and pins ---------------------------------------------------------------- */

static void bad_cidrs_are_rejected_before_anything_is_loaded(void **state)
{
	struct guard_fixture *f = *state;
	static const char *const bad[] = {
		"10.0.0.0/33",	   "10.0.0.1/8",   "300.1.1.1",	     "10.0.0.0/",
		"10.0.0.0/abc",	   "10.0.0.0/-1",  "2001:db8::/129", "2001:db8::1/32",
		"fe80::1%eth0",	   "hello",	   "10.0.0.0/8/8",   "10.0.0.0/0008",
		"192.0.2.0/24;x", "/24"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (int list = 0; list < 2; list++) {
			struct relay_cfg cfg;
			char *pin = f->pin;
			cfg_for_test(&cfg);
			snprintf(list ? cfg.xdp_deny : cfg.xdp_allow, sizeof(cfg.xdp_allow),
				 "192.0.2.0/24,%s", bad[i]);
			pin_dir_for_test(f->pin, sizeof(f->pin));
			int rc = xdp_guard_start(&f->g, &cfg, PLAYER_PORT, AGENT_PORT, f->pin);
			if (rc != -EINVAL || f->g)
				fail_msg("--xdp-%s '%s': expected -EINVAL and no guard, got %d (%s)",
					 list ? "deny" : "allow", bad[i], rc, strerror(-rc));
			if (path_exists(pin))
				fail_msg("--xdp-%s '%s': expected nothing pinned, %s exists",
					 list ? "deny" : "allow", bad[i], pin);
		}
	}
}

static void good_cidrs_fill_the_tries(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	strcpy(cfg.xdp_deny, " 10.0.0.0/8 , 192.0.2.1,2001:db8::/32,::/0,0.0.0.0/0,,");
	guard_up(f, &cfg);
	int fd = map_fd(f, "xdp_deny");
	int n = map_entries(fd, sizeof(struct dvv_lpm_key));
	close(fd);
	if (n != 5)
		fail_msg("expected 5 prefixes in xdp_deny, got %d", n);
	if (prefix_hits(f, "xdp_deny", "192.0.2.1", 32) != 0)
		fail_msg("expected a fresh prefix to start at 0 hits");
	guard_down(f);
}

static int map_type_of(const char *path)
{
	struct bpf_map_info info = {0};
	__u32 len = sizeof(info);
	int fd = bpf_obj_get(path);
	if (fd < 0)
		return -errno;
	int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
	close(fd);
	return rc ? rc : (int)info.type;
}

static void stale_pins_are_replaced_and_other_pins_kept(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	char path[PATH_MAX + 32], other[PATH_MAX + 32];
	cfg_for_test(&cfg);

	/* A first run leaves the bpffs mounted; then a "crashed" run: stale pins of our names in
	 * the same directory, next to a pin of another component of the same instance. */
	guard_up(f, &cfg);
	guard_down(f);
	assert_int_equal(mkdir(f->pin, 0700), 0);
	int stale = bpf_map_create(BPF_MAP_TYPE_ARRAY, "stale", 4, 4, 1, NULL);
	assert_true(stale >= 0);
	snprintf(path, sizeof(path), "%s/xdp_counters", f->pin);
	snprintf(other, sizeof(other), "%s/splice_socks", f->pin);
	assert_int_equal(bpf_obj_pin(stale, path), 0);
	assert_int_equal(bpf_obj_pin(stale, other), 0);
	close(stale);

	int rc = xdp_guard_start(&f->g, &cfg, PLAYER_PORT, AGENT_PORT, f->pin);
	if (rc)
		fail_msg("start over stale pins: expected 0, got %d (%s)", rc, strerror(-rc));
	int type = map_type_of(path);
	if (type != BPF_MAP_TYPE_PERCPU_ARRAY)
		fail_msg("expected %s to be the new per-CPU counters (type %d), got type %d", path,
			 BPF_MAP_TYPE_PERCPU_ARRAY, type);
	xdp_guard_stop(f->g);
	f->g = NULL;
	if (path_exists(path))
		fail_msg("expected %s unpinned at stop, it is still there", path);
	if (!path_exists(other))
		fail_msg("expected another component's pin %s kept, it is gone", other);
}

/* ---- attaching ----------------------------------------------------------------------------- */

/* Made once for the group, in the test's own network namespace (veth has native XDP, a
 * bridge has none). */
static int ifaces_setup(void **state)
{
	return system("ip link add name dvvxu0 type veth peer name dvvxu1 && ip link set dvvxu0 up && "
		      "ip link set dvvxu1 up && ip link add name dvvxb0 type bridge && "
		      "ip link set dvvxb0 up");
}

static int ifaces_teardown(void **state)
{
	return system("ip link del dvvxu0 2>/dev/null; ip link del dvvxb0 2>/dev/null; true");
}

static const char *mode_name(int m)
{
	switch (m) {
	case XDP_ATTACHED_NONE: return "none";
	case XDP_ATTACHED_DRV: return "native (DRV)";
	case XDP_ATTACHED_SKB: return "generic (SKB)";
	case XDP_ATTACHED_HW: return "offload (HW)";
	case XDP_ATTACHED_MULTI: return "multi";
	default: return "(unknown)";
	}
}

static int attached_mode(const char *ifname)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	int idx = (int)if_nametoindex(ifname);
	if (!idx)
		fail_msg("expected interface %s to exist", ifname);
	if (bpf_xdp_query(idx, 0, &q))
		fail_msg("bpf_xdp_query(%s) failed: %s", ifname, strerror(errno));
	return q.attach_mode;
}

static void expect_mode(const char *ifname, int want, const char *what)
{
	int got = attached_mode(ifname);
	if (got != want)
		fail_msg("%s: expected %s on %s, got %s", what, mode_name(want), ifname,
			 mode_name(got));
}

static int start_on(struct xdp_guard **g, const char *ifaces, const char *mode, char *pin,
		    size_t pinlen)
{
	struct relay_cfg cfg;
	cfg_for_test(&cfg);
	snprintf(cfg.xdp_ifaces, sizeof(cfg.xdp_ifaces), "%s", ifaces);
	snprintf(cfg.xdp_mode, sizeof(cfg.xdp_mode), "%s", mode);
	pin_dir_for_test(pin, pinlen);
	return xdp_guard_start(g, &cfg, PLAYER_PORT, AGENT_PORT, pin);
}

static void auto_mode_attaches_native_on_veth_and_generic_on_a_bridge(void **state)
{
	struct guard_fixture *f = *state;
	int rc = start_on(&f->g, "dvvxu0, dvvxb0", "auto", f->pin, sizeof(f->pin));
	if (rc)
		fail_msg("auto on veth + bridge: expected 0, got %d (%s)", rc, strerror(-rc));
	expect_mode("dvvxu0", XDP_ATTACHED_DRV, "auto mode on veth");
	expect_mode("dvvxb0", XDP_ATTACHED_SKB, "auto mode on a bridge (no native XDP)");
	xdp_guard_stop(f->g);
	f->g = NULL;
	expect_mode("dvvxu0", XDP_ATTACHED_NONE, "after stop");
	expect_mode("dvvxb0", XDP_ATTACHED_NONE, "after stop");
	if (path_exists(f->pin))
		fail_msg("expected %s removed at stop", f->pin);
}

static void generic_mode_is_honoured_on_veth(void **state)
{
	struct guard_fixture *f = *state;
	int rc = start_on(&f->g, "dvvxu0", "generic", f->pin, sizeof(f->pin));
	if (rc)
		fail_msg("generic on veth: expected 0, got %d (%s)", rc, strerror(-rc));
	expect_mode("dvvxu0", XDP_ATTACHED_SKB, "generic mode on veth");
	xdp_guard_stop(f->g);
	f->g = NULL;
	expect_mode("dvvxu0", XDP_ATTACHED_NONE, "after stop");
}

static void native_mode_fails_cleanly_where_unsupported(void **state)
{
	struct guard_fixture *f = *state;
	/* The veth attaches first; the bridge then fails: the veth must be detached again. */
	int rc = start_on(&f->g, "dvvxu0,dvvxb0", "native", f->pin, sizeof(f->pin));
	if (rc == 0 || f->g)
		fail_msg("native on a bridge: expected an error and no guard, got %d", rc);
	expect_mode("dvvxu0", XDP_ATTACHED_NONE, "veth after the failed start");
	expect_mode("dvvxb0", XDP_ATTACHED_NONE, "bridge after the failed start");
	if (path_exists(f->pin))
		fail_msg("expected nothing pinned after a failed start, %s exists", f->pin);
}

static void an_interface_already_guarded_is_not_taken_over(void **state)
{
	struct guard_fixture *f = *state;
	char pin2[PATH_MAX];
	__u32 id_before = 0, id_after = 0;
	int rc = start_on(&f->g, "dvvxu0", "auto", f->pin, sizeof(f->pin));
	if (rc)
		fail_msg("first guard: expected 0, got %d (%s)", rc, strerror(-rc));
	bpf_xdp_query_id((int)if_nametoindex("dvvxu0"), 0, &id_before);
	rc = start_on(&f->g2, "dvvxu0", "auto", pin2, sizeof(pin2));
	if (rc != -EBUSY && rc != -EEXIST)
		fail_msg("second guard on the same interface: expected -EBUSY, got %d (%s)", rc,
			 strerror(-rc));
	bpf_xdp_query_id((int)if_nametoindex("dvvxu0"), 0, &id_after);
	if (!id_before || id_after != id_before)
		fail_msg("expected the first guard's program %u still attached, got %u", id_before,
			 id_after);
	xdp_guard_stop(f->g);
	f->g = NULL;
	expect_mode("dvvxu0", XDP_ATTACHED_NONE, "after stop");
}

static void unknown_interface_is_an_error(void **state)
{
	struct guard_fixture *f = *state;
	int rc = start_on(&f->g, "dvvxu0,nosuchif0", "auto", f->pin, sizeof(f->pin));
	if (rc != -ENODEV || f->g)
		fail_msg("unknown interface: expected -ENODEV, got %d (%s)", rc, strerror(-rc));
	expect_mode("dvvxu0", XDP_ATTACHED_NONE, "the known interface after the failed start");
}

/* ---- SYN cookies --------------------------------------------------------------------------- */

/* MSS 1460, SACK permitted, timestamps (TSval 0x11223344), NOP, window scale 7: Linux's SYN. */
static const uint8_t LINUX_SYN_OPTS[20] = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0x11, 0x22,
					   0x33, 0x44, 0, 0, 0, 0, 1, 3, 3, 7};
/* MSS 1460, NOP, window scale 8, NOP, NOP, SACK permitted: Windows' SYN (no timestamps). */
static const uint8_t WINDOWS_SYN_OPTS[12] = {2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2};

static void cfg_cookies(struct relay_cfg *cfg, const char *mode)
{
	cfg_for_test(cfg);
	strcpy(cfg->xdp_syncookies, mode);
}

/* Whether this kernel can complete a connection from an XDP cookie: the bpf_sk_assign_tcp_reqsk
 * kfunc (Linux 6.9+). Read from the kernel's BTF here, independently of the guard's own check, so
 * a guard that falls back on a kernel that has the kfunc still fails every cookie test. */
static bool kernel_has_cookie_kfunc(void)
{
	struct btf *vmlinux = btf__load_vmlinux_btf();
	bool has = vmlinux && btf__find_by_name_kind(vmlinux, "bpf_sk_assign_tcp_reqsk",
						      BTF_KIND_FUNC) > 0;
	btf__free(vmlinux);
	return has;
}

/* The cookie tests need the kfunc; without it (older kernels, vmtest/) they skip and say why,
 * and cookie_mode_follows_the_kernel checks the fallback the relay takes there instead. */
#define NEED_COOKIE_KFUNC()                                                                      \
	do {                                                                                     \
		if (!kernel_has_cookie_kfunc()) {                                                \
			print_message("skip: the kernel has no bpf_sk_assign_tcp_reqsk kfunc "   \
				      "(Linux 6.9+): SYN cookies fall back to the budget\n");  \
			skip();                                                                  \
		}                                                                                \
	} while (0)

static int run_out(struct guard_fixture *f, const struct pkt *p, struct pkt *out)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = p->b, .data_size_in = (__u32)p->len,
		    .data_out = out->b, .data_size_out = sizeof(out->b), .repeat = 1);
	memset(out, 0, sizeof(*out));
	int rc = bpf_prog_test_run_opts(f->prog_fd, &o);
	if (rc)
		fail_msg("BPF_PROG_TEST_RUN: expected 0, got %d (%s)", rc, strerror(-rc));
	out->len = o.data_size_out;
	return (int)o.retval;
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t sum)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* What a cookie SYN-ACK says, after checking every header and checksum in it. */
struct synack_view {
	uint32_t seq, ack;
	uint16_t sport, dport, mss;
	int wscale; /* -1: none */
	bool sack, ts;
	uint32_t tsval, tsecr;
};

static struct synack_view check_synack(const struct pkt *in, const struct pkt *out, size_t l2)
{
	struct synack_view v = {.wscale = -1};
	bool v6 = in->b[l2 - 2] == 0x86;
	size_t l3len = v6 ? 40 : 20, l4 = l2 + l3len;
	const uint8_t *ip = out->b + l2, *th = out->b + l4, *iip = in->b + l2;

	if (out->len != l4 + 40)
		fail_msg("expected a SYN-ACK of %zu bytes, got %zu", l4 + 40, (size_t)out->len);
	if (memcmp(out->b, in->b + 6, 6) || memcmp(out->b + 6, in->b, 6))
		fail_msg("expected the Ethernet addresses swapped");
	if (memcmp(out->b + 12, in->b + 12, l2 - 12))
		fail_msg("expected the VLAN tags and ethertype kept");
	uint32_t pseudo;
	if (!v6) {
		if (ip[0] != 0x45 || (ip[2] << 8 | ip[3]) != 60 || ip[9] != 6 || ip[8] == 0)
			fail_msg("IPv4 header: expected version 4, ihl 5, length 60, TCP, a TTL");
		if (fold(sum16(ip, 20, 0)) != 0xffff)
			fail_msg("IPv4 header checksum does not check");
		if (memcmp(ip + 12, iip + 16, 4) || memcmp(ip + 16, iip + 12, 4))
			fail_msg("expected the IPv4 addresses swapped");
		pseudo = sum16(ip + 12, 8, 6 + 40);
	} else {
		if (ip[0] >> 4 != 6 || (ip[4] << 8 | ip[5]) != 40 || ip[6] != 6 || ip[7] == 0)
			fail_msg("IPv6 header: expected version 6, payload 40, TCP, a hop limit");
		if (memcmp(ip + 8, iip + 24, 16) || memcmp(ip + 24, iip + 8, 16))
			fail_msg("expected the IPv6 addresses swapped");
		pseudo = sum16(ip + 8, 32, 6 + 40);
	}
	if (fold(sum16(th, 40, pseudo)) != 0xffff)
		fail_msg("TCP checksum of the SYN-ACK does not check");
	const uint8_t *ith = in->b + l4 + (v6 ? 0 : (in->b[l2] & 0xf) * 4 - 20);
	v.sport = (uint16_t)(th[0] << 8 | th[1]);
	v.dport = (uint16_t)(th[2] << 8 | th[3]);
	if (memcmp(th, ith + 2, 2) || memcmp(th + 2, ith, 2))
		fail_msg("expected the TCP ports swapped");
	v.seq = get32(th + 4);
	v.ack = get32(th + 8);
	if (v.ack != get32(ith + 4) + 1)
		fail_msg("expected ack = the SYN's sequence + 1, got %" PRIu32, v.ack);
	if (th[12] >> 4 != 10 || th[13] != (TCP_SYN | TCP_ACK))
		fail_msg("expected a 40-byte header with SYN+ACK, got doff %d flags 0x%02x",
			 th[12] >> 4, th[13]);
	for (size_t i = 20; i < 40;) {
		uint8_t k = th[i];
		if (k == 0)
			break;
		if (k == 1) {
			i++;
			continue;
		}
		uint8_t len = th[i + 1];
		if (len < 2 || i + len > 40)
			fail_msg("malformed option %u at %zu", k, i);
		if (k == 2)
			v.mss = (uint16_t)(th[i + 2] << 8 | th[i + 3]);
		else if (k == 3)
			v.wscale = th[i + 2];
		else if (k == 4)
			v.sack = true;
		else if (k == 8) {
			v.ts = true;
			v.tsval = get32(th + i + 2);
			v.tsecr = get32(th + i + 6);
		}
		i += len;
	}
	return v;
}

/* The ACK a client sends for the SYN `syn` (options o) after the SYN-ACK view v. */
static struct pkt ack_for(struct pkt_opts o, const struct synack_view *v, uint8_t flags)
{
	static uint8_t ts[12] = {1, 1, 8, 10};
	o.seq = v->ack; /* the SYN's sequence + 1 */
	o.ack = v->seq + 1;
	o.flags = flags;
	o.opt = NULL;
	o.optlen = 0;
	if (v->ts) {
		ts[4] = 0x11, ts[5] = 0x22, ts[6] = 0x33, ts[7] = 0x45;
		for (int i = 0; i < 4; i++)
			ts[8 + i] = (uint8_t)(v->tsval >> (24 - 8 * i));
		o.opt = ts;
		o.optlen = sizeof(ts);
	}
	return build(o);
}

static int listen_any(int family, uint16_t port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_storage ss = {0};
	socklen_t len;
	if (family == AF_INET6) {
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6, a->sin6_port = htons(port), a->sin6_addr = in6addr_any;
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET, a->sin_port = htons(port), a->sin_addr.s_addr = INADDR_ANY;
		len = sizeof(*a);
	}
	if (bind(fd, (struct sockaddr *)&ss, len) || listen(fd, 16))
		fail_msg("listen on port %u: %s", port, strerror(errno));
	return fd;
}

static void cookie_synack_is_well_formed_ipv4_and_ipv6(void **state)
{
	struct guard_fixture *f = *state;
	NEED_COOKIE_KFUNC();
	struct relay_cfg cfg;
	cfg_cookies(&cfg, "always");
	guard_up(f, &cfg);

	static const uint8_t v6opts[20] = {2, 4, 0x05, 0xa0, 4, 2, 8, 10, 0x11, 0x22,
					   0x33, 0x44, 0, 0, 0, 0, 1, 3, 3, 7};
	struct {
		struct pkt_opts o;
		uint16_t mss;
	} cases[] = {
		{{.src = "203.0.113.50", .opt = LINUX_SYN_OPTS, .optlen = 20}, 1460},
		{{.src = "2001:db8:5::1", .opt = v6opts, .optlen = 20}, 1440},
	};
	for (size_t i = 0; i < 2; i++) {
		struct pkt syn = build(cases[i].o), out;
		int act = run_out(f, &syn, &out);
		if (act != XDP_TX)
			fail_msg("case %zu: expected XDP_TX (a cookie SYN-ACK), got %s", i, act_name(act));
		struct synack_view v = check_synack(&syn, &out, 14);
		if (v.mss != cases[i].mss || v.wscale < 0 || v.wscale > 14 || !v.sack || !v.ts ||
		    v.tsecr != 0x11223344)
			fail_msg("case %zu: expected MSS %u, a window scale, SACK and the TSval "
				 "echoed; got MSS %u ws %d sack %d ts %d ecr 0x%08" PRIx32,
				 i, cases[i].mss, v.mss, v.wscale, v.sack, v.ts, v.tsecr);
		if ((v.seq & 0x0f) != 7 || !(v.seq & 0x20))
			fail_msg("case %zu: expected the cookie to carry wscale 7 and SACK, "
				 "got 0x%08" PRIx32, i, v.seq);
	}
	expect_counters(f, (struct dvv_xdp_counters){.tx_cookie = 2});
	int fd = map_fd(f, "xdp_sources");
	int n = map_entries(fd, sizeof(struct dvv_src_key));
	close(fd);
	if (n)
		fail_msg("expected no per-source state for SYNs answered with a cookie, got %d", n);
	guard_down(f);
}

static void syn_options_decide_the_answer(void **state)
{
	struct guard_fixture *f = *state;
	NEED_COOKIE_KFUNC();
	struct relay_cfg cfg;
	cfg_cookies(&cfg, "always");
	guard_up(f, &cfg);

	struct pkt out, win = build((struct pkt_opts){.src = "203.0.113.51", .opt = WINDOWS_SYN_OPTS,
						       .optlen = 12});
	expect_verdict(f, &win, XDP_TX, "Windows-style SYN");
	run_out(f, &win, &out);
	struct synack_view v = check_synack(&win, &out, 14);
	if (v.mss != 1460 || v.wscale < 0 || !v.sack || v.ts)
		fail_msg("Windows SYN: expected MSS 1460, window scale, SACK, no timestamps; got "
			 "MSS %u ws %d sack %d ts %d", v.mss, v.wscale, v.sack, v.ts);

	struct pkt bare = SYN_FROM("203.0.113.52");
	run_out(f, &bare, &out);
	v = check_synack(&bare, &out, 14);
	if (v.mss != 536 || v.wscale != -1 || v.sack || v.ts)
		fail_msg("SYN without options: expected MSS 536 and nothing else; got MSS %u ws %d "
			 "sack %d ts %d", v.mss, v.wscale, v.sack, v.ts);

	static const uint8_t mss1400[4] = {2, 4, 0x05, 0x78};
	struct pkt small = build((struct pkt_opts){.src = "203.0.113.53", .opt = mss1400,
						    .optlen = 4});
	run_out(f, &small, &out);
	v = check_synack(&small, &out, 14);
	if (v.mss != 1300)
		fail_msg("SYN with MSS 1400: expected it rounded down to 1300, got %u", v.mss);

	struct pkt tagged = build((struct pkt_opts){.src = "203.0.113.54", .vlans = 2,
						     .opt = LINUX_SYN_OPTS, .optlen = 20});
	expect_verdict(f, &tagged, XDP_TX, "SYN behind two VLAN tags");
	run_out(f, &tagged, &out);
	check_synack(&tagged, &out, 22);
	guard_down(f);
}

static void cookie_ack_passes_and_forgeries_drop(void **state)
{
	struct guard_fixture *f = *state;
	NEED_COOKIE_KFUNC();
	struct relay_cfg cfg;
	cfg_cookies(&cfg, "always");
	guard_up(f, &cfg);
	int l4 = listen_any(AF_INET, PLAYER_PORT), l6 = listen_any(AF_INET6, PLAYER_PORT);

	const char *srcs[] = {"203.0.113.60", "2001:db8:6::1"};
	for (int i = 0; i < 2; i++) {
		struct pkt_opts o = {.src = srcs[i], .opt = LINUX_SYN_OPTS, .optlen = 20};
		struct pkt syn = build(o), out;
		assert_int_equal(run_out(f, &syn, &out), XDP_TX);
		struct synack_view v = check_synack(&syn, &out, 14);

		struct pkt ack = ack_for(o, &v, TCP_ACK);
		expect_verdict(f, &ack, XDP_PASS, "%s: the ACK with the cookie", srcs[i]);
		struct pkt data = ack_for(o, &v, TCP_ACK | 0x08);
		expect_verdict(f, &data, XDP_PASS, "%s: first data segment (its ACK lost)", srcs[i]);
		source_bucket(f, srcs[i]); /* an answered cookie proves the address: now known */

		struct synack_view bad = v;
		bad.seq += 1;
		struct pkt p = ack_for(o, &bad, TCP_ACK);
		expect_verdict(f, &p, XDP_DROP, "%s: ACK one past the cookie", srcs[i]);
		bad.seq = v.seq ^ 0x00ff0000;
		p = ack_for(o, &bad, TCP_ACK);
		expect_verdict(f, &p, XDP_DROP, "%s: ACK with a changed cookie hash", srcs[i]);
		bad = v;
		bad.seq = (v.seq & ~0xffU) | ((v.seq + 1) & 0x0f) | (v.seq & 0xe0);
		p = ack_for(o, &bad, TCP_ACK);
		expect_verdict(f, &p, XDP_DROP, "%s: ACK with the cookie's options changed", srcs[i]);
		struct pkt_opts other = o;
		other.sport = 40001;
		p = ack_for(other, &v, TCP_ACK);
		expect_verdict(f, &p, XDP_DROP, "%s: the cookie from another port", srcs[i]);
		p = ack_for(o, &v, TCP_RST);
		expect_verdict(f, &p, XDP_DROP, "%s: RST to the listener", srcs[i]);
	}
	expect_counters(f, (struct dvv_xdp_counters){.tx_cookie = 2, .pass_cookie = 4,
						      .drop_ack = 10});
	close(l4);
	close(l6);
	guard_down(f);
}

static void segments_of_connections_pass_and_strays_without_a_socket(void **state)
{
	struct guard_fixture *f = *state;
	NEED_COOKIE_KFUNC();
	struct relay_cfg cfg;
	cfg_cookies(&cfg, "always");
	guard_up(f, &cfg);
	int lfd = listen_any(AF_INET, PLAYER_PORT);

	/* a real connection on this namespace's loopback */
	if (system("ip link set lo up") != 0)
		fail_msg("ip link set lo up failed");
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(PLAYER_PORT),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)}, me;
	socklen_t ml = sizeof(me);
	if (connect(c, (struct sockaddr *)&to, sizeof(to)) || getsockname(c, (struct sockaddr *)&me, &ml))
		fail_msg("loopback connection: %s", strerror(errno));
	int a = accept(lfd, NULL, NULL);
	assert_true(a >= 0);
	struct pkt_opts est = {.src = "127.0.0.1", .dst = "127.0.0.1", .sport = ntohs(me.sin_port),
			       .seq = 0xdeadbeef, .ack = 0x12345678, .flags = TCP_ACK};
	struct pkt p = build(est);
	expect_verdict(f, &p, XDP_PASS, "ACK of an established connection (numbers are the kernel's to judge)");
	est.flags = TCP_RST;
	p = build(est);
	expect_verdict(f, &p, XDP_PASS, "RST of an established connection");

	p = build((struct pkt_opts){.src = "203.0.113.70", .dport = AGENT_PORT, .flags = TCP_ACK});
	expect_verdict(f, &p, XDP_PASS, "ACK to a protected port nothing listens on (the kernel answers RST)");
	p = build((struct pkt_opts){.src = "203.0.113.70", .dport = AGENT_PORT, .flags = TCP_RST});
	expect_verdict(f, &p, XDP_DROP, "RST to a port nothing listens on");
	p = build((struct pkt_opts){.src = "203.0.113.70", .dport = OTHER_PORT, .flags = TCP_RST});
	expect_verdict(f, &p, XDP_PASS, "RST to an unprotected port");
	expect_counters(f, (struct dvv_xdp_counters){.pass_other = 4, .drop_ack = 1});
	close(a);
	close(c);
	close(lfd);
	guard_down(f);
}

static void flood_mode_answers_with_cookies_once_the_budget_is_spent(void **state)
{
	struct guard_fixture *f = *state;
	NEED_COOKIE_KFUNC();
	struct relay_cfg cfg;
	cfg_cookies(&cfg, "flood");
	cfg.xdp_port_syn_budget = 20;
	guard_up(f, &cfg);

	char addr[32];
	for (int i = 0; i < 100; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", 1 + i % 7, i / 7, 1 + i);
		struct pkt p = SYN_FROM(addr);
		expect_verdict(f, &p, i < 20 ? XDP_PASS : XDP_TX,
			       "SYN %d of a 100-source flood against a budget of 20", i + 1);
	}
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 20, .tx_cookie = 80});
	int fd = map_fd(f, "xdp_sources");
	int n = map_entries(fd, sizeof(struct dvv_src_key));
	close(fd);
	if (n != 20)
		fail_msg("expected buckets only for the 20 sources the budget admitted, got %d", n);
	guard_down(f);
}

static void syns_the_guard_cannot_answer_are_dropped_or_answered_plainly(void **state)
{
	struct guard_fixture *f = *state;
	NEED_COOKIE_KFUNC();
	struct relay_cfg cfg;
	cfg_cookies(&cfg, "always");
	guard_up(f, &cfg);

	struct pkt p = build((struct pkt_opts){.src = "203.0.113.80", .ip_opts = 1});
	expect_verdict(f, &p, XDP_DROP, "SYN with IPv4 options (not answered here)");
	p = build((struct pkt_opts){.src = "2001:db8:8::1", .v6_ext = 1});
	expect_verdict(f, &p, XDP_DROP, "IPv6 SYN behind extension headers (not answered here)");
	/* options that run past the end of the packet: answered as a SYN without options */
	struct pkt cut = build((struct pkt_opts){.src = "203.0.113.81", .opt = LINUX_SYN_OPTS,
						  .optlen = 20}), out;
	cut.b[14 + 20 + 12] = 15 << 4; /* doff 15: 40 bytes of options, 20 present */
	assert_int_equal(run_out(f, &cut, &out), XDP_TX);
	struct synack_view v = check_synack(&cut, &out, 14);
	if (v.mss != 536 || v.ts)
		fail_msg("cut options: expected the defaults (MSS 536, no timestamps), got MSS %u ts %d",
			 v.mss, v.ts);
	/* a SYN so short the answer must grow the frame (no tailroom problem at 54 bytes) */
	struct pkt bare = SYN_FROM("203.0.113.82");
	assert_int_equal(run_out(f, &bare, &out), XDP_TX);
	check_synack(&bare, &out, 14);
	expect_counters(f, (struct dvv_xdp_counters){.drop_budget = 2, .tx_cookie = 2});
	guard_down(f);
}

static void random_source_flood_leaves_no_state_and_the_lru_is_sized(void **state)
{
	struct guard_fixture *f = *state;
	NEED_COOKIE_KFUNC();
	struct relay_cfg cfg;
	cfg_cookies(&cfg, "always");
	cfg.xdp_max_sources = 2048;
	guard_up(f, &cfg);

	char addr[32];
	for (int i = 0; i < 3000; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", 1 + i % 200, (i / 200) % 250, 1 + i % 250);
		struct pkt p = SYN_FROM(addr);
		expect_verdict(f, &p, XDP_TX, "SYN %d of a random-source flood", i + 1);
	}
	int fd = map_fd(f, "xdp_sources");
	struct bpf_map_info info = {0};
	__u32 il = sizeof(info);
	assert_int_equal(bpf_obj_get_info_by_fd(fd, &info, &il), 0);
	int n = map_entries(fd, sizeof(struct dvv_src_key));
	close(fd);
	if (info.max_entries != 2048)
		fail_msg("expected --xdp-max-sources 2048 to size xdp_sources, got %u", info.max_entries);
	if (n)
		fail_msg("expected no per-source state from a spoofed SYN flood, got %d entries", n);
	guard_down(f);
}

static void cookies_off_keeps_the_old_guard(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_cookies(&cfg, "off");
	cfg.xdp_port_syn_budget = 1;
	guard_up(f, &cfg);
	struct pkt a = SYN_FROM("203.0.113.90"), b = SYN_FROM("203.0.113.91");
	expect_verdict(f, &a, XDP_PASS, "first SYN within the budget of 1");
	expect_verdict(f, &b, XDP_DROP, "a new source over the budget, cookies off");
	struct pkt ack = build((struct pkt_opts){.src = "203.0.113.92", .flags = TCP_ACK});
	expect_verdict(f, &ack, XDP_PASS, "an ACK is not judged with cookies off");
	expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 1, .drop_budget = 1, .pass_other = 1});
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/xdp_cookie_tc_prog", f->pin);
	if (path_exists(path))
		fail_msg("expected no TC cookie program with cookies off");
	guard_down(f);
}

/* Asked for cookies, the guard uses them where the kernel has the kfunc (the TC half pinned) and
 * otherwise starts anyway with cookies off: SYNs over the budget dropped, no TC program. */
static void cookie_mode_follows_the_kernel(void **state)
{
	struct guard_fixture *f = *state;
	struct relay_cfg cfg;
	cfg_cookies(&cfg, "flood");
	cfg.xdp_port_syn_budget = 1;
	guard_up(f, &cfg);
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/xdp_cookie_tc_prog", f->pin);
	struct pkt a = SYN_FROM("203.0.113.95"), b = SYN_FROM("203.0.113.96");
	expect_verdict(f, &a, XDP_PASS, "first SYN within the budget of 1");
	if (kernel_has_cookie_kfunc()) {
		if (xdp_guard_cookie_mode(f->g) != DVV_SYNCOOKIES_FLOOD)
			fail_msg("kernel has the kfunc: expected cookies in flood mode, got mode %d",
				 xdp_guard_cookie_mode(f->g));
		if (!path_exists(path))
			fail_msg("kernel has the kfunc: expected the TC cookie program pinned");
		expect_verdict(f, &b, XDP_TX, "a new source over the budget gets a cookie");
		expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 1, .tx_cookie = 1});
	} else {
		print_message("kernel without bpf_sk_assign_tcp_reqsk: checking the fallback\n");
		if (xdp_guard_cookie_mode(f->g) != DVV_SYNCOOKIES_OFF)
			fail_msg("kernel lacks the kfunc: expected cookies off, got mode %d",
				 xdp_guard_cookie_mode(f->g));
		if (path_exists(path))
			fail_msg("kernel lacks the kfunc: expected no TC cookie program pinned");
		expect_verdict(f, &b, XDP_DROP, "a new source over the budget, cookies fell back");
		expect_counters(f, (struct dvv_xdp_counters){.pass_syn = 1, .drop_budget = 1});
	}
	guard_down(f);
}

/* ---- main ---------------------------------------------------------------------------------- */

static int guard_setup(void **state)
{
	struct guard_fixture *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	f->prog_fd = -1;
	*state = f;
	return 0;
}

static int guard_teardown(void **state)
{
	struct guard_fixture *f = *state;
	if (!f)
		return 0;
	if (f->prog_fd >= 0)
		close(f->prog_fd);
	xdp_guard_stop(f->g);
	xdp_guard_stop(f->g2);
	free(f);
	return 0;
}

/* Whatever a failed test left pinned under pin_root. */
static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path) ? 0 : 0;
}

static void xdp_guard_tests_need_root(void **state)
{
	skip(); /* BPF, XDP attach and namespaces need CAP_SYS_ADMIN + CAP_NET_ADMIN + CAP_BPF */
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, guard_setup, guard_teardown)

int main(void)
{
	log_init("test_xdp", LOG_WARN);
	bool is_root = geteuid() == 0;
	snprintf(pin_root, sizeof(pin_root), "/sys/fs/bpf/dvv-test-xdp-%d", (int)getpid());
	if (is_root) {
		/* Interfaces and any bpffs mount made from here on die with this process. */
		if (unshare(CLONE_NEWNET | CLONE_NEWNS) ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) {
			fprintf(stderr, "test_xdp: unshare/mount: %s\n", strerror(errno));
			return 1;
		}
	} else {
		const struct CMUnitTest none[] = {cmocka_unit_test(xdp_guard_tests_need_root)};
		return cmocka_run_group_tests_name("xdp guard", none, NULL, NULL);
	}

	const struct CMUnitTest guard[] = {
		T(syn_under_rate_passes_then_burst_plus_one_drops),
		T(new_source_gets_a_full_bucket),
		T(ipv6_syn_is_limited_per_slash_64),
		T(bucket_refills_at_the_configured_rate),
		T(agent_port_is_guarded_too),
		T(non_syn_and_syn_ack_pass_even_from_a_limited_source),
		T(syn_to_another_port_passes),
		T(udp_to_a_protected_port_passes),
		T(truncated_headers_at_every_layer_pass),
		T(vlan_tagged_syn_is_guarded),
		T(syn_behind_ipv6_extension_headers_is_guarded),
		T(ipv4_fragments_first_is_guarded_later_ones_pass),
		T(allow_list_bypasses_every_limit),
		T(deny_list_drops_and_wins_over_allow),
		T(port_budget_drops_a_random_source_flood),
		T(known_sources_draw_on_the_reserve_when_the_budget_is_gone),
		T(one_flooding_source_cannot_spend_the_shared_budget),
		T(bad_cidrs_are_rejected_before_anything_is_loaded),
		T(good_cidrs_fill_the_tries),
		T(stale_pins_are_replaced_and_other_pins_kept),
		T(auto_mode_attaches_native_on_veth_and_generic_on_a_bridge),
		T(generic_mode_is_honoured_on_veth),
		T(native_mode_fails_cleanly_where_unsupported),
		T(an_interface_already_guarded_is_not_taken_over),
		T(unknown_interface_is_an_error),
		T(cookie_synack_is_well_formed_ipv4_and_ipv6),
		T(syn_options_decide_the_answer),
		T(cookie_ack_passes_and_forgeries_drop),
		T(segments_of_connections_pass_and_strays_without_a_socket),
		T(flood_mode_answers_with_cookies_once_the_budget_is_spent),
		T(syns_the_guard_cannot_answer_are_dropped_or_answered_plainly),
		T(random_source_flood_leaves_no_state_and_the_lru_is_sized),
		T(cookies_off_keeps_the_old_guard),
		T(cookie_mode_follows_the_kernel),
	};
	int failed = cmocka_run_group_tests_name("xdp guard", guard, ifaces_setup, ifaces_teardown);
	nftw(pin_root, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	return failed;
}
