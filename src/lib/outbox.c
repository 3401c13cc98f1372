/* Outbox table and relay thread. The relay is woken by evbus_relay_wake() right after a
 * commit (a slow timer is only a safety net), sends pending rows in sequence order as
 * one batch, and marks them published only after the eventbus answered 2xx. */
#include "evbus/outbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evbus/backoff.h"
#include "evbus/http_client.h"
#include "evbus/id.h"
#include "evbus/log.h"
#include "evbus/util.h"

#define SAFETY_POLL_MS 5000
#define MAX_BATCH 500
#define CLAIM_GRACE_MS 5000 /* a claim outlives the request timeout by this much */

#define OUTBOX_V1(seq_column)                                                                      \
    "CREATE TABLE evbus_outbox ("                                                                  \
    " seq " seq_column ","                                                                         \
    " event_id TEXT NOT NULL UNIQUE,"                                                              \
    " type TEXT NOT NULL,"                                                                         \
    " correlation_id TEXT,"                                                                        \
    " payload TEXT NOT NULL,"                                                                      \
    " status TEXT NOT NULL DEFAULT 'pending',"                                                     \
    " last_error TEXT,"                                                                            \
    " created_at BIGINT NOT NULL,"                                                                 \
    " published_at BIGINT);"                                                                       \
    "CREATE INDEX evbus_outbox_status ON evbus_outbox (status, seq);"

static const evbus_migration_t outbox_migrations[] = {
    {1,
     {{[EVBUS_DIALECT_SQLITE] = OUTBOX_V1("INTEGER PRIMARY KEY AUTOINCREMENT"),
       [EVBUS_DIALECT_PG] = OUTBOX_V1("BIGSERIAL PRIMARY KEY")}}},
    /* retention deletes published rows by age */
    {2, {{"CREATE INDEX evbus_outbox_published ON evbus_outbox (published_at)"}}},
    /* claims: several relays on one database, one in-flight row per ordering key */
    {3,
     {{"ALTER TABLE evbus_outbox ADD COLUMN ordering_key TEXT;"
       "ALTER TABLE evbus_outbox ADD COLUMN claim_id TEXT;"
       "ALTER TABLE evbus_outbox ADD COLUMN claimed_until BIGINT;"
       "CREATE INDEX evbus_outbox_key ON evbus_outbox (ordering_key, seq);"}}},
};

static const evbus_sql_t SQL_APPEND = {{
    "INSERT INTO evbus_outbox (event_id, type, correlation_id, payload, created_at, ordering_key)"
    " VALUES (?, ?, ?, ?, ?, ?)",
}};
/* Claims rows by status: pending ones, and in-flight ones whose claim expired (a relay
 * died). A row is skipped while an earlier row with its ordering key is unpublished, so
 * one key has at most one row in flight and keys keep their order across relays. On
 * PostgreSQL rows another relay is claiming are skipped, not waited for. */
#define CLAIM(lock)                                                                                \
    "UPDATE evbus_outbox SET status = 'inflight', claim_id = ?, claimed_until = ?"                 \
    " WHERE seq IN (SELECT o.seq FROM evbus_outbox o"                                              \
    "  WHERE (o.status = 'pending' OR (o.status = 'inflight' AND o.claimed_until < ?))"            \
    "  AND NOT EXISTS (SELECT 1 FROM evbus_outbox p WHERE p.ordering_key = o.ordering_key"         \
    "   AND p.seq < o.seq AND p.status IN ('pending', 'inflight'))"                                \
    "  ORDER BY o.seq LIMIT ?" lock ")"                                                            \
    " RETURNING seq, payload"
static const evbus_sql_t SQL_CLAIM = {{
    [EVBUS_DIALECT_SQLITE] = CLAIM(""),
    [EVBUS_DIALECT_PG] = CLAIM(" FOR UPDATE SKIP LOCKED"),
}};
static const evbus_sql_t SQL_MARK = {{
    "UPDATE evbus_outbox SET status = ?, published_at = ?, last_error = ?, claim_id = NULL"
    " WHERE seq = ? AND claim_id = ?",
}};
static const evbus_sql_t SQL_RELEASE = {{
    "UPDATE evbus_outbox SET status = 'pending', claim_id = NULL WHERE seq = ? AND claim_id = ?",
}};
static const evbus_sql_t SQL_EXPIRE = {{
    "DELETE FROM evbus_outbox WHERE seq IN (SELECT seq FROM evbus_outbox"
    " WHERE status = 'published' AND published_at < ? ORDER BY seq LIMIT 1000)",
}};
static const evbus_sql_t SQL_COUNT = {{
    "SELECT (SELECT count(*) FROM evbus_outbox WHERE status IN ('pending', 'inflight')),"
    " (SELECT count(*) FROM evbus_outbox WHERE status = 'rejected')",
}};

evbus_err_t evbus_outbox_migrate(evbus_store_t *st)
{
    return evbus_store_migrate(st, "outbox", outbox_migrations,
                               sizeof outbox_migrations / sizeof outbox_migrations[0]);
}

evbus_err_t evbus_outbox_append(evbus_store_t *st, const evbus_event_t *ev)
{
    char *payload = evbus_event_serialize(ev);
    if (!payload)
        return EVBUS_ERR_NOMEM;
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_APPEND);
    evbus_err_t rc = EVBUS_ERR_DB;
    if (s) {
        evbus_stmt_bind_text(s, 1, evbus_event_id(ev));
        evbus_stmt_bind_text(s, 2, evbus_event_type(ev));
        evbus_stmt_bind_text(s, 3, evbus_event_correlation(ev));
        evbus_stmt_bind_text(s, 4, payload);
        evbus_stmt_bind_int64(s, 5, evbus_now_ms());
        evbus_stmt_bind_text(s, 6, evbus_event_subject(ev));
        int constraint;
        int step = evbus_stmt_step(s, &constraint);
        rc = step == EVBUS_STEP_DONE ? EVBUS_ERR_OK
             : constraint            ? EVBUS_ERR_CONFLICT
                                     : EVBUS_ERR_DB;
        evbus_stmt_done(s);
    }
    free(payload);
    return rc;
}

typedef struct {
    int64_t seq;
    char *payload;
} claimed_t;

struct evbus_relay {
    evbus_relay_opts_t o;
    char *store_url, *url, *auth_header;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int woken, stop;
    volatile int abort_flag;
    char claim_id[EVBUS_UUID_STRLEN]; /* this relay's claims */
    claimed_t rows[MAX_BATCH];        /* relay thread's scratch for claim_batch */
    atomic_llong pending, rejected;
    atomic_int bus_ok;
};

typedef struct {
    int64_t seq[MAX_BATCH];
    unsigned n;
    char *body;
    size_t len, cap;
} batch_t;

static int batch_append(batch_t *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 3 > b->cap) {
        size_t cap = b->cap ? b->cap : 8192;
        while (cap < b->len + n + 3)
            cap *= 2;
        char *nb = realloc(b->body, cap);
        if (!nb)
            return -1;
        b->body = nb;
        b->cap = cap;
    }
    b->body[b->len++] = b->n ? ',' : '[';
    memcpy(b->body + b->len, s, n);
    b->len += n;
    return 0;
}

static int by_seq(const void *a, const void *b)
{
    int64_t x = ((const claimed_t *)a)->seq, y = ((const claimed_t *)b)->seq;
    return x < y ? -1 : x > y;
}

/* Claims up to limit rows for this relay and puts them, in sequence order, into b as a
 * JSON array. Relay thread only. */
static evbus_err_t claim_batch(evbus_relay_t *r, evbus_store_t *st, unsigned limit, batch_t *b)
{
    claimed_t *rows = r->rows;
    unsigned n = 0;
    b->n = 0;
    b->len = 0;
    if (evbus_store_begin(st) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_CLAIM);
    int rc = EVBUS_STEP_ERROR;
    if (s) {
        int64_t now = evbus_now_ms();
        evbus_stmt_bind_text(s, 1, r->claim_id);
        evbus_stmt_bind_int64(s, 2, now + r->o.timeout_ms + CLAIM_GRACE_MS);
        evbus_stmt_bind_int64(s, 3, now);
        evbus_stmt_bind_int64(s, 4, limit);
        while ((rc = evbus_stmt_step(s, NULL)) == EVBUS_STEP_ROW && n < MAX_BATCH) {
            rows[n].seq = evbus_stmt_int64(s, 0);
            rows[n].payload = strdup(evbus_stmt_text(s, 1));
            if (!rows[n++].payload) {
                rc = EVBUS_STEP_ERROR;
                break;
            }
        }
        evbus_stmt_done(s);
    }
    evbus_err_t err = EVBUS_ERR_DB;
    if (rc == EVBUS_STEP_DONE)
        err = evbus_store_commit(st);
    else
        evbus_store_rollback(st);
    qsort(rows, n, sizeof rows[0], by_seq); /* RETURNING has no order */
    for (unsigned i = 0; i < n; i++) {
        if (err == EVBUS_ERR_OK && batch_append(b, rows[i].payload) == 0)
            b->seq[b->n++] = rows[i].seq;
        else if (err == EVBUS_ERR_OK)
            err = EVBUS_ERR_NOMEM;
        free(rows[i].payload);
    }
    if (err != EVBUS_ERR_OK) {
        b->n = 0; /* claims not sent expire and are taken again */
        return err;
    }
    if (b->n) {
        b->body[b->len++] = ']';
        b->body[b->len] = '\0';
    }
    return EVBUS_ERR_OK;
}

/* Settles this relay's claims on b's rows: status "published" or "rejected", or NULL to
 * give them back as pending. */
static evbus_err_t mark(evbus_relay_t *r, evbus_store_t *st, const batch_t *b, const char *status,
                        const char *error)
{
    if (evbus_store_begin(st) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    evbus_stmt_t *s = evbus_store_prepare(st, status ? &SQL_MARK : &SQL_RELEASE);
    evbus_err_t rc = s ? EVBUS_ERR_OK : EVBUS_ERR_DB;
    int64_t now = evbus_now_ms();
    for (unsigned i = 0; s && i < b->n && rc == EVBUS_ERR_OK; i++) {
        if (status) {
            evbus_stmt_bind_text(s, 1, status);
            evbus_stmt_bind_int64(s, 2, now);
            evbus_stmt_bind_text(s, 3, error);
            evbus_stmt_bind_int64(s, 4, b->seq[i]);
            evbus_stmt_bind_text(s, 5, r->claim_id);
        } else {
            evbus_stmt_bind_int64(s, 1, b->seq[i]);
            evbus_stmt_bind_text(s, 2, r->claim_id);
        }
        if (evbus_stmt_step(s, NULL) != EVBUS_STEP_DONE)
            rc = EVBUS_ERR_DB;
        evbus_stmt_done(s);
    }
    if (rc != EVBUS_ERR_OK) {
        evbus_store_rollback(st);
        return rc;
    }
    return evbus_store_commit(st);
}

/* Deletes published rows past the retention, one bounded batch per call; pending and
 * rejected rows are never deleted. Returns 1 if a full batch went (more may remain). */
static int expire(evbus_relay_t *r, evbus_store_t *st)
{
    if (r->o.retention_ms <= 0)
        return 0;
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_EXPIRE);
    if (!s)
        return 0;
    evbus_stmt_bind_int64(s, 1, evbus_now_ms() - r->o.retention_ms);
    int rc = evbus_stmt_step(s, NULL);
    int64_t n = evbus_stmt_changes(s);
    evbus_stmt_done(s);
    if (rc == EVBUS_STEP_DONE && n > 0) {
        char c[24];
        snprintf(c, sizeof c, "%lld", (long long)n);
        evbus_log_kv(EVBUS_LOG_DEBUG, "relay: expired published outbox rows", "count", c, NULL);
    }
    return rc == EVBUS_STEP_DONE && n == 1000;
}

static void refresh_counts(evbus_relay_t *r, evbus_store_t *st)
{
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_COUNT);
    if (s && evbus_stmt_step(s, NULL) == EVBUS_STEP_ROW) {
        atomic_store(&r->pending, evbus_stmt_int64(s, 0));
        atomic_store(&r->rejected, evbus_stmt_int64(s, 1));
    }
    if (s)
        evbus_stmt_done(s);
}

/* Waits until woken, stopped, or ms elapsed. Returns 1 if stopping. */
static int wait_for(evbus_relay_t *r, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&r->lock);
    while (!r->woken && !r->stop)
        if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) != 0)
            break;
    r->woken = 0;
    int stop = r->stop;
    pthread_mutex_unlock(&r->lock);
    return stop;
}

/* Outcome of one send: 0 published, 1 retry later, 2 rejected as invalid. */
static int send_batch(evbus_relay_t *r, evbus_http_client_t *http, const batch_t *b, char *err,
                      size_t errlen)
{
    const char *headers[3] = {"Content-Type: application/cloudevents-batch+json", NULL, NULL};
    if (r->auth_header)
        headers[1] = r->auth_header;
    evbus_http_resp_t resp;
    evbus_err_t rc =
        evbus_http_request(http, "POST", r->url, headers, b->body, b->len, r->o.timeout_ms, &resp);
    int outcome;
    if (rc != EVBUS_ERR_OK) {
        snprintf(err, errlen, "eventbus unreachable: %s", evbus_strerror(rc));
        outcome = 1;
    } else if (resp.status >= 200 && resp.status < 300) {
        outcome = 0;
    } else if (resp.status == 400 || resp.status == 413 || resp.status == 422) {
        snprintf(err, errlen, "eventbus refused the event (%ld): %.300s", resp.status,
                 resp.body ? resp.body : "");
        outcome = 2;
    } else {
        snprintf(err, errlen, "eventbus answered %ld", resp.status);
        outcome = 1;
    }
    atomic_store(&r->bus_ok, rc == EVBUS_ERR_OK && resp.status < 500);
    evbus_http_resp_clear(&resp);
    return outcome;
}

static void *relay_main(void *arg)
{
    evbus_relay_t *r = arg;
    evbus_store_t *st = evbus_store_open(r->store_url);
    evbus_http_client_t *http = evbus_http_client_new(64 * 1024);
    batch_t *b = calloc(1, sizeof *b);
    evbus_backoff_t bo = {r->o.backoff_initial_ms, 2.0, r->o.backoff_cap_ms};
    unsigned attempt = 0, limit = r->o.batch;
    if (!st || !http || !b) {
        evbus_log_error("relay: cannot start (store or HTTP client)");
        goto out;
    }
    evbus_http_client_set_abort(http, &r->abort_flag);
    evbus_log_kv(EVBUS_LOG_INFO, "relay started", "eventbus", r->url, NULL);
    for (;;) {
        if (claim_batch(r, st, limit, b) != EVBUS_ERR_OK) {
            if (wait_for(r, evbus_backoff_delay(&bo, attempt++)))
                break;
            continue;
        }
        if (b->n == 0) {
            refresh_counts(r, st);
            limit = r->o.batch;
            int more = expire(r, st);
            int64_t idle = r->o.retention_ms > 0 && r->o.retention_ms / 2 < SAFETY_POLL_MS
                               ? r->o.retention_ms / 2 + 1
                               : SAFETY_POLL_MS;
            if (!more && wait_for(r, idle))
                break;
            continue;
        }
        char err[400] = "";
        int outcome = send_batch(r, http, b, err, sizeof err);
        if (outcome == 0) {
            if (attempt)
                evbus_log_kv(EVBUS_LOG_INFO, "relay: eventbus reachable again", NULL);
            attempt = 0;
            if (mark(r, st, b, "published", NULL) != EVBUS_ERR_OK)
                evbus_log_error("relay: cannot mark rows published (they will be resent)");
            else
                evbus_log_debug("relay: published %u events", b->n);
        } else if (outcome == 2 && b->n > 1) {
            mark(r, st, b, NULL, NULL);
            limit = 1; /* find the refused event: send one at a time */
        } else if (outcome == 2) {
            evbus_log_kv(EVBUS_LOG_ERROR, "relay: event parked as rejected", "detail", err, NULL);
            mark(r, st, b, "rejected", err);
        } else {
            mark(r, st, b, NULL, NULL);
            int64_t delay = evbus_backoff_delay(&bo, attempt);
            char d[24];
            snprintf(d, sizeof d, "%lld", (long long)delay);
            if (attempt == 0 || evbus_log_enabled(EVBUS_LOG_DEBUG))
                evbus_log_kv(EVBUS_LOG_WARN, "relay: publish failed, retrying with backoff",
                             "detail", err, "delay_ms", d, NULL);
            attempt++;
            refresh_counts(r, st);
            expire(r, st); /* published rows keep ageing while the eventbus is away */
            /* only a stop ends the wait early: new commits must not defeat the backoff */
            int64_t end = evbus_mono_us() + delay * 1000;
            while (evbus_mono_us() < end) {
                if (wait_for(r, (end - evbus_mono_us()) / 1000 + 1))
                    goto out;
            }
        }
        pthread_mutex_lock(&r->lock);
        int stop = r->stop;
        pthread_mutex_unlock(&r->lock);
        if (stop)
            break;
    }
out:
    if (b)
        free(b->body);
    free(b);
    evbus_http_client_free(http);
    evbus_store_close(st);
    return NULL;
}

evbus_relay_t *evbus_relay_start(const evbus_relay_opts_t *opts)
{
    evbus_relay_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->o = *opts;
    if (r->o.batch == 0 || r->o.batch > MAX_BATCH)
        r->o.batch = 100;
    evbus_uuid7(r->claim_id);
    size_t ul = strlen(opts->eventbus_url) + 32;
    r->url = malloc(ul);
    r->store_url = strdup(opts->store_url);
    if (r->url)
        snprintf(r->url, ul, "%s/api/events/publish", opts->eventbus_url);
    if (opts->api_key) {
        size_t al = strlen(opts->api_key) + 32;
        r->auth_header = malloc(al);
        if (r->auth_header)
            snprintf(r->auth_header, al, "Authorization: Bearer %s", opts->api_key);
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_store(&r->bus_ok, 1);
    if (!r->url || !r->store_url || pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        free(r->url);
        free(r->store_url);
        free(r->auth_header);
        free(r);
        return NULL;
    }
    return r;
}

void evbus_relay_wake(evbus_relay_t *r)
{
    pthread_mutex_lock(&r->lock);
    r->woken = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void evbus_relay_stats(evbus_relay_t *r, int64_t *pending, int64_t *rejected, int *bus_ok)
{
    *pending = atomic_load(&r->pending);
    *rejected = atomic_load(&r->rejected);
    *bus_ok = atomic_load(&r->bus_ok);
}

void evbus_relay_stop(evbus_relay_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = 1;
    r->abort_flag = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    free(r->url);
    free(r->store_url);
    free(r->auth_header);
    free(r);
}
