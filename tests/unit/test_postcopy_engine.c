/* The migration engine's post-copy, end to end in one process and without
 * KVM: two struct migration (source and destination) over real Unix or
 * TCP sockets, guest RAM in real memfds, the destination's missing pages
 * caught by a real userfaultfd. The "vCPUs" are threads: on the source one
 * keeps writing a hot working set (reporting its writes to the dirty log,
 * as the VMM does for its own writes); on the destination one reads every
 * page and compares it with the source's frozen copy, faulting on what is
 * missing. Covers: switch at once, after the first pass, by command
 * mid-round; migrate-pause and recovery twice; a cut "cable" (loopback
 * down in a private network namespace) and recovery; the source exiting
 * (destination fails with a reason); the destination exiting (source stays
 * paused). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "memory/uffd.h"
#include "engine_vm.h"
#include "migration/migration.h"

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

/* Two stand-in VMs migrating over `uri`, switched to post-copy at once;
 * the destination's reader pauses delay_us per page, background pages go
 * at pc_bw bytes/s (0: unlimited). */
static void postcopy_at_once(struct evm *src, struct evm *dst, const char *uri,
                             unsigned delay_us, int64_t pc_bw)
{
    vm_init(src, NULL);
    vm_init(dst, src);
    dst->read_delay_us = delay_us;
    if (pc_bw)
        set_param(src, "max-postcopy-bandwidth", pc_bw);
    start(src, dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src->mig, &err), 0);
}

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
    struct mig_stats s, d;
    mig_get_stats(&src->mig, &s);
    mig_get_stats(&dst->mig, &d);
    fprintf(stderr, "    src: %llu requests, %llu post-copy bytes, downtime %llu ms; dst: %llu faults "
            "p50 %llu us p99 %llu us max %llu us, blocked %llu ms, checked %llu pages\n",
            (unsigned long long)s.postcopy_requests, (unsigned long long)s.postcopy_bytes,
            (unsigned long long)s.downtime_ms, (unsigned long long)d.fault_count,
            (unsigned long long)d.fault_p50_us, (unsigned long long)d.fault_p99_us,
            (unsigned long long)d.fault_max_us, (unsigned long long)d.vcpu_blocktime_ms[0],
            (unsigned long long)dst->checked);
    assert_true(s.postcopy_bytes > 0);
    assert_true(src->completed);
}

/* Run `ip link set lo up|down` with posix_spawn (vfork: the address space
 * holding registered guest RAM is not copied, as fork would). */
static int lo_link(bool up)
{
    char *argv[] = { "ip", "link", "set", "lo", up ? "up" : "down", NULL };
    pid_t pid;
    int st;
    if (posix_spawnp(&pid, "ip", NULL, NULL, argv, environ) != 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static bool have_uffd(void)
{
    if (uffd_available())
        return true;
    fprintf(stderr, "    userfaultfd is not available here: skipped\n");
    return false;
}

/* ---- scenarios ---- */

static void test_switch_at_once(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "once");
    postcopy_at_once(&src, &dst, uri, 0, 0);
    check_done(&src, &dst);
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    assert_true(d.fault_count > 0);
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_after_first_pass(void **state)
{
    if (!have_uffd())
        skip();
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "pass");
    vm_init(&src, NULL);
    vm_init(&dst, &src);
    struct mig_caps c;
    struct gw_error err;
    gw_error_init(&err);
    mig_get_caps(&src.mig, &c);
    c.on[MIG_CAP_POSTCOPY_AFTER_PRECOPY] = true;
    assert_int_equal(mig_set_caps(&src.mig, &c, &err), 0);
    set_param(&src, "max-bandwidth", 64 << 20); /* the hot set never converges */
    set_param(&src, "downtime-limit", 5);
    start(&src, &dst, uri);
    check_done(&src, &dst);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    assert_int_equal(s.iteration, 1);
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
    set_param(&src, "max-bandwidth", 32 << 20);
    set_param(&src, "downtime-limit", 5);
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
    evm_fini(&dst);
    evm_fini(&src);
}

/* Pause from `pauser`, wait for both sides, recover on a new address. */
static void pause_and_recover(struct evm *src, struct evm *dst, struct evm *pauser, const char *uri)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_true(evm_wait_state(dst, MIG_POSTCOPY_ACTIVE, 20000));
    assert_true(evm_wait_state(src, MIG_POSTCOPY_ACTIVE, 20000));
    assert_int_equal(mig_pause(&pauser->mig, &err), 0);
    assert_true(evm_wait_state(src, MIG_POSTCOPY_PAUSED, 20000));
    assert_true(evm_wait_state(dst, MIG_POSTCOPY_PAUSED, 20000));
    assert_int_not_equal(mig_cancel(&src->mig, &err), 0); /* cannot cancel in post-copy */
    uint64_t before = dst->checked;
    evm_sleep_us(300000);
    fprintf(stderr, "    paused: the destination's reader moved %llu pages meanwhile\n",
            (unsigned long long)(dst->checked - before));
    assert_int_equal(mig_recover(&dst->mig, uri, &err), 0);
    assert_int_equal(mig_resume(&src->mig, uri, &err), 0);
    assert_true(evm_wait_state(dst, MIG_POSTCOPY_ACTIVE, 20000) || evm_state(dst) == MIG_COMPLETED);
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
    postcopy_at_once(&src, &dst, uri, 200, 8 << 20);
    struct gw_error err;
    gw_error_init(&err);
    pause_and_recover(&src, &dst, &dst, uri2); /* migrate-pause on the destination */
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
    postcopy_at_once(&src, &dst, uri, 300, 4 << 20);
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
    postcopy_at_once(&src, &dst, uri, 300, 4 << 20);
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
        cmocka_unit_test(test_after_first_pass),
        cmocka_unit_test(test_by_command_mid_round),
        cmocka_unit_test(test_pause_recover_twice),
        cmocka_unit_test(test_source_exits),
        cmocka_unit_test(test_destination_exits),
        cmocka_unit_test(test_link_down_recover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
