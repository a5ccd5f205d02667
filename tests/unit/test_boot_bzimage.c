/* Linux bzImage: payload decompression in every format the kernel uses
 * (made here with the libraries), setup-header parsing, the zero page and
 * page tables of a synthetic bzImage, and hostile images. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <elf.h>
#include <errno.h>
#include <lz4.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <unistd.h>

#include "boot/boot.h"
#include "boot/bzimage.h"
#include "boot/decompress.h"
#include "common/log.h"

#define MiB (1ULL << 20)
#define KLOAD 0x1000000ULL   /* LOAD_PHYSICAL_ADDR */
#define KVIRT 0xffffffff81000000ULL

static const uint8_t code[] = { 0x90, 0x90, 0xf4, 0xeb, 0xfd };

/* A vmlinux-like ELF64: one PT_LOAD linked at KVIRT, loaded at paddr,
 * entry given as `entry`. `pad` bytes of zeros make it bigger. */
static uint8_t *make_vmlinux_at(uint64_t paddr, uint64_t entry, size_t pad, size_t *len)
{
    size_t n = 4096 + sizeof(code) + pad;
    uint8_t *b = calloc(1, n);
    Elf64_Ehdr *eh = (Elf64_Ehdr *)b;
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
    eh->e_phnum = 1;
    Elf64_Phdr *ph = (Elf64_Phdr *)(b + sizeof(*eh));
    *ph = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = 4096, .p_vaddr = KVIRT, .p_paddr = paddr,
                        .p_filesz = sizeof(code) + pad, .p_memsz = sizeof(code) + pad + 0x10000 };
    memcpy(b + 4096, code, sizeof(code));
    for (size_t i = 0; i < pad; i += 4096) /* some non-zero content */
        b[4096 + sizeof(code) + i] = (uint8_t)(i >> 12);
    *len = n;
    return b;
}

static uint8_t *make_vmlinux(uint64_t entry, size_t pad, size_t *len)
{
    return make_vmlinux_at(KLOAD, entry, pad, len);
}

/* Compress as the kernel's build does; returns a malloc'd buffer ending in
 * the 4-byte uncompressed size the kernel appends. */
static uint8_t *compress_as(const char *fmt, const uint8_t *in, size_t len, size_t *out_len)
{
    size_t cap = len + len / 2 + 65536;
    uint8_t *out = malloc(cap + 4);
    size_t n = 0;
    if (!strcmp(fmt, "gzip")) {
        z_stream z = { 0 };
        assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
        z.next_in = (Bytef *)in;
        z.avail_in = (uInt)len;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
        n = z.total_out;
        deflateEnd(&z);
    } else if (!strcmp(fmt, "zstd")) {
        n = ZSTD_compress(out, cap, in, len, 19);
        assert_false(ZSTD_isError(n));
    } else if (!strcmp(fmt, "xz")) {
        assert_int_equal(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, len, out, &n, cap),
                         LZMA_OK);
    } else if (!strcmp(fmt, "lzma")) {
        lzma_stream s = LZMA_STREAM_INIT;
        lzma_options_lzma o;
        lzma_lzma_preset(&o, 6);
        assert_int_equal(lzma_alone_encoder(&s, &o), LZMA_OK);
        s.next_in = in;
        s.avail_in = len;
        s.next_out = out;
        s.avail_out = cap;
        assert_int_equal(lzma_code(&s, LZMA_FINISH), LZMA_STREAM_END);
        n = cap - s.avail_out;
        lzma_end(&s);
    } else if (!strcmp(fmt, "lz4")) {
        /* Legacy frame: magic, then blocks of <= 8 MiB input, each with a
         * 4-byte compressed size. */
        uint32_t magic = 0x184c2102;
        memcpy(out, &magic, 4);
        n = 4;
        for (size_t pos = 0; pos < len; pos += 8 * MiB) {
            size_t chunk = len - pos < 8 * MiB ? len - pos : 8 * MiB;
            int c = LZ4_compress_default((const char *)in + pos, (char *)out + n + 4, (int)chunk,
                                         (int)(cap - n - 4));
            assert_true(c > 0);
            uint32_t csz = (uint32_t)c;
            memcpy(out + n, &csz, 4);
            n += 4 + (size_t)c;
        }
    } else if (!strcmp(fmt, "none")) {
        memcpy(out, in, len);
        n = len;
    } else {
        fail_msg("unknown format %s", fmt);
    }
    uint32_t size = (uint32_t)len;
    memcpy(out + n, &size, 4);
    *out_len = n + 4;
    return out;
}

static const char *const formats[] = { "gzip", "xz", "lzma", "lz4", "zstd", "none" };

static void test_decompress_each_format(void **state)
{
    size_t vlen;
    uint8_t *v = make_vmlinux(KLOAD, 64 * 1024, &vlen);
    for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
        size_t plen;
        uint8_t *p = compress_as(formats[f], v, vlen, &plen);
        assert_string_equal(decompress_format(p, plen), formats[f]);
        struct gw_error err;
        gw_error_init(&err);
        uint8_t *out = NULL;
        size_t olen = 0;
        if (decompress_payload(p, plen - (strcmp(formats[f], "none") ? 0 : 4), 64 * MiB, &out,
                               &olen, &err) < 0)
            fail_msg("%s: %s", formats[f], err.msg);
        assert_int_equal(olen, vlen);
        assert_memory_equal(out, v, vlen);
        free(out);
        /* The output cap holds. */
        gw_error_init(&err);
        out = NULL;
        assert_true(decompress_payload(p, plen, vlen / 2, &out, &olen, &err) < 0);
        assert_null(out);
        assert_true(gw_error_is_set(&err));
        /* Corrupt data is an error, never a crash (the raw ELF is copied as is). */
        if (strcmp(formats[f], "none")) {
            for (size_t i = 12; i < plen - 4; i += 7)
                p[i] ^= 0x5a;
            gw_error_init(&err);
            out = NULL;
            int r = decompress_payload(p, plen, 64 * MiB, &out, &olen, &err);
            if (r == 0) /* lz4 may decode garbage into garbage: never the original */
                assert_true(olen != vlen || memcmp(out, v, vlen) != 0);
            free(out);
            /* Truncated streams. */
            for (size_t cut = 0; cut < plen; cut += plen / 17 + 1) {
                gw_error_init(&err);
                out = NULL;
                r = decompress_payload(p, cut, 64 * MiB, &out, &olen, &err);
                if (r == 0)
                    assert_true(olen < vlen || memcmp(out, v, vlen) != 0);
                free(out);
            }
        }
        free(p);
    }
    free(v);
}

static void test_decompress_lz4_multiblock(void **state)
{
    /* Bigger than one 8 MiB legacy block, as real kernels are. */
    size_t vlen;
    uint8_t *v = make_vmlinux(KLOAD, 9 * MiB, &vlen);
    size_t plen;
    uint8_t *p = compress_as("lz4", v, vlen, &plen);
    struct gw_error err;
    gw_error_init(&err);
    uint8_t *out;
    size_t olen;
    if (decompress_payload(p, plen, 64 * MiB, &out, &olen, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(olen, vlen);
    assert_memory_equal(out, v, vlen);
    free(out);
    free(p);
    free(v);
}

static void test_decompress_unknown(void **state)
{
    struct gw_error err;
    uint8_t *out = NULL;
    size_t olen;
    const uint8_t junk[] = "just some bytes";
    const uint8_t bz2[] = "BZh91AY&SY";
    gw_error_init(&err);
    assert_int_equal(decompress_payload(junk, sizeof(junk), MiB, &out, &olen, &err), -ENOEXEC);
    gw_error_init(&err);
    assert_int_equal(decompress_payload(bz2, sizeof(bz2), MiB, &out, &olen, &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "bzip2"));
    gw_error_init(&err);
    assert_true(decompress_payload(junk, 0, MiB, &out, &olen, &err) < 0);
    assert_null(out);
}

/* The cap is the number of bytes of output: exactly max_out is accepted
 * (it used to need 1 MiB of headroom, 8 MiB for lz4, so that a small cap
 * refused every payload), one byte more is not. */
static void test_decompress_cap_exact(void **state)
{
    size_t vlen;
    uint8_t *v = make_vmlinux(KLOAD, 4096, &vlen);
    for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
        size_t plen;
        uint8_t *p = compress_as(formats[f], v, vlen, &plen);
        size_t in_len = plen - (strcmp(formats[f], "none") ? 0 : 4);
        struct gw_error err;
        uint8_t *out = NULL;
        size_t olen = 0;
        gw_error_init(&err);
        if (decompress_payload(p, in_len, vlen, &out, &olen, &err) < 0)
            fail_msg("%s with a cap of its size: %s", formats[f], err.msg);
        assert_int_equal(olen, vlen);
        assert_memory_equal(out, v, vlen);
        free(out);
        out = NULL;
        gw_error_init(&err);
        int r = decompress_payload(p, in_len, vlen - 1, &out, &olen, &err);
        if (r != -EFBIG)
            fail_msg("%s with a cap one byte short: %d (%zu bytes)", formats[f], r, olen);
        assert_null(out);
        if (!strstr(err.msg, formats[f]) || !strstr(err.msg, "more than"))
            fail_msg("%s: \"%s\"", formats[f], err.msg);
        free(p);
    }
    free(v);
}

/* An lzma header asking for a 1 GiB dictionary: refused for that, not as
 * "corrupt data". */
static void test_decompress_lzma_dictionary(void **state)
{
    uint8_t lz[64] = { 0x5d, 0x00, 0x00, 0x00, 0x40 }; /* props, dict 1 GiB */
    memset(lz + 5, 0xff, 8);                            /* size unknown */
    struct gw_error err;
    uint8_t *out = NULL;
    size_t olen;
    gw_error_init(&err);
    assert_string_equal(decompress_format(lz, sizeof(lz)), "lzma");
    assert_true(decompress_payload(lz, sizeof(lz), 64 * MiB, &out, &olen, &err) < 0);
    assert_null(out);
    if (!strstr(err.msg, "memory") || strstr(err.msg, "corrupt"))
        fail_msg("\"%s\"", err.msg);
}

/* ---- synthetic bzImage ---- */

#define SETUP_SECTS 3
#define SETUP_SIZE ((SETUP_SECTS + 1) * 512)
#define INIT_SIZE 0x800000

static uint8_t *make_bzimage(const uint8_t *payload, size_t plen, uint16_t version, size_t *len)
{
    size_t n = SETUP_SIZE + 100 + plen;
    uint8_t *k = calloc(1, n);
    k[BZ_SETUP_SECTS] = SETUP_SECTS;
    k[BZ_BOOT_FLAG] = 0x55;
    k[BZ_BOOT_FLAG + 1] = 0xaa;
    k[BZ_JUMP] = 0xeb;
    k[BZ_JUMP + 1] = 0x6a;                         /* header ends at 0x26c */
    memcpy(k + BZ_HEADER, "HdrS", 4);
    uint16_t xlf = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G;
    uint32_t cmdsz = 255, align = 0x200000, initrd_max = 0x7fffffff, init_size = INIT_SIZE;
    uint32_t poff = 100, pl = (uint32_t)plen;
    uint64_t pref = KLOAD;
    memcpy(k + BZ_VERSION, &version, 2);
    k[BZ_LOADFLAGS] = LOADFLAG_LOADED_HIGH;
    memcpy(k + BZ_KERNEL_ALIGNMENT, &align, 4);
    k[BZ_RELOCATABLE] = 1;
    memcpy(k + BZ_XLOADFLAGS, &xlf, 2);
    memcpy(k + BZ_CMDLINE_SIZE, &cmdsz, 4);
    memcpy(k + BZ_INITRD_ADDR_MAX, &initrd_max, 4);
    memcpy(k + BZ_PAYLOAD_OFFSET, &poff, 4);
    memcpy(k + BZ_PAYLOAD_LENGTH, &pl, 4);
    memcpy(k + BZ_PREF_ADDRESS, &pref, 8);
    memcpy(k + BZ_INIT_SIZE, &init_size, 4);
    memcpy(k + SETUP_SIZE + poff, payload, plen);
    *len = n;
    return k;
}

static uint8_t *make_compressed_bzimage(const char *fmt, uint64_t entry, size_t *len)
{
    size_t vlen, plen;
    uint8_t *v = make_vmlinux(entry, 0, &vlen);
    uint8_t *p = compress_as(fmt, v, vlen, &plen);
    uint8_t *k = make_bzimage(p, strcmp(fmt, "none") ? plen : vlen, 0x20f, len);
    free(p);
    free(v);
    return k;
}

static void test_parse_header(void **state)
{
    size_t len;
    uint8_t *k = make_compressed_bzimage("zstd", KLOAD, &len);
    struct bzimage_info bi;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(bzimage_parse(k, len, &bi, &err), 0);
    assert_int_equal(bi.version, 0x20f);
    assert_int_equal(bi.setup_sects, SETUP_SECTS);
    assert_int_equal(bi.setup_size, SETUP_SIZE);
    assert_int_equal(bi.header_end, 0x26c);
    assert_int_equal(bi.payload_offset, 100);
    assert_int_equal(bi.payload_length, len - SETUP_SIZE - 100);
    assert_int_equal(bi.init_size, INIT_SIZE);
    assert_int_equal(bi.kernel_alignment, 0x200000);
    assert_int_equal(bi.pref_address, KLOAD);
    assert_int_equal(bi.cmdline_size, 255);
    assert_int_equal(bi.initrd_addr_max, 0x7fffffff);
    assert_int_equal(bi.relocatable, 1);
    assert_true(bi.xloadflags & XLF_KERNEL_64);
    assert_string_equal(bi.compression, "zstd");
    uint8_t *v;
    size_t vlen;
    assert_int_equal(bzimage_extract(k, len, &bi, &v, &vlen, &err), 0);
    assert_memory_equal(v, ELFMAG, SELFMAG);
    free(v);
    /* setup_sects 0 means 4. */
    uint8_t *k4 = calloc(1, len + 512);
    memcpy(k4, k, SETUP_SIZE);
    memcpy(k4 + 5 * 512, k + SETUP_SIZE, len - SETUP_SIZE);
    k4[BZ_SETUP_SECTS] = 0;
    assert_int_equal(bzimage_parse(k4, len + 512, &bi, &err), 0);
    assert_int_equal(bi.setup_size, 5 * 512);
    assert_string_equal(bi.compression, "zstd");
    free(k4);
    free(k);
}

struct ram_fixture {
    struct guest_ram ram;
    struct gw_error err;
    struct boot_result res;
};

static int setup(void **state)
{
    struct ram_fixture *f = calloc(1, sizeof(*f));
    gw_error_init(&f->err);
    if (guest_ram_init(&f->ram, 128 * MiB, "t", &f->err) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct ram_fixture *f = *state;
    guest_ram_fini(&f->ram);
    free(f);
    return 0;
}

static int load(struct ram_fixture *f, const uint8_t *k, size_t len, const char *cmdline,
                const char *initrd)
{
    struct boot_input in = { .kernel_buf = k, .kernel_len = len, .cmdline = cmdline,
                             .initrd_path = initrd, .rsdp_addr = BOOT_ACPI_ADDR };
    gw_error_init(&f->err);
    return boot_load(&f->ram, &in, &f->res, &f->err);
}

static uint32_t zp32(struct ram_fixture *f, unsigned off)
{
    uint32_t v;
    memcpy(&v, f->ram.host + BOOT_ZERO_PAGE_ADDR + off, 4);
    return v;
}

static void check_zero_page(struct ram_fixture *f, const uint8_t *k, const char *cmdline)
{
    const uint8_t *zp = f->ram.host + BOOT_ZERO_PAGE_ADDR;
    assert_memory_equal(zp + BZ_HEADER, "HdrS", 4);
    assert_memory_equal(zp + BZ_VERSION, k + BZ_VERSION, 2);
    assert_memory_equal(zp + BZ_XLOADFLAGS, k + BZ_XLOADFLAGS, 2);
    assert_memory_equal(zp + BZ_INIT_SIZE, k + BZ_INIT_SIZE, 4);
    assert_int_equal(zp[BZ_TYPE_OF_LOADER], 0xff);
    assert_true(zp[BZ_LOADFLAGS] & LOADFLAG_CAN_USE_HEAP);
    assert_true(zp[BZ_LOADFLAGS] & LOADFLAG_LOADED_HIGH);
    assert_int_equal(zp[BP_SENTINEL], 0);
    assert_int_equal(zp32(f, BZ_CMD_LINE_PTR), BOOT_CMDLINE_ADDR);
    assert_int_equal(zp32(f, BP_EXT_CMD_LINE_PTR), 0);
    assert_string_equal((const char *)f->ram.host + BOOT_CMDLINE_ADDR, cmdline);
    uint64_t rsdp;
    memcpy(&rsdp, zp + BP_ACPI_RSDP_ADDR, 8);
    assert_int_equal(rsdp, BOOT_ACPI_ADDR);           /* acpi_rsdp_addr */
    /* Nothing past the header was copied from the file. */
    for (unsigned i = 0x26c; i < BP_E820_TABLE; i++)
        if (i != BP_E820_ENTRIES)
            assert_int_equal(zp[i], 0);
    struct e820_entry want[8];
    unsigned n = boot_build_e820(&f->ram, want, 8);
    assert_int_equal(zp[BP_E820_ENTRIES], n);
    for (unsigned i = 0; i < n; i++) {
        uint64_t a, s;
        uint32_t t;
        memcpy(&a, zp + BP_E820_TABLE + 20 * i, 8);
        memcpy(&s, zp + BP_E820_TABLE + 20 * i + 8, 8);
        memcpy(&t, zp + BP_E820_TABLE + 20 * i + 16, 4);
        assert_int_equal(a, want[i].addr);
        assert_int_equal(s, want[i].size);
        assert_int_equal(t, want[i].type);
    }
}

/* Walk the identity map the way the MMU does. */
static uint64_t translate(struct ram_fixture *f, uint64_t va)
{
    const uint64_t *pml4 = (const void *)(f->ram.host + BOOT_PML4_ADDR);
    uint64_t e = pml4[(va >> 39) & 511];
    assert_true(e & 1);
    const uint64_t *pdpt = (const void *)(f->ram.host + (e & ~0xfffULL));
    e = pdpt[(va >> 30) & 511];
    assert_true(e & 1);
    const uint64_t *pd = (const void *)(f->ram.host + (e & ~0xfffULL));
    e = pd[(va >> 21) & 511];
    assert_true((e & 0x83) == 0x83);
    return (e & ~0x1fffffULL) | (va & 0x1fffff);
}

static void test_load_each_format(void **state)
{
    struct ram_fixture *f = *state;
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        size_t len;
        uint8_t *k = make_compressed_bzimage(formats[i], KLOAD, &len);
        memset(f->ram.host + KLOAD, 0xcc, 0x20000);
        if (load(f, k, len, "console=ttyS0", NULL) < 0)
            fail_msg("%s: %s", formats[i], f->err.msg);
        assert_int_equal(f->res.kind, BOOT_LINUX64);
        assert_int_equal(f->res.entry, KLOAD);
        assert_int_equal(f->res.regs.rip, KLOAD);
        assert_int_equal(f->res.regs.rsi, BOOT_ZERO_PAGE_ADDR);
        assert_int_equal(f->res.regs.rflags, 0x2);
        assert_memory_equal(f->ram.host + KLOAD, code, sizeof(code));
        assert_int_equal(f->ram.host[KLOAD + sizeof(code)], 0); /* bss */
        assert_int_equal(f->ram.host[KLOAD + sizeof(code) + 0x10000], 0xcc);
        check_zero_page(f, k, "console=ttyS0");
        assert_non_null(strstr(f->res.desc, formats[i]));
        free(k);
    }
    for (uint64_t va = 0; va < 0x100000000ULL; va += 0x1234567)
        assert_int_equal(translate(f, va), va);
    assert_int_equal(translate(f, 0xffffffff), 0xffffffff);
}

static void test_entry_virtual(void **state)
{
    /* An ELF whose e_entry is virtual: converted through its segment. */
    struct ram_fixture *f = *state;
    size_t len;
    uint8_t *k = make_compressed_bzimage("gzip", KVIRT + 2, &len);
    if (load(f, k, len, NULL, NULL) < 0)
        fail_msg("%s", f->err.msg);
    assert_int_equal(f->res.regs.rip, KLOAD + 2);
    free(k);
    k = make_compressed_bzimage("gzip", 0x12345678, &len); /* in no segment */
    assert_true(load(f, k, len, NULL, NULL) < 0);
    assert_non_null(strstr(f->err.msg, "entry point"));
    free(k);
}

static void test_initrd_placement(void **state)
{
    struct ram_fixture *f = *state;
    size_t len;
    uint8_t *k = make_compressed_bzimage("zstd", KLOAD, &len);
    char path[] = "/tmp/godwit-initrd-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static uint8_t data[70000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 13 + 1);
    assert_int_equal(write(fd, data, sizeof(data)), (ssize_t)sizeof(data));
    if (load(f, k, len, "", path) < 0)
        fail_msg("%s", f->err.msg);
    uint32_t at = zp32(f, BZ_RAMDISK_IMAGE), size = zp32(f, BZ_RAMDISK_SIZE);
    assert_int_equal(size, sizeof(data));
    assert_int_equal(at % 4096, 0);
    assert_true(at + size <= 128 * MiB && at + size > 128 * MiB - 4096);
    assert_int_equal(zp32(f, BP_EXT_RAMDISK_IMAGE), 0);
    assert_memory_equal(f->ram.host + at, data, sizeof(data));
    /* initrd_addr_max below the kernel's init_size area: no room. */
    uint32_t max = KLOAD + INIT_SIZE - 1;
    memcpy(k + BZ_INITRD_ADDR_MAX, &max, 4);
    assert_true(load(f, k, len, "", path) < 0);
    assert_non_null(strstr(f->err.msg, "does not fit"));
    /* ... and just above it: placed right under initrd_addr_max. */
    max = KLOAD + INIT_SIZE + 0x20000 - 1;
    memcpy(k + BZ_INITRD_ADDR_MAX, &max, 4);
    if (load(f, k, len, "", path) < 0)
        fail_msg("%s", f->err.msg);
    at = zp32(f, BZ_RAMDISK_IMAGE);
    assert_true(at >= KLOAD + INIT_SIZE && at + sizeof(data) <= max + 1ULL);
    close(fd);
    unlink(path);
    free(k);
}

static void test_reject_bad_images(void **state)
{
    struct ram_fixture *f = *state;
    size_t len;
    uint8_t *k = make_compressed_bzimage("gzip", KLOAD, &len);
    uint8_t *c = malloc(len);
#define RESET() memcpy(c, k, len)
#define EXPECT(l, needle)                                                                   \
    do {                                                                                    \
        assert_true(load(f, c, (l), NULL, NULL) < 0);                                       \
        if (!strstr(f->err.msg, needle))                                                    \
            fail_msg("\"%s\" lacks \"%s\"", f->err.msg, needle);                            \
    } while (0)
    RESET();
    uint16_t v = 0x20b;
    memcpy(c + BZ_VERSION, &v, 2);
    EXPECT(len, "too old");
    RESET();
    c[BZ_XLOADFLAGS] = 0;
    EXPECT(len, "64-bit");
    RESET();
    uint32_t big = 0xfffffff0;
    memcpy(c + BZ_PAYLOAD_LENGTH, &big, 4);
    EXPECT(len, "outside the file");
    RESET();
    memcpy(c + BZ_PAYLOAD_OFFSET, &big, 4);
    EXPECT(len, "outside the file");
    RESET();
    c[BZ_SETUP_SECTS] = 0xff;
    EXPECT(len, "outside the file");
    RESET();
    c[BZ_JUMP + 1] = 0xff; /* header claims to run past the file */
    EXPECT(0x280, "setup header");
    RESET();
    memset(c + SETUP_SIZE + 100, 0x33, 8); /* unknown compression */
    EXPECT(len, "compression");
    RESET();
    char cmd[300];
    memset(cmd, 'c', sizeof(cmd) - 1);
    cmd[sizeof(cmd) - 1] = 0;
    assert_true(load(f, c, len, cmd, NULL) < 0);
    assert_int_equal(f->err.code, E2BIG);
    /* Every truncation of the image fails cleanly. */
    for (size_t cut = 0; cut < len; cut += (cut < 0x300 ? 1 : 37)) {
        uint8_t *t = malloc(cut ? cut : 1);
        memcpy(t, k, cut);
        assert_true(load(f, t, cut, NULL, NULL) < 0);
        free(t);
    }
    /* A payload that is an ELF not fitting RAM. */
    size_t vlen, plen;
    uint8_t *vm = make_vmlinux(KLOAD, 0, &vlen);
    ((Elf64_Phdr *)(vm + sizeof(Elf64_Ehdr)))->p_paddr = 1ULL << 33;
    uint8_t *p = compress_as("xz", vm, vlen, &plen);
    free(c);
    c = make_bzimage(p, plen, 0x20f, &len);
    EXPECT(len, "does not fit");
    assert_non_null(strstr(f->err.msg, "decompressed kernel"));
    free(p);
    free(vm);
    free(c);
    free(k);
#undef RESET
#undef EXPECT
}

/* A header that ends before init_size (0x264): the loader would use
 * bytes the zero page does not carry. */
static void test_reject_short_header(void **state)
{
    size_t len;
    uint8_t *k = make_compressed_bzimage("gzip", KLOAD, &len);
    struct bzimage_info bi;
    struct gw_error err;
    k[BZ_JUMP + 1] = 0x4e; /* ends at 0x250, after payload_length */
    gw_error_init(&err);
    assert_int_equal(bzimage_parse(k, len, &bi, &err), -ENOEXEC);
    assert_non_null(strstr(err.msg, "setup header"));
    k[BZ_JUMP + 1] = 0x62; /* 0x264: init_size inside */
    gw_error_init(&err);
    if (bzimage_parse(k, len, &bi, &err) < 0)
        fail_msg("%s", err.msg);
    free(k);
}

static char *temp_initrd(size_t size)
{
    static char path[] = "/tmp/godwit-initrd-XXXXXX";
    strcpy(path, "/tmp/godwit-initrd-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint8_t *data = malloc(size);
    memset(data, 0x77, size);
    assert_int_equal(write(fd, data, size), (ssize_t)size);
    free(data);
    close(fd);
    return path;
}

/* A kernel loaded below 1 MiB with a small initrd_addr_max: the initrd
 * went right under that limit, over the EBDA and the ACPI tables at
 * 0xE0000 (written before the kernel is loaded). */
static void test_initrd_never_below_1mib(void **state)
{
    struct ram_fixture *f = *state;
    size_t vlen, plen, len;
    uint8_t *v = make_vmlinux_at(0x20000, 0x20000, 0, &vlen);
    uint8_t *p = compress_as("gzip", v, vlen, &plen);
    uint8_t *k = make_bzimage(p, plen, 0x20f, &len);
    uint32_t zero = 0, max = 0x17ffff;
    memcpy(k + BZ_INIT_SIZE, &zero, 4);
    memcpy(k + BZ_INITRD_ADDR_MAX, &max, 4);
    const char *initrd = temp_initrd(1 * MiB);
    memset(f->ram.host + BOOT_EBDA_START, 0x5a, BOOT_HIGH_MEM_START - BOOT_EBDA_START);
    assert_true(load(f, k, len, "", initrd) < 0);
    assert_non_null(strstr(f->err.msg, "does not fit"));
    assert_non_null(strstr(f->err.msg, "kernel's limit"));
    for (uint64_t a = BOOT_EBDA_START; a < BOOT_HIGH_MEM_START; a++)
        assert_int_equal(f->ram.host[a], 0x5a);
    /* Room above 1 MiB under the limit: it goes there. */
    max = 0x2fffff;
    memcpy(k + BZ_INITRD_ADDR_MAX, &max, 4);
    if (load(f, k, len, "", initrd) < 0)
        fail_msg("%s", f->err.msg);
    assert_int_equal(zp32(f, BZ_RAMDISK_IMAGE), 0x200000);
    for (uint64_t a = BOOT_EBDA_START; a < BOOT_HIGH_MEM_START; a++)
        assert_int_equal(f->ram.host[a], 0x5a);
    unlink(initrd);
    free(k);
    free(p);
    free(v);
}

/* A vmlinux in RAM above 4 GiB: the identity map the kernel starts on
 * covers 4 GiB only, so it would fault on its first instruction. */
static void test_reject_vmlinux_above_4g(void **state)
{
    struct guest_ram ram;
    struct gw_error err;
    gw_error_init(&err);
    if (guest_ram_init(&ram, 3 * 1024 * MiB + 64 * MiB, "t", &err) < 0)
        fail_msg("%s", err.msg);
    size_t vlen, plen, len;
    uint8_t *v = make_vmlinux_at(1ULL << 32, 1ULL << 32, 0, &vlen);
    uint8_t *p = compress_as("gzip", v, vlen, &plen);
    uint8_t *k = make_bzimage(p, plen, 0x20f, &len);
    struct boot_input in = { .kernel_buf = k, .kernel_len = len };
    struct boot_result res;
    assert_int_equal(boot_load(&ram, &in, &res, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "above the 4 GiB"));
    guest_ram_fini(&ram);
    free(k);
    free(p);
    free(v);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decompress_each_format),
        cmocka_unit_test(test_decompress_lz4_multiblock),
        cmocka_unit_test(test_decompress_unknown),
        cmocka_unit_test(test_decompress_cap_exact),
        cmocka_unit_test(test_decompress_lzma_dictionary),
        cmocka_unit_test(test_reject_short_header),
        cmocka_unit_test(test_reject_vmlinux_above_4g),
        cmocka_unit_test(test_parse_header),
        cmocka_unit_test_setup_teardown(test_load_each_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entry_virtual, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initrd_placement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_bad_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initrd_never_below_1mib, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
