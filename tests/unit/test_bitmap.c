#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "memory/bitmap.h"

static void test_set_test_count(void **state)
{
    uint64_t *m = bitmap_new(200);
    assert_non_null(m);
    assert_int_equal(bitmap_count(m, 200), 0);
    bitmap_set(m, 0);
    bitmap_set(m, 63);
    bitmap_set(m, 64);
    bitmap_set(m, 199);
    assert_true(bitmap_test(m, 63));
    assert_false(bitmap_test(m, 62));
    assert_int_equal(bitmap_count(m, 200), 4);
    assert_int_equal(bitmap_count(m, 64), 2);
    bitmap_clear_bit(m, 63);
    assert_int_equal(bitmap_count(m, 200), 3);
    bitmap_free(m);
}

static void test_ranges(void **state)
{
    uint64_t *m = bitmap_new(1000);
    bitmap_set_range(m, 3, 500);
    assert_int_equal(bitmap_count(m, 1000), 500);
    assert_false(bitmap_test(m, 2));
    assert_true(bitmap_test(m, 3));
    assert_true(bitmap_test(m, 502));
    assert_false(bitmap_test(m, 503));
    bitmap_clear_range(m, 100, 100);
    assert_int_equal(bitmap_count(m, 1000), 400);
    assert_false(bitmap_test(m, 150));
    bitmap_free(m);
}

static void test_next_set(void **state)
{
    uint64_t *m = bitmap_new(300);
    assert_int_equal(bitmap_next_set(m, 300, 0), 300);
    bitmap_set(m, 5);
    bitmap_set(m, 130);
    bitmap_set(m, 299);
    assert_int_equal(bitmap_next_set(m, 300, 0), 5);
    assert_int_equal(bitmap_next_set(m, 300, 5), 5);
    assert_int_equal(bitmap_next_set(m, 300, 6), 130);
    assert_int_equal(bitmap_next_set(m, 300, 131), 299);
    assert_int_equal(bitmap_next_set(m, 299, 131), 299);
    assert_int_equal(bitmap_next_set(m, 300, 400), 300);
    bitmap_free(m);
}

static void test_or_take(void **state)
{
    uint64_t *a = bitmap_new(256), *b = bitmap_new(128);
    bitmap_set(b, 1);
    bitmap_set(b, 127);
    bitmap_or_at(a, 64, b, 128);
    assert_true(bitmap_test(a, 65));
    assert_true(bitmap_test(a, 191));
    bitmap_or_at(a, 3, b, 128);
    assert_true(bitmap_test(a, 4));
    assert_true(bitmap_test(a, 130));
    assert_int_equal(bitmap_count(a, 256), 4);
    uint64_t *c = bitmap_new(256);
    bitmap_take_atomic(c, a, 256);
    assert_int_equal(bitmap_count(c, 256), 4);
    assert_int_equal(bitmap_count(a, 256), 0);
    bitmap_free(a);
    bitmap_free(b);
    bitmap_free(c);
}

/* Aligned (word copies) and unaligned (bit by bit) spans: the copied bits
 * match, set and clear, and nothing outside the span changes. */
static void test_copy_bits(void **state)
{
    uint64_t *src = bitmap_new(512), *dst = bitmap_new(512);
    for (size_t b = 0; b < 512; b += 3)
        bitmap_set(src, b);
    bitmap_set_range(dst, 0, 512);
    bitmap_copy_bits(dst, 64, src, 128, 200);
    for (size_t b = 0; b < 200; b++)
        assert_int_equal(bitmap_test(dst, 64 + b), bitmap_test(src, 128 + b));
    assert_int_equal(bitmap_count(dst, 64), 64);
    assert_int_equal(bitmap_count(dst, 512) - bitmap_count(dst, 264), 512 - 264);
    bitmap_zero(dst, 512);
    bitmap_copy_bits(dst, 5, src, 70, 100);
    for (size_t b = 0; b < 100; b++)
        assert_int_equal(bitmap_test(dst, 5 + b), bitmap_test(src, 70 + b));
    assert_int_equal(bitmap_count(dst, 5), 0);
    assert_int_equal(bitmap_count(dst, 512), bitmap_count(dst, 105));
    bitmap_free(src);
    bitmap_free(dst);
}

/* Bits of src cleared in dst from a position on, at any alignment, to the
 * end of a map whose last word is partial; the count is what was cleared. */
static void test_andnot_from(void **state)
{
    uint64_t *src = bitmap_new(300), *dst = bitmap_new(300);
    bitmap_set_range(dst, 0, 300);
    for (size_t b = 0; b < 300; b += 2)
        bitmap_set(src, b);
    assert_int_equal(bitmap_andnot_from(dst, src, 70, 300), 115); /* evens 70..298 */
    for (size_t b = 0; b < 300; b++)
        assert_int_equal(bitmap_test(dst, b), b < 70 || b % 2 == 1);
    assert_int_equal(bitmap_count(src, 300), 150);
    assert_int_equal(bitmap_andnot_from(dst, src, 70, 300), 0);
    assert_int_equal(bitmap_andnot_from(dst, src, 300, 300), 0);
    bitmap_free(src);
    bitmap_free(dst);
}

/* The counts a live round's look-ahead takes over whole maps: unions and
 * "in a and b, not in c", the partial last word included and nothing
 * past it. */
static void test_counts(void **state)
{
    uint64_t *a = bitmap_new(300), *b = bitmap_new(300), *c = bitmap_new(300);
    bitmap_set_range(a, 0, 150);     /* 0..149 */
    bitmap_set_range(b, 100, 200);   /* 100..299 */
    bitmap_set_range(c, 120, 10);    /* 120..129 */
    assert_int_equal(bitmap_count_or(a, b, 300), 300);
    assert_int_equal(bitmap_count_or(a, c, 300), 150);
    assert_int_equal(bitmap_count_and_andnot(a, b, c, 300), 40); /* 100..149 less 120..129 */
    assert_int_equal(bitmap_count_and_andnot(b, a, c, 300), 40);
    assert_int_equal(bitmap_count_and_andnot(a, c, c, 300), 0);
    /* bits past nbits in the last word are not counted */
    a[4] |= ~0ULL;
    assert_int_equal(bitmap_count_or(a, c, 300), 150 + 300 - 256);
    assert_int_equal(bitmap_count_or(a, c, 256), 150);
    bitmap_free(a);
    bitmap_free(b);
    bitmap_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_test_count),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_next_set),
        cmocka_unit_test(test_or_take),
        cmocka_unit_test(test_copy_bits),
        cmocka_unit_test(test_andnot_from),
        cmocka_unit_test(test_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
