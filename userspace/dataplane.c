/* Data-plane selection (dataplane.h): bpf, userspace, or auto (bpf when it loads and passes its
 * self-test, else userspace with a log line saying why). */
#include "dataplane.h"
#include "config.h"
#include "log.h"

#include <errno.h>
#include <string.h>

int dataplane_select(struct dataplane *dp, const struct relay_cfg *cfg)
{
	int rc;
	if (!strcmp(cfg->dataplane, "bpf") || !strcmp(cfg->dataplane, "auto")) {
		dp->ops = &dp_bpf_ops;
		rc = dp->ops->start(dp, cfg);
		if (rc == 0)
			return 0;
		if (!strcmp(cfg->dataplane, "bpf")) {
			pr_err("data plane bpf unavailable (%s) and --dataplane bpf was asked for",
			       strerror(-rc));
			dp->ops = NULL;
			return rc;
		}
		pr_warn("data plane bpf unavailable (%s): falling back to userspace splice(2)",
			strerror(-rc));
	}
	dp->ops = &dp_userspace_ops;
	dp->priv = NULL;
	rc = dp->ops->start(dp, cfg);
	if (rc) {
		pr_err("data plane userspace: %s", strerror(-rc));
		dp->ops = NULL;
	}
	return rc;
}

int dp_tunnel_bytes(struct dataplane *dp, uint64_t tunnel_key, uint64_t *to_agent,
		    uint64_t *to_player)
{
	*to_agent = *to_player = 0;
	if (!dp->ops || !dp->priv)
		return -ENODEV;
	return dp->ops->tunnel_bytes(dp, tunnel_key, to_agent, to_player);
}
