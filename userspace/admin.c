#include "admin.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "rredis.h"

#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct relay_metrics g_metrics;

struct admin {
	struct MHD_Daemon *d;
};

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return;
		b->p = p;
		b->cap = cap;
	}
}

static bool loop_alive(struct relay *r)
{
	uint64_t a = atomic_load(&r->loop_alive_ms);
	return mono_ms() - a < 5000;
}

static void render_metrics(struct relay *r, struct sbuf *b)
{
#define X(name, type, help)                                                                    \
	sb_printf(b, "# HELP dvv_relay_%s %s\n# TYPE dvv_relay_%s %s\ndvv_relay_%s %lld\n", #name, \
		  help, #name, #type, #name, (long long)M_GET(name));
	METRICS(X)
#undef X
	sb_printf(b,
		  "# HELP dvv_relay_info Static facts about this relay\n# TYPE dvv_relay_info gauge\n"
		  "dvv_relay_info{instance=\"%s\",region=\"%s\",dataplane=\"%s\",version=\"0.1.0\"} 1\n",
		  r->cfg.instance_id, r->cfg.region, r->dp.ops->name);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
			       const char *method, const char *version, const char *upload,
			       size_t *upload_len, void **con_cls)
{
	struct relay *r = cls;
	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return MHD_NO;
	struct sbuf b = {0};
	unsigned status = 200;
	const char *ctype = "application/json";
	if (!strcmp(url, "/metrics")) {
		render_metrics(r, &b);
		ctype = "text/plain; version=0.0.4";
	} else if (!strcmp(url, "/healthz")) {
		bool ok = loop_alive(r);
		status = ok ? 200 : 503;
		sb_printf(&b,
			  "{\"status\":\"%s\",\"instance\":\"%s\",\"region\":\"%s\",\"dataplane\":\"%s\","
			  "\"redis\":%s,\"draining\":%s,\"tunnels\":%lld,\"splices\":%lld}\n",
			  ok ? "ok" : "stalled", r->cfg.instance_id, r->cfg.region, r->dp.ops->name,
			  M_GET(redis_up) ? "true" : "false", M_GET(draining) ? "true" : "false",
			  (long long)M_GET(tunnels_active), (long long)M_GET(splices_active));
	} else if (!strcmp(url, "/readyz")) {
		/* ready = can take new tunnels: loop alive, Redis reachable, not draining */
		bool ok = loop_alive(r) && M_GET(redis_up) && !M_GET(draining);
		status = ok ? 200 : 503;
		sb_printf(&b, "{\"ready\":%s,\"redis\":%s,\"draining\":%s}\n", ok ? "true" : "false",
			  M_GET(redis_up) ? "true" : "false", M_GET(draining) ? "true" : "false");
	} else {
		status = 404;
		sb_printf(&b, "{\"error\":\"not found\"}\n");
	}
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(b.len, b.p ? b.p : (char *)"", MHD_RESPMEM_MUST_COPY);
	free(b.p);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", ctype);
	enum MHD_Result ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

int admin_start(struct relay *r)
{
	struct net_addr a;
	char err[128];
	if (net_parse_addr(r->cfg.admin_listen, &a, false, err, sizeof(err))) {
		pr_err("--admin-listen: %s", err);
		return -1;
	}
	struct admin *ad = calloc(1, sizeof(*ad));
	if (!ad)
		return -1;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_INTERNAL_THREAD;
	if (a.ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	ad->d = MHD_start_daemon(flags, net_addr_port((struct sockaddr *)&a.ss), NULL, NULL, handler,
				 r, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a.ss,
				 MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT,
				 10u, MHD_OPTION_END);
	if (!ad->d) {
		pr_err("admin: cannot listen on %s", r->cfg.admin_listen);
		free(ad);
		return -1;
	}
	r->admin = ad;
	pr_info("admin: http://%s/metrics /healthz /readyz", r->cfg.admin_listen);
	return 0;
}

void admin_stop(struct relay *r)
{
	if (!r->admin)
		return;
	MHD_stop_daemon(r->admin->d);
	free(r->admin);
	r->admin = NULL;
}
