/* Tunnels: create (within the plan's max_tunnels), list (with live state from Redis), delete
 * (revokes its tokens and blocks its id at the relays), and custom subdomains (DNS label rules,
 * reserved words, unique in PostgreSQL and against the owners the relays recorded in Redis). */
#ifndef DVV_API_TUNNELS_H
#define DVV_API_TUNNELS_H

#include <libpq-fe.h>

#include "api.h"

/* Insert a new tunnel for user_id inside the caller's transaction; id into out[23]. */
int tunnels_insert(PGconn *c, const char *user_id, char *id_out);

void tunnels_list(struct api *a, const struct api_req *r, struct api_resp *out);
void tunnels_create(struct api *a, const struct api_req *r, struct api_resp *out);
void tunnels_delete(struct api *a, const struct api_req *r, struct api_resp *out, const char *id);
void tunnels_set_label(struct api *a, const struct api_req *r, struct api_resp *out,
		       const char *id);
void tunnels_clear_label(struct api *a, const struct api_req *r, struct api_resp *out,
			 const char *id);

#endif /* DVV_API_TUNNELS_H */
