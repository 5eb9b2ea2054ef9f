/* Hand-off of joined pairs from a control loop to a data-plane thread (the relay's userspace
 * plane, the agent's workers: spool.h): a FIFO of jobs under a
 * mutex, whose consumer loop is woken (loop_wake(): its eventfd) by every push. Contract: any
 * thread may push; only the consumer's thread drains, from its loop's on_wake, and once that
 * thread has stopped, whoever stops the plane drains what is left. The queue grows as needed,
 * like the per-plane queues it replaces: a push fails only when memory runs out. */
#ifndef DVV_HANDOFF_H
#define DVV_HANDOFF_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct dp_acct;

struct handoff_job {
	int player_fd, agent_fd;
	uint64_t tunnel_key;
	struct dp_acct *acct; /* the pair's accounting reference (dp_acct.h), NULL: not counted */
	bool internal; /* the plane's own self-test pair: kept out of the relay's metrics */
	void *data;    /* the pusher's own context for the pair (the agent's player), or NULL */
};

struct handoff {
	pthread_mutex_t lock; /* protects q and nq, capq */
	struct handoff_job *q;
	size_t nq, capq;
	struct loop *consumer;
};

typedef void (*handoff_fn)(void *arg, const struct handoff_job *j);

void handoff_init(struct handoff *h, struct loop *consumer);
/* Frees the queue; jobs still in it are dropped as they are (drain first). */
void handoff_free(struct handoff *h);
/* Queue *j and wake the consumer. 0, or -ENOMEM: nothing was queued and j's fds are still the
 * caller's to close. */
int handoff_push(struct handoff *h, const struct handoff_job *j);
/* Call fn(arg, job) for each queued job, oldest first, outside the lock, until the queue is
 * empty (jobs pushed meanwhile included). */
void handoff_drain(struct handoff *h, handoff_fn fn, void *arg);

#endif
