/* The handshake pool (userspace/hspool.c) over real TLS on socketpairs: handshakes run on worker
 * threads and each job comes back once on the owner's loop with its first frame (what followed
 * it still readable after the connection is taken); past max_jobs a submit is refused and the
 * socket stays the caller's; a silent peer times out; stopping the pool with handshakes in
 * progress gives every job back (-ESHUTDOWN) and leaks nothing (ASan in `make SAN=1 unit`). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ctlconn.h"
#include "hspool.h"
#include "log.h"
#include "loop.h"
#include "test_cert.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NCONN 8

static char cert[64], key[64];
static SSL_CTX *sctx, *cctx;
static pthread_t owner_thread;

/* A throwaway certificate and the two contexts over it. */
static int setup(void **state)
{
	make_cert(cert, key);
	char err[256];
	sctx = tls_server_ctx(cert, key, err, sizeof(err));
	cctx = tls_client_ctx(cert, NULL, err, sizeof(err));
	assert_non_null(sctx);
	assert_non_null(cctx);
	owner_thread = pthread_self();
	return 0;
}

static int teardown(void **state)
{
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	unlink(cert);
	unlink(key);
	return 0;
}

/* What the owner learns about one connection. */
struct conn {
	int idx;
	int cli_fd, srv_fd;
	struct ctl_conn cli;
	_Atomic bool worked_on_worker; /* cfg.work ran, on another thread than the owner's */
	bool done;
	int status;
	int first_type;
	uint64_t first_t;
	struct ctl_conn taken;	/* the server side, taken from the job */
	uint64_t second_t;	/* the frame that followed the first one, read after the take */
};

static struct {
	int done;
	struct conn *c;
	int n;
} T;

static int ignore(struct ctl_conn *c, const struct ctl_msg *m) { return 0; }

static int second(struct ctl_conn *c, const struct ctl_msg *m)
{
	struct conn *k = c->data;
	if (m->type == CTL_PING)
		k->second_t = m->u.ping.t;
	return 0;
}

static void work(struct hsp_job *j, void *arg)
{
	struct conn *k = j->priv;
	assert_non_null(j->first);
	assert_int_equal(j->status, 0);
	if (!pthread_equal(pthread_self(), owner_thread))
		atomic_store(&k->worked_on_worker, true);
}

static void done(struct hsp_job *j, void *arg)
{
	struct conn *k = j->priv;
	assert_true(pthread_equal(pthread_self(), owner_thread));
	assert_false(k->done); /* exactly once */
	k->done = true;
	k->status = j->status;
	if (j->status == 0) {
		k->first_type = j->first->type;
		k->first_t = j->first->u.ping.t;
		hsp_job_take(j, &k->taken);
	}
	hsp_job_free(j);
	T.done++;
}

static bool all_done(void *arg) { return T.done == *(int *)arg; }

static void conn_open(struct conn *k, int idx)
{
	int sv[2];
	memset(k, 0, sizeof(*k));
	k->idx = idx;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	k->cli_fd = sv[0];
	k->srv_fd = sv[1];
	assert_int_equal(ctl_conn_init(&k->cli, cctx, k->cli_fd, false, NULL), 0);
	k->cli.on_msg = ignore;
	k->taken.fd = -1;
}

static void conn_close(struct conn *k)
{
	ctl_conn_free(&k->cli);
	close(k->cli_fd);
	if (k->taken.fd >= 0) {
		ctl_conn_free(&k->taken);
		close(k->taken.fd);
	}
}

/* Drive the clients and the owner's loop until want jobs came back (bounded: 20 s). */
static void run(struct loop *l, int want)
{
	uint64_t deadline = mono_ms() + 20000;
	while (T.done < want && mono_ms() < deadline) {
		for (int i = 0; i < T.n; i++)
			if (!T.c[i].done)
				ctl_conn_io(&T.c[i].cli);
		loop_run_until(l, all_done, &want, mono_ms() + 5);
	}
	assert_int_equal(T.done, want);
}

static struct hspool *start(struct loop *l, int threads, int max_jobs, int timeout_ms)
{
	char err[160];
	const struct hsp_cfg cfg = {.ctx = sctx, .threads = threads, .max_jobs = max_jobs,
				    .timeout_ms = timeout_ms, .work = work, .done = done};
	struct hspool *p = hsp_start(l, &cfg, err, sizeof(err));
	assert_non_null(p);
	return p;
}

static void handshakes_come_back_once_with_their_first_frame(void **state)
{
	struct loop l;
	struct conn c[NCONN];
	assert_int_equal(loop_init(&l), 0);
	T.done = 0;
	T.c = c;
	T.n = NCONN;
	struct hspool *p = start(&l, 2, NCONN, 20000);
	for (int i = 0; i < NCONN; i++) {
		conn_open(&c[i], i);
		/* two frames queued before the handshake: the pool reads only the first */
		struct ctl_msg a = {.type = CTL_PING, .u.ping.t = 100 + (uint64_t)i};
		struct ctl_msg b = {.type = CTL_PING, .u.ping.t = 200 + (uint64_t)i};
		assert_int_equal(ctl_conn_send(&c[i].cli, &a), 0);
		assert_int_equal(ctl_conn_send(&c[i].cli, &b), 0);
		assert_int_equal(hsp_submit(p, c[i].srv_fd, &c[i]), 0);
	}
	assert_int_equal(hsp_jobs(p), NCONN);
	run(&l, NCONN);
	assert_int_equal(hsp_jobs(p), 0);
	for (int i = 0; i < NCONN; i++) {
		assert_int_equal(c[i].status, 0);
		assert_int_equal(c[i].first_type, CTL_PING);
		assert_int_equal(c[i].first_t, 100 + (uint64_t)i);
		assert_true(atomic_load(&c[i].worked_on_worker));
		/* the taken connection goes on where the pool stopped: the second frame */
		assert_int_equal(c[i].taken.fd, c[i].srv_fd);
		c[i].taken.on_msg = second;
		c[i].taken.data = &c[i];
		assert_true(ctl_conn_io(&c[i].taken) >= 0);
		assert_int_equal(c[i].second_t, 200 + (uint64_t)i);
	}
	hsp_stop(p);
	for (int i = 0; i < NCONN; i++)
		conn_close(&c[i]);
	loop_free(&l);
}

static void over_max_jobs_refused_and_stop_returns_jobs_in_flight(void **state)
{
	struct loop l;
	struct conn c[3];
	assert_int_equal(loop_init(&l), 0);
	T.done = 0;
	T.c = c;
	T.n = 0; /* the clients stay silent: handshakes never finish */
	struct hspool *p = start(&l, 2, 2, 60000);
	for (int i = 0; i < 3; i++)
		conn_open(&c[i], i);
	assert_int_equal(hsp_submit(p, c[0].srv_fd, &c[0]), 0);
	assert_int_equal(hsp_submit(p, c[1].srv_fd, &c[1]), 0);
	assert_int_equal(hsp_submit(p, c[2].srv_fd, &c[2]), -EAGAIN);
	assert_true(fcntl(c[2].srv_fd, F_GETFD) >= 0); /* still the caller's */
	close(c[2].srv_fd);
	/* one client starts its handshake: a job mid-handshake on a worker */
	ctl_conn_io(&c[0].cli);
	loop_run_until(&l, all_done, &(int){1}, mono_ms() + 50);
	assert_int_equal(T.done, 0);
	hsp_stop(p); /* both jobs come back now, unfinished; ASan checks nothing leaks */
	assert_int_equal(T.done, 2);
	assert_int_equal(c[0].status, -ESHUTDOWN);
	assert_int_equal(c[1].status, -ESHUTDOWN);
	assert_false(c[2].done);
	for (int i = 0; i < 3; i++)
		conn_close(&c[i]);
	loop_free(&l);
}

static void silent_peer_times_out(void **state)
{
	struct loop l;
	struct conn c[1];
	assert_int_equal(loop_init(&l), 0);
	T.done = 0;
	T.c = c;
	T.n = 0;
	struct hspool *p = start(&l, 1, 4, 50);
	conn_open(&c[0], 0);
	assert_int_equal(hsp_submit(p, c[0].srv_fd, &c[0]), 0);
	run(&l, 1);
	assert_int_equal(c[0].status, -ETIMEDOUT);
	assert_int_equal(hsp_jobs(p), 0);
	hsp_stop(p);
	conn_close(&c[0]);
	loop_free(&l);
}

int main(void)
{
	log_init("test_hspool", LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(handshakes_come_back_once_with_their_first_frame),
		cmocka_unit_test(over_max_jobs_refused_and_stop_returns_jobs_in_flight),
		cmocka_unit_test(silent_peer_times_out),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
