/* MC146818 CMOS RTC model, against a fake clock and the real one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "devices/cmos.h"

static struct timespec fake_now;

static struct timespec fake_clock(void *o) { return fake_now; }

/* 2024-02-29 13:45:07 UTC, a Thursday. */
#define T0 1709214307

static uint8_t rd(struct cmos *c, uint8_t idx)
{
    uint8_t v = idx;
    cmos_pio_ops.write(c, 0, &v, 1);
    cmos_pio_ops.read(c, 1, &v, 1);
    return v;
}

static void wr(struct cmos *c, uint8_t idx, uint8_t v)
{
    cmos_pio_ops.write(c, 0, &idx, 1);
    cmos_pio_ops.write(c, 1, &v, 1);
}

static struct cmos *new_fake(time_t t, long ns)
{
    fake_now = (struct timespec){ t, ns };
    struct cmos *c = cmos_new();
    assert_non_null(c);
    cmos_set_clock(c, fake_clock, NULL);
    return c;
}

static void test_bcd_and_binary(void **state)
{
    struct cmos *c = new_fake(T0, 500000000);
    assert_int_equal(rd(c, 0x0b), 0x02);         /* BCD, 24 h after reset */
    const uint8_t bcd[] = { 0x07, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24 };
    const uint8_t idx[] = { 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09 };
    for (int i = 0; i < 7; i++)
        assert_int_equal(rd(c, idx[i]), bcd[i]);
    assert_int_equal(rd(c, 0x32), 0x20);
    wr(c, 0x0b, 0x06);                           /* binary, 24 h */
    const uint8_t bin[] = { 7, 45, 13, 5, 29, 2, 24 };
    for (int i = 0; i < 7; i++)
        assert_int_equal(rd(c, idx[i]), bin[i]);
    assert_int_equal(rd(c, 0x32), 20);
    /* Index bit 7 (NMI mask) is ignored; the index port reads 0xff. */
    assert_int_equal(rd(c, 0x80 | 0x02), 45);
    uint8_t v;
    cmos_pio_ops.read(c, 0, &v, 1);
    assert_int_equal(v, 0xff);
    assert_int_equal(cmos_encode(0, 59), 0x59);
    assert_int_equal(cmos_encode(0x04, 59), 59);
    cmos_free(c);
}

static void test_12_hour(void **state)
{
    struct cmos *c = new_fake(T0, 0);
    wr(c, 0x0b, 0x00);                           /* BCD, 12 h */
    assert_int_equal(rd(c, 0x04), 0x81);         /* 1 PM */
    wr(c, 0x0b, 0x04);                           /* binary, 12 h */
    assert_int_equal(rd(c, 0x04), 0x81);
    fake_now.tv_sec = T0 - 13 * 3600 - 45 * 60;  /* 00:00:07 */
    assert_int_equal(rd(c, 0x04), 12);           /* 12 AM */
    fake_now.tv_sec = T0 - 1 * 3600 - 45 * 60;   /* 12:00:07 */
    assert_int_equal(rd(c, 0x04), 0x80 | 12);    /* 12 PM */
    fake_now.tv_sec = T0 + 10 * 3600;            /* 23:45 */
    wr(c, 0x0b, 0x00);
    assert_int_equal(rd(c, 0x04), 0x91);         /* 11 PM in BCD */
    /* Writing hours in 12 h mode: 3 PM. */
    wr(c, 0x04, 0x83);
    wr(c, 0x0b, 0x06);
    assert_int_equal(rd(c, 0x04), 15);
    cmos_free(c);
}

static void test_register_a_c_d(void **state)
{
    struct cmos *c = new_fake(T0, 500000000);
    assert_int_equal(rd(c, 0x0a), 0x26);         /* no update in progress */
    fake_now.tv_nsec = 999000000;
    assert_int_equal(rd(c, 0x0a), 0xa6);         /* UIP before the tick */
    fake_now.tv_nsec = 100000;
    assert_int_equal(rd(c, 0x0d), 0x80);         /* valid RAM */
    wr(c, 0x0d, 0x00);
    assert_int_equal(rd(c, 0x0d), 0x80);         /* read-only */

    wr(c, 0x0a, 0x20);                           /* no periodic rate */
    rd(c, 0x0c);
    assert_int_equal(rd(c, 0x0c), 0x00);
    fake_now.tv_sec++;                            /* an update happened */
    assert_int_equal(rd(c, 0x0c), 0x10);         /* UF */
    assert_int_equal(rd(c, 0x0c), 0x00);         /* cleared by the read */
    wr(c, 0x0b, 0x12);                           /* update interrupts enabled */
    fake_now.tv_sec++;
    assert_int_equal(rd(c, 0x0c), 0x90);         /* IRQF | UF */
    assert_int_equal(rd(c, 0x0c), 0x00);
    wr(c, 0x0c, 0xff);
    assert_int_equal(rd(c, 0x0c), 0x00);         /* read-only */
    wr(c, 0x0a, 0x26);                           /* 1024 Hz */
    rd(c, 0x0c);
    fake_now.tv_nsec += 1000000;
    assert_int_equal(rd(c, 0x0c), 0x40);         /* PF */
    assert_int_equal(rd(c, 0x0c), 0x00);
    cmos_free(c);
}

static void test_guest_sets_time(void **state)
{
    struct cmos *c = new_fake(T0, 0);
    /* The Linux way: SET, write every field, clear SET. 2031-03-31 from
     * February would go wrong field by field (Feb 31). */
    wr(c, 0x0b, 0x82);
    assert_int_equal(rd(c, 0x00), 0x07);         /* frozen copy of the time */
    fake_now.tv_sec += 5;
    assert_int_equal(rd(c, 0x00), 0x07);
    assert_int_equal(rd(c, 0x0a) & 0x80, 0);
    wr(c, 0x00, 0x58);
    wr(c, 0x02, 0x59);
    wr(c, 0x04, 0x23);
    wr(c, 0x07, 0x31);
    wr(c, 0x08, 0x03);
    wr(c, 0x09, 0x31);
    wr(c, 0x32, 0x20);
    wr(c, 0x0b, 0x02);
    assert_int_equal(rd(c, 0x07), 0x31);
    assert_int_equal(rd(c, 0x08), 0x03);
    assert_int_equal(rd(c, 0x09), 0x31);
    assert_int_equal(rd(c, 0x06), 0x02);         /* a Monday */
    fake_now.tv_sec += 3;                         /* the clock runs on */
    assert_int_equal(rd(c, 0x00), 0x01);
    assert_int_equal(rd(c, 0x07), 0x01);
    assert_int_equal(rd(c, 0x08), 0x04);
    /* One field while running: the others keep going. */
    wr(c, 0x09, 0x45);
    assert_int_equal(rd(c, 0x09), 0x45);
    assert_int_equal(rd(c, 0x08), 0x04);
    assert_int_equal(rd(c, 0x32), 0x20);
    cmos_free(c);
}

static void test_memory_size(void **state)
{
    struct cmos *c = new_fake(T0, 0);
    cmos_set_memory_size(c, 32ULL << 20);
    assert_int_equal(rd(c, 0x15) | rd(c, 0x16) << 8, 640);
    assert_int_equal(rd(c, 0x17) | rd(c, 0x18) << 8, 31 * 1024);
    assert_int_equal(rd(c, 0x30) | rd(c, 0x31) << 8, 31 * 1024);
    assert_int_equal(rd(c, 0x34) | rd(c, 0x35) << 8, 16 * 16);
    cmos_set_memory_size(c, 512ULL << 20);
    assert_int_equal(rd(c, 0x17) | rd(c, 0x18) << 8, 0xffff);   /* capped */
    assert_int_equal(rd(c, 0x30) | rd(c, 0x31) << 8, 0xffff);
    assert_int_equal(rd(c, 0x34) | rd(c, 0x35) << 8, (512 - 16) * 16);
    assert_int_equal(rd(c, 0x5b) | rd(c, 0x5c) << 8 | rd(c, 0x5d) << 16, 0);
    cmos_set_memory_size(c, 6ULL << 30);          /* 3 GiB low + 3 GiB high */
    assert_int_equal(rd(c, 0x34) | rd(c, 0x35) << 8, (3072 - 16) * 16);
    assert_int_equal(rd(c, 0x5b) | rd(c, 0x5c) << 8 | rd(c, 0x5d) << 16, 3 * 16384);
    cmos_free(c);
}

static unsigned bcd(uint8_t v) { return (v >> 4) * 10 + (v & 15); }

static void test_real_clock(void **state)
{
    struct cmos *c = cmos_new();
    assert_non_null(c);
    struct tm tm = { 0 };
    tm.tm_sec = (int)bcd(rd(c, 0x00));
    tm.tm_min = (int)bcd(rd(c, 0x02));
    tm.tm_hour = (int)bcd(rd(c, 0x04));
    tm.tm_mday = (int)bcd(rd(c, 0x07));
    tm.tm_mon = (int)bcd(rd(c, 0x08)) - 1;
    tm.tm_year = (int)(bcd(rd(c, 0x32)) * 100 + bcd(rd(c, 0x09))) - 1900;
    time_t t = timegm(&tm), now = time(NULL);
    assert_true(t - now <= 2 && now - t <= 2);
    cmos_free(c);
}

static void test_save_load(void **state)
{
    struct cmos *c = new_fake(T0, 0);
    cmos_set_memory_size(c, 256ULL << 20);
    wr(c, 0x0b, 0x06);
    wr(c, 0x09, 30);                             /* year 2030: an offset */
    wr(c, 0x40, 0x99);                           /* plain RAM */
    wr(c, 0x0e, 0x00);                           /* leave the index somewhere */
    struct cmos_state st;
    cmos_save(c, &st);
    assert_int_equal(st.version, CMOS_STATE_VERSION);
    assert_true(st.time_offset_s > 0);

    struct cmos *d = new_fake(T0 + 60, 0);       /* the destination, later */
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(cmos_load(d, &st, &err), 0);
    assert_int_equal(rd(d, 0x09), 30);
    assert_int_equal(rd(d, 0x02), 46);           /* time moved on with the host */
    assert_int_equal(rd(d, 0x40), 0x99);
    assert_int_equal(rd(d, 0x34) | rd(d, 0x35) << 8, (256 - 16) * 16);

    struct cmos_state bad, before, after;
    cmos_save(d, &before);
    bad = st;
    bad.version = 2;
    assert_int_equal(cmos_load(d, &bad, &err), -EINVAL);
    bad = st;
    bad.reserved[1] = 1;
    assert_int_equal(cmos_load(d, &bad, NULL), -EINVAL);
    bad = st;
    bad.time_offset_s = INT64_MIN;
    assert_int_equal(cmos_load(d, &bad, NULL), -EINVAL);
    cmos_save(d, &after);
    assert_memory_equal(&before, &after, sizeof(before));
    assert_true(gw_error_is_set(&err));
    cmos_free(c);
    cmos_free(d);
}

/* The guest may set any year its registers can hold (century 0x00-0x99 in
 * BCD): register C's flags still follow its seconds and periods, before
 * 1970 and after 2262 (where guest time no longer fits in 64-bit ns). */
static void test_register_c_any_year(void **state)
{
    static const uint8_t centuries[] = { 0x20, 0x19, 0x23, 0x30, 0x99, 0x16, 0x00 };
    for (size_t i = 0; i < sizeof(centuries); i++) {
        struct cmos *c = new_fake(T0, 0);
        wr(c, 0x0a, 0x20);                       /* no periodic rate */
        wr(c, 0x32, centuries[i]);
        assert_int_equal(rd(c, 0x32), centuries[i]);
        assert_int_equal(rd(c, 0x00), 0x07);     /* the seconds did not move */
        rd(c, 0x0c);
        fake_now.tv_nsec = 999999999;
        if (rd(c, 0x0c) != 0x00)
            fail_msg("century 0x%02x: UF inside one second", centuries[i]);
        fake_now.tv_sec++;
        fake_now.tv_nsec = 0;
        if (rd(c, 0x0c) != 0x10)
            fail_msg("century 0x%02x: no UF after the tick", centuries[i]);
        wr(c, 0x0a, 0x2f);                       /* rate 15: every 500 ms */
        rd(c, 0x0c);
        fake_now.tv_nsec = 499999999;
        if (rd(c, 0x0c) != 0x00)
            fail_msg("century 0x%02x: PF inside a period", centuries[i]);
        fake_now.tv_nsec = 500000000;
        if (rd(c, 0x0c) != 0x40)
            fail_msg("century 0x%02x: no PF after a period", centuries[i]);
        cmos_free(c);
    }
}

/* 1969-12-31 23:59:59 is second -1 of the epoch: a time like any other. */
static void test_set_last_second_of_1969(void **state)
{
    struct cmos *c = new_fake(T0, 0);
    wr(c, 0x0b, 0x82);                           /* SET, BCD, 24 h */
    const uint8_t idx[] = { 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32 };
    const uint8_t val[] = { 0x59, 0x59, 0x23, 0x31, 0x12, 0x69, 0x19 };
    for (int i = 0; i < 7; i++)
        wr(c, idx[i], val[i]);
    wr(c, 0x0b, 0x02);
    for (int i = 0; i < 7; i++)
        assert_int_equal(rd(c, idx[i]), val[i]);
    fake_now.tv_sec++;
    assert_int_equal(rd(c, 0x09), 0x70);
    assert_int_equal(rd(c, 0x00), 0x00);
    cmos_free(c);
}

/* A loaded state saves back to the same bytes, whatever RAM holds
 * (register A's UIP bit included: reads compute UIP, never store it). */
static void test_load_save_same_bytes(void **state)
{
    struct cmos *c = new_fake(T0, 0);
    struct cmos_state st;
    cmos_save(c, &st);
    for (unsigned i = 0; i < sizeof(st.ram); i++)
        st.ram[i] = (uint8_t)(0x80 | i);         /* UIP set in register A */
    st.ram[0x0b] = 0x82;                         /* SET: clock registers are RAM */
    st.index = 0x8f;
    st.time_offset_s = -1000000000000LL;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(cmos_load(c, &st, &err), 0);
    struct cmos_state again;
    cmos_save(c, &again);
    assert_memory_equal(&st, &again, sizeof(st));
    assert_int_equal(rd(c, 0x0a), 0x0a);         /* UIP reads 0 while SET */
    wr(c, 0x0b, 0x02);
    assert_int_equal(rd(c, 0x0a) & 0x80, 0);     /* and 0 outside the last 2 ms */
    cmos_free(c);
}

/* Each write of month 255 while the clock runs moves the date about 21
 * years on; repeated, the offset must stay within what a destination
 * accepts (cmos_state_check), or the guest could block its own migration
 * and, further on, overflow the clock arithmetic. */
static void test_repeated_field_writes_stay_in_range(void **state)
{
    struct cmos *c = new_fake(T0, 0);
    wr(c, 0x0b, 0x06);                           /* binary, 24 h */
    for (int i = 0; i < 3000; i++)
        wr(c, 0x08, 0xff);
    struct cmos_state st;
    cmos_save(c, &st);
    struct gw_error err;
    gw_error_init(&err);
    if (cmos_state_check(&st, &err) < 0)
        fail_msg("the saved state is refused: %s", err.msg);
    assert_true(rd(c, 0x08) >= 1 && rd(c, 0x08) <= 12);
    assert_int_equal(rd(c, 0x00), 7);            /* the clock still runs from T0 */
    cmos_free(c);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bcd_and_binary),
        cmocka_unit_test(test_12_hour),
        cmocka_unit_test(test_register_a_c_d),
        cmocka_unit_test(test_guest_sets_time),
        cmocka_unit_test(test_memory_size),
        cmocka_unit_test(test_real_clock),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_register_c_any_year),
        cmocka_unit_test(test_set_last_second_of_1969),
        cmocka_unit_test(test_load_save_same_bytes),
        cmocka_unit_test(test_repeated_field_writes_stay_in_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
