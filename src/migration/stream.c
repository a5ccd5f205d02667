#include "migration/stream.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "migration/stream_hash.h"

_Static_assert(GWS_MAX_ZSTD_DATA == ZSTD_COMPRESSBOUND(GWS_MAX_BATCH * GWS_PAGE_SIZE),
               "GWS_MAX_ZSTD_DATA");

#define WBUF_SIZE (256u * 1024)
#define IBUF_SIZE (256u * 1024)
#define DIRECT_MIN (64u * 1024)   /* bodies this large skip the write buffer */

static size_t pad8(size_t n) { return (8 - (n & 7)) & 7; }

/* ---- io ops ---- */

static ssize_t fd_read(void *opaque, void *buf, size_t len)
{
    int fd = (int)(intptr_t)opaque;
    for (;;) {
        ssize_t r = read(fd, buf, len);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -errno;
    }
}

static ssize_t fd_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
    int fd = (int)(intptr_t)opaque;
    for (;;) {
        ssize_t r = writev(fd, iov, iovcnt > IOV_MAX ? IOV_MAX : iovcnt);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -errno;
    }
}

const struct stream_io_ops stream_fd_ops = { .read = fd_read, .writev = fd_writev };

void stream_sock_init(struct stream_sock *k, int fd, bool (*stop)(void *arg), void *arg)
{
    k->fd = fd;
    k->stop = stop;
    k->arg = arg;
    k->cut = false;
}

/* Until the socket is ready for `events`: 0, or -EINTR once k->stop says
 * so (checked each STREAM_SOCK_STEP_MS), or -errno. */
static int sock_wait(struct stream_sock *k, short events)
{
    for (;;) {
        if (k->stop && k->stop(k->arg))
            return -EINTR;
        struct pollfd p = { k->fd, events, 0 };
        int r = poll(&p, 1, STREAM_SOCK_STEP_MS);
        if (r > 0)
            return 0; /* ready, or an error or hang-up the call itself reports */
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

static ssize_t sock_read(void *opaque, void *buf, size_t len)
{
    struct stream_sock *k = opaque;
    for (;;) {
        ssize_t r = recv(k->fd, buf, len, MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if (errno != EAGAIN && errno != EINTR)
            return -errno;
        int w = errno == EAGAIN ? sock_wait(k, POLLIN) : 0;
        if (w < 0)
            return w;
    }
}

static ssize_t sock_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
    struct stream_sock *k = opaque;
    struct msghdr msg = { .msg_iov = (struct iovec *)iov,
                          .msg_iovlen = (size_t)(iovcnt > IOV_MAX ? IOV_MAX : iovcnt) };
    for (bool waited = false;;) {
        ssize_t r = sendmsg(k->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno != EAGAIN && errno != EINTR)
            return -errno;
        if (errno == EINTR)
            continue;
        /* Ready by poll, refused by sendmsg (TCP under memory pressure
         * says writable and still has no room): no spinning. */
        if (waited) {
            struct timespec ts = { 0, 1000000 };
            nanosleep(&ts, NULL);
        }
        int w = sock_wait(k, POLLOUT);
        if (w < 0) {
            k->cut = true;
            return w;
        }
        waited = true;
    }
}

const struct stream_io_ops stream_sock_ops = { .read = sock_read, .writev = sock_writev };

static ssize_t mem_read(void *opaque, void *buf, size_t len)
{
    struct stream_membuf *m = opaque;
    size_t n = m->len - m->pos < len ? m->len - m->pos : len;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return (ssize_t)n;
}

static ssize_t mem_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
    struct stream_membuf *m = opaque;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (m->out_len + total > m->out_cap) {
        size_t cap = m->out_cap ? m->out_cap : 65536;
        while (cap < m->out_len + total)
            cap *= 2;
        uint8_t *n = realloc(m->out, cap);
        if (!n)
            return -ENOMEM;
        m->out = n;
        m->out_cap = cap;
    }
    for (int i = 0; i < iovcnt; i++) {
        memcpy(m->out + m->out_len, iov[i].iov_base, iov[i].iov_len);
        m->out_len += iov[i].iov_len;
    }
    return (ssize_t)total;
}

const struct stream_io_ops stream_mem_ops = { .read = mem_read, .writev = mem_writev };

/* ---- common ---- */

int stream_init(struct stream *s, const struct stream_io_ops *ops, void *opaque)
{
    memset(s, 0, sizeof(*s));
    s->ops = ops;
    s->opaque = opaque;
    return 0;
}

void stream_fini(struct stream *s)
{
    free(s->wbuf);
    free(s->rbuf);
    free(s->ibuf);
    free(s->zbuf);
    ZSTD_freeCCtx(s->zcctx);
    ZSTD_freeDCtx(s->zdctx);
    s->wbuf = s->rbuf = s->ibuf = s->zbuf = NULL;
    s->zcctx = s->zdctx = NULL;
}

int stream_error_get(const struct stream *s, struct gw_error *err)
{
    if (s->error)
        gw_error_set(err, -s->error, "%s", s->errmsg[0] ? s->errmsg : strerror(-s->error));
    return s->error;
}

int stream_record_error(struct stream *s, const struct stream_record *rec, int err,
                        const char *fmt, ...)
{
    if (s->error)
        return s->error;
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return stream_set_error(s, err, "record %llu (%s) at offset %llu: %s",
                            (unsigned long long)rec->index, stream_record_name(rec->type),
                            (unsigned long long)rec->offset, what);
}

int stream_set_error(struct stream *s, int err, const char *fmt, ...)
{
    if (err > 0)
        err = -err;
    if (s->error == 0) {
        s->error = err ? err : -EIO;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
        va_end(ap);
    }
    return s->error;
}

uint64_t stream_checksum(const void *data, size_t len)
{
    struct iovec iov = { (void *)data, len };
    return stream_hash(&iov, 1);
}

const char *stream_record_name(uint32_t type)
{
    switch (type) {
    case GWS_HEADER: return "HEADER";
    case GWS_PAGE_DATA: return "PAGE_DATA";
    case GWS_ZERO_PAGES: return "ZERO_PAGES";
    case GWS_PAGE_DATA_ZSTD: return "PAGE_DATA_ZSTD";
    case GWS_VCPU_STATE: return "VCPU_STATE";
    case GWS_DEVICE_STATE: return "DEVICE_STATE";
    case GWS_END_OF_ITERATION: return "END_OF_ITERATION";
    case GWS_END_OF_STREAM: return "END_OF_STREAM";
    case GWS_COMMIT: return "COMMIT";
    case GWS_RP_LOADED: return "RP_LOADED";
    case GWS_RP_RESUMED: return "RP_RESUMED";
    case GWS_RP_FAILED: return "RP_FAILED";
    case GWS_INFO: return "INFO";
    case GWS_POSTCOPY_ADVISE: return "POSTCOPY_ADVISE";
    case GWS_POSTCOPY_LISTEN: return "POSTCOPY_LISTEN";
    case GWS_POSTCOPY_RUN: return "POSTCOPY_RUN";
    case GWS_DISCARD_PAGES: return "DISCARD_PAGES";
    case GWS_RP_REQ_PAGES: return "RP_REQ_PAGES";
    case GWS_POSTCOPY_RESUME: return "POSTCOPY_RESUME";
    case GWS_POSTCOPY_PAUSE: return "POSTCOPY_PAUSE";
    case GWS_PING: return "PING";
    case GWS_MIGRATION_ID: return "MIGRATION_ID";
    case GWS_CPU_MODEL: return "CPU_MODEL";
    case GWS_RP_PONG: return "RP_PONG";
    case GWS_RP_INSTALLED: return "RP_INSTALLED";
    case GWS_RP_RECV_BITMAP: return "RP_RECV_BITMAP";
    case GWS_RP_RECV_BITMAP_PART: return "RP_RECV_BITMAP_PART";
    case GWS_RP_POSTCOPY_DONE: return "RP_POSTCOPY_DONE";
    case GWS_CHECKPOINT_BEGIN: return "CHECKPOINT_BEGIN";
    case GWS_CHECKPOINT_END: return "CHECKPOINT_END";
    case GWS_RP_CHECKPOINT_ACK: return "RP_CHECKPOINT_ACK";
    default: return (type & GWS_OPTIONAL) ? "unknown-optional" : "unknown";
    }
}

uint32_t stream_record_max_len(uint32_t type)
{
    switch (type) {
    case GWS_HEADER: return GWS_MAX_HEADER_BODY;
    case GWS_PAGE_DATA: return GWS_MAX_PAGES_BODY;
    case GWS_ZERO_PAGES: return GWS_MAX_ZERO_BODY;
    case GWS_PAGE_DATA_ZSTD: return GWS_MAX_ZSTD_BODY;
    case GWS_VCPU_STATE: return GWS_MAX_VCPU_BODY;
    case GWS_DEVICE_STATE: return GWS_MAX_DEVICE_BODY;
    case GWS_END_OF_ITERATION: return sizeof(struct gws_end_of_iteration);
    case GWS_END_OF_STREAM:
    case GWS_COMMIT:
    case GWS_RP_LOADED:
    case GWS_RP_RESUMED: return 0;
    case GWS_RP_FAILED: return GWS_MAX_REASON_BODY;
    case GWS_POSTCOPY_ADVISE: return sizeof(struct gws_postcopy_advise);
    case GWS_POSTCOPY_RUN:
    case GWS_POSTCOPY_RESUME:
    case GWS_POSTCOPY_PAUSE:
    case GWS_RP_POSTCOPY_DONE: return 0;
    case GWS_DISCARD_PAGES: return GWS_MAX_DISCARD_BODY;
    case GWS_RP_REQ_PAGES: return GWS_MAX_ZERO_BODY;
    case GWS_RP_RECV_BITMAP: return GWS_MAX_BITMAP_BODY;
    case GWS_RP_RECV_BITMAP_PART: return GWS_MAX_BITMAP_PART_BODY;
    case GWS_PING:
    case GWS_RP_PONG: return sizeof(struct gws_ping);
    case GWS_RP_INSTALLED: return 8;
    case GWS_MIGRATION_ID: return sizeof(struct gws_migration_id);
    case GWS_INFO: return GWS_MAX_TEXT_BODY;
    case GWS_CPU_MODEL: return GWS_MAX_CPU_MODEL_BODY;
    default: return GWS_MAX_BODY;
    }
}

/* ---- writing ---- */

static int write_all(struct stream *s, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = s->ops->writev(s->opaque, iov, n);
        if (w < 0)
            return stream_set_error(s, (int)w, "write failed: %s", strerror((int)-w));
        if (w == 0)
            return stream_set_error(s, EPIPE, "write failed: connection closed");
        s->bytes += (uint64_t)w;
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

int stream_flush(struct stream *s)
{
    if (s->error)
        return s->error;
    if (!s->wlen)
        return 0;
    struct iovec iov = { s->wbuf, s->wlen };
    s->wlen = 0;
    return write_all(s, &iov, 1);
}

static int buffer(struct stream *s, const void *data, size_t len)
{
    if (!s->wbuf && !(s->wbuf = malloc(WBUF_SIZE)))
        return stream_set_error(s, ENOMEM, "out of memory");
    while (len) {
        if (s->wlen == WBUF_SIZE && stream_flush(s) < 0)
            return s->error;
        size_t n = WBUF_SIZE - s->wlen < len ? WBUF_SIZE - s->wlen : len;
        memcpy(s->wbuf + s->wlen, data, n);
        s->wlen += n;
        data = (const uint8_t *)data + n;
        len -= n;
    }
    return 0;
}

int stream_write_preamble(struct stream *s)
{
    return stream_write_preamble_flags(s, 0);
}

int stream_write_preamble_flags(struct stream *s, uint32_t flags)
{
    struct gws_preamble p = { .version = GWS_VERSION, .flags = flags };
    memcpy(p.magic, GWS_MAGIC, 8);
    s->queued += sizeof(p);
    return buffer(s, &p, sizeof(p));
}

#define MAX_PARTS STREAM_MAX_PARTS

int stream_write_record(struct stream *s, uint32_t type, const struct iovec *parts, int nparts)
{
    if (s->error)
        return s->error;
    if (nparts > MAX_PARTS)
        return stream_set_error(s, EINVAL, "too many record parts");
    size_t len = 0;
    for (int i = 0; i < nparts; i++)
        len += parts[i].iov_len;
    if (len > stream_record_max_len(type))
        return stream_set_error(s, EMSGSIZE, "record %llu (%s): body of %zu bytes exceeds the limit of %u",
                                (unsigned long long)s->records + 1, stream_record_name(type), len,
                                stream_record_max_len(type));
    struct gws_record_header h = { type, (uint32_t)len };
    static const uint8_t zeros[8];
    size_t pad = pad8(len);
    struct iovec hv[MAX_PARTS + 2];
    hv[0] = (struct iovec){ &h, sizeof(h) };
    for (int i = 0; i < nparts; i++)
        hv[1 + i] = parts[i];
    hv[1 + nparts] = (struct iovec){ (void *)zeros, pad };
    struct gws_record_trailer t = { stream_hash(hv, nparts + 2) };
    s->records++;
    s->queued += sizeof(h) + len + pad + sizeof(t);
    if (len < DIRECT_MIN) {
        buffer(s, &h, sizeof(h));
        for (int i = 0; i < nparts; i++)
            buffer(s, parts[i].iov_base, parts[i].iov_len);
        buffer(s, zeros, pad);
        return buffer(s, &t, sizeof(t));
    }
    /* Large: flush what is buffered, then send straight from the caller. */
    if (stream_flush(s) < 0)
        return s->error;
    struct iovec iov[MAX_PARTS + 3];
    int n = 0;
    iov[n++] = (struct iovec){ &h, sizeof(h) };
    for (int i = 0; i < nparts; i++)
        iov[n++] = parts[i];
    if (pad)
        iov[n++] = (struct iovec){ (void *)zeros, pad };
    iov[n++] = (struct iovec){ &t, sizeof(t) };
    return write_all(s, iov, n);
}

/* ---- reading ---- */

static int read_exact(struct stream *s, void *buf, size_t len, bool *eof_at_start)
{
    uint8_t *p = buf;
    size_t got = 0;
    if (eof_at_start)
        *eof_at_start = false;
    if (!s->ibuf && !(s->ibuf = malloc(IBUF_SIZE)))
        return stream_set_error(s, ENOMEM, "out of memory");
    while (got < len) {
        if (s->ipos < s->ilen) {
            size_t n = s->ilen - s->ipos < len - got ? s->ilen - s->ipos : len - got;
            memcpy(p + got, s->ibuf + s->ipos, n);
            s->ipos += n;
            got += n;
            continue;
        }
        /* Large reads bypass the read-ahead buffer. */
        ssize_t r;
        if (len - got >= IBUF_SIZE) {
            r = s->ops->read(s->opaque, p + got, len - got);
            if (r > 0) {
                got += (size_t)r;
                continue;
            }
        } else {
            r = s->ops->read(s->opaque, s->ibuf, IBUF_SIZE);
            if (r > 0) {
                s->ilen = (size_t)r;
                s->ipos = 0;
                continue;
            }
        }
        if (r == 0) {
            if (got == 0 && eof_at_start) {
                *eof_at_start = true;
                return -ENODATA;
            }
            if (s->bytes < sizeof(struct gws_preamble))
                return stream_set_error(s, EPIPE, "stream truncated at offset %llu (in the preamble)",
                                        (unsigned long long)(s->bytes + got));
            return stream_set_error(s, EPIPE, "stream truncated at offset %llu (inside record %llu)",
                                    (unsigned long long)(s->bytes + got),
                                    (unsigned long long)s->records + 1);
        }
        return stream_set_error(s, (int)r, "read failed: %s", strerror((int)-r));
    }
    s->bytes += len;
    return 0;
}

int stream_read_preamble(struct stream *s)
{
    uint32_t flags;
    int r = stream_read_preamble_flags(s, &flags);
    if (r == 0 && flags != 0)
        return stream_set_error(s, EPROTO, "stream flags 0x%x mark a post-copy preempt channel, "
                                "not a migration stream", flags);
    return r;
}

int stream_read_preamble_flags(struct stream *s, uint32_t *flags)
{
    struct gws_preamble p;
    if (read_exact(s, &p, sizeof(p), NULL) < 0)
        return s->error;
    if (memcmp(p.magic, GWS_MAGIC, 8) != 0)
        return stream_set_error(s, EPROTO, "not a godwit migration stream (bad magic)");
    if (p.version != GWS_VERSION)
        return stream_set_error(s, EPROTONOSUPPORT,
                                "stream format version %u is not supported (this godwit reads %u)",
                                p.version, GWS_VERSION);
    if (p.flags & ~GWS_CHANNEL_PREEMPT)
        return stream_set_error(s, EPROTO, "unknown stream flags 0x%x", p.flags);
    *flags = p.flags;
    return 0;
}

int stream_read_record(struct stream *s, struct stream_record *rec)
{
    if (s->error)
        return s->error;
    struct gws_record_header h;
    uint64_t offset = s->bytes;
    bool eof;
    int r = read_exact(s, &h, sizeof(h), &eof);
    if (r == -ENODATA && eof)
        return -ENODATA;
    if (r < 0)
        return s->error;
    struct stream_record cur = { .type = h.type, .length = h.length, .offset = offset,
                                 .index = s->records + 1 };
    if (h.length > stream_record_max_len(h.type))
        return stream_record_error(s, &cur, EMSGSIZE, "length %u exceeds the limit of %u",
                                   h.length, stream_record_max_len(h.type));
    size_t pad = pad8(h.length);
    size_t need = h.length + pad + sizeof(struct gws_record_trailer);
    if (need > s->rcap) {
        uint8_t *n = realloc(s->rbuf, need);
        if (!n)
            return stream_set_error(s, ENOMEM, "out of memory");
        s->rbuf = n;
        s->rcap = need;
    }
    if (read_exact(s, s->rbuf, need, NULL) < 0)
        return s->error;
    for (size_t i = 0; i < pad; i++)
        if (s->rbuf[h.length + i])
            return stream_record_error(s, &cur, EPROTO, "padding is not zero");
    struct gws_record_trailer t;
    memcpy(&t, s->rbuf + h.length + pad, sizeof(t));
    struct iovec hv[2] = { { &h, sizeof(h) }, { s->rbuf, h.length + pad } };
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION /* let fuzzers past the checksum */
    if (stream_hash(hv, 2) != t.checksum)
#else
    if (0)
#endif
        return stream_record_error(s, &cur, EBADMSG, "checksum mismatch");
    cur.body = s->rbuf;
    *rec = cur;
    s->records++;
    return 0;
}
