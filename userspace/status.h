/* The edge-cached server status: what an agent's CTL_STATUS carries (its local server's Status
 * Response JSON), cleaned before it is stored in Redis, and the "offline - back soon" answers the
 * relay builds from the stored copy while the tunnel is offline, migrating or reconnecting.
 *
 * Contract: every function is pure (no relay state), takes untrusted bytes with their length,
 * bounds everything it keeps and allocates its result (the caller frees it). The stored form is
 * always the output of status_sanitize(): a JSON object with at most version{name,protocol},
 * players{max,online}, description and favicon, STATUS_STORED_MAX bytes at most. */
#ifndef DVV_STATUS_H
#define DVV_STATUS_H

#include <stddef.h>
#include <stdint.h>

#define STATUS_VERSION_NAME_MAX 64	   /* bytes of version.name kept */
#define STATUS_DESC_MAX 4096		   /* serialized description kept as is up to this */
#define STATUS_FAVICON_MAX (24 * 1024)	   /* the whole "data:image/png;base64,..." string */
#define STATUS_STORED_MAX (32 * 1024)	   /* the whole sanitized object */
#define STATUS_MOTD_TEXT_MAX 256	   /* plain MOTD text carried into the offline answer */
#define STATUS_FAVICON_PREFIX "data:image/png;base64,"
#define STATUS_OFFLINE_LINE "offline - back soon"

/* Keep only what the relay may show (see above) from the agent's JSON. Returns 0 and a
 * NUL-terminated compact JSON object in *out (*outlen bytes, free()), or -EINVAL with err set
 * (not JSON, not an object), -ENOMEM. Fields of the wrong type or over their bound are dropped,
 * a description over STATUS_DESC_MAX is replaced by its plain text (bounded). */
int status_sanitize(const char *json, size_t len, char **out, size_t *outlen, char *err,
		    size_t errlen);

/* The plain text of a chat component (string, {"text","extra"} object or array), at most
 * cap-1 bytes, cut on a UTF-8 boundary, depth bounded. Returns the length written. */
size_t status_component_text(const char *json, size_t len, char *out, size_t cap);

/* The answer to a status ping from a stored status: description "offline - back soon" with the
 * original MOTD text on the next line, players.online 0 (max kept), version "Offline" with
 * protocol -1 (the vanilla client then shows "Offline" in red where the player count goes),
 * favicon kept. 0 and *out (free()), or -EINVAL / -ENOMEM. */
int status_render_offline(const char *stored, size_t len, char **out, size_t *outlen);

/* The same answer as a legacy 0xFF kick ("\xa71" form): one line of MOTD. Bytes written to out,
 * 0 if it does not fit or stored is not a status object. */
size_t status_render_legacy(const char *stored, size_t len, int32_t protocol, uint8_t *out,
			    size_t cap);

/* Wrap a status JSON in the Status Response packet (length, id 0x00, String). Bytes written, 0
 * if cap is too small. */
size_t status_packet(const char *json, size_t len, uint8_t *out, size_t cap);

#endif
