/* The auth database: users, and the outbox their events leave through. */
#include "auth.h"
#include "evbus/util.h"

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
    /* roles, and a version per user that every event about the user carries, so
     * consumers can tell a newer state from an older one */
    {2,
     {{"ALTER TABLE auth_users ADD COLUMN role TEXT NOT NULL DEFAULT 'user';"
       "ALTER TABLE auth_users ADD COLUMN version BIGINT NOT NULL DEFAULT 1;"}}},
};

static const evbus_sql_t SQL_INSERT = {{
    "INSERT INTO auth_users (id, email, display_name, password_hash, created_at, updated_at,"
    " role) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        evbus_stmt_bind_text(s, 7, u->role ? u->role : "user");
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

#define USER_COLUMNS                                                                               \
    "id, email, display_name, password_hash, status, role, version, created_at, updated_at"

static const evbus_sql_t SQL_BY_EMAIL = {
    {"SELECT " USER_COLUMNS " FROM auth_users WHERE email = ?"}};
static const evbus_sql_t SQL_BY_ID = {{"SELECT " USER_COLUMNS " FROM auth_users WHERE id = ?"}};

static evbus_err_t load(evbus_store_t *st, const evbus_sql_t *sql, const char *key, auth_row_t *out)
{
    evbus_stmt_t *s = evbus_store_prepare(st, sql);
    if (!s)
        return EVBUS_ERR_DB;
    evbus_stmt_bind_text(s, 1, key);
    int rc = evbus_stmt_step(s, NULL);
    if (rc == EVBUS_STEP_ROW) {
        evbus_strlcpy(out->id, evbus_stmt_text(s, 0), sizeof out->id);
        evbus_strlcpy(out->email, evbus_stmt_text(s, 1), sizeof out->email);
        evbus_strlcpy(out->display_name, evbus_stmt_text(s, 2), sizeof out->display_name);
        evbus_strlcpy(out->password_hash, evbus_stmt_text(s, 3), sizeof out->password_hash);
        evbus_strlcpy(out->status, evbus_stmt_text(s, 4), sizeof out->status);
        evbus_strlcpy(out->role, evbus_stmt_text(s, 5), sizeof out->role);
        out->version = evbus_stmt_int64(s, 6);
        out->created_at = evbus_stmt_int64(s, 7);
        out->updated_at = evbus_stmt_int64(s, 8);
    }
    evbus_stmt_done(s);
    return rc == EVBUS_STEP_ROW    ? EVBUS_ERR_OK
           : rc == EVBUS_STEP_DONE ? EVBUS_ERR_NOTFOUND
                                   : EVBUS_ERR_DB;
}

evbus_err_t auth_db_by_email(evbus_store_t *st, const char *email, auth_row_t *out)
{
    return load(st, &SQL_BY_EMAIL, email, out);
}

evbus_err_t auth_db_by_id(evbus_store_t *st, const char *id, auth_row_t *out)
{
    return load(st, &SQL_BY_ID, id, out);
}

/* The update only applies to the version read (optimistic): a concurrent change makes
 * it a conflict instead of a lost update. */
static const evbus_sql_t SQL_SAVE = {{
    "UPDATE auth_users SET email = ?, display_name = ?, password_hash = ?, status = ?,"
    " version = version + 1, updated_at = ? WHERE id = ? AND version = ?",
}};

evbus_err_t auth_db_save(evbus_store_t *st, const auth_row_t *u, const evbus_event_t *ev)
{
    if (evbus_store_begin(st) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    evbus_err_t rc = EVBUS_ERR_DB;
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_SAVE);
    if (s) {
        evbus_stmt_bind_text(s, 1, u->email);
        evbus_stmt_bind_text(s, 2, u->display_name);
        evbus_stmt_bind_text(s, 3, u->password_hash);
        evbus_stmt_bind_text(s, 4, u->status);
        evbus_stmt_bind_int64(s, 5, u->updated_at);
        evbus_stmt_bind_text(s, 6, u->id);
        evbus_stmt_bind_int64(s, 7, u->version - 1);
        int constraint = 0;
        int step = evbus_stmt_step(s, &constraint);
        int64_t changed = step == EVBUS_STEP_DONE ? evbus_stmt_changes(s) : 0;
        evbus_stmt_done(s);
        rc = step == EVBUS_STEP_DONE ? (changed == 1 ? EVBUS_ERR_OK : EVBUS_ERR_CONFLICT)
             : constraint            ? EVBUS_ERR_CONFLICT
                                     : EVBUS_ERR_DB;
    }
    if (rc == EVBUS_ERR_OK && ev)
        rc = evbus_outbox_append(st, ev);
    if (rc != EVBUS_ERR_OK) {
        evbus_store_rollback(st);
        return rc;
    }
    return evbus_store_commit(st);
}
