/* I/O port bus: devices register port ranges; vCPU exits dispatch here.
 *
 * Devices do their own locking: handlers may be called from any vCPU thread
 * concurrently. Interrupts are raised through struct irq_line, which the
 * VMM wires to KVM_IRQ_LINE. Returns: 0 or -errno. */
#ifndef GW_DEVICES_BUS_H
#define GW_DEVICES_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct pio_dev_ops {
    /* offset is relative to the registered base; size is 1, 2 or 4. */
    void (*read)(void *dev, uint16_t offset, uint8_t *data, unsigned size);
    void (*write)(void *dev, uint16_t offset, const uint8_t *data, unsigned size);
};

/* An interrupt line into the (in-kernel) interrupt controller. */
struct irq_line {
    void (*set_level)(void *opaque, unsigned gsi, int level);
    void *opaque;
    unsigned gsi;
};

static inline void irq_line_set(const struct irq_line *irq, int level)
{
    if (irq->set_level)
        irq->set_level(irq->opaque, irq->gsi, level);
}

#define PIO_BUS_MAX_RANGES 32

struct pio_range {
    uint16_t base, len;
    const struct pio_dev_ops *ops;
    void *dev;
    const char *name;
};

struct pio_bus {
    unsigned nr;
    struct pio_range ranges[PIO_BUS_MAX_RANGES];
    /* One bit per port: unknown accesses are logged once (debug). */
    uint8_t unknown_seen[65536 / 8];
};

void pio_bus_init(struct pio_bus *bus);
/* Overlapping ranges are refused (-EEXIST). */
int pio_bus_register(struct pio_bus *bus, uint16_t base, uint16_t len, const char *name,
                     const struct pio_dev_ops *ops, void *dev);
/* Returns true if a device handled the access; unknown reads return 0xff. */
bool pio_bus_read(struct pio_bus *bus, uint16_t port, uint8_t *data, unsigned size);
bool pio_bus_write(struct pio_bus *bus, uint16_t port, const uint8_t *data, unsigned size);

#endif
