/* MC146818 CMOS RTC at ports 0x70 (index) / 0x71 (data).
 * The clock registers read the host's UTC wall-clock time (plus an offset
 * the guest sets by writing them), in BCD or binary and 12/24-hour form as
 * register B asks; the rest is 128 bytes of CMOS RAM holding the memory
 * size fields firmware-aware guests read.
 * Threads: accesses from any vCPU thread (internal lock).
 * Returns: constructors NULL+errno; cmos_load 0 or -EINVAL. */
#ifndef GW_DEVICES_CMOS_H
#define GW_DEVICES_CMOS_H

#include <stdint.h>

#include "common/error.h"
#include "devices/bus.h"

#define CMOS_STATE_VERSION 1

struct cmos_state {
    uint32_t version;
    uint8_t index;
    uint8_t pad[3];
    int64_t time_offset_s;    /* guest time - host UTC time */
    uint8_t ram[128];
};
_Static_assert(sizeof(struct cmos_state) == 144, "cmos_state wire size");

struct cmos;

struct cmos *cmos_new(void);
void cmos_free(struct cmos *c);
extern const struct pio_dev_ops cmos_pio_ops;
/* Fill the memory-size fields for `bytes` of guest RAM. */
void cmos_set_memory_size(struct cmos *c, uint64_t bytes);
void cmos_save(struct cmos *c, struct cmos_state *st);
int cmos_load(struct cmos *c, const struct cmos_state *st, struct gw_error *err);
/* Pure: encode v (0..99) as the guest sees it under register B `regb`. */
uint8_t cmos_encode(uint8_t regb, unsigned v);

#endif
