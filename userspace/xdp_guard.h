/* XDP SYN guard: per-source SYN token buckets plus a per-port budget, allow/deny prefixes,
 * attached to the interfaces players and agents arrive on. bpf/xdp_guard.bpf.c is the program. */
#ifndef DVV_XDP_GUARD_H
#define DVV_XDP_GUARD_H

#include <stdint.h>

struct relay_cfg;
struct xdp_guard;
struct dvv_xdp_counters; /* bpf/xdp_guard.h */
struct dvv_cookie_tc_counters;

/* Attach to every interface in cfg->xdp_ifaces, protecting the two ports. Maps are pinned under
 * pin_dir. Returns 0 (and *out) or -errno with a logged reason. */
int xdp_guard_start(struct xdp_guard **out, const struct relay_cfg *cfg, uint16_t player_port,
		    uint16_t agent_port, const char *pin_dir);
void xdp_guard_stop(struct xdp_guard *g);
/* Sums the per-CPU verdict counters of a running guard into *out: 0 or -errno. Thread-safe
 * (map reads are syscalls). */
int xdp_guard_counters(struct xdp_guard *g, struct dvv_xdp_counters *out);
/* The same for the TC half of SYN cookies: -ENOENT when cookies are off. */
int xdp_guard_cookie_counters(struct xdp_guard *g, struct dvv_cookie_tc_counters *out);
/* The SYN cookie mode in force (enum dvv_syncookie_mode): OFF after a fallback. */
int xdp_guard_cookie_mode(const struct xdp_guard *g);
/* "off" | "flood" | "always" -> enum dvv_syncookie_mode, or -EINVAL. */
int xdp_syncookie_mode_parse(const char *s);

#endif
