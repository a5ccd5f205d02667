#include "vmm/runstate.h"

#include <string.h>

static const char *const names[RUNSTATE__MAX] = {
    [RUNSTATE_PRELAUNCH] = "prelaunch",
    [RUNSTATE_RUNNING] = "running",
    [RUNSTATE_PAUSED] = "paused",
    [RUNSTATE_INMIGRATE] = "inmigrate",
    [RUNSTATE_FINISH_MIGRATE] = "finish-migrate",
    [RUNSTATE_POSTMIGRATE] = "postmigrate",
    [RUNSTATE_RESTORE_VM] = "restore-vm",
    [RUNSTATE_SHUTDOWN] = "shutdown",
    [RUNSTATE_INTERNAL_ERROR] = "internal-error",
};

#define BIT(s) (1u << (s))

/* allowed[from] = set of states reachable from `from`. */
static const unsigned allowed[RUNSTATE__MAX] = {
    [RUNSTATE_PRELAUNCH] = BIT(RUNSTATE_RUNNING) | BIT(RUNSTATE_PAUSED) |
                           BIT(RUNSTATE_INMIGRATE) | BIT(RUNSTATE_FINISH_MIGRATE) |
                           BIT(RUNSTATE_INTERNAL_ERROR) | BIT(RUNSTATE_SHUTDOWN),
    [RUNSTATE_RUNNING] = BIT(RUNSTATE_PAUSED) | BIT(RUNSTATE_FINISH_MIGRATE) |
                         BIT(RUNSTATE_SHUTDOWN) | BIT(RUNSTATE_INTERNAL_ERROR) |
                         BIT(RUNSTATE_RUNNING) /* reset */,
    [RUNSTATE_PAUSED] = BIT(RUNSTATE_RUNNING) | BIT(RUNSTATE_FINISH_MIGRATE) |
                        BIT(RUNSTATE_SHUTDOWN) | BIT(RUNSTATE_POSTMIGRATE) |
                        BIT(RUNSTATE_PAUSED) | BIT(RUNSTATE_INTERNAL_ERROR),
    [RUNSTATE_INMIGRATE] = BIT(RUNSTATE_RUNNING) | BIT(RUNSTATE_PAUSED) |
                           BIT(RUNSTATE_SHUTDOWN) | BIT(RUNSTATE_INTERNAL_ERROR) |
                           BIT(RUNSTATE_RESTORE_VM) | BIT(RUNSTATE_INMIGRATE),
    [RUNSTATE_FINISH_MIGRATE] = BIT(RUNSTATE_POSTMIGRATE) | BIT(RUNSTATE_RUNNING) |
                                BIT(RUNSTATE_PAUSED) | BIT(RUNSTATE_SHUTDOWN) |
                                BIT(RUNSTATE_INTERNAL_ERROR),
    [RUNSTATE_POSTMIGRATE] = BIT(RUNSTATE_RUNNING) | BIT(RUNSTATE_PAUSED) |
                             BIT(RUNSTATE_FINISH_MIGRATE) | BIT(RUNSTATE_SHUTDOWN),
    [RUNSTATE_RESTORE_VM] = BIT(RUNSTATE_RUNNING) | BIT(RUNSTATE_PAUSED) |
                            BIT(RUNSTATE_INMIGRATE) | BIT(RUNSTATE_SHUTDOWN),
    [RUNSTATE_SHUTDOWN] = BIT(RUNSTATE_RUNNING) | BIT(RUNSTATE_PAUSED) |
                          BIT(RUNSTATE_FINISH_MIGRATE),
    [RUNSTATE_INTERNAL_ERROR] = BIT(RUNSTATE_PAUSED) | BIT(RUNSTATE_RUNNING) |
                                BIT(RUNSTATE_SHUTDOWN),
};

const char *runstate_name(enum runstate s)
{
    return (unsigned)s < RUNSTATE__MAX ? names[s] : "unknown";
}

int runstate_from_name(const char *name)
{
    for (int i = 0; i < RUNSTATE__MAX; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

bool runstate_transition_ok(enum runstate from, enum runstate to)
{
    if ((unsigned)from >= RUNSTATE__MAX || (unsigned)to >= RUNSTATE__MAX)
        return false;
    return (allowed[from] & BIT(to)) != 0;
}

bool runstate_is_running(enum runstate s) { return s == RUNSTATE_RUNNING; }
