/* dvv-api: entry point. Parses options (each also an environment variable DVV_API_*), loads the
 * plans and keys, migrates PostgreSQL, starts the outbox sync thread and the HTTP server, and
 * runs until SIGTERM/SIGINT. `dvv-api plan set EMAIL TIER` changes one user's plan and exits. */
#include <errno.h>
#include <pthread.h>
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "account.h"
#include "apiint.h"
#include "arl.h"
#include "body.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "rstore.h"
#include "tokens.h"

#define CA_PEM_MAX   (64 * 1024)
#define RESERVED_MAX 4096

enum opt_type { O_STR, O_INT, O_BOOL };

struct opt_def {
	const char *name;
	enum opt_type type;
	size_t off, size; /* into struct api_opts */
	long min, max;
	const char *def;
	const char *help;
	bool secret; /* never shown in --help defaults */
};

#define S(f, d, h) { #f, O_STR, offsetof(struct api_opts, f), sizeof(((struct api_opts *)0)->f), 0, 0, d, h, false }
#define K(f, d, h) { #f, O_STR, offsetof(struct api_opts, f), sizeof(((struct api_opts *)0)->f), 0, 0, d, h, true }
#define I(f, lo, hi, d, h) { #f, O_INT, offsetof(struct api_opts, f), sizeof(int), lo, hi, d, h, false }
#define B(f, d, h) { #f, O_BOOL, offsetof(struct api_opts, f), sizeof(bool), 0, 1, d, h, false }

#define SAFE_CMD "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:-"

static const struct opt_def defs[] = {
	S(listen, "127.0.0.1:8080", "HTTP listen address (plain HTTP: put TLS in front)"),
	S(pg, "dbname=dvv", "PostgreSQL conninfo (libpq; prefer PGPASSWORD/.pgpass for the password)"),
	I(pg_pool, 1, 256, "8", "PostgreSQL connections"),
	S(redis, "127.0.0.1:6379", "Redis (standalone or any Cluster node), numeric IP:port"),
	S(redis_prefix, "dvv:", "prefix of every Redis key (the relays' --redis-prefix)"),
	S(plans_path, "deploy/plans.json", "plans file (tiers, limits, prices)"),
	S(web_root, "api/web", "dashboard files served at /"),
	S(public_url, "http://127.0.0.1:8080", "URL users reach the API at (commands, cookies)"),
	S(base_domain, "dvv.one", "the relays' --base-domain"),
	S(relays, "eu=127.0.0.1:7000", "region=host:port of the agent port, comma-separated"),
	S(ca_pem_path, "", "CA certificate agents should trust for the relays (empty: public CA)"),
	S(agent_cmd, "dvv", "how users run the agent, in the command tokens come with"),
	S(agent_local, "127.0.0.1:25565", "the server address in that command (--local)"),
	S(jwt_key_dir, "keys", "directory of <kid>.key signing keys (and <kid>.pub)"),
	S(jwt_kid, "", "signing key id (empty: the newest <kid>.key that has a <kid>.pub)"),
	S(jwt_issuer, "dvv", "iss claim of minted tokens (the relays' --jwt-issuer)"),
	S(reserved_path, "", "file of extra reserved labels, one a line"),
	I(threads, 1, 256, "8", "HTTP worker threads"),
	I(conn_timeout_s, 1, 3600, "30", "idle HTTP connection timeout"),
	I(max_conns, 1, 100000, "1024", "concurrent HTTP connections"),
	B(trust_proxy, "0", "client IP = the last X-Forwarded-For hop (behind a proxy)"),
	I(rate_ip_per_min, 0, 1000000, "30", "signup+login attempts per client IP a minute (0 = off)"),
	I(rate_account_per_min, 0, 1000000, "10", "login attempts per account a minute (0 = off)"),
	I(argon2_t, 1, 100, "2", "argon2id passes"),
	I(argon2_m_kib, 1024, 4194304, "19456", "argon2id memory per hash (KiB)"),
	I(argon2_p, 1, 64, "1", "argon2id lanes"),
	I(argon2_slots, 1, 1024, "2", "password hashes computed at once"),
	S(stripe_api, "https://api.stripe.com", "Stripe API base URL"),
	K(stripe_secret_key, "", "Stripe secret key"),
	K(stripe_webhook_secret, "", "Stripe webhook signing secret"),
	I(stripe_tolerance_s, 1, 86400, "300", "accepted webhook timestamp skew"),
	S(log_level, "info", "error, warn, info or debug"),
	S(log_format, "text", "text, or json: one JSON object per log line"),
};
#define NDEFS (sizeof(defs) / sizeof(defs[0]))

static void opt_flag(const struct opt_def *d, char *buf, size_t cap)
{
	const char *n = d->name;

	/* struct field names with _path drop it on the command line: --plans, --web-root */
	snprintf(buf, cap, "%s", n);
	if (strlen(buf) > 5 && !strcmp(buf + strlen(buf) - 5, "_path") && strcmp(n, "ca_pem_path"))
		buf[strlen(buf) - 5] = '\0';
	if (!strcmp(n, "ca_pem_path"))
		snprintf(buf, cap, "ca-pem");
	if (!strcmp(n, "reserved_path"))
		snprintf(buf, cap, "reserved");
	for (char *p = buf; *p; p++)
		if (*p == '_')
			*p = '-';
}

static int opt_set(struct api_opts *o, const struct opt_def *d, const char *v, const char *src)
{
	char *p = (char *)o + d->off, *end;
	long n;

	switch (d->type) {
	case O_STR:
		if (strlen(v) >= d->size) {
			fprintf(stderr, "dvv-api: %s: longer than %zu bytes\n", src, d->size - 1);
			return -EINVAL;
		}
		memcpy(p, v, strlen(v) + 1);
		return 0;
	case O_INT:
	case O_BOOL:
		errno = 0;
		n = strtol(v, &end, 10);
		if (d->type == O_BOOL && (!strcmp(v, "true") || !strcmp(v, "yes")))
			n = 1, end = (char *)v + strlen(v);
		if (errno || end == v || *end || n < d->min || n > d->max) {
			fprintf(stderr, "dvv-api: %s: want an integer in %ld..%ld\n", src, d->min,
				d->max);
			return -EINVAL;
		}
		if (d->type == O_BOOL)
			*(bool *)p = n != 0;
		else
			*(int *)p = (int)n;
		return 0;
	}
	return -EINVAL;
}

static void usage(FILE *f)
{
	char flag[64];

	fprintf(f, "usage: dvv-api [options]             run the API\n"
		   "       dvv-api [options] plan set EMAIL TIER   change a user's plan\n"
		   "       dvv-api [options] migrate     apply the schema migrations and exit\n"
		   "options (each also an environment variable DVV_API_<NAME>, e.g. "
		   "DVV_API_PG):\n");
	for (size_t i = 0; i < NDEFS; i++) {
		opt_flag(&defs[i], flag, sizeof(flag));
		/* an empty default is no default: the help text says what empty means */
		if (defs[i].secret || !defs[i].def[0])
			fprintf(f, "  --%-24s %s\n", flag, defs[i].help);
		else
			fprintf(f, "  --%-24s %s (default: %s)\n", flag, defs[i].help, defs[i].def);
	}
	fprintf(f, "  --%-24s print this help and exit\n", "help");
}

/* Defaults, then DVV_API_* variables, then flags. Returns optind, 0 after --help, -1 error. */
static int opts_parse(struct api_opts *o, int argc, char **argv)
{
	struct option lo[NDEFS + 2];
	char names[NDEFS][64], env[96], src[72];
	int c;

	for (size_t i = 0; i < NDEFS; i++) {
		if (opt_set(o, &defs[i], defs[i].def, defs[i].name))
			return -1;
		opt_flag(&defs[i], names[i], sizeof(names[i]));
		snprintf(env, sizeof(env), "DVV_API_%.60s", names[i]);
		for (char *p = env; *p; p++)
			*p = *p == '-' ? '_' : (char)((*p >= 'a' && *p <= 'z') ? *p - 32 : *p);
		if (!strcmp(names[i], "plans") && getenv("DVV_PLANS"))
			opt_set(o, &defs[i], getenv("DVV_PLANS"), "DVV_PLANS");
		if (getenv(env) && opt_set(o, &defs[i], getenv(env), env))
			return -1;
		lo[i] = (struct option){ names[i], required_argument, NULL, 256 + (int)i };
	}
	lo[NDEFS] = (struct option){ "help", no_argument, NULL, 'h' };
	lo[NDEFS + 1] = (struct option){ 0 };
	/* "+": stop at the first non-option (the subcommand) */
	while ((c = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			return 0;
		}
		if (c < 256 || c >= 256 + (int)NDEFS) {
			usage(stderr);
			return -1;
		}
		snprintf(src, sizeof(src), "--%.60s", names[c - 256]);
		if (opt_set(o, &defs[c - 256], optarg, src))
			return -1;
	}
	return optind;
}

static char *read_text(const char *path, size_t max)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t n;

	if (!f)
		return NULL;
	buf = malloc(max + 1);
	if (buf) {
		n = fread(buf, 1, max + 1, f);
		if (ferror(f) || n > max) {
			free(buf);
			buf = NULL;
		} else {
			buf[n] = '\0';
		}
	}
	fclose(f);
	return buf;
}

/* --relays "eu=host:port,us=host:port" */
static int parse_relays(struct api *a)
{
	char buf[sizeof(a->o.relays)], *save = NULL, *tok;

	snprintf(buf, sizeof(buf), "%s", a->o.relays);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');

		if (!eq || a->n_regions == API_REGIONS_MAX || eq - tok > 16 ||
		    strlen(eq + 1) >= sizeof(a->regions[0].addr) || !strchr(eq + 1, ':')) {
			fprintf(stderr, "dvv-api: --relays: '%s' is not region=host:port\n", tok);
			return -EINVAL;
		}
		*eq = '\0';
		if (!plans_valid_tier(tok)) { /* same shape as a region name: [a-z0-9_-]{1,16} */
			fprintf(stderr, "dvv-api: --relays: bad region name '%s'\n", tok);
			return -EINVAL;
		}
		snprintf(a->regions[a->n_regions].name, sizeof(a->regions[0].name), "%s", tok);
		snprintf(a->regions[a->n_regions].addr, sizeof(a->regions[0].addr), "%s", eq + 1);
		a->n_regions++;
	}
	return 0;
}

static int load_reserved(struct api *a)
{
	char *text, *save = NULL, *line;
	int n = 0;

	a->reserved = calloc(RESERVED_MAX + 1, sizeof(char *));
	if (!a->reserved)
		return -ENOMEM;
	if (!a->o.reserved_path[0])
		return 0;
	text = read_text(a->o.reserved_path, 1 << 20);
	if (!text) {
		fprintf(stderr, "dvv-api: --reserved %s: unreadable or over 1 MiB\n",
			a->o.reserved_path);
		return -EINVAL;
	}
	for (line = strtok_r(text, "\n", &save); line && n < RESERVED_MAX;
	     line = strtok_r(NULL, "\n", &save)) {
		line[strcspn(line, " \t\r#")] = '\0';
		if (line[0] && body_valid_label(line))
			a->reserved[n++] = strdup(line);
	}
	free(text);
	return 0;
}

static void api_free(struct api *a)
{
	rstore_sync_stop(a);
	rstore_free(a->rs);
	db_pool_free(a->db);
	arl_free(a->rl);
	tokens_keys_free(a->keys);
	account_fini();
	free(a->ca_pem);
	for (int i = 0; a->reserved && a->reserved[i]; i++)
		free(a->reserved[i]);
	free(a->reserved);
	OPENSSL_cleanse(&a->o, sizeof(a->o));
}

int main(int argc, char **argv)
{
	static struct api api;
	struct api *a = &api;
	struct argon2_cfg ac;
	struct http *h = NULL;
	char err[256];
	PGconn *c;
	sigset_t set;
	int ai, ret = 1, lvl, sig;

	ai = opts_parse(&a->o, argc, argv);
	if (ai <= 0)
		return ai == 0 ? 0 : 2;
	lvl = log_level_parse(a->o.log_level);
	log_init("dvv-api", lvl < 0 ? LOG_INFO : (enum log_level)lvl);
	lvl = log_format_parse(a->o.log_format);
	if (lvl < 0) {
		pr_err("--log-format '%s': want text or json", a->o.log_format);
		return 2;
	}
	log_set_format((enum log_format)lvl);
	if (plans_load(a->o.plans_path, &a->plans, err, sizeof(err))) {
		pr_err("plans: %s", err);
		return 2;
	}
	a->cfg = (struct api_cfg){
		.public_url = a->o.public_url, .stripe_api = a->o.stripe_api,
		.stripe_secret_key = a->o.stripe_secret_key,
		.stripe_webhook_secret = a->o.stripe_webhook_secret,
		.stripe_tolerance_s = a->o.stripe_tolerance_s, .plans = &a->plans,
	};
	if (parse_relays(a) || load_reserved(a))
		goto out;
	/* shown to users as a command to paste into a shell: no character a shell would read */
	if (!a->o.agent_cmd[0] || strspn(a->o.agent_cmd, SAFE_CMD) != strlen(a->o.agent_cmd) ||
	    !a->o.agent_local[0] ||
	    strspn(a->o.agent_local, SAFE_CMD "[]") != strlen(a->o.agent_local)) {
		pr_err("--agent-cmd and --agent-local: only letters, digits and _./:- allowed");
		goto out;
	}
	if (a->o.ca_pem_path[0] && !(a->ca_pem = read_text(a->o.ca_pem_path, CA_PEM_MAX))) {
		pr_err("--ca-pem %s: unreadable or over %d bytes", a->o.ca_pem_path, CA_PEM_MAX);
		goto out;
	}
	if (db_pool_new(a->o.pg, a->o.pg_pool, &a->db) || arl_new(65536, &a->rl) ||
	    rstore_new(a->o.redis, a->o.redis_prefix, &a->rs)) {
		pr_err("cannot set up (--redis must be a numeric IP:port)");
		goto out;
	}
	c = db_pool_get(a->db, 5000);
	if (!c || db_migrate(c)) {
		pr_err("PostgreSQL: cannot connect or migrate (--pg)");
		if (c)
			db_pool_put(a->db, c, true);
		goto out;
	}
	db_pool_put(a->db, c, false);
	if (argv[ai] && !strcmp(argv[ai], "migrate") && !argv[ai + 1]) {
		ret = 0;
		goto out;
	}
	if (argv[ai] && !strcmp(argv[ai], "plan") && argv[ai + 1] &&
	    !strcmp(argv[ai + 1], "set") && argv[ai + 2] && argv[ai + 3] && !argv[ai + 4]) {
		int r = account_admin_set_plan(a, argv[ai + 2], argv[ai + 3]);

		if (r == -ENOENT)
			fprintf(stderr, "dvv-api: no user with email %s\n", argv[ai + 2]);
		else if (r == -EINVAL)
			fprintf(stderr, "dvv-api: no plan '%s' in %s\n", argv[ai + 3],
				a->o.plans_path);
		else if (r)
			fprintf(stderr, "dvv-api: plan change failed\n");
		else if (rstore_sync_all(a))
			fprintf(stderr, "dvv-api: plan changed; Redis not reached, a running API "
					"will push it\n");
		else
			printf("%s is on plan %s\n", argv[ai + 2], argv[ai + 3]);
		ret = r ? 1 : 0;
		goto out;
	}
	if (argv[ai]) {
		usage(stderr);
		ret = 2;
		goto out;
	}
	if (tokens_keys_load(a->o.jwt_key_dir, a->o.jwt_kid, &a->keys, err, sizeof(err))) {
		pr_err("--jwt-key-dir: %s", err);
		goto out;
	}
	ac = (struct argon2_cfg){ (uint32_t)a->o.argon2_t, (uint32_t)a->o.argon2_m_kib,
				  (uint32_t)a->o.argon2_p, a->o.argon2_slots };
	if (account_init(&ac)) {
		pr_err("argon2id parameters rejected");
		goto out;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread started below inherits it */
	signal(SIGPIPE, SIG_IGN);
	if (rstore_sync_start(a)) {
		pr_err("cannot start the outbox thread");
		goto out;
	}
	ret = http_start(a, &h);
	if (ret) {
		pr_err("cannot listen on %s: %s", a->o.listen, strerror(-ret));
		ret = 1;
		goto out;
	}
	pr_info("listening on http://%s (public %s, signing key %s, %d plans)", a->o.listen,
		a->o.public_url, tokens_kid(a->keys), a->plans.n);
	sigwait(&set, &sig);
	pr_info("signal %d: stopping", sig);
	http_stop(h);
	ret = 0;
out:
	api_free(a);
	return ret;
}
