/* The autoscaler's policy (tools/dvv-autoscale.c, docs/autoscaling.md): from one sample of a
 * region's relays (their load and capacity as the relays publish them in Redis) and the time,
 * decide whether to add relays, remove one, or hold. Pure: no I/O, the caller's clock, so tests
 * drive it with synthetic time.
 *
 * Contract:
 *  - utilization = load / capacity over the active relays (draining ones count for neither);
 *  - scale out when utilization >= out_frac has held for out_for_ms: to enough relays to bring
 *    it to the middle of the band, at least one more, at most max;
 *  - scale in by exactly one when utilization <= in_frac has held for in_for_ms AND one relay
 *    fewer would still sit below the middle of the band (so removing it cannot trigger a scale
 *    out: the hysteresis), never below min;
 *  - nothing while a relay is draining (the previous removal is not finished) and nothing
 *    within cooldown_ms of the last change, except rising to min;
 *  - each "held for" restarts when the condition breaks and after every change; it keeps
 *    counting through a cool-down (held above for the whole cool-down: out again at its end). */
#ifndef DVV_AUTOSCALE_H
#define DVV_AUTOSCALE_H

#include <stdint.h>

struct as_cfg {
	int min, max;		/* replicas */
	double out_frac, in_frac; /* 0 < in_frac < out_frac <= 1 */
	uint64_t out_for_ms, in_for_ms, cooldown_ms;
};

struct as_sample {
	int active;		/* relays alive and not draining */
	int draining;		/* relays alive and draining */
	double load;		/* sum over active: 4 x tunnels + players */
	double capacity;	/* sum over active of --capacity */
};

struct as_state {
	int desired;		/* the replica count last set (or seen at start: 0 = not yet) */
	uint64_t above_since, below_since; /* 0 = condition not holding */
	uint64_t last_change_ms; /* 0 = never */
};

enum as_action { AS_HOLD, AS_OUT, AS_IN };

/* Validates cfg: 0, or -1 with *why naming the bad field. */
int as_cfg_check(const struct as_cfg *c, const char **why);

/* One decision at now_ms (> 0, non-decreasing). On AS_OUT / AS_IN, *target is the new replica
 * count and st->desired, last_change_ms are already updated (the caller applies it; a failed
 * apply calls as_failed()). *why: a static string for the log. */
enum as_action as_decide(const struct as_cfg *c, struct as_state *st, const struct as_sample *s,
			 uint64_t now_ms, int *target, const char **why);

/* The platform refused the change: go back to prev and start the cool-down from now (no retry
 * storm against a failing API). */
void as_failed(struct as_state *st, int prev, uint64_t now_ms);

#endif
