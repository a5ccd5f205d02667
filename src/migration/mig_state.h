/* The migration state machine (QEMU's MigrationStatus names, as
 * query-migrate reports them). Pure: the engine holds the current state and
 * changes it only through mig_state_transition_ok() checks.
 * Returns: bool predicates; mig_state_from_name() returns -1 if unknown. */
#ifndef GW_MIGRATION_MIG_STATE_H
#define GW_MIGRATION_MIG_STATE_H

#include <stdbool.h>

enum mig_state {
    MIG_NONE,
    MIG_SETUP,
    MIG_ACTIVE,
    MIG_DEVICE,             /* source: vCPUs stopped, sending the final state */
    MIG_POSTCOPY_ACTIVE,
    MIG_POSTCOPY_PAUSED,
    MIG_POSTCOPY_RECOVER,
    MIG_COMPLETED,
    MIG_FAILED,
    MIG_CANCELLING,
    MIG_CANCELLED,
    MIG_STATE__MAX
};

const char *mig_state_name(enum mig_state s);
int mig_state_from_name(const char *name);
bool mig_state_transition_ok(enum mig_state from, enum mig_state to);
/* A migration is under way (a new one may not start). */
bool mig_state_is_active(enum mig_state s);
/* The guest was handed over: postcopy-active, -paused or -recover. */
bool mig_state_is_postcopy(enum mig_state s);
/* The migration has ended (completed, failed, cancelled). */
bool mig_state_is_final(enum mig_state s);

#endif
