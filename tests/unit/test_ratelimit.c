#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "migration/ratelimit.h"

static void test_unlimited(void **state)
{
    struct ratelimit rl;
    ratelimit_init(&rl, 0, 0);
    assert_int_equal(ratelimit_account(&rl, 1ULL << 30, 1), 0);
}

/* Simulate a sender that sleeps as told: the achieved rate must be within
 * 1% of the limit. */
static void test_rate_holds(void **state)
{
    const uint64_t limit = 125000000; /* 1 Gbit/s */
    struct ratelimit rl;
    uint64_t now = 1000;
    ratelimit_init(&rl, limit, now);
    uint64_t sent = 0;
    while (now < 10ULL * 1000000000ULL) {
        sent += 256 * 1024;
        now += ratelimit_account(&rl, 256 * 1024, now) + 1000; /* 1 µs to send */
    }
    double rate = (double)sent / ((double)now / 1e9);
    assert_true(rate < limit * 1.01);
    assert_true(rate > limit * 0.95);
}

static void test_change_limit(void **state)
{
    struct ratelimit rl;
    ratelimit_init(&rl, 1000, 0);
    assert_true(ratelimit_account(&rl, 1000, 0) > 900000000ULL);
    ratelimit_set(&rl, 0);
    assert_int_equal(ratelimit_account(&rl, 1000, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_rate_holds),
        cmocka_unit_test(test_change_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
