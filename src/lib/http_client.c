/* HTTP client on one reusable libcurl easy handle (keeps connections alive), with a
 * hard cap on the response body and redirects never followed. */
#include "evbus/http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "evbus/util.h"

struct evbus_http_client {
    CURL *curl;
    size_t max_response;
    char *buf;
    size_t len, cap;
    int too_big;
    long retry_after;
    const volatile int *abort_flag;
};

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c_, curl_off_t d)
{
    (void)a;
    (void)b;
    (void)c_;
    (void)d;
    evbus_http_client_t *c = ud;
    return c->abort_flag && *c->abort_flag;
}

void evbus_http_client_set_abort(evbus_http_client_t *c, const volatile int *flag)
{
    c->abort_flag = flag;
    curl_easy_setopt(c->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c->curl, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(c->curl, CURLOPT_NOPROGRESS, 0L);
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    evbus_http_client_t *c = ud;
    size_t n = size * nmemb;
    if (c->len + n > c->max_response) {
        c->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n + 1)
            cap *= 2;
        char *nb = realloc(c->buf, cap);
        if (!nb)
            return 0;
        c->buf = nb;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, ptr, n);
    c->len += n;
    c->buf[c->len] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    evbus_http_client_t *c = ud;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof name && n < 64 && strncasecmp(ptr, name, sizeof name - 1) == 0) {
        char v[64];
        size_t vl = n - (sizeof name - 1);
        memcpy(v, ptr + sizeof name - 1, vl);
        v[vl] = '\0';
        char *p = v;
        while (*p == ' ')
            p++;
        p[strcspn(p, "\r\n ")] = '\0';
        int64_t s;
        if (evbus_parse_i64(p, 0, 86400, &s) == 0)
            c->retry_after = (long)s;
    }
    return n;
}

evbus_http_client_t *evbus_http_client_new(size_t max_response)
{
    pthread_once(&g_once, global_init);
    evbus_http_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->curl = curl_easy_init();
    if (!c->curl) {
        free(c);
        return NULL;
    }
    c->max_response = max_response;
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(c->curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    return c;
}

void evbus_http_client_free(evbus_http_client_t *c)
{
    if (!c)
        return;
    curl_easy_cleanup(c->curl);
    free(c->buf);
    free(c);
}

void evbus_http_resp_clear(evbus_http_resp_t *resp)
{
    free(resp->body);
    memset(resp, 0, sizeof *resp);
}

evbus_err_t evbus_http_request(evbus_http_client_t *c, const char *method, const char *url,
                               const char *const *headers, const char *body, size_t body_len,
                               long timeout_ms, evbus_http_resp_t *resp)
{
    memset(resp, 0, sizeof *resp);
    resp->retry_after_s = -1;
    c->len = 0;
    c->too_big = 0;
    c->retry_after = -1;
    struct curl_slist *hl = NULL;
    for (const char *const *h = headers; h && *h; h++) {
        struct curl_slist *n = curl_slist_append(hl, *h);
        if (!n) {
            curl_slist_free_all(hl);
            return EVBUS_ERR_NOMEM;
        }
        hl = n;
    }
    /* no "Expect: 100-continue" round trip for larger bodies */
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c->curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, NULL);
    } else {
        curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") ? method : NULL);
    }
    CURLcode cc = curl_easy_perform(c->curl);
    curl_slist_free_all(hl);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
    if (c->too_big)
        return EVBUS_ERR_TOOBIG;
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return EVBUS_ERR_SHUTDOWN;
    if (cc == CURLE_OPERATION_TIMEDOUT)
        return EVBUS_ERR_TIMEOUT;
    if (cc != CURLE_OK)
        return EVBUS_ERR_UNAVAILABLE;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &resp->status);
    resp->retry_after_s = c->retry_after;
    if (c->len) {
        resp->body = malloc(c->len + 1);
        if (!resp->body)
            return EVBUS_ERR_NOMEM;
        memcpy(resp->body, c->buf, c->len + 1);
        resp->len = c->len;
    }
    return EVBUS_ERR_OK;
}
