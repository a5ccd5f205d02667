/* ACPI PM1 registers: power button and power-off. See power.h. */
#define LOG_PREFIX "power"
#include "devices/power.h"

#include <errno.h>
#include <string.h>

#include "common/log.h"

enum { REG_STS = 0, REG_EN = 2, REG_CNT = 4 };

bool power_is_off_request(uint16_t v)
{
    return (v & POWER_SLP_EN) && (POWER_SLP_TYP(v) == 0 || POWER_SLP_TYP(v) == 5);
}

bool power_sci_level(uint16_t sts, uint16_t en) { return (sts & en & PM1_PWRBTN) != 0; }

void power_init(struct power_port *p, power_off_fn off, void *opaque, const struct irq_line *sci)
{
    memset(p, 0, sizeof(*p));
    p->off = off;
    p->opaque = opaque;
    if (sci)
        p->sci = *sci;
    pthread_mutex_init(&p->lock, NULL);
}

void power_fini(struct power_port *p) { pthread_mutex_destroy(&p->lock); }

/* Lock held. */
static void update_sci(struct power_port *p)
{
    irq_line_set(&p->sci, power_sci_level(p->sts, p->en));
}

void power_reset(struct power_port *p)
{
    pthread_mutex_lock(&p->lock);
    p->sts = p->en = 0;
    update_sci(p);
    pthread_mutex_unlock(&p->lock);
}

void power_press_button(struct power_port *p)
{
    pthread_mutex_lock(&p->lock);
    p->sts |= PM1_PWRBTN;
    update_sci(p);
    bool enabled = p->en & PM1_PWRBTN;
    pthread_mutex_unlock(&p->lock);
    log_info("power button pressed%s", enabled ? "" : " (PWRBTN_EN clear: no SCI yet)");
}

void power_save(struct power_port *p, struct power_state *st)
{
    memset(st, 0, sizeof(*st));
    pthread_mutex_lock(&p->lock);
    st->version = POWER_STATE_VERSION;
    st->sts = p->sts;
    st->en = p->en;
    pthread_mutex_unlock(&p->lock);
}

int power_state_check(const struct power_state *st, struct gw_error *err)
{
    if (st->version != POWER_STATE_VERSION)
        return gw_error_set(err, EINVAL, "power state version %u, expected %u", st->version,
                            POWER_STATE_VERSION);
    if (st->sts & ~PM1_PWRBTN)
        return gw_error_set(err, EINVAL, "PM1_STS 0x%04x has bits other than PWRBTN_STS", st->sts);
    if (st->en & ~PM1_EN_MASK)
        return gw_error_set(err, EINVAL, "PM1_EN 0x%04x has undefined bits", st->en);
    return 0;
}

int power_load(struct power_port *p, const struct power_state *st, struct gw_error *err)
{
    int r = power_state_check(st, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&p->lock);
    p->sts = st->sts;
    p->en = st->en;
    update_sci(p);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* Lock held. */
static uint16_t reg_read(const struct power_port *p, unsigned reg)
{
    switch (reg) {
    case REG_STS: return p->sts;
    case REG_EN: return p->en;
    default: return PM1_CNT_SCI_EN;
    }
}

static void pio_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    struct power_port *p = dev;
    pthread_mutex_lock(&p->lock);
    for (unsigned i = 0; i < size; i++) {
        unsigned o = off + i;
        data[i] = o < POWER_PM1_LEN ? (uint8_t)(reg_read(p, o & ~1u) >> (8 * (o & 1))) : 0;
    }
    pthread_mutex_unlock(&p->lock);
}

/* The bytes of an access that fall on the 16-bit register at `reg`: their
 * value and a mask of which bytes were written. */
static uint16_t reg_bytes(uint16_t off, const uint8_t *data, unsigned size, unsigned reg,
                          uint16_t *mask)
{
    uint16_t v = 0;
    *mask = 0;
    for (unsigned b = 0; b < 2; b++) {
        unsigned o = reg + b;
        if (o >= off && o < (unsigned)off + size) {
            v |= (uint16_t)(data[o - off] << (8 * b));
            *mask |= (uint16_t)(0xff << (8 * b));
        }
    }
    return v;
}

static void pio_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct power_port *p = dev;
    uint16_t mask, v;
    pthread_mutex_lock(&p->lock);
    v = reg_bytes(off, data, size, REG_STS, &mask);
    p->sts &= (uint16_t)~(v & mask);                 /* write 1 to clear */
    v = reg_bytes(off, data, size, REG_EN, &mask);
    p->en = (uint16_t)(((p->en & ~mask) | (v & mask)) & PM1_EN_MASK);
    update_sci(p);
    pthread_mutex_unlock(&p->lock);
    v = reg_bytes(off, data, size, REG_CNT, &mask);
    if (mask != 0xffff)
        return;
    if (!power_is_off_request(v)) {
        log_debug("PM1a control write 0x%04x ignored", v);
        return;
    }
    log_info("guest requested power-off (PM1a control 0x%04x)", v);
    if (p->off)
        p->off(p->opaque);
}

const struct pio_dev_ops power_pio_ops = { .read = pio_read, .write = pio_write };
