/* POST code and system control port B. See misc_ports.h. */
#include "devices/misc_ports.h"

#include <string.h>
#include <time.h>

#define SPK_CTRL_MASK  0x03
#define SPK_REFRESH    0x10
#define SPK_CH2_OUT    0x20

static void post_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    memset(data, 0xff, size);
}

static void post_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct post_port *p = dev;
    if (p)
        __atomic_store_n(&p->last_code, data[0], __ATOMIC_RELAXED);
}

const struct pio_dev_ops post_pio_ops = { .read = post_read, .write = post_write };

static void speaker_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    struct speaker_port *p = dev;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint8_t v = p ? __atomic_load_n(&p->ctrl, __ATOMIC_RELAXED) & SPK_CTRL_MASK : 0;
    if ((ts.tv_nsec >> 14) & 1)
        v |= SPK_REFRESH;
    v |= SPK_CH2_OUT;
    memset(data, 0xff, size);
    data[0] = v;
}

static void speaker_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct speaker_port *p = dev;
    if (p)
        __atomic_store_n(&p->ctrl, data[0] & SPK_CTRL_MASK, __ATOMIC_RELAXED);
}

const struct pio_dev_ops speaker_pio_ops = { .read = speaker_read, .write = speaker_write };
