/* Cross-process wake-up on PostgreSQL: every eventbus writer sends NOTIFY evbus_events
 * with the topics of its commit; this thread LISTENs and resumes the local long-polls
 * on those topics. A slow fallback wakes every poll now and then (and after a
 * reconnect), so a lost notification delays a poll, never strands it. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventbus.h"
#include "evbus/log.h"
#include "evbus/util.h"

#define WAIT_MS 500
#define FALLBACK_US 2000000

struct eb_listener {
    pthread_t thread;
    evbus_store_t *st;
    eb_waiters_t *waiters;
    volatile int stop;
};

static void on_notify(const char *payload, void *ud)
{
    eb_listener_t *l = ud;
    if (strcmp(payload, "*") == 0) {
        eb_waiters_notify(l->waiters, NULL, 0);
        return;
    }
    char buf[4000];
    const char *topics[64];
    size_t n = 0;
    evbus_strlcpy(buf, payload, sizeof buf);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t && n < 64; t = strtok_r(NULL, ",", &save))
        topics[n++] = t;
    eb_waiters_notify(l->waiters, topics, n);
}

static void *listener_main(void *arg)
{
    eb_listener_t *l = arg;
    int listening = 0;
    int64_t last_fallback = evbus_mono_us();
    while (!l->stop) {
        if (!listening) {
            listening = evbus_store_listen(l->st, "evbus_events") == EVBUS_ERR_OK;
            if (listening)
                eb_waiters_notify(l->waiters, NULL, 0); /* catch up on what we missed */
        }
        if (listening && evbus_store_wait_notify(l->st, WAIT_MS, on_notify, l) != EVBUS_ERR_OK) {
            evbus_log_warn("listener: connection lost, listening again when it is back");
            listening = 0;
        }
        if (!listening) {
            struct timespec ts = {0, WAIT_MS * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (evbus_mono_us() - last_fallback >= FALLBACK_US) {
            last_fallback = evbus_mono_us();
            eb_waiters_notify(l->waiters, NULL, 0);
        }
    }
    return NULL;
}

eb_listener_t *eb_listener_start(const char *db_url, eb_waiters_t *waiters)
{
    evbus_store_t *st = evbus_store_open(db_url);
    if (!st)
        return NULL;
    if (!evbus_store_has_notify(st)) {
        evbus_store_close(st);
        return NULL;
    }
    eb_listener_t *l = calloc(1, sizeof *l);
    if (!l) {
        evbus_store_close(st);
        return NULL;
    }
    l->st = st;
    l->waiters = waiters;
    if (pthread_create(&l->thread, NULL, listener_main, l) != 0) {
        evbus_store_close(st);
        free(l);
        return NULL;
    }
    return l;
}

void eb_listener_stop(eb_listener_t *l)
{
    if (!l)
        return;
    l->stop = 1;
    pthread_join(l->thread, NULL);
    evbus_store_close(l->st);
    free(l);
}
