/* client/cmd.h: the account subcommands of dvv, talking to the DVV API (dvv-api) over
 * client/http.c and keeping the result in the credentials file (client/creds.c):
 *
 *   dvv login [--api URL] [--token T | --token-file F | --email E] [--ca FILE]
 *   dvv logout
 *   dvv tunnels [--api URL] [--ca FILE] [--json]        list the account's tunnels
 *   dvv tunnels use ID                                   mint a token for ID and run with it
 *   dvv tunnels create                                   a new tunnel on the account
 *
 * Passwords come only from DVV_PASSWORD or the terminal (no echo); tokens and sessions are
 * never printed. Exit statuses: 0 done, 1 failure, 2 usage error, 3 the API refused the
 * credentials (log in again). */
#ifndef DVV_CMD_H
#define DVV_CMD_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define AGENT_DEFAULT_API "https://api.dvv.one"

/* Whether argv[1] names a subcommand. */
bool agent_cmd_is(int argc, char **argv);
/* Run it; returns the process exit status. */
int agent_cmd_main(int argc, char **argv);

/* The claim name of a JWT's payload, read without verifying the signature (the relay and the
 * API verify; the agent only shows it): 0 with out filled, -EINVAL when absent or malformed. */
int agent_jwt_claim(const char *jwt, const char *name, char *out, size_t cap);
/* The whole payload of a JWT as a JSON object (the caller decrefs), read the same unverified
 * way; NULL when malformed. */
json_t *agent_jwt_payload(const char *jwt);

#endif
