/* userfaultfd for guest RAM: the mechanism post-copy is built on (the
 * destination catches first touches of pages it does not have yet, from
 * vCPUs through KVM or from the VMM's own threads, and installs them).
 * Guest RAM is a shared memfd mapping, so MISSING faults on shmem are used;
 * where the kernel has them, also MINOR faults: a page the memfd holds but
 * that is not mapped faults too, so memory populated beforehand can be
 * filled (written into the memfd) and then mapped (UFFDIO_CONTINUE).
 * Returns: 0 or -errno; uffd_open returns the fd or -errno. */
#ifndef GW_MEMORY_UFFD_H
#define GW_MEMORY_UFFD_H

#include <stdbool.h>
#include <stdint.h>

/* Open a userfaultfd that also sees faults taken in kernel mode (KVM
 * touching guest memory), negotiated for missing faults on shmem. */
int uffd_open(void);
/* The same, also asking for the faulting thread's id in each fault. */
int uffd_open_with_tid(void);
/* The same with the thread id, negotiated for minor faults on shmem too;
 * -EINVAL where the kernel lacks them. */
int uffd_open_minor(void);
bool uffd_minor_available(void);
struct uffd_fault {
    uint64_t addr;   /* page aligned */
    int tid;         /* 0 unless opened with uffd_open_with_tid */
    bool minor;      /* the memfd holds the page; it is only not mapped */
};
/* Read up to max pending faults without blocking: count (0 if none) or
 * -errno. */
int uffd_read_faults(int fd, struct uffd_fault *out, int max);
/* Catch missing-page faults in [addr, addr+len) (page aligned). */
int uffd_register(int fd, void *addr, uint64_t len);
/* Catch missing-page and minor faults in [addr, addr+len) (an fd from
 * uffd_open_minor). */
int uffd_register_minor(int fd, void *addr, uint64_t len);
int uffd_unregister(int fd, void *addr, uint64_t len);
/* Wait up to timeout_ms for one fault; *addr gets the faulting address
 * (page aligned). Returns 1 with a fault, 0 on timeout, -errno on error. */
int uffd_next_fault(int fd, int timeout_ms, uint64_t *addr);
/* Install len bytes at dst (page aligned) and wake the faulting threads.
 * -EEXIST: a page is there already, at dst + *done: the kernel stops
 * there, the pages before it are installed, those after it are not.
 * done (may be NULL) gets the bytes installed by this call. */
int uffd_copy(int fd, void *dst, const void *src, uint64_t len, uint64_t *done);
/* Map the memfd's pages at [dst, dst+len) (registered for minor faults)
 * as they are and wake the faulting threads. -EEXIST: a page there is
 * mapped already; *done (may be NULL) as for uffd_copy. */
int uffd_continue(int fd, void *dst, uint64_t len, uint64_t *done);
/* Install zero pages; -EEXIST and *done as for uffd_copy. */
int uffd_zero(int fd, void *dst, uint64_t len, uint64_t *done);
/* Is userfaultfd usable here (for tests that must skip visibly)? */
bool uffd_available(void);

#endif
