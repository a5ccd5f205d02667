/* The daemon's migration policy; rules and thresholds in mig_policy.h. */
#include "daemon/mig_policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define GIB (1024ULL * 1024 * 1024)
#define MIB (1024ULL * 1024)

static const char *const action_names[MIG_ACT__COUNT] = {
    [MIG_ACT_CONTINUE] = "continue",
    [MIG_ACT_POSTCOPY] = "postcopy",
    [MIG_ACT_AUTO_CONVERGE] = "auto-converge",
    [MIG_ACT_PAUSE] = "pause",
    [MIG_ACT_ABORT] = "abort",
};

static const char *const timeout_names[] = {
    [MIG_TIMEOUT_ABORT] = "abort",
    [MIG_TIMEOUT_PAUSE] = "pause",
    [MIG_TIMEOUT_POSTCOPY] = "postcopy",
};

const char *mig_action_name(enum mig_action a)
{
    return (unsigned)a < MIG_ACT__COUNT ? action_names[a] : "?";
}

const char *mig_timeout_action_name(enum mig_timeout_action a)
{
    return (unsigned)a <= MIG_TIMEOUT_POSTCOPY ? timeout_names[a] : "?";
}

int mig_timeout_action_from_name(const char *s, enum mig_timeout_action *out)
{
    for (unsigned i = 0; s && i <= MIG_TIMEOUT_POSTCOPY; i++)
        if (strcmp(s, timeout_names[i]) == 0) {
            *out = (enum mig_timeout_action)i;
            return 0;
        }
    if (s && strcmp(s, "suspend") == 0) {
        *out = MIG_TIMEOUT_PAUSE;
        return 0;
    }
    return -EINVAL;
}

bool mig_policy_postcopy_allowed(const struct mig_policy *p, const struct mig_flags *f)
{
    return p->permit_postcopy && f->postcopy;
}

uint64_t mig_policy_timeout_ms(const struct mig_policy *p, const struct mig_flags *f,
                               uint64_t ram_bytes)
{
    if (f->timeout_s)
        return f->timeout_s * 1000;
    if (!p->completion_timeout_s)
        return 0;
    uint64_t gib = (ram_bytes + GIB - 1) / GIB;
    return p->completion_timeout_s * (gib ? gib : 1) * 1000;
}

static uint64_t bandwidth_bps(const struct mig_policy *p, const struct mig_flags *f)
{
    uint64_t mib = f->bandwidth_mib_s ? f->bandwidth_mib_s : p->bandwidth_mib_s;
    return mib * MIB;
}

void mig_policy_vmm_setup(const struct mig_policy *p, const struct mig_flags *f,
                          struct mig_vmm_setup *out)
{
    memset(out, 0, sizeof(*out));
    out->cap_events = true;
    out->cap_postcopy_ram = mig_policy_postcopy_allowed(p, f);
    out->cap_postcopy_after_precopy = out->cap_postcopy_ram && f->postcopy_after_precopy;
    out->cap_auto_converge = f->auto_converge || (p->permit_auto_converge && !out->cap_postcopy_ram);
    out->throttle_trigger_pct = f->auto_converge ? MIG_POLICY_ARMED_TRIGGER : MIG_POLICY_DORMANT_TRIGGER;
    out->downtime_limit_ms = p->max_downtime_ms;
    out->max_bandwidth_bps = bandwidth_bps(p, f);
    out->max_postcopy_bandwidth_bps = out->max_bandwidth_bps;
    out->max_switchover_retries = p->switchover_retries;
}

void mig_policy_state_init(struct mig_policy_state *st, const struct mig_flags *f)
{
    memset(st, 0, sizeof(*st));
    st->auto_converge_on = f->auto_converge;
}

/* ---- convergence ------------------------------------------------------------ */

static uint64_t sample_bandwidth(const struct mig_policy *p, const struct mig_flags *f,
                                 const struct mig_sample *s)
{
    return s->bandwidth_bps ? s->bandwidth_bps : bandwidth_bps(p, f);
}

static uint64_t dirty_bps(const struct mig_sample *s)
{
    return s->dirty_pages_rate * (s->page_size ? s->page_size : 4096);
}

/* Account a new round (the first sample seen with a higher iteration). */
static void observe_round(const struct mig_policy *p, const struct mig_flags *f,
                          struct mig_policy_state *st, const struct mig_sample *s)
{
    if (s->iteration <= st->last_iteration)
        return;
    uint64_t bw = sample_bandwidth(p, f, s);
    bool hot = s->iteration >= 2 && bw && dirty_bps(s) * 100 >= bw * MIG_POLICY_DIRTY_BW_PCT;
    st->hot_rounds = hot ? st->hot_rounds + 1 : 0;
    /* Progress between two round starts, both after the first pass. */
    if (st->last_iteration >= 2) {
        uint64_t prev = st->last_remaining;
        bool slow = s->ram_remaining * 100 > prev * (100 - MIG_POLICY_PROGRESS_PCT);
        st->slow_rounds = slow ? st->slow_rounds + 1 : 0;
    }
    st->last_iteration = s->iteration;
    st->last_remaining = s->ram_remaining;
}

static uint64_t expected_downtime_ms(uint64_t remaining, uint64_t bw)
{
    if (remaining == 0)
        return 0;
    return bw ? (remaining * 1000 + bw - 1) / bw : UINT64_MAX;
}

static void say(struct mig_decision *d, enum mig_action a, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(struct mig_decision *d, enum mig_action a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof(d->reason), fmt, ap);
    va_end(ap);
    d->action = a;
}

/* Why pre-copy does not converge, or NULL when it may. */
static const char *stall_cause(const struct mig_policy_state *st)
{
    if (st->hot_rounds >= MIG_POLICY_STALL_ROUNDS)
        return "the guest dirties memory at nearly the transfer bandwidth";
    if (st->slow_rounds >= MIG_POLICY_STALL_ROUNDS)
        return "the remaining memory no longer shrinks";
    return NULL;
}

static void record(struct mig_policy_state *st, enum mig_action a)
{
    st->postcopy_ordered |= a == MIG_ACT_POSTCOPY;
    st->pause_ordered |= a == MIG_ACT_PAUSE;
    st->abort_ordered |= a == MIG_ACT_ABORT;
    st->auto_converge_on |= a == MIG_ACT_AUTO_CONVERGE;
}

static void on_timeout(const struct mig_policy *p, const struct mig_flags *f,
                       const struct mig_sample *s, struct mig_decision *d)
{
    enum mig_timeout_action a = f->timeout_action_set            ? f->timeout_action
                                : mig_policy_postcopy_allowed(p, f) ? MIG_TIMEOUT_POSTCOPY
                                                                    : p->timeout_action;
    double secs = (double)d->timeout_ms / 1000.0;
    if (a == MIG_TIMEOUT_POSTCOPY && mig_policy_postcopy_allowed(p, f))
        say(d, MIG_ACT_POSTCOPY, "completion timeout of %.0f s expired: switching to post-copy", secs);
    else if (a == MIG_TIMEOUT_POSTCOPY)
        say(d, MIG_ACT_PAUSE, "completion timeout of %.0f s expired; post-copy is not allowed: "
            "pausing the guest to finish", secs);
    else if (a == MIG_TIMEOUT_PAUSE)
        say(d, MIG_ACT_PAUSE, "completion timeout of %.0f s expired: pausing the guest to finish", secs);
    else
        say(d, MIG_ACT_ABORT, "completion timeout of %.0f s expired: aborting the migration", secs);
}

static void on_stall(const struct mig_policy *p, const struct mig_flags *f,
                     const struct mig_policy_state *st, const char *cause, struct mig_decision *d)
{
    if (mig_policy_postcopy_allowed(p, f))
        say(d, MIG_ACT_POSTCOPY, "pre-copy is not converging (%s): switching to post-copy", cause);
    else if (p->permit_auto_converge && !st->auto_converge_on)
        say(d, MIG_ACT_AUTO_CONVERGE, "pre-copy is not converging (%s); post-copy is not "
            "allowed: turning auto-converge on", cause);
    else if (d->timeout_ms)
        say(d, MIG_ACT_CONTINUE, "pre-copy is not converging (%s): waiting for the completion "
            "timeout (%.0f s)", cause, (double)d->timeout_ms / 1000.0);
    else
        say(d, MIG_ACT_CONTINUE, "pre-copy is not converging (%s) and no timeout is set", cause);
}

void mig_policy_decide(const struct mig_policy *p, const struct mig_flags *f,
                       struct mig_policy_state *st, const struct mig_sample *s,
                       struct mig_decision *d)
{
    memset(d, 0, sizeof(*d));
    d->timeout_ms = mig_policy_timeout_ms(p, f, s->ram_total);
    d->expected_downtime_ms = expected_downtime_ms(s->ram_remaining, sample_bandwidth(p, f, s));
    if (!s->status || strcmp(s->status, "active") != 0) {
        say(d, MIG_ACT_CONTINUE, "migration status is %s: nothing to decide",
            s->status ? s->status : "unknown");
        return;
    }
    if (st->postcopy_ordered || st->pause_ordered || st->abort_ordered) {
        say(d, MIG_ACT_CONTINUE, "%s already ordered: waiting for completion",
            st->postcopy_ordered ? "post-copy" : st->pause_ordered ? "pause" : "abort");
        return;
    }
    observe_round(p, f, st, s);
    const char *cause = stall_cause(st);
    d->not_converging = cause && d->expected_downtime_ms > p->max_downtime_ms;
    if (d->timeout_ms && s->elapsed_ms >= d->timeout_ms)
        on_timeout(p, f, s, d);
    else if (d->not_converging)
        on_stall(p, f, st, cause, d);
    else if (d->expected_downtime_ms == UINT64_MAX)
        say(d, MIG_ACT_CONTINUE, "pre-copy in progress (iteration %llu)",
            (unsigned long long)s->iteration);
    else
        say(d, MIG_ACT_CONTINUE, "pre-copy in progress (iteration %llu, expected downtime %llu ms)",
            (unsigned long long)s->iteration, (unsigned long long)d->expected_downtime_ms);
    record(st, d->action);
}
