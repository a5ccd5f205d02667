/* A minimal i8042 keyboard controller at ports 0x60 (data) / 0x64
 * (status/command): enough for guests to probe it and to reset the machine
 * (command 0xFE, or an output-port write with bit 0 clear). No keyboard is
 * attached. Threads: any vCPU thread (internal lock); the reset callback runs
 * on the vCPU thread that wrote the command.
 * Returns: constructors NULL+errno. */
#ifndef GW_DEVICES_I8042_H
#define GW_DEVICES_I8042_H

#include "devices/bus.h"

struct i8042;
typedef void (*i8042_reset_fn)(void *opaque);

struct i8042 *i8042_new(i8042_reset_fn reset, void *opaque);
void i8042_free(struct i8042 *k);
void i8042_reset(struct i8042 *k);
extern const struct pio_dev_ops i8042_pio_ops; /* register at 0x60 with length 5 */

#endif
