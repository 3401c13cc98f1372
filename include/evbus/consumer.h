/* Pull consumer: keeps a subscription on the eventbus, long-polls it, hands each event
 * to a callback and acknowledges after the callback succeeded (at-least-once; pair it
 * with the inbox for effectively-once). */
#ifndef EVBUS_CONSUMER_H
#define EVBUS_CONSUMER_H

#include "evbus/cloudevent.h"

typedef struct evbus_consumer evbus_consumer_t;

/* Returns EVBUS_ERR_OK when the event is applied (or was a duplicate); a retriable error
 * makes the consumer retry the same event after a backoff; a non-retriable one is logged
 * and the event skipped. Runs on the consumer thread. */
typedef evbus_err_t (*evbus_consume_fn)(const evbus_event_t *ev, void *ud);

typedef struct {
    const char *eventbus_url;
    const char *subscription; /* name, created idempotently at start */
    const char *topic;
    const char *const *types; /* NULL-terminated filter, or NULL for all types */
    const char *api_key;
    unsigned max_batch;
    unsigned wait_s;
    evbus_consume_fn fn;
    void *ud;
} evbus_consumer_opts_t;

evbus_consumer_t *evbus_consumer_start(const evbus_consumer_opts_t *opts);
/* 1 when the subscription exists and the last poll succeeded. */
int evbus_consumer_healthy(evbus_consumer_t *c);
/* Stops (interrupting a long-poll) and frees. NULL is a no-op. */
void evbus_consumer_stop(evbus_consumer_t *c);

#endif
