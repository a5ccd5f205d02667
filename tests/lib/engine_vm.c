#include "engine_vm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "memory/uffd.h"
#include "migration/stream_records.h"

void evm_sleep_us(unsigned us)
{
    struct timespec ts = { us / 1000000, (long)(us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}

/* Park between pages when asked; false to quit. */
static bool may_go(struct evm *v)
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
    struct evm *v = arg;
    uint64_t lo = EVM_STATIC_END(v), hi = EVM_HOT_END(v);
    v->tid = (int)syscall(SYS_gettid);
    uint64_t slice_start = 0;
    for (uint64_t p = lo; may_go(v); p = p + 1 == hi ? lo : p + 1) {
        /* Throttled as the VMM throttles a vCPU: after running a while,
         * sleep pct/(100-pct) of that while. */
        unsigned pct = v->throttle_pct;
        if (pct && (p & 63) == 0) {
            uint64_t now = mig_now_ns();
            if (slice_start && pct < 100)
                evm_sleep_us((unsigned)((now - slice_start) / 1000 * pct / (100 - pct)));
            slice_start = mig_now_ns();
        }
        uint64_t *w = (uint64_t *)(v->mem + p * 4096);
        if (v->zero_count) {
            memset(v->mem + v->zero_first * 4096, 0, v->zero_count * 4096);
            dirty_log_mark(&v->dl, v->zero_first * 4096, v->zero_count * 4096);
            __atomic_store_n(&v->zero_count, 0, __ATOMIC_RELEASE);
        }
        uint64_t g = ++v->gen;
        w[0] = g;
        w[511] = g;
        dirty_log_mark(&v->dl, p * 4096, 4096);
        if (v->write_delay_us)
            evm_sleep_us(v->write_delay_us);
    }
    return NULL;
}

static void *dst_reader(void *arg)
{
    struct evm *v = arg;
    v->tid = (int)syscall(SYS_gettid);
    /* Started by the migration thread (op_start), whose priority a thread
     * inherits: a VMM's vCPU threads run at the default one. */
    setpriority(PRIO_PROCESS, (id_t)v->tid, 0);
    for (uint64_t i = 0; may_go(v); i++) {
        uint64_t p = (i * 7919) % v->npages;
        if (memcmp(v->mem + p * 4096, v->src->mem + p * 4096, 4096) != 0)
            __atomic_fetch_add(&v->errors, 1, __ATOMIC_RELAXED);
        v->checked++;
        if (v->read_delay_us)
            evm_sleep_us(v->read_delay_us);
    }
    return NULL;
}

void evm_set_run(struct evm *v, bool run, bool wait_parked)
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
    evm_set_run(o, false, true);
    return 0;
}
static void op_resume(void *o) { evm_set_run(o, true, false); }
static void op_completed(void *o) { ((struct evm *)o)->completed = true; }

static int op_save_state(void *o, struct stream *s, struct gw_error *err)
{
    struct evm *v = o;
    struct {
        struct gws_device d;
        uint64_t gen;
    } rec = { .d = { .id = "evm0", .version = 1 }, .gen = v->gen };
    if (v->save_delay_us)
        evm_sleep_us(v->save_delay_us);
    struct iovec iov = { &rec, sizeof(rec) };
    return stream_write_record(s, GWS_DEVICE_STATE, &iov, 1);
}

/* leaf 0 and leaf 1 of some CPU */
static const struct kvm_cpuid_entry2 evm_cpuid[2] = {
    { .function = 0, .eax = 1, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
    { .function = 1, .eax = 0x306c3, .edx = 0x0f8bfbff },
};

static int op_describe(void *o, struct stream *s, struct gw_error *err)
{
    struct evm *v = o;
    if (v->describe_cpu && stream_write_cpu_model(s, evm_cpuid, 2, 2400000) < 0)
        return gw_error_set(err, EIO, "%s", stream_error(s));
    return 0;
}

static int op_load_record(void *o, const struct stream_record *rec, struct gw_error *err)
{
    struct evm *v = o;
    if (rec->type == GWS_CPU_MODEL) {
        struct stream_cpu_model cm;
        if (stream_parse_cpu_model(rec->body, rec->length, &cm, err) < 0)
            return -err->code;
        if (cm.count != 2 || cm.tsc_khz != 2400000 ||
            memcmp(cm.entries, evm_cpuid, sizeof(evm_cpuid)))
            return gw_error_set(err, EPROTO, "not the CPU the source sent");
        if (v->refuse_cpu)
            return gw_error_set(err, EINVAL, "this host cannot give the guest's CPU");
        v->got_cpu_model = true;
        return 0;
    }
    if (rec->type != GWS_DEVICE_STATE || rec->length != sizeof(struct gws_device) + 8)
        return gw_error_set(err, EPROTO, "unexpected state record");
    memcpy(&v->got_state, rec->body + sizeof(struct gws_device), 8);
    v->have_state = true;
    return 0;
}

static int op_load_finish(void *o, struct gw_error *err)
{
    struct evm *v = o;
    if (!v->have_state)
        return gw_error_set(err, EPROTO, "no state");
    /* The preempt channel breaking as the state loads. */
    if (v->load_break)
        shutdown(v->mig.pfd, SHUT_RDWR);
    /* As KVM restoring a kvmclock MSR: a write into guest memory while the
     * state loads, through the mapping userfaultfd watches. */
    for (unsigned i = 0; i < v->load_touches; i++) {
        volatile uint64_t *w = (volatile uint64_t *)(v->ram.host + v->load_touch[i] * 4096) + 5;
        *w = *w;
    }
    /* Something writing a page outside userfaultfd (into the memfd). */
    if (v->load_stray) {
        uint8_t page[4096];
        memset(page, 0xee, sizeof(page));
        if (pwrite(v->ram.memfd, page, sizeof(page), (off_t)(v->load_stray * 4096)) != 4096)
            return gw_error_set(err, EIO, "stray write: %s", strerror(errno));
    }
    return 0;
}

static void op_start(void *o)
{
    struct evm *v = o;
    v->state_at_start = evm_state(v);
    __atomic_store_n(&v->started, true, __ATOMIC_RELEASE);
    if (pthread_create(&v->thr, NULL, dst_reader, v) == 0)
        v->thr_started = true;
    evm_set_run(v, true, false);
}

/* As the VMM: the guest is forgotten. Its RAM must no longer be caught by
 * a userfaultfd by then (a VMM that clears memory it cannot punch would
 * block on a missing page forever): a second registration of the range
 * fails (EBUSY) while another one holds it. */
static void op_discard(void *o)
{
    struct evm *v = o;
    int fd = uffd_open();
    if (fd >= 0 && uffd_register(fd, v->ram.host, v->ram.size) == -EBUSY)
        v->discard_caught = true;
    if (fd >= 0)
        close(fd);
    v->discarded = true;
}
static void op_set_throttle(void *o, unsigned pct)
{
    struct evm *v = o;
    v->throttle_pct = pct;
    if (pct > v->throttle_max)
        v->throttle_max = pct;
}
static int op_vcpu_of_tid(void *o, int tid) { return tid == ((struct evm *)o)->tid ? 0 : -1; }
static void op_lost(void *o) { ((struct evm *)o)->lost = true; }

static const struct mig_vm_ops ops = {
    .stop = op_stop, .resume = op_resume, .completed = op_completed,
    .save_state = op_save_state, .describe = op_describe, .load_record = op_load_record, .load_finish = op_load_finish,
    .start = op_start, .discard = op_discard, .vcpu_of_tid = op_vcpu_of_tid, .lost = op_lost,
    .set_throttle = op_set_throttle,
};

/* ---- set-up ---- */

static void fill_source(struct evm *v)
{
    for (uint64_t p = 0; p < EVM_STATIC_END(v); p++)
        for (unsigned k = 0; k < 512; k += 64)
            ((uint64_t *)(v->mem + p * 4096))[k] = p * 1000003 + k;
    memset(v->mem + EVM_HOT_END(v) * 4096, 0, (EVM_ZERO_END(v) - EVM_HOT_END(v)) * 4096);
}

bool evm_guest_zero(struct evm *v, uint64_t first, uint64_t count, int timeout_ms)
{
    v->zero_first = first;
    __atomic_store_n(&v->zero_count, count, __ATOMIC_RELEASE);
    for (int i = 0; i < timeout_ms && __atomic_load_n(&v->zero_count, __ATOMIC_ACQUIRE); i++)
        evm_sleep_us(1000);
    return __atomic_load_n(&v->zero_count, __ATOMIC_ACQUIRE) == 0;
}

void evm_fill_idle(struct evm *v, uint64_t bytes)
{
    evm_set_run(v, false, true);
    for (uint64_t p = 0; p < bytes / 4096 && p < v->npages; p++)
        for (unsigned k = 0; k < 512; k += 64)
            ((uint64_t *)(v->mem + p * 4096))[k] = p * 2654435761u + k + 1;
}

int evm_init(struct evm *v, uint64_t ram_bytes, struct evm *src)
{
    memset(v, 0, sizeof(*v));
    struct gw_error err;
    gw_error_init(&err);
    if (guest_ram_init(&v->ram, ram_bytes, "evm", &err) < 0 ||
        dirty_log_init(&v->dl, -1, &v->ram, false, &err) < 0) {
        fprintf(stderr, "evm: %s\n", err.msg);
        return -err.code;
    }
    v->npages = ram_bytes / 4096;
    v->mem = v->ram.host;
    if (!src) {
        v->mem = mmap(NULL, ram_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, v->ram.memfd, 0);
        if (v->mem == MAP_FAILED) {
            v->mem = NULL;
            fprintf(stderr, "evm: mmap: %s\n", strerror(errno));
            return -errno;
        }
    }
    pthread_mutex_init(&v->lk, NULL);
    pthread_cond_init(&v->cv, NULL);
    v->src = src;
    mig_init(&v->mig, v, &ops, &v->ram, &v->dl, "evm", NULL, 1);
    struct mig_caps c;
    mig_get_caps(&v->mig, &c);
    c.on[MIG_CAP_POSTCOPY_RAM] = true;
    mig_set_caps(&v->mig, &c, &err);
    if (src)
        return 0;
    fill_source(v);
    v->run = true;
    if (pthread_create(&v->thr, NULL, src_writer, v) != 0)
        return -EAGAIN;
    v->thr_started = true;
    return 0;
}

void evm_fini(struct evm *v)
{
    pthread_mutex_lock(&v->lk);
    v->quit = true;
    pthread_cond_broadcast(&v->cv);
    pthread_mutex_unlock(&v->lk);
    mig_fini(&v->mig);
    if (v->thr_started) {
        /* A destination's reader may wait for good on a page its failed
         * migration never brought (the engine keeps the fault handler of
         * a guest that ran with pages missing, as the VMM keeps such a
         * guest's vCPUs blocked): left there, with the memory it is in. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        if (pthread_timedjoin_np(v->thr, NULL, &ts) != 0) {
            fprintf(stderr, "    evm: the guest thread waits on a page that never came; "
                    "left blocked\n");
            pthread_detach(v->thr);
            dirty_log_fini(&v->dl);
            return;
        }
    }
    dirty_log_fini(&v->dl);
    if (v->mem && v->mem != v->ram.host)
        munmap(v->mem, v->npages * 4096);
    v->mem = NULL;
    guest_ram_fini(&v->ram);
}

enum mig_state evm_state(struct evm *v)
{
    struct mig_stats st;
    mig_get_stats(&v->mig, &st);
    return st.status;
}

bool evm_wait_state(struct evm *v, enum mig_state want, int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        enum mig_state s = evm_state(v);
        if (s == want)
            return true;
        if (mig_state_is_final(s) && !mig_state_is_final(want))
            break;
        evm_sleep_us(10000);
    }
    fprintf(stderr, "state is %s, waited for %s\n", mig_state_name(evm_state(v)),
            mig_state_name(want));
    return false;
}

bool evm_wait_started(struct evm *v, int timeout_ms)
{
    for (int i = 0; i < timeout_ms / 10; i++) {
        if (__atomic_load_n(&v->started, __ATOMIC_ACQUIRE))
            return true;
        evm_sleep_us(10000);
    }
    fprintf(stderr, "the guest did not start within %d ms (state %s)\n", timeout_ms,
            mig_state_name(evm_state(v)));
    return false;
}

int evm_set_param(struct evm *v, const char *name, int64_t value)
{
    struct mig_params p;
    struct gw_error err;
    gw_error_init(&err);
    mig_get_params(&v->mig, &p);
    if (mig_params_set(&p, name, value, &err) < 0)
        return -err.code;
    return mig_set_params(&v->mig, &p, &err);
}

int evm_set_cap(struct evm *v, enum mig_cap cap, bool on)
{
    struct mig_caps c;
    struct gw_error err;
    gw_error_init(&err);
    mig_get_caps(&v->mig, &c);
    c.on[cap] = on;
    return mig_set_caps(&v->mig, &c, &err);
}

uint64_t evm_compare(const struct evm *dst, const struct evm *src, uint64_t *first)
{
    uint64_t n = 0;
    for (uint64_t p = 0; p < dst->npages; p++)
        if (memcmp(dst->mem + p * 4096, src->mem + p * 4096, 4096) != 0 && n++ == 0)
            *first = p;
    return n;
}

int evm_write_header(const struct evm *v, struct stream *s) { return evm_write_header_flags(v, s, 0); }

int evm_write_header_flags(const struct evm *v, struct stream *s, uint32_t flags)
{
    struct {
        struct gws_header h;
        struct gws_region r[GWS_MAX_REGIONS];
    } hdr;
    memset(&hdr, 0, sizeof(hdr));
    hdr.h.page_size = 4096;
    hdr.h.flags = flags;
    hdr.h.nr_vcpus = 1;
    hdr.h.ram_size = v->ram.size;
    hdr.h.nr_regions = v->ram.nr_regions;
    for (unsigned i = 0; i < v->ram.nr_regions; i++)
        hdr.r[i] = (struct gws_region){ v->ram.regions[i].gpa, v->ram.regions[i].size };
    struct iovec h = { &hdr, sizeof(hdr.h) + hdr.h.nr_regions * sizeof(struct gws_region) };
    return stream_write_record(s, GWS_HEADER, &h, 1);
}

bool evm_phases_add_up(const struct mig_stats *s)
{
    const struct mig_downtime_phases *p = &s->downtime_phases;
    uint64_t sum = 0;
    for (unsigned i = 0; i < MIG_NPHASES; i++)
        sum += p->us[i];
    char text[160];
    fprintf(stderr, "    downtime %llu ms: %s\n", (unsigned long long)s->downtime_ms,
            mig_phases_text(p->us, text, sizeof(text)));
    /* downtime_ms is the difference of two whole-ms stamps (off by < 1 ms),
     * each phase is truncated to whole µs. */
    uint64_t ms_us = s->downtime_ms * 1000;
    return p->known && (ms_us > sum ? ms_us - sum : sum - ms_us) <= 1010;
}
