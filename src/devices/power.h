/* ACPI PM1 (fixed-feature) registers: the PM1a event block at I/O 0x600
 * (PM1_STS at 0x600, PM1_EN at 0x602, 16 bits each) and the PM1a control
 * block at 0x604 (PM1_CNT), where QEMU's q35 puts them; the VMM's ACPI
 * tables (acpi_tables.h) describe them.
 *
 *  - PM1_STS: only PWRBTN_STS (bit 8) exists; power_press_button() sets it,
 *    writing 1 to it clears it (other bits read 0, writes of 0 do nothing).
 *  - PM1_EN: the enable bits TMR, GBL, PWRBTN, SLPBTN, RTC and
 *    PCIEXP_WAKE_DIS (mask 0x4721) are stored, other bits read 0.
 *  - SCI: the irq_line is driven at level, 1 while (STS & EN) != 0, i.e.
 *    while a pressed power button is enabled.
 *  - PM1_CNT: reads SCI_EN (bit 0) = 1, the machine is always in ACPI mode
 *    (FADT SMI_CMD 0). A write of both bytes with SLP_EN (bit 13) set and
 *    SLP_TYP (bits 10-12) 0 or 5 powers the machine off: 0 is S5 in our
 *    DSDT and QEMU's, 5 the usual value of real firmware (0x3400). So
 *    `outw(0x2000, 0x604)` works under both QEMU and godwit. Other writes
 *    are ignored.
 * Accesses of 1, 2 or 4 bytes at any offset act on the bytes they cover.
 *
 * Threads: register accesses come from vCPU threads, power_press_button
 * and save/load from the main thread; one mutex protects STS and EN, and
 * the SCI is driven with it held. The off callback runs on the writing
 * vCPU's thread, without the lock; it must only post a request (the VMM
 * stops the vCPUs elsewhere).
 * Returns: power_load / power_state_check 0 or -EINVAL (device unchanged on
 * error, err filled). */
#ifndef GW_DEVICES_POWER_H
#define GW_DEVICES_POWER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "devices/bus.h"

#define POWER_PM1_BASE  0x600           /* PM1a_EVT_BLK, then PM1a_CNT_BLK */
#define POWER_PM1_LEN   6
#define POWER_PORT      0x604           /* PM1a_CNT_BLK */
#define POWER_SCI_GSI   9               /* as QEMU: ISA IRQ 9, level, active high */
#define POWER_OFF_VALUE 0x2000          /* SLP_EN | SLP_TYP 0 */
#define POWER_SLP_EN    0x2000
#define POWER_SLP_TYP(v) (((v) >> 10) & 7)
#define PM1_PWRBTN      0x0100          /* PWRBTN_STS in PM1_STS, PWRBTN_EN in PM1_EN */
#define PM1_EN_MASK     0x4721
#define PM1_CNT_SCI_EN  0x0001

typedef void (*power_off_fn)(void *opaque);

struct power_port {
    power_off_fn off;                   /* may be NULL */
    void *opaque;
    struct irq_line sci;                /* set_level NULL: no SCI */
    pthread_mutex_t lock;
    uint16_t sts, en;
};

/* Migrated state, version 1 (docs/devices.md), little-endian. */
#define POWER_STATE_VERSION 1
struct power_state {
    uint32_t version;                   /* POWER_STATE_VERSION */
    uint16_t sts;                       /* PM1_STS: only PM1_PWRBTN */
    uint16_t en;                        /* PM1_EN: only PM1_EN_MASK bits */
};
_Static_assert(sizeof(struct power_state) == 8, "power_state wire size");

/* sci may be NULL (no interrupt). STS and EN start at 0. */
void power_init(struct power_port *p, power_off_fn off, void *opaque, const struct irq_line *sci);
void power_fini(struct power_port *p);
/* Power-on state: STS = EN = 0, SCI low. */
void power_reset(struct power_port *p);
/* The power button was pressed: PWRBTN_STS set, SCI raised if enabled. */
void power_press_button(struct power_port *p);

void power_save(struct power_port *p, struct power_state *st);
/* Check st, then take it and drive the SCI to match. */
int power_load(struct power_port *p, const struct power_state *st, struct gw_error *err);
int power_state_check(const struct power_state *st, struct gw_error *err);

/* Register at POWER_PM1_BASE with length POWER_PM1_LEN; dev = struct power_port. */
extern const struct pio_dev_ops power_pio_ops;

/* Pure: does this PM1a control value ask for soft-off? */
bool power_is_off_request(uint16_t pm1_cnt);
/* Pure: the SCI level for these PM1_STS and PM1_EN values. */
bool power_sci_level(uint16_t sts, uint16_t en);

#endif
