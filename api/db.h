/* PostgreSQL for dvv-api: a fixed pool of libpq connections shared by the HTTP threads, and the
 * schema migrations embedded in the binary (api/migrations/NNN_name.sql), applied at start-up
 * inside one transaction under pg_advisory_xact_lock so that several APIs starting at once apply
 * each migration exactly once.
 *
 * db_get() blocks up to 5 s for a free connection and returns NULL when none comes (the caller
 * answers 503). A connection returned with broken=true (or found bad) is reset before reuse. */
#ifndef DVV_API_DB_H
#define DVV_API_DB_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

struct api;
struct api_resp;
struct db_pool;

struct db_migration {
	int version;
	const char *name;
	const char *sql;
};
extern const struct db_migration db_migrations[]; /* generated; ends with version 0 */

int db_pool_new(const char *conninfo, int size, struct db_pool **out); /* 0 or -errno */
void db_pool_free(struct db_pool *p);
PGconn *db_pool_get(struct db_pool *p, int wait_ms);
void db_pool_put(struct db_pool *p, PGconn *c, bool broken);
int db_pool_size(const struct db_pool *p);

PGconn *db_get(struct api *a); /* a connection from the pool (blocks up to 5 s; NULL: 503) */
/* db_get for a handler: NULL has already answered out with 503 unavailable. */
PGconn *db_get_or_503(struct api *a, struct api_resp *out);
void db_put(struct api *a, PGconn *c, bool broken);
int db_begin(PGconn *c);
int db_commit(PGconn *c);
void db_rollback(PGconn *c);

/* Apply the embedded migrations not yet recorded in schema_migrations. 0 or -errno. */
int db_migrate(PGconn *c);
/* Run one statement with text parameters; NULL params allowed (SQL NULL). Returns the result
 * when its status is COMMAND_OK or TUPLES_OK, else logs (without parameters: they may be
 * secrets), clears it and returns NULL. */
PGresult *db_exec(PGconn *c, const char *sql, int n, const char *const *params);
/* db_exec for a statement whose rows are not needed: 0 or -EIO. */
int db_run(PGconn *c, const char *sql, int n, const char *const *params);
/* The SQLSTATE of the last failed db_exec on this thread ("" if none). */
const char *db_last_sqlstate(void);
/* Forget it: done at the start of every request, so a 500 is only ever read against this
 * request's statements. */
void db_clear_sqlstate(void);

#endif /* DVV_API_DB_H */
