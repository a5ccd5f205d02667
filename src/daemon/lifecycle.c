/* Domain lifecycle operations. */
#define LOG_PREFIX "lifecycle"
#include "daemon/lifecycle.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control.h"
#include "daemon/domain_store.h"
#include "daemon/migrate.h"
#include "daemon/monitor.h"
#include "daemon/vmm_proc.h"
#include "qmp/qmp_client.h"
#include "qmp/qmp_json.h"

#define QMP_CMD_TIMEOUT_MS   10000
#define QMP_RECONNECT_MS     3000   /* a command connection the VMM closed: made again within */
#define QMP_DRAIN_MS         100    /* reading the events pending on it, at most */
#define START_TIMEOUT_MS     20000
#define DESTROY_TERM_MS      3000   /* SIGTERM, then SIGKILL */
#define DESTROY_KILL_MS      10000
#define EVENT_SYNC_MS        2000   /* suspend/resume: how long the monitor may take to see
                                       the VMM's STOP/RESUME */

/* ---- QMP on a domain ---- */

static int check_name(struct qmp_client *q, const char *name, struct gw_error *err);
static int64_t now_ms(void);

/* Whether running cmd twice leaves the VMM as running it once does, so
 * that a command whose delivery is uncertain (the connection closed after
 * it was written) may be sent again: reads, the run state (stop, cont),
 * settings of absolute values, and a cancel (a no-op without a
 * migration). Everything else (migrate, migrate-incoming/-recover,
 * migrate-start-postcopy, migrate-pause, system_powerdown, system_reset,
 * quit, and any command not named here) is not: it may have been carried
 * out, and a second one would start, press or fail anew. */
static bool qmp_cmd_repeatable(const char *cmd)
{
    static const char *const same[] = { "qmp_capabilities", "stop", "cont", "migrate_cancel",
                                        "migrate-set-capabilities", "migrate-set-parameters" };
    if (strncmp(cmd, "query-", 6) == 0)
        return true;
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
        if (strcmp(cmd, same[i]) == 0)
            return true;
    return false;
}

/* The client's errors that leave its connection unusable (qmp_client.h):
 * all but a timeout, an error reply and a request that could not be built. */
static bool qmp_conn_lost(int r)
{
    return r < 0 && r != -ETIMEDOUT && r != -EREMOTEIO && r != -ENOMEM;
}

/* Read and drop what the VMM sent since the last command (events, a late
 * reply), for at most ms: the VMM queues every event for every client and
 * drops a client whose queue passes QMP_MAX_OUTPUT. 0 while the
 * connection is up, else the error that ended it. qmp_lock held. */
static int drain_locked(struct qmp_client *q, int ms)
{
    int64_t end = now_ms() + ms;
    struct json_object *ev;
    int r;
    while ((r = qmp_client_wait_event(q, NULL, 0, &ev)) == 0) {
        json_object_put(ev);
        if (now_ms() >= end)
            return 0;
    }
    return r == -ETIMEDOUT ? 0 : r;
}

void domain_qmp_drain(struct domain *dom)
{
    if (pthread_mutex_trylock(&dom->qmp_lock) != 0)
        return; /* a command runs: it reads them */
    if (dom->qmp)
        drain_locked(dom->qmp, QMP_DRAIN_MS);
    pthread_mutex_unlock(&dom->qmp_lock);
}

/* One connect(), not retried: a VMM that is gone refuses at once, one
 * whose backlog is full (EAGAIN) is not waited for. Then the greeting and
 * qmp_capabilities, as for the first connection, within timeout_ms. */
static struct qmp_client *qmp_open_once(const char *path, int timeout_ms, struct gw_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path)) {
        gw_error_set(err, ENAMETOOLONG, "QMP socket path '%s' is too long", path);
        return NULL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        gw_error_set(err, errno, "socket: %s", strerror(errno));
        return NULL;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(fd);
        gw_error_set(err, e, "cannot connect to QMP socket '%s': %s", path, strerror(e));
        return NULL;
    }
    return qmp_client_open(fd, timeout_ms, err); /* owns fd */
}

/* The VMM closed dom's command connection (why: the client's error): make
 * a new one to the same socket, checked as the first was (query-name). On
 * failure the old (broken) one stays, so that the next command tries
 * again. qmp_lock held. */
static int qmp_reconnect(struct domain *dom, int why, struct gw_error *err)
{
    log_warn("domain '%s': the VMM closed the QMP command connection (%s); connecting again to %s",
             dom->def.name, strerror(-why), dom->qmp_path);
    struct qmp_client *q = qmp_open_once(dom->qmp_path, QMP_RECONNECT_MS, err);
    if (!q)
        return -EIO;
    int r = check_name(q, dom->def.name, err);
    if (r < 0) {
        qmp_client_free(q);
        return r;
    }
    qmp_client_free(dom->qmp);
    dom->qmp = q;
    log_info("domain '%s': QMP command connection made again", dom->def.name);
    return 0;
}

/* Run cmd on dom's command connection, re-made once if the VMM closed it.
 * Closed before cmd was written (found by reading what is pending): cmd
 * goes on the new connection. Closed after (the write or the wait for the
 * reply failed; the VMM may have read it): only a repeatable cmd is sent
 * again, any other gets an error, and the next command finds a working
 * connection. qmp_lock held; returns the client's code, with cerr filled
 * when the connection was lost. */
static int execute_locked(struct domain *dom, const char *cmd, struct json_object *args,
                          struct json_object **ret, struct qmp_error *qerr,
                          struct gw_error *cerr)
{
    struct gw_error e;
    gw_error_init(&e);
    int lost = drain_locked(dom->qmp, QMP_DRAIN_MS);
    if (lost < 0) { /* closed while idle: cmd was certainly not delivered */
        if (qmp_reconnect(dom, lost, &e) < 0) {
            json_object_put(args);
            return gw_error_set(cerr, -lost, "the VMM closed the QMP connection (%s), and "
                                "connecting again failed: %s", strerror(-lost), e.msg);
        }
        return qmp_client_execute(dom->qmp, cmd, args, ret, qerr, QMP_CMD_TIMEOUT_MS);
    }
    bool again = qmp_cmd_repeatable(cmd);
    struct json_object *copy = NULL;
    if (again && args && json_object_deep_copy(args, &copy, NULL) < 0)
        again = false;
    int r = qmp_client_execute(dom->qmp, cmd, args, ret, qerr, QMP_CMD_TIMEOUT_MS);
    if (!qmp_conn_lost(r)) {
        json_object_put(copy);
        return r;
    }
    lost = r;
    r = 0;
    if (qmp_reconnect(dom, lost, &e) < 0)
        r = gw_error_set(cerr, -lost, "the VMM closed the QMP connection during '%s' (%s), and "
                         "connecting again failed: %s", cmd, strerror(-lost), e.msg);
    else if (!again)
        r = gw_error_set(cerr, -lost, "the VMM closed the QMP connection during '%s' (%s): it "
                         "may or may not have been carried out, so it is not sent again (the "
                         "connection was made again for the next command)", cmd, strerror(-lost));
    else
        log_warn("domain '%s': sending '%s' again on the new QMP connection", dom->def.name, cmd);
    if (r < 0) {
        json_object_put(copy);
        return r;
    }
    return qmp_client_execute(dom->qmp, cmd, copy, ret, qerr, QMP_CMD_TIMEOUT_MS);
}

int domain_qmp(struct domain *dom, const char *cmd, struct json_object *args,
               struct json_object **ret, const char **cls, struct gw_error *err)
{
    struct qmp_error qerr = { 0 };
    struct gw_error cerr; /* the connection's errors, when one is re-made */
    gw_error_init(&cerr);
    if (cls)
        *cls = NULL;
    pthread_mutex_lock(&dom->qmp_lock);
    if (!dom->qmp) {
        pthread_mutex_unlock(&dom->qmp_lock);
        json_object_put(args);
        /* the monitor released it: the VMM is gone (OperationFailed, as virsh's
         * "domain is no longer running") */
        return gw_error_set(err, EIO, "operation failed: domain is no longer running (its VMM "
                            "exited)");
    }
    int r = execute_locked(dom, cmd, args, ret, &qerr, &cerr);
    struct json_object *ev;
    while ((ev = qmp_client_pop_event(dom->qmp))) /* the monitor has its own connection */
        json_object_put(ev);
    pthread_mutex_unlock(&dom->qmp_lock);
    if (r == -EREMOTEIO) {
        if (cls)
            *cls = qerr.cls;
        return gw_error_set(err, EIO, "%s", qerr.desc);
    }
    /* The VMM failed, timed out or vanished: OperationFailed (EIO), whatever
     * the connection's errno (ECONNRESET, EPIPE, EPROTO would be GenericError
     * or ProtocolError, which is the control protocol's). */
    int code = r == -ETIMEDOUT || r == -ENOMEM ? -r : EIO;
    if (r < 0 && cerr.code) /* the connection was lost */
        return gw_error_set(err, code, "QMP command '%s' to the VMM failed: %s", cmd, cerr.msg);
    if (r < 0)
        return gw_error_set(err, code, "QMP command '%s' to the VMM failed: %s", cmd, strerror(-r));
    return 0;
}

/* ---- start ---- */

static int check_name(struct qmp_client *q, const char *name, struct gw_error *err)
{
    struct json_object *ret = NULL;
    struct qmp_error qerr = { 0 };
    int r = qmp_client_execute(q, "query-name", NULL, &ret, &qerr, QMP_CMD_TIMEOUT_MS);
    const char *got = r == 0 ? qmp_json_get_str(ret, "name") : NULL;
    if (r == 0 && (!got || strcmp(got, name) != 0))
        r = gw_error_set(err, ESRCH, "the VMM at this socket is '%s', not '%s'", got ? got : "?", name);
    else if (r < 0)
        r = gw_error_set(err, r, "query-name failed: %s", r == -EREMOTEIO ? qerr.desc : strerror(-r));
    json_object_put(ret);
    return r;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int domain_connect_vmm(const char *qmp_path, const char *name, int pidfd, int timeout_ms,
                       struct qmp_client **cmdq, struct qmp_client **evq, struct gw_error *err)
{
    int64_t deadline = now_ms() + timeout_ms;
    struct gw_error e;
    *cmdq = *evq = NULL;
    for (;;) {
        gw_error_init(&e);
        *cmdq = qmp_client_connect(qmp_path, 1000, &e);
        if (*cmdq)
            break;
        if (vmm_wait_gone(pidfd, 0))
            return gw_error_set(err, ECHILD, "godwit-vmm exited during start-up");
        if (now_ms() > deadline)
            return gw_error_set(err, ETIMEDOUT, "godwit-vmm did not answer on %s within %d ms: %s",
                                qmp_path, timeout_ms, e.msg);
    }
    int r = check_name(*cmdq, name, err);
    if (r == 0) {
        gw_error_init(&e);
        *evq = qmp_client_connect(qmp_path, 2000, &e);
        if (!*evq)
            r = gw_error_set(err, EIO, "second QMP connection: %s", e.msg);
    }
    if (r < 0) {
        qmp_client_free(*cmdq);
        *cmdq = NULL;
    }
    return r;
}

static void *reap_when_gone(void *p)
{
    pid_t pid = (pid_t)(intptr_t)p;
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return NULL;
}

/* A VMM whose start failed: SIGKILLed and reaped. One still exiting after
 * DESTROY_KILL_MS (the teardown of a large guest's memory) is reaped by a
 * thread of its own whenever it is gone: it stayed a zombie for good. */
static void kill_and_reap(pid_t pid, int pidfd)
{
    vmm_signal(pidfd, SIGKILL);
    int status;
    if (vmm_wait_gone(pidfd, DESTROY_KILL_MS) && vmm_reap(pid, &status))
        return;
    log_warn("VMM %d is still exiting %d s after SIGKILL; it will be reaped once gone", (int)pid,
             DESTROY_KILL_MS / 1000);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, reap_when_gone, (void *)(intptr_t)pid) != 0)
        log_error("VMM %d: no thread to reap it: it will stay a zombie", (int)pid);
    pthread_attr_destroy(&attr);
}

static int spawn(struct daemon *dm, struct domain *dom, bool incoming, pid_t *pid, int *pidfd,
                 int *cfd, struct gw_error *err)
{
    char qmp[PATH_MAX], log[PATH_MAX], fifo[PATH_MAX], vlog[PATH_MAX];
    domain_path(dm, dom, STORE_QMP, qmp, sizeof(qmp));
    domain_path(dm, dom, STORE_SERIAL_LOG, log, sizeof(log));
    domain_path(dm, dom, STORE_CONSOLE, fifo, sizeof(fifo));
    domain_path(dm, dom, STORE_VMM_LOG, vlog, sizeof(vlog));
    if (strlen(qmp) >= sizeof(dom->qmp_path))
        return gw_error_set(err, ENAMETOOLONG, "QMP socket path too long: %s", qmp);
    snprintf(dom->qmp_path, sizeof(dom->qmp_path), "%s", qmp);
    struct vmm_spawn s = { dm->vmm_path, &dom->def, qmp, log, fifo, vlog, incoming };
    int r = vmm_spawn(&s, pid, cfd, err);
    if (r < 0)
        return r;
    *pidfd = vmm_pidfd(*pid);
    if (*pidfd < 0) {
        int e = -*pidfd;
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0); /* our child, killed: reaped at once */
        close(*cfd);
        unlink(fifo);
        return gw_error_set(err, e, "pidfd_open: %s", strerror(e));
    }
    return 0;
}

/* Record the VMM as starting (pid, start time, QMP socket) before waiting
 * for it, so that a daemon that dies meanwhile leaves a status the next one
 * finds it by; or forget it again (pid 0). */
static void record_starting(struct daemon *dm, struct domain *dom, pid_t pid)
{
    pthread_mutex_lock(&dm->lock);
    dom->starting = pid > 0;
    dom->pid = pid;
    dom->pid_start = pid > 0 ? vmm_start_time(pid) : 0;
    struct gw_error e;
    gw_error_init(&e);
    if (domain_save_status(dm, dom, &e) < 0)
        log_error("domain '%s': cannot save status: %s", dom->def.name, e.msg);
    pthread_mutex_unlock(&dm->lock);
}

/* A start that failed after the fork: the VMM killed and reaped, the
 * console FIFO removed. */
static void start_failed(struct daemon *dm, struct domain *dom, pid_t pid, int pidfd, int cfd)
{
    char fifo[PATH_MAX];
    kill_and_reap(pid, pidfd);
    close(pidfd);
    close(cfd);
    domain_path(dm, dom, STORE_CONSOLE, fifo, sizeof(fifo));
    unlink(fifo);
    record_starting(dm, dom, 0);
}

/* The VMM may have stopped its guest (or the guest powered off) before
 * the monitor's event connection opened: those events are lost, so ask
 * it, as a reattach does. dm->lock held; the job slot is ours. */
static void sync_runstate(struct daemon *dm, struct domain *dom)
{
    struct json_object *ret = NULL;
    pthread_mutex_unlock(&dm->lock);
    int r = domain_qmp(dom, "query-status", NULL, &ret, NULL, NULL);
    pthread_mutex_lock(&dm->lock);
    const char *st = r == 0 ? qmp_json_get_str(ret, "status") : NULL;
    if (st && strcmp(st, "shutdown") == 0)
        dom->exit.shutdown_event = true;
    if (st && strcmp(st, "running") != 0 && dom->state == DOM_STATE_RUNNING)
        domain_set_state(dm, dom, DOM_STATE_PAUSED, DOM_REASON_UNKNOWN, DOM_EVENT_SUSPENDED,
                         DOM_DETAIL_PAUSED);
    json_object_put(ret);
}

static int start_vmm(struct daemon *dm, struct domain *dom, bool incoming, struct gw_error *err)
{
    pid_t pid;
    int pidfd = -1, cfd = -1;
    struct qmp_client *cmdq, *evq;
    int r = spawn(dm, dom, incoming, &pid, &pidfd, &cfd, err);
    if (r < 0)
        return r;
    record_starting(dm, dom, pid);
    r = domain_connect_vmm(dom->qmp_path, dom->def.name, pidfd, START_TIMEOUT_MS, &cmdq, &evq, err);
    if (r < 0) {
        char vlog[PATH_MAX], tail[256];
        domain_path(dm, dom, STORE_VMM_LOG, vlog, sizeof(vlog));
        start_failed(dm, dom, pid, pidfd, cfd);
        vmm_log_tail(vlog, tail, sizeof(tail));
        if (tail[0] && err) {
            char msg[GW_ERROR_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            err->code = 0;
            gw_error_set(err, -r, "%s (%s)", msg, tail);
        }
        return r;
    }
    pthread_mutex_lock(&dm->lock);
    dom->starting = false;
    dom->pidfd = pidfd;
    dom->console_fd = cfd;
    pthread_mutex_lock(&dom->qmp_lock);
    dom->qmp = cmdq;
    pthread_mutex_unlock(&dom->qmp_lock);
    dom->id = dm->next_id++;
    if (mig_fault("monitor-start-fail")) { /* test-only: as if no thread could be created */
        qmp_client_free(evq);
        r = gw_error_set(err, EAGAIN, "cannot start the monitor thread: injected fault");
    } else {
        r = monitor_start(dm, dom, evq, err);
    }
    if (r == 0 && incoming) /* paused until the migration's Finish resumes it */
        domain_set_state(dm, dom, DOM_STATE_PAUSED, DOM_REASON_MIGRATING, DOM_EVENT_STARTED,
                         DOM_DETAIL_MIGRATED);
    else if (r == 0)
        domain_set_state(dm, dom, DOM_STATE_RUNNING, DOM_REASON_BOOTED, DOM_EVENT_STARTED,
                         DOM_DETAIL_BOOTED);
    if (r == 0 && !incoming)
        sync_runstate(dm, dom);
    if (r < 0) { /* no monitor: undo by hand */
        dom->pidfd = dom->console_fd = -1;
        dom->id = -1;
    }
    pthread_mutex_unlock(&dm->lock);
    if (r < 0) {
        pthread_mutex_lock(&dom->qmp_lock);
        dom->qmp = NULL;
        pthread_mutex_unlock(&dom->qmp_lock);
        qmp_client_free(cmdq);
        start_failed(dm, dom, pid, pidfd, cfd);
    }
    return r;
}

/* A start that failed on this host (the VMM binary, its files, the fork,
 * the VMM exiting or not answering): OperationFailed, whatever errno the
 * failing call gave: ENOENT (a serial log in a directory that does not
 * exist, no VMM binary) is not NoDomain, EACCES not PermissionDenied,
 * EPROTO not ProtocolError (those classes are about the request). */
static int spawn_and_attach(struct daemon *dm, struct domain *dom, bool incoming,
                            struct gw_error *err)
{
    int r = start_vmm(dm, dom, incoming, err);
    if (r < 0 && r != -ETIMEDOUT && r != -ENOMEM) {
        if (err && err->code)
            err->code = EIO;
        r = -EIO;
    }
    return r;
}

int domain_spawn_and_attach(struct daemon *dm, struct domain *dom, struct gw_error *err)
{
    return spawn_and_attach(dm, dom, false, err);
}

int domain_spawn_incoming(struct daemon *dm, struct domain *dom, struct gw_error *err)
{
    return spawn_and_attach(dm, dom, true, err);
}

/* ---- request handlers ---- */

/* Look the domain up and take its job slot; with dm->lock held on success. */
static int begin(struct daemon *dm, struct json_object *args, const char *what, struct domain **dom,
                 struct gw_error *err)
{
    pthread_mutex_lock(&dm->lock);
    int r = daemon_lookup(dm, args, dom, err);
    if (r == 0)
        r = domain_job_begin(dm, dom, DOM_JOB_MODIFY, what, err);
    if (r < 0)
        pthread_mutex_unlock(&dm->lock);
    return r;
}

static int end(struct daemon *dm, struct domain *dom, int r)
{
    domain_job_end(dm, dom);
    pthread_mutex_unlock(&dm->lock);
    return r;
}

static int not_running(struct domain *dom, struct gw_error *err)
{
    return gw_error_set(err, ENOTCONN, "Requested operation is not valid: domain '%s' is not running",
                        dom->def.name);
}

/* The VMM's STOP or RESUME comes on the monitor's connection, apart from
 * the reply on the command connection, and may be read after it: a
 * suspend or resume that set the state from the reply alone left its
 * event to come later, after the next operation (a STOP handled after the
 * resume that followed paused the domain again, with a second pair of
 * events; the user's pause reason stayed for a later STOP of the VMM's
 * own). So wait, bounded, for the monitor to move the domain out of
 * state `from` (it handles the events in the VMM's order). dm->lock held,
 * the job slot ours. */
static void wait_monitor_leaves(struct daemon *dm, struct domain *dom, enum dom_state from)
{
    uint64_t deadline = mig_mono_ms() + EVENT_SYNC_MS;
    while (dom->state == from && dom->monitor_running && daemon_wait_step(dm, deadline))
        ;
}

static int h_start(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                   struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    int r = begin(dm, args, "start", &dom, err);
    if (r < 0)
        return r;
    if (dom_state_active(dom->state))
        return end(dm, dom, gw_error_set(err, EALREADY,
                                         "Requested operation is not valid: domain '%s' is already running",
                                         dom->def.name));
    domain_apply_next_def(dm, dom); /* a definition given while it ran */
    pthread_mutex_unlock(&dm->lock);
    r = domain_spawn_and_attach(dm, dom, err);
    if (r < 0)
        gw_error_prefix(err, "cannot start domain '%s'", dom->def.name);
    pthread_mutex_lock(&dm->lock);
    return end(dm, dom, r);
}

/* Signal a watched VMM through its pidfd, never its pid: the VMM may have
 * exited and been reaped (by its monitor, or by init for one an earlier
 * daemon started) while its monitor waits for dm->lock, its pid another
 * process's by now. Only a VMM left unwatched at a restart has no pidfd.
 * dm->lock held. */
static void signal_vmm(struct domain *dom, int sig)
{
    if (dom->pidfd >= 0)
        vmm_signal(dom->pidfd, sig);
    else if (dom->pid > 0)
        kill(dom->pid, sig);
}

static int h_destroy(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                     struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    int r = begin(dm, args, "destroy", &dom, err);
    if (r < 0)
        return r;
    if (!dom_state_active(dom->state))
        return end(dm, dom, not_running(dom, err));
    dom->exit.destroy_requested = true;
    signal_vmm(dom, SIGTERM);
    if (!monitor_wait_end(dm, dom, DESTROY_TERM_MS)) {
        log_warn("domain '%s': VMM %d ignored SIGTERM; killing it", dom->def.name, (int)dom->pid);
        signal_vmm(dom, SIGKILL);
        if (!monitor_wait_end(dm, dom, DESTROY_KILL_MS))
            r = gw_error_set(err, ETIMEDOUT, "domain '%s': the VMM did not exit", dom->def.name);
    }
    return end(dm, dom, r);
}

static int h_suspend(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                     struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    int r = begin(dm, args, "suspend", &dom, err);
    if (r < 0)
        return r;
    if (!dom_state_active(dom->state))
        return end(dm, dom, not_running(dom, err));
    if (dom->state == DOM_STATE_PAUSED)
        return end(dm, dom, 0);
    dom->pause_reason = DOM_REASON_USER;
    pthread_mutex_unlock(&dm->lock);
    r = domain_qmp(dom, "stop", NULL, NULL, NULL, err);
    pthread_mutex_lock(&dm->lock);
    if (r == 0)
        wait_monitor_leaves(dm, dom, DOM_STATE_RUNNING); /* it records the user's pause */
    if (r == 0 && dom->state == DOM_STATE_RUNNING) /* its STOP did not come in time */
        domain_set_state(dm, dom, DOM_STATE_PAUSED, DOM_REASON_USER, DOM_EVENT_SUSPENDED,
                         DOM_DETAIL_PAUSED);
    dom->pause_reason = DOM_REASON_UNKNOWN; /* a later STOP is not the user's */
    return end(dm, dom, r);
}

static int h_resume(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                    struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    int r = begin(dm, args, "resume", &dom, err);
    if (r < 0)
        return r;
    if (!dom_state_active(dom->state))
        return end(dm, dom, not_running(dom, err));
    if (dom->state != DOM_STATE_PAUSED)
        return end(dm, dom, gw_error_set(err, EALREADY,
                                         "Requested operation is not valid: domain '%s' is not paused",
                                         dom->def.name));
    pthread_mutex_unlock(&dm->lock);
    r = domain_qmp(dom, "cont", NULL, NULL, NULL, err);
    pthread_mutex_lock(&dm->lock);
    if (r == 0)
        wait_monitor_leaves(dm, dom, DOM_STATE_PAUSED);
    if (r == 0 && dom->state == DOM_STATE_PAUSED) /* its RESUME did not come in time */
        domain_set_state(dm, dom, DOM_STATE_RUNNING, DOM_REASON_UNPAUSED, DOM_EVENT_RESUMED,
                         DOM_DETAIL_UNPAUSED);
    return end(dm, dom, r);
}

/* The test guest powers off on the serial byte 'p' (docs/test-guest.md):
 * the fallback for a VMM without system_powerdown. */
static int serial_poweroff(struct daemon *dm, struct domain *dom, struct gw_error *err)
{
    pthread_mutex_lock(&dm->lock);
    ssize_t n = dom->console_fd >= 0 ? write(dom->console_fd, "p", 1) : -1;
    pthread_mutex_unlock(&dm->lock);
    if (n != 1)
        return gw_error_set(err, EIO, "cannot reach the guest's serial input to ask it to power off");
    return 0;
}

static int h_shutdown(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                      struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    int r = begin(dm, args, "shutdown", &dom, err);
    if (r < 0)
        return r;
    if (!dom_state_active(dom->state))
        return end(dm, dom, not_running(dom, err));
    bool test_guest = dom->def.test_guest;
    pthread_mutex_unlock(&dm->lock);
    const char *cls;
    struct gw_error e;
    gw_error_init(&e);
    r = domain_qmp(dom, "system_powerdown", NULL, NULL, &cls, &e);
    if (r < 0 && cls && strcmp(cls, QMP_ERR_NOT_FOUND) == 0) {
        if (test_guest)
            r = serial_poweroff(dm, dom, err);
        else
            r = gw_error_set(err, ENOTSUP,
                             "cannot shut down domain '%s': the VMM has no ACPI power button "
                             "(system_powerdown) to ask this guest to power off; use destroy",
                             dom->def.name);
    } else if (r < 0) {
        r = gw_error_set(err, -r, "%s", e.msg);
    }
    pthread_mutex_lock(&dm->lock);
    return end(dm, dom, r);
}

const struct daemon_command lifecycle_commands[] = {
    { "domain-start", h_start },
    { "domain-shutdown", h_shutdown },
    { "domain-destroy", h_destroy },
    { "domain-suspend", h_suspend },
    { "domain-resume", h_resume },
};
const size_t lifecycle_ncommands = sizeof(lifecycle_commands) / sizeof(lifecycle_commands[0]);
