/* The store vtable that each backend driver implements (see evbus/store.h). */
#ifndef EVBUS_STORE_IMPL_H
#define EVBUS_STORE_IMPL_H

#include "evbus/store.h"

typedef struct evbus_store_ops {
    const char *name;
    evbus_dialect_t dialect;
    void (*close)(evbus_store_t *st);
    const char *(*errmsg)(const evbus_store_t *st);
    evbus_err_t (*exec)(evbus_store_t *st, const char *sql);
    evbus_err_t (*begin)(evbus_store_t *st);
    evbus_err_t (*commit)(evbus_store_t *st);
    void (*rollback)(evbus_store_t *st);
    evbus_err_t (*relax)(evbus_store_t *st);
    evbus_stmt_t *(*prepare)(evbus_store_t *st, const char *sql);
    void (*finalize)(evbus_stmt_t *s);
    evbus_err_t (*bind_text)(evbus_stmt_t *s, int idx, const char *v);
    evbus_err_t (*bind_int64)(evbus_stmt_t *s, int idx, int64_t v);
    evbus_err_t (*bind_null)(evbus_stmt_t *s, int idx);
    int (*step)(evbus_stmt_t *s, int *constraint);
    const char *(*text)(evbus_stmt_t *s, int col);
    int64_t (*int64)(evbus_stmt_t *s, int col);
    int (*is_null)(evbus_stmt_t *s, int col);
    int64_t (*changes)(evbus_stmt_t *s);
    void (*done)(evbus_stmt_t *s);
    /* optional: NULL on backends without notifications */
    evbus_err_t (*notify)(evbus_store_t *st, const char *channel, const char *payload);
    evbus_err_t (*listen)(evbus_store_t *st, const char *channel);
    evbus_err_t (*wait_notify)(evbus_store_t *st, int timeout_ms,
                               void (*fn)(const char *payload, void *ud), void *ud);
} evbus_store_ops_t;

typedef struct {
    const evbus_sql_t *key;
    evbus_stmt_t *stmt;
} evbus__stmt_cache_t;

/* Every driver's connection struct starts with this. */
struct evbus_store {
    const evbus_store_ops_t *ops;
    evbus__stmt_cache_t *cache;
    size_t ncache, capcache;
};

/* Every driver's statement struct starts with this. */
struct evbus_stmt {
    const evbus_store_ops_t *ops;
};

/* Driver entry points: open a connection for the part of the URL after the scheme. */
evbus_store_t *evbus__sqlite_open(const char *path);
evbus_store_t *evbus__pg_open(const char *url);

#endif
