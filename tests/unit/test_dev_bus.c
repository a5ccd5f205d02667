/* Port bus: dispatch by port and offset, overlap refusal, unknown ports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "devices/bus.h"

struct rec {
    uint16_t off;
    unsigned size, reads, writes;
    uint8_t last;
};

static void rec_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    struct rec *r = dev;
    r->off = off;
    r->size = size;
    r->reads++;
    memset(data, 0x40 + off, size);
}

static void rec_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct rec *r = dev;
    r->off = off;
    r->size = size;
    r->writes++;
    r->last = data[0];
}

static const struct pio_dev_ops rec_ops = { rec_read, rec_write };
static const struct pio_dev_ops write_only_ops = { NULL, rec_write };

static void test_dispatch(void **state)
{
    struct pio_bus bus;
    struct rec a = { 0 }, b = { 0 };
    pio_bus_init(&bus);
    assert_int_equal(pio_bus_register(&bus, 0x3f8, 8, "a", &rec_ops, &a), 0);
    assert_int_equal(pio_bus_register(&bus, 0x70, 2, "b", &rec_ops, &b), 0);
    uint8_t v = 0x5a, d[4];
    assert_true(pio_bus_write(&bus, 0x3fb, &v, 1));
    assert_int_equal(a.writes, 1);
    assert_int_equal(a.off, 3);
    assert_int_equal(a.last, 0x5a);
    assert_int_equal(b.writes, 0);
    assert_true(pio_bus_read(&bus, 0x71, d, 2));
    assert_int_equal(b.reads, 1);
    assert_int_equal(b.off, 1);
    assert_int_equal(b.size, 2);
    assert_int_equal(d[0], 0x41);
    /* First and last port of a range. */
    assert_true(pio_bus_read(&bus, 0x3f8, d, 1));
    assert_int_equal(a.off, 0);
    assert_true(pio_bus_read(&bus, 0x3ff, d, 1));
    assert_int_equal(a.off, 7);
    assert_false(pio_bus_read(&bus, 0x400, d, 1));
    assert_false(pio_bus_read(&bus, 0x3f7, d, 1));
}

static void test_overlap_refused(void **state)
{
    struct pio_bus bus;
    struct rec a = { 0 };
    pio_bus_init(&bus);
    assert_int_equal(pio_bus_register(&bus, 0x3f8, 8, "a", &rec_ops, &a), 0);
    assert_int_equal(pio_bus_register(&bus, 0x3fc, 8, "tail", &rec_ops, &a), -EEXIST);
    assert_int_equal(pio_bus_register(&bus, 0x3f0, 9, "head", &rec_ops, &a), -EEXIST);
    assert_int_equal(pio_bus_register(&bus, 0x3f9, 1, "inside", &rec_ops, &a), -EEXIST);
    assert_int_equal(pio_bus_register(&bus, 0x300, 0x200, "around", &rec_ops, &a), -EEXIST);
    /* Adjacent ranges are fine. */
    assert_int_equal(pio_bus_register(&bus, 0x3f0, 8, "before", &rec_ops, &a), 0);
    assert_int_equal(pio_bus_register(&bus, 0x400, 1, "after", &rec_ops, &a), 0);
    /* Empty and wrapping ranges. */
    assert_int_equal(pio_bus_register(&bus, 0x500, 0, "empty", &rec_ops, &a), -EINVAL);
    assert_int_equal(pio_bus_register(&bus, 0xfffc, 8, "wrap", &rec_ops, &a), -EINVAL);
    assert_int_equal(pio_bus_register(&bus, 0xfff8, 8, "top", &rec_ops, &a), 0);
}

static void test_full(void **state)
{
    struct pio_bus bus;
    struct rec a = { 0 };
    pio_bus_init(&bus);
    for (unsigned i = 0; i < PIO_BUS_MAX_RANGES; i++)
        assert_int_equal(pio_bus_register(&bus, (uint16_t)(0x1000 + i * 4), 4, "x", &rec_ops, &a), 0);
    assert_int_equal(pio_bus_register(&bus, 0x2000, 1, "x", &rec_ops, &a), -ENOSPC);
}

static void test_unknown(void **state)
{
    struct pio_bus bus;
    struct rec a = { 0 };
    pio_bus_init(&bus);
    assert_int_equal(pio_bus_register(&bus, 0x10, 1, "wo", &write_only_ops, &a), 0);
    uint8_t d[4] = { 0 };
    assert_false(pio_bus_read(&bus, 0x1234, d, 4));
    assert_memory_equal(d, "\xff\xff\xff\xff", 4);
    assert_true(bus.unknown_seen[0x1234 / 8] & (1u << (0x1234 % 8)));
    /* Logged once: the second access finds the bit set and stays quiet. */
    assert_false(pio_bus_read(&bus, 0x1234, d, 1));
    uint8_t v = 1;
    assert_false(pio_bus_write(&bus, 0x1235, &v, 1));
    assert_true(bus.unknown_seen[0x1235 / 8] & (1u << (0x1235 % 8)));
    /* A device without a read handler reads as all-ones. */
    d[0] = 0;
    assert_false(pio_bus_read(&bus, 0x10, d, 1));
    assert_int_equal(d[0], 0xff);
    assert_true(pio_bus_write(&bus, 0x10, &v, 1));
    assert_int_equal(a.writes, 1);
}

int main(void)
{
    gw_log_set_level(GW_LOG_DEBUG); /* exercise the once-per-port debug line */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_overlap_refused),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
