/* The relay's listening sockets (listener.h): accept loops, pausing on descriptor or memory
 * exhaustion, and the per-listener socket options. */
#include "listener.h"
#include "metrics.h"
#include "net.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void rearm_cb(struct loop *l, struct loop_timer *t)
{
	struct listener *ls = container_of(t, struct listener, rearm);
	if (ls->io.fd < 0)
		return;
	int rc = loop_io_set(l, &ls->io, EPOLLIN);
	if (rc) {
		pr_warn("%s listener: cannot poll it again: %s (retrying)", ls->name, strerror(-rc));
		loop_timer_arm(l, t, LISTENER_PAUSE_MS);
	}
}

int listener_open(struct loop *l, struct listener *ls, int fd, const char *name, loop_io_cb cb)
{
	*ls = (struct listener){.io = {.fd = fd, .cb = cb}, .rearm = {.cb = rearm_cb}, .name = name,
				.handed_fd = -1};
	if (fd < 0)
		return 0; /* one-port mode: connections only arrive through listener_hand() */
	int rc = loop_io_set(l, &ls->io, EPOLLIN);
	if (rc) {
		close(fd);
		ls->io.fd = -1;
	}
	return rc;
}

void listener_close(struct loop *l, struct listener *ls)
{
	loop_timer_cancel(l, &ls->rearm);
	if (ls->io.fd < 0)
		return;
	loop_io_del(l, &ls->io);
	close(ls->io.fd);
	ls->io.fd = -1;
}

/* Stop polling the listener until the rearm timer fires: the connection that could not be
 * accepted stays in the backlog and would wake a level-triggered loop again at once. */
static void listener_pause(struct loop *l, struct listener *ls, int err)
{
	enum accept_error why;
	switch (err) {
	case EMFILE:
		why = ACCEPT_ERR_emfile;
		break;
	case ENFILE:
		why = ACCEPT_ERR_enfile;
		break;
	case ENOBUFS:
		why = ACCEPT_ERR_enobufs;
		break;
	case ENOMEM:
		why = ACCEPT_ERR_enomem;
		break;
	default:
		why = ACCEPT_ERR_other;
	}
	atomic_fetch_add_explicit(&g_metrics.accept_errors[why], 1, memory_order_relaxed);
	loop_io_del(l, &ls->io);
	loop_timer_arm(l, &ls->rearm, LISTENER_PAUSE_MS);
	uint32_t sup;
	if (log_get_level() >= LOG_WARN && log_rl_allow(&ls->rl, 3, &sup)) {
		char more[48] = "";
		if (sup)
			snprintf(more, sizeof(more), " (%u similar lines suppressed)", sup);
		pr_warn("%s accept: %s: not accepting for %d ms%s%s", ls->name, strerror(err),
			LISTENER_PAUSE_MS, err == EMFILE || err == ENFILE ? ", raise the fd limit" : "",
			more);
	}
}

int listener_accept(struct loop *l, struct loop_io *io, struct sockaddr *sa, socklen_t *sl)
{
	struct listener *ls = container_of(io, struct listener, io);
	socklen_t len = sl ? *sl : 0;
	if (ls->handed_fd >= 0) {
		int fd = ls->handed_fd;
		ls->handed_fd = -1;
		if (sa && sl) {
			socklen_t n = len < sizeof(ls->handed_src) ? len : sizeof(ls->handed_src);
			memcpy(sa, &ls->handed_src, n);
			*sl = ls->handed_src.ss_family == AF_INET ? sizeof(struct sockaddr_in)
								  : sizeof(struct sockaddr_in6);
		}
		if (ls->keepalive && net_keepalive(fd, 0))
			pr_rl(LOG_WARN, "%s accept: keepalive: %s", ls->name, strerror(errno));
		return fd;
	}
	if (io->fd < 0)
		return -1; /* not listening itself (one-port mode) */
	/* bounded: a listener that keeps failing with one of the "retry" errors must not hold the
	 * loop; level-triggered polling brings us back for what is left */
	for (int tries = 0; tries < 64; tries++) {
		if (sl)
			*sl = len;
		int fd = accept4(io->fd, sa, sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			/* idle NAT mappings are kept fresh, a dead peer found in ~30 s */
			if (ls->keepalive && net_keepalive(fd, 0))
				pr_rl(LOG_WARN, "%s accept: keepalive: %s", ls->name, strerror(errno));
			return fd;
		}
		switch (errno) {
		case EAGAIN:
			return -1;
		case EINTR:
		case ECONNABORTED:
		case EPERM: /* a firewall rule refused this one */
		case EPROTO:
		case ENOPROTOOPT:
		case ENETDOWN:
		case ENETUNREACH:
		case EHOSTDOWN:
		case EHOSTUNREACH:
		case ENONET:
		case EOPNOTSUPP:
			continue; /* that connection is gone; accept(2) says retry */
		default:
			/* EMFILE, ENFILE, ENOBUFS, ENOMEM or worse: the connection is still queued */
			listener_pause(l, ls, errno);
			return -1;
		}
	}
	return -1;
}

void listener_hand(struct loop *l, struct listener *ls, int fd, const struct sockaddr_storage *src)
{
	ls->handed_fd = fd;
	ls->handed_src = *src;
	ls->io.cb(l, &ls->io, EPOLLIN);
	if (ls->handed_fd >= 0) { /* the callback returned without taking it */
		close(ls->handed_fd);
		ls->handed_fd = -1;
	}
}
