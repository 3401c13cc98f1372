/* HTTP server over libmicrohttpd: router, bounded bodies, problem+json errors,
 * correlation ids, and suspend/resume for long-polls and group commit. */
#ifndef EVBUS_HTTP_SERVER_H
#define EVBUS_HTTP_SERVER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "evbus/err.h"

typedef struct evbus_http_server evbus_http_server_t;
typedef struct evbus_req evbus_req_t;

/* A handler answers with one of the evbus_req_reply_* calls, or calls
 * evbus_req_suspend() and returns; after evbus_req_resume() (any thread) the same
 * handler is called again with the same request. Runs on a server thread. */
typedef void (*evbus_handler_fn)(evbus_req_t *req, void *ud);

typedef struct {
    const char *host; /* bind address, e.g. "127.0.0.1" */
    int port;         /* 0 picks a free port */
    unsigned threads;
    size_t max_body;         /* bytes; larger bodies get 413 */
    size_t max_header_bytes; /* per-connection memory for the request head */
    unsigned max_connections;
    unsigned conn_timeout_s;
} evbus_http_opts_t;

evbus_http_server_t *evbus_http_server_new(const evbus_http_opts_t *opts);
/* Adds a route. pattern segments may be "{name}" parameters. Before start only. */
evbus_err_t evbus_http_route(evbus_http_server_t *s, const char *method, const char *pattern,
                             evbus_handler_fn fn, void *ud);
/* Starts listening; returns the bound port, or -1. */
int evbus_http_server_start(evbus_http_server_t *s);
/* Stops listening and frees everything. All suspended requests must have been resumed
 * and answered (evbus_http_server_quiesce first). NULL is a no-op. */
void evbus_http_server_free(evbus_http_server_t *s);
/* Marks the server as stopping: handlers see evbus_http_stopping() true. */
void evbus_http_server_quiesce(evbus_http_server_t *s);
int evbus_http_stopping(const evbus_req_t *req);

/* Request accessors. Strings are owned by the request. */
const char *evbus_req_method(const evbus_req_t *req);
const char *evbus_req_path(const evbus_req_t *req);
const char *evbus_req_param(const evbus_req_t *req, const char *name);
const char *evbus_req_query(const evbus_req_t *req, const char *key);
const char *evbus_req_header(const evbus_req_t *req, const char *name);
const char *evbus_req_body(const evbus_req_t *req, size_t *len);
/* The peer's address as text (IPv4 or IPv6) into out. 0, or -1. */
int evbus_req_client(const evbus_req_t *req, char *out, size_t len);
const char *evbus_req_correlation(const evbus_req_t *req);
const char *evbus_req_traceparent(const evbus_req_t *req);

/* Returns 1 if Content-Type's media type is one of the NULL-terminated list;
 * otherwise answers 415 and returns 0. */
int evbus_req_require_type(evbus_req_t *req, const char *const *types);
/* Parses the body as JSON; on failure answers 400 and returns NULL. Caller decrefs. */
json_t *evbus_req_json(evbus_req_t *req);

/* Adds a response header (copied). */
void evbus_req_add_header(evbus_req_t *req, const char *name, const char *value);
/* Answers with a JSON body; body is stolen (may be NULL for no body). */
void evbus_req_reply_json(evbus_req_t *req, unsigned status, json_t *body);
/* Answers with raw bytes of a given content type (copied). */
void evbus_req_reply_raw(evbus_req_t *req, unsigned status, const char *ctype, const char *body,
                         size_t len);
/* Answers RFC 9457 application/problem+json. slug names the problem type
 * ("urn:evbus:problem:<slug>"); errors (stolen, may be NULL) is a list of
 * {field, message} objects. */
void evbus_req_problem(evbus_req_t *req, unsigned status, const char *slug, const char *title,
                       const char *detail, json_t *errors);

/* 503 storage-unavailable with Retry-After: 1: nothing was stored, try again. */
void evbus_req_unavailable(evbus_req_t *req, const char *detail);

/* Suspends the request; the handler must return right after. */
void evbus_req_suspend(evbus_req_t *req);
/* Resumes a suspended request; any thread, exactly once per suspend. */
void evbus_req_resume(evbus_req_t *req);
/* Per-request state kept across suspend/resume; freed with free_fn when the request
 * ends. */
void evbus_req_set_state(evbus_req_t *req, void *state, void (*free_fn)(void *));
void *evbus_req_state(const evbus_req_t *req);

#endif
