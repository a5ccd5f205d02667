/* The CPU a guest was shown, across hosts: may a CPUID table that another
 * host's KVM gave a guest be given to it here, and is a TSC rate the same
 * as this host's? Pure (no KVM calls): unit-tested in tests/unit.
 *
 * A migrated guest keeps the CPU it booted with (its CPUID travels in the
 * stream, docs/stream-format.md 4.5): a feature that vanished under it
 * would fault the next instruction that uses it, and an XSAVE area with
 * components this host cannot hold would not even load. So a destination
 * whose KVM cannot give every feature the guest was shown refuses the
 * state before anything is applied, naming the feature. */
#ifndef GW_VMM_CPU_MODEL_H
#define GW_VMM_CPU_MODEL_H

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

/* -EINVAL, naming the first feature of `guest` (a vCPU's table) that the
 * host's KVM_GET_SUPPORTED_CPUID table `host` lacks. Only feature words
 * are compared (leaf 1, 7, 0xd, 0x80000001, 0x80000007, 0x80000008,
 * 0x40000001, ...); the bits the VMM sets itself (hypervisor, HTT) and
 * the ones KVM sets from the guest's own state (OSXSAVE, OSPKE) are not. */
int cpu_model_check(const struct kvm_cpuid_entry2 *guest, unsigned n,
                    const struct kvm_cpuid_entry2 *host, unsigned host_n, struct gw_error *err);

/* The guest was told its TSC is invariant (CPUID 0x80000007 EDX bit 8):
 * it counts time by the TSC and its rate must not change. */
bool cpu_model_invtsc(const struct kvm_cpuid_entry2 *e, unsigned n);

/* Two TSC rates KVM treats as the same clock (within 250 ppm, KVM's own
 * tolerance); 0 (unknown) matches anything. */
bool cpu_model_tsc_same(uint32_t a_khz, uint32_t b_khz);

#endif
