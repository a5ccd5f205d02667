/* Private interfaces between the machine's files (machine.c: threads and
 * state; machine_exit.c: vCPU exit dispatch; machine_devices.c: device
 * wiring; machine_boot.c: boot and reset). Not for other modules. */
#ifndef GW_VMM_MACHINE_INTERNAL_H
#define GW_VMM_MACHINE_INTERNAL_H

#include <stddef.h>

#include "vmm/machine.h"

enum machine_request_kind {
    MACHINE_REQ_POWEROFF,
    MACHINE_REQ_RESET,
    MACHINE_REQ_INTERNAL_ERROR,
};

static inline struct machine *machine_of_vcpu(struct vcpu *vcpu)
{
    return (struct machine *)((char *)(vcpu - vcpu->id) - offsetof(struct machine, vcpus));
}

/* vCPU thread: stop this vCPU and have the main thread act on `kind`. */
void machine_request(struct machine *m, enum machine_request_kind kind, unsigned vcpu,
                     const char *desc);
/* vCPU thread: act on the exit in vcpu->run. */
void machine_handle_exit(struct machine *m, struct vcpu *vcpu);
/* Main thread: stop every vCPU thread (state unchanged). False if the run
 * state changed or the vCPUs were resumed meanwhile (they may run). */
bool machine_park_vcpus(struct machine *m);

int machine_devices_init(struct machine *m, struct gw_error *err);
void machine_devices_fini(struct machine *m);
void machine_devices_reset(struct machine *m);

#endif
