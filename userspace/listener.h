/* The relay's listening sockets (player, agent, internal) on its event loop.
 *
 * They are level-triggered: a connection left in the backlog wakes the loop again at once. When
 * accept4() fails for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) the
 * connection stays there, so instead of returning and spinning the listener stops being polled
 * and a timer re-arms it LISTENER_PAUSE_MS later; connections already accepted keep being served
 * meanwhile. Each such failure is counted in dvv_relay_accept_errors_total{reason}. */
#ifndef DVV_LISTENER_H
#define DVV_LISTENER_H

#include "log.h"
#include "loop.h"

#include <stdbool.h>
#include <sys/socket.h>

#define LISTENER_PAUSE_MS 100

struct listener {
	struct loop_io io;	/* io.fd: the listening socket, -1 when closed */
	struct loop_timer rearm;
	const char *name;	/* "player", "agent", "internal": for logs */
	struct log_rl rl;	/* warnings of this listener */
	bool keepalive;		/* accepted connections get net_keepalive(): long-lived ones that
				 * cross NATs and firewalls (agent, internal); set after open */
	/* one-port mode (oneport.h): a connection accepted on the shared port and classified,
	 * handed to this listener's accept callback as if accepted here; -1 when none */
	int handed_fd;
	struct sockaddr_storage handed_src;
};

/* Take over the listening socket fd (closed on failure) and poll it; cb is called on EPOLLIN and
 * takes connections with listener_accept(). */
int listener_open(struct loop *l, struct listener *ls, int fd, const char *name, loop_io_cb cb);
void listener_close(struct loop *l, struct listener *ls);

/* For an accept callback: the next connection (non-blocking, close-on-exec), or -1 when the
 * callback should return: the backlog is empty, or the listener was just paused. sa/sl may be
 * NULL as for accept4(). With ls->keepalive, the connection has net_keepalive() applied. */
int listener_accept(struct loop *l, struct loop_io *io, struct sockaddr *sa, socklen_t *sl);

/* One-port mode: give the already accepted connection fd (peer src) to ls's accept callback,
 * which takes it through listener_accept() exactly as one accepted on its own socket (the
 * callback's admission checks and caps apply). ls need not be listening (io.fd -1). The
 * callback owns fd from here on; one it did not take is closed. */
void listener_hand(struct loop *l, struct listener *ls, int fd, const struct sockaddr_storage *src);

#endif
