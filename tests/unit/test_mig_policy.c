/* The daemon's migration policy over recorded query-migrate sequences. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "daemon/mig_policy.h"

#define MIB (1024ULL * 1024)
#define GIB (1024 * MIB)

/* One recorded query-migrate: elapsed s, dirty-sync-count, remaining MiB,
 * dirty-pages-rate, mbps. */
struct rec {
    double t;
    unsigned iter;
    double remaining_mib;
    uint64_t dirty_pages;
    double mbps;
};

static struct mig_policy policy(bool postcopy, bool ac, enum mig_timeout_action a)
{
    struct mig_policy p = { .permit_postcopy = postcopy, .permit_auto_converge = ac,
                            .max_downtime_ms = 300, .bandwidth_mib_s = 0,
                            .completion_timeout_s = 800, .timeout_action = a,
                            .switchover_retries = 2 };
    return p;
}

static struct mig_sample sample(const struct rec *r, uint64_t ram)
{
    struct mig_sample s = { .status = "active", .elapsed_ms = (uint64_t)(r->t * 1000),
                            .iteration = r->iter, .ram_total = ram,
                            .ram_remaining = (uint64_t)(r->remaining_mib * MIB),
                            .dirty_pages_rate = r->dirty_pages, .page_size = 4096,
                            .bandwidth_bps = (uint64_t)(r->mbps * 125000) };
    return s;
}

/* Run a sequence; return the index of the first non-continue decision
 * (-1: none) and its decision. */
static int run(const struct mig_policy *p, const struct mig_flags *f, const struct rec *recs,
               size_t n, uint64_t ram, struct mig_decision *first)
{
    struct mig_policy_state st;
    struct mig_decision d;
    int at = -1;
    mig_policy_state_init(&st, f);
    for (size_t i = 0; i < n; i++) {
        struct mig_sample s = sample(&recs[i], ram);
        mig_policy_decide(p, f, &st, &s, &d);
        assert_true(strlen(d.reason) > 0);
        if (d.action != MIG_ACT_CONTINUE && at < 0) {
            at = (int)i;
            *first = d;
        } else if (d.action != MIG_ACT_CONTINUE) {
            fail_msg("second order at %zu: %s", i, d.reason); /* each order given once */
        }
    }
    return at;
}

/* 1 GiB idle guest over loopback: one full pass, a tiny second one. */
static const struct rec idle[] = {
    { 0.1, 1, 1000, 40, 9000 }, { 0.4, 1, 700, 45, 9500 }, { 0.8, 1, 250, 38, 9600 },
    { 1.1, 2, 1.5, 42, 9400 },  { 1.2, 3, 0.2, 40, 9400 },
};

/* 4 GiB guest writing ~30k pages/s (117 MiB/s) over 1 Gbit/s (119 MiB/s). */
static const struct rec busy[] = {
    { 1, 1, 4000, 30000, 940 },  { 10, 1, 2950, 30500, 950 }, { 20, 1, 1800, 29800, 948 },
    { 33, 1, 350, 30200, 951 },  { 36, 2, 1150, 30100, 949 }, { 46, 2, 20, 30000, 950 },
    { 47, 3, 1160, 30300, 950 }, { 57, 3, 30, 29900, 950 },   { 58, 4, 1158, 30100, 950 },
    { 68, 4, 25, 30000, 950 },   { 69, 5, 1161, 30050, 950 }, { 80, 5, 40, 30000, 950 },
};

static void test_idle_guest_converges(void **state)
{
    struct mig_policy p = policy(true, true, MIG_TIMEOUT_POSTCOPY);
    struct mig_flags f = { .postcopy = true };
    struct mig_decision d;
    assert_int_equal(run(&p, &f, idle, 5, 1 * GIB, &d), -1);
}

static void test_busy_guest_switches_to_postcopy(void **state)
{
    struct mig_policy p = policy(true, true, MIG_TIMEOUT_ABORT);
    struct mig_flags f = { .postcopy = true };
    struct mig_decision d;
    /* hot at the start of iterations 2 and 3: switch at the 7th sample */
    assert_int_equal(run(&p, &f, busy, 12, 4 * GIB, &d), 6);
    assert_int_equal(d.action, MIG_ACT_POSTCOPY);
    assert_true(d.not_converging);
    assert_string_equal(d.reason, "pre-copy is not converging (the guest dirties memory at nearly "
                                  "the transfer bandwidth): switching to post-copy");
}

static void test_busy_guest_without_operator_flag_uses_auto_converge(void **state)
{
    /* the domain permits post-copy, but the operator did not pass --postcopy */
    struct mig_policy p = policy(true, true, MIG_TIMEOUT_ABORT);
    struct mig_flags f = { 0 };
    struct mig_decision d;
    assert_int_equal(run(&p, &f, busy, 12, 4 * GIB, &d), 6);
    assert_int_equal(d.action, MIG_ACT_AUTO_CONVERGE);
}

static void test_postcopy_forbidden_auto_converge_then_timeout(void **state)
{
    struct mig_policy p = policy(false, true, MIG_TIMEOUT_PAUSE);
    p.completion_timeout_s = 15; /* 4 GiB: 60 s */
    struct mig_flags f = { .postcopy = true }; /* asked, but the domain forbids it */
    struct mig_policy_state st;
    struct mig_decision d;
    enum mig_action seen[12];
    mig_policy_state_init(&st, &f);
    for (int i = 0; i < 12; i++) {
        struct mig_sample s = sample(&busy[i], 4 * GIB);
        mig_policy_decide(&p, &f, &st, &s, &d);
        seen[i] = d.action;
        assert_int_equal(d.timeout_ms, 60000);
    }
    assert_int_equal(seen[6], MIG_ACT_AUTO_CONVERGE);
    assert_int_equal(seen[7], MIG_ACT_CONTINUE);
    assert_int_equal(seen[8], MIG_ACT_CONTINUE); /* t = 58 s */
    assert_int_equal(seen[9], MIG_ACT_PAUSE);    /* t = 68 s: past 60 s */
    assert_int_equal(seen[10], MIG_ACT_CONTINUE);
    assert_int_equal(seen[11], MIG_ACT_CONTINUE);
}

static void test_timeout_each_action(void **state)
{
    static const struct {
        bool permit_pc, flag_pc;
        enum mig_timeout_action a;
        enum mig_action expect;
    } cases[] = {
        /* post-copy allowed: an expired timeout means "not converging" */
        { true, true, MIG_TIMEOUT_POSTCOPY, MIG_ACT_POSTCOPY },
        { true, true, MIG_TIMEOUT_PAUSE, MIG_ACT_POSTCOPY },
        { true, true, MIG_TIMEOUT_ABORT, MIG_ACT_POSTCOPY },
        /* not allowed (domain forbids, or no --postcopy): the domain's action */
        { false, true, MIG_TIMEOUT_POSTCOPY, MIG_ACT_PAUSE },  /* falls back */
        { true, false, MIG_TIMEOUT_POSTCOPY, MIG_ACT_PAUSE },
        { false, true, MIG_TIMEOUT_PAUSE, MIG_ACT_PAUSE },
        { false, false, MIG_TIMEOUT_ABORT, MIG_ACT_ABORT },
    };
    /* A guest that converges slowly but steadily: no stall, only the clock. */
    static const struct rec slow[] = {
        { 5, 1, 3000, 100, 800 }, { 20, 1, 1000, 100, 800 }, { 40, 2, 900, 100, 800 },
        { 55, 3, 700, 100, 800 }, { 70, 4, 500, 100, 800 }, { 90, 5, 350, 100, 800 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mig_policy p = policy(cases[i].permit_pc, false, cases[i].a);
        p.completion_timeout_s = 15; /* 4 GiB -> 60 s */
        struct mig_flags f = { .postcopy = cases[i].flag_pc };
        struct mig_decision d;
        int at = run(&p, &f, slow, 6, 4 * GIB, &d);
        assert_int_equal(at, 4); /* t = 70 s */
        assert_int_equal(d.action, cases[i].expect);
        assert_non_null(strstr(d.reason, "completion timeout of 60 s expired"));
    }
}

static void test_operator_timeout_suspend_overrides_postcopy(void **state)
{
    static const struct rec r[] = { { 1, 1, 3000, 10, 900 }, { 11, 1, 2000, 10, 900 } };
    struct mig_policy p = policy(true, false, MIG_TIMEOUT_POSTCOPY);
    struct mig_flags f = { .postcopy = true, .timeout_s = 10, .timeout_action_set = true,
                           .timeout_action = MIG_TIMEOUT_PAUSE };
    struct mig_decision d;
    assert_int_equal(run(&p, &f, r, 2, 4 * GIB, &d), 1);
    assert_int_equal(d.action, MIG_ACT_PAUSE);
    assert_string_equal(d.reason, "completion timeout of 10 s expired: pausing the guest to finish");
}

static void test_operator_timeout_overrides_policy(void **state)
{
    static const struct rec r[] = { { 1, 1, 3000, 10, 900 }, { 6, 1, 2000, 10, 900 } };
    struct mig_policy p = policy(true, false, MIG_TIMEOUT_ABORT);
    struct mig_flags f = { .postcopy = true, .timeout_s = 5, .timeout_action_set = true,
                           .timeout_action = MIG_TIMEOUT_POSTCOPY };
    struct mig_decision d;
    assert_int_equal(run(&p, &f, r, 2, 4 * GIB, &d), 1);
    assert_int_equal(d.action, MIG_ACT_POSTCOPY);
    assert_int_equal(d.timeout_ms, 5000);
}

static void test_postcopy_after_first_pass(void **state)
{
    /* The VMM switches by itself (its capability): the policy arms it and
     * never switches at the end of the first pass on its own. */
    struct mig_policy p = policy(true, false, MIG_TIMEOUT_ABORT);
    struct mig_flags f = { .postcopy = true, .postcopy_after_precopy = true };
    struct mig_vmm_setup v;
    mig_policy_vmm_setup(&p, &f, &v);
    assert_true(v.cap_postcopy_ram);
    assert_true(v.cap_postcopy_after_precopy);
    struct mig_decision d;
    assert_int_equal(run(&p, &f, idle, 5, 1 * GIB, &d), -1); /* iterations 2 and 3: nothing */
    /* forbidden by the domain: not armed either */
    p.permit_postcopy = false;
    mig_policy_vmm_setup(&p, &f, &v);
    assert_false(v.cap_postcopy_ram);
    assert_false(v.cap_postcopy_after_precopy);
    /* without the flag: not armed */
    p.permit_postcopy = true;
    f.postcopy_after_precopy = false;
    mig_policy_vmm_setup(&p, &f, &v);
    assert_true(v.cap_postcopy_ram);
    assert_false(v.cap_postcopy_after_precopy);
}

static void test_remaining_stops_shrinking(void **state)
{
    /* dirty rate far below bandwidth, but each round leaves as much as before */
    static const struct rec r[] = {
        { 10, 1, 500, 2000, 8000 }, { 12, 2, 820, 2000, 8000 }, { 14, 3, 800, 2000, 8000 },
        { 16, 4, 790, 2000, 8000 }, { 18, 5, 500, 2000, 8000 },
    };
    struct mig_policy p = policy(true, false, MIG_TIMEOUT_ABORT);
    struct mig_flags f = { .postcopy = true };
    struct mig_decision d;
    assert_int_equal(run(&p, &f, r, 5, 4 * GIB, &d), 3);
    assert_int_equal(d.action, MIG_ACT_POSTCOPY);
    assert_non_null(strstr(d.reason, "no longer shrinks"));
}

static void test_shrinking_rounds_are_progress(void **state)
{
    static const struct rec r[] = {
        { 10, 1, 500, 2000, 8000 }, { 12, 2, 800, 2000, 8000 }, { 14, 3, 600, 2000, 8000 },
        { 16, 4, 450, 2000, 8000 }, { 18, 5, 380, 2000, 8000 },
    };
    struct mig_policy p = policy(true, false, MIG_TIMEOUT_ABORT);
    struct mig_flags f = { .postcopy = true };
    struct mig_decision d;
    assert_int_equal(run(&p, &f, r, 5, 4 * GIB, &d), -1);
}

static void test_no_action_when_downtime_fits(void **state)
{
    /* hot, but only a few MiB remain each round: the VMM will switch over */
    static const struct rec r[] = {
        { 1, 2, 20, 30000, 950 }, { 2, 3, 20, 30000, 950 }, { 3, 4, 20, 30000, 950 },
    };
    struct mig_policy p = policy(true, true, MIG_TIMEOUT_ABORT);
    struct mig_flags f = { .postcopy = true };
    struct mig_decision d;
    assert_int_equal(run(&p, &f, r, 3, 4 * GIB, &d), -1);
}

static void test_auto_converge_flag_is_already_on(void **state)
{
    struct mig_policy p = policy(false, true, MIG_TIMEOUT_ABORT);
    p.completion_timeout_s = 0;
    struct mig_flags f = { .auto_converge = true };
    struct mig_decision d;
    assert_int_equal(run(&p, &f, busy, 12, 4 * GIB, &d), -1); /* nothing left to do, no timeout */
}

static void test_inactive_status_is_not_decided(void **state)
{
    struct mig_policy p = policy(true, true, MIG_TIMEOUT_ABORT);
    struct mig_flags f = { .postcopy = true, .postcopy_after_precopy = true };
    struct mig_policy_state st;
    struct mig_decision d;
    struct mig_sample s = sample(&busy[5], 4 * GIB);
    mig_policy_state_init(&st, &f);
    s.status = "postcopy-active";
    mig_policy_decide(&p, &f, &st, &s, &d);
    assert_int_equal(d.action, MIG_ACT_CONTINUE);
    s.status = NULL;
    mig_policy_decide(&p, &f, &st, &s, &d);
    assert_int_equal(d.action, MIG_ACT_CONTINUE);
    assert_string_equal(d.reason, "migration status is unknown: nothing to decide");
}

static void test_vmm_setup_and_helpers(void **state)
{
    struct mig_policy p = policy(false, true, MIG_TIMEOUT_ABORT);
    p.bandwidth_mib_s = 100;
    struct mig_flags f = { 0 };
    struct mig_vmm_setup v;
    mig_policy_vmm_setup(&p, &f, &v);
    assert_true(v.cap_events);
    assert_false(v.cap_postcopy_ram);
    assert_true(v.cap_auto_converge);
    assert_int_equal(v.throttle_trigger_pct, MIG_POLICY_DORMANT_TRIGGER);
    assert_int_equal(v.max_bandwidth_bps, 100 * MIB);
    assert_int_equal(v.downtime_limit_ms, 300);
    assert_int_equal(v.max_switchover_retries, 2); /* the domain's, passed on */
    p.switchover_retries = 0;
    mig_policy_vmm_setup(&p, &f, &v);
    assert_int_equal(v.max_switchover_retries, 0);
    p.permit_postcopy = true;
    f.postcopy = true;
    f.bandwidth_mib_s = 50;
    mig_policy_vmm_setup(&p, &f, &v);
    assert_true(v.cap_postcopy_ram);
    assert_false(v.cap_auto_converge);
    assert_int_equal(v.max_postcopy_bandwidth_bps, 50 * MIB);
    f.auto_converge = true;
    mig_policy_vmm_setup(&p, &f, &v);
    assert_true(v.cap_auto_converge);
    assert_int_equal(v.throttle_trigger_pct, MIG_POLICY_ARMED_TRIGGER);
    /* 800 s per GiB, rounded up, at least one GiB */
    struct mig_flags none = { 0 };
    assert_int_equal(mig_policy_timeout_ms(&p, &none, 512 * MIB), 800000);
    assert_int_equal(mig_policy_timeout_ms(&p, &none, 4 * GIB + 1), 4000000);
    p.completion_timeout_s = 0;
    assert_int_equal(mig_policy_timeout_ms(&p, &none, 4 * GIB), 0);
    enum mig_timeout_action a;
    assert_int_equal(mig_timeout_action_from_name("suspend", &a), 0);
    assert_int_equal(a, MIG_TIMEOUT_PAUSE);
    assert_int_equal(mig_timeout_action_from_name("postcopy", &a), 0);
    assert_int_equal(a, MIG_TIMEOUT_POSTCOPY);
    assert_int_equal(mig_timeout_action_from_name("explode", &a), -EINVAL);
    assert_string_equal(mig_action_name(MIG_ACT_AUTO_CONVERGE), "auto-converge");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_guest_converges),
        cmocka_unit_test(test_busy_guest_switches_to_postcopy),
        cmocka_unit_test(test_busy_guest_without_operator_flag_uses_auto_converge),
        cmocka_unit_test(test_postcopy_forbidden_auto_converge_then_timeout),
        cmocka_unit_test(test_timeout_each_action),
        cmocka_unit_test(test_operator_timeout_overrides_policy),
        cmocka_unit_test(test_operator_timeout_suspend_overrides_postcopy),
        cmocka_unit_test(test_postcopy_after_first_pass),
        cmocka_unit_test(test_remaining_stops_shrinking),
        cmocka_unit_test(test_shrinking_rounds_are_progress),
        cmocka_unit_test(test_no_action_when_downtime_fits),
        cmocka_unit_test(test_auto_converge_flag_is_already_on),
        cmocka_unit_test(test_inactive_status_is_not_decided),
        cmocka_unit_test(test_vmm_setup_and_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
