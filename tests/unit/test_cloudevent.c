/* CloudEvents envelope: round trip, required attributes, type checks, extensions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "evbus/cloudevent.h"

static const char *valid =
    "{\"specversion\":\"1.0\",\"id\":\"a1\",\"source\":\"/auth-service\",\"type\":"
    "\"UserRegistered\",\"subject\":\"u1\",\"time\":\"2026-11-28T07:00:00.123Z\","
    "\"correlationid\":\"c-1\",\"data\":{\"userId\":\"u1\",\"n\":[1,2]}}";

static void round_trip(void **state)
{
    (void)state;
    evbus_event_t *ev = NULL;
    evbus_ce_error_t err;
    assert_int_equal(evbus_event_parse(valid, strlen(valid), &ev, &err), EVBUS_ERR_OK);
    assert_string_equal(evbus_event_id(ev), "a1");
    assert_string_equal(evbus_event_type(ev), "UserRegistered");
    assert_string_equal(evbus_event_subject(ev), "u1");
    assert_string_equal(evbus_event_correlation(ev), "c-1");
    char *text = evbus_event_serialize(ev);
    evbus_event_t *again = NULL;
    assert_int_equal(evbus_event_parse(text, strlen(text), &again, &err), EVBUS_ERR_OK);
    assert_true(json_equal(evbus_event_json(ev), evbus_event_json(again)));
    free(text);
    evbus_event_free(again);
    evbus_event_free(ev);
}

static void expect_invalid(const char *json, const char *field)
{
    evbus_event_t *ev = NULL;
    evbus_ce_error_t err;
    assert_int_equal(evbus_event_parse(json, strlen(json), &ev, &err), EVBUS_ERR_INVALID);
    assert_null(ev);
    assert_string_equal(err.field, field);
}

static void rejects_bad_events(void **state)
{
    (void)state;
    expect_invalid("{\"id\":\"1\",\"source\":\"s\",\"type\":\"t\"}", "specversion");
    expect_invalid("{\"specversion\":\"0.3\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\"}",
                   "specversion");
    expect_invalid("{\"specversion\":\"1.0\",\"source\":\"s\",\"type\":\"t\"}", "id");
    expect_invalid("{\"specversion\":\"1.0\",\"id\":\"\",\"source\":\"s\",\"type\":\"t\"}", "id");
    expect_invalid("{\"specversion\":\"1.0\",\"id\":1,\"source\":\"s\",\"type\":\"t\"}", "id");
    expect_invalid("{\"specversion\":\"1.0\",\"id\":\"1\",\"type\":\"t\"}", "source");
    expect_invalid("{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\"}", "type");
    expect_invalid("{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"time\":"
                   "\"yesterday\"}",
                   "time");
    expect_invalid(
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"Bad_Name\":\"x\"}",
        "Bad_Name");
    expect_invalid(
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\",\"ext\":{}}", "ext");
    expect_invalid("{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\","
                   "\"data\":1,\"data_base64\":\"AA==\"}",
                   "data_base64");
    expect_invalid("{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"s\",\"type\":\"t\","
                   "\"traceparent\":\"00-zz\"}",
                   "traceparent");
    expect_invalid("[1,2]", "");
    expect_invalid("{\"specversion\":\"1.0\",", "");
    expect_invalid("{\"id\":\"1\",\"id\":\"2\"}", "");
}

static void builds_events(void **state)
{
    (void)state;
    evbus_event_t *ev = evbus_event_new("UserRegistered", "/auth-service", "u1",
                                        json_pack("{s:s}", "userId", "u1"));
    assert_non_null(ev);
    assert_int_equal(strlen(evbus_event_id(ev)), 36);
    assert_int_equal(evbus_event_set_ext(ev, "correlationid", "abc"), EVBUS_ERR_OK);
    assert_int_equal(evbus_event_set_ext(ev, "BAD", "x"), EVBUS_ERR_INVALID);
    assert_int_equal(evbus_event_set_ext(ev, "traceparent", "nope"), EVBUS_ERR_INVALID);
    assert_null(evbus_event_ext(ev, "traceparent"));
    assert_string_equal(evbus_event_correlation(ev), "abc");
    evbus_event_free(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(rejects_bad_events),
        cmocka_unit_test(builds_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
