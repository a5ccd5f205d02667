/* MC146818 CMOS RTC at ports 0x70 (index, bit 7 = NMI mask, ignored) and
 * 0x71 (data). Pure device model: no KVM calls.
 *
 * The clock registers (0x00 seconds, 0x02 minutes, 0x04 hours, 0x06 day of
 * week, 0x07 day, 0x08 month, 0x09 year, 0x32 century) read the host's UTC
 * wall-clock time at access time, plus an offset the guest sets by writing
 * them, in BCD or binary and 12/24-hour form as register B asks. While
 * register B's SET bit is on, the clock registers are frozen plain RAM that
 * the guest fills; clearing SET makes their value the new time. A time
 * more than 10^12 s from the host's is ignored (out-of-range fields carry
 * over, so repeated writes could otherwise move it without bound). Register A
 * shows update-in-progress during the last 2 ms of each second; register C
 * reports the update-ended and periodic flags since it was last read (and
 * clears on read); register D reports valid RAM. No interrupt (IRQ 8) is
 * raised and the alarm flag is never set. The rest is 128 bytes of CMOS RAM,
 * with the memory-size fields SeaBIOS/QEMU fill (cmos_set_memory_size).
 *
 * Threads: accesses from any vCPU thread and the other calls from any
 * thread (internal lock).
 * Returns: cmos_new NULL+errno; cmos_load / cmos_state_check 0 or -EINVAL
 * (device unchanged on error, err filled). */
#ifndef GW_DEVICES_CMOS_H
#define GW_DEVICES_CMOS_H

#include <stdint.h>
#include <time.h>

#include "common/error.h"
#include "devices/bus.h"

#define CMOS_STATE_VERSION 1
#define CMOS_PORT_BASE 0x70
#define CMOS_PORT_LEN  2

/* Wire layout of the device state (docs/devices.md), fixed-size,
 * little-endian, versioned. */
struct cmos_state {
    uint32_t version;         /* CMOS_STATE_VERSION */
    uint8_t index;            /* last value written to port 0x70 */
    uint8_t reserved[3];      /* 0 */
    int64_t time_offset_s;    /* guest time - host UTC time, |x| <= 1e12 */
    uint8_t ram[128];         /* clock registers hold the frozen time only while SET */
};
_Static_assert(sizeof(struct cmos_state) == 144, "cmos_state wire size");

struct cmos;

/* Wall clock (CLOCK_REALTIME by default); tests substitute their own. */
typedef struct timespec (*cmos_clock_fn)(void *opaque);

struct cmos *cmos_new(void);
void cmos_free(struct cmos *c);
/* Register at CMOS_PORT_BASE with length CMOS_PORT_LEN; dev = the cmos. */
extern const struct pio_dev_ops cmos_pio_ops;
/* fn NULL restores CLOCK_REALTIME. */
void cmos_set_clock(struct cmos *c, cmos_clock_fn fn, void *opaque);
/* Fill the memory-size fields for `bytes` of guest RAM (RAM below 4 GiB
 * ends at 3 GiB, the rest starts at 4 GiB, as in godwit's e820 map). */
void cmos_set_memory_size(struct cmos *c, uint64_t bytes);
void cmos_save(struct cmos *c, struct cmos_state *st);
int cmos_load(struct cmos *c, const struct cmos_state *st, struct gw_error *err);
int cmos_state_check(const struct cmos_state *st, struct gw_error *err);
/* Pure: encode v (0..99) as the guest sees it under register B `regb`. */
uint8_t cmos_encode(uint8_t regb, unsigned v);

#endif
