/* How fast this host lets a process fill memory it has never used, against
 * memory it has used: the cost a migration destination pays for every page
 * it receives, whatever the hypervisor. Each case gets its own memfd of the
 * given size that stays allocated until the end, so every "cold" case
 * really gets memory this process has not touched before (on hosts that
 * are themselves VMs, the outer host backs such memory on first touch);
 * "again" rewrites memory already filled.
 *
 *   build/bench/fresh_memory_bench [MiB] [--json FILE]
 *
 * Cases: pwrite into holes (what a destination does without preparing
 * memory), fallocate then pwrite (what godwit's destination does),
 * MADV_POPULATE_WRITE then pwrite, pwrite into holes from 2 threads, and
 * pwrite again over memory already written. */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1u << 20)

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int new_memfd(size_t size)
{
    int fd = memfd_create("fresh-memory-bench", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        perror("memfd");
        exit(1);
    }
    return fd;
}

struct writer {
    int fd;
    size_t from, to;
    const char *buf;
};

static void *write_range(void *arg)
{
    const struct writer *w = arg;
    for (size_t off = w->from; off < w->to; off += CHUNK) {
        if (pwrite(w->fd, w->buf, CHUNK, (off_t)off) != CHUNK) {
            perror("pwrite");
            exit(1);
        }
    }
    return NULL;
}

static void fill(int fd, size_t size, const char *buf, unsigned threads)
{
    pthread_t t[2];
    struct writer w[2];
    for (unsigned i = 0; i < threads; i++) {
        w[i] = (struct writer){ fd, size / threads * i, size / threads * (i + 1), buf };
        if (pthread_create(&t[i], NULL, write_range, &w[i]) != 0)
            exit(1);
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
}

struct result {
    const char *name;
    double prepare_s, fill_s;
};

int main(int argc, char **argv)
{
    size_t mib = 1024;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc)
            json = argv[++i];
        else
            mib = strtoull(argv[i], NULL, 10);
    }
    if (mib == 0 || mib % 2) {
        fprintf(stderr, "usage: %s [MiB, even] [--json FILE]\n", argv[0]);
        return 2;
    }
    size_t size = mib << 20;
    char *buf = malloc(CHUNK);
    if (!buf)
        return 1;
    memset(buf, 0x5a, CHUNK);
    struct result r[5];
    double t;

    int holes = new_memfd(size);
    t = now_s();
    fill(holes, size, buf, 1);
    r[0] = (struct result){ "pwrite into holes", 0, now_s() - t };

    int falloc = new_memfd(size);
    t = now_s();
    if (fallocate(falloc, 0, 0, (off_t)size) < 0)
        perror("fallocate");
    r[1].prepare_s = now_s() - t;
    t = now_s();
    fill(falloc, size, buf, 1);
    r[1] = (struct result){ "fallocate, then pwrite", r[1].prepare_s, now_s() - t };

    int pop = new_memfd(size);
    void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, pop, 0);
    t = now_s();
    if (map == MAP_FAILED || madvise(map, size, MADV_POPULATE_WRITE) < 0)
        perror("MADV_POPULATE_WRITE");
    r[2].prepare_s = now_s() - t;
    t = now_s();
    fill(pop, size, buf, 1);
    r[2] = (struct result){ "MADV_POPULATE_WRITE, then pwrite", r[2].prepare_s, now_s() - t };

    int two = new_memfd(size);
    t = now_s();
    fill(two, size, buf, 2);
    r[3] = (struct result){ "pwrite into holes, 2 threads", 0, now_s() - t };

    t = now_s();
    fill(holes, size, buf, 1);
    r[4] = (struct result){ "pwrite again (memory already used)", 0, now_s() - t };

    printf("%-36s %10s %10s %10s\n", "case", "prepare", "fill", "GB/s");
    FILE *jf = json ? fopen(json, "a") : NULL;
    char stamp[32];
    time_t now = time(NULL);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", localtime(&now));
    for (unsigned i = 0; i < 5; i++) {
        double total = r[i].prepare_s + r[i].fill_s;
        printf("%-36s %8.3f s %8.3f s %10.2f\n", r[i].name, r[i].prepare_s, r[i].fill_s,
               (double)size / total / 1e9);
        if (jf)
            fprintf(jf, "{\"bench\": \"fresh_memory\", \"case\": \"%s\", \"mib\": %zu, "
                        "\"prepare_s\": %.4f, \"fill_s\": %.4f, \"gb_s\": %.3f, \"time\": \"%s\"}\n",
                    r[i].name, mib, r[i].prepare_s, r[i].fill_s, (double)size / total / 1e9, stamp);
    }
    if (jf)
        fclose(jf);
    if (map != MAP_FAILED)
        munmap(map, size);
    close(holes);
    close(falloc);
    close(pop);
    close(two);
    free(buf);
    return 0;
}
