/* Billing periods of a plan (plan.h). */
#include "plan.h"

#include <time.h>

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
