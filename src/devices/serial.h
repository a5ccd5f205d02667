/* A 16550A UART (COM1: ports 0x3f8-0x3ff, IRQ 4). Pure device model: no KVM
 * calls; the interrupt goes through struct irq_line.
 *
 * Output: each byte written to THR goes to the `out` callback at once
 * (transmission is instantaneous, so THR and the shift register are always
 * empty again when the write returns).
 * Input: serial_receive() queues bytes into the 16-byte receive FIFO (one
 * byte with the FIFO disabled) and returns how many it took; the caller keeps
 * the rest and retries when serial_can_receive() says so or the rx-notify
 * callback fires. Host input never overruns the FIFO, so no byte is lost.
 * Interrupt: the line is driven at level (1 while an enabled interrupt is
 * pending), gated by MCR.OUT2 as on a PC (and off in loopback mode); a
 * transmitted byte re-arms THR-empty with a 1->0->1 pulse so that an
 * edge-triggered controller sees a new edge.
 *
 * Threads: register accesses come from vCPU threads, serial_receive() and
 * the other calls from any thread; an internal lock serialises them. The
 * `out` callback and the irq line are called with the lock held (they must
 * not call back into this device); the rx-notify callback is called without
 * the lock, on the thread that freed FIFO space (a vCPU thread), and may
 * call serial_receive().
 *
 * Returns: serial_new NULL+errno; serial_load 0 or -EINVAL (device unchanged
 * on error, err filled); serial_receive a count; predicates bool. */
#ifndef GW_DEVICES_SERIAL_H
#define GW_DEVICES_SERIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "devices/bus.h"

#define SERIAL_FIFO_SIZE 16
#define SERIAL_STATE_VERSION 1
#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_GSI  4
#define SERIAL_PORT_LEN  8

struct serial;

/* Called for every transmitted byte (lock held). */
typedef void (*serial_out_fn)(void *opaque, uint8_t byte);
/* Called (lock not held) once FIFO space appears after serial_receive()
 * accepted fewer bytes than it was offered. */
typedef void (*serial_notify_fn)(void *opaque);

/* Wire layout of the device state (docs/devices.md), fixed-size,
 * little-endian, versioned. Validated by serial_load(). */
struct serial_state {
    uint32_t version;          /* SERIAL_STATE_VERSION */
    uint8_t ier;               /* bits 0-3 */
    uint8_t reserved0;         /* 0 */
    uint8_t fcr;               /* FIFO enable and trigger bits (mask 0xc9) */
    uint8_t lcr, mcr;          /* mcr: bits 0-4 */
    uint8_t lsr, msr, scr;
    uint8_t dll, dlm;          /* divisor latch */
    uint8_t thr_ipending;      /* 0/1: THR-empty interrupt latched */
    uint8_t rx_count;          /* bytes in rx_fifo, <= 16 (<= 1 without FIFO) */
    uint8_t rx_fifo[SERIAL_FIFO_SIZE]; /* rx_fifo[0] is the oldest byte */
    uint8_t reserved1[4];      /* 0 */
};
_Static_assert(sizeof(struct serial_state) == 36, "serial_state wire size");

/* `irq` is copied. `out` may be NULL (output discarded). */
struct serial *serial_new(const struct irq_line *irq, serial_out_fn out, void *out_opaque);
void serial_free(struct serial *s);
/* Register at SERIAL_COM1_BASE with length SERIAL_PORT_LEN; dev = the serial. */
extern const struct pio_dev_ops serial_pio_ops;

/* Optional; replaces the previous one. fn NULL disables. */
void serial_set_rx_notify(struct serial *s, serial_notify_fn fn, void *opaque);

/* Queue input bytes; returns how many were accepted (0 when the FIFO is
 * full, in loopback mode, or while input is paused). */
size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len);
/* True if serial_receive() would accept at least one byte now. */
bool serial_can_receive(struct serial *s);
/* While paused serial_receive() takes nothing (the caller keeps its bytes).
 * Pause before serial_save() when the saved state must hold every accepted
 * byte (migration switch-over); unpause if the source resumes. Unpausing
 * fires the rx-notify callback if input was refused meanwhile. */
void serial_pause_input(struct serial *s, bool paused);

/* Power-on state; the FIFO is emptied, input pause and notify kept. */
void serial_reset(struct serial *s);
void serial_save(struct serial *s, struct serial_state *st);
int serial_load(struct serial *s, const struct serial_state *st, struct gw_error *err);
/* Pure: check a state without loading it (0 or -EINVAL, err filled). */
int serial_state_check(const struct serial_state *st, struct gw_error *err);

#endif
