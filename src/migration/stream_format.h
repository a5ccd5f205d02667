/* The godwit migration stream: wire structures (docs/stream-format.md).
 * Everything little-endian, fixed width; numbers here are wire numbers and
 * are never taken from internal enums. */
#ifndef GW_MIGRATION_STREAM_FORMAT_H
#define GW_MIGRATION_STREAM_FORMAT_H

#include <stdint.h>

#define GWS_MAGIC          "GODWITMS"   /* 8 bytes, no NUL */
#define GWS_VERSION        1
#define GWS_PAGE_SIZE      4096
#define GWS_MAX_BODY       (16u << 20)  /* largest record body */
#define GWS_MAX_BATCH      512          /* pages per page record */
#define GWS_MAX_REGIONS    8
#define GWS_NAME_LEN       64

/* Stream preamble: magic, version, then records. */
struct gws_preamble {
    char magic[8];
    uint32_t version;
    uint32_t flags;               /* 0 */
};
_Static_assert(sizeof(struct gws_preamble) == 16, "preamble");

/* Every record: header, body, zero padding to 8 bytes, then a trailer
 * holding XXH3-64 of header + body + padding. */
struct gws_record_header {
    uint32_t type;                /* bit 31: optional */
    uint32_t length;              /* body bytes, without padding */
};
_Static_assert(sizeof(struct gws_record_header) == 8, "record header");

struct gws_record_trailer {
    uint64_t checksum;
};
_Static_assert(sizeof(struct gws_record_trailer) == 8, "record trailer");

#define GWS_OPTIONAL 0x80000000u

enum {
    /* core, 0x0001-0x00ff */
    GWS_HEADER          = 0x0001,
    GWS_PAGE_DATA       = 0x0002,
    GWS_ZERO_PAGES      = 0x0003,
    GWS_PAGE_DATA_ZSTD  = 0x0004,
    GWS_VCPU_STATE      = 0x0010,
    GWS_DEVICE_STATE    = 0x0011,
    GWS_END_OF_ITERATION= 0x0020,
    GWS_END_OF_STREAM   = 0x0021,
    GWS_COMMIT          = 0x0022,   /* source -> destination: run the guest */
    /* post-copy: 0x0100-0x01ff (reserved) */
    /* checkpointing (HA): 0x0200-0x02ff (reserved) */
    /* return path, destination -> source: 0x0300-0x03ff */
    GWS_RP_LOADED       = 0x0300,   /* everything loaded and checked */
    GWS_RP_RESUMED      = 0x0301,   /* the guest runs on the destination */
    GWS_RP_FAILED       = 0x0302,   /* loading failed; body: UTF-8 reason */
    /* optional */
    GWS_INFO            = GWS_OPTIONAL | 0x0030, /* free text, for people */
};

struct gws_region {
    uint64_t gpa;
    uint64_t size;
};
_Static_assert(sizeof(struct gws_region) == 16, "region");

struct gws_header {
    uint32_t page_size;
    uint32_t nr_vcpus;
    uint64_t ram_size;
    uint8_t uuid[16];
    char name[GWS_NAME_LEN];      /* NUL-padded */
    uint32_t nr_regions;
    uint32_t flags;
    struct gws_region regions[];  /* nr_regions entries */
};
_Static_assert(sizeof(struct gws_header) == 104, "header");

/* PAGE_DATA: count, pfns, then count * 4096 bytes.
 * ZERO_PAGES: count, pfns.
 * PAGE_DATA_ZSTD: count, compressed length, pfns, compressed bytes that
 * expand to exactly count * 4096. */
struct gws_pages {
    uint32_t count;
    uint32_t zlen;                /* PAGE_DATA_ZSTD only; 0 otherwise */
    uint64_t pfn[];
};
_Static_assert(sizeof(struct gws_pages) == 8, "pages");

/* VCPU_STATE: this header, then sections {tag, len, data, pad to 8}. */
struct gws_vcpu {
    uint32_t vcpu_id;
    uint32_t version;             /* 1 */
};
_Static_assert(sizeof(struct gws_vcpu) == 8, "vcpu");

struct gws_section {
    uint32_t tag;
    uint32_t len;
};
_Static_assert(sizeof(struct gws_section) == 8, "section");

enum {
    GWS_SEC_REGS      = 1,  /* struct kvm_regs, 144 bytes */
    GWS_SEC_SREGS     = 2,  /* struct kvm_sregs, 312 bytes */
    GWS_SEC_XSAVE     = 3,  /* XSAVE area, >= 4096 bytes, multiple of 64 */
    GWS_SEC_XCRS      = 4,  /* struct kvm_xcrs, 392 bytes */
    GWS_SEC_MSRS      = 5,  /* u32 count, u32 pad, {u32 index, u32 pad, u64 value} x count */
    GWS_SEC_LAPIC     = 6,  /* struct kvm_lapic_state, 1024 bytes */
    GWS_SEC_EVENTS    = 7,  /* struct kvm_vcpu_events, 64 bytes */
    GWS_SEC_MP_STATE  = 8,  /* u32 */
    GWS_SEC_DEBUGREGS = 9,  /* struct kvm_debugregs, 128 bytes */
};

/* DEVICE_STATE: this header, then the device's own versioned body. */
struct gws_device {
    char id[32];                  /* NUL-padded, e.g. "serial0" */
    uint32_t instance;
    uint32_t version;
};
_Static_assert(sizeof(struct gws_device) == 40, "device");

struct gws_end_of_iteration {
    uint32_t pass;
    uint32_t reserved;
    uint64_t pages;               /* pages sent in this pass */
};
_Static_assert(sizeof(struct gws_end_of_iteration) == 16, "eoi");

#endif
