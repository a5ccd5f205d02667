/* Guest RAM without KVM: reading pages for a migration (mapped here, held
 * by the memfd only, or never written) and what that costs in memory; and
 * the dirty log against a stand-in for KVM's dirty-log ioctls (ioctl() is
 * defined here, so the library's calls come to it), which refuses what
 * KVM refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "memory/bitmap.h"
#include "memory/dirty_log.h"
#include "memory/guest_ram.h"

#define PG 4096

static void ram_init(struct guest_ram *ram, uint64_t size)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_init(ram, size, "t", &err), 0);
    /* Small pages: where shmem THP honours the advice, a first touch
     * would fill a whole 2 MiB and there would be no holes to read. */
    guest_ram_huge_pages(ram, false);
}

/* Bytes of memory the memfd holds. */
static uint64_t held_bytes(const struct guest_ram *ram)
{
    struct stat st;
    assert_int_equal(fstat(ram->memfd, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

static bool is_mapped(const struct guest_ram *ram, uint64_t page)
{
    uint64_t e = 0, vpn = (uint64_t)(uintptr_t)ram->host / PG + page;
    int fd = open("/proc/self/pagemap", O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &e, 8, (off_t)(vpn * 8)), 8);
    close(fd);
    return e >> 63;
}

static uint8_t fill_of(uint64_t page) { return (uint8_t)(page % 251 + 1); }

/* Page p gets fill_of(p): through the mapping (mapped here) or by pwrite
 * (held by the memfd, not mapped, as an incoming migration writes it). */
static void put(struct guest_ram *ram, uint64_t p, bool mapped)
{
    uint8_t page[PG];
    memset(page, fill_of(p), sizeof(page));
    if (mapped)
        memcpy(ram->host + p * PG, page, PG);
    else
        assert_int_equal(pwrite(ram->memfd, page, PG, (off_t)(p * PG)), PG);
}

static void check_read(const uint8_t *buf, const uint64_t *idx, unsigned n, const uint8_t *written)
{
    for (unsigned i = 0; i < n; i++) {
        uint8_t want = written[idx[i]] ? fill_of(idx[i]) : 0;
        const uint8_t *b = buf + (size_t)i * PG;
        for (unsigned k = 0; k < PG; k++)
            if (b[k] != want)
                fail_msg("page %u (index %llu) byte %u: %u, not %u", i,
                         (unsigned long long)idx[i], k, b[k], want);
    }
}

/* Pages never written read as zeros and stay holes: a read for a
 * migration allocates nothing (it allocated every hole it read, in the
 * memfd and in this mapping), in runs of holes alone, in runs that mix
 * holes with data held here or mapped, and beside the last page. */
static void test_holes_read_as_zeros_without_memory(void **state)
{
    struct guest_ram ram;
    ram_init(&ram, 4ULL << 20);
    uint64_t np = ram.size / PG;
    uint8_t *written = calloc(np, 1);
    /* 0-7: mapped, held, hole in turn; 100-199 holes; 300-301 held; the
     * last page mapped. */
    for (uint64_t p = 0; p < 8; p++)
        if (p % 3 != 2) {
            put(&ram, p, p % 3 == 0);
            written[p] = 1;
        }
    put(&ram, 300, false);
    put(&ram, 301, false);
    put(&ram, np - 1, true);
    written[300] = written[301] = written[np - 1] = 1;
    uint64_t before = held_bytes(&ram);
    assert_int_equal(before, 9 * PG); /* the premise: nothing else is held */

    uint64_t idx[400];
    unsigned n = 0;
    for (uint64_t p = 0; p < 8; p++) /* one run of mixed kinds */
        idx[n++] = p;
    for (uint64_t p = 100; p < 200; p++) /* a long run of holes */
        idx[n++] = p;
    idx[n++] = 299; /* hole, then data held */
    idx[n++] = 300;
    idx[n++] = 301;
    idx[n++] = 302;
    idx[n++] = np - 2; /* a hole beside the last page */
    idx[n++] = np - 1;
    for (uint64_t p = 500; p < 700; p += 2) /* scattered holes */
        idx[n++] = p;
    idx[n++] = 2; /* a page again, out of order */
    uint8_t *buf = malloc((size_t)n * PG);
    memset(buf, 0xee, (size_t)n * PG);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_read_pages(&ram, idx, n, buf, &err), 0);
    check_read(buf, idx, n, written);
    assert_int_equal(held_bytes(&ram), before);
    assert_false(is_mapped(&ram, 150));
    assert_false(is_mapped(&ram, 2));
    free(buf);
    free(written);
    guest_ram_fini(&ram);
}

/* More runs than one call takes (512), scattered over every kind: what
 * was written is read, holes are zeros, and no hole is allocated. */
static void test_many_runs_of_every_kind(void **state)
{
    struct guest_ram ram;
    ram_init(&ram, 8ULL << 20);
    uint64_t np = ram.size / PG;
    uint8_t *written = calloc(np, 1);
    for (uint64_t p = 0; p < np; p++)
        if (p % 5 == 1 || p % 5 == 2) {
            put(&ram, p, p % 5 == 1);
            written[p] = 1;
        }
    uint64_t before = held_bytes(&ram);
    unsigned n = 1800;
    uint64_t *idx = malloc(n * sizeof(*idx));
    for (unsigned i = 0; i < n; i++)
        idx[i] = i < 1200 ? (uint64_t)i * 3 % np : (uint64_t)(i - 1200) + 1000;
    uint8_t *buf = malloc((size_t)n * PG);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_read_pages(&ram, idx, n, buf, &err), 0);
    check_read(buf, idx, n, written);
    assert_int_equal(held_bytes(&ram), before);
    free(idx);
    free(buf);
    free(written);
    guest_ram_fini(&ram);
}

/* ---- the dirty log against a stand-in for KVM ---- */

#define FAKE_VM_FD 1000
#define GiB (1ULL << 30)
#define MiB (1ULL << 20)

static struct {
    uint64_t npages[2];
    uint32_t flags[2];
    uint64_t *log[2];        /* KVM's dirty bitmap of each slot */
    int refuse_log_slot;     /* refuse logging on this slot (-1: none) */
    unsigned clears, bad;    /* KVM_CLEAR_DIRTY_LOG calls, refused ones */
} kvm;

static int fake_set_region(const struct kvm_userspace_memory_region *r)
{
    if (r->slot > 1)
        return -EINVAL;
    if ((int)r->slot == kvm.refuse_log_slot && (r->flags & KVM_MEM_LOG_DIRTY_PAGES))
        return -ENOMEM;
    kvm.npages[r->slot] = r->memory_size / PG;
    kvm.flags[r->slot] = r->flags;
    if (!kvm.log[r->slot])
        kvm.log[r->slot] = bitmap_new(kvm.npages[r->slot]);
    return 0;
}

/* As kvm_clear_dirty_log_protect: a start on a 64-page boundary, a length
 * of whole words unless it reaches the slot's end, inside the slot. */
static int fake_clear(const struct kvm_clear_dirty_log *c)
{
    kvm.clears++;
    uint64_t n = c->slot < 2 ? kvm.npages[c->slot] : 0;
    if (c->slot > 1 || !(kvm.flags[c->slot] & KVM_MEM_LOG_DIRTY_PAGES) || (c->first_page & 63) ||
        c->first_page >= n || c->num_pages > n - c->first_page ||
        (c->num_pages < n - c->first_page && (c->num_pages & 63))) {
        kvm.bad++;
        return -EINVAL;
    }
    const uint64_t *mask = c->dirty_bitmap;
    for (uint64_t i = 0; i < c->num_pages; i++)
        if (bitmap_test(mask, i))
            bitmap_clear_bit(kvm.log[c->slot], c->first_page + i);
    return 0;
}

int ioctl(int fd, unsigned long req, ...);
int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = -ENOTTY;
    if (fd == FAKE_VM_FD && req == KVM_SET_USER_MEMORY_REGION) {
        r = fake_set_region(arg);
    } else if (fd == FAKE_VM_FD && req == KVM_GET_DIRTY_LOG) {
        struct kvm_dirty_log *l = arg;
        r = -ENOENT;
        if (l->slot < 2 && (kvm.flags[l->slot] & KVM_MEM_LOG_DIRTY_PAGES)) {
            memcpy(l->dirty_bitmap, kvm.log[l->slot], BITMAP_WORDS(kvm.npages[l->slot]) * 8);
            r = 0;
        }
    } else if (fd == FAKE_VM_FD && req == KVM_CLEAR_DIRTY_LOG) {
        r = fake_clear(arg);
    }
    if (r < 0) {
        errno = -r;
        return -1;
    }
    return r;
}

/* Two slots (3 GiB below the hole, 64 MiB above it), every page dirty in
 * KVM's log; the RAM is only laid out (KVM's stand-in never touches it). */
static void dirty_setup(struct guest_ram *ram, struct dirty_log *dl)
{
    for (int s = 0; s < 2; s++)
        bitmap_free(kvm.log[s]);
    memset(&kvm, 0, sizeof(kvm));
    kvm.refuse_log_slot = -1;
    memset(ram, 0, sizeof(*ram));
    guest_ram_layout(ram, 3 * GiB + 64 * MiB);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(dirty_log_init(dl, FAKE_VM_FD, ram, true, &err), 0);
    assert_int_equal(dirty_log_start(dl, &err), 0);
    for (int s = 0; s < 2; s++)
        bitmap_set_range(kvm.log[s], 0, kvm.npages[s]);
}

/* A start that KVM refuses for the second slot leaves no slot logging:
 * the first was switched on already (and stayed so, the guest's huge
 * pages split and its writes trapped, until a later start and stop). */
static void test_dirty_start_refused_leaves_no_slot_logging(void **state)
{
    struct guest_ram ram;
    struct dirty_log dl;
    dirty_setup(&ram, &dl);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(dirty_log_stop(&dl, &err), 0);
    assert_int_equal(kvm.flags[0] | kvm.flags[1], 0);
    kvm.refuse_log_slot = 1;
    assert_int_equal(dirty_log_start(&dl, &err), -ENOMEM);
    assert_false(dl.active);
    assert_int_equal(kvm.flags[0], 0);
    assert_int_equal(kvm.flags[1], 0);
    kvm.refuse_log_slot = -1; /* and a later start works */
    gw_error_init(&err);
    assert_int_equal(dirty_log_start(&dl, &err), 0);
    assert_int_equal(kvm.flags[0] & kvm.flags[1] & KVM_MEM_LOG_DIRTY_PAGES,
                     KVM_MEM_LOG_DIRTY_PAGES);
    dirty_log_fini(&dl);
}

/* Re-protection at any alignment, across the hole (RAM page indices run on
 * from one slot into the next): exactly the pages whose bits are set in
 * the range are cleared in KVM's log, and KVM takes every call. */
static void test_dirty_protect_any_range(void **state)
{
    struct guest_ram ram;
    struct dirty_log dl;
    dirty_setup(&ram, &dl);
    uint64_t np = dl.npages, low = kvm.npages[0];
    uint64_t *bits = bitmap_new(np);
    for (uint64_t p = 0; p < np; p += 1 + p % 3) /* a pattern, and bits outside every range */
        bitmap_set(bits, p);
    const uint64_t ranges[][2] = {
        { 0, 1 }, { 5, 3 }, { 63, 2 }, { 64, 64 }, { 100, 1000 }, { low - 70, 70 },
        { low - 3, 10 }, { low - 64, 128 }, { low, 1 }, { low + 1, 63 }, { np - 65, 65 },
        { np - 1, 1 }, { 4096, 0 },
    };
    struct gw_error err;
    gw_error_init(&err);
    for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
        uint64_t first = ranges[r][0], n = ranges[r][1];
        for (int s = 0; s < 2; s++)
            bitmap_set_range(kvm.log[s], 0, kvm.npages[s]);
        assert_int_equal(dirty_log_protect(&dl, bits, first, n, &err), 0);
        for (uint64_t p = first > 200 ? first - 200 : 0; p < first + n + 200 && p < np; p++) {
            bool in = p >= first && p < first + n && bitmap_test(bits, p);
            bool set = p < low ? bitmap_test(kvm.log[0], p) : bitmap_test(kvm.log[1], p - low);
            if (set == in)
                fail_msg("range %zu [%llu, +%llu): page %llu %s", r, (unsigned long long)first,
                         (unsigned long long)n, (unsigned long long)p,
                         in ? "not re-protected" : "re-protected");
        }
    }
    assert_int_equal(kvm.bad, 0);
    bitmap_free(bits);
    dirty_log_fini(&dl);
}

/* A fetch reports the guest's pages (in RAM page indices, both slots) and
 * the VMM's, taking only the VMM's; a sync takes both; a peek takes
 * nothing. */
static void test_dirty_fetch_sync_peek(void **state)
{
    struct guest_ram ram;
    struct dirty_log dl;
    dirty_setup(&ram, &dl);
    uint64_t np = dl.npages, low = kvm.npages[0];
    for (int s = 0; s < 2; s++)
        bitmap_zero(kvm.log[s], kvm.npages[s]);
    bitmap_set(kvm.log[0], 7);
    bitmap_set(kvm.log[1], 3);                 /* RAM page low + 3 */
    dirty_log_mark(&dl, 4 * GiB + 10 * PG, 1); /* RAM page low + 10 */
    dirty_log_mark(&dl, 3 * GiB + PG, 1);      /* the hole: not RAM */
    uint64_t *out = bitmap_new(np);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(dirty_log_peek(&dl, out, &err), 0);
    assert_int_equal(bitmap_count(out, np), 3);
    assert_true(bitmap_test(out, 7) && bitmap_test(out, low + 3) && bitmap_test(out, low + 10));
    bitmap_zero(out, np);
    assert_int_equal(dirty_log_fetch(&dl, out, &err), 0);
    assert_int_equal(bitmap_count(out, np), 3);
    bitmap_zero(out, np);
    assert_int_equal(dirty_log_fetch(&dl, out, &err), 0); /* the guest's again, not the VMM's */
    assert_int_equal(bitmap_count(out, np), 2);
    assert_false(bitmap_test(out, low + 10));
    bitmap_zero(out, np);
    assert_int_equal(dirty_log_sync(&dl, out, &err), 0);
    assert_int_equal(bitmap_count(out, np), 2);
    assert_int_equal(bitmap_count(kvm.log[0], kvm.npages[0]) + bitmap_count(kvm.log[1], kvm.npages[1]),
                     0);
    bitmap_zero(out, np);
    assert_int_equal(dirty_log_sync(&dl, out, &err), 0);
    assert_int_equal(bitmap_count(out, np), 0);
    assert_int_equal(kvm.bad, 0);
    bitmap_free(out);
    dirty_log_fini(&dl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_holes_read_as_zeros_without_memory),
        cmocka_unit_test(test_many_runs_of_every_kind),
        cmocka_unit_test(test_dirty_start_refused_leaves_no_slot_logging),
        cmocka_unit_test(test_dirty_protect_any_range),
        cmocka_unit_test(test_dirty_fetch_sync_peek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
