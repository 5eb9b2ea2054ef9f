/* Unit tests for the agent's edge status (client/status.c): parsing the local server's Status
 * Response, turning it into a STATUS payload (favicon dropped when too big), and the
 * non-blocking poll on an event loop against a scripted local server; plus the socket helpers
 * the agent relies on for migration and re-homing (net_keepalive, net_resolve_all). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "agent.h"
#include "log.h"
#include "mc.h"
#include "net.h"
#include "proto.h"

/* A Status Response packet around json: VarInt length, id 0x00, String. */
static size_t status_packet(uint8_t *out, const char *json, size_t jlen)
{
	uint8_t body[8];
	size_t b = 0;
	body[b++] = 0x00;
	b += (size_t)mc_varint_write(body + b, (int32_t)jlen);
	size_t n = (size_t)mc_varint_write(out, (int32_t)(b + jlen));
	memcpy(out + n, body, b);
	memcpy(out + n + b, json, jlen);
	return n + b + jlen;
}

static const char sample[] = "{\"version\":{\"name\":\"1.21.1\",\"protocol\":767},"
			     "\"players\":{\"max\":20,\"online\":2},"
			     "\"description\":{\"text\":\"hello\"},\"enforcesSecureChat\":false}";

/* ---- parse ---- */

static void parse_needs_every_byte_then_points_at_the_json(void **state)
{
	static uint8_t pkt[512];
	size_t n = status_packet(pkt, sample, strlen(sample));
	const char *json;
	size_t jlen;
	for (size_t i = 0; i < n; i++)
		if (agent_status_parse(pkt, i, AGENT_STATUS_READ_MAX, &json, &jlen) != 0)
			fail_msg("a prefix of %zu of %zu bytes was not 'need more'", i, n);
	assert_int_equal(agent_status_parse(pkt, n, AGENT_STATUS_READ_MAX, &json, &jlen), 1);
	assert_int_equal(jlen, strlen(sample));
	assert_memory_equal(json, sample, jlen);
	assert_ptr_equal(json, (const char *)pkt + n - jlen);
}

static void parse_rejects_what_is_not_a_status_response(void **state)
{
	const char *json;
	size_t jlen;
	/* a length prefix above the bound is refused before the bytes arrive */
	uint8_t big[5];
	int k = mc_varint_write(big, AGENT_STATUS_READ_MAX + 1);
	assert_int_equal(agent_status_parse(big, (size_t)k, AGENT_STATUS_READ_MAX, &json, &jlen),
			 -EMSGSIZE);
	/* wrong packet id (a login disconnect, say) */
	static const uint8_t wrong_id[] = {0x04, 0x01, 0x02, '{', '}'};
	assert_int_equal(agent_status_parse(wrong_id, sizeof(wrong_id), 64, &json, &jlen), -EPROTO);
	/* a String longer than its packet */
	static const uint8_t long_str[] = {0x04, 0x00, 0x09, '{', '}'};
	assert_int_equal(agent_status_parse(long_str, sizeof(long_str), 64, &json, &jlen), -EPROTO);
	/* garbage VarInt */
	static const uint8_t bad[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	assert_int_equal(agent_status_parse(bad, sizeof(bad), 64, &json, &jlen), -EPROTO);
	/* an HTTP server on the port */
	static const char http[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
	assert_true(agent_status_parse((const uint8_t *)http, strlen(http), 64, &json, &jlen) < 0);
}

/* ---- payload ---- */

static char *with_favicon(size_t favicon_len)
{
	char *fav = malloc(favicon_len + 1);
	assert_non_null(fav);
	memset(fav, 'Q', favicon_len);
	fav[favicon_len] = 0;
	json_t *o = json_loads(sample, 0, NULL);
	assert_non_null(o);
	json_object_set_new(o, "favicon", json_string(fav));
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	free(fav);
	return s;
}

static void payload_is_compact_object_the_decoder_takes(void **state)
{
	const char *spaced = "{ \"description\" : \"a\",\n \"players\": {\"max\": 5, \"online\": 1},"
			     " \"description\": \"last one wins\" }";
	char *out = NULL;
	size_t n = 0;
	assert_int_equal(agent_status_payload(spaced, strlen(spaced), CTL_PAYLOAD_MAX, &out, &n), 0);
	assert_string_equal(out, "{\"description\":\"last one wins\",\"players\":{\"max\":5,\"online\":1}}");
	assert_int_equal(n, strlen(out));
	/* and it goes through the control protocol as it is */
	struct ctl_msg m = {.type = CTL_STATUS};
	m.u.status.json = out;
	m.u.status.len = n;
	static uint8_t frame[CTL_HDR_LEN + CTL_PAYLOAD_MAX];
	int k = ctl_encode(&m, frame, sizeof(frame));
	assert_int_equal(k, (int)(CTL_HDR_LEN + n));
	struct ctl_msg back;
	size_t used;
	char err[160];
	assert_int_equal(ctl_decode(frame, (size_t)k, &back, &used, err, sizeof(err)), 0);
	assert_int_equal(back.type, CTL_STATUS);
	free(out);
	/* not objects: nothing to send */
	const char *bad[] = {"[1]", "\"motd\"", "{\"a\":", "", "null"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(agent_status_payload(bad[i], strlen(bad[i]), CTL_PAYLOAD_MAX, &out, &n),
				 -EPROTO);
}

static void payload_drops_the_favicon_only_when_too_big(void **state)
{
	char *out = NULL;
	size_t n = 0;
	/* fits: the favicon stays */
	char *small = with_favicon(20000);
	assert_int_equal(agent_status_payload(small, strlen(small), CTL_PAYLOAD_MAX, &out, &n), 0);
	assert_int_equal(n, strlen(small));
	assert_non_null(strstr(out, "\"favicon\""));
	free(out);
	free(small);
	/* the favicon makes it too big: sent without it, the rest intact */
	char *big = with_favicon(CTL_PAYLOAD_MAX);
	assert_int_equal(agent_status_payload(big, strlen(big), CTL_PAYLOAD_MAX, &out, &n), 0);
	assert_string_equal(out, sample);
	free(out);
	free(big);
	/* too big without a favicon: nothing */
	json_t *o = json_loads(sample, 0, NULL);
	char *pad = calloc(1, CTL_PAYLOAD_MAX + 1);
	memset(pad, 'x', CTL_PAYLOAD_MAX);
	json_object_set_new(o, "forgeData", json_string(pad));
	char *huge = json_dumps(o, JSON_COMPACT);
	assert_int_equal(agent_status_payload(huge, strlen(huge), CTL_PAYLOAD_MAX, &out, &n),
			 -EMSGSIZE);
	/* ... and a favicon does not save it */
	json_object_set_new(o, "favicon", json_string("data:image/png;base64,AAAA"));
	free(huge);
	huge = json_dumps(o, JSON_COMPACT);
	assert_int_equal(agent_status_payload(huge, strlen(huge), CTL_PAYLOAD_MAX, &out, &n),
			 -EMSGSIZE);
	free(huge);
	free(pad);
	json_decref(o);
}

/* ---- the poll against a scripted local server ---- */

enum script { SERVE_SPLIT, SERVE_SILENT, SERVE_TOO_BIG, SERVE_GARBAGE };

struct fake_server {
	int lfd;
	uint16_t port;
	enum script script;
	const char *json;
	size_t skip; /* bytes in front of the handshake (a PROXY header) */
	/* what the agent sent, for checking the handshake */
	uint8_t got[600];
	size_t got_len;
	pthread_t thread;
};

static void *server_main(void *arg)
{
	struct fake_server *f = arg;
	int c = accept(f->lfd, NULL, NULL);
	if (c < 0)
		return NULL;
	/* read the handshake and the status request: two packets */
	struct mc_handshake hs;
	char err[160];
	for (;;) {
		ssize_t n = recv(c, f->got + f->got_len, sizeof(f->got) - f->got_len, 0);
		if (n <= 0)
			break;
		f->got_len += (size_t)n;
		if (f->got_len > f->skip &&
		    mc_parse_handshake(f->got + f->skip, f->got_len - f->skip, &hs, err,
				       sizeof(err)) == 0 &&
		    f->got_len >= f->skip + hs.frame_len + 2)
			break;
	}
	static uint8_t pkt[AGENT_STATUS_READ_MAX + 64];
	size_t n;
	switch (f->script) {
	case SERVE_SPLIT:
		/* one byte, then the rest in two parts: the reader must assemble them */
		n = status_packet(pkt, f->json, strlen(f->json));
		send(c, pkt, 1, MSG_NOSIGNAL);
		usleep(20000);
		send(c, pkt + 1, n / 2, MSG_NOSIGNAL);
		usleep(20000);
		send(c, pkt + 1 + n / 2, n - 1 - n / 2, MSG_NOSIGNAL);
		break;
	case SERVE_SILENT:
		usleep(600000);
		break;
	case SERVE_TOO_BIG: {
		int k = mc_varint_write(pkt, AGENT_STATUS_READ_MAX + 100);
		send(c, pkt, (size_t)k, MSG_NOSIGNAL);
		usleep(100000);
		break;
	}
	case SERVE_GARBAGE:
		/* a whole packet, but not a Status Response (id 0x1a: a play-state disconnect) */
		send(c, "\x03\x1a{}", 4, MSG_NOSIGNAL);
		usleep(100000);
		break;
	}
	usleep(50000);
	close(c);
	return NULL;
}

static void server_start_skip(struct fake_server *f, enum script script, const char *json,
			      size_t skip)
{
	memset(f, 0, sizeof(*f));
	f->skip = skip;
	f->script = script;
	f->json = json;
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(f->lfd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	socklen_t l = sizeof(sa);
	getsockname(f->lfd, (struct sockaddr *)&sa, &l);
	f->port = ntohs(sa.sin_port);
	assert_int_equal(pthread_create(&f->thread, NULL, server_main, f), 0);
}

static void server_start(struct fake_server *f, enum script script, const char *json)
{
	server_start_skip(f, script, json, 0);
}

static void server_stop(struct fake_server *f)
{
	pthread_join(f->thread, NULL);
	close(f->lfd);
}

struct result {
	int calls, err;
	char json[1024];
};

static void on_done(struct agent_status_poll *p, int err, const char *json, size_t len)
{
	struct result *r = p->data;
	r->calls++;
	r->err = err;
	if (!err && len < sizeof(r->json)) {
		memcpy(r->json, json, len);
		r->json[len] = 0;
	}
}

static bool called(void *arg) { return ((struct result *)arg)->calls > 0; }

/* Run one poll to its end (or 3 s). */
static struct result poll_once(uint16_t port, uint32_t timeout_ms, int *start_rc, bool proxy)
{
	struct loop l;
	assert_int_equal(loop_init(&l), 0);
	static struct result r;
	memset(&r, 0, sizeof(r));
	struct agent_status_poll p;
	agent_status_poll_init(&p, &l, on_done, &r);
	p.timeout_ms = timeout_ms;
	p.proxy_protocol = proxy;
	char addr[32], err[160];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	struct net_addr local;
	assert_int_equal(net_parse_addr(addr, &local, false, err, sizeof(err)), 0);
	*start_rc = agent_status_poll_start(&p, &local, "brave-otter.eu.dvv.test");
	if (*start_rc == 0) {
		assert_true(agent_status_poll_busy(&p));
		assert_int_equal(agent_status_poll_start(&p, &local, "x"), -EBUSY);
		loop_run_until(&l, called, &r, mono_ms() + 3000);
		assert_false(agent_status_poll_busy(&p));
	}
	agent_status_poll_stop(&p);
	loop_free(&l);
	return r;
}

static void poll_reads_a_split_answer_and_sends_a_proper_handshake(void **state)
{
	struct fake_server f;
	server_start(&f, SERVE_SPLIT, sample);
	int rc;
	struct result r = poll_once(f.port, 2000, &rc, false);
	server_stop(&f);
	assert_int_equal(rc, 0);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, 0);
	assert_string_equal(r.json, sample);
	/* the handshake names the tunnel, asks for status, and the status request follows */
	struct mc_handshake hs;
	char err[160];
	assert_int_equal(mc_parse_handshake(f.got, f.got_len, &hs, err, sizeof(err)), 0);
	assert_string_equal(hs.host, "brave-otter.eu.dvv.test");
	assert_int_equal(hs.next_state, MC_NEXT_STATUS);
	assert_int_equal(hs.protocol, AGENT_STATUS_PROTOCOL);
	assert_int_equal(hs.port, AGENT_STATUS_PORT);
	assert_int_equal(f.got_len, hs.frame_len + 2);
	assert_memory_equal(f.got + hs.frame_len, "\x01\x00", 2);

	/* behind --proxy-protocol: a PROXY v2 LOCAL header first (no player to name), then the same */
	server_start_skip(&f, SERVE_SPLIT, sample, 16);
	r = poll_once(f.port, 2000, &rc, true);
	server_stop(&f);
	assert_int_equal(r.err, 0);
	assert_string_equal(r.json, sample);
	static const uint8_t local[16] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
					  0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00};
	assert_memory_equal(f.got, local, 16);
	assert_int_equal(mc_parse_handshake(f.got + 16, f.got_len - 16, &hs, err, sizeof(err)), 0);
	assert_int_equal(f.got_len, 16 + hs.frame_len + 2);
}

static void poll_gives_up_on_silence_size_garbage_and_refusal(void **state)
{
	struct fake_server f;
	int rc;
	uint64_t t0 = mono_ms();
	server_start(&f, SERVE_SILENT, NULL);
	struct result r = poll_once(f.port, 200, &rc, false);
	server_stop(&f);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, -ETIMEDOUT);
	assert_true(mono_ms() - t0 < 2000);

	server_start(&f, SERVE_TOO_BIG, NULL);
	r = poll_once(f.port, 2000, &rc, false);
	server_stop(&f);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, -EMSGSIZE);

	server_start(&f, SERVE_GARBAGE, NULL);
	r = poll_once(f.port, 2000, &rc, false);
	server_stop(&f);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.err, -EPROTO);

	/* nobody listening: refused, reported from the loop (or at once) */
	server_start(&f, SERVE_SILENT, NULL);
	uint16_t port = f.port;
	close(f.lfd); /* the accept in the thread fails */
	pthread_join(f.thread, NULL);
	r = poll_once(port, 2000, &rc, false);
	if (rc == 0) {
		assert_int_equal(r.calls, 1);
		assert_int_equal(r.err, -ECONNREFUSED);
	} else {
		assert_int_equal(rc, -ECONNREFUSED);
		assert_int_equal(r.calls, 0);
	}
}

/* ---- socket helpers ---- */

static void keepalive_sets_every_knob(void **state)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(net_keepalive(fd, 15), 0);
	int v = 0;
	socklen_t l = sizeof(v);
	getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &l);
	assert_int_equal(v, 1);
	getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &l);
	assert_int_equal(v, 15);
	getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, &l);
	assert_int_equal(v, NET_KEEPALIVE_INTVL_S);
	getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &l);
	assert_int_equal(v, NET_KEEPALIVE_CNT);
	unsigned int u = 0;
	l = sizeof(u);
	getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &u, &l);
	assert_int_equal(u, NET_USER_TIMEOUT_MS);
	close(fd);
	/* not a TCP socket: an error, not a crash */
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_true(net_keepalive(sv[0], 15) < 0);
	close(sv[0]);
	close(sv[1]);
}

static void resolve_all_numeric_and_names(void **state)
{
	struct net_addr out[AGENT_MAX_ADDRS];
	char err[256], s[96];
	assert_int_equal(net_resolve_all("127.0.0.1:7000", out, AGENT_MAX_ADDRS, err, sizeof(err)), 1);
	net_addr_fmt((struct sockaddr *)&out[0].ss, s, sizeof(s));
	assert_string_equal(s, "127.0.0.1:7000");
	assert_int_equal(net_resolve_all("[::1]:7001", out, AGENT_MAX_ADDRS, err, sizeof(err)), 1);
	net_addr_fmt((struct sockaddr *)&out[0].ss, s, sizeof(s));
	assert_string_equal(s, "[::1]:7001");
	assert_int_equal(net_resolve_all("nohostport", out, AGENT_MAX_ADDRS, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "bad address"));
	assert_true(net_resolve_all("no-such-host.invalid:1", out, AGENT_MAX_ADDRS, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "cannot resolve"));
	/* a name: every address once, each with the port (localhost may be 127.0.0.1 and ::1) */
	int n = net_resolve_all("localhost:7002", out, AGENT_MAX_ADDRS, err, sizeof(err));
	assert_true(n >= 1);
	for (int i = 0; i < n; i++) {
		assert_int_equal(net_addr_port((struct sockaddr *)&out[i].ss), 7002);
		for (int j = 0; j < i; j++)
			assert_false(out[i].len == out[j].len && !memcmp(&out[i].ss, &out[j].ss, out[i].len));
	}
	/* bounded by max */
	assert_int_equal(net_resolve_all("localhost:7002", out, 1, err, sizeof(err)), 1);
}

int main(void)
{
	log_init("test_agent_status", LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_needs_every_byte_then_points_at_the_json),
		cmocka_unit_test(parse_rejects_what_is_not_a_status_response),
		cmocka_unit_test(payload_is_compact_object_the_decoder_takes),
		cmocka_unit_test(payload_drops_the_favicon_only_when_too_big),
		cmocka_unit_test(poll_reads_a_split_answer_and_sends_a_proper_handshake),
		cmocka_unit_test(poll_gives_up_on_silence_size_garbage_and_refusal),
		cmocka_unit_test(keepalive_sets_every_knob),
		cmocka_unit_test(resolve_all_numeric_and_names),
	};
	return cmocka_run_group_tests_name("agent_status", tests, NULL, NULL);
}
