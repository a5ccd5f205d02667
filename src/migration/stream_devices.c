#include "migration/stream_devices.h"

#include <errno.h>
#include <string.h>

const struct stream_device_kind stream_device_kinds[SDEV_COUNT] = {
    [SDEV_PIC_MASTER] = { "pic-master", SDEV_KERNEL_VERSION, SDEV_IRQCHIP_LEN, true },
    [SDEV_PIC_SLAVE] = { "pic-slave", SDEV_KERNEL_VERSION, SDEV_IRQCHIP_LEN, true },
    [SDEV_IOAPIC] = { "ioapic", SDEV_KERNEL_VERSION, SDEV_IRQCHIP_LEN, true },
    [SDEV_PIT] = { "pit", SDEV_KERNEL_VERSION, SDEV_PIT_LEN, true },
    [SDEV_KVMCLOCK] = { "kvmclock", SDEV_KERNEL_VERSION, SDEV_KVMCLOCK_LEN, true },
    [SDEV_SERIAL0] = { "serial0", SDEV_SERIAL0_VERSION, SDEV_SERIAL0_LEN, true },
    [SDEV_CMOS] = { "cmos", SDEV_CMOS_VERSION, SDEV_CMOS_LEN, true },
    [SDEV_POWER] = { "power", SDEV_POWER_VERSION, SDEV_POWER_LEN, false },
};

int stream_device_kind_of(const struct stream_device *dev, struct gw_error *err)
{
    for (int i = 0; i < SDEV_COUNT; i++) {
        const struct stream_device_kind *k = &stream_device_kinds[i];
        if (strcmp(dev->id, k->id) != 0)
            continue;
        if (dev->instance != 0)
            return gw_error_set(err, EPROTO, "device %s instance %u does not exist here", k->id,
                                dev->instance);
        if (dev->version != k->version)
            return gw_error_set(err, EPROTO, "device %s version %u is not supported", k->id,
                                dev->version);
        if (dev->len != k->len)
            return gw_error_set(err, EPROTO, "device %s: %u bytes, expected %u", k->id, dev->len,
                                k->len);
        return i;
    }
    return gw_error_set(err, EPROTO, "unknown device '%s'", dev->id);
}

int stream_device_see(unsigned *seen, int kind, struct gw_error *err)
{
    if (*seen & (1u << kind))
        return gw_error_set(err, EPROTO, "device %s sent twice", stream_device_kinds[kind].id);
    *seen |= 1u << kind;
    return 0;
}

int stream_device_missing(unsigned seen)
{
    for (int i = 0; i < SDEV_COUNT; i++)
        if (stream_device_kinds[i].required && !(seen & (1u << i)))
            return i;
    return -1;
}
