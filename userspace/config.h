/* dvv-relay configuration: command-line flags, each also settable as an environment variable
 * (DVV_ + upper-case flag name with '-' -> '_', e.g. DVV_PLAYER_LISTEN). Flags win over env. */
#ifndef DVV_CONFIG_H
#define DVV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* A relay of default capacity publishes its raw load (4 per tunnel + 1 per player) as its load
 * score; a relay declared twice as big publishes half, so placement fills relays in proportion
 * to their size and --placement-margin keeps its meaning in load units of a default relay. */
#define RELAY_CAPACITY_DEFAULT 20000

/* --queue-kb. A clamp is released below half of it, and half must stay above what a backed-up
 * reader always holds (--notsent-lowat-kb unsent + the 64 KiB splice pipe): at 128 the bpf
 * plane stayed clamped and a 10 Mbit/s player got 0.87x the routed rate. */
#define RELAY_QUEUE_KB_DEFAULT 256

struct relay_cfg {
	char player_listen[128];
	char agent_listen[128];
	char admin_listen[128];
	char public_agent_addr[128]; /* what agents are told to dial (MOVE); default agent_listen */
	char redis[256];	   /* host:port[,host:port...]: standalone or cluster seeds */
	char internal_listen[128]; /* relay-to-relay forwarded players (empty: no forwarding) */
	char internal_addr[128];   /* how other relays reach internal_listen (advertised) */
	char cluster_secret_file[256]; /* shared HMAC key of the relays of a deployment */
	/* deployment on a platform (Railway): one shared public port, a private address found at
	 * start-up (oneport.h, advertise.h) */
	char one_port[128];	   /* players and agents on this one address; "" = two ports */
	char advertise_addr[300];  /* how internal_addr is found when not set: advertise.h */
	int route_cache_ms;	   /* how long a relay trusts a looked-up route */
	int placement_margin;	   /* load-score slack before a registration is moved elsewhere */
	int capacity;		   /* load units this relay is sized for; see RELAY_CAPACITY_DEFAULT */
	char shed_threshold[16];   /* fraction of capacity above which priority 0 is placed away */
	double shed_fraction;	   /* parsed shed_threshold, 0 < x <= 1 */
	char redis_prefix[32];
	char region[17];
	char base_domain[128];
	char base_bare[256];	   /* base_domain normalised as hostnames are (mc.h); set
				      only with a default tunnel */
	char default_tunnel[256];  /* --default-tunnel as given: a label or a full name */
	char default_host[256];	   /* it as a full, normalised name; empty: no default */
	char instance_id[65];
	char tls_cert[256];
	char tls_key[256];
	char jwt_pubkey[256];
	char jwt_issuer[64];
	char jwt_audience[64];
	char dataplane[16];	   /* bpf | userspace | auto */
	char bpf_pin_root[128];	   /* maps/links pinned under <root>/<instance-id>/ */
	int max_lag_mb;		   /* MiB queued towards a slow reader, then the connection is cut */
	int notsent_lowat_kb;	   /* TCP_NOTSENT_LOWAT on player and agent data sockets, 0 = off */
	int queue_kb;		   /* relay queue in front of a slow reader before the sender is
				      slowed (common/splice.h, dp_bpf_throttle.c) */
	char xdp_ifaces[128];	   /* comma-separated interfaces to attach the XDP SYN guard to */
	char xdp_mode[16];	   /* native | generic | auto */
	int xdp_syn_rate;	   /* SYNs per second per source address */
	int xdp_syn_burst;	   /* bucket depth per source */
	int xdp_port_syn_budget;   /* SYNs per second per protected port, all sources together */
	char xdp_allow[512];	   /* comma-separated CIDRs never limited */
	char xdp_deny[512];	   /* comma-separated CIDRs always dropped */
	char xdp_syncookies[8];	   /* off | flood | always */
	int xdp_max_sources;	   /* per-source SYN buckets kept (LRU) */
	int join_rate_v4;	   /* handshakes per second per IPv4 /24 */
	int join_rate_v6;	   /* handshakes per second per IPv6 /64 */
	int join_burst;		   /* burst for both */
	int max_pending_per_source; /* unfinished handshakes per source address */
	int workers;		   /* data-plane threads; 0 = one per CPU */
	int handshake_timeout_ms;  /* player must send a whole handshake within this */
	int join_wait_ms;	   /* a player waits this long for an agent data connection */
	int ctl_auth_timeout_ms;   /* agent must finish TLS + HELLO within this */
	int pool_min, pool_max;	   /* idle data connections kept per tunnel */
	int token_ttl_ms;	   /* attach tokens expire */
	int lease_ttl_s;	   /* route lease in Redis */
	int heartbeat_ms;	   /* instance heartbeat + lease renewal period */
	int name_grace_s;	   /* a tunnel keeps its name this long after its agent left */
	int drain_timeout_s;	   /* SIGTERM: players keep playing at most this long */
	int max_handshakes;	   /* concurrent unfinished player handshakes */
	int max_tunnels;	   /* tunnels this instance accepts */
	int agent_unauth_per_source; /* unauthenticated agent-port connections per IPv4 / IPv6 /64 */
	int agent_unauth_max;	   /* unauthenticated agent-port connections in total */
	int agent_tls_rate;	   /* control-channel TLS handshakes started per second (burst: 1 s) */
	int agent_reg_rate;	   /* HELLOs accepted for registration per second (burst: 1 s) */
	int agent_tls_threads;	   /* control-channel handshake threads; 0 = on the control loop */
	int pool_max_age_s;	   /* an idle pooled data connection older than this is replaced */
	int max_waiting_per_tunnel; /* players waiting on one tunnel for a data connection */
	int forward_connect_ms;	   /* relay-to-relay forward: connect + answer byte deadline */
	int usage_flush_ms;	   /* per-tunnel byte counts are flushed to Redis this often */
	int log_level;
	int log_format;	/* enum log_format: --log-format text|json (DVV_LOG_FORMAT) */
};

/* The defaults, before the environment and flags. */
void relay_cfg_defaults(struct relay_cfg *c);

/* --help's text: one line per option, with "(default: X)" where it has one. */
void relay_cfg_usage(FILE *f);

/* The option table, for tests of the help text: number of options, and of option i its flag
 * (without "--"; flaglen >= 64), the offset of its field in struct relay_cfg, whether the field
 * is an int (else a string) and whether its default is computed at start-up. 0 or -EINVAL. */
size_t relay_cfg_nopts(void);
int relay_cfg_opt(size_t i, char *flag, size_t flaglen, size_t *off, bool *is_int, bool *derived);

/* --default-tunnel: the full name a player who dialed host (normalised, as in mc.h) is routed
 * to, or NULL (host is a tunnel name <name>.<region>.<base-domain>, or no default is set).
 * Names under the base domain with at least two labels before it never get the default, known
 * or not: a mistyped tunnel name keeps the offline answer instead of reaching someone else. */
const char *relay_cfg_default_for(const struct relay_cfg *c, const char *host);

/* Fills defaults, applies env then argv. Returns 0, 1 for --help/--version (printed), or -1 on
 * a usage error (message printed to stderr). */
int relay_cfg_parse(struct relay_cfg *c, int argc, char **argv);

/* The host part of the default instance id (<host>-<pid>): gethostname() with every character
 * other than [A-Za-z0-9-] replaced by '-', truncated to len - 1 bytes. */
void relay_cfg_default_host(char *buf, size_t len);

#endif
