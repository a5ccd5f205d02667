/* Stream codec micro-benchmark: write + read round trip of guest pages
 * through a socketpair (AF_UNIX) or a pipe, writer and reader in two
 * threads, reader copying each page into a destination buffer (what the RAM
 * loader does). Source and destination buffers are 64 MiB, pre-faulted and
 * reused, so first-touch costs (docs: DESIGN.md) are not measured.
 *
 *   make && cc -O2 -g -Isrc -D_GNU_SOURCE -pthread bench/stream_codec_bench.c \
 *       build/libgodwit.a -lzstd -lxxhash -o build/stream_codec_bench
 *   build/stream_codec_bench [GiB]        (default 1)
 *
 * Prints one line per case: logical MB/s (guest bytes covered per second)
 * and wire MB/s (stream bytes per second). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migration/stream_hash.h"
#include "migration/stream_records.h"

#define BUF_PAGES (16384u) /* 64 MiB */
#define CALL_PAGES 4096u   /* pages per stream_write_pages call */

struct bench_case {
    const char *name;
    int fill;            /* 0 zero, 1 random-ish, 2 compressible */
    int zlevel;
    bool pipe;
};

struct job {
    int fd;
    uint64_t pages;
    int zlevel;
    uint8_t *src;
    int rc;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *writer(void *arg)
{
    struct job *j = arg;
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)j->fd);
    struct stream_vm_info vm = { .name = "bench", .nr_vcpus = 1, .ram_size = BUF_PAGES * 4096ULL,
                                 .nr_regions = 1, .regions = { { 0, BUF_PAGES * 4096ULL } } };
    static const void *pg[CALL_PAGES];
    static uint64_t pfn[CALL_PAGES];
    stream_write_header(&s, &vm);
    stream_set_compress(&s, j->zlevel);
    for (uint64_t done = 0; done < j->pages && !stream_get_error(&s); done += CALL_PAGES) {
        for (unsigned i = 0; i < CALL_PAGES; i++) {
            pfn[i] = (done + i) % BUF_PAGES;
            pg[i] = j->src + pfn[i] * 4096;
        }
        stream_write_pages(&s, pfn, pg, CALL_PAGES);
    }
    stream_write_eos(&s);
    j->rc = stream_get_error(&s);
    if (j->rc)
        fprintf(stderr, "writer: %s\n", stream_error(&s));
    stream_fini(&s);
    close(j->fd);
    return NULL;
}

static int reader(int fd, uint8_t *dst, uint64_t *wire)
{
    struct stream s;
    struct stream_vm_info vm;
    struct stream_rec r;
    int rc;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)fd);
    rc = stream_read_header(&s, &vm);
    while (rc == 0 && (rc = stream_next_record(&s, &r)) == 0) {
        if (r.type == GWS_PAGE_DATA || r.type == GWS_PAGE_DATA_ZSTD)
            for (uint32_t i = 0; i < r.u.pages.count; i++)
                memcpy(dst + r.u.pages.pfn[i] * 4096, r.u.pages.data + i * 4096ULL, 4096);
        else if (r.type == GWS_ZERO_PAGES)
            for (uint32_t i = 0; i < r.u.pages.count; i++)
                memset(dst + r.u.pages.pfn[i] * 4096, 0, 4096);
    }
    if (rc != -ENODATA)
        fprintf(stderr, "reader: %s\n", stream_error(&s));
    *wire = s.bytes;
    stream_fini(&s);
    return rc == -ENODATA ? 0 : rc;
}

static void fill(uint8_t *p, int kind)
{
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < BUF_PAGES * 4096ULL; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t v = kind == 0 ? 0 : kind == 1 ? x : (x & 0x0f0f) * ((i / 4096) % 7 + 1);
        memcpy(p + i, &v, 8);
        if (kind && i % 4096 == 0)
            p[i] |= 1; /* never a zero page */
    }
}

/* The record checksum alone over one 2 MiB page record's body, in cache:
 * each build, for the ratio (CPU only; no memory is faulted in). */
static void bench_hash(const uint8_t *buf)
{
    struct iovec iov = { (void *)buf, 512 * 4096 };
    const struct {
        const char *name;
        uint64_t (*fn)(const struct iovec *, int);
    } builds[] = { { "checksum XXH3, generic build", stream_hash_generic },
                   { "checksum XXH3, AVX2 build", stream_hash_avx2 },
                   { "checksum XXH3, as dispatched", stream_hash } };
    for (unsigned b = 0; b < 3; b++) {
        if (builds[b].fn == stream_hash_avx2 && !__builtin_cpu_supports("avx2"))
            continue;
        uint64_t sum = 0;
        double t0 = now();
        for (int i = 0; i < 2000; i++)
            sum += builds[b].fn(&iov, 1);
        double dt = now() - t0;
        printf("%-42s %8.0f MB/s  (digest sum %016llx)\n", builds[b].name,
               2000.0 * iov.iov_len / dt / 1e6, (unsigned long long)sum);
    }
}

int main(int argc, char **argv)
{
    double gib = argc > 1 ? atof(argv[1]) : 1.0;
    uint64_t pages = (uint64_t)(gib * 262144);
    pages -= pages % CALL_PAGES;
    uint8_t *src = aligned_alloc(4096, BUF_PAGES * 4096ULL), *dst = aligned_alloc(4096, BUF_PAGES * 4096ULL);
    if (!src || !dst)
        return 1;
    memset(dst, 1, BUF_PAGES * 4096ULL);
    const struct bench_case cases[] = {
        { "non-zero pages, socketpair", 1, 0, false },
        { "non-zero pages, pipe", 1, 0, true },
        { "zero pages, socketpair", 0, 0, false },
        { "compressible pages, zstd -1, socketpair", 2, -1, false },
        { "compressible pages, zstd 1, socketpair", 2, 1, false },
        { "compressible pages, no zstd, socketpair", 2, 0, false },
    };
    fill(src, 1);
    bench_hash(src);
    printf("%.2f GiB of guest pages per case\n", (double)pages / 262144);
    for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        fill(src, cases[c].fill);
        int sv[2];
        if (cases[c].pipe ? pipe(sv) : socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
            return 1;
        int rfd = sv[cases[c].pipe ? 0 : 1], wfd = sv[cases[c].pipe ? 1 : 0];
        struct job j = { .fd = wfd, .pages = pages, .zlevel = cases[c].zlevel, .src = src };
        double t0 = now();
        pthread_t t;
        pthread_create(&t, NULL, writer, &j);
        uint64_t wire;
        int rc = reader(rfd, dst, &wire);
        pthread_join(t, NULL);
        double dt = now() - t0;
        close(rfd);
        if (rc || j.rc)
            return 1;
        if (cases[c].fill && memcmp(src, dst, BUF_PAGES * 4096ULL))
            return fprintf(stderr, "data mismatch\n"), 1;
        printf("%-42s %8.0f MB/s logical  %8.0f MB/s wire  (%.2f s, %.1f MiB on the wire)\n",
               cases[c].name, (double)pages * 4096 / dt / 1e6, (double)wire / dt / 1e6, dt,
               (double)wire / 1048576);
        fflush(stdout);
        sleep(1);
    }
    free(src);
    free(dst);
    return 0;
}
