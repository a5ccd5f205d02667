/* Internal to the source side (outgoing.c, postcopy_src.c): the context of
 * one outgoing migration and the page-sending helpers both phases use.
 * Threads: everything here runs on the migration thread, except what
 * postcopy_src.c marks as the page server's. Returns: 0 or -errno (the
 * message is the stream's sticky error). */
#ifndef GW_MIGRATION_OUTGOING_INTERNAL_H
#define GW_MIGRATION_OUTGOING_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <zstd.h>

#include "migration/migration.h"
#include "migration/policy.h"
#include "migration/ratelimit.h"
#include "migration/switchover_guard.h"

/* The zstd state of one sending thread (the migration thread, the page
 * server): a context and room for one compressed batch. */
struct out_zstd {
    ZSTD_CCtx *ctx;
    uint8_t *buf;
};

struct out_ctx {
    struct migration *m;
    struct stream s;
    int fd;
    bool to_file;
    bool stopped;               /* vCPUs stopped for the switch-over */
    uint64_t stop_ms, stop_ns;   /* when the stop began (the downtime's start) */
    uint64_t stopped_ns;        /* when every vCPU had stopped */
    uint64_t pass;              /* pre-copy rounds so far */
    struct precopy_policy_state pst;
    /* The switch-over guard, armed while stopped (max-switchover-retries
     * not spent); how many pages the stop has to send, for its pace. */
    struct sw_guard guard;
    bool guard_armed;
    uint64_t stop_total;
    uint64_t *stop_set;         /* the pages the stop has to send (re-protected
                                   when the guard gives the guest back) */
    unsigned retries;
    /* The last round's expected rate once stopped (bytes/s), and how many
     * stops the check after the drain has put off (stop_still_fits). */
    uint64_t stop_bw;
    unsigned deferrals;
    uint64_t resumed_ms;        /* the destination said it runs the guest (0: not yet) */
    uint64_t npages;
    uint64_t *dirty;            /* pages to send */
    /* Hybrid first pass: pages the dirty log reported while the pass ran
     * (see skip_rewritten in outgoing.c), for the next round; and when it
     * last looked. */
    uint64_t *rewritten;
    uint64_t rewritten_ns, rewritten_skipped;
    /* The live round in progress (see round_fits_now in outgoing.c): when
     * and where it began, when the log was last looked at, and a scratch
     * map for that look. */
    uint64_t round_t0, probe_ns, probe_cost_ns;
    uint64_t probe_base_ns, probe_base_bytes, probe_base_wait, probe_base_sent; /* first look */
    uint64_t *probe, *round_set; /* the round's pages when it began */
    bool probe_off;             /* the log cannot be looked at without taking it */
    /* max-bandwidth, then max-postcopy-bandwidth. After the switch the page
     * server also accounts what it sends (rl_lock), so that the background
     * push leaves room for it and its prefetch stops when over the limit. */
    struct ratelimit rl;
    pthread_mutex_t rl_lock;
    struct mig_params params;
    struct mig_caps caps;
    /* batch being built: page indices, read into zsrc when it is sent */
    uint64_t idx[GWS_MAX_BATCH];
    uint64_t pfn[GWS_MAX_BATCH];
    unsigned n;
    uint64_t zero_pfn[GWS_MAX_BATCH];
    unsigned nzero;
    bool first_pass;
    struct out_zstd z;          /* the migration thread's (compress-zstd) */
    uint8_t *zsrc;              /* the batch's pages (GWS_MAX_BATCH of them) */
    /* post-copy */
    bool postcopy;              /* postcopy-ram: a preempt channel is open */
    bool handed_over;           /* the destination owns the guest: never resume */
    struct gws_migration_id pc_id; /* this migration's name, for its recoveries */
    int pfd;                    /* preempt channel */
    struct stream ps;           /* preempt channel stream (page server thread) */
    struct stream_sock psock;   /* ps's socket: its waits end with stop_server */
    struct stream_sock msock;   /* after the switch, s's socket: its waits end
                                   with a pause (or the VMM shutting down) */
    int held_fd, held_pfd;      /* a unix main channel a pause could not be said
                                   on, and the preempt one: kept open
                                   (park_channels), -1 */
    uint64_t bytes_before;      /* main-channel bytes of earlier connections */
    uint64_t pbytes_before;     /* preempt-channel bytes of earlier connections */
    uint64_t bw_t0_ns, bw_bytes0; /* window of the running bandwidth (query-migrate mbps) */
    uint64_t pc_bytes0;         /* main-channel bytes at the switch */
    uint64_t *pending;          /* after the switch: pages the destination lacks */
    uint64_t cursor;            /* background push position (page index) */
    volatile uint64_t hint;     /* page server: push from here next (+1, 0 = none) */
    struct stream pc_rp;        /* the main channel's return path after the switch */
    uint64_t pushed, acked;     /* pages sent compressed / the destination took (RP_INSTALLED) */
    pthread_t server;
    bool server_running;
    volatile bool server_stop;
    volatile int server_error;  /* -errno: the preempt channel broke */
};

void out_account(struct out_ctx *c, uint64_t zero, uint64_t normal);
/* A reason the destination gave (RP_FAILED) on the main channel, sought
 * behind up to `records` - 1 others, each waited for up to wait_ms: it
 * replaces the stream's error, after `prefix`. Nothing found: unchanged. */
void out_take_refusal(struct out_ctx *c, int wait_ms, int records, const char *prefix);
/* Set up z when compress-zstd is on (else leave it empty); -ENOMEM. */
int out_zstd_init(const struct out_ctx *c, struct out_zstd *z);
void out_zstd_fini(struct out_zstd *z);
/* Send k pages (frame pfn[i], data at pages + i pages) as one record:
 * PAGE_DATA_ZSTD when z is set up and compressing shrinks them (returns
 * 1), else PAGE_DATA (returns 0). */
int out_write_data(struct out_ctx *c, struct stream *s, struct out_zstd *z, const uint64_t *pfn,
                   const uint8_t *pages, unsigned k);
int out_flush_zero(struct out_ctx *c);
/* Read the queued pages, sort out the zero ones (to the zero batch, or
 * nowhere in the first pass) and send the rest as one PAGE_DATA record. */
int out_flush_pages(struct out_ctx *c);
/* Queue RAM page idx (zero pages as ZERO_PAGES except in the first pass).
 * Its content is read when the batch is flushed, never before. */
int out_queue_page(struct out_ctx *c, uint64_t idx);
/* Count bytes sent (from any thread) against the current limit; returns
 * how long the sender should wait (0: within the limit). */
uint64_t out_rate_account(struct out_ctx *c, uint64_t bytes);
int out_sync_dirty(struct out_ctx *c, uint64_t *count);
void out_refresh_params(struct out_ctx *c);
/* Stop the vCPUs for the switch-over (or a save): c->stopped, and when
 * the stop began and ended. 0 or -errno (the stream's error). */
int out_stop_guest(struct out_ctx *c);
/* A switch-over handed the guest over: publish where its downtime went
 * (mig_now_ns() stamps after each phase, see struct mig_downtime_phases). */
void out_publish_phases(struct out_ctx *c, uint64_t synced, uint64_t pages, uint64_t state,
                        uint64_t loaded, uint64_t resumed);
/* The next return-path record, which must be of type `want` (0: any):
 * 0; 1 for an optional record of another type (INFO, or one this side
 * does not know), to be skipped; RP_FAILED, a closed connection and
 * anything else become the main stream's error (-errno). */
int out_read_return(struct out_ctx *c, struct stream *rp, uint32_t want,
                    struct stream_record *rec);
/* Wait for one return-path record of type `want` on the main channel. */
int out_wait_return(struct out_ctx *c, struct stream *rp, uint32_t want, int timeout_ms);
void out_wait_for_drain(struct out_ctx *c);
/* PING ids (the sender's to choose; the pong repeats it). */
#define OUT_PING_PREDISCARD 1       /* post-copy: the pre-discard is applied */
#define OUT_PING_DRAIN      2       /* pre-copy: everything sent so far is loaded */
/* Send PING `id` on the main channel (and flush). */
int out_send_ping(struct out_ctx *c, uint32_t id);
/* One return-path record from rp, the pong to ping `id`: 1 when it came,
 * 0 when nothing came within timeout_ms, -errno otherwise (RP_FAILED,
 * anything else, a broken channel, cancel). */
int out_wait_pong(struct out_ctx *c, struct stream *rp, uint32_t id, int timeout_ms);
/* RP_LOADED, read after the pong to ping `late_ping` when that pong is
 * still due (0: none is). */
int out_wait_loaded(struct out_ctx *c, struct stream *rp, uint32_t late_ping, int timeout_ms);

/* postcopy_src.c */
/* Open the preempt channel and send POSTCOPY_ADVISE (after the header). */
int pc_src_setup(struct out_ctx *c);
/* Stop, send discards and state, hand over, then serve and push pages
 * until the destination has everything; pauses and recovers inside. */
int pc_src_run(struct out_ctx *c);
void pc_src_cleanup(struct out_ctx *c);

#endif
