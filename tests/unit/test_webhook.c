/* Webhook signatures: the Standard Webhooks example vector, round trips, rotation with
 * two secrets, and every way a delivery is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "evbus/webhook.h"

/* the example in the Standard Webhooks specification */
#define SPEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SPEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SPEC_TS 1614265330
#define SPEC_BODY "{\"test\": 2432232314}"
#define SPEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static void spec_vector(void **state)
{
    (void)state;
    char sig[EVBUS_WEBHOOK_SIG_LEN];
    assert_int_equal(
        evbus_webhook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), sig), 0);
    assert_string_equal(sig, SPEC_SIG);
    const char *secrets[] = {SPEC_SECRET};
    assert_int_equal(evbus_webhook_verify(secrets, 1, SPEC_ID, "1614265330", SPEC_SIG, SPEC_BODY,
                                          strlen(SPEC_BODY), SPEC_TS + 10),
                     EVBUS_WEBHOOK_OK);
}

static void refusals(void **state)
{
    (void)state;
    const char *secrets[] = {SPEC_SECRET};
    const char *body = SPEC_BODY;
    size_t n = strlen(body);
    /* tampered body, wrong id, wrong secret */
    assert_int_equal(evbus_webhook_verify(secrets, 1, SPEC_ID, "1614265330", SPEC_SIG,
                                          "{\"test\": 2432232315}", n, SPEC_TS),
                     EVBUS_WEBHOOK_BAD_SIGNATURE);
    assert_int_equal(
        evbus_webhook_verify(secrets, 1, "msg_other", "1614265330", SPEC_SIG, body, n, SPEC_TS),
        EVBUS_WEBHOOK_BAD_SIGNATURE);
    char other[EVBUS_WEBHOOK_SECRET_LEN];
    evbus_webhook_secret_new(other);
    const char *wrong[] = {other};
    assert_int_equal(
        evbus_webhook_verify(wrong, 1, SPEC_ID, "1614265330", SPEC_SIG, body, n, SPEC_TS),
        EVBUS_WEBHOOK_BAD_SIGNATURE);
    /* too old, too far ahead */
    assert_int_equal(evbus_webhook_verify(secrets, 1, SPEC_ID, "1614265330", SPEC_SIG, body, n,
                                          SPEC_TS + EVBUS_WEBHOOK_TOLERANCE_S + 1),
                     EVBUS_WEBHOOK_EXPIRED);
    assert_int_equal(evbus_webhook_verify(secrets, 1, SPEC_ID, "1614265330", SPEC_SIG, body, n,
                                          SPEC_TS - EVBUS_WEBHOOK_TOLERANCE_S - 1),
                     EVBUS_WEBHOOK_EXPIRED);
    /* malformed headers */
    const char *bad_sigs[] = {
        "", "v1", "v1,", "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "v1,!!!", "v1,Zm9v"};
    for (size_t i = 0; i < sizeof bad_sigs / sizeof bad_sigs[0]; i++)
        assert_int_equal(
            evbus_webhook_verify(secrets, 1, SPEC_ID, "1614265330", bad_sigs[i], body, n, SPEC_TS),
            EVBUS_WEBHOOK_MALFORMED);
    assert_int_equal(
        evbus_webhook_verify(secrets, 1, SPEC_ID, "16142x", SPEC_SIG, body, n, SPEC_TS),
        EVBUS_WEBHOOK_MALFORMED);
    assert_int_equal(
        evbus_webhook_verify(secrets, 1, NULL, "1614265330", SPEC_SIG, body, n, SPEC_TS),
        EVBUS_WEBHOOK_MALFORMED);
    assert_int_equal(evbus_webhook_verify(secrets, 1, SPEC_ID, NULL, SPEC_SIG, body, n, SPEC_TS),
                     EVBUS_WEBHOOK_MALFORMED);
}

static void rotation(void **state)
{
    (void)state;
    char old[EVBUS_WEBHOOK_SECRET_LEN], new_[EVBUS_WEBHOOK_SECRET_LEN];
    evbus_webhook_secret_new(old);
    evbus_webhook_secret_new(new_);
    assert_true(evbus_webhook_secret_valid(old));
    assert_string_not_equal(old, new_);
    char s1[EVBUS_WEBHOOK_SIG_LEN], s2[EVBUS_WEBHOOK_SIG_LEN], header[2 * EVBUS_WEBHOOK_SIG_LEN];
    assert_int_equal(evbus_webhook_sign(new_, "id-1", 1000, "{}", 2, s1), 0);
    assert_int_equal(evbus_webhook_sign(old, "id-1", 1000, "{}", 2, s2), 0);
    strcpy(header, s1);
    strcat(header, " ");
    strcat(header, s2);
    /* a receiver still on the old secret, one already on the new, one holding both */
    const char *only_old[] = {old}, *only_new[] = {new_}, *both[] = {NULL, old};
    assert_int_equal(evbus_webhook_verify(only_old, 1, "id-1", "1000", header, "{}", 2, 1000),
                     EVBUS_WEBHOOK_OK);
    assert_int_equal(evbus_webhook_verify(only_new, 1, "id-1", "1000", header, "{}", 2, 1000),
                     EVBUS_WEBHOOK_OK);
    assert_int_equal(evbus_webhook_verify(both, 2, "id-1", "1000", header, "{}", 2, 1000),
                     EVBUS_WEBHOOK_OK);
    assert_false(evbus_webhook_secret_valid("whsec_short"));
    assert_false(evbus_webhook_secret_valid(NULL));
    assert_int_equal(evbus_webhook_sign("whsec_%%%", "id", 1, "", 0, s1), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spec_vector),
        cmocka_unit_test(refusals),
        cmocka_unit_test(rotation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
