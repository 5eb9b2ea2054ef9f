/* The control loop -> data-plane thread job queue (common/handoff.c): jobs come out once, in
 * the order they went in, across the batches drain copies out; a push from another thread wakes
 * the consumer's loop, whose on_wake drains. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "handoff.h"
#include "log.h"
#include "loop.h"

#include <pthread.h>
#include <string.h>

#define NJOBS 1000 /* many batches, and several growths of the queue */

struct seen {
	int n;
	int player_fd[NJOBS];
};

static void record(void *arg, const struct handoff_job *j)
{
	struct seen *s = arg;
	assert_true(s->n < NJOBS);
	s->player_fd[s->n++] = j->player_fd;
	assert_int_equal(j->agent_fd, -j->player_fd);
	assert_int_equal(j->tunnel_key, (uint64_t)j->player_fd * 3);
}

static void jobs_come_out_once_in_order(void **state)
{
	struct loop l;
	struct handoff h;
	struct seen s = {0};
	assert_int_equal(loop_init(&l), 0);
	handoff_init(&h, &l);
	handoff_drain(&h, record, &s); /* empty: nothing */
	assert_int_equal(s.n, 0);
	for (int i = 1; i <= NJOBS; i++) {
		struct handoff_job j = {.player_fd = i, .agent_fd = -i, .tunnel_key = i * 3ull};
		assert_int_equal(handoff_push(&h, &j), 0);
	}
	handoff_drain(&h, record, &s);
	assert_int_equal(s.n, NJOBS);
	for (int i = 0; i < NJOBS; i++)
		assert_int_equal(s.player_fd[i], i + 1);
	handoff_drain(&h, record, &s); /* drained: nothing more */
	assert_int_equal(s.n, NJOBS);
	handoff_free(&h);
	loop_free(&l);
}

struct consumer {
	struct loop loop;
	struct handoff jobs;
	struct seen seen;
};

static void consumer_wake(struct loop *l)
{
	struct consumer *c = l->data;
	handoff_drain(&c->jobs, record, &c->seen);
}

static bool all_seen(void *arg) { return ((struct consumer *)arg)->seen.n == NJOBS; }

static void *producer(void *arg)
{
	struct consumer *c = arg;
	for (int i = 1; i <= NJOBS; i++) {
		struct handoff_job j = {.player_fd = i, .agent_fd = -i, .tunnel_key = i * 3ull};
		if (handoff_push(&c->jobs, &j))
			return "push failed";
	}
	return NULL;
}

static void a_push_from_another_thread_wakes_the_consumer(void **state)
{
	static struct consumer c;
	pthread_t t;
	void *err = NULL;
	memset(&c, 0, sizeof(c));
	assert_int_equal(loop_init(&c.loop), 0);
	c.loop.data = &c;
	c.loop.on_wake = consumer_wake;
	handoff_init(&c.jobs, &c.loop);
	assert_int_equal(pthread_create(&t, NULL, producer, &c), 0);
	int rc = loop_run_until(&c.loop, all_seen, &c, mono_ms() + 10000);
	pthread_join(t, &err);
	assert_null(err);
	assert_int_equal(rc, 0);
	for (int i = 0; i < NJOBS; i++)
		assert_int_equal(c.seen.player_fd[i], i + 1);
	handoff_free(&c.jobs);
	loop_free(&c.loop);
}

int main(void)
{
	log_init("test_handoff", LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(jobs_come_out_once_in_order),
		cmocka_unit_test(a_push_from_another_thread_wakes_the_consumer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
