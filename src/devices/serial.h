/* A 16550A UART (COM1: ports 0x3f8-0x3ff, IRQ 4).
 *
 * Threads: register accesses come from vCPU threads, serial_receive() from
 * the main thread; an internal lock serialises them. Output bytes go to the
 * `out` callback at once (transmission is instantaneous). Input waits in the
 * 16-byte receive FIFO; serial_receive() takes what fits and the caller
 * retries with the rest, so no byte is lost.
 * Returns: constructors NULL+errno; serial_load 0 or -EINVAL (device
 * unchanged on error). */
#ifndef GW_DEVICES_SERIAL_H
#define GW_DEVICES_SERIAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "devices/bus.h"

#define SERIAL_FIFO_SIZE 16
#define SERIAL_STATE_VERSION 1

struct serial;

typedef void (*serial_out_fn)(void *opaque, uint8_t byte);

/* Wire layout of the device state (docs/devices.md), fixed and versioned. */
struct serial_state {
    uint32_t version;
    uint8_t ier, iir_unused, fcr, lcr, mcr, lsr, msr, scr;
    uint8_t dll, dlm, thr_ipending, rx_count;
    uint8_t rx_fifo[SERIAL_FIFO_SIZE]; /* rx_fifo[0] is the oldest byte */
    uint8_t pad[4];
};
_Static_assert(sizeof(struct serial_state) == 36, "serial_state wire size");

struct serial *serial_new(const struct irq_line *irq, serial_out_fn out, void *out_opaque);
void serial_free(struct serial *s);
extern const struct pio_dev_ops serial_pio_ops;

/* Queue input bytes; returns how many were accepted (0 when the FIFO is full). */
size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len);
void serial_reset(struct serial *s);
void serial_save(struct serial *s, struct serial_state *st);
int serial_load(struct serial *s, const struct serial_state *st, struct gw_error *err);

#endif
