/* Push delivery into user-service: the webhook the eventbus calls, and the thread that
 * keeps this service's push subscription in place. Every delivery is checked against
 * the Standard Webhooks signature (one of our secrets), its age (5 min) and replays
 * before anything is applied; the event is then applied with its inbox row in one
 * transaction, exactly as the pull consumer does. */
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evbus/backoff.h"
#include "evbus/http_client.h"
#include "evbus/log.h"
#include "evbus/util.h"
#include "evbus/webhook.h"
#include "users.h"

#define RECHECK_S 10

static void unauthorized(evbus_req_t *req, const char *detail)
{
    evbus_req_problem(req, 401, "invalid-signature", "Unauthorized", detail, NULL);
}

void users_webhook(evbus_req_t *req, void *ud)
{
    users_app_t *app = ud;
    size_t len = 0;
    const char *body = evbus_req_body(req, &len);
    const char *id = evbus_req_header(req, "webhook-id");
    const char *ts = evbus_req_header(req, "webhook-timestamp");
    const char *sig = evbus_req_header(req, "webhook-signature");
    const char *secrets[] = {app->cfg.webhook_secret, app->cfg.webhook_secret_prev};
    int64_t now = evbus_now_ms() / 1000;
    evbus_webhook_result_t v =
        evbus_webhook_verify(secrets, 2, id, ts, sig, body ? body : "", len, now);
    if (v != EVBUS_WEBHOOK_OK) {
        evbus_log_kv(EVBUS_LOG_WARN, "webhook refused", "reason",
                     v == EVBUS_WEBHOOK_EXPIRED     ? "timestamp outside 5 minutes"
                     : v == EVBUS_WEBHOOK_MALFORMED ? "signature headers missing or malformed"
                                                    : "no signature matches",
                     NULL);
        unauthorized(req, "the webhook signature is missing, invalid or expired");
        return;
    }
    if (evbus_webhook_guard_seen(app->guard, id, ts, now)) {
        evbus_log_kv(EVBUS_LOG_WARN, "webhook refused", "reason", "replayed", NULL);
        unauthorized(req, "this delivery was already handled (replay)");
        return;
    }
    evbus_event_t *ev = NULL;
    evbus_ce_error_t cerr;
    if (evbus_event_parse(body ? body : "", len, &ev, &cerr) != EVBUS_ERR_OK) {
        evbus_req_problem(req, 400, "invalid-event", "Invalid Event", cerr.message, NULL);
        return;
    }
    if (strcmp(evbus_event_id(ev), id) != 0) {
        evbus_event_free(ev);
        evbus_req_problem(req, 400, "invalid-event", "Invalid Event",
                          "webhook-id is not the event's id", NULL);
        return;
    }
    evbus_log_set_event(evbus_event_id(ev));
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    evbus_err_t rc = users_apply_in(db, ev);
    evbus_store_pool_put(app->pool, db);
    evbus_log_set_event(NULL);
    evbus_event_free(ev);
    if (rc == EVBUS_ERR_OK) {
        evbus_webhook_guard_remember(app->guard, id, ts, now);
        evbus_req_reply_json(req, 204, NULL);
    } else if (evbus_err_retriable(rc)) {
        evbus_req_unavailable(req, "the event could not be applied now");
    } else {
        evbus_req_problem(req, 422, "unprocessable-event", "Unprocessable Event",
                          "the event cannot be applied", NULL);
    }
}

/* ---- the subscription ---- */

const users_feed_t users_feeds[3] = {
    {"", "USER_REGISTERED", "UserRegistered"},
    {".updated", "USER_UPDATED", "UserUpdated"},
    {".deactivated", "USER_DEACTIVATED", "UserDeactivated"},
};
#define NFEEDS (sizeof users_feeds / sizeof users_feeds[0])

struct users_subscriber {
    users_app_t *app;
    char *def[NFEEDS]; /* each subscription's JSON definition */
    char *patch;       /* the push settings, to repoint an existing subscription */
    char name[NFEEDS][128];
    char url[1024];
    char auth[300]; /* Authorization header, or empty */
    pthread_t thread;
    volatile int stop;
    atomic_int ready;
};

/* Creates subscription i, or points an existing one at this service's URL (it moved,
 * or its settings changed). */
static int ensure_one(users_subscriber_t *s, evbus_http_client_t *http, size_t i)
{
    const char *headers[] = {"Content-Type: application/json", *s->auth ? s->auth : NULL, NULL};
    evbus_http_resp_t resp;
    evbus_err_t rc = evbus_http_request(http, "POST", s->url, headers, s->def[i], strlen(s->def[i]),
                                        5000, &resp);
    if (rc == EVBUS_ERR_OK && resp.status == 409) {
        evbus_http_resp_clear(&resp);
        char url[1200];
        snprintf(url, sizeof url, "%s/%s", s->url, s->name[i]);
        rc = evbus_http_request(http, "PATCH", url, headers, s->patch, strlen(s->patch), 5000,
                                &resp);
        if (rc == EVBUS_ERR_OK && resp.status == 200)
            evbus_log_kv(EVBUS_LOG_INFO, "push subscription updated", "subscription", s->name[i],
                         NULL);
    }
    int ok = rc == EVBUS_ERR_OK && (resp.status == 200 || resp.status == 201);
    if (!ok)
        evbus_log_kv(EVBUS_LOG_WARN, "push subscription not in place", "detail",
                     rc          ? evbus_strerror(rc)
                     : resp.body ? resp.body
                                 : "",
                     NULL);
    else if (resp.status == 201)
        evbus_log_kv(EVBUS_LOG_INFO, "push subscription created", "subscription", s->name[i], NULL);
    evbus_http_resp_clear(&resp);
    return ok;
}

static int ensure(users_subscriber_t *s, evbus_http_client_t *http)
{
    int ok = 1;
    for (size_t i = 0; i < NFEEDS && !s->stop; i++)
        ok &= ensure_one(s, http, i);
    return ok;
}

static void *subscriber_main(void *arg)
{
    users_subscriber_t *s = arg;
    evbus_http_client_t *http = evbus_http_client_new(64 * 1024);
    if (!http)
        return NULL;
    evbus_http_client_set_abort(http, &s->stop);
    evbus_backoff_t bo = {200, 2.0, 5000};
    unsigned attempt = 0;
    while (!s->stop) {
        int ok = ensure(s, http);
        atomic_store(&s->ready, ok);
        int64_t wait_ms = ok ? RECHECK_S * 1000 : evbus_backoff_delay(&bo, attempt++);
        if (ok)
            attempt = 0;
        for (int64_t slept = 0; slept < wait_ms && !s->stop; slept += 50) {
            struct timespec ts = {0, 50 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    evbus_http_client_free(http);
    return NULL;
}

users_subscriber_t *users_subscriber_start(users_app_t *app, const char *webhook_url)
{
    users_subscriber_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->app = app;
    snprintf(s->url, sizeof s->url, "%s/api/subscriptions", app->cfg.eventbus_url);
    if (*app->cfg.eventbus_key)
        snprintf(s->auth, sizeof s->auth, "Authorization: Bearer %s", app->cfg.eventbus_key);
    int ok = 1;
    for (size_t i = 0; i < NFEEDS; i++) {
        snprintf(s->name[i], sizeof s->name[i], "%s%s", app->cfg.subscription,
                 users_feeds[i].suffix);
        json_t *def =
            json_pack("{s:s, s:s, s:[s], s:s, s:s, s:{s:s, s:s}}", "name", s->name[i], "topic",
                      users_feeds[i].topic, "types", users_feeds[i].type, "mode", "push", "from",
                      "earliest", "push", "url", webhook_url, "secret", app->cfg.webhook_secret);
        s->def[i] = def ? json_dumps(def, JSON_COMPACT) : NULL;
        json_decref(def);
        ok &= s->def[i] != NULL;
    }
    json_t *patch = json_pack("{s:{s:s}}", "push", "url", webhook_url);
    s->patch = patch ? json_dumps(patch, JSON_COMPACT) : NULL;
    json_decref(patch);
    if (!ok || !s->patch || pthread_create(&s->thread, NULL, subscriber_main, s) != 0) {
        for (size_t i = 0; i < NFEEDS; i++)
            free(s->def[i]);
        free(s->patch);
        free(s);
        return NULL;
    }
    return s;
}

int users_subscriber_ready(users_subscriber_t *s)
{
    return s && atomic_load(&s->ready);
}

void users_subscriber_stop(users_subscriber_t *s)
{
    if (!s)
        return;
    s->stop = 1;
    pthread_join(s->thread, NULL);
    for (size_t i = 0; i < NFEEDS; i++)
        free(s->def[i]);
    free(s->patch);
    sodium_memzero(s->auth, sizeof s->auth);
    free(s);
}
