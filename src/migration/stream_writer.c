/* Typed record writer (stream_records.h): header, pages with zero-page
 * detection and optional zstd, vCPU and device state, end markers. */
#include "migration/stream_records.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

static const uint8_t zeros[8];

static size_t pad8(size_t n) { return (8 - (n & 7)) & 7; }

bool stream_page_is_zero(const void *page)
{
    const uint8_t *p = page;
    /* 64 bytes per step: one cache line, eight words OR-ed (the compiler
     * vectorises it); most non-zero pages fail in the first line. */
    for (size_t off = 0; off < GWS_PAGE_SIZE; off += 64) {
        uint64_t w[8];
        memcpy(w, p + off, sizeof(w));
        if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
            return false;
    }
    return true;
}

int stream_set_compress(struct stream *s, int level)
{
    if (s->error)
        return s->error;
    if (level > ZSTD_maxCLevel() || level < ZSTD_minCLevel())
        return stream_set_error(s, EINVAL, "zstd level %d out of range", level);
    s->zlevel = level;
    return 0;
}

int stream_write_header(struct stream *s, const struct stream_vm_info *vm)
{
    if (s->error)
        return s->error;
    struct gw_error err;
    gw_error_init(&err);
    if (stream_check_vm_info(vm, &err) < 0)
        return stream_set_error(s, err.code, "writing the header: %s", err.msg);
    struct gws_header h;
    memset(&h, 0, sizeof(h));
    h.page_size = GWS_PAGE_SIZE;
    h.nr_vcpus = vm->nr_vcpus;
    h.ram_size = vm->ram_size;
    memcpy(h.uuid, vm->uuid, sizeof(h.uuid));
    memcpy(h.name, vm->name, sizeof(h.name)); /* checked: NUL-terminated, zero-padded */
    h.nr_regions = vm->nr_regions;
    struct iovec iov[2] = { { &h, sizeof(h) },
                            { (void *)vm->regions, vm->nr_regions * sizeof(struct gws_region) } };
    if (stream_write_preamble(s) < 0)
        return s->error;
    return stream_write_record(s, GWS_HEADER, iov, 2);
}

static int write_zero_batch(struct stream *s, const uint64_t *pfn, uint32_t n)
{
    struct gws_pages h = { n, 0 };
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)pfn, n * 8ULL } };
    s->zero_pages += n;
    return stream_write_record(s, GWS_ZERO_PAGES, iov, 2);
}

/* Compress the batch into s->zbuf; returns the compressed size, or 0 when
 * it would not shrink (or zstd failed: then PAGE_DATA is still correct). */
static size_t compress_batch(struct stream *s, const struct iovec *pg, uint32_t n)
{
    size_t raw = (size_t)n * GWS_PAGE_SIZE;
    if (!s->zcctx && !(s->zcctx = ZSTD_createCCtx()))
        return 0;
    if (s->zcap < GWS_MAX_ZSTD_DATA) {
        free(s->zbuf);
        s->zcap = 0;
        if (!(s->zbuf = malloc(GWS_MAX_ZSTD_DATA)))
            return 0;
        s->zcap = GWS_MAX_ZSTD_DATA;
    }
    ZSTD_CCtx *c = s->zcctx;
    ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, s->zlevel);
    ZSTD_CCtx_setPledgedSrcSize(c, raw);
    /* Stop as soon as the output reaches the raw size: no gain. */
    ZSTD_outBuffer out = { s->zbuf, raw - 1, 0 };
    for (uint32_t i = 0; i < n; i++) {
        ZSTD_inBuffer in = { pg[i].iov_base, pg[i].iov_len, 0 };
        while (in.pos < in.size) {
            size_t r = ZSTD_compressStream2(c, &out, &in, ZSTD_e_continue);
            if (ZSTD_isError(r) || out.pos == out.size)
                return 0;
        }
    }
    ZSTD_inBuffer none = { NULL, 0, 0 };
    size_t left;
    do {
        left = ZSTD_compressStream2(c, &out, &none, ZSTD_e_end);
        if (ZSTD_isError(left) || (left && out.pos == out.size))
            return 0;
    } while (left);
    return out.pos;
}

static int write_data_batch(struct stream *s, const uint64_t *pfn, const struct iovec *pg,
                            uint32_t n)
{
    struct gws_pages h = { n, 0 };
    size_t z = s->zlevel ? compress_batch(s, pg, n) : 0;
    if (z) {
        h.zlen = (uint32_t)z;
        struct iovec iov[3] = { { &h, sizeof(h) }, { (void *)pfn, n * 8ULL }, { s->zbuf, z } };
        s->zstd_pages += n;
        s->pages += n;
        return stream_write_record(s, GWS_PAGE_DATA_ZSTD, iov, 3);
    }
    /* Pages go out with writev straight from the caller's memory; pages
     * adjacent in memory share one iovec. */
    struct iovec iov[2 + GWS_MAX_BATCH];
    int k = 0;
    iov[k++] = (struct iovec){ &h, sizeof(h) };
    iov[k++] = (struct iovec){ (void *)pfn, n * 8ULL };
    for (uint32_t i = 0; i < n; i++) {
        struct iovec *last = &iov[k - 1];
        if (i > 0 && (uint8_t *)last->iov_base + last->iov_len == (uint8_t *)pg[i].iov_base)
            last->iov_len += GWS_PAGE_SIZE;
        else
            iov[k++] = pg[i];
    }
    s->pages += n;
    return stream_write_record(s, GWS_PAGE_DATA, iov, k);
}

int stream_write_pages(struct stream *s, const uint64_t *pfns, const void *const *pages, size_t n)
{
    uint64_t zpfn[GWS_MAX_BATCH], dpfn[GWS_MAX_BATCH];
    struct iovec dpg[GWS_MAX_BATCH];
    uint32_t nz = 0, nd = 0;
    if (s->error)
        return s->error;
    for (size_t i = 0; i < n; i++) {
        if (stream_page_is_zero(pages[i])) {
            zpfn[nz++] = pfns[i];
            if (nz == GWS_MAX_BATCH && write_zero_batch(s, zpfn, nz) < 0)
                return s->error;
            nz %= GWS_MAX_BATCH;
            continue;
        }
        dpfn[nd] = pfns[i];
        dpg[nd++] = (struct iovec){ (void *)pages[i], GWS_PAGE_SIZE };
        if (nd == GWS_MAX_BATCH && write_data_batch(s, dpfn, dpg, nd) < 0)
            return s->error;
        nd %= GWS_MAX_BATCH;
    }
    if (nz && write_zero_batch(s, zpfn, nz) < 0)
        return s->error;
    if (nd && write_data_batch(s, dpfn, dpg, nd) < 0)
        return s->error;
    return 0;
}

int stream_write_vcpu(struct stream *s, uint32_t vcpu_id, const struct stream_section *sec,
                      unsigned nsec)
{
    if (s->error)
        return s->error;
    struct gw_error err;
    gw_error_init(&err);
    /* The reader's check; it also bounds nsec by GWS_SEC_MAX (no tag twice). */
    if (stream_check_vcpu_sections(STREAM_VCPU_VERSION, vcpu_id, sec, nsec, &err) < 0)
        return stream_set_error(s, err.code, "%s", err.msg);
    struct gws_vcpu h = { vcpu_id, STREAM_VCPU_VERSION };
    struct gws_section sh[GWS_SEC_MAX];
    struct iovec iov[1 + 3 * GWS_SEC_MAX];
    int k = 0;
    iov[k++] = (struct iovec){ &h, sizeof(h) };
    for (unsigned i = 0; i < nsec; i++) {
        sh[i] = (struct gws_section){ sec[i].tag, sec[i].len };
        iov[k++] = (struct iovec){ &sh[i], sizeof(sh[i]) };
        iov[k++] = (struct iovec){ (void *)sec[i].data, sec[i].len };
        if (pad8(sec[i].len))
            iov[k++] = (struct iovec){ (void *)zeros, pad8(sec[i].len) };
    }
    return stream_write_record(s, GWS_VCPU_STATE, iov, k);
}

int stream_write_cpu_model(struct stream *s, const void *entries, uint32_t count,
                           uint32_t tsc_khz)
{
    if (s->error)
        return s->error;
    uint32_t h[2] = { count, tsc_khz };
    if (count == 0 || count > GWS_MAX_CPUID)
        return stream_set_error(s, EPROTO, "CPU_MODEL: %u entries (must be 1..%u)", count,
                                GWS_MAX_CPUID);
    struct iovec iov[2] = { { h, sizeof(h) }, { (void *)entries, (size_t)count * GWS_CPUID_ENTRY_LEN } };
    /* The reader's check, on the same bytes (duplicates, count). */
    uint8_t body[GWS_MAX_CPU_MODEL_BODY];
    memcpy(body, h, 8);
    memcpy(body + 8, entries, iov[1].iov_len);
    struct gw_error err;
    gw_error_init(&err);
    struct stream_cpu_model cm;
    if (stream_parse_cpu_model(body, 8 + iov[1].iov_len, &cm, &err) < 0)
        return stream_set_error(s, err.code, "%s", err.msg);
    return stream_write_record(s, GWS_CPU_MODEL, iov, 2);
}

int stream_write_device(struct stream *s, const char *id, uint32_t instance, uint32_t version,
                        const void *data, size_t len)
{
    if (s->error)
        return s->error;
    struct gws_device h = { .instance = instance, .version = version };
    struct gw_error err;
    gw_error_init(&err);
    if (strlen(id) >= sizeof(h.id))
        return stream_set_error(s, EINVAL, "device id \"%.40s\" is too long", id);
    strncpy(h.id, id, sizeof(h.id) - 1);
    if (stream_check_device_id(h.id, &err) < 0)
        return stream_set_error(s, err.code, "%s", err.msg);
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)data, len } };
    return stream_write_record(s, GWS_DEVICE_STATE, iov, 2);
}

int stream_write_eoi(struct stream *s, uint32_t pass, uint64_t pages)
{
    struct gws_end_of_iteration e = { pass, 0, pages };
    struct iovec iov = { &e, sizeof(e) };
    return stream_write_record(s, GWS_END_OF_ITERATION, &iov, 1);
}

int stream_write_eos(struct stream *s)
{
    if (stream_write_record(s, GWS_END_OF_STREAM, NULL, 0) < 0)
        return s->error;
    return stream_flush(s);
}
