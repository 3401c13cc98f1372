/* Internal interfaces of the auth service. */
#ifndef AUTH_AUTH_H
#define AUTH_AUTH_H

#include <semaphore.h>
#include <stdint.h>

#include "evbus/cloudevent.h"
#include "evbus/http_server.h"
#include "evbus/outbox.h"
#include "evbus/store.h"

typedef struct {
    char *host, *db, *eventbus_url, *source, *log_level, *log_format;
    int64_t port, threads, max_body, argon_ops, argon_mem_kib, hash_slots, relay_batch,
        outbox_retention_s;
} auth_config_t;

typedef struct {
    auth_config_t cfg;
    evbus_store_pool_t *pool;
    evbus_relay_t *relay;
    sem_t hash_slots; /* caps concurrent Argon2id hashes */
} auth_app_t;

/* users_db.c */
evbus_err_t auth_db_migrate(evbus_store_t *st);

typedef struct {
    const char *id, *email, *display_name, *password_hash;
    int64_t created_at;
} auth_user_t;

/* Inserts the user and appends ev to the outbox in one transaction. Returns
 * EVBUS_ERR_CONFLICT when the email is taken, EVBUS_ERR_DB on failure (nothing stored). */
evbus_err_t auth_db_create_user(evbus_store_t *st, const auth_user_t *u, const evbus_event_t *ev);

/* register.c */
void auth_register(evbus_req_t *req, void *app);

#endif
