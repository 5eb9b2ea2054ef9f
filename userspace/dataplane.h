/* The data plane: once a player is joined to an agent data connection, something must move
 * their bytes until both sides are done. Two implementations sit behind this interface:
 * "userspace" (splice(2) on worker threads; works anywhere, the Railway plane) and "bpf"
 * (SOCKHASH + sk_skb in-kernel splice). The control plane only ever calls these functions. */
#ifndef DVV_DATAPLANE_H
#define DVV_DATAPLANE_H

#include <stdint.h>

struct relay_cfg;
struct dataplane;

struct dataplane_ops {
	const char *name;
	int (*start)(struct dataplane *dp, const struct relay_cfg *cfg);
	/* Takes ownership of both fds (closes them on failure too). player_fd may already hold
	 * unread bytes (the peeked handshake): they are forwarded first. tunnel_key identifies
	 * the tunnel for per-tunnel accounting (bandwidth limits). */
	int (*join)(struct dataplane *dp, int player_fd, int agent_fd, uint64_t tunnel_key);
	/* Stop: tear down every pair and release resources. */
	void (*stop)(struct dataplane *dp);
	/* End every pair of tunnel_key (its players' connections close), asynchronously on the
	 * plane's threads: plan enforcement (revoked, blocked, bandwidth used up). 0 or -ENOMEM. */
	int (*kill)(struct dataplane *dp, uint64_t tunnel_key);
};

struct dataplane {
	const struct dataplane_ops *ops;
	void *priv;
};

extern const struct dataplane_ops dp_userspace_ops;
extern const struct dataplane_ops dp_bpf_ops; /* dp_bpf.c; start() fails cleanly without BPF */

/* Start the plane the configuration asks for; "auto" tries bpf (load + self-test) and falls
 * back to userspace with a log line saying why. */
int dataplane_select(struct dataplane *dp, const struct relay_cfg *cfg);

/* Live players per tunnel, for the plan's max_players and idle timeout: dataplane_join counts
 * the pair (+1) before handing it over, and a plane calls dp_players_done(key) wherever it
 * ends or drops a pair it was handed (the same places splices_active goes down). Any thread
 * (one mutex; called once per pair start and end, never per byte). */
int dataplane_join(struct dataplane *dp, int player_fd, int agent_fd, uint64_t tunnel_key);
void dp_players_add(uint64_t tunnel_key);
void dp_players_done(uint64_t tunnel_key);
uint32_t dp_players(uint64_t tunnel_key);

#endif
