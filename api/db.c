/* PostgreSQL connection pool and embedded schema migrations for dvv-api (db.h). */
#include "db.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apiint.h"
#include "log.h"

#define DB_WAIT_MS	    5000
#define DB_MIGRATE_LOCK_KEY 0x647676 /* "dvv": the advisory lock migrations run under */

struct db_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char *conninfo;
	PGconn **free_conn; /* stack of idle connections (NULL entries: not yet connected) */
	int n_free, size;
};

static __thread char db_sqlstate[6];

const char *db_last_sqlstate(void) { return db_sqlstate; }
void db_clear_sqlstate(void) { db_sqlstate[0] = '\0'; }

/* Defaults that bound a PostgreSQL that went silent (a dead host, a dropped route, a NAT that
 * forgot the flow): connecting gives up after 5 s, an idle pooled connection is probed with TCP
 * keepalives, and a query whose bytes go unacknowledged for 10 s fails instead of holding its
 * HTTP thread for the kernel's retransmission timeout (about 15 min). They come before the
 * operator's conninfo, which expand_dbname applies over them, so --pg can set any of them. */
static const char *const conn_keys[] = {
	"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
	"keepalives_count", "tcp_user_timeout", "dbname", NULL,
};

static PGconn *db_connect(const char *conninfo)
{
	const char *vals[] = { "5", "1", "30", "10", "3", "10000", conninfo, NULL };
	PGconn *c = PQconnectdbParams(conn_keys, vals, 1);

	if (PQstatus(c) != CONNECTION_OK) {
		pr_rl(LOG_ERROR, "postgresql: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	/* a statement that hangs must not hold an HTTP thread forever */
	PQclear(PQexec(c, "SET statement_timeout = '10s'; SET lock_timeout = '5s'"));
	return c;
}

int db_pool_new(const char *conninfo, int size, struct db_pool **out)
{
	struct db_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->conninfo = strdup(conninfo);
	p->free_conn = calloc((size_t)size, sizeof(PGconn *));
	if (!p->conninfo || !p->free_conn) {
		free(p->conninfo);
		free(p->free_conn);
		free(p);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->size = size;
	p->n_free = size; /* all slots free, connected lazily */
	*out = p;
	return 0;
}

void db_pool_free(struct db_pool *p)
{
	if (!p)
		return;
	for (int i = 0; i < p->n_free; i++)
		if (p->free_conn[i])
			PQfinish(p->free_conn[i]);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->free_conn);
	free(p->conninfo);
	free(p);
}

int db_pool_size(const struct db_pool *p) { return p->size; }

PGconn *db_pool_get(struct db_pool *p, int wait_ms)
{
	struct timespec dl;
	PGconn *c = NULL;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += wait_ms / 1000;
	dl.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&p->mu);
	while (p->n_free == 0 && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&p->cv, &p->mu, &dl);
	if (p->n_free == 0) {
		pthread_mutex_unlock(&p->mu);
		return NULL;
	}
	c = p->free_conn[--p->n_free];
	pthread_mutex_unlock(&p->mu);
	if (c && PQstatus(c) != CONNECTION_OK) {
		PQreset(c);
		if (PQstatus(c) != CONNECTION_OK) {
			PQfinish(c);
			c = NULL;
		}
	}
	if (!c)
		c = db_connect(p->conninfo);
	if (!c) /* give the slot back: the next caller retries the connection */
		db_pool_put(p, NULL, false);
	return c;
}

void db_pool_put(struct db_pool *p, PGconn *c, bool broken)
{
	if (c && (broken || PQstatus(c) != CONNECTION_OK ||
		  PQtransactionStatus(c) != PQTRANS_IDLE)) {
		PQfinish(c); /* reconnect next time rather than reuse a half-done state */
		c = NULL;
	}
	pthread_mutex_lock(&p->mu);
	p->free_conn[p->n_free++] = c;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

PGconn *db_get(struct api *a) { return db_pool_get(a->db, DB_WAIT_MS); }

PGconn *db_get_or_503(struct api *a, struct api_resp *out)
{
	PGconn *c = db_get(a);

	if (!c)
		api_error(out, 503, "unavailable", "database unavailable");
	return c;
}
void db_put(struct api *a, PGconn *c, bool broken) { db_pool_put(a->db, c, broken); }

PGresult *db_exec(PGconn *c, const char *sql, int n, const char *const *params)
{
	PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);
	const char *state;

	db_sqlstate[0] = '\0';
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return r;
	state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	/* no SQLSTATE and a broken connection: class 08 (connection exception), which the HTTP
	 * layer answers as 503 rather than 500 */
	snprintf(db_sqlstate, sizeof(db_sqlstate), "%s",
		 state ? state : PQstatus(c) == CONNECTION_BAD ? "08006" : "?????");
	/* unique violations are answers (409), not faults: do not log them */
	/* the primary message only: DETAIL lines can quote parameter values; a connection that
	 * broke has no result fields, only the connection's message (one line of it) */
	if (strcmp(db_sqlstate, "23505") != 0) {
		const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		int len = 200;

		if (!msg) {
			msg = PQerrorMessage(c);
			len = (int)strcspn(msg, "\n");
		}
		pr_rl(LOG_ERROR, "postgresql: %.60s...: %.*s (%s)", sql, len,
		      *msg ? msg : "no answer", state ? db_sqlstate : "connection");
	}
	PQclear(r);
	return NULL;
}

int db_run(PGconn *c, const char *sql, int n, const char *const *params)
{
	PGresult *r = db_exec(c, sql, n, params);

	if (!r)
		return -EIO;
	PQclear(r);
	return 0;
}

int db_begin(PGconn *c) { return db_run(c, "BEGIN", 0, NULL); }
int db_commit(PGconn *c) { return db_run(c, "COMMIT", 0, NULL); }
void db_rollback(PGconn *c)
{
	if (PQtransactionStatus(c) != PQTRANS_IDLE)
		PQclear(PQexec(c, "ROLLBACK"));
}

int db_migrate(PGconn *c)
{
	char ver[16], lock[32];
	const char *params[2];
	PGresult *r;
	int ret, applied = 0;

	snprintf(lock, sizeof(lock), "%d", DB_MIGRATE_LOCK_KEY);
	ret = db_begin(c);
	if (ret)
		return ret;
	params[0] = lock;
	/* several APIs starting at once: the others wait here, then see the versions recorded */
	ret = db_run(c, "SELECT pg_advisory_xact_lock($1::bigint)", 1, params) ?:
	      db_run(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
			"version int PRIMARY KEY, name text NOT NULL, "
			"applied_at timestamptz NOT NULL DEFAULT now())",
		     0, NULL);
	if (ret)
		goto out;
	for (const struct db_migration *m = db_migrations; m->version; m++) {
		snprintf(ver, sizeof(ver), "%d", m->version);
		params[0] = ver;
		params[1] = m->name;
		r = db_exec(c, "SELECT 1 FROM schema_migrations WHERE version = $1::int", 1, params);
		if (!r) {
			ret = -EIO;
			goto out;
		}
		if (PQntuples(r) == 1) {
			PQclear(r);
			continue;
		}
		PQclear(r);
		/* PQexec: a migration file holds several statements */
		r = PQexec(c, m->sql);
		if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
			pr_err("migration %03d_%s failed: %s", m->version, m->name,
			       PQresultErrorMessage(r));
			PQclear(r);
			ret = -EIO;
			goto out;
		}
		PQclear(r);
		ret = db_run(c, "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)",
			     2, params);
		if (ret)
			goto out;
		pr_info("applied migration %03d_%s", m->version, m->name);
		applied++;
	}
	ret = db_commit(c);
	if (!ret && !applied)
		pr_info("schema up to date");
out:
	if (ret)
		db_rollback(c);
	return ret;
}
