/* The data plane: once a player is joined to an agent data connection, something must move
 * their bytes until both sides are done. Two implementations sit behind this interface:
 * "userspace" (splice(2) on worker threads; works anywhere, the Railway plane) and "bpf"
 * (SOCKHASH + sk_skb in-kernel splice). The control plane only ever calls these functions. */
#ifndef DVV_DATAPLANE_H
#define DVV_DATAPLANE_H

#include <stdint.h>

struct relay_cfg;
struct dataplane;
struct dp_acct;

struct dataplane_ops {
	const char *name;
	int (*start)(struct dataplane *dp, const struct relay_cfg *cfg);
	/* Takes ownership of both fds (closes them on failure too). player_fd may already hold
	 * unread bytes (the peeked handshake): they are forwarded first. tunnel_key identifies
	 * the tunnel for per-tunnel accounting (dp_acct.h: bandwidth, players); 0 = not counted
	 * (a player forwarded to the relay that holds its tunnel, which counts it). Called on the
	 * control loop only. */
	int (*join)(struct dataplane *dp, int player_fd, int agent_fd, uint64_t tunnel_key);
	/* Bytes relayed so far for the tunnel, each way, by every path of the plane (kernel,
	 * userspace fallbacks): cumulative since its accounting entry was created. 0, or -ENOENT
	 * when the tunnel has no entry (no pair and no holder). Any thread. */
	int (*tunnel_bytes)(struct dataplane *dp, uint64_t tunnel_key, uint64_t *to_agent,
			    uint64_t *to_player);
	/* Keep the tunnel's accounting entry (and its counts) alive until released, whether or
	 * not it has pairs: the holder reads the final counts after acct->pairs reached 0, then
	 * releases. NULL with errno set (ENOSPC: table full). Control loop. */
	struct dp_acct *(*acct_hold)(struct dataplane *dp, uint64_t tunnel_key);
	void (*acct_release)(struct dataplane *dp, struct dp_acct *a);
	/* Stop: tear down every pair and release resources. */
	void (*stop)(struct dataplane *dp);
	/* End every pair of tunnel_key (its players' connections close), asynchronously on the
	 * plane's threads: plan enforcement (revoked, blocked, bandwidth used up). 0 or -errno. */
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

/* The plane's tunnel_bytes op (see above). */
int dp_tunnel_bytes(struct dataplane *dp, uint64_t tunnel_key, uint64_t *to_agent,
		    uint64_t *to_player);

#endif
