/* The migration engine's post-copy, end to end in one process and without
 * KVM: two struct migration (source and destination) over real Unix or
 * TCP sockets, guest RAM in real memfds, the destination's missing pages
 * caught by a real userfaultfd. The "vCPUs" are threads: on the source one
 * keeps writing a hot working set (reporting its writes to the dirty log,
 * as the VMM does for its own writes); on the destination one reads every
 * page and compares it with the source's frozen copy, faulting on what is
 * missing. Covers: switch at once, after the first pass (both also with
 * compress-zstd), by command mid-round; migrate-pause and recovery twice;
 * a cut "cable" (loopback down in a private network namespace) and
 * recovery; the source exiting (destination fails with a reason); the
 * destination exiting (source stays paused). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "memory/uffd.h"
#include "engine_vm.h"
#include "test_netns.h"
#include "test_relay.h"
#include "migration/migration.h"
#include "migration/stream_format.h"

#define RAM_SIZE (64ULL << 20)

static void vm_init(struct evm *v, struct evm *src) { assert_int_equal(evm_init(v, RAM_SIZE, src), 0); }

static void set_param(struct evm *v, const char *name, int64_t value)
{
    assert_int_equal(evm_set_param(v, name, value), 0);
}

static void uri_for(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "unix:/tmp/gw-pc-%d-%s.sock", getpid(), tag);
}

static void start(struct evm *src, struct evm *dst, const char *uri)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst->mig, uri, &err), 0);
    assert_int_equal(mig_start_outgoing(&src->mig, uri, &err), 0);
}

static void prealloc_dst(struct evm *dst);

/* Two stand-in VMs migrating over `uri`, switched to post-copy at once;
 * the destination's reader pauses delay_us per page, background pages go
 * at pc_bw bytes/s (0: unlimited); prealloc: the destination's RAM is
 * populated first (its missing pages then have memory in the memfd). */
static void postcopy_at_once(struct evm *src, struct evm *dst, const char *uri,
                             unsigned delay_us, int64_t pc_bw, bool prealloc)
{
    vm_init(src, NULL);
    vm_init(dst, src);
    if (prealloc)
        prealloc_dst(dst);
    dst->read_delay_us = delay_us;
    if (pc_bw)
        set_param(src, "max-postcopy-bandwidth", pc_bw);
    start(src, dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src->mig, &err), 0);
}

static uint64_t d_found_present(struct evm *dst)
{
    struct mig_stats d;
    mig_get_stats(&dst->mig, &d);
    return d.postcopy_found_present;
}

/* False for a test whose hand-over broke (no downtime phases then). */
static bool phases_expected = true;

/* Both completed, every page equal, the state carried over. */
static void check_done(struct evm *src, struct evm *dst)
{
    assert_true(evm_wait_state(src, MIG_COMPLETED, 60000));
    assert_true(evm_wait_state(dst, MIG_COMPLETED, 10000));
    evm_set_run(dst, false, true);
    uint64_t first = 0, bad = evm_compare(dst, src, &first);
    if (bad)
        fail_msg("%llu pages differ after post-copy, the first is %llu", (unsigned long long)bad,
                 (unsigned long long)first);
    assert_int_equal(dst->errors, 0);
    assert_true(dst->got_state == src->gen);
    /* MIGRATION {postcopy-active} came before the guest ran (RESUME), as
     * in QEMU. */
    assert_int_equal(dst->state_at_start, MIG_POSTCOPY_ACTIVE);
    assert_int_equal(d_found_present(dst), 0);
    struct mig_stats s, d;
    mig_get_stats(&src->mig, &s);
    mig_get_stats(&dst->mig, &d);
    fprintf(stderr, "    src: %llu requests, %llu post-copy bytes, downtime %llu ms; dst: %llu faults "
            "p50 %llu us p99 %llu us max %llu us, blocked %llu ms, checked %llu pages\n",
            (unsigned long long)s.postcopy_requests, (unsigned long long)s.postcopy_bytes,
            (unsigned long long)s.downtime_ms, (unsigned long long)d.fault_count,
            (unsigned long long)d.fault_p50_us, (unsigned long long)d.fault_p99_us,
            (unsigned long long)d.fault_max_us, (unsigned long long)(d.vcpu_blocktime_us[0] / 1000),
            (unsigned long long)dst->checked);
    assert_true(s.postcopy_bytes > 0);
    assert_true(src->completed);
    /* Where the downtime went, once the hand-over went through whole. */
    assert_true(evm_phases_add_up(&s) || !phases_expected);
    /* Every fault blocks its vCPU for some µs: the sum must show (it was
     * kept in whole ms per fault, so sub-ms faults added nothing). */
    if (d.fault_count)
        assert_true(d.vcpu_blocktime_us[0] > 0);
}

static int lo_link(bool up)
{
    char *argv[] = { "ip", "link", "set", "lo", up ? "up" : "down", NULL };
    return test_run(argv);
}

static bool have_uffd(void)
{
    if (uffd_available())
        return true;
    fprintf(stderr, "    userfaultfd is not available here: skipped\n");
    return false;
}

/* ---- the switch, seen from the source's stop hook ---- */

#define LATE_COLD  48   /* static pages the destination holds, written at the stop */
#define LATE_HOLES 8    /* never-written pages (holes there too), written at the stop */

/* The source's stop op, wrapped. When the engine stops the guest (after
 * its pre-discard was acknowledged) it looks at how much of the hot set
 * the destination still holds (it should have dropped what was dirtied),
 * then writes pages that were clean at the pre-discard: these are stale or
 * missing on the destination and must come through the late discards
 * (check_done compares every page). */
static struct {
    struct mig_vm_ops ops;
    const struct mig_vm_ops *orig;
    struct evm *dst;
    unsigned stops;
    uint64_t hot_held;          /* hot pages the destination held at the stop */
    uint64_t hot_in_memfd;      /* hot pages its memfd had memory for then */
} probe;

/* Pages of [lo, hi) of a mapping that are mapped in this process
 * (/proc/self/pagemap's present bit): a destination's page it can read
 * without a fault. (Its memfd is no measure: with minor faults a dropped
 * page keeps its memory there.) */
static uint64_t mapped_pages(const uint8_t *base, uint64_t lo, uint64_t hi)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    uint64_t n = 0;
    for (uint64_t p = lo; p < hi; p++) {
        uint64_t e = 0;
        off_t at = (off_t)(((uintptr_t)base / 4096 + p) * 8);
        assert_int_equal(pread(fd, &e, 8, at), 8);
        n += (e >> 63) & 1;
    }
    close(fd);
    return n;
}

/* Pages of [lo, hi) that have memory in a memfd (not holes). */
static uint64_t memfd_pages(int fd, uint64_t lo, uint64_t hi)
{
    uint64_t n = 0;
    off_t off = (off_t)(lo * 4096), end = (off_t)(hi * 4096);
    while (off < end) {
        off_t d = lseek(fd, off, SEEK_DATA);
        if (d < 0 || d >= end)
            break;
        off_t h = lseek(fd, d, SEEK_HOLE);
        if (h < 0 || h > end)
            h = end;
        n += (uint64_t)(h - d) / 4096;
        off = h;
    }
    return n;
}

/* The destination populates its RAM before the stream (--mem-prealloc),
 * so that what it holds is mapped; bounded wait. */
static void prealloc_dst(struct evm *dst)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_prealloc_start(&dst->ram, &err), 0);
    for (int i = 0; i < 10000 && __atomic_load_n(&dst->ram.prealloc_done, __ATOMIC_ACQUIRE) <
                                     dst->ram.size; i++)
        evm_sleep_us(1000);
    assert_int_equal(__atomic_load_n(&dst->ram.prealloc_done, __ATOMIC_ACQUIRE), dst->ram.size);
}

static void late_write(struct evm *v, uint64_t page)
{
    memset(v->ram.host + page * 4096, 0x40 | (int)(page & 0x3f), 4096);
    dirty_log_mark(&v->dl, page * 4096, 4096);
}

static int probe_stop(void *vm, struct gw_error *err)
{
    struct evm *src = vm;
    probe.stops++;
    probe.hot_held = mapped_pages(probe.dst->ram.host, EVM_STATIC_END(src), EVM_HOT_END(src));
    probe.hot_in_memfd = memfd_pages(probe.dst->ram.memfd, EVM_STATIC_END(src), EVM_HOT_END(src));
    for (uint64_t i = 0; i < LATE_COLD; i++)
        late_write(src, 1 + i * 17);
    for (uint64_t i = 0; i < LATE_HOLES; i++)
        late_write(src, EVM_ZERO_END(src) + 5 + i * 3);
    return probe.orig->stop(vm, err);
}

/* The source's writer has been over its hot set twice: the first pass
 * then sends the hot set (the destination holds it) and the writer dirties
 * it again during the pass. Bounded. */
static void wait_hot_written(struct evm *src)
{
    uint64_t hot = EVM_HOT_END(src) - EVM_STATIC_END(src);
    for (int i = 0; i < 5000 && src->gen < 2 * hot; i++)
        evm_sleep_us(1000);
    assert_true(src->gen >= 2 * hot);
}

static void probe_install(struct evm *src, struct evm *dst)
{
    memset(&probe, 0, sizeof(probe));
    probe.orig = src->mig.ops;
    probe.ops = *src->mig.ops;
    probe.ops.stop = probe_stop;
    probe.dst = dst;
    src->mig.ops = &probe.ops;
}

/* One stop; at it the destination held at most `max_held` hot pages. */
static void probe_check(struct evm *src, uint64_t max_held)
{
    uint64_t hot = EVM_HOT_END(src) - EVM_STATIC_END(src);
    fprintf(stderr, "    at the stop the destination held %llu of %llu hot pages\n",
            (unsigned long long)probe.hot_held, (unsigned long long)hot);
    assert_int_equal(probe.stops, 1);
    assert_true(probe.hot_held <= max_held);
}

/* ---- scenarios ---- */

/* Both sides compress pages with zstd (the capability, as QMP sets it). */
static void use_zstd(struct evm *src, struct evm *dst)
{
    assert_int_equal(evm_set_cap(src, MIG_CAP_COMPRESS_ZSTD, true), 0);
    assert_int_equal(evm_set_cap(dst, MIG_CAP_COMPRESS_ZSTD, true), 0);
}

/* The pages after the switch went compressed: the stand-in's pages hold a
 * few words each, so the post-copy bytes are a small part of the pages'. */
static void check_compressed(struct evm *src)
{
    struct mig_stats s;
    mig_get_stats(&src->mig, &s);
    uint64_t hot = EVM_HOT_END(src) - EVM_STATIC_END(src);
    fprintf(stderr, "    compressed: %llu post-copy bytes for at least %llu pages\n",
            (unsigned long long)s.postcopy_bytes, (unsigned long long)hot);
    assert_true(s.postcopy_bytes * 8 < hot * GWS_PAGE_SIZE);
}

/* max-postcopy-bandwidth held: what went after the switch (pushed and
 * asked for, compressed or not) took at least its time at the limit, with
 * 10 % to spare. `ns` runs from before the switch to after the end. */
static void check_rate(struct evm *src, int64_t limit, uint64_t ns)
{
    struct mig_stats s;
    mig_get_stats(&src->mig, &s);
    double rate = (double)s.postcopy_bytes * 1e9 / (double)ns;
    fprintf(stderr, "    post-copy: %llu bytes in %llu ms, %.0f bytes/s for a limit of %lld\n",
            (unsigned long long)s.postcopy_bytes, (unsigned long long)(ns / 1000000), rate,
            (long long)limit);
    assert_true(rate <= (double)limit * 1.1);
}

static void switch_at_once(bool zstd)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), zstd ? "once-zstd" : "once");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    if (zstd)
        use_zstd(&src, &dst);
    /* The push takes over a second, so that the reader faults whatever the
     * host's load (unlimited, it could be over before the reader ran). A
     * fault's page goes at once whatever the limit: the reader's pause
     * keeps its faults within half of it, for the push to keep to it. */
    int64_t limit = zstd ? 96 << 10 : 16 << 20;
    set_param(&src, "max-postcopy-bandwidth", limit);
    dst.read_delay_us = 500;
    probe_install(&src, &dst);
    start(&src, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    uint64_t t0 = mig_now_ns();
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    check_done(&src, &dst);
    check_rate(&src, limit, mig_now_ns() - t0);
    probe_check(&src, EVM_HOT_END(&src) - EVM_STATIC_END(&src)); /* nothing to drop yet */
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    assert_true(d.fault_count > 0);
    if (zstd)
        check_compressed(&src);
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_switch_at_once(void **state)
{
    if (!have_uffd())
        skip();
    switch_at_once(false);
}

/* As the nested run that once saw its guest triple-fault afterwards:
 * at once, every page after the switch compressed (pushed and asked for). */
static void test_switch_at_once_compressed(void **state)
{
    if (!have_uffd())
        skip();
    switch_at_once(true);
}

/* Loading the state touches pages the destination does not have yet (as
 * KVM restoring a guest's kvmclock MSRs writes its pages): they fault and
 * come from the source, as the guest's own faults do. Touched before
 * userfaultfd was registered, each got a zero page that its data then
 * could not replace. */
static void test_state_load_touches_missing_pages(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "load-touch");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    /* Hot pages, once the writer has been over them; the pre-copy before
     * the switch (in page order, slowed down) does not reach them, so all
     * are still to come. Apart by more than the pages a fault brings
     * along. */
    for (unsigned i = 0; i < 3; i++)
        dst.load_touch[i] = EVM_STATIC_END(&src) + 7 + i * 1500;
    dst.load_touches = 3;
    set_param(&src, "max-bandwidth", 1 << 20);
    set_param(&src, "max-postcopy-bandwidth", 64 << 20);
    wait_hot_written(&src);
    start(&src, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    check_done(&src, &dst);
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    %llu faults outside the vCPU\n", (unsigned long long)d.non_vcpu_faults);
    assert_true(d.non_vcpu_faults >= 3);
    evm_fini(&dst);
    evm_fini(&src);
}

/* The preempt channel breaks while the state loads and a touch waits for
 * its page: the touch goes on (zeros), the destination fails before the
 * guest runs there, and the source, without RP_LOADED, keeps running it. */
static void test_break_while_state_loads(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "load-break");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    dst.load_touch[0] = EVM_STATIC_END(&src) + 7;
    dst.load_touches = 1;
    dst.load_break = true;
    set_param(&src, "max-bandwidth", 1 << 20);
    wait_hot_written(&src);
    start(&src, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_FAILED, 60000));
    assert_true(evm_wait_state(&src, MIG_FAILED, 60000));
    struct mig_stats d, s;
    mig_get_stats(&dst.mig, &d);
    mig_get_stats(&src.mig, &s);
    fprintf(stderr, "    destination: %s\n    source: %s\n", d.error_desc, s.error_desc);
    assert_false(dst.started);
    assert_false(s.postcopy_started);
    uint64_t g = src.gen;
    evm_sleep_us(50000);
    assert_true(src.gen != g); /* the source's guest runs */
    evm_fini(&dst);
    evm_fini(&src);
}

/* A page still to come that something wrote outside userfaultfd (here
 * into the memfd, while the state loads): its data cannot go in, and it
 * keeps what was written, counted in postcopy-found-present. The pages
 * after it in its record still go in: the kernel's copy stops at it, and
 * the install went on for one page only, leaving the rest of the record
 * to read as zeros. */
static void test_page_written_outside_userfaultfd(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "stray");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    /* A hot page the writer has written: the pre-copy before the switch
     * (in page order, slowed down) does not reach it, so it is still to
     * come. */
    uint64_t stray = EVM_STATIC_END(&src) + 1001;
    dst.load_stray = stray;
    set_param(&src, "max-bandwidth", 1 << 20);
    set_param(&src, "max-postcopy-bandwidth", 64 << 20);
    wait_hot_written(&src);
    dst.read_delay_us = 500;
    start(&src, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_COMPLETED, 60000));
    assert_true(evm_wait_state(&dst, MIG_COMPLETED, 10000));
    evm_set_run(&dst, false, true);
    uint64_t first = 0, bad = evm_compare(&dst, &src, &first);
    fprintf(stderr, "    %llu pages differ, the first is %llu; %llu found present\n",
            (unsigned long long)bad, (unsigned long long)first,
            (unsigned long long)d_found_present(&dst));
    assert_int_equal(bad, 1);
    assert_int_equal(first, stray);
    assert_int_equal(dst.ram.host[stray * 4096 + 100], 0xee);
    assert_int_equal(d_found_present(&dst), 1);
    evm_fini(&dst);
    evm_fini(&src);
}

/* Switched by postcopy-after-precopy; minor: the destination may use minor
 * faults (else it punches dropped pages out of its memfd, as on kernels
 * without them). */
static void after_first_pass(bool minor, bool zstd)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), zstd ? "pass-zstd" : minor ? "pass" : "pass-nominor");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    if (zstd)
        use_zstd(&src, &dst);
    dst.mig.pc_no_minor = !minor;
    prealloc_dst(&dst);
    struct mig_caps c;
    struct gw_error err;
    gw_error_init(&err);
    mig_get_caps(&src.mig, &c);
    c.on[MIG_CAP_POSTCOPY_AFTER_PRECOPY] = true;
    assert_int_equal(mig_set_caps(&src.mig, &c, &err), 0);
    /* The hot set never converges (compressed, its pages shrink ~100 times) */
    set_param(&src, "max-bandwidth", zstd ? 512 << 10 : 64 << 20);
    set_param(&src, "downtime-limit", 5);
    wait_hot_written(&src);
    probe_install(&src, &dst);
    start(&src, &dst, uri);
    check_done(&src, &dst);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    assert_int_equal(s.iteration, 1);
    /* The pass skipped the hot pages the writer had rewritten by the time
     * it reached them (post-copy follows): they crossed once, after the
     * switch, not in the pass and again. The destination held none of them
     * at the stop. */
    uint64_t hot = EVM_HOT_END(&src) - EVM_STATIC_END(&src);
    fprintf(stderr, "    pages sent: %llu with data, %llu zero (%llu static, %llu hot)\n",
            (unsigned long long)s.normal, (unsigned long long)s.duplicate,
            (unsigned long long)EVM_STATIC_END(&src), (unsigned long long)hot);
    /* Compressed, the pass reaches the hot set within the 10 ms between two
     * looks at the log (OUT_REWRITTEN_NS), so it sends it once before. */
    if (!zstd)
        assert_true(s.normal < EVM_STATIC_END(&src) + hot + hot / 4);
    probe_check(&src, hot / 8);
    /* Dropped from the mapping only (their memory kept for the data to
     * come), or punched out of the memfd. */
    fprintf(stderr, "    at the stop the memfd had memory for %llu hot pages\n",
            (unsigned long long)probe.hot_in_memfd);
    if (minor && uffd_minor_available())
        assert_int_equal(probe.hot_in_memfd, hot);
    else
        assert_true(probe.hot_in_memfd <= hot / 8);
    if (zstd)
        check_compressed(&src);
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_after_first_pass(void **state)
{
    if (!have_uffd())
        skip();
    after_first_pass(true, false);
}

static void test_after_first_pass_without_minor_faults(void **state)
{
    if (!have_uffd())
        skip();
    after_first_pass(false, false);
}

/* With minor faults where the kernel has them: compressed pages are
 * filled into the memfd and mapped (UFFDIO_CONTINUE). */
static void test_after_first_pass_compressed(void **state)
{
    if (!have_uffd())
        skip();
    after_first_pass(true, true);
}

/* ---- a huge page the kernel cannot split ---- */

#define THP_SHMEM "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

/* The bracketed word of THP_SHMEM into buf ("" if unreadable). */
static void thp_shmem_get(char *buf, size_t cap)
{
    char line[256] = "";
    buf[0] = '\0';
    FILE *f = fopen(THP_SHMEM, "r");
    if (!f)
        return;
    if (fgets(line, sizeof(line), f)) {
        char *a = strchr(line, '['), *b = a ? strchr(a, ']') : NULL;
        if (a && b)
            snprintf(buf, cap, "%.*s", (int)(b - a - 1), a + 1);
    }
    fclose(f);
}

/* The host's mode before a test changed it: put back at exit too (a
 * test that fails between its change and its restore longjmps past it). */
static char thp_saved[32];

static void thp_shmem_restore(void)
{
    if (thp_saved[0]) {
        FILE *f = fopen(THP_SHMEM, "w");
        if (f) {
            fputs(thp_saved, f);
            fclose(f);
        }
    }
}

static bool thp_shmem_set(const char *mode)
{
    FILE *f = fopen(THP_SHMEM, "w");
    if (!f)
        return false;
    bool ok = fputs(mode, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* KiB of [base, base+len) mapped by huge pages (/proc/self/smaps). */
static uint64_t pmd_mapped_kib(const void *base, uint64_t len)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[256];
    bool in = false;
    uint64_t kib = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi, v;
        char c;
        if (sscanf(line, "%lx-%lx %c", &lo, &hi, &c) == 3 && strchr(line, '-') < strchr(line, ' '))
            in = lo < (uintptr_t)base + len && (uintptr_t)base < hi;
        else if (in && sscanf(line, "ShmemPmdMapped: %lu kB", &v) == 1)
            kib += v;
    }
    fclose(f);
    return kib;
}

/* A destination that punches dropped pages out of its memfd (no minor
 * faults), with RAM in huge pages (preallocated, shmem THP on): a punch
 * splits the huge page around it. The pages the source writes at its stop
 * (probe_stop) are single pages in huge pages the destination holds, so
 * their late discards punch parts of them. Here something else holds one
 * page of every huge page (a pipe, by vmsplice), so no split can happen: the kernel zeroes the punched pages and leaves them in memory,
 * where no fault would catch them (the guest would read zeros, and their
 * data would find them present and be dropped). The destination must fail
 * at the discard, before the switch, and the guest run on at the source;
 * once the pages are let go, the same source migrates whole. */
static void test_unsplittable_huge_page(void **state)
{
    char mode[32];
    thp_shmem_get(mode, sizeof(mode));
    if (!have_uffd())
        skip();
    if (mode[0] && !thp_saved[0]) {
        snprintf(thp_saved, sizeof(thp_saved), "%s", mode);
        atexit(thp_shmem_restore);
    }
    if (!mode[0] || !thp_shmem_set("advise")) {
        fprintf(stderr, "    %s cannot be set here: skipped\n", THP_SHMEM);
        skip();
    }
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "thp");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    dst.mig.pc_no_minor = true;
    prealloc_dst(&dst);
    uint64_t lo = 0, hi = dst.ram.size;
    uint64_t huge = pmd_mapped_kib(dst.ram.host + lo, hi - lo);
    if (huge == 0) {
        thp_shmem_set(mode);
        evm_fini(&dst);
        evm_fini(&src);
        fprintf(stderr, "    no huge pages formed: skipped\n");
        skip();
    }
    int pp[2];
    assert_int_equal(pipe(pp), 0);
    assert_true(fcntl(pp[1], F_SETPIPE_SZ, 1 << 20) > 0);
    unsigned pinned = 0;
    for (uint64_t off = (lo + (2 << 20) - 1) & ~((2ULL << 20) - 1); off + (2 << 20) <= hi;
         off += 2 << 20, pinned++) {
        struct iovec v = { dst.ram.host + off, 4096 }; /* the huge page's first page */
        assert_int_equal(vmsplice(pp[1], &v, 1, 0), 4096);
    }
    fprintf(stderr, "    %llu KiB of RAM in huge pages, %u of them held\n",
            (unsigned long long)huge, pinned);
    struct mig_caps c;
    struct gw_error err;
    gw_error_init(&err);
    mig_get_caps(&src.mig, &c);
    c.on[MIG_CAP_POSTCOPY_AFTER_PRECOPY] = true;
    assert_int_equal(mig_set_caps(&src.mig, &c, &err), 0);
    set_param(&src, "max-bandwidth", 64 << 20);
    set_param(&src, "downtime-limit", 5);
    wait_hot_written(&src);
    probe_install(&src, &dst);
    start(&src, &dst, uri);
    bool failed = evm_wait_state(&src, MIG_FAILED, 60000);
    struct mig_stats s, d;
    mig_get_stats(&src.mig, &s);
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    source: %s; destination: %s\n", s.error_desc, d.error_desc);
    close(pp[0]);
    close(pp[1]);
    thp_shmem_set(mode);
    assert_true(failed);
    assert_int_equal(evm_state(&dst), MIG_FAILED);
    assert_non_null(strstr(d.error_desc, "a huge page the kernel could not split"));
    assert_non_null(strstr(s.error_desc, "could not split"));
    assert_false(s.postcopy_started);
    assert_false(dst.started);
    assert_true(src.run); /* the guest runs on here */
    uint64_t gen = src.gen;
    evm_sleep_us(20000);
    assert_true(src.gen > gen);
    /* The same source, to a new destination (the pages let go). */
    evm_fini(&dst);
    vm_init(&dst, &src);
    dst.mig.pc_no_minor = true;
    prealloc_dst(&dst);
    uri_for(uri, sizeof(uri), "thp2");
    src.mig.ops = probe.orig;
    probe_install(&src, &dst);
    start(&src, &dst, uri);
    check_done(&src, &dst);
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_by_command_mid_round(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "cmd");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    prealloc_dst(&dst);
    set_param(&src, "max-bandwidth", 32 << 20);
    set_param(&src, "downtime-limit", 5);
    wait_hot_written(&src);
    probe_install(&src, &dst);
    start(&src, &dst, uri);
    struct mig_stats s;
    for (int i = 0; i < 3000; i++) { /* into the second round */
        mig_get_stats(&src.mig, &s);
        if (s.iteration >= 2)
            break;
        evm_sleep_us(10000);
    }
    assert_true(s.iteration >= 2);
    evm_sleep_us(50000);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    check_done(&src, &dst);
    probe_check(&src, (EVM_HOT_END(&src) - EVM_STATIC_END(&src)) / 8);
    evm_fini(&dst);
    evm_fini(&src);
}

/* Pause from `pauser`, wait for both sides, recover on a new address. */
/* Both in post-copy, migrate-pause on `pauser`, both paused (bounded). */
static void pause_both(struct evm *src, struct evm *dst, struct evm *pauser)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_true(evm_wait_state(dst, MIG_POSTCOPY_ACTIVE, 20000));
    assert_true(evm_wait_state(src, MIG_POSTCOPY_ACTIVE, 20000));
    assert_int_equal(mig_pause(&pauser->mig, &err), 0);
    assert_true(evm_wait_state(src, MIG_POSTCOPY_PAUSED, 20000));
    assert_true(evm_wait_state(dst, MIG_POSTCOPY_PAUSED, 20000));
}

static void pause_and_recover(struct evm *src, struct evm *dst, struct evm *pauser, const char *uri)
{
    struct gw_error err;
    gw_error_init(&err);
    pause_both(src, dst, pauser);
    assert_int_not_equal(mig_cancel(&src->mig, &err), 0); /* cannot cancel in post-copy */
    uint64_t before = dst->checked;
    evm_sleep_us(300000);
    fprintf(stderr, "    paused: the destination's reader moved %llu pages meanwhile\n",
            (unsigned long long)(dst->checked - before));
    assert_int_equal(mig_recover(&dst->mig, uri, &err), 0);
    assert_int_equal(mig_resume(&src->mig, uri, &err), 0);
    assert_true(evm_wait_state(dst, MIG_POSTCOPY_ACTIVE, 20000) || evm_state(dst) == MIG_COMPLETED);
}

/* The source's completed op, wrapped: it runs once the source has
 * RP_LOADED, before it sends COMMIT; here the main connection breaks. */
static struct {
    struct mig_vm_ops ops;
    const struct mig_vm_ops *orig;
} cut;

static void cut_before_commit(void *vm)
{
    struct evm *src = vm;
    shutdown(src->mig.fd, SHUT_RDWR);
    cut.orig->completed(vm);
}

/* The connection breaks between RP_LOADED and COMMIT: the source has handed
 * the guest over and never runs it again; the destination, which cannot
 * tell, keeps the state and pauses (it discarded it: the guest was lost,
 * with the source paused for good). The source's resume is the commit. */
static void test_break_before_commit(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128], uri2[128];
    uri_for(uri, sizeof(uri), "c0");
    uri_for(uri2, sizeof(uri2), "c1");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    cut.orig = src.mig.ops;
    cut.ops = *src.mig.ops;
    cut.ops.completed = cut_before_commit;
    src.mig.ops = &cut.ops;
    start(&src, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_POSTCOPY_PAUSED, 20000));
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 20000));
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    destination: %s\n", d.error_desc);
    assert_false(dst.started); /* nothing runs there yet */
    assert_false(d.postcopy_started);
    src.mig.ops = cut.orig;
    assert_int_equal(mig_recover(&dst.mig, uri2, &err), 0);
    assert_int_equal(mig_resume(&src.mig, uri2, &err), 0);
    phases_expected = false;
    check_done(&src, &dst);
    phases_expected = true;
    assert_true(dst.started);
    evm_fini(&dst);
    evm_fini(&src);
}

/* migrate-recover and `migrate resume` are two commands on two hosts: the
 * destination waits for the source as long as it takes (it gave up after
 * 10 s), and migrate-pause there ends the wait (back to paused, and a
 * later recover goes through). */
static void test_recover_waits_for_the_source(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128], uri2[128], uri3[128];
    uri_for(uri, sizeof(uri), "w0");
    uri_for(uri2, sizeof(uri2), "w1");
    uri_for(uri3, sizeof(uri3), "w2");
    postcopy_at_once(&src, &dst, uri, 200, 4 << 20, false);
    struct gw_error err;
    gw_error_init(&err);
    pause_both(&src, &dst, &src);
    /* A recover given up by migrate-pause */
    assert_int_equal(mig_recover(&dst.mig, uri2, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_RECOVER, 5000));
    assert_int_equal(mig_pause(&dst.mig, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 5000));
    /* ... and one that waits 12 s for the source */
    assert_int_equal(mig_recover(&dst.mig, uri3, &err), 0);
    evm_sleep_us(12000000);
    assert_int_equal(evm_state(&dst), MIG_POSTCOPY_RECOVER);
    assert_int_equal(mig_resume(&src.mig, uri3, &err), 0);
    check_done(&src, &dst);
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_pause_recover_twice(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128], uri2[128], uri3[128];
    uri_for(uri, sizeof(uri), "p0");
    uri_for(uri2, sizeof(uri2), "p1");
    uri_for(uri3, sizeof(uri3), "p2");
    /* preallocated: the pages still missing at each break have memory
     * here, and are filled and mapped after each recovery */
    postcopy_at_once(&src, &dst, uri, 200, 8 << 20, true);
    struct gw_error err;
    gw_error_init(&err);
    pause_and_recover(&src, &dst, &dst, uri2); /* migrate-pause on the destination */
    /* The second page list in parts of 7 words, as a guest over 256 GiB
     * gets it (in parts of 8 MiB). */
    dst.mig.pc_bitmap_part_words = 7;
    pause_and_recover(&src, &dst, &src, uri3); /* and on the source */
    check_done(&src, &dst);
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    assert_int_equal(d.paused_count, 2);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A cut cable: loopback goes down in a private network namespace; both
 * sides notice within the liveness timeout, pause, and recover once the
 * link is back. */
/* Two hosts (tests/lib/test_netns.h): the destination's side 10.99.0.1,
 * the source's 10.99.0.2. */
static struct test_hosts hosts;
#define ns_dst hosts.dst
#define ns_src hosts.src
#define enter test_hosts_enter

/* The source's side sends at 64 KB/s from now on (a queue of at most 1 s,
 * so that nothing waits unacknowledged long enough to look like a dead
 * link); what comes back is not held up. */
static int slow_source_side(bool on)
{
    char *add[] = { "ip", "netns", "exec", ns_src, "tc", "qdisc", "add", "dev", "v-src", "root",
                    "tbf", "rate", "512kbit", "burst", "16kb", "latency", "1s", NULL };
    char *del[] = { "ip", "netns", "exec", ns_src, "tc", "qdisc", "del", "dev", "v-src", "root",
                    NULL };
    return test_run(on ? add : del);
}

/* migrate-pause on the source while the push waits behind a slow link
 * (two hosts, the source's side sending at 64 KB/s): the source acts on it
 * at once (its write is called off), tells the destination on the preempt
 * channel and resets the main one, and both pause; then recovery over the
 * fast link again, and every page is right. */
static void test_pause_on_a_slow_link(void **state)
{
    if (!have_uffd())
        skip();
    if (test_hosts_up(&hosts, "pc") != 0) {
        test_hosts_down(&hosts);
        fprintf(stderr, "    no network namespaces or veth here: skipped\n");
        skip();
    }
    static struct evm src, dst;
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    dst.read_delay_us = 2000;
    set_param(&src, "max-bandwidth", 1 << 20); /* little before the switch */
    set_param(&src, "max-postcopy-bandwidth", 2 << 20); /* 16 s: not over before the pause */
    struct gw_error err;
    gw_error_init(&err);
    const char *uri = "tcp:10.99.0.1:47101";
    assert_int_equal(enter(ns_dst), 0);
    assert_int_equal(mig_start_incoming(&dst.mig, uri, &err), 0);
    assert_int_equal(enter(ns_src), 0);
    assert_int_equal(mig_start_outgoing(&src.mig, uri, &err), 0);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_ACTIVE, 30000));
    /* The push fills the main channel's buffers: the pause waits behind
     * ~0.5 MiB, 8 s at this rate. */
    assert_int_equal(slow_source_side(true), 0);
    evm_sleep_us(1000000);
    assert_int_equal(mig_pause(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_POSTCOPY_PAUSED, 30000));
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 30000));
    assert_false(dst.lost);
    assert_int_equal(slow_source_side(false), 0);
    assert_int_equal(enter(ns_dst), 0);
    assert_int_equal(mig_recover(&dst.mig, "tcp:10.99.0.1:47102", &err), 0);
    assert_int_equal(enter(ns_src), 0);
    assert_int_equal(mig_resume(&src.mig, "tcp:10.99.0.1:47102", &err), 0);
    check_done(&src, &dst);
    evm_fini(&dst);
    evm_fini(&src);
    test_hosts_down(&hosts);
}

/* The destination stops reading (a stalled process: the relay between
 * the two freezes) while the push's writes wait for it, on unix sockets,
 * which have no timeout of their own: migrate-pause on the source acts at
 * once (it waited for the write, for as long as the destination stalled),
 * says so on the preempt channel, and keeps its main channel open (its end
 * of stream, read past the backlog, would say that the source exited).
 * Once the destination reads again it pauses too, with nothing lost; then
 * recovery, and every page is right. */
static void test_pause_while_the_destination_stalls(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    static struct test_relay relay;
    char dst_uri[128], relay_uri[128], uri2[128];
    uri_for(dst_uri, sizeof(dst_uri), "st-d");
    uri_for(relay_uri, sizeof(relay_uri), "st-r");
    uri_for(uri2, sizeof(uri2), "st-2");
    assert_int_equal(test_relay_start(&relay, relay_uri + 5, dst_uri + 5), 0);
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    dst.read_delay_us = 2000;
    set_param(&src, "max-postcopy-bandwidth", 16 << 20); /* 4 s: not over before the pause */
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst.mig, dst_uri, &err), 0);
    assert_int_equal(mig_start_outgoing(&src.mig, relay_uri, &err), 0);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_ACTIVE, 20000));
    assert_true(evm_wait_state(&src, MIG_POSTCOPY_ACTIVE, 20000));
    test_relay_freeze(&relay, true);
    evm_sleep_us(500000); /* the push fills the socket and waits in its write */
    uint64_t t0 = mig_now_ms();
    assert_int_equal(mig_pause(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_POSTCOPY_PAUSED, 5000));
    fprintf(stderr, "    the source paused %llu ms after migrate-pause, the destination stalled\n",
            (unsigned long long)(mig_now_ms() - t0));
    evm_sleep_us(300000);
    assert_int_equal(evm_state(&dst), MIG_POSTCOPY_ACTIVE); /* it heard nothing yet */
    test_relay_freeze(&relay, false);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 10000));
    assert_false(dst.lost);
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    the destination paused: %s\n", d.error_desc);
    assert_int_equal(mig_recover(&dst.mig, uri2, &err), 0);
    assert_int_equal(mig_resume(&src.mig, uri2, &err), 0);
    check_done(&src, &dst);
    evm_fini(&dst);
    evm_fini(&src);
    test_relay_stop(&relay);
}

/* migrate-pause on the source while its push sleeps for max-postcopy-
 * bandwidth (32 KiB/s: seconds after each record of 48 pages): the pause
 * does not wait the sleep out. Then recovery, unlimited, and every page is
 * right. */
static void test_pause_during_the_rate_limit(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128], uri2[128];
    uri_for(uri, sizeof(uri), "rl0");
    uri_for(uri2, sizeof(uri2), "rl1");
    postcopy_at_once(&src, &dst, uri, 0, 32 << 10, false);
    assert_true(evm_wait_state(&src, MIG_POSTCOPY_ACTIVE, 20000));
    evm_sleep_us(500000);
    struct gw_error err;
    gw_error_init(&err);
    uint64_t t0 = mig_now_ms();
    assert_int_equal(mig_pause(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_POSTCOPY_PAUSED, 10000));
    uint64_t took = mig_now_ms() - t0;
    fprintf(stderr, "    the source paused %llu ms after migrate-pause\n", (unsigned long long)took);
    assert_true(took < 1000);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 10000));
    set_param(&src, "max-postcopy-bandwidth", 0);
    assert_int_equal(mig_recover(&dst.mig, uri2, &err), 0);
    assert_int_equal(mig_resume(&src.mig, uri2, &err), 0);
    check_done(&src, &dst);
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_link_down_recover(void **state)
{
    if (!have_uffd())
        skip();
    if (unshare(CLONE_NEWNET) < 0 || lo_link(true) != 0) {
        fprintf(stderr, "    no private network namespace here (%s): skipped\n", strerror(errno));
        skip();
    }
    static struct evm src, dst;
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    dst.read_delay_us = 2000; /* slow enough that two cuts happen before the end */
    set_param(&src, "max-postcopy-bandwidth", 1 << 20);
    start(&src, &dst, "tcp:127.0.0.1:47001");
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    for (int round = 0; round < 2; round++) {
        assert_true(evm_wait_state(&dst, MIG_POSTCOPY_ACTIVE, 20000));
        evm_sleep_us(300000);
        assert_int_equal(lo_link(false), 0);
        assert_true(evm_wait_state(&src, MIG_POSTCOPY_PAUSED, 30000));
        assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 30000));
        assert_int_equal(lo_link(true), 0);
        char uri[64];
        snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", 47002 + round);
        assert_int_equal(mig_recover(&dst.mig, uri, &err), 0);
        assert_int_equal(mig_resume(&src.mig, uri, &err), 0);
    }
    check_done(&src, &dst);
    evm_fini(&dst);
    evm_fini(&src);
}

/* The source VMM exits in post-copy: the destination says so and fails. */
static void test_source_exits(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "sx");
    postcopy_at_once(&src, &dst, uri, 300, 4 << 20, false);
    struct gw_error err;
    gw_error_init(&err);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_ACTIVE, 20000));
    mig_fini(&src.mig); /* what exiting does to the engine: its sockets close */
    assert_true(evm_wait_state(&dst, MIG_FAILED, 20000));
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    destination: %s\n", d.error_desc);
    assert_non_null(strstr(d.error_desc, "exited"));
    assert_true(dst.lost);
    mig_init(&src.mig, &src, NULL, &src.ram, &src.dl, "t", NULL, 1); /* evm_fini finishes it again */
    pthread_mutex_lock(&dst.lk);
    dst.quit = true; /* its reader waits for pages that will never come */
    pthread_mutex_unlock(&dst.lk);
    dst.thr_started = false;
    evm_fini(&src);
}

/* The destination exits in post-copy: the source stays paused (it must
 * never run the guest again) with the reason in error-desc. */
static void test_destination_exits(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "dx");
    postcopy_at_once(&src, &dst, uri, 300, 4 << 20, false);
    struct gw_error err;
    gw_error_init(&err);
    assert_true(evm_wait_state(&src, MIG_POSTCOPY_ACTIVE, 20000));
    evm_fini(&dst);
    assert_true(evm_wait_state(&src, MIG_POSTCOPY_PAUSED, 20000));
    evm_sleep_us(500000);
    assert_int_equal(evm_state(&src), MIG_POSTCOPY_PAUSED);
    assert_false(src.run); /* never resumed */
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    fprintf(stderr, "    source: %s\n", s.error_desc);
    assert_true(s.error_desc[0] != 0);
    evm_fini(&src);
}

/* ---- a hand-written source: the destination's answers to PING ---- */

struct raw_source {
    int fd, pfd;
    struct stream s, ps;
};

static int unix_connect(const char *uri)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", uri + strlen("unix:"));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* HEADER and POSTCOPY_ADVISE for dst's guest, then the preempt channel. */
static void raw_open(struct raw_source *r, struct evm *dst, const char *uri)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst->mig, uri, &err), 0);
    r->fd = unix_connect(uri);
    stream_init(&r->s, &stream_fd_ops, (void *)(intptr_t)r->fd);
    struct gws_postcopy_advise a = { 1, 0, dst->npages };
    struct iovec adv = { &a, sizeof(a) };
    assert_int_equal(stream_write_preamble(&r->s), 0);
    assert_int_equal(evm_write_header(dst, &r->s), 0);
    assert_int_equal(stream_write_record(&r->s, GWS_POSTCOPY_ADVISE, &adv, 1), 0);
    assert_int_equal(stream_flush(&r->s), 0);
    r->pfd = unix_connect(uri);
    stream_init(&r->ps, &stream_fd_ops, (void *)(intptr_t)r->pfd);
    assert_int_equal(stream_write_preamble_flags(&r->ps, GWS_CHANNEL_PREEMPT), 0);
    assert_int_equal(stream_flush(&r->ps), 0);
}

static void raw_send(struct raw_source *r, uint32_t type, const void *body, size_t len)
{
    struct iovec iov = { (void *)body, len };
    assert_int_equal(stream_write_record(&r->s, type, &iov, len ? 1 : 0), 0);
    assert_int_equal(stream_flush(&r->s), 0);
}

/* The next return-path record (bounded wait). */
static void raw_answer(struct raw_source *r, struct stream_record *rec)
{
    struct pollfd p = { r->fd, POLLIN, 0 };
    if (r->s.ipos == r->s.ilen)
        assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(stream_read_record(&r->s, rec), 0);
}

static void raw_close(struct raw_source *r)
{
    stream_fini(&r->s);
    stream_fini(&r->ps);
    close(r->fd);
    close(r->pfd);
}

/* The destination failed with RP_FAILED and a reason holding `why`. */
static void expect_failed(struct evm *dst, struct raw_source *r, const char *why)
{
    struct stream_record rec;
    raw_answer(r, &rec);
    assert_int_equal(rec.type, GWS_RP_FAILED);
    assert_true(evm_wait_state(dst, MIG_FAILED, 10000));
    struct mig_stats d;
    mig_get_stats(&dst->mig, &d);
    fprintf(stderr, "    destination: %s\n", d.error_desc);
    assert_non_null(strstr(d.error_desc, why));
}

static void test_ping_records(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    struct raw_source r;
    struct stream_record rec;
    char uri[128];
    vm_init(&src, NULL);
    /* A ping is answered with its id; an unknown mandatory record fails. */
    vm_init(&dst, &src);
    uri_for(uri, sizeof(uri), "ping0");
    raw_open(&r, &dst, uri);
    struct gws_ping ping = { 7, 0 }, pong;
    raw_send(&r, GWS_PING, &ping, sizeof(ping));
    raw_answer(&r, &rec);
    assert_int_equal(rec.type, GWS_RP_PONG);
    assert_int_equal(rec.length, sizeof(pong));
    memcpy(&pong, rec.body, sizeof(pong));
    assert_int_equal(pong.id, 7);
    assert_int_equal(pong.zero, 0);
    raw_send(&r, 0x01ff, NULL, 0);
    expect_failed(&dst, &r, "unknown");
    raw_close(&r);
    evm_fini(&dst);
    /* Malformed pings fail cleanly. */
    const struct {
        struct gws_ping p;
        size_t len;
        const char *why;
    } bad[] = {
        { { 1, 5 }, sizeof(struct gws_ping), "not zero" },
        { { 1, 0 }, 4, "bad length" },
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        vm_init(&dst, &src);
        char tag[16];
        snprintf(tag, sizeof(tag), "ping%u", i + 1);
        uri_for(uri, sizeof(uri), tag);
        raw_open(&r, &dst, uri);
        raw_send(&r, GWS_PING, &bad[i].p, bad[i].len);
        expect_failed(&dst, &r, bad[i].why);
        raw_close(&r);
        evm_fini(&dst);
    }
    evm_fini(&src);
}

/* ---- recoveries name their migration ---- */

/* A source connects to a recovery address and resumes: the preamble,
 * POSTCOPY_RESUME and then `next` (a MIGRATION_ID; 0: nothing, as a
 * source that predates it). */
static void raw_resume(struct raw_source *r, const char *uri, uint32_t next, const void *body,
                       size_t len)
{
    r->fd = unix_connect(uri);
    stream_init(&r->s, &stream_fd_ops, (void *)(intptr_t)r->fd);
    assert_int_equal(stream_write_preamble(&r->s), 0);
    raw_send(r, GWS_POSTCOPY_RESUME, NULL, 0);
    if (next)
        raw_send(r, next, body, len);
    r->pfd = -1;
    stream_init(&r->ps, &stream_fd_ops, NULL);
}

/* dst refused a resume with RP_FAILED holding `why`, and is paused again
 * (or, after a completed migration, no longer waits: pc_late). */
static void expect_refused(struct evm *dst, struct raw_source *r, const char *why)
{
    struct stream_record rec;
    raw_answer(r, &rec);
    assert_int_equal(rec.type, GWS_RP_FAILED);
    fprintf(stderr, "    refused: %.*s\n", (int)rec.length, (const char *)rec.body);
    assert_non_null(memmem(rec.body, rec.length, why, strlen(why)));
    raw_close(r);
    if (evm_state(dst) == MIG_COMPLETED) {
        for (int i = 0; i < 500 && __atomic_load_n(&dst->mig.pc_late, __ATOMIC_SEQ_CST); i++)
            evm_sleep_us(10000);
        assert_false(__atomic_load_n(&dst->mig.pc_late, __ATOMIC_SEQ_CST));
        return;
    }
    assert_true(evm_wait_state(dst, MIG_POSTCOPY_PAUSED, 10000));
    struct mig_stats d;
    mig_get_stats(&dst->mig, &d);
    assert_non_null(strstr(d.error_desc, why));
}

/* Two post-copy migrations paused on one host: a source resumed towards
 * the other one's recovery address is refused, with the reason on both
 * sides, and both then recover where they belong. A resume that names
 * no migration, or a wrong one, is refused too. */
static void test_recovery_names_the_migration(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm a_src, a_dst, b_src, b_dst;
    char ua[128], ub[128], ua2[128], ub2[128], ub3[128];
    uri_for(ua, sizeof(ua), "ida");
    uri_for(ub, sizeof(ub), "idb");
    uri_for(ua2, sizeof(ua2), "ida2");
    uri_for(ub2, sizeof(ub2), "idb2");
    uri_for(ub3, sizeof(ub3), "idb3");
    postcopy_at_once(&a_src, &a_dst, ua, 300, 4 << 20, false);
    postcopy_at_once(&b_src, &b_dst, ub, 300, 4 << 20, false);
    pause_both(&a_src, &a_dst, &a_src);
    pause_both(&b_src, &b_dst, &b_src);
    struct gw_error err;
    gw_error_init(&err);
    /* a's source towards b's destination: b's goes through postcopy-recover
     * (a few ms, too short to poll for) and pauses again */
    struct mig_stats s, d, d0;
    mig_get_stats(&b_dst.mig, &d0);
    assert_int_equal(mig_recover(&b_dst.mig, ub2, &err), 0);
    assert_int_equal(mig_resume(&a_src.mig, ub2, &err), 0);
    for (int i = 0; i < 2000; i++) {
        mig_get_stats(&b_dst.mig, &d);
        if (d.paused_count > d0.paused_count)
            break;
        evm_sleep_us(10000);
    }
    assert_true(d.paused_count > d0.paused_count);
    assert_true(evm_wait_state(&b_dst, MIG_POSTCOPY_PAUSED, 20000));
    assert_true(evm_wait_state(&a_src, MIG_POSTCOPY_PAUSED, 20000));
    mig_get_stats(&a_src.mig, &s);
    mig_get_stats(&b_dst.mig, &d);
    fprintf(stderr, "    a's source: %s\n    b's destination: %s\n", s.error_desc, d.error_desc);
    assert_non_null(strstr(s.error_desc, "another migration"));
    assert_non_null(strstr(d.error_desc, "another migration"));
    /* hand-written resumes: no name, a wrong name */
    struct raw_source r;
    assert_int_equal(mig_recover(&b_dst.mig, ub3, &err), 0);
    assert_true(evm_wait_state(&b_dst, MIG_POSTCOPY_RECOVER, 5000));
    raw_resume(&r, ub3, 0, NULL, 0);
    expect_refused(&b_dst, &r, "does not name");
    struct gws_migration_id wrong = { { 1, 2, 3 } };
    assert_int_equal(mig_recover(&b_dst.mig, ub3, &err), 0);
    raw_resume(&r, ub3, GWS_MIGRATION_ID, &wrong, sizeof(wrong));
    expect_refused(&b_dst, &r, "another migration");
    /* each where it belongs */
    assert_int_equal(mig_recover(&a_dst.mig, ua2, &err), 0);
    assert_int_equal(mig_resume(&a_src.mig, ua2, &err), 0);
    assert_int_equal(mig_recover(&b_dst.mig, ub3, &err), 0);
    assert_int_equal(mig_resume(&b_src.mig, ub3, &err), 0);
    check_done(&a_src, &a_dst);
    check_done(&b_src, &b_dst);
    evm_fini(&b_dst);
    evm_fini(&b_src);
    evm_fini(&a_dst);
    evm_fini(&a_src);
}

/* ---- the wait for COMMIT after RP_LOADED ---- */

/* A hand-written source has taken dst to RP_LOADED (state loaded, guest
 * not run, COMMIT next). */
static void raw_to_loaded(struct raw_source *r, struct evm *dst, const char *uri)
{
    raw_open(r, dst, uri);
    struct {
        struct gws_device d;
        uint64_t gen;
    } rec = { .d = { .id = "evm0", .version = 1 }, .gen = 42 };
    raw_send(r, GWS_DEVICE_STATE, &rec, sizeof(rec));
    raw_send(r, GWS_POSTCOPY_RUN, NULL, 0);
    struct stream_record a;
    raw_answer(r, &a);
    assert_int_equal(a.type, GWS_RP_LOADED);
}

/* dst waits paused before COMMIT with its state kept; a resume from the
 * source (on uri, with a preempt channel that says what it is, then an
 * INFO there, which the destination skips as any optional record: it
 * broke the channel) is the commit: the guest runs, and the migration
 * completes. */
static void resume_runs_the_guest(struct evm *dst, const char *uri)
{
    struct raw_source r;
    struct stream_record rec;
    struct gw_error err;
    gw_error_init(&err);
    assert_false(dst->started);
    assert_false(dst->discarded);
    assert_int_equal(mig_recover(&dst->mig, uri, &err), 0);
    raw_resume(&r, uri, 0, NULL, 0);
    r.pfd = unix_connect(uri);
    stream_init(&r.ps, &stream_fd_ops, (void *)(intptr_t)r.pfd);
    assert_int_equal(stream_write_preamble_flags(&r.ps, GWS_CHANNEL_PREEMPT), 0);
    struct iovec note = { "on the preempt channel", 22 };
    assert_int_equal(stream_write_record(&r.ps, GWS_INFO, &note, 1), 0);
    assert_int_equal(stream_flush(&r.ps), 0);
    raw_answer(&r, &rec);
    assert_int_equal(rec.type, GWS_RP_RECV_BITMAP);
    assert_true(evm_wait_state(dst, MIG_POSTCOPY_ACTIVE, 10000));
    assert_true(evm_wait_started(dst, 10000)); /* the state is published first */
    assert_int_equal(dst->got_state, 42);
    evm_sleep_us(200000); /* the fault thread has read the INFO */
    assert_int_equal(evm_state(dst), MIG_POSTCOPY_ACTIVE);
    raw_send(&r, GWS_END_OF_STREAM, NULL, 0);
    assert_true(evm_wait_state(dst, MIG_COMPLETED, 10000));
    raw_close(&r);
}

/* Records after RP_LOADED other than COMMIT. An optional one is skipped,
 * as everywhere in a stream (an INFO made the destination fail). Any other
 * is taken as a broken connection: the source may have RP_LOADED and have
 * handed the guest over, so the destination pauses with the state kept
 * (it failed and discarded the guest: lost on both hosts), and the
 * source's resume starts the guest. A pre-copy destination skips optional
 * records in that wait too. */
static void test_records_before_commit(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    struct raw_source r;
    struct stream_record rec;
    char uri[128], uri2[128];
    vm_init(&src, NULL);
    /* post-copy: INFO, then COMMIT */
    vm_init(&dst, &src);
    uri_for(uri, sizeof(uri), "rc0");
    raw_to_loaded(&r, &dst, uri);
    raw_send(&r, GWS_INFO, "hello", 5);
    raw_send(&r, GWS_COMMIT, NULL, 0);
    raw_answer(&r, &rec);
    assert_int_equal(rec.type, GWS_RP_RESUMED);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_ACTIVE, 5000));
    assert_true(dst.started);
    raw_send(&r, GWS_END_OF_STREAM, NULL, 0);
    assert_true(evm_wait_state(&dst, MIG_COMPLETED, 10000));
    raw_close(&r);
    evm_fini(&dst);
    /* post-copy: a mandatory record in COMMIT's place */
    vm_init(&dst, &src);
    uri_for(uri, sizeof(uri), "rc1");
    uri_for(uri2, sizeof(uri2), "rc2");
    raw_to_loaded(&r, &dst, uri);
    raw_send(&r, GWS_END_OF_STREAM, NULL, 0);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 5000));
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    destination: %s\n", d.error_desc);
    assert_non_null(strstr(d.error_desc, "END_OF_STREAM"));
    raw_close(&r);
    resume_runs_the_guest(&dst, uri2);
    evm_fini(&dst);
    /* pre-copy: INFO, then COMMIT */
    vm_init(&dst, &src);
    uri_for(uri, sizeof(uri), "rc3");
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst.mig, uri, &err), 0);
    r.fd = unix_connect(uri);
    r.pfd = -1;
    stream_init(&r.s, &stream_fd_ops, (void *)(intptr_t)r.fd);
    stream_init(&r.ps, &stream_fd_ops, NULL);
    assert_int_equal(stream_write_preamble(&r.s), 0);
    assert_int_equal(evm_write_header(&dst, &r.s), 0);
    struct {
        struct gws_device d;
        uint64_t gen;
    } dev = { .d = { .id = "evm0", .version = 1 }, .gen = 7 };
    raw_send(&r, GWS_DEVICE_STATE, &dev, sizeof(dev));
    raw_send(&r, GWS_END_OF_STREAM, NULL, 0);
    raw_answer(&r, &rec);
    assert_int_equal(rec.type, GWS_RP_LOADED);
    raw_send(&r, GWS_INFO, "hello", 5);
    raw_send(&r, GWS_COMMIT, NULL, 0);
    raw_answer(&r, &rec);
    assert_int_equal(rec.type, GWS_RP_RESUMED);
    assert_true(evm_wait_state(&dst, MIG_COMPLETED, 5000));
    assert_true(dst.started);
    raw_close(&r);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A source alive but silent after RP_LOADED (a unix socket has no
 * liveness): migrate-pause ends the wait for COMMIT (it was refused, as
 * was cancel, and the destination stayed `active` for ever), with a reason
 * that says so (it read "...switch-over ()"); the state is kept and a
 * resume runs the guest. */
static void test_pause_while_waiting_for_commit(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    struct raw_source r;
    char uri[128], uri2[128];
    uri_for(uri, sizeof(uri), "pw0");
    uri_for(uri2, sizeof(uri2), "pw1");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    raw_to_loaded(&r, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_not_equal(mig_cancel(&dst.mig, &err), 0); /* too late: committing */
    assert_int_equal(mig_pause(&dst.mig, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 5000));
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    destination: %s\n", d.error_desc);
    assert_non_null(strstr(d.error_desc, "migrate-pause"));
    assert_null(strstr(d.error_desc, "()"));
    raw_close(&r);
    resume_runs_the_guest(&dst, uri2);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A preempt connection that never sends its preamble: migrate_cancel
 * (stuck in `cancelling` until the peer closed it) and, in a recovery,
 * migrate-pause (stuck in postcopy-recover) end the wait at once. */
static void test_silent_preempt_connection(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    struct raw_source r;
    char uri[128], uri2[128];
    struct gw_error err;
    gw_error_init(&err);
    vm_init(&src, NULL);
    /* at the start: cancel */
    vm_init(&dst, &src);
    uri_for(uri, sizeof(uri), "sp0");
    assert_int_equal(mig_start_incoming(&dst.mig, uri, &err), 0);
    r.fd = unix_connect(uri);
    stream_init(&r.s, &stream_fd_ops, (void *)(intptr_t)r.fd);
    stream_init(&r.ps, &stream_fd_ops, NULL);
    struct gws_postcopy_advise a = { 1, 0, dst.npages };
    assert_int_equal(stream_write_preamble(&r.s), 0);
    assert_int_equal(evm_write_header(&dst, &r.s), 0);
    raw_send(&r, GWS_POSTCOPY_ADVISE, &a, sizeof(a));
    r.pfd = unix_connect(uri); /* says nothing */
    evm_sleep_us(300000);
    assert_int_equal(mig_cancel(&dst.mig, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_CANCELLED, 5000));
    raw_close(&r);
    evm_fini(&dst);
    /* in a recovery: migrate-pause */
    vm_init(&dst, &src);
    uri_for(uri, sizeof(uri), "sp1");
    uri_for(uri2, sizeof(uri2), "sp2");
    raw_to_loaded(&r, &dst, uri);
    raw_close(&r);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 5000));
    assert_int_equal(mig_recover(&dst.mig, uri2, &err), 0);
    raw_resume(&r, uri2, 0, NULL, 0);
    r.pfd = unix_connect(uri2); /* says nothing */
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_RECOVER, 5000));
    evm_sleep_us(300000);
    assert_int_equal(mig_pause(&dst.mig, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_POSTCOPY_PAUSED, 5000));
    raw_close(&r);
    assert_false(dst.started);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A failure before the guest ran, after userfaultfd caught its RAM (the
 * state does not load): the guest is discarded only once nothing catches
 * its RAM any more (the memfd was punched under a running fault thread,
 * and a VMM clearing memory it cannot punch would have blocked for ever). */
static void test_discard_after_userfaultfd_is_gone(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    struct raw_source r;
    char uri[128];
    uri_for(uri, sizeof(uri), "dg");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    raw_open(&r, &dst, uri);
    raw_send(&r, GWS_POSTCOPY_RUN, NULL, 0); /* no state: loading it fails */
    expect_failed(&dst, &r, "no state");
    assert_true(dst.discarded);
    assert_false(dst.discard_caught);
    raw_close(&r);
    evm_fini(&dst);
    evm_fini(&src);
}

/* The VMM ends a migration paused after the guest ran here, with pages
 * still missing: the fault handler stays (the RAM holds it), so the
 * blocked vCPU goes on waiting (it was closed: the vCPU read zeros in
 * place of the guest's pages). */
static void test_end_while_paused_keeps_the_fault_handler(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "ep");
    postcopy_at_once(&src, &dst, uri, 300, 4 << 20, false);
    pause_both(&src, &dst, &dst);
    evm_sleep_us(100000);
    mig_fini(&dst.mig); /* the VMM's end: the thread is cancelled while paused */
    evm_sleep_us(300000);
    fprintf(stderr, "    destination: lost %d, fault handler held %d, %llu wrong pages read\n",
            dst.lost, dst.ram.holds_uffd, (unsigned long long)dst.errors);
    assert_true(dst.lost);
    assert_true(dst.ram.holds_uffd);
    assert_int_equal(dst.errors, 0);
    /* The reader waits for pages that will never come: left as it is. */
    pthread_mutex_lock(&dst.lk);
    dst.quit = true;
    pthread_mutex_unlock(&dst.lk);
    dst.thr_started = false;
    evm_fini(&src);
}

/* A relay between a source and its destination (every connection) that
 * passes the destination's records to the source whole, and at
 * RP_POSTCOPY_DONE cuts every connection instead: the destination has
 * completed, and its source never hears of it. */
struct done_cutter {
    const char *dst_uri;
    int lfd;
    int fds[2][2];              /* per connection: source side, destination side */
    unsigned n;
    bool cut;
    pthread_mutex_t lk;
};

struct cutter_pipe {
    struct done_cutter *d;
    int from, to;
    bool records;               /* destination -> source: whole records, watched */
};

static bool write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void cut_all(struct done_cutter *d)
{
    pthread_mutex_lock(&d->lk);
    d->cut = true;
    for (unsigned i = 0; i < d->n; i++) {
        shutdown(d->fds[i][0], SHUT_RDWR);
        shutdown(d->fds[i][1], SHUT_RDWR);
    }
    pthread_mutex_unlock(&d->lk);
}

/* Forward up to (and without) a DONE record; 0 on a cut or an end. */
static size_t pass_records(struct cutter_pipe *p, uint8_t *buf, size_t len)
{
    size_t at = 0;
    while (len - at >= 8) {
        uint32_t type, rlen;
        memcpy(&type, buf + at, 4);
        memcpy(&rlen, buf + at + 4, 4);
        size_t whole = 8 + rlen + (8 - rlen % 8) % 8 + 8;
        if (len - at < whole)
            break;
        if (type == GWS_RP_POSTCOPY_DONE) {
            cut_all(p->d);
            return len;
        }
        if (!write_all(p->to, buf + at, whole))
            return len;
        at += whole;
    }
    memmove(buf, buf + at, len - at);
    return len - at;
}

static void *cutter_pipe_run(void *arg)
{
    struct cutter_pipe *p = arg;
    static __thread uint8_t buf[1 << 17];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(p->from, buf + have, sizeof(buf) - have);
        if (n <= 0)
            break;
        if (!p->records) {
            if (!write_all(p->to, buf, (size_t)n))
                break;
            continue;
        }
        have = pass_records(p, buf, have + (size_t)n);
        if (have == sizeof(buf))
            break; /* a record larger than any this test sees */
    }
    shutdown(p->to, SHUT_WR);
    free(p);
    return NULL;
}

static void cutter_start_pipe(struct done_cutter *d, int from, int to, bool records)
{
    struct cutter_pipe *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    *p = (struct cutter_pipe){ d, from, to, records };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cutter_pipe_run, p), 0);
    pthread_detach(t);
}

/* Takes the source's two connections (main, preempt). */
static void *cutter_run(void *arg)
{
    struct done_cutter *d = arg;
    for (unsigned i = 0; i < 2; i++) {
        int s = accept4(d->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (s < 0)
            break;
        int t = unix_connect(d->dst_uri);
        pthread_mutex_lock(&d->lk);
        d->fds[d->n][0] = s;
        d->fds[d->n][1] = t;
        d->n++;
        pthread_mutex_unlock(&d->lk);
        cutter_start_pipe(d, s, t, false);
        cutter_start_pipe(d, t, s, true);
    }
    return NULL;
}

static int unix_listen(const char *uri)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", uri + strlen("unix:"));
    unlink(a.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 4), 0);
    return fd;
}

/* The connection breaks just as the destination says it has every page:
 * the destination has completed, the source (which never runs the guest
 * again) pauses. migrate-recover on the completed destination answers the
 * source's resume with the DONE it lost, once it names the migration; the
 * source then completes too. */
static void test_lost_done_is_answered(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char ud[128], ur[128], u2[128], u3[128];
    uri_for(ud, sizeof(ud), "ld");
    uri_for(ur, sizeof(ur), "ldr");
    uri_for(u2, sizeof(u2), "ld2");
    uri_for(u3, sizeof(u3), "ld3");
    static struct done_cutter cutter;
    cutter = (struct done_cutter){ .dst_uri = ud, .lfd = unix_listen(ur) };
    pthread_mutex_init(&cutter.lk, NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cutter_run, &cutter), 0);
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    set_param(&src, "max-postcopy-bandwidth", 16 << 20);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst.mig, ud, &err), 0);
    assert_int_equal(mig_start_outgoing(&src.mig, ur, &err), 0);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_COMPLETED, 60000));
    assert_true(evm_wait_state(&src, MIG_POSTCOPY_PAUSED, 20000));
    pthread_join(t, NULL);
    assert_true(cutter.cut);
    /* No stale number left to shut down: the incoming thread forgets it
     * just after it published `completed`. */
    for (int i = 0; i < 500 && __atomic_load_n(&dst.mig.pfd, __ATOMIC_ACQUIRE) != -1; i++)
        evm_sleep_us(10000);
    assert_int_equal(__atomic_load_n(&dst.mig.pfd, __ATOMIC_ACQUIRE), -1);
    /* A resume that names another migration is refused; the source stays paused. */
    struct raw_source r;
    struct gws_migration_id wrong = { { 9 } };
    assert_int_equal(mig_recover(&dst.mig, u2, &err), 0);
    /* A second one replaces a wait nobody answered (a source that gave up
     * leaves one behind); the first address is gone. */
    assert_int_equal(mig_recover(&dst.mig, u3, &err), 0);
    assert_int_not_equal(access(u2 + strlen("unix:"), F_OK), 0);
    raw_resume(&r, u3, GWS_MIGRATION_ID, &wrong, sizeof(wrong));
    expect_refused(&dst, &r, "another migration");
    assert_int_equal(evm_state(&dst), MIG_COMPLETED);
    /* A wait given up by migrate-pause. */
    assert_int_equal(mig_recover(&dst.mig, u3, &err), 0);
    assert_int_equal(mig_pause(&dst.mig, &err), 0);
    for (int i = 0; i < 500 && __atomic_load_n(&dst.mig.pc_late, __ATOMIC_SEQ_CST); i++)
        evm_sleep_us(10000);
    assert_false(__atomic_load_n(&dst.mig.pc_late, __ATOMIC_SEQ_CST));
    /* The real source. */
    assert_int_equal(mig_recover(&dst.mig, u3, &err), 0);
    assert_int_equal(mig_resume(&src.mig, u3, &err), 0);
    check_done(&src, &dst);
    close(cutter.lfd);
    for (unsigned i = 0; i < cutter.n; i++) {
        close(cutter.fds[i][0]);
        close(cutter.fds[i][1]);
    }
    unlink(ur + strlen("unix:"));
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_refused_without_capability(void **state)
{
    static struct evm src;
    vm_init(&src, NULL);
    struct mig_caps c;
    struct gw_error err;
    gw_error_init(&err);
    mig_get_caps(&src.mig, &c);
    c.on[MIG_CAP_POSTCOPY_RAM] = false;
    assert_int_equal(mig_set_caps(&src.mig, &c, &err), 0);
    assert_int_not_equal(mig_start_postcopy(&src.mig, &err), 0);
    assert_non_null(strstr(err.msg, "postcopy"));
    assert_int_not_equal(mig_pause(&src.mig, &err), 0);
    assert_int_not_equal(mig_resume(&src.mig, "unix:/nonexistent", &err), 0);
    evm_fini(&src);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the VMM: a closed peer is an error, not a signal */
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refused_without_capability),
        cmocka_unit_test(test_switch_at_once),
        cmocka_unit_test(test_switch_at_once_compressed),
        cmocka_unit_test(test_state_load_touches_missing_pages),
        cmocka_unit_test(test_page_written_outside_userfaultfd),
        cmocka_unit_test(test_break_while_state_loads),
        cmocka_unit_test(test_after_first_pass),
        cmocka_unit_test(test_after_first_pass_without_minor_faults),
        cmocka_unit_test(test_unsplittable_huge_page),
        cmocka_unit_test(test_after_first_pass_compressed),
        cmocka_unit_test(test_by_command_mid_round),
        cmocka_unit_test(test_ping_records),
        cmocka_unit_test(test_pause_recover_twice),
        cmocka_unit_test(test_break_before_commit),
        cmocka_unit_test(test_recover_waits_for_the_source),
        cmocka_unit_test(test_recovery_names_the_migration),
        cmocka_unit_test(test_records_before_commit),
        cmocka_unit_test(test_pause_while_waiting_for_commit),
        cmocka_unit_test(test_silent_preempt_connection),
        cmocka_unit_test(test_discard_after_userfaultfd_is_gone),
        cmocka_unit_test(test_end_while_paused_keeps_the_fault_handler),
        cmocka_unit_test(test_lost_done_is_answered),
        cmocka_unit_test(test_source_exits),
        cmocka_unit_test(test_destination_exits),
        cmocka_unit_test(test_link_down_recover),
        cmocka_unit_test(test_pause_on_a_slow_link),
        cmocka_unit_test(test_pause_while_the_destination_stalls),
        cmocka_unit_test(test_pause_during_the_rate_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
