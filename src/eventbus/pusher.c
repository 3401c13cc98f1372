/* Push delivery: one thread drives every push subscription's webhooks through one
 * libcurl multi handle, so deliveries of all subscriptions run in parallel.
 *
 * Per subscription, a window of events is read from the subscription's source (the
 * eventbus log after its cursor, or this instance's member of its Kafka group). An
 * event is sent only when no earlier event with the same key (subject) is unfinished,
 * so each key is delivered strictly in order, while up to `concurrency` requests for
 * different keys are in flight. A 2xx finishes an event; a failure is retried after
 * min(cap, initial * multiplier^n) with full jitter, or after Retry-After on 429/503;
 * after maxAttempts the event is parked in the dead-letter queue and the subscription
 * moves on. 410 disables the subscription. The cursor (or Kafka offset) only moves past
 * finished events, so a crash redelivers, never skips. A circuit breaker stops sending
 * after N consecutive failures and lets one probe through after a cool-down.
 *
 * On the embedded log one instance pushes a subscription, by a lease in its row; on
 * Kafka every instance pushes the partitions it holds, and the lease only decides who
 * sends redriven dead letters. */
#include <curl/curl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "eventbus.h"
#include "evbus/backoff.h"
#include "evbus/id.h"
#include "evbus/log.h"
#include "evbus/util.h"
#include "evbus/webhook.h"

#define WINDOW 1000            /* events held per subscription */
#define RELOAD_US 1000000      /* definitions, leases and redrives are read this often */
#define FETCH_IDLE_US 250000   /* an idle source is asked again this often */
#define LEASE_MS 10000         /* a lease not renewed for this long passes to another */
#define MAX_RESPONSE 65536     /* response bytes read (and dropped) at most */
#define RETRY_AFTER_MAX_S 3600 /* a longer Retry-After is cut to this */
#define REDRIVE_BATCH 100
#define KEYSET 4096 /* open addressing, twice the window */

enum { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };
static const char *const breaker_names[] = {"closed", "open", "half-open"};

typedef struct psub psub_t;

typedef struct {
    psub_t *ps;
    int64_t pos;    /* in the source; 0 for a redriven dead letter */
    int64_t dlq_id; /* > 0: a redriven dead letter */
    char *id, *key, *type, *body, *correlation;
    unsigned attempts, prior_attempts;
    int64_t first_ms, next_us;
    long status;
    char error[160];
    int inflight, done, refused;
    CURL *easy;
    struct curl_slist *headers;
    size_t received;
} delivery_t;

struct psub {
    psub_t *next;
    eb_pusher_t *p;
    char name[65], topic[EB_MAX_TOPIC + 1];
    json_t *types;
    int64_t created_at, seek_gen;
    eb_push_t cfg;
    evbus_backoff_t bo;
    char secret[256], secret_prev[256];
    int64_t secret_prev_until;
    int active;          /* not disabled */
    int owned;           /* holds the lease */
    int64_t lease_until; /* ms, while owned */
    eb_ksub_def_t def;
    eb_ksub_t *member;

    delivery_t **win; /* in source order */
    size_t nwin;
    delivery_t **redrive;
    size_t nredrive;
    int64_t fetched, acked; /* source positions: last examined, last acknowledged */
    int64_t next_fetch_us;
    unsigned inflight;
    int breaker;
    unsigned failures; /* consecutive */
    int64_t opened_us;
    int seen;
};

struct eb_pusher {
    eb_app_t *app;
    evbus_store_t *db;
    CURLM *multi;
    pthread_t thread;
    atomic_int stop;
    atomic_int woken;   /* new events may be waiting: ask the sources again now */
    atomic_int changed; /* definitions changed: read them again now */
    atomic_int nsubs;   /* push subscriptions known */
    int dirty;          /* a breaker changed: publish the status now (pusher thread) */
    psub_t *subs;
    char owner[40];
    pthread_mutex_t lock; /* status below */
    json_t *status;       /* name -> status object */
    json_t *health;
};

/* ---- deliveries ---- */

static void delivery_free(delivery_t *d)
{
    if (!d)
        return;
    free(d->id);
    free(d->key);
    free(d->type);
    free(d->body);
    free(d->correlation);
    free(d);
}

static delivery_t *delivery_new(psub_t *ps, json_t *ev, int64_t pos)
{
    delivery_t *d = calloc(1, sizeof *d);
    const char *id = json_string_value(json_object_get(ev, "id"));
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *key = json_string_value(json_object_get(ev, "subject"));
    const char *corr = json_string_value(json_object_get(ev, "correlationid"));
    if (!d || !id || !type) {
        free(d);
        return NULL;
    }
    d->ps = ps;
    d->pos = pos;
    d->id = strdup(id);
    d->type = strdup(type);
    d->key = key ? strdup(key) : NULL;
    d->correlation = corr ? strdup(corr) : NULL;
    d->body = json_dumps(ev, JSON_COMPACT);
    if (!d->id || !d->type || !d->body) {
        delivery_free(d);
        return NULL;
    }
    return d;
}

/* Stops a request in flight; its event is sent again later. */
static void abandon(eb_pusher_t *p, delivery_t *d)
{
    if (d->easy) {
        curl_multi_remove_handle(p->multi, d->easy);
        curl_easy_cleanup(d->easy);
        curl_slist_free_all(d->headers);
        d->easy = NULL;
        d->headers = NULL;
        d->ps->inflight--;
    }
    d->inflight = 0;
}

/* Forgets the window (after a seek, a lost lease or a new Kafka member): the source
 * is read again from its acknowledged position. */
static void reset_window(eb_pusher_t *p, psub_t *ps)
{
    for (size_t i = 0; i < ps->nwin; i++) {
        abandon(p, ps->win[i]);
        delivery_free(ps->win[i]);
    }
    ps->nwin = 0;
    ps->fetched = ps->acked = -1; /* read again from the source's position */
}

static void reset_redrive(eb_pusher_t *p, psub_t *ps)
{
    for (size_t i = 0; i < ps->nredrive; i++) {
        abandon(p, ps->redrive[i]);
        delivery_free(ps->redrive[i]);
    }
    ps->nredrive = 0;
}

static void psub_free(eb_pusher_t *p, psub_t *ps)
{
    reset_window(p, ps);
    reset_redrive(p, ps);
    if (ps->member)
        eb_ksubs_put(p->app->ksubs, ps->member);
    free(ps->win);
    free(ps->redrive);
    json_decref(ps->types);
    sodium_memzero(ps->secret, sizeof ps->secret);
    sodium_memzero(ps->secret_prev, sizeof ps->secret_prev);
    free(ps);
}

/* ---- the database ---- */

static const evbus_sql_t SQL_PUSH_SUBS = {{
    "SELECT name, topic, types, push, secret, secret_prev, secret_prev_until, state,"
    " created_at, group_epoch, start_at, start_from, seek_gen FROM eb_subscriptions"
    " WHERE mode = 'push'",
}};
static const evbus_sql_t SQL_LEASE = {{
    "UPDATE eb_subscriptions SET lease_owner = ?, lease_until = ?"
    " WHERE name = ? AND (lease_owner = ? OR lease_until < ? OR lease_owner IS NULL)",
}};
static const evbus_sql_t SQL_RELEASE = {{
    "UPDATE eb_subscriptions SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ?",
}};
static const evbus_sql_t SQL_CURSOR = {{
    "SELECT cursor, seek_gen FROM eb_subscriptions WHERE name = ?",
}};
static const evbus_sql_t SQL_ACK = {{
    [EVBUS_DIALECT_SQLITE] = "UPDATE eb_subscriptions SET cursor = MAX(cursor, ?), updated_at = ?"
                             " WHERE name = ? AND seek_gen = ? AND lease_owner = ?",
    [EVBUS_DIALECT_PG] = "UPDATE eb_subscriptions SET cursor = GREATEST(cursor, ?), updated_at = ?"
                         " WHERE name = ? AND seek_gen = ? AND lease_owner = ?",
}};
static const evbus_sql_t SQL_DISABLE = {{
    "UPDATE eb_subscriptions SET state = 'disabled', state_reason = ?, updated_at = ?"
    " WHERE name = ?",
}};
static const evbus_sql_t SQL_PARK = {{
    "INSERT INTO eb_dlq (subscription, event_id, position, type, subject, body, attempts,"
    " last_status, last_error, first_attempt_at, failed_at, state)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'parked')"
    " ON CONFLICT (subscription, event_id) DO UPDATE SET attempts = excluded.attempts,"
    " last_status = excluded.last_status, last_error = excluded.last_error,"
    " failed_at = excluded.failed_at, state = 'parked'",
}};
static const evbus_sql_t SQL_REDRIVE_LOAD = {{
    "SELECT id, event_id, position, body, attempts, first_attempt_at FROM eb_dlq"
    " WHERE subscription = ? AND state = 'redrive' ORDER BY id LIMIT ?",
}};
static const evbus_sql_t SQL_REDRIVE_DONE = {{"DELETE FROM eb_dlq WHERE id = ?"}};
static const evbus_sql_t SQL_REDRIVE_PARK = {{
    "UPDATE eb_dlq SET state = 'parked', attempts = ?, last_status = ?, last_error = ?,"
    " failed_at = ? WHERE id = ?",
}};

/* ---- reload: definitions, leases, redrives ---- */

static psub_t *find(eb_pusher_t *p, const char *name)
{
    for (psub_t *ps = p->subs; ps; ps = ps->next)
        if (strcmp(ps->name, name) == 0)
            return ps;
    return NULL;
}

static void take_lease(eb_pusher_t *p, psub_t *ps)
{
    int64_t now = evbus_now_ms();
    /* renewed once half of it is gone: one write per subscription every few seconds */
    if (ps->owned && now < ps->lease_until - LEASE_MS / 2)
        return;
    evbus_stmt_t *st = evbus_store_prepare(p->db, &SQL_LEASE);
    int owned = 0;
    if (st) {
        evbus_stmt_bind_text(st, 1, p->owner);
        evbus_stmt_bind_int64(st, 2, now + LEASE_MS);
        evbus_stmt_bind_text(st, 3, ps->name);
        evbus_stmt_bind_text(st, 4, p->owner);
        evbus_stmt_bind_int64(st, 5, now);
        owned = evbus_stmt_step(st, NULL) == EVBUS_STEP_DONE && evbus_stmt_changes(st) == 1;
        evbus_stmt_done(st);
    }
    if (owned != ps->owned) {
        evbus_log_kv(EVBUS_LOG_INFO, owned ? "push: delivering" : "push: lease lost",
                     "subscription", ps->name, NULL);
        if (!p->app->ksubs)
            reset_window(p, ps);
        reset_redrive(p, ps);
    }
    ps->owned = owned;
    ps->lease_until = owned ? now + LEASE_MS : 0;
}

static void load_redrives(eb_pusher_t *p, psub_t *ps)
{
    if (!ps->owned || ps->nredrive > 0)
        return;
    evbus_stmt_t *st = evbus_store_prepare(p->db, &SQL_REDRIVE_LOAD);
    if (!st)
        return;
    evbus_stmt_bind_text(st, 1, ps->name);
    evbus_stmt_bind_int64(st, 2, REDRIVE_BATCH);
    while (evbus_stmt_step(st, NULL) == EVBUS_STEP_ROW) {
        json_t *ev = json_loads(evbus_stmt_text(st, 3), 0, NULL);
        delivery_t *d = ev ? delivery_new(ps, ev, 0) : NULL;
        json_decref(ev);
        if (!d)
            continue;
        d->dlq_id = evbus_stmt_int64(st, 0);
        d->prior_attempts = (unsigned)evbus_stmt_int64(st, 4);
        d->first_ms = evbus_stmt_int64(st, 5);
        delivery_t **nr = realloc(ps->redrive, (ps->nredrive + 1) * sizeof *nr);
        if (!nr) {
            delivery_free(d);
            break;
        }
        ps->redrive = nr;
        ps->redrive[ps->nredrive++] = d;
    }
    evbus_stmt_done(st);
}

static void reload(eb_pusher_t *p)
{
    evbus_stmt_t *st = evbus_store_prepare(p->db, &SQL_PUSH_SUBS);
    if (!st)
        return;
    for (psub_t *ps = p->subs; ps; ps = ps->next)
        ps->seen = 0;
    int rc;
    while ((rc = evbus_stmt_step(st, NULL)) == EVBUS_STEP_ROW) {
        const char *name = evbus_stmt_text(st, 0);
        int64_t created = evbus_stmt_int64(st, 8);
        json_t *cfg = json_loads(evbus_stmt_text(st, 3), 0, NULL);
        eb_push_t push;
        int ok = cfg && eb_push_load(cfg, &push) == 0;
        json_decref(cfg);
        if (!ok)
            continue;
        psub_t *ps = find(p, name);
        if (ps && ps->created_at != created) { /* deleted and created again */
            ps->seen = 0;
            ps = NULL;
        }
        if (!ps) {
            if (!(ps = calloc(1, sizeof *ps)))
                continue;
            evbus_strlcpy(ps->name, name, sizeof ps->name);
            ps->p = p;
            ps->created_at = created;
            ps->fetched = ps->acked = -1;
            ps->seek_gen = evbus_stmt_int64(st, 12);
            ps->next = p->subs;
            p->subs = ps;
        }
        ps->seen = 1;
        evbus_strlcpy(ps->topic, evbus_stmt_text(st, 1), sizeof ps->topic);
        json_decref(ps->types);
        ps->types = evbus_stmt_is_null(st, 2) ? NULL : json_loads(evbus_stmt_text(st, 2), 0, NULL);
        ps->cfg = push;
        ps->bo = (evbus_backoff_t){push.initial_ms, push.multiplier, push.cap_ms};
        evbus_strlcpy(ps->secret, evbus_stmt_is_null(st, 4) ? "" : evbus_stmt_text(st, 4),
                      sizeof ps->secret);
        evbus_strlcpy(ps->secret_prev, evbus_stmt_is_null(st, 5) ? "" : evbus_stmt_text(st, 5),
                      sizeof ps->secret_prev);
        ps->secret_prev_until = evbus_stmt_int64(st, 6);
        int active = strcmp(evbus_stmt_text(st, 7), "active") == 0;
        if (active && !ps->active)
            ps->breaker = BREAKER_CLOSED, ps->failures = 0;
        ps->active = active;
        int64_t gen = evbus_stmt_int64(st, 12);
        if (gen != ps->seek_gen) { /* sought: read again from the new position */
            ps->seek_gen = gen;
            reset_window(p, ps);
        }
        int64_t epoch = evbus_stmt_int64(st, 9), start = evbus_stmt_int64(st, 10);
        ps->def = (eb_ksub_def_t){.types = ps->types,
                                  .from_earliest = strcmp(evbus_stmt_text(st, 11), "earliest") == 0,
                                  .epoch = epoch ? epoch : created,
                                  .start_at = start ? start : created};
        evbus_strlcpy(ps->def.name, ps->name, sizeof ps->def.name);
        evbus_strlcpy(ps->def.topic, ps->topic, sizeof ps->def.topic);
    }
    evbus_stmt_done(st);
    if (rc != EVBUS_STEP_DONE)
        return;
    for (psub_t **pp = &p->subs; *pp;) {
        psub_t *ps = *pp;
        if (!ps->seen) {
            *pp = ps->next;
            evbus_log_kv(EVBUS_LOG_INFO, "push: subscription gone", "subscription", ps->name, NULL);
            psub_free(p, ps);
            continue;
        }
        take_lease(p, ps);
        if (p->app->ksubs) {
            /* every instance pushes the partitions it holds; the member stays while the
             * pusher holds it, and is replaced when a seek starts a new group */
            if (ps->member && eb_ksub_closed(p->app->ksubs, ps->member)) {
                eb_ksubs_put(p->app->ksubs, ps->member);
                ps->member = NULL;
                reset_window(p, ps);
            }
            eb_ksub_t *m = eb_ksubs_get(p->app->ksubs, &ps->def, 1);
            if (m && m != ps->member) {
                if (ps->member)
                    eb_ksubs_put(p->app->ksubs, ps->member);
                ps->member = m;
                reset_window(p, ps);
            } else if (m) {
                eb_ksubs_put(p->app->ksubs, m);
            }
        }
        load_redrives(p, ps);
        pp = &ps->next;
    }
}

/* ---- reading the source ---- */

static void fill(eb_pusher_t *p, psub_t *ps, int64_t now_us)
{
    int embedded = !p->app->ksubs;
    if (!ps->active || (embedded && !ps->owned) || (!embedded && !ps->member) ||
        ps->nwin >= WINDOW || now_us < ps->next_fetch_us)
        return;
    if (ps->acked < 0) { /* where the source stands */
        if (embedded) {
            evbus_stmt_t *st = evbus_store_prepare(p->db, &SQL_CURSOR);
            if (!st)
                return;
            evbus_stmt_bind_text(st, 1, ps->name);
            int ok = evbus_stmt_step(st, NULL) == EVBUS_STEP_ROW;
            if (ok) {
                ps->acked = evbus_stmt_int64(st, 0);
                ps->seek_gen = evbus_stmt_int64(st, 1);
            }
            evbus_stmt_done(st);
            if (!ok)
                return;
        } else {
            ps->acked = eb_ksub_acked(ps->member);
        }
        ps->fetched = ps->acked;
    }
    json_t *out = json_array();
    int64_t next = ps->fetched;
    unsigned room = (unsigned)(WINDOW - ps->nwin);
    if (embedded) {
        if (p->app->broker->fetch(p->db, ps->topic, ps->types, ps->fetched, room, out, &next) !=
            EVBUS_ERR_OK) {
            json_decref(out);
            ps->next_fetch_us = now_us + FETCH_IDLE_US;
            return;
        }
    } else {
        eb_ksub_fetch(ps->member, ps->fetched, room, out, &next);
    }
    size_t i;
    json_t *item;
    delivery_t **nw = realloc(ps->win, (ps->nwin + json_array_size(out) + 1) * sizeof *nw);
    if (nw)
        ps->win = nw;
    json_array_foreach (out, i, item) {
        if (!nw)
            break;
        int64_t pos = json_integer_value(json_object_get(item, "position"));
        delivery_t *d = delivery_new(ps, json_object_get(item, "event"), pos);
        if (!d) { /* not a CloudEvent we can send: nothing to deliver, it is passed */
            next = pos;
            continue;
        }
        ps->win[ps->nwin++] = d;
        next = pos;
    }
    if (nw)
        ps->fetched = next;
    if (json_array_size(out) == 0)
        ps->next_fetch_us = now_us + FETCH_IDLE_US;
    json_decref(out);
}

/* ---- sending ---- */

static size_t discard(char *ptr, size_t size, size_t n, void *ud)
{
    (void)ptr;
    delivery_t *d = ud;
    d->received += size * n;
    return d->received > MAX_RESPONSE ? 0 : size * n;
}

/* Every connection is checked as it is opened: the address must be public or allowed,
 * whatever the name resolved to when the subscription was created. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    delivery_t *d = ud;
    (void)purpose;
    if (!eb_addr_permitted(d->ps->p->app->allow, &addr->addr)) {
        d->refused = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

static int start(eb_pusher_t *p, delivery_t *d)
{
    psub_t *ps = d->ps;
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    int64_t now_s = evbus_now_ms() / 1000;
    char sig[2 * EVBUS_WEBHOOK_SIG_LEN + 2] = "", prev[EVBUS_WEBHOOK_SIG_LEN];
    size_t len = strlen(d->body);
    if (evbus_webhook_sign(ps->secret, d->id, now_s, d->body, len, sig) != 0) {
        curl_easy_cleanup(e);
        return -1;
    }
    /* while a rotation's grace lasts, the old secret signs too */
    if (*ps->secret_prev && ps->secret_prev_until > evbus_now_ms() &&
        evbus_webhook_sign(ps->secret_prev, d->id, now_s, d->body, len, prev) == 0) {
        strcat(sig, " ");
        strcat(sig, prev);
    }
    char h[600];
    struct curl_slist *hs = NULL;
    hs = curl_slist_append(hs, "Content-Type: application/cloudevents+json; charset=UTF-8");
    snprintf(h, sizeof h, "webhook-id: %s", d->id);
    hs = curl_slist_append(hs, h);
    snprintf(h, sizeof h, "webhook-timestamp: %lld", (long long)now_s);
    hs = curl_slist_append(hs, h);
    snprintf(h, sizeof h, "webhook-signature: %s", sig);
    hs = curl_slist_append(hs, h);
    if (d->correlation) {
        snprintf(h, sizeof h, "X-Correlation-ID: %.200s", d->correlation);
        hs = curl_slist_append(hs, h);
    }
    hs = curl_slist_append(hs, "Expect:");
    d->headers = hs;
    d->received = 0;
    d->refused = 0;
    curl_easy_setopt(e, CURLOPT_URL, ps->cfg.url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)ps->cfg.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(ps->cfg.timeout_ms < 5000 ? ps->cfg.timeout_ms : 5000));
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_PROXY, ""); /* no proxy from the environment */
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "evbus-eventbus");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, d);
    curl_easy_setopt(e, CURLOPT_PRIVATE, d);
    if (curl_multi_add_handle(p->multi, e) != CURLM_OK) {
        curl_slist_free_all(hs);
        d->headers = NULL;
        curl_easy_cleanup(e);
        return -1;
    }
    d->easy = e;
    d->inflight = 1;
    if (!d->first_ms)
        d->first_ms = evbus_now_ms();
    ps->inflight++;
    return 0;
}

/* The keys of the window's unfinished events during one scan: open addressing over
 * twice the window, emptied slot by slot afterwards (not wholesale: scans are frequent). */
typedef struct {
    const char *k[KEYSET];
    uint16_t used[WINDOW];
    size_t nused;
} keyset_t;

static int keyset_add(keyset_t *s, const char *key)
{
    uint32_t h = 2166136261u;
    for (const char *c = key; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    for (uint32_t i = 0; i < KEYSET; i++) {
        uint32_t at = (h + i) % KEYSET;
        if (!s->k[at]) {
            if (s->nused == WINDOW)
                return 0;
            s->k[at] = key;
            s->used[s->nused++] = (uint16_t)at;
            return 1;
        }
        if (strcmp(s->k[at], key) == 0)
            return 0;
    }
    return 0;
}

static void keyset_clear(keyset_t *s)
{
    for (size_t i = 0; i < s->nused; i++)
        s->k[s->used[i]] = NULL;
    s->nused = 0;
}

static int breaker_allows(psub_t *ps, int64_t now_us)
{
    if (ps->breaker == BREAKER_OPEN &&
        now_us >= ps->opened_us + ps->cfg.breaker_cooldown_ms * 1000) {
        ps->breaker = BREAKER_HALF_OPEN; /* one probe */
        ps->p->dirty = 1;
        evbus_log_kv(EVBUS_LOG_INFO, "push: circuit half-open, probing", "subscription", ps->name,
                     NULL);
    }
    if (ps->breaker == BREAKER_OPEN)
        return 0;
    if (ps->breaker == BREAKER_HALF_OPEN)
        return ps->inflight == 0;
    return ps->inflight < ps->cfg.concurrency;
}

/* Starts d if it is due and the breaker lets it; otherwise notes when it is due.
 * Returns -1 when the breaker (or the concurrency) stops the scan. */
static int try_start(eb_pusher_t *p, psub_t *ps, delivery_t *d, int64_t now_us, int64_t *due)
{
    if (d->inflight)
        return 0;
    if (d->next_us > now_us) {
        if (!*due || d->next_us < *due)
            *due = d->next_us;
        return 0;
    }
    if (!breaker_allows(ps, now_us))
        return -1;
    start(p, d);
    return 0;
}

/* Starts what may go now; returns the earliest time something waits for (0: none). */
static int64_t schedule(eb_pusher_t *p, psub_t *ps, int64_t now_us)
{
    int embedded = !p->app->ksubs;
    if (!ps->active)
        return 0;
    int64_t due = 0;
    static keyset_t keys; /* pusher thread only */
    keyset_clear(&keys);
    for (size_t i = 0; i < ps->nwin && !(embedded && !ps->owned); i++) {
        delivery_t *d = ps->win[i];
        if (d->done)
            continue;
        /* an unfinished earlier event on the same key holds this one back */
        if (d->key && !keyset_add(&keys, d->key))
            continue;
        if (try_start(p, ps, d, now_us, &due) < 0)
            break;
    }
    for (size_t i = 0; i < ps->nredrive && ps->owned; i++) {
        delivery_t *d = ps->redrive[i];
        if (!d->done && try_start(p, ps, d, now_us, &due) < 0)
            break;
    }
    if (ps->breaker == BREAKER_OPEN) {
        int64_t at = ps->opened_us + ps->cfg.breaker_cooldown_ms * 1000;
        if (!due || at < due)
            due = at;
    }
    return due;
}

/* ---- outcomes ---- */

static int exec_dlq(eb_pusher_t *p, psub_t *ps, delivery_t *d)
{
    int64_t now = evbus_now_ms();
    unsigned attempts = d->prior_attempts + d->attempts;
    evbus_stmt_t *st;
    if (d->dlq_id) {
        st = evbus_store_prepare(p->db, &SQL_REDRIVE_PARK);
        if (!st)
            return -1;
        evbus_stmt_bind_int64(st, 1, attempts);
        evbus_stmt_bind_int64(st, 2, d->status);
        evbus_stmt_bind_text(st, 3, d->error);
        evbus_stmt_bind_int64(st, 4, now);
        evbus_stmt_bind_int64(st, 5, d->dlq_id);
    } else {
        st = evbus_store_prepare(p->db, &SQL_PARK);
        if (!st)
            return -1;
        evbus_stmt_bind_text(st, 1, ps->name);
        evbus_stmt_bind_text(st, 2, d->id);
        evbus_stmt_bind_int64(st, 3, d->pos);
        evbus_stmt_bind_text(st, 4, d->type);
        evbus_stmt_bind_text(st, 5, d->key);
        evbus_stmt_bind_text(st, 6, d->body);
        evbus_stmt_bind_int64(st, 7, attempts);
        evbus_stmt_bind_int64(st, 8, d->status);
        evbus_stmt_bind_text(st, 9, d->error);
        evbus_stmt_bind_int64(st, 10, d->first_ms);
        evbus_stmt_bind_int64(st, 11, now);
    }
    int ok = evbus_stmt_step(st, NULL) == EVBUS_STEP_DONE;
    evbus_stmt_done(st);
    if (!ok)
        return -1;
    char n[16], status[16];
    snprintf(n, sizeof n, "%u", attempts);
    snprintf(status, sizeof status, "%ld", d->status);
    evbus_log_set_event(d->id);
    evbus_log_kv(EVBUS_LOG_WARN, "push: dead-lettered", "subscription", ps->name, "attempts", n,
                 "last_status", status, "detail", d->error, NULL);
    evbus_log_set_event(NULL);
    return 0;
}

static void disable(eb_pusher_t *p, psub_t *ps, const char *reason)
{
    evbus_stmt_t *st = evbus_store_prepare(p->db, &SQL_DISABLE);
    if (st) {
        evbus_stmt_bind_text(st, 1, reason);
        evbus_stmt_bind_int64(st, 2, evbus_now_ms());
        evbus_stmt_bind_text(st, 3, ps->name);
        evbus_stmt_step(st, NULL);
        evbus_stmt_done(st);
    }
    ps->active = 0;
    evbus_log_kv(EVBUS_LOG_WARN, "push: subscription disabled", "subscription", ps->name, "detail",
                 reason, NULL);
}

static void failed(psub_t *ps, int64_t now_us)
{
    ps->failures++;
    ps->p->dirty = 1;
    if (ps->breaker == BREAKER_HALF_OPEN ||
        (ps->breaker == BREAKER_CLOSED && ps->failures >= ps->cfg.breaker_failures)) {
        if (ps->breaker == BREAKER_CLOSED)
            evbus_log_kv(EVBUS_LOG_WARN, "push: circuit open", "subscription", ps->name, NULL);
        ps->breaker = BREAKER_OPEN;
        ps->opened_us = now_us;
    }
}

static void complete(eb_pusher_t *p, delivery_t *d, CURLcode cc)
{
    psub_t *ps = d->ps;
    long status = 0;
    curl_off_t retry_after = 0;
    curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(d->easy, CURLINFO_RETRY_AFTER, &retry_after);
    curl_multi_remove_handle(p->multi, d->easy);
    curl_easy_cleanup(d->easy);
    curl_slist_free_all(d->headers);
    d->easy = NULL;
    d->headers = NULL;
    d->inflight = 0;
    ps->inflight--;
    d->attempts++;
    d->status = cc == CURLE_OK ? status : 0;
    int64_t now_us = evbus_mono_us();
    if (cc == CURLE_OK && status >= 200 && status < 300) {
        d->done = 1;
        ps->failures = 0;
        if (ps->breaker != BREAKER_CLOSED) {
            /* the endpoint is back: what waited out the outage goes now */
            evbus_log_kv(EVBUS_LOG_INFO, "push: circuit closed", "subscription", ps->name, NULL);
            for (size_t i = 0; i < ps->nwin; i++)
                if (ps->win[i]->next_us > now_us)
                    ps->win[i]->next_us = now_us;
        }
        if (ps->breaker != BREAKER_CLOSED)
            p->dirty = 1;
        ps->breaker = BREAKER_CLOSED;
        if (d->dlq_id) {
            evbus_stmt_t *st = evbus_store_prepare(p->db, &SQL_REDRIVE_DONE);
            if (st) {
                evbus_stmt_bind_int64(st, 1, d->dlq_id);
                evbus_stmt_step(st, NULL);
                evbus_stmt_done(st);
            }
        }
        return;
    }
    if (cc == CURLE_OK && status == 410) {
        d->attempts--; /* not the event's fault: it is sent again once re-enabled */
        disable(p, ps, "the endpoint answered 410 Gone");
        return;
    }
    if (d->refused)
        snprintf(d->error, sizeof d->error, "address not allowed (EVENTBUS_PUSH_ALLOW)");
    else if (cc != CURLE_OK)
        snprintf(d->error, sizeof d->error, "%s", curl_easy_strerror(cc));
    else if (status >= 300 && status < 400)
        snprintf(d->error, sizeof d->error, "HTTP %ld (redirects are not followed)", status);
    else
        snprintf(d->error, sizeof d->error, "HTTP %ld", status);
    failed(ps, now_us);
    if (d->attempts >= ps->cfg.max_attempts) {
        if (exec_dlq(p, ps, d) == 0)
            d->done = 1;
        else /* the dead letter is not stored yet: keep the event, try again shortly */
            d->next_us = now_us + 1000000;
        return;
    }
    int64_t delay_ms = evbus_backoff_delay(&ps->bo, d->attempts - 1);
    if ((status == 429 || status == 503) && retry_after > 0)
        delay_ms = (retry_after > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : retry_after) * 1000;
    d->next_us = now_us + delay_ms * 1000;
    char n[16], wait[24];
    snprintf(n, sizeof n, "%u", d->attempts);
    snprintf(wait, sizeof wait, "%lld", (long long)delay_ms);
    evbus_log_set_event(d->id);
    evbus_log_kv(EVBUS_LOG_INFO, "push: attempt failed", "subscription", ps->name, "attempt", n,
                 "retry_in_ms", wait, "detail", d->error, NULL);
    evbus_log_set_event(NULL);
}

/* Moves the source past the finished front of the window. */
static void advance(eb_pusher_t *p, psub_t *ps)
{
    size_t k = 0;
    while (k < ps->nwin && ps->win[k]->done)
        k++;
    int64_t to = k < ps->nwin ? ps->win[k]->pos - 1 : ps->fetched;
    if (to > ps->acked) {
        int ok = 0;
        if (!p->app->ksubs) {
            evbus_stmt_t *st = evbus_store_prepare(p->db, &SQL_ACK);
            if (st) {
                evbus_stmt_bind_int64(st, 1, to);
                evbus_stmt_bind_int64(st, 2, evbus_now_ms());
                evbus_stmt_bind_text(st, 3, ps->name);
                evbus_stmt_bind_int64(st, 4, ps->seek_gen);
                evbus_stmt_bind_text(st, 5, p->owner);
                ok = evbus_stmt_step(st, NULL) == EVBUS_STEP_DONE && evbus_stmt_changes(st) == 1;
                evbus_stmt_done(st);
            }
        } else if (ps->member) {
            int64_t acked;
            ok = eb_ksub_ack(ps->member, to, &acked) == EB_ACK_OK;
        }
        if (!ok) /* sought, lease lost or member replaced: the next reload sorts it out */
            return;
        ps->acked = to;
    }
    for (size_t i = 0; i < k; i++)
        delivery_free(ps->win[i]);
    if (k) {
        memmove(ps->win, ps->win + k, (ps->nwin - k) * sizeof *ps->win);
        ps->nwin -= k;
    }
    size_t w = 0;
    for (size_t i = 0; i < ps->nredrive; i++) {
        if (ps->redrive[i]->done)
            delivery_free(ps->redrive[i]);
        else
            ps->redrive[w++] = ps->redrive[i];
    }
    ps->nredrive = w;
}

/* ---- status for the API ---- */

static void publish_status(eb_pusher_t *p)
{
    json_t *status = json_object(), *open = json_array();
    size_t n = 0;
    for (psub_t *ps = p->subs; ps; ps = ps->next)
        n++;
    atomic_store(&p->nsubs, (int)n);
    n = 0;
    for (psub_t *ps = p->subs; ps; ps = ps->next, n++) {
        size_t pending = 0;
        for (size_t i = 0; i < ps->nwin; i++)
            pending += !ps->win[i]->done;
        json_object_set_new(status, ps->name,
                            json_pack("{s:{s:s, s:i}, s:i, s:I, s:I, s:b}", "breaker", "state",
                                      breaker_names[ps->breaker], "consecutiveFailures",
                                      (int)ps->failures, "inflight", (int)ps->inflight, "pending",
                                      (json_int_t)pending, "redriving", (json_int_t)ps->nredrive,
                                      "lease", ps->owned));
        if (ps->breaker != BREAKER_CLOSED)
            json_array_append_new(open, json_string(ps->name));
    }
    json_t *health = json_pack("{s:I, s:o}", "subscriptions", (json_int_t)n, "breakersOpen", open);
    pthread_mutex_lock(&p->lock);
    json_decref(p->status);
    json_decref(p->health);
    p->status = status;
    p->health = health;
    pthread_mutex_unlock(&p->lock);
}

json_t *eb_pusher_status(eb_pusher_t *p, const char *name)
{
    pthread_mutex_lock(&p->lock);
    json_t *s = json_deep_copy(json_object_get(p->status, name));
    pthread_mutex_unlock(&p->lock);
    return s;
}

json_t *eb_pusher_health(eb_pusher_t *p)
{
    pthread_mutex_lock(&p->lock);
    json_t *h = p->health ? json_deep_copy(p->health) : json_object();
    pthread_mutex_unlock(&p->lock);
    return h;
}

/* ---- the thread ---- */

static void *pusher_main(void *arg)
{
    eb_pusher_t *p = arg;
    evbus_log_set_correlation(NULL);
    int64_t next_reload = 0;
    while (!atomic_load(&p->stop)) {
        int64_t now = evbus_mono_us();
        if (atomic_exchange(&p->changed, 0))
            next_reload = 0;
        if (now >= next_reload) {
            reload(p);
            publish_status(p);
            next_reload = now + RELOAD_US;
        }
        int64_t due = next_reload;
        int woken = atomic_exchange(&p->woken, 0);
        for (psub_t *ps = p->subs; ps; ps = ps->next) {
            if (woken)
                ps->next_fetch_us = 0;
            fill(p, ps, now);
            int64_t d = schedule(p, ps, now);
            if (d && d < due)
                due = d;
            if (ps->nwin < WINDOW && ps->next_fetch_us > now && ps->next_fetch_us < due)
                due = ps->next_fetch_us;
        }
        int running = 0;
        curl_multi_perform(p->multi, &running);
        CURLMsg *msg;
        int left;
        int finished = 0;
        while ((msg = curl_multi_info_read(p->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            delivery_t *d = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&d);
            complete(p, d, msg->data.result);
            finished = 1;
        }
        for (psub_t *ps = p->subs; ps; ps = ps->next)
            advance(p, ps);
        if (p->dirty) {
            p->dirty = 0;
            publish_status(p);
        }
        if (finished)
            continue; /* what finished may let the next event of its key go */
        int64_t wait_ms = (due - evbus_mono_us()) / 1000;
        if (wait_ms < 1)
            wait_ms = 1;
        if (wait_ms > 1000)
            wait_ms = 1000;
        curl_multi_poll(p->multi, NULL, 0, (int)wait_ms, NULL);
    }
    return NULL;
}

void eb_pusher_wake(eb_pusher_t *p)
{
    if (!p)
        return;
    /* one wakeup for any number of commits until the thread looks, and none while there
     * is nothing to push: publishing does not pay for the pusher */
    if (atomic_load(&p->nsubs) > 0 && atomic_exchange(&p->woken, 1) == 0)
        curl_multi_wakeup(p->multi);
}

void eb_pusher_changed(eb_pusher_t *p)
{
    if (!p)
        return;
    atomic_store(&p->changed, 1);
    atomic_store(&p->woken, 1);
    curl_multi_wakeup(p->multi);
}

eb_pusher_t *eb_pusher_start(eb_app_t *app)
{
    eb_pusher_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->app = app;
    pthread_mutex_init(&p->lock, NULL);
    evbus_uuid7(p->owner);
    if (!(p->db = evbus_store_open(app->cfg.db)) || !(p->multi = curl_multi_init()) ||
        pthread_create(&p->thread, NULL, pusher_main, p) != 0) {
        evbus_store_close(p->db);
        if (p->multi)
            curl_multi_cleanup(p->multi);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    return p;
}

void eb_pusher_stop(eb_pusher_t *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, 1);
    curl_multi_wakeup(p->multi);
    pthread_join(p->thread, NULL);
    while (p->subs) {
        psub_t *ps = p->subs;
        p->subs = ps->next;
        psub_free(p, ps);
    }
    /* another instance takes over at once rather than after the lease runs out */
    evbus_stmt_t *st = evbus_store_prepare(p->db, &SQL_RELEASE);
    if (st) {
        evbus_stmt_bind_text(st, 1, p->owner);
        evbus_stmt_step(st, NULL);
        evbus_stmt_done(st);
    }
    curl_multi_cleanup(p->multi);
    evbus_store_close(p->db);
    json_decref(p->status);
    json_decref(p->health);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
