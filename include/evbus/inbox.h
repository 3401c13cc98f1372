/* Consumer-side inbox: remembers applied event ids so a duplicate is a no-op. */
#ifndef EVBUS_INBOX_H
#define EVBUS_INBOX_H

#include "evbus/store.h"

/* Creates the inbox table (migration component "inbox"). */
evbus_err_t evbus_inbox_migrate(evbus_store_t *st);
/* Inside the caller's open transaction: records event_id. Returns 1 if it is new (apply
 * the event), 0 if it was already applied (skip), -1 on a database error. */
int evbus_inbox_claim(evbus_store_t *st, const char *event_id, const char *type);

#endif
