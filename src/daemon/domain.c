/* Domains at run time: lookup, the state transition helper, events, the
 * job slot, status persistence. Called with dm->lock held. */
#define LOG_PREFIX "domain"
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control.h"
#include "daemon/daemon.h"
#include "daemon/domain_store.h"
#include "daemon/migrate.h"

struct domain *domain_new(const struct dom_def *def)
{
    struct domain *dom = calloc(1, sizeof(*dom));
    if (!dom)
        return NULL;
    if (dom_def_copy(&dom->def, def) < 0) {
        free(dom);
        return NULL;
    }
    dom->state = DOM_STATE_SHUTOFF;
    dom->reason = DOM_REASON_UNKNOWN;
    dom->id = -1;
    dom->pid = 0;
    dom->pidfd = -1;
    dom->console_fd = -1;
    pthread_mutex_init(&dom->qmp_lock, NULL);
    return dom;
}

void domain_free(struct domain *dom)
{
    if (!dom)
        return;
    dom_def_fini(&dom->def);
    if (dom->next_def) {
        dom_def_fini(dom->next_def);
        free(dom->next_def);
    }
    pthread_mutex_destroy(&dom->qmp_lock);
    free(dom);
}

/* A domain id as an operator types it: decimal digits only, in range
 * (atoi took "4294967297" for 1), else -1. */
static int parse_id(const char *s)
{
    long long v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > INT_MAX)
            return -1;
    }
    return (int)v;
}

struct domain *daemon_find_domain_uuid(struct daemon *dm, const char *uuid)
{
    for (struct domain *d = dm->domains; d; d = d->next)
        if (strcasecmp(d->def.uuid, uuid) == 0)
            return d;
    return NULL;
}

struct domain *daemon_find_domain(struct daemon *dm, const char *key)
{
    for (struct domain *d = dm->domains; d; d = d->next)
        if (strcmp(d->def.name, key) == 0)
            return d;
    struct domain *byuuid = daemon_find_domain_uuid(dm, key);
    if (byuuid)
        return byuuid;
    int id = parse_id(key);
    if (id >= 0)
        for (struct domain *d = dm->domains; d; d = d->next)
            if (d->id >= 0 && d->id == id)
                return d;
    return NULL;
}

int daemon_lookup(struct daemon *dm, struct json_object *args, struct domain **dom,
                  struct gw_error *err)
{
    const char *key;
    int r = ctl_arg_str(args, "domain", true, &key, err);
    if (r < 0)
        return r;
    *dom = daemon_find_domain(dm, key);
    if (!*dom)
        return gw_error_set(err, ENOENT, "Domain not found: no domain with matching name '%s'", key);
    return 0;
}

void domain_path(struct daemon *dm, const struct domain *dom, int file, char *buf, size_t len)
{
    if (file == STORE_SERIAL_LOG && dom->def.serial_log) {
        snprintf(buf, len, "%s", dom->def.serial_log);
        return;
    }
    store_path(dm->cfg.state_dir, (enum store_file)file, dom->def.name, buf, len);
}

/* ---- status ---- */

int domain_save_status(struct daemon *dm, const struct domain *dom, struct gw_error *err)
{
    char path[PATH_MAX];
    domain_path(dm, dom, STORE_STATUS, path, sizeof(path));
    struct store_status st = { .state = (int)dom->state, .reason = (int)dom->reason, .id = -1 };
    snprintf(st.uuid, sizeof(st.uuid), "%s", dom->def.uuid);
    if (dom_state_active(dom->state) || dom->starting) {
        st.id = dom->starting ? -1 : dom->id;
        st.pid = (int)dom->pid;
        st.pid_start = dom->pid_start;
        st.starting = dom->starting;
        snprintf(st.qmp, sizeof(st.qmp), "%s", dom->qmp_path);
    }
    struct json_object *o = store_status_to_json(&st);
    int r = store_write_json(path, o, err);
    json_object_put(o);
    return r;
}

/* ---- live and persistent definitions ---- */

const struct dom_def *domain_persistent_def(const struct domain *dom)
{
    return dom->next_def ? dom->next_def : &dom->def;
}

void domain_apply_next_def(struct daemon *dm, struct domain *dom)
{
    if (!dom->next_def || dom_state_active(dom->state) || dom->starting)
        return;
    dom_def_fini(&dom->def);
    dom->def = *dom->next_def; /* the same name and uuid: every path stays */
    free(dom->next_def);
    dom->next_def = NULL;
    char path[PATH_MAX];
    domain_path(dm, dom, STORE_LIVE_DEF, path, sizeof(path));
    unlink(path);
    log_info("domain '%s': its new definition applies from now on", dom->def.name);
}

/* ---- events ---- */

void daemon_emit(struct daemon *dm, const struct domain *dom, const char *type,
                 struct json_object *data)
{
    struct json_object *ev = ctl_event_new(type, dom ? dom->def.name : NULL,
                                           dom ? dom->def.uuid : NULL, data);
    if (ev)
        event_bus_publish(dm->bus, ev);
}

void daemon_emit_lifecycle(struct daemon *dm, const struct domain *dom, enum dom_event ev,
                           enum dom_event_detail detail)
{
    struct json_object *data = json_object_new_object();
    json_object_object_add(data, "event", json_object_new_string(dom_event_name(ev)));
    json_object_object_add(data, "detail", json_object_new_string(dom_event_detail_name(detail)));
    json_object_object_add(data, "state", json_object_new_string(dom_state_name(dom->state)));
    json_object_object_add(data, "reason", json_object_new_string(dom_reason_name(dom->reason)));
    log_info("domain '%s': %s %s", dom->def.name, dom_event_name(ev), dom_event_detail_name(detail));
    daemon_emit(dm, dom, "lifecycle", data);
}

/* A pause or resume that the VMM reports on its own gets the migration's
 * wording: paused for a migration is "Suspended Migrated" (or
 * "Post-copy"), and a guest paused for a migration that runs again is a
 * cancelled migration ("Resumed Migrated", reason migration canceled),
 * unless the VMM gave up the switch-over and goes on migrating ("Resumed
 * Unpaused"). */
static void migration_detail(struct domain *dom, enum dom_state st, enum dom_reason *why,
                             int ev, enum dom_event_detail *detail)
{
    if (ev == DOM_EVENT_RESUMED && dom->switchover_given_back) {
        dom->switchover_given_back = false;
        return;
    }
    if (ev == DOM_EVENT_SUSPENDED && *detail == DOM_DETAIL_PAUSED) {
        if (*why == DOM_REASON_MIGRATING)
            *detail = DOM_DETAIL_MIGRATED;
        else if (*why == DOM_REASON_POSTCOPY)
            *detail = DOM_DETAIL_POSTCOPY;
        else if (*why == DOM_REASON_POSTCOPY_FAILED)
            *detail = DOM_DETAIL_POSTCOPY_ERROR;
    } else if (ev == DOM_EVENT_RESUMED && *detail == DOM_DETAIL_UNPAUSED &&
               st == DOM_STATE_RUNNING && dom->state == DOM_STATE_PAUSED &&
               dom->reason == DOM_REASON_MIGRATING && dom->job == DOM_JOB_MIGRATION_OUT) {
        *detail = DOM_DETAIL_MIGRATED;
        *why = DOM_REASON_MIGRATION_CANCELED;
    }
}

int domain_set_state(struct daemon *dm, struct domain *dom, enum dom_state st, enum dom_reason why,
                     int ev, enum dom_event_detail detail)
{
    migration_detail(dom, st, &why, ev, &detail);
    if (!dom_transition_ok(dom->state, st)) {
        log_warn("domain '%s': refusing transition %s -> %s", dom->def.name,
                 dom_state_name(dom->state), dom_state_name(st));
        return -EINVAL;
    }
    bool same = dom->state == st;
    dom->state = st;
    dom->reason = why;
    struct gw_error e;
    gw_error_init(&e);
    if (domain_save_status(dm, dom, &e) < 0)
        log_error("domain '%s': cannot save status: %s", dom->def.name, e.msg);
    if (ev >= 0 && !same)
        daemon_emit_lifecycle(dm, dom, (enum dom_event)ev, detail);
    if (dom->job == DOM_JOB_NONE) /* stopped by itself: a waiting definition applies */
        domain_apply_next_def(dm, dom);
    return 0;
}

/* ---- the job slot ---- */

void daemon_deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

bool daemon_wait_step(struct daemon *dm, uint64_t deadline_ms)
{
    if (mig_mono_ms() >= deadline_ms)
        return false;
    struct timespec ts;
    daemon_deadline_in(&ts, 100);
    pthread_cond_timedwait(&dm->cond, &dm->lock, &ts);
    return true;
}

int domain_job_begin(struct daemon *dm, struct domain **domp, enum dom_job kind, const char *what,
                     struct gw_error *err)
{
    struct timespec deadline;
    daemon_deadline_in(&deadline, DAEMON_JOB_WAIT_MS);
    char uuid[DOM_UUID_LEN + 1], name[DOM_NAME_MAX + 1];
    strcpy(uuid, (*domp)->def.uuid);
    strcpy(name, (*domp)->def.name);
    for (;;) {
        struct domain *dom = daemon_find_domain_uuid(dm, uuid);
        if (!dom)
            return gw_error_set(err, ENOENT, "Domain not found: domain '%s' was undefined", name);
        int r = dom_job_check(dom->job, name, what, err);
        if (r == 0) {
            dom->job = kind;
            snprintf(dom->job_what, sizeof(dom->job_what), "%s", what);
            *domp = dom;
            return 0;
        }
        if (r != -EAGAIN)
            return r;
        if (pthread_cond_timedwait(&dm->cond, &dm->lock, &deadline) == ETIMEDOUT) {
            /* dom may have been undefined (freed) during the wait */
            dom = daemon_find_domain_uuid(dm, uuid);
            if (!dom)
                return gw_error_set(err, ENOENT, "Domain not found: domain '%s' was undefined",
                                    name);
            return gw_error_set(err, EBUSY,
                                "Timed out during operation: cannot acquire state change lock "
                                "(held by %s)", dom->job_what[0] ? dom->job_what
                                                                 : dom_job_name(dom->job));
        }
    }
}

void domain_job_end(struct daemon *dm, struct domain *dom)
{
    dom->job = DOM_JOB_NONE;
    dom->job_what[0] = '\0';
    domain_apply_next_def(dm, dom);
    pthread_cond_broadcast(&dm->cond);
}
