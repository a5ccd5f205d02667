/* The source side of post-copy: the switch (discard list while the guest
 * still runs, stop, late discards, state, hand-over), the page server that
 * answers the destination's faults on the preempt channel, the background
 * push of the remaining pages on the main channel, and pause/recovery when
 * a connection breaks.
 *
 * Every page the destination lacks is in c->pending; whoever sends a page
 * (page server or background push) clears its bit atomically first, so no
 * page crosses twice after the switch. */
#define LOG_PREFIX "postcopy-src"
#include <errno.h>
#include <sys/time.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "memory/bitmap.h"
#include "migration/outgoing_internal.h"
#include "migration/page_runs.h"
#include "migration/ram_scan.h"
#include "migration/recv_bitmap.h"
#include "migration/stream_records.h"

#define PC_LIVENESS_MS   4000   /* a silent peer breaks the channel after this */
#define PC_PREFETCH      15     /* pages after a fault sent along with it */
#define PC_DONE_WAIT_MS  100    /* poll step while waiting for the end */
#define PC_MAIN_BUFFER   (256 << 10) /* main channel send buffer after the switch */
#define PC_PREDISCARD_WAIT_MS 1000  /* guest running: wait this long for the pong */
#define PC_PREDISCARD_SLOW_NS 5000000 /* a pong slower than this: discard again */
#define PC_PREDISCARD_AGAIN   3     /* at most this many more times */
#define PC_HANDSHAKE_MS  30000  /* stopped: wait this long for the destination */
/* Pages the background push may have sent compressed ahead of what the
 * destination has taken of them (RP_INSTALLED). A fault on a page the push
 * has taken waits for everything before it on that channel; with
 * compression a few KiB of socket hold hundreds of MiB of pages, and such
 * a fault waited 35-58 ms. Raw pages need no window: the socket's bytes
 * bound them. A window of 256 pages: against 1024, fault p99 went from
 * 1.7-1.8 ms to 0.37-0.48 ms at the same guest progress (then with
 * records of 128 pages; one record in flight was no better than two). */
#define PC_PUSH_WINDOW   256
/* Pages per push record after the switch: a fault on one of them waits
 * for its record to arrive whole (and be checked and unpacked) before its
 * page goes in first. A guest that sweeps its memory faster than pages
 * arrive waits at the push's front for the next record, so the record's
 * size sets the typical fault's wait; each record also costs the pipeline
 * a little. Busy 1 GiB, compressed, at once, eight runs each interleaved
 * (median): 128 pages, fault p50 175 us, p99 750 us, 297 k pages/s;
 * 48 pages, 75 us, 527 us, 240 k pages/s; 40 pages in a window of 240,
 * 67 us and 216 k pages/s. Raw records over 1 Gbit/s: no difference. */
#define PC_PUSH_BATCH    48

static void set_fds(struct out_ctx *c)
{
    pthread_mutex_lock(&c->m->lock);
    c->m->fd = c->fd;
    c->m->pfd = c->pfd;
    pthread_mutex_unlock(&c->m->lock);
}

/* The main channel's waits after the switch end on a pause, so that
 * migrate-pause acts at once even when a write waits for a destination
 * that stopped reading (a unix socket has no timeout of its own). */
static bool main_stop(void *arg)
{
    const struct out_ctx *c = arg;
    return c->m->pc_pause_req || c->m->cancel;
}

static bool preempt_stop(void *arg)
{
    const struct out_ctx *c = arg;
    return c->server_stop || c->m->cancel;
}

static int open_preempt(struct out_ctx *c)
{
    struct gw_error err;
    gw_error_init(&err);
    int fd = mig_uri_connect(&c->m->uri, &c->m->cancel, &err);
    if (fd < 0)
        return stream_set_error(&c->s, err.code, "preempt channel: %s", err.msg);
    c->pfd = fd;
    mig_socket_liveness(fd, PC_LIVENESS_MS);
    stream_fini(&c->ps);
    stream_sock_init(&c->psock, fd, preempt_stop, c);
    stream_init(&c->ps, &stream_sock_ops, &c->psock);
    if (stream_write_preamble_flags(&c->ps, GWS_CHANNEL_PREEMPT) < 0 || stream_flush(&c->ps) < 0)
        return stream_set_error(&c->s, EIO, "preempt channel: %s", stream_error(&c->ps));
    set_fds(c);
    return 0;
}

/* MIGRATION_ID after ADVISE and after each POSTCOPY_RESUME: a destination
 * paused in another migration refuses the recovery. */
static int send_id(struct out_ctx *c)
{
    struct iovec iov = { &c->pc_id, sizeof(c->pc_id) };
    return stream_write_record(&c->s, GWS_MIGRATION_ID, &iov, 1);
}

int pc_src_setup(struct out_ctx *c)
{
    struct gws_postcopy_advise a = { 1, 0, c->npages ? c->npages : c->m->ram->size / GWS_PAGE_SIZE };
    struct iovec iov = { &a, sizeof(a) };
    if (getrandom(&c->pc_id, sizeof(c->pc_id), 0) != sizeof(c->pc_id))
        return stream_set_error(&c->s, errno ? errno : EIO, "no random migration id: %s",
                                strerror(errno));
    if (stream_write_record(&c->s, GWS_POSTCOPY_ADVISE, &iov, 1) < 0 || send_id(c) < 0 ||
        stream_flush(&c->s) < 0)
        return -1;
    mig_socket_liveness(c->fd, PC_LIVENESS_MS);
    return open_preempt(c);
}

/* ---- the switch ---- */

/* When the switch is decided the guest still runs: the source syncs the
 * dirty log, makes every dirty page pending and sends its discard runs
 * (the pre-discard) with a PING behind them, and waits (bounded)
 * for the pong, by which the destination has dropped those pages. Only then
 * does it stop the guest; in the downtime it discards just the pages dirtied
 * since that are not pending yet (the late discards), usually few, so the
 * destination's hole punching is no longer in the downtime. */

/* Times of the switch (mig_now_ns) and its page counts, for the debug log. */
struct switch_trace {
    uint64_t decided, acked, stopped, synced, discarded, sent, loaded, resumed;
    uint64_t early, late;       /* pages discarded before / after the stop */
    uint64_t early_runs, late_runs;
    bool acked_early;           /* the pong came before the stop */
};

/* Send DISCARD_PAGES for every page set in map; *nruns counts the runs. */
static int send_discards(struct out_ctx *c, const uint64_t *map, uint64_t *nruns)
{
    static const size_t max = GWS_MAX_DISCARD_RUNS;
    struct gws_page_run *runs = malloc(max * sizeof(*runs));
    if (!runs)
        return stream_set_error(&c->s, ENOMEM, "out of memory");
    uint64_t cursor = 0;
    size_t n;
    *nruns = 0;
    while ((n = page_runs_collect(c->m->ram, map, c->npages, &cursor, runs, max)) > 0) {
        struct gws_discard h = { (uint32_t)n, 0 };
        struct iovec iov[2] = { { &h, sizeof(h) }, { runs, n * sizeof(*runs) } };
        *nruns += n;
        if (stream_write_record(&c->s, GWS_DISCARD_PAGES, iov, 2) < 0)
            break;
    }
    free(runs);
    return stream_get_error(&c->s);
}

/* The guest still runs: everything dirty so far becomes pending, and the
 * destination drops its copies now. Returns 1 if it confirmed in time, 0 if
 * not yet (its pong then comes before RP_LOADED), -errno. */
static int prediscard(struct out_ctx *c, struct stream *rp, struct switch_trace *t)
{
    if (out_flush_pages(c) < 0 || out_flush_zero(c) < 0 || out_sync_dirty(c, &t->early) < 0)
        return -1;
    /* What is left of the round plus what was dirtied since: the
     * destination's copy of these is missing or stale. */
    c->pending = c->dirty;
    c->dirty = bitmap_new(c->npages); /* what the guest dirties from here on */
    if (!c->dirty)
        return stream_set_error(&c->s, ENOMEM, "out of memory");
    c->first_pass = false; /* from now on a zero page is sent as such */
    if (send_discards(c, c->pending, &t->early_runs) < 0 || out_send_ping(c, OUT_PING_PREDISCARD) < 0)
        return -1;
    uint64_t t0 = mig_now_ns();
    int r = out_wait_pong(c, rp, OUT_PING_PREDISCARD, PC_PREDISCARD_WAIT_MS);
    t->acked = mig_now_ns();
    /* A slow pong (pages queued ahead of the PING: 165 ms with compressed
     * ones) gives the guest time to dirty many more pages, whose discard
     * would then fall in the downtime (48 thousand pages, 22 ms). Discard
     * those too while it still runs; the next pong comes quickly. */
    for (int k = 0; r > 0 && k < PC_PREDISCARD_AGAIN && t->acked - t0 > PC_PREDISCARD_SLOW_NS; k++) {
        uint64_t dirty, runs;
        if (out_sync_dirty(c, &dirty) < 0)
            return -1;
        uint64_t fresh = page_runs_take_new(c->pending, c->dirty, c->npages);
        t->early += fresh;
        if (fresh && send_discards(c, c->dirty, &runs) < 0)
            return -1;
        t->early_runs += fresh ? runs : 0;
        if (out_send_ping(c, OUT_PING_PREDISCARD) < 0)
            return -1;
        t0 = mig_now_ns();
        r = out_wait_pong(c, rp, OUT_PING_PREDISCARD, PC_PREDISCARD_WAIT_MS);
        t->acked = mig_now_ns();
    }
    return r;
}

static int stop_guest(struct out_ctx *c)
{
    out_wait_for_drain(c);
    return out_stop_guest(c);
}

/* Stopped: discard what was dirtied since the pre-discard and is not
 * pending yet, then send the state and POSTCOPY_RUN. */
static int send_rest(struct out_ctx *c, struct switch_trace *t)
{
    struct migration *m = c->m;
    struct gw_error err;
    gw_error_init(&err);
    uint64_t dirtied;
    if (out_flush_pages(c) < 0 || out_flush_zero(c) < 0 || out_sync_dirty(c, &dirtied) < 0)
        return -1;
    t->synced = mig_now_ns();
    t->late = page_runs_take_new(c->pending, c->dirty, c->npages);
    if (t->late && send_discards(c, c->dirty, &t->late_runs) < 0)
        return -1;
    t->discarded = mig_now_ns();
    bitmap_free(c->dirty);
    c->dirty = NULL;
    log_info("switching to post-copy: %llu pages still on the source (%llu discarded stopped)",
             (unsigned long long)bitmap_count(c->pending, c->npages), (unsigned long long)t->late);
    if (m->ops->save_state(m->vm, &c->s, &err) < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    if (stream_write_record(&c->s, GWS_POSTCOPY_RUN, NULL, 0) < 0 || stream_flush(&c->s) < 0)
        return -1;
    t->sent = mig_now_ns();
    return 0;
}

/* The LOADED/COMMIT handshake, as in pre-copy: until the destination has
 * loaded the state, the source can still run the guest. */
static int hand_over(struct out_ctx *c, struct stream *rp, struct switch_trace *t)
{
    struct migration *m = c->m;
    int r = out_wait_loaded(c, rp, t->acked_early ? 0 : OUT_PING_PREDISCARD, PC_HANDSHAKE_MS);
    t->loaded = mig_now_ns();
    if (r < 0)
        return -1;
    if (!mig_take_commit(m)) /* cancelled first: no COMMIT, the guest runs on here */
        return stream_set_error(&c->s, ECANCELED, "cancelled before the switch-over's commit");
    m->ops->completed(m->vm);
    c->handed_over = true;
    pthread_mutex_lock(&m->lock);
    m->stats.postcopy_started = true; /* from the COMMIT on the guest is the destination's */
    pthread_mutex_unlock(&m->lock);
    stream_write_record(&c->s, GWS_COMMIT, NULL, 0);
    stream_flush(&c->s);
    r = out_wait_return(c, rp, GWS_RP_RESUMED, 5000);
    t->resumed = mig_now_ns();
    return r;
}

static void log_trace(const struct switch_trace *t)
{
#define US(a, b) (unsigned long long)((t->b - t->a) / 1000)
    log_debug("switch: pre-discard %llu pages in %llu runs, %s after %llu us; "
              "stopped after %llu us; sync %llu us; late discard %llu pages in %llu runs, "
              "state, run %llu us; loaded %llu us; resumed %llu us; downtime %llu us",
              (unsigned long long)t->early, (unsigned long long)t->early_runs,
              t->acked_early ? "acknowledged" : "not acknowledged", US(decided, acked),
              US(acked, stopped), US(stopped, synced), (unsigned long long)t->late,
              (unsigned long long)t->late_runs, US(synced, sent), US(sent, loaded),
              US(loaded, resumed), US(stopped, resumed));
#undef US
}

/* A page the background push has already taken is not sent again when a
 * fault asks for it: the fault waits for it on the main channel. Keep that
 * channel's backlog short so the wait stays short. */
static void shrink_backlog(int fd)
{
    int sz = PC_MAIN_BUFFER;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
}

static int start_server(struct out_ctx *c);
static void stop_server(struct out_ctx *c);

/* Pre-discard, stop, send the late discards and the state, hand over. */
static int pc_switch(struct out_ctx *c)
{
    struct migration *m = c->m;
    struct switch_trace t = { .decided = mig_now_ns() };
    struct stream rp;
    stream_init(&rp, &stream_fd_ops, (void *)(intptr_t)c->fd);
    int r = prediscard(c, &rp, &t);
    t.acked_early = r > 0;
    /* The page server runs from the state on: loading it may touch pages
     * the destination does not have (go_live there). */
    if (r >= 0 && stop_guest(c) == 0) {
        t.stopped = c->stop_ns;
        if (send_rest(c, &t) == 0 && start_server(c) == 0)
            r = hand_over(c, &rp, &t);
    }
    stream_fini(&rp);
    if (!c->handed_over) {
        stop_server(c);
        return -1;
    }
    if (r < 0) /* the guest is the destination's: recover, never resume */
        log_warn("after the hand-over: %s", stream_error(&c->s));
    else
        out_publish_phases(c, t.synced, t.discarded, t.sent, t.loaded, t.resumed);
    log_trace(&t);
    pthread_mutex_lock(&m->lock);
    m->stats.downtime_ms = (r == 0 ? t.resumed / 1000000 : mig_now_ms()) - c->stop_ms;
    m->stats.remaining = bitmap_count(c->pending, c->npages) * GWS_PAGE_SIZE;
    pthread_mutex_unlock(&m->lock);
    c->pc_bytes0 = c->bytes_before + c->s.bytes;
    shrink_backlog(c->fd);
    mig_set_state(m, MIG_POSTCOPY_ACTIVE);
    return 0;
}

/* ---- page server (its own thread, preempt channel) ---- */

struct reply {
    uint64_t idx[GWS_MAX_BATCH];     /* pages to send, read when sent */
    uint64_t pfn[GWS_MAX_BATCH], zpfn[GWS_MAX_BATCH];
    uint8_t *buf;                     /* GWS_MAX_BATCH pages */
    unsigned n;
    struct out_zstd z;                /* compress-zstd: this thread's own */
};

static void reply_add(struct reply *r, uint64_t idx) { r->idx[r->n++] = idx; }

/* Read the queued pages (not through our mapping: guest_ram_read_pages),
 * send the non-zero ones as PAGE_DATA and the rest as ZERO_PAGES. */
static int reply_send(struct out_ctx *c, struct reply *r)
{
    struct stream *s = &c->ps;
    struct gw_error err;
    gw_error_init(&err);
    unsigned n = r->n, k = 0, nz = 0;
    r->n = 0;
    int rc = guest_ram_read_pages(c->m->ram, r->idx, n, r->buf, &err);
    if (rc < 0)
        return stream_set_error(s, -rc, "%s", err.msg);
    for (unsigned i = 0; i < n; i++) {
        uint8_t *p = r->buf + (size_t)i * GWS_PAGE_SIZE;
        uint64_t pfn = ram_page_to_pfn(c->m->ram, r->idx[i]);
        if (stream_page_is_zero(p)) {
            r->zpfn[nz++] = pfn;
            continue;
        }
        if (k != i)
            memcpy(r->buf + (size_t)k * GWS_PAGE_SIZE, p, GWS_PAGE_SIZE);
        r->pfn[k++] = pfn;
    }
    if (k)
        out_write_data(c, s, &r->z, r->pfn, r->buf, k);
    if (nz) {
        struct gws_pages h = { nz, 0 };
        struct iovec parts[2] = { { &h, sizeof(h) }, { r->zpfn, nz * 8ULL } };
        stream_write_record(s, GWS_ZERO_PAGES, parts, 2);
    }
    return stream_flush(s);
}

static int serve_request(struct out_ctx *c, const struct stream_record *rec, struct reply *r)
{
    struct gws_pages h;
    if (rec->length < sizeof(h))
        return stream_set_error(&c->ps, EPROTO, "RP_REQ_PAGES too short");
    memcpy(&h, rec->body, sizeof(h));
    if (h.count == 0 || h.count > GWS_MAX_BATCH || h.zlen ||
        rec->length != sizeof(h) + h.count * 8ULL)
        return stream_set_error(&c->ps, EPROTO, "RP_REQ_PAGES malformed");
    uint64_t last = UINT64_MAX;
    for (uint32_t i = 0; i < h.count; i++) {
        uint64_t pfn, idx;
        memcpy(&pfn, rec->body + sizeof(h) + i * 8ULL, 8);
        if (!ram_pfn_to_page(c->m->ram, pfn, &idx))
            return stream_set_error(&c->ps, EPROTO, "request for frame 0x%llx, not RAM",
                                    (unsigned long long)pfn);
        if (bitmap_test_and_clear_atomic(c->pending, idx))
            reply_add(r, idx);
        last = idx;
    }
    /* The faulted pages first, in their own record, whatever the limit (as
     * QEMU's urgent pages); then their neighbours, only while the channels
     * together stay within max-postcopy-bandwidth. What goes here counts
     * against the limit, so the background push slows down for it. */
    uint64_t b0 = c->ps.queued;
    if (r->n && reply_send(c, r) < 0)
        return -1;
    bool room = out_rate_account(c, c->ps.queued - b0) == 0;
    for (uint64_t j = last + 1; room && last != UINT64_MAX && j < c->npages &&
                                j <= last + PC_PREFETCH; j++)
        if (bitmap_test_and_clear_atomic(c->pending, j))
            reply_add(r, j);
    b0 = c->ps.queued;
    if (r->n && reply_send(c, r) < 0)
        return -1;
    out_rate_account(c, c->ps.queued - b0);
    /* The background push goes on just past what went here: past the
     * neighbours when they went, else right after the fault. (Always
     * skipping the neighbours left them behind when the limit held the
     * prefetch back, and a guest walking its memory then faulted on every
     * page: 22 thousand requests, 48 of them for pages already sent.) */
    if (last != UINT64_MAX)
        c->hint = (room ? last + PC_PREFETCH : last) + 2; /* +1: 0 means "no hint" */
    pthread_mutex_lock(&c->m->lock);
    c->m->stats.postcopy_requests += h.count;
    pthread_mutex_unlock(&c->m->lock);
    return 0;
}

static void *page_server(void *arg)
{
    struct out_ctx *c = arg;
    struct reply *r = calloc(1, sizeof(*r));
    if (r && (!(r->buf = malloc((size_t)GWS_MAX_BATCH * GWS_PAGE_SIZE)) ||
              out_zstd_init(c, &r->z) < 0)) {
        free(r->buf);
        free(r);
        r = NULL;
    }
    pthread_setname_np(pthread_self(), "mig-pc-server");
    mig_thread_priority_high();
    int err = r ? 0 : -ENOMEM;
    while (!err && !c->server_stop) {
        struct stream_record rec;
        int rc = stream_read_record(&c->ps, &rec);
        if (rc == -ENODATA)
            rc = stream_set_error(&c->ps, EPIPE, "the destination closed the preempt channel");
        else if (rc == 0 && rec.type == GWS_RP_REQ_PAGES)
            rc = serve_request(c, &rec, r);
        else if (rc == 0)
            rc = stream_set_error(&c->ps, EPROTO, "unexpected %s on the preempt channel",
                                  stream_record_name(rec.type));
        if (rc < 0)
            err = rc;
    }
    if (r) {
        out_zstd_fini(&r->z);
        free(r->buf);
    }
    free(r);
    c->server_error = err ? err : -ECANCELED;
    return NULL;
}

static int start_server(struct out_ctx *c)
{
    c->server_stop = false;
    c->server_error = 0;
    if (pthread_create(&c->server, NULL, page_server, c) != 0)
        return stream_set_error(&c->s, EAGAIN, "cannot start the page server thread");
    c->server_running = true;
    return 0;
}

/* The server's waits end within STREAM_SOCK_STEP_MS (preempt_stop): no
 * shutdown(), whose end of stream would reach the destination before a
 * POSTCOPY_PAUSE could go on this channel (park_channels). */
static void stop_server(struct out_ctx *c)
{
    if (!c->server_running)
        return;
    c->server_stop = true;
    pthread_join(c->server, NULL);
    c->server_running = false;
}

/* ---- background push (main channel) ---- */

static void account_pc(struct out_ctx *c)
{
    struct migration *m = c->m;
    uint64_t left = bitmap_count(c->pending, c->npages);
    pthread_mutex_lock(&m->lock);
    m->stats.postcopy_bytes = c->bytes_before + c->s.bytes - c->pc_bytes0 + c->pbytes_before +
                              c->ps.bytes;
    m->stats.remaining = left * GWS_PAGE_SIZE;
    m->stats.transferred = c->bytes_before + c->s.bytes + c->pbytes_before + c->ps.bytes;
    pthread_mutex_unlock(&m->lock);
}

/* Why the loop must stop now: 0 to go on, -errno to break. */
static int interrupted(struct out_ctx *c)
{
    if (c->m->cancel)
        return stream_set_error(&c->s, ECANCELED, "the VMM is shutting down");
    if (c->m->pc_pause_req)
        return stream_set_error(&c->s, EINTR, "paused by migrate-pause");
    if (c->server_error)
        return stream_set_error(&c->s, -c->server_error, "preempt channel: %s",
                                stream_error(&c->ps));
    return stream_get_error(&c->s);
}

/* Read what the destination says on the main channel after the switch:
 * RP_INSTALLED (counted in c->acked) until RP_POSTCOPY_DONE (*done set, if
 * done is given). Waits up to wait_ms for the first record, then takes
 * only what has come. Returns 0 or -errno. */
static int read_rp(struct out_ctx *c, int wait_ms, bool *done)
{
    for (;;) {
        if (c->pc_rp.ipos == c->pc_rp.ilen) {
            struct pollfd p = { c->fd, POLLIN, 0 };
            int r = poll(&p, 1, wait_ms);
            if (r < 0 && errno != EINTR)
                return stream_set_error(&c->s, errno, "poll: %s", strerror(errno));
            if (r <= 0)
                return 0;
        }
        struct stream_record rec;
        int got = out_read_return(c, &c->pc_rp, 0, &rec);
        if (got < 0)
            return -1;
        if (got == 1) {
            wait_ms = 0;
            continue;
        }
        if (rec.type == GWS_RP_INSTALLED && rec.length == 8) {
            uint64_t v;
            memcpy(&v, rec.body, 8);
            if (v > c->pushed)
                return stream_set_error(&c->s, EPROTO, "the destination took %llu pages of %llu sent",
                                        (unsigned long long)v, (unsigned long long)c->pushed);
            c->acked = v;
        } else if (rec.type == GWS_RP_POSTCOPY_DONE && done) {
            *done = true;
            return 0;
        } else {
            return stream_set_error(&c->s, EPROTO, "unexpected %s on the return path",
                                    stream_record_name(rec.type));
        }
        wait_ms = 0;
    }
}

/* Keep the push within PC_PUSH_WINDOW pages of the destination. */
static int wait_window(struct out_ctx *c)
{
    if (c->pushed - c->acked < PC_PUSH_WINDOW)
        return 0;
    if (out_flush_pages(c) < 0 || out_flush_zero(c) < 0 || stream_flush(&c->s) < 0)
        return -1;
    while (c->pushed - c->acked >= PC_PUSH_WINDOW)
        if (interrupted(c) < 0 || read_rp(c, PC_DONE_WAIT_MS, NULL) < 0)
            return -1;
    return 0;
}

static int push_pending(struct out_ctx *c)
{
    uint64_t n = 0;
    for (;;) {
        uint64_t h = c->hint;
        if (h) {
            c->hint = 0;
            c->cursor = h - 1;
        }
        uint64_t i = bitmap_next_set(c->pending, c->npages, c->cursor);
        if (i >= c->npages)
            i = bitmap_next_set(c->pending, c->npages, 0);
        if (i >= c->npages)
            break;
        if (wait_window(c) < 0)
            return -1;
        c->cursor = i + 1;
        if (!bitmap_test_and_clear_atomic(c->pending, i))
            continue; /* the page server took it meanwhile */
        if (out_queue_page(c, i) < 0 || (c->n >= PC_PUSH_BATCH && out_flush_pages(c) < 0))
            return -1;
        if ((++n & 63) == 0) {
            /* Taken pages must not wait in a half-full batch: a fault may
             * be waiting for one (zero pages gather slowly). */
            if (interrupted(c) < 0 || out_flush_zero(c) < 0 || read_rp(c, 0, NULL) < 0)
                return -1;
            if ((n & 4095) == 0) {
                out_refresh_params(c);
                account_pc(c);
            }
        }
    }
    if (out_flush_pages(c) < 0 || out_flush_zero(c) < 0)
        return -1;
    account_pc(c);
    return 0;
}

/* Everything is sent: end the stream and wait until the destination has
 * installed every page (the page server may still be answering). */
static int wait_done(struct out_ctx *c)
{
    if (stream_write_record(&c->s, GWS_END_OF_STREAM, NULL, 0) < 0 || stream_flush(&c->s) < 0)
        return -1;
    bool done = false;
    for (int grace = 0;;) {
        if (read_rp(c, PC_DONE_WAIT_MS, &done) < 0)
            return -1;
        if (done)
            return 0;
        /* A destination that has every page closes the preempt channel
         * right after sending DONE on the main one: allow for the race. */
        if (c->server_error && !c->m->pc_pause_req && !c->m->cancel && grace++ < 10)
            continue;
        if (interrupted(c) < 0)
            return -1;
    }
}

/* ---- pause and recovery ---- */

/* How long a pause waits for room for its POSTCOPY_PAUSE behind what is
 * queued on the main channel (the link may be dead). */
#define PC_PAUSE_SEND_MS 2000

struct pause_wait {
    uint64_t until_ms;
    const struct migration *m;
};

static bool pause_wait_over(void *arg)
{
    const struct pause_wait *w = arg;
    return w->m->cancel || mig_now_ms() >= w->until_ms;
}

/* POSTCOPY_PAUSE on fd, waiting at most wait_ms for room: true when all
 * of it went. */
static bool send_pause(struct out_ctx *c, int fd, unsigned wait_ms)
{
    struct pause_wait w = { mig_now_ms() + wait_ms, c->m };
    struct stream_sock k;
    stream_sock_init(&k, fd, pause_wait_over, &w);
    struct stream note;
    stream_init(&note, &stream_sock_ops, &k);
    bool told = stream_write_record(&note, GWS_POSTCOPY_PAUSE, NULL, 0) == 0 &&
                stream_flush(&note) == 0;
    stream_fini(&note);
    return told;
}

static bool is_unix_socket(int fd)
{
    int domain = 0;
    socklen_t len = sizeof(domain);
    return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
}

static void close_held(struct out_ctx *c)
{
    if (c->held_fd >= 0)
        close(c->held_fd);
    if (c->held_pfd >= 0)
        close(c->held_pfd);
    c->held_fd = c->held_pfd = -1;
}

/* Break both channels, first telling the destination that this is a
 * pause: an end of stream on the main channel without one means that the
 * source exited, and the destination would give the guest up while this
 * side holds every page it lacks.
 * - The preempt channel gets POSTCOPY_PAUSE at once if there is room (the
 *   destination then breaks its main channel itself, whatever is queued
 *   there), unless a write on it was cut inside a record.
 * - The main channel gets it behind its backlog (PC_PAUSE_SEND_MS), unless
 *   a pause cut a write there inside a record. Not said there: on TCP the
 *   connection is reset, which reads as a break; a unix socket cannot be
 *   reset, and closing it would read as an exit once the destination read
 *   on past the backlog, so its main channel is kept open (held_fd) until
 *   a recovery connects (the destination is paused then) or the migration
 *   ends. Such a destination pauses when told on the preempt channel, or
 *   by its own migrate-pause. */
static void park_channels(struct out_ctx *c)
{
    /* Forgotten before they are closed: nothing shuts down a reused number. */
    pthread_mutex_lock(&c->m->lock);
    c->m->fd = c->m->pfd = -1;
    pthread_mutex_unlock(&c->m->lock);
    if (!c->m->cancel) { /* shutting down: no pause, an exit */
        bool told_preempt = c->pfd >= 0 && !c->psock.cut && send_pause(c, c->pfd, 0);
        bool told = c->fd >= 0 && !c->msock.cut && send_pause(c, c->fd, PC_PAUSE_SEND_MS);
        /* Held only for a migrate-pause: a connection that broke by
         * itself (the destination gone, or reset) has nobody to mislead. */
        if (c->fd >= 0 && !told && c->m->pc_pause_req && is_unix_socket(c->fd)) {
            log_info("post-copy pause: the pause could not be sent on the main channel%s; both "
                     "are kept open until a recovery connects", told_preempt ?
                     " (it was on the preempt channel)" : " nor on the preempt channel");
            /* The preempt channel too: closed, a destination whose request
             * met the closed end could stop reading it before the pause. */
            close_held(c);
            c->held_fd = c->fd;
            c->held_pfd = c->pfd;
            c->fd = c->pfd = -1;
        } else if (c->fd >= 0 && !told) {
            struct linger l = { 1, 0 };
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
            log_info("post-copy pause: the pause could not be sent on the main channel%s; it is "
                     "reset", told_preempt ? " (it was on the preempt channel)" : "");
            close(c->fd); /* no shutdown first: its FIN would queue behind the backlog */
            c->fd = -1;
        }
    }
    if (c->fd >= 0) {
        shutdown(c->fd, SHUT_RDWR);
        close(c->fd);
    }
    if (c->pfd >= 0) {
        shutdown(c->pfd, SHUT_RDWR);
        close(c->pfd);
    }
    c->bytes_before += c->s.bytes;
    c->pbytes_before += c->ps.bytes;
    c->ps.bytes = 0; /* counted: a failed reconnect parks again before a new one */
    c->fd = c->pfd = -1;
    set_fds(c);
}

/* One record of the destination's answer to a resume (bounded wait). */
static int read_answer(struct out_ctx *c, struct stream_record *rec)
{
    struct pollfd p = { c->fd, POLLIN, 0 };
    if (c->s.ipos == c->s.ilen && poll(&p, 1, 10000) <= 0)
        return stream_set_error(&c->s, ETIMEDOUT, "no page list from the destination");
    int r = stream_read_record(&c->s, rec);
    if (r == -ENODATA)
        return stream_set_error(&c->s, EPIPE, "the destination closed the connection");
    return r;
}

/* The destination's answer to a resume: the pages it still lacks (one
 * record, or parts), which replace ours: pages lost in flight come back
 * here. 0: the list is in; 1: it had every page (RP_POSTCOPY_DONE). */
static int read_list(struct out_ctx *c, uint64_t *list)
{
    struct recv_bitmap_reader rd;
    recv_bitmap_reader_init(&rd, c->npages);
    for (int r = 0;;) {
        struct stream_record rec;
        const char *why = NULL;
        if (read_answer(c, &rec) < 0)
            return -1;
        if (rec.type == GWS_RP_FAILED)
            return stream_set_error(&c->s, EPROTO, "destination: %.*s", (int)rec.length,
                                    rec.body);
        if (rec.type == GWS_RP_POSTCOPY_DONE && rec.length == 0 && !rd.next_word)
            return 1; /* it completed; only its DONE was lost with the connection */
        if (rec.type & GWS_OPTIONAL)
            continue; /* INFO, or one this side does not know */
        if ((r = recv_bitmap_take(&rd, list, rec.type, rec.body, rec.length, &why)) < 0)
            return stream_set_error(&c->s, EPROTO, "the destination's answer to the resume: %s "
                                    "(%s)", why, stream_record_name(rec.type));
        if (r == 1)
            return 0;
    }
}

static int read_recv_bitmap(struct out_ctx *c)
{
    uint64_t *list = bitmap_new(c->npages); /* ours stays whole until theirs is */
    if (!list)
        return stream_set_error(&c->s, ENOMEM, "out of memory for the page list");
    int r = read_list(c, list);
    if (r >= 0)
        memcpy(c->pending, list, BITMAP_WORDS(c->npages) * 8);
    bitmap_free(list);
    if (r == 1)
        log_info("recovery: the destination already has every page");
    else if (r == 0)
        log_info("recovery: the destination still needs %llu pages",
                 (unsigned long long)bitmap_count(c->pending, c->npages));
    return r;
}

/* 0: resumed, the page list is in; 1: the destination had completed;
 * -1: failed (the stream's error says why). */
static int reconnect(struct out_ctx *c)
{
    struct migration *m = c->m;
    struct gw_error err;
    gw_error_init(&err);
    pthread_mutex_lock(&m->lock);
    m->uri = m->pc_recover_uri;
    pthread_mutex_unlock(&m->lock);
    stream_fini(&c->s);
    stream_init(&c->s, &stream_fd_ops, NULL);
    int fd = mig_uri_connect(&m->uri, &m->cancel, &err);
    if (fd < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    /* Someone listens for the recovery: the destination is paused, its
     * end of the old channels closed. */
    close_held(c);
    c->fd = fd;
    set_fds(c);
    stream_fini(&c->s);
    stream_sock_init(&c->msock, fd, main_stop, c);
    stream_init(&c->s, &stream_sock_ops, &c->msock);
    mig_socket_liveness(fd, PC_LIVENESS_MS);
    shrink_backlog(fd);
    if (stream_write_preamble(&c->s) < 0 ||
        stream_write_record(&c->s, GWS_POSTCOPY_RESUME, NULL, 0) < 0 || send_id(c) < 0 ||
        stream_flush(&c->s) < 0)
        return -1;
    if (open_preempt(c) < 0) {
        /* A destination that refused the recovery said why on the main
         * channel, and closed its listener. */
        out_take_refusal(c, 1000, 1, "destination: ");
        return -1;
    }
    c->n = c->nzero = 0; /* a batch cut off by the break: the page list has it */
    c->cursor = 0;
    return read_recv_bitmap(c);
}

int pc_src_run(struct out_ctx *c)
{
    if (pc_switch(c) < 0)
        return -1;
    /* The guest now waits on the push as on the page server (whose
     * priority it gets): on a shared host a push at the usual priority
     * starved behind the destination's raised receiver (fault p50
     * 231-511 us against 71-119 us with both raised). */
    mig_thread_priority_high();
    stream_sock_init(&c->msock, c->fd, main_stop, c);
    stream_set_io(&c->s, &stream_sock_ops, &c->msock);
    for (;;) {
        out_refresh_params(c); /* max-postcopy-bandwidth from now on */
        /* This connection's return path; the counts start again with it. */
        stream_fini(&c->pc_rp);
        stream_init(&c->pc_rp, &stream_fd_ops, (void *)(intptr_t)c->fd);
        c->pushed = c->acked = 0;
        int r = c->server_running ? 0 : start_server(c);
        if (r == 0)
            r = push_pending(c);
        if (r == 0)
            r = wait_done(c);
        stop_server(c);
        if (r == 0) {
            account_pc(c);
            return 0;
        }
        char why[300];
        if (c->m->pc_pause_req && !c->m->cancel)
            snprintf(why, sizeof(why), "paused by migrate-pause");
        else
            snprintf(why, sizeof(why), "%s", stream_error(&c->s));
        park_channels(c);
        do {
            if (mig_pc_wait_recovery(c->m, why) < 0)
                return -1; /* shutting down: the guest stays with the destination */
            r = reconnect(c);
            snprintf(why, sizeof(why), "recovery failed: %s", stream_error(&c->s));
            if (r < 0)
                park_channels(c);
        } while (r < 0);
        mig_set_state(c->m, MIG_POSTCOPY_ACTIVE);
        if (r == 1) { /* nothing was left to do */
            account_pc(c);
            return 0;
        }
    }
}

void pc_src_cleanup(struct out_ctx *c)
{
    stop_server(c);
    close_held(c);
    pthread_mutex_lock(&c->m->lock);
    c->m->pfd = -1; /* forgotten before it is closed */
    pthread_mutex_unlock(&c->m->lock);
    if (c->pfd >= 0)
        close(c->pfd);
    c->pfd = -1;
    stream_fini(&c->ps);
    stream_fini(&c->pc_rp);
    bitmap_free(c->pending);
    c->pending = NULL;
}
