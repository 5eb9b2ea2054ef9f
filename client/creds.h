/* client/creds.h: the agent's stored credentials, $XDG_CONFIG_HOME/dvv/agent.json (default
 * ~/.config/dvv/agent.json), written by `dvv login` / `dvv tunnels use`, read by plain `dvv`.
 *
 *   {"api": URL, "token": JWT|null, "session": S|null, "relays": {"eu": "host:port", ...},
 *    "ca_pem": PEM|null, "tunnel": "t_..."|null}
 *
 * Contract:
 *  - the directory is created 0700 (an existing one is tightened to 0700); the file is written
 *    0600, atomically (temp file in the same directory, fsync, rename, fsync of the directory);
 *  - a file that grants any permission to group or others, or that another user owns, is
 *    refused (with how to fix it): it may hold a token someone else could have read;
 *  - the file is at most CREDS_FILE_MAX bytes and every field is validated on load and save;
 *  - secrets (token, session) are wiped from memory by creds_clear and never logged. */
#ifndef DVV_CREDS_H
#define DVV_CREDS_H

#include "agent.h"

#include <stdbool.h>
#include <stddef.h>

#define CREDS_FILE_MAX (256 * 1024)
#define CREDS_CA_MAX (64 * 1024)
#define CREDS_SESSION_MAX 128
#define CREDS_API_MAX 512
#define CREDS_ID_MAX 64

struct agent_creds {
	char api[CREDS_API_MAX];
	char token[CTL_TOKEN_MAX + 1];	      /* "" = none */
	char session[CREDS_SESSION_MAX + 1]; /* "" = none */
	struct agent_region relays[AGENT_MAX_REGIONS];
	unsigned nrelays;
	char *ca_pem; /* malloc'd, or NULL */
	char tunnel[CREDS_ID_MAX + 1]; /* "" = none */
};

/* The file's path: $XDG_CONFIG_HOME/dvv/agent.json, else $HOME/.config/dvv/agent.json. Also
 * the directory when dir is not NULL. 0 or -ENOENT (neither variable set). */
int creds_path(char *path, size_t cap, char *dir, size_t dircap, char *err, size_t errlen);
/* Load path into c (zeroed first). -ENOENT when there is no file (err says so), -EPERM when
 * its mode or owner is unsafe, -EINVAL when it is malformed, -EFBIG when too large. */
int creds_load(const char *path, struct agent_creds *c, char *err, size_t errlen);
/* Validate and write c to path atomically, creating its directory (dir) 0700. 0 or -errno. */
int creds_save(const char *dir, const char *path, const struct agent_creds *c, char *err,
	       size_t errlen);
/* Validate the fields (what creds_save checks). 0 or -EINVAL with the field in err. */
int creds_check(const struct agent_creds *c, char *err, size_t errlen);
/* Wipe the secrets and free ca_pem; c can be reused. */
void creds_clear(struct agent_creds *c);

/* Field checks shared with the subcommands. */
bool creds_session_ok(const char *s); /* [A-Za-z0-9_-]{1,128} (base64url) */
bool creds_id_ok(const char *s);      /* [A-Za-z0-9_-]{1,64}: tunnel, token and user ids */

#endif
