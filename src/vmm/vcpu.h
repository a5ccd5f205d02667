/* One KVM vCPU: its fd and kvm_run page, CPUID and MSR set-up, and the
 * power-on state used at boot and by system_reset. The thread that runs the
 * vCPU and the exit dispatch live in machine.c.
 *
 * Returns: 0 or -errno; human-facing errors through struct gw_error. */
#ifndef GW_VMM_VCPU_H
#define GW_VMM_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "vmm/cpu_model.h"
#include "vmm/kvm_vm.h"

#define VCPU_RESET_MAX_MSRS 32

struct vcpu_reset_state {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_fpu fpu;
    struct kvm_lapic_state lapic;
    struct kvm_mp_state mp;
    struct kvm_vcpu_events events;
    struct kvm_debugregs debugregs;
    struct kvm_xcrs xcrs;
    bool has_xcrs;
    /* MSRs a reset puts back (their values at creation): see vcpu.c */
    unsigned nmsrs;
    struct kvm_msr_entry msrs[VCPU_RESET_MAX_MSRS];
};

struct vcpu {
    unsigned id;
    int fd;
    struct kvm_run *run;
    size_t run_size;
    pthread_t thread;
    bool thread_started;
    volatile int tid;              /* kernel thread id once the thread runs */
    struct vcpu_reset_state reset;
    /* The CPUID table given to KVM (at creation, or a migrated guest's)
     * and the TSC rate (kHz, 0: unknown): read without asking KVM, which
     * would wait for a running vCPU. */
    struct kvm_cpuid2 *cpuid;
    uint32_t tsc_khz;
    /* Exit statistics (updated only by the vCPU thread). */
    uint64_t exits, io_exits, mmio_exits;
    /* The last exit was port or MMIO I/O that KVM completes only on the
     * next KVM_RUN (a string `rep outs` half-way, say). */
    bool io_pending;
    /* Set by the throttle thread: sleep this long before re-entering. */
    volatile uint64_t throttle_sleep_ns;
};

/* `cpu`: features left out of the host's CPUID (NULL: none). */
int vcpu_init(struct vcpu *vcpu, struct kvm_vm *vm, unsigned id, unsigned nr_vcpus,
              const struct cpu_model_spec *cpu, struct gw_error *err);
void vcpu_fini(struct vcpu *vcpu);
/* Remember the CPU KVM now gives the vCPU (not running): this CPUID table
 * and the TSC rate KVM reports (-ENOMEM). */
int vcpu_keep_cpu(struct vcpu *vcpu, const struct kvm_cpuid_entry2 *e, uint32_t n);
/* Put the vCPU back to its power-on state (as captured at creation),
 * MSRs included: KVM's paravirtual ones above all, which a guest that set
 * up kvmclock, steal time, PV EOI or asynchronous page faults would leave
 * pointing into the memory the next boot uses. */
int vcpu_reset(struct vcpu *vcpu, struct gw_error *err);
/* Load boot entry registers (after vcpu_reset). sregs are applied over the
 * vCPU's current special registers by the caller's choice. */
int vcpu_set_boot_state(struct vcpu *vcpu, const struct kvm_regs *regs,
                        const struct kvm_sregs *sregs, struct gw_error *err);
/* Build the CPUID table for vCPU `id` of `nr` from KVM's supported set
 * (pure: exposed for unit tests). `out` has room for `in->nent` entries. */
void vcpu_build_cpuid(const struct kvm_cpuid2 *in, struct kvm_cpuid2 *out, unsigned id,
                      unsigned nr);

#endif
