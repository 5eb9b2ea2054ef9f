/* The bpf data plane's fallbacks, for what the kernel path cannot carry: a pair whose sockets
 * the maps refused (one already half-closed, or the maps full) is relayed with splice(2)
 * (common/splice.c) on the plane's loop, and a single direction whose socket could not get
 * its verdict is relayed with recv()/send() through a userspace buffer. */
#include "dp_bpf_int.h"
#include "metrics.h"

#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define COPY_BUF (64u * 1024) /* relay buffer of a direction that could not be hooked */
#define COPY_ROUNDS 32	      /* buffers per direction per loop turn, for fairness */

/* Relay s[i] -> s[!i] for a socket that could not get its verdict (never on the kernel path):
 * recv() into the side's buffer, send() to the peer, COPY_ROUNDS buffers at most per turn so a
 * fast direction cannot starve the loop. Returns -errno on a fatal error, 1 to be called again
 * soon (rounds used up), 0 (blocked, or EOF read). */
int bp_dir_copy(struct bp_plane *b, struct bp_pair *p, int i, uint64_t *moved)
{
	struct bp_side *s = &p->s[i], *o = &p->s[!i];
	for (int round = 0; round < COPY_ROUNDS; round++) {
		if (s->off < s->len) {
			ssize_t n = send(o->io.fd, s->buf + s->off, s->len - s->off,
					 MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN)
					return -errno;
				s->want_out = true;
				return 0;
			}
			s->want_out = false;
			s->off += (uint32_t)n;
			s->copied += (uint64_t)n;
			*moved += (uint64_t)n;
			dp_acct_add(p->acct, i == 0 ? DP_TO_AGENT : DP_TO_PLAYER, (uint64_t)n);
			atomic_fetch_add(&b->n_user_bytes, (uint64_t)n);
			if (s->off < s->len)
				continue;
			s->off = s->len = 0;
		}
		if (s->eof)
			return 0;
		if (!s->buf && !(s->buf = malloc(COPY_BUF)))
			return -ENOMEM;
		ssize_t n = recv(s->io.fd, s->buf, COPY_BUF, MSG_DONTWAIT);
		if (n > 0) {
			s->len = (uint32_t)n;
			s->off = 0;
			continue;
		}
		if (n == 0) {
			s->eof = true;
			return 0;
		}
		if (errno == EINTR)
			continue;
		return errno == EAGAIN ? 0 : -errno;
	}
	return 1;
}

/* ---- demoted pairs (splice(2)) ---- */

static void demoted_done(struct splice_pair *sp, int err)
{
	struct bp_demoted *d = container_of(sp, struct bp_demoted, sp);
	if (!d->internal) {
		M_ADD(splice_bytes_total, (int64_t)(sp->dir[0].bytes + sp->dir[1].bytes));
		M_PLANE_BYTES(userspace, (int64_t)(sp->dir[0].bytes + sp->dir[1].bytes));
		if (err)
			M_INC(splice_errors_total);
		M_DEC(splices_active);
	}
	splice_pair_close(sp);
	dp_acct_pair_put(&((struct bp_plane *)sp->data)->acct, d->acct);
	d->acct = NULL;
	dlist_del(&d->node);
	loop_defer(sp->loop, free, d);
}

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t sl = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &sl) < 0)
		return -1;
	return ti.tcpi_state;
}

/* Relay the pair with splice(2): the maps refused its `which` ("player"/"agent") socket with
 * errno why. Takes both fds (RST on failure). */
void bp_pair_demote(struct bp_plane *b, int pfd, int afd, bool internal, int why,
		    const char *which, struct dp_acct *acct)
{
	struct bp_demoted *d = calloc(1, sizeof(*d));
	int rc = d ? splice_pair_start(&b->loop, &d->sp, pfd, afd, demoted_done) : -ENOMEM;
	if (rc) {
		pr_rl(LOG_WARN, "bpf plane: cannot relay a pair at all: %s", strerror(-rc));
		bp_close_abort(pfd);
		bp_close_abort(afd);
		free(d);
		dp_acct_pair_put(&b->acct, acct);
		if (!internal) {
			M_DEC(splices_active);
			M_INC(splice_errors_total);
		}
		return;
	}
	pr_rl(LOG_INFO, "bpf plane: %s socket refused by the sockhash (%s, tcp state %d): "
	      "relaying this pair with splice(2)", which, strerror(why),
	      tcp_state(which[0] == 'p' ? pfd : afd));
	d->internal = internal;
	d->sp.data = b;
	d->acct = acct;
	if (acct) { /* dir[0]: player -> agent */
		d->sp.dir[0].count = &acct->bytes[DP_TO_AGENT];
		d->sp.dir[1].count = &acct->bytes[DP_TO_PLAYER];
	}
	dlist_add_head(&b->demoted, &d->node);
	if (!internal)
		atomic_fetch_add(&b->n_demoted, 1);
}

/* At stop: end every splice(2) pair (their sockets close normally). */
/* End every demoted pair of tunnel key (plan enforcement). */
void bp_demoted_kill(struct bp_plane *b, uint64_t key)
{
	struct dlist *n = b->demoted.next;
	while (n != &b->demoted) {
		struct bp_demoted *d = container_of(n, struct bp_demoted, node);
		n = n->next;
		if (d->acct && d->acct->key == key && !d->internal)
			demoted_done(&d->sp, ECONNABORTED);
	}
}

void bp_demoted_close_all(struct bp_plane *b)
{
	struct bp_demoted *d;
	while ((d = dlist_first(&b->demoted, struct bp_demoted, node))) {
		d->sp.finished = true;
		demoted_done(&d->sp, 0);
	}
}
