/* libFuzzer target: the vCPU and device state parsers on raw record bodies
 * (first byte picks which), as the VMM gets them from the live engine.
 * Oracles: a refused body carries a message; a vCPU body that
 * state_parse_vcpu accepts is re-encoded by state_write_vcpu (so the writer
 * accepts whatever the reader does) and parses back to the same state;
 * except a version 1 body (no CPU), which the writer (version 2 only)
 * refuses for its missing CPUID section. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "migration/state_records.h"

static struct vcpu_state st, again;

static void check_refused(const struct gw_error *err)
{
    if (!err->code || !err->msg[0])
        __builtin_trap();
}

/* Encode st, read the record back, parse it into `again`. */
static void round_trip(uint32_t id)
{
    struct stream_membuf out = { 0 };
    struct stream w, r;
    stream_init(&w, &stream_mem_ops, &out);
    if (!st.has_cpuid) {
        if (stream_write_preamble(&w) < 0 || state_write_vcpu(&w, id, &st) != -EPROTO ||
            !strstr(stream_error(&w), "section cpuid is missing"))
            __builtin_trap();
        stream_fini(&w);
        free(out.out);
        return;
    }
    if (stream_write_preamble(&w) < 0 || state_write_vcpu(&w, id, &st) < 0 || stream_flush(&w) < 0)
        __builtin_trap();
    struct stream_membuf in = { .data = out.out, .len = out.out_len };
    stream_init(&r, &stream_mem_ops, &in);
    struct stream_record rec;
    struct gw_error err;
    gw_error_init(&err);
    uint32_t id2;
    if (stream_read_preamble(&r) < 0 || stream_read_record(&r, &rec) < 0 ||
        state_parse_vcpu(rec.body, rec.length, &id2, &again, &err) < 0 || id2 != id ||
        memcmp(&st, &again, sizeof(st)) != 0)
        __builtin_trap();
    stream_fini(&r);
    stream_fini(&w);
    free(out.out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct gw_error err;
    gw_error_init(&err);
    if (data[0] & 1) {
        uint32_t id;
        if (state_parse_vcpu(data + 1, size - 1, &id, &st, &err) < 0)
            check_refused(&err);
        else
            round_trip(id);
    } else {
        struct stream_device dev;
        if (stream_parse_device(data + 1, size - 1, &dev, &err) < 0)
            check_refused(&err);
        else if (dev.len != size - 1 - sizeof(struct gws_device) || !memchr(dev.id, 0, sizeof(dev.id)))
            __builtin_trap();
    }
    return 0;
}
