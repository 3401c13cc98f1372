/* Local transactional outbox and its relay to the eventbus.
 *
 * A service appends events to the outbox in the same transaction as its business
 * change; the relay thread forwards pending rows, in order, to the eventbus publish
 * API and marks them published only after a 2xx. Nothing is dropped: unreachable
 * eventbus or 5xx means retry with backoff; a row the eventbus refuses as invalid is
 * parked (status 'rejected') and counted, never deleted. */
#ifndef EVBUS_OUTBOX_H
#define EVBUS_OUTBOX_H

#include <stdint.h>

#include "evbus/cloudevent.h"
#include "evbus/store.h"

/* Creates the outbox table (as migration component "outbox"). */
evbus_err_t evbus_outbox_migrate(evbus_store_t *st);
/* Appends ev inside the caller's open transaction. */
evbus_err_t evbus_outbox_append(evbus_store_t *st, const evbus_event_t *ev);
/* Same, from an event already serialized (payload) and its attributes; key and
 * correlation may be NULL. EVBUS_ERR_CONFLICT if the id is already in the outbox. */
evbus_err_t evbus_outbox_append_raw(evbus_store_t *st, const char *id, const char *type,
                                    const char *correlation, const char *key, const char *payload);

typedef struct evbus_relay evbus_relay_t;

/* One claimed outbox row, as a sink sees it. */
typedef struct {
    int64_t seq;
    const char *payload; /* the event, CloudEvents JSON */
    const char *type;
    const char *key;    /* ordering key (the event's subject), may be NULL */
    int64_t created_at; /* when the row was appended, ms since the epoch */
} evbus_outbox_row_t;

enum { EVBUS_RELAY_SENT = 0, EVBUS_RELAY_RETRY = 1, EVBUS_RELAY_REFUSED = 2 };

/* Where a relay sends rows. send() delivers rows (in order) and sets outcome[i] to
 * EVBUS_RELAY_SENT once row i is durably accepted, EVBUS_RELAY_RETRY to send it again
 * later (always with the same event id), or EVBUS_RELAY_REFUSED when the destination
 * refuses it as invalid; err describes a failure. Returns 1 if the destination was
 * reachable. Called on the relay thread only. */
typedef struct {
    const char *name;
    int (*send)(void *ud, const evbus_outbox_row_t *rows, unsigned n, int *outcome, char *err,
                size_t errlen);
    void *ud;
} evbus_relay_sink_t;

typedef struct {
    const char *store_url;    /* the service's database (the relay opens its own connection) */
    const char *eventbus_url; /* e.g. http://127.0.0.1:5020, for the default sink */
    const evbus_relay_sink_t *sink; /* NULL: publish to eventbus_url over HTTP */
    const char *api_key;            /* sent as Bearer token when not NULL */
    unsigned batch;                 /* events per publish request */
    int64_t backoff_initial_ms, backoff_cap_ms;
    long timeout_ms;
    int64_t retention_ms; /* published rows older than this are deleted; 0 keeps them */
} evbus_relay_opts_t;

/* Starts the relay thread. NULL on failure. */
evbus_relay_t *evbus_relay_start(const evbus_relay_opts_t *opts);
/* Wakes the relay: call after committing a transaction that appended events. Any thread. */
void evbus_relay_wake(evbus_relay_t *r);
/* Counts the rows not yet published (pending or in flight) and the rejected ones, on
 * the caller's connection. */
evbus_err_t evbus_outbox_backlog(evbus_store_t *st, int64_t *pending, int64_t *rejected);
/* 1 if the relay's last attempt reached its destination. Any thread. */
int evbus_relay_reachable(evbus_relay_t *r);
/* Stops the thread and frees; a request in flight is aborted and its rows stay pending
 * (sent again, as duplicates the eventbus ignores, at the next start). NULL is a no-op. */
void evbus_relay_stop(evbus_relay_t *r);

#endif
