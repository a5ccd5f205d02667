/* 16550A UART model. See serial.h for the threading and interrupt rules. */
#define LOG_PREFIX "serial"
#include "devices/serial.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

enum {
    REG_RBR_THR = 0, REG_IER = 1, REG_IIR_FCR = 2, REG_LCR = 3,
    REG_MCR = 4, REG_LSR = 5, REG_MSR = 6, REG_SCR = 7,
};

#define IER_ERBFI 0x01 /* received data available */
#define IER_ETBEI 0x02 /* transmitter holding register empty */
#define IER_ELSI  0x04 /* receiver line status */
#define IER_EDSSI 0x08 /* modem status */
#define IER_MASK  0x0f

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
#define FCR_KEEP     0xc9 /* enable, DMA mode, trigger level */

#define LCR_DLAB 0x80

#define MCR_DTR  0x01
#define MCR_RTS  0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR   0x01
#define LSR_OE   0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define LSR_ERR_MASK 0x1e /* OE, PE, FE, BI: cleared by reading LSR */

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_DELTA 0x0f
#define MSR_CTS  0x10
#define MSR_DSR  0x20
#define MSR_RI   0x40
#define MSR_DCD  0x80
/* Outside loopback the "cable" always shows carrier, DSR and CTS. */
#define MSR_IDLE (MSR_DCD | MSR_DSR | MSR_CTS)

struct serial {
    pthread_mutex_t lock;
    struct irq_line irq;
    serial_out_fn out;
    void *out_opaque;
    serial_notify_fn notify;
    void *notify_opaque;
    uint8_t ier, fcr, lcr, mcr, lsr, msr, scr, dll, dlm;
    uint8_t thr_ipending;
    uint8_t rx_count;
    uint8_t rx_fifo[SERIAL_FIFO_SIZE];
    int irq_level;      /* last level sent to the line; -1 = unknown */
    bool input_paused;
    bool rx_refused;    /* serial_receive() left bytes with its caller */
};

/* ---- pure helpers (lock held) ---- */

static unsigned rx_capacity(const struct serial *s)
{
    return (s->fcr & FCR_ENABLE) ? SERIAL_FIFO_SIZE : 1;
}

static unsigned rx_trigger(const struct serial *s)
{
    static const unsigned levels[4] = { 1, 4, 8, 14 };
    return (s->fcr & FCR_ENABLE) ? levels[s->fcr >> 6] : 1;
}

/* The highest-priority pending interrupt, as IIR reports it (low nibble). */
static uint8_t pending_iir(const struct serial *s)
{
    if ((s->ier & IER_ELSI) && (s->lsr & LSR_ERR_MASK))
        return IIR_RLS;
    if ((s->ier & IER_ERBFI) && s->rx_count)
        /* Data below the trigger level: report the character timeout at
         * once (a real UART waits 4 character times). */
        return s->rx_count >= rx_trigger(s) ? IIR_RDA : IIR_CTI;
    if ((s->ier & IER_ETBEI) && s->thr_ipending)
        return IIR_THRE;
    if ((s->ier & IER_EDSSI) && (s->msr & MSR_DELTA))
        return IIR_MSI;
    return IIR_NONE;
}

/* The PC routes the UART's interrupt through a buffer enabled by OUT2; in
 * loopback mode OUT2 is disconnected from the pin, so the line is quiet. */
static int line_level(const struct serial *s)
{
    if ((s->mcr & (MCR_OUT2 | MCR_LOOP)) != MCR_OUT2)
        return 0;
    return pending_iir(s) != IIR_NONE;
}

static void update_irq(struct serial *s)
{
    int level = line_level(s);
    if (level != s->irq_level) {
        s->irq_level = level;
        irq_line_set(&s->irq, level);
    }
}

static bool can_receive_locked(const struct serial *s)
{
    return !s->input_paused && !(s->mcr & MCR_LOOP) && s->rx_count < rx_capacity(s);
}

/* After FIFO space may have appeared: should the notify callback run? */
static bool take_notify(struct serial *s)
{
    if (!s->rx_refused || !s->notify || !can_receive_locked(s))
        return false;
    s->rx_refused = false;
    return true;
}

/* Unlock, then run the notify callback if space appeared for a caller
 * that was refused. */
static void unlock_and_notify(struct serial *s)
{
    serial_notify_fn fn = NULL;
    void *opaque = NULL;
    if (take_notify(s)) {
        fn = s->notify;
        opaque = s->notify_opaque;
    }
    pthread_mutex_unlock(&s->lock);
    if (fn)
        fn(opaque);
}

static void rx_clear(struct serial *s)
{
    s->rx_count = 0;
    s->lsr &= (uint8_t)~LSR_DR;
}

/* A byte arrives at the receiver; a full FIFO overruns (only reachable in
 * loopback: host input is refused instead). */
static void rx_push(struct serial *s, uint8_t byte)
{
    if (s->rx_count >= rx_capacity(s)) {
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

/* New modem-status inputs: latch the deltas as a 16550 does. */
static void set_msr_status(struct serial *s, uint8_t status)
{
    uint8_t old = s->msr;
    uint8_t changed = (uint8_t)((old ^ status) & 0xf0);
    uint8_t delta = old & MSR_DELTA;
    if (changed & MSR_CTS) delta |= MSR_DCTS;
    if (changed & MSR_DSR) delta |= MSR_DDSR;
    if (changed & MSR_DCD) delta |= MSR_DDCD;
    if ((old & MSR_RI) && !(status & MSR_RI))
        delta |= MSR_TERI; /* trailing edge of ring */
    s->msr = (uint8_t)(status | delta);
}

/* In loopback the modem outputs feed the modem inputs. */
static uint8_t loopback_status(uint8_t mcr)
{
    uint8_t m = 0;
    if (mcr & MCR_RTS) m |= MSR_CTS;
    if (mcr & MCR_DTR) m |= MSR_DSR;
    if (mcr & MCR_OUT1) m |= MSR_RI;
    if (mcr & MCR_OUT2) m |= MSR_DCD;
    return m;
}

static void reset_locked(struct serial *s)
{
    s->ier = s->fcr = s->lcr = s->mcr = s->scr = 0;
    s->dll = 0x0c; /* 9600 baud, as PC firmware leaves it */
    s->dlm = 0;
    s->lsr = LSR_THRE | LSR_TEMT;
    s->msr = MSR_IDLE;
    s->thr_ipending = 0;
    rx_clear(s);
    update_irq(s);
}

/* ---- registers ---- */

static void write_thr(struct serial *s, uint8_t v)
{
    /* Writing THR clears THR-empty; drop the line now so that the re-arm
     * below is a fresh edge for an edge-triggered controller. */
    s->thr_ipending = 0;
    update_irq(s);
    if (s->mcr & MCR_LOOP)
        rx_push(s, v);
    else if (s->out)
        s->out(s->out_opaque, v);
    /* Sent at once: holding and shift registers are empty again. */
    s->lsr |= LSR_THRE | LSR_TEMT;
    s->thr_ipending = 1;
}

static void write_ier(struct serial *s, uint8_t v)
{
    /* Enabling the THRE interrupt while THR is empty raises it. */
    if (!(s->ier & IER_ETBEI) && (v & IER_ETBEI) && (s->lsr & LSR_THRE))
        s->thr_ipending = 1;
    s->ier = v & IER_MASK;
}

static void write_fcr(struct serial *s, uint8_t v)
{
    /* Switching the FIFOs on or off empties them, as does RX clear. */
    if (((v ^ s->fcr) & FCR_ENABLE) || (v & FCR_CLEAR_RX))
        rx_clear(s);
    /* TX clear: nothing is ever waiting to be sent. */
    s->fcr = v & FCR_KEEP;
}

static void write_mcr(struct serial *s, uint8_t v)
{
    s->mcr = v & MCR_MASK;
    set_msr_status(s, (s->mcr & MCR_LOOP) ? loopback_status(s->mcr) : MSR_IDLE);
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
        if (dlab)
            s->dlm = v;
        else
            write_ier(s, v);
        break;
    case REG_IIR_FCR: write_fcr(s, v); break;
    case REG_LCR: s->lcr = v; break;
    case REG_MCR: write_mcr(s, v); break;
    case REG_SCR: s->scr = v; break;
    default: break; /* LSR, MSR: read-only */
    }
}

static uint8_t read_iir(struct serial *s)
{
    uint8_t iir = pending_iir(s);
    if (iir == IIR_THRE)
        s->thr_ipending = 0; /* reading IIR acknowledges THRE */
    return (uint8_t)(iir | ((s->fcr & FCR_ENABLE) ? IIR_FIFO : 0));
}

static uint8_t reg_read(struct serial *s, uint16_t off)
{
    bool dlab = s->lcr & LCR_DLAB;
    uint8_t v;
    switch (off) {
    case REG_RBR_THR: return dlab ? s->dll : rx_pop(s);
    case REG_IER: return dlab ? s->dlm : s->ier;
    case REG_IIR_FCR: return read_iir(s);
    case REG_LCR: return s->lcr;
    case REG_MCR: return s->mcr;
    case REG_LSR:
        v = s->lsr;
        s->lsr &= (uint8_t)~LSR_ERR_MASK; /* errors clear on read */
        return v;
    case REG_MSR:
        v = s->msr;
        s->msr &= (uint8_t)~MSR_DELTA; /* deltas clear on read */
        return v;
    default: return s->scr;
    }
}

static void pio_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    struct serial *s = dev;
    pthread_mutex_lock(&s->lock);
    data[0] = reg_read(s, off & 7);
    update_irq(s);
    unlock_and_notify(s);
    for (unsigned i = 1; i < size; i++)
        data[i] = 0xff;
}

static void pio_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct serial *s = dev;
    pthread_mutex_lock(&s->lock);
    reg_write(s, off & 7, data[0]);
    update_irq(s);
    unlock_and_notify(s);
}

const struct pio_dev_ops serial_pio_ops = { .read = pio_read, .write = pio_write };

/* ---- life cycle, input ---- */

struct serial *serial_new(const struct irq_line *irq, serial_out_fn out, void *out_opaque)
{
    struct serial *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    int r = pthread_mutex_init(&s->lock, NULL);
    if (r) {
        free(s);
        errno = r;
        return NULL;
    }
    if (irq)
        s->irq = *irq;
    s->out = out;
    s->out_opaque = out_opaque;
    s->irq_level = 0; /* a fresh line is low: no call at construction */
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

void serial_set_rx_notify(struct serial *s, serial_notify_fn fn, void *opaque)
{
    pthread_mutex_lock(&s->lock);
    s->notify = fn;
    s->notify_opaque = opaque;
    pthread_mutex_unlock(&s->lock);
}

void serial_reset(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    reset_locked(s);
    unlock_and_notify(s);
}

size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len)
{
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    while (n < len && can_receive_locked(s))
        rx_push(s, buf[n++]);
    if (n < len)
        s->rx_refused = true;
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return n;
}

bool serial_can_receive(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    bool r = can_receive_locked(s);
    pthread_mutex_unlock(&s->lock);
    return r;
}

void serial_pause_input(struct serial *s, bool paused)
{
    pthread_mutex_lock(&s->lock);
    s->input_paused = paused;
    unlock_and_notify(s);
}

/* ---- state ---- */

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

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

int serial_state_check(const struct serial_state *st, struct gw_error *err)
{
    if (st->version != SERIAL_STATE_VERSION)
        return gw_error_set(err, EINVAL, "serial state version %u is not supported (want %u)",
                            st->version, SERIAL_STATE_VERSION);
    if (st->reserved0 || !all_zero(st->reserved1, sizeof(st->reserved1)))
        return gw_error_set(err, EINVAL, "serial state: reserved bytes are not zero");
    if ((st->ier & ~IER_MASK) || (st->mcr & ~MCR_MASK) || (st->fcr & ~FCR_KEEP))
        return gw_error_set(err, EINVAL, "serial state: reserved bits set (ier 0x%02x mcr 0x%02x fcr 0x%02x)",
                            st->ier, st->mcr, st->fcr);
    if (st->thr_ipending > 1)
        return gw_error_set(err, EINVAL, "serial state: thr_ipending %u", st->thr_ipending);
    unsigned cap = (st->fcr & FCR_ENABLE) ? SERIAL_FIFO_SIZE : 1;
    if (st->rx_count > cap)
        return gw_error_set(err, EINVAL, "serial state: %u bytes in a %u-byte receive FIFO",
                            st->rx_count, cap);
    /* serial_save writes zeros there: anything else would not save back
     * to the same bytes. */
    if (!all_zero(st->rx_fifo + st->rx_count, SERIAL_FIFO_SIZE - st->rx_count))
        return gw_error_set(err, EINVAL, "serial state: bytes past the %u queued are not zero",
                            st->rx_count);
    if (!!(st->lsr & LSR_DR) != (st->rx_count > 0))
        return gw_error_set(err, EINVAL, "serial state: LSR.DR disagrees with %u queued bytes",
                            st->rx_count);
    if ((st->lsr & (LSR_THRE | LSR_TEMT)) != (LSR_THRE | LSR_TEMT))
        return gw_error_set(err, EINVAL, "serial state: transmitter not empty (LSR 0x%02x)", st->lsr);
    return 0;
}

int serial_load(struct serial *s, const struct serial_state *st, struct gw_error *err)
{
    int r = serial_state_check(st, err);
    if (r < 0)
        return r;
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
    s->irq_level = -1; /* drive the line to match the loaded state */
    update_irq(s);
    unlock_and_notify(s);
    log_debug("state loaded: %u byte(s) queued", st->rx_count);
    return 0;
}
