/* User profiles, built from UserRegistered events. Each event is applied in one
 * transaction together with its inbox row, so a redelivered event changes nothing. */
#include <stdio.h>
#include <strings.h>
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
    /* the account's version (from its events; an older one never overwrites a newer
     * one) and the part of the profile its owner edits here */
    {2,
     {{"ALTER TABLE users_profiles ADD COLUMN version BIGINT NOT NULL DEFAULT 1;"
       "ALTER TABLE users_profiles ADD COLUMN bio TEXT NOT NULL DEFAULT '';"}}},
};

static const evbus_sql_t SQL_INSERT = {{
    "INSERT INTO users_profiles (user_id, email, display_name, registered_at, created_at,"
    " updated_at, last_event_id, role) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (user_id) DO NOTHING",
}};
/* UserUpdated and UserDeactivated carry the account's whole state and its version: the
 * row takes it only when it is newer than what the row has (or creates the row when the
 * registration has not arrived yet). */
static const evbus_sql_t SQL_STATE = {{
    "INSERT INTO users_profiles (user_id, email, display_name, status, role, created_at,"
    " updated_at, last_event_id, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (user_id) DO UPDATE SET email = excluded.email,"
    " display_name = excluded.display_name, status = excluded.status, role = excluded.role,"
    " updated_at = excluded.updated_at, last_event_id = excluded.last_event_id,"
    " version = excluded.version WHERE users_profiles.version < excluded.version",
}};
static const evbus_sql_t SQL_GET = {{
    "SELECT user_id, email, display_name, status, role, is_email_verified, registered_at,"
    " created_at, updated_at, version, bio FROM users_profiles WHERE user_id = ?",
}};
static const evbus_sql_t SQL_BIO = {{
    "UPDATE users_profiles SET bio = ?, updated_at = ? WHERE user_id = ?",
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
    const char *role = json_string_value(json_object_get(data, "role"));
    evbus_stmt_bind_text(s, 8, role && strcmp(role, "admin") == 0 ? "admin" : "user");
    int rc = evbus_stmt_step(s, NULL);
    int64_t changed = evbus_stmt_changes(s);
    evbus_stmt_done(s);
    if (rc != EVBUS_STEP_DONE)
        return EVBUS_ERR_DB;
    evbus_log_kv(EVBUS_LOG_INFO, changed ? "profile created" : "profile already exists", "user_id",
                 uid, NULL);
    return EVBUS_ERR_OK;
}

static evbus_err_t apply_state(evbus_store_t *db, const evbus_event_t *ev, json_t *data)
{
    const char *uid = json_string_value(json_object_get(data, "userId"));
    const char *email = json_string_value(json_object_get(data, "email"));
    const char *name = json_string_value(json_object_get(data, "displayName"));
    const char *status = json_string_value(json_object_get(data, "status"));
    const char *role = json_string_value(json_object_get(data, "role"));
    json_t *version = json_object_get(data, "version");
    if (!evbus_uuid_valid(uid) || !email || !name || !status || !json_is_integer(version) ||
        (strcmp(status, "active") != 0 && strcmp(status, "deactivated") != 0)) {
        evbus_log_kv(EVBUS_LOG_ERROR, "account event without a valid state", "type",
                     evbus_event_type(ev), NULL);
        return EVBUS_ERR_INVALID;
    }
    evbus_stmt_t *s = evbus_store_prepare(db, &SQL_STATE);
    if (!s)
        return EVBUS_ERR_DB;
    int64_t now = evbus_now_ms();
    evbus_stmt_bind_text(s, 1, uid);
    evbus_stmt_bind_text(s, 2, email);
    evbus_stmt_bind_text(s, 3, name);
    evbus_stmt_bind_text(s, 4, status);
    evbus_stmt_bind_text(s, 5, role && strcmp(role, "admin") == 0 ? "admin" : "user");
    evbus_stmt_bind_int64(s, 6, now);
    evbus_stmt_bind_int64(s, 7, now);
    evbus_stmt_bind_text(s, 8, evbus_event_id(ev));
    evbus_stmt_bind_int64(s, 9, json_integer_value(version));
    int rc = evbus_stmt_step(s, NULL);
    int64_t changed = evbus_stmt_changes(s);
    evbus_stmt_done(s);
    if (rc != EVBUS_STEP_DONE)
        return EVBUS_ERR_DB;
    char v[24];
    snprintf(v, sizeof v, "%lld", (long long)json_integer_value(version));
    evbus_log_kv(EVBUS_LOG_INFO, changed ? "profile updated" : "older account state ignored",
                 "user_id", uid, "version", v, NULL);
    return EVBUS_ERR_OK;
}

evbus_err_t users_apply(const evbus_event_t *ev, void *ud)
{
    users_app_t *app = ud;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_err_t rc = users_apply_in(db, ev);
    evbus_store_pool_put(app->pool, db);
    return rc;
}

evbus_err_t users_apply_in(evbus_store_t *db, const evbus_event_t *ev)
{
    const char *type = evbus_event_type(ev);
    int registered = strcmp(type, "UserRegistered") == 0;
    if (!registered && strcmp(type, "UserUpdated") != 0 && strcmp(type, "UserDeactivated") != 0) {
        evbus_log_kv(EVBUS_LOG_DEBUG, "event type not handled", "type", type, NULL);
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
        rc = registered ? insert_profile(db, ev, data) : apply_state(db, ev, data);
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

/* The caller may read or edit profile id: a valid token for that user, or role admin.
 * Answers 401/403 and returns 0 otherwise. */
static int allowed(users_app_t *app, evbus_req_t *req, const char *id)
{
    const char *h = evbus_req_header(req, "Authorization");
    evbus_claims_t c;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0 ||
        evbus_jwt_verify(&app->jwt, h + 7, evbus_now_ms() / 1000, &c) != 0) {
        evbus_req_add_header(req, "WWW-Authenticate", "Bearer");
        evbus_req_problem(req, 401, "unauthorized", "Unauthorized",
                          "a valid access token is required", NULL);
        return 0;
    }
    if (strcmp(c.sub, id) != 0 && strcmp(c.role, "admin") != 0) {
        evbus_req_problem(req, 403, "forbidden", "Forbidden",
                          "a user reads and edits their own profile only", NULL);
        return 0;
    }
    return 1;
}

static int valid_id(evbus_req_t *req, const char *id)
{
    if (evbus_uuid_valid(id))
        return 1;
    evbus_req_problem(req, 400, "invalid-id", "Invalid User Id", "the user id must be a UUID",
                      json_pack("[{s:s, s:s}]", "field", "id", "message", "must be a UUID"));
    return 0;
}

void users_get(evbus_req_t *req, void *ud)
{
    users_app_t *app = ud;
    const char *id = evbus_req_param(req, "id");
    if (!valid_id(req, id) || !allowed(app, req, id))
        return;
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
            profile =
                json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:s?, s:s, s:s, s:I, s:s}", "id",
                          evbus_stmt_text(s, 0), "email", evbus_stmt_text(s, 1), "displayName",
                          evbus_stmt_text(s, 2), "status", evbus_stmt_text(s, 3), "role",
                          evbus_stmt_text(s, 4), "isEmailVerified", (int)evbus_stmt_int64(s, 5),
                          "registeredAt", evbus_stmt_is_null(s, 6) ? NULL : evbus_stmt_text(s, 6),
                          "createdAt", created, "updatedAt", updated, "version",
                          (json_int_t)evbus_stmt_int64(s, 9), "bio", evbus_stmt_text(s, 10));
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
        evbus_req_unavailable(req, "the profile store is not available");
    }
}

/* PUT /api/users/{id}/profile {"bio": "..."}: the part of the profile its owner edits
 * here (the rest follows the account's events). */
void users_put_profile(evbus_req_t *req, void *ud)
{
    static const char *const json_types[] = {"application/json", NULL};
    users_app_t *app = ud;
    const char *id = evbus_req_param(req, "id");
    if (!valid_id(req, id) || !allowed(app, req, id) || !evbus_req_require_type(req, json_types))
        return;
    json_t *body = evbus_req_json(req);
    if (!body)
        return;
    json_t *bio = json_object_get(body, "bio");
    long len = json_is_string(bio) ? evbus_utf8_len(json_string_value(bio)) : -1;
    if (!json_is_object(body) || json_object_size(body) != 1 || len < 0 || len > 1000 ||
        strlen(json_string_value(bio)) != json_string_length(bio)) {
        json_decref(body);
        evbus_req_problem(req, 400, "validation", "Validation Failed",
                          "the body must be {\"bio\": a string of at most 1000 characters}",
                          json_pack("[{s:s, s:s}]", "field", "bio", "message",
                                    "a string of at most 1000 characters"));
        return;
    }
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_stmt_t *s = evbus_store_prepare(db, &SQL_BIO);
    int64_t changed = -1;
    if (s) {
        evbus_stmt_bind_text(s, 1, json_string_value(bio));
        evbus_stmt_bind_int64(s, 2, evbus_now_ms());
        evbus_stmt_bind_text(s, 3, id);
        if (evbus_stmt_step(s, NULL) == EVBUS_STEP_DONE)
            changed = evbus_stmt_changes(s);
        evbus_stmt_done(s);
    }
    evbus_store_pool_put(app->pool, db);
    json_decref(body);
    if (changed < 0) {
        evbus_req_unavailable(req, "the profile store is not available");
    } else if (changed == 0) {
        evbus_req_problem(req, 404, "user-not-found", "User Not Found",
                          "no profile with this id (yet)", NULL);
    } else {
        users_get(req, ud);
    }
}
