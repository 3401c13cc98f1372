/* POST /api/events/publish: validate one CloudEvent or a batch, route each to a topic,
 * hand the whole request to the group-commit writer, answer after the durable commit.
 * A batch is all or nothing: one invalid event refuses the batch and stores nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"
#include "evbus/log.h"

static const char *const publish_types[] = {"application/json", "application/cloudevents+json",
                                            "application/cloudevents-batch+json", NULL};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Fills it from a validated event. Returns 0, or -1 (with a message) if it has no route. */
static int make_item(eb_app_t *app, evbus_req_t *req, json_t *obj, eb_item_t *it, char *err,
                     size_t errlen)
{
    evbus_event_t *ev = NULL;
    evbus_ce_error_t cerr;
    if (evbus_event_from_json(obj, &ev, &cerr) != EVBUS_ERR_OK) {
        snprintf(err, errlen, "%s", cerr.message);
        return -1;
    }
    char topic[EB_MAX_TOPIC + 1];
    if (eb_route(app->routes, evbus_event_type(ev), topic, sizeof topic) != 0) {
        snprintf(err, errlen, "type '%.100s' maps to no valid topic; add a route",
                 evbus_event_type(ev));
        evbus_event_free(ev);
        return -1;
    }
    /* carry the request's correlation id in the event when the producer set none */
    if (!evbus_event_correlation(ev))
        evbus_event_set_ext(ev, "correlationid", evbus_req_correlation(req));
    it->id = dup_or_null(evbus_event_id(ev));
    it->topic = strdup(topic);
    it->type = dup_or_null(evbus_event_type(ev));
    it->source = dup_or_null(evbus_event_source(ev));
    it->subject = dup_or_null(evbus_event_subject(ev));
    it->correlation = dup_or_null(evbus_event_correlation(ev));
    it->body = evbus_event_serialize(ev);
    evbus_event_free(ev);
    if (!it->id || !it->topic || !it->type || !it->source || !it->body) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static json_t *item_json(const eb_item_t *it)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "id", it->id, "topic", it->topic, "position",
                     (json_int_t)it->seq, "status", it->created ? "created" : "duplicate");
}

static void answer(evbus_req_t *req, eb_job_t *job, int batch)
{
    if (job->rc != EVBUS_ERR_OK) {
        evbus_req_unavailable(req, "the event could not be stored durably; nothing was accepted");
        return;
    }
    size_t created = 0;
    for (size_t i = 0; i < job->n; i++)
        created += job->items[i].created;
    unsigned status = created ? 201 : 200;
    if (!batch) {
        evbus_req_reply_json(req, status, item_json(&job->items[0]));
        return;
    }
    json_t *results = json_array();
    for (size_t i = 0; i < job->n; i++)
        json_array_append_new(results, item_json(&job->items[i]));
    evbus_req_reply_json(req, status,
                         json_pack("{s:I, s:I, s:I, s:o}", "accepted", (json_int_t)job->n,
                                   "created", (json_int_t)created, "duplicates",
                                   (json_int_t)(job->n - created), "results", results));
}

void eb_publish_handler(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    eb_job_t *job = evbus_req_state(req);
    if (job) {
        answer(req, job, job->batch);
        return;
    }
    if (evbus_http_stopping(req)) {
        evbus_req_add_header(req, "Retry-After", "1");
        evbus_req_problem(req, 503, "shutting-down", "Service Unavailable",
                          "the eventbus is shutting down", NULL);
        return;
    }
    eb_key_t *key = NULL;
    if (!eb_authenticate(app, req, &key))
        return;
    if (!evbus_req_require_type(req, publish_types)) {
        eb_keys_put(app->keys, key);
        return;
    }
    json_t *root = evbus_req_json(req);
    if (!root) {
        eb_keys_put(app->keys, key);
        return;
    }
    int batch = json_is_array(root);
    size_t n = batch ? json_array_size(root) : 1;
    if (batch && n == 0) {
        evbus_req_problem(req, 400, "empty-batch", "Empty Batch", "the batch holds no events",
                          NULL);
        goto out;
    }
    if (n > (size_t)app->cfg.max_batch) {
        char detail[128];
        snprintf(detail, sizeof detail, "a batch may hold at most %lld events, this one has %zu",
                 (long long)app->cfg.max_batch, n);
        evbus_req_problem(req, 413, "batch-too-large", "Batch Too Large", detail, NULL);
        goto out;
    }
    job = calloc(1, sizeof *job);
    if (!job || !(job->items = calloc(n, sizeof *job->items))) {
        free(job);
        evbus_req_problem(req, 503, "no-memory", "Service Unavailable", "out of memory", NULL);
        goto out;
    }
    job->n = n;
    job->batch = batch;
    job->req = req;
    evbus_req_set_state(req, job, eb_job_free);
    for (size_t i = 0; i < n; i++) {
        char err[256];
        if (make_item(app, req, batch ? json_array_get(root, i) : root, &job->items[i], err,
                      sizeof err) != 0) {
            char field[32] = "";
            if (batch)
                snprintf(field, sizeof field, "[%zu]", i);
            json_t *errors = json_pack("[{s:s, s:s}]", "field", field, "message", err);
            char detail[320];
            snprintf(detail, sizeof detail, "%s%s%s", field, *field ? ": " : "", err);
            evbus_req_problem(req, 400, "invalid-event", "Invalid CloudEvent", detail, errors);
            goto out;
        }
        /* the whole batch is refused when one event is outside the key's scope */
        if (key && !eb_key_may_publish(key, job->items[i].type, job->items[i].source)) {
            char detail[600];
            snprintf(detail, sizeof detail,
                     "this key may not publish type '%.200s' from source '%.200s'",
                     job->items[i].type, job->items[i].source);
            evbus_req_problem(req, 403, "forbidden", "Forbidden", detail, NULL);
            goto out;
        }
    }
    if (eb_writer_submit(app->writer, job) != 0) { /* resumes req after the commit */
        evbus_req_add_header(req, "Retry-After", "1");
        evbus_req_problem(req, 503, "shutting-down", "Service Unavailable",
                          "the eventbus is shutting down", NULL);
    }
out:
    eb_keys_put(app->keys, key);
    json_decref(root);
}
