/* Boot protocols: load a kernel into guest RAM and produce the boot vCPU's
 * entry state. Pure with respect to KVM (fills struct kvm_regs/kvm_sregs,
 * issues no ioctl) so that it is unit-tested without /dev/kvm.
 *
 *  - PVH: an ELF (32 or 64-bit) with a XEN_ELFNOTE_PHYS32_ENTRY note,
 *    entered in 32-bit protected mode with %ebx -> struct hvm_start_info.
 *  - Linux bzImage: the payload is decompressed on the host (gzip, xz, lzma,
 *    lz4, zstd), the vmlinux ELF loaded, and entered in 64-bit mode with
 *    %rsi -> boot_params (the 64-bit boot protocol).
 *
 * Kernel and initrd files are hostile input: every offset is checked.
 * Returns: 0 or -errno with a message in err. */
#ifndef GW_BOOT_BOOT_H
#define GW_BOOT_BOOT_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "memory/guest_ram.h"

/* Guest-physical layout of the boot structures (all below 64 KiB; the test
 * guest links itself at 0x10000..0x9f000). */
#define BOOT_GDT_ADDR        0x1000
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
#define BOOT_EBDA_START      0x9fc00
#define BOOT_HIGH_MEM_START  0x100000

enum boot_kind { BOOT_PVH, BOOT_LINUX64 };

struct boot_input {
    const char *kernel_path;   /* or kernel_buf */
    const uint8_t *kernel_buf;
    size_t kernel_len;
    const char *initrd_path;   /* NULL: none */
    const char *cmdline;       /* NULL: empty */
};

struct boot_result {
    enum boot_kind kind;
    uint64_t entry;            /* guest-physical entry point */
    struct kvm_regs regs;
    char desc[160];            /* "PVH ELF, entry 0x..." for logs */
};

/* e820 entry types */
#define E820_RAM      1
#define E820_RESERVED 2

struct e820_entry {
    uint64_t addr, size;
    uint32_t type;
};

/* Build the e820-style map of `ram` (pure). Returns the entry count. */
unsigned boot_build_e820(const struct guest_ram *ram, struct e820_entry *out, unsigned max);

/* Load the kernel (format detected from its content), the initrd and the
 * command line into `ram`. */
int boot_load(struct guest_ram *ram, const struct boot_input *in, struct boot_result *out,
              struct gw_error *err);
/* Apply the entry mode to special registers read from a fresh vCPU. */
void boot_setup_sregs(enum boot_kind kind, struct kvm_sregs *sregs);

#endif
