/* Request body validators: pure functions from the bytes of a request body to a validated struct
 * or an error (HTTP status, code, message), with no database and no I/O, so that the libFuzzer
 * target (tests/fuzz/fuzz_api_json.c) can run them on anything. Bounds: bodies are at most
 * API_BODY_MAX bytes (checked by the HTTP layer and again here), JSON depth is bounded by
 * jansson's own limit, every string has a maximum length. */
#ifndef DVV_API_BODY_H
#define DVV_API_BODY_H

#include <stdbool.h>
#include <stddef.h>

#define EMAIL_MAX    254
#define PASSWORD_MIN 10
#define PASSWORD_MAX 256
#define LABEL_MIN    3
#define LABEL_MAX    40

struct body_err {
	int status;
	char code[32];
	char message[160];
};

struct body_creds {
	char email[EMAIL_MAX + 1];
	char password[PASSWORD_MAX + 1];
};
struct body_token {
	char tunnel_id[65];
	int ttl_days;
};
struct body_label {
	char label[LABEL_MAX + 1];
};

/* signup (strict = true: password strength rules) and login (no rules but length bounds). */
int body_creds(const char *body, size_t len, bool signup, struct body_creds *out,
	       struct body_err *err);
int body_token(const char *body, size_t len, struct body_token *out, struct body_err *err);
/* POST /v1/tunnels: an empty object (or empty body). */
int body_empty_object(const char *body, size_t len, struct body_err *err);
/* PUT subdomain: {"label"}; checks the DNS label syntax and the reserved list (reserved may be
 * NULL: the built-in list only). */
int body_label(const char *body, size_t len, const char *const *reserved,
	       struct body_label *out, struct body_err *err);

bool body_valid_label(const char *s);
bool body_valid_email(const char *s);
bool body_reserved(const char *label, const char *const *extra);

#endif /* DVV_API_BODY_H */
