/* The auth database: users, and the outbox their events leave through. */
#include "auth.h"

static const evbus_migration_t migrations[] = {
    {1,
     {{"CREATE TABLE auth_users ("
       " id TEXT PRIMARY KEY,"
       " email TEXT NOT NULL UNIQUE,"
       " display_name TEXT NOT NULL,"
       " password_hash TEXT NOT NULL,"
       " status TEXT NOT NULL DEFAULT 'active',"
       " created_at BIGINT NOT NULL,"
       " updated_at BIGINT NOT NULL)"}}},
};

static const evbus_sql_t SQL_INSERT = {{
    "INSERT INTO auth_users (id, email, display_name, password_hash, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?)",
}};

evbus_err_t auth_db_migrate(evbus_store_t *st)
{
    evbus_err_t rc =
        evbus_store_migrate(st, "auth", migrations, sizeof migrations / sizeof migrations[0]);
    return rc ? rc : evbus_outbox_migrate(st);
}

evbus_err_t auth_db_create_user(evbus_store_t *st, const auth_user_t *u, const evbus_event_t *ev)
{
    if (evbus_store_begin(st) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    evbus_err_t rc = EVBUS_ERR_DB;
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_INSERT);
    if (s) {
        evbus_stmt_bind_text(s, 1, u->id);
        evbus_stmt_bind_text(s, 2, u->email);
        evbus_stmt_bind_text(s, 3, u->display_name);
        evbus_stmt_bind_text(s, 4, u->password_hash);
        evbus_stmt_bind_int64(s, 5, u->created_at);
        evbus_stmt_bind_int64(s, 6, u->created_at);
        int constraint;
        int step = evbus_stmt_step(s, &constraint);
        evbus_stmt_done(s);
        rc = step == EVBUS_STEP_DONE ? EVBUS_ERR_OK
             : constraint            ? EVBUS_ERR_CONFLICT
                                     : EVBUS_ERR_DB;
    }
    if (rc == EVBUS_ERR_OK)
        rc = evbus_outbox_append(st, ev);
    if (rc != EVBUS_ERR_OK) {
        evbus_store_rollback(st);
        return rc;
    }
    return evbus_store_commit(st);
}
