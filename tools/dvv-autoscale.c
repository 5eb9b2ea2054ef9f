/* dvv-autoscale: sets the number of relay replicas of one region from the load the relays
 * publish in Redis (docs/autoscaling.md). Railway has no autoscaler for replicas; this is it.
 *
 *   dvv-autoscale --redis HOST:PORT --region eu --service-id ID --environment-id ID
 *                 [--api-url URL] [--token-env NAME] [--query-file FILE]
 *                 [--min N] [--max N] [--out-pct P] [--in-pct P] [--out-for-s S] [--in-for-s S]
 *                 [--cooldown-s S] [--interval-ms MS] [--drain-cmd CMD] [--drain-wait-s S]
 *
 * Every --interval-ms it reads each live relay of the region (the alive:<id> key and the
 * info:<id> hash its heartbeat keeps: docs/redis.md), feeds the sum to the policy
 * (common/autoscale.h) and, on a decision, sets the replica count with one GraphQL request to
 * Railway's public API (libcurl; the token comes from the environment and is never logged).
 * Scale-in removes one relay at a time and drains it first: with --drain-cmd the least loaded
 * relay is told to drain (the command gets DVV_DRAIN_INSTANCE and DVV_DRAIN_AGENT_ADDR; e.g.
 * ssh to its host and `systemctl stop dvv-relay`, which sends SIGTERM) and the count is lowered
 * once its records are gone (or --drain-wait-s passed); without it (Railway, where the platform
 * picks the replica) the count is lowered and the platform's SIGTERM starts the relay's drain,
 * kept alive for drainingSeconds. Either way nothing else changes while a relay is draining.
 *
 * Exit: 0 on SIGTERM/SIGINT, 2 on a usage error. libcurl (Debian's libcurl4-openssl-dev) is
 * the HTTP client because the API is HTTPS with redirects, proxies and CA handling we would
 * otherwise write; hiredis because the relay and dvv-api already use it. */
#include "autoscale.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RELAYS 4096	     /* relays read per sample; more is a misconfiguration */
#define SCAN_ROUNDS 10000    /* SCAN calls per sample, bound on a huge keyspace */
#define API_TIMEOUT_S 15
#define RESP_MAX (64 * 1024) /* API answer kept for the error check */

/* The mutation as the Railway CLI sends it (railwayapp, src/gql/mutations/strings/
 * ServiceInstanceUpdate.graphql); the input field numReplicas is the serviceInstance field of
 * that name. Not verified against the live API from here: --query-file replaces it. */
static const char DEFAULT_QUERY[] =
	"mutation ServiceInstanceUpdate($serviceId: String!, $environmentId: String, "
	"$input: ServiceInstanceUpdateInput!) { serviceInstanceUpdate(serviceId: $serviceId, "
	"environmentId: $environmentId, input: $input) }";

struct opts {
	char redis_host[256];
	int redis_port;
	const char *prefix, *region, *api_url, *token_env, *service_id, *environment_id;
	const char *query_file, *drain_cmd;
	int interval_ms, drain_wait_s;
	struct as_cfg as;
};

struct relay_rec {
	char id[80];
	char agent_addr[160];
	bool draining;
	double load, capacity;
};

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	while (!stop && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- Redis ---- */

static redisContext *redis_connect(const char *host, int port)
{
	struct timeval tv = {.tv_sec = 2};
	redisContext *c = redisConnectWithTimeout(host, port, tv);
	if (!c || c->err) {
		pr_warn("redis %s:%d: %s", host, port, c ? c->errstr : "out of memory");
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	return c;
}

/* A Redis Cluster answers MOVED for the region's slot when asked elsewhere: follow it once
 * (every key of a region shares the {region} hash tag, so one node holds them all). */
static redisReply *cmd(redisContext **c, struct opts *o, const char *fmt, ...)
{
	for (int hop = 0; hop < 2; hop++) {
		va_list ap;
		va_start(ap, fmt);
		redisReply *r = redisvCommand(*c, fmt, ap);
		va_end(ap);
		if (!r)
			return NULL;
		if (r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "MOVED ", 6) && hop == 0) {
			char host[256];
			int port;
			const char *hp = strchr(r->str + 6, ' ');
			const char *colon = hp ? strrchr(hp, ':') : NULL;
			if (!colon || colon - hp - 1 <= 0 || (size_t)(colon - hp - 1) >= sizeof(host)) {
				freeReplyObject(r);
				return NULL;
			}
			memcpy(host, hp + 1, (size_t)(colon - hp - 1));
			host[colon - hp - 1] = 0;
			port = atoi(colon + 1);
			freeReplyObject(r);
			redisContext *n = redis_connect(host, port);
			if (!n)
				return NULL;
			redisFree(*c);
			*c = n;
			snprintf(o->redis_host, sizeof(o->redis_host), "%s", host);
			o->redis_port = port;
			continue;
		}
		return r;
	}
	return NULL;
}

static double num(const redisReply *e)
{
	return e && e->type == REDIS_REPLY_STRING ? strtod(e->str, NULL) : 0;
}

/* Every live relay of the region: the alive:<id> keys (TTL 3 heartbeats: a dead relay drops
 * out within seconds), each with its info hash. Returns how many, or -1 (Redis unreachable). */
static int sample_relays(redisContext **c, struct opts *o, struct relay_rec *out, int max)
{
	char match[192];
	size_t plen = (size_t)snprintf(match, sizeof(match), "%s{%s}:alive:", o->prefix, o->region);
	strcat(match, "*");
	int n = 0;
	char cursor[32] = "0";
	for (int round = 0; round < SCAN_ROUNDS; round++) {
		redisReply *r = cmd(c, o, "SCAN %s MATCH %s COUNT 500", cursor, match);
		if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			if (r)
				freeReplyObject(r);
			return -1;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		redisReply *keys = r->element[1];
		for (size_t i = 0; i < keys->elements && n < max; i++) {
			const char *k = keys->element[i]->str;
			if (strlen(k) <= plen || strlen(k) - plen >= sizeof(out[n].id))
				continue;
			struct relay_rec *rec = &out[n];
			memset(rec, 0, sizeof(*rec));
			snprintf(rec->id, sizeof(rec->id), "%s", k + plen);
			redisReply *st = cmd(c, o, "GET %s", k);
			redisReply *in = cmd(c, o, "HMGET %s{%s}:info:%s tunnels players capacity agent_addr",
					     o->prefix, o->region, rec->id);
			if (st && st->type == REDIS_REPLY_STRING && in && in->type == REDIS_REPLY_ARRAY &&
			    in->elements == 4) {
				rec->draining = !strcmp(st->str, "draining");
				rec->load = 4 * num(in->element[0]) + num(in->element[1]);
				rec->capacity = num(in->element[2]);
				if (in->element[3]->type == REDIS_REPLY_STRING)
					snprintf(rec->agent_addr, sizeof(rec->agent_addr), "%s",
						 in->element[3]->str);
				if (rec->capacity <= 0)
					rec->capacity = 20000; /* RELAY_CAPACITY_DEFAULT */
				n++;
			}
			if (st)
				freeReplyObject(st);
			if (in)
				freeReplyObject(in);
		}
		freeReplyObject(r);
		if (!strcmp(cursor, "0"))
			return n;
	}
	return n;
}

static bool relay_present(redisContext **c, struct opts *o, const char *id)
{
	redisReply *r = cmd(c, o, "EXISTS %s{%s}:alive:%s", o->prefix, o->region, id);
	bool yes = !r || r->type != REDIS_REPLY_INTEGER || r->integer > 0; /* unknown: present */
	if (r)
		freeReplyObject(r);
	return yes;
}

/* ---- Railway's API ---- */

struct resp {
	char buf[RESP_MAX];
	size_t len;
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
	struct resp *r = ud;
	size_t k = sz * n, room = sizeof(r->buf) - 1 - r->len;
	memcpy(r->buf + r->len, p, k < room ? k : room);
	r->len += k < room ? k : room;
	r->buf[r->len] = 0;
	return k;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return NULL;
	char *b = calloc(1, 65537);
	size_t n = b ? fread(b, 1, 65536, f) : 0;
	fclose(f);
	if (b && n == 65536) { /* a query that large is not a query */
		free(b);
		return NULL;
	}
	return b;
}

/* POST the mutation; 0 when the API answered 2xx without GraphQL errors. */
static int set_replicas(struct opts *o, int replicas)
{
	int rc = -1;
	char *query = NULL, *body = NULL;
	struct curl_slist *hdr = NULL;
	CURL *cu = NULL;
	static struct resp resp;
	json_t *j = NULL, *ans = NULL;
	const char *token = getenv(o->token_env);
	if (!token || !*token) {
		pr_err("api: $%s is empty: cannot authenticate", o->token_env);
		goto out;
	}
	if (o->query_file && !(query = read_file(o->query_file))) {
		pr_err("api: cannot read --query-file %s", o->query_file);
		goto out;
	}
	j = json_pack("{s:s, s:{s:s, s:s, s:i, s:{s:i}}}", "query", query ? query : DEFAULT_QUERY,
		      "variables", "serviceId", o->service_id, "environmentId", o->environment_id,
		      "replicas", replicas, "input", "numReplicas", replicas);
	if (!j || !(body = json_dumps(j, JSON_COMPACT)))
		goto out;
	char auth[1200];
	if (snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token) >= (int)sizeof(auth)) {
		pr_err("api: $%s is too long", o->token_env);
		goto out;
	}
	hdr = curl_slist_append(hdr, "Content-Type: application/json");
	hdr = curl_slist_append(hdr, auth);
	memset(auth, 0, sizeof(auth)); /* the list holds its own copy */
	if (!(cu = curl_easy_init()) || !hdr)
		goto out;
	resp.len = 0;
	resp.buf[0] = 0;
	curl_easy_setopt(cu, CURLOPT_URL, o->api_url);
	curl_easy_setopt(cu, CURLOPT_HTTPHEADER, hdr);
	curl_easy_setopt(cu, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(cu, CURLOPT_TIMEOUT, (long)API_TIMEOUT_S);
	curl_easy_setopt(cu, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(cu, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(cu, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(cu, CURLOPT_PROTOCOLS_STR, "http,https");
	CURLcode cc = curl_easy_perform(cu);
	long status = 0;
	curl_easy_getinfo(cu, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK) {
		pr_warn("api: %s: %s", o->api_url, curl_easy_strerror(cc));
		goto out;
	}
	ans = json_loads(resp.buf, 0, NULL);
	json_t *errs = ans ? json_object_get(ans, "errors") : NULL;
	if (status / 100 != 2 || !ans || (errs && json_array_size(errs))) {
		json_t *m = errs ? json_object_get(json_array_get(errs, 0), "message") : NULL;
		pr_warn("api: HTTP %ld%s%s", status, m ? ": " : "",
			m && json_is_string(m) ? json_string_value(m) : "");
		goto out;
	}
	rc = 0;
out:
	if (ans)
		json_decref(ans);
	if (j)
		json_decref(j);
	free(body);
	free(query);
	if (hdr) {
		for (struct curl_slist *h = hdr; h; h = h->next) /* the token */
			memset(h->data, 0, strlen(h->data));
		curl_slist_free_all(hdr);
	}
	if (cu)
		curl_easy_cleanup(cu);
	return rc;
}

/* ---- drain ---- */

/* Run --drain-cmd for rec (environment, not the shell string: an id cannot inject), then wait
 * until its alive key is gone (the relay finished draining and exited) or drain_wait_s passed.
 * true when it is gone. */
static bool drain(redisContext **c, struct opts *o, const struct relay_rec *rec)
{
	pid_t pid = fork();
	if (pid < 0) {
		pr_warn("drain: fork: %s", strerror(errno));
		return false;
	}
	if (pid == 0) {
		setenv("DVV_DRAIN_INSTANCE", rec->id, 1);
		setenv("DVV_DRAIN_AGENT_ADDR", rec->agent_addr, 1);
		unsetenv(o->token_env);
		execl("/bin/sh", "sh", "-c", o->drain_cmd, (char *)NULL);
		_exit(127);
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		pr_warn("drain: --drain-cmd for %s failed (status %d): not removing a replica",
			rec->id, status);
		return false;
	}
	pr_info("drain: %s told to drain; waiting up to %d s for it to leave", rec->id,
		o->drain_wait_s);
	uint64_t until = now_ms() + (uint64_t)o->drain_wait_s * 1000;
	while (!stop && now_ms() < until) {
		if (!relay_present(c, o, rec->id)) {
			pr_info("drain: %s has left", rec->id);
			return true;
		}
		sleep_ms(o->interval_ms < 500 ? o->interval_ms : 500);
	}
	pr_warn("drain: %s still present after %d s: lowering the count anyway (its drain "
		"deadline ends it)", rec->id, o->drain_wait_s);
	return true;
}

/* ---- main ---- */

static void usage(void)
{
	printf("usage: dvv-autoscale [options]\n"
	       "  --redis HOST:PORT        Redis of the relays (default 127.0.0.1:6379)\n"
	       "  --redis-prefix P         key prefix, as the relays' --redis-prefix (default dvv:)\n"
	       "  --region R               region whose relays are scaled (default eu)\n"
	       "  --api-url URL            GraphQL endpoint (default https://backboard.railway.com/graphql/v2)\n"
	       "  --token-env NAME         environment variable holding the API token (default RAILWAY_API_TOKEN)\n"
	       "  --service-id ID          Railway service of the region's relays (required)\n"
	       "  --environment-id ID      Railway environment (required)\n"
	       "  --query-file FILE        GraphQL mutation to send instead of the built-in one; its\n"
	       "                           variables: serviceId, environmentId, replicas, input{numReplicas}\n"
	       "  --min N, --max N         replica bounds (default 1, 10)\n"
	       "  --out-pct P              scale out at this %% of capacity (default 70)\n"
	       "  --in-pct P               scale in at this %% of capacity (default 30)\n"
	       "  --out-for-s S            ... held this long (default 60)\n"
	       "  --in-for-s S             ... held this long (default 600)\n"
	       "  --cooldown-s S           no change within this long of the last (default 300)\n"
	       "  --interval-ms MS         sample period (default 5000)\n"
	       "  --drain-cmd CMD          run (sh -c) to drain the relay chosen for removal before\n"
	       "                           the count is lowered; gets DVV_DRAIN_INSTANCE, DVV_DRAIN_AGENT_ADDR\n"
	       "                           (default: none, the platform's SIGTERM drains)\n"
	       "  --drain-wait-s S         wait at most this long for it to leave (default 60)\n"
	       "  --log-level L            error|warn|info|debug (default info)\n");
}

static int parse_int(const char *v, int lo, int hi, int *out, const char *name)
{
	char *end;
	long n = strtol(v, &end, 10);
	if (!*v || *end || n < lo || n > hi) {
		fprintf(stderr, "dvv-autoscale: --%s: want an integer in %d..%d, got '%s'\n", name, lo,
			hi, v);
		return -1;
	}
	*out = (int)n;
	return 0;
}

static int parse(struct opts *o, int argc, char **argv)
{
	int out_pct = 70, in_pct = 30, out_for = 60, in_for = 600, cool = 300, lvl = LOG_INFO;
	const char *redis = "127.0.0.1:6379";
	*o = (struct opts){.prefix = "dvv:", .region = "eu",
			   .api_url = "https://backboard.railway.com/graphql/v2",
			   .token_env = "RAILWAY_API_TOKEN", .interval_ms = 5000, .drain_wait_s = 60,
			   .as = {.min = 1, .max = 10}};
	static const struct option lo[] = {
		{"redis", 1, 0, 'r'}, {"redis-prefix", 1, 0, 'p'}, {"region", 1, 0, 'g'},
		{"api-url", 1, 0, 'u'}, {"token-env", 1, 0, 't'}, {"service-id", 1, 0, 's'},
		{"environment-id", 1, 0, 'e'}, {"query-file", 1, 0, 'q'}, {"min", 1, 0, 'm'},
		{"max", 1, 0, 'M'}, {"out-pct", 1, 0, 'o'}, {"in-pct", 1, 0, 'i'},
		{"out-for-s", 1, 0, 'O'}, {"in-for-s", 1, 0, 'I'}, {"cooldown-s", 1, 0, 'c'},
		{"interval-ms", 1, 0, 'n'}, {"drain-cmd", 1, 0, 'd'}, {"drain-wait-s", 1, 0, 'w'},
		{"log-level", 1, 0, 'l'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
	int ch;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		int bad = 0;
		switch (ch) {
		case 'r': redis = optarg; break;
		case 'p': o->prefix = optarg; break;
		case 'g': o->region = optarg; break;
		case 'u': o->api_url = optarg; break;
		case 't': o->token_env = optarg; break;
		case 's': o->service_id = optarg; break;
		case 'e': o->environment_id = optarg; break;
		case 'q': o->query_file = optarg; break;
		case 'd': o->drain_cmd = optarg; break;
		case 'm': bad = parse_int(optarg, 1, 1000, &o->as.min, "min"); break;
		case 'M': bad = parse_int(optarg, 1, 1000, &o->as.max, "max"); break;
		case 'o': bad = parse_int(optarg, 1, 100, &out_pct, "out-pct"); break;
		case 'i': bad = parse_int(optarg, 1, 99, &in_pct, "in-pct"); break;
		case 'O': bad = parse_int(optarg, 0, 86400, &out_for, "out-for-s"); break;
		case 'I': bad = parse_int(optarg, 0, 86400, &in_for, "in-for-s"); break;
		case 'c': bad = parse_int(optarg, 0, 86400, &cool, "cooldown-s"); break;
		case 'n': bad = parse_int(optarg, 50, 3600000, &o->interval_ms, "interval-ms"); break;
		case 'w': bad = parse_int(optarg, 1, 86400, &o->drain_wait_s, "drain-wait-s"); break;
		case 'l':
			if ((lvl = log_level_parse(optarg)) < 0) {
				fprintf(stderr, "dvv-autoscale: --log-level: unknown level '%s'\n", optarg);
				bad = 1;
			}
			break;
		case 'h': usage(); return 1;
		default: bad = 1;
		}
		if (bad)
			return -1;
	}
	if (optind < argc || !o->service_id || !o->environment_id) {
		fprintf(stderr, "dvv-autoscale: --service-id and --environment-id are required "
				"(Try 'dvv-autoscale --help')\n");
		return -1;
	}
	const char *colon = strrchr(redis, ':');
	if (!colon || colon == redis || (size_t)(colon - redis) >= sizeof(o->redis_host) ||
	    parse_int(colon + 1, 1, 65535, &o->redis_port, "redis") < 0) {
		fprintf(stderr, "dvv-autoscale: --redis: want HOST:PORT\n");
		return -1;
	}
	memcpy(o->redis_host, redis, (size_t)(colon - redis));
	o->redis_host[colon - redis] = 0;
	o->as.out_frac = out_pct / 100.0;
	o->as.in_frac = in_pct / 100.0;
	o->as.out_for_ms = (uint64_t)out_for * 1000;
	o->as.in_for_ms = (uint64_t)in_for * 1000;
	o->as.cooldown_ms = (uint64_t)cool * 1000;
	const char *why;
	if (as_cfg_check(&o->as, &why)) {
		fprintf(stderr, "dvv-autoscale: thresholds: %s (--min/--max, --in-pct/--out-pct)\n",
			why);
		return -1;
	}
	log_init("dvv-autoscale", (enum log_level)lvl);
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	int rc = parse(&o, argc, argv);
	if (rc)
		return rc > 0 ? 0 : 2;
	static struct relay_rec relays[MAX_RELAYS];
	struct as_state st = {0};
	redisContext *c = NULL;
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	pr_info("scaling region %s: out above %.0f%% for %llu s, in below %.0f%% for %llu s, "
		"cool-down %llu s, %d..%d replicas, api %s", o.region, o.as.out_frac * 100,
		(unsigned long long)o.as.out_for_ms / 1000, o.as.in_frac * 100,
		(unsigned long long)o.as.in_for_ms / 1000,
		(unsigned long long)o.as.cooldown_ms / 1000, o.as.min, o.as.max, o.api_url);
	while (!stop) {
		if (!c && !(c = redis_connect(o.redis_host, o.redis_port))) {
			sleep_ms(o.interval_ms);
			continue;
		}
		int n = sample_relays(&c, &o, relays, MAX_RELAYS);
		if (n < 0) {
			pr_warn("redis: sample failed: %s; holding", c->err ? c->errstr : "bad reply");
			redisFree(c);
			c = NULL;
			sleep_ms(o.interval_ms);
			continue;
		}
		struct as_sample s = {0};
		int victim = -1;
		for (int i = 0; i < n; i++) {
			if (relays[i].draining) {
				s.draining++;
				continue;
			}
			s.active++;
			s.load += relays[i].load;
			s.capacity += relays[i].capacity;
			if (victim < 0 || relays[i].load / relays[i].capacity <
						  relays[victim].load / relays[victim].capacity)
				victim = i;
		}
		uint64_t now = now_ms();
		int prev = st.desired, target;
		const char *why;
		enum as_action a = as_decide(&o.as, &st, &s, now, &target, &why);
		pr_info("sample: %d active, %d draining, load %.0f of %.0f (%.1f%%), replicas %d: %s: %s",
			s.active, s.draining, s.load, s.capacity,
			s.capacity > 0 ? 100 * s.load / s.capacity : 0.0, prev ? prev : st.desired,
			a == AS_OUT ? "scale out" : a == AS_IN ? "scale in" : "hold", why);
		if (a == AS_IN && o.drain_cmd && victim >= 0 && !drain(&c, &o, &relays[victim])) {
			as_failed(&st, prev, now_ms());
			sleep_ms(o.interval_ms);
			continue;
		}
		if (a != AS_HOLD) {
			if (set_replicas(&o, target) == 0) {
				pr_info("api: replicas %d -> %d", prev, target);
			} else {
				pr_warn("api: setting %d replicas failed: keeping %d, retry after the "
					"cool-down", target, prev);
				as_failed(&st, prev, now_ms());
			}
		}
		sleep_ms(o.interval_ms);
	}
	if (c)
		redisFree(c);
	curl_global_cleanup();
	pr_info("stopped");
	return 0;
}
