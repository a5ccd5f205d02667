#define LOG_PREFIX "ram"
#include "memory/guest_ram.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

void guest_ram_layout(struct guest_ram *ram, uint64_t size)
{
    ram->size = size;
    ram->nr_regions = 0;
    uint64_t low = size < GUEST_RAM_LOW_MAX ? size : GUEST_RAM_LOW_MAX;
    ram->regions[ram->nr_regions++] = (struct guest_ram_region){ 0, low, 0 };
    if (size > low)
        ram->regions[ram->nr_regions++] =
            (struct guest_ram_region){ GUEST_RAM_HIGH_BASE, size - low, low };
}

int guest_ram_init(struct guest_ram *ram, uint64_t size, const char *name, struct gw_error *err)
{
    memset(ram, 0, sizeof(*ram));
    ram->memfd = -1;
    ram->pagemap_fd = -1;
    if (size == 0 || size % (2ULL << 20))
        return gw_error_set(err, EINVAL, "memory size must be a positive multiple of 2 MiB");
    guest_ram_layout(ram, size);
    ram->memfd = memfd_create(name ? name : "guest-ram", MFD_CLOEXEC);
    if (ram->memfd < 0)
        return gw_error_set(err, errno, "memfd_create: %s", strerror(errno));
    if (ftruncate(ram->memfd, (off_t)size) < 0) {
        int e = errno;
        gw_error_set(err, e, "cannot size guest RAM to %llu MiB: %s",
                     (unsigned long long)(size >> 20), strerror(e));
        goto err_close;
    }
    ram->host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                     ram->memfd, 0);
    if (ram->host == MAP_FAILED) {
        int e = errno;
        ram->host = NULL;
        gw_error_set(err, e, "cannot map %llu MiB of guest RAM: %s",
                     (unsigned long long)(size >> 20), strerror(e));
        goto err_close;
    }
    guest_ram_huge_pages(ram, true);
    /* Which pages are mapped here (guest_ram_read_pages); without it every
     * read goes through the kernel. */
    ram->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    return 0;

err_close:
    close(ram->memfd);
    ram->memfd = -1;
    return -(err ? err->code : EINVAL);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define PREALLOC_STEP (16ULL << 20)

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *prealloc_thread(void *arg)
{
    struct guest_ram *ram = arg;
    pthread_setname_np(pthread_self(), "mem-prealloc");
    double t0 = now_s();
    uint64_t off = 0;
    while (off < ram->size && !ram->prealloc_stop) {
        uint64_t len = ram->size - off < PREALLOC_STEP ? ram->size - off : PREALLOC_STEP;
        if (madvise(ram->host + off, len, MADV_POPULATE_WRITE) < 0) {
            /* An old kernel (before 5.14), or out of memory: the pages
             * are then populated as they are first written. This step
             * may have populated some: count it. */
            __atomic_store_n(&ram->prealloc_done, off + len, __ATOMIC_RELEASE);
            log_warn("cannot preallocate guest RAM: %s", strerror(errno));
            break;
        }
        off += len;
        __atomic_store_n(&ram->prealloc_done, off, __ATOMIC_RELEASE);
    }
    log_info("preallocated %llu of %llu MiB in %.2f s%s", (unsigned long long)(off >> 20),
             (unsigned long long)(ram->size >> 20), now_s() - t0,
             off < ram->size ? " (stopped)" : "");
    return NULL;
}

int guest_ram_prealloc_start(struct guest_ram *ram, struct gw_error *err)
{
    if (ram->prealloc_running)
        return 0;
    ram->prealloc_stop = false;
    int r = pthread_create(&ram->prealloc, NULL, prealloc_thread, ram);
    if (r != 0)
        return gw_error_set(err, r, "cannot start the memory preallocation thread: %s",
                            strerror(r));
    ram->prealloc_running = true;
    return 0;
}

uint64_t guest_ram_prealloc_stop(struct guest_ram *ram)
{
    if (ram->prealloc_running) {
        ram->prealloc_stop = true;
        pthread_join(ram->prealloc, NULL);
        ram->prealloc_running = false;
    }
    return __atomic_load_n(&ram->prealloc_done, __ATOMIC_ACQUIRE);
}

/* Runs of consecutive indices, as remote iovecs into the mapping. */
#define READ_MAX_RUNS 512

static int pread_runs(const struct guest_ram *ram, const struct iovec *runs, unsigned nruns,
                      uint8_t *out, struct gw_error *err)
{
    for (unsigned i = 0; i < nruns; i++) {
        off_t off = (off_t)((uint8_t *)runs[i].iov_base - ram->host);
        for (size_t done = 0; done < runs[i].iov_len;) {
            ssize_t r = pread(ram->memfd, out + done, runs[i].iov_len - done, off + (off_t)done);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return gw_error_set(err, r < 0 ? errno : EIO, "reading guest RAM at %#llx: %s",
                                    (unsigned long long)off, r < 0 ? strerror(errno) : "short read");
            done += (size_t)r;
        }
        out += runs[i].iov_len;
    }
    return 0;
}

static int read_remote(const struct guest_ram *ram, struct iovec *runs, unsigned nruns,
                       uint8_t *out, size_t bytes, struct gw_error *err)
{
    static int vm_readv_refused; /* seccomp or an old kernel: pread from then on */
    if (!__atomic_load_n(&vm_readv_refused, __ATOMIC_RELAXED)) {
        struct iovec local = { out, bytes };
        ssize_t r = process_vm_readv(getpid(), &local, 1, runs, nruns, 0);
        if (r == (ssize_t)bytes)
            return 0;
        if (r < 0 && (errno == ENOSYS || errno == EPERM))
            __atomic_store_n(&vm_readv_refused, 1, __ATOMIC_RELAXED);
        else if (r < 0)
            return gw_error_set(err, errno, "reading guest RAM: %s", strerror(errno));
        /* A partial read (possible between runs): the rest by pread. */
        size_t skip = r > 0 ? (size_t)r : 0;
        unsigned i = 0;
        while (i < nruns && skip >= runs[i].iov_len) {
            skip -= runs[i].iov_len;
            out += runs[i].iov_len;
            i++;
        }
        if (i < nruns && skip) {
            runs[i].iov_base = (uint8_t *)runs[i].iov_base + skip;
            runs[i].iov_len -= skip;
            out += skip;
        }
        return pread_runs(ram, runs + i, nruns - i, out, err);
    }
    return pread_runs(ram, runs, nruns, out, err);
}

#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_WINDOW  512

/* pagemap entries for PAGEMAP_WINDOW pages from `first` (a virtual page
 * number), read once for all the pages of a batch that fall inside: a
 * batch of scattered pages costs one read, not one per run. */
struct pagemap_window {
    uint64_t first, count;
    uint64_t ent[PAGEMAP_WINDOW];
};

/* Whether the page at virtual page number vpn is mapped in this process
 * (the present bit of /proc/self/pagemap): the pages a vCPU touched are
 * (KVM maps them through our mapping), those only written with pwrite (an
 * incoming migration) are not. */
static bool page_mapped(const struct guest_ram *ram, struct pagemap_window *w, uint64_t vpn)
{
    if (ram->pagemap_fd < 0)
        return false;
    if (vpn < w->first || vpn >= w->first + w->count) {
        ssize_t r = pread(ram->pagemap_fd, w->ent, sizeof(w->ent), (off_t)(vpn * 8));
        if (r < 8)
            return false;
        w->first = vpn;
        w->count = (uint64_t)r / 8;
    }
    return (w->ent[vpn - w->first] & PAGEMAP_PRESENT) != 0;
}

/* Whether every page of the run is mapped in this process. */
static bool run_mapped(const struct guest_ram *ram, struct pagemap_window *w,
                       const struct iovec *run)
{
    uint64_t vpn = (uint64_t)(uintptr_t)run->iov_base / GUEST_PAGE_SIZE;
    uint64_t end = vpn + run->iov_len / GUEST_PAGE_SIZE;
    for (; vpn < end; vpn++)
        if (!page_mapped(ram, w, vpn))
            return false;
    return true;
}

/* How a page is read. */
enum page_kind {
    PAGE_MAPPED, /* mapped here: copied directly */
    PAGE_DATA,   /* held by the memfd (or swapped out), not mapped: read by the kernel */
    PAGE_HOLE,   /* never written: zeros, and left a hole */
};

/* What was last learnt of the memfd: bytes [start, end) are all data, or
 * all hole. A batch's pages mostly go upward, so a few lseeks serve it. */
struct page_probe {
    struct pagemap_window pm;
    uint64_t start, end;
    bool data;
};

/* Whether the memfd holds data at `off`: SEEK_DATA counts pages in memory
 * and pages swapped out alike (mincore would take the latter for holes). */
static bool offset_has_data(const struct guest_ram *ram, struct page_probe *p, uint64_t off)
{
    if (off >= p->start && off < p->end)
        return p->data;
    off_t d = lseek(ram->memfd, (off_t)off, SEEK_DATA);
    if (d < 0 && errno != ENXIO)
        return true; /* cannot tell: read it through the kernel */
    p->start = off;
    if (d < 0 || (uint64_t)d > off) { /* ENXIO: no data from off on */
        p->end = d < 0 ? ram->size : (uint64_t)d;
        p->data = false;
        return false;
    }
    off_t h = lseek(ram->memfd, (off_t)off, SEEK_HOLE);
    p->end = h > (off_t)off ? (uint64_t)h : off + GUEST_PAGE_SIZE;
    p->data = true;
    return true;
}

static enum page_kind page_kind(const struct guest_ram *ram, struct page_probe *p, uint64_t idx)
{
    uint64_t vpn = (uint64_t)(uintptr_t)ram->host / GUEST_PAGE_SIZE + idx;
    if (page_mapped(ram, &p->pm, vpn))
        return PAGE_MAPPED;
    return offset_has_data(ram, p, idx * GUEST_PAGE_SIZE) ? PAGE_DATA : PAGE_HOLE;
}

/* Runs mapped here are copied directly, the others through the kernel
 * (a fault per page on our mapping costs more than that). On an idle 1 GiB
 * guest (destination preallocated) this took the migration from 400-600
 * to 352-440 ms (three runs each, interleaved). Holes are zeros: read
 * through the kernel they would be allocated, in the memfd and in this
 * mapping. A page unmapped between the check and the copy only costs a
 * fault; a hole written after the check is read as zeros, and that write
 * is in the dirty log (the caller protected the page before reading it). */
static int read_runs(const struct guest_ram *ram, struct iovec *runs, const uint8_t *kind,
                     unsigned nruns, uint8_t *out, struct gw_error *err)
{
    for (unsigned i = 0; i < nruns;) {
        if (kind[i] != PAGE_DATA) {
            if (kind[i] == PAGE_MAPPED)
                memcpy(out, runs[i].iov_base, runs[i].iov_len);
            else
                memset(out, 0, runs[i].iov_len);
            out += runs[i].iov_len;
            i++;
            continue;
        }
        unsigned j = i;
        size_t b = 0;
        while (j < nruns && kind[j] == PAGE_DATA)
            b += runs[j++].iov_len;
        int r = read_remote(ram, runs + i, j - i, out, b, err);
        if (r < 0)
            return r;
        out += b;
        i = j;
    }
    return 0;
}

int guest_ram_write(const struct guest_ram *ram, uint64_t off, const void *src, size_t len,
                    struct gw_error *err)
{
    struct iovec run = { ram->host + off, len };
    struct pagemap_window win = { 0, 0, { 0 } };
    if (run_mapped(ram, &win, &run)) {
        memcpy(run.iov_base, src, len);
        return 0;
    }
    const uint8_t *p = src;
    while (len) {
        ssize_t w = pwrite(ram->memfd, p, len, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return gw_error_set(err, w < 0 ? errno : EIO, "writing guest memory: %s",
                                strerror(w < 0 ? errno : EIO));
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* The pages go in runs of consecutive pages of one kind. */
int guest_ram_read_pages(const struct guest_ram *ram, const uint64_t *idx, unsigned n, void *buf,
                         struct gw_error *err)
{
    struct iovec runs[READ_MAX_RUNS];
    uint8_t kind[READ_MAX_RUNS];
    struct page_probe probe = { .start = 0, .end = 0 };
    unsigned nruns = 0;
    uint8_t *out = buf;
    size_t bytes = 0;
    for (unsigned i = 0; i < n; i++) {
        uint8_t *p = ram->host + idx[i] * GUEST_PAGE_SIZE;
        uint8_t k = (uint8_t)page_kind(ram, &probe, idx[i]);
        if (nruns && kind[nruns - 1] == k &&
            (uint8_t *)runs[nruns - 1].iov_base + runs[nruns - 1].iov_len == p) {
            runs[nruns - 1].iov_len += GUEST_PAGE_SIZE;
        } else {
            if (nruns == READ_MAX_RUNS) {
                int r = read_runs(ram, runs, kind, nruns, out, err);
                if (r < 0)
                    return r;
                out += bytes;
                nruns = 0;
                bytes = 0;
            }
            kind[nruns] = k;
            runs[nruns++] = (struct iovec){ p, GUEST_PAGE_SIZE };
        }
        bytes += GUEST_PAGE_SIZE;
    }
    return nruns ? read_runs(ram, runs, kind, nruns, out, err) : 0;
}

int guest_ram_set_kvm_slots(const struct guest_ram *ram, int vm_fd, bool dirty_log,
                            struct gw_error *err)
{
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct guest_ram_region *r = &ram->regions[i];
        struct kvm_userspace_memory_region reg = {
            .slot = i,
            .flags = dirty_log ? KVM_MEM_LOG_DIRTY_PAGES : 0,
            .guest_phys_addr = r->gpa,
            .memory_size = r->size,
            .userspace_addr = (uint64_t)(uintptr_t)(ram->host + r->offset),
        };
        if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &reg) < 0)
            return gw_error_set(err, errno, "KVM_SET_USER_MEMORY_REGION slot %u%s: %s", i,
                                dirty_log ? " (dirty logging on)" : "", strerror(errno));
    }
    return 0;
}

void guest_ram_hold_uffd(struct guest_ram *ram, int uffd)
{
    guest_ram_release_uffd(ram);
    ram->uffd = uffd;
    ram->holds_uffd = true;
}

void guest_ram_release_uffd(struct guest_ram *ram)
{
    if (ram->holds_uffd)
        close(ram->uffd);
    ram->holds_uffd = false;
}

void guest_ram_huge_pages(struct guest_ram *ram, bool on)
{
    /* Advice only: a kernel without THP refuses it, and nothing depends on it. */
    madvise(ram->host, ram->size, on ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
}

void guest_ram_fini(struct guest_ram *ram)
{
    guest_ram_prealloc_stop(ram);
    guest_ram_release_uffd(ram);
    if (ram->host)
        munmap(ram->host, ram->size);
    if (ram->memfd >= 0)
        close(ram->memfd);
    if (ram->pagemap_fd >= 0)
        close(ram->pagemap_fd);
    ram->host = NULL;
    ram->memfd = ram->pagemap_fd = -1;
}

bool guest_ram_gpa_to_offset(const struct guest_ram *ram, uint64_t gpa, uint64_t *offset)
{
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct guest_ram_region *r = &ram->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size) {
            *offset = r->offset + (gpa - r->gpa);
            return true;
        }
    }
    return false;
}

void *guest_ram_ptr(const struct guest_ram *ram, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct guest_ram_region *r = &ram->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
            return ram->host ? ram->host + r->offset + (gpa - r->gpa) : NULL;
    }
    return NULL;
}

uint64_t guest_ram_end(const struct guest_ram *ram)
{
    const struct guest_ram_region *r = &ram->regions[ram->nr_regions - 1];
    return r->gpa + r->size;
}
