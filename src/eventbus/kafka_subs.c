/* Subscriptions served from Kafka consumer groups.
 *
 * Each subscription is one consumer group. Every eventbus instance that is pulled on a
 * subscription runs one member of its group, so the instances share the topic's
 * partitions. A member's thread buffers the messages of its partitions in arrival order
 * and numbers them; a poll hands out the buffered events after the last acknowledged
 * number, and an ack commits, per partition, the offset after the last acknowledged
 * message. Nothing is committed before its ack, so when a member dies or loses
 * partitions in a rebalance, the next owner starts from the last ack: events are
 * redelivered, never lost. A member giving partitions up in a rebalance first waits a
 * few seconds for the acks of the events it handed out on them, so a live client's
 * batch is not delivered twice.
 *
 * The numbers (positions) belong to one member. Their high bits carry a random epoch,
 * so an ack that reaches another instance, or the same instance after a restart, is
 * refused instead of acknowledging events nobody saw. A member leaves the group after
 * an idle time without polls, so no instance sits on partitions nobody reads. */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"
#include "evbus/log.h"
#include "evbus/util.h"
#include "kafka.h"

#define EPOCH_SHIFT 32
#define QUERY_TIMEOUT_MS 10000
#define COMMIT_RETRY_US 1000000
#define TOPIC_RETRY_US 2000000
/* How long a member losing partitions waits for the acks of events it handed out on
 * them, so a routine rebalance does not redeliver what a live client is finishing. */
#define HANDOVER_GRACE_US 5000000

typedef struct {
    int64_t pos;
    int32_t partition;
    int64_t offset;
    json_t *event; /* NULL: skipped (type filtered out, or not a CloudEvent) */
    size_t bytes;
} entry_t;

typedef struct {
    int assigned;
    int64_t acked;     /* offset to commit: after the last acknowledged message; -1 none */
    int64_t committed; /* last offset committed by this member; -1 none */
} part_t;

struct eb_ksub {
    eb_ksub_t *next; /* manager list */
    eb_ksubs_t *m;
    eb_ksub_def_t def;
    char group[160];
    char ktopic[EB_MAX_TOPIC_PREFIX + EB_MAX_TOPIC + 1]; /* the topic's name in Kafka */
    int refs, linked;                                    /* manager lock */
    int64_t last_used_us;                                /* manager lock */

    rd_kafka_t *rk;
    pthread_t thread;
    int started;
    atomic_int stop;
    pthread_mutex_t commit_lock; /* one commit at a time, so offsets never go back */

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t acked_cond;
    entry_t *buf;
    size_t head, len, cap; /* live entries are buf[head..len) */
    size_t bytes;
    int64_t last_pos, acked_pos, delivered_pos;
    part_t *parts;
    size_t nparts;
    int paused;
};

struct eb_ksubs {
    eb_ksubs_opts_t o;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    eb_ksub_t *list;
    pthread_t reaper;
    int reaper_started, stop;
};

/* The partition's state, growing the table as needed; NULL when out of memory. Lock
 * held. */
static part_t *part(eb_ksub_t *s, int32_t p)
{
    if (p < 0)
        return NULL;
    if ((size_t)p >= s->nparts) {
        size_t n = (size_t)p + 1;
        part_t *np = realloc(s->parts, n * sizeof *np);
        if (!np)
            return NULL;
        for (size_t i = s->nparts; i < n; i++)
            np[i] = (part_t){0, -1, -1};
        s->parts = np;
        s->nparts = n;
    }
    return &s->parts[p];
}

static size_t buffered(const eb_ksub_t *s)
{
    return s->len - s->head;
}

/* Appends an entry; lock held. */
static int push_entry(eb_ksub_t *s, const entry_t *e)
{
    if (s->head > 0 && s->head >= s->len / 2) { /* reuse the acknowledged front */
        memmove(s->buf, s->buf + s->head, buffered(s) * sizeof *s->buf);
        s->len -= s->head;
        s->head = 0;
    }
    if (s->len == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        entry_t *nb = realloc(s->buf, cap * sizeof *nb);
        if (!nb)
            return -1;
        s->buf = nb;
        s->cap = cap;
    }
    s->buf[s->len++] = *e;
    s->bytes += e->bytes;
    return 0;
}

/* Drops the buffered entries of the partitions in list (a rebalance took them); lock
 * held. They are fetched again by whoever owns the partition next. */
static void drop_partitions(eb_ksub_t *s, const rd_kafka_topic_partition_list_t *list)
{
    size_t w = s->head;
    for (size_t r = s->head; r < s->len; r++) {
        int gone = 0;
        for (int i = 0; i < list->cnt && !gone; i++)
            gone = list->elems[i].partition == s->buf[r].partition;
        if (gone) {
            s->bytes -= s->buf[r].bytes;
            json_decref(s->buf[r].event);
        } else {
            s->buf[w++] = s->buf[r];
        }
    }
    s->len = w;
    for (int i = 0; i < list->cnt; i++) {
        part_t *p = part(s, list->elems[i].partition);
        if (p)
            *p = (part_t){0, -1, -1};
    }
}

/* Commits what was acknowledged and not committed yet, on the partitions in only (NULL:
 * all assigned). Returns 0 when nothing is left to commit. */
static int commit_acked(eb_ksub_t *s, const rd_kafka_topic_partition_list_t *only)
{
    pthread_mutex_lock(&s->commit_lock);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(4);
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nparts; i++) {
        part_t *p = &s->parts[i];
        if (!p->assigned || p->acked <= p->committed)
            continue;
        int wanted = !only;
        for (int j = 0; only && j < only->cnt && !wanted; j++)
            wanted = only->elems[j].partition == (int32_t)i;
        if (wanted)
            rd_kafka_topic_partition_list_add(l, s->ktopic, (int32_t)i)->offset = p->acked;
    }
    pthread_mutex_unlock(&s->lock);
    int rc = 0;
    if (l->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_commit(s->rk, l, 0);
        if (e) {
            evbus_log_kv(EVBUS_LOG_WARN, "kafka: offset commit failed, will retry", "subscription",
                         s->def.name, "detail", rd_kafka_err2str(e), NULL);
            rc = -1;
        } else {
            pthread_mutex_lock(&s->lock);
            for (int i = 0; i < l->cnt; i++) {
                part_t *p = part(s, l->elems[i].partition);
                if (p && l->elems[i].offset > p->committed)
                    p->committed = l->elems[i].offset;
            }
            pthread_mutex_unlock(&s->lock);
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    pthread_mutex_unlock(&s->commit_lock);
    return rc;
}

/* Where newly assigned partitions start: at the group's committed offset; with none,
 * at the beginning ("from": "earliest") or at the first message not older than the
 * subscription ("latest"). When Kafka cannot tell, the offsets stay unset and the
 * consumer starts at the committed offset or else the beginning: more redelivery,
 * never a gap. */
static void start_offsets(eb_ksub_t *s, rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(parts);
    if (rd_kafka_committed(s->rk, c, QUERY_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(c);
        return;
    }
    for (int i = 0; i < c->cnt; i++) {
        rd_kafka_topic_partition_t *p = &c->elems[i];
        if (p->err || p->offset >= 0) {
            parts->elems[i].offset = p->err ? RD_KAFKA_OFFSET_INVALID : p->offset;
            continue;
        }
        if (s->def.from_earliest) {
            parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
            continue;
        }
        /* the high watermark first: a message that lands after it is found by the time
         * lookup or lies beyond it */
        int64_t low = 0, high = 0;
        if (rd_kafka_query_watermark_offsets(s->rk, p->topic, p->partition, &low, &high,
                                             QUERY_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
            continue;
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, p->topic, p->partition)->offset = s->def.start_at;
        if (rd_kafka_offsets_for_times(s->rk, t, QUERY_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            !t->elems[0].err)
            parts->elems[i].offset = t->elems[0].offset >= 0 ? t->elems[0].offset : high;
        rd_kafka_topic_partition_list_destroy(t);
    }
    rd_kafka_topic_partition_list_destroy(c);
}

static void log_partitions(const eb_ksub_t *s, const char *msg,
                           const rd_kafka_topic_partition_list_t *l)
{
    char list[256] = "";
    size_t n = 0;
    for (int i = 0; i < l->cnt && n < sizeof list - 16; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", i ? "," : "",
                              (int)l->elems[i].partition);
    evbus_log_kv(EVBUS_LOG_INFO, msg, "subscription", s->def.name, "partitions", list, NULL);
}

/* 1 when an event on one of the partitions in list was handed out and not acknowledged;
 * lock held. */
static int unacked_on(const eb_ksub_t *s, const rd_kafka_topic_partition_list_t *list)
{
    for (size_t r = s->head; r < s->len && s->buf[r].pos <= s->delivered_pos; r++)
        for (int i = 0; i < list->cnt; i++)
            if (list->elems[i].partition == s->buf[r].partition)
                return 1;
    return 0;
}

/* Before giving partitions up: waits a little for the acks of what was handed out on
 * them, then drops the rest of their buffer. */
static void hand_over(eb_ksub_t *s, const rd_kafka_topic_partition_list_t *list, int lost)
{
    int64_t until = evbus_mono_us() + HANDOVER_GRACE_US;
    pthread_mutex_lock(&s->lock);
    while (!lost && !atomic_load(&s->stop) && unacked_on(s, list) && evbus_mono_us() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->acked_cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    if (!lost)
        commit_acked(s, list); /* the next owner starts after the last ack */
    pthread_mutex_lock(&s->lock);
    drop_partitions(s, list);
    pthread_mutex_unlock(&s->lock);
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    eb_ksub_t *s = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        start_offsets(s, parts);
        pthread_mutex_lock(&s->lock);
        for (int i = 0; i < parts->cnt; i++) {
            part_t *p = part(s, parts->elems[i].partition);
            if (p)
                *p = (part_t){1, -1, -1};
        }
        s->paused = 0;
        pthread_mutex_unlock(&s->lock);
        if (coop)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        log_partitions(s, "kafka: partitions assigned", parts);
    } else {
        hand_over(s, parts, rd_kafka_assignment_lost(rk));
        if (coop)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
        log_partitions(s, "kafka: partitions revoked", parts);
    }
    if (e) {
        evbus_log_kv(EVBUS_LOG_WARN, "kafka: rebalance failed", "subscription", s->def.name,
                     "detail", rd_kafka_error_string(e), NULL);
        rd_kafka_error_destroy(e);
    }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)err;
    eb_ksub_t *s = opaque;
    evbus_log_kv(EVBUS_LOG_WARN, "kafka: consumer error", "subscription", s->def.name, "detail",
                 reason, NULL);
}

static void take_message(eb_ksub_t *s, const rd_kafka_message_t *m)
{
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            evbus_log_kv(EVBUS_LOG_DEBUG, "kafka: consumer", "subscription", s->def.name, "detail",
                         rd_kafka_message_errstr(m), NULL);
        return;
    }
    json_t *ev = json_loadb(m->payload ? m->payload : "", m->len, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (!json_is_object(ev) || !type) {
        char where[48];
        snprintf(where, sizeof where, "%d/%lld", (int)m->partition, (long long)m->offset);
        evbus_log_kv(EVBUS_LOG_WARN, "kafka: message is not a CloudEvent, skipped", "subscription",
                     s->def.name, "partition/offset", where, NULL);
        json_decref(ev);
        ev = NULL;
    } else if (!eb_type_wanted(s->def.types, type)) {
        json_decref(ev);
        ev = NULL;
    }
    pthread_mutex_lock(&s->lock);
    part_t *p = part(s, m->partition);
    int kept = 0;
    if (p && p->assigned) {
        entry_t e = {s->last_pos + 1, m->partition, m->offset, ev, m->len};
        if (push_entry(s, &e) == 0) {
            s->last_pos++;
            kept = 1;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (!kept) {
        json_decref(ev);
        return;
    }
    if (ev) {
        const char *topic = s->def.topic;
        eb_waiters_notify(s->m->o.waiters, &topic, 1);
        if (s->m->o.on_events)
            s->m->o.on_events(s->m->o.ud);
    }
}

/* Pauses fetching while the buffer is full, resumes when it has room again. */
static void flow_control(eb_ksub_t *s)
{
    size_t high = s->m->o.buffer_events, high_bytes = s->m->o.buffer_bytes;
    pthread_mutex_lock(&s->lock);
    int full = buffered(s) >= high || s->bytes >= high_bytes;
    int roomy = buffered(s) <= high / 2 && s->bytes <= high_bytes / 2;
    int change = (full && !s->paused) ? 1 : (roomy && s->paused) ? -1 : 0;
    if (change)
        s->paused = change > 0;
    pthread_mutex_unlock(&s->lock);
    if (!change)
        return;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(s->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
        if (change > 0)
            rd_kafka_pause_partitions(s->rk, a);
        else
            rd_kafka_resume_partitions(s->rk, a);
    }
    if (a)
        rd_kafka_topic_partition_list_destroy(a);
}

static void *ksub_main(void *arg)
{
    eb_ksub_t *s = arg;
    char err[256] = "";
    evbus_log_set_correlation(NULL);
    /* the topic may not exist yet (nothing published to it): create it so the group
     * can be assigned its partitions now rather than at a later metadata refresh */
    int topic_ok = eb_kafka_create_topic(s->rk, s->ktopic, s->m->o.partitions, s->m->o.retention_ms,
                                         &s->stop, err, sizeof err) == 0;
    rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(t, s->ktopic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(s->rk, t);
    rd_kafka_topic_partition_list_destroy(t);
    if (e)
        evbus_log_kv(EVBUS_LOG_ERROR, "kafka: cannot subscribe", "subscription", s->def.name,
                     "detail", rd_kafka_err2str(e), NULL);
    int64_t next_commit = 0, next_topic = evbus_mono_us() + TOPIC_RETRY_US;
    while (!atomic_load(&s->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->rk, 100);
        if (m) {
            take_message(s, m);
            rd_kafka_message_destroy(m);
        }
        flow_control(s);
        int64_t now = evbus_mono_us();
        if (now >= next_commit) { /* acks whose commit failed */
            commit_acked(s, NULL);
            next_commit = now + COMMIT_RETRY_US;
        }
        if (!topic_ok && now >= next_topic) {
            topic_ok = eb_kafka_create_topic(s->rk, s->ktopic, s->m->o.partitions,
                                             s->m->o.retention_ms, &s->stop, err, sizeof err) == 0;
            next_topic = now + TOPIC_RETRY_US;
        }
    }
    commit_acked(s, NULL);
    rd_kafka_consumer_close(s->rk); /* leaves the group: the partitions move on now */
    return NULL;
}

static void ksub_destroy(eb_ksub_t *s)
{
    if (!s)
        return;
    if (s->started) {
        atomic_store(&s->stop, 1);
        pthread_join(s->thread, NULL);
        evbus_log_kv(EVBUS_LOG_INFO, "kafka: left the consumer group", "subscription", s->def.name,
                     "group", s->group, NULL);
    }
    if (s->rk)
        rd_kafka_destroy(s->rk);
    for (size_t i = s->head; i < s->len; i++)
        json_decref(s->buf[i].event);
    free(s->buf);
    free(s->parts);
    json_decref(s->def.types);
    pthread_cond_destroy(&s->acked_cond);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->commit_lock);
    free(s);
}

static eb_ksub_t *ksub_new(eb_ksubs_t *m, const eb_ksub_def_t *def)
{
    eb_ksub_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->m = m;
    s->def = *def;
    s->def.types = json_incref(def->types);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->acked_cond, NULL);
    pthread_mutex_init(&s->commit_lock, NULL);
    /* a new subscription with the same name is a new group: old offsets do not apply */
    snprintf(s->group, sizeof s->group, "evbus.%s%s.%lld", m->o.prefix, def->name,
             (long long)def->epoch);
    snprintf(s->ktopic, sizeof s->ktopic, "%s%s", m->o.prefix, def->topic);
    /* 20 bits keep positions below 2^53, exact in any JSON reader */
    uint32_t epoch = randombytes_uniform(0xFFFFF) + 1;
    s->acked_pos = s->last_pos = s->delivered_pos = (int64_t)epoch << EPOCH_SHIFT;

    char session[16], heartbeat[16];
    snprintf(session, sizeof session, "%d", m->o.session_timeout_ms);
    snprintf(heartbeat, sizeof heartbeat, "%d", m->o.session_timeout_ms / 3);
    const char *const settings[][2] = {
        {"bootstrap.servers", m->o.brokers},
        {"group.id", s->group},
        {"client.id", "evbus-eventbus-subscription"},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        /* eager: a member gives its partitions up in the revoke callback, while its
         * generation is still valid, so the commits of the last acks there succeed (an
         * incremental rebalance makes them race the rejoin and fail) */
        {"partition.assignment.strategy", "roundrobin"},
        {"session.timeout.ms", session},
        {"heartbeat.interval.ms", heartbeat},
        {"topic.metadata.refresh.interval.ms", "5000"},
        {"queued.max.messages.kbytes", "8192"},
        {"reconnect.backoff.ms", "100"},
        {"reconnect.backoff.max.ms", "2000"},
    };
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (eb_kafka_conf_set(conf, settings, sizeof settings / sizeof settings[0]) != 0) {
        rd_kafka_conf_destroy(conf);
        ksub_destroy(s);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, eb_kafka_on_log);
    rd_kafka_conf_set_opaque(conf, s);
    if (!(s->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err))) {
        evbus_log_kv(EVBUS_LOG_ERROR, "kafka: cannot create a consumer", "detail", err, NULL);
        rd_kafka_conf_destroy(conf);
        ksub_destroy(s);
        return NULL;
    }
    rd_kafka_poll_set_consumer(s->rk);
    if (pthread_create(&s->thread, NULL, ksub_main, s) != 0) {
        ksub_destroy(s);
        return NULL;
    }
    s->started = 1;
    evbus_log_kv(EVBUS_LOG_INFO, "kafka: joining the consumer group", "subscription", def->name,
                 "group", s->group, NULL);
    return s;
}

/* ---- the manager ---- */

static void unlink_locked(eb_ksubs_t *m, eb_ksub_t *s)
{
    for (eb_ksub_t **pp = &m->list; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    s->linked = 0;
}

static void *reaper_main(void *arg)
{
    eb_ksubs_t *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->stop) {
        int64_t now = evbus_mono_us();
        eb_ksub_t *idle = NULL;
        for (eb_ksub_t *s = m->list; s && !idle; s = s->next)
            if (s->refs == 0 && now - s->last_used_us > m->o.idle_ms * 1000)
                idle = s;
        if (idle) {
            unlink_locked(m, idle);
            pthread_mutex_unlock(&m->lock);
            evbus_log_kv(EVBUS_LOG_INFO, "kafka: subscription idle on this instance",
                         "subscription", idle->def.name, NULL);
            ksub_destroy(idle);
            pthread_mutex_lock(&m->lock);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

eb_ksubs_t *eb_ksubs_new(const eb_ksubs_opts_t *opts)
{
    eb_ksubs_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->o = *opts;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    if (pthread_create(&m->reaper, NULL, reaper_main, m) != 0) {
        eb_ksubs_free(m);
        return NULL;
    }
    m->reaper_started = 1;
    return m;
}

void eb_ksubs_free(eb_ksubs_t *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->stop = 1;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    if (m->reaper_started)
        pthread_join(m->reaper, NULL);
    while (m->list) {
        eb_ksub_t *s = m->list;
        m->list = s->next;
        ksub_destroy(s);
    }
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

eb_ksub_t *eb_ksubs_get(eb_ksubs_t *m, const eb_ksub_def_t *def, int join)
{
    eb_ksub_t *stale = NULL, *s;
    pthread_mutex_lock(&m->lock);
    for (s = m->list; s; s = s->next)
        if (strcmp(s->def.name, def->name) == 0)
            break;
    if (s && s->def.epoch != def->epoch) { /* deleted and created again, or sought */
        unlink_locked(m, s);
        if (s->refs == 0)
            stale = s;
        s = NULL;
    }
    if (!s && join && !m->stop && (s = ksub_new(m, def))) {
        s->next = m->list;
        m->list = s;
        s->linked = 1;
    }
    if (s) {
        s->refs++;
        if (join)
            s->last_used_us = evbus_mono_us();
    }
    pthread_mutex_unlock(&m->lock);
    ksub_destroy(stale);
    return s;
}

void eb_ksubs_put(eb_ksubs_t *m, eb_ksub_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&m->lock);
    s->last_used_us = evbus_mono_us();
    int gone = --s->refs == 0 && !s->linked;
    pthread_mutex_unlock(&m->lock);
    if (gone)
        ksub_destroy(s);
}

void eb_ksubs_drop(eb_ksubs_t *m, const char *name)
{
    eb_ksub_t *s;
    pthread_mutex_lock(&m->lock);
    for (s = m->list; s; s = s->next)
        if (strcmp(s->def.name, name) == 0)
            break;
    if (s) {
        unlink_locked(m, s);
        if (s->refs > 0)
            s = NULL; /* the last eb_ksubs_put frees it */
    }
    pthread_mutex_unlock(&m->lock);
    ksub_destroy(s);
}

int eb_ksub_closed(eb_ksubs_t *m, eb_ksub_t *s)
{
    pthread_mutex_lock(&m->lock);
    int closed = !s->linked;
    pthread_mutex_unlock(&m->lock);
    return closed;
}

int64_t eb_ksub_acked(eb_ksub_t *s)
{
    pthread_mutex_lock(&s->lock);
    int64_t a = s->acked_pos;
    pthread_mutex_unlock(&s->lock);
    return a;
}

int eb_ksub_fetch(eb_ksub_t *s, int64_t after, unsigned max, json_t *out, int64_t *next)
{
    pthread_mutex_lock(&s->lock);
    if (after < s->acked_pos || (after >> EPOCH_SHIFT) != (s->acked_pos >> EPOCH_SHIFT))
        after = s->acked_pos;
    *next = after;
    int examined = 0;
    unsigned n = 0;
    for (size_t i = s->head; i < s->len && n < max; i++) {
        entry_t *e = &s->buf[i];
        if (e->pos <= after)
            continue;
        *next = e->pos;
        examined = 1;
        if (!e->event)
            continue;
        json_array_append_new(out, json_pack("{s:I, s:i, s:I, s:O}", "position", (json_int_t)e->pos,
                                             "partition", (int)e->partition, "offset",
                                             (json_int_t)e->offset, "event", e->event));
        n++;
    }
    if (*next > s->delivered_pos)
        s->delivered_pos = *next;
    pthread_mutex_unlock(&s->lock);
    return examined;
}

eb_ack_t eb_ksub_ack(eb_ksub_t *s, int64_t pos, int64_t *acked)
{
    pthread_mutex_lock(&s->lock);
    if ((pos >> EPOCH_SHIFT) != (s->acked_pos >> EPOCH_SHIFT)) {
        pthread_mutex_unlock(&s->lock);
        return EB_ACK_FOREIGN;
    }
    if (pos > s->last_pos) {
        pthread_mutex_unlock(&s->lock);
        return EB_ACK_RANGE;
    }
    while (s->head < s->len && s->buf[s->head].pos <= pos) {
        entry_t *e = &s->buf[s->head++];
        part_t *p = part(s, e->partition);
        if (p && e->offset + 1 > p->acked)
            p->acked = e->offset + 1;
        s->bytes -= e->bytes;
        json_decref(e->event);
    }
    if (pos > s->acked_pos)
        s->acked_pos = pos;
    *acked = s->acked_pos;
    pthread_cond_broadcast(&s->acked_cond);
    pthread_mutex_unlock(&s->lock);
    commit_acked(s, NULL); /* a failure is retried by the member's thread */
    return EB_ACK_OK;
}

json_t *eb_ksub_info(eb_ksub_t *s, int64_t *position, int64_t *head)
{
    json_t *parts = json_array();
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nparts; i++)
        if (s->parts[i].assigned)
            json_array_append_new(parts, json_integer((json_int_t)i));
    *position = s->acked_pos;
    *head = s->last_pos;
    json_t *info = json_pack("{s:s, s:o, s:I, s:b}", "group", s->group, "partitions", parts,
                             "buffered", (json_int_t)buffered(s), "paused", s->paused);
    pthread_mutex_unlock(&s->lock);
    return info;
}
