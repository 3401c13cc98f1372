/* Access tokens: JWT signed with HMAC-SHA256 under a key of at least 256 bits. The
 * algorithm is pinned: a token whose header names anything but HS256 (none, RS256,
 * HS512...) is refused before its signature is looked at. iss, aud, sub, iat and exp are
 * set on issue and checked on verify. */
#ifndef EVBUS_JWT_H
#define EVBUS_JWT_H

#include <stddef.h>
#include <stdint.h>

#define EVBUS_JWT_KEY_MIN 32
#define EVBUS_JWT_KEY_MAX 128
#define EVBUS_JWT_MAX_TOKEN 4096

typedef struct {
    unsigned char key[EVBUS_JWT_KEY_MAX];
    size_t keylen;
    const char *issuer, *audience;
    int64_t ttl_s;
} evbus_jwt_t;

typedef struct {
    char sub[64], role[16], email[256];
    int64_t iat, exp;
} evbus_claims_t;

/* Decodes a base64 key (standard or URL alphabet) of 32..128 bytes into j. -1 otherwise. */
int evbus_jwt_key(evbus_jwt_t *j, const char *b64);
/* A signed token for sub (malloc'd), or NULL. */
char *evbus_jwt_issue(const evbus_jwt_t *j, const char *sub, const char *role, const char *email,
                      int64_t now_s);
/* 0 and the claims when token is a valid, unexpired HS256 token of this issuer for this
 * audience; -1 otherwise. */
int evbus_jwt_verify(const evbus_jwt_t *j, const char *token, int64_t now_s, evbus_claims_t *out);

#endif
