/* A linear router: services have a dozen routes, so a list beats a trie in clarity at
 * no measurable cost; matching splits the path once and compares segment by segment. */
#include "router.h"

#include <stdlib.h>
#include <string.h>

#define MAX_SEGMENTS 8

typedef struct {
    char method[8];
    int nseg;
    char *seg[MAX_SEGMENTS]; /* literal, or "{name}" stored as name with is_param */
    int is_param[MAX_SEGMENTS];
    void *fn, *ud;
} route_t;

struct evbus_router {
    route_t *routes;
    size_t n, cap;
};

evbus_router_t *evbus_router_new(void)
{
    return calloc(1, sizeof(evbus_router_t));
}

void evbus_router_free(evbus_router_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        for (int j = 0; j < r->routes[i].nseg; j++)
            free(r->routes[i].seg[j]);
    free(r->routes);
    free(r);
}

/* Splits path into at most max segments (pointers into buf, which is modified).
 * Returns the count, or -1 if there are too many or one is too long. */
static int split(char *buf, char **seg, int max)
{
    int n = 0;
    char *p = buf;
    if (*p != '/')
        return -1;
    while (*p == '/')
        p++;
    while (*p) {
        if (n == max)
            return -1;
        seg[n] = p;
        char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len > EVBUS_ROUTER_MAX_SEGMENT)
            return -1;
        n++;
        if (!slash)
            break;
        *slash = '\0';
        p = slash + 1;
        /* a trailing slash ends the path; an empty inner segment does not match */
        if (*p == '\0')
            break;
        if (*p == '/')
            return -1;
    }
    return n;
}

int evbus_router_add(evbus_router_t *r, const char *method, const char *pattern, void *fn, void *ud)
{
    char buf[512];
    char *seg[MAX_SEGMENTS];
    if (strlen(pattern) >= sizeof buf || strlen(method) >= 8)
        return -1;
    strcpy(buf, pattern);
    int n = split(buf, seg, MAX_SEGMENTS);
    if (n < 0)
        return -1;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        route_t *nr = realloc(r->routes, cap * sizeof *nr);
        if (!nr)
            return -1;
        r->routes = nr;
        r->cap = cap;
    }
    route_t *rt = &r->routes[r->n];
    memset(rt, 0, sizeof *rt);
    strcpy(rt->method, method);
    int params = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(seg[i]);
        if (len > 2 && seg[i][0] == '{' && seg[i][len - 1] == '}') {
            if (++params > EVBUS_ROUTER_MAX_PARAMS)
                goto bad;
            rt->is_param[i] = 1;
            rt->seg[i] = strndup(seg[i] + 1, len - 2);
        } else {
            rt->seg[i] = strdup(seg[i]);
        }
        rt->nseg = i + 1;
        if (!rt->seg[i])
            goto bad;
    }
    rt->nseg = n;
    rt->fn = fn;
    rt->ud = ud;
    r->n++;
    return 0;
bad:
    for (int i = 0; i < rt->nseg; i++)
        free(rt->seg[i]);
    return -1;
}

static int path_matches(const route_t *rt, char **seg, int n)
{
    if (rt->nseg != n)
        return 0;
    for (int i = 0; i < n; i++)
        if (!rt->is_param[i] && strcmp(rt->seg[i], seg[i]) != 0)
            return 0;
    return 1;
}

int evbus_router_match(const evbus_router_t *r, const char *method, const char *path,
                       evbus_route_match_t *m, char *allow, size_t allow_len)
{
    char buf[MAX_SEGMENTS * (EVBUS_ROUTER_MAX_SEGMENT + 1) + 2];
    char *seg[MAX_SEGMENTS];
    if (allow_len)
        allow[0] = '\0';
    if (strlen(path) >= sizeof buf)
        return 404;
    strcpy(buf, path);
    int n = split(buf, seg, MAX_SEGMENTS);
    if (n < 0)
        return 404;
    int path_found = 0;
    for (size_t i = 0; i < r->n; i++) {
        const route_t *rt = &r->routes[i];
        if (!path_matches(rt, seg, n))
            continue;
        if (strcmp(rt->method, method) != 0 &&
            !(strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0)) {
            size_t used = strlen(allow);
            if (allow_len > used + strlen(rt->method) + 3 && !strstr(allow, rt->method)) {
                if (used)
                    strcat(allow, ", ");
                strcat(allow, rt->method);
            }
            path_found = 1;
            continue;
        }
        m->fn = rt->fn;
        m->ud = rt->ud;
        m->nparams = 0;
        for (int j = 0; j < n; j++)
            if (rt->is_param[j]) {
                m->names[m->nparams] = rt->seg[j];
                strcpy(m->values[m->nparams], seg[j]);
                m->nparams++;
            }
        return 200;
    }
    return path_found ? 405 : 404;
}
