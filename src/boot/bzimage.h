/* The Linux bzImage: its setup header (Documentation/arch/x86/boot.rst) and
 * the vmlinux ELF inside it. Split out of the loader so that the header
 * parsing and the payload extraction are tested on their own.
 * Returns: 0 or -errno + err. */
#ifndef GW_BOOT_BZIMAGE_H
#define GW_BOOT_BZIMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Offsets in the bzImage file, which are also the offsets in boot_params
 * (the "zero page") where the setup header is copied. */
#define BZ_SETUP_SECTS      0x1f1
#define BZ_BOOT_FLAG        0x1fe   /* 0xaa55 */
#define BZ_JUMP             0x200   /* jmp rel8: byte 0x201 = header bytes after 0x202 */
#define BZ_HEADER           0x202   /* "HdrS" */
#define BZ_VERSION          0x206
#define BZ_TYPE_OF_LOADER   0x210
#define BZ_LOADFLAGS        0x211
#define BZ_RAMDISK_IMAGE    0x218
#define BZ_RAMDISK_SIZE     0x21c
#define BZ_HEAP_END_PTR     0x224
#define BZ_CMD_LINE_PTR     0x228
#define BZ_INITRD_ADDR_MAX  0x22c
#define BZ_KERNEL_ALIGNMENT 0x230
#define BZ_RELOCATABLE      0x234
#define BZ_XLOADFLAGS       0x236
#define BZ_CMDLINE_SIZE     0x238
#define BZ_PAYLOAD_OFFSET   0x248
#define BZ_PAYLOAD_LENGTH   0x24c
#define BZ_PREF_ADDRESS     0x258
#define BZ_INIT_SIZE        0x260
#define BZ_HEADER_MIN_END   0x264   /* the header (and file) hold at least this much: init_size */
#define BZ_HEADER_MAX_END   0x290   /* boot_params: setup header area ends here */
/* boot_params fields outside the setup header */
#define BP_ACPI_RSDP_ADDR    0x070   /* u64, boot protocol 2.14 */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES      0x1e8
#define BP_SENTINEL          0x1ef
#define BP_E820_TABLE        0x2d0
#define BP_E820_MAX          128
#define BP_SIZE              4096

#define LOADFLAG_LOADED_HIGH  0x01
#define LOADFLAG_CAN_USE_HEAP 0x80
#define XLF_KERNEL_64         0x01
#define XLF_CAN_BE_LOADED_ABOVE_4G 0x02

#define BZ_MIN_VERSION        0x20c /* 2.12: xloadflags, the 64-bit entry */
#define BZ_MAX_VMLINUX        (512u << 20)

struct bzimage_info {
    uint16_t version;          /* boot protocol, 0x20f = 2.15 */
    unsigned setup_sects;      /* 0 in the file means 4 */
    uint64_t setup_size;       /* (setup_sects + 1) * 512: the protected-mode code starts here */
    size_t header_end;         /* end of the setup header (0x202 + byte 0x201) */
    uint8_t loadflags;
    uint16_t xloadflags;
    uint8_t relocatable;
    uint32_t kernel_alignment;
    uint64_t pref_address;
    uint32_t init_size;        /* memory the kernel needs from its load address */
    uint32_t cmdline_size;     /* longest command line, without the NUL */
    uint32_t initrd_addr_max;  /* highest byte address an initrd may use */
    uint32_t payload_offset;   /* from the start of the protected-mode code */
    uint32_t payload_length;
    const char *compression;   /* decompress_format() of the payload; NULL unknown */
};

/* True if the file carries the bzImage signatures (cheap, for detection). */
bool bzimage_detect(const uint8_t *k, size_t len);
/* Parse and check the setup header: protocol >= 2.12 with a 64-bit entry,
 * payload inside the file. */
int bzimage_parse(const uint8_t *k, size_t len, struct bzimage_info *bi, struct gw_error *err);
/* Decompress the payload: a malloc'd vmlinux (caller frees), at most
 * BZ_MAX_VMLINUX bytes. */
int bzimage_extract(const uint8_t *k, size_t len, const struct bzimage_info *bi,
                    uint8_t **vmlinux, size_t *vlen, struct gw_error *err);

#endif
