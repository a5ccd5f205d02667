/* userfaultfd on a memfd mapping like guest RAM: a thread touching missing
 * pages blocks until another thread installs them (UFFDIO_COPY / zero page),
 * an installed page is not installed twice, and the fault round trip is
 * timed (printed, not asserted: figures are for the benchmark notes).
 * Skips visibly where userfaultfd is not available. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "memory/uffd.h"

#define PAGES 2048

struct toucher {
    volatile uint8_t *mem;
    uint64_t lat_ns[PAGES];
    volatile int done;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void *touch(void *arg)
{
    struct toucher *t = arg;
    for (unsigned i = 0; i < PAGES; i++) {
        uint64_t t0 = now_ns();
        uint8_t v = t->mem[(size_t)i * 4096 + 7];
        t->lat_ns[i] = now_ns() - t0;
        if (v != (uint8_t)(i * 3 + 1) && !(i % 2 == 1 && v == 0))
            t->done = -1;
    }
    if (t->done == 0)
        t->done = 1;
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A memfd of len bytes mapped shared, as guest RAM is. */
static uint8_t *map_memfd(size_t len, int *memfd)
{
    *memfd = memfd_create("uffd-test", MFD_CLOEXEC);
    assert_true(*memfd >= 0);
    assert_int_equal(ftruncate(*memfd, (off_t)len), 0);
    uint8_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, *memfd, 0);
    assert_true(mem != MAP_FAILED);
    return mem;
}

static void test_faults_resolved(void **state)
{
    if (!uffd_available())
        skip();
    int memfd;
    uint8_t *mem = map_memfd((size_t)PAGES * 4096, &memfd);
    int fd = uffd_open();
    assert_true(fd >= 0);
    assert_int_equal(uffd_register(fd, mem, (uint64_t)PAGES * 4096), 0);

    static struct toucher t;
    memset(&t, 0, sizeof(t));
    t.mem = mem;
    pthread_t th;
    pthread_create(&th, NULL, touch, &t);
    static uint8_t page[4096];
    unsigned resolved = 0;
    while (resolved < PAGES) {
        uint64_t addr;
        int r = uffd_next_fault(fd, 5000, &addr);
        assert_int_equal(r, 1);
        unsigned i = (unsigned)((addr - (uint64_t)(uintptr_t)mem) / 4096);
        assert_true(i < PAGES);
        if (i % 2 == 1) {
            assert_int_equal(uffd_zero(fd, mem + (size_t)i * 4096, 4096, NULL), 0);
        } else {
            memset(page, 0, sizeof(page));
            page[7] = (uint8_t)(i * 3 + 1);
            assert_int_equal(uffd_copy(fd, mem + (size_t)i * 4096, page, 4096, NULL), 0);
        }
        resolved++;
    }
    pthread_join(th, NULL);
    assert_int_equal(t.done, 1);
    /* Installing a page that is already there is refused, not duplicated. */
    assert_int_equal(uffd_copy(fd, mem, page, 4096, NULL), -EEXIST);
    /* Nothing more to catch: a wait times out. */
    uint64_t addr;
    assert_int_equal(uffd_next_fault(fd, 10, &addr), 0);
    qsort(t.lat_ns, PAGES, sizeof(uint64_t), cmp);
    printf("# userfaultfd fault round trip over %d faults: p50 %.1f us, p99 %.1f us, max %.1f us\n",
           PAGES, t.lat_ns[PAGES / 2] / 1e3, t.lat_ns[PAGES * 99 / 100] / 1e3, t.lat_ns[PAGES - 1] / 1e3);
    assert_int_equal(uffd_unregister(fd, mem, (uint64_t)PAGES * 4096), 0);
    close(fd);
    munmap(mem, (size_t)PAGES * 4096);
    close(memfd);
}

/* A page already there stops a ranged install: the call says where, the
 * pages before it are in, the ones after it are not (the caller goes on
 * after it). */
static void test_copy_stops_at_a_present_page(void **state)
{
    if (!uffd_available())
        skip();
    int memfd;
    uint8_t *mem = map_memfd(16 * 4096, &memfd);
    mem[2 * 4096] = 0x5a;  /* page 2 present before registering */
    mem[10 * 4096] = 0x5b; /* page 10 too */
    int fd = uffd_open();
    assert_true(fd >= 0);
    assert_int_equal(uffd_register(fd, mem, 16 * 4096), 0);
    static uint8_t pages[8][4096];
    memset(pages, 0x11, sizeof(pages));
    uint64_t done = 99;
    assert_int_equal(uffd_copy(fd, mem, pages, 8 * 4096, &done), -EEXIST);
    assert_int_equal(done, 2 * 4096);
    assert_int_equal(uffd_copy(fd, mem + 3 * 4096, pages, 5 * 4096, &done), 0);
    assert_int_equal(done, 5 * 4096);
    assert_int_equal(uffd_zero(fd, mem + 8 * 4096, 8 * 4096, &done), -EEXIST);
    assert_int_equal(done, 2 * 4096);
    assert_int_equal(uffd_copy(fd, mem, pages, 4096, &done), -EEXIST);
    assert_int_equal(done, 0);
    /* What is there reads as installed, without a fault. */
    assert_int_equal(mem[1 * 4096], 0x11);
    assert_int_equal(mem[2 * 4096], 0x5a);
    assert_int_equal(mem[7 * 4096 + 9], 0x11);
    assert_int_equal(mem[9 * 4096], 0);
    assert_int_equal(mem[10 * 4096], 0x5b);
    assert_int_equal(uffd_unregister(fd, mem, 16 * 4096), 0);
    close(fd);
    munmap(mem, 16 * 4096);
    close(memfd);
}

#define MINOR_PAGES 256

struct minor_reader {
    volatile uint8_t *mem;
    uint8_t seen[MINOR_PAGES];
};

static void *read_pages(void *arg)
{
    struct minor_reader *r = arg;
    for (unsigned i = 0; i < MINOR_PAGES; i++)
        r->seen[i] = r->mem[(size_t)i * 4096 + 7];
    return NULL;
}

/* Minor faults: pages the memfd holds but that are not mapped (dropped
 * from the mapping with MADV_DONTNEED) fault; the handler rewrites some
 * through the memfd before mapping them, maps others as they are; a hole
 * still faults as missing and is filled by UFFDIO_COPY. */
static void test_minor_faults(void **state)
{
    if (!uffd_minor_available())
        skip();
    enum { N = MINOR_PAGES };
    size_t len = (size_t)N * 4096;
    int memfd;
    uint8_t *mem = map_memfd(len, &memfd);
    for (unsigned i = 0; i < N - 1; i++) /* the last page stays a hole */
        mem[(size_t)i * 4096 + 7] = (uint8_t)(i + 100);
    assert_int_equal(madvise(mem, len, MADV_DONTNEED), 0);
    int fd = uffd_open_minor();
    assert_true(fd >= 0);
    assert_int_equal(uffd_register_minor(fd, mem, len), 0);

    static struct minor_reader rd;
    memset(&rd, 0, sizeof(rd));
    rd.mem = mem;
    pthread_t th;
    pthread_create(&th, NULL, read_pages, &rd);
    static uint8_t page[4096];
    unsigned minor = 0, missing = 0;
    while (minor + missing < N) {
        struct uffd_fault f[8];
        int k = uffd_read_faults(fd, f, 8);
        assert_true(k >= 0);
        if (k == 0) {
            struct pollfd p = { fd, POLLIN, 0 };
            assert_int_equal(poll(&p, 1, 5000), 1);
            continue;
        }
        for (int j = 0; j < k; j++) {
            unsigned i = (unsigned)((f[j].addr - (uint64_t)(uintptr_t)mem) / 4096);
            assert_true(i < N);
            if (!f[j].minor) {
                assert_int_equal(i, N - 1);
                memset(page, 0, sizeof(page));
                page[7] = 42;
                assert_int_equal(uffd_copy(fd, mem + (size_t)i * 4096, page, 4096, NULL), 0);
                missing++;
                continue;
            }
            if (i % 2 == 0) {
                memset(page, 0, sizeof(page));
                page[7] = (uint8_t)(i + 1);
                assert_int_equal(pwrite(memfd, page, 4096, (off_t)i * 4096), 4096);
            }
            assert_int_equal(uffd_continue(fd, mem + (size_t)i * 4096, 4096, NULL), 0);
            minor++;
        }
    }
    pthread_join(th, NULL);
    assert_int_equal(missing, 1);
    for (unsigned i = 0; i < N - 1; i++)
        assert_int_equal(rd.seen[i], (uint8_t)(i % 2 == 0 ? i + 1 : i + 100));
    assert_int_equal(rd.seen[N - 1], 42);
    /* Mapping a page that is mapped already is refused. */
    assert_int_equal(uffd_continue(fd, mem, 4096, NULL), -EEXIST);
    assert_int_equal(uffd_unregister(fd, mem, len), 0);
    close(fd);
    munmap(mem, len);
    close(memfd);
}

static void test_bad_ranges(void **state)
{
    if (!uffd_available())
        skip();
    int fd = uffd_open();
    assert_true(fd >= 0);
    assert_true(uffd_register(fd, (void *)0x1001, 4096) < 0); /* unaligned */
    assert_true(uffd_register(fd, (void *)0x10000, 4096) < 0); /* not mapped */
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faults_resolved),
        cmocka_unit_test(test_copy_stops_at_a_present_page),
        cmocka_unit_test(test_minor_faults),
        cmocka_unit_test(test_bad_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
