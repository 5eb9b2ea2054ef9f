/* dvv's account subcommands (login, logout, tunnels): one API call or two each, the answer
 * shown to the user, and the credentials file updated. Everything the API sends is untrusted:
 * bounded by the HTTP client, parsed with jansson, every stored field validated by creds.c, and
 * text shown on the terminal stripped of control bytes. */
#include "cmd.h"
#include "creds.h"
#include "http.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define EXIT_AUTH 3

#define PASSWORD_MAX 256

bool agent_cmd_is(int argc, char **argv)
{
	return argc > 1 && (!strcmp(argv[1], "login") || !strcmp(argv[1], "logout") ||
			    !strcmp(argv[1], "tunnels"));
}

/* Text from the API for the terminal: no control bytes (escape sequences), bounded. */
static const char *clean(const char *s, char *buf, size_t cap)
{
	size_t o = 0;
	for (; s && *s && o + 1 < cap; s++)
		buf[o++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
	buf[o] = 0;
	return buf;
}

json_t *agent_jwt_payload(const char *jwt)
{
	const char *p = strchr(jwt, '.');
	const char *q = p ? strchr(p + 1, '.') : NULL;
	unsigned char buf[CTL_TOKEN_MAX];
	long n = q ? b64url_decode(p + 1, (size_t)(q - p - 1), buf, sizeof(buf)) : -1;
	json_t *o = n > 0 ? json_loadb((const char *)buf, (size_t)n, 0, NULL) : NULL;
	explicit_bzero(buf, sizeof(buf));
	if (!json_is_object(o)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int agent_jwt_claim(const char *jwt, const char *name, char *out, size_t cap)
{
	json_t *o = agent_jwt_payload(jwt);
	json_t *v = json_object_get(o, name);
	int rc = -EINVAL;
	if (json_is_string(v) && json_string_length(v) < cap) {
		memcpy(out, json_string_value(v), json_string_length(v) + 1);
		rc = 0;
	}
	json_decref(o);
	return rc;
}

/* ---- API calls ---- */

struct api_ctx {
	char api[CREDS_API_MAX];
	struct http_opts http;
	bool json;
};

/* One call. *out is the parsed JSON body (NULL for an empty one). 0 for a 2xx answer; else
 * the exit status to use, with what to tell the user printed already. */
static int api_call(const struct api_ctx *c, const char *method, const char *path,
		    const char *bearer, json_t *body, json_t **out)
{
	char url[CREDS_API_MAX + 256], err[600], text[400];
	struct http_resp r;
	char *b = NULL;
	int rc = EXIT_FAIL;
	*out = NULL;
	size_t l = strlen(c->api);
	while (l && c->api[l - 1] == '/')
		l--;
	snprintf(url, sizeof(url), "%.*s%s", (int)l, c->api, path);
	if (body && !(b = json_dumps(body, JSON_COMPACT))) {
		fprintf(stderr, "dvv: out of memory\n");
		return EXIT_FAIL;
	}
	int e = http_request(&c->http, method, url, bearer, b, &r, err, sizeof(err));
	if (b) {
		explicit_bzero(b, strlen(b)); /* it may hold a password */
		free(b);
	}
	if (e) {
		fprintf(stderr, "dvv: the DVV API at %s: %s\n", c->api, err);
		return EXIT_FAIL;
	}
	json_t *j = NULL;
	if (r.body_len) {
		json_error_t je;
		j = json_loadb(r.body, r.body_len, JSON_REJECT_DUPLICATES, &je);
	}
	if (r.status >= 200 && r.status < 300) {
		if (r.body_len && !j) {
			fprintf(stderr, "dvv: the DVV API at %s answered %d with something that is "
					"not JSON\n", c->api, r.status);
			goto out;
		}
		*out = j;
		j = NULL;
		rc = EXIT_OK;
		goto out;
	}
	json_t *eo = json_object_get(j, "error");
	const char *code = json_string_value(json_object_get(eo, "code"));
	const char *msg = json_string_value(json_object_get(eo, "message"));
	char cbuf[64];
	clean(msg ? msg : "", text, sizeof(text));
	clean(code ? code : "", cbuf, sizeof(cbuf));
	if (r.status >= 300 && r.status < 400)
		fprintf(stderr, "dvv: the DVV API at %s redirects (%d) to %s: give that URL with "
				"--api\n", c->api, r.status, clean(r.location, text, sizeof(text)));
	else if (r.status == 401)
		fprintf(stderr, "dvv: %s%snot logged in, or the session expired: run 'dvv login "
				"--email EMAIL'\n", text, text[0] ? ": " : "");
	else if (code)
		fprintf(stderr, "dvv: %s (%s)\n", text[0] ? text : cbuf, cbuf);
	else
		fprintf(stderr, "dvv: the DVV API at %s answered HTTP %d\n", c->api, r.status);
	if (r.status == 429 && r.retry_after[0])
		fprintf(stderr, "dvv: try again in %s s\n", clean(r.retry_after, cbuf, sizeof(cbuf)));
	rc = r.status == 401 ? EXIT_AUTH : EXIT_FAIL;
out:
	json_decref(j);
	if (r.body)
		explicit_bzero(r.body, r.body_len); /* a session or a token travels in bodies */
	http_resp_free(&r);
	return rc;
}

/* GET /v1/agent-config into c: relays and ca_pem. 0 or an exit status. */
static int fetch_agent_config(const struct api_ctx *a, struct agent_creds *c)
{
	json_t *j;
	int rc = api_call(a, "GET", "/v1/agent-config", NULL, NULL, &j);
	if (rc)
		return rc;
	rc = EXIT_FAIL;
	json_t *relays = json_object_get(j, "relays"), *ca = json_object_get(j, "ca_pem");
	if (!json_is_object(relays) || (ca && !json_is_null(ca) && !json_is_string(ca))) {
		fprintf(stderr, "dvv: GET /v1/agent-config: no relays in the answer\n");
		goto out;
	}
	c->nrelays = 0;
	const char *k;
	json_t *v;
	json_object_foreach(relays, k, v)
	{
		if (c->nrelays >= AGENT_MAX_REGIONS)
			break; /* the first ones; more than the agent can measure */
		struct agent_region *r = &c->relays[c->nrelays];
		if (!json_is_string(v) || strlen(k) >= sizeof(r->name) ||
		    json_string_length(v) >= sizeof(r->endpoint)) {
			fprintf(stderr, "dvv: GET /v1/agent-config: a bad relay entry\n");
			goto out;
		}
		snprintf(r->name, sizeof(r->name), "%s", k);
		snprintf(r->endpoint, sizeof(r->endpoint), "%s", json_string_value(v));
		c->nrelays++;
	}
	free(c->ca_pem);
	c->ca_pem = NULL;
	if (json_is_string(ca) && json_string_length(ca)) {
		if (json_string_length(ca) > CREDS_CA_MAX) {
			fprintf(stderr, "dvv: GET /v1/agent-config: ca_pem over %d bytes\n",
				CREDS_CA_MAX);
			goto out;
		}
		c->ca_pem = strdup(json_string_value(ca));
		if (!c->ca_pem)
			goto out;
	}
	rc = EXIT_OK;
out:
	json_decref(j);
	return rc;
}

/* ---- password ---- */

/* DVV_PASSWORD, else the terminal without echo. 0 or an exit status. */
static int read_password(char *out, size_t cap)
{
	const char *env = getenv("DVV_PASSWORD");
	if (env && *env) {
		if (strlen(env) >= cap) {
			fprintf(stderr, "dvv: DVV_PASSWORD is longer than %zu bytes\n", cap - 1);
			return EXIT_USAGE;
		}
		snprintf(out, cap, "%s", env);
		return 0;
	}
	int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		fprintf(stderr, "dvv: no terminal to ask the password on: set DVV_PASSWORD\n");
		return EXIT_USAGE;
	}
	struct termios old, quiet;
	bool restore = false;
	if (tcgetattr(fd, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
		quiet.c_lflag |= ICANON;
		restore = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
	}
	static const char prompt[] = "Password: ";
	ssize_t w = write(fd, prompt, sizeof(prompt) - 1);
	(void)w;
	size_t n = 0;
	int rc = 0;
	for (;;) {
		char ch;
		ssize_t r = read(fd, &ch, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || ch == '\n' || ch == '\r')
			break;
		if (n + 1 >= cap) {
			rc = EXIT_USAGE;
			continue; /* swallow the rest of the line */
		}
		out[n++] = ch;
	}
	out[n] = 0;
	if (restore)
		tcsetattr(fd, TCSAFLUSH, &old);
	w = write(fd, "\n", 1);
	close(fd);
	if (rc)
		fprintf(stderr, "dvv: the password is longer than %zu bytes\n", cap - 1);
	return rc;
}

/* ---- shared option handling ---- */

struct cmd_opts {
	const char *api, *ca, *email, *token, *token_file;
	bool json, help;
	int first_arg; /* optind after parsing */
};

enum { O_API = 300, O_CA, O_EMAIL, O_TOKEN, O_TOKEN_FILE, O_JSON, O_HELP };

/* Parse argv[1..] (argv[1] is the subcommand). 0, or EXIT_USAGE with the message printed. */
static int cmd_parse(int argc, char **argv, const struct option *lo, struct cmd_opts *o)
{
	memset(o, 0, sizeof(*o));
	optind = 0;
	opterr = 0;
	int rc;
	while ((rc = getopt_long(argc - 1, argv + 1, "", lo, NULL)) != -1) {
		switch (rc) {
		case O_API:
			o->api = optarg;
			break;
		case O_CA:
			o->ca = optarg;
			break;
		case O_EMAIL:
			o->email = optarg;
			break;
		case O_TOKEN:
			o->token = strdup(optarg);
			/* out of argv (ps, /proc/PID/cmdline) right away */
			memset(optarg, 'x', strlen(optarg));
			if (!o->token) {
				fprintf(stderr, "dvv: out of memory\n");
				return EXIT_FAIL;
			}
			break;
		case O_TOKEN_FILE:
			o->token_file = optarg;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_HELP:
			o->help = true;
			break;
		default:
			fprintf(stderr, "dvv %s: %s '%s'\nTry 'dvv %s --help'.\n", argv[1],
				optopt ? "option needs a value:" : "unknown option",
				argv[optind], argv[1]);
			return EXIT_USAGE;
		}
	}
	o->first_arg = optind + 1;
	return 0;
}

/* The API base URL: --api, DVV_API, the stored one, the default. */
static int api_ctx_init(struct api_ctx *a, const struct cmd_opts *o, const struct agent_creds *c)
{
	memset(a, 0, sizeof(*a));
	const char *env = getenv("DVV_API");
	const char *api = o->api			 ? o->api
			  : env && *env			 ? env
			  : c && c->api[0]		 ? c->api
							 : AGENT_DEFAULT_API;
	struct http_url u;
	char err[300];
	if (strlen(api) >= sizeof(a->api) || http_url_parse(api, &u, err, sizeof(err))) {
		fprintf(stderr, "dvv: --api %s: %s\n", api,
			strlen(api) >= sizeof(a->api) ? "too long" : err);
		return EXIT_USAGE;
	}
	snprintf(a->api, sizeof(a->api), "%s", api);
	a->http.ca_file = o->ca;
	a->json = o->json;
	if (o->ca && access(o->ca, R_OK) != 0) {
		fprintf(stderr, "dvv: --ca %s: %s\n", o->ca, strerror(errno));
		return EXIT_USAGE;
	}
	return 0;
}

/* The stored credentials, or empty ones when there is no file. 0 or an exit status. */
static int load_or_empty(char *path, size_t pcap, char *dir, size_t dcap, struct agent_creds *c,
			 bool *existed)
{
	char err[600];
	*existed = false;
	if (creds_path(path, pcap, dir, dcap, err, sizeof(err))) {
		fprintf(stderr, "dvv: %s\n", err);
		return EXIT_FAIL;
	}
	int rc = creds_load(path, c, err, sizeof(err));
	if (rc == -ENOENT) {
		memset(c, 0, sizeof(*c));
		return 0;
	}
	if (rc) {
		fprintf(stderr, "dvv: %s\n", err);
		return EXIT_FAIL;
	}
	*existed = true;
	return 0;
}

static int save(const char *dir, const char *path, const struct agent_creds *c)
{
	char err[600];
	if (creds_save(dir, path, c, err, sizeof(err))) {
		fprintf(stderr, "dvv: %s\n", err);
		return EXIT_FAIL;
	}
	return 0;
}

/* ---- dvv login ---- */

static void login_usage(FILE *f)
{
	fprintf(f,
		"usage: dvv login [--api URL] (--token TOKEN | --token-file FILE | --email EMAIL)\n"
		"Store credentials for dvv in $XDG_CONFIG_HOME/dvv/agent.json (default\n"
		"~/.config/dvv/agent.json, mode 600).\n"
		"\n"
		"  --api URL          the DVV API (env DVV_API; default: the stored one, else %s)\n"
		"  --token TOKEN      a tunnel token from the dashboard: plain 'dvv' then runs with it\n"
		"  --token-file FILE  the same, read from FILE\n"
		"  --email EMAIL      log in to the account (password from DVV_PASSWORD or asked on\n"
		"                     the terminal, never on the command line): for 'dvv tunnels'\n"
		"  --ca FILE          verify the API's certificate against this CA bundle\n"
		"                     (default: the system store)\n"
		"  --help             print this help and exit\n",
		AGENT_DEFAULT_API);
}

static int cmd_login(int argc, char **argv)
{
	static const struct option lo[] = {
		{"api", required_argument, NULL, O_API},   {"token", required_argument, NULL, O_TOKEN},
		{"token-file", required_argument, NULL, O_TOKEN_FILE},
		{"email", required_argument, NULL, O_EMAIL}, {"ca", required_argument, NULL, O_CA},
		{"help", no_argument, NULL, O_HELP},	   {NULL, 0, NULL, 0},
	};
	struct cmd_opts o;
	struct agent_creds c;
	struct api_ctx a;
	char path[4200], dir[4200], err[600], pw[PASSWORD_MAX + 1] = "";
	json_t *j = NULL, *req = NULL;
	bool existed;
	int rc = cmd_parse(argc, argv, lo, &o);
	memset(&c, 0, sizeof(c));
	if (rc)
		goto out;
	if (o.help) {
		login_usage(stdout);
		goto out;
	}
	int ways = !!o.token + !!o.token_file + !!o.email;
	if (ways != 1 || o.first_arg < argc) {
		fprintf(stderr, "dvv login: %s\nTry 'dvv login --help'.\n",
			o.first_arg < argc ? "unexpected argument"
					   : "give one of --token, --token-file or --email");
		rc = EXIT_USAGE;
		goto out;
	}
	if ((rc = load_or_empty(path, sizeof(path), dir, sizeof(dir), &c, &existed)) ||
	    (rc = api_ctx_init(&a, &o, &c)))
		goto out;
	bool same_api = existed && !strcmp(c.api, a.api);
	if (!same_api)
		creds_clear(&c); /* another API: nothing stored for the old one applies */
	snprintf(c.api, sizeof(c.api), "%s", a.api);
	if (o.token || o.token_file) {
		if (o.token_file) {
			if (agent_token_read_file(o.token_file, c.token, sizeof(c.token), err,
						  sizeof(err))) {
				fprintf(stderr, "dvv login: %s\n", err);
				rc = EXIT_USAGE;
				goto out;
			}
		} else if (strlen(o.token) >= sizeof(c.token)) {
			fprintf(stderr, "dvv login: the token is longer than %d bytes\n",
				CTL_TOKEN_MAX);
			rc = EXIT_USAGE;
			goto out;
		} else {
			snprintf(c.token, sizeof(c.token), "%s", o.token);
		}
		char tid[CREDS_ID_MAX + 1];
		if (agent_jwt_claim(c.token, "tid", tid, sizeof(tid)) || !creds_id_ok(tid)) {
			fprintf(stderr, "dvv login: that is not a DVV tunnel token (no tunnel id in "
					"it); copy it again from the dashboard\n");
			rc = EXIT_USAGE;
			goto out;
		}
		snprintf(c.tunnel, sizeof(c.tunnel), "%s", tid);
		if ((rc = fetch_agent_config(&a, &c)) || (rc = save(dir, path, &c)))
			goto out;
		printf("Token for tunnel %s saved to %s\nRun 'dvv' to open the tunnel.\n", c.tunnel,
		       path);
		goto out;
	}
	if ((rc = read_password(pw, sizeof(pw))))
		goto out;
	req = json_pack("{s:s, s:s}", "email", o.email, "password", pw);
	if (!req) {
		fprintf(stderr, "dvv login: the e-mail address is not valid UTF-8\n");
		rc = EXIT_USAGE;
		goto out;
	}
	if ((rc = api_call(&a, "POST", "/v1/login", NULL, req, &j)))
		goto out;
	const char *session = json_string_value(json_object_get(j, "session"));
	if (!session || !creds_session_ok(session)) {
		fprintf(stderr, "dvv login: the API's answer has no valid session\n");
		rc = EXIT_FAIL;
		goto out;
	}
	snprintf(c.session, sizeof(c.session), "%s", session);
	if ((rc = fetch_agent_config(&a, &c)) || (rc = save(dir, path, &c)))
		goto out;
	char ebuf[300];
	printf("Logged in to %s as %s; credentials saved to %s\n"
	       "'dvv tunnels' lists your tunnels, 'dvv tunnels use ID' picks the one to run.\n",
	       a.api, clean(json_string_value(json_object_get(json_object_get(j, "user"), "email")),
			    ebuf, sizeof(ebuf)),
	       path);
out:
	explicit_bzero(pw, sizeof(pw));
	if (req) {
		json_object_del(req, "password");
		json_decref(req);
	}
	json_decref(j);
	if (o.token) {
		explicit_bzero((char *)o.token, strlen(o.token));
		free((char *)o.token);
	}
	creds_clear(&c);
	return rc;
}

/* ---- dvv logout ---- */

static int cmd_logout(int argc, char **argv)
{
	static const struct option lo[] = {
		{"ca", required_argument, NULL, O_CA},
		{"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	struct cmd_opts o;
	struct agent_creds c;
	struct api_ctx a;
	char path[4200], dir[4200];
	bool existed;
	int rc = cmd_parse(argc, argv, lo, &o);
	memset(&c, 0, sizeof(c));
	if (rc)
		goto out;
	if (o.help || o.first_arg < argc) {
		fprintf(o.help ? stdout : stderr,
			"usage: dvv logout [--ca FILE]\n"
			"End the stored API session and delete the credentials file (the tunnel token\n"
			"in it stays valid until it expires or is revoked in the dashboard).\n"
			"\n"
			"  --ca FILE   verify the API's certificate against this CA bundle\n"
			"  --help      print this help and exit\n");
		rc = o.help ? EXIT_OK : EXIT_USAGE;
		goto out;
	}
	if ((rc = load_or_empty(path, sizeof(path), dir, sizeof(dir), &c, &existed)))
		goto out;
	if (!existed) {
		printf("Not logged in (no %s)\n", path);
		goto out;
	}
	if (c.session[0] && !(rc = api_ctx_init(&a, &o, &c))) {
		json_t *j;
		/* the session dies at the API too; a failure here still removes the file */
		if (api_call(&a, "POST", "/v1/logout", c.session, NULL, &j))
			fprintf(stderr, "dvv logout: the API session may still be valid until it "
					"expires\n");
		json_decref(j);
	}
	if (unlink(path) < 0) {
		fprintf(stderr, "dvv logout: removing %s: %s\n", path, strerror(errno));
		rc = EXIT_FAIL;
		goto out;
	}
	rc = EXIT_OK;
	printf("Logged out: removed %s\n", path);
out:
	creds_clear(&c);
	return rc;
}

/* ---- dvv tunnels ---- */

static void tunnels_usage(FILE *f)
{
	fprintf(f,
		"usage: dvv tunnels [--api URL] [--ca FILE] [--json]   list the account's tunnels\n"
		"       dvv tunnels use ID                             run 'dvv' with tunnel ID\n"
		"       dvv tunnels create                             add a tunnel to the account\n"
		"Needs 'dvv login --email EMAIL' first.\n"
		"\n"
		"  --api URL   the DVV API (env DVV_API; default: the stored one, else %s)\n"
		"  --ca FILE   verify the API's certificate against this CA bundle (default: the\n"
		"              system store)\n"
		"  --json      print the API's answer as JSON\n"
		"  --help      print this help and exit\n",
		AGENT_DEFAULT_API);
}

static int64_t jint(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static const char *jstr(json_t *o, const char *k, char *buf, size_t cap, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s && *s ? clean(s, buf, cap) : dflt;
}

static void print_tunnels(json_t *j, const char *current)
{
	json_t *arr = json_object_get(j, "tunnels"), *t;
	size_t i;
	if (!json_is_array(arr) || !json_array_size(arr)) {
		printf("No tunnels: 'dvv tunnels create' adds one\n");
		return;
	}
	printf("  %-24s  %-40s  %-9s  %-6s  %7s  %-6s  %s\n", "ID", "HOSTNAME", "STATE", "ONLINE",
	       "PLAYERS", "REGION", "THIS PERIOD");
	json_array_foreach(arr, i, t)
	{
		char id[80], host[256], state[32], region[32], bytes[32];
		jstr(t, "id", id, sizeof(id), "?");
		agent_fmt_bytes((uint64_t)jint(t, "bytes"), bytes, sizeof(bytes));
		bool online = json_is_true(json_object_get(t, "online"));
		printf("%c %-24s  %-40s  %-9s  %-6s  %7lld  %-6s  %s\n",
		       current && !strcmp(current, id) ? '*' : ' ', id,
		       jstr(t, "hostname", host, sizeof(host), "-"),
		       jstr(t, "state", state, sizeof(state), "-"), online ? "yes" : "no",
		       (long long)jint(t, "players"), jstr(t, "region", region, sizeof(region), "-"),
		       bytes);
	}
	if (current && current[0])
		printf("* the tunnel plain 'dvv' runs\n");
}

static void print_created(json_t *j, const char *unused)
{
	char buf[300];

	(void)unused;
	printf("Created tunnel %s; 'dvv tunnels use %s' makes plain 'dvv' run it\n",
	       jstr(j, "id", buf, sizeof(buf), "?"), buf);
}

/* Ask the API (the answer lands in *j, the caller frees it) and print the answer: one line of
 * JSON with --json, for people through human(j, arg) otherwise. 0 or an exit code. */
static int call_and_print(struct api_ctx *a, const char *method, const char *path,
			  const char *session, json_t *req, json_t **j,
			  void (*human)(json_t *j, const char *arg), const char *arg)
{
	int rc = api_call(a, method, path, session, req, j);

	if (rc)
		return rc;
	if (a->json) {
		json_dumpf(*j, stdout, JSON_COMPACT);
		putchar('\n');
	} else {
		human(*j, arg);
	}
	return 0;
}

static int cmd_tunnels(int argc, char **argv)
{
	static const struct option lo[] = {
		{"api", required_argument, NULL, O_API}, {"ca", required_argument, NULL, O_CA},
		{"json", no_argument, NULL, O_JSON},	 {"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	struct cmd_opts o;
	struct agent_creds c;
	struct api_ctx a;
	char path[4200], dir[4200], buf[300];
	json_t *j = NULL, *req = NULL;
	bool existed;
	int rc = cmd_parse(argc, argv, lo, &o);
	memset(&c, 0, sizeof(c));
	if (rc)
		goto out;
	if (o.help) {
		tunnels_usage(stdout);
		goto out;
	}
	const char *verb = o.first_arg < argc ? argv[o.first_arg] : NULL;
	const char *id = NULL;
	int extra = argc - o.first_arg - (verb ? 1 : 0);
	if (verb && !strcmp(verb, "use") && extra == 1) {
		id = argv[o.first_arg + 1];
		if (!creds_id_ok(id)) {
			fprintf(stderr, "dvv tunnels use: '%s' is not a tunnel id\n",
				clean(id, buf, sizeof(buf)));
			rc = EXIT_USAGE;
			goto out;
		}
	} else if (verb && !(!strcmp(verb, "create") && extra == 0)) {
		fprintf(stderr, "dvv tunnels: unexpected '%s'\nTry 'dvv tunnels --help'.\n",
			clean(verb, buf, sizeof(buf)));
		rc = EXIT_USAGE;
		goto out;
	}
	if ((rc = load_or_empty(path, sizeof(path), dir, sizeof(dir), &c, &existed)) ||
	    (rc = api_ctx_init(&a, &o, &c)))
		goto out;
	if (!c.session[0] || strcmp(c.api, a.api)) {
		fprintf(stderr, "dvv tunnels: not logged in to %s: run 'dvv login --email EMAIL'%s\n",
			a.api, strcmp(a.api, AGENT_DEFAULT_API) ? " --api URL" : "");
		rc = EXIT_AUTH;
		goto out;
	}
	if (!verb) {
		rc = call_and_print(&a, "GET", "/v1/tunnels", c.session, NULL, &j, print_tunnels,
				    c.tunnel);
		goto out;
	}
	if (!strcmp(verb, "create")) {
		req = json_object();
		rc = call_and_print(&a, "POST", "/v1/tunnels", c.session, req, &j, print_created,
				    NULL);
		goto out;
	}
	/* use ID: a fresh token for it becomes the one plain dvv runs with */
	req = json_pack("{s:s}", "tunnel_id", id);
	if ((rc = api_call(&a, "POST", "/v1/tokens", c.session, req, &j)))
		goto out;
	const char *tok = json_string_value(json_object_get(j, "token"));
	if (!tok || strlen(tok) >= sizeof(c.token)) {
		fprintf(stderr, "dvv tunnels use: the API's answer has no usable token\n");
		rc = EXIT_FAIL;
		goto out;
	}
	snprintf(c.token, sizeof(c.token), "%s", tok);
	snprintf(c.tunnel, sizeof(c.tunnel), "%s", id);
	if (!c.nrelays && (rc = fetch_agent_config(&a, &c)))
		goto out;
	if ((rc = save(dir, path, &c)))
		goto out;
	char exp[64];
	printf("Token for tunnel %s saved to %s (expires %s)\nRun 'dvv' to open the tunnel.\n", id,
	       path, jstr(j, "expires_at", exp, sizeof(exp), "-"));
out:
	json_decref(req);
	if (j) {
		/* the token lives in this answer: wipe before freeing */
		json_t *t = json_object_get(j, "token");
		if (json_is_string(t))
			explicit_bzero((char *)json_string_value(t), json_string_length(t));
		json_decref(j);
	}
	creds_clear(&c);
	return rc;
}

int agent_cmd_main(int argc, char **argv)
{
	if (!strcmp(argv[1], "login"))
		return cmd_login(argc, argv);
	if (!strcmp(argv[1], "logout"))
		return cmd_logout(argc, argv);
	return cmd_tunnels(argc, argv);
}
