/* UUIDv7: format, version and variant bits, strict order within a millisecond and
 * across a clock step back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "evbus/id.h"

static void format(void **state)
{
    (void)state;
    char id[EVBUS_UUID_STRLEN];
    evbus_uuid7(id);
    assert_int_equal(strlen(id), 36);
    assert_true(evbus_uuid_valid(id));
    assert_int_equal(id[14], '7');
    assert_true(strchr("89ab", id[19]) != NULL);
}

static void monotonic(void **state)
{
    (void)state;
    char prev[EVBUS_UUID_STRLEN], cur[EVBUS_UUID_STRLEN];
    evbus_uuid7_at(1700000000000, prev);
    for (int i = 0; i < 20000; i++) {
        /* same millisecond for many ids, then a step back in time */
        int64_t ms = i < 10000 ? 1700000000000 : 1699999999000;
        evbus_uuid7_at(ms, cur);
        assert_true(strcmp(prev, cur) < 0);
        memcpy(prev, cur, sizeof cur);
    }
}

static void traceparent(void **state)
{
    (void)state;
    char tp[56];
    evbus_traceparent_new(tp);
    assert_true(evbus_traceparent_valid(tp));
    assert_false(
        evbus_traceparent_valid("00-00000000000000000000000000000000-0000000000000000-01"));
    assert_false(evbus_traceparent_valid("00-abc"));
    assert_false(evbus_uuid_valid("not-a-uuid"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format),
        cmocka_unit_test(monotonic),
        cmocka_unit_test(traceparent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
