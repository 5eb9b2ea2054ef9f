/* Drives userspace/rcluster.c against a real Redis: a 6-node cluster or a standalone server
 * (tests/redis/cluster.sh starts them). One scenario per run; detail lines start with two
 * spaces, a failed check with "  FAIL:"; exit status 0 only if every check passed.
 *
 *   rc_driver basic    SEEDS cluster|standalone   every slot written and read back, EVAL on
 *                                                 two keys of one hash tag, errors passed on
 *   rc_driver reshard  SEEDS                      a slot migrated while we write: ASK during
 *                                                 the migration, MOVED after it
 *   rc_driver failover SEEDS                      kill -9 a primary mid-stream; writes resume
 *                                                 on the promoted replica, no acknowledged
 *                                                 write is lost
 *   rc_driver restart  SEEDS 'shell command'      standalone: kill -9 mid-stream, the command
 *                                                 restarts the server (AOF, fsync always)
 *
 * The admin steps of "reshard" and the restart use blocking calls: this is a test driver, the
 * library under test never blocks. */
#include "log.h"
#include "loop.h"
#include "rcluster.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static struct loop L;
static struct rc *RC;
static unsigned g_ups, g_downs, g_checks_failed;
static uint64_t g_t0;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	printf("  [%6.3f] ", (double)(mono_ms() - g_t0) / 1000.0);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

#define CHECK(cond, ...)                                                                       \
	do {                                                                                   \
		if (!(cond)) {                                                                 \
			printf("  FAIL: ");                                                    \
			printf(__VA_ARGS__);                                                   \
			printf("\n");                                                          \
			g_checks_failed++;                                                     \
		}                                                                              \
	} while (0)

static void on_state(struct rc *rc, bool up, void *data)
{
	if (up)
		g_ups++;
	else
		g_downs++;
	say("state callback: %s", up ? "up" : "down");
}

/* ---- loop helpers ---- */

struct waiter {
	struct loop_timer t;
	bool (*done)(void);
	uint64_t until;
};

static void waiter_cb(struct loop *l, struct loop_timer *t)
{
	struct waiter *w = container_of(t, struct waiter, t);
	if ((w->done && w->done()) || mono_ms() >= w->until)
		loop_stop(l);
	else
		loop_timer_arm(l, t, 5);
}

/* Run the loop until done() (NULL: never) or ms elapsed; true if done() held. */
static bool run_until(bool (*done)(void), unsigned ms)
{
	struct waiter w = {.t.cb = waiter_cb, .done = done, .until = mono_ms() + ms};
	loop_timer_arm(&L, &w.t, 0);
	L.stop = false;
	loop_run(&L);
	L.stop = false;
	loop_timer_cancel(&L, &w.t);
	return done && done();
}

static bool is_up(void) { return rc_is_up(RC); }

/* ---- operations ---- */

enum { OP_PENDING, OP_OK, OP_NULL, OP_ERR, OP_WRONG };

struct op {
	unsigned idx;
	uint8_t st;
	bool victim;		/* failover: its slot was served by the killed primary */
	uint64_t t_issue, t_done;
	char key[48];
	char val[48];
};

static unsigned g_inflight;
static char g_last_err[160];
static void (*g_on_set_done)(struct op *o);

static bool none_inflight(void) { return g_inflight == 0; }

static void note_err(const redisReply *r)
{
	snprintf(g_last_err, sizeof(g_last_err), "%.*s", (int)(r->len > 150 ? 150 : r->len),
		 r->str ? r->str : "");
}

static void set_cb(struct rc *rc, redisReply *r, void *priv)
{
	struct op *o = priv;
	g_inflight--;
	o->t_done = mono_ms();
	if (!r) {
		o->st = OP_NULL;
	} else if (r->type == REDIS_REPLY_STATUS && r->str && !strcmp(r->str, "OK")) {
		o->st = OP_OK;
	} else {
		o->st = OP_ERR;
		note_err(r);
	}
	if (g_on_set_done)
		g_on_set_done(o);
}

static void get_cb(struct rc *rc, redisReply *r, void *priv)
{
	struct op *o = priv;
	g_inflight--;
	o->t_done = mono_ms();
	if (!r)
		o->st = OP_NULL;
	else if (r->type == REDIS_REPLY_STRING && r->len == strlen(o->val) &&
		 !memcmp(r->str, o->val, r->len))
		o->st = OP_OK;
	else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL)
		o->st = OP_WRONG;
	else {
		o->st = OP_ERR;
		note_err(r);
	}
}

static void issue(struct op *o, bool write)
{
	const char *argv[3] = {write ? "SET" : "GET", o->key, o->val};
	o->st = OP_PENDING;
	o->t_issue = mono_ms();
	int e = rc_command_argv(RC, o->key, strlen(o->key), write ? set_cb : get_cb, o,
				write ? 3 : 2, argv, NULL);
	if (e) {
		o->st = OP_NULL;
		snprintf(g_last_err, sizeof(g_last_err), "rc_command_argv: %s", strerror(-e));
		return;
	}
	g_inflight++;
}

struct tally {
	unsigned ok, null, err, wrong, pending;
};

static struct tally count(const struct op *ops, size_t n)
{
	struct tally t = {0};
	for (size_t i = 0; i < n; i++)
		switch (ops[i].st) {
		case OP_OK: t.ok++; break;
		case OP_NULL: t.null++; break;
		case OP_ERR: t.err++; break;
		case OP_WRONG: t.wrong++; break;
		default: t.pending++;
		}
	return t;
}

/* Write all, wait (bounded), return the tally. */
static struct tally write_all(struct op *ops, size_t n, unsigned ms)
{
	for (size_t i = 0; i < n; i++)
		issue(&ops[i], true);
	run_until(none_inflight, ms);
	return count(ops, n);
}

/* Read back every op whose write was acknowledged; reads that fail (NULL) are tried again up to
 * 3 times. Returns the number of acknowledged writes not readable with their value. */
static unsigned verify(const struct op *writes, size_t n, const char *what)
{
	struct op *rd = calloc(n ? n : 1, sizeof(*rd));
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (writes[i].st == OP_OK)
			rd[m++] = writes[i];
	for (int round = 0; round < 4; round++) {
		unsigned issued = 0;
		for (size_t i = 0; i < m; i++)
			if (round == 0 || rd[i].st == OP_NULL) {
				issue(&rd[i], false);
				issued++;
			}
		if (!issued)
			break;
		run_until(none_inflight, 15000);
	}
	struct tally t = count(rd, m);
	unsigned bad = t.wrong + t.null + t.err + t.pending;
	say("%s: %zu acknowledged writes read back: %u ok, %u lost (nil/other value), %u unreadable, "
	    "%u errors%s%s",
	    what, m, t.ok, t.wrong, t.null + t.pending, t.err, t.err ? ": " : "",
	    t.err ? g_last_err : "");
	for (size_t i = 0, shown = 0; i < m && shown < 5; i++)
		if (rd[i].st != OP_OK) {
			say("  not readable: %s (write #%u, state %d)", rd[i].key, rd[i].idx, rd[i].st);
			shown++;
		}
	free(rd);
	return bad;
}

/* ---- one-shot commands ---- */

struct one {
	bool done;
	redisReply copy; /* type/integer/first string only */
	char str[4096];
	size_t nelem;
	char elem[4][64];
	int elem_type[4];
	bool null;
};

static struct one *g_one;
static bool one_done(void) { return g_one->done; }

static void one_cb(struct rc *rc, redisReply *r, void *priv)
{
	struct one *o = priv;
	o->done = true;
	if (!r) {
		o->null = true;
		return;
	}
	o->copy.type = r->type;
	o->copy.integer = r->integer;
	if (r->str)
		snprintf(o->str, sizeof(o->str), "%.*s", (int)r->len, r->str);
	if (r->type == REDIS_REPLY_ARRAY) {
		o->nelem = r->elements;
		for (size_t i = 0; i < r->elements && i < 4; i++) {
			o->elem_type[i] = r->element[i]->type;
			if (r->element[i]->str)
				snprintf(o->elem[i], sizeof(o->elem[i]), "%.*s",
					 (int)r->element[i]->len, r->element[i]->str);
		}
	}
}

static bool one_argv(struct one *o, const char *route, int argc, const char **argv,
		     const size_t *lens)
{
	memset(o, 0, sizeof(*o));
	g_one = o;
	if (rc_command_argv(RC, route, route ? strlen(route) : 0, one_cb, o, argc, argv, lens))
		return false;
	return run_until(one_done, 10000) && !o->null;
}

/* ---- scenarios ---- */

static int wait_up(const char *what)
{
	if (!run_until(is_up, 15000)) {
		CHECK(false, "%s: rc not up after 15 s", what);
		return -1;
	}
	say("up: %s", rc_is_cluster(RC) ? "cluster" : "standalone");
	return 0;
}

static int scenario_basic(bool want_cluster)
{
	if (wait_up("basic"))
		return 1;
	CHECK(rc_is_cluster(RC) == want_cluster, "mode: want %s, rc says %s",
	      want_cluster ? "cluster" : "standalone", rc_is_cluster(RC) ? "cluster" : "standalone");

	/* one key per slot: every master, every slot range */
	struct op *ops = calloc(RC_SLOTS, sizeof(*ops));
	unsigned found = 0;
	for (unsigned i = 0; found < RC_SLOTS && i < 5000000; i++) {
		char k[32];
		int n = snprintf(k, sizeof(k), "slot:%u", i);
		unsigned s = rc_key_slot(k, (size_t)n);
		if (ops[s].key[0])
			continue;
		memcpy(ops[s].key, k, (size_t)n + 1);
		snprintf(ops[s].val, sizeof(ops[s].val), "v%u-%u", s, i);
		ops[s].idx = s;
		found++;
	}
	CHECK(found == RC_SLOTS, "found keys for %u/%d slots", found, RC_SLOTS);
	uint64_t t = mono_ms();
	struct tally w = write_all(ops, found, 20000);
	say("SET one key in each of %u slots: %u ok, %u failed, %u errors in %llu ms%s%s", found,
	    w.ok, w.null + w.pending, w.err, (unsigned long long)(mono_ms() - t),
	    w.err ? ": " : "", w.err ? g_last_err : "");
	CHECK(w.ok == found, "want every SET acknowledged, %u were not", found - w.ok);
	CHECK(verify(ops, found, "GET one key per slot") == 0, "some written keys unreadable");
	free(ops);

	/* 1000 ordinary keys */
	struct op k1000[1000];
	memset(k1000, 0, sizeof(k1000));
	for (unsigned i = 0; i < 1000; i++) {
		k1000[i].idx = i;
		snprintf(k1000[i].key, sizeof(k1000[i].key), "user:%u:name", i * 7919);
		snprintf(k1000[i].val, sizeof(k1000[i].val), "name-%u", i);
	}
	w = write_all(k1000, 1000, 10000);
	CHECK(w.ok == 1000, "1000 keys: %u acknowledged", w.ok);
	CHECK(verify(k1000, 1000, "GET 1000 keys") == 0, "some of the 1000 keys unreadable");

	/* a script touching two keys of one hash tag, routed by the first */
	struct one o;
	static const char lua[] =
		"redis.call('SET', KEYS[1], ARGV[1]) redis.call('SET', KEYS[2], ARGV[2]) "
		"return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}";
	const char *ev[] = {"EVAL", lua, "2", "{user1000}.following", "{user1000}.followers",
			    "alice", "bob"};
	bool ok = one_argv(&o, ev[3], 7, ev, NULL);
	CHECK(ok && o.copy.type == REDIS_REPLY_ARRAY && o.nelem == 2 && !strcmp(o.elem[0], "alice") &&
		      !strcmp(o.elem[1], "bob"),
	      "EVAL on {user1000}: want [alice, bob], got type %d, %zu elements, '%s' '%s' %s",
	      o.copy.type, o.nelem, o.elem[0], o.elem[1], o.str);
	say("EVAL on two keys of tag {user1000}: [%s, %s]", o.elem[0], o.elem[1]);

	/* binary-safe values through argvlen */
	const char bin[] = {'a', 0, 'b', '\r', '\n', 'c'};
	const char *sv[] = {"SET", "bin{x}", bin};
	size_t sl[] = {3, 6, sizeof(bin)};
	ok = one_argv(&o, "bin{x}", 3, sv, sl);
	CHECK(ok && o.copy.type == REDIS_REPLY_STATUS, "SET binary: %s", o.str);
	const char *gv[] = {"STRLEN", "bin{x}"};
	ok = one_argv(&o, "bin{x}", 2, gv, NULL);
	CHECK(ok && o.copy.type == REDIS_REPLY_INTEGER && o.copy.integer == (long long)sizeof(bin),
	      "STRLEN of the binary value: want %zu, got %lld", sizeof(bin), o.copy.integer);

	/* keyless command: any master */
	const char *ping[] = {"PING"};
	ok = one_argv(&o, NULL, 1, ping, NULL);
	CHECK(ok && !strcmp(o.str, "PONG"), "PING with no route key: %s", o.str);

	/* Redis' own errors reach the caller as errors, they are not retried or swallowed */
	const char *ms[] = {"MSET", "{a}x", "1", "{b}y", "2"};
	ok = one_argv(&o, "{a}x", 5, ms, NULL);
	if (want_cluster)
		CHECK(ok && o.copy.type == REDIS_REPLY_ERROR && strstr(o.str, "CROSSSLOT"),
		      "MSET across slots: want a CROSSSLOT error, got type %d '%s'", o.copy.type,
		      o.str);
	else
		CHECK(ok && o.copy.type == REDIS_REPLY_STATUS, "standalone MSET: %s", o.str);
	const char *wt[] = {"LPUSH", "user:0:name", "x"};
	ok = one_argv(&o, "user:0:name", 3, wt, NULL);
	CHECK(ok && o.copy.type == REDIS_REPLY_ERROR && strstr(o.str, "WRONGTYPE"),
	      "LPUSH on a string: want WRONGTYPE, got '%s'", o.str);

	struct rc_stats st;
	rc_get_stats(RC, &st);
	say("stats: %llu commands, %llu failed, %llu moved, %llu ask, %llu retries, %llu maps",
	    (unsigned long long)st.commands, (unsigned long long)st.failed,
	    (unsigned long long)st.moved, (unsigned long long)st.ask,
	    (unsigned long long)st.retries, (unsigned long long)st.refreshes);
	CHECK(st.failed == 0, "%llu commands failed", (unsigned long long)st.failed);
	CHECK(g_downs == 0 && g_ups == 1, "state: want one 'up', got %u up / %u down", g_ups,
	      g_downs);
	return 0;
}

/* ---- admin (blocking, test only) ---- */

static redisReply *admin(int port, const char *fmt, ...)
{
	struct timeval tv = {5, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *r = NULL;
	if (c && !c->err) {
		va_list ap;
		va_start(ap, fmt);
		r = redisvCommand(c, fmt, ap);
		va_end(ap);
	}
	if (c)
		redisFree(c);
	return r;
}

static redisReply *admin_argv(int port, int argc, const char **argv)
{
	struct timeval tv = {5, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	redisReply *r = NULL;
	if (c && !c->err)
		r = redisCommandArgv(c, argc, argv, NULL);
	if (c)
		redisFree(c);
	return r;
}

static bool admin_ok(int port, const char *what, redisReply *r)
{
	bool ok = r && r->type != REDIS_REPLY_ERROR;
	if (!ok)
		CHECK(false, "admin on %d: %s: %s", port, what, r ? r->str : "no reply");
	if (r)
		freeReplyObject(r);
	return ok;
}

static void node_id(int port, char *out, size_t n)
{
	redisReply *r = admin(port, "CLUSTER MYID");
	snprintf(out, n, "%s", r && r->str ? r->str : "");
	if (r)
		freeReplyObject(r);
}

static int first_seed_port(const char *seeds)
{
	struct rc_addr a;
	const char *e = strchr(seeds, ',');
	if (rc_parse_addr(seeds, e ? (size_t)(e - seeds) : strlen(seeds), &a))
		return -1;
	return a.port;
}

static unsigned g_wseq;

/* A few writes between admin steps, appended to the global list checked at the end. */
static void writes_between(struct op *w, unsigned n, const char *tag)
{
	for (unsigned i = 0; i < n; i++) {
		struct op *o = &w[g_wseq];
		o->idx = g_wseq;
		snprintf(o->key, sizeof(o->key), "{mv}:w:%u", g_wseq);
		snprintf(o->val, sizeof(o->val), "w-%u-%s", g_wseq, tag);
		issue(o, true);
		g_wseq++;
	}
	run_until(none_inflight, 10000);
}

static int scenario_reshard(const char *seeds)
{
	if (wait_up("reshard"))
		return 1;
	int seed = first_seed_port(seeds);
	unsigned slot = rc_key_slot("mv", 2);
	redisReply *r = admin(seed, "CLUSTER SLOTS");
	struct rc_slots s;
	char err[128];
	if (!r || rc_parse_slots(r, "127.0.0.1", &s, err, sizeof(err))) {
		CHECK(false, "CLUSTER SLOTS on %d", seed);
		return 1;
	}
	freeReplyObject(r);
	int src = -1, dst = -1, other = -1;
	for (size_t i = 0; i < s.n; i++) {
		if (slot >= s.r[i].start && slot <= s.r[i].end)
			src = s.r[i].master.port;
	}
	for (size_t i = 0; i < s.n; i++) {
		int p = s.r[i].master.port;
		if (p != src && dst < 0)
			dst = p;
		else if (p != src && p != dst && other < 0)
			other = p;
	}
	rc_slots_free(&s);
	if (src < 0 || dst < 0) {
		CHECK(false, "could not find source and target masters for slot %u", slot);
		return 1;
	}
	char src_id[64], dst_id[64];
	node_id(src, src_id, sizeof(src_id));
	node_id(dst, dst_id, sizeof(dst_id));
	say("moving slot %u ({mv}) from :%d to :%d", slot, src, dst);

	struct op keys[250], w[400];
	memset(keys, 0, sizeof(keys));
	memset(w, 0, sizeof(w));
	for (unsigned i = 0; i < 200; i++) {
		keys[i].idx = i;
		snprintf(keys[i].key, sizeof(keys[i].key), "{mv}:%u", i);
		snprintf(keys[i].val, sizeof(keys[i].val), "a-%u", i);
	}
	struct tally t = write_all(keys, 200, 10000);
	CHECK(t.ok == 200, "200 keys in slot %u: %u acknowledged", slot, t.ok);
	writes_between(w, 50, "before");

	CHECK(admin_ok(dst, "SETSLOT IMPORTING",
		       admin(dst, "CLUSTER SETSLOT %u IMPORTING %s", slot, src_id)),
	      "importing");
	CHECK(admin_ok(src, "SETSLOT MIGRATING",
		       admin(src, "CLUSTER SETSLOT %u MIGRATING %s", slot, dst_id)),
	      "migrating");
	writes_between(w, 50, "migrating");

	/* half of the keys move now: the source answers ASK for them */
	const char *mv[6 + 100];
	char dstport[8];
	snprintf(dstport, sizeof(dstport), "%d", dst);
	int n = 0;
	mv[n++] = "MIGRATE";
	mv[n++] = "127.0.0.1";
	mv[n++] = dstport;
	mv[n++] = "";
	mv[n++] = "0";
	mv[n++] = "5000";
	mv[n++] = "KEYS";
	for (unsigned i = 0; i < 99; i++)
		mv[n++] = keys[i].key;
	CHECK(admin_ok(src, "MIGRATE half", admin_argv(src, n, mv)), "migrate half");

	struct rc_stats st0, st1, st2;
	rc_get_stats(RC, &st0);
	CHECK(verify(keys, 200, "during migration, GET 200 keys (99 moved)") == 0,
	      "keys unreadable during the migration");
	for (unsigned i = 200; i < 250; i++) {
		keys[i].idx = i;
		snprintf(keys[i].key, sizeof(keys[i].key), "{mv}:new:%u", i);
		snprintf(keys[i].val, sizeof(keys[i].val), "n-%u", i);
	}
	t = write_all(keys + 200, 50, 10000);
	CHECK(t.ok == 50, "50 new keys during the migration: %u acknowledged%s%s", t.ok,
	      t.err ? ": " : "", t.err ? g_last_err : "");
	rc_get_stats(RC, &st1);
	say("ASK redirects followed during the migration: %llu",
	    (unsigned long long)(st1.ask - st0.ask));
	CHECK(st1.ask - st0.ask >= 99 + 50, "want >= 149 ASK redirects (99 moved keys + 50 new), got %llu",
	      (unsigned long long)(st1.ask - st0.ask));
	writes_between(w, 50, "half");

	/* the rest, then hand the slot over */
	r = admin(src, "CLUSTER GETKEYSINSLOT %u 1000", slot);
	const char *rest[7 + 1000];
	n = 0;
	rest[n++] = "MIGRATE";
	rest[n++] = "127.0.0.1";
	rest[n++] = dstport;
	rest[n++] = "";
	rest[n++] = "0";
	rest[n++] = "5000";
	rest[n++] = "KEYS";
	for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements && i < 1000; i++)
		rest[n++] = r->element[i]->str;
	say("migrating the remaining %d keys", n - 7);
	if (n > 7)
		CHECK(admin_ok(src, "MIGRATE rest", admin_argv(src, n, rest)), "migrate rest");
	if (r)
		freeReplyObject(r);
	CHECK(admin_ok(dst, "SETSLOT NODE", admin(dst, "CLUSTER SETSLOT %u NODE %s", slot, dst_id)),
	      "setslot dst");
	CHECK(admin_ok(src, "SETSLOT NODE", admin(src, "CLUSTER SETSLOT %u NODE %s", slot, dst_id)),
	      "setslot src");
	if (other > 0)
		admin_ok(other, "SETSLOT NODE",
			 admin(other, "CLUSTER SETSLOT %u NODE %s", slot, dst_id));

	/* rc still routes slot to the source: MOVED, then the new owner */
	CHECK(verify(keys, 250, "after the move, GET 250 keys") == 0,
	      "keys unreadable after the slot moved");
	rc_get_stats(RC, &st2);
	say("MOVED redirects followed after the move: %llu",
	    (unsigned long long)(st2.moved - st1.moved));
	CHECK(st2.moved > st1.moved, "want MOVED redirects after the slot changed owner, got none");
	writes_between(w, 50, "after");

	/* the map was refreshed: no more redirects for that slot */
	run_until(NULL, 300);
	struct rc_stats st3;
	rc_get_stats(RC, &st3);
	CHECK(verify(keys, 250, "once the map is refreshed, GET 250 keys") == 0, "keys unreadable");
	struct rc_stats st4;
	rc_get_stats(RC, &st4);
	CHECK(st4.moved == st3.moved && st4.ask == st3.ask,
	      "after the refresh want no redirects, got %llu MOVED %llu ASK",
	      (unsigned long long)(st4.moved - st3.moved), (unsigned long long)(st4.ask - st3.ask));
	CHECK(verify(w, g_wseq, "writes made while resharding") == 0, "writes lost while resharding");
	struct tally tw = count(w, g_wseq);
	CHECK(tw.ok == g_wseq, "writes while resharding: %u/%u acknowledged", tw.ok, g_wseq);
	return 0;
}

/* ---- failover / restart: a paced stream of writes with a kill in the middle ---- */

struct stream {
	struct loop_timer t;
	struct op *ops;
	unsigned cap, issued, min, kill_at, need_resumed;
	pid_t pid;
	bool killed, stop, restarted;
	uint64_t t_kill, t_first_fail, t_last_fail, t_resume;
	unsigned resumed, fails_after_kill;
	const char *restart_cmd;
	const unsigned char *victim_slots; /* NULL: every write counts as the victim's */
};

static struct stream g_s;

static void stream_set_done(struct op *o)
{
	struct stream *s = &g_s;
	if (!s->killed || o->idx < s->kill_at)
		return;
	if (o->st != OP_OK) {
		s->fails_after_kill++;
		if (!s->t_first_fail)
			s->t_first_fail = o->t_done;
		s->t_last_fail = o->t_done;
	} else if (o->victim) {
		if (!s->resumed++)
			s->t_resume = o->t_done;
	}
}

static void stream_tick(struct loop *l, struct loop_timer *t)
{
	struct stream *s = container_of(t, struct stream, t);
	if (s->killed && s->restart_cmd && !s->restarted && mono_ms() - s->t_kill >= 300) {
		s->restarted = true;
		say("restarting the server");
		int rc = system(s->restart_cmd);
		CHECK(rc == 0, "restart command exited %d", rc);
	}
	if (s->issued >= s->cap || (s->issued >= s->min && s->resumed >= s->need_resumed)) {
		s->stop = true;
		return;
	}
	for (int k = 0; k < 5 && s->issued < s->cap; k++) { /* 5 per 10 ms: ~500 writes/s */
		struct op *o = &s->ops[s->issued];
		o->idx = s->issued;
		snprintf(o->key, sizeof(o->key), "stream:%u", s->issued);
		snprintf(o->val, sizeof(o->val), "s-%u-%llu", s->issued,
			 (unsigned long long)mono_ms());
		unsigned slot = rc_key_slot(o->key, strlen(o->key));
		o->victim = !s->victim_slots || s->victim_slots[slot];
		issue(o, true);
		s->issued++;
		if (s->issued == s->kill_at && !s->killed) {
			s->killed = true;
			s->t_kill = mono_ms();
			say("kill -9 %d after %u writes", (int)s->pid, s->issued);
			kill(s->pid, SIGKILL);
		}
	}
	loop_timer_arm(l, t, 10);
}

static bool stream_done(void) { return g_s.stop && g_inflight == 0; }

static long info_field(const char *info, const char *field)
{
	const char *p = strstr(info, field);
	return p ? strtol(p + strlen(field), NULL, 10) : -1;
}

static int run_stream(const char *what)
{
	struct stream *s = &g_s;
	g_on_set_done = stream_set_done;
	s->t.cb = stream_tick;
	loop_timer_arm(&L, &s->t, 0);
	bool done = run_until(stream_done, 60000);
	loop_timer_cancel(&L, &s->t);
	g_on_set_done = NULL;
	CHECK(done, "%s: stream did not finish in 60 s (%u issued, %u in flight)", what, s->issued,
	      g_inflight);
	struct tally t = count(s->ops, s->issued);
	say("%s: %u writes: %u acknowledged, %u failed (NULL), %u errors%s%s", what, s->issued, t.ok,
	    t.null, t.err, t.err ? ": " : "", t.err ? g_last_err : "");
	if (s->fails_after_kill)
		say("failure window: %u writes failed, from +%llu ms to +%llu ms after the kill",
		    s->fails_after_kill, (unsigned long long)(s->t_first_fail - s->t_kill),
		    (unsigned long long)(s->t_last_fail - s->t_kill));
	CHECK(s->resumed >= s->need_resumed,
	      "writes did not resume: %u acknowledged after the kill where the killed node served "
	      "(want >= %u)", s->resumed, s->need_resumed);
	if (s->resumed)
		say("writes resumed +%llu ms after the kill (%u acknowledged since)",
		    (unsigned long long)(s->t_resume - s->t_kill), s->resumed);
	CHECK(verify(s->ops, s->issued, what) == 0, "acknowledged writes were lost");
	struct rc_stats st;
	rc_get_stats(RC, &st);
	say("stats: %llu commands, %llu failed, %llu timeouts, %llu moved, %llu retries, %llu "
	    "connections lost, %llu maps",
	    (unsigned long long)st.commands, (unsigned long long)st.failed,
	    (unsigned long long)st.timeouts, (unsigned long long)st.moved,
	    (unsigned long long)st.retries, (unsigned long long)st.conn_lost,
	    (unsigned long long)st.refreshes);
	/* one node died: one connection lost, one "down", one "up" again; anything more is a
	 * healthy connection dropped or state flapping */
	CHECK(st.conn_lost == 1, "want exactly the killed node's connection lost, %llu were",
	      (unsigned long long)st.conn_lost);
	CHECK(g_downs == 1 && g_ups == 2, "want up, down, up reported; got %u up / %u down", g_ups,
	      g_downs);
	CHECK(rc_is_up(RC), "rc is not up at the end");
	return 0;
}

static int scenario_failover(void)
{
	if (wait_up("failover"))
		return 1;
	struct one o;
	const char *info[] = {"INFO", "server"};
	if (!one_argv(&o, "stream:0", 2, info, NULL)) {
		CHECK(false, "INFO server failed");
		return 1;
	}
	long pid = info_field(o.str, "process_id:"), port = info_field(o.str, "tcp_port:");
	/* the victim's slots, from the map it reports, parsed by the code under test */
	static unsigned char victim[RC_SLOTS];
	struct rc_slots s;
	char err[128];
	redisReply *r = admin((int)port, "CLUSTER SLOTS");
	if (!r || rc_parse_slots(r, "127.0.0.1", &s, err, sizeof(err))) {
		CHECK(false, "CLUSTER SLOTS from the victim :%ld", port);
		if (r)
			freeReplyObject(r);
		return 1;
	}
	freeReplyObject(r);
	unsigned nv = 0;
	for (size_t i = 0; i < s.n; i++)
		if (s.r[i].master.port == port)
			for (unsigned k = s.r[i].start; k <= s.r[i].end; k++, nv++)
				victim[k] = 1;
	rc_slots_free(&s);
	say("victim: primary :%ld (pid %ld), %u slots", port, pid, nv);
	if (pid <= 0 || nv == 0) {
		CHECK(false, "could not identify the victim primary");
		return 1;
	}
	g_s = (struct stream){.cap = 12000, .min = 3000, .kill_at = 500, .need_resumed = 200,
			      .pid = (pid_t)pid, .victim_slots = victim};
	g_s.ops = calloc(g_s.cap, sizeof(struct op));
	run_stream("failover");
	free(g_s.ops);
	return 0;
}

static int scenario_restart(const char *cmd)
{
	if (wait_up("restart"))
		return 1;
	CHECK(!rc_is_cluster(RC), "want a standalone server");
	struct one o;
	const char *info[] = {"INFO", "server"};
	if (!one_argv(&o, NULL, 2, info, NULL)) {
		CHECK(false, "INFO server failed");
		return 1;
	}
	long pid = info_field(o.str, "process_id:");
	say("standalone server pid %ld", pid);
	g_s = (struct stream){.cap = 8000, .min = 2000, .kill_at = 400, .need_resumed = 200,
			      .pid = (pid_t)pid, .restart_cmd = cmd};
	g_s.ops = calloc(g_s.cap, sizeof(struct op));
	run_stream("restart");
	free(g_s.ops);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s basic|reshard|failover|restart SEEDS [arg]\n", argv[0]);
		return 2;
	}
	log_init("rc_driver", getenv("RC_DEBUG") ? LOG_DEBUG : LOG_INFO);
	setvbuf(stdout, NULL, _IOLBF, 0);
	g_t0 = mono_ms();
	if (loop_init(&L))
		return 2;
	RC = rc_new(&L, argv[2], on_state, NULL);
	if (!RC) {
		printf("  FAIL: rc_new(%s): %s\n", argv[2], strerror(errno));
		return 1;
	}
	const char *what = argv[1];
	if (!strcmp(what, "basic") && argc == 4)
		scenario_basic(!strcmp(argv[3], "cluster"));
	else if (!strcmp(what, "reshard"))
		scenario_reshard(argv[2]);
	else if (!strcmp(what, "failover"))
		scenario_failover();
	else if (!strcmp(what, "restart") && argc == 4)
		scenario_restart(argv[3]);
	else {
		fprintf(stderr, "unknown scenario %s\n", what);
		g_checks_failed++;
	}
	unsigned inflight = g_inflight;
	rc_free(RC);
	CHECK(g_inflight == 0, "rc_free left %u of %u commands unanswered", g_inflight, inflight);
	loop_free(&L);
	printf("  %s: %u failed check(s)\n", what, g_checks_failed);
	return g_checks_failed ? 1 : 0;
}
