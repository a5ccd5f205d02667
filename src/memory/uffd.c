#include "memory/uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static int open_features(uint64_t features)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MISSING_SHMEM | features };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (!(api.ioctls & (1ULL << _UFFDIO_REGISTER))) {
        close(fd);
        return -ENOTSUP;
    }
    return fd;
}

int uffd_open(void) { return open_features(0); }

int uffd_open_with_tid(void) { return open_features(UFFD_FEATURE_THREAD_ID); }

int uffd_open_minor(void) { return open_features(UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MINOR_SHMEM); }

/* Did an open succeed? (The descriptor is not kept.) */
static bool opened(int fd)
{
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

bool uffd_minor_available(void) { return opened(uffd_open_minor()); }

int uffd_read_faults(int fd, struct uffd_fault *out, int max)
{
    struct uffd_msg msg[64];
    if (max > 64)
        max = 64;
    ssize_t n = read(fd, msg, sizeof(msg[0]) * (size_t)max);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
    int k = 0;
    for (int i = 0; i < (int)(n / (ssize_t)sizeof(msg[0])); i++) {
        if (msg[i].event != UFFD_EVENT_PAGEFAULT)
            continue;
        out[k].addr = msg[i].arg.pagefault.address & ~4095ULL;
        out[k].tid = (int)msg[i].arg.pagefault.feat.ptid;
        out[k].minor = (msg[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) != 0;
        k++;
    }
    return k;
}

bool uffd_available(void) { return opened(uffd_open()); }

/* Register [addr, addr+len) for `mode`; the kernel must offer every ioctl
 * in `need` there, else the range is unregistered again (-ENOTSUP). */
static int register_range(int fd, void *addr, uint64_t len, uint64_t mode, uint64_t need)
{
    struct uffdio_register r = {
        .range = { .start = (uint64_t)(uintptr_t)addr, .len = len },
        .mode = mode,
    };
    if (ioctl(fd, UFFDIO_REGISTER, &r) < 0)
        return -errno;
    if ((r.ioctls & need) != need) {
        struct uffdio_range u = r.range;
        ioctl(fd, UFFDIO_UNREGISTER, &u);
        return -ENOTSUP;
    }
    return 0;
}

int uffd_register(int fd, void *addr, uint64_t len)
{
    return register_range(fd, addr, len, UFFDIO_REGISTER_MODE_MISSING, 1ULL << _UFFDIO_COPY);
}

int uffd_register_minor(int fd, void *addr, uint64_t len)
{
    return register_range(fd, addr, len, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR,
                          (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_CONTINUE));
}

int uffd_unregister(int fd, void *addr, uint64_t len)
{
    struct uffdio_range r = { .start = (uint64_t)(uintptr_t)addr, .len = len };
    return ioctl(fd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

int uffd_next_fault(int fd, int timeout_ms, uint64_t *addr)
{
    for (;;) {
        struct uffd_msg msg;
        ssize_t n = read(fd, &msg, sizeof(msg));
        if (n == (ssize_t)sizeof(msg)) {
            if (msg.event != UFFD_EVENT_PAGEFAULT)
                continue; /* other events are not asked for */
            *addr = msg.arg.pagefault.address & ~4095ULL;
            return 1;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        struct pollfd p = { fd, POLLIN, 0 };
        int r = poll(&p, 1, timeout_ms);
        if (r == 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

int uffd_copy(int fd, void *dst, const void *src, uint64_t len, uint64_t *done)
{
    struct uffdio_copy c = {
        .dst = (uint64_t)(uintptr_t)dst, .src = (uint64_t)(uintptr_t)src, .len = len, .mode = 0,
    };
    uint64_t total = 0;
    int r = 0;
    for (int tries = 0; ioctl(fd, UFFDIO_COPY, &c) < 0; tries++) {
        /* EAGAIN: the copy was cut short (partly done, or the address space
         * was changing; a page already there after some copied pages stops
         * it so too); go on with the rest. */
        if (errno != EAGAIN || tries > 1000) {
            r = -errno;
            break;
        }
        if (c.copy > 0) {
            total += (uint64_t)c.copy;
            c.dst += (uint64_t)c.copy;
            c.src += (uint64_t)c.copy;
            c.len -= (uint64_t)c.copy;
        }
        c.copy = 0;
    }
    if (done)
        *done = r ? total : len;
    return r;
}

/* A ranged ioctl that may stop part-way (EAGAIN, with *part bytes done):
 * go on with the rest. *done (may be NULL): the bytes done in all. */
static int range_ioctl(int fd, unsigned long req, void *arg, struct uffdio_range *range,
                       __s64 *part, uint64_t *done)
{
    uint64_t total = 0, len = range->len;
    int r = 0;
    for (int tries = 0; ioctl(fd, req, arg) < 0; tries++) {
        if (errno != EAGAIN || tries > 1000) {
            r = -errno;
            break;
        }
        if (*part > 0) {
            total += (uint64_t)*part;
            range->start += (uint64_t)*part;
            range->len -= (uint64_t)*part;
        }
        *part = 0;
    }
    if (done)
        *done = r ? total : len;
    return r;
}

int uffd_zero(int fd, void *dst, uint64_t len, uint64_t *done)
{
    struct uffdio_zeropage z = { .range = { .start = (uint64_t)(uintptr_t)dst, .len = len } };
    return range_ioctl(fd, UFFDIO_ZEROPAGE, &z, &z.range, &z.zeropage, done);
}

int uffd_continue(int fd, void *dst, uint64_t len, uint64_t *done)
{
    struct uffdio_continue c = { .range = { .start = (uint64_t)(uintptr_t)dst, .len = len } };
    return range_ioctl(fd, UFFDIO_CONTINUE, &c, &c.range, &c.mapped, done);
}
