/* CloudEvents 1.0 structured-mode JSON envelope: parse, validate, build, serialize. */
#ifndef EVBUS_CLOUDEVENT_H
#define EVBUS_CLOUDEVENT_H

#include <jansson.h>
#include <stddef.h>

#include "evbus/err.h"

/* Bounds on attribute sizes; a longer value is refused as invalid. */
#define EVBUS_CE_MAX_ID 256
#define EVBUS_CE_MAX_TYPE 256
#define EVBUS_CE_MAX_SOURCE 1024
#define EVBUS_CE_MAX_SUBJECT 512
#define EVBUS_CE_MAX_CORRELATION 128

typedef struct evbus_event evbus_event_t;

/* Error detail from parsing: which attribute (may be "") and why. */
typedef struct {
    char field[64];
    char message[192];
} evbus_ce_error_t;

/* Parses one event from a JSON text of len bytes. On success returns EVBUS_ERR_OK and
 * *out (caller frees with evbus_event_free). On failure returns EVBUS_ERR_INVALID and
 * fills err. */
evbus_err_t evbus_event_parse(const char *buf, size_t len, evbus_event_t **out,
                              evbus_ce_error_t *err);
/* Validates a JSON object as an event. The event takes its own reference to obj. */
evbus_err_t evbus_event_from_json(json_t *obj, evbus_event_t **out, evbus_ce_error_t *err);

/* Builds a new event with a fresh UUIDv7 id, time = now, specversion 1.0 and
 * datacontenttype application/json. data is stolen. Returns NULL on bad arguments. */
evbus_event_t *evbus_event_new(const char *type, const char *source, const char *subject,
                               json_t *data);
/* Sets a string extension attribute (name: 1-20 of [a-z0-9]). Returns EVBUS_ERR_INVALID
 * for a bad name or value. */
evbus_err_t evbus_event_set_ext(evbus_event_t *ev, const char *name, const char *value);

void evbus_event_free(evbus_event_t *ev);

/* Accessors; strings are owned by the event and live as long as it. NULL if absent. */
const char *evbus_event_id(const evbus_event_t *ev);
const char *evbus_event_type(const evbus_event_t *ev);
const char *evbus_event_source(const evbus_event_t *ev);
const char *evbus_event_subject(const evbus_event_t *ev);
const char *evbus_event_time(const evbus_event_t *ev);
const char *evbus_event_ext(const evbus_event_t *ev, const char *name);
const char *evbus_event_correlation(const evbus_event_t *ev);
/* The data member (borrowed), or NULL. */
json_t *evbus_event_data(const evbus_event_t *ev);
/* The whole event object (borrowed). */
json_t *evbus_event_json(const evbus_event_t *ev);

/* Serializes to compact JSON; caller frees with free(). NULL on allocation failure. */
char *evbus_event_serialize(const evbus_event_t *ev);

#endif
