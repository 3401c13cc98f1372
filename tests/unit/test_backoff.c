/* Backoff: ceilings grow by the multiplier up to the cap; jittered delays stay within
 * [0, ceiling] and actually spread over the range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "evbus/backoff.h"

static void ceilings(void **state)
{
    (void)state;
    evbus_backoff_t b = {100, 2.0, 5000};
    assert_int_equal(evbus_backoff_ceiling(&b, 0), 100);
    assert_int_equal(evbus_backoff_ceiling(&b, 1), 200);
    assert_int_equal(evbus_backoff_ceiling(&b, 5), 3200);
    assert_int_equal(evbus_backoff_ceiling(&b, 6), 5000);
    assert_int_equal(evbus_backoff_ceiling(&b, 1000), 5000);
}

static void jitter_bounds(void **state)
{
    (void)state;
    evbus_backoff_t b = {100, 2.0, 5000};
    for (unsigned attempt = 0; attempt < 10; attempt++) {
        int64_t ceil = evbus_backoff_ceiling(&b, attempt), lo = ceil, hi = 0;
        for (int i = 0; i < 2000; i++) {
            int64_t d = evbus_backoff_delay(&b, attempt);
            assert_in_range(d, 0, ceil);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        /* full jitter: draws cover most of [0, ceiling] */
        assert_true(lo < ceil / 10);
        assert_true(hi > ceil * 9 / 10);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ceilings),
        cmocka_unit_test(jitter_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
