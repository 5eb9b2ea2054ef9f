/* Command line and environment -> struct agent_config. No side effects besides reading the
 * token file or the credentials file (dvv login) and wiping a --token value from argv. */
#include "agent.h"
#include "creds.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One line per option, "(default: X)" where it has one, X from the same constants the parser
 * starts from (tests/unit/test_agent_help.c compares the two). */
void agent_opts_usage(FILE *f)
{
	static const char *const levels[] = {"error", "warn", "info", "debug"};
	fprintf(f,
		"usage: dvv [options]\n"
		"       dvv login | logout | tunnels ...   (each has --help)\n"
		"Share a local Minecraft server through a DVV relay: players join at the hostname\n"
		"the relay gives this tunnel, nobody forwards a port.\n"
		"\n"
		"  --relay HOST:PORT      use this relay, env DVV_RELAY (default: the fastest of --regions)\n"
		"  --regions LIST         regions to choose from, NAME=HOST:PORT,..., env DVV_REGIONS (default: %s)\n"
		"  --region NAME          use this region of the list without measuring, env DVV_REGION\n"
		"  --probe-regions        measure the regions, print the table and exit (0: one is reachable); no token needed\n"
		"  --token-file FILE      read the tunnel token from FILE (default: the token stored by 'dvv login', with its relays)\n"
		"  --token TOKEN          the tunnel token, env DVV_TOKEN (visible to other local users while dvv starts: prefer --token-file or DVV_TOKEN)\n"
		"  --local HOST:PORT      the Minecraft server to forward to (default: %s)\n"
		"  --proxy-protocol       send a PROXY protocol v2 header with the player's address to the local server (enable it there too) (default: off)\n"
		"  --ca FILE              verify the relay certificate against this CA bundle (default: the system CA store, or the CA stored by 'dvv login')\n"
		"  --pin HEX              accept only a relay whose public key SHA-256 (SPKI) is HEX\n"
		"  --retry-auth           keep retrying (slowly) when the relay rejects the token (default: off)\n"
		"  --notsent-lowat-kb N   KiB a connection queues unsent before dvv stops feeding it, TCP_NOTSENT_LOWAT; 0 = kernel default (default: %d)\n"
		"  --local-rcvbuf-kb N    receive buffer of each connection to the local server; 0 = kernel autotuning (default: %d)\n"
		"  --local-mss N          segment size in bytes dvv asks of the local server; 0 = the route's (default: %d)\n"
		"  --workers N            threads moving players' bytes, 0 or 1 = all on the main thread, at most %d (default: one per CPU)\n"
		"  --json                 one JSON event per line on stdout, for scripts and panels (default: off)\n"
		"  --log-level LEVEL      error, warn, info or debug; logs go to stderr (default: %s)\n"
		"  --log-format F         text or json: one JSON object per log line (time, level, program, msg, trace_id) (default: text)\n"
		"  --version              print the version and exit\n"
		"  --help                 print this help and exit\n"
		"\n"
		"exit status: 0 stopped by SIGINT/SIGTERM, 1 failure, 2 usage error,\n"
		"             3 token rejected, revoked, or the tunnel deleted or not in the plan,\n"
		"             4 tunnel refused or closed for good (the relay needs a newer dvv, the\n"
		"             token's custom name is taken, or the plan closed the idle tunnel)\n",
		AGENT_DEFAULT_REGIONS, AGENT_DEFAULT_LOCAL, NET_NOTSENT_LOWAT_KB_DEFAULT,
		NET_LOCAL_RCVBUF_KB_DEFAULT, NET_LOCAL_MSS_DEFAULT, AGENT_MAX_WORKERS,
		levels[AGENT_DEFAULT_LOG_LEVEL]);
}

/* A JWT is base64url segments and dots; accept any printable ASCII without spaces. */
static int token_check(const char *t, size_t n, char *err, size_t errlen)
{
	if (n == 0) {
		snprintf(err, errlen, "the token is empty");
		return -EINVAL;
	}
	if (n > CTL_TOKEN_MAX) {
		snprintf(err, errlen, "the token is longer than %d bytes", CTL_TOKEN_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		if (t[i] < 0x21 || t[i] > 0x7e) {
			snprintf(err, errlen, "the token contains a space or a non-printable byte");
			return -EINVAL;
		}
	return 0;
}

int agent_token_read_file(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
	int rc = 0;
	char buf[CTL_TOKEN_MAX + 64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "--token-file %s: %s", path, strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0044))
		pr_warn("token file %s is readable by other users (chmod 600 it)", path);
	size_t len = 0;
	for (;;) {
		ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -errno;
			snprintf(err, errlen, "--token-file %s: %s", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len == sizeof(buf) - 1) {
			rc = -EINVAL;
			snprintf(err, errlen, "--token-file %s: larger than a token can be", path);
			goto out;
		}
	}
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
		       buf[len - 1] == '\t'))
		len--;
	size_t lead = strspn(buf, " \t\r\n");
	if (lead > len)
		lead = len;
	char e2[128];
	if ((rc = token_check(buf + lead, len - lead, e2, sizeof(e2)))) {
		snprintf(err, errlen, "--token-file %s: %s", path, e2);
		goto out;
	}
	if (len - lead >= cap) {
		rc = -EINVAL;
		snprintf(err, errlen, "--token-file %s: token too long", path);
		goto out;
	}
	memcpy(out, buf + lead, len - lead);
	out[len - lead] = 0;
out:
	explicit_bzero(buf, sizeof(buf));
	if (fd >= 0)
		close(fd);
	return rc;
}

static int addr_opt(const char *name, const char *v, char *out, size_t cap, char *err,
		    size_t errlen)
{
	char host[256];
	uint16_t port;
	if (strlen(v) >= cap || net_split_hostport(v, host, sizeof(host), &port) || port == 0) {
		snprintf(err, errlen, "%s '%s': want HOST:PORT or [IPv6]:PORT", name, v);
		return -EINVAL;
	}
	snprintf(out, cap, "%s", v);
	return 0;
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/* Which relay: flags beat the environment, and an explicit relay beats a region.
 *   --relay                        that relay, no measurement
 *   --regions/--region/--probe-regions given: the region list (DVV_RELAY is ignored)
 *   DVV_RELAY                      that relay
 *   otherwise                      the region list (--regions, DVV_REGIONS or the default),
 *                                  pinned by --region / DVV_REGION or measured */
static int relay_opts(struct agent_config *cfg, const char *relay, const char *regions,
		      const char *region, char *err, size_t errlen)
{
	cfg->region = -1;
	if (relay && (regions || region || cfg->probe_only)) {
		snprintf(err, errlen, "--relay names one relay: do not combine it with %s",
			 regions ? "--regions" : region ? "--region" : "--probe-regions");
		return -EINVAL;
	}
	if (!relay && !regions && !region && !cfg->probe_only)
		relay = env_nonempty("DVV_RELAY");
	if (relay)
		return addr_opt("--relay", relay, cfg->relay, sizeof(cfg->relay), err, errlen);

	const char *what = "--regions";
	if (!regions) {
		what = "DVV_REGIONS";
		regions = env_nonempty("DVV_REGIONS");
	}
	if (!regions) {
		what = "the default regions";
		regions = AGENT_DEFAULT_REGIONS;
	}
	char e2[400];
	if (agent_regions_parse(regions, cfg->regions, &cfg->nregions, e2, sizeof(e2))) {
		snprintf(err, errlen, "%s %s", what, e2);
		return -EINVAL;
	}
	const char *rwhat = "--region";
	if (!region) {
		rwhat = "DVV_REGION";
		region = env_nonempty("DVV_REGION");
	}
	if (region) {
		int i = agent_region_find(cfg->regions, cfg->nregions, region);
		if (i < 0) {
			char names[AGENT_MAX_REGIONS * (AGENT_REGION_NAME_MAX + 2) + 1] = "";
			size_t off = 0;
			for (unsigned k = 0; k < cfg->nregions; k++)
				off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s",
							k ? ", " : "", cfg->regions[k].name);
			snprintf(err, errlen, "%s '%s' is not a known region (%s)", rwhat, region,
				 names);
			return -EINVAL;
		}
		cfg->region = i;
	}
	/* --probe-regions measures every region, pinned or not */
	cfg->measure = cfg->region < 0 || cfg->probe_only;
	int first = cfg->region < 0 ? 0 : cfg->region;
	memcpy(cfg->relay, cfg->regions[first].endpoint, sizeof(cfg->relay));
	return 0;
}

/* No token given: the one `dvv login` stored, with the stored relays (and their CA) unless
 * the command line or the environment names relays. */
static int creds_fallback(struct agent_config *cfg, bool list_chosen, const char *region,
			  char *err, size_t errlen)
{
	char path[4200], e2[700];
	struct agent_creds c;
	int rc = creds_path(path, sizeof(path), NULL, 0, e2, sizeof(e2));
	if (!rc)
		rc = creds_load(path, &c, e2, sizeof(e2));
	if (rc == -ENOENT) {
		snprintf(err, errlen, "no token: run 'dvv login --token TOKEN' once, or use "
				      "--token-file FILE, --token TOKEN or DVV_TOKEN");
		return -EINVAL;
	}
	if (rc) {
		snprintf(err, errlen, "%s", e2);
		return -EINVAL;
	}
	if (!c.token[0]) {
		snprintf(err, errlen,
			 "no token stored in %s: run 'dvv tunnels use ID' or 'dvv login --token "
			 "TOKEN'",
			 path);
		rc = -EINVAL;
		goto out;
	}
	snprintf(cfg->token, sizeof(cfg->token), "%s", c.token);
	cfg->from_creds = true;
	if (list_chosen || !c.nrelays)
		goto out;
	char spec[AGENT_MAX_REGIONS * 300] = "";
	size_t off = 0;
	for (unsigned i = 0; i < c.nrelays; i++)
		off += (size_t)snprintf(spec + off, sizeof(spec) - off, "%s%s=%s", i ? "," : "",
					c.relays[i].name, c.relays[i].endpoint);
	if ((rc = relay_opts(cfg, NULL, spec, region, err, errlen)))
		goto out;
	if (c.ca_pem && !cfg->ca_file && !cfg->pin) {
		cfg->ca_pem = strdup(c.ca_pem);
		if (!cfg->ca_pem) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
		}
	}
out:
	creds_clear(&c);
	return rc;
}

void agent_opts_free(struct agent_config *cfg)
{
	free(cfg->ca_pem);
	cfg->ca_pem = NULL;
	explicit_bzero(cfg->token, sizeof(cfg->token));
}

enum {
	OPT_RELAY = 256,
	OPT_TOKEN,
	OPT_TOKEN_FILE,
	OPT_CA,
	OPT_PIN,
	OPT_LOCAL,
	OPT_PROXY,
	OPT_JSON,
	OPT_LOG_LEVEL,
	OPT_LOG_FORMAT,
	OPT_RETRY_AUTH,
	OPT_REGIONS,
	OPT_REGION,
	OPT_PROBE_REGIONS,
	OPT_NOTSENT_LOWAT,
	OPT_LOCAL_RCVBUF,
	OPT_LOCAL_MSS,
	OPT_WORKERS,
	OPT_VERSION,
	OPT_HELP,
};

static const struct option long_opts[] = {
	{"relay", required_argument, NULL, OPT_RELAY},
	{"token", required_argument, NULL, OPT_TOKEN},
	{"token-file", required_argument, NULL, OPT_TOKEN_FILE},
	{"ca", required_argument, NULL, OPT_CA},
	{"pin", required_argument, NULL, OPT_PIN},
	{"local", required_argument, NULL, OPT_LOCAL},
	{"proxy-protocol", no_argument, NULL, OPT_PROXY},
	{"json", no_argument, NULL, OPT_JSON},
	{"log-level", required_argument, NULL, OPT_LOG_LEVEL},
	{"log-format", required_argument, NULL, OPT_LOG_FORMAT},
	{"retry-auth", no_argument, NULL, OPT_RETRY_AUTH},
	{"regions", required_argument, NULL, OPT_REGIONS},
	{"region", required_argument, NULL, OPT_REGION},
	{"probe-regions", no_argument, NULL, OPT_PROBE_REGIONS},
	{"notsent-lowat-kb", required_argument, NULL, OPT_NOTSENT_LOWAT},
	{"local-rcvbuf-kb", required_argument, NULL, OPT_LOCAL_RCVBUF},
	{"local-mss", required_argument, NULL, OPT_LOCAL_MSS},
	{"workers", required_argument, NULL, OPT_WORKERS},
	{"version", no_argument, NULL, OPT_VERSION},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

const struct option *agent_opts_table(void) { return long_opts; }

int agent_opts_parse(int argc, char **argv, struct agent_config *cfg, char *err, size_t errlen)
{
	const char *relay = NULL, *local = AGENT_DEFAULT_LOCAL, *token_file = NULL;
	const char *regions = NULL, *region = NULL;
	bool token_arg = false, token_long = false;
	bool want_help = false, want_version = false;
	int rc = 0;

	memset(cfg, 0, sizeof(*cfg)); /* the caller frees a previous parse (agent_opts_free) */
	cfg->log_level = AGENT_DEFAULT_LOG_LEVEL;
	cfg->log_format = LOG_FMT_TEXT;
	cfg->data_queue.notsent_lowat = NET_NOTSENT_LOWAT_KB_DEFAULT << 10;
	cfg->local_queue.notsent_lowat = NET_NOTSENT_LOWAT_KB_DEFAULT << 10;
	cfg->local_queue.rcvbuf = NET_LOCAL_RCVBUF_KB_DEFAULT << 10;
	cfg->local_queue.mss = NET_LOCAL_MSS_DEFAULT;
	cfg->workers = -1;
	optind = 0; /* GNU: full re-initialisation, so tests can parse several times */
	opterr = 0;
	for (;;) {
		int o = getopt_long(argc, argv, "", long_opts, NULL);
		if (o == -1)
			break;
		switch (o) {
		case OPT_RELAY:
			relay = optarg;
			break;
		case OPT_TOKEN:
			if (token_arg || token_file)
				goto twice;
			token_arg = true;
			/* the value leaves argv (ps, /proc/PID/cmdline) right away */
			if (strlen(optarg) < sizeof(cfg->token))
				snprintf(cfg->token, sizeof(cfg->token), "%s", optarg);
			else
				token_long = true;
			memset(optarg, 'x', strlen(optarg));
			break;
		case OPT_TOKEN_FILE:
			if (token_arg || token_file)
				goto twice;
			token_file = optarg;
			break;
		case OPT_CA:
			cfg->ca_file = optarg;
			break;
		case OPT_PIN:
			cfg->pin = optarg;
			break;
		case OPT_LOCAL:
			local = optarg;
			break;
		case OPT_PROXY:
			cfg->proxy_protocol = true;
			break;
		case OPT_JSON:
			cfg->json = true;
			break;
		case OPT_RETRY_AUTH:
			cfg->retry_auth = true;
			break;
		case OPT_REGIONS:
			regions = optarg;
			break;
		case OPT_REGION:
			region = optarg;
			break;
		case OPT_PROBE_REGIONS:
			cfg->probe_only = true;
			break;
		case OPT_NOTSENT_LOWAT:
		case OPT_LOCAL_RCVBUF: {
			char *end;
			long kb = strtol(optarg, &end, 10);
			if (end == optarg || *end || kb < 0 || kb > 65536) {
				snprintf(err, errlen, "--%s '%s': want KiB from 0 to 65536",
					 o == OPT_NOTSENT_LOWAT ? "notsent-lowat-kb" : "local-rcvbuf-kb",
					 optarg);
				rc = -EINVAL;
				goto out;
			}
			if (o == OPT_NOTSENT_LOWAT)
				cfg->data_queue.notsent_lowat = cfg->local_queue.notsent_lowat =
					(int)kb << 10;
			else
				cfg->local_queue.rcvbuf = (int)kb << 10;
			break;
		}
		case OPT_LOCAL_MSS: {
			char *end;
			long mss = strtol(optarg, &end, 10);
			/* 536: the smallest MSS every TCP accepts; 65495: loopback's own */
			if (end == optarg || *end || (mss != 0 && (mss < 536 || mss > 65495))) {
				snprintf(err, errlen, "--local-mss '%s': want 0 or bytes from 536 to 65495",
					 optarg);
				rc = -EINVAL;
				goto out;
			}
			cfg->local_queue.mss = (int)mss;
			break;
		}
		case OPT_WORKERS: {
			char *end;
			long n = strtol(optarg, &end, 10);
			if (!*optarg || *end || n < 0 || n > AGENT_MAX_WORKERS) {
				snprintf(err, errlen, "--workers '%s': want 0 to %d", optarg,
					 AGENT_MAX_WORKERS);
				rc = -EINVAL;
				goto out;
			}
			cfg->workers = (int)n;
			break;
		}
		case OPT_LOG_LEVEL:
			cfg->log_level = log_level_parse(optarg);
			if (cfg->log_level < 0) {
				snprintf(err, errlen,
					 "--log-level '%s': want error, warn, info or debug", optarg);
				rc = -EINVAL;
				goto out;
			}
			break;
		case OPT_LOG_FORMAT:
			cfg->log_format = log_format_parse(optarg);
			if (cfg->log_format < 0) {
				snprintf(err, errlen, "--log-format '%s': want text or json", optarg);
				rc = -EINVAL;
				goto out;
			}
			break;
		case OPT_VERSION:
			want_version = true;
			break;
		case OPT_HELP:
			want_help = true;
			break;
		case ':':
			snprintf(err, errlen, "%s needs a value", argv[optind - 1]);
			rc = -EINVAL;
			goto out;
		default:
			if (optopt >= OPT_RELAY)
				snprintf(err, errlen, "%s needs a value", argv[optind - 1]);
			else
				snprintf(err, errlen, "unknown option '%s'", argv[optind - 1]);
			rc = -EINVAL;
			goto out;
		}
	}
	if (want_help) {
		rc = AGENT_OPTS_HELP;
		goto out;
	}
	if (want_version) {
		rc = AGENT_OPTS_VERSION;
		goto out;
	}
	if (optind < argc) {
		snprintf(err, errlen, "unexpected argument '%s' (options start with --)",
			 argv[optind]);
		rc = -EINVAL;
		goto out;
	}
	if ((rc = relay_opts(cfg, relay, regions, region, err, errlen)) ||
	    (rc = addr_opt("--local", local, cfg->local, sizeof(cfg->local), err, errlen)))
		goto out;
	if (cfg->probe_only)
		return 0; /* measuring needs no token */

	if (token_long) {
		snprintf(err, errlen, "the token is longer than %d bytes", CTL_TOKEN_MAX);
		rc = -EINVAL;
		goto out;
	}
	if (token_file) {
		if ((rc = agent_token_read_file(token_file, cfg->token, sizeof(cfg->token), err,
						errlen)))
			goto out;
	} else if (!token_arg) {
		const char *env = getenv("DVV_TOKEN");
		if (!env || !*env) {
			bool list_chosen = relay || regions || env_nonempty("DVV_RELAY") ||
					   env_nonempty("DVV_REGIONS");
			if ((rc = creds_fallback(cfg, list_chosen, region, err, errlen)))
				goto out;
			goto checks;
		}
		if (strlen(env) >= sizeof(cfg->token)) {
			snprintf(err, errlen, "DVV_TOKEN is longer than %d bytes", CTL_TOKEN_MAX);
			rc = -EINVAL;
			goto out;
		}
		snprintf(cfg->token, sizeof(cfg->token), "%s", env);
	}
checks:
	if ((rc = token_check(cfg->token, strlen(cfg->token), err, errlen)))
		goto out;

	if (cfg->pin) {
		size_t n = strlen(cfg->pin);
		if (n != 64 || strspn(cfg->pin, "0123456789abcdefABCDEF") != 64) {
			snprintf(err, errlen,
				 "--pin wants 64 hex characters (SHA-256 of the relay's SPKI)");
			rc = -EINVAL;
			goto out;
		}
	}
	if (cfg->ca_file && access(cfg->ca_file, R_OK) != 0) {
		snprintf(err, errlen, "--ca %s: %s", cfg->ca_file, strerror(errno));
		rc = -EINVAL;
		goto out;
	}
	return 0;
twice:
	snprintf(err, errlen, "give the token once: --token or --token-file");
	rc = -EINVAL;
out:
	if (rc < 0)
		agent_opts_free(cfg);
	return rc;
}
