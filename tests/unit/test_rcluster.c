/* The Redis standalone/cluster client: key slots exactly as Redis computes them, the parsers of
 * what nodes tell us (MOVED/ASK, CLUSTER SLOTS, seeds) fed malformed input, and the client's
 * bounded behaviour against a scripted fake Redis on the same loop: standalone detection,
 * TRYAGAIN/MOVED limits, ASK, a connection lost mid-command (at-most-once), deadlines, and
 * rc_free with commands pending or from inside a callback. The real cluster (failover,
 * resharding) is tests/redis/cluster.sh. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "log.h"
#include "loop.h"
#include "rcluster.h"

/* ---- key slots ---- */

static void key_slots_match_redis(void **state)
{
	assert_int_equal(rc_key_slot("foo", 3), 12182);
	assert_int_equal(rc_key_slot("bar", 3), 5061);
	assert_int_equal(rc_key_slot("123456789", 9), 0x31C3 % RC_SLOTS); /* CRC16-XMODEM check */
	assert_int_equal(rc_key_slot("", 0), 0);
	assert_int_equal(rc_key_slot(NULL, 0), 0);
	/* same tag, same slot; the tag alone hashes like the whole key "user1000" */
	unsigned a = rc_key_slot("{user1000}.following", 20);
	assert_int_equal(a, rc_key_slot("{user1000}.followers", 20));
	assert_int_equal(a, rc_key_slot("user1000", 8));
	/* empty tag: the whole key */
	assert_int_not_equal(rc_key_slot("foo{}{bar}", 10), rc_key_slot("bar", 3));
	/* first '{' to the first '}' after it */
	assert_int_equal(rc_key_slot("foo{{bar}}zap", 13), rc_key_slot("{bar", 4));
	assert_int_equal(rc_key_slot("foo{bar}{zap}", 13), rc_key_slot("bar", 3));
	/* no closing brace: the whole key */
	assert_int_not_equal(rc_key_slot("foo{bar", 7), rc_key_slot("bar", 3));
	/* binary keys and the length (not NUL) bound the key */
	assert_int_equal(rc_key_slot("foo\0zzz", 3), 12182);
	for (unsigned i = 0; i < 1000; i++) {
		char k[32];
		int n = snprintf(k, sizeof(k), "key:%u", i);
		assert_true(rc_key_slot(k, (size_t)n) < RC_SLOTS);
	}
}

/* values computed by redis-server 7.0 (CLUSTER KEYSLOT) */
static void key_slots_known_values(void **state)
{
	static const struct {
		const char *key;
		unsigned slot;
	} v[] = {{"foo", 12182},	  {"bar", 5061},	   {"hello", 866},
		 {"a", 15495},		  {"{a}b", 15495},	   {"dvv:route:x", 6323},
		 {"{dvv:x}route", 2655},  {"{user1000}.following", 3443},
		 {"foo{}{bar}", 8363},	  {"foo{{bar}}zap", 4015}, {"{bar", 4015},
		 {"foo{bar", 15278},	  {"123456789", 12739},	   {"{", 4092}};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (rc_key_slot(v[i].key, strlen(v[i].key)) != v[i].slot)
			fail_msg("slot of '%s': want %u, got %u", v[i].key, v[i].slot,
				 rc_key_slot(v[i].key, strlen(v[i].key)));
}

/* ---- addresses and redirects ---- */

static void addresses_numeric_only(void **state)
{
	struct rc_addr a;
	assert_int_equal(rc_parse_addr("127.0.0.1:6379", 14, &a), 0);
	assert_string_equal(a.host, "127.0.0.1");
	assert_int_equal(a.port, 6379);
	assert_int_equal(rc_parse_addr("[::1]:7000", 10, &a), 0);
	assert_string_equal(a.host, "::1");
	assert_int_equal(a.port, 7000);
	assert_int_equal(rc_parse_addr("::1:7001", 8, &a), 0); /* as Redis prints IPv6 */
	assert_string_equal(a.host, "::1");
	assert_int_equal(a.port, 7001);
	static const char *const bad[] = {
		"", ":", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
		"127.0.0.1:99999999999", "127.0.0.1:12a", "127.0.0.1:-1", "localhost:6379",
		"redis.internal:6379", "[::1]", "[::1]6379", "[::1:6379", "1.2.3:6379",
		"1.2.3.4.5:6379", " 1.2.3.4:6379", ":6379",
		"1234567890123456789012345678901234567890123456789:1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (rc_parse_addr(bad[i], strlen(bad[i]), &a) != -EINVAL)
			fail_msg("'%s' should be refused", bad[i]);
	/* an embedded NUL is not a shorter valid address */
	assert_int_equal(rc_parse_addr("1.2.3.4\0:1:6379", 15, &a), -EINVAL);
}

static void redirects_parsed_with_bounds(void **state)
{
	struct rc_redirect r;
	const char *m = "MOVED 3999 127.0.0.1:6381";
	assert_int_equal(rc_parse_redirect(m, strlen(m), "10.0.0.1", &r), 0);
	assert_int_equal(r.kind, RC_REDIR_MOVED);
	assert_int_equal(r.slot, 3999);
	assert_string_equal(r.addr.host, "127.0.0.1");
	assert_int_equal(r.addr.port, 6381);
	m = "ASK 16383 ::1:7002";
	assert_int_equal(rc_parse_redirect(m, strlen(m), NULL, &r), 0);
	assert_int_equal(r.kind, RC_REDIR_ASK);
	assert_int_equal(r.slot, 16383);
	assert_string_equal(r.addr.host, "::1");
	assert_int_equal(r.addr.port, 7002);
	/* Redis 7 "unknown endpoint": same host as the node that answered */
	m = "MOVED 0 :7005";
	assert_int_equal(rc_parse_redirect(m, strlen(m), "10.1.2.3", &r), 0);
	assert_string_equal(r.addr.host, "10.1.2.3");
	assert_int_equal(r.addr.port, 7005);
	assert_int_equal(rc_parse_redirect(m, strlen(m), NULL, &r), -EINVAL);
	static const char *const bad[] = {
		"MOVED", "MOVED ", "MOVED 3999", "MOVED 3999 ", "MOVED 16384 127.0.0.1:1",
		"MOVED -1 127.0.0.1:1", "MOVED 99999999999999 127.0.0.1:1", "MOVED x 127.0.0.1:1",
		"MOVED 1 127.0.0.1", "MOVED 1 127.0.0.1:0", "MOVED 1 127.0.0.1:70000",
		"MOVED 1 host.example:6379", "MOVED 1 127.0.0.1:6379 extra", "MOVED  1 127.0.0.1:1",
		"ASK 1 :", "ASK 1 :0", "MOVEDX 1 127.0.0.1:1", "moved 1 127.0.0.1:1", "ERR MOVED",
		"TRYAGAIN", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (rc_parse_redirect(bad[i], strlen(bad[i]), "10.0.0.1", &r) != -EINVAL)
			fail_msg("'%s' should be refused", bad[i]);
	/* a huge endpoint never overflows the host buffer */
	char big[600];
	memset(big, '1', sizeof(big));
	memcpy(big, "MOVED 1 ", 8);
	big[sizeof(big) - 6] = ':';
	assert_int_equal(rc_parse_redirect(big, sizeof(big), NULL, &r), -EINVAL);
}

/* ---- CLUSTER SLOTS ---- */

static redisReply *r_new(int type)
{
	redisReply *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	r->type = type;
	return r;
}
static redisReply *r_int(long long v)
{
	redisReply *r = r_new(REDIS_REPLY_INTEGER);
	r->integer = v;
	return r;
}
static redisReply *r_str(const char *s)
{
	redisReply *r = r_new(REDIS_REPLY_STRING);
	r->str = strdup(s);
	r->len = strlen(s);
	return r;
}
static redisReply *r_nil(void) { return r_new(REDIS_REPLY_NIL); }
static redisReply *r_arr(size_t n, ...)
{
	redisReply *r = r_new(REDIS_REPLY_ARRAY);
	va_list ap;
	r->elements = n;
	r->element = n ? calloc(n, sizeof(*r->element)) : NULL;
	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		r->element[i] = va_arg(ap, redisReply *);
	va_end(ap);
	return r;
}
static redisReply *r_node(const char *ip, long long port)
{
	return r_arr(3, r_str(ip), r_int(port), r_str("0123456789abcdef0123456789abcdef01234567"));
}

static void cluster_slots_parsed(void **state)
{
	/* Redis 7 shape: [start, end, [ip, port, id, {metadata}], replicas...] */
	redisReply *rep = r_arr(
		3,
		r_arr(4, r_int(0), r_int(5460), r_node("127.0.0.1", 7000), r_node("127.0.0.1", 7004)),
		r_arr(3, r_int(5461), r_int(10922), r_arr(2, r_str(""), r_int(7001))),
		r_arr(5, r_int(10923), r_int(16383),
		      r_arr(4, r_str("redis-2.internal"), r_int(7002), r_str("id"),
			    r_arr(4, r_str("hostname"), r_str("redis-2.internal"), r_str("ip"),
				  r_str("10.0.0.2"))),
		      r_node("host.bad", 7003), r_arr(2, r_nil(), r_int(7005))));
	struct rc_slots s;
	char err[128] = "";
	assert_int_equal(rc_parse_slots(rep, "192.168.1.9", &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.r[0].start, 0);
	assert_int_equal(s.r[0].end, 5460);
	assert_string_equal(s.r[0].master.host, "127.0.0.1");
	assert_int_equal(s.r[0].master.port, 7000);
	assert_int_equal(s.r[0].nreplicas, 1);
	assert_int_equal(s.r[0].replicas[0].port, 7004);
	assert_string_equal(s.r[1].master.host, "192.168.1.9"); /* empty endpoint */
	assert_int_equal(s.r[1].nreplicas, 0);
	assert_string_equal(s.r[2].master.host, "10.0.0.2"); /* name -> "ip" metadata */
	assert_int_equal(s.r[2].nreplicas, 1);		     /* the named one is skipped */
	assert_string_equal(s.r[2].replicas[0].host, "192.168.1.9");
	assert_int_equal(s.r[2].replicas[0].port, 7005);
	rc_slots_free(&s);
	freeReplyObject(rep);

	rep = r_arr(0);
	assert_int_equal(rc_parse_slots(rep, NULL, &s, err, sizeof(err)), 0);
	assert_int_equal(s.n, 0);
	freeReplyObject(rep);
}

static void cluster_slots_malformed_refused(void **state)
{
	redisReply *bad[] = {
		r_int(1),
		r_str("slots"),
		r_arr(1, r_int(5)),
		r_arr(1, r_arr(2, r_int(0), r_int(1))),
		r_arr(1, r_arr(3, r_int(5), r_int(4), r_node("127.0.0.1", 1))),
		r_arr(1, r_arr(3, r_int(0), r_int(16384), r_node("127.0.0.1", 1))),
		r_arr(1, r_arr(3, r_int(-1), r_int(5), r_node("127.0.0.1", 1))),
		r_arr(1, r_arr(3, r_str("0"), r_int(5), r_node("127.0.0.1", 1))),
		r_arr(1, r_arr(3, r_int(0), r_int(5), r_node("127.0.0.1", 0))),
		r_arr(1, r_arr(3, r_int(0), r_int(5), r_node("127.0.0.1", 65536))),
		r_arr(1, r_arr(3, r_int(0), r_int(5), r_arr(2, r_str("127.0.0.1"), r_str("7000")))),
		r_arr(1, r_arr(3, r_int(0), r_int(5), r_arr(1, r_str("127.0.0.1")))),
		r_arr(1, r_arr(3, r_int(0), r_int(5), r_node("example.com", 7000))),
		r_arr(1, r_arr(3, r_int(0), r_int(5), r_node("?", 7000))),
		r_arr(1, r_arr(3, r_int(0), r_int(5), r_arr(2, r_int(1), r_int(7000)))),
		r_arr(1, r_arr(3, r_int(0), r_int(5), r_str("127.0.0.1:7000"))),
		r_arr(1, r_arr(3, r_int(0), r_int(5),
			       r_arr(4, r_str("n"), r_int(1), r_str("id"), r_arr(1, r_str("ip"))))),
		r_arr(2, r_arr(3, r_int(0), r_int(5), r_node("127.0.0.1", 1)), r_nil()),
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct rc_slots s = {(void *)1, 99};
		char err[128] = "";
		if (rc_parse_slots(bad[i], "127.0.0.1", &s, err, sizeof(err)) != -EINVAL)
			fail_msg("malformed reply %zu accepted", i);
		if (s.r || s.n || !err[0])
			fail_msg("reply %zu: want nothing allocated and a reason, got n=%zu err='%s'",
				 i, s.n, err);
		freeReplyObject(bad[i]);
	}
	/* an empty endpoint with no node to stand for it */
	redisReply *rep = r_arr(1, r_arr(3, r_int(0), r_int(5), r_arr(2, r_str(""), r_int(1))));
	struct rc_slots s;
	assert_int_equal(rc_parse_slots(rep, NULL, &s, NULL, 0), -EINVAL);
	freeReplyObject(rep);
	assert_int_equal(rc_parse_slots(NULL, NULL, &s, NULL, 0), -EINVAL);
}

/* ---- a scripted fake Redis on the test's loop ---- */

enum fake_mode {
	FAKE_STANDALONE,   /* cluster support disabled; GET -> "hello" */
	FAKE_CLUSTER,	   /* one node owning every slot; GET -> "v" */
	FAKE_TRYAGAIN,	   /* cluster; GET -> TRYAGAIN forever */
	FAKE_MOVED_SELF,   /* cluster; GET -> MOVED to itself forever */
	FAKE_MOVED_BAD,	   /* cluster; GET -> MOVED with a slot out of range */
	FAKE_ASK,	   /* cluster; GET -> ASK to itself unless just after ASKING */
	FAKE_ERR,	   /* cluster; GET -> a plain error */
	FAKE_DROP_ON_GET,  /* cluster; first GET closes the connection, later ones answer */
	FAKE_SILENT_GET,   /* cluster; GET never answered */
	FAKE_BAD_SLOTS,	   /* CLUSTER SLOTS names a host instead of an IP */
	FAKE_EMPTY_LATER,  /* first map good, later ones empty; first GET -> MOVED to itself */
	FAKE_BUSY_LOOP,	   /* cluster; GET -> "v" at once, then the loop is kept busy 600 ms */
};

struct fake_conn {
	struct loop_io io;
	struct fake *f;
	char in[8192];
	size_t inlen;
	bool asking;
};

struct fake {
	struct loop *l;
	struct loop_io lio;
	uint16_t port;
	enum fake_mode mode;
	struct fake_conn *conns[16];
	unsigned accepted, gets, askings, slots_asked, drops;
};

static void fake_write(struct fake_conn *c, const char *s)
{
	size_t n = strlen(s);
	ssize_t w = write(c->io.fd, s, n); /* tiny replies on loopback: one write */
	assert_int_equal((size_t)w, n);
}

static void fake_close(struct fake *f, struct fake_conn *c)
{
	for (int i = 0; i < 16; i++)
		if (f->conns[i] == c)
			f->conns[i] = NULL;
	loop_io_del(f->l, &c->io);
	close(c->io.fd);
	c->io.fd = -1;
	loop_defer(f->l, free, c);
}

/* Answer one command; false if the connection was closed. */
static bool fake_answer(struct fake *f, struct fake_conn *c, int argc, char argv[][64])
{
	char buf[512];
	bool cluster = f->mode != FAKE_STANDALONE;
	bool asking = c->asking;
	c->asking = false;
	if (!strcasecmp(argv[0], "PING")) {
		fake_write(c, "+PONG\r\n");
	} else if (!strcasecmp(argv[0], "ASKING")) {
		f->askings++;
		c->asking = true;
		fake_write(c, "+OK\r\n");
	} else if (!strcasecmp(argv[0], "CLUSTER")) {
		f->slots_asked++;
		if (!cluster) {
			fake_write(c, "-ERR This instance has cluster support disabled\r\n");
		} else if (f->mode == FAKE_EMPTY_LATER && f->slots_asked > 1) {
			fake_write(c, "*0\r\n");
		} else if (f->mode == FAKE_BAD_SLOTS) {
			fake_write(c, "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$11\r\nexample.com\r\n:7000\r\n");
		} else {
			snprintf(buf, sizeof(buf),
				 "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:%u\r\n$2\r\nid\r\n",
				 f->port);
			fake_write(c, buf);
		}
	} else if (!strcasecmp(argv[0], "GET")) {
		f->gets++;
		switch (f->mode) {
		case FAKE_STANDALONE:
			fake_write(c, "$5\r\nhello\r\n");
			break;
		case FAKE_TRYAGAIN:
			fake_write(c, "-TRYAGAIN Multiple keys request during rehashing of slot\r\n");
			break;
		case FAKE_MOVED_SELF:
			snprintf(buf, sizeof(buf), "-MOVED %u 127.0.0.1:%u\r\n",
				 rc_key_slot(argv[1], strlen(argv[1])), f->port);
			fake_write(c, buf);
			break;
		case FAKE_MOVED_BAD:
			fake_write(c, "-MOVED 99999 127.0.0.1:1\r\n");
			break;
		case FAKE_ASK:
			if (asking) {
				fake_write(c, "$6\r\nmoving\r\n");
			} else {
				snprintf(buf, sizeof(buf), "-ASK 1 127.0.0.1:%u\r\n", f->port);
				fake_write(c, buf);
			}
			break;
		case FAKE_ERR:
			fake_write(c, "-ERR boom\r\n");
			break;
		case FAKE_DROP_ON_GET:
			if (f->drops++ == 0) {
				fake_close(f, c);
				return false;
			}
			fake_write(c, "$1\r\nv\r\n");
			break;
		case FAKE_SILENT_GET:
			break;
		case FAKE_BUSY_LOOP:
			/* the reply is sent in time; the shared loop is then busy elsewhere (as a
			 * loaded relay's is) while it waits unread in the client's socket */
			fake_write(c, "$1\r\nv\r\n");
			usleep(600 * 1000);
			break;
		case FAKE_EMPTY_LATER:
			if (f->gets == 1) {
				snprintf(buf, sizeof(buf), "-MOVED %u 127.0.0.1:%u\r\n",
					 rc_key_slot(argv[1], strlen(argv[1])), f->port);
				fake_write(c, buf);
			} else {
				fake_write(c, "$1\r\nv\r\n");
			}
			break;
		default:
			fake_write(c, "$1\r\nv\r\n");
		}
	} else {
		fake_write(c, "-ERR unknown command\r\n");
	}
	(void)argc;
	return true;
}

/* RESP arrays of bulk strings, as hiredis sends them; arguments truncated to 63 bytes. */
static void fake_conn_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct fake_conn *c = container_of(io, struct fake_conn, io);
	struct fake *f = c->f;
	ssize_t n = read(io->fd, c->in + c->inlen, sizeof(c->in) - c->inlen);
	if (n <= 0) {
		fake_close(f, c);
		return;
	}
	c->inlen += (size_t)n;
	for (;;) {
		char argv[8][64];
		int argc;
		char *p = c->in, *end = c->in + c->inlen, *nl;
		if (p == end || *p != '*' || !(nl = memchr(p, '\n', (size_t)(end - p))))
			break;
		argc = atoi(p + 1);
		assert_true(argc >= 1 && argc <= 8);
		p = nl + 1;
		int i;
		for (i = 0; i < argc; i++) {
			if (p >= end || *p != '$' || !(nl = memchr(p, '\n', (size_t)(end - p))))
				break;
			size_t len = (size_t)atoi(p + 1);
			p = nl + 1;
			if ((size_t)(end - p) < len + 2)
				break;
			size_t k = len < 63 ? len : 63;
			memcpy(argv[i], p, k);
			argv[i][k] = '\0';
			p += len + 2;
		}
		if (i < argc)
			break; /* incomplete */
		size_t used = (size_t)(p - c->in);
		memmove(c->in, p, c->inlen - used);
		c->inlen -= used;
		if (!fake_answer(f, c, argc, argv))
			return;
	}
}

static void fake_accept_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct fake *f = container_of(io, struct fake, lio);
	int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct fake_conn *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	c->f = f;
	c->io.fd = fd;
	c->io.cb = fake_conn_cb;
	f->accepted++;
	for (int i = 0; i < 16; i++)
		if (!f->conns[i]) {
			f->conns[i] = c;
			break;
		}
	assert_int_equal(loop_io_set(l, &c->io, EPOLLIN), 0);
}

static void fake_start(struct fake *f, struct loop *l, enum fake_mode mode)
{
	memset(f, 0, sizeof(*f));
	f->l = l;
	f->mode = mode;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	f->port = ntohs(sa.sin_port);
	f->lio.fd = fd;
	f->lio.cb = fake_accept_cb;
	assert_int_equal(loop_io_set(l, &f->lio, EPOLLIN), 0);
}

static void fake_stop(struct fake *f)
{
	for (int i = 0; i < 16; i++)
		if (f->conns[i])
			fake_close(f, f->conns[i]);
	loop_io_del(f->l, &f->lio);
	close(f->lio.fd);
}

/* ---- harness: run the loop until a condition or a time limit ---- */

struct run {
	struct loop_timer t;
	bool (*done)(void *arg);
	void *arg;
	uint64_t until;
};

static void run_check(struct loop *l, struct loop_timer *t)
{
	struct run *r = container_of(t, struct run, t);
	if ((r->done && r->done(r->arg)) || mono_ms() >= r->until)
		loop_stop(l);
	else
		loop_timer_arm(l, t, 5);
}

static void run_until(struct loop *l, bool (*done)(void *), void *arg, unsigned ms)
{
	struct run r = {.t.cb = run_check, .done = done, .arg = arg, .until = mono_ms() + ms};
	loop_timer_arm(l, &r.t, 0);
	l->stop = false;
	loop_run(l);
	l->stop = false;
	loop_timer_cancel(l, &r.t);
}

struct probe {
	unsigned calls, nulls, ups, downs;
	int type;
	char str[64];
	struct rc *free_me; /* rc_free from inside the callback */
};

static void probe_cb(struct rc *rc, redisReply *r, void *priv)
{
	struct probe *p = priv;
	p->calls++;
	if (!r) {
		p->nulls++;
		p->type = -1;
	} else {
		p->type = r->type;
		if (r->str)
			snprintf(p->str, sizeof(p->str), "%.*s", (int)r->len, r->str);
	}
	if (p->free_me) {
		struct rc *x = p->free_me;
		p->free_me = NULL;
		rc_free(x);
	}
}

static void state_cb(struct rc *rc, bool up, void *data)
{
	struct probe *p = data;
	if (up)
		p->ups++;
	else
		p->downs++;
}

static bool probe_called(void *arg) { return ((struct probe *)arg)->calls > 0; }
static bool probe_up(void *arg) { return ((struct probe *)arg)->ups > 0; }

struct env {
	struct loop l;
	struct fake f;
	struct probe st;
	struct rc *rc;
	char seed[64];
};

static struct env *env_new(enum fake_mode mode)
{
	struct env *e = calloc(1, sizeof(*e));
	assert_non_null(e);
	assert_int_equal(loop_init(&e->l), 0);
	fake_start(&e->f, &e->l, mode);
	snprintf(e->seed, sizeof(e->seed), "127.0.0.1:%u", e->f.port);
	e->rc = rc_new(&e->l, e->seed, state_cb, &e->st);
	assert_non_null(e->rc);
	return e;
}

static void env_free(struct env *e)
{
	rc_free(e->rc);
	fake_stop(&e->f);
	loop_free(&e->l); /* runs deferred frees */
	free(e);
}

static void env_up(struct env *e)
{
	run_until(&e->l, probe_up, &e->st, 3000);
	if (!e->st.ups)
		fail_msg("rc did not come up against the fake (mode %d)", e->f.mode);
	assert_true(rc_is_up(e->rc));
}

static void get(struct env *e, struct probe *p, const char *key)
{
	assert_int_equal(rc_command(e->rc, key, probe_cb, p, "GET %s", key), 0);
	run_until(&e->l, probe_called, p, 5000);
	if (p->calls != 1)
		fail_msg("GET %s: want exactly one callback, got %u", key, p->calls);
}

static void standalone_detected_and_served(void **state)
{
	struct env *e = env_new(FAKE_STANDALONE);
	struct probe p = {0};
	/* queued before the topology is known: sent once it is */
	assert_int_equal(rc_command(e->rc, "k", probe_cb, &p, "GET %s", "k"), 0);
	env_up(e);
	assert_false(rc_is_cluster(e->rc));
	run_until(&e->l, probe_called, &p, 3000);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.type, REDIS_REPLY_STRING);
	assert_string_equal(p.str, "hello");
	assert_int_equal(e->st.ups, 1);
	assert_int_equal(e->st.downs, 0);
	env_free(e);
}

static void cluster_detected_and_served(void **state)
{
	struct env *e = env_new(FAKE_CLUSTER);
	env_up(e);
	assert_true(rc_is_cluster(e->rc));
	struct probe p = {0};
	get(e, &p, "foo");
	assert_int_equal(p.type, REDIS_REPLY_STRING);
	assert_string_equal(p.str, "v");
	struct probe q = {0}; /* no route key: any master */
	assert_int_equal(rc_command(e->rc, NULL, probe_cb, &q, "GET %s", "x"), 0);
	run_until(&e->l, probe_called, &q, 3000);
	assert_string_equal(q.str, "v");
	/* subscribe would put hiredis in push mode: refused */
	assert_int_equal(rc_command(e->rc, NULL, probe_cb, &q, "SUBSCRIBE ch"), -EINVAL);
	const char *argv[] = {"monitor"};
	assert_int_equal(rc_command_argv(e->rc, NULL, 0, probe_cb, &q, 1, argv, NULL), -EINVAL);
	assert_int_equal(rc_command_argv(e->rc, NULL, 0, probe_cb, &q, 0, argv, NULL), -EINVAL);
	env_free(e);
}

static void tryagain_retried_then_failed(void **state)
{
	struct env *e = env_new(FAKE_TRYAGAIN);
	env_up(e);
	rc_set_timeout(e->rc, 10000); /* the retry bound, not the deadline, must end it */
	struct probe p = {0};
	uint64_t t0 = mono_ms();
	get(e, &p, "foo");
	struct rc_stats st;
	rc_get_stats(e->rc, &st);
	assert_int_equal(p.nulls, 1);
	assert_int_equal(e->f.gets, 1 + RC_MAX_RETRIES);
	assert_int_equal(st.retries, RC_MAX_RETRIES);
	assert_true(mono_ms() - t0 >= 700); /* backoff between attempts */
	env_free(e);
}

static void moved_loop_bounded(void **state)
{
	struct env *e = env_new(FAKE_MOVED_SELF);
	env_up(e);
	struct probe p = {0};
	get(e, &p, "foo");
	struct rc_stats st;
	rc_get_stats(e->rc, &st);
	assert_int_equal(p.nulls, 1);
	assert_int_equal(st.moved, RC_MAX_RETRIES);
	assert_int_equal(e->f.gets, 1 + RC_MAX_RETRIES);
	env_free(e);
}

static void malformed_moved_fails_command(void **state)
{
	struct env *e = env_new(FAKE_MOVED_BAD);
	env_up(e);
	struct probe p = {0};
	get(e, &p, "foo");
	assert_int_equal(p.nulls, 1);
	assert_int_equal(e->f.gets, 1);
	assert_true(rc_is_up(e->rc));
	env_free(e);
}

static void ask_sends_asking_once(void **state)
{
	struct env *e = env_new(FAKE_ASK);
	env_up(e);
	struct probe p = {0};
	get(e, &p, "foo");
	struct rc_stats st;
	rc_get_stats(e->rc, &st);
	assert_int_equal(p.type, REDIS_REPLY_STRING);
	assert_string_equal(p.str, "moving");
	assert_int_equal(st.ask, 1);
	assert_int_equal(e->f.askings, 1);
	assert_int_equal(e->f.gets, 2);
	env_free(e);
}

static void error_replies_passed_through(void **state)
{
	struct env *e = env_new(FAKE_ERR);
	env_up(e);
	struct probe p = {0};
	get(e, &p, "foo");
	assert_int_equal(p.type, REDIS_REPLY_ERROR);
	assert_string_equal(p.str, "ERR boom");
	assert_int_equal(p.nulls, 0);
	env_free(e);
}

static bool up_again(void *arg)
{
	struct env *e = arg;
	return e->st.ups >= 2;
}

static void lost_connection_is_at_most_once(void **state)
{
	struct env *e = env_new(FAKE_DROP_ON_GET);
	env_up(e);
	struct probe p = {0};
	get(e, &p, "foo");
	assert_int_equal(p.nulls, 1); /* its reply was lost: failed, not re-sent */
	assert_int_equal(e->f.gets, 1);
	run_until(&e->l, up_again, e, 5000);
	assert_int_equal(e->st.downs, 1);
	assert_int_equal(e->st.ups, 2);
	struct probe q = {0};
	get(e, &q, "foo");
	assert_string_equal(q.str, "v");
	assert_int_equal(e->f.gets, 2);
	env_free(e);
}

static void silent_node_hits_deadline(void **state)
{
	struct env *e = env_new(FAKE_SILENT_GET);
	env_up(e);
	rc_set_timeout(e->rc, 300);
	struct probe p = {0};
	uint64_t t0 = mono_ms();
	get(e, &p, "foo");
	uint64_t dt = mono_ms() - t0;
	assert_int_equal(p.nulls, 1);
	if (dt < 250 || dt > 1500)
		fail_msg("deadline 300 ms, answered after %llu ms", (unsigned long long)dt);
	struct rc_stats st;
	rc_get_stats(e->rc, &st);
	assert_int_equal(st.timeouts, 1);
	env_free(e); /* the orphaned command is freed when the connection closes */
}

static void noop_cb(struct loop *l, struct loop_io *io, uint32_t events) {}

/* A reply that arrived before its deadline is not judged late because the loop was busy: 300
 * always-readable descriptors keep every epoll batch (256 events) full, so after the busy turn
 * the client's readable socket waits for a later batch while the timers, the tick among them,
 * run first. */
static void reply_in_time_on_a_busy_loop_is_not_a_timeout(void **state)
{
	struct env *e = env_new(FAKE_BUSY_LOOP);
	env_up(e);
	rc_set_timeout(e->rc, 300);
	enum { NBUSY = 300 };
	int sp[NBUSY][2];
	struct loop_io io[NBUSY];
	for (int i = 0; i < NBUSY; i++) {
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp[i]), 0);
		assert_int_equal(write(sp[i][1], "x", 1), 1); /* readable until closed */
		io[i] = (struct loop_io){.fd = sp[i][0], .cb = noop_cb};
		assert_int_equal(loop_io_set(&e->l, &io[i], EPOLLIN), 0); /* level-triggered */
	}
	struct probe p = {0};
	get(e, &p, "foo");
	for (int i = 0; i < NBUSY; i++) {
		loop_io_del(&e->l, &io[i]);
		close(sp[i][0]);
		close(sp[i][1]);
	}
	assert_int_equal(p.nulls, 0);
	assert_int_equal(p.type, REDIS_REPLY_STRING);
	assert_string_equal(p.str, "v");
	struct rc_stats st;
	rc_get_stats(e->rc, &st);
	assert_int_equal(st.timeouts, 0);
	env_free(e);
}

static void malformed_map_never_up(void **state)
{
	struct env *e = env_new(FAKE_BAD_SLOTS);
	rc_set_timeout(e->rc, 300);
	struct probe p = {0};
	assert_int_equal(rc_command(e->rc, "foo", probe_cb, &p, "GET foo"), 0);
	run_until(&e->l, NULL, NULL, 800);
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.nulls, 1);
	assert_int_equal(e->st.ups, 0);
	assert_false(rc_is_up(e->rc));
	assert_true(e->f.slots_asked >= 2); /* kept trying, with backoff */
	assert_true(e->f.slots_asked < 20);
	assert_int_equal(e->f.gets, 0);
	env_free(e);
}

static void empty_map_does_not_replace_a_working_one(void **state)
{
	struct env *e = env_new(FAKE_EMPTY_LATER);
	env_up(e);
	struct probe p = {0};
	get(e, &p, "foo"); /* MOVED: a refresh follows, and gets an empty map */
	assert_string_equal(p.str, "v");
	run_until(&e->l, NULL, NULL, 400);
	if (e->f.slots_asked < 2)
		fail_msg("want a refresh after MOVED, CLUSTER SLOTS asked %u time(s)",
			 e->f.slots_asked);
	assert_true(rc_is_up(e->rc));
	assert_int_equal(e->st.downs, 0);
	struct probe q = {0};
	get(e, &q, "bar");
	assert_string_equal(q.str, "v");
	env_free(e);
}

static void unreachable_seed_times_out_and_free_answers_pending(void **state)
{
	struct loop l;
	assert_int_equal(loop_init(&l), 0);
	/* a port nobody listens on: bind one, note it, close it */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	close(fd);
	char seed[64];
	snprintf(seed, sizeof(seed), " 127.0.0.1:%u , [::1]:%u", ntohs(sa.sin_port),
		 ntohs(sa.sin_port));
	struct probe st = {0};
	struct rc *rc = rc_new(&l, seed, state_cb, &st);
	assert_non_null(rc);
	rc_set_timeout(rc, 200);
	struct probe a = {0};
	assert_int_equal(rc_command(rc, "k", probe_cb, &a, "GET k"), 0);
	run_until(&l, probe_called, &a, 2000);
	assert_int_equal(a.nulls, 1);
	rc_set_timeout(rc, 60000);
	struct probe many[10] = {{0}};
	for (int i = 0; i < 10; i++)
		assert_int_equal(rc_command(rc, "k", probe_cb, &many[i], "SET k %d", i), 0);
	run_until(&l, NULL, NULL, 100);
	rc_free(rc);
	for (int i = 0; i < 10; i++)
		if (many[i].calls != 1 || many[i].nulls != 1)
			fail_msg("pending command %d: want one NULL callback, got %u calls", i,
				 many[i].calls);
	assert_int_equal(st.ups, 0);
	run_until(&l, NULL, NULL, 50); /* nothing fires after rc_free */
	for (int i = 0; i < 10; i++)
		assert_int_equal(many[i].calls, 1);
	loop_free(&l);
}

static void free_from_inside_a_callback(void **state)
{
	struct env *e = env_new(FAKE_CLUSTER);
	env_up(e);
	struct probe first = {.free_me = e->rc};
	struct probe rest[20] = {{0}};
	assert_int_equal(rc_command(e->rc, "a", probe_cb, &first, "GET a"), 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(rc_command(e->rc, "b", probe_cb, &rest[i], "GET b"), 0);
	run_until(&e->l, probe_called, &first, 3000);
	assert_int_equal(first.calls, 1);
	assert_int_equal(first.type, REDIS_REPLY_STRING);
	for (int i = 0; i < 20; i++)
		if (rest[i].calls != 1)
			fail_msg("command %d: want one callback after rc_free, got %u", i, rest[i].calls);
	run_until(&e->l, NULL, NULL, 50);
	e->rc = NULL; /* already freed */
	env_free(e);
}

static void bad_seeds_refused(void **state)
{
	struct loop l;
	assert_int_equal(loop_init(&l), 0);
	static const char *const bad[] = {"", ",", "localhost:6379", "127.0.0.1", "127.0.0.1:1,",
					  "127.0.0.1:1,,127.0.0.1:2", "redis:6379"};
	enum log_level lv = log_get_level();
	log_set_level(LOG_ERROR);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		struct rc *rc = rc_new(&l, bad[i], NULL, NULL);
		if (i == 4) { /* a trailing comma is tolerated */
			assert_non_null(rc);
			rc_free(rc);
			continue;
		}
		if (rc || errno != EINVAL)
			fail_msg("seeds '%s': want EINVAL", bad[i]);
	}
	log_set_level(lv);
	assert_null(rc_new(&l, NULL, NULL, NULL));
	loop_free(&l);
}

int main(void)
{
	log_init("test_rcluster", getenv("RC_TEST_VERBOSE") ? LOG_DEBUG : LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(key_slots_match_redis),
		cmocka_unit_test(key_slots_known_values),
		cmocka_unit_test(addresses_numeric_only),
		cmocka_unit_test(redirects_parsed_with_bounds),
		cmocka_unit_test(cluster_slots_parsed),
		cmocka_unit_test(cluster_slots_malformed_refused),
		cmocka_unit_test(standalone_detected_and_served),
		cmocka_unit_test(cluster_detected_and_served),
		cmocka_unit_test(tryagain_retried_then_failed),
		cmocka_unit_test(moved_loop_bounded),
		cmocka_unit_test(malformed_moved_fails_command),
		cmocka_unit_test(ask_sends_asking_once),
		cmocka_unit_test(error_replies_passed_through),
		cmocka_unit_test(lost_connection_is_at_most_once),
		cmocka_unit_test(silent_node_hits_deadline),
		cmocka_unit_test(reply_in_time_on_a_busy_loop_is_not_a_timeout),
		cmocka_unit_test(malformed_map_never_up),
		cmocka_unit_test(empty_map_does_not_replace_a_working_one),
		cmocka_unit_test(unreachable_seed_times_out_and_free_answers_pending),
		cmocka_unit_test(free_from_inside_a_callback),
		cmocka_unit_test(bad_seeds_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
