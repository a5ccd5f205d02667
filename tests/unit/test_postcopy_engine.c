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
#include "migration/migration.h"

#define RAM_SIZE   (64ULL << 20)
#define NPAGES     (RAM_SIZE / 4096)
#define STATIC_END 4096          /* pages [0, 4096): written once */
#define HOT_END    8192          /* pages [4096, 8192): rewritten all the time */
#define ZERO_END   9216          /* pages [8192, 9216): written with zeros */

struct tvm {
    struct guest_ram ram;
    struct dirty_log dl;
    struct migration mig;
    struct tvm *src;              /* destination: the source, to compare with */
    pthread_t thr;
    bool thr_started;
    pthread_mutex_t lk;
    pthread_cond_t cv;
    bool run, parked, quit;
    volatile int tid;
    volatile uint64_t gen, errors, checked;
    unsigned read_delay_us;
    uint64_t state, got_state;
    bool have_state;
    volatile bool started, lost, completed;
};

static void sleep_us(unsigned us)
{
    struct timespec ts = { us / 1000000, (long)(us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}

/* Park between pages when asked; false to quit. */
static bool may_go(struct tvm *v)
{
    pthread_mutex_lock(&v->lk);
    while (!v->run && !v->quit) {
        v->parked = true;
        pthread_cond_broadcast(&v->cv);
        pthread_cond_wait(&v->cv, &v->lk);
    }
    v->parked = false;
    bool q = v->quit;
    pthread_mutex_unlock(&v->lk);
    return !q;
}

static void *src_writer(void *arg)
{
    struct tvm *v = arg;
    v->tid = (int)syscall(SYS_gettid);
    for (uint64_t p = STATIC_END; may_go(v); p = p + 1 == HOT_END ? STATIC_END : p + 1) {
        uint64_t *w = (uint64_t *)(v->ram.host + p * 4096);
        uint64_t g = ++v->gen;
        w[0] = g;
        w[511] = g;
        dirty_log_mark(&v->dl, p * 4096, 4096);
    }
    return NULL;
}

/* Every page, in a scattered order, must equal the source's. */
static void *dst_reader(void *arg)
{
    struct tvm *v = arg;
    v->tid = (int)syscall(SYS_gettid);
    for (uint64_t i = 0; may_go(v); i++) {
        uint64_t p = (i * 7919) % NPAGES;
        if (memcmp(v->ram.host + p * 4096, v->src->ram.host + p * 4096, 4096) != 0)
            __atomic_fetch_add(&v->errors, 1, __ATOMIC_RELAXED);
        v->checked++;
        if (v->read_delay_us)
            sleep_us(v->read_delay_us);
    }
    return NULL;
}

static void set_run(struct tvm *v, bool run, bool wait_parked)
{
    pthread_mutex_lock(&v->lk);
    v->run = run;
    pthread_cond_broadcast(&v->cv);
    while (wait_parked && !run && v->thr_started && !v->parked && !v->quit)
        pthread_cond_wait(&v->cv, &v->lk);
    pthread_mutex_unlock(&v->lk);
}

/* ---- mig_vm_ops ---- */

static int op_stop(void *o, struct gw_error *err)
{
    set_run(o, false, true);
    return 0;
}
static void op_resume(void *o) { set_run(o, true, false); }
static void op_completed(void *o) { ((struct tvm *)o)->completed = true; }

static int op_save_state(void *o, struct stream *s, struct gw_error *err)
{
    struct tvm *v = o;
    struct {
        struct gws_device d;
        uint64_t gen;
    } rec = { .d = { .id = "test0", .version = 1 }, .gen = v->gen };
    struct iovec iov = { &rec, sizeof(rec) };
    return stream_write_record(s, GWS_DEVICE_STATE, &iov, 1);
}

static int op_load_record(void *o, const struct stream_record *rec, struct gw_error *err)
{
    struct tvm *v = o;
    if (rec->type != GWS_DEVICE_STATE || rec->length != sizeof(struct gws_device) + 8)
        return gw_error_set(err, EPROTO, "unexpected state record");
    memcpy(&v->got_state, rec->body + sizeof(struct gws_device), 8);
    v->have_state = true;
    return 0;
}

static int op_load_finish(void *o, struct gw_error *err)
{
    return ((struct tvm *)o)->have_state ? 0 : gw_error_set(err, EPROTO, "no state");
}

static void op_start(void *o)
{
    struct tvm *v = o;
    v->started = true;
    if (pthread_create(&v->thr, NULL, dst_reader, v) == 0)
        v->thr_started = true;
    set_run(v, true, false);
}

static void op_discard(void *o) {}
static int op_vcpu_of_tid(void *o, int tid) { return tid == ((struct tvm *)o)->tid ? 0 : -1; }
static void op_lost(void *o) { ((struct tvm *)o)->lost = true; }

static const struct mig_vm_ops ops = {
    .stop = op_stop, .resume = op_resume, .completed = op_completed,
    .save_state = op_save_state, .load_record = op_load_record, .load_finish = op_load_finish,
    .start = op_start, .discard = op_discard, .vcpu_of_tid = op_vcpu_of_tid, .lost = op_lost,
};

/* ---- set-up ---- */

static void tvm_init(struct tvm *v, struct tvm *src)
{
    memset(v, 0, sizeof(*v));
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_init(&v->ram, RAM_SIZE, "t", &err), 0);
    assert_int_equal(dirty_log_init(&v->dl, -1, &v->ram, false, &err), 0);
    pthread_mutex_init(&v->lk, NULL);
    pthread_cond_init(&v->cv, NULL);
    v->src = src;
    mig_init(&v->mig, v, &ops, &v->ram, &v->dl, "t", NULL, 1);
    struct mig_caps c;
    mig_get_caps(&v->mig, &c);
    c.on[MIG_CAP_POSTCOPY_RAM] = true;
    assert_int_equal(mig_set_caps(&v->mig, &c, &err), 0);
    if (src)
        return;
    for (uint64_t p = 0; p < STATIC_END; p++)
        for (unsigned k = 0; k < 512; k += 64)
            ((uint64_t *)(v->ram.host + p * 4096))[k] = p * 1000003 + k;
    memset(v->ram.host + HOT_END * 4096, 0, (ZERO_END - HOT_END) * 4096);
    v->run = true;
    assert_int_equal(pthread_create(&v->thr, NULL, src_writer, v), 0);
    v->thr_started = true;
}

static void tvm_fini(struct tvm *v)
{
    pthread_mutex_lock(&v->lk);
    v->quit = true;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->lk);
    mig_fini(&v->mig);
    if (v->thr_started)
        pthread_join(v->thr, NULL);
    dirty_log_fini(&v->dl);
    guest_ram_fini(&v->ram);
}

static enum mig_state state_of(struct tvm *v)
{
    struct mig_stats st;
    mig_get_stats(&v->mig, &st);
    return st.status;
}

static bool wait_state(struct tvm *v, enum mig_state want, int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        enum mig_state s = state_of(v);
        if (s == want)
            return true;
        if (mig_state_is_final(s) && !mig_state_is_final(want))
            return false;
        sleep_us(10000);
    }
    fprintf(stderr, "state is %s, waited for %s\n", mig_state_name(state_of(v)), mig_state_name(want));
    return false;
}

static void set_param(struct tvm *v, const char *name, int64_t value)
{
    struct mig_params p;
    struct gw_error err;
    gw_error_init(&err);
    mig_get_params(&v->mig, &p);
    assert_int_equal(mig_params_set(&p, name, value, &err), 0);
    assert_int_equal(mig_set_params(&v->mig, &p, &err), 0);
}

static void uri_for(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "unix:/tmp/gw-pc-%d-%s.sock", getpid(), tag);
}

static void start(struct tvm *src, struct tvm *dst, const char *uri)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst->mig, uri, &err), 0);
    assert_int_equal(mig_start_outgoing(&src->mig, uri, &err), 0);
}

/* Both completed, every page equal, the state carried over. */
static void check_done(struct tvm *src, struct tvm *dst)
{
    assert_true(wait_state(src, MIG_COMPLETED, 60000));
    assert_true(wait_state(dst, MIG_COMPLETED, 10000));
    set_run(dst, false, true);
    for (uint64_t p = 0; p < NPAGES; p++)
        if (memcmp(dst->ram.host + p * 4096, src->ram.host + p * 4096, 4096) != 0)
            fail_msg("page %llu differs after post-copy (here %llx %llx, source %llx %llx)",
                     (unsigned long long)p, (unsigned long long)((uint64_t *)(dst->ram.host + p * 4096))[0],
                     (unsigned long long)((uint64_t *)(dst->ram.host + p * 4096))[511],
                     (unsigned long long)((uint64_t *)(src->ram.host + p * 4096))[0],
                     (unsigned long long)((uint64_t *)(src->ram.host + p * 4096))[511]);
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
    static struct tvm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "once");
    tvm_init(&src, NULL);
    tvm_init(&dst, &src);
    start(&src, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    check_done(&src, &dst);
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    assert_true(d.fault_count > 0);
    tvm_fini(&dst);
    tvm_fini(&src);
}

static void test_after_first_pass(void **state)
{
    if (!have_uffd())
        skip();
    static struct tvm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "pass");
    tvm_init(&src, NULL);
    tvm_init(&dst, &src);
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
    tvm_fini(&dst);
    tvm_fini(&src);
}

static void test_by_command_mid_round(void **state)
{
    if (!have_uffd())
        skip();
    static struct tvm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "cmd");
    tvm_init(&src, NULL);
    tvm_init(&dst, &src);
    set_param(&src, "max-bandwidth", 32 << 20);
    set_param(&src, "downtime-limit", 5);
    start(&src, &dst, uri);
    struct mig_stats s;
    for (int i = 0; i < 3000; i++) { /* into the second round */
        mig_get_stats(&src.mig, &s);
        if (s.iteration >= 2)
            break;
        sleep_us(10000);
    }
    assert_true(s.iteration >= 2);
    sleep_us(50000);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    check_done(&src, &dst);
    tvm_fini(&dst);
    tvm_fini(&src);
}

/* Pause from `pauser`, wait for both sides, recover on a new address. */
static void pause_and_recover(struct tvm *src, struct tvm *dst, struct tvm *pauser, const char *uri)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_true(wait_state(dst, MIG_POSTCOPY_ACTIVE, 20000));
    assert_true(wait_state(src, MIG_POSTCOPY_ACTIVE, 20000));
    assert_int_equal(mig_pause(&pauser->mig, &err), 0);
    assert_true(wait_state(src, MIG_POSTCOPY_PAUSED, 20000));
    assert_true(wait_state(dst, MIG_POSTCOPY_PAUSED, 20000));
    assert_int_not_equal(mig_cancel(&src->mig, &err), 0); /* cannot cancel in post-copy */
    uint64_t before = dst->checked;
    sleep_us(300000);
    fprintf(stderr, "    paused: the destination's reader moved %llu pages meanwhile\n",
            (unsigned long long)(dst->checked - before));
    assert_int_equal(mig_recover(&dst->mig, uri, &err), 0);
    assert_int_equal(mig_resume(&src->mig, uri, &err), 0);
    assert_true(wait_state(dst, MIG_POSTCOPY_ACTIVE, 20000) || state_of(dst) == MIG_COMPLETED);
}

static void test_pause_recover_twice(void **state)
{
    if (!have_uffd())
        skip();
    static struct tvm src, dst;
    char uri[128], uri2[128], uri3[128];
    uri_for(uri, sizeof(uri), "p0");
    uri_for(uri2, sizeof(uri2), "p1");
    uri_for(uri3, sizeof(uri3), "p2");
    tvm_init(&src, NULL);
    tvm_init(&dst, &src);
    dst.read_delay_us = 200;
    set_param(&src, "max-postcopy-bandwidth", 8 << 20);
    start(&src, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    pause_and_recover(&src, &dst, &dst, uri2); /* migrate-pause on the destination */
    pause_and_recover(&src, &dst, &src, uri3); /* and on the source */
    check_done(&src, &dst);
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    assert_int_equal(d.paused_count, 2);
    tvm_fini(&dst);
    tvm_fini(&src);
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
    static struct tvm src, dst;
    tvm_init(&src, NULL);
    tvm_init(&dst, &src);
    dst.read_delay_us = 2000; /* slow enough that two cuts happen before the end */
    set_param(&src, "max-postcopy-bandwidth", 1 << 20);
    start(&src, &dst, "tcp:127.0.0.1:47001");
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    for (int round = 0; round < 2; round++) {
        assert_true(wait_state(&dst, MIG_POSTCOPY_ACTIVE, 20000));
        sleep_us(300000);
        assert_int_equal(lo_link(false), 0);
        assert_true(wait_state(&src, MIG_POSTCOPY_PAUSED, 30000));
        assert_true(wait_state(&dst, MIG_POSTCOPY_PAUSED, 30000));
        assert_int_equal(lo_link(true), 0);
        char uri[64];
        snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", 47002 + round);
        assert_int_equal(mig_recover(&dst.mig, uri, &err), 0);
        assert_int_equal(mig_resume(&src.mig, uri, &err), 0);
    }
    check_done(&src, &dst);
    tvm_fini(&dst);
    tvm_fini(&src);
}

/* The source VMM exits in post-copy: the destination says so and fails. */
static void test_source_exits(void **state)
{
    if (!have_uffd())
        skip();
    static struct tvm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "sx");
    tvm_init(&src, NULL);
    tvm_init(&dst, &src);
    dst.read_delay_us = 300;
    set_param(&src, "max-postcopy-bandwidth", 4 << 20);
    start(&src, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    assert_true(wait_state(&dst, MIG_POSTCOPY_ACTIVE, 20000));
    mig_fini(&src.mig); /* what exiting does to the engine: its sockets close */
    assert_true(wait_state(&dst, MIG_FAILED, 20000));
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    destination: %s\n", d.error_desc);
    assert_non_null(strstr(d.error_desc, "exited"));
    assert_true(dst.lost);
    mig_init(&src.mig, &src, &ops, &src.ram, &src.dl, "t", NULL, 1); /* for tvm_fini */
    pthread_mutex_lock(&dst.lk);
    dst.quit = true; /* its reader waits for pages that will never come */
    pthread_mutex_unlock(&dst.lk);
    dst.thr_started = false;
    tvm_fini(&src);
}

/* The destination exits in post-copy: the source stays paused (it must
 * never run the guest again) with the reason in error-desc. */
static void test_destination_exits(void **state)
{
    if (!have_uffd())
        skip();
    static struct tvm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "dx");
    tvm_init(&src, NULL);
    tvm_init(&dst, &src);
    dst.read_delay_us = 300;
    set_param(&src, "max-postcopy-bandwidth", 4 << 20);
    start(&src, &dst, uri);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_postcopy(&src.mig, &err), 0);
    assert_true(wait_state(&src, MIG_POSTCOPY_ACTIVE, 20000));
    tvm_fini(&dst);
    assert_true(wait_state(&src, MIG_POSTCOPY_PAUSED, 20000));
    sleep_us(500000);
    assert_int_equal(state_of(&src), MIG_POSTCOPY_PAUSED);
    assert_false(src.run); /* never resumed */
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    fprintf(stderr, "    source: %s\n", s.error_desc);
    assert_true(s.error_desc[0] != 0);
    tvm_fini(&src);
}

static void test_refused_without_capability(void **state)
{
    static struct tvm src;
    tvm_init(&src, NULL);
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
    tvm_fini(&src);
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
