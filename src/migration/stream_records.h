/* Typed records of the migration stream (docs/stream-format.md), on top of
 * the record layer of migration/stream.h.
 *
 * Writer: stream_write_header() (preamble + HEADER), stream_write_pages()
 * (detects all-zero pages and sends them as ZERO_PAGES; the others as
 * PAGE_DATA straight from guest memory with one writev, or compressed as
 * PAGE_DATA_ZSTD when stream_set_compress() enabled it), stream_write_vcpu(),
 * stream_write_device(), stream_write_eoi(), stream_write_eos().
 *
 * Reader: stream_read_header() (preamble + HEADER, validated), then
 * stream_next_record() in a loop: each record comes back parsed and fully
 * validated (checksum, length for its type, counts, section sizes, device
 * id, every pfn inside guest RAM) or not at all. Unknown optional records
 * are skipped; unknown mandatory ones are an error. Page data is not
 * copied: the caller gets (pfn, pointer) pairs into the reader's reusable
 * record buffer (or its decompression buffer) and copies them into guest
 * memory itself; the pointers are valid until the next call.
 *
 * Returns: 0 or -errno for every operation. The stream's error is sticky
 * (the first one wins, every later call fails with it) and carries a
 * message naming the record, e.g. "record 17 (PAGE_DATA) at offset 123456:
 * checksum mismatch"; stream_error_get() copies it into a struct gw_error.
 * Nothing here allocates from a length read off the wire before checking
 * it against a fixed limit. */
#ifndef GW_MIGRATION_STREAM_RECORDS_H
#define GW_MIGRATION_STREAM_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migration/stream.h"

/* What the HEADER record says about the VM. */
struct stream_vm_info {
    char name[GWS_NAME_LEN];      /* NUL-terminated, at most 63 bytes */
    uint8_t uuid[16];             /* zeros if none */
    uint32_t nr_vcpus;            /* 1..GWS_MAX_VCPUS */
    uint64_t ram_size;            /* sum of the region sizes */
    uint32_t nr_regions;          /* 1..GWS_MAX_REGIONS */
    struct gws_region regions[GWS_MAX_REGIONS]; /* ascending, 4 KiB aligned */
};

/* One vCPU state section (doc section 4.5); data is not copied. */
struct stream_section {
    uint32_t tag;                 /* GWS_SEC_* */
    uint32_t len;
    const void *data;
};

/* VCPU_STATE body version this godwit writes and reads (doc section 4.5). */
#define STREAM_VCPU_VERSION 2
/* The oldest one it still reads (version 1: no CPUID, no TSC_KHZ). */
#define STREAM_VCPU_VERSION_MIN 1

/* A checked CPU_MODEL body (doc section 4.9): `count` struct
 * kvm_cpuid_entry2 (40 bytes each, little-endian) at `entries`, which
 * points into the body. */
struct stream_cpu_model {
    uint32_t count;               /* 1..GWS_MAX_CPUID */
    uint32_t tsc_khz;             /* 0: unknown */
    const uint8_t *entries;
};

/* A checked VCPU_STATE body: its sections in wire order, each tag at most
 * once, all of its version but XCRS present. Section data points into the
 * body. */
struct stream_vcpu {
    uint32_t id, version;
    unsigned nsec;
    struct stream_section sec[GWS_SEC_MAX];
};

/* A checked DEVICE_STATE body (doc section 4.6); data points into it. */
struct stream_device {
    char id[GWS_DEVICE_ID_LEN];   /* NUL-terminated, [A-Za-z0-9._-] */
    uint32_t instance, version;
    const uint8_t *data;
    uint32_t len;
};

/* A parsed, validated record from stream_next_record(). Pointers point into
 * the stream's buffers and are valid until the next read. */
struct stream_rec {
    uint32_t type;                /* GWS_* wire type */
    uint32_t length;              /* body length */
    uint64_t offset;              /* stream offset of the record */
    uint64_t index;               /* 1-based record number */
    const uint8_t *body;          /* raw body */
    union {
        struct {                  /* PAGE_DATA, PAGE_DATA_ZSTD, ZERO_PAGES */
            uint32_t count;       /* 1..GWS_MAX_BATCH */
            uint32_t zlen;        /* PAGE_DATA_ZSTD: compressed bytes */
            const uint64_t *pfn;  /* count frames, all inside guest RAM */
            const uint8_t *data;  /* count * 4096 bytes in pfn order; NULL for ZERO_PAGES */
        } pages;
        struct stream_vcpu vcpu;      /* VCPU_STATE */
        struct stream_device device;  /* DEVICE_STATE */
        struct stream_cpu_model cpu_model; /* CPU_MODEL */
        struct {                  /* END_OF_ITERATION */
            uint32_t pass;
            uint64_t pages;
        } eoi;
        struct {                  /* INFO, RP_FAILED: not NUL-terminated */
            const char *text;
            uint32_t len;
        } text;
    } u;
};

/* ---- writing ---- */

/* zstd level for non-zero page batches: 0 = off (PAGE_DATA), 1..3 or a
 * negative (fast) level. A batch that does not shrink goes as PAGE_DATA. */
int stream_set_compress(struct stream *s, int level);
/* Preamble, then the HEADER record (checked: regions, sizes, name). */
int stream_write_header(struct stream *s, const struct stream_vm_info *vm);
/* Send n pages: pages[i] (4096 bytes, caller's memory, not copied except
 * by zstd) is frame pfns[i]. All-zero pages go as ZERO_PAGES, the others as
 * PAGE_DATA or PAGE_DATA_ZSTD, in records of at most GWS_MAX_BATCH pages.
 * The pfns of one call should be distinct (records are not ordered).
 * The pages must not change during the call: the checksum is computed
 * before writev sends them, so memory a running guest writes would arrive
 * with a checksum mismatch. The live sender (outgoing.c) stages batches of
 * a running guest in its own buffer for that reason. */
int stream_write_pages(struct stream *s, const uint64_t *pfns, const void *const *pages, size_t n);
/* One VCPU_STATE record; the sections are checked by the reader's own
 * check (stream_check_vcpu_sections): a record the reader would refuse is
 * never written. */
int stream_write_vcpu(struct stream *s, uint32_t vcpu_id, const struct stream_section *sec,
                      unsigned nsec);
int stream_write_device(struct stream *s, const char *id, uint32_t instance, uint32_t version,
                        const void *data, size_t len);
int stream_write_eoi(struct stream *s, uint32_t pass, uint64_t pages);
/* CPU_MODEL (optional): `count` CPUID entries as struct kvm_cpuid_entry2
 * (40 bytes each) and the TSC rate (0: unknown); checked as the reader
 * checks it. */
int stream_write_cpu_model(struct stream *s, const void *entries, uint32_t count,
                           uint32_t tsc_khz);
/* END_OF_STREAM, then flush. */
int stream_write_eos(struct stream *s);
/* True if the 4096 bytes at page are all zero (64-bit words, early exit). */
bool stream_page_is_zero(const void *page);

/* ---- reading ---- */

/* Extra pfn check on top of "inside a RAM region of the header" (e.g. the
 * destination's own memory map); return false to reject. */
void stream_set_pfn_check(struct stream *s, bool (*ok)(void *opaque, uint64_t pfn), void *opaque);
/* Preamble and HEADER (optional records before it are skipped). */
int stream_read_header(struct stream *s, struct stream_vm_info *vm);
/* Next record, parsed and validated. -ENODATA after END_OF_STREAM when the
 * input ends (not sticky); an end of input before END_OF_STREAM is an
 * error. */
int stream_next_record(struct stream *s, struct stream_rec *rec);
/* Checks of the reader, usable alone (err may be NULL). */
int stream_check_vm_info(const struct stream_vm_info *vm, struct gw_error *err);
int stream_check_device_id(const char id[GWS_DEVICE_ID_LEN], struct gw_error *err);
/* One VCPU_STATE section: known tag (of the newest version), exact length,
 * zero fields zero. */
int stream_check_section(uint32_t tag, const void *data, uint32_t len, struct gw_error *err);
/* A whole vCPU's section list of a record of `version`: each section as
 * above and known to that version, no tag twice, every tag of the version
 * but XCRS present. */
int stream_check_vcpu_sections(uint32_t version, uint32_t vcpu_id,
                               const struct stream_section *sec, unsigned nsec,
                               struct gw_error *err);
/* VCPU_STATE and DEVICE_STATE bodies alone, for a reader that took the
 * record from stream_read_record() (the live engine hands them to the VMM):
 * every check stream_next_record() makes on them, except that the vCPU id
 * is below the header's vCPU count (the caller knows its own). The same
 * functions serve stream_next_record(), so both paths accept exactly the
 * same bodies. Pointers in *out point into body. */
int stream_parse_vcpu(const uint8_t *body, size_t len, struct stream_vcpu *out,
                      struct gw_error *err);
int stream_parse_device(const uint8_t *body, size_t len, struct stream_device *out,
                        struct gw_error *err);
/* A CPU_MODEL body (doc 4.9): count, TSC rate, entries; the CPUID
 * section's checks but for the second word. */
int stream_parse_cpu_model(const uint8_t *body, size_t len, struct stream_cpu_model *out,
                           struct gw_error *err);
/* A PAGE_DATA, PAGE_DATA_ZSTD or ZERO_PAGES record from stream_read_record()
 * (the live engine's path), with every check stream_next_record() makes:
 * shape, and each frame inside the RAM of s (set by stream_read_header, or
 * by stream_set_ram for a reader that parsed the header itself). ZSTD
 * pages expand into s's own buffer (valid until its next record). Errors
 * are s's, naming the record. */
int stream_parse_pages(struct stream *s, const struct stream_record *r, struct stream_rec *out);
/* HEADER and END_OF_ITERATION from stream_read_record(), checked as
 * stream_next_record() checks them (the live engine takes exactly the
 * records a reader of the same stream takes); errors are s's. A header
 * also sets s's RAM and vCPU count. */
int stream_parse_header(struct stream *s, const struct stream_record *r, struct stream_vm_info *vm);
int stream_parse_eoi(struct stream *s, const struct stream_record *r, struct stream_rec *out);
void stream_set_ram(struct stream *s, const struct gws_region *regions, unsigned n);
const char *stream_section_name(uint32_t tag);

#endif
