/* godwit-stream: print and verify a godwit migration stream or saved-VM
 * file record by record (docs/stream-format.md). Exit status 0 when the
 * stream is valid and complete, 1 when not, 2 on usage errors. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration/state_records.h"
#include "migration/stream.h"

struct totals {
    uint64_t records, pages, zero, zpages, vcpus, devices, passes;
    bool header, eos;
};

struct opts {
    bool quiet, json;
};

static int check_pages(const struct stream_record *r, uint32_t per_page, uint32_t *count,
                       uint64_t *first, uint64_t *last, char *why, size_t wl)
{
    struct gws_pages h;
    if (r->length < sizeof(h))
        return snprintf(why, wl, "too short"), -1;
    memcpy(&h, r->body, sizeof(h));
    uint64_t need = sizeof(h) + (uint64_t)h.count * (8 + per_page) +
                    (r->type == GWS_PAGE_DATA_ZSTD ? h.zlen : 0);
    if (h.count == 0 || h.count > GWS_MAX_BATCH || need != r->length)
        return snprintf(why, wl, "page count %u does not match the length", h.count), -1;
    *count = h.count;
    memcpy(first, r->body + sizeof(h), 8);
    memcpy(last, r->body + sizeof(h) + (h.count - 1) * 8ULL, 8);
    return 0;
}

static int describe(const struct stream_record *r, struct totals *t, char *out, size_t ol,
                    char *why, size_t wl)
{
    uint32_t count;
    uint64_t first, last;
    out[0] = 0;
    switch (r->type) {
    case GWS_HEADER: {
        struct gws_header h;
        if (r->length < sizeof(h))
            return snprintf(why, wl, "header too short"), -1;
        memcpy(&h, r->body, sizeof(h));
        if (h.nr_regions > GWS_MAX_REGIONS ||
            r->length != sizeof(h) + h.nr_regions * sizeof(struct gws_region) ||
            h.page_size != GWS_PAGE_SIZE)
            return snprintf(why, wl, "bad header"), -1;
        h.name[GWS_NAME_LEN - 1] = 0;
        snprintf(out, ol, "name \"%s\", %u vCPUs, %llu MiB RAM in %u regions", h.name, h.nr_vcpus,
                 (unsigned long long)(h.ram_size >> 20), h.nr_regions);
        t->header = true;
        return 0;
    }
    case GWS_PAGE_DATA:
    case GWS_PAGE_DATA_ZSTD:
        if (check_pages(r, r->type == GWS_PAGE_DATA ? GWS_PAGE_SIZE : 0, &count, &first, &last, why, wl) < 0)
            return -1;
        t->pages += count;
        if (r->type == GWS_PAGE_DATA_ZSTD)
            t->zpages += count;
        snprintf(out, ol, "%u pages, pfn 0x%llx..0x%llx", count, (unsigned long long)first,
                 (unsigned long long)last);
        return 0;
    case GWS_ZERO_PAGES:
        if (check_pages(r, 0, &count, &first, &last, why, wl) < 0)
            return -1;
        t->zero += count;
        snprintf(out, ol, "%u zero pages, pfn 0x%llx..0x%llx", count, (unsigned long long)first,
                 (unsigned long long)last);
        return 0;
    case GWS_VCPU_STATE: {
        static struct vcpu_state st;
        struct gw_error err;
        gw_error_init(&err);
        uint32_t id;
        if (state_parse_vcpu(r->body, r->length, &id, &st, &err) < 0)
            return snprintf(why, wl, "%s", err.msg), -1;
        t->vcpus++;
        snprintf(out, ol, "vCPU %u: rip 0x%llx, %u MSRs, xsave %u bytes", id,
                 (unsigned long long)st.regs.rip, st.nmsrs, st.xsave_size);
        return 0;
    }
    case GWS_DEVICE_STATE: {
        char id[33];
        uint32_t inst, ver;
        const uint8_t *d;
        size_t dl;
        struct gw_error err;
        gw_error_init(&err);
        if (state_parse_device(r->body, r->length, id, &inst, &ver, &d, &dl, &err) < 0)
            return snprintf(why, wl, "%s", err.msg), -1;
        t->devices++;
        snprintf(out, ol, "device \"%s\" instance %u version %u, %zu bytes", id, inst, ver, dl);
        return 0;
    }
    case GWS_END_OF_ITERATION: {
        struct gws_end_of_iteration e;
        if (r->length != sizeof(e))
            return snprintf(why, wl, "bad length"), -1;
        memcpy(&e, r->body, sizeof(e));
        t->passes++;
        snprintf(out, ol, "pass %u, %llu pages", e.pass, (unsigned long long)e.pages);
        return 0;
    }
    case GWS_END_OF_STREAM:
        if (r->length)
            return snprintf(why, wl, "bad length"), -1;
        t->eos = true;
        return 0;
    default:
        if (r->type & GWS_OPTIONAL) {
            snprintf(out, ol, "optional record, skipped");
            return 0;
        }
        return snprintf(why, wl, "unknown mandatory record type 0x%x", r->type), -1;
    }
}

static int run(int fd, const struct opts *o)
{
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)fd);
    struct totals t = { 0 };
    int status = 1;
    char why[256] = "", desc[256];
    if (stream_read_preamble(&s) < 0) {
        snprintf(why, sizeof(why), "%s", stream_error(&s));
        goto out;
    }
    for (;;) {
        struct stream_record r;
        int rc = stream_read_record(&s, &r);
        if (rc == -ENODATA) {
            snprintf(why, sizeof(why), "stream ends without END_OF_STREAM");
            break;
        }
        if (rc < 0) {
            snprintf(why, sizeof(why), "%s", stream_error(&s));
            break;
        }
        t.records++;
        if (!t.header && r.type != GWS_HEADER && !(r.type & GWS_OPTIONAL)) {
            snprintf(why, sizeof(why), "record at offset %llu comes before the header",
                     (unsigned long long)r.offset);
            break;
        }
        char w[200] = "";
        if (describe(&r, &t, desc, sizeof(desc), w, sizeof(w)) < 0) {
            snprintf(why, sizeof(why), "record %s at offset %llu: %s", stream_record_name(r.type),
                     (unsigned long long)r.offset, w);
            break;
        }
        if (o->json)
            printf("{\"offset\": %llu, \"type\": \"%s\", \"type_id\": %u, \"length\": %u, \"summary\": \"%s\"}\n",
                   (unsigned long long)r.offset, stream_record_name(r.type), r.type, r.length, desc);
        else if (!o->quiet)
            printf("%10llu  %-17s %8u  %s\n", (unsigned long long)r.offset,
                   stream_record_name(r.type), r.length, desc);
        if (t.eos) {
            status = 0;
            break;
        }
    }
out:
    if (o->json)
        printf("{\"valid\": %s, \"records\": %llu, \"pages\": %llu, \"zero_pages\": %llu, "
               "\"vcpus\": %llu, \"devices\": %llu, \"passes\": %llu, \"bytes\": %llu, \"error\": \"%s\"}\n",
               status == 0 ? "true" : "false", (unsigned long long)t.records,
               (unsigned long long)t.pages, (unsigned long long)t.zero, (unsigned long long)t.vcpus,
               (unsigned long long)t.devices, (unsigned long long)t.passes,
               (unsigned long long)s.bytes, why);
    else
        printf("%s: %llu records, %llu pages (%llu compressed), %llu zero pages, %llu vCPUs, "
               "%llu devices, %llu passes, %llu bytes%s%s\n",
               status == 0 ? "valid" : "INVALID", (unsigned long long)t.records,
               (unsigned long long)t.pages, (unsigned long long)t.zpages, (unsigned long long)t.zero,
               (unsigned long long)t.vcpus, (unsigned long long)t.devices,
               (unsigned long long)t.passes, (unsigned long long)s.bytes, why[0] ? ": " : "", why);
    stream_fini(&s);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = { { "verify", no_argument, NULL, 'v' },
                                        { "quiet", no_argument, NULL, 'q' },
                                        { "json", no_argument, NULL, 'j' },
                                        { "help", no_argument, NULL, 'h' },
                                        { NULL, 0, NULL, 0 } };
    struct opts o = { 0 };
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'v': break; /* verifying is what it always does */
        case 'q': o.quiet = true; break;
        case 'j': o.json = true; break;
        case 'h':
            printf("Usage: godwit-stream [--verify] [--quiet] [--json] FILE|-\n"
                   "Print and verify a godwit migration stream record by record.\n");
            return 0;
        default:
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "godwit-stream: error: give one FILE (or - for standard input)\n");
        return 2;
    }
    int fd = strcmp(argv[optind], "-") ? open(argv[optind], O_RDONLY | O_CLOEXEC) : 0;
    if (fd < 0) {
        fprintf(stderr, "godwit-stream: error: %s: %s\n", argv[optind], strerror(errno));
        return 2;
    }
    return run(fd, &o);
}
