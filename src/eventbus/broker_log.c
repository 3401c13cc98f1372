/* The embedded broker: the eventbus database is the log. Every event gets a position
 * (seq) when its transaction commits; subscriptions read a topic after their cursor.
 * One writer thread assigns positions, so positions become visible in order and a
 * cursor never skips a row that commits late. */
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"

/* The log's position column: gap-free order comes from the single writer (SQLite) or
 * the writer lock (PostgreSQL), not from the column type. */
#define EB_SCHEMA_V1(seq_column)                                                                   \
    "CREATE TABLE eb_events ("                                                                     \
    " seq " seq_column ","                                                                         \
    " id TEXT NOT NULL UNIQUE,"                                                                    \
    " topic TEXT NOT NULL,"                                                                        \
    " type TEXT NOT NULL,"                                                                         \
    " source TEXT NOT NULL,"                                                                       \
    " subject TEXT,"                                                                               \
    " correlation_id TEXT,"                                                                        \
    " received_at BIGINT NOT NULL,"                                                                \
    " body TEXT NOT NULL);"                                                                        \
    "CREATE INDEX eb_events_topic ON eb_events (topic, seq);"                                      \
    "CREATE TABLE eb_subscriptions ("                                                              \
    " name TEXT PRIMARY KEY,"                                                                      \
    " topic TEXT NOT NULL,"                                                                        \
    " types TEXT,"                                                                                 \
    " mode TEXT NOT NULL,"                                                                         \
    " cursor BIGINT NOT NULL,"                                                                     \
    " created_at BIGINT NOT NULL,"                                                                 \
    " updated_at BIGINT NOT NULL);"

#define EB_SCHEMA_V4(id_column)                                                                    \
    "ALTER TABLE eb_subscriptions ADD COLUMN push TEXT;"                                           \
    "ALTER TABLE eb_subscriptions ADD COLUMN secret TEXT;"                                         \
    "ALTER TABLE eb_subscriptions ADD COLUMN secret_prev TEXT;"                                    \
    "ALTER TABLE eb_subscriptions ADD COLUMN secret_prev_until BIGINT NOT NULL DEFAULT 0;"         \
    "ALTER TABLE eb_subscriptions ADD COLUMN state TEXT NOT NULL DEFAULT 'active';"                \
    "ALTER TABLE eb_subscriptions ADD COLUMN state_reason TEXT;"                                   \
    "ALTER TABLE eb_subscriptions ADD COLUMN group_epoch BIGINT NOT NULL DEFAULT 0;"               \
    "ALTER TABLE eb_subscriptions ADD COLUMN start_at BIGINT NOT NULL DEFAULT 0;"                  \
    "ALTER TABLE eb_subscriptions ADD COLUMN seek_gen BIGINT NOT NULL DEFAULT 0;"                  \
    "ALTER TABLE eb_subscriptions ADD COLUMN lease_owner TEXT;"                                    \
    "ALTER TABLE eb_subscriptions ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;"               \
    "CREATE TABLE eb_dlq ("                                                                        \
    " id " id_column ","                                                                           \
    " subscription TEXT NOT NULL,"                                                                 \
    " event_id TEXT NOT NULL,"                                                                     \
    " position BIGINT NOT NULL,"                                                                   \
    " type TEXT NOT NULL,"                                                                         \
    " subject TEXT,"                                                                               \
    " body TEXT NOT NULL,"                                                                         \
    " attempts INTEGER NOT NULL,"                                                                  \
    " last_status INTEGER NOT NULL,"                                                               \
    " last_error TEXT,"                                                                            \
    " first_attempt_at BIGINT NOT NULL,"                                                           \
    " failed_at BIGINT NOT NULL,"                                                                  \
    " state TEXT NOT NULL DEFAULT 'parked',"                                                       \
    " UNIQUE (subscription, event_id));"                                                           \
    "CREATE INDEX eb_dlq_state ON eb_dlq (subscription, state, id);"

const evbus_migration_t eb_migrations[] = {
    {1,
     {{[EVBUS_DIALECT_SQLITE] = EB_SCHEMA_V1("INTEGER PRIMARY KEY AUTOINCREMENT"),
       [EVBUS_DIALECT_PG] = EB_SCHEMA_V1("BIGSERIAL PRIMARY KEY")}}},
    /* retention deletes by age */
    {2, {{"CREATE INDEX eb_events_received ON eb_events (received_at)"}}},
    /* where a subscription starts; the Kafka groups need it when they first get a
     * partition, long after the creation */
    {3, {{"ALTER TABLE eb_subscriptions ADD COLUMN start_from TEXT NOT NULL DEFAULT 'latest'"}}},
    /* push delivery: the webhook and its policies, secrets, state, a delivery lease (one
     * instance pushes a subscription on the embedded log), seeks, and the dead letters */
    {4,
     {{[EVBUS_DIALECT_SQLITE] = EB_SCHEMA_V4("INTEGER PRIMARY KEY AUTOINCREMENT"),
       [EVBUS_DIALECT_PG] = EB_SCHEMA_V4("BIGSERIAL PRIMARY KEY")}}},
    /* API keys: the secret only as a salted keyed hash */
    {5,
     {{"CREATE TABLE eb_api_keys ("
       " id TEXT PRIMARY KEY,"
       " name TEXT NOT NULL,"
       " salt TEXT NOT NULL,"
       " hash TEXT NOT NULL,"
       " admin INTEGER NOT NULL DEFAULT 0,"
       " types TEXT,"
       " sources TEXT,"
       " subscriptions TEXT,"
       " created_at BIGINT NOT NULL,"
       " revoked_at BIGINT)"}}},
};
const size_t eb_nmigrations = sizeof eb_migrations / sizeof eb_migrations[0];

static const evbus_sql_t SQL_FETCH = {{
    "SELECT seq, type, body FROM eb_events WHERE topic = ? AND seq > ? ORDER BY seq LIMIT ?",
}};
static const evbus_sql_t SQL_HEAD = {{"SELECT COALESCE(MAX(seq), 0) FROM eb_events"}};

/* Rows examined per call at most, so a filter that matches little cannot make one poll
 * scan the whole topic. */
#define SCAN_BUDGET 5000

static evbus_err_t log_fetch(evbus_store_t *st, const char *topic, json_t *types, int64_t after,
                             unsigned max, json_t *out, int64_t *next)
{
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_FETCH);
    if (!s)
        return EVBUS_ERR_DB;
    *next = after;
    unsigned scanned = 0;
    int rc = EVBUS_STEP_DONE;
    while (json_array_size(out) < max && scanned < SCAN_BUDGET) {
        unsigned got = 0;
        evbus_stmt_bind_text(s, 1, topic);
        evbus_stmt_bind_int64(s, 2, *next);
        evbus_stmt_bind_int64(s, 3, max);
        while (json_array_size(out) < max && (rc = evbus_stmt_step(s, NULL)) == EVBUS_STEP_ROW) {
            got++;
            int64_t seq = evbus_stmt_int64(s, 0);
            *next = seq;
            if (!eb_type_wanted(types, evbus_stmt_text(s, 1)))
                continue;
            json_t *ev = json_loads(evbus_stmt_text(s, 2), 0, NULL);
            if (!ev) {
                rc = EVBUS_STEP_ERROR;
                break;
            }
            json_array_append_new(
                out, json_pack("{s:I, s:o}", "position", (json_int_t)seq, "event", ev));
        }
        evbus_stmt_done(s);
        scanned += got;
        if (rc == EVBUS_STEP_ERROR || got < max)
            break;
    }
    return rc == EVBUS_STEP_ERROR ? EVBUS_ERR_DB : EVBUS_ERR_OK;
}

static evbus_err_t log_head(evbus_store_t *st, int64_t *head)
{
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_HEAD);
    if (!s)
        return EVBUS_ERR_DB;
    int rc = evbus_stmt_step(s, NULL);
    if (rc == EVBUS_STEP_ROW)
        *head = evbus_stmt_int64(s, 0);
    evbus_stmt_done(s);
    return rc == EVBUS_STEP_ROW ? EVBUS_ERR_OK : EVBUS_ERR_DB;
}

const eb_broker_ops_t eb_broker_log = {
    .name = "embedded",
    .fetch = log_fetch,
    .head = log_head,
};
