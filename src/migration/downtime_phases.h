/* The phases of a switch-over's downtime: their order and names, shared
 * by the VMM's query-migrate (downtime-phases), the daemon's job info and
 * the benchmarks. Pure. */
#ifndef GW_MIGRATION_DOWNTIME_PHASES_H
#define GW_MIGRATION_DOWNTIME_PHASES_H

#include <stddef.h>
#include <stdint.h>

/* Where a switch-over's downtime goes, in order (struct mig_downtime_phases):
 * stopping every vCPU, the dirty log's last sync, the last pages (post-copy:
 * the late discards), the vCPU and device state, the wait until the
 * destination had loaded it all, and until it said it runs the guest. */
enum mig_phase {
    MIG_PHASE_STOP, MIG_PHASE_SYNC, MIG_PHASE_PAGES, MIG_PHASE_STATE, MIG_PHASE_LOAD,
    MIG_PHASE_RESUME, MIG_NPHASES
};
/* "stop", "sync", ...: query-migrate's downtime-phases keys are NAME-us. */
extern const char *const mig_phase_names[MIG_NPHASES];
/* "stop 24 us, sync 34 us, ..." into buf (len bytes); returns buf. */
const char *mig_phases_text(const uint64_t us[MIG_NPHASES], char *buf, size_t len);

#endif
