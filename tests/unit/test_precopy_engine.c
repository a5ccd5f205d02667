/* The migration engine's pre-copy, end to end in one process and without
 * KVM (the real-guest tests need /dev/kvm): two struct migration over real
 * sockets, guest RAM in real memfds, the source's "vCPU" a thread that
 * keeps rewriting a hot set through its own mapping (tests/lib/engine_vm.h).
 * Every scenario compares all destination pages with the source's and
 * checks that the device state came across. Covers: a busy guest
 * converging, auto-converge throttling the stand-in vCPU, zstd pages, pages sent in the first pass that become zero
 * later (sent as ZERO_PAGES and cleared on the destination), a cancel, a
 * destination that answers the source's pre-stop PING late (also before
 * each stop, which the source then puts off), a destination
 * that stalls at the switch-over (the guard gives the guest back), hostile page
 * records from a hand-written source, and the
 * engine's page reader (guest_ram_read_pages) on scattered runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "engine_vm.h"
#include "test_netns.h"
#include "test_relay.h"
#include "migration/migration.h"
#include "migration/stream.h"

#define RAM_SIZE (64ULL << 20)

static void uri_for(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "unix:/tmp/gw-pre-%d-%s.sock", getpid(), tag);
}

/* A source and a destination without post-copy (a plain pre-copy). */
static void pair(struct evm *src, struct evm *dst)
{
    assert_int_equal(evm_init(src, RAM_SIZE, NULL), 0);
    assert_int_equal(evm_init(dst, RAM_SIZE, src), 0);
    assert_int_equal(evm_set_cap(src, MIG_CAP_POSTCOPY_RAM, false), 0);
    assert_int_equal(evm_set_cap(dst, MIG_CAP_POSTCOPY_RAM, false), 0);
}

static void start(struct evm *src, struct evm *dst, const char *uri)
{
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst->mig, uri, &err), 0);
    assert_int_equal(mig_start_outgoing(&src->mig, uri, &err), 0);
}

static void check_done(struct evm *src, struct evm *dst)
{
    assert_true(evm_wait_state(src, MIG_COMPLETED, 60000));
    assert_true(evm_wait_state(dst, MIG_COMPLETED, 10000));
    evm_set_run(dst, false, true);
    uint64_t first = 0, bad = evm_compare(dst, src, &first);
    if (bad)
        fail_msg("%llu pages differ after pre-copy, the first is %llu", (unsigned long long)bad,
                 (unsigned long long)first);
    assert_int_equal(dst->errors, 0);
    assert_true(dst->have_state && dst->got_state == src->gen);
    assert_true(src->completed && dst->started);
    struct mig_stats s;
    mig_get_stats(&src->mig, &s);
    fprintf(stderr, "    %llu rounds, %llu normal + %llu zero pages, %llu bytes, downtime %llu ms\n",
            (unsigned long long)s.dirty_sync_count, (unsigned long long)s.normal,
            (unsigned long long)s.duplicate, (unsigned long long)s.transferred,
            (unsigned long long)s.downtime_ms);
    assert_true(evm_phases_add_up(&s));
}

/* The guest runs: its vCPU thread makes progress (within 200 ms, for a
 * loaded host). */
static bool runs(struct evm *v)
{
    uint64_t g = v->gen;
    for (int i = 0; i < 20 && v->gen == g; i++)
        evm_sleep_us(10000);
    return v->gen != g;
}

static void wait_rounds(struct evm *src, uint64_t rounds)
{
    struct mig_stats s;
    for (int i = 0; i < 30000; i++) {
        mig_get_stats(&src->mig, &s);
        if (s.dirty_sync_count >= rounds || mig_state_is_final(s.status))
            break;
        evm_sleep_us(1000);
    }
    assert_true(s.dirty_sync_count >= rounds);
}

static void test_busy_converges(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "busy");
    pair(&src, &dst);
    evm_set_param(&src, "downtime-limit", 2000); /* the hot set fits */
    start(&src, &dst, uri);
    check_done(&src, &dst);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    /* Static and hot data went, the never-written quarter did not. */
    assert_true(s.normal >= EVM_STATIC_END(&src));
    assert_true(s.transferred < RAM_SIZE);
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_zstd(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "zstd");
    pair(&src, &dst);
    assert_int_equal(evm_set_cap(&src, MIG_CAP_COMPRESS_ZSTD, true), 0);
    assert_int_equal(evm_set_cap(&dst, MIG_CAP_COMPRESS_ZSTD, true), 0);
    evm_set_param(&src, "downtime-limit", 2000);
    start(&src, &dst, uri);
    check_done(&src, &dst);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    /* The stand-in's pages are mostly zero bytes: compressed, far less goes. */
    assert_true(s.transferred < s.normal_bytes / 4);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A writer dirtying its hot set at any rate a loaded machine leaves it
 * (thousands of pages/s) never fits 1 ms at 32 MiB/s (8 pages): only
 * auto-converge's throttle lets the rest fit. */
static void test_auto_converge(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "ac");
    pair(&src, &dst);
    src.write_delay_us = 1; /* a sleep per page: ~10-20 thousand pages/s */
    assert_int_equal(evm_set_cap(&src, MIG_CAP_AUTO_CONVERGE, true), 0);
    evm_set_param(&src, "downtime-limit", 1);
    evm_set_param(&src, "max-bandwidth", 32LL << 20);
    start(&src, &dst, uri);
    check_done(&src, &dst);
    fprintf(stderr, "    throttle went up to %u%%\n", src.throttle_max);
    assert_true(src.throttle_max > 0);
    assert_int_equal(src.throttle_pct, 0); /* lifted once the guest left */
    evm_fini(&dst);
    evm_fini(&src);
}

/* Pages sent in the first pass, then cleared by the guest: the destination
 * must end up with zeros there (ZERO_PAGES on a page it holds). */
static void test_zeroed_after_sent(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "zeroed");
    pair(&src, &dst);
    /* Rounds go on (1 ms never fits the hot set at 32 MiB/s) until the
     * limit is raised; the stand-in vCPU clears the pages while it runs. */
    evm_set_param(&src, "downtime-limit", 1);
    evm_set_param(&src, "max-bandwidth", 32LL << 20);
    start(&src, &dst, uri);
    wait_rounds(&src, 2);
    const uint64_t first = 100, count = 300;
    assert_true(evm_guest_zero(&src, first, count, 10000));
    evm_set_param(&src, "max-bandwidth", 0);
    evm_set_param(&src, "downtime-limit", 2000);
    check_done(&src, &dst);
    for (uint64_t p = first; p < first + count; p++)
        for (unsigned k = 0; k < 4096; k++)
            if (dst.ram.host[p * 4096 + k])
                fail_msg("page %llu byte %u is not zero", (unsigned long long)p, k);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A round of the busy stand-in ends once its stop fits: the limit is
 * raised while rounds go on (1 ms never fits), and the next round, 16 MiB
 * of hot pages at 32 MiB/s (~500 ms), gives way to the stop within its
 * first tens of ms because what it sends is written again at once. */
static void test_round_ends_early(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "early");
    pair(&src, &dst);
    evm_set_param(&src, "downtime-limit", 1);
    evm_set_param(&src, "max-bandwidth", 32LL << 20);
    start(&src, &dst, uri);
    wait_rounds(&src, 2);
    evm_set_param(&src, "downtime-limit", 2000);
    check_done(&src, &dst);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    fprintf(stderr, "    %llu rounds ended early\n", (unsigned long long)s.rounds_ended_early);
    assert_true(s.rounds_ended_early >= 1);
    evm_fini(&dst);
    evm_fini(&src);
}

/* ... and an idle guest's round never does, though its stop would fit all
 * along (32 MiB at 32 MiB/s against a 2 s limit): what it sent stays as
 * sent, so the round goes to its end and the stop sends nothing. */
static void test_idle_round_goes_on(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "idle");
    pair(&src, &dst);
    evm_set_run(&src, false, true);
    evm_set_param(&src, "downtime-limit", 2000);
    evm_set_param(&src, "max-bandwidth", 32LL << 20);
    start(&src, &dst, uri);
    check_done(&src, &dst);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    assert_int_equal(s.rounds_ended_early, 0);
    assert_int_equal(s.dirty_sync_count, 3); /* setup, one pass, the stop */
    evm_fini(&dst);
    evm_fini(&src);
}

/* max-bandwidth holds with compress-zstd: counted in the bytes that go,
 * compressed (small records wait in the stream's buffer, and were paced
 * only once it filled). A guest that never converges, 1.5 s at 64 KiB/s,
 * within 10 % and 16 KiB (the stream's header, a batch); then cancelled. */
static void test_zstd_bandwidth(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "zstd-bw");
    pair(&src, &dst);
    assert_int_equal(evm_set_cap(&src, MIG_CAP_COMPRESS_ZSTD, true), 0);
    assert_int_equal(evm_set_cap(&dst, MIG_CAP_COMPRESS_ZSTD, true), 0);
    int64_t limit = 64 << 10;
    evm_set_param(&src, "max-bandwidth", limit);
    evm_set_param(&src, "downtime-limit", 1);
    uint64_t t0 = mig_now_ns();
    start(&src, &dst, uri);
    evm_sleep_us(1500000);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    double secs = (double)(mig_now_ns() - t0) / 1e9;
    fprintf(stderr, "    %llu bytes in %.2f s (%llu pages), limit %lld bytes/s\n",
            (unsigned long long)s.transferred, secs, (unsigned long long)(s.normal + s.duplicate),
            (long long)limit);
    assert_true(s.normal > 0);
    assert_true((double)s.transferred <= (double)limit * 1.1 * secs + (16 << 10));
    assert_int_equal(s.status, MIG_ACTIVE);
    /* ... and it moves: at least half the limit */
    assert_true((double)s.transferred >= (double)limit * 0.5 * secs);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_cancel(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_CANCELLED, 10000));
    assert_true(evm_wait_state(&dst, MIG_FAILED, 10000));
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_cancel(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "cancel");
    pair(&src, &dst);
    evm_set_param(&src, "max-bandwidth", 8LL << 20);
    start(&src, &dst, uri);
    wait_rounds(&src, 1);
    evm_sleep_us(200000);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_cancel(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_CANCELLED, 10000));
    assert_true(evm_wait_state(&dst, MIG_FAILED, 10000));
    /* The source guest was never stopped for good: it still runs. */
    uint64_t g = src.gen;
    evm_sleep_us(50000);
    assert_true(src.gen != g);
    assert_false(dst.started);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A relay between the source and the destination that stops passing the
 * source's bytes on once the source has stopped its guest (status device),
 * as a destination that stalls at the switch-over would. It holds them
 * until `release` says so (given the source's status), then relays as
 * before; it holds once. */
struct stall_relay {
    int lfd;                 /* where the source connects */
    char dst_path[108];      /* where the destination listens */
    struct evm *src;
    bool (*release)(struct stall_relay *r);
    uint64_t held_at_ms, held_ms;
    bool held, ok;
    bool saw_active_while_held, saw_running_while_held;
};

static bool release_when_given_back(struct stall_relay *r)
{
    if (evm_state(r->src) == MIG_ACTIVE) {
        r->saw_active_while_held = true;
        r->saw_running_while_held = !r->src->parked;
    }
    return r->saw_running_while_held || mig_now_ms() - r->held_at_ms > 20000;
}

static bool release_after_a_second(struct stall_relay *r)
{
    if (evm_state(r->src) == MIG_ACTIVE)
        r->saw_active_while_held = true;
    return mig_now_ms() - r->held_at_ms > 1000;
}

static bool relay_some(int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0)
        return false;
    for (ssize_t done = 0; done < n;) {
        ssize_t w = write(to, buf + done, (size_t)(n - done));
        if (w <= 0)
            return false;
        done += w;
    }
    return true;
}

/* A unix socket queues what its sender's buffer allows; the engine makes
 * that 8 MiB (16 with the kernel's overhead), and on a fast machine a
 * stop's pages fit in it whole: the source then never waits for the
 * stalled destination while the guard is armed (only for RP_LOADED, after
 * it), and these tests would test nothing. A small buffer makes the stop
 * wait, as a real link's closed window does, whatever this machine's
 * speed. */
static void shrink_source_buffer(struct evm *src)
{
    for (int i = 0; i < 5000; i++) {
        pthread_mutex_lock(&src->mig.lock);
        int fd = src->mig.fd;
        pthread_mutex_unlock(&src->mig.lock);
        if (fd >= 0) {
            int sz = 64 << 10;
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
            return;
        }
        evm_sleep_us(1000);
    }
}

static void *stall_relay_run(void *arg)
{
    struct stall_relay *r = arg;
    int a = accept(r->lfd, NULL, NULL);
    int b = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", r->dst_path);
    if (a < 0 || b < 0 || connect(b, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        goto out;
    shrink_source_buffer(r->src);
    for (;;) {
        bool holding = false;
        if (!r->held && evm_state(r->src) == MIG_DEVICE) {
            r->held = true;
            r->held_at_ms = mig_now_ms();
        }
        if (r->held && !r->held_ms) {
            if (r->release(r))
                r->held_ms = mig_now_ms() - r->held_at_ms;
            else
                holding = true;
        }
        struct pollfd p[2] = { { a, holding ? 0 : POLLIN, 0 }, { b, POLLIN, 0 } };
        if (poll(p, 2, 1) < 0)
            break;
        if ((p[0].revents & (POLLIN | POLLHUP)) && !relay_some(a, b))
            break;
        if ((p[1].revents & (POLLIN | POLLHUP)) && !relay_some(b, a))
            break;
    }
    r->ok = r->held && r->held_ms;
out:
    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
    return NULL;
}

/* Start src -> relay -> dst; the relay thread in *t. */
static void start_relayed(struct evm *src, struct evm *dst, struct stall_relay *r, pthread_t *t,
                          const char *tag)
{
    char uri_dst[128], uri_src[128];
    uri_for(uri_dst, sizeof(uri_dst), tag);
    snprintf(uri_src, sizeof(uri_src), "%s-relay", uri_dst);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst->mig, uri_dst, &err), 0);
    snprintf(r->dst_path, sizeof(r->dst_path), "%s", uri_dst + strlen("unix:"));
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", uri_src + strlen("unix:"));
    unlink(a.sun_path);
    r->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(r->lfd >= 0);
    assert_int_equal(bind(r->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(r->lfd, 1), 0);
    r->src = src;
    assert_int_equal(pthread_create(t, NULL, stall_relay_run, r), 0);
    assert_int_equal(mig_start_outgoing(&src->mig, uri_src, &err), 0);
}

static void end_relayed(struct stall_relay *r, pthread_t t)
{
    pthread_join(t, NULL);
    struct sockaddr_un a;
    socklen_t len = sizeof(a);
    if (getsockname(r->lfd, (struct sockaddr *)&a, &len) == 0)
        unlink(a.sun_path);
    close(r->lfd);
}

/* The destination stalls once the source has stopped its guest: the
 * switch-over guard gives the guest back (status active again, the vCPU
 * runs) while the destination still reads nothing; once it reads again,
 * pre-copy goes on and completes with every page right. */
static void test_stalled_switchover_gives_back(void **state)
{
    static struct evm src, dst;
    pair(&src, &dst);
    evm_set_param(&src, "downtime-limit", 100); /* the hot set fits; 125 ms allowed */
    struct stall_relay r = { .release = release_when_given_back };
    pthread_t t;
    start_relayed(&src, &dst, &r, &t, "stall");
    check_done(&src, &dst);
    end_relayed(&r, t);
    assert_true(r.ok);
    assert_true(r.saw_active_while_held);
    assert_true(r.saw_running_while_held);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    assert_true(s.switchover_retries >= 1);
    assert_true(s.switchover_retries <= 2); /* max-switchover-retries */
    fprintf(stderr, "    held %llu ms, %llu retries\n", (unsigned long long)r.held_ms,
            (unsigned long long)s.switchover_retries);
    evm_fini(&dst);
    evm_fini(&src);
}

static bool release_never(struct stall_relay *r)
{
    if (evm_state(r->src) == MIG_ACTIVE && !r->src->parked)
        r->saw_running_while_held = true;
    return false;
}

/* Cancelled while the destination still stalls after the guard gave the
 * guest back (the source blocked in a write): the migration ends
 * cancelled, the guest keeps running on the source (resumed once), and
 * the destination fails without a guest. */
static void test_stalled_switchover_cancel(void **state)
{
    static struct evm src, dst;
    pair(&src, &dst);
    evm_set_param(&src, "downtime-limit", 100);
    struct stall_relay r = { .release = release_never };
    pthread_t t;
    start_relayed(&src, &dst, &r, &t, "stallc");
    for (int i = 0; i < 20000 && !r.saw_running_while_held; i++)
        evm_sleep_us(1000);
    assert_true(r.saw_running_while_held);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_cancel(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_CANCELLED, 10000));
    end_relayed(&r, t);
    assert_true(evm_wait_state(&dst, MIG_FAILED, 10000));
    uint64_t g = src.gen;
    evm_sleep_us(50000);
    assert_true(src.gen != g); /* still running */
    assert_false(src.parked);
    assert_false(dst.started);
    evm_fini(&dst);
    evm_fini(&src);
}

/* max-switchover-retries 0: QEMU's way, the guest stays stopped until the
 * stalled destination reads again. */
static void test_stalled_switchover_no_retries(void **state)
{
    static struct evm src, dst;
    pair(&src, &dst);
    evm_set_param(&src, "downtime-limit", 100);
    evm_set_param(&src, "max-switchover-retries", 0);
    struct stall_relay r = { .release = release_after_a_second };
    pthread_t t;
    start_relayed(&src, &dst, &r, &t, "stall0");
    check_done(&src, &dst);
    end_relayed(&r, t);
    assert_true(r.ok);
    assert_false(r.saw_active_while_held);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    assert_int_equal(s.switchover_retries, 0);
    assert_true(s.downtime_ms >= 1000);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A hand-written destination that reads everything and answers the
 * source's PING only after `delay_us`: after END_OF_STREAM, or (each_ping)
 * every PING as it comes; then RP_LOADED and, after COMMIT, RP_RESUMED. */
struct slow_dst {
    int lfd;
    unsigned delay_us;
    bool each_ping;
    bool vanish;                /* gone once RP_LOADED is out (its end closed first) */
    unsigned short tcp_port;    /* listen on 127.0.0.1 there (0: a unix socket) */
    bool saw_ping, ok;
    unsigned pings;
    char why[128];
};

static void *slow_dst_run(void *arg)
{
    struct slow_dst *d = arg;
    int fd = accept(d->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)fd);
    struct gws_ping ping = { 0, 0 };
    struct stream_record rec;
    int r = stream_read_preamble(&s);
    while (r == 0 && (r = stream_read_record(&s, &rec)) == 0 && rec.type != GWS_END_OF_STREAM) {
        if (rec.type == GWS_PING && rec.length == sizeof(ping)) {
            memcpy(&ping, rec.body, sizeof(ping));
            d->saw_ping = true;
            d->pings++;
            evm_sleep_us(d->delay_us); /* the source stops or waits meanwhile */
            struct iovec pong = { &ping, sizeof(ping) };
            if (d->each_ping && (stream_write_record(&s, GWS_RP_PONG, &pong, 1) < 0 ||
                                 stream_flush(&s) < 0))
                r = -1;
        }
    }
    struct iovec iov = { &ping, sizeof(ping) };
    if (r == 0 && d->saw_ping && !d->each_ping &&
        (stream_write_record(&s, GWS_RP_PONG, &iov, 1) < 0 || stream_flush(&s) < 0))
        r = -1;
    if (r == 0 && d->vanish)
        shutdown(fd, SHUT_RD); /* a COMMIT written from now on fails (EPIPE) */
    if (r == 0 && d->vanish && stream_write_record(&s, GWS_RP_LOADED, NULL, 0) == 0 &&
        stream_flush(&s) == 0)
        d->ok = true;
    else if (r == 0 && d->saw_ping &&
        stream_write_record(&s, GWS_RP_LOADED, NULL, 0) == 0 && stream_flush(&s) == 0 &&
        stream_read_record(&s, &rec) == 0 && rec.type == GWS_COMMIT &&
        stream_write_record(&s, GWS_RP_RESUMED, NULL, 0) == 0 && stream_flush(&s) == 0)
        d->ok = true;
    else
        snprintf(d->why, sizeof(d->why), "r=%d saw_ping=%d: %s", r, d->saw_ping, stream_error(&s));
    stream_fini(&s);
    close(fd);
    return NULL;
}

/* Migrate src to a slow_dst (d: its settings) until the source completes;
 * false if it did not within timeout_ms. */
static bool migrate_to_slow_dst(struct evm *src, const char *tag, struct slow_dst *d,
                                int timeout_ms)
{
    char uri[128];
    uri_for(uri, sizeof(uri), tag);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(d->tcp_port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", uri + strlen("unix:"));
    unlink(a.sun_path);
    d->lfd = socket(d->tcp_port ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(d->lfd >= 0);
    int one = 1;
    setsockopt(d->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (d->tcp_port)
        snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", d->tcp_port);
    assert_int_equal(d->tcp_port ? bind(d->lfd, (struct sockaddr *)&in, sizeof(in))
                                 : bind(d->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(d->lfd, 1), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_dst_run, d), 0);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_outgoing(&src->mig, uri, &err), 0);
    bool done = evm_wait_state(src, MIG_COMPLETED, timeout_ms);
    pthread_join(t, NULL);
    close(d->lfd);
    unlink(a.sun_path);
    if (!d->ok)
        fail_msg("the hand-written destination: %s", d->why);
    return done;
}

static void test_late_pong(void **state)
{
    static struct evm src;
    assert_int_equal(evm_init(&src, RAM_SIZE, NULL), 0);
    assert_int_equal(evm_set_cap(&src, MIG_CAP_POSTCOPY_RAM, false), 0);
    evm_set_param(&src, "downtime-limit", 2000);
    struct slow_dst d = { .delay_us = 6000000 }; /* past the source's 5 s */
    bool done = migrate_to_slow_dst(&src, "latepong", &d, 30000);
    assert_true(d.saw_ping);
    assert_true(done && src.completed);
    evm_fini(&src);
}

/* The destination goes away right after RP_LOADED: the source's COMMIT
 * cannot be written, so the destination never had it; the source fails
 * and runs its guest on (it reported `completed` with the guest on
 * neither host). */
static void destination_gone_before_commit(unsigned short tcp_port)
{
    static struct evm src;
    assert_int_equal(evm_init(&src, RAM_SIZE, NULL), 0);
    assert_int_equal(evm_set_cap(&src, MIG_CAP_POSTCOPY_RAM, false), 0);
    struct slow_dst d = { .vanish = true, .tcp_port = tcp_port };
    bool done = migrate_to_slow_dst(&src, "gone", &d, 5000);
    assert_false(done);
    assert_true(evm_wait_state(&src, MIG_FAILED, 10000));
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    fprintf(stderr, "    source: %s\n", s.error_desc);
    assert_non_null(strstr(s.error_desc, "commit did not reach the destination"));
    assert_false(src.completed);
    assert_true(runs(&src));
    evm_fini(&src);
}

/* Over a unix socket the COMMIT's write fails; over TCP it succeeds and
 * the destination's reset answers it (the source took the write for the
 * hand-over and reported completed). */
static void test_destination_gone_before_commit(void **state)
{
    destination_gone_before_commit(0);
    destination_gone_before_commit(47291);
}

/* The destination takes 400 ms to catch up before each stop while the
 * stand-in writes on (a sleep of 300 us per page: ~1-3 thousand pages/s,
 * so rounds at 32 MiB/s shrink, and the 400 ms add 400-1300 pages). A
 * round ends with its rest fitting 50 ms (at most 409 pages); after the
 * wait it no longer does: the stop is put off, three times, then made. */
static void test_stop_put_off(void **state)
{
    static struct evm src;
    assert_int_equal(evm_init(&src, RAM_SIZE, NULL), 0);
    assert_int_equal(evm_set_cap(&src, MIG_CAP_POSTCOPY_RAM, false), 0);
    src.write_delay_us = 300;
    evm_set_param(&src, "downtime-limit", 50);
    evm_set_param(&src, "max-bandwidth", 32LL << 20);
    struct slow_dst d = { .delay_us = 400000, .each_ping = true };
    bool done = migrate_to_slow_dst(&src, "putoff", &d, 60000);
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    fprintf(stderr, "    %u pings, %llu deferrals, %llu rounds, downtime %llu ms\n", d.pings,
            (unsigned long long)s.switchover_deferrals, (unsigned long long)s.dirty_sync_count,
            (unsigned long long)s.downtime_ms);
    assert_true(done && src.completed);
    assert_int_equal(s.switchover_deferrals, 3);
    assert_int_equal(d.pings, 4); /* one drain per stop weighed, the last one made */
    evm_fini(&src);
}

/* A hand-written source sends a header, then one bad page record: the
 * destination fails with a message naming the record and what is wrong,
 * answers RP_FAILED, and its guest never starts. */
/* A stream whose header has `flags`, then (type != 0) one record: the
 * destination fails with `why` in its error-desc, naming record `where`. */
static void bad_stream(uint32_t flags, uint32_t type, const void *body, size_t len,
                       const char *why, const char *where)
{
    static struct evm src, dst;
    assert_int_equal(evm_init(&src, RAM_SIZE, NULL), 0);
    assert_int_equal(evm_init(&dst, RAM_SIZE, &src), 0);
    char uri[128];
    uri_for(uri, sizeof(uri), "bad");
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst.mig, uri, &err), 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", uri + strlen("unix:"));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)fd);
    struct iovec b = { (void *)body, len };
    assert_int_equal(stream_write_preamble(&s), 0);
    assert_int_equal(evm_write_header_flags(&dst, &s, flags), 0);
    if (type)
        assert_int_equal(stream_write_record(&s, type, &b, 1), 0);
    assert_int_equal(stream_flush(&s), 0);
    struct pollfd p = { fd, POLLIN, 0 };
    assert_int_equal(poll(&p, 1, 10000), 1);
    struct stream_record rec;
    assert_int_equal(stream_read_record(&s, &rec), 0);
    assert_int_equal(rec.type, GWS_RP_FAILED);
    assert_true(evm_wait_state(&dst, MIG_FAILED, 10000));
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    destination: %s\n", d.error_desc);
    assert_non_null(strstr(d.error_desc, where));
    assert_non_null(strstr(d.error_desc, why));
    assert_false(dst.started);
    stream_fini(&s);
    close(fd);
    evm_fini(&dst);
    evm_fini(&src);
}

static void bad_pages(uint32_t type, const void *body, size_t len, const char *why)
{
    bad_stream(0, type, body, len, why, "record 2 (");
}

static void test_hostile_pages(void **state)
{
    struct {
        struct gws_pages h;
        uint64_t pfn[2];
        uint8_t data[2 * 4096];
    } pg;
    memset(&pg, 0x5a, sizeof(pg));
    /* A frame past the end of RAM. */
    pg.h = (struct gws_pages){ 2, 0 };
    pg.pfn[0] = 1;
    pg.pfn[1] = RAM_SIZE / 4096;
    bad_pages(GWS_PAGE_DATA, &pg, sizeof(pg), "not guest RAM");
    /* A count the length does not carry. */
    pg.h = (struct gws_pages){ 3, 0 };
    pg.pfn[1] = 2;
    bad_pages(GWS_PAGE_DATA, &pg, sizeof(pg), "does not match");
    /* Compressed data that is not zstd. */
    pg.h = (struct gws_pages){ 2, 64 };
    bad_pages(GWS_PAGE_DATA_ZSTD, &pg, sizeof(pg.h) + sizeof(pg.pfn) + 64, "zstd");
    /* Zero pages with a non-zero reserved field. */
    pg.h = (struct gws_pages){ 2, 1 };
    bad_pages(GWS_ZERO_PAGES, &pg, sizeof(pg.h) + sizeof(pg.pfn), "reserved");
}

/* The live destination refuses what `godwit-stream` refuses (it took
 * these): header flags it does not know, END_OF_ITERATION of pass 0 or
 * with its reserved field set. */
static void test_hostile_header_and_passes(void **state)
{
    bad_stream(0x10, 0, NULL, 0, "unknown header flags", "record 1 (");
    struct gws_end_of_iteration e = { 0, 0, 1 };
    bad_pages(GWS_END_OF_ITERATION, &e, sizeof(e), "pass 0");
    e = (struct gws_end_of_iteration){ 1, 7, 1 };
    bad_pages(GWS_END_OF_ITERATION, &e, sizeof(e), "reserved field 0x7");
}

/* guest_ram_read_pages: scattered and consecutive indices, more runs than
 * one call takes, against the mapping. */
static void test_read_pages(void **state)
{
    struct guest_ram ram;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_init(&ram, 8ULL << 20, "t", &err), 0);
    uint64_t np = ram.size / 4096;
    for (uint64_t p = 0; p < np; p += 3) /* every third page written, the rest holes */
        memset(ram.host + p * 4096, (int)(p % 251) + 1, 4096);
    unsigned n = 1500;
    uint64_t *idx = malloc(n * sizeof(*idx));
    uint8_t *buf = malloc((size_t)n * 4096);
    for (unsigned i = 0; i < n; i++)
        idx[i] = i < 700 ? (uint64_t)i * 2 % np           /* 700 separate runs */
                         : (1400 + (uint64_t)(i - 700)) % np; /* one long run */
    assert_int_equal(guest_ram_read_pages(&ram, idx, n, buf, &err), 0);
    for (unsigned i = 0; i < n; i++)
        if (memcmp(buf + (size_t)i * 4096, ram.host + idx[i] * 4096, 4096))
            fail_msg("page %u (index %llu) read wrong", i, (unsigned long long)idx[i]);
    free(idx);
    free(buf);
    guest_ram_fini(&ram);
}

static bool page_mapped(uint64_t addr)
{
    uint64_t e = 0;
    int fd = open("/proc/self/pagemap", O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &e, 8, (off_t)(addr / 4096 * 8)), 8);
    close(fd);
    return e >> 63;
}

/* guest_ram_read_pages copies the runs mapped in this process and has the
 * kernel read the others (pages only written with pwrite, as an incoming
 * migration writes them): both read what was written, in any mix. */
static void test_read_pages_mapped_or_not(void **state)
{
    struct guest_ram ram;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_init(&ram, 4ULL << 20, "t", &err), 0);
    uint64_t np = ram.size / 4096, half = np / 2;
    uint8_t page[4096];
    for (uint64_t p = 0; p < np; p++) {
        memset(page, (int)(p % 251) + 1, sizeof(page));
        if (p < half && p % 2 == 0) /* the first half's even pages: not mapped here */
            assert_int_equal(pwrite(ram.memfd, page, 4096, (off_t)(p * 4096)), 4096);
        else
            memcpy(ram.host + p * 4096, page, 4096);
    }
    assert_false(page_mapped((uint64_t)(uintptr_t)ram.host)); /* the premise */
    assert_true(page_mapped((uint64_t)(uintptr_t)ram.host + 4096));
    /* 1, 0, 3, 2, ...: one-page runs, mapped and not in turn; then the
     * mapped second half as one run. */
    uint64_t idx[1024];
    unsigned n = 0;
    for (uint64_t p = 0; p + 1 < half; p += 2) {
        idx[n++] = p + 1;
        idx[n++] = p;
    }
    for (uint64_t p = half; p < np; p++)
        idx[n++] = p;
    uint8_t *buf = malloc((size_t)n * 4096);
    assert_int_equal(guest_ram_read_pages(&ram, idx, n, buf, &err), 0);
    for (unsigned i = 0; i < n; i++) {
        memset(page, (int)(idx[i] % 251) + 1, sizeof(page));
        if (memcmp(buf + (size_t)i * 4096, page, 4096))
            fail_msg("page %u (index %llu) read wrong", i, (unsigned long long)idx[i]);
    }
    free(buf);
    guest_ram_fini(&ram);
}

/* guest_ram_write: into pages mapped here (copied) and into holes and
 * pages not mapped (pwrite, nothing faulted in): every byte lands. */
static void test_write_mapped_or_not(void **state)
{
    struct guest_ram ram;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(guest_ram_init(&ram, 2ULL << 20, "t", &err), 0);
    /* Small pages: on a host whose shmem THP is "advise" (guest RAM asks
     * for huge pages) the first touch would map the whole 2 MiB. */
    guest_ram_huge_pages(&ram, false);
    memset(ram.host, 1, 8 * 4096); /* pages 0-7 mapped here; the rest holes */
    uint8_t src[16 * 4096];
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (uint8_t)(i * 7 + 3);
    assert_int_equal(guest_ram_write(&ram, 0, src, 8 * 4096, &err), 0);         /* mapped */
    assert_int_equal(guest_ram_write(&ram, 4 * 4096, src, 8 * 4096, &err), 0);  /* half and half */
    assert_int_equal(guest_ram_write(&ram, 100 * 4096, src, 16 * 4096, &err), 0); /* holes */
    assert_false(page_mapped((uint64_t)(uintptr_t)ram.host + 100 * 4096));
    uint8_t back[16 * 4096];
    assert_int_equal(pread(ram.memfd, back, 4 * 4096, 0), 4 * 4096);
    assert_memory_equal(back, src, 4 * 4096);
    assert_int_equal(pread(ram.memfd, back, 8 * 4096, 4 * 4096), 8 * 4096);
    assert_memory_equal(back, src, 8 * 4096);
    assert_int_equal(pread(ram.memfd, back, 16 * 4096, 100 * 4096), 16 * 4096);
    assert_memory_equal(back, src, 16 * 4096);
    guest_ram_fini(&ram);
}

/* ---- refusals and cancels that must not lose the guest ---- */

/* A second `migrate` (or `migrate-incoming`) while one runs is refused,
 * and the running one goes on to complete (it was cancelled by the reaping
 * of "a finished thread"). */
static void test_second_migration_refused(void **state)
{
    static struct evm src, dst, dst2;
    char uri[128], uri2[128];
    uri_for(uri, sizeof(uri), "two");
    uri_for(uri2, sizeof(uri2), "two2");
    pair(&src, &dst);
    evm_set_param(&src, "max-bandwidth", 16LL << 20);
    start(&src, &dst, uri);
    wait_rounds(&src, 1);
    assert_int_equal(evm_init(&dst2, RAM_SIZE, &src), 0);
    assert_int_equal(evm_set_cap(&dst2, MIG_CAP_POSTCOPY_RAM, false), 0);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst2.mig, uri2, &err), 0);
    assert_int_equal(mig_start_outgoing(&src.mig, uri2, &err), -EBUSY);
    assert_non_null(strstr(err.msg, "in progress"));
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst.mig, uri2, &err), -EBUSY);
    assert_int_equal(evm_state(&src), MIG_ACTIVE);
    evm_set_param(&src, "max-bandwidth", 0);
    check_done(&src, &dst);
    assert_int_equal(mig_cancel(&dst2.mig, &err), 0);
    assert_true(evm_wait_state(&dst2, MIG_CANCELLED, 10000));
    evm_fini(&dst2);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A migrate_cancel that comes once the hand-over is under way is refused
 * on either side (before, on the source it broke the COMMIT and the guest
 * ran on neither host): on the source from its `completed` op (COMMIT is
 * out, the state still `device`), on the destination from its `start` op
 * (COMMIT is in, the state still `active`). */
static struct {
    struct mig_vm_ops ops;
    const struct mig_vm_ops *orig;
    struct migration *target;
    int r;
    char msg[256];
} late_cancel;

static void cancel_now(void)
{
    struct gw_error err;
    gw_error_init(&err);
    late_cancel.r = mig_cancel(late_cancel.target, &err);
    snprintf(late_cancel.msg, sizeof(late_cancel.msg), "%s", err.msg);
}

static void completed_then_cancel(void *vm)
{
    late_cancel.orig->completed(vm);
    cancel_now();
}

static void cancel_then_start(void *vm)
{
    cancel_now();
    late_cancel.orig->start(vm);
}

static void cancel_in_commit_window(bool on_dst)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), on_dst ? "cwd" : "cws");
    pair(&src, &dst);
    struct evm *hooked = on_dst ? &dst : &src;
    late_cancel.orig = hooked->mig.ops;
    late_cancel.ops = *hooked->mig.ops;
    if (on_dst)
        late_cancel.ops.start = cancel_then_start;
    else
        late_cancel.ops.completed = completed_then_cancel;
    late_cancel.target = &hooked->mig;
    hooked->mig.ops = &late_cancel.ops;
    start(&src, &dst, uri);
    check_done(&src, &dst);
    fprintf(stderr, "    cancel: %s\n", late_cancel.msg);
    assert_int_equal(late_cancel.r, -EBUSY);
    assert_non_null(strstr(late_cancel.msg, "too late to cancel"));
    hooked->mig.ops = late_cancel.orig;
    assert_false(runs(&src));
    evm_fini(&dst);
    evm_fini(&src);
}

static void test_cancel_in_commit_window(void **state) { cancel_in_commit_window(false); }
static void test_cancel_destination_in_commit_window(void **state) { cancel_in_commit_window(true); }

/* The destination's connection breaks once it has loaded everything,
 * before RP_LOADED goes out: its reason says so once, cleanly (it was
 * formatted into itself), and the source, which never had RP_LOADED, runs
 * its guest on. */
static int load_then_cut(void *vm, struct gw_error *err)
{
    struct evm *dst = vm;
    int r = late_cancel.orig->load_finish(vm, err);
    shutdown(dst->mig.fd, SHUT_RDWR);
    return r;
}

static void test_cut_after_loading(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "cut");
    pair(&src, &dst);
    late_cancel.orig = dst.mig.ops;
    late_cancel.ops = *dst.mig.ops;
    late_cancel.ops.load_finish = load_then_cut;
    dst.mig.ops = &late_cancel.ops;
    start(&src, &dst, uri);
    assert_true(evm_wait_state(&dst, MIG_FAILED, 30000));
    assert_true(evm_wait_state(&src, MIG_FAILED, 30000));
    struct mig_stats d;
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    destination: %s\n", d.error_desc);
    const char *why = "the source did not commit the switch-over";
    const char *at = strstr(d.error_desc, why);
    assert_non_null(at);
    assert_null(strstr(at + 1, why));
    assert_false(dst.started);
    assert_true(runs(&src));
    dst.mig.ops = late_cancel.orig;
    evm_fini(&dst);
    evm_fini(&src);
}

/* A restore from a file cancelled at once: either the cancel lands (the
 * restore ends cancelled, nothing runs) or it is refused (too late, the
 * restore completes); never a cancel that is accepted and then ignored. */
static void test_cancel_restore(void **state)
{
    static struct evm src, dst;
    char uri[128];
    snprintf(uri, sizeof(uri), "file:/tmp/gw-pre-%d-restore.img", getpid());
    pair(&src, &dst);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_outgoing(&src.mig, uri, &err), 0);
    assert_true(evm_wait_state(&src, MIG_COMPLETED, 30000));
    unsigned cancelled = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(mig_start_incoming(&dst.mig, uri, &err), 0);
        int r = mig_cancel(&dst.mig, &err);
        for (int k = 0; k < 10000 && !mig_state_is_final(evm_state(&dst)); k++)
            evm_sleep_us(1000);
        fprintf(stderr, "    cancel -> %d: %s, started %d\n", r, mig_state_name(evm_state(&dst)),
                dst.started);
        if (evm_state(&dst) == MIG_CANCELLED) {
            assert_int_equal(r, 0);
            assert_false(dst.started);
            cancelled++;
        } else { /* refused (too late), or nothing left to cancel */
            assert_int_equal(evm_state(&dst), MIG_COMPLETED);
            assert_true(dst.started);
            break;
        }
    }
    /* The cancel comes right after the start: it lands (it was accepted,
     * then ignored, every time). */
    assert_true(cancelled > 0);
    unlink(uri + strlen("file:"));
    evm_fini(&dst);
    evm_fini(&src);
}

/* The destination's return path carries optional records (INFO, and one
 * of a type this side does not know) before anything else: the source
 * skips them, as the format says of optional records, and the migration
 * completes (it failed: "unexpected INFO on the return path"). */
static void test_optional_return_records(void **state)
{
    static struct evm src, dst;
    static struct test_relay relay;
    static struct stream_membuf notes;
    char dst_uri[128], relay_uri[128];
    uri_for(dst_uri, sizeof(dst_uri), "opt-d");
    uri_for(relay_uri, sizeof(relay_uri), "opt-r");
    memset(&notes, 0, sizeof(notes));
    struct stream w;
    stream_init(&w, &stream_mem_ops, &notes);
    const char *text = "a note from the destination";
    struct iovec iov = { (void *)text, strlen(text) };
    assert_int_equal(stream_write_record(&w, GWS_INFO, &iov, 1), 0);
    assert_int_equal(stream_write_record(&w, GWS_OPTIONAL | 0x7ff1, &iov, 1), 0);
    assert_int_equal(stream_flush(&w), 0);
    stream_fini(&w);
    assert_int_equal(test_relay_start(&relay, relay_uri + 5, dst_uri + 5), 0);
    test_relay_inject(&relay, notes.out, notes.out_len);
    pair(&src, &dst);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_incoming(&dst.mig, dst_uri, &err), 0);
    assert_int_equal(mig_start_outgoing(&src.mig, relay_uri, &err), 0);
    check_done(&src, &dst);
    evm_fini(&dst);
    evm_fini(&src);
    test_relay_stop(&relay);
    free(notes.out);
}

/* migrate_cancel while a save to a file writes the state (the guest is
 * stopped): accepted, so it stands. The status is cancelled and the guest
 * runs again (the save went on to "completed" with the guest left stopped). */
static void test_cancel_file_save_at_the_state(void **state)
{
    static struct evm src;
    char uri[128];
    snprintf(uri, sizeof(uri), "file:/tmp/gw-pre-%d-save.img", getpid());
    assert_int_equal(evm_init(&src, RAM_SIZE, NULL), 0);
    assert_int_equal(evm_set_cap(&src, MIG_CAP_POSTCOPY_RAM, false), 0);
    src.save_delay_us = 300000;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_outgoing(&src.mig, uri, &err), 0);
    assert_true(evm_wait_state(&src, MIG_DEVICE, 30000));
    assert_int_equal(mig_cancel(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_CANCELLED, 10000));
    assert_false(src.completed);
    assert_true(runs(&src));
    unlink(uri + strlen("file:"));
    evm_fini(&src);
}

/* Threads of this process named `name` (their comm). */
static int threads_named(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[300], comm[32] = "";
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = e->d_name[0] == '.' ? NULL : fopen(path, "r");
        if (f && fgets(comm, sizeof(comm), f))
            comm[strcspn(comm, "\n")] = 0;
        if (f)
            fclose(f);
        n += !strcmp(comm, name);
    }
    if (d)
        closedir(d);
    return n;
}

/* A restore from a file of a guest whose data ends more than 256 MiB below
 * the top of its RAM (a file has no END_OF_ITERATION): the destination's
 * threads end with the migration (its preallocating thread waited for
 * more pages for ever, and the incoming thread for it: the next migrate
 * or quit of that VMM hung). */
static void test_restore_ends_its_threads(void **state)
{
    static struct evm src, dst;
    char uri[128];
    snprintf(uri, sizeof(uri), "file:/tmp/gw-pre-%d-big.img", getpid());
    assert_int_equal(evm_init(&src, 1024ULL << 20, NULL), 0);
    assert_int_equal(evm_init(&dst, 1024ULL << 20, &src), 0);
    assert_int_equal(evm_set_cap(&src, MIG_CAP_POSTCOPY_RAM, false), 0);
    assert_int_equal(evm_set_cap(&dst, MIG_CAP_POSTCOPY_RAM, false), 0);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_outgoing(&src.mig, uri, &err), 0);
    assert_true(evm_wait_state(&src, MIG_COMPLETED, 60000));
    assert_int_equal(mig_start_incoming(&dst.mig, uri, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_COMPLETED, 60000));
    /* (The stand-in guest's thread was started by mig-in and has its name:
     * the preallocating thread is the one to look for.) */
    int left = 0;
    for (int i = 0; i < 300 && (left = threads_named("mig-prealloc")); i++)
        evm_sleep_us(10000);
    fprintf(stderr, "    restore completed; preallocating threads left: %d\n", left);
    assert_int_equal(left, 0);
    /* and the VM can migrate again (the next migrate joined the hung thread) */
    char uri2[128];
    snprintf(uri2, sizeof(uri2), "file:/tmp/gw-pre-%d-big2.img", getpid());
    evm_set_run(&dst, false, true);
    assert_int_equal(mig_start_outgoing(&dst.mig, uri2, &err), 0);
    assert_true(evm_wait_state(&dst, MIG_COMPLETED, 60000));
    unlink(uri2 + strlen("file:"));
    unlink(uri + strlen("file:"));
    evm_fini(&dst);
    evm_fini(&src);
}

/* After a cancel under auto-converge: query-migrate says "cancelled" (not
 * the broken pipe the cancel caused) and no throttle any more. */
static void test_cancel_stats(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "cst");
    pair(&src, &dst);
    assert_int_equal(evm_set_cap(&src, MIG_CAP_AUTO_CONVERGE, true), 0);
    evm_set_param(&src, "max-bandwidth", 8LL << 20);
    evm_set_param(&src, "downtime-limit", 1);
    evm_set_param(&src, "cpu-throttle-initial", 30);
    start(&src, &dst, uri);
    for (int i = 0; i < 30000 && src.throttle_pct == 0; i++)
        evm_sleep_us(1000);
    assert_true(src.throttle_pct > 0);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_cancel(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_CANCELLED, 10000));
    struct mig_stats s;
    mig_get_stats(&src.mig, &s);
    fprintf(stderr, "    after the cancel: '%s', throttle %u %%\n", s.error_desc, s.throttle_pct);
    assert_string_equal(s.error_desc, "migration cancelled");
    assert_int_equal(s.throttle_pct, 0);
    assert_int_equal(src.throttle_pct, 0);
    assert_true(runs(&src));
    evm_fini(&dst);
    evm_fini(&src);
}

/* The destination refuses the stream: the source reports its reason, not
 * the broken pipe that followed, and runs on. */
/* Both sides fail; the source reports the destination's reason and runs
 * its guest on. */
static void destination_failed(struct evm *src, struct evm *dst, struct mig_stats *s,
                               struct mig_stats *d)
{
    assert_true(evm_wait_state(dst, MIG_FAILED, 10000));
    assert_true(evm_wait_state(src, MIG_FAILED, 10000));
    mig_get_stats(&src->mig, s);
    mig_get_stats(&dst->mig, d);
    fprintf(stderr, "    source: %s\n    destination: %s\n", s->error_desc, d->error_desc);
    assert_non_null(strstr(s->error_desc, "destination failed: "));
    assert_non_null(strstr(s->error_desc, d->error_desc));
    assert_true(runs(src));
}

static void test_destination_reason(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "why");
    assert_int_equal(evm_init(&src, RAM_SIZE, NULL), 0);
    assert_int_equal(evm_init(&dst, RAM_SIZE * 2, &src), 0);
    assert_int_equal(evm_set_cap(&src, MIG_CAP_POSTCOPY_RAM, false), 0);
    assert_int_equal(evm_set_cap(&dst, MIG_CAP_POSTCOPY_RAM, false), 0);
    start(&src, &dst, uri);
    struct mig_stats s, d;
    destination_failed(&src, &dst, &s, &d);
    evm_fini(&dst);
    evm_fini(&src);
}

/* A source describes the guest's CPU after the header (CPU_MODEL): a
 * destination that takes it gets the whole migration; one that cannot give
 * that CPU fails at once, before a single page is loaded, and the source
 * reports its reason and runs on. */
static void test_cpu_model_first(void **state)
{
    static struct evm src, dst;
    char uri[128];
    uri_for(uri, sizeof(uri), "cpu");
    assert_int_equal(evm_init(&src, RAM_SIZE, NULL), 0);
    assert_int_equal(evm_init(&dst, RAM_SIZE, &src), 0);
    src.describe_cpu = true;
    start(&src, &dst, uri);
    check_done(&src, &dst);
    assert_true(dst.got_cpu_model);
    evm_fini(&dst);
    evm_fini(&src);

    memset(&src, 0, sizeof(src));
    memset(&dst, 0, sizeof(dst));
    assert_int_equal(evm_init(&src, RAM_SIZE, NULL), 0);
    assert_int_equal(evm_init(&dst, RAM_SIZE, &src), 0);
    src.describe_cpu = true;
    dst.refuse_cpu = true;
    start(&src, &dst, uri);
    struct mig_stats s, d;
    destination_failed(&src, &dst, &s, &d);
    assert_non_null(strstr(d.error_desc, "(CPU_MODEL)"));
    assert_non_null(strstr(d.error_desc, "this host cannot give the guest's CPU"));
    assert_int_equal(d.normal + d.duplicate, 0);
    assert_false(dst.have_state || dst.started);
    evm_fini(&dst);
    evm_fini(&src);
}

/* The source's stop op, wrapped: the link goes down as the guest stops. */
static struct {
    struct mig_vm_ops ops;
    const struct mig_vm_ops *orig;
    struct test_hosts *h;
} cut_at_stop;

static int stop_and_cut(void *vm, struct gw_error *err)
{
    int r = cut_at_stop.orig->stop(vm, err);
    assert_int_equal(test_hosts_link(cut_at_stop.h, false), 0);
    return r;
}

/* The link between two hosts goes down as the source's guest stops for
 * the switch-over, with no retries left to the guard: the source gives up
 * within the liveness bound and runs its guest again, and the destination
 * fails (both blocked for ~15 minutes on TCP's own timeouts before). */
static void test_link_down_at_switchover(void **state)
{
    static struct test_hosts h;
    if (test_hosts_up(&h, "pre") != 0) {
        test_hosts_down(&h);
        fprintf(stderr, "    no network namespaces or veth here: skipped\n");
        skip();
    }
    static struct evm src, dst;
    pair(&src, &dst);
    evm_set_param(&src, "max-switchover-retries", 0);
    cut_at_stop.orig = src.mig.ops;
    cut_at_stop.ops = *src.mig.ops;
    cut_at_stop.ops.stop = stop_and_cut;
    cut_at_stop.h = &h;
    src.mig.ops = &cut_at_stop.ops;
    const char *uri = "tcp:10.99.0.1:47201";
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(test_hosts_enter(h.dst), 0);
    assert_int_equal(mig_start_incoming(&dst.mig, uri, &err), 0);
    assert_int_equal(test_hosts_enter(h.src), 0);
    assert_int_equal(mig_start_outgoing(&src.mig, uri, &err), 0);
    assert_true(evm_wait_state(&src, MIG_DEVICE, 30000));
    uint64_t t0 = mig_now_ms();
    assert_true(evm_wait_state(&src, MIG_FAILED, 30000));
    uint64_t src_ms = mig_now_ms() - t0;
    assert_true(evm_wait_state(&dst, MIG_FAILED, 30000));
    uint64_t dst_ms = mig_now_ms() - t0;
    struct mig_stats s, d;
    mig_get_stats(&src.mig, &s);
    mig_get_stats(&dst.mig, &d);
    fprintf(stderr, "    source failed after %llu ms (%s), destination after %llu ms (%s)\n",
            (unsigned long long)src_ms, s.error_desc, (unsigned long long)dst_ms, d.error_desc);
    assert_true(runs(&src));
    assert_false(dst.started);
    src.mig.ops = cut_at_stop.orig;
    evm_fini(&dst);
    evm_fini(&src);
    test_hosts_down(&h);
}

/* A source cancelled while its connect waits on an address that drops
 * every packet: the cancel ends the wait at once (it took ~2 minutes). */
static void test_cancel_while_connecting(void **state)
{
    static struct test_hosts h;
    if (test_hosts_up(&h, "prc") != 0) {
        test_hosts_down(&h);
        fprintf(stderr, "    no network namespaces or veth here: skipped\n");
        skip();
    }
    static struct evm src;
    assert_int_equal(evm_init(&src, RAM_SIZE, NULL), 0);
    assert_int_equal(test_hosts_enter(h.src), 0);
    assert_int_equal(test_hosts_link(&h, false), 0); /* SYNs go nowhere */
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_start_outgoing(&src.mig, "tcp:10.99.0.1:47202", &err), 0);
    evm_sleep_us(500000);
    assert_int_equal(evm_state(&src), MIG_SETUP);
    uint64_t t0 = mig_now_ms();
    assert_int_equal(mig_cancel(&src.mig, &err), 0);
    assert_true(evm_wait_state(&src, MIG_CANCELLED, 5000));
    fprintf(stderr, "    cancelled after %llu ms\n", (unsigned long long)(mig_now_ms() - t0));
    assert_true(runs(&src));
    evm_fini(&src);
    test_hosts_down(&h);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (getenv("ENGINE_TEST"))
        cmocka_set_test_filter(getenv("ENGINE_TEST"));
    if (getenv("ENGINE_DEBUG"))
        gw_log_set_level(GW_LOG_DEBUG);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_pages),
        cmocka_unit_test(test_read_pages_mapped_or_not),
        cmocka_unit_test(test_write_mapped_or_not),
        cmocka_unit_test(test_busy_converges),
        cmocka_unit_test(test_zstd),
        cmocka_unit_test(test_zstd_bandwidth),
        cmocka_unit_test(test_auto_converge),
        cmocka_unit_test(test_zeroed_after_sent),
        cmocka_unit_test(test_round_ends_early),
        cmocka_unit_test(test_idle_round_goes_on),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_late_pong),
        cmocka_unit_test(test_stop_put_off),
        cmocka_unit_test(test_stalled_switchover_gives_back),
        cmocka_unit_test(test_stalled_switchover_no_retries),
        cmocka_unit_test(test_stalled_switchover_cancel),
        cmocka_unit_test(test_hostile_pages),
        cmocka_unit_test(test_hostile_header_and_passes),
        cmocka_unit_test(test_second_migration_refused),
        cmocka_unit_test(test_cancel_in_commit_window),
        cmocka_unit_test(test_cancel_destination_in_commit_window),
        cmocka_unit_test(test_cut_after_loading),
        cmocka_unit_test(test_destination_gone_before_commit),
        cmocka_unit_test(test_cancel_restore),
        cmocka_unit_test(test_cancel_stats),
        cmocka_unit_test(test_destination_reason),
        cmocka_unit_test(test_cpu_model_first),
        cmocka_unit_test(test_link_down_at_switchover),
        cmocka_unit_test(test_cancel_while_connecting),
        cmocka_unit_test(test_optional_return_records),
        cmocka_unit_test(test_cancel_file_save_at_the_state),
        cmocka_unit_test(test_restore_ends_its_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
