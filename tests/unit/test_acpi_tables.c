/* ACPI tables: decoded here from raw bytes at the spec's offsets (not
 * through acpi_abi.h), the way a guest reads them: RSDP -> XSDT -> FADT ->
 * FACS/DSDT, and the MADT for several vCPU counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "devices/acpi_tables.h"

#define BASE 0xe0000u
#define AREA 0x10000

static uint8_t area[AREA];

static struct acpi_config cfg_n(unsigned n)
{
    return (struct acpi_config){ .base = BASE, .nr_cpus = n, .lapic_addr = 0xfee00000,
                                 .ioapic_addr = 0xfec00000, .pm1a_evt = 0x600,
                                 .pm1a_cnt = 0x604, .sci_irq = 9 };
}

static uint8_t u8(uint64_t gpa) { return area[gpa - BASE]; }
static uint16_t u16(uint64_t gpa) { return (uint16_t)(u8(gpa) | u8(gpa + 1) << 8); }
static uint32_t u32(uint64_t gpa) { return (uint32_t)(u16(gpa) | (uint32_t)u16(gpa + 2) << 16); }
static uint64_t u64(uint64_t gpa) { return u32(gpa) | (uint64_t)u32(gpa + 4) << 32; }
static const uint8_t *at(uint64_t gpa)
{
    assert_true(gpa >= BASE && gpa < BASE + AREA);
    return area + (gpa - BASE);
}

static uint8_t sum(uint64_t gpa, size_t n)
{
    uint8_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = (uint8_t)(s + u8(gpa + i));
    return s;
}

/* A table with signature sig at gpa: its checksum right, its length sane. */
static uint32_t check_table(uint64_t gpa, const char *sig)
{
    assert_memory_equal(at(gpa), sig, 4);
    uint32_t len = u32(gpa + 4);
    assert_true(len >= 36 && gpa + len <= BASE + AREA);
    assert_int_equal(sum(gpa, len), 0);
    assert_memory_equal(at(gpa + 10), "GODWIT", 6);
    return len;
}

static ssize_t build(unsigned n)
{
    memset(area, 0xa5, sizeof(area));
    struct acpi_config c = cfg_n(n);
    return acpi_tables_build(&c, area, sizeof(area));
}

/* XSDT entry that points at a table with signature sig (0 if none). */
static uint64_t find(const char *sig)
{
    uint64_t xsdt = u64(BASE + 24);
    uint32_t len = check_table(xsdt, "XSDT");
    for (uint32_t off = 36; off + 8 <= len; off += 8) {
        uint64_t t = u64(xsdt + off);
        if (memcmp(at(t), sig, 4) == 0)
            return t;
    }
    return 0;
}

static void test_rsdp(void **state)
{
    ssize_t used = build(1);
    assert_true(used > 0 && (size_t)used == acpi_tables_size(1));
    assert_memory_equal(at(BASE), "RSD PTR ", 8);
    assert_int_equal(sum(BASE, 20), 0);        /* ACPI 1.0 checksum */
    assert_int_equal(u8(BASE + 15), 2);        /* revision */
    assert_int_equal(u32(BASE + 20), 36);      /* length */
    assert_int_equal(sum(BASE, 36), 0);        /* extended checksum */
    uint64_t xsdt = u64(BASE + 24);
    assert_true(xsdt > BASE && xsdt % 16 == 0);
    uint32_t len = check_table(xsdt, "XSDT");
    assert_int_equal(len, 36 + 2 * 8);
    assert_int_not_equal(find("FACP"), 0);
    assert_int_not_equal(find("APIC"), 0);
}

static void test_fadt(void **state)
{
    assert_true(build(2) > 0);
    uint64_t f = find("FACP");
    assert_int_equal(check_table(f, "FACP"), 276);
    assert_int_equal(u8(f + 8), 6);            /* revision */
    assert_int_equal(u16(f + 46), 9);          /* SCI_INT */
    assert_int_equal(u32(f + 48), 0);          /* SMI_CMD: always ACPI mode */
    assert_int_equal(u32(f + 56), 0x600);      /* PM1a_EVT_BLK */
    assert_int_equal(u32(f + 60), 0);          /* no PM1b */
    assert_int_equal(u32(f + 64), 0x604);      /* PM1a_CNT_BLK */
    assert_int_equal(u32(f + 76), 0);          /* no PM timer */
    assert_int_equal(u32(f + 80), 0);          /* no GPE0 */
    assert_int_equal(u8(f + 88), 4);           /* PM1_EVT_LEN */
    assert_int_equal(u8(f + 89), 2);           /* PM1_CNT_LEN */
    assert_int_equal(u8(f + 108), 0x32);       /* CMOS century */
    uint32_t flags = u32(f + 112);
    assert_int_equal(flags & (1u << 4), 0);    /* PWR_BUTTON clear: fixed feature */
    assert_int_equal(flags & (1u << 20), 0);   /* not HW_REDUCED */
    /* X_PM1a_EVT_BLK and X_PM1a_CNT_BLK: system I/O, same ports. */
    assert_int_equal(u8(f + 148), 1);
    assert_int_equal(u8(f + 149), 32);
    assert_int_equal(u64(f + 152), 0x600);
    assert_int_equal(u8(f + 172), 1);
    assert_int_equal(u8(f + 173), 16);
    assert_int_equal(u64(f + 176), 0x604);
    /* DSDT, 32 and 64-bit pointers agree. */
    uint64_t dsdt = u32(f + 40);
    assert_int_equal(u64(f + 140), dsdt);
    check_table(dsdt, "DSDT");
    /* FACS: 64-byte aligned, 64 bytes, no checksum. */
    uint64_t facs = u32(f + 36);
    assert_int_equal(facs % 64, 0);
    assert_memory_equal(at(facs), "FACS", 4);
    assert_int_equal(u32(facs + 4), 64);
}

static void test_dsdt_aml(void **state)
{
    assert_true(build(1) > 0);
    uint64_t dsdt = u32(find("FACP") + 40);
    uint32_t len = check_table(dsdt, "DSDT");
    /* Name(_S5_, Package(){0, 0, 0, 0}): SLP_TYP 0 is soft-off. */
    static const uint8_t want[] = { 0x08, '_', 'S', '5', '_', 0x12, 0x06, 0x04,
                                    0x00, 0x00, 0x00, 0x00 };
    assert_int_equal(len, 36 + sizeof(want));
    assert_memory_equal(at(dsdt + 36), want, sizeof(want));
}

/* The MADT of an n-vCPU machine: n enabled LAPICs with ids 0..n-1, one
 * IOAPIC, the SCI override (level, active high), a LAPIC NMI; no IRQ0
 * override (KVM routes GSI 0 to IOAPIC pin 0). */
static void check_madt(unsigned n)
{
    assert_true(build(n) > 0);
    uint64_t m = find("APIC");
    uint32_t len = check_table(m, "APIC");
    assert_int_equal(u32(m + 36), 0xfee00000);
    assert_int_equal(u32(m + 40) & 1, 1);      /* PC-AT compatible */
    unsigned lapics = 0, ioapics = 0, isos = 0;
    for (uint64_t p = m + 44; p < m + len; p += u8(p + 1)) {
        assert_true(u8(p + 1) >= 2 && p + u8(p + 1) <= m + len);
        switch (u8(p)) {
        case 0:
            assert_int_equal(u8(p + 1), 8);
            assert_int_equal(u8(p + 2), lapics);   /* processor uid */
            assert_int_equal(u8(p + 3), lapics);   /* APIC id */
            assert_int_equal(u32(p + 4), 1);       /* enabled */
            lapics++;
            break;
        case 1:
            assert_int_equal(u8(p + 1), 12);
            assert_int_equal(u32(p + 4), 0xfec00000);
            assert_int_equal(u32(p + 8), 0);       /* GSI base */
            ioapics++;
            break;
        case 2:
            assert_int_equal(u8(p + 1), 10);
            assert_int_equal(u8(p + 3), 9);        /* ISA IRQ */
            assert_int_equal(u32(p + 4), 9);       /* GSI */
            assert_int_equal(u16(p + 8), 0x000d);  /* level, active high */
            isos++;
            break;
        case 4:
            assert_int_equal(u8(p + 1), 6);
            break;
        default:
            fail_msg("unexpected MADT entry type %u", u8(p));
        }
    }
    assert_int_equal(lapics, n);
    assert_int_equal(ioapics, 1);
    assert_int_equal(isos, 1);
}

static void test_madt(void **state)
{
    check_madt(1);
    check_madt(2);
    check_madt(64);
    check_madt(255);
}

static void test_errors(void **state)
{
    struct acpi_config c = cfg_n(0);
    assert_int_equal(acpi_tables_build(&c, area, sizeof(area)), -EINVAL);
    c = cfg_n(256);
    assert_int_equal(acpi_tables_build(&c, area, sizeof(area)), -EINVAL);
    c = cfg_n(4);
    c.base = BASE + 16;                        /* FACS would be misaligned */
    assert_int_equal(acpi_tables_build(&c, area, sizeof(area)), -EINVAL);
    c = cfg_n(4);
    c.base = 0xffffff00;                       /* would cross 4 GiB */
    assert_int_equal(acpi_tables_build(&c, area, sizeof(area)), -EINVAL);
    c = cfg_n(4);
    assert_int_equal(acpi_tables_build(&c, area, acpi_tables_size(4) - 1), -ENOSPC);
    assert_int_equal(acpi_tables_build(&c, area, acpi_tables_size(4)), (ssize_t)acpi_tables_size(4));
    assert_true(acpi_tables_size(255) < 0x10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsdp),
        cmocka_unit_test(test_fadt),
        cmocka_unit_test(test_dsdt_aml),
        cmocka_unit_test(test_madt),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
