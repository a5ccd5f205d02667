/* The destination's watcher: one thread per incoming job that follows the
 * incoming VMM with query-migrate, keeps the job's statistics for
 * domjobinfo, and acts on what the protocol leaves to the destination
 * (docs/migration-protocol.md, Prepare and Finish):
 *   prepare:  the stream failed -> discard; the stream did not start
 *             within MIG_STREAM_START_WAIT_MS -> discard; a pre-copy
 *             stream completed but no Finish came within
 *             MIG_FINISH_WAIT_MS -> discard; post-copy (postcopy-active)
 *             -> keep, whatever the time; postcopy-paused/-recover ->
 *             paused with reason post-copy failed (never discarded by a
 *             timer: the source decides);
 *   finish:   (post-copy) completed -> job done (pre-copy: Finish's
 *             handler ends the job, never the watcher); postcopy-paused or
 *             failed -> paused with reason post-copy failed;
 *   postcopy-failed: wait for recovery (Finish moves it back).
 * A failed query-migrate discards only in prepare before any post-copy
 * status (mig_watch_unanswered_discard). The first post-copy status is
 * saved in the job (postcopy_started), so that a restarted daemon knows
 * the VMM may hold the only guest; a restarted daemon starts the watcher
 * again for every incoming job it keeps (migrate_recover.c).
 * While a watcher runs it may use the domain without dm->lock, so a
 * discarded job keeps the domain's job slot held until the watcher has
 * ended; it then releases it, or forgets a domain that Prepare created
 * (or puts back the definition Prepare replaced). run->watcher belongs to
 * the watcher that set it (mig_watch_claim's generation): a stale watcher
 * of an earlier job never clears a newer one's. */
#define LOG_PREFIX "migrate-dst"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/domain_store.h"
#include "daemon/migrate.h"
#include "daemon/migrate_peer.h"
#include "daemon/monitor.h"

struct watch_arg {
    struct daemon *dm;
    unsigned gen;  /* mig_watch_claim's: the run's watcher flag is ours while it matches */
    char uuid[DOM_UUID_LEN + 1];
    char job[JOB_ID_MAX];
    bool postcopy; /* the job recorded a post-copy switch before the watch began */
};

/* What the watcher does after one look at the VMM. */
enum watch_step { WATCH_GO_ON, WATCH_DISCARD, WATCH_STOP };

/* What the watcher remembers between looks (monotonic ms). */
struct watch_times {
    uint64_t start_ms;   /* the watch began (the incoming VMM listens) */
    uint64_t arrived_ms; /* a pre-copy stream was first seen completed (0: not yet) */
    bool postcopy;       /* the VMM reported a post-copy status: no timer discards it */
    unsigned failed_queries; /* query-migrate failures in a row */
};

#define WATCH_QUERY_TRIES 10 /* failed query-migrate in a row (pre-copy) before a discard */

/* (locked) Decide from the phase and the VMM's status, and act on what
 * does not block. */
static enum watch_step step(struct daemon *dm, struct domain *dom, struct mig_run *run,
                            const struct jobinfo *ji, struct watch_times *t, char *why, size_t len)
{
    uint64_t now = mig_mono_ms();
    if (!strncmp(ji->status, "postcopy-", 9) || ji->postcopy_started) {
        t->postcopy = true;
        mig_job_note_postcopy(dm, run);
    }
    if (run->job.phase == JOB_PHASE_PREPARE && !strcmp(ji->status, "completed") && !t->postcopy &&
        !t->arrived_ms)
        t->arrived_ms = now;
    if (run->job.phase == JOB_PHASE_PREPARE &&
        mig_watch_start_overdue(ji->status, t->start_ms, now, MIG_STREAM_START_WAIT_MS)) {
        snprintf(why, len, "the migration stream did not start within %d s (the source gave up)",
                 MIG_STREAM_START_WAIT_MS / 1000);
        return WATCH_DISCARD;
    }
    /* A pre-copy Finish: its handler checks, resumes and ends the job (or
     * discards it), never the watcher meanwhile. */
    if (run->job.phase == JOB_PHASE_FINISH && !run->finish_postcopy)
        return WATCH_GO_ON;
    switch (mig_watch_classify(run->job.phase, ji->status, t->arrived_ms, now, MIG_FINISH_WAIT_MS)) {
    case MIG_WATCH_DISCARD:
        if (t->arrived_ms)
            snprintf(why, len, "no Finish from the source within %d s", MIG_FINISH_WAIT_MS / 1000);
        else
            snprintf(why, len, "the incoming migration failed%s%s", ji->errmsg[0] ? ": " : "",
                     ji->errmsg);
        return WATCH_DISCARD;
    case MIG_WATCH_COMPLETE:
        dom->reason = DOM_REASON_MIGRATED;
        domain_save_status(dm, dom, NULL);
        mig_job_end(dm, dom, run, true, NULL);
        return WATCH_STOP;
    case MIG_WATCH_POSTCOPY_FAILED:
        mig_dst_postcopy_failed(dm, dom, run, ji->errmsg[0] ? ji->errmsg : ji->status);
        return WATCH_GO_ON;
    default:
        return WATCH_GO_ON;
    }
}

void mig_dst_postcopy_failed(struct daemon *dm, struct domain *dom, struct mig_run *run,
                             const char *why)
{
    if (!job_active(&run->job)) /* ended meanwhile (its VMM is gone): nothing to keep */
        return;
    log_error("domain '%s': post-copy broke (%s): paused until recovered", dom->def.name, why);
    if (run->job.phase != JOB_PHASE_POSTCOPY_FAILED)
        mig_job_phase(dm, run, JOB_PHASE_POSTCOPY_FAILED, NULL);
    if (dom_state_active(dom->state))
        mig_set_state(dm, dom, DOM_STATE_PAUSED, DOM_REASON_POSTCOPY_FAILED, DOM_EVENT_SUSPENDED,
                      DOM_DETAIL_POSTCOPY_ERROR);
}

/* (locked) The job and its domain, if the job is still the one watched. */
static bool current(struct daemon *dm, const struct watch_arg *a, struct domain **dom,
                    struct mig_run **run)
{
    *dom = daemon_find_domain_uuid(dm, a->uuid);
    *run = mig_run_find(dm, a->uuid);
    return *dom && *run && strcmp((*run)->job.id, a->job) == 0 && job_active(&(*run)->job);
}

/* One look; false when the watch is over. */
static bool look(struct watch_arg *a, struct watch_times *t)
{
    struct daemon *dm = a->dm;
    struct domain *dom;
    struct mig_run *run;
    char why[JOB_ERROR_MAX] = "";
    pthread_mutex_lock(&dm->lock);
    bool go = current(dm, a, &dom, &run) && !atomic_load(&dm->stopping);
    bool alive = go && dom_state_active(dom->state);
    uint64_t t0 = go ? run->t0_ms : 0;
    enum job_phase phase = go ? run->job.phase : JOB_PHASE_NONE;
    pthread_mutex_unlock(&dm->lock);
    if (!go)
        return false;
    struct jobinfo ji;
    if (!alive) {
        mig_dst_discard(dm, a->uuid, "the incoming VMM is gone");
        return false;
    }
    if (mig_query(dm, dom, run, JOBINFO_OP_MIGRATION_IN, mig_mono_ms() - t0, &ji, NULL) < 0) {
        /* One failed query decides nothing; after a post-copy status, or
         * once Finish came, the VMM may hold the only guest: never kill it
         * for not answering. */
        if (!mig_watch_unanswered_discard(phase, t->postcopy, ++t->failed_queries,
                                          WATCH_QUERY_TRIES))
            return true;
        mig_dst_discard(dm, a->uuid, "the incoming VMM does not answer query-migrate");
        return false;
    }
    t->failed_queries = 0;
    pthread_mutex_lock(&dm->lock);
    enum watch_step s = WATCH_STOP;
    if (current(dm, a, &dom, &run)) {
        run->info = ji;
        run->have_info = true;
        s = step(dm, dom, run, &ji, t, why, sizeof(why));
    }
    pthread_mutex_unlock(&dm->lock);
    if (s == WATCH_DISCARD)
        mig_dst_discard(dm, a->uuid, why);
    return s == WATCH_GO_ON;
}

/* After the job: forget a domain Prepare created if the job failed. */
static void cleanup(struct watch_arg *a)
{
    struct daemon *dm = a->dm;
    pthread_mutex_lock(&dm->lock);
    struct domain *dom = daemon_find_domain_uuid(dm, a->uuid);
    struct mig_run *run = mig_run_find(dm, a->uuid);
    if (run) /* a newer job's watcher may have claimed the flag since: not ours then */
        mig_watch_release(run, a->gen);
    bool ours = dom && run && strcmp(run->job.id, a->job) == 0 && !job_active(&run->job) &&
                dom->job == DOM_JOB_MIGRATION_IN; /* kept held by mig_dst_discard for us */
    if (ours)
        domain_job_end(dm, dom);
    if (ours && run->created && run->job.phase == JOB_PHASE_FAILED && !dom_state_active(dom->state)) {
        mig_forget_domain(dm, dom);
        run->created = false;
    } else if (ours && run->job.phase == JOB_PHASE_FAILED) {
        mig_dst_restore_def(dm, dom, run); /* Prepare replaced its definition */
    }
    mig_watchers_add(dm, -1);
    pthread_mutex_unlock(&dm->lock);
}

static void *watch_main(void *p)
{
    struct watch_arg *a = p;
    struct watch_times t = { .start_ms = mig_mono_ms(), .postcopy = a->postcopy };
    while (look(a, &t))
        usleep(MIG_POLL_MS * 1000);
    cleanup(a);
    free(a);
    return NULL;
}

int mig_dst_watch(struct daemon *dm, struct mig_run *run)
{
    struct watch_arg *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->dm = dm;
    snprintf(a->uuid, sizeof(a->uuid), "%s", run->uuid);
    snprintf(a->job, sizeof(a->job), "%s", run->job.id);
    a->postcopy = run->job.postcopy_started;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &attr, watch_main, a);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        free(a);
        return -r;
    }
    a->gen = mig_watch_claim(run); /* before the thread can look: the caller holds dm->lock */
    mig_watchers_add(dm, 1);
    return 0;
}
