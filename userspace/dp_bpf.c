/* Placeholder until the SOCKHASH plane lands: reports BPF as unavailable so "auto" falls back. */
#include "dataplane.h"

#include <errno.h>
#include <unistd.h>

static int bpf_start(struct dataplane *dp, const struct relay_cfg *cfg) { return -ENOSYS; }
static int bpf_join(struct dataplane *dp, int player_fd, int agent_fd, uint64_t key)
{
	close(player_fd);
	close(agent_fd);
	return -ENOSYS;
}
static void bpf_stop(struct dataplane *dp) {}

const struct dataplane_ops dp_bpf_ops = {
	.name = "bpf", .start = bpf_start, .join = bpf_join, .stop = bpf_stop};
