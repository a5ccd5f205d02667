/* Stream codec and state records: round trips, corruption anywhere,
 * truncation, wrong magic/version, oversized lengths, optional/mandatory
 * unknown records, vCPU/device state validation (struct vcpu_state through
 * VCPU_STATE version 2 and back, version 1 still read), fd io over a
 * socketpair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/state_records.h"
#include "migration/stream.h"
#include "migration/stream_hash.h"
#include <xxhash.h>

static struct stream_membuf out;

static void writer(struct stream *s)
{
    memset(&out, 0, sizeof(out));
    stream_init(s, &stream_mem_ops, &out);
}

static void reader(struct stream *s, struct stream_membuf *in, const uint8_t *d, size_t len)
{
    memset(in, 0, sizeof(*in));
    in->data = d;
    in->len = len;
    stream_init(s, &stream_mem_ops, in);
}

static uint8_t pages[4][4096];

/* A small valid stream: preamble, 2 records of pages, an optional record,
 * end of stream. */
static void build(void)
{
    struct stream s;
    writer(&s);
    for (int i = 0; i < 4; i++)
        memset(pages[i], i + 1, 4096);
    assert_int_equal(stream_write_preamble(&s), 0);
    struct gws_pages h = { 4, 0 };
    uint64_t pfn[4] = { 256, 257, 300, 301 };
    struct iovec iov[3] = { { &h, sizeof(h) }, { pfn, sizeof(pfn) }, { pages, sizeof(pages) } };
    assert_int_equal(stream_write_record(&s, GWS_PAGE_DATA, iov, 3), 0);
    const char *txt = "hello";
    struct iovec t = { (void *)txt, 5 };
    assert_int_equal(stream_write_record(&s, GWS_INFO, &t, 1), 0);
    assert_int_equal(stream_write_record(&s, GWS_END_OF_STREAM, NULL, 0), 0);
    assert_int_equal(stream_flush(&s), 0);
    stream_fini(&s);
}

static int read_all(const uint8_t *d, size_t len, int *nrec, char *err, size_t el)
{
    struct stream s;
    struct stream_membuf in;
    reader(&s, &in, d, len);
    int r = stream_read_preamble(&s);
    *nrec = 0;
    while (r == 0) {
        struct stream_record rec;
        r = stream_read_record(&s, &rec);
        if (r == 0) {
            (*nrec)++;
            if (rec.type == GWS_PAGE_DATA) {
                assert_int_equal(rec.length, 8 + 32 + 4 * 4096);
                assert_memory_equal(rec.body + 40 + 4096 * 2, pages[2], 4096);
            }
            if (rec.type == GWS_END_OF_STREAM)
                break;
        }
    }
    snprintf(err, el, "%s", stream_error(&s));
    stream_fini(&s);
    return r;
}

static void test_round_trip(void **state)
{
    build();
    int n;
    char err[256];
    assert_int_equal(read_all(out.out, out.out_len, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 3);
    assert_int_equal(out.out_len % 8, 0);
    free(out.out);
}

/* `queued` counts a record once it is taken, buffered or not; `bytes`
 * once it reached the output. After a flush they agree. */
static void test_queued_counts_buffered_records(void **state)
{
    struct stream s;
    writer(&s);
    assert_int_equal(stream_write_preamble(&s), 0);
    const char *txt = "a small record stays in the buffer";
    struct iovec t = { (void *)txt, strlen(txt) };
    assert_int_equal(stream_write_record(&s, GWS_INFO, &t, 1), 0);
    assert_int_equal(s.bytes, 0);
    assert_true(s.queued >= 16 + strlen(txt) + 8);
    uint64_t small = s.queued;
    struct gws_pages h = { 4, 0 };
    uint64_t pfn[4] = { 256, 257, 300, 301 };
    struct iovec iov[3] = { { &h, sizeof(h) }, { pfn, sizeof(pfn) }, { pages, sizeof(pages) } };
    for (int i = 0; i < 4; i++)
        assert_int_equal(stream_write_record(&s, GWS_PAGE_DATA, iov, 3), 0);
    assert_true(s.queued > small + 4 * sizeof(pages));
    assert_int_equal(stream_write_record(&s, GWS_END_OF_STREAM, NULL, 0), 0);
    assert_true(s.bytes < s.queued);
    assert_int_equal(stream_flush(&s), 0);
    assert_int_equal(s.bytes, s.queued);
    assert_int_equal(out.out_len, s.queued);
    stream_fini(&s);
    free(out.out);
}

static void test_every_byte_corruption_detected(void **state)
{
    build();
    uint8_t *copy = malloc(out.out_len);
    /* Flip each byte after the preamble in turn (every 7th, for speed). */
    for (size_t i = 16; i < out.out_len; i += 7) {
        memcpy(copy, out.out, out.out_len);
        copy[i] ^= 0x40;
        int n;
        char err[256];
        int r = read_all(copy, out.out_len, &n, err, sizeof(err));
        assert_true(r < 0);
        assert_true(strlen(err) > 0);
    }
    free(copy);
    free(out.out);
}

static void test_truncation_and_preamble(void **state)
{
    build();
    int n;
    char err[256];
    for (size_t cut = 0; cut < out.out_len; cut += 97) {
        int r = read_all(out.out, cut, &n, err, sizeof(err));
        assert_true(r < 0 || r == -ENODATA);
    }
    uint8_t *copy = malloc(out.out_len);
    memcpy(copy, out.out, out.out_len);
    copy[0] = 'X';
    assert_true(read_all(copy, out.out_len, &n, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "magic"));
    memcpy(copy, out.out, out.out_len);
    copy[8] = 2;
    assert_true(read_all(copy, out.out_len, &n, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "version 2"));
    free(copy);
    free(out.out);
}

static void test_oversized_length(void **state)
{
    uint8_t buf[16 + 8] = "GODWITMS\1\0\0\0\0\0\0\0";
    uint32_t h[2] = { GWS_PAGE_DATA, 0xfffffff0u };
    memcpy(buf + 16, h, 8);
    int n;
    char err[256];
    assert_true(read_all(buf, sizeof(buf), &n, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "exceeds"));
}

/* A CPUID table as KVM_GET_CPUID2 gives one: leaf 7 with two indexes
 * (significant index), an extended leaf, KVM's signature leaf. */
static void fill_cpuid(struct vcpu_state *st)
{
    static const struct kvm_cpuid_entry2 e[] = {
        { .function = 0, .eax = 0xd, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
        { .function = 1, .eax = 0x000306c3, .ebx = 0x00010800, .ecx = 0xfffa3203,
          .edx = 0x0f8bfbff },
        { .function = 7, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ebx = 0x27ab },
        { .function = 7, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0x10 },
        { .function = 0x40000000, .eax = 0x40000001, .ebx = 0x4b4d564b },
        { .function = 0x80000008, .eax = 0x3030, .padding = { 1, 2, 3 } },
    };
    st->has_cpuid = true;
    st->ncpuid = sizeof(e) / sizeof(e[0]);
    memcpy(st->cpuid, e, sizeof(e));
    st->tsc_khz = 2995200;
}

/* A vCPU state with something in every section. */
static void fill_state(struct vcpu_state *st)
{
    memset(st, 0, sizeof(*st));
    st->regs.rip = 0x1234;
    st->regs.rflags = 0x202;
    st->sregs.cr0 = 0x80050033;
    st->sregs.efer = 0xd01;
    st->xsave_size = 4096;
    st->xsave[100] = 7;
    st->has_xcrs = true;
    st->xcrs.nr_xcrs = 1;
    st->xcrs.xcrs[0].value = 7;
    st->nmsrs = 2;
    st->msrs[0].index = 0x10;
    st->msrs[0].data = 99;
    st->msrs[1].index = 0xc0000080;
    st->lapic.regs[0x20] = 1;
    st->events.flags = 5;
    st->mp.mp_state = 1;
    st->debugregs.dr7 = 0x400;
    fill_cpuid(st);
}

/* Write st as VCPU_STATE id with state_write_vcpu; *body gets a copy of
 * the record's body (to free). Returns state_write_vcpu's result. */
static int state_record(uint32_t id, const struct vcpu_state *st, uint8_t **body, uint32_t *len)
{
    struct stream s;
    writer(&s);
    int rc = state_write_vcpu(&s, id, st);
    stream_flush(&s);
    stream_fini(&s);
    *body = NULL;
    *len = 0;
    if (rc < 0) {
        assert_int_equal(out.out_len, 0); /* nothing of a refused record */
        free(out.out);
        return rc;
    }
    uint8_t *w = malloc(out.out_len + 16);
    memcpy(w, "GODWITMS\1\0\0\0\0\0\0\0", 16);
    memcpy(w + 16, out.out, out.out_len);
    struct stream r;
    struct stream_membuf in;
    reader(&r, &in, w, out.out_len + 16);
    assert_int_equal(stream_read_preamble(&r), 0);
    struct stream_record rec;
    assert_int_equal(stream_read_record(&r, &rec), 0);
    assert_int_equal(rec.type, GWS_VCPU_STATE);
    *body = malloc(rec.length);
    memcpy(*body, rec.body, rec.length);
    *len = rec.length;
    stream_fini(&r);
    free(w);
    free(out.out);
    return 0;
}

static void test_state_records(void **state)
{
    static struct vcpu_state st, back;
    fill_state(&st);
    struct stream s;
    writer(&s);
    assert_int_equal(state_write_vcpu(&s, 3, &st), 0);
    assert_int_equal(stream_write_device(&s, "serial0", 0, 1, "abcd", 4), 0);
    stream_flush(&s);
    struct stream r;
    struct stream_membuf in;
    uint8_t *w = malloc(out.out_len + 16);
    memcpy(w, "GODWITMS\1\0\0\0\0\0\0\0", 16);
    memcpy(w + 16, out.out, out.out_len);
    reader(&r, &in, w, out.out_len + 16);
    assert_int_equal(stream_read_preamble(&r), 0);
    struct stream_record rec;
    assert_int_equal(stream_read_record(&r, &rec), 0);
    struct gw_error err;
    gw_error_init(&err);
    uint32_t id;
    assert_int_equal(state_parse_vcpu(rec.body, rec.length, &id, &back, &err), 0);
    assert_int_equal(id, 3);
    assert_int_equal(((const uint32_t *)rec.body)[1], 2); /* version 2 */
    assert_int_equal(back.regs.rip, 0x1234);
    assert_int_equal(back.xsave[100], 7);
    assert_int_equal(back.nmsrs, 2);
    assert_int_equal(back.msrs[0].data, 99);
    assert_true(back.has_cpuid);
    assert_int_equal(back.ncpuid, 6);
    assert_int_equal(back.tsc_khz, 2995200);
    assert_memory_equal(&back, &st, sizeof(st)); /* every byte */
    /* Damaged bodies: every truncation fails cleanly. */
    for (size_t cut = 0; cut < rec.length; cut += 13) {
        gw_error_init(&err);
        assert_true(state_parse_vcpu(rec.body, cut, &id, &back, &err) < 0);
    }
    uint8_t *bad = malloc(rec.length);
    memcpy(bad, rec.body, rec.length);
    ((uint32_t *)bad)[3] = 100000; /* first section's length */
    gw_error_init(&err);
    assert_true(state_parse_vcpu(bad, rec.length, &id, &back, &err) < 0);
    free(bad);
    assert_int_equal(stream_read_record(&r, &rec), 0);
    struct stream_device dev;
    gw_error_init(&err);
    assert_int_equal(stream_parse_device(rec.body, rec.length, &dev, &err), 0);
    assert_string_equal(dev.id, "serial0");
    assert_int_equal(dev.len, 4);
    assert_memory_equal(dev.data, "abcd", 4);
    stream_fini(&r);
    stream_fini(&s);
    free(w);
    free(out.out);
}

/* The CPU travels exactly: has_cpuid, the entries (KVM's padding too) and
 * the TSC rate. */
static void test_state_cpuid_round_trip(void **state)
{
    static struct vcpu_state st, back;
    uint8_t *body;
    uint32_t len, id;
    struct gw_error err;

    fill_state(&st);
    assert_int_equal(state_record(0, &st, &body, &len), 0);
    gw_error_init(&err);
    assert_int_equal(state_parse_vcpu(body, len, &id, &back, &err), 0);
    assert_true(back.has_cpuid);
    assert_int_equal(back.ncpuid, st.ncpuid);
    assert_memory_equal(back.cpuid, st.cpuid, st.ncpuid * sizeof(st.cpuid[0]));
    assert_int_equal(back.cpuid[5].padding[2], 3);
    assert_int_equal(back.tsc_khz, 2995200);
    assert_memory_equal(&back, &st, sizeof(st));
    free(body);
}

/* At the limits (256 CPUID entries, 1024 MSRs, the largest XSAVE area) a
 * state still travels exactly; beyond them, or without a CPU, the record
 * is not written. */
static void test_state_cpu_limits(void **state)
{
    static struct vcpu_state st, back;
    uint8_t *body;
    uint32_t len, id;
    struct gw_error err;

    fill_state(&st);
    st.tsc_khz = 0; /* the source could not tell */
    st.ncpuid = CPU_STATE_MAX_CPUID;
    for (uint32_t i = 0; i < st.ncpuid; i++)
        st.cpuid[i] = (struct kvm_cpuid_entry2){ .function = 0xd, .index = i,
                                                  .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                                                  .eax = i * 3, .edx = ~i };
    st.nmsrs = CPU_STATE_MAX_MSRS;
    for (uint32_t i = 0; i < st.nmsrs; i++)
        st.msrs[i] = (struct kvm_msr_entry){ .index = 0x10 + i, .data = (uint64_t)i << 32 | i };
    st.xsave_size = CPU_STATE_XSAVE_MAX;
    st.xsave[CPU_STATE_XSAVE_MAX - 1] = 0xee;
    assert_int_equal(state_record(1, &st, &body, &len), 0);
    gw_error_init(&err);
    assert_int_equal(state_parse_vcpu(body, len, &id, &back, &err), 0);
    assert_int_equal(id, 1);
    assert_int_equal(back.ncpuid, 256);
    assert_int_equal(back.tsc_khz, 0);
    assert_memory_equal(&back, &st, sizeof(st));
    free(body);

    struct stream s;
    st.ncpuid = CPU_STATE_MAX_CPUID + 1; /* wider than the array: entries past it not read */
    writer(&s);
    assert_int_equal(state_write_vcpu(&s, 1, &st), -EPROTO);
    assert_non_null(
        strstr(stream_error(&s), "vCPU 1: cpuid section: 257 entries (must be 1..256)"));
    stream_fini(&s);
    free(out.out);
    assert_int_equal(state_record(1, &st, &body, &len), -EPROTO);

    fill_state(&st);
    st.nmsrs = CPU_STATE_MAX_MSRS + 1;
    writer(&s);
    assert_int_equal(state_write_vcpu(&s, 2, &st), -EPROTO);
    assert_non_null(strstr(stream_error(&s), "vCPU 2: msrs section: 1025 MSRs (at most 1024)"));
    stream_fini(&s);
    free(out.out);

    /* No CPU (a state as a version 1 record gives it): version 2 needs
     * one; has_cpuid decides, whatever ncpuid says. */
    fill_state(&st);
    st.has_cpuid = false;
    assert_int_equal(state_record(0, &st, &body, &len), -EPROTO);
    writer(&s);
    assert_int_equal(state_write_vcpu(&s, 0, &st), -EPROTO);
    assert_non_null(strstr(stream_error(&s), "vCPU 0: section cpuid is missing"));
    stream_fini(&s);
    free(out.out);
    st.ncpuid = 0;
    memset(st.cpuid, 0, sizeof(st.cpuid));
    assert_int_equal(state_record(0, &st, &body, &len), -EPROTO);
    /* A CPU with no entries is not one. */
    st.has_cpuid = true;
    writer(&s);
    assert_int_equal(state_write_vcpu(&s, 0, &st), -EPROTO);
    assert_non_null(strstr(stream_error(&s), "vCPU 0: cpuid section: 0 entries (must be 1..256)"));
    stream_fini(&s);
    free(out.out);
}

/* Copy of a VCPU_STATE body with the header's version set to `version`
 * and the sections whose tag is in `drop` (a bit per tag) left out. */
static uint32_t rebody(const uint8_t *body, uint32_t len, uint32_t version, unsigned drop,
                       uint8_t *nb)
{
    memcpy(nb, body, 4);
    memcpy(nb + 4, &version, 4);
    uint32_t n = 8;
    for (uint32_t pos = 8; pos < len;) {
        struct gws_section sh;
        memcpy(&sh, body + pos, sizeof(sh));
        uint32_t whole = 8 + ((sh.len + 7) & ~7u);
        if (!(drop & (1u << sh.tag))) {
            memcpy(nb + n, body + pos, whole);
            n += whole;
        }
        pos += whole;
    }
    return n;
}

/* The offset of section `tag`'s data in a body. */
static uint32_t section_at(const uint8_t *body, uint32_t len, uint32_t tag)
{
    for (uint32_t pos = 8; pos < len;) {
        struct gws_section sh;
        memcpy(&sh, body + pos, sizeof(sh));
        if (sh.tag == tag)
            return pos + 8;
        pos += 8 + ((sh.len + 7) & ~7u);
    }
    fail_msg("no section %u", tag);
    return 0;
}

/* Parse must fail with `want` and leave *st as it was. */
static void parse_refused(const uint8_t *body, uint32_t len, const char *want)
{
    static struct vcpu_state back, before;
    memset(&back, 0xa5, sizeof(back));
    memcpy(&before, &back, sizeof(back));
    struct gw_error err;
    gw_error_init(&err);
    uint32_t id = 77;
    assert_int_equal(state_parse_vcpu(body, len, &id, &back, &err), -EPROTO);
    if (strcmp(err.msg, want) != 0)
        fail_msg("\"%s\", want \"%s\"", err.msg, want);
    assert_int_equal(id, 77);
    assert_memory_equal(&back, &before, sizeof(back));
}

#define BIT(tag) (1u << (tag))

/* A version 1 record (tags 1..9) still reads, without a CPU; the new
 * sections are refused in it and required in version 2. */
static void test_state_versions(void **state)
{
    static struct vcpu_state st, back, want;
    fill_state(&st);
    uint8_t *body, *nb;
    uint32_t len, id;
    assert_int_equal(state_record(3, &st, &body, &len), 0);
    nb = malloc(len);
    struct gw_error err;

    uint32_t n = rebody(body, len, 1, BIT(GWS_SEC_CPUID) | BIT(GWS_SEC_TSC_KHZ), nb);
    assert_int_equal(n, len - (8 + 8 + 40 * 6) - (8 + 8));
    memset(&back, 0xa5, sizeof(back));
    gw_error_init(&err);
    assert_int_equal(state_parse_vcpu(nb, n, &id, &back, &err), 0);
    assert_int_equal(id, 3);
    assert_false(back.has_cpuid);
    assert_int_equal(back.ncpuid, 0);
    assert_int_equal(back.tsc_khz, 0);
    memcpy(&want, &st, sizeof(st));
    want.has_cpuid = false;
    want.ncpuid = 0;
    want.tsc_khz = 0;
    memset(want.cpuid, 0, sizeof(want.cpuid));
    assert_memory_equal(&back, &want, sizeof(want)); /* all the rest as written */
    /* ... and XCRS stays optional there. */
    n = rebody(body, len, 1, BIT(GWS_SEC_CPUID) | BIT(GWS_SEC_TSC_KHZ) | BIT(GWS_SEC_XCRS), nb);
    gw_error_init(&err);
    assert_int_equal(state_parse_vcpu(nb, n, &id, &back, &err), 0);
    assert_false(back.has_xcrs);
    assert_false(back.has_cpuid);

    n = rebody(body, len, 1, BIT(GWS_SEC_TSC_KHZ), nb);
    parse_refused(nb, n, "vCPU 3: section cpuid in a version 1 record");
    n = rebody(body, len, 1, BIT(GWS_SEC_CPUID), nb);
    parse_refused(nb, n, "vCPU 3: section tsc_khz in a version 1 record");
    n = rebody(body, len, 1, 0, nb);
    parse_refused(nb, n, "vCPU 3: section cpuid in a version 1 record");
    n = rebody(body, len, 1, BIT(GWS_SEC_CPUID) | BIT(GWS_SEC_TSC_KHZ) | BIT(GWS_SEC_LAPIC), nb);
    parse_refused(nb, n, "vCPU 3: section lapic is missing");

    n = rebody(body, len, 2, BIT(GWS_SEC_CPUID), nb);
    parse_refused(nb, n, "vCPU 3: section cpuid is missing");
    n = rebody(body, len, 2, BIT(GWS_SEC_TSC_KHZ), nb);
    parse_refused(nb, n, "vCPU 3: section tsc_khz is missing");
    n = rebody(body, len, 2, BIT(GWS_SEC_CPUID) | BIT(GWS_SEC_TSC_KHZ), nb);
    parse_refused(nb, n, "vCPU 3: section cpuid is missing");
    n = rebody(body, len, 3, 0, nb);
    parse_refused(nb, n, "vCPU state version 3 (this godwit reads 1..2)");
    free(nb);
    free(body);
}

/* Hostile contents of the new sections, each in a body otherwise as
 * written by state_write_vcpu. */
static void test_state_hostile_cpu(void **state)
{
    static struct vcpu_state st, back;
    fill_state(&st);
    uint8_t *body, *nb;
    uint32_t len, id;
    assert_int_equal(state_record(3, &st, &body, &len), 0);
    nb = malloc(len);
    uint32_t c = section_at(body, len, GWS_SEC_CPUID), t = section_at(body, len, GWS_SEC_TSC_KHZ);
    struct {
        uint32_t at, value;
        const char *want;
    } pokes[] = {
        { c, 0, "vCPU 3: cpuid section: 0 entries (must be 1..256)" },
        { c, 257, "vCPU 3: cpuid section: 257 entries (must be 1..256)" },
        { c, 5, "vCPU 3: cpuid section: count 5 does not match its 248 bytes" },
        { c, 7, "vCPU 3: cpuid section: count 7 does not match its 248 bytes" },
        { c + 4, 1, "vCPU 3: cpuid section: the word after the count is not zero" },
        { c + 8 + 40 * 3 + 4, 0, "vCPU 3: cpuid section: leaf 0x7 index 0 appears twice" },
        { c + 8 + 40 * 5, 0x40000000,
          "vCPU 3: cpuid section: leaf 0x40000000 index 0 appears twice" },
        { c - 4, 48, "vCPU 3: cpuid section: count 6 does not match its 48 bytes" },
        { t - 4, 4, "vCPU 3: tsc_khz section is 4 bytes, must be 8" },
        { t + 4, 1, "vCPU 3: tsc_khz section: the word after the rate is not zero" },
    };
    for (unsigned i = 0; i < sizeof(pokes) / sizeof(pokes[0]); i++) {
        memcpy(nb, body, len);
        memcpy(nb + pokes[i].at, &pokes[i].value, 4);
        parse_refused(nb, len, pokes[i].want);
    }
    /* A different index of a leaf is another entry. */
    memcpy(nb, body, len);
    uint32_t idx = 2;
    memcpy(nb + c + 8 + 40 * 3 + 4, &idx, 4);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(state_parse_vcpu(nb, len, &id, &back, &err), 0);
    assert_int_equal(back.cpuid[3].index, 2);
    free(nb);
    free(body);
}

static void *sock_writer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)fd);
    stream_write_preamble(&s);
    static uint8_t big[512][4096];
    static uint64_t pfn[512];
    for (int i = 0; i < 512; i++) {
        pfn[i] = (uint64_t)i;
        memset(big[i], i, 4096);
    }
    for (int k = 0; k < 8; k++) {
        struct gws_pages h = { 512, 0 };
        struct iovec iov[3] = { { &h, sizeof(h) }, { pfn, sizeof(pfn) }, { big, sizeof(big) } };
        stream_write_record(&s, GWS_PAGE_DATA, iov, 3);
    }
    stream_write_record(&s, GWS_END_OF_STREAM, NULL, 0);
    stream_flush(&s);
    stream_fini(&s);
    close(fd);
    return NULL;
}

/* Both builds of the checksum give XXH3-64 of the concatenated pieces,
 * however the bytes are split (the vector code's stripes and the streaming
 * buffer's 256-byte boundary are the places they could differ). */
static void test_hash_builds_agree(void **state)
{
    size_t len = 3 * 4096 + 777;
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 131 + (i >> 7));
    static const size_t sizes[] = { 0, 1, 8, 63, 64, 240, 241, 256, 1024, 4096, 8192 + 5 };
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        for (size_t cut = 0; cut <= sizes[k]; cut += sizes[k] / 3 + 1) {
            struct iovec iov[3] = { { buf, cut }, { buf + cut, (sizes[k] - cut) / 2 },
                                    { buf + cut + (sizes[k] - cut) / 2,
                                      sizes[k] - cut - (sizes[k] - cut) / 2 } };
            uint64_t want = XXH3_64bits(buf, sizes[k]);
            assert_true(stream_hash_generic(iov, 3) == want);
            assert_true(stream_hash(iov, 3) == want);
            if (__builtin_cpu_supports("avx2"))
                assert_true(stream_hash_avx2(iov, 3) == want);
        }
    }
    free(buf);
}

static void test_fd_io(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    pthread_t t;
    pthread_create(&t, NULL, sock_writer, (void *)(intptr_t)sv[0]);
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)sv[1]);
    assert_int_equal(stream_read_preamble(&s), 0);
    int n = 0;
    struct stream_record rec;
    while (stream_read_record(&s, &rec) == 0 && rec.type != GWS_END_OF_STREAM) {
        assert_int_equal(rec.length, 8 + 512 * 8 + 512 * 4096);
        assert_int_equal(rec.body[8 + 512 * 8 + 4096 * 77], 77);
        n++;
    }
    assert_int_equal(n, 8);
    assert_int_equal(rec.type, GWS_END_OF_STREAM);
    pthread_join(t, NULL);
    stream_fini(&s);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_queued_counts_buffered_records),
        cmocka_unit_test(test_every_byte_corruption_detected),
        cmocka_unit_test(test_truncation_and_preamble),
        cmocka_unit_test(test_oversized_length),
        cmocka_unit_test(test_state_records),
        cmocka_unit_test(test_state_cpuid_round_trip),
        cmocka_unit_test(test_state_cpu_limits),
        cmocka_unit_test(test_state_versions),
        cmocka_unit_test(test_state_hostile_cpu),
        cmocka_unit_test(test_fd_io),
        cmocka_unit_test(test_hash_builds_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
