/* HTTP server on libmicrohttpd (epoll thread pool). Each request gets an evbus_req_t:
 * the body is gathered under a hard cap, the route is matched, the correlation id and
 * traceparent are taken from the request or made here, and the handler's answer is
 * queued on the access call after the upload completes (queueing on the first call
 * would make libmicrohttpd close the connection after each response). */
#include "evbus/http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "evbus/cloudevent.h"
#include "evbus/id.h"
#include "evbus/log.h"
#include "evbus/util.h"
#include "router.h"

#define MAX_RESP_HEADERS 8
#define DISCARD_FACTOR 8 /* bodies up to this many times the limit are drained, not cut */

struct evbus_http_server {
    evbus_http_opts_t opts;
    evbus_router_t *router;
    struct MHD_Daemon *daemon;
    atomic_int stopping;
};

struct evbus_req {
    evbus_http_server_t *srv;
    struct MHD_Connection *conn;
    const char *method, *path;
    char *body;
    size_t body_len, body_cap, discarded;
    int too_big, routed, route_status, suspended, queued;
    char allow[64];
    evbus_route_match_t match;
    char correlation[EVBUS_CE_MAX_CORRELATION + 1];
    char traceparent[56];
    unsigned status;
    char *resp_body;
    size_t resp_len;
    const char *resp_type;
    char *hdr_name[MAX_RESP_HEADERS], *hdr_value[MAX_RESP_HEADERS];
    int nhdr;
    void *state;
    void (*state_free)(void *);
    int64_t start_us;
};

const char *evbus_req_method(const evbus_req_t *r)
{
    return r->method;
}
const char *evbus_req_path(const evbus_req_t *r)
{
    return r->path;
}
const char *evbus_req_correlation(const evbus_req_t *r)
{
    return r->correlation;
}
const char *evbus_req_traceparent(const evbus_req_t *r)
{
    return r->traceparent;
}
int evbus_http_stopping(const evbus_req_t *r)
{
    return atomic_load(&r->srv->stopping);
}

const char *evbus_req_param(const evbus_req_t *r, const char *name)
{
    for (int i = 0; i < r->match.nparams; i++)
        if (strcmp(r->match.names[i], name) == 0)
            return r->match.values[i];
    return NULL;
}

const char *evbus_req_query(const evbus_req_t *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *evbus_req_header(const evbus_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

int evbus_req_client(const evbus_req_t *r, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return -1;
    const struct sockaddr *sa = ci->client_addr;
    const void *addr = sa->sa_family == AF_INET6
                           ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                           : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    return inet_ntop(sa->sa_family, addr, out, (socklen_t)len) ? 0 : -1;
}

const char *evbus_req_body(const evbus_req_t *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->body ? r->body : "";
}

void evbus_req_set_state(evbus_req_t *r, void *state, void (*free_fn)(void *))
{
    r->state = state;
    r->state_free = free_fn;
}

void *evbus_req_state(const evbus_req_t *r)
{
    return r->state;
}

void evbus_req_add_header(evbus_req_t *r, const char *name, const char *value)
{
    if (r->nhdr == MAX_RESP_HEADERS)
        return;
    r->hdr_name[r->nhdr] = strdup(name);
    r->hdr_value[r->nhdr] = strdup(value);
    r->nhdr++;
}

void evbus_req_reply_raw(evbus_req_t *r, unsigned status, const char *ctype, const char *body,
                         size_t len)
{
    free(r->resp_body);
    r->resp_body = malloc(len ? len : 1);
    if (r->resp_body && len)
        memcpy(r->resp_body, body, len);
    r->resp_len = r->resp_body ? len : 0;
    r->resp_type = ctype;
    r->status = status;
}

static void reply_dump(evbus_req_t *r, unsigned status, const char *ctype, json_t *body)
{
    free(r->resp_body);
    r->resp_body = NULL;
    r->resp_len = 0;
    r->status = status;
    r->resp_type = ctype;
    if (body) {
        r->resp_body = json_dumps(body, JSON_COMPACT);
        r->resp_len = r->resp_body ? strlen(r->resp_body) : 0;
        json_decref(body);
    }
}

void evbus_req_reply_json(evbus_req_t *r, unsigned status, json_t *body)
{
    reply_dump(r, status, "application/json", body);
}

void evbus_req_unavailable(evbus_req_t *r, const char *detail)
{
    evbus_req_add_header(r, "Retry-After", "1");
    evbus_req_problem(r, 503, "storage-unavailable", "Service Unavailable", detail, NULL);
}

void evbus_req_problem(evbus_req_t *r, unsigned status, const char *slug, const char *title,
                       const char *detail, json_t *errors)
{
    char type[96];
    snprintf(type, sizeof type, "urn:evbus:problem:%s", slug);
    json_t *p = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s}", "type", type, "title", title, "status",
                          (int)status, "detail", detail ? detail : title, "instance",
                          r->path ? r->path : "/", "correlationId", r->correlation);
    if (p && errors)
        json_object_set_new(p, "errors", errors);
    else
        json_decref(errors);
    if (status >= 500)
        evbus_log_kv(EVBUS_LOG_WARN, "request failed", "path", r->path, "problem", slug, "detail",
                     detail ? detail : title, NULL);
    reply_dump(r, status, "application/problem+json", p);
}

int evbus_req_require_type(evbus_req_t *r, const char *const *types)
{
    const char *ct = evbus_req_header(r, "Content-Type");
    if (ct) {
        size_t n = strcspn(ct, "; \t");
        for (const char *const *t = types; *t; t++)
            if (strlen(*t) == n && strncasecmp(ct, *t, n) == 0)
                return 1;
    }
    char detail[256];
    snprintf(detail, sizeof detail, "Content-Type must be %s%s", types[0],
             types[1] ? " (or a listed alternative)" : "");
    evbus_req_problem(r, 415, "unsupported-media-type", "Unsupported Media Type", detail, NULL);
    return 0;
}

json_t *evbus_req_json(evbus_req_t *r)
{
    json_error_t err;
    json_t *j = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &err);
    if (!j) {
        char detail[256];
        snprintf(detail, sizeof detail, "malformed JSON at line %d column %d: %s", err.line,
                 err.column, err.text);
        evbus_req_problem(r, 400, "malformed-json", "Malformed JSON", detail, NULL);
    }
    return j;
}

void evbus_req_suspend(evbus_req_t *r)
{
    r->suspended = 1;
    MHD_suspend_connection(r->conn);
}

void evbus_req_resume(evbus_req_t *r)
{
    MHD_resume_connection(r->conn);
}

static void take_context(evbus_req_t *r)
{
    const char *cid = evbus_req_header(r, "X-Correlation-ID");
    if (cid && evbus_is_token(cid, EVBUS_CE_MAX_CORRELATION))
        evbus_strlcpy(r->correlation, cid, sizeof r->correlation);
    else
        evbus_uuid7(r->correlation);
    const char *tp = evbus_req_header(r, "traceparent");
    if (tp && evbus_traceparent_valid(tp))
        evbus_strlcpy(r->traceparent, tp, sizeof r->traceparent);
    else
        evbus_traceparent_new(r->traceparent);
}

static enum MHD_Result queue(evbus_req_t *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        r->resp_len, r->resp_body ? r->resp_body : (void *)"", MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (r->resp_type)
        MHD_add_response_header(resp, "Content-Type", r->resp_type);
    MHD_add_response_header(resp, "X-Correlation-ID", r->correlation);
    for (int i = 0; i < r->nhdr; i++)
        if (r->hdr_name[i] && r->hdr_value[i])
            MHD_add_response_header(resp, r->hdr_name[i], r->hdr_value[i]);
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    r->queued = 1;
    return ok;
}

static void dispatch(evbus_req_t *r)
{
    evbus_log_set_correlation(r->correlation);
    if (!r->routed) {
        r->routed = 1;
        r->route_status = evbus_router_match(r->srv->router, r->method, r->path, &r->match,
                                             r->allow, sizeof r->allow);
    }
    if (r->too_big) {
        char detail[128];
        snprintf(detail, sizeof detail, "request body exceeds the limit of %zu bytes",
                 r->srv->opts.max_body);
        evbus_req_problem(r, 413, "payload-too-large", "Content Too Large", detail, NULL);
    } else if (r->route_status == 404) {
        evbus_req_problem(r, 404, "not-found", "Not Found", "no resource at this path", NULL);
    } else if (r->route_status == 405) {
        evbus_req_add_header(r, "Allow", r->allow);
        evbus_req_problem(r, 405, "method-not-allowed", "Method Not Allowed",
                          "this resource does not support the method", NULL);
    } else {
        evbus_handler_fn fn = (evbus_handler_fn)r->match.fn;
        r->suspended = 0;
        fn(r, r->match.ud);
        if (r->suspended)
            return;
        if (!r->status)
            evbus_req_problem(r, 500, "internal", "Internal Server Error",
                              "the handler gave no answer", NULL);
    }
    queue(r);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    (void)version;
    evbus_http_server_t *s = cls;
    evbus_req_t *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->srv = s;
        r->conn = conn;
        r->method = method;
        r->path = url;
        r->start_us = evbus_mono_us();
        take_context(r);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        int64_t n;
        *con_cls = r;
        if (cl && evbus_parse_i64(cl, 0, INT64_MAX, &n) == 0 && (uint64_t)n > s->opts.max_body) {
            r->too_big = 1;
            /* a body somewhat over the limit is read and dropped, so the client reads the
             * 413 and keeps its connection; a far larger one is refused before it is read
             * (libmicrohttpd then closes the connection) */
            if ((uint64_t)n > DISCARD_FACTOR * s->opts.max_body)
                dispatch(r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->queued)
            return MHD_YES;
        if (!r->too_big && r->body_len + n > s->opts.max_body) {
            r->too_big = 1;
            free(r->body);
            r->body = NULL;
            r->body_len = 0;
        }
        if (r->too_big) {
            /* discard the rest, the 413 goes out once the upload ends; a body that keeps
             * coming long past the limit gets its connection closed instead */
            r->discarded += n;
            return r->discarded > DISCARD_FACTOR * s->opts.max_body ? MHD_NO : MHD_YES;
        }
        if (r->body_len + n + 1 > r->body_cap) {
            size_t cap = r->body_cap ? r->body_cap : 1024;
            while (cap < r->body_len + n + 1)
                cap *= 2;
            if (cap > s->opts.max_body + 1)
                cap = s->opts.max_body + 1;
            char *nb = realloc(r->body, cap);
            if (!nb)
                return MHD_NO;
            r->body = nb;
            r->body_cap = cap;
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
        return MHD_YES;
    }
    if (r->queued)
        return MHD_YES;
    dispatch(r);
    evbus_log_set_correlation(NULL);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    evbus_req_t *r = *con_cls;
    if (!r)
        return;
    if (evbus_log_enabled(EVBUS_LOG_DEBUG)) {
        char status[8], us[24];
        snprintf(status, sizeof status, "%u", r->status);
        snprintf(us, sizeof us, "%lld", (long long)(evbus_mono_us() - r->start_us));
        evbus_log_set_correlation(r->correlation);
        evbus_log_kv(EVBUS_LOG_DEBUG, "request", "method", r->method, "path", r->path, "status",
                     status, "duration_us", us, "completed",
                     toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "true" : "false", NULL);
        evbus_log_set_correlation(NULL);
    }
    if (r->state_free)
        r->state_free(r->state);
    for (int i = 0; i < r->nhdr; i++) {
        free(r->hdr_name[i]);
        free(r->hdr_value[i]);
    }
    free(r->body);
    free(r->resp_body);
    free(r);
    *con_cls = NULL;
}

evbus_http_server_t *evbus_http_server_new(const evbus_http_opts_t *opts)
{
    evbus_http_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->opts = *opts;
    s->router = evbus_router_new();
    if (!s->router) {
        free(s);
        return NULL;
    }
    return s;
}

evbus_err_t evbus_http_route(evbus_http_server_t *s, const char *method, const char *pattern,
                             evbus_handler_fn fn, void *ud)
{
    return evbus_router_add(s->router, method, pattern, (void *)fn, ud) == 0 ? EVBUS_ERR_OK
                                                                             : EVBUS_ERR_INVALID;
}

int evbus_http_server_start(evbus_http_server_t *s)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)s->opts.port);
    if (inet_pton(AF_INET, s->opts.host, &addr.sin_addr) != 1) {
        evbus_log_error("invalid listen address '%s' (an IPv4 address is expected)", s->opts.host);
        return -1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)s->opts.port, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_THREAD_POOL_SIZE, s->opts.threads ? s->opts.threads : 2,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->opts.max_header_bytes, MHD_OPTION_CONNECTION_LIMIT,
        s->opts.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, s->opts.conn_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1,
        MHD_OPTION_END);
    if (!s->daemon) {
        evbus_log_error("cannot listen on %s:%d", s->opts.host, s->opts.port);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : s->opts.port;
}

void evbus_http_server_quiesce(evbus_http_server_t *s)
{
    atomic_store(&s->stopping, 1);
}

void evbus_http_server_free(evbus_http_server_t *s)
{
    if (!s)
        return;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    evbus_router_free(s->router);
    free(s);
}
