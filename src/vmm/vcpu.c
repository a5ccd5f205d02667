#define LOG_PREFIX "vcpu"
#include "vmm/vcpu.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/cpu_state.h"

#define MSR_IA32_SYSENTER_CS    0x174
#define MSR_IA32_SYSENTER_ESP   0x175
#define MSR_IA32_SYSENTER_EIP   0x176
#define MSR_IA32_MISC_ENABLE    0x1a0
#define MSR_STAR                0xc0000081
#define MSR_LSTAR               0xc0000082
#define MSR_CSTAR               0xc0000083
#define MSR_SYSCALL_MASK        0xc0000084
#define MSR_KERNEL_GS_BASE      0xc0000102
#define MSR_IA32_CR_PAT         0x277
#define MSR_KVM_SYSTEM_TIME     0x12
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define MSR_KVM_ASYNC_PF_EN     0x4b564d02
#define MSR_KVM_STEAL_TIME      0x4b564d03
#define MSR_KVM_PV_EOI_EN       0x4b564d04
#define MSR_KVM_POLL_CONTROL    0x4b564d05
#define MSR_KVM_ASYNC_PF_INT    0x4b564d06
#define MISC_ENABLE_FAST_STRING 0x1ULL

#define CPUID_1_ECX_HYPERVISOR  (1u << 31)
#define CPUID_7_EDX_ARCH_CAPS   (1u << 29)

void vcpu_build_cpuid(const struct kvm_cpuid2 *in, struct kvm_cpuid2 *out, unsigned id,
                      unsigned nr)
{
    out->nent = in->nent;
    out->padding = 0;
    for (uint32_t i = 0; i < in->nent; i++) {
        struct kvm_cpuid_entry2 e = in->entries[i];
        switch (e.function) {
        case 1:
            /* Initial APIC id, logical processor count, hypervisor present. */
            e.ebx = (e.ebx & 0x0000ffffu) | (id << 24) | ((nr & 0xff) << 16);
            e.ecx |= CPUID_1_ECX_HYPERVISOR;
            if (nr > 1)
                e.edx |= 1u << 28; /* HTT: the count field is valid */
            break;
        case 7:
            if (e.index == 0)
                e.edx &= ~CPUID_7_EDX_ARCH_CAPS; /* MSR 0x10a cannot be set on PVM */
            break;
        case 0xb:
        case 0x1f:
            e.edx = id; /* x2APIC id */
            break;
        default:
            break;
        }
        out->entries[i] = e;
    }
}

static int setup_cpuid(struct vcpu *vcpu, struct kvm_vm *vm, unsigned nr,
                       const struct cpu_model_spec *cpu, struct gw_error *err)
{
    size_t sz = sizeof(struct kvm_cpuid2) + vm->cpuid->nent * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = calloc(1, sz);
    if (!c)
        return gw_error_set(err, ENOMEM, "out of memory");
    vcpu_build_cpuid(vm->cpuid, c, vcpu->id, nr);
    if (cpu)
        cpu_model_apply(cpu, c->entries, c->nent);
    int r = ioctl(vcpu->fd, KVM_SET_CPUID2, c);
    int e = errno;
    if (r < 0) {
        free(c);
        return gw_error_set(err, e, "vCPU %u: KVM_SET_CPUID2: %s", vcpu->id, strerror(e));
    }
    vcpu->cpuid = c;
    vcpu->tsc_khz = cpu_state_tsc_khz(vcpu->fd);
    return 0;
}

int vcpu_keep_cpu(struct vcpu *vcpu, const struct kvm_cpuid_entry2 *e, uint32_t n)
{
    vcpu->tsc_khz = cpu_state_tsc_khz(vcpu->fd);
    struct kvm_cpuid2 *c = malloc(sizeof(*c) + n * sizeof(*e));
    if (!c)
        return -ENOMEM;
    c->nent = n;
    c->padding = 0;
    memcpy(c->entries, e, n * sizeof(*e));
    free(vcpu->cpuid);
    vcpu->cpuid = c;
    return 0;
}

/* Set the boot MSRs that KVM lists; each write is checked. */
static int setup_msrs(struct vcpu *vcpu, struct kvm_vm *vm, struct gw_error *err)
{
    static const struct { uint32_t index; uint64_t value; } boot_msrs[] = {
        { MSR_IA32_SYSENTER_CS, 0 }, { MSR_IA32_SYSENTER_ESP, 0 },
        { MSR_IA32_SYSENTER_EIP, 0 }, { MSR_STAR, 0 }, { MSR_CSTAR, 0 },
        { MSR_KERNEL_GS_BASE, 0 }, { MSR_SYSCALL_MASK, 0 }, { MSR_LSTAR, 0 },
        { MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING },
    };
    for (size_t i = 0; i < sizeof(boot_msrs) / sizeof(boot_msrs[0]); i++) {
        if (!kvm_vm_msr_listed(vm, boot_msrs[i].index) &&
            boot_msrs[i].index != MSR_IA32_MISC_ENABLE)
            continue;
        struct {
            struct kvm_msrs hdr;
            struct kvm_msr_entry e;
        } m = { .hdr.nmsrs = 1, .e = { .index = boot_msrs[i].index, .data = boot_msrs[i].value } };
        int r = ioctl(vcpu->fd, KVM_SET_MSRS, &m);
        if (r != 1) {
            if (boot_msrs[i].index == MSR_IA32_MISC_ENABLE) {
                log_debug("vCPU %u: MISC_ENABLE not settable here", vcpu->id);
                continue;
            }
            return gw_error_set(err, r < 0 ? errno : EINVAL, "vCPU %u: cannot set MSR 0x%x",
                                vcpu->id, boot_msrs[i].index);
        }
    }
    return 0;
}

/* The MSRs vcpu_reset puts back to their values at creation. KVM's
 * paravirtual ones first: left as a guest set them, KVM goes on writing
 * kvmclock and steal-time records, and reading the PV EOI flag, at
 * guest-physical addresses that the next boot uses for something else,
 * and injects asynchronous page faults into a guest that never asked for
 * them (QEMU resets them too). The wall-clock MSRs are left out: writing
 * one asks KVM to write the wall clock at that address. Then those the
 * boot sets, and the PAT. */
static const uint32_t reset_msrs[] = {
    MSR_KVM_ASYNC_PF_EN, MSR_KVM_ASYNC_PF_INT, MSR_KVM_STEAL_TIME, MSR_KVM_PV_EOI_EN,
    MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_SYSTEM_TIME, MSR_KVM_POLL_CONTROL,
    MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP, MSR_STAR, MSR_LSTAR,
    MSR_CSTAR, MSR_SYSCALL_MASK, MSR_KERNEL_GS_BASE, MSR_IA32_MISC_ENABLE, MSR_IA32_CR_PAT,
};
_Static_assert(sizeof(reset_msrs) / sizeof(reset_msrs[0]) <= VCPU_RESET_MAX_MSRS, "reset MSRs");

/* Those of reset_msrs this KVM reads (one at a time: it stops at the
 * first it cannot read); values read from KVM are ones it takes back. One
 * it cannot read is not reset, as before. */
static void capture_reset_msrs(struct vcpu *vcpu)
{
    struct vcpu_reset_state *s = &vcpu->reset;
    s->nmsrs = 0;
    for (size_t i = 0; i < sizeof(reset_msrs) / sizeof(reset_msrs[0]); i++) {
        struct {
            struct kvm_msrs hdr;
            struct kvm_msr_entry e;
        } m = { .hdr.nmsrs = 1, .e = { .index = reset_msrs[i] } };
        if (ioctl(vcpu->fd, KVM_GET_MSRS, &m) == 1)
            s->msrs[s->nmsrs++] = m.e;
        else
            log_debug("vCPU %u: MSR 0x%x not readable: not reset", vcpu->id, reset_msrs[i]);
    }
}

/* One MSR back to `e`; a write KVM refuses is fine when the MSR holds
 * that value already (KVM reads some MSRs that it lets be written only
 * when the host has the feature: steal time without schedstats). */
static int reset_msr(struct vcpu *vcpu, const struct kvm_msr_entry *e, struct gw_error *err)
{
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e;
    } m = { .hdr.nmsrs = 1, .e = *e };
    int r = ioctl(vcpu->fd, KVM_SET_MSRS, &m);
    if (r == 1)
        return 0;
    int e_set = r < 0 ? errno : EINVAL;
    m.e.data = ~e->data;
    if (ioctl(vcpu->fd, KVM_GET_MSRS, &m) == 1 && m.e.data == e->data)
        return 0;
    return gw_error_set(err, e_set, "vCPU %u: reset: MSR 0x%x: %s", vcpu->id, e->index,
                        r < 0 ? strerror(e_set) : "KVM refused the value it had at creation");
}

static int reset_msrs_put(struct vcpu *vcpu, struct gw_error *err)
{
    for (unsigned i = 0; i < vcpu->reset.nmsrs; i++)
        if (reset_msr(vcpu, &vcpu->reset.msrs[i], err) < 0)
            return -err->code;
    return 0;
}

static int capture_reset_state(struct vcpu *vcpu, struct gw_error *err)
{
    struct vcpu_reset_state *s = &vcpu->reset;
    if (ioctl(vcpu->fd, KVM_GET_REGS, &s->regs) < 0 ||
        ioctl(vcpu->fd, KVM_GET_SREGS, &s->sregs) < 0 ||
        ioctl(vcpu->fd, KVM_GET_FPU, &s->fpu) < 0 ||
        ioctl(vcpu->fd, KVM_GET_LAPIC, &s->lapic) < 0 ||
        ioctl(vcpu->fd, KVM_GET_MP_STATE, &s->mp) < 0 ||
        ioctl(vcpu->fd, KVM_GET_VCPU_EVENTS, &s->events) < 0 ||
        ioctl(vcpu->fd, KVM_GET_DEBUGREGS, &s->debugregs) < 0)
        return gw_error_set(err, errno, "vCPU %u: reading power-on state: %s", vcpu->id,
                            strerror(errno));
    s->has_xcrs = ioctl(vcpu->fd, KVM_GET_XCRS, &s->xcrs) == 0;
    capture_reset_msrs(vcpu);
    return 0;
}

int vcpu_init(struct vcpu *vcpu, struct kvm_vm *vm, unsigned id, unsigned nr_vcpus,
              const struct cpu_model_spec *cpu, struct gw_error *err)
{
    memset(vcpu, 0, sizeof(*vcpu));
    vcpu->id = id;
    vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
    if (vcpu->fd < 0)
        return gw_error_set(err, errno, "KVM_CREATE_VCPU %u: %s", id, strerror(errno));
    vcpu->run_size = (size_t)vm->vcpu_mmap_size;
    vcpu->run = mmap(NULL, vcpu->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
    if (vcpu->run == MAP_FAILED) {
        vcpu->run = NULL;
        gw_error_set(err, errno, "vCPU %u: mmap kvm_run: %s", id, strerror(errno));
        goto err_fd;
    }
    if (setup_cpuid(vcpu, vm, nr_vcpus, cpu, err) < 0 || setup_msrs(vcpu, vm, err) < 0 ||
        capture_reset_state(vcpu, err) < 0)
        goto err_map;
    return 0;

err_map:
    free(vcpu->cpuid);
    vcpu->cpuid = NULL;
    munmap(vcpu->run, vcpu->run_size);
    vcpu->run = NULL;
err_fd:
    close(vcpu->fd);
    vcpu->fd = -1;
    return -err->code;
}

void vcpu_fini(struct vcpu *vcpu)
{
    if (vcpu->run)
        munmap(vcpu->run, vcpu->run_size);
    if (vcpu->fd >= 0)
        close(vcpu->fd);
    free(vcpu->cpuid);
    vcpu->cpuid = NULL;
    vcpu->run = NULL;
    vcpu->fd = -1;
}

int vcpu_reset(struct vcpu *vcpu, struct gw_error *err)
{
    struct vcpu_reset_state *s = &vcpu->reset;
    if (ioctl(vcpu->fd, KVM_SET_SREGS, &s->sregs) < 0 ||
        ioctl(vcpu->fd, KVM_SET_REGS, &s->regs) < 0 ||
        ioctl(vcpu->fd, KVM_SET_FPU, &s->fpu) < 0 ||
        ioctl(vcpu->fd, KVM_SET_LAPIC, &s->lapic) < 0 ||
        ioctl(vcpu->fd, KVM_SET_VCPU_EVENTS, &s->events) < 0 ||
        ioctl(vcpu->fd, KVM_SET_DEBUGREGS, &s->debugregs) < 0 ||
        ioctl(vcpu->fd, KVM_SET_MP_STATE, &s->mp) < 0)
        return gw_error_set(err, errno, "vCPU %u: reset: %s", vcpu->id, strerror(errno));
    if (s->has_xcrs && ioctl(vcpu->fd, KVM_SET_XCRS, &s->xcrs) < 0)
        return gw_error_set(err, errno, "vCPU %u: reset XCRs: %s", vcpu->id, strerror(errno));
    return reset_msrs_put(vcpu, err);
}

int vcpu_set_boot_state(struct vcpu *vcpu, const struct kvm_regs *regs,
                        const struct kvm_sregs *sregs, struct gw_error *err)
{
    if (ioctl(vcpu->fd, KVM_SET_SREGS, sregs) < 0)
        return gw_error_set(err, errno, "vCPU %u: KVM_SET_SREGS: %s", vcpu->id, strerror(errno));
    if (ioctl(vcpu->fd, KVM_SET_REGS, regs) < 0)
        return gw_error_set(err, errno, "vCPU %u: KVM_SET_REGS: %s", vcpu->id, strerror(errno));
    return 0;
}
