#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "memory/bitmap.h"
#include "memory/guest_ram.h"
#include "migration/ram_scan.h"
#include "migration/stream_records.h"

static void test_zero_page(void **state)
{
    static uint64_t page[512] __attribute__((aligned(64)));
    memset(page, 0, sizeof(page));
    assert_true(stream_page_is_zero(page));
    for (unsigned i = 0; i < 512; i += 37) {
        page[i] = 1ULL << (i % 64);
        assert_false(stream_page_is_zero(page));
        page[i] = 0;
    }
    ((uint8_t *)page)[4095] = 1;
    assert_false(stream_page_is_zero(page));
}

static void test_pfn_mapping(void **state)
{
    struct guest_ram ram;
    memset(&ram, 0, sizeof(ram));
    guest_ram_layout(&ram, 4ULL << 30); /* 3 GiB low + 1 GiB at 4 GiB */
    assert_int_equal(ram.nr_regions, 2);
    assert_int_equal(ram_page_to_pfn(&ram, 0), 0);
    uint64_t low_pages = GUEST_RAM_LOW_MAX / 4096;
    assert_int_equal(ram_page_to_pfn(&ram, low_pages - 1), low_pages - 1);
    assert_int_equal(ram_page_to_pfn(&ram, low_pages), GUEST_RAM_HIGH_BASE / 4096);
    uint64_t idx;
    assert_true(ram_pfn_to_page(&ram, GUEST_RAM_HIGH_BASE / 4096 + 5, &idx));
    assert_int_equal(idx, low_pages + 5);
    assert_false(ram_pfn_to_page(&ram, low_pages, &idx)); /* the hole */
    assert_false(ram_pfn_to_page(&ram, (5ULL << 30) / 4096, &idx));
    assert_false(ram_pfn_to_page(&ram, UINT64_MAX, &idx));
}

static void test_data_extents(void **state)
{
    struct guest_ram ram;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_init(&ram, 64 << 20, "scan", &err), 0);
    uint64_t *map = bitmap_new(ram.size / 4096);
    uint64_t n = 99;
    assert_int_equal(ram_scan_data_pages(&ram, map, &n), 0);
    assert_int_equal(n, 0);
    ram.host[5 * 4096] = 1;
    ram.host[40ULL << 20] = 1;
    assert_int_equal(ram_scan_data_pages(&ram, map, &n), 0);
    assert_true(bitmap_test(map, 5));
    assert_true(bitmap_test(map, (40ULL << 20) / 4096));
    assert_true(n >= 2);
    assert_true(n < 4096); /* holes stay holes */
    bitmap_free(map);
    guest_ram_fini(&ram);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_page),
        cmocka_unit_test(test_pfn_mapping),
        cmocka_unit_test(test_data_extents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
