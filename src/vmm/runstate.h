/* The VM run state machine (QEMU's RunState names, as query-status reports
 * them). Pure: no KVM, no locking; the machine owns the current state and
 * calls runstate_transition_ok() before every change.
 * Returns: bool predicates; runstate_from_name() returns -1 if unknown. */
#ifndef GW_VMM_RUNSTATE_H
#define GW_VMM_RUNSTATE_H

#include <stdbool.h>

enum runstate {
    RUNSTATE_PRELAUNCH,       /* created, never run */
    RUNSTATE_RUNNING,
    RUNSTATE_PAUSED,          /* stopped by `stop` */
    RUNSTATE_INMIGRATE,       /* waiting for / receiving an incoming migration */
    RUNSTATE_FINISH_MIGRATE,  /* source: vCPUs stopped, sending the last state */
    RUNSTATE_POSTMIGRATE,     /* source: migration completed */
    RUNSTATE_RESTORE_VM,      /* loading state from a file */
    RUNSTATE_SHUTDOWN,        /* guest powered off */
    RUNSTATE_INTERNAL_ERROR,  /* KVM could not run the guest */
    RUNSTATE__MAX
};

const char *runstate_name(enum runstate s);
int runstate_from_name(const char *name);
/* Is `to` a legal next state after `from`? */
bool runstate_transition_ok(enum runstate from, enum runstate to);
/* Are vCPUs executing guest code in this state? */
bool runstate_is_running(enum runstate s);

#endif
