/* The format's device table (docs/stream-format.md 4.6): which DEVICE_STATE
 * records a stream holds, each at one version and body size, and which a
 * complete stream must have. One table for every reader: the VMM's loader
 * and godwit-stream check the same things with the same words (the VMM
 * asserts at build time that its devices' structures match it).
 *
 * Returns: 0, an index or -EPROTO with the reason in err. */
#ifndef GW_MIGRATION_STREAM_DEVICES_H
#define GW_MIGRATION_STREAM_DEVICES_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "migration/stream_records.h"

enum stream_dev {
    SDEV_PIC_MASTER, SDEV_PIC_SLAVE, SDEV_IOAPIC, SDEV_PIT, SDEV_KVMCLOCK,
    SDEV_SERIAL0, SDEV_CMOS, SDEV_POWER,
    SDEV_COUNT,
};

/* Versions and body sizes of the table (doc 4.6). */
#define SDEV_KERNEL_VERSION 1    /* pic-master, pic-slave, ioapic, pit, kvmclock */
#define SDEV_IRQCHIP_LEN    520  /* struct kvm_irqchip */
#define SDEV_PIT_LEN        112  /* struct kvm_pit_state2 */
#define SDEV_KVMCLOCK_LEN   8    /* u64 guest time, ns */
#define SDEV_SERIAL0_VERSION 1
#define SDEV_SERIAL0_LEN    36
#define SDEV_CMOS_VERSION   1
#define SDEV_CMOS_LEN       144
#define SDEV_POWER_VERSION  1
#define SDEV_POWER_LEN      8

struct stream_device_kind {
    const char *id;
    uint32_t version, len;
    bool required;                /* "power" is not: older streams lack it */
};

extern const struct stream_device_kind stream_device_kinds[SDEV_COUNT];
_Static_assert(SDEV_COUNT <= 32, "a bit per device in an unsigned");

/* Which device of the table `dev` is, checked against it (instance 0, the
 * table's version and size): its enum stream_dev, or -EPROTO with
 * "unknown device 'x'", "device x instance N does not exist here",
 * "device x version N is not supported" or "device x: N bytes, expected M". */
int stream_device_kind_of(const struct stream_device *dev, struct gw_error *err);
/* Mark `kind` in the bit set *seen, or -EPROTO "device x sent twice". */
int stream_device_see(unsigned *seen, int kind, struct gw_error *err);
/* The first required device not in seen (enum stream_dev), or -1. */
int stream_device_missing(unsigned seen);

#endif
