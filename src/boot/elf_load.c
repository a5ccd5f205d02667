#include "boot/elf_load.h"

#include "boot/boot.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

/* A program header, whatever the ELF class. */
struct phdr {
    uint32_t type;
    uint64_t offset, vaddr, paddr, filesz, memsz;
};

bool elf_is_elf(const uint8_t *buf, size_t len)
{
    return len >= EI_NIDENT && memcmp(buf, ELFMAG, SELFMAG) == 0;
}

static int header(const uint8_t *buf, size_t len, bool *is64, uint64_t *phoff, unsigned *phnum,
                  unsigned *phentsize, uint64_t *entry, struct gw_error *err)
{
    if (!elf_is_elf(buf, len))
        return gw_error_set(err, ENOEXEC, "not an ELF file");
    if (buf[EI_DATA] != ELFDATA2LSB)
        return gw_error_set(err, ENOEXEC, "ELF is not little-endian");
    if (buf[EI_CLASS] == ELFCLASS64) {
        if (len < sizeof(Elf64_Ehdr))
            return gw_error_set(err, ENOEXEC, "truncated ELF header");
        Elf64_Ehdr eh;
        memcpy(&eh, buf, sizeof(eh));
        if (eh.e_machine != EM_X86_64)
            return gw_error_set(err, ENOEXEC, "ELF is not for x86-64");
        *is64 = true;
        *phoff = eh.e_phoff;
        *phnum = eh.e_phnum;
        *phentsize = eh.e_phentsize;
        *entry = eh.e_entry;
        if (eh.e_phentsize != sizeof(Elf64_Phdr))
            return gw_error_set(err, ENOEXEC, "bad ELF program header size");
    } else if (buf[EI_CLASS] == ELFCLASS32) {
        if (len < sizeof(Elf32_Ehdr))
            return gw_error_set(err, ENOEXEC, "truncated ELF header");
        Elf32_Ehdr eh;
        memcpy(&eh, buf, sizeof(eh));
        if (eh.e_machine != EM_386 && eh.e_machine != EM_X86_64)
            return gw_error_set(err, ENOEXEC, "ELF is not for x86");
        *is64 = false;
        *phoff = eh.e_phoff;
        *phnum = eh.e_phnum;
        *phentsize = eh.e_phentsize;
        *entry = eh.e_entry;
        if (eh.e_phentsize != sizeof(Elf32_Phdr))
            return gw_error_set(err, ENOEXEC, "bad ELF program header size");
    } else {
        return gw_error_set(err, ENOEXEC, "unknown ELF class");
    }
    if (*phnum == 0 || *phnum > 256)
        return gw_error_set(err, ENOEXEC, "ELF has %u program headers", *phnum);
    if (*phoff > len || (uint64_t)*phnum * *phentsize > len - *phoff)
        return gw_error_set(err, ENOEXEC, "ELF program headers lie outside the file");
    return 0;
}

static void get_phdr(const uint8_t *buf, bool is64, uint64_t off, struct phdr *p)
{
    if (is64) {
        Elf64_Phdr ph;
        memcpy(&ph, buf + off, sizeof(ph));
        *p = (struct phdr){ ph.p_type, ph.p_offset, ph.p_vaddr, ph.p_paddr, ph.p_filesz, ph.p_memsz };
    } else {
        Elf32_Phdr ph;
        memcpy(&ph, buf + off, sizeof(ph));
        *p = (struct phdr){ ph.p_type, ph.p_offset, ph.p_vaddr, ph.p_paddr, ph.p_filesz, ph.p_memsz };
    }
}

static int check_load(const struct phdr *p, size_t len, struct gw_error *err)
{
    if (p->filesz > p->memsz)
        return gw_error_set(err, ENOEXEC, "ELF segment file size exceeds its memory size");
    if (p->offset > len || p->filesz > len - p->offset)
        return gw_error_set(err, ENOEXEC, "ELF segment lies outside the file (truncated?)");
    if (p->paddr + p->memsz < p->paddr)
        return gw_error_set(err, ENOEXEC, "ELF segment address overflows");
    return 0;
}

int elf_parse(const uint8_t *buf, size_t len, struct elf_info *info, struct gw_error *err)
{
    uint64_t phoff, entry;
    unsigned phnum, phentsize;
    int r = header(buf, len, &info->is64, &phoff, &phnum, &phentsize, &entry, err);
    if (r < 0)
        return r;
    info->entry = entry;
    info->entry_phys = UINT64_MAX;
    info->low = UINT64_MAX;
    info->high = 0;
    for (unsigned i = 0; i < phnum; i++) {
        struct phdr p;
        get_phdr(buf, info->is64, phoff + (uint64_t)i * phentsize, &p);
        if (p.type != PT_LOAD || p.memsz == 0)
            continue;
        if ((r = check_load(&p, len, err)) < 0)
            return r;
        if (p.paddr < info->low)
            info->low = p.paddr;
        if (p.paddr + p.memsz > info->high)
            info->high = p.paddr + p.memsz;
        if (entry >= p.vaddr && entry - p.vaddr < p.memsz)
            info->entry_phys = p.paddr + (entry - p.vaddr);
        else if (info->entry_phys == UINT64_MAX && entry >= p.paddr && entry - p.paddr < p.memsz)
            info->entry_phys = entry; /* Linux's vmlinux: ENTRY(phys_startup_64) */
    }
    if (info->high == 0)
        return gw_error_set(err, ENOEXEC, "ELF has nothing to load");
    return 0;
}

/* Where a PT_LOAD segment of `p` may go: inside one RAM region, clear of
 * the boot structures and of the reserved area below 1 MiB. */
static int check_place(struct guest_ram *ram, const struct phdr *p, uint8_t **dst,
                       struct gw_error *err)
{
    *dst = guest_ram_ptr(ram, p->paddr, p->memsz);
    if (!*dst)
        return gw_error_set(err, ENOMEM, "ELF segment at 0x%llx (%llu bytes) does not fit "
                            "in guest RAM", (unsigned long long)p->paddr,
                            (unsigned long long)p->memsz);
    if (p->paddr < BOOT_LOW_END ||
        (p->paddr < BOOT_HIGH_MEM_START && p->paddr + p->memsz > BOOT_EBDA_START))
        return gw_error_set(err, EINVAL, "ELF segment at 0x%llx overlaps the boot "
                            "structures or the reserved area below 1 MiB", (unsigned long long)p->paddr);
    return 0;
}

/* Segment `i` against those before it: a later one would overwrite an
 * earlier one's bytes (or zero them as its bss), silently. */
static int check_disjoint(const uint8_t *buf, bool is64, uint64_t phoff, unsigned phentsize,
                          unsigned i, const struct phdr *p, struct gw_error *err)
{
    for (unsigned j = 0; j < i; j++) {
        struct phdr q;
        get_phdr(buf, is64, phoff + (uint64_t)j * phentsize, &q);
        if (q.type != PT_LOAD || q.memsz == 0)
            continue;
        if (p->paddr < q.paddr + q.memsz && q.paddr < p->paddr + p->memsz)
            return gw_error_set(err, EINVAL, "ELF segments at 0x%llx (%llu bytes) and 0x%llx "
                                "(%llu bytes) overlap", (unsigned long long)q.paddr,
                                (unsigned long long)q.memsz, (unsigned long long)p->paddr,
                                (unsigned long long)p->memsz);
    }
    return 0;
}

/* pass 0 checks every segment, pass 1 (load) writes them. */
static int place_segments(struct guest_ram *ram, const uint8_t *buf, size_t len,
                          struct elf_info *info, bool load, struct gw_error *err)
{
    int r = elf_parse(buf, len, info, err);
    if (r < 0)
        return r;
    uint64_t phoff, entry;
    unsigned phnum, phentsize;
    bool is64;
    header(buf, len, &is64, &phoff, &phnum, &phentsize, &entry, NULL);
    for (int pass = 0; pass < (load ? 2 : 1); pass++) {
        for (unsigned i = 0; i < phnum; i++) {
            struct phdr p;
            uint8_t *dst;
            get_phdr(buf, is64, phoff + (uint64_t)i * phentsize, &p);
            if (p.type != PT_LOAD || p.memsz == 0)
                continue;
            if ((r = check_place(ram, &p, &dst, err)) < 0 ||
                (pass == 0 && (r = check_disjoint(buf, is64, phoff, phentsize, i, &p, err)) < 0))
                return r;
            if (pass == 1) {
                memcpy(dst, buf + p.offset, p.filesz);
                memset(dst + p.filesz, 0, p.memsz - p.filesz);
            }
        }
    }
    return 0;
}

int elf_check(struct guest_ram *ram, const uint8_t *buf, size_t len, struct elf_info *info,
              struct gw_error *err)
{
    return place_segments(ram, buf, len, info, false, err);
}

int elf_load(struct guest_ram *ram, const uint8_t *buf, size_t len, struct elf_info *info,
             struct gw_error *err)
{
    return place_segments(ram, buf, len, info, true, err);
}

bool elf_paddr_loaded(const uint8_t *buf, size_t len, uint64_t paddr)
{
    uint64_t phoff, entry;
    unsigned phnum, phentsize;
    bool is64;
    if (header(buf, len, &is64, &phoff, &phnum, &phentsize, &entry, NULL) < 0)
        return false;
    for (unsigned i = 0; i < phnum; i++) {
        struct phdr p;
        get_phdr(buf, is64, phoff + (uint64_t)i * phentsize, &p);
        if (p.type == PT_LOAD && paddr >= p.paddr && paddr - p.paddr < p.memsz)
            return true;
    }
    return false;
}

/* Walk the notes in [off, off+size) of the file, counting each against
 * *budget. */
static bool find_in_notes(const uint8_t *buf, size_t len, uint64_t off, uint64_t size,
                          const char *name, uint32_t type, const uint8_t **desc,
                          uint32_t *desc_len, unsigned *budget)
{
    if (off > len || size > len - off)
        return false;
    size_t namelen = strlen(name) + 1;
    uint64_t pos = off, end = off + size;
    while (end - pos >= 12 && *budget > 0) {
        --*budget;
        uint32_t nsz, dsz, ntype;
        memcpy(&nsz, buf + pos, 4);
        memcpy(&dsz, buf + pos + 4, 4);
        memcpy(&ntype, buf + pos + 8, 4);
        uint64_t npos = pos + 12;
        uint64_t dpos = npos + (((uint64_t)nsz + 3) & ~3ULL);
        uint64_t next = dpos + (((uint64_t)dsz + 3) & ~3ULL);
        if (dpos > end || (uint64_t)dsz > end - dpos)
            return false;
        if (ntype == type && nsz == namelen && memcmp(buf + npos, name, namelen) == 0) {
            *desc = buf + dpos;
            *desc_len = dsz;
            return true;
        }
        if (next >= end)
            return false;
        pos = next;
    }
    return false;
}

/* The section header table, or false if absent or outside the file. */
static bool section_table(const uint8_t *buf, size_t len, bool is64, uint64_t *shoff,
                          unsigned *shnum, unsigned *shentsize)
{
    unsigned want;
    if (is64) {
        Elf64_Ehdr eh;
        memcpy(&eh, buf, sizeof(eh));
        *shoff = eh.e_shoff, *shnum = eh.e_shnum, *shentsize = eh.e_shentsize;
        want = sizeof(Elf64_Shdr);
    } else {
        Elf32_Ehdr eh;
        memcpy(&eh, buf, sizeof(eh));
        *shoff = eh.e_shoff, *shnum = eh.e_shnum, *shentsize = eh.e_shentsize;
        want = sizeof(Elf32_Shdr);
    }
    return *shnum && *shentsize == want && *shoff <= len &&
           (uint64_t)*shnum * *shentsize <= len - *shoff;
}

/* Section at `at` (inside the file): (offset, size) if it is SHT_NOTE. */
static bool note_section(const uint8_t *buf, bool is64, uint64_t at, uint64_t *off,
                         uint64_t *size)
{
    if (is64) {
        Elf64_Shdr sh;
        memcpy(&sh, buf + at, sizeof(sh));
        *off = sh.sh_offset, *size = sh.sh_size;
        return sh.sh_type == SHT_NOTE;
    }
    Elf32_Shdr sh;
    memcpy(&sh, buf + at, sizeof(sh));
    *off = sh.sh_offset, *size = sh.sh_size;
    return sh.sh_type == SHT_NOTE;
}

bool elf_find_note(const uint8_t *buf, size_t len, const char *name, uint32_t type,
                   const uint8_t **desc, uint32_t *desc_len)
{
    uint64_t phoff, entry;
    unsigned phnum, phentsize;
    bool is64;
    unsigned budget = ELF_NOTES_MAX;
    if (header(buf, len, &is64, &phoff, &phnum, &phentsize, &entry, NULL) < 0)
        return false;
    for (unsigned i = 0; i < phnum; i++) {
        struct phdr p;
        get_phdr(buf, is64, phoff + (uint64_t)i * phentsize, &p);
        if (p.type == PT_NOTE &&
            find_in_notes(buf, len, p.offset, p.filesz, name, type, desc, desc_len, &budget))
            return true;
    }
    /* The note may be in a SHT_NOTE section that no PT_NOTE covers. */
    uint64_t shoff, off, size;
    unsigned shnum, shentsize;
    if (!section_table(buf, len, is64, &shoff, &shnum, &shentsize))
        return false;
    for (unsigned i = 0; i < shnum && budget > 0; i++)
        if (note_section(buf, is64, shoff + (uint64_t)i * shentsize, &off, &size) &&
            find_in_notes(buf, len, off, size, name, type, desc, desc_len, &budget))
            return true;
    return false;
}
