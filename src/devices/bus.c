#define LOG_PREFIX "pio"
#include "devices/bus.h"

#include <errno.h>
#include <string.h>

#include "common/log.h"

void pio_bus_init(struct pio_bus *bus) { memset(bus, 0, sizeof(*bus)); }

int pio_bus_register(struct pio_bus *bus, uint16_t base, uint16_t len, const char *name,
                     const struct pio_dev_ops *ops, void *dev)
{
    if (len == 0 || (uint32_t)base + len > 0x10000)
        return -EINVAL;
    for (unsigned i = 0; i < bus->nr; i++) {
        const struct pio_range *r = &bus->ranges[i];
        if (base < r->base + r->len && r->base < base + len)
            return -EEXIST;
    }
    if (bus->nr == PIO_BUS_MAX_RANGES)
        return -ENOSPC;
    bus->ranges[bus->nr++] = (struct pio_range){ base, len, ops, dev, name };
    return 0;
}

static const struct pio_range *find(const struct pio_bus *bus, uint16_t port)
{
    for (unsigned i = 0; i < bus->nr; i++)
        if (port >= bus->ranges[i].base && port - bus->ranges[i].base < bus->ranges[i].len)
            return &bus->ranges[i];
    return NULL;
}

static void note_unknown(struct pio_bus *bus, uint16_t port, bool write)
{
    uint8_t *b = &bus->unknown_seen[port / 8];
    uint8_t bit = (uint8_t)(1u << (port % 8));
    if (__atomic_fetch_or(b, bit, __ATOMIC_RELAXED) & bit)
        return;
    log_debug("unhandled port %s at 0x%x (logged once)", write ? "write" : "read", port);
}

bool pio_bus_read(struct pio_bus *bus, uint16_t port, uint8_t *data, unsigned size)
{
    const struct pio_range *r = find(bus, port);
    if (!r || !r->ops->read) {
        memset(data, 0xff, size);
        note_unknown(bus, port, false);
        return false;
    }
    r->ops->read(r->dev, (uint16_t)(port - r->base), data, size);
    return true;
}

bool pio_bus_write(struct pio_bus *bus, uint16_t port, const uint8_t *data, unsigned size)
{
    const struct pio_range *r = find(bus, port);
    if (!r || !r->ops->write) {
        note_unknown(bus, port, true);
        return false;
    }
    r->ops->write(r->dev, (uint16_t)(port - r->base), data, size);
    return true;
}
