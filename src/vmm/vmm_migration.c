/* Migration commands on the VMM's QMP socket (filled in by the migration
 * engine work). */
#include "vmm/vmm_control_internal.h"

bool vmm_control_busy(struct vmm_control *c, struct qmp_error *err) { return false; }
int vmm_migration_init(struct vmm_control *c, struct gw_error *err) { return 0; }
void vmm_migration_fini(struct vmm_control *c) {}
