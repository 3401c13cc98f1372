/* Internal interfaces of the user service. */
#ifndef USERS_USERS_H
#define USERS_USERS_H

#include <pthread.h>

#include "evbus/cloudevent.h"
#include "evbus/http_server.h"
#include "evbus/store.h"

#include "evbus/jwt.h"
#include "evbus/webhook.h"

typedef struct {
    char *host, *db, *eventbus_url, *subscription, *log_level, *log_format, *delivery, *public_url,
        *webhook_secret, *webhook_secret_prev, *jwt_key, *jwt_issuer, *jwt_audience, *eventbus_key;
    int64_t port, threads, poll_wait, poll_max;
} users_config_t;

typedef struct {
    users_config_t cfg;
    evbus_store_pool_t *pool;     /* API reads and webhook deliveries */
    evbus_store_t *apply_db;      /* migrations at start */
    evbus_webhook_guard_t *guard; /* deliveries already handled */
    evbus_jwt_t jwt;              /* verifies the access tokens auth-service issues */
} users_app_t;

evbus_err_t users_db_migrate(evbus_store_t *st);
/* Applies one event with its inbox row in one transaction on db. */
evbus_err_t users_apply_in(evbus_store_t *db, const evbus_event_t *ev);
/* The pull consumer's callback: users_apply_in on the consumer's connection. */
evbus_err_t users_apply(const evbus_event_t *ev, void *app);
/* POST /webhooks/events: a signed push delivery. */
void users_webhook(evbus_req_t *req, void *app);

/* Keeps this service's push subscription on the eventbus (created idempotently at
 * start and checked every few seconds). */
typedef struct users_subscriber users_subscriber_t;
users_subscriber_t *users_subscriber_start(users_app_t *app, const char *webhook_url);
/* The topics and types this service follows, one subscription each. */
typedef struct {
    const char *suffix, *topic, *type;
} users_feed_t;
extern const users_feed_t users_feeds[3];
int users_subscriber_ready(users_subscriber_t *s);
void users_subscriber_stop(users_subscriber_t *s);
/* GET /api/users/{id}, PUT /api/users/{id}/profile (a token for the user, or admin) */
void users_get(evbus_req_t *req, void *app);
void users_put_profile(evbus_req_t *req, void *app);

#endif
