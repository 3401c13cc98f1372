/* Path router: patterns of literal and "{param}" segments, matched per method. */
#ifndef EVBUS_ROUTER_H
#define EVBUS_ROUTER_H

#include <stddef.h>

#define EVBUS_ROUTER_MAX_PARAMS 4
#define EVBUS_ROUTER_MAX_SEGMENT 256

typedef struct evbus_router evbus_router_t;

typedef struct {
    void *fn, *ud;
    int nparams;
    const char *names[EVBUS_ROUTER_MAX_PARAMS];
    char values[EVBUS_ROUTER_MAX_PARAMS][EVBUS_ROUTER_MAX_SEGMENT + 1];
} evbus_route_match_t;

evbus_router_t *evbus_router_new(void);
void evbus_router_free(evbus_router_t *r);
/* Adds method + pattern. Returns 0, or -1 on a malformed pattern or no memory. */
int evbus_router_add(evbus_router_t *r, const char *method, const char *pattern, void *fn,
                     void *ud);
/* Matches a request. Returns 200 and fills m; 404 when no pattern matches the path;
 * 405 when the path matches only under other methods (allow lists them, comma
 * separated). Any thread, concurrently, once routes are added. */
int evbus_router_match(const evbus_router_t *r, const char *method, const char *path,
                       evbus_route_match_t *m, char *allow, size_t allow_len);

#endif
