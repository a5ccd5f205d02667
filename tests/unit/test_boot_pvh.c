/* PVH loading: a synthetic ELF32/ELF64 built here, from a buffer and from a
 * file; hvm_start_info, memory map, module list and command line as the
 * guest sees them; and hostile or wrong files rejected with a clear error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <elf.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "boot/boot.h"
#include "boot/pvh_abi.h"
#include "common/log.h"

#define MiB (1ULL << 20)
#define IMG_MAX 8192
#define CODE_OFF 1024
#define NOTE_OFF 512

static const uint8_t code[] = { 0xfa, 0xf4, 0xeb, 0xfd }; /* cli; hlt; jmp .-1 */

struct elf_opts {
    bool elf32;
    uint64_t paddr, entry;
    uint64_t bss;              /* memsz - filesz */
    bool note;                 /* PT_NOTE with the Xen entry note */
    bool section_note;         /* note reachable only through a SHT_NOTE section */
    uint32_t note_desc_len;    /* 4 (default) or 8 */
};

/* Write the note at NOTE_OFF; returns its size. */
static size_t put_note(uint8_t *img, const struct elf_opts *o)
{
    uint32_t dlen = o->note_desc_len ? o->note_desc_len : 4;
    uint32_t hdr[3] = { 4, dlen, XEN_ELFNOTE_PHYS32_ENTRY };
    memcpy(img + NOTE_OFF, hdr, 12);
    memcpy(img + NOTE_OFF + 12, "Xen", 4);
    uint64_t e = o->entry;
    memcpy(img + NOTE_OFF + 16, &e, dlen <= 8 ? dlen : 8);
    return 16 + ((dlen + 3) & ~3u);
}

static size_t make_elf(uint8_t *img, const struct elf_opts *o)
{
    memset(img, 0, IMG_MAX);
    size_t note_len = (o->note || o->section_note) ? put_note(img, o) : 0;
    memcpy(img + CODE_OFF, code, sizeof(code));
    size_t sh_off = 2048;
    if (o->elf32) {
        Elf32_Ehdr *eh = (Elf32_Ehdr *)img;
        memcpy(eh->e_ident, ELFMAG, SELFMAG);
        eh->e_ident[EI_CLASS] = ELFCLASS32;
        eh->e_ident[EI_DATA] = ELFDATA2LSB;
        eh->e_ident[EI_VERSION] = EV_CURRENT;
        eh->e_type = ET_EXEC;
        eh->e_machine = EM_386;
        eh->e_entry = (uint32_t)o->entry;
        eh->e_phoff = sizeof(*eh);
        eh->e_ehsize = sizeof(*eh);
        eh->e_phentsize = sizeof(Elf32_Phdr);
        eh->e_phnum = o->note ? 2 : 1;
        Elf32_Phdr *ph = (Elf32_Phdr *)(img + sizeof(*eh));
        ph[0] = (Elf32_Phdr){ .p_type = PT_LOAD, .p_offset = CODE_OFF, .p_vaddr = (uint32_t)o->paddr,
                              .p_paddr = (uint32_t)o->paddr, .p_filesz = sizeof(code),
                              .p_memsz = (uint32_t)(sizeof(code) + o->bss), .p_flags = PF_R | PF_X };
        if (o->note)
            ph[1] = (Elf32_Phdr){ .p_type = PT_NOTE, .p_offset = NOTE_OFF, .p_filesz = (uint32_t)note_len };
        if (o->section_note) {
            eh->e_shoff = (uint32_t)sh_off;
            eh->e_shentsize = sizeof(Elf32_Shdr);
            eh->e_shnum = 2;
            Elf32_Shdr *sh = (Elf32_Shdr *)(img + sh_off);
            sh[1] = (Elf32_Shdr){ .sh_type = SHT_NOTE, .sh_offset = NOTE_OFF, .sh_size = (uint32_t)note_len };
        }
    } else {
        Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
        memcpy(eh->e_ident, ELFMAG, SELFMAG);
        eh->e_ident[EI_CLASS] = ELFCLASS64;
        eh->e_ident[EI_DATA] = ELFDATA2LSB;
        eh->e_ident[EI_VERSION] = EV_CURRENT;
        eh->e_type = ET_EXEC;
        eh->e_machine = EM_X86_64;
        eh->e_entry = o->entry;
        eh->e_phoff = sizeof(*eh);
        eh->e_ehsize = sizeof(*eh);
        eh->e_phentsize = sizeof(Elf64_Phdr);
        eh->e_phnum = o->note ? 2 : 1;
        Elf64_Phdr *ph = (Elf64_Phdr *)(img + sizeof(*eh));
        ph[0] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = CODE_OFF, .p_vaddr = o->paddr,
                              .p_paddr = o->paddr, .p_filesz = sizeof(code),
                              .p_memsz = sizeof(code) + o->bss, .p_flags = PF_R | PF_X };
        if (o->note)
            ph[1] = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = NOTE_OFF, .p_filesz = note_len };
        if (o->section_note) {
            eh->e_shoff = sh_off;
            eh->e_shentsize = sizeof(Elf64_Shdr);
            eh->e_shnum = 2;
            Elf64_Shdr *sh = (Elf64_Shdr *)(img + sh_off);
            sh[1] = (Elf64_Shdr){ .sh_type = SHT_NOTE, .sh_offset = NOTE_OFF, .sh_size = note_len };
        }
    }
    return o->section_note ? sh_off + 2 * 64 : CODE_OFF + sizeof(code);
}

struct fixture {
    struct guest_ram ram;
    struct gw_error err;
    struct boot_result res;
    uint8_t img[IMG_MAX];
    char dir[64];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    gw_error_init(&f->err);
    if (guest_ram_init(&f->ram, 64 * MiB, "t", &f->err) < 0)
        return -1;
    strcpy(f->dir, "/tmp/godwit-boot-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    guest_ram_fini(&f->ram);
    free(f);
    return 0;
}

static const char *write_file(struct fixture *f, const char *name, const void *data, size_t len)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
    return path;
}

static int load_buf(struct fixture *f, size_t len, const char *cmdline)
{
    struct boot_input in = { .kernel_buf = f->img, .kernel_len = len, .cmdline = cmdline,
                             .rsdp_addr = BOOT_ACPI_ADDR };
    gw_error_init(&f->err);
    return boot_load(&f->ram, &in, &f->res, &f->err);
}

static void expect_fail(struct fixture *f, size_t len, const char *needle)
{
    int r = load_buf(f, len, NULL);
    assert_true(r < 0);
    assert_int_equal(-r, f->err.code);
    if (needle && !strstr(f->err.msg, needle))
        fail_msg("error \"%s\" lacks \"%s\"", f->err.msg, needle);
}

static void check_start_info(struct fixture *f, const char *cmdline, uint64_t initrd_size)
{
    const struct hvm_start_info *si = (const void *)(f->ram.host + BOOT_START_INFO_ADDR);
    assert_int_equal(f->res.regs.rbx, BOOT_START_INFO_ADDR);
    assert_int_equal(si->magic, HVM_START_MAGIC);
    assert_int_equal(si->version, 1);
    assert_int_equal(si->flags, 0);
    assert_int_equal(si->rsdp_paddr, BOOT_ACPI_ADDR);   /* passed through */
    assert_string_equal((const char *)f->ram.host + si->cmdline_paddr, cmdline);
    assert_int_equal(si->memmap_entries, 4);
    const struct hvm_memmap_entry *mm = (const void *)(f->ram.host + si->memmap_paddr);
    struct e820_entry want[8];
    assert_int_equal(boot_build_e820(&f->ram, want, 8), 4);
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(mm[i].addr, want[i].addr);
        assert_int_equal(mm[i].size, want[i].size);
        assert_int_equal(mm[i].type, want[i].type);
        assert_int_equal(mm[i].reserved, 0);
    }
    assert_int_equal(mm[2].addr + mm[2].size, 64 * MiB);
    if (!initrd_size) {
        assert_int_equal(si->nr_modules, 0);
        return;
    }
    assert_int_equal(si->nr_modules, 1);
    const struct hvm_modlist_entry *mod = (const void *)(f->ram.host + si->modlist_paddr);
    assert_int_equal(mod->size, initrd_size);
    assert_int_equal(mod->paddr % 4096, 0);
    assert_true(mod->paddr + mod->size <= 64 * MiB);
    assert_true(mod->paddr + mod->size > 64 * MiB - 4096); /* as high as possible */
}

static void test_elf64_buffer(void **state)
{
    struct fixture *f = *state;
    memset(f->ram.host + 0x100000, 0xee, 0x3000); /* bss must be zeroed */
    size_t len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x100000, .entry = 0x100001,
                                                      .bss = 0x2000, .note = true });
    if (load_buf(f, len, "console=ttyS0 hello") < 0)
        fail_msg("%s", f->err.msg);
    assert_int_equal(f->res.kind, BOOT_PVH);
    assert_int_equal(f->res.entry, 0x100001);
    assert_int_equal(f->res.regs.rip, 0x100001);
    assert_int_equal(f->res.regs.rflags, 0x2);
    assert_int_equal(f->res.regs.rsp, 0);
    assert_memory_equal(f->ram.host + 0x100000, code, sizeof(code));
    for (size_t i = sizeof(code); i < sizeof(code) + 0x2000; i++)
        assert_int_equal(f->ram.host[0x100000 + i], 0);
    assert_int_equal(f->ram.host[0x100000 + sizeof(code) + 0x2000], 0xee);
    check_start_info(f, "console=ttyS0 hello", 0);
    assert_non_null(strstr(f->res.desc, "PVH ELF64"));
}

static void test_elf32_file_with_initrd(void **state)
{
    struct fixture *f = *state;
    size_t len = make_elf(f->img, &(struct elf_opts){ .elf32 = true, .paddr = 0x10000,
                                                      .entry = 0x10000, .note = true });
    char kpath[128];
    snprintf(kpath, sizeof(kpath), "%s", write_file(f, "kernel", f->img, len));
    static uint8_t initrd[12345];
    for (size_t i = 0; i < sizeof(initrd); i++)
        initrd[i] = (uint8_t)(i * 7);
    const char *ipath = write_file(f, "initrd", initrd, sizeof(initrd));
    struct boot_input in = { .kernel_path = kpath, .initrd_path = ipath,
                             .rsdp_addr = BOOT_ACPI_ADDR };
    gw_error_init(&f->err);
    if (boot_load(&f->ram, &in, &f->res, &f->err) < 0)
        fail_msg("%s", f->err.msg);
    assert_int_equal(f->res.regs.rip, 0x10000); /* the test guest's link address */
    check_start_info(f, "", sizeof(initrd));
    const struct hvm_start_info *si = (const void *)(f->ram.host + BOOT_START_INFO_ADDR);
    const struct hvm_modlist_entry *mod = (const void *)(f->ram.host + si->modlist_paddr);
    assert_memory_equal(f->ram.host + mod->paddr, initrd, sizeof(initrd));
    assert_non_null(strstr(f->res.desc, "PVH ELF32"));
}

static void test_note_variants(void **state)
{
    struct fixture *f = *state;
    /* Only in a SHT_NOTE section, no PT_NOTE. */
    size_t len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x200000, .entry = 0x200000,
                                                      .section_note = true });
    if (load_buf(f, len, NULL) < 0)
        fail_msg("%s", f->err.msg);
    assert_int_equal(f->res.regs.rip, 0x200000);
    /* An 8-byte descriptor. */
    len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x200000, .entry = 0x200002,
                                               .note = true, .note_desc_len = 8 });
    if (load_buf(f, len, NULL) < 0)
        fail_msg("%s", f->err.msg);
    assert_int_equal(f->res.regs.rip, 0x200002);
    /* A 2-byte descriptor cannot hold the entry. */
    len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x200000, .entry = 0x200000,
                                               .note = true, .note_desc_len = 2 });
    expect_fail(f, len, "PVH");
}

static void test_reject_missing_note_and_garbage(void **state)
{
    struct fixture *f = *state;
    size_t len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x100000, .entry = 0x100000 });
    expect_fail(f, len, "no usable PVH entry note");
    memset(f->img, 0x41, IMG_MAX);
    expect_fail(f, IMG_MAX, "not an ELF with a PVH note nor a Linux bzImage");
    expect_fail(f, 0, "not an ELF");
    const char *p = write_file(f, "junk", f->img, 100);
    struct boot_input in = { .kernel_path = p };
    gw_error_init(&f->err);
    assert_true(boot_load(&f->ram, &in, &f->res, &f->err) < 0);
    assert_non_null(strstr(f->err.msg, p)); /* the message names the file */
    assert_non_null(strstr(f->err.msg, "not an ELF with a PVH note"));
    in.kernel_path = "/nonexistent/kernel";
    gw_error_init(&f->err);
    assert_int_equal(boot_load(&f->ram, &in, &f->res, &f->err), -ENOENT);
    assert_non_null(strstr(f->err.msg, "/nonexistent/kernel"));
    in.kernel_path = f->dir; /* a directory */
    gw_error_init(&f->err);
    assert_true(boot_load(&f->ram, &in, &f->res, &f->err) < 0);
}

static void test_reject_truncated_everywhere(void **state)
{
    struct fixture *f = *state;
    size_t len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x100000, .entry = 0x100000,
                                                      .note = true });
    /* Every prefix of the file is rejected cleanly (ASan build: no overread). */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, f->img, cut);
        struct boot_input in = { .kernel_buf = copy, .kernel_len = cut };
        gw_error_init(&f->err);
        assert_true(boot_load(&f->ram, &in, &f->res, &f->err) < 0);
        assert_true(gw_error_is_set(&f->err));
        free(copy);
    }
}

static void test_reject_bad_headers(void **state)
{
    struct fixture *f = *state;
    struct elf_opts o = { .paddr = 0x100000, .entry = 0x100000, .note = true };
    size_t len = make_elf(f->img, &o);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)f->img;
    Elf64_Phdr *ph = (Elf64_Phdr *)(f->img + sizeof(*eh));
    ph[0].p_offset = 1ULL << 40;
    expect_fail(f, len, "outside the file");
    make_elf(f->img, &o);
    ph[0].p_filesz = ph[0].p_memsz + 1;
    expect_fail(f, len, "file size exceeds");
    make_elf(f->img, &o);
    eh->e_phoff = len - 8;
    expect_fail(f, len, "program headers");
    make_elf(f->img, &o);
    eh->e_phnum = 0xffff;
    expect_fail(f, len, "program headers");
    make_elf(f->img, &o);
    eh->e_machine = EM_ARM;
    expect_fail(f, len, "x86");
    make_elf(f->img, &o);
    ph[1].p_filesz = 1ULL << 62; /* note segment lies: no note found, no crash */
    expect_fail(f, len, "PVH");
    make_elf(f->img, &o);
    ph[0].p_paddr = UINT64_MAX - 2; /* wraps */
    expect_fail(f, len, NULL);
}

static void test_reject_placement(void **state)
{
    struct fixture *f = *state;
    /* Beyond RAM. */
    size_t len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x10000000, .entry = 0x10000000,
                                                      .note = true });
    expect_fail(f, len, "does not fit in guest RAM");
    /* bss running past the end of RAM. */
    len = make_elf(f->img, &(struct elf_opts){ .paddr = 64 * MiB - 4096, .entry = 64 * MiB - 4096,
                                               .bss = 8192, .note = true });
    expect_fail(f, len, "does not fit in guest RAM");
    /* Over the boot structures, over the EBDA. */
    len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x6000, .entry = 0x6000, .note = true });
    expect_fail(f, len, "overlaps");
    len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x9f000, .entry = 0x9f000,
                                               .bss = 0x2000, .note = true });
    expect_fail(f, len, "overlaps");
    /* Entry outside the loaded segments. */
    len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x100000, .entry = 0x300000, .note = true });
    expect_fail(f, len, "outside the loaded segments");
}

static void test_reject_initrd_and_cmdline(void **state)
{
    struct fixture *f = *state;
    size_t len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x100000, .entry = 0x100000,
                                                      .note = true });
    struct boot_input in = { .kernel_buf = f->img, .kernel_len = len,
                             .initrd_path = "/nonexistent/initrd" };
    gw_error_init(&f->err);
    assert_int_equal(boot_load(&f->ram, &in, &f->res, &f->err), -ENOENT);
    assert_non_null(strstr(f->err.msg, "/nonexistent/initrd"));
    /* An initrd larger than RAM: sparse file, never read. */
    char big[128];
    snprintf(big, sizeof(big), "%s/big", f->dir);
    FILE *fp = fopen(big, "wb");
    assert_non_null(fp);
    assert_int_equal(ftruncate(fileno(fp), 100 * MiB), 0);
    fclose(fp);
    in.initrd_path = big;
    gw_error_init(&f->err);
    assert_true(boot_load(&f->ram, &in, &f->res, &f->err) < 0);
    assert_non_null(strstr(f->err.msg, "does not fit"));
    /* A command line that does not fit its slot. */
    char *cmd = malloc(BOOT_CMDLINE_MAX + 1);
    memset(cmd, 'x', BOOT_CMDLINE_MAX);
    cmd[BOOT_CMDLINE_MAX] = 0;
    in.initrd_path = NULL;
    in.cmdline = cmd;
    gw_error_init(&f->err);
    assert_int_equal(boot_load(&f->ram, &in, &f->res, &f->err), -E2BIG);
    cmd[BOOT_CMDLINE_MAX - 1] = 0; /* the longest that fits */
    gw_error_init(&f->err);
    assert_int_equal(boot_load(&f->ram, &in, &f->res, &f->err), 0);
    free(cmd);
}

/* An ELF64 with the given program headers (after the ELF header) and
 * entry; the caller fills the bytes they point at. */
static void make_elf_phdrs(uint8_t *img, size_t cap, const Elf64_Phdr *ph, unsigned n,
                           uint64_t entry)
{
    memset(img, 0, cap);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_ident[EI_VERSION] = EV_CURRENT;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_X86_64;
    eh->e_entry = entry;
    eh->e_phoff = sizeof(*eh);
    eh->e_ehsize = sizeof(*eh);
    eh->e_phentsize = sizeof(Elf64_Phdr);
    eh->e_phnum = (uint16_t)n;
    assert_true(sizeof(*eh) + n * sizeof(*ph) <= cap);
    memcpy(img + sizeof(*eh), ph, n * sizeof(*ph));
}

static int load_image(struct fixture *f, const uint8_t *img, size_t len)
{
    struct boot_input in = { .kernel_buf = img, .kernel_len = len };
    gw_error_init(&f->err);
    return boot_load(&f->ram, &in, &f->res, &f->err);
}

/* `nnote` PT_NOTE headers each over the same 100 empty notes, then one
 * with the Xen entry note. Before the note budget, every header walked the
 * whole region again: a file of many headers over a large note region took
 * headers x size (hours for a 100 MiB file with 65535 section headers). */
static size_t make_many_notes(uint8_t *img, size_t cap, unsigned nnote)
{
    enum { EMPTY_OFF = 0x4000, EMPTY_LEN = 100 * 12, XEN_OFF = 0x5000, CODE = 0x6000 };
    Elf64_Phdr ph[260];
    assert_true(nnote + 2 <= 260);
    ph[0] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = CODE, .p_vaddr = 0x100000,
                          .p_paddr = 0x100000, .p_filesz = sizeof(code), .p_memsz = sizeof(code) };
    for (unsigned i = 0; i < nnote; i++)
        ph[1 + i] = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = EMPTY_OFF, .p_filesz = EMPTY_LEN };
    ph[1 + nnote] = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = XEN_OFF, .p_filesz = 20 };
    make_elf_phdrs(img, cap, ph, nnote + 2, 0x100000);
    uint32_t hdr[3] = { 4, 4, XEN_ELFNOTE_PHYS32_ENTRY }, entry = 0x100000;
    memcpy(img + XEN_OFF, hdr, 12);
    memcpy(img + XEN_OFF + 12, "Xen", 4);
    memcpy(img + XEN_OFF + 16, &entry, 4);
    memcpy(img + CODE, code, sizeof(code));
    return CODE + sizeof(code);
}

static void test_note_walk_bounded(void **state)
{
    struct fixture *f = *state;
    static uint8_t img[0x8000];
    size_t len = make_many_notes(img, sizeof(img), 10); /* 1,000 notes first: found */
    if (load_image(f, img, len) < 0)
        fail_msg("%s", f->err.msg);
    assert_int_equal(f->res.regs.rip, 0x100000);
    len = make_many_notes(img, sizeof(img), 250);       /* 25,000 notes first: refused */
    assert_true(load_image(f, img, len) < 0);
    assert_non_null(strstr(f->err.msg, "no usable PVH entry note"));
}

static void test_reject_overlapping_segments(void **state)
{
    struct fixture *f = *state;
    static uint8_t img[0x3000];
    /* The second segment's bss would zero the first one's code. */
    Elf64_Phdr ph[3] = {
        { .p_type = PT_LOAD, .p_offset = 0x2000, .p_paddr = 0x200000, .p_filesz = sizeof(code),
          .p_memsz = sizeof(code) },
        { .p_type = PT_LOAD, .p_offset = 0x2000, .p_paddr = 0x1ff000, .p_filesz = 0,
          .p_memsz = 0x1002 },
        { .p_type = PT_NOTE, .p_offset = NOTE_OFF, .p_filesz = 20 },
    };
    make_elf_phdrs(img, sizeof(img), ph, 3, 0x200000);
    put_note(img, &(struct elf_opts){ .entry = 0x200000 });
    memcpy(img + 0x2000, code, sizeof(code));
    assert_true(load_image(f, img, sizeof(img)) < 0);
    assert_non_null(strstr(f->err.msg, "overlap"));
    /* Touching, not overlapping: loaded. */
    ph[1].p_memsz = 0x1000;
    make_elf_phdrs(img, sizeof(img), ph, 3, 0x200000);
    put_note(img, &(struct elf_opts){ .entry = 0x200000 });
    memcpy(img + 0x2000, code, sizeof(code));
    if (load_image(f, img, sizeof(img)) < 0)
        fail_msg("%s", f->err.msg);
    assert_memory_equal(f->ram.host + 0x200000, code, sizeof(code));
}

static void test_entry_checked_before_writing(void **state)
{
    struct fixture *f = *state;
    /* Refused for its entry: guest RAM as it was. */
    memset(f->ram.host + 0x100000, 0xee, 0x1000);
    size_t len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x100000, .entry = 0x300000,
                                                      .note = true });
    expect_fail(f, len, "outside the loaded segments");
    for (size_t i = 0; i < 0x1000; i++)
        assert_int_equal(f->ram.host[0x100000 + i], 0xee);
}

/* An entry in the gap between two segments is outside them too (it was
 * checked against the span from the lowest to the highest). */
static void test_entry_in_gap(void **state)
{
    struct fixture *f = *state;
    static uint8_t img[0x3000];
    memset(f->ram.host + 0x100000, 0xee, 0x1000);
    Elf64_Phdr ph[3] = {
        { .p_type = PT_LOAD, .p_offset = 0x2000, .p_paddr = 0x100000, .p_filesz = sizeof(code),
          .p_memsz = sizeof(code) },
        { .p_type = PT_LOAD, .p_offset = 0x2000, .p_paddr = 0x300000, .p_filesz = sizeof(code),
          .p_memsz = sizeof(code) },
        { .p_type = PT_NOTE, .p_offset = NOTE_OFF, .p_filesz = 20 },
    };
    make_elf_phdrs(img, sizeof(img), ph, 3, 0x200000);
    put_note(img, &(struct elf_opts){ .entry = 0x200000 });
    memcpy(img + 0x2000, code, sizeof(code));
    assert_true(load_image(f, img, sizeof(img)) < 0);
    assert_non_null(strstr(f->err.msg, "outside the loaded segments"));
    for (size_t i = 0; i < 0x1000; i++)
        assert_int_equal(f->ram.host[0x100000 + i], 0xee);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "boot_load waited on a FIFO\n";
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(3);
    _exit(2);
}

static void test_reject_fifo(void **state)
{
    struct fixture *f = *state;
    size_t len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x100000, .entry = 0x100000,
                                                      .note = true });
    char fifo[128];
    snprintf(fifo, sizeof(fifo), "%s/fifo", f->dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    /* Refused at once, not waiting for a writer that never comes. */
    signal(SIGALRM, on_alarm);
    alarm(10);
    struct boot_input in = { .kernel_buf = f->img, .kernel_len = len, .initrd_path = fifo };
    gw_error_init(&f->err);
    assert_true(boot_load(&f->ram, &in, &f->res, &f->err) < 0);
    assert_non_null(strstr(f->err.msg, "not a regular file"));
    in = (struct boot_input){ .kernel_path = fifo };
    gw_error_init(&f->err);
    assert_true(boot_load(&f->ram, &in, &f->res, &f->err) < 0);
    assert_non_null(strstr(f->err.msg, "not a regular file"));
    alarm(0);
    signal(SIGALRM, SIG_DFL);
}

/* An empty initrd says so (it was "does not fit in guest RAM"). */
static void test_reject_empty_initrd(void **state)
{
    struct fixture *f = *state;
    size_t len = make_elf(f->img, &(struct elf_opts){ .paddr = 0x100000, .entry = 0x100000,
                                                      .note = true });
    struct boot_input in = { .kernel_buf = f->img, .kernel_len = len,
                             .initrd_path = write_file(f, "empty", "", 0) };
    gw_error_init(&f->err);
    assert_int_equal(boot_load(&f->ram, &in, &f->res, &f->err), -EINVAL);
    assert_non_null(strstr(f->err.msg, "initrd"));
    assert_non_null(strstr(f->err.msg, "is empty"));
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_elf64_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_elf32_file_with_initrd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_note_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_missing_note_and_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_truncated_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_bad_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_placement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_initrd_and_cmdline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_note_walk_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_overlapping_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entry_checked_before_writing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entry_in_gap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_empty_initrd, setup, teardown),
        /* last: without O_NONBLOCK it ends the process */
        cmocka_unit_test_setup_teardown(test_reject_fifo, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
