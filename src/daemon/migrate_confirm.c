/* The source after Perform: Finish (asked of the destination) and Confirm
 * (stop the source VMM on success, resume it on failure before the
 * switch, both paused after a post-copy failure), the post-copy recovery
 * (--postcopy-resume), and the helpers restart recovery reuses.
 * See migrate_src.h and docs/migration-protocol.md. */
#define LOG_PREFIX "migrate-src"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control.h"
#include "control/control_client.h"
#include "daemon/lifecycle.h"
#include "daemon/migrate_src.h"
#include "daemon/monitor.h"
#include "daemon/vmm_proc.h"
#include "qmp/qmp_json.h"

#define SRC_QUIT_WAIT_MS    10000
#define SRC_CANCEL_WAIT_MS  10000
#define SRC_STATUS_TRIES    5       /* Finish answer lost: ask migration-status this often */
#define SRC_FINISH_RESENDS  3       /* Finish answer lost, the destination says prepared: resend */
#define SRC_RESUME_WAIT_MS  60000   /* --postcopy-resume: the VMM runs post-copy again within this */
#define SRC_LOST_DONE_RESUMES 1     /* Confirm's post-copy wait: resumes after the VMM paused
                                       while the destination runs the guest */

/* ---- helpers (also used by restart recovery) ---- */

static const char *vmm_status(struct domain *dom, char *buf, size_t len)
{
    struct json_object *ret = NULL;
    buf[0] = '\0';
    if (domain_qmp(dom, "query-migrate", NULL, &ret, NULL, NULL) == 0) {
        const char *s = qmp_json_get_str(ret, "status");
        snprintf(buf, len, "%s", s ? s : "");
    }
    json_object_put(ret);
    return buf;
}

static bool stream_running(const char *st)
{
    return !strcmp(st, "setup") || !strcmp(st, "active") || !strcmp(st, "device") ||
           !strcmp(st, "cancelling");
}

/* The source resumes its guest: the state from `cont`'s result. A guest
 * the user had paused before the migration stays paused (as libvirt): its
 * reason is still `user` (the switch-over's stop records `migrating`). */
void mig_src_resume(struct daemon *dm, struct domain *dom)
{
    char st[32];
    uint64_t deadline = mig_mono_ms() + SRC_CANCEL_WAIT_MS;
    if (stream_running(vmm_status(dom, st, sizeof(st))))
        domain_qmp(dom, "migrate_cancel", NULL, NULL, NULL, NULL);
    while (stream_running(vmm_status(dom, st, sizeof(st))) && mig_mono_ms() < deadline)
        usleep(50 * 1000);
    pthread_mutex_lock(&dm->lock);
    bool paused = dom->state == DOM_STATE_PAUSED && dom->reason != DOM_REASON_USER;
    dom->resume_pending = paused;
    pthread_mutex_unlock(&dm->lock);
    if (!paused)
        return;
    struct gw_error e;
    gw_error_init(&e);
    int r = domain_qmp(dom, "cont", NULL, NULL, NULL, &e);
    pthread_mutex_lock(&dm->lock);
    dom->resume_pending = false;
    if (r == 0 && dom->state == DOM_STATE_PAUSED)
        mig_set_state(dm, dom, DOM_STATE_RUNNING, DOM_REASON_MIGRATION_CANCELED, DOM_EVENT_RESUMED,
                      DOM_DETAIL_MIGRATED);
    pthread_mutex_unlock(&dm->lock);
    if (r < 0)
        log_error("domain '%s': cannot resume the guest after the migration ended (%s); it stays "
                  "paused", dom->def.name, e.msg);
}

void mig_src_kill(struct daemon *dm, struct domain *dom)
{
    pthread_mutex_lock(&dm->lock);
    bool active = dom_state_active(dom->state);
    dom->exit.migrated = true;
    pthread_mutex_unlock(&dm->lock);
    if (!active)
        return;
    domain_qmp(dom, "quit", NULL, NULL, NULL, NULL);
    pthread_mutex_lock(&dm->lock);
    if (!monitor_wait_end(dm, dom, SRC_QUIT_WAIT_MS) && dom->pid > 0) {
        if (dom->pidfd >= 0) /* the process, never a reused pid */
            vmm_signal(dom->pidfd, SIGKILL);
        else /* a VMM left unwatched at a restart: no pidfd kept */
            kill(dom->pid, SIGKILL);
        monitor_wait_end(dm, dom, SRC_QUIT_WAIT_MS);
    }
    pthread_mutex_unlock(&dm->lock);
}

/* ---- the job's owner ---- */

void mig_src_take(struct src_job *s)
{
    s->gen = mig_run_own(s->run);
    snprintf(s->job_id, sizeof(s->job_id), "%s", s->run->job.id);
    snprintf(s->name, sizeof(s->name), "%s", s->dom->def.name);
    snprintf(s->peer_uri, sizeof(s->peer_uri), "%s", s->run->job.peer_uri);
}

bool mig_src_claim(struct src_job *s)
{
    pthread_mutex_lock(&s->dm->lock);
    bool owned = mig_run_claim(s->run, s->gen);
    pthread_mutex_unlock(&s->dm->lock);
    return owned;
}

void mig_src_release(struct src_job *s)
{
    pthread_mutex_lock(&s->dm->lock);
    mig_run_release(s->run, s->gen);
    pthread_cond_broadcast(&s->dm->cond);
    pthread_mutex_unlock(&s->dm->lock);
}

/* Is the job still s's? (it may be taken over any time after) */
static bool src_owned(struct src_job *s)
{
    pthread_mutex_lock(&s->dm->lock);
    bool owned = s->run->src_gen == s->gen;
    pthread_mutex_unlock(&s->dm->lock);
    return owned;
}

int mig_src_taken_over(struct src_job *s, enum job_peer_outcome o, struct gw_error *err)
{
    if (o == JOB_PEER_RUNNING)
        log_error("domain '%s': job %s: the destination now says that it runs the guest, but the "
                  "operator resumed the guest here (domjobabort --force-resume): it may run on "
                  "both hosts; check, and destroy one of them", s->name, s->job_id);
    else if (o == JOB_PEER_PREPARED)
        log_warn("domain '%s': job %s: the destination still holds the guest prepared, but the "
                 "operator resumed it here (domjobabort --force-resume): Finish is not sent again "
                 "(the destination discards its copy when no Finish comes)", s->name, s->job_id);
    else
        log_warn("domain '%s': job %s was taken over by the operator (domjobabort --force-resume): "
                 "the migration stops asking the destination (its last answer: %s) and acts on "
                 "nothing more", s->name, s->job_id,
                 o == JOB_PEER_UNREACHABLE ? "none" : job_peer_outcome_name(o));
    return gw_error_set(err, ECANCELED, "migration job %s was given up by the operator "
                        "(domjobabort --force-resume): the guest was resumed on the source",
                        s->job_id);
}

/* ---- outcomes ---- */

void mig_src_cancel(struct src_job *s, const char *why)
{
    pthread_mutex_lock(&s->dm->lock);
    if (s->run->job.phase != JOB_PHASE_CONFIRM_CANCELLED)
        mig_job_phase(s->dm, s->run, JOB_PHASE_CONFIRM_CANCELLED, NULL);
    pthread_mutex_unlock(&s->dm->lock);
    if (s->peer) { /* Finish with cancelled: the destination discards its copy */
        struct json_object *ret = NULL;
        ctl_client_call(s->peer, "migration-finish", mig_finish_to_json(&s->run->job, true, false, NULL),
                        &ret, MIG_PEER_CALL_MS, NULL);
        json_object_put(ret);
    }
    mig_src_resume(s->dm, s->dom);
    pthread_mutex_lock(&s->dm->lock);
    mig_job_end(s->dm, s->dom, s->run, false, why);
    pthread_mutex_unlock(&s->dm->lock);
}

void mig_src_postcopy_failed(struct src_job *s, const char *why)
{
    log_error("domain '%s': post-copy failed (%s): paused on both hosts until migrate "
              "--postcopy-resume", s->dom->def.name, why);
    pthread_mutex_lock(&s->dm->lock);
    job_set_error(&s->run->job, why);
    if (s->run->job.phase != JOB_PHASE_POSTCOPY_FAILED)
        mig_job_phase(s->dm, s->run, JOB_PHASE_POSTCOPY_FAILED, NULL);
    if (dom_state_active(s->dom->state))
        mig_set_state(s->dm, s->dom, DOM_STATE_PAUSED, DOM_REASON_POSTCOPY_FAILED,
                      DOM_EVENT_SUSPENDED, DOM_DETAIL_POSTCOPY_ERROR);
    pthread_mutex_unlock(&s->dm->lock);
}

/* Post-copy: the source VMM still serves pages until it reports completed.
 * A failed query-migrate is retried (SRC_SAMPLE_TRIES in a row decide);
 * -ESHUTDOWN when the daemon stops: the caller leaves the phase as it is,
 * and restart recovery waits again (confirm-postcopy). -EIO for a break;
 * last: the VMM's last status ("" when it did not answer). */
static int wait_postcopy_done(struct src_job *s, char *last, size_t len, struct gw_error *err)
{
    unsigned failed = 0;
    last[0] = '\0';
    for (;;) {
        if (atomic_load(&s->dm->stopping))
            return gw_error_set(err, ESHUTDOWN, "the daemon is stopping");
        struct jobinfo ji;
        struct gw_error e;
        gw_error_init(&e);
        bool sampled = mig_src_sample(s, &ji, &e) == 0;
        failed = sampled ? 0 : failed + 1;
        snprintf(last, len, "%s", sampled ? ji.status : "");
        switch (mig_confirm_classify(sampled ? ji.status : NULL, failed, SRC_SAMPLE_TRIES)) {
        case MIG_CONFIRM_DONE:
            return 0;
        case MIG_CONFIRM_BROKEN:
            if (!sampled)
                return gw_error_set(err, EIO, "post-copy: the source VMM does not answer: %s", e.msg);
            return gw_error_set(err, EIO, "post-copy broke: %s", ji.errmsg[0] ? ji.errmsg : ji.status);
        case MIG_CONFIRM_WAIT:
            if (!sampled)
                log_warn("domain '%s': query-migrate failed (%u in a row): %s", s->dom->def.name,
                         failed, e.msg);
            break;
        }
        usleep(MIG_POLL_MS * 1000);
    }
}

/* migration-status of our job on the destination: up to `tries` asks,
 * each on a new connection (fresh), or on the one held with a new one after
 * a failure; pause_s apart. JOB_PEER_UNREACHABLE when it does not answer,
 * or once the job was taken over (asked without holding it: it may be,
 * so only s's copies are used). */
static enum job_peer_outcome status_tries(struct src_job *s, int tries, bool fresh,
                                          unsigned pause_s)
{
    for (int i = 0; i < tries && src_owned(s); i++) {
        struct gw_error e;
        gw_error_init(&e);
        struct json_object *ret = NULL;
        enum job_peer_outcome o;
        if (fresh) {
            ctl_client_free(s->peer);
            s->peer = NULL;
        }
        if ((s->peer || mig_src_connect(s, s->peer_uri, &e) == 0) &&
            ctl_client_call(s->peer, "migration-status", mig_head_to_json(s->job_id, s->run->uuid),
                            &ret, MIG_PEER_CALL_MS, &e) == 0 &&
            mig_outcome_from_reply(ret, &o, &e) == 0) {
            json_object_put(ret);
            return o;
        }
        json_object_put(ret);
        log_warn("domain '%s': migration-status: %s", s->name, e.msg);
        if (!fresh) {
            ctl_client_free(s->peer);
            s->peer = NULL;
        }
        if (pause_s)
            sleep(pause_s);
    }
    return JOB_PEER_UNREACHABLE;
}

/* migration-status, reconnecting once. */
static enum job_peer_outcome peer_status(struct src_job *s) { return status_tries(s, 2, false, 0); }

static int resume_stream(struct src_job *s, bool only_completed, enum perform_end *end,
                         struct gw_error *err);

/* Post-copy: wait for the VMM to complete. When it pauses while the
 * destination runs the guest, the destination's VMM may have completed
 * and only its last message (RP_POSTCOPY_DONE) been lost with the
 * connection: resume the stream there once, its VMM then answers that it
 * is done (mig_paused_classify). 0, -ESHUTDOWN, or -EIO for a break. */
static int wait_completed(struct src_job *s, struct gw_error *err)
{
    struct mig_paused_facts f = { .peer = JOB_PEER_UNREACHABLE, .max_resumes = SRC_LOST_DONE_RESUMES };
    char st[32];
    int r;
    while ((r = wait_postcopy_done(s, st, sizeof(st), err)) == -EIO) {
        f.vmm_status = st[0] ? st : NULL;
        f.asked = false;
        enum mig_paused_step step;
        while ((step = mig_paused_classify(&f)) == MIG_PAUSED_ASK_PEER) {
            f.peer = peer_status(s);
            f.asked = true;
        }
        if (step != MIG_PAUSED_RESUME)
            return r;
        f.resumes++;
        log_warn("domain '%s': %s, and the destination runs the guest: resuming the stream "
                 "in case only its last message was lost", s->dom->def.name, err->msg);
        struct gw_error e;
        gw_error_init(&e);
        enum perform_end end;
        if (resume_stream(s, true, &end, &e) < 0 || end != PERFORM_POSTCOPY) {
            log_warn("domain '%s': the destination did not complete it: %s", s->dom->def.name, e.msg);
            return r;
        }
    }
    return r;
}

int mig_src_confirm(struct src_job *s, bool postcopy, struct gw_error *err)
{
    int r;
    if (postcopy && (r = wait_completed(s, err)) < 0) {
        if (r == -ESHUTDOWN) /* perform-done stays: the next start waits again */
            return r;
        mig_src_postcopy_failed(s, err->msg);
        return -EIO;
    }
    pthread_mutex_lock(&s->dm->lock);
    mig_job_phase(s->dm, s->run, JOB_PHASE_CONFIRM, NULL);
    pthread_mutex_unlock(&s->dm->lock);
    mig_src_kill(s->dm, s->dom);
    pthread_mutex_lock(&s->dm->lock);
    mig_job_end(s->dm, s->dom, s->run, true, NULL);
    pthread_mutex_unlock(&s->dm->lock);
    log_info("domain '%s': migrated to %s", s->name, s->peer_uri); /* the job is over: copies */
    return 0;
}

/* The Finish answer was lost: ask the destination what it did. */
static enum job_peer_outcome ask_status(struct src_job *s)
{
    return status_tries(s, SRC_STATUS_TRIES, true, 1);
}

/* Act on what the destination says (Finish's answer or Status). */
static int after_peer(struct src_job *s, enum job_peer_outcome o, bool postcopy, const char *why,
                      struct gw_error *err)
{
    switch (o) {
    case JOB_PEER_RUNNING:
        return mig_src_confirm(s, postcopy, err);
    case JOB_PEER_POSTCOPY_FAILED:
        mig_src_postcopy_failed(s, why ? why : "the destination reports post-copy failed");
        return gw_error_set(err, EIO, "post-copy migration failed: the domain is paused on both "
                            "hosts; recover it with migrate --postcopy-resume");
    case JOB_PEER_UNKNOWN:
        if (!postcopy) {
            /* No record there is no word that the guest does not run there:
             * the record is lost when the destination migrates the domain
             * on or its daemon restarts. Only failed lets us resume. */
            log_error("domain '%s': the destination has no record of job %s and does not run the "
                      "domain; the guest handed over by pre-copy may run elsewhere, so it stays "
                      "paused here (job kept in phase %s; restarting this daemon asks again; "
                      "domjobabort --force-resume resumes it here)",
                      s->dom->def.name, s->run->job.id, job_phase_name(s->run->job.phase));
            return gw_error_set(err, EHOSTDOWN, "the destination has no record of migration job %s "
                                "(it may have restarted or migrated the domain on): the domain stays "
                                "paused here; check where it runs, and if it runs nowhere, resume "
                                "it here with domjobabort --force-resume", s->run->job.id);
        }
        /* fall through */
    case JOB_PEER_FAILED:
        if (postcopy) {
            mig_src_postcopy_failed(s, why ? why : "the destination gave the guest up");
            return gw_error_set(err, EIO, "%s", why ? why : "post-copy migration failed");
        }
        mig_src_cancel(s, why ? why : "the destination discarded the migration");
        return gw_error_set(err, EIO, "%s", why ? why : "the destination discarded the migration");
    default:
        return gw_error_set(err, ETIMEDOUT, "the outcome of the migration is unknown (the "
                            "destination does not answer): the domain stays paused here; the "
                            "daemon asks again when it restarts%s",
                            postcopy ? "" : " (if it runs nowhere else, domjobabort "
                                            "--force-resume resumes it here)");
    }
}

/* Act on what the destination said after waiting for it unclaimed
 * (Status is read-only): only if the job is still ours. */
static int act_on(struct src_job *s, enum job_peer_outcome o, bool postcopy, const char *why,
                  struct gw_error *err)
{
    if (!mig_src_claim(s))
        return mig_src_taken_over(s, o, err);
    int r = after_peer(s, o, postcopy, why, err);
    mig_src_release(s);
    return r;
}

/* Send Finish with the statistics ji and take its answer (*o;
 * JOB_PEER_UNREACHABLE for none). Returns the call's result. */
static int send_finish(struct src_job *s, bool postcopy, const struct jobinfo *ji,
                       enum job_peer_outcome *o, struct gw_error *e)
{
    if (mig_fault("src-before-finish")) {
        log_error("injected fault src-before-finish: exiting before Finish was sent");
        _exit(99);
    }
    struct json_object *ret = NULL;
    *o = JOB_PEER_UNREACHABLE;
    int r = ctl_client_call(s->peer, "migration-finish",
                            mig_finish_to_json(&s->run->job, false, postcopy, jobinfo_to_json(ji)),
                            &ret, MIG_PEER_CALL_MS, e);
    if (r == 0 && mig_outcome_from_reply(ret, o, e) < 0)
        *o = JOB_PEER_UNREACHABLE;
    json_object_put(ret);
    if (mig_fault("src-after-finish")) {
        log_error("injected fault src-after-finish: exiting after Finish (answer %s)",
                  job_peer_outcome_name(*o));
        _exit(99);
    }
    return r;
}

/* Finish, claimed from before it is sent until its answer was acted on:
 * a forced resume waits rather than resume a guest that Finish may be
 * starting on the destination. The waits on migration-status are not
 * claimed (they change nothing): the job may be taken over meanwhile, and
 * then nothing is done with the answer, nor Finish sent again. */
static int finish(struct src_job *s, bool postcopy, struct gw_error *err)
{
    if (!mig_src_claim(s)) /* to be sent again, but the job was taken over: never */
        return mig_src_taken_over(s, JOB_PEER_PREPARED, err);
    struct jobinfo ji;
    pthread_mutex_lock(&s->dm->lock);
    ji = s->run->info;
    /* Sent again (the destination said prepared): perform-done is saved. */
    int r = s->run->job.phase == JOB_PHASE_PERFORM_DONE
                ? 0
                : mig_job_phase(s->dm, s->run, JOB_PHASE_PERFORM_DONE, err);
    pthread_mutex_unlock(&s->dm->lock);
    if (r < 0) {
        mig_src_release(s);
        return r;
    }
    enum job_peer_outcome o;
    struct gw_error e;
    gw_error_init(&e);
    r = send_finish(s, postcopy, &ji, &o, &e);
    /* Only an error answer (-EREMOTEIO) says the destination did not take
     * the guest; anything else, a malformed reply (-EBADMSG) included, is
     * no word at all: ask migration-status below, never resume on it. */
    if (r == -EREMOTEIO) { /* an error answer: the destination does not run the guest */
        mig_src_release(s);
        /* ... unless it answered so for want of any record of the job:
         * that is unknown, not failed */
        o = peer_status(s) == JOB_PEER_UNKNOWN ? JOB_PEER_UNKNOWN : JOB_PEER_FAILED;
        return act_on(s, o, postcopy, e.msg, err);
    }
    if (o == JOB_PEER_UNREACHABLE) {
        log_warn("domain '%s': no answer to Finish (%s); asking the destination", s->name, e.msg);
        mig_src_release(s);
        o = ask_status(s);
        if (o == JOB_PEER_PREPARED && ++s->finish_resent <= SRC_FINISH_RESENDS) /* not resumed: again */
            return finish(s, postcopy, err);
        if (o == JOB_PEER_PREPARED && src_owned(s)) /* still not resumed there: nor here */
            o = JOB_PEER_UNREACHABLE;
        return act_on(s, o, postcopy, NULL, err);
    }
    r = after_peer(s, o, postcopy, NULL, err);
    mig_src_release(s);
    return r;
}

int mig_src_finish_confirm(struct src_job *s, enum perform_end end, struct gw_error *err)
{
    switch (end) {
    case PERFORM_COMPLETED:
        return finish(s, false, err);
    case PERFORM_POSTCOPY:
        pthread_mutex_lock(&s->dm->lock);
        if (s->run->src_gen != s->gen) { /* a restart's continue thread, taken over */
            pthread_mutex_unlock(&s->dm->lock);
            return mig_src_taken_over(s, JOB_PEER_UNREACHABLE, err);
        }
        if (s->run->job.phase == JOB_PHASE_PERFORM_DONE || /* recovery: back through perform-postcopy */
            s->run->job.phase == JOB_PHASE_POSTCOPY_FAILED)
            s->run->job.phase = JOB_PHASE_PERFORM_POSTCOPY;
        /* A post-copy Finish: the switch is recorded whoever saw it (the
         * Perform loop may not have, a restarted daemon's continue did not);
         * finish() saves it with perform-done. */
        s->run->job.postcopy_started = true;
        s->switched = true;
        pthread_mutex_unlock(&s->dm->lock);
        return finish(s, true, err);
    case PERFORM_BROKEN:
        mig_src_postcopy_failed(s, err->msg);
        return -EIO;
    case PERFORM_STOPPING:
        return -ESHUTDOWN;
    case PERFORM_VMM_GONE:
        pthread_mutex_lock(&s->dm->lock);
        if (s->run->job.phase == JOB_PHASE_PERFORM)
            mig_job_phase(s->dm, s->run, JOB_PHASE_CONFIRM_CANCELLED, NULL);
        pthread_mutex_unlock(&s->dm->lock);
        mig_src_cancel(s, err->msg);
        return -ESRCH;
    default:
        mig_src_cancel(s, err->msg);
        return -EIO;
    }
}

/* ---- --postcopy-resume ---- */

static int prepare_resume(struct src_job *s, bool only_completed, char *uri, size_t len,
                          struct gw_error *err)
{
    struct json_object *a = mig_head_to_json(s->run->job.id, s->run->uuid), *ret = NULL;
    json_object_object_add(a, "dest_host", json_object_new_string(s->dest_host));
    if (only_completed)
        json_object_object_add(a, "only_completed", json_object_new_boolean(1));
    int r = ctl_client_call(s->peer, "migration-prepare-resume", a, &ret, MIG_PEER_CALL_MS, err);
    if (r == 0)
        r = mig_uri_from_reply(ret, "answer", uri, len, err);
    json_object_put(ret);
    return r;
}

/* The VMM's query-migrate postcopy-pauses (absent: 0; -1 when the query
 * fails or the member is not a number). */
static int64_t vmm_pauses(struct domain *dom)
{
    struct json_object *ret = NULL, *v;
    int64_t n = -1;
    if (domain_qmp(dom, "query-migrate", NULL, &ret, NULL, NULL) == 0)
        n = !json_object_object_get_ex(ret, "postcopy-pauses", &v) ? 0
            : json_object_is_type(v, json_type_int)               ? json_object_get_int64(v)
                                                                   : -1;
    json_object_put(ret);
    return n;
}

/* Wait for the resumed stream to run again (postcopy-active or completed),
 * at most SRC_RESUME_WAIT_MS; pauses_before: postcopy-pauses before
 * `migrate resume`. */
static enum perform_end wait_resumed(struct src_job *s, int64_t pauses_before, struct gw_error *err)
{
    struct mig_resume_facts f = { .pauses_before = pauses_before, .limit_ms = SRC_RESUME_WAIT_MS };
    uint64_t t0 = mig_mono_ms();
    for (;;) {
        usleep(MIG_POLL_MS * 1000);
        struct jobinfo ji;
        if (mig_src_sample(s, &ji, err) < 0)
            return PERFORM_BROKEN;
        f.status = ji.status;
        f.errmsg = ji.errmsg;
        f.pauses_now = vmm_pauses(s->dom);
        f.seen_recover |= !strcmp(ji.status, "postcopy-recover");
        f.elapsed_ms = mig_mono_ms() - t0;
        switch (mig_resume_classify(&f)) {
        case MIG_RESUME_RUNNING:
            return PERFORM_POSTCOPY;
        case MIG_RESUME_FAILED:
            gw_error_set(err, EIO, "post-copy recovery failed: %s", ji.errmsg[0] ? ji.errmsg : ji.status);
            return PERFORM_BROKEN;
        case MIG_RESUME_TIMEOUT: /* back to postcopy-paused, so that it can be retried */
            domain_qmp(s->dom, "migrate-pause", NULL, NULL, NULL, NULL);
            gw_error_set(err, ETIMEDOUT, "post-copy recovery failed: the source VMM did not "
                         "resume the stream within %d s", SRC_RESUME_WAIT_MS / 1000);
            return PERFORM_BROKEN;
        case MIG_RESUME_WAIT:
            break;
        }
    }
}

/* Prepare-resume on the destination, `migrate resume` on our VMM, then
 * wait until it runs post-copy again (*end). -errno when the resume could
 * not be started (the destination refused, the VMM refused). */
static int resume_stream(struct src_job *s, bool only_completed, enum perform_end *end,
                         struct gw_error *err)
{
    char uri[JOB_URI_MAX];
    int64_t pauses = vmm_pauses(s->dom);
    int r;
    if (!s->peer && (r = mig_src_connect(s, s->run->job.peer_uri, err)) < 0)
        return r;
    if ((r = prepare_resume(s, only_completed, uri, sizeof(uri), err)) < 0)
        return r;
    struct json_object *a = json_object_new_object();
    json_object_object_add(a, "uri", json_object_new_string(uri));
    json_object_object_add(a, "resume", json_object_new_boolean(1));
    if ((r = domain_qmp(s->dom, "migrate", a, NULL, NULL, err)) < 0)
        return r;
    log_info("domain '%s': post-copy recovery over %s", s->dom->def.name, uri);
    *end = wait_resumed(s, pauses, err);
    return 0;
}

int mig_src_recover_postcopy(struct src_job *s, struct gw_error *err)
{
    pthread_mutex_lock(&s->dm->lock);
    int r = mig_job_phase(s->dm, s->run, JOB_PHASE_PERFORM_POSTCOPY, err);
    s->switched = true;
    s->run->t0_ms = s->run->t0_ms ? s->run->t0_ms : mig_mono_ms();
    pthread_mutex_unlock(&s->dm->lock);
    if (r < 0)
        return r;
    enum perform_end end;
    if ((r = resume_stream(s, false, &end, err)) < 0) {
        mig_src_postcopy_failed(s, err->msg);
        return r;
    }
    return mig_src_finish_confirm(s, end, err);
}
