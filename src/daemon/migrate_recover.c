/* Restart recovery of migration jobs: every saved job file is matched
 * with its domain (whose VMM domains_load found again, or not), the VMM's
 * migration status is asked, and job_recovery_action() (job.h) says what
 * to do; ask-peer asks the other daemon with migration-status first
 * (job_recovery_after_peer). Runs once in daemon_start, before the
 * listeners open. docs/migration-protocol.md, "Restart recovery". */
#define LOG_PREFIX "migrate-recover"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "control/control_client.h"
#include "daemon/lifecycle.h"
#include "daemon/migrate_src.h"

/* The VMM's migration status, and whether it handed the guest over for
 * post-copy (true when it does not say). */
static void vmm_status(struct domain *dom, bool alive, char *buf, size_t len, bool *switched)
{
    struct mig_vmm_view v = { .answered = false };
    if (alive)
        mig_vmm_view(dom, &v);
    snprintf(buf, len, "%s", v.answered ? v.status : "");
    *switched = v.said ? v.started : true;
}

/* Send one message to the peer of the job; the outcome for Status. */
static int ask(struct src_job *s, const char *cmd, enum job_peer_outcome *o)
{
    struct gw_error e;
    gw_error_init(&e);
    struct json_object *ret = NULL;
    int r = mig_src_connect(s, s->run->job.peer_uri, &e);
    if (r == 0)
        r = ctl_client_call(s->peer, cmd, mig_head_to_json(s->run->job.id, s->run->uuid), &ret,
                            MIG_PEER_CALL_MS, &e);
    if (r == 0 && o)
        r = mig_outcome_from_reply(ret, o, &e);
    if (r < 0)
        log_warn("job %s: %s to %s: %s", s->run->job.id, cmd, s->run->job.peer_uri, e.msg);
    json_object_put(ret);
    ctl_client_free(s->peer);
    s->peer = NULL;
    return r;
}

static void end_job(struct src_job *s, bool success, const char *msg)
{
    pthread_mutex_lock(&s->dm->lock);
    mig_job_end(s->dm, s->dom, s->run, success, msg);
    pthread_mutex_unlock(&s->dm->lock);
}

/* Finish had come and the VMM completed: resume the guest as Finish does
 * (a guest that already runs, after post-copy, only gets its reason, as
 * the watcher gives it at completion), then the job is done. */
static void resume_incoming(struct src_job *s)
{
    struct gw_error e;
    gw_error_init(&e);
    pthread_mutex_lock(&s->dm->lock);
    bool running = s->dom->state == DOM_STATE_RUNNING;
    if (running) {
        s->dom->reason = DOM_REASON_MIGRATED;
        domain_save_status(s->dm, s->dom, NULL);
    }
    s->dom->resume_pending = !running;
    pthread_mutex_unlock(&s->dm->lock);
    int r = running ? 0 : domain_qmp(s->dom, "cont", NULL, NULL, NULL, &e);
    pthread_mutex_lock(&s->dm->lock);
    s->dom->resume_pending = false;
    if (!running && r == 0) /* the state from cont's result, as Finish does */
        mig_set_state(s->dm, s->dom, DOM_STATE_RUNNING, DOM_REASON_MIGRATED, DOM_EVENT_RESUMED,
                      DOM_DETAIL_MIGRATED);
    pthread_mutex_unlock(&s->dm->lock);
    if (r < 0) /* the stream completed here and no failure was ever sent: keep the VMM */
        log_error("domain '%s': cont after the completed migration failed (%s); the guest stays "
                  "paused here (resume it with `godwit resume`)", s->dom->def.name, e.msg);
    end_job(s, true, NULL);
}

/* (locked) An incoming job kept after the restart: the guest as its phase
 * left it (prepare: paused for Finish, as found again); true when the VMM
 * must be sent cont: Finish came after a post-copy switch (only a
 * post-copy Finish leaves a job in finish with a live post-copy VMM) but
 * had not resumed the guest yet. */
static bool restore_incoming(struct daemon *dm, struct domain *dom, struct mig_run *run,
                             const char *status)
{
    switch (run->job.phase) {
    case JOB_PHASE_FINISH:
        run->finish_postcopy = true;
        if (dom->state == DOM_STATE_RUNNING || strcmp(status, "postcopy-active") != 0)
            return false; /* runs; or a break paused it: the watcher makes it post-copy failed */
        mig_set_state(dm, dom, DOM_STATE_RUNNING, DOM_REASON_POSTCOPY, DOM_EVENT_RESUMED,
                      DOM_DETAIL_POSTCOPY);
        return true;
    case JOB_PHASE_POSTCOPY_FAILED:
        if (dom->state != DOM_STATE_PAUSED || dom->reason != DOM_REASON_POSTCOPY_FAILED)
            mig_set_state(dm, dom, DOM_STATE_PAUSED, DOM_REASON_POSTCOPY_FAILED,
                          DOM_EVENT_SUSPENDED, DOM_DETAIL_POSTCOPY_ERROR);
        return false;
    default:
        return false;
    }
}

/* The incoming VMM is kept: its statistics for domjobinfo at once, the
 * guest as before the restart, and a watcher that goes on from the phase
 * as before (completes a post-copy job, notices a break, waits for a
 * recovery). Never kills the VMM. */
static void continue_incoming(struct src_job *s, const char *status)
{
    struct daemon *dm = s->dm;
    struct jobinfo ji;
    struct gw_error e;
    gw_error_init(&e);
    bool sampled = mig_query(dm, s->dom, s->run, JOBINFO_OP_MIGRATION_IN, 0, &ji, NULL) == 0;
    pthread_mutex_lock(&dm->lock);
    if (sampled) {
        s->run->info = ji;
        s->run->have_info = true;
    }
    bool cont = restore_incoming(dm, s->dom, s->run, status);
    pthread_mutex_unlock(&dm->lock);
    if (cont && domain_qmp(s->dom, "cont", NULL, NULL, NULL, &e) < 0) {
        pthread_mutex_lock(&dm->lock);
        mig_dst_postcopy_failed(dm, s->dom, s->run, e.msg);
        pthread_mutex_unlock(&dm->lock);
    }
    pthread_mutex_lock(&dm->lock);
    int r = mig_dst_watch(dm, s->run);
    pthread_mutex_unlock(&dm->lock);
    if (r < 0)
        log_error("job %s: cannot watch the incoming VMM again (%s); the job stays until the "
                  "next restart", s->run->job.id, strerror(-r));
}

/* A source whose migration still runs, on a thread: Finish and Confirm
 * in the job's mode (continue: s->switched, job_finish_postcopy()), or
 * only Confirm's post-copy wait then quit (confirm-postcopy: the
 * destination already said it runs the guest). */
struct cont_arg {
    struct src_job s;
    bool confirm_only;
};

static void *continue_main(void *p)
{
    struct cont_arg *c = p;
    struct src_job *s = &c->s;
    struct gw_error e;
    gw_error_init(&e);
    /* The daemon's listeners are open by now: a forced resume may take the
     * job over (a pre-copy one, in perform-done) while this thread waits on
     * the destination; it then acts on nothing (mig_src_claim). */
    if (!c->confirm_only && mig_src_connect(s, s->peer_uri, &e) == 0) /* Finish claims it */
        mig_src_finish_confirm(s, s->switched ? PERFORM_POSTCOPY : PERFORM_COMPLETED, &e);
    else if (!mig_src_claim(s))
        mig_src_taken_over(s, JOB_PEER_UNREACHABLE, &e);
    else {
        if (c->confirm_only)
            mig_src_confirm(s, true, &e);
        else if (s->switched)
            mig_src_postcopy_failed(s, e.msg);
        else /* pre-copy: the outcome is unknown, as after a lost Finish answer */
            log_error("domain '%s': the destination does not answer (%s); the guest stays paused "
                      "until it does (restart the daemon to ask again; if it runs nowhere, "
                      "domjobabort --force-resume resumes it here)", s->name, e.msg);
        mig_src_release(s);
    }
    ctl_client_free(s->peer);
    pthread_mutex_lock(&s->dm->lock);
    mig_watchers_add(s->dm, -1);
    pthread_mutex_unlock(&s->dm->lock);
    free(c);
    return NULL;
}

static void continue_source(struct src_job *s, bool confirm_only)
{
    struct cont_arg *copy = malloc(sizeof(*copy));
    pthread_t t;
    if (!copy) {
        mig_src_postcopy_failed(s, "out of memory");
        return;
    }
    copy->s = *s;
    copy->s.switched = confirm_only || s->switched;
    copy->confirm_only = confirm_only;
    pthread_mutex_lock(&s->dm->lock);
    mig_watchers_add(s->dm, 1);
    pthread_mutex_unlock(&s->dm->lock);
    if (pthread_create(&t, NULL, continue_main, copy) != 0) {
        pthread_mutex_lock(&s->dm->lock);
        mig_watchers_add(s->dm, -1);
        pthread_mutex_unlock(&s->dm->lock);
        free(copy);
        mig_src_postcopy_failed(s, "cannot start a thread");
        return;
    }
    pthread_detach(t);
}

/* An incoming job (the destination). */
static void apply_in(struct src_job *s, enum job_recovery a, const char *status)
{
    switch (a) {
    case JOB_RECOVER_KILL_INCOMING:
        mig_dst_discard(s->dm, s->run->uuid, "the daemon restarted before the migration finished");
        break;
    case JOB_RECOVER_RESUME_INCOMING:
        resume_incoming(s);
        break;
    case JOB_RECOVER_CONTINUE:
        continue_incoming(s, status);
        break;
    default:
        end_job(s, s->run->job.phase == JOB_PHASE_DONE, NULL);
        break;
    }
}

static void apply(struct src_job *s, enum job_recovery a, const char *status)
{
    struct daemon *dm = s->dm;
    if (s->run->job.kind == JOB_KIND_MIGRATION_IN) {
        apply_in(s, a, status);
        return;
    }
    switch (a) {
    case JOB_RECOVER_RESUME_SOURCE:
        ask(s, "migration-abort", NULL);
        mig_src_resume(dm, s->dom);
        end_job(s, false, "the daemon restarted during the migration; the guest was resumed here");
        break;
    case JOB_RECOVER_KILL_SOURCE:
        pthread_mutex_lock(&dm->lock); /* saved first, as Confirm does */
        if (job_transition_allowed(s->run->job.kind, s->run->job.phase, JOB_PHASE_CONFIRM))
            mig_job_phase(dm, s->run, JOB_PHASE_CONFIRM, NULL);
        pthread_mutex_unlock(&dm->lock);
        mig_src_kill(dm, s->dom);
        end_job(s, true, NULL);
        break;
    case JOB_RECOVER_CONTINUE:
        continue_source(s, false);
        break;
    case JOB_RECOVER_CONFIRM_POSTCOPY:
        continue_source(s, true);
        break;
    case JOB_RECOVER_POSTCOPY_FAILED:
        mig_src_postcopy_failed(s, "the daemon restarted during post-copy");
        break;
    case JOB_RECOVER_WAIT_PEER:
        log_error("domain '%s': job %s: the destination does not answer, or has no record of the "
                  "job; the guest stays paused and the job is kept (restart the daemon to ask "
                  "again; check where the domain runs%s)", s->dom->def.name, s->run->job.id,
                  s->switched ? "" : "; if it runs nowhere, domjobabort --force-resume resumes "
                                     "it here");
        break;
    case JOB_RECOVER_CRASHED:
        end_job(s, false, "the VMM is gone");
        break;
    default:
        end_job(s, s->run->job.phase == JOB_PHASE_DONE, NULL);
        break;
    }
}

/* (locked) Put the saved job back in place: record, job slot. */
static struct mig_run *restore(struct daemon *dm, struct domain *dom, const struct job *j)
{
    struct mig_run *run = mig_run_get(dm, j->uuid);
    if (!run)
        return NULL;
    run->job = *j;
    run->job.on_phase = NULL;
    run->t0_ms = mig_mono_ms();
    run->have_info = false;
    run->finish_postcopy = false; /* restore_incoming() knows */
    if (job_active(j))
        dom->job = j->kind == JOB_KIND_MIGRATION_IN ? DOM_JOB_MIGRATION_IN : DOM_JOB_MIGRATION_OUT;
    return run;
}

/* A job file that cannot be read may be the record that the guest was
 * handed over (the only copy may be on the other host): its domain (the
 * file is named after its uuid) refuses every operation until a restart
 * reads the file, repaired or removed by the operator. */
static void hold_unreadable(struct daemon *dm, const char *path, const struct gw_error *why)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char uuid[DOM_UUID_LEN + 1];
    snprintf(uuid, sizeof(uuid), "%s", base);
    pthread_mutex_lock(&dm->lock);
    struct domain *dom = strlen(base) == DOM_UUID_LEN + 5 ? daemon_find_domain_uuid(dm, uuid) : NULL;
    if (dom && dom->job == DOM_JOB_NONE)
        dom->job = DOM_JOB_UNREADABLE;
    pthread_mutex_unlock(&dm->lock);
    if (dom)
        log_error("job file %s cannot be read: %s; domain '%s' is held (every operation refused) "
                  "until a restart reads it: repair or remove it", path, why->msg, dom->def.name);
    else
        log_error("job file %s cannot be read: %s; kept as it is", path, why->msg);
}

static int recover_job(const struct job *j, const char *path, const struct gw_error *load_err,
                       void *opaque)
{
    struct daemon *dm = opaque;
    if (load_err) {
        hold_unreadable(dm, path, load_err);
        return 0;
    }
    struct src_job s = { .dm = dm };
    pthread_mutex_lock(&dm->lock);
    s.dom = daemon_find_domain_uuid(dm, j->uuid);
    s.run = s.dom ? restore(dm, s.dom, j) : NULL;
    if (s.run)
        mig_src_take(&s);
    bool alive = s.dom && dom_state_active(s.dom->state);
    bool unreachable = s.dom && s.dom->vmm_unreachable;
    pthread_mutex_unlock(&dm->lock);
    if (!s.dom) {
        /* Its definition may only have been refused (a damaged file): the
         * record is all that says where the guest is (post-copy: on which
         * host its newest state lives), so it is never dropped here. */
        log_error("job %s (%s '%s', phase %s): no domain with uuid %s was loaded; the job file "
                  "%s is kept for the next start (repair the domain's definition, or remove "
                  "the file once the guest is known safe)", j->id, job_kind_name(j->kind),
                  j->name, job_phase_name(j->phase), j->uuid, path);
        return 0;
    }
    if (!s.run) {
        log_error("job %s: out of memory; the job file %s is kept for the next start", j->id,
                  path);
        return 0;
    }
    if (unreachable) { /* nothing is decided without the VMM's word: kept as saved */
        log_error("job %s (%s '%s', phase %s): its VMM does not answer; the job is kept and "
                  "holds the domain until a restart finds the VMM answering", j->id,
                  job_kind_name(j->kind), j->name, job_phase_name(j->phase));
        return 0;
    }
    char st[32];
    bool switched;
    vmm_status(s.dom, alive, st, sizeof(st), &switched);
    s.switched = job_finish_postcopy(j, switched);
    enum job_recovery a = job_recovery_action(j, alive, st[0] ? st : NULL, switched);
    if (a == JOB_RECOVER_ASK_PEER) {
        enum job_peer_outcome o = JOB_PEER_UNREACHABLE;
        if (ask(&s, "migration-status", &o) < 0)
            o = JOB_PEER_UNREACHABLE;
        a = job_recovery_after_peer(j, alive, st[0] ? st : NULL, switched, o);
        log_info("job %s: the destination says %s", j->id, job_peer_outcome_name(o));
    }
    log_info("job %s (%s '%s', phase %s, VMM %s%s%s): %s", j->id, job_kind_name(j->kind), j->name,
             job_phase_name(j->phase), alive ? "alive" : "gone", st[0] ? ", " : "", st,
             job_recovery_name(a));
    apply(&s, a, st);
    return 0;
}

void migrate_recover(struct daemon *dm)
{
    struct gw_error e;
    gw_error_init(&e);
    if (job_scan(dm->cfg.state_dir, recover_job, dm, &e) < 0)
        log_error("cannot read the saved jobs: %s", e.msg);
}
