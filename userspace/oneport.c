/* One-port mode (oneport.h): the shared listener, and the first-bytes classifier that hands each
 * connection to the player or the agent path. */
#include "oneport.h"
#include "metrics.h"
#include "relay.h"
#include "mc.h"
#include "proto.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct sniff {
	struct dlist node;
	struct loop_io io;
	struct loop_timer timer;
	struct oneport *op;
	struct sockaddr_storage src;
	long slot;		/* per-source pending slot in op->rl */
};

struct oneport {
	struct relay *r;
	struct listener l;
	struct ratelimit rl;	/* only its per-source pending count is used */
	struct dlist sniffs;
	int nsniff;
};

/* A Minecraft frame: VarInt length (MC_HANDSHAKE_MAX needs 2 bytes; a padded third is
 * tolerated), then the handshake's packet id 0x00. */
static enum oneport_kind classify_frame(const uint8_t *b, size_t n)
{
	uint32_t len = 0;
	size_t i = 0;
	for (;; i++) {
		if (i == n)
			return ONEPORT_MORE;
		if (i == 3)
			return ONEPORT_BAD;
		len |= (uint32_t)(b[i] & 0x7f) << (7 * i);
		if (!(b[i] & 0x80))
			break;
	}
	if (len == 0 || len > MC_HANDSHAKE_MAX)
		return ONEPORT_BAD;
	if (i + 1 == n)
		return ONEPORT_MORE;
	return b[i + 1] == 0x00 ? ONEPORT_PLAYER : ONEPORT_BAD;
}

enum oneport_kind oneport_classify(const uint8_t *b, size_t n)
{
	if (n == 0)
		return ONEPORT_MORE;
	if (b[0] == 0xFE) /* legacy ping, or a modern frame of length 254.. : the player path
			   * tells them apart (mc.c) */
		return ONEPORT_PLAYER;
	if (b[0] == 0x16) { /* TLS handshake record, version 3.x; else a 22-byte frame */
		if (n < 2)
			return ONEPORT_MORE;
		if (b[1] == 0x03)
			return ONEPORT_AGENT;
		return classify_frame(b, n);
	}
	size_t m = n < 4 ? n : 4;
	if (!memcmp(b, DATA_ATTACH_MAGIC, m)) /* 'D' is also a 68-byte frame: "D\0" */
		return m == 4 ? ONEPORT_AGENT : ONEPORT_MORE;
	return classify_frame(b, n);
}

/* Forget s; its descriptor is closed unless keep_fd (handed on). Freed after the current batch
 * of events, which may still name its io. */
static void sniff_end(struct sniff *s, bool keep_fd)
{
	struct oneport *op = s->op;
	struct loop *l = &op->r->loop;
	loop_timer_cancel(l, &s->timer);
	loop_io_del(l, &s->io);
	if (!keep_fd)
		close(s->io.fd);
	s->io.fd = -1;
	rl_pending_done(&op->rl, s->slot, &s->src);
	dlist_del(&s->node);
	op->nsniff--;
	M_DEC(oneport_pending);
	loop_defer(l, free, s);
}

static void sniff_refuse(struct sniff *s, const char *why)
{
	M_INC(oneport_refused_total);
	pr_rl(LOG_INFO, "one port: connection closed: %s", why);
	sniff_end(s, false);
}

static void sniff_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)events;
	struct sniff *s = container_of(io, struct sniff, io);
	struct relay *r = s->op->r;
	uint8_t b[ONEPORT_PEEK_MAX];
	ssize_t n = recv(io->fd, b, sizeof(b), MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		sniff_refuse(s, n == 0 ? "closed before its first bytes" : strerror(errno));
		return;
	}
	enum oneport_kind k = oneport_classify(b, (size_t)n);
	if (k == ONEPORT_MORE && (size_t)n < sizeof(b))
		return; /* edge-triggered: the next bytes wake us */
	if (k == ONEPORT_MORE || k == ONEPORT_BAD) {
		sniff_refuse(s, "first bytes are neither Minecraft nor a DVV agent");
		return;
	}
	int fd = io->fd;
	struct sockaddr_storage src = s->src;
	sniff_end(s, true); /* before the hand-over: the target's own caps count it from here */
	if (k == ONEPORT_PLAYER) {
		M_INC(oneport_players_total);
		listener_hand(l, &r->player_l, fd, &src);
	} else {
		M_INC(oneport_agents_total);
		listener_hand(l, &r->agent_l, fd, &src);
	}
}

static void sniff_timer_cb(struct loop *l, struct loop_timer *t)
{
	(void)l;
	M_INC(oneport_timeout_total);
	sniff_refuse(container_of(t, struct sniff, timer), "no deciding bytes before the deadline");
}

static void oneport_accept_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)events;
	struct oneport *op = container_of(io, struct oneport, l.io);
	struct relay *r = op->r;
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = listener_accept(l, io, (struct sockaddr *)&ss, &sl);
		if (fd < 0)
			return;
		if (op->nsniff >= r->cfg.max_handshakes) {
			M_INC(oneport_refused_total);
			close(fd);
			continue;
		}
		long slot = rl_pending_add(&op->rl, &ss);
		if (slot < 0) {
			M_INC(oneport_refused_total);
			close(fd);
			continue;
		}
		struct sniff *s = calloc(1, sizeof(*s));
		if (!s) {
			rl_pending_done(&op->rl, slot, &ss);
			close(fd);
			continue;
		}
		*s = (struct sniff){.io = {.fd = fd, .cb = sniff_io_cb},
				    .timer = {.cb = sniff_timer_cb},
				    .op = op,
				    .src = ss,
				    .slot = slot};
		if (loop_io_set(l, &s->io, EPOLLIN | EPOLLRDHUP | EPOLLET)) {
			rl_pending_done(&op->rl, slot, &ss);
			close(fd);
			free(s);
			continue;
		}
		dlist_add_tail(&op->sniffs, &s->node);
		op->nsniff++;
		M_INC(oneport_pending);
		loop_timer_arm(l, &s->timer, (uint64_t)r->cfg.handshake_timeout_ms);
		/* the first bytes often came with the connection */
		sniff_io_cb(l, &s->io, EPOLLIN);
	}
}

int oneport_start(struct relay *r)
{
	char err[160];
	int rc, fd = -1;
	struct oneport *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->r = r;
	op->l.io.fd = -1;
	dlist_init(&op->sniffs);
	if (rl_init(&op->rl, 65536, 1, 1, 1, (uint32_t)r->cfg.max_pending_per_source)) {
		free(op);
		return -ENOMEM;
	}
	r->oneport = op;
	if (net_parse_addr(r->cfg.one_port, &r->player_addr, false, err, sizeof(err))) {
		pr_err("--one-port: %s", err);
		rc = -EINVAL;
		goto out;
	}
	r->agent_addr = r->player_addr;
	fd = net_listen(&r->player_addr, 4096, err, sizeof(err));
	if (fd < 0) {
		pr_err("--one-port: %s", err);
		rc = fd;
		goto out;
	}
	rc = listener_open(&r->loop, &op->l, fd, "one-port", oneport_accept_cb);
out:
	return rc; /* on failure oneport_stop() (relay_free) frees what was made */
}

void oneport_stop(struct relay *r)
{
	struct oneport *op = r->oneport;
	if (!op)
		return;
	listener_close(&r->loop, &op->l);
	while (!dlist_empty(&op->sniffs)) {
		sniff_end(container_of(op->sniffs.next, struct sniff, node), false);
	}
	rl_free(&op->rl);
	free(op);
	r->oneport = NULL;
}
