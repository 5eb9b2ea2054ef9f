/* The admin HTTP port: /healthz, /readyz, /metrics (Prometheus text). Served by libmicrohttpd on
 * its own thread; it reads atomics only, never the event loop's structures. */
#ifndef DVV_ADMIN_H
#define DVV_ADMIN_H

struct relay;
int admin_start(struct relay *r);
void admin_stop(struct relay *r);

#endif
