/* dvv: the agent users run next to their Minecraft server. main() only hands the account
 * subcommands to cmd.c, parses options, sets up signals and the output mode, and maps the
 * outcome to an exit status; the session lives in agent.c. */
#include "agent.h"
#include "cmd.h"
#include "creds.h"
#include "log.h"
#include "renew.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* Each player costs 2 sockets + 4 pipe ends: take whatever the hard limit allows. */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* --probe-regions: measure every region, print the table (or one JSON event), exit 0 if one
 * is reachable, 1 if none. */
static int probe_regions(const struct agent_config *cfg)
{
	struct agent_region_result res[AGENT_MAX_REGIONS];
	memset(res, 0, sizeof(res));
	signal(SIGPIPE, SIG_IGN);
	int rc = agent_regions_measure(cfg->regions, cfg->nregions, res);
	if (rc) {
		fprintf(stderr, "dvv: cannot measure the regions: %s\n", strerror(-rc));
		return AGENT_EXIT_FAIL;
	}
	int pick = agent_region_pick(res, cfg->nregions);
	agent_report_init(cfg->json, cfg->local);
	struct agent_event ev = {.type = AGENT_EV_REGIONS,
				 .regions = cfg->regions,
				 .results = res,
				 .nregions = cfg->nregions,
				 .picked = pick,
				 .previous = -1,
				 .probe_only = true};
	agent_report(&ev);
	agent_report_finish();
	return pick >= 0 ? AGENT_EXIT_OK : AGENT_EXIT_FAIL;
}

int main(int argc, char **argv)
{
	static struct agent_config cfg; /* static: it holds a 4 KB token buffer */
	struct agent *a = NULL;
	struct renew *renew = NULL;
	char err[512] = "";
	int sigfd = -1, code = AGENT_EXIT_FAIL;

	log_init("dvv", LOG_INFO);
	if (agent_cmd_is(argc, argv))
		return agent_cmd_main(argc, argv);
	int rc = agent_opts_parse(argc, argv, &cfg, err, sizeof(err));
	if (rc == AGENT_OPTS_HELP) {
		agent_opts_usage(stdout);
		return AGENT_EXIT_OK;
	}
	if (rc == AGENT_OPTS_VERSION) {
		printf("dvv %s (control protocol %d)\n", AGENT_VERSION, CTL_VERSION);
		return AGENT_EXIT_OK;
	}
	if (rc < 0) {
		fprintf(stderr, "dvv: %s\nTry 'dvv --help'.\n", err);
		return AGENT_EXIT_USAGE;
	}
	log_set_level((enum log_level)cfg.log_level);
	log_set_format((enum log_format)cfg.log_format);
	if (cfg.probe_only) {
		code = probe_regions(&cfg);
		agent_opts_free(&cfg);
		return code;
	}

	signal(SIGPIPE, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
	    (sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		pr_err("signals: %s", strerror(errno));
		goto out;
	}
	raise_nofile();

	rc = agent_new(&cfg, &a, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "dvv: %s\n", err);
		code = (rc == -EINVAL || rc == -EHOSTUNREACH) ? AGENT_EXIT_USAGE : AGENT_EXIT_FAIL;
		goto out;
	}
	/* a token from dvv login is renewed before it expires (renew.h) */
	if (cfg.from_creds) {
		char path[4200], e2[700];
		if (!creds_path(path, sizeof(path), NULL, 0, e2, sizeof(e2)) &&
		    (rc = renew_start(path, &renew)))
			pr_warn("token renewal off: %s", strerror(-rc));
		if (renew)
			agent_set_renew(a, renew);
	}
	agent_report_init(cfg.json, cfg.local);
	code = agent_run(a, sigfd);
	agent_report_finish();
	renew_stop(renew);
out:
	agent_free(a);
	if (sigfd >= 0)
		close(sigfd);
	agent_opts_free(&cfg);
	return code;
}
