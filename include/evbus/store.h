/* The storage seam: one connection to an SQL database behind a small vtable, so that
 * business code speaks one API whatever the backend (SQLite now; PostgreSQL next).
 * SQL uses '?' placeholders; a driver rewrites them for its backend. Statements whose
 * text differs per backend are given as an evbus_sql_t with one string per dialect. */
#ifndef EVBUS_STORE_H
#define EVBUS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "evbus/err.h"

typedef struct evbus_store evbus_store_t;
typedef struct evbus_stmt evbus_stmt_t;

typedef enum {
    EVBUS_DIALECT_SQLITE = 0,
    EVBUS_DIALECT_PG = 1,
    EVBUS_DIALECT__COUNT
} evbus_dialect_t;

/* One statement's text per dialect; a NULL entry falls back to the SQLite text. */
typedef struct {
    const char *text[EVBUS_DIALECT__COUNT];
} evbus_sql_t;

/* Result of evbus_stmt_step. */
enum { EVBUS_STEP_ROW = 1, EVBUS_STEP_DONE = 0, EVBUS_STEP_ERROR = -1 };

/* One migration: version numbers start at 1 and increase by one. */
typedef struct {
    int version;
    evbus_sql_t sql; /* may hold several statements separated by ';' */
} evbus_migration_t;

/* Opens a connection. url: "postgres://..." or "postgresql://..." (libpq URI), else an
 * SQLite file: "sqlite:PATH" or a plain path. A PostgreSQL connection that breaks is
 * re-established by the next call that needs it. The connection
 * is used by one thread at a time. Returns NULL and logs why on failure. */
evbus_store_t *evbus_store_open(const char *url);
void evbus_store_close(evbus_store_t *st);
evbus_dialect_t evbus_store_dialect(const evbus_store_t *st);
/* Last error text of this connection (owned by the connection). */
const char *evbus_store_errmsg(const evbus_store_t *st);

/* Runs SQL without results (several statements allowed). */
evbus_err_t evbus_store_exec(evbus_store_t *st, const char *sql);
/* Lets this connection's commits return before they are flushed to disk: they survive
 * a crash of the process, not necessarily of the machine or database server. Only for
 * bookkeeping that is safe to lose (its loss means work is done again, as a duplicate):
 * the outbox relay's claims and settlements. */
evbus_err_t evbus_store_relax_durability(evbus_store_t *st);
/* Write transactions: begin takes the write lock at once. */
evbus_err_t evbus_store_begin(evbus_store_t *st);
evbus_err_t evbus_store_commit(evbus_store_t *st);
void evbus_store_rollback(evbus_store_t *st);
/* Applies the migrations not yet applied, each in its own transaction, recording the
 * version in evbus_schema(component, version). A database at a newer version than the
 * list knows is refused with EVBUS_ERR_CONFLICT. */
evbus_err_t evbus_store_migrate(evbus_store_t *st, const char *component,
                                const evbus_migration_t *m, size_t n);

/* Cross-process notifications between connections to one database (PostgreSQL
 * LISTEN/NOTIFY). evbus_store_has_notify() is 0 on backends without them, where notify
 * is a no-op and listen fails with EVBUS_ERR_INVALID. notify inside a transaction is
 * delivered at commit. payload: at most 7999 bytes. */
int evbus_store_has_notify(const evbus_store_t *st);
evbus_err_t evbus_store_notify(evbus_store_t *st, const char *channel, const char *payload);
evbus_err_t evbus_store_listen(evbus_store_t *st, const char *channel);
/* Waits up to timeout_ms for notifications and calls fn for each payload. Returns
 * EVBUS_ERR_OK (also on timeout) or EVBUS_ERR_UNAVAILABLE when the connection broke
 * (listen again once it is back). */
evbus_err_t evbus_store_wait_notify(evbus_store_t *st, int timeout_ms,
                                    void (*fn)(const char *payload, void *ud), void *ud);

/* Prepares a statement, cached on the connection by the address of sql: the same
 * evbus_sql_t gives back the same statement, reset and unbound. Owned by the
 * connection; do not free. NULL on error. */
evbus_stmt_t *evbus_store_prepare(evbus_store_t *st, const evbus_sql_t *sql);

/* Binds parameters, 1-based. Strings are copied. NULL text binds SQL NULL. */
evbus_err_t evbus_stmt_bind_text(evbus_stmt_t *s, int idx, const char *v);
evbus_err_t evbus_stmt_bind_int64(evbus_stmt_t *s, int idx, int64_t v);
evbus_err_t evbus_stmt_bind_null(evbus_stmt_t *s, int idx);
/* Executes or advances: EVBUS_STEP_ROW, EVBUS_STEP_DONE or EVBUS_STEP_ERROR. A
 * constraint violation sets *constraint (if not NULL) to 1. */
int evbus_stmt_step(evbus_stmt_t *s, int *constraint);
/* Column accessors for the current row, 0-based; text is valid until the next step. */
const char *evbus_stmt_text(evbus_stmt_t *s, int col);
int64_t evbus_stmt_int64(evbus_stmt_t *s, int col);
int evbus_stmt_is_null(evbus_stmt_t *s, int col);
/* Rows changed by the last completed step of this statement. */
int64_t evbus_stmt_changes(evbus_stmt_t *s);
/* Ends the statement's use (resets it and clears bindings); call after every use. */
void evbus_stmt_done(evbus_stmt_t *s);

/* A fixed-size pool of connections to one URL, for threads that read concurrently. */
typedef struct evbus_store_pool evbus_store_pool_t;
evbus_store_pool_t *evbus_store_pool_new(const char *url, unsigned size);
/* Takes a connection, waiting if all are in use; NULL if the pool is broken. */
evbus_store_t *evbus_store_pool_get(evbus_store_pool_t *p);
void evbus_store_pool_put(evbus_store_pool_t *p, evbus_store_t *st);
void evbus_store_pool_free(evbus_store_pool_t *p);

#endif
