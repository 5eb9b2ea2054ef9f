/* The HTTP layer of dvv-api: libmicrohttpd daemon, router, auth, static files, metrics. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include "account.h"
#include "apiint.h"
#include "arl.h"
#include "billing.h"
#include "db.h"
#include "log.h"
#include "rstore.h"
#include "tokens.h"
#include "tunnels.h"

#define HTTP_DISCARD_MAX (1024 * 1024) /* an oversized chunked body is read this far, then cut */
#define HTTP_PATH_MAX	 512

/* ---- routes ------------------------------------------------------------------------------ */

enum route_id {
	R_SIGNUP, R_LOGIN, R_LOGOUT, R_ME, R_PLANS, R_TUNNELS, R_TUNNELS_NEW, R_TUNNEL_DEL,
	R_LABEL_SET, R_LABEL_DEL, R_TOKENS, R_TOKENS_NEW, R_TOKEN_DEL, R_TOKEN_RENEW, R_AGENT_CONFIG,
	R_CHECKOUT, R_PORTAL, R_WEBHOOK, R_HEALTHZ, R_READYZ, R_METRICS, R_STATIC, R_NONE,
	R_COUNT
};

struct route {
	const char *method, *pattern; /* "*" in a pattern: one path segment (an id) */
	bool session;
	enum route_id id;
	const char *name; /* metrics label */
};

static const struct route routes[] = {
	{ "POST", "/v1/signup", false, R_SIGNUP, "signup" },
	{ "POST", "/v1/login", false, R_LOGIN, "login" },
	{ "POST", "/v1/logout", true, R_LOGOUT, "logout" },
	{ "GET", "/v1/me", true, R_ME, "me" },
	{ "GET", "/v1/plans", false, R_PLANS, "plans" },
	{ "GET", "/v1/tunnels", true, R_TUNNELS, "tunnels_list" },
	{ "POST", "/v1/tunnels", true, R_TUNNELS_NEW, "tunnels_create" },
	{ "DELETE", "/v1/tunnels/*", true, R_TUNNEL_DEL, "tunnels_delete" },
	{ "PUT", "/v1/tunnels/*/subdomain", true, R_LABEL_SET, "subdomain_set" },
	{ "DELETE", "/v1/tunnels/*/subdomain", true, R_LABEL_DEL, "subdomain_delete" },
	{ "GET", "/v1/tokens", true, R_TOKENS, "tokens_list" },
	{ "POST", "/v1/tokens", true, R_TOKENS_NEW, "tokens_create" },
	{ "DELETE", "/v1/tokens/*", true, R_TOKEN_DEL, "tokens_delete" },
	{ "POST", "/v1/tokens/renew", false, R_TOKEN_RENEW, "tokens_renew" },
	{ "GET", "/v1/agent-config", false, R_AGENT_CONFIG, "agent_config" },
	{ "POST", "/v1/billing/checkout", true, R_CHECKOUT, "billing_checkout" },
	{ "POST", "/v1/billing/portal", true, R_PORTAL, "billing_portal" },
	{ "POST", "/v1/stripe/webhook", false, R_WEBHOOK, "stripe_webhook" },
	{ "GET", "/healthz", false, R_HEALTHZ, "healthz" },
	{ "GET", "/readyz", false, R_READYZ, "readyz" },
	{ "GET", "/metrics", false, R_METRICS, "metrics" },
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

static const char *const route_names[R_COUNT] = {
	[R_STATIC] = "static", [R_NONE] = "none",
};

/* ---- metrics ----------------------------------------------------------------------------- */

static const int metric_codes[] = { 200, 201, 204, 304, 400, 401, 403, 404, 405, 409,
				    413, 415, 422, 429, 500, 503, 0 /* other */ };
#define N_CODES (sizeof(metric_codes) / sizeof(metric_codes[0]))
static const double metric_buckets[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
#define N_BUCKETS (sizeof(metric_buckets) / sizeof(metric_buckets[0]))

struct http {
	struct api *a;
	struct MHD_Daemon *d;
	int web_fd;
	unsigned long requests[R_COUNT][N_CODES];
	unsigned long hist[R_COUNT][N_BUCKETS + 1];
	unsigned long hist_count[R_COUNT];
	double hist_sum_ms[R_COUNT];
};

static void metric_observe(struct http *h, enum route_id r, int status, uint64_t ms)
{
	size_t c, b;

	for (c = 0; c < N_CODES - 1 && metric_codes[c] != status; c++)
		;
	for (b = 0; b < N_BUCKETS && ms / 1000.0 > metric_buckets[b]; b++)
		;
	__atomic_add_fetch(&h->requests[r][c], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&h->hist[r][b], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&h->hist_count[r], 1, __ATOMIC_RELAXED);
	/* the sum is informative only; a lost update under contention is acceptable */
	h->hist_sum_ms[r] += (double)ms;
}

static const char *route_name(enum route_id r)
{
	for (size_t i = 0; i < N_ROUTES; i++)
		if (routes[i].id == r)
			return routes[i].name;
	return route_names[r] ? route_names[r] : "none";
}

static char *metrics_text(struct http *h)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	fprintf(f, "# HELP dvv_api_requests_total HTTP requests by route and status.\n"
		   "# TYPE dvv_api_requests_total counter\n");
	for (int r = 0; r < R_COUNT; r++)
		for (size_t c = 0; c < N_CODES; c++)
			if (h->requests[r][c])
				fprintf(f, "dvv_api_requests_total{route=\"%s\",status=\"%s%d\"} %lu\n",
					route_name(r), metric_codes[c] ? "" : "other",
					metric_codes[c], h->requests[r][c]);
	fprintf(f, "# HELP dvv_api_request_duration_seconds Time to answer, by route.\n"
		   "# TYPE dvv_api_request_duration_seconds histogram\n");
	for (int r = 0; r < R_COUNT; r++) {
		unsigned long cum = 0;

		if (!h->hist_count[r])
			continue;
		for (size_t b = 0; b <= N_BUCKETS; b++) {
			cum += h->hist[r][b];
			if (b < N_BUCKETS)
				fprintf(f,
					"dvv_api_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
					"%lu\n",
					route_name(r), metric_buckets[b], cum);
			else
				fprintf(f,
					"dvv_api_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} "
					"%lu\n",
					route_name(r), cum);
		}
		fprintf(f, "dvv_api_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
			route_name(r), h->hist_sum_ms[r] / 1000.0);
		fprintf(f, "dvv_api_request_duration_seconds_count{route=\"%s\"} %lu\n",
			route_name(r), h->hist_count[r]);
	}
	fprintf(f, "# HELP dvv_api_outbox_pushed_total Outbox rows pushed to Redis.\n"
		   "# TYPE dvv_api_outbox_pushed_total counter\n"
		   "dvv_api_outbox_pushed_total %lu\n",
		rstore_pushed(h->a->rs));
	fclose(f);
	return buf;
}

/* ---- helpers handlers use ---------------------------------------------------------------- */

const char *api_header(const struct api_req *r, const char *name)
{
	return r->conn ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name) : NULL;
}

void api_reply(struct api_resp *out, int status, json_t *j)
{
	json_decref(out->json);
	out->status = status;
	out->json = j;
	if (status != 204 && !j) { /* json_pack failed: out of memory */
		out->status = 500;
		out->json = json_pack("{s:{s:s,s:s}}", "error", "code", "internal", "message",
				      "out of memory");
	}
}

void api_error(struct api_resp *out, int status, const char *code, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	/* a statement of this request failed because PostgreSQL went away: that is an outage the
	 * client should retry (503), not a fault of ours (500) */
	if (status == 500 && !strncmp(db_last_sqlstate(), "08", 2)) {
		status = 503;
		code = "unavailable";
		fmt = "database unavailable";
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	api_reply(out, status,
		  json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

json_t *api_parse_body(const struct api_req *r, struct api_resp *out)
{
	json_error_t jerr;
	json_t *j;

	j = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(j)) {
		json_decref(j);
		api_error(out, 400, "invalid_json", "body must be a JSON object%s%.100s",
			  j ? "" : ": ", j ? "" : jerr.text);
		return NULL;
	}
	return j;
}

const struct api_cfg *api_cfg(const struct api *a) { return &a->cfg; }

const char *api_session_token(const struct api_req *r, char *buf, size_t cap)
{
	const char *auth = api_header(r, "Authorization"), *v = NULL;

	if (auth && !strncasecmp(auth, "Bearer ", 7))
		v = auth + 7;
	else if (r->conn)
		v = MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, "dvv_session");
	if (!v || !v[0] || strlen(v) >= cap)
		return NULL;
	snprintf(buf, cap, "%s", v);
	return buf;
}

void api_set_session_cookie(struct api *a, struct api_resp *out, const char *session)
{
	bool secure = !strncmp(a->o.public_url, "https://", 8);

	if (session)
		snprintf(out->set_cookie, sizeof(out->set_cookie),
			 "dvv_session=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%d%s", session,
			 SESSION_TTL_S, secure ? "; Secure" : "");
	else
		snprintf(out->set_cookie, sizeof(out->set_cookie),
			 "dvv_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0%s",
			 secure ? "; Secure" : "");
}

bool api_rate_limited(struct api *a, const struct api_req *r, struct api_resp *out,
		      const char *account)
{
	char key[320];
	int wait;

	snprintf(key, sizeof(key), "ip:%s", r->client_ip);
	wait = arl_take(a->rl, key, a->o.rate_ip_per_min, mono_ms());
	if (!wait && account)
		wait = arl_take(a->rl, account, a->o.rate_account_per_min, mono_ms());
	if (!wait)
		return false;
	api_error(out, 429, "rate_limited", "too many attempts, retry in %d s", wait);
	snprintf(out->retry_after, sizeof(out->retry_after), "%d", wait);
	return true;
}

/* ---- request state ----------------------------------------------------------------------- */

struct http_ctx {
	uint64_t t0;
	char *body;
	size_t len, discarded;
	bool too_large, answered; /* answered: a response is already queued */
};

static enum MHD_Result http_queue(struct MHD_Connection *conn, struct http *h, enum route_id rid,
				  uint64_t t0, struct api_resp *resp)
{
	struct MHD_Response *mr;
	char *text = NULL;
	enum MHD_Result ret;

	if (resp->json) {
		text = json_dumps(resp->json, JSON_COMPACT);
		if (!text)
			return MHD_NO;
	}
	mr = MHD_create_response_from_buffer(text ? strlen(text) : 0, text ? text : (char *)"",
					     text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!mr) {
		free(text);
		return MHD_NO;
	}
	if (text)
		MHD_add_response_header(mr, "Content-Type", "application/json");
	MHD_add_response_header(mr, "Cache-Control", "no-store");
	MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
	if (resp->retry_after[0])
		MHD_add_response_header(mr, "Retry-After", resp->retry_after);
	if (resp->set_cookie[0])
		MHD_add_response_header(mr, "Set-Cookie", resp->set_cookie);
	ret = MHD_queue_response(conn, (unsigned)resp->status, mr);
	MHD_destroy_response(mr);
	metric_observe(h, rid, resp->status, mono_ms() - t0);
	return ret;
}

static void http_client_ip(struct api *a, struct MHD_Connection *conn, char *ip, size_t cap)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const char *xff;

	snprintf(ip, cap, "unknown");
	if (a->o.trust_proxy &&
	    (xff = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Forwarded-For"))) {
		/* the last hop is the one our own proxy appended: the others are the client's word */
		const char *last = strrchr(xff, ',');

		last = last ? last + 1 : xff;
		while (*last == ' ')
			last++;
		if (strlen(last) < cap && strlen(last) > 0) {
			snprintf(ip, cap, "%s", last);
			ip[strcspn(ip, " ")] = '\0';
			return;
		}
	}
	if (!ci || !ci->client_addr)
		return;
	if (ci->client_addr->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, ip,
			  (socklen_t)cap);
	else if (ci->client_addr->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, ip,
			  (socklen_t)cap);
}

/* Match path against pattern; the "*" segment is copied to id (at most 64 id characters). */
static bool http_match(const char *pattern, const char *path, char *id, size_t idcap)
{
	while (*pattern && *path) {
		if (*pattern == '*') {
			size_t n = strcspn(path, "/");

			if (n == 0 || n >= idcap)
				return false;
			for (size_t i = 0; i < n; i++)
				if (!((path[i] >= 'a' && path[i] <= 'z') ||
				      (path[i] >= 'A' && path[i] <= 'Z') ||
				      (path[i] >= '0' && path[i] <= '9') || path[i] == '_' ||
				      path[i] == '-'))
					return false;
			memcpy(id, path, n);
			id[n] = '\0';
			path += n;
			pattern++;
			continue;
		}
		if (*pattern++ != *path++)
			return false;
	}
	return !*pattern && !*path;
}

/* ---- static files ------------------------------------------------------------------------ */

static const char *http_mime(const char *path)
{
	static const struct { const char *ext, *type; } types[] = {
		{ ".html", "text/html; charset=utf-8" }, { ".js", "text/javascript; charset=utf-8" },
		{ ".mjs", "text/javascript; charset=utf-8" }, { ".css", "text/css; charset=utf-8" },
		{ ".json", "application/json" }, { ".svg", "image/svg+xml" },
		{ ".png", "image/png" }, { ".ico", "image/x-icon" }, { ".txt", "text/plain; charset=utf-8" },
		{ ".woff2", "font/woff2" }, { ".webp", "image/webp" },
	};
	const char *dot = strrchr(path, '.');

	for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
		if (!strcasecmp(dot, types[i].ext))
			return types[i].type;
	return "application/octet-stream";
}

/* A file under --web-root: only [A-Za-z0-9._/-], no "..", no hidden files, no symlinks. */
static enum MHD_Result http_static(struct http *h, struct MHD_Connection *conn, const char *url,
				   uint64_t t0)
{
	struct api_resp resp = { .status = 404 };
	char rel[HTTP_PATH_MAX];
	struct MHD_Response *mr;
	struct stat st;
	enum MHD_Result ret;
	bool ok = url[0] == '/' && strlen(url) < sizeof(rel) - 16;
	int fd = -1;

	for (const char *p = url; ok && *p; p++)
		ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		     (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '/' || *p == '-';
	if (ok && (strstr(url, "/.") || strstr(url, "//")))
		ok = false;
	if (ok) {
		snprintf(rel, sizeof(rel), "%s%s", url + 1,
			 url[strlen(url) - 1] == '/' ? "index.html" : "");
		if (h->web_fd >= 0)
			fd = openat(h->web_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	}
	if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		if (fd >= 0)
			close(fd);
		api_error(&resp, 404, "not_found", "no such page");
		ret = http_queue(conn, h, R_STATIC, t0, &resp);
		json_decref(resp.json);
		return ret;
	}
	mr = MHD_create_response_from_fd((uint64_t)st.st_size, fd); /* owns fd */
	if (!mr) {
		close(fd);
		return MHD_NO;
	}
	MHD_add_response_header(mr, "Content-Type", http_mime(rel));
	MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(mr, "Cache-Control", "no-cache");
	MHD_add_response_header(mr, "Content-Security-Policy",
				"default-src 'self'; frame-ancestors 'none'");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, mr);
	MHD_destroy_response(mr);
	metric_observe(h, R_STATIC, 200, mono_ms() - t0);
	return ret;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static void http_health(struct http *h, enum route_id rid, struct api_resp *out)
{
	PGconn *c;
	PGresult *r = NULL;

	if (rid == R_HEALTHZ) {
		api_reply(out, 200, json_pack("{s:s}", "status", "ok"));
		return;
	}
	c = db_get(h->a);
	if (c)
		r = db_exec(c, "SELECT 1", 0, NULL);
	if (c)
		db_put(h->a, c, !r);
	if (!r) {
		api_error(out, 503, "unavailable", "PostgreSQL is not reachable");
		return;
	}
	PQclear(r);
	api_reply(out, 200, json_pack("{s:s}", "status", "ready"));
}

static void http_dispatch(struct http *h, const struct route *rt, struct api_req *req,
			  const char *id, struct api_resp *out)
{
	struct api *a = h->a;

	switch (rt->id) {
	case R_SIGNUP: account_signup(a, req, out); break;
	case R_LOGIN: account_login(a, req, out); break;
	case R_LOGOUT: account_logout(a, req, out); break;
	case R_ME: account_me(a, req, out); break;
	case R_PLANS: account_plans(a, req, out); break;
	case R_TUNNELS: tunnels_list(a, req, out); break;
	case R_TUNNELS_NEW: tunnels_create(a, req, out); break;
	case R_TUNNEL_DEL: tunnels_delete(a, req, out, id); break;
	case R_LABEL_SET: tunnels_set_label(a, req, out, id); break;
	case R_LABEL_DEL: tunnels_clear_label(a, req, out, id); break;
	case R_TOKENS: tokens_list(a, req, out); break;
	case R_TOKENS_NEW: tokens_create(a, req, out); break;
	case R_TOKEN_DEL: tokens_delete(a, req, out, id); break;
	case R_TOKEN_RENEW: tokens_renew(a, req, out); break;
	case R_AGENT_CONFIG: tokens_agent_config(a, req, out); break;
	case R_CHECKOUT: billing_checkout(a, req, out); break;
	case R_PORTAL: billing_portal(a, req, out); break;
	case R_WEBHOOK: billing_webhook(a, req, out); break;
	case R_HEALTHZ:
	case R_READYZ: http_health(h, rt->id, out); break;
	default: api_error(out, 404, "not_found", "no such route"); break;
	}
}

/* Authenticate a session route: user id into uid, or out set (401, 403 csrf, 503). */
static bool http_auth(struct http *h, struct api_req *req, struct api_resp *out, char *uid)
{
	char tok[128];
	const char *auth = api_header(req, "Authorization"), *xrw;
	bool bearer = auth && !strncasecmp(auth, "Bearer ", 7);
	PGconn *c;
	int ret;

	if (!api_session_token(req, tok, sizeof(tok))) {
		api_error(out, 401, "unauthorized", "log in first");
		return false;
	}
	/* a cookie rides along on cross-site requests; a custom header cannot be sent cross-site
	 * without a CORS preflight we never allow */
	xrw = api_header(req, "X-Requested-With");
	if (!bearer && strcmp(req->method, "GET") && strcmp(req->method, "HEAD") &&
	    (!xrw || strcmp(xrw, "dvv"))) {
		OPENSSL_cleanse(tok, sizeof(tok));
		api_error(out, 403, "csrf", "cookie requests must carry X-Requested-With: dvv");
		return false;
	}
	c = db_get(h->a);
	if (!c) {
		OPENSSL_cleanse(tok, sizeof(tok));
		api_error(out, 503, "unavailable", "database unavailable");
		return false;
	}
	ret = account_session_user(c, tok, uid);
	OPENSSL_cleanse(tok, sizeof(tok));
	db_put(h->a, c, ret == -EIO);
	if (ret == -EIO)
		api_error(out, 503, "unavailable", "database unavailable");
	else if (ret)
		api_error(out, 401, "unauthorized", "session unknown or expired");
	return ret == 0;
}

static enum MHD_Result http_request(struct http *h, struct MHD_Connection *conn,
				    const char *url, const char *method, struct http_ctx *ctx)
{
	struct api_resp out = { .status = 500 };
	struct api_req req = { .method = method, .path = url, .conn = conn };
	const struct route *rt = NULL;
	char id[65] = "", ip[64], uid[ID_LEN + 1];
	const char *ct;
	bool path_known = false;
	enum route_id rid = R_NONE;
	enum MHD_Result ret;

	db_clear_sqlstate();
	http_client_ip(h->a, conn, ip, sizeof(ip));
	req.client_ip = ip;
	req.body = ctx->body;
	req.body_len = ctx->len;
	for (size_t i = 0; i < N_ROUTES && !rt; i++) {
		char tmp[65];

		if (!http_match(routes[i].pattern, url, tmp, sizeof(tmp)))
			continue;
		path_known = true;
		if (!strcmp(routes[i].method, method) ||
		    (!strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET"))) {
			rt = &routes[i];
			memcpy(id, tmp, sizeof(id));
		}
	}
	if (!rt && !path_known && strncmp(url, "/v1/", 4) &&
	    (!strcmp(method, "GET") || !strcmp(method, "HEAD")))
		return http_static(h, conn, url, ctx->t0);
	if (rt)
		rid = rt->id;
	if (ctx->too_large) {
		api_error(&out, 413, "too_large", "request body larger than %d bytes", API_BODY_MAX);
	} else if (!rt) {
		if (path_known)
			api_error(&out, 405, "method_not_allowed", "%s is not allowed here", method);
		else
			api_error(&out, 404, "not_found", "no such route");
	} else if (rid == R_METRICS) {
		char *text = metrics_text(h);
		struct MHD_Response *mr;

		if (!text)
			return MHD_NO;
		mr = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
		if (!mr) {
			free(text);
			return MHD_NO;
		}
		MHD_add_response_header(mr, "Content-Type", "text/plain; version=0.0.4");
		ret = MHD_queue_response(conn, MHD_HTTP_OK, mr);
		MHD_destroy_response(mr);
		metric_observe(h, rid, 200, mono_ms() - ctx->t0);
		return ret;
	} else if (ctx->len > 0 &&
		   (!(ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type")) ||
		    strncasecmp(ct, "application/json", 16) ||
		    (ct[16] && ct[16] != ';' && ct[16] != ' '))) {
		api_error(&out, 415, "unsupported_media_type", "send Content-Type: application/json");
	} else if (!rt->session || http_auth(h, &req, &out, uid)) {
		if (rt->session)
			req.user_id = uid;
		http_dispatch(h, rt, &req, id, &out);
	}
	ret = http_queue(conn, h, rid, ctx->t0, &out);
	json_decref(out.json);
	return ret;
}

static enum MHD_Result http_handler(void *cls, struct MHD_Connection *conn, const char *url,
				    const char *method, const char *version,
				    const char *upload_data, size_t *upload_data_size,
				    void **con_cls)
{
	struct http *h = cls;
	struct http_ctx *ctx = *con_cls;

	if (!ctx) {
		const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							     "Content-Length");

		ctx = calloc(1, sizeof(*ctx));
		if (!ctx)
			return MHD_NO;
		ctx->t0 = mono_ms();
		*con_cls = ctx;
		/* announced too large: answer before reading a byte of it */
		if (cl && strtoull(cl, NULL, 10) > API_BODY_MAX) {
			struct api_resp out = { 0 };
			enum MHD_Result ret;

			ctx->too_large = true;
			ctx->answered = true;
			api_error(&out, 413, "too_large", "request body larger than %d bytes",
				  API_BODY_MAX);
			ret = http_queue(conn, h, R_NONE, ctx->t0, &out);
			json_decref(out.json);
			return ret;
		}
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (ctx->answered)
			return MHD_NO; /* the 413 is out: stop reading the body */
		if (ctx->too_large || ctx->len + n > API_BODY_MAX) {
			/* no Content-Length (chunked): read on to answer 413, up to a point */
			ctx->too_large = true;
			ctx->discarded += n;
			return ctx->discarded > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
		}
		if (!ctx->body) {
			ctx->body = malloc(API_BODY_MAX + 1);
			if (!ctx->body)
				return MHD_NO;
		}
		memcpy(ctx->body + ctx->len, upload_data, n);
		ctx->len += n;
		ctx->body[ctx->len] = '\0';
		return MHD_YES;
	}
	if (ctx->answered)
		return MHD_YES; /* the 413 was queued on the first call */
	return http_request(h, conn, url, method, ctx);
}

static void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			   enum MHD_RequestTerminationCode toe)
{
	struct http_ctx *ctx = *con_cls;

	if (!ctx)
		return;
	if (ctx->body) {
		/* bodies carry passwords */
		OPENSSL_cleanse(ctx->body, ctx->len);
		free(ctx->body);
	}
	free(ctx);
	*con_cls = NULL;
}

static void http_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	pr_rl(LOG_WARN, "http: %s", line);
}

int http_start(struct api *a, struct http **out)
{
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	char host[128], *port;
	struct http *h;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	int ret;

	snprintf(host, sizeof(host), "%s", a->o.listen);
	port = strrchr(host, ':');
	if (!port)
		return -EINVAL;
	*port++ = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	if (getaddrinfo(host, port, &hints, &ai))
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h) {
		freeaddrinfo(ai);
		return -ENOMEM;
	}
	h->a = a;
	h->web_fd = open(a->o.web_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h->web_fd < 0)
		pr_warn("--web-root %s: %s (the dashboard is not served)", a->o.web_root,
			strerror(errno));
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	h->d = MHD_start_daemon(
		flags, 0, NULL, NULL, http_handler, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned)a->o.threads,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)a->o.conn_timeout_s,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)a->o.max_conns,
		MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)(a->o.trust_proxy ? 0 : 64),
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024),
		MHD_OPTION_NOTIFY_COMPLETED, http_completed, h,
		MHD_OPTION_EXTERNAL_LOGGER, http_log, h, MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!h->d) {
		ret = -EADDRINUSE;
		if (h->web_fd >= 0)
			close(h->web_fd);
		free(h);
		return ret;
	}
	*out = h;
	return 0;
}

void http_stop(struct http *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->d);
	if (h->web_fd >= 0)
		close(h->web_fd);
	free(h);
}
