/* Internal interfaces of the auth service. */
#ifndef AUTH_AUTH_H
#define AUTH_AUTH_H

#include <semaphore.h>
#include <stdint.h>

#include "evbus/cloudevent.h"
#include "evbus/http_server.h"
#include "evbus/outbox.h"
#include "evbus/store.h"

#include "evbus/jwt.h"

typedef struct {
    char *host, *db, *eventbus_url, *source, *log_level, *log_format, *jwt_key, *jwt_issuer,
        *jwt_audience, *admin_emails, *trust_forwarded, *eventbus_key;
    int64_t port, threads, max_body, argon_ops, argon_mem_kib, hash_slots, relay_batch,
        outbox_retention_s, token_ttl_s, login_window_s, login_max_failures, login_max_failures_ip;
} auth_config_t;

typedef struct auth_throttle auth_throttle_t;

typedef struct {
    auth_config_t cfg;
    evbus_store_pool_t *pool;
    evbus_relay_t *relay;
    sem_t hash_slots; /* caps concurrent Argon2id hashes */
    evbus_jwt_t jwt;
    char dummy_hash[128]; /* verified against for unknown emails: same work, same answer */
    auth_throttle_t *throttle;
} auth_app_t;

/* users_db.c */
evbus_err_t auth_db_migrate(evbus_store_t *st);

typedef struct {
    const char *id, *email, *display_name, *password_hash;
    int64_t created_at;
    const char *role; /* NULL: "user" */
} auth_user_t;

typedef struct {
    char id[40], email[256], display_name[512], password_hash[160], status[16], role[16];
    int64_t version, created_at, updated_at;
} auth_row_t;

evbus_err_t auth_db_by_email(evbus_store_t *st, const char *email, auth_row_t *out);
evbus_err_t auth_db_by_id(evbus_store_t *st, const char *id, auth_row_t *out);
/* Writes u (whose version is already the next one) if the stored version is the one
 * before, and appends ev (may be NULL) to the outbox, in one transaction. CONFLICT when
 * the email is taken or the user changed meanwhile. */
evbus_err_t auth_db_save(evbus_store_t *st, const auth_row_t *u, const evbus_event_t *ev);

/* Inserts the user and appends ev to the outbox in one transaction. Returns
 * EVBUS_ERR_CONFLICT when the email is taken, EVBUS_ERR_DB on failure (nothing stored). */
evbus_err_t auth_db_create_user(evbus_store_t *st, const auth_user_t *u, const evbus_event_t *ev);

/* register.c */
void auth_register(evbus_req_t *req, void *app);
int auth_email_valid(const char *e);
/* Argon2id under the cap on concurrent hashes. 0, or -1 (out of memory). */
int auth_hash_password(auth_app_t *app, const char *pw, char out[128]);
/* An event about user (its subject) with the request's correlation id and traceparent;
 * takes data. */
evbus_event_t *auth_event(auth_app_t *app, evbus_req_t *req, const char *type, const char *user,
                          json_t *data);

/* passwords.c */
/* 1 when pw is on the list of the most common passwords (case-insensitive). */
int auth_password_common(const char *pw);

/* account.c: login, tokens, and changes to an account */
int auth_account_init(auth_app_t *app); /* the dummy hash, the token key; -1 on failure */
void auth_account_free(auth_app_t *app);
int auth_is_admin_email(auth_app_t *app, const char *email);
void auth_login(evbus_req_t *req, void *app);
void auth_me(evbus_req_t *req, void *app);
void auth_update_user(evbus_req_t *req, void *app);
void auth_deactivate_user(evbus_req_t *req, void *app);
void auth_change_password(evbus_req_t *req, void *app);

#endif
