/* The power-off port: a 16-bit write to I/O port 0x604 with SLP_EN (bit 13)
 * set and sleep type (bits 10-12) 0 or 5 powers the machine off. 0x604 is
 * where QEMU's q35 puts the ACPI PM1a control block, and SLP_TYP 0 is what
 * its firmware tables give for S5 (soft off), so `outw(0x2000, 0x604)`
 * works on both; 5 is the usual S5 value of real firmware (0x3400). No ACPI
 * table describes the port here: our test guest and tiny kernels use it
 * directly. Byte writes, writes without SLP_EN and other sleep types are
 * ignored; reads return 0. 32-bit writes use their low 16 bits.
 * Threads: the callback runs on the writing vCPU's thread, with no lock
 * held; it must only post a request (the VMM stops the vCPUs elsewhere). */
#ifndef GW_DEVICES_POWER_H
#define GW_DEVICES_POWER_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/bus.h"

#define POWER_PORT      0x604
#define POWER_PORT_LEN  2
#define POWER_OFF_VALUE 0x2000          /* SLP_EN | SLP_TYP 0 */
#define POWER_SLP_EN    0x2000
#define POWER_SLP_TYP(v) (((v) >> 10) & 7)

typedef void (*power_off_fn)(void *opaque);

struct power_port {
    power_off_fn off;                   /* may be NULL */
    void *opaque;
};

/* Register at POWER_PORT with length POWER_PORT_LEN; dev = struct power_port. */
extern const struct pio_dev_ops power_pio_ops;

/* Pure: does this PM1a control value ask for soft-off? */
bool power_is_off_request(uint16_t pm1_cnt);

#endif
