/* The godwit migration stream: wire structures (docs/stream-format.md).
 * Everything little-endian, fixed width; numbers here are wire numbers and
 * are never taken from internal enums. */
#ifndef GW_MIGRATION_STREAM_FORMAT_H
#define GW_MIGRATION_STREAM_FORMAT_H

#include <stdint.h>

/* The structures below are the wire layout only on a little-endian host
 * (godwit targets x86-64); a big-endian port must byte-swap. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "wire structs assume little-endian");

#define GWS_MAGIC          "GODWITMS"   /* 8 bytes, no NUL */
#define GWS_VERSION        1
#define GWS_PAGE_SIZE      4096
#define GWS_MAX_BODY       (16u << 20)  /* largest record body of any type */
#define GWS_MAX_BATCH      512          /* pages per page record */
#define GWS_MAX_REGIONS    8
#define GWS_NAME_LEN       64
#define GWS_MAX_VCPUS      1024
#define GWS_DEVICE_ID_LEN  32

/* Per-type body limits, checked before any allocation (doc section 3.2). */
#define GWS_MAX_HEADER_BODY  (104u + 16u * GWS_MAX_REGIONS)
#define GWS_MAX_PAGES_BODY   (8u + GWS_MAX_BATCH * (8u + GWS_PAGE_SIZE))
#define GWS_MAX_ZERO_BODY    (8u + GWS_MAX_BATCH * 8u)
/* ZSTD_COMPRESSBOUND(GWS_MAX_BATCH * 4096) = 2 MiB + 2 MiB / 256 */
#define GWS_MAX_ZSTD_DATA    ((GWS_MAX_BATCH * GWS_PAGE_SIZE) + ((GWS_MAX_BATCH * GWS_PAGE_SIZE) >> 8))
#define GWS_MAX_ZSTD_BODY    (8u + GWS_MAX_BATCH * 8u + GWS_MAX_ZSTD_DATA)
#define GWS_MAX_VCPU_BODY    (128u << 10)
#define GWS_MAX_DEVICE_BODY  (1u << 20)
#define GWS_MAX_TEXT_BODY    (64u << 10)  /* INFO */
#define GWS_MAX_REASON_BODY  4096u        /* RP_FAILED */
#define GWS_MAX_XSAVE        (64u << 10)
#define GWS_MAX_MSRS         1024
#define GWS_MAX_CPUID        256
/* CPU_MODEL: the CPUID section's layout, at most GWS_MAX_CPUID entries. */
#define GWS_MAX_CPU_MODEL_BODY (8u + 40u * GWS_MAX_CPUID)

/* Stream preamble: magic, version, then records. */
struct gws_preamble {
    char magic[8];
    uint32_t version;
    uint32_t flags;               /* 0, or GWS_CHANNEL_PREEMPT */
};
/* Preamble flag: this connection is a migration's second channel, which
 * carries post-copy page requests (destination -> source) and the pages
 * that answer them (source -> destination), ahead of the background pages. */
#define GWS_CHANNEL_PREEMPT 0x1u
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
    /* post-copy: 0x0100-0x01ff (live streams only, never in a file) */
    GWS_POSTCOPY_ADVISE = 0x0100,   /* after HEADER: post-copy may follow */
    GWS_POSTCOPY_LISTEN = 0x0101,   /* reserved */
    GWS_POSTCOPY_RUN    = 0x0102,   /* state complete: run the guest with what is missing */
    GWS_DISCARD_PAGES   = 0x0103,   /* pages the destination must drop (runs) */
    GWS_POSTCOPY_RESUME = 0x0104,   /* first record of a recovered main channel */
    GWS_POSTCOPY_PAUSE  = 0x0105,   /* the sender pauses on purpose (not an exit) */
    GWS_PING   = 0x0106,   /* answer RP_PONG once all before is applied */
    GWS_RP_REQ_PAGES    = 0x0110,   /* destination -> source, preempt channel */
    GWS_RP_RECV_BITMAP  = 0x0111,   /* destination -> source: pages still needed */
    GWS_RP_POSTCOPY_DONE = 0x0112,  /* destination -> source: every page is in */
    GWS_RP_PONG = 0x0113,  /* destination -> source: answer to PING */
    GWS_RP_INSTALLED = 0x0114, /* destination -> source: compressed main-channel pages taken */
    GWS_RP_RECV_BITMAP_PART = 0x0115, /* destination -> source: a piece of a long page list */
    /* checkpointing (HA): 0x0200-0x02ff, reserved (not valid in version 1) */
    GWS_CHECKPOINT_BEGIN = 0x0200,
    GWS_CHECKPOINT_END   = 0x0201,
    GWS_RP_CHECKPOINT_ACK = 0x0210,
    /* return path, destination -> source: 0x0300-0x03ff */
    GWS_RP_LOADED       = 0x0300,   /* everything loaded and checked */
    GWS_RP_RESUMED      = 0x0301,   /* the guest runs on the destination */
    GWS_RP_FAILED       = 0x0302,   /* loading failed; body: UTF-8 reason */
    /* optional */
    GWS_INFO            = GWS_OPTIONAL | 0x0030, /* free text, for people */
    GWS_MIGRATION_ID    = GWS_OPTIONAL | 0x0107, /* after POSTCOPY_ADVISE / _RESUME */
    GWS_CPU_MODEL       = GWS_OPTIONAL | 0x0012, /* the guest's CPUID, before any page */
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
    uint32_t version;             /* 2 (writers); readers take 1 and 2 */
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
    /* Version 2 on: */
    GWS_SEC_CPUID     = 10, /* u32 count, u32 zero, struct kvm_cpuid_entry2 (40 bytes) x count */
    GWS_SEC_TSC_KHZ   = 11, /* u32 kHz (0: unknown), u32 zero */
    GWS_SEC_MAX       = 11,
    GWS_SEC_MAX_V1    = 9,
};

/* Section lengths (equal to sizeof the <linux/kvm.h> structures; the codec
 * asserts it at build time). */
#define GWS_SEC_REGS_LEN      144
#define GWS_SEC_SREGS_LEN     312
#define GWS_SEC_XCRS_LEN      392
#define GWS_SEC_LAPIC_LEN     1024
#define GWS_SEC_EVENTS_LEN    64
#define GWS_SEC_MP_STATE_LEN  4
#define GWS_SEC_DEBUGREGS_LEN 128
#define GWS_SEC_TSC_KHZ_LEN   8
#define GWS_CPUID_ENTRY_LEN   40

/* The largest version 2 body: 8-byte header, 11 section headers, every
 * section at its largest (MP_STATE padded to 8). */
_Static_assert(8 + 8 * GWS_SEC_MAX + GWS_SEC_REGS_LEN + GWS_SEC_SREGS_LEN + GWS_MAX_XSAVE +
                       GWS_SEC_XCRS_LEN + 8 + 16 * GWS_MAX_MSRS + GWS_SEC_LAPIC_LEN +
                       GWS_SEC_EVENTS_LEN + 8 + GWS_SEC_DEBUGREGS_LEN + 8 +
                       GWS_CPUID_ENTRY_LEN * GWS_MAX_CPUID + GWS_SEC_TSC_KHZ_LEN <=
                   GWS_MAX_VCPU_BODY,
               "a full VCPU_STATE fits its length limit");

struct gws_msr {
    uint32_t index;
    uint32_t zero;
    uint64_t value;
};
_Static_assert(sizeof(struct gws_msr) == 16, "msr");

/* DEVICE_STATE: this header, then the device's own versioned body. */
struct gws_device {
    char id[GWS_DEVICE_ID_LEN];   /* NUL-padded, e.g. "serial0" */
    uint32_t instance;
    uint32_t version;
};
_Static_assert(sizeof(struct gws_device) == 40, "device");

/* POSTCOPY_ADVISE body. */
struct gws_postcopy_advise {
    uint32_t flags;               /* bit 0: a preempt channel follows */
    uint32_t reserved;            /* 0 */
    uint64_t ram_pages;           /* RAM pages in the guest (a check) */
};
_Static_assert(sizeof(struct gws_postcopy_advise) == 16, "advise");

/* DISCARD_PAGES body: count, zero, then count runs. */
#define GWS_MAX_DISCARD_RUNS 4096
struct gws_discard {
    uint32_t count;
    uint32_t zero;
};
struct gws_page_run {
    uint64_t pfn;                 /* first guest frame */
    uint64_t npages;              /* >= 1; the run lies inside one RAM region */
};
_Static_assert(sizeof(struct gws_discard) == 8, "discard");
_Static_assert(sizeof(struct gws_page_run) == 16, "page run");
#define GWS_MAX_DISCARD_BODY (8u + GWS_MAX_DISCARD_RUNS * 16u)

/* PING and RP_PONG body (the pong repeats the ping's). */
struct gws_ping {
    uint32_t id;
    uint32_t zero;
};
_Static_assert(sizeof(struct gws_ping) == 8, "ping");

/* MIGRATION_ID body: the source's random name for one post-copy migration;
 * a recovered channel must name the same one. */
struct gws_migration_id {
    uint8_t id[16];
};
_Static_assert(sizeof(struct gws_migration_id) == 16, "migration id");

/* RP_REQ_PAGES body: struct gws_pages (zlen 0) with 1..GWS_MAX_BATCH pfns.
 * RP_RECV_BITMAP body: u64 npages, then ceil(npages/64) u64 words, bit i set
 * = RAM page i (memfd order, see docs) is still needed. */
#define GWS_MAX_BITMAP_BODY (8u + (8u << 20))
/* RP_RECV_BITMAP_PART body: u64 npages, u64 first word, then 1 or more
 * words of the same list (a list larger than one RP_RECV_BITMAP). */
#define GWS_MAX_BITMAP_PART_BODY (16u + (8u << 20))

struct gws_end_of_iteration {
    uint32_t pass;
    uint32_t reserved;
    uint64_t pages;               /* pages sent in this pass */
};
_Static_assert(sizeof(struct gws_end_of_iteration) == 16, "eoi");

#endif
