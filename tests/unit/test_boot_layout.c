/* Boot layout: the e820 map for several RAM sizes, and the entry-mode
 * special registers agreeing with the GDT written into guest memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "boot/boot.h"
#include "boot/boot_internal.h"
#include "common/log.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static void check_entry(const struct e820_entry *e, uint64_t addr, uint64_t size, uint32_t type)
{
    assert_int_equal(e->addr, addr);
    assert_int_equal(e->size, size);
    assert_int_equal(e->type, type);
}

/* Entries are sorted, disjoint, and RAM entries are exactly the RAM map. */
static void check_sane(const struct guest_ram *ram, const struct e820_entry *e, unsigned n)
{
    uint64_t ram_total = 0;
    for (unsigned i = 0; i < n; i++) {
        assert_true(e[i].size > 0);
        if (i)
            assert_true(e[i].addr >= e[i - 1].addr + e[i - 1].size);
        if (e[i].type == E820_RAM) {
            ram_total += e[i].size;
            uint64_t off;
            assert_true(guest_ram_gpa_to_offset(ram, e[i].addr, &off));
            assert_true(guest_ram_gpa_to_offset(ram, e[i].addr + e[i].size - 1, &off));
        }
    }
    /* Only the EBDA/ROM area 0x9fc00..1 MiB of RAM is withheld. */
    assert_int_equal(ram_total, ram->size - (BOOT_HIGH_MEM_START - BOOT_EBDA_START));
}

static void test_e820_128m(void **state)
{
    struct guest_ram ram = { 0 };
    struct e820_entry e[16];
    guest_ram_layout(&ram, 128 * MiB);
    unsigned n = boot_build_e820(&ram, e, 16);
    assert_int_equal(n, 4);
    check_entry(&e[0], 0, 0x9fc00, E820_RAM);
    check_entry(&e[1], 0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED);
    check_entry(&e[2], 0x100000, 127 * MiB, E820_RAM);
    check_entry(&e[3], 0xfec00000, 0x100000000ULL - 0xfec00000, E820_RESERVED);
    check_sane(&ram, e, n);
}

static void test_e820_3g(void **state)
{
    struct guest_ram ram = { 0 };
    struct e820_entry e[16];
    guest_ram_layout(&ram, 3 * GiB);
    unsigned n = boot_build_e820(&ram, e, 16);
    assert_int_equal(n, 4);
    check_entry(&e[2], 0x100000, 3 * GiB - MiB, E820_RAM);
    check_entry(&e[3], 0xfec00000, 0x1400000, E820_RESERVED);
    check_sane(&ram, e, n);
}

static void test_e820_4g(void **state)
{
    struct guest_ram ram = { 0 };
    struct e820_entry e[16];
    guest_ram_layout(&ram, 4 * GiB);
    unsigned n = boot_build_e820(&ram, e, 16);
    assert_int_equal(n, 5);
    check_entry(&e[2], 0x100000, 3 * GiB - MiB, E820_RAM);
    check_entry(&e[3], 0xfec00000, 0x1400000, E820_RESERVED);
    check_entry(&e[4], 4 * GiB, 1 * GiB, E820_RAM);
    check_sane(&ram, e, n);
}

static void test_e820_6g(void **state)
{
    struct guest_ram ram = { 0 };
    struct e820_entry e[16];
    guest_ram_layout(&ram, 6 * GiB);
    unsigned n = boot_build_e820(&ram, e, 16);
    assert_int_equal(n, 5);
    check_entry(&e[0], 0, 0x9fc00, E820_RAM);
    check_entry(&e[4], 4 * GiB, 3 * GiB, E820_RAM);
    check_sane(&ram, e, n);
}

static void test_e820_truncated_and_tiny(void **state)
{
    struct guest_ram ram = { 0 };
    struct e820_entry e[16];
    guest_ram_layout(&ram, 6 * GiB);
    assert_int_equal(boot_build_e820(&ram, e, 2), 2); /* never writes past max */
    assert_int_equal(boot_build_e820(&ram, e, 0), 0);
    guest_ram_layout(&ram, 0x80000); /* smaller than the low 640 KiB: no phantom RAM */
    unsigned n = boot_build_e820(&ram, e, 16);
    check_entry(&e[0], 0, 0x80000, E820_RAM);
    for (unsigned i = 1; i < n; i++)
        assert_int_not_equal(e[i].type, E820_RAM);
}

/* Decode a GDT descriptor into the kvm_segment fields it defines. */
static void decode(uint64_t d, struct kvm_segment *s)
{
    memset(s, 0, sizeof(*s));
    s->limit = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000));
    s->base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
    s->type = (d >> 40) & 0xf;
    s->s = (d >> 44) & 1;
    s->dpl = (d >> 45) & 3;
    s->present = (d >> 47) & 1;
    s->avl = (d >> 52) & 1;
    s->l = (d >> 53) & 1;
    s->db = (d >> 54) & 1;
    s->g = (d >> 55) & 1;
    if (s->g)
        s->limit = (s->limit << 12) | 0xfff;
}

static void check_seg_matches_gdt(const uint64_t *gdt, const struct kvm_segment *seg)
{
    struct kvm_segment d;
    assert_true(seg->selector / 8 < BOOT_GDT_ENTRIES);
    assert_int_equal(seg->selector & 7, 0);
    decode(gdt[seg->selector / 8], &d);
    assert_int_equal(seg->base, d.base);
    assert_int_equal(seg->limit, d.limit);
    assert_int_equal(seg->type & ~1, d.type & ~1); /* accessed bit may differ */
    assert_int_equal(seg->s, d.s);
    assert_int_equal(seg->dpl, d.dpl);
    assert_int_equal(seg->present, d.present);
    assert_int_equal(seg->db, d.db);
    assert_int_equal(seg->l, d.l);
    assert_int_equal(seg->g, d.g);
    assert_int_equal(seg->avl, d.avl);
    assert_int_equal(seg->unusable, 0);
}

static void check_kind(enum boot_kind kind)
{
    struct guest_ram ram;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_init(&ram, 4 * MiB, "t", &err), 0);
    assert_int_equal(boot_write_gdt(&ram, kind, &err), 0);
    const uint64_t *gdt = (const uint64_t *)(ram.host + BOOT_GDT_ADDR);

    struct kvm_sregs s;
    memset(&s, 0xa5, sizeof(s)); /* what KVM_GET_SREGS returned: must be overwritten */
    uint64_t apic_base = s.apic_base;
    boot_setup_sregs(kind, &s);
    assert_int_equal(s.apic_base, apic_base); /* left alone */
    bool lm = kind == BOOT_LINUX64;
    assert_int_equal(s.cs.selector, BOOT_SEL_CS);
    assert_int_equal(s.cs.type, 0xb);
    assert_int_equal(s.cs.l, lm);
    assert_int_equal(s.cs.db, !lm);
    const struct kvm_segment *data[] = { &s.ds, &s.es, &s.fs, &s.gs, &s.ss };
    for (unsigned i = 0; i < 5; i++) {
        assert_int_equal(data[i]->selector, BOOT_SEL_DS);
        assert_int_equal(data[i]->type, 0x3);
        check_seg_matches_gdt(gdt, data[i]);
    }
    check_seg_matches_gdt(gdt, &s.cs);
    /* TR: a busy 32/64-bit TSS, usable, as KVM requires. */
    assert_int_equal(s.tr.selector, BOOT_SEL_TR);
    assert_int_equal(s.tr.type, 0xb);
    assert_int_equal(s.tr.s, 0);
    assert_int_equal(s.tr.present, 1);
    check_seg_matches_gdt(gdt, &s.tr);
    assert_int_equal(gdt[BOOT_SEL_TR / 8 + 1], 0); /* upper half of the 16-byte TSS slot */
    assert_int_equal(s.ldt.selector, 0);
    assert_int_equal(s.ldt.type, 0x2);
    assert_int_equal(gdt[0], 0);
    assert_int_equal(s.gdt.base, BOOT_GDT_ADDR);
    assert_int_equal(s.gdt.limit, BOOT_GDT_ENTRIES * 8 - 1);
    assert_int_equal(s.idt.limit, 0);
    if (lm) {
        assert_int_equal(s.cr0, 0x80000011);
        assert_int_equal(s.cr3, BOOT_PML4_ADDR);
        assert_int_equal(s.cr4, 0x20);
        assert_int_equal(s.efer, 0x500);
    } else {
        assert_int_equal(s.cr0, 0x11);
        assert_int_equal(s.cr3, 0);
        assert_int_equal(s.cr4, 0);
        assert_int_equal(s.efer, 0);
    }
    guest_ram_fini(&ram);
}

static void test_sregs_pvh(void **state) { check_kind(BOOT_PVH); }
static void test_sregs_linux64(void **state) { check_kind(BOOT_LINUX64); }

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e820_128m),
        cmocka_unit_test(test_e820_3g),
        cmocka_unit_test(test_e820_4g),
        cmocka_unit_test(test_e820_6g),
        cmocka_unit_test(test_e820_truncated_and_tiny),
        cmocka_unit_test(test_sregs_pvh),
        cmocka_unit_test(test_sregs_linux64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
