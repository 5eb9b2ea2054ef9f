/* The local server's status for the relay's edge cache (docs/protocol.md, STATUS).
 *
 * One poll is one short TCP connection to --local, driven by the agent's event loop so that it
 * never stalls a player: the handshake (next state 1, the tunnel's hostname) and the Status
 * Request go out, the Status Response (VarInt length, id 0x00, String JSON) is read with a
 * deadline and a size bound, and the connection is closed. The JSON is then re-serialized
 * compactly as an object the relay's decoder accepts, the favicon dropped if it does not fit a
 * control frame. */
#include "agent.h"
#include "log.h"
#include "mc.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int agent_status_parse(const uint8_t *buf, size_t len, size_t max, const char **json,
		       size_t *jlen)
{
	const uint8_t *p;
	size_t plen, used;
	int32_t id, slen;
	int rc = mc_parse_packet(buf, len, max, &id, &p, &plen, &used);
	if (rc == MC_NEED_MORE)
		return 0;
	if (rc == MC_ETOOBIG)
		return -EMSGSIZE;
	if (rc < 0 || id != 0x00)
		return -EPROTO;
	int k = mc_varint_read(p, plen, &slen);
	if (k <= 0 || slen < 0 || (size_t)slen > plen - (size_t)k)
		return -EPROTO;
	*json = (const char *)p + k;
	*jlen = (size_t)slen;
	return 1;
}

int agent_status_payload(const char *json, size_t len, size_t max, char **out, size_t *outlen)
{
	int rc = -EPROTO;
	char *s = NULL;
	json_error_t jerr;
	/* duplicate keys are the server's business: jansson keeps the last, and the re-serialized
	 * object has each key once, as the relay's decoder requires */
	json_t *o = json_loadb(json, len, 0, &jerr);
	if (!json_is_object(o))
		goto out;
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			/* the one big field servers send; the rest is small or dropped by the relay */
			if (!json_object_get(o, "favicon"))
				break;
			json_object_del(o, "favicon");
		}
		free(s);
		s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (!s) {
			rc = -ENOMEM;
			goto out;
		}
		size_t n = strlen(s);
		if (n <= max) {
			*out = s;
			*outlen = n;
			s = NULL;
			rc = 0;
			goto out;
		}
	}
	rc = -EMSGSIZE;
out:
	free(s);
	json_decref(o);
	return rc;
}

/* ---- the poll on the loop ---- */

static void poll_close(struct agent_status_poll *p)
{
	loop_timer_cancel(p->loop, &p->timer);
	loop_io_del(p->loop, &p->io);
	if (p->io.fd >= 0)
		close(p->io.fd);
	p->io.fd = -1;
}

/* Ends the poll and reports once; json points into the response buffer, freed after done. */
static void poll_finish(struct agent_status_poll *p, int err, const char *json, size_t len)
{
	uint8_t *buf = p->buf;
	p->buf = NULL;
	p->len = p->cap = 0;
	poll_close(p);
	p->done(p, err, json, len);
	free(buf);
}

static void poll_io_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	struct agent_status_poll *p = container_of(io, struct agent_status_poll, io);
	if (!p->connected) {
		int e = net_so_error(io->fd);
		if (e) {
			poll_finish(p, -e, NULL, 0);
			return;
		}
		if (!(events & EPOLLOUT))
			return;
		p->connected = true;
	}
	int sent = net_send_rest(io->fd, p->req, p->reqlen, &p->reqoff);
	if (sent == -EAGAIN)
		return;
	if (sent) {
		poll_finish(p, sent, NULL, 0);
		return;
	}
	if (loop_io_set(l, io, EPOLLIN | EPOLLRDHUP)) {
		poll_finish(p, -EIO, NULL, 0);
		return;
	}
	for (;;) {
		/* a length VarInt of at most 5 bytes in front of at most read_max bytes */
		size_t limit = p->read_max + 5;
		if (p->len == p->cap) {
			size_t cap = p->cap ? p->cap * 2 : 4096;
			if (cap > limit)
				cap = limit;
			if (cap == p->cap) {
				poll_finish(p, -EMSGSIZE, NULL, 0);
				return;
			}
			uint8_t *b = realloc(p->buf, cap);
			if (!b) {
				poll_finish(p, -ENOMEM, NULL, 0);
				return;
			}
			p->buf = b;
			p->cap = cap;
		}
		ssize_t n = recv(io->fd, p->buf + p->len, p->cap - p->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			poll_finish(p, n < 0 ? -errno : -ECONNRESET, NULL, 0);
			return;
		}
		p->len += (size_t)n;
		const char *json;
		size_t jlen;
		int rc = agent_status_parse(p->buf, p->len, p->read_max, &json, &jlen);
		if (rc == 0)
			continue;
		poll_finish(p, rc < 0 ? rc : 0, rc < 0 ? NULL : json, rc < 0 ? 0 : jlen);
		return;
	}
}

static void poll_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct agent_status_poll *p = container_of(t, struct agent_status_poll, timer);
	poll_finish(p, -ETIMEDOUT, NULL, 0);
}

void agent_status_poll_init(struct agent_status_poll *p, struct loop *l, agent_status_done_cb done,
			    void *data)
{
	memset(p, 0, sizeof(*p));
	p->loop = l;
	p->io = (struct loop_io){.fd = -1, .cb = poll_io_cb};
	p->timer.cb = poll_timer_cb;
	p->done = done;
	p->data = data;
	p->timeout_ms = AGENT_STATUS_TIMEOUT_MS;
	p->read_max = AGENT_STATUS_READ_MAX;
}

bool agent_status_poll_busy(const struct agent_status_poll *p) { return p->io.fd >= 0; }

int agent_status_poll_start(struct agent_status_poll *p, const struct net_addr *local,
			    const char *host)
{
	if (agent_status_poll_busy(p))
		return -EBUSY;
	/* A server behind --proxy-protocol refuses a connection without the header. This one
	 * relays no player: the LOCAL command (a health check by the proxy itself), no addresses. */
	static const uint8_t pp2_local[16] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
					      0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00};
	size_t pp = p->proxy_protocol ? sizeof(pp2_local) : 0;
	memcpy(p->req, pp2_local, pp);
	size_t n = mc_build_handshake(p->req + pp, sizeof(p->req) - pp, AGENT_STATUS_PROTOCOL, host,
				      AGENT_STATUS_PORT, MC_NEXT_STATUS);
	if (!n)
		return -EINVAL;
	n += pp;
	size_t k = mc_build_status_request(p->req + n, sizeof(p->req) - n);
	if (!k)
		return -EINVAL;
	p->reqlen = n + k;
	p->reqoff = 0;
	p->connected = false;
	p->len = p->cap = 0;
	int fd, rc = net_connect(local, &fd);
	if (rc)
		return rc;
	p->io.fd = fd;
	if ((rc = loop_io_set(p->loop, &p->io, EPOLLOUT))) {
		poll_close(p);
		return rc;
	}
	loop_timer_arm(p->loop, &p->timer, p->timeout_ms);
	return 0;
}

void agent_status_poll_stop(struct agent_status_poll *p)
{
	poll_close(p);
	free(p->buf);
	p->buf = NULL;
	p->len = p->cap = 0;
}
