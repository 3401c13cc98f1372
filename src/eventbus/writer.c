/* Group commit: publish handlers queue jobs and suspend; this thread takes everything
 * queued, writes it in one transaction (WAL, synchronous=FULL), and only after the
 * commit returned resumes the requests, which then answer 2xx. Under load many
 * publishes share one fsync; alone, a publish pays one. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "eventbus.h"
#include "evbus/log.h"
#include "evbus/outbox.h"
#include "evbus/util.h"

#define MAX_TOPICS_PER_GROUP 64
#define RETENTION_BATCH 1000
#define RETENTION_EVERY_MS 10000

struct eb_writer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    eb_job_t *head, *tail;
    int stop, joined;
    atomic_int healthy;
    char *url;
    eb_waiters_t *waiters;
    unsigned max_group;
    int64_t retention_ms;
    int outbox;
    void (*on_commit)(void *ud);
    void *ud;
};

static const evbus_sql_t SQL_INSERT = {{
    "INSERT INTO eb_events (id, topic, type, source, subject, correlation_id, received_at, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING seq",
}};
static const evbus_sql_t SQL_BY_ID = {{"SELECT seq FROM eb_events WHERE id = ?"}};
/* Positions must become visible in order. On SQLite this thread is the only writer; on
 * PostgreSQL several eventbus processes may write, so each group takes this lock
 * before it draws positions and keeps it until its commit: a later position can never
 * commit before an earlier one, and readers may follow a cursor. */
static const evbus_sql_t SQL_LOG_LOCK = {{
    [EVBUS_DIALECT_SQLITE] = "SELECT 1",
    [EVBUS_DIALECT_PG] = "SELECT pg_advisory_xact_lock(7402101)",
}};
static const evbus_sql_t SQL_EXPIRE = {{
    "DELETE FROM eb_events WHERE seq IN"
    " (SELECT seq FROM eb_events WHERE received_at < ? ORDER BY seq LIMIT ?)",
}};

void eb_job_free(void *p)
{
    eb_job_t *job = p;
    if (!job)
        return;
    for (size_t i = 0; i < job->n; i++) {
        eb_item_t *it = &job->items[i];
        free(it->id);
        free(it->topic);
        free(it->type);
        free(it->source);
        free(it->subject);
        free(it->correlation);
        free(it->body);
    }
    free(job->items);
    free(job);
}

static evbus_err_t insert_item(evbus_store_t *st, eb_item_t *it, int64_t now)
{
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_INSERT);
    if (!s)
        return EVBUS_ERR_DB;
    evbus_stmt_bind_text(s, 1, it->id);
    evbus_stmt_bind_text(s, 2, it->topic);
    evbus_stmt_bind_text(s, 3, it->type);
    evbus_stmt_bind_text(s, 4, it->source);
    evbus_stmt_bind_text(s, 5, it->subject);
    evbus_stmt_bind_text(s, 6, it->correlation);
    evbus_stmt_bind_int64(s, 7, now);
    evbus_stmt_bind_text(s, 8, it->body);
    int rc = evbus_stmt_step(s, NULL);
    if (rc == EVBUS_STEP_ROW) {
        it->created = 1;
        it->seq = evbus_stmt_int64(s, 0);
        rc = evbus_stmt_step(s, NULL);
    }
    evbus_stmt_done(s);
    if (rc != EVBUS_STEP_DONE)
        return EVBUS_ERR_DB;
    if (it->created)
        return EVBUS_ERR_OK;
    /* the id is already in the log: a duplicate publish, answered as a no-op */
    s = evbus_store_prepare(st, &SQL_BY_ID);
    if (!s)
        return EVBUS_ERR_DB;
    evbus_stmt_bind_text(s, 1, it->id);
    rc = evbus_stmt_step(s, NULL);
    if (rc == EVBUS_STEP_ROW)
        it->seq = evbus_stmt_int64(s, 0);
    evbus_stmt_done(s);
    return rc == EVBUS_STEP_ROW ? EVBUS_ERR_OK : EVBUS_ERR_DB;
}

/* Joins the topics for a notification payload; "*" when they do not fit. */
static void topics_payload(const char **topics, size_t nt, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < nt; i++) {
        size_t n = strlen(topics[i]);
        if (nt == SIZE_MAX || o + n + 2 > len) {
            snprintf(out, len, "*");
            return;
        }
        if (o)
            out[o++] = ',';
        memcpy(out + o, topics[i], n + 1);
        o += n;
    }
}

static size_t new_topics(eb_job_t *jobs, const char **topics);

static evbus_err_t write_group(eb_writer_t *w, evbus_store_t *st, eb_job_t *jobs)
{
    if (evbus_store_begin(st) != EVBUS_ERR_OK)
        return EVBUS_ERR_DB;
    evbus_stmt_t *lock = evbus_store_prepare(st, &SQL_LOG_LOCK);
    int locked = lock && evbus_stmt_step(lock, NULL) == EVBUS_STEP_ROW;
    if (lock)
        evbus_stmt_done(lock);
    if (!locked) {
        evbus_store_rollback(st);
        return EVBUS_ERR_DB;
    }
    int64_t now = evbus_now_ms();
    for (eb_job_t *j = jobs; j; j = j->next)
        for (size_t i = 0; i < j->n; i++) {
            j->items[i].created = 0;
            eb_item_t *it = &j->items[i];
            if (insert_item(st, it, now) != EVBUS_ERR_OK ||
                (w->outbox && it->created &&
                 evbus_outbox_append_raw(st, it->id, it->type, it->correlation, it->subject,
                                         it->body) != EVBUS_ERR_OK)) {
                evbus_log_error("writer: insert failed: %s", evbus_store_errmsg(st));
                evbus_store_rollback(st);
                return EVBUS_ERR_DB;
            }
        }
    /* other eventbus processes on this database wake their long-polls at our commit */
    const char *topics[MAX_TOPICS_PER_GROUP];
    size_t nt = new_topics(jobs, topics);
    char payload[4000];
    topics_payload(topics, nt, payload, sizeof payload);
    if (*payload && evbus_store_notify(st, "evbus_events", payload) != EVBUS_ERR_OK) {
        evbus_store_rollback(st);
        return EVBUS_ERR_DB;
    }
    if (evbus_store_commit(st) != EVBUS_ERR_OK) {
        evbus_log_error("writer: commit failed: %s", evbus_store_errmsg(st));
        return EVBUS_ERR_DB;
    }
    return EVBUS_ERR_OK;
}

/* Collects the distinct topics that got new events; SIZE_MAX when too many to list. */
static size_t new_topics(eb_job_t *jobs, const char **topics)
{
    size_t nt = 0;
    int overflow = 0;
    for (eb_job_t *j = jobs; j; j = j->next)
        for (size_t i = 0; i < j->n; i++) {
            eb_item_t *it = &j->items[i];
            if (!it->created)
                continue;
            size_t k = 0;
            while (k < nt && strcmp(topics[k], it->topic) != 0)
                k++;
            if (k == nt && nt < MAX_TOPICS_PER_GROUP)
                topics[nt++] = it->topic;
            else if (k == nt)
                overflow = 1; /* too many to list: wake everyone */
        }
    return overflow ? SIZE_MAX : nt;
}

/* Logs each stored event; returns the topics to wake (see new_topics). */
static size_t after_commit(eb_job_t *jobs, const char **topics)
{
    if (evbus_log_enabled(EVBUS_LOG_INFO)) {
        for (eb_job_t *j = jobs; j; j = j->next)
            for (size_t i = 0; i < j->n; i++) {
                eb_item_t *it = &j->items[i];
                evbus_log_set_correlation(it->correlation);
                evbus_log_set_event(it->id);
                evbus_log_kv(EVBUS_LOG_INFO,
                             it->created ? "event stored" : "duplicate event ignored", "type",
                             it->type, "topic", it->topic, NULL);
            }
        evbus_log_set_correlation(NULL);
        evbus_log_set_event(NULL);
    }
    return new_topics(jobs, topics);
}

/* Deletes one bounded batch of events older than the retention. Returns the number
 * deleted, -1 on error. */
static int64_t expire_batch(evbus_store_t *st, int64_t retention_ms)
{
    evbus_stmt_t *s = evbus_store_prepare(st, &SQL_EXPIRE);
    if (!s)
        return -1;
    evbus_stmt_bind_int64(s, 1, evbus_now_ms() - retention_ms);
    evbus_stmt_bind_int64(s, 2, RETENTION_BATCH);
    int rc = evbus_stmt_step(s, NULL);
    int64_t n = evbus_stmt_changes(s);
    evbus_stmt_done(s);
    if (n > 0) {
        char c[24];
        snprintf(c, sizeof c, "%lld", (long long)n);
        evbus_log_kv(EVBUS_LOG_INFO, "retention: events deleted", "count", c, NULL);
    }
    return rc == EVBUS_STEP_DONE ? n : -1;
}

/* How often to look for expired events: half the retention, within [0.1 s, 10 s]. */
static int64_t expiry_interval_us(int64_t retention_ms)
{
    int64_t ms = retention_ms / 2;
    ms = ms < 100 ? 100 : ms > RETENTION_EVERY_MS ? RETENTION_EVERY_MS : ms;
    return ms * 1000;
}

static void *writer_main(void *arg)
{
    eb_writer_t *w = arg;
    evbus_store_t *st = evbus_store_open(w->url);
    atomic_store(&w->healthy, st != NULL);
    int64_t next_expiry = evbus_mono_us();
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->stop) {
            /* idle: delete expired events one bounded batch at a time, so a publish
             * never waits behind more than one batch */
            if (st && evbus_mono_us() >= next_expiry) {
                pthread_mutex_unlock(&w->lock);
                int64_t n = expire_batch(st, w->retention_ms);
                if (n < RETENTION_BATCH)
                    next_expiry = evbus_mono_us() + expiry_interval_us(w->retention_ms);
                pthread_mutex_lock(&w->lock);
                continue;
            }
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t wait_us = next_expiry - evbus_mono_us();
            ts.tv_sec += wait_us / 1000000;
            ts.tv_nsec += (wait_us % 1000000) * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&w->cond, &w->lock, &ts);
        }
        if (!w->head && w->stop) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        /* take up to max_group events' worth of jobs */
        eb_job_t *jobs = w->head, *last = w->head;
        size_t events = last->n;
        while (last->next && events + last->next->n <= w->max_group) {
            last = last->next;
            events += last->n;
        }
        w->head = last->next;
        if (!w->head)
            w->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->lock);

        evbus_err_t rc = st ? write_group(w, st, jobs) : EVBUS_ERR_DB;
        atomic_store(&w->healthy, rc == EVBUS_ERR_OK);
        const char *topics[MAX_TOPICS_PER_GROUP];
        size_t nt = rc == EVBUS_ERR_OK ? after_commit(jobs, topics) : 0;
        /* notify before resuming: a poll woken later must see these events */
        if (nt == SIZE_MAX)
            eb_waiters_notify(w->waiters, NULL, 0);
        else if (nt)
            eb_waiters_notify(w->waiters, topics, nt);
        if (nt && w->on_commit)
            w->on_commit(w->ud);
        for (eb_job_t *j = jobs, *nx; j; j = nx) {
            nx = j->next;
            j->rc = rc;
            j->done = 1;
            evbus_req_resume(j->req); /* the request owns j from here on */
        }
    }
    evbus_store_close(st);
    return NULL;
}

eb_writer_t *eb_writer_start(const eb_writer_opts_t *o)
{
    eb_writer_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->url = strdup(o->db_url);
    w->waiters = o->waiters;
    w->max_group = o->max_group ? o->max_group : 1;
    w->retention_ms = o->retention_ms;
    w->outbox = o->outbox;
    w->on_commit = o->on_commit;
    w->ud = o->ud;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (!w->url || pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        free(w->url);
        free(w);
        return NULL;
    }
    return w;
}

int eb_writer_submit(eb_writer_t *w, eb_job_t *job)
{
    job->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->stop) {
        pthread_mutex_unlock(&w->lock);
        return -1;
    }
    /* suspend before the writer can see the job, so its resume follows the suspend */
    evbus_req_suspend(job->req);
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

int eb_writer_healthy(eb_writer_t *w)
{
    return atomic_load(&w->healthy);
}

void eb_writer_stop(eb_writer_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    int joined = w->joined;
    w->stop = 1;
    w->joined = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    if (!joined)
        pthread_join(w->thread, NULL);
}

void eb_writer_free(eb_writer_t *w)
{
    if (!w)
        return;
    eb_writer_stop(w);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w->url);
    free(w);
}
