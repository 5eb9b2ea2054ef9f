/* XDP SYN guard loader: opens the skeleton of bpf/xdp_guard.bpf.c, sets its tunables, loads it,
 * fills the allow/deny tries, pins the maps (and the program) under pin_dir for operators, and
 * attaches one XDP link per interface. The links are not pinned: if the relay dies, the kernel
 * detaches the program with it instead of leaving a guard nobody is watching.
 * With SYN cookies on (--xdp-syncookies), it first checks the kernel can take them (the
 * bpf_sk_assign_tcp_reqsk kfunc, net.ipv4.tcp_syncookies), then loads bpf/xdp_cookie_tc.bpf.c
 * and attaches it at TC ingress of the same interfaces; where anything is missing it says why
 * and runs the guard without cookies. */
#include "xdp_guard.h"
#include "../bpf/xdp_guard.h"
#include "bpf_log.h"
#include "config.h"
#include "log.h"
#include "pins.h"
#include "xdp_cookie_tc.skel.h"
#include "xdp_guard.skel.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <ctype.h>
#include <errno.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define XDP_MAX_IFACES 16
#define PROG_PIN_NAME "xdp_guard_prog"

#define TC_PROG_PIN_NAME "xdp_cookie_tc_prog"
#define TC_PRIORITY 0xd77 /* our filter's place in the clsact ingress chain */

struct guard_iface {
	char name[IF_NAMESIZE];
	unsigned int ifindex;
	int link_fd; /* -1 until attached; closing it detaches */
	const char *mode;
	bool tc_attached; /* our TC filter is on the ingress hook */
	bool tc_made_hook; /* the clsact qdisc was ours to create, so ours to remove */
};

struct xdp_guard {
	struct xdp_guard_bpf *skel;
	struct xdp_cookie_tc_bpf *tc; /* NULL unless SYN cookies are on */
	int cookie_mode;	      /* enum dvv_syncookie_mode actually in force */
	struct pin_dir pins;
	int n_ifaces;
	struct guard_iface ifaces[XDP_MAX_IFACES];
};

struct cidr_list {
	int n;
	struct dvv_lpm_key keys[DVV_XDP_MAX_CIDRS];
};

static const char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	return s;
}

/* "a.b.c.d[/n]" or "v6[/n]" -> LPM key (IPv4 v4-mapped). Host bits set is an error: it is
 * almost always a typo for a different prefix. 0 or -EINVAL with the reason in err. */
static int cidr_parse(const char *s, struct dvv_lpm_key *k, char *err, size_t errlen)
{
	char addr[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	bool v6 = memchr(s, ':', alen) != NULL;
	unsigned int max = v6 ? 128 : 32, plen = max;

	memset(k, 0, sizeof(*k));
	if (!alen || alen >= sizeof(addr)) {
		snprintf(err, errlen, "missing or overlong address");
		return -EINVAL;
	}
	memcpy(addr, s, alen);
	addr[alen] = 0;
	if (slash) {
		const char *p = slash + 1;
		if (!*p || strlen(p) > 3 || strspn(p, "0123456789") != strlen(p)) {
			snprintf(err, errlen, "prefix length '%s' is not a number from 0 to %u", p, max);
			return -EINVAL;
		}
		plen = (unsigned int)atoi(p);
		if (plen > max) {
			snprintf(err, errlen, "prefix length %u is over %u", plen, max);
			return -EINVAL;
		}
	}
	if (v6) {
		if (inet_pton(AF_INET6, addr, k->addr) != 1) {
			snprintf(err, errlen, "'%s' is not an IPv6 address", addr);
			return -EINVAL;
		}
		k->prefixlen = plen;
	} else {
		if (inet_pton(AF_INET, addr, &k->addr[12]) != 1) {
			snprintf(err, errlen, "'%s' is not an IPv4 address", addr);
			return -EINVAL;
		}
		k->addr[10] = k->addr[11] = 0xff;
		k->prefixlen = plen + 96;
	}
	for (unsigned int bit = k->prefixlen; bit < 128; bit++) {
		if (k->addr[bit / 8] & (0x80 >> (bit % 8))) {
			unsigned char masked[16];
			char net[INET6_ADDRSTRLEN];
			memcpy(masked, k->addr, 16);
			for (unsigned int b = k->prefixlen; b < 128; b++)
				masked[b / 8] &= (unsigned char)~(0x80 >> (b % 8));
			if (v6)
				inet_ntop(AF_INET6, masked, net, sizeof(net));
			else
				inet_ntop(AF_INET, &masked[12], net, sizeof(net));
			snprintf(err, errlen, "host bits set (did you mean %s/%u?)", net, plen);
			return -EINVAL;
		}
	}
	return 0;
}

/* A comma-separated CIDR list from the config; empty items are skipped. */
static int cidr_list_parse(const char *flag, const char *csv, struct cidr_list *out)
{
	char buf[1024], err[128];

	out->n = 0;
	if (strlen(csv) >= sizeof(buf)) {
		pr_err("xdp guard: --%s: list too long", flag);
		return -EINVAL;
	}
	strcpy(buf, csv);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		const char *item = trim(tok);
		if (!*item)
			continue;
		if (out->n == DVV_XDP_MAX_CIDRS) {
			pr_err("xdp guard: --%s: more than %d prefixes", flag, DVV_XDP_MAX_CIDRS);
			return -E2BIG;
		}
		if (cidr_parse(item, &out->keys[out->n], err, sizeof(err))) {
			pr_err("xdp guard: --%s: '%s' is not a valid CIDR: %s", flag, item, err);
			return -EINVAL;
		}
		out->n++;
	}
	return 0;
}

static int ifaces_parse(struct xdp_guard *g, const char *csv)
{
	char buf[sizeof(((struct relay_cfg *)0)->xdp_ifaces)];

	snprintf(buf, sizeof(buf), "%s", csv);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		const char *name = trim(tok);
		if (!*name)
			continue;
		if (g->n_ifaces == XDP_MAX_IFACES) {
			pr_err("xdp guard: --xdp-ifaces: more than %d interfaces", XDP_MAX_IFACES);
			return -E2BIG;
		}
		if (strlen(name) >= IF_NAMESIZE) {
			pr_err("xdp guard: --xdp-ifaces: '%s' is too long for an interface name",
			       name);
			return -EINVAL;
		}
		unsigned int idx = if_nametoindex(name);
		if (!idx) {
			pr_err("xdp guard: --xdp-ifaces: no interface '%s'", name);
			return -ENODEV;
		}
		for (int i = 0; i < g->n_ifaces; i++)
			if (g->ifaces[i].ifindex == idx) {
				pr_err("xdp guard: --xdp-ifaces: '%s' listed twice", name);
				return -EINVAL;
			}
		struct guard_iface *ifc = &g->ifaces[g->n_ifaces++];
		snprintf(ifc->name, sizeof(ifc->name), "%s", name);
		ifc->ifindex = idx;
		ifc->link_fd = -1;
	}
	return 0;
}

static int cidr_list_load(const char *flag, const struct cidr_list *l, struct bpf_map *map)
{
	__u64 hits = 0;

	for (int i = 0; i < l->n; i++) {
		int rc = bpf_map__update_elem(map, &l->keys[i], sizeof(l->keys[i]), &hits,
					      sizeof(hits), BPF_ANY);
		if (rc) {
			pr_err("xdp guard: --%s: cannot add prefix %d to %s: %s", flag, i + 1,
			       bpf_map__name(map), strerror(-rc));
			return rc;
		}
	}
	return 0;
}

static int attach_mode(struct xdp_guard *g, struct guard_iface *ifc, __u32 flags)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags);
	int fd = bpf_link_create(bpf_program__fd(g->skel->progs.xdp_syn_guard), (int)ifc->ifindex,
				 BPF_XDP, &opts);
	if (fd < 0)
		return -errno;
	ifc->link_fd = fd;
	ifc->mode = flags == XDP_FLAGS_DRV_MODE ? "native" : "generic";
	return 0;
}

static int attach_iface(struct xdp_guard *g, struct guard_iface *ifc, const char *mode)
{
	int rc;

	if (!strcmp(mode, "generic")) {
		rc = attach_mode(g, ifc, XDP_FLAGS_SKB_MODE);
	} else {
		rc = attach_mode(g, ifc, XDP_FLAGS_DRV_MODE);
		/* Another program already there is not a reason to try the other mode. */
		if (rc && !strcmp(mode, "auto") && rc != -EBUSY && rc != -EEXIST && rc != -EPERM) {
			pr_info("xdp guard: %s: native mode unavailable (%s), trying generic",
				ifc->name, strerror(-rc));
			rc = attach_mode(g, ifc, XDP_FLAGS_SKB_MODE);
		}
	}
	if (rc == -EBUSY || rc == -EEXIST) {
		__u32 id = 0;
		bpf_xdp_query_id((int)ifc->ifindex, 0, &id);
		pr_err("xdp guard: %s already has an XDP program (id %u); not replacing it",
		       ifc->name, id);
	} else if (rc) {
		pr_err("xdp guard: cannot attach to %s in %s mode: %s", ifc->name, mode,
		       strerror(-rc));
	} else {
		pr_info("xdp guard: %s: attached in %s mode", ifc->name, ifc->mode);
	}
	return rc;
}

static __u64 per_second_ns(int rate) { return rate > 0 ? 1000000000ULL / (__u64)rate : 0; }

static long read_long(const char *path, long dflt)
{
	FILE *f = fopen(path, "re");
	long v = dflt;
	if (!f)
		return dflt;
	if (fscanf(f, "%ld", &v) != 1)
		v = dflt;
	fclose(f);
	return v;
}

int xdp_syncookie_mode_parse(const char *s)
{
	if (!strcmp(s, "off"))
		return DVV_SYNCOOKIES_OFF;
	if (!strcmp(s, "flood"))
		return DVV_SYNCOOKIES_FLOOD;
	if (!strcmp(s, "always"))
		return DVV_SYNCOOKIES_ALWAYS;
	return -EINVAL;
}

/* Why this kernel cannot complete a connection from an XDP cookie, or NULL if it can. */
static const char *cookie_blocker(void)
{
	struct btf *vmlinux = btf__load_vmlinux_btf();
	bool kfunc = false;

	if (vmlinux) {
		kfunc = btf__find_by_name_kind(vmlinux, "bpf_sk_assign_tcp_reqsk", BTF_KIND_FUNC) > 0;
		btf__free(vmlinux);
	}
	if (!kfunc)
		return "the kernel has no bpf_sk_assign_tcp_reqsk kfunc (Linux 6.9 or later)";
	if (read_long("/proc/sys/net/ipv4/tcp_syncookies", 1) == 0)
		return "net.ipv4.tcp_syncookies is 0 (the kernel refuses every cookie ACK)";
	return NULL;
}

/* The window scale the kernel would offer (tcp_select_initial_window): the smallest shift that
 * fits the largest receive buffer a socket can get into 16 bits. */
static unsigned int kernel_wscale(void)
{
	long space = read_long("/proc/sys/net/core/rmem_max", 212992);
	long tcp_max = 6291456;
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_rmem", "re");
	if (f) {
		long a, b, c;
		if (fscanf(f, "%ld %ld %ld", &a, &b, &c) == 3)
			tcp_max = c;
		fclose(f);
	}
	if (tcp_max > space)
		space = tcp_max;
	unsigned int ws = 0;
	while (ws < 14 && (space >> ws) > 65535)
		ws++;
	return ws;
}

/* The MSS to offer: the smallest MTU of the guarded interfaces minus the headers. */
static void cookie_max_mss(const struct xdp_guard *g, __u16 *mss4, __u16 *mss6)
{
	long mtu = 65535;
	char path[64];

	for (int i = 0; i < g->n_ifaces; i++) {
		snprintf(path, sizeof(path), "/sys/class/net/%s/mtu", g->ifaces[i].name);
		long m = read_long(path, 1500);
		if (m < mtu)
			mtu = m;
	}
	if (mtu < 1280)
		mtu = 1280;
	*mss4 = (__u16)(mtu - 40 > 1460 ? 1460 : mtu - 40);
	*mss6 = (__u16)(mtu - 60 > 1440 ? 1440 : mtu - 60);
}

static int tc_attach_iface(struct xdp_guard *g, struct guard_iface *ifc)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)ifc->ifindex, .attach_point = BPF_TC_INGRESS);
	/* REPLACE: a filter a killed relay left at our place is taken over, not a reason to fail */
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = bpf_program__fd(g->tc->progs.xdp_cookie_tc),
		    .priority = TC_PRIORITY, .handle = 1, .flags = BPF_TC_F_REPLACE);
	int rc = bpf_tc_hook_create(&hook);

	if (rc && rc != -EEXIST) {
		pr_err("xdp guard: %s: cannot add the clsact qdisc for SYN cookies: %s", ifc->name,
		       strerror(-rc));
		return rc;
	}
	ifc->tc_made_hook = rc == 0;
	if ((rc = bpf_tc_attach(&hook, &opts))) {
		pr_err("xdp guard: %s: cannot attach the SYN cookie program at TC ingress: %s",
		       ifc->name, strerror(-rc));
		return rc;
	}
	ifc->tc_attached = true;
	return 0;
}

static void tc_detach_iface(struct guard_iface *ifc)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)ifc->ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .priority = TC_PRIORITY, .handle = 1);

	if (ifc->tc_attached && bpf_tc_detach(&hook, &opts) == 0)
		ifc->tc_attached = false;
	if (ifc->tc_made_hook) {
		/* only the ingress side of the clsact qdisc we added: never another's filters */
		hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
		bpf_tc_hook_destroy(&hook);
		ifc->tc_made_hook = false;
	}
}

/* Load the TC half and attach it everywhere, or leave cookies off (logged). 0, or -errno when
 * the operator asked for cookies that cannot be had and the guard must not start without. */
static int cookies_start(struct xdp_guard *g, const struct relay_cfg *cfg, uint16_t player_port,
			 uint16_t agent_port, __u64 key[2], __u8 wscale)
{
	const char *why = cookie_blocker();
	int rc = 0;

	if (why) {
		pr_warn("xdp guard: SYN cookies unavailable: %s; falling back to dropping SYNs over "
			"the budget", why);
		g->cookie_mode = DVV_SYNCOOKIES_OFF;
		return 0;
	}
	if (!(g->tc = xdp_cookie_tc_bpf__open())) {
		rc = -errno;
		pr_err("xdp guard: cannot open the SYN cookie BPF object: %s", strerror(-rc));
		goto fallback;
	}
	g->tc->rodata->player_port = player_port;
	g->tc->rodata->agent_port = agent_port;
	g->tc->rodata->cookie_key0 = key[0];
	g->tc->rodata->cookie_key1 = key[1];
	g->tc->rodata->cookie_wscale = wscale;
	if ((rc = xdp_cookie_tc_bpf__load(g->tc))) {
		pr_warn("xdp guard: cannot load the SYN cookie program (%s): %s", strerror(-rc),
			bpf_load_hint(rc));
		goto fallback;
	}
	for (int i = 0; i < g->n_ifaces; i++)
		if ((rc = tc_attach_iface(g, &g->ifaces[i])))
			goto fallback;
	if ((rc = pins_create(&g->pins, g->tc->obj, g->tc->progs.xdp_cookie_tc, TC_PROG_PIN_NAME)))
		goto fallback;
	return 0;
fallback:
	for (int i = 0; i < g->n_ifaces; i++)
		tc_detach_iface(&g->ifaces[i]);
	if (g->tc)
		pins_remove(&g->pins, g->tc->obj, TC_PROG_PIN_NAME);
	xdp_cookie_tc_bpf__destroy(g->tc);
	g->tc = NULL;
	pr_warn("xdp guard: SYN cookies unavailable (see above); falling back to dropping SYNs "
		"over the budget");
	g->cookie_mode = DVV_SYNCOOKIES_OFF;
	(void)cfg;
	return 0;
}

int xdp_guard_start(struct xdp_guard **out, const struct relay_cfg *cfg, uint16_t player_port,
		    uint16_t agent_port, const char *pin_dir)
{
	struct cidr_list *allow = calloc(1, sizeof(*allow)), *deny = calloc(1, sizeof(*deny));
	struct xdp_guard *g = calloc(1, sizeof(*g));
	int rc;

	*out = NULL;
	if (!allow || !deny || !g) {
		rc = -ENOMEM;
		goto out;
	}
	bpf_log_install();

	/* Everything the operator can get wrong is checked before anything is loaded. */
	if (cfg->xdp_syn_rate < 1 || cfg->xdp_syn_burst < 1 || cfg->xdp_port_syn_budget < 1) {
		pr_err("xdp guard: --xdp-syn-rate, --xdp-syn-burst and --xdp-port-syn-budget must "
		       "be at least 1");
		rc = -EINVAL;
		goto out;
	}
	if (strcmp(cfg->xdp_mode, "native") && strcmp(cfg->xdp_mode, "generic") &&
	    strcmp(cfg->xdp_mode, "auto")) {
		pr_err("xdp guard: --xdp-mode %s: want native, generic or auto", cfg->xdp_mode);
		rc = -EINVAL;
		goto out;
	}
	if ((g->cookie_mode = xdp_syncookie_mode_parse(cfg->xdp_syncookies)) < 0) {
		pr_err("xdp guard: --xdp-syncookies %s: want off, flood or always",
		       cfg->xdp_syncookies);
		rc = -EINVAL;
		goto out;
	}
	if ((rc = cidr_list_parse("xdp-allow", cfg->xdp_allow, allow)) ||
	    (rc = cidr_list_parse("xdp-deny", cfg->xdp_deny, deny)) ||
	    (rc = ifaces_parse(g, cfg->xdp_ifaces)) ||
	    (rc = pins_prepare(&g->pins, pin_dir, "xdp guard", LOG_ERROR)))
		goto out;

	__u64 key[2] = {0, 0};
	__u8 wscale = (__u8)kernel_wscale();
	if (g->cookie_mode != DVV_SYNCOOKIES_OFF) {
		if (getrandom(key, sizeof(key), 0) != sizeof(key)) {
			rc = -errno;
			pr_err("xdp guard: getrandom for the SYN cookie key: %s", strerror(-rc));
			goto out;
		}
		if ((rc = cookies_start(g, cfg, player_port, agent_port, key, wscale)))
			goto out;
	}

	if (!(g->skel = xdp_guard_bpf__open())) {
		rc = -errno;
		pr_err("xdp guard: cannot open the BPF object: %s", strerror(-rc));
		goto out;
	}
	g->skel->rodata->player_port = player_port;
	g->skel->rodata->agent_port = agent_port;
	g->skel->rodata->src_interval_ns = per_second_ns(cfg->xdp_syn_rate);
	g->skel->rodata->src_tolerance_ns =
		g->skel->rodata->src_interval_ns * (__u64)cfg->xdp_syn_burst;
	g->skel->rodata->port_interval_ns = per_second_ns(cfg->xdp_port_syn_budget);
	g->skel->rodata->port_tolerance_ns =
		g->skel->rodata->port_interval_ns * (__u64)cfg->xdp_port_syn_budget;
	g->skel->rodata->syncookie_mode = (__u32)g->cookie_mode;
	g->skel->rodata->cookie_key0 = key[0];
	g->skel->rodata->cookie_key1 = key[1];
	g->skel->rodata->cookie_wscale = wscale;
	cookie_max_mss(g, (__u16 *)&g->skel->rodata->cookie_max_mss4,
		       (__u16 *)&g->skel->rodata->cookie_max_mss6);
	explicit_bzero(key, sizeof(key));
	if ((rc = bpf_map__set_max_entries(g->skel->maps.xdp_sources,
					   (__u32)cfg->xdp_max_sources))) {
		pr_err("xdp guard: --xdp-max-sources %d: %s", cfg->xdp_max_sources, strerror(-rc));
		goto out;
	}
	if ((rc = xdp_guard_bpf__load(g->skel))) {
		pr_err("xdp guard: cannot load the BPF program (%s): %s", strerror(-rc),
		       bpf_load_hint(rc));
		goto out;
	}
	if ((rc = cidr_list_load("xdp-allow", allow, g->skel->maps.xdp_allow)) ||
	    (rc = cidr_list_load("xdp-deny", deny, g->skel->maps.xdp_deny)) ||
	    (rc = pins_create(&g->pins, g->skel->obj, g->skel->progs.xdp_syn_guard, PROG_PIN_NAME)))
		goto out;
	for (int i = 0; i < g->n_ifaces; i++)
		if ((rc = attach_iface(g, &g->ifaces[i], cfg->xdp_mode)))
			goto out;

	static const char *const mode_names[] = {"off", "over the budget", "always"};
	pr_info("xdp guard: ports %u/%u, %d SYN/s per source (burst %d), %d SYN/s per port, "
		"SYN cookies %s, %d allow / %d deny prefixes, %d source buckets, %d interface(s), "
		"maps in %s",
		player_port, agent_port, cfg->xdp_syn_rate, cfg->xdp_syn_burst,
		cfg->xdp_port_syn_budget, mode_names[g->cookie_mode], allow->n, deny->n,
		cfg->xdp_max_sources, g->n_ifaces, g->pins.path);
	*out = g;
	g = NULL;
out:
	if (g)
		xdp_guard_stop(g);
	free(allow);
	free(deny);
	return rc;
}

void xdp_guard_stop(struct xdp_guard *g)
{
	if (!g)
		return;
	for (int i = 0; i < g->n_ifaces; i++)
		if (g->ifaces[i].link_fd >= 0) {
			close(g->ifaces[i].link_fd); /* detaches */
			pr_info("xdp guard: %s: detached", g->ifaces[i].name);
		}
	for (int i = 0; i < g->n_ifaces; i++)
		tc_detach_iface(&g->ifaces[i]);
	if (g->tc)
		pins_remove(&g->pins, g->tc->obj, TC_PROG_PIN_NAME);
	xdp_cookie_tc_bpf__destroy(g->tc);
	pins_remove(&g->pins, g->skel ? g->skel->obj : NULL, PROG_PIN_NAME);
	xdp_guard_bpf__destroy(g->skel);
	free(g);
}

int xdp_guard_counters(struct xdp_guard *g, struct dvv_xdp_counters *out)
{
	int ncpu = libbpf_num_possible_cpus();
	__u32 key = 0;

	memset(out, 0, sizeof(*out));
	if (!g || !g->skel)
		return -EINVAL;
	if (ncpu < 1)
		return ncpu < 0 ? ncpu : -EINVAL;
	struct dvv_xdp_counters *per_cpu = calloc((size_t)ncpu, sizeof(*per_cpu));
	if (!per_cpu)
		return -ENOMEM;
	int rc = bpf_map__lookup_elem(g->skel->maps.xdp_counters, &key, sizeof(key), per_cpu,
				      (size_t)ncpu * sizeof(*per_cpu), 0);
	if (rc)
		rc = -errno;
	for (int c = 0; !rc && c < ncpu; c++) {
		out->pass_other += per_cpu[c].pass_other;
		out->pass_short += per_cpu[c].pass_short;
		out->drop_deny += per_cpu[c].drop_deny;
		out->pass_allow += per_cpu[c].pass_allow;
		out->drop_rate += per_cpu[c].drop_rate;
		out->drop_budget += per_cpu[c].drop_budget;
		out->pass_syn += per_cpu[c].pass_syn;
		out->pass_reserve += per_cpu[c].pass_reserve;
		out->tx_cookie += per_cpu[c].tx_cookie;
		out->pass_cookie += per_cpu[c].pass_cookie;
		out->pass_kernel_cookie += per_cpu[c].pass_kernel_cookie;
		out->drop_ack += per_cpu[c].drop_ack;
	}
	free(per_cpu);
	return rc;
}

int xdp_guard_cookie_counters(struct xdp_guard *g, struct dvv_cookie_tc_counters *out)
{
	int ncpu = libbpf_num_possible_cpus();
	__u32 key = 0;

	memset(out, 0, sizeof(*out));
	if (!g || !g->tc)
		return -ENOENT;
	if (ncpu < 1)
		return ncpu < 0 ? ncpu : -EINVAL;
	struct dvv_cookie_tc_counters *per_cpu = calloc((size_t)ncpu, sizeof(*per_cpu));
	if (!per_cpu)
		return -ENOMEM;
	int rc = bpf_map__lookup_elem(g->tc->maps.xdp_cookie_tc_counters, &key, sizeof(key),
				      per_cpu, (size_t)ncpu * sizeof(*per_cpu), 0);
	if (rc)
		rc = -errno;
	for (int c = 0; !rc && c < ncpu; c++) {
		out->assigned += per_cpu[c].assigned;
		out->assign_failed += per_cpu[c].assign_failed;
		out->bad_cookie += per_cpu[c].bad_cookie;
	}
	free(per_cpu);
	return rc;
}

int xdp_guard_cookie_mode(const struct xdp_guard *g)
{
	return g ? g->cookie_mode : DVV_SYNCOOKIES_OFF;
}
