/* The autoscaler's decision (autoscale.h): thresholds held for a time, hysteresis on scale-in,
 * cool-down, min/max, one removal at a time. */
#include "autoscale.h"

int as_cfg_check(const struct as_cfg *c, const char **why)
{
	if (c->min < 1 || c->max < c->min) {
		*why = "want 1 <= min <= max";
		return -1;
	}
	if (!(c->in_frac > 0 && c->in_frac < c->out_frac && c->out_frac <= 1)) {
		*why = "want 0 < in < out <= 1";
		return -1;
	}
	return 0;
}

static uint64_t held(uint64_t *since, int cond, uint64_t now)
{
	if (!cond) {
		*since = 0;
		return 0;
	}
	if (!*since)
		*since = now;
	return now - *since;
}

static enum as_action change(struct as_state *st, int to, uint64_t now, int *target,
			     enum as_action a)
{
	st->desired = to;
	st->last_change_ms = now;
	st->above_since = st->below_since = 0;
	*target = to;
	return a;
}

enum as_action as_decide(const struct as_cfg *c, struct as_state *st, const struct as_sample *s,
			 uint64_t now, int *target, const char **why)
{
	double mid = (c->out_frac + c->in_frac) / 2;
	if (!st->desired) /* first sample: what runs now is the starting point */
		st->desired = s->active + s->draining > 0 ? s->active + s->draining : c->min;
	*target = st->desired;
	if (st->desired < c->min) {
		*why = "below min";
		return change(st, c->min, now, target, AS_OUT);
	}
	double util = s->capacity > 0 ? s->load / s->capacity : (s->active ? 0 : 1);
	double per = s->active ? s->capacity / s->active : 0;
	int above = util >= c->out_frac;
	/* after removing one average relay the rest would sit below the middle of the band */
	int below = util <= c->in_frac && s->active > 1 && s->capacity - per > 0 &&
		    s->load / (s->capacity - per) < mid;
	uint64_t up = held(&st->above_since, above, now);
	uint64_t down = held(&st->below_since, below && !s->draining, now);
	if (s->draining) {
		*why = "a relay is draining";
		return AS_HOLD;
	}
	if (st->last_change_ms && now - st->last_change_ms < c->cooldown_ms) {
		*why = "cool-down";
		return AS_HOLD;
	}
	if (above && up >= c->out_for_ms) {
		if (st->desired >= c->max) {
			*why = "above the scale-out threshold at max replicas";
			return AS_HOLD;
		}
		/* enough relays of the average size to bring utilization to the middle */
		int need = st->desired + 1;
		if (per > 0) {
			double x = s->load / (per * mid);
			need = x < c->max + 1 ? (int)x : c->max + 1;
			if (need < x)
				need++; /* ceil without libm */
		}
		int to = need > st->desired + 1 ? need : st->desired + 1;
		if (to > c->max)
			to = c->max;
		*why = "above the scale-out threshold";
		return change(st, to, now, target, AS_OUT);
	}
	if (below && down >= c->in_for_ms && st->desired > c->min) {
		*why = "below the scale-in threshold";
		return change(st, st->desired - 1, now, target, AS_IN);
	}
	*why = above ? "above, not for long enough" : below ? "below, not for long enough"
							     : "inside the band";
	return AS_HOLD;
}

void as_failed(struct as_state *st, int prev, uint64_t now)
{
	st->desired = prev;
	st->last_change_ms = now;
}
