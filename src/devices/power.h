/* The power-off port: a 16-bit write of 0x2000 (SLP_EN with sleep type 5,
 * the ACPI PM1a control value for "soft off" that QEMU's PIIX4 also
 * understands) to I/O port 0x604 powers the machine off. No ACPI tables
 * describe it; our test guest and tiny kernels use it directly.
 * Threads: the callback runs on the writing vCPU's thread. */
#ifndef GW_DEVICES_POWER_H
#define GW_DEVICES_POWER_H

#include "devices/bus.h"

#define POWER_PORT      0x604
#define POWER_PORT_LEN  2
#define POWER_OFF_VALUE 0x2000

typedef void (*power_off_fn)(void *opaque);

struct power_port {
    power_off_fn off;
    void *opaque;
};

extern const struct pio_dev_ops power_pio_ops; /* dev = struct power_port */

#endif
