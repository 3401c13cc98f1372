/* Pull consumer thread: ensure the subscription, long-poll, apply, acknowledge. An
 * event is acknowledged only after the callback applied it, so a crash anywhere means
 * redelivery, never loss; the callback's inbox turns redelivery into a no-op. */
#include "evbus/consumer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evbus/backoff.h"
#include "evbus/http_client.h"
#include "evbus/log.h"
#include "evbus/util.h"

#define MAX_RESPONSE (32u * 1024 * 1024)

struct evbus_consumer {
    evbus_consumer_opts_t o;
    char *base, *name, *auth_header;
    json_t *sub_def;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    volatile int stop;
    atomic_int healthy;
    evbus_backoff_t bo;
    int64_t acked; /* last position acknowledged; consumer thread only */
};

/* Sleeps ms unless stopped first; returns 1 if stopping. */
static int nap(evbus_consumer_t *c, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&c->lock);
    while (!c->stop)
        if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) != 0)
            break;
    int stop = c->stop;
    pthread_mutex_unlock(&c->lock);
    return stop;
}

static evbus_err_t call(evbus_consumer_t *c, evbus_http_client_t *http, const char *method,
                        const char *url, const char *body, long timeout_ms, evbus_http_resp_t *resp)
{
    const char *headers[3] = {"Content-Type: application/json", c->auth_header, NULL};
    return evbus_http_request(http, method, url, headers, body, body ? strlen(body) : 0, timeout_ms,
                              resp);
}

/* Creates the subscription; an existing one with the same definition is fine. */
static int ensure_subscription(evbus_consumer_t *c, evbus_http_client_t *http)
{
    char url[1024];
    snprintf(url, sizeof url, "%s/api/subscriptions", c->base);
    char *body = json_dumps(c->sub_def, JSON_COMPACT);
    evbus_http_resp_t resp;
    evbus_err_t rc = call(c, http, "POST", url, body, 5000, &resp);
    free(body);
    int ok = rc == EVBUS_ERR_OK && (resp.status == 200 || resp.status == 201);
    if (!ok)
        evbus_log_kv(EVBUS_LOG_WARN, "consumer: cannot create subscription", "subscription",
                     c->name, "detail",
                     rc          ? evbus_strerror(rc)
                     : resp.body ? resp.body
                                 : "",
                     NULL);
    evbus_http_resp_clear(&resp);
    return ok;
}

/* Applies one event, retrying retriable failures until it succeeds or we stop.
 * Returns 1 if stopping. */
static int apply(evbus_consumer_t *c, json_t *obj)
{
    evbus_event_t *ev = NULL;
    evbus_ce_error_t cerr;
    if (evbus_event_from_json(obj, &ev, &cerr) != EVBUS_ERR_OK) {
        evbus_log_kv(EVBUS_LOG_ERROR, "consumer: skipping an invalid event", "detail", cerr.message,
                     NULL);
        return 0;
    }
    evbus_log_set_correlation(evbus_event_correlation(ev));
    evbus_log_set_event(evbus_event_id(ev));
    unsigned attempt = 0;
    int stopping = 0;
    for (;;) {
        evbus_err_t rc = c->o.fn(ev, c->o.ud);
        if (rc == EVBUS_ERR_OK)
            break;
        if (!evbus_err_retriable(rc)) {
            evbus_log_kv(EVBUS_LOG_ERROR, "consumer: event cannot be applied, skipped", "detail",
                         evbus_strerror(rc), NULL);
            break;
        }
        evbus_log_kv(EVBUS_LOG_WARN, "consumer: apply failed, retrying", "detail",
                     evbus_strerror(rc), NULL);
        if ((stopping = nap(c, evbus_backoff_delay(&c->bo, attempt++))))
            break;
    }
    evbus_log_set_correlation(NULL);
    evbus_log_set_event(NULL);
    evbus_event_free(ev);
    return stopping;
}

/* One poll: fetch, apply, ack. Returns 0 ok, -1 failed (back off), -2 subscription gone,
 * 1 stopping. */
static int poll_once(evbus_consumer_t *c, evbus_http_client_t *http)
{
    char url[1024];
    snprintf(url, sizeof url, "%s/api/subscriptions/%s/events?max=%u&wait=%u", c->base, c->name,
             c->o.max_batch, c->o.wait_s);
    evbus_http_resp_t resp;
    evbus_err_t rc = call(c, http, "GET", url, NULL, (long)(c->o.wait_s + 10) * 1000, &resp);
    if (rc == EVBUS_ERR_SHUTDOWN)
        return 1;
    if (rc != EVBUS_ERR_OK || resp.status != 200) {
        int gone = rc == EVBUS_ERR_OK && resp.status == 404;
        evbus_log_kv(EVBUS_LOG_WARN, "consumer: poll failed", "detail",
                     rc          ? evbus_strerror(rc)
                     : resp.body ? resp.body
                                 : "",
                     NULL);
        evbus_http_resp_clear(&resp);
        return gone ? -2 : -1;
    }
    json_t *root = json_loadb(resp.body ? resp.body : "", resp.len, 0, NULL);
    evbus_http_resp_clear(&resp);
    json_t *events = json_object_get(root, "events");
    json_t *next = json_object_get(root, "next");
    if (!json_is_array(events) || !json_is_integer(next)) {
        evbus_log_error("consumer: malformed poll response");
        json_decref(root);
        return -1;
    }
    size_t i;
    json_t *item;
    int result = 0;
    json_array_foreach (events, i, item) {
        if (apply(c, json_object_get(item, "event"))) {
            json_decref(root);
            return 1;
        }
    }
    int64_t pos = json_integer_value(next);
    if (pos != c->acked) { /* on Kafka a restarted instance numbers anew */
        char ack[64];
        snprintf(ack, sizeof ack, "{\"position\":%lld}", (long long)pos);
        snprintf(url, sizeof url, "%s/api/subscriptions/%s/ack", c->base, c->name);
        rc = call(c, http, "POST", url, ack, 5000, &resp);
        if (rc == EVBUS_ERR_OK && resp.status == 200) {
            c->acked = pos;
        } else {
            evbus_log_kv(EVBUS_LOG_WARN, "consumer: ack failed (events will be redelivered)", NULL);
            result = -1;
        }
        evbus_http_resp_clear(&resp);
    }
    json_decref(root);
    return result;
}

static void *consumer_main(void *arg)
{
    evbus_consumer_t *c = arg;
    evbus_http_client_t *http = evbus_http_client_new(MAX_RESPONSE);
    if (!http)
        return NULL;
    evbus_http_client_set_abort(http, &c->stop);
    unsigned attempt = 0;
    int have_sub = 0;
    while (!c->stop) {
        if (!have_sub) {
            have_sub = ensure_subscription(c, http);
            if (have_sub)
                evbus_log_kv(EVBUS_LOG_INFO, "consumer: subscribed", "subscription", c->name, NULL);
        }
        int rc = have_sub ? poll_once(c, http) : -1;
        if (rc == 1)
            break;
        if (rc == -2)
            have_sub = 0;
        atomic_store(&c->healthy, rc == 0);
        if (rc == 0) {
            attempt = 0;
        } else if (nap(c, evbus_backoff_delay(&c->bo, attempt++))) {
            break;
        }
    }
    evbus_http_client_free(http);
    return NULL;
}

evbus_consumer_t *evbus_consumer_start(const evbus_consumer_opts_t *o)
{
    evbus_consumer_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->o = *o;
    c->base = strdup(o->eventbus_url);
    c->name = strdup(o->subscription);
    if (o->api_key) {
        size_t n = strlen(o->api_key) + 32;
        c->auth_header = malloc(n);
        if (c->auth_header)
            snprintf(c->auth_header, n, "Authorization: Bearer %s", o->api_key);
    }
    c->sub_def = json_pack("{s:s, s:s, s:s, s:s}", "name", o->subscription, "topic", o->topic,
                           "mode", "pull", "from", "earliest");
    if (c->sub_def && o->types) {
        json_t *types = json_array();
        for (const char *const *t = o->types; *t; t++)
            json_array_append_new(types, json_string(*t));
        json_object_set_new(c->sub_def, "types", types);
    }
    c->bo = (evbus_backoff_t){50, 2.0, 2000};
    if (c->o.max_batch == 0)
        c->o.max_batch = 100;
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (!c->base || !c->name || !c->sub_def ||
        pthread_create(&c->thread, NULL, consumer_main, c) != 0) {
        json_decref(c->sub_def);
        free(c->base);
        free(c->name);
        free(c->auth_header);
        free(c);
        return NULL;
    }
    return c;
}

int evbus_consumer_healthy(evbus_consumer_t *c)
{
    return atomic_load(&c->healthy);
}

void evbus_consumer_stop(evbus_consumer_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    json_decref(c->sub_def);
    free(c->base);
    free(c->name);
    free(c->auth_header);
    free(c);
}
