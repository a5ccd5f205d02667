/* The source side's context for one migration, shared by migrate_src.c
 * (Begin, Perform) and migrate_confirm.c (Finish, Confirm, recovery).
 * Used by the thread that drives the migration (a client's thread running
 * domain-migrate, or recovery): the job's owner (mig_src_take). The job
 * slot is held until the job ends, or until a forced resume takes the job
 * over in perform-done (domain-jobabort force_resume, migrate_cmds.c):
 * from then on the thread acts on nothing (mig_src_claim fails) and uses
 * only its copies of the job's id, name and peer, never dom.
 * Returns: 0 or -errno with err filled. */
#ifndef GW_DAEMON_MIGRATE_SRC_H
#define GW_DAEMON_MIGRATE_SRC_H

#include "daemon/migrate.h"
#include "daemon/migrate_peer.h"

struct ctl_client;

#define SRC_SAMPLE_TRIES 10 /* Perform, and Confirm's post-copy wait: failed query-migrate in a
                               row (MIG_POLL_MS apart) before they decide anything */

struct src_job {
    struct daemon *dm;
    struct domain *dom;
    struct mig_run *run;
    struct ctl_client *peer;
    char dest_host[MIG_HOST_MAX];
    struct mig_policy_state pst;
    uint64_t last_iteration;
    bool switched;                  /* post-copy switch requested */
    unsigned finish_resent;         /* Finish sent again after a lost answer */
    /* the owner's (mig_src_take) */
    unsigned gen;                   /* its generation (mig_run_own) */
    char job_id[JOB_ID_MAX];        /* copies, for the waits on the destination */
    char name[DOM_NAME_MAX + 1];
    char peer_uri[JOB_URI_MAX];
};

/* How Perform ended. */
enum perform_end {
    PERFORM_COMPLETED,   /* pre-copy stream complete (source VMM: completed) */
    PERFORM_POSTCOPY,    /* post-copy running (source VMM: postcopy-active) */
    PERFORM_FAILED,      /* the VMM's migration failed or was cancelled before the switch */
    PERFORM_BROKEN,      /* it failed after the post-copy switch */
    PERFORM_VMM_GONE,    /* the source VMM died */
    PERFORM_STOPPING,    /* the daemon stops: the saved job is recovered at the next start */
};

/* migrate_src.c */
enum perform_end mig_src_perform(struct src_job *s, const char *uri, struct gw_error *err);
/* Connect to the peer daemon (s->peer). */
int mig_src_connect(struct src_job *s, const char *peer_uri, struct gw_error *err);
/* Update the job's statistics from the VMM; *status: its status. */
int mig_src_sample(struct src_job *s, struct jobinfo *ji, struct gw_error *err);

/* migrate_confirm.c: the job's owner. (locked) s takes s->run's job
 * (mig_run_own) and copies its id, domain name and peer. */
void mig_src_take(struct src_job *s);
/* The owner is about to act on the job (locks): false when a forced
 * resume took it over; then nothing may be done, nor dom used. Else it
 * holds the job (run->src_busy) until mig_src_release. */
bool mig_src_claim(struct src_job *s);
void mig_src_release(struct src_job *s);
/* The job was taken over while s waited: log what the destination said
 * last (o; JOB_PEER_UNREACHABLE: nothing) and fill err for s's caller.
 * Returns -ECANCELED. */
int mig_src_taken_over(struct src_job *s, enum job_peer_outcome o, struct gw_error *err);

/* migrate_confirm.c: from the end of Perform to the end of the job. */
int mig_src_finish_confirm(struct src_job *s, enum perform_end end, struct gw_error *err);
/* Confirm success: (post-copy) wait until the VMM reports completed, then
 * phase confirm, quit the VMM, job done. -ESHUTDOWN when the daemon stops
 * during the wait (phase left as it was); -EIO after post-copy failed. */
int mig_src_confirm(struct src_job *s, bool postcopy, struct gw_error *err);
/* Post-copy failed: both paused until --postcopy-resume (locks). */
void mig_src_postcopy_failed(struct src_job *s, const char *why);
/* Give up before the switch: tell the destination, resume the guest, end the job. */
void mig_src_cancel(struct src_job *s, const char *why);
/* --postcopy-resume: Prepare-resume, migrate resume, then Finish/Confirm. */
int mig_src_recover_postcopy(struct src_job *s, struct gw_error *err);

#endif
