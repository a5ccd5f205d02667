/* godwit-stream: print and verify a godwit migration stream or saved-VM
 * file record by record (docs/stream-format.md), with the same validating
 * reader the VMM uses, and the whole stream's rules a restore checks (every
 * vCPU's state, each device of the format's table once, at its version and
 * size). Exit status 0 when the stream is valid and complete (ends with
 * END_OF_STREAM, then only COMMIT or optional records), 1 when not, 2 on
 * usage errors.
 *
 * Hidden: --make-sample DIR writes small streams (fuzz seeds): small-valid
 * and small-zstd valid, header-only not (no vCPU or device state). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migration/stream_devices.h"
#include "migration/stream_records.h"

struct opts {
    bool quiet, json;
};

struct totals {
    uint64_t records, pages, zero, zpages, vcpus, devices, passes;
};

static void uuid_str(const uint8_t u[16], char out[37])
{
    char *p = out;
    for (int i = 0; i < 16; i++) {
        p += sprintf(p, "%02x", u[i]);
        if (i == 3 || i == 5 || i == 7 || i == 9)
            *p++ = '-';
    }
    *p = 0;
}

static void emit(const struct opts *o, json_object *j, const char *line)
{
    if (o->json)
        printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
    else if (!o->quiet)
        printf("%s\n", line);
    json_object_put(j);
}

static json_object *rec_json(uint64_t index, uint64_t offset, uint32_t type, uint32_t length)
{
    json_object *j = json_object_new_object();
    json_object_object_add(j, "index", json_object_new_int64((int64_t)index));
    json_object_object_add(j, "offset", json_object_new_int64((int64_t)offset));
    json_object_object_add(j, "type", json_object_new_string(stream_record_name(type)));
    json_object_object_add(j, "type_id", json_object_new_int64(type));
    json_object_object_add(j, "length", json_object_new_int64(length));
    return j;
}

static void add_u64(json_object *j, const char *k, uint64_t v)
{
    json_object_object_add(j, k, json_object_new_int64((int64_t)v));
}

static void print_header(const struct opts *o, const struct stream *s, const struct stream_vm_info *vm)
{
    uint32_t len = (uint32_t)(sizeof(struct gws_header) + vm->nr_regions * sizeof(struct gws_region));
    uint64_t off = s->bytes - 16 - len;
    char uuid[37], line[512];
    uuid_str(vm->uuid, uuid);
    json_object *j = rec_json(s->records, off, GWS_HEADER, len);
    json_object_object_add(j, "name", json_object_new_string(vm->name));
    json_object_object_add(j, "uuid", json_object_new_string(uuid));
    add_u64(j, "vcpus", vm->nr_vcpus);
    add_u64(j, "ram_size", vm->ram_size);
    json_object *regs = json_object_new_array();
    for (uint32_t i = 0; i < vm->nr_regions; i++) {
        json_object *r = json_object_new_object();
        add_u64(r, "gpa", vm->regions[i].gpa);
        add_u64(r, "size", vm->regions[i].size);
        json_object_array_add(regs, r);
    }
    json_object_object_add(j, "regions", regs);
    snprintf(line, sizeof(line), "%10llu  %-17s %8u  name \"%s\" uuid %s, %u vCPUs, %llu MiB RAM in %u regions",
             (unsigned long long)off, "HEADER", len, vm->name, uuid, vm->nr_vcpus,
             (unsigned long long)(vm->ram_size >> 20), vm->nr_regions);
    emit(o, j, line);
}

/* Type-specific JSON keys and text summary; updates the totals. */
static void summarise(const struct stream_rec *r, json_object *j, char *out, size_t ol,
                      struct totals *t)
{
    out[0] = 0;
    switch (r->type) {
    case GWS_PAGE_DATA:
    case GWS_PAGE_DATA_ZSTD:
    case GWS_ZERO_PAGES: {
        uint32_t n = r->u.pages.count;
        uint64_t lo = r->u.pages.pfn[0], hi = r->u.pages.pfn[0];
        for (uint32_t i = 1; i < n; i++) {
            lo = r->u.pages.pfn[i] < lo ? r->u.pages.pfn[i] : lo;
            hi = r->u.pages.pfn[i] > hi ? r->u.pages.pfn[i] : hi;
        }
        add_u64(j, "count", n);
        add_u64(j, "pfn_first", lo);
        add_u64(j, "pfn_last", hi);
        if (r->type == GWS_PAGE_DATA_ZSTD)
            add_u64(j, "zlen", r->u.pages.zlen);
        if (r->type == GWS_ZERO_PAGES)
            t->zero += n;
        else
            t->pages += n;
        if (r->type == GWS_PAGE_DATA_ZSTD)
            t->zpages += n;
        snprintf(out, ol, "%u %spages, pfn 0x%llx..0x%llx%s", n,
                 r->type == GWS_ZERO_PAGES ? "zero " : "", (unsigned long long)lo,
                 (unsigned long long)hi, r->type == GWS_PAGE_DATA_ZSTD ? " (zstd)" : "");
        return;
    }
    case GWS_VCPU_STATE: {
        json_object *secs = json_object_new_array();
        size_t k = (size_t)snprintf(out, ol, "vCPU %u:", r->u.vcpu.id);
        for (unsigned i = 0; i < r->u.vcpu.nsec; i++) {
            const char *nm = stream_section_name(r->u.vcpu.sec[i].tag);
            json_object_array_add(secs, json_object_new_string(nm));
            if (k < ol)
                k += (size_t)snprintf(out + k, ol - k, " %s(%u)", nm, r->u.vcpu.sec[i].len);
        }
        for (unsigned i = 0; i < r->u.vcpu.nsec; i++) {
            const struct stream_section *sec = &r->u.vcpu.sec[i];
            uint32_t w;
            memcpy(&w, sec->data, 4); /* both sections start with a u32 */
            if (sec->tag == GWS_SEC_CPUID)
                add_u64(j, "cpuid_entries", w);
            else if (sec->tag == GWS_SEC_TSC_KHZ)
                add_u64(j, "tsc_khz", w);
            else
                continue;
            if (k < ol)
                k += (size_t)snprintf(out + k, ol - k, sec->tag == GWS_SEC_CPUID
                                                           ? ", %u CPUID entries" : ", TSC %u kHz", w);
        }
        add_u64(j, "vcpu", r->u.vcpu.id);
        add_u64(j, "version", r->u.vcpu.version);
        json_object_object_add(j, "sections", secs);
        t->vcpus++;
        return;
    }
    case GWS_DEVICE_STATE:
        json_object_object_add(j, "device", json_object_new_string(r->u.device.id));
        add_u64(j, "instance", r->u.device.instance);
        add_u64(j, "version", r->u.device.version);
        add_u64(j, "data_length", r->u.device.len);
        t->devices++;
        snprintf(out, ol, "device \"%s\" instance %u version %u, %u bytes", r->u.device.id,
                 r->u.device.instance, r->u.device.version, r->u.device.len);
        return;
    case GWS_END_OF_ITERATION:
        add_u64(j, "pass", r->u.eoi.pass);
        add_u64(j, "pages", r->u.eoi.pages);
        t->passes++;
        snprintf(out, ol, "pass %u, %llu pages", r->u.eoi.pass, (unsigned long long)r->u.eoi.pages);
        return;
    case GWS_CPU_MODEL:
        add_u64(j, "cpuid_entries", r->u.cpu_model.count);
        add_u64(j, "tsc_khz", r->u.cpu_model.tsc_khz);
        snprintf(out, ol, "%u CPUID entries, TSC %u kHz", r->u.cpu_model.count,
                 r->u.cpu_model.tsc_khz);
        return;
    case GWS_INFO:
        json_object_object_add(j, "text", json_object_new_string_len(r->u.text.text, (int)r->u.text.len));
        snprintf(out, ol, "\"%.*s\"", (int)(r->u.text.len > 80 ? 80 : r->u.text.len), r->u.text.text);
        for (char *c = out; *c; c++)
            if ((unsigned char)*c < 0x20)
                *c = '?';
        return;
    default:
        return;
    }
}

static void print_totals(const struct opts *o, const struct stream *s, const struct totals *t,
                         bool valid, const char *why)
{
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "valid", json_object_new_boolean(valid));
        add_u64(j, "records", s->records);
        add_u64(j, "pages", t->pages);
        add_u64(j, "zero_pages", t->zero);
        add_u64(j, "compressed_pages", t->zpages);
        add_u64(j, "vcpus", t->vcpus);
        add_u64(j, "devices", t->devices);
        add_u64(j, "passes", t->passes);
        add_u64(j, "skipped", s->skipped);
        add_u64(j, "bytes", s->bytes);
        json_object_object_add(j, "error", json_object_new_string(why));
        printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
        json_object_put(j);
        return;
    }
    printf("%s: %llu records (%llu skipped), %llu pages (%llu compressed), %llu zero pages, "
           "%llu vCPUs, %llu devices, %llu passes, %llu bytes\n",
           valid ? "valid" : "INVALID", (unsigned long long)s->records,
           (unsigned long long)s->skipped, (unsigned long long)t->pages,
           (unsigned long long)t->zpages, (unsigned long long)t->zero,
           (unsigned long long)t->vcpus, (unsigned long long)t->devices,
           (unsigned long long)t->passes, (unsigned long long)s->bytes);
    if (!valid)
        fprintf(stderr, "godwit-stream: error: %s\n", why);
}

/* ---- the whole stream's rules (docs/stream-format.md 4.5, 4.6) ---- */

struct census {
    bool vcpu[GWS_MAX_VCPUS];
    unsigned devices;             /* bit per enum stream_dev */
};

/* A record against what came before it; false with *why filled. */
static bool census_add(struct census *c, const struct stream_rec *r, char *why, size_t wl)
{
    if (r->type == GWS_VCPU_STATE) {
        if (c->vcpu[r->u.vcpu.id]) {
            snprintf(why, wl, "record %llu: state of vCPU %u sent twice",
                     (unsigned long long)r->index, r->u.vcpu.id);
            return false;
        }
        c->vcpu[r->u.vcpu.id] = true;
        return true;
    }
    if (r->type != GWS_DEVICE_STATE)
        return true;
    /* The device table the VMM loads by (stream_devices.h), same words. */
    struct gw_error err;
    gw_error_init(&err);
    int kind = stream_device_kind_of(&r->u.device, &err);
    if (kind >= 0 && stream_device_see(&c->devices, kind, &err) == 0)
        return true;
    snprintf(why, wl, "record %llu: %s", (unsigned long long)r->index, err.msg);
    return false;
}

/* At the end of a stream: every vCPU and every required device there. */
static bool census_complete(const struct census *c, uint32_t nr_vcpus, char *why, size_t wl)
{
    for (uint32_t i = 0; i < nr_vcpus; i++)
        if (!c->vcpu[i]) {
            snprintf(why, wl, "the stream has no state for vCPU %u", i);
            return false;
        }
    int missing = stream_device_missing(c->devices);
    if (missing >= 0) {
        snprintf(why, wl, "the stream lacks the state of device %s",
                 stream_device_kinds[missing].id);
        return false;
    }
    return true;
}

static int run(int fd, const struct opts *o)
{
    struct stream s;
    struct stream_vm_info vm;
    struct totals t = { 0 };
    static struct census census;
    char why[256] = "";
    bool valid = false, eos = false;
    memset(&census, 0, sizeof(census));
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)fd);
    if (stream_read_header(&s, &vm) == 0) {
        print_header(o, &s, &vm);
        for (;;) {
            struct stream_rec r;
            int rc = stream_next_record(&s, &r);
            if (rc == -ENODATA && eos) { /* the end of the file, after END_OF_STREAM */
                valid = census_complete(&census, vm.nr_vcpus, why, sizeof(why));
                break;
            }
            if (rc < 0)
                break;
            char line[600], sum[512];
            json_object *j = rec_json(r.index, r.offset, r.type, r.length);
            summarise(&r, j, sum, sizeof(sum), &t);
            snprintf(line, sizeof(line), "%10llu  %-17s %8u  %s", (unsigned long long)r.offset,
                     stream_record_name(r.type), r.length, sum);
            emit(o, j, line);
            if (!census_add(&census, &r, why, sizeof(why)))
                break;
            eos |= r.type == GWS_END_OF_STREAM;
        }
    }
    print_totals(o, &s, &t, valid, valid ? "" : why[0] ? why : stream_error(&s));
    stream_fini(&s);
    return valid ? 0 : 1;
}

/* ---- --make-sample DIR ---- */

static int sample(const char *dir, const char *name, int kind)
{
    static uint8_t pg[8][4096];
    static uint8_t xsave[4096], lapic[1024], regs[144], sregs[312], events[64], dbg[128];
    struct stream_membuf out = { 0 };
    struct stream s;
    stream_init(&s, &stream_mem_ops, &out);
    struct stream_vm_info vm = { .name = "sample", .nr_vcpus = 1, .ram_size = 2 << 20,
                                 .nr_regions = 1, .regions = { { 0, 2 << 20 } } };
    for (int i = 0; i < 8; i++)
        memset(pg[i], i < 4 ? 0 : 0x11 * i, 4096);
    memcpy(vm.uuid, "0123456789abcdef", 16);
    stream_write_header(&s, &vm);
    if (kind >= 1) {
        /* leaf 0 (max leaf 1, "GenuineIntel"), leaf 1 (fpu, tsc, sse, sse2) */
        static const uint32_t cpuid[2 + 2 * 10] = {
            2, 0,
            0, 0, 0, 1, 0x756e6547, 0x6c65746e, 0x49656e69, 0, 0, 0,
            1, 0, 0, 0x000306c3, 0, 0, (1u << 0) | (1u << 4) | (1u << 25) | (1u << 26), 0, 0, 0,
        };
        const void *p[8];
        uint64_t pfn[8] = { 0, 1, 2, 3, 16, 17, 100, 511 };
        for (int i = 0; i < 8; i++)
            p[i] = pg[i];
        const char *txt = "sample stream";
        struct iovec iov = { (void *)txt, strlen(txt) };
        stream_write_record(&s, GWS_INFO, &iov, 1);
        stream_set_compress(&s, kind == 2 ? 1 : 0);
        stream_write_cpu_model(&s, cpuid + 2, cpuid[0], 2400000);
        stream_write_pages(&s, pfn, p, 8);
        stream_write_eoi(&s, 1, 8);
        uint8_t msrs[8 + 16] = { 1, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 42 };
        uint32_t mp = 0;
        static const uint32_t tsc[2] = { 2400000, 0 };
        struct stream_section sec[] = {
            { GWS_SEC_REGS, sizeof(regs), regs },       { GWS_SEC_SREGS, sizeof(sregs), sregs },
            { GWS_SEC_XSAVE, sizeof(xsave), xsave },    { GWS_SEC_MSRS, sizeof(msrs), msrs },
            { GWS_SEC_LAPIC, sizeof(lapic), lapic },    { GWS_SEC_EVENTS, sizeof(events), events },
            { GWS_SEC_MP_STATE, 4, &mp },               { GWS_SEC_DEBUGREGS, sizeof(dbg), dbg },
            { GWS_SEC_CPUID, sizeof(cpuid), cpuid },    { GWS_SEC_TSC_KHZ, sizeof(tsc), tsc },
        };
        stream_write_vcpu(&s, 0, sec, sizeof(sec) / sizeof(sec[0]));
        static uint8_t body[SDEV_IRQCHIP_LEN];
        for (int i = 0; i < SDEV_COUNT; i++)
            stream_write_device(&s, stream_device_kinds[i].id, 0, stream_device_kinds[i].version,
                                body, stream_device_kinds[i].len);
        uint32_t unknown = GWS_OPTIONAL | 0x7777;
        stream_write_record(&s, unknown, &iov, 1);
    }
    stream_write_eos(&s);
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int rc = !f || stream_get_error(&s) || fwrite(out.out, 1, out.out_len, f) != out.out_len;
    if (f && fclose(f))
        rc = 1;
    if (rc)
        fprintf(stderr, "godwit-stream: error: writing %s: %s\n", path,
                stream_get_error(&s) ? stream_error(&s) : strerror(errno));
    free(out.out);
    stream_fini(&s);
    return rc;
}

static int make_samples(const char *dir)
{
    return sample(dir, "header-only", 0) | sample(dir, "small-valid", 1) |
           sample(dir, "small-zstd", 2) ? 1 : 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = { { "verify", no_argument, NULL, 'v' },
                                        { "quiet", no_argument, NULL, 'q' },
                                        { "json", no_argument, NULL, 'j' },
                                        { "help", no_argument, NULL, 'h' },
                                        { "make-sample", required_argument, NULL, 'S' },
                                        { NULL, 0, NULL, 0 } };
    struct opts o = { 0 };
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'v': break; /* verifying is what it always does */
        case 'q': o.quiet = true; break;
        case 'j': o.json = true; break;
        case 'S': return make_samples(optarg);
        case 'h':
            printf("Usage: godwit-stream [--verify] [--quiet] [--json] FILE|-\n"
                   "Print and verify a godwit migration stream record by record\n"
                   "(docs/stream-format.md). Exit 0 if valid and complete, 1 if not.\n");
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
