/* Loads and validates the plans file (deploy/plans.json): tiers, limits and prices. */
#include "plans.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define PLANS_FILE_MAX (256 * 1024)

__attribute__((format(printf, 3, 4))) static int plans_fail(char *err, size_t errlen,
							     const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

bool plans_valid_tier(const char *s)
{
	size_t i, n = s ? strlen(s) : 0;

	if (n < 1 || n > 16)
		return false;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
		      s[i] == '-'))
			return false;
	return true;
}

/* An integer field in [min, max]; absent = def (def < 0: required). */
static int plans_int(json_t *o, const char *tier, const char *key, long long min, long long max,
		     long long def, long long *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	if (!v) {
		if (def < 0)
			return plans_fail(err, errlen, "plan %s: %s is required", tier, key);
		*out = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return plans_fail(err, errlen, "plan %s: %s must be an integer in %lld..%lld", tier,
				  key, min, max);
	*out = json_integer_value(v);
	return 0;
}

static int plans_str(json_t *o, const char *tier, const char *key, char *dst, size_t cap,
		     bool required, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	if (!v) {
		if (required)
			return plans_fail(err, errlen, "plan %s: %s is required", tier, key);
		dst[0] = '\0';
		return 0;
	}
	if (!json_is_string(v) || json_string_length(v) >= cap)
		return plans_fail(err, errlen, "plan %s: %s must be a string of at most %zu bytes",
				  tier, key, cap - 1);
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

static int plans_one(const char *tier, json_t *o, struct plan *pl, char *err, size_t errlen)
{
	long long v[7];
	json_t *cn;
	int ret;

	if (!plans_valid_tier(tier))
		return plans_fail(err, errlen, "tier name '%.32s' must be 1-16 of [a-z0-9_-]", tier);
	if (!json_is_object(o))
		return plans_fail(err, errlen, "plan %s must be an object", tier);
	memset(pl, 0, sizeof(*pl));
	strcpy(pl->tier, tier);
	ret = plans_str(o, tier, "title", pl->title, sizeof(pl->title), true, err, errlen);
	ret = ret ?: plans_str(o, tier, "currency", pl->currency, sizeof(pl->currency), false, err,
			       errlen);
	ret = ret ?: plans_str(o, tier, "stripe_price", pl->stripe_price, sizeof(pl->stripe_price),
			       false, err, errlen);
	ret = ret ?: plans_int(o, tier, "max_tunnels", 1, 100000, -1, &v[0], err, errlen);
	ret = ret ?: plans_int(o, tier, "max_players", 0, 1000000, -1, &v[1], err, errlen);
	ret = ret ?: plans_int(o, tier, "idle_timeout_s", 0, 365LL * 86400, -1, &v[2], err, errlen);
	ret = ret ?: plans_int(o, tier, "priority", 0, 1, 0, &v[3], err, errlen);
	ret = ret ?: plans_int(o, tier, "bandwidth_bytes", 0, (1LL << 62), -1, &v[4], err, errlen);
	ret = ret ?: plans_int(o, tier, "price_cents", 0, 100000000, 0, &v[5], err, errlen);
	if (ret)
		return ret;
	cn = json_object_get(o, "custom_names");
	if (cn && !json_is_boolean(cn))
		return plans_fail(err, errlen, "plan %s: custom_names must be true or false", tier);
	pl->custom_names = json_is_true(cn);
	pl->max_tunnels = (int)v[0];
	pl->max_players = (int)v[1];
	pl->idle_timeout_s = (int)v[2];
	pl->priority = (int)v[3];
	pl->bandwidth_bytes = (uint64_t)v[4];
	pl->price_cents = (int)v[5];
	if (!pl->currency[0])
		strcpy(pl->currency, "eur");
	return 0;
}

int plans_parse(const char *text, size_t len, struct plans *out, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *plans, *o, *def;
	const char *tier;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	out->def = -1;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return plans_fail(err, errlen, "not JSON: %s (line %d)", jerr.text, jerr.line);
	plans = json_object_get(root, "plans");
	def = json_object_get(root, "default");
	if (!json_is_object(plans) || json_object_size(plans) == 0) {
		ret = plans_fail(err, errlen, "\"plans\" must be a non-empty object");
		goto out;
	}
	if (json_object_size(plans) > PLANS_MAX) {
		ret = plans_fail(err, errlen, "at most %d plans", PLANS_MAX);
		goto out;
	}
	json_object_foreach(plans, tier, o) {
		ret = plans_one(tier, o, &out->plan[out->n], err, errlen);
		if (ret)
			goto out;
		out->n++;
	}
	if (!json_is_string(def) || !plans_find(out, json_string_value(def))) {
		ret = plans_fail(err, errlen, "\"default\" must name one of the plans");
		goto out;
	}
	out->def = (int)(plans_find(out, json_string_value(def)) - out->plan);
out:
	json_decref(root);
	return ret;
}

int plans_load(const char *path, struct plans *out, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	int ret;

	f = fopen(path, "re");
	if (!f)
		return plans_fail(err, errlen, "%s: %s", path, strerror(errno));
	buf = malloc(PLANS_FILE_MAX + 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	len = fread(buf, 1, PLANS_FILE_MAX + 1, f);
	if (ferror(f) || len > PLANS_FILE_MAX) {
		ret = plans_fail(err, errlen, "%s: unreadable or larger than %d bytes", path,
				 PLANS_FILE_MAX);
		goto out;
	}
	ret = plans_parse(buf, len, out, err, errlen);
out:
	free(buf);
	fclose(f);
	return ret;
}

const struct plan *plans_find(const struct plans *p, const char *tier)
{
	for (int i = 0; tier && i < p->n; i++)
		if (!strcmp(p->plan[i].tier, tier))
			return &p->plan[i];
	return NULL;
}

const struct plan *plans_by_stripe_price(const struct plans *p, const char *price)
{
	for (int i = 0; price && price[0] && i < p->n; i++)
		if (!strcmp(p->plan[i].stripe_price, price))
			return &p->plan[i];
	return NULL;
}

const struct plan *plans_default(const struct plans *p)
{
	return p->def >= 0 ? &p->plan[p->def] : NULL;
}
