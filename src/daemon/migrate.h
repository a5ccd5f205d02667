/* Migration between two godwitd daemons, wired to domains, VMMs and the
 * control protocol (docs/migration-protocol.md):
 *   migrate_src.c   the source: Begin, Perform (drives the VMM with the
 *                   policy), Finish request, Confirm; post-copy recovery
 *   migrate_dst.c   the destination: Prepare, Finish, Abort, Status,
 *                   Prepare-resume, and the watcher of an incoming VMM
 *   migrate_cmds.c  the operator's commands on a running job (jobinfo,
 *                   abort and forced resume, post-copy switch, downtime,
 *                   speed) and the per-domain migration records
 *   migrate_recover.c  what a restarted daemon does with saved jobs
 *   migrate_peer.c  the messages (pure)
 *
 * Each domain that migrates has a struct mig_run (found by UUID) holding
 * its saved job, flags, the last statistics and the completed job's. All
 * fields are protected by dm->lock. While job.phase is not terminal the
 * domain's job slot is held (DOM_JOB_MIGRATION_OUT/IN).
 *
 * Returns: 0 or -errno with err filled. Functions marked (locked) are
 * called with dm->lock held and never block. */
#ifndef GW_DAEMON_MIGRATE_H
#define GW_DAEMON_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/daemon.h"
#include "daemon/job.h"
#include "daemon/jobinfo.h"
#include "daemon/mig_policy.h"

#define MIG_POLL_MS          200     /* query-migrate period while a migration runs */
#define MIG_PEER_CONNECT_MS  10000
#define MIG_PEER_CALL_MS     60000   /* Prepare, Finish */
#define MIG_FINISH_WAIT_MS   60000   /* destination: a completed pre-copy stream waits this long for Finish */
#define MIG_STREAM_START_WAIT_MS 60000 /* destination: an incoming stream not started (setup) this
                                          long after the watch began is discarded */
#define MIG_PORT_MIN         49152   /* destination VMM ports (libvirt's range) */
#define MIG_PORT_MAX         49215

struct mig_run {
    struct mig_run *next;
    char uuid[DOM_UUID_LEN + 1];
    struct job job;
    struct mig_flags flags;
    struct mig_policy policy;
    struct jobinfo info;            /* the running job's last statistics */
    bool have_info;
    struct jobinfo completed;       /* the last finished job's (domjobinfo --completed) */
    bool have_completed;
    struct json_object *pc_stats;   /* destination: the VMM's post-copy fault statistics (or NULL) */
    struct json_object *pc_completed;
    uint64_t t0_ms;                 /* monotonic start of the job */
    /* operator requests, picked up by the Perform loop */
    bool want_abort, want_postcopy;
    /* source: the owner of the job. The thread that drives it (the
     * domain-migrate request, or a restart's continue thread) took src_gen
     * when it began (mig_run_own); a forced resume (domain-jobabort
     * force_resume) takes the job over the same way, and from then on that
     * thread acts on nothing (mig_run_claim fails). */
    unsigned src_gen;
    bool src_busy;                  /* the owner sends Finish or acts on an answer: a forced
                                       resume waits for it to end (bounded) */
    /* next-migration settings (migrate-setmaxdowntime / -setspeed without a job) */
    uint64_t downtime_ms, speed_mib_s;
    /* destination */
    bool created;                   /* Prepare defined the domain: forget it on failure */
    struct dom_def *prev_def;       /* the definition Prepare replaced (the domain was defined
                                       here, inactive): put back if the job fails; NULL: none */
    bool watcher;                   /* a watcher thread follows the incoming VMM; set and
                                       cleared by mig_watch_claim/_release only */
    unsigned watch_gen;             /* the generation of the last watcher claimed: only
                                       that watcher clears `watcher` */
    bool finish_postcopy;           /* Finish is a post-copy one (mig_finish_postcopy): the
                                       watcher ends the job at completed */
    bool finishing;                 /* Finish's handler is at work (migration-status answers
                                       prepared until the guest runs: its cont succeeded) */
    bool preparing;                 /* Prepare's handler is at work (it uses the domain
                                       without dm->lock): Finish and migration-abort wait
                                       for it to end (bounded), or are refused */
    char dest_host[256];
};

struct mig_ctx;

/* daemon.c: set-up, stopping (waits for watcher threads), freeing. */
int migrate_init(struct daemon *dm, struct gw_error *err);
void migrate_stop(struct daemon *dm);
void migrate_free(struct daemon *dm);
/* recover.c: after the domains were found again, apply the saved jobs. */
void migrate_recover(struct daemon *dm);

/* ---- migrate_cmds.c ---- */
/* (locked) The record of a domain, created when missing (NULL: no memory). */
struct mig_run *mig_run_get(struct daemon *dm, const char *uuid);
struct mig_run *mig_run_find(struct daemon *dm, const char *uuid);
/* (locked) Save the job (logs a failure); 0 or -errno. */
int mig_job_save(struct daemon *dm, struct mig_run *run);
/* (locked) Move the job to a phase and save it. */
int mig_job_phase(struct daemon *dm, struct mig_run *run, enum job_phase to, struct gw_error *err);
/* (locked) Record (and save) that the job's guest went post-copy
 * (job.postcopy_started), once; nothing for a job no longer active. */
void mig_job_note_postcopy(struct daemon *dm, struct mig_run *run);
/* (locked) End the job: terminal phase, completed statistics, job file
 * removed, job slot released, job-completed event. msg: the error (NULL
 * on success). */
void mig_job_end(struct daemon *dm, struct domain *dom, struct mig_run *run, bool success,
                 const char *msg);
/* (locked) Free run->prev_def (a job that succeeded keeps the new definition). */
void mig_run_drop_prev_def(struct mig_run *run);
/* (locked) A Suspended/Resumed/Stopped event with a state change, also when
 * the state itself does not change (paused -> paused with another reason). */
void mig_set_state(struct daemon *dm, struct domain *dom, enum dom_state st, enum dom_reason why,
                   enum dom_event ev, enum dom_event_detail detail);
/* Milliseconds: wall clock, monotonic. */
uint64_t mig_wall_ms(void);
uint64_t mig_mono_ms(void);
/* query-migrate on dom, turned into statistics (and, on a destination,
 * its post-copy fault statistics kept in run). (job, takes dm->lock) */
int mig_query(struct daemon *dm, struct domain *dom, struct mig_run *run, enum jobinfo_op op, uint64_t elapsed_ms,
              struct jobinfo *ji, struct gw_error *err);
/* What a VMM's query-migrate says about a post-copy switch. */
struct mig_vmm_view {
    bool answered;          /* the VMM answered query-migrate */
    char status[32];        /* its status ("" when it gives none) */
    bool said;              /* it gave a boolean postcopy-started */
    bool started;           /* ... and its value (false unless said) */
};
/* Ask dom's VMM (job held, lock not held). */
void mig_vmm_view(struct domain *dom, struct mig_vmm_view *v);
/* migrate-set-capabilities on dom's VMM: n capabilities names[i] = on[i].
 * (job held, lock not held) */
int mig_vmm_set_caps(struct domain *dom, const char *const *names, const bool *on, int n,
                     struct gw_error *err);
/* (locked) Remove a domain that Prepare created here, with its state file
 * and the `Undefined Removed` event. */
void mig_forget_domain(struct daemon *dm, struct domain *dom);
/* Test-only fault injection: true when GODWIT_FAULT_INJECT names point. */
bool mig_fault(const char *point);
/* (locked) A number for the next job id. */
unsigned mig_next_job_seq(struct daemon *dm);
/* (locked) Count watcher threads (migrate_stop waits for none). */
void mig_watchers_add(struct daemon *dm, int delta);

/* ---- the watcher flag (migrate_watch.c) ---- */
/* (locked) A new watcher follows run's VMM: run->watcher set, a new
 * generation returned (the watcher's own). */
static inline unsigned mig_watch_claim(struct mig_run *run)
{
    run->watcher = true;
    return ++run->watch_gen;
}
/* (locked) The watcher of generation gen has ended: run->watcher cleared
 * only when no newer watcher claimed it since (true when cleared). */
static inline bool mig_watch_release(struct mig_run *run, unsigned gen)
{
    if (run->watch_gen != gen)
        return false;
    run->watcher = false;
    return true;
}

/* ---- the owner of a source job (migrate_confirm.c, migrate_cmds.c) ---- */
/* (locked) A new owner takes run's source job (a migration's driving
 * thread when it begins, or a forced resume): the previous owner's claims
 * fail from now on. Returns the new owner's generation. */
static inline unsigned mig_run_own(struct mig_run *run)
{
    run->src_busy = false;
    return ++run->src_gen;
}
/* (locked) The owner of generation gen is about to act on the job (send
 * Finish, act on the destination's answer): false when it was taken over
 * (it must act on nothing); else src_busy is set until mig_run_release. */
static inline bool mig_run_claim(struct mig_run *run, unsigned gen)
{
    if (run->src_gen != gen)
        return false;
    run->src_busy = true;
    return true;
}
/* (locked) The owner of generation gen is done acting (nothing when the
 * job has another owner now). The caller broadcasts dm->cond. */
static inline void mig_run_release(struct mig_run *run, unsigned gen)
{
    if (run->src_gen == gen)
        run->src_busy = false;
}

/* ---- migrate_dst.c ---- */
/* Kill the incoming VMM of dom and forget the domain if Prepare created
 * it; the job ends failed with msg. (job held, dm->lock NOT held) */
void mig_dst_discard(struct daemon *dm, const char *uuid, const char *msg);
/* (locked) A failed incoming job on a domain that was defined here: put
 * back the definition Prepare replaced (run->prev_def), in memory and on
 * disk. Nothing when there is none. */
void mig_dst_restore_def(struct daemon *dm, struct domain *dom, struct mig_run *run);
/* Start the watcher of an incoming job (locked). */
int mig_dst_watch(struct daemon *dm, struct mig_run *run);
/* (locked) Post-copy broke on the destination (or Finish could not resume
 * the guest after the switch): phase postcopy-failed, the domain paused
 * with reason post-copy failed (event Suspended Post-copy Error); the VMM
 * is kept for a recovery. Nothing for a job no longer active. why: for
 * the log. */
void mig_dst_postcopy_failed(struct daemon *dm, struct domain *dom, struct mig_run *run,
                             const char *why);

/* ---- migrate_src.c ---- */
/* Resume a source guest after a failed migration (job held, no lock). */
void mig_src_resume(struct daemon *dm, struct domain *dom);
/* Confirm success: quit the source VMM, shut off (migrated) (job held, no lock). */
void mig_src_kill(struct daemon *dm, struct domain *dom);

extern const struct daemon_command migrate_commands[];
extern const size_t migrate_ncommands;
extern const struct daemon_command migrate_peer_commands[];
extern const size_t migrate_peer_ncommands;
extern const struct daemon_command migrate_src_commands[];
extern const size_t migrate_src_ncommands;

#endif
