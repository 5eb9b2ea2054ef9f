/* The edge-cached server status (status.h is the contract): sanitize the agent's Status Response
 * JSON before it is stored, and render the offline answers from the stored copy. The agent is not
 * trusted: its JSON is parsed with jansson (which bounds nesting itself), every kept field is
 * type-checked and bounded, everything else is dropped. */
#include "status.h"
#include "mc.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPONENT_DEPTH_MAX 16 /* chat components nested deeper than this add no text */

static bool int32_value(const json_t *v, json_int_t *out)
{
	if (!json_is_integer(v))
		return false;
	json_int_t n = json_integer_value(v);
	if (n < INT32_MIN || n > INT32_MAX)
		return false;
	*out = n;
	return true;
}

/* Append s (n bytes) to out[*len], never past cap-1, cutting on a UTF-8 boundary. */
static void append(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
	if (*len + 1 >= cap)
		return;
	size_t room = cap - 1 - *len;
	if (n > room) {
		n = room;
		/* back off continuation bytes so a multi-byte character is never split */
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(out + *len, s, n);
	*len += n;
	out[*len] = 0;
}

static void component_text(const json_t *c, int depth, char *out, size_t cap, size_t *len)
{
	if (depth > COMPONENT_DEPTH_MAX || *len + 1 >= cap)
		return;
	if (json_is_string(c)) {
		append(out, cap, len, json_string_value(c), json_string_length(c));
		return;
	}
	if (json_is_array(c)) {
		size_t i;
		const json_t *e;
		json_array_foreach(c, i, e)
			component_text(e, depth + 1, out, cap, len);
		return;
	}
	if (!json_is_object(c))
		return;
	const json_t *text = json_object_get(c, "text");
	if (json_is_string(text))
		append(out, cap, len, json_string_value(text), json_string_length(text));
	const json_t *extra = json_object_get(c, "extra");
	if (json_is_array(extra))
		component_text(extra, depth + 1, out, cap, len);
}

static size_t text_of(const json_t *c, char *out, size_t cap)
{
	size_t len = 0;
	if (!cap)
		return 0;
	out[0] = 0;
	component_text(c, 0, out, cap, &len);
	return len;
}

size_t status_component_text(const char *json, size_t len, char *out, size_t cap)
{
	json_t *c = json_loadb(json, len, JSON_DECODE_ANY, NULL);
	if (cap)
		out[0] = 0;
	if (!c)
		return 0;
	size_t n = text_of(c, out, cap);
	json_decref(c);
	return n;
}

/* The serialized size of v, or SIZE_MAX when it cannot be serialized. */
static size_t dumped_size(const json_t *v)
{
	size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
	return n ? n : SIZE_MAX;
}

/* The description as kept: a string or component up to STATUS_DESC_MAX serialized, else its
 * plain text (bounded); NULL to drop it. Returns a new reference. */
static json_t *keep_description(const json_t *d)
{
	if (!json_is_string(d) && !json_is_object(d) && !json_is_array(d))
		return NULL;
	if (dumped_size(d) <= STATUS_DESC_MAX)
		return json_deep_copy(d);
	char text[STATUS_MOTD_TEXT_MAX];
	text_of(d, text, sizeof(text));
	return json_string(text);
}

static int set_new(json_t *o, const char *key, json_t *v)
{
	return v ? json_object_set_new(o, key, v) : -1;
}

int status_sanitize(const char *json, size_t len, char **out, size_t *outlen, char *err,
		    size_t errlen)
{
	int rc = -ENOMEM;
	json_t *in = NULL, *o = NULL;
	json_error_t jerr;
	json_int_t n;
	*out = NULL;
	*outlen = 0;
	in = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!in || !json_is_object(in)) {
		snprintf(err, errlen, "status is not a JSON object%s%s", in ? "" : ": ",
			 in ? "" : jerr.text);
		rc = -EINVAL;
		goto out;
	}
	if (!(o = json_object()))
		goto out;
	const json_t *ver = json_object_get(in, "version");
	if (json_is_object(ver)) {
		json_t *v = json_object();
		const json_t *name = json_object_get(ver, "name");
		if (!v || json_object_set_new(o, "version", v))
			goto out;
		if (json_is_string(name) && json_string_length(name) <= STATUS_VERSION_NAME_MAX &&
		    set_new(v, "name", json_stringn(json_string_value(name), json_string_length(name))))
			goto out;
		if (int32_value(json_object_get(ver, "protocol"), &n) &&
		    set_new(v, "protocol", json_integer(n)))
			goto out;
	}
	const json_t *pl = json_object_get(in, "players");
	if (json_is_object(pl)) {
		json_t *p = json_object();
		if (!p || json_object_set_new(o, "players", p))
			goto out;
		if (int32_value(json_object_get(pl, "max"), &n) && set_new(p, "max", json_integer(n)))
			goto out;
		if (int32_value(json_object_get(pl, "online"), &n) &&
		    set_new(p, "online", json_integer(n)))
			goto out;
	}
	const json_t *desc = json_object_get(in, "description");
	if (desc) {
		json_t *d = keep_description(desc);
		if (d && json_object_set_new(o, "description", d))
			goto out;
	}
	const json_t *fav = json_object_get(in, "favicon");
	if (json_is_string(fav) && json_string_length(fav) <= STATUS_FAVICON_MAX &&
	    !strncmp(json_string_value(fav), STATUS_FAVICON_PREFIX, strlen(STATUS_FAVICON_PREFIX)) &&
	    set_new(o, "favicon", json_stringn(json_string_value(fav), json_string_length(fav))))
		goto out;
	char *s = json_dumps(o, JSON_COMPACT);
	if (!s)
		goto out;
	if (strlen(s) > STATUS_STORED_MAX) {
		/* cannot happen with the bounds above (escaping aside): drop the favicon first */
		free(s);
		json_object_del(o, "favicon");
		if (!(s = json_dumps(o, JSON_COMPACT)))
			goto out;
		if (strlen(s) > STATUS_STORED_MAX) {
			free(s);
			snprintf(err, errlen, "status too large");
			rc = -E2BIG;
			goto out;
		}
	}
	*out = s;
	*outlen = strlen(s);
	rc = 0;
out:
	if (rc == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	json_decref(o);
	json_decref(in);
	return rc;
}

int status_render_offline(const char *stored, size_t len, char **out, size_t *outlen)
{
	int rc = -ENOMEM;
	json_t *in = NULL, *o = NULL;
	char motd[STATUS_MOTD_TEXT_MAX], line[STATUS_MOTD_TEXT_MAX + 2];
	json_int_t max = 0;
	*out = NULL;
	in = json_loadb(stored, len, 0, NULL);
	if (!in || !json_is_object(in)) {
		rc = -EINVAL;
		goto out;
	}
	text_of(json_object_get(in, "description"), motd, sizeof(motd));
	snprintf(line, sizeof(line), "%s%s", motd[0] ? "\n" : "", motd);
	int32_value(json_object_get(json_object_get(in, "players"), "max"), &max);
	const json_t *fav = json_object_get(in, "favicon");
	o = json_pack("{s:{s:s,s:i},s:{s:I,s:i},s:{s:s,s:s,s:[{s:s,s:s}]}}",
		      "version", "name", "Offline", "protocol", -1,
		      "players", "max", max, "online", 0,
		      "description", "text", STATUS_OFFLINE_LINE, "color", "red", "extra",
		      "text", line, "color", "gray");
	if (!o)
		goto out;
	/* the stored copy was sanitized: a favicon there is a bounded data URL */
	if (json_is_string(fav) && json_object_set(o, "favicon", (json_t *)fav))
		goto out;
	char *s = json_dumps(o, JSON_COMPACT);
	if (!s)
		goto out;
	*out = s;
	*outlen = strlen(s);
	rc = 0;
out:
	json_decref(o);
	json_decref(in);
	return rc;
}

size_t status_render_legacy(const char *stored, size_t len, int32_t protocol, uint8_t *out,
			    size_t cap)
{
	char motd[STATUS_MOTD_TEXT_MAX], line[STATUS_MOTD_TEXT_MAX + 32];
	json_t *in = json_loadb(stored, len, 0, NULL);
	if (!in || !json_is_object(in)) {
		json_decref(in);
		return 0;
	}
	text_of(json_object_get(in, "description"), motd, sizeof(motd));
	json_decref(in);
	/* the legacy server list shows one line */
	for (char *c = motd; *c; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	snprintf(line, sizeof(line), "%s%s%s", STATUS_OFFLINE_LINE, motd[0] ? ": " : "", motd);
	return mc_build_legacy_kick(out, cap, protocol, "Offline", line);
}

size_t status_packet(const char *json, size_t len, uint8_t *out, size_t cap)
{
	uint8_t strlen_v[5], total_v[5];
	if (len > INT32_MAX - 16)
		return 0;
	int sl = mc_varint_write(strlen_v, (int32_t)len);
	size_t body = 1 + (size_t)sl + len;
	int tl = mc_varint_write(total_v, (int32_t)body);
	if (cap < (size_t)tl + body)
		return 0;
	memcpy(out, total_v, (size_t)tl);
	out[tl] = 0x00;
	memcpy(out + tl + 1, strlen_v, (size_t)sl);
	memcpy(out + tl + 1 + sl, json, len);
	return (size_t)tl + body;
}
