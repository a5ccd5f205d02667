/* ACPI table builder. See acpi_tables.h. */
#include "devices/acpi_tables.h"

#include <errno.h>
#include <string.h>

#include "devices/acpi_abi.h"

#define OEM_ID       "GODWIT"
#define OEM_TABLE_ID "GODWITVM"
#define CREATOR_ID   "GDWT"

/* DSDT body: Name(_S5_, Package(){0, 0, 0, 0}).
 * 08 NameOp, "_S5_", 12 PackageOp, 06 PkgLength, 04 NumElements, 4 ZeroOp. */
static const uint8_t dsdt_aml[] = {
    0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
};

/* Table offsets inside the area, in build order. */
struct layout {
    size_t rsdp, facs, xsdt, fadt, dsdt, madt, end;
};

static size_t align_up(size_t v, size_t a) { return (v + a - 1) & ~(a - 1); }

static size_t madt_len(unsigned n)
{
    return sizeof(struct acpi_madt) + n * sizeof(struct acpi_madt_lapic) +
           sizeof(struct acpi_madt_ioapic) + sizeof(struct acpi_madt_iso) +
           sizeof(struct acpi_madt_lapic_nmi);
}

static struct layout plan(unsigned nr_cpus)
{
    struct layout l;
    l.rsdp = 0;
    l.facs = align_up(l.rsdp + sizeof(struct acpi_rsdp), 64);
    l.xsdt = align_up(l.facs + sizeof(struct acpi_facs), 16);
    l.fadt = align_up(l.xsdt + sizeof(struct acpi_sdt_header) + 2 * 8, 16);
    l.dsdt = align_up(l.fadt + sizeof(struct acpi_fadt), 16);
    l.madt = align_up(l.dsdt + sizeof(struct acpi_sdt_header) + sizeof(dsdt_aml), 16);
    l.end = l.madt + madt_len(nr_cpus);
    return l;
}

size_t acpi_tables_size(unsigned nr_cpus) { return plan(nr_cpus).end; }

uint8_t acpi_sum(const void *p, size_t n)
{
    uint8_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = (uint8_t)(s + ((const uint8_t *)p)[i]);
    return s;
}

/* Header of a table of `len` bytes at buf; the checksum is set by seal(). */
static void header(uint8_t *buf, const char sig[4], uint32_t len, uint8_t rev)
{
    struct acpi_sdt_header h = { .length = len, .revision = rev, .oem_revision = 1,
                                 .creator_revision = 1 };
    memcpy(h.signature, sig, 4);
    memcpy(h.oem_id, OEM_ID, 6);
    memcpy(h.oem_table_id, OEM_TABLE_ID, 8);
    memcpy(h.creator_id, CREATOR_ID, 4);
    memcpy(buf, &h, sizeof(h));
}

static void seal(uint8_t *table)
{
    struct acpi_sdt_header h;
    memcpy(&h, table, sizeof(h));
    table[offsetof(struct acpi_sdt_header, checksum)] = 0;
    table[offsetof(struct acpi_sdt_header, checksum)] = (uint8_t)-acpi_sum(table, h.length);
}

static void build_rsdp(uint8_t *buf, uint64_t xsdt)
{
    struct acpi_rsdp r = { .revision = 2, .length = sizeof(r), .xsdt_address = xsdt };
    memcpy(r.signature, ACPI_RSDP_SIG, 8);
    memcpy(r.oem_id, OEM_ID, 6);
    r.checksum = (uint8_t)-acpi_sum(&r, ACPI_RSDP_V1_LEN);
    r.extended_checksum = (uint8_t)-acpi_sum(&r, sizeof(r));
    memcpy(buf, &r, sizeof(r));
}

static void build_facs(uint8_t *buf)
{
    struct acpi_facs f = { .length = sizeof(f), .version = 2 };
    memcpy(f.signature, "FACS", 4);
    memcpy(buf, &f, sizeof(f));
}

static void build_xsdt(uint8_t *buf, uint64_t fadt, uint64_t madt)
{
    uint32_t len = sizeof(struct acpi_sdt_header) + 2 * 8;
    header(buf, "XSDT", len, 1);
    memcpy(buf + sizeof(struct acpi_sdt_header), &fadt, 8);
    memcpy(buf + sizeof(struct acpi_sdt_header) + 8, &madt, 8);
    seal(buf);
}

static struct acpi_gas io_gas(uint16_t port, uint8_t bits)
{
    return (struct acpi_gas){ .space_id = ACPI_GAS_SYSTEM_IO, .bit_width = bits,
                              .access_size = ACPI_GAS_ACCESS_WORD, .address = port };
}

/* SMI_CMD 0: the machine is always in ACPI mode (PM1_CNT.SCI_EN reads 1).
 * No PM timer, no GPE blocks; the power button is a fixed feature. */
static void build_fadt(uint8_t *buf, const struct acpi_config *cfg, uint32_t facs, uint32_t dsdt)
{
    struct acpi_fadt f;
    memset(&f, 0, sizeof(f));
    f.firmware_ctrl = facs;
    f.dsdt = dsdt;
    f.sci_int = cfg->sci_irq;
    f.pm1a_evt_blk = cfg->pm1a_evt;
    f.pm1a_cnt_blk = cfg->pm1a_cnt;
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    f.p_lvl2_lat = 101;                /* > 100: C2 not supported */
    f.p_lvl3_lat = 1001;               /* > 1000: C3 not supported */
    f.century = 0x32;                  /* CMOS century byte (devices/cmos.h) */
    f.iapc_boot_arch = ACPI_IAPC_LEGACY_DEVICES | ACPI_IAPC_8042;
    f.flags = ACPI_FADT_WBINVD | ACPI_FADT_PROC_C1 | ACPI_FADT_SLP_BUTTON;
    f.x_dsdt = dsdt;
    f.x_pm1a_evt_blk = io_gas(cfg->pm1a_evt, 32);
    f.x_pm1a_cnt_blk = io_gas(cfg->pm1a_cnt, 16);
    memcpy(buf, &f, sizeof(f));
    header(buf, "FACP", sizeof(f), 6);
    seal(buf);
}

static void build_dsdt(uint8_t *buf)
{
    uint32_t len = sizeof(struct acpi_sdt_header) + sizeof(dsdt_aml);
    header(buf, "DSDT", len, 2);
    memcpy(buf + sizeof(struct acpi_sdt_header), dsdt_aml, sizeof(dsdt_aml));
    seal(buf);
}

static void build_madt(uint8_t *buf, const struct acpi_config *cfg)
{
    uint32_t len = (uint32_t)madt_len(cfg->nr_cpus);
    struct acpi_madt m = { .lapic_address = cfg->lapic_addr, .flags = ACPI_MADT_PCAT_COMPAT };
    memcpy(buf, &m, sizeof(m));
    header(buf, "APIC", len, 3);
    uint8_t *p = buf + sizeof(m);
    for (unsigned i = 0; i < cfg->nr_cpus; i++) {
        struct acpi_madt_lapic l = { ACPI_MADT_LAPIC, sizeof(l), (uint8_t)i, (uint8_t)i, 1 };
        memcpy(p, &l, sizeof(l));
        p += sizeof(l);
    }
    struct acpi_madt_ioapic io = { ACPI_MADT_IOAPIC, sizeof(io), 0, 0, cfg->ioapic_addr, 0 };
    memcpy(p, &io, sizeof(io));
    p += sizeof(io);
    /* KVM routes ISA IRQ n to IOAPIC pin n (no IRQ0 -> GSI2 override). */
    struct acpi_madt_iso iso = { ACPI_MADT_ISO, sizeof(iso), 0, cfg->sci_irq, cfg->sci_irq,
                                 ACPI_MPS_ACTIVE_HIGH | ACPI_MPS_LEVEL };
    memcpy(p, &iso, sizeof(iso));
    p += sizeof(iso);
    struct acpi_madt_lapic_nmi nmi = { ACPI_MADT_LAPIC_NMI, sizeof(nmi), 0xff, 0, 1 };
    memcpy(p, &nmi, sizeof(nmi));
    seal(buf);
}

ssize_t acpi_tables_build(const struct acpi_config *cfg, uint8_t *buf, size_t size)
{
    if (cfg->nr_cpus < 1 || cfg->nr_cpus > ACPI_MAX_CPUS || cfg->sci_irq > 15)
        return -EINVAL;
    struct layout l = plan(cfg->nr_cpus);
    if (cfg->base > UINT32_MAX - l.end || cfg->base % 64)
        return -EINVAL;
    if (size < l.end)
        return -ENOSPC;
    memset(buf, 0, l.end);
    uint32_t base = (uint32_t)cfg->base;
    build_facs(buf + l.facs);
    build_dsdt(buf + l.dsdt);
    build_fadt(buf + l.fadt, cfg, base + (uint32_t)l.facs, base + (uint32_t)l.dsdt);
    build_madt(buf + l.madt, cfg);
    build_xsdt(buf + l.xsdt, base + l.fadt, base + l.madt);
    build_rsdp(buf + l.rsdp, base + l.xsdt);
    return (ssize_t)l.end;
}
