/* Subscriptions API and pull delivery: create/list/get/delete, long-poll for events
 * after the subscription's cursor, and ack to move the cursor forward. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"
#include "evbus/log.h"
#include "evbus/util.h"

#define MAX_TYPES 32
#define DEFAULT_MAX 100
#define MAX_MAX 1000

static const char *const json_types[] = {"application/json", NULL};

static const evbus_sql_t SQL_SUB_GET = {{
    "SELECT name, topic, types, mode, cursor, created_at, start_from, push, state, state_reason, "
    "group_epoch, start_at, seek_gen"
    " FROM eb_subscriptions WHERE name = ?",
}};
static const evbus_sql_t SQL_SUB_LIST = {{
    "SELECT name, topic, types, mode, cursor, created_at, start_from, push, state, state_reason, "
    "group_epoch, start_at, seek_gen"
    " FROM eb_subscriptions ORDER BY name",
}};
static const evbus_sql_t SQL_SUB_INSERT = {{
    "INSERT INTO eb_subscriptions (name, topic, types, mode, cursor, created_at, updated_at,"
    " start_from, push, secret) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (name) DO NOTHING",
}};
static const evbus_sql_t SQL_SUB_DELETE = {{"DELETE FROM eb_subscriptions WHERE name = ?"}};
static const evbus_sql_t SQL_SUB_ACK = {{
    [EVBUS_DIALECT_SQLITE] =
        "UPDATE eb_subscriptions SET cursor = MAX(cursor, ?), updated_at = ? WHERE name = ?"
        " AND mode = 'pull'",
    [EVBUS_DIALECT_PG] =
        "UPDATE eb_subscriptions SET cursor = GREATEST(cursor, ?), updated_at = ? WHERE name = ?"
        " AND mode = 'pull'",
}};
static const evbus_sql_t SQL_SUB_CURSOR = {{"SELECT cursor FROM eb_subscriptions WHERE name = ?"}};

typedef struct {
    char name[65], topic[EB_MAX_TOPIC + 1], mode[8];
    json_t *types; /* array or NULL */
    int64_t cursor, created_at;
    int from_earliest;
    json_t *push; /* the push definition (no secret), NULL for pull */
    char state[16], reason[256];
    int64_t group_epoch, start_at, seek_gen;
} sub_t;

static void sub_clear(sub_t *s)
{
    json_decref(s->types);
    json_decref(s->push);
    s->types = s->push = NULL;
}

static void sub_from_row(evbus_stmt_t *st, sub_t *s)
{
    evbus_strlcpy(s->name, evbus_stmt_text(st, 0), sizeof s->name);
    evbus_strlcpy(s->topic, evbus_stmt_text(st, 1), sizeof s->topic);
    s->types = evbus_stmt_is_null(st, 2) ? NULL : json_loads(evbus_stmt_text(st, 2), 0, NULL);
    evbus_strlcpy(s->mode, evbus_stmt_text(st, 3), sizeof s->mode);
    s->cursor = evbus_stmt_int64(st, 4);
    s->created_at = evbus_stmt_int64(st, 5);
    s->from_earliest = strcmp(evbus_stmt_text(st, 6), "earliest") == 0;
    s->push = evbus_stmt_is_null(st, 7) ? NULL : json_loads(evbus_stmt_text(st, 7), 0, NULL);
    evbus_strlcpy(s->state, evbus_stmt_text(st, 8), sizeof s->state);
    evbus_strlcpy(s->reason, evbus_stmt_is_null(st, 9) ? "" : evbus_stmt_text(st, 9),
                  sizeof s->reason);
    s->group_epoch = evbus_stmt_int64(st, 10);
    s->start_at = evbus_stmt_int64(st, 11);
    s->seek_gen = evbus_stmt_int64(st, 12);
}

static eb_ksub_def_t ksub_def(const sub_t *s)
{
    eb_ksub_def_t d = {.types = s->types,
                       .from_earliest = s->from_earliest,
                       .epoch = s->group_epoch ? s->group_epoch : s->created_at,
                       .start_at = s->start_at ? s->start_at : s->created_at};
    evbus_strlcpy(d.name, s->name, sizeof d.name);
    evbus_strlcpy(d.topic, s->topic, sizeof d.topic);
    return d;
}

/* Loads a subscription: EVBUS_ERR_OK, NOTFOUND or DB. */
static evbus_err_t sub_load(evbus_store_t *db, const char *name, sub_t *s)
{
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_SUB_GET);
    if (!st)
        return EVBUS_ERR_DB;
    evbus_stmt_bind_text(st, 1, name);
    int rc = evbus_stmt_step(st, NULL);
    if (rc == EVBUS_STEP_ROW)
        sub_from_row(st, s);
    evbus_stmt_done(st);
    return rc == EVBUS_STEP_ROW    ? EVBUS_ERR_OK
           : rc == EVBUS_STEP_DONE ? EVBUS_ERR_NOTFOUND
                                   : EVBUS_ERR_DB;
}

/* The resource. On Kafka, position and head are this instance's: the positions of the
 * events its group member buffered (0 while it has none), and "kafka" tells the group
 * and the partitions this instance holds. */
/* Loads the subscription named in the request into s; answers 404 or 503 and returns 0
 * when it cannot. */
static int sub_load_or_answer(eb_app_t *app, evbus_req_t *req, const char *name, sub_t *s);

static json_t *sub_json(eb_app_t *app, evbus_store_t *db, const sub_t *s)
{
    char created[40];
    evbus_fmt_rfc3339(s->created_at, created, sizeof created);
    int64_t head = 0, position = s->cursor;
    json_t *kafka = NULL;
    if (app->ksubs) {
        eb_ksub_def_t d = ksub_def(s);
        eb_ksub_t *k = eb_ksubs_get(app->ksubs, &d, 0);
        position = 0;
        kafka = k ? eb_ksub_info(k, &position, &head)
                  : json_pack("{s:n, s:[], s:i, s:b}", "group", "partitions", "buffered", 0,
                              "paused", 0);
        eb_ksubs_put(app->ksubs, k);
    } else {
        app->broker->head(db, &head);
    }
    json_t *j = json_pack("{s:s, s:s, s:O?, s:s, s:s, s:I, s:I, s:s}", "name", s->name, "topic",
                          s->topic, "types", s->types, "mode", s->mode, "from",
                          s->from_earliest ? "earliest" : "latest", "position",
                          (json_int_t)position, "head", (json_int_t)head, "createdAt", created);
    if (kafka)
        json_object_set_new(j, "kafka", kafka);
    if (s->push) {
        json_object_set(j, "push", s->push);
        json_object_set_new(j, "state", json_string(s->state));
        if (*s->reason)
            json_object_set_new(j, "stateReason", json_string(s->reason));
        json_t *d = app->pusher ? eb_pusher_status(app->pusher, s->name) : NULL;
        json_object_set_new(j, "delivery", d ? d : json_null());
    }
    return j;
}

static void db_unavailable(evbus_req_t *req)
{
    evbus_req_unavailable(req, "the subscription store is not available");
}

static void not_found(evbus_req_t *req, const char *name)
{
    char detail[128];
    snprintf(detail, sizeof detail, "there is no subscription named '%.64s'", name);
    evbus_req_problem(req, 404, "subscription-not-found", "Subscription Not Found", detail, NULL);
}

static int sub_load_or_answer(eb_app_t *app, evbus_req_t *req, const char *name, sub_t *s)
{
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_err_t rc = sub_load(db, name, s);
    evbus_store_pool_put(app->pool, db);
    if (rc == EVBUS_ERR_NOTFOUND)
        not_found(req, name);
    else if (rc != EVBUS_ERR_OK)
        db_unavailable(req);
    return rc == EVBUS_ERR_OK;
}

static int name_valid(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return 0;
    return 1;
}

static void add_error(json_t *errors, const char *field, const char *msg)
{
    json_array_append_new(errors, json_pack("{s:s, s:s}", "field", field, "message", msg));
}

/* Validates a creation request into s; returns the list of field errors (maybe empty). */
static json_t *parse_definition(eb_app_t *app, json_t *body, sub_t *s, int *from_earliest,
                                char *secret, size_t secret_len)
{
    json_t *errors = json_array();
    memset(s, 0, sizeof *s);
    if (!json_is_object(body)) {
        add_error(errors, "", "the body must be a JSON object");
        return errors;
    }
    const char *key;
    json_t *v;
    json_object_foreach (body, key, v) {
        if (strcmp(key, "name") && strcmp(key, "topic") && strcmp(key, "types") &&
            strcmp(key, "mode") && strcmp(key, "from") && strcmp(key, "push"))
            add_error(errors, key, "unknown member");
    }
    const char *name = json_string_value(json_object_get(body, "name"));
    if (!name_valid(name))
        add_error(errors, "name", "required: 1..64 of [A-Za-z0-9._-]");
    else
        evbus_strlcpy(s->name, name, sizeof s->name);
    const char *topic = json_string_value(json_object_get(body, "topic"));
    if (!topic || !eb_topic_valid(topic))
        add_error(errors, "topic", "required: 1..249 of [A-Za-z0-9._-]");
    else
        evbus_strlcpy(s->topic, topic, sizeof s->topic);
    json_t *types = json_object_get(body, "types");
    if (types && !json_is_null(types)) {
        size_t i;
        json_t *t;
        int ok = json_is_array(types) && json_array_size(types) > 0 &&
                 json_array_size(types) <= MAX_TYPES;
        json_array_foreach (types, i, t) {
            if (!json_is_string(t) || json_string_length(t) == 0 ||
                json_string_length(t) > EVBUS_CE_MAX_TYPE)
                ok = 0;
        }
        if (!ok)
            add_error(errors, "types", "must be a list of 1..32 event types");
        else
            s->types = json_incref(types);
    }
    json_t *mode = json_object_get(body, "mode");
    json_t *push = json_object_get(body, "push");
    const char *m = mode ? json_string_value(mode) : push ? "push" : "pull";
    if (!m || (strcmp(m, "pull") != 0 && strcmp(m, "push") != 0))
        add_error(errors, "mode", "must be \"pull\" or \"push\"");
    else
        evbus_strlcpy(s->mode, m, sizeof s->mode);
    if (m && strcmp(m, "push") == 0)
        s->push = eb_push_parse(push, app->allow, errors, secret, secret_len);
    else if (push)
        add_error(errors, "push", "only with \"mode\": \"push\"");
    json_t *from = json_object_get(body, "from");
    const char *f = from ? json_string_value(from) : "latest";
    if (!f || (strcmp(f, "latest") != 0 && strcmp(f, "earliest") != 0))
        add_error(errors, "from", "must be \"latest\" or \"earliest\"");
    else
        *from_earliest = strcmp(f, "earliest") == 0;
    return errors;
}

static int same_json(json_t *a, json_t *b)
{
    return (!a && !b) || (a && b && json_equal(a, b));
}

static int same_definition(const sub_t *a, const sub_t *b)
{
    return strcmp(a->topic, b->topic) == 0 && strcmp(a->mode, b->mode) == 0 &&
           same_json(a->types, b->types) && same_json(a->push, b->push);
}

static void create_in(eb_app_t *app, evbus_req_t *req, evbus_store_t *db, sub_t *s,
                      int from_earliest, const char *secret)
{
    int64_t head = 0, now = evbus_now_ms();
    char *types = s->types ? json_dumps(s->types, JSON_COMPACT) : NULL;
    char *push = s->push ? json_dumps(s->push, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    evbus_stmt_t *st;
    int inserted = -1;
    if (evbus_store_begin(db) != EVBUS_ERR_OK)
        goto out;
    /* a new subscription sees every event accepted after it exists (on Kafka: from the
     * first message not older than created_at) */
    if (!from_earliest && !app->ksubs && app->broker->head(db, &head) != EVBUS_ERR_OK)
        goto rollback;
    if (!(st = evbus_store_prepare(db, &SQL_SUB_INSERT)))
        goto rollback;
    evbus_stmt_bind_text(st, 1, s->name);
    evbus_stmt_bind_text(st, 2, s->topic);
    evbus_stmt_bind_text(st, 3, types);
    evbus_stmt_bind_text(st, 4, s->mode);
    evbus_stmt_bind_int64(st, 5, head);
    evbus_stmt_bind_int64(st, 6, now);
    evbus_stmt_bind_int64(st, 7, now);
    evbus_stmt_bind_text(st, 8, from_earliest ? "earliest" : "latest");
    evbus_stmt_bind_text(st, 9, push);
    evbus_stmt_bind_text(st, 10, s->push ? secret : NULL);
    if (evbus_stmt_step(st, NULL) == EVBUS_STEP_DONE)
        inserted = (int)evbus_stmt_changes(st);
    evbus_stmt_done(st);
    if (inserted < 0)
        goto rollback;
    if (evbus_store_commit(db) != EVBUS_ERR_OK)
        inserted = -1;
    goto out;
rollback:
    evbus_store_rollback(db);
out:
    free(types);
    free(push);
    if (inserted < 0) {
        db_unavailable(req);
        return;
    }
    sub_t cur = {0};
    evbus_err_t rc = sub_load(db, s->name, &cur);
    if (rc != EVBUS_ERR_OK) {
        db_unavailable(req);
    } else if (inserted) {
        char loc[128];
        snprintf(loc, sizeof loc, "/api/subscriptions/%s", cur.name);
        evbus_req_add_header(req, "Location", loc);
        evbus_log_kv(EVBUS_LOG_INFO, "subscription created", "subscription", cur.name, "topic",
                     cur.topic, "mode", cur.mode, NULL);
        json_t *j = sub_json(app, db, &cur);
        if (cur.push) /* the only time the secret is shown */
            json_object_set_new(json_object_get(j, "push"), "secret", json_string(secret));
        if (cur.push)
            eb_pusher_changed(app->pusher);
        evbus_req_reply_json(req, 201, j);
    } else if (same_definition(&cur, s)) {
        evbus_req_reply_json(req, 200, sub_json(app, db, &cur));
    } else {
        evbus_req_problem(req, 409, "subscription-exists", "Subscription Exists",
                          "a subscription with this name exists with another definition", NULL);
    }
    sub_clear(&cur);
}

void eb_subs_create(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    eb_key_t *key = NULL;
    if (!eb_authenticate(app, req, &key))
        return;
    json_t *body = evbus_req_require_type(req, json_types) ? evbus_req_json(req) : NULL;
    if (!body) {
        eb_keys_put(app->keys, key);
        return;
    }
    sub_t s;
    int from_earliest = 0;
    char secret[256] = "";
    json_t *errors = parse_definition(app, body, &s, &from_earliest, secret, sizeof secret);
    json_decref(body);
    int may = !key || eb_key_may_use(key, s.name);
    eb_keys_put(app->keys, key);
    if (json_array_size(errors) > 0 || !may) {
        if (!may)
            evbus_req_problem(req, 403, "forbidden", "Forbidden",
                              "this key may not use a subscription with this name", NULL);
        else
            evbus_req_problem(req, 400, "invalid-subscription", "Invalid Subscription",
                              "the subscription definition has invalid fields", errors);
        if (!may)
            json_decref(errors);
        sub_clear(&s);
        return;
    }
    json_decref(errors);
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    create_in(app, req, db, &s, from_earliest, secret);
    evbus_store_pool_put(app->pool, db);
    sub_clear(&s);
}

void eb_subs_list(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    if (!eb_authorize(app, req, NULL))
        return;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_SUB_LIST);
    json_t *items = json_array();
    int rc = EVBUS_STEP_ERROR;
    if (st) {
        while ((rc = evbus_stmt_step(st, NULL)) == EVBUS_STEP_ROW) {
            sub_t s = {0};
            sub_from_row(st, &s);
            json_array_append_new(items, json_pack("{s:s, s:s, s:O?, s:s, s:I}", "name", s.name,
                                                   "topic", s.topic, "types", s.types, "mode",
                                                   s.mode, "position", (json_int_t)s.cursor));
            sub_clear(&s);
        }
        evbus_stmt_done(st);
    }
    evbus_store_pool_put(app->pool, db);
    if (rc != EVBUS_STEP_DONE) {
        json_decref(items);
        db_unavailable(req);
        return;
    }
    evbus_req_reply_json(req, 200, json_pack("{s:o}", "subscriptions", items));
}

void eb_subs_get(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    sub_t s = {0};
    evbus_err_t rc = sub_load(db, name, &s);
    if (rc == EVBUS_ERR_OK)
        evbus_req_reply_json(req, 200, sub_json(app, db, &s));
    else if (rc == EVBUS_ERR_NOTFOUND)
        not_found(req, name);
    else
        db_unavailable(req);
    sub_clear(&s);
    evbus_store_pool_put(app->pool, db);
}

void eb_subs_delete(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_SUB_DELETE);
    int rc = EVBUS_STEP_ERROR;
    int64_t changed = 0;
    if (st) {
        evbus_stmt_bind_text(st, 1, name);
        rc = evbus_stmt_step(st, NULL);
        changed = evbus_stmt_changes(st);
        evbus_stmt_done(st);
    }
    evbus_store_pool_put(app->pool, db);
    if (rc != EVBUS_STEP_DONE) {
        db_unavailable(req);
    } else if (!changed) {
        not_found(req, name);
    } else {
        if (app->ksubs)
            eb_ksubs_drop(app->ksubs, name);
        eb_pusher_changed(app->pusher);
        evbus_log_kv(EVBUS_LOG_INFO, "subscription deleted", "subscription", name, NULL);
        evbus_req_reply_json(req, 204, NULL);
    }
}

/* ---- pull ---- */

typedef struct {
    eb_waiter_t waiter;
    sub_t sub;
    unsigned max;
    eb_ksubs_t *ksubs; /* Kafka: the group member serving this poll */
    eb_ksub_t *member;
} poll_state_t;

static void poll_state_free(void *p)
{
    poll_state_t *ps = p;
    if (ps->member)
        eb_ksubs_put(ps->ksubs, ps->member);
    sub_clear(&ps->sub);
    free(ps);
}

static void push_only(evbus_req_t *req)
{
    evbus_req_problem(req, 409, "push-subscription", "Push Subscription",
                      "this subscription delivers by webhook; it cannot be polled or acknowledged",
                      NULL);
}

static void kafka_unavailable(evbus_req_t *req)
{
    evbus_req_add_header(req, "Retry-After", "1");
    evbus_req_problem(req, 503, "broker-unavailable", "Service Unavailable",
                      "the Kafka consumer for this subscription cannot start", NULL);
}

static int query_int(evbus_req_t *req, const char *key, int64_t min, int64_t max, int64_t def,
                     int64_t *out)
{
    const char *v = evbus_req_query(req, key);
    if (!v) {
        *out = def;
        return 1;
    }
    if (evbus_parse_i64(v, min, max, out) == 0)
        return 1;
    char detail[128];
    snprintf(detail, sizeof detail, "query parameter '%s' must be an integer in [%lld, %lld]", key,
             (long long)min, (long long)max);
    evbus_req_problem(req, 400, "invalid-parameter", "Invalid Parameter", detail,
                      json_pack("[{s:s, s:s}]", "field", key, "message", detail));
    return 0;
}

/* First call of a poll: validate and load the subscription. NULL if answered. */
static poll_state_t *poll_begin(eb_app_t *app, evbus_req_t *req)
{
    int64_t max, wait;
    if (!query_int(req, "max", 1, MAX_MAX, DEFAULT_MAX, &max) ||
        !query_int(req, "wait", 0, app->cfg.max_wait, 0, &wait))
        return NULL;
    poll_state_t *ps = calloc(1, sizeof *ps);
    if (!ps) {
        db_unavailable(req);
        return NULL;
    }
    if (!sub_load_or_answer(app, req, evbus_req_param(req, "name"), &ps->sub)) {
        poll_state_free(ps);
        return NULL;
    }
    if (ps->sub.push) {
        push_only(req);
        poll_state_free(ps);
        return NULL;
    }
    if (app->ksubs) {
        eb_ksub_def_t d = ksub_def(&ps->sub);
        ps->ksubs = app->ksubs;
        if (!(ps->member = eb_ksubs_get(app->ksubs, &d, 1))) {
            kafka_unavailable(req);
            poll_state_free(ps);
            return NULL;
        }
    }
    ps->max = (unsigned)max;
    ps->waiter.req = req;
    ps->waiter.deadline_us = evbus_mono_us() + wait * 1000000;
    evbus_strlcpy(ps->waiter.topic, ps->sub.topic, sizeof ps->waiter.topic);
    evbus_req_set_state(req, ps, poll_state_free);
    return ps;
}

static void reply_events(evbus_req_t *req, const char *name, json_t *events, int64_t next)
{
    evbus_req_reply_json(req, 200,
                         json_pack("{s:s, s:o, s:I}", "subscription", name, "events", events,
                                   "next", (json_int_t)next));
}

/* Pull on Kafka: the events this instance's group member buffered. */
static void poll_kafka(eb_app_t *app, evbus_req_t *req, poll_state_t *ps)
{
    for (;;) {
        uint64_t gen = eb_waiters_gen(app->waiters);
        if (eb_ksub_closed(app->ksubs, ps->member)) {
            not_found(req, ps->sub.name);
            return;
        }
        json_t *events = json_array();
        int64_t next = 0;
        int examined = eb_ksub_fetch(ps->member, 0, ps->max, events, &next);
        if (examined || evbus_mono_us() >= ps->waiter.deadline_us || evbus_http_stopping(req)) {
            reply_events(req, ps->sub.name, events, next);
            return;
        }
        json_decref(events);
        if (eb_waiters_park(app->waiters, &ps->waiter, gen))
            return; /* resumed when the member buffers events, or by the deadline */
    }
}

void eb_subs_poll(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    poll_state_t *ps = evbus_req_state(req);
    if (!ps && !eb_authorize(app, req, evbus_req_param(req, "name")))
        return;
    if (!ps && !(ps = poll_begin(app, req)))
        return;
    if (ps->member) {
        poll_kafka(app, req, ps);
        return;
    }
    for (;;) {
        uint64_t gen = eb_waiters_gen(app->waiters);
        evbus_store_t *db = evbus_store_pool_get(app->pool);
        json_t *events = json_array();
        int64_t cursor = 0, next = 0;
        evbus_stmt_t *st = evbus_store_prepare(db, &SQL_SUB_CURSOR);
        int found = 0;
        evbus_err_t rc = EVBUS_ERR_DB;
        if (st) {
            evbus_stmt_bind_text(st, 1, ps->sub.name);
            int step = evbus_stmt_step(st, NULL);
            found = step == EVBUS_STEP_ROW;
            if (found)
                cursor = evbus_stmt_int64(st, 0);
            evbus_stmt_done(st);
            rc = step == EVBUS_STEP_ERROR ? EVBUS_ERR_DB : EVBUS_ERR_OK;
        }
        if (found)
            rc = app->broker->fetch(db, ps->sub.topic, ps->sub.types, cursor, ps->max, events,
                                    &next);
        evbus_store_pool_put(app->pool, db);
        if (rc != EVBUS_ERR_OK || !found) {
            json_decref(events);
            if (rc != EVBUS_ERR_OK)
                db_unavailable(req);
            else
                not_found(req, ps->sub.name);
            return;
        }
        if (json_array_size(events) > 0 || next > cursor ||
            evbus_mono_us() >= ps->waiter.deadline_us || evbus_http_stopping(req)) {
            reply_events(req, ps->sub.name, events, next);
            return;
        }
        json_decref(events);
        if (eb_waiters_park(app->waiters, &ps->waiter, gen))
            return; /* resumed by a commit on the topic or by the deadline */
    }
}

/* Ack on Kafka: positions belong to the instance whose group member delivered them. */
static void ack_kafka(eb_app_t *app, evbus_req_t *req, const char *name, int64_t p)
{
    sub_t s = {0};
    if (!sub_load_or_answer(app, req, name, &s))
        return;
    if (s.push) {
        push_only(req);
        sub_clear(&s);
        return;
    }
    eb_ksub_def_t d = ksub_def(&s);
    eb_ksub_t *k = eb_ksubs_get(app->ksubs, &d, 0);
    int64_t acked = 0;
    eb_ack_t a = k ? eb_ksub_ack(k, p, &acked) : EB_ACK_FOREIGN;
    eb_ksubs_put(app->ksubs, k);
    if (a == EB_ACK_OK)
        evbus_req_reply_json(
            req, 200,
            json_pack("{s:s, s:I}", "subscription", s.name, "position", (json_int_t)acked));
    else if (a == EB_ACK_RANGE)
        evbus_req_problem(req, 400, "position-out-of-range", "Position Out Of Range",
                          "the position is beyond the last event this instance delivered", NULL);
    else
        evbus_req_problem(req, 409, "position-unknown", "Position Unknown",
                          "this instance did not deliver that position: on Kafka, acknowledge "
                          "on the instance that answered the poll (the events are redelivered "
                          "otherwise)",
                          NULL);
    sub_clear(&s);
}

void eb_subs_ack(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    const char *name = evbus_req_param(req, "name");
    if (!eb_authorize(app, req, name))
        return;
    if (!evbus_req_require_type(req, json_types))
        return;
    json_t *body = evbus_req_json(req);
    if (!body)
        return;
    json_t *pos = json_object_get(body, "position");
    if (!json_is_object(body) || !json_is_integer(pos) || json_integer_value(pos) < 0) {
        json_decref(body);
        evbus_req_problem(req, 400, "invalid-ack", "Invalid Acknowledgement",
                          "the body must be {\"position\": <non-negative integer>}",
                          json_pack("[{s:s, s:s}]", "field", "position", "message",
                                    "required non-negative integer"));
        return;
    }
    int64_t p = json_integer_value(pos);
    json_decref(body);
    if (app->ksubs) {
        ack_kafka(app, req, name, p);
        return;
    }
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int64_t head = 0;
    evbus_err_t rc = app->broker->head(db, &head);
    sub_t s = {0};
    if (rc == EVBUS_ERR_OK && p > head) {
        evbus_store_pool_put(app->pool, db);
        evbus_req_problem(req, 400, "position-out-of-range", "Position Out Of Range",
                          "the position is beyond the end of the log", NULL);
        return;
    }
    evbus_stmt_t *st = rc == EVBUS_ERR_OK ? evbus_store_prepare(db, &SQL_SUB_ACK) : NULL;
    int64_t changed = -1;
    if (st) {
        evbus_stmt_bind_int64(st, 1, p);
        evbus_stmt_bind_int64(st, 2, evbus_now_ms());
        evbus_stmt_bind_text(st, 3, name);
        if (evbus_stmt_step(st, NULL) == EVBUS_STEP_DONE)
            changed = evbus_stmt_changes(st);
        evbus_stmt_done(st);
    }
    if (changed >= 0) /* 0: gone, or a push subscription */
        rc = sub_load(db, name, &s);
    evbus_store_pool_put(app->pool, db);
    if (changed < 0 || (rc != EVBUS_ERR_OK && rc != EVBUS_ERR_NOTFOUND))
        db_unavailable(req);
    else if (rc == EVBUS_ERR_NOTFOUND)
        not_found(req, name);
    else if (changed == 0)
        push_only(req);
    else
        evbus_req_reply_json(
            req, 200,
            json_pack("{s:s, s:I}", "subscription", s.name, "position", (json_int_t)s.cursor));
    sub_clear(&s);
}
