/* Validates request bodies (signup, login, tokens, tunnels, subdomain) into fixed-size structs:
 * pure functions, no I/O, so they can be fuzzed. */
#include "body.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "api.h"

/* Labels nobody may reserve: names of our own services and names that look official. */
static const char *const body_builtin_reserved[] = {
	"www",	   "api",     "admin",	 "dvv",	  "mail",    "status",	 "dashboard", "app",
	"auth",	   "login",   "signup",	 "billing", "support", "help",	 "docs",      "blog",
	"relay",   "relays",  "root",	 "system", "staff",   "security", "abuse",    "postmaster",
	"hostmaster", "webmaster", "ftp", "smtp", "imap",   "pop",	 "ns1",	      "ns2",
	"mx",	   "cdn",     "static",	 "assets", "minecraft", "mojang", "test",     "localhost",
	NULL,
};

__attribute__((format(printf, 4, 5))) static int body_fail(struct body_err *err, int status,
							    const char *code, const char *fmt,
							    ...)
{
	va_list ap;

	err->status = status;
	snprintf(err->code, sizeof(err->code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* The body as a JSON object; NULL with err set. An empty body is not an object. */
static json_t *body_object(const char *body, size_t len, struct body_err *err)
{
	json_error_t jerr;
	json_t *j;

	if (len > API_BODY_MAX) {
		body_fail(err, 413, "too_large", "request body larger than %d bytes", API_BODY_MAX);
		return NULL;
	}
	j = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		body_fail(err, 400, "invalid_json", "body is not valid JSON: %.100s", jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		body_fail(err, 400, "invalid_json", "body must be a JSON object");
		return NULL;
	}
	return j;
}

/* Copy string field `key` (1..max bytes, no NUL inside) into dst. */
static int body_string(json_t *o, const char *key, size_t min, size_t max, char *dst,
		       struct body_err *err)
{
	json_t *v = json_object_get(o, key);
	size_t n;

	if (!v)
		return body_fail(err, 400, "invalid_field", "%s is required", key);
	if (!json_is_string(v))
		return body_fail(err, 400, "invalid_field", "%s must be a string", key);
	n = json_string_length(v);
	if (n < min || n > max)
		return body_fail(err, 400, "invalid_field", "%s must be %zu to %zu bytes long", key,
				 min, max);
	if (memchr(json_string_value(v), '\0', n))
		return body_fail(err, 400, "invalid_field", "%s must not contain NUL", key);
	memcpy(dst, json_string_value(v), n + 1);
	return 0;
}

/* Unknown fields are refused so that a typo ("passwrd") is an error, not silently ignored. */
static int body_only(json_t *o, const char *const *allowed, struct body_err *err)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v) {
		int ok = 0;

		for (int i = 0; allowed[i]; i++)
			ok |= !strcmp(k, allowed[i]);
		if (!ok)
			return body_fail(err, 400, "invalid_field", "unknown field \"%.40s\"", k);
	}
	return 0;
}

bool body_valid_email(const char *s)
{
	const char *at = strchr(s, '@');
	size_t n = strlen(s);

	if (n < 3 || n > EMAIL_MAX || !at || at == s || strchr(at + 1, '@') || !at[1])
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == '"' || c == '\\')
			return false;
	}
	return strchr(at + 1, '.') != NULL && at[1] != '.' && s[n - 1] != '.';
}

int body_creds(const char *body, size_t len, bool signup, struct body_creds *out,
	       struct body_err *err)
{
	static const char *const allowed[] = { "email", "password", NULL };
	json_t *o = body_object(body, len, err);
	int ret = -1, classes = 0;

	if (!o)
		return -1;
	memset(out, 0, sizeof(*out));
	if (body_only(o, allowed, err) || body_string(o, "email", 1, EMAIL_MAX, out->email, err) ||
	    body_string(o, "password", 1, PASSWORD_MAX, out->password, err))
		goto out;
	if (!body_valid_email(out->email)) {
		body_fail(err, 400, "invalid_field", "email is not an email address");
		goto out;
	}
	if (signup) {
		size_t n = strlen(out->password);
		bool lo = false, up = false, dig = false, oth = false;

		for (size_t i = 0; i < n; i++) {
			char c = out->password[i];

			lo |= c >= 'a' && c <= 'z';
			up |= c >= 'A' && c <= 'Z';
			dig |= c >= '0' && c <= '9';
			oth |= !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				 (c >= '0' && c <= '9'));
		}
		classes = lo + up + dig + oth;
		if (n < PASSWORD_MIN) {
			body_fail(err, 422, "weak_password", "password must be at least %d characters",
				  PASSWORD_MIN);
			goto out;
		}
		/* a long passphrase of one class is fine; a short one needs some variety */
		if (n < 16 && classes < 2) {
			body_fail(err, 422, "weak_password",
				  "password must mix letters, digits or symbols (or be 16+ characters)");
			goto out;
		}
	}
	ret = 0;
out:
	json_decref(o);
	if (ret)
		memset(out->password, 0, sizeof(out->password));
	return ret;
}

int body_token(const char *body, size_t len, struct body_token *out, struct body_err *err)
{
	static const char *const allowed[] = { "tunnel_id", "ttl_days", NULL };
	json_t *o = body_object(body, len, err), *ttl;
	int ret = -1;

	if (!o)
		return -1;
	memset(out, 0, sizeof(*out));
	out->ttl_days = 90;
	if (body_only(o, allowed, err) || body_string(o, "tunnel_id", 1, 64, out->tunnel_id, err))
		goto out;
	ttl = json_object_get(o, "ttl_days");
	if (ttl && (!json_is_integer(ttl) || json_integer_value(ttl) < 1 ||
		    json_integer_value(ttl) > 365)) {
		body_fail(err, 400, "invalid_field", "ttl_days must be an integer in 1..365");
		goto out;
	}
	if (ttl)
		out->ttl_days = (int)json_integer_value(ttl);
	ret = 0;
out:
	json_decref(o);
	return ret;
}

int body_empty_object(const char *body, size_t len, struct body_err *err)
{
	static const char *const allowed[] = { NULL };
	json_t *o;
	int ret;

	if (len == 0)
		return 0;
	o = body_object(body, len, err);
	if (!o)
		return -1;
	ret = body_only(o, allowed, err);
	json_decref(o);
	return ret;
}

bool body_valid_label(const char *s)
{
	size_t n = strlen(s);

	if (n < LABEL_MIN || n > LABEL_MAX || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	/* "xn--" labels are punycode: they could render as a lookalike of another name */
	return !(n >= 4 && s[2] == '-' && s[3] == '-');
}

bool body_reserved(const char *label, const char *const *extra)
{
	for (int i = 0; body_builtin_reserved[i]; i++)
		if (!strcmp(label, body_builtin_reserved[i]))
			return true;
	for (int i = 0; extra && extra[i]; i++)
		if (!strcmp(label, extra[i]))
			return true;
	return false;
}

int body_label(const char *body, size_t len, const char *const *reserved,
	       struct body_label *out, struct body_err *err)
{
	static const char *const allowed[] = { "label", NULL };
	json_t *o = body_object(body, len, err), *v;
	int ret = -1;

	if (!o)
		return -1;
	memset(out, 0, sizeof(*out));
	if (body_only(o, allowed, err))
		goto out;
	v = json_object_get(o, "label");
	if (!json_is_string(v)) {
		body_fail(err, 400, "invalid_field", "label is required (a string)");
		goto out;
	}
	if (json_string_length(v) > LABEL_MAX || memchr(json_string_value(v), '\0',
							  json_string_length(v)) ||
	    !body_valid_label(json_string_value(v))) {
		body_fail(err, 422, "invalid_label",
			  "a label is %d to %d of a-z, 0-9 and '-', not starting or ending with "
			  "'-' (and not xn--)",
			  LABEL_MIN, LABEL_MAX);
		goto out;
	}
	memcpy(out->label, json_string_value(v), json_string_length(v) + 1);
	if (body_reserved(out->label, reserved)) {
		body_fail(err, 422, "reserved_name", "'%s' is reserved", out->label);
		goto out;
	}
	ret = 0;
out:
	json_decref(o);
	return ret;
}
