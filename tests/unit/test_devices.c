/* Device models: port bus, 16550A UART, CMOS RTC, i8042, power-off port. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "devices/bus.h"
#include "devices/cmos.h"
#include "devices/i8042.h"
#include "devices/power.h"
#include "devices/serial.h"

static int irq_level = -1, irq_changes;
static uint8_t out_buf[64];
static size_t out_len;

static void set_irq(void *o, unsigned gsi, int level)
{
    irq_level = level;
    irq_changes++;
}
static void out_byte(void *o, uint8_t b)
{
    if (out_len < sizeof(out_buf))
        out_buf[out_len++] = b;
}

static uint8_t rd(struct serial *s, uint16_t off)
{
    uint8_t v;
    serial_pio_ops.read(s, off, &v, 1);
    return v;
}
static void wr(struct serial *s, uint16_t off, uint8_t v) { serial_pio_ops.write(s, off, &v, 1); }

static struct serial *new_uart(void)
{
    static struct irq_line irq = { set_irq, NULL, 4 };
    irq_level = -1;
    irq_changes = 0;
    out_len = 0;
    return serial_new(&irq, out_byte, NULL);
}

static void test_bus(void **state)
{
    struct pio_bus bus;
    pio_bus_init(&bus);
    struct serial *s = new_uart();
    assert_int_equal(pio_bus_register(&bus, 0x3f8, 8, "com1", &serial_pio_ops, s), 0);
    assert_int_equal(pio_bus_register(&bus, 0x3fc, 8, "overlap", &serial_pio_ops, s), -EEXIST);
    assert_int_equal(pio_bus_register(&bus, 0xfffc, 8, "wrap", &serial_pio_ops, s), -EINVAL);
    uint8_t v = 'x';
    assert_true(pio_bus_write(&bus, 0x3f8, &v, 1));
    assert_int_equal(out_len, 1);
    uint8_t d[2];
    assert_false(pio_bus_read(&bus, 0x1234, d, 2));
    assert_int_equal(d[0], 0xff);
    assert_int_equal(d[1], 0xff);
    serial_free(s);
}

static void test_uart_reset_and_output(void **state)
{
    struct serial *s = new_uart();
    assert_int_equal(rd(s, 5), 0x60);          /* THRE | TEMT */
    assert_int_equal(rd(s, 2) & 0x0f, 0x01);   /* no interrupt */
    wr(s, 0, 'A');
    wr(s, 0, 'B');
    assert_int_equal(out_len, 2);
    assert_memory_equal(out_buf, "AB", 2);
    /* Divisor latch. */
    wr(s, 3, 0x80);
    wr(s, 0, 0x0c);
    wr(s, 1, 0x00);
    assert_int_equal(rd(s, 0), 0x0c);
    wr(s, 3, 0x03);
    assert_int_equal(out_len, 2); /* the DLL write sent nothing */
    serial_free(s);
}

static void test_uart_thre_interrupt(void **state)
{
    struct serial *s = new_uart();
    wr(s, 1, 0x02);                       /* enable THRE interrupt: raised at once */
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(s, 2) & 0x0f, 0x02);
    assert_int_equal(irq_level, 0);       /* reading IIR acknowledged it */
    assert_int_equal(rd(s, 2) & 0x0f, 0x01);
    wr(s, 0, 'x');                        /* sent at once: THRE again */
    assert_int_equal(irq_level, 1);
    wr(s, 1, 0x00);
    assert_int_equal(irq_level, 0);
    serial_free(s);
}

static void test_uart_fifo_and_rx_irq(void **state)
{
    struct serial *s = new_uart();
    wr(s, 2, 0xc7);                       /* FIFO on, trigger 14 */
    wr(s, 1, 0x01);                       /* RX interrupt */
    uint8_t in[20];
    for (int i = 0; i < 20; i++)
        in[i] = (uint8_t)('a' + i);
    assert_int_equal(serial_receive(s, in, 20), 16); /* FIFO holds 16 */
    assert_int_equal(serial_receive(s, in, 1), 0);
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(s, 2), 0xc4);     /* FIFO bits + RDA */
    for (int i = 0; i < 16; i++) {
        assert_true(rd(s, 5) & 0x01);
        assert_int_equal(rd(s, 0), 'a' + i);
    }
    assert_false(rd(s, 5) & 0x01);
    assert_int_equal(irq_level, 0);
    /* Below the trigger level: character timeout. */
    serial_receive(s, in, 3);
    assert_int_equal(rd(s, 2) & 0x0f, 0x0c);
    serial_free(s);
}

static void test_uart_overrun_non_fifo(void **state)
{
    struct serial *s = new_uart();
    wr(s, 1, 0x05);                       /* RX data + line status */
    uint8_t b[2] = { '1', '2' };
    assert_int_equal(serial_receive(s, b, 2), 1); /* one-byte holding register */
    assert_int_equal(rd(s, 0), '1');
    serial_free(s);
}

static void test_uart_loopback(void **state)
{
    struct serial *s = new_uart();
    wr(s, 2, 0x01);
    wr(s, 4, 0x10 | 0x02);                /* loopback, RTS */
    assert_true(rd(s, 6) & 0x10);         /* CTS follows RTS */
    wr(s, 0, 'L');
    assert_int_equal(out_len, 0);
    assert_int_equal(rd(s, 0), 'L');
    serial_free(s);
}

static void test_uart_save_load(void **state)
{
    struct serial *s = new_uart();
    wr(s, 2, 0xc7);
    wr(s, 1, 0x01);
    wr(s, 7, 0x5a);
    serial_receive(s, (const uint8_t *)"hello", 5);
    struct serial_state st;
    serial_save(s, &st);
    assert_int_equal(st.rx_count, 5);
    struct serial *t = new_uart();
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(serial_load(t, &st, &err), 0);
    assert_int_equal(irq_level, 1);
    char got[6] = { 0 };
    for (int i = 0; i < 5; i++)
        got[i] = (char)rd(t, 0);
    assert_string_equal(got, "hello");
    assert_int_equal(rd(t, 7), 0x5a);
    st.rx_count = 17;
    assert_int_equal(serial_load(t, &st, &err), -EINVAL);
    st.rx_count = 0;
    st.version = 99;
    gw_error_init(&err);
    assert_int_equal(serial_load(t, &st, &err), -EINVAL);
    serial_free(s);
    serial_free(t);
}

static uint8_t cmos_rd(struct cmos *c, uint8_t idx)
{
    uint8_t v = idx;
    cmos_pio_ops.write(c, 0, &v, 1);
    cmos_pio_ops.read(c, 1, &v, 1);
    return v;
}
static void cmos_wr(struct cmos *c, uint8_t idx, uint8_t v)
{
    cmos_pio_ops.write(c, 0, &idx, 1);
    cmos_pio_ops.write(c, 1, &v, 1);
}

static void test_cmos(void **state)
{
    assert_int_equal(cmos_encode(0, 59), 0x59);
    assert_int_equal(cmos_encode(0x04, 59), 59);
    struct cmos *c = cmos_new();
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    uint8_t year = cmos_rd(c, 9), century = cmos_rd(c, 0x32);
    unsigned y = (unsigned)((century >> 4) * 10 + (century & 15)) * 100 + (unsigned)((year >> 4) * 10 + (year & 15));
    assert_int_equal(y, (unsigned)tm.tm_year + 1900);
    cmos_wr(c, 0x0b, 0x06);               /* binary, 24 h */
    uint8_t min = cmos_rd(c, 2);
    assert_true(min < 60);
    assert_true(min == tm.tm_min || min == (tm.tm_min + 1) % 60);
    cmos_wr(c, 0x0b, 0x04);               /* binary, 12 h */
    uint8_t h = cmos_rd(c, 4);
    assert_true((h & 0x7f) >= 1 && (h & 0x7f) <= 12);
    assert_int_equal(cmos_rd(c, 0x0d), 0x80);
    cmos_set_memory_size(c, 512ULL << 20);
    unsigned ext16 = cmos_rd(c, 0x34) | cmos_rd(c, 0x35) << 8;
    assert_int_equal(ext16, (512 - 16) * 16);
    /* The guest sets the year: it sticks as an offset. */
    cmos_wr(c, 0x0b, 0x06);
    cmos_wr(c, 9, 30);
    assert_int_equal(cmos_rd(c, 9), 30);
    struct cmos_state st;
    cmos_save(c, &st);
    struct cmos *d = cmos_new();
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(cmos_load(d, &st, &err), 0);
    assert_int_equal(cmos_rd(d, 9), 30);
    cmos_free(c);
    cmos_free(d);
}

static int resets, poweroffs;
static void on_reset(void *o) { resets++; }
static void on_off(void *o) { poweroffs++; }

static void test_i8042_and_power(void **state)
{
    struct i8042 *k = i8042_new(on_reset, NULL);
    uint8_t v = 0xaa, r;
    i8042_pio_ops.write(k, 4, &v, 1);
    i8042_pio_ops.read(k, 4, &r, 1);
    assert_true(r & 0x01);
    i8042_pio_ops.read(k, 0, &r, 1);
    assert_int_equal(r, 0x55);
    v = 0xfe;
    i8042_pio_ops.write(k, 4, &v, 1);
    assert_int_equal(resets, 1);
    v = 0xd1;
    i8042_pio_ops.write(k, 4, &v, 1);
    v = 0x00;
    i8042_pio_ops.write(k, 0, &v, 1);
    assert_int_equal(resets, 2);
    i8042_free(k);

    struct power_port p = { on_off, NULL };
    uint8_t w[2] = { 0x00, 0x20 };
    power_pio_ops.write(&p, 0, w, 1);     /* byte write: ignored */
    assert_int_equal(poweroffs, 0);
    power_pio_ops.write(&p, 0, w, 2);
    assert_int_equal(poweroffs, 1);
    w[1] = 0x00;
    power_pio_ops.write(&p, 0, w, 2);
    assert_int_equal(poweroffs, 1);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bus),
        cmocka_unit_test(test_uart_reset_and_output),
        cmocka_unit_test(test_uart_thre_interrupt),
        cmocka_unit_test(test_uart_fifo_and_rx_irq),
        cmocka_unit_test(test_uart_overrun_non_fifo),
        cmocka_unit_test(test_uart_loopback),
        cmocka_unit_test(test_uart_save_load),
        cmocka_unit_test(test_cmos),
        cmocka_unit_test(test_i8042_and_power),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
