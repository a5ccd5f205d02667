/* libFuzzer target: bytes as a migration stream through the record reader
 * and every record decoder (header shape, page records, vCPU and device
 * state). Checksums are not enforced in fuzzing builds so that mutations
 * reach the decoders. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "migration/state_records.h"
#include "migration/stream.h"

static struct vcpu_state st;

static void decode(const struct stream_record *r)
{
    struct gw_error err;
    gw_error_init(&err);
    uint32_t id, inst, ver;
    char dev[33];
    const uint8_t *d;
    size_t dl;
    switch (r->type) {
    case GWS_VCPU_STATE:
        state_parse_vcpu(r->body, r->length, &id, &st, &err);
        break;
    case GWS_DEVICE_STATE:
        state_parse_device(r->body, r->length, dev, &inst, &ver, &d, &dl, &err);
        break;
    case GWS_PAGE_DATA:
    case GWS_ZERO_PAGES:
    case GWS_PAGE_DATA_ZSTD:
        if (r->length >= sizeof(struct gws_pages)) {
            struct gws_pages h;
            memcpy(&h, r->body, sizeof(h));
            if (h.count <= GWS_MAX_BATCH && r->length >= sizeof(h) + h.count * 8ULL) {
                volatile uint64_t sum = 0;
                for (uint32_t i = 0; i < h.count; i++) {
                    uint64_t pfn;
                    memcpy(&pfn, r->body + sizeof(h) + i * 8ULL, 8);
                    sum += pfn;
                }
            }
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct stream_membuf in = { .data = data, .len = size };
    struct stream s;
    stream_init(&s, &stream_mem_ops, &in);
    if (stream_read_preamble(&s) == 0) {
        for (int i = 0; i < 10000; i++) {
            struct stream_record r;
            if (stream_read_record(&s, &r) < 0)
                break;
            decode(&r);
        }
    }
    stream_fini(&s);
    return 0;
}
