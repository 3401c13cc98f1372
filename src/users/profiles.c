/* User profiles, built from UserRegistered events. Each event is applied in one
 * transaction together with its inbox row, so a redelivered event changes nothing. */
#include <stdio.h>
#include <string.h>

#include "evbus/id.h"
#include "evbus/inbox.h"
#include "evbus/log.h"
#include "evbus/util.h"
#include "users.h"

static const evbus_migration_t migrations[] = {
    {1,
     {{"CREATE TABLE users_profiles ("
       " user_id TEXT PRIMARY KEY,"
       " email TEXT NOT NULL,"
       " display_name TEXT NOT NULL,"
       " status TEXT NOT NULL DEFAULT 'active',"
       " role TEXT NOT NULL DEFAULT 'user',"
       " is_email_verified INTEGER NOT NULL DEFAULT 0,"
       " registered_at TEXT,"
       " created_at BIGINT NOT NULL,"
       " updated_at BIGINT NOT NULL,"
       " last_event_id TEXT NOT NULL)"}}},
};

static const evbus_sql_t SQL_INSERT = {{
    "INSERT INTO users_profiles (user_id, email, display_name, registered_at, created_at,"
    " updated_at, last_event_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO NOTHING",
}};
static const evbus_sql_t SQL_GET = {{
    "SELECT user_id, email, display_name, status, role, is_email_verified, registered_at,"
    " created_at, updated_at FROM users_profiles WHERE user_id = ?",
}};

evbus_err_t users_db_migrate(evbus_store_t *st)
{
    evbus_err_t rc =
        evbus_store_migrate(st, "users", migrations, sizeof migrations / sizeof migrations[0]);
    return rc ? rc : evbus_inbox_migrate(st);
}

static evbus_err_t insert_profile(evbus_store_t *db, const evbus_event_t *ev, json_t *data)
{
    const char *uid = json_string_value(json_object_get(data, "userId"));
    const char *email = json_string_value(json_object_get(data, "email"));
    const char *name = json_string_value(json_object_get(data, "displayName"));
    const char *reg = json_string_value(json_object_get(data, "registeredAt"));
    if (!evbus_uuid_valid(uid) || !email || !name) {
        evbus_log_kv(EVBUS_LOG_ERROR, "UserRegistered without userId, email or displayName", NULL);
        return EVBUS_ERR_INVALID;
    }
    evbus_stmt_t *s = evbus_store_prepare(db, &SQL_INSERT);
    if (!s)
        return EVBUS_ERR_DB;
    int64_t now = evbus_now_ms();
    evbus_stmt_bind_text(s, 1, uid);
    evbus_stmt_bind_text(s, 2, email);
    evbus_stmt_bind_text(s, 3, name);
    evbus_stmt_bind_text(s, 4, reg);
    evbus_stmt_bind_int64(s, 5, now);
    evbus_stmt_bind_int64(s, 6, now);
    evbus_stmt_bind_text(s, 7, evbus_event_id(ev));
    int rc = evbus_stmt_step(s, NULL);
    int64_t changed = evbus_stmt_changes(s);
    evbus_stmt_done(s);
    if (rc != EVBUS_STEP_DONE)
        return EVBUS_ERR_DB;
    evbus_log_kv(EVBUS_LOG_INFO, changed ? "profile created" : "profile already exists", "user_id",
                 uid, NULL);
    return EVBUS_ERR_OK;
}

evbus_err_t users_apply(const evbus_event_t *ev, void *ud)
{
    return users_apply_in(((users_app_t *)ud)->apply_db, ev);
}

evbus_err_t users_apply_in(evbus_store_t *db, const evbus_event_t *ev)
{
    if (strcmp(evbus_event_type(ev), "UserRegistered") != 0) {
        evbus_log_kv(EVBUS_LOG_DEBUG, "event type not handled", "type", evbus_event_type(ev), NULL);
        return EVBUS_ERR_OK;
    }
    json_t *data = evbus_event_data(ev);
    if (!json_is_object(data))
        return EVBUS_ERR_INVALID;
    if (evbus_store_begin(db) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    int fresh = evbus_inbox_claim(db, evbus_event_id(ev), evbus_event_type(ev));
    evbus_err_t rc = fresh < 0 ? EVBUS_ERR_DB : EVBUS_ERR_OK;
    if (fresh == 1)
        rc = insert_profile(db, ev, data);
    if (rc != EVBUS_ERR_OK) {
        evbus_store_rollback(db);
        return rc;
    }
    if (evbus_store_commit(db) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    if (fresh == 0)
        evbus_log_kv(EVBUS_LOG_INFO, "duplicate event skipped", "type", evbus_event_type(ev), NULL);
    return EVBUS_ERR_OK;
}

void users_get(evbus_req_t *req, void *ud)
{
    users_app_t *app = ud;
    const char *id = evbus_req_param(req, "id");
    if (!evbus_uuid_valid(id)) {
        evbus_req_problem(req, 400, "invalid-id", "Invalid User Id", "the user id must be a UUID",
                          json_pack("[{s:s, s:s}]", "field", "id", "message", "must be a UUID"));
        return;
    }
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_stmt_t *s = evbus_store_prepare(db, &SQL_GET);
    int rc = EVBUS_STEP_ERROR;
    json_t *profile = NULL;
    if (s) {
        evbus_stmt_bind_text(s, 1, id);
        rc = evbus_stmt_step(s, NULL);
        if (rc == EVBUS_STEP_ROW) {
            char created[40], updated[40];
            evbus_fmt_rfc3339(evbus_stmt_int64(s, 7), created, sizeof created);
            evbus_fmt_rfc3339(evbus_stmt_int64(s, 8), updated, sizeof updated);
            profile = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:s?, s:s, s:s}", "id",
                                evbus_stmt_text(s, 0), "email", evbus_stmt_text(s, 1),
                                "displayName", evbus_stmt_text(s, 2), "status",
                                evbus_stmt_text(s, 3), "role", evbus_stmt_text(s, 4),
                                "isEmailVerified", (int)evbus_stmt_int64(s, 5), "registeredAt",
                                evbus_stmt_text(s, 6), "createdAt", created, "updatedAt", updated);
        }
        evbus_stmt_done(s);
    }
    evbus_store_pool_put(app->pool, db);
    if (profile)
        evbus_req_reply_json(req, 200, profile);
    else if (rc == EVBUS_STEP_DONE)
        evbus_req_problem(req, 404, "user-not-found", "User Not Found",
                          "no profile with this id (yet)", NULL);
    else {
        evbus_req_add_header(req, "Retry-After", "1");
        evbus_req_problem(req, 503, "storage-unavailable", "Service Unavailable",
                          "the profile store is not available", NULL);
    }
}
