/* Push subscriptions over HTTP: the webhook definition and its defaults, secret
 * rotation, re-enabling, seeking (replay), and the dead-letter queue. The delivery
 * itself is pusher.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"
#include "evbus/log.h"
#include "evbus/util.h"
#include "evbus/webhook.h"

#define DLQ_PAGE_MAX 500
#define DLQ_REDRIVE_IDS_MAX 1000
#define GRACE_DEFAULT_S 86400
#define GRACE_MAX_S (30 * 86400)

static const char *const json_types[] = {"application/json", NULL};

/* ---- the definition ---- */

typedef struct {
    const char *name;
    int64_t min, max, def;
} int_field_t;

/* Defaults: ten attempts over roughly twenty minutes (1 s doubling, capped at 5 min,
 * full jitter), 10 s per request, 4 requests at a time, and a breaker that opens after
 * 5 failures in a row for 5 s. */
static const int_field_t FIELDS[] = {
    {"timeoutMs", 100, 120000, 10000},
    {"concurrency", 1, 64, 4},
    {"maxAttempts", 1, 100, 10},
    {"initialDelayMs", 1, 3600000, 1000},
    {"maxDelayMs", 1, 86400000, 300000},
    {"breakerFailures", 1, 1000, 5},
    {"breakerCooldownMs", 100, 3600000, 5000},
};
#define NFIELDS (sizeof FIELDS / sizeof FIELDS[0])

static void field_error(json_t *errors, const char *field, const char *msg)
{
    char name[64];
    snprintf(name, sizeof name, "push.%s", field);
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", name, "message", msg));
}

json_t *eb_push_parse(json_t *in, const eb_allow_t *allow, json_t *errors, char *secret,
                      size_t secret_len)
{
    if (!json_is_object(in)) {
        field_error(errors, "url", "push subscriptions need \"push\": {\"url\": ...}");
        return NULL;
    }
    size_t before = json_array_size(errors);
    const char *key;
    json_t *v;
    json_object_foreach (in, key, v) {
        int known = !strcmp(key, "url") || !strcmp(key, "secret") || !strcmp(key, "multiplier");
        for (size_t i = 0; i < NFIELDS && !known; i++)
            known = !strcmp(key, FIELDS[i].name);
        if (!known)
            field_error(errors, key, "unknown member");
    }
    json_t *out = json_object();
    const char *url = json_string_value(json_object_get(in, "url"));
    char err[256];
    if (!url || strlen(url) > 2048)
        field_error(errors, "url", "required: an http or https URL of at most 2048 characters");
    else if (eb_url_check(allow, url, err, sizeof err) != 0)
        field_error(errors, "url", err);
    else
        json_object_set_new(out, "url", json_string(url));
    for (size_t i = 0; i < NFIELDS; i++) {
        json_t *f = json_object_get(in, FIELDS[i].name);
        int64_t val = FIELDS[i].def;
        if (f && (!json_is_integer(f) || json_integer_value(f) < FIELDS[i].min ||
                  json_integer_value(f) > FIELDS[i].max)) {
            char msg[96];
            snprintf(msg, sizeof msg, "must be an integer in [%lld, %lld]",
                     (long long)FIELDS[i].min, (long long)FIELDS[i].max);
            field_error(errors, FIELDS[i].name, msg);
        } else if (f) {
            val = json_integer_value(f);
        }
        json_object_set_new(out, FIELDS[i].name, json_integer((json_int_t)val));
    }
    json_t *mult = json_object_get(in, "multiplier");
    double m = mult ? json_number_value(mult) : 2.0;
    if (mult && (!json_is_number(mult) || m < 1.0 || m > 10.0))
        field_error(errors, "multiplier", "must be a number in [1, 10]");
    json_object_set_new(out, "multiplier", json_real(m));
    if (json_integer_value(json_object_get(out, "initialDelayMs")) >
        json_integer_value(json_object_get(out, "maxDelayMs")))
        field_error(errors, "maxDelayMs", "must not be below initialDelayMs");
    json_t *sec = json_object_get(in, "secret");
    if (sec && (!json_is_string(sec) || json_string_length(sec) >= secret_len ||
                !evbus_webhook_secret_valid(json_string_value(sec))))
        field_error(errors, "secret", "must be \"whsec_\" + base64 of 24..64 random bytes");
    else if (sec)
        evbus_strlcpy(secret, json_string_value(sec), secret_len);
    else if (secret_len >= EVBUS_WEBHOOK_SECRET_LEN)
        evbus_webhook_secret_new(secret);
    if (json_array_size(errors) > before) {
        json_decref(out);
        return NULL;
    }
    return out;
}

int eb_push_load(json_t *cfg, eb_push_t *p)
{
    const char *url = json_string_value(json_object_get(cfg, "url"));
    if (!url || strlen(url) >= sizeof p->url)
        return -1;
    evbus_strlcpy(p->url, url, sizeof p->url);
    int64_t v[NFIELDS];
    for (size_t i = 0; i < NFIELDS; i++) {
        json_t *f = json_object_get(cfg, FIELDS[i].name);
        v[i] = json_is_integer(f) ? json_integer_value(f) : FIELDS[i].def;
        if (v[i] < FIELDS[i].min || v[i] > FIELDS[i].max)
            v[i] = FIELDS[i].def;
    }
    p->timeout_ms = v[0];
    p->concurrency = (unsigned)v[1];
    p->max_attempts = (unsigned)v[2];
    p->initial_ms = v[3];
    p->cap_ms = v[4];
    p->breaker_failures = (unsigned)v[5];
    p->breaker_cooldown_ms = v[6];
    json_t *m = json_object_get(cfg, "multiplier");
    p->multiplier = json_is_number(m) ? json_number_value(m) : 2.0;
    return 0;
}

/* ---- shared bits ---- */

static void unavailable(evbus_req_t *req)
{
    evbus_req_unavailable(req, "the subscription store is not available");
}

static void not_found(evbus_req_t *req, const char *what)
{
    evbus_req_problem(req, 404, "not-found", "Not Found", what, NULL);
}

static void invalid(evbus_req_t *req, const char *slug, const char *detail, const char *field)
{
    evbus_req_problem(req, 400, slug, "Invalid Request", detail,
                      field ? json_pack("[{s:s, s:s}]", "field", field, "message", detail) : NULL);
}

/* The subscription's mode ("push"/"pull") into mode; 1 found, 0 not, -1 error. */
static int sub_mode(evbus_store_t *db, const char *name, char *mode, size_t len)
{
    static const evbus_sql_t q = {{"SELECT mode FROM eb_subscriptions WHERE name = ?"}};
    evbus_stmt_t *st = evbus_store_prepare(db, &q);
    if (!st)
        return -1;
    evbus_stmt_bind_text(st, 1, name);
    int rc = evbus_stmt_step(st, NULL);
    if (rc == EVBUS_STEP_ROW)
        evbus_strlcpy(mode, evbus_stmt_text(st, 0), len);
    evbus_stmt_done(st);
    return rc == EVBUS_STEP_ROW ? 1 : rc == EVBUS_STEP_DONE ? 0 : -1;
}

/* Runs one statement with the binds given as (type, value) pairs: 'i' int64, 's' text.
 * Returns the rows changed, or -1. */
static int64_t exec(evbus_store_t *db, const evbus_sql_t *sql, const char *types, ...)
{
    evbus_stmt_t *st = evbus_store_prepare(db, sql);
    if (!st)
        return -1;
    va_list ap;
    va_start(ap, types);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 'i')
            evbus_stmt_bind_int64(st, i + 1, va_arg(ap, int64_t));
        else
            evbus_stmt_bind_text(st, i + 1, va_arg(ap, const char *));
    }
    va_end(ap);
    int64_t changed = evbus_stmt_step(st, NULL) == EVBUS_STEP_DONE ? evbus_stmt_changes(st) : -1;
    evbus_stmt_done(st);
    return changed;
}

/* The request's JSON body, of the right content type; NULL when answered. */
static json_t *json_body(evbus_req_t *req)
{
    return evbus_req_require_type(req, json_types) ? evbus_req_json(req) : NULL;
}

/* Loads the request's JSON body (may be empty: {}); NULL when answered. */
static json_t *body_or_empty(evbus_req_t *req)
{
    size_t len = 0;
    evbus_req_body(req, &len);
    if (len == 0)
        return json_object();
    json_t *b = json_body(req);
    if (b && !json_is_object(b)) {
        json_decref(b);
        invalid(req, "invalid-body", "the body must be a JSON object", NULL);
        return NULL;
    }
    return b;
}

/* Looks the subscription up: 1 and its mode, or 0 when answered (404/503). */
static int want_sub(eb_app_t *app, evbus_req_t *req, const char *name, char *mode, size_t len)
{
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int rc = sub_mode(db, name, mode, len);
    evbus_store_pool_put(app->pool, db);
    if (rc < 0)
        unavailable(req);
    else if (rc == 0)
        not_found(req, "there is no subscription with this name");
    return rc > 0;
}

/* ---- seek ---- */

static const evbus_sql_t SQL_SEEK_POS = {{
    "UPDATE eb_subscriptions SET cursor = ?, seek_gen = seek_gen + 1, updated_at = ?"
    " WHERE name = ?",
}};
static const evbus_sql_t SQL_SEEK_KAFKA = {{
    [EVBUS_DIALECT_SQLITE] =
        "UPDATE eb_subscriptions SET group_epoch = MAX(?, created_at + 1, group_epoch + 1),"
        " start_at = ?, start_from = 'latest', seek_gen = seek_gen + 1, updated_at = ?"
        " WHERE name = ?",
    [EVBUS_DIALECT_PG] =
        "UPDATE eb_subscriptions SET group_epoch = GREATEST(?, created_at + 1, group_epoch + 1),"
        " start_at = ?, start_from = 'latest', seek_gen = seek_gen + 1, updated_at = ?"
        " WHERE name = ?",
}};
static const evbus_sql_t SQL_BEFORE_TS = {{
    "SELECT COALESCE(MAX(seq), 0) FROM eb_events WHERE topic = ? AND received_at < ?",
}};
static const evbus_sql_t SQL_TOPIC = {{"SELECT topic FROM eb_subscriptions WHERE name = ?"}};

void eb_subs_seek(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    json_t *b = body_or_empty(req);
    if (!b)
        return;
    json_t *pos = json_object_get(b, "position");
    const char *ts = json_string_value(json_object_get(b, "timestamp"));
    int64_t p = -1, t = -1;
    if (pos && json_is_integer(pos) && json_integer_value(pos) >= 0 && !ts)
        p = json_integer_value(pos);
    else if (ts && !pos && evbus_parse_rfc3339(ts, &t) != 0)
        t = -1;
    json_decref(b);
    if (p < 0 && t < 0) {
        invalid(req, "invalid-seek",
                "the body must be {\"position\": N} or {\"timestamp\": \"RFC 3339 time\"}", NULL);
        return;
    }
    if (app->ksubs && p >= 0) {
        invalid(req, "invalid-seek",
                "on Kafka, positions belong to one instance: seek by timestamp", "position");
        return;
    }
    char mode[8];
    if (!want_sub(app, req, name, mode, sizeof mode))
        return;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int64_t now = evbus_now_ms(), changed = -1, head = 0;
    if (app->ksubs) {
        /* a new consumer group that starts at the time: the old group's offsets no
         * longer apply, the members move over at their next poll or push round */
        changed = exec(db, &SQL_SEEK_KAFKA, "iiis", now, t, now, name);
    } else if (p >= 0) {
        if (app->broker->head(db, &head) == EVBUS_ERR_OK && p > head) {
            evbus_store_pool_put(app->pool, db);
            invalid(req, "position-out-of-range", "the position is beyond the end of the log",
                    "position");
            return;
        }
        changed = exec(db, &SQL_SEEK_POS, "iis", p, now, name);
    } else {
        evbus_stmt_t *st = evbus_store_prepare(db, &SQL_TOPIC);
        char topic[EB_MAX_TOPIC + 1] = "";
        if (st) {
            evbus_stmt_bind_text(st, 1, name);
            if (evbus_stmt_step(st, NULL) == EVBUS_STEP_ROW)
                evbus_strlcpy(topic, evbus_stmt_text(st, 0), sizeof topic);
            evbus_stmt_done(st);
        }
        st = *topic ? evbus_store_prepare(db, &SQL_BEFORE_TS) : NULL;
        if (st) {
            evbus_stmt_bind_text(st, 1, topic);
            evbus_stmt_bind_int64(st, 2, t);
            if (evbus_stmt_step(st, NULL) == EVBUS_STEP_ROW)
                p = evbus_stmt_int64(st, 0);
            evbus_stmt_done(st);
        }
        if (p >= 0)
            changed = exec(db, &SQL_SEEK_POS, "iis", p, now, name);
    }
    evbus_store_pool_put(app->pool, db);
    if (changed < 0) {
        unavailable(req);
        return;
    }
    evbus_log_kv(EVBUS_LOG_INFO, "subscription sought", "subscription", name, NULL);
    eb_pusher_changed(app->pusher);
    json_t *r = json_pack("{s:s}", "subscription", name);
    if (p >= 0)
        json_object_set_new(r, "position", json_integer((json_int_t)p));
    if (t >= 0) {
        char when[40];
        evbus_fmt_rfc3339(t, when, sizeof when);
        json_object_set_new(r, "timestamp", json_string(when));
    }
    evbus_req_reply_json(req, 200, r);
}

/* ---- secrets and state ---- */

static const evbus_sql_t SQL_ROTATE = {{
    "UPDATE eb_subscriptions SET secret_prev = secret, secret_prev_until = ?, secret = ?,"
    " updated_at = ? WHERE name = ? AND mode = 'push'",
}};

void eb_subs_rotate(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    json_t *b = body_or_empty(req);
    if (!b)
        return;
    json_t *g = json_object_get(b, "graceS");
    json_t *sec = json_object_get(b, "secret");
    char secret[256] = "";
    int ok = 1;
    if (g &&
        (!json_is_integer(g) || json_integer_value(g) < 0 || json_integer_value(g) > GRACE_MAX_S))
        ok = 0;
    if (sec && (!json_is_string(sec) || json_string_length(sec) >= sizeof secret ||
                !evbus_webhook_secret_valid(json_string_value(sec))))
        ok = 0;
    int64_t grace = g ? json_integer_value(g) : GRACE_DEFAULT_S;
    if (ok && sec)
        evbus_strlcpy(secret, json_string_value(sec), sizeof secret);
    else if (ok)
        evbus_webhook_secret_new(secret);
    json_decref(b);
    if (!ok) {
        invalid(req, "invalid-rotation",
                "optional members: \"graceS\" (0..2592000) and \"secret\" (whsec_ + base64)", NULL);
        return;
    }
    char mode[8];
    if (!want_sub(app, req, name, mode, sizeof mode))
        return;
    if (strcmp(mode, "push") != 0) {
        evbus_req_problem(req, 409, "not-push", "Not A Push Subscription",
                          "only push subscriptions have a signing secret", NULL);
        return;
    }
    int64_t now = evbus_now_ms(), until = now + grace * 1000;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int64_t changed = exec(db, &SQL_ROTATE, "isis", until, secret, now, name);
    evbus_store_pool_put(app->pool, db);
    if (changed <= 0) {
        unavailable(req);
        return;
    }
    evbus_log_kv(EVBUS_LOG_INFO, "signing secret rotated", "subscription", name, NULL);
    eb_pusher_changed(app->pusher);
    char when[40];
    evbus_fmt_rfc3339(until, when, sizeof when);
    evbus_req_reply_json(req, 200,
                         json_pack("{s:s, s:s, s:s}", "subscription", name, "secret", secret,
                                   "previousValidUntil", when));
}

static const evbus_sql_t SQL_ENABLE = {{
    "UPDATE eb_subscriptions SET state = 'active', state_reason = NULL, updated_at = ?"
    " WHERE name = ?",
}};

void eb_subs_enable(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    char mode[8];
    if (!want_sub(app, req, name, mode, sizeof mode))
        return;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int64_t changed = exec(db, &SQL_ENABLE, "is", evbus_now_ms(), name);
    evbus_store_pool_put(app->pool, db);
    if (changed <= 0) {
        unavailable(req);
        return;
    }
    evbus_log_kv(EVBUS_LOG_INFO, "subscription enabled", "subscription", name, NULL);
    eb_pusher_changed(app->pusher);
    evbus_req_reply_json(req, 200,
                         json_pack("{s:s, s:s}", "subscription", name, "state", "active"));
}

/* ---- the dead-letter queue ---- */

#define DLQ_COLUMNS                                                                                \
    "id, event_id, position, type, subject, attempts, last_status, last_error,"                    \
    " first_attempt_at, failed_at, state"

static json_t *dlq_row(evbus_stmt_t *st, int with_body)
{
    char first[40], failed[40];
    evbus_fmt_rfc3339(evbus_stmt_int64(st, 8), first, sizeof first);
    evbus_fmt_rfc3339(evbus_stmt_int64(st, 9), failed, sizeof failed);
    json_t *j = json_pack(
        "{s:I, s:s, s:I, s:s, s:s?, s:I, s:I, s:s?, s:s, s:s, s:s}", "id",
        (json_int_t)evbus_stmt_int64(st, 0), "eventId", evbus_stmt_text(st, 1), "position",
        (json_int_t)evbus_stmt_int64(st, 2), "type", evbus_stmt_text(st, 3), "subject",
        evbus_stmt_is_null(st, 4) ? NULL : evbus_stmt_text(st, 4), "attempts",
        (json_int_t)evbus_stmt_int64(st, 5), "lastStatus", (json_int_t)evbus_stmt_int64(st, 6),
        "lastError", evbus_stmt_is_null(st, 7) ? NULL : evbus_stmt_text(st, 7), "firstAttemptAt",
        first, "failedAt", failed, "state", evbus_stmt_text(st, 10));
    if (with_body)
        json_object_set_new(j, "event", json_loads(evbus_stmt_text(st, 11), 0, NULL));
    return j;
}

static int query_i64(evbus_req_t *req, const char *key, int64_t min, int64_t max, int64_t *out)
{
    const char *v = evbus_req_query(req, key);
    if (!v)
        return 1;
    if (evbus_parse_i64(v, min, max, out) == 0)
        return 1;
    invalid(req, "invalid-parameter", "a query parameter is not an integer in range", key);
    return 0;
}

static int query_time(evbus_req_t *req, const char *key, int64_t *out)
{
    const char *v = evbus_req_query(req, key);
    if (!v)
        return 1;
    if (evbus_parse_rfc3339(v, out) == 0)
        return 1;
    invalid(req, "invalid-parameter", "a query parameter is not an RFC 3339 time", key);
    return 0;
}

static const evbus_sql_t SQL_DLQ_LIST = {{
    "SELECT " DLQ_COLUMNS " FROM eb_dlq WHERE subscription = ? AND id > ?"
    " AND failed_at >= ? AND failed_at < ? AND (? = '' OR type = ?) ORDER BY id LIMIT ?",
}};

void eb_dlq_list(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    int64_t limit = 100, after = 0, from = 0, to = INT64_MAX;
    if (!query_i64(req, "limit", 1, DLQ_PAGE_MAX, &limit) ||
        !query_i64(req, "after", 0, INT64_MAX, &after) || !query_time(req, "from", &from) ||
        !query_time(req, "to", &to))
        return;
    const char *type = evbus_req_query(req, "type");
    if (type && strlen(type) > EVBUS_CE_MAX_TYPE) {
        invalid(req, "invalid-parameter", "type is too long", "type");
        return;
    }
    char mode[8];
    if (!want_sub(app, req, name, mode, sizeof mode))
        return;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_DLQ_LIST);
    json_t *items = json_array();
    int rc = EVBUS_STEP_ERROR;
    int64_t last = 0;
    if (st) {
        evbus_stmt_bind_text(st, 1, name);
        evbus_stmt_bind_int64(st, 2, after);
        evbus_stmt_bind_int64(st, 3, from);
        evbus_stmt_bind_int64(st, 4, to);
        evbus_stmt_bind_text(st, 5, type ? type : "");
        evbus_stmt_bind_text(st, 6, type ? type : "");
        evbus_stmt_bind_int64(st, 7, limit);
        while ((rc = evbus_stmt_step(st, NULL)) == EVBUS_STEP_ROW) {
            last = evbus_stmt_int64(st, 0);
            json_array_append_new(items, dlq_row(st, 0));
        }
        evbus_stmt_done(st);
    }
    evbus_store_pool_put(app->pool, db);
    if (rc != EVBUS_STEP_DONE) {
        json_decref(items);
        unavailable(req);
        return;
    }
    json_t *r = json_pack("{s:s, s:o}", "subscription", name, "items", items);
    /* a full page may have more behind it: "after" for the next one */
    json_object_set_new(r, "nextAfter",
                        (int64_t)json_array_size(items) == limit ? json_integer(last)
                                                                 : json_null());
    evbus_req_reply_json(req, 200, r);
}

static int dlq_id(evbus_req_t *req, int64_t *id)
{
    if (evbus_parse_i64(evbus_req_param(req, "id"), 1, INT64_MAX, id) == 0)
        return 1;
    invalid(req, "invalid-parameter", "the dead letter id must be a positive integer", "id");
    return 0;
}

static const evbus_sql_t SQL_DLQ_GET = {{
    "SELECT " DLQ_COLUMNS ", body FROM eb_dlq WHERE subscription = ? AND id = ?",
}};

void eb_dlq_get(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    int64_t id;
    if (!dlq_id(req, &id))
        return;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_DLQ_GET);
    json_t *j = NULL;
    int rc = EVBUS_STEP_ERROR;
    if (st) {
        evbus_stmt_bind_text(st, 1, name);
        evbus_stmt_bind_int64(st, 2, id);
        if ((rc = evbus_stmt_step(st, NULL)) == EVBUS_STEP_ROW)
            j = dlq_row(st, 1);
        evbus_stmt_done(st);
    }
    evbus_store_pool_put(app->pool, db);
    if (j)
        evbus_req_reply_json(req, 200, j);
    else if (rc == EVBUS_STEP_DONE)
        not_found(req, "there is no such dead letter on this subscription");
    else
        unavailable(req);
}

static const evbus_sql_t SQL_DLQ_DELETE = {{
    "DELETE FROM eb_dlq WHERE subscription = ? AND id = ?",
}};

void eb_dlq_delete(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    int64_t id;
    if (!dlq_id(req, &id))
        return;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int64_t changed = exec(db, &SQL_DLQ_DELETE, "si", name, id);
    evbus_store_pool_put(app->pool, db);
    if (changed < 0)
        unavailable(req);
    else if (changed == 0)
        not_found(req, "there is no such dead letter on this subscription");
    else
        evbus_req_reply_json(req, 204, NULL);
}

static const evbus_sql_t SQL_REDRIVE_ONE = {{
    "UPDATE eb_dlq SET state = 'redrive' WHERE subscription = ? AND id = ? AND state = 'parked'",
}};
static const evbus_sql_t SQL_REDRIVE_RANGE = {{
    "UPDATE eb_dlq SET state = 'redrive' WHERE subscription = ? AND state = 'parked'"
    " AND failed_at >= ? AND failed_at < ?",
}};

/* Redrive sends parked events again, to this subscription only, with their ids:
 * {"ids": [..]}, {"all": true}, or {"from": time, "to": time} (failure times). */
void eb_dlq_redrive(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    json_t *b = json_body(req);
    if (!b)
        return;
    json_t *ids = json_object_get(b, "ids");
    int all = json_is_true(json_object_get(b, "all"));
    const char *from = json_string_value(json_object_get(b, "from"));
    const char *to = json_string_value(json_object_get(b, "to"));
    int64_t f = 0, t = INT64_MAX;
    int forms = (ids != NULL) + all + (from || to);
    int ok = json_is_object(b) && forms == 1;
    if (ok && ids) {
        size_t i;
        json_t *v;
        ok = json_is_array(ids) && json_array_size(ids) > 0 &&
             json_array_size(ids) <= DLQ_REDRIVE_IDS_MAX;
        json_array_foreach (ids, i, v)
            ok = ok && json_is_integer(v) && json_integer_value(v) > 0;
    }
    if (ok && from && evbus_parse_rfc3339(from, &f) != 0)
        ok = 0;
    if (ok && to && evbus_parse_rfc3339(to, &t) != 0)
        ok = 0;
    if (!ok) {
        json_decref(b);
        invalid(req, "invalid-redrive",
                "the body must be one of {\"ids\": [1..1000 ids]}, {\"all\": true} or "
                "{\"from\": time, \"to\": time}",
                NULL);
        return;
    }
    char mode[8];
    if (!want_sub(app, req, name, mode, sizeof mode)) {
        json_decref(b);
        return;
    }
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int64_t n = 0;
    if (evbus_store_begin(db) != EVBUS_ERR_OK) {
        n = -1;
    } else if (ids) {
        size_t i;
        json_t *v;
        json_array_foreach (ids, i, v) {
            int64_t c = exec(db, &SQL_REDRIVE_ONE, "si", name, (int64_t)json_integer_value(v));
            if (c < 0) {
                n = -1;
                break;
            }
            n += c;
        }
    } else {
        n = exec(db, &SQL_REDRIVE_RANGE, "sii", name, f, t);
    }
    if (n >= 0 && evbus_store_commit(db) != EVBUS_ERR_OK)
        n = -1;
    if (n < 0)
        evbus_store_rollback(db);
    evbus_store_pool_put(app->pool, db);
    json_decref(b);
    if (n < 0) {
        unavailable(req);
        return;
    }
    char count[24];
    snprintf(count, sizeof count, "%lld", (long long)n);
    evbus_log_kv(EVBUS_LOG_INFO, "dead letters redriven", "subscription", name, "count", count,
                 NULL);
    eb_pusher_changed(app->pusher);
    evbus_req_reply_json(req, 202,
                         json_pack("{s:s, s:I}", "subscription", name, "redriven", (json_int_t)n));
}

/* ---- changing a push definition ---- */

static const evbus_sql_t SQL_PUSH_GET = {{
    "SELECT push FROM eb_subscriptions WHERE name = ? AND mode = 'push'",
}};
static const evbus_sql_t SQL_PUSH_SET = {{
    "UPDATE eb_subscriptions SET push = ?, updated_at = ? WHERE name = ? AND mode = 'push'",
}};

/* PATCH {"push": {...}}: the members given replace the stored ones (URL, timeouts,
 * policies); the secret changes only by rotation. */
void eb_subs_patch(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    json_t *b = json_body(req);
    if (!b)
        return;
    json_t *changes = json_object_get(b, "push");
    if (!json_is_object(b) || json_object_size(b) != 1 || !json_is_object(changes) ||
        json_object_get(changes, "secret")) {
        json_decref(b);
        invalid(req, "invalid-change",
                "the body must be {\"push\": {members to change}}; secrets change by "
                "POST .../rotate-secret",
                NULL);
        return;
    }
    char mode[8];
    if (!want_sub(app, req, name, mode, sizeof mode)) {
        json_decref(b);
        return;
    }
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_PUSH_GET);
    json_t *cur = NULL;
    int rc = EVBUS_STEP_ERROR;
    if (st) {
        evbus_stmt_bind_text(st, 1, name);
        if ((rc = evbus_stmt_step(st, NULL)) == EVBUS_STEP_ROW)
            cur = json_loads(evbus_stmt_text(st, 0), 0, NULL);
        evbus_stmt_done(st);
    }
    if (!cur) {
        evbus_store_pool_put(app->pool, db);
        json_decref(b);
        if (rc == EVBUS_STEP_DONE)
            evbus_req_problem(req, 409, "not-push", "Not A Push Subscription",
                              "only push subscriptions have push settings", NULL);
        else
            unavailable(req);
        return;
    }
    json_object_update(cur, changes);
    json_t *errors = json_array();
    char unused[8];
    json_t *next = eb_push_parse(cur, app->allow, errors, unused, sizeof unused);
    json_decref(cur);
    json_decref(b);
    if (!next) {
        evbus_store_pool_put(app->pool, db);
        evbus_req_problem(req, 400, "invalid-subscription", "Invalid Subscription",
                          "the push settings have invalid fields", errors);
        return;
    }
    json_decref(errors);
    char *text = json_dumps(next, JSON_COMPACT | JSON_SORT_KEYS);
    int64_t changed = text ? exec(db, &SQL_PUSH_SET, "sis", text, evbus_now_ms(), name) : -1;
    evbus_store_pool_put(app->pool, db);
    free(text);
    if (changed <= 0) {
        json_decref(next);
        unavailable(req);
        return;
    }
    evbus_log_kv(EVBUS_LOG_INFO, "push settings changed", "subscription", name, NULL);
    eb_pusher_changed(app->pusher);
    evbus_req_reply_json(req, 200, json_pack("{s:s, s:o}", "subscription", name, "push", next));
}
