/* Parked long-polls. A poll that finds nothing suspends its connection here; a commit
 * on its topic resumes it at once (no sleep anywhere on the path), and a timer thread
 * resumes it at its deadline. The generation counter closes the race between a poll's
 * query and its parking: a commit in between is seen and the poll queries again. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventbus.h"
#include "evbus/util.h"

struct eb_waiters {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t timer;
    eb_waiter_t head; /* circular list sentinel */
    uint64_t gen;
    int64_t next_wake_us; /* when the timer thread wakes next */
    int stop;
};

static void unlink_(eb_waiter_t *w)
{
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->parked = 0;
}

static void *timer_main(void *arg)
{
    eb_waiters_t *ws = arg;
    pthread_mutex_lock(&ws->lock);
    while (!ws->stop) {
        int64_t now = evbus_mono_us(), next = now + 1000000;
        for (eb_waiter_t *w = ws->head.next; w != &ws->head;) {
            eb_waiter_t *nx = w->next;
            if (w->deadline_us <= now) {
                unlink_(w);
                evbus_req_resume(w->req);
            } else if (w->deadline_us < next) {
                next = w->deadline_us;
            }
            w = nx;
        }
        ws->next_wake_us = next;
        struct timespec ts = {.tv_sec = next / 1000000, .tv_nsec = (next % 1000000) * 1000};
        pthread_cond_timedwait(&ws->cond, &ws->lock, &ts);
    }
    pthread_mutex_unlock(&ws->lock);
    return NULL;
}

eb_waiters_t *eb_waiters_new(void)
{
    eb_waiters_t *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->head.next = ws->head.prev = &ws->head;
    pthread_mutex_init(&ws->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ws->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&ws->timer, NULL, timer_main, ws) != 0) {
        free(ws);
        return NULL;
    }
    return ws;
}

uint64_t eb_waiters_gen(eb_waiters_t *ws)
{
    pthread_mutex_lock(&ws->lock);
    uint64_t g = ws->gen;
    pthread_mutex_unlock(&ws->lock);
    return g;
}

int eb_waiters_park(eb_waiters_t *ws, eb_waiter_t *w, uint64_t seen_gen)
{
    pthread_mutex_lock(&ws->lock);
    if (ws->gen != seen_gen || ws->stop) {
        pthread_mutex_unlock(&ws->lock);
        return 0;
    }
    /* suspend before anyone can find the waiter, so a resume always follows a suspend */
    evbus_req_suspend(w->req);
    w->next = &ws->head;
    w->prev = ws->head.prev;
    ws->head.prev->next = w;
    ws->head.prev = w;
    w->parked = 1;
    if (w->deadline_us < ws->next_wake_us)
        pthread_cond_signal(&ws->cond); /* the timer sleeps past this deadline */
    pthread_mutex_unlock(&ws->lock);
    return 1;
}

void eb_waiters_notify(eb_waiters_t *ws, const char *const *topics, size_t n)
{
    pthread_mutex_lock(&ws->lock);
    ws->gen++;
    for (eb_waiter_t *w = ws->head.next; w != &ws->head;) {
        eb_waiter_t *nx = w->next;
        int match = topics == NULL;
        for (size_t i = 0; !match && i < n; i++)
            match = strcmp(topics[i], w->topic) == 0;
        if (match) {
            unlink_(w);
            evbus_req_resume(w->req);
        }
        w = nx;
    }
    pthread_mutex_unlock(&ws->lock);
}

void eb_waiters_close(eb_waiters_t *ws)
{
    pthread_mutex_lock(&ws->lock);
    if (ws->stop) {
        pthread_mutex_unlock(&ws->lock);
        return;
    }
    ws->stop = 1;
    pthread_cond_signal(&ws->cond);
    pthread_mutex_unlock(&ws->lock);
    pthread_join(ws->timer, NULL);
    eb_waiters_notify(ws, NULL, 0);
}

void eb_waiters_free(eb_waiters_t *ws)
{
    if (!ws)
        return;
    eb_waiters_close(ws);
    pthread_mutex_destroy(&ws->lock);
    pthread_cond_destroy(&ws->cond);
    free(ws);
}
