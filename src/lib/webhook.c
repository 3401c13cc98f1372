/* Standard Webhooks signing and verification over libsodium's HMAC-SHA256. */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "evbus/util.h"
#include "evbus/webhook.h"

#define PREFIX "whsec_"
#define KEY_MIN 24
#define KEY_MAX 64
#define MAX_ID 256
#define MAX_SIGNATURES 8

/* Decodes a secret into key; returns its length, or -1. */
static int secret_key(const char *secret, unsigned char key[KEY_MAX])
{
    if (!secret)
        return -1;
    if (strncmp(secret, PREFIX, strlen(PREFIX)) == 0)
        secret += strlen(PREFIX);
    size_t len = 0;
    if (strlen(secret) > 2 * KEY_MAX ||
        sodium_base642bin(key, KEY_MAX, secret, strlen(secret), NULL, &len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        len < KEY_MIN)
        return -1;
    return (int)len;
}

void evbus_webhook_secret_new(char out[EVBUS_WEBHOOK_SECRET_LEN])
{
    unsigned char key[32];
    randombytes_buf(key, sizeof key);
    memcpy(out, PREFIX, strlen(PREFIX));
    sodium_bin2base64(out + strlen(PREFIX), EVBUS_WEBHOOK_SECRET_LEN - strlen(PREFIX), key,
                      sizeof key, sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(key, sizeof key);
}

int evbus_webhook_secret_valid(const char *s)
{
    unsigned char key[KEY_MAX];
    int ok = secret_key(s, key) > 0;
    sodium_memzero(key, sizeof key);
    return ok;
}

static void mac(const unsigned char *key, size_t keylen, const char *id, int64_t ts,
                const char *body, size_t body_len, unsigned char out[32])
{
    char tsbuf[24];
    int n = snprintf(tsbuf, sizeof tsbuf, "%lld", (long long)ts);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)id, strlen(id));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)tsbuf, (size_t)n);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, body_len);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

int evbus_webhook_sign(const char *secret, const char *id, int64_t ts, const char *body,
                       size_t body_len, char out[EVBUS_WEBHOOK_SIG_LEN])
{
    unsigned char key[KEY_MAX], sig[32];
    int keylen = secret_key(secret, key);
    if (keylen < 0)
        return -1;
    mac(key, (size_t)keylen, id, ts, body, body_len, sig);
    sodium_memzero(key, sizeof key);
    memcpy(out, "v1,", 3);
    sodium_bin2base64(out + 3, EVBUS_WEBHOOK_SIG_LEN - 3, sig, sizeof sig,
                      sodium_base64_VARIANT_ORIGINAL);
    return 0;
}

evbus_webhook_result_t evbus_webhook_verify(const char *const *secrets, size_t n, const char *id,
                                            const char *timestamp, const char *signature,
                                            const char *body, size_t body_len, int64_t now_s)
{
    int64_t ts;
    if (!id || !*id || strlen(id) > MAX_ID || !timestamp || !signature ||
        strlen(signature) > EVBUS_WEBHOOK_MAX_HEADER ||
        evbus_parse_i64(timestamp, 0, INT64_C(1) << 40, &ts) != 0)
        return EVBUS_WEBHOOK_MALFORMED;
    if (ts < now_s - EVBUS_WEBHOOK_TOLERANCE_S || ts > now_s + EVBUS_WEBHOOK_TOLERANCE_S)
        return EVBUS_WEBHOOK_EXPIRED;
    /* the signatures offered: "v1,<base64>" separated by spaces; other versions ignored */
    unsigned char offered[MAX_SIGNATURES][32];
    size_t noffered = 0;
    const char *p = signature;
    while (*p && noffered < MAX_SIGNATURES) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, " ");
        size_t got = 0;
        if (len > 3 && strncmp(p, "v1,", 3) == 0 &&
            sodium_base642bin(offered[noffered], 32, p + 3, len - 3, NULL, &got, NULL,
                              sodium_base64_VARIANT_ORIGINAL) == 0 &&
            got == 32)
            noffered++;
        p += len;
    }
    if (noffered == 0)
        return EVBUS_WEBHOOK_MALFORMED;
    int match = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char key[KEY_MAX], expect[32];
        int keylen = secrets[i] ? secret_key(secrets[i], key) : -1;
        if (keylen < 0)
            continue;
        mac(key, (size_t)keylen, id, ts, body, body_len, expect);
        sodium_memzero(key, sizeof key);
        for (size_t j = 0; j < noffered; j++)
            match |= sodium_memcmp(expect, offered[j], 32) == 0;
    }
    return match ? EVBUS_WEBHOOK_OK : EVBUS_WEBHOOK_BAD_SIGNATURE;
}

/* ---- replay guard: open addressing on a keyed hash of id.timestamp ---- */

#define PROBES 32

typedef struct {
    unsigned char digest[16];
    int64_t at; /* when remembered (s); 0 = empty */
} guard_slot_t;

struct evbus_webhook_guard {
    pthread_mutex_t lock;
    unsigned char key[crypto_shorthash_KEYBYTES];
    guard_slot_t *slots;
    size_t n;
};

evbus_webhook_guard_t *evbus_webhook_guard_new(size_t capacity)
{
    evbus_webhook_guard_t *g = calloc(1, sizeof *g);
    if (!g || capacity < PROBES || !(g->slots = calloc(capacity, sizeof *g->slots))) {
        free(g);
        return NULL;
    }
    g->n = capacity;
    randombytes_buf(g->key, sizeof g->key);
    pthread_mutex_init(&g->lock, NULL);
    return g;
}

void evbus_webhook_guard_free(evbus_webhook_guard_t *g)
{
    if (!g)
        return;
    pthread_mutex_destroy(&g->lock);
    free(g->slots);
    free(g);
}

static void guard_digest(const char *id, const char *ts, unsigned char out[16])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 16);
    crypto_generichash_update(&st, (const unsigned char *)id, strlen(id));
    crypto_generichash_update(&st, (const unsigned char *)".", 1);
    crypto_generichash_update(&st, (const unsigned char *)ts, strlen(ts));
    crypto_generichash_final(&st, out, 16);
}

static size_t guard_home(const evbus_webhook_guard_t *g, const unsigned char d[16])
{
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, d, 16, g->key);
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return (size_t)(v % g->n);
}

static int fresh(const guard_slot_t *s, int64_t now_s)
{
    return s->at && s->at > now_s - 2 * EVBUS_WEBHOOK_TOLERANCE_S;
}

int evbus_webhook_guard_seen(evbus_webhook_guard_t *g, const char *id, const char *timestamp,
                             int64_t now_s)
{
    unsigned char d[16];
    guard_digest(id, timestamp, d);
    size_t home = guard_home(g, d);
    int seen = 0;
    pthread_mutex_lock(&g->lock);
    for (size_t i = 0; i < PROBES && !seen; i++) {
        guard_slot_t *s = &g->slots[(home + i) % g->n];
        seen = fresh(s, now_s) && memcmp(s->digest, d, 16) == 0;
    }
    pthread_mutex_unlock(&g->lock);
    return seen;
}

void evbus_webhook_guard_remember(evbus_webhook_guard_t *g, const char *id, const char *timestamp,
                                  int64_t now_s)
{
    unsigned char d[16];
    guard_digest(id, timestamp, d);
    size_t home = guard_home(g, d);
    pthread_mutex_lock(&g->lock);
    guard_slot_t *victim = &g->slots[home];
    for (size_t i = 0; i < PROBES; i++) {
        guard_slot_t *s = &g->slots[(home + i) % g->n];
        if (!fresh(s, now_s) || memcmp(s->digest, d, 16) == 0) {
            victim = s;
            break;
        }
        if (s->at < victim->at)
            victim = s;
    }
    memcpy(victim->digest, d, 16);
    victim->at = now_s;
    pthread_mutex_unlock(&g->lock);
}
