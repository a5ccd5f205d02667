/* Legacy ports with little or no behaviour.
 *
 * POST code port (0x80): writes record the last code (Linux also writes it
 * as an I/O delay), reads return 0xff as on a machine without a POST card.
 * dev may be NULL (writes dropped) or a struct post_port.
 *
 * Port 0x61 (system control port B: PIT channel 2 gate, speaker, refresh
 * toggle, channel 2 output). godwit-vmm does NOT register this: it creates
 * the in-kernel PIT with KVM_PIT_SPEAKER_DUMMY, and then KVM itself answers
 * port 0x61 (gate and speaker bits from the PIT's channel 2, bit 4 toggling
 * with host time, bit 5 the real channel-2 output), which Linux's PIT-based
 * TSC calibration polls. speaker_pio_ops is a fallback for a VM without
 * the in-kernel PIT: bits 0-1 are stored, bit 4 toggles every ~16 us of
 * host time, and bit 5 (channel-2 output) always reads 1 so that a loop
 * polling it (Linux pit_calibrate_tsc) ends at once and calibration falls
 * back instead of spinning. dev may be NULL or a struct speaker_port.
 *
 * Threads: any vCPU thread; state is one byte accessed atomically. */
#ifndef GW_DEVICES_MISC_PORTS_H
#define GW_DEVICES_MISC_PORTS_H

#include <stdint.h>

#include "devices/bus.h"

#define POST_PORT     0x80
#define SPEAKER_PORT  0x61

struct post_port {
    uint8_t last_code;      /* read with __atomic_load_n */
};

struct speaker_port {
    uint8_t ctrl;           /* bits 0 (gate 2) and 1 (speaker data) */
};

extern const struct pio_dev_ops post_pio_ops;     /* length 1 */
extern const struct pio_dev_ops speaker_pio_ops;  /* length 1 */

#endif
