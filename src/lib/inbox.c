/* Inbox: an event id recorded in the consumer's own transaction marks it applied. */
#include "evbus/inbox.h"

#include "evbus/util.h"

static const evbus_migration_t inbox_migrations[] = {
    {1,
     {{"CREATE TABLE evbus_inbox (event_id TEXT PRIMARY KEY, type TEXT NOT NULL, "
       "applied_at BIGINT NOT NULL)"}}},
};

static const evbus_sql_t SQL_CLAIM = {{
    "INSERT INTO evbus_inbox (event_id, type, applied_at) VALUES (?, ?, ?) "
    "ON CONFLICT (event_id) DO NOTHING",
}};

evbus_err_t evbus_inbox_migrate(evbus_store_t *st)
{
    return evbus_store_migrate(st, "inbox", inbox_migrations,
                               sizeof inbox_migrations / sizeof inbox_migrations[0]);
}

int evbus_inbox_claim(evbus_store_t *st, const char *event_id, const char *type)
{
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_CLAIM);
    if (!s)
        return -1;
    evbus_stmt_bind_text(s, 1, event_id);
    evbus_stmt_bind_text(s, 2, type);
    evbus_stmt_bind_int64(s, 3, evbus_now_ms());
    int rc = evbus_stmt_step(s, NULL);
    int64_t changed = evbus_stmt_changes(s);
    evbus_stmt_done(s);
    if (rc != EVBUS_STEP_DONE)
        return -1;
    return changed == 1 ? 1 : 0;
}
