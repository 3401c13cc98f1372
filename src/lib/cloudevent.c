/* CloudEvents 1.0 JSON format: required-attribute checks, type checks per the spec's
 * type system, bounded sizes, and string extensions (correlationid, traceparent). */
#include "evbus/cloudevent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/id.h"
#include "evbus/util.h"

struct evbus_event {
    json_t *root;
};

static evbus_err_t fail(evbus_ce_error_t *err, const char *field, const char *msg)
{
    if (err) {
        evbus_strlcpy(err->field, field, sizeof err->field);
        evbus_strlcpy(err->message, msg, sizeof err->message);
    }
    return EVBUS_ERR_INVALID;
}

/* Attribute names: lowercase a-z and 0-9, 1..20 characters (spec §3.1.1). */
static int attr_name_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 20)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9')))
            return 0;
    return 1;
}

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* A required or optional string attribute: non-empty, bounded, no control chars. */
static evbus_err_t check_str(json_t *root, const char *name, int required, size_t max,
                             evbus_ce_error_t *err)
{
    json_t *v = json_object_get(root, name);
    char msg[128];
    if (!v) {
        if (!required)
            return EVBUS_ERR_OK;
        snprintf(msg, sizeof msg, "required attribute '%s' is missing", name);
        return fail(err, name, msg);
    }
    if (!json_is_string(v)) {
        snprintf(msg, sizeof msg, "attribute '%s' must be a string", name);
        return fail(err, name, msg);
    }
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (len == 0 || len > max || strlen(s) != len || has_ctl(s)) {
        snprintf(msg, sizeof msg,
                 "attribute '%s' must be 1..%zu characters without control characters", name, max);
        return fail(err, name, msg);
    }
    return EVBUS_ERR_OK;
}

static evbus_err_t validate(json_t *root, evbus_ce_error_t *err)
{
    if (!json_is_object(root))
        return fail(err, "", "an event must be a JSON object");
    json_t *sv = json_object_get(root, "specversion");
    if (!sv)
        return fail(err, "specversion", "required attribute 'specversion' is missing");
    if (!json_is_string(sv) || strcmp(json_string_value(sv), "1.0") != 0)
        return fail(err, "specversion", "attribute 'specversion' must be \"1.0\"");
    evbus_err_t rc;
    if ((rc = check_str(root, "id", 1, EVBUS_CE_MAX_ID, err)) ||
        (rc = check_str(root, "source", 1, EVBUS_CE_MAX_SOURCE, err)) ||
        (rc = check_str(root, "type", 1, EVBUS_CE_MAX_TYPE, err)) ||
        (rc = check_str(root, "subject", 0, EVBUS_CE_MAX_SUBJECT, err)) ||
        (rc = check_str(root, "datacontenttype", 0, 256, err)) ||
        (rc = check_str(root, "dataschema", 0, 1024, err)) ||
        (rc = check_str(root, "time", 0, 64, err)) ||
        (rc = check_str(root, "correlationid", 0, EVBUS_CE_MAX_CORRELATION, err)) ||
        (rc = check_str(root, "traceparent", 0, 55, err)))
        return rc;
    json_t *t = json_object_get(root, "time");
    if (t && !evbus_is_rfc3339(json_string_value(t)))
        return fail(err, "time", "attribute 'time' must be an RFC 3339 timestamp");
    json_t *tp = json_object_get(root, "traceparent");
    if (tp && !evbus_traceparent_valid(json_string_value(tp)))
        return fail(err, "traceparent", "attribute 'traceparent' is not a W3C traceparent");
    json_t *cid = json_object_get(root, "correlationid");
    if (cid && !evbus_is_token(json_string_value(cid), EVBUS_CE_MAX_CORRELATION))
        return fail(err, "correlationid",
                    "attribute 'correlationid' must be 1..128 of [A-Za-z0-9._:-]");
    json_t *b64 = json_object_get(root, "data_base64");
    if (b64) {
        if (json_object_get(root, "data"))
            return fail(err, "data_base64", "'data' and 'data_base64' are mutually exclusive");
        if (!json_is_string(b64))
            return fail(err, "data_base64", "'data_base64' must be a string");
    }
    const char *key;
    json_t *val;
    json_object_foreach (root, key, val) {
        if (strcmp(key, "data") == 0 || strcmp(key, "data_base64") == 0)
            continue;
        if (!attr_name_ok(key)) {
            char msg[160];
            snprintf(msg, sizeof msg, "attribute name '%.60s' must be 1..20 of [a-z0-9]", key);
            return fail(err, key, msg);
        }
        if (!(json_is_string(val) || json_is_integer(val) || json_is_boolean(val))) {
            char msg[160];
            snprintf(msg, sizeof msg, "attribute '%.60s' must be a string, integer or boolean",
                     key);
            return fail(err, key, msg);
        }
    }
    return EVBUS_ERR_OK;
}

evbus_err_t evbus_event_from_json(json_t *obj, evbus_event_t **out, evbus_ce_error_t *err)
{
    evbus_err_t rc = validate(obj, err);
    if (rc)
        return rc;
    evbus_event_t *ev = calloc(1, sizeof *ev);
    if (!ev)
        return EVBUS_ERR_NOMEM;
    ev->root = json_incref(obj);
    *out = ev;
    return EVBUS_ERR_OK;
}

evbus_err_t evbus_event_parse(const char *buf, size_t len, evbus_event_t **out,
                              evbus_ce_error_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char msg[192];
        snprintf(msg, sizeof msg, "malformed JSON at line %d column %d: %.100s", jerr.line,
                 jerr.column, jerr.text);
        return fail(err, "", msg);
    }
    evbus_err_t rc = evbus_event_from_json(root, out, err);
    json_decref(root);
    return rc;
}

evbus_event_t *evbus_event_new(const char *type, const char *source, const char *subject,
                               json_t *data)
{
    char id[EVBUS_UUID_STRLEN], ts[40];
    evbus_uuid7(id);
    evbus_fmt_rfc3339(evbus_now_ms(), ts, sizeof ts);
    json_t *root = json_object();
    if (!root) {
        json_decref(data);
        return NULL;
    }
    json_object_set_new(root, "specversion", json_string("1.0"));
    json_object_set_new(root, "id", json_string(id));
    json_object_set_new(root, "source", json_string(source));
    json_object_set_new(root, "type", json_string(type));
    if (subject)
        json_object_set_new(root, "subject", json_string(subject));
    json_object_set_new(root, "time", json_string(ts));
    json_object_set_new(root, "datacontenttype", json_string("application/json"));
    if (data)
        json_object_set_new(root, "data", data);
    evbus_event_t *ev = NULL;
    if (evbus_event_from_json(root, &ev, NULL) != EVBUS_ERR_OK)
        ev = NULL;
    json_decref(root);
    return ev;
}

evbus_err_t evbus_event_set_ext(evbus_event_t *ev, const char *name, const char *value)
{
    if (!attr_name_ok(name) || !value || strcmp(name, "data") == 0 ||
        strcmp(name, "specversion") == 0)
        return EVBUS_ERR_INVALID;
    json_t *old = json_incref(json_object_get(ev->root, name));
    json_object_set_new(ev->root, name, json_string(value));
    if (validate(ev->root, NULL) != EVBUS_ERR_OK) {
        if (old)
            json_object_set(ev->root, name, old);
        else
            json_object_del(ev->root, name);
        json_decref(old);
        return EVBUS_ERR_INVALID;
    }
    json_decref(old);
    return EVBUS_ERR_OK;
}

void evbus_event_free(evbus_event_t *ev)
{
    if (!ev)
        return;
    json_decref(ev->root);
    free(ev);
}

static const char *str(const evbus_event_t *ev, const char *name)
{
    return json_string_value(json_object_get(ev->root, name));
}

const char *evbus_event_id(const evbus_event_t *ev)
{
    return str(ev, "id");
}
const char *evbus_event_type(const evbus_event_t *ev)
{
    return str(ev, "type");
}
const char *evbus_event_source(const evbus_event_t *ev)
{
    return str(ev, "source");
}
const char *evbus_event_subject(const evbus_event_t *ev)
{
    return str(ev, "subject");
}
const char *evbus_event_time(const evbus_event_t *ev)
{
    return str(ev, "time");
}
const char *evbus_event_ext(const evbus_event_t *ev, const char *name)
{
    return str(ev, name);
}
const char *evbus_event_correlation(const evbus_event_t *ev)
{
    return str(ev, "correlationid");
}
json_t *evbus_event_data(const evbus_event_t *ev)
{
    return json_object_get(ev->root, "data");
}
json_t *evbus_event_json(const evbus_event_t *ev)
{
    return ev->root;
}

char *evbus_event_serialize(const evbus_event_t *ev)
{
    return json_dumps(ev->root, JSON_COMPACT);
}
