/* Where webhooks may go. Only http and https, and only to public addresses: loopback,
 * private, link-local (cloud metadata lives at 169.254.169.254), shared, multicast and
 * reserved ranges are refused unless an allow-list (EVENTBUS_PUSH_ALLOW, CIDRs) names
 * them. The URL is checked when a subscription is created, and every connection is
 * checked again as it is opened, so a name that later resolves elsewhere (DNS
 * rebinding) gains nothing. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"

#define MAX_ALLOW 64

typedef struct {
    int family; /* AF_INET or AF_INET6 */
    unsigned char addr[16];
    unsigned bits;
} cidr_t;

struct eb_allow {
    cidr_t c[MAX_ALLOW];
    size_t n;
};

static int parse_cidr(const char *s, cidr_t *out)
{
    char buf[64];
    if (strlen(s) >= sizeof buf)
        return -1;
    strcpy(buf, s);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash++ = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        out->bits = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        out->bits = 128;
    } else {
        return -1;
    }
    if (slash) {
        char *end;
        long b = strtol(slash, &end, 10);
        if (*end || end == slash || b < 0 || b > (long)out->bits)
            return -1;
        out->bits = (unsigned)b;
    }
    return 0;
}

eb_allow_t *eb_allow_new(const char *spec, char *err, size_t errlen)
{
    eb_allow_t *a = calloc(1, sizeof *a);
    char *copy = strdup(spec ? spec : "");
    if (!a || !copy) {
        free(a);
        free(copy);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (a->n == MAX_ALLOW || parse_cidr(t, &a->c[a->n]) != 0) {
            snprintf(err, errlen, "'%.64s' is not an address or CIDR (at most %d)", t, MAX_ALLOW);
            free(copy);
            free(a);
            return NULL;
        }
        a->n++;
    }
    free(copy);
    return a;
}

void eb_allow_free(eb_allow_t *a)
{
    free(a);
}

static int in_cidr(const cidr_t *c, int family, const unsigned char *addr)
{
    if (c->family != family)
        return 0;
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, addr, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xFF << (8 - rest));
    return (c->addr[full] & mask) == (addr[full] & mask);
}

/* Ranges no webhook may reach unless allow-listed. */
static const char *const blocked[] = {
    "0.0.0.0/8",     "10.0.0.0/8",   "100.64.0.0/10", "127.0.0.0/8",    "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",  "192.168.0.0/16", "198.18.0.0/15",
    "224.0.0.0/4",   "240.0.0.0/4",  "::/128",        "::1/128",        "fc00::/7",
    "fe80::/10",     "ff00::/8",     "2001:db8::/32", "64:ff9b:1::/48",
};

static int blocked_addr(int family, const unsigned char *addr)
{
    for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++) {
        cidr_t c;
        if (parse_cidr(blocked[i], &c) == 0 && in_cidr(&c, family, addr))
            return 1;
    }
    return 0;
}

int eb_addr_permitted(const eb_allow_t *a, const struct sockaddr *sa)
{
    int family;
    unsigned char addr[16];
    if (sa->sa_family == AF_INET) {
        family = AF_INET;
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        family = AF_INET6;
        memcpy(addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
        static const unsigned char nat64[12] = {0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0};
        if (memcmp(addr, mapped, 12) == 0 || memcmp(addr, nat64, 12) == 0) {
            family = AF_INET; /* judged by the IPv4 address inside */
            memmove(addr, addr + 12, 4);
        }
    } else {
        return 0;
    }
    for (size_t i = 0; a && i < a->n; i++)
        if (in_cidr(&a->c[i], family, addr))
            return 1;
    return !blocked_addr(family, addr);
}

int eb_url_check(const eb_allow_t *a, const char *url, char *err, size_t errlen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = -1;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(err, errlen, "not a valid absolute URL");
        goto out;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(err, errlen, "only http and https URLs are allowed");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &port, 0) == CURLUE_OK) {
        snprintf(err, errlen, "credentials in the URL are not allowed");
        goto out;
    }
    /* brackets around an IPv6 literal are not part of the address */
    char name[256];
    size_t hl = strlen(host);
    if (hl >= sizeof name) {
        snprintf(err, errlen, "host name too long");
        goto out;
    }
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memcpy(name, host + 1, hl - 2);
        name[hl - 2] = '\0';
    } else {
        strcpy(name, host);
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(name, NULL, &hints, &res) != 0 || !res) {
        snprintf(err, errlen, "host '%.64s' does not resolve", name);
        goto out;
    }
    rc = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
        if (!eb_addr_permitted(a, ai->ai_addr)) {
            snprintf(err, errlen,
                     "host '%.64s' is a loopback, private, link-local or reserved address "
                     "(not in EVENTBUS_PUSH_ALLOW)",
                     name);
            rc = -1;
            break;
        }
    freeaddrinfo(res);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}
