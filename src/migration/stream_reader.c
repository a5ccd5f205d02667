/* Typed record reader (stream_records.h): the header, then every record
 * parsed and validated before the caller sees any of it. */
#include "migration/stream_records.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* The section layouts are the KVM x86-64 ABI (docs/stream-format.md 4.5). */
_Static_assert(GWS_SEC_REGS_LEN == sizeof(struct kvm_regs), "kvm_regs");
_Static_assert(GWS_SEC_SREGS_LEN == sizeof(struct kvm_sregs), "kvm_sregs");
_Static_assert(GWS_SEC_XCRS_LEN == sizeof(struct kvm_xcrs), "kvm_xcrs");
_Static_assert(GWS_SEC_LAPIC_LEN == sizeof(struct kvm_lapic_state), "kvm_lapic_state");
_Static_assert(GWS_SEC_EVENTS_LEN == sizeof(struct kvm_vcpu_events), "kvm_vcpu_events");
_Static_assert(GWS_SEC_DEBUGREGS_LEN == sizeof(struct kvm_debugregs), "kvm_debugregs");
_Static_assert(sizeof(struct gws_msr) == sizeof(struct kvm_msr_entry), "kvm_msr_entry");

static size_t pad8(size_t n) { return (8 - (n & 7)) & 7; }

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

/* ---- checks usable alone ---- */

int stream_check_vm_info(const struct stream_vm_info *vm, struct gw_error *err)
{
    const char *nul = memchr(vm->name, 0, sizeof(vm->name));
    if (!nul)
        return gw_error_set(err, EPROTO, "VM name is not NUL-terminated");
    if (!all_zero(nul, sizeof(vm->name) - (size_t)(nul - vm->name)))
        return gw_error_set(err, EPROTO, "VM name has bytes after its NUL");
    if (vm->nr_vcpus == 0 || vm->nr_vcpus > GWS_MAX_VCPUS)
        return gw_error_set(err, EPROTO, "%u vCPUs (must be 1..%u)", vm->nr_vcpus, GWS_MAX_VCPUS);
    if (vm->nr_regions == 0 || vm->nr_regions > GWS_MAX_REGIONS)
        return gw_error_set(err, EPROTO, "%u RAM regions (must be 1..%u)", vm->nr_regions,
                            GWS_MAX_REGIONS);
    uint64_t total = 0, prev_end = 0;
    for (uint32_t i = 0; i < vm->nr_regions; i++) {
        const struct gws_region *r = &vm->regions[i];
        if ((r->gpa | r->size) % GWS_PAGE_SIZE || r->size == 0 || r->gpa + r->size < r->gpa)
            return gw_error_set(err, EPROTO,
                                "RAM region %u (gpa 0x%llx, size 0x%llx) is empty, unaligned or wraps",
                                i, (unsigned long long)r->gpa, (unsigned long long)r->size);
        if (i > 0 && r->gpa < prev_end)
            return gw_error_set(err, EPROTO, "RAM region %u overlaps or is out of order", i);
        prev_end = r->gpa + r->size;
        total += r->size;
    }
    if (total != vm->ram_size)
        return gw_error_set(err, EPROTO, "RAM size %llu differs from the regions' sum %llu",
                            (unsigned long long)vm->ram_size, (unsigned long long)total);
    return 0;
}

int stream_check_device_id(const char id[GWS_DEVICE_ID_LEN], struct gw_error *err)
{
    const char *nul = memchr(id, 0, GWS_DEVICE_ID_LEN);
    if (!nul || nul == id)
        return gw_error_set(err, EPROTO, "device id is empty or not NUL-terminated");
    for (const char *c = id; c < nul; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                  (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-';
        if (!ok)
            return gw_error_set(err, EPROTO, "device id has a byte 0x%02x outside [A-Za-z0-9._-]",
                                (unsigned char)*c);
    }
    if (!all_zero(nul, GWS_DEVICE_ID_LEN - (size_t)(nul - id)))
        return gw_error_set(err, EPROTO, "device id has bytes after its NUL");
    return 0;
}

const char *stream_section_name(uint32_t tag)
{
    static const char *const names[] = {
        [GWS_SEC_REGS] = "regs",   [GWS_SEC_SREGS] = "sregs",       [GWS_SEC_XSAVE] = "xsave",
        [GWS_SEC_XCRS] = "xcrs",   [GWS_SEC_MSRS] = "msrs",         [GWS_SEC_LAPIC] = "lapic",
        [GWS_SEC_EVENTS] = "events", [GWS_SEC_MP_STATE] = "mp_state",
        [GWS_SEC_DEBUGREGS] = "debugregs", [GWS_SEC_CPUID] = "cpuid",
        [GWS_SEC_TSC_KHZ] = "tsc_khz",
    };
    return tag >= 1 && tag <= GWS_SEC_MAX ? names[tag] : "unknown";
}

static int check_msrs(const uint8_t *p, uint32_t len, struct gw_error *err)
{
    uint32_t hdr[2];
    if (len < sizeof(hdr))
        return gw_error_set(err, EPROTO, "msrs section too short (%u bytes)", len);
    memcpy(hdr, p, sizeof(hdr));
    if (hdr[0] > GWS_MAX_MSRS)
        return gw_error_set(err, EPROTO, "msrs section: %u MSRs (at most %u)", hdr[0],
                            GWS_MAX_MSRS);
    if (8 + 16ULL * hdr[0] != len)
        return gw_error_set(err, EPROTO, "msrs section: count %u does not match its %u bytes",
                            hdr[0], len);
    if (hdr[1])
        return gw_error_set(err, EPROTO, "msrs section: the word after the count is not zero");
    for (uint32_t i = 0; i < hdr[0]; i++) {
        struct gws_msr m;
        memcpy(&m, p + 8 + 16 * i, sizeof(m));
        if (m.zero)
            return gw_error_set(err, EPROTO, "msrs section: entry %u has a non-zero pad", i);
    }
    return 0;
}

/* count, a second word, then count x struct kvm_cpuid_entry2; each
 * (function, index) at most once (KVM would take the first and the guest
 * could not tell which). The second word is zero in the CPUID section, the
 * TSC rate in CPU_MODEL (`what` names which, for the messages). */
static int check_cpuid(const char *what, bool zero_word, const uint8_t *p, uint32_t len,
                       struct gw_error *err)
{
    uint32_t hdr[2];
    if (len < sizeof(hdr))
        return gw_error_set(err, EPROTO, "%s too short (%u bytes)", what, len);
    memcpy(hdr, p, sizeof(hdr));
    if (hdr[0] == 0 || hdr[0] > GWS_MAX_CPUID)
        return gw_error_set(err, EPROTO, "%s: %u entries (must be 1..%u)", what, hdr[0],
                            GWS_MAX_CPUID);
    if (8 + (uint64_t)GWS_CPUID_ENTRY_LEN * hdr[0] != len)
        return gw_error_set(err, EPROTO, "%s: count %u does not match its %u bytes", what,
                            hdr[0], len);
    if (zero_word && hdr[1])
        return gw_error_set(err, EPROTO, "%s: the word after the count is not zero", what);
    for (uint32_t i = 0; i < hdr[0]; i++) {
        uint32_t fi[2];
        memcpy(fi, p + 8 + GWS_CPUID_ENTRY_LEN * i, sizeof(fi));
        for (uint32_t k = 0; k < i; k++) {
            uint32_t gk[2];
            memcpy(gk, p + 8 + GWS_CPUID_ENTRY_LEN * k, sizeof(gk));
            if (gk[0] == fi[0] && gk[1] == fi[1])
                return gw_error_set(err, EPROTO, "%s: leaf 0x%x index %u appears twice", what,
                                    fi[0], fi[1]);
        }
    }
    return 0;
}

int stream_check_section(uint32_t tag, const void *data, uint32_t len, struct gw_error *err)
{
    static const uint32_t fixed[] = {
        [GWS_SEC_REGS] = GWS_SEC_REGS_LEN,         [GWS_SEC_SREGS] = GWS_SEC_SREGS_LEN,
        [GWS_SEC_XCRS] = GWS_SEC_XCRS_LEN,         [GWS_SEC_LAPIC] = GWS_SEC_LAPIC_LEN,
        [GWS_SEC_EVENTS] = GWS_SEC_EVENTS_LEN,     [GWS_SEC_MP_STATE] = GWS_SEC_MP_STATE_LEN,
        [GWS_SEC_DEBUGREGS] = GWS_SEC_DEBUGREGS_LEN, [GWS_SEC_TSC_KHZ] = GWS_SEC_TSC_KHZ_LEN,
    };
    if (tag == 0 || tag > GWS_SEC_MAX)
        return gw_error_set(err, EPROTO, "unknown vCPU section tag %u", tag);
    if (tag == GWS_SEC_XSAVE) {
        if (len < 4096 || len > GWS_MAX_XSAVE || len % 64)
            return gw_error_set(err, EPROTO, "xsave section of %u bytes (must be 4096..%u, a multiple of 64)",
                                len, GWS_MAX_XSAVE);
        return 0;
    }
    if (tag == GWS_SEC_MSRS)
        return check_msrs(data, len, err);
    if (tag == GWS_SEC_CPUID)
        return check_cpuid("cpuid section", true, data, len, err);
    if (len != fixed[tag])
        return gw_error_set(err, EPROTO, "%s section is %u bytes, must be %u",
                            stream_section_name(tag), len, fixed[tag]);
    if (tag == GWS_SEC_XCRS) {
        uint32_t nr;
        memcpy(&nr, data, 4);
        if (nr > 16)
            return gw_error_set(err, EPROTO, "xcrs section: %u XCRs (at most 16)", nr);
    }
    if (tag == GWS_SEC_TSC_KHZ) {
        uint32_t w[2];
        memcpy(w, data, sizeof(w));
        if (w[1])
            return gw_error_set(err, EPROTO, "tsc_khz section: the word after the rate is not zero");
    }
    return 0;
}

void stream_set_pfn_check(struct stream *s, bool (*ok)(void *opaque, uint64_t pfn), void *opaque)
{
    s->pfn_ok = ok;
    s->pfn_opaque = opaque;
}

/* ---- header ---- */

int stream_parse_header(struct stream *s, const struct stream_record *r, struct stream_vm_info *vm)
{
    struct gws_header h;
    struct gw_error err;
    gw_error_init(&err);
    if (r->length < sizeof(h))
        return stream_record_error(s, r, EPROTO, "header too short (%u bytes)", r->length);
    memcpy(&h, r->body, sizeof(h));
    if (h.page_size != GWS_PAGE_SIZE)
        return stream_record_error(s, r, EPROTO, "page size %u (must be %u)", h.page_size,
                                   GWS_PAGE_SIZE);
    if (h.nr_regions == 0 || h.nr_regions > GWS_MAX_REGIONS ||
        r->length != sizeof(h) + h.nr_regions * sizeof(struct gws_region))
        return stream_record_error(s, r, EPROTO, "%u RAM regions do not match the length %u",
                                   h.nr_regions, r->length);
    if (h.flags)
        return stream_record_error(s, r, EPROTO, "unknown header flags 0x%x", h.flags);
    memset(vm, 0, sizeof(*vm));
    memcpy(vm->name, h.name, sizeof(vm->name));
    memcpy(vm->uuid, h.uuid, sizeof(vm->uuid));
    vm->nr_vcpus = h.nr_vcpus;
    vm->ram_size = h.ram_size;
    vm->nr_regions = h.nr_regions;
    memcpy(vm->regions, r->body + sizeof(h), h.nr_regions * sizeof(struct gws_region));
    if (stream_check_vm_info(vm, &err) < 0)
        return stream_record_error(s, r, err.code, "%s", err.msg);
    s->nr_vcpus = vm->nr_vcpus;
    stream_set_ram(s, vm->regions, vm->nr_regions);
    s->have_header = true;
    return 0;
}

int stream_read_header(struct stream *s, struct stream_vm_info *vm)
{
    if (stream_read_preamble(s) < 0)
        return s->error;
    for (;;) {
        struct stream_record r;
        int rc = stream_read_record(s, &r);
        if (rc == -ENODATA)
            return stream_set_error(s, EPIPE, "stream truncated: it ends before its header");
        if (rc < 0)
            return rc;
        if (r.type == GWS_HEADER)
            return stream_parse_header(s, &r, vm);
        if (!(r.type & GWS_OPTIONAL))
            return stream_record_error(s, &r, EPROTO, "the stream must start with a HEADER");
        s->skipped += r.type != GWS_INFO;
    }
}

/* ---- page records ---- */

void stream_set_ram(struct stream *s, const struct gws_region *regions, unsigned n)
{
    s->nr_ram = n < GWS_MAX_REGIONS ? n : GWS_MAX_REGIONS;
    for (unsigned i = 0; i < s->nr_ram; i++) {
        s->ram_first[i] = regions[i].gpa / GWS_PAGE_SIZE;
        s->ram_end[i] = (regions[i].gpa + regions[i].size) / GWS_PAGE_SIZE;
    }
}

static bool pfn_is_ram(struct stream *s, uint64_t pfn)
{
    for (unsigned i = 0; i < s->nr_ram; i++)
        if (pfn >= s->ram_first[i] && pfn < s->ram_end[i])
            return s->pfn_ok ? s->pfn_ok(s->pfn_opaque, pfn) : true;
    return false;
}

static int decompress(struct stream *s, const struct stream_record *r, struct stream_rec *out)
{
    size_t raw = (size_t)out->u.pages.count * GWS_PAGE_SIZE;
    if (!s->zdctx && !(s->zdctx = ZSTD_createDCtx()))
        return stream_set_error(s, ENOMEM, "out of memory");
    if (s->zcap < GWS_MAX_ZSTD_DATA) {
        free(s->zbuf);
        s->zcap = 0;
        if (!(s->zbuf = malloc(GWS_MAX_ZSTD_DATA)))
            return stream_set_error(s, ENOMEM, "out of memory");
        s->zcap = GWS_MAX_ZSTD_DATA;
    }
    const uint8_t *src = r->body + sizeof(struct gws_pages) + out->u.pages.count * 8ULL;
    size_t n = ZSTD_decompressDCtx(s->zdctx, s->zbuf, raw, src, out->u.pages.zlen);
    if (ZSTD_isError(n))
        return stream_record_error(s, r, EBADMSG, "zstd data: %s", ZSTD_getErrorName(n));
    if (n != raw)
        return stream_record_error(s, r, EBADMSG, "zstd data expands to %zu bytes, not %zu", n, raw);
    out->u.pages.data = s->zbuf;
    return 0;
}

int stream_parse_pages(struct stream *s, const struct stream_record *r, struct stream_rec *out)
{
    struct gws_pages h;
    if (r->length < sizeof(h))
        return stream_record_error(s, r, EPROTO, "too short (%u bytes)", r->length);
    memcpy(&h, r->body, sizeof(h));
    if (h.count == 0 || h.count > GWS_MAX_BATCH)
        return stream_record_error(s, r, EPROTO, "page count %u (must be 1..%u)", h.count,
                                   GWS_MAX_BATCH);
    uint64_t need = sizeof(h) + 8ULL * h.count;
    if (r->type == GWS_PAGE_DATA)
        need += (uint64_t)h.count * GWS_PAGE_SIZE;
    if (r->type == GWS_PAGE_DATA_ZSTD) {
        if (h.zlen == 0 || h.zlen > ZSTD_COMPRESSBOUND((size_t)h.count * GWS_PAGE_SIZE))
            return stream_record_error(s, r, EPROTO, "compressed length %u out of range", h.zlen);
        need += h.zlen;
    } else if (h.zlen) {
        return stream_record_error(s, r, EPROTO, "reserved field is not zero");
    }
    if (need != r->length)
        return stream_record_error(s, r, EPROTO, "length %u does not match %u pages", r->length,
                                   h.count);
    const uint64_t *pfn = (const uint64_t *)(r->body + sizeof(h)); /* body is 8-aligned */
    for (uint32_t i = 0; i < h.count; i++)
        if (!pfn_is_ram(s, pfn[i]))
            return stream_record_error(s, r, ERANGE, "frame 0x%llx (entry %u) is not guest RAM",
                                       (unsigned long long)pfn[i], i);
    out->u.pages.count = h.count;
    out->u.pages.zlen = h.zlen;
    out->u.pages.pfn = pfn;
    out->u.pages.data = NULL;
    if (r->type == GWS_PAGE_DATA)
        out->u.pages.data = r->body + sizeof(h) + 8ULL * h.count;
    if (r->type == GWS_PAGE_DATA_ZSTD && decompress(s, r, out) < 0)
        return s->error;
    if (r->type == GWS_ZERO_PAGES)
        s->zero_pages += h.count;
    else
        s->pages += h.count;
    if (r->type == GWS_PAGE_DATA_ZSTD)
        s->zstd_pages += h.count;
    return 0;
}

/* ---- state records ---- */

/* The highest section tag of a VCPU_STATE version. */
static uint32_t max_tag(uint32_t version)
{
    return version == 1 ? GWS_SEC_MAX_V1 : GWS_SEC_MAX;
}

/* One more section of vCPU `id`: valid alone, known to the record's
 * version, and its tag not seen before. */
static int check_next_section(uint32_t version, uint32_t id, const struct stream_section *sec,
                              unsigned *seen, struct gw_error *err)
{
    if (sec->tag > max_tag(version) && sec->tag <= GWS_SEC_MAX)
        return gw_error_set(err, EPROTO, "vCPU %u: section %s in a version %u record", id,
                            stream_section_name(sec->tag), version);
    int r = stream_check_section(sec->tag, sec->data, sec->len, err);
    if (r < 0) {
        gw_error_prefix(err, "vCPU %u", id);
        return r;
    }
    if (*seen & (1u << sec->tag))
        return gw_error_set(err, EPROTO, "vCPU %u: section %s appears twice", id,
                            stream_section_name(sec->tag));
    *seen |= 1u << sec->tag;
    return 0;
}

/* Every tag of the version but XCRS is required. */
static int check_complete(uint32_t version, uint32_t id, unsigned seen, struct gw_error *err)
{
    unsigned required = ((2u << max_tag(version)) - 2) & ~(1u << GWS_SEC_XCRS);
    if ((seen & required) == required)
        return 0;
    unsigned missing = __builtin_ctz(required & ~seen);
    return gw_error_set(err, EPROTO, "vCPU %u: section %s is missing", id,
                        stream_section_name(missing));
}

int stream_check_vcpu_sections(uint32_t version, uint32_t vcpu_id,
                               const struct stream_section *sec, unsigned nsec,
                               struct gw_error *err)
{
    unsigned seen = 0;
    for (unsigned i = 0; i < nsec; i++) {
        int r = check_next_section(version, vcpu_id, &sec[i], &seen, err);
        if (r < 0)
            return r;
    }
    return check_complete(version, vcpu_id, seen, err);
}

/* The section at *pos: framing (inside the body, zero padding), then the
 * section checks; appended to v, *pos moved past it. The seen bits bound
 * v->nsec by GWS_SEC_MAX. */
static int next_section(const uint8_t *body, size_t len, size_t *pos, struct stream_vcpu *v,
                        unsigned *seen, struct gw_error *err)
{
    struct gws_section sh;
    if (len - *pos < sizeof(sh))
        return gw_error_set(err, EPROTO, "truncated section header at byte %zu", *pos);
    memcpy(&sh, body + *pos, sizeof(sh));
    size_t at = *pos + sizeof(sh), room = len - at;
    if (sh.len > room || pad8(sh.len) > room - sh.len)
        return gw_error_set(err, EPROTO, "section %u (%u bytes) overruns the record", sh.tag,
                            sh.len);
    struct stream_section sec = { sh.tag, sh.len, body + at };
    int r = check_next_section(v->version, v->id, &sec, seen, err);
    if (r < 0)
        return r;
    if (!all_zero(body + at + sh.len, pad8(sh.len)))
        return gw_error_set(err, EPROTO, "vCPU %u: section padding is not zero", v->id);
    v->sec[v->nsec++] = sec;
    *pos = at + sh.len + pad8(sh.len);
    return 0;
}

int stream_parse_vcpu(const uint8_t *body, size_t len, struct stream_vcpu *out,
                      struct gw_error *err)
{
    struct gws_vcpu h;
    if (len < sizeof(h))
        return gw_error_set(err, EPROTO, "too short (%zu bytes)", len);
    if (len > stream_record_max_len(GWS_VCPU_STATE))
        return gw_error_set(err, EPROTO, "%zu bytes, more than a VCPU_STATE may have (%u)", len,
                            stream_record_max_len(GWS_VCPU_STATE));
    memcpy(&h, body, sizeof(h));
    if (h.version < STREAM_VCPU_VERSION_MIN || h.version > STREAM_VCPU_VERSION)
        return gw_error_set(err, EPROTO, "vCPU state version %u (this godwit reads %u..%u)",
                            h.version, STREAM_VCPU_VERSION_MIN, STREAM_VCPU_VERSION);
    out->id = h.vcpu_id;
    out->version = h.version;
    out->nsec = 0;
    unsigned seen = 0;
    size_t pos = sizeof(h);
    while (pos < len) {
        int r = next_section(body, len, &pos, out, &seen, err);
        if (r < 0)
            return r;
    }
    return check_complete(out->version, out->id, seen, err);
}

int stream_parse_cpu_model(const uint8_t *body, size_t len, struct stream_cpu_model *out,
                           struct gw_error *err)
{
    if (len > GWS_MAX_CPU_MODEL_BODY)
        return gw_error_set(err, EPROTO, "%zu bytes, more than a CPU_MODEL may have (%u)", len,
                            GWS_MAX_CPU_MODEL_BODY);
    int r = check_cpuid("CPU_MODEL", false, body, (uint32_t)len, err);
    if (r < 0)
        return r;
    memcpy(&out->count, body, 4);
    memcpy(&out->tsc_khz, body + 4, 4);
    out->entries = body + 8;
    return 0;
}

int stream_parse_device(const uint8_t *body, size_t len, struct stream_device *out,
                        struct gw_error *err)
{
    struct gws_device h;
    if (len < sizeof(h))
        return gw_error_set(err, EPROTO, "too short (%zu bytes)", len);
    if (len > stream_record_max_len(GWS_DEVICE_STATE))
        return gw_error_set(err, EPROTO, "%zu bytes, more than a DEVICE_STATE may have (%u)",
                            len, stream_record_max_len(GWS_DEVICE_STATE));
    memcpy(&h, body, sizeof(h));
    int r = stream_check_device_id(h.id, err);
    if (r < 0)
        return r;
    memcpy(out->id, h.id, sizeof(h.id));
    out->instance = h.instance;
    out->version = h.version;
    out->data = body + sizeof(h);
    out->len = (uint32_t)(len - sizeof(h));
    return 0;
}

static int parse_vcpu(struct stream *s, const struct stream_record *r, struct stream_rec *out)
{
    struct gw_error err;
    gw_error_init(&err);
    if (stream_parse_vcpu(r->body, r->length, &out->u.vcpu, &err) < 0)
        return stream_record_error(s, r, err.code, "%s", err.msg);
    if (out->u.vcpu.id >= s->nr_vcpus)
        return stream_record_error(s, r, EPROTO, "vCPU %u, the header says %u vCPUs",
                                   out->u.vcpu.id, s->nr_vcpus);
    return 0;
}

static int parse_device(struct stream *s, const struct stream_record *r, struct stream_rec *out)
{
    struct gw_error err;
    gw_error_init(&err);
    if (stream_parse_device(r->body, r->length, &out->u.device, &err) < 0)
        return stream_record_error(s, r, err.code, "%s", err.msg);
    return 0;
}

int stream_parse_eoi(struct stream *s, const struct stream_record *r, struct stream_rec *out)
{
    struct gws_end_of_iteration e;
    if (r->length != sizeof(e))
        return stream_record_error(s, r, EPROTO, "length %u, must be %zu", r->length, sizeof(e));
    memcpy(&e, r->body, sizeof(e));
    if (e.reserved || e.pass == 0)
        return stream_record_error(s, r, EPROTO, "pass %u / reserved field 0x%x invalid", e.pass,
                                   e.reserved);
    out->u.eoi.pass = e.pass;
    out->u.eoi.pages = e.pages;
    return 0;
}

/* ---- dispatch ---- */

/* 1: skip this record; 0: parsed; < 0: error. */
static int parse(struct stream *s, const struct stream_record *r, struct stream_rec *out)
{
    if (s->seen_eos && r->type != GWS_COMMIT && !(r->type & GWS_OPTIONAL))
        return stream_record_error(s, r, EPROTO, "record after END_OF_STREAM");
    switch (r->type) {
    case GWS_HEADER:
        return stream_record_error(s, r, EPROTO, "a second HEADER");
    case GWS_PAGE_DATA:
    case GWS_PAGE_DATA_ZSTD:
    case GWS_ZERO_PAGES:
        return stream_parse_pages(s, r, out);
    case GWS_VCPU_STATE:
        return parse_vcpu(s, r, out);
    case GWS_DEVICE_STATE:
        return parse_device(s, r, out);
    case GWS_END_OF_ITERATION:
        return stream_parse_eoi(s, r, out);
    case GWS_END_OF_STREAM:
        s->seen_eos = true;
        return 0;
    case GWS_COMMIT:
        if (!s->seen_eos)
            return stream_record_error(s, r, EPROTO, "COMMIT before END_OF_STREAM");
        return 0;
    case GWS_INFO:
        out->u.text.text = (const char *)r->body;
        out->u.text.len = r->length;
        return 0;
    case GWS_MIGRATION_ID:
        return stream_record_error(s, r, EPROTO, "MIGRATION_ID belongs to a live post-copy "
                                   "migration, not to a saved stream");
    case GWS_CPU_MODEL: {
        struct gw_error err;
        gw_error_init(&err);
        if (stream_parse_cpu_model(r->body, r->length, &out->u.cpu_model, &err) < 0)
            return stream_record_error(s, r, err.code, "%s", err.msg);
        return 0;
    }
    default:
        if (r->type & GWS_OPTIONAL) {
            s->skipped++;
            return 1;
        }
        if (r->type >= GWS_POSTCOPY_ADVISE && r->type <= 0x03ff)
            return stream_record_error(s, r, EPROTO, "type 0x%x is reserved, or a live "
                                       "post-copy record not valid in a saved stream", r->type);
        return stream_record_error(s, r, EPROTO, "unknown mandatory record type 0x%x", r->type);
    }
}

int stream_next_record(struct stream *s, struct stream_rec *out)
{
    if (s->error)
        return s->error;
    if (!s->have_header)
        return stream_set_error(s, EINVAL, "stream_next_record before stream_read_header");
    for (;;) {
        struct stream_record r;
        int rc = stream_read_record(s, &r);
        if (rc == -ENODATA && s->seen_eos)
            return -ENODATA;
        if (rc == -ENODATA)
            return stream_set_error(s, EPIPE, "stream truncated: it ends after record %llu at "
                                    "offset %llu without END_OF_STREAM",
                                    (unsigned long long)s->records, (unsigned long long)s->bytes);
        if (rc < 0)
            return rc;
        memset(out, 0, sizeof(*out));
        out->type = r.type;
        out->length = r.length;
        out->offset = r.offset;
        out->index = r.index;
        out->body = r.body;
        rc = parse(s, &r, out);
        if (rc <= 0)
            return rc;
    }
}
