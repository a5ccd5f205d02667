/* A minimal i8042 keyboard controller at ports 0x60 (data) and 0x64
 * (status/command), no keyboard or mouse attached and no interrupts (IRQ 1
 * and 12 are never raised). Enough for guests to probe it without hanging
 * and to reset the machine:
 *   0x20/0x60  read/write the command byte (0x45 after reset)
 *   0xAA       self-test -> 0x55;  0xAB, 0xA9 interface tests -> 0x00
 *   0xAD/0xAE, 0xA7/0xA8  disable/enable keyboard/aux (command byte bits)
 *   0xD0/0xD1  read/write the output port; writing it with bit 0 = 0 resets
 *   0xD2       next data byte is echoed back as keyboard data
 *   0xFE (and any 0xF0-0xFE pulse with bit 0 = 0)  pulse CPU reset
 * Data bytes meant for the keyboard are answered 0xFE (resend), so drivers
 * give up quickly. Status: SYS and UNLOCKED set, OBF while a reply waits,
 * IBF never set.
 * Threads: any vCPU thread (internal lock); the reset callback runs on the
 * vCPU thread that wrote the command, without the lock held; it must only
 * post a request.
 * Returns: i8042_new NULL+errno. */
#ifndef GW_DEVICES_I8042_H
#define GW_DEVICES_I8042_H

#include "devices/bus.h"

#define I8042_PORT_BASE 0x60
#define I8042_PORT_LEN  5      /* 0x60-0x64; 0x61 is the speaker port (KVM) */

struct i8042;
typedef void (*i8042_reset_fn)(void *opaque);

/* reset may be NULL. */
struct i8042 *i8042_new(i8042_reset_fn reset, void *opaque);
void i8042_free(struct i8042 *k);
void i8042_reset(struct i8042 *k);
/* Register at I8042_PORT_BASE with length I8042_PORT_LEN; dev = the i8042. */
extern const struct pio_dev_ops i8042_pio_ops;

#endif
