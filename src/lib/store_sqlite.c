/* SQLite driver: WAL journal with synchronous=FULL, so a committed transaction survives
 * a crash of the process or the machine; writers take the lock at BEGIN (IMMEDIATE) and
 * wait on a busy timeout instead of failing. */
#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "evbus/log.h"
#include "store_impl.h"

typedef struct {
    evbus_store_t base;
    sqlite3 *db;
} sq_store_t;

typedef struct {
    evbus_stmt_t base;
    sqlite3_stmt *st;
    sqlite3 *db;
    int64_t changes;
} sq_stmt_t;

static const evbus_store_ops_t sq_ops;

static void sq_close(evbus_store_t *st)
{
    sq_store_t *s = (sq_store_t *)st;
    sqlite3_close(s->db);
    free(s);
}

static const char *sq_errmsg(const evbus_store_t *st)
{
    return sqlite3_errmsg(((const sq_store_t *)st)->db);
}

static evbus_err_t sq_exec(evbus_store_t *st, const char *sql)
{
    return sqlite3_exec(((sq_store_t *)st)->db, sql, NULL, NULL, NULL) == SQLITE_OK ? EVBUS_ERR_OK
                                                                                    : EVBUS_ERR_DB;
}

static evbus_err_t sq_begin(evbus_store_t *st)
{
    return sq_exec(st, "BEGIN IMMEDIATE");
}

static evbus_err_t sq_commit(evbus_store_t *st)
{
    if (sq_exec(st, "COMMIT") == EVBUS_ERR_OK)
        return EVBUS_ERR_OK;
    sq_exec(st, "ROLLBACK");
    return EVBUS_ERR_DB;
}

static void sq_rollback(evbus_store_t *st)
{
    sq_exec(st, "ROLLBACK");
}

/* WAL with synchronous=NORMAL: commits are atomic and survive a process crash; the
 * last ones may be lost on power failure. */
static evbus_err_t sq_relax(evbus_store_t *st)
{
    return sq_exec(st, "PRAGMA synchronous=NORMAL");
}

static evbus_stmt_t *sq_prepare(evbus_store_t *st, const char *sql)
{
    sq_store_t *s = (sq_store_t *)st;
    sq_stmt_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->base.ops = &sq_ops;
    q->db = s->db;
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &q->st, NULL) != SQLITE_OK) {
        free(q);
        return NULL;
    }
    return &q->base;
}

static void sq_finalize(evbus_stmt_t *s)
{
    sq_stmt_t *q = (sq_stmt_t *)s;
    sqlite3_finalize(q->st);
    free(q);
}

static evbus_err_t bind_rc(int rc)
{
    return rc == SQLITE_OK ? EVBUS_ERR_OK : EVBUS_ERR_INVALID;
}

static evbus_err_t sq_bind_text(evbus_stmt_t *s, int idx, const char *v)
{
    return bind_rc(sqlite3_bind_text(((sq_stmt_t *)s)->st, idx, v, -1, SQLITE_TRANSIENT));
}

static evbus_err_t sq_bind_int64(evbus_stmt_t *s, int idx, int64_t v)
{
    return bind_rc(sqlite3_bind_int64(((sq_stmt_t *)s)->st, idx, v));
}

static evbus_err_t sq_bind_null(evbus_stmt_t *s, int idx)
{
    return bind_rc(sqlite3_bind_null(((sq_stmt_t *)s)->st, idx));
}

static int sq_step(evbus_stmt_t *s, int *constraint)
{
    sq_stmt_t *q = (sq_stmt_t *)s;
    int rc = sqlite3_step(q->st);
    if (rc == SQLITE_ROW)
        return EVBUS_STEP_ROW;
    if (rc == SQLITE_DONE) {
        q->changes = sqlite3_changes64(q->db);
        return EVBUS_STEP_DONE;
    }
    if ((rc & 0xff) == SQLITE_CONSTRAINT && constraint)
        *constraint = 1;
    else
        evbus_log_error("sqlite: %s", sqlite3_errmsg(q->db));
    return EVBUS_STEP_ERROR;
}

static const char *sq_text(evbus_stmt_t *s, int col)
{
    return (const char *)sqlite3_column_text(((sq_stmt_t *)s)->st, col);
}

static int64_t sq_int64(evbus_stmt_t *s, int col)
{
    return sqlite3_column_int64(((sq_stmt_t *)s)->st, col);
}

static int sq_is_null(evbus_stmt_t *s, int col)
{
    return sqlite3_column_type(((sq_stmt_t *)s)->st, col) == SQLITE_NULL;
}

static int64_t sq_changes(evbus_stmt_t *s)
{
    return ((sq_stmt_t *)s)->changes;
}

static void sq_done(evbus_stmt_t *s)
{
    sq_stmt_t *q = (sq_stmt_t *)s;
    sqlite3_reset(q->st);
    sqlite3_clear_bindings(q->st);
}

static const evbus_store_ops_t sq_ops = {
    .name = "sqlite",
    .dialect = EVBUS_DIALECT_SQLITE,
    .close = sq_close,
    .errmsg = sq_errmsg,
    .exec = sq_exec,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .relax = sq_relax,
    .prepare = sq_prepare,
    .finalize = sq_finalize,
    .bind_text = sq_bind_text,
    .bind_int64 = sq_bind_int64,
    .bind_null = sq_bind_null,
    .step = sq_step,
    .text = sq_text,
    .int64 = sq_int64,
    .is_null = sq_is_null,
    .changes = sq_changes,
    .done = sq_done,
};

/* Creates the directories above a database file, so a fresh data directory works. */
static int make_parents(const char *path)
{
    char dir[4096];
    if (strlen(path) >= sizeof dir)
        return -1;
    strcpy(dir, path);
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return 0;
}

evbus_store_t *evbus__sqlite_open(const char *path)
{
    if (strncmp(path, "file:", 5) != 0 && strcmp(path, ":memory:") != 0 && make_parents(path) != 0)
        evbus_log_warn("sqlite: cannot create the directory of '%s'", path);
    sq_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base.ops = &sq_ops;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        evbus_log_error("sqlite: cannot open '%s': %s", path, s->db ? sqlite3_errmsg(s->db) : "");
        sqlite3_close(s->db);
        free(s);
        return NULL;
    }
    sqlite3_busy_timeout(s->db, 10000);
    if (sq_exec(&s->base, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                          "PRAGMA foreign_keys=ON;") != EVBUS_ERR_OK) {
        evbus_log_error("sqlite: cannot configure '%s': %s", path, sqlite3_errmsg(s->db));
        sq_close(&s->base);
        return NULL;
    }
    return &s->base;
}
