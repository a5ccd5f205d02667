/* The destination side of post-copy: the advice (accept the preempt
 * channel), the discard list (a ping behind it is answered once it is
 * applied), the start of the guest with pages missing, the fault thread
 * (userfaultfd faults become requests on the preempt channel; the answers
 * are installed there), the background pages on the main channel,
 * statistics (fault latency, blocked vCPU time), and pause and recovery
 * when a connection breaks.
 *
 * pending = pages this side lacks (set from DISCARD_PAGES). A fault on a
 * pending page is requested; a fault on any other page that is still a hole
 * is a page that is zero on the source too, and is zero-filled here. A
 * page's pending bit is cleared only after the page is installed.
 *
 * Where the kernel has minor faults on shmem, a pending page the memfd
 * holds (received before and dirtied since, or populated by
 * --mem-prealloc) is only dropped from the mapping, not from the memfd
 * (cached): touching it faults all the same, and its data is written into
 * the memory it has (pwrite) and then mapped (UFFDIO_CONTINUE). That keeps
 * memory prepared ahead useful in post-copy: a page allocated on arrival
 * (UFFDIO_COPY into a hole) costs this host's first touch, ~0.3 GB/s. */
#define LOG_PREFIX "postcopy-dst"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "memory/bitmap.h"
#include "memory/uffd.h"
#include "migration/incoming_internal.h"
#include "migration/page_runs.h"
#include "migration/recv_bitmap.h"
#include "migration/ram_scan.h"

#define PC_LIVENESS_MS  4000
#define PC_ACCEPT_MS    10000
#define PC_ID_WAIT_MS   3000    /* a resume names its migration in its first write */
#define PC_MAX_WAITERS  256
#define PC_MAIN_RCVBUF  (1 << 20)
#define PC_SLOW_FAULT_US 10000  /* slower faults are logged (debug) */

struct pc_waiter {
    uint64_t idx;
    uint64_t t0_ns;
    int vcpu;                   /* -1: not a vCPU thread */
};

struct pc_dst {
    struct in_ctx *c;
    int uffd;
    bool registered, guest_ran, lost;
    uint64_t *pending;
    uint64_t pending_count;     /* atomic */
    int pfd;
    struct stream ps;           /* preempt channel (fault thread) */
    pthread_t thread;
    bool thread_running;
    volatile bool stop;
    volatile bool local_break;  /* we broke the channels ourselves */
    volatile bool preempt_eof;  /* the source closed the preempt channel */
    volatile int error;
    bool loading;               /* go_live is loading the state (atomic) */
    bool eos, got_pause;
    bool have_id;               /* the source named the migration (MIGRATION_ID) */
    struct gws_migration_id id;
    /* under m->lock */
    struct pc_waiter w[PC_MAX_WAITERS];
    unsigned nw;
    uint64_t w_overflow;        /* faults not recorded: the table was full */
    uint64_t vcpu_since[MIG_MAX_VCPUS_STATS];
    unsigned nblocked;
    uint64_t all_since;
    /* discards since the last ping (or the start), for the debug log */
    struct { uint64_t ns, punch_ns, runs, punched, holes; } disc;
    /* Pages [0, populated) may be present though never received: the
     * preallocation (--mem-prealloc) ran there. Discarded ones are dropped
     * all the same, so that touching them faults. */
    uint64_t populated;
    /* minor faults in use; then cached = pending pages the memfd holds
     * (cleared by the one install that fills the page) */
    bool minor;
    uint64_t *cached;
};

bool pc_dst_guest_ran(const struct in_ctx *c) { return c->pc && c->pc->guest_ran; }

/* ---- advice, discards ---- */

/* (m->lock held) fd was just published for wake_locked: a cancel or
 * migrate-pause that came between the accept and now found nothing to
 * wake, so do what it would have done (the read that follows ends). */
static void shut_if_stopped_locked(struct migration *m, int fd)
{
    if (m->cancel || m->pc_pause_req)
        shutdown(fd, SHUT_RDWR);
}

/* Take the source's connection for a channel on lfd: within wait_ms, or
 * (wait_ms < 0) until migrate-pause or the end of the migration. */
static int accept_channel(struct in_ctx *c, int lfd, uint32_t want_flags, int wait_ms, int *out)
{
    struct migration *m = c->m;
    const char *what = want_flags ? "preempt" : "main";
    for (int waited = 0;; waited += 1000) {
        struct pollfd p = { lfd, POLLIN, 0 };
        int r = poll(&p, 1, 1000);
        if (m->cancel || m->pc_pause_req)
            return stream_set_error(&c->s, ECANCELED, "%s before the source opened its %s "
                                    "channel", m->cancel ? "stopped" : "paused", what);
        if (r > 0)
            break;
        if (r < 0 && errno != EINTR)
            return stream_set_error(&c->s, errno, "poll: %s", strerror(errno));
        if (wait_ms >= 0 && waited + 1000 >= wait_ms)
            return stream_set_error(&c->s, ETIMEDOUT, "the source did not open its %s channel",
                                    what);
    }
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return stream_set_error(&c->s, errno, "accept: %s", strerror(errno));
    mig_socket_liveness(fd, PC_LIVENESS_MS);
    *out = fd;
    return 0;
}

static int open_preempt(struct in_ctx *c, int lfd)
{
    struct pc_dst *pc = c->pc;
    int fd;
    if (accept_channel(c, lfd, GWS_CHANNEL_PREEMPT, PC_ACCEPT_MS, &fd) < 0)
        return -1;
    /* Published before its preamble is read: a connection that never sends
     * one must not keep a cancel or migrate-pause waiting (wake_locked).
     * Every close of pc->pfd forgets it here first. */
    pthread_mutex_lock(&c->m->lock);
    pc->pfd = c->m->pfd = fd;
    shut_if_stopped_locked(c->m, fd);
    pthread_mutex_unlock(&c->m->lock);
    stream_fini(&pc->ps);
    stream_init(&pc->ps, &stream_fd_ops, (void *)(intptr_t)fd);
    uint32_t flags;
    bool ok = stream_read_preamble_flags(&pc->ps, &flags) == 0 && flags == GWS_CHANNEL_PREEMPT;
    if (!ok && (c->m->cancel || c->m->pc_pause_req))
        return stream_set_error(&c->s, ECANCELED, "%s before the source's preempt channel said "
                                "what it is", c->m->cancel ? "stopped" : "paused");
    if (!ok)
        return stream_set_error(&c->s, EPROTO, "the second connection is not a preempt channel%s%s",
                                stream_error(&pc->ps)[0] ? ": " : "", stream_error(&pc->ps));
    return 0;
}

int pc_dst_advise(struct in_ctx *c, const struct stream_record *rec)
{
    struct migration *m = c->m;
    struct gws_postcopy_advise a;
    if (c->pc || rec->length != sizeof(a))
        return in_bad(c, rec, c->pc ? "sent twice" : "bad length");
    memcpy(&a, rec->body, sizeof(a));
    if (a.reserved || a.flags != 1 || a.ram_pages != m->ram->size / GWS_PAGE_SIZE)
        return in_bad(c, rec, "flags or page count do not match this VM");
    pthread_mutex_lock(&m->lock);
    bool allowed = m->caps.on[MIG_CAP_POSTCOPY_RAM];
    pthread_mutex_unlock(&m->lock);
    if (!allowed)
        return stream_set_error(&c->s, EPERM, "the source asks for post-copy, but capability "
                                "postcopy-ram is not set on the destination");
    if (c->lfd < 0)
        return stream_set_error(&c->s, EINVAL, "post-copy needs a tcp: or unix: migration");
    struct pc_dst *pc = calloc(1, sizeof(*pc));
    if (!pc || !(pc->pending = bitmap_new(c->npages))) {
        free(pc);
        return stream_set_error(&c->s, ENOMEM, "out of memory");
    }
    pc->c = c;
    pc->uffd = pc->pfd = -1;
    pc->minor = !m->pc_no_minor && uffd_minor_available();
    if (pc->minor && !(pc->cached = bitmap_new(c->npages))) {
        bitmap_free(pc->pending);
        free(pc);
        return stream_set_error(&c->s, ENOMEM, "out of memory");
    }
    /* A page this side lacks must stay a hole: no more preallocation, and
     * no huge pages (until every page is here: finish). */
    pc->populated = guest_ram_prealloc_stop(m->ram) / GWS_PAGE_SIZE;
    guest_ram_huge_pages(m->ram, false);
    c->pc = pc;
    stream_init(&pc->ps, &stream_fd_ops, NULL);
    mig_socket_liveness(c->fd, PC_LIVENESS_MS);
    /* After the switch, pages in the main channel's backlog are ones a
     * fault may have to wait for (they are not sent twice): keep that
     * backlog short from the start (the window cannot shrink later). */
    int sz = PC_MAIN_RCVBUF;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz));
    int r = open_preempt(c, c->lfd);
    in_close_listener(c);
    return r;
}

int pc_dst_identity(struct in_ctx *c, const struct stream_record *rec)
{
    struct pc_dst *pc = c->pc;
    if (!pc || pc->have_id || pc->guest_ran || rec->length != sizeof(pc->id))
        return in_bad(c, rec, !pc ? "MIGRATION_ID without POSTCOPY_ADVISE"
                      : rec->length != sizeof(pc->id) ? "bad length" : "sent twice");
    memcpy(&pc->id, rec->body, sizeof(pc->id));
    pc->have_id = true;
    return 0;
}

static bool held(const struct in_ctx *c, uint64_t i)
{
    return i < c->pc->populated || bitmap_test(c->received, i);
}

/* Punch [off, off+len) out of the memfd, and see that it is a hole. A
 * punch that ends inside a huge page splits it; the kernel cannot split one
 * that something else holds a reference to at that moment, and then only
 * zeroes the range and leaves it in memory: the guest would read those
 * zeros (no fault to catch) and the page's data, when it came, would find
 * the page there and be dropped. Such a reference is mostly fleeting, so
 * the punch is tried again; a page that stays makes the migration fail
 * here, before the switch, so that the guest runs on at the source. */
#define PUNCH_TRIES 20
static int punch(struct in_ctx *c, uint64_t off, uint64_t len)
{
    int fd = c->m->ram->memfd;
    off_t left = -1;
    for (int tries = 0; tries < PUNCH_TRIES; tries++) {
        if (tries)
            usleep(1000);
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
            return stream_set_error(&c->s, errno, "dropping stale pages: %s", strerror(errno));
        left = lseek(fd, (off_t)off, SEEK_DATA);
        if (left < 0 || (uint64_t)left >= off + len) /* ENXIO: no data from off on */
            return 0;
    }
    return stream_set_error(&c->s, EBUSY, "dropping stale pages: page %#llx stays in memory after "
                            "%d punches (a huge page the kernel could not split)",
                            (unsigned long long)((uint64_t)left / GWS_PAGE_SIZE), PUNCH_TRIES);
}

/* Take pages [i, j) out of the guest's reach: out of the mapping only
 * (minor faults: their memory is reused when they come), or out of the
 * memfd. */
static int drop_range(struct in_ctx *c, uint64_t i, uint64_t j)
{
    struct pc_dst *pc = c->pc;
    uint64_t off = i * GWS_PAGE_SIZE, len = (j - i) * GWS_PAGE_SIZE;
    if (pc->minor) {
        if (madvise(c->m->ram->host + off, len, MADV_DONTNEED) < 0)
            return stream_set_error(&c->s, errno, "dropping stale pages: %s", strerror(errno));
        bitmap_set_range(pc->cached, i, j - i);
        return 0;
    }
    return punch(c, off, len);
}

/* Drop the pages we hold in [idx, idx+n) so that touching them faults. */
static int drop_held(struct in_ctx *c, uint64_t idx, uint64_t n)
{
    for (uint64_t i = idx; i < idx + n;) {
        if (!held(c, i)) {
            i++;
            continue;
        }
        uint64_t j = i;
        while (j < idx + n && held(c, j))
            bitmap_clear_bit(c->received, j++);
        uint64_t t0 = mig_now_ns();
        if (drop_range(c, i, j) < 0)
            return -1;
        c->pc->disc.punch_ns += mig_now_ns() - t0;
        c->pc->disc.punched += j - i;
        c->pc->disc.holes++;
        i = j;
    }
    return 0;
}

/* Pages [idx, idx+n) must come from the source: mark them missing and drop
 * the copies held here. */
static int discard_run(struct in_ctx *c, uint64_t idx, uint64_t n)
{
    for (uint64_t k = idx; k < idx + n; k++)
        if (!bitmap_test(c->pc->pending, k)) {
            bitmap_set(c->pc->pending, k);
            c->pc->pending_count++;
        }
    return drop_held(c, idx, n);
}

int pc_dst_discard(struct in_ctx *c, const struct stream_record *rec)
{
    struct gws_discard h;
    if (!c->pc)
        return in_bad(c, rec, "DISCARD_PAGES without POSTCOPY_ADVISE");
    if (rec->length < sizeof(h))
        return in_bad(c, rec, "too short");
    memcpy(&h, rec->body, sizeof(h));
    if (h.zero || h.count == 0 || h.count > GWS_MAX_DISCARD_RUNS ||
        rec->length != sizeof(h) + h.count * sizeof(struct gws_page_run))
        return in_bad(c, rec, "run count does not match the length");
    /* Check every run before changing anything, then apply them. */
    uint64_t t0 = mig_now_ns();
    const uint8_t *body = rec->body + sizeof(h);
    for (int apply = 0; apply < 2; apply++) {
        for (uint32_t i = 0; i < h.count; i++) {
            struct gws_page_run run;
            uint64_t first;
            memcpy(&run, body + i * sizeof(run), sizeof(run));
            if (page_runs_check(c->m->ram, &run, &first) < 0)
                return in_bad(c, rec, "a run is not inside guest RAM");
            if (apply && discard_run(c, first, run.npages) < 0)
                return -1;
        }
    }
    c->pc->disc.runs += h.count;
    c->pc->disc.ns += mig_now_ns() - t0;
    return 0;
}

/* The discards so far, at debug level; counting starts again. */
static void log_discards(struct pc_dst *pc, const char *when)
{
    log_debug("%s: discards took %llu us (%llu runs; %llu us dropping %llu held pages in %llu "
              "ranges, %s)", when, (unsigned long long)(pc->disc.ns / 1000),
              (unsigned long long)pc->disc.runs, (unsigned long long)(pc->disc.punch_ns / 1000),
              (unsigned long long)pc->disc.punched, (unsigned long long)pc->disc.holes,
              pc->minor ? "from the mapping" : "from memory");
    memset(&pc->disc, 0, sizeof(pc->disc));
}

void pc_dst_note_ping(struct in_ctx *c)
{
    if (c->pc)
        log_discards(c->pc, "ping");
}

/* ---- fault bookkeeping (m->lock) ---- */

static void unblock_vcpu(struct pc_dst *pc, struct mig_stats *st, int v, uint64_t now)
{
    if (v < 0 || v >= MIG_MAX_VCPUS_STATS || !pc->vcpu_since[v])
        return;
    st->vcpu_blocktime_us[v] += (now - pc->vcpu_since[v]) / 1000;
    if (pc->nblocked == pc->c->m->nr_vcpus)
        st->blocktime_us += (now - pc->all_since) / 1000;
    pc->vcpu_since[v] = 0;
    pc->nblocked--;
}

/* Page idx is in: every thread waiting for it is on its way again. */
static void resolve_waiters(struct pc_dst *pc, uint64_t idx)
{
    struct migration *m = pc->c->m;
    if (!__atomic_load_n(&pc->nw, __ATOMIC_ACQUIRE))
        return;
    uint64_t now = mig_now_ns();
    pthread_mutex_lock(&m->lock);
    for (unsigned i = 0; i < pc->nw;) {
        if (pc->w[i].idx != idx) {
            i++;
            continue;
        }
        uint64_t waited_us = (now - pc->w[i].t0_ns) / 1000;
        latency_hist_add(&m->lat, waited_us);
        if (waited_us >= PC_SLOW_FAULT_US)
            log_debug("slow fault: page %#llx (vcpu %d) waited %llu us, installed from the %s "
                      "channel", (unsigned long long)idx, pc->w[i].vcpu,
                      (unsigned long long)waited_us,
                      pthread_equal(pthread_self(), pc->thread) ? "preempt" : "main");
        if (pc->w[i].vcpu < 0) {
            m->stats.non_vcpu_faults++;
            m->stats.non_vcpu_wait_us += waited_us;
        }
        unblock_vcpu(pc, &m->stats, pc->w[i].vcpu, now);
        pc->w[i] = pc->w[--pc->nw];
    }
    pthread_mutex_unlock(&m->lock);
}

/* Remember a thread waiting for idx; false if someone already asked. */
static bool add_waiter(struct pc_dst *pc, uint64_t idx, int vcpu)
{
    struct migration *m = pc->c->m;
    uint64_t now = mig_now_ns();
    bool first = true;
    pthread_mutex_lock(&m->lock);
    for (unsigned i = 0; i < pc->nw; i++)
        if (pc->w[i].idx == idx)
            first = false;
    bool recorded = pc->nw < PC_MAX_WAITERS;
    if (recorded) {
        pc->w[pc->nw] = (struct pc_waiter){ idx, now, vcpu };
        __atomic_store_n(&pc->nw, pc->nw + 1, __ATOMIC_RELEASE);
    } else if (pc->w_overflow++ == 0) {
        log_warn("post-copy: more than %d threads wait for pages; the others' waits are not "
                 "counted", PC_MAX_WAITERS);
    }
    /* Only a recorded waiter is ever resolved (unblock_vcpu): a vCPU's
     * block is counted from a recorded one only. */
    if (recorded && vcpu >= 0 && vcpu < MIG_MAX_VCPUS_STATS && !pc->vcpu_since[vcpu]) {
        pc->vcpu_since[vcpu] = now;
        if (++pc->nblocked == m->nr_vcpus)
            pc->all_since = now;
    }
    pthread_mutex_unlock(&m->lock);
    return first;
}

/* ---- installing pages (main thread and fault thread) ---- */

static void page_in(struct pc_dst *pc, uint64_t idx)
{
    if (bitmap_test_and_clear_atomic(pc->pending, idx))
        __atomic_fetch_sub(&pc->pending_count, 1, __ATOMIC_ACQ_REL);
    resolve_waiters(pc, idx);
}

static bool resident(const void *page)
{
    unsigned char v = 0;
    return mincore((void *)page, GWS_PAGE_SIZE, &v) == 0 && (v & 1);
}

static bool is_cached(const struct pc_dst *pc, uint64_t idx)
{
    return pc->minor && bitmap_test(pc->cached, idx);
}

/* Write n pages at page idx into the memfd: data from src, or zeros. */
static int write_memfd(struct pc_dst *pc, uint64_t idx, const uint8_t *src, uint32_t n)
{
    static const uint8_t zero_page[GWS_PAGE_SIZE];
    struct iovec iov[GWS_MAX_BATCH];
    size_t len = (size_t)n * GWS_PAGE_SIZE;
    off_t off = (off_t)(idx * GWS_PAGE_SIZE);
    for (size_t done = 0; done < len;) {
        ssize_t w;
        if (src) {
            w = pwrite(pc->c->m->ram->memfd, src + done, len - done, off + (off_t)done);
        } else {
            int k = (int)((len - done) / GWS_PAGE_SIZE);
            for (int i = 0; i < k; i++)
                iov[i] = (struct iovec){ (void *)zero_page, GWS_PAGE_SIZE };
            w = pwritev(pc->c->m->ram->memfd, iov, k, off + (off_t)done);
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0 || (w & (GWS_PAGE_SIZE - 1)))
            return -EIO; /* no progress, or not whole pages */
        done += (size_t)w;
    }
    return 0;
}

/* Fill and map cached pages [idx, idx+n), data from src (NULL: zeros),
 * and mark them in. Each page is claimed first (its cached bit cleared):
 * only the install that claims it writes it, so a page sent twice is never
 * written over what the guest has written since. A fill that fails gives
 * back the pages it did not map (their cached bits set again): sent again
 * after a recovery, they are filled then, where an unclaimed page would be
 * taken as installed and mapped as the memfd holds it, half written or
 * stale. */
static int fill_cached(struct pc_dst *pc, uint64_t idx, const uint8_t *src, uint32_t n)
{
    int r = 0;
    uint32_t i = 0;
    while (i < n) {
        if (!bitmap_test_and_clear_atomic(pc->cached, idx + i)) {
            i++;
            continue;
        }
        uint32_t run = 1;
        while (i + run < n && bitmap_test_and_clear_atomic(pc->cached, idx + i + run))
            run++;
        r = write_memfd(pc, idx + i, src ? src + (size_t)i * GWS_PAGE_SIZE : NULL, run);
        uint8_t *dst = pc->c->m->ram->host + (idx + i) * GWS_PAGE_SIZE;
        uint32_t mapped = 0;
        if (r == 0) {
            uint64_t done = 0;
            r = uffd_continue(pc->uffd, dst, (uint64_t)run * GWS_PAGE_SIZE, &done);
            mapped = (uint32_t)(done / GWS_PAGE_SIZE);
        }
        /* Some page mapped already (a fault on a page no longer pending maps
         * it as the memfd holds it): map the others one by one. */
        if (r == -EEXIST) {
            r = 0;
            for (; mapped < run; mapped++) {
                int e = uffd_continue(pc->uffd, dst + (size_t)mapped * GWS_PAGE_SIZE,
                                      GWS_PAGE_SIZE, NULL);
                if (e < 0 && e != -EEXIST) {
                    r = e;
                    break;
                }
            }
        }
        if (r < 0) {
            for (uint32_t k = mapped; k < run; k++)
                bitmap_set_atomic(pc->cached, idx + i + k);
            i += mapped;
            break;
        }
        i += run;
    }
    for (uint32_t k = 0; k < i; k++) /* those in are in, also when the rest failed */
        page_in(pc, idx + k);
    return r;
}

/* One page. "Already there" is believed only once the page is seen in
 * memory: a copy racing with another install of the same page can report
 * EEXIST while the other one is still undone. Returns 1 when it was there
 * (and is left as it is), 0 when installed, or -errno. */
static int install_one(struct pc_dst *pc, uint64_t idx, const uint8_t *src)
{
    if (is_cached(pc, idx))
        return fill_cached(pc, idx, src, 1);
    void *dst = pc->c->m->ram->host + idx * GWS_PAGE_SIZE;
    for (int tries = 0; tries < 1000; tries++) {
        int r = src ? uffd_copy(pc->uffd, dst, src, GWS_PAGE_SIZE, NULL)
                    : uffd_zero(pc->uffd, dst, GWS_PAGE_SIZE, NULL);
        if (r != -EEXIST || resident(dst))
            return r == -EEXIST ? 1 : r;
        sched_yield();
    }
    return -EIO;
}

/* A page still to come was in memory when its data came: something
 * touched it outside userfaultfd (the kernel then gave it a zero page)
 * and the guest sees that, not the source's data. Nothing in a sound
 * run does; counted (query-migrate postcopy-found-present) and logged. */
static void found_present(struct pc_dst *pc, uint64_t idx)
{
    struct migration *m = pc->c->m;
    pthread_mutex_lock(&m->lock);
    uint64_t n = ++m->stats.postcopy_found_present;
    pthread_mutex_unlock(&m->lock);
    if (n <= 8)
        log_warn("post-copy: page %#llx was in memory before its data came; it keeps what "
                 "was written there", (unsigned long long)idx);
}

/* A run of pending pages that the memfd does not hold (src NULL: zeros),
 * marked in. A page there already stops the kernel's copy at it: it is
 * left as it is, and the copy goes on after it. */
static int install_run(struct pc_dst *pc, const uint64_t *idx, const uint8_t *src, uint32_t n)
{
    uint8_t *dst = pc->c->m->ram->host + idx[0] * GWS_PAGE_SIZE;
    int r = 0;
    uint32_t k = 0;
    while (k < n) {
        size_t off = (size_t)k * GWS_PAGE_SIZE;
        uint64_t len = (uint64_t)(n - k) * GWS_PAGE_SIZE, done = 0;
        r = src ? uffd_copy(pc->uffd, dst + off, src + off, len, &done)
                : uffd_zero(pc->uffd, dst + off, len, &done);
        k += (uint32_t)(done / GWS_PAGE_SIZE);
        if (r != -EEXIST)
            break;
        off = (size_t)k * GWS_PAGE_SIZE;
        r = install_one(pc, idx[k], src ? src + off : NULL);
        if (r < 0)
            break;
        if (r == 1 && bitmap_test(pc->pending, idx[k])) /* else: sent twice */
            found_present(pc, idx[k]);
        r = 0;
        k++;
    }
    /* Those in are in, also when the rest failed: not to be taken, when
     * they come again after a recovery, for pages something else wrote. */
    for (uint32_t i = 0; i < k; i++)
        page_in(pc, idx[i]);
    return r;
}

/* Mark in early[] the pages of the record that a thread waits for; false
 * if none. */
static bool find_waited(struct pc_dst *pc, const uint64_t *idx, uint32_t count, bool *early)
{
    if (!__atomic_load_n(&pc->nw, __ATOMIC_ACQUIRE))
        return false;
    bool any = false;
    pthread_mutex_lock(&pc->c->m->lock);
    for (unsigned w = 0; w < pc->nw; w++) {
        uint64_t want = pc->w[w].idx;
        /* At most GWS_MAX_BATCH pages, and few threads wait: linear. */
        for (uint32_t i = 0; i < count; i++)
            if (idx[i] == want) {
                early[i] = any = true;
                break;
            }
    }
    pthread_mutex_unlock(&pc->c->m->lock);
    return any;
}

/* Install count pages (data NULL: zero pages) at RAM pages idx[]. The
 * pages a thread waits for go in first, one by one: a fault then waits
 * for its own page, not for the whole record (a 2 MiB copy into fresh
 * memory takes ~6 ms here). */
static int install(struct pc_dst *pc, struct stream *s, const uint64_t *idx, const uint8_t *data,
                   uint32_t count)
{
    bool early[GWS_MAX_BATCH] = { false };
    if (find_waited(pc, idx, count, early))
        for (uint32_t i = 0; i < count; i++) {
            if (!early[i] || !bitmap_test(pc->pending, idx[i]))
                continue;
            int r = install_one(pc, idx[i], data ? data + (size_t)i * GWS_PAGE_SIZE : NULL);
            if (r < 0)
                return stream_set_error(s, -r, "installing guest pages: %s", strerror(-r));
            if (r == 1)
                found_present(pc, idx[i]);
            page_in(pc, idx[i]);
        }
    for (uint32_t i = 0; i < count;) {
        if (early[i]) {
            i++;
            continue;
        }
        bool cached = is_cached(pc, idx[i]);
        uint32_t run = 1;
        while (i + run < count && idx[i + run] == idx[i] + run && !early[i + run] &&
               is_cached(pc, idx[i + run]) == cached)
            run++;
        const uint8_t *src = data ? data + (size_t)i * GWS_PAGE_SIZE : NULL;
        int r = cached ? fill_cached(pc, idx[i], src, run) : install_run(pc, idx + i, src, run);
        if (r < 0)
            return stream_set_error(s, -r, "installing guest pages: %s", strerror(-r));
        i += run;
    }
    pthread_mutex_lock(&pc->c->m->lock);
    pc->c->m->stats.postcopy_bytes += (uint64_t)count * GWS_PAGE_SIZE;
    if (data) {
        pc->c->m->stats.normal += count;
        pc->c->m->stats.normal_bytes += (uint64_t)count * GWS_PAGE_SIZE;
    } else {
        pc->c->m->stats.duplicate += count;
    }
    pthread_mutex_unlock(&pc->c->m->lock);
    return 0;
}

/* A page record from either channel; returns how many pages it held. */
static int take_pages(struct pc_dst *pc, struct stream *s, const struct stream_record *rec)
{
    struct in_ctx *c = pc->c;
    uint64_t idx[GWS_MAX_BATCH];
    uint32_t count;
    const uint8_t *data;
    if (in_decode_pages(c, s, rec, idx, &data, &count) < 0 || install(pc, s, idx, data, count) < 0)
        return -1;
    return (int)count;
}

/* ---- the fault thread ---- */

static int request(struct pc_dst *pc, const uint64_t *pfn, uint32_t n)
{
    if (!n)
        return 0;
    struct gws_pages h = { n, 0 };
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)pfn, n * 8ULL } };
    if (stream_write_record(&pc->ps, GWS_RP_REQ_PAGES, iov, 2) < 0 || stream_flush(&pc->ps) < 0)
        return -1;
    pthread_mutex_lock(&pc->c->m->lock);
    pc->c->m->stats.postcopy_requests += n;
    pthread_mutex_unlock(&pc->c->m->lock);
    return 0;
}

/* One fault: returns 1 if idx must be requested. */
static int on_fault(struct pc_dst *pc, const struct uffd_fault *f, uint64_t *idx)
{
    struct migration *m = pc->c->m;
    uint64_t off = f->addr - (uint64_t)(uintptr_t)m->ram->host;
    if (f->addr < (uint64_t)(uintptr_t)m->ram->host || off >= m->ram->size)
        return 0;
    *idx = off / GWS_PAGE_SIZE;
    if (!bitmap_test(pc->pending, *idx)) {
        if (f->minor) { /* here and right (installed, or received before) */
            int r = uffd_continue(pc->uffd, m->ram->host + off, GWS_PAGE_SIZE, NULL);
            return r < 0 && r != -EEXIST ? -1 : 0;
        }
        return install_one(pc, *idx, NULL) < 0 ? -1 : 0; /* zero on the source too */
    }
    int vcpu = m->ops->vcpu_of_tid ? m->ops->vcpu_of_tid(m->vm, f->tid) : -1;
    bool first = add_waiter(pc, *idx, vcpu);
    if (!bitmap_test(pc->pending, *idx)) { /* installed meanwhile */
        resolve_waiters(pc, *idx);
        return 0;
    }
    return first ? 1 : 0;
}

static int handle_faults(struct pc_dst *pc)
{
    struct uffd_fault f[64];
    uint64_t pfn[64];
    uint32_t n = 0;
    int k = uffd_read_faults(pc->uffd, f, 64);
    if (k < 0)
        return stream_set_error(&pc->ps, -k, "userfaultfd: %s", strerror(-k));
    for (int i = 0; i < k; i++) {
        uint64_t idx;
        int r = on_fault(pc, &f[i], &idx);
        if (r < 0)
            return stream_set_error(&pc->ps, EIO, "filling or mapping a page that is not "
                                    "requested failed");
        if (r > 0)
            pfn[n++] = ram_page_to_pfn(pc->c->m->ram, idx);
    }
    return request(pc, pfn, n);
}

static int handle_preempt(struct pc_dst *pc)
{
    struct stream_record rec;
    int r = stream_read_record(&pc->ps, &rec);
    if (r == -ENODATA) {
        pc->preempt_eof = true;
        return stream_set_error(&pc->ps, EPIPE, "the source closed the preempt channel");
    }
    if (r < 0)
        return r;
    /* The source paused while its main channel could not say so (a write
     * there was waiting for us): a break, never an exit (fault_thread
     * breaks the main channel). */
    if (rec.type == GWS_POSTCOPY_PAUSE)
        return stream_set_error(&pc->ps, ECONNABORTED, "the source paused");
    if (rec.type & GWS_OPTIONAL)
        return 0; /* skipped, as anywhere in a stream */
    if (rec.type != GWS_PAGE_DATA && rec.type != GWS_PAGE_DATA_ZSTD && rec.type != GWS_ZERO_PAGES)
        return stream_set_error(&pc->ps, EPROTO, "unexpected %s on the preempt channel",
                                stream_record_name(rec.type));
    return take_pages(pc, &pc->ps, &rec) < 0 ? -1 : 0;
}

/* After a recovery: ask again for what faulted threads still wait for. */
static int rerequest(struct pc_dst *pc)
{
    uint64_t pfn[GWS_MAX_BATCH];
    uint32_t n = 0;
    pthread_mutex_lock(&pc->c->m->lock);
    for (unsigned i = 0; i < pc->nw && n < GWS_MAX_BATCH; i++)
        pfn[n++] = ram_page_to_pfn(pc->c->m->ram, pc->w[i].idx);
    pthread_mutex_unlock(&pc->c->m->lock);
    return request(pc, pfn, n);
}

/* A preempt-channel error that may be the source closing its end (or a
 * reset: ss -K, a firewall), not a local failure or a timed-out link. The
 * main channel tells an exit (end of file, no POSTCOPY_PAUSE) from a break. */
static bool peer_closed(int error)
{
    return error == -EPIPE || error == -ECONNRESET;
}

static void *fault_thread(void *arg)
{
    struct pc_dst *pc = arg;
    pthread_setname_np(pthread_self(), "mig-pc-fault");
    mig_thread_priority_high();
    int r = rerequest(pc);
    while (r == 0 && !pc->stop) {
        if (pc->ps.ipos < pc->ps.ilen) { /* records already buffered */
            r = handle_preempt(pc);
            continue;
        }
        struct pollfd p[2] = { { pc->uffd, POLLIN, 0 }, { pc->pfd, POLLIN, 0 } };
        if (poll(p, 2, 1000) < 0 && errno != EINTR)
            r = stream_set_error(&pc->ps, errno, "poll: %s", strerror(errno));
        /* The preempt channel first: what it holds may answer the faults,
         * and a POSTCOPY_PAUSE there must be read before a request meets
         * a connection the source closed after it. */
        if (r == 0 && !pc->stop && p[1].revents)
            r = handle_preempt(pc);
        if (r == 0 && (p[0].revents & POLLIN))
            r = handle_faults(pc);
    }
    if (r < 0 && !pc->stop) {
        __atomic_store_n(&pc->error, r, __ATOMIC_SEQ_CST);
        /* Loading the state may wait for a page that will not come now:
         * let it go on (it gets zeros; go_live then sees the error and
         * fails, and the guest never runs here). Only while loading:
         * afterwards the guest may run here, on missing pages that must
         * go on faulting (the error was published first: go_live clears
         * `loading` before it reads the error). */
        if (__atomic_load_n(&pc->loading, __ATOMIC_SEQ_CST))
            uffd_unregister(pc->uffd, pc->c->m->ram->host, pc->c->m->ram->size);
        /* The source closing the preempt channel (an end of file, or a
         * request written into a socket it closed) closes the main one too,
         * after a POSTCOPY_PAUSE unless it exited: let the main channel
         * tell which. Any other break: wake the main channel's reader. */
        if (!pc->preempt_eof && !peer_closed(pc->ps.error)) {
            pc->local_break = true;
            shutdown(pc->c->fd, SHUT_RDWR);
        }
    }
    return NULL;
}

static int start_faults(struct pc_dst *pc)
{
    pc->stop = false;
    pc->preempt_eof = false;
    pc->error = 0;
    if (pthread_create(&pc->thread, NULL, fault_thread, pc) != 0)
        return stream_set_error(&pc->c->s, EAGAIN, "cannot start the fault thread");
    pc->thread_running = true;
    return 0;
}

static void stop_faults(struct pc_dst *pc)
{
    if (!pc->thread_running)
        return;
    pc->stop = true;
    if (pc->pfd >= 0)
        shutdown(pc->pfd, SHUT_RDWR);
    pthread_join(pc->thread, NULL);
    pc->thread_running = false;
}

/* ---- the main channel after the switch ---- */

/* Wait (bounded steps) for pages still coming on the preempt channel. */
static int wait_last_pages(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    while (__atomic_load_n(&pc->pending_count, __ATOMIC_ACQUIRE)) {
        if (pc->error || c->m->pc_pause_req || c->m->cancel)
            return stream_set_error(&c->s, EIO, "the preempt channel broke: %s",
                                    stream_error(&pc->ps));
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Tell the source how many pages of this connection's compressed page
 * records are taken (installed, or found there already): it keeps its push
 * within a window of that. A raw record's bytes bound its pages, and the
 * socket bounds the bytes; acks for those would only be data a killed
 * source leaves unread, which turns its close into a reset. */
static int ack_pages(struct pc_dst *pc, uint64_t taken)
{
    struct iovec iov = { &taken, sizeof(taken) };
    return in_send_rp_body(pc->c, GWS_RP_INSTALLED, &iov, 1);
}

static int recv_loop(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    uint64_t taken = 0;
    pc->eos = pc->got_pause = false;
    for (;;) {
        if (pc->eos)
            return wait_last_pages(pc);
        struct stream_record rec;
        int r = stream_read_record(&c->s, &rec);
        if (r < 0)
            return r; /* -ENODATA: a clean end, not (yet) an error */
        switch (rec.type) {
        case GWS_PAGE_DATA:
        case GWS_PAGE_DATA_ZSTD:
        case GWS_ZERO_PAGES:
            if ((r = take_pages(pc, &c->s, &rec)) < 0)
                return -1;
            /* Only compressed records need the window (see ack_pages). */
            if (rec.type == GWS_PAGE_DATA_ZSTD && ack_pages(pc, taken += (uint64_t)r) < 0)
                return -1;
            break;
        case GWS_END_OF_STREAM: pc->eos = true; break;
        case GWS_POSTCOPY_PAUSE: pc->got_pause = true; break;
        default:
            if (!(rec.type & GWS_OPTIONAL))
                return stream_set_error(&c->s, EPROTO, "unexpected %s in post-copy",
                                        stream_record_name(rec.type));
        }
    }
}

/* The source closed the main channel (at a record boundary or inside a
 * record) without a POSTCOPY_PAUSE first, and not because we broke it: the
 * source VMM has exited (it always says when it pauses). A process killed
 * while holding RP_INSTALLED it has not read resets the connection
 * instead: that reads as a break (paused, recoverable), the safe side. */
static bool source_gone(const struct pc_dst *pc, int r)
{
    return (r == -ENODATA || r == -EPIPE) && !pc->got_pause && !pc->local_break &&
           !pc->c->m->pc_pause_req && !pc->c->m->cancel;
}

static void close_channels(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    pthread_mutex_lock(&c->m->lock);
    c->m->fd = c->m->pfd = -1;
    pthread_mutex_unlock(&c->m->lock);
    if (c->fd >= 0)
        close(c->fd);
    if (pc->pfd >= 0)
        close(pc->pfd);
    c->fd = pc->pfd = -1;
}

/* The pages still needed: one RP_RECV_BITMAP, or parts where the list
 * is longer than one record takes (guests over 256 GiB). */
static int send_recv_bitmap(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    uint64_t npages = c->npages, first = 0, k, part_words = c->m->pc_bitmap_part_words;
    if (!part_words && recv_bitmap_fits_one(npages)) {
        struct iovec iov[2] = { { &npages, 8 }, { pc->pending, BITMAP_WORDS(npages) * 8 } };
        return in_send_rp_body(c, GWS_RP_RECV_BITMAP, iov, 2);
    }
    unsigned parts = 0;
    for (; (k = recv_bitmap_part_words(npages, first, part_words)); first += k, parts++) {
        struct iovec iov[3] = { { &npages, 8 }, { &first, 8 }, { pc->pending + first, k * 8 } };
        if (in_send_rp_body(c, GWS_RP_RECV_BITMAP_PART, iov, 3) < 0)
            return -1;
    }
    log_info("recovery: the page list went in %u parts", parts);
    return 0;
}

/* The id a recovered main channel names (MIGRATION_ID after
 * POSTCOPY_RESUME), if the migration had one: 0 if it is ours, -1 if it
 * is not (the stream's error says why, and the source was told). */
static int check_id(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    struct stream_record rec;
    if (!pc->have_id)
        return 0; /* a source that names none: nothing to check against */
    const char *why = NULL;
    struct pollfd p = { c->fd, POLLIN, 0 };
    /* It comes in the same write as POSTCOPY_RESUME: a source that sends
     * nothing more (one that predates it) waits for the page list. */
    if (c->s.ipos == c->s.ilen && poll(&p, 1, PC_ID_WAIT_MS) == 0)
        why = "the source does not name the migration it resumes";
    else if (stream_read_record(&c->s, &rec) < 0)
        return -1;
    else if (rec.type != GWS_MIGRATION_ID || rec.length != sizeof(pc->id))
        why = "the source does not name the migration it resumes";
    else if (memcmp(rec.body, &pc->id, sizeof(pc->id)))
        why = "the source resumes another migration than this one";
    if (!why)
        return 0;
    in_send_rp(c, GWS_RP_FAILED, why);
    return stream_set_error(&c->s, EPROTO, "%s", why);
}

/* A recovered main channel: preamble, POSTCOPY_RESUME, the migration's id. */
static int read_resume(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    struct stream_record rec;
    if (stream_read_preamble(&c->s) < 0 || stream_read_record(&c->s, &rec) < 0)
        return -1;
    if (rec.type != GWS_POSTCOPY_RESUME)
        return stream_set_error(&c->s, EPROTO, "expected POSTCOPY_RESUME, got %s",
                                stream_record_name(rec.type));
    return check_id(pc);
}

/* The main channel of a resume, from lfd, read up to its MIGRATION_ID.
 * migrate-recover here and `migrate resume` on the source are two
 * commands on two hosts: no time limit between them (until migrate-pause
 * here, or the VMM's end). */
static int take_resume(struct in_ctx *c, int lfd)
{
    struct migration *m = c->m;
    int fd = -1;
    if (accept_channel(c, lfd, 0, -1, &fd) < 0)
        return -1;
    c->fd = fd;
    stream_fini(&c->s);
    stream_init(&c->s, &stream_fd_ops, (void *)(intptr_t)fd);
    pthread_mutex_lock(&m->lock);
    m->fd = fd;
    shut_if_stopped_locked(m, fd);
    pthread_mutex_unlock(&m->lock);
    return read_resume(c->pc);
}

/* migrate-recover gave a listening socket: take the source's two
 * connections, check it resumes, tell it what is still missing. */
static int accept_recovery(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    struct migration *m = c->m;
    pthread_mutex_lock(&m->lock);
    int lfd = m->pc_recover_fd;
    m->pc_recover_fd = -1;
    m->listen_fd = lfd;
    pthread_mutex_unlock(&m->lock);
    stream_fini(&c->s);
    stream_init(&c->s, &stream_fd_ops, NULL);
    int r = take_resume(c, lfd);
    if (r == 0)
        r = open_preempt(c, lfd);
    pthread_mutex_lock(&m->lock);
    m->listen_fd = -1;
    pthread_mutex_unlock(&m->lock);
    close(lfd);
    if (m->pc_recover_uri.kind == MIG_URI_UNIX)
        unlink(m->pc_recover_uri.path);
    if (r == 0)
        r = send_recv_bitmap(pc);
    return r;
}

/* ---- the switch ---- */

static void run_guest(struct pc_dst *pc)
{
    pc->c->m->ops->start(pc->c->m->vm);
    pc->guest_ran = true;
    log_info("post-copy: the guest runs here, %llu pages to come",
             (unsigned long long)pc->pending_count);
}

/* From RP_LOADED to COMMIT: migrate-pause may end the wait (mig_pause). */
static void set_commit_wait(struct migration *m, bool on)
{
    pthread_mutex_lock(&m->lock);
    m->pc_commit_wait = on;
    pthread_mutex_unlock(&m->lock);
}

/* After RP_LOADED: 0 once COMMIT is read; optional records before it are
 * skipped. Anything else (an error, an end, migrate-pause, another
 * record) is -1 with the reason in the stream's error: the source may
 * have RP_LOADED, so the caller must not fail (and discard the guest). */
static int read_commit(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    struct stream_record rec;
    int r;
    while ((r = stream_read_record(&c->s, &rec)) == 0 && rec.type != GWS_COMMIT) {
        if (!(rec.type & GWS_OPTIONAL))
            return stream_set_error(&c->s, EPROTO, "the source sent %s in place of COMMIT",
                                    stream_record_name(rec.type));
    }
    if (r == 0)
        return 0;
    if (c->m->pc_pause_req) { /* its shutdown() is what the read saw */
        c->s.error = 0;
        return stream_set_error(&c->s, ECONNABORTED, "paused here by migrate-pause");
    }
    if (r == -ENODATA)
        return stream_set_error(&c->s, EPIPE, "the source closed the connection");
    return -1;
}

/* Load the state with missing pages caught, then the LOADED/COMMIT
 * handshake and run the guest. 0: it runs; 1: the connection broke before
 * the commit (nothing runs; to be recovered); -1: failed. */
static int go_live(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    struct migration *m = c->m;
    struct gw_error err;
    gw_error_init(&err);
    log_discards(pc, "late");
    uint64_t t0 = mig_now_ns();
    /* Missing pages are caught before the state is loaded: loading it
     * touches guest memory (KVM writes the kvmclock pages of a guest that
     * set them up when their MSRs are restored). Touched unregistered, a
     * missing page got a zero page that its data then could not replace.
     * The source serves requests from here on. */
    int fd = pc->minor ? uffd_open_minor() : uffd_open_with_tid();
    if (fd < 0)
        return stream_set_error(&c->s, -fd, "userfaultfd: %s", strerror(-fd));
    pc->uffd = fd;
    int r = pc->minor ? uffd_register_minor(fd, m->ram->host, m->ram->size)
                      : uffd_register(fd, m->ram->host, m->ram->size);
    if (r < 0)
        return stream_set_error(&c->s, -r, "userfaultfd register: %s", strerror(-r));
    pc->registered = true;
    if (start_faults(pc) < 0)
        return -1;
    __atomic_store_n(&pc->loading, true, __ATOMIC_SEQ_CST);
    r = m->ops->load_finish(m->vm, &err);
    __atomic_store_n(&pc->loading, false, __ATOMIC_SEQ_CST);
    if (r < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    if (__atomic_load_n(&pc->error, __ATOMIC_SEQ_CST)) /* a page may have come as zeros */
        return stream_set_error(&c->s, EIO, "loading the state: the preempt channel broke: %s",
                                stream_error(&pc->ps));
    if (!mig_take_commit(m))
        return stream_set_error(&c->s, ECANCELED, "cancelled");
    set_commit_wait(m, true);
    in_send_rp(c, GWS_RP_LOADED, NULL);
    uint64_t t1 = mig_now_ns();
    r = read_commit(pc);
    set_commit_wait(m, false);
    if (r < 0) {
        /* Whether the source had RP_LOADED (then the guest is ours from
         * now on and it never runs it again) or not (then it runs it on)
         * cannot be told from here: keep the state, run nothing, pause. A
         * source that resumes the migration had it (pc_dst_run). */
        log_warn("post-copy: no commit of the switch-over from the source: %s",
                 stream_error(&c->s));
        return 1;
    }
    log_debug("loaded (state, userfaultfd, fault thread) in %llu us, commit after %llu us",
              (unsigned long long)((t1 - t0) / 1000),
              (unsigned long long)((mig_now_ns() - t1) / 1000));
    /* The status before the guest runs, as QEMU's clients see it there:
     * MIGRATION {postcopy-active}, then RESUME. */
    mig_set_state(m, MIG_POSTCOPY_ACTIVE);
    run_guest(pc);
    in_send_rp(c, GWS_RP_RESUMED, NULL);
    return 0;
}

static void finish(struct pc_dst *pc)
{
    struct in_ctx *c = pc->c;
    in_send_rp(c, GWS_RP_POSTCOPY_DONE, NULL);
    if (pc->registered)
        uffd_unregister(pc->uffd, c->m->ram->host, c->m->ram->size);
    pc->registered = false;
    guest_ram_huge_pages(c->m->ram, true);
    pthread_mutex_lock(&c->m->lock);
    c->m->stats.remaining = 0;
    c->m->pc_done_named = pc->have_id;
    c->m->pc_done_id = pc->id;
    pthread_mutex_unlock(&c->m->lock);
    if (pc->w_overflow)
        log_info("post-copy: %llu faults waited while the waiter table was full (not counted in "
                 "the latency and blocktime statistics)", (unsigned long long)pc->w_overflow);
    log_info("post-copy: every page is here");
}

int pc_dst_run(struct in_ctx *c)
{
    struct pc_dst *pc = c->pc;
    if (!pc)
        return stream_set_error(&c->s, EPROTO, "POSTCOPY_RUN without POSTCOPY_ADVISE");
    if (go_live(pc) < 0)
        return -1;
    /* From here the guest runs on what this thread installs: it gets the
     * priority of the fault thread. Two busy vCPUs on two cores, four runs
     * each: fault p50 215-303 us, p99 0.8-1.3 ms, with this and the
     * source's push raised; 287-479 us and 1.2-1.5 ms without. */
    mig_thread_priority_high();
    for (;;) {
        /* Not committed (go_live): straight to the pause. */
        int r = pc->guest_ran ? recv_loop(pc) : -ECONNABORTED;
        bool gone = r < 0 && pc->guest_ran && source_gone(pc, r);
        stop_faults(pc);
        if (r == 0) {
            finish(pc);
            return 0;
        }
        if (gone) {
            pc->lost = true;
            c->s.error = 0; /* this explains the truncation better */
            return stream_set_error(&c->s, EPIPE, "the source VMM closed the connection without "
                                    "pausing (it has exited): %llu pages of the guest are lost "
                                    "and it cannot run on", (unsigned long long)pc->pending_count);
        }
        if (r == -ENODATA)
            stream_set_error(&c->s, EPIPE, "%s", pc->got_pause ? "the source paused"
                             : "the connection was closed here");
        char why[300];
        if (!pc->guest_ran)
            snprintf(why, sizeof(why), "no commit of the switch-over from the source (%s); the "
                     "guest runs here only once the source resumes the migration",
                     stream_error(&c->s));
        else
            snprintf(why, sizeof(why), "%s", pc->error ? stream_error(&pc->ps) : stream_error(&c->s));
        close_channels(pc);
        do {
            if (mig_pc_wait_recovery(c->m, why) < 0)
                return -1;
            pc->local_break = false;
            r = accept_recovery(pc);
            snprintf(why, sizeof(why), "recovery failed: %s", stream_error(&c->s));
            if (r < 0)
                close_channels(pc);
        } while (r < 0);
        if (start_faults(pc) < 0)
            return -1;
        /* A source that resumes had RP_LOADED: the commit it could not
         * send. The status first, as at the switch (go_live). */
        mig_set_state(c->m, MIG_POSTCOPY_ACTIVE);
        if (!pc->guest_ran)
            run_guest(pc);
    }
}

void pc_dst_cleanup(struct in_ctx *c)
{
    struct pc_dst *pc = c->pc;
    if (!pc)
        return;
    stop_faults(pc);
    pthread_mutex_lock(&c->m->lock);
    c->m->pfd = -1; /* no shutdown() of a number that is reused */
    pthread_mutex_unlock(&c->m->lock);
    if (pc->pfd >= 0)
        close(pc->pfd);
    /* A guest that ran here with pages still missing (its source lost, or
     * the migration ended while paused, or a recovery that could not
     * start its fault thread) keeps its fault handler: closing it would
     * let blocked vCPUs read zeros where its memory should be. The RAM
     * holds it until the VM is torn down. */
    bool missing = pc->guest_ran && __atomic_load_n(&pc->pending_count, __ATOMIC_ACQUIRE);
    if (pc->uffd >= 0 && pc->registered && (pc->lost || missing))
        guest_ram_hold_uffd(c->m->ram, pc->uffd);
    else if (pc->uffd >= 0)
        close(pc->uffd);
    stream_fini(&pc->ps);
    bitmap_free(pc->pending);
    bitmap_free(pc->cached);
    free(pc);
    c->pc = NULL;
}

/* ---- after completion: a DONE that was lost ---- */

/* The connection broke after this side had every page and said so: the
 * source never read RP_POSTCOPY_DONE and stays paused. Its resume gets the
 * DONE now, on the same two channels a recovery opens; it must name the
 * migration that completed here. The guest runs on; nothing here changes. */
static int answer_late(struct in_ctx *c)
{
    if (take_resume(c, c->lfd) < 0 || open_preempt(c, c->lfd) < 0)
        return -1;
    return in_send_rp_body(c, GWS_RP_POSTCOPY_DONE, NULL, 0);
}

void *mig_pc_late_done_thread(void *arg)
{
    struct migration *m = arg;
    struct pc_dst pc = { .uffd = -1, .pfd = -1, .have_id = true };
    struct in_ctx c = { .m = m, .fd = -1, .pc = &pc };
    pthread_setname_np(pthread_self(), "mig-late");
    pc.c = &c;
    stream_init(&c.s, &stream_fd_ops, NULL);
    stream_init(&pc.ps, &stream_fd_ops, NULL);
    pthread_mutex_lock(&m->lock);
    pc.id = m->pc_done_id;
    c.lfd = m->listen_fd = m->pc_recover_fd;
    m->pc_recover_fd = -1;
    shut_if_stopped_locked(m, c.lfd); /* replaced before it got here */
    pthread_mutex_unlock(&m->lock);
    if (answer_late(&c) == 0)
        log_info("post-copy: a source that had lost the end of the migration was told it is "
                 "complete");
    else
        log_warn("post-copy: no late answer to the source: %s", stream_error(&c.s));
    pthread_mutex_lock(&m->lock);
    m->fd = m->pfd = m->listen_fd = -1;
    pthread_mutex_unlock(&m->lock);
    if (m->pc_recover_uri.kind == MIG_URI_UNIX)
        unlink(m->pc_recover_uri.path);
    close(c.lfd);
    if (c.fd >= 0)
        close(c.fd);
    if (pc.pfd >= 0)
        close(pc.pfd);
    stream_fini(&c.s);
    stream_fini(&pc.ps);
    /* Last: a migrate-recover may come in now, also on the same address. */
    pthread_mutex_lock(&m->lock);
    m->pc_late = false;
    pthread_mutex_unlock(&m->lock);
    return NULL;
}
