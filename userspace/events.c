/* The control events stream poller and publisher (events.h): reads `dvv:{ctl}:events` every
 * 200 ms and hands each event to plan enforcement. */
#include "events.h"
#include "auth.h"
#include "enforce.h"
#include "log.h"
#include "metrics.h"
#include "rcluster.h"
#include "relay.h"
#include "rredis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K_EVENTS "%s{ctl}:events"
#define RESET_CHECK_MS 5000 /* an idle stream: is its newest id still ours? */
#define ID_MAX 48

struct events {
	struct relay *r;
	struct loop_timer timer;
	char key[96];
	char last[ID_MAX];	/* last id handled; "" = not started (find the newest first) */
	bool inflight;
	uint64_t last_check_ms;
};

/* "ms-seq" -> (ms, seq); 0 or -1 */
static int id_parse(const char *s, uint64_t *ms, uint64_t *seq)
{
	char *end;
	errno = 0;
	*ms = strtoull(s, &end, 10);
	if (errno || *end != '-')
		return -1;
	*seq = strtoull(end + 1, &end, 10);
	return errno || *end ? -1 : 0;
}

static int id_cmp(const char *a, const char *b)
{
	uint64_t am, as, bm, bs;
	if (id_parse(a, &am, &as) || id_parse(b, &bm, &bs))
		return 0;
	return am != bm ? (am < bm ? -1 : 1) : as != bs ? (as < bs ? -1 : 1) : 0;
}

static bool field_is(const char *f, unsigned long len, const char *name)
{
	return strlen(name) == len && !memcmp(f, name, len);
}

int events_parse(const char *const *kv, const unsigned long *len, unsigned long n,
		 struct events_entry *ev)
{
	memset(ev, 0, sizeof(*ev));
	for (unsigned long i = 0; i + 1 < n; i += 2) {
		const char **dst = field_is(kv[i], len[i], "type")     ? &ev->type
				   : field_is(kv[i], len[i], "sub")    ? &ev->sub
				   : field_is(kv[i], len[i], "jti")    ? &ev->jti
				   : field_is(kv[i], len[i], "tid")    ? &ev->tid
				   : field_is(kv[i], len[i], "reason") ? &ev->reason
								       : NULL;
		if (!dst)
			continue;
		/* the values are C strings (hiredis NUL-terminates): no embedded NUL allowed */
		if (strlen(kv[i + 1]) != len[i + 1] || len[i + 1] > 64)
			return -EINVAL;
		*dst = kv[i + 1];
	}
	if (!ev->type || !ev->sub || !auth_valid_id(ev->sub, strlen(ev->sub)))
		return -EINVAL;
	if ((ev->jti && !auth_valid_id(ev->jti, strlen(ev->jti))) ||
	    (ev->tid && !auth_valid_id(ev->tid, strlen(ev->tid))))
		return -EINVAL;
	return 0;
}

static void dispatch(struct relay *r, const char *id, const struct events_entry *ev)
{
	const char *type = ev->type;
	int before = r->ntunnels;
	M_INC(plan_events_total);
	if (!strcmp(type, "revoke"))
		enforce_revoke(r, ev->sub, ev->jti, ev->tid);
	else if (!strcmp(type, "tunnel"))
		enforce_block(r, ev->sub, ev->tid, ev->reason);
	else if (!strcmp(type, "plan"))
		enforce_plan_changed(r, ev->sub);
	else if (!strcmp(type, "capped"))
		enforce_user_capped(r, ev->sub);
	else
		pr_rl(LOG_DEBUG, "events: unknown type %s skipped", type);
	/* revoke/block that closed something: how long from the event's append to the GOODBYE */
	uint64_t ms, seq;
	if (r->ntunnels < before && id_parse(id, &ms, &seq) == 0) {
		int64_t now_ms = wall_s() * 1000;
		struct timespec ts;
		if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
			now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		int64_t lat = now_ms - (int64_t)ms;
		M_SET(revoke_to_goodbye_last_ms, lat < 0 ? 0 : lat);
		pr_info("events: %s event %s acted on %" PRId64 " ms after it was written", type, id,
			lat);
	}
}

static void arm(struct events *e, uint64_t ms) { loop_timer_arm(&e->r->loop, &e->timer, ms); }

static void on_newest(struct rc *rc, redisReply *rep, void *priv)
{
	struct events *e = priv;
	e->inflight = false;
	if (!rep || rep->type != REDIS_REPLY_ARRAY) {
		M_INC(plan_events_errors_total);
		return;
	}
	const char *newest = "0-0";
	if (rep->elements >= 1 && rep->element[0]->type == REDIS_REPLY_ARRAY &&
	    rep->element[0]->elements >= 1 && rep->element[0]->element[0]->type == REDIS_REPLY_STRING &&
	    rep->element[0]->element[0]->len < ID_MAX)
		newest = rep->element[0]->element[0]->str;
	if (!e->last[0]) {
		snprintf(e->last, sizeof(e->last), "%s", newest);
		pr_info("events: reading %s from %s", e->key, e->last);
	} else if (id_cmp(newest, e->last) < 0) {
		pr_warn("events: the stream went back (newest %s < last %s: Redis restarted "
			"empty?): reading from there",
			newest, e->last);
		snprintf(e->last, sizeof(e->last), "%s", newest);
	}
}

static void on_read(struct rc *rc, redisReply *rep, void *priv)
{
	struct events *e = priv;
	struct relay *r = e->r;
	size_t n = 0;
	e->inflight = false;
	if (!rep || rep->type == REDIS_REPLY_ERROR) {
		M_INC(plan_events_errors_total);
		if (rep)
			pr_rl(LOG_WARN, "events: XREAD: %s", rep->str);
		return;
	}
	if (rep->type == REDIS_REPLY_NIL) {
		/* nothing new: now and then, make sure the stream did not start over below us */
		if (r->loop.now - e->last_check_ms >= RESET_CHECK_MS) {
			e->last_check_ms = r->loop.now;
			if (rc_command(rc, e->key, on_newest, e, "XREVRANGE %s + - COUNT 1",
				       e->key) == 0)
				e->inflight = true;
		}
		return;
	}
	/* [[key, [[id, [f, v, ...]], ...]]] */
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
	    rep->element[0]->type != REDIS_REPLY_ARRAY || rep->element[0]->elements != 2 ||
	    rep->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
		M_INC(plan_events_errors_total);
		pr_rl(LOG_WARN, "events: unexpected XREAD reply shape");
		return;
	}
	const redisReply *entries = rep->element[0]->element[1];
	for (size_t i = 0; i < entries->elements; i++, n++) {
		const redisReply *en = entries->element[i];
		if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
		    en->element[0]->type != REDIS_REPLY_STRING || en->element[0]->len >= ID_MAX)
			continue;
		const char *id = en->element[0]->str;
		snprintf(e->last, sizeof(e->last), "%s", id);
		const redisReply *f = en->element[1];
		if (f->type != REDIS_REPLY_ARRAY || f->elements > 32)
			continue;
		const char *kv[32];
		unsigned long kl[32];
		bool ok = true;
		for (size_t k = 0; k < f->elements; k++) {
			ok &= f->element[k]->type == REDIS_REPLY_STRING;
			kv[k] = ok ? f->element[k]->str : "";
			kl[k] = ok ? (unsigned long)f->element[k]->len : 0;
		}
		struct events_entry ev;
		if (!ok || events_parse(kv, kl, f->elements, &ev)) {
			pr_rl(LOG_WARN, "events: entry %s malformed: skipped", id);
			continue;
		}
		dispatch(r, id, &ev);
	}
	if (n >= EVENTS_BATCH)
		arm(e, 0); /* more waiting: read again at once */
}

static void poll_cb(struct loop *l, struct loop_timer *tm)
{
	struct events *e = container_of(tm, struct events, timer);
	struct relay *r = e->r;
	arm(e, EVENTS_POLL_MS);
	struct rc *rc = rredis_rc(r);
	if (!rc || e->inflight)
		return;
	int rv;
	if (!e->last[0])
		rv = rc_command(rc, e->key, on_newest, e, "XREVRANGE %s + - COUNT 1", e->key);
	else
		rv = rc_command(rc, e->key, on_read, e, "XREAD COUNT %d STREAMS %s %s", EVENTS_BATCH,
				e->key, e->last);
	if (rv == 0)
		e->inflight = true;
}

int events_start(struct relay *r)
{
	struct events *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->r = r;
	snprintf(e->key, sizeof(e->key), K_EVENTS, r->cfg.redis_prefix);
	e->timer.cb = poll_cb;
	r->events = e;
	arm(e, 0);
	return 0;
}

void events_stop(struct relay *r)
{
	struct events *e = r->events;
	if (!e)
		return;
	loop_timer_cancel(&r->loop, &e->timer);
	free(e);
	r->events = NULL;
}

int events_publish(struct relay *r, const char *type, const char *sub, const char *jti,
		   const char *tid, const char *reason)
{
	struct rc *rc = rredis_rc(r);
	if (!rc || !r->events)
		return -ENOTCONN;
	const char *argv[16] = {"XADD", r->events->key, "MAXLEN", "~", "100000", "*",
				"type", type, "sub", sub};
	int argc = 10;
	if (jti) {
		argv[argc++] = "jti";
		argv[argc++] = jti;
	}
	if (tid) {
		argv[argc++] = "tid";
		argv[argc++] = tid;
	}
	if (reason) {
		argv[argc++] = "reason";
		argv[argc++] = reason;
	}
	argv[argc++] = "instance";
	argv[argc++] = r->cfg.instance_id;
	size_t argl[16];
	for (int i = 0; i < argc; i++)
		argl[i] = strlen(argv[i]);
	return rc_command_argv(rc, r->events->key, strlen(r->events->key), NULL, NULL, argc, argv,
			       argl);
}
