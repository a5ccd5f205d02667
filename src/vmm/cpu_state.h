/* Complete guest-visible state of a vCPU and of the in-kernel platform
 * devices (PIC, IOAPIC, PIT, kvmclock), read from and written to KVM. Used by
 * migration, save/restore and checkpointing.
 *
 * Returns: 0 or -errno; human-facing errors through struct gw_error. A load
 * that fails part-way leaves the vCPU in an undefined state: callers load
 * only into a VM that is not running and discard it on failure. */
#ifndef GW_VMM_CPU_STATE_H
#define GW_VMM_CPU_STATE_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/cpu_model.h"
#include "vmm/kvm_vm.h"

#define CPU_STATE_MAX_MSRS 1024
#define CPU_STATE_MAX_CPUID 256
#define CPU_STATE_XSAVE_MAX (64 * 1024)

struct vcpu_state {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    uint32_t xsave_size;                 /* bytes used in xsave */
    uint8_t xsave[CPU_STATE_XSAVE_MAX] __attribute__((aligned(64)));
    bool has_xcrs;
    struct kvm_xcrs xcrs;
    uint32_t nmsrs;
    struct kvm_msr_entry msrs[CPU_STATE_MAX_MSRS];
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    struct kvm_debugregs debugregs;
    /* The CPU the guest was shown (KVM_GET_CPUID2) and its TSC rate; a
     * stream of VCPU_STATE version 1 has neither (has_cpuid false): the
     * destination keeps its own. tsc_khz 0: unknown. */
    bool has_cpuid;
    uint32_t ncpuid;
    struct kvm_cpuid_entry2 cpuid[CPU_STATE_MAX_CPUID];
    uint32_t tsc_khz;
};

struct platform_state {
    struct kvm_irqchip pic_master, pic_slave, ioapic;
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
};

/* Size of the XSAVE area KVM uses on this host (4096 or larger). */
uint32_t cpu_state_xsave_size(const struct kvm_vm *vm);
/* MSRs worth saving: KVM's saveable list minus the ones that cannot be set
 * here. Writes up to `max` indices, returns the count. */
unsigned cpu_state_msr_indices(const struct kvm_vm *vm, uint32_t *out, unsigned max);

/* Does this host's KVM take KVM's saveable MSR list and XSAVE area in a
 * vcpu_state? Checked when the VM is created, so that no state is ever
 * saved with part of it left out. */
int cpu_state_check_host(const struct kvm_vm *vm, struct gw_error *err);

int vcpu_state_save(const struct kvm_vm *vm, int vcpu_fd, struct vcpu_state *st,
                    struct gw_error *err);
/* What can be checked of a loaded state before anything is applied: it
 * fits this host (XSAVE size), the CPU it names can be given here
 * (cpu_model_check) and so can its TSC rate (cpu_model_tsc_plan). */
int vcpu_state_check(const struct kvm_vm *vm, int vcpu_fd, const struct vcpu_state *st,
                     struct gw_error *err);
/* Can this host give a guest this CPU: every feature of the CPUID table
 * (cpu_model_check) and its TSC rate (cpu_model_tsc_plan, with this vCPU's
 * rate and KVM's scaling)? For a vCPU state and for CPU_MODEL alike. */
int cpu_state_check_cpu(const struct kvm_vm *vm, int vcpu_fd, const struct kvm_cpuid_entry2 *e,
                        uint32_t n, uint32_t tsc_khz, struct gw_error *err);
/* The vCPU's TSC rate as KVM reports it, in kHz; 0 if it cannot tell. */
uint32_t cpu_state_tsc_khz(int vcpu_fd);
/* Give the vCPU the guest's CPU: its TSC rate and CPUID table (the first
 * step of a load, before any register; KVM checks MSRs and XSAVE against
 * the CPUID). *changed tells whether anything was changed, also on
 * failure. A state without CPUID changes nothing. */
int vcpu_state_set_cpu(const struct kvm_vm *vm, int vcpu_fd, const struct vcpu_state *st,
                       bool *changed, struct gw_error *err);
/* Apply a state that passed vcpu_state_check (after vcpu_state_set_cpu). */
int vcpu_state_load(const struct kvm_vm *vm, int vcpu_fd, const struct vcpu_state *st,
                    struct gw_error *err);

int platform_state_save(const struct kvm_vm *vm, struct platform_state *st, struct gw_error *err);
/* What can be checked of the state without KVM (the chips' ids). */
int platform_state_check(const struct platform_state *st, struct gw_error *err);
/* Restore the PIC and the IOAPIC (before the vCPUs, as QEMU). */
int platform_state_load(const struct kvm_vm *vm, const struct platform_state *st,
                        struct gw_error *err);
/* Restore the PIT and kvmclock, as the guest is about to run: the PIT
 * counts and fires from then on (not into LAPICs still in their reset
 * state, and with no ticks piled up by a wait for the commit), and guest
 * time goes on from the saved value however long the wait was. */
int platform_state_start(const struct kvm_vm *vm, const struct platform_state *st,
                         struct gw_error *err);

#endif
