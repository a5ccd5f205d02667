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

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC 0x336ec578

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};
_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info");

struct hvm_modlist_entry {
    uint64_t paddr, size, cmdline_paddr, reserved;
};

struct hvm_memmap_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};
_Static_assert(sizeof(struct hvm_memmap_entry) == 24, "hvm_memmap_entry");

unsigned boot_build_e820(const struct guest_ram *ram, struct e820_entry *out, unsigned max)
{
    unsigned n = 0;
    uint64_t low_end = ram->regions[0].size;
#define ADD(a, s, t) do { if (n < max) out[n++] = (struct e820_entry){ (a), (s), (t) }; } while (0)
    ADD(0, BOOT_EBDA_START, E820_RAM);
    ADD(BOOT_EBDA_START, BOOT_HIGH_MEM_START - BOOT_EBDA_START, E820_RESERVED);
    if (low_end > BOOT_HIGH_MEM_START)
        ADD(BOOT_HIGH_MEM_START, low_end - BOOT_HIGH_MEM_START, E820_RAM);
    /* The 32-bit MMIO hole: IOAPIC, LAPIC, the KVM TSS/identity pages. */
    ADD(0xfec00000, 0x100000000ULL - 0xfec00000, E820_RESERVED);
    for (unsigned i = 1; i < ram->nr_regions; i++)
        ADD(ram->regions[i].gpa, ram->regions[i].size, E820_RAM);
#undef ADD
    return n;
}

int boot_read_file(const char *path, uint8_t **buf, size_t *len, size_t max, struct gw_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gw_error_set(err, errno, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return gw_error_set(err, EINVAL, "'%s' is not a regular file", path);
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return gw_error_set(err, EFBIG, "'%s' is too large (%lld bytes)", path,
                            (long long)st.st_size);
    }
    *len = (size_t)st.st_size;
    *buf = malloc(*len ? *len : 1);
    if (!*buf) {
        close(fd);
        return gw_error_set(err, ENOMEM, "out of memory reading '%s'", path);
    }
    size_t done = 0;
    while (done < *len) {
        ssize_t r = read(fd, *buf + done, *len - done);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            int e = r < 0 ? errno : EIO;
            free(*buf);
            close(fd);
            return gw_error_set(err, e, "reading '%s': %s", path, strerror(e));
        }
        done += (size_t)r;
    }
    close(fd);
    return 0;
}

int boot_place_cmdline(struct guest_ram *ram, const char *cmdline, struct gw_error *err)
{
    size_t len = strlen(cmdline ? cmdline : "");
    if (len + 1 > BOOT_CMDLINE_MAX)
        return gw_error_set(err, E2BIG, "command line too long (%zu bytes, max %d)", len,
                            BOOT_CMDLINE_MAX - 1);
    char *dst = guest_ram_ptr(ram, BOOT_CMDLINE_ADDR, len + 1);
    if (!dst)
        return gw_error_set(err, ENOMEM, "guest RAM too small for the command line");
    memcpy(dst, cmdline ? cmdline : "", len + 1);
    return 0;
}

int boot_place_initrd(struct guest_ram *ram, const char *path, uint64_t max_addr,
                      uint64_t kernel_end, uint64_t *addr, uint64_t *size, struct gw_error *err)
{
    *addr = *size = 0;
    if (!path)
        return 0;
    uint8_t *buf;
    size_t len;
    int r = boot_read_file(path, &buf, &len, 1ULL << 32, err);
    if (r < 0)
        return r;
    uint64_t top = ram->regions[0].size;
    if (top > max_addr + 1)
        top = max_addr + 1;
    uint64_t at = len <= top ? ((top - len) & ~0xfffULL) : 0;
    if (len > top || at < kernel_end) {
        free(buf);
        return gw_error_set(err, ENOMEM, "initrd '%s' (%zu bytes) does not fit in guest RAM "
                            "below 0x%llx", path, len, (unsigned long long)top);
    }
    memcpy(guest_ram_ptr(ram, at, len), buf, len);
    free(buf);
    *addr = at;
    *size = len;
    return 0;
}

static int write_gdt(struct guest_ram *ram, struct gw_error *err)
{
    uint64_t *gdt = guest_ram_ptr(ram, BOOT_GDT_ADDR, 6 * 8);
    if (!gdt)
        return gw_error_set(err, ENOMEM, "guest RAM too small");
    gdt[0] = 0;
    gdt[1] = 0;
    gdt[2] = 0x00cf9b000000ffffULL; /* 0x10: 32-bit code, flat */
    gdt[3] = 0x00cf93000000ffffULL; /* 0x18: data, flat */
    gdt[4] = 0x00008b0000000067ULL; /* 0x20: 32-bit TSS (busy) */
    gdt[5] = 0x00af9b000000ffffULL; /* 0x28: 64-bit code */
    return 0;
}

static int load_pvh(struct guest_ram *ram, const uint8_t *k, size_t klen, uint32_t entry,
                    const struct boot_input *in, struct boot_result *out, struct gw_error *err)
{
    struct elf_info info;
    int r = elf_load(ram, k, klen, &info, err);
    if (r < 0)
        return r;
    if (!guest_ram_ptr(ram, entry, 1))
        return gw_error_set(err, ENOEXEC, "PVH entry 0x%x is outside guest RAM", entry);
    if ((r = boot_place_cmdline(ram, in->cmdline, err)) < 0)
        return r;
    uint64_t initrd = 0, initrd_size = 0;
    uint64_t kend = info.high > BOOT_HIGH_MEM_START ? info.high : BOOT_HIGH_MEM_START;
    if ((r = boot_place_initrd(ram, in->initrd_path, 0xffffffffULL, kend, &initrd, &initrd_size, err)) < 0)
        return r;

    struct e820_entry map[BOOT_MEMMAP_MAX];
    unsigned n = boot_build_e820(ram, map, BOOT_MEMMAP_MAX);
    struct hvm_memmap_entry *mm = guest_ram_ptr(ram, BOOT_MEMMAP_ADDR, n * sizeof(*mm));
    struct hvm_start_info *si = guest_ram_ptr(ram, BOOT_START_INFO_ADDR, sizeof(*si));
    struct hvm_modlist_entry *mod = guest_ram_ptr(ram, BOOT_MODLIST_ADDR, sizeof(*mod));
    if (!mm || !si || !mod)
        return gw_error_set(err, ENOMEM, "guest RAM too small");
    for (unsigned i = 0; i < n; i++)
        mm[i] = (struct hvm_memmap_entry){ map[i].addr, map[i].size, map[i].type, 0 };
    memset(si, 0, sizeof(*si));
    si->magic = HVM_START_MAGIC;
    si->version = 1;
    si->cmdline_paddr = BOOT_CMDLINE_ADDR;
    si->memmap_paddr = BOOT_MEMMAP_ADDR;
    si->memmap_entries = n;
    if (initrd_size) {
        *mod = (struct hvm_modlist_entry){ initrd, initrd_size, 0, 0 };
        si->nr_modules = 1;
        si->modlist_paddr = BOOT_MODLIST_ADDR;
    }
    if ((r = write_gdt(ram, err)) < 0)
        return r;
    out->kind = BOOT_PVH;
    out->entry = entry;
    memset(&out->regs, 0, sizeof(out->regs));
    out->regs.rip = entry;
    out->regs.rbx = BOOT_START_INFO_ADDR;
    out->regs.rflags = 0x2;
    snprintf(out->desc, sizeof(out->desc), "PVH ELF%d, entry 0x%x, loaded 0x%llx-0x%llx",
             info.is64 ? 64 : 32, entry, (unsigned long long)info.low,
             (unsigned long long)info.high);
    return 0;
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool l, bool db)
{
    *s = (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
        .dpl = 0, .db = db, .s = 1, .l = l, .g = 1, .avl = 0,
    };
}

void boot_setup_sregs(enum boot_kind kind, struct kvm_sregs *sregs)
{
    bool lm = kind == BOOT_LINUX64;
    seg(&sregs->cs, lm ? 0x28 : 0x10, 0xb, lm, !lm);
    seg(&sregs->ds, 0x18, 0x3, false, true);
    sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;
    sregs->tr = (struct kvm_segment){ .base = 0, .limit = 0x67, .selector = 0x20, .type = 0xb,
                                      .present = 1, .s = 0 };
    sregs->ldt = (struct kvm_segment){ .selector = 0, .type = 0x2, .present = 1, .limit = 0xffff };
    sregs->gdt.base = BOOT_GDT_ADDR;
    sregs->gdt.limit = 6 * 8 - 1;
    sregs->idt.base = 0;
    sregs->idt.limit = 0;
    if (lm) {
        sregs->cr3 = BOOT_PML4_ADDR;
        sregs->cr4 = 0x20;                  /* PAE */
        sregs->cr0 = 0x80000011;            /* PG | ET | PE */
        sregs->efer = 0x500;                /* LME | LMA */
    } else {
        sregs->cr0 = 0x11;                  /* ET | PE */
        sregs->cr3 = 0;
        sregs->cr4 = 0;
        sregs->efer = 0;
    }
}

int boot_load(struct guest_ram *ram, const struct boot_input *in, struct boot_result *out,
              struct gw_error *err)
{
    const uint8_t *k = in->kernel_buf;
    size_t klen = in->kernel_len;
    uint8_t *owned = NULL;
    int r;
    if (!k) {
        if ((r = boot_read_file(in->kernel_path, &owned, &klen, 1ULL << 30, err)) < 0)
            return r;
        k = owned;
    }
    const char *name = in->kernel_path ? in->kernel_path : "(built-in)";
    const uint8_t *desc;
    uint32_t dlen;
    if (elf_is_elf(k, klen)) {
        struct elf_info info;
        if ((r = elf_parse(k, klen, &info, err)) < 0)
            goto out;
        if (!elf_find_note(k, klen, "Xen", XEN_ELFNOTE_PHYS32_ENTRY, &desc, &dlen) ||
            (dlen != 4 && dlen != 8)) {
            r = gw_error_set(err, ENOEXEC, "ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
            goto out;
        }
        uint32_t entry;
        memcpy(&entry, desc, 4);
        r = load_pvh(ram, k, klen, entry, in, out, err);
    } else if (linux_is_bzimage(k, klen)) {
        r = linux_load(ram, k, klen, in, out, err);
    } else {
        r = gw_error_set(err, ENOEXEC, "not an ELF with a PVH note nor a Linux bzImage");
    }
out:
    if (r < 0)
        gw_error_prefix(err, "kernel %s", name);
    free(owned);
    return r;
}
