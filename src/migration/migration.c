#define LOG_PREFIX "migration"
#include "migration/migration.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

uint64_t mig_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void mig_thread_sched(uint64_t *run_ns, uint64_t *wait_ns)
{
    FILE *f = fopen("/proc/thread-self/schedstat", "re");
    unsigned long long run = 0, wait = 0;
    if (f && fscanf(f, "%llu %llu", &run, &wait) != 2)
        run = wait = 0;
    if (f)
        fclose(f);
    *run_ns = run;
    *wait_ns = wait;
}

uint64_t mig_host_steal_ms(void)
{
    /* "cpu  user nice system idle iowait irq softirq steal ..." in USER_HZ */
    FILE *f = fopen("/proc/stat", "re");
    unsigned long long v[8] = { 0 };
    if (f && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                    &v[4], &v[5], &v[6], &v[7]) != 8)
        v[7] = 0;
    if (f)
        fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return hz > 0 ? v[7] * 1000ULL / (unsigned long long)hz : 0;
}

uint64_t mig_thread_cpu_wait_ns(void)
{
    uint64_t run, wait;
    mig_thread_sched(&run, &wait);
    return wait;
}

void mig_thread_priority_high(void)
{
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), -10) < 0)
        log_debug("cannot raise this thread's priority: %s", strerror(errno));
}

uint64_t mig_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void mig_init(struct migration *m, void *vm, const struct mig_vm_ops *ops, struct guest_ram *ram,
              struct dirty_log *dirty, const char *name, const uint8_t *uuid, unsigned nr_vcpus)
{
    memset(m, 0, sizeof(*m));
    m->vm = vm;
    m->ops = ops;
    m->ram = ram;
    m->dirty = dirty;
    m->name = name;
    m->uuid = uuid;
    m->nr_vcpus = nr_vcpus;
    m->fd = m->listen_fd = m->pfd = m->pc_recover_fd = -1;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    mig_params_default(&m->params);
    mig_caps_default(&m->caps);
    m->stats.status = MIG_NONE;
}

/* Wake the thread from a blocking socket call. Under m->lock: the thread
 * forgets an fd (sets it to -1, under the lock) before it closes it, so no
 * number shut down here can belong to something else by then. */
static void wake_locked(struct migration *m)
{
    if (m->pfd >= 0)
        shutdown(m->pfd, SHUT_RDWR);
    if (m->fd >= 0)
        shutdown(m->fd, SHUT_RDWR);
    if (m->listen_fd >= 0)
        shutdown(m->listen_fd, SHUT_RDWR);
}

static void join_thread(struct migration *m)
{
    pthread_mutex_lock(&m->lock);
    bool running = m->thread_running;
    pthread_mutex_unlock(&m->lock);
    if (running) {
        pthread_mutex_lock(&m->lock);
        m->cancel = true;
        pthread_cond_broadcast(&m->cond);
        wake_locked(m);
        pthread_mutex_unlock(&m->lock);
        pthread_join(m->thread, NULL);
        pthread_mutex_lock(&m->lock);
        m->thread_running = false;
        pthread_mutex_unlock(&m->lock);
    }
}

void mig_fini(struct migration *m)
{
    join_thread(m);
    if (m->pc_recover_fd >= 0)
        close(m->pc_recover_fd);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
}

/* Called with the lock NOT held. */
void mig_set_state(struct migration *m, enum mig_state to)
{
    pthread_mutex_lock(&m->lock);
    enum mig_state from = m->stats.status;
    bool ok = mig_state_transition_ok(from, to);
    if (ok)
        m->stats.status = to;
    if (ok && to == MIG_POSTCOPY_ACTIVE)
        m->stats.postcopy_started = true;
    bool events = m->caps.on[MIG_CAP_EVENTS];
    pthread_mutex_unlock(&m->lock);
    if (!ok) {
        log_warn("ignored state change %s -> %s", mig_state_name(from), mig_state_name(to));
        return;
    }
    log_info("%s migration: %s -> %s", m->incoming ? "incoming" : "outgoing", mig_state_name(from),
             mig_state_name(to));
    if (events && m->ops->event) {
        struct json_object *d = json_object_new_object();
        json_object_object_add(d, "status", json_object_new_string(mig_state_name(to)));
        m->ops->event(m->vm, "MIGRATION", d);
    }
}

void mig_fail(struct migration *m, const char *fmt, ...)
{
    pthread_mutex_lock(&m->lock);
    /* A cancel (migrate_cancel, or the VMM ending the thread) whose state
     * change has not landed yet is a cancel all the same. */
    bool cancelled = m->stats.status == MIG_CANCELLING ||
                     (m->cancel && !mig_state_is_postcopy(m->stats.status));
    if (cancelled) /* the I/O error it caused says nothing */
        snprintf(m->stats.error_desc, sizeof(m->stats.error_desc), "migration cancelled");
    if (!m->stats.error_desc[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m->stats.error_desc, sizeof(m->stats.error_desc), fmt, ap);
        va_end(ap);
    }
    if (m->stats.start_ms)
        m->stats.total_ms = mig_now_ms() - m->stats.start_ms;
    bool via_cancelling = cancelled && m->stats.status != MIG_CANCELLING;
    pthread_mutex_unlock(&m->lock);
    if (!cancelled)
        log_error("migration failed: %s", m->stats.error_desc);
    if (via_cancelling)
        mig_set_state(m, MIG_CANCELLING);
    mig_set_state(m, cancelled ? MIG_CANCELLED : MIG_FAILED);
}

static int start_thread(struct migration *m, const char *uri, bool incoming, struct gw_error *err)
{
    struct mig_uri u;
    if (mig_uri_parse(uri, &u, err) < 0)
        return -err->code;
    /* Refused before anything is touched: reaping a running thread would
     * cancel it. */
    pthread_mutex_lock(&m->lock);
    bool busy = mig_state_is_active(m->stats.status);
    pthread_mutex_unlock(&m->lock);
    if (busy)
        return gw_error_set(err, EBUSY, "There's a migration process in progress");
    join_thread(m); /* reap a finished one (or end a late answer's wait) */
    pthread_mutex_lock(&m->lock);
    memset(&m->stats, 0, sizeof(m->stats));
    m->stats.status = MIG_NONE;
    m->stats.start_ms = mig_now_ms();
    m->incoming = incoming;
    m->uri = u;
    m->cancel = m->committing = false;
    m->fd = m->listen_fd = m->pfd = -1;
    m->pc_start_req = m->pc_pause_req = m->pc_recover_req = m->pc_commit_wait = false;
    m->pc_done_named = m->pc_late = false;
    latency_hist_reset(&m->lat);
    pthread_mutex_unlock(&m->lock);
    if (incoming) {
        /* Listen (or open the file) now, so that errors reach the caller and
         * the source can connect as soon as the command returns. */
        bool listener;
        int fd = mig_uri_listen(&u, &listener, err);
        if (fd < 0)
            return -err->code;
        pthread_mutex_lock(&m->lock);
        if (listener)
            m->listen_fd = fd;
        else
            m->fd = fd;
        pthread_mutex_unlock(&m->lock);
    }
    mig_set_state(m, MIG_SETUP);
    int r = pthread_create(&m->thread, NULL, incoming ? mig_incoming_thread : mig_outgoing_thread, m);
    if (r != 0) {
        pthread_mutex_lock(&m->lock);
        int fd = m->fd, lfd = m->listen_fd;
        m->fd = m->listen_fd = -1;
        pthread_mutex_unlock(&m->lock);
        if (fd >= 0)
            close(fd);
        if (lfd >= 0)
            close(lfd);
        mig_fail(m, "cannot start the migration thread: %s", strerror(r));
        return gw_error_set(err, r, "cannot start the migration thread: %s", strerror(r));
    }
    pthread_mutex_lock(&m->lock);
    m->thread_running = true;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

int mig_start_outgoing(struct migration *m, const char *uri, struct gw_error *err)
{
    return start_thread(m, uri, false, err);
}

int mig_start_incoming(struct migration *m, const char *uri, struct gw_error *err)
{
    return start_thread(m, uri, true, err);
}

int mig_cancel(struct migration *m, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    enum mig_state s = m->stats.status;
    bool can = (s == MIG_SETUP || s == MIG_ACTIVE || s == MIG_DEVICE) && !m->committing;
    bool committing = m->committing && !mig_state_is_final(s);
    if (can) {
        m->cancel = true;
        wake_locked(m); /* a thread blocked in connect/accept/read/write */
    }
    pthread_mutex_unlock(&m->lock);
    if (mig_state_is_postcopy(s))
        return gw_error_set(err, EBUSY, "Post-copy is active: the migration cannot be cancelled "
                            "(the guest's newest state is on the destination)");
    if (committing)
        return gw_error_set(err, EBUSY, "The switch-over is being committed: too late to cancel "
                            "(the guest may already run on the destination)");
    if (!can)
        return 0; /* as QEMU: nothing to cancel is not an error */
    mig_set_state(m, MIG_CANCELLING);
    return 0;
}

bool mig_take_commit(struct migration *m)
{
    pthread_mutex_lock(&m->lock);
    bool go = !m->cancel;
    m->committing = go;
    pthread_mutex_unlock(&m->lock);
    return go;
}

void mig_get_stats(struct migration *m, struct mig_stats *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->stats;
    out->fault_count = m->lat.count;
    out->fault_p50_us = latency_hist_percentile(&m->lat, 50);
    out->fault_p99_us = latency_hist_percentile(&m->lat, 99);
    out->fault_max_us = m->lat.max_us;
    if (mig_state_is_active(out->status) && out->start_ms)
        out->total_ms = mig_now_ms() - out->start_ms;
    pthread_mutex_unlock(&m->lock);
}

bool mig_active(struct migration *m)
{
    pthread_mutex_lock(&m->lock);
    bool a = mig_state_is_active(m->stats.status);
    pthread_mutex_unlock(&m->lock);
    return a;
}

int mig_set_params(struct migration *m, const struct mig_params *p, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    m->params = *p; /* the running thread re-reads them each round */
    pthread_mutex_unlock(&m->lock);
    return 0;
}

void mig_get_params(struct migration *m, struct mig_params *p)
{
    pthread_mutex_lock(&m->lock);
    *p = m->params;
    pthread_mutex_unlock(&m->lock);
}

int mig_set_caps(struct migration *m, const struct mig_caps *c, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    if (mig_state_is_active(m->stats.status)) {
        pthread_mutex_unlock(&m->lock);
        return gw_error_set(err, EBUSY, "There's a migration process in progress");
    }
    m->caps = *c;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

void mig_get_caps(struct migration *m, struct mig_caps *c)
{
    pthread_mutex_lock(&m->lock);
    *c = m->caps;
    pthread_mutex_unlock(&m->lock);
}

/* ---- post-copy control ---- */

static enum mig_state state_locked(struct migration *m) { return m->stats.status; }

/* A post-copy migration completed here whose source may not know it. */
static bool done_here(const struct migration *m)
{
    return m->incoming && m->stats.status == MIG_COMPLETED && m->pc_done_named;
}

int mig_start_postcopy(struct migration *m, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    enum mig_state s = state_locked(m);
    bool cap = m->caps.on[MIG_CAP_POSTCOPY_RAM], incoming = m->incoming;
    pthread_mutex_unlock(&m->lock);
    if (!cap)
        return gw_error_set(err, EINVAL, "Enable postcopy with migrate-set-capabilities before "
                            "the start of migration");
    if (incoming || (s != MIG_SETUP && s != MIG_ACTIVE))
        return gw_error_set(err, EINVAL, "Postcopy must be started after migration has been "
                            "started (status: %s)", mig_state_name(s));
    m->pc_start_req = true;
    return 0;
}

/* May migrate-pause act now? Under m->lock. */
static bool pausable_locked(const struct migration *m)
{
    enum mig_state s = m->stats.status;
    if (s == MIG_POSTCOPY_ACTIVE || s == MIG_POSTCOPY_RECOVER)
        return true;
    /* A destination between RP_LOADED and COMMIT: the source may have
     * handed the guest over; a silent source would hold it there for ever
     * (no cancel: committing). It pauses with the state kept. */
    if (m->incoming && s == MIG_ACTIVE && m->pc_commit_wait)
        return true;
    return done_here(m) && m->pc_late;
}

int mig_pause(struct migration *m, struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    enum mig_state s = state_locked(m);
    /* Set with the state checked: a thread that pauses on its own clears
     * it once paused, never before this could set it. */
    bool ok = pausable_locked(m);
    if (ok)
        m->pc_pause_req = true;
    /* The migration thread sends POSTCOPY_PAUSE itself (it owns the
     * stream) and then breaks the channels; see postcopy_src.c. The
     * destination simply breaks them. */
    if (ok && m->incoming)
        wake_locked(m); /* the listener too: waiting for the source to come back */
    pthread_mutex_unlock(&m->lock);
    if (!ok)
        return gw_error_set(err, EINVAL, "migrate-pause is only supported during postcopy-active "
                            "or postcopy-recover state (status: %s)", mig_state_name(s));
    return 0;
}

static int take_recovery(struct migration *m, bool incoming, struct gw_error *err)
{
    if (m->stats.status != MIG_POSTCOPY_PAUSED || m->incoming != incoming)
        return gw_error_set(err, EINVAL, "%s: no post-copy migration is paused on this side "
                            "(status: %s)", incoming ? "migrate-recover" : "migrate resume",
                            mig_state_name(m->stats.status));
    if (m->pc_recover_req)
        return gw_error_set(err, EBUSY, "a recovery is already under way");
    return 0;
}

static int recovery_uri(const char *uri, struct mig_uri *u, struct gw_error *err)
{
    if (mig_uri_parse(uri, u, err) < 0)
        return -err->code;
    if (u->kind == MIG_URI_FILE)
        return gw_error_set(err, EINVAL, "post-copy recovery needs a tcp: or unix: URI");
    return 0;
}

/* Hand the paused migration thread its way back (fd: the destination's
 * new listening socket, or -1). */
static int ask_recovery(struct migration *m, bool incoming, const struct mig_uri *u, int fd,
                        struct gw_error *err)
{
    pthread_mutex_lock(&m->lock);
    int r = take_recovery(m, incoming, err);
    if (r == 0) {
        m->pc_recover_fd = fd;
        m->pc_recover_uri = *u;
        m->pc_recover_req = true;
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    return r;
}

/* Answer a source that lost RP_POSTCOPY_DONE (fd: the listening socket). */
static int start_late_answer(struct migration *m, const struct mig_uri *u, int fd,
                             struct gw_error *err)
{
    pthread_mutex_lock(&m->lock); /* the thread before was reaped (mig_recover) */
    m->cancel = m->pc_pause_req = false;
    m->pc_recover_fd = fd;
    m->pc_recover_uri = *u;
    m->pc_late = true;
    int r = pthread_create(&m->thread, NULL, mig_pc_late_done_thread, m);
    m->thread_running = r == 0;
    if (r != 0) {
        m->pc_recover_fd = -1;
        m->pc_late = false;
    }
    pthread_mutex_unlock(&m->lock);
    if (r != 0)
        return gw_error_set(err, r, "cannot start the answering thread: %s", strerror(r));
    log_info("migrate-recover: the migration completed here; a source that resumes it is told so");
    return 0;
}

int mig_recover(struct migration *m, const char *uri, struct gw_error *err)
{
    struct mig_uri u;
    if (recovery_uri(uri, &u, err) < 0)
        return -err->code;
    pthread_mutex_lock(&m->lock);
    bool late = done_here(m);
    int r = late ? 0 : take_recovery(m, true, err);
    pthread_mutex_unlock(&m->lock);
    if (r < 0)
        return r;
    if (late) /* reap the incoming thread, or replace an earlier wait (its listener gone first) */
        join_thread(m);
    bool listener;
    int fd = mig_uri_listen(&u, &listener, err);
    if (fd < 0)
        return -err->code;
    r = late ? start_late_answer(m, &u, fd, err) : ask_recovery(m, true, &u, fd, err);
    if (r < 0)
        close(fd);
    return r;
}

int mig_resume(struct migration *m, const char *uri, struct gw_error *err)
{
    struct mig_uri u;
    if (recovery_uri(uri, &u, err) < 0)
        return -err->code;
    return ask_recovery(m, false, &u, -1, err);
}

int mig_pc_wait_recovery(struct migration *m, const char *why)
{
    pthread_mutex_lock(&m->lock);
    snprintf(m->stats.error_desc, sizeof(m->stats.error_desc), "%s", why);
    m->stats.paused_count++;
    pthread_mutex_unlock(&m->lock);
    log_warn("post-copy paused: %s", why);
    mig_set_state(m, MIG_POSTCOPY_PAUSED);
    pthread_mutex_lock(&m->lock);
    /* A migrate-pause that led here is spent; none is taken while paused
     * (mig_pause), so none that came after is lost. */
    if (m->stats.status == MIG_POSTCOPY_PAUSED)
        m->pc_pause_req = false;
    while (!m->pc_recover_req && !m->cancel)
        pthread_cond_wait(&m->cond, &m->lock);
    bool go = m->pc_recover_req && !m->cancel;
    m->pc_recover_req = false;
    if (go)
        m->stats.error_desc[0] = 0;
    pthread_mutex_unlock(&m->lock);
    if (!go)
        return -ECANCELED;
    mig_set_state(m, MIG_POSTCOPY_RECOVER);
    return 0;
}
