/* PVH: an ELF kernel entered in 32-bit protected mode at the address its
 * XEN_ELFNOTE_PHYS32_ENTRY note gives, with %ebx -> struct hvm_start_info. */
#define LOG_PREFIX "pvh"
#include <errno.h>
#include <string.h>

#include "boot/boot_internal.h"
#include "boot/elf_load.h"
#include "boot/pvh_abi.h"

_Static_assert(BOOT_MODLIST_ADDR >= BOOT_START_INFO_ADDR + sizeof(struct hvm_start_info),
               "modlist overlaps start_info");
_Static_assert(BOOT_MEMMAP_ADDR >= BOOT_MODLIST_ADDR + sizeof(struct hvm_modlist_entry),
               "memmap overlaps modlist");
_Static_assert(BOOT_MEMMAP_ADDR + BOOT_MEMMAP_MAX * sizeof(struct hvm_memmap_entry) <=
               BOOT_ZERO_PAGE_ADDR, "memmap overlaps the zero page");

bool pvh_find_entry(const uint8_t *k, size_t len, uint32_t *entry)
{
    const uint8_t *desc;
    uint32_t dlen;
    if (!elf_find_note(k, len, XEN_ELFNOTE_NAME, XEN_ELFNOTE_PHYS32_ENTRY, &desc, &dlen))
        return false;
    if (dlen == 4) {
        memcpy(entry, desc, 4);
        return true;
    }
    if (dlen == 8) {           /* some linkers emit a .quad: must fit 32 bits */
        uint64_t v;
        memcpy(&v, desc, 8);
        *entry = (uint32_t)v;
        return v <= UINT32_MAX;
    }
    return false;
}

static int write_start_info(struct guest_ram *ram, uint64_t initrd, uint64_t initrd_size,
                            uint64_t rsdp, struct gw_error *err)
{
    struct e820_entry map[BOOT_MEMMAP_MAX];
    unsigned n = boot_build_e820(ram, map, BOOT_MEMMAP_MAX);
    struct hvm_memmap_entry *mm = guest_ram_ptr(ram, BOOT_MEMMAP_ADDR, n * sizeof(*mm));
    struct hvm_start_info *si = guest_ram_ptr(ram, BOOT_START_INFO_ADDR, sizeof(*si));
    struct hvm_modlist_entry *mod = guest_ram_ptr(ram, BOOT_MODLIST_ADDR, sizeof(*mod));
    if (!mm || !si || !mod)
        return gw_error_set(err, ENOMEM, "guest RAM too small for the boot structures");
    for (unsigned i = 0; i < n; i++)
        mm[i] = (struct hvm_memmap_entry){ map[i].addr, map[i].size, map[i].type, 0 };
    memset(si, 0, sizeof(*si));
    memset(mod, 0, sizeof(*mod));
    si->magic = HVM_START_MAGIC;
    si->version = HVM_START_VERSION;
    si->cmdline_paddr = BOOT_CMDLINE_ADDR;
    si->memmap_paddr = BOOT_MEMMAP_ADDR;
    si->memmap_entries = n;
    si->rsdp_paddr = rsdp;
    if (initrd_size) {
        *mod = (struct hvm_modlist_entry){ initrd, initrd_size, 0, 0 };
        si->nr_modules = 1;
        si->modlist_paddr = BOOT_MODLIST_ADDR;
    }
    return 0;
}

int pvh_load(struct guest_ram *ram, const uint8_t *k, size_t len, const struct boot_input *in,
             struct boot_result *out, struct gw_error *err)
{
    uint32_t entry;
    if (!pvh_find_entry(k, len, &entry))
        return gw_error_set(err, ENOEXEC, "ELF has no usable PVH entry note "
                            "(XEN_ELFNOTE_PHYS32_ENTRY)");
    /* Everything the headers say is checked before any byte is written. */
    struct elf_info info;
    int r = elf_check(ram, k, len, &info, err);
    if (r < 0)
        return r;
    if (!elf_paddr_loaded(k, len, entry))
        return gw_error_set(err, ENOEXEC, "PVH entry 0x%x lies outside the loaded segments "
                            "(0x%llx-0x%llx)", entry, (unsigned long long)info.low,
                            (unsigned long long)info.high);
    if ((r = elf_load(ram, k, len, &info, err)) < 0)
        return r;
    if ((r = boot_place_cmdline(ram, in->cmdline, err)) < 0)
        return r;
    uint64_t initrd = 0, initrd_size = 0;
    uint64_t kend = info.high > BOOT_HIGH_MEM_START ? info.high : BOOT_HIGH_MEM_START;
    if ((r = boot_place_initrd(ram, in->initrd_path, UINT32_MAX, kend, &initrd, &initrd_size,
                               err)) < 0 ||
        (r = write_start_info(ram, initrd, initrd_size, in->rsdp_addr, err)) < 0 ||
        (r = boot_write_gdt(ram, BOOT_PVH, err)) < 0)
        return r;
    out->kind = BOOT_PVH;
    out->entry = entry;
    memset(&out->regs, 0, sizeof(out->regs));
    out->regs.rip = entry;
    out->regs.rbx = BOOT_START_INFO_ADDR;
    out->regs.rflags = 0x2;
    snprintf(out->desc, sizeof(out->desc), "PVH ELF%d, entry 0x%x, loaded 0x%llx-0x%llx%s",
             info.is64 ? 64 : 32, entry, (unsigned long long)info.low,
             (unsigned long long)info.high, initrd_size ? ", initrd" : "");
    return 0;
}
