/* i8042 keyboard controller, ACPI PM1 registers (power button, power-off),
 * POST and speaker ports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "common/log.h"
#include "devices/bus.h"
#include "devices/i8042.h"
#include "devices/misc_ports.h"
#include "devices/power.h"

static int resets, poweroffs;
static void on_reset(void *o) { resets++; }
static void on_off(void *o) { poweroffs++; }

static uint8_t kbd_rd(struct i8042 *k, uint16_t off)
{
    uint8_t v;
    i8042_pio_ops.read(k, off, &v, 1);
    return v;
}

static void kbd_wr(struct i8042 *k, uint16_t off, uint8_t v) { i8042_pio_ops.write(k, off, &v, 1); }

/* Send a command and return its one-byte reply the way Linux's
 * i8042_command() does: wait for OBF (bounded), read the data port. */
static int command_reply(struct i8042 *k, uint8_t cmd)
{
    kbd_wr(k, 4, cmd);
    for (int i = 0; i < 10; i++)
        if (kbd_rd(k, 4) & 0x01)
            return kbd_rd(k, 0);
    return -1;
}

static void test_i8042_probe(void **state)
{
    struct i8042 *k = i8042_new(on_reset, NULL);
    assert_non_null(k);
    uint8_t st = kbd_rd(k, 4);
    assert_int_equal(st & 0x01, 0);              /* no data */
    assert_int_equal(st & 0x02, 0);              /* never busy */
    assert_true(st & 0x04);                      /* self-test passed */
    assert_int_equal(command_reply(k, 0xaa), 0x55);
    assert_int_equal(kbd_rd(k, 4) & 0x01, 0);    /* reply consumed */
    assert_int_equal(command_reply(k, 0xab), 0x00);
    assert_int_equal(command_reply(k, 0xa9), 0x00);
    /* Command byte: read, write, and the enable/disable commands. */
    int ctr = command_reply(k, 0x20);
    assert_int_equal(ctr, 0x45);
    assert_int_equal(command_reply(k, 0x20), ctr); /* Linux reads it twice */
    kbd_wr(k, 4, 0x60);
    kbd_wr(k, 0, 0x47);
    assert_int_equal(command_reply(k, 0x20), 0x47);
    kbd_wr(k, 4, 0xad);
    assert_int_equal(command_reply(k, 0x20) & 0x10, 0x10);
    kbd_wr(k, 4, 0xae);
    assert_int_equal(command_reply(k, 0x20) & 0x10, 0x00);
    kbd_wr(k, 4, 0xa7);
    assert_int_equal(command_reply(k, 0x20) & 0x20, 0x20);
    kbd_wr(k, 4, 0xa8);
    assert_int_equal(command_reply(k, 0x20) & 0x20, 0x00);
    /* Output port, echo through 0xD2, a byte for the absent keyboard. */
    assert_int_equal(command_reply(k, 0xd0) & 0x01, 0x01);
    kbd_wr(k, 4, 0xd2);
    kbd_wr(k, 0, 0x3c);
    assert_int_equal(kbd_rd(k, 0), 0x3c);
    kbd_wr(k, 0, 0xf2);                          /* GET ID to the keyboard */
    assert_true(kbd_rd(k, 4) & 0x01);
    assert_int_equal(kbd_rd(k, 0), 0xfe);
    assert_int_equal(resets, 0);
    i8042_free(k);
}

static void test_i8042_reset(void **state)
{
    resets = 0;
    struct i8042 *k = i8042_new(on_reset, NULL);
    kbd_wr(k, 4, 0xfe);
    assert_int_equal(resets, 1);
    kbd_wr(k, 4, 0xd1);                          /* write output port ... */
    kbd_wr(k, 0, 0x03);                          /* ... reset line high: nothing */
    assert_int_equal(resets, 1);
    kbd_wr(k, 4, 0xd1);
    kbd_wr(k, 0, 0x02);                          /* bit 0 low: reset */
    assert_int_equal(resets, 2);
    kbd_wr(k, 4, 0xf0);                          /* pulse with bit 0 low */
    assert_int_equal(resets, 3);
    kbd_wr(k, 4, 0xff);                          /* pulse nothing */
    assert_int_equal(resets, 3);
    i8042_free(k);
    /* A controller without a callback just ignores the request. */
    k = i8042_new(NULL, NULL);
    kbd_wr(k, 4, 0xfe);
    i8042_reset(k);
    assert_int_equal(command_reply(k, 0x20), 0x45);
    i8042_free(k);
}

static void test_power_port(void **state)
{
    poweroffs = 0;
    struct pio_bus bus;
    pio_bus_init(&bus);
    struct power_port p;
    power_init(&p, on_off, NULL, NULL);
    assert_int_equal(pio_bus_register(&bus, POWER_PM1_BASE, POWER_PM1_LEN, "power", &power_pio_ops, &p), 0);
    uint8_t w[4] = { 0x00, 0x20, 0, 0 };
    assert_true(pio_bus_write(&bus, POWER_PORT, w, 1));  /* byte write: ignored */
    assert_int_equal(poweroffs, 0);
    assert_true(pio_bus_write(&bus, POWER_PORT, w, 2));  /* outw(0x2000, 0x604) */
    assert_int_equal(poweroffs, 1);
    w[1] = 0x34;                                         /* SLP_EN | SLP_TYP 5 */
    assert_true(pio_bus_write(&bus, POWER_PORT, w, 4));
    assert_int_equal(poweroffs, 2);
    w[1] = 0x00;                                         /* no SLP_EN */
    pio_bus_write(&bus, POWER_PORT, w, 2);
    w[1] = 0x24;                                         /* SLP_TYP 1 (suspend) */
    pio_bus_write(&bus, POWER_PORT, w, 2);
    w[1] = 0x20;
    pio_bus_write(&bus, POWER_PORT + 1, w, 1);           /* odd port */
    assert_int_equal(poweroffs, 2);
    assert_true(pio_bus_read(&bus, POWER_PORT, w, 2));   /* SCI_EN: always ACPI mode */
    assert_int_equal(w[0] | w[1] << 8, PM1_CNT_SCI_EN);
    assert_true(power_is_off_request(0x2000));
    assert_true(power_is_off_request(0x3401));
    assert_false(power_is_off_request(0x0001));
    assert_false(power_is_off_request(0x2400));
    power_fini(&p);
}

static int sci_level = -1, sci_gsi, sci_calls;
static void sci_set(void *o, unsigned gsi, int level)
{
    sci_level = level;
    sci_gsi = (int)gsi;
    sci_calls++;
}

static uint16_t pm1_rd(struct power_port *p, uint16_t off)
{
    uint8_t v[2];
    power_pio_ops.read(p, off, v, 2);
    return (uint16_t)(v[0] | v[1] << 8);
}

static void pm1_wr(struct power_port *p, uint16_t off, uint16_t v)
{
    uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
    power_pio_ops.write(p, off, b, 2);
}

/* PM1_STS (write 1 to clear) and PM1_EN drive the SCI at level. */
static void test_pm1_button_sci(void **state)
{
    struct irq_line sci = { sci_set, NULL, POWER_SCI_GSI };
    struct power_port p;
    poweroffs = 0;
    power_init(&p, on_off, NULL, &sci);
    assert_int_equal(pm1_rd(&p, 0), 0);
    assert_int_equal(pm1_rd(&p, 2), 0);
    /* Pressed while disabled: the status shows, no SCI. */
    power_press_button(&p);
    assert_int_equal(pm1_rd(&p, 0), PM1_PWRBTN);
    assert_int_equal(sci_level, 0);
    assert_int_equal(sci_gsi, POWER_SCI_GSI);
    /* Enabling raises it; writing 0 to STS does not clear it. */
    pm1_wr(&p, 2, PM1_PWRBTN | 0x8000);                  /* bit 15 is not an enable */
    assert_int_equal(pm1_rd(&p, 2), PM1_PWRBTN);
    assert_int_equal(sci_level, 1);
    pm1_wr(&p, 0, 0);
    assert_int_equal(pm1_rd(&p, 0), PM1_PWRBTN);
    assert_int_equal(sci_level, 1);
    /* 32-bit read of the event block: STS low, EN high. */
    uint8_t d[4];
    power_pio_ops.read(&p, 0, d, 4);
    assert_int_equal(d[1] | d[3], 0x01 | 0x01);
    /* Write 1 clears, the SCI falls. */
    pm1_wr(&p, 0, 0xffff);
    assert_int_equal(pm1_rd(&p, 0), 0);
    assert_int_equal(sci_level, 0);
    /* Pressed while enabled: SCI at once; disabling lowers it, STS stays. */
    power_press_button(&p);
    assert_int_equal(sci_level, 1);
    uint8_t hi = 0;
    power_pio_ops.write(&p, 3, &hi, 1);                  /* byte write of EN's high byte */
    assert_int_equal(pm1_rd(&p, 2), 0);
    assert_int_equal(sci_level, 0);
    assert_int_equal(pm1_rd(&p, 0), PM1_PWRBTN);
    /* Save, reset, load: the state and the line come back. */
    pm1_wr(&p, 2, PM1_PWRBTN | 0x0001);
    struct power_state st;
    power_save(&p, &st);
    assert_int_equal(st.version, POWER_STATE_VERSION);
    assert_int_equal(st.sts, PM1_PWRBTN);
    assert_int_equal(st.en, PM1_PWRBTN | 0x0001);
    power_reset(&p);
    assert_int_equal(pm1_rd(&p, 0) | pm1_rd(&p, 2), 0);
    assert_int_equal(sci_level, 0);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(power_load(&p, &st, &err), 0);
    assert_int_equal(pm1_rd(&p, 2), PM1_PWRBTN | 0x0001);
    assert_int_equal(sci_level, 1);
    /* Bad states are refused and change nothing. */
    struct power_state bad = st;
    bad.version = 2;
    assert_int_equal(power_load(&p, &bad, &err), -EINVAL);
    bad = st;
    bad.sts = 0x0001;
    assert_int_equal(power_load(&p, &bad, &err), -EINVAL);
    bad = st;
    bad.en = 0x8000;
    assert_int_equal(power_load(&p, &bad, &err), -EINVAL);
    assert_int_equal(pm1_rd(&p, 0), PM1_PWRBTN);
    assert_int_equal(sci_level, 1);
    assert_int_equal(poweroffs, 0);
    power_fini(&p);
}

static void test_pm1_sci_level(void **state)
{
    assert_false(power_sci_level(0, 0));
    assert_false(power_sci_level(PM1_PWRBTN, 0));
    assert_false(power_sci_level(0, PM1_PWRBTN));
    assert_false(power_sci_level(PM1_PWRBTN, PM1_EN_MASK & ~PM1_PWRBTN));
    assert_true(power_sci_level(PM1_PWRBTN, PM1_PWRBTN));
}

static void test_post_and_speaker(void **state)
{
    struct post_port post = { 0 };
    uint8_t v = 0x42;
    post_pio_ops.write(&post, 0, &v, 1);
    assert_int_equal(post.last_code, 0x42);
    post_pio_ops.read(&post, 0, &v, 1);
    assert_int_equal(v, 0xff);
    post_pio_ops.write(NULL, 0, &v, 1);

    struct speaker_port spk = { 0 };
    v = 0x03;
    speaker_pio_ops.write(&spk, 0, &v, 1);
    speaker_pio_ops.read(&spk, 0, &v, 1);
    assert_int_equal(v & 0x23, 0x23);            /* gate, data, ch2 out */
    /* Bit 4 toggles with time. */
    int seen[2] = { 0, 0 };
    for (int i = 0; i < 100000 && !(seen[0] && seen[1]); i++) {
        speaker_pio_ops.read(&spk, 0, &v, 1);
        seen[(v >> 4) & 1] = 1;
    }
    assert_true(seen[0] && seen[1]);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_i8042_probe),
        cmocka_unit_test(test_i8042_reset),
        cmocka_unit_test(test_power_port),
        cmocka_unit_test(test_pm1_button_sci),
        cmocka_unit_test(test_pm1_sci_level),
        cmocka_unit_test(test_post_and_speaker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
