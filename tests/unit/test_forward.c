/* Relay-to-relay forwarding: the forward header (authenticity, freshness, bounds), and the
 * receiving end's answer on a real internal port: a header is taken only for a live tunnel at the
 * epoch it names (fencing), anything else is told FWD_NOT_HERE; a header meant for another relay,
 * a replay, or any header while the replay cache is full of unexpired nonces is refused. An agent
 * data connection's header (FWD_F_DATA) has an empty host, which a player's may not have; the
 * tag in attach token ids names the relay that issued them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "forward.h"
#include "metrics.h"
#include "relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const uint8_t key[] = "a-cluster-secret-of-enough-bytes";
static const uint64_t now = 1800000000000ULL;

static size_t make_for(uint8_t *buf, size_t cap, const char *host, uint64_t ts, uint64_t epoch,
		       uint8_t nonce, const char *target)
{
	struct fwd_hdr h = {.ts_ms = ts, .epoch = epoch};
	struct sockaddr_in *s = (void *)&h.src, *d = (void *)&h.dst;
	s->sin_family = d->sin_family = AF_INET;
	s->sin_port = htons(50000);
	d->sin_port = htons(25565);
	inet_pton(AF_INET, "203.0.113.9", &s->sin_addr);
	inet_pton(AF_INET, "10.0.0.1", &d->sin_addr);
	memset(h.nonce, nonce, sizeof(h.nonce));
	strcpy(h.host, host);
	strcpy(h.from, "relay-a");
	strcpy(h.target, target);
	return fwd_encode(&h, key, sizeof(key) - 1, buf, cap);
}

static size_t make_at(uint8_t *buf, size_t cap, const char *host, uint64_t ts, uint64_t epoch,
		      uint8_t nonce)
{
	return make_for(buf, cap, host, ts, epoch, nonce, "relay-b");
}

static size_t make(uint8_t *buf, size_t cap, const char *host, uint64_t ts)
{
	return make_at(buf, cap, host, ts, 42, 7);
}

static void a_signed_header_verifies_and_carries_the_player(void **state)
{
	uint8_t buf[1024];
	size_t n = make(buf, sizeof(buf), "brave-otter.eu.dvv.one", now);
	assert_true(n > FWD_FIXED);
	assert_int_equal(fwd_fixed(buf), (int)(n - FWD_FIXED));
	struct fwd_hdr h;
	char err[160] = "";
	int rc = fwd_verify(buf, n, key, sizeof(key) - 1, now + 5000, &h, err, sizeof(err));
	if (rc)
		fail_msg("expected a valid header, got %d: %s", rc, err);
	assert_string_equal(h.host, "brave-otter.eu.dvv.one");
	assert_string_equal(h.from, "relay-a");
	assert_string_equal(h.target, "relay-b");
	assert_int_equal(buf[4], 2); /* header version 2: with the target */
	assert_int_equal(h.epoch, 42);
	assert_int_equal(h.src.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&h.src)->sin_port), 50000);
}

/* The trace id rides in the nonce's first 8 bytes under flag bit 0: the header keeps its
 * length and layout, so a relay that predates the flag (and ignores flags) still verifies it;
 * a header without the flag carries no trace. */
static void the_trace_id_rides_in_the_nonce(void **state)
{
	uint8_t buf[1024], plain[1024];
	struct fwd_hdr h = {.ts_ms = now, .epoch = 9, .trace = 0x0123456789abcdefULL};
	struct sockaddr_in *s = (void *)&h.src, *d = (void *)&h.dst;
	s->sin_family = d->sin_family = AF_INET;
	memset(h.nonce, 0x5a, sizeof(h.nonce));
	strcpy(h.host, "a.example");
	strcpy(h.from, "relay-a");
	strcpy(h.target, "relay-b");
	size_t n = fwd_encode(&h, key, sizeof(key) - 1, buf, sizeof(buf));
	h.trace = 0;
	size_t m = fwd_encode(&h, key, sizeof(key) - 1, plain, sizeof(plain));
	assert_int_equal(n, m); /* same length with and without a trace */
	assert_int_equal(buf[5], FWD_F_TRACE);
	assert_int_equal(plain[5], 0);
	struct fwd_hdr got;
	char err[160] = "";
	if (fwd_verify(buf, n, key, sizeof(key) - 1, now, &got, err, sizeof(err)))
		fail_msg("traced header refused: %s", err);
	assert_true(got.trace == 0x0123456789abcdefULL);
	/* the nonce keeps its random second half: two players' nonces still differ */
	assert_memory_equal(got.nonce + 8, h.nonce + 8, 8);
	assert_int_equal(fwd_verify(plain, m, key, sizeof(key) - 1, now, &got, err, sizeof(err)), 0);
	assert_true(got.trace == 0);
	(void)state;
}

static void every_flipped_bit_is_refused(void **state)
{
	uint8_t buf[1024];
	size_t n = make(buf, sizeof(buf), "x.eu.dvv.one", now);
	struct fwd_hdr h;
	char err[160];
	for (size_t i = 0; i < n; i++)
		for (int b = 0; b < 8; b++) {
			buf[i] ^= (uint8_t)(1 << b);
			if (fwd_verify(buf, n, key, sizeof(key) - 1, now, &h, err, sizeof(err)) == 0)
				fail_msg("flipping bit %d of byte %zu was accepted", b, i);
			buf[i] ^= (uint8_t)(1 << b);
		}
}

static void a_wrong_secret_is_refused(void **state)
{
	uint8_t buf[1024];
	size_t n = make(buf, sizeof(buf), "x.eu.dvv.one", now);
	struct fwd_hdr h;
	char err[160] = "";
	static const uint8_t other[] = "another-secret-of-enough-bytes!!";
	assert_int_equal(fwd_verify(buf, n, other, sizeof(other) - 1, now, &h, err, sizeof(err)),
			 -EACCES);
	assert_non_null(strstr(err, "MAC"));
}

static void stale_or_future_headers_are_refused(void **state)
{
	uint8_t buf[1024];
	struct fwd_hdr h;
	char err[160];
	size_t n = make(buf, sizeof(buf), "x.eu.dvv.one", now - FWD_SKEW_MS - 1);
	assert_int_equal(fwd_verify(buf, n, key, sizeof(key) - 1, now, &h, err, sizeof(err)), -ETIME);
	n = make(buf, sizeof(buf), "x.eu.dvv.one", now + FWD_SKEW_MS + 1);
	assert_int_equal(fwd_verify(buf, n, key, sizeof(key) - 1, now, &h, err, sizeof(err)), -ETIME);
}

static void malformed_lengths_are_refused(void **state)
{
	uint8_t buf[1024];
	size_t n = make(buf, sizeof(buf), "x.eu.dvv.one", now);
	struct fwd_hdr h;
	char err[160];
	assert_int_equal(fwd_verify(buf, n - 1, key, sizeof(key) - 1, now, &h, err, sizeof(err)), -EPROTO);
	assert_int_equal(fwd_verify(buf, 3, key, sizeof(key) - 1, now, &h, err, sizeof(err)), -EPROTO);
	buf[6] = 0xff; /* body length beyond the maximum */
	buf[7] = 0xff;
	assert_true(fwd_fixed(buf) < 0);
	memcpy(buf, "DVVP", 4); /* a data header is not a forward header */
	assert_true(fwd_fixed(buf) < 0);
	n = make(buf, sizeof(buf), "x.eu.dvv.one", now);
	buf[4] = 1; /* a version 1 header (no target) is not accepted any more */
	assert_true(fwd_fixed(buf) < 0);
	/* a 255-byte hostname (the maximum) fits; the output buffer bound is enforced */
	char host[256];
	memset(host, 'a', 255);
	host[255] = 0;
	assert_true(make(buf, sizeof(buf), host, now) > 0);
	assert_int_equal(make(buf, 100, host, now), 0);
}

/* ---- the receiving end ---- */

#define LIVE_HOST "brave-otter.eu.dvv.one"
#define LIVE_EPOCH 7

struct owner {
	struct relay r;
	struct tunnel t; /* LIVE_HOST, up at LIVE_EPOCH */
	struct sockaddr_in internal;
};

static int owner_up(void **state)
{
	struct owner *o = calloc(1, sizeof(*o));
	struct relay *r = &o->r;
	assert_non_null(o);
	setenv("DVV_CLUSTER_SECRET", (const char *)key, 1);
	snprintf(r->cfg.internal_listen, sizeof(r->cfg.internal_listen), "127.0.0.1:0");
	snprintf(r->cfg.internal_addr, sizeof(r->cfg.internal_addr), "127.0.0.1:7001");
	snprintf(r->cfg.instance_id, sizeof(r->cfg.instance_id), "relay-b");
	r->cfg.handshake_timeout_ms = 10000;
	dlist_init(&r->players);
	assert_int_equal(loop_init(&r->loop), 0);
	r->loop.data = r;
	assert_int_equal(htab_init(&r->by_host, 16), 0);
	assert_int_equal(forward_init(r), 0);
	assert_true(r->fwd_enabled);
	o->t.state = TS_UP;
	o->t.epoch = LIVE_EPOCH;
	snprintf(o->t.hostname, sizeof(o->t.hostname), "%s", LIVE_HOST);
	htab_add(&r->by_host, &o->t.host_hn, htab_hash(&r->by_host, LIVE_HOST, strlen(LIVE_HOST)));
	socklen_t sl = sizeof(o->internal);
	assert_int_equal(getsockname(r->internal_l.io.fd, (struct sockaddr *)&o->internal, &sl), 0);
	*state = o;
	return 0;
}

static bool never(void *arg) { return false; }

static int owner_down(void **state)
{
	struct owner *o = *state;
	struct relay *r = &o->r;
	player_close_all(r);
	forward_free(r);
	loop_run_until(&r->loop, never, NULL, mono_ms() + 10); /* deferred frees */
	htab_free(&r->by_host);
	loop_free(&r->loop);
	free(o);
	return 0;
}

static bool readable(void *arg)
{
	struct pollfd pfd = {.fd = *(int *)arg, .events = POLLIN};
	return poll(&pfd, 1, 0) == 1;
}

/* Send one header to the owner's internal port as relay A would; returns the answer byte, or -1
 * if the owner closed without one. *conn: the connection, still open. */
static int forward_to_target(struct owner *o, const char *host, uint64_t epoch, uint8_t nonce,
			     const char *target, int *conn)
{
	uint8_t buf[FWD_FIXED + FWD_BODY_MAX];
	size_t n = make_for(buf, sizeof(buf), host, wall_ms(), epoch, nonce, target);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&o->internal, sizeof(o->internal)), 0);
	assert_int_equal(send(fd, buf, n, 0), (ssize_t)n);
	assert_int_equal(loop_run_until(&o->r.loop, readable, &fd, mono_ms() + 2000), 0);
	uint8_t b;
	*conn = fd;
	return recv(fd, &b, 1, 0) == 1 ? b : -1;
}

static int forward_once(struct owner *o, const char *host, uint64_t epoch, uint8_t nonce,
			int *conn)
{
	return forward_to_target(o, host, epoch, nonce, "relay-b", conn);
}

static int64_t refused(enum fwd_refused why)
{
	return atomic_load(&g_metrics.forward_refused[why]);
}

static void a_live_tunnel_at_the_routed_epoch_takes_the_player(void **state)
{
	struct owner *o = *state;
	int64_t adopted = M_GET(players_adopted_total);
	int fd;
	assert_int_equal(forward_once(o, LIVE_HOST, LIVE_EPOCH, 1, &fd), FWD_ACCEPT);
	assert_int_equal(M_GET(players_adopted_total), adopted + 1);
	assert_false(dlist_empty(&o->r.players)); /* now a player of this relay */
	close(fd);
}

/* Fencing: a route read before the agent re-registered (older epoch), or one this relay has not
 * caught up with (newer), names another session of the name: A must look it up again. */
static void a_route_to_another_epoch_is_not_here(void **state)
{
	struct owner *o = *state;
	int64_t not_here = M_GET(forward_not_here_total);
	static const uint64_t stale[] = {LIVE_EPOCH - 1, LIVE_EPOCH + 1, 0};
	for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
		int fd;
		assert_int_equal(forward_once(o, LIVE_HOST, stale[i], (uint8_t)(10 + i), &fd),
				 FWD_NOT_HERE);
		uint8_t b;
		assert_int_equal(recv(fd, &b, 1, 0), 0); /* and the owner closed it */
		close(fd);
	}
	assert_int_equal(M_GET(forward_not_here_total), not_here + 3);
	assert_true(dlist_empty(&o->r.players));
}

static void a_name_without_a_live_tunnel_is_not_here(void **state)
{
	struct owner *o = *state;
	int fd;
	assert_int_equal(forward_once(o, "other.eu.dvv.one", LIVE_EPOCH, 20, &fd), FWD_NOT_HERE);
	close(fd);
	o->t.state = TS_REGISTERING; /* between sessions */
	assert_int_equal(forward_once(o, LIVE_HOST, LIVE_EPOCH, 21, &fd), FWD_NOT_HERE);
	close(fd);
	assert_true(dlist_empty(&o->r.players));
}

static void a_replayed_header_is_refused(void **state)
{
	struct owner *o = *state;
	int fd;
	assert_int_equal(forward_once(o, LIVE_HOST, LIVE_EPOCH, 30, &fd), FWD_ACCEPT);
	close(fd);
	int64_t before = refused(FWD_REFUSED_replay);
	assert_int_equal(forward_once(o, LIVE_HOST, LIVE_EPOCH, 30, &fd), -1);
	close(fd);
	assert_int_equal(refused(FWD_REFUSED_replay), before + 1);
}

/* A header is bound to the relay its sender's route named: captured on (or misrouted to) another
 * relay's internal port, it is refused there even with a valid MAC, epoch and live tunnel. */
static void a_header_meant_for_another_relay_is_refused(void **state)
{
	struct owner *o = *state;
	int fd;
	int64_t before = refused(FWD_REFUSED_target);
	assert_int_equal(forward_to_target(o, LIVE_HOST, LIVE_EPOCH, 40, "relay-c", &fd), -1);
	close(fd);
	assert_int_equal(forward_to_target(o, LIVE_HOST, LIVE_EPOCH, 41, "", &fd), -1);
	close(fd);
	assert_int_equal(refused(FWD_REFUSED_target), before + 2);
	assert_true(dlist_empty(&o->r.players));
	/* the same header for us is taken */
	assert_int_equal(forward_to_target(o, LIVE_HOST, LIVE_EPOCH, 42, "relay-b", &fd), FWD_ACCEPT);
	close(fd);
}

/* The replay cache never forgets an unexpired nonce to make room: when it is full, new headers
 * are refused (and counted) until nonces expire, instead of opening a replay window. */
static void a_full_nonce_cache_refuses_instead_of_evicting(void **state)
{
	struct owner *o = *state;
	int fd;
	o->r.nonce_max = 2;
	assert_int_equal(forward_once(o, LIVE_HOST, LIVE_EPOCH, 50, &fd), FWD_ACCEPT);
	close(fd);
	assert_int_equal(forward_once(o, LIVE_HOST, LIVE_EPOCH, 51, &fd), FWD_ACCEPT);
	close(fd);
	int64_t full = refused(FWD_REFUSED_nonce_full), replay = refused(FWD_REFUSED_replay);
	assert_int_equal(forward_once(o, LIVE_HOST, LIVE_EPOCH, 52, &fd), -1);
	close(fd);
	assert_int_equal(refused(FWD_REFUSED_nonce_full), full + 1);
	/* the first nonce is still remembered: its replay is refused as a replay */
	assert_int_equal(forward_once(o, LIVE_HOST, LIVE_EPOCH, 50, &fd), -1);
	close(fd);
	assert_int_equal(refused(FWD_REFUSED_replay), replay + 1);
	assert_int_equal(o->r.nnonces, 2);
}

static void a_data_connection_header_has_the_flag_and_no_host(void **state)
{
	uint8_t buf[1024];
	struct fwd_hdr h = {.flags = FWD_F_DATA, .ts_ms = now};
	struct sockaddr_in *s = (void *)&h.src, *d = (void *)&h.dst;
	s->sin_family = d->sin_family = AF_INET;
	strcpy(h.from, "relay-a");
	strcpy(h.target, "relay-b");
	size_t n = fwd_encode(&h, key, sizeof(key) - 1, buf, sizeof(buf));
	assert_true(n > FWD_FIXED);
	struct fwd_hdr got;
	char err[200];
	assert_int_equal(fwd_verify(buf, n, key, sizeof(key) - 1, now, &got, err, sizeof(err)), 0);
	assert_int_equal(got.flags, FWD_F_DATA);
	assert_string_equal(got.host, "");
	assert_string_equal(got.target, "relay-b");
	/* without the flag (what a relay that predates it reads), an empty host is malformed */
	h.flags = 0;
	n = fwd_encode(&h, key, sizeof(key) - 1, buf, sizeof(buf));
	assert_int_equal(fwd_verify(buf, n, key, sizeof(key) - 1, now, &got, err, sizeof(err)),
			 -EPROTO);
	/* and a data connection's header naming a host is malformed too */
	h.flags = FWD_F_DATA;
	strcpy(h.host, "brave-otter.eu.dvv.one");
	n = fwd_encode(&h, key, sizeof(key) - 1, buf, sizeof(buf));
	assert_int_equal(fwd_verify(buf, n, key, sizeof(key) - 1, now, &got, err, sizeof(err)),
			 -EPROTO);
	/* a player's header carries no data flag */
	n = make(buf, sizeof(buf), "brave-otter.eu.dvv.one", now);
	assert_int_equal(fwd_verify(buf, n, key, sizeof(key) - 1, now, &got, err, sizeof(err)), 0);
	assert_int_equal(got.flags, 0);
}

static void token_tags_name_the_issuing_relay(void **state)
{
	/* FNV-1a 32 of "relay-a": a fixed function, so every relay computes the same tag */
	assert_int_equal(fwd_token_tag("relay-a"), fwd_token_tag("relay-a"));
	assert_int_not_equal(fwd_token_tag("relay-a"), fwd_token_tag("relay-b"));
	assert_int_equal(fwd_token_tag("a"), 0xe40c292cu);
	assert_int_not_equal(fwd_token_tag(""), 0);
	/* the heartbeat's list: ourselves and relays without an internal port are left out */
	struct relay *r = calloc(1, sizeof(*r));
	assert_non_null(r);
	strcpy(r->cfg.instance_id, "relay-a");
	const char *kv[] = {"relay-a", "127.0.0.1:1", "relay-b", "127.0.0.1:2",
			    "relay-c", "-",	      "relay-d", "127.0.0.1:4", "odd"};
	forward_set_relays(r, kv, sizeof(kv) / sizeof(kv[0]));
	assert_int_equal(r->nfwd_relays, 2);
	assert_string_equal(r->fwd_relays[0].instance, "relay-b");
	assert_int_equal(r->fwd_relays[0].tag, fwd_token_tag("relay-b"));
	assert_string_equal(r->fwd_relays[0].addr, "127.0.0.1:2");
	assert_string_equal(r->fwd_relays[1].instance, "relay-d");
	free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(a_signed_header_verifies_and_carries_the_player),
		cmocka_unit_test(every_flipped_bit_is_refused),
		cmocka_unit_test(the_trace_id_rides_in_the_nonce),
		cmocka_unit_test(a_wrong_secret_is_refused),
		cmocka_unit_test(stale_or_future_headers_are_refused),
		cmocka_unit_test(malformed_lengths_are_refused),
		cmocka_unit_test(a_data_connection_header_has_the_flag_and_no_host),
		cmocka_unit_test(token_tags_name_the_issuing_relay),
		cmocka_unit_test_setup_teardown(a_live_tunnel_at_the_routed_epoch_takes_the_player,
						owner_up, owner_down),
		cmocka_unit_test_setup_teardown(a_route_to_another_epoch_is_not_here, owner_up,
						owner_down),
		cmocka_unit_test_setup_teardown(a_name_without_a_live_tunnel_is_not_here, owner_up,
						owner_down),
		cmocka_unit_test_setup_teardown(a_replayed_header_is_refused, owner_up, owner_down),
		cmocka_unit_test_setup_teardown(a_header_meant_for_another_relay_is_refused, owner_up,
						owner_down),
		cmocka_unit_test_setup_teardown(a_full_nonce_cache_refuses_instead_of_evicting,
						owner_up, owner_down),
	};
	return cmocka_run_group_tests_name("forward", tests, NULL, NULL);
}
