/* Login and account changes.
 *
 * Login answers the same 401 for an unknown email, a wrong password and a deactivated
 * account, and does the same work for each: an unknown email is verified against a
 * dummy hash made at start with the same Argon2id parameters. Every verification waits
 * for a hash slot, so logins cannot take more than the cap's share of the CPU.
 *
 * Failures are counted per (account, client address) and per client address in a
 * window. Past the limit that pair (or address) gets 429 with Retry-After until the
 * window ends; the account itself is never locked, so an attacker elsewhere cannot lock
 * its owner out.
 *
 * Changes to an account (email, display name, deactivation) bump its version and write
 * the matching event (UserUpdated, UserDeactivated) to the outbox in the same
 * transaction. Events carry the account's whole public state and its version, so a
 * consumer keeps the newest state whatever order they arrive in. */
#include <ctype.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "evbus/log.h"
#include "evbus/util.h"

#define THROTTLE_SLOTS 65536
#define THROTTLE_PROBES 16

static const char *const json_types[] = {"application/json", NULL};

/* ---- throttling ---- */

typedef struct {
    unsigned char key[16];
    int64_t window_start; /* s; 0 = empty */
    int64_t failures;
} slot_t;

struct auth_throttle {
    pthread_mutex_t lock;
    slot_t *slots;
};

static void throttle_key(const char *a, const char *b, unsigned char out[16])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 16);
    crypto_generichash_update(&st, (const unsigned char *)a, strlen(a));
    crypto_generichash_update(&st, (const unsigned char *)"\n", 1);
    crypto_generichash_update(&st, (const unsigned char *)b, strlen(b));
    crypto_generichash_final(&st, out, 16);
}

/* The slot for key (found, or a free or stale one to take); lock held. */
static slot_t *throttle_slot(auth_app_t *app, const unsigned char key[16], int64_t now, int take)
{
    uint64_t h;
    memcpy(&h, key, sizeof h);
    slot_t *victim = NULL;
    for (int i = 0; i < THROTTLE_PROBES; i++) {
        slot_t *s = &app->throttle->slots[(h + (uint64_t)i) % THROTTLE_SLOTS];
        int stale = !s->window_start || now - s->window_start >= app->cfg.login_window_s;
        if (!stale && memcmp(s->key, key, 16) == 0)
            return s;
        if (take && (!victim || (stale && victim->window_start) ||
                     (!stale && victim->window_start && s->window_start < victim->window_start)))
            victim = s;
    }
    if (victim) {
        memcpy(victim->key, key, 16);
        victim->window_start = now;
        victim->failures = 0;
    }
    return victim;
}

/* Seconds until the pair (or address) may try again, 0 when it may now. */
static int64_t throttled(auth_app_t *app, const char *account, const char *ip, int64_t now)
{
    unsigned char pair[16], addr[16];
    throttle_key(account, ip, pair);
    throttle_key("", ip, addr);
    int64_t wait = 0;
    pthread_mutex_lock(&app->throttle->lock);
    slot_t *p = throttle_slot(app, pair, now, 0), *a = throttle_slot(app, addr, now, 0);
    if (p && p->failures >= app->cfg.login_max_failures)
        wait = p->window_start + app->cfg.login_window_s - now;
    if (a && a->failures >= app->cfg.login_max_failures_ip) {
        int64_t w = a->window_start + app->cfg.login_window_s - now;
        wait = w > wait ? w : wait;
    }
    pthread_mutex_unlock(&app->throttle->lock);
    return wait > 0 ? wait : 0;
}

static void count_failure(auth_app_t *app, const char *account, const char *ip, int64_t now)
{
    unsigned char pair[16], addr[16];
    throttle_key(account, ip, pair);
    throttle_key("", ip, addr);
    pthread_mutex_lock(&app->throttle->lock);
    slot_t *p = throttle_slot(app, pair, now, 1);
    if (p)
        p->failures++;
    slot_t *a = throttle_slot(app, addr, now, 1);
    if (a)
        a->failures++;
    pthread_mutex_unlock(&app->throttle->lock);
}

static void forget_failures(auth_app_t *app, const char *account, const char *ip, int64_t now)
{
    unsigned char pair[16];
    throttle_key(account, ip, pair);
    pthread_mutex_lock(&app->throttle->lock);
    slot_t *p = throttle_slot(app, pair, now, 0);
    if (p)
        p->window_start = 0;
    pthread_mutex_unlock(&app->throttle->lock);
}

/* ---- setup ---- */

int auth_account_init(auth_app_t *app)
{
    if (evbus_jwt_key(&app->jwt, app->cfg.jwt_key) != 0) {
        evbus_log_error("config: AUTH_JWT_KEY must be base64 of 32 to 128 random bytes");
        return -1;
    }
    app->jwt.issuer = app->cfg.jwt_issuer;
    app->jwt.audience = app->cfg.jwt_audience;
    app->jwt.ttl_s = app->cfg.token_ttl_s;
    unsigned char random_pw[32];
    char pw[65];
    randombytes_buf(random_pw, sizeof random_pw);
    sodium_bin2hex(pw, sizeof pw, random_pw, sizeof random_pw);
    int rc = auth_hash_password(app, pw, app->dummy_hash);
    sodium_memzero(pw, sizeof pw);
    if (rc != 0)
        return -1;
    app->throttle = calloc(1, sizeof *app->throttle);
    if (!app->throttle || !(app->throttle->slots = calloc(THROTTLE_SLOTS, sizeof(slot_t)))) {
        free(app->throttle);
        app->throttle = NULL;
        return -1;
    }
    pthread_mutex_init(&app->throttle->lock, NULL);
    return 0;
}

void auth_account_free(auth_app_t *app)
{
    if (app->throttle) {
        pthread_mutex_destroy(&app->throttle->lock);
        free(app->throttle->slots);
        free(app->throttle);
        app->throttle = NULL;
    }
    sodium_memzero(&app->jwt, sizeof app->jwt);
}

int auth_is_admin_email(auth_app_t *app, const char *email)
{
    const char *list = app->cfg.admin_emails;
    size_t n = strlen(email);
    for (const char *p = list; p && *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t len = strcspn(p, ", ");
        if (len == n && strncasecmp(p, email, n) == 0)
            return 1;
        p += len;
    }
    return 0;
}

/* ---- helpers ---- */

static int verify_password(auth_app_t *app, const char *hash, const char *pw)
{
    sem_wait(&app->hash_slots);
    int ok = crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
    sem_post(&app->hash_slots);
    return ok;
}

static void client_address(auth_app_t *app, evbus_req_t *req, char *out, size_t len)
{
    const char *fwd = evbus_req_header(req, "X-Forwarded-For");
    if (strcmp(app->cfg.trust_forwarded, "yes") == 0 && fwd && *fwd) {
        size_t n = strcspn(fwd, ", ");
        snprintf(out, len, "%.*s", (int)(n < 64 ? n : 64), fwd);
        return;
    }
    if (evbus_req_client(req, out, len) != 0)
        snprintf(out, len, "unknown");
}

static void unauthorized(evbus_req_t *req)
{
    evbus_req_add_header(req, "WWW-Authenticate", "Bearer");
    evbus_req_problem(req, 401, "unauthorized", "Unauthorized", "a valid access token is required",
                      NULL);
}

static void unavailable(evbus_req_t *req)
{
    evbus_req_unavailable(req, "the account store is not available");
}

/* The caller's claims from "Authorization: Bearer <token>"; answers 401 and returns -1
 * when there is no valid token. */
static int caller(auth_app_t *app, evbus_req_t *req, evbus_claims_t *c)
{
    const char *h = evbus_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0 ||
        evbus_jwt_verify(&app->jwt, h + 7, evbus_now_ms() / 1000, c) != 0) {
        unauthorized(req);
        return -1;
    }
    return 0;
}

/* One account by id (by_email: by email) on a pooled connection. */
static evbus_err_t find(auth_app_t *app, int by_email, const char *key, auth_row_t *u)
{
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_err_t rc = by_email ? auth_db_by_email(db, key, u) : auth_db_by_id(db, key, u);
    evbus_store_pool_put(app->pool, db);
    return rc;
}

/* The caller's own account, which must still be active: a deactivated or deleted
 * account's token is worthless. Answers 401/503 and returns -1 otherwise. */
static int own_account(auth_app_t *app, evbus_req_t *req, const evbus_claims_t *c, auth_row_t *u)
{
    evbus_err_t rc = find(app, 0, c->sub, u);
    if (rc == EVBUS_ERR_OK && strcmp(u->status, "active") == 0)
        return 0;
    if (rc == EVBUS_ERR_OK || rc == EVBUS_ERR_NOTFOUND)
        unauthorized(req);
    else
        unavailable(req);
    return -1;
}

/* The account the request is about, if the caller may act on it (itself, or any as
 * admin); answers and returns -1 otherwise. */
static int target(auth_app_t *app, evbus_req_t *req, const evbus_claims_t *c, auth_row_t *u)
{
    const char *id = evbus_req_param(req, "id");
    if (strcmp(c->sub, id) != 0 && strcmp(c->role, "admin") != 0) {
        evbus_req_problem(req, 403, "forbidden", "Forbidden",
                          "only the account itself or an admin may do this", NULL);
        return -1;
    }
    evbus_err_t rc = find(app, 0, id, u);
    if (rc == EVBUS_ERR_OK && strcmp(c->sub, u->id) == 0 && strcmp(u->status, "active") != 0) {
        unauthorized(req); /* a deactivated account's own token is worthless */
        return -1;
    }
    if (rc == EVBUS_ERR_NOTFOUND)
        evbus_req_problem(req, 404, "user-not-found", "User Not Found", "no such user", NULL);
    else if (rc != EVBUS_ERR_OK)
        unavailable(req);
    return rc == EVBUS_ERR_OK ? 0 : -1;
}

static json_t *public_user(const auth_row_t *u)
{
    char created[40], updated[40];
    evbus_fmt_rfc3339(u->created_at, created, sizeof created);
    evbus_fmt_rfc3339(u->updated_at, updated, sizeof updated);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "userId", u->id, "email", u->email,
                     "displayName", u->display_name, "status", u->status, "role", u->role,
                     "version", (json_int_t)u->version, "createdAt", created, "updatedAt", updated);
}

/* The event that tells consumers about u's new state. */
static evbus_event_t *state_event(auth_app_t *app, evbus_req_t *req, const char *type,
                                  const auth_row_t *u)
{
    json_t *data = public_user(u);
    return auth_event(app, req, type, u->id, data);
}

/* ---- login ---- */

void auth_login(evbus_req_t *req, void *ud)
{
    auth_app_t *app = ud;
    if (!evbus_req_require_type(req, json_types))
        return;
    json_t *body = evbus_req_json(req);
    if (!body)
        return;
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *pw = json_string_value(json_object_get(body, "password"));
    if (!json_is_object(body) || !email || !pw || strlen(email) > 254 || evbus_utf8_len(pw) > 128) {
        json_decref(body);
        evbus_req_problem(req, 400, "validation", "Validation Failed",
                          "email and password are required strings", NULL);
        return;
    }
    char account[255], ip[72];
    size_t n = strlen(email);
    for (size_t i = 0; i <= n; i++)
        account[i] = (char)tolower((unsigned char)email[i]);
    client_address(app, req, ip, sizeof ip);
    int64_t now = evbus_now_ms() / 1000;
    int64_t wait = throttled(app, account, ip, now);
    if (wait > 0) {
        json_decref(body);
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)wait);
        evbus_req_add_header(req, "Retry-After", ra);
        evbus_log_kv(EVBUS_LOG_WARN, "login throttled", "client", ip, NULL);
        evbus_req_problem(req, 429, "too-many-attempts", "Too Many Attempts",
                          "too many failed logins; try again later", NULL);
        return;
    }
    auth_row_t u;
    evbus_err_t rc = find(app, 1, account, &u);
    if (rc != EVBUS_ERR_OK && rc != EVBUS_ERR_NOTFOUND) {
        json_decref(body);
        unavailable(req);
        return;
    }
    int found = rc == EVBUS_ERR_OK;
    /* the same Argon2id work whether the account exists or not */
    int ok = verify_password(app, found ? u.password_hash : app->dummy_hash, pw);
    ok = ok && found && strcmp(u.status, "active") == 0;
    json_decref(body);
    if (!ok) {
        count_failure(app, account, ip, now);
        evbus_log_kv(EVBUS_LOG_INFO, "login failed", "client", ip, NULL);
        evbus_req_problem(req, 401, "invalid-credentials", "Invalid Credentials",
                          "the email or the password is wrong", NULL);
        sodium_memzero(&u, sizeof u);
        return;
    }
    forget_failures(app, account, ip, now);
    char *token = evbus_jwt_issue(&app->jwt, u.id, u.role, u.email, now);
    if (!token) {
        evbus_req_problem(req, 500, "internal", "Internal Server Error",
                          "the token could not be made", NULL);
        return;
    }
    evbus_log_kv(EVBUS_LOG_INFO, "login", "user_id", u.id, NULL);
    evbus_req_reply_json(req, 200,
                         json_pack("{s:s, s:s, s:I, s:s}", "accessToken", token, "tokenType",
                                   "Bearer", "expiresIn", (json_int_t)app->cfg.token_ttl_s,
                                   "userId", u.id));
    sodium_memzero(token, strlen(token));
    free(token);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
}

void auth_me(evbus_req_t *req, void *ud)
{
    auth_app_t *app = ud;
    evbus_claims_t c;
    if (caller(app, req, &c) != 0)
        return;
    auth_row_t u;
    if (own_account(app, req, &c, &u) == 0)
        evbus_req_reply_json(req, 200, public_user(&u));
}

/* ---- changes ---- */

static void save_and_answer(auth_app_t *app, evbus_req_t *req, auth_row_t *u, const char *type)
{
    u->version++;
    u->updated_at = evbus_now_ms();
    evbus_event_t *ev = type ? state_event(app, req, type, u) : NULL;
    if (type && !ev) {
        evbus_req_problem(req, 500, "internal", "Internal Server Error",
                          "the event could not be built", NULL);
        return;
    }
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_err_t rc = auth_db_save(db, u, ev);
    evbus_store_pool_put(app->pool, db);
    if (rc == EVBUS_ERR_CONFLICT) {
        evbus_req_problem(req, 409, "conflict", "Conflict",
                          "the email is taken, or the account changed meanwhile; read it again",
                          NULL);
    } else if (rc != EVBUS_ERR_OK) {
        unavailable(req);
    } else {
        evbus_relay_wake(app->relay);
        if (ev) {
            evbus_log_set_event(evbus_event_id(ev));
            evbus_log_kv(EVBUS_LOG_INFO, type, "user_id", u->id, NULL);
            evbus_log_set_event(NULL);
        }
        if (type)
            evbus_req_reply_json(req, 200, public_user(u));
        else
            evbus_req_reply_json(req, 204, NULL);
    }
    evbus_event_free(ev);
}

void auth_update_user(evbus_req_t *req, void *ud)
{
    auth_app_t *app = ud;
    evbus_claims_t c;
    auth_row_t u;
    if (caller(app, req, &c) != 0 || target(app, req, &c, &u) != 0)
        return;
    if (!evbus_req_require_type(req, json_types))
        return;
    json_t *body = evbus_req_json(req);
    if (!body)
        return;
    json_t *errors = json_array();
    const char *key;
    json_t *v;
    if (!json_is_object(body))
        json_array_append_new(errors, json_pack("{s:s, s:s}", "field", "", "message",
                                                "the body must be a JSON object"));
    json_object_foreach (body, key, v) {
        const char *s = json_string_value(v);
        if (strcmp(key, "email") == 0) {
            if (!s || strlen(s) != json_string_length(v) || !auth_email_valid(s))
                json_array_append_new(errors, json_pack("{s:s, s:s}", "field", "email", "message",
                                                        "must be a valid email address"));
            else
                for (size_t i = 0; i <= strlen(s) && i < sizeof u.email; i++)
                    u.email[i] = (char)tolower((unsigned char)s[i]);
        } else if (strcmp(key, "displayName") == 0) {
            long len = s ? evbus_utf8_len(s) : -1;
            if (!s || strlen(s) != json_string_length(v) || len < 1 || len > 100 ||
                strspn(s, " ") == strlen(s))
                json_array_append_new(errors,
                                      json_pack("{s:s, s:s}", "field", "displayName", "message",
                                                "must be 1 to 100 characters, not blank"));
            else
                evbus_strlcpy(u.display_name, s, sizeof u.display_name);
        } else {
            json_array_append_new(errors,
                                  json_pack("{s:s, s:s}", "field", key, "message",
                                            "unknown member (email and displayName may change)"));
        }
    }
    json_decref(body);
    if (json_array_size(errors) > 0) {
        evbus_req_problem(req, 400, "validation", "Validation Failed",
                          "one or more fields are invalid", errors);
        return;
    }
    json_decref(errors);
    if (strcmp(u.status, "active") != 0) {
        evbus_req_problem(req, 409, "deactivated", "Account Deactivated",
                          "a deactivated account cannot change", NULL);
        return;
    }
    save_and_answer(app, req, &u, "UserUpdated");
}

void auth_deactivate_user(evbus_req_t *req, void *ud)
{
    auth_app_t *app = ud;
    evbus_claims_t c;
    auth_row_t u;
    if (caller(app, req, &c) != 0 || target(app, req, &c, &u) != 0)
        return;
    if (strcmp(u.status, "deactivated") == 0) { /* already: nothing changes, no event */
        evbus_req_reply_json(req, 200, public_user(&u));
        return;
    }
    evbus_strlcpy(u.status, "deactivated", sizeof u.status);
    save_and_answer(app, req, &u, "UserDeactivated");
}

void auth_change_password(evbus_req_t *req, void *ud)
{
    auth_app_t *app = ud;
    evbus_claims_t c;
    if (caller(app, req, &c) != 0)
        return;
    if (!evbus_req_require_type(req, json_types))
        return;
    json_t *body = evbus_req_json(req);
    if (!body)
        return;
    const char *cur = json_string_value(json_object_get(body, "currentPassword"));
    const char *next = json_string_value(json_object_get(body, "newPassword"));
    long len = next ? evbus_utf8_len(next) : -1;
    const char *problem = !cur || !next          ? "currentPassword and newPassword are required"
                          : len < 8 || len > 128 ? "newPassword must be 8 to 128 characters"
                          : auth_password_common(next)
                              ? "newPassword is one of the most common passwords"
                          : strlen(cur) > 4 * 128 ? "currentPassword is too long"
                                                  : NULL;
    if (problem) {
        json_decref(body);
        evbus_req_problem(req, 400, "validation", "Validation Failed", problem, NULL);
        return;
    }
    auth_row_t u;
    if (own_account(app, req, &c, &u) != 0) {
        json_decref(body);
        return;
    }
    char hash[128];
    int ok = verify_password(app, u.password_hash, cur);
    if (ok && auth_hash_password(app, next, hash) != 0)
        ok = -1;
    json_decref(body);
    if (ok != 1) {
        if (ok == 0)
            evbus_req_problem(req, 403, "wrong-password", "Wrong Password",
                              "the current password is wrong", NULL);
        else
            evbus_req_problem(req, 503, "no-memory", "Service Unavailable",
                              "the password could not be hashed; try again", NULL);
        return;
    }
    evbus_strlcpy(u.password_hash, hash, sizeof u.password_hash);
    sodium_memzero(hash, sizeof hash);
    evbus_log_kv(EVBUS_LOG_INFO, "password changed", "user_id", u.id, NULL);
    save_and_answer(app, req, &u, NULL);
    sodium_memzero(u.password_hash, sizeof u.password_hash);
}
