/* Post-copy's pure parts: discard runs from a bitmap and their checks on
 * the destination, the late discard set, the fault-latency histogram, and
 * the page list of a recovery in parts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>

#include "memory/bitmap.h"
#include "migration/latency_hist.h"
#include "migration/page_runs.h"
#include "migration/recv_bitmap.h"

#include <stdlib.h>
#include <string.h>

/* 3 GiB low + 1 GiB high: page index 786432 is frame 0x100000. */
static void layout_4g(struct guest_ram *ram) { guest_ram_layout(ram, 4ULL << 30); }

static void test_runs_split_at_region(void **state)
{
    struct guest_ram ram;
    layout_4g(&ram);
    uint64_t npages = ram.size / 4096, low = (3ULL << 30) / 4096;
    uint64_t *m = bitmap_new(npages);
    bitmap_set_range(m, 5, 3);
    bitmap_set_range(m, low - 2, 4); /* crosses from low RAM to high RAM */
    bitmap_set(m, npages - 1);
    struct gws_page_run runs[8];
    uint64_t cur = 0;
    size_t n = page_runs_collect(&ram, m, npages, &cur, runs, 8);
    assert_int_equal(n, 4);
    assert_int_equal(runs[0].pfn, 5);
    assert_int_equal(runs[0].npages, 3);
    assert_int_equal(runs[1].pfn, low - 2);
    assert_int_equal(runs[1].npages, 2);
    assert_int_equal(runs[2].pfn, 0x100000);
    assert_int_equal(runs[2].npages, 2);
    assert_int_equal(runs[3].pfn, 0x100000 + (npages - 1 - low));
    assert_int_equal(page_runs_collect(&ram, m, npages, &cur, runs, 8), 0);
    /* Round trip through the destination's check. */
    for (size_t i = 0; i < n; i++) {
        uint64_t idx;
        assert_int_equal(page_runs_check(&ram, &runs[i], &idx), 0);
        for (uint64_t k = 0; k < runs[i].npages; k++)
            assert_true(bitmap_test(m, idx + k));
    }
    bitmap_free(m);
}

static void test_runs_max_and_cursor(void **state)
{
    struct guest_ram ram;
    guest_ram_layout(&ram, 64ULL << 20);
    uint64_t npages = ram.size / 4096;
    uint64_t *m = bitmap_new(npages);
    for (uint64_t i = 0; i < 100; i++)
        bitmap_set(m, i * 2);
    struct gws_page_run runs[7];
    uint64_t cur = 0, total = 0;
    size_t n;
    while ((n = page_runs_collect(&ram, m, npages, &cur, runs, 7)) > 0)
        total += n;
    assert_int_equal(total, 100);
    bitmap_free(m);
}

static void test_runs_check_rejects(void **state)
{
    struct guest_ram ram;
    layout_4g(&ram);
    uint64_t idx;
    uint64_t low = (3ULL << 30) / 4096;
    struct gws_page_run bad[] = {
        { 0, 0 },                       /* empty */
        { low, 1 },                     /* in the MMIO hole */
        { low - 1, 2 },                 /* runs into the hole */
        { 0x100000 + (1ULL << 18) - 1, 2 }, /* past the end of RAM */
        { UINT64_MAX, 1 },              /* overflowing frame */
        { 0, UINT64_MAX },              /* overflowing count */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(page_runs_check(&ram, &bad[i], &idx), -EPROTO);
    struct gws_page_run ok = { 0x100000, 1ULL << 18 };
    assert_int_equal(page_runs_check(&ram, &ok, &idx), 0);
    assert_int_equal(idx, low);
}

/* The late discards: only pages not already pending, and pending grows. */
static void test_take_new(void **state)
{
    uint64_t npages = 200; /* not a multiple of 64 */
    uint64_t *pending = bitmap_new(npages), *fresh = bitmap_new(npages);
    bitmap_set_range(pending, 10, 50);  /* pre-discarded */
    bitmap_set_range(fresh, 40, 40);    /* dirtied since: 40..59 pending, 60..79 new */
    bitmap_set(fresh, 199);
    bitmap_set(fresh, 0);
    assert_int_equal(page_runs_take_new(pending, fresh, npages), 22);
    assert_int_equal(bitmap_count(fresh, npages), 22);
    for (uint64_t i = 0; i < npages; i++) {
        bool want_fresh = i == 0 || i == 199 || (i >= 60 && i < 80);
        assert_int_equal(bitmap_test(fresh, i), want_fresh);
        assert_int_equal(bitmap_test(pending, i), want_fresh || (i >= 10 && i < 60));
    }
    /* Only what is not pending yet; nothing once it is. */
    bitmap_set_range(fresh, 0, npages);
    bitmap_clear_range(fresh, 100, 100);
    assert_int_equal(page_runs_take_new(pending, fresh, npages), 29); /* 1..9, 80..99 */
    assert_int_equal(page_runs_take_new(pending, fresh, npages), 0);
    assert_int_equal(bitmap_count(fresh, npages), 0);
    assert_int_equal(bitmap_count(pending, npages), 101); /* 0..99, 199 */
    bitmap_free(pending);
    bitmap_free(fresh);
}

static void test_hist_percentiles(void **state)
{
    static struct latency_hist h;
    latency_hist_reset(&h);
    assert_int_equal(latency_hist_percentile(&h, 50), 0);
    for (uint64_t i = 1; i <= 1000; i++)
        latency_hist_add(&h, i); /* 1..1000 µs */
    uint64_t p50 = latency_hist_percentile(&h, 50), p99 = latency_hist_percentile(&h, 99);
    assert_true(p50 >= 500 && p50 <= 500 * 107 / 100);
    assert_true(p99 >= 990 && p99 <= 1000);
    assert_int_equal(latency_hist_percentile(&h, 100), 1000);
    assert_int_equal(h.max_us, 1000);
    assert_int_equal(h.count, 1000);
}

static void test_hist_small_and_huge(void **state)
{
    static struct latency_hist h;
    latency_hist_reset(&h);
    latency_hist_add(&h, 0);
    latency_hist_add(&h, 3);
    latency_hist_add(&h, 1ULL << 40);
    assert_int_equal(latency_hist_percentile(&h, 30), 0);
    assert_int_equal(latency_hist_percentile(&h, 60), 3);
    assert_int_equal(latency_hist_percentile(&h, 100), 1ULL << 40);
}

/* A page list record as a destination sends it: npages, [first,] words. */
static uint32_t list_record(uint8_t *buf, uint64_t npages, const uint64_t *first,
                            const uint64_t *words, uint64_t k)
{
    uint32_t len = 0;
    memcpy(buf, &npages, 8);
    len += 8;
    if (first) {
        memcpy(buf + len, first, 8);
        len += 8;
    }
    memcpy(buf + len, words, k * 8);
    return len + (uint32_t)(k * 8);
}

/* A list cut into parts by the sender's rule goes back together whole,
 * with the bits beyond the last page cleared. */
static void test_list_in_parts_round_trip(void **state)
{
    const uint64_t npages = 64 * 20 + 5, words = BITMAP_WORDS(npages);
    uint64_t *src = bitmap_new(npages), *dst = bitmap_new(npages);
    for (uint64_t i = 0; i < words; i++)
        src[i] = 0x9e3779b97f4a7c15ULL * (i + 1);
    static uint8_t buf[1 << 12];
    for (uint64_t per = 1; per <= words + 1; per++) {
        struct recv_bitmap_reader r;
        recv_bitmap_reader_init(&r, npages);
        memset(dst, 0xff, words * 8);
        uint64_t first = 0, k;
        int got = 0, parts = 0;
        const char *why = NULL;
        while ((k = recv_bitmap_part_words(npages, first, per))) {
            uint32_t len = list_record(buf, npages, &first, src + first, k);
            assert_int_equal(got, 0);
            got = recv_bitmap_take(&r, dst, GWS_RP_RECV_BITMAP_PART, buf, len, &why);
            first += k;
            parts++;
        }
        assert_int_equal(got, 1);
        assert_int_equal(parts, (int)((words + per - 1) / per));
        assert_memory_equal(dst, src, (words - 1) * 8);
        assert_true(dst[words - 1] == (src[words - 1] & 31));
    }
    /* ... and in one record */
    struct recv_bitmap_reader r;
    recv_bitmap_reader_init(&r, npages);
    const char *why = NULL;
    uint32_t len = list_record(buf, npages, NULL, src, words);
    assert_int_equal(recv_bitmap_take(&r, dst, GWS_RP_RECV_BITMAP, buf, len, &why), 1);
    assert_memory_equal(dst, src, (words - 1) * 8);
    bitmap_free(src);
    bitmap_free(dst);
}

/* What a sender uses: one record up to 256 GiB of guest, parts beyond. */
static void test_list_sizes(void **state)
{
    assert_true(recv_bitmap_fits_one(64ULL << 20));        /* 256 GiB */
    assert_false(recv_bitmap_fits_one((64ULL << 20) + 1));
    uint64_t huge = 1ULL << 28;                             /* 1 TiB */
    assert_int_equal(recv_bitmap_part_words(huge, 0, 0), RECV_BITMAP_PART_MAX_WORDS);
    assert_true(16 + RECV_BITMAP_PART_MAX_WORDS * 8 <= GWS_MAX_BITMAP_PART_BODY);
    assert_int_equal(recv_bitmap_part_words(huge, BITMAP_WORDS(huge) - 3, 0), 3);
    assert_int_equal(recv_bitmap_part_words(huge, BITMAP_WORDS(huge), 0), 0);
}

/* Every broken list is refused with a reason, before the map is touched
 * beyond what the record rightly covers. */
static void test_list_rejects(void **state)
{
    const uint64_t npages = 64 * 4, other = npages + 64;
    uint64_t words[5] = { 1, 2, 3, 4, 5 }, map[4];
    static uint8_t buf[256];
    const struct {
        uint32_t type;
        uint64_t npages, first;
        uint64_t k;
        bool part;
        const char *why;
    } bad[] = {
        { GWS_RP_RECV_BITMAP, other, 0, 4, false, "page count" },
        { GWS_RP_RECV_BITMAP, npages, 0, 3, false, "length" },
        { GWS_RP_RECV_BITMAP_PART, npages, 1, 1, true, "out of order" },
        { GWS_RP_RECV_BITMAP_PART, npages, 0, 5, true, "beyond" },
        { GWS_RP_RECV_BITMAP_PART, other, 0, 1, true, "page count" },
        { GWS_RP_RECV_BITMAP_PART, npages, 0, 0, true, "bad length" },
        { GWS_RP_PONG, npages, 0, 1, false, "not a page list" },
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct recv_bitmap_reader r;
        recv_bitmap_reader_init(&r, npages);
        memset(map, 0, sizeof(map));
        const char *why = NULL;
        uint32_t len = list_record(buf, bad[i].npages, bad[i].part ? &bad[i].first : NULL, words,
                                   bad[i].k);
        assert_int_equal(recv_bitmap_take(&r, map, bad[i].type, buf, len, &why), -EPROTO);
        assert_non_null(why);
        if (!strstr(why, bad[i].why))
            fail_msg("case %u: %s", i, why);
        for (unsigned w = 0; w < 4; w++)
            assert_true(map[w] == 0);
    }
    /* a length not a whole number of words; a whole list after a part;
     * a part after the list is whole */
    struct recv_bitmap_reader r;
    recv_bitmap_reader_init(&r, npages);
    const char *why = NULL;
    uint64_t first = 0;
    uint32_t len = list_record(buf, npages, &first, words, 2);
    assert_int_equal(recv_bitmap_take(&r, map, GWS_RP_RECV_BITMAP_PART, buf, len - 4, &why),
                     -EPROTO);
    assert_int_equal(recv_bitmap_take(&r, map, GWS_RP_RECV_BITMAP_PART, buf, len, &why), 0);
    len = list_record(buf, npages, NULL, words, 4);
    assert_int_equal(recv_bitmap_take(&r, map, GWS_RP_RECV_BITMAP, buf, len, &why), -EPROTO);
    assert_non_null(strstr(why, "after a part"));
    first = 2;
    len = list_record(buf, npages, &first, words, 2);
    assert_int_equal(recv_bitmap_take(&r, map, GWS_RP_RECV_BITMAP_PART, buf, len, &why), 1);
    assert_int_equal(recv_bitmap_take(&r, map, GWS_RP_RECV_BITMAP_PART, buf, len, &why), -EPROTO);
    assert_non_null(strstr(why, "more page list"));
    assert_int_equal(recv_bitmap_take(&r, map, GWS_RP_RECV_BITMAP_PART, buf, 4, &why), -EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_split_at_region),
        cmocka_unit_test(test_runs_max_and_cursor),
        cmocka_unit_test(test_runs_check_rejects),
        cmocka_unit_test(test_take_new),
        cmocka_unit_test(test_list_in_parts_round_trip),
        cmocka_unit_test(test_list_sizes),
        cmocka_unit_test(test_list_rejects),
        cmocka_unit_test(test_hist_percentiles),
        cmocka_unit_test(test_hist_small_and_huge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
