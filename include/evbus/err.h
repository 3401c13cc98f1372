/* Error codes shared by every libevbus function: one list, one strerror. */
#ifndef EVBUS_ERR_H
#define EVBUS_ERR_H

/* X(name, retriable, text) */
#define EVBUS_ERR_LIST(X)                                                                          \
    X(OK, 0, "success")                                                                            \
    X(INVALID, 0, "invalid argument or input")                                                     \
    X(NOMEM, 1, "out of memory")                                                                   \
    X(TOOBIG, 0, "input exceeds a configured bound")                                               \
    X(NOTFOUND, 0, "not found")                                                                    \
    X(CONFLICT, 0, "conflicts with existing state")                                                \
    X(DB, 1, "database error")                                                                     \
    X(IO, 1, "I/O error")                                                                          \
    X(UNAVAILABLE, 1, "peer or resource unavailable")                                              \
    X(TIMEOUT, 1, "timed out")                                                                     \
    X(REJECTED, 0, "peer rejected the request")                                                    \
    X(SHUTDOWN, 1, "shutting down")

typedef enum {
#define EVBUS__ERR_ENUM(name, r, t) EVBUS_ERR_##name,
    EVBUS_ERR_LIST(EVBUS__ERR_ENUM)
#undef EVBUS__ERR_ENUM
        EVBUS_ERR__COUNT
} evbus_err_t;

/* Returns a static string describing err; never NULL. Any thread. */
const char *evbus_strerror(evbus_err_t err);

/* Returns 1 when an operation failing with err may succeed if retried later. */
int evbus_err_retriable(evbus_err_t err);

#endif
