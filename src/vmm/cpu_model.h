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
 * 0x80000021, 0x40000001, ...), and the guest's physical address width
 * must not exceed the host's; the bits the VMM sets itself (hypervisor,
 * HTT) and the ones KVM sets from the guest's own state (OSXSAVE, OSPKE,
 * MONITOR, APIC) are not compared. */
int cpu_model_check(const struct kvm_cpuid_entry2 *guest, unsigned n,
                    const struct kvm_cpuid_entry2 *host, unsigned host_n, struct gw_error *err);

/* A CPU model for a new guest (godwit-vmm --cpu): this host's CPU
 * ("host"), less the features named with a minus, e.g.
 * "host,-avx512f,-invtsc": a guest booted so can move to hosts that lack
 * them. Masking a feature masks what depends on it (avx takes avx2, fma,
 * the AVX-512 family and the AVX XSAVE state with it). */
#define CPU_MODEL_MAX_MASKS 64
enum cpu_model_reg { CPU_EAX, CPU_EBX, CPU_ECX, CPU_EDX };
struct cpu_model_spec {
    unsigned nmask;
    struct {
        uint32_t leaf, index;
        uint8_t reg, bit;
    } mask[CPU_MODEL_MAX_MASKS];
};
/* -EINVAL for anything but "host" followed by ",-FEATURE" items of known
 * names (the message lists the names). */
int cpu_model_parse(const char *spec, struct cpu_model_spec *out, struct gw_error *err);
/* Clear the spec's bits in a CPUID table. */
void cpu_model_apply(const struct cpu_model_spec *spec, struct kvm_cpuid_entry2 *e, unsigned n);

/* The guest was told its TSC is invariant (CPUID 0x80000007 EDX bit 8):
 * it counts time by the TSC and its rate must not change. */
bool cpu_model_invtsc(const struct kvm_cpuid_entry2 *e, unsigned n);

/* Two TSC rates KVM treats as the same clock (within 250 ppm, KVM's own
 * tolerance); 0 (unknown) matches anything. */
bool cpu_model_tsc_same(uint32_t a_khz, uint32_t b_khz);

/* What a destination does with a guest's TSC rate, decided before any
 * ioctl (a KVM_SET_TSC_KHZ that KVM refuses has already changed the rate
 * the vCPU reports). */
enum cpu_tsc_plan {
    CPU_TSC_KEEP,   /* the source could not tell its rate (0) */
    CPU_TSC_SET,    /* KVM_SET_TSC_KHZ: the same clock within KVM's tolerance
                       (the vCPU then reports the guest's rate, and carries it
                       on), or KVM can scale the TSC */
    CPU_TSC_WARN,   /* another rate, no scaling: the guest goes on at this
                       host's rate (it keeps time by kvmclock), with a warning */
    CPU_TSC_REFUSE, /* ... but the guest was told its TSC is invariant */
};
enum cpu_tsc_plan cpu_model_tsc_plan(uint32_t guest_khz, uint32_t host_khz, bool can_scale,
                                     bool invtsc);
/* The refusal's words for CPU_TSC_REFUSE (-EINVAL). */
int cpu_model_tsc_refusal(uint32_t guest_khz, uint32_t host_khz, struct gw_error *err);

#endif
