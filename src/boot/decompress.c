#include "boot/decompress.h"

#include <errno.h>
#include <stdbool.h>
#include <lz4.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#define LZ4_LEGACY_MAGIC 0x184c2102u
#define LZ4_LEGACY_BLOCK (8u << 20)
/* A hostile header may ask for a huge dictionary; kernels use <= 64 MiB. */
#define LZMA_MEMLIMIT    (256ULL << 20)

const char *decompress_format(const uint8_t *b, size_t len)
{
    if (len >= 4 && memcmp(b, "\x7f" "ELF", 4) == 0) return "none";
    if (len >= 2 && b[0] == 0x1f && (b[1] == 0x8b || b[1] == 0x9e)) return "gzip";
    if (len >= 6 && memcmp(b, "\xfd" "7zXZ\0", 6) == 0) return "xz";
    if (len >= 4 && memcmp(b, "\x28\xb5\x2f\xfd", 4) == 0) return "zstd";
    if (len >= 4 && memcmp(b, "\x02\x21\x4c\x18", 4) == 0) return "lz4";
    if (len >= 3 && b[0] == 0x5d && b[1] == 0 && b[2] == 0) return "lzma";
    if (len >= 3 && memcmp(b, "BZh", 3) == 0) return "bzip2";
    if (len >= 4 && memcmp(b, "\x89LZO", 4) == 0) return "lzo";
    return NULL;
}

/* A growing output buffer for at most `max` bytes of output. Streaming
 * decoders get room for one byte more than max: output that fills it is
 * too big, output that ends at max is not (a step of headroom would refuse
 * outputs just under the limit). */
struct obuf {
    uint8_t *p;
    size_t len, cap, max;
    size_t first;              /* the first capacity, doubled from there */
};

/* Kernels compress 3-5 times: the first buffer is 4 times the input, in
 * 64 KiB .. 16 MiB (a small payload does not cost a 16 MiB allocation). */
#define OBUF_FIRST_MIN (64u << 10)
#define OBUF_FIRST_MAX (16u << 20)
/* liblzma refused the stream's dictionary: more than LZMA_MEMLIMIT */
#define ERR_MEMLIMIT EOVERFLOW

/* Capacity for `want` bytes in all (want <= max + LZ4_LEGACY_BLOCK). */
static int obuf_reserve(struct obuf *o, size_t want)
{
    if (want <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : o->first;
    while (cap < want)
        cap *= 2;
    if (cap > o->max + 1)
        cap = want > o->max + 1 ? want : o->max + 1;
    uint8_t *n = realloc(o->p, cap);
    if (!n)
        return -ENOMEM;
    o->p = n;
    o->cap = cap;
    return 0;
}

/* Room for the next step of a streaming decoder (the buffer grows when
 * full), up to max + 1 bytes in all; -EFBIG once the output passed max. */
static int obuf_step(struct obuf *o)
{
    if (o->len > o->max)
        return -EFBIG;
    return o->len < o->cap ? 0 : obuf_reserve(o, o->len + 1);
}

static int gunzip(const uint8_t *in, size_t len, struct obuf *o)
{
    z_stream z = { 0 };
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return -ENOMEM;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    int r, e;
    do {
        if ((e = obuf_step(o)) < 0) {
            inflateEnd(&z);
            return e;
        }
        size_t room = o->cap - o->len;
        z.next_out = o->p + o->len;
        z.avail_out = room > UINT32_MAX ? UINT32_MAX : (uInt)room;
        r = inflate(&z, Z_NO_FLUSH);
        o->len = (size_t)(z.next_out - o->p);
    } while (r == Z_OK);
    inflateEnd(&z);
    if (r == Z_MEM_ERROR)
        return -ENOMEM;
    return r == Z_STREAM_END ? 0 : -EINVAL;
}

static int unxz(const uint8_t *in, size_t len, struct obuf *o, bool alone)
{
    lzma_stream s = LZMA_STREAM_INIT;
    lzma_ret r = alone ? lzma_alone_decoder(&s, LZMA_MEMLIMIT)
                       : lzma_stream_decoder(&s, LZMA_MEMLIMIT, 0);
    if (r != LZMA_OK)
        return -ENOMEM;
    s.next_in = in;
    s.avail_in = len;
    int e;
    do {
        if ((e = obuf_step(o)) < 0) {
            lzma_end(&s);
            return e;
        }
        s.next_out = o->p + o->len;
        s.avail_out = o->cap - o->len;
        r = lzma_code(&s, s.avail_in ? LZMA_RUN : LZMA_FINISH);
        o->len = o->cap - s.avail_out;
    } while (r == LZMA_OK);
    lzma_end(&s);
    if (r == LZMA_MEMLIMIT_ERROR)
        return -ERR_MEMLIMIT;
    if (r == LZMA_MEM_ERROR)
        return -ENOMEM;
    return r == LZMA_STREAM_END ? 0 : -EINVAL;
}

static int unzstd(const uint8_t *in, size_t len, struct obuf *o)
{
    ZSTD_DStream *d = ZSTD_createDStream();
    if (!d)
        return -ENOMEM;
    ZSTD_inBuffer ib = { in, len, 0 };
    size_t r = 0;
    int e;
    for (;;) {
        if ((e = obuf_step(o)) < 0) {
            ZSTD_freeDStream(d);
            return e;
        }
        ZSTD_outBuffer ob = { o->p, o->cap, o->len };
        r = ZSTD_decompressStream(d, &ob, &ib);
        o->len = ob.pos;
        if (ZSTD_isError(r)) {
            ZSTD_freeDStream(d);
            return -EINVAL;
        }
        if (r == 0 || (ib.pos == ib.size && ob.pos < ob.size))
            break;
    }
    ZSTD_freeDStream(d);
    return r == 0 ? 0 : -EINVAL;
}

static int unlz4_legacy(const uint8_t *in, size_t len, struct obuf *o)
{
    size_t pos = 4;
    while (pos + 4 <= len) {
        uint32_t bsz;
        memcpy(&bsz, in + pos, 4);
        if (bsz == LZ4_LEGACY_MAGIC) { /* concatenated frames */
            pos += 4;
            continue;
        }
        pos += 4;
        if (bsz == 0 || bsz > len - pos || bsz > (uint32_t)LZ4_compressBound(LZ4_LEGACY_BLOCK))
            break; /* trailing size field or garbage: the kernel appends the length */
        /* Into the room there is; a block that does not fit is decoded
         * again with a whole block's room, even past max: the output is
         * checked after. */
        if (obuf_reserve(o, o->len + 1) < 0)
            return -ENOMEM;
        size_t room = o->cap - o->len;
        int n = LZ4_decompress_safe((const char *)in + pos, (char *)o->p + o->len, (int)bsz,
                                    (int)(room < LZ4_LEGACY_BLOCK ? room : LZ4_LEGACY_BLOCK));
        if (n < 0 && room < LZ4_LEGACY_BLOCK) {
            if (obuf_reserve(o, o->len + LZ4_LEGACY_BLOCK) < 0)
                return -ENOMEM;
            n = LZ4_decompress_safe((const char *)in + pos, (char *)o->p + o->len, (int)bsz,
                                    LZ4_LEGACY_BLOCK);
        }
        if (n < 0)
            return -EINVAL;
        o->len += (size_t)n;
        if (o->len > o->max)
            return -EFBIG;
        pos += bsz;
    }
    return o->len ? 0 : -EINVAL;
}

int decompress_payload(const uint8_t *in, size_t in_len, size_t max_out, uint8_t **out,
                       size_t *out_len, struct gw_error *err)
{
    const char *fmt = decompress_format(in, in_len);
    if (!fmt)
        return gw_error_set(err, ENOEXEC, "unknown kernel compression");
    if (max_out > DECOMPRESS_MAX)
        max_out = DECOMPRESS_MAX;
    size_t first = in_len < OBUF_FIRST_MAX / 4 ? in_len * 4 : OBUF_FIRST_MAX;
    struct obuf o = { .max = max_out, .first = first < OBUF_FIRST_MIN ? OBUF_FIRST_MIN : first };
    int r;
    if (strcmp(fmt, "none") == 0) {
        r = in_len > max_out ? -EFBIG : obuf_reserve(&o, in_len);
        if (r == 0) {
            memcpy(o.p, in, in_len);
            o.len = in_len;
        }
    } else if (strcmp(fmt, "gzip") == 0) {
        r = gunzip(in, in_len, &o);
    } else if (strcmp(fmt, "xz") == 0) {
        r = unxz(in, in_len, &o, false);
    } else if (strcmp(fmt, "lzma") == 0) {
        r = unxz(in, in_len, &o, true);
    } else if (strcmp(fmt, "zstd") == 0) {
        r = unzstd(in, in_len, &o);
    } else if (strcmp(fmt, "lz4") == 0) {
        r = unlz4_legacy(in, in_len, &o);
    } else {
        return gw_error_set(err, ENOTSUP, "kernel compression %s is not supported", fmt);
    }
    if (r == 0 && o.len > max_out) /* a decoder filled the byte past max */
        r = -EFBIG;
    if (r < 0) {
        free(o.p);
        if (r == -EFBIG)
            return gw_error_set(err, EFBIG, "%s payload: decompresses to more than %zu bytes",
                                fmt, max_out);
        if (r == -ERR_MEMLIMIT)
            return gw_error_set(err, ENOMEM, "%s payload: needs more than %llu MiB of decoder "
                                "memory (its dictionary)", fmt, LZMA_MEMLIMIT >> 20);
        return gw_error_set(err, -r, "%s payload: %s", fmt,
                            r == -ENOMEM ? "out of memory" : "corrupt data");
    }
    *out = o.p;
    *out_len = o.len;
    return 0;
}
