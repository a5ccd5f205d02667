/* The daemon's migration policy: what to do next, as a pure function of the
 * job's statistics (the question OpenStack Nova answered when it adopted
 * post-copy). The VMM decides the pre-copy switch-over itself (its
 * downtime limit); this policy decides what the VMM cannot: switching to
 * post-copy, turning auto-converge on, and what happens when the
 * completion timeout expires.
 *
 * Use: mig_policy_state_init() once, mig_policy_vmm_setup() for the VMM's
 * capabilities and parameters, then after every query-migrate fill a
 * struct mig_sample (jobinfo_policy_sample()) and call mig_policy_decide();
 * apply the action it returns. decide() records the action in the state so
 * it is returned once. Nothing here blocks, allocates or reads a clock.
 *
 * Rules, in order (thresholds below):
 *  1. nothing to decide unless the status is "active" and no switch, pause
 *     or abort was already ordered;
 *  2. the completion timeout expired: the operator's --timeout-suspend or
 *     --timeout-postcopy when given; else post-copy when allowed (an
 *     expired timeout means pre-copy did not converge); else the domain's
 *     timeout_action (postcopy falls back to pause: post-copy is not
 *     allowed);
 *  3. pre-copy judged not to converge (for MIG_POLICY_STALL_ROUNDS rounds
 *     in a row the dirty rate was >= MIG_POLICY_DIRTY_BW_PCT % of the
 *     bandwidth, or the remaining bytes shrank by < MIG_POLICY_PROGRESS_PCT
 *     % per round), unless the expected downtime already fits the limit:
 *     switch to post-copy when allowed, else turn auto-converge on when the
 *     domain permits it, else keep going until the timeout;
 *  4. otherwise continue.
 * --postcopy-after-precopy is not a rule here: mig_policy_vmm_setup() turns
 * on the VMM's capability postcopy-after-precopy (when post-copy is
 * allowed), and the VMM switches by itself when its first pass ends unless
 * the rest fits the downtime limit. Only the VMM can do it well: knowing
 * that post-copy follows, its first pass skips the pages the guest writes
 * again, which then cross once, after the switch.
 * "Post-copy allowed" = the operator passed --postcopy AND the domain's
 * permit_postcopy (and both daemons support it: checked in Prepare).
 *
 * Auto-converge: migration capabilities cannot change while a migration
 * runs (QEMU's rule, kept by our VMM), so when the domain permits
 * auto-converge and post-copy is not allowed, mig_policy_vmm_setup() turns
 * the capability on from the start but dormant (throttle-trigger-threshold
 * MIG_POLICY_DORMANT_TRIGGER: throttle only when the guest dirties as much
 * as we send); MIG_ACT_AUTO_CONVERGE then arms it at full strength
 * (migrate-set-parameters throttle-trigger-threshold
 * MIG_POLICY_ARMED_TRIGGER, applied by the VMM at the next round).
 * --auto-converge arms it from the start. */
#ifndef GW_DAEMON_MIG_POLICY_H
#define GW_DAEMON_MIG_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#define MIG_POLICY_DIRTY_BW_PCT 90  /* dirty bytes/s >= 90 % of bandwidth: "hot" round */
#define MIG_POLICY_PROGRESS_PCT 10  /* remaining shrank < 10 % since the last round: "slow" */
#define MIG_POLICY_STALL_ROUNDS 2   /* consecutive hot or slow rounds = not converging */
#define MIG_POLICY_DORMANT_TRIGGER 100
#define MIG_POLICY_ARMED_TRIGGER 50     /* QEMU's default */
#define MIG_POLICY_REASON_MAX 256

enum mig_timeout_action {
    MIG_TIMEOUT_ABORT,    /* cancel; the guest keeps running on the source */
    MIG_TIMEOUT_PAUSE,    /* pause the guest so pre-copy completes (virsh --timeout-suspend) */
    MIG_TIMEOUT_POSTCOPY, /* switch to post-copy (virsh --timeout-postcopy) */
};

/* The domain's policy (its definition's "migration" object). */
struct mig_policy {
    bool permit_postcopy;
    bool permit_auto_converge;
    uint64_t max_downtime_ms;          /* VMM downtime-limit */
    uint64_t bandwidth_mib_s;          /* 0 = unlimited */
    uint64_t completion_timeout_s;     /* per GiB of RAM (rounded up, at least 1); 0 = none */
    enum mig_timeout_action timeout_action;
    uint64_t switchover_retries;       /* VMM max-switchover-retries */
};

/* This migration's flags (virsh migrate options). */
struct mig_flags {
    bool postcopy;                     /* --postcopy: the operator allows post-copy */
    bool postcopy_after_precopy;       /* --postcopy-after-precopy */
    bool auto_converge;                /* --auto-converge: on from the start */
    uint64_t timeout_s;                /* --timeout N (whole migration); 0 = the policy's */
    bool timeout_action_set;           /* --timeout-suspend / --timeout-postcopy given */
    enum mig_timeout_action timeout_action;
    uint64_t bandwidth_mib_s;          /* --bandwidth; 0 = the policy's */
};

/* One query-migrate reply, reduced. */
struct mig_sample {
    const char *status;                /* "setup", "active", "completed", ... (borrowed) */
    uint64_t elapsed_ms;               /* since the migration started */
    uint64_t iteration;                /* dirty-sync-count: 1 = first pass */
    uint64_t ram_total;                /* bytes */
    uint64_t ram_remaining;            /* bytes */
    uint64_t dirty_pages_rate;         /* pages/s */
    uint64_t page_size;                /* bytes (0: 4096) */
    uint64_t bandwidth_bps;            /* measured bytes/s (0: unknown) */
    unsigned throttle_pct;             /* cpu-throttle-percentage */
};

/* Carried between decisions; zeroed by mig_policy_state_init(). */
struct mig_policy_state {
    bool auto_converge_on;             /* capability on (flag or ordered) */
    bool postcopy_ordered;             /* switch ordered (policy or operator) */
    bool pause_ordered;
    bool abort_ordered;
    uint64_t last_iteration;           /* last round seen */
    uint64_t last_remaining;           /* remaining at the start of that round */
    unsigned hot_rounds;               /* consecutive rounds dirtying near bandwidth */
    unsigned slow_rounds;              /* consecutive rounds shrinking too little */
};

enum mig_action {
    MIG_ACT_CONTINUE,
    MIG_ACT_POSTCOPY,        /* migrate-start-postcopy */
    MIG_ACT_AUTO_CONVERGE,   /* arm auto-converge: migrate-set-parameters
                                throttle-trigger-threshold MIG_POLICY_ARMED_TRIGGER */
    MIG_ACT_PAUSE,           /* stop the guest (reason: migration); the VMM finishes offline */
    MIG_ACT_ABORT,           /* migrate_cancel; the source keeps running */
    MIG_ACT__COUNT
};

struct mig_decision {
    enum mig_action action;
    char reason[MIG_POLICY_REASON_MAX];  /* human-readable, always set */
    uint64_t timeout_ms;                 /* the completion timeout in force (0: none) */
    uint64_t expected_downtime_ms;       /* remaining / bandwidth (UINT64_MAX: unknown) */
    bool not_converging;
};

/* What to configure on the source VMM before `migrate`. */
struct mig_vmm_setup {
    bool cap_events;                   /* always true */
    bool cap_auto_converge;
    bool cap_postcopy_ram;             /* post-copy allowed (both daemons agreed in Prepare) */
    bool cap_postcopy_after_precopy;   /* --postcopy-after-precopy, post-copy allowed */
    uint64_t downtime_limit_ms;
    uint64_t max_bandwidth_bps;        /* bytes/s, 0 = unlimited */
    uint64_t max_postcopy_bandwidth_bps;
    unsigned throttle_trigger_pct;     /* throttle-trigger-threshold (when cap_auto_converge) */
    uint64_t max_switchover_retries;   /* stops the VMM may give up (its switch-over guard) */
};

const char *mig_action_name(enum mig_action a);
const char *mig_timeout_action_name(enum mig_timeout_action a);
/* "abort", "pause" (also "suspend"), "postcopy"; -EINVAL otherwise. */
int mig_timeout_action_from_name(const char *s, enum mig_timeout_action *out);

bool mig_policy_postcopy_allowed(const struct mig_policy *p, const struct mig_flags *f);
/* The completion timeout for a guest of ram_bytes; 0 = none. */
uint64_t mig_policy_timeout_ms(const struct mig_policy *p, const struct mig_flags *f,
                               uint64_t ram_bytes);
void mig_policy_vmm_setup(const struct mig_policy *p, const struct mig_flags *f,
                          struct mig_vmm_setup *out);
void mig_policy_state_init(struct mig_policy_state *st, const struct mig_flags *f);
void mig_policy_decide(const struct mig_policy *p, const struct mig_flags *f,
                       struct mig_policy_state *st, const struct mig_sample *s,
                       struct mig_decision *d);

#endif
