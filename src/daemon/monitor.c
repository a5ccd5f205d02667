/* Per-domain monitor threads. */
#define LOG_PREFIX "monitor"
#include "daemon/monitor.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/domain_store.h"
#include "daemon/lifecycle.h"
#include "daemon/vmm_proc.h"
#include "qmp/qmp_client.h"
#include "qmp/qmp_json.h"

#define MONITOR_POLL_MS   200
#define MONITOR_EXIT_MS   5000   /* QMP gone: how long the process may take to exit */
#define MONITOR_DRAIN_MS  2000   /* how often the command connection's events are read */

struct monitor_arg {
    struct daemon *dm;
    struct domain *dom;
    struct qmp_client *q;
};

static void on_stop(struct daemon *dm, struct domain *dom)
{
    if (dom->state != DOM_STATE_RUNNING)
        return;
    enum dom_reason why = dom->pause_reason;
    dom->pause_reason = DOM_REASON_UNKNOWN;
    domain_set_state(dm, dom, DOM_STATE_PAUSED, why, DOM_EVENT_SUSPENDED, DOM_DETAIL_PAUSED);
}

static void on_resume(struct daemon *dm, struct domain *dom)
{
    if (dom->state == DOM_STATE_PAUSED && !dom->resume_pending)
        domain_set_state(dm, dom, DOM_STATE_RUNNING, DOM_REASON_UNPAUSED, DOM_EVENT_RESUMED,
                         DOM_DETAIL_UNPAUSED);
}

static void handle_event(struct daemon *dm, struct domain *dom, struct json_object *ev)
{
    const char *name = qmp_json_get_str(ev, "event");
    struct json_object *data = qmp_json_get(ev, "data");
    if (!name)
        return;
    log_debug("domain '%s': QMP event %s", dom->def.name, name);
    pthread_mutex_lock(&dm->lock);
    if (strcmp(name, "STOP") == 0)
        on_stop(dm, dom);
    else if (strcmp(name, "RESUME") == 0)
        on_resume(dm, dom);
    else if (strcmp(name, "SHUTDOWN") == 0)
        dom->exit.shutdown_event = true;
    for (unsigned i = 0; i < dm->nhooks; i++)
        dm->hooks[i](dm, dom, name, data);
    pthread_cond_broadcast(&dm->cond); /* a suspend or resume waits for its STOP or RESUME */
    pthread_mutex_unlock(&dm->lock);
}

/* Every MONITOR_DRAIN_MS, the events the VMM sent on the command
 * connection since its last command (lifecycle.h domain_qmp_drain). */
static void drain_cmd_conn(struct domain *dom, struct timespec *last)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (now.tv_sec - last->tv_sec) * 1000 + (now.tv_nsec - last->tv_nsec) / 1000000;
    if (ms < MONITOR_DRAIN_MS)
        return;
    *last = now;
    domain_qmp_drain(dom);
}

/* Read events until the VMM goes or the daemon stops; true if the VMM went. */
static bool watch(struct monitor_arg *a)
{
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    for (;;) {
        if (atomic_load(&a->dm->stopping))
            return false;
        drain_cmd_conn(a->dom, &last);
        struct json_object *ev;
        int r = qmp_client_wait_event(a->q, NULL, MONITOR_POLL_MS, &ev);
        if (r == 0) {
            handle_event(a->dm, a->dom, ev);
            json_object_put(ev);
        } else if (r != -ETIMEDOUT || vmm_wait_gone(a->dom->pidfd, 0)) {
            return true;
        }
    }
}

/* The command connection: without dm->lock (a command may be running). */
static void release_qmp(struct domain *dom)
{
    pthread_mutex_lock(&dom->qmp_lock);
    struct qmp_client *q = dom->qmp;
    dom->qmp = NULL;
    pthread_mutex_unlock(&dom->qmp_lock);
    qmp_client_free(q);
}

/* The process's fds and files: with dm->lock held. */
static void release_fds(struct daemon *dm, struct domain *dom)
{
    close(dom->pidfd);
    dom->pidfd = -1;
    if (dom->console_fd >= 0)
        close(dom->console_fd);
    dom->console_fd = -1;
    unlink(dom->qmp_path);
    char fifo[PATH_MAX];
    domain_path(dm, dom, STORE_CONSOLE, fifo, sizeof(fifo));
    unlink(fifo);
}

/* The VMM closed QMP: wait for the process to be gone, SIGKILLing it after
 * MONITOR_EXIT_MS. Then for as long as it takes (the teardown of a large
 * guest's memory, a process stuck in the kernel): a domain marked shut
 * off while its VMM is still there would be started again beside it, and
 * a process that has not exited cannot be reaped (it stayed a zombie for
 * good). Only a daemon that stops leaves it to the next one. */
static void wait_exit(struct daemon *dm, struct domain *dom)
{
    if (vmm_wait_gone(dom->pidfd, MONITOR_EXIT_MS))
        return;
    log_error("domain '%s': VMM %d closed QMP but did not exit; killing it", dom->def.name,
              (int)dom->pid);
    vmm_signal(dom->pidfd, SIGKILL);
    for (int waited = 0; !vmm_wait_gone(dom->pidfd, MONITOR_POLL_MS); waited += MONITOR_POLL_MS) {
        if (atomic_load(&dm->stopping))
            return;
        if (waited > 0 && waited % MONITOR_EXIT_MS == 0)
            log_warn("domain '%s': VMM %d is still exiting %d s after SIGKILL", dom->def.name,
                     (int)dom->pid, waited / 1000);
    }
}

static void finish(struct daemon *dm, struct domain *dom)
{
    wait_exit(dm, dom);
    release_qmp(dom);
    pthread_mutex_lock(&dm->lock);
    /* reaped with the lock held: until dom->pid is cleared it names our
     * zombie, never a process that reused the pid */
    int status = 0;
    bool known = vmm_reap(dom->pid, &status);
    release_fds(dm, dom);
    dom->exit.status_known = known;
    dom->exit.wait_status = status;
    enum dom_reason why;
    enum dom_event_detail detail;
    dom_exit_classify(&dom->exit, &why, &detail);
    if (why == DOM_REASON_CRASHED)
        log_error("domain '%s': VMM %d ended unexpectedly (%s %d)", dom->def.name, (int)dom->pid,
                  known && WIFSIGNALED(status) ? "signal" : "status",
                  known ? (WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status)) : -1);
    dom->pid = 0;
    dom->id = -1;
    domain_set_state(dm, dom, DOM_STATE_SHUTOFF, why, DOM_EVENT_STOPPED, detail);
    dom->monitor_running = false;
    pthread_cond_broadcast(&dm->cond);
    pthread_mutex_unlock(&dm->lock);
}

static void *monitor_main(void *p)
{
    struct monitor_arg *a = p;
    bool gone = watch(a);
    qmp_client_free(a->q);
    if (gone) {
        finish(a->dm, a->dom);
    } else {
        pthread_mutex_lock(&a->dm->lock);
        a->dom->monitor_running = false;
        pthread_cond_broadcast(&a->dm->cond);
        pthread_mutex_unlock(&a->dm->lock);
    }
    free(a);
    return NULL;
}

int monitor_start(struct daemon *dm, struct domain *dom, struct qmp_client *evq,
                  struct gw_error *err)
{
    monitor_join(dom);
    struct monitor_arg *a = calloc(1, sizeof(*a));
    if (!a) {
        qmp_client_free(evq);
        return gw_error_set(err, ENOMEM, "out of memory");
    }
    *a = (struct monitor_arg){ dm, dom, evq };
    memset(&dom->exit, 0, sizeof(dom->exit));
    dom->pause_reason = DOM_REASON_UNKNOWN;
    dom->monitor_running = true;
    int r = pthread_create(&dom->monitor, NULL, monitor_main, a);
    if (r != 0) {
        dom->monitor_running = false;
        qmp_client_free(evq);
        free(a);
        return gw_error_set(err, r, "cannot start the monitor thread: %s", strerror(r));
    }
    dom->monitor_joinable = true;
    return 0;
}

bool monitor_wait_end(struct daemon *dm, struct domain *dom, int ms)
{
    struct timespec deadline;
    daemon_deadline_in(&deadline, ms);
    while (dom->monitor_running)
        if (pthread_cond_timedwait(&dm->cond, &dm->lock, &deadline) == ETIMEDOUT)
            return !dom->monitor_running;
    return true;
}

void monitor_join(struct domain *dom)
{
    if (dom->monitor_joinable && !dom->monitor_running) {
        pthread_join(dom->monitor, NULL);
        dom->monitor_joinable = false;
    }
}
