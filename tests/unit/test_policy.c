#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "migration/policy.h"

static void test_expected_downtime(void **state)
{
    assert_int_equal(precopy_expected_downtime_ms(0, 0), 0);
    assert_int_equal(precopy_expected_downtime_ms(1000, 0), UINT64_MAX);
    assert_int_equal(precopy_expected_downtime_ms(1000000, 1000000000), 1);
    assert_int_equal(precopy_expected_downtime_ms(300000000, 1000000000), 300);
    assert_int_equal(precopy_expected_downtime_ms(300000001, 1000000000), 301);
}

/* The CPU the sender waited for comes back when the vCPUs stop; at most
 * half the round is taken off (twice the live rate). */
static void test_switch_bandwidth(void **state)
{
    /* 1 GB in 1 s, no wait: the live rate. */
    assert_int_equal(precopy_switch_bandwidth(1000000000, 1000000000, 0), 1000000000);
    /* A third of the round waiting for a CPU: 1.5x. */
    assert_int_equal(precopy_switch_bandwidth(1000000000, 900000000, 300000000), 1666666666);
    /* Waiting most of the round: capped at twice the live rate. */
    assert_int_equal(precopy_switch_bandwidth(1000000000, 1000000000, 900000000), 2000000000);
    assert_int_equal(precopy_switch_bandwidth(1000, 0, 0), 1000ULL * 1000000000ULL);
    /* 40 GB in one round does not overflow. */
    assert_int_equal(precopy_switch_bandwidth(40000000000ULL, 10000000000ULL, 0), 4000000000ULL);
}

static void test_switchover_when_it_fits(void **state)
{
    struct precopy_params p;
    precopy_params_default(&p);
    struct precopy_policy_state st = { 0 };
    struct precopy_decision d;
    struct precopy_round r = { .iteration = 1, .remaining_bytes = 100 << 20,
                               .bandwidth_bps = 1000ULL << 20 };
    precopy_decide(&p, &st, &r, &d);
    assert_true(d.switchover); /* 100 ms <= 300 ms */
    p.downtime_limit_ms = 20;
    precopy_decide(&p, &st, &r, &d);
    assert_false(d.switchover);
    assert_int_equal(d.expected_downtime_ms, 100);
}

static void test_no_throttle_without_capability(void **state)
{
    struct precopy_params p;
    precopy_params_default(&p);
    p.downtime_limit_ms = 1;
    struct precopy_policy_state st = { 0 };
    struct precopy_decision d;
    for (unsigned i = 2; i < 10; i++) {
        struct precopy_round r = { .iteration = i, .remaining_bytes = 500 << 20,
                                   .bandwidth_bps = 100 << 20, .dirtied_bytes = 500 << 20,
                                   .transferred_bytes = 100 << 20 };
        precopy_decide(&p, &st, &r, &d);
        assert_false(d.switchover);
        assert_int_equal(d.throttle_pct, 0);
    }
}

/* Defaults with auto-converge on and a limit nothing fits. */
static void auto_converge_params(struct precopy_params *p)
{
    precopy_params_default(p);
    p->downtime_limit_ms = 1;
    p->auto_converge = true;
}

static void test_auto_converge_steps(void **state)
{
    struct precopy_params p;
    auto_converge_params(&p);
    p.throttle_max = 45;
    struct precopy_policy_state st = { 0 };
    struct precopy_decision d;
    unsigned seen[12];
    for (unsigned i = 0; i < 12; i++) {
        struct precopy_round r = { .iteration = i + 2, .remaining_bytes = 500 << 20,
                                   .bandwidth_bps = 100 << 20, .dirtied_bytes = 80 << 20,
                                   .transferred_bytes = 100 << 20 };
        precopy_decide(&p, &st, &r, &d);
        seen[i] = d.throttle_pct;
    }
    /* Every second bad round: 20, 30, 40, then capped at 45. */
    assert_int_equal(seen[0], 0);
    assert_int_equal(seen[1], 20);
    assert_int_equal(seen[3], 30);
    assert_int_equal(seen[5], 40);
    assert_int_equal(seen[7], 45);
    assert_int_equal(seen[11], 45);
}

static void test_good_round_resets_counter(void **state)
{
    struct precopy_params p;
    auto_converge_params(&p);
    struct precopy_policy_state st = { 0 };
    struct precopy_decision d;
    struct precopy_round bad = { .iteration = 2, .remaining_bytes = 1 << 30, .bandwidth_bps = 1 << 20,
                                 .dirtied_bytes = 90, .transferred_bytes = 100 };
    struct precopy_round good = bad;
    good.dirtied_bytes = 10;
    precopy_decide(&p, &st, &bad, &d);
    precopy_decide(&p, &st, &good, &d);
    precopy_decide(&p, &st, &bad, &d);
    assert_int_equal(d.throttle_pct, 0);
    precopy_decide(&p, &st, &bad, &d);
    assert_int_equal(d.throttle_pct, 20);
    assert_true(d.throttle_changed);
}

/* As QEMU: the first pass is a round like the others for the throttle, so
 * a guest that dirtied over half of it and of pass 2 is throttled after
 * pass 2; an idle first pass is not a bad round. */
static void test_first_pass_counts(void **state)
{
    struct precopy_params p;
    auto_converge_params(&p);
    struct precopy_policy_state st = { 0 };
    struct precopy_decision d;
    struct precopy_round r = { .iteration = 1, .remaining_bytes = 300 << 20,
                               .bandwidth_bps = 1000 << 20, .dirtied_bytes = 300 << 20,
                               .transferred_bytes = 512 << 20 };
    precopy_decide(&p, &st, &r, &d);
    assert_int_equal(d.throttle_pct, 0);
    r.iteration = 2;
    precopy_decide(&p, &st, &r, &d);
    assert_int_equal(d.throttle_pct, 20);
    struct precopy_policy_state idle = { 0 };
    r.iteration = 1;
    r.dirtied_bytes = 1 << 20;
    precopy_decide(&p, &idle, &r, &d);
    r.iteration = 2;
    r.dirtied_bytes = 300 << 20;
    precopy_decide(&p, &idle, &r, &d);
    assert_int_equal(d.throttle_pct, 0);
}

/* The switch-over guard's verdict while stopped (limit 300 ms: 375 allowed). */
static void test_stop_overruns(void **state)
{
    assert_int_equal(precopy_stop_allowance_ms(300), 375);
    assert_int_equal(precopy_stop_allowance_ms(20), 30);
    assert_int_equal(precopy_stop_allowance_ms(0), 10);
    /* past the allowance, whatever the pace */
    assert_true(precopy_stop_overruns(300, 375, 99, 100));
    assert_true(precopy_stop_overruns(300, 376, 0, 100));
    /* before a quarter of it, never: the pace is not known yet */
    assert_false(precopy_stop_overruns(300, 93, 1, 100000));
    /* from a quarter on, when the pace ends past it: 94 ms for a tenth */
    assert_true(precopy_stop_overruns(300, 94, 10000, 100000));
    /* ... and not when it ends within: 94 ms for a third */
    assert_false(precopy_stop_overruns(300, 94, 33334, 100000));
    /* a pace that ends exactly at the allowance is within */
    assert_false(precopy_stop_overruns(300, 150, 40000, 100000));
    assert_true(precopy_stop_overruns(300, 151, 40000, 100000));
    /* nothing sent yet, or all of it: the deadline decides */
    assert_false(precopy_stop_overruns(300, 200, 0, 100000));
    assert_false(precopy_stop_overruns(300, 370, 100000, 100000));
    /* 4 GiB of pages and an hour: no overflow */
    assert_true(precopy_stop_overruns(2000000, 1000000, 1, 1ULL << 20));
}

/* A live round ends early only when a stop would fit now and the round's
 * pages are being written again (limit 300 ms, 1 GB/s: 300 MB fit). */
static void test_round_ends_early(void **state)
{
    const uint64_t gbs = 1000000000ULL;
    /* the busy guest's second pass: most of what went is written again */
    assert_true(precopy_round_ends_early(300, 10000, 9000, 250000000, gbs));
    assert_true(precopy_round_ends_early(300, 10000, 5000, 300000000, gbs)); /* both at the edge */
    /* the stop would not fit */
    assert_false(precopy_round_ends_early(300, 10000, 9000, 300000001, gbs));
    assert_false(precopy_round_ends_early(300, 10000, 9000, 1, 0));
    /* an idle guest's round: what went stays as sent, so it goes on, however
     * little is left */
    assert_false(precopy_round_ends_early(300, 10000, 4999, 4096, gbs));
    assert_false(precopy_round_ends_early(300, 10000, 0, 0, gbs));
    /* nothing sent yet: nothing to judge by */
    assert_false(precopy_round_ends_early(300, 0, 0, 0, gbs));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_downtime),
        cmocka_unit_test(test_switch_bandwidth),
        cmocka_unit_test(test_switchover_when_it_fits),
        cmocka_unit_test(test_no_throttle_without_capability),
        cmocka_unit_test(test_first_pass_counts),
        cmocka_unit_test(test_auto_converge_steps),
        cmocka_unit_test(test_good_round_resets_counter),
        cmocka_unit_test(test_stop_overruns),
        cmocka_unit_test(test_round_ends_early),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
