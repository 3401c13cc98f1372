/* HTTP client over libcurl: one handle per thread, keep-alive, bounded responses. */
#ifndef EVBUS_HTTP_CLIENT_H
#define EVBUS_HTTP_CLIENT_H

#include <stddef.h>

#include "evbus/err.h"

typedef struct evbus_http_client evbus_http_client_t;

typedef struct {
    long status; /* HTTP status, 0 if no response */
    char *body;  /* NUL-terminated, malloc'd, may be NULL; caller frees */
    size_t len;
    long retry_after_s; /* Retry-After in seconds, -1 if absent */
} evbus_http_resp_t;

/* Creates a client; max_response bounds the body read. Not thread-safe: one per thread. */
evbus_http_client_t *evbus_http_client_new(size_t max_response);
void evbus_http_client_free(evbus_http_client_t *c);
/* While *flag is non-zero, a request in progress is aborted (EVBUS_ERR_SHUTDOWN). The
 * flag is read from the requesting thread; set it from any thread. */
void evbus_http_client_set_abort(evbus_http_client_t *c, const volatile int *flag);

/* Sends a request. headers is a NULL-terminated list of "Name: value" lines (may be
 * NULL). Returns EVBUS_ERR_OK when a response arrived (any status), UNAVAILABLE when the
 * peer could not be reached, TIMEOUT, or TOOBIG. resp->body is freed by the caller
 * (evbus_http_resp_clear). */
evbus_err_t evbus_http_request(evbus_http_client_t *c, const char *method, const char *url,
                               const char *const *headers, const char *body, size_t body_len,
                               long timeout_ms, evbus_http_resp_t *resp);
void evbus_http_resp_clear(evbus_http_resp_t *resp);

#endif
