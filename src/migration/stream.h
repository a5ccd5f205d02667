/* Record codec for the migration stream (docs/stream-format.md).
 *
 * A struct stream reads or writes records over an io ops table: a file
 * descriptor (socket, pipe, file) or a memory buffer (tests, fuzzing). The
 * first error sticks: every later operation fails with it (QEMU's
 * qemu_file_get_error, redis rio).
 *
 * Writing: small records are gathered in a 256 KiB buffer; large ones (page
 * batches) go out with writev straight from guest memory, copied once.
 * Reading: every record's length is checked against GWS_MAX_BODY before
 * anything is allocated, its checksum and zero padding are verified, and
 * only then is it returned.
 *
 * This header is the record layer (framing, checksums, io); the typed
 * layer on top of it (header, pages with zero detection and zstd, vCPU and
 * device state, fully validated records) is migration/stream_records.h.
 *
 * Returns: 0 or -errno; the message ("record 17 (PAGE_DATA) at offset
 * 123456: checksum mismatch") is in stream_error(), or copied into a
 * struct gw_error by stream_error_get(). */
#ifndef GW_MIGRATION_STREAM_H
#define GW_MIGRATION_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/error.h"
#include "migration/stream_format.h"

struct stream_io_ops {
    /* > 0 bytes read, 0 at end of input, -errno on error. */
    ssize_t (*read)(void *opaque, void *buf, size_t len);
    /* bytes written (possibly short), or -errno. */
    ssize_t (*writev)(void *opaque, const struct iovec *iov, int iovcnt);
};

struct stream {
    const struct stream_io_ops *ops;
    void *opaque;
    int error;                 /* sticky: first -errno */
    char errmsg[256];
    /* writer */
    uint8_t *wbuf;
    size_t wlen;
    /* reader */
    uint8_t *rbuf;             /* record body + padding + trailer */
    size_t rcap;
    uint8_t *ibuf;             /* read-ahead buffer */
    size_t ilen, ipos;
    /* counters */
    uint64_t bytes;            /* bytes written or consumed */
    uint64_t queued;           /* writer: bytes taken to write, sent or still
                                  buffered (what a rate limit weighs: small
                                  records wait in the 256 KiB buffer) */
    uint64_t records;          /* records written or read (skipped ones too) */
    /* typed layer (stream_records.h); zero after stream_init */
    int zlevel;                /* writer: zstd level, 0 = no compression */
    void *zcctx, *zdctx;       /* ZSTD_CCtx / ZSTD_DCtx, created on first use */
    uint8_t *zbuf;             /* compressed (writer) or decompressed (reader) batch */
    size_t zcap;
    bool have_header, seen_eos;
    uint32_t nr_vcpus;         /* from the header read */
    unsigned nr_ram;           /* RAM as pfn ranges [ram_first, ram_end) */
    uint64_t ram_first[GWS_MAX_REGIONS], ram_end[GWS_MAX_REGIONS];
    bool (*pfn_ok)(void *opaque, uint64_t pfn);
    void *pfn_opaque;
    uint64_t pages, zero_pages, zstd_pages, skipped;
};

struct stream_record {
    uint32_t type;
    uint32_t length;
    const uint8_t *body;       /* valid until the next read */
    uint64_t offset;           /* stream offset of the record header */
    uint64_t index;            /* 1-based number of the record in the stream */
};

/* I/O over a file descriptor (fd not owned). */
extern const struct stream_io_ops stream_fd_ops;
/* I/O over memory: reads consume `data`, writes append to a growing buffer. */
struct stream_membuf {
    const uint8_t *data;
    size_t len, pos;
    uint8_t *out;
    size_t out_len, out_cap;
};
extern const struct stream_io_ops stream_mem_ops;
/* I/O over a socket whose waits can be called off (opaque: a struct
 * stream_sock). A read or write that has to wait for the peer waits in
 * steps of STREAM_SOCK_STEP_MS and gives up with -EINTR once stop(arg)
 * says so; a write given up that way sets `cut`: the peer may then hold
 * part of a record, and nothing more may be written on that connection.
 * Writes that need no wait never ask stop(). */
#define STREAM_SOCK_STEP_MS 20
struct stream_sock {
    int fd;
    bool (*stop)(void *arg);
    void *arg;
    bool cut;
};
void stream_sock_init(struct stream_sock *k, int fd, bool (*stop)(void *arg), void *arg);
extern const struct stream_io_ops stream_sock_ops;

int stream_init(struct stream *s, const struct stream_io_ops *ops, void *opaque);
/* The same connection through other ops (nothing buffered is lost). */
static inline void stream_set_io(struct stream *s, const struct stream_io_ops *ops, void *opaque)
{
    s->ops = ops;
    s->opaque = opaque;
}
void stream_fini(struct stream *s);
/* Set the sticky error (first one wins); returns it. */
int stream_set_error(struct stream *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int stream_get_error(const struct stream *s) { return s->error; }
static inline const char *stream_error(const struct stream *s) { return s->errmsg; }
/* Copy the sticky error into err (if any); returns it (0 or -errno). */
int stream_error_get(const struct stream *s, struct gw_error *err);
/* Set the sticky error with the record named: "record N (TYPE) at offset X: ...". */
int stream_record_error(struct stream *s, const struct stream_record *rec, int err,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- writing ---- */
int stream_write_preamble(struct stream *s);
/* Preamble with flags (GWS_CHANNEL_PREEMPT for a second channel). */
int stream_write_preamble_flags(struct stream *s, uint32_t flags);
/* One record whose body is the concatenation of `parts` (at most
 * STREAM_MAX_PARTS). Bodies of 64 KiB or more are sent straight from the
 * parts with writev (no copy); smaller ones are gathered in the buffer. */
#define STREAM_MAX_PARTS (GWS_MAX_BATCH + 16)
int stream_write_record(struct stream *s, uint32_t type, const struct iovec *parts, int nparts);
int stream_flush(struct stream *s);

/* ---- reading ---- */
/* Main-channel preamble (flags must be 0). */
int stream_read_preamble(struct stream *s);
/* Any channel's preamble; *flags gets its flags (known bits only). */
int stream_read_preamble_flags(struct stream *s, uint32_t *flags);
/* Next record, checked (length bound for its type before allocation,
 * checksum, padding). The body is not interpreted: unknown types, optional
 * or not, are returned. -ENODATA at a clean end of input between records
 * (not sticky). */
int stream_read_record(struct stream *s, struct stream_record *rec);

const char *stream_record_name(uint32_t type);
/* Largest body a record of this type may have (doc section 3.2). */
uint32_t stream_record_max_len(uint32_t type);
uint64_t stream_checksum(const void *data, size_t len);

#endif
