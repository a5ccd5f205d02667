/* The messages two godwitd daemons exchange to migrate a domain
 * (docs/migration-protocol.md): building and parsing their arguments and
 * replies, and the destination's capability checks in Prepare, as pure
 * functions (unit-tested in tests/unit/test_daemon_migrate.c). The I/O is
 * in migrate_src.c (the source drives) and migrate_dst.c (handlers).
 *
 * Messages (control-protocol commands sent by the source daemon):
 *   migration-prepare         {version, job, uuid, dest_host, cookie: begin cookie}
 *                             -> {job, uuid, uri, cookie: {host, features}}
 *   migration-prepare-resume  {version, job, uuid, dest_host, only_completed?}
 *                             -> {job, uuid, uri, completed}
 *   migration-finish          {version, job, uuid, cookie: {cancelled, postcopy, stats}}
 *                             -> {job, uuid, outcome, cookie: {stats}}
 *   migration-abort           {version, job, uuid} -> {}
 *   migration-status          {version, job, uuid} -> {outcome, phase}
 *
 * Returns: 0 or -errno with err filled (-EINVAL: malformed, -EPROTONOSUPPORT:
 * other protocol version); builders return a new json_object (or NULL on
 * allocation failure). */
#ifndef GW_DAEMON_MIGRATE_PEER_H
#define GW_DAEMON_MIGRATE_PEER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "daemon/domain_def.h"
#include "daemon/job.h"

struct json_object;

#define MIG_PROTO_VERSION 1
#define MIG_PAGE_SIZE 4096
#define MIG_HOST_MAX 256

/* The common header of every migration message. */
struct mig_msg_head {
    int version;
    char job[JOB_ID_MAX];
    char uuid[JOB_UUID_LEN + 1];
};

/* The Begin cookie (the source's description of the domain and the job). */
struct mig_begin {
    struct mig_msg_head head;
    char src_host[MIG_HOST_MAX];
    char dest_host[MIG_HOST_MAX];   /* the address the source reached us at */
    struct dom_def def;             /* serial_log dropped: the destination picks its own */
    uint64_t mem_size;              /* bytes */
    uint64_t page_size;
    bool src_postcopy;              /* the source's VMM and host support post-copy */
    unsigned flags;                 /* JOB_F_* */
};

/* What the destination knows when it checks a Prepare. */
struct mig_prepare_facts {
    bool uuid_defined;              /* a domain with this UUID is defined here */
    bool uuid_active;               /* ... and active (a VMM runs) */
    bool uuid_job;                  /* ... and a job holds it */
    const char *uuid_name;          /* ... its name (borrowed; NULL when none is defined) */
    bool name_other_uuid;           /* a domain with this name but another UUID exists */
    bool name_other_active;         /* ... and it is active */
    bool local_postcopy;            /* userfaultfd works here */
};

/* Fill b from a domain and job (def is copied; free with mig_begin_fini). */
int mig_begin_init(struct mig_begin *b, const struct job *j, const struct dom_def *def,
                   const char *src_host, const char *dest_host, bool src_postcopy,
                   struct gw_error *err);
void mig_begin_fini(struct mig_begin *b);
/* The migration-prepare arguments. */
struct json_object *mig_begin_to_json(const struct mig_begin *b);
/* Parse (and validate) migration-prepare arguments; b must be fini'd after. */
int mig_begin_from_json(struct json_object *args, struct mig_begin *b, struct gw_error *err);

/* The header members every message has; refuses another version. */
struct json_object *mig_head_to_json(const char *job, const char *uuid);
int mig_head_from_json(struct json_object *args, struct mig_msg_head *h, struct gw_error *err);

/* The Prepare checks, in the order the protocol lists them; the first
 * refusal wins: -EEXIST (name/UUID in use, or the UUID defined here under
 * another name: a migration never renames a domain), -EINVAL (memory layout),
 * -ENOTSUP (post-copy asked, not supported here). */
int mig_prepare_check(const struct mig_begin *b, const struct mig_prepare_facts *f,
                      struct gw_error *err);

/* "tcp:HOST:PORT" (HOST bracketed when it is an IPv6 address). */
void mig_tcp_uri(char *buf, size_t len, const char *host, unsigned port);
/* The host part of a "tcp:HOST:PORT" peer URI (brackets removed). */
int mig_uri_host(const char *uri, char *host, size_t len, struct gw_error *err);

/* Finish: the source's cookie, and the destination's reply. */
struct mig_finish {
    struct mig_msg_head head;
    bool cancelled;
    bool postcopy;
    struct json_object *stats;      /* borrowed from the parsed arguments (may be NULL) */
};
struct json_object *mig_finish_to_json(const struct job *j, bool cancelled, bool postcopy,
                                       struct json_object *stats /* taken, may be NULL */);
int mig_finish_from_json(struct json_object *args, struct mig_finish *f, struct gw_error *err);
/* The `uri` of a Prepare or prepare-resume reply (`what` names it in the
 * error), copied into uri[len]; only a tcp:HOST:PORT address (it is given
 * to the source VMM's migrate, which would also take unix: and file:). */
int mig_uri_from_reply(struct json_object *ret, const char *what, char *uri, size_t len,
                       struct gw_error *err);
/* The outcome of a Finish or Status reply (job_peer_outcome names). */
int mig_outcome_from_reply(struct json_object *ret, enum job_peer_outcome *out,
                           struct gw_error *err);

/* ---- the phase drivers' decisions (pure) ---- */

/* The source's Perform loop, after each query-migrate of its VMM. */
enum mig_perform_step {
    MIG_PERFORM_CONTINUE,   /* keep polling (and ask the policy) */
    MIG_PERFORM_COMPLETED,  /* pre-copy complete: Finish */
    MIG_PERFORM_POSTCOPY,   /* post-copy runs: Finish (the destination must run the guest) */
    MIG_PERFORM_FAILED,     /* failed or cancelled before the switch: Confirm cancelled */
    MIG_PERFORM_BROKEN,     /* broken after the switch: post-copy failed */
};
enum mig_perform_step mig_perform_classify(const char *status, bool switched);
/* The Perform loop's query-migrate failed `failed` times in a row:
 * MIG_PERFORM_CONTINUE (retry) below max_failed, as Confirm's wait does (a
 * single failed sample decides nothing); then FAILED, or BROKEN after a
 * switch the daemon saw. */
enum mig_perform_step mig_perform_unanswered(bool switched, unsigned failed, unsigned max_failed);
/* May a VMM have made (source) or taken (destination) the post-copy
 * switch, going by its query-migrate? answered: the query succeeded;
 * status: its "status" (NULL or "": no migration); said: it has a boolean
 * "postcopy-started", started: its value. An unknown answer (no answer, or
 * a migration without postcopy-started) counts as switched: a guest that
 * may be on the destination is never resumed here nor discarded there. */
bool mig_vmm_may_have_switched(bool answered, const char *status, bool said, bool started);

/* The destination's watcher, after each query-migrate of the incoming VMM.
 * arrived_ms: when a pre-copy stream was first seen complete (0: not yet;
 * the caller never sets it once the VMM reported a post-copy status: from
 * then on the guest is no timer's to discard). */
enum mig_watch_step {
    MIG_WATCH_GO_ON,
    MIG_WATCH_DISCARD,          /* prepare: stream failed, or no Finish in time (pre-copy) */
    MIG_WATCH_COMPLETE,         /* finish (post-copy): the last page arrived: job done */
    MIG_WATCH_POSTCOPY_FAILED,  /* prepare, finish: post-copy broke (or paused before the
                                   source's commit): paused, post-copy failed */
};
enum mig_watch_step mig_watch_classify(enum job_phase phase, const char *status,
                                       uint64_t arrived_ms, uint64_t now_ms, uint64_t finish_wait_ms);
/* Prepare: has the incoming stream not started yet (status none or setup)
 * start_wait_ms after the watch began at watch_ms? Then the source gave up
 * without telling us (the guest was never here): discard. */
bool mig_watch_start_overdue(const char *status, uint64_t watch_ms, uint64_t now_ms,
                             uint64_t start_wait_ms);
/* The watcher's query-migrate failed `failed` times in a row: discard the
 * incoming VMM? Only in prepare before any post-copy status (postcopy_seen:
 * the VMM reported one, or the job recorded one), after max_failed: the
 * source still owns the guest then. Never once Finish came (its handler
 * decides; after a post-copy Finish the guest runs here) nor in
 * postcopy-failed (the VMM holds the only copy of what it received). */
bool mig_watch_unanswered_discard(enum job_phase phase, bool postcopy_seen, unsigned failed,
                                  unsigned max_failed);
/* migration-abort, and migration-finish with cancelled: may the
 * destination discard its incoming VMM? In prepare or postcopy-failed,
 * and only when its VMM may not have taken the post-copy switch
 * (vmm_switched: mig_vmm_may_have_switched(); false also when the VMM is
 * gone). A postcopy-failed VMM that says postcopy-started false paused
 * after loading the state, before the source's commit: it never ran the
 * guest. Never in finish (the guest is, or is being, resumed here). */
bool mig_abort_allowed(enum job_phase phase, bool vmm_switched);

/* Finish for no active job here (find_job failed): is the guest already
 * running here for that job? j: the destination's last job for the UUID
 * (NULL when none), guest_running: a domain with that UUID runs here. True
 * (answer outcome running, never an error, which would let the source
 * resume: two guests) when Finish is not cancelled and j is that job done,
 * or there is no job and the guest runs (the first Finish's answer was
 * lost and the source sent it again). */
bool mig_finish_already_running(const struct job *j, const struct mig_finish *f,
                                bool guest_running);

/* Finish on the destination: is the guest handed over by post-copy (the
 * reason and event it is resumed with, whether the watcher or Finish's
 * handler ends the job, and whether a failure keeps the VMM)? The incoming
 * VMM's word decides once it has one: a switch (vmm_switched: its
 * postcopy-started, or a postcopy-* status) is post-copy, whatever
 * Finish said; a stream that completed without one brought the whole
 * guest by pre-copy. Otherwise (the VMM did not arrive, or did not answer:
 * status NULL or "") said_postcopy: Finish's postcopy, or this daemon's
 * record of the job, so that a failure keeps a guest that may be ours
 * alone. */
bool mig_finish_postcopy(bool said_postcopy, const char *status, bool vmm_switched);

/* The source's Confirm, waiting for a post-copy stream to complete before
 * it quits its VMM (which serves the destination's missing pages until
 * then). status: the last query-migrate status, NULL when that query
 * failed; failed_samples: how many queries failed in a row (a single
 * failed sample decides nothing). */
enum mig_confirm_step {
    MIG_CONFIRM_WAIT,    /* postcopy-active or -recover (or a failed query, fewer than max_failed) */
    MIG_CONFIRM_DONE,    /* completed: the VMM may be quit */
    MIG_CONFIRM_BROKEN,  /* paused, failed, ..., or max_failed queries failed in a row */
};
enum mig_confirm_step mig_confirm_classify(const char *status, unsigned failed_samples,
                                           unsigned max_failed);

/* The source's --postcopy-resume, after `migrate resume`, until its VMM
 * runs post-copy again. A failed recovery takes the VMM back to
 * postcopy-paused with an error-desc "recovery failed: ..." and one more
 * postcopy-pauses; the paused status (and an older "recovery failed"
 * error) may still show before the VMM took the request, so the count
 * decides (the error-desc only when the VMM gives no count, and only once
 * postcopy-recover was seen). */
struct mig_resume_facts {
    const char *status;      /* query-migrate status */
    const char *errmsg;      /* its error-desc ("" when none) */
    int64_t pauses_before;   /* postcopy-pauses when `migrate resume` was sent (-1: unknown) */
    int64_t pauses_now;      /* postcopy-pauses now (-1: unknown) */
    bool seen_recover;       /* postcopy-recover was seen since */
    uint64_t elapsed_ms, limit_ms;
};
enum mig_resume_step {
    MIG_RESUME_WAIT,
    MIG_RESUME_RUNNING,      /* postcopy-active or completed */
    MIG_RESUME_FAILED,       /* the recovery failed (or another status) */
    MIG_RESUME_TIMEOUT,      /* still not running after limit_ms: break it off (migrate-pause) */
};
enum mig_resume_step mig_resume_classify(const struct mig_resume_facts *f);

/* migration-prepare-resume on the destination: may it run migrate-recover
 * on the domain's VMM, and for what? A paused post-copy (its job in
 * postcopy-failed) recovers as before; a VMM that completed a post-copy
 * migration (query-migrate "completed" with "postcopy-started" true) whose
 * source lost the last message (RP_POSTCOPY_DONE, stream-format.md §7)
 * listens once to tell the resuming source that it is done, whether the
 * job here is still in prepare/finish (the watcher has not looked yet),
 * done, or gone (a restart after it ended). A record of this job that
 * failed (the VMM was discarded), or another job that holds the domain,
 * refuses; a record of another, ended job says nothing about this one
 * (the VMM checks the migration's id). */
struct mig_resume_target_facts {
    const struct job *job;      /* this daemon's record for the UUID (NULL: none) */
    const char *job_id;         /* the job the source resumes */
    bool domain_active;         /* a domain with that UUID has a VMM here */
    const char *vmm_status;     /* its query-migrate status (NULL: not asked, no answer) */
    bool vmm_switched;          /* its postcopy-started (false unless it says true) */
    bool only_completed;        /* the source asks only for a completed migration
                                   (Confirm's lost RP_POSTCOPY_DONE): no recovery */
};
enum mig_resume_target {
    MIG_RESUME_TARGET_REFUSE,
    MIG_RESUME_TARGET_RECOVER,    /* paused: migrate-recover, the missing pages follow */
    MIG_RESUME_TARGET_COMPLETED,  /* completed: migrate-recover answers RP_POSTCOPY_DONE */
};
enum mig_resume_target mig_resume_target_classify(const struct mig_resume_target_facts *f);

/* The source's Confirm saw its VMM stop waiting for `completed` (the
 * break mig_confirm_classify() reports). A VMM in postcopy-paused may
 * have lost only the destination's last message: when the destination
 * says it runs the guest (migration-status `running`), resume the stream
 * there (migration-prepare-resume with only_completed), at most
 * max_resumes times; its VMM answers that the migration completed, or the
 * destination refuses and it is a break. */
struct mig_paused_facts {
    const char *vmm_status;      /* the source VMM's last status (NULL: no answer) */
    bool asked;                  /* the destination was asked (migration-status) */
    enum job_peer_outcome peer;  /* its answer (JOB_PEER_UNREACHABLE: none) */
    unsigned resumes, max_resumes;
};
enum mig_paused_step {
    MIG_PAUSED_FAILED,    /* a break: post-copy failed, paused until --postcopy-resume */
    MIG_PAUSED_ASK_PEER,  /* ask the destination's migration-status first */
    MIG_PAUSED_RESUME,    /* resume the stream: the destination may have completed */
};
enum mig_paused_step mig_paused_classify(const struct mig_paused_facts *f);

/* domain-jobabort on a source job (not postcopy-failed, which gives up):
 * only in perform and perform-postcopy, where the Perform loop reads the
 * request (and refuses it after a switch it saw); begin, perform-done and
 * confirm* are refused explicitly (nothing would read it). */
bool mig_jobabort_allowed(enum job_phase phase);

/* domain-jobabort --force-resume: the operator's exit from a source job
 * kept in perform-done because its destination has no record of it or
 * does not answer (the source never resumes on that by itself). May the
 * source take the job over and resume its guest here? Only a job in
 * perform-done that recorded no post-copy switch, and, once asked
 * (vmm_asked), whose VMM says explicitly that it did not hand the guest
 * over: postcopy-started false, and no postcopy-* status. A VMM that does
 * not answer or does not say counts as handed over (the guest's newer
 * state may be elsewhere). The operator asserts that the destination does
 * not run the guest; this rule only refuses where the guest is known, or
 * may be, elsewhere. */
struct mig_force_facts {
    enum job_kind kind;
    enum job_phase phase;
    bool job_switched;          /* the job recorded a post-copy switch (postcopy_started) */
    bool vmm_asked;             /* false: judge the job alone (its VMM is asked next) */
    bool vmm_answered;          /* the VMM answered query-migrate */
    const char *vmm_status;     /* its status (NULL or "": none) */
    bool vmm_said;              /* it gave a boolean postcopy-started */
    bool vmm_started;           /* ... and its value */
};
enum mig_force_verdict {
    MIG_FORCE_RESUME,           /* allowed (subject to the VMM's word when not asked yet) */
    MIG_FORCE_INCOMING,         /* a destination's job: its source gives it up */
    MIG_FORCE_JOB_SWITCHED,     /* the job recorded a post-copy switch */
    MIG_FORCE_USE_ABORT,        /* perform, perform-postcopy before a switch: plain
                                   domjobabort cancels the migration and resumes the guest */
    MIG_FORCE_PHASE,            /* begin, confirm, confirm-cancelled, postcopy-failed, or no
                                   migration-out job: not waiting on the destination */
    MIG_FORCE_VMM_SWITCHED,     /* the VMM reports the switch (postcopy-started true, or a
                                   postcopy-* status) */
    MIG_FORCE_VMM_UNKNOWN,      /* the VMM does not answer, or does not say postcopy-started */
};
enum mig_force_verdict mig_force_resume_allowed(const struct mig_force_facts *f);

/* Whether this host can run a post-copy destination (userfaultfd works). */
bool mig_host_postcopy_supported(void);

#endif
