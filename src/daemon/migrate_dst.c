/* The destination of a migration: migration-prepare, migration-finish,
 * migration-abort, migration-status, migration-prepare-resume, and the
 * watcher thread that follows an incoming VMM (discards it when the stream
 * fails or Finish never comes; completes a post-copy job). See migrate.h
 * and docs/migration-protocol.md. */
#define LOG_PREFIX "migrate-dst"
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control.h"
#include "daemon/domain_store.h"
#include "daemon/lifecycle.h"
#include "daemon/migrate.h"
#include "daemon/migrate_peer.h"
#include "daemon/monitor.h"
#include "daemon/vmm_proc.h"

#define DST_KILL_WAIT_MS   10000
#define DST_COMPLETE_WAIT_MS 10000   /* Finish (pre-copy): the stream's last bytes may lag */

/* ---- domains created by Prepare ---- */

void mig_forget_domain(struct daemon *dm, struct domain *dom)
{
    for (struct domain **p = &dm->domains; *p; p = &(*p)->next)
        if (*p == dom) {
            *p = dom->next;
            break;
        }
    monitor_join(dom);
    store_remove_domain(dm->cfg.state_dir, dom->def.name);
    daemon_emit_lifecycle(dm, dom, DOM_EVENT_UNDEFINED, DOM_DETAIL_REMOVED);
    domain_free(dom);
    pthread_cond_broadcast(&dm->cond);
}

/* (locked) Put back the definition a failed Prepare replaced (same name
 * and UUID: Prepare refuses another name), in memory and on disk. */
static void restore_def(struct daemon *dm, struct domain *dom, struct dom_def **prev)
{
    if (!*prev)
        return;
    dom_def_fini(&dom->def);
    dom->def = **prev;
    free(*prev);
    *prev = NULL;
    struct gw_error e;
    gw_error_init(&e);
    if (store_save_def(dm->cfg.state_dir, &dom->def, &e) < 0)
        log_error("domain '%s': cannot restore its definition: %s", dom->def.name, e.msg);
    else
        log_info("domain '%s': its definition from before the migration is restored",
                 dom->def.name);
}

/* (locked) The begin cookie's definition replaces dom's; *prev: the old
 * one (to restore_def on failure). */
static int replace_def(struct domain *dom, const struct mig_begin *b, struct dom_def **prev,
                       struct gw_error *err)
{
    struct dom_def copy;
    *prev = malloc(sizeof(**prev));
    if (!*prev || dom_def_copy(&copy, &b->def) < 0) {
        free(*prev);
        *prev = NULL;
        return gw_error_set(err, ENOMEM, "out of memory");
    }
    copy.serial_log = dom->def.serial_log ? strdup(dom->def.serial_log) : NULL;
    **prev = dom->def;
    dom->def = copy;
    return 0;
}

/* (locked) The domain the incoming job runs in: an inactive one with the
 * same UUID (and name: mig_prepare_check), or a new one. *prev: the
 * definition replaced (NULL for a new domain). */
static int take_domain(struct daemon *dm, const struct mig_begin *b, struct domain **out,
                       bool *created, struct dom_def **prev, struct gw_error *err)
{
    struct domain *dom = daemon_find_domain_uuid(dm, b->head.uuid);
    *created = dom == NULL;
    *prev = NULL;
    if (!dom) {
        dom = domain_new(&b->def);
        if (!dom)
            return gw_error_set(err, ENOMEM, "out of memory");
        dom->next = dm->domains;
        dm->domains = dom;
    } else if (replace_def(dom, b, prev, err) < 0) {
        return -ENOMEM;
    }
    int r = store_save_def(dm->cfg.state_dir, &dom->def, err);
    if (r == 0)
        r = domain_job_begin(dm, &dom, DOM_JOB_MIGRATION_IN, "migrate", err);
    if (r < 0 && *created)
        mig_forget_domain(dm, dom);
    else if (r < 0)
        restore_def(dm, dom, prev);
    *out = r < 0 ? NULL : dom;
    return r;
}

static void prepare_facts(struct daemon *dm, const struct mig_begin *b, struct mig_prepare_facts *f)
{
    memset(f, 0, sizeof(*f));
    struct domain *byuuid = daemon_find_domain_uuid(dm, b->head.uuid);
    if (byuuid) {
        f->uuid_defined = true;
        f->uuid_name = byuuid->def.name;
        f->uuid_active = dom_state_active(byuuid->state);
        f->uuid_job = byuuid->job != DOM_JOB_NONE;
    }
    for (struct domain *d = dm->domains; d; d = d->next)
        if (strcmp(d->def.name, b->def.name) == 0 && strcasecmp(d->def.uuid, b->head.uuid) != 0) {
            f->name_other_uuid = true;
            f->name_other_active = dom_state_active(d->state);
        }
    f->local_postcopy = mig_host_postcopy_supported();
}

/* ---- the incoming VMM ---- */

static bool port_free(const char *host, unsigned port)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
    struct addrinfo *res;
    char ps[16];
    snprintf(ps, sizeof(ps), "%u", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0)
        return false;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) == 0;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return ok;
}

static int qmp_caps(struct domain *dom, bool postcopy, struct gw_error *err)
{
    static const char *const names[] = { "events", "postcopy-ram" };
    bool on[] = { true, postcopy };
    return mig_vmm_set_caps(dom, names, on, 2, err);
}

/* migrate-incoming (or migrate-recover) on the first free port of our range. */
static int listen_incoming(struct domain *dom, const char *cmd, const char *host, char *uri,
                           size_t len, struct gw_error *err)
{
    int r = gw_error_set(NULL, EADDRINUSE, "-");
    for (unsigned p = MIG_PORT_MIN; p <= MIG_PORT_MAX; p++) {
        if (!port_free(host, p))
            continue;
        mig_tcp_uri(uri, len, host, p);
        struct json_object *a = json_object_new_object();
        json_object_object_add(a, "uri", json_object_new_string(uri));
        struct gw_error e;
        gw_error_init(&e);
        r = domain_qmp(dom, cmd, a, NULL, NULL, &e);
        if (r == 0)
            return 0;
        if (!strstr(e.msg, "in use"))
            return gw_error_set(err, -r, "%s on %s: %s", cmd, uri, e.msg);
    }
    return gw_error_set(err, EADDRINUSE, "no free migration port on %s (%d-%d)", host,
                        MIG_PORT_MIN, MIG_PORT_MAX);
}

static int start_incoming(struct daemon *dm, struct domain *dom, const struct mig_begin *b,
                          char *uri, size_t len, struct gw_error *err)
{
    int r = domain_spawn_incoming(dm, dom, err);
    if (r < 0)
        return r;
    /* Only Finish resumes the guest: without this stop the VMM would start
     * it when the stream completes, before Finish (two copies running). */
    if ((r = domain_qmp(dom, "stop", NULL, NULL, NULL, err)) < 0) {
        gw_error_prefix(err, "stop during inmigrate (the guest would start before Finish)");
        return r;
    }
    if ((r = qmp_caps(dom, (b->flags & JOB_F_POSTCOPY) != 0, err)) < 0)
        return r;
    return listen_incoming(dom, "migrate-incoming", b->dest_host, uri, len, err);
}

void mig_dst_restore_def(struct daemon *dm, struct domain *dom, struct mig_run *run)
{
    restore_def(dm, dom, &run->prev_def);
}

void mig_dst_discard(struct daemon *dm, const char *uuid, const char *msg)
{
    pthread_mutex_lock(&dm->lock);
    struct domain *dom = daemon_find_domain_uuid(dm, uuid);
    struct mig_run *run = mig_run_find(dm, uuid);
    if (!dom || !run || run->job.kind != JOB_KIND_MIGRATION_IN || !job_active(&run->job)) {
        pthread_mutex_unlock(&dm->lock);
        return;
    }
    log_warn("domain '%s': discarding the incoming migration: %s", dom->def.name, msg);
    if (dom_state_active(dom->state) && dom->pid > 0) {
        dom->exit.migration_failed = true;
        if (dom->pidfd >= 0) /* the process, never a reused pid */
            vmm_signal(dom->pidfd, SIGKILL);
        else /* a VMM left unwatched at a restart: no pidfd kept */
            kill(dom->pid, SIGKILL);
        monitor_wait_end(dm, dom, DST_KILL_WAIT_MS);
    }
    mig_job_end(dm, dom, run, false, msg);
    if (run->watcher) /* the watcher may be using dom: it releases the slot (or the domain) */
        dom->job = DOM_JOB_MIGRATION_IN;
    else if (run->created)
        mig_forget_domain(dm, dom);
    else
        mig_dst_restore_def(dm, dom, run);
    pthread_mutex_unlock(&dm->lock);
}

/* ---- migration-prepare ---- */

static int prepare_locked(struct daemon *dm, const struct mig_begin *b, struct domain **dom,
                          struct mig_run **run, struct gw_error *err)
{
    struct mig_prepare_facts f;
    prepare_facts(dm, b, &f);
    int r = mig_prepare_check(b, &f, err);
    bool created = false;
    struct dom_def *prev = NULL;
    struct mig_run *old = mig_run_find(dm, b->head.uuid);
    if (r == 0 && old && old->preparing) /* a Prepare of the last job is still at work */
        r = gw_error_set(err, EEXIST, "domain '%s' (uuid %s) is busy with a Prepare on the "
                         "destination", b->def.name, b->head.uuid);
    if (r < 0 || (r = take_domain(dm, b, dom, &created, &prev, err)) < 0)
        return r;
    *run = mig_run_get(dm, b->head.uuid);
    if (!*run)
        r = gw_error_set(err, ENOMEM, "out of memory");
    else
        r = job_init(&(*run)->job, JOB_KIND_MIGRATION_IN, b->head.job, b->head.uuid, b->def.name,
                     mig_wall_ms(), err);
    if (r == 0) {
        mig_run_drop_prev_def(*run);
        (*run)->prev_def = prev;
        prev = NULL;
        (*run)->job.flags = b->flags;
        (*run)->created = created;
        (*run)->have_info = false;
        (*run)->finish_postcopy = false; /* a new job: nothing known of its mode */
        (*run)->t0_ms = mig_mono_ms();
        snprintf((*run)->dest_host, sizeof((*run)->dest_host), "%s", b->dest_host);
        r = mig_job_save(dm, *run);
    }
    if (r == 0)
        (*run)->preparing = true; /* until h_prepare is done with the domain */
    if (r < 0) {
        domain_job_end(dm, *dom);
        if (created)
            mig_forget_domain(dm, *dom);
        else if (prev)
            restore_def(dm, *dom, &prev);
        else if (*run)
            mig_dst_restore_def(dm, *dom, *run);
    }
    return r;
}

static struct json_object *prepare_reply(const struct mig_begin *b, const char *uri)
{
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    struct json_object *o = json_object_new_object(), *c = json_object_new_object(),
                       *h = json_object_new_object(), *f = json_object_new_object();
    json_object_object_add(o, "job", json_object_new_string(b->head.job));
    json_object_object_add(o, "uuid", json_object_new_string(b->head.uuid));
    json_object_object_add(o, "uri", json_object_new_string(uri));
    json_object_object_add(h, "name", json_object_new_string(host));
    json_object_object_add(c, "host", h);
    json_object_object_add(f, "postcopy", json_object_new_boolean((b->flags & JOB_F_POSTCOPY) != 0));
    json_object_object_add(c, "features", f);
    json_object_object_add(o, "cookie", c);
    return o;
}

static void set_preparing_locked(struct daemon *dm, struct mig_run *run, bool on)
{
    run->preparing = on;
    pthread_cond_broadcast(&dm->cond);
}

static int h_prepare(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                     struct json_object **ret, struct gw_error *err)
{
    struct mig_begin b;
    struct domain *dom = NULL;
    struct mig_run *run;
    char uri[JOB_URI_MAX];
    int r = mig_begin_from_json(args, &b, err);
    if (r < 0)
        goto out;
    pthread_mutex_lock(&dm->lock);
    r = prepare_locked(dm, &b, &dom, &run, err);
    pthread_mutex_unlock(&dm->lock);
    if (r < 0)
        goto out;
    log_info("domain '%s': incoming migration %s from %s", b.def.name, b.head.job, b.src_host);
    r = start_incoming(dm, dom, &b, uri, sizeof(uri), err);
    pthread_mutex_lock(&dm->lock);
    if (r == 0) {
        snprintf(run->job.migrate_uri, sizeof(run->job.migrate_uri), "%s", uri);
        run->job.vmm_pid = dom->pid;
        mig_job_save(dm, run);
        r = mig_dst_watch(dm, run);
    }
    if (r == 0)
        set_preparing_locked(dm, run, false);
    pthread_mutex_unlock(&dm->lock);
    if (r < 0) {
        /* discarded while still preparing: no Finish or abort uses dom meanwhile */
        gw_error_prefix(err, "cannot prepare the incoming migration of '%s'", b.def.name);
        mig_dst_discard(dm, b.head.uuid, err->msg);
        pthread_mutex_lock(&dm->lock);
        set_preparing_locked(dm, run, false);
        pthread_mutex_unlock(&dm->lock);
        goto out;
    }
    *ret = prepare_reply(&b, uri);
out:
    mig_begin_fini(&b);
    return r;
}

/* ---- migration-finish ---- */

/* (locked) The job of a message, in one of the phases allowed. */
static int find_job(struct daemon *dm, const struct mig_msg_head *h, struct domain **dom,
                    struct mig_run **run, struct gw_error *err)
{
    *dom = daemon_find_domain_uuid(dm, h->uuid);
    *run = mig_run_find(dm, h->uuid);
    if (!*dom || !*run || (*run)->job.kind != JOB_KIND_MIGRATION_IN ||
        strcmp((*run)->job.id, h->job) != 0 || !job_active(&(*run)->job))
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: no incoming "
                            "migration job %s for domain %s here", h->job, h->uuid);
    return 0;
}

/* Wait for the incoming VMM to reach what Finish needs: the whole guest
 * (completed) or its state with pages to follow (postcopy-active; the
 * mode is then the VMM's, mig_finish_postcopy()). *ji: its last answer
 * (zero when it gave none). */
static int wait_arrived(struct daemon *dm, struct domain *dom, struct mig_run *run,
                        struct jobinfo *ji, struct gw_error *err)
{
    uint64_t deadline = mig_mono_ms() + DST_COMPLETE_WAIT_MS;
    memset(ji, 0, sizeof(*ji));
    for (;;) {
        struct jobinfo now;
        int r = mig_query(dm, dom, run, JOBINFO_OP_MIGRATION_IN, mig_mono_ms() - run->t0_ms, &now, err);
        if (r < 0)
            return r;
        *ji = now;
        pthread_mutex_lock(&dm->lock);
        run->info = now;
        run->have_info = true;
        pthread_mutex_unlock(&dm->lock);
        if (strcmp(now.status, "completed") == 0 || strcmp(now.status, "postcopy-active") == 0)
            return 0;
        if (strcmp(now.status, "failed") == 0 || strcmp(now.status, "cancelled") == 0 ||
            mig_mono_ms() > deadline)
            return gw_error_set(err, EIO, "the incoming migration did not complete (status %s%s%s)",
                                now.status[0] ? now.status : "none", now.errmsg[0] ? ": " : "",
                                now.errmsg);
        usleep(50 * 1000);
    }
}

/* Resume the guest here: `cont` first, the state from its result (so that
 * migration-status never says running for a guest that does not run). */
static int resume_here(struct daemon *dm, struct domain *dom, struct mig_run *run, bool postcopy,
                       struct gw_error *err)
{
    if (mig_fault("dst-finish-fail"))
        return gw_error_set(err, EIO, "cont refused (injected fault dst-finish-fail)");
    pthread_mutex_lock(&dm->lock);
    if ((run->job.flags & JOB_F_PAUSED) && !postcopy) {
        /* --suspend, or a guest its user had paused: it is ours now, paused. */
        mig_set_state(dm, dom, DOM_STATE_PAUSED, DOM_REASON_USER, DOM_EVENT_SUSPENDED,
                      DOM_DETAIL_PAUSED);
        run->created = false;
        pthread_mutex_unlock(&dm->lock);
        return 0;
    }
    dom->resume_pending = true;
    pthread_mutex_unlock(&dm->lock);
    int r = domain_qmp(dom, "cont", NULL, NULL, NULL, err);
    pthread_mutex_lock(&dm->lock);
    dom->resume_pending = false;
    if (r == 0) {
        mig_set_state(dm, dom, DOM_STATE_RUNNING, postcopy ? DOM_REASON_POSTCOPY : DOM_REASON_MIGRATED,
                      DOM_EVENT_RESUMED, postcopy ? DOM_DETAIL_POSTCOPY : DOM_DETAIL_MIGRATED);
        run->created = false; /* the domain is persistent here now */
    }
    pthread_mutex_unlock(&dm->lock);
    return r;
}

static struct json_object *finish_reply(const struct mig_msg_head *h, const char *outcome,
                                        struct mig_run *run)
{
    struct json_object *o = json_object_new_object(), *c = json_object_new_object();
    json_object_object_add(o, "job", json_object_new_string(h->job));
    json_object_object_add(o, "uuid", json_object_new_string(h->uuid));
    json_object_object_add(o, "outcome", json_object_new_string(outcome));
    if (run->have_info)
        json_object_object_add(c, "stats", jobinfo_to_json(&run->info));
    json_object_object_add(o, "cookie", c);
    return o;
}

/* (locked) Finish for a job no longer active here: when the guest already
 * runs here for it, answer running again (the first answer was lost). */
static bool finish_again(struct daemon *dm, const struct mig_finish *f, struct json_object **ret)
{
    struct domain *dom = daemon_find_domain_uuid(dm, f->head.uuid);
    struct mig_run *run = mig_run_find(dm, f->head.uuid);
    bool kept_paused = run && (run->job.flags & JOB_F_PAUSED) && dom && dom->state == DOM_STATE_PAUSED;
    bool running = dom && (dom->state == DOM_STATE_RUNNING || kept_paused);
    if (!mig_finish_already_running(run ? &run->job : NULL, f, running))
        return false;
    log_info("domain '%s': Finish of job %s again: the guest runs here", f->head.uuid, f->head.job);
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "job", json_object_new_string(f->head.job));
    json_object_object_add(o, "uuid", json_object_new_string(f->head.uuid));
    json_object_object_add(o, "outcome", json_object_new_string("running"));
    struct json_object *c = json_object_new_object();
    if (run && run->have_completed)
        json_object_object_add(c, "stats", jobinfo_to_json(&run->completed));
    json_object_object_add(o, "cookie", c);
    *ret = o;
    return true;
}

/* (locked) Finish for the active job: phase finish saved, and the mode the
 * watcher goes by until the VMM says: post-copy when Finish says so or the
 * job is known here as post-copy (a Finish sent again never turns it
 * into a pre-copy one). */
static int finish_begin(struct daemon *dm, struct mig_run *run, const struct mig_finish *f,
                        struct gw_error *err)
{
    int r = run->job.phase == JOB_PHASE_FINISH ? 0 : mig_job_phase(dm, run, JOB_PHASE_FINISH, err);
    if (r == 0)
        run->finish_postcopy = f->postcopy || run->finish_postcopy || run->job.postcopy_started;
    return r;
}

/* Wait for the VMM and resume the guest in the mode it says (*postcopy:
 * what was known before, then that mode). */
static int finish_arrive(struct daemon *dm, struct domain *dom, struct mig_run *run,
                         bool *postcopy, struct gw_error *err)
{
    struct jobinfo ji;
    int r = wait_arrived(dm, dom, run, &ji, err);
    *postcopy = mig_finish_postcopy(*postcopy, ji.status, ji.postcopy_started);
    pthread_mutex_lock(&dm->lock);
    if (job_active(&run->job))
        run->finish_postcopy = *postcopy;
    if (*postcopy)
        mig_job_note_postcopy(dm, run);
    pthread_mutex_unlock(&dm->lock);
    return r == 0 ? resume_here(dm, dom, run, *postcopy, err) : r;
}

/* After the guest was resumed here: the answer; a pre-copy job ends here
 * (a post-copy one when the watcher sees the VMM complete). */
static struct json_object *finish_done(struct daemon *dm, struct domain *dom, struct mig_run *run,
                                       const struct mig_finish *f, bool postcopy)
{
    if (mig_fault("dst-finish-lost")) {
        log_error("injected fault dst-finish-lost: exiting before answering Finish");
        _exit(99);
    }
    pthread_mutex_lock(&dm->lock);
    struct json_object *ret = finish_reply(&f->head, "running", run);
    if (!postcopy && job_active(&run->job) && strcmp(run->job.id, f->head.job) == 0)
        mig_job_end(dm, dom, run, true, NULL);
    pthread_mutex_unlock(&dm->lock);
    return ret;
}

static int discard_for_source(struct daemon *dm, const struct mig_msg_head *h, const char *why,
                              struct gw_error *err);

#define DST_FINISH_BUSY_WAIT_MS (DST_COMPLETE_WAIT_MS + 5000)
#define DST_PREPARE_BUSY_WAIT_MS 15000 /* a Prepare still starting its VMM */

/* (locked) Wait, bounded by wait_ms, until no handler of the uuid's job is
 * at work: its Prepare (preparing) or its Finish (finishing, when
 * `finishing`). False when one still is. */
static bool wait_idle(struct daemon *dm, const char *uuid, bool finishing, uint64_t wait_ms)
{
    uint64_t deadline = mig_mono_ms() + wait_ms;
    struct mig_run *run;
    while ((run = mig_run_find(dm, uuid)) && (run->preparing || (finishing && run->finishing)))
        if (!daemon_wait_step(dm, deadline))
            return false;
    return true;
}

/* (locked) A Finish or abort that came while Prepare is still at work (it
 * uses the domain without the lock): wait for it, bounded; -ENOTCONN when
 * it has not ended (nothing was done). */
static int wait_prepared(struct daemon *dm, const struct mig_msg_head *h, struct gw_error *err)
{
    if (wait_idle(dm, h->uuid, false, DST_PREPARE_BUSY_WAIT_MS))
        return 0;
    log_warn("job %s: a message for it came while its Prepare is still at work: refused", h->job);
    return gw_error_set(err, ENOTCONN, "Requested operation is not valid: job %s is still being "
                        "prepared here (its VMM is starting); try again", h->job);
}

/* (locked) A Finish sent again while the first one's handler is at work
 * (its answer was lost): wait for that one to end, bounded; false when it
 * did not (the caller answers prepared: the source keeps its guest paused). */
static bool wait_not_finishing(struct daemon *dm, const char *uuid)
{
    return wait_idle(dm, uuid, true, DST_FINISH_BUSY_WAIT_MS);
}

static void set_finishing(struct daemon *dm, struct mig_run *run, bool on)
{
    pthread_mutex_lock(&dm->lock);
    run->finishing = on;
    pthread_cond_broadcast(&dm->cond);
    pthread_mutex_unlock(&dm->lock);
}

/* Finish after finish_begin: wait for the VMM, resume the guest, answer. */
static int finish_run(struct daemon *dm, struct domain *dom, struct mig_run *run,
                      const struct mig_finish *f, bool postcopy, struct json_object **ret,
                      struct gw_error *err)
{
    struct gw_error e;
    gw_error_init(&e);
    int r = finish_arrive(dm, dom, run, &postcopy, &e);
    if (r < 0 && postcopy) {
        pthread_mutex_lock(&dm->lock);
        mig_dst_postcopy_failed(dm, dom, run, e.msg);
        *ret = finish_reply(&f->head, "postcopy-failed", run);
        pthread_mutex_unlock(&dm->lock);
        return 0;
    }
    if (r < 0) {
        mig_dst_discard(dm, f->head.uuid, e.msg);
        return gw_error_set(err, EIO, "%s", e.msg);
    }
    *ret = finish_done(dm, dom, run, f, postcopy);
    return 0;
}

static int h_finish(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                    struct json_object **ret, struct gw_error *err)
{
    struct mig_finish f;
    struct domain *dom = NULL;
    struct mig_run *run;
    int r = mig_finish_from_json(args, &f, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&dm->lock);
    if ((r = wait_prepared(dm, &f.head, err)) < 0) {
        pthread_mutex_unlock(&dm->lock);
        return r;
    }
    if (!wait_not_finishing(dm, f.head.uuid)) {
        pthread_mutex_unlock(&dm->lock);
        log_warn("job %s: Finish again while the first is still at work: answered prepared", f.head.job);
        *ret = finish_reply(&f.head, "prepared", mig_run_find(dm, f.head.uuid));
        return 0;
    }
    r = find_job(dm, &f.head, &dom, &run, err);
    if (r < 0 && finish_again(dm, &f, ret)) {
        pthread_mutex_unlock(&dm->lock);
        return 0;
    }
    if (r == 0 && !f.cancelled)
        r = finish_begin(dm, run, &f, err);
    bool postcopy = r == 0 && run->finish_postcopy;
    if (r == 0 && !f.cancelled)
        run->finishing = true;
    pthread_mutex_unlock(&dm->lock);
    if (r < 0)
        return r;
    if (f.cancelled) {
        if ((r = discard_for_source(dm, &f.head, "the source cancelled the migration", err)) < 0)
            return r;
        *ret = json_object_new_object();
        json_object_object_add(*ret, "outcome", json_object_new_string("failed"));
        return 0;
    }
    r = finish_run(dm, dom, run, &f, postcopy, ret, err);
    set_finishing(dm, run, false);
    return r;
}

/* ---- migration-abort, migration-status, migration-prepare-resume ---- */

/* May the incoming VMM hold a guest handed over by post-copy
 * (mig_vmm_may_have_switched: true when it does not say)? False when it
 * is gone: nothing is left to lose. */
static bool vmm_switched(struct daemon *dm, struct domain *dom)
{
    pthread_mutex_lock(&dm->lock);
    bool active = dom_state_active(dom->state);
    pthread_mutex_unlock(&dm->lock);
    if (!active)
        return false;
    struct mig_vmm_view v;
    mig_vmm_view(dom, &v);
    return mig_vmm_may_have_switched(v.answered, v.status, v.said, v.started);
}

/* migration-abort, and migration-finish with cancelled: discard the
 * incoming VMM, unless the guest may be ours alone (mig_abort_allowed). */
static int discard_for_source(struct daemon *dm, const struct mig_msg_head *h, const char *why,
                              struct gw_error *err)
{
    struct domain *dom = NULL;
    struct mig_run *run;
    pthread_mutex_lock(&dm->lock);
    int r = wait_prepared(dm, h, err);
    if (r == 0)
        r = find_job(dm, h, &dom, &run, err);
    enum job_phase phase = r == 0 ? run->job.phase : JOB_PHASE_NONE;
    pthread_mutex_unlock(&dm->lock);
    if (r < 0)
        return r;
    bool switched = (phase == JOB_PHASE_PREPARE || phase == JOB_PHASE_POSTCOPY_FAILED) &&
                    vmm_switched(dm, dom);
    if (!mig_abort_allowed(phase, switched)) {
        log_warn("domain '%s': %s refused: job %s is in phase %s%s", dom->def.name, why, h->job,
                 job_phase_name(phase), switched ? " and its VMM may hold the guest (post-copy)" : "");
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: job %s is in phase "
                            "%s%s; not discarded: ask migration-status", h->job,
                            job_phase_name(phase),
                            switched ? " and the incoming VMM reports (or may have made) the "
                                       "post-copy switch" : "");
    }
    mig_dst_discard(dm, h->uuid, why);
    return 0;
}

static int h_abort(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                   struct json_object **ret, struct gw_error *err)
{
    struct mig_msg_head h;
    int r = mig_head_from_json(args, &h, err);
    return r < 0 ? r : discard_for_source(dm, &h, "the source aborted the migration", err);
}

static int h_status(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                    struct json_object **ret, struct gw_error *err)
{
    struct mig_msg_head h;
    int r = mig_head_from_json(args, &h, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&dm->lock);
    struct domain *dom = daemon_find_domain_uuid(dm, h.uuid);
    struct mig_run *run = mig_run_find(dm, h.uuid);
    const struct job *j = run && strcmp(run->job.id, h.job) == 0 ? &run->job : NULL;
    /* While Finish is at work the guest is not ours yet (its cont may fail) */
    bool running = dom && dom->state == DOM_STATE_RUNNING && !(j && run->finishing);
    enum job_peer_outcome o = job_peer_outcome_of(j, running);
    *ret = json_object_new_object();
    json_object_object_add(*ret, "outcome", json_object_new_string(job_peer_outcome_name(o)));
    json_object_object_add(*ret, "phase", json_object_new_string(j ? job_phase_name(j->phase) : "none"));
    pthread_mutex_unlock(&dm->lock);
    return 0;
}

/* What migration-prepare-resume asks for, and what it found. */
struct resume_req {
    struct mig_msg_head h;
    const char *host;
    struct mig_resume_target_facts f;
    struct job rec;             /* the record f.job points to */
    struct domain *dom;
    bool slot;                  /* the job slot was taken here (no active job holds it) */
};

/* (locked) The record and the domain; the domain's job slot is taken when
 * no job of its own holds it (the job ended here: the domain must not go
 * away while its VMM is asked). */
static int resume_lookup(struct daemon *dm, struct resume_req *q, struct gw_error *err)
{
    struct mig_run *run = mig_run_find(dm, q->h.uuid);
    q->dom = daemon_find_domain_uuid(dm, q->h.uuid);
    q->f.job_id = q->h.job;
    q->f.job = NULL;
    if (run && run->job.kind != JOB_KIND_NONE) {
        q->rec = run->job;
        q->f.job = &q->rec;
    }
    q->f.domain_active = q->dom && dom_state_active(q->dom->state);
    if (!q->f.domain_active)
        return 0;
    bool held = q->f.job && job_active(q->f.job) && q->f.job->kind == JOB_KIND_MIGRATION_IN &&
                strcmp(q->f.job->id, q->h.job) == 0;
    if (held)
        return 0;
    int r = domain_job_begin(dm, &q->dom, DOM_JOB_MODIFY, "migrate-recover", err);
    q->slot = r == 0;
    return r;
}

static int resume_refused(const struct resume_req *q, const char *status, struct gw_error *err)
{
    const struct job *j = q->f.job;
    char rec[JOB_ID_MAX + 64] = "no record of it";
    if (j && strcmp(j->id, q->h.job) == 0)
        snprintf(rec, sizeof(rec), "phase %s", job_phase_name(j->phase));
    else if (j)
        snprintf(rec, sizeof(rec), "the last job here is %s (phase %s)", j->id,
                 job_phase_name(j->phase));
    if (!q->f.domain_active)
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: cannot resume job "
                            "%s here (%s): the domain is not running", q->h.job, rec);
    return gw_error_set(err, ENOTCONN, "Requested operation is not valid: cannot resume job %s "
                        "here (%s): %sthe domain's VMM reports %s, postcopy-started %s", q->h.job,
                        rec, q->f.only_completed ? "only a completed migration was asked for; " : "",
                        status[0] ? status : "no migration", q->f.vmm_switched ? "true" : "false");
}

static struct json_object *resume_reply(const struct mig_msg_head *h, const char *uri,
                                        bool completed)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "job", json_object_new_string(h->job));
    json_object_object_add(o, "uuid", json_object_new_string(h->uuid));
    json_object_object_add(o, "uri", json_object_new_string(uri));
    json_object_object_add(o, "completed", json_object_new_boolean(completed));
    return o;
}

/* migration-prepare-resume: a paused post-copy job recovers; a VMM that
 * completed a post-copy migration whose source lost the last message
 * listens once to tell it (mig_resume_target_classify). */
static int h_prepare_resume(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                            struct json_object **ret, struct gw_error *err)
{
    struct resume_req q;
    char uri[JOB_URI_MAX], status[32] = "";
    memset(&q, 0, sizeof(q));
    int r = mig_head_from_json(args, &q.h, err);
    if (r < 0 || (r = ctl_arg_str(args, "dest_host", true, &q.host, err)) < 0 ||
        (r = ctl_arg_bool(args, "only_completed", &q.f.only_completed, err)) < 0)
        return r;
    pthread_mutex_lock(&dm->lock);
    r = resume_lookup(dm, &q, err);
    pthread_mutex_unlock(&dm->lock);
    if (r < 0)
        return r;
    if (q.f.domain_active) {
        struct mig_vmm_view v;
        mig_vmm_view(q.dom, &v);
        snprintf(status, sizeof(status), "%s", v.status);
        q.f.vmm_switched = v.started;
    }
    q.f.vmm_status = status[0] ? status : NULL;
    enum mig_resume_target t = mig_resume_target_classify(&q.f);
    if (t == MIG_RESUME_TARGET_REFUSE)
        r = resume_refused(&q, status, err);
    else
        r = listen_incoming(q.dom, "migrate-recover", q.host, uri, sizeof(uri), err);
    if (r == 0 && t == MIG_RESUME_TARGET_COMPLETED)
        log_info("domain '%s': job %s completed here; the source resumes to hear it (%s)",
                 q.dom->def.name, q.h.job, uri);
    if (q.slot) {
        pthread_mutex_lock(&dm->lock);
        domain_job_end(dm, q.dom);
        pthread_mutex_unlock(&dm->lock);
    }
    if (r < 0)
        return r;
    *ret = resume_reply(&q.h, uri, t == MIG_RESUME_TARGET_COMPLETED);
    return 0;
}

const struct daemon_command migrate_peer_commands[] = {
    { "migration-prepare", h_prepare },
    { "migration-finish", h_finish },
    { "migration-abort", h_abort },
    { "migration-status", h_status },
    { "migration-prepare-resume", h_prepare_resume },
};
const size_t migrate_peer_ncommands = sizeof(migrate_peer_commands) / sizeof(migrate_peer_commands[0]);
