/* Internal to the destination side (incoming.c, postcopy_dst.c): the
 * context of one incoming migration and the record checks both phases use.
 * Returns: 0 or -errno (the message is the stream's sticky error). */
#ifndef GW_MIGRATION_INCOMING_INTERNAL_H
#define GW_MIGRATION_INCOMING_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <zstd.h>

#include "migration/migration.h"

struct pc_dst;

struct in_ctx {
    struct migration *m;
    struct stream s;
    int fd;
    bool from_file;
    uint64_t npages;
    uint64_t *received;         /* pages written by this migration */
    uint8_t *zbuf;
    ZSTD_DCtx *zctx;
    bool got_header;
    uint64_t pass;
    pthread_t prealloc;
    bool prealloc_started;
    volatile bool stop_prealloc;
    int lfd;                    /* listening socket, kept for the preempt channel */
    struct pc_dst *pc;          /* post-copy state, after POSTCOPY_ADVISE */
};

int in_bad(struct in_ctx *c, const struct stream_record *rec, const char *what);
/* Check a page record's shape; returns its pfn list (unaligned: memcpy). */
const uint64_t *in_check_pages(struct in_ctx *c, const struct stream_record *rec, uint32_t *count,
                               uint32_t *zlen, size_t data_len_expected_per_page);
/* Every frame checked against the RAM map; idx[] gets RAM page indices. */
int in_resolve_frames(struct in_ctx *c, const struct stream_record *rec, const uint64_t *pfns,
                      uint32_t count, uint64_t *idx);
/* A PAGE_DATA, PAGE_DATA_ZSTD or ZERO_PAGES record checked and decoded:
 * idx[] gets the RAM page indices, *data count pages (valid until the next
 * record; NULL for ZERO_PAGES). */
int in_decode_pages(struct in_ctx *c, const struct stream_record *rec, uint64_t *idx,
                    const uint8_t **data, uint32_t *count);
/* One return-path record on the main channel (not for files). */
void in_send_rp(struct in_ctx *c, uint32_t type, const char *text);
void in_start_prealloc(struct in_ctx *c);
/* Stop listening (no further channel is coming). */
void in_close_listener(struct in_ctx *c);

/* postcopy_dst.c */
/* POSTCOPY_ADVISE: check we may, accept the preempt channel. */
int pc_dst_advise(struct in_ctx *c, const struct stream_record *rec);
/* DISCARD_PAGES: mark missing, drop what we hold. */
int pc_dst_discard(struct in_ctx *c, const struct stream_record *rec);
/* POSTCOPY_PING: every record before it is applied; answer RP_POSTCOPY_PONG. */
int pc_dst_ping(struct in_ctx *c, const struct stream_record *rec);
/* POSTCOPY_RUN: load the state, run the guest with pages missing, fetch
 * them until none is left; pauses and recovers inside. */
int pc_dst_run(struct in_ctx *c);
void pc_dst_cleanup(struct in_ctx *c);
/* The guest has run here (post-copy): its memory must be kept. */
bool pc_dst_guest_ran(const struct in_ctx *c);

#endif
