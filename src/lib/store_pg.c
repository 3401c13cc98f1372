/* PostgreSQL driver (libpq). Statements are prepared server-side once per connection
 * ('?' placeholders become $n) and executed with text parameters. A broken connection
 * is reset by the next call that needs it; statements prepared before the reset are
 * prepared again on first use (a generation counter tells). */
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/log.h"
#include "evbus/util.h"
#include "store_impl.h"

#define MAX_PARAMS 16

typedef struct {
    evbus_store_t base;
    PGconn *conn;
    char *url;
    unsigned gen;   /* bumped on every reconnect */
    unsigned nstmt; /* names statements */
    int in_tx;      /* a transaction is open: never reconnect under it */
    int relaxed;    /* synchronous_commit=off, applied again after a reconnect */
    char err[256];
} pg_store_t;

typedef struct {
    evbus_stmt_t base;
    pg_store_t *st;
    char *sql; /* with $n placeholders */
    char name[24];
    unsigned gen; /* connection generation it was prepared in, 0 = not yet */
    int nparams;
    char *params[MAX_PARAMS];
    PGresult *res;
    int row, nrows, executed;
    int64_t changes;
} pg_stmt_t;

static const evbus_store_ops_t pg_ops;

static void set_err(pg_store_t *s, const char *msg)
{
    evbus_strlcpy(s->err, msg ? msg : "", sizeof s->err);
    size_t n = strlen(s->err);
    while (n && (s->err[n - 1] == '\n' || s->err[n - 1] == ' '))
        s->err[--n] = '\0';
}

/* Makes sure the connection is up, resetting it if it broke. 0 when usable. Inside a
 * transaction a broken connection stays broken: a reset would run the rest of the
 * transaction's statements on their own. */
static int ensure(pg_store_t *s)
{
    if (PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    if (s->in_tx) {
        set_err(s, "connection lost inside a transaction");
        return -1;
    }
    PQreset(s->conn);
    if (PQstatus(s->conn) != CONNECTION_OK) {
        set_err(s, PQerrorMessage(s->conn));
        return -1;
    }
    s->gen++;
    if (s->relaxed)
        PQclear(PQexec(s->conn, "SET synchronous_commit = off"));
    evbus_log_kv(EVBUS_LOG_INFO, "postgres: reconnected", NULL);
    return 0;
}

static void pg_close(evbus_store_t *st)
{
    pg_store_t *s = (pg_store_t *)st;
    PQfinish(s->conn);
    free(s->url);
    free(s);
}

static const char *pg_errmsg(const evbus_store_t *st)
{
    return ((const pg_store_t *)st)->err;
}

/* A pooled connection whose server restarted looks fine until it is used; the first
 * use then fails with the connection broken. Outside a transaction that use is
 * repeated once on a fresh connection (the statement never reached the new server). */
static int retry_on_fresh(pg_store_t *s)
{
    return !s->in_tx && PQstatus(s->conn) != CONNECTION_OK && ensure(s) == 0;
}

/* Runs a command without parameters; the result must be COMMAND_OK or TUPLES_OK. */
static evbus_err_t run(pg_store_t *s, const char *sql)
{
    if (ensure(s) != 0)
        return EVBUS_ERR_UNAVAILABLE;
    PGresult *r = PQexec(s->conn, sql);
    if (PQresultStatus(r) == PGRES_FATAL_ERROR && retry_on_fresh(s)) {
        PQclear(r);
        r = PQexec(s->conn, sql);
    }
    ExecStatusType st = PQresultStatus(r);
    evbus_err_t rc = EVBUS_ERR_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        set_err(s, PQerrorMessage(s->conn));
        rc = PQstatus(s->conn) == CONNECTION_OK ? EVBUS_ERR_DB : EVBUS_ERR_UNAVAILABLE;
    }
    PQclear(r);
    return rc;
}

static evbus_err_t pg_exec(evbus_store_t *st, const char *sql)
{
    return run((pg_store_t *)st, sql);
}

static evbus_err_t pg_begin(evbus_store_t *st)
{
    pg_store_t *s = (pg_store_t *)st;
    s->in_tx = 0;
    evbus_err_t rc = run(s, "BEGIN");
    s->in_tx = rc == EVBUS_ERR_OK;
    return rc;
}

static evbus_err_t pg_commit(evbus_store_t *st)
{
    pg_store_t *s = (pg_store_t *)st;
    int in_tx = s->in_tx;
    s->in_tx = 0;
    if (!in_tx || PQstatus(s->conn) != CONNECTION_OK)
        return EVBUS_ERR_UNAVAILABLE; /* never reconnect into a COMMIT */
    PGresult *r = PQexec(s->conn, "COMMIT");
    evbus_err_t rc = EVBUS_ERR_OK;
    /* a COMMIT of an aborted transaction answers ROLLBACK: that is a failure */
    if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(r), "COMMIT") != 0) {
        set_err(s, PQresultStatus(r) == PGRES_COMMAND_OK ? "transaction was rolled back"
                                                         : PQerrorMessage(s->conn));
        rc = PQstatus(s->conn) == CONNECTION_OK ? EVBUS_ERR_DB : EVBUS_ERR_UNAVAILABLE;
    }
    PQclear(r);
    return rc;
}

/* Asynchronous commit for this session: crash-safe, the last commits may be lost if the
 * server itself crashes. */
static evbus_err_t pg_relax(evbus_store_t *st)
{
    pg_store_t *s = (pg_store_t *)st;
    s->relaxed = 1;
    return run(s, "SET synchronous_commit = off");
}

static void pg_rollback(evbus_store_t *st)
{
    pg_store_t *s = (pg_store_t *)st;
    s->in_tx = 0;
    if (PQstatus(s->conn) == CONNECTION_OK)
        PQclear(PQexec(s->conn, "ROLLBACK"));
}

/* Rewrites '?' placeholders to $1..$n outside quoted strings and identifiers. */
static char *rewrite(const char *sql, int *nparams)
{
    size_t len = strlen(sql);
    char *out = malloc(len * 4 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    int n = 0;
    char quote = 0;
    for (const char *p = sql; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
            out[o++] = *p;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
            out[o++] = *p;
        } else if (*p == '?') {
            o += (size_t)snprintf(out + o, 5, "$%d", ++n);
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    *nparams = n;
    return out;
}

static evbus_stmt_t *pg_prepare(evbus_store_t *st, const char *sql)
{
    pg_store_t *s = (pg_store_t *)st;
    pg_stmt_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->base.ops = &pg_ops;
    q->st = s;
    q->sql = rewrite(sql, &q->nparams);
    if (!q->sql || q->nparams > MAX_PARAMS) {
        set_err(s, "statement has too many parameters");
        free(q->sql);
        free(q);
        return NULL;
    }
    snprintf(q->name, sizeof q->name, "evbus_%u", ++s->nstmt);
    return &q->base;
}

static void clear_params(pg_stmt_t *q)
{
    for (int i = 0; i < MAX_PARAMS; i++) {
        free(q->params[i]);
        q->params[i] = NULL;
    }
}

static void pg_done(evbus_stmt_t *st)
{
    pg_stmt_t *q = (pg_stmt_t *)st;
    PQclear(q->res);
    q->res = NULL;
    q->executed = 0;
    q->row = q->nrows = 0;
    clear_params(q);
}

static void pg_finalize(evbus_stmt_t *st)
{
    pg_stmt_t *q = (pg_stmt_t *)st;
    pg_done(st);
    /* the server drops prepared statements with the connection */
    free(q->sql);
    free(q);
}

static evbus_err_t set_param(pg_stmt_t *q, int idx, char *v)
{
    if (idx < 1 || idx > q->nparams) {
        free(v);
        return EVBUS_ERR_INVALID;
    }
    free(q->params[idx - 1]);
    q->params[idx - 1] = v;
    return EVBUS_ERR_OK;
}

static evbus_err_t pg_bind_text(evbus_stmt_t *st, int idx, const char *v)
{
    char *c = strdup(v);
    return c ? set_param((pg_stmt_t *)st, idx, c) : EVBUS_ERR_NOMEM;
}

static evbus_err_t pg_bind_int64(evbus_stmt_t *st, int idx, int64_t v)
{
    char *c = malloc(24);
    if (!c)
        return EVBUS_ERR_NOMEM;
    snprintf(c, 24, "%lld", (long long)v);
    return set_param((pg_stmt_t *)st, idx, c);
}

static evbus_err_t pg_bind_null(evbus_stmt_t *st, int idx)
{
    return set_param((pg_stmt_t *)st, idx, NULL);
}

/* Prepares (if this connection has not yet) and executes q; 0 when a result came. */
static int execute_once(pg_stmt_t *q)
{
    pg_store_t *s = q->st;
    if (ensure(s) != 0)
        return -1;
    if (q->gen != s->gen || q->gen == 0) {
        PGresult *r = PQprepare(s->conn, q->name, q->sql, q->nparams, NULL);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            set_err(s, PQerrorMessage(s->conn));
        PQclear(r);
        if (!ok)
            return -1;
        q->gen = s->gen;
    }
    PQclear(q->res);
    q->res =
        PQexecPrepared(s->conn, q->name, q->nparams, (const char *const *)q->params, NULL, NULL, 0);
    return 0;
}

static int execute(pg_stmt_t *q, int *constraint)
{
    pg_store_t *s = q->st;
    int rc = execute_once(q);
    if ((rc != 0 || PQresultStatus(q->res) == PGRES_FATAL_ERROR) && retry_on_fresh(s))
        rc = execute_once(q);
    q->executed = 1;
    if (rc != 0) {
        evbus_log_error("postgres: %s", s->err);
        return EVBUS_STEP_ERROR;
    }
    ExecStatusType st = PQresultStatus(q->res);
    if (st == PGRES_TUPLES_OK) {
        q->nrows = PQntuples(q->res);
        q->row = -1;
        q->changes = 0;
        return EVBUS_STEP_ROW; /* adjusted by the caller */
    }
    if (st == PGRES_COMMAND_OK) {
        q->nrows = 0;
        q->row = -1;
        q->changes = strtoll(PQcmdTuples(q->res), NULL, 10);
        return EVBUS_STEP_DONE;
    }
    const char *state = PQresultErrorField(q->res, PG_DIAG_SQLSTATE);
    set_err(s, PQerrorMessage(s->conn));
    if (state && strncmp(state, "23", 2) == 0 && constraint)
        *constraint = 1;
    else
        evbus_log_error("postgres: %s", s->err);
    return EVBUS_STEP_ERROR;
}

static int pg_step(evbus_stmt_t *st, int *constraint)
{
    pg_stmt_t *q = (pg_stmt_t *)st;
    if (!q->executed) {
        int rc = execute(q, constraint);
        if (rc != EVBUS_STEP_ROW)
            return rc;
    }
    if (!q->res)
        return EVBUS_STEP_ERROR;
    if (q->row + 1 < q->nrows) {
        q->row++;
        return EVBUS_STEP_ROW;
    }
    q->row = q->nrows;
    if (PQresultStatus(q->res) == PGRES_TUPLES_OK)
        q->changes = strtoll(PQcmdTuples(q->res), NULL, 10);
    return EVBUS_STEP_DONE;
}

static const char *pg_text(evbus_stmt_t *st, int col)
{
    pg_stmt_t *q = (pg_stmt_t *)st;
    if (!q->res || q->row < 0 || q->row >= q->nrows || PQgetisnull(q->res, q->row, col))
        return NULL;
    return PQgetvalue(q->res, q->row, col);
}

static int64_t pg_col_int64(evbus_stmt_t *st, int col)
{
    const char *v = pg_text(st, col);
    if (!v)
        return 0;
    if (strcmp(v, "t") == 0)
        return 1;
    return strtoll(v, NULL, 10);
}

static int pg_is_null(evbus_stmt_t *st, int col)
{
    return pg_text(st, col) == NULL;
}

static int64_t pg_changes(evbus_stmt_t *st)
{
    return ((pg_stmt_t *)st)->changes;
}

static evbus_err_t pg_notify(evbus_store_t *st, const char *channel, const char *payload)
{
    pg_store_t *s = (pg_store_t *)st;
    const char *params[2] = {channel, payload};
    PGresult *r = PQexecParams(s->conn, "SELECT pg_notify($1, $2)", 2, NULL, params, NULL, NULL, 0);
    evbus_err_t rc = PQresultStatus(r) == PGRES_TUPLES_OK ? EVBUS_ERR_OK : EVBUS_ERR_DB;
    if (rc)
        set_err(s, PQerrorMessage(s->conn));
    PQclear(r);
    return rc;
}

static evbus_err_t pg_listen(evbus_store_t *st, const char *channel)
{
    pg_store_t *s = (pg_store_t *)st;
    if (ensure(s) != 0)
        return EVBUS_ERR_UNAVAILABLE;
    char *id = PQescapeIdentifier(s->conn, channel, strlen(channel));
    if (!id)
        return EVBUS_ERR_NOMEM;
    char sql[300];
    snprintf(sql, sizeof sql, "LISTEN %s", id);
    PQfreemem(id);
    return run(s, sql);
}

static evbus_err_t pg_wait_notify(evbus_store_t *st, int timeout_ms,
                                  void (*fn)(const char *payload, void *ud), void *ud)
{
    pg_store_t *s = (pg_store_t *)st;
    if (PQstatus(s->conn) != CONNECTION_OK)
        return EVBUS_ERR_UNAVAILABLE;
    struct pollfd pfd = {.fd = PQsocket(s->conn), .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) < 0)
        return EVBUS_ERR_OK;
    if (pfd.revents && !PQconsumeInput(s->conn)) {
        set_err(s, PQerrorMessage(s->conn));
        return EVBUS_ERR_UNAVAILABLE;
    }
    PGnotify *n;
    while ((n = PQnotifies(s->conn)) != NULL) {
        fn(n->extra, ud);
        PQfreemem(n);
    }
    return PQstatus(s->conn) == CONNECTION_OK ? EVBUS_ERR_OK : EVBUS_ERR_UNAVAILABLE;
}

static const evbus_store_ops_t pg_ops = {
    .name = "postgres",
    .dialect = EVBUS_DIALECT_PG,
    .close = pg_close,
    .errmsg = pg_errmsg,
    .exec = pg_exec,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .relax = pg_relax,
    .prepare = pg_prepare,
    .finalize = pg_finalize,
    .bind_text = pg_bind_text,
    .bind_int64 = pg_bind_int64,
    .bind_null = pg_bind_null,
    .step = pg_step,
    .text = pg_text,
    .int64 = pg_col_int64,
    .is_null = pg_is_null,
    .changes = pg_changes,
    .done = pg_done,
    .notify = pg_notify,
    .listen = pg_listen,
    .wait_notify = pg_wait_notify,
};

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

evbus_store_t *evbus__pg_open(const char *url)
{
    pg_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base.ops = &pg_ops;
    s->url = strdup(url);
    /* a short connect timeout keeps requests failing fast (503) while the server is away */
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {url, "3", "evbus", NULL};
    s->conn = PQconnectdbParams(keys, vals, 1);
    if (!s->url || !s->conn || PQstatus(s->conn) != CONNECTION_OK) {
        evbus_log_error("postgres: cannot connect: %s",
                        s->conn ? PQerrorMessage(s->conn) : "out of memory");
        PQfinish(s->conn);
        free(s->url);
        free(s);
        return NULL;
    }
    PQsetNoticeProcessor(s->conn, quiet_notice, NULL);
    s->gen = 1;
    return &s->base;
}
