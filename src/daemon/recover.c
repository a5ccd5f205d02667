/* At start-up: load the definitions and find running VMs again. */
#define LOG_PREFIX "recover"
#include <errno.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
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

/* Reattach to a VMM that should be running; 0 when it is back under watch. */
static int reattach(struct daemon *dm, struct domain *dom, const struct store_status *s,
                    struct gw_error *err)
{
    _Static_assert(sizeof(s->qmp) <= sizeof(dom->qmp_path), "QMP socket path");
    if (s->pid <= 0 || !s->qmp[0])
        return gw_error_set(err, EINVAL, "no pid or QMP socket recorded");
    int pidfd = vmm_pidfd(s->pid);
    if (pidfd < 0)
        return gw_error_set(err, ESRCH, "VMM process %d is gone", (int)s->pid);
    struct qmp_client *cmdq, *evq;
    int r = domain_connect_vmm(s->qmp, dom->def.name, pidfd, RECONNECT_TIMEOUT_MS, &cmdq, &evq, err);
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
        if (vmm_is_domain(s->pid, dom->def.name)) {
            log_error("domain '%s': VMM %d does not answer on QMP; killing it", dom->def.name,
                      (int)s->pid);
            kill(s->pid, SIGKILL);
            vmm_wait_gone(pidfd, 5000);
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
    enum dom_state st = vmm_runstate(cmdq);
    dom->state = st;
    dom->reason = st == DOM_STATE_PAUSED ? (s->state == DOM_STATE_PAUSED && s->reason >= 0
                                                ? (enum dom_reason)s->reason : DOM_REASON_UNKNOWN)
                                         : (s->state == DOM_STATE_RUNNING && s->reason >= 0
                                                ? (enum dom_reason)s->reason : DOM_REASON_UNPAUSED);
    return monitor_start(dm, dom, evq, err);
}

/* The pid of whatever serves the domain's standard QMP socket (0: none). */
static pid_t qmp_socket_owner(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    struct ucred cred = { 0 };
    socklen_t len = sizeof(cred);
    if (strlen(path) >= sizeof(a.sun_path))
        return 0;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        cred.pid = 0;
    close(fd);
    return cred.pid;
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
    domain_path(dm, dom, STORE_QMP, s->qmp, sizeof(s->qmp));
    s->pid = qmp_socket_owner(s->qmp);
    if (s->pid <= 0 || !vmm_is_domain(s->pid, dom->def.name))
        return -1;
    s->state = DOM_STATE_RUNNING; /* reattach asks the VMM what it is doing */
    log_info("domain '%s': a VMM (pid %d) serves its QMP socket", dom->def.name, (int)s->pid);
    return 0;
}

static void recover_one(struct daemon *dm, struct domain *dom)
{
    char path[PATH_MAX];
    struct gw_error e;
    gw_error_init(&e);
    struct json_object *o = NULL;
    struct store_status s;
    domain_path(dm, dom, STORE_STATUS, path, sizeof(path));
    int r = store_read_json(path, &o, &e);
    if (r == -ENOENT || (r < 0 && status_damaged(dm, dom, path, &e, &s) < 0)) {
        domain_save_status(dm, dom, NULL);
        return;
    }
    gw_error_init(&e);
    if (r == 0)
        store_status_from_json(o, &s, NULL);
    if (s.state >= 0 && dom_state_active((enum dom_state)s.state)) {
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
        } else {
            log_warn("domain '%s' was running but is lost: %s", dom->def.name, e.msg);
            dom->pid = 0;
            dom->id = -1;
            domain_set_state(dm, dom, DOM_STATE_SHUTOFF, DOM_REASON_CRASHED, DOM_EVENT_STOPPED,
                             DOM_DETAIL_FAILED);
        }
    } else if (s.state >= 0) {
        dom->state = (enum dom_state)s.state;
        dom->reason = s.reason >= 0 ? (enum dom_reason)s.reason : DOM_REASON_UNKNOWN;
    }
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
