/* Structured logging: each call builds one line in a bounded stack buffer and writes
 * it with a single write(2), so lines from different threads never interleave. */
#include "evbus/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "evbus/util.h"

#define LINE_MAX_BYTES 4096

static char g_service[32] = "evbus";
static evbus_log_level_t g_min = EVBUS_LOG_INFO;
static int g_text;

static _Thread_local char t_corr[129];
static _Thread_local char t_event[129];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void evbus_log_init(const char *service, evbus_log_level_t min, const char *format)
{
    evbus_strlcpy(g_service, service, sizeof g_service);
    g_min = min;
    g_text = format && strcmp(format, "text") == 0;
}

int evbus_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

int evbus_log_enabled(evbus_log_level_t lvl)
{
    return lvl >= g_min;
}

void evbus_log_set_correlation(const char *id)
{
    evbus_strlcpy(t_corr, id ? id : "", sizeof t_corr);
}

void evbus_log_set_event(const char *id)
{
    evbus_strlcpy(t_event, id ? id : "", sizeof t_event);
}

const char *evbus_log_correlation(void)
{
    return t_corr[0] ? t_corr : NULL;
}

typedef struct {
    char buf[LINE_MAX_BYTES];
    size_t len;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    /* keep room for the closing "}\n" */
    if (l->len + n > sizeof l->buf - 3)
        n = sizeof l->buf - 3 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_escaped(line_t *l, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            put(l, esc, 6);
        } else {
            put(l, (const char *)p, 1);
        }
    }
}

static void field(line_t *l, const char *k, const char *v)
{
    if (g_text) {
        puts_(l, " ");
        puts_(l, k);
        puts_(l, "=");
        put_escaped(l, v);
        return;
    }
    puts_(l, ",\"");
    puts_(l, k);
    puts_(l, "\":\"");
    put_escaped(l, v);
    puts_(l, "\"");
}

static void emit(evbus_log_level_t lvl, const char *msg, va_list *kv)
{
    line_t l;
    l.len = 0;
    char ts[40];
    evbus_fmt_rfc3339(evbus_now_ms(), ts, sizeof ts);
    if (g_text) {
        char head[96];
        snprintf(head, sizeof head, "%s %-5s %-8s ", ts + 11, level_names[lvl], g_service);
        puts_(&l, head);
        put_escaped(&l, msg);
    } else {
        puts_(&l, "{\"ts\":\"");
        puts_(&l, ts);
        puts_(&l, "\",\"level\":\"");
        puts_(&l, level_names[lvl]);
        puts_(&l, "\",\"service\":\"");
        put_escaped(&l, g_service);
        puts_(&l, "\",\"msg\":\"");
        put_escaped(&l, msg);
        puts_(&l, "\"");
    }
    if (t_corr[0])
        field(&l, "correlation_id", t_corr);
    if (t_event[0])
        field(&l, "event_id", t_event);
    if (kv) {
        const char *k;
        while ((k = va_arg(*kv, const char *)) != NULL) {
            const char *v = va_arg(*kv, const char *);
            field(&l, k, v ? v : "");
        }
    }
    if (!g_text)
        puts_(&l, "}");
    puts_(&l, "\n");
    ssize_t off = 0;
    while (off < (ssize_t)l.len) {
        ssize_t w = write(STDERR_FILENO, l.buf + off, l.len - (size_t)off);
        if (w <= 0)
            break;
        off += w;
    }
}

void evbus_log_kv(evbus_log_level_t lvl, const char *msg, ...)
{
    if (lvl < g_min)
        return;
    va_list ap;
    va_start(ap, msg);
    emit(lvl, msg, &ap);
    va_end(ap);
}

void evbus_logf(evbus_log_level_t lvl, const char *fmt, ...)
{
    if (lvl < g_min)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(lvl, msg, NULL);
}
