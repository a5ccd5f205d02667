/* Boot protocols: load a kernel into guest RAM and produce the boot vCPU's
 * entry state. Pure with respect to KVM (fills struct kvm_regs and edits a
 * struct kvm_sregs, issues no ioctl) so that it is unit-tested without
 * /dev/kvm.
 *
 *  - PVH: an ELF (32 or 64-bit) with a XEN_ELFNOTE_PHYS32_ENTRY note,
 *    entered in 32-bit protected mode, paging off, %ebx -> hvm_start_info.
 *  - Linux bzImage: the payload is decompressed on the host (gzip, xz, lzma,
 *    lz4 legacy, zstd, or a plain ELF), the vmlinux ELF loaded by physical
 *    address, and entered in 64-bit mode with %rsi -> boot_params (the
 *    64-bit boot protocol, Documentation/arch/x86/boot.rst).
 *
 * Use: guest_ram_init(); boot_load() (writes guest RAM, fills a
 * boot_result); KVM_GET_SREGS on the boot vCPU, boot_setup_sregs(kind, ...)
 * on what it returned, KVM_SET_SREGS; KVM_SET_REGS with result.regs.
 * Calling boot_load() again on the same RAM (reset) is allowed.
 *
 * Kernel and initrd files are hostile input: every offset and size read from
 * them is checked against the file and the RAM map; nothing is written to
 * guest RAM before the kernel's headers passed the checks.
 *
 * Returns: 0 or -errno with a message in err (gw_error rules); messages
 * name the file ("kernel /x: not an ELF with a PVH note nor a Linux
 * bzImage"). Pure helpers return what they compute. */
#ifndef GW_BOOT_BOOT_H
#define GW_BOOT_BOOT_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "memory/guest_ram.h"

/* Guest-physical layout (docs/boot.md). Boot structures live in
 * 0x1000..0xffff; the test guest links itself at 0x10000..0x9f000; the EBDA
 * and legacy ROM area 0x9fc00..0x100000 stay reserved (the VMM puts its
 * ACPI tables at BOOT_ACPI_ADDR there); the initrd goes
 * page-aligned at the top of low RAM (below 3 GiB / initrd_addr_max). */
#define BOOT_GDT_ADDR        0x1000
#define BOOT_GDT_ENTRIES     6        /* null, null, code, data, TSS (16 bytes) */
#define BOOT_CMDLINE_ADDR    0x2000
#define BOOT_CMDLINE_MAX     0x4000   /* 16 KiB incl. NUL */
#define BOOT_START_INFO_ADDR 0x6000   /* PVH hvm_start_info */
#define BOOT_MODLIST_ADDR    0x6040
#define BOOT_MEMMAP_ADDR     0x6100
#define BOOT_MEMMAP_MAX      32
#define BOOT_ZERO_PAGE_ADDR  0x7000   /* Linux boot_params */
#define BOOT_PML4_ADDR       0x9000
#define BOOT_PDPT_ADDR       0xa000
#define BOOT_PD_ADDR         0xb000   /* 4 pages: the first 4 GiB */
#define BOOT_LOW_END         0x10000  /* end of the boot structures */
#define BOOT_EBDA_START      0x9fc00
#define BOOT_ACPI_ADDR       0xe0000  /* ACPI tables, RSDP first (in the reserved ROM area) */
#define BOOT_ACPI_SIZE       0x10000
#define BOOT_HIGH_MEM_START  0x100000
#define BOOT_MMIO_RESERVED   0xfec00000ULL /* IOAPIC, LAPIC, KVM TSS .. 4 GiB */

/* GDT selectors (Linux's __BOOT_CS/__BOOT_DS). CS is 32-bit code for PVH,
 * 64-bit code for Linux. */
#define BOOT_SEL_CS          0x10
#define BOOT_SEL_DS          0x18
#define BOOT_SEL_TR          0x20

enum boot_kind { BOOT_PVH, BOOT_LINUX64 };

struct boot_input {
    const char *kernel_path;   /* used when kernel_buf is NULL; names the kernel in errors */
    const uint8_t *kernel_buf; /* or an image in memory (not copied, not freed) */
    size_t kernel_len;
    const char *initrd_path;   /* NULL: none */
    const char *cmdline;       /* NULL: empty */
    uint64_t rsdp_addr;        /* ACPI RSDP the caller placed in RAM; 0: none */
};

struct boot_result {
    enum boot_kind kind;
    uint64_t entry;            /* guest-physical entry point */
    struct kvm_regs regs;      /* complete: rip, rflags 0x2, rbx/rsi, others 0 */
    char desc[160];            /* "PVH ELF64, entry 0x..." for logs */
};

/* e820 entry types */
#define E820_RAM      1
#define E820_RESERVED 2

struct e820_entry {
    uint64_t addr, size;
    uint32_t type;
};

/* Build the e820-style map of `ram` (pure): RAM 0..0x9fc00, reserved
 * 0x9fc00..1 MiB, RAM 1 MiB..end of low RAM, reserved 0xfec00000..4 GiB,
 * RAM from 4 GiB. Returns the entry count (at most max). */
unsigned boot_build_e820(const struct guest_ram *ram, struct e820_entry *out, unsigned max);

/* Load the kernel (format detected from its content), the initrd and the
 * command line into `ram`, write the boot structures, fill `out`. */
int boot_load(struct guest_ram *ram, const struct boot_input *in, struct boot_result *out,
              struct gw_error *err);
/* Apply the entry mode of `kind` to special registers read from a fresh
 * vCPU (KVM_GET_SREGS): cs/ds/es/fs/gs/ss/tr/ldt (every field), gdt/idt,
 * cr0/cr3/cr4/efer. apic_base and the interrupt bitmap are left as read.
 * Matches the GDT that boot_load() wrote. */
void boot_setup_sregs(enum boot_kind kind, struct kvm_sregs *sregs);

#endif
