/* The Linux boot protocol, 64-bit entry, with the payload decompressed on
 * the host (Documentation/arch/x86/boot.rst). The guest's own decompressor
 * would run in ring 0, which PVM hosts emulate hundreds of times slower.
 *
 * We load the vmlinux ELF inside the bzImage by physical address (p_paddr,
 * 16 MiB for x86-64 kernels) and enter it at e_entry translated to a
 * physical address: Linux links vmlinux with ENTRY(phys_startup_64), so
 * e_entry is already physical; an entry given as a virtual address inside
 * a segment is converted through that segment's p_vaddr -> p_paddr. That is
 * startup_64 of the decompressed kernel, which takes the same state as the
 * 64-bit protocol's entry (load address + 0x200) of the compressed one. */
#define LOG_PREFIX "linux"
#include "boot/bzimage.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "boot/boot_internal.h"
#include "boot/decompress.h"
#include "boot/elf_load.h"

_Static_assert(BOOT_ZERO_PAGE_ADDR + BP_SIZE <= BOOT_PML4_ADDR, "zero page overlaps page tables");

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

bool bzimage_detect(const uint8_t *k, size_t len)
{
    return len >= BZ_HEADER_MIN_END && memcmp(k + BZ_HEADER, "HdrS", 4) == 0 &&
           rd16(k + BZ_BOOT_FLAG) == 0xaa55;
}

bool linux_is_bzimage(const uint8_t *k, size_t len) { return bzimage_detect(k, len); }

int bzimage_parse(const uint8_t *k, size_t len, struct bzimage_info *bi, struct gw_error *err)
{
    memset(bi, 0, sizeof(*bi));
    if (!bzimage_detect(k, len))
        return gw_error_set(err, ENOEXEC, "not a Linux bzImage (no HdrS setup header)");
    bi->version = rd16(k + BZ_VERSION);
    if (bi->version < BZ_MIN_VERSION)
        return gw_error_set(err, ENOEXEC, "boot protocol %u.%02u is too old (need 2.12)",
                            bi->version >> 8, bi->version & 0xff);
    /* Every field read below lies inside the header the kernel declares:
     * the zero page gets the same header, so the kernel and this loader
     * see the same values. */
    bi->header_end = 0x202 + (size_t)k[BZ_JUMP + 1];
    if (bi->header_end < BZ_HEADER_MIN_END || bi->header_end > len)
        return gw_error_set(err, ENOEXEC, "bad setup header length (ends at 0x%zx; protocol "
                            "2.12 needs 0x%x, the file has 0x%zx bytes)", bi->header_end,
                            BZ_HEADER_MIN_END, len);
    if (bi->header_end > BZ_HEADER_MAX_END)
        bi->header_end = BZ_HEADER_MAX_END;
    bi->setup_sects = k[BZ_SETUP_SECTS] ? k[BZ_SETUP_SECTS] : 4;
    bi->setup_size = (bi->setup_sects + 1ULL) * 512;
    bi->loadflags = k[BZ_LOADFLAGS];
    bi->xloadflags = rd16(k + BZ_XLOADFLAGS);
    bi->relocatable = k[BZ_RELOCATABLE];
    bi->kernel_alignment = rd32(k + BZ_KERNEL_ALIGNMENT);
    bi->pref_address = rd64(k + BZ_PREF_ADDRESS);
    bi->init_size = rd32(k + BZ_INIT_SIZE);
    bi->cmdline_size = rd32(k + BZ_CMDLINE_SIZE);
    bi->initrd_addr_max = rd32(k + BZ_INITRD_ADDR_MAX);
    bi->payload_offset = rd32(k + BZ_PAYLOAD_OFFSET);
    bi->payload_length = rd32(k + BZ_PAYLOAD_LENGTH);
    if (!(bi->xloadflags & XLF_KERNEL_64))
        return gw_error_set(err, ENOEXEC, "kernel has no 64-bit entry point (xloadflags 0x%x)",
                            bi->xloadflags);
    if (bi->setup_size > len || bi->payload_offset > len - bi->setup_size ||
        bi->payload_length > len - bi->setup_size - bi->payload_offset ||
        bi->payload_length == 0)
        return gw_error_set(err, ENOEXEC, "bzImage payload (offset %u, %u bytes) lies outside "
                            "the file (truncated?)", bi->payload_offset, bi->payload_length);
    bi->compression = decompress_format(k + bi->setup_size + bi->payload_offset,
                                        bi->payload_length);
    return 0;
}

int bzimage_extract(const uint8_t *k, size_t len, const struct bzimage_info *bi,
                    uint8_t **vmlinux, size_t *vlen, struct gw_error *err)
{
    (void)len; /* bounds checked by bzimage_parse */
    return decompress_payload(k + bi->setup_size + bi->payload_offset, bi->payload_length,
                              BZ_MAX_VMLINUX, vmlinux, vlen, err);
}

/* Identity-map the first 4 GiB with 2 MiB pages: the kernel, the zero page,
 * the command line and the initrd are all below 4 GiB. */
static int build_page_tables(struct guest_ram *ram, struct gw_error *err)
{
    uint64_t *pml4 = guest_ram_ptr(ram, BOOT_PML4_ADDR, 4096);
    uint64_t *pdpt = guest_ram_ptr(ram, BOOT_PDPT_ADDR, 4096);
    uint64_t *pd = guest_ram_ptr(ram, BOOT_PD_ADDR, 4 * 4096);
    if (!pml4 || !pdpt || !pd)
        return gw_error_set(err, ENOMEM, "guest RAM too small for page tables");
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    pml4[0] = BOOT_PDPT_ADDR | 0x3;            /* present, writable */
    for (unsigned i = 0; i < 4; i++)
        pdpt[i] = (BOOT_PD_ADDR + i * 4096ULL) | 0x3;
    for (unsigned i = 0; i < 4 * 512; i++)
        pd[i] = ((uint64_t)i << 21) | 0x83;    /* present, writable, 2 MiB page */
    return 0;
}

static int fill_zero_page(struct guest_ram *ram, const uint8_t *k, const struct bzimage_info *bi,
                          const struct boot_input *in, uint64_t initrd, uint64_t initrd_size,
                          struct gw_error *err)
{
    uint8_t *zp = guest_ram_ptr(ram, BOOT_ZERO_PAGE_ADDR, BP_SIZE);
    if (!zp)
        return gw_error_set(err, ENOMEM, "guest RAM too small for boot_params");
    memset(zp, 0, BP_SIZE);
    /* The setup header as the kernel wrote it, then the loader's fields. */
    memcpy(zp + BZ_SETUP_SECTS, k + BZ_SETUP_SECTS, bi->header_end - BZ_SETUP_SECTS);
    zp[BZ_TYPE_OF_LOADER] = 0xff;              /* undefined boot loader */
    zp[BZ_LOADFLAGS] |= LOADFLAG_CAN_USE_HEAP | LOADFLAG_LOADED_HIGH;
    zp[BZ_HEAP_END_PTR] = 0x00;
    zp[BZ_HEAP_END_PTR + 1] = 0xfe;            /* 0xfe00 */
    wr32(zp + BZ_CMD_LINE_PTR, BOOT_CMDLINE_ADDR);
    wr32(zp + BP_EXT_CMD_LINE_PTR, 0);
    wr32(zp + BZ_RAMDISK_IMAGE, (uint32_t)initrd);
    wr32(zp + BZ_RAMDISK_SIZE, (uint32_t)initrd_size);
    wr32(zp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(initrd >> 32));
    wr32(zp + BP_EXT_RAMDISK_SIZE, (uint32_t)(initrd_size >> 32));
    memcpy(zp + BP_ACPI_RSDP_ADDR, &in->rsdp_addr, 8);
    struct e820_entry map[BP_E820_MAX];
    unsigned n = boot_build_e820(ram, map, BP_E820_MAX);
    zp[BP_E820_ENTRIES] = (uint8_t)n;
    for (unsigned i = 0; i < n; i++) {
        uint8_t *e = zp + BP_E820_TABLE + i * 20;  /* packed {u64 addr, size; u32 type} */
        memcpy(e, &map[i].addr, 8);
        memcpy(e + 8, &map[i].size, 8);
        memcpy(e + 16, &map[i].type, 4);
    }
    return 0;
}

/* Checked whole before a byte is written: the entry inside a segment and
 * every segment inside the identity map the kernel starts on. */
static int load_vmlinux(struct guest_ram *ram, const uint8_t *v, size_t vlen,
                        struct elf_info *info, struct gw_error *err)
{
    int r = elf_check(ram, v, vlen, info, err);
    if (r == 0 && info->entry_phys == UINT64_MAX)
        r = gw_error_set(err, ENOEXEC, "entry point 0x%llx is outside its segments",
                         (unsigned long long)info->entry);
    if (r == 0 && info->high > GUEST_RAM_HIGH_BASE)
        r = gw_error_set(err, EINVAL, "segments end at 0x%llx, above the 4 GiB that the boot "
                         "page tables map", (unsigned long long)info->high);
    if (r == 0)
        r = elf_load(ram, v, vlen, info, err);
    if (r < 0)
        gw_error_prefix(err, "decompressed kernel");
    return r;
}

int linux_load(struct guest_ram *ram, const uint8_t *k, size_t len, const struct boot_input *in,
               struct boot_result *out, struct gw_error *err)
{
    struct bzimage_info bi;
    int r = bzimage_parse(k, len, &bi, err);
    if (r < 0)
        return r;
    size_t cmdlen = in->cmdline ? strlen(in->cmdline) : 0;
    if (cmdlen > bi.cmdline_size)
        return gw_error_set(err, E2BIG, "command line (%zu bytes) longer than the kernel "
                            "accepts (%u)", cmdlen, bi.cmdline_size);
    uint8_t *vmlinux = NULL;
    size_t vlen = 0;
    struct elf_info info;
    if ((r = bzimage_extract(k, len, &bi, &vmlinux, &vlen, err)) < 0 ||
        (r = load_vmlinux(ram, vmlinux, vlen, &info, err)) < 0 ||
        (r = boot_place_cmdline(ram, in->cmdline, err)) < 0)
        goto out;
    /* The kernel uses init_size bytes from its load address (bss, brk,
     * early page tables): the initrd goes above that. */
    uint64_t kend = info.low + bi.init_size > info.high ? info.low + bi.init_size : info.high;
    uint64_t initrd = 0, initrd_size = 0;
    if ((r = boot_place_initrd(ram, in->initrd_path, bi.initrd_addr_max, kend, &initrd,
                               &initrd_size, err)) < 0 ||
        (r = fill_zero_page(ram, k, &bi, in, initrd, initrd_size, err)) < 0 ||
        (r = build_page_tables(ram, err)) < 0 ||
        (r = boot_write_gdt(ram, BOOT_LINUX64, err)) < 0)
        goto out;
    out->kind = BOOT_LINUX64;
    out->entry = info.entry_phys;
    memset(&out->regs, 0, sizeof(out->regs));
    out->regs.rip = info.entry_phys;
    out->regs.rsi = BOOT_ZERO_PAGE_ADDR;
    out->regs.rflags = 0x2;
    snprintf(out->desc, sizeof(out->desc),
             "Linux bzImage (boot protocol %u.%02u, %s payload %u KiB, vmlinux %zu KiB at "
             "0x%llx), entry 0x%llx", bi.version >> 8, bi.version & 0xff, bi.compression ? bi.compression : "?",
             bi.payload_length >> 10, vlen >> 10, (unsigned long long)info.low,
             (unsigned long long)info.entry_phys);
out:
    free(vmlinux);
    return r;
}
