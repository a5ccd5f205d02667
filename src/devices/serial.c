#include "devices/serial.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum {
    REG_RBR_THR = 0, REG_IER = 1, REG_IIR_FCR = 2, REG_LCR = 3,
    REG_MCR = 4, REG_LSR = 5, REG_MSR = 6, REG_SCR = 7,
};

#define IER_ERBFI 0x01 /* received data available */
#define IER_ETBEI 0x02 /* transmitter holding register empty */
#define IER_ELSI  0x04 /* receiver line status */
#define IER_EDSSI 0x08 /* modem status */

#define IIR_NONE  0x01
#define IIR_RLS   0x06
#define IIR_RDA   0x04
#define IIR_CTI   0x0c
#define IIR_THRE  0x02
#define IIR_MSI   0x00
#define IIR_FIFO  0xc0

#define FCR_ENABLE   0x01
#define FCR_CLEAR_RX 0x02
#define FCR_CLEAR_TX 0x04

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10

#define LSR_DR   0x01
#define LSR_OE   0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define LSR_ERR_MASK 0x1e

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS  0x10
#define MSR_DSR  0x20
#define MSR_RI   0x40
#define MSR_DCD  0x80

struct serial {
    pthread_mutex_t lock;
    struct irq_line irq;
    serial_out_fn out;
    void *out_opaque;
    uint8_t ier, fcr, lcr, mcr, lsr, msr, scr, dll, dlm;
    uint8_t thr_ipending;
    uint8_t rx_count;
    uint8_t rx_fifo[SERIAL_FIFO_SIZE];
    int irq_level;
};

static unsigned rx_trigger(const struct serial *s)
{
    static const unsigned levels[4] = { 1, 4, 8, 14 };
    return (s->fcr & FCR_ENABLE) ? levels[s->fcr >> 6] : 1;
}

/* The highest-priority pending interrupt, as IIR reports it. */
static uint8_t pending_iir(const struct serial *s)
{
    if ((s->ier & IER_ELSI) && (s->lsr & LSR_ERR_MASK))
        return IIR_RLS;
    if ((s->ier & IER_ERBFI) && s->rx_count) {
        if (s->rx_count >= rx_trigger(s))
            return IIR_RDA;
        return IIR_CTI; /* data below the trigger level: character timeout */
    }
    if ((s->ier & IER_ETBEI) && s->thr_ipending)
        return IIR_THRE;
    if ((s->ier & IER_EDSSI) && (s->msr & 0x0f))
        return IIR_MSI;
    return IIR_NONE;
}

static void update_irq(struct serial *s)
{
    int level = pending_iir(s) != IIR_NONE;
    if (level != s->irq_level) {
        s->irq_level = level;
        irq_line_set(&s->irq, level);
    }
}

static void reset_locked(struct serial *s)
{
    s->ier = s->fcr = s->lcr = s->mcr = s->scr = s->dll = s->dlm = 0;
    s->lsr = LSR_THRE | LSR_TEMT;
    s->msr = MSR_DCD | MSR_DSR | MSR_CTS;
    s->thr_ipending = 0;
    s->rx_count = 0;
    update_irq(s);
}

struct serial *serial_new(const struct irq_line *irq, serial_out_fn out, void *out_opaque)
{
    struct serial *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->irq = *irq;
    s->out = out;
    s->out_opaque = out_opaque;
    reset_locked(s);
    return s;
}

void serial_free(struct serial *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void serial_reset(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    reset_locked(s);
    pthread_mutex_unlock(&s->lock);
}

static void rx_push(struct serial *s, uint8_t byte)
{
    unsigned cap = (s->fcr & FCR_ENABLE) ? SERIAL_FIFO_SIZE : 1;
    if (s->rx_count >= cap) {
        s->lsr |= LSR_OE;
        return;
    }
    s->rx_fifo[s->rx_count++] = byte;
    s->lsr |= LSR_DR;
}

static uint8_t rx_pop(struct serial *s)
{
    if (!s->rx_count)
        return 0;
    uint8_t b = s->rx_fifo[0];
    memmove(s->rx_fifo, s->rx_fifo + 1, --s->rx_count);
    if (!s->rx_count)
        s->lsr &= (uint8_t)~LSR_DR;
    return b;
}

static void update_loopback_msr(struct serial *s)
{
    uint8_t old = s->msr;
    uint8_t m = 0;
    if (s->mcr & MCR_RTS) m |= MSR_CTS;
    if (s->mcr & MCR_DTR) m |= MSR_DSR;
    if (s->mcr & MCR_OUT1) m |= MSR_RI;
    if (s->mcr & MCR_OUT2) m |= MSR_DCD;
    uint8_t delta = (uint8_t)((old ^ m) >> 4);
    if ((old & MSR_RI) && !(m & MSR_RI))
        delta |= MSR_TERI;
    s->msr = (uint8_t)(m | (s->msr & 0x0f) | (delta & (MSR_DCTS | MSR_DDSR | MSR_DDCD | MSR_TERI)));
}

static void write_thr(struct serial *s, uint8_t v)
{
    if (s->mcr & MCR_LOOP)
        rx_push(s, v);
    else if (s->out)
        s->out(s->out_opaque, v);
    /* Sent at once: the holding register is empty again. */
    s->lsr |= LSR_THRE | LSR_TEMT;
    s->thr_ipending = 1;
}

static void reg_write(struct serial *s, uint16_t off, uint8_t v)
{
    bool dlab = s->lcr & LCR_DLAB;
    switch (off) {
    case REG_RBR_THR:
        if (dlab)
            s->dll = v;
        else
            write_thr(s, v);
        break;
    case REG_IER:
        if (dlab) {
            s->dlm = v;
            break;
        }
        /* Enabling the THRE interrupt while THR is empty raises it. */
        if (!(s->ier & IER_ETBEI) && (v & IER_ETBEI) && (s->lsr & LSR_THRE))
            s->thr_ipending = 1;
        s->ier = v & 0x0f;
        break;
    case REG_IIR_FCR:
        if ((v ^ s->fcr) & FCR_ENABLE)
            s->rx_count = 0; /* changing FIFO mode clears the FIFOs */
        if (v & FCR_CLEAR_RX) {
            s->rx_count = 0;
        }
        if (!s->rx_count)
            s->lsr &= (uint8_t)~LSR_DR;
        s->fcr = v & 0xc9;
        break;
    case REG_LCR:
        s->lcr = v;
        break;
    case REG_MCR:
        s->mcr = v & 0x1f;
        if (s->mcr & MCR_LOOP)
            update_loopback_msr(s);
        else
            s->msr = (uint8_t)((s->msr & 0x0f) | MSR_DCD | MSR_DSR | MSR_CTS);
        break;
    case REG_LSR:
        break; /* read-only (factory test) */
    case REG_MSR:
        break;
    case REG_SCR:
        s->scr = v;
        break;
    }
}

static uint8_t reg_read(struct serial *s, uint16_t off)
{
    bool dlab = s->lcr & LCR_DLAB;
    uint8_t v = 0;
    switch (off) {
    case REG_RBR_THR:
        v = dlab ? s->dll : rx_pop(s);
        break;
    case REG_IER:
        v = dlab ? s->dlm : s->ier;
        break;
    case REG_IIR_FCR: {
        uint8_t iir = pending_iir(s);
        if (iir == IIR_THRE)
            s->thr_ipending = 0; /* reading IIR acknowledges THRE */
        v = (uint8_t)(iir | ((s->fcr & FCR_ENABLE) ? IIR_FIFO : 0));
        break;
    }
    case REG_LCR:
        v = s->lcr;
        break;
    case REG_MCR:
        v = s->mcr;
        break;
    case REG_LSR:
        v = s->lsr;
        s->lsr &= (uint8_t)~LSR_ERR_MASK; /* errors clear on read */
        break;
    case REG_MSR:
        v = s->msr;
        s->msr &= 0xf0; /* deltas clear on read */
        break;
    case REG_SCR:
        v = s->scr;
        break;
    }
    return v;
}

static void pio_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    struct serial *s = dev;
    pthread_mutex_lock(&s->lock);
    data[0] = reg_read(s, off & 7);
    for (unsigned i = 1; i < size; i++)
        data[i] = 0xff;
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

static void pio_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct serial *s = dev;
    pthread_mutex_lock(&s->lock);
    reg_write(s, off & 7, data[0]);
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

const struct pio_dev_ops serial_pio_ops = { .read = pio_read, .write = pio_write };

size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len)
{
    pthread_mutex_lock(&s->lock);
    unsigned cap = (s->fcr & FCR_ENABLE) ? SERIAL_FIFO_SIZE : 1;
    size_t n = 0;
    while (n < len && s->rx_count < cap && !(s->mcr & MCR_LOOP))
        rx_push(s, buf[n++]);
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return n;
}

void serial_save(struct serial *s, struct serial_state *st)
{
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&s->lock);
    st->version = SERIAL_STATE_VERSION;
    st->ier = s->ier;
    st->fcr = s->fcr;
    st->lcr = s->lcr;
    st->mcr = s->mcr;
    st->lsr = s->lsr;
    st->msr = s->msr;
    st->scr = s->scr;
    st->dll = s->dll;
    st->dlm = s->dlm;
    st->thr_ipending = s->thr_ipending;
    st->rx_count = s->rx_count;
    memcpy(st->rx_fifo, s->rx_fifo, s->rx_count);
    pthread_mutex_unlock(&s->lock);
}

int serial_load(struct serial *s, const struct serial_state *st, struct gw_error *err)
{
    if (st->version != SERIAL_STATE_VERSION)
        return gw_error_set(err, EINVAL, "serial state version %u is not supported", st->version);
    if (st->rx_count > SERIAL_FIFO_SIZE || st->thr_ipending > 1 || (st->ier & 0xf0) ||
        (st->mcr & 0xe0))
        return gw_error_set(err, EINVAL, "serial state is invalid");
    pthread_mutex_lock(&s->lock);
    s->ier = st->ier;
    s->fcr = st->fcr;
    s->lcr = st->lcr;
    s->mcr = st->mcr;
    s->lsr = st->lsr;
    s->msr = st->msr;
    s->scr = st->scr;
    s->dll = st->dll;
    s->dlm = st->dlm;
    s->thr_ipending = st->thr_ipending;
    s->rx_count = st->rx_count;
    memcpy(s->rx_fifo, st->rx_fifo, st->rx_count);
    s->irq_level = -1; /* force the line to match the loaded state */
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return 0;
}
