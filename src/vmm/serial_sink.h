/* COM1's host side: where the bytes the guest transmits go.
 *
 * The UART calls its output hook on a vCPU thread with its own lock held
 * (and the main loop, the switch-over and QMP take that lock too), so the
 * hook must never wait for the reader. A sink queues the bytes (up to
 * SERIAL_SINK_CAP) and a thread of its own writes them, in order, to the
 * file descriptor. A reader that stops reading (a terminal held with ^S, a
 * pipe nobody drains) then costs the guest bytes, counted and logged, not
 * a stuck vCPU, a stuck QMP or an unbounded switch-over (Firecracker also
 * drops what its serial output cannot take).
 *
 * Conventions: constructors return NULL with errno; the others cannot
 * fail. serial_sink_put may be called from any thread. */
#ifndef GODWIT_VMM_SERIAL_SINK_H
#define GODWIT_VMM_SERIAL_SINK_H

#include <stdint.h>

#define SERIAL_SINK_CAP (256u * 1024)

struct serial_sink;

/* A sink writing to fd (not taken: the caller closes it after
 * serial_sink_free). */
struct serial_sink *serial_sink_new(int fd);

/* Queue one byte; dropped (and counted) when SERIAL_SINK_CAP bytes wait. */
void serial_sink_put(struct serial_sink *s, uint8_t byte);

/* Bytes dropped so far. */
uint64_t serial_sink_dropped(struct serial_sink *s);

/* Write what waits, giving the reader at most timeout_ms, then stop the
 * thread and free the sink (NULL: nothing). */
void serial_sink_free(struct serial_sink *s, unsigned timeout_ms);

#endif
