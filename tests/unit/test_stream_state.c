/* Wire compatibility and hostile input of the vCPU and device state records
 * (docs/stream-format.md 4.5, 4.6).
 *
 * The golden bytes are built here field by field from the documented
 * format (little-endian integers at the documented offsets, the KVM
 * structures member by member), never by the code under test. Then:
 * - tests/fuzz/corpus/stream/old-state-records.gws, written by the state
 *   encoder as it was before it became an adapter over the typed layer
 *   (commit 49b93e8, state_write_vcpu/state_write_device with the known
 *   state below), is byte for byte the golden stream: so the golden is the
 *   layout streams in the field have;
 * - today's readers (stream_next_record, state_parse_vcpu,
 *   stream_parse_device) load it back to the known state (version 1 vCPU
 *   records: no CPUID, no TSC rate);
 * - today's writers (state_write_vcpu, stream_write_vcpu, stream_write_device)
 *   produce exactly the golden bytes of version 2 (the same stream with
 *   the CPUID and TSC_KHZ sections), which the readers load back whole;
 * - hostile bodies fail in both readers with the same clear message, and
 *   the writers refuse what the readers refuse.
 * The unit tests run from the repository root (tests/run does). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "migration/state_records.h"
#include "migration/stream_records.h"

#define OLD_STREAM "tests/fuzz/corpus/stream/old-state-records.gws"
/* The VCPU_STATE record after preamble (16) and HEADER (8 + 120 + 8). */
#define VCPU_RECORD_PREFIX "record 2 (VCPU_STATE) at offset 152: "
#define DEVICE_RECORD_PREFIX "record 2 (DEVICE_STATE) at offset 152: "

/* ---- the known state: every byte set, from a pattern ---- */

static void fill_bytes(void *p, size_t n, unsigned seed)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(seed * 37u + i * 11u + (i >> 8) + 1u);
}

/* vCPU `id` of the known stream; vCPU 1 has XCRS, vCPU 0 does not. An MSR
 * entry carries a non-zero `reserved` in memory: the wire has 0 there. */
static void fill_state(struct vcpu_state *st, uint32_t id)
{
    unsigned seed = 16 * id;
    memset(st, 0, sizeof(*st));
    fill_bytes(&st->regs, sizeof(st->regs), seed + 1);
    fill_bytes(&st->sregs, sizeof(st->sregs), seed + 2);
    st->xsave_size = 4096 + 3 * 64;
    fill_bytes(st->xsave, st->xsave_size, seed + 3);
    st->has_xcrs = id == 1;
    fill_bytes(&st->xcrs, sizeof(st->xcrs), seed + 4);
    st->xcrs.nr_xcrs = 1;
    st->nmsrs = 5;
    for (uint32_t i = 0; i < st->nmsrs; i++) {
        st->msrs[i].index = i == 0 ? 0x10 : 0xc0000080 + i;
        st->msrs[i].reserved = i == 2 ? 0xdeadbeef : 0;
        st->msrs[i].data = 0x0123456789abcdefULL * (i + 1) + id;
    }
    fill_bytes(&st->lapic, sizeof(st->lapic), seed + 6);
    fill_bytes(&st->events, sizeof(st->events), seed + 7);
    st->mp.mp_state = 3 - id;
    fill_bytes(&st->debugregs, sizeof(st->debugregs), seed + 9);
    /* Version 2 on: the CPU. Entries are pattern bytes with distinct
     * (function, index) pairs. */
    st->has_cpuid = true;
    st->ncpuid = 3 + id;
    fill_bytes(st->cpuid, st->ncpuid * sizeof(st->cpuid[0]), seed + 10);
    for (uint32_t i = 0; i < st->ncpuid; i++) {
        st->cpuid[i].function = i == 0 ? 0 : 0x80000000 + i;
        st->cpuid[i].index = i;
    }
    st->tsc_khz = 2400000 + id;
}

/* The devices the VMM sends (docs/stream-format.md 4.6), with pattern bodies
 * of their documented sizes. */
static const struct known_device {
    const char *id;
    uint32_t version;
    size_t len;
} known_devices[] = {
    { "pic-master", 1, 520 }, { "pic-slave", 1, 520 }, { "ioapic", 1, 520 }, { "pit", 1, 112 },
    { "kvmclock", 1, 8 },     { "serial0", 1, 36 },    { "cmos", 1, 144 },
};
#define NR_KNOWN_DEVICES (sizeof(known_devices) / sizeof(known_devices[0]))
static uint8_t device_body[NR_KNOWN_DEVICES][1024];

static void fill_devices(void)
{
    for (unsigned i = 0; i < NR_KNOWN_DEVICES; i++)
        fill_bytes(device_body[i], known_devices[i].len, 100 + i);
}

static const struct stream_vm_info known_vm = {
    .name = "golden",
    .uuid = { 0x67, 0x6f, 0x64, 0x77, 0x69, 0x74, 0x40, 0x01, 0x80, 2, 3, 4, 5, 6, 7, 8 },
    .nr_vcpus = 2,
    .ram_size = 2 << 20,
    .nr_regions = 1,
    .regions = { { 0, 2 << 20 } },
};

/* ---- byte builder ---- */

struct bytes {
    uint8_t *p;
    size_t len, cap;
};

static void put(struct bytes *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put_u8(struct bytes *b, uint8_t v) { put(b, &v, 1); }

static void put_le16(struct bytes *b, uint16_t v)
{
    uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
    put(b, x, 2);
}

static void put_le32(struct bytes *b, uint32_t v)
{
    uint8_t x[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    put(b, x, 4);
}

static void put_le64(struct bytes *b, uint64_t v)
{
    put_le32(b, (uint32_t)v);
    put_le32(b, (uint32_t)(v >> 32));
}

static void put_fill(struct bytes *b, uint8_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put_u8(b, v);
}

static void bytes_free(struct bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- golden sections, member by member (doc 4.5) ---- */

static void golden_regs(struct bytes *b, const struct kvm_regs *r)
{
    const uint64_t v[18] = { r->rax, r->rbx, r->rcx, r->rdx, r->rsi, r->rdi, r->rsp, r->rbp, r->r8,
                             r->r9,  r->r10, r->r11, r->r12, r->r13, r->r14, r->r15, r->rip, r->rflags };
    for (int i = 0; i < 18; i++)
        put_le64(b, v[i]);
}

static void golden_segment(struct bytes *b, const struct kvm_segment *s)
{
    put_le64(b, s->base);
    put_le32(b, s->limit);
    put_le16(b, s->selector);
    const uint8_t v[10] = { s->type, s->present, s->dpl, s->db, s->s,
                            s->l,    s->g,       s->avl, s->unusable, s->padding };
    put(b, v, 10);
}

static void golden_sregs(struct bytes *b, const struct kvm_sregs *s)
{
    const struct kvm_segment *seg[8] = { &s->cs, &s->ds, &s->es, &s->fs,
                                         &s->gs, &s->ss, &s->tr, &s->ldt };
    for (int i = 0; i < 8; i++)
        golden_segment(b, seg[i]);
    const struct kvm_dtable *dt[2] = { &s->gdt, &s->idt };
    for (int i = 0; i < 2; i++) {
        put_le64(b, dt[i]->base);
        put_le16(b, dt[i]->limit);
        for (int k = 0; k < 3; k++)
            put_le16(b, dt[i]->padding[k]);
    }
    const uint64_t cr[7] = { s->cr0, s->cr2, s->cr3, s->cr4, s->cr8, s->efer, s->apic_base };
    for (int i = 0; i < 7; i++)
        put_le64(b, cr[i]);
    for (int i = 0; i < 4; i++)
        put_le64(b, s->interrupt_bitmap[i]);
}

static void golden_xcrs(struct bytes *b, const struct kvm_xcrs *x)
{
    put_le32(b, x->nr_xcrs);
    put_le32(b, x->flags);
    for (int i = 0; i < 16; i++) {
        put_le32(b, x->xcrs[i].xcr);
        put_le32(b, x->xcrs[i].reserved);
        put_le64(b, x->xcrs[i].value);
    }
    for (int i = 0; i < 16; i++)
        put_le64(b, x->padding[i]);
}

/* count, zero, then {index, zero, value}: the in-memory reserved word is not sent. */
static void golden_msrs(struct bytes *b, const struct vcpu_state *st)
{
    put_le32(b, st->nmsrs);
    put_le32(b, 0);
    for (uint32_t i = 0; i < st->nmsrs; i++) {
        put_le32(b, st->msrs[i].index);
        put_le32(b, 0);
        put_le64(b, st->msrs[i].data);
    }
}

static void golden_events(struct bytes *b, const struct kvm_vcpu_events *e)
{
    const uint8_t exc[4] = { e->exception.injected, e->exception.nr,
                             e->exception.has_error_code, e->exception.pending };
    put(b, exc, 4);
    put_le32(b, e->exception.error_code);
    const uint8_t irq_nmi[8] = { e->interrupt.injected, e->interrupt.nr, e->interrupt.soft,
                                 e->interrupt.shadow,   e->nmi.injected,  e->nmi.pending,
                                 e->nmi.masked,         e->nmi.pad };
    put(b, irq_nmi, 8);
    put_le32(b, e->sipi_vector);
    put_le32(b, e->flags);
    const uint8_t smi[5] = { e->smi.smm, e->smi.pending, e->smi.smm_inside_nmi,
                             e->smi.latched_init, e->triple_fault.pending };
    put(b, smi, 5);
    put(b, e->reserved, 26);
    put_u8(b, e->exception_has_payload);
    put_le64(b, e->exception_payload);
}

/* count, zero, then struct kvm_cpuid_entry2 member by member. */
static void golden_cpuid(struct bytes *b, const struct vcpu_state *st)
{
    put_le32(b, st->ncpuid);
    put_le32(b, 0);
    for (uint32_t i = 0; i < st->ncpuid; i++) {
        const struct kvm_cpuid_entry2 *e = &st->cpuid[i];
        const uint32_t v[10] = { e->function, e->index, e->flags, e->eax, e->ebx,
                                 e->ecx, e->edx, e->padding[0], e->padding[1], e->padding[2] };
        for (int k = 0; k < 10; k++)
            put_le32(b, v[k]);
    }
}

static void golden_debugregs(struct bytes *b, const struct kvm_debugregs *d)
{
    for (int i = 0; i < 4; i++)
        put_le64(b, d->db[i]);
    put_le64(b, d->dr6);
    put_le64(b, d->dr7);
    put_le64(b, d->flags);
    for (int i = 0; i < 9; i++)
        put_le64(b, d->reserved[i]);
}

/* A VCPU_STATE body as a list of sections that tests may change before
 * serialising it. */
struct gsec {
    uint32_t tag;
    uint32_t len;                 /* as written in the section header */
    struct bytes data;
};

struct gvcpu {
    uint32_t id, version;
    unsigned n;
    struct gsec sec[GWS_SEC_MAX + 2];
    uint8_t pad_byte;             /* 0 on the wire */
};

static void gvcpu_add(struct gvcpu *g, uint32_t tag, struct bytes data)
{
    g->sec[g->n++] = (struct gsec){ tag, (uint32_t)data.len, data };
}

/* In the order the VMM has always written them; version 2 adds CPUID and
 * TSC_KHZ at the end. */
static void gvcpu_build(struct gvcpu *g, uint32_t id, const struct vcpu_state *st,
                        uint32_t version)
{
    memset(g, 0, sizeof(*g));
    g->id = id;
    g->version = version;
    struct bytes b = { 0 };
    golden_regs(&b, &st->regs);
    gvcpu_add(g, 1, b);
    b = (struct bytes){ 0 };
    golden_sregs(&b, &st->sregs);
    gvcpu_add(g, 2, b);
    b = (struct bytes){ 0 };
    put(&b, st->xsave, st->xsave_size);
    gvcpu_add(g, 3, b);
    if (st->has_xcrs) {
        b = (struct bytes){ 0 };
        golden_xcrs(&b, &st->xcrs);
        gvcpu_add(g, 4, b);
    }
    b = (struct bytes){ 0 };
    golden_msrs(&b, st);
    gvcpu_add(g, 5, b);
    b = (struct bytes){ 0 };
    put(&b, st->lapic.regs, 1024); /* register at APIC offset o at byte o */
    gvcpu_add(g, 6, b);
    b = (struct bytes){ 0 };
    golden_events(&b, &st->events);
    gvcpu_add(g, 7, b);
    b = (struct bytes){ 0 };
    put_le32(&b, st->mp.mp_state);
    gvcpu_add(g, 8, b);
    b = (struct bytes){ 0 };
    golden_debugregs(&b, &st->debugregs);
    gvcpu_add(g, 9, b);
    if (version < 2)
        return;
    b = (struct bytes){ 0 };
    golden_cpuid(&b, st);
    gvcpu_add(g, 10, b);
    b = (struct bytes){ 0 };
    put_le32(&b, st->tsc_khz);
    put_le32(&b, 0);
    gvcpu_add(g, 11, b);
}

static void gvcpu_body(const struct gvcpu *g, struct bytes *out)
{
    put_le32(out, g->id);
    put_le32(out, g->version);
    for (unsigned i = 0; i < g->n; i++) {
        put_le32(out, g->sec[i].tag);
        put_le32(out, g->sec[i].len);
        put(out, g->sec[i].data.p, g->sec[i].data.len);
        put_fill(out, g->pad_byte, (8 - g->sec[i].data.len % 8) % 8);
    }
}

static void gvcpu_free(struct gvcpu *g)
{
    for (unsigned i = 0; i < g->n; i++)
        bytes_free(&g->sec[i].data);
}

static void gvcpu_drop(struct gvcpu *g, unsigned i)
{
    bytes_free(&g->sec[i].data);
    memmove(&g->sec[i], &g->sec[i + 1], (g->n - i - 1) * sizeof(g->sec[0]));
    g->n--;
}

/* The golden body of vCPU id of the known stream, of a record version. */
static void golden_vcpu_body(uint32_t id, uint32_t version, struct bytes *out)
{
    static struct vcpu_state st;
    struct gvcpu g;
    fill_state(&st, id);
    gvcpu_build(&g, id, &st, version);
    gvcpu_body(&g, out);
    gvcpu_free(&g);
}

/* DEVICE_STATE (doc 4.6): id NUL-padded to 32, instance, version, body. */
static void golden_device_body(const char *id, uint32_t instance, uint32_t version,
                               const void *data, size_t len, struct bytes *out)
{
    put(out, id, strlen(id));
    put_fill(out, 0, 32 - strlen(id));
    put_le32(out, instance);
    put_le32(out, version);
    put(out, data, len);
}

/* ---- golden framing (doc 2, 3, 4.1) ---- */

static void golden_record(struct bytes *out, uint32_t type, const struct bytes *body)
{
    size_t start = out->len;
    put_le32(out, type);
    put_le32(out, (uint32_t)body->len);
    put(out, body->p, body->len);
    put_fill(out, 0, (8 - body->len % 8) % 8);
    put_le64(out, XXH3_64bits(out->p + start, out->len - start));
}

static void golden_preamble_header(struct bytes *out)
{
    put(out, "GODWITMS", 8);
    put_le32(out, 1);
    put_le32(out, 0);
    struct bytes h = { 0 };
    put_le32(&h, 4096);
    put_le32(&h, known_vm.nr_vcpus);
    put_le64(&h, known_vm.ram_size);
    put(&h, known_vm.uuid, 16);
    put(&h, known_vm.name, strlen(known_vm.name));
    put_fill(&h, 0, 64 - strlen(known_vm.name));
    put_le32(&h, known_vm.nr_regions);
    put_le32(&h, 0);
    for (uint32_t i = 0; i < known_vm.nr_regions; i++) {
        put_le64(&h, known_vm.regions[i].gpa);
        put_le64(&h, known_vm.regions[i].size);
    }
    golden_record(out, 0x0001, &h);
    bytes_free(&h);
}

/* The known stream: header, vCPU 0 and 1 (VCPU_STATE of `version`), the
 * seven devices, END_OF_STREAM. */
static void golden_stream(struct bytes *out, uint32_t version)
{
    fill_devices();
    golden_preamble_header(out);
    for (uint32_t id = 0; id < 2; id++) {
        struct bytes b = { 0 };
        golden_vcpu_body(id, version, &b);
        golden_record(out, 0x0010, &b);
        bytes_free(&b);
    }
    for (unsigned i = 0; i < NR_KNOWN_DEVICES; i++) {
        struct bytes b = { 0 };
        golden_device_body(known_devices[i].id, 0, known_devices[i].version, device_body[i],
                           known_devices[i].len, &b);
        golden_record(out, 0x0011, &b);
        bytes_free(&b);
    }
    struct bytes none = { 0 };
    golden_record(out, 0x0021, &none);
}

/* A stream of the known header, one record of `type` with `body` (framed
 * here, so the writers' checks do not stop hostile bodies), END_OF_STREAM;
 * read by the typed reader. Returns its verdict, the message in msg. */
static int typed_read_one(uint32_t type, const struct bytes *body, char *msg, size_t ml)
{
    struct bytes in = { 0 }, none = { 0 };
    golden_preamble_header(&in);
    golden_record(&in, type, body);
    golden_record(&in, 0x0021, &none);
    struct stream_membuf m = { .data = in.p, .len = in.len };
    struct stream s;
    struct stream_vm_info vm;
    stream_init(&s, &stream_mem_ops, &m);
    int rc = stream_read_header(&s, &vm);
    struct stream_rec rec;
    while (rc == 0 && (rc = stream_next_record(&s, &rec)) == 0)
        ;
    if (rc == -ENODATA)
        rc = 0;
    snprintf(msg, ml, "%s", stream_error(&s));
    stream_fini(&s);
    bytes_free(&in);
    return rc;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s: cannot open (unit tests run from the repository root)", path);
    static uint8_t buf[1 << 20];
    *len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    return buf;
}

static void assert_bytes_equal(const uint8_t *got, size_t got_len, const struct bytes *want,
                               const char *what)
{
    if (got_len != want->len)
        fail_msg("%s: %zu bytes, golden %zu", what, got_len, want->len);
    for (size_t i = 0; i < got_len; i++)
        if (got[i] != want->p[i])
            fail_msg("%s: byte %zu is 0x%02x, golden 0x%02x", what, i, got[i], want->p[i]);
}

/* The state fill_state(id) gives, as a reader must return it: the MSR
 * reserved word is not on the wire, nor XCRS when has_xcrs is false, nor
 * the CPU in a version 1 record. */
static void expected_state(struct vcpu_state *st, uint32_t id, uint32_t version)
{
    fill_state(st, id);
    if (version < 2) {
        st->has_cpuid = false;
        st->ncpuid = 0;
        memset(st->cpuid, 0, sizeof(st->cpuid));
        st->tsc_khz = 0;
    }
    for (uint32_t i = 0; i < st->nmsrs; i++)
        st->msrs[i].reserved = 0;
    if (!st->has_xcrs)
        memset(&st->xcrs, 0, sizeof(st->xcrs));
}

static struct vcpu_state st_a, st_b;

/* ---- wire compatibility ---- */

/* The stream written by the old code path is the golden stream. */
static void test_old_stream_is_golden(void **state)
{
    size_t len;
    const uint8_t *old = read_file(OLD_STREAM, &len);
    struct bytes golden = { 0 };
    golden_stream(&golden, 1);
    assert_bytes_equal(old, len, &golden, OLD_STREAM);
    bytes_free(&golden);
}

/* Today's writers, from a vcpu_state (adapter) and from sections (typed
 * layer), write the golden bytes of version 2. */
static void test_writers_write_golden(void **state)
{
    struct bytes golden = { 0 };
    golden_stream(&golden, 2);
    struct stream_membuf out = { 0 };
    struct stream s;
    stream_init(&s, &stream_mem_ops, &out);
    assert_int_equal(stream_write_header(&s, &known_vm), 0);
    for (uint32_t id = 0; id < 2; id++) {
        fill_state(&st_a, id);
        assert_int_equal(state_write_vcpu(&s, id, &st_a), 0);
    }
    for (unsigned i = 0; i < NR_KNOWN_DEVICES; i++)
        assert_int_equal(stream_write_device(&s, known_devices[i].id, 0, known_devices[i].version,
                                             device_body[i], known_devices[i].len), 0);
    assert_int_equal(stream_write_eos(&s), 0);
    assert_bytes_equal(out.out, out.out_len, &golden, "state_write_vcpu + stream_write_device");
    stream_fini(&s);
    free(out.out);

    for (uint32_t id = 0; id < 2; id++) {
        struct gvcpu g;
        fill_state(&st_a, id);
        gvcpu_build(&g, id, &st_a, 2);
        struct stream_section sec[GWS_SEC_MAX];
        for (unsigned i = 0; i < g.n; i++)
            sec[i] = (struct stream_section){ g.sec[i].tag, g.sec[i].len, g.sec[i].data.p };
        struct bytes body = { 0 }, rec = { 0 };
        gvcpu_body(&g, &body);
        golden_record(&rec, 0x0010, &body);
        memset(&out, 0, sizeof(out));
        stream_init(&s, &stream_mem_ops, &out);
        assert_int_equal(stream_write_vcpu(&s, id, sec, g.n), 0);
        assert_int_equal(stream_flush(&s), 0);
        assert_bytes_equal(out.out, out.out_len, &rec, "stream_write_vcpu");
        stream_fini(&s);
        free(out.out);
        bytes_free(&body);
        bytes_free(&rec);
        gvcpu_free(&g);
    }
    bytes_free(&golden);
}

static void check_vcpu_record(const struct stream_rec *rec, uint32_t version, unsigned *nvcpu)
{
    uint32_t id = rec->u.vcpu.id;
    assert_int_equal(id, *nvcpu);
    (*nvcpu)++;
    struct gvcpu g;
    fill_state(&st_a, id);
    gvcpu_build(&g, id, &st_a, version);
    /* typed reader: the sections as they are on the wire */
    assert_int_equal(rec->u.vcpu.version, version);
    assert_int_equal(rec->u.vcpu.nsec, g.n);
    for (unsigned i = 0; i < g.n; i++) {
        assert_int_equal(rec->u.vcpu.sec[i].tag, g.sec[i].tag);
        assert_int_equal(rec->u.vcpu.sec[i].len, g.sec[i].len);
        assert_memory_equal(rec->u.vcpu.sec[i].data, g.sec[i].data.p, g.sec[i].len);
    }
    gvcpu_free(&g);
    /* the VMM's loader on the raw body: the known state */
    struct gw_error err;
    gw_error_init(&err);
    uint32_t got_id = 99;
    memset(&st_b, 0xa5, sizeof(st_b));
    assert_int_equal(state_parse_vcpu(rec->body, rec->length, &got_id, &st_b, &err), 0);
    assert_int_equal(got_id, id);
    expected_state(&st_a, id, version);
    assert_memory_equal(&st_b, &st_a, sizeof(st_a));
}

static void check_device_record(const struct stream_rec *rec, unsigned *ndev)
{
    const struct known_device *k = &known_devices[*ndev];
    assert_string_equal(rec->u.device.id, k->id);
    assert_int_equal(rec->u.device.instance, 0);
    assert_int_equal(rec->u.device.version, k->version);
    assert_int_equal(rec->u.device.len, k->len);
    assert_memory_equal(rec->u.device.data, device_body[*ndev], k->len);
    struct stream_device dev;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(stream_parse_device(rec->body, rec->length, &dev, &err), 0);
    assert_string_equal(dev.id, k->id);
    assert_int_equal(dev.instance, 0);
    assert_int_equal(dev.version, k->version);
    assert_ptr_equal(dev.data, rec->u.device.data);
    assert_int_equal(dev.len, k->len);
    (*ndev)++;
}

/* A stream loads through both readers to the known state. */
static void load_known_stream(const uint8_t *data, size_t len, uint32_t version)
{
    fill_devices();
    struct stream_membuf m = { .data = data, .len = len };
    struct stream s;
    struct stream_vm_info vm;
    stream_init(&s, &stream_mem_ops, &m);
    assert_int_equal(stream_read_header(&s, &vm), 0);
    assert_string_equal(vm.name, known_vm.name);
    assert_memory_equal(vm.uuid, known_vm.uuid, 16);
    assert_int_equal(vm.nr_vcpus, 2);
    unsigned nvcpu = 0, ndev = 0;
    bool eos = false;
    struct stream_rec rec;
    int rc;
    while ((rc = stream_next_record(&s, &rec)) == 0) {
        if (rec.type == GWS_VCPU_STATE)
            check_vcpu_record(&rec, version, &nvcpu);
        else if (rec.type == GWS_DEVICE_STATE)
            check_device_record(&rec, &ndev);
        else if (rec.type == GWS_END_OF_STREAM)
            eos = true;
        else
            fail_msg("unexpected record type 0x%x", rec.type);
    }
    if (rc != -ENODATA)
        fail_msg("%s", stream_error(&s));
    assert_true(eos);
    assert_int_equal(nvcpu, 2);
    assert_int_equal(ndev, NR_KNOWN_DEVICES);
    stream_fini(&s);
}

/* The old stream (version 1 vCPU records) loads, without a CPU. */
static void test_old_stream_loads(void **state)
{
    size_t len;
    const uint8_t *old = read_file(OLD_STREAM, &len);
    load_known_stream(old, len, 1);
}

/* Today's golden stream (version 2) loads with its CPU and TSC rate. */
static void test_new_stream_loads(void **state)
{
    struct bytes golden = { 0 };
    golden_stream(&golden, 2);
    load_known_stream(golden.p, golden.len, 2);
    bytes_free(&golden);
}

/* ---- hostile bodies ---- */

enum vcpu_bad {
    BAD_REGS_LEN, BAD_XSAVE_LEN, BAD_TAG_12, BAD_TAG_0, BAD_MSR_TOO_MANY, BAD_MSR_COUNT,
    BAD_MSR_ZERO_WORD, BAD_MSR_ENTRY_PAD, BAD_XCRS_NR, BAD_MISSING, BAD_TWICE,
    BAD_CPUID_MISSING, BAD_TSC_MISSING, BAD_CPUID_TWICE_LEAF, BAD_CPUID_EMPTY, BAD_TSC_ZERO_WORD,
    /* framing and header: the writers cannot express these */
    BAD_PADDING, BAD_VERSION, BAD_V1_CPUID, BAD_OVERRUN, BAD_TRUNCATED_HEADER, BAD_SHORT,
};

static const struct {
    enum vcpu_bad what;
    const char *want;
} vcpu_cases[] = {
    { BAD_REGS_LEN, "vCPU 1: regs section is 143 bytes, must be 144" },
    { BAD_XSAVE_LEN, "vCPU 1: xsave section of 4100 bytes" },
    { BAD_TAG_12, "vCPU 1: unknown vCPU section tag 12" },
    { BAD_TAG_0, "vCPU 1: unknown vCPU section tag 0" },
    { BAD_MSR_TOO_MANY, "vCPU 1: msrs section: 1025 MSRs (at most 1024)" },
    { BAD_MSR_COUNT, "vCPU 1: msrs section: count 6 does not match its 88 bytes" },
    { BAD_MSR_ZERO_WORD, "vCPU 1: msrs section: the word after the count is not zero" },
    { BAD_MSR_ENTRY_PAD, "vCPU 1: msrs section: entry 2 has a non-zero pad" },
    { BAD_XCRS_NR, "vCPU 1: xcrs section: 17 XCRs (at most 16)" },
    { BAD_MISSING, "vCPU 1: section lapic is missing" },
    { BAD_TWICE, "vCPU 1: section lapic appears twice" },
    { BAD_CPUID_MISSING, "vCPU 1: section cpuid is missing" },
    { BAD_TSC_MISSING, "vCPU 1: section tsc_khz is missing" },
    { BAD_CPUID_TWICE_LEAF, "vCPU 1: cpuid section: leaf 0x80000001 index 1 appears twice" },
    { BAD_CPUID_EMPTY, "vCPU 1: cpuid section: 0 entries (must be 1..256)" },
    { BAD_TSC_ZERO_WORD, "vCPU 1: tsc_khz section: the word after the rate is not zero" },
    { BAD_PADDING, "vCPU 1: section padding is not zero" },
    { BAD_VERSION, "vCPU state version 3 (this godwit reads 1..2)" },
    { BAD_V1_CPUID, "vCPU 1: section cpuid in a version 1 record" },
    { BAD_OVERRUN, "section 11 (16 bytes) overruns the record" },
    { BAD_TRUNCATED_HEADER, "truncated section header at byte 6720" },
    { BAD_SHORT, "too short (7 bytes)" },
};

/* Golden vCPU 1, version 2 (sections 0 REGS, 2 XSAVE, 3 XCRS, 4 MSRS,
 * 5 LAPIC, 8 DEBUGREGS, 9 CPUID, 10 TSC_KHZ) with one thing wrong. */
static void make_bad_vcpu(enum vcpu_bad what, struct gvcpu *g)
{
    fill_state(&st_a, 1);
    gvcpu_build(g, 1, &st_a, 2);
    struct gsec *msrs = &g->sec[4], *cpuid = &g->sec[9];
    switch (what) {
    case BAD_REGS_LEN: g->sec[0].len = g->sec[0].data.len = 143; break;
    case BAD_XSAVE_LEN: g->sec[2].len = g->sec[2].data.len = 4100; break;
    case BAD_TAG_12: g->sec[3].tag = 12; break;
    case BAD_TAG_0: g->sec[3].tag = 0; break;
    case BAD_MSR_TOO_MANY:
        bytes_free(&msrs->data);
        put_le32(&msrs->data, 1025);
        put_le32(&msrs->data, 0);
        for (uint32_t i = 0; i < 1025; i++) {
            put_le32(&msrs->data, 0xc0000000 + i);
            put_le32(&msrs->data, 0);
            put_le64(&msrs->data, i);
        }
        msrs->len = (uint32_t)msrs->data.len;
        break;
    case BAD_MSR_COUNT: msrs->data.p[0] = 6; break;
    case BAD_MSR_ZERO_WORD: msrs->data.p[4] = 1; break;
    case BAD_MSR_ENTRY_PAD: msrs->data.p[8 + 16 * 2 + 4] = 1; break;
    case BAD_XCRS_NR: g->sec[3].data.p[0] = 17; break;
    case BAD_MISSING: gvcpu_drop(g, 5); break;
    case BAD_TWICE: {
        struct bytes copy = { 0 };
        put(&copy, g->sec[5].data.p, g->sec[5].data.len);
        gvcpu_add(g, GWS_SEC_LAPIC, copy);
        break;
    }
    case BAD_CPUID_MISSING: gvcpu_drop(g, 9); break;
    case BAD_TSC_MISSING: gvcpu_drop(g, 10); break;
    case BAD_CPUID_TWICE_LEAF:
        /* entry 2 (0x80000002, 2) gets entry 1's function and index */
        memcpy(cpuid->data.p + 8 + 40 * 2, cpuid->data.p + 8 + 40 * 1, 8);
        break;
    case BAD_CPUID_EMPTY:
        cpuid->data.len = 8;
        cpuid->len = 8;
        memset(cpuid->data.p, 0, 8);
        break;
    case BAD_TSC_ZERO_WORD: g->sec[10].data.p[4] = 1; break;
    case BAD_PADDING: g->pad_byte = 1; break;
    case BAD_VERSION: g->version = 3; break;
    case BAD_V1_CPUID: g->version = 1; break;
    case BAD_OVERRUN: g->sec[g->n - 1].len += 8; break;
    case BAD_TRUNCATED_HEADER:
    case BAD_SHORT: break; /* on the body, below */
    }
}

static void bad_vcpu_body(enum vcpu_bad what, struct gvcpu *g, struct bytes *body)
{
    make_bad_vcpu(what, g);
    gvcpu_body(g, body);
    if (what == BAD_TRUNCATED_HEADER)
        put_le32(body, GWS_SEC_MP_STATE);
    assert_true(what != BAD_V1_CPUID || body->len > 8);
    if (what == BAD_SHORT)
        body->len = 7;
}

/* Both readers refuse body with the same message; returns it. */
static const char *both_refuse_vcpu(const struct bytes *body)
{
    static char typed[600];
    static struct gw_error err;
    gw_error_init(&err);
    uint32_t id;
    if (state_parse_vcpu(body->p, body->len, &id, &st_b, &err) >= 0)
        fail_msg("state_parse_vcpu accepted a bad body");
    assert_int_equal(err.code, EPROTO);
    assert_true(typed_read_one(GWS_VCPU_STATE, body, typed, sizeof(typed)) < 0);
    char want[600];
    snprintf(want, sizeof(want), VCPU_RECORD_PREFIX "%s", err.msg);
    if (strcmp(typed, want))
        fail_msg("typed reader: \"%s\", state_parse_vcpu: \"%s\"", typed, err.msg);
    return err.msg;
}

static void test_hostile_vcpu(void **state)
{
    for (unsigned c = 0; c < sizeof(vcpu_cases) / sizeof(vcpu_cases[0]); c++) {
        struct gvcpu g;
        struct bytes body = { 0 };
        bad_vcpu_body(vcpu_cases[c].what, &g, &body);
        const char *msg = both_refuse_vcpu(&body);
        if (!strstr(msg, vcpu_cases[c].want))
            fail_msg("case %u: \"%s\" lacks \"%s\"", c, msg, vcpu_cases[c].want);
        /* The writer refuses what the readers refuse, with the same words. */
        if (vcpu_cases[c].what < BAD_PADDING) {
            struct stream_section sec[GWS_SEC_MAX + 2];
            for (unsigned i = 0; i < g.n; i++)
                sec[i] = (struct stream_section){ g.sec[i].tag, g.sec[i].len, g.sec[i].data.p };
            struct stream_membuf out = { 0 };
            struct stream s;
            stream_init(&s, &stream_mem_ops, &out);
            assert_int_equal(stream_write_vcpu(&s, 1, sec, g.n), -EPROTO);
            assert_string_equal(stream_error(&s), msg);
            stream_fini(&s);
            assert_int_equal(out.out_len, 0);
            free(out.out);
        }
        bytes_free(&body);
        gvcpu_free(&g);
    }
}

/* Every truncation of a good body fails in both readers alike. */
static void test_vcpu_truncated_anywhere(void **state)
{
    struct bytes body = { 0 };
    golden_vcpu_body(1, 2, &body);
    size_t full = body.len;
    for (size_t cut = 0; cut < full; cut++) {
        body.len = cut;
        both_refuse_vcpu(&body);
    }
    bytes_free(&body);
}

/* What only one layer can check: the vCPU id against the header (typed
 * reader), an oversized body (the record layer refuses it before the
 * typed reader sees it); XCRS is optional for both. */
static void test_vcpu_id_size_optional(void **state)
{
    char msg[600];
    struct gw_error err;
    struct gvcpu g;
    struct bytes body = { 0 };
    uint32_t id;
    fill_state(&st_a, 1);
    gvcpu_build(&g, 5, &st_a, 2);
    gvcpu_body(&g, &body);
    gw_error_init(&err);
    assert_int_equal(state_parse_vcpu(body.p, body.len, &id, &st_b, &err), 0);
    assert_int_equal(id, 5);
    assert_true(typed_read_one(GWS_VCPU_STATE, &body, msg, sizeof(msg)) < 0);
    assert_string_equal(msg, VCPU_RECORD_PREFIX "vCPU 5, the header says 2 vCPUs");
    bytes_free(&body);

    gvcpu_drop(&g, 3); /* XCRS */
    g.id = 1;
    gvcpu_body(&g, &body);
    gw_error_init(&err);
    assert_int_equal(state_parse_vcpu(body.p, body.len, &id, &st_b, &err), 0);
    assert_false(st_b.has_xcrs);
    assert_int_equal(typed_read_one(GWS_VCPU_STATE, &body, msg, sizeof(msg)), 0);
    bytes_free(&body);
    gvcpu_free(&g);

    static uint8_t big[GWS_MAX_VCPU_BODY + 8];
    memcpy(big, (uint32_t[]){ 0, 1 }, 8);
    gw_error_init(&err);
    assert_int_equal(state_parse_vcpu(big, sizeof(big), &id, &st_b, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "more than a VCPU_STATE may have (131072)"));
}

/* The adapter's writer refuses, and writes nothing, for a vcpu_state the
 * reader could not load. */
static void test_state_writer_refuses(void **state)
{
    static const struct {
        const char *want;
        int what;
    } cases[] = {
        { "vCPU 0: xsave section of 4100 bytes", 0 },
        { "vCPU 0: msrs section: 1100 MSRs (at most 1024)", 1 },
        { "vCPU 0: xcrs section: 17 XCRs (at most 16)", 2 },
        { "vCPU 0: section cpuid is missing", 3 },
        { "vCPU 0: cpuid section: 300 entries (must be 1..256)", 4 },
    };
    for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        fill_state(&st_a, 0);
        if (cases[c].what == 0)
            st_a.xsave_size = 4100;
        if (cases[c].what == 1)
            st_a.nmsrs = 1100;
        if (cases[c].what == 3)
            st_a.has_cpuid = false;
        if (cases[c].what == 4)
            st_a.ncpuid = 300;
        if (cases[c].what == 2) {
            st_a.has_xcrs = true;
            st_a.xcrs.nr_xcrs = 17;
        }
        struct stream_membuf out = { 0 };
        struct stream s;
        stream_init(&s, &stream_mem_ops, &out);
        assert_int_equal(state_write_vcpu(&s, 0, &st_a), -EPROTO);
        if (strncmp(stream_error(&s), cases[c].want, strlen(cases[c].want)))
            fail_msg("case %u: \"%s\", want \"%s...\"", c, stream_error(&s), cases[c].want);
        assert_int_equal(stream_flush(&s), -EPROTO);
        assert_int_equal(out.out_len, 0);
        stream_fini(&s);
        free(out.out);
    }
}

static const char *both_refuse_device(const struct bytes *body)
{
    static char typed[600];
    static struct gw_error err;
    gw_error_init(&err);
    struct stream_device dev;
    if (stream_parse_device(body->p, body->len, &dev, &err) >= 0)
        fail_msg("stream_parse_device accepted a bad body");
    assert_true(typed_read_one(GWS_DEVICE_STATE, body, typed, sizeof(typed)) < 0);
    char want[600];
    snprintf(want, sizeof(want), DEVICE_RECORD_PREFIX "%s", err.msg);
    if (strcmp(typed, want))
        fail_msg("typed reader: \"%s\", stream_parse_device: \"%s\"", typed, err.msg);
    return err.msg;
}

static void test_hostile_device(void **state)
{
    static const struct {
        const char id[33];
        size_t idlen;
        const char *want;
    } cases[] = {
        { "", 0, "device id is empty or not NUL-terminated" },
        { "0123456789abcdef0123456789abcdef", 32, "device id is empty or not NUL-terminated" },
        { "a\"b", 3, "device id has a byte 0x22 outside [A-Za-z0-9._-]" },
        { "serial 0", 8, "device id has a byte 0x20 outside [A-Za-z0-9._-]" },
        { "serial0\0x", 9, "device id has bytes after its NUL" },
    };
    for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct bytes body = { 0 };
        put(&body, cases[c].id, cases[c].idlen);
        put_fill(&body, 0, 32 - cases[c].idlen);
        put_le32(&body, 0);
        put_le32(&body, 1);
        put(&body, "abcd", 4);
        const char *msg = both_refuse_device(&body);
        if (strcmp(msg, cases[c].want))
            fail_msg("case %u: \"%s\", want \"%s\"", c, msg, cases[c].want);
        bytes_free(&body);
    }
    struct bytes body = { 0 };
    golden_device_body("serial0", 0, 1, "", 0, &body);
    body.len = 39;
    assert_string_equal(both_refuse_device(&body), "too short (39 bytes)");
    bytes_free(&body);
    /* The writer refuses the ids the readers refuse. */
    const char *bad_ids[] = { "", "a\"b", "serial 0", "0123456789abcdef0123456789abcdef" };
    for (unsigned i = 0; i < 4; i++) {
        struct stream_membuf out = { 0 };
        struct stream s;
        stream_init(&s, &stream_mem_ops, &out);
        assert_true(stream_write_device(&s, bad_ids[i], 0, 1, "abcd", 4) < 0);
        assert_non_null(strstr(stream_error(&s), "device id"));
        stream_fini(&s);
        assert_int_equal(out.out_len, 0);
        free(out.out);
    }
    static uint8_t big[GWS_MAX_DEVICE_BODY + 1];
    memcpy(big, "pit", 4);
    struct stream_device dev;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(stream_parse_device(big, sizeof(big), &dev, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "more than a DEVICE_STATE may have (1048576)"));
}

/* Random damage to a good body, aimed mostly at the bytes the checks read
 * (section headers, MSR words, padding, the record header): the two readers
 * agree on every body, and whatever they accept the writer can write. */
static void test_random_damage_agreement(void **state)
{
    struct gvcpu g;
    fill_state(&st_a, 1);
    gvcpu_build(&g, 1, &st_a, 2);
    struct bytes good = { 0 };
    gvcpu_body(&g, &good);
    size_t hot[96];
    unsigned nhot = 0;
    size_t pos = 8;
    hot[nhot++] = 0;
    hot[nhot++] = 4;
    for (unsigned i = 0; i < g.n; i++) {
        hot[nhot++] = pos;
        hot[nhot++] = pos + 4;
        if (g.sec[i].tag == GWS_SEC_MSRS || g.sec[i].tag == GWS_SEC_XCRS ||
            g.sec[i].tag == GWS_SEC_TSC_KHZ)
            for (unsigned k = 0; k < 6 && 4 * k < g.sec[i].data.len; k++)
                hot[nhot++] = pos + 8 + 4 * k;
        if (g.sec[i].tag == GWS_SEC_CPUID) /* count, zero, each function and index */
            for (unsigned k = 0; k < 2 + 10 * 4 && 4 * k < g.sec[i].data.len; k++)
                if (k < 2 || (k - 2) % 10 < 2)
                    hot[nhot++] = pos + 8 + 4 * k;
        pos += 8 + g.sec[i].data.len;
        if (g.sec[i].data.len % 8)
            hot[nhot++] = pos;
        pos += (8 - g.sec[i].data.len % 8) % 8;
    }
    assert_int_equal(pos, good.len);
    gvcpu_free(&g);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    unsigned accepted = 0, refused = 0;
    struct bytes body = { 0 };
    for (unsigned iter = 0; iter < 3000; iter++) {
        body.len = 0;
        put(&body, good.p, good.len);
        unsigned flips = 1 + iter % 3;
        for (unsigned f = 0; f < flips; f++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (x & 1) ? hot[(x >> 8) % nhot] + (x >> 40) % 4 : (x >> 8) % good.len;
            body.p[at] ^= (uint8_t)(1u << ((x >> 32) % 8));
        }
        if (iter % 7 == 0)
            body.len -= (x >> 16) % 24;
        struct gw_error err;
        gw_error_init(&err);
        uint32_t id;
        if (state_parse_vcpu(body.p, body.len, &id, &st_b, &err) < 0) {
            both_refuse_vcpu(&body);
            refused++;
            continue;
        }
        char msg[600];
        int rc = typed_read_one(GWS_VCPU_STATE, &body, msg, sizeof(msg));
        if (id < 2 && rc != 0)
            fail_msg("iteration %u: typed reader refused what state_parse_vcpu took: %s", iter, msg);
        if (id >= 2 && !strstr(msg, "the header says 2 vCPUs"))
            fail_msg("iteration %u: vCPU %u: %s", iter, id, msg);
        struct stream_membuf out = { 0 };
        struct stream s;
        stream_init(&s, &stream_mem_ops, &out);
        if (state_write_vcpu(&s, id, &st_b) < 0)
            fail_msg("iteration %u: writer refused an accepted state: %s", iter, stream_error(&s));
        stream_fini(&s);
        free(out.out);
        accepted++;
    }
    /* Both outcomes occurred many times: the comparison was exercised. */
    assert_true(accepted > 300);
    assert_true(refused > 300);
    bytes_free(&body);
    bytes_free(&good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_old_stream_is_golden),
        cmocka_unit_test(test_writers_write_golden),
        cmocka_unit_test(test_old_stream_loads),
        cmocka_unit_test(test_new_stream_loads),
        cmocka_unit_test(test_hostile_vcpu),
        cmocka_unit_test(test_vcpu_truncated_anywhere),
        cmocka_unit_test(test_vcpu_id_size_optional),
        cmocka_unit_test(test_state_writer_refuses),
        cmocka_unit_test(test_hostile_device),
        cmocka_unit_test(test_random_damage_agreement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
