/* Internal interfaces of the eventbus daemon. */
#ifndef EB_EVENTBUS_H
#define EB_EVENTBUS_H

#include <stdint.h>

#include "evbus/cloudevent.h"
#include "evbus/http_server.h"
#include "evbus/outbox.h"
#include "evbus/store.h"

#define EB_MAX_TOPIC 249       /* Kafka's limit, so topics carry over to the Kafka broker */
#define EB_MAX_TOPIC_PREFIX 64 /* EVENTBUS_KAFKA_TOPIC_PREFIX */

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
/* Returns 1 if a subscription's type filter (a JSON array of strings, or NULL for all)
 * lets type through. */
int eb_type_wanted(json_t *types, const char *type);

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
/* prefix goes before every topic name in Kafka (several deployments on one cluster). */
eb_kafka_t *eb_kafka_new(const char *brokers, const char *prefix, const eb_routes_t *routes,
                         int partitions, int64_t retention_ms);
/* The evbus_relay_sink_t send function; ud is the eb_kafka_t. Relay thread. */
int eb_kafka_send(void *ud, const evbus_outbox_row_t *rows, unsigned n, int *outcome, char *err,
                  size_t errlen);
/* 0 while every broker is known to be down. Any thread. */
int eb_kafka_up(eb_kafka_t *k);
/* Makes a send in progress give up its waits (its events are sent again later). Any
 * thread; for shutdown. */
void eb_kafka_abort(eb_kafka_t *k);
void eb_kafka_free(eb_kafka_t *k);

/* ---- ssrf.c: where webhooks may go ---- */
struct sockaddr;
typedef struct eb_allow eb_allow_t;
/* Parses "CIDR,CIDR" (may be empty): addresses webhooks may reach although loopback,
 * private or link-local. NULL and a message on bad input. */
eb_allow_t *eb_allow_new(const char *spec, char *err, size_t errlen);
void eb_allow_free(eb_allow_t *a);
/* 1 when a webhook may connect to sa: a public address, or one the allow-list names. */
int eb_addr_permitted(const eb_allow_t *a, const struct sockaddr *sa);
/* 0 when url is http(s) without credentials and every address its host resolves to is
 * permitted; -1 and a message otherwise. */
int eb_url_check(const eb_allow_t *a, const char *url, char *err, size_t errlen);

/* ---- keys.c: API keys ---- */
typedef struct eb_keys eb_keys_t;
typedef struct eb_key eb_key_t;
typedef enum { EB_AUTH_OK, EB_AUTH_MISSING, EB_AUTH_BAD, EB_AUTH_UNAVAILABLE } eb_auth_t;
eb_keys_t *eb_keys_new(evbus_store_pool_t *pool);
void eb_keys_free(eb_keys_t *ks);
/* Checks "Bearer evb_..." against the key table (cached a few seconds). On EB_AUTH_OK
 * *key is held until eb_keys_put. */
eb_auth_t eb_keys_check(eb_keys_t *ks, const char *authorization, eb_key_t **key);
void eb_keys_put(eb_keys_t *ks, eb_key_t *key);
int eb_key_admin(const eb_key_t *k);
int eb_key_may_publish(const eb_key_t *k, const char *type, const char *source);
int eb_key_may_use(const eb_key_t *k, const char *subscription);
/* Stores a new key (patterns: JSON arrays or NULL) and writes the key, shown once, to
 * key_out and its id to id_out (17 bytes). 0, or -1. */
int eb_keys_create(evbus_store_t *db, const char *name, int admin, json_t *types, json_t *sources,
                   json_t *subs, char *key_out, size_t key_len, char *id_out);
json_t *eb_keys_list(evbus_store_t *db);
/* Rows revoked (0: none such, or already), or -1. */
int64_t eb_keys_revoke(evbus_store_t *db, const char *id);
json_t *eb_patterns(const char *csv);
struct eb_app;
/* The request's key (NULL with auth off): answers 401/503 and returns 0 when missing or
 * bad. Give *key back with eb_keys_put. */
int eb_authenticate(struct eb_app *app, evbus_req_t *req, eb_key_t **key);
/* A valid key that may use subscription (NULL: an admin key); answers 401/403/503 and
 * returns 0 otherwise. */
int eb_authorize(struct eb_app *app, evbus_req_t *req, const char *subscription);
void eb_keys_create_handler(evbus_req_t *req, void *app);
void eb_keys_list_handler(evbus_req_t *req, void *app);
void eb_keys_revoke_handler(evbus_req_t *req, void *app);

/* ---- push_api.c: push definitions ---- */
typedef struct {
    char url[2049];
    int64_t timeout_ms;
    unsigned concurrency;
    unsigned max_attempts;
    int64_t initial_ms, cap_ms;
    double multiplier;
    unsigned breaker_failures;
    int64_t breaker_cooldown_ms;
} eb_push_t;
/* Validates a "push" member (field errors appended to errors, named "push.<field>")
 * and returns it normalized with every default filled in, without the secret; the
 * secret given, or a new one, goes to secret. NULL on errors. */
json_t *eb_push_parse(json_t *in, const eb_allow_t *allow, json_t *errors, char *secret,
                      size_t secret_len);
/* A stored, normalized definition into p. -1 when it is not one. */
int eb_push_load(json_t *cfg, eb_push_t *p);

/* ---- kafka_subs.c: subscriptions served from Kafka consumer groups ---- */
typedef struct eb_ksubs eb_ksubs_t;
typedef struct eb_ksub eb_ksub_t;
typedef struct {
    const char *brokers;
    const char *prefix;     /* before every topic name in Kafka */
    eb_waiters_t *waiters;  /* woken when a member buffers events */
    int64_t idle_ms;        /* a member without polls for this long leaves the group */
    int session_timeout_ms; /* how long a dead member holds its partitions */
    size_t buffer_events;   /* per member: fetching pauses above this ... */
    size_t buffer_bytes;    /* ... or this many bytes buffered */
    int partitions;         /* for topics a subscription creates */
    int64_t retention_ms;
    void (*on_events)(void *ud); /* a member buffered events; member thread */
    void *ud;
} eb_ksubs_opts_t;
typedef struct {
    char name[65], topic[EB_MAX_TOPIC + 1];
    json_t *types; /* array or NULL (the member keeps its own reference) */
    int from_earliest;
    int64_t epoch;    /* ms; with the name, identifies the consumer group (a seek renews it) */
    int64_t start_at; /* ms: where "latest" starts a partition without a committed offset */
} eb_ksub_def_t;
typedef enum { EB_ACK_OK, EB_ACK_RANGE, EB_ACK_FOREIGN } eb_ack_t;

eb_ksubs_t *eb_ksubs_new(const eb_ksubs_opts_t *opts);
/* Leaves every group and frees; after the HTTP server is gone. */
void eb_ksubs_free(eb_ksubs_t *m);
/* This instance's member of the subscription's group, joining it first when join is set
 * (else NULL when there is none). Give it back with eb_ksubs_put. */
eb_ksub_t *eb_ksubs_get(eb_ksubs_t *m, const eb_ksub_def_t *def, int join);
void eb_ksubs_put(eb_ksubs_t *m, eb_ksub_t *s);
/* The subscription was deleted: leave its group. */
void eb_ksubs_drop(eb_ksubs_t *m, const char *name);
/* 1 once the member was dropped or replaced. */
int eb_ksub_closed(eb_ksubs_t *m, eb_ksub_t *s);
/* Appends up to max buffered events after position `after` (or the acknowledged
 * position, whichever is later) to out as {"position","partition","offset","event"};
 * *next is the last position examined. Returns 1 when anything was examined (events,
 * or entries the type filter skipped). */
int eb_ksub_fetch(eb_ksub_t *s, int64_t after, unsigned max, json_t *out, int64_t *next);
/* The member's acknowledged position. */
int64_t eb_ksub_acked(eb_ksub_t *s);
/* Acknowledges everything up to pos and commits the offsets. *acked: the position now. */
eb_ack_t eb_ksub_ack(eb_ksub_t *s, int64_t pos, int64_t *acked);
/* {"group","partitions","buffered","paused"} and the member's positions. */
json_t *eb_ksub_info(eb_ksub_t *s, int64_t *position, int64_t *head);

/* ---- the daemon ---- */
typedef struct {
    char *host, *db, *routes, *log_level, *log_format, *broker, *kafka_prefix, *push_allow, *auth;
    int64_t port, threads, max_body, max_batch, max_wait, max_group, retention_s, kafka_partitions,
        kafka_idle_s, kafka_session_ms, kafka_buffer, kafka_relay_batch, push_window;
} eb_config_t;

typedef struct eb_app {
    eb_config_t cfg;
    evbus_store_pool_t *pool;
    eb_writer_t *writer;
    eb_waiters_t *waiters;
    eb_routes_t *routes;
    const eb_broker_ops_t *broker;
    eb_listener_t *listener;
    eb_kafka_t *kafka;    /* NULL on the embedded broker */
    evbus_relay_t *relay; /* outbox -> Kafka */
    eb_ksubs_t *ksubs;    /* subscriptions as Kafka consumer groups */
    eb_allow_t *allow;    /* webhook addresses allowed although not public */
    eb_keys_t *keys;      /* API keys; NULL when EVENTBUS_AUTH=off */
    struct eb_pusher *pusher;
} eb_app_t;

/* ---- pusher.c: push delivery ---- */
typedef struct eb_pusher eb_pusher_t;
/* Starts the delivery thread for the push subscriptions in the database. */
eb_pusher_t *eb_pusher_start(eb_app_t *app);
/* New events may be waiting. Any thread. */
void eb_pusher_wake(eb_pusher_t *p);
/* Subscriptions, secrets, positions or dead letters changed through the API. */
void eb_pusher_changed(eb_pusher_t *p);
/* The delivery state of one subscription on this instance ({"breaker", "inflight",
 * "pending", "owner"}), or NULL when this instance does not push it. Any thread. */
json_t *eb_pusher_status(eb_pusher_t *p, const char *name);
/* {"subscriptions": n, "breakersOpen": [names]} for /health/ready. Any thread. */
json_t *eb_pusher_health(eb_pusher_t *p);
/* Stops the thread (requests in flight are abandoned; their events come again). */
void eb_pusher_stop(eb_pusher_t *p);

void eb_subs_seek(evbus_req_t *req, void *app);
void eb_subs_patch(evbus_req_t *req, void *app);
void eb_subs_rotate(evbus_req_t *req, void *app);
void eb_subs_enable(evbus_req_t *req, void *app);
void eb_dlq_list(evbus_req_t *req, void *app);
void eb_dlq_get(evbus_req_t *req, void *app);
void eb_dlq_delete(evbus_req_t *req, void *app);
void eb_dlq_redrive(evbus_req_t *req, void *app);

void eb_publish_handler(evbus_req_t *req, void *app);
void eb_subs_create(evbus_req_t *req, void *app);
void eb_subs_list(evbus_req_t *req, void *app);
void eb_subs_get(evbus_req_t *req, void *app);
void eb_subs_delete(evbus_req_t *req, void *app);
void eb_subs_poll(evbus_req_t *req, void *app);
void eb_subs_ack(evbus_req_t *req, void *app);

#endif
