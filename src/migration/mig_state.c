#include "migration/mig_state.h"

#include <string.h>

static const char *const names[MIG_STATE__MAX] = {
    [MIG_NONE] = "none",
    [MIG_SETUP] = "setup",
    [MIG_ACTIVE] = "active",
    [MIG_DEVICE] = "device",
    [MIG_POSTCOPY_ACTIVE] = "postcopy-active",
    [MIG_POSTCOPY_PAUSED] = "postcopy-paused",
    [MIG_POSTCOPY_RECOVER] = "postcopy-recover",
    [MIG_COMPLETED] = "completed",
    [MIG_FAILED] = "failed",
    [MIG_CANCELLING] = "cancelling",
    [MIG_CANCELLED] = "cancelled",
};

#define B(s) (1u << (s))
#define FINAL (B(MIG_FAILED) | B(MIG_CANCELLING))

static const unsigned allowed[MIG_STATE__MAX] = {
    [MIG_NONE] = B(MIG_SETUP) | B(MIG_FAILED),
    [MIG_SETUP] = B(MIG_ACTIVE) | B(MIG_DEVICE) | B(MIG_POSTCOPY_ACTIVE) | B(MIG_COMPLETED) | FINAL,
    /* active -> postcopy-paused: a post-copy destination whose connection
     * broke after it loaded the state and before the source committed */
    [MIG_ACTIVE] = B(MIG_DEVICE) | B(MIG_POSTCOPY_ACTIVE) | B(MIG_POSTCOPY_PAUSED) |
                   B(MIG_COMPLETED) | FINAL,
    /* device -> active: the switch-over guard gave the guest back */
    [MIG_DEVICE] = B(MIG_ACTIVE) | B(MIG_COMPLETED) | B(MIG_POSTCOPY_ACTIVE) | FINAL,
    [MIG_POSTCOPY_ACTIVE] = B(MIG_POSTCOPY_PAUSED) | B(MIG_COMPLETED) | B(MIG_FAILED),
    [MIG_POSTCOPY_PAUSED] = B(MIG_POSTCOPY_RECOVER) | B(MIG_FAILED),
    [MIG_POSTCOPY_RECOVER] = B(MIG_POSTCOPY_ACTIVE) | B(MIG_POSTCOPY_PAUSED) | B(MIG_FAILED),
    [MIG_COMPLETED] = B(MIG_SETUP),
    [MIG_FAILED] = B(MIG_SETUP),
    [MIG_CANCELLING] = B(MIG_CANCELLED) | B(MIG_FAILED) | B(MIG_COMPLETED),
    [MIG_CANCELLED] = B(MIG_SETUP),
};

const char *mig_state_name(enum mig_state s)
{
    return (unsigned)s < MIG_STATE__MAX ? names[s] : "unknown";
}

int mig_state_from_name(const char *name)
{
    for (int i = 0; i < MIG_STATE__MAX; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

bool mig_state_transition_ok(enum mig_state from, enum mig_state to)
{
    if ((unsigned)from >= MIG_STATE__MAX || (unsigned)to >= MIG_STATE__MAX)
        return false;
    return (allowed[from] & B(to)) != 0;
}

bool mig_state_is_active(enum mig_state s)
{
    return s == MIG_SETUP || s == MIG_ACTIVE || s == MIG_DEVICE || mig_state_is_postcopy(s) ||
           s == MIG_CANCELLING;
}

bool mig_state_is_postcopy(enum mig_state s)
{
    return s == MIG_POSTCOPY_ACTIVE || s == MIG_POSTCOPY_PAUSED || s == MIG_POSTCOPY_RECOVER;
}

bool mig_state_is_final(enum mig_state s)
{
    return s == MIG_COMPLETED || s == MIG_FAILED || s == MIG_CANCELLED;
}
