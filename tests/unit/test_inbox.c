/* Inbox and store: a claimed id is claimed once; a rolled-back claim leaves no trace;
 * migrations refuse a newer schema. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "evbus/inbox.h"
#include "evbus/log.h"

static char path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/evbus-test-inbox-%d.db", (int)getpid());
    unlink(path);
    evbus_log_init("test", EVBUS_LOG_ERROR, "json");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[80];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    return 0;
}

static void claim_once(void **state)
{
    (void)state;
    evbus_store_t *st = evbus_store_open(path);
    assert_non_null(st);
    assert_int_equal(evbus_inbox_migrate(st), EVBUS_ERR_OK);
    assert_int_equal(evbus_inbox_migrate(st), EVBUS_ERR_OK); /* idempotent */
    assert_int_equal(evbus_store_begin(st), EVBUS_ERR_OK);
    assert_int_equal(evbus_inbox_claim(st, "e1", "T"), 1);
    assert_int_equal(evbus_inbox_claim(st, "e1", "T"), 0);
    assert_int_equal(evbus_store_commit(st), EVBUS_ERR_OK);
    assert_int_equal(evbus_store_begin(st), EVBUS_ERR_OK);
    assert_int_equal(evbus_inbox_claim(st, "e2", "T"), 1);
    evbus_store_rollback(st);
    assert_int_equal(evbus_store_begin(st), EVBUS_ERR_OK);
    assert_int_equal(evbus_inbox_claim(st, "e2", "T"), 1); /* the rollback forgot it */
    assert_int_equal(evbus_inbox_claim(st, "e1", "T"), 0);
    assert_int_equal(evbus_store_commit(st), EVBUS_ERR_OK);
    evbus_store_close(st);
}

static void newer_schema_refused(void **state)
{
    (void)state;
    evbus_store_t *st = evbus_store_open(path);
    assert_non_null(st);
    assert_int_equal(evbus_inbox_migrate(st), EVBUS_ERR_OK);
    assert_int_equal(evbus_store_exec(st, "UPDATE evbus_schema SET version = 99 WHERE "
                                          "component = 'inbox'"),
                     EVBUS_ERR_OK);
    assert_int_equal(evbus_inbox_migrate(st), EVBUS_ERR_CONFLICT);
    evbus_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(claim_once),
        cmocka_unit_test(newer_schema_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
