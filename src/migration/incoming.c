/* The destination side: accept the stream, load pages and state with every
 * number checked, and start the guest only after the source commits. */
#define LOG_PREFIX "incoming"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "memory/bitmap.h"
#include "migration/migration.h"
#include "migration/incoming_internal.h"
#include "migration/ram_scan.h"
#include "migration/stream_records.h"

/* Allocate the guest's memory ahead of the first pass (fallocate runs at
 * ~2.7 GB/s here, faulting fresh memory in at ~0.35 GB/s): a helper thread
 * works upward through the memfd in 16 MiB steps, at most PREALLOC_AHEAD
 * past the highest page received, so that memory the guest never used is
 * not allocated beyond that. It stops when the first pass ends: by then
 * every page with data is here, and a later step would only allocate holes
 * while holding the memfd's lock against the receiver's writes (a switch-
 * over behind a 64 MiB fallocate ran at 0.85 instead of 2.5 GB/s). A file
 * has no END_OF_ITERATION (its one pass is the final one): there it stops
 * at END_OF_STREAM, and on a cancel. */
#define PREALLOC_STEP (16ULL << 20)
#define PREALLOC_AHEAD (256ULL << 20)

static void *prealloc_thread(void *arg)
{
    struct in_ctx *c = arg;
    pthread_setname_np(pthread_self(), "mig-prealloc");
    uint64_t size = c->m->ram->size;
    for (uint64_t off = 0; off < size && !c->stop_prealloc && !c->m->cancel;) {
        if (off >= __atomic_load_n(&c->recv_end, __ATOMIC_RELAXED) + PREALLOC_AHEAD) {
            struct timespec ts = { 0, 1000000 };
            nanosleep(&ts, NULL);
            continue;
        }
        uint64_t len = size - off < PREALLOC_STEP ? size - off : PREALLOC_STEP;
        if (fallocate(c->m->ram->memfd, 0, (off_t)off, (off_t)len) < 0)
            break; /* not fatal: pages are then allocated as they arrive */
        off += len;
    }
    return NULL;
}

void in_start_prealloc(struct in_ctx *c)
{
    /* Not for post-copy: a page that is not here must stay a hole, so that
     * touching it faults. */
    if (c->prealloc_started || c->pc || c->m->ram->prealloc_running)
        return; /* --mem-prealloc: RAM is being populated already */
    if (pthread_create(&c->prealloc, NULL, prealloc_thread, c) == 0)
        c->prealloc_started = true;
}

static int bad_record(struct stream *s, const struct stream_record *rec, const char *what)
{
    return stream_set_error(s, EPROTO, "record %llu (%s) at offset %llu: %s",
                            (unsigned long long)rec->index, stream_record_name(rec->type),
                            (unsigned long long)rec->offset, what);
}

int in_bad(struct in_ctx *c, const struct stream_record *rec, const char *what)
{
    return bad_record(&c->s, rec, what);
}

static int load_header(struct in_ctx *c, const struct stream_record *rec)
{
    struct migration *m = c->m;
    if (c->got_header)
        return in_bad(c, rec, "second header");
    struct stream_vm_info vm;
    if (stream_parse_header(&c->s, rec, &vm) < 0)
        return -1;
    if (vm.ram_size != m->ram->size)
        return stream_set_error(&c->s, EINVAL,
                                "the stream's guest has %llu MiB of RAM, this VM %llu MiB",
                                (unsigned long long)(vm.ram_size >> 20),
                                (unsigned long long)(m->ram->size >> 20));
    if (vm.nr_vcpus != m->nr_vcpus)
        return stream_set_error(&c->s, EINVAL, "the stream's guest has %u vCPUs, this VM %u",
                                vm.nr_vcpus, m->nr_vcpus);
    static const uint8_t none[16];
    if (m->uuid && memcmp(m->uuid, none, 16) && memcmp(vm.uuid, none, 16) &&
        memcmp(m->uuid, vm.uuid, 16))
        return stream_set_error(&c->s, EINVAL, "the stream's guest has another UUID than this VM");
    if (vm.nr_regions != m->ram->nr_regions)
        return stream_set_error(&c->s, EINVAL, "memory layouts differ");
    for (unsigned i = 0; i < vm.nr_regions; i++)
        if (vm.regions[i].gpa != m->ram->regions[i].gpa ||
            vm.regions[i].size != m->ram->regions[i].size)
            return stream_set_error(&c->s, EINVAL, "memory layouts differ (region %u)", i);
    c->got_header = true;
    return 0;
}

/* Check a page record's shape; returns the pfn list. */
static int load_pages(struct in_ctx *c, const uint8_t *data, const uint64_t *idx, uint32_t count)
{
    /* Contiguous runs go in one call. */
    struct gw_error err;
    gw_error_init(&err);
    for (uint32_t i = 0; i < count;) {
        uint32_t run = 1;
        while (i + run < count && idx[i + run] == idx[i] + run)
            run++;
        size_t len = (size_t)run * GWS_PAGE_SIZE;
        uint64_t off = idx[i] * GWS_PAGE_SIZE + len;
        if (guest_ram_write(c->m->ram, idx[i] * GWS_PAGE_SIZE, data + (size_t)i * GWS_PAGE_SIZE,
                            len, &err) < 0)
            return stream_set_error(&c->s, err.code, "%s", err.msg);
        for (uint32_t k = 0; k < run; k++)
            bitmap_set(c->received, idx[i + k]);
        if (off > __atomic_load_n(&c->recv_end, __ATOMIC_RELAXED))
            __atomic_store_n(&c->recv_end, off, __ATOMIC_RELAXED);
        i += run;
    }
    pthread_mutex_lock(&c->m->lock);
    c->m->stats.normal += count;
    c->m->stats.normal_bytes += (uint64_t)count * GWS_PAGE_SIZE;
    c->m->stats.transferred = c->s.bytes;
    pthread_mutex_unlock(&c->m->lock);
    return 0;
}

int in_decode_pages(struct in_ctx *c, struct stream *s, const struct stream_record *rec,
                    uint64_t *idx, const uint8_t **data, uint32_t *count)
{
    const struct guest_ram *ram = c->m->ram;
    if (!s->nr_ram) { /* a new or reopened channel: the RAM its frames must lie in */
        struct gws_region r[GUEST_RAM_MAX_REGIONS];
        for (unsigned i = 0; i < ram->nr_regions; i++)
            r[i] = (struct gws_region){ ram->regions[i].gpa, ram->regions[i].size };
        stream_set_ram(s, r, ram->nr_regions);
    }
    struct stream_rec out;
    if (stream_parse_pages(s, rec, &out) < 0)
        return -1;
    for (uint32_t i = 0; i < out.u.pages.count; i++)
        if (!ram_pfn_to_page(ram, out.u.pages.pfn[i], &idx[i]))
            return stream_record_error(s, rec, ERANGE, "frame 0x%llx is not guest RAM",
                                       (unsigned long long)out.u.pages.pfn[i]);
    *count = out.u.pages.count;
    *data = out.u.pages.data;
    return 0;
}

static int load_page_record(struct in_ctx *c, const struct stream_record *rec)
{
    in_start_prealloc(c);
    uint64_t idx[GWS_MAX_BATCH];
    const uint8_t *data;
    uint32_t count;
    if (in_decode_pages(c, &c->s, rec, idx, &data, &count) < 0)
        return -1;
    return load_pages(c, data, idx, count);
}

static int load_zero(struct in_ctx *c, const struct stream_record *rec)
{
    uint64_t idx[GWS_MAX_BATCH];
    const uint8_t *data;
    uint32_t count;
    if (in_decode_pages(c, &c->s, rec, idx, &data, &count) < 0)
        return -1;
    /* Only pages this migration wrote can be non-zero: never touch (and so
     * never allocate) memory that was not received. Those are punched out
     * of the memfd (they read as zero again, and a post-copy fault on one
     * is zero-filled), not cleared through our mapping. */
    for (uint32_t i = 0; i < count; i++) {
        if (!bitmap_test(c->received, idx[i]))
            continue;
        if (fallocate(c->m->ram->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (off_t)(idx[i] * GWS_PAGE_SIZE), (off_t)GWS_PAGE_SIZE) < 0)
            return stream_set_error(&c->s, errno, "clearing guest page %#llx: %s",
                                    (unsigned long long)idx[i], strerror(errno));
    }
    pthread_mutex_lock(&c->m->lock);
    c->m->stats.duplicate += count;
    pthread_mutex_unlock(&c->m->lock);
    return 0;
}

/* PING: every record before it is applied (pages written, discards
 * done); answer RP_PONG with the same body on the main channel. */
static int load_ping(struct in_ctx *c, const struct stream_record *rec)
{
    struct gws_ping p;
    if (c->from_file)
        return in_bad(c, rec, "PING in a file");
    if (rec->length != sizeof(p))
        return in_bad(c, rec, "bad length");
    memcpy(&p, rec->body, sizeof(p));
    if (p.zero)
        return in_bad(c, rec, "reserved field not zero");
    pc_dst_note_ping(c);
    struct iovec iov = { &p, sizeof(p) };
    return in_send_rp_body(c, GWS_RP_PONG, &iov, 1);
}

static int dispatch(struct in_ctx *c, const struct stream_record *rec, bool *done)
{
    struct migration *m = c->m;
    struct gw_error err;
    gw_error_init(&err);
    if (!c->got_header && rec->type != GWS_HEADER && !(rec->type & GWS_OPTIONAL))
        return in_bad(c, rec, "the stream does not start with a header");
    if (c->lfd >= 0 && rec->type != GWS_HEADER && rec->type != GWS_POSTCOPY_ADVISE &&
        !(rec->type & GWS_OPTIONAL))
        in_close_listener(c); /* no second channel is coming */
    switch (rec->type) {
    case GWS_HEADER: return load_header(c, rec);
    case GWS_POSTCOPY_ADVISE: return pc_dst_advise(c, rec);
    case GWS_MIGRATION_ID: return pc_dst_identity(c, rec);
    case GWS_DISCARD_PAGES: return pc_dst_discard(c, rec);
    case GWS_PING: return load_ping(c, rec);
    case GWS_POSTCOPY_RUN:
        if (rec->length != 0)
            return in_bad(c, rec, "bad length");
        if (pc_dst_run(c) < 0)
            return -1;
        *done = true;
        return 0;
    case GWS_PAGE_DATA:
    case GWS_PAGE_DATA_ZSTD: return load_page_record(c, rec);
    case GWS_ZERO_PAGES: return load_zero(c, rec);
    case GWS_VCPU_STATE:
    case GWS_DEVICE_STATE:
    case GWS_CPU_MODEL:
        if (m->ops->load_record(m->vm, rec, &err) < 0)
            return stream_set_error(&c->s, err.code, "record %llu (%s) at offset %llu: %s",
                                    (unsigned long long)rec->index, stream_record_name(rec->type),
                                    (unsigned long long)rec->offset, err.msg);
        return 0;
    case GWS_END_OF_ITERATION: {
        struct stream_rec e;
        if (stream_parse_eoi(&c->s, rec, &e) < 0)
            return -1;
        c->stop_prealloc = true; /* the first pass is here (see prealloc_thread) */
        pthread_mutex_lock(&m->lock);
        m->stats.iteration = e.u.eoi.pass;
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    case GWS_END_OF_STREAM:
        if (rec->length != 0)
            return in_bad(c, rec, "bad length");
        c->stop_prealloc = true; /* every page is here */
        *done = true;
        return 0;
    default:
        if (rec->type & GWS_OPTIONAL)
            return 0; /* unknown optional records are skipped */
        return stream_set_error(&c->s, EPROTO, "record %llu (type 0x%x) at offset %llu is unknown",
                                (unsigned long long)rec->index,
                                rec->type, (unsigned long long)rec->offset);
    }
}

void in_close_listener(struct in_ctx *c)
{
    struct migration *m = c->m;
    if (c->lfd < 0)
        return;
    pthread_mutex_lock(&m->lock);
    m->listen_fd = -1;
    pthread_mutex_unlock(&m->lock);
    close(c->lfd);
    c->lfd = -1;
    if (m->uri.kind == MIG_URI_UNIX)
        unlink(m->uri.path);
}

static int open_source(struct in_ctx *c)
{
    struct migration *m = c->m;
    pthread_mutex_lock(&m->lock);
    int lfd = m->listen_fd, fd = m->fd;
    pthread_mutex_unlock(&m->lock);
    c->from_file = lfd < 0;
    if (lfd >= 0) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        int e = errno;
        c->lfd = lfd; /* a post-copy preempt channel may follow */
        if (cfd < 0)
            in_close_listener(c);
        if (cfd < 0)
            return stream_set_error(&c->s, m->cancel ? ECANCELED : e, "accept: %s",
                                    m->cancel ? "cancelled" : strerror(e));
        fd = cfd;
        mig_socket_deadline(fd, MIG_PRECOPY_LIVENESS_MS);
        /* A cancel before m->fd was set shut down only the listener: seen
         * here, under the lock that publishes the fd, or not at all. */
        pthread_mutex_lock(&m->lock);
        bool cancelled = m->cancel;
        if (!cancelled)
            m->fd = fd;
        pthread_mutex_unlock(&m->lock);
        if (cancelled) {
            close(fd);
            return stream_set_error(&c->s, ECANCELED, "cancelled");
        }
    }
    c->fd = fd;
    stream_init(&c->s, &stream_fd_ops, (void *)(intptr_t)fd);
    return 0;
}

int in_send_rp_body(struct in_ctx *c, uint32_t type, const struct iovec *parts, int nparts)
{
    if (c->from_file)
        return 0;
    struct stream rp;
    stream_init(&rp, &stream_fd_ops, (void *)(intptr_t)c->fd);
    int r = stream_write_record(&rp, type, parts, nparts);
    if (r == 0)
        r = stream_flush(&rp);
    if (r < 0)
        stream_set_error(&c->s, EIO, "sending %s to the source: %s", stream_record_name(type),
                         stream_error(&rp));
    stream_fini(&rp);
    return r;
}

void in_send_rp(struct in_ctx *c, uint32_t type, const char *text)
{
    if (c->from_file)
        return;
    struct stream rp;
    stream_init(&rp, &stream_fd_ops, (void *)(intptr_t)c->fd);
    struct iovec iov = { (void *)text, text ? strlen(text) : 0 };
    stream_write_record(&rp, type, text ? &iov : NULL, text ? 1 : 0);
    stream_flush(&rp);
    stream_fini(&rp);
}

static int start_guest(struct in_ctx *c)
{
    log_debug("state loaded, starting");
    c->m->ops->start(c->m->vm);
    in_send_rp(c, GWS_RP_RESUMED, NULL);
    return 0;
}

/* Loaded: tell the source, and run only once it commits (optional
 * records before COMMIT are skipped, as anywhere in a stream). */
static int wait_commit(struct in_ctx *c)
{
    struct stream_record rec;
    in_send_rp(c, GWS_RP_LOADED, NULL);
    int r;
    do
        r = stream_read_record(&c->s, &rec);
    while (r == 0 && rec.type != GWS_COMMIT && (rec.type & GWS_OPTIONAL));
    if (r == 0 && rec.type != GWS_COMMIT)
        return stream_set_error(&c->s, EPROTO, "the source did not commit the switch-over: %s in "
                                "its place", stream_record_name(rec.type));
    if (r == -ENODATA)
        return stream_set_error(&c->s, EPIPE, "the source did not commit the switch-over: the "
                                "connection ended");
    if (r < 0) {
        char why[sizeof(c->s.errmsg)];
        snprintf(why, sizeof(why), "%s", stream_error(&c->s));
        c->s.error = 0;
        return stream_set_error(&c->s, EPROTO, "the source did not commit the switch-over: %s",
                                why);
    }
    return start_guest(c);
}

static int run(struct in_ctx *c)
{
    struct migration *m = c->m;
    if (open_source(c) < 0)
        return -1;
    c->npages = m->ram->size / GWS_PAGE_SIZE;
    c->received = bitmap_new(c->npages);
    if (!c->received)
        return stream_set_error(&c->s, ENOMEM, "out of memory");
    if (stream_read_preamble(&c->s) < 0)
        return -1;
    pthread_mutex_lock(&m->lock);
    m->stats.setup_ms = mig_now_ms() - m->stats.start_ms;
    m->stats.total = m->ram->size;
    pthread_mutex_unlock(&m->lock);
    mig_set_state(m, MIG_ACTIVE);
    bool done = false;
    while (!done) {
        struct stream_record rec;
        if (m->cancel) /* a file or a pipe: no shutdown() wakes us */
            return stream_set_error(&c->s, ECANCELED, "cancelled");
        int r = stream_read_record(&c->s, &rec);
        if (r == -ENODATA)
            return stream_set_error(&c->s, EPIPE, "stream ended before END_OF_STREAM");
        if (r < 0 || dispatch(c, &rec, &done) < 0)
            return -1;
    }
    if (pc_dst_guest_ran(c))
        return 0; /* post-copy ran the guest and fetched every page */
    struct gw_error err;
    gw_error_init(&err);
    log_debug("end of stream");
    if (m->ops->load_finish(m->vm, &err) < 0)
        return stream_set_error(&c->s, err.code, "%s", err.msg);
    /* From here a cancel is refused: the source may hand the guest over. */
    if (!mig_take_commit(m))
        return stream_set_error(&c->s, ECANCELED, "cancelled");
    if (!c->from_file)
        return wait_commit(c);
    return start_guest(c);
}


/* After RP_FAILED: read what the source still sends (bounded) before the
 * close, which would otherwise reset the connection with unread data and
 * could take the reason with it. */
static void drain_before_close(int fd)
{
    char sink[16 << 10];
    shutdown(fd, SHUT_WR);
    uint64_t end = mig_now_ms() + 500;
    for (uint64_t now = mig_now_ms(); now < end; now = mig_now_ms()) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, (int)(end - now)) <= 0 || read(fd, sink, sizeof(sink)) <= 0)
            break;
    }
}

void *mig_incoming_thread(void *arg)
{
    struct migration *m = arg;
    struct in_ctx *c = calloc(1, sizeof(*c));
    pthread_setname_np(pthread_self(), "mig-in");
    if (!c) {
        mig_fail(m, "out of memory");
        return NULL;
    }
    c->m = m;
    c->fd = c->lfd = -1;
    stream_init(&c->s, &stream_fd_ops, NULL);
    bool failed = run(c) < 0 || stream_get_error(&c->s);
    if (failed) {
        const char *why = stream_error(&c->s)[0] ? stream_error(&c->s) : "incoming migration failed";
        if (c->fd >= 0) {
            /* Bounded: a source that no longer reads (paused, its end
             * held open) must not hold this thread. */
            struct timeval tv = { 1, 0 };
            setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            in_send_rp(c, GWS_RP_FAILED, why);
        }
        c->stop_prealloc = true;
        if (c->prealloc_started)
            pthread_join(c->prealloc, NULL);
        c->prealloc_started = false;
        if (pc_dst_guest_ran(c)) {
            m->ops->lost(m->vm); /* keep its memory; it cannot run on */
        } else {
            /* Nothing may install pages or catch faults in memory being
             * freed: the fault thread and userfaultfd go first. */
            pc_dst_cleanup(c);
            m->ops->discard(m->vm);
        }
        mig_fail(m, "%s", why);
    } else {
        pthread_mutex_lock(&m->lock);
        m->stats.total_ms = mig_now_ms() - m->stats.start_ms;
        m->stats.transferred = c->s.bytes;
        pthread_mutex_unlock(&m->lock);
        mig_set_state(m, MIG_COMPLETED);
    }
    c->stop_prealloc = true;
    if (c->prealloc_started)
        pthread_join(c->prealloc, NULL);
    in_close_listener(c);
    pc_dst_cleanup(c);
    pthread_mutex_lock(&m->lock);
    m->fd = -1;
    pthread_mutex_unlock(&m->lock);
    if (c->fd >= 0 && failed && !c->from_file)
        drain_before_close(c->fd);
    if (c->fd >= 0)
        close(c->fd);
    stream_fini(&c->s);
    bitmap_free(c->received);
    free(c);
    return NULL;
}
