/* Router and type->topic routing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "eventbus.h"
#include "router.h"

static int a, b, c;

static void matches(void **state)
{
    (void)state;
    evbus_router_t *r = evbus_router_new();
    assert_int_equal(evbus_router_add(r, "GET", "/api/subscriptions", &a, NULL), 0);
    assert_int_equal(evbus_router_add(r, "GET", "/api/subscriptions/{name}", &b, NULL), 0);
    assert_int_equal(evbus_router_add(r, "DELETE", "/api/subscriptions/{name}", &c, NULL), 0);
    assert_int_equal(evbus_router_add(r, "GET", "/api/subscriptions/{name}/events", &c, NULL), 0);
    evbus_route_match_t m;
    char allow[64];
    assert_int_equal(evbus_router_match(r, "GET", "/api/subscriptions", &m, allow, sizeof allow),
                     200);
    assert_ptr_equal(m.fn, &a);
    assert_int_equal(evbus_router_match(r, "GET", "/api/subscriptions/", &m, allow, sizeof allow),
                     200);
    assert_int_equal(
        evbus_router_match(r, "GET", "/api/subscriptions/users", &m, allow, sizeof allow), 200);
    assert_ptr_equal(m.fn, &b);
    assert_int_equal(m.nparams, 1);
    assert_string_equal(m.names[0], "name");
    assert_string_equal(m.values[0], "users");
    assert_int_equal(
        evbus_router_match(r, "GET", "/api/subscriptions/users/events", &m, allow, sizeof allow),
        200);
    assert_string_equal(m.values[0], "users");
    assert_int_equal(
        evbus_router_match(r, "POST", "/api/subscriptions/users", &m, allow, sizeof allow), 405);
    assert_string_equal(allow, "GET, DELETE");
    assert_int_equal(evbus_router_match(r, "HEAD", "/api/subscriptions", &m, allow, sizeof allow),
                     200);
    assert_int_equal(evbus_router_match(r, "GET", "/api/nothing", &m, allow, sizeof allow), 404);
    assert_int_equal(evbus_router_match(r, "GET", "/api//subscriptions", &m, allow, sizeof allow),
                     404);
    assert_int_equal(evbus_router_match(r, "GET", "relative", &m, allow, sizeof allow), 404);
    char longp[2000];
    memset(longp, 'x', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(evbus_router_match(r, "GET", longp, &m, allow, sizeof allow), 404);
    evbus_router_free(r);
}

static void topics(void **state)
{
    (void)state;
    char err[128], out[EB_MAX_TOPIC + 1];
    eb_routes_t *r = eb_routes_new("Special=CUSTOM_TOPIC, Other=x.y", err, sizeof err);
    assert_non_null(r);
    assert_int_equal(eb_route(r, "UserRegistered", out, sizeof out), 0);
    assert_string_equal(out, "USER_REGISTERED");
    assert_int_equal(eb_route(r, "Special", out, sizeof out), 0);
    assert_string_equal(out, "CUSTOM_TOPIC");
    assert_int_equal(eb_route(r, "com.acme.OrderPlaced", out, sizeof out), 0);
    assert_string_equal(out, "COM_ACME_ORDER_PLACED");
    assert_int_equal(eb_route(r, "HTTPRequestSeen", out, sizeof out), 0);
    assert_string_equal(out, "HTTP_REQUEST_SEEN");
    assert_int_equal(eb_route(r, "bad type!", out, sizeof out), -1);
    assert_int_equal(eb_route(r, "...", out, sizeof out), -1);
    eb_routes_free(r);
    assert_null(eb_routes_new("NoEquals", err, sizeof err));
    assert_null(eb_routes_new("A=bad topic", err, sizeof err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches),
        cmocka_unit_test(topics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
