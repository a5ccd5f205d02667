/* Migration records per domain, their job bookkeeping, and the operator's
 * commands on a migration: domain-jobinfo, domain-jobabort,
 * domain-migrate-postcopy, domain-migrate-{set,get}maxdowntime,
 * domain-migrate-{set,get}speed. See migrate.h. */
#define LOG_PREFIX "migrate"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "control/control.h"
#include "daemon/lifecycle.h"
#include "daemon/migrate.h"
#include "daemon/migrate_peer.h"
#include "qmp/qmp_json.h"

struct mig_ctx {
    struct mig_run *runs;
    unsigned watchers;       /* live watcher threads (migrate_dst.c) */
    unsigned job_seq;        /* makes job ids unique within this daemon */
};

unsigned mig_next_job_seq(struct daemon *dm) { return ++dm->mig->job_seq; }

uint64_t mig_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t mig_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bool mig_fault(const char *point)
{
    const char *env = getenv("GODWIT_FAULT_INJECT");
    return env && strcmp(env, point) == 0;
}

/* The source VMM's MIGRATION {postcopy-active} (dm->lock held): a guest
 * paused for the migration is now paused for post-copy. This is how a
 * switch the VMM makes by itself (postcopy-after-precopy) reaches the
 * operator, as libvirt's "Suspended Post-copy"; a switch by command set
 * the reason before the STOP. */
static void on_vmm_event(struct daemon *dm, struct domain *dom, const char *event,
                         struct json_object *data)
{
    const char *st = data ? qmp_json_get_str(data, "status") : NULL;
    if (strcmp(event, "MIGRATION") != 0 || !st)
        return;
    bool given_back = strcmp(st, "active") == 0;
    if (!given_back && strcmp(st, "postcopy-active") != 0)
        return;
    struct mig_run *run = mig_run_find(dm, dom->def.uuid);
    if (!run || run->job.kind != JOB_KIND_MIGRATION_OUT || !job_active(&run->job))
        return;
    if (given_back) {
        /* The VMM's switch-over guard gave the guest back (status device ->
         * active, RESUME follows): the migration goes on, and its next
         * switch-over's STOP is the migration's again. */
        if (dom->state == DOM_STATE_PAUSED && dom->reason == DOM_REASON_MIGRATING) {
            log_info("domain '%s': the switch-over took too long, the guest runs again and "
                     "the migration goes on", dom->def.name);
            dom->switchover_given_back = true;
            dom->pause_reason = DOM_REASON_MIGRATING;
        }
        return;
    }
    if (dom->state == DOM_STATE_RUNNING) {
        dom->pause_reason = DOM_REASON_POSTCOPY; /* its STOP is still to come */
    } else if (dom->state == DOM_STATE_PAUSED && dom->reason == DOM_REASON_MIGRATING) {
        domain_set_state(dm, dom, DOM_STATE_PAUSED, DOM_REASON_POSTCOPY, -1, DOM_DETAIL_POSTCOPY);
        daemon_emit_lifecycle(dm, dom, DOM_EVENT_SUSPENDED, DOM_DETAIL_POSTCOPY);
    }
}

int migrate_init(struct daemon *dm, struct gw_error *err)
{
    dm->mig = calloc(1, sizeof(*dm->mig));
    if (!dm->mig)
        return gw_error_set(err, ENOMEM, "out of memory");
    daemon_register_commands(dm, migrate_commands, migrate_ncommands);
    daemon_register_commands(dm, migrate_peer_commands, migrate_peer_ncommands);
    daemon_register_commands(dm, migrate_src_commands, migrate_src_ncommands);
    return daemon_register_qmp_hook(dm, on_vmm_event) < 0
               ? gw_error_set(err, E2BIG, "too many QMP event hooks")
               : 0;
}

/* Watchers poll dm->stopping every MIG_POLL_MS. */
void migrate_stop(struct daemon *dm)
{
    if (!dm->mig)
        return;
    pthread_mutex_lock(&dm->lock);
    while (dm->mig->watchers)
        pthread_cond_wait(&dm->cond, &dm->lock);
    pthread_mutex_unlock(&dm->lock);
}

void migrate_free(struct daemon *dm)
{
    if (!dm->mig)
        return;
    while (dm->mig->runs) {
        struct mig_run *r = dm->mig->runs;
        dm->mig->runs = r->next;
        json_object_put(r->pc_stats);
        json_object_put(r->pc_completed);
        mig_run_drop_prev_def(r);
        free(r);
    }
    free(dm->mig);
    dm->mig = NULL;
}

void mig_watchers_add(struct daemon *dm, int delta)
{
    dm->mig->watchers += (unsigned)delta;
    pthread_cond_broadcast(&dm->cond);
}

struct mig_run *mig_run_find(struct daemon *dm, const char *uuid)
{
    for (struct mig_run *r = dm->mig->runs; r; r = r->next)
        if (strcmp(r->uuid, uuid) == 0)
            return r;
    return NULL;
}

struct mig_run *mig_run_get(struct daemon *dm, const char *uuid)
{
    struct mig_run *r = mig_run_find(dm, uuid);
    if (r)
        return r;
    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    snprintf(r->uuid, sizeof(r->uuid), "%s", uuid);
    r->job.phase = JOB_PHASE_NONE;
    r->next = dm->mig->runs;
    dm->mig->runs = r;
    return r;
}

int mig_job_save(struct daemon *dm, struct mig_run *run)
{
    struct gw_error e;
    gw_error_init(&e);
    int r = job_save(&run->job, dm->cfg.state_dir, &e);
    if (r < 0)
        log_error("job %s: cannot save: %s", run->job.id, e.msg);
    return r;
}

int mig_job_phase(struct daemon *dm, struct mig_run *run, enum job_phase to, struct gw_error *err)
{
    enum job_phase from = run->job.phase;
    int r = job_set_phase(&run->job, to, mig_wall_ms(), err);
    if (r < 0)
        return r;
    log_info("job %s (%s '%s'): phase %s -> %s", run->job.id, job_kind_name(run->job.kind),
             run->job.name, job_phase_name(from), job_phase_name(to));
    if (!job_phase_is_terminal(to))
        return mig_job_save(dm, run);
    return 0;
}

void mig_job_note_postcopy(struct daemon *dm, struct mig_run *run)
{
    if (!job_active(&run->job) || run->job.postcopy_started)
        return;
    run->job.postcopy_started = true;
    mig_job_save(dm, run);
}

void mig_run_drop_prev_def(struct mig_run *run)
{
    if (run->prev_def)
        dom_def_fini(run->prev_def);
    free(run->prev_def);
    run->prev_def = NULL;
}

void mig_job_end(struct daemon *dm, struct domain *dom, struct mig_run *run, bool success,
                 const char *msg)
{
    if (success)
        mig_run_drop_prev_def(run);
    if (!job_phase_is_terminal(run->job.phase)) {
        if (msg)
            job_set_error(&run->job, msg);
        if (mig_job_phase(dm, run, success ? JOB_PHASE_DONE : JOB_PHASE_FAILED, NULL) < 0)
            run->job.phase = success ? JOB_PHASE_DONE : JOB_PHASE_FAILED; /* from any phase */
    }
    job_remove(dm->cfg.state_dir, run->uuid, NULL);
    run->completed = run->info;
    if (!run->have_info) {
        memset(&run->completed, 0, sizeof(run->completed));
        run->completed.op = run->job.kind == JOB_KIND_MIGRATION_IN ? JOBINFO_OP_MIGRATION_IN
                                                                   : JOBINFO_OP_MIGRATION_OUT;
    }
    run->completed.time_elapsed_ms = mig_mono_ms() - run->t0_ms;
    json_object_put(run->pc_completed);
    run->pc_completed = run->pc_stats;
    run->pc_stats = NULL;
    jobinfo_complete(&run->completed, success, msg);
    run->have_completed = true;
    run->have_info = false;
    run->want_abort = run->want_postcopy = false;
    log_info("job %s (%s '%s'): %s%s%s", run->job.id, job_kind_name(run->job.kind), run->job.name,
             success ? "completed" : "failed", msg ? ": " : "", msg ? msg : "");
    if (dom) {
        if (dom->job == DOM_JOB_MIGRATION_OUT || dom->job == DOM_JOB_MIGRATION_IN)
            domain_job_end(dm, dom);
        daemon_emit(dm, dom, "job-completed", jobinfo_to_json(&run->completed));
    }
}

void mig_set_state(struct daemon *dm, struct domain *dom, enum dom_state st, enum dom_reason why,
                   enum dom_event ev, enum dom_event_detail detail)
{
    bool same = dom->state == st;
    domain_set_state(dm, dom, st, why, same ? -1 : (int)ev, detail);
    if (same)
        daemon_emit_lifecycle(dm, dom, ev, detail);
}

int mig_vmm_set_caps(struct domain *dom, const char *const *names, const bool *on, int n,
                     struct gw_error *err)
{
    struct json_object *a = json_object_new_object(), *list = json_object_new_array();
    for (int i = 0; i < n; i++) {
        struct json_object *c = json_object_new_object();
        json_object_object_add(c, "capability", json_object_new_string(names[i]));
        json_object_object_add(c, "state", json_object_new_boolean(on[i]));
        json_object_array_add(list, c);
    }
    json_object_object_add(a, "capabilities", list);
    return domain_qmp(dom, "migrate-set-capabilities", a, NULL, NULL, err);
}

void mig_vmm_view(struct domain *dom, struct mig_vmm_view *v)
{
    struct json_object *ret = NULL, *p;
    memset(v, 0, sizeof(*v));
    v->answered = domain_qmp(dom, "query-migrate", NULL, &ret, NULL, NULL) == 0;
    if (v->answered) {
        const char *st = qmp_json_get_str(ret, "status");
        snprintf(v->status, sizeof(v->status), "%s", st ? st : "");
        v->said = json_object_object_get_ex(ret, "postcopy-started", &p) &&
                  json_object_is_type(p, json_type_boolean);
        v->started = v->said && json_object_get_boolean(p);
    }
    json_object_put(ret);
}

int mig_query(struct daemon *dm, struct domain *dom, struct mig_run *run, enum jobinfo_op op, uint64_t elapsed_ms,
              struct jobinfo *ji, struct gw_error *err)
{
    struct json_object *ret = NULL;
    int r = domain_qmp(dom, "query-migrate", NULL, &ret, NULL, err);
    if (r == 0)
        r = jobinfo_from_query_migrate(ji, ret, op, elapsed_ms, err);
    struct json_object *lat = ret ? qmp_json_get(ret, "postcopy-fault-latency") : NULL;
    if (r == 0 && lat && op == JOBINFO_OP_MIGRATION_IN) {
        struct json_object *pc = json_object_new_object(), *bt = qmp_json_get(ret, "postcopy-blocktime");
        json_object_object_add(pc, "latency", json_object_get(lat));
        if (bt)
            json_object_object_add(pc, "blocktime_ms", json_object_get(bt));
        struct json_object *nv = qmp_json_get(ret, "postcopy-non-vcpu");
        if (nv)
            json_object_object_add(pc, "non_vcpu", json_object_get(nv));
        pthread_mutex_lock(&dm->lock);
        json_object_put(run->pc_stats);
        run->pc_stats = pc;
        pthread_mutex_unlock(&dm->lock);
    }
    json_object_put(ret);
    return r;
}

/* ---- operator commands ---- */

/* Look the domain up with its record; dm->lock held on success. */
static int lookup_run(struct daemon *dm, struct json_object *args, struct domain **dom,
                      struct mig_run **run, struct gw_error *err)
{
    pthread_mutex_lock(&dm->lock);
    int r = daemon_lookup(dm, args, dom, err);
    if (r == 0 && !(*run = mig_run_get(dm, (*dom)->def.uuid)))
        r = gw_error_set(err, ENOMEM, "out of memory");
    if (r < 0)
        pthread_mutex_unlock(&dm->lock);
    return r;
}

static bool out_running(const struct mig_run *run)
{
    return run->job.kind == JOB_KIND_MIGRATION_OUT && job_active(&run->job);
}

static int no_job(struct daemon *dm, const struct domain *dom, struct gw_error *err)
{
    int r = gw_error_set(err, ENOTCONN, "Requested operation is not valid: no job is active on "
                         "domain '%s'", dom->def.name);
    pthread_mutex_unlock(&dm->lock);
    return r;
}

static int h_jobinfo(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                     struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    struct mig_run *run;
    bool completed = false;
    int r = ctl_arg_bool(args, "completed", &completed, err);
    if (r < 0 || (r = lookup_run(dm, args, &dom, &run, err)) < 0)
        return r;
    struct jobinfo ji = { 0 };
    if (completed && run->have_completed)
        ji = run->completed;
    else if (!completed && job_active(&run->job) && run->have_info) {
        ji = run->info;
        ji.time_elapsed_ms = mig_mono_ms() - run->t0_ms;
    } else if (!completed && job_active(&run->job)) {
        ji.type = JOBINFO_UNBOUNDED;
        ji.op = run->job.kind == JOB_KIND_MIGRATION_IN ? JOBINFO_OP_MIGRATION_IN
                                                       : JOBINFO_OP_MIGRATION_OUT;
        ji.time_elapsed_ms = mig_mono_ms() - run->t0_ms;
    }
    *ret = jobinfo_to_json(&ji);
    struct json_object *pc = completed ? run->pc_completed : run->pc_stats;
    if (*ret && pc && (completed ? run->have_completed : job_active(&run->job)))
        json_object_object_add(*ret, "postcopy_faults", json_object_get(pc));
    if (*ret && job_active(&run->job)) {
        json_object_object_add(*ret, "job_id", json_object_new_string(run->job.id));
        json_object_object_add(*ret, "phase", json_object_new_string(job_phase_name(run->job.phase)));
    }
    pthread_mutex_unlock(&dm->lock);
    return *ret ? 0 : gw_error_set(err, ENOMEM, "out of memory");
}

/* ---- domain-jobabort force_resume: the operator's exit from perform-done ---- */

#define FORCE_BUSY_WAIT_MS (MIG_PEER_CALL_MS + 10000) /* a Finish in flight, then acted on */
#define FORCE_WHY "migration given up by the operator (domjobabort --force-resume): the guest " \
                  "was resumed on the source"

static void force_facts(const struct mig_run *run, const struct mig_vmm_view *v,
                        struct mig_force_facts *f)
{
    *f = (struct mig_force_facts){ .kind = run->job.kind, .phase = run->job.phase,
                                   .job_switched = run->job.postcopy_started,
                                   .vmm_asked = v != NULL };
    if (v) {
        f->vmm_answered = v->answered;
        f->vmm_status = v->status;
        f->vmm_said = v->said;
        f->vmm_started = v->started;
    }
}

/* Why a phase is no place for --force-resume. */
static const char *force_phase_hint(enum job_phase p)
{
    switch (p) {
    case JOB_PHASE_BEGIN:
        return "it has not started streaming yet; it ends by itself if the destination refuses";
    case JOB_PHASE_POSTCOPY_FAILED:
        return "post-copy failed: recover it with migrate --postcopy-resume, or give it up with "
               "domjobabort";
    default:
        return "the migration is ending";
    }
}

/* (locked) The refusal v of a forced resume of run's job on dom. */
static int force_refused(const struct domain *dom, const struct mig_run *run,
                         enum mig_force_verdict v, const struct mig_vmm_view *vv,
                         struct gw_error *err)
{
    const char *id = run->job.id, *ph = job_phase_name(run->job.phase), *n = dom->def.name;
    switch (v) {
    case MIG_FORCE_INCOMING:
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: --force-resume "
                            "resumes the source of an outgoing migration; job %s is incoming "
                            "(abort it from its source)", id);
    case MIG_FORCE_JOB_SWITCHED:
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: cannot resume "
                            "domain '%s' here: migration job %s handed the guest over to the "
                            "destination by post-copy (its newer state is there); recover it with "
                            "migrate --postcopy-resume", n, id);
    case MIG_FORCE_USE_ABORT:
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: the migration job %s "
                            "is in phase %s: use domjobabort without --force-resume, which cancels "
                            "it and resumes the guest here", id, ph);
    case MIG_FORCE_VMM_SWITCHED:
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: cannot resume "
                            "domain '%s' here: its VMM reports that it handed the guest over to "
                            "the destination by post-copy (%s%spostcopy-started: %s): the newer "
                            "state is there", n, vv->status, vv->status[0] ? ", " : "",
                            vv->started ? "true" : "false");
    case MIG_FORCE_VMM_UNKNOWN:
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: cannot resume "
                            "domain '%s' here: its VMM %s, so the guest may have been handed over "
                            "to the destination by post-copy (a guest whose newer state may be "
                            "elsewhere is never resumed)", n,
                            !vv->answered ? "does not answer query-migrate"
                                          : "does not say whether it did (no postcopy-started)");
    default:
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: the migration job %s "
                            "is in phase %s: --force-resume applies only to a job waiting for its "
                            "destination's answer (phase perform-done) (%s)", id, ph,
                            force_phase_hint(run->job.phase));
    }
}

/* (locked) Wait, bounded, until the owner of job `id` (still in
 * perform-done) is not sending Finish or acting on an answer. */
static bool force_wait_idle(struct daemon *dm, struct mig_run *run, const char *id)
{
    uint64_t deadline = mig_mono_ms() + FORCE_BUSY_WAIT_MS;
    while (run->src_busy && run->job.phase == JOB_PHASE_PERFORM_DONE &&
           strcmp(run->job.id, id) == 0)
        if (!daemon_wait_step(dm, deadline))
            return false;
    return true;
}

/* (locked) Is job `id` still there (*dom: its domain again), and may it be
 * resumed by force, with its VMM's word vv (NULL: not asked yet)? */
static int force_check(struct daemon *dm, struct mig_run *run, const char *id,
                       const struct mig_vmm_view *vv, struct domain **dom, struct gw_error *err)
{
    if (!job_active(&run->job) || strcmp(run->job.id, id) != 0 ||
        !(*dom = daemon_find_domain_uuid(dm, run->uuid)))
        return gw_error_set(err, ENOTCONN, "Requested operation is not valid: migration job %s "
                            "ended meanwhile; nothing was done", id);
    struct mig_force_facts f;
    force_facts(run, vv, &f);
    enum mig_force_verdict v = mig_force_resume_allowed(&f);
    return v == MIG_FORCE_RESUME ? 0 : force_refused(*dom, run, v, vv, err);
}

/* (locked) Check with the VMM's word vv, wait for the job's owner to be
 * idle, check again, then take job `id` over (its driving thread acts on
 * nothing more) and save confirm-cancelled: a restart from here on
 * resumes the source. *dom: the domain again. */
static int force_take_over(struct daemon *dm, struct mig_run *run, const char *id,
                           const struct mig_vmm_view *vv, struct domain **dom,
                           struct gw_error *err)
{
    int r = force_check(dm, run, id, vv, dom, err);
    if (r < 0)
        return r;
    if (!force_wait_idle(dm, run, id))
        return gw_error_set(err, EBUSY, "migration job %s is still waiting for the destination's "
                            "answer to Finish, which decides; try again", id);
    if ((r = force_check(dm, run, id, vv, dom, err)) < 0) /* its answer moved the job on */
        return r;
    mig_run_own(run);
    log_warn("domain '%s': job %s: the operator forced the guest's resume here (domjobabort "
             "--force-resume) in phase perform-done, asserting that the destination (%s) does not "
             "run it; the migration is given up", (*dom)->def.name, id, run->job.peer_uri);
    job_set_error(&run->job, FORCE_WHY);
    mig_job_phase(dm, run, JOB_PHASE_CONFIRM_CANCELLED, NULL);
    return 0;
}

/* domain-jobabort with force_resume: the rule (mig_force_resume_allowed)
 * on the job, then on its VMM's word; take the job over; `cont` as a
 * failed migration does (mig_src_resume); end the job failed. */
static int force_resume(struct daemon *dm, struct json_object *args, struct gw_error *err)
{
    struct domain *dom;
    struct mig_run *run;
    int r = lookup_run(dm, args, &dom, &run, err);
    if (r < 0)
        return r;
    if (!job_active(&run->job))
        return no_job(dm, dom, err);
    char id[JOB_ID_MAX];
    snprintf(id, sizeof(id), "%s", run->job.id);
    r = force_check(dm, run, id, NULL, &dom, err); /* the job alone, first */
    pthread_mutex_unlock(&dm->lock);
    if (r < 0)
        return r;
    struct mig_vmm_view vv;
    mig_vmm_view(dom, &vv); /* the job holds the domain */
    pthread_mutex_lock(&dm->lock);
    r = force_take_over(dm, run, id, &vv, &dom, err);
    pthread_mutex_unlock(&dm->lock);
    if (r < 0)
        return r;
    mig_src_resume(dm, dom); /* the job still holds the domain: ours now */
    pthread_mutex_lock(&dm->lock);
    bool resumed = dom->state == DOM_STATE_RUNNING ||
                   (dom->state == DOM_STATE_PAUSED && dom->reason == DOM_REASON_USER);
    if (!resumed)
        gw_error_set(err, EIO, "migration job %s was given up, but the guest could not be resumed "
                     "(see the daemon's log): it stays %s here", id, dom_state_name(dom->state));
    mig_job_end(dm, dom, run, false, FORCE_WHY);
    pthread_mutex_unlock(&dm->lock);
    return resumed ? 0 : -EIO;
}

static int h_jobabort(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                      struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    struct mig_run *run;
    bool force = false;
    int r = ctl_arg_bool(args, "force_resume", &force, err);
    if (r < 0)
        return r;
    if (force)
        return force_resume(dm, args, err);
    if ((r = lookup_run(dm, args, &dom, &run, err)) < 0)
        return r;
    if (!job_active(&run->job))
        return no_job(dm, dom, err);
    if (run->job.phase == JOB_PHASE_POSTCOPY_FAILED) { /* give up: the guest stays paused */
        log_warn("domain '%s': post-copy recovery given up; the guest stays paused (destroy "
                 "discards it)", dom->def.name);
        mig_job_end(dm, dom, run, false, "post-copy migration given up by the operator");
        pthread_mutex_unlock(&dm->lock);
        return 0;
    }
    if (run->job.kind == JOB_KIND_MIGRATION_OUT && !run->job.postcopy_started &&
        !mig_jobabort_allowed(run->job.phase))
        r = gw_error_set(err, ENOTCONN, "Requested operation is not valid: the migration job %s "
                         "cannot be aborted in phase %s (%s)", run->job.id,
                         job_phase_name(run->job.phase),
                         run->job.phase == JOB_PHASE_BEGIN ? "it has not started streaming yet; "
                         "it ends by itself if the destination refuses"
                         : run->job.phase == JOB_PHASE_PERFORM_DONE ? "the guest was handed over "
                         "to the destination, which decides: waiting for its answer; if the "
                         "destination has no record of the job or is gone, and you know that it "
                         "does not run the guest, domjobabort --force-resume resumes it here"
                         : "the migration is ending");
    else if (run->job.kind != JOB_KIND_MIGRATION_OUT || run->job.postcopy_started)
        r = gw_error_set(err, ENOTCONN, "Requested operation is not valid: %s",
                         run->job.kind == JOB_KIND_MIGRATION_OUT
                             ? "post-copy migration cannot be aborted (the guest already runs on "
                               "the destination; recover it with migrate --postcopy-resume)"
                             : "an incoming migration is aborted from its source");
    else
        run->want_abort = true;
    pthread_mutex_unlock(&dm->lock);
    return r;
}

static int h_postcopy(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                      struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    struct mig_run *run;
    int r = lookup_run(dm, args, &dom, &run, err);
    if (r < 0)
        return r;
    if (!out_running(run))
        return no_job(dm, dom, err);
    if (!(run->job.flags & JOB_F_POSTCOPY))
        r = gw_error_set(err, ENOTCONN, "Requested operation is not valid: switching to post-copy "
                         "requires migration with the --postcopy flag");
    else
        run->want_postcopy = true;
    pthread_mutex_unlock(&dm->lock);
    return r;
}

/* Apply one migrate-set-parameters value to a running source VMM. */
static int set_param(struct daemon *dm, struct domain *dom, struct mig_run *run, const char *key,
                     uint64_t value, struct gw_error *err)
{
    bool live = out_running(run);
    pthread_mutex_unlock(&dm->lock);
    if (!live)
        return 0;
    struct json_object *a = json_object_new_object();
    json_object_object_add(a, key, json_object_new_int64((int64_t)value));
    if (strcmp(key, "max-bandwidth") == 0)
        json_object_object_add(a, "max-postcopy-bandwidth", json_object_new_int64((int64_t)value));
    return domain_qmp(dom, "migrate-set-parameters", a, NULL, NULL, err);
}

/* The integer argument `name` (in [min, max] `unit`) of a command on a
 * domain's migration job; on success dm->lock is held, as lookup_run leaves it. */
static int run_int_arg(struct daemon *dm, struct json_object *args, const char *name,
                       int64_t min, int64_t max, const char *unit, struct domain **dom,
                       struct mig_run **run, int64_t *v, struct gw_error *err)
{
    int r = ctl_arg_int(args, name, true, v, err);
    if (r < 0 || (r = lookup_run(dm, args, dom, run, err)) < 0)
        return r;
    if (*v < min || *v > max) {
        pthread_mutex_unlock(&dm->lock);
        return gw_error_set(err, EINVAL, "invalid %s %lld %s (%lld .. %lld)", name, (long long)*v,
                            unit, (long long)min, (long long)max);
    }
    return 0;
}

static int h_set_downtime(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                          struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    struct mig_run *run;
    int64_t ms = 0;
    int r = run_int_arg(dm, args, "downtime", 1, DOM_MAX_DOWNTIME_MS, "ms", &dom, &run, &ms, err);
    if (r < 0)
        return r;
    run->downtime_ms = (uint64_t)ms;
    run->policy.max_downtime_ms = (uint64_t)ms;
    return set_param(dm, dom, run, "downtime-limit", (uint64_t)ms, err);
}

static int h_set_speed(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                       struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    struct mig_run *run;
    int64_t mib = 0;
    int r = run_int_arg(dm, args, "bandwidth", 0, 1048576, "MiB/s", &dom, &run, &mib, err);
    if (r < 0)
        return r;
    run->speed_mib_s = (uint64_t)mib;
    run->flags.bandwidth_mib_s = (uint64_t)mib;
    return set_param(dm, dom, run, "max-bandwidth", (uint64_t)mib << 20, err);
}

static int h_get(struct daemon *dm, struct json_object *args, bool downtime,
                 struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    struct mig_run *run;
    int r = lookup_run(dm, args, &dom, &run, err);
    if (r < 0)
        return r;
    uint64_t v;
    if (downtime)
        v = out_running(run) ? run->policy.max_downtime_ms
            : run->downtime_ms ? run->downtime_ms : dom->def.policy.max_downtime_ms;
    else
        v = out_running(run) && run->flags.bandwidth_mib_s ? run->flags.bandwidth_mib_s
            : run->speed_mib_s ? run->speed_mib_s : dom->def.policy.bandwidth_mib_s;
    pthread_mutex_unlock(&dm->lock);
    *ret = json_object_new_object();
    json_object_object_add(*ret, downtime ? "downtime" : "bandwidth", json_object_new_int64((int64_t)v));
    return 0;
}

static int h_get_downtime(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                          struct json_object **ret, struct gw_error *err)
{
    return h_get(dm, args, true, ret, err);
}

static int h_get_speed(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                       struct json_object **ret, struct gw_error *err)
{
    return h_get(dm, args, false, ret, err);
}

const struct daemon_command migrate_commands[] = {
    { "domain-jobinfo", h_jobinfo },
    { "domain-jobabort", h_jobabort },
    { "domain-migrate-postcopy", h_postcopy },
    { "domain-migrate-setmaxdowntime", h_set_downtime },
    { "domain-migrate-getmaxdowntime", h_get_downtime },
    { "domain-migrate-setspeed", h_set_speed },
    { "domain-migrate-getspeed", h_get_speed },
};
const size_t migrate_ncommands = sizeof(migrate_commands) / sizeof(migrate_commands[0]);
