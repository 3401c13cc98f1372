/* Configuration table: defaults, environment, flags, range and type validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "evbus/config.h"

static int64_t port, flag;
static char *db, *level, *secret;

static const evbus_cfg_t tab[] = {
    {"port", "T_PORT", EVBUS_CFG_INT, 1, 65535, "5020", "port", &port, 0, NULL},
    {"db", "T_DB", EVBUS_CFG_STR, 1, 100, "x.db", "db", &db, 0, NULL},
    {"flag", "T_FLAG", EVBUS_CFG_BOOL, 0, 1, "false", "flag", &flag, 0, NULL},
    {"level", "T_LEVEL", EVBUS_CFG_STR, 1, 10, "info", "level", &level, 0, "debug|info|warn"},
    {"secret", "T_SECRET", EVBUS_CFG_STR, 0, 100, "", "secret", &secret, 1, NULL},
};
#define N (sizeof tab / sizeof tab[0])

static int load(int argc, char **argv)
{
    return evbus_config_load(tab, N, "t", "test", argc, argv);
}

static void defaults_env_flags(void **state)
{
    (void)state;
    unsetenv("T_PORT");
    unsetenv("T_DB");
    char *a0[] = {"t"};
    assert_int_equal(load(1, a0), 0);
    assert_int_equal(port, 5020);
    assert_string_equal(db, "x.db");
    assert_int_equal(flag, 0);
    setenv("T_PORT", "6000", 1);
    setenv("T_FLAG", "true", 1);
    assert_int_equal(load(1, a0), 0);
    assert_int_equal(port, 6000);
    assert_int_equal(flag, 1);
    char *a1[] = {"t", "--port=7000", "--db", "y.db"};
    assert_int_equal(load(4, a1), 0);
    assert_int_equal(port, 7000);
    assert_string_equal(db, "y.db");
    evbus_config_free(tab, N);
    unsetenv("T_FLAG");
}

static void rejects(void **state)
{
    (void)state;
    unsetenv("T_PORT");
    char *bad_range[] = {"t", "--port=70000"};
    assert_int_equal(load(2, bad_range), -1);
    char *not_int[] = {"t", "--port=12ab"};
    assert_int_equal(load(2, not_int), -1);
    char *unknown[] = {"t", "--nope=1"};
    assert_int_equal(load(2, unknown), -1);
    char *missing[] = {"t", "--port"};
    assert_int_equal(load(2, missing), -1);
    char *positional[] = {"t", "x"};
    assert_int_equal(load(2, positional), -1);
    setenv("T_PORT", "-1", 1);
    char *a0[] = {"t"};
    assert_int_equal(load(1, a0), -1);
    setenv("T_PORT", "1", 1);
    setenv("T_FLAG", "maybe", 1);
    assert_int_equal(load(1, a0), -1);
    unsetenv("T_FLAG");
    unsetenv("T_PORT");
    char *bad_choice[] = {"t", "--level=loud"};
    assert_int_equal(load(2, bad_choice), -1);
    char *good_choice[] = {"t", "--level=warn"};
    assert_int_equal(load(2, good_choice), 0);
    assert_string_equal(level, "warn");
    char *secret_flag[] = {"t", "--secret=hunter2"};
    assert_int_equal(load(2, secret_flag), -1);
    char *help[] = {"t", "--help"};
    assert_int_equal(load(2, help), 1);
    evbus_config_free(tab, N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_env_flags),
        cmocka_unit_test(rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
