/* libFuzzer target: bytes as a migration stream through the validating
 * reader (stream_read_header, then stream_next_record until the end or an
 * error), touching every byte it hands out, plus the VMM's state loaders
 * (state_parse_vcpu, stream_parse_device) on the records it accepts: they
 * must accept them too, with the same content. Checksums are not enforced
 * in fuzzing builds (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) so that
 * mutations reach the decoders. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "migration/state_records.h"
#include "migration/stream_records.h"

static struct vcpu_state st;

static void touch(const void *p, size_t n)
{
    volatile uint8_t sum = 0;
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i += 61)
        sum += b[i];
    if (n)
        sum += b[n - 1];
}

static void use(const struct stream_rec *r)
{
    struct gw_error err;
    gw_error_init(&err);
    switch (r->type) {
    case GWS_PAGE_DATA:
    case GWS_PAGE_DATA_ZSTD:
        touch(r->u.pages.data, (size_t)r->u.pages.count * GWS_PAGE_SIZE);
        /* fall through */
    case GWS_ZERO_PAGES:
        touch(r->u.pages.pfn, r->u.pages.count * 8ULL);
        break;
    case GWS_VCPU_STATE: {
        uint32_t id;
        for (unsigned i = 0; i < r->u.vcpu.nsec; i++)
            touch(r->u.vcpu.sec[i].data, r->u.vcpu.sec[i].len);
        if (state_parse_vcpu(r->body, r->length, &id, &st, &err) < 0 || id != r->u.vcpu.id)
            __builtin_trap();
        for (unsigned i = 0; i < r->u.vcpu.nsec; i++) {
            const struct stream_section *sec = &r->u.vcpu.sec[i];
            if ((sec->tag == GWS_SEC_REGS && memcmp(&st.regs, sec->data, sec->len)) ||
                (sec->tag == GWS_SEC_XSAVE &&
                 (st.xsave_size != sec->len || memcmp(st.xsave, sec->data, sec->len))))
                __builtin_trap();
        }
        break;
    }
    case GWS_DEVICE_STATE: {
        struct stream_device dev;
        touch(r->u.device.data, r->u.device.len);
        if (stream_parse_device(r->body, r->length, &dev, &err) < 0 ||
            strcmp(dev.id, r->u.device.id) || dev.instance != r->u.device.instance ||
            dev.version != r->u.device.version || dev.data != r->u.device.data ||
            dev.len != r->u.device.len)
            __builtin_trap();
        break;
    }
    case GWS_INFO:
        touch(r->u.text.text, r->u.text.len);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct stream_membuf in = { .data = data, .len = size };
    struct stream s;
    struct stream_vm_info vm;
    stream_init(&s, &stream_mem_ops, &in);
    if (stream_read_header(&s, &vm) == 0) {
        struct stream_rec r;
        while (stream_next_record(&s, &r) == 0)
            use(&r);
    }
    /* A failed stream must carry a message. */
    if (stream_get_error(&s) && !stream_error(&s)[0])
        __builtin_trap();
    stream_fini(&s);
    return 0;
}
