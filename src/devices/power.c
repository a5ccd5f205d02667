/* The power-off port. See power.h. */
#define LOG_PREFIX "power"
#include "devices/power.h"

#include <string.h>

#include "common/log.h"

bool power_is_off_request(uint16_t v)
{
    return (v & POWER_SLP_EN) && (POWER_SLP_TYP(v) == 0 || POWER_SLP_TYP(v) == 5);
}

static void pio_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    memset(data, 0, size);
}

static void pio_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct power_port *p = dev;
    if (off != 0 || size < 2)
        return;
    uint16_t v = (uint16_t)(data[0] | data[1] << 8);
    if (!power_is_off_request(v)) {
        log_debug("PM1a control write 0x%04x ignored", v);
        return;
    }
    log_info("guest requested power-off (PM1a control 0x%04x)", v);
    if (p->off)
        p->off(p->opaque);
}

const struct pio_dev_ops power_pio_ops = { .read = pio_read, .write = pio_write };
