/* The epoll event loop with its timer heap and deferred calls (loop.h). */
#include "loop.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void wake_cb(struct loop *l, struct loop_io *io, uint32_t events)
{
	uint64_t v;
	while (read(io->fd, &v, sizeof(v)) > 0)
		;
	if (l->on_wake)
		l->on_wake(l);
}

int loop_init(struct loop *l)
{
	memset(l, 0, sizeof(*l));
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return -errno;
	l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wakefd < 0) {
		int e = -errno;
		close(l->epfd);
		l->epfd = -1;
		return e;
	}
	l->wake_io.fd = l->wakefd;
	l->wake_io.cb = wake_cb;
	l->now = mono_ms();
	return loop_io_set(l, &l->wake_io, EPOLLIN);
}

void loop_free(struct loop *l)
{
	if (l->wakefd >= 0)
		close(l->wakefd);
	if (l->epfd >= 0)
		close(l->epfd);
	for (size_t i = 0; i < l->ndeferred; i++)
		l->deferred[i].fn(l->deferred[i].arg);
	free(l->deferred);
	l->deferred = NULL;
	free(l->heap);
	l->heap = NULL;
	l->nheap = l->capheap = 0;
	l->epfd = l->wakefd = -1;
}

void loop_stop(struct loop *l) { l->stop = true; }

void loop_wake(struct loop *l)
{
	uint64_t one = 1;
	ssize_t w = write(l->wakefd, &one, sizeof(one));
	(void)w;
}

int loop_io_set(struct loop *l, struct loop_io *io, uint32_t events)
{
	if (events == io->events)
		return 0;
	if (events == 0) {
		loop_io_del(l, io);
		return 0;
	}
	struct epoll_event ev = {.events = events, .data.ptr = io};
	int op = io->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(l->epfd, op, io->fd, &ev) < 0)
		return -errno;
	io->events = events;
	return 0;
}

void loop_io_del(struct loop *l, struct loop_io *io)
{
	if (io->events && io->fd >= 0)
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->events = 0;
}

/* ---- timer heap ---- */

static void heap_swap(struct loop *l, size_t a, size_t b)
{
	struct loop_timer *t = l->heap[a];
	l->heap[a] = l->heap[b];
	l->heap[b] = t;
	l->heap[a]->idx = a + 1;
	l->heap[b]->idx = b + 1;
}

static void heap_up(struct loop *l, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (l->heap[p]->when <= l->heap[i]->when)
			break;
		heap_swap(l, p, i);
		i = p;
	}
}

static void heap_down(struct loop *l, size_t i)
{
	for (;;) {
		size_t c = 2 * i + 1, m = i;
		if (c < l->nheap && l->heap[c]->when < l->heap[m]->when)
			m = c;
		if (c + 1 < l->nheap && l->heap[c + 1]->when < l->heap[m]->when)
			m = c + 1;
		if (m == i)
			return;
		heap_swap(l, i, m);
		i = m;
	}
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	if (!t->idx)
		return;
	size_t i = t->idx - 1;
	t->idx = 0;
	l->nheap--;
	if (i == l->nheap)
		return;
	l->heap[i] = l->heap[l->nheap];
	l->heap[i]->idx = i + 1;
	heap_down(l, i);
	heap_up(l, i);
}

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms)
{
	loop_timer_cancel(l, t);
	if (l->nheap == l->capheap) {
		size_t cap = l->capheap ? l->capheap * 2 : 64;
		struct loop_timer **h = realloc(l->heap, cap * sizeof(*h));
		if (!h)
			abort(); /* out of memory for a timer slot: nothing sane left to do */
		l->heap = h;
		l->capheap = cap;
	}
	t->when = mono_ms() + delay_ms;
	l->heap[l->nheap++] = t;
	t->idx = l->nheap;
	heap_up(l, l->nheap - 1);
}

void loop_defer(struct loop *l, void (*fn)(void *arg), void *arg)
{
	if (l->ndeferred == l->capdeferred) {
		size_t cap = l->capdeferred ? l->capdeferred * 2 : 64;
		struct loop_deferred *d = realloc(l->deferred, cap * sizeof(*d));
		if (!d)
			abort();
		l->deferred = d;
		l->capdeferred = cap;
	}
	l->deferred[l->ndeferred++] = (struct loop_deferred){fn, arg};
}

static void run_deferred(struct loop *l)
{
	/* fn may defer more work: index loop, not a snapshot */
	for (size_t i = 0; i < l->ndeferred; i++)
		l->deferred[i].fn(l->deferred[i].arg);
	l->ndeferred = 0;
}

static int next_timeout(struct loop *l)
{
	if (!l->nheap)
		return 1000;
	uint64_t w = l->heap[0]->when;
	if (w <= l->now)
		return 0;
	uint64_t d = w - l->now;
	return d > 1000 ? 1000 : (int)d;
}

static int loop_once(struct loop *l, int max_wait_ms);

int loop_run(struct loop *l)
{
	while (!l->stop) {
		int rc = loop_once(l, 1000);
		if (rc)
			return rc;
	}
	return 0;
}

int loop_run_until(struct loop *l, bool (*done)(void *arg), void *arg, uint64_t deadline_ms)
{
	while (!done(arg)) {
		uint64_t now = mono_ms();
		if (now >= deadline_ms)
			return -ETIMEDOUT;
		int rc = loop_once(l, (int)(deadline_ms - now));
		if (rc)
			return rc;
	}
	return 0;
}

static int loop_once(struct loop *l, int max_wait_ms)
{
	struct epoll_event evs[256];
	{
		l->now = mono_ms();
		int wait = next_timeout(l);
		if (wait > max_wait_ms)
			wait = max_wait_ms;
		int n = epoll_wait(l->epfd, evs, 256, wait);
		if (n < 0 && errno != EINTR)
			return -errno;
		l->now = mono_ms();
		for (int i = 0; i < n; i++) {
			struct loop_io *io = evs[i].data.ptr;
			if (io->fd >= 0)
				io->cb(l, io, evs[i].events);
		}
		run_deferred(l);
		while (l->nheap && l->heap[0]->when <= l->now) {
			struct loop_timer *t = l->heap[0];
			loop_timer_cancel(l, t);
			t->cb(l, t);
		}
		run_deferred(l);
	}
	return 0;
}
