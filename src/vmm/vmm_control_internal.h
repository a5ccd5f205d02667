/* Shared by the VMM control files (vmm_control.c: run control;
 * vmm_migration.c: migration commands). */
#ifndef GW_VMM_VMM_CONTROL_INTERNAL_H
#define GW_VMM_VMM_CONTROL_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "qmp/qmp_server.h"
#include "vmm/vmm_control.h"

struct vmm_migration;

struct vmm_control {
    struct evloop *loop;
    struct machine *machine;
    struct qmp_server *qmp;
    bool autostart;                 /* run the guest when an incoming migration ends */
    /* Held by stop/cont while they see inmigrate and set autostart, and by
     * the incoming migration while it reads autostart and starts or pauses
     * the guest: a cont never lands between the two (it would return
     * success with the guest left paused). Taken before the machine's. */
    pthread_mutex_t start_lock;
    struct vmm_migration *mig;
    bool quitting;                  /* a quit is posted: another adds nothing */
};

int vmm_control_register(struct vmm_control *c, const struct qmp_command *cmds, unsigned n);
/* A command failed with e: its message as a GenericError; returns -1. */
int vmm_qmp_fail(struct qmp_error *err, const struct gw_error *e);
/* True (with err set) when a migration forbids changing the run state now. */
bool vmm_control_busy(struct vmm_control *c, struct qmp_error *err);
/* The guest was handed over here by post-copy (its pages still arriving):
 * it may run, as QEMU's destination does on `cont` (libvirt's Finish). */
bool vmm_migration_incoming_postcopy(struct vmm_control *c);
/* Source: post-copy handed the guest over (postcopy-started): it runs on
 * the destination; true with err set. */
bool vmm_migration_handed_over(struct vmm_control *c, struct qmp_error *err);
/* Destination: pages of the guest are missing (an incoming migration under
 * way, or a post-copy that lost its source); true with err set. */
bool vmm_migration_memory_incomplete(struct vmm_control *c, struct qmp_error *err);
int vmm_migration_init(struct vmm_control *c, struct gw_error *err);
void vmm_migration_fini(struct vmm_control *c);

#endif
