/* JWT issue and verification over libjwt, with the algorithm pinned and the registered
 * claims checked here (libjwt 1.10 verifies the signature, not the claims). */
#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "evbus/jwt.h"

#define CLOCK_SKEW_S 60

int evbus_jwt_key(evbus_jwt_t *j, const char *b64)
{
    size_t len = 0;
    if (!b64 || strlen(b64) > 2 * EVBUS_JWT_KEY_MAX)
        return -1;
    int variants[] = {sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_URLSAFE,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++)
        if (sodium_base642bin(j->key, sizeof j->key, b64, strlen(b64), NULL, &len, NULL,
                              variants[i]) == 0 &&
            len >= EVBUS_JWT_KEY_MIN) {
            j->keylen = len;
            return 0;
        }
    return -1;
}

char *evbus_jwt_issue(const evbus_jwt_t *j, const char *sub, const char *role, const char *email,
                      int64_t now_s)
{
    jwt_t *t = NULL;
    char *out = NULL;
    if (jwt_new(&t) != 0)
        return NULL;
    if (jwt_add_grant(t, "iss", j->issuer) == 0 && jwt_add_grant(t, "aud", j->audience) == 0 &&
        jwt_add_grant(t, "sub", sub) == 0 && jwt_add_grant(t, "role", role) == 0 &&
        (!email || jwt_add_grant(t, "email", email) == 0) &&
        jwt_add_grant_int(t, "iat", (long)now_s) == 0 &&
        jwt_add_grant_int(t, "exp", (long)(now_s + j->ttl_s)) == 0 &&
        jwt_set_alg(t, JWT_ALG_HS256, j->key, (int)j->keylen) == 0)
        out = jwt_encode_str(t);
    jwt_free(t);
    return out;
}

/* 1 when the token's header says HS256 (and typ JWT, if any, and nothing critical):
 * checked before libjwt sees the token, so "none" or an RS/HS swap never reaches the
 * signature check. */
static int header_pinned(const char *token)
{
    const char *dot = strchr(token, '.');
    if (!dot || dot == token || (size_t)(dot - token) > 512)
        return 0;
    char text[400];
    size_t len = 0;
    if (sodium_base642bin((unsigned char *)text, sizeof text - 1, token, (size_t)(dot - token),
                          NULL, &len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return 0;
    json_t *h = json_loadb(text, len, 0, NULL);
    const char *alg = json_string_value(json_object_get(h, "alg"));
    json_t *typ = json_object_get(h, "typ");
    int ok = json_is_object(h) && alg && strcmp(alg, "HS256") == 0 &&
             (!typ || (json_is_string(typ) && strcmp(json_string_value(typ), "JWT") == 0)) &&
             !json_object_get(h, "crit");
    json_decref(h);
    return ok;
}

static int copy_grant(jwt_t *t, const char *name, char *out, size_t len)
{
    const char *v = jwt_get_grant(t, name);
    if (!v || !*v || strlen(v) >= len)
        return -1;
    strcpy(out, v);
    return 0;
}

int evbus_jwt_verify(const evbus_jwt_t *j, const char *token, int64_t now_s, evbus_claims_t *out)
{
    if (!token || strlen(token) > EVBUS_JWT_MAX_TOKEN || !header_pinned(token))
        return -1;
    jwt_t *t = NULL;
    if (jwt_decode(&t, token, j->key, (int)j->keylen) != 0 || !t)
        return -1;
    int rc = -1;
    memset(out, 0, sizeof *out);
    const char *iss = jwt_get_grant(t, "iss"), *aud = jwt_get_grant(t, "aud");
    errno = 0;
    long iat = jwt_get_grant_int(t, "iat");
    int iat_ok = errno == 0;
    long exp = jwt_get_grant_int(t, "exp");
    int exp_ok = errno == 0;
    if (jwt_get_alg(t) == JWT_ALG_HS256 && iss && strcmp(iss, j->issuer) == 0 && aud &&
        strcmp(aud, j->audience) == 0 && iat_ok && exp_ok && exp > now_s &&
        iat <= now_s + CLOCK_SKEW_S && exp > iat &&
        copy_grant(t, "sub", out->sub, sizeof out->sub) == 0 &&
        copy_grant(t, "role", out->role, sizeof out->role) == 0) {
        copy_grant(t, "email", out->email, sizeof out->email);
        out->iat = iat;
        out->exp = exp;
        rc = 0;
    }
    jwt_free(t);
    return rc;
}
