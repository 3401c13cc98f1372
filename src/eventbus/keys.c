/* API keys. A key is "evb_<id>_<secret>": the id finds the row, the secret (192 random
 * bits) is checked against a keyed BLAKE2b hash of it (a per-key random salt as the
 * key) with a constant-time compare. Random secrets this long need no slow hash: there
 * is nothing to guess. The plain key is shown once, at creation.
 *
 * A key is an admin key (everything), or carries scopes: the event types (exact, or a
 * prefix ending in '*') and sources it may publish, and the subscriptions (same
 * patterns) it may manage, poll and ack. Lookups are cached for a few seconds, so a
 * revocation takes effect within that time and a publish does not read the table. */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eventbus.h"
#include "evbus/log.h"
#include "evbus/util.h"

#define ID_BYTES 8      /* 16 hex characters */
#define SECRET_BYTES 24 /* 192 bits */
#define SALT_BYTES 16
#define CACHE_SLOTS 256
#define CACHE_TTL_US 5000000
#define MAX_PATTERNS 64

struct eb_key {
    int refs; /* the cache's and each request's; eb_keys lock */
    char id[2 * ID_BYTES + 1];
    unsigned char salt[SALT_BYTES], hash[32];
    int admin, revoked;
    json_t *types, *sources, *subs; /* arrays of patterns, or NULL */
};

typedef struct {
    eb_key_t *key;
    int64_t loaded_us;
} cache_slot_t;

struct eb_keys {
    evbus_store_pool_t *pool;
    pthread_mutex_t lock;
    cache_slot_t cache[CACHE_SLOTS];
};

static void key_free(eb_key_t *k)
{
    if (!k)
        return;
    json_decref(k->types);
    json_decref(k->sources);
    json_decref(k->subs);
    free(k);
}

static void secret_hash(const unsigned char salt[SALT_BYTES], const char *secret,
                        unsigned char out[32])
{
    crypto_generichash(out, 32, (const unsigned char *)secret, strlen(secret), salt, SALT_BYTES);
}

/* ---- patterns ---- */

static int pattern_match(const char *pattern, const char *s)
{
    size_t n = strlen(pattern);
    if (n > 0 && pattern[n - 1] == '*')
        return strncmp(pattern, s, n - 1) == 0;
    return strcmp(pattern, s) == 0;
}

static int any_match(json_t *patterns, const char *s)
{
    size_t i;
    json_t *p;
    json_array_foreach (patterns, i, p) {
        if (json_is_string(p) && pattern_match(json_string_value(p), s))
            return 1;
    }
    return 0;
}

int eb_key_may_publish(const eb_key_t *k, const char *type, const char *source)
{
    return k->admin || (any_match(k->types, type) && any_match(k->sources, source));
}

int eb_key_may_use(const eb_key_t *k, const char *subscription)
{
    return k->admin || (subscription && any_match(k->subs, subscription));
}

int eb_key_admin(const eb_key_t *k)
{
    return k->admin;
}

/* ---- the table ---- */

static const evbus_sql_t SQL_KEY_GET = {{
    "SELECT salt, hash, admin, types, sources, subscriptions, revoked_at FROM eb_api_keys"
    " WHERE id = ?",
}};
static const evbus_sql_t SQL_KEY_INSERT = {{
    "INSERT INTO eb_api_keys (id, name, salt, hash, admin, types, sources, subscriptions,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
}};
static const evbus_sql_t SQL_KEY_LIST = {{
    "SELECT id, name, admin, types, sources, subscriptions, created_at, revoked_at"
    " FROM eb_api_keys ORDER BY created_at, id",
}};
static const evbus_sql_t SQL_KEY_REVOKE = {{
    "UPDATE eb_api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
}};

static int hex_field(const char *hex, unsigned char *out, size_t len)
{
    size_t got = 0;
    return hex && sodium_hex2bin(out, len, hex, strlen(hex), NULL, &got, NULL) == 0 && got == len
               ? 0
               : -1;
}

/* The row for id: a key, NULL when there is none; *err on a database failure. */
static eb_key_t *load(evbus_store_t *db, const char *id, int *err)
{
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_KEY_GET);
    *err = !st;
    if (!st)
        return NULL;
    evbus_stmt_bind_text(st, 1, id);
    int rc = evbus_stmt_step(st, NULL);
    eb_key_t *k = NULL;
    if (rc == EVBUS_STEP_ROW && (k = calloc(1, sizeof *k))) {
        evbus_strlcpy(k->id, id, sizeof k->id);
        if (hex_field(evbus_stmt_text(st, 0), k->salt, SALT_BYTES) != 0 ||
            hex_field(evbus_stmt_text(st, 1), k->hash, 32) != 0) {
            key_free(k);
            k = NULL;
        } else {
            k->admin = (int)evbus_stmt_int64(st, 2);
            for (int c = 3; c <= 5; c++) {
                json_t *v =
                    evbus_stmt_is_null(st, c) ? NULL : json_loads(evbus_stmt_text(st, c), 0, NULL);
                *(c == 3 ? &k->types : c == 4 ? &k->sources : &k->subs) = v;
            }
            k->revoked = !evbus_stmt_is_null(st, 6);
        }
    }
    *err = rc == EVBUS_STEP_ERROR;
    evbus_stmt_done(st);
    return k;
}

eb_keys_t *eb_keys_new(evbus_store_pool_t *pool)
{
    eb_keys_t *ks = calloc(1, sizeof *ks);
    if (!ks)
        return NULL;
    ks->pool = pool;
    pthread_mutex_init(&ks->lock, NULL);
    return ks;
}

void eb_keys_free(eb_keys_t *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (ks->cache[i].key && --ks->cache[i].key->refs == 0)
            key_free(ks->cache[i].key);
    pthread_mutex_destroy(&ks->lock);
    free(ks);
}

/* Splits "evb_<id>_<secret>"; -1 when it is not that shape. */
static int split(const char *token, char id[2 * ID_BYTES + 1], const char **secret)
{
    if (strncmp(token, "evb_", 4) != 0 || strlen(token) > 128)
        return -1;
    const char *p = token + 4, *us = strchr(p, '_');
    if (!us || us - p != 2 * ID_BYTES || strlen(us + 1) < 16)
        return -1;
    memcpy(id, p, 2 * ID_BYTES);
    id[2 * ID_BYTES] = '\0';
    for (int i = 0; i < 2 * ID_BYTES; i++)
        if (!strchr("0123456789abcdef", id[i]))
            return -1;
    *secret = us + 1;
    return 0;
}

static void unref(eb_key_t *k)
{
    if (k && --k->refs == 0)
        key_free(k);
}

void eb_keys_put(eb_keys_t *ks, eb_key_t *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&ks->lock);
    unref(k);
    pthread_mutex_unlock(&ks->lock);
}

eb_auth_t eb_keys_check(eb_keys_t *ks, const char *authorization, eb_key_t **out)
{
    *out = NULL;
    char id[2 * ID_BYTES + 1];
    const char *secret;
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0 ||
        split(authorization + 7, id, &secret) != 0)
        return EB_AUTH_MISSING;
    uint32_t h = 2166136261u;
    for (const char *c = id; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    cache_slot_t *slot = &ks->cache[h % CACHE_SLOTS];
    int64_t now = evbus_mono_us();
    eb_key_t *k = NULL;
    pthread_mutex_lock(&ks->lock);
    if (slot->key && strcmp(slot->key->id, id) == 0 && now - slot->loaded_us < CACHE_TTL_US) {
        k = slot->key;
        k->refs++;
    }
    pthread_mutex_unlock(&ks->lock);
    if (!k) {
        int err = 0;
        evbus_store_t *db = evbus_store_pool_get(ks->pool);
        k = load(db, id, &err);
        evbus_store_pool_put(ks->pool, db);
        if (err)
            return EB_AUTH_UNAVAILABLE;
        if (!k)
            return EB_AUTH_BAD;
        k->refs = 2; /* the cache's and ours */
        pthread_mutex_lock(&ks->lock);
        unref(slot->key);
        slot->key = k;
        slot->loaded_us = now;
        pthread_mutex_unlock(&ks->lock);
    }
    unsigned char hash[32];
    secret_hash(k->salt, secret, hash);
    if (sodium_memcmp(hash, k->hash, 32) != 0 || k->revoked) {
        eb_keys_put(ks, k);
        return EB_AUTH_BAD;
    }
    *out = k;
    return EB_AUTH_OK;
}

/* ---- creating, listing, revoking ---- */

static char *patterns_json(json_t *v)
{
    return v ? json_dumps(v, JSON_COMPACT) : NULL;
}

int eb_keys_create(evbus_store_t *db, const char *name, int admin, json_t *types, json_t *sources,
                   json_t *subs, char *key_out, size_t key_len, char *id_out)
{
    unsigned char idb[ID_BYTES], secretb[SECRET_BYTES], salt[SALT_BYTES], hash[32];
    char id[2 * ID_BYTES + 1], secret[64], salt_hex[2 * SALT_BYTES + 1], hash_hex[65];
    randombytes_buf(idb, sizeof idb);
    randombytes_buf(secretb, sizeof secretb);
    randombytes_buf(salt, sizeof salt);
    sodium_bin2hex(id, sizeof id, idb, sizeof idb);
    sodium_bin2base64(secret, sizeof secret, secretb, sizeof secretb,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    secret_hash(salt, secret, hash);
    sodium_bin2hex(salt_hex, sizeof salt_hex, salt, sizeof salt);
    sodium_bin2hex(hash_hex, sizeof hash_hex, hash, sizeof hash);
    char *t = patterns_json(types), *s = patterns_json(sources), *u = patterns_json(subs);
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_KEY_INSERT);
    int ok = 0;
    if (st) {
        evbus_stmt_bind_text(st, 1, id);
        evbus_stmt_bind_text(st, 2, name);
        evbus_stmt_bind_text(st, 3, salt_hex);
        evbus_stmt_bind_text(st, 4, hash_hex);
        evbus_stmt_bind_int64(st, 5, admin ? 1 : 0);
        evbus_stmt_bind_text(st, 6, t);
        evbus_stmt_bind_text(st, 7, s);
        evbus_stmt_bind_text(st, 8, u);
        evbus_stmt_bind_int64(st, 9, evbus_now_ms());
        ok = evbus_stmt_step(st, NULL) == EVBUS_STEP_DONE;
        evbus_stmt_done(st);
    }
    free(t);
    free(s);
    free(u);
    if (ok) {
        snprintf(key_out, key_len, "evb_%s_%s", id, secret);
        if (id_out)
            strcpy(id_out, id);
    }
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(secretb, sizeof secretb);
    return ok ? 0 : -1;
}

json_t *eb_keys_list(evbus_store_t *db)
{
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_KEY_LIST);
    if (!st)
        return NULL;
    json_t *items = json_array();
    int rc;
    while ((rc = evbus_stmt_step(st, NULL)) == EVBUS_STEP_ROW) {
        char created[40], revoked[40] = "";
        evbus_fmt_rfc3339(evbus_stmt_int64(st, 6), created, sizeof created);
        if (!evbus_stmt_is_null(st, 7))
            evbus_fmt_rfc3339(evbus_stmt_int64(st, 7), revoked, sizeof revoked);
        json_t *j = json_pack("{s:s, s:s, s:b, s:s, s:s?}", "id", evbus_stmt_text(st, 0), "name",
                              evbus_stmt_text(st, 1), "admin", (int)evbus_stmt_int64(st, 2),
                              "createdAt", created, "revokedAt", *revoked ? revoked : NULL);
        const char *names[] = {"types", "sources", "subscriptions"};
        for (int c = 0; c < 3; c++)
            json_object_set_new(j, names[c],
                                evbus_stmt_is_null(st, 3 + c)
                                    ? json_null()
                                    : json_loads(evbus_stmt_text(st, 3 + c), 0, NULL));
        json_array_append_new(items, j);
    }
    evbus_stmt_done(st);
    if (rc != EVBUS_STEP_DONE) {
        json_decref(items);
        return NULL;
    }
    return items;
}

int64_t eb_keys_revoke(evbus_store_t *db, const char *id)
{
    evbus_stmt_t *st = evbus_store_prepare(db, &SQL_KEY_REVOKE);
    if (!st)
        return -1;
    evbus_stmt_bind_int64(st, 1, evbus_now_ms());
    evbus_stmt_bind_text(st, 2, id);
    int64_t n = evbus_stmt_step(st, NULL) == EVBUS_STEP_DONE ? evbus_stmt_changes(st) : -1;
    evbus_stmt_done(st);
    return n;
}

/* A list of patterns from "a,b,c" (NULL when empty). */
json_t *eb_patterns(const char *csv)
{
    if (!csv || !*csv)
        return NULL;
    json_t *a = json_array();
    char *copy = strdup(csv), *save = NULL;
    for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
        if (*t && json_array_size(a) < MAX_PATTERNS)
            json_array_append_new(a, json_string(t));
    free(copy);
    return a;
}

/* ---- on requests ---- */

int eb_authenticate(eb_app_t *app, evbus_req_t *req, eb_key_t **key)
{
    *key = NULL;
    if (!app->keys)
        return 1;
    eb_auth_t a = eb_keys_check(app->keys, evbus_req_header(req, "Authorization"), key);
    if (a == EB_AUTH_OK)
        return 1;
    if (a == EB_AUTH_UNAVAILABLE) {
        evbus_req_unavailable(req, "the key store is not available");
        return 0;
    }
    evbus_req_add_header(req, "WWW-Authenticate", "Bearer");
    evbus_req_problem(req, 401, "unauthorized", "Unauthorized",
                      a == EB_AUTH_MISSING
                          ? "an API key is required (Authorization: Bearer evb_...)"
                          : "the API key is not valid",
                      NULL);
    return 0;
}

int eb_authorize(eb_app_t *app, evbus_req_t *req, const char *subscription)
{
    eb_key_t *k = NULL;
    if (!eb_authenticate(app, req, &k))
        return 0;
    int ok = !k || (subscription ? eb_key_may_use(k, subscription) : eb_key_admin(k));
    eb_keys_put(app->keys, k);
    if (!ok)
        evbus_req_problem(req, 403, "forbidden", "Forbidden",
                          subscription ? "this key may not use this subscription"
                                       : "this needs an admin key",
                          NULL);
    return ok;
}

/* ---- the keys API (admin) ---- */

static json_t *string_list(json_t *v, int *ok)
{
    if (!v || json_is_null(v))
        return NULL;
    size_t i;
    json_t *e;
    if (!json_is_array(v) || json_array_size(v) > MAX_PATTERNS)
        *ok = 0;
    json_array_foreach (v, i, e) {
        if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) > 256)
            *ok = 0;
    }
    return *ok ? json_incref(v) : NULL;
}

void eb_keys_create_handler(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    static const char *const json_types[] = {"application/json", NULL};
    if (!eb_authorize(app, req, NULL) || !evbus_req_require_type(req, json_types))
        return;
    json_t *b = evbus_req_json(req);
    if (!b)
        return;
    const char *name = json_string_value(json_object_get(b, "name"));
    json_t *admin = json_object_get(b, "admin");
    int ok = json_is_object(b) && name && *name && strlen(name) <= 100 &&
             (!admin || json_is_boolean(admin));
    json_t *publish = json_object_get(b, "publish");
    json_t *types = string_list(json_object_get(publish, "types"), &ok);
    json_t *sources = string_list(json_object_get(publish, "sources"), &ok);
    json_t *subs = string_list(json_object_get(b, "subscriptions"), &ok);
    if (publish && !json_is_object(publish))
        ok = 0;
    if (!ok) {
        json_decref(b);
        json_decref(types);
        json_decref(sources);
        json_decref(subs);
        evbus_req_problem(req, 400, "invalid-key", "Invalid Key Definition",
                          "expected {\"name\", \"admin\"?, \"publish\"?: {\"types\": [...], "
                          "\"sources\": [...]}, \"subscriptions\"?: [...]}",
                          NULL);
        return;
    }
    char key[128], id[2 * ID_BYTES + 1];
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int rc =
        eb_keys_create(db, name, json_is_true(admin), types, sources, subs, key, sizeof key, id);
    evbus_store_pool_put(app->pool, db);
    if (rc != 0) {
        evbus_req_unavailable(req, "the key could not be stored");
    } else {
        evbus_log_kv(EVBUS_LOG_INFO, "api key created", "key_id", id, "name", name, NULL);
        evbus_req_reply_json(req, 201,
                             json_pack("{s:s, s:s, s:s, s:b, s:O?, s:O?, s:O?}", "id", id, "name",
                                       name, "key", key, "admin", json_is_true(admin), "types",
                                       types, "sources", sources, "subscriptions", subs));
    }
    sodium_memzero(key, sizeof key);
    json_decref(b);
    json_decref(types);
    json_decref(sources);
    json_decref(subs);
}

void eb_keys_list_handler(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    if (!eb_authorize(app, req, NULL))
        return;
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    json_t *items = eb_keys_list(db);
    evbus_store_pool_put(app->pool, db);
    if (!items) {
        evbus_req_unavailable(req, "the key store is not available");
        return;
    }
    evbus_req_reply_json(req, 200, json_pack("{s:o}", "keys", items));
}

void eb_keys_revoke_handler(evbus_req_t *req, void *ud)
{
    eb_app_t *app = ud;
    if (!eb_authorize(app, req, NULL))
        return;
    const char *id = evbus_req_param(req, "id");
    evbus_store_t *db = evbus_store_pool_get(app->pool);
    int64_t n = eb_keys_revoke(db, id);
    evbus_store_pool_put(app->pool, db);
    if (n < 0) {
        evbus_req_unavailable(req, "the key store is not available");
    } else if (n == 0) {
        evbus_req_problem(req, 404, "key-not-found", "Key Not Found", "no active key with this id",
                          NULL);
    } else {
        evbus_log_kv(EVBUS_LOG_INFO, "api key revoked", "key_id", id, NULL);
        evbus_req_reply_json(req, 204, NULL);
    }
}
