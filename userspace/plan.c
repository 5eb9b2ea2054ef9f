/* A user's plan as the relay applies it (plan.h): billing periods and reading the plan hash the
 * API writes. */
#include "plan.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void plan_from_claim(struct plan_limits *p, const char *tier)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->tier, sizeof(p->tier), "%s", tier && tier[0] ? tier : "free");
	p->custom_names = !strcmp(p->tier, "paid");
}

/* A decimal integer in 0..max, the whole string. */
static int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	char buf[24];
	char *end;
	if (len == 0 || len >= sizeof(buf) || s[0] == '-' || s[0] == '+' || s[0] == ' ')
		return -1;
	memcpy(buf, s, len);
	buf[len] = 0;
	errno = 0;
	unsigned long long v = strtoull(buf, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

static bool field_is(const char *f, size_t len, const char *name)
{
	return strlen(name) == len && !memcmp(f, name, len);
}

int plan_from_hash(struct plan_limits *p, const char *const *kv, const size_t *len, size_t n,
		   char *err, size_t errlen)
{
	struct plan_limits np;
	bool have_tier = false;
	if (n == 0)
		return -ENOENT;
	memset(&np, 0, sizeof(np));
	np.from_redis = true;
	for (size_t i = 0; i + 1 < n; i += 2) {
		const char *f = kv[i], *v = kv[i + 1];
		size_t fl = len[i], vl = len[i + 1];
		uint64_t x = 0;
		int bad = 0;
		if (field_is(f, fl, "tier")) {
			bool ok = vl >= 1 && vl <= 16;
			for (size_t k = 0; ok && k < vl; k++)
				ok = (v[k] >= 'a' && v[k] <= 'z') || (v[k] >= '0' && v[k] <= '9') ||
				     v[k] == '_' || v[k] == '-';
			if (!ok)
				bad = 1;
			else {
				memcpy(np.tier, v, vl);
				np.tier[vl] = 0;
				have_tier = true;
			}
		} else if (field_is(f, fl, "status")) {
			if (vl >= sizeof(np.status))
				bad = 1;
			else {
				memcpy(np.status, v, vl);
				np.status[vl] = 0;
			}
		} else if (field_is(f, fl, "custom_names")) {
			bad = parse_u64(v, vl, 1, &x);
			np.custom_names = x == 1;
		} else if (field_is(f, fl, "max_tunnels")) {
			bad = parse_u64(v, vl, UINT32_MAX, &x);
			np.max_tunnels = (uint32_t)x;
		} else if (field_is(f, fl, "max_players")) {
			bad = parse_u64(v, vl, UINT32_MAX, &x);
			np.max_players = (uint32_t)x;
		} else if (field_is(f, fl, "idle_timeout_s")) {
			bad = parse_u64(v, vl, UINT32_MAX, &x);
			np.idle_timeout_s = (uint32_t)x;
		} else if (field_is(f, fl, "priority")) {
			bad = parse_u64(v, vl, 1, &x);
			np.priority = (uint32_t)x;
		} else if (field_is(f, fl, "bandwidth_bytes")) {
			bad = parse_u64(v, vl, UINT64_MAX, &x);
			np.bandwidth_bytes = x;
		} else if (field_is(f, fl, "period_start")) {
			bad = parse_u64(v, vl, INT64_MAX, &x);
			np.period_start = (int64_t)x;
		} else if (field_is(f, fl, "period_end")) {
			bad = parse_u64(v, vl, INT64_MAX, &x);
			np.period_end = (int64_t)x;
		} else if (field_is(f, fl, "version")) {
			bad = parse_u64(v, vl, UINT64_MAX, &x);
			np.version = x;
		}
		if (bad) {
			snprintf(err, errlen, "plan field %.*s has an invalid value", (int)(fl > 32 ? 32 : fl), f);
			return -EINVAL;
		}
	}
	if (!have_tier) {
		snprintf(err, errlen, "plan hash has no tier");
		return -EINVAL;
	}
	*p = np;
	return 0;
}

void plan_period(const struct plan_limits *p, int64_t now, int64_t *start, int64_t *end)
{
	if (p && p->period_start > 0 && p->period_end > p->period_start &&
	    now >= p->period_start && now < p->period_end) {
		*start = p->period_start;
		*end = p->period_end;
		return;
	}
	time_t t = (time_t)now;
	struct tm tm;
	gmtime_r(&t, &tm);
	tm.tm_mday = 1;
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	*start = (int64_t)timegm(&tm);
	tm.tm_mon += 1; /* timegm normalises December + 1 into January of the next year */
	*end = (int64_t)timegm(&tm);
}
