/* dvv-relay's configuration (config.h): defaults, then environment variables, then flags, each
 * checked against its bounds; --help lists every option with its default, read from the same
 * defaults the parser starts from so that the two cannot disagree. */
#include "config.h"
#include "log.h"
#include "mc.h"
#include "net.h"

#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <getopt.h>
#include <stddef.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DVV_VERSION "0.1.0"

enum opt_kind { OPT_STR, OPT_INT };

struct opt_def {
	const char *name;
	enum opt_kind kind;
	size_t off, size;
	int min, max;
	const char *help;
	const char *derived; /* a default computed at start-up, said in words; NULL: the value */
};

#define S(field, help) {#field, OPT_STR, offsetof(struct relay_cfg, field), sizeof(((struct relay_cfg *)0)->field), 0, 0, help, NULL}
#define I(field, lo, hi, help) {#field, OPT_INT, offsetof(struct relay_cfg, field), sizeof(int), lo, hi, help, NULL}
/* an option whose default depends on the machine or on other options */
#define SD(field, help, derived) {#field, OPT_STR, offsetof(struct relay_cfg, field), sizeof(((struct relay_cfg *)0)->field), 0, 0, help, derived}
#define ID(field, lo, hi, help, derived) {#field, OPT_INT, offsetof(struct relay_cfg, field), sizeof(int), lo, hi, help, derived}

static const struct opt_def defs[] = {
	S(player_listen, "players connect here (Minecraft)"),
	S(agent_listen, "agents connect here (TLS control + data connections)"),
	S(admin_listen, "/healthz /readyz /metrics"),
	SD(public_agent_addr, "agent address advertised to agents", "--agent-listen"),
	S(redis, "Redis host:port, or several cluster seeds host:port,host:port"),
	S(internal_listen, "relay-to-relay port for forwarded players and agent data connections (needs a cluster secret)"),
	SD(internal_addr, "address other relays dial to reach internal-listen", "--internal-listen, or this host's private address if it listens on all"),
	S(cluster_secret_file, "file holding the secret shared by all relays (or env DVV_CLUSTER_SECRET)"),
	S(one_port, "players and agents share this one listening address, told apart by their first bytes (replaces --player-listen and --agent-listen; for a platform that gives one public TCP port)"),
	S(advertise_addr, "how the address published for --internal-listen is found when --internal-addr is unset: auto | auto4 | auto6 | iface:NAME | iface4:NAME | iface6:NAME | dns:NAME | railway (dns:$RAILWAY_PRIVATE_DOMAIN)"),
	I(route_cache_ms, 0, 60000, "how long a looked-up route is trusted"),
	I(placement_margin, 0, 1000000, "load-score slack before a new tunnel is moved to a less loaded relay"),
	I(capacity, 1, 100000000, "load this relay is sized for (4 per tunnel + 1 per player); scales its load score"),
	S(shed_threshold, "fraction of --capacity from which priority-0 (free) tunnels are placed on other relays"),
	S(redis_prefix, "prefix of every Redis key"),
	S(region, "region of this relay (eu, us, asia)"),
	S(base_domain, "players use <name>.<region>.<base-domain>"),
	S(default_tunnel, "tunnel (label or full name) for players who dial no tunnel name: an IP, localhost, <region>.<base-domain>, a name outside the base domain (empty: offline answer)"),
	SD(instance_id, "unique id of this relay, names its bpf pin directory", "<hostname>-<pid>"),
	S(tls_cert, "PEM certificate chain for the agent control channel"),
	S(tls_key, "PEM private key for it"),
	S(jwt_pubkey, "ES256 public key file, or a directory of <kid>.pub keys (reloaded on SIGHUP and when it changes)"),
	S(jwt_issuer, "required iss claim"),
	S(jwt_audience, "required aud claim"),
	S(dataplane, "bpf | userspace | auto (auto: bpf if it loads and passes a self-test)"),
	S(bpf_pin_root, "bpffs directory for pinned maps (per instance subdirectory)"),
	S(xdp_ifaces, "comma-separated interfaces for the XDP SYN guard (empty: off)"),
	S(xdp_mode, "native | generic | auto"),
	I(xdp_syn_rate, 1, 10000000, "XDP: SYNs per second per source address"),
	I(xdp_syn_burst, 1, 10000000, "XDP: SYN burst per source address"),
	I(xdp_port_syn_budget, 1, 100000000, "XDP: SYNs per second per protected port, all sources"),
	S(xdp_allow, "XDP: comma-separated CIDRs never limited"),
	S(xdp_deny, "XDP: comma-separated CIDRs always dropped"),
	S(xdp_syncookies, "XDP: answer SYNs with SYN cookies: off | flood (over the budget) | always"),
	I(xdp_max_sources, 1024, 16777216, "XDP: per-source SYN buckets kept (least recent evicted)"),
	I(join_rate_v4, 1, 1000000, "player handshakes per second per IPv4 /24"),
	I(join_rate_v6, 1, 1000000, "player handshakes per second per IPv6 /64"),
	I(join_burst, 1, 1000000, "burst of player handshakes per prefix"),
	I(max_pending_per_source, 1, 1000000, "unfinished handshakes per source address"),
	I(workers, 0, 256, "data-plane threads (0 = one per CPU)"),
	I(handshake_timeout_ms, 100, 120000, "player handshake deadline"),
	I(join_wait_ms, 100, 60000, "how long a player waits for an agent connection"),
	I(ctl_auth_timeout_ms, 100, 120000, "agent TLS + HELLO deadline"),
	I(pool_min, 0, 64, "idle data connections per tunnel, minimum"),
	I(pool_max, 1, 256, "idle data connections per tunnel, maximum"),
	I(token_ttl_ms, 1000, 600000, "attach token lifetime"),
	I(lease_ttl_s, 3, 3600, "route lease TTL in Redis"),
	I(heartbeat_ms, 200, 60000, "heartbeat and lease renewal period"),
	I(name_grace_s, 10, 30 * 86400, "a tunnel keeps its name this long while offline"),
	I(drain_timeout_s, 0, 86400, "on SIGTERM, players keep playing at most this long"),
	I(max_handshakes, 16, 1000000, "concurrent unfinished player handshakes"),
	I(max_lag_mb, 1, 65536, "MiB queued towards a slow reader before its connection is cut"),
	I(notsent_lowat_kb, 0, 65536, "KiB a player or agent data socket queues unsent (TCP_NOTSENT_LOWAT; 0 = kernel default)"),
	I(queue_kb, 0, 65536, "userspace plane: KiB a relayed connection queues in the relay in front of a slow reader before its sender is slowed (more if its round trip needs it; 0 = off)"),
	I(max_tunnels, 1, 1000000, "tunnels this instance accepts"),
	I(agent_unauth_per_source, 1, 1000000, "unauthenticated agent-port connections per IPv4 address / IPv6 /64"),
	I(agent_unauth_max, 1, 10000000, "unauthenticated agent-port connections in total"),
	I(agent_tls_rate, 1, 1000000, "control-channel TLS handshakes started per second (over it: closed)"),
	I(agent_reg_rate, 1, 1000000, "tunnel registrations per second (over it: ERROR busy + retry_after)"),
	ID(agent_tls_threads, 0, 64, "threads for control-channel TLS handshakes and token checks (0 = on the control loop)", "one per CPU the relay may run on, at most 64"),
	I(pool_max_age_s, 5, 86400, "idle pooled data connections older than this are replaced"),
	I(max_waiting_per_tunnel, 1, 100000, "players waiting on one tunnel for a data connection"),
	I(forward_connect_ms, 100, 60000, "connect to the owning relay and get its answer within this"),
	I(usage_flush_ms, 100, 600000, "flush per-tunnel byte counts (bandwidth usage) to Redis this often"),
};
#define NDEFS (sizeof(defs) / sizeof(defs[0]))

static void flag_name(const char *field, char *out, char sep)
{
	size_t i = 0;
	for (; field[i]; i++)
		out[i] = field[i] == '_' ? sep : field[i];
	out[i] = 0;
}

static int set_opt(struct relay_cfg *c, const struct opt_def *d, const char *v, const char *src)
{
	char *dst = (char *)c + d->off;
	if (d->off == offsetof(struct relay_cfg, instance_id) && !*v) {
		fprintf(stderr, "dvv-relay: %s: empty (leave it unset for the default <hostname>-<pid>)\n",
			src);
		return -1;
	}
	if (d->kind == OPT_STR) {
		if (strlen(v) >= d->size) {
			fprintf(stderr, "dvv-relay: %s: value longer than %zu bytes\n", src, d->size - 1);
			return -1;
		}
		memcpy(dst, v, strlen(v) + 1);
		return 0;
	}
	char *end;
	long n = strtol(v, &end, 10);
	if (*v == 0 || *end || n < d->min || n > d->max) {
		fprintf(stderr, "dvv-relay: %s: want an integer in %d..%d, got '%s'\n", src, d->min,
			d->max, v);
		return -1;
	}
	*(int *)(void *)dst = (int)n;
	return 0;
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* "--flag-name  help (default: X)": X is what relay_cfg_defaults fills in, or the words of a
 * default computed at start-up; options without a default (empty) say nothing. */
void relay_cfg_usage(FILE *f)
{
	struct relay_cfg d;
	relay_cfg_defaults(&d);
	fprintf(f, "usage: dvv-relay [options]\n\nEvery option can also be set in the environment as "
		   "DVV_<NAME> (e.g. DVV_PLAYER_LISTEN).\n\n");
	for (size_t i = 0; i < NDEFS; i++) {
		char flag[64], val[256] = "";
		flag_name(defs[i].name, flag, '-');
		const char *p = (const char *)&d + defs[i].off;
		if (defs[i].derived)
			snprintf(val, sizeof(val), "%s", defs[i].derived);
		else if (defs[i].kind == OPT_INT)
			snprintf(val, sizeof(val), "%d", *(const int *)(const void *)p);
		else
			snprintf(val, sizeof(val), "%s", p);
		fprintf(f, "  --%-26s %s", flag, defs[i].help);
		if (val[0])
			fprintf(f, " (default: %s)", val);
		fputc('\n', f);
	}
	fprintf(f, "  --%-26s %s (default: %s)\n  --%-26s print the version and exit\n"
		   "  --%-26s print this help and exit\n",
		"log-level", "error | warn | info | debug", level_names[d.log_level], "version",
		"help");
	fprintf(f, "  --%-26s %s (default: text)\n", "log-format",
		"text | json: one JSON object per log line (time, level, program, msg, trace_id)");
}

size_t relay_cfg_nopts(void) { return NDEFS; }

int relay_cfg_opt(size_t i, char *flag, size_t flaglen, size_t *off, bool *is_int, bool *derived)
{
	if (i >= NDEFS || flaglen < 64)
		return -EINVAL;
	flag_name(defs[i].name, flag, '-');
	*off = defs[i].off;
	*is_int = defs[i].kind == OPT_INT;
	*derived = defs[i].derived != NULL;
	return 0;
}

void relay_cfg_default_host(char *buf, size_t len)
{
	if (!len)
		return;
	snprintf(buf, len, "relay");
	gethostname(buf, len - 1); /* a longer name is truncated (glibc copies, then fails) */
	buf[len - 1] = 0;
	if (!buf[0])
		snprintf(buf, len, "relay");
	for (char *p = buf; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-')
			*p = '-';
}

void relay_cfg_defaults(struct relay_cfg *c)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->player_listen, "[::]:25565");
	strcpy(c->agent_listen, "[::]:7000");
	strcpy(c->admin_listen, "127.0.0.1:9100");
	strcpy(c->redis, "127.0.0.1:6379");
	strcpy(c->redis_prefix, "dvv:");
	strcpy(c->region, "eu");
	strcpy(c->base_domain, "dvv.one");
	strcpy(c->jwt_issuer, "dvv");
	strcpy(c->jwt_audience, "dvv-relay");
	strcpy(c->dataplane, "auto");
	strcpy(c->bpf_pin_root, "/sys/fs/bpf/dvv");
	strcpy(c->xdp_mode, "auto");
	c->max_lag_mb = 64;
	c->notsent_lowat_kb = NET_NOTSENT_LOWAT_KB_DEFAULT;
	c->queue_kb = RELAY_QUEUE_KB_DEFAULT;
	strcpy(c->xdp_syncookies, "flood");
	c->xdp_max_sources = 65536;
	c->xdp_syn_rate = 50;
	c->xdp_syn_burst = 250;
	c->xdp_port_syn_budget = 20000;
	c->join_rate_v4 = 50;
	c->join_rate_v6 = 50;
	c->join_burst = 250;
	c->max_pending_per_source = 256;
	c->handshake_timeout_ms = 5000;
	c->join_wait_ms = 5000;
	c->ctl_auth_timeout_ms = 5000;
	c->pool_min = 2;
	c->pool_max = 16;
	c->token_ttl_ms = 30000;
	c->lease_ttl_s = 30;
	c->heartbeat_ms = 2000;
	c->name_grace_s = 7 * 86400;
	c->max_waiting_per_tunnel = 256;
	c->forward_connect_ms = 2000;
	c->usage_flush_ms = 5000;
	c->drain_timeout_s = 30;
	c->route_cache_ms = 2000;
	c->placement_margin = 8;
	c->capacity = RELAY_CAPACITY_DEFAULT;
	strcpy(c->shed_threshold, "0.9");
	c->max_handshakes = 20000;
	c->max_tunnels = 100000;
	c->agent_unauth_per_source = 64;
	c->agent_unauth_max = 4096;
	/* measured (bench/reg-storm.sh): about 1,100 registrations a second on a shared 2-core
	 * machine with the load generator on the same cores, 0.6-0.8 ms of relay CPU and 3 Redis
	 * commands each for a reconnect; at 200 a second a reconnect storm of 10,000 agents could
	 * not finish in 10 s whatever the relay's cores. Above what the relay manages, handshakes
	 * wait (bounded by --agent-unauth-max and the auth timeout) instead of being refused. */
	c->agent_tls_rate = 2000;
	c->agent_reg_rate = 2000;
	/* one handshake thread per CPU this process may run on (taskset, cgroup cpusets): a
	 * reconnect storm's crypto uses every core, and no more threads than cores */
	cpu_set_t cpus;
	long ncpu = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus)
								  : sysconf(_SC_NPROCESSORS_ONLN);
	c->agent_tls_threads = ncpu < 1 ? 1 : ncpu > 64 ? 64 : (int)ncpu;
	c->pool_max_age_s = 120;
	c->log_level = LOG_INFO;
}

/* 1 when host (normalised, NUL-terminated) is a name players get by dialing a tunnel: at least
 * two labels in front of the base domain (<name>.<region>.<base-domain>). The base domain itself,
 * <region>.<base-domain> (a region's bare address, on any relay of a cluster) and names outside
 * the base domain are not. */
static bool tunnel_shaped(const struct relay_cfg *c, const char *host)
{
	size_t hl = strlen(host), bl = strlen(c->base_bare);
	if (hl <= bl + 1 || host[hl - bl - 1] != '.' || strcmp(host + hl - bl, c->base_bare))
		return false;
	const char *dot = memchr(host, '.', hl - bl - 1);
	return dot != NULL && dot != host;
}

/* --default-tunnel: a label gets this relay's ".<region>.<base-domain>"; a full name must be a
 * tunnel name under the base domain. Normalised as players' hostnames are (mc.h), so that it
 * compares equal to the tunnel's registered name in this relay's table and in Redis. */
static int default_resolve(struct relay_cfg *c)
{
	char full[512], err[128];
	size_t n;
	/* the base domain as players' hostnames are compared (lower case, no trailing dot) */
	if (mc_normalise_host((const uint8_t *)c->base_domain, strlen(c->base_domain),
			      c->base_bare, &n, err, sizeof(err))) {
		fprintf(stderr, "dvv-relay: --base-domain %s: %s\n", c->base_domain, err);
		return -1;
	}
	if (strchr(c->default_tunnel, '.'))
		snprintf(full, sizeof(full), "%s", c->default_tunnel);
	else
		snprintf(full, sizeof(full), "%s.%s.%s", c->default_tunnel, c->region,
			 c->base_domain);
	if (mc_normalise_host((const uint8_t *)full, strlen(full), c->default_host, &n, err,
			      sizeof(err))) {
		fprintf(stderr, "dvv-relay: --default-tunnel %s: %s\n", c->default_tunnel, err);
		return -1;
	}
	if (!tunnel_shaped(c, c->default_host)) {
		fprintf(stderr, "dvv-relay: --default-tunnel %s: want a tunnel label or a name "
				"<name>.<region>.%s\n",
			c->default_tunnel, c->base_bare);
		return -1;
	}
	return 0;
}

const char *relay_cfg_default_for(const struct relay_cfg *c, const char *host)
{
	if (!c->default_host[0] || tunnel_shaped(c, host))
		return NULL;
	return c->default_host;
}

int relay_cfg_parse(struct relay_cfg *c, int argc, char **argv)
{
	relay_cfg_defaults(c);
	c->log_format = LOG_FMT_TEXT;

	/* environment first */
	for (size_t i = 0; i < NDEFS; i++) {
		char env[80] = "DVV_";
		flag_name(defs[i].name, env + 4, '_');
		for (char *p = env + 4; *p; p++)
			*p = (char)toupper((unsigned char)*p);
		const char *v = getenv(env);
		if (v && set_opt(c, &defs[i], v, env))
			return -1;
	}
	const char *lv = getenv("DVV_LOG_LEVEL");
	if (lv && (c->log_level = log_level_parse(lv)) < 0) {
		fprintf(stderr, "dvv-relay: DVV_LOG_LEVEL: unknown level '%s'\n", lv);
		return -1;
	}
	const char *lf = getenv("DVV_LOG_FORMAT");
	if (lf && (c->log_format = log_format_parse(lf)) < 0) {
		fprintf(stderr, "dvv-relay: DVV_LOG_FORMAT: unknown format '%s'\n", lf);
		return -1;
	}

	struct option longopts[NDEFS + 5];
	char names[NDEFS][64];
	for (size_t i = 0; i < NDEFS; i++) {
		flag_name(defs[i].name, names[i], '-');
		longopts[i] = (struct option){names[i], required_argument, NULL, (int)(256 + i)};
	}
	longopts[NDEFS] = (struct option){"log-level", required_argument, NULL, 'l'};
	longopts[NDEFS + 1] = (struct option){"help", no_argument, NULL, 'h'};
	longopts[NDEFS + 2] = (struct option){"version", no_argument, NULL, 'V'};
	longopts[NDEFS + 3] = (struct option){"log-format", required_argument, NULL, 'f'};
	longopts[NDEFS + 4] = (struct option){0};
	int o;
	optind = 1;
	while ((o = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
		if (o >= 256) {
			char src[80];
			snprintf(src, sizeof(src), "--%s", names[o - 256]);
			if (set_opt(c, &defs[o - 256], optarg, src))
				return -1;
		} else if (o == 'l') {
			if ((c->log_level = log_level_parse(optarg)) < 0) {
				fprintf(stderr, "dvv-relay: --log-level: unknown level '%s'\n", optarg);
				return -1;
			}
		} else if (o == 'f') {
			if ((c->log_format = log_format_parse(optarg)) < 0) {
				fprintf(stderr, "dvv-relay: --log-format: want text or json, not '%s'\n",
					optarg);
				return -1;
			}
		} else if (o == 'h') {
			relay_cfg_usage(stdout);
			return 1;
		} else if (o == 'V') {
			printf("dvv-relay %s\n", DVV_VERSION);
			return 1;
		} else {
			fprintf(stderr, "Try 'dvv-relay --help'.\n");
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "dvv-relay: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (!c->tls_cert[0] || !c->tls_key[0] || !c->jwt_pubkey[0]) {
		fprintf(stderr, "dvv-relay: --tls-cert, --tls-key and --jwt-pubkey are required "
				"(scripts/mkkeys.sh makes a development set)\n");
		return -1;
	}
	if (c->pool_min > c->pool_max) {
		fprintf(stderr, "dvv-relay: --pool-min %d > --pool-max %d\n", c->pool_min,
			c->pool_max);
		return -1;
	}
	{
		char *end;
		c->shed_fraction = strtod(c->shed_threshold, &end);
		if (!c->shed_threshold[0] || *end || !(c->shed_fraction > 0 && c->shed_fraction <= 1)) {
			fprintf(stderr, "dvv-relay: --shed-threshold %s: want a fraction in (0, 1]\n",
				c->shed_threshold);
			return -1;
		}
	}
	if (c->one_port[0]) {
		/* one socket for both: published as both addresses (relay records, MOVE default) */
		strcpy(c->player_listen, c->one_port);
		strcpy(c->agent_listen, c->one_port);
	}
	if (!c->public_agent_addr[0])
		strcpy(c->public_agent_addr, c->agent_listen);
	if (!c->instance_id[0]) {
		char host[48];
		relay_cfg_default_host(host, sizeof(host));
		snprintf(c->instance_id, sizeof(c->instance_id), "%s-%d", host, (int)getpid());
	}
	/* it names the relay's directory under --bpf-pin-root: a plain file name, nothing else */
	for (const char *p = c->instance_id; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') {
			fprintf(stderr, "dvv-relay: --instance-id may hold only [A-Za-z0-9._-]\n");
			return -1;
		}
	if (!isalnum((unsigned char)c->instance_id[0])) {
		/* ".", "..", hidden names, names that read as options */
		fprintf(stderr, "dvv-relay: --instance-id '%s' is not a usable name: it names a "
				"directory under --bpf-pin-root and must start with a letter or digit\n",
			c->instance_id);
		return -1;
	}
	if (strcmp(c->dataplane, "userspace") && strcmp(c->dataplane, "bpf") &&
	    strcmp(c->dataplane, "auto")) {
		fprintf(stderr, "dvv-relay: --dataplane %s: want bpf, userspace or auto\n",
			c->dataplane);
		return -1;
	}
	if (strcmp(c->xdp_mode, "native") && strcmp(c->xdp_mode, "generic") &&
	    strcmp(c->xdp_mode, "auto")) {
		fprintf(stderr, "dvv-relay: --xdp-mode %s: want native, generic or auto\n",
			c->xdp_mode);
		return -1;
	}
	if (strcmp(c->xdp_syncookies, "off") && strcmp(c->xdp_syncookies, "flood") &&
	    strcmp(c->xdp_syncookies, "always")) {
		fprintf(stderr, "dvv-relay: --xdp-syncookies %s: want off, flood or always\n",
			c->xdp_syncookies);
		return -1;
	}
	if (c->default_tunnel[0] && default_resolve(c))
		return -1;
	return 0;
}
