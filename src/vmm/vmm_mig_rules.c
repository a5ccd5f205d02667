#include "vmm/vmm_mig_rules.h"

bool vmm_mig_handed_over(const struct vmm_mig_facts *f)
{
    return !f->incoming && f->postcopy_started;
}

bool vmm_mig_memory_incomplete(const struct vmm_mig_facts *f)
{
    if (!f->incoming)
        return false;
    return mig_state_is_active(f->status) || f->uffd_held ||
           (f->postcopy_started && f->status != MIG_COMPLETED);
}

/* Source, live: a reset rewrites guest memory and the vCPUs, which the
 * migration thread reads, stops and resumes until it ends. So a reset
 * cancels a migration that can still be cancelled, and waits for its end. */
static enum machine_verdict source_live(const struct vmm_mig_facts *f, bool reset, bool *cancel)
{
    if (!reset) /* the process ends, and the migration with it, unless the hand-over decides */
        return f->committing ? MACHINE_LATER : MACHINE_GO;
    bool cancellable = f->status == MIG_SETUP || f->status == MIG_ACTIVE || f->status == MIG_DEVICE;
    *cancel = cancellable && !f->committing;
    return MACHINE_LATER;
}

enum machine_verdict vmm_mig_guest_request(const struct vmm_mig_facts *f, bool reset, bool *cancel)
{
    *cancel = false;
    if (f->incoming) {
        /* A power-off needs no memory; a reset writes the kernel into it. */
        if (!reset || !vmm_mig_memory_incomplete(f))
            return MACHINE_GO;
        return mig_state_is_active(f->status) ? MACHINE_LATER /* until every page is here */
                                              : MACHINE_DROP; /* lost with the source */
    }
    if (vmm_mig_handed_over(f) || f->run == RUNSTATE_POSTMIGRATE)
        return MACHINE_DROP; /* the guest lives on the destination */
    if (!mig_state_is_active(f->status))
        return MACHINE_GO;
    return source_live(f, reset, cancel);
}
