/* Guest RAM: one memfd mapped once in the VMM, split into guest-physical
 * regions around the 32-bit MMIO hole.
 *
 * Layout (x86 PC): RAM from GPA 0 up to min(size, GUEST_RAM_LOW_MAX); the
 * rest (if any) from GPA 4 GiB upward. memfd offset == position in `host`.
 * Returns: 0 or -errno; errors that reach a person go through gw_error. */
#ifndef GW_MEMORY_GUEST_RAM_H
#define GW_MEMORY_GUEST_RAM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define GUEST_PAGE_SIZE     4096ULL
#define GUEST_RAM_LOW_MAX   0xC0000000ULL   /* 3 GiB: the hole is 3..4 GiB */
#define GUEST_RAM_HIGH_BASE 0x100000000ULL  /* 4 GiB */
#define GUEST_RAM_MAX_REGIONS 2

struct guest_ram_region {
    uint64_t gpa;     /* guest-physical start */
    uint64_t size;    /* bytes */
    uint64_t offset;  /* offset in the memfd and in `host` */
};

struct guest_ram {
    int memfd;
    int pagemap_fd;   /* /proc/self/pagemap, or -1 */
    uint8_t *host;    /* mapping of the whole memfd, MAP_SHARED */
    uint64_t size;    /* total bytes of RAM */
    unsigned nr_regions;
    struct guest_ram_region regions[GUEST_RAM_MAX_REGIONS];
    /* A userfaultfd still registered on this RAM after its migration ended
     * (post-copy lost its source: vCPUs that need a missing page must keep
     * waiting, never read zeros). Owned here from then on. */
    bool holds_uffd;
    int uffd;
    /* --mem-prealloc: the background thread that populates the RAM */
    pthread_t prealloc;
    bool prealloc_running;
    volatile bool prealloc_stop;
    uint64_t prealloc_done;  /* bytes from the start populated (atomic) */
};

/* Compute the region layout for `size` bytes (pure; no allocation). */
void guest_ram_layout(struct guest_ram *ram, uint64_t size);
/* Create the memfd (sized, not populated) and map it. */
int guest_ram_init(struct guest_ram *ram, uint64_t size, const char *name, struct gw_error *err);
void guest_ram_fini(struct guest_ram *ram);
/* Populate the whole RAM (allocate and zero every page, as the guest's or
 * a migration's first write would) in a background thread, from the start
 * upward in 16 MiB steps. On our hosts the outer hypervisor backs memory on
 * its first touch at ~0.3 GB/s, against ~4 GB/s for a write into memory
 * already touched (bench/fresh_memory_bench.c): a destination that does
 * this before the stream arrives receives at the speed of the copy. A
 * write racing with it is never lost: populating a present page does not
 * change it. Returns 0 or -errno (the thread could not start). */
int guest_ram_prealloc_start(struct guest_ram *ram, struct gw_error *err);
/* Stop that thread (after the step under way) and wait for it. Returns how
 * many bytes from the start of the memfd may now be populated: pages there
 * are present even if nothing was written to them (0 if it never ran). */
uint64_t guest_ram_prealloc_stop(struct guest_ram *ram);
/* Transparent huge pages for guest RAM, on (the default) or off. A
 * post-copy destination turns them off while pages are missing: the
 * kernel collapsing a range into a huge page fills its holes with zeros,
 * which userfaultfd then no longer catches (QEMU does the same). */
void guest_ram_huge_pages(struct guest_ram *ram, bool on);
/* Take ownership of a userfaultfd that must stay registered on this RAM. */
void guest_ram_hold_uffd(struct guest_ram *ram, int uffd);
/* Close the held userfaultfd, if any: call it after the vCPUs have stopped
 * and before the KVM VM is destroyed. KVM waits for each vCPU's pending
 * asynchronous page faults when it destroys the VM, and such a fault waits
 * on this descriptor for a page that will never come: the VMM would hang
 * in close() for good, unkillable (seen on our PVM hosts). */
void guest_ram_release_uffd(struct guest_ram *ram);

/* Host pointer for [gpa, gpa+len) if it lies wholly inside one RAM region,
 * else NULL. */
void *guest_ram_ptr(const struct guest_ram *ram, uint64_t gpa, uint64_t len);
/* Translate a guest-physical address to a memfd offset; false if not RAM. */
bool guest_ram_gpa_to_offset(const struct guest_ram *ram, uint64_t gpa, uint64_t *offset);
/* Copy the pages at memfd page indices idx[0..n) into buf, one after the
 * other (n * GUEST_PAGE_SIZE bytes). Runs of consecutive pages that are
 * mapped in the VMM (/proc/self/pagemap) are copied directly; the others
 * the kernel copies through its own mapping (process_vm_readv; pread where
 * that is refused), so the VMM's mapping is not faulted in page by page: a
 * user page-table fault per 4 KiB made reading a guest's memory for
 * migration several times slower on our hosts (bench/precopy_bench.c).
 * Pages the memfd has never held (holes: SEEK_DATA) read as zeros and stay
 * holes, taking no memory. A page written during the call may be read
 * before or after that write: callers track writes (dirty_log) and protect
 * a page before they read it. Indices must be below size / GUEST_PAGE_SIZE.
 * Returns 0 or -errno. */
int guest_ram_read_pages(const struct guest_ram *ram, const uint64_t *idx, unsigned n, void *buf,
                         struct gw_error *err);
/* Write len bytes at memfd offset off (whole pages, below size): copied
 * directly where every page is mapped here (a VMM started with
 * --mem-prealloc), else with pwrite, which faults nothing into this
 * process. Returns 0 or -errno. */
int guest_ram_write(const struct guest_ram *ram, uint64_t off, const void *src, size_t len,
                    struct gw_error *err);
/* Register every RAM region as KVM memory slot i (its index) on vm_fd,
 * with dirty logging on or off; also how logging is switched later (the
 * same call with the other flag). Returns 0 or -errno. */
int guest_ram_set_kvm_slots(const struct guest_ram *ram, int vm_fd, bool dirty_log,
                            struct gw_error *err);
/* End of guest-physical address space covered by RAM (exclusive). */
uint64_t guest_ram_end(const struct guest_ram *ram);

#endif
