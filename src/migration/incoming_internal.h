/* Internal to the destination side (incoming.c, postcopy_dst.c): the
 * context of one incoming migration and the record checks both phases use.
 * Returns: 0 or -errno (the message is the stream's sticky error). */
#ifndef GW_MIGRATION_INCOMING_INTERNAL_H
#define GW_MIGRATION_INCOMING_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/migration.h"

struct pc_dst;

struct in_ctx {
    struct migration *m;
    struct stream s;
    int fd;
    bool from_file;
    uint64_t npages;
    uint64_t *received;         /* pages written by this migration */
    bool got_header;
    uint64_t pass;
    pthread_t prealloc;
    bool prealloc_started;
    volatile bool stop_prealloc;
    uint64_t recv_end;          /* end (bytes) of the highest page written; atomic */
    int lfd;                    /* listening socket, kept for the preempt channel */
    struct pc_dst *pc;          /* post-copy state, after POSTCOPY_ADVISE */
};

int in_bad(struct in_ctx *c, const struct stream_record *rec, const char *what);
/* A PAGE_DATA, PAGE_DATA_ZSTD or ZERO_PAGES record read from channel s,
 * checked (stream_parse_pages: shape, every frame in RAM) and decoded:
 * idx[] gets the RAM page indices, *data count pages (NULL for ZERO_PAGES;
 * compressed pages expand into s's own buffer, so each channel's thread
 * decodes with its own). Errors are s's. */
int in_decode_pages(struct in_ctx *c, struct stream *s, const struct stream_record *rec,
                    uint64_t *idx, const uint8_t **data, uint32_t *count);
/* One return-path record on the main channel (not for files): with a
 * body (errors set the main stream's), or a text (errors ignored: it is
 * a last word such as RP_FAILED). */
int in_send_rp_body(struct in_ctx *c, uint32_t type, const struct iovec *parts, int nparts);
void in_send_rp(struct in_ctx *c, uint32_t type, const char *text);
/* Start allocating guest memory ahead of the first pass's pages (pre-copy
 * only; stops when the first pass ends). */
void in_start_prealloc(struct in_ctx *c);
/* Stop listening (no further channel is coming). */
void in_close_listener(struct in_ctx *c);

/* postcopy_dst.c */
/* POSTCOPY_ADVISE: check we may, accept the preempt channel. */
int pc_dst_advise(struct in_ctx *c, const struct stream_record *rec);
/* MIGRATION_ID after POSTCOPY_ADVISE: the name a recovery must repeat. */
int pc_dst_identity(struct in_ctx *c, const struct stream_record *rec);
/* DISCARD_PAGES: mark missing, drop what we hold. */
int pc_dst_discard(struct in_ctx *c, const struct stream_record *rec);
/* A PING arrived (debug log of the discards since the last one). */
void pc_dst_note_ping(struct in_ctx *c);
/* POSTCOPY_RUN: load the state, run the guest with pages missing, fetch
 * them until none is left; pauses and recovers inside. */
int pc_dst_run(struct in_ctx *c);
void pc_dst_cleanup(struct in_ctx *c);
/* The guest has run here (post-copy): its memory must be kept. */
bool pc_dst_guest_ran(const struct in_ctx *c);

#endif
