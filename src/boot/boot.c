/* Format detection and what both protocols share: the e820 map, the
 * command line, the initrd, the GDT and the entry-mode special registers. */
#define LOG_PREFIX "boot"
#include "boot/boot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot/boot_internal.h"
#include "boot/elf_load.h"
#include "common/log.h"

#define CR0_PE   0x1ULL
#define CR0_ET   0x10ULL
#define CR0_PG   0x80000000ULL
#define CR4_PAE  0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL

_Static_assert(BOOT_CMDLINE_ADDR >= BOOT_GDT_ADDR + BOOT_GDT_ENTRIES * 8, "GDT overlaps cmdline");
_Static_assert(BOOT_CMDLINE_ADDR + BOOT_CMDLINE_MAX <= BOOT_START_INFO_ADDR, "cmdline too big");
_Static_assert(BOOT_PD_ADDR + 4 * 4096 <= BOOT_LOW_END, "page tables overlap the kernel area");

unsigned boot_build_e820(const struct guest_ram *ram, struct e820_entry *out, unsigned max)
{
    unsigned n = 0;
    uint64_t low_end = ram->regions[0].size;
#define ADD(a, s, t) do { if (n < max) out[n++] = (struct e820_entry){ (a), (s), (t) }; } while (0)
    ADD(0, low_end < BOOT_EBDA_START ? low_end : BOOT_EBDA_START, E820_RAM);
    ADD(BOOT_EBDA_START, BOOT_HIGH_MEM_START - BOOT_EBDA_START, E820_RESERVED);
    if (low_end > BOOT_HIGH_MEM_START)
        ADD(BOOT_HIGH_MEM_START, low_end - BOOT_HIGH_MEM_START, E820_RAM);
    /* The top of the 32-bit hole: IOAPIC, HPET, LAPIC, KVM's TSS and
     * identity-map pages, the BIOS flash window. The rest of the hole is
     * left out of the map: Linux puts PCI MMIO in the largest gap. */
    ADD(BOOT_MMIO_RESERVED, GUEST_RAM_HIGH_BASE - BOOT_MMIO_RESERVED, E820_RESERVED);
    for (unsigned i = 1; i < ram->nr_regions; i++)
        ADD(ram->regions[i].gpa, ram->regions[i].size, E820_RAM);
#undef ADD
    return n;
}

static int open_regular(const char *path, uint64_t max, int *fd, uint64_t *size,
                        struct gw_error *err)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
     * below); it changes nothing for a regular file. */
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (*fd < 0)
        return gw_error_set(err, errno, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(*fd);
        return gw_error_set(err, EINVAL, "'%s' is not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(*fd);
        return gw_error_set(err, EFBIG, "'%s' is too large (%lld bytes)", path,
                            (long long)st.st_size);
    }
    *size = (uint64_t)st.st_size;
    return 0;
}

static int read_all(int fd, const char *path, uint8_t *dst, uint64_t len, struct gw_error *err)
{
    uint64_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, dst + done, len - done, (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            return gw_error_set(err, e, "reading '%s': %s", path,
                                r < 0 ? strerror(e) : "file shrank while being read");
        }
        done += (uint64_t)r;
    }
    return 0;
}

int boot_read_file(const char *path, uint8_t **buf, size_t *len, size_t max, struct gw_error *err)
{
    int fd;
    uint64_t size;
    int r = open_regular(path, max, &fd, &size, err);
    if (r < 0)
        return r;
    *buf = malloc(size ? size : 1);
    if (!*buf) {
        close(fd);
        return gw_error_set(err, ENOMEM, "out of memory reading '%s'", path);
    }
    if ((r = read_all(fd, path, *buf, size, err)) < 0) {
        free(*buf);
        *buf = NULL;
    }
    close(fd);
    *len = (size_t)size;
    return r;
}

int boot_place_cmdline(struct guest_ram *ram, const char *cmdline, struct gw_error *err)
{
    const char *s = cmdline ? cmdline : "";
    size_t len = strlen(s);
    if (len + 1 > BOOT_CMDLINE_MAX)
        return gw_error_set(err, E2BIG, "command line too long (%zu bytes, max %d)", len,
                            BOOT_CMDLINE_MAX - 1);
    char *dst = guest_ram_ptr(ram, BOOT_CMDLINE_ADDR, len + 1);
    if (!dst)
        return gw_error_set(err, ENOMEM, "guest RAM too small for the command line");
    memcpy(dst, s, len + 1);
    return 0;
}

/* Read straight into guest RAM: no bounce buffer to fault in. */
int boot_place_initrd(struct guest_ram *ram, const char *path, uint64_t max_addr,
                      uint64_t kernel_end, uint64_t *addr, uint64_t *size, struct gw_error *err)
{
    *addr = *size = 0;
    if (!path)
        return 0;
    int fd;
    uint64_t len;
    int r = open_regular(path, GUEST_RAM_LOW_MAX, &fd, &len, err);
    if (r < 0)
        return r;
    if (len == 0) {
        close(fd);
        return gw_error_set(err, EINVAL, "initrd '%s' is empty", path);
    }
    /* Never below 1 MiB: the boot structures, the EBDA and the ACPI tables
     * are there, whatever the kernel's initrd_addr_max says. */
    if (kernel_end < BOOT_HIGH_MEM_START)
        kernel_end = BOOT_HIGH_MEM_START;
    uint64_t top = ram->regions[0].size;
    bool capped = max_addr < UINT64_MAX && top > max_addr + 1;
    if (capped)
        top = max_addr + 1;
    uint64_t at = len <= top ? ((top - len) & ~(GUEST_PAGE_SIZE - 1)) : 0;
    uint8_t *dst = guest_ram_ptr(ram, at, len);
    if (len > top || at < kernel_end || !dst) {
        close(fd);
        return gw_error_set(err, ENOMEM, "initrd '%s' (%llu bytes) does not fit in guest RAM "
                            "between the kernel end 0x%llx and 0x%llx%s", path,
                            (unsigned long long)len, (unsigned long long)kernel_end,
                            (unsigned long long)top, capped ? " (the kernel's limit)" : "");
    }
    r = read_all(fd, path, dst, len, err);
    close(fd);
    if (r < 0)
        return r;
    *addr = at;
    *size = len;
    return 0;
}

int boot_write_gdt(struct guest_ram *ram, enum boot_kind kind, struct gw_error *err)
{
    uint64_t *gdt = guest_ram_ptr(ram, BOOT_GDT_ADDR, BOOT_GDT_ENTRIES * 8);
    if (!gdt)
        return gw_error_set(err, ENOMEM, "guest RAM too small for the GDT");
    gdt[0] = 0;
    gdt[1] = 0;
    gdt[BOOT_SEL_CS / 8] = kind == BOOT_LINUX64 ? 0x00af9b000000ffffULL  /* 64-bit code */
                                                : 0x00cf9b000000ffffULL; /* 32-bit code */
    gdt[BOOT_SEL_DS / 8] = 0x00cf93000000ffffULL; /* flat data, read/write */
    gdt[BOOT_SEL_TR / 8] = 0x00008b0000000067ULL; /* busy TSS at 0, 104 bytes */
    gdt[BOOT_SEL_TR / 8 + 1] = 0;                 /* its upper half in long mode */
    return 0;
}

static void flat_segment(struct kvm_segment *s, uint16_t sel, uint8_t type, bool l, bool db)
{
    *s = (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
        .dpl = 0, .db = db, .s = 1, .l = l, .g = 1, .avl = 0, .unusable = 0,
    };
}

void boot_setup_sregs(enum boot_kind kind, struct kvm_sregs *sregs)
{
    bool lm = kind == BOOT_LINUX64;
    flat_segment(&sregs->cs, BOOT_SEL_CS, 0xb, lm, !lm); /* execute/read, accessed */
    flat_segment(&sregs->ds, BOOT_SEL_DS, 0x3, false, true); /* read/write, accessed */
    sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;
    sregs->tr = (struct kvm_segment){ .base = 0, .limit = 0x67, .selector = BOOT_SEL_TR,
                                      .type = 0xb, .present = 1, .dpl = 0, .db = 0, .s = 0,
                                      .l = 0, .g = 0, .avl = 0, .unusable = 0 };
    sregs->ldt = (struct kvm_segment){ .base = 0, .limit = 0xffff, .selector = 0, .type = 0x2,
                                       .present = 1, .dpl = 0, .db = 0, .s = 0, .l = 0,
                                       .g = 0, .avl = 0, .unusable = 0 };
    sregs->gdt.base = BOOT_GDT_ADDR;
    sregs->gdt.limit = BOOT_GDT_ENTRIES * 8 - 1;
    sregs->idt.base = 0;
    sregs->idt.limit = 0;
    sregs->cr2 = 0;
    if (lm) {
        sregs->cr0 = CR0_PE | CR0_ET | CR0_PG;
        sregs->cr3 = BOOT_PML4_ADDR;
        sregs->cr4 = CR4_PAE;
        sregs->efer = EFER_LME | EFER_LMA;
    } else {
        sregs->cr0 = CR0_PE | CR0_ET;
        sregs->cr3 = 0;
        sregs->cr4 = 0;
        sregs->efer = 0;
    }
}

static int dispatch(struct guest_ram *ram, const uint8_t *k, size_t len,
                    const struct boot_input *in, struct boot_result *out, struct gw_error *err)
{
    if (elf_is_elf(k, len)) {
        struct elf_info info;
        int r = elf_parse(k, len, &info, err);
        return r < 0 ? r : pvh_load(ram, k, len, in, out, err);
    }
    if (linux_is_bzimage(k, len))
        return linux_load(ram, k, len, in, out, err);
    return gw_error_set(err, ENOEXEC, "not an ELF with a PVH note nor a Linux bzImage");
}

int boot_load(struct guest_ram *ram, const struct boot_input *in, struct boot_result *out,
              struct gw_error *err)
{
    const char *name = in->kernel_path ? in->kernel_path : "(built-in)";
    const uint8_t *k = in->kernel_buf;
    size_t len = in->kernel_len;
    uint8_t *owned = NULL;
    int r;
    if (!k) {
        if (!in->kernel_path)
            return gw_error_set(err, EINVAL, "no kernel given");
        if ((r = boot_read_file(in->kernel_path, &owned, &len, BOOT_KERNEL_FILE_MAX, err)) < 0)
            goto out;
        k = owned;
    }
    r = dispatch(ram, k, len, in, out, err);
    if (r == 0)
        log_debug("%s: %s", name, out->desc);
out:
    if (r < 0)
        gw_error_prefix(err, "kernel %s", name);
    free(owned);
    return r;
}
