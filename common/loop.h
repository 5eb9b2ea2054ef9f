/* A small epoll event loop with a timer heap. One loop per thread; nothing here is shared
 * between threads except loop_wake(), which any thread may call. */
#ifndef DVV_LOOP_H
#define DVV_LOOP_H

#include "list.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

struct loop;
struct loop_io;
struct loop_timer;

typedef void (*loop_io_cb)(struct loop *l, struct loop_io *io, uint32_t events);
typedef void (*loop_timer_cb)(struct loop *l, struct loop_timer *t);

struct loop_io {
	int fd;
	uint32_t events; /* currently registered epoll events, 0 when not registered */
	loop_io_cb cb;
};

struct loop_timer {
	uint64_t when;	/* monotonic ms */
	size_t idx;	/* position in the heap + 1; 0 = not armed */
	loop_timer_cb cb;
};

struct loop_deferred {
	void (*fn)(void *arg);
	void *arg;
};

struct loop {
	int epfd;
	int wakefd;		  /* eventfd: other threads wake us through loop_wake() */
	struct loop_io wake_io;
	void (*on_wake)(struct loop *l);
	struct loop_timer **heap; /* min-heap on when */
	size_t nheap, capheap;
	uint64_t now;		  /* cached monotonic ms, refreshed every iteration */
	struct loop_deferred *deferred; /* frees run after the current batch of events */
	size_t ndeferred, capdeferred;
	bool stop;
	void *data;		  /* owner's context */
};

int loop_init(struct loop *l);
void loop_free(struct loop *l);
int loop_run(struct loop *l);
/* Run until done(arg) is true or the monotonic deadline passes (shutdown paths: wait for a few
 * replies without blocking forever). Returns 0 if done, -ETIMEDOUT otherwise. */
int loop_run_until(struct loop *l, bool (*done)(void *arg), void *arg, uint64_t deadline_ms);
void loop_stop(struct loop *l);
void loop_wake(struct loop *l); /* thread-safe */

/* Register, change or remove interest. loop_io_set with events == 0 removes the fd. */
int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events);
void loop_io_del(struct loop *l, struct loop_io *io);

/* Run fn(arg) after the current batch of events: objects whose loop_io may still appear later in
 * the batch are freed this way. Set io->fd = -1 first: events for such an io are skipped. */
void loop_defer(struct loop *l, void (*fn)(void *arg), void *arg);

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t) { return t->idx != 0; }

#endif
