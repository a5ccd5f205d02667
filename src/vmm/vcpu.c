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
    return 0;
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
