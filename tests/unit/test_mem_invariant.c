#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem_invariant.h"

#define PAGES 64

static uint8_t *mem(void)
{
    uint8_t *m = calloc(PAGES, 4096);
    return m;
}

static void set(uint8_t *m, unsigned from, unsigned to, uint8_t v)
{
    for (unsigned i = from; i < to; i++)
        m[i * 4096] = v;
}

static void test_all_equal(void **state)
{
    uint8_t *m = mem();
    set(m, 0, PAGES, 7);
    struct mem_invariant_report r;
    assert_true(mem_invariant_check(m, PAGES * 4096, &r));
    assert_int_equal(r.boundaries, 0);
    assert_int_equal(r.pages, PAGES);
    free(m);
}

static void test_one_boundary_and_wrap(void **state)
{
    uint8_t *m = mem();
    struct mem_invariant_report r;
    set(m, 0, 10, 8);
    set(m, 10, PAGES, 7);
    assert_true(mem_invariant_check(m, PAGES * 4096, &r));
    assert_int_equal(r.boundary, 10);
    set(m, 0, 30, 0);
    set(m, 30, PAGES, 255); /* 255 -> 0 wrapped */
    assert_true(mem_invariant_check(m, PAGES * 4096, &r));
    assert_int_equal(r.boundary, 30);
    free(m);
}

static void test_broken(void **state)
{
    uint8_t *m = mem();
    struct mem_invariant_report r;
    set(m, 0, 10, 9);
    set(m, 10, 20, 8);
    set(m, 20, PAGES, 7);
    assert_false(mem_invariant_check(m, PAGES * 4096, &r)); /* two boundaries */
    set(m, 0, PAGES, 5);
    set(m, 40, 41, 3);
    assert_false(mem_invariant_check(m, PAGES * 4096, &r)); /* gap of 2 */
    assert_int_equal(r.bad_page, 40);
    set(m, 0, PAGES, 5);
    set(m, 50, PAGES, 6); /* goes up */
    assert_false(mem_invariant_check(m, PAGES * 4096, &r));
    assert_false(mem_invariant_check(m, 100, &r));
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_equal),
        cmocka_unit_test(test_one_boundary_and_wrap),
        cmocka_unit_test(test_broken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
