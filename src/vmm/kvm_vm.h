/* A KVM virtual machine: the /dev/kvm and VM file descriptors, the in-kernel
 * interrupt controllers (PIC, IOAPIC, LAPIC) and PIT, RAM slots, and the
 * host's supported CPUID and saveable-MSR lists.
 *
 * Returns: 0 or -errno; human-facing errors through struct gw_error. Only the
 * VM-wide ioctls live here; per-vCPU state is in vcpu.h. */
#ifndef GW_VMM_KVM_VM_H
#define GW_VMM_KVM_VM_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "memory/guest_ram.h"

struct kvm_vm {
    int kvm_fd;
    int vm_fd;
    int vcpu_mmap_size;
    struct kvm_cpuid2 *cpuid;       /* KVM_GET_SUPPORTED_CPUID */
    struct kvm_msr_list *msr_list;  /* KVM_GET_MSR_INDEX_LIST (saveable MSRs) */
    bool has_manual_dirty_protect;
    /* Power-on state of the in-kernel devices, used by system_reset. */
    struct kvm_irqchip reset_pic[2];
    struct kvm_irqchip reset_ioapic;
    struct kvm_pit_state2 reset_pit;
};

int kvm_vm_init(struct kvm_vm *vm, struct gw_error *err);
void kvm_vm_fini(struct kvm_vm *vm);
/* Register every RAM region of `ram` as a memory slot (slot i = region i). */
int kvm_vm_map_ram(struct kvm_vm *vm, const struct guest_ram *ram, bool dirty_log,
                   struct gw_error *err);
/* Drive a GSI of the in-kernel irqchip (struct irq_line compatible). */
void kvm_vm_set_irq(void *opaque_vm, unsigned gsi, int level);
/* Put PIC, IOAPIC and PIT back to their power-on state. */
int kvm_vm_reset_devices(struct kvm_vm *vm);
/* Is MSR `index` in KVM's saveable list? */
bool kvm_vm_msr_listed(const struct kvm_vm *vm, uint32_t index);

#endif
