/* dvv-relay: routes Minecraft players by hostname to agent tunnels. See docs/architecture.md. */
#include "config.h"
#include "log.h"
#include "relay.h"

#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	static struct relay r;
	int rc = relay_cfg_parse(&r.cfg, argc, argv);
	if (rc)
		return rc > 0 ? 0 : 2;
	log_init("dvv-relay", (enum log_level)r.cfg.log_level);
	log_set_format((enum log_format)r.cfg.log_format);
	rc = relay_init(&r);
	if (rc == 0)
		rc = relay_run(&r);
	relay_free(&r);
	/* a drain that ended (everyone gone, or the deadline) is a clean exit: status 0 */
	int status = rc ? 1 : 0;
	pr_info("exiting with status %d", status);
	return status;
}
