/* The Linux boot protocol, 64-bit entry, with the payload decompressed on
 * the host (Documentation/arch/x86/boot.rst). */
#define LOG_PREFIX "linux"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "boot/boot_internal.h"
#include "boot/decompress.h"
#include "boot/elf_load.h"

/* Offsets in the real-mode header / boot_params ("zero page"). */
#define HDR_SETUP_SECTS     0x1f1
#define HDR_BOOT_FLAG       0x1fe
#define HDR_JUMP            0x200
#define HDR_MAGIC           0x202
#define HDR_VERSION         0x206
#define HDR_TYPE_OF_LOADER  0x210
#define HDR_LOADFLAGS       0x211
#define HDR_RAMDISK_IMAGE   0x218
#define HDR_RAMDISK_SIZE    0x21c
#define HDR_HEAP_END_PTR    0x224
#define HDR_CMD_LINE_PTR    0x228
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_XLOADFLAGS      0x236
#define HDR_CMDLINE_SIZE    0x238
#define HDR_PAYLOAD_OFFSET  0x248
#define HDR_PAYLOAD_LENGTH  0x24c
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES      0x1e8
#define BP_E820_TABLE        0x2d0
#define BP_E820_MAX          128

#define LOADFLAG_CAN_USE_HEAP 0x80
#define XLF_KERNEL_64         0x01
#define MAX_VMLINUX           (512u << 20)

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static void wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

bool linux_is_bzimage(const uint8_t *k, size_t len)
{
    return len >= 0x250 && memcmp(k + HDR_MAGIC, "HdrS", 4) == 0 && rd16(k + HDR_BOOT_FLAG) == 0xaa55;
}

/* Identity-map the first 4 GiB with 2 MiB pages. */
static int build_page_tables(struct guest_ram *ram, struct gw_error *err)
{
    uint64_t *pml4 = guest_ram_ptr(ram, BOOT_PML4_ADDR, 4096);
    uint64_t *pdpt = guest_ram_ptr(ram, BOOT_PDPT_ADDR, 4096);
    uint64_t *pd = guest_ram_ptr(ram, BOOT_PD_ADDR, 4 * 4096);
    if (!pml4 || !pdpt || !pd)
        return gw_error_set(err, ENOMEM, "guest RAM too small for page tables");
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    pml4[0] = BOOT_PDPT_ADDR | 0x3;
    for (unsigned i = 0; i < 4; i++)
        pdpt[i] = (BOOT_PD_ADDR + i * 4096ULL) | 0x3;
    for (unsigned i = 0; i < 4 * 512; i++)
        pd[i] = ((uint64_t)i << 21) | 0x83; /* present, writable, 2 MiB */
    return 0;
}

static int extract(const uint8_t *k, size_t len, uint8_t **vmlinux, size_t *vlen,
                   const char **fmt, struct gw_error *err)
{
    unsigned setup_sects = k[HDR_SETUP_SECTS] ? k[HDR_SETUP_SECTS] : 4;
    uint64_t setup_size = (setup_sects + 1ULL) * 512;
    uint32_t poff = rd32(k + HDR_PAYLOAD_OFFSET), plen = rd32(k + HDR_PAYLOAD_LENGTH);
    if (setup_size > len || poff > len - setup_size || plen > len - setup_size - poff || plen == 0)
        return gw_error_set(err, ENOEXEC, "bzImage payload lies outside the file (truncated?)");
    const uint8_t *payload = k + setup_size + poff;
    *fmt = decompress_format(payload, plen);
    return decompress_payload(payload, plen, MAX_VMLINUX, vmlinux, vlen, err);
}

static int fill_zero_page(struct guest_ram *ram, const uint8_t *k, uint64_t initrd,
                          uint64_t initrd_size, size_t cmdline_len, struct gw_error *err)
{
    uint8_t *zp = guest_ram_ptr(ram, BOOT_ZERO_PAGE_ADDR, 4096);
    if (!zp)
        return gw_error_set(err, ENOMEM, "guest RAM too small");
    memset(zp, 0, 4096);
    /* Copy the setup header as the kernel wrote it. */
    size_t hdr_end = 0x202 + k[HDR_JUMP + 1];
    if (hdr_end > 0x280)
        hdr_end = 0x280;
    memcpy(zp + HDR_SETUP_SECTS, k + HDR_SETUP_SECTS, hdr_end - HDR_SETUP_SECTS);
    zp[HDR_TYPE_OF_LOADER] = 0xff;
    zp[HDR_LOADFLAGS] |= LOADFLAG_CAN_USE_HEAP;
    zp[HDR_HEAP_END_PTR] = 0x00;
    zp[HDR_HEAP_END_PTR + 1] = 0xfe; /* 0xfe00 */
    uint32_t maxcmd = rd16(k + HDR_VERSION) >= 0x206 ? rd32(k + HDR_CMDLINE_SIZE) : 255;
    if (cmdline_len > maxcmd)
        return gw_error_set(err, E2BIG, "command line longer than the kernel accepts (%u)", maxcmd);
    wr32(zp + HDR_CMD_LINE_PTR, BOOT_CMDLINE_ADDR);
    wr32(zp + BP_EXT_CMD_LINE_PTR, 0);
    wr32(zp + HDR_RAMDISK_IMAGE, (uint32_t)initrd);
    wr32(zp + HDR_RAMDISK_SIZE, (uint32_t)initrd_size);
    wr32(zp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(initrd >> 32));
    wr32(zp + BP_EXT_RAMDISK_SIZE, (uint32_t)(initrd_size >> 32));
    struct e820_entry map[BP_E820_MAX];
    unsigned n = boot_build_e820(ram, map, BP_E820_MAX);
    zp[BP_E820_ENTRIES] = (uint8_t)n;
    for (unsigned i = 0; i < n; i++) {
        uint8_t *e = zp + BP_E820_TABLE + i * 20;
        memcpy(e, &map[i].addr, 8);
        memcpy(e + 8, &map[i].size, 8);
        memcpy(e + 16, &map[i].type, 4);
    }
    return 0;
}

int linux_load(struct guest_ram *ram, const uint8_t *k, size_t len, const struct boot_input *in,
               struct boot_result *out, struct gw_error *err)
{
    uint16_t version = rd16(k + HDR_VERSION);
    if (version < 0x20c)
        return gw_error_set(err, ENOEXEC, "boot protocol %u.%02u is too old (need 2.12)",
                            version >> 8, version & 0xff);
    if (!(rd16(k + HDR_XLOADFLAGS) & XLF_KERNEL_64))
        return gw_error_set(err, ENOEXEC, "kernel has no 64-bit entry point");
    uint8_t *vmlinux = NULL;
    size_t vlen = 0;
    const char *fmt = "?";
    int r = extract(k, len, &vmlinux, &vlen, &fmt, err);
    if (r < 0)
        return r;
    struct elf_info info;
    if ((r = elf_load(ram, vmlinux, vlen, &info, err)) < 0) {
        gw_error_prefix(err, "decompressed kernel");
        goto out;
    }
    if (info.entry_phys == UINT64_MAX) {
        r = gw_error_set(err, ENOEXEC, "kernel entry point is outside its segments");
        goto out;
    }
    if ((r = boot_place_cmdline(ram, in->cmdline, err)) < 0)
        goto out;
    uint64_t initrd = 0, initrd_size = 0;
    uint32_t initrd_max = rd32(k + HDR_INITRD_ADDR_MAX);
    if ((r = boot_place_initrd(ram, in->initrd_path, initrd_max ? initrd_max : 0x37ffffff,
                               info.high, &initrd, &initrd_size, err)) < 0)
        goto out;
    size_t cmdlen = in->cmdline ? strlen(in->cmdline) : 0;
    if ((r = fill_zero_page(ram, k, initrd, initrd_size, cmdlen, err)) < 0 ||
        (r = build_page_tables(ram, err)) < 0)
        goto out;
    uint64_t *gdt = guest_ram_ptr(ram, BOOT_GDT_ADDR, 6 * 8);
    gdt[0] = gdt[1] = 0;
    gdt[2] = 0x00cf9b000000ffffULL;
    gdt[3] = 0x00cf93000000ffffULL;
    gdt[4] = 0x00008b0000000067ULL;
    gdt[5] = 0x00af9b000000ffffULL;
    out->kind = BOOT_LINUX64;
    out->entry = info.entry_phys;
    memset(&out->regs, 0, sizeof(out->regs));
    out->regs.rip = info.entry_phys;
    out->regs.rsi = BOOT_ZERO_PAGE_ADDR;
    out->regs.rflags = 0x2;
    snprintf(out->desc, sizeof(out->desc),
             "Linux bzImage (boot protocol %u.%02u, %s payload, %zu bytes vmlinux), entry 0x%llx",
             version >> 8, version & 0xff, fmt, vlen, (unsigned long long)info.entry_phys);
out:
    free(vmlinux);
    return r;
}
