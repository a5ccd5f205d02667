/* 16550A UART model: registers, FIFO, interrupts, input flow, state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "common/log.h"
#include "devices/serial.h"

enum { THR = 0, RBR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4,
       LSR = 5, MSR = 6, SCR = 7 };

static int irq_level = -1, irq_rises, irq_falls;
static uint8_t out_buf[64];
static size_t out_len;
static int notified;

static void set_irq(void *o, unsigned gsi, int level)
{
    assert_int_equal(gsi, SERIAL_COM1_GSI);
    if (level && irq_level != 1)
        irq_rises++;
    if (!level && irq_level == 1)
        irq_falls++;
    irq_level = level;
}

static void out_byte(void *o, uint8_t b)
{
    if (out_len < sizeof(out_buf))
        out_buf[out_len++] = b;
}

static void on_notify(void *o) { notified++; }

static uint8_t rd(struct serial *s, uint16_t off)
{
    uint8_t v;
    serial_pio_ops.read(s, off, &v, 1);
    return v;
}

static void wr(struct serial *s, uint16_t off, uint8_t v) { serial_pio_ops.write(s, off, &v, 1); }

static const struct irq_line com1_irq = { set_irq, NULL, SERIAL_COM1_GSI };

static struct serial *new_uart(void)
{
    irq_level = 0;
    irq_rises = irq_falls = 0;
    out_len = 0;
    notified = 0;
    struct serial *s = serial_new(&com1_irq, out_byte, NULL);
    assert_non_null(s);
    return s;
}

static void test_reset_state_and_output(void **state)
{
    struct serial *s = new_uart();
    assert_int_equal(rd(s, LSR), 0x60);          /* THRE | TEMT */
    assert_int_equal(rd(s, IIR), 0x01);          /* no interrupt, no FIFO */
    assert_int_equal(rd(s, IER), 0x00);
    assert_int_equal(rd(s, MSR), 0xb0);          /* DCD, DSR, CTS, no deltas */
    assert_int_equal(rd(s, MCR), 0x00);
    assert_int_equal(rd(s, RBR), 0x00);          /* empty */
    wr(s, SCR, 0xa5);
    assert_int_equal(rd(s, SCR), 0xa5);
    wr(s, THR, 'A');
    wr(s, THR, 'B');
    assert_int_equal(out_len, 2);
    assert_memory_equal(out_buf, "AB", 2);
    assert_int_equal(rd(s, LSR), 0x60);          /* sent at once */
    assert_int_equal(irq_rises, 0);              /* nothing enabled */
    serial_free(s);
}

static void test_divisor_latch(void **state)
{
    struct serial *s = new_uart();
    wr(s, IER, 0x01);
    wr(s, LCR, 0x83);                            /* DLAB, 8N1 */
    wr(s, DLL, 0x01);
    wr(s, DLM, 0x02);
    assert_int_equal(rd(s, DLL), 0x01);
    assert_int_equal(rd(s, DLM), 0x02);
    assert_int_equal(out_len, 0);                /* DLL write sent nothing */
    wr(s, LCR, 0x03);
    assert_int_equal(rd(s, IER), 0x01);          /* IER untouched by DLM */
    assert_int_equal(rd(s, LCR), 0x03);
    wr(s, THR, 'x');
    assert_int_equal(out_len, 1);
    wr(s, LCR, 0x80);
    assert_int_equal(rd(s, DLL) | rd(s, DLM) << 8, 0x0201);
    serial_free(s);
}

static void test_fifo_fill_and_flow(void **state)
{
    struct serial *s = new_uart();
    serial_set_rx_notify(s, on_notify, NULL);
    /* Without the FIFO the receiver holds one byte. */
    assert_int_equal(serial_receive(s, (const uint8_t *)"12", 2), 1);
    assert_false(serial_can_receive(s));
    assert_int_equal(notified, 0);
    assert_int_equal(rd(s, RBR), '1');
    assert_int_equal(notified, 1);               /* space again */
    wr(s, FCR, 0x07);                            /* FIFO on, clear both */
    assert_int_equal(rd(s, IIR) & 0xc0, 0xc0);
    uint8_t in[20];
    for (int i = 0; i < 20; i++)
        in[i] = (uint8_t)('a' + i);
    assert_int_equal(serial_receive(s, in, 20), 16);
    assert_false(serial_can_receive(s));
    assert_int_equal(serial_receive(s, in + 16, 4), 0);
    assert_int_equal(rd(s, LSR), 0x61);          /* DR, no overrun: input waits */
    assert_int_equal(rd(s, RBR), 'a');
    assert_int_equal(notified, 2);
    assert_true(serial_can_receive(s));
    assert_int_equal(serial_receive(s, in + 16, 4), 1);
    for (int i = 1; i < 17; i++)
        assert_int_equal(rd(s, RBR), 'a' + i);
    assert_int_equal(rd(s, LSR), 0x60);
    /* FIFO clear frees space too. */
    assert_int_equal(serial_receive(s, in, 20), 16);
    wr(s, FCR, 0x03);
    assert_int_equal(rd(s, LSR), 0x60);
    assert_int_equal(notified, 4);
    serial_free(s);
}

static void test_overrun_in_loopback(void **state)
{
    struct serial *s = new_uart();
    wr(s, FCR, 0x01);
    wr(s, MCR, 0x18);                            /* loopback, OUT2 */
    wr(s, IER, 0x05);                            /* RX data + line status */
    for (int i = 0; i < 17; i++)
        wr(s, THR, (uint8_t)i);
    assert_int_equal(out_len, 0);
    assert_int_equal(rd(s, IIR), 0xc6);          /* line status first */
    assert_int_equal(rd(s, LSR), 0x63);          /* DR | OE */
    assert_int_equal(rd(s, LSR), 0x61);          /* OE cleared by the read */
    assert_int_equal(rd(s, IIR), 0xc4);          /* now data available */
    for (int i = 0; i < 16; i++)
        assert_int_equal(rd(s, RBR), i);         /* the 17th byte was lost */
    assert_int_equal(rd(s, IIR), 0xc1);
    serial_free(s);
}

static void test_trigger_levels(void **state)
{
    struct serial *s = new_uart();
    wr(s, FCR, 0x41);                            /* FIFO, trigger 4 */
    wr(s, IER, 0x01);
    serial_receive(s, (const uint8_t *)"abc", 3);
    assert_int_equal(rd(s, IIR), 0xcc);          /* below trigger: timeout */
    serial_receive(s, (const uint8_t *)"d", 1);
    assert_int_equal(rd(s, IIR), 0xc4);          /* at trigger: data available */
    wr(s, FCR, 0xc1);                            /* trigger 14 */
    assert_int_equal(rd(s, IIR), 0xcc);
    wr(s, FCR, 0x81);                            /* trigger 8 */
    serial_receive(s, (const uint8_t *)"efgh", 4);
    assert_int_equal(rd(s, IIR), 0xc4);
    serial_free(s);
}

static void test_iir_priorities(void **state)
{
    struct serial *s = new_uart();
    wr(s, FCR, 0x01);
    wr(s, MCR, 0x10);                            /* loopback: DCD, DSR, CTS drop */
    assert_int_equal(rd(s, MSR), 0x0b);          /* the deltas, cleared by reading */
    wr(s, IER, 0x0f);
    /* THRE was raised by enabling it. */
    assert_int_equal(rd(s, IIR), 0xc2);
    assert_int_equal(rd(s, IIR), 0xc1);
    for (int i = 0; i < 17; i++)                 /* data + overrun + THRE */
        wr(s, THR, 'z');
    wr(s, MCR, 0x12);                            /* RTS -> CTS: modem status */
    assert_int_equal(rd(s, IIR), 0xc6);          /* 1. line status */
    rd(s, LSR);
    assert_int_equal(rd(s, IIR), 0xc4);          /* 2. data available */
    wr(s, FCR, 0x03);                            /* drop the data */
    assert_int_equal(rd(s, IIR), 0xc2);          /* 3. THR empty (acked now) */
    assert_int_equal(rd(s, IIR), 0xc0);          /* 4. modem status */
    assert_int_equal(rd(s, MSR) & 0x11, 0x11);   /* CTS + delta CTS */
    assert_int_equal(rd(s, IIR), 0xc1);
    serial_free(s);
}

/* The sequences Linux's 8250 driver runs: the THRE test in
 * serial8250_do_startup() and interrupt-driven transmit. */
static void test_thre_linux_sequence(void **state)
{
    struct serial *s = new_uart();
    wr(s, MCR, 0x0b);                            /* DTR, RTS, OUT2 */
    wr(s, IER, 0x02);
    assert_int_equal(irq_level, 1);
    uint8_t iir1 = rd(s, IIR);
    assert_int_equal(iir1 & 0x0f, 0x02);
    assert_int_equal(irq_level, 0);              /* IIR read acknowledged it */
    wr(s, IER, 0x00);
    wr(s, IER, 0x02);                            /* re-enable: raised again */
    assert_int_equal(irq_level, 1);
    uint8_t iir = rd(s, IIR);
    assert_false(iir & 0x01);                    /* so no UART_BUG_THRE */
    wr(s, IER, 0x00);
    assert_int_equal(irq_level, 0);

    /* start_tx: enable THRI, interrupt, handler reads IIR then LSR, writes
     * bytes; every byte re-arms THRE with a new edge. */
    irq_rises = irq_falls = 0;
    wr(s, IER, 0x02);
    assert_int_equal(irq_rises, 1);
    assert_int_equal(rd(s, IIR) & 0x0f, 0x02);
    assert_true(rd(s, LSR) & 0x20);
    wr(s, THR, 'h');
    assert_int_equal(irq_rises, 2);
    wr(s, THR, 'i');                             /* line still high: pulse */
    assert_int_equal(irq_rises, 3);
    assert_int_equal(irq_falls, 2);
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(s, IIR) & 0x0f, 0x02);
    assert_int_equal(rd(s, IIR) & 0x0f, 0x01);   /* no spurious second THRE */
    wr(s, IER, 0x00);                            /* stop_tx */
    assert_int_equal(irq_level, 0);
    assert_memory_equal(out_buf, "hi", 2);
    serial_free(s);
}

static void test_irq_gating_out2_ier(void **state)
{
    struct serial *s = new_uart();
    serial_receive(s, (const uint8_t *)"x", 1);
    wr(s, IER, 0x01);
    assert_int_equal(rd(s, IIR), 0x04);          /* pending inside the UART */
    assert_int_equal(irq_level, 0);              /* but OUT2 is off */
    wr(s, MCR, 0x08);
    assert_int_equal(irq_level, 1);
    wr(s, MCR, 0x00);
    assert_int_equal(irq_level, 0);
    wr(s, MCR, 0x08);
    assert_int_equal(irq_level, 1);
    wr(s, IER, 0x00);
    assert_int_equal(irq_level, 0);
    wr(s, IER, 0x01);
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(s, RBR), 'x');
    assert_int_equal(irq_level, 0);
    wr(s, MCR, 0x18);                            /* loopback disconnects the pin */
    wr(s, THR, 'y');
    assert_int_equal(rd(s, IIR), 0x04);
    assert_int_equal(irq_level, 0);
    serial_free(s);
}

static void test_loopback(void **state)
{
    struct serial *s = new_uart();
    serial_set_rx_notify(s, on_notify, NULL);
    wr(s, FCR, 0x01);
    wr(s, MCR, 0x1a);                            /* Linux's autoconfig probe */
    assert_int_equal(rd(s, MSR) & 0xf0, 0x90);   /* CTS <- RTS, DCD <- OUT2 */
    wr(s, MCR, 0x1f);
    assert_int_equal(rd(s, MSR) & 0xf0, 0xf0);
    wr(s, MCR, 0x1b);                            /* OUT1 off: ring trailing edge */
    assert_int_equal(rd(s, MSR) & 0x4f, 0x04);
    wr(s, THR, 'L');
    assert_int_equal(out_len, 0);
    assert_int_equal(rd(s, LSR) & 0x01, 0x01);
    assert_int_equal(rd(s, RBR), 'L');
    /* Host input is disconnected in loopback, and comes back after it. */
    assert_false(serial_can_receive(s));
    assert_int_equal(serial_receive(s, (const uint8_t *)"h", 1), 0);
    wr(s, MCR, 0x0b);
    assert_int_equal(notified, 1);
    assert_int_equal(rd(s, MSR) & 0xf0, 0xb0);
    assert_int_equal(serial_receive(s, (const uint8_t *)"h", 1), 1);
    assert_int_equal(rd(s, RBR), 'h');
    serial_free(s);
}

static void test_pause_input(void **state)
{
    struct serial *s = new_uart();
    serial_set_rx_notify(s, on_notify, NULL);
    serial_pause_input(s, true);
    assert_false(serial_can_receive(s));
    assert_int_equal(serial_receive(s, (const uint8_t *)"p", 1), 0);
    serial_pause_input(s, false);
    assert_int_equal(notified, 1);
    assert_int_equal(serial_receive(s, (const uint8_t *)"p", 1), 1);
    serial_free(s);
}

static void test_save_load_round_trip(void **state)
{
    struct serial *s = new_uart();
    wr(s, LCR, 0x80);
    wr(s, DLL, 0x03);
    wr(s, LCR, 0x03);
    wr(s, FCR, 0xc7);
    wr(s, MCR, 0x0b);
    wr(s, IER, 0x01);
    wr(s, SCR, 0x5a);
    assert_int_equal(serial_receive(s, (const uint8_t *)"hello, world", 12), 12);
    assert_int_equal(rd(s, RBR), 'h');           /* a FIFO that has moved */
    serial_pause_input(s, true);                 /* switch-over */
    struct serial_state st;
    serial_save(s, &st);
    assert_int_equal(st.version, SERIAL_STATE_VERSION);
    assert_int_equal(st.rx_count, 11);
    assert_int_equal(serial_receive(s, (const uint8_t *)"!", 1), 0); /* kept by the caller */

    int src_level = irq_level;
    struct serial *t = new_uart();
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(serial_load(t, &st, &err), 0);
    assert_int_equal(irq_level, src_level);      /* line driven from the state */
    assert_int_equal(irq_level, 1);
    struct serial_state again;
    serial_save(t, &again);
    assert_memory_equal(&st, &again, sizeof(st));
    char got[12] = { 0 };
    for (int i = 0; i < 11; i++)
        got[i] = (char)rd(t, RBR);
    assert_string_equal(got, "ello, world");     /* nothing lost or doubled */
    assert_int_equal(rd(t, LSR), 0x60);
    assert_int_equal(rd(t, RBR), 0);
    assert_int_equal(rd(t, SCR), 0x5a);
    assert_int_equal(rd(t, IIR), 0xc1);
    wr(t, LCR, 0x83);
    assert_int_equal(rd(t, DLL), 0x03);
    serial_free(s);
    serial_free(t);
}

static void corrupt(struct serial_state *x, size_t i)
{
    switch (i) {
    case 0: x->version = 99; break;
    case 1: x->rx_count = 17; break;
    case 2: x->fcr = 0; break;
    case 3: x->rx_count = 0; break;
    case 4: x->lsr &= (uint8_t)~1; break;
    case 5: x->thr_ipending = 2; break;
    case 6: x->ier |= 0x40; break;
    case 7: x->mcr |= 0x80; break;
    case 8: x->fcr |= 0x02; break;
    case 9: x->reserved0 = 1; break;
    case 10: x->reserved1[3] = 1; break;
    case 11: x->rx_fifo[x->rx_count] = 'd'; break;  /* saved as 0: not the same bytes */
    case 12: x->rx_fifo[15] = 0xff; break;
    default: x->lsr &= (uint8_t)~0x40; break;
    }
}

static void test_load_refuses_corrupt_state(void **state)
{
    struct serial *s = new_uart();
    wr(s, FCR, 0x01);
    serial_receive(s, (const uint8_t *)"abc", 3);
    struct serial_state good, bad, before, after;
    serial_save(s, &good);
    struct serial *t = new_uart();
    wr(t, SCR, 0x77);
    serial_save(t, &before);
    static const char *const cases[] = {
        "version", "count > 16", "count > 1 without FIFO", "DR without data",
        "data without DR", "thr_ipending", "ier reserved", "mcr reserved", "fcr reserved",
        "reserved0", "reserved1", "byte past rx_count", "last FIFO byte past rx_count",
        "transmitter busy",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bad = good;
        corrupt(&bad, i);
        struct gw_error err;
        gw_error_init(&err);
        assert_int_equal(serial_load(t, &bad, &err), -EINVAL);
        assert_true(gw_error_is_set(&err));
        assert_int_equal(serial_state_check(&bad, NULL), -EINVAL);
        serial_save(t, &after);
        if (memcmp(&before, &after, sizeof(before)))
            fail_msg("case '%s' changed the device", cases[i]);
    }
    assert_int_equal(serial_state_check(&good, NULL), 0);
    serial_free(s);
    serial_free(t);
}

/* Main thread feeds, a vCPU thread drains: every byte arrives once, in order. */
struct stress {
    struct serial *s;
    size_t n;
    size_t got;
    int bad;
};

static void *reader(void *arg)
{
    struct stress *st = arg;
    while (st->got < st->n) {
        uint8_t lsr, b;
        serial_pio_ops.read(st->s, LSR, &lsr, 1);
        if (!(lsr & 1))
            continue;
        serial_pio_ops.read(st->s, RBR, &b, 1);
        if (b != (uint8_t)(st->got * 7))
            st->bad++;
        st->got++;
    }
    return NULL;
}

static void test_concurrent_receive(void **state)
{
    static const struct irq_line none = { NULL, NULL, 0 };
    struct stress st = { serial_new(&none, NULL, NULL), 20000, 0, 0 };
    wr(st.s, FCR, 0x01);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader, &st), 0);
    uint8_t buf[64];
    size_t sent = 0;
    while (sent < st.n) {
        size_t len = st.n - sent < sizeof(buf) ? st.n - sent : sizeof(buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)((sent + i) * 7);
        size_t off = 0;
        while (off < len)
            off += serial_receive(st.s, buf + off, len - off);
        sent += len;
    }
    pthread_join(th, NULL);
    assert_int_equal(st.got, st.n);
    assert_int_equal(st.bad, 0);
    serial_free(st.s);
}

static void test_reset(void **state)
{
    struct serial *s = new_uart();
    wr(s, MCR, 0x08);
    wr(s, IER, 0x02);
    assert_int_equal(irq_level, 1);
    wr(s, LCR, 0x1b);
    serial_receive(s, (const uint8_t *)"q", 1);
    serial_reset(s);
    assert_int_equal(irq_level, 0);
    assert_int_equal(rd(s, LSR), 0x60);
    assert_int_equal(rd(s, LCR), 0);
    assert_int_equal(rd(s, IER), 0);
    assert_int_equal(rd(s, IIR), 0x01);
    serial_free(s);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reset_state_and_output),
        cmocka_unit_test(test_divisor_latch),
        cmocka_unit_test(test_fifo_fill_and_flow),
        cmocka_unit_test(test_overrun_in_loopback),
        cmocka_unit_test(test_trigger_levels),
        cmocka_unit_test(test_iir_priorities),
        cmocka_unit_test(test_thre_linux_sequence),
        cmocka_unit_test(test_irq_gating_out2_ier),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_pause_input),
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_load_refuses_corrupt_state),
        cmocka_unit_test(test_concurrent_receive),
        cmocka_unit_test(test_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
