/* libFuzzer harness: request paths through the router and event types through the
 * type->topic routing; both take untrusted bytes from HTTP requests. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eventbus.h"
#include "router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static evbus_router_t *router;
static int marker;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!router) {
        router = evbus_router_new();
        evbus_router_add(router, "GET", "/api/subscriptions/{name}", &marker, NULL);
        evbus_router_add(router, "POST", "/api/subscriptions/{name}/ack", &marker, NULL);
        evbus_router_add(router, "GET", "/api/users/{id}", &marker, NULL);
        evbus_router_add(router, "POST", "/api/events/publish", &marker, NULL);
    }
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    evbus_route_match_t m;
    char allow[64];
    int rc = evbus_router_match(router, "GET", s, &m, allow, sizeof allow);
    if (rc == 200)
        for (int i = 0; i < m.nparams; i++)
            if (strlen(m.values[i]) > EVBUS_ROUTER_MAX_SEGMENT || strchr(m.values[i], '/'))
                abort();
    char topic[EB_MAX_TOPIC + 1];
    if (eb_route(NULL, s, topic, sizeof topic) == 0 && !eb_topic_valid(topic))
        abort();
    free(s);
    return 0;
}
