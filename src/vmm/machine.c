#define LOG_PREFIX "machine"
#include "vmm/machine.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "devices/serial.h"
#include "vmm/cpu_state.h"
#include "vmm/machine_internal.h"

#define SIG_VCPU_KICK SIGUSR1

/* The kvm_run page of the vCPU this thread runs (for the kick handler). */
static __thread struct kvm_run *this_vcpu_run;

static void kick_handler(int sig)
{
    (void)sig;
    if (this_vcpu_run)
        this_vcpu_run->immediate_exit = 1;
}

static void install_kick_handler(void)
{
    struct sigaction sa = { .sa_handler = kick_handler };
    sigemptyset(&sa.sa_mask);
    sigaction(SIG_VCPU_KICK, &sa, NULL);
}

/* ---- state ------------------------------------------------------------- */

static void emit(struct machine *m, const char *name, struct json_object *data)
{
    if (m->ops && m->ops->event)
        m->ops->event(m->ops_opaque, name, data);
    else
        json_object_put(data);
}

static int set_state_locked(struct machine *m, enum runstate to, struct gw_error *err)
{
    enum runstate from = m->state;
    if (!runstate_transition_ok(from, to))
        return gw_error_set(err, EINVAL, "cannot go from state %s to %s", runstate_name(from),
                            runstate_name(to));
    m->state = to;
    if (from != to)
        log_info("state %s -> %s", runstate_name(from), runstate_name(to));
    return 0;
}

int machine_set_state(struct machine *m, enum runstate to, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    int r = set_state_locked(m, to, err);
    pthread_mutex_unlock(&m->lock);
    return r;
}

enum runstate machine_state(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    enum runstate s = m->state;
    pthread_mutex_unlock(&m->lock);
    return s;
}

/* ---- parking the vCPU threads ------------------------------------------- */

static void kick_all(struct machine *m)
{
    for (unsigned i = 0; i < m->nr_vcpus; i++)
        if (m->vcpus[i].thread_started)
            pthread_kill(m->vcpus[i].thread, SIG_VCPU_KICK);
}

static unsigned started_threads(struct machine *m)
{
    unsigned n = 0;
    for (unsigned i = 0; i < m->nr_vcpus; i++)
        n += m->vcpus[i].thread_started;
    return n;
}

/* Called with m->lock held: stop every vCPU and wait until all are parked.
 * Gives up (false) when the run state changes or someone lets the vCPUs run
 * again while it waits (the lock is dropped in the wait): waiting on would
 * spin for ever against threads that are allowed to run. */
static bool park_vcpus_locked(struct machine *m)
{
    enum runstate state = m->state;
    m->vcpus_run = false;
    unsigned n = started_threads(m);
    while (m->vcpus_parked < n) {
        kick_all(m);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&m->parked_cond, &m->lock, &ts);
        if (m->vcpus_run || m->state != state) {
            log_warn("stopping the vCPUs: the run state changed meanwhile (%s -> %s%s)",
                     runstate_name(state), runstate_name(m->state),
                     m->vcpus_run ? ", vCPUs let run" : "");
            return false;
        }
    }
    return true;
}

bool machine_park_vcpus(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    bool ok = park_vcpus_locked(m);
    pthread_mutex_unlock(&m->lock);
    return ok;
}

static int pause_locked(struct machine *m, enum runstate state, struct gw_error *err)
{
    enum runstate from = m->state;
    int r = set_state_locked(m, state, err);
    if (r < 0)
        return r;
    if (state == RUNSTATE_FINISH_MIGRATE && from != RUNSTATE_FINISH_MIGRATE)
        m->resume_after_switchover = runstate_is_running(from);
    if (!park_vcpus_locked(m))
        return gw_error_set(err, EAGAIN, "the VM's run state changed while its vCPUs were being "
                            "stopped (now %s)", runstate_name(m->state));
    return 0;
}

int machine_pause(struct machine *m, enum runstate state, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    enum runstate from = m->state;
    int r = pause_locked(m, state, err);
    pthread_mutex_unlock(&m->lock);
    if (r == 0 && runstate_is_running(from))
        emit(m, "STOP", NULL);
    return r;
}

int machine_stop(struct machine *m, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    enum runstate from = m->state;
    int r = 0;
    if (from == RUNSTATE_FINISH_MIGRATE)
        m->resume_after_switchover = false; /* a switch-over that gives the guest back pauses it */
    else if (runstate_is_running(from))
        r = pause_locked(m, RUNSTATE_PAUSED, err);
    pthread_mutex_unlock(&m->lock);
    if (r == 0 && runstate_is_running(from))
        emit(m, "STOP", NULL);
    return r;
}

int machine_stop_nowait(struct machine *m, enum runstate state, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    enum runstate from = m->state;
    int r = set_state_locked(m, state, err);
    if (r == 0)
        m->vcpus_run = false;
    pthread_mutex_unlock(&m->lock);
    if (r < 0)
        return r;
    kick_all(m); /* those not blocked on a page stop now */
    if (runstate_is_running(from))
        emit(m, "STOP", NULL);
    return 0;
}

static int resume_locked(struct machine *m, struct gw_error *err)
{
    int r = set_state_locked(m, RUNSTATE_RUNNING, err);
    if (r == 0) {
        m->vcpus_run = true;
        pthread_cond_broadcast(&m->cond);
    }
    return r;
}

int machine_resume(struct machine *m, struct gw_error *err)
{
    if (m->serial)
        serial_pause_input(m->serial, false); /* held since a migration's switch-over */
    pthread_mutex_lock(&m->lock);
    enum runstate from = m->state;
    int r = resume_locked(m, err);
    pthread_mutex_unlock(&m->lock);
    if (r == 0 && !runstate_is_running(from))
        emit(m, "RESUME", NULL);
    return r;
}

void machine_switchover_give_back(struct machine *m)
{
    struct gw_error err;
    gw_error_init(&err);
    if (m->serial)
        serial_pause_input(m->serial, false);
    pthread_mutex_lock(&m->lock);
    bool in_switchover = m->state == RUNSTATE_FINISH_MIGRATE;
    bool run = in_switchover && m->resume_after_switchover;
    int r = 0;
    if (run)
        r = resume_locked(m, &err);
    else if (in_switchover)
        r = set_state_locked(m, RUNSTATE_PAUSED, &err);
    enum runstate now = m->state;
    pthread_mutex_unlock(&m->lock);
    if (r < 0)
        log_error("giving the guest back after the switch-over: %s", err.msg);
    else if (run)
        emit(m, "RESUME", NULL);
    else if (!in_switchover)
        log_info("switch-over gave the guest back; it stays %s", runstate_name(now));
}

/* ---- requests from vCPU threads, handled on the main thread -------------- */

struct machine_request {
    struct machine *m;
    enum machine_request_kind kind;
    unsigned vcpu;
    char desc[256];
};

static void handle_internal_error(struct machine *m, struct machine_request *req)
{
    struct gw_error err;
    gw_error_init(&err);
    log_error("vCPU %u: %s; VM stopped (state internal-error)", req->vcpu, req->desc);
    machine_pause(m, RUNSTATE_INTERNAL_ERROR, &err);
    struct json_object *d = json_object_new_object();
    json_object_object_add(d, "cpu-index", json_object_new_int((int)req->vcpu));
    json_object_object_add(d, "desc", json_object_new_string(req->desc));
    emit(m, "INTERNAL_ERROR", d);
}

static void handle_request(void *opaque);

static void retry_request(void *opaque)
{
    struct machine *m = opaque;
    struct machine_request *req = m->deferred;
    evloop_del_timer(m->loop, m->deferred_timer);
    m->deferred_timer = -1;
    m->deferred = NULL;
    if (req)
        handle_request(req);
}

/* Put `req` off (MACHINE_LATER); false if it cannot be (then it is dropped). */
static bool defer_request(struct machine *m, struct machine_request *req)
{
    if (m->deferred) {
        if (m->deferred->kind == req->kind)
            return true; /* one of the same kind waits already: this one adds nothing */
        log_warn("guest %s dropped: a guest %s is waiting already",
                 req->kind == MACHINE_REQ_RESET ? "reset" : "power-off",
                 m->deferred->kind == MACHINE_REQ_RESET ? "reset" : "power-off");
        return false;
    }
    int tfd = evloop_add_timer(m->loop, MACHINE_RETRY_MS, 0, retry_request, m);
    if (tfd < 0) {
        log_error("guest %s dropped: cannot arm a timer: %s",
                  req->kind == MACHINE_REQ_RESET ? "reset" : "power-off", strerror(-tfd));
        return false;
    }
    m->deferred = req;
    m->deferred_timer = tfd;
    return true;
}

/* A reset or power-off the guest asked for: ask the owner whether it may
 * happen now (a migration may be under way, or have handed the guest over). */
static bool request_allowed(struct machine *m, struct machine_request *req, bool *keep)
{
    *keep = false;
    bool reset = req->kind == MACHINE_REQ_RESET;
    enum machine_verdict v = m->ops && m->ops->guest_request
                             ? m->ops->guest_request(m->ops_opaque, reset) : MACHINE_GO;
    if (v == MACHINE_GO)
        return true;
    if (v == MACHINE_LATER)
        *keep = defer_request(m, req) && m->deferred == req;
    else
        log_warn("guest %s dropped: the guest was handed over by a migration and runs elsewhere",
                 reset ? "reset" : "power-off");
    return false;
}

static void do_guest_reset(struct machine *m, struct machine_request *req, bool *keep)
{
    struct gw_error err;
    gw_error_init(&err);
    if (m->cfg.no_reboot) {
        machine_shutdown(m, true, "guest-reset");
        return;
    }
    int r = machine_reset(m, &err);
    if (r == -EAGAIN) /* the run state changed under it: decide again */
        *keep = defer_request(m, req) && m->deferred == req;
    else if (r < 0)
        log_error("reset failed: %s", err.msg);
}

static void handle_request(void *opaque)
{
    struct machine_request *req = opaque;
    struct machine *m = req->m;
    pthread_mutex_lock(&m->lock);
    m->request_pending = false;
    pthread_mutex_unlock(&m->lock);

    bool keep = false;
    switch (req->kind) {
    case MACHINE_REQ_POWEROFF:
        if (request_allowed(m, req, &keep))
            machine_shutdown(m, true, "guest-shutdown");
        break;
    case MACHINE_REQ_RESET:
        if (request_allowed(m, req, &keep))
            do_guest_reset(m, req, &keep);
        break;
    case MACHINE_REQ_INTERNAL_ERROR:
        handle_internal_error(m, req);
        break;
    }
    if (!keep)
        free(req);
}

void machine_request(struct machine *m, enum machine_request_kind kind, unsigned vcpu,
                     const char *desc)
{
    struct machine_request *req = calloc(1, sizeof(*req));
    if (!req)
        return;
    req->m = m;
    req->kind = kind;
    req->vcpu = vcpu;
    snprintf(req->desc, sizeof(req->desc), "%s", desc ? desc : "");
    pthread_mutex_lock(&m->lock);
    /* This vCPU stops now; the main thread parks the others. */
    m->vcpus_run = false;
    m->request_pending = true;
    pthread_mutex_unlock(&m->lock);
    kick_all(m);
    if (evloop_post(m->loop, handle_request, req) < 0)
        free(req);
}

void machine_shutdown(struct machine *m, bool guest, const char *reason)
{
    struct gw_error err;
    gw_error_init(&err);
    pthread_mutex_lock(&m->lock);
    /* The process ends: threads that do not park now stop at the join. */
    (void)park_vcpus_locked(m);
    enum runstate from = m->state;
    if (runstate_transition_ok(from, RUNSTATE_SHUTDOWN))
        m->state = RUNSTATE_SHUTDOWN;
    pthread_mutex_unlock(&m->lock);
    log_info("shutdown (%s)", reason);
    struct json_object *d = json_object_new_object();
    json_object_object_add(d, "guest", json_object_new_boolean(guest));
    json_object_object_add(d, "reason", json_object_new_string(reason));
    emit(m, "SHUTDOWN", d);
    if (m->ops && m->ops->terminate)
        m->ops->terminate(m->ops_opaque, 0);
}

/* ---- the vCPU thread ------------------------------------------------------ */

/* Before parking (for a pause, a migration's state save, a reset), let KVM
 * finish an I/O instruction it handed us: re-entering with immediate_exit
 * completes it, so saved registers are past it and nothing is done twice.
 * KVM may instead hand over the next part of the same instruction (an MMIO
 * access split in two fragments) and stop again with a new I/O exit: that
 * one is handled like any other and KVM entered again, until it returns
 * without one (the instruction done, or interrupted as a rep string
 * instruction may be). */
static void complete_pending_io(struct machine *m, struct vcpu *vcpu)
{
    while (vcpu->io_pending) {
        vcpu->run->immediate_exit = 1;
        int r = ioctl(vcpu->fd, KVM_RUN, 0);
        vcpu->run->immediate_exit = 0;
        vcpu->io_pending = r == 0 && (vcpu->run->exit_reason == KVM_EXIT_IO ||
                                      vcpu->run->exit_reason == KVM_EXIT_MMIO);
        if (vcpu->io_pending) {
            vcpu->exits++;
            machine_handle_exit(m, vcpu);
        }
    }
}

/* Wait until the vCPU may run; false when the thread must exit. */
static bool wait_for_run(struct machine *m, struct vcpu *vcpu)
{
    pthread_mutex_lock(&m->lock);
    while (!m->vcpus_run && !m->vcpus_quit) {
        if (vcpu->io_pending) {
            pthread_mutex_unlock(&m->lock);
            complete_pending_io(m, vcpu);
            pthread_mutex_lock(&m->lock);
            continue; /* re-check: the state may have changed meanwhile */
        }
        /* The parked count has its own condition: on the one the vCPUs
         * wait on, each parked thread's broadcast woke the others, which
         * broadcast again (two paused vCPUs kept both cores busy). */
        m->vcpus_parked++;
        pthread_cond_broadcast(&m->parked_cond);
        pthread_cond_wait(&m->cond, &m->lock);
        m->vcpus_parked--;
    }
    bool quit = m->vcpus_quit;
    pthread_mutex_unlock(&m->lock);
    return !quit;
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *vcpu = arg;
    struct machine *m = machine_of_vcpu(vcpu);
    this_vcpu_run = vcpu->run;
    vcpu->tid = (int)gettid();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIG_VCPU_KICK);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    for (;;) {
        if (!wait_for_run(m, vcpu))
            break;
        uint64_t nap = __atomic_exchange_n(&vcpu->throttle_sleep_ns, 0, __ATOMIC_ACQ_REL);
        if (nap) {
            struct timespec ts = { (time_t)(nap / 1000000000ULL), (long)(nap % 1000000000ULL) };
            nanosleep(&ts, NULL);
            continue; /* re-check for a pause requested meanwhile */
        }
        int r = ioctl(vcpu->fd, KVM_RUN, 0);
        vcpu->run->immediate_exit = 0;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            char desc[128];
            snprintf(desc, sizeof(desc), "KVM_RUN failed: %s", strerror(errno));
            machine_request(m, MACHINE_REQ_INTERNAL_ERROR, vcpu->id, desc);
            continue;
        }
        vcpu->exits++;
        vcpu->io_pending = vcpu->run->exit_reason == KVM_EXIT_IO ||
                           vcpu->run->exit_reason == KVM_EXIT_MMIO;
        machine_handle_exit(m, vcpu);
    }
    return NULL;
}

int machine_start_threads(struct machine *m, struct gw_error *err)
{
    install_kick_handler();
    /* Block the kick signal everywhere except in vCPU threads. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIG_VCPU_KICK);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (unsigned i = 0; i < m->nr_vcpus; i++) {
        int r = pthread_create(&m->vcpus[i].thread, NULL, vcpu_thread, &m->vcpus[i]);
        if (r != 0)
            return gw_error_set(err, r, "cannot start vCPU %u thread: %s", i, strerror(r));
        m->vcpus[i].thread_started = true;
        char name[16];
        snprintf(name, sizeof(name), "vcpu%u", i);
        pthread_setname_np(m->vcpus[i].thread, name);
    }
    return 0;
}

/* ---- CPU throttle ------------------------------------------------------------- */

#define THROTTLE_SLICE_NS 10000000ULL

static void *throttle_thread(void *arg)
{
    struct machine *m = arg;
    pthread_mutex_lock(&m->lock);
    while (m->throttle_pct > 0 && !m->vcpus_quit) {
        unsigned pct = m->throttle_pct;
        uint64_t sleep_ns = THROTTLE_SLICE_NS * pct / (100 - pct);
        pthread_mutex_unlock(&m->lock);
        for (unsigned i = 0; i < m->nr_vcpus; i++)
            __atomic_store_n(&m->vcpus[i].throttle_sleep_ns, sleep_ns, __ATOMIC_RELEASE);
        kick_all(m);
        /* One slice of running time plus the time the vCPUs sleep. */
        uint64_t period = THROTTLE_SLICE_NS + sleep_ns;
        struct timespec ts = { (time_t)(period / 1000000000ULL), (long)(period % 1000000000ULL) };
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&m->lock);
    }
    m->throttle_thread_running = false;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int machine_set_throttle(struct machine *m, unsigned pct, struct gw_error *err)
{
    if (pct > 99)
        return gw_error_set(err, EINVAL, "throttle must be 0..99%%");
    pthread_mutex_lock(&m->lock);
    bool was_running = m->throttle_thread_running;
    m->throttle_pct = pct;
    if (pct > 0 && !was_running) {
        int r = pthread_create(&m->throttle_thread, NULL, throttle_thread, m);
        if (r != 0) {
            m->throttle_pct = 0;
            pthread_mutex_unlock(&m->lock);
            return gw_error_set(err, r, "cannot start the throttle thread: %s", strerror(r));
        }
        pthread_detach(m->throttle_thread);
        m->throttle_thread_running = true;
    }
    pthread_mutex_unlock(&m->lock);
    if (pct != 0 || was_running)
        log_info("CPU throttle %u%%", pct);
    return 0;
}

unsigned machine_throttle(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    unsigned pct = m->throttle_pct;
    pthread_mutex_unlock(&m->lock);
    return pct;
}

static void stop_threads(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    m->throttle_pct = 0;
    while (m->throttle_thread_running)
        pthread_cond_wait(&m->cond, &m->lock);
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_lock(&m->lock);
    m->vcpus_quit = true;
    m->vcpus_run = false;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    kick_all(m);
    for (unsigned i = 0; i < m->nr_vcpus; i++) {
        if (m->vcpus[i].thread_started) {
            pthread_join(m->vcpus[i].thread, NULL);
            m->vcpus[i].thread_started = false;
        }
    }
}

/* ---- construction ----------------------------------------------------------- */

int machine_init(struct machine *m, const struct machine_config *cfg, struct evloop *loop,
                 const struct machine_ops *ops, void *opaque, struct gw_error *err)
{
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    m->loop = loop;
    m->ops = ops;
    m->ops_opaque = opaque;
    m->state = RUNSTATE_PRELAUNCH;
    m->deferred_timer = -1;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    pthread_cond_init(&m->parked_cond, NULL);
    for (unsigned i = 0; i < MACHINE_MAX_VCPUS; i++)
        m->vcpus[i].fd = -1;
    if (cfg->nr_vcpus < 1 || cfg->nr_vcpus > MACHINE_MAX_VCPUS)
        return gw_error_set(err, EINVAL, "--vcpus must be between 1 and %d", MACHINE_MAX_VCPUS);

    if (guest_ram_init(&m->ram, cfg->memory_mib << 20, cfg->name, err) < 0)
        return -err->code;
    if (kvm_vm_init(&m->kvm, err) < 0)
        goto err_ram;
    if (cpu_state_check_host(&m->kvm, err) < 0)
        goto err_kvm;
    if (kvm_vm_map_ram(&m->kvm, &m->ram, false, err) < 0)
        goto err_kvm;
    for (unsigned i = 0; i < cfg->nr_vcpus; i++) {
        if (vcpu_init(&m->vcpus[i], &m->kvm, i, cfg->nr_vcpus, cfg->cpu, err) < 0)
            goto err_vcpus;
        m->nr_vcpus++;
    }
    if (machine_devices_init(m, err) < 0)
        goto err_vcpus;
    return 0;

err_vcpus:
    for (unsigned i = 0; i < m->nr_vcpus; i++)
        vcpu_fini(&m->vcpus[i]);
    m->nr_vcpus = 0;
err_kvm:
    kvm_vm_fini(&m->kvm);
err_ram:
    guest_ram_fini(&m->ram);
    return -err->code;
}

void machine_fini(struct machine *m)
{
    if (m->deferred_timer >= 0)
        evloop_del_timer(m->loop, m->deferred_timer);
    free(m->deferred);
    m->deferred = NULL;
    m->deferred_timer = -1;
    stop_threads(m);
    guest_ram_release_uffd(&m->ram); /* before KVM destroys the vCPUs */
    machine_devices_fini(m);
    for (unsigned i = 0; i < m->nr_vcpus; i++)
        vcpu_fini(&m->vcpus[i]);
    kvm_vm_fini(&m->kvm);
    guest_ram_fini(&m->ram);
    free(m->cmdline);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
    pthread_cond_destroy(&m->parked_cond);
}

/* ---- memory access ------------------------------------------------------------ */

/* The first address of [gpa, gpa + size) that is not RAM; gpa + size if
 * all of it is. */
static uint64_t first_hole(const struct guest_ram *ram, uint64_t gpa, uint64_t size)
{
    uint64_t at = gpa, end = gpa + size;
    while (at < end) {
        const struct guest_ram_region *r = NULL;
        for (unsigned i = 0; i < ram->nr_regions && !r; i++)
            if (at >= ram->regions[i].gpa && at - ram->regions[i].gpa < ram->regions[i].size)
                r = &ram->regions[i];
        if (!r)
            return at;
        at = r->gpa + r->size;
    }
    return end;
}

int machine_pmemsave(struct machine *m, uint64_t gpa, uint64_t size, const char *path,
                     struct gw_error *err)
{
    if (size > 0 && gpa + size < gpa)
        return gw_error_set(err, EINVAL, "address range overflows");
    /* Checked before the file is opened: a refusal leaves an existing
     * file as it was (O_TRUNC would have emptied it). */
    uint64_t hole = first_hole(&m->ram, gpa, size);
    if (hole < gpa + size)
        return gw_error_set(err, EFAULT, "guest-physical address 0x%llx is not RAM",
                            (unsigned long long)hole);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return gw_error_set(err, errno, "could not open '%s': %s", path, strerror(errno));
    uint64_t done = 0;
    int r = 0;
    while (done < size) {
        uint64_t chunk = size - done < (8u << 20) ? size - done : (8u << 20);
        const uint8_t *p = guest_ram_ptr(&m->ram, gpa + done, chunk);
        if (!p) {
            /* Shrink to the part inside one region, or fail on a hole. */
            uint64_t off;
            if (!guest_ram_gpa_to_offset(&m->ram, gpa + done, &off)) {
                r = gw_error_set(err, EFAULT, "guest-physical address 0x%llx is not RAM",
                                 (unsigned long long)(gpa + done));
                break;
            }
            chunk = 4096 - ((gpa + done) & 4095);
            if (chunk > size - done)
                chunk = size - done;
            p = guest_ram_ptr(&m->ram, gpa + done, chunk);
        }
        ssize_t w = write(fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            r = gw_error_set(err, errno, "writing '%s': %s", path, strerror(errno));
            break;
        }
        done += (uint64_t)w;
    }
    if (close(fd) < 0 && r == 0)
        r = gw_error_set(err, errno, "writing '%s': %s", path, strerror(errno));
    return r;
}
