/* Structured logs: one JSON object per line on stderr (or a readable text form). */
#ifndef EVBUS_LOG_H
#define EVBUS_LOG_H

typedef enum { EVBUS_LOG_DEBUG, EVBUS_LOG_INFO, EVBUS_LOG_WARN, EVBUS_LOG_ERROR } evbus_log_level_t;

/* Sets the service name, minimum level and format ("json" or "text").
 * Call once at start, before other threads log. */
void evbus_log_init(const char *service, evbus_log_level_t min, const char *format);
/* Parses "debug|info|warn|error"; returns -1 if unknown. */
int evbus_log_level_parse(const char *s);
/* Returns 1 if a message at lvl would be written (cheap check before formatting). */
int evbus_log_enabled(evbus_log_level_t lvl);

/* Per-thread context added to every line this thread writes. Strings are copied
 * (bounded); NULL clears. */
void evbus_log_set_correlation(const char *correlation_id);
void evbus_log_set_event(const char *event_id);
const char *evbus_log_correlation(void);

/* Writes one line. kv is an optional list of extra string pairs: key, value, ...,
 * NULL. Values are JSON-escaped. Any thread. */
void evbus_log_kv(evbus_log_level_t lvl, const char *msg, ...);
/* printf-style message; no extra fields. */
void evbus_logf(evbus_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define evbus_log_info(...) evbus_logf(EVBUS_LOG_INFO, __VA_ARGS__)
#define evbus_log_warn(...) evbus_logf(EVBUS_LOG_WARN, __VA_ARGS__)
#define evbus_log_error(...) evbus_logf(EVBUS_LOG_ERROR, __VA_ARGS__)
#define evbus_log_debug(...)                                                                       \
    do {                                                                                           \
        if (evbus_log_enabled(EVBUS_LOG_DEBUG))                                                    \
            evbus_logf(EVBUS_LOG_DEBUG, __VA_ARGS__);                                              \
    } while (0)

#endif
