/* Kafka relay sink: claimed outbox rows -> Kafka topics, through librdkafka's
 * idempotent producer (acks=all). Each event is one message in CloudEvents structured
 * mode (value = the event's JSON, content-type application/cloudevents+json), keyed by
 * the event's subject so a key stays on one partition, in order. A row counts as sent
 * only on its successful delivery report; anything else (timeout, broker down, purge)
 * sends the same event again later. Topics are created on first use with the
 * configured partitions and retention. */
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"
#include "evbus/log.h"
#include "kafka.h"
#include "evbus/outbox.h"
#include "evbus/util.h"

#define MAX_KNOWN_TOPICS 1024
#define ADMIN_TIMEOUT_MS 5000
#define DELIVERY_TIMEOUT_MS 10000

struct eb_kafka {
    rd_kafka_t *rk;
    char *brokers;
    char prefix[EB_MAX_TOPIC_PREFIX + 1]; /* before every topic name in Kafka */
    const eb_routes_t *routes;
    int partitions;
    int64_t retention_ms;
    char *known[MAX_KNOWN_TOPICS]; /* topics created or seen; relay thread only */
    size_t nknown;
    atomic_int up;       /* 0 while every broker is down */
    atomic_int stopping; /* set by eb_kafka_abort: waits end early */
};

void eb_kafka_abort(eb_kafka_t *k)
{
    if (k)
        atomic_store(&k->stopping, 1);
}

/* Polls q in short steps until an event, the timeout, or *stop. */
static rd_kafka_event_t *poll_queue(const atomic_int *stop, rd_kafka_queue_t *q, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms && !atomic_load(stop); waited += 100) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
        if (ev)
            return ev;
    }
    return NULL;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    int *outcome = m->_private;
    if (outcome)
        *outcome = m->err ? EVBUS_RELAY_RETRY : EVBUS_RELAY_SENT;
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    eb_kafka_t *k = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        atomic_store(&k->up, 0);
    evbus_log_kv(EVBUS_LOG_WARN, "kafka: client error", "detail", reason, NULL);
}

void eb_kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    evbus_log_level_t lvl = level <= 3   ? EVBUS_LOG_ERROR
                            : level <= 5 ? EVBUS_LOG_WARN
                                         : EVBUS_LOG_DEBUG;
    evbus_log_kv(lvl, "kafka: client log", "facility", fac, "detail", buf, NULL);
}

static rd_kafka_t *new_producer(eb_kafka_t *k)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", DELIVERY_TIMEOUT_MS);
    const char *const settings[][2] = {
        {"bootstrap.servers", k->brokers},
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "2"},
        {"message.timeout.ms", timeout},
        {"reconnect.backoff.ms", "100"},
        {"reconnect.backoff.max.ms", "2000"},
        {"client.id", "evbus-eventbus"},
    };
    if (eb_kafka_conf_set(conf, settings, sizeof settings / sizeof settings[0]) != 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, eb_kafka_on_log);
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        evbus_log_error("kafka: cannot create the producer: %s", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

eb_kafka_t *eb_kafka_new(const char *brokers, const char *prefix, const eb_routes_t *routes,
                         int partitions, int64_t retention_ms)
{
    eb_kafka_t *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->brokers = strdup(brokers);
    evbus_strlcpy(k->prefix, prefix, sizeof k->prefix);
    k->routes = routes;
    k->partitions = partitions;
    k->retention_ms = retention_ms;
    atomic_store(&k->up, 1);
    if (!k->brokers || !(k->rk = new_producer(k))) {
        free(k->brokers);
        free(k);
        return NULL;
    }
    return k;
}

void eb_kafka_free(eb_kafka_t *k)
{
    if (!k)
        return;
    rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(k->rk, 1000);
    rd_kafka_destroy(k->rk);
    for (size_t i = 0; i < k->nknown; i++)
        free(k->known[i]);
    free(k->brokers);
    free(k);
}

int eb_kafka_up(eb_kafka_t *k)
{
    return atomic_load(&k->up);
}

static int known(eb_kafka_t *k, const char *topic)
{
    for (size_t i = 0; i < k->nknown; i++)
        if (strcmp(k->known[i], topic) == 0)
            return 1;
    return 0;
}

int eb_kafka_conf_set(rd_kafka_conf_t *conf, const char *const (*kv)[2], size_t n)
{
    char err[512];
    for (size_t i = 0; i < n; i++)
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            evbus_log_error("kafka: %s", err);
            return -1;
        }
    return 0;
}

int eb_kafka_create_topic(rd_kafka_t *rk, const char *topic, int partitions, int64_t retention_ms,
                          const atomic_int *stop, char *err, size_t errlen)
{
    char retention[24];
    snprintf(retention, sizeof retention, "%lld", (long long)retention_ms);
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, err, errlen);
    if (!nt)
        return -1;
    rd_kafka_NewTopic_set_config(nt, "retention.ms", retention);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, ADMIN_TIMEOUT_MS, NULL, 0);
    rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
    rd_kafka_event_t *ev = poll_queue(stop, q, ADMIN_TIMEOUT_MS + 1000);
    int rc = -1;
    if (!ev) {
        snprintf(err, errlen, "creating topic %s timed out", topic);
    } else if (rd_kafka_event_error(ev)) {
        snprintf(err, errlen, "creating topic %s: %s", topic, rd_kafka_event_error_string(ev));
    } else {
        size_t n = 0;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        rd_kafka_resp_err_t e =
            n ? rd_kafka_topic_result_error(res[0]) : RD_KAFKA_RESP_ERR_NO_ERROR;
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            rc = 0;
        else
            snprintf(err, errlen, "creating topic %s: %s", topic, rd_kafka_err2str(e));
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    rd_kafka_NewTopic_destroy(nt);
    if (rc == 0) {
        char p[16];
        snprintf(p, sizeof p, "%d", partitions);
        evbus_log_kv(EVBUS_LOG_INFO, "kafka: topic ready", "topic", topic, "partitions", p, NULL);
    }
    return rc;
}

/* Creates topic unless this producer created or saw it already. */
static int ensure_topic(eb_kafka_t *k, const char *topic, char *err, size_t errlen)
{
    if (known(k, topic))
        return 0;
    if (eb_kafka_create_topic(k->rk, topic, k->partitions, k->retention_ms, &k->stopping, err,
                              errlen) != 0)
        return -1;
    if (k->nknown < MAX_KNOWN_TOPICS && (k->known[k->nknown] = strdup(topic)))
        k->nknown++;
    return 0;
}

int eb_kafka_send(void *ud, const evbus_outbox_row_t *rows, unsigned n, int *outcome, char *err,
                  size_t errlen)
{
    eb_kafka_t *k = ud;
    unsigned queued = 0;
    if (rd_kafka_fatal_error(k->rk, NULL, 0)) {
        /* an idempotent producer that hit a fatal error must be replaced */
        evbus_log_warn("kafka: producer failed fatally, starting a new one");
        rd_kafka_destroy(k->rk);
        k->rk = new_producer(k);
    }
    for (unsigned i = 0; i < n; i++) {
        outcome[i] = EVBUS_RELAY_RETRY;
        char route[EB_MAX_TOPIC + 1], topic[EB_MAX_TOPIC_PREFIX + EB_MAX_TOPIC + 1];
        if (!k->rk || eb_route(k->routes, rows[i].type, route, sizeof route) != 0) {
            snprintf(err, errlen, "no producer or no topic for type %.100s", rows[i].type);
            continue;
        }
        snprintf(topic, sizeof topic, "%s%s", k->prefix, route);
        if (ensure_topic(k, topic, err, errlen) != 0)
            continue;
        const char *ctype = "application/cloudevents+json; charset=UTF-8";
        rd_kafka_resp_err_t e = rd_kafka_producev(
            k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(rows[i].key, rows[i].key ? strlen(rows[i].key) : 0),
            RD_KAFKA_V_VALUE((void *)rows[i].payload, strlen(rows[i].payload)),
            /* the time the eventbus accepted the event: what a seek by time means */
            RD_KAFKA_V_TIMESTAMP(rows[i].created_at), RD_KAFKA_V_HEADER("content-type", ctype, -1),
            RD_KAFKA_V_OPAQUE(&outcome[i]), RD_KAFKA_V_END);
        if (e) {
            snprintf(err, errlen, "produce: %s", rd_kafka_err2str(e));
            continue;
        }
        queued++;
    }
    for (int waited = 0; queued && rd_kafka_outq_len(k->rk) > 0 &&
                         waited < DELIVERY_TIMEOUT_MS + 2000 && !atomic_load(&k->stopping);
         waited += 100)
        rd_kafka_flush(k->rk, 100);
    if (queued && rd_kafka_outq_len(k->rk) > 0) {
        /* whatever is still queued or in flight may or may not arrive: take it back (its
         * delivery reports run now, as failures) and send it again later, same ids */
        rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(k->rk, 1000);
    }
    unsigned sent = 0;
    for (unsigned i = 0; i < n; i++)
        sent += outcome[i] == EVBUS_RELAY_SENT;
    if (sent < n && !*err)
        snprintf(err, errlen, "%u of %u events not confirmed by Kafka", n - sent, n);
    if (sent)
        atomic_store(&k->up, 1);
    return sent > 0 || n == 0;
}
