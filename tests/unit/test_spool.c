/* The data-plane worker pool (common/spool.c): jobs run on the workers' own threads, round
 * robin, in push order per worker; a job pushed to all reaches every worker; stopping runs what
 * was queued before the stop and hands each worker's leftovers to the owner on its own thread. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "log.h"
#include "spool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define NW 2
#define NJOBS 400

struct rec {
	pthread_t main;
	atomic_int total;
	int n[NW];
	int seq[NW][NJOBS];
	bool off_main[NW];
	struct dlist items[NJOBS]; /* what the "pairs" lists hold in the stop test */
};

static int widx(struct spool_worker *w) { return (int)(w - w->pool->w); }

static void record(struct spool_worker *w, const struct handoff_job *j)
{
	struct rec *r = w->pool->data;
	int i = widx(w);
	r->off_main[i] = !pthread_equal(pthread_self(), r->main);
	if (r->n[i] < NJOBS)
		r->seq[i][r->n[i]++] = j->player_fd;
	if (j->data) /* a "pair" that stays on the worker until the pool stops */
		dlist_add_tail(&w->pairs, j->data);
	atomic_fetch_add(&r->total, 1);
}

/* Bounded wait for the workers (a bound, not a timing assertion: 10 s of nothing fails). */
static void wait_total(struct rec *r, int want)
{
	for (int i = 0; i < 10000 && atomic_load(&r->total) < want; i++)
		nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	assert_int_equal(atomic_load(&r->total), want);
}

static void jobs_run_on_the_workers_round_robin_in_order(void **state)
{
	static struct rec r;
	struct spool p;
	memset(&r, 0, sizeof(r));
	r.main = pthread_self();
	assert_int_equal(spool_start(&p, NW, record, &r), 0);
	assert_int_equal(p.nw, NW);
	for (int i = 1; i <= NJOBS; i++) {
		struct handoff_job j = {.player_fd = i, .agent_fd = -1};
		assert_int_equal(spool_push(&p, &j), 0);
	}
	wait_total(&r, NJOBS);
	for (int w = 0; w < NW; w++) {
		assert_true(r.off_main[w]);
		assert_int_equal(r.n[w], NJOBS / NW);
		for (int k = 1; k < r.n[w]; k++)
			assert_true(r.seq[w][k] > r.seq[w][k - 1]);
	}
	spool_stop(&p, NULL, NULL, NULL);
	assert_null(p.w);
}

static void a_job_pushed_to_all_reaches_every_worker(void **state)
{
	static struct rec r;
	struct spool p;
	memset(&r, 0, sizeof(r));
	r.main = pthread_self();
	assert_int_equal(spool_start(&p, NW, record, &r), 0);
	struct handoff_job j = {.player_fd = 7, .agent_fd = -1};
	assert_int_equal(spool_push_all(&p, &j), 0);
	wait_total(&r, NW);
	for (int w = 0; w < NW; w++) {
		assert_int_equal(r.n[w], 1);
		assert_int_equal(r.seq[w][0], 7);
	}
	spool_stop(&p, NULL, NULL, NULL);
}

static int left_count;
static void count_left(struct spool_worker *w)
{
	struct dlist *n;
	while (!dlist_empty(&w->pairs)) {
		n = w->pairs.next;
		dlist_del(n);
		left_count++;
	}
}

static int dropped;
static void count_drop(void *arg, const struct handoff_job *j) { dropped++; }

static void stopping_runs_the_queue_then_hands_back_the_leftovers(void **state)
{
	static struct rec r;
	struct spool p;
	memset(&r, 0, sizeof(r));
	r.main = pthread_self();
	left_count = dropped = 0;
	assert_int_equal(spool_start(&p, NW, record, &r), 0);
	for (int i = 0; i < 50; i++) {
		struct handoff_job j = {.player_fd = i, .agent_fd = -1, .data = &r.items[i]};
		assert_int_equal(spool_push(&p, &j), 0);
	}
	spool_stop(&p, count_left, count_drop, NULL); /* no wait: the stop itself runs the queue */
	assert_int_equal(atomic_load(&r.total), 50);
	assert_int_equal(left_count, 50);
	assert_int_equal(dropped, 0);
	struct handoff_job j = {.player_fd = 1, .agent_fd = -1};
	assert_int_equal(spool_push(&p, &j), -ENODEV); /* stopped: nothing to queue on */
	spool_stop(&p, count_left, count_drop, NULL); /* a second stop does nothing */
	assert_int_equal(left_count, 50);
}

int main(void)
{
	log_init("test_spool", LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(jobs_run_on_the_workers_round_robin_in_order),
		cmocka_unit_test(a_job_pushed_to_all_reaches_every_worker),
		cmocka_unit_test(stopping_runs_the_queue_then_hands_back_the_leftovers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
