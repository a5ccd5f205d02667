#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "migration/mig_state.h"
#include "migration/params.h"

static void test_params(void **state)
{
    struct mig_params p;
    struct gw_error err;
    gw_error_init(&err);
    mig_params_default(&p);
    assert_int_equal(p.downtime_limit_ms, 300);
    assert_int_equal(p.cpu_throttle_initial, 20);
    assert_int_equal(mig_params_set(&p, "downtime-limit", 20, &err), 0);
    assert_int_equal(p.downtime_limit_ms, 20);
    assert_int_equal(mig_params_set(&p, "max-bandwidth", 125000000, &err), 0);
    assert_int_equal(p.max_bandwidth, 125000000);
    assert_int_equal(mig_params_set(&p, "max-cpu-throttle", 100, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "between 1 and 99"));
    gw_error_init(&err);
    assert_int_equal(mig_params_set(&p, "max-bandwidth", -1, &err), -EINVAL);
    gw_error_init(&err);
    assert_int_equal(mig_params_set(&p, "bogus", 1, &err), -ENOENT);
    unsigned seen = 0;
    for (unsigned i = 0; i < mig_params_count(); i++) {
        uint64_t v;
        const char *n = mig_params_get(&p, i, &v);
        if (strcmp(n, "downtime-limit") == 0 && v == 20)
            seen++;
    }
    assert_int_equal(seen, 1);
}

static void test_caps(void **state)
{
    struct mig_caps c;
    struct gw_error err;
    gw_error_init(&err);
    mig_caps_default(&c);
    assert_false(c.on[MIG_CAP_AUTO_CONVERGE]);
    assert_int_equal(mig_caps_set(&c, "auto-converge", true, &err), 0);
    assert_true(c.on[MIG_CAP_AUTO_CONVERGE]);
    assert_int_equal(mig_caps_set(&c, "xbzrle", true, &err), -ENOENT);
    assert_string_equal(mig_caps_name(MIG_CAP_EVENTS), "events");
}

static void test_states(void **state)
{
    for (int s = 0; s < MIG_STATE__MAX; s++)
        assert_int_equal(mig_state_from_name(mig_state_name((enum mig_state)s)), s);
    assert_true(mig_state_transition_ok(MIG_NONE, MIG_SETUP));
    assert_true(mig_state_transition_ok(MIG_ACTIVE, MIG_CANCELLING));
    assert_true(mig_state_transition_ok(MIG_CANCELLING, MIG_CANCELLED));
    assert_true(mig_state_transition_ok(MIG_POSTCOPY_ACTIVE, MIG_POSTCOPY_PAUSED));
    /* After the switch to post-copy there is no cancelling: both sides hold
     * part of the guest. */
    assert_false(mig_state_transition_ok(MIG_POSTCOPY_ACTIVE, MIG_CANCELLING));
    assert_false(mig_state_transition_ok(MIG_COMPLETED, MIG_ACTIVE));
    /* the switch-over guard gives a stopped guest back */
    assert_true(mig_state_transition_ok(MIG_DEVICE, MIG_ACTIVE));
    assert_false(mig_state_transition_ok(MIG_POSTCOPY_ACTIVE, MIG_ACTIVE));
    assert_true(mig_state_is_active(MIG_ACTIVE));
    assert_false(mig_state_is_active(MIG_COMPLETED));
    assert_true(mig_state_is_final(MIG_CANCELLED));
    assert_true(mig_state_is_postcopy(MIG_POSTCOPY_ACTIVE));
    assert_true(mig_state_is_postcopy(MIG_POSTCOPY_PAUSED));
    assert_true(mig_state_is_postcopy(MIG_POSTCOPY_RECOVER));
    assert_false(mig_state_is_postcopy(MIG_ACTIVE));
    assert_false(mig_state_is_postcopy(MIG_COMPLETED));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
