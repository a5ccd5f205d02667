/* Typed stream records (stream_records.h): round trip of every record type,
 * zero-page detection, zstd, corruption of any byte, truncation at any
 * length, wrong magic/version, oversized lengths refused before any
 * allocation, unknown optional/mandatory records, pfns outside the memory
 * map, hostile vCPU/device bodies, VCPU_STATE versions 1 and 2 (the CPUID
 * and TSC_KHZ sections, the section set of each version, the largest
 * record), sticky errors, and fd io over a socketpair with short reads and
 * writes. No /dev/kvm needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include "migration/stream_devices.h"
#include "migration/stream_records.h"

#define RAM_PAGES 1024 /* two regions of 2 MiB: pfn 0..511 and 1024..1535 */

static const struct stream_vm_info vm_info = {
    .name = "test-vm",
    .uuid = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 },
    .nr_vcpus = 2,
    .ram_size = 4 << 20,
    .nr_regions = 2,
    .regions = { { 0, 2 << 20 }, { 4 << 20, 2 << 20 } },
};

struct wbuf {
    struct stream s;
    struct stream_membuf m;
};

static void wopen(struct wbuf *w)
{
    memset(w, 0, sizeof(*w));
    stream_init(&w->s, &stream_mem_ops, &w->m);
}

static void wclose(struct wbuf *w)
{
    stream_fini(&w->s);
    free(w->m.out);
}

struct rbuf {
    struct stream s;
    struct stream_membuf m;
    struct stream_vm_info vm;
};

static int ropen(struct rbuf *r, const uint8_t *d, size_t len)
{
    memset(r, 0, sizeof(*r));
    r->m.data = d;
    r->m.len = len;
    stream_init(&r->s, &stream_mem_ops, &r->m);
    return stream_read_header(&r->s, &r->vm);
}

/* Read a whole stream; returns 0 if valid and complete, else the error. */
static int read_stream(const uint8_t *d, size_t len, char *msg, size_t ml)
{
    struct rbuf r;
    int rc = ropen(&r, d, len);
    struct stream_rec rec;
    while (rc == 0 && (rc = stream_next_record(&r.s, &rec)) == 0)
        ;
    if (rc == -ENODATA)
        rc = 0;
    if (msg)
        snprintf(msg, ml, "%s", stream_error(&r.s));
    stream_fini(&r.s);
    return rc;
}

static uint8_t page_buf[16][4096];

/* A CPUID section (doc 4.5): count, zero, then entries of 10 words each
 * (struct kvm_cpuid_entry2: function, index, flags, eax, ebx, ecx, edx,
 * padding[3]). Leaf 7 twice with its two indexes (a pair is unique, not a
 * function); KVM's padding is carried as it is, unchecked. */
#define CPUID_WORDS(n) (2 + 10 * (n))
static const uint32_t cpuid_4[CPUID_WORDS(4)] = {
    4, 0,
    0, 0, 0, 0xd, 0x756e6547, 0x6c65746e, 0x49656e69, 0, 0, 0,
    1, 0, 0, 0x000306c3, 0x00010800, 0x7ffafbff, 0xbfebfbff, 0, 0, 0,
    7, 0, 1, 0, 0x000027ab, 0, 0, 0, 0, 0,
    7, 1, 1, 0x10, 0, 0, 0, 0x5a, 0, 0,
};
static const uint32_t tsc_khz_sec[2] = { 2400000, 0 };

/* A full version 2 section list: tags 1..11 in order, CPUID and TSC_KHZ
 * last (the tests that build version 1 lists drop those two). */
static void fill_sections(struct stream_section *sec, unsigned *n)
{
    static uint8_t regs[144], sregs[312], xsave[4160], lapic[1024], events[64], dbg[128];
    static uint8_t xcrs[392];
    static uint8_t msrs[8 + 2 * 16];
    static uint32_t mp = 3;
    regs[128] = 0x42; /* rip */
    xsave[4100] = 9;
    uint32_t cnt = 2, idx0 = 0x10, idx1 = 0xc0000080;
    uint64_t v0 = 1234, v1 = 0x500;
    memcpy(msrs, &cnt, 4);
    memcpy(msrs + 8, &idx0, 4);
    memcpy(msrs + 16, &v0, 8);
    memcpy(msrs + 24, &idx1, 4);
    memcpy(msrs + 32, &v1, 8);
    unsigned k = 0;
    sec[k++] = (struct stream_section){ GWS_SEC_REGS, sizeof(regs), regs };
    sec[k++] = (struct stream_section){ GWS_SEC_SREGS, sizeof(sregs), sregs };
    sec[k++] = (struct stream_section){ GWS_SEC_XSAVE, sizeof(xsave), xsave };
    sec[k++] = (struct stream_section){ GWS_SEC_XCRS, sizeof(xcrs), xcrs };
    sec[k++] = (struct stream_section){ GWS_SEC_MSRS, sizeof(msrs), msrs };
    sec[k++] = (struct stream_section){ GWS_SEC_LAPIC, sizeof(lapic), lapic };
    sec[k++] = (struct stream_section){ GWS_SEC_EVENTS, sizeof(events), events };
    sec[k++] = (struct stream_section){ GWS_SEC_MP_STATE, 4, &mp };
    sec[k++] = (struct stream_section){ GWS_SEC_DEBUGREGS, sizeof(dbg), dbg };
    sec[k++] = (struct stream_section){ GWS_SEC_CPUID, sizeof(cpuid_4), cpuid_4 };
    sec[k++] = (struct stream_section){ GWS_SEC_TSC_KHZ, sizeof(tsc_khz_sec), tsc_khz_sec };
    *n = k;
}

/* A stream with one record of every type. */
static void build_all(struct wbuf *w, int zlevel)
{
    wopen(w);
    for (int i = 0; i < 16; i++)
        memset(page_buf[i], (i % 2) ? 0 : i + 1, 4096);
    assert_int_equal(stream_write_header(&w->s, &vm_info), 0);
    const char *txt = "hello";
    struct iovec t = { (void *)txt, 5 };
    assert_int_equal(stream_write_record(&w->s, GWS_INFO, &t, 1), 0);
    assert_int_equal(stream_set_compress(&w->s, zlevel), 0);
    uint64_t pfn[16];
    const void *pg[16];
    for (int i = 0; i < 16; i++) {
        pfn[i] = i < 8 ? (uint64_t)i * 3 : 1024 + (uint64_t)i;
        pg[i] = page_buf[i];
    }
    assert_int_equal(stream_write_pages(&w->s, pfn, pg, 16), 0);
    assert_int_equal(stream_write_eoi(&w->s, 1, 16), 0);
    struct stream_section sec[GWS_SEC_MAX];
    unsigned n;
    fill_sections(sec, &n);
    assert_int_equal(stream_write_vcpu(&w->s, 1, sec, n), 0);
    uint64_t clock = 777;
    assert_int_equal(stream_write_device(&w->s, "kvmclock", 0, 1, &clock, 8), 0);
    assert_int_equal(stream_write_eos(&w->s), 0);
    assert_int_equal(w->m.out_len % 8, 0);
}

static void check_all(const uint8_t *d, size_t len, bool zstd)
{
    struct rbuf r;
    assert_int_equal(ropen(&r, d, len), 0);
    assert_string_equal(r.vm.name, "test-vm");
    assert_int_equal(r.vm.nr_vcpus, 2);
    assert_int_equal(r.vm.nr_regions, 2);
    assert_int_equal(r.vm.regions[1].gpa, 4 << 20);
    assert_memory_equal(r.vm.uuid, vm_info.uuid, 16);
    struct stream_rec rec;
    int seen[8] = { 0 };
    unsigned data_pages = 0, zero_pages = 0;
    int rc;
    while ((rc = stream_next_record(&r.s, &rec)) == 0) {
        switch (rec.type) {
        case GWS_INFO:
            assert_int_equal(rec.u.text.len, 5);
            assert_memory_equal(rec.u.text.text, "hello", 5);
            seen[0]++;
            break;
        case GWS_PAGE_DATA:
        case GWS_PAGE_DATA_ZSTD:
            assert_int_equal(rec.type, zstd ? GWS_PAGE_DATA_ZSTD : GWS_PAGE_DATA);
            for (uint32_t i = 0; i < rec.u.pages.count; i++) {
                uint64_t pfn = rec.u.pages.pfn[i];
                int idx = pfn < 1024 ? (int)(pfn / 3) : (int)(pfn - 1024);
                assert_memory_equal(rec.u.pages.data + i * 4096ULL, page_buf[idx], 4096);
                assert_false(stream_page_is_zero(rec.u.pages.data + i * 4096ULL));
            }
            data_pages += rec.u.pages.count;
            seen[1]++;
            break;
        case GWS_ZERO_PAGES:
            assert_null(rec.u.pages.data);
            for (uint32_t i = 0; i < rec.u.pages.count; i++)
                assert_true(rec.u.pages.pfn[i] % 2 == 1 || rec.u.pages.pfn[i] % 3 == 0);
            zero_pages += rec.u.pages.count;
            seen[2]++;
            break;
        case GWS_END_OF_ITERATION:
            assert_int_equal(rec.u.eoi.pass, 1);
            assert_int_equal(rec.u.eoi.pages, 16);
            seen[3]++;
            break;
        case GWS_VCPU_STATE:
            assert_int_equal(rec.u.vcpu.id, 1);
            assert_int_equal(rec.u.vcpu.version, STREAM_VCPU_VERSION);
            assert_int_equal(rec.u.vcpu.nsec, 11);
            for (unsigned i = 0; i < rec.u.vcpu.nsec; i++)
                assert_int_equal(rec.u.vcpu.sec[i].tag, GWS_SEC_REGS + i);
            assert_int_equal(((const uint8_t *)rec.u.vcpu.sec[0].data)[128], 0x42);
            assert_int_equal(rec.u.vcpu.sec[2].len, 4160);
            assert_int_equal(((const uint8_t *)rec.u.vcpu.sec[2].data)[4100], 9);
            assert_int_equal(rec.u.vcpu.sec[9].len, sizeof(cpuid_4));
            assert_memory_equal(rec.u.vcpu.sec[9].data, cpuid_4, sizeof(cpuid_4));
            assert_int_equal(rec.u.vcpu.sec[10].len, GWS_SEC_TSC_KHZ_LEN);
            assert_memory_equal(rec.u.vcpu.sec[10].data, tsc_khz_sec, sizeof(tsc_khz_sec));
            seen[4]++;
            break;
        case GWS_DEVICE_STATE:
            assert_string_equal(rec.u.device.id, "kvmclock");
            assert_int_equal(rec.u.device.len, 8);
            assert_int_equal(rec.u.device.version, 1);
            seen[5]++;
            break;
        case GWS_END_OF_STREAM:
            seen[6]++;
            break;
        default:
            fail_msg("unexpected record 0x%x", rec.type);
        }
    }
    assert_int_equal(rc, -ENODATA);
    assert_int_equal(data_pages, 8);
    assert_int_equal(zero_pages, 8);
    for (int i = 0; i < 7; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(r.s.pages, 8);
    assert_int_equal(r.s.zero_pages, 8);
    stream_fini(&r.s);
}

static void test_round_trip_every_type(void **state)
{
    struct wbuf w;
    build_all(&w, 0);
    check_all(w.m.out, w.m.out_len, false);
    assert_int_equal(w.s.zero_pages, 8);
    assert_int_equal(w.s.pages, 8);
    wclose(&w);
}

static void test_zstd_round_trip(void **state)
{
    struct wbuf w;
    build_all(&w, 1);
    check_all(w.m.out, w.m.out_len, true);
    assert_int_equal(w.s.zstd_pages, 8);
    wclose(&w);
    /* Incompressible pages fall back to PAGE_DATA. */
    static uint8_t rnd[4][4096];
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < sizeof(rnd); i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ((uint8_t *)rnd)[i] = (uint8_t)x;
    }
    wopen(&w);
    uint64_t pfn[4] = { 1, 2, 3, 4 };
    const void *pg[4] = { rnd[0], rnd[1], rnd[2], rnd[3] };
    stream_write_header(&w.s, &vm_info);
    stream_set_compress(&w.s, -5);
    assert_int_equal(stream_write_pages(&w.s, pfn, pg, 4), 0);
    assert_int_equal(stream_write_eos(&w.s), 0);
    assert_int_equal(w.s.zstd_pages, 0);
    struct rbuf r;
    assert_int_equal(ropen(&r, w.m.out, w.m.out_len), 0);
    struct stream_rec rec;
    assert_int_equal(stream_next_record(&r.s, &rec), 0);
    assert_int_equal(rec.type, GWS_PAGE_DATA);
    assert_memory_equal(rec.u.pages.data, rnd, sizeof(rnd));
    stream_fini(&r.s);
    wclose(&w);
    assert_int_equal(stream_set_compress(&w.s, 1000), -EINVAL);
}

static void test_zero_detection(void **state)
{
    static uint8_t pg[1200][4096];
    const void *p[1200];
    uint64_t pfn[1200];
    memset(pg, 0, sizeof(pg));
    for (int i = 0; i < 1200; i++) {
        p[i] = pg[i];
        pfn[i] = i < 512 ? (uint64_t)i : 1024 + (uint64_t)(i - 512) % 512;
        if (i % 3 == 0)
            pg[i][(i * 37) % 4096] = 1; /* non-zero somewhere, even the last byte */
    }
    pg[3][4095] = 0x80;
    assert_false(stream_page_is_zero(pg[3]));
    assert_true(stream_page_is_zero(pg[1]));
    struct wbuf w;
    wopen(&w);
    stream_write_header(&w.s, &vm_info);
    assert_int_equal(stream_write_pages(&w.s, pfn, p, 1200), 0);
    assert_int_equal(stream_write_eos(&w.s), 0);
    assert_int_equal(w.s.pages, 400);
    assert_int_equal(w.s.zero_pages, 800);
    /* The stream is small: zero pages cost 8 bytes each. */
    assert_true(w.m.out_len < 400 * 4104 + 800 * 8 + 4096);
    struct rbuf r;
    assert_int_equal(ropen(&r, w.m.out, w.m.out_len), 0);
    struct stream_rec rec;
    unsigned z = 0, d = 0;
    while (stream_next_record(&r.s, &rec) == 0) {
        if (rec.type == GWS_ZERO_PAGES)
            z += rec.u.pages.count;
        if (rec.type == GWS_PAGE_DATA) {
            for (uint32_t i = 0; i < rec.u.pages.count; i++)
                assert_false(stream_page_is_zero(rec.u.pages.data + 4096ULL * i));
            d += rec.u.pages.count;
            assert_true(rec.u.pages.count <= GWS_MAX_BATCH);
        }
    }
    assert_int_equal(z, 800);
    assert_int_equal(d, 400);
    stream_fini(&r.s);
    wclose(&w);
}

static void test_corrupt_any_byte(void **state)
{
    struct wbuf w;
    build_all(&w, 1);
    size_t len = w.m.out_len;
    uint8_t *c = malloc(len);
    char msg[512];
    for (size_t i = 0; i < len; i++) {
        memcpy(c, w.m.out, len);
        c[i] ^= 0x5a;
        assert_true(read_stream(c, len, msg, sizeof(msg)) < 0);
        assert_true(msg[0] != 0);
        if (i >= 16 + 8 && i < 16 + 8 + 120) /* header body */
            assert_non_null(strstr(msg, "record 1 (HEADER) at offset 16: checksum mismatch"));
    }
    free(c);
    wclose(&w);
}

static void test_truncated_anywhere(void **state)
{
    struct wbuf w;
    build_all(&w, 0);
    char msg[512];
    for (size_t cut = 0; cut < w.m.out_len; cut++) {
        assert_true(read_stream(w.m.out, cut, msg, sizeof(msg)) < 0);
        if (!strstr(msg, "truncated")) fail_msg("cut %zu: %s", cut, msg);
        if (cut > 200 && cut % 8 == 0)
            cut += 37; /* speed */
    }
    assert_int_equal(read_stream(w.m.out, w.m.out_len, msg, sizeof(msg)), 0);
    wclose(&w);
}

static void test_magic_version(void **state)
{
    struct wbuf w;
    build_all(&w, 0);
    char msg[512];
    w.m.out[0] = 'X';
    assert_int_equal(read_stream(w.m.out, w.m.out_len, msg, sizeof(msg)), -EPROTO);
    assert_non_null(strstr(msg, "bad magic"));
    w.m.out[0] = 'G';
    w.m.out[8] = 7;
    assert_int_equal(read_stream(w.m.out, w.m.out_len, msg, sizeof(msg)), -EPROTONOSUPPORT);
    assert_non_null(strstr(msg, "version 7 is not supported"));
    w.m.out[8] = 1;
    w.m.out[12] = 1;
    assert_true(read_stream(w.m.out, w.m.out_len, msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "flags"));
    wclose(&w);
}

/* Preamble + HEADER, then raw records crafted with valid checksums. */
static void hostile_open(struct wbuf *w)
{
    wopen(w);
    assert_int_equal(stream_write_header(&w->s, &vm_info), 0);
}

static int hostile_read(struct wbuf *w, char *msg, size_t ml)
{
    stream_flush(&w->s);
    return read_stream(w->m.out, w->m.out_len, msg, ml);
}

static void test_oversized_before_allocation(void **state)
{
    uint32_t types[] = { GWS_PAGE_DATA, GWS_ZERO_PAGES, GWS_VCPU_STATE, GWS_END_OF_STREAM,
                         0x4444, GWS_OPTIONAL | 0x4444, GWS_CPU_MODEL };
    uint32_t lens[] = { GWS_MAX_PAGES_BODY + 1, GWS_MAX_ZERO_BODY + 1, GWS_MAX_VCPU_BODY + 1, 8,
                        GWS_MAX_BODY + 1, 0xfffffff8u, GWS_MAX_CPU_MODEL_BODY + 1 };
    for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct wbuf w;
        hostile_open(&w);
        stream_flush(&w.s);
        uint32_t h[2] = { types[i], lens[i] };
        struct iovec iov = { h, 8 };
        w.s.ops->writev(w.s.opaque, &iov, 1); /* a bare header: no body follows */
        struct rbuf r;
        assert_int_equal(ropen(&r, w.m.out, w.m.out_len), 0);
        size_t cap_before = r.s.rcap;
        struct stream_rec rec;
        assert_int_equal(stream_next_record(&r.s, &rec), -EMSGSIZE);
        assert_non_null(strstr(stream_error(&r.s), "exceeds the limit"));
        assert_non_null(strstr(stream_error(&r.s), "record 2 ("));
        assert_true(r.s.rcap == cap_before); /* nothing allocated for it */
        stream_fini(&r.s);
        wclose(&w);
    }
    /* The writer refuses too. */
    struct wbuf w;
    wopen(&w);
    static uint8_t big[GWS_MAX_VCPU_BODY + 8];
    struct iovec iov = { big, sizeof(big) };
    assert_int_equal(stream_write_record(&w.s, GWS_VCPU_STATE, &iov, 1), -EMSGSIZE);
    wclose(&w);
}

static void test_unknown_records(void **state)
{
    char msg[512];
    struct wbuf w;
    hostile_open(&w);
    struct iovec iov = { "abcdefghijk", 11 };
    stream_write_record(&w.s, GWS_OPTIONAL | 0x1234, &iov, 1);
    stream_write_record(&w.s, GWS_OPTIONAL | 0x0100, NULL, 0);
    stream_write_eos(&w.s);
    struct rbuf r;
    assert_int_equal(ropen(&r, w.m.out, w.m.out_len), 0);
    struct stream_rec rec;
    assert_int_equal(stream_next_record(&r.s, &rec), 0);
    assert_int_equal(rec.type, GWS_END_OF_STREAM);
    assert_int_equal(rec.index, 4);
    assert_int_equal(r.s.skipped, 2);
    assert_int_equal(stream_next_record(&r.s, &rec), -ENODATA);
    stream_fini(&r.s);
    wclose(&w);

    hostile_open(&w);
    stream_write_record(&w.s, 0x1234, &iov, 1);
    stream_write_eos(&w.s);
    assert_int_equal(hostile_read(&w, msg, sizeof(msg)), -EPROTO);
    if (!strstr(msg, "record 2 (unknown) at offset 168: unknown mandatory record type 0x1234")) fail_msg("%s", msg);
    wclose(&w);

    hostile_open(&w); /* reserved post-copy numbers are not valid in version 1 */
    stream_write_record(&w.s, GWS_DISCARD_PAGES, NULL, 0);
    assert_int_equal(hostile_read(&w, msg, sizeof(msg)), -EPROTO);
    assert_non_null(strstr(msg, "reserved"));
    wclose(&w);

    hostile_open(&w); /* optional, but only for a live post-copy migration */
    uint8_t id[16] = { 1 };
    struct iovec idv = { id, sizeof(id) };
    stream_write_record(&w.s, GWS_MIGRATION_ID, &idv, 1);
    assert_int_equal(hostile_read(&w, msg, sizeof(msg)), -EPROTO);
    assert_non_null(strstr(msg, "MIGRATION_ID belongs to a live post-copy migration"));
    wclose(&w);

    hostile_open(&w); /* records after END_OF_STREAM */
    stream_write_eos(&w.s);
    stream_write_eoi(&w.s, 1, 0);
    assert_int_equal(hostile_read(&w, msg, sizeof(msg)), -EPROTO);
    assert_non_null(strstr(msg, "after END_OF_STREAM"));
    wclose(&w);
}

static bool deny_pfn_5(void *opaque, uint64_t pfn)
{
    (*(int *)opaque)++;
    return pfn != 5;
}

static void test_pfn_outside_map(void **state)
{
    uint64_t bad[] = { 512, 1023, 1536, UINT64_MAX, 1ULL << 52 };
    static uint8_t pg[4096];
    pg[0] = 1;
    for (unsigned i = 0; i < 5; i++) {
        for (int zero = 0; zero < 2; zero++) {
            struct wbuf w;
            hostile_open(&w);
            pg[0] = (uint8_t)!zero;
            uint64_t pfn[2] = { 0, bad[i] };
            const void *p[2] = { pg, pg };
            stream_write_pages(&w.s, pfn, p, 2);
            stream_write_eos(&w.s);
            char msg[512];
            assert_int_equal(hostile_read(&w, msg, sizeof(msg)), -ERANGE);
            assert_non_null(strstr(msg, "is not guest RAM"));
            wclose(&w);
        }
    }
    /* The caller's own check. */
    struct wbuf w;
    hostile_open(&w);
    uint64_t pfn[3] = { 4, 5, 6 };
    const void *p[3] = { pg, pg, pg };
    stream_write_pages(&w.s, pfn, p, 3);
    stream_write_eos(&w.s);
    struct rbuf r;
    assert_int_equal(ropen(&r, w.m.out, w.m.out_len), 0);
    int calls = 0;
    stream_set_pfn_check(&r.s, deny_pfn_5, &calls);
    struct stream_rec rec;
    assert_int_equal(stream_next_record(&r.s, &rec), -ERANGE);
    assert_int_equal(calls, 2);
    stream_fini(&r.s);
    wclose(&w);
}

static void write_pages_raw(struct wbuf *w, uint32_t type, uint32_t count, uint32_t zlen,
                            const void *extra, size_t extra_len, uint32_t npfn)
{
    struct gws_pages h = { count, zlen };
    static uint64_t pfn[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    struct iovec iov[3] = { { &h, 8 }, { pfn, npfn * 8ULL }, { (void *)extra, extra_len } };
    stream_write_record(&w->s, type, iov, 3);
    stream_write_eos(&w->s);
}

static void test_page_record_shapes(void **state)
{
    static uint8_t data[8 * 4096];
    char msg[512];
    struct {
        uint32_t type, count, zlen;
        size_t extra;
        uint32_t npfn;
        const char *want;
    } cases[] = {
        { GWS_PAGE_DATA, 2, 0, 4096, 2, "does not match" },
        { GWS_PAGE_DATA, 0, 0, 0, 0, "page count 0" },
        { GWS_PAGE_DATA, 1000, 0, 4096, 1, "page count 1000" },
        { GWS_PAGE_DATA, 1, 5, 4096, 1, "reserved" },
        { GWS_ZERO_PAGES, 3, 0, 0, 2, "does not match" },
        { GWS_PAGE_DATA_ZSTD, 1, 0, 0, 1, "compressed length 0" },
        { GWS_PAGE_DATA_ZSTD, 1, 100, 50, 1, "does not match" },
        { GWS_PAGE_DATA_ZSTD, 1, 64, 64, 1, "zstd data" },
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct wbuf w;
        hostile_open(&w);
        write_pages_raw(&w, cases[i].type, cases[i].count, cases[i].zlen, data, cases[i].extra,
                        cases[i].npfn);
        assert_true(hostile_read(&w, msg, sizeof(msg)) < 0);
        if (!strstr(msg, cases[i].want))
            fail_msg("case %u: \"%s\" lacks \"%s\"", i, msg, cases[i].want);
        wclose(&w);
    }
    /* zstd data that expands to less (or more) than count pages. */
    for (int n = 1; n <= 3; n += 2) {
        uint8_t z[9000];
        struct wbuf w;
        /* compress n pages, claim 2 */
        size_t zl = ZSTD_compress(z, sizeof(z), data, (size_t)n * 4096, 1);
        hostile_open(&w);
        write_pages_raw(&w, GWS_PAGE_DATA_ZSTD, 2, (uint32_t)zl, z, zl, 2);
        assert_true(hostile_read(&w, msg, sizeof(msg)) < 0);
        assert_non_null(strstr(msg, "zstd data"));
        wclose(&w);
    }
}

static void test_hostile_state(void **state)
{
    char msg[512];
    struct stream_section sec[GWS_SEC_MAX];
    unsigned n;
    fill_sections(sec, &n);
    /* Writer-side checks. */
    struct wbuf w;
    hostile_open(&w);
    struct stream_section bad = sec[0];
    bad.len = 100;
    assert_int_equal(stream_write_vcpu(&w.s, 0, &bad, 1), -EPROTO);
    assert_non_null(strstr(stream_error(&w.s), "regs section is 100 bytes"));
    wclose(&w);
    hostile_open(&w);
    assert_int_equal(stream_write_device(&w.s, "bad id", 0, 1, "", 0), -EPROTO);
    wclose(&w);

    /* Reader-side: craft bodies by hand. */
    struct {
        const char *want;
        int what;
    } cases[] = {
        { "section xsave is missing", 0 },  { "appears twice", 1 },
        { "vCPU 5, the header says 2", 2 }, { "overruns", 3 },
        { "unknown vCPU section tag 77", 4 },
        { "vCPU state version 3 (this godwit reads 1..2)", 5 },
        { "padding is not zero", 6 },       { "count 3 does not match", 7 },
        { "vCPU state version 0 (this godwit reads 1..2)", 8 },
    };
    for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        static uint8_t body[GWS_MAX_VCPU_BODY];
        size_t len = 0;
        uint32_t version = cases[c].what == 5 ? 3 : cases[c].what == 8 ? 0 : STREAM_VCPU_VERSION;
        struct gws_vcpu h = { cases[c].what == 2 ? 5 : 0, version };
        memcpy(body, &h, 8);
        len = 8;
        for (unsigned i = 0; i < n; i++) {
            if (cases[c].what == 0 && sec[i].tag == GWS_SEC_XSAVE)
                continue;
            struct gws_section sh = { sec[i].tag, sec[i].len };
            if (cases[c].what == 4 && i == 1)
                sh.tag = 77;
            if (cases[c].what == 3 && i == n - 1)
                sh.len += 8;
            memcpy(body + len, &sh, 8);
            memcpy(body + len + 8, sec[i].data, sec[i].len);
            if (cases[c].what == 7 && sec[i].tag == GWS_SEC_MSRS)
                body[len + 8] = 3;
            len += 8 + sec[i].len;
            size_t pad = (8 - (sec[i].len & 7)) & 7;
            memset(body + len, cases[c].what == 6 ? 1 : 0, pad);
            len += pad;
        }
        if (cases[c].what == 1) {
            struct gws_section sh = { GWS_SEC_MP_STATE, 4 };
            memcpy(body + len, &sh, 8);
            memset(body + len + 8, 0, 8);
            len += 16;
        }
        hostile_open(&w);
        struct iovec iov = { body, len };
        stream_write_record(&w.s, GWS_VCPU_STATE, &iov, 1);
        stream_write_eos(&w.s);
        assert_true(hostile_read(&w, msg, sizeof(msg)) < 0);
        if (!strstr(msg, cases[c].want))
            fail_msg("case %u: \"%s\" lacks \"%s\"", c, msg, cases[c].want);
        assert_non_null(strstr(msg, "record 2 (VCPU_STATE) at offset 168"));
        wclose(&w);
    }
    /* Device ids. */
    const char *ids[] = { "", "a\"b", "serial0\0x" };
    for (unsigned i = 0; i < 3; i++) {
        struct gws_device d = { .instance = 0, .version = 1 };
        memcpy(d.id, ids[i], i == 2 ? 9 : strlen(ids[i]));
        hostile_open(&w);
        struct iovec iov = { &d, sizeof(d) };
        stream_write_record(&w.s, GWS_DEVICE_STATE, &iov, 1);
        stream_write_eos(&w.s);
        assert_int_equal(hostile_read(&w, msg, sizeof(msg)), -EPROTO);
        assert_non_null(strstr(msg, "device id"));
        wclose(&w);
    }
}

/* ---- VCPU_STATE version 2: CPUID and TSC_KHZ ---- */

/* A VCPU_STATE body {id, version} + sections, zero padding. */
static size_t vcpu_body(uint8_t *body, uint32_t id, uint32_t version,
                        const struct stream_section *sec, unsigned n)
{
    struct gws_vcpu h = { id, version };
    memcpy(body, &h, sizeof(h));
    size_t len = sizeof(h);
    for (unsigned i = 0; i < n; i++) {
        struct gws_section sh = { sec[i].tag, sec[i].len };
        memcpy(body + len, &sh, sizeof(sh));
        memcpy(body + len + sizeof(sh), sec[i].data, sec[i].len);
        len += sizeof(sh) + sec[i].len;
        size_t pad = (8 - (sec[i].len & 7)) & 7;
        memset(body + len, 0, pad);
        len += pad;
    }
    return len;
}

/* Tables of `count` distinct leaves, for the count limits. */
static uint32_t cpuid_256[CPUID_WORDS(256)], cpuid_257[CPUID_WORDS(257)];
/* cpuid_4 with one thing wrong. */
static uint32_t cpuid_count3[CPUID_WORDS(4)], cpuid_nonzero[CPUID_WORDS(4)];
static uint32_t cpuid_dup[CPUID_WORDS(4)], cpuid_dup_ext[CPUID_WORDS(3)];
static const uint32_t cpuid_none[2] = { 0, 0 };
static const uint32_t tsc_16[4] = { 2400000, 0, 0, 0 };
static const uint32_t tsc_nonzero[2] = { 2400000, 1 };
static const uint32_t tsc_unknown[2] = { 0, 0 };
static const uint64_t unknown_12 = 0;

static void cpuid_table(uint32_t *w, uint32_t count)
{
    memset(w, 0, 4 * CPUID_WORDS(count));
    w[0] = count;
    for (uint32_t i = 0; i < count; i++) {
        w[2 + 10 * i] = i < 128 ? i : 0x80000000u + i;  /* function */
        w[2 + 10 * i + 3] = ~i;                          /* eax */
    }
}

static void cpuid_fixtures(void)
{
    cpuid_table(cpuid_256, 256);
    cpuid_table(cpuid_257, 257);
    memcpy(cpuid_count3, cpuid_4, sizeof(cpuid_4));
    cpuid_count3[0] = 3;
    memcpy(cpuid_nonzero, cpuid_4, sizeof(cpuid_4));
    cpuid_nonzero[1] = 1;
    memcpy(cpuid_dup, cpuid_4, sizeof(cpuid_4));
    cpuid_dup[2 + 10 * 3 + 1] = 0; /* the last entry becomes leaf 7 index 0 again */
    static const uint32_t ext[CPUID_WORDS(3)] = {
        3, 0,
        0x80000008, 0, 0, 0x3030, 0, 0, 0, 0, 0, 0,
        0x80000000, 0, 0, 0x80000008, 0, 0, 0, 0, 0, 0,
        0x80000008, 0, 0, 0x3027, 0, 0, 0, 0, 0, 0, /* same pair, other values */
    };
    memcpy(cpuid_dup_ext, ext, sizeof(ext));
}

enum { SEC_KEEP, SEC_DROP, SEC_SET, SEC_ADD };

/* A section list: fill_sections' (version 1: without CPUID and TSC_KHZ),
 * then one change: the section `tag` dropped, its data replaced (added
 * if the list lacks it), or a second one added at the end. */
struct sec_case {
    uint32_t version;
    int op;
    uint32_t tag;
    const void *data;
    uint32_t len;
    const char *want; /* the reader's words after "vCPU 0: "; NULL: valid */
};

static unsigned case_sections(const struct sec_case *c, struct stream_section *sec)
{
    unsigned n, k = 0;
    fill_sections(sec, &n);
    if (c->version == 1)
        n -= 2;
    for (unsigned i = 0; i < n; i++) {
        if (sec[i].tag == c->tag && c->op == SEC_DROP)
            continue;
        if (sec[i].tag == c->tag && c->op == SEC_SET)
            sec[i] = (struct stream_section){ c->tag, c->len, c->data };
        sec[k++] = sec[i];
    }
    bool have = false;
    for (unsigned i = 0; i < k; i++)
        have |= sec[i].tag == c->tag;
    if (c->op == SEC_ADD || (c->op == SEC_SET && !have))
        sec[k++] = (struct stream_section){ c->tag, c->len, c->data };
    return k;
}

static const struct sec_case sec_cases[] = {
    /* Valid. */
    { 2, SEC_KEEP, 0, NULL, 0, NULL },
    { 2, SEC_DROP, GWS_SEC_XCRS, NULL, 0, NULL },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_256, sizeof(cpuid_256), NULL },
    { 2, SEC_SET, GWS_SEC_TSC_KHZ, tsc_unknown, 8, NULL },
    { 1, SEC_KEEP, 0, NULL, 0, NULL },
    { 1, SEC_DROP, GWS_SEC_XCRS, NULL, 0, NULL },
    /* CPUID. */
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_none, 8, "cpuid section: 0 entries (must be 1..256)" },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_257, sizeof(cpuid_257),
      "cpuid section: 257 entries (must be 1..256)" },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_4, 4, "cpuid section too short (4 bytes)" },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_4, 8 + 40 * 3,
      "cpuid section: count 4 does not match its 128 bytes" },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_4, 8 + 40 * 3 + 20,
      "cpuid section: count 4 does not match its 148 bytes" },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_count3, sizeof(cpuid_count3),
      "cpuid section: count 3 does not match its 168 bytes" },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_256, sizeof(cpuid_256) - 40,
      "cpuid section: count 256 does not match its 10208 bytes" },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_nonzero, sizeof(cpuid_nonzero),
      "cpuid section: the word after the count is not zero" },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_dup, sizeof(cpuid_dup),
      "cpuid section: leaf 0x7 index 0 appears twice" },
    { 2, SEC_SET, GWS_SEC_CPUID, cpuid_dup_ext, sizeof(cpuid_dup_ext),
      "cpuid section: leaf 0x80000008 index 0 appears twice" },
    /* TSC_KHZ. */
    { 2, SEC_SET, GWS_SEC_TSC_KHZ, tsc_khz_sec, 4, "tsc_khz section is 4 bytes, must be 8" },
    { 2, SEC_SET, GWS_SEC_TSC_KHZ, tsc_16, 16, "tsc_khz section is 16 bytes, must be 8" },
    { 2, SEC_SET, GWS_SEC_TSC_KHZ, tsc_nonzero, 8,
      "tsc_khz section: the word after the rate is not zero" },
    /* The section set of each version. */
    { 2, SEC_DROP, GWS_SEC_CPUID, NULL, 0, "section cpuid is missing" },
    { 2, SEC_DROP, GWS_SEC_TSC_KHZ, NULL, 0, "section tsc_khz is missing" },
    { 2, SEC_ADD, GWS_SEC_CPUID, cpuid_4, sizeof(cpuid_4), "section cpuid appears twice" },
    { 2, SEC_ADD, GWS_SEC_TSC_KHZ, tsc_khz_sec, 8, "section tsc_khz appears twice" },
    { 2, SEC_ADD, 12, &unknown_12, 8, "unknown vCPU section tag 12" },
    { 1, SEC_ADD, GWS_SEC_CPUID, cpuid_4, sizeof(cpuid_4),
      "section cpuid in a version 1 record" },
    { 1, SEC_ADD, GWS_SEC_TSC_KHZ, tsc_khz_sec, 8, "section tsc_khz in a version 1 record" },
    { 1, SEC_ADD, 12, &unknown_12, 8, "unknown vCPU section tag 12" },
    { 1, SEC_DROP, GWS_SEC_DEBUGREGS, NULL, 0, "section debugregs is missing" },
};

/* The reader takes a valid body as it is: its version, its sections in
 * order with their bytes. */
static void read_valid_vcpu(struct wbuf *w, uint32_t version, const struct stream_section *sec,
                            unsigned n)
{
    stream_flush(&w->s);
    struct rbuf r;
    assert_int_equal(ropen(&r, w->m.out, w->m.out_len), 0);
    struct stream_rec rec;
    assert_int_equal(stream_next_record(&r.s, &rec), 0);
    assert_int_equal(rec.type, GWS_VCPU_STATE);
    assert_int_equal(rec.u.vcpu.version, version);
    assert_int_equal(rec.u.vcpu.nsec, n);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(rec.u.vcpu.sec[i].tag, sec[i].tag);
        assert_int_equal(rec.u.vcpu.sec[i].len, sec[i].len);
        assert_memory_equal(rec.u.vcpu.sec[i].data, sec[i].data, sec[i].len);
    }
    assert_int_equal(stream_next_record(&r.s, &rec), 0);
    assert_int_equal(rec.type, GWS_END_OF_STREAM);
    stream_fini(&r.s);
}

/* One case through the reader (a hand-made record), the reader's list
 * check alone, and the writer, which writes version 2 only and writes
 * nothing for a list it refuses. */
static void run_sec_case(unsigned ci, const struct sec_case *c)
{
    static uint8_t body[GWS_MAX_VCPU_BODY];
    struct stream_section sec[GWS_SEC_MAX + 1];
    unsigned n = case_sections(c, sec);
    char check_want[512], want[600], msg[512];
    snprintf(check_want, sizeof(check_want), "vCPU 0: %s", c->want ? c->want : "");
    snprintf(want, sizeof(want), "record 2 (VCPU_STATE) at offset 168: %s", check_want);

    struct wbuf hand;
    hostile_open(&hand);
    struct iovec iov = { body, vcpu_body(body, 0, c->version, sec, n) };
    assert_int_equal(stream_write_record(&hand.s, GWS_VCPU_STATE, &iov, 1), 0);
    assert_int_equal(stream_write_eos(&hand.s), 0);
    int rc = hostile_read(&hand, msg, sizeof(msg));
    if (c->want && (rc != -EPROTO || strcmp(msg, want) != 0))
        fail_msg("case %u: %d \"%s\", want \"%s\"", ci, rc, msg, want);
    if (!c->want && rc != 0)
        fail_msg("case %u: refused: %s", ci, msg);
    if (!c->want)
        read_valid_vcpu(&hand, c->version, sec, n);

    struct gw_error err;
    gw_error_init(&err);
    rc = stream_check_vcpu_sections(c->version, 0, sec, n, &err);
    if (c->want && (rc != -EPROTO || strcmp(err.msg, check_want) != 0))
        fail_msg("case %u: check %d \"%s\"", ci, rc, err.msg);
    if (!c->want && rc != 0)
        fail_msg("case %u: check refused: %s", ci, err.msg);

    struct wbuf w;
    hostile_open(&w);
    uint64_t queued = w.s.queued;
    rc = stream_write_vcpu(&w.s, 0, sec, n);
    if (c->version == 2 && !c->want) {
        /* Byte for byte the record made by hand. */
        assert_int_equal(rc, 0);
        assert_int_equal(stream_write_eos(&w.s), 0);
        stream_flush(&w.s);
        assert_int_equal(w.m.out_len, hand.m.out_len);
        assert_memory_equal(w.m.out, hand.m.out, w.m.out_len);
    } else {
        assert_int_equal(rc, -EPROTO);
        assert_int_equal(w.s.queued, queued);
        if (c->version == 2 && !strstr(stream_error(&w.s), c->want))
            fail_msg("case %u: writer \"%s\"", ci, stream_error(&w.s));
    }
    wclose(&w);
    wclose(&hand);
}

static void test_vcpu_v2_sections(void **state)
{
    cpuid_fixtures();
    for (unsigned c = 0; c < sizeof(sec_cases) / sizeof(sec_cases[0]); c++)
        run_sec_case(c, &sec_cases[c]);
    /* A version 1 list is complete for version 1, never for the writer. */
    struct stream_section sec[GWS_SEC_MAX];
    unsigned n;
    fill_sections(sec, &n);
    struct wbuf w;
    hostile_open(&w);
    assert_int_equal(stream_write_vcpu(&w.s, 0, sec, n - 2), -EPROTO);
    assert_non_null(strstr(stream_error(&w.s), "vCPU 0: section cpuid is missing"));
    wclose(&w);
}

/* The largest version 2 record (every section at its limit, with 1024
 * MSRs and 256 CPUID entries) fits VCPU_STATE's length limit and reads
 * back; one MSR more is refused by both sides. */
static void test_vcpu_largest(void **state)
{
    cpuid_fixtures();
    static uint8_t xsave[GWS_MAX_XSAVE];
    static uint32_t msrs[2 + 4 * (GWS_MAX_MSRS + 1)];
    memset(msrs, 0, sizeof(msrs));
    msrs[0] = GWS_MAX_MSRS;
    for (uint32_t i = 0; i <= GWS_MAX_MSRS; i++) {
        msrs[2 + 4 * i] = 0x10 + i;
        msrs[2 + 4 * i + 2] = i * 7;
    }
    xsave[GWS_MAX_XSAVE - 1] = 0x77;
    struct stream_section sec[GWS_SEC_MAX];
    unsigned n;
    fill_sections(sec, &n);
    sec[2] = (struct stream_section){ GWS_SEC_XSAVE, sizeof(xsave), xsave };
    sec[4] = (struct stream_section){ GWS_SEC_MSRS, 8 + 16 * GWS_MAX_MSRS, msrs };
    sec[9] = (struct stream_section){ GWS_SEC_CPUID, sizeof(cpuid_256), cpuid_256 };
    struct wbuf w;
    hostile_open(&w);
    assert_int_equal(stream_write_vcpu(&w.s, 1, sec, n), 0);
    assert_int_equal(stream_write_eos(&w.s), 0);
    stream_flush(&w.s);
    struct rbuf r;
    assert_int_equal(ropen(&r, w.m.out, w.m.out_len), 0);
    struct stream_rec rec;
    assert_int_equal(stream_next_record(&r.s, &rec), 0);
    assert_int_equal(rec.type, GWS_VCPU_STATE);
    assert_int_equal(rec.u.vcpu.nsec, n);
    for (unsigned i = 0; i < n; i++)
        assert_memory_equal(rec.u.vcpu.sec[i].data, sec[i].data, sec[i].len);
    stream_fini(&r.s);
    wclose(&w);

    msrs[0] = GWS_MAX_MSRS + 1;
    sec[4].len += 16;
    hostile_open(&w);
    assert_int_equal(stream_write_vcpu(&w.s, 1, sec, n), -EPROTO);
    assert_non_null(strstr(stream_error(&w.s), "vCPU 1: msrs section: 1025 MSRs (at most 1024)"));
    wclose(&w);
    static uint8_t body[GWS_MAX_VCPU_BODY];
    hostile_open(&w);
    struct iovec iov = { body, vcpu_body(body, 1, 2, sec, n) };
    assert_int_equal(stream_write_record(&w.s, GWS_VCPU_STATE, &iov, 1), 0);
    stream_write_eos(&w.s);
    char msg[512];
    assert_int_equal(hostile_read(&w, msg, sizeof(msg)), -EPROTO);
    assert_non_null(strstr(msg, "vCPU 1: msrs section: 1025 MSRs (at most 1024)"));
    wclose(&w);
}

/* CPU_MODEL (doc 4.9): written and read back as the CPUID section; the
 * writer refuses, and writes nothing for, what the reader refuses; a
 * hostile body fails the reader with the record named. */
static void test_cpu_model(void **state)
{
    cpuid_fixtures();
    struct wbuf w;
    hostile_open(&w);
    assert_int_equal(stream_write_cpu_model(&w.s, cpuid_4 + 2, 4, 2400123), 0);
    assert_int_equal(stream_write_eos(&w.s), 0);
    struct rbuf r;
    assert_int_equal(ropen(&r, w.m.out, w.m.out_len), 0);
    struct stream_rec rec;
    assert_int_equal(stream_next_record(&r.s, &rec), 0);
    assert_int_equal(rec.type, GWS_CPU_MODEL);
    assert_int_equal(rec.length, 8 + 40 * 4);
    assert_int_equal(rec.u.cpu_model.count, 4);
    assert_int_equal(rec.u.cpu_model.tsc_khz, 2400123);
    assert_memory_equal(rec.u.cpu_model.entries, cpuid_4 + 2, 40 * 4);
    assert_int_equal(stream_next_record(&r.s, &rec), 0);
    assert_int_equal(rec.type, GWS_END_OF_STREAM);
    stream_fini(&r.s);
    wclose(&w);

    static const struct {
        const uint32_t *table;
        uint32_t count;
        const char *want;
    } refused[] = {
        { cpuid_4, 0, "CPU_MODEL: 0 entries (must be 1..256)" },
        { cpuid_257, 257, "CPU_MODEL: 257 entries (must be 1..256)" },
        { cpuid_dup, 4, "CPU_MODEL: leaf 0x7 index 0 appears twice" },
    };
    for (unsigned i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        wopen(&w);
        assert_int_equal(stream_write_cpu_model(&w.s, refused[i].table + 2, refused[i].count, 0),
                         -EPROTO);
        assert_string_equal(stream_error(&w.s), refused[i].want);
        assert_int_equal(w.m.out_len, 0);
        wclose(&w);
    }
    wopen(&w);
    assert_int_equal(stream_write_cpu_model(&w.s, cpuid_256 + 2, 256, 0), 0);
    assert_int_equal(stream_flush(&w.s), 0);
    assert_int_equal(w.m.out_len, 8 + GWS_MAX_CPU_MODEL_BODY + 8); /* no preamble here */
    wclose(&w);

    /* Bodies a writer cannot make, framed by hand. */
    static const struct {
        const void *body;
        uint32_t len;
        const char *want;
    } hostile[] = {
        { cpuid_count3, sizeof(cpuid_count3), "CPU_MODEL: count 3 does not match its 168 bytes" },
        { cpuid_dup_ext, sizeof(cpuid_dup_ext), "CPU_MODEL: leaf 0x80000008 index 0 appears twice" },
        { cpuid_none, 4, "CPU_MODEL too short (4 bytes)" },
    }; /* one too long: test_oversized_before_allocation */
    for (unsigned i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        hostile_open(&w);
        struct iovec iov = { (void *)hostile[i].body, hostile[i].len };
        stream_write_record(&w.s, GWS_CPU_MODEL, &iov, 1);
        stream_write_eos(&w.s);
        char msg[512];
        assert_true(hostile_read(&w, msg, sizeof(msg)) < 0);
        if (!strstr(msg, "record 2 (CPU_MODEL) at offset 168: ") || !strstr(msg, hostile[i].want))
            fail_msg("case %u: \"%s\" lacks \"%s\"", i, msg, hostile[i].want);
        wclose(&w);
    }
}

/* The device table (doc 4.6) and its checks, as the VMM and godwit-stream
 * use them. */
static void test_device_table(void **state)
{
    static const struct { const char *id; uint32_t version, len; bool required; } doc[] = {
        { "pic-master", 1, 520, true }, { "pic-slave", 1, 520, true }, { "ioapic", 1, 520, true },
        { "pit", 1, 112, true },        { "kvmclock", 1, 8, true },    { "serial0", 1, 36, true },
        { "cmos", 1, 144, true },       { "power", 1, 8, false },
    };
    assert_int_equal(SDEV_COUNT, sizeof(doc) / sizeof(doc[0]));
    unsigned seen = 0;
    struct gw_error err;
    for (int i = 0; i < SDEV_COUNT; i++) {
        assert_string_equal(stream_device_kinds[i].id, doc[i].id);
        assert_int_equal(stream_device_kinds[i].version, doc[i].version);
        assert_int_equal(stream_device_kinds[i].len, doc[i].len);
        assert_int_equal(stream_device_kinds[i].required, doc[i].required);
        struct stream_device d = { .version = doc[i].version, .len = doc[i].len };
        strcpy(d.id, doc[i].id);
        gw_error_init(&err);
        assert_int_equal(stream_device_kind_of(&d, &err), i);
        if (i < SDEV_POWER)
            assert_int_equal(stream_device_missing(seen), i);
        assert_int_equal(stream_device_see(&seen, i, &err), 0);
    }
    assert_int_equal(stream_device_missing(seen), -1);
    assert_int_equal(stream_device_missing(seen & ~(1u << SDEV_POWER)), -1); /* optional */
    assert_int_equal(stream_device_missing(seen & ~(1u << SDEV_PIT)), SDEV_PIT);
    gw_error_init(&err);
    assert_int_equal(stream_device_see(&seen, SDEV_CMOS, &err), -EPROTO);
    assert_string_equal(err.msg, "device cmos sent twice");
    static const struct { const char *id; uint32_t instance, version, len; const char *want; } bad[] = {
        { "hpet", 0, 1, 8, "unknown device 'hpet'" },
        { "serial0", 1, 1, 36, "device serial0 instance 1 does not exist here" },
        { "serial0", 0, 2, 36, "device serial0 version 2 is not supported" },
        { "kvmclock", 0, 1, 16, "device kvmclock: 16 bytes, expected 8" },
        { "pic-master", 0, 1, 519, "device pic-master: 519 bytes, expected 520" },
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct stream_device d = { .instance = bad[i].instance, .version = bad[i].version,
                                   .len = bad[i].len };
        strcpy(d.id, bad[i].id);
        gw_error_init(&err);
        assert_int_equal(stream_device_kind_of(&d, &err), -EPROTO);
        assert_string_equal(err.msg, bad[i].want);
    }
}

static void test_header_checks(void **state)
{
    struct stream_vm_info vm = vm_info;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(stream_check_vm_info(&vm, &err), 0);
    vm.regions[1].gpa = 1 << 20; /* overlaps region 0 */
    assert_int_equal(stream_check_vm_info(&vm, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "overlaps"));
    vm = vm_info;
    vm.ram_size += 4096;
    gw_error_init(&err);
    assert_int_equal(stream_check_vm_info(&vm, &err), -EPROTO);
    vm = vm_info;
    vm.nr_vcpus = 0;
    struct wbuf w;
    wopen(&w);
    assert_int_equal(stream_write_header(&w.s, &vm), -EPROTO);
    assert_non_null(strstr(stream_error(&w.s), "0 vCPUs"));
    /* Sticky: everything after fails with the first error. */
    assert_int_equal(stream_write_eos(&w.s), -EPROTO);
    assert_int_equal(stream_write_pages(&w.s, NULL, NULL, 0), -EPROTO);
    gw_error_init(&err);
    assert_int_equal(stream_error_get(&w.s, &err), -EPROTO);
    assert_int_equal(err.code, EPROTO);
    assert_non_null(strstr(err.msg, "0 vCPUs"));
    assert_int_equal(w.m.out_len, 0);
    wclose(&w);
    /* A record before the header. */
    wopen(&w);
    stream_write_preamble(&w.s);
    stream_write_eos(&w.s);
    char msg[512];
    assert_int_equal(read_stream(w.m.out, w.m.out_len, msg, sizeof(msg)), -EPROTO);
    assert_non_null(strstr(msg, "must start with a HEADER"));
    wclose(&w);
}

/* ---- fd io: a writer thread, short reads and writes ---- */

#define FD_PAGES 3000
static uint8_t fd_pages[FD_PAGES][4096];

static void *fd_writer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)fd);
    const void *p[FD_PAGES];
    uint64_t pfn[FD_PAGES];
    for (int i = 0; i < FD_PAGES; i++) {
        p[i] = fd_pages[i];
        pfn[i] = (uint64_t)(i % 512) + (i / 512 % 2) * 1024;
    }
    stream_write_header(&s, &vm_info);
    for (int k = 0; k < FD_PAGES; k += 700)
        stream_write_pages(&s, pfn + k, p + k, FD_PAGES - k < 700 ? FD_PAGES - k : 700);
    stream_write_eoi(&s, 1, FD_PAGES);
    stream_write_eos(&s);
    intptr_t rc = stream_get_error(&s);
    stream_fini(&s);
    close(fd);
    return (void *)rc;
}

/* Reads of at most 777 bytes: the reader must loop. */
static ssize_t short_read(void *opaque, void *buf, size_t len)
{
    return stream_fd_ops.read(opaque, buf, len > 777 ? 777 : len);
}

static void test_fd_socketpair_short_io(void **state)
{
    for (int i = 0; i < FD_PAGES; i++)
        if (i % 4)
            memset(fd_pages[i], i & 0xff ? i & 0xff : 1, 4096);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)); /* short writes */
    pthread_t t;
    pthread_create(&t, NULL, fd_writer, (void *)(intptr_t)sv[0]);
    static const struct stream_io_ops short_ops = { .read = short_read };
    struct stream s;
    stream_init(&s, &short_ops, (void *)(intptr_t)sv[1]);
    struct stream_vm_info vm;
    assert_int_equal(stream_read_header(&s, &vm), 0);
    struct stream_rec rec;
    unsigned data = 0, zero = 0;
    int rc;
    while ((rc = stream_next_record(&s, &rec)) == 0) {
        if (rec.type == GWS_PAGE_DATA) {
            for (uint32_t i = 0; i < rec.u.pages.count; i++)
                assert_int_equal(rec.u.pages.data[4096ULL * i + 100] == 0, 0);
            data += rec.u.pages.count;
        }
        if (rec.type == GWS_ZERO_PAGES)
            zero += rec.u.pages.count;
    }
    assert_int_equal(rc, -ENODATA);
    assert_int_equal(data, FD_PAGES - FD_PAGES / 4);
    assert_int_equal(zero, FD_PAGES / 4);
    void *wrc;
    pthread_join(t, &wrc);
    assert_int_equal((intptr_t)wrc, 0);
    stream_fini(&s);
    close(sv[1]);
}

static void test_fd_write_to_closed_peer(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    close(sv[1]);
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)sv[0]);
    static uint8_t pg[4096] = { 1 };
    uint64_t pfn = 1;
    const void *p = pg;
    stream_write_header(&s, &vm_info);
    /* MSG_NOSIGNAL is not used by writev: ignore SIGPIPE for this test. */
    signal(SIGPIPE, SIG_IGN);
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++)
        rc = stream_write_pages(&s, &pfn, &p, 1);
    if (rc == 0)
        rc = stream_write_eos(&s);
    assert_int_equal(rc, -EPIPE);
    assert_int_equal(stream_write_eoi(&s, 1, 1), -EPIPE);
    stream_fini(&s);
    close(sv[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_zstd_round_trip),
        cmocka_unit_test(test_zero_detection),
        cmocka_unit_test(test_corrupt_any_byte),
        cmocka_unit_test(test_truncated_anywhere),
        cmocka_unit_test(test_magic_version),
        cmocka_unit_test(test_oversized_before_allocation),
        cmocka_unit_test(test_unknown_records),
        cmocka_unit_test(test_pfn_outside_map),
        cmocka_unit_test(test_page_record_shapes),
        cmocka_unit_test(test_hostile_state),
        cmocka_unit_test(test_vcpu_v2_sections),
        cmocka_unit_test(test_vcpu_largest),
        cmocka_unit_test(test_cpu_model),
        cmocka_unit_test(test_device_table),
        cmocka_unit_test(test_header_checks),
        cmocka_unit_test(test_fd_socketpair_short_io),
        cmocka_unit_test(test_fd_write_to_closed_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
