/* Internal interfaces of the eventbus daemon. */
#ifndef EB_EVENTBUS_H
#define EB_EVENTBUS_H

#include <stdint.h>

#include "evbus/cloudevent.h"
#include "evbus/http_server.h"
#include "evbus/outbox.h"
#include "evbus/store.h"

#define EB_MAX_TOPIC 249 /* Kafka's limit, so topics carry over to the Kafka broker */

/* ---- routing.c: event type -> topic ---- */
typedef struct eb_routes eb_routes_t;
/* Parses "Type=TOPIC,Type2=TOPIC2" (may be empty). NULL and a message on bad input. */
eb_routes_t *eb_routes_new(const char *spec, char *err, size_t errlen);
void eb_routes_free(eb_routes_t *r);
/* Writes the topic for type into out (size > EB_MAX_TOPIC). Returns 0, or -1 when the
 * type yields no valid topic. */
int eb_route(const eb_routes_t *r, const char *type, char *out, size_t len);
/* Returns 1 if s is a valid topic name: 1..249 of [A-Za-z0-9._-]. */
int eb_topic_valid(const char *s);

/* ---- waiters.c: long-polls parked until events arrive or their deadline ---- */
typedef struct eb_waiters eb_waiters_t;
typedef struct eb_waiter {
    struct eb_waiter *prev, *next;
    evbus_req_t *req;
    char topic[EB_MAX_TOPIC + 1];
    int64_t deadline_us;
    int parked;
} eb_waiter_t;

eb_waiters_t *eb_waiters_new(void);
/* Current generation: changes whenever events are committed. */
uint64_t eb_waiters_gen(eb_waiters_t *w);
/* Suspends w->req and parks it, unless the generation moved past seen_gen (then returns
 * 0 and the caller queries again). Returns 1 when parked. Handler thread. */
int eb_waiters_park(eb_waiters_t *w, eb_waiter_t *waiter, uint64_t seen_gen);
/* Wakes every parked request on one of the topics (NULL: all). Any thread. */
void eb_waiters_notify(eb_waiters_t *w, const char *const *topics, size_t n);
/* Stops parking (later park calls return 0), resumes everything parked and stops the
 * timer thread. Idempotent. */
void eb_waiters_close(eb_waiters_t *w);
/* Closes if needed, then frees; call after the HTTP server is gone. */
void eb_waiters_free(eb_waiters_t *w);

/* ---- writer.c: one thread that group-commits publishes ---- */
typedef struct {
    char *id, *topic, *type, *source, *subject, *correlation, *body;
    int created; /* result: 1 new, 0 duplicate id */
    int64_t seq; /* result: position in the log */
} eb_item_t;

typedef struct eb_job {
    struct eb_job *next;
    eb_item_t *items;
    size_t n;
    int batch;      /* the request was a JSON array */
    evbus_err_t rc; /* result of the commit */
    int done;
    evbus_req_t *req; /* resumed when done */
} eb_job_t;

typedef struct eb_writer eb_writer_t;
typedef struct {
    const char *db_url;
    eb_waiters_t *waiters;
    unsigned max_group;
    int64_t retention_ms;        /* when idle, events older than this are deleted */
    int outbox;                  /* also append new events to evbus_outbox (Kafka relay) */
    void (*on_commit)(void *ud); /* after a commit that stored new events */
    void *ud;
} eb_writer_opts_t;
eb_writer_t *eb_writer_start(const eb_writer_opts_t *opts);
/* Suspends job->req and queues the job; the writer resumes the request after the commit
 * (or failure). Returns -1, without suspending, once the writer is stopping. */
int eb_writer_submit(eb_writer_t *w, eb_job_t *job);
int eb_writer_healthy(eb_writer_t *w);
/* Commits what is queued, then stops the thread; later submits are refused. */
void eb_writer_stop(eb_writer_t *w);
/* Stops if needed and frees; after the HTTP server is gone. */
void eb_writer_free(eb_writer_t *w);
void eb_job_free(void *job);

/* ---- broker: where subscriptions read events from (embedded log here) ---- */
typedef struct {
    const char *name;
    /* Appends up to max events of topic after position `after` (matching types, a JSON
     * array or NULL) as {"position","event"} objects to out; *next is the last position
     * examined (>= after). */
    evbus_err_t (*fetch)(evbus_store_t *st, const char *topic, json_t *types, int64_t after,
                         unsigned max, json_t *out, int64_t *next);
    /* Head of the log: the highest position, 0 if empty. */
    evbus_err_t (*head)(evbus_store_t *st, int64_t *head);
} eb_broker_ops_t;

extern const eb_broker_ops_t eb_broker_log;
extern const evbus_migration_t eb_migrations[];
extern const size_t eb_nmigrations;

/* ---- listener.c: wakes local long-polls on other processes' commits (PostgreSQL) ---- */
typedef struct eb_listener eb_listener_t;
/* Starts listening when the database supports notifications; NULL (and nothing to do)
 * otherwise. */
eb_listener_t *eb_listener_start(const char *db_url, eb_waiters_t *waiters);
void eb_listener_stop(eb_listener_t *l);

/* ---- broker_kafka.c: the relay sink to Apache Kafka ---- */
typedef struct eb_kafka eb_kafka_t;
eb_kafka_t *eb_kafka_new(const char *brokers, const eb_routes_t *routes, int partitions,
                         int64_t retention_ms);
/* The evbus_relay_sink_t send function; ud is the eb_kafka_t. Relay thread. */
int eb_kafka_send(void *ud, const evbus_outbox_row_t *rows, unsigned n, int *outcome, char *err,
                  size_t errlen);
/* 0 while every broker is known to be down. Any thread. */
int eb_kafka_up(eb_kafka_t *k);
/* Makes a send in progress give up its waits (its events are sent again later). Any
 * thread; for shutdown. */
void eb_kafka_abort(eb_kafka_t *k);
void eb_kafka_free(eb_kafka_t *k);

/* ---- the daemon ---- */
typedef struct {
    char *host, *db, *routes, *log_level, *log_format, *broker;
    int64_t port, threads, max_body, max_batch, max_wait, max_group, retention_s, kafka_partitions;
} eb_config_t;

typedef struct {
    eb_config_t cfg;
    evbus_store_pool_t *pool;
    eb_writer_t *writer;
    eb_waiters_t *waiters;
    eb_routes_t *routes;
    const eb_broker_ops_t *broker;
    eb_listener_t *listener;
    eb_kafka_t *kafka;    /* NULL on the embedded broker */
    evbus_relay_t *relay; /* outbox -> Kafka */
} eb_app_t;

void eb_publish_handler(evbus_req_t *req, void *app);
void eb_subs_create(evbus_req_t *req, void *app);
void eb_subs_list(evbus_req_t *req, void *app);
void eb_subs_get(evbus_req_t *req, void *app);
void eb_subs_delete(evbus_req_t *req, void *app);
void eb_subs_poll(evbus_req_t *req, void *app);
void eb_subs_ack(evbus_req_t *req, void *app);

#endif
