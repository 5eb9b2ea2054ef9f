/* dvv, the agent: one TLS control channel to a relay, a pool of pre-opened plain TCP data
 * connections that the relay assigns to players, and one local connection per player, joined
 * to its data connection with splice(2) on one of its worker threads (common/spool.c: one per
 * CPU by default; the main thread keeps the control channel, the pool and the local connects).
 *
 *   main.c      options, signals, output mode, exit status
 *   options.c   command line / environment -> struct agent_config
 *   agent.c     the session: control channel, reconnect backoff, pool, players
 *   report.c    what the user sees on stdout: human status or JSON lines
 *   regions.c   region list parsing and latency measurement (picks the relay to use)
 *   status.c    the local server's status, polled for the relay's edge cache
 */
#ifndef DVV_AGENT_H
#define DVV_AGENT_H

#include "loop.h"
#include "mc.h"
#include "net.h"
#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define AGENT_VERSION "0.1.0"
#define AGENT_DEFAULT_RELAY "relay.eu.dvv.one:7000"
#define AGENT_DEFAULT_LOCAL "127.0.0.1:25565"
#define AGENT_DEFAULT_LOG_LEVEL 2 /* LOG_INFO (log.h) */
/* Without --relay, the agent measures these and uses the fastest (the first is also
 * AGENT_DEFAULT_RELAY: the relay used before any measurement). */
#define AGENT_DEFAULT_REGIONS                                                                 \
	"eu=relay.eu.dvv.one:7000,us=relay.us.dvv.one:7000,asia=relay.asia.dvv.one:7000"

/* Region selection: AGENT_PROBE_SAMPLES TCP connects per region endpoint, all regions in
 * parallel, one round every AGENT_PROBE_SPACING_MS; the median of the successful samples
 * counts, and a region needs AGENT_PROBE_MIN_OK of them to be reachable. */
#define AGENT_MAX_REGIONS 8
#define AGENT_REGION_NAME_MAX 15
#define AGENT_PROBE_SAMPLES 5
#define AGENT_PROBE_MIN_OK 3
#define AGENT_PROBE_SPACING_MS 50u
#define AGENT_PROBE_TIMEOUT_MS 1500u
#define AGENT_REMEASURE_AFTER 3 /* attempts in a row without a session: measure again */

/* Reconnect backoff: capped exponential with full jitter. */
#define AGENT_BACKOFF_BASE_MS 500u
#define AGENT_BACKOFF_CAP_MS 30000u
#define AGENT_BACKOFF_RESET_MS 60000u /* a session that stayed up this long resets the count */
#define AGENT_AUTH_RETRY_MIN_MS 5000u /* --retry-auth never retries faster than this */

#define AGENT_PING_DEFAULT_MS 15000u
#define AGENT_DEAD_PINGS 3		/* silent for this many ping intervals = relay dead */
#define AGENT_HANDSHAKE_TIMEOUT_MS 15000u /* TCP connect + TLS + HELLO/WELCOME */
#define AGENT_DATA_CONNECT_TIMEOUT_MS 10000u
#define AGENT_HDR_TIMEOUT_MS 10000u	/* player header started but not finished */
#define AGENT_LOCAL_CONNECT_TIMEOUT_MS 5000u
#define AGENT_MAX_CONNECTING 64		/* data connections in TCP connect at once */
#define AGENT_MAX_POOL 1024		/* idle + connecting + queued tokens, whatever the relay asks */

#define AGENT_MAX_WORKERS 64	/* --workers: data-plane threads */

/* Make-before-break and re-homing. */
#define AGENT_MAX_ADDRS 8	/* addresses of one relay name tried in turn (DNS round robin) */

/* Edge status: the local server's status response, polled for the relay's cache. */
#define AGENT_STATUS_POLL_MS 30000u	/* after WELCOME, then this often */
#define AGENT_STATUS_MIN_GAP_MS 10000u	/* at most one STATUS per this on a session */
#define AGENT_STATUS_TIMEOUT_MS 5000u	/* connect + answer */
/* The response read is bounded above a control frame so that a status whose favicon alone
 * makes it too big can still be read and sent without it. */
#define AGENT_STATUS_READ_MAX (2 * CTL_PAYLOAD_MAX)
#define AGENT_STATUS_PROTOCOL (-1)	/* the Server List Ping convention for "any version" */
/* Relays from before STATUS refuse frames over 8192 bytes as a protocol error and close the
 * session. A session that ends right after a bigger STATUS, with nothing heard since, makes
 * the agent keep its STATUS under this from then on (favicon dropped if need be). */
#define AGENT_STATUS_LEGACY_MAX 8192u
#define AGENT_STATUS_LEGACY_WINDOW_MS 3000u
#define AGENT_STATUS_PORT 25565		/* what players dial: servers may route on host:port */

/* Process exit statuses (main returns them). */
#define AGENT_EXIT_OK 0
#define AGENT_EXIT_FAIL 1
#define AGENT_EXIT_USAGE 2
#define AGENT_EXIT_AUTH 3    /* the relay rejected the token */
#define AGENT_EXIT_REFUSED 4 /* refused for a reason retrying cannot fix: version, name taken */

struct agent_region {
	char name[AGENT_REGION_NAME_MAX + 1];
	char endpoint[256]; /* host:port of the region's relay group */
};

struct agent_config {
	char relay[256];		/* host:port: --relay, the pinned region, or (when measuring)
					 * the first region until the measurement picks one */
	struct agent_region regions[AGENT_MAX_REGIONS]; /* empty with an explicit --relay */
	unsigned nregions;
	int region;			/* index of the --region pin or -1 */
	bool measure;			/* pick the region by latency (no --relay, no --region) */
	bool probe_only;		/* --probe-regions: measure, print, exit */
	char local[256];		/* host:port */
	char token[CTL_TOKEN_MAX + 1];	/* never printed or logged */
	const char *ca_file;
	const char *pin;
	char *ca_pem;			/* the relays' CA stored by dvv login (malloc'd), used when
					 * the stored relays are and neither --ca nor --pin is given */
	bool from_creds;		/* token (and maybe relays) from the credentials file */
	bool proxy_protocol;
	bool json;
	bool retry_auth;
	int workers;			/* --workers: threads that splice players' bytes (spool.h);
					 * -1 one per CPU, 0 or 1 none (the main loop does it) */
	int log_level;			/* enum log_level */
	int log_format;			/* enum log_format: --log-format text|json */
	struct net_queue_opts data_queue;  /* data connections to the relay (--notsent-lowat-kb) */
	struct net_queue_opts local_queue; /* connections to the local server (+ --local-rcvbuf-kb) */
};

/* ---- options.c ---- */

/* Outcome of agent_opts_parse besides 0 (run the agent). */
#define AGENT_OPTS_HELP 1    /* --help: print agent_opts_usage to stdout, exit 0 */
#define AGENT_OPTS_VERSION 2 /* --version */

/* Fill cfg from argv and the environment (DVV_RELAY, DVV_REGIONS, DVV_REGION, DVV_TOKEN), and
 * without a token from those, from the credentials file (creds.h): its token, and its relays
 * and CA unless relays are named. Returns 0, AGENT_OPTS_HELP,
 * AGENT_OPTS_VERSION, or -EINVAL with a one-line reason in err (a usage error). A token given
 * with --token is wiped from argv so it does not show in ps / /proc/PID/cmdline. */
int agent_opts_parse(int argc, char **argv, struct agent_config *cfg, char *err, size_t errlen);
void agent_opts_usage(FILE *f);
/* The getopt table agent_opts_parse reads (NULL-terminated), for tests of the help text. */
struct option;
const struct option *agent_opts_table(void);
/* Free what a parse allocated (ca_pem) and wipe the token. */
void agent_opts_free(struct agent_config *cfg);
/* Read a token file: trailing whitespace stripped, must be one printable line. */
int agent_token_read_file(const char *path, char *out, size_t cap, char *err, size_t errlen);

/* ---- regions.c ---- */

/* Parse "eu=HOST:PORT,us=HOST:PORT": names [A-Za-z0-9_-]{1,15}, unique, at most
 * AGENT_MAX_REGIONS. Returns 0 or -EINVAL with the reason in err (without the option name). */
int agent_regions_parse(const char *spec, struct agent_region *out, unsigned *n, char *err,
			size_t errlen);
/* Index of the region called name, or -1. */
int agent_region_find(const struct agent_region *r, unsigned n, const char *name);

struct agent_region_result {
	uint32_t median_us; /* when reachable */
	uint32_t min_us;    /* when ok > 0 */
	unsigned ok;	    /* successful samples */
	bool reachable;	    /* ok >= AGENT_PROBE_MIN_OK */
	char error[320];    /* why the last failed sample failed, "" if none failed */
};

/* Statistics of one region's samples (microseconds, < 0 = failed); r->error is left alone. */
void agent_region_stats(const int32_t *us, unsigned n, struct agent_region_result *r);
/* The reachable region with the lowest median, the first of equals; -1 if none. */
int agent_region_pick(const struct agent_region_result *r, unsigned n);

/* The measurement itself, on an event loop: resolves every endpoint (blocking getaddrinfo),
 * then runs its samples and calls done once, from the loop. */
struct agent_probe;
typedef void (*agent_probe_done_cb)(struct agent_probe *p, void *arg);
int agent_probe_start(struct loop *l, const struct agent_region *regions, unsigned n,
		      agent_probe_done_cb done, void *arg, struct agent_probe **out);
const struct agent_region_result *agent_probe_results(const struct agent_probe *p);
/* Stop (closes what is in flight) and free; allowed inside done. */
void agent_probe_free(struct agent_probe *p);
/* Blocking: measure on a private loop (about 1.7 s at most after resolving). 0 or -errno. */
int agent_regions_measure(const struct agent_region *regions, unsigned n,
			  struct agent_region_result *out);

/* ---- report.c: the user-facing event stream ---- */

enum agent_event_type {
	AGENT_EV_CONNECTING,
	AGENT_EV_TUNNEL_UP,
	AGENT_EV_TUNNEL_DOWN,
	AGENT_EV_RECONNECTING,
	AGENT_EV_PLAYER_OPEN,
	AGENT_EV_PLAYER_CLOSE,
	AGENT_EV_ERROR,
	AGENT_EV_MEASURING, /* a region measurement starts (no JSON event) */
	AGENT_EV_REGIONS,   /* a region measurement ended */
	AGENT_EV_MIGRATING, /* make-before-break: a new session is being opened, the old serves */
	AGENT_EV_PLAN,	    /* a PLAN frame: the tunnel's plan, usage and state */
};

struct agent_event {
	enum agent_event_type type;
	const char *relay;	     /* connecting, tunnel_up; migrating: the relay left */
	const char *to;		     /* migrating: where the new session goes */
	const char *from;	     /* tunnel_up replacing a live session: its relay */
	bool migrating;		     /* reconnecting while the old session still serves */
	const char *hostname, *tunnel, *region; /* tunnel_up */
	const char *reason;	     /* tunnel_down, migrating; reconnecting after a failure */
	const char *code, *message;  /* error */
	const char *player;	     /* player_open / player_close */
	uint64_t trace;		     /* player_open / player_close: the relay's trace id, 0 = none */
	uint64_t in_ms;		     /* reconnecting */
	unsigned attempt;	     /* reconnecting */
	unsigned active;	     /* players now connected */
	uint64_t joins;		     /* players since start */
	uint64_t bytes_in, bytes_out; /* player_close: player -> server, server -> player */
	uint64_t duration_ms;	     /* player_close */
	/* regions: the table, the pick (-1: none reachable), the region used before a
	 * re-measurement (-1 at start), and whether this is --probe-regions */
	const struct agent_region *regions;
	const struct agent_region_result *results;
	unsigned nregions;
	int picked, previous;
	bool probe_only;
	/* plan: the frame, and whether anything but the usage changed since the last one (the
	 * human output prints a line then; usage alone only updates the status line) */
	const struct ctl_msg *plan;
	bool plan_changed;
};

void agent_report_init(bool json, const char *local);
/* Bytes for humans, binary units with one decimal dropped when it is 0: "512 B", "1.2 GiB",
 * "10 GiB". */
void agent_fmt_bytes(uint64_t b, char *out, size_t cap);
/* One line about a PLAN frame (m->type CTL_PLAN): "plan free: 1 tunnel, 20 players, idle close
 * after 30 min, 1.2 GiB of 10 GiB used, resets 2027-01-01", and the capped state. */
void agent_plan_describe(const struct ctl_msg *m, char *out, size_t cap);
void agent_report(const struct agent_event *ev);
void agent_report_finish(void); /* end the in-place status line before exiting */

/* ---- agent.c ---- */

/* Full-jitter backoff: a uniform pick in [0, min(cap, base * 2^attempt)] from rnd. */
uint32_t agent_backoff_ms(unsigned attempt, uint32_t base, uint32_t cap, uint64_t rnd);

/* Incremental reader of the relay's player header on a data connection. It never reads a byte
 * past the header: what follows belongs to the player and goes to the server by splice. */
struct agent_hdr_reader {
	uint8_t buf[DATA_HDR_FIXED + DATA_HDR_BODY_MAX];
	size_t have;
	size_t need; /* DATA_HDR_FIXED until the fixed part is parsed, then fixed + body */
};
void agent_hdr_reset(struct agent_hdr_reader *r);
/* Read from a non-blocking fd. Returns 1 with *out filled when the header is complete, 0 when
 * more bytes are needed (EAGAIN), -ECONNRESET on EOF, -EPROTO on a bad header, or -errno. */
int agent_hdr_read(struct agent_hdr_reader *r, int fd, struct data_hdr *out);

/* ---- status.c: the local server's status for the relay's edge cache ---- */

/* The Status Response at buf: 1 with *json / *jlen pointing into buf, 0 when more bytes are
 * needed, -EMSGSIZE when the packet is longer than max, -EPROTO when malformed. */
int agent_status_parse(const uint8_t *buf, size_t len, size_t max, const char **json,
		       size_t *jlen);
/* The STATUS payload from the server's JSON: an object, re-serialized compactly; without
 * "favicon" if it is longer than max. 0 with *out (malloc'd, NUL-terminated), -EPROTO when not
 * a JSON object, -EMSGSIZE when still too long. */
int agent_status_payload(const char *json, size_t len, size_t max, char **out, size_t *outlen);

struct agent_status_poll;
/* err 0: json (not NUL-terminated, valid only during the call) is the server's answer. The
 * poll is finished when done runs; it may not be restarted from inside done. */
typedef void (*agent_status_done_cb)(struct agent_status_poll *p, int err, const char *json,
				     size_t len);
struct agent_status_poll {
	struct loop *loop;
	struct loop_io io;
	struct loop_timer timer;
	bool proxy_protocol; /* --proxy-protocol: a PROXY v2 LOCAL header goes first */
	uint8_t req[16 + MC_HANDSHAKE_MAX + 8]; /* [PROXY LOCAL] handshake, status request */
	size_t reqlen, reqoff;
	uint8_t *buf; /* the response so far, allocated while a poll reads */
	size_t len, cap;
	bool connected;
	uint32_t timeout_ms; /* AGENT_STATUS_TIMEOUT_MS (tests shorten it) */
	size_t read_max;     /* AGENT_STATUS_READ_MAX */
	agent_status_done_cb done;
	void *data;
};
void agent_status_poll_init(struct agent_status_poll *p, struct loop *l, agent_status_done_cb done,
			    void *data);
/* Connect to local and ask; done follows from the loop (not from here). -errno when it
 * cannot even start (then done is not called), -EBUSY while a poll runs. */
int agent_status_poll_start(struct agent_status_poll *p, const struct net_addr *local,
			    const char *host);
bool agent_status_poll_busy(const struct agent_status_poll *p);
void agent_status_poll_stop(struct agent_status_poll *p); /* no callback */

/* GOODBYE / ERROR codes that end the run (revoked, blocked: AGENT_EXIT_AUTH; idle:
 * AGENT_EXIT_REFUSED): the exit status with the user's message in text, or 0 for any other
 * code. from_creds: the token came from dvv login (the hint names dvv tunnels use). */
int agent_final_refusal(const char *code, const char *reason, bool from_creds, char *text,
			size_t cap);

struct agent;
int agent_new(const struct agent_config *cfg, struct agent **out, char *err, size_t errlen);
/* Run until stop_fd (a signalfd, or -1) becomes readable (returns AGENT_EXIT_OK) or the relay
 * refuses us for good (AGENT_EXIT_AUTH, AGENT_EXIT_REFUSED). */
int agent_run(struct agent *a, int stop_fd);
struct renew;
/* The token renewal thread (renew.h) whose token each HELLO presents; the caller stops it after
 * agent_run. */
void agent_set_renew(struct agent *a, struct renew *r);
void agent_free(struct agent *a);

#endif
