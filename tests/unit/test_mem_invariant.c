/* The test guest's memory invariant checker (src/common/mem_invariant.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>

#include "common/mem_invariant.h"

#define PAGES 64
#define LEN   ((size_t)PAGES * MEM_INVARIANT_PAGE)

static int setup(void **state)
{
    *state = calloc(PAGES, MEM_INVARIANT_PAGE);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

/* Byte 0 of pages [from, to) = v; the rest of each page is noise. */
static void set(uint8_t *m, unsigned from, unsigned to, uint8_t v)
{
    for (unsigned i = from; i < to; i++) {
        m[(size_t)i * MEM_INVARIANT_PAGE] = v;
        m[(size_t)i * MEM_INVARIANT_PAGE + 1] = (uint8_t)(i * 7);
    }
}

static void test_all_equal(void **state)
{
    uint8_t *m = *state;
    struct mem_invariant_report r;
    set(m, 0, PAGES, 7);
    assert_true(mem_invariant_check(m, LEN, &r));
    assert_int_equal(r.pages, PAGES);
    assert_int_equal(r.boundaries, 0);
    assert_int_equal(r.boundary, 0);
    assert_false(r.has_bad);
    assert_int_equal(r.first, 7);
    assert_int_equal(r.last, 7);
}

static void test_one_boundary(void **state)
{
    uint8_t *m = *state;
    struct mem_invariant_report r;
    set(m, 0, 10, 8);
    set(m, 10, PAGES, 7);
    assert_true(mem_invariant_check(m, LEN, &r));
    assert_int_equal(r.boundaries, 1);
    assert_int_equal(r.boundary, 10);
    assert_int_equal(r.first, 8);
    assert_int_equal(r.last, 7);
}

static void test_wrap_255_to_0(void **state)
{
    uint8_t *m = *state;
    struct mem_invariant_report r;
    set(m, 0, 30, 0);
    set(m, 30, PAGES, 255);
    assert_true(mem_invariant_check(m, LEN, &r));
    assert_int_equal(r.boundary, 30);
    assert_int_equal(r.boundaries, 1);
}

static void test_two_boundaries_fail(void **state)
{
    uint8_t *m = *state;
    struct mem_invariant_report r;
    set(m, 0, 10, 9);
    set(m, 10, 20, 8);
    set(m, 20, PAGES, 7);
    assert_false(mem_invariant_check(m, LEN, &r));
    assert_int_equal(r.boundaries, 2);
    assert_int_equal(r.boundary, 10);
    assert_true(r.has_bad);
    assert_int_equal(r.bad_page, 20);
    assert_int_equal(r.bad_prev, 8);
    assert_int_equal(r.bad_value, 7);
}

static void test_gap_of_two_fail(void **state)
{
    uint8_t *m = *state;
    struct mem_invariant_report r;
    set(m, 0, PAGES, 5);
    set(m, 40, PAGES, 3);
    assert_false(mem_invariant_check(m, LEN, &r));
    assert_int_equal(r.boundaries, 0);
    assert_int_equal(r.bad_page, 40);
    assert_int_equal(r.bad_prev, 5);
    assert_int_equal(r.bad_value, 3);
}

static void test_step_up_fail(void **state)
{
    uint8_t *m = *state;
    struct mem_invariant_report r;
    set(m, 0, PAGES, 5);
    set(m, 50, PAGES, 6); /* the later pages are ahead: never right */
    assert_false(mem_invariant_check(m, LEN, &r));
    assert_int_equal(r.bad_page, 50);
}

static void test_single_bad_page_fail(void **state)
{
    uint8_t *m = *state;
    struct mem_invariant_report r;
    set(m, 0, PAGES, 5);
    set(m, 33, 34, 4); /* a drop then a rise: two changes */
    assert_false(mem_invariant_check(m, LEN, &r));
    assert_int_equal(r.boundary, 33);
    assert_int_equal(r.bad_page, 34);
    assert_int_equal(r.changes, 2);
}

static void test_partial_and_empty(void **state)
{
    uint8_t *m = *state;
    struct mem_invariant_report r;
    set(m, 0, PAGES, 1);
    assert_false(mem_invariant_check(m, 100, &r)); /* less than a page */
    assert_int_equal(r.pages, 0);
    assert_true(mem_invariant_check(m, MEM_INVARIANT_PAGE + 100, &r));
    assert_int_equal(r.pages, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_all_equal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_boundary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrap_255_to_0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_boundaries_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_of_two_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_step_up_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_bad_page_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_and_empty, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
