/* What the VMM allows around a migration: pure rules over what the engine
 * reports (struct vmm_mig_facts), unit-tested without a VM. The glue in
 * vmm_migration.c reads the facts under the engine's lock and acts.
 * Returns: bool predicates; the verdict as an enum. */
#ifndef GW_VMM_VMM_MIG_RULES_H
#define GW_VMM_VMM_MIG_RULES_H

#include <stdbool.h>

#include "migration/mig_state.h"
#include "vmm/machine.h"
#include "vmm/runstate.h"

struct vmm_mig_facts {
    enum mig_state status;   /* of the last migration (MIG_NONE: none) */
    bool incoming;           /* it came in here */
    bool postcopy_started;   /* query-migrate's postcopy-started */
    bool committing;         /* the LOADED/COMMIT hand-over has begun */
    bool uffd_held;          /* destination: pages are missing for good (source lost) */
    enum runstate run;       /* the machine's run state */
};

/* Source: post-copy handed the guest over: it runs on the destination, so
 * this copy may not run, reset or migrate again (only resume the migration). */
bool vmm_mig_handed_over(const struct vmm_mig_facts *f);
/* Destination: pages are missing (an incoming migration under way, or a
 * post-copy that lost its source): reading or writing guest memory could
 * block for ever. */
bool vmm_mig_memory_incomplete(const struct vmm_mig_facts *f);
/* A reset (reset true) or power-off the guest asked for. *cancel: cancel
 * the outgoing migration first (a reset during a live pre-copy). */
enum machine_verdict vmm_mig_guest_request(const struct vmm_mig_facts *f, bool reset, bool *cancel);

#endif
