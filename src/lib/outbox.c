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
#define MAX_BATCH 1000
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
    /* the claim's per-key check looks at in-flight rows only: index just those */
    {4,
     {{"DROP INDEX evbus_outbox_key;"
       "CREATE INDEX evbus_outbox_inflight ON evbus_outbox (ordering_key, seq)"
       " WHERE status = 'inflight';"}}},
};

static const evbus_sql_t SQL_APPEND = {{
    "INSERT INTO evbus_outbox (event_id, type, correlation_id, payload, created_at, ordering_key)"
    " VALUES (?, ?, ?, ?, ?, ?)",
}};
/* Claims rows by status: pending ones, and in-flight ones whose claim expired (a relay
 * died), in sequence order. A row is skipped while an earlier row with its ordering key
 * is in flight under a live claim, so a key is never split between two relays and keeps
 * its order; within one claim a key's rows come in order. Claims are serialized (the
 * lock below) so no claim races one not yet committed; on PostgreSQL rows another relay
 * is settling are skipped, not waited for. */
#define CLAIM(lock)                                                                                \
    "UPDATE evbus_outbox SET status = 'inflight', claim_id = ?, claimed_until = ?"                 \
    " WHERE seq IN (SELECT o.seq FROM evbus_outbox o"                                              \
    "  WHERE (o.status = 'pending' OR (o.status = 'inflight' AND o.claimed_until < ?))"            \
    "  AND NOT EXISTS (SELECT 1 FROM evbus_outbox p WHERE p.ordering_key = o.ordering_key"         \
    "   AND p.seq < o.seq AND p.status = 'inflight' AND p.claimed_until >= ?)"                     \
    "  ORDER BY o.seq LIMIT ?" lock ")"                                                            \
    " RETURNING seq, payload, type, ordering_key, created_at"
static const evbus_sql_t SQL_CLAIM = {{
    [EVBUS_DIALECT_SQLITE] = CLAIM(""),
    [EVBUS_DIALECT_PG] = CLAIM(" FOR UPDATE SKIP LOCKED"),
}};
static const evbus_sql_t SQL_CLAIM_LOCK = {{
    [EVBUS_DIALECT_SQLITE] = "SELECT 1", /* BEGIN IMMEDIATE already serializes */
    [EVBUS_DIALECT_PG] = "SELECT pg_advisory_xact_lock(7402102)",
}};
static const evbus_sql_t SQL_MARK = {{
    "UPDATE evbus_outbox SET status = ?, published_at = ?, last_error = ?, claim_id = NULL"
    " WHERE seq = ? AND claim_id = ?",
}};
/* Every row a claim holds went out: one statement settles them all. */
static const evbus_sql_t SQL_MARK_ALL = {{
    "UPDATE evbus_outbox SET status = 'published', published_at = ?, claim_id = NULL"
    " WHERE claim_id = ? AND status = 'inflight'",
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

evbus_err_t evbus_outbox_append_raw(evbus_store_t *st, const char *id, const char *type,
                                    const char *correlation, const char *key, const char *payload)
{
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_APPEND);
    if (!s)
        return EVBUS_ERR_DB;
    evbus_stmt_bind_text(s, 1, id);
    evbus_stmt_bind_text(s, 2, type);
    evbus_stmt_bind_text(s, 3, correlation);
    evbus_stmt_bind_text(s, 4, payload);
    evbus_stmt_bind_int64(s, 5, evbus_now_ms());
    evbus_stmt_bind_text(s, 6, key);
    int constraint;
    int step = evbus_stmt_step(s, &constraint);
    evbus_stmt_done(s);
    return step == EVBUS_STEP_DONE ? EVBUS_ERR_OK : constraint ? EVBUS_ERR_CONFLICT : EVBUS_ERR_DB;
}

evbus_err_t evbus_outbox_append(evbus_store_t *st, const evbus_event_t *ev)
{
    char *payload = evbus_event_serialize(ev);
    if (!payload)
        return EVBUS_ERR_NOMEM;
    evbus_err_t rc =
        evbus_outbox_append_raw(st, evbus_event_id(ev), evbus_event_type(ev),
                                evbus_event_correlation(ev), evbus_event_subject(ev), payload);
    free(payload);
    return rc;
}

struct evbus_relay {
    evbus_relay_opts_t o;
    evbus_relay_sink_t sink;
    char *store_url, *url, *auth_header;
    evbus_store_t *st;         /* opened by evbus_relay_start, then the relay thread's */
    evbus_http_client_t *http; /* the default sink's client */
    char *body;                /* the default sink's request body */
    size_t body_cap;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int woken, stop;
    volatile int abort_flag;
    char claim_id[EVBUS_UUID_STRLEN]; /* this relay's claims */
    atomic_int bus_ok;
};

typedef struct {
    evbus_outbox_row_t rows[MAX_BATCH]; /* strings owned by the batch */
    int outcome[MAX_BATCH];
    unsigned n;
} batch_t;

static void batch_clear(batch_t *b)
{
    for (unsigned i = 0; i < b->n; i++) {
        free((char *)b->rows[i].payload);
        free((char *)b->rows[i].type);
        free((char *)b->rows[i].key);
    }
    b->n = 0;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int by_seq(const void *a, const void *b)
{
    int64_t x = ((const evbus_outbox_row_t *)a)->seq, y = ((const evbus_outbox_row_t *)b)->seq;
    return x < y ? -1 : x > y;
}

/* Claims up to limit rows for this relay into b, in sequence order. Relay thread. */
static evbus_err_t claim_batch(evbus_relay_t *r, evbus_store_t *st, unsigned limit, batch_t *b)
{
    batch_clear(b);
    if (evbus_store_begin(st) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    evbus_stmt_t *lock = evbus_store_prepare(st, &SQL_CLAIM_LOCK);
    int locked = lock && evbus_stmt_step(lock, NULL) == EVBUS_STEP_ROW;
    if (lock)
        evbus_stmt_done(lock);
    evbus_stmt_t *s = locked ? evbus_store_prepare(st, &SQL_CLAIM) : NULL;
    int rc = EVBUS_STEP_ERROR;
    if (s) {
        int64_t now = evbus_now_ms();
        evbus_stmt_bind_text(s, 1, r->claim_id);
        evbus_stmt_bind_int64(s, 2, now + r->o.timeout_ms + CLAIM_GRACE_MS);
        evbus_stmt_bind_int64(s, 3, now);
        evbus_stmt_bind_int64(s, 4, now);
        evbus_stmt_bind_int64(s, 5, limit);
        while ((rc = evbus_stmt_step(s, NULL)) == EVBUS_STEP_ROW && b->n < MAX_BATCH) {
            evbus_outbox_row_t *row = &b->rows[b->n++];
            row->seq = evbus_stmt_int64(s, 0);
            row->payload = dup_or_null(evbus_stmt_text(s, 1));
            row->type = dup_or_null(evbus_stmt_text(s, 2));
            row->key = dup_or_null(evbus_stmt_text(s, 3));
            row->created_at = evbus_stmt_int64(s, 4);
            if (!row->payload || !row->type) {
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
    if (err != EVBUS_ERR_OK) {
        batch_clear(b); /* claims that were not sent expire and are taken again */
        return err;
    }
    qsort(b->rows, b->n, sizeof b->rows[0], by_seq); /* RETURNING has no order */
    return EVBUS_ERR_OK;
}

/* Settles this relay's claims by each row's outcome: sent rows become published,
 * refused rows rejected (with err), the others pending again. */
static evbus_err_t settle(evbus_relay_t *r, evbus_store_t *st, const batch_t *b, const char *err)
{
    if (evbus_store_begin(st) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    unsigned sent = 0;
    for (unsigned i = 0; i < b->n; i++)
        sent += b->outcome[i] == EVBUS_RELAY_SENT;
    if (sent == b->n) {
        evbus_stmt_t *all = evbus_store_prepare(st, &SQL_MARK_ALL);
        int rc = EVBUS_STEP_ERROR;
        if (all) {
            evbus_stmt_bind_int64(all, 1, evbus_now_ms());
            evbus_stmt_bind_text(all, 2, r->claim_id);
            rc = evbus_stmt_step(all, NULL);
            evbus_stmt_done(all);
        }
        if (rc != EVBUS_STEP_DONE) {
            evbus_store_rollback(st);
            return EVBUS_ERR_DB;
        }
        return evbus_store_commit(st);
    }
    evbus_stmt_t *mark = evbus_store_prepare(st, &SQL_MARK);
    evbus_stmt_t *release = evbus_store_prepare(st, &SQL_RELEASE);
    evbus_err_t rc = mark && release ? EVBUS_ERR_OK : EVBUS_ERR_DB;
    int64_t now = evbus_now_ms();
    for (unsigned i = 0; rc == EVBUS_ERR_OK && i < b->n; i++) {
        evbus_stmt_t *s = b->outcome[i] == EVBUS_RELAY_RETRY ? release : mark;
        if (s == mark) {
            int ok = b->outcome[i] == EVBUS_RELAY_SENT;
            evbus_stmt_bind_text(s, 1, ok ? "published" : "rejected");
            evbus_stmt_bind_int64(s, 2, now);
            evbus_stmt_bind_text(s, 3, ok ? NULL : err);
            evbus_stmt_bind_int64(s, 4, b->rows[i].seq);
            evbus_stmt_bind_text(s, 5, r->claim_id);
        } else {
            evbus_stmt_bind_int64(s, 1, b->rows[i].seq);
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

evbus_err_t evbus_outbox_backlog(evbus_store_t *st, int64_t *pending, int64_t *rejected)
{
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_COUNT);
    if (!s)
        return EVBUS_ERR_DB;
    int rc = evbus_stmt_step(s, NULL);
    if (rc == EVBUS_STEP_ROW) {
        *pending = evbus_stmt_int64(s, 0);
        *rejected = evbus_stmt_int64(s, 1);
    }
    evbus_stmt_done(s);
    return rc == EVBUS_STEP_ROW ? EVBUS_ERR_OK : EVBUS_ERR_DB;
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

/* The default sink: the rows as one CloudEvents batch to the eventbus publish API,
 * which stores all or none of them. */
static int http_send(void *ud, const evbus_outbox_row_t *rows, unsigned n, int *outcome, char *err,
                     size_t errlen)
{
    evbus_relay_t *r = ud;
    size_t len = 1;
    for (unsigned i = 0; i < n; i++)
        len += strlen(rows[i].payload) + 1;
    if (len + 1 > r->body_cap) {
        char *nb = realloc(r->body, len + 1);
        if (!nb) {
            snprintf(err, errlen, "out of memory");
            for (unsigned i = 0; i < n; i++)
                outcome[i] = EVBUS_RELAY_RETRY;
            return 1;
        }
        r->body = nb;
        r->body_cap = len + 1;
    }
    size_t o = 0;
    for (unsigned i = 0; i < n; i++) {
        r->body[o++] = i ? ',' : '[';
        size_t pl = strlen(rows[i].payload);
        memcpy(r->body + o, rows[i].payload, pl);
        o += pl;
    }
    r->body[o++] = ']';
    r->body[o] = '\0';
    const char *headers[3] = {"Content-Type: application/cloudevents-batch+json", NULL, NULL};
    if (r->auth_header)
        headers[1] = r->auth_header;
    evbus_http_resp_t resp;
    evbus_err_t rc =
        evbus_http_request(r->http, "POST", r->url, headers, r->body, o, r->o.timeout_ms, &resp);
    int result;
    if (rc != EVBUS_ERR_OK) {
        snprintf(err, errlen, "eventbus unreachable: %s", evbus_strerror(rc));
        result = EVBUS_RELAY_RETRY;
    } else if (resp.status >= 200 && resp.status < 300) {
        result = EVBUS_RELAY_SENT;
    } else if (resp.status == 400 || resp.status == 413 || resp.status == 422) {
        snprintf(err, errlen, "eventbus refused the event (%ld): %.300s", resp.status,
                 resp.body ? resp.body : "");
        result = EVBUS_RELAY_REFUSED;
    } else {
        snprintf(err, errlen, "eventbus answered %ld", resp.status);
        result = EVBUS_RELAY_RETRY;
    }
    int reachable = rc == EVBUS_ERR_OK && resp.status < 500;
    evbus_http_resp_clear(&resp);
    for (unsigned i = 0; i < n; i++)
        outcome[i] = result;
    return reachable;
}

/* Backs off after a failed send; returns 1 if the relay is stopping. */
static int back_off(evbus_relay_t *r, evbus_store_t *st, evbus_backoff_t *bo, unsigned *attempt,
                    const char *err)
{
    int64_t delay = evbus_backoff_delay(bo, *attempt);
    char d[24];
    snprintf(d, sizeof d, "%lld", (long long)delay);
    if (*attempt == 0 || evbus_log_enabled(EVBUS_LOG_DEBUG))
        evbus_log_kv(EVBUS_LOG_WARN, "relay: send failed, retrying with backoff", "sink",
                     r->sink.name, "detail", err, "delay_ms", d, NULL);
    (*attempt)++;
    expire(r, st); /* published rows keep ageing while the destination is away */
    /* only a stop ends the wait early: new commits must not defeat the backoff */
    int64_t end = evbus_mono_us() + delay * 1000;
    while (evbus_mono_us() < end)
        if (wait_for(r, (end - evbus_mono_us()) / 1000 + 1))
            return 1;
    return 0;
}

static void *relay_main(void *arg)
{
    evbus_relay_t *r = arg;
    evbus_store_t *st = r->st;
    batch_t *b = calloc(1, sizeof *b);
    evbus_backoff_t bo = {r->o.backoff_initial_ms, 2.0, r->o.backoff_cap_ms};
    unsigned attempt = 0, limit = r->o.batch;
    if (!st || !b) {
        evbus_log_error("relay: cannot start (store)");
        goto out;
    }
    evbus_log_kv(EVBUS_LOG_INFO, "relay started", "sink", r->sink.name, NULL);
    for (;;) {
        if (claim_batch(r, st, limit, b) != EVBUS_ERR_OK) {
            if (wait_for(r, evbus_backoff_delay(&bo, attempt++)))
                break;
            continue;
        }
        if (b->n == 0) {
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
        atomic_store(&r->bus_ok,
                     r->sink.send(r->sink.ud, b->rows, b->n, b->outcome, err, sizeof err));
        unsigned sent = 0, retry = 0, refused = 0;
        for (unsigned i = 0; i < b->n; i++) {
            sent += b->outcome[i] == EVBUS_RELAY_SENT;
            retry += b->outcome[i] == EVBUS_RELAY_RETRY;
            refused += b->outcome[i] == EVBUS_RELAY_REFUSED;
        }
        if (refused && b->n > 1) {
            /* find the refused event: the rest goes back, and rows go one at a time */
            for (unsigned i = 0; i < b->n; i++)
                if (b->outcome[i] == EVBUS_RELAY_REFUSED)
                    b->outcome[i] = EVBUS_RELAY_RETRY;
            limit = 1;
        } else if (refused) {
            evbus_log_kv(EVBUS_LOG_ERROR, "relay: event parked as rejected", "detail", err, NULL);
        }
        if (settle(r, st, b, err) != EVBUS_ERR_OK) {
            evbus_log_error("relay: cannot record the outcome (the rows will be sent again)");
        } else if (sent) {
            evbus_log_debug("relay: published %u events", sent);
        }
        if (retry && !(refused && b->n > 1)) {
            if (back_off(r, st, &bo, &attempt, err))
                break;
        } else if (sent) {
            if (attempt)
                evbus_log_kv(EVBUS_LOG_INFO, "relay: destination reachable again", "sink",
                             r->sink.name, NULL);
            attempt = 0;
        }
        pthread_mutex_lock(&r->lock);
        int stop = r->stop;
        pthread_mutex_unlock(&r->lock);
        if (stop)
            break;
    }
out:
    if (b)
        batch_clear(b);
    free(b);
    evbus_store_close(st);
    r->st = NULL;
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
    r->store_url = strdup(opts->store_url);
    if (opts->sink) {
        r->sink = *opts->sink;
    } else {
        size_t ul = strlen(opts->eventbus_url) + 32;
        r->url = malloc(ul);
        if (r->url)
            snprintf(r->url, ul, "%s/api/events/publish", opts->eventbus_url);
        r->http = evbus_http_client_new(64 * 1024);
        if (r->http)
            evbus_http_client_set_abort(r->http, &r->abort_flag);
        r->sink = (evbus_relay_sink_t){"eventbus", http_send, r};
    }
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
    /* claims and settlements may be lost in a machine crash: the rows are then sent
     * again, as duplicates the receivers drop; the rows themselves were committed
     * durably by the producer. Not waiting for the disk takes two flushes off every
     * event's way out. */
    if ((r->st = r->store_url ? evbus_store_open(r->store_url) : NULL))
        evbus_store_relax_durability(r->st);
    if ((!opts->sink && (!r->url || !r->http)) || !r->st ||
        pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        evbus_store_close(r->st);
        evbus_http_client_free(r->http);
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

int evbus_relay_reachable(evbus_relay_t *r)
{
    return atomic_load(&r->bus_ok);
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
    evbus_http_client_free(r->http);
    free(r->body);
    free(r->url);
    free(r->store_url);
    free(r->auth_header);
    free(r);
}
