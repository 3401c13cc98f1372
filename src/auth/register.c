/* POST /api/auth/register: validate, hash the password (Argon2id, outside any
 * transaction and under a cap on concurrent hashes), then store the user and its
 * UserRegistered event in one transaction and wake the relay. */
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "evbus/id.h"
#include "evbus/log.h"
#include "evbus/util.h"

#define MAX_EMAIL 254
#define MIN_PASSWORD 8
#define MAX_PASSWORD 128
#define MAX_DISPLAY_NAME 100

static const char *const json_types[] = {"application/json", NULL};

static void add_error(json_t *errors, const char *field, const char *msg)
{
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message", msg));
}

/* A pragmatic address check: local@domain, no spaces or controls, a dotted domain of
 * letters, digits and hyphens. Delivery is what proves an address; this only refuses
 * what cannot be one. */
int auth_email_valid(const char *e)
{
    size_t n = strlen(e);
    const char *at = strchr(e, '@');
    if (n < 3 || n > MAX_EMAIL || !at || at == e || strchr(at + 1, '@') || at - e > 64)
        return 0;
    for (const char *p = e; p < at; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '(' || *p == ')' ||
            *p == ',' || *p == ':' || *p == ';' || *p == '<' || *p == '>' || *p == '[' ||
            *p == ']' || *p == '\\')
            return 0;
    const char *d = at + 1;
    if (!*d || !strchr(d, '.') || *d == '.' || *d == '-' || d[strlen(d) - 1] == '.')
        return 0;
    for (const char *p = d; *p; p++) {
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '.'))
            return 0;
        if (*p == '.' && (p[1] == '.' || p[1] == '-' || p[-1] == '-'))
            return 0;
    }
    return 1;
}

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

typedef struct {
    char email[MAX_EMAIL + 1];
    const char *password, *display_name;
} reg_input_t;

/* Checks every field and returns the list of problems (empty if none). */
static json_t *validate(json_t *body, reg_input_t *in)
{
    json_t *errors = json_array();
    if (!json_is_object(body)) {
        add_error(errors, "", "the body must be a JSON object");
        return errors;
    }
    json_t *email = json_object_get(body, "email");
    const char *e = json_string_value(email);
    if (!e)
        add_error(errors, "email", "required string");
    else if (strlen(e) != json_string_length(email) || !auth_email_valid(e))
        add_error(errors, "email", "must be a valid email address (at most 254 characters)");
    else {
        for (size_t i = 0; e[i]; i++)
            in->email[i] = (char)tolower((unsigned char)e[i]);
        in->email[strlen(e)] = '\0';
    }
    json_t *pw = json_object_get(body, "password");
    in->password = json_string_value(pw);
    long pwlen = in->password ? evbus_utf8_len(in->password) : -1;
    if (!in->password)
        add_error(errors, "password", "required string");
    else if (strlen(in->password) != json_string_length(pw) || pwlen < MIN_PASSWORD ||
             pwlen > MAX_PASSWORD)
        add_error(errors, "password", "must be 8 to 128 characters");
    else if (auth_password_common(in->password))
        add_error(errors, "password", "is one of the most common passwords; choose another");
    json_t *dn = json_object_get(body, "displayName");
    in->display_name = json_string_value(dn);
    long dnlen = in->display_name ? evbus_utf8_len(in->display_name) : -1;
    if (!in->display_name)
        add_error(errors, "displayName", "required string");
    else if (strlen(in->display_name) != json_string_length(dn) || dnlen < 1 ||
             dnlen > MAX_DISPLAY_NAME || has_ctl(in->display_name) ||
             strspn(in->display_name, " ") == strlen(in->display_name))
        add_error(errors, "displayName",
                  "must be 1 to 100 characters, not blank, without control characters");
    return errors;
}

int auth_hash_password(auth_app_t *app, const char *pw, char out[crypto_pwhash_STRBYTES])
{
    sem_wait(&app->hash_slots);
    int rc =
        crypto_pwhash_str_alg(out, pw, strlen(pw), (unsigned long long)app->cfg.argon_ops,
                              (size_t)app->cfg.argon_mem_kib * 1024, crypto_pwhash_ALG_ARGON2ID13);
    sem_post(&app->hash_slots);
    return rc;
}

evbus_event_t *auth_event(auth_app_t *app, evbus_req_t *req, const char *type, const char *user,
                          json_t *data)
{
    evbus_event_t *ev = evbus_event_new(type, app->cfg.source, user, data);
    if (ev && (evbus_event_set_ext(ev, "correlationid", evbus_req_correlation(req)) ||
               evbus_event_set_ext(ev, "traceparent", evbus_req_traceparent(req)))) {
        evbus_event_free(ev);
        ev = NULL;
    }
    return ev;
}

static evbus_event_t *make_event(auth_app_t *app, evbus_req_t *req, const auth_user_t *u)
{
    char ts[40];
    evbus_fmt_rfc3339(u->created_at, ts, sizeof ts);
    json_t *data =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "userId", u->id, "email", u->email,
                  "displayName", u->display_name, "registeredAt", ts, "version", (json_int_t)1,
                  "status", "active", "role", u->role ? u->role : "user");
    return auth_event(app, req, "UserRegistered", u->id, data);
}

void auth_register(evbus_req_t *req, void *ud)
{
    auth_app_t *app = ud;
    if (!evbus_req_require_type(req, json_types))
        return;
    json_t *body = evbus_req_json(req);
    if (!body)
        return;
    reg_input_t in = {{0}, NULL, NULL};
    json_t *errors = validate(body, &in);
    if (json_array_size(errors) > 0) {
        evbus_req_problem(req, 400, "validation", "Validation Failed",
                          "one or more fields are invalid", errors);
        json_decref(body);
        return;
    }
    json_decref(errors);
    char hash[crypto_pwhash_STRBYTES];
    char id[EVBUS_UUID_STRLEN];
    evbus_uuid7(id);
    auth_user_t u = {id,   in.email,       in.display_name,
                     hash, evbus_now_ms(), auth_is_admin_email(app, in.email) ? "admin" : "user"};
    evbus_event_t *ev = NULL;
    if (auth_hash_password(app, in.password, hash) != 0) {
        evbus_req_problem(req, 503, "no-memory", "Service Unavailable",
                          "the password could not be hashed; try again", NULL);
        goto out;
    }
    if (!(ev = make_event(app, req, &u))) {
        evbus_req_problem(req, 500, "internal", "Internal Server Error",
                          "the event could not be built", NULL);
        goto out;
    }
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_err_t rc = auth_db_create_user(db, &u, ev);
    evbus_store_pool_put(app->pool, db);
    if (rc == EVBUS_ERR_CONFLICT) {
        evbus_req_problem(req, 409, "email-taken", "Email Already Registered",
                          "an account with this email address exists", NULL);
        goto out;
    }
    if (rc != EVBUS_ERR_OK) {
        evbus_req_unavailable(req, "the registration could not be stored; nothing was saved");
        goto out;
    }
    evbus_relay_wake(app->relay);
    evbus_log_set_event(evbus_event_id(ev));
    evbus_log_kv(EVBUS_LOG_INFO, "user registered", "user_id", id, NULL);
    evbus_log_set_event(NULL);
    char ts[40];
    evbus_fmt_rfc3339(u.created_at, ts, sizeof ts);
    evbus_req_reply_json(req, 201,
                         json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "userId", id, "email",
                                   in.email, "displayName", in.display_name, "createdAt", ts,
                                   "eventId", evbus_event_id(ev), "correlationId",
                                   evbus_req_correlation(req)));
out:
    sodium_memzero(hash, sizeof hash);
    evbus_event_free(ev);
    json_decref(body);
}
