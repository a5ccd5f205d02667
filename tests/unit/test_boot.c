/* Boot protocols: e820 map, PVH ELF loading and hvm_start_info, hostile
 * kernel files, bzImage payload extraction for every compression. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <elf.h>
#include <errno.h>
#include <lz4.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "boot/boot.h"
#include "boot/decompress.h"
#include "common/log.h"

static void test_e820(void **state)
{
    struct guest_ram ram;
    struct e820_entry e[16];
    guest_ram_layout(&ram, 128ULL << 20);
    unsigned n = boot_build_e820(&ram, e, 16);
    assert_int_equal(n, 4);
    assert_int_equal(e[0].addr, 0);
    assert_int_equal(e[0].size, 0x9fc00);
    assert_int_equal(e[1].type, E820_RESERVED);
    assert_int_equal(e[2].addr, 0x100000);
    assert_int_equal(e[2].addr + e[2].size, 128ULL << 20);
    guest_ram_layout(&ram, 6ULL << 30);
    n = boot_build_e820(&ram, e, 16);
    assert_int_equal(n, 5);
    assert_int_equal(e[2].addr + e[2].size, 0xC0000000ULL);
    assert_int_equal(e[4].addr, 0x100000000ULL);
    assert_int_equal(e[4].size, 3ULL << 30);
    assert_int_equal(e[4].type, E820_RAM);
}

/* A minimal ELF64 with one PT_LOAD of `code` at paddr and optional note. */
static size_t make_elf(uint8_t *buf, uint64_t vaddr, uint64_t paddr, uint64_t entry, bool note,
                       const uint8_t *code, size_t code_len)
{
    memset(buf, 0, 4096);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)buf;
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
    eh->e_phnum = note ? 2 : 1;
    Elf64_Phdr *ph = (Elf64_Phdr *)(buf + sizeof(*eh));
    ph[0] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = 1024, .p_vaddr = vaddr, .p_paddr = paddr,
                          .p_filesz = code_len, .p_memsz = code_len + 4096, .p_align = 4096 };
    memcpy(buf + 1024, code, code_len);
    if (note) {
        uint32_t n[5] = { 4, 4, 18, 0, (uint32_t)entry };
        memcpy(&n[3], "Xen", 4);
        memcpy(buf + 512, n, sizeof(n));
        ph[1] = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = 512, .p_filesz = sizeof(n), .p_align = 4 };
    }
    return 1024 + code_len;
}

static void test_pvh(void **state)
{
    struct guest_ram ram;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_init(&ram, 64ULL << 20, "t", &err), 0);
    static uint8_t elf[8192];
    const uint8_t code[] = { 0xf4, 0xeb, 0xfd };
    size_t len = make_elf(elf, 0x100000, 0x100000, 0x100000, true, code, sizeof(code));
    struct boot_input in = { .kernel_buf = elf, .kernel_len = len, .cmdline = "hello world" };
    struct boot_result res;
    assert_int_equal(boot_load(&ram, &in, &res, &err), 0);
    assert_int_equal(res.kind, BOOT_PVH);
    assert_int_equal(res.regs.rip, 0x100000);
    assert_int_equal(res.regs.rbx, BOOT_START_INFO_ADDR);
    assert_memory_equal(ram.host + 0x100000, code, sizeof(code));
    const uint32_t *si = (const uint32_t *)(ram.host + BOOT_START_INFO_ADDR);
    assert_int_equal(si[0], 0x336ec578);
    uint64_t cmd;
    memcpy(&cmd, ram.host + BOOT_START_INFO_ADDR + 24, 8);
    assert_string_equal((const char *)ram.host + cmd, "hello world");
    struct kvm_sregs sregs;
    memset(&sregs, 0, sizeof(sregs));
    boot_setup_sregs(BOOT_PVH, &sregs);
    assert_int_equal(sregs.cr0 & 1, 1);
    assert_int_equal(sregs.cs.db, 1);
    assert_int_equal(sregs.cs.l, 0);

    /* Hostile or wrong files. */
    uint8_t bad[8192];
    memcpy(bad, elf, sizeof(bad));
    in.kernel_buf = bad;
    in.kernel_len = 40; /* truncated header */
    gw_error_init(&err);
    assert_true(boot_load(&ram, &in, &res, &err) < 0);
    make_elf(bad, 0x100000, 0x100000, 0x100000, false, code, sizeof(code));
    in.kernel_len = len;
    gw_error_init(&err);
    assert_true(boot_load(&ram, &in, &res, &err) < 0);
    assert_non_null(strstr(err.msg, "PVH"));
    make_elf(bad, 0x100000, 0x10000000, 0x100000, true, code, sizeof(code)); /* beyond RAM */
    gw_error_init(&err);
    assert_true(boot_load(&ram, &in, &res, &err) < 0);
    assert_non_null(strstr(err.msg, "does not fit"));
    memcpy(bad, elf, len);
    ((Elf64_Phdr *)(bad + sizeof(Elf64_Ehdr)))->p_offset = 1ULL << 40; /* outside the file */
    gw_error_init(&err);
    assert_true(boot_load(&ram, &in, &res, &err) < 0);
    memset(bad, 0x41, sizeof(bad));
    gw_error_init(&err);
    assert_true(boot_load(&ram, &in, &res, &err) < 0);
    assert_non_null(strstr(err.msg, "not an ELF"));
    in.kernel_buf = NULL;
    in.kernel_path = "/nonexistent/kernel";
    gw_error_init(&err);
    assert_true(boot_load(&ram, &in, &res, &err) < 0);
    guest_ram_fini(&ram);
}

/* ---- bzImage ---- */

static size_t compress_with(const char *fmt, const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    if (!strcmp(fmt, "gzip")) {
        z_stream z = { 0 };
        deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
        z.next_in = (Bytef *)in;
        z.avail_in = (uInt)len;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        deflate(&z, Z_FINISH);
        size_t n = z.total_out;
        deflateEnd(&z);
        return n;
    }
    if (!strcmp(fmt, "zstd"))
        return ZSTD_compress(out, cap, in, len, 3);
    if (!strcmp(fmt, "xz")) {
        size_t pos = 0;
        lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, len, out, &pos, cap);
        return pos;
    }
    if (!strcmp(fmt, "lzma")) {
        lzma_stream s = LZMA_STREAM_INIT;
        lzma_options_lzma o;
        lzma_lzma_preset(&o, 6);
        if (lzma_alone_encoder(&s, &o) != LZMA_OK)
            return 0;
        s.next_in = in;
        s.avail_in = len;
        s.next_out = out;
        s.avail_out = cap;
        if (lzma_code(&s, LZMA_FINISH) != LZMA_STREAM_END)
            return 0;
        size_t n = cap - s.avail_out;
        lzma_end(&s);
        return n;
    }
    if (!strcmp(fmt, "lz4")) {
        uint32_t magic = 0x184c2102;
        memcpy(out, &magic, 4);
        int n = LZ4_compress_default((const char *)in, (char *)out + 8, (int)len, (int)cap - 8);
        uint32_t bsz = (uint32_t)n;
        memcpy(out + 4, &bsz, 4);
        return 8 + (size_t)n;
    }
    return 0;
}

static void test_bzimage_formats(void **state)
{
    static uint8_t vmlinux[8192], payload[16384], image[32768];
    const uint8_t code[] = { 0x90, 0x90, 0xf4 };
    size_t vlen = make_elf(vmlinux, 0xffffffff81000000ULL, 0x1000000, 0x1000000, false, code,
                           sizeof(code));
    const char *fmts[] = { "gzip", "zstd", "xz", "lzma", "lz4" };
    struct guest_ram ram;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_init(&ram, 64ULL << 20, "t", &err), 0);
    for (size_t f = 0; f < sizeof(fmts) / sizeof(fmts[0]); f++) {
        size_t plen = compress_with(fmts[f], vmlinux, vlen, payload, sizeof(payload));
        assert_true(plen > 0);
        assert_string_equal(decompress_format(payload, plen), fmts[f]);
        uint32_t size_trailer = (uint32_t)vlen; /* the kernel appends the size */
        memcpy(payload + plen, &size_trailer, 4);
        plen += 4;
        memset(image, 0, sizeof(image));
        image[0x1f1] = 1;                           /* setup_sects: setup = 1024 bytes */
        image[0x1fe] = 0x55;
        image[0x1ff] = 0xaa;
        image[0x201] = 0x60;                        /* header length */
        memcpy(image + 0x202, "HdrS", 4);
        uint16_t ver = 0x20f, xlf = 1;
        memcpy(image + 0x206, &ver, 2);
        memcpy(image + 0x236, &xlf, 2);
        uint32_t cmdsz = 2048, poff = 0, pl = (uint32_t)plen;
        memcpy(image + 0x238, &cmdsz, 4);
        memcpy(image + 0x248, &poff, 4);
        memcpy(image + 0x24c, &pl, 4);
        memcpy(image + 1024, payload, plen);
        struct boot_input in = { .kernel_buf = image, .kernel_len = 1024 + plen, .cmdline = "console=ttyS0" };
        struct boot_result res;
        gw_error_init(&err);
        int r = boot_load(&ram, &in, &res, &err);
        if (r)
            fail_msg("%s: %s", fmts[f], err.msg);
        assert_int_equal(res.kind, BOOT_LINUX64);
        assert_int_equal(res.regs.rip, 0x1000000);
        assert_int_equal(res.regs.rsi, BOOT_ZERO_PAGE_ADDR);
        assert_memory_equal(ram.host + 0x1000000, code, sizeof(code));
        assert_int_equal(ram.host[BOOT_ZERO_PAGE_ADDR + 0x210], 0xff);   /* type_of_loader */
        assert_true(ram.host[BOOT_ZERO_PAGE_ADDR + 0x1e8] >= 4);         /* e820 entries */
        /* Truncating the payload is a clean error. */
        in.kernel_len = 1024 + plen / 2;
        gw_error_init(&err);
        assert_true(boot_load(&ram, &in, &res, &err) < 0);
        /* Corrupt the compressed data. */
        memset(image + 1024 + 16, 0x5a, plen / 2 > 32 ? 32 : plen / 4);
        in.kernel_len = 1024 + plen;
        gw_error_init(&err);
        assert_true(boot_load(&ram, &in, &res, &err) < 0);
    }
    guest_ram_fini(&ram);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e820),
        cmocka_unit_test(test_pvh),
        cmocka_unit_test(test_bzimage_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
