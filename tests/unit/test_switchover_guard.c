/* The switch-over guard (src/migration/switchover_guard.c): it fires once,
 * at its deadline or when asked, never after it was disarmed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>

#include "migration/migration.h"
#include "migration/switchover_guard.h"

struct fired {
    int count;
    uint64_t at_ms;
};

static void on_fire(void *arg)
{
    struct fired *f = arg;
    f->count++;
    f->at_ms = mig_now_ms();
}

static void test_fires_at_deadline(void **state)
{
    struct fired f = { 0 };
    struct sw_guard g;
    sw_guard_init(&g, on_fire, &f);
    uint64_t t0 = mig_now_ms();
    assert_int_equal(sw_guard_arm(&g, t0 + 50), 0);
    assert_false(sw_guard_fired(&g));
    /* bounded wait: 5 s */
    for (int i = 0; i < 500 && !sw_guard_fired(&g); i++) {
        struct timespec ts = { 0, 10000000 };
        nanosleep(&ts, NULL);
    }
    assert_true(sw_guard_fired(&g));
    assert_int_equal(f.count, 1);
    assert_true(f.at_ms >= t0 + 50);
    assert_false(sw_guard_disarm(&g)); /* too late: the switch-over is off */
    assert_true(sw_guard_end(&g));
    assert_int_equal(f.count, 1);
    sw_guard_fini(&g);
}

static void test_disarmed_never_fires(void **state)
{
    struct fired f = { 0 };
    struct sw_guard g;
    sw_guard_init(&g, on_fire, &f);
    assert_int_equal(sw_guard_arm(&g, mig_now_ms() + 60000), 0);
    assert_int_equal(sw_guard_arm(&g, mig_now_ms() + 60000), -EBUSY);
    uint64_t t0 = mig_now_ms();
    assert_true(sw_guard_disarm(&g));
    assert_false(sw_guard_fire(&g)); /* committed: asking changes nothing */
    assert_false(sw_guard_end(&g));  /* and the thread ends at once */
    assert_true(mig_now_ms() - t0 < 10000);
    assert_int_equal(f.count, 0);
    sw_guard_fini(&g);
}

static void test_fire_now_then_again(void **state)
{
    struct fired f = { 0 };
    struct sw_guard g;
    sw_guard_init(&g, on_fire, &f);
    assert_int_equal(sw_guard_arm(&g, mig_now_ms() + 60000), 0);
    assert_true(sw_guard_fire(&g));
    assert_true(sw_guard_fire(&g)); /* once only */
    assert_int_equal(f.count, 1);
    assert_true(sw_guard_end(&g));
    /* idle again: a second stop arms it anew */
    assert_int_equal(sw_guard_arm(&g, mig_now_ms() + 60000), 0);
    assert_false(sw_guard_fired(&g));
    assert_false(sw_guard_end(&g));
    assert_int_equal(f.count, 1);
    sw_guard_fini(&g); /* fini on an idle guard */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fires_at_deadline),
        cmocka_unit_test(test_disarmed_never_fires),
        cmocka_unit_test(test_fire_now_then_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
