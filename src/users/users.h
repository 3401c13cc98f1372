/* Internal interfaces of the user service. */
#ifndef USERS_USERS_H
#define USERS_USERS_H

#include <pthread.h>

#include "evbus/cloudevent.h"
#include "evbus/http_server.h"
#include "evbus/store.h"

typedef struct {
    char *host, *db, *eventbus_url, *subscription, *log_level, *log_format;
    int64_t port, threads, poll_wait, poll_max;
} users_config_t;

typedef struct {
    users_config_t cfg;
    evbus_store_pool_t *pool; /* API reads */
    evbus_store_t *apply_db;  /* consumer thread only */
} users_app_t;

evbus_err_t users_db_migrate(evbus_store_t *st);
/* The consumer callback: applies one event with its inbox row in one transaction. */
evbus_err_t users_apply(const evbus_event_t *ev, void *app);
/* GET /api/users/{id} */
void users_get(evbus_req_t *req, void *app);

#endif
