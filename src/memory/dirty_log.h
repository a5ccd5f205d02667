/* Dirty-page tracking for guest RAM: KVM's dirty bitmap with manual
 * protection (KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG; the dirty ring hung a
 * vCPU on our PVM hosts), plus the pages the VMM itself writes into guest RAM
 * (dirty_log_mark, any thread).
 *
 * With vm_fd < 0 the RAM is not mapped into KVM and only the writes
 * reported with dirty_log_mark count (the migration engine's own tests).
 *
 * Bits are indexed by RAM page index = memfd offset / 4096, over all slots.
 * Returns: 0 or -errno; errors for people through struct gw_error. */
#ifndef GW_MEMORY_DIRTY_LOG_H
#define GW_MEMORY_DIRTY_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "memory/guest_ram.h"

struct dirty_log {
    int vm_fd;
    const struct guest_ram *ram;
    bool manual_protect;      /* KVM_CLEAR_DIRTY_LOG available and enabled */
    bool active;
    uint64_t npages;          /* RAM pages (bits) */
    uint64_t *slot_map;       /* scratch for one slot's KVM bitmap */
    uint64_t *vmm_map;        /* pages written by the VMM (atomic) */
    /* Statistics. */
    uint64_t syncs;
    uint64_t last_sync_ns;
};

int dirty_log_init(struct dirty_log *dl, int vm_fd, const struct guest_ram *ram,
                   bool manual_protect, struct gw_error *err);
void dirty_log_fini(struct dirty_log *dl);
/* Turn KVM logging on for every RAM slot. The first sync or fetch after
 * start reports what was written since, except where KVM was given
 * KVM_DIRTY_LOG_INITIALLY_SET (kvm_vm.c asks for it where offered): there
 * every page of the guest starts dirty and unprotected, and stays so until
 * it is protected (dirty_log_sync or dirty_log_protect). */
int dirty_log_start(struct dirty_log *dl, struct gw_error *err);
int dirty_log_stop(struct dirty_log *dl, struct gw_error *err);
/* OR pages dirtied since the last sync into `out` (npages bits) and
 * re-protect them. */
int dirty_log_sync(struct dirty_log *dl, uint64_t *out, struct gw_error *err);
/* Lazy re-protection: OR pages dirtied since the last sync into `out`
 * without re-protecting the guest's ones. The caller calls
 * dirty_log_protect() on a range just before it reads the pages in it, so
 * a write between the fetch and the read is in what is read and not counted
 * again (QEMU clears its log per 1 GiB chunk; we do it per sender chunk). A
 * page never protected is simply reported again by the next fetch. Without
 * manual protection KVM_GET_DIRTY_LOG re-protects by itself: then this is
 * dirty_log_sync. */
int dirty_log_fetch(struct dirty_log *dl, uint64_t *out, struct gw_error *err);
/* What a fetch would report now, without taking it: OR into `out` the
 * guest's pages that KVM's log holds dirty and the pages the VMM wrote
 * (they stay for the next fetch). Needs manual protection, since
 * KVM_GET_DIRTY_LOG otherwise re-protects what it reports: -EOPNOTSUPP. */
int dirty_log_peek(struct dirty_log *dl, uint64_t *out, struct gw_error *err);
/* Re-protect the pages whose bits are set in `bits` (an npages-bit map by
 * RAM page index) within [first, first+n); other pages are untouched. Any
 * alignment; the bits are not changed. No-op without KVM or manual
 * protection, or while logging is off. */
int dirty_log_protect(struct dirty_log *dl, const uint64_t *bits, uint64_t first, uint64_t n,
                      struct gw_error *err);
/* The VMM wrote guest memory at [gpa, gpa+len): remember it. Any thread. */
void dirty_log_mark(struct dirty_log *dl, uint64_t gpa, uint64_t len);

#endif
