#define LOG_PREFIX "dirty"
#include "memory/dirty_log.h"

#include <errno.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "common/log.h"
#include "memory/bitmap.h"

#define CLEAR_CHUNK_PAGES (256ULL * 1024) /* re-protect 1 GiB at a time */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int dirty_log_init(struct dirty_log *dl, int vm_fd, const struct guest_ram *ram,
                   bool manual_protect, struct gw_error *err)
{
    memset(dl, 0, sizeof(*dl));
    dl->vm_fd = vm_fd;
    dl->ram = ram;
    dl->manual_protect = manual_protect;
    dl->npages = ram->size / GUEST_PAGE_SIZE;
    uint64_t max_slot = 0;
    for (unsigned i = 0; i < ram->nr_regions; i++)
        if (ram->regions[i].size / GUEST_PAGE_SIZE > max_slot)
            max_slot = ram->regions[i].size / GUEST_PAGE_SIZE;
    dl->slot_map = bitmap_new(max_slot);
    dl->vmm_map = bitmap_new(dl->npages);
    if (!dl->slot_map || !dl->vmm_map) {
        dirty_log_fini(dl);
        return gw_error_set(err, ENOMEM, "out of memory for dirty bitmaps");
    }
    return 0;
}

void dirty_log_fini(struct dirty_log *dl)
{
    bitmap_free(dl->slot_map);
    bitmap_free(dl->vmm_map);
    dl->slot_map = dl->vmm_map = NULL;
}

static int set_slot_flags(struct dirty_log *dl, bool log, struct gw_error *err)
{
    if (dl->vm_fd < 0)
        return 0; /* RAM not in KVM: only dirty_log_mark() writes count */
    return guest_ram_set_kvm_slots(dl->ram, dl->vm_fd, log, err);
}

/* One KVM_CLEAR_DIRTY_LOG over slot pages [first, first+n) with the mask
 * already in dl->slot_map from bit 0 (first is a multiple of 64; n is one
 * too or reaches the slot's end, as KVM requires). */
static int clear_slot_range(struct dirty_log *dl, unsigned slot, uint64_t first, uint64_t n,
                            const uint64_t *mask, struct gw_error *err)
{
    struct kvm_clear_dirty_log clr = {
        .slot = slot,
        .num_pages = (uint32_t)n,
        .first_page = first,
        .dirty_bitmap = (void *)mask,
    };
    if (ioctl(dl->vm_fd, KVM_CLEAR_DIRTY_LOG, &clr) < 0)
        return gw_error_set(err, errno, "KVM_CLEAR_DIRTY_LOG slot %u: %s", slot, strerror(errno));
    return 0;
}

/* KVM's log of one slot into dl->slot_map (its pages from bit 0). */
static int get_slot_log(struct dirty_log *dl, unsigned slot, struct gw_error *err)
{
    bitmap_zero(dl->slot_map, dl->ram->regions[slot].size / GUEST_PAGE_SIZE);
    struct kvm_dirty_log log = { .slot = slot, .dirty_bitmap = dl->slot_map };
    if (ioctl(dl->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
        return gw_error_set(err, errno, "KVM_GET_DIRTY_LOG slot %u: %s", slot, strerror(errno));
    return 0;
}

static int sync_slot(struct dirty_log *dl, unsigned slot, uint64_t *out, bool protect,
                     struct gw_error *err)
{
    const struct guest_ram_region *r = &dl->ram->regions[slot];
    uint64_t pages = r->size / GUEST_PAGE_SIZE;
    if (get_slot_log(dl, slot, err) < 0)
        return -err->code;
    for (uint64_t first = 0; protect && dl->manual_protect && first < pages;
         first += CLEAR_CHUNK_PAGES) {
        uint64_t n = pages - first < CLEAR_CHUNK_PAGES ? pages - first : CLEAR_CHUNK_PAGES;
        /* Skip chunks with nothing to re-protect. */
        if (bitmap_next_set(dl->slot_map, first + n, first) >= first + n)
            continue;
        if (clear_slot_range(dl, slot, first, n, dl->slot_map + first / 64, err) < 0)
            return -err->code;
    }
    bitmap_or_at(out, r->offset / GUEST_PAGE_SIZE, dl->slot_map, pages);
    return 0;
}

static int sync_all(struct dirty_log *dl, uint64_t *out, bool protect, struct gw_error *err)
{
    if (!dl->active)
        return gw_error_set(err, EINVAL, "dirty logging is not active");
    uint64_t t0 = now_ns();
    for (unsigned i = 0; dl->vm_fd >= 0 && i < dl->ram->nr_regions; i++)
        if (sync_slot(dl, i, out, protect, err) < 0)
            return -err->code;
    bitmap_take_atomic(out, dl->vmm_map, dl->npages);
    dl->syncs++;
    dl->last_sync_ns = now_ns() - t0;
    return 0;
}

int dirty_log_sync(struct dirty_log *dl, uint64_t *out, struct gw_error *err)
{
    return sync_all(dl, out, true, err);
}

int dirty_log_fetch(struct dirty_log *dl, uint64_t *out, struct gw_error *err)
{
    return sync_all(dl, out, false, err);
}

int dirty_log_peek(struct dirty_log *dl, uint64_t *out, struct gw_error *err)
{
    if (!dl->active)
        return gw_error_set(err, EINVAL, "dirty logging is not active");
    if (dl->vm_fd >= 0 && !dl->manual_protect)
        return gw_error_set(err, EOPNOTSUPP, "KVM re-protects what it reports: no peeking");
    for (unsigned i = 0; dl->vm_fd >= 0 && i < dl->ram->nr_regions; i++) {
        const struct guest_ram_region *r = &dl->ram->regions[i];
        if (get_slot_log(dl, i, err) < 0)
            return -err->code;
        bitmap_or_at(out, r->offset / GUEST_PAGE_SIZE, dl->slot_map, r->size / GUEST_PAGE_SIZE);
    }
    /* Other threads set bits meanwhile (atomically): a word read is whole. */
    bitmap_or_at(out, 0, dl->vmm_map, dl->npages);
    return 0;
}

int dirty_log_protect(struct dirty_log *dl, const uint64_t *bits, uint64_t first, uint64_t n,
                      struct gw_error *err)
{
    if (dl->vm_fd < 0 || !dl->manual_protect || !dl->active)
        return 0; /* nothing left unprotected by dirty_log_fetch */
    uint64_t end = first + n;
    for (unsigned i = 0; i < dl->ram->nr_regions; i++) {
        const struct guest_ram_region *r = &dl->ram->regions[i];
        uint64_t roff = r->offset / GUEST_PAGE_SIZE, pages = r->size / GUEST_PAGE_SIZE;
        if (end <= roff || first >= roff + pages)
            continue; /* the range misses this slot */
        uint64_t s0 = first > roff ? first - roff : 0;
        uint64_t s1 = end < roff + pages ? end - roff : pages;
        /* KVM wants a 64-page aligned start and a length of whole words
         * (or up to the slot's end): widen, but mask only [s0, s1). */
        uint64_t a = s0 & ~63ULL;
        uint64_t e = (s1 + 63) & ~63ULL;
        if (e > pages)
            e = pages;
        bitmap_zero(dl->slot_map, e - a);
        bitmap_copy_bits(dl->slot_map, s0 - a, bits, roff + s0, s1 - s0);
        if (bitmap_next_set(dl->slot_map, e - a, 0) >= e - a)
            continue;
        if (clear_slot_range(dl, i, a, e - a, dl->slot_map, err) < 0)
            return -err->code;
    }
    return 0;
}

int dirty_log_start(struct dirty_log *dl, struct gw_error *err)
{
    if (dl->active)
        return 0;
    bitmap_zero(dl->vmm_map, dl->npages);
    /* Mark active first so that VMM writes racing with the switch count. */
    dl->active = true;
    if (set_slot_flags(dl, true, err) < 0) {
        dl->active = false;
        /* The slots before the one refused log already: switched back,
         * or they would log (KVM splitting their huge pages, trapping
         * first writes) until the next start and stop. */
        set_slot_flags(dl, false, NULL);
        return -err->code;
    }
    return 0;
}

int dirty_log_stop(struct dirty_log *dl, struct gw_error *err)
{
    if (!dl->active)
        return 0;
    dl->active = false;
    return set_slot_flags(dl, false, err);
}

void dirty_log_mark(struct dirty_log *dl, uint64_t gpa, uint64_t len)
{
    if (!dl || !dl->active || len == 0)
        return;
    uint64_t off;
    if (!guest_ram_gpa_to_offset(dl->ram, gpa, &off))
        return;
    uint64_t first = off / GUEST_PAGE_SIZE;
    uint64_t last = (off + len - 1) / GUEST_PAGE_SIZE;
    for (uint64_t p = first; p <= last && p < dl->npages; p++)
        bitmap_set_atomic(dl->vmm_map, p);
}
