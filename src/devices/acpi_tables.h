/* The ACPI tables godwit-vmm gives its guests (docs/devices.md, "ACPI
 * tables"): RSDP (revision 2) -> XSDT -> FADT (-> FACS, DSDT) and MADT.
 * The FADT describes the PM1a event block (PM1_STS/PM1_EN, with the
 * fixed-feature power button) and the PM1a control block of power.h, and
 * the SCI on an ISA IRQ; the DSDT holds only Name(_S5_, Package(){0,0,0,0})
 * (soft-off is SLP_TYP 0); the MADT lists one enabled local APIC per vCPU
 * (APIC ids 0..n-1, as KVM numbers them), the IOAPIC, and an interrupt
 * source override making the SCI level-triggered, active-high.
 *
 * Pure: builds the tables into a caller's buffer that will sit at
 * guest-physical address `base`, with every pointer and checksum filled.
 * Returns: the number of bytes used, or -EINVAL (bad config: no or too many
 * vCPUs, SCI not an ISA IRQ, base not 64-byte aligned as the FACS must be,
 * tables not below 4 GiB) / -ENOSPC (buffer too small). The RSDP is at offset 0 (16-byte aligned when base
 * is), so a base in 0xE0000-0xFFFFF also serves guests that scan for it. */
#ifndef GW_DEVICES_ACPI_TABLES_H
#define GW_DEVICES_ACPI_TABLES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ACPI_MAX_CPUS 255              /* xAPIC ids only */

struct acpi_config {
    uint64_t base;                     /* guest-physical address of buf[0], < 4 GiB */
    unsigned nr_cpus;                  /* 1..ACPI_MAX_CPUS */
    uint32_t lapic_addr;               /* 0xfee00000 */
    uint32_t ioapic_addr;              /* 0xfec00000 */
    uint16_t pm1a_evt;                 /* I/O port of PM1a_EVT_BLK (4 bytes) */
    uint16_t pm1a_cnt;                 /* I/O port of PM1a_CNT_BLK (2 bytes) */
    uint8_t sci_irq;                   /* ISA IRQ = GSI of the SCI */
};

/* Bytes the tables need for nr_cpus vCPUs (an upper bound for any config). */
size_t acpi_tables_size(unsigned nr_cpus);
ssize_t acpi_tables_build(const struct acpi_config *cfg, uint8_t *buf, size_t size);

/* Pure: the 8-bit sum of n bytes (0 for a table with a right checksum). */
uint8_t acpi_sum(const void *p, size_t n);

#endif
