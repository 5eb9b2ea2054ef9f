/* XDP SYN guard: per-source SYN token buckets plus a per-port budget, allow/deny prefixes,
 * attached to the interfaces players and agents arrive on. bpf/xdp_guard.bpf.c is the program. */
#ifndef DVV_XDP_GUARD_H
#define DVV_XDP_GUARD_H

#include <stdint.h>

struct relay_cfg;
struct xdp_guard;

/* Attach to every interface in cfg->xdp_ifaces, protecting the two ports. Maps are pinned under
 * pin_dir. Returns 0 (and *out) or -errno with a logged reason. */
int xdp_guard_start(struct xdp_guard **out, const struct relay_cfg *cfg, uint16_t player_port,
		    uint16_t agent_port, const char *pin_dir);
void xdp_guard_stop(struct xdp_guard *g);

#endif
