/* A domain's long-running job (migration out, migration in, or another
 * long operation), as an explicit state machine that is saved to disk so
 * that a restarted godwitd recovers or cleans up (libvirt's job phases).
 *
 * The phases and what a restarted daemon does in each are specified in
 * docs/migration-protocol.md ("Phases" and "Restart recovery").
 *
 * Returns: operations return 0 or -errno and fill a struct gw_error (which
 * may be NULL); predicates return bool; *_name() return a static string
 * ("?" for an out-of-range value).
 * Ownership: struct job is a plain value (no heap members); copy it freely.
 * Threads: nothing here keeps state; one job is used by one thread at a
 * time (the daemon holds the domain's lock). */
#ifndef GW_DAEMON_JOB_H
#define GW_DAEMON_JOB_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

struct json_object;

enum job_kind {
    JOB_KIND_NONE,          /* no job: the domain is free */
    JOB_KIND_MIGRATION_OUT, /* source side of a migration */
    JOB_KIND_MIGRATION_IN,  /* destination side of a migration */
    JOB_KIND_MODIFY,        /* another long operation (save, shutdown wait, ...) */
    JOB_KIND__COUNT
};

/* One enum for both sides; job_phase_allowed() says which belong to which
 * kind. Wire/disk names are in the name table, never the numbers. */
enum job_phase {
    JOB_PHASE_NONE,              /* kind none or modify */
    /* source (migration-out) */
    JOB_PHASE_BEGIN,             /* job taken, domain described to the peer */
    JOB_PHASE_PERFORM,           /* the VMM streams, pre-copy: the source still owns the guest */
    JOB_PHASE_PERFORM_POSTCOPY,  /* post-copy switch requested (saved before migrate-start-postcopy) */
    JOB_PHASE_PERFORM_DONE,      /* stream completed; Finish sent or about to be: outcome unknown */
    JOB_PHASE_CONFIRM,           /* Finish succeeded: stopping and forgetting the source VMM */
    JOB_PHASE_CONFIRM_CANCELLED, /* migration failed before the switch: resuming the source */
    /* destination (migration-in) */
    JOB_PHASE_PREPARE,           /* incoming VMM started, waiting for the stream and Finish */
    JOB_PHASE_FINISH,            /* Finish received: verifying, then resuming the guest */
    /* both sides */
    JOB_PHASE_POSTCOPY_FAILED,   /* paused with reason post-copy failed, waiting for recovery */
    JOB_PHASE_DONE,              /* succeeded (terminal) */
    JOB_PHASE_FAILED,            /* failed and cleaned up (terminal) */
    JOB_PHASE__COUNT
};

/* Migration flags carried by the job (and the Begin message). */
enum {
    JOB_F_LIVE = 1u << 0,                   /* --live */
    JOB_F_POSTCOPY = 1u << 1,               /* --postcopy: post-copy allowed */
    JOB_F_POSTCOPY_AFTER_PRECOPY = 1u << 2, /* --postcopy-after-precopy */
    JOB_F_AUTO_CONVERGE = 1u << 3,          /* --auto-converge */
    JOB_F_POSTCOPY_RESUME = 1u << 4,        /* --postcopy-resume: a recovery job */
    /* --suspend, or a domain its user had paused: the guest stays paused
     * on the destination (libvirt's VIR_MIGRATE_PAUSED) */
    JOB_F_PAUSED = 1u << 5,
    JOB_F__ALL = (1u << 6) - 1
};
#define JOB_F_COUNT 6
/* The JOB_F_ bit number of a flag's wire and file name ("postcopy"), < 0
 * for an unknown one (or NULL). */
int job_flag_bit(const char *name);
/* The flags as a JSON array of their names, in bit order. */
struct json_object *job_flags_to_json(unsigned flags);

#define JOB_ID_MAX 64      /* incl. NUL; [A-Za-z0-9._-], not starting with '.' */
#define JOB_UUID_LEN 36    /* canonical 8-4-4-4-12 lowercase hex */
#define JOB_NAME_MAX 64    /* domain name, incl. NUL */
#define JOB_URI_MAX 256    /* peer daemon / migration URI, incl. NUL */
#define JOB_ERROR_MAX 256  /* first error message, incl. NUL */
#define JOB_FILE_MAX (64 * 1024) /* a job file larger than this is corrupt */

struct job;
typedef void (*job_phase_hook)(const struct job *j, enum job_phase old, void *opaque);

struct job {
    enum job_kind kind;
    enum job_phase phase;
    char id[JOB_ID_MAX];
    char uuid[JOB_UUID_LEN + 1];
    char name[JOB_NAME_MAX];
    char peer_uri[JOB_URI_MAX];      /* the other daemon ("" when none) */
    char migrate_uri[JOB_URI_MAX];   /* where the destination VMM listens ("" until Prepare) */
    unsigned flags;                  /* JOB_F_* */
    bool postcopy_started;           /* the post-copy switch was asked of the VMM, or it
                                        reported one (query-migrate postcopy-started or a
                                        postcopy-* status; on a destination: its incoming VMM
                                        did, or Finish said post-copy) */
    int vmm_pid;                     /* the VMM this job drives (0: unknown) */
    uint64_t started_ms;             /* wall clock (ms since the epoch) */
    uint64_t phase_ms;               /* wall clock of the last phase change */
    char error[JOB_ERROR_MAX];       /* first error, "" when none */
    /* Not saved: called by job_set_phase() after every change. */
    job_phase_hook on_phase;
    void *hook_opaque;
};

const char *job_kind_name(enum job_kind k);
const char *job_phase_name(enum job_phase p);
/* Name -> value; -EINVAL for an unknown name. */
int job_kind_from_name(const char *s, enum job_kind *out);
int job_phase_from_name(const char *s, enum job_phase *out);
/* The first phase of a kind (begin, prepare, none). */
enum job_phase job_initial_phase(enum job_kind k);
/* Does phase p belong to kind k? */
bool job_phase_allowed(enum job_kind k, enum job_phase p);
bool job_phase_is_terminal(enum job_phase p);
/* May a job of kind k go from phase `from` to `to`? */
bool job_transition_allowed(enum job_kind k, enum job_phase from, enum job_phase to);

bool job_uuid_valid(const char *s);
bool job_id_valid(const char *s);

/* Start a job in its kind's initial phase. -EINVAL for a bad kind, id, uuid
 * or an over-long name. now_ms is the wall clock. */
int job_init(struct job *j, enum job_kind kind, const char *id, const char *uuid,
             const char *name, uint64_t now_ms, struct gw_error *err);
/* The one transition helper: checks the old phase against the table and
 * returns -EINVAL with "job ID (KIND): cannot go from phase A to phase B"
 * otherwise; on success sets phase_ms and calls the hook. (postcopy_started
 * is the caller's: perform-postcopy is entered before a switch by command,
 * or before a migration the VMM may switch by itself.) */
int job_set_phase(struct job *j, enum job_phase to, uint64_t now_ms, struct gw_error *err);
/* Record the first error message (later ones are ignored). */
void job_set_error(struct job *j, const char *msg);
/* Is the domain held by this job (a non-terminal job of any kind)? */
bool job_active(const struct job *j);
/* -EBUSY with "domain NAME: cannot OP: a KIND job (ID) is in phase P" when
 * a job holds the domain; 0 when it is free. */
int job_check_free(const struct job *j, const char *op, struct gw_error *err);

/* JSON form (the file's content). to_json returns a new object or NULL;
 * from_json validates every field (-EINVAL with a message). */
struct json_object *job_to_json(const struct job *j);
int job_from_json(struct json_object *o, struct job *j, struct gw_error *err);

/* Persistence in <state_dir>/jobs/<uuid>.json. job_save writes atomically
 * (store_write_json: temporary file, fsync, rename, fsync of the
 * directory) and creates jobs/ (0700, its parent synced) when missing
 * (store_make_dir). job_load reads it as the daemon reads every state file
 * (a regular file, then json_file_object: one JSON object, the error
 * saying where); it returns -ENOENT when there is no file, -EFBIG over
 * JOB_FILE_MAX bytes, -EINVAL for a corrupt one or one that is not a
 * regular file (never crashes nor blocks on hostile content).
 * job_remove returns 0 when the file is gone (also when it never existed). */
int job_save(const struct job *j, const char *state_dir, struct gw_error *err);
int job_load(struct job *j, const char *state_dir, const char *uuid, struct gw_error *err);
int job_remove(const char *state_dir, const char *uuid, struct gw_error *err);
/* Call cb for every *.json file in <state_dir>/jobs (any order): with the
 * job (load_err NULL) or with the load error (j NULL) for a bad file.
 * First removes the temporary files of saves a crash cut short
 * (store_remove_stale_tmp: only with the state directory's lock held).
 * Returns 0 (also when jobs/ does not exist), -errno if the directory
 * cannot be read, or the first non-zero value cb returned. */
typedef int (*job_scan_cb)(const struct job *j, const char *path,
                           const struct gw_error *load_err, void *opaque);
int job_scan(const char *state_dir, job_scan_cb cb, void *opaque, struct gw_error *err);

/* ---- restart recovery (pure) --------------------------------------------- */

enum job_recovery {
    JOB_RECOVER_NOTHING,         /* no side effect: remove the job file */
    JOB_RECOVER_RESUME_SOURCE,   /* cancel the VMM's migration if any, `cont` the source guest */
    JOB_RECOVER_KILL_SOURCE,     /* finish Confirm: quit the source VMM, domain shut off (migrated) */
    JOB_RECOVER_KILL_INCOMING,   /* quit the incoming VMM, forget the incoming domain */
    JOB_RECOVER_RESUME_INCOMING, /* finish Finish: `cont` the guest here, job done */
    JOB_RECOVER_CONTINUE,        /* the migration still runs: re-attach and go on from the phase
                                    (source: Finish and Confirm, in the job's mode,
                                    job_finish_postcopy(); destination: the VMM is kept and
                                    watched again, the guest as the phase left it) */
    JOB_RECOVER_POSTCOPY_FAILED, /* (source) keep (or put) the guest paused, reason post-copy
                                    failed */
    JOB_RECOVER_ASK_PEER,        /* only the peer knows: query it, then job_recovery_after_peer() */
    JOB_RECOVER_WAIT_PEER,       /* peer unreachable: keep the guest paused, ask again later */
    JOB_RECOVER_CRASHED,         /* our VMM is gone: mark the domain crashed, drop the job */
    JOB_RECOVER_CONFIRM_POSTCOPY, /* the destination runs the guest and our VMM still serves its
                                     pages (or paused, perhaps having lost only the last
                                     message): wait for post-copy to complete (Confirm's wait,
                                     which resumes such a stream once), then quit the VMM as
                                     kill-source does */
    JOB_RECOVER__COUNT
};
const char *job_recovery_name(enum job_recovery r);

/* What a restarted daemon does with a saved job. vmm_alive: the job's VMM
 * process answers QMP; vmm_status: its query-migrate "status" (NULL when
 * absent: no migration, or the VMM is gone); vmm_switched: its
 * "postcopy-started" (true when it does not say: the safe side). Every
 * (kind, phase) has an answer; an unknown status counts as "not
 * migrating". A destination whose VMM is alive after a post-copy switch
 * (a postcopy-* status, "failed" with vmm_switched, or postcopy_started
 * recorded), or whose job is in postcopy-failed, continues: never
 * kill-incoming. */
enum job_recovery job_recovery_action(const struct job *j, bool vmm_alive, const char *vmm_status,
                                      bool vmm_switched);
/* The mode of the Finish a restarted source sends (again), and of its
 * Confirm: post-copy when the job recorded a switch (postcopy_started, or
 * phase postcopy-failed) or its VMM says it handed the guest over
 * (vmm_switched, true when it does not say or is gone); pre-copy only when
 * both say no. A post-copy guest labelled pre-copy could be discarded by
 * the destination and resumed here from a stale copy. */
bool job_finish_postcopy(const struct job *j, bool vmm_switched);

/* What the destination daemon reports about a job (the Status message). */
enum job_peer_outcome {
    JOB_PEER_UNREACHABLE,     /* no answer */
    JOB_PEER_UNKNOWN,         /* no such job and the domain does not run there */
    JOB_PEER_PREPARED,        /* job in prepare/finish, guest not started there */
    JOB_PEER_RUNNING,         /* the guest runs there (job done or finishing) */
    JOB_PEER_FAILED,          /* the destination discarded its copy */
    JOB_PEER_POSTCOPY_FAILED, /* paused there with reason post-copy failed */
    JOB_PEER__COUNT
};
const char *job_peer_outcome_name(enum job_peer_outcome o);
int job_peer_outcome_from_name(const char *s, enum job_peer_outcome *out);
/* The destination's answer to a Status request: j is its job for that
 * UUID (NULL when none), guest_running whether a domain with that UUID runs
 * here now. */
enum job_peer_outcome job_peer_outcome_of(const struct job *j, bool guest_running);
/* Second step after JOB_RECOVER_ASK_PEER on the source. vmm_switched: as
 * for job_recovery_action (true when the VMM does not say); with the job's
 * postcopy_started it says whether the guest may have been handed over by
 * post-copy. `unknown` never resumes the source (no record there is no
 * word that the guest does not run there): wait-peer in pre-copy,
 * postcopy-failed after a switch; only `failed` resumes it before one. */
enum job_recovery job_recovery_after_peer(const struct job *j, bool vmm_alive,
                                          const char *vmm_status, bool vmm_switched,
                                          enum job_peer_outcome peer);

#endif
