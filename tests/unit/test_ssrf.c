/* Webhook targets: which addresses are refused, what the allow-list lets through, and
 * URL checks that need no network (literal addresses, schemes, credentials). */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "eventbus.h"
#include "evbus/util.h"

static int permitted(const eb_allow_t *a, const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return eb_addr_permitted(a, (struct sockaddr *)&ss);
}

static void addresses(void **state)
{
    (void)state;
    char err[128];
    eb_allow_t *none = eb_allow_new("", err, sizeof err);
    assert_non_null(none);
    const char *refused[] = {"127.0.0.1",
                             "127.255.0.9",
                             "10.0.0.1",
                             "10.255.255.255",
                             "172.16.0.1",
                             "172.31.9.9",
                             "192.168.1.1",
                             "169.254.169.254",
                             "100.64.0.1",
                             "0.0.0.0",
                             "224.0.0.1",
                             "255.255.255.255",
                             "::1",
                             "::",
                             "fe80::1",
                             "fd00::1",
                             "::ffff:127.0.0.1",
                             "::ffff:169.254.169.254",
                             "64:ff9b::a9fe:a9fe"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (permitted(none, refused[i]))
            fail_msg("%s should be refused", refused[i]);
    const char *public_[] = {"8.8.8.8",       "172.32.0.1",      "172.15.255.255",
                             "93.184.216.34", "2606:4700::1111", "::ffff:8.8.4.4"};
    for (size_t i = 0; i < sizeof public_ / sizeof public_[0]; i++)
        if (!permitted(none, public_[i]))
            fail_msg("%s should be allowed", public_[i]);
    eb_allow_t *lo = eb_allow_new("127.0.0.1/32, 10.1.0.0/16,::1", err, sizeof err);
    assert_non_null(lo);
    assert_true(permitted(lo, "127.0.0.1"));
    assert_false(permitted(lo, "127.0.0.2"));
    assert_true(permitted(lo, "10.1.200.3"));
    assert_false(permitted(lo, "10.2.0.1"));
    assert_true(permitted(lo, "::1"));
    assert_true(permitted(lo, "::ffff:127.0.0.1"));
    assert_false(permitted(lo, "169.254.169.254"));
    eb_allow_free(lo);
    eb_allow_free(none);
    const char *bad[] = {"10.0.0.0/33", "nonsense", "1.2.3.4/x", "::1/129", "1.2.3.4/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_null(eb_allow_new(bad[i], err, sizeof err));
}

static void urls(void **state)
{
    (void)state;
    char err[256];
    eb_allow_t *none = eb_allow_new("", err, sizeof err);
    eb_allow_t *lo = eb_allow_new("127.0.0.0/8", err, sizeof err);
    const char *refused[] = {"http://127.0.0.1:8080/x", "http://169.254.169.254/latest",
                             "https://10.0.0.1/", "http://[::1]:80/", "http://0.0.0.0/"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (eb_url_check(none, refused[i], err, sizeof err) == 0)
            fail_msg("%s should be refused", refused[i]);
    assert_int_equal(eb_url_check(lo, "http://127.0.0.1:8080/x", err, sizeof err), 0);
    assert_int_equal(eb_url_check(lo, "https://8.8.8.8/hook", err, sizeof err), 0);
    const char *malformed[] = {"ftp://8.8.8.8/",
                               "file:///etc/passwd",
                               "gopher://8.8.8.8/",
                               "http://user:pw@8.8.8.8/",
                               "nothing",
                               "",
                               "http://"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
        if (eb_url_check(lo, malformed[i], err, sizeof err) == 0)
            fail_msg("%s should be refused", malformed[i]);
    eb_allow_free(none);
    eb_allow_free(lo);
}

static void rfc3339(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(evbus_parse_rfc3339("1970-01-01T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(evbus_parse_rfc3339("2026-11-28T10:48:31.346Z", &ms), 0);
    assert_int_equal(ms, INT64_C(1795862911346));
    assert_int_equal(evbus_parse_rfc3339("2026-11-28T11:48:31.346+01:00", &ms), 0);
    assert_int_equal(ms, INT64_C(1795862911346));
    assert_int_equal(evbus_parse_rfc3339("2000-02-29T23:59:59.5-00:30", &ms), 0);
    assert_int_equal(ms, INT64_C(951868799500) + 30 * 60000); /* -00:30 is behind UTC */
    assert_int_equal(evbus_parse_rfc3339("2026-13-01T00:00:00Z", &ms), -1);
    assert_int_equal(evbus_parse_rfc3339("yesterday", &ms), -1);
    assert_int_equal(evbus_parse_rfc3339(NULL, &ms), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(addresses),
        cmocka_unit_test(urls),
        cmocka_unit_test(rfc3339),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
