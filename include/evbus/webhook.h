/* Standard Webhooks signatures: the sender signs "<webhook-id>.<webhook-timestamp>.<body>"
 * with HMAC-SHA256 under a shared secret and sends "v1,<base64>" in webhook-signature
 * (several, space-separated, while a secret is being rotated). The receiver checks the
 * timestamp is recent and that one signature matches one of its secrets. */
#ifndef EVBUS_WEBHOOK_H
#define EVBUS_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

#define EVBUS_WEBHOOK_SECRET_LEN 51   /* "whsec_" + base64 of 32 bytes, with NUL: 51 */
#define EVBUS_WEBHOOK_SIG_LEN 48      /* "v1," + base64 of 32 bytes, with NUL */
#define EVBUS_WEBHOOK_TOLERANCE_S 300 /* how old (or how far ahead) a timestamp may be */
#define EVBUS_WEBHOOK_MAX_HEADER 4096 /* longest webhook-signature header looked at */

typedef enum {
    EVBUS_WEBHOOK_OK = 0,
    EVBUS_WEBHOOK_MALFORMED,     /* a header missing or not in the expected form */
    EVBUS_WEBHOOK_EXPIRED,       /* timestamp outside the tolerance */
    EVBUS_WEBHOOK_BAD_SIGNATURE, /* no signature matches any secret */
} evbus_webhook_result_t;

/* Writes a fresh random secret ("whsec_" + base64 of 32 bytes) into out
 * (EVBUS_WEBHOOK_SECRET_LEN bytes). */
void evbus_webhook_secret_new(char out[EVBUS_WEBHOOK_SECRET_LEN]);
/* 1 when s is a usable secret: "whsec_" (optional) + base64 of 24..64 bytes. */
int evbus_webhook_secret_valid(const char *s);
/* Writes "v1,<base64 HMAC-SHA256>" of id.ts.body under secret. -1 on a bad secret. */
int evbus_webhook_sign(const char *secret, const char *id, int64_t ts, const char *body,
                       size_t body_len, char out[EVBUS_WEBHOOK_SIG_LEN]);
/* Checks a delivery against up to n secrets (NULL entries skipped): the three header
 * values as received (NULL when missing), the raw body, and the current time. */
evbus_webhook_result_t evbus_webhook_verify(const char *const *secrets, size_t n, const char *id,
                                            const char *timestamp, const char *signature,
                                            const char *body, size_t body_len, int64_t now_s);

/* Replay guard: remembers deliveries (webhook-id and timestamp) handled in the last
 * 2 x tolerance, so a captured request sent again is refused. Bounded: capacity
 * entries; when full, the oldest remembered entry in the probed range is forgotten
 * (its timestamp soon ages past the tolerance anyway). Thread-safe. */
typedef struct evbus_webhook_guard evbus_webhook_guard_t;
evbus_webhook_guard_t *evbus_webhook_guard_new(size_t capacity);
/* 1 when this delivery was handled before (within the window). */
int evbus_webhook_guard_seen(evbus_webhook_guard_t *g, const char *id, const char *timestamp,
                             int64_t now_s);
/* Remembers a delivery once it was handled. */
void evbus_webhook_guard_remember(evbus_webhook_guard_t *g, const char *id, const char *timestamp,
                                  int64_t now_s);
void evbus_webhook_guard_free(evbus_webhook_guard_t *g);

#endif
