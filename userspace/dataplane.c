/* Data-plane selection (dataplane.h): bpf, userspace, or auto (bpf when it loads and passes its
 * self-test, else userspace with a log line saying why). */
#include "dataplane.h"
#include "config.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- live players per tunnel ---- */

#define PLAYERS_BUCKETS 4096

struct players_ent {
	struct players_ent *next;
	uint64_t key;
	uint32_t n;
};

static pthread_mutex_t players_lock = PTHREAD_MUTEX_INITIALIZER;
static struct players_ent *players_tab[PLAYERS_BUCKETS];

static struct players_ent **players_slot(uint64_t key)
{
	struct players_ent **pp = &players_tab[(key ^ (key >> 29)) % PLAYERS_BUCKETS];
	while (*pp && (*pp)->key != key)
		pp = &(*pp)->next;
	return pp;
}

void dp_players_add(uint64_t key)
{
	pthread_mutex_lock(&players_lock);
	struct players_ent **pp = players_slot(key);
	if (!*pp && (*pp = calloc(1, sizeof(**pp))))
		(*pp)->key = key;
	if (*pp)
		(*pp)->n++; /* out of memory: uncounted, and dp_players_done finds nothing */
	pthread_mutex_unlock(&players_lock);
}

void dp_players_done(uint64_t key)
{
	pthread_mutex_lock(&players_lock);
	struct players_ent **pp = players_slot(key), *e = *pp;
	if (e && --e->n == 0) {
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&players_lock);
}

uint32_t dp_players(uint64_t key)
{
	pthread_mutex_lock(&players_lock);
	struct players_ent *e = *players_slot(key);
	uint32_t n = e ? e->n : 0;
	pthread_mutex_unlock(&players_lock);
	return n;
}

int dataplane_join(struct dataplane *dp, int player_fd, int agent_fd, uint64_t tunnel_key)
{
	dp_players_add(tunnel_key);
	return dp->ops->join(dp, player_fd, agent_fd, tunnel_key);
}

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
