/* At start-up: load the definitions and find running VMs again. */
#define LOG_PREFIX "recover"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/domain_store.h"
#include "daemon/domains.h"
#include "daemon/job.h"
#include "daemon/lifecycle.h"
#include "daemon/monitor.h"
#include "daemon/vmm_proc.h"
#include "qmp/qmp_client.h"
#include "qmp/qmp_json.h"

#define RECONNECT_TIMEOUT_MS 3000
#define START_WAIT_MS 20000    /* a VMM recorded while starting: as long as a start waits */
#define RECONNECT_TRIES 3 /* a VMM a migration job holds: connect attempts before giving up */

/* Does a migration job (or a job file that cannot be read: the safe side)
 * hold the domain? Read before any VMM is killed. */
static bool migration_job(struct daemon *dm, struct domain *dom)
{
    struct job j;
    int r = job_load(&j, dm->cfg.state_dir, dom->def.uuid, NULL);
    if (r == -ENOENT)
        return false;
    return r < 0 || (job_active(&j) && j.kind != JOB_KIND_MODIFY);
}

static enum dom_state vmm_runstate(struct qmp_client *q)
{
    struct json_object *ret = NULL;
    struct qmp_error qerr = { 0 };
    enum dom_state st = DOM_STATE_RUNNING;
    if (qmp_client_execute(q, "query-status", NULL, &ret, &qerr, RECONNECT_TIMEOUT_MS) == 0) {
        const char *s = qmp_json_get_str(ret, "status");
        if (s && strcmp(s, "running") != 0)
            st = DOM_STATE_PAUSED;
    }
    json_object_put(ret);
    return st;
}

/* Whether the status's QMP socket is this daemon's own run/NAME.qmp: the
 * same name in the same directory (compared as a file, however the state
 * directory was spelt when it was recorded; the socket itself may be gone).
 * A status copied from another daemon's state names that daemon's socket,
 * whose VMM this one must neither take over nor kill. */
static bool own_socket(struct daemon *dm, const struct domain *dom, const char *qmp)
{
    char mine[PATH_MAX], theirs[PATH_MAX];
    domain_path(dm, dom, STORE_QMP, mine, sizeof(mine));
    snprintf(theirs, sizeof(theirs), "%s", qmp);
    char *a = strrchr(mine, '/'), *b = strrchr(theirs, '/');
    if (!a || !b || strcmp(a, b) != 0)
        return false;
    *a = *b = 0;
    struct stat da, db;
    return stat(mine[0] ? mine : "/", &da) == 0 && stat(theirs[0] ? theirs : "/", &db) == 0 &&
           da.st_dev == db.st_dev && da.st_ino == db.st_ino;
}

/* Reattach to a VMM that should be running; 0 when it is back under watch. */
static int reattach(struct daemon *dm, struct domain *dom, const struct store_status *s,
                    struct gw_error *err)
{
    _Static_assert(sizeof(s->qmp) <= sizeof(dom->qmp_path), "QMP socket path");
    if (s->pid <= 0 || !s->qmp[0])
        return gw_error_set(err, EINVAL, "no pid or QMP socket recorded");
    if (!own_socket(dm, dom, s->qmp))
        return gw_error_set(err, EPERM, "its status names QMP socket %s, not this daemon's "
                            "run/%s.qmp (a status from another daemon's state?): that process "
                            "(%d) is left alone", s->qmp, dom->def.name, (int)s->pid);
    int pidfd = vmm_pidfd(s->pid);
    if (pidfd < 0)
        return gw_error_set(err, ESRCH, "VMM process %d is gone", (int)s->pid);
    struct qmp_client *cmdq, *evq;
    if (s->pid_start && vmm_start_time(s->pid) != s->pid_start) {
        close(pidfd);
        return gw_error_set(err, ESRCH, "VMM process %d is gone (the pid now names another "
                            "process)", (int)s->pid);
    }
    int tmo = s->starting ? START_WAIT_MS : RECONNECT_TIMEOUT_MS;
    int r = domain_connect_vmm(s->qmp, dom->def.name, pidfd, tmo, &cmdq, &evq, err);
    for (int i = 1; r < 0 && r != -ESRCH && i < RECONNECT_TRIES && migration_job(dm, dom); i++) {
        log_warn("domain '%s': VMM %d does not answer on QMP (%s); it may hold a migrating guest: "
                 "trying again", dom->def.name, (int)s->pid, err ? err->msg : "");
        r = domain_connect_vmm(s->qmp, dom->def.name, pidfd, RECONNECT_TIMEOUT_MS, &cmdq, &evq, err);
    }
    if (r < 0 && migration_job(dm, dom) && vmm_wait_gone(pidfd, 0) == false) {
        /* Maybe a post-copy guest's only copy: never killed. The domain is
         * marked crashed here (no VMM is watched); the job file stays for
         * the next start. */
        log_error("domain '%s': VMM %d does not answer on QMP and a migration job holds the "
                  "domain: left running unwatched, job kept; restart the daemon to try again",
                  dom->def.name, (int)s->pid);
        dom->vmm_unreachable = true;
        close(pidfd);
        return r;
    }
    if (r < 0) {
        /* Our VMM but unreachable: stop it rather than leave it running unseen
         * (a later start would run the VM twice). Another process: leave it. */
        if (vmm_is_ours(s->pid, s->qmp, s->pid_start)) {
            log_error("domain '%s': VMM %d does not answer on QMP; killing it", dom->def.name,
                      (int)s->pid);
            vmm_signal(pidfd, SIGKILL); /* the process checked above, never a reused pid */
            vmm_wait_gone(pidfd, 5000);
        } else {
            log_warn("domain '%s': process %d is not the VMM this daemon started (another command "
                     "line or start time: a reused pid); left alone", dom->def.name, (int)s->pid);
        }
        close(pidfd);
        return r;
    }
    char fifo[PATH_MAX];
    domain_path(dm, dom, STORE_CONSOLE, fifo, sizeof(fifo));
    snprintf(dom->qmp_path, sizeof(dom->qmp_path), "%s", s->qmp);
    dom->pid = s->pid;
    dom->pidfd = pidfd;
    dom->console_fd = vmm_console_open(fifo);
    if (dom->console_fd < 0)
        log_warn("domain '%s': no serial input (%s)", dom->def.name, strerror(-dom->console_fd));
    dom->qmp = cmdq;
    dom->id = s->id >= 0 ? s->id : dm->next_id++;
    if (dom->id >= dm->next_id)
        dm->next_id = dom->id + 1;
    dom->pid_start = vmm_start_time(s->pid);
    enum dom_state st = vmm_runstate(cmdq);
    dom->state = st;
    dom->reason = st == DOM_STATE_PAUSED ? (s->state == DOM_STATE_PAUSED && s->reason >= 0
                                                ? (enum dom_reason)s->reason : DOM_REASON_UNKNOWN)
                                         : (s->state == DOM_STATE_RUNNING && s->reason >= 0
                                                ? (enum dom_reason)s->reason
                                                : s->starting ? DOM_REASON_BOOTED
                                                              : DOM_REASON_UNPAUSED);
    r = monitor_start(dm, dom, evq, err);
    if (r < 0) {
        /* unwatched, it would run unseen: stop it (it answered as ours) */
        log_error("domain '%s': cannot watch VMM %d (%s); killing it", dom->def.name,
                  (int)s->pid, err ? err->msg : "");
        vmm_signal(pidfd, SIGKILL); /* the process checked above, never a reused pid */
        vmm_wait_gone(pidfd, 5000);
        qmp_client_free(dom->qmp);
        dom->qmp = NULL;
        close(pidfd);
        if (dom->console_fd >= 0)
            close(dom->console_fd);
        dom->pidfd = dom->console_fd = -1;
        dom->pid = 0;
        dom->pid_start = 0;
        dom->id = -1;
        dom->state = DOM_STATE_SHUTOFF;
    }
    return r;
}

/* Look for the domain's VMM where it would listen (run/NAME.qmp), whatever
 * the status says: a VMM started by a daemon that died before it recorded
 * it, or whose status is lost, must not be left running unseen (a later
 * start would run the guest twice). 0 and *s set for a reattach when the
 * process serving it is a VMM started for that socket. */
static int probe_socket(struct daemon *dm, struct domain *dom, struct store_status *s)
{
    char qmp[STORE_QMP_PATH_MAX];
    domain_path(dm, dom, STORE_QMP, qmp, sizeof(qmp));
    pid_t pid = vmm_socket_owner(qmp);
    if (pid <= 0 || !vmm_is_ours(pid, qmp, 0))
        return -1;
    int prev = s->state;
    memset(s, 0, sizeof(*s));
    s->state = DOM_STATE_RUNNING; /* reattach asks the VMM what it is doing */
    s->reason = s->id = -1;
    s->pid = pid;
    snprintf(s->qmp, sizeof(s->qmp), "%s", qmp);
    log_warn("domain '%s': a VMM (pid %d) serves its QMP socket although its status says %s: "
             "taking it back", dom->def.name, (int)pid, prev >= 0 ? dom_state_name(prev) : "nothing");
    return 0;
}

/* The status file is damaged (not missing): say so, keep it aside, and
 * look for the domain's VMM where it would listen, so that a running guest
 * is not left unseen (a later start would run it twice). 0 and *s filled
 * if a VMM of this domain answers there. */
static int status_damaged(struct daemon *dm, struct domain *dom, const char *path,
                          const struct gw_error *why, struct store_status *s)
{
    char bad[PATH_MAX + 8];
    snprintf(bad, sizeof(bad), "%s.bad", path);
    if (rename(path, bad) < 0)
        bad[0] = 0;
    log_error("domain '%s': %s%s%s", dom->def.name, why->msg, bad[0] ? "; kept as " : "", bad);
    memset(s, 0, sizeof(*s));
    s->state = s->reason = s->id = -1;
    return probe_socket(dm, dom, s);
}

/* A definition given while the domain ran (domains.c set_next_def): its VMM
 * runs with the live one saved in run/NAME.def, the persistent one (loaded
 * from STATE/domains) waits for the domain to stop. Without a VMM found
 * again the live one is only removed. */
static void load_live_def(struct daemon *dm, struct domain *dom)
{
    char path[PATH_MAX];
    domain_path(dm, dom, STORE_LIVE_DEF, path, sizeof(path));
    if (!dom_state_active(dom->state)) {
        unlink(path);
        return;
    }
    struct json_object *o = NULL;
    struct gw_error e;
    gw_error_init(&e);
    struct dom_def live;
    struct dom_def *next = NULL;
    int r = store_read_json(path, &o, &e);
    if (r == -ENOENT)
        return;
    if (r == 0)
        r = dom_def_from_json(o, &live, &e);
    json_object_put(o);
    if (r == 0 && strcmp(live.uuid, dom->def.uuid) != 0)
        r = gw_error_set(&e, EINVAL, "%s: not this domain's (uuid %s)", path, live.uuid);
    if (r == 0 && !(next = malloc(sizeof(*next))))
        r = gw_error_set(&e, ENOMEM, "out of memory");
    if (r < 0) {
        log_error("domain '%s': cannot read the definition its VMM runs with: %s; showing the "
                  "persistent one", dom->def.name, e.msg);
        if (r != -ENOENT)
            dom_def_fini(&live);
        return;
    }
    *next = dom->def;
    dom->def = live;
    dom->next_def = next;
}

static void recover_one(struct daemon *dm, struct domain *dom)
{
    char path[PATH_MAX];
    struct gw_error e;
    gw_error_init(&e);
    struct json_object *o = NULL;
    struct store_status s;
    memset(&s, 0, sizeof(s));
    s.state = s.reason = s.id = -1;
    domain_path(dm, dom, STORE_STATUS, path, sizeof(path));
    int r = store_read_json(path, &o, &e);
    bool found = false;
    if (r == 0)
        store_status_from_json(o, &s, NULL);
    else if (r != -ENOENT)
        found = status_damaged(dm, dom, path, &e, &s) == 0;
    gw_error_init(&e);
    bool was_active = s.state >= 0 && dom_state_active((enum dom_state)s.state);
    if (!was_active && !found && s.starting && s.pid > 0 &&
        vmm_is_ours(s.pid, s.qmp, s.pid_start)) {
        log_warn("domain '%s': its VMM (pid %d) was being started when the daemon stopped: "
                 "taking it back", dom->def.name, (int)s.pid);
        s.state = DOM_STATE_RUNNING;
        s.reason = -1;
        found = true;
    }
    if (!was_active && !found)
        found = probe_socket(dm, dom, &s) == 0;
    if (was_active || found) {
        if (reattach(dm, dom, &s, &e) == 0) {
            log_info("domain '%s': found its VMM again (pid %d, %s)", dom->def.name, (int)dom->pid,
                     dom_state_name(dom->state));
            domain_save_status(dm, dom, NULL);
        } else if (dom->vmm_unreachable) {
            /* held by its migration job (migrate_recover keeps it): the VMM
             * runs unwatched; its state as last saved, no QMP */
            dom->pid = s.pid;
            dom->id = s.id >= 0 ? s.id : dm->next_id++;
            dom->state = (enum dom_state)s.state;
            dom->reason = s.reason >= 0 ? (enum dom_reason)s.reason : DOM_REASON_UNKNOWN;
        } else if (was_active) {
            log_warn("domain '%s' was running but is lost: %s", dom->def.name, e.msg);
            dom->pid = 0;
            dom->id = -1;
            domain_set_state(dm, dom, DOM_STATE_SHUTOFF, DOM_REASON_CRASHED, DOM_EVENT_STOPPED,
                             DOM_DETAIL_FAILED);
        } else {
            log_warn("domain '%s': its VMM could not be taken back: %s", dom->def.name, e.msg);
            domain_save_status(dm, dom, NULL);
        }
    } else {
        if (s.state >= 0) {
            dom->state = (enum dom_state)s.state;
            dom->reason = s.reason >= 0 ? (enum dom_reason)s.reason : DOM_REASON_UNKNOWN;
        }
        if (r != 0 || s.starting) /* missing, damaged, or a start that never answered */
            domain_save_status(dm, dom, NULL);
    }
    load_live_def(dm, dom);
    json_object_put(o);
}

static void add_loaded(void *opaque, struct dom_def *def)
{
    struct daemon *dm = opaque;
    struct domain *dom = daemon_find_domain_uuid(dm, def->uuid) ? NULL : domain_new(def);
    if (!dom)
        log_error("cannot load domain '%s' (duplicate uuid or out of memory)", def->name);
    else {
        dom->next = dm->domains;
        dm->domains = dom;
    }
    dom_def_fini(def);
}

int domains_load(struct daemon *dm, struct gw_error *err)
{
    pthread_mutex_lock(&dm->lock);
    int r = store_load_defs(dm->cfg.state_dir, add_loaded, dm, err);
    for (struct domain *d = dm->domains; r == 0 && d; d = d->next)
        recover_one(dm, d);
    pthread_mutex_unlock(&dm->lock);
    return r;
}
