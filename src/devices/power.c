#include "devices/power.h"

#include <string.h>

static void pio_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    memset(data, 0, size);
}

static void pio_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct power_port *p = dev;
    if (off != 0 || size != 2)
        return;
    uint16_t v = (uint16_t)(data[0] | data[1] << 8);
    if ((v & 0x3c00) == POWER_OFF_VALUE && p->off)
        p->off(p->opaque);
}

const struct pio_dev_ops power_pio_ops = { .read = pio_read, .write = pio_write };
