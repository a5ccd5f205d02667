/* Wiring the legacy devices onto the machine's port bus. */
#define LOG_PREFIX "devices"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "devices/cmos.h"
#include "devices/i8042.h"
#include "devices/power.h"
#include "devices/serial.h"
#include "vmm/machine_internal.h"
#include "vmm/serial_sink.h"

#define COM1_BASE 0x3f8
#define COM1_GSI  4

struct misc_ports {
    struct power_port power;
    struct irq_line com1_irq;
    struct irq_line sci;
    struct serial_sink *out; /* COM1's output (NULL: discarded) */
};

/* How long the guest's last output may wait for its reader at exit. */
#define SERIAL_FLUSH_MS 2000

/* On a vCPU thread, the UART's lock held: queued, never waits (serial_sink.h). */
static void serial_out(void *opaque, uint8_t byte)
{
    struct machine *m = opaque;
    if (m->misc->out)
        serial_sink_put(m->misc->out, byte);
}

/* Called on a vCPU thread: find which one from the thread-local run page is
 * not needed; requests are machine-wide. */
static void kbd_reset(void *opaque)
{
    machine_request(opaque, MACHINE_REQ_RESET, 0, "i8042 reset");
}

static void power_off(void *opaque)
{
    machine_request(opaque, MACHINE_REQ_POWEROFF, 0, "power-off port");
}

static int reg(struct machine *m, uint16_t base, uint16_t len, const char *name,
               const struct pio_dev_ops *ops, void *dev, struct gw_error *err)
{
    int r = pio_bus_register(&m->bus, base, len, name, ops, dev);
    if (r < 0)
        return gw_error_set(err, -r, "cannot register %s at port 0x%x", name, base);
    return 0;
}

/* Ports Linux and firmware poke that need no behaviour: the POST code port
 * and the DMA page registers read as zero, writes are dropped. */
static void null_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    memset(data, 0, size);
}
static void null_write(void *dev, uint16_t off, const uint8_t *data, unsigned size) {}
static const struct pio_dev_ops null_ops = { .read = null_read, .write = null_write };

int machine_devices_init(struct machine *m, struct gw_error *err)
{
    pio_bus_init(&m->bus);
    m->misc = calloc(1, sizeof(*m->misc));
    if (!m->misc)
        return gw_error_set(err, ENOMEM, "out of memory");
    m->misc->com1_irq = (struct irq_line){ kvm_vm_set_irq, &m->kvm, COM1_GSI };
    m->misc->sci = (struct irq_line){ kvm_vm_set_irq, &m->kvm, POWER_SCI_GSI };
    if (m->cfg.serial_out_fd >= 0 && !(m->misc->out = serial_sink_new(m->cfg.serial_out_fd))) {
        int e = errno;
        machine_devices_fini(m);
        return gw_error_set(err, e, "serial output: %s", strerror(e));
    }
    power_init(&m->misc->power, power_off, m, &m->misc->sci);
    m->power = &m->misc->power;
    m->serial = serial_new(&m->misc->com1_irq, serial_out, m);
    m->cmos = cmos_new();
    m->kbd = i8042_new(kbd_reset, m);
    if (!m->serial || !m->cmos || !m->kbd) {
        machine_devices_fini(m);
        return gw_error_set(err, ENOMEM, "out of memory");
    }
    cmos_set_memory_size(m->cmos, m->ram.size);
    if (reg(m, COM1_BASE, 8, "serial0", &serial_pio_ops, m->serial, err) < 0 ||
        reg(m, 0x70, 2, "cmos", &cmos_pio_ops, m->cmos, err) < 0 ||
        reg(m, 0x60, 5, "i8042", &i8042_pio_ops, m->kbd, err) < 0 ||
        reg(m, POWER_PM1_BASE, POWER_PM1_LEN, "acpi-pm1", &power_pio_ops, m->power, err) < 0 ||
        reg(m, 0x80, 1, "post", &null_ops, NULL, err) < 0 ||
        reg(m, 0x87, 1, "dma-page", &null_ops, NULL, err) < 0) {
        machine_devices_fini(m);
        return -err->code;
    }
    return 0;
}

void machine_devices_fini(struct machine *m)
{
    serial_free(m->serial);
    cmos_free(m->cmos);
    i8042_free(m->kbd);
    if (m->power)
        power_fini(m->power);
    if (m->misc) /* after the UART: nothing puts into it any more */
        serial_sink_free(m->misc->out, SERIAL_FLUSH_MS);
    free(m->misc);
    m->serial = NULL;
    m->cmos = NULL;
    m->kbd = NULL;
    m->misc = NULL;
    m->power = NULL;
}

void machine_devices_reset(struct machine *m)
{
    serial_reset(m->serial);
    i8042_reset(m->kbd);
    power_reset(m->power);
}

int machine_powerdown(struct machine *m, struct gw_error *err)
{
    /* Under the machine's lock: a switch-over that begins does so before
     * the press (and saves it with the power device) or after it. One in
     * progress has saved, or is saving, the power device and the interrupt
     * controllers: a press now would be lost with the source, or half in
     * the state sent (the SCI in the IOAPIC, not PWRBTN_STS). */
    pthread_mutex_lock(&m->lock);
    enum runstate s = m->state;
    if (s == RUNSTATE_INMIGRATE || s == RUNSTATE_FINISH_MIGRATE) {
        pthread_mutex_unlock(&m->lock);
        return gw_error_set(err, EBUSY, s == RUNSTATE_INMIGRATE
                            ? "The VM is waiting for an incoming migration"
                            : "The VM is being handed over to a migration's destination");
    }
    power_press_button(m->power); /* PWRBTN_STS, SCI */
    pthread_mutex_unlock(&m->lock);
    if (m->ops && m->ops->event)
        m->ops->event(m->ops_opaque, "POWERDOWN", NULL);
    return 0;
}

size_t machine_serial_input(struct machine *m, const uint8_t *buf, size_t len)
{
    return serial_receive(m->serial, buf, len);
}
