/* libFuzzer target: bytes as a kernel file through boot_load() — format
 * detection, the PVH ELF loader, the bzImage setup header, payload
 * decompression (every format), initrd placement, the command line and the
 * boot structures — into a 32 MiB guest RAM laid out by guest_ram_layout()
 * and mapped between two PROT_NONE guard pages (boot_load needs no KVM: a
 * struct guest_ram with its layout and host mapping is all it touches).
 *   byte 0: bits 0-1 the initrd: none, a sparse memfd of (bytes 1-2) * 512
 *           bytes, one of 4 KiB, an empty one; bits 2-3 the command line:
 *           none, short, 300 bytes, the longest that fits; bit 4 an RSDP
 *           address; bit 5 the kernel read from a file (a memfd) rather
 *           than from memory.
 *   bytes 1-2: the initrd size in 512-byte units; the rest is the kernel.
 * Oracles: a refusal carries an errno and a message naming the kernel; no
 * write lands outside guest RAM (guard pages) nor in the reserved area
 * 0x9fc00..1 MiB where the VMM keeps its ACPI tables (a pattern stands in
 * for them); an accepted kernel has every PT_LOAD segment in RAM byte for
 * byte with its bss zeroed, its entry inside one of them, the command line
 * at its address, the memory map of boot_build_e820, and the initrd
 * page-aligned above 1 MiB and the kernel, under the end of low RAM (and
 * for Linux under initrd_addr_max); a Linux kernel lies under 4 GiB and
 * its zero page carries the setup header and the loader's fields. */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "boot/boot.h"
#include "boot/bzimage.h"
#include "boot/elf_load.h"
#include "boot/pvh_abi.h"
#include "common/log.h"
#include "fuzz_util.h"

#define RAM_SIZE (32ULL << 20)
#define PAGE     4096ULL

static struct guest_ram ram;
static int initrd_fd = -1, kernel_fd = -1;
static char initrd_path[64], kernel_path[64];
static char cmdline[BOOT_CMDLINE_MAX];
#define RESERVED_LEN (BOOT_HIGH_MEM_START - BOOT_EBDA_START)
static uint8_t reserved[RESERVED_LEN];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    gw_log_set_level(GW_LOG_ERROR);
    uint8_t *map = mmap(NULL, RAM_SIZE + 2 * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED || mprotect(map, PAGE, PROT_NONE) < 0 ||
        mprotect(map + PAGE + RAM_SIZE, PAGE, PROT_NONE) < 0)
        abort();
    guest_ram_layout(&ram, RAM_SIZE);
    ram.host = map + PAGE;
    ram.memfd = ram.pagemap_fd = -1;
    initrd_fd = memfd_create("fuzz-initrd", MFD_CLOEXEC);
    kernel_fd = memfd_create("fuzz-kernel", MFD_CLOEXEC);
    if (initrd_fd < 0 || kernel_fd < 0)
        abort();
    snprintf(initrd_path, sizeof(initrd_path), "/proc/self/fd/%d", initrd_fd);
    snprintf(kernel_path, sizeof(kernel_path), "/proc/self/fd/%d", kernel_fd);
    for (size_t i = 0; i < RESERVED_LEN; i++) /* stands in for the ACPI tables */
        reserved[i] = (uint8_t)(i * 7 + 1);
    return 0;
}

static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static void fill_reserved(void)
{
    memcpy(ram.host + BOOT_EBDA_START, reserved, RESERVED_LEN);
}

static void check_reserved(void)
{
    FUZZ_CHECK(memcmp(ram.host + BOOT_EBDA_START, reserved, RESERVED_LEN) == 0);
}

static const char *pick_initrd(uint8_t mode, size_t units)
{
    size_t size = mode == 1 ? units * 512 : mode == 2 ? 4096 : 0;
    if (mode == 0)
        return NULL;
    FUZZ_CHECK(ftruncate(initrd_fd, 0) == 0 && ftruncate(initrd_fd, (off_t)size) == 0);
    if (size) /* something to recognise at both ends */
        FUZZ_CHECK(pwrite(initrd_fd, "<", 1, 0) == 1 &&
                   pwrite(initrd_fd, ">", 1, (off_t)size - 1) == 1);
    return initrd_path;
}

static const char *pick_cmdline(uint8_t mode)
{
    static const size_t lens[4] = { 0, 20, 300, BOOT_CMDLINE_MAX - 1 };
    if (mode == 0)
        return NULL;
    memset(cmdline, 'c', lens[mode]);
    cmdline[lens[mode]] = 0;
    return cmdline;
}

/* Every PT_LOAD segment of an accepted ELF is in RAM as the file says;
 * `entry` (physical) lies inside one. Returns the end of the highest. */
static uint64_t check_segments(const uint8_t *k, size_t len, uint64_t entry)
{
    struct elf_info info;
    FUZZ_CHECK(elf_parse(k, len, &info, NULL) == 0);
    FUZZ_CHECK(elf_paddr_loaded(k, len, entry));
    Elf64_Ehdr eh64;
    Elf32_Ehdr eh32;
    memcpy(&eh64, k, info.is64 ? sizeof(eh64) : 0);
    memcpy(&eh32, k, info.is64 ? 0 : sizeof(eh32));
    unsigned n = info.is64 ? eh64.e_phnum : eh32.e_phnum;
    uint64_t phoff = info.is64 ? eh64.e_phoff : eh32.e_phoff;
    for (unsigned i = 0; i < n; i++) {
        uint64_t off, paddr, filesz, memsz;
        uint32_t type;
        if (info.is64) {
            Elf64_Phdr ph;
            memcpy(&ph, k + phoff + i * sizeof(ph), sizeof(ph));
            type = ph.p_type, off = ph.p_offset, paddr = ph.p_paddr;
            filesz = ph.p_filesz, memsz = ph.p_memsz;
        } else {
            Elf32_Phdr ph;
            memcpy(&ph, k + phoff + i * sizeof(ph), sizeof(ph));
            type = ph.p_type, off = ph.p_offset, paddr = ph.p_paddr;
            filesz = ph.p_filesz, memsz = ph.p_memsz;
        }
        if (type != PT_LOAD || memsz == 0)
            continue;
        FUZZ_CHECK(paddr >= BOOT_LOW_END && paddr + memsz <= RAM_SIZE);
        FUZZ_CHECK(paddr >= BOOT_HIGH_MEM_START || paddr + memsz <= BOOT_EBDA_START);
        FUZZ_CHECK(memcmp(ram.host + paddr, k + off, filesz) == 0);
        const uint8_t *bss = ram.host + paddr + filesz;
        FUZZ_CHECK(memsz == filesz || (bss[0] == 0 && memcmp(bss, bss + 1, memsz - filesz - 1) == 0));
    }
    return info.high;
}

static void check_initrd(uint64_t at, uint64_t size, uint64_t above, uint64_t limit)
{
    if (!size)
        return;
    off_t want = lseek(initrd_fd, 0, SEEK_END);
    FUZZ_CHECK(want > 0 && (uint64_t)want == size);
    FUZZ_CHECK(at % PAGE == 0 && at >= BOOT_HIGH_MEM_START && at >= above);
    FUZZ_CHECK(at + size <= RAM_SIZE && at + size <= limit);
    FUZZ_CHECK(ram.host[at] == '<' && ram.host[at + size - 1] == '>');
}

static void check_cmdline(const char *cmd)
{
    FUZZ_CHECK(strcmp((const char *)ram.host + BOOT_CMDLINE_ADDR, cmd ? cmd : "") == 0);
}

static void check_pvh(const uint8_t *k, size_t len, const struct boot_result *res,
                      const struct boot_input *in)
{
    FUZZ_CHECK(res->regs.rbx == BOOT_START_INFO_ADDR && res->regs.rip == res->entry);
    uint64_t high = check_segments(k, len, res->entry);
    const struct hvm_start_info *si = (const void *)(ram.host + BOOT_START_INFO_ADDR);
    FUZZ_CHECK(si->magic == HVM_START_MAGIC && si->version == 1);
    FUZZ_CHECK(si->cmdline_paddr == BOOT_CMDLINE_ADDR && si->rsdp_paddr == in->rsdp_addr);
    struct e820_entry map[BOOT_MEMMAP_MAX];
    unsigned n = boot_build_e820(&ram, map, BOOT_MEMMAP_MAX);
    FUZZ_CHECK(si->memmap_entries == n && si->memmap_paddr == BOOT_MEMMAP_ADDR);
    const struct hvm_memmap_entry *mm = (const void *)(ram.host + BOOT_MEMMAP_ADDR);
    for (unsigned i = 0; i < n; i++)
        FUZZ_CHECK(mm[i].addr == map[i].addr && mm[i].size == map[i].size &&
                   mm[i].type == map[i].type);
    FUZZ_CHECK(si->nr_modules == (in->initrd_path ? 1u : 0u));
    if (si->nr_modules) {
        const struct hvm_modlist_entry *mod = (const void *)(ram.host + si->modlist_paddr);
        check_initrd(mod->paddr, mod->size, high, RAM_SIZE);
    }
}

static void check_linux(const uint8_t *k, size_t len, const struct boot_result *res,
                        const struct boot_input *in)
{
    FUZZ_CHECK(res->regs.rsi == BOOT_ZERO_PAGE_ADDR && res->regs.rip == res->entry);
    struct bzimage_info bi;
    uint8_t *v;
    size_t vlen;
    FUZZ_CHECK(bzimage_parse(k, len, &bi, NULL) == 0);
    FUZZ_CHECK(bzimage_extract(k, len, &bi, &v, &vlen, NULL) == 0);
    struct elf_info info;
    FUZZ_CHECK(elf_parse(v, vlen, &info, NULL) == 0 && info.entry_phys == res->entry);
    uint64_t high = check_segments(v, vlen, res->entry);
    free(v);
    FUZZ_CHECK(high <= GUEST_RAM_HIGH_BASE);
    const uint8_t *zp = ram.host + BOOT_ZERO_PAGE_ADDR;
    FUZZ_CHECK(memcmp(zp + BZ_HEADER, "HdrS", 4) == 0 && zp[BZ_TYPE_OF_LOADER] == 0xff);
    FUZZ_CHECK(memcmp(zp + BZ_INIT_SIZE, k + BZ_INIT_SIZE, 4) == 0);
    FUZZ_CHECK(rd32(zp + BZ_CMD_LINE_PTR) == BOOT_CMDLINE_ADDR);
    FUZZ_CHECK(!in->cmdline || strlen(in->cmdline) <= bi.cmdline_size);
    uint64_t at = rd32(zp + BZ_RAMDISK_IMAGE) | (uint64_t)rd32(zp + BP_EXT_RAMDISK_IMAGE) << 32;
    uint64_t size = rd32(zp + BZ_RAMDISK_SIZE) | (uint64_t)rd32(zp + BP_EXT_RAMDISK_SIZE) << 32;
    FUZZ_CHECK((size != 0) == (in->initrd_path != NULL));
    uint64_t kend = info.low + bi.init_size > high ? info.low + bi.init_size : high;
    check_initrd(at, size, kend, (uint64_t)bi.initrd_addr_max + 1);
    struct e820_entry map[BP_E820_MAX];
    unsigned n = boot_build_e820(&ram, map, BP_E820_MAX);
    FUZZ_CHECK(zp[BP_E820_ENTRIES] == n);
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *e = zp + BP_E820_TABLE + i * 20;
        FUZZ_CHECK(memcmp(e, &map[i].addr, 8) == 0 && memcmp(e + 8, &map[i].size, 8) == 0 &&
                   memcmp(e + 16, &map[i].type, 4) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    uint8_t opt = data[0];
    size_t units = data[1] | (size_t)data[2] << 8;
    const uint8_t *k = data + 3;
    size_t len = size - 3;
    struct boot_input in = { .kernel_buf = k, .kernel_len = len,
                             .initrd_path = pick_initrd(opt & 3, units),
                             .cmdline = pick_cmdline((opt >> 2) & 3),
                             .rsdp_addr = opt & 0x10 ? BOOT_ACPI_ADDR : 0 };
    if (opt & 0x20) { /* through boot_read_file */
        FUZZ_CHECK(ftruncate(kernel_fd, 0) == 0);
        FUZZ_CHECK(len == 0 || pwrite(kernel_fd, k, len, 0) == (ssize_t)len);
        in.kernel_buf = NULL;
        in.kernel_path = kernel_path;
    }
    fill_reserved();
    struct boot_result res;
    struct gw_error err;
    gw_error_init(&err);
    int r = boot_load(&ram, &in, &res, &err);
    check_reserved();
    if (r < 0) {
        fuzz_check_refused(r, &err);
        FUZZ_CHECK(strncmp(err.msg, "kernel ", 7) == 0);
        return 0;
    }
    FUZZ_CHECK(res.regs.rflags == 0x2 && res.entry < RAM_SIZE);
    check_cmdline(in.cmdline);
    if (res.kind == BOOT_PVH)
        check_pvh(k, len, &res, &in);
    else
        check_linux(k, len, &res, &in);
    return 0;
}
