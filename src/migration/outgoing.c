/* The source side: pre-copy rounds over the dirty bitmap, the switch-over
 * and the handshake that hands the guest to the destination. */
#define LOG_PREFIX "outgoing"
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "common/log.h"
#include "memory/bitmap.h"
#include "migration/migration.h"
#include "migration/policy.h"
#include "migration/ram_scan.h"
#include "migration/ratelimit.h"
#include "migration/outgoing_internal.h"
#include "migration/stream_records.h"

#define COMMIT_ACK_WAIT_MS 5000 /* send_commit: for the destination's side to take COMMIT */
#define HANDSHAKE_TIMEOUT_MS 30000
#define PONG_STEP_MS 50          /* waiting for a pong, check for cancel this often */
#define DRAIN_WAIT_MS 5000       /* at most this long for the destination to catch up */
#define BW_WINDOW_NS 250000000ULL /* mbps is refreshed this often within a pass */
#define OUT_PROTECT_CHUNK 512ULL  /* pages re-protected at once before sending (2 MiB) */

void out_account(struct out_ctx *c, uint64_t zero, uint64_t normal)
{
    struct migration *m = c->m;
    uint64_t now = mig_now_ns();
    pthread_mutex_lock(&m->lock);
    m->stats.duplicate += zero;
    m->stats.normal += normal;
    m->stats.normal_bytes += normal * GWS_PAGE_SIZE;
    m->stats.transferred = c->bytes_before + c->s.bytes;
    /* remaining falls as the pass goes, as QEMU's does (the next sync sets
     * it again): a first pass over a slow link showed no progress. */
    uint64_t done = (zero + normal) * GWS_PAGE_SIZE;
    m->stats.remaining = m->stats.remaining > done ? m->stats.remaining - done : 0;
    /* A first pass can last minutes: the bandwidth is the last window's, as
     * QEMU's is, not only known at the end of a pass. */
    if (!c->bw_t0_ns || c->s.bytes < c->bw_bytes0) {
        c->bw_t0_ns = now;
        c->bw_bytes0 = c->s.bytes;
    } else if (now - c->bw_t0_ns >= BW_WINDOW_NS) {
        m->stats.mbps_x1000 = (c->s.bytes - c->bw_bytes0) * 8000000ULL / (now - c->bw_t0_ns);
        c->bw_t0_ns = now;
        c->bw_bytes0 = c->s.bytes;
    }
    pthread_mutex_unlock(&m->lock);
}

uint64_t out_rate_account(struct out_ctx *c, uint64_t bytes)
{
    pthread_mutex_lock(&c->rl_lock);
    uint64_t wait = ratelimit_account(&c->rl, bytes, mig_now_ns());
    pthread_mutex_unlock(&c->rl_lock);
    return wait;
}

/* Hold the sender to the rate limit after `bytes` more went into c->s
 * (counted as queued: compressed records are small and wait in the
 * stream's buffer, and counting only what reached the socket let a
 * compressed post-copy push run at 40 times max-postcopy-bandwidth). What
 * is buffered goes out before the sleep: in post-copy a fault on a page in
 * it would otherwise wait the sleep out (p99 50-70 ms at 96 KiB/s). A
 * write error stays in c->s for the caller's next step. */
static void pace(struct out_ctx *c, uint64_t bytes)
{
    uint64_t wait = out_rate_account(c, bytes);
    if (wait && (!c->stopped || c->pending)) {
        stream_flush(&c->s);
        /* In steps: migrate-pause or a cancel does not wait it out. */
        for (uint64_t end = mig_now_ns() + wait, now; (now = mig_now_ns()) < end;) {
            if (c->m->cancel || (c->pending && c->m->pc_pause_req))
                break;
            uint64_t step = end - now < 20000000ULL ? end - now : 20000000ULL;
            struct timespec ts = { 0, (long)step };
            nanosleep(&ts, NULL);
        }
    }
}

int out_flush_zero(struct out_ctx *c)
{
    if (!c->nzero)
        return 0;
    struct gws_pages h = { c->nzero, 0 };
    struct iovec iov[2] = { { &h, sizeof(h) }, { c->zero_pfn, c->nzero * 8ULL } };
    uint64_t before = c->s.queued;
    int r = stream_write_record(&c->s, GWS_ZERO_PAGES, iov, 2);
    out_account(c, c->nzero, 0);
    c->nzero = 0;
    pace(c, c->s.queued - before);
    return r;
}

int out_zstd_init(const struct out_ctx *c, struct out_zstd *z)
{
    z->ctx = NULL;
    z->buf = NULL;
    if (!c->caps.on[MIG_CAP_COMPRESS_ZSTD])
        return 0;
    z->ctx = ZSTD_createCCtx();
    z->buf = malloc(ZSTD_compressBound((size_t)GWS_MAX_BATCH * GWS_PAGE_SIZE));
    if (!z->ctx || !z->buf) {
        out_zstd_fini(z);
        return -ENOMEM;
    }
    return 0;
}

void out_zstd_fini(struct out_zstd *z)
{
    ZSTD_freeCCtx(z->ctx);
    free(z->buf);
    z->ctx = NULL;
    z->buf = NULL;
}

int out_write_data(struct out_ctx *c, struct stream *s, struct out_zstd *z, const uint64_t *pfn,
                   const uint8_t *pages, unsigned k)
{
    size_t raw = (size_t)k * GWS_PAGE_SIZE;
    if (z && z->ctx) {
        size_t n = ZSTD_compressCCtx(z->ctx, z->buf, ZSTD_compressBound(raw), pages, raw,
                                     (int)c->params.compress_level);
        if (ZSTD_isError(n))
            return stream_set_error(s, EIO, "zstd: %s", ZSTD_getErrorName(n));
        if (n < raw) { /* else it did not shrink: send the pages as they are */
            struct gws_pages h = { k, (uint32_t)n };
            struct iovec iov[3] = { { &h, sizeof(h) }, { (void *)pfn, k * 8ULL }, { z->buf, n } };
            return stream_write_record(s, GWS_PAGE_DATA_ZSTD, iov, 3) < 0 ? -1 : 1;
        }
    }
    struct gws_pages h = { k, 0 };
    struct iovec iov[3] = { { &h, sizeof(h) }, { (void *)pfn, k * 8ULL }, { (void *)pages, raw } };
    return stream_write_record(s, GWS_PAGE_DATA, iov, 3);
}

int out_flush_pages(struct out_ctx *c)
{
    unsigned n = c->n;
    if (!n)
        return 0;
    c->n = 0;
    /* One copy into zsrc, also while the guest runs: the checksum then
     * covers exactly what is sent (a page changed meanwhile is dirty again
     * and goes in the next round). */
    struct gw_error err;
    gw_error_init(&err);
    int r = guest_ram_read_pages(c->m->ram, c->idx, n, c->zsrc, &err);
    if (r < 0)
        return stream_set_error(&c->s, -r, "%s", err.msg);
    unsigned k = 0;
    uint64_t skipped = 0;
    for (unsigned i = 0; i < n; i++) {
        uint8_t *p = c->zsrc + (size_t)i * GWS_PAGE_SIZE;
        uint64_t pfn = ram_page_to_pfn(c->m->ram, c->idx[i]);
        if (stream_page_is_zero(p)) {
            if (c->first_pass) {
                skipped++; /* the destination's memory starts zero */
                continue;
            }
            c->zero_pfn[c->nzero++] = pfn;
            if (c->nzero == GWS_MAX_BATCH && out_flush_zero(c) < 0)
                return stream_get_error(&c->s);
            continue;
        }
        if (k != i)
            memcpy(c->zsrc + (size_t)k * GWS_PAGE_SIZE, p, GWS_PAGE_SIZE);
        c->pfn[k++] = pfn;
    }
    if (skipped)
        out_account(c, skipped, 0);
    if (!k)
        return 0;
    uint64_t before = c->s.queued;
    r = out_write_data(c, &c->s, &c->z, c->pfn, c->zsrc, k);
    if (r > 0) { /* compressed: counts against the post-copy push window */
        c->pushed += k;
        r = 0;
    }
    out_account(c, 0, k);
    pace(c, c->s.queued - before);
    return r;
}

int out_queue_page(struct out_ctx *c, uint64_t idx)
{
    c->idx[c->n++] = idx;
    return c->n == GWS_MAX_BATCH ? out_flush_pages(c) : 0;
}

/* migrate-start-postcopy was asked for (and is possible). */
static bool switch_to_postcopy(const struct out_ctx *c)
{
    return c->postcopy && !c->stopped && c->m->pc_start_req;
}

/* Re-protect the chunk of c->dirty that holds page i, before any page of
 * it is read: a write from here on counts for the next round, one before
 * is in what we read. Stopped vCPUs write nothing: no need. */
static int protect_chunk(struct out_ctx *c, uint64_t i, uint64_t *chunk_end)
{
    if (c->stopped || i < *chunk_end)
        return 0;
    uint64_t first = i - i % OUT_PROTECT_CHUNK;
    *chunk_end = first + OUT_PROTECT_CHUNK < c->npages ? first + OUT_PROTECT_CHUNK : c->npages;
    struct gw_error err;
    gw_error_init(&err);
    if (dirty_log_protect(c->m->dirty, c->dirty, first, *chunk_end - first, &err) < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    return 0;
}

/* The first pass of a hybrid migration (postcopy-after-precopy): post-copy
 * follows it, and a page the guest writes again before the switch is
 * discarded on the destination and sent again after it. So the pass looks
 * at the dirty log every OUT_REWRITTEN_PAGES pages (at most every
 * OUT_REWRITTEN_NS) and skips the pages ahead of it that the guest has
 * written since the pass began: they cross once, after the switch (the
 * busy 1 GiB guest rewrites its 512 MiB working set faster than a 1 Gbit/s
 * link: sent in the pass, every page of it crossed twice). */
#define OUT_REWRITTEN_PAGES 4096
#define OUT_REWRITTEN_NS    10000000ULL

static bool hybrid_first_pass(const struct out_ctx *c)
{
    return c->first_pass && c->postcopy && !c->stopped &&
           c->caps.on[MIG_CAP_POSTCOPY_AFTER_PRECOPY];
}

/* Drop from c->dirty the pages after `next` that the log reports written;
 * the log's report is kept in c->rewritten for the round's end (a page the
 * VMM wrote is reported once only). Skipped pages are not protected: the
 * next fetch reports the guest's again. */
static int skip_rewritten(struct out_ctx *c, uint64_t next)
{
    uint64_t now = mig_now_ns();
    if (now - c->rewritten_ns < OUT_REWRITTEN_NS)
        return 0;
    c->rewritten_ns = now;
    if (!c->rewritten && !(c->rewritten = bitmap_new(c->npages)))
        return 0; /* an optimisation only */
    struct gw_error err;
    gw_error_init(&err);
    if (dirty_log_fetch(c->m->dirty, c->rewritten, &err) < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    c->rewritten_skipped += bitmap_andnot_from(c->dirty, c->rewritten, next, c->npages);
    return 0;
}

/* The bandwidth to expect once the vCPUs stop, from a live round that has
 * moved `bytes` carrying `pages` pages in `ns`, waiting `cpu_wait_ns` for a
 * CPU: at most max-bandwidth; with compress-zstd in page bytes (what the
 * policy weighs: the test guest's pages shrink 250 times, and its rounds
 * read as 6 MB/s). Once the guard has given a stop up, the stop did not
 * get what the CPU wait promised: from then on the live rate only (two
 * stops given up in a row at 670 MB/s, each after a round that promised
 * 1.9-2.2 GB/s from 1.1-1.4 live). */
static uint64_t stop_bandwidth(const struct out_ctx *c, uint64_t bytes, uint64_t pages, uint64_t ns,
                               uint64_t cpu_wait_ns)
{
    uint64_t bw = precopy_switch_bandwidth(bytes, ns, c->retries ? 0 : cpu_wait_ns);
    if (c->params.max_bandwidth && (bw == 0 || bw > c->params.max_bandwidth))
        bw = c->params.max_bandwidth;
    uint64_t page_bytes = pages * GWS_PAGE_SIZE;
    if (c->caps.on[MIG_CAP_COMPRESS_ZSTD] && bytes && page_bytes > bytes)
        bw = (uint64_t)((double)bw * (double)page_bytes / (double)bytes);
    return bw;
}

/* A live round ends early once all that a stop would now have to send
 * (what is left of the round, and what the guest has written since its
 * pages went) fits the downtime limit at this round's rate, and the round's
 * pages are being written again (precopy_round_ends_early); the policy
 * then decides at the round's end as always. QEMU's migration thread also
 * checks its pending pages between rate-limit quanta, not only when a round
 * ends. Without it, a busy guest whose first pass ran at the destination's
 * first-touch rate (0.4 GB/s, where re-sent pages go at 2-3 GB/s) had its
 * whole working set sent again in a second pass, then a third time in the
 * stop. KVM's log is only read, never taken (manual protection keeps its
 * bits until cleared): the round's own pages are still set there. */
#define OUT_PROBE_EVERY_NS 10000000ULL /* look at most every 10 ms */
#define OUT_PROBE_AFTER_NS 20000000ULL /* from 20 ms into the round: a rate needs time */
#define OUT_PROBE_SHARE    20           /* and at most 1/20 of the sender's time: a look
                                           (the log's copy, three passes over the maps)
                                           took 48 us on 1 GiB, 102 us on 4 GiB */

/* Does this round look ahead? Live pre-copy rounds only: not while
 * stopped, not for a file, not in the hybrid first pass (it reads the log
 * its own way), not once post-copy is asked for. */
static bool round_looks_ahead(const struct out_ctx *c)
{
    return !c->probe_off && !c->stopped && !c->to_file && !hybrid_first_pass(c) &&
           !(c->postcopy && c->m->pc_start_req);
}

/* Look at the log without taking it (KVM keeps its bits until they are
 * cleared): c->probe = what has been written since the last sync, and
 * *left = every page a stop would send now (those, the pages this round
 * has still to send, the batch being built). False when there is no look:
 * no memory for it, or a log that cannot be looked at without taking it
 * (no more looks then; `what` names the one given up, for the debug log). */
static bool look_at_stop(struct out_ctx *c, const char *what, uint64_t *left)
{
    if (c->probe_off)
        return false;
    if (!c->probe && !(c->probe = bitmap_new(c->npages)))
        return false; /* an optimisation only */
    struct gw_error err;
    gw_error_init(&err);
    bitmap_zero(c->probe, c->npages);
    if (dirty_log_peek(c->m->dirty, c->probe, &err) < 0) {
        log_debug("%s: %s", what, err.msg);
        c->probe_off = true;
        return false;
    }
    *left = bitmap_count_or(c->probe, c->dirty, c->npages) + c->n;
    return true;
}

static bool round_fits_now(struct out_ctx *c, uint64_t sent)
{
    uint64_t now = mig_now_ns();
    uint64_t every = c->probe_cost_ns * OUT_PROBE_SHARE > OUT_PROBE_EVERY_NS
                         ? c->probe_cost_ns * OUT_PROBE_SHARE : OUT_PROBE_EVERY_NS;
    if (c->probe_off || now - c->round_t0 < OUT_PROBE_AFTER_NS || now - c->probe_ns < every)
        return false;
    c->probe_ns = now;
    if (!c->round_set)
        return false; /* no memory for it: an optimisation only */
    /* The rate is taken from the first look on: the round's first
     * megabytes only fill the socket's buffers (16 MiB, at memory speed),
     * and a rate over the first 20 ms that counted them promised 2 GB/s
     * for a stop that then ran at 1.5 (355 ms for a 300 ms limit). */
    uint64_t wait = mig_thread_cpu_wait_ns();
    if (!c->probe_base_ns) {
        c->probe_base_ns = now;
        c->probe_base_bytes = c->s.bytes;
        c->probe_base_wait = wait;
        c->probe_base_sent = sent;
        return false;
    }
    uint64_t left;
    if (!look_at_stop(c, "the round's end is not looked ahead at", &left))
        return false;
    /* Sent this round and written since. */
    uint64_t again = bitmap_count_and_andnot(c->probe, c->round_set, c->dirty, c->npages);
    c->probe_cost_ns = mig_now_ns() - now;
    uint64_t bw = stop_bandwidth(c, c->s.bytes - c->probe_base_bytes, sent - c->probe_base_sent,
                                 now - c->probe_base_ns, wait - c->probe_base_wait);
    if (!precopy_round_ends_early(c->params.downtime_limit_ms, sent, again, left * GWS_PAGE_SIZE,
                                  bw ? bw : 1))
        return false;
    uint64_t expect = precopy_expected_downtime_ms(left * GWS_PAGE_SIZE, bw ? bw : 1);
    pthread_mutex_lock(&c->m->lock);
    c->m->stats.rounds_ended_early++;
    pthread_mutex_unlock(&c->m->lock);
    log_debug("pass %llu ends early after %llu pages (%llu of them written again): a stop now "
              "would send %llu pages, %llu ms at %.0f MB/s (the look took %llu us)",
              (unsigned long long)c->pass, (unsigned long long)sent, (unsigned long long)again,
              (unsigned long long)left, (unsigned long long)expect, (double)bw / 1e6,
              (unsigned long long)(c->probe_cost_ns / 1000));
    return true;
}

/* While stopped with the guard armed, `sent` pages of the stop's round
 * gone: has the guard fired, or should it fire now (the pace so far ends
 * past the allowance)? */
static bool stop_overruns(struct out_ctx *c, uint64_t sent)
{
    if (sw_guard_fired(&c->guard))
        return true;
    if (!precopy_stop_overruns(c->params.downtime_limit_ms, mig_now_ms() - c->stop_ms, sent,
                               c->stop_total))
        return false;
    return sw_guard_fire(&c->guard);
}

/* Send every page set in c->dirty (clearing the bits); stops early, leaving
 * bits set, when post-copy is to start, the switch-over guard fired, or
 * (live rounds) a stop would fit the limit now (*cut set). */
static int send_dirty(struct out_ctx *c, uint64_t *sent, bool *cut)
{
    uint64_t n = 0, chunk_end = 0;
    bool hybrid = hybrid_first_pass(c);
    bool look_ahead = round_looks_ahead(c);
    *cut = false;
    if (hybrid)
        c->rewritten_ns = mig_now_ns();
    for (uint64_t i = bitmap_next_set(c->dirty, c->npages, 0); i < c->npages;
         i = bitmap_next_set(c->dirty, c->npages, i + 1)) {
        if (hybrid && n && (n % OUT_REWRITTEN_PAGES) == 0 && skip_rewritten(c, i + 1) < 0)
            return stream_get_error(&c->s);
        if (protect_chunk(c, i, &chunk_end) < 0)
            return stream_get_error(&c->s);
        bitmap_clear_bit(c->dirty, i);
        if (out_queue_page(c, i) < 0)
            return stream_get_error(&c->s);
        n++;
        if ((n & 1023) == 0 && c->m->cancel)
            return stream_set_error(&c->s, ECANCELED, "cancelled");
        if (c->guard_armed && (n % GWS_MAX_BATCH) == 0 && stop_overruns(c, n))
            break; /* the guest runs again: the rest goes in the next round */
        if ((n & 1023) == 0 && switch_to_postcopy(c))
            break; /* the rest of this round goes in post-copy */
        if (look_ahead && (n & 1023) == 0 && round_fits_now(c, n)) {
            *cut = true;
            break; /* the rest goes in the stop, if the policy agrees */
        }
    }
    if (out_flush_pages(c) < 0 || out_flush_zero(c) < 0)
        return stream_get_error(&c->s);
    *sent = n;
    return 0;
}

static int write_header(struct out_ctx *c)
{
    struct migration *m = c->m;
    struct {
        struct gws_header h;
        struct gws_region r[GWS_MAX_REGIONS];
    } hdr;
    memset(&hdr, 0, sizeof(hdr));
    hdr.h.page_size = GWS_PAGE_SIZE;
    hdr.h.nr_vcpus = m->nr_vcpus;
    hdr.h.ram_size = m->ram->size;
    if (m->uuid)
        memcpy(hdr.h.uuid, m->uuid, 16);
    strncpy(hdr.h.name, m->name ? m->name : "", sizeof(hdr.h.name) - 1);
    hdr.h.nr_regions = m->ram->nr_regions;
    for (unsigned i = 0; i < m->ram->nr_regions; i++)
        hdr.r[i] = (struct gws_region){ m->ram->regions[i].gpa, m->ram->regions[i].size };
    struct iovec iov = { &hdr, sizeof(hdr.h) + m->ram->nr_regions * sizeof(struct gws_region) };
    stream_write_preamble(&c->s);
    return stream_write_record(&c->s, GWS_HEADER, &iov, 1);
}

static void emit_pass(struct out_ctx *c, uint64_t pass)
{
    struct migration *m = c->m;
    pthread_mutex_lock(&m->lock);
    m->stats.iteration = pass;
    bool events = m->caps.on[MIG_CAP_EVENTS];
    pthread_mutex_unlock(&m->lock);
    if (events && m->ops->event) {
        struct json_object *d = json_object_new_object();
        json_object_object_add(d, "pass", json_object_new_int64((int64_t)pass));
        m->ops->event(m->vm, "MIGRATION_PASS", d);
    }
}

int out_sync_dirty(struct out_ctx *c, uint64_t *count)
{
    struct gw_error err;
    gw_error_init(&err);
    /* Lazy: send_dirty() re-protects each chunk just before reading it. */
    if (dirty_log_fetch(c->m->dirty, c->dirty, &err) < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    if (c->rewritten) { /* what the first pass skipped, and what the VMM wrote */
        bitmap_or_at(c->dirty, 0, c->rewritten, c->npages);
        bitmap_zero(c->rewritten, c->npages);
        log_debug("the first pass skipped %llu pages the guest wrote again",
                  (unsigned long long)c->rewritten_skipped);
    }
    *count = bitmap_count(c->dirty, c->npages);
    pthread_mutex_lock(&c->m->lock);
    c->m->stats.dirty_sync_count++;
    c->m->stats.remaining = *count * GWS_PAGE_SIZE;
    pthread_mutex_unlock(&c->m->lock);
    return 0;
}

int out_stop_guest(struct out_ctx *c)
{
    struct gw_error err;
    gw_error_init(&err);
    uint64_t t0 = mig_now_ns();
    if (c->m->ops->stop(c->m->vm, &err) < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    c->stopped = true;
    c->stop_ns = t0; /* the first vCPU may have stopped at once */
    c->stop_ms = t0 / 1000000;
    c->stopped_ns = mig_now_ns();
    return 0;
}

void out_publish_phases(struct out_ctx *c, uint64_t synced, uint64_t pages, uint64_t state,
                        uint64_t loaded, uint64_t resumed)
{
    /* Each phase ends where the next begins (enum mig_phase's order). */
    const uint64_t at[MIG_NPHASES + 1] = { c->stop_ns, c->stopped_ns, synced, pages, state,
                                           loaded, resumed };
    struct mig_downtime_phases p = { .known = true };
    for (unsigned i = 0; i < MIG_NPHASES; i++)
        p.us[i] = (at[i + 1] - at[i]) / 1000;
    pthread_mutex_lock(&c->m->lock);
    c->m->stats.downtime_phases = p;
    pthread_mutex_unlock(&c->m->lock);
    char text[160];
    log_debug("switch-over: downtime %llu us: %s", (unsigned long long)((resumed - c->stop_ns) / 1000),
              mig_phases_text(p.us, text, sizeof(text)));
}

void out_refresh_params(struct out_ctx *c)
{
    pthread_mutex_lock(&c->m->lock);
    c->params = c->m->params;
    pthread_mutex_unlock(&c->m->lock);
    pthread_mutex_lock(&c->rl_lock);
    ratelimit_set(&c->rl, c->pending ? c->params.max_postcopy_bandwidth
                          : c->stopped ? 0 : c->params.max_bandwidth);
    pthread_mutex_unlock(&c->rl_lock);
}

/* Between rounds: has the destination given up (RP_FAILED) already?
 * Optional records are skipped (all that has come of them). */
static int out_check_return(struct out_ctx *c)
{
    struct pollfd pfd = { c->fd, POLLIN, 0 };
    if (c->to_file || poll(&pfd, 1, 0) <= 0)
        return 0;
    struct stream rp;
    stream_init(&rp, &stream_fd_ops, (void *)(intptr_t)c->fd);
    struct stream_record rec;
    int r;
    while ((r = out_read_return(c, &rp, GWS_RP_LOADED, &rec)) == 1 &&
           (rp.ipos < rp.ilen || poll(&pfd, 1, 0) > 0))
        ;
    stream_fini(&rp);
    if (r == 0)
        return stream_set_error(&c->s, EPROTO, "unexpected RP_LOADED during pre-copy");
    return r < 0 ? r : 0;
}

/* What one live round did, for the policy. */
struct round_meas {
    uint64_t pass, sent, dirty, bytes, ns, cpu_wait_ns;
    uint64_t rate_pages;        /* pages in `bytes` (a cut round measures a part) */
    uint64_t left;              /* of the round's own pages, not sent (a cut round) */
    uint64_t round_ns;          /* the whole round, sync to sync (ns: a cut round's window) */
};

/* The policy's verdict on a finished round, published in query-migrate;
 * applies a new throttle. */
static void decide_round(struct out_ctx *c, struct precopy_policy_state *pst,
                         const struct round_meas *r, struct precopy_decision *d)
{
    struct migration *m = c->m;
    struct precopy_params pp = {
        .downtime_limit_ms = c->params.downtime_limit_ms,
        .auto_converge = c->caps.on[MIG_CAP_AUTO_CONVERGE],
        .throttle_initial = (unsigned)c->params.cpu_throttle_initial,
        .throttle_increment = (unsigned)c->params.cpu_throttle_increment,
        .throttle_max = (unsigned)c->params.max_cpu_throttle,
        .throttle_trigger_pct = (unsigned)c->params.throttle_trigger_threshold,
    };
    uint64_t rate_pages = r->rate_pages ? r->rate_pages : r->sent;
    uint64_t bw = stop_bandwidth(c, r->bytes, rate_pages, r->ns, r->cpu_wait_ns);
    /* The policy weighs page bytes (what is dirty); with compress-zstd the
     * wire carries fewer. */
    uint64_t page_bytes = rate_pages * GWS_PAGE_SIZE, moved = r->bytes;
    if (c->caps.on[MIG_CAP_COMPRESS_ZSTD] && r->bytes && page_bytes > r->bytes)
        moved = page_bytes;
    struct precopy_round round = {
        .iteration = (unsigned)r->pass,
        .remaining_bytes = r->dirty * GWS_PAGE_SIZE,
        .bandwidth_bps = bw ? bw : 1,
        /* A cut round's unsent pages were not dirtied while it ran. */
        .dirtied_bytes = (r->dirty - (r->left < r->dirty ? r->left : r->dirty)) * GWS_PAGE_SIZE,
        .transferred_bytes = moved,
    };
    precopy_decide(&pp, pst, &round, d);
    c->stop_bw = round.bandwidth_bps;
    pthread_mutex_lock(&m->lock);
    m->stats.expected_downtime_ms = d->expected_downtime_ms == UINT64_MAX ? 0 : d->expected_downtime_ms;
    /* As QEMU's: pages dirtied since the last sync, over that time (a cut
     * round's unsent pages were not dirtied in it, and its window is not
     * the time they were dirtied in). */
    m->stats.dirty_pages_rate = round.dirtied_bytes / GWS_PAGE_SIZE * 1000000000ULL /
                                (r->round_ns ? r->round_ns : r->ns);
    m->stats.mbps_x1000 = r->bytes * 8000000ULL / r->ns; /* live, as measured */
    m->stats.throttle_pct = d->throttle_pct;
    pthread_mutex_unlock(&m->lock);
    if (d->throttle_changed && m->ops->set_throttle)
        m->ops->set_throttle(m->vm, d->throttle_pct);
    log_debug("pass %llu: sent %llu pages, %llu dirty, %.0f MB/s live (%llu ms waiting for a CPU), "
              "%.0f MB/s expected stopped, expected downtime %llu ms",
              (unsigned long long)r->pass, (unsigned long long)r->sent,
              (unsigned long long)r->dirty, (double)r->bytes * 1e3 / (double)r->ns,
              (unsigned long long)(r->cpu_wait_ns / 1000000), (double)bw / 1e6,
              (unsigned long long)d->expected_downtime_ms);
}

/* Pre-copy rounds until the policy says the rest fits the downtime limit
 * (or post-copy is to take over: c->dirty then holds what is left). */
static int precopy(struct out_ctx *c)
{
    struct migration *m = c->m;
    for (uint64_t pass = c->pass + 1;; pass++) {
        c->pass = pass;
        out_refresh_params(c);
        emit_pass(c, pass);
        struct round_meas r = { .pass = pass };
        uint64_t t0 = mig_now_ns(), wait0 = mig_thread_cpu_wait_ns(), bytes0 = c->s.bytes;
        c->round_t0 = c->probe_ns = t0;
        c->probe_base_ns = 0;
        if (round_looks_ahead(c) && (c->round_set || (c->round_set = bitmap_new(c->npages))))
            memcpy(c->round_set, c->dirty, BITMAP_WORDS(c->npages) * sizeof(uint64_t));
        bool cut;
        if (send_dirty(c, &r.sent, &cut) < 0)
            return stream_get_error(&c->s);
        if (switch_to_postcopy(c))
            return 0;
        if (cut) {
            /* Measured as the look-ahead judged it (from its first look to
             * its last), so that the policy sees the rate it saw. */
            r.left = bitmap_count(c->dirty, c->npages);
            r.ns = mig_now_ns() - c->probe_base_ns;
            r.cpu_wait_ns = mig_thread_cpu_wait_ns() - c->probe_base_wait;
            r.bytes = c->s.bytes - c->probe_base_bytes;
            r.rate_pages = r.sent - c->probe_base_sent;
        }
        c->first_pass = false;
        struct gws_end_of_iteration eoi = { (uint32_t)pass, 0, r.sent };
        struct iovec iov = { &eoi, sizeof(eoi) };
        if (stream_write_record(&c->s, GWS_END_OF_ITERATION, &iov, 1) < 0 || stream_flush(&c->s) < 0)
            return stream_get_error(&c->s);
        if (out_sync_dirty(c, &r.dirty) < 0)
            return stream_get_error(&c->s);
        r.round_ns = mig_now_ns() - t0;
        if (!cut) {
            r.ns = mig_now_ns() - t0;
            r.cpu_wait_ns = mig_thread_cpu_wait_ns() - wait0;
            r.bytes = c->s.bytes - bytes0;
        }
        r.ns += !r.ns;
        struct precopy_decision d;
        decide_round(c, &c->pst, &r, &d);
        if (d.switchover)
            return 0;
        if (m->cancel)
            return stream_set_error(&c->s, ECANCELED, "cancelled");
        if (c->postcopy && pass == 1 && c->caps.on[MIG_CAP_POSTCOPY_AFTER_PRECOPY])
            m->pc_start_req = true;
        if (switch_to_postcopy(c) || out_check_return(c) < 0)
            return stream_get_error(&c->s);
    }
}

int out_read_return(struct out_ctx *c, struct stream *rp, uint32_t want,
                    struct stream_record *rec)
{
    int r = stream_read_record(rp, rec);
    if (r == -ENODATA)
        return stream_set_error(&c->s, EPIPE, "the destination closed the connection");
    if (r < 0)
        return stream_set_error(&c->s, r, "return path: %s", stream_error(rp));
    if (rec->type == GWS_RP_FAILED)
        return stream_set_error(&c->s, EPROTO, "destination failed: %.*s", (int)rec->length,
                                (const char *)rec->body);
    if ((rec->type & GWS_OPTIONAL) && rec->type != want)
        return 1; /* INFO, or one this side does not know: skipped */
    if (want && rec->type != want)
        return stream_set_error(&c->s, EPROTO, "unexpected %s on the return path",
                                stream_record_name(rec->type));
    return 0;
}

/* Wait for one return-path record of type `want` (optional records
 * before it skipped), at most timeout_ms (-1: no limit). */
int out_wait_return(struct out_ctx *c, struct stream *rp, uint32_t want, int timeout_ms)
{
    uint64_t end = mig_now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    for (;;) {
        struct pollfd pfd = { c->fd, POLLIN, 0 };
        if (rp->ilen == rp->ipos) {
            uint64_t now = mig_now_ms();
            int left = timeout_ms < 0 ? -1 : now < end ? (int)(end - now) : 0;
            if (poll(&pfd, 1, left) == 0)
                return stream_set_error(&c->s, ETIMEDOUT, "no answer from the destination");
        }
        struct stream_record rec;
        int r = out_read_return(c, rp, want, &rec);
        if (r != 1)
            return r;
    }
}

/* The pong to ping `id`, still due after the stop: 0, or -errno (no
 * answer within timeout_ms is an error too). */
static int wait_late_pong(struct out_ctx *c, struct stream *rp, uint32_t id, int timeout_ms)
{
    int r = out_wait_pong(c, rp, id, timeout_ms);
    if (r == 0)
        return stream_set_error(&c->s, ETIMEDOUT, "no answer from the destination");
    return r < 0 ? r : 0;
}

int out_wait_loaded(struct out_ctx *c, struct stream *rp, uint32_t late_ping, int timeout_ms)
{
    int r = late_ping ? wait_late_pong(c, rp, late_ping, timeout_ms) : 0;
    if (r < 0)
        return r;
    return out_wait_return(c, rp, GWS_RP_LOADED, timeout_ms);
}

/* Before stopping the guest, let the destination drain what is queued in
 * the connection: otherwise the downtime includes the backlog. Bounded. */
void out_wait_for_drain(struct out_ctx *c)
{
    if (c->to_file)
        return;
    for (int i = 0; i < 2000 && !c->m->cancel; i++) {
        int queued = 0;
        if (ioctl(c->fd, SIOCOUTQ, &queued) < 0 || queued < 64 * 1024)
            return;
        struct timespec ts = { 0, 500000 };
        nanosleep(&ts, NULL);
    }
}

int out_send_ping(struct out_ctx *c, uint32_t id)
{
    struct gws_ping p = { id, 0 };
    struct iovec iov = { &p, sizeof(p) };
    if (stream_write_record(&c->s, GWS_PING, &iov, 1) < 0 || stream_flush(&c->s) < 0)
        return -1;
    return 0;
}

int out_wait_pong(struct out_ctx *c, struct stream *rp, uint32_t id, int timeout_ms)
{
    uint64_t deadline = mig_now_ms() + (uint64_t)timeout_ms;
    struct stream_record rec;
    int got;
again:
    while (rp->ipos == rp->ilen) {
        if (c->m->cancel)
            return stream_set_error(&c->s, ECANCELED, "cancelled");
        uint64_t now = mig_now_ms();
        if (now >= deadline)
            return 0;
        struct pollfd p = { c->fd, POLLIN, 0 };
        int step = deadline - now < PONG_STEP_MS ? (int)(deadline - now) : PONG_STEP_MS;
        int r = poll(&p, 1, step);
        if (r < 0 && errno != EINTR)
            return stream_set_error(&c->s, errno, "poll: %s", strerror(errno));
        if (r > 0)
            break;
    }
    struct gws_ping pong;
    if ((got = out_read_return(c, rp, GWS_RP_PONG, &rec)) < 0)
        return stream_get_error(&c->s);
    if (got == 1)
        goto again; /* an optional record before it */
    if (rec.length == sizeof(pong))
        memcpy(&pong, rec.body, sizeof(pong));
    if (rec.length != sizeof(pong) || pong.id != id || pong.zero)
        return stream_set_error(&c->s, EPROTO, "RP_PONG does not answer ping %u", id);
    return 1;
}

/* Before the stop, while the guest still runs: let the destination load
 * what is still in flight (socket buffers hold megabytes, and it may write
 * fresh memory slower than we send), so that this backlog is not part of
 * the downtime. 1: caught up; 0: not within DRAIN_WAIT_MS (the pong is
 * then still due); -errno. */
static int drain(struct out_ctx *c, struct stream *rp)
{
    uint64_t t0 = mig_now_ns();
    if (out_send_ping(c, OUT_PING_DRAIN) < 0)
        return stream_get_error(&c->s);
    int r = out_wait_pong(c, rp, OUT_PING_DRAIN, DRAIN_WAIT_MS);
    log_debug("switch-over: destination %s in %llu us", r > 0 ? "caught up" : "still behind",
              (unsigned long long)((mig_now_ns() - t0) / 1000));
    return r;
}

/* Just before the stop, the destination caught up: the guest ran on
 * meanwhile (the drain takes up to milliseconds at each switch-over, 9 ms
 * in one run), so what a stop would send now is counted again (the log
 * is only looked at, as by the look-ahead) and weighed at the rate the
 * policy expected. When it no longer fits the limit, pre-copy goes on
 * for one more round, at most OUT_MAX_DEFERRALS times in a migration.
 * Busy 1 GiB with auto-converge and a 20 ms limit decided on 13088
 * pages (20 ms), found 14597 at the stop and paused the guest 25 ms. */
#define OUT_MAX_DEFERRALS 3

static bool stop_still_fits(struct out_ctx *c)
{
    uint64_t left;
    if (c->deferrals >= OUT_MAX_DEFERRALS || !c->stop_bw ||
        !look_at_stop(c, "the stop is not checked after the drain", &left))
        return true;
    uint64_t expect = precopy_expected_downtime_ms(left * GWS_PAGE_SIZE, c->stop_bw);
    if (expect <= c->params.downtime_limit_ms) {
        log_debug("switch-over: the last look counts %llu pages, %llu ms at %.0f MB/s",
                  (unsigned long long)left, (unsigned long long)expect, (double)c->stop_bw / 1e6);
        return true;
    }
    c->deferrals++;
    pthread_mutex_lock(&c->m->lock);
    c->m->stats.switchover_deferrals = c->deferrals;
    c->m->stats.expected_downtime_ms = expect;
    pthread_mutex_unlock(&c->m->lock);
    log_debug("switch-over put off (%u of %u): the guest wrote on while the destination caught "
              "up; a stop would now send %llu pages, %llu ms at %.0f MB/s", c->deferrals,
              OUT_MAX_DEFERRALS, (unsigned long long)left, (unsigned long long)expect,
              (double)c->stop_bw / 1e6);
    return false;
}

/* The switch-over guard fired (on its thread or ours): the guest runs
 * again. The status first, so that a client knows why before RESUME. */
static void give_back(void *arg)
{
    struct out_ctx *c = arg;
    /* The stop's pages are clean until the vCPUs run again: re-protected
     * now, only those the guest writes again go in the next round (else
     * the dirty log, never cleared for them, would report them all). The
     * migration thread touches no dirty log while stopped. A failure here
     * only costs bytes: pages left unprotected are reported again. */
    struct gw_error err;
    gw_error_init(&err);
    if (dirty_log_protect(c->m->dirty, c->stop_set, 0, c->npages, &err) < 0)
        log_warn("switch-over guard: %s (the stop's pages will go again)", err.msg);
    c->retries++; /* the migration thread reads it after sw_guard_end */
    pthread_mutex_lock(&c->m->lock);
    c->m->stats.switchover_retries = c->retries;
    pthread_mutex_unlock(&c->m->lock);
    mig_set_state(c->m, MIG_ACTIVE);
    c->m->ops->resume(c->m->vm);
}

/* Stopped, and c->dirty holds the `count` pages the stop is to send: arm
 * the guard (its deadline counts from the stop) unless its retries are
 * spent. */
static void arm_guard(struct out_ctx *c, uint64_t count)
{
    c->guard_armed = false;
    c->stop_total = count;
    if (c->to_file || c->retries >= c->params.max_switchover_retries)
        return;
    if (!c->stop_set && !(c->stop_set = bitmap_new(c->npages)))
        return; /* no guard: the stop runs to its end */
    memcpy(c->stop_set, c->dirty, BITMAP_WORDS(c->npages) * sizeof(uint64_t));
    uint64_t allow = precopy_stop_allowance_ms(c->params.downtime_limit_ms);
    c->guard_armed = sw_guard_arm(&c->guard, c->stop_ms + allow) == 0;
}

/* Before the state goes: from here on the guard cannot fire. False when it
 * fired first (the switch-over is off; its give-back is waited for). A
 * disarmed guard's thread is joined when the migration ends, outside the
 * downtime: joining it here (its wake-up, on a busy host) cost the
 * downtime 0.1-1.1 ms. */
static bool commit_stop(struct out_ctx *c)
{
    if (!c->guard_armed)
        return true;
    c->guard_armed = false;
    if (sw_guard_disarm(&c->guard))
        return true;
    sw_guard_end(&c->guard);
    return false;
}

/* The guard gave the guest back: pre-copy goes on with the pages the stop
 * did not send (still set in c->dirty). 1, or -errno. */
static int stop_given_up(struct out_ctx *c, struct stream *rp, bool pong_due, uint64_t sent)
{
    c->stopped = false;
    out_refresh_params(c);
    log_info("switch-over given up after %llu ms with %llu of %llu pages sent (%u of %llu "
             "retries): the guest runs again",
             (unsigned long long)(mig_now_ms() - c->stop_ms), (unsigned long long)sent,
             (unsigned long long)c->stop_total, c->retries,
             (unsigned long long)c->params.max_switchover_retries);
    int r = pong_due ? wait_late_pong(c, rp, OUT_PING_DRAIN, HANDSHAKE_TIMEOUT_MS) : 0;
    return r < 0 ? r : 1;
}

/* The stopped send's cost, for a debug line: its /proc reads (~20 us each)
 * would fall in the downtime, so they are made at debug level only. */
struct send_trace {
    bool on;
    uint64_t t0, bytes0, run0, wait0, steal0;
};

static void send_trace_begin(const struct out_ctx *c, struct send_trace *t)
{
    t->on = gw_log_get_level() >= GW_LOG_DEBUG;
    t->t0 = mig_now_ns();
    t->bytes0 = c->s.bytes;
    if (t->on) {
        mig_thread_sched(&t->run0, &t->wait0);
        t->steal0 = mig_host_steal_ms();
    }
}

static void send_trace_end(const struct out_ctx *c, const struct send_trace *t, uint64_t sent,
                           uint64_t t_sync)
{
    if (!t->on)
        return;
    uint64_t t1 = mig_now_ns(), run1, wait1, steal1 = mig_host_steal_ms();
    mig_thread_sched(&run1, &wait1);
    uint64_t bytes = c->s.bytes - t->bytes0;
    log_debug("switch-over: last %llu pages sent (%llu MB) in %llu us after a %llu us sync "
              "(%.0f MB/s; %llu us on a CPU, %llu us waiting for one; the host took %llu ms "
              "of CPU time from this machine meanwhile)",
              (unsigned long long)sent, (unsigned long long)(bytes / 1000000),
              (unsigned long long)((t1 - t->t0) / 1000), (unsigned long long)((t->t0 - t_sync) / 1000),
              t1 > t->t0 ? (double)bytes * 1e3 / (double)(t1 - t->t0) : 0.0,
              (unsigned long long)((run1 - t->run0) / 1000),
              (unsigned long long)((wait1 - t->wait0) / 1000),
              (unsigned long long)(steal1 - t->steal0));
}

/* The destination has gone (its end closed, or reset): it never had COMMIT
 * and fails on its own; the guest must run on here. */
static int commit_lost(struct out_ctx *c, const char *what)
{
    char why[sizeof(c->s.errmsg)];
    snprintf(why, sizeof(why), "%s", what ? what : stream_error(&c->s));
    c->s.error = 0;
    return stream_set_error(&c->s, EPIPE, "the switch-over's commit did not reach the "
                            "destination (%s): the guest runs on here", why);
}

/* COMMIT, before the guest is given up here. A destination that closed its
 * end before it (a godwit destination never does while it waits for it)
 * has gone; one that resets the connection instead of taking it has gone
 * too (on TCP the write itself succeeds: the reset answers it). Only once
 * the destination's side has taken COMMIT (nothing of it left in our
 * queue) is the guest its; a wait that runs out (a silent link) leaves it
 * there too, since COMMIT may have arrived. */
static int send_commit(struct out_ctx *c)
{
    struct pollfd p = { c->fd, POLLRDHUP, 0 };
    if (poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return commit_lost(c, "it closed the connection");
    if (stream_write_record(&c->s, GWS_COMMIT, NULL, 0) < 0 || stream_flush(&c->s) < 0)
        return commit_lost(c, NULL);
    for (uint64_t end = mig_now_ms() + COMMIT_ACK_WAIT_MS; mig_now_ms() < end;) {
        int queued = 0, e = 0;
        socklen_t el = sizeof(e);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e)
            return commit_lost(c, strerror(e));
        if (ioctl(c->fd, SIOCOUTQ, &queued) < 0 || queued == 0)
            return 0;
        /* RP_RESUMED carries the acknowledgement: wake for it (or a reset). */
        struct pollfd w = { c->fd, POLLIN | POLLRDHUP, 0 };
        poll(&w, 1, 1);
    }
    return 0;
}


/* Stop, send the rest and the state, hand over. 0 when handed over, 1 when
 * pre-copy goes on (the stop no longer fitted after the drain, or the
 * switch-over guard gave the guest back), -errno. */
static int switchover_on(struct out_ctx *c, struct stream *rp)
{
    struct migration *m = c->m;
    struct gw_error err;
    gw_error_init(&err);
    bool pong_due = false;
    if (!c->stopped) {
        if (!c->to_file) {
            int r = drain(c, rp);
            if (r < 0)
                return r;
            pong_due = r == 0;
            if (!pong_due && !stop_still_fits(c))
                return 1;
        }
        if (out_stop_guest(c) < 0)
            return stream_get_error(&c->s);
    }
    mig_set_state(m, MIG_DEVICE);
    log_debug("switch-over: vCPUs stopped");
    out_refresh_params(c);
    uint64_t count = 0, sent = 0, t_sync = mig_now_ns();
    if (!c->to_file && out_sync_dirty(c, &count) < 0)
        return stream_get_error(&c->s);
    uint64_t t_synced = mig_now_ns();
    arm_guard(c, count);
    struct send_trace tr;
    send_trace_begin(c, &tr);
    bool cut;
    if (!c->to_file && send_dirty(c, &sent, &cut) < 0)
        return stream_get_error(&c->s);
    send_trace_end(c, &tr, sent, t_sync);
    uint64_t t_pages = mig_now_ns();
    if (!commit_stop(c))
        return stop_given_up(c, rp, pong_due, sent);
    if (m->ops->save_state(m->vm, &c->s, &err) < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    log_debug("switch-over: device state sent");
    if (stream_write_record(&c->s, GWS_END_OF_STREAM, NULL, 0) < 0 || stream_flush(&c->s) < 0)
        return stream_get_error(&c->s);
    uint64_t t_state = mig_now_ns();
    out_account(c, 0, 0);
    if (c->to_file) {
        if (fsync(c->fd) < 0 && errno != EINVAL)
            return stream_set_error(&c->s, errno, "fsync: %s", strerror(errno));
        /* A cancel that came during the state or the fsync (seconds on a
         * big guest) stands: the guest runs on, the status is cancelled. */
        if (!mig_take_commit(m))
            return stream_set_error(&c->s, ECANCELED, "cancelled");
        m->ops->completed(m->vm);
        return 0;
    }
    /* Socket: the destination says it loaded everything; from then on the
     * guest is its, so we never run it again; then tell it to start. A
     * late pong comes first. */
    int r = out_wait_loaded(c, rp, pong_due ? OUT_PING_DRAIN : 0, HANDSHAKE_TIMEOUT_MS);
    uint64_t t_loaded = mig_now_ns();
    log_debug("switch-over: destination loaded (%s)", r == 0 ? "ok" : "failed");
    if (r == 0 && !mig_take_commit(m)) /* cancelled first: no COMMIT, the guest runs on here */
        return stream_set_error(&c->s, ECANCELED, "cancelled before the switch-over's commit");
    if (r == 0 && send_commit(c) < 0)
        return -1; /* the destination never gets it: the guest runs on here */
    if (r == 0) {
        m->ops->completed(m->vm);
        c->stopped = false; /* never resume from here on */
        if (out_wait_return(c, rp, GWS_RP_RESUMED, 5000) < 0) {
            log_warn("the destination did not confirm it resumed: %s", stream_error(&c->s));
        } else {
            uint64_t t_resumed = mig_now_ns();
            c->resumed_ms = t_resumed / 1000000; /* downtime ends here, not after our clean-up */
            out_publish_phases(c, t_synced, t_pages, t_state, t_loaded, t_resumed);
        }
        c->s.error = 0; /* the guest is handed over: a late failure is only a warning */
    }
    return r;
}

static int switchover(struct out_ctx *c)
{
    struct stream rp; /* the return path (sockets) */
    stream_init(&rp, &stream_fd_ops, (void *)(intptr_t)c->fd);
    int r = switchover_on(c, &rp);
    stream_fini(&rp);
    return r;
}

static int open_target(struct out_ctx *c)
{
    struct migration *m = c->m;
    struct gw_error err;
    gw_error_init(&err);
    int fd = mig_uri_connect(&m->uri, &m->cancel, &err);
    if (fd < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    c->fd = fd;
    mig_socket_deadline(fd, MIG_PRECOPY_LIVENESS_MS);
    pthread_mutex_lock(&m->lock);
    m->fd = fd;
    bool cancelled = m->cancel; /* before the fd was there to shut down */
    pthread_mutex_unlock(&m->lock);
    if (cancelled)
        return stream_set_error(&c->s, ECANCELED, "cancelled");
    c->to_file = m->uri.kind == MIG_URI_FILE;
    stream_init(&c->s, &stream_fd_ops, (void *)(intptr_t)fd);
    return 0;
}

/* Dirty logging on, the first sync, and c->dirty = the pages the first
 * pass reads (those holding data: never-written memfd holes are skipped).
 *
 * KVM's log starts "initially set" where it can (kvm_vm.c): all pages
 * count as dirty and none is write-protected. The first pass then protects
 * each chunk just before it reads it, as QEMU does, so the guest does not
 * fault on all its memory at once. On our PVM hosts every such fault takes
 * KVM's shadow-paging slow path: protecting everything here cost a busy
 * guest (512 MiB rewritten) its first ~0.5 s of progress.
 *
 * Only the pages the first pass will not read are protected here: the
 * holes, found by a scan before it. A hole written between that scan and
 * the protection was written before the protection, so a second scan,
 * after it, finds it as data; it is added to the pass.
 *
 * The hybrid first pass (skip_rewritten) reads the log while it runs and
 * needs it clean from the start: there everything is protected now.
 * Without "initially set" the start protects everything anyway. */
static int setup_dirty_log(struct out_ctx *c, uint64_t *data_pages)
{
    struct migration *m = c->m;
    struct gw_error err;
    gw_error_init(&err);
    if (dirty_log_start(m->dirty, &err) < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    uint64_t *scratch = bitmap_new(c->npages);
    if (!scratch)
        return stream_set_error(&c->s, ENOMEM, "out of memory");
    bool all_now = c->postcopy && c->caps.on[MIG_CAP_POSTCOPY_AFTER_PRECOPY]; /* see above */
    int r = all_now ? dirty_log_sync(m->dirty, scratch, &err) : dirty_log_fetch(m->dirty, scratch, &err);
    if (r == 0 && ram_scan_data_pages(m->ram, c->dirty, data_pages) < 0)
        r = -gw_error_set(&err, errno, "scanning guest memory: %s", strerror(errno));
    if (r == 0 && !all_now) {
        bitmap_zero(scratch, c->npages);
        bitmap_set_range(scratch, 0, c->npages);
        bitmap_andnot_from(scratch, c->dirty, 0, c->npages); /* the holes */
        r = dirty_log_protect(m->dirty, scratch, 0, c->npages, &err);
        bitmap_zero(scratch, c->npages);
        if (r == 0 && ram_scan_data_pages(m->ram, scratch, data_pages) < 0)
            r = -gw_error_set(&err, errno, "scanning guest memory: %s", strerror(errno));
        if (r == 0) {
            bitmap_or_at(c->dirty, 0, scratch, c->npages);
            *data_pages = bitmap_count(c->dirty, c->npages);
        }
    }
    bitmap_free(scratch);
    if (r < 0)
        return stream_set_error(&c->s, err.code ? err.code : -r, "dirty log: %s", err.msg);
    /* As QEMU counts it: the setup's sync is the first, so the count is
     * 1 during the first pass and 2 once it has ended (libvirt's
     * --postcopy-after-precopy and our daemon's policy wait for 2). */
    pthread_mutex_lock(&m->lock);
    m->stats.dirty_sync_count = 1;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static int run(struct out_ctx *c)
{
    struct migration *m = c->m;
    struct gw_error err;
    gw_error_init(&err);
    if (open_target(c) < 0)
        return -1;
    c->npages = m->ram->size / GWS_PAGE_SIZE;
    c->dirty = bitmap_new(c->npages);
    c->zsrc = malloc((size_t)GWS_MAX_BATCH * GWS_PAGE_SIZE);
    if (!c->dirty || !c->zsrc)
        return stream_set_error(&c->s, ENOMEM, "out of memory");
    if (out_zstd_init(c, &c->z) < 0)
        return stream_set_error(&c->s, ENOMEM, "out of memory");
    if (c->to_file) {
        /* Saving to a file: the guest is paused for the whole save. */
        if (out_stop_guest(c) < 0)
            return -1;
    }
    if (write_header(c) < 0)
        return -1;
    if (c->postcopy && pc_src_setup(c) < 0)
        return -1;
    /* After POSTCOPY_ADVISE: a destination from before CPU_MODEL takes any
     * record after the header but ADVISE to mean no post-copy is coming. */
    if (m->ops->describe && m->ops->describe(m->vm, &c->s, &err) < 0)
        return stream_get_error(&c->s) ? -1 : stream_set_error(&c->s, err.code, "%s", err.msg);
    uint64_t data_pages = 0;
    if (!c->to_file && setup_dirty_log(c, &data_pages) < 0)
        return -1;
    if (c->to_file && ram_scan_data_pages(m->ram, c->dirty, &data_pages) < 0)
        return stream_set_error(&c->s, errno, "scanning guest memory: %s", strerror(errno));
    pthread_mutex_lock(&m->lock);
    m->stats.total = m->ram->size;
    m->stats.skipped = c->npages - data_pages;
    m->stats.remaining = data_pages * GWS_PAGE_SIZE;
    m->stats.setup_ms = mig_now_ms() - m->stats.start_ms;
    pthread_mutex_unlock(&m->lock);
    c->first_pass = true;
    mig_set_state(m, MIG_ACTIVE);
    if (c->to_file) {
        uint64_t sent;
        bool cut;
        emit_pass(c, 1);
        if (send_dirty(c, &sent, &cut) < 0)
            return -1;
        return switchover(c);
    }
    for (;;) { /* again after a switch-over the guard gave up */
        if (precopy(c) < 0)
            return -1;
        if (c->postcopy && m->pc_start_req)
            return pc_src_run(c);
        int r = switchover(c);
        if (r <= 0)
            return r;
    }
}

void out_take_refusal(struct out_ctx *c, int wait_ms, int records, const char *prefix)
{
    struct stream rp;
    stream_init(&rp, &stream_fd_ops, (void *)(intptr_t)c->fd);
    for (int i = 0; i < records; i++) {
        struct pollfd p = { c->fd, POLLIN, 0 };
        struct stream_record rec;
        if ((rp.ipos == rp.ilen && poll(&p, 1, wait_ms) <= 0) || stream_read_record(&rp, &rec) < 0)
            break;
        if (rec.type == GWS_RP_FAILED) {
            c->s.error = 0; /* the reason, in place of its consequence */
            stream_set_error(&c->s, EPROTO, "%s%.*s", prefix, (int)rec.length,
                             (const char *)rec.body);
            break;
        }
    }
    stream_fini(&rp);
}

/* The run failed: if the destination said why first (RP_FAILED, maybe
 * behind a pong), that is the reason to report, not the broken pipe its
 * exit caused here. */
static void take_peer_reason(struct out_ctx *c)
{
    if (c->to_file || c->fd < 0 || c->handed_over || stream_get_error(&c->s) == -ECANCELED)
        return;
    out_take_refusal(c, 200, 8, "destination failed: ");
}

void *mig_outgoing_thread(void *arg)
{
    struct migration *m = arg;
    struct out_ctx *c = calloc(1, sizeof(*c));
    pthread_setname_np(pthread_self(), "mig-out");
    if (!c) {
        mig_fail(m, "out of memory");
        return NULL;
    }
    c->m = m;
    c->fd = c->pfd = c->held_fd = c->held_pfd = -1;
    pthread_mutex_lock(&m->lock);
    c->params = m->params;
    c->caps = m->caps;
    pthread_mutex_unlock(&m->lock);
    c->postcopy = c->caps.on[MIG_CAP_POSTCOPY_RAM] && m->uri.kind != MIG_URI_FILE;
    ratelimit_init(&c->rl, c->params.max_bandwidth, mig_now_ns());
    pthread_mutex_init(&c->rl_lock, NULL);
    stream_init(&c->s, &stream_fd_ops, NULL);
    sw_guard_init(&c->guard, give_back, c);
    int r = run(c);
    if (sw_guard_end(&c->guard))
        c->stopped = false; /* an error after the guard gave the guest back */
    struct gw_error err;
    gw_error_init(&err);
    if (!c->to_file)
        dirty_log_stop(m->dirty, &err);
    if (m->ops->set_throttle)
        m->ops->set_throttle(m->vm, 0);
    pthread_mutex_lock(&m->lock);
    m->stats.throttle_pct = 0; /* what query-migrate says: the guest runs unthrottled */
    pthread_mutex_unlock(&m->lock);
    pc_src_cleanup(c);
    if (r < 0 || stream_get_error(&c->s)) {
        if (c->stopped && !c->handed_over)
            m->ops->resume(m->vm);
        take_peer_reason(c);
        mig_fail(m, "%s", stream_error(&c->s)[0] ? stream_error(&c->s) : "migration failed");
    } else {
        pthread_mutex_lock(&m->lock);
        uint64_t now = mig_now_ms();
        m->stats.total_ms = now - m->stats.start_ms;
        /* Post-copy set it when the destination resumed. The clean-up since
         * (dirty logging off: KVM rebuilds its memory slots, ~7 ms per GiB
         * on our hosts) runs while the guest already runs there. */
        if (!c->handed_over)
            m->stats.downtime_ms = (c->resumed_ms ? c->resumed_ms : now) - c->stop_ms;
        m->stats.remaining = 0;
        m->stats.transferred = c->bytes_before + c->s.bytes + c->pbytes_before + c->ps.bytes;
        pthread_mutex_unlock(&m->lock);
        mig_set_state(m, MIG_COMPLETED);
    }
    pthread_mutex_lock(&m->lock);
    m->fd = -1;
    pthread_mutex_unlock(&m->lock);
    if (c->fd >= 0)
        close(c->fd);
    stream_fini(&c->s);
    bitmap_free(c->dirty);
    bitmap_free(c->rewritten);
    bitmap_free(c->probe);
    bitmap_free(c->round_set);
    bitmap_free(c->stop_set);
    free(c->zsrc);
    out_zstd_fini(&c->z);
    pthread_mutex_destroy(&c->rl_lock);
    sw_guard_fini(&c->guard);
    free(c);
    return NULL;
}
