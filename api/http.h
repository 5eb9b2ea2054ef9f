/* dvv-api's HTTP server (libmicrohttpd, internal thread pool, plain HTTP behind a TLS
 * terminator): request bodies bounded while they arrive, per-connection timeouts, the router with
 * authentication and the CSRF rule, the dashboard's static files, /healthz /readyz /metrics. */
#ifndef DVV_API_HTTP_H
#define DVV_API_HTTP_H

struct api;
struct http;

int http_start(struct api *a, struct http **out); /* 0 or -errno */
void http_stop(struct http *h);

#endif /* DVV_API_HTTP_H */
