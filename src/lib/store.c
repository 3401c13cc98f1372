/* Backend-independent part of the store: URL dispatch, statement cache, migrations,
 * connection pool. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/log.h"
#include "store_impl.h"

evbus_store_t *evbus_store_open(const char *url)
{
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return evbus__pg_open(url);
    if (strncmp(url, "sqlite:", 7) == 0)
        url += 7;
    if (!*url) {
        evbus_log_error("store: empty database path");
        return NULL;
    }
    return evbus__sqlite_open(url);
}

void evbus_store_close(evbus_store_t *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->ncache; i++)
        st->ops->finalize(st->cache[i].stmt);
    free(st->cache);
    st->cache = NULL;
    st->ops->close(st);
}

evbus_dialect_t evbus_store_dialect(const evbus_store_t *st)
{
    return st->ops->dialect;
}
const char *evbus_store_errmsg(const evbus_store_t *st)
{
    return st->ops->errmsg(st);
}
evbus_err_t evbus_store_exec(evbus_store_t *st, const char *sql)
{
    return st->ops->exec(st, sql);
}
evbus_err_t evbus_store_begin(evbus_store_t *st)
{
    return st->ops->begin(st);
}
evbus_err_t evbus_store_commit(evbus_store_t *st)
{
    return st->ops->commit(st);
}
void evbus_store_rollback(evbus_store_t *st)
{
    st->ops->rollback(st);
}
evbus_err_t evbus_store_relax_durability(evbus_store_t *st)
{
    return st->ops->relax(st);
}

int evbus_store_has_notify(const evbus_store_t *st)
{
    return st->ops->listen != NULL;
}

evbus_err_t evbus_store_notify(evbus_store_t *st, const char *channel, const char *payload)
{
    return st->ops->notify ? st->ops->notify(st, channel, payload) : EVBUS_ERR_OK;
}

evbus_err_t evbus_store_listen(evbus_store_t *st, const char *channel)
{
    return st->ops->listen ? st->ops->listen(st, channel) : EVBUS_ERR_INVALID;
}

evbus_err_t evbus_store_wait_notify(evbus_store_t *st, int timeout_ms,
                                    void (*fn)(const char *payload, void *ud), void *ud)
{
    return st->ops->wait_notify ? st->ops->wait_notify(st, timeout_ms, fn, ud) : EVBUS_ERR_INVALID;
}

evbus_stmt_t *evbus_store_prepare(evbus_store_t *st, const evbus_sql_t *sql)
{
    for (size_t i = 0; i < st->ncache; i++)
        if (st->cache[i].key == sql)
            return st->cache[i].stmt;
    const char *text =
        sql->text[st->ops->dialect] ? sql->text[st->ops->dialect] : sql->text[EVBUS_DIALECT_SQLITE];
    evbus_stmt_t *s = st->ops->prepare(st, text);
    if (!s) {
        evbus_log_error("store: cannot prepare statement: %s", st->ops->errmsg(st));
        return NULL;
    }
    if (st->ncache == st->capcache) {
        size_t cap = st->capcache ? st->capcache * 2 : 16;
        evbus__stmt_cache_t *nc = realloc(st->cache, cap * sizeof *nc);
        if (!nc) {
            st->ops->finalize(s);
            return NULL;
        }
        st->cache = nc;
        st->capcache = cap;
    }
    st->cache[st->ncache].key = sql;
    st->cache[st->ncache].stmt = s;
    st->ncache++;
    return s;
}

evbus_err_t evbus_stmt_bind_text(evbus_stmt_t *s, int idx, const char *v)
{
    return v ? s->ops->bind_text(s, idx, v) : s->ops->bind_null(s, idx);
}
evbus_err_t evbus_stmt_bind_int64(evbus_stmt_t *s, int idx, int64_t v)
{
    return s->ops->bind_int64(s, idx, v);
}
evbus_err_t evbus_stmt_bind_null(evbus_stmt_t *s, int idx)
{
    return s->ops->bind_null(s, idx);
}
int evbus_stmt_step(evbus_stmt_t *s, int *constraint)
{
    if (constraint)
        *constraint = 0;
    return s->ops->step(s, constraint);
}
const char *evbus_stmt_text(evbus_stmt_t *s, int col)
{
    return s->ops->text(s, col);
}
int64_t evbus_stmt_int64(evbus_stmt_t *s, int col)
{
    return s->ops->int64(s, col);
}
int evbus_stmt_is_null(evbus_stmt_t *s, int col)
{
    return s->ops->is_null(s, col);
}
int64_t evbus_stmt_changes(evbus_stmt_t *s)
{
    return s->ops->changes(s);
}
void evbus_stmt_done(evbus_stmt_t *s)
{
    s->ops->done(s);
}

static const evbus_sql_t SQL_SCHEMA_TABLE = {{
    "CREATE TABLE IF NOT EXISTS evbus_schema (component TEXT PRIMARY KEY, "
    "version INTEGER NOT NULL)",
}};
static const evbus_sql_t SQL_SCHEMA_GET = {
    {"SELECT version FROM evbus_schema WHERE component = ?"}};
static const evbus_sql_t SQL_SCHEMA_SET = {{
    "INSERT INTO evbus_schema (component, version) VALUES (?, ?) "
    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
}};
/* Serializes migrations of processes starting together on one database (SQLite's
 * BEGIN IMMEDIATE already does). */
static const evbus_sql_t SQL_MIGRATE_LOCK = {{
    [EVBUS_DIALECT_SQLITE] = "SELECT 1",
    [EVBUS_DIALECT_PG] = "SELECT pg_advisory_xact_lock(7402100)",
}};

static int current_version(evbus_store_t *st, const char *component)
{
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_SCHEMA_GET);
    if (!s)
        return -1;
    evbus_stmt_bind_text(s, 1, component);
    int rc = evbus_stmt_step(s, NULL);
    int v = rc == EVBUS_STEP_ROW ? (int)evbus_stmt_int64(s, 0) : rc == EVBUS_STEP_DONE ? 0 : -1;
    evbus_stmt_done(s);
    return v;
}

static const char *sql_text(const evbus_store_t *st, const evbus_sql_t *sql)
{
    const char *t = sql->text[st->ops->dialect];
    return t ? t : sql->text[EVBUS_DIALECT_SQLITE];
}

/* Begins a transaction holding the migration lock. */
static evbus_err_t begin_locked(evbus_store_t *st)
{
    if (evbus_store_begin(st) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_MIGRATE_LOCK);
    int rc = s ? evbus_stmt_step(s, NULL) : EVBUS_STEP_ERROR;
    if (s)
        evbus_stmt_done(s);
    if (rc != EVBUS_STEP_ROW) {
        evbus_store_rollback(st);
        return EVBUS_ERR_DB;
    }
    return EVBUS_ERR_OK;
}

/* Applies migration m if the component is below its version; refuses a newer schema. */
static evbus_err_t migrate_one(evbus_store_t *st, const char *component, const evbus_migration_t *m,
                               int newest)
{
    int cur = current_version(st, component);
    if (cur < 0)
        return EVBUS_ERR_DB;
    if (cur > newest) {
        evbus_log_error("store: the %s schema is at version %d, newer than this binary's %d; "
                        "refusing to start",
                        component, cur, newest);
        return EVBUS_ERR_CONFLICT;
    }
    if (m->version <= cur)
        return EVBUS_ERR_OK;
    evbus_stmt_t *s;
    if (evbus_store_exec(st, sql_text(st, &m->sql)) != EVBUS_ERR_OK ||
        !(s = evbus_store_prepare(st, &SQL_SCHEMA_SET)))
        return EVBUS_ERR_DB;
    evbus_stmt_bind_text(s, 1, component);
    evbus_stmt_bind_int64(s, 2, m->version);
    int rc = evbus_stmt_step(s, NULL);
    evbus_stmt_done(s);
    if (rc != EVBUS_STEP_DONE)
        return EVBUS_ERR_DB;
    char v[16];
    snprintf(v, sizeof v, "%d", m->version);
    evbus_log_kv(EVBUS_LOG_INFO, "schema migrated", "component", component, "version", v, NULL);
    return EVBUS_ERR_OK;
}

evbus_err_t evbus_store_migrate(evbus_store_t *st, const char *component,
                                const evbus_migration_t *m, size_t n)
{
    evbus_err_t rc = begin_locked(st);
    if (rc == EVBUS_ERR_OK && evbus_store_exec(st, sql_text(st, &SQL_SCHEMA_TABLE)) != EVBUS_ERR_OK)
        rc = EVBUS_ERR_DB;
    if (rc == EVBUS_ERR_OK)
        rc = evbus_store_commit(st);
    else
        evbus_store_rollback(st);
    for (size_t i = 0; rc == EVBUS_ERR_OK && i < n; i++) {
        if ((rc = begin_locked(st)) != EVBUS_ERR_OK)
            break;
        rc = migrate_one(st, component, &m[i], m[n - 1].version);
        if (rc != EVBUS_ERR_OK)
            evbus_store_rollback(st);
        else
            rc = evbus_store_commit(st);
    }
    if (rc == EVBUS_ERR_DB)
        evbus_log_error("store: migration of %s failed: %s", component, evbus_store_errmsg(st));
    return rc;
}

struct evbus_store_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    evbus_store_t **free_list;
    unsigned nfree, size;
};

evbus_store_pool_t *evbus_store_pool_new(const char *url, unsigned size)
{
    evbus_store_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->free_list = calloc(size, sizeof *p->free_list);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->size = size;
    for (unsigned i = 0; p->free_list && i < size; i++) {
        p->free_list[i] = evbus_store_open(url);
        if (!p->free_list[i])
            break;
        p->nfree++;
    }
    if (p->nfree != size) {
        evbus_store_pool_free(p);
        return NULL;
    }
    return p;
}

evbus_store_t *evbus_store_pool_get(evbus_store_pool_t *p)
{
    pthread_mutex_lock(&p->lock);
    while (p->nfree == 0)
        pthread_cond_wait(&p->cond, &p->lock);
    evbus_store_t *st = p->free_list[--p->nfree];
    pthread_mutex_unlock(&p->lock);
    return st;
}

void evbus_store_pool_put(evbus_store_pool_t *p, evbus_store_t *st)
{
    pthread_mutex_lock(&p->lock);
    p->free_list[p->nfree++] = st;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

void evbus_store_pool_free(evbus_store_pool_t *p)
{
    if (!p)
        return;
    for (unsigned i = 0; i < p->nfree; i++)
        evbus_store_close(p->free_list[i]);
    free(p->free_list);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}
