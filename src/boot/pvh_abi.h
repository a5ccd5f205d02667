/* The PVH boot ABI (Xen's xen/include/public/arch-x86/hvm/start_info.h and
 * elfnote.h): what the kernel finds at %ebx on entry. Little-endian, fixed
 * layout; version 1 of hvm_start_info carries the memory map. */
#ifndef GW_BOOT_PVH_ABI_H
#define GW_BOOT_PVH_ABI_H

#include <stdint.h>

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define XEN_ELFNOTE_NAME         "Xen"
#define HVM_START_MAGIC          0x336ec578u
#define HVM_START_VERSION        1

struct hvm_start_info {
    uint32_t magic;            /* HVM_START_MAGIC */
    uint32_t version;          /* 1: memmap fields valid */
    uint32_t flags;            /* SIF_xxx, 0 here */
    uint32_t nr_modules;
    uint64_t modlist_paddr;    /* struct hvm_modlist_entry[nr_modules] */
    uint64_t cmdline_paddr;    /* NUL-terminated */
    uint64_t rsdp_paddr;       /* 0: no ACPI */
    uint64_t memmap_paddr;     /* struct hvm_memmap_entry[memmap_entries] */
    uint32_t memmap_entries;
    uint32_t reserved;
};
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info");

struct hvm_modlist_entry {
    uint64_t paddr, size, cmdline_paddr, reserved;
};
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry");

struct hvm_memmap_entry {
    uint64_t addr, size;
    uint32_t type;             /* e820 types: 1 RAM, 2 reserved */
    uint32_t reserved;
};
_Static_assert(sizeof(struct hvm_memmap_entry) == 24, "hvm_memmap_entry");

#endif
